/**
 * The I/O edge of `resume` and `rollback`: read the run's journal (one replay into a history),
 * hash its runbook file, ask the pure recovery planner (src/plan/recovery.ts), and rebuild the
 * run's plan from its recorded inputs. A refusal becomes a coded error; nothing is contacted.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { RunbookError, ValidationError } from '../core/errors.js';
import { loadRunbook } from '../runbook/load.js';
import type { RunHistory } from '../journal/history.js';
import { openerAlive, readHistory } from '../journal/reader.js';
import { checkRunId, resolveStateDir } from '../journal/writer.js';
import {
  type Decided,
  planRecovery,
  type RecoveryMode,
  type RecoveryPlan,
  type RecoveryRequest,
  recoveryInputs,
} from '../plan/recovery.js';
import { type Loaded, loadPlan } from './context.js';
import type { Args } from './main.js';

export interface Recovery {
  history: RunHistory;
  /** The run's plan as the planner decided it (recorded hosts, batches, budget). */
  loaded: Loaded;
  recovery: RecoveryPlan;
  /** argv for execute(): the command's own flags plus the recorded inputs. */
  argv: Args;
}

function decided<T>(d: Decided<T>): T {
  if (!d.ok) throw new RunbookError(d.refusal.code, d.refusal.message);
  return d.value;
}

/** The runbook's hash as a run records it (its included files count); a file that no longer validates: its bytes'. */
function runbookNow(file: string | undefined): RecoveryRequest['runbookNow'] {
  if (!file) return { error: 'no runbook file recorded' };
  try {
    const bytes = readFileSync(file);
    try {
      return { hash: loadRunbook(file).hash };
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      return { hash: createHash('sha256').update(bytes).digest('hex') };
    }
  } catch (err) {
    return { error: (err as NodeJS.ErrnoException).code ?? (err as Error).message };
  }
}

export async function loadRecovery(argv: Args, mode: RecoveryMode): Promise<Recovery> {
  const runId = checkRunId(argv.run_id);
  const history = await readHistory(resolveStateDir(argv['state-dir']), runId);
  const req: RecoveryRequest = {
    mode,
    force: Boolean(argv.force),
    alive: history.openedBy !== undefined && openerAlive(history.openedBy),
    runbookNow: runbookNow(history.start?.runbook_file),
    given: { extraVars: argv['extra-vars'] ?? [], user: argv.user, privateKey: argv['private-key'], forks: argv.forks },
  };
  const inputs = decided(recoveryInputs(history, req));
  const merged: Args = {
    ...argv,
    runbook: inputs.runbookFile,
    inventory: inputs.inventory,
    limit: inputs.limit,
    'extra-vars': inputs.extraVars,
    forks: inputs.forks,
    user: inputs.user,
    'private-key': inputs.privateKey,
  };
  const fresh = loadPlan(merged, runId, inputs.cwd ?? process.cwd());
  const recovery = decided(planRecovery(history, req, fresh.plan));
  return { history, loaded: { ...fresh, plan: recovery.plan }, recovery, argv: merged };
}

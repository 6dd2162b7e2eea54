/**
 * `runbook resume RUN_ID`: continue a run whose controller died. The plan is rebuilt from the
 * inputs the journal recorded (same runbook file, inventory, limit, -e, forks), with the same
 * functions `apply` uses; the journal of the run is appended to. Per host: steps with a
 * durable outcome are not repeated, a step with an intent and no outcome is settled by its
 * verify (or unless), hosts never started start normally, finished hosts are left alone.
 *
 * Also exports loadRecordedRun(), shared with `rollback`.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Args } from '../main.js';
import { RunbookError } from '../../core/errors.js';
import { loadPlan, type Loaded } from '../context.js';
import { execute } from './apply.js';
import { confirmOnTerminal, planSummaryText } from '../prompt.js';
import type { HostResumeState } from '../../engine/engine.js';
import { resolveStateDir, checkRunId, journalPath } from '../../journal/writer.js';
import { readJournal, hostStates, summarizeRun, type HostJournalState, type JournalRecord } from '../../journal/reader.js';

export interface RecordedRun {
  runId: string;
  stateDir: string;
  journal: string;
  records: JournalRecord[];
  /** The plan rebuilt from the recorded inputs, restricted to the recorded hosts and batches. */
  loaded: Loaded;
  /** argv for execute(): the command's own flags plus the recorded inputs. */
  argv: Args;
  states: Map<string, HostJournalState>;
  torn: boolean;
}

interface RecordedStart {
  runbook_file?: string;
  runbook_hash?: string;
  inputs?: { inventory?: string[]; limit?: string; extra_vars?: string[]; cwd?: string; options?: Record<string, unknown> };
  plan?: { hosts?: Array<{ name: string; connection?: Record<string, unknown> }>; batches?: string[][]; max_failed?: number };
  hosts?: string[];
  batches?: string[][];
}

/**
 * Reads a run's journal and rebuilds its plan. Refuses (nothing contacted) when the run is
 * still alive, never recorded its plan, or its runbook file changed (unless `force`).
 */
export async function loadRecordedRun(argv: Args, opts: { force: boolean; verb: 'resume' | 'rollback' }): Promise<RecordedRun> {
  const runId = checkRunId(argv.run_id);
  const stateDir = resolveStateDir(argv['state-dir']);
  const path = journalPath(stateDir, runId);
  const { records, torn } = await readJournal(path);
  const summary = summarizeRun(runId, path, records, torn);
  if (summary.status === 'running?') {
    throw new RunbookError(
      'E_RUN_ACTIVE',
      `run ${runId} looks alive (its controller process ${String(records.filter((r) => r.type === 'journal-open').pop()?.pid)} on this machine still runs); stop it first, then ${opts.verb} it`,
    );
  }
  const starts = records.filter((r) => r.type === 'run-start') as unknown as RecordedStart[];
  const first = starts[0];
  if (!first?.runbook_file || !first.inputs) {
    throw new RunbookError(
      'E_RUN_NO_PLAN',
      `run ${runId} died before it recorded its plan (${path}); no host was changed by it. Start a new run with runbook apply`,
    );
  }
  // The latest run-start (a forced resume records the new hash) is what the hosts now follow.
  const last = [...starts].reverse().find((s) => s.runbook_hash) ?? first;
  const file = first.runbook_file;
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new RunbookError(
      'E_RUNBOOK_CHANGED',
      `the runbook of run ${runId} (${file}) cannot be read any more: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}; put it back to ${opts.verb} the run`,
    );
  }
  const hash = createHash('sha256').update(bytes).digest('hex');
  if (last.runbook_hash && hash !== last.runbook_hash && !opts.force) {
    throw new RunbookError(
      'E_RUNBOOK_CHANGED',
      `the runbook ${file} changed since run ${runId} (sha256 ${last.runbook_hash.slice(0, 12)}… then, ${hash.slice(0, 12)}… now); its step numbers may no longer match the journal. Restore it, or pass --force to ${opts.verb} with the new file`,
    );
  }

  const inputs = first.inputs;
  const o = inputs.options ?? {};
  // Secret -e values are redacted in the journal ("***"): they must be given again.
  const recordedExtra = inputs.extra_vars ?? [];
  const givenExtra: string[] = argv['extra-vars'] ?? [];
  if (recordedExtra.some((e) => e.includes('***')) && givenExtra.length === 0) {
    throw new RunbookError(
      'E_RESUME_SECRETS',
      `run ${runId} was given secret extra vars (${recordedExtra.filter((e) => e.includes('***')).join(' ')}), which the journal does not keep; nothing was run. Give them again: runbook ${opts.verb} ${runId} -e NAME=VALUE`,
    );
  }
  const merged: Args = {
    ...argv,
    runbook: file,
    inventory: inputs.inventory ?? [],
    limit: inputs.limit,
    // Given again on the command line: they win over the recorded (redacted) ones.
    'extra-vars': [...recordedExtra, ...givenExtra],
    forks: typeof o.forks === 'number' ? o.forks : argv.forks,
    user: argv.user ?? o.user,
    'private-key': argv['private-key'] ?? o['private-key'],
  };
  const loaded = loadPlan(merged, runId, inputs.cwd ?? process.cwd());

  // Same hosts and batches as the dead run, even if the inventory changed since.
  const recordedHosts = first.plan?.hosts?.map((h) => h.name) ?? first.hosts ?? [];
  const byName = new Map(loaded.plan.hosts.map((h) => [h.name, h]));
  const missing = recordedHosts.filter((n) => !byName.has(n));
  if (missing.length) {
    throw new RunbookError(
      'E_RUN_PLAN_CHANGED',
      `the inventory no longer yields host${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of run ${runId}; restore the inventory (${(inputs.inventory ?? []).join(', ')}) to ${opts.verb} the run`,
    );
  }
  if (!opts.force) {
    for (const h of first.plan?.hosts ?? []) {
      const was = h.connection ?? {};
      const now = byName.get(h.name)!.connection as unknown as Record<string, unknown>;
      for (const k of ['kind', 'address', 'port', 'user'] as const) {
        if (was[k] !== undefined && was[k] !== now[k]) {
          throw new RunbookError(
            'E_RUN_PLAN_CHANGED',
            `host ${h.name} of run ${runId} now resolves to ${k} ${String(now[k])} (was ${String(was[k])}); restore the inventory, or pass --force to ${opts.verb} against the new address`,
          );
        }
      }
    }
  }
  loaded.plan.hosts = recordedHosts.map((n) => byName.get(n)!);
  const batches = first.plan?.batches ?? first.batches;
  if (batches) loaded.plan.batches = batches;
  if (typeof first.plan?.max_failed === 'number') loaded.plan.maxFailed = first.plan.max_failed;

  const states = hostStates(records, { steps: loaded.runbook.steps, preflight: loaded.runbook.preflight });
  return { runId, stateDir, journal: path, records, loaded, argv: merged, states, torn };
}

/** What the engine needs to continue each host (hosts never started are left out). */
export function resumeMap(states: Map<string, HostJournalState>): Map<string, HostResumeState> {
  const m = new Map<string, HostResumeState>();
  for (const [host, s] of states) {
    const worked = s.started || s.done.size > 0 || s.unknown !== undefined || s.finished !== undefined;
    if (!worked) continue;
    m.set(host, {
      done: s.done,
      ...(s.unknown !== undefined ? { unknown: s.unknown } : {}),
      ledger: s.ledger,
      registers: s.registers,
      ...(s.finished !== undefined ? { finished: s.finished } : {}),
    });
  }
  return m;
}

export async function run(argv: Args): Promise<number> {
  const rec = await loadRecordedRun(argv, { force: Boolean(argv.force), verb: 'resume' });
  const resume = resumeMap(rec.states);
  const remaining = rec.loaded.plan.hosts.filter((h) => !resume.get(h.name)?.finished);
  if (!argv.json) {
    const fin = rec.loaded.plan.hosts.length - remaining.length;
    process.stderr.write(
      `runbook: resuming run ${rec.runId} (${rec.loaded.runbook.name}): ${remaining.length} host${remaining.length === 1 ? '' : 's'} to continue, ${fin} already finished; journal ${rec.journal}${rec.torn ? ' (its torn last line was dropped)' : ''}\n`,
    );
  }
  if (rec.loaded.runbook.destructive) await confirmOnTerminal(planSummaryText(rec.loaded.plan), argv.yes, rec.loaded.runbook.name);
  return execute(rec.argv, rec.loaded, { resume, journalRunId: rec.runId });
}

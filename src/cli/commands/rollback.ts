/**
 * `runbook rollback RUN_ID`: unwind, on every host, what a dead or finished run changed. Each
 * host's ledger is rebuilt from the journal (steps whose run started and own a rollback, minus
 * those already rolled back ok) and run in reverse; a step with an intent and no outcome may
 * have taken effect, so its rollback runs first. Everything is recorded in the same journal.
 */
import { tmpdir } from 'node:os';
import type { Args } from '../main.js';
import { rollbackRun, type EngineOptions } from '../../engine/engine.js';
import { lockAccessFor, releaseLock } from '../../engine/lock.js';
import type { Plan, PlannedHost } from '../../plan/types.js';
import { execute } from './apply.js';
import { loadRecordedRun } from './resume.js';
import { confirmOnTerminal } from '../prompt.js';
import type { HostJournalState } from '../../journal/reader.js';
import type { Runbook } from '../../runbook/types.js';

/** Per host, the indices to undo in run order (the engine pops from the end). */
export function rollbackLedgers(states: Map<string, HostJournalState>, runbook: Pick<Runbook, 'steps'>): Map<string, number[]> {
  const m = new Map<string, number[]>();
  for (const [host, s] of states) {
    const idx = [...s.ledger];
    const u = s.unknown;
    if (u !== undefined && runbook.steps[u]?.rollback && !idx.includes(u) && !s.rolledBack.has(u)) idx.push(u);
    m.set(
      host,
      idx.filter((i) => runbook.steps[i]?.rollback),
    );
  }
  return m;
}

export async function run(argv: Args): Promise<number> {
  const rec = await loadRecordedRun(argv, { force: Boolean(argv.force), verb: 'rollback' });
  const { runbook, plan } = rec.loaded;
  const ledgers = rollbackLedgers(rec.states, runbook);
  const lines: string[] = [`Roll back run ${rec.runId} (${runbook.name}):`];
  for (const h of plan.hosts) {
    const idx = ledgers.get(h.name) ?? [];
    lines.push(
      `  ${h.name}: ${
        idx.length
          ? [...idx]
              .reverse()
              .map((i) => runbook.steps[i].name)
              .join(' <- ')
          : 'nothing to roll back'
      }`,
    );
  }
  if (!argv.json) process.stderr.write(`runbook: ${lines.join('\n')}\n`);
  if (runbook.destructive) await confirmOnTerminal(lines.join('\n'), argv.yes, runbook.name);
  return execute(rec.argv, rec.loaded, {
    journalRunId: rec.runId,
    engine: async (opts) => {
      const r = await rollbackRun({ ...opts, ledgers });
      await releaseStaleLocks(
        opts,
        plan,
        rec.runId,
        plan.hosts.filter((h) => (ledgers.get(h.name) ?? []).length === 0),
      );
      return r;
    },
  });
}

/**
 * The engine does not contact hosts with nothing to roll back, but the dead run may have locked
 * them (every host is locked before any changes): remove such locks if this run holds them.
 */
async function releaseStaleLocks(opts: EngineOptions, plan: Plan, runId: string, hosts: PlannedHost[]): Promise<void> {
  await Promise.all(
    hosts.map(async (h) => {
      const t = opts.transport(h);
      try {
        await t.connect();
        await releaseLock(t, h.name, runId, lockAccessFor(h, tmpdir()));
      } catch (err) {
        process.stderr.write(`runbook: warning: ${h.name}: could not check for a lock left by run ${runId}: ${(err as Error).message}\n`);
      } finally {
        await t.close().catch(() => {});
      }
    }),
  );
}

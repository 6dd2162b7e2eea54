/**
 * `runbook rollback RUN_ID`: unwind, on every host, what a dead or finished run changed. Each
 * host's ledger comes from the journal (steps whose run started and own a rollback, minus those
 * already rolled back ok) and is run in reverse; a step with an intent and no outcome may have
 * taken effect, so its rollback runs first. Everything is recorded in the same journal.
 */
import { execute } from '../execute.js';
import type { Args } from '../main.js';
import { confirmOnTerminal } from '../prompt.js';
import { loadRecovery } from '../recovery.js';

export async function run(argv: Args): Promise<number> {
  const rec = await loadRecovery(argv, 'rollback');
  const { plan, runbook } = rec.loaded;
  const undo = rec.recovery.undo;
  const lines: string[] = [`Roll back run ${plan.runId} (${runbook.name}):`];
  for (const h of plan.hosts) {
    const idx = undo.get(h.name) ?? [];
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
  // The run's registers, from its journal: rollbacks may use them ({{ paths.stdout }}).
  const registers = new Map([...rec.recovery.resume].map(([host, r]) => [host, r.registers]));
  return execute(rec.argv, rec.loaded, { mode: { kind: 'rollback', undo, registers } });
}

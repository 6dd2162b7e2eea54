/** `runbook apply NAME -i INV`: validate everything, confirm a destructive runbook, then run. */
import { newRunId } from '../../journal/writer.js';
import { reportFormatOf } from '../../report/index.js';
import { loadPlan } from '../context.js';
import { execute } from '../execute.js';
import type { Args } from '../main.js';
import { confirmOnTerminal, planSummaryText } from '../prompt.js';
import { windowGate } from '../window.js';
import { attemptPolicyFrom } from '../attempts.js';

export async function run(argv: Args): Promise<number> {
  const loaded = loadPlan(argv, newRunId());
  const gate = argv.window ? windowGate(String(argv.window)) : undefined;
  const attempts = attemptPolicyFrom(argv); // a bad --cooldown / --max-attempts fails before anything runs
  for (const f of argv.report ?? []) reportFormatOf(String(f)); // a bad report name fails before anything runs
  if (loaded.runbook.destructive) {
    await confirmOnTerminal(planSummaryText(loaded.plan, { window: argv.window }), argv.yes, loaded.runbook.name);
  }
  return execute(argv, loaded, { mode: { kind: 'apply' }, mayStartHost: gate, attempts });
}

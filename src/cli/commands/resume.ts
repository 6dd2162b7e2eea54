/**
 * `runbook resume RUN_ID`: continue a run whose controller died. The plan is rebuilt from the
 * inputs the journal recorded (same runbook file, inventory, limit, -e, forks) and the run's
 * journal is appended to. Per host: steps with a durable outcome are not repeated, a step with
 * an intent and no outcome is settled by its verify (or unless), hosts never started start
 * normally, finished hosts are left alone.
 */
import { execute } from '../execute.js';
import type { Args } from '../main.js';
import { confirmOnTerminal, planSummaryText } from '../prompt.js';
import { loadRecovery } from '../recovery.js';

export async function run(argv: Args): Promise<number> {
  const rec = await loadRecovery(argv, 'resume');
  const { plan, runbook } = rec.loaded;
  const hosts = rec.recovery.resume;
  const remaining = plan.hosts.filter((h) => !hosts.get(h.name)?.finished);
  if (!argv.json) {
    const fin = plan.hosts.length - remaining.length;
    process.stderr.write(
      `runbook: resuming run ${plan.runId} (${runbook.name}): ${remaining.length} host${remaining.length === 1 ? '' : 's'} to continue, ${fin} already finished; journal ${rec.history.path}${rec.history.torn ? ' (its torn last line was dropped)' : ''}\n`,
    );
  }
  if (runbook.destructive) await confirmOnTerminal(planSummaryText(plan), argv.yes, runbook.name);
  return execute(rec.argv, rec.loaded, { mode: { kind: 'resume', hosts } });
}

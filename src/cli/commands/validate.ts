/** `runbook validate NAME [-i INV]`: the runbook alone, or with every variable for every host. */
import type { Args } from '../main.js';
import { loadRunbook } from '../../runbook/load.js';

export async function run(argv: Args): Promise<number> {
  if (argv.inventory?.length) {
    const { loadPlan } = await import('../context.js'); // inventory and planner only when asked
    const { runbook, plan } = loadPlan(argv, 'validate');
    process.stdout.write(
      `ok: ${runbook.file}: ${runbook.preflight.length} preflight and ${runbook.steps.length} steps; every variable resolves for ${plan.hosts.length} host${plan.hosts.length === 1 ? '' : 's'}\n`,
    );
    return 0;
  }
  const runbook = loadRunbook(String(argv.runbook));
  process.stdout.write(`ok: ${runbook.file}: ${runbook.preflight.length} preflight and ${runbook.steps.length} steps\n`);
  return 0;
}

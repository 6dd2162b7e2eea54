/**
 * Shared by validate, plan, apply and resume: everything from argv to a validated Plan,
 * with no connection opened. Every problem found is reported at once. The transports (and with
 * them ssh2) are in ./transports.ts, loaded only by the commands that connect.
 */
import { dirname, resolve } from 'node:path';
import type { Args } from './main.js';
import type { Runbook } from '../runbook/types.js';
import type { Inventory } from '../inventory/types.js';
import type { Plan } from '../plan/types.js';
import type { RunInputs } from '../engine/events.js';
import { RunbookError } from '../core/errors.js';
import { loadRunbook } from '../runbook/load.js';
import { loadInventory, selectHosts, connectionFor } from '../inventory/index.js';
import { journaledExtraVars, parseExtraVars } from '../inventory/extra-vars.js';
import { createPlan, SECRET_VAR_NAMES } from '../plan/plan.js';

export interface Loaded {
  runbook: Runbook;
  inventory: Inventory;
  plan: Plan;
  /** Journaled in run-start: what resume and rollback rebuild the plan from. */
  inputs: RunInputs;
}

export function loadPlan(argv: Args, runId: string, cwd = process.cwd()): Loaded {
  const runbook = loadRunbook(String(argv.runbook), cwd);
  const sources: string[] = (argv.inventory ?? []).map((p: string) => resolve(cwd, p));
  if (sources.length === 0) {
    throw new RunbookError('E_USAGE', 'no inventory given; pass -i FILE (YAML or INI, e.g. inventory/local.yml).');
  }
  const inventory = loadInventory(sources, { cwd, extraVarDirs: [dirname(runbook.file)] });
  const extraVars = parseExtraVars(argv['extra-vars'] ?? [], cwd);
  // The runbook's `hosts:` pattern (default all), narrowed by --limit, in Ansible's order.
  const names = selectHosts(inventory, argv.limit, { cwd, hosts: runbook.hosts });
  const overrides = { user: argv.user as string | undefined, privateKeyFile: argv['private-key'] as string | undefined };
  const hosts = names.map((n: string) => {
    const h = inventory.hosts.get(n)!;
    const vars = { ...h.vars, ...extraVars };
    return { name: n, vars: h.vars, connection: connectionFor({ ...h, vars }, overrides) };
  });
  const plan = createPlan(runbook, hosts, { runId, forks: Number(argv.forks ?? 50), extraVars });
  return {
    runbook,
    inventory,
    plan,
    inputs: {
      inventory: sources,
      limit: argv.limit,
      extra_vars: journaledExtraVars(argv['extra-vars'] ?? [], new Set([...runbook.secretVars, ...SECRET_VAR_NAMES]), cwd),
      cwd,
      options: { forks: plan.forks, user: argv.user, 'private-key': argv['private-key'] },
    },
  };
}

/**
 * Shared by validate, plan, apply and resume: everything from argv to a validated Plan,
 * with no connection opened. Every problem found is reported at once.
 */
import { dirname, resolve } from 'node:path';
import type { Args } from './main.js';
import type { Runbook } from '../runbook/types.js';
import type { Inventory } from '../inventory/types.js';
import type { Plan } from '../plan/types.js';
import { RunbookError, ValidationError } from '../core/errors.js';
import { parseDuration } from '../core/duration.js';
import { loadRunbook } from '../runbook/load.js';
import { loadInventory, selectHosts, connectionFor } from '../inventory/index.js';
import { parseExtraVars } from '../inventory/extra-vars.js';
import { createPlan } from '../plan/plan.js';
import { createTransport, type SshOptions } from '../transport/index.js';
import type { PlannedHost } from '../plan/types.js';
import type { Transport } from '../transport/types.js';

export interface Loaded {
  runbook: Runbook;
  inventory: Inventory;
  plan: Plan;
  inputs: { inventory: string[]; limit?: string; extra_vars: string[]; cwd: string; options: Record<string, unknown> };
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
    runbook, inventory, plan,
    inputs: {
      inventory: sources, limit: argv.limit, extra_vars: argv['extra-vars'] ?? [], cwd,
      options: { forks: plan.forks, user: argv.user, 'private-key': argv['private-key'] },
    },
  };
}

export function sshOptionsFrom(argv: Args): SshOptions {
  const connectTimeoutMs = parseDuration(argv['connect-timeout'] ?? '10s');
  if (connectTimeoutMs === undefined) {
    throw new ValidationError([{ path: '--connect-timeout', message: `"${argv['connect-timeout']}" is not a duration (use 500ms, 30s, 5m)` }], 'E_USAGE');
  }
  return {
    hostKeyChecking: argv['host-key-checking'] ?? 'strict',
    knownHostsFiles: argv['known-hosts'] ? [resolve(String(argv['known-hosts']))] : undefined,
    connectTimeoutMs,
    sshConfigFile: argv['ssh-config'],
    user: argv.user,
    privateKeyFile: argv['private-key'],
  };
}

/** The engine's two transport factories: the host's own (ssh or local), and the controller for `local: true` steps. */
export function transportsFrom(argv: Args): { transport: (h: PlannedHost) => Transport; localTransport: (h: PlannedHost) => Transport } {
  const ssh = sshOptionsFrom(argv);
  return {
    transport: (h) => createTransport(h.connection, ssh),
    localTransport: (h) => createTransport({ kind: 'local', name: h.name, address: 'localhost' }, ssh),
  };
}

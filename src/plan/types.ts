import type { Runbook } from '../runbook/types.js';
import type { HostStatus, Registered, StepStatus } from '../core/status.js';
import type { ConnectionSpec } from '../inventory/types.js';

export interface PlannedHost {
  name: string;
  connection: ConnectionSpec;
  /**
   * Variables for templating, merged lowest first: runbook vars < inventory (all < parents <
   * children < host) < -e extra vars; plus built-ins inventory_hostname and run_id.
   */
  vars: Record<string, unknown>;
  /** The same for the steps of each include (Runbook.scopes): its vars take the place of the runbook's. */
  scoped?: Array<Record<string, unknown>>;
}

/** The variables a step's templates and conditions see on a host. */
export function varsFor(host: PlannedHost, step: { scope?: number }): Record<string, unknown> {
  return step.scope !== undefined && host.scoped ? host.scoped[step.scope] : host.vars;
}

export interface Plan {
  runId: string;
  runbook: Runbook;
  /** Selected hosts in Ansible order. */
  hosts: PlannedHost[];
  /** Host names per rolling batch (serial), in order. */
  batches: string[][];
  /** Failure budget resolved to a host count: the run stops starting hosts once failures exceed it. */
  maxFailed: number;
  forks: number;
  /** Secret values (become passwords, secret vars): every sink redacts them. */
  secrets: string[];
}

/** What the journal says about a host of an earlier (dead) run, for resume (src/plan/recovery.ts). */
export interface HostResumeState {
  /** Durable outcomes of main-phase steps, by index. */
  done: Map<number, StepStatus>;
  /** A step whose intent is durable but whose outcome is not. */
  unknown?: number;
  /** Indices of steps that started running and own a rollback not yet done, in order. */
  ledger: number[];
  registers: Record<string, Registered>;
  /** How each alternative the dead run tried ended ("GROUP_INDEX/RANK" -> held, undone, not-applicable). */
  alternatives?: Map<string, string>;
  finished?: HostStatus;
}

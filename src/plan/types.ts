import type { Runbook } from '../runbook/types.js';
import type { ConnectionSpec } from '../inventory/types.js';

export interface PlannedHost {
  name: string;
  connection: ConnectionSpec;
  /**
   * Variables for templating, merged lowest first: runbook vars < inventory (all < parents <
   * children < host) < -e extra vars; plus built-ins inventory_hostname and run_id.
   */
  vars: Record<string, unknown>;
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

/** A runbook after loading and validation. Templates (`{{ var }}`) are kept unrendered here. */
export interface VerifySpec {
  run: string;
  /** Extra attempts after the first (retries: 3 -> up to 4 attempts). */
  retries: number;
  delayMs: number;
}

export interface StepSpec {
  name: string;
  /** 'preflight' steps are read-only and have no rollback. */
  phase: 'preflight' | 'step';
  /** Index inside its phase list (steps[3] -> 3). */
  index: number;
  when?: string;
  unless?: string;
  run: string;
  verify?: VerifySpec;
  rollback?: string;
  timeoutMs: number;
  register?: string;
  local: boolean;
  become: boolean;
  /** Source line of the step (1-based), for messages. */
  line?: number;
}

export interface Runbook {
  name: string;
  description?: string;
  destructive: boolean;
  become: boolean;
  /** Batch sizes: numbers or percentages ("25%"); empty = one batch of all hosts. */
  serial: Array<number | string>;
  /** Failure budget: count or percentage string. */
  maxFailed: number | string;
  /** Optional host pattern (Ansible-style) the runbook applies to by default. */
  hosts?: string;
  /** What a failing preflight does: drop that host (default) or abort the whole run. */
  preflightFailure: 'skip-host' | 'abort';
  vars: Record<string, unknown>;
  /** Names of variables whose values are secrets: redacted everywhere. */
  secretVars: string[];
  preflight: StepSpec[];
  steps: StepSpec[];
  /** Absolute path of the file it was loaded from. */
  file: string;
  /** sha256 of the file's bytes (the journal uses it to detect a changed runbook on resume). */
  hash: string;
  /** The file's text, for line lookups in messages. */
  source: string;
}

export const DEFAULT_STEP_TIMEOUT_MS = 5 * 60_000;

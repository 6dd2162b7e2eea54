/** A runbook after loading and validation. Templates (`{{ var }}`) are kept unrendered here. */
import type { ActionName } from '../actions/specs.js';
import type { Expr } from '../plan/expr.js';

export type { Expr } from '../plan/expr.js';
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
  /**
   * Index inside its phase list, once every include and escalation is laid out in order: an
   * escalation is one step, followed by the steps of its alternatives.
   */
  index: number;
  /** Decided on the controller (CEL), before `when`. */
  if?: Expr;
  when?: string;
  unless?: string;
  /** The shell command; for a `call:` step, how plan and show print the call (its templates are the with: values). */
  run: string;
  /** A built-in action instead of a shell command (src/actions): its name and `with:` parameters (templates, defaults filled in). */
  call?: { action: ActionName; with: Record<string, string> };
  verify?: VerifySpec;
  rollback?: string;
  timeoutMs: number;
  register?: string;
  local: boolean;
  become: boolean;
  /** Safe to run twice: a resume runs it again when the dead run started it but did not record its outcome. */
  rerun?: boolean;
  /** Changes nothing on the host (a count, a report): ends `ok` when it ran, never `changed`. */
  readOnly?: boolean;
  /** Source line of the step (1-based), for messages. */
  line?: number;
  /** Where it is written: the file (absolute, when not the runbook itself: an included one) and its path there. */
  origin?: { file?: string; path: string };
  /** The variables of an include's steps replace the runbook's vars (Runbook.scopes). */
  scope?: number;
  /** A step of an escalation's alternative. */
  alternative?: { group: number; name: string; rank: number };
  /** An escalation: its alternatives, least destructive first (`run` is empty). */
  escalate?: Alternative[];
}

export interface Alternative {
  name: string;
  if?: Expr;
  /** Indices (in Runbook.steps) of its steps, in order. */
  steps: number[];
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
  /** After the preflight: a host where it is false ends `ok` and leaves the run. */
  applyIf?: Expr;
  /** name -> template over registers and vars, rendered per host at its end (what the runbook found there). */
  facts?: Record<string, string>;
  steps: StepSpec[];
  /** Per include: the vars its steps see instead of `vars` (fragment defaults < runbook vars < the include's vars). */
  scopes?: Array<Record<string, unknown>>;
  /** Included files (absolute), in the order first read. */
  includes?: string[];
  /** Absolute path of the file it was loaded from. */
  file: string;
  /** sha256 of the file's bytes, and of every included file's (the journal uses it to detect a changed runbook on resume). */
  hash: string;
  /** The file's text, for line lookups in messages. */
  source: string;
}

export const DEFAULT_STEP_TIMEOUT_MS = 5 * 60_000;

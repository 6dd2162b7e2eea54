/** Typed events from the engine. Renderers (src/report) and the journal subscribe. */
import type { HostStatus, Phase, RunStatus, StepStatus } from '../core/status.js';

export type { HostStatus, Phase, Registered, RunStatus, StepStatus } from '../core/status.js';

interface Base {
  time: string;
}

export interface RunStartEvent extends Base {
  type: 'run-start';
  run_id: string;
  runbook: string;
  hosts: string[];
  batches: string[][];
  max_failed: number;
  forks: number;
  journal?: string;
  /** What kind of run: a plain apply (default), a resume, or a rollback of an earlier run. */
  mode?: 'apply' | 'resume' | 'rollback';
  /** Journal-only context for resume (absolute runbook path, sha256, inputs, plan). */
  runbook_file?: string;
  runbook_hash?: string;
  inputs?: RunInputs;
  plan?: RecordedPlan;
}

/** What a run was started with (journaled in run-start), so resume and rollback rebuild the same plan. */
export interface RunInputs {
  /** Absolute inventory sources. */
  inventory: string[];
  limit?: string;
  /** -e values as given, secret ones redacted ("***"). */
  extra_vars: string[];
  cwd: string;
  options: { forks?: number; user?: string; 'private-key'?: string };
}

/** The resolved plan as journaled: hosts (connection without secrets), batches, budget. */
export interface RecordedPlan {
  hosts: Array<{ name: string; connection: { kind?: string; address?: string; port?: number; user?: string } & Record<string, unknown> }>;
  batches: string[][];
  max_failed: number;
}
export interface HostStartEvent extends Base {
  type: 'host-start';
  host: string;
  batch: number;
}
export interface StepStartEvent extends Base {
  type: 'step-start';
  host: string;
  step: string;
  phase: Phase;
  index: number;
}
export interface StepEndEvent extends Base {
  type: 'step-end';
  host: string;
  step: string;
  phase: Phase;
  index: number;
  status: StepStatus;
  code: number | null;
  duration_ms: number;
  /** Which part decided: if/when/unless/run/verify, and the attempt count for verify. */
  stage?: 'if' | 'when' | 'unless' | 'run' | 'verify';
  /** A step of an escalation's alternative: its name; an escalation's own end: the alternative that held. */
  alternative?: string;
  attempts?: number;
  timed_out?: boolean;
  /** Bounded (tail), redacted. */
  stdout?: string;
  stderr?: string;
  /** The rendered, redacted command that decided the status (for failure summaries). */
  command?: string;
  message?: string;
  /** The registered value (bounded, redacted) when the step has `register`. */
  register?: { stdout: string; stderr: string; code: number | null };
}
export interface RollbackStartEvent extends Base {
  type: 'rollback-start';
  host: string;
  step: string;
  index: number;
}
export interface RollbackEndEvent extends Base {
  type: 'rollback-end';
  host: string;
  step: string;
  index: number;
  status: 'ok' | 'failed';
  code: number | null;
  duration_ms: number;
  stdout?: string;
  stderr?: string;
  command?: string;
  message?: string;
}
export interface HostEndEvent extends Base {
  type: 'host-end';
  host: string;
  status: HostStatus;
  duration_ms: number;
  /** Why, in one sentence, when not ok/changed. */
  message?: string;
  /** Name of the step that changed last / failed. */
  failed_step?: string;
  /** Stable code of why the host did not run (E_LOCKED, E_COOLDOWN, E_MAX_ATTEMPTS, ...). */
  code?: string;
  changed_steps?: string[];
  /** The runbook's `facts:` for this host (what it found there, one line each). */
  facts?: Record<string, string>;
}
/** An alternative of an escalation starts (`step`/`index`: the escalation). */
export interface AlternativeStartEvent extends Base {
  type: 'alternative-start';
  host: string;
  step: string;
  index: number;
  alternative: string;
  rank: number;
}
/** held: all its steps held (it won); undone: a step failed and its rollbacks ran; not-applicable: its if was false. */
export type AlternativeStatus = 'held' | 'undone' | 'undo-failed' | 'not-applicable';
export interface AlternativeEndEvent extends Base {
  type: 'alternative-end';
  host: string;
  step: string;
  index: number;
  alternative: string;
  rank: number;
  status: AlternativeStatus;
  message?: string;
}
/** The batches of the main phase, once apply_if has let only some hosts go on. */
export interface BatchesEvent extends Base {
  type: 'batches';
  batches: string[][];
}
export interface OutputEvent extends Base {
  type: 'output';
  host: string;
  step: string;
  stream: 'stdout' | 'stderr';
  data: string;
}
export interface WarningEvent extends Base {
  type: 'warning';
  host?: string;
  message: string;
}
export interface RunEndEvent extends Base {
  type: 'run-end';
  run_id: string;
  status: RunStatus;
  exit_code: number;
  hosts: Record<string, HostStatus>;
  duration_ms: number;
  /** Set when the run stopped because its journal could not be written. */
  journal_error?: string;
}

export type RunEvent =
  | RunStartEvent
  | HostStartEvent
  | StepStartEvent
  | StepEndEvent
  | RollbackStartEvent
  | RollbackEndEvent
  | HostEndEvent
  | AlternativeStartEvent
  | AlternativeEndEvent
  | BatchesEvent
  | OutputEvent
  | WarningEvent
  | RunEndEvent;

export type EventType = RunEvent['type'];
export type EventOf<T extends EventType> = Extract<RunEvent, { type: T }>;

/** An event as the engine builds it, before the time stamp. */
export type EventInput = { [K in EventType]: Omit<EventOf<K>, 'time'> }[EventType];

export type EventSink = (e: RunEvent) => void;

/**
 * The engine's view of the write-ahead journal (src/journal implements it).
 * write() appends a record to a buffer; sync() resolves once every record written so far is
 * durable (fsync), coalescing concurrent callers into one fsync (group commit). sync()
 * rejects if the journal cannot be written; the engine then stops changing hosts.
 */
export interface JournalSink {
  write(rec: Record<string, unknown>): void;
  sync(): Promise<void>;
}

export const nullJournal: JournalSink = { write() {}, async sync() {} };

/** Exit-status contract, computed from host statuses (the CLI maps it; documented in README). */
export function runStatusOf(hosts: Record<string, HostStatus>, interrupted: boolean): { status: RunStatus; exit_code: number } {
  const s = Object.values(hosts);
  if (s.includes('needs-attention')) return { status: 'needs-attention', exit_code: 3 };
  if (interrupted) return { status: 'interrupted', exit_code: 130 };
  if (s.some((x) => x !== 'ok' && x !== 'changed')) return { status: 'failed', exit_code: 2 };
  return { status: 'ok', exit_code: 0 };
}

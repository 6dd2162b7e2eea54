/** What the engine is given and what it returns. */
import type { Registered } from '../core/status.js';
import type { HostResumeState, Plan, PlannedHost } from '../plan/types.js';
import type { Transport } from '../transport/types.js';
import type { AttemptGate } from './attempts.js';
import type { EventSink, HostStatus, JournalSink, RunStartEvent, RunStatus } from './events.js';

export type RunInfo = Pick<RunStartEvent, 'journal' | 'runbook_file' | 'runbook_hash' | 'inputs' | 'plan'>;

export interface HostLock {
  /** Takes the lock; may return a note for the host's log (what it ended of a dead controller's run). */
  acquire(t: Transport, host: string): Promise<string | undefined>;
  /** Removes the lock if this run holds it. */
  release(t: Transport, host: string): Promise<void>;
}

/**
 * The three modes of one run: a plain apply; a resume of a dead run (per host what its journal
 * says); a rollback of an earlier run (per host the step indices to undo, in run order).
 */
export type RunMode =
  | { kind: 'apply' }
  | { kind: 'resume'; hosts: Map<string, HostResumeState> }
  /** registers: per host, what the run registered (its rollbacks' templates use them). */
  | { kind: 'rollback'; undo: Map<string, number[]>; registers?: Map<string, Record<string, Registered>> };

export interface EngineOptions {
  plan: Plan;
  /** apply when not given. */
  mode?: RunMode;
  /** Transport for a host (ssh or local, by its connection spec). */
  transport: (h: PlannedHost) => Transport;
  /** Transport for `local: true` steps of a host (runs on the controller). */
  localTransport: (h: PlannedHost) => Transport;
  emit: EventSink;
  journal?: JournalSink;
  /** Abort = interrupt: stop starting steps, roll back hosts in flight. */
  signal?: AbortSignal;
  /** false (--no-rollback): leave hosts as they are on failure or interrupt. */
  rollbackOnFailure?: boolean;
  /** Gate checked before each host starts (maintenance window): a reason string blocks it. */
  mayStartHost?: () => string | undefined;
  lock?: HostLock;
  /** apply only: cooldown and attempt budget, recorded on the host (claimed before a host's first step). */
  attempts?: AttemptGate;
  /** Emit `output` events as command output arrives (--verbose). */
  streamOutput?: boolean;
  /** What the run-start record also journals, so a resume or rollback can rebuild the plan. */
  journalRunInfo?: RunInfo;
}

export interface RunResult {
  runId: string;
  hosts: Record<string, HostStatus>;
  status: RunStatus;
  exit_code: number;
  journalError?: string;
}

export interface ProbeResult {
  host: string;
  reachable: boolean;
  /** Why the host would not change (unreachable, failed preflight). */
  blocked?: string;
  preflight: Array<{ step: string; ok: boolean; output: string; reason?: string }>;
  /** apply_if after the preflight (false: the host has nothing to do). */
  applyIf?: boolean;
  steps: Array<{ step: string; verdict: string }>;
}

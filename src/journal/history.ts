/**
 * The one replay of a run journal: decoded records in, a run history out (per host: its
 * steps and outcomes, what ran and is owed a rollback, registers, last known state; per run:
 * how it started and ended). `runs`, `show-run`, `resume` and `rollback` all read this.
 * Pure: no I/O, no runbook (src/plan/recovery.ts combines a history with a runbook).
 *
 * Records of several processes (apply, then resume, then rollback, an unlock) are read in
 * order; later outcomes win.
 */
import type { HostStatus, Phase, Registered, RunStartEvent, RunStatus, StepStatus } from '../engine/events.js';
import type { JournalOpenRecord, JournalRecord } from './records.js';

/** One step or rollback as show-run lists it. */
export interface StepLine {
  kind: 'step' | 'rollback';
  phase: Phase;
  index: number;
  step: string;
  /** Outcome; 'no outcome' while only the intent is recorded. */
  status: string;
  stage?: string;
  code?: number | null;
  duration_ms?: number;
  message?: string;
  time?: string;
}

export interface HostHistory {
  host: string;
  /** A host-start was recorded. */
  started: boolean;
  /** Final status: the last host-end with no host-start after it. */
  finished?: HostStatus;
  message?: string;
  /** A main-phase step has started, so the preflight had passed. */
  preflightDone: boolean;
  /**
   * Durable outcomes of main-phase steps, by index. Not here: the step in `unknown`, and a
   * step that did not fail and whose rollback then ended ok (undone: a resume runs it again).
   */
  done: Map<number, StepStatus>;
  /** The main-phase step with an intent and no outcome, or a recorded `unknown` outcome. */
  unknown?: number;
  /** Main-phase steps whose `run` started, in the order they last ran (the rollback ledger before the runbook says which have a rollback). */
  ran: number[];
  /** Steps whose rollback ended ok / failed (the failed ones are still owed). */
  rolledBack: Set<number>;
  rollbackFailed: Set<number>;
  /** A rollback with an intent and no outcome (the controller died during it). */
  rollbackInFlight?: number;
  /** How each alternative ended, by "ESCALATION_INDEX/RANK" (the last end recorded). */
  alternatives: Map<string, string>;
  /** Registered outputs in the order recorded, by phase and step index (the runbook gives their names). */
  registers: Array<{ phase: Phase; index: number; value: Registered }>;
  /** Every step and rollback, in order. */
  lines: StepLine[];
  /** Resumes, broken locks, warnings, how each alternative of an escalation ended. */
  events: string[];
}

export interface RunHistory {
  runId: string;
  path: string;
  /** The last line was torn (crash mid-write) and was ignored. */
  torn: boolean;
  /** The first run-start: the runbook file and the inputs the run was started with. */
  start?: RunStartEvent;
  /** The latest run-start that recorded a runbook hash (a forced resume records the new one). */
  current?: RunStartEvent;
  /** The run's end, if one is recorded after the last process that worked on it opened the journal. */
  end?: { status: RunStatus; exit_code?: number; time: string };
  /** The last process that opened the journal, when no run ended after it opened it: possibly still running. */
  openedBy?: JournalOpenRecord;
  started?: string;
  hosts: Map<string, HostHistory>;
}

function newHost(host: string): HostHistory {
  return {
    host,
    started: false,
    preflightDone: false,
    done: new Map(),
    ran: [],
    rolledBack: new Set(),
    rollbackFailed: new Set(),
    alternatives: new Map(),
    registers: [],
    lines: [],
    events: [],
  };
}

const WORK = new Set(['run-start', 'host-start', 'step-start', 'rollback-start']);

export function replay(records: JournalRecord[], meta: { runId: string; path: string; torn?: boolean }): RunHistory {
  const h: RunHistory = { runId: meta.runId, path: meta.path, torn: meta.torn ?? false, hosts: new Map() };
  const host = (name: string) => {
    let s = h.hosts.get(name);
    if (!s) {
      s = newHost(name);
      h.hosts.set(name, s);
    }
    return s;
  };
  const open = new Map<string, StepLine>();
  let lastEnd: RunHistory['end'];
  let workSinceEnd = false;
  let lastOpen: JournalOpenRecord | undefined;
  let endAfterOpen = false;

  for (const r of records) {
    if (WORK.has(r.type)) workSinceEnd = true;
    switch (r.type) {
      case 'journal-open':
        lastOpen = r;
        endAfterOpen = false;
        break;
      case 'run-start':
        h.start ??= r;
        if (r.runbook_hash || !h.current) h.current = r;
        h.started ??= r.time;
        if (r.run_id) h.runId = r.run_id;
        for (const n of r.hosts) host(n);
        break;
      case 'run-end':
        lastEnd = { status: r.status, ...(r.exit_code !== undefined ? { exit_code: r.exit_code } : {}), time: r.time };
        workSinceEnd = false;
        endAfterOpen = true;
        break;
      case 'host-start': {
        const s = host(r.host);
        if (s.started || s.finished) s.events.push(`resumed at ${r.time}`);
        s.started = true;
        s.finished = undefined;
        break;
      }
      case 'host-end': {
        const s = host(r.host);
        s.finished = r.status;
        s.message = r.message;
        break;
      }
      case 'step-start':
      case 'rollback-start': {
        const s = host(r.host);
        const phase: Phase = r.type === 'step-start' ? r.phase : 'step';
        const line: StepLine = {
          kind: r.type === 'step-start' ? 'step' : 'rollback',
          phase,
          index: r.index,
          step: r.step,
          status: 'no outcome',
          time: r.time,
        };
        s.lines.push(line);
        open.set(lineKey(r.host, line.kind, phase, r.index), line);
        if (r.type === 'rollback-start') s.rollbackInFlight = r.index;
        else if (phase === 'step') {
          s.preflightDone = true;
          s.unknown = r.index;
          s.done.delete(r.index);
        }
        break;
      }
      case 'step-end': {
        const s = host(r.host);
        endLine(s, open, 'step', r.phase, r);
        if (r.register) s.registers.push({ phase: r.phase, index: r.index, value: registered(r.register) });
        if (r.phase !== 'step') break;
        if (r.status === 'unknown') {
          s.unknown = r.index;
          break;
        }
        if (s.unknown === r.index) s.unknown = undefined;
        s.done.set(r.index, r.status);
        // The run started unless when/unless decided (skipped, ok) before it.
        const runStarted =
          r.stage === 'run' || r.stage === 'verify' || (r.stage === undefined && (r.status === 'changed' || r.status === 'failed'));
        if (runStarted) {
          const at = s.ran.indexOf(r.index);
          if (at >= 0) s.ran.splice(at, 1);
          s.ran.push(r.index);
          s.rolledBack.delete(r.index);
        }
        break;
      }
      case 'rollback-end': {
        const s = host(r.host);
        endLine(s, open, 'rollback', 'step', r);
        if (s.rollbackInFlight === r.index) s.rollbackInFlight = undefined;
        if (r.status === 'ok') {
          s.rolledBack.add(r.index);
          s.rollbackFailed.delete(r.index);
        } else s.rollbackFailed.add(r.index);
        break;
      }
      case 'alternative-start':
        host(r.host).alternatives.delete(`${r.index}/${r.rank}`);
        break;
      case 'alternative-end': {
        const s = host(r.host);
        s.alternatives.set(`${r.index}/${r.rank}`, r.status);
        s.events.push(`"${r.step}": alternative ${r.alternative} ${r.status} at ${r.time}${r.message ? `: ${r.message}` : ''}`);
        break;
      }
      case 'batches':
        break;
      case 'lock-broken':
        host(r.host).events.push(
          `lock of run ${String(r.holder?.run_id)} broken at ${r.time} by ${String(r.by_controller)} pid ${String(r.by_pid)}`,
        );
        break;
      case 'warning':
        if (r.host) host(r.host).events.push(`warning: ${r.message}`);
        break;
      case 'journal-close':
        break;
    }
  }
  for (const s of h.hosts.values()) {
    // Changed, then rolled back ok: no longer in effect (resume runs it again). A failed step stays failed.
    for (const i of s.rolledBack) if (s.done.get(i) !== 'failed') s.done.delete(i);
  }
  if (lastEnd && endAfterOpen) h.end = lastEnd;
  else {
    if (lastOpen) h.openedBy = lastOpen;
    // A later process (e.g. an unlock) opened the journal without running anything: the run's end stands
    // (unless that process still runs: see summarize).
    if (lastEnd && !workSinceEnd) h.end = lastEnd;
  }
  h.started ??= records.find((r) => 'time' in r)?.time;
  return h;
}

function lineKey(host: string, kind: StepLine['kind'], phase: Phase, index: number): string {
  return `${host}\0${kind}\0${phase}\0${index}`;
}

function endLine(
  s: HostHistory,
  open: Map<string, StepLine>,
  kind: StepLine['kind'],
  phase: Phase,
  r: { host: string } & Pick<StepLine, 'index' | 'step' | 'status' | 'stage' | 'code' | 'duration_ms' | 'message'>,
): void {
  const key = lineKey(r.host, kind, phase, r.index);
  let line = open.get(key);
  if (!line) {
    line = { kind, phase, index: r.index, step: r.step, status: '' };
    s.lines.push(line);
  }
  open.delete(key);
  line.status = r.status;
  if (r.stage !== undefined && kind === 'step') line.stage = r.stage;
  if (r.code !== undefined) line.code = r.code;
  if (r.duration_ms !== undefined) line.duration_ms = r.duration_ms;
  if (r.message !== undefined) line.message = r.message;
}

const STEP_STATUSES = new Set<string>(['skipped', 'ok', 'changed', 'failed', 'unknown']);

function registered(v: { stdout?: unknown; stderr?: unknown; code?: unknown; status?: unknown }): Registered {
  return {
    stdout: typeof v.stdout === 'string' ? v.stdout : '',
    stderr: typeof v.stderr === 'string' ? v.stderr : '',
    code: typeof v.code === 'number' ? v.code : null,
    ...(typeof v.status === 'string' && STEP_STATUSES.has(v.status) ? { status: v.status as StepStatus } : {}),
  };
}

// ---------------------------------------------------------------------------------------
// Listing

export type ListedStatus = RunStatus | 'incomplete' | 'running?' | 'corrupt';

export interface RunSummary {
  run_id: string;
  runbook?: string;
  runbook_file?: string;
  started?: string;
  ended?: string;
  status: ListedStatus;
  exit_code?: number;
  /** Host count by status; never started: 'pending', started but unfinished: 'incomplete'. */
  hosts: Record<string, number>;
  journal: string;
  /** Set when status is corrupt. */
  error?: string;
  torn?: boolean;
}

/**
 * A history as `runs` and `show-run` list it. `alive` says whether the process that last
 * opened the journal still runs (the caller looks; this stays pure).
 */
export function summarize(h: RunHistory, alive: (o: JournalOpenRecord) => boolean): RunSummary {
  const sum: RunSummary = {
    run_id: h.runId,
    status: 'incomplete',
    hosts: {},
    journal: h.path,
    ...(h.torn ? { torn: true } : {}),
    ...(h.start ? { runbook: h.start.runbook, ...(h.start.runbook_file ? { runbook_file: h.start.runbook_file } : {}) } : {}),
    ...(h.started ? { started: h.started } : {}),
  };
  if (h.openedBy && alive(h.openedBy)) sum.status = 'running?';
  else if (h.end) {
    sum.status = h.end.status;
    sum.ended = h.end.time;
    if (h.end.exit_code !== undefined) sum.exit_code = h.end.exit_code;
  }
  for (const s of h.hosts.values()) {
    const k = s.finished ?? (s.started ? 'incomplete' : 'pending');
    sum.hosts[k] = (sum.hosts[k] ?? 0) + 1;
  }
  return sum;
}

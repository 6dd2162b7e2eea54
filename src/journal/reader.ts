/**
 * Reading run journals: records, the list of runs, and per-host state for resume/rollback.
 */
import { promises as fsp } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { RunbookError } from '../core/errors.js';
import type { HostStatus, Registered, RunStatus, StepStatus } from '../engine/events.js';

/** One journal line: a RunEvent (minus output) or a journal-only record (journal-open, lock-broken). */
export type JournalRecord = Record<string, unknown> & { type: string };

export interface JournalContents {
  path: string;
  records: JournalRecord[];
  /** The last line was incomplete or unparsable (crash mid-write) and was ignored. */
  torn: boolean;
}

/** Parses journal text. Exported for tests; readJournal() reads the file. */
export function parseJournal(text: string, path: string): JournalContents {
  const records: JournalRecord[] = [];
  let torn = false;
  if (text.length === 0) return { path, records, torn };
  const endsWithNl = text.endsWith('\n');
  const lines = text.split('\n');
  if (endsWithNl) lines.pop(); // the empty string after the final newline
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const isLast = i === lines.length - 1;
    let rec: unknown;
    let problem: string | undefined;
    try {
      rec = JSON.parse(line);
      if (!rec || typeof rec !== 'object' || Array.isArray(rec) || typeof (rec as { type?: unknown }).type !== 'string') {
        problem = 'is not a journal record (a JSON object with a "type")';
      }
    } catch (err) {
      problem = `is not valid JSON (${(err as Error).message})`;
    }
    // A torn last line (the controller died while appending: no newline, or not JSON) is
    // ignored; everything before it is intact. Its sync() never returned, so no action
    // depended on it.
    if (isLast && (problem || !endsWithNl)) {
      torn = true;
      continue;
    }
    if (problem) {
      throw new RunbookError(
        'E_JOURNAL_CORRUPT',
        `run journal ${path} line ${i + 1} ${problem}; the file was damaged or edited. Only a torn last line is tolerated; move the file away to forget the run`,
      );
    }
    records.push(rec as JournalRecord);
  }
  return { path, records, torn };
}

/** Reads a journal file. Missing file: E_RUN_NOT_FOUND. */
export async function readJournal(path: string): Promise<JournalContents> {
  let text: string;
  try {
    text = await fsp.readFile(path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT')
      throw new RunbookError(
        'E_RUN_NOT_FOUND',
        `no run journal at ${path}; see \`runbook runs\` for the runs in this state directory (--state-dir)`,
      );
    throw new RunbookError('E_JOURNAL_READ', `cannot read the run journal ${path}: ${e.message}`, { cause: err });
  }
  return parseJournal(text, path);
}

// ---------------------------------------------------------------------------------------
// Per-host state

export interface HostJournalState {
  /** A host-start was recorded. */
  started: boolean;
  /** Final status, if the host finished (a host-end with no later host-start). */
  finished?: HostStatus;
  /** A main-phase step has started, so the preflight had passed. */
  preflightDone: boolean;
  /**
   * Durable outcomes of main-phase steps, by step index. Not here: a recorded 'unknown'
   * outcome (see `unknown`), and a non-failed step whose rollback ended ok (undone, so a
   * resume runs it again).
   */
  done: Map<number, StepStatus>;
  /** The main-phase step with an intent and no outcome (or an 'unknown' outcome). */
  unknown?: number;
  /**
   * Rollback ledger: indices of main-phase steps whose `run` started (and that have a
   * rollback, when the steps are known), in the order they ran, minus those already rolled
   * back ok. Does not include `unknown`.
   */
  ledger: number[];
  /** Steps whose rollback ended ok. */
  rolledBack: Set<number>;
  /** A rollback with an intent and no outcome (controller died during it); it is still in `ledger`. */
  rollbackInFlight?: number;
  /** Rollbacks that ended failed (still in `ledger`). */
  rollbackFailed: Set<number>;
  /** Registered outputs, by variable name. */
  registers: Record<string, Registered>;
}

export interface StepInfo {
  index: number;
  rollback?: string;
  register?: string;
}

export interface HostStatesOptions {
  /** The runbook's main-phase steps: only steps with a rollback enter the ledger; register names. */
  steps?: StepInfo[];
  /** Preflight steps (for register names). */
  preflight?: StepInfo[];
}

function emptyHost(): HostJournalState {
  return {
    started: false,
    preflightDone: false,
    done: new Map(),
    ledger: [],
    rolledBack: new Set(),
    rollbackFailed: new Set(),
    registers: {},
  };
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isInteger(v) ? v : undefined);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/**
 * Replays a journal into per-host state. Records of several processes (apply, then resume,
 * then rollback) are read in order; later outcomes win.
 */
export function hostStates(records: JournalRecord[], opts: HostStatesOptions = {}): Map<string, HostJournalState> {
  const out = new Map<string, HostJournalState>();
  const hasRollback = (i: number) => (opts.steps ? !!opts.steps.find((s) => s.index === i)?.rollback : true);
  const regName = (phase: string, i: number) => (phase === 'preflight' ? opts.preflight : opts.steps)?.find((s) => s.index === i)?.register;
  // Order in which steps' runs started, per host (may contain an index twice if re-run).
  const runOrder = new Map<string, number[]>();
  const get = (h: string) => {
    let s = out.get(h);
    if (!s) {
      s = emptyHost();
      out.set(h, s);
      runOrder.set(h, []);
    }
    return s;
  };
  const addLedger = (h: string, i: number) => {
    const order = runOrder.get(h)!;
    const at = order.indexOf(i);
    if (at >= 0) order.splice(at, 1);
    order.push(i);
  };

  for (const r of records) {
    const host = str(r.host);
    // Hosts named in a plan exist even if never started.
    if (r.type === 'run-start' && Array.isArray(r.hosts)) for (const h of r.hosts) if (typeof h === 'string') get(h);
    if (!host) continue;
    const s = get(host);
    const index = num(r.index);
    const phase = str(r.phase) ?? 'step';
    switch (r.type) {
      case 'host-start':
        s.started = true;
        s.finished = undefined;
        break;
      case 'host-end':
        s.finished = str(r.status) as HostStatus | undefined;
        break;
      case 'step-start':
        if (index === undefined) break;
        if (phase === 'step') {
          s.preflightDone = true;
          s.unknown = index;
          s.done.delete(index);
        }
        break;
      case 'step-end': {
        if (index === undefined) break;
        const status = str(r.status) as StepStatus | undefined;
        const reg = r.register as (Partial<Registered> & { name?: string }) | undefined;
        if (reg && typeof reg === 'object') {
          const name = str(reg.name) ?? regName(phase, index);
          if (name)
            s.registers[name] = {
              stdout: str(reg.stdout) ?? '',
              stderr: str(reg.stderr) ?? '',
              code: typeof reg.code === 'number' ? reg.code : null,
            };
        }
        if (phase !== 'step') break;
        if (status === 'unknown' || status === undefined) {
          s.unknown = index;
          break;
        }
        if (s.unknown === index) s.unknown = undefined;
        s.done.set(index, status);
        // The run started unless when/unless decided (skipped) before it.
        const stage = str(r.stage);
        const runStarted = stage === 'run' || stage === 'verify' || (stage === undefined && (status === 'changed' || status === 'failed'));
        if (runStarted && hasRollback(index)) {
          addLedger(host, index);
          s.rolledBack.delete(index);
        }
        break;
      }
      case 'rollback-start':
        if (index !== undefined) s.rollbackInFlight = index;
        break;
      case 'rollback-end':
        if (index === undefined) break;
        if (s.rollbackInFlight === index) s.rollbackInFlight = undefined;
        if (r.status === 'ok') {
          s.rolledBack.add(index);
          s.rollbackFailed.delete(index);
        } else s.rollbackFailed.add(index);
        break;
    }
  }
  for (const [h, s] of out) {
    // A step that changed the host and was then rolled back ok no longer holds: it is not
    // "done" (resume runs it again). A failed step stays failed (the engine finishes its unwind).
    for (const i of s.rolledBack) if (s.done.get(i) !== 'failed') s.done.delete(i);
    // An unknown step is one whose run may have started: it is not in the ledger here (the
    // engine decides through verify), but a step that was rolled back is not re-added.
    s.ledger = runOrder.get(h)!.filter((i) => !s.rolledBack.has(i) && i !== s.unknown);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Listing runs

export interface RunSummary {
  run_id: string;
  runbook?: string;
  runbook_file?: string;
  started?: string;
  ended?: string;
  /** From the last run-end after the last process opened the journal; else incomplete / running?. */
  status: RunStatus | 'incomplete' | 'running?' | 'corrupt';
  exit_code?: number;
  /** Host count by status; hosts never started count as 'pending', started but unfinished as 'incomplete'. */
  hosts: Record<string, number>;
  journal: string;
  /** Set when status is corrupt. */
  error?: string;
  torn?: boolean;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Summarises one journal's records. */
export function summarizeRun(runId: string, path: string, records: JournalRecord[], torn = false): RunSummary {
  const sum: RunSummary = { run_id: runId, status: 'incomplete', hosts: {}, journal: path, ...(torn ? { torn } : {}) };
  let lastOpen: JournalRecord | undefined;
  let lastOpenAt = -1;
  let lastEndAt = -1;
  let lastEnd: JournalRecord | undefined;
  records.forEach((r, i) => {
    if (r.type === 'journal-open') {
      lastOpen = r;
      lastOpenAt = i;
    }
    if (r.type === 'run-start' && sum.started === undefined) {
      sum.started = str(r.time);
      sum.runbook = str(r.runbook);
      sum.runbook_file = str(r.runbook_file);
      if (typeof r.run_id === 'string') sum.run_id = r.run_id;
    }
    if (r.type === 'run-end') {
      lastEnd = r;
      lastEndAt = i;
    }
  });
  if (sum.started === undefined && records.length) sum.started = str(records[0].time);
  const takeEnd = (e: JournalRecord): void => {
    sum.status = (str(e.status) ?? 'incomplete') as RunSummary['status'];
    sum.ended = str(e.time);
    if (typeof e.exit_code === 'number') sum.exit_code = e.exit_code;
  };
  if (lastEnd && lastEndAt > lastOpenAt) {
    takeEnd(lastEnd);
  } else if (lastOpen && lastOpen.controller === hostname() && typeof lastOpen.pid === 'number' && pidAlive(lastOpen.pid)) {
    sum.status = 'running?';
  } else if (lastEnd) {
    // A later process (e.g. an unlock) opened the journal without a run; keep the run's end.
    const laterRun = records
      .slice(lastEndAt + 1)
      .some((r) => r.type === 'run-start' || r.type === 'host-start' || r.type === 'step-start' || r.type === 'rollback-start');
    if (!laterRun) takeEnd(lastEnd);
  }
  for (const [, s] of hostStates(records)) {
    const k = s.finished ?? (s.started ? 'incomplete' : 'pending');
    sum.hosts[k] = (sum.hosts[k] ?? 0) + 1;
  }
  return sum;
}

/** Every run in the state dir, newest first. A damaged journal is listed with status corrupt. */
export async function listRuns(stateDir: string): Promise<RunSummary[]> {
  const dir = join(stateDir, 'runs');
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new RunbookError('E_JOURNAL_READ', `cannot list runs in ${dir}: ${(err as Error).message}`, { cause: err });
  }
  const out: RunSummary[] = [];
  for (const name of names) {
    if (!name.endsWith('.ndjson')) continue;
    const runId = name.slice(0, -'.ndjson'.length);
    const path = join(dir, name);
    try {
      const j = await readJournal(path);
      out.push(summarizeRun(runId, path, j.records, j.torn));
    } catch (err) {
      out.push({ run_id: runId, status: 'corrupt', hosts: {}, journal: path, error: (err as Error).message });
    }
  }
  out.sort((a, b) => (a.run_id < b.run_id ? 1 : a.run_id > b.run_id ? -1 : 0));
  return out;
}

/** The first run-start record (carries runbook_file, runbook_hash, inputs, plan). */

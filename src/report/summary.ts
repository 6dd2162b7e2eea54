/**
 * Folds a run's event stream into one summary: the data behind the final table, the reports
 * (.json/.md/.xml) and the metrics file. Pure: no I/O.
 */
import type { HostStatus, Phase, RunEvent, RunStatus, StepEndEvent } from '../engine/events.js';
import { runStatusOf } from '../engine/events.js';

export const HOST_STATUSES: readonly HostStatus[] = ['ok', 'changed', 'failed', 'rolled-back', 'needs-attention', 'unreachable', 'skipped'];

/** Statuses that need a human to look (they get a detail block in the summary). */
export const PROBLEM_STATUSES: readonly HostStatus[] = ['failed', 'rolled-back', 'needs-attention', 'unreachable'];

/** How many trailing lines of a failing command's stderr/stdout are kept. */
export const TAIL_LINES = 20;

export interface RollbackSummary {
  step: string;
  status: 'ok' | 'failed';
  code: number | null;
  command?: string;
  stderr_tail?: string;
  message?: string;
}

export interface HostSummary {
  host: string;
  status: HostStatus;
  batch?: number;
  /** Steps (phase "step") that ended `changed`, in order. */
  changed_steps: string[];
  /** The step that failed (or whose outcome is unknown); absent when none did. */
  failed_step?: string;
  failed_phase?: Phase;
  /** Which part decided the failure: when/unless/run/verify. */
  failed_stage?: StepEndEvent['stage'];
  /** Rendered, redacted command that decided the failure. */
  command?: string;
  code?: number | null;
  /** Stable code of why the host did not run (host-end's code: E_LOCKED, E_COOLDOWN, ...). */
  end_code?: string;
  timed_out?: boolean;
  /** Last lines of the failing command's stderr (already bounded and redacted by the engine). */
  stderr_tail?: string;
  stdout_tail?: string;
  /** One sentence from the engine: why the host ended as it did. */
  message?: string;
  /** The runbook's facts for this host (host-end). */
  facts?: Record<string, string>;
  rollbacks: RollbackSummary[];
  started_at?: string;
  ended_at?: string;
  duration_ms: number;
}

export interface RunSummary {
  run_id: string;
  runbook: string;
  /** `incomplete` when the stream has no run-end (the controller died or the stream was cut). */
  status: RunStatus | 'incomplete';
  exit_code: number;
  started_at: string;
  ended_at: string;
  duration_ms: number;
  journal?: string;
  /** apply (default), resume, or rollback of an earlier run. */
  mode?: 'apply' | 'resume' | 'rollback';
  /** Hosts in run order (the run-start list, then any host seen only later). */
  hosts: HostSummary[];
  /** Every host status with its count (0 included). */
  counts: Record<HostStatus, number>;
  warnings: string[];
  /** One line: what the operator should do now. */
  next: string;
}

export function tailLines(text: string | undefined, n = TAIL_LINES): string | undefined {
  if (text === undefined) return undefined;
  const lines = text.replace(/\s+$/, '').split('\n');
  const t = lines.slice(-n).join('\n');
  return t === '' ? undefined : t;
}

export function emptyCounts(): Record<HostStatus, number> {
  return Object.fromEntries(HOST_STATUSES.map((s) => [s, 0])) as Record<HostStatus, number>;
}

export function summarize(events: RunEvent[]): RunSummary {
  let runId = '';
  let runbook = '';
  let startedAt: string | undefined;
  let endedAt: string | undefined;
  let journal: string | undefined;
  let mode: RunSummary['mode'];
  let end: Extract<RunEvent, { type: 'run-end' }> | undefined;
  const warnings: string[] = [];
  const hosts = new Map<string, HostSummary>();
  const get = (name: string): HostSummary => {
    let h = hosts.get(name);
    if (!h) {
      h = { host: name, status: 'skipped', changed_steps: [], rollbacks: [], duration_ms: 0 };
      hosts.set(name, h);
    }
    return h;
  };
  const ended = new Set<string>();

  for (const e of events) {
    startedAt ??= e.time;
    endedAt = e.time;
    switch (e.type) {
      case 'run-start':
        runId = e.run_id;
        runbook = e.runbook;
        startedAt = e.time;
        journal = e.journal;
        mode = e.mode;
        for (const h of e.hosts) get(h);
        break;
      case 'host-start': {
        const h = get(e.host);
        h.batch = e.batch;
        h.started_at = e.time;
        break;
      }
      case 'step-start':
        get(e.host).started_at ??= e.time;
        break;
      case 'step-end': {
        const h = get(e.host);
        if (e.status === 'changed' && e.phase === 'step' && !h.changed_steps.includes(e.step)) h.changed_steps.push(e.step);
        // A failed step of an alternative is the escalation's (it tries the next one); an unknown one ends the host.
        if ((e.status === 'unknown' || (e.status === 'failed' && !e.alternative)) && h.failed_step === undefined) {
          h.failed_step = e.step;
          h.failed_phase = e.phase;
          h.failed_stage = e.stage;
          h.command = e.command;
          h.code = e.code;
          h.timed_out = e.timed_out;
          h.stderr_tail = tailLines(e.stderr);
          h.stdout_tail = tailLines(e.stdout);
          if (e.message) h.message ??= e.message;
        }
        break;
      }
      case 'rollback-end':
        get(e.host).rollbacks.push({
          step: e.step,
          status: e.status,
          code: e.code,
          command: e.command,
          stderr_tail: tailLines(e.stderr),
          message: e.message,
        });
        break;
      case 'host-end': {
        const h = get(e.host);
        ended.add(e.host);
        h.status = e.status;
        h.ended_at = e.time;
        h.duration_ms = e.duration_ms;
        if (e.message) h.message = e.message;
        if (e.code) h.end_code = e.code;
        if (e.facts) h.facts = { ...e.facts };
        if (e.failed_step && h.failed_step === undefined) h.failed_step = e.failed_step;
        // The host's own list wins: it leaves out steps of an alternative that was undone.
        if (e.changed_steps) h.changed_steps = [...e.changed_steps];
        break;
      }
      case 'warning':
        warnings.push(e.host ? `${e.host}: ${e.message}` : e.message);
        break;
      case 'run-end':
        end = e;
        runId ||= e.run_id;
        for (const [name, st] of Object.entries(e.hosts)) get(name).status = st;
        break;
      case 'output':
      case 'rollback-start':
      case 'alternative-start':
      case 'alternative-end':
      case 'batches':
        break;
      default: {
        const never: never = e;
        void never;
      }
    }
  }

  const hostList = [...hosts.values()];
  const statusMap = Object.fromEntries(hostList.map((h) => [h.host, h.status])) as Record<string, HostStatus>;
  let status: RunSummary['status'];
  let exitCode: number;
  if (end) {
    status = end.status;
    exitCode = end.exit_code;
  } else {
    status = 'incomplete';
    exitCode = runStatusOf(statusMap, false).exit_code;
  }
  const counts = emptyCounts();
  for (const h of hostList) counts[h.status]++;
  const t0 = startedAt ?? new Date(0).toISOString();
  const t1 = endedAt ?? t0;
  const summary: RunSummary = {
    run_id: runId,
    runbook,
    status,
    exit_code: exitCode,
    started_at: t0,
    ended_at: t1,
    duration_ms: end?.duration_ms ?? Math.max(0, Date.parse(t1) - Date.parse(t0)),
    journal,
    ...(mode ? { mode } : {}),
    hosts: hostList,
    counts,
    warnings,
    next: '',
  };
  summary.next = whatToDoNow(summary);
  return summary;
}

function names(hs: HostSummary[], max = 5): string {
  const n = hs.map((h) => h.host);
  return n.length <= max ? n.join(', ') : `${n.slice(0, max).join(', ')} and ${n.length - max} more`;
}

/** One line answering "what do I do now", most urgent first. */
export function whatToDoNow(s: RunSummary, maxNames = 5): string {
  const by = (st: HostStatus) => s.hosts.filter((h) => h.status === st);
  const id = s.run_id || 'RUN_ID';
  const parts: string[] = [];
  const attention = by('needs-attention');
  // After `runbook rollback`, rolled-back is the goal, not a failure.
  const failed = s.mode === 'rollback' ? by('failed') : [...by('failed'), ...by('rolled-back')];
  const unreachable = by('unreachable');
  const skipped = by('skipped');
  if (attention.length) {
    parts.push(
      `check ${names(attention, maxNames)} by hand (a rollback failed or a step's outcome is unknown), see \`runbook show-run ${id}\``,
    );
  }
  if (s.status === 'interrupted' || s.status === 'incomplete') {
    parts.push(`finish with \`runbook resume ${id}\` or unwind with \`runbook rollback ${id}\``);
  }
  if (failed.length) {
    const rolled = failed.every((h) => h.status === 'rolled-back');
    parts.push(
      `fix what failed on ${names(failed, maxNames)} (${rolled ? 'rolled back' : 'failed'}; details above) and run \`runbook apply ${s.runbook || 'RUNBOOK'}\` again`,
    );
  }
  if (unreachable.length)
    parts.push(`check that ${names(unreachable, maxNames)} ${unreachable.length === 1 ? 'is' : 'are'} reachable over SSH`);
  // A host its own preflight refused needs a person (the reason is above), not another run.
  const refused = skipped.filter((h) => h.failed_phase === 'preflight' || /^preflight /.test(h.message ?? ''));
  const notStarted = skipped.filter((h) => !refused.includes(h));
  if (refused.length) {
    parts.push(
      `look at ${names(refused, maxNames)}: ${refused.length === 1 ? 'its' : 'their'} preflight refused the change (reason above); nothing was changed there`,
    );
  }
  if (notStarted.length && s.status !== 'interrupted' && s.status !== 'incomplete') {
    parts.push(`run again to cover the ${notStarted.length} host${notStarted.length === 1 ? '' : 's'} not started`);
  }
  if (parts.length === 0) {
    if (s.mode === 'rollback')
      return `Nothing: ${s.counts['rolled-back']} host${s.counts['rolled-back'] === 1 ? ' is' : 's are'} back to where run ${id} found them.`;
    return s.counts.changed > 0
      ? `Nothing: every host is ok (${s.counts.changed} changed). To undo this run: \`runbook rollback ${id}\`.`
      : 'Nothing: every host was already ok.';
  }
  const line = parts.join('; ');
  return `${line[0].toUpperCase() + line.slice(1)}.`;
}

/** The STEP column of the summary table: failed step, else last changed step (+N more), else the reason. */
export function stepColumn(h: HostSummary): string {
  if (h.failed_step) return `${h.failed_step} (${h.failed_phase === 'preflight' ? 'preflight ' : ''}failed)`;
  if (h.changed_steps.length) {
    const last = h.changed_steps[h.changed_steps.length - 1];
    return h.changed_steps.length > 1 ? `${last} (+${h.changed_steps.length - 1} changed)` : last;
  }
  if (h.status === 'skipped' || h.status === 'unreachable') return h.message ?? '-';
  return '-';
}

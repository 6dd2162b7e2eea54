/**
 * --window HH:MM-HH:MM: a daily maintenance window in local time (it may cross midnight, e.g.
 * 22:00-06:00). Start is inclusive, end exclusive; 00:00-24:00 is the whole day. No host starts
 * outside it; hosts in flight finish (the engine asks the gate before starting each host).
 */
import { RunbookError } from '../core/errors.js';

export interface TimeWindow {
  spec: string;
  /** Minutes after local midnight. */
  start: number;
  end: number;
}

function minutes(part: string, spec: string, allow24: boolean): number {
  const m = /^(\d{1,2}):(\d{2})$/.exec(part);
  const h = m ? Number(m[1]) : NaN;
  const min = m ? Number(m[2]) : NaN;
  const ok = m && min < 60 && (h < 24 || (allow24 && h === 24 && min === 0));
  if (!ok) {
    throw new RunbookError(
      'E_USAGE',
      `--window ${spec}: "${part}" is not a time; write the window as HH:MM-HH:MM in local time, e.g. 22:00-06:00.`,
    );
  }
  return h * 60 + min;
}

export function parseWindow(spec: string): TimeWindow {
  const s = String(spec).trim();
  const parts = s.split('-');
  if (parts.length !== 2) {
    throw new RunbookError('E_USAGE', `--window ${spec}: expected HH:MM-HH:MM in local time, e.g. 22:00-06:00 (it may cross midnight).`);
  }
  const start = minutes(parts[0].trim(), s, false);
  const end = minutes(parts[1].trim(), s, true);
  if (start === end) {
    throw new RunbookError(
      'E_USAGE',
      `--window ${spec}: start and end are the same, so the window is empty; for the whole day use 00:00-24:00, or drop --window.`,
    );
  }
  return { spec: s, start, end };
}

/** True when `now` (its local time of day) is inside the window. */
export function inWindow(spec: string | TimeWindow, now: Date): boolean {
  const w = typeof spec === 'string' ? parseWindow(spec) : spec;
  const t = now.getHours() * 60 + now.getMinutes();
  return w.start < w.end ? t >= w.start && t < w.end : t >= w.start || t < w.end;
}

const hhmm = (d: Date) => `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;

/**
 * The engine's `mayStartHost` gate: undefined when a host may start now, else the reason
 * (it becomes the skipped host's message). Parses (and so validates) the spec at once.
 */
export function windowGate(spec: string, clock: () => Date = () => new Date()): () => string | undefined {
  const w = parseWindow(spec);
  return () => {
    const now = clock();
    return inWindow(w, now) ? undefined : `outside the maintenance window ${w.spec} (local time now ${hhmm(now)})`;
  };
}

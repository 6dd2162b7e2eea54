/**
 * Renders engine events. Three modes, chosen by the CLI:
 *  - json:  NDJSON on stdout, exactly the events (the run-end event is the summary); nothing else.
 *  - tty:   a live view on stderr (one ora spinner with one line per host in flight, finished hosts
 *           collapsed into counts, a compact view when hosts outnumber rows), then the summary on stdout.
 *  - plain: one timestamped line per event on stdout, no spinner, no color; then the summary.
 * The engine never prints; everything the user sees during a run comes through here.
 */
import type { Ora } from 'ora';

// ora is loaded only for the live view (a terminal): cron, CI and --json never pay for it.
let oraFactory: typeof import('ora').default | undefined;
let oraLoading: Promise<void> | undefined;
function loadOra(): Promise<void> {
  oraLoading ??= import('ora').then((m) => {
    oraFactory = m.default;
  });
  return oraLoading;
}
import { formatDuration } from '../core/duration.js';
import type { EventOf, EventType, RunEvent } from '../engine/events.js';
import {
  COLORS,
  NO_COLORS,
  colorAllowed,
  countsText,
  formatElapsed,
  pad,
  statusColor,
  safeJson,
  safeValue,
  summaryText,
  truncate,
  width,
  type Paint,
} from './text.js';
import { HOST_STATUSES, emptyCounts, summarize } from './summary.js';

export interface RendererOptions {
  json: boolean;
  verbose: boolean;
  /** Live view (spinners) on stderr; the CLI passes stderr.isTTY. */
  tty: boolean;
  /** Colors wanted; still off unless tty and NO_COLOR unset. */
  color: boolean;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Terminal size override (default: the stderr stream's columns/rows, else 80x24). */
  columns?: number;
  rows?: number;
  /** Environment for NO_COLOR (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Live view refresh period in ms (default 100 = 10 frames/s). */
  refreshMs?: number;
}

export interface Renderer {
  onEvent(e: RunEvent): void;
  /** Stops spinners and prints the final summary (non-JSON modes). Idempotent. */
  close(): Promise<void>;
}

export function createRenderer(opts: RendererOptions): Renderer {
  if (opts.json) return new JsonRenderer(opts.stdout);
  const paint = colorAllowed(opts.tty && opts.color, opts.env ?? process.env) ? COLORS : NO_COLORS;
  if (opts.tty) void loadOra();
  return opts.tty ? new TtyRenderer(opts, paint) : new PlainRenderer(opts);
}

function write(stream: NodeJS.WritableStream, text: string): Promise<void> {
  return new Promise((resolve) => {
    if (text === '') return resolve();
    stream.write(text, () => resolve());
  });
}

// ---------------------------------------------------------------- JSON

/**
 * The lines of one turn of the event loop, written together when it ends: a burst of events (a fleet's step ends)
 * is one write(2), not one per line. drain() writes what is pending at once.
 */
class TurnWriter {
  private pending: string[] = [];
  constructor(private readonly out: NodeJS.WritableStream) {}
  write(line: string): void {
    if (this.pending.push(line) === 1) setImmediate(() => this.drain());
  }
  drain(): void {
    if (!this.pending.length) return;
    const text = this.pending.join('');
    this.pending = [];
    this.out.write(text);
  }
}

class JsonRenderer implements Renderer {
  private readonly lines: TurnWriter;
  constructor(out: NodeJS.WritableStream) {
    this.lines = new TurnWriter(out);
  }
  onEvent(e: RunEvent): void {
    const line = e.time ? e : { ...e, time: new Date().toISOString() };
    this.lines.write(`${safeJson(line)}\n`);
  }
  async close(): Promise<void> {
    this.lines.drain();
  }
}

// ---------------------------------------------------------------- plain

type LineOf = { [K in EventType]: (e: EventOf<K>) => string | undefined };

const stepLabel = (phase: string, index: number, step: string) => `${phase === 'preflight' ? 'preflight' : 'step'} ${index + 1} "${step}"`;

/** One line per event (without timestamp). A mapped type: a new event kind without a line fails to compile. */
export const PLAIN_LINES: LineOf = {
  'run-start': (e) =>
    `run ${e.run_id} start: runbook ${e.runbook}, ${e.hosts.length} host${e.hosts.length === 1 ? '' : 's'}, ${e.batches.length} batch${e.batches.length === 1 ? '' : 'es'}, forks ${e.forks}, max_failed ${e.max_failed}${e.journal ? `, journal ${e.journal}` : ''}`,
  'host-start': (e) => `${e.host} start (batch ${e.batch + 1})`,
  'step-start': (e) => `${e.host} ${stepLabel(e.phase, e.index, e.step)} start`,
  'step-end': (e) => {
    let s = `${e.host} ${stepLabel(e.phase, e.index, e.step)} ${e.status}`;
    const bits: string[] = [];
    if (e.stage && (e.status === 'failed' || e.status === 'unknown' || e.stage === 'if' || e.stage === 'when' || e.stage === 'unless'))
      bits.push(`by ${e.stage}`);
    if (e.alternative) bits.push(`alternative ${e.alternative}`);
    if (e.attempts !== undefined && e.attempts > 1) bits.push(`${e.attempts} attempts`);
    if (e.timed_out) bits.push('timed out');
    else if (e.code !== null && e.code !== 0) bits.push(`exit ${e.code}`);
    bits.push(formatDuration(e.duration_ms));
    s += ` (${bits.join(', ')})`;
    if (e.message) s += `: ${oneLine(e.message)}`;
    return s;
  },
  'rollback-start': (e) => `${e.host} rollback "${e.step}" start`,
  'rollback-end': (e) =>
    `${e.host} rollback "${e.step}" ${e.status}${e.status === 'failed' ? ` (exit ${e.code ?? 'none'})` : ''}${e.message ? `: ${oneLine(e.message)}` : ''}`,
  'host-end': (e) =>
    `${e.host} ${e.status} (${formatDuration(e.duration_ms)})${e.failed_step ? ` at "${e.failed_step}"` : ''}${e.message ? `: ${oneLine(e.message)}` : ''}`,
  'alternative-start': (e) => `${e.host} ${stepLabel('step', e.index, e.step)} alternative ${e.rank + 1} "${e.alternative}" start`,
  'alternative-end': (e) =>
    `${e.host} ${stepLabel('step', e.index, e.step)} alternative ${e.rank + 1} "${e.alternative}" ${e.status}${e.message ? `: ${oneLine(e.message)}` : ''}`,
  batches: (e) => `main phase: ${e.batches.reduce((n, b) => n + b.length, 0)} host(s) go on, in ${e.batches.length} batch(es)`,
  output: () => undefined, // handled line by line (verbose only)
  warning: (e) => `WARNING ${e.host ? `${e.host}: ` : ''}${oneLine(e.message)}`,
  'run-end': (e) => `run ${e.run_id} end: ${e.status}, exit ${e.exit_code}, ${formatDuration(e.duration_ms)}`,
};

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' / ').trim();
}

const LINE_MAX = 16 * 1024;

/** Splits streamed output into complete lines per (host, step, stream); flushes the rest at step-end. */
class LineBuffer {
  private parts = new Map<string, string>();
  push(e: EventOf<'output'>): string[] {
    const key = `${e.host}\0${e.step}\0${e.stream}`;
    const text = (this.parts.get(key) ?? '') + e.data;
    const lines = text.split('\n');
    let rest = lines.pop() ?? '';
    // A line without end (a command printing megabytes on one line) is shown in pieces, not held whole.
    while (rest.length > LINE_MAX) {
      lines.push(rest.slice(0, LINE_MAX));
      rest = rest.slice(LINE_MAX);
    }
    if (rest === '') this.parts.delete(key);
    else this.parts.set(key, rest);
    return lines.map((l) => l.replace(/\r$/, ''));
  }
  flush(host: string, step: string): Array<{ stream: string; line: string }> {
    const out: Array<{ stream: string; line: string }> = [];
    for (const stream of ['stdout', 'stderr']) {
      const key = `${host}\0${step}\0${stream}`;
      const rest = this.parts.get(key);
      if (rest !== undefined) {
        out.push({ stream, line: rest });
        this.parts.delete(key);
      }
    }
    return out;
  }
}

const outputPrefix = (host: string, stream: string) => `${host} ${stream === 'stderr' ? '!' : '|'} `;

class PlainRenderer implements Renderer {
  private events: RunEvent[] = [];
  private buf = new LineBuffer();
  private closed = false;
  private readonly lines: TurnWriter;
  constructor(private opts: RendererOptions) {
    this.lines = new TurnWriter(opts.stdout);
  }
  private line(time: string, text: string) {
    this.lines.write(`${time} ${text}\n`);
  }
  onEvent(raw: RunEvent): void {
    if (this.closed) return;
    const e = safeValue(raw);
    if (e.type !== 'output') this.events.push(e);
    if (e.type === 'output') {
      if (this.opts.verbose) for (const l of this.buf.push(e)) this.line(e.time, outputPrefix(e.host, e.stream) + l);
      return;
    }
    if (e.type === 'step-end' && this.opts.verbose) {
      for (const r of this.buf.flush(e.host, e.step)) this.line(e.time, outputPrefix(e.host, r.stream) + r.line);
    }
    const text = (PLAIN_LINES[e.type] as (x: RunEvent) => string | undefined)(e);
    if (text !== undefined) this.line(e.time, text);
  }
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.lines.drain();
    if (this.events.length === 0) return;
    await write(this.opts.stdout, `\n${summaryText(summarize(this.events), { stderrLines: 10 })}`);
  }
}

// ---------------------------------------------------------------- TTY

interface InFlight {
  host: string;
  since: number;
  step?: string;
  phase?: string;
  index?: number;
  rollback?: boolean;
  stepSince: number;
}

class TtyRenderer implements Renderer {
  private events: RunEvent[] = [];
  private spinner: Ora | undefined;
  private timer: NodeJS.Timeout | undefined;
  private buf = new LineBuffer();
  private inFlight = new Map<string, InFlight>();
  private done = emptyCounts();
  /** Hosts that had a host-end (the others are counted from run-end). */
  private ended = new Set<string>();
  private total = 0;
  private runbook = '';
  private startedAt = Date.now();
  private closed = false;

  constructor(
    private opts: RendererOptions,
    private paint: Paint,
  ) {}

  // A terminal may report 0x0 (e.g. under script(1)): treat that as unknown, not as no room.
  private get columns(): number {
    return (this.opts.columns ?? (this.opts.stderr as { columns?: number }).columns) || 80;
  }
  private get rows(): number {
    return (this.opts.rows ?? (this.opts.stderr as { rows?: number }).rows) || 24;
  }

  private start(): void {
    if (this.spinner) return;
    if (!oraFactory) {
      void loadOra().then(() => {
        if (!this.closed) this.start();
      });
      return;
    }
    const period = this.opts.refreshMs ?? 100;
    // ora divides by the stream's `columns` (`?? 80` keeps a 0): a terminal without a size (script(1), some
    // serial consoles) made it clear Infinity lines, forever, in one synchronous loop.
    const tty = this.opts.stderr as { columns?: number };
    if (!tty.columns) tty.columns = this.columns;
    this.spinner = oraFactory({
      stream: this.opts.stderr as NodeJS.WriteStream,
      isEnabled: true,
      discardStdin: false, // never steal the terminal's input: Ctrl-C must reach the CLI's handler
      hideCursor: true,
      color: this.paint === NO_COLORS ? false : 'cyan',
      interval: period,
      text: this.compose(),
    });
    this.spinner.start();
    this.timer = setInterval(() => {
      if (this.spinner) this.spinner.text = this.compose();
    }, period);
  }

  /** Writes a persistent line above the live block. */
  private above(text: string): void {
    const lines = `${text
      .split('\n')
      .map((l) => truncate(l, this.columns - 1))
      .join('\n')}\n`;
    if (this.spinner?.isSpinning) {
      this.spinner.clear();
      this.opts.stderr.write(lines);
      this.spinner.text = this.compose();
      this.spinner.render();
    } else {
      this.opts.stderr.write(lines);
    }
  }

  onEvent(raw: RunEvent): void {
    if (this.closed) return;
    const e = safeValue(raw);
    if (e.type !== 'output') this.events.push(e);
    const now = Date.now();
    switch (e.type) {
      case 'run-start':
        this.total = e.hosts.length;
        this.runbook = e.runbook;
        this.startedAt = now;
        this.start();
        break;
      case 'host-start':
        this.inFlight.set(e.host, { host: e.host, since: now, stepSince: now });
        break;
      case 'step-start': {
        const f = this.inFlight.get(e.host) ?? { host: e.host, since: now, stepSince: now };
        Object.assign(f, { step: e.step, phase: e.phase, index: e.index, rollback: false, stepSince: now });
        this.inFlight.set(e.host, f);
        break;
      }
      case 'rollback-start': {
        const f = this.inFlight.get(e.host) ?? { host: e.host, since: now, stepSince: now };
        Object.assign(f, { step: e.step, index: e.index, rollback: true, stepSince: now });
        this.inFlight.set(e.host, f);
        break;
      }
      case 'rollback-end':
        if (e.status === 'failed') this.above(this.paint.red(`✖ ${e.host}: rollback "${e.step}" failed (exit ${e.code ?? 'none'})`));
        break;
      case 'step-end':
        if (this.opts.verbose)
          for (const r of this.buf.flush(e.host, e.step)) this.above(this.paint.dim(outputPrefix(e.host, r.stream)) + r.line);
        // After its preflight a host waits for its batch: it is not in flight until host-start.
        if (e.phase === 'preflight') this.inFlight.delete(e.host);
        break;
      case 'host-end': {
        this.inFlight.delete(e.host);
        this.ended.add(e.host);
        this.done[e.status]++;
        if (e.status !== 'ok' && e.status !== 'changed' && e.status !== 'skipped') {
          const at = e.failed_step ? ` at "${e.failed_step}"` : '';
          this.above(statusColor(e.status, this.paint)(`✖ ${e.host} ${e.status}${at}`) + (e.message ? `: ${oneLine(e.message)}` : ''));
        }
        break;
      }
      case 'alternative-end':
        // The escalation goes on with the next alternative: say why this one did not hold.
        if (e.status === 'undone' || e.status === 'undo-failed')
          this.above(
            (e.status === 'undone' ? this.paint.yellow : this.paint.red)(
              `↺ ${e.host}: "${e.step}": ${e.alternative} ${e.status === 'undone' ? 'did not hold and was undone' : 'did not hold and its undo failed'}${e.message ? `: ${oneLine(e.message)}` : ''}`,
            ),
          );
        break;
      case 'output':
        if (this.opts.verbose) for (const l of this.buf.push(e)) this.above(this.paint.dim(outputPrefix(e.host, e.stream)) + l);
        break;
      case 'warning':
        this.above(this.paint.yellow(`warning: ${e.host ? `${e.host}: ` : ''}${oneLine(e.message)}`));
        break;
      case 'run-end':
        for (const [h, st] of Object.entries(e.hosts)) {
          // Hosts never started (skipped) get no host-end; count them from the final map.
          if (!this.ended.has(h)) this.done[st]++;
        }
        this.inFlight.clear();
        break;
    }
  }

  /** The live block: a header line, then one line per host in flight, or per step when hosts outnumber rows. */
  compose(): string {
    const now = Date.now();
    const cols = Math.max(20, this.columns);
    const p = this.paint;
    const finished = HOST_STATUSES.reduce((n, s) => n + this.done[s], 0);
    const running = this.inFlight.size;
    const waiting = Math.max(0, this.total - finished - running);
    const parts = [`${this.runbook}`, `${finished}/${this.total} done${finished ? `: ${countsText(this.done, p)}` : ''}`];
    if (running) parts.push(`${running} running`);
    if (waiting) parts.push(`${waiting} waiting`);
    parts.push(formatElapsed(now - this.startedAt));
    // The spinner frame and a space come before the first line.
    const head = fitParts(parts, cols - 3);
    const hosts = [...this.inFlight.values()].sort((a, b) => a.since - b.since);
    // Room: terminal rows minus the header, one spare line for the cursor, one for a following write.
    const room = Math.max(1, Math.min(this.rows - 3, 30));
    const lines: string[] = [head];
    const elapsed = (t: number) => formatElapsed(now - t);
    const doing = (h: InFlight) =>
      h.step === undefined
        ? 'connecting'
        : `${h.rollback ? 'rollback' : h.phase === 'preflight' ? 'preflight' : `step ${(h.index ?? 0) + 1}`}: ${h.step}`;
    if (hosts.length <= room) {
      const hw = Math.min(Math.max(...hosts.map((h) => width(h.host)), 4), Math.max(8, cols - 1 - 4 - 7 - 24));
      for (const h of hosts) {
        const what = doing(h);
        const right = ` ${elapsed(h.since)}`;
        const left = `  ${pad(truncate(h.host, hw), hw)}  `;
        const mid = truncate(what, cols - 1 - width(left) - width(right));
        lines.push(`${left}${pad(mid, cols - 1 - width(left) - width(right))}${p.dim(right)}`.replace(/\s+$/, ''));
      }
    } else {
      // Compact: group hosts in flight by what they do.
      const groups = new Map<string, { label: string; order: number; hosts: InFlight[] }>();
      for (const h of hosts) {
        const label = doing(h);
        const order = h.step === undefined ? -2 : h.rollback ? 1e6 + (h.index ?? 0) : h.phase === 'preflight' ? -1 : (h.index ?? 0);
        const g = groups.get(label) ?? { label, order, hosts: [] };
        g.hosts.push(h);
        groups.set(label, g);
      }
      const gs = [...groups.values()].sort((a, b) => a.order - b.order);
      const shown = gs.length <= room ? gs : gs.slice(0, room - 1);
      const cw = Math.max(...shown.map((g) => String(g.hosts.length).length));
      for (const g of shown) {
        const oldest = g.hosts.reduce((a, b) => (a.since <= b.since ? a : b));
        const left = `  ${String(g.hosts.length).padStart(cw)} × `;
        const right = `  longest ${oldest.host} ${elapsed(oldest.since)}`;
        const avail = cols - 1 - width(left);
        const label = truncate(g.label, avail);
        const line =
          width(label) + width(right) <= avail
            ? `${left}${pad(label, avail - width(right))}${p.dim(right)}`
            : width(label) + 8 <= avail
              ? `${left}${pad(label, avail - 7)}${p.dim(` ${elapsed(oldest.since).padStart(6)}`)}`
              : `${left}${label}`;
        lines.push(line);
      }
      if (shown.length < gs.length) {
        const rest = gs.slice(shown.length).reduce((n, g) => n + g.hosts.length, 0);
        lines.push(`  … ${rest} more hosts in ${gs.length - shown.length} other steps`);
      }
    }
    return lines.join('\n');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.spinner) {
      this.spinner.stop();
      this.spinner = undefined;
    }
    if (this.events.length === 0) return;
    const text = summaryText(summarize(this.events), {
      paint: this.paint,
      columns: this.columns,
      rows: this.rows,
      stderrLines: 6,
    });
    await write(this.opts.stdout, `\n${text}`);
  }
}

/** Joins header parts with " · ", dropping middle parts when the line would not fit. */
function fitParts(parts: string[], max: number): string {
  let p = [...parts];
  let s = p.join(' · ');
  while (width(s) > max && p.length > 2) {
    p = [...p.slice(0, p.length - 2), p[p.length - 1]];
    s = p.join(' · ');
  }
  return width(s) > max ? truncate(s, max) : s;
}

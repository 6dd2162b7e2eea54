/**
 * Drives a shell session (shell.ts prepareSession / prepareStep): one long-lived `sh -s` on a process-like IO
 * (an SSH channel) that runs commands one after another. Answers one sudo prompt, learns the session's process
 * group from READY, splits each command's output out of the two streams by its START/END markers, and kills a
 * command (sessionKillScript on a second channel) on timeout or abort.
 *
 * A session runs one command at a time. After a command it is reusable unless the shell ended, the command could
 * not be killed cleanly, or the command's END never came.
 */
import { constants } from 'node:os';
import { StringDecoder } from 'node:string_decoder';
import type { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { BECOME_REJECTED, StderrMarkerFilter, sessionKillScript, type PreparedStep, type SessionLaunch } from './shell.js';
import { Capture, truncation } from './capture.js';
import { normalizeSignal } from './run-driver.js';
import type { ExecOptions, ExecResult } from './types.js';

export interface SessionIO {
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  /** Resolves when the shell ended (channel closed) with its exit status; rejects when the connection is lost. */
  exited: Promise<{ code: number | null; signal: string | null }>;
  /** Runs a script on a second channel with the session's privileges (used to kill a command). */
  runAside(script: string, timeoutMs: number): Promise<unknown>;
  /** Ends the session shell at once (SIGKILL to it, channel closed). */
  destroy(): void;
}

const SIGNAL_NAMES = new Map<number, string>(Object.entries(constants.signals).map(([name, n]) => [n, name]));
/** Output seen outside any command (login noise, leftovers of earlier commands) kept for a failed start. */
const LOOSE_MAX = 16 * 1024;

/**
 * One stream of one command: drops what comes before START, passes what is between START and END, and holds
 * back only a tail that could be the beginning of a marker.
 */
export class StepStream {
  private state: 'before' | 'in' | 'done' = 'before';
  private pending: Buffer = Buffer.alloc(0);
  constructor(
    private readonly start: string,
    private readonly end: string,
  ) {}

  get done(): boolean {
    return this.state === 'done';
  }
  get started(): boolean {
    return this.state !== 'before';
  }

  push(chunk: Buffer): { out: Buffer; dropped: Buffer; start?: string; end?: string } {
    let buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = Buffer.alloc(0);
    const res: { out: Buffer; dropped: Buffer; start?: string; end?: string } = { out: Buffer.alloc(0), dropped: Buffer.alloc(0) };
    if (this.state === 'before') {
      const m = scan(buf, this.start);
      res.dropped = m.before;
      if (m.payload === undefined) {
        this.pending = m.held;
        return res;
      }
      res.start = m.payload;
      buf = m.rest;
      this.state = 'in';
    }
    if (this.state === 'in') {
      const m = scan(buf, this.end);
      res.out = m.before;
      if (m.payload === undefined) {
        this.pending = m.held;
        return res;
      }
      res.end = m.payload;
      this.state = 'done';
    }
    return res;
  }

  /** What is held back (the stream ended early). */
  flush(): Buffer {
    const b = this.state === 'in' ? this.pending : Buffer.alloc(0);
    this.pending = Buffer.alloc(0);
    return b;
  }
}

/**
 * Looks for MARKER PAYLOAD `>>\n` in buf: `before` it, its payload and the `rest` after it; when it is not (all)
 * there, `held` is the tail that is or could be its beginning (kept for the next chunk).
 */
function scan(buf: Buffer, marker: string): { before: Buffer; payload?: string; rest: Buffer; held: Buffer } {
  const none = Buffer.alloc(0);
  const i = buf.indexOf(marker);
  if (i < 0) {
    const k = partialAt(buf, marker);
    return { before: buf.subarray(0, k), rest: none, held: Buffer.from(buf.subarray(k)) };
  }
  const e = buf.indexOf('>>\n', i + marker.length);
  if (e < 0) return { before: buf.subarray(0, i), rest: none, held: Buffer.from(buf.subarray(i)) };
  return { before: buf.subarray(0, i), payload: buf.subarray(i + marker.length, e).toString(), rest: buf.subarray(e + 3), held: none };
}

/** Index from which `buf` ends with a proper prefix of `marker` (buf.length if it does not). */
function partialAt(buf: Buffer, marker: string): number {
  const from = Math.max(0, buf.length - marker.length + 1);
  for (let k = from; k < buf.length; k++) {
    if (buf[k] === 0x3c /* '<' */ && marker.startsWith(buf.subarray(k).toString('latin1'))) return k;
  }
  return buf.length;
}

interface Active {
  out: StepStream;
  err: StepStream;
  onOut: (stream: 'stdout' | 'stderr', b: Buffer) => void;
  onStart: (payload: string) => void;
  onEnd: () => void;
  /** Exit status from stdout's END. */
  outEnd?: string;
}

/** A command whose end is not known (its kill was not confirmed, or the link went): how to find it again. */
export interface Orphan {
  pgid: number;
  /** The command's subshell: pid and start time (clock ticks), so only it and what it started match. */
  pid: number;
  ticks: number;
  /** The command ran in place (no subshell): pid is the next pid, ticks the uptime in centiseconds. */
  centis?: boolean;
  /** The session shell and its parent (sudo): never killed. */
  keep: number[];
}

export class ShellSession {
  /** The command started last: its subshell and the session's group (see Orphan). */
  lastCommand?: Orphan;
  /** PGID:PID:PPID from READY. */
  private group?: { pgid: number; pid: number; ppid: number };
  /** READY said the shell is dash or bash: a command that qualifies runs in place (PreparedStep.inPlaceText). */
  private inPlace = false;
  private readyWaiters: Array<() => void> = [];
  private readonly filter: StderrMarkerFilter;
  private active?: Active;
  private looseOut: Buffer[] = [];
  private looseErr: Buffer[] = [];
  private dead?: { code: number | null; signal: string | null } | { error: unknown };
  /** Resolves when the shell ended (dead is set). */
  private readonly death: Promise<void>;
  private markDead!: () => void;
  private broken = false;

  constructor(
    private readonly io: SessionIO,
    private readonly launch: SessionLaunch,
    private readonly killGraceMs = 2000,
  ) {
    this.filter = new StderrMarkerFilter(launch, io.stdin);
    this.death = new Promise<void>((r) => {
      this.markDead = r;
    });
    io.stdin.on('error', () => {
      /* the shell went away; `exited` reports it */
    });
    io.stdout.on('data', (b: Buffer) => this.onData('stdout', b));
    io.stderr.on('data', (chunk: Buffer) => {
      const { out, events } = this.filter.push(chunk);
      for (const ev of events) {
        const [pgid, pid, ppid, kind] = ev.payload.split(':').map(Number);
        if (Number.isInteger(pgid) && pgid > 1 && Number.isInteger(pid) && Number.isInteger(ppid)) {
          this.group = { pgid, pid, ppid };
          this.inPlace = kind === 1;
        }
        for (const w of this.readyWaiters.splice(0)) w();
      }
      if (out.length) this.onData('stderr', out);
    });
    io.exited.then(
      (st) => this.die(st),
      (error) => this.die({ error }),
    );
    if (!launch.waitForReady) io.stdin.write(launch.init);
  }

  /** Can take another command. */
  get usable(): boolean {
    return !this.dead && !this.broken && !this.active;
  }

  private die(d: NonNullable<ShellSession['dead']>): void {
    if (this.dead) return;
    const held = this.filter.flush();
    if (held.length) this.onData('stderr', held);
    this.dead = d;
    for (const w of this.readyWaiters.splice(0)) w();
    this.markDead();
  }

  private onData(stream: 'stdout' | 'stderr', b: Buffer): void {
    const a = this.active;
    if (!a) {
      this.keepLoose(stream, b);
      return;
    }
    const r = (stream === 'stdout' ? a.out : a.err).push(b);
    if (r.dropped.length) this.keepLoose(stream, r.dropped);
    if (r.start !== undefined && stream === 'stderr') a.onStart(r.start);
    if (r.out.length) a.onOut(stream, r.out);
    if (r.end !== undefined && stream === 'stdout') a.outEnd = r.end;
    if (r.end !== undefined && a.out.done && a.err.done) a.onEnd();
  }

  private keepLoose(stream: 'stdout' | 'stderr', b: Buffer): void {
    const list = stream === 'stdout' ? this.looseOut : this.looseErr;
    list.push(b);
    let n = list.reduce((s, x) => s + x.length, 0);
    while (n > LOOSE_MAX && list.length > 1) n -= list.shift()!.length;
  }

  close(): void {
    this.broken = true;
    this.io.destroy();
  }

  /**
   * Runs one command. Resolves with its result (also when the shell ended: then with the shell's exit status);
   * rejects only when the connection is lost (the `exited` rejection).
   */
  async run(step: PreparedStep, opts: ExecOptions): Promise<ExecResult> {
    if (this.active) throw new Error('session busy');
    this.lastCommand = undefined;
    const started = Date.now();
    const out = new Capture();
    const err = new Capture();
    const decOut = new StringDecoder('utf8');
    const decErr = new StringDecoder('utf8');
    let sub: { pid: number; ticks: number; centis: boolean } | undefined;
    let killed: 'timeout' | 'abort' | undefined;
    let killing: Promise<void> | undefined;
    let ended!: () => void;
    const endP = new Promise<void>((r) => {
      ended = r;
    });
    let startedSub!: () => void;
    const startP = new Promise<void>((r) => {
      startedSub = r;
    });
    const deathP = this.death;
    this.active = {
      out: new StepStream(step.startMarker, step.endMarker),
      err: new StepStream(step.startMarker, step.endMarker),
      onOut: (stream, b) => {
        (stream === 'stdout' ? out : err).push(b);
        if (opts.onOutput) {
          const s = (stream === 'stdout' ? decOut : decErr).write(b);
          if (s) opts.onOutput(stream, s);
        }
      },
      onStart: (payload) => {
        const [p, t, c] = payload.split(':');
        const [pid, ticks, centis] = [Number(p), Number(t), c === 'c'];
        // In place, an empty reading of /proc (0) would widen the kill to the whole group: then it is not known.
        if (Number.isInteger(pid) && Number.isInteger(ticks) && (!centis || (pid > 1 && ticks > 0))) {
          sub = { pid, ticks, centis };
          const g = this.group;
          this.lastCommand = g ? { pgid: g.pgid, pid, ticks, ...(centis ? { centis } : {}), keep: [g.pid, g.ppid] } : undefined;
        }
        startedSub();
      },
      onEnd: () => ended(),
    };
    const a = this.active;
    // Set when the kill could not be confirmed: the command is left to the caller (an Orphan), not waited for.
    let unconfirmed = false;
    let giveUp!: () => void;
    const givenUp = new Promise<void>((r) => {
      giveUp = r;
    });
    const kill = (why: 'timeout' | 'abort'): void => {
      if (killed) return;
      killed = why;
      killing = this.killStep(
        () => (a.out.done && a.err.done) || !!this.dead,
        () => sub,
        startP,
        endP,
        deathP,
      ).then((over) => {
        if (over) return;
        unconfirmed = true;
        giveUp();
      });
    };
    let timer: NodeJS.Timeout | undefined;
    const onAbort = (): void => kill('abort');
    try {
      if (this.launch.waitForReady && !this.group && !this.dead) {
        await new Promise<void>((r) => this.readyWaiters.push(r));
      }
      if (!this.dead) {
        // The group is known (READY came) before a command runs in place: the kill needs it.
        this.io.stdin.write(this.inPlace && this.group && step.inPlaceText ? step.inPlaceText : step.text);
        if (opts.timeoutMs !== undefined && opts.timeoutMs > 0) timer = setTimeout(() => kill('timeout'), opts.timeoutMs);
        if (opts.signal) {
          if (opts.signal.aborted) queueMicrotask(onAbort);
          else opts.signal.addEventListener('abort', onAbort, { once: true });
        }
      }
      await Promise.race([endP, deathP, givenUp]);
      if (killing !== undefined) await killing;
    } finally {
      if (timer) clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      this.active = undefined;
    }
    const d = a.out.done && a.err.done ? undefined : this.dead;
    if (d && 'error' in d && !unconfirmed) throw d.error;
    let code: number | null;
    let signal: string | null = null;
    if (unconfirmed) {
      // The deadline passed and the command could not be shown dead: report that, never wait for it.
      code = null;
      signal = null;
    } else if (d && !('error' in d)) {
      // The shell ended before the command's END: its exit status is the command's (as for a shell of its own).
      for (const [s, list] of [
        [a.out, out],
        [a.err, err],
      ] as const) {
        const rest = s.flush();
        if (rest.length) list.push(rest);
      }
      if (!a.out.started) out.unshift(this.looseOut.splice(0));
      if (!a.err.started) err.unshift(this.looseErr.splice(0));
      code = d.code;
      signal = normalizeSignal(d.signal);
    } else {
      const rc = Number(a.outEnd);
      code = Number.isInteger(rc) ? rc : null;
    }
    if (this.filter.rejected) err.push(Buffer.from(BECOME_REJECTED));
    if (killed && !unconfirmed) {
      // Killed by us: report the signal, as for a process that died of it.
      if (code !== null && code > 128 && SIGNAL_NAMES.has(code - 128)) signal = SIGNAL_NAMES.get(code - 128)!;
      signal ??= 'SIGKILL';
      code = null;
    }
    return {
      code,
      signal,
      stdout: out.text(),
      stderr: err.text(),
      timedOut: killed === 'timeout',
      durationMs: Date.now() - started,
      ...(unconfirmed ? { killUnconfirmed: true } : {}),
      ...truncation(out, err),
    };
  }

  /**
   * TERM/KILL the running command through a second channel; if that cannot be done, end the whole session.
   * Bounded in time whatever the host does (no channel for the kill: MaxSessions; a kill that hangs): true
   * when the command is known to be over, false when it may still run (the caller reports, never waits).
   */
  private async killStep(
    isOver: () => boolean,
    sub: () => { pid: number; ticks: number; centis: boolean } | undefined,
    startP: Promise<void>,
    endP: Promise<void>,
    deathP: Promise<void>,
  ): Promise<boolean> {
    const grace = this.killGraceMs;
    // Unref'd waits: a deadline that lost its race must not keep the process alive after the run.
    const wait = (ms: number) => sleep(ms, undefined, { ref: false });
    const over = (ms: number) => Promise.race([endP.then(() => true), deathP.then(() => true), wait(ms).then(() => false)]);
    // Killed right after it was sent: its subshell reports itself within a round trip.
    await Promise.race([startP, endP, deathP, wait(2000)]);
    if (isOver()) return true; // it ended meanwhile: nothing to kill
    const s = sub();
    const g = this.group;
    if (s && g) {
      const aside = this.io
        .runAside(sessionKillScript(g.pgid, s.pid, s.ticks, [g.pid, g.ppid], grace, s.centis), grace + 5000)
        .catch(() => {
          /* no channel, or connection trouble: handled below */
        });
      await Promise.race([aside, wait(grace + 2000)]);
      if (await over(1000)) return true;
    }
    // The command had not started yet, the group is unknown, or it did not end: the session goes.
    this.close();
    return over(2000);
  }
}

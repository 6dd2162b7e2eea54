/**
 * Drives one script run over a process-like IO (a local child process or an SSH channel), following the
 * protocol of prepareRun() in shell.ts: write the wrapper (after READY when become), answer one sudo prompt,
 * strip markers from stderr, kill the process group on timeout/abort, collect exact output.
 */
import { StringDecoder } from 'node:string_decoder';
import type { Readable, Writable } from 'node:stream';
import { Capture, truncation } from './capture.js';
import { BECOME_REJECTED, StderrMarkerFilter, type PreparedRun } from './shell.js';
import type { ExecOptions, ExecResult } from './types.js';

export interface RunIO {
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  /** Resolves once the process ended and its output streams are drained. */
  exited: Promise<{ code: number | null; signal: string | null }>;
  /** TERM the process group (pgid from READY, undefined if not reported yet), KILL after a grace period. */
  killGroup(pgid: number | undefined): Promise<void>;
}

export function normalizeSignal(sig: string | null | undefined): string | null {
  if (!sig) return null;
  return sig.startsWith('SIG') ? sig : `SIG${sig}`;
}

export function driveRun(io: RunIO, prep: PreparedRun, opts: ExecOptions): Promise<ExecResult> {
  const started = Date.now();
  const out = new Capture();
  const err = new Capture();
  const filter = new StderrMarkerFilter(prep, io.stdin);
  const decOut = new StringDecoder('utf8');
  const decErr = new StringDecoder('utf8');
  let pgid: number | undefined;
  let killed: 'timeout' | 'abort' | undefined;
  let killing: Promise<void> | undefined;

  io.stdin.on('error', () => {
    /* EPIPE when the command does not read its stdin: fine */
  });
  const emit = (stream: 'stdout' | 'stderr', b: Buffer, dec: StringDecoder): void => {
    if (!opts.onOutput || b.length === 0) return;
    const s = dec.write(b);
    if (s) opts.onOutput(stream, s);
  };
  io.stdout.on('data', (b: Buffer) => {
    out.push(b);
    emit('stdout', b, decOut);
  });
  io.stderr.on('data', (chunk: Buffer) => {
    const { out: b, events } = filter.push(chunk);
    if (b.length) {
      err.push(b);
      emit('stderr', b, decErr);
    }
    for (const ev of events) {
      pgid = Number.isInteger(ev.pgid) && ev.pgid > 1 ? ev.pgid : undefined;
      if (prep.waitForReady) io.stdin.end(prep.wrapper);
    }
  });
  if (!prep.waitForReady) io.stdin.end(prep.wrapper);

  const kill = (why: 'timeout' | 'abort'): void => {
    if (killed) return;
    killed = why;
    killing = io.killGroup(pgid).catch(() => {
      /* the exit/loss path reports */
    });
  };
  const timer = opts.timeoutMs !== undefined && opts.timeoutMs > 0 ? setTimeout(() => kill('timeout'), opts.timeoutMs) : undefined;
  const onAbort = (): void => kill('abort');
  if (opts.signal) {
    if (opts.signal.aborted) queueMicrotask(onAbort);
    else opts.signal.addEventListener('abort', onAbort, { once: true });
  }

  return io.exited.then(
    async ({ code, signal }) => {
      if (timer) clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      if (killing !== undefined) await killing;
      const rest = filter.flush();
      if (rest.length) {
        err.push(rest);
        emit('stderr', rest, decErr);
      }
      if (filter.rejected) err.push(Buffer.from(BECOME_REJECTED));
      const sig = normalizeSignal(signal);
      return {
        code: killed ? null : code,
        signal: killed ? (sig ?? 'SIGKILL') : sig,
        stdout: out.text(),
        stderr: err.text(),
        ...truncation(out, err),
        timedOut: killed === 'timeout',
        durationMs: Date.now() - started,
      };
    },
    (e) => {
      if (timer) clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      throw e;
    },
  );
}

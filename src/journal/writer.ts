/**
 * The write-ahead run journal: one append-only NDJSON file per run,
 * `<stateDir>/runs/<runId>.ndjson` (file 0600, directories 0700).
 *
 * write() only appends to an in-memory buffer. sync() makes every record written so far
 * durable: one write(2) of the whole buffer plus one fdatasync(2) (group commit). Callers
 * that arrive while a flush is in progress wait for it and then share the next one, so N
 * concurrent sync() calls cost far fewer than N fsyncs. The engine writes an intent
 * (step-start / rollback-start / host-start) and awaits sync() before the remote action.
 *
 * Once an I/O error happened (ENOSPC, EACCES, EIO, ...) every sync() rejects with
 * RunbookError E_JOURNAL: the run must stop changing hosts.
 */
import { promises as fsp, constants as fsc, writeSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { homedir, hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { RunbookError } from '../core/errors.js';
import type { JournalSink } from '../engine/events.js';
import { JOURNAL_VERSION } from './records.js';

export interface JournalStats {
  /** Records passed to write(). */
  records: number;
  /** sync() calls. */
  syncs: number;
  /** write(2) calls that carried data (one per group commit). */
  writes: number;
  /** fdatasync(2) calls. */
  fsyncs: number;
  /** Bytes appended by this writer. */
  bytes: number;
}

export interface JournalWriter extends JournalSink {
  readonly path: string;
  readonly runId: string;
  readonly stats: JournalStats;
  /** Flushes (and fsyncs, if enabled) what is buffered, then closes the file. Idempotent. */
  close(): Promise<void>;
}

export interface OpenJournalOptions {
  /** fsync on every sync() (default true). false: write(2) only (benchmark comparison, not crash-safe). */
  fsync: boolean;
  /** Test hook: called before every fdatasync. */
  onFsync?: () => void;
  /**
   * Do not append the `journal-open` record (controller, pid) at open. Default false: every
   * process that opens a journal (apply, resume, rollback, unlock) says so first.
   */
  noOpenRecord?: boolean;
}

/** Where journals live: RUNBOOK_STATE_DIR, else $XDG_STATE_HOME/runbook, else ~/.local/state/runbook. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.RUNBOOK_STATE_DIR) return env.RUNBOOK_STATE_DIR;
  if (env.XDG_STATE_HOME) return join(env.XDG_STATE_HOME, 'runbook');
  return join(env.HOME || homedir(), '.local', 'state', 'runbook');
}

/** The state dir a command uses: --state-dir, else defaultStateDir(). */
export function resolveStateDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return resolve(flag && flag.length > 0 ? flag : defaultStateDir(env));
}

export function journalPath(stateDir: string, runId: string): string {
  return join(stateDir, 'runs', `${runId}.ndjson`);
}

const RUN_ID_RE = /^\d{8}T\d{6}Z-[0-9a-f]{6}$/;

/** Sortable, unique run id: UTC time to the second plus 24 random bits (unique within a process), e.g. `20261126T195012Z-ab12cd`. */
export function newRunId(now: Date = new Date()): string {
  const iso = now.toISOString(); // 2026-11-26T19:50:12.345Z
  const stamp = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}T${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  if (stamp !== issuedStamp) {
    issuedStamp = stamp;
    issued.clear();
  }
  for (;;) {
    const id = `${stamp}-${randomBytes(3).toString('hex')}`;
    if (!issued.has(id)) {
      issued.add(id);
      return id;
    }
  }
}
// Ids issued by this process in the current second: never the same one twice. Two controllers
// starting a run in the same second collide with probability 2^-24.
let issuedStamp = '';
const issued = new Set<string>();

/** True if the string has the shape of a run id (a file name under runs/ cannot escape the dir). */
export function isRunId(s: string): boolean {
  return RUN_ID_RE.test(s);
}

/** Checks a user-given run id; throws E_RUN_ID with the expected shape. */
export function checkRunId(s: unknown): string {
  if (typeof s !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(s)) {
    throw new RunbookError('E_RUN_ID', `"${String(s)}" is not a run id; run ids look like 20261126T195012Z-ab12cd (see \`runbook runs\`).`);
  }
  return s;
}

function ioReason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e?.code) {
    const why: Record<string, string> = {
      ENOSPC: 'no space left on device',
      EDQUOT: 'disk quota exceeded',
      EACCES: 'permission denied',
      EPERM: 'operation not permitted',
      EROFS: 'read-only file system',
      EIO: 'input/output error',
      ENOENT: 'no such file or directory',
      ENOTDIR: 'a parent is not a directory',
      EISDIR: 'is a directory',
    };
    return `${why[e.code] ?? e.message} (${e.code})`;
  }
  return String((err as Error)?.message ?? err);
}

function journalError(path: string, err: unknown): RunbookError {
  return new RunbookError('E_JOURNAL', `cannot write the run journal ${path}: ${ioReason(err)}; the run stops changing hosts`, {
    cause: err,
  });
}

class Writer implements JournalWriter {
  readonly stats: JournalStats = { records: 0, syncs: 0, writes: 0, fsyncs: 0, bytes: 0 };
  private buf: string[] = [];
  /** Number of records handed to write() so far / made durable so far. */
  private durable = 0;
  private inflight: Promise<void> | null = null;
  private failed: RunbookError | null = null;
  private closed = false;

  constructor(
    readonly path: string,
    readonly runId: string,
    private fh: FileHandle,
    private readonly opts: OpenJournalOptions,
  ) {}

  write(rec: Record<string, unknown>): void {
    if (this.closed) throw new RunbookError('E_JOURNAL', `the run journal ${this.path} is closed; this is a bug`);
    let line: string;
    try {
      line = JSON.stringify(rec);
    } catch (err) {
      throw new RunbookError('E_JOURNAL', `cannot encode a journal record (${(err as Error).message}); this is a bug`);
    }
    this.buf.push(`${line}\n`);
    this.stats.records++;
  }

  async sync(): Promise<void> {
    this.stats.syncs++;
    const target = this.stats.records;
    for (;;) {
      if (this.failed) throw this.failed;
      if (this.durable >= target) return;
      if (this.inflight !== null) {
        // A flush is running; it may not carry our records (they arrived after it took the
        // buffer). Wait, then re-check: the first waiter to wake starts the next flush and the
        // others join it.
        await this.inflight.catch(() => {});
        continue;
      }
      this.inflight = this.flush().finally(() => {
        this.inflight = null;
      });
      await this.inflight.catch(() => {});
    }
  }

  private async flush(): Promise<void> {
    const upto = this.stats.records;
    const chunk = this.buf.join('');
    this.buf = [];
    try {
      if (chunk.length > 0) {
        const data = Buffer.from(chunk, 'utf8');
        let off = 0;
        while (off < data.length) {
          // A write(2) into the page cache takes microseconds: doing it inline saves a thread-pool
          // round trip per group commit; only the fdatasync below goes to the pool.
          const bytesWritten = writeSync(this.fh.fd, data, off, data.length - off);
          if (bytesWritten <= 0) throw Object.assign(new Error('short write'), { code: 'EIO' });
          off += bytesWritten;
        }
        this.stats.writes++;
        this.stats.bytes += data.length;
      }
      if (this.opts.fsync) {
        this.opts.onFsync?.();
        await this.fh.datasync();
        this.stats.fsyncs++;
      }
      this.durable = upto;
    } catch (err) {
      this.failed = journalError(this.path, err);
      throw this.failed;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (!this.failed) {
        // The last record says how the journal was written (group commit effect, for benchmarks);
        // its counts are those before its own, final, commit.
        if (!this.opts.noOpenRecord) {
          this.write({
            type: 'journal-close',
            time: new Date().toISOString(),
            pid: process.pid,
            stats: { ...this.stats, records: this.stats.records + 1 },
          });
        }
        await this.sync();
      }
    } finally {
      this.closed = true;
      await this.fh.close().catch(() => {});
    }
  }
}

/**
 * If a previous process died mid-write, the file ends in a torn line (no newline, or not
 * JSON). Cut it off before appending, so it does not become a malformed line in the middle.
 */
async function cutTornTail(fh: FileHandle): Promise<number> {
  const { size } = await fh.stat();
  if (size === 0) return 0;
  const tailLen = Math.min(size, 1 << 20);
  const tail = Buffer.alloc(tailLen);
  await fh.read(tail, 0, tailLen, size - tailLen);
  let end = tailLen; // exclusive end of the complete part, inside `tail`
  if (tail[tailLen - 1] !== 0x0a) {
    const nl = tail.lastIndexOf(0x0a);
    end = nl + 1; // 0 when no newline in the tail window
  } else {
    // Ends with a newline: tolerate (and drop) a last complete line that is not JSON
    // (e.g. zeros after a power loss).
    const prevNl = tail.lastIndexOf(0x0a, tailLen - 2);
    const last = tail.subarray(prevNl + 1, tailLen - 1).toString('utf8');
    try {
      JSON.parse(last);
    } catch {
      end = prevNl + 1;
    }
  }
  if (end === tailLen) return 0;
  if (end === 0 && size > tailLen) {
    throw new RunbookError('E_JOURNAL_CORRUPT', 'the journal ends in more than 1 MiB without a line break; it is not a runbook journal');
  }
  const newSize = size - tailLen + end;
  await fh.truncate(newSize);
  return size - newSize;
}

/**
 * Opens (creating if needed) the journal of a run for appending. A journal that already
 * exists (resume, rollback, unlock) is appended to; a torn last line is cut off first.
 */
export async function openJournal(stateDir: string, runId: string, opts: OpenJournalOptions = { fsync: true }): Promise<JournalWriter> {
  stateDir = resolve(stateDir);
  const path = journalPath(stateDir, runId);
  let fh: FileHandle;
  let cut = 0;
  try {
    await fsp.mkdir(stateDir, { recursive: true, mode: 0o700 });
    const runs = join(stateDir, 'runs');
    await fsp.mkdir(runs, { recursive: true, mode: 0o700 });
    fh = await fsp.open(path, fsc.O_RDWR | fsc.O_CREAT | fsc.O_APPEND, 0o600);
  } catch (err) {
    throw new RunbookError(
      'E_JOURNAL_OPEN',
      `cannot open the run journal ${path}: ${ioReason(err)}; nothing was changed. Fix the state directory (--state-dir or RUNBOOK_STATE_DIR) and retry`,
      { cause: err },
    );
  }
  try {
    cut = await cutTornTail(fh);
  } catch (err) {
    await fh.close().catch(() => {});
    if (err instanceof RunbookError) throw new RunbookError(err.code, `${path}: ${err.message}`);
    throw new RunbookError('E_JOURNAL_OPEN', `cannot open the run journal ${path}: ${ioReason(err)}; nothing was changed`, { cause: err });
  }
  const w = new Writer(path, runId, fh, opts);
  if (!opts.noOpenRecord) {
    w.write({
      type: 'journal-open',
      time: new Date().toISOString(),
      v: JOURNAL_VERSION,
      run_id: runId,
      controller: hostname(),
      pid: process.pid,
      fsync: opts.fsync,
      ...(cut > 0 ? { torn_bytes_dropped: cut } : {}),
    });
  }
  return w;
}

/**
 * The one interface every transport implements (local on zx, ssh on ssh2).
 * The engine only knows this file; it never imports ssh2 or zx.
 */
import { CodedError } from '../core/errors.js';
import type { OpenStream } from './stream.js';

export type { OpenStream } from './stream.js';

export interface ExecOptions {
  /** Kill the command (its whole process group, on the host) after this long. */
  timeoutMs?: number;
  /**
   * The caller vouches that the script leaves the shell as it was (no exit, no lasting variable, option, trap or
   * cwd): a shell session may run it in place, without the isolation subshell (the engine's own lock scripts).
   */
  leavesShell?: boolean;
  env?: Record<string, string>;
  stdin?: string | Buffer;
  /** Run through sudo (become_user, password over stdin when set). */
  become?: boolean;
  becomeUser?: string;
  /** Called with output as it arrives (for --verbose). */
  onOutput?: (stream: 'stdout' | 'stderr', chunk: string) => void;
  /** Abort = kill the command like a timeout. */
  signal?: AbortSignal;
  /**
   * Write-ahead gate (honoured by transports with `gates: true`): the transport gets the command ready
   * (connects, opens the channel / starts the shell, which only waits on its stdin) while this settles, and
   * sends the script only once it resolved, so nothing runs on the host before then. If it rejects, the
   * command never starts (channel closed / shell killed) and exec rejects with the gate's error, unchanged.
   * The timeout counts from the moment the script is sent.
   */
  gate?: Promise<void>;
}

export interface SocketOptions {
  become?: boolean;
  becomeUser?: string;
  /** How long connecting may take (default 15 s). */
  timeoutMs?: number;
}

export interface ExecResult {
  /** Exit code, or null if killed by a signal / timed out. */
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  durationMs: number;
  /**
   * The deadline (timeout) or abort passed and the kill could not be confirmed (no channel for it, or the
   * command outlived it): the command may still run. The transport keeps it as an orphan (settleOrphans).
   */
  killUnconfirmed?: true;
  /** Bytes printed on each stream, when more than stdout/stderr keep (capture.ts: head + tail). */
  truncated?: { stdout?: number; stderr?: number };
}

/**
 * Thrown by a transport when the host cannot be reached or the connection is lost.
 * codes: E_UNREACHABLE (never connected), E_CONN_LOST (lost mid-command: effect unknown),
 * E_HOSTKEY_UNKNOWN, E_HOSTKEY_CHANGED, E_HOSTKEY_REVOKED, E_AUTH, E_CHANNEL, E_FILE, E_INVALID.
 * Not a RunbookError: the engine tells a host's connection problems apart from everything else.
 */
export class TransportError extends CodedError {
  readonly host: string;
  constructor(code: string, host: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.host = host;
    this.name = 'TransportError';
  }
}

export interface Transport {
  /** Inventory name of the host. */
  readonly host: string;
  /** Open the connection (idempotent). Throws TransportError. */
  connect(): Promise<void>;
  /**
   * Run a shell script (POSIX sh). The script travels over stdin or a file, never in argv,
   * so secrets rendered into it never show in `ps`. Resolves with the result even on
   * non-zero exit or timeout; rejects only with TransportError (connection problems), or with the
   * error of a rejected opts.gate.
   */
  exec(script: string, opts?: ExecOptions): Promise<ExecResult>;
  put(content: string | Buffer, remotePath: string, opts?: { mode?: number }): Promise<void>;
  /**
   * A byte stream to the unix socket `path` on the host (as the become user with become), over the connection
   * (stream.ts). Rejects with TransportError (E_SOCKET when the host cannot reach the socket, with why).
   */
  openSocket?(path: string, opts?: SocketOptions): Promise<OpenStream>;
  get(remotePath: string): Promise<Buffer>;
  /**
   * Makes sure no command whose end is unknown (a lost connection, an unconfirmed kill) still runs on the
   * host: kills each through the current connection and checks it is gone. ok false: one may still run
   * (detail says why). Transports without such commands need not implement it.
   */
  settleOrphans?(): Promise<{ ok: boolean; detail?: string }>;
  /** Drop the connection and connect again (after E_CONN_LOST), bounded retries with backoff. */
  reconnect(): Promise<void>;
  close(): Promise<void>;
  /** Warnings from connecting (e.g. host key checking off) the engine should surface. */
  readonly warnings?: string[];
  /** true: exec honours ExecOptions.gate. A caller must await its gate itself before exec on other transports. */
  readonly gates?: boolean;
}

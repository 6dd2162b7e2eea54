import { randomBytes } from 'node:crypto';

/**
 * The one place where values become shell text. Everything that puts data into a command
 * (templating, sudo wrapping, transports) goes through here.
 */

/** Single-quotes a value for POSIX sh: the result is always exactly one word, never code. */
export function shQuote(value: string): string {
  if (value === '') return "''";
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(value)) return value;
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** Escapes a value for the inside of a double-quoted sh string ("...here..."). */
export function shEscapeDouble(value: string): string {
  return value.replace(/[\\"$`]/g, (c) => `\\${c}`);
}

/** Escapes a value for the inside of a single-quoted sh string ('...here...'). */
export function shEscapeSingle(value: string): string {
  return value.replace(/'/g, `'\\''`);
}

// ---------------------------------------------------------------------------------------------
// How a transport runs a script (shared by the local and the ssh transport).
//
// The process is started with a fixed, secret-free command line (only random markers appear in argv / `ps`).
// Without a sudo password (no become, or `sudo -n`, which fails cleanly if sudo wants one):
//     exec [sudo -H -n -u USER --] sh -s
// and the WRAPPER is written to its stdin at once; the WRAPPER's first line prints the READY marker with the
// process group id (from /proc/$$/stat) on stderr. One shell process per command, no round trip before the
// script is sent. With a sudo password, sudo reads the password from the same stdin, so the script must wait:
//     exec sudo -H -S -p PROMPT -u USER -- sh -c 'INIT'
// INIT prints READY, then `exec sh -s`. The transport waits; if sudo prints PROMPT on stderr, it writes the
// password and a newline (once; a second prompt means a wrong password: stdin is closed and sudo fails); when
// READY appears it writes the WRAPPER.
// The WRAPPER holds the user's script in a single-quoted variable, exports the env, and evals the script with
// its stdin = opts.stdin (base64-decoded through a pipe; binary-safe) or /dev/null. So: the script and its env
// travel over stdin only, never argv; opts.stdin reaches the script as its stdin, after the wrapper; nothing is
// written to disk on the host. The markers are removed from stderr (StderrMarkerFilter).

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export interface ScriptRunSpec {
  script: string;
  env?: Record<string, string>;
  stdin?: string | Buffer;
  become?: boolean;
  /** default root */
  becomeUser?: string;
  /** sudo password; sent over stdin only if sudo prompts. */
  becomePassword?: string;
}

export interface PreparedRun {
  /** Command line for `sh -c` / an SSH exec request. Contains no secret and no user data. */
  command: string;
  /** Text to write to the process's stdin (after READY when waitForReady). */
  wrapper: string;
  /** true: write `wrapper` only after the READY marker (become with a sudo password); false: write it immediately. */
  waitForReady: boolean;
  readyMarker: string;
  promptMarker?: string;
  becomePassword?: string;
  /** The kill script for the process group reported in READY (run on a second channel / process). */
  killScript(pgid: number, graceMs?: number): string;
}

function randomToken(): string {
  return randomBytes(9).toString('hex');
}

/** Throws Error when an env name is not a valid shell variable name (caller maps it to its own error). */
export function prepareRun(spec: ScriptRunSpec): PreparedRun {
  const tok = randomToken();
  const readyMarker = `<<rb-ready-${tok}:`;
  const promptMarker = spec.become && spec.becomePassword !== undefined ? `<<rb-sudo-${tok}>>` : undefined;
  // Parse pgrp (field 5 of /proc/$$/stat) in POSIX sh and report it (positional parameters cleared again).
  const report = `read -r rb_s </proc/$$/stat; rb_s=\${rb_s##*) }; set -- $rb_s; printf '%s%s>>\\n' '${readyMarker}' "$3" >&2; set --; unset rb_s`;
  const waitForReady = promptMarker !== undefined;
  const user = spec.becomeUser || 'root';
  let command: string;
  if (waitForReady) command = `exec sudo -H -S -p ${shQuote(promptMarker)} -u ${shQuote(user)} -- sh -c ${shQuote(`${report}; exec sh -s`)}`;
  else if (spec.become) command = `exec sudo -H -n -u ${shQuote(user)} -- sh -s`;
  else command = 'exec sh -s';
  const lines: string[] = waitForReady ? [] : [report];
  for (const [k, v] of Object.entries(spec.env ?? {})) {
    if (!ENV_NAME.test(k)) throw new Error(`invalid environment variable name ${JSON.stringify(k)}`);
    lines.push(`export ${k}=${shQuote(v)}`);
  }
  lines.push(`rb_script=${shQuote(spec.script)}`);
  if (spec.stdin !== undefined && Buffer.byteLength(spec.stdin) > 0) {
    const b64 = Buffer.from(spec.stdin).toString('base64');
    lines.push(`printf '%s' '${b64}' | base64 -d | { eval "$rb_script"; }`);
  } else {
    lines.push(`eval "$rb_script" </dev/null`);
  }
  const wrapper = `${lines.join('\n')}\n`;
  return {
    command,
    wrapper,
    waitForReady,
    readyMarker,
    promptMarker,
    becomePassword: promptMarker ? spec.becomePassword : undefined,
    killScript(pgid: number, graceMs = 2000): string {
      if (!Number.isInteger(pgid) || pgid <= 1) throw new Error(`bad process group ${pgid}`);
      const rounds = Math.max(1, Math.ceil(graceMs / 100));
      // `kill -SIG -PGID` (no `--`: dash's kill rejects it)
      return `kill -TERM -${pgid} 2>/dev/null || exit 0\ni=0\nwhile kill -0 -${pgid} 2>/dev/null && [ $i -lt ${rounds} ]; do sleep 0.1; i=$((i+1)); done\nkill -KILL -${pgid} 2>/dev/null\nexit 0\n`;
    },
  };
}

export type MarkerEvent = { type: 'prompt' } | { type: 'ready'; pgid: number };

/**
 * Removes the prompt and READY markers from a stderr byte stream and reports them. Everything before READY is
 * buffered only as long as it could be the start of a marker; after READY, chunks pass through unchanged.
 */
export class StderrMarkerFilter {
  private pending = Buffer.alloc(0);
  private ready = false;
  constructor(private readonly run: Pick<PreparedRun, 'readyMarker' | 'promptMarker'>) {}

  push(chunk: Buffer): { out: Buffer; events: MarkerEvent[] } {
    if (this.ready) return { out: chunk, events: [] };
    let buf = Buffer.concat([this.pending, chunk]);
    const events: MarkerEvent[] = [];
    const outParts: Buffer[] = [];
    for (;;) {
      const r = buf.indexOf(this.run.readyMarker);
      const p = this.run.promptMarker ? buf.indexOf(this.run.promptMarker) : -1;
      if (p >= 0 && (r < 0 || p < r)) {
        outParts.push(buf.subarray(0, p));
        buf = buf.subarray(p + this.run.promptMarker!.length);
        events.push({ type: 'prompt' });
        continue;
      }
      if (r >= 0) {
        const end = buf.indexOf('>>\n', r + this.run.readyMarker.length);
        if (end < 0) break; // wait for the rest of the marker line
        const pgid = Number(buf.subarray(r + this.run.readyMarker.length, end).toString());
        outParts.push(buf.subarray(0, r));
        outParts.push(buf.subarray(end + 3));
        buf = Buffer.alloc(0);
        this.ready = true;
        events.push({ type: 'ready', pgid });
        break;
      }
      // keep a tail that could be the beginning of a marker
      const keep = Math.max(this.run.readyMarker.length, this.run.promptMarker?.length ?? 0) + 24;
      if (buf.length > keep) {
        outParts.push(buf.subarray(0, buf.length - keep));
        buf = buf.subarray(buf.length - keep);
      }
      break;
    }
    this.pending = this.ready ? Buffer.alloc(0) : Buffer.from(buf);
    return { out: Buffer.concat(outParts), events };
  }

  /** At end of stream: whatever is still held back. */
  flush(): Buffer {
    const b = this.pending;
    this.pending = Buffer.alloc(0);
    return b;
  }
}

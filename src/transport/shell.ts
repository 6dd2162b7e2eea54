import { randomBytes } from 'node:crypto';
import { runsInPlace } from './in-place.js';

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
  /**
   * The script reads the rest of the process's stdin, after the wrapper (a byte stream: openStream). The caller
   * writes nothing more until the script says it is ready, so the shell cannot have read any of it.
   */
  keepStdin?: boolean;
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
}

/** Random bytes drawn 4 KiB at a time: a call into the CSPRNG per marker token was a measurable part of a step. */
let pool = Buffer.alloc(0);
let poolAt = 0;

function randomToken(): string {
  if (poolAt + 9 > pool.length) {
    pool = randomBytes(4096);
    poolAt = 0;
  }
  poolAt += 9;
  return pool.toString('hex', poolAt - 9, poolAt);
}

interface Launch {
  command: string;
  /** The READY report line (to write first when !waitForReady; inside the command when waitForReady). */
  report: string;
  waitForReady: boolean;
  readyMarker: string;
  promptMarker?: string;
}

/**
 * The fixed command line that starts `sh -s` (through sudo for become) and the READY report. `pids`: the report
 * carries PGID:PID:PPID of the shell (sessions), else only the PGID.
 */
function launch(spec: Pick<ScriptRunSpec, 'become' | 'becomeUser' | 'becomePassword'>, pids: boolean): Launch {
  const tok = randomToken();
  const readyMarker = `<<rb-ready-${tok}:`;
  const promptMarker = spec.become && spec.becomePassword !== undefined ? `<<rb-sudo-${tok}>>` : undefined;
  // Parse pgrp (field 5 of /proc/$$/stat; ppid is field 4) in POSIX sh and report it (positional parameters cleared again).
  // Sessions also say whether the shell is dash or bash (the first line of its maps is its executable): only then
  // may a command run in place (in-place.ts).
  const what = pids ? `"$3:$$:$2:$rb_k"` : '"$3"';
  const kind = pids ? `rb_k=0; read -r rb_m 2>/dev/null </proc/$$/maps && case $rb_m in */dash|*/bash) rb_k=1;; esac; ` : '';
  const report = `${kind}read -r rb_s </proc/$$/stat; rb_s=\${rb_s##*) }; set -- $rb_s; printf '%s%s>>\\n' '${readyMarker}' ${what} >&2; set --; unset rb_s${pids ? ' rb_k rb_m' : ''}`;
  const waitForReady = promptMarker !== undefined;
  const user = shQuote(spec.becomeUser || 'root');
  // Become the user one already is (a root login, often on hosts without sudo): no sudo at all.
  // Another user without sudo on the host: one line that says so and what to do, before anything runs.
  const noSudo = `printf 'runbook: logged in as %s, becoming %s needs sudo, which is not installed on this host: install sudo, or log in as %s (ansible_user)\\n' "$(id -un)" ${user} ${user} >&2; exit 127`;
  const unlessAlready = (direct: string, sudo: string) =>
    `if [ "$(id -un)" = ${user} ]; then ${direct}; elif command -v sudo >/dev/null 2>&1; then ${sudo}; else ${noSudo}; fi`;
  let command: string;
  if (waitForReady) {
    const inner = shQuote(`${report}; exec sh -s`);
    command = unlessAlready(`exec sh -c ${inner}`, `exec sudo -H -S -p ${shQuote(promptMarker)} -u ${user} -- sh -c ${inner}`);
  } else if (spec.become) command = unlessAlready('exec sh -s', `exec sudo -H -n -u ${user} -- sh -s`);
  else command = 'exec sh -s';
  return { command, report, waitForReady, readyMarker, promptMarker };
}

function exportLines(env: Record<string, string> | undefined): string[] {
  const lines: string[] = [];
  for (const [k, v] of Object.entries(env ?? {})) {
    if (!ENV_NAME.test(k)) throw new Error(`invalid environment variable name ${JSON.stringify(k)}`);
    lines.push(`export ${k}=${shQuote(v)}`);
  }
  return lines;
}

/** `printf B64 | base64 -d | `: feeds opts.stdin (binary-safe) to the command that follows; undefined without stdin. */
function stdinFeed(stdin: string | Buffer | undefined): string | undefined {
  if (stdin === undefined || Buffer.byteLength(stdin) === 0) return undefined;
  return `printf '%s' '${Buffer.from(stdin).toString('base64')}' | base64 -d | `;
}

/** Throws Error when an env name is not a valid shell variable name (caller maps it to its own error). */
export function prepareRun(spec: ScriptRunSpec): PreparedRun {
  const l = launch(spec, false);
  const lines: string[] = l.waitForReady ? [] : [l.report];
  lines.push(...exportLines(spec.env));
  lines.push(`rb_script=${shQuote(spec.script)}`);
  const feed = stdinFeed(spec.stdin);
  lines.push(feed ? `${feed}{ eval "$rb_script"; }` : spec.keepStdin ? 'eval "$rb_script"' : `eval "$rb_script" </dev/null`);
  const wrapper = `${lines.join('\n')}\n`;
  return {
    command: l.command,
    wrapper,
    waitForReady: l.waitForReady,
    readyMarker: l.readyMarker,
    promptMarker: l.promptMarker,
    becomePassword: l.promptMarker ? spec.becomePassword : undefined,
  };
}

// ---------------------------------------------------------------------------------------------
// Shell sessions (the SSH transport): one long-lived `sh -s` per host (and become user) runs the commands one
// after another, so a command costs no new SSH channel and no new login shell on the host.
//
// The session starts like a run above (same command line, same sudo password handling), but its stdin stays
// open: after READY (PGID:PID:PPID of the session shell) it reads one STEP text per command:
//     rb_script='<script>'
//     ( <report START (pid + start time of this subshell) on stderr, START on stdout>; export K=V...;
//       eval "$rb_script" ) </dev/null            (or: printf B64 | base64 -d | ( ... ) for opts.stdin)
//     rb_rc=$?; unset rb_script; <END:rc on stderr>; <END:rc on stdout>
// The command runs in a subshell: `exit`, `cd`, `set`, traps, redirections and variables end with it, so the
// session shell stays as it was. Output between START and END on each stream is the command's (markers carry a
// fresh random token per command and are removed). The script and env travel over stdin only, never argv.
// Timeout / abort: the kill script (sessionKillScript, on a second channel) TERMs, then KILLs, every process of
// the session's process group created since the command's subshell (so the command, its children and
// anything it double-forked), never the session shell (or sudo) itself; processes that called setsid(2) have
// left the group and are out of reach, exactly as with a process group of their own.

export interface SessionLaunch {
  /** Command line of the session (exec request / sh -c); contains no secret and no user data. */
  command: string;
  /** Written at once when !waitForReady (the READY report), else nothing. */
  init: string;
  waitForReady: boolean;
  readyMarker: string;
  promptMarker?: string;
  becomePassword?: string;
}

export function prepareSession(spec: Pick<ScriptRunSpec, 'become' | 'becomeUser' | 'becomePassword'>): SessionLaunch {
  const l = launch(spec, true);
  return {
    command: l.command,
    init: l.waitForReady ? '' : `${l.report}\n`,
    waitForReady: l.waitForReady,
    readyMarker: l.readyMarker,
    promptMarker: l.promptMarker,
    becomePassword: l.promptMarker ? spec.becomePassword : undefined,
  };
}

export interface PreparedStep {
  /** Text for the session shell's stdin. */
  text: string;
  /** `<<rb-s-TOKEN:`: START is this + payload + `>>\n` (stderr payload PID:STARTTIME, stdout payload empty). */
  startMarker: string;
  /** `<<rb-e-TOKEN:`: END is this + exit status + `>>\n` on both streams. */
  endMarker: string;
  /**
   * The same command run in place (in-place.ts), for a session whose shell allows it; undefined when the script
   * does not qualify (nor did the caller vouch for it: leavesShell), or has env or stdin. Its START payload is
   * LASTPID+1:UPTIME_CENTISECONDS:c (no subshell: the kill script ends what the session's group started since then).
   */
  inPlaceText?: string;
}

/** Throws Error when an env name is not a valid shell variable name (caller maps it to its own error). */
export function prepareStep(spec: Pick<ScriptRunSpec, 'script' | 'env' | 'stdin'>, leavesShell = false): PreparedStep {
  const tok = randomToken();
  const startMarker = `<<rb-s-${tok}:`;
  const endMarker = `<<rb-e-${tok}:`;
  // /proc/self is the subshell (read is a builtin): pid = field 1, start time = field 22 (20th after "pid (comm) ").
  const start =
    `read -r rb_s </proc/self/stat; rb_p=\${rb_s%% *}; rb_s=\${rb_s##*) }; set -- $rb_s; ` +
    `printf '%s%s:%s>>\\n' '${startMarker}' "$rb_p" "\${20}" >&2; printf '%s>>\\n' '${startMarker}'; set --; unset rb_s rb_p`;
  const inner = [start, ...exportLines(spec.env), 'eval "$rb_script"'].join('\n');
  const lines = [`rb_script=${shQuote(spec.script)}`];
  const feed = stdinFeed(spec.stdin);
  lines.push(feed ? `${feed}(\n${inner}\n)` : `(\n${inner}\n) </dev/null`);
  const end = `rb_rc=$?; unset rb_script; printf '%s%s>>\\n' '${endMarker}' "$rb_rc" >&2; printf '%s%s>>\\n' '${endMarker}' "$rb_rc"`;
  lines.push(end);
  const step: PreparedStep = { text: `${lines.join('\n')}\n`, startMarker, endMarker };
  if (feed || Object.keys(spec.env ?? {}).length > 0 || !(leavesShell || runsInPlace(spec.script))) return step;
  // /proc/loadavg's last field is the pid created last; /proc/uptime counts the same boot clock as a process's start time.
  const here =
    `read -r rb_u rb_x </proc/uptime; read -r rb_x rb_x rb_x rb_x rb_l </proc/loadavg; ` +
    `printf '%s%s:%s%s:c>>\\n' '${startMarker}' "$((rb_l + 1))" "\${rb_u%.*}" "\${rb_u#*.}" >&2; printf '%s>>\\n' '${startMarker}'; unset rb_u rb_x rb_l`;
  step.inPlaceText = `${[lines[0], here, '{ eval "$rb_script"; } </dev/null', end].join('\n')}\n`;
  return step;
}

/** Exit status of sessionKillScript when a process of the command is still there after KILL. */
export const KILL_UNCONFIRMED_EXIT = 3;

/**
 * Kill script for a command of a session: TERM every process of process group `pgid` created since the
 * command started: a later start time than `startTicks`, or the same clock tick and a pid not below `sub` (pids
 * grow): for a subshell, its own pid and start time; for a command run in place, the next pid and the uptime in
 * centiseconds (`centis`: scaled here to clock ticks). Never the session shell and its parent (`keep`). Waits up to
 * graceMs for them to go, then KILLs what is left of them (and anything they started meanwhile). Exits 0 once none
 * of them is left (zombies count as gone), KILL_UNCONFIRMED_EXIT when one still is about 2 s after the KILL.
 */
export function sessionKillScript(pgid: number, sub: number, startTicks: number, keep: number[], graceMs = 2000, centis = false): string {
  for (const n of [pgid, sub, startTicks, ...keep]) if (!Number.isInteger(n) || n < 0) throw new Error(`bad process id ${n}`);
  if (pgid <= 1) throw new Error(`bad process group ${pgid}`);
  const rounds = Math.max(1, Math.ceil(graceMs / 100));
  const skip = keep
    .filter((k) => k > 1)
    .map((k) => `[ "$p" = ${k} ] && continue;`)
    .join(' ');
  return `${[
    `T=${startTicks}`,
    ...(centis ? ['H=$(getconf CLK_TCK 2>/dev/null) && [ "$H" -gt 0 ] 2>/dev/null || H=100; T=$((T * H / 100))'] : []),
    'rb_list() { L=; for d in /proc/[0-9]*; do read -r s <"$d/stat" 2>/dev/null || continue; p=${s%% *}; s=${s##*) }; set -- $s;',
    `  [ "$1" != Z ] || continue; [ "$3" = ${pgid} ] || continue; ${skip} [ "\${20}" -gt $T ] || { [ "\${20}" -eq $T ] && [ "$p" -ge ${sub} ]; } || continue; L="$L $p"; done; }`,
    'rb_list; [ -n "$L" ] || exit 0',
    'kill -TERM $L 2>/dev/null',
    `i=0; while [ $i -lt ${rounds} ]; do a=; for p in $L; do kill -0 $p 2>/dev/null && a=1; done; [ -n "$a" ] || break; sleep 0.1; i=$((i+1)); done`,
    'rb_list; [ -z "$L" ] || kill -KILL $L 2>/dev/null',
    // Exit 0 only once none is left (zombies are dead): the caller may rely on it.
    'i=0; while [ $i -lt 20 ]; do rb_list; [ -n "$L" ] || exit 0; sleep 0.1; i=$((i+1)); done',
    `echo "still running:$L" >&2; exit ${KILL_UNCONFIRMED_EXIT}`,
  ].join('\n')}\n`;
}

/** READY: `pgid` is the first number of the marker's payload; `payload` is all of it (sessions: PGID:PID:PPID). */
export type MarkerEvent = { type: 'ready'; pgid: number; payload: string };

/** Added to a command's stderr when sudo prompted a second time (a wrong or missing become password). */
export const BECOME_REJECTED = 'runbook: sudo rejected the become password (or asked for it again)\n';

/**
 * Removes the prompt and READY markers from a stderr byte stream and reports READY. Answers sudo's prompt on
 * `stdin`: the password once; a second prompt means it was wrong: stdin is ended and `rejected` set. Everything
 * before READY is buffered only as long as it could be the start of a marker; after READY, chunks pass through.
 */
export class StderrMarkerFilter {
  private pending = Buffer.alloc(0);
  private ready = false;
  private passwordSent = false;
  rejected = false;
  constructor(
    private readonly run: Pick<PreparedRun, 'readyMarker' | 'promptMarker' | 'becomePassword'>,
    private readonly stdin: { write(s: string): unknown; end(): unknown },
  ) {}

  private prompted(): void {
    if (!this.passwordSent && this.run.becomePassword !== undefined) {
      this.passwordSent = true;
      this.stdin.write(`${this.run.becomePassword}\n`);
    } else {
      this.rejected = true;
      this.stdin.end();
    }
  }

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
        this.prompted();
        continue;
      }
      if (r >= 0) {
        const end = buf.indexOf('>>\n', r + this.run.readyMarker.length);
        if (end < 0) break; // wait for the rest of the marker line
        const payload = buf.subarray(r + this.run.readyMarker.length, end).toString();
        const pgid = Number(payload.split(':')[0]);
        outParts.push(buf.subarray(0, r));
        outParts.push(buf.subarray(end + 3));
        buf = Buffer.alloc(0);
        this.ready = true;
        events.push({ type: 'ready', pgid, payload });
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

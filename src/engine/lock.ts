/**
 * Per-host run locks, held ON the host (default file `/run/runbook/lock`; /run is cleared at
 * boot, so a reboot frees it). Only the Transport interface is used.
 *
 * Acquire is atomic and runs no process on the host: the lock file is created with O_EXCL (the
 * shell's noclobber `>`), which fails if the path exists, and the holder's details are written
 * in the same breath; a racer that finds it still empty reads again. A lock held by the same
 * run id (resume, rollback of that run) is taken over; any other holder is refused with its
 * details (E_LOCKED). Release removes the lock only if it is still ours. breakLock() (runbook
 * unlock) removes it only if the holder's run id is the one the user named.
 */
import { hostname } from 'node:os';
import { RunbookError } from '../core/errors.js';
import { sessionKillScript, shQuote } from '../transport/shell.js';
import type { Transport, ExecResult } from '../transport/types.js';
import type { HostLock } from './engine.js';

export const DEFAULT_LOCK_PATH = '/run/runbook/lock';
/** Host variable that overrides the lock path (several test "hosts" on one machine need one each). */
export const LOCK_PATH_VAR = 'runbook_lock_path';

export interface LockInfo {
  run_id: string;
  /** Controller hostname. */
  controller: string;
  pid: number;
  /** When the run started (ISO 8601). */
  started: string;
  runbook?: string;
  /**
   * The host shell that took the lock, `PGID:PID:STARTTICKS` (from /proc, written by the host itself): what a
   * resume or rollback of this run ends if the controller died and its command still runs (endDeadSession).
   */
  session?: string;
}

export interface HostLockOptions {
  runId: string;
  runbook?: string;
  /** Run start time, ISO; default now. */
  started?: string;
  controller?: string;
  pid?: number;
  /** Lock file path per host (default DEFAULT_LOCK_PATH). */
  pathFor?: (host: string) => string;
  /** Run the lock commands through sudo (the host's become setting). */
  becomeFor?: (host: string) => boolean;
  timeoutMs?: number;
}

export interface LockAccess {
  path?: string;
  become?: boolean;
  timeoutMs?: number;
}

const HELD_EXIT = 10;
const TMP_FAIL_EXIT = 11;
const NOT_RUNNING_EXIT = 12;

async function run(t: Transport, script: string, a: LockAccess, leavesShell = false): Promise<ExecResult> {
  return t.exec(script, { become: a.become, timeoutMs: a.timeoutMs ?? 30_000, leavesShell });
}

function fail(host: string, what: string, r: ExecResult): RunbookError {
  const detail = (r.stderr || r.stdout).trim().split('\n').slice(-3).join(' ');
  // The session could not become the user at all (shell.ts: no sudo on the host): that line is the whole story.
  if (detail.startsWith('runbook: logged in as ')) return new RunbookError('E_NO_SUDO', `${host}: ${detail.slice('runbook: '.length)}`);
  return new RunbookError(
    'E_LOCK',
    `cannot ${what} the run lock on ${host}: ${r.timedOut ? 'timed out' : `exit ${r.code ?? r.signal}`}${detail ? ` (${detail})` : ''}; check that the lock directory is writable (become) on the host`,
  );
}

/** Parses a lock file's text; undefined if it is not one of ours. */
export function parseLockInfo(text: string): LockInfo | undefined {
  try {
    const v = JSON.parse(text.trim()) as Partial<LockInfo>;
    if (v && typeof v.run_id === 'string' && typeof v.controller === 'string') {
      return {
        run_id: v.run_id,
        controller: v.controller,
        pid: Number(v.pid),
        started: String(v.started ?? ''),
        ...(v.runbook ? { runbook: String(v.runbook) } : {}),
        ...(typeof v.session === 'string' && /^\d+:\d+:\d+$/.test(v.session) ? { session: v.session } : {}),
      };
    }
  } catch {
    /* not ours */
  }
  return undefined;
}

export function describeHolder(h: LockInfo): string {
  return `run ${h.run_id}${h.runbook ? ` (${h.runbook})` : ''}, controller ${h.controller} pid ${h.pid}, since ${h.started}`;
}

/** Reads the lock on a host: its holder, or null if there is no lock. */
export async function readLock(t: Transport, host: string, a: LockAccess = {}): Promise<{ holder?: LockInfo; raw: string } | null> {
  const path = a.path ?? DEFAULT_LOCK_PATH;
  const r = await run(t, `if [ -e ${shQuote(path)} ]; then cat ${shQuote(path)}; exit ${HELD_EXIT}; fi; exit 0\n`, a);
  if (r.code === 0) return null;
  if (r.code !== HELD_EXIT) throw fail(host, 'read', r);
  return { holder: parseLockInfo(r.stdout), raw: r.stdout };
}

function lockedError(host: string, path: string, holder: LockInfo | undefined, raw: string): RunbookError {
  if (!holder) {
    return new RunbookError(
      'E_LOCKED',
      `${host} is locked by an unknown holder (${path} holds ${JSON.stringify(raw.trim().slice(0, 200))}); inspect and remove it by hand if no run is working there`,
    );
  }
  return new RunbookError(
    'E_LOCKED',
    `${host} is locked by ${describeHolder(holder)}; wait for that run to end, or if it is dead: runbook resume ${holder.run_id} (or rollback), or break the lock with: runbook unlock ${host} -i INVENTORY --run ${holder.run_id}`,
  );
}

/** Takes the lock on one host, as `me`. Throws E_LOCKED (other holder) or E_LOCK (cannot write). */
export async function acquireLock(t: Transport, host: string, me: LockInfo, a: LockAccess = {}): Promise<'acquired' | 'taken-over'> {
  return (await takeLock(t, host, me, a)).status;
}

/** acquireLock, and the holder a take-over replaced (the same run id, an earlier controller). */
export async function takeLock(
  t: Transport,
  host: string,
  me: LockInfo,
  a: LockAccess = {},
): Promise<{ status: 'acquired' | 'taken-over'; previous?: LockInfo }> {
  const path = a.path ?? DEFAULT_LOCK_PATH;
  const p = shQuote(path);
  const { session: _, ...fixed } = me;
  const head = shQuote(JSON.stringify(fixed).slice(0, -1));
  const mine = shQuote(`"run_id":${JSON.stringify(me.run_id)},`);
  // noclobber: `>` opens with O_CREAT|O_EXCL, which fails when the path exists, so exactly one racer creates it,
  // with builtins only (no process on the host). A racer that lost may find it created but not yet written: it
  // reads again for up to ~1 s before it calls the holder unknown. The holder's text ends with this shell's
  // PGID:PID:STARTTICKS (its /proc stat: pgrp and starttime), for endDeadSession.
  const script = `${[
    'umask 022',
    `L=${p}`,
    'D=${L%/*}; [ "$D" != "$L" ] || D=.; [ -n "$D" ] || D=/',
    `[ -d "$D" ] || mkdir -p "$D" || exit ${TMP_FAIL_EXIT}`,
    `J=${head}`,
    'if read -r S </proc/$$/stat 2>/dev/null; then S=${S##*) }; set -- $S; J="$J,\\"session\\":\\"$3:$$:${20}\\""; set --; fi',
    'set -C',
    `if { printf '%s}\\n' "$J" > "$L"; } 2>/dev/null; then echo acquired; exit 0; fi`,
    'set +C',
    `[ -e "$L" ] || exit ${TMP_FAIL_EXIT}`,
    'c=; i=0; while :; do read -r c <"$L" 2>/dev/null; [ -z "$c" ] && [ $i -lt 100 ] || break; sleep 0.01; i=$((i+1)); done',
    // Held. Ours (same run id: a resume)? Take it over (written aside, then renamed); say whom it replaced.
    `case $c in *${mine}*) T="$L.$$.tmp"; printf '%s}\\n' "$J" > "$T" && mv -f "$T" "$L" && { echo taken-over; printf '%s\\n' "$c"; exit 0; }; rm -f "$T";; esac`,
    `printf '%s\\n' "$c"; exit ${HELD_EXIT}`,
  ].join('\n')}\n`;
  const r = await run(t, script, a);
  if (r.code === 0) {
    if (!r.stdout.startsWith('taken-over')) return { status: 'acquired' };
    const previous = parseLockInfo(r.stdout.slice('taken-over\n'.length));
    return { status: 'taken-over', ...(previous ? { previous } : {}) };
  }
  if (r.code === HELD_EXIT) throw lockedError(host, path, parseLockInfo(r.stdout), r.stdout);
  throw fail(host, 'take', r);
}

/**
 * After taking over the lock of a dead controller (resume, rollback): ends what its host shell still runs (the
 * command it was in when the controller died goes on without it, e.g. an image import), so nothing of the dead
 * run races the steps that follow. Only while that shell is alive, the same process (pid and start time) in the
 * same group: then every process of its group it started is TERMed, then KILLed (sessionKillScript). Returns what
 * it ended, or undefined; throws E_LOCK when a process of it is still there after KILL.
 */
export async function endDeadSession(t: Transport, host: string, holder: LockInfo, a: LockAccess = {}): Promise<string | undefined> {
  const m = /^(\d+):(\d+):(\d+)$/.exec(holder.session ?? '');
  if (!m) return undefined;
  const [pgid, pid, ticks] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (pgid <= 1 || pid <= 1) return undefined;
  const guard = [
    `read -r s </proc/${pid}/stat 2>/dev/null || exit ${NOT_RUNNING_EXIT}`,
    's=${s##*) }; set -- $s',
    `[ "$3" = ${pgid} ] && [ "\${20}" = ${ticks} ] && [ ${pid} != $$ ] || exit ${NOT_RUNNING_EXIT}`,
  ].join('\n');
  const r = await run(t, `${guard}\n${sessionKillScript(pgid, pid, ticks, [])}`, {
    ...a,
    timeoutMs: Math.max(a.timeoutMs ?? 30_000, 30_000),
  });
  if (r.code === NOT_RUNNING_EXIT) return undefined;
  const what = `the host shell of run ${holder.run_id}'s dead controller ${holder.controller} pid ${holder.pid} (process group ${pgid})`;
  if (r.code !== 0)
    throw new RunbookError(
      'E_LOCK',
      `${host}: ${what} is still running and could not be ended (${(r.stderr || `exit ${r.code ?? r.signal}`).trim()}); nothing was done on the host, end it by hand and run again`,
    );
  return `ended what ${what} was still running`;
}

/**
 * The release script: removes the lock at `path` only if `runId` holds it, printing `released`. read + case
 * (builtins) instead of grep, and written to leave the shell as it was (no exit; rb_c unset on every path, last, so
 * the status is rm's): a shell session runs it in place, and `rm` is the one process it starts.
 */
export function releaseScript(path: string, runId: string): string {
  const p = shQuote(path);
  const mine = shQuote(`"run_id":${JSON.stringify(runId)},`);
  return `rb_c=; read -r rb_c 2>/dev/null <${p}; case $rb_c in *${mine}*) unset rb_c; rm -f ${p} && echo released;; *) unset rb_c;; esac\n`;
}

/** Removes the lock if `runId` holds it. Returns false if it was not ours (or not there). */
export async function releaseLock(t: Transport, host: string, runId: string, a: LockAccess = {}): Promise<boolean> {
  const r = await run(t, releaseScript(a.path ?? DEFAULT_LOCK_PATH, runId), a, true);
  if (r.code !== 0) throw fail(host, 'release', r);
  return r.stdout.includes('released');
}

/**
 * `runbook unlock`: removes a stale lock, only if its holder's run id is `runId`.
 * Returns the holder that was removed. Throws E_NOT_LOCKED or E_LOCK_HOLDER_MISMATCH.
 */
export async function breakLock(
  t: Transport,
  host: string,
  runId: string,
  a: LockAccess = {},
  isLive: (holder: LockInfo) => boolean = () => false,
): Promise<LockInfo> {
  const path = a.path ?? DEFAULT_LOCK_PATH;
  const cur = await readLock(t, host, a);
  if (!cur) throw new RunbookError('E_NOT_LOCKED', `${host} has no run lock (${path}); nothing to unlock`);
  if (!cur.holder || cur.holder.run_id !== runId) {
    const who = cur.holder ? describeHolder(cur.holder) : `an unknown holder (${JSON.stringify(cur.raw.trim().slice(0, 200))})`;
    throw new RunbookError(
      'E_LOCK_HOLDER_MISMATCH',
      `${host} is locked by ${who}, not by run ${runId}; nothing was removed. Pass the holder's run id to --run if that run is dead`,
    );
  }
  if (isLive(cur.holder))
    throw new RunbookError(
      'E_LOCK_LIVE',
      `${host} is locked by ${describeHolder(cur.holder)}, and that process is still running; nothing was removed. Stop that run first, or pass --force to remove its lock anyway`,
    );
  const p = shQuote(path);
  const mine = shQuote(`"run_id":${JSON.stringify(runId)},`);
  const r = await run(
    t,
    `if grep -qF ${mine} ${p} 2>/dev/null; then rm -f ${p} || exit 1; echo removed; exit 0; fi; exit ${HELD_EXIT}\n`,
    a,
  );
  if (r.code === HELD_EXIT)
    throw new RunbookError(
      'E_LOCK_HOLDER_MISMATCH',
      `the lock on ${host} changed while unlocking; nothing was removed, look again with runbook unlock`,
    );
  if (r.code !== 0) throw fail(host, 'remove', r);
  return cur.holder;
}

/** The engine's HostLock for one run. */
export function createHostLock(o: HostLockOptions): HostLock & { readonly info: LockInfo } {
  const info: LockInfo = {
    run_id: o.runId,
    controller: o.controller ?? hostname(),
    pid: o.pid ?? process.pid,
    started: o.started ?? new Date().toISOString(),
    ...(o.runbook ? { runbook: o.runbook } : {}),
  };
  const access = (host: string): LockAccess => ({
    path: o.pathFor?.(host) ?? DEFAULT_LOCK_PATH,
    become: o.becomeFor?.(host) ?? false,
    timeoutMs: o.timeoutMs,
  });
  return {
    info,
    async acquire(t, host) {
      const r = await takeLock(t, host, info, access(host));
      return r.previous ? endDeadSession(t, host, r.previous, access(host)) : undefined;
    },
    async release(t, host) {
      await releaseLock(t, host, info.run_id, access(host));
    },
  };
}

type LockHost = { name: string; vars: Record<string, unknown>; connection: { kind: string; become?: boolean } };

/** Lock path and become of one planned host (lockPathForHost; sudo when the host becomes). */
export function lockAccessFor(h: LockHost, tmp: string): { path: string; become: boolean } {
  return { path: lockPathForHost(h, tmp), become: !!h.connection.become };
}

/**
 * lockAccessFor per host name, for createHostLock (the hosts of a plan). `runbookBecomes`: the runbook's
 * `become: true` (its steps become on every host, so the lock in a root-owned directory does too).
 */
export function lockAccessFromHosts(
  hosts: LockHost[],
  tmp: string,
  runbookBecomes = false,
): { pathFor: (h: string) => string; becomeFor: (h: string) => boolean } {
  const by = new Map(hosts.map((h) => [h.name, h]));
  return {
    pathFor: (h) => lockPathForHost(by.get(h)!, tmp),
    becomeFor: (h) => runbookBecomes || !!by.get(h)?.connection.become,
  };
}

/**
 * The lock path of a planned host: the `runbook_lock_path` host variable, else
 * DEFAULT_LOCK_PATH; hosts with a local connection are all this machine, so each gets its own
 * file under the temp dir. apply, resume, rollback and unlock must agree on it.
 */
/** A per-host path in the temp dir for a local-connection host. A name may hold '/' (or '..' after one): encoded, so it stays there. */
export function localHostPath(tmp: string, prefix: string, name: string): string {
  return `${tmp.replace(/\/$/, '')}/${prefix}-${name.replace(/[%/\0]/g, encodeURIComponent)}`;
}

export function lockPathForHost(h: LockHost, tmp: string): string {
  const v = h.vars[LOCK_PATH_VAR];
  if (typeof v === 'string' && v.length > 0) return v;
  if (h.connection.kind === 'local') return localHostPath(tmp, 'runbook-lock', h.name);
  return DEFAULT_LOCK_PATH;
}

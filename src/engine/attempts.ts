/**
 * Remediation attempts, recorded ON the host (default `/var/lib/runbook/attempts/<runbook>.log`,
 * persistent: a reboot is often part of the failure and must not reset the count), so that every
 * controller (a second `runbook serve` replica, a cron line, a person) sees the same history.
 *
 * claim() runs under the host lock, after the preflight said the host has something to do and
 * before its first step: in one command it reads the record, refuses within the cooldown or past
 * the attempt budget, else appends "<host's unix time> <run id>". The host's own clock decides,
 * so controllers with skewed clocks agree. A host with nothing to do (apply_if false) is no attempt.
 */
import { RunbookError } from '../core/errors.js';
import { shQuote } from '../transport/shell.js';
import type { Transport } from '../transport/types.js';
import { localHostPath } from './lock.js';

export const DEFAULT_ATTEMPTS_DIR = '/var/lib/runbook/attempts';
/** Host variable that overrides the directory (several test "hosts" on one machine need one each). */
export const ATTEMPTS_DIR_VAR = 'runbook_attempts_dir';

export interface AttemptPolicy {
  /** No new attempt within this long after the last one started. */
  cooldownMs?: number;
  /** At most `count` attempts started within `withinMs`; then the host is left for a human. */
  maxAttempts?: { count: number; withinMs: number };
}

export type Claim = { ok: true } | { ok: false; code: 'E_COOLDOWN' | 'E_MAX_ATTEMPTS'; reason: string };

export interface AttemptGate {
  claim(t: Transport, host: string): Promise<Claim>;
}

export interface AttemptGateOptions extends AttemptPolicy {
  runId: string;
  runbook: string;
  dirFor: (host: string) => string;
  becomeFor: (host: string) => boolean;
}

const COOLDOWN_EXIT = 12;
const MAX_EXIT = 13;

/** The record file of one runbook in `dir` (the name encoded so it stays a single file there). */
export function attemptsFile(dir: string, runbook: string): string {
  return `${dir.replace(/\/+$/, '')}/${runbook.replace(/[^A-Za-z0-9._-]/g, encodeURIComponent)}.log`;
}

export function createAttemptGate(o: AttemptGateOptions): AttemptGate {
  const cooldownS = Math.ceil((o.cooldownMs ?? 0) / 1000);
  const count = o.maxAttempts?.count ?? 0;
  const withinS = Math.ceil((o.maxAttempts?.withinMs ?? 0) / 1000);
  return {
    async claim(t, host) {
      const file = attemptsFile(o.dirFor(host), o.runbook);
      // Builtins except `date` and `mkdir` (first time only). Lines that are not "<digits> <id>" are ignored.
      const script = `${[
        'umask 022',
        `F=${shQuote(file)}`,
        'D=${F%/*}',
        '[ -d "$D" ] || mkdir -p "$D" || exit 11',
        'now=$(date +%s) || exit 11',
        'last=0; n=0; ids=',
        `if [ -e "$F" ]; then while read -r ts id; do case $ts in ''|*[!0-9]*) continue;; esac; [ "$ts" -gt "$last" ] && last=$ts lastid=$id; if [ $((now - ts)) -lt ${withinS} ]; then n=$((n + 1)); ids="$ids $id"; fi; done < "$F"; fi`,
        `if [ ${cooldownS} -gt 0 ] && [ "$last" -gt 0 ] && [ $((now - last)) -lt ${cooldownS} ]; then echo "$((now - last)) $lastid"; exit ${COOLDOWN_EXIT}; fi`,
        `if [ ${count} -gt 0 ] && [ "$n" -ge ${count} ]; then echo "$n$ids"; exit ${MAX_EXIT}; fi`,
        `printf '%s %s\\n' "$now" ${shQuote(o.runId)} >> "$F" || exit 11`,
      ].join('\n')}\n`;
      const r = await t.exec(script, { become: o.becomeFor(host), timeoutMs: 30_000 });
      const out = r.stdout.trim().split(/\s+/);
      if (r.code === COOLDOWN_EXIT) {
        return {
          ok: false,
          code: 'E_COOLDOWN',
          reason: `cooldown: ${o.runbook} last started on this host ${span(Number(out[0]))} ago (run ${out[1] ?? '?'}), within its cooldown of ${span(cooldownS)}; not run again`,
        };
      }
      if (r.code === MAX_EXIT) {
        return {
          ok: false,
          code: 'E_MAX_ATTEMPTS',
          reason: `max attempts: ${o.runbook} started ${out[0]} times on this host within ${span(withinS)} (runs ${out.slice(1).join(', ')}); left for a human: look at the host, then run it by hand, or remove ${file} to allow more`,
        };
      }
      if (r.code !== 0) {
        const detail = (r.stderr || r.stdout).trim().split('\n').slice(-2).join(' ');
        throw new RunbookError(
          'E_ATTEMPTS',
          `cannot read or write the attempt record ${file} on ${host}: exit ${r.code ?? r.signal}${detail ? ` (${detail})` : ''}; check that its directory is writable (become)`,
        );
      }
      return { ok: true };
    },
  };
}

/** "45s", "30m", "1h", "2h5m", "1d": a span as an operator writes it. */
function span(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  if (s >= 86_400 && s % 86_400 === 0) return `${s / 86_400}d`;
  if (s >= 3600 && s % 3600 === 0) return `${s / 3600}h`;
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 120) return `${m}m`;
  const h = Math.floor(m / 60);
  return m % 60 ? `${h}h${m % 60}m` : `${h}h`;
}

/**
 * The attempt directory of a planned host: the `runbook_attempts_dir` variable, else the default;
 * hosts with a local connection are all this machine, so each gets its own under the temp dir.
 */
export function attemptsDirForHost(h: { name: string; vars: Record<string, unknown>; connection: { kind: string } }, tmp: string): string {
  const v = h.vars[ATTEMPTS_DIR_VAR];
  if (typeof v === 'string' && v.length > 0) return v;
  if (h.connection.kind === 'local') return localHostPath(tmp, 'runbook-attempts', h.name);
  return DEFAULT_ATTEMPTS_DIR;
}

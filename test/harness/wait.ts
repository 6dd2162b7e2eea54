/**
 * Waiting in tests: never a fixed sleep before looking at the product's state; poll the observable condition (the
 * lock file exists, the journal has a record, the step's process is running) until it holds, with a deadline that is
 * generous for a machine 3x slower than a laptop with every core busy. The deadline only matters when the condition
 * never holds, and then the error says what was awaited:
 *
 *   await waitFor(() => existsSync(lockFile), { what: `the host lock ${lockFile}` });
 *   const rec = await waitFor(() => records().find((r) => r.type === 'host-start'), { what: 'a host-start record' });
 *   // -> Error: timed out after 60000 ms waiting for a host-start record
 *
 * A condition that throws ends the wait at once with that error (e.g. "the run ended before the step started").
 * `within` bounds a promise the same way (a product that should notice something must not hang the suite).
 * `pollSync` is for synchronous exit-time cleanup (kill, then wait until gone), where nothing may throw.
 */
import { setTimeout as sleep } from 'node:timers/promises';

/** Default deadline of waitFor/within. */
export const DEFAULT_TIMEOUT_MS = 60_000;

export interface WaitOptions {
  /** What is awaited, completing "timed out after N ms waiting for ...". */
  what: string;
  /** Deadline (default DEFAULT_TIMEOUT_MS). */
  timeoutMs?: number;
  /** Pause between checks (default 25 ms). */
  intervalMs?: number;
  /** More context for the timeout message, computed when it times out (the last screen, a log tail...). */
  detail?: () => string | Promise<string>;
}

async function timeoutError(o: WaitOptions, ms: number): Promise<Error> {
  let extra = '';
  if (o.detail) {
    try {
      extra = `: ${await o.detail()}`;
    } catch (e) {
      extra = ` (detail unavailable: ${e instanceof Error ? e.message : String(e)})`;
    }
  }
  return new Error(`timed out after ${ms} ms waiting for ${o.what}${extra}`);
}

/** What a waitFor condition returns once it holds. */
export type Truthy<T> = Exclude<T, false | null | undefined | 0 | ''>;

/**
 * Polls `cond` until it returns a truthy value, and returns that value. Throws `timed out after N ms waiting for
 * <what>` when the deadline passes (the condition is checked once more at the deadline).
 */
export async function waitFor<T>(cond: () => T | Promise<T>, o: WaitOptions): Promise<Truthy<T>> {
  const ms = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const until = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v as Truthy<T>;
    if (Date.now() >= until) break;
    await sleep(Math.min(o.intervalMs ?? 25, Math.max(1, until - Date.now())));
  }
  const last = await cond();
  if (last) return last as Truthy<T>;
  throw await timeoutError(o, ms);
}

/** Resolves like `p`, or rejects with `timed out after N ms waiting for <what>` if `p` has not settled by then. */
export async function within<T>(p: Promise<T>, o: Omit<WaitOptions, 'intervalMs'>): Promise<T> {
  const ms = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const ac = new AbortController();
  const timer = sleep(ms, 'timeout' as const, { signal: ac.signal }).catch(() => 'cancelled' as const);
  try {
    const first = await Promise.race([p.then((v) => ({ v })), timer]);
    if (first === 'timeout') throw await timeoutError(o, ms);
    if (first === 'cancelled') throw new Error('unreachable: the deadline was cancelled before the race ended');
    return first.v;
  } finally {
    ac.abort();
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Synchronous polling for exit-time cleanup: true as soon as cond() holds, false after timeoutMs. Never throws. */
export function pollSync(cond: () => boolean, timeoutMs: number, intervalMs = 50): boolean {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (cond()) return true;
    } catch {
      /* treated as not yet */
    }
    if (Date.now() >= until) return false;
    sleepSync(Math.min(intervalMs, Math.max(1, until - Date.now())));
  }
}

/**
 * The no-root tiers (`npm run test:unit`, `npm run test:local`) set RUNBOOK_TEST_TIER. The harness calls this before
 * it starts sshd, network namespaces or nspawn nodes, so a file marked `// tier: unit` or `// tier: local` that needs
 * them fails loudly instead of being skipped.
 */
export function refuseInUnitTier(what: string): void {
  const tier = process.env.RUNBOOK_TEST_TIER;
  if (tier) {
    throw new Error(
      `${what}: this test file runs in the ${tier} tier (its first line is "// tier: ${tier}" or "// tier: unit") ` +
        'but needs root, sshd, network namespaces or nspawn; remove the marker',
    );
  }
}

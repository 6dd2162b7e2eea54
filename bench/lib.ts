/** What the TypeScript benches share: options, medians, running a contender, the fleet's lock paths. */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { registerCleanup } from '../test/harness/netns.js';
import type { SshFleet } from '../test/harness/sshd.js';

export const root = new URL('..', import.meta.url).pathname;
export const bin = join(root, 'bin/runbook');

/** `--name VALUE` from the command line, else `def`. */
export function opt(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : def;
}

export const numbers = (s: string): number[] =>
  s
    .split(',')
    .map(Number)
    .filter((n) => Number.isInteger(n) && n >= 0);

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

export interface Outcome {
  ms: number;
  code: number | null;
  /** stdout (all of it: the benches read --json lines or a recap from it). */
  out: string;
  /** Set when it did not exit 0: the exit and its first line about why. */
  error?: string;
  /** Stopped at its timeout (run's timeoutMs). */
  timedOut?: boolean;
}

/**
 * Runs a contender to its end; never rejects. With timeoutMs, a contender still running then is stopped (TERM to
 * its process group, KILL 10 s later) and its outcome says so (timedOut), with all it printed until then.
 */
export function run(argv: string[], env: NodeJS.ProcessEnv, cwd: string, timeoutMs?: number): Promise<Outcome> {
  return new Promise((res) => {
    const t0 = performance.now();
    let err = '';
    let out = '';
    const p = spawn(argv[0], argv.slice(1), { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: timeoutMs !== undefined });
    let timedOut = false;
    const group = (sig: NodeJS.Signals) => {
      try {
        process.kill(-p.pid!, sig);
      } catch {
        /* gone */
      }
    };
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            group('SIGTERM');
            setTimeout(() => group('SIGKILL'), 10_000).unref();
          }, timeoutMs);
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.stderr.on('data', (d) => {
      err = (err + d).slice(-4000);
    });
    p.on('error', (e) => res({ ms: performance.now() - t0, code: null, out, error: e.message }));
    p.on('close', (code) => {
      const ms = performance.now() - t0;
      if (timer) clearTimeout(timer);
      if (timedOut) return res({ ms, code, out, timedOut, error: `stopped: still running after ${Math.round(timeoutMs! / 1000)} s` });
      if (code === 0) return res({ ms, code, out });
      const said = (err.trim() || out.trim()).split('\n');
      const line = said.find((l) => /fail|error|unreach|refus/i.test(l)) ?? said.pop();
      res({ ms, code, out, error: `exit ${code}: ${(line ?? '').slice(0, 200)}` });
    });
  });
}

/** Host statuses of a `runbook apply --json` run, counted (from its host-end lines), and the first message of a bad one. */
export function hostStatuses(out: string): { counts: Record<string, number>; first?: string } {
  const counts: Record<string, number> = {};
  let first: string | undefined;
  for (const l of out.split('\n')) {
    if (!l.startsWith('{')) continue;
    const e = JSON.parse(l) as { type: string; status?: string; message?: string; host?: string };
    if (e.type !== 'host-end' || !e.status) continue;
    counts[e.status] = (counts[e.status] ?? 0) + 1;
    if (!first && e.status !== 'changed' && e.status !== 'ok') first = `${e.host}: ${e.status}: ${e.message ?? ''}`;
  }
  return { counts, first };
}

/** Where a host keeps its run lock: the default in netns mode (a host each), else a file of its own under dir. */
export const lockPath = (fleet: SshFleet, dir: string, host: string): string =>
  fleet.mode === 'netns' ? '/run/runbook/lock' : join(dir, 'locks', host);

/** Runs a bench's main: an error is one JSON line on stdout and exit 1, never a stack trace. */
export function runMain(main: () => Promise<void>, context: Record<string, unknown> = {}): void {
  main().catch((e: unknown) => {
    console.log(JSON.stringify({ ...context, error: e instanceof Error ? e.message.split('\n')[0] : String(e) }));
    process.exitCode = 1;
  });
}

/** A work directory of the bench's own, removed when it ends: normally, or on SIGINT/SIGTERM/SIGHUP (with the fleet). */
export function workDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `rb-bench-${name}-`));
  registerCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

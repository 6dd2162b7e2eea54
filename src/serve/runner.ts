/**
 * One remediation = one ordinary `runbook apply` child process (its own journal, host lock,
 * rollback; `runbook runs` shows it), for one host, with the route's cooldown and attempt budget
 * checked on the host. The child is in its own process group: a Ctrl-C on serve's terminal does
 * not reach it; serve forwards SIGTERM itself (the child then rolls back what is in flight).
 */
import { spawn } from 'node:child_process';
import type { RouteConfig, ServeConfig } from './config.js';
import type { RunOutcome } from './policy.js';

export interface RunHandle {
  pid: number | undefined;
  /** SIGTERM to the child: no new step; the host in flight rolls back. */
  terminate(): void;
  done: Promise<RunOutcome>;
}

export function applyArgs(cfg: ServeConfig, route: RouteConfig, host: string, stateDir: string | undefined): string[] {
  return [
    'apply',
    route.runbook.file,
    ...cfg.inventoryFiles.flatMap((f) => ['-i', f]),
    '--limit',
    host,
    '--yes',
    '--json',
    '--cooldown',
    `${route.cooldownMs}ms`,
    '--max-attempts',
    `${route.maxAttempts.count}/${route.maxAttempts.withinMs}ms`,
    ...(stateDir ? ['--state-dir', stateDir] : []),
    ...(cfg.knownHosts ? ['--known-hosts', cfg.knownHosts] : []),
  ];
}

export function startRun(bin: string, args: string[], host: string, cwd: string): RunHandle {
  const child = spawn(process.execPath, [bin, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let buf = '';
  let stderr = '';
  let runId: string | undefined;
  let end: { status: string; code?: string; message?: string } | undefined;
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    const lines = buf.split('\n');
    buf = lines.pop() ?? '';
    if (buf.length > 1 << 20) buf = ''; // a line that long is no event of ours
    for (const line of lines) {
      if (!line.startsWith('{')) continue;
      try {
        const e = JSON.parse(line) as { type?: string; run_id?: string; host?: string; status?: string; code?: string; message?: string };
        if (e.type === 'run-start' && e.run_id) runId = e.run_id;
        if (e.type === 'host-end' && e.host === host && e.status) end = { status: e.status, code: e.code, message: e.message };
      } catch {
        /* not an event */
      }
    }
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr = (stderr + d).slice(-4096);
  });
  const done = new Promise<RunOutcome>((resolve) => {
    child.on('error', (err) => resolve({ status: 'error', message: `cannot start runbook: ${err.message}`, runId }));
    child.on('close', (code, signal) => {
      if (end) return resolve({ ...end, runId });
      const last = stderr.trim().split('\n').filter(Boolean).slice(-1)[0] ?? '';
      resolve({
        status: 'error',
        message: `runbook apply exited ${code ?? signal} with no outcome for ${host}${last ? `: ${last}` : ''}`,
        runId,
      });
    });
  });
  return {
    pid: child.pid,
    terminate: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    },
    done,
  };
}

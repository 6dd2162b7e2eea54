/**
 * `bin/runbook serve` in tests: started on a free loopback port (listen: 127.0.0.1:0; the port is
 * read from its "listening on" line), talked to over HTTP with the bearer token, its audit journal
 * read back, stopped by PID (SIGTERM, then SIGKILL at a deadline; its runs are in their own process
 * groups, so they are killed by group too).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from './wait.js';

export const REPO = new URL('../..', import.meta.url).pathname;
export const BIN = join(REPO, 'bin/runbook');
export const TOKEN = 'test-token-0123456789abcdef-0123456789';

export interface AuditRecord {
  v: number;
  time: string;
  replica: string;
  decision: string;
  route?: string;
  runbook?: string;
  host?: string;
  fingerprint?: string;
  labels?: Record<string, string>;
  reason?: string;
  status?: string;
  run_id?: string;
}

export interface Serve {
  child: ChildProcess;
  port: number;
  url: string;
  stderr(): string;
  audit(): AuditRecord[];
  post(body: unknown, o?: { token?: string; contentType?: string; raw?: string }): Promise<{ code: number; body: string }>;
  get(path: string, token?: string): Promise<{ code: number; body: string }>;
  /** Samples of one metric from /metrics: labels -> value. */
  metric(name: string): Promise<Array<{ labels: Record<string, string>; value: number }>>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Writes the token file (mode 600) next to the config; returns its path. */
export function writeToken(dir: string): string {
  const f = join(dir, 'token');
  writeFileSync(f, `${TOKEN}\n`, { mode: 0o600 });
  chmodSync(f, 0o600);
  return f;
}

export async function startServe(config: string, o: { auditFile: string; env?: NodeJS.ProcessEnv }): Promise<Serve> {
  const child = spawn(process.execPath, [BIN, 'serve', '-c', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...o.env },
  });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  child.stdout!.resume();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  let gone = false;
  // A test process that dies (or is killed) takes its serve with it.
  const reap = () => {
    if (!gone) child.kill('SIGKILL');
  };
  process.on('exit', reap);
  void exited.then(() => {
    gone = true;
    process.off('exit', reap);
  });
  const port = await waitFor(
    () => {
      if (gone) throw new Error(`runbook serve exited before listening: ${err}`);
      const m = /listening on [^\s]+:(\d+) /.exec(err);
      return m ? Number(m[1]) : 0;
    },
    { what: 'runbook serve to log "listening on"', detail: () => err },
  );
  const url = `http://127.0.0.1:${port}`;
  const req = async (method: string, path: string, body?: string, headers: Record<string, string> = {}) => {
    const r = await fetch(`${url}${path}`, { method, body, headers });
    return { code: r.status, body: await r.text() };
  };
  const s: Serve = {
    child,
    port,
    url,
    stderr: () => err,
    audit: () =>
      existsSync(o.auditFile)
        ? readFileSync(o.auditFile, 'utf8')
            .split('\n')
            .filter(Boolean)
            .map((l) => JSON.parse(l) as AuditRecord)
        : [],
    post: (body, p = {}) =>
      req('POST', '/alertmanager', p.raw ?? JSON.stringify(body), {
        'content-type': p.contentType ?? 'application/json',
        authorization: `Bearer ${p.token ?? TOKEN}`,
      }),
    get: (path, token = TOKEN) => req('GET', path, undefined, { authorization: `Bearer ${token}` }),
    async metric(name) {
      const r = await s.get('/metrics');
      const out: Array<{ labels: Record<string, string>; value: number }> = [];
      for (const line of r.body.split('\n')) {
        const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
        if (!m || m[1] !== name) continue;
        const labels: Record<string, string> = {};
        for (const [, k, v] of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
        out.push({ labels, value: Number(m[3]) });
      }
      return out;
    },
    exited,
    async stop() {
      if (!gone) child.kill('SIGTERM');
      const deadline = setTimeout(() => child.kill('SIGKILL'), 120_000);
      const r = await exited;
      clearTimeout(deadline);
      return r;
    },
  };
  return s;
}

/** An Alertmanager webhook body (version 4) for these alerts. */
export function payload(
  alerts: Array<{ name: string; host: string; status?: 'firing' | 'resolved'; labels?: Record<string, string> }>,
): unknown {
  const st = alerts.some((a) => (a.status ?? 'firing') === 'firing') ? 'firing' : 'resolved';
  return {
    version: '4',
    status: st,
    receiver: 'runbook',
    groupKey: '{}:{alertname="x"}',
    truncatedAlerts: 0,
    groupLabels: {},
    commonLabels: {},
    commonAnnotations: {},
    externalURL: 'http://am.invalid',
    alerts: alerts.map((a) => ({
      status: a.status ?? 'firing',
      labels: { alertname: a.name, host: a.host, ...a.labels },
      annotations: {},
      startsAt: new Date().toISOString(),
      endsAt: '0001-01-01T00:00:00Z',
      generatorURL: '',
      fingerprint: `fp-${a.name}-${a.host}`,
    })),
  };
}

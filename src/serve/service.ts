/**
 * `runbook serve`: the listener, the policy and the runs put together. Endpoints (every one needs
 * the configured authentication): POST /alertmanager, GET /metrics, GET /healthz.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { parsePayload } from './alerts.js';
import { Audit } from './audit.js';
import type { ServeConfig } from './config.js';
import { BodyTooLarge, bearerOk, readBody, signatureOk } from './http.js';
import { Counters, renderServeMetrics } from './metrics.js';
import { type DecisionRecord, Policy, type Result } from './policy.js';
import { applyArgs, type RunHandle, startRun } from './runner.js';

export interface ServiceOptions {
  /** bin/runbook, started once per remediation. */
  bin: string;
  stateDir?: string;
  auditFile: string;
  log: (line: string) => void;
}

const PUMP_MS = 5_000;

export class Service {
  private cfg: ServeConfig;
  private readonly policy: Policy;
  private readonly audit: Audit;
  private readonly counters = new Counters();
  private readonly runs = new Map<string, RunHandle>();
  private readonly server: Server;
  private byAddress = new Map<string, string[]>();
  private stopping = 0;
  private pumpTimer?: NodeJS.Timeout;
  private readonly startedAt = Date.now();
  private readonly logLimit = new Map<string, { since: number; n: number; dropped: number }>();
  readonly replica = `${hostname()}:${process.pid}`;

  constructor(
    cfg: ServeConfig,
    private readonly o: ServiceOptions,
  ) {
    this.cfg = cfg;
    this.policy = new Policy(cfg);
    this.audit = new Audit(o.auditFile, this.replica);
    this.indexAddresses();
    this.server = createServer((req, res) => void this.handle(req, res));
    // A slow or silent client cannot hold the listener: bounded headers, body time and sockets.
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 30_000;
    this.server.keepAliveTimeout = 5_000;
    this.server.maxConnections = 256;
    this.server.maxHeadersCount = 100;
  }

  listen(): Promise<{ address: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.cfg.listen.port, this.cfg.listen.host, () => {
        this.server.off('error', reject);
        const a = this.server.address();
        resolve(typeof a === 'object' && a ? { address: a.address, port: a.port } : { address: String(a), port: 0 });
      });
    });
  }

  /** SIGHUP: a new config (already validated); the listen address stays until a restart. */
  reload(cfg: ServeConfig): void {
    if (cfg.listen.host !== this.cfg.listen.host || cfg.listen.port !== this.cfg.listen.port) {
      this.o.log(
        `reload: listen ${cfg.listen.host}:${cfg.listen.port} takes effect at the next start; still on ${this.cfg.listen.host}:${this.cfg.listen.port}`,
      );
      cfg = { ...cfg, listen: this.cfg.listen };
    }
    this.cfg = cfg;
    this.policy.setConfig(cfg);
    this.indexAddresses();
    this.audit.reopen();
    Counters.inc(this.counters.reloads, 'ok');
    this.apply(this.policy.pump());
  }

  reloadRefused(): void {
    Counters.inc(this.counters.reloads, 'refused');
  }

  /**
   * First call: no new request or run; runs in flight go on to their end. Second: they are told
   * to stop (SIGTERM: each rolls back what it has in flight). Resolves when none is left.
   */
  async stop(): Promise<void> {
    this.stopping++;
    if (this.stopping === 1) {
      clearInterval(this.pumpTimer);
      const held = this.policy.dropHeld();
      this.o.log(
        `stopping: no new alert is accepted${held ? `; ${held} held alert(s) dropped (Alertmanager sends them again)` : ''}; ${this.runs.size} run(s) in flight finish first (signal again to roll them back now)`,
      );
      this.server.close();
      this.server.closeIdleConnections();
    } else {
      this.o.log(`stopping now: ${this.runs.size} run(s) in flight roll back`);
      for (const r of this.runs.values()) r.terminate();
    }
    await Promise.all([...this.runs.values()].map((r) => r.done));
    // The decisions of their ends are audited by then (done's handlers ran first).
    await new Promise((r) => setImmediate(r));
  }

  get inFlight(): number {
    return this.runs.size;
  }

  // ---------------------------------------------------------------------------------------------

  private indexAddresses(): void {
    const m = new Map<string, string[]>();
    for (const [name, h] of this.cfg.inventory.hosts) {
      const a = h.vars.ansible_host;
      if (typeof a === 'string' && a !== name) m.set(a, [...(m.get(a) ?? []), name]);
    }
    this.byAddress = m;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    const reply = (code: number, body: unknown, headers: Record<string, string> = {}) => {
      Counters.inc(this.counters.requests, String(code));
      const text = typeof body === 'string' ? body : `${JSON.stringify(body)}\n`;
      res.writeHead(code, { 'content-type': typeof body === 'string' ? 'text/plain; version=0.0.4' : 'application/json', ...headers });
      res.end(text);
      if (code >= 400)
        this.logRejected(
          code,
          `${req.method} ${path} from ${req.socket.remoteAddress}: ${code} ${typeof body === 'string' ? body : ((body as { error?: string }).error ?? '')}`.trim(),
        );
    };
    try {
      if (this.stopping) return reply(503, { error: 'serve is stopping' }, { connection: 'close' });
      const routes: Record<string, string> = { '/alertmanager': 'POST', '/metrics': 'GET', '/healthz': 'GET' };
      const method = routes[path];
      if (!method) return reply(404, { error: `no such endpoint ${path}; POST /alertmanager, GET /metrics, GET /healthz` });
      if (req.method !== method) return reply(405, { error: `${path} takes ${method}` }, { allow: method });
      // The bearer is checked before any body is read: an unauthenticated client costs nothing more.
      if (!bearerOk(req, this.cfg.auth)) return reply(401, { error: 'not authenticated' }, { 'www-authenticate': 'Bearer' });
      let body: Buffer;
      try {
        body = await readBody(req, this.cfg.maxBodyBytes);
      } catch (err) {
        if (err instanceof BodyTooLarge)
          return reply(413, { error: `body over ${this.cfg.maxBodyBytes} bytes (max_body)` }, { connection: 'close' });
        throw err;
      }
      if (!signatureOk(req, body, this.cfg.auth)) return reply(401, { error: 'not authenticated (signature)' });
      if (path === '/healthz') return reply(200, 'ok\n');
      if (path === '/metrics')
        return reply(
          200,
          renderServeMetrics(
            this.counters,
            this.policy,
            this.cfg.routes.map((r) => r.name),
            this.startedAt,
          ),
        );
      if (!/^application\/json\b/i.test(req.headers['content-type'] ?? ''))
        return reply(415, { error: 'the body must be application/json' });
      let json: unknown;
      try {
        json = JSON.parse(body.toString('utf8'));
      } catch {
        return reply(400, { error: 'the body is not JSON' });
      }
      const p = parsePayload(json);
      if ('error' in p) return reply(400, { error: p.error });
      const result = this.policy.receive(p.alerts, this.byAddress);
      this.apply(result);
      const decisions = result.records.map((r) => ({ host: r.host, alertname: r.alertname, decision: r.decision, reason: r.reason }));
      if (result.rejected) return reply(422, { error: 'an alert names an unknown host or matches no route', decisions });
      return reply(200, { decisions });
    } catch (err) {
      this.o.log(`internal error (a bug in runbook serve, please report it): ${(err as Error).stack ?? err}`);
      if (!res.headersSent) reply(500, { error: 'internal error' });
    }
  }

  /** Audits and counts every record, then starts the runs (each start flushed to the audit first). */
  private apply(r: Result): void {
    for (const rec of r.records) this.decided(rec);
    for (const s of r.start) {
      if (this.stopping) {
        this.apply(this.policy.ended(s.key, { status: 'skipped', message: 'serve is stopping; not started' }));
        continue;
      }
      const args = applyArgs(this.cfg, s.route, s.host, this.o.stateDir);
      const h = startRun(this.o.bin, args, s.host, dirname(this.cfg.file));
      this.runs.set(s.key, h);
      this.o.log(`run: ${s.route.runbook.name} on ${s.host} (pid ${h.pid})`);
      void h.done.then((outcome) => {
        this.runs.delete(s.key);
        Counters.inc(this.counters.runs, `${s.route.name}\0${outcome.status}`);
        this.apply(this.policy.ended(s.key, outcome));
      });
    }
    this.schedulePump();
  }

  private decided(rec: DecisionRecord): void {
    this.audit.write(rec, { sync: rec.decision === 'run_started' });
    Counters.inc(this.counters.decisions, `${rec.decision}\0${rec.route ?? ''}`);
    const what = [
      rec.route && `route=${rec.route}`,
      rec.host && `host=${rec.host}`,
      rec.status && `status=${rec.status}`,
      rec.run_id && `run=${rec.run_id}`,
    ]
      .filter(Boolean)
      .join(' ');
    this.o.log(
      `${rec.decision} ${what} alert=${rec.alertname ?? '?'} fingerprint=${rec.fingerprint ?? '?'}${rec.reason ? `: ${rec.reason}` : ''}`,
    );
  }

  /** While something is held, decide again every few seconds (the hourly budget frees up by time alone). */
  private schedulePump(): void {
    if (this.pumpTimer || this.stopping) return;
    this.pumpTimer = setInterval(() => this.apply(this.policy.pump()), PUMP_MS);
    this.pumpTimer.unref();
  }

  /** At most 20 lines a minute per response code; the rest are counted and summed up. */
  private logRejected(code: number, line: string): void {
    const now = Date.now();
    const k = String(code);
    let l = this.logLimit.get(k);
    if (!l || now - l.since > 60_000) {
      if (l?.dropped) this.o.log(`${l.dropped} more ${k} responses in the last minute were not logged`);
      l = { since: now, n: 0, dropped: 0 };
      this.logLimit.set(k, l);
    }
    if (l.n++ < 20) this.o.log(`refused: ${line}`);
    else l.dropped++;
  }
}

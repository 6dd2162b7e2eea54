/**
 * Test harness: the real Prometheus, Alertmanager and node_exporter (Debian packages prometheus 2.42,
 * prometheus-alertmanager 0.25, prometheus-node-exporter 1.5) on loopback, each on a free port, all state under a
 * directory the caller gives. The Debian services are never touched (no systemd, nothing under /etc/prometheus or
 * /var/lib/prometheus).
 *
 *   import { startMonitoring } from './harness/monitoring.js';
 *   const m = await startMonitoring({ dir, ruleFiles: [rules], webhookUrl: 'http://127.0.0.1:PORT/alertmanager' });
 *   // write DIR.prom files atomically into m.textfileDir (tmp name not ending in .prom, then rename)
 *   await m.alerts('ContainerdUnhealthy');   // [{ labels: { alertname, host, ... }, state: 'firing' }]
 *   await m.query('up');                     // [{ metric: { job, instance, ... }, value: [1700000000.123, '1'] }]
 *   await m.stop();                          // SIGTERM by PID, SIGKILL after a deadline, waits for exit (also at exit)
 *
 * Started in this order: Alertmanager and node_exporter (in parallel), then Prometheus, which scrapes node_exporter
 * (job "node") and the extraScrape targets, evaluates ruleFiles and sends alerts to that Alertmanager. Alertmanager
 * sends every alert to webhookUrl (send_resolved, max_alerts 0), grouped by [alertname, host]: one host per
 * notification. node_exporter runs only its textfile collector.
 *
 * Under dir: textfile/ (node_exporter's textfile directory), alertmanager/{alertmanager.yml,data/}, prometheus/
 * {prometheus.yml,data/}, and one log per server (alertmanager.log, node-exporter.log, prometheus.log: stdout and
 * stderr). A server is ready when its log says it listens on its port (the port is then ours, not another
 * process's) and it answers 200 (Prometheus and Alertmanager GET /-/ready, node_exporter GET /metrics). A port
 * taken between the pick and the bind (another test file) is retried with a new port. startMonitoring() returns
 * once the pipeline is live: Prometheus lists the Alertmanager as active and has scraped node_exporter (about 5 s:
 * Prometheus applies service discovery at most every 5 s, and drops alerts while it knows no Alertmanager).
 * With util-linux's setpriv the servers also get SIGKILL when this process dies without running its exit handlers.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import { dump } from 'js-yaml';
import { procStartTime, registerCleanup } from './netns.js';
import { pollSync, refuseInUnitTier, waitFor } from './wait.js';

export interface MonitoringOptions {
  /** Work dir (created if missing); configs, data and logs go under it. */
  dir: string;
  /** Absolute paths of Prometheus rule files to load. */
  ruleFiles: string[];
  /** Alertmanager webhook receiver URL for every alert. */
  webhookUrl: string;
  /** When set: http_config.authorization.credentials_file of the webhook (Authorization: Bearer <file content>). */
  webhookTokenFile?: string;
  /** Alertmanager's group_by (default ['alertname', 'host']). */
  groupBy?: string[];
  /** Default '1s'. */
  groupWait?: string;
  /** Default '2s'. */
  groupInterval?: string;
  /** Default '1h'. */
  repeatInterval?: string;
  /** Default '1s' (also evaluation_interval). */
  scrapeInterval?: string;
  /** More scrape jobs (e.g. runbook serve's /metrics with its bearer token file). target is HOST:PORT. */
  extraScrape?: Array<{ job: string; target: string; path?: string; bearerTokenFile?: string }>;
}

export interface Monitoring {
  /** node_exporter --collector.textfile.directory */
  textfileDir: string;
  prometheusUrl: string;
  alertmanagerUrl: string;
  nodeExporterUrl: string;
  /** PIDs of Prometheus, Alertmanager and node_exporter. */
  pids: number[];
  /** Active alerts in Prometheus (GET /api/v1/alerts), filtered by alertname. */
  alerts(name?: string): Promise<Array<{ labels: Record<string, string>; state: string }>>;
  /** Instant query result vector. */
  query(expr: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>;
  /** Idempotent; kills by PID and waits. */
  stop(): Promise<void>;
}

/** The binaries, first name found on PATH wins (Debian's names first, then upstream's). */
const BINARIES = {
  prometheus: ['prometheus'],
  alertmanager: ['prometheus-alertmanager', 'alertmanager'],
  nodeExporter: ['prometheus-node-exporter', 'node_exporter'],
  promtool: ['promtool'],
  amtool: ['amtool'],
} as const;

const SEARCH_PATH = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/bin', '/usr/bin', '/usr/sbin', '/bin'].filter(Boolean);

function which(names: readonly string[]): string | undefined {
  for (const n of names) {
    for (const d of SEARCH_PATH) {
      const p = join(d, n);
      try {
        if (statSync(p).isFile()) return p;
      } catch {
        /* not here */
      }
    }
  }
  return undefined;
}

/** Binaries not installed (of prometheus, prometheus-alertmanager, prometheus-node-exporter, promtool, amtool). */
export function monitoringMissing(): string[] {
  return Object.values(BINARIES)
    .filter((names) => !which(names))
    .map((names) => names[0]);
}

/** How long a server may take to be ready (the machine may be 3x slower than a laptop, with every core busy). */
const READY_TIMEOUT_MS = 60_000;
/** SIGTERM, then SIGKILL after this. */
const STOP_TIMEOUT_MS = 30_000;
const PORT_ATTEMPTS = 6;

interface Proc {
  name: string;
  child: ChildProcess;
  pid: number;
  /** /proc start time of pid: a pid is only signalled while it is still that process. */
  pidStart?: string;
  logFile: string;
  exited: Promise<void>;
  gone: boolean;
}

class PortInUse extends Error {}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Gone, or a zombie (killed; exit-time cleanup cannot reap it, its parent's exit will). */
function deadOrZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

function readFrom(file: string, offset: number): string {
  try {
    return readFileSync(file).subarray(offset).toString('utf8');
  } catch {
    return '';
  }
}

function tailOf(text: string, lines = 15): string {
  const t = text.trim();
  return t ? t.split('\n').slice(-lines).join('\n') : '(empty log)';
}

async function httpStatus(url: string): Promise<number> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(5_000) });
    await r.arrayBuffer();
    return r.status;
  } catch {
    return 0;
  }
}

async function apiGet<T>(base: string, path: string): Promise<T> {
  const r = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(15_000) });
  const text = await r.text();
  let body: { status?: string; data?: T; error?: string; errorType?: string };
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`GET ${base}${path}: HTTP ${r.status}, not JSON: ${text.slice(0, 300)}`);
  }
  if (!r.ok || body.status !== 'success') {
    throw new Error(`GET ${base}${path}: HTTP ${r.status} ${body.errorType ?? ''} ${body.error ?? text.slice(0, 300)}`);
  }
  return body.data as T;
}

export async function startMonitoring(o: MonitoringOptions): Promise<Monitoring> {
  refuseInUnitTier('startMonitoring()');
  const missing = monitoringMissing();
  const bins = {
    prometheus: which(BINARIES.prometheus),
    alertmanager: which(BINARIES.alertmanager),
    nodeExporter: which(BINARIES.nodeExporter),
  };
  if (!bins.prometheus || !bins.alertmanager || !bins.nodeExporter) {
    throw new Error(
      `startMonitoring(): not installed: ${missing.join(', ')} (Debian: apt-get install prometheus prometheus-alertmanager prometheus-node-exporter)`,
    );
  }
  for (const f of o.ruleFiles) {
    if (!f.startsWith('/')) throw new Error(`startMonitoring(): rule file ${f} is not an absolute path`);
    if (!existsSync(f)) throw new Error(`startMonitoring(): rule file ${f} does not exist`);
  }
  const si = o.scrapeInterval ?? '1s';
  const dir = o.dir;
  const textfileDir = join(dir, 'textfile');
  const amDir = join(dir, 'alertmanager');
  const promDir = join(dir, 'prometheus');
  for (const d of [dir, textfileDir, amDir, join(amDir, 'data'), promDir, join(promDir, 'data')]) mkdirSync(d, { recursive: true });
  // setpriv execs the server (same PID) with PR_SET_PDEATHSIG: it dies with us even if we are SIGKILLed.
  const setpriv = which(['setpriv']);

  const procs: Proc[] = [];
  let stopping: Promise<void> | undefined;

  const killSync = (p: Proc, sig: NodeJS.Signals): void => {
    if (p.gone || procStartTime(p.pid) !== p.pidStart) return;
    try {
      process.kill(p.pid, sig);
    } catch {
      /* gone */
    }
  };
  const stopSync = (): void => {
    for (const p of procs) killSync(p, 'SIGKILL');
    pollSync(() => procs.every((p) => p.gone || deadOrZombie(p.pid)), 5_000);
  };
  const unregister = registerCleanup(stopSync);

  /** Spawns one server and waits until it is ready; a port taken meanwhile throws PortInUse. */
  async function spawnReady(name: string, bin: string, args: string[], port: number, readyPath: string): Promise<Proc> {
    const logFile = join(dir, `${name}.log`);
    const offset = existsSync(logFile) ? statSync(logFile).size : 0;
    const fd = openSync(logFile, 'a');
    let child: ChildProcess;
    try {
      const [cmd, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', bin, ...args]] : [bin, args];
      child = spawn(cmd, argv, { stdio: ['ignore', fd, fd], cwd: dir, env: { ...process.env, LANG: 'C' } });
    } finally {
      closeSync(fd);
    }
    const p: Proc = {
      name,
      child,
      pid: child.pid ?? 0,
      logFile,
      gone: false,
      exited: new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        // not started at all (no pid): no 'exit' follows the 'error'
        child.once('error', () => {
          if (child.pid === undefined) resolve();
        });
      }),
    };
    let spawnError: Error | undefined;
    child.once('error', (e) => {
      spawnError = e;
    });
    void p.exited.then(() => {
      p.gone = true;
    });
    if (p.pid) {
      p.pidStart = procStartTime(p.pid);
      procs.push(p);
    }
    const log = () => readFrom(logFile, offset);
    const url = `http://127.0.0.1:${port}${readyPath}`;
    const listening = new RegExp(`msg="Listening on" address=127\\.0\\.0\\.1:${port}\\b`);
    const what = `${name} to log that it listens on 127.0.0.1:${port} and answer 200 on GET ${url}`;
    const detail = () => `${name} (pid ${p.pid}) log ${logFile}, last lines:\n${tailOf(log())}`;
    try {
      await waitFor(
        async () => {
          if (spawnError) throw new Error(`${name}: cannot start ${bin}: ${spawnError.message}`);
          if (p.gone) {
            const text = log();
            if (/address already in use/.test(text)) throw new PortInUse(`${name}: port ${port} is taken`);
            throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}) while waiting for ${what}: ${detail()}`);
          }
          return listening.test(log()) && (await httpStatus(url)) === 200;
        },
        {
          what,
          timeoutMs: READY_TIMEOUT_MS,
          intervalMs: 50,
          detail,
        },
      );
    } catch (e) {
      killSync(p, 'SIGKILL');
      await p.exited;
      throw e;
    }
    return p;
  }

  /** Picks a free port, writes the config for it, starts; again with another port when it was taken meanwhile. */
  async function start(name: string, setup: (port: number) => { bin: string; args: string[]; readyPath: string }): Promise<[Proc, number]> {
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const s = setup(port);
      try {
        return [await spawnReady(name, s.bin, s.args, port, s.readyPath), port];
      } catch (e) {
        if (e instanceof PortInUse && attempt < PORT_ATTEMPTS) continue;
        throw e;
      }
    }
  }

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const term = async (p: Proc): Promise<void> => {
        killSync(p, 'SIGTERM');
        const timer = setTimeout(() => killSync(p, 'SIGKILL'), STOP_TIMEOUT_MS);
        await p.exited;
        clearTimeout(timer);
      };
      // Prometheus first (it would keep sending to a stopped Alertmanager), then the others.
      const prom = procs.filter((p) => p.name === 'prometheus');
      await Promise.all(prom.map(term));
      await Promise.all(procs.filter((p) => !prom.includes(p)).map(term));
      unregister();
    })();
    return stopping;
  };

  try {
    const [[am, amPort], [ne, nePort]] = await Promise.all([
      start('alertmanager', (port) => {
        const webhook: Record<string, unknown> = { url: o.webhookUrl, send_resolved: true, max_alerts: 0 };
        if (o.webhookTokenFile) webhook.http_config = { authorization: { type: 'Bearer', credentials_file: o.webhookTokenFile } };
        const config = {
          route: {
            receiver: 'webhook',
            group_by: o.groupBy ?? ['alertname', 'host'],
            group_wait: o.groupWait ?? '1s',
            group_interval: o.groupInterval ?? '2s',
            repeat_interval: o.repeatInterval ?? '1h',
          },
          receivers: [{ name: 'webhook', webhook_configs: [webhook] }],
        };
        const file = join(amDir, 'alertmanager.yml');
        writeFileSync(file, dump(config));
        return {
          bin: bins.alertmanager!,
          args: [
            `--config.file=${file}`,
            `--storage.path=${join(amDir, 'data')}`,
            `--web.listen-address=127.0.0.1:${port}`,
            `--web.external-url=http://127.0.0.1:${port}/`,
            '--cluster.listen-address=',
            '--log.level=debug',
          ],
          readyPath: '/-/ready',
        };
      }),
      start('node-exporter', (port) => ({
        bin: bins.nodeExporter!,
        args: [
          '--collector.disable-defaults',
          '--collector.textfile',
          `--collector.textfile.directory=${textfileDir}`,
          `--web.listen-address=127.0.0.1:${port}`,
        ],
        readyPath: '/metrics',
      })),
    ]);
    const [prom, promPort] = await start('prometheus', (port) => {
      const config = {
        global: { scrape_interval: si, evaluation_interval: si },
        rule_files: o.ruleFiles,
        alerting: { alertmanagers: [{ static_configs: [{ targets: [`127.0.0.1:${amPort}`] }] }] },
        scrape_configs: [
          { job_name: 'node', static_configs: [{ targets: [`127.0.0.1:${nePort}`] }] },
          ...(o.extraScrape ?? []).map((x) => ({
            job_name: x.job,
            metrics_path: x.path ?? '/metrics',
            ...(x.bearerTokenFile ? { authorization: { type: 'Bearer', credentials_file: x.bearerTokenFile } } : {}),
            static_configs: [{ targets: [x.target] }],
          })),
        ],
      };
      const file = join(promDir, 'prometheus.yml');
      writeFileSync(file, dump(config));
      return {
        bin: bins.prometheus!,
        args: [
          `--config.file=${file}`,
          `--storage.tsdb.path=${join(promDir, 'data')}`,
          `--web.listen-address=127.0.0.1:${port}`,
          `--web.external-url=http://127.0.0.1:${port}/`,
          // Debian's defaults point at /etc/prometheus (console templates): nothing of it is needed
          `--web.console.templates=${join(promDir, 'consoles')}`,
          `--web.console.libraries=${join(promDir, 'console_libraries')}`,
        ],
        readyPath: '/-/ready',
      };
    });

    const prometheusUrl = `http://127.0.0.1:${promPort}`;
    // Ready is not enough: Prometheus applies service discovery results at most every 5 s, and drops the alerts
    // it has to send while it knows no Alertmanager (sent again only after --rules.alert.resend-delay, 1m). So
    // wait until the pipeline is live: the Alertmanager is active and node_exporter has been scraped.
    await waitFor(
      async () => {
        if (prom.gone || am.gone || ne.gone) {
          const dead = [prom, am, ne].filter((p) => p.gone);
          throw new Error(
            `${dead.map((p) => p.name).join(', ')} exited after it was ready: ${dead.map((p) => `${p.logFile}:\n${tailOf(readFrom(p.logFile, 0))}`).join('\n')}`,
          );
        }
        try {
          const ams = await apiGet<{ activeAlertmanagers: Array<{ url: string }> }>(prometheusUrl, '/api/v1/alertmanagers');
          const tg = await apiGet<{ activeTargets: Array<{ labels: Record<string, string>; health: string }> }>(
            prometheusUrl,
            '/api/v1/targets?state=active',
          );
          return (
            ams.activeAlertmanagers.some((a) => a.url.startsWith(`http://127.0.0.1:${amPort}/`)) &&
            tg.activeTargets.some((t) => t.labels.job === 'node' && t.health === 'up')
          );
        } catch {
          return false;
        }
      },
      {
        what: `Prometheus to use its Alertmanager 127.0.0.1:${amPort} (GET /api/v1/alertmanagers) and to have scraped node_exporter 127.0.0.1:${nePort} (job node up in /api/v1/targets)`,
        timeoutMs: READY_TIMEOUT_MS,
        intervalMs: 100,
        detail: () => `prometheus log ${prom.logFile}, last lines:\n${tailOf(readFrom(prom.logFile, 0))}`,
      },
    );
    return {
      textfileDir,
      prometheusUrl,
      alertmanagerUrl: `http://127.0.0.1:${amPort}`,
      nodeExporterUrl: `http://127.0.0.1:${nePort}`,
      pids: [prom.pid, am.pid, ne.pid],
      async alerts(name) {
        const data = await apiGet<{ alerts: Array<{ labels: Record<string, string>; state: string }> }>(prometheusUrl, '/api/v1/alerts');
        return data.alerts
          .filter((a) => name === undefined || a.labels.alertname === name)
          .map((a) => ({ labels: a.labels, state: a.state }));
      },
      async query(expr) {
        const data = await apiGet<{ resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> }>(
          prometheusUrl,
          `/api/v1/query?query=${encodeURIComponent(expr)}`,
        );
        if (data.resultType !== 'vector') throw new Error(`query ${expr}: result type ${data.resultType}, not vector`);
        return data.result;
      },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/**
 * The shipped monitoring files (monitoring/: Prometheus rules, Prometheus and Alertmanager examples) checked by the
 * real promtool and amtool, the rules' unit tests (test/fixtures/monitoring/containerd.rules.test.yml), and the
 * monitoring harness (test/harness/monitoring.ts) with the real Prometheus, Alertmanager and node_exporter: a
 * runbook.prom written into the textfile directory makes Alertmanager post ContainerdUnhealthy for the failed host
 * (and only it) to a webhook, then the resolved notification once the host is ok again.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Monitoring, monitoringMissing, startMonitoring } from './harness/monitoring.js';
import { waitFor } from './harness/wait.js';

const REPO = new URL('..', import.meta.url).pathname;
const RULES = join(REPO, 'monitoring/containerd.rules.yml');
const PROM_EXAMPLE = join(REPO, 'monitoring/prometheus.example.yml');
const TOKEN = 'monitoring-test-token-0123456789abcdef';
/** Notifications take a few seconds here; the deadline is for a machine 3x slower with every core busy. */
const NOTIFY_TIMEOUT_MS = 120_000;

before(() => {
  const missing = monitoringMissing();
  assert.deepEqual(
    missing,
    [],
    `not installed: ${missing.join(', ')} (Debian: apt-get install prometheus prometheus-alertmanager prometheus-node-exporter)`,
  );
});

function check(cmd: string, args: string[], cwd = REPO): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 120_000 });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} (in ${cwd}) exited ${r.status ?? r.signal ?? r.error?.message}:\n${out}`);
  return out;
}

describe('monitoring files', () => {
  test('promtool check rules monitoring/containerd.rules.yml', () => {
    const out = check('promtool', ['check', 'rules', 'monitoring/containerd.rules.yml']);
    assert.match(out, /SUCCESS: 7 rules found/);
  });

  test('promtool test rules test/fixtures/monitoring/containerd.rules.test.yml', () => {
    const out = check('promtool', ['test', 'rules', 'test/fixtures/monitoring/containerd.rules.test.yml']);
    assert.match(out, /SUCCESS/);
    assert.doesNotMatch(out, /FAILED/);
  });

  test('promtool check config monitoring/prometheus.example.yml', () => {
    // The whole check also stats the scrape credentials file (/etc/runbook/token, not on a test machine) and
    // loads the rule files: check the file as shipped for syntax, and a copy next to the rules with the
    // credentials file pointing at an existing token completely (rules included).
    check('promtool', ['check', 'config', '--syntax-only', 'monitoring/prometheus.example.yml']);
    const dir = mkdtempSync(join(tmpdir(), 'rb-promcheck-'));
    const text = readFileSync(PROM_EXAMPLE, 'utf8');
    assert.ok(text.includes('credentials_file: /etc/runbook/token'), 'the example reads the token from /etc/runbook/token');
    writeFileSync(join(dir, 'token'), `${TOKEN}\n`, { mode: 0o600 });
    writeFileSync(join(dir, 'prometheus.yml'), text.replaceAll('/etc/runbook/token', join(dir, 'token')));
    copyFileSync(RULES, join(dir, 'containerd.rules.yml'));
    const out = check('promtool', ['check', 'config', 'prometheus.yml'], dir);
    assert.match(out, /SUCCESS: 7 rules found/, 'the rule file resolves next to the config');
  });

  test('amtool check-config monitoring/alertmanager.example.yml', () => {
    const out = check('amtool', ['check-config', 'monitoring/alertmanager.example.yml']);
    assert.match(out, /SUCCESS/);
  });
});

interface Received {
  at: number;
  body: WebhookBody;
}
interface WebhookAlert {
  status: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
  endsAt: string;
  generatorURL: string;
  fingerprint: string;
}
interface WebhookBody {
  version: string;
  status: string;
  receiver: string;
  groupKey: string;
  truncatedAlerts: number;
  groupLabels: Record<string, string>;
  commonLabels: Record<string, string>;
  commonAnnotations: Record<string, string>;
  externalURL: string;
  alerts: WebhookAlert[];
}

describe('monitoring harness: real Prometheus, Alertmanager, node_exporter', () => {
  let work: string;
  let mon: Monitoring | undefined;
  let server: Server;
  let webhookPort = 0;
  const received: Received[] = [];
  const refused: string[] = [];

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'rb-monitoring-'));
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const auth = req.headers.authorization;
        if (req.method !== 'POST' || req.url !== '/alertmanager' || auth !== `Bearer ${TOKEN}`) {
          refused.push(`${req.method} ${req.url} authorization=${auth ?? '(none)'}`);
          res.writeHead(401).end();
          return;
        }
        try {
          received.push({ at: Date.now(), body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as WebhookBody });
          res.writeHead(200).end();
        } catch (e) {
          refused.push(`unparseable body: ${e instanceof Error ? e.message : String(e)}`);
          res.writeHead(400).end();
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const a = server.address();
    webhookPort = typeof a === 'object' && a ? a.port : 0;
  });

  after(async () => {
    const pids = mon?.pids ?? [];
    await mon?.stop();
    await mon?.stop(); // idempotent
    await new Promise<void>((resolve) => server.close(() => resolve()));
    for (const pid of pids) {
      let alive = true;
      try {
        process.kill(pid, 0);
      } catch {
        alive = false;
      }
      assert.ok(!alive, `pid ${pid} is gone after stop()`);
    }
  });

  const unhealthy = (body: WebhookBody, host: string, status: 'firing' | 'resolved') =>
    body.alerts.some((a) => a.labels.alertname === 'ContainerdUnhealthy' && a.labels.host === host && a.status === status);

  test('ContainerdUnhealthy reaches the webhook for the failed host only, then resolves', async (t) => {
    const tokenFile = join(work, 'token');
    writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    const t0 = Date.now();
    mon = await startMonitoring({
      dir: join(work, 'mon'),
      ruleFiles: [RULES],
      webhookUrl: `http://127.0.0.1:${webhookPort}/alertmanager`,
      webhookTokenFile: tokenFile,
    });
    const m = mon;
    t.diagnostic(`servers ready in ${((Date.now() - t0) / 1000).toFixed(1)} s: pids ${m.pids.join(' ')}`);
    assert.equal(m.pids.length, 3);

    const prom = join(m.textfileDir, 'runbook.prom');
    const writeProm = (hosts: Record<string, string>): number => {
      const now = Date.now();
      const lines = [
        '# HELP runbook_last_run_timestamp_seconds Unix time the last run of this runbook ended.',
        '# TYPE runbook_last_run_timestamp_seconds gauge',
        `runbook_last_run_timestamp_seconds{runbook="containerd-health"} ${(now / 1000).toFixed(3)}`,
        '# HELP runbook_last_run_host_status Final status of each host in the last run of this runbook that included it (1, labelled by status).',
        '# TYPE runbook_last_run_host_status gauge',
        ...Object.entries(hosts).map(([h, st]) => `runbook_last_run_host_status{runbook="containerd-health",host="${h}",status="${st}"} 1`),
        '',
      ];
      // Atomically, like runbook --metrics-file: the collector reads only *.prom, never a half-written file.
      const tmp = join(m.textfileDir, `.runbook.prom.tmp-${process.pid}`);
      writeFileSync(tmp, lines.join('\n'));
      renameSync(tmp, prom);
      return now;
    };
    const detail = async () => {
      let alerts = '';
      try {
        alerts = JSON.stringify(await m.alerts());
      } catch (e) {
        alerts = `(alerts unavailable: ${e instanceof Error ? e.message : String(e)})`;
      }
      const am = readFileSync(join(work, 'mon', 'alertmanager.log'), 'utf8')
        .trim()
        .split('\n')
        .slice(-8)
        .join('\n');
      return `webhook got ${received.length} bodies: ${JSON.stringify(received.map((r) => r.body))}; refused: ${JSON.stringify(refused)}; Prometheus alerts: ${alerts}; alertmanager.log:\n${am}`;
    };

    const wrote = writeProm({ n1: 'ok', n2: 'failed' });
    const firing = await waitFor(() => received.find((r) => r.body.status === 'firing' && unhealthy(r.body, 'n2', 'firing')), {
      what: 'a firing ContainerdUnhealthy notification for host n2 at the webhook',
      timeoutMs: NOTIFY_TIMEOUT_MS,
      intervalMs: 50,
      detail,
    });
    const toFiring = (firing.at - wrote) / 1000;
    t.diagnostic(`textfile write -> firing webhook: ${toFiring.toFixed(1)} s`);
    console.log(`monitoring: textfile write -> firing webhook ${toFiring.toFixed(1)} s`);
    t.diagnostic(`firing body: ${JSON.stringify(firing.body)}`);

    const b = firing.body;
    assert.equal(b.version, '4');
    assert.equal(b.receiver, 'webhook');
    assert.deepEqual(b.groupLabels, { alertname: 'ContainerdUnhealthy', host: 'n2' });
    assert.equal(b.alerts.length, 1, 'one host per notification (group_by alertname, host)');
    const a = b.alerts[0];
    assert.equal(a.labels.severity, 'critical');
    assert.equal(a.labels.status, 'failed');
    assert.equal(a.labels.runbook, 'containerd-health');
    assert.equal(a.labels.job, 'node');
    assert.match(a.annotations.summary, /\bn2\b/);
    assert.match(a.annotations.description, /runbook serve repairs it/);
    assert.deepEqual(refused, [], 'every request carried the bearer token');

    // Prometheus evaluated n1 and n2 from the same scrape: only n2 is active.
    const active = await m.alerts('ContainerdUnhealthy');
    assert.deepEqual(
      active.map((x) => [x.labels.host, x.state]),
      [['n2', 'firing']],
    );
    const series = await m.query('runbook_last_run_host_status{runbook="containerd-health"}');
    assert.deepEqual(series.map((s) => `${s.metric.host}=${s.metric.status}`).sort(), ['n1=ok', 'n2=failed']);

    const healed = writeProm({ n1: 'ok', n2: 'ok' });
    const resolved = await waitFor(() => received.find((r) => r.at >= healed && unhealthy(r.body, 'n2', 'resolved')), {
      what: 'the resolved ContainerdUnhealthy notification for host n2 at the webhook',
      timeoutMs: NOTIFY_TIMEOUT_MS,
      intervalMs: 50,
      detail,
    });
    const toResolved = (resolved.at - healed) / 1000;
    t.diagnostic(`textfile rewrite (n2 ok) -> resolved webhook: ${toResolved.toFixed(1)} s`);
    console.log(`monitoring: textfile rewrite -> resolved webhook ${toResolved.toFixed(1)} s`);
    t.diagnostic(`resolved body: ${JSON.stringify(resolved.body)}`);
    assert.equal(resolved.body.status, 'resolved');
    assert.equal(resolved.body.version, '4');
    assert.deepEqual(resolved.body.groupLabels, { alertname: 'ContainerdUnhealthy', host: 'n2' });
    assert.notEqual(resolved.body.alerts[0].endsAt, '0001-01-01T00:00:00Z', 'a resolved alert carries its end');

    // Not at the firing time, nor since: n1 (ok throughout) never appeared in a ContainerdUnhealthy notification.
    const n1 = received.filter((r) => r.body.alerts.some((x) => x.labels.alertname === 'ContainerdUnhealthy' && x.labels.host === 'n1'));
    assert.deepEqual(n1, [], 'no ContainerdUnhealthy notification for n1');
    assert.deepEqual(refused, []);
  });
});

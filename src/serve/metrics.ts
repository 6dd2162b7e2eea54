/** `GET /metrics` of serve: Prometheus text exposition of its counters and the policy's state. */
import { escapeLabel } from '../report/metrics.js';
import { DECISIONS } from './policy.js';
import type { Policy } from './policy.js';

export class Counters {
  readonly decisions = new Map<string, number>();
  readonly requests = new Map<string, number>();
  readonly runs = new Map<string, number>();
  readonly reloads = new Map<string, number>();
  static inc(m: Map<string, number>, key: string): void {
    m.set(key, (m.get(key) ?? 0) + 1);
  }
}

const lbl = (l: Record<string, string>) => {
  const k = Object.keys(l);
  return k.length ? `{${k.map((x) => `${x}="${escapeLabel(l[x])}"`).join(',')}}` : '';
};

export function renderServeMetrics(c: Counters, p: Policy, routes: string[], startedAt: number): string {
  const out: string[] = [];
  const fam = (name: string, type: string, help: string, samples: Array<[Record<string, string>, number]>) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [l, v] of samples) out.push(`${name}${lbl(l)} ${Number.isInteger(v) ? v : v.toFixed(3)}`);
  };
  const split = (m: Map<string, number>, names: string[]) =>
    [...m.entries()].map(
      ([k, v]) => [Object.fromEntries(k.split('\0').map((x, i) => [names[i], x])), v] as [Record<string, string>, number],
    );
  // Every decision of every route is exposed from the start (0), so rate() and absent() work.
  for (const r of routes) for (const d of DECISIONS) if (!c.decisions.has(`${d}\0${r}`)) c.decisions.set(`${d}\0${r}`, 0);
  fam(
    'runbook_serve_decisions_total',
    'counter',
    'Decisions on received alerts, by decision and route.',
    split(c.decisions, ['decision', 'route']),
  );
  fam('runbook_serve_requests_total', 'counter', 'HTTP requests by response code.', split(c.requests, ['code']));
  fam('runbook_serve_runs_total', 'counter', 'Remediation runs ended, by route and host status.', split(c.runs, ['route', 'status']));
  fam('runbook_serve_config_reloads_total', 'counter', 'SIGHUP reloads by result (ok, refused).', split(c.reloads, ['result']));
  fam('runbook_serve_runs_in_flight', 'gauge', 'Remediation runs in flight now.', [[{}, p.inFlight]]);
  const v = p.view();
  const host = (e: (typeof v.entries)[number]) => ({ route: e.route.name, runbook: e.route.runbook.name, host: e.host });
  fam(
    'runbook_serve_last_run_timestamp_seconds',
    'gauge',
    'Unix time the last remediation run of this replica ended, per host.',
    v.entries.filter((e) => e.lastEnd).map((e) => [host(e), e.lastEnd!.at / 1000]),
  );
  fam(
    'runbook_serve_last_run_status',
    'gauge',
    'Host status of the last remediation run of this replica (1, labelled by status).',
    v.entries.filter((e) => e.lastEnd).map((e) => [{ ...host(e), status: e.lastEnd!.status }, 1]),
  );
  const now = Date.now();
  fam(
    'runbook_serve_needs_attention',
    'gauge',
    'Hosts left for a human (attempts exhausted or the run said needs-attention).',
    v.entries.filter((e) => e.attentionUntil !== undefined && now < e.attentionUntil).map((e) => [host(e), 1]),
  );
  fam(
    'runbook_serve_approval_needed',
    'gauge',
    'Hosts whose destructive remediation waits for a human (route not unattended).',
    v.entries.filter((e) => e.phase === 'pending' && e.hold === 'approval_needed').map((e) => [host(e), 1]),
  );
  fam(
    'runbook_serve_brake_engaged',
    'gauge',
    'A brake holds alerts of the route (1) or not (0).',
    v.brakes.map((b) => [{ route: b.route, brake: b.brake }, b.engaged ? 1 : 0]),
  );
  fam(
    'runbook_serve_firing_hosts',
    'gauge',
    'Hosts of the route with a firing alert.',
    v.firing.map((f) => [{ route: f.route }, f.firing]),
  );
  fam(
    'runbook_serve_route_hosts',
    'gauge',
    'Inventory hosts the route may act on.',
    v.firing.map((f) => [{ route: f.route }, f.hosts]),
  );
  fam('runbook_serve_start_time_seconds', 'gauge', 'Unix time serve started.', [[{}, startedAt / 1000]]);
  fam('process_resident_memory_bytes', 'gauge', 'Resident memory of serve.', [[{}, process.memoryUsage.rss()]]);
  return `${out.join('\n')}\n`;
}

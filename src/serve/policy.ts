/**
 * What `serve` does with each alert: pure state, a clock, no I/O. The service feeds it alerts and
 * run outcomes and carries out what it returns (audit records to write, runs to start).
 *
 * Per runbook + host, one entry: firing or not, and idle / pending (held by a brake, waiting for a
 * slot or for approval) / running. Held entries are decided again whenever something changes
 * (pump); a decision is recorded when an alert arrives, and when a held entry's decision changes.
 * The on-host record (apply --cooldown/--max-attempts) stays the authority across replicas: what is
 * kept here only saves a connection when this replica already knows the answer.
 */
import { type Alert, fingerprintOf, hostOf, routeFor } from './alerts.js';
import type { RouteConfig, ServeConfig } from './config.js';

export const DECISIONS = [
  'run_started',
  'run_ended',
  'cooldown',
  'max_attempts',
  'queued',
  'brake_rate',
  'brake_unhealthy',
  'approval_needed',
  'in_flight',
  'locked',
  'resolved',
  'unknown_host',
  'no_route',
] as const;
export type Decision = (typeof DECISIONS)[number];
const HOLDS = new Set<Decision>(['queued', 'brake_rate', 'brake_unhealthy', 'approval_needed', 'locked']);
/** A host locked by another run (a health check, another replica's repair) is asked again this much later. */
export const LOCK_RETRY_MS = 15_000;

export interface DecisionRecord {
  decision: Decision;
  route?: string;
  runbook?: string;
  host?: string;
  alertname?: string;
  fingerprint?: string;
  labels?: Record<string, string>;
  reason?: string;
  status?: string;
  run_id?: string;
}

export interface StartRun {
  key: string;
  route: RouteConfig;
  host: string;
}

/** How a run ended, as its host-end says. */
export interface RunOutcome {
  status: string;
  code?: string;
  message?: string;
  runId?: string;
}

interface Entry {
  key: string;
  route: RouteConfig;
  host: string;
  alert: Alert;
  firing: boolean;
  lastSeen: number;
  phase: 'idle' | 'pending' | 'running';
  hold?: Decision;
  lastStart?: number;
  /** The start before the last one (restored when the last one found the host locked). */
  prevStart?: number;
  lockedUntil?: number;
  lastEnd?: { at: number; status: string };
  /** Left for a human until then (max attempts, or the run said needs-attention), or until resolved. */
  attentionUntil?: number;
}

export interface Result {
  records: DecisionRecord[];
  start: StartRun[];
  /** An alert named an unknown host or matched no route (the response is a 4xx). */
  rejected: boolean;
}

const HOUR = 3_600_000;

export class Policy {
  private readonly entries = new Map<string, Entry>();
  private readonly starts: number[] = [];
  private running = 0;

  constructor(
    private cfg: ServeConfig,
    private readonly now: () => number = Date.now,
  ) {}

  /** A reloaded config: entries keep their state under the route of the same name (or are dropped). */
  setConfig(cfg: ServeConfig): void {
    this.cfg = cfg;
    for (const [k, e] of this.entries) {
      const r = cfg.routes.find((x) => x.name === e.route.name && x.runbook.name === e.route.runbook.name);
      if (r) e.route = r;
      else if (e.phase !== 'running') this.entries.delete(k);
    }
  }

  get inFlight(): number {
    return this.running;
  }

  receive(alerts: Alert[], byAddress: Map<string, string[]>): Result {
    const out: Result = { records: [], start: [], rejected: false };
    this.forget();
    const now = this.now();
    const touched: Entry[] = [];
    for (const a of alerts) {
      const base = { alertname: a.labels.alertname, fingerprint: fingerprintOf(a), labels: a.labels };
      const route = routeFor(this.cfg.routes, a);
      if (!route) {
        out.rejected = true;
        out.records.push({ ...base, decision: 'no_route', reason: `no route for alert ${a.labels.alertname ?? '(no alertname)'}` });
        continue;
      }
      const h = hostOf(route, a, byAddress);
      if ('error' in h) {
        out.rejected = true;
        out.records.push({ ...base, decision: 'unknown_host', route: route.name, runbook: route.runbook.name, reason: h.error });
        continue;
      }
      const key = `${route.runbook.name}\0${h.host}`;
      let e = this.entries.get(key);
      if (!e) {
        e = { key, route, host: h.host, alert: a, firing: false, lastSeen: now, phase: 'idle' };
        this.entries.set(key, e);
      }
      e.route = route;
      e.alert = a;
      e.lastSeen = now;
      if (a.status === 'resolved') {
        e.firing = false;
        e.attentionUntil = undefined;
        if (e.phase === 'pending') e.phase = 'idle';
        e.hold = undefined;
        out.records.push(this.record(e, 'resolved'));
        continue;
      }
      e.firing = true;
      touched.push(e);
    }
    // Decided after the whole payload is in: a grouped notification counts all its hosts for the brake.
    for (const e of touched) this.decide(e, out, true);
    this.pumpInto(out);
    return out;
  }

  /** Held entries decided again (after a run ended, a reload, or as time passes). */
  pump(): Result {
    const out: Result = { records: [], start: [], rejected: false };
    this.forget();
    this.pumpInto(out);
    return out;
  }

  ended(key: string, o: RunOutcome): Result {
    const out: Result = { records: [], start: [], rejected: false };
    const e = this.entries.get(key);
    if (e) {
      this.running--;
      e.phase = 'idle';
      e.lastEnd = { at: this.now(), status: o.status };
      const decision: Decision =
        o.code === 'E_LOCKED'
          ? 'locked'
          : o.code === 'E_COOLDOWN'
            ? 'cooldown'
            : o.code === 'E_MAX_ATTEMPTS'
              ? 'max_attempts'
              : 'run_ended';
      if (decision === 'max_attempts' || o.status === 'needs-attention') e.attentionUntil = this.now() + e.route.maxAttempts.withinMs;
      out.records.push({ ...this.record(e, decision, o.message), status: o.status, ...(o.runId ? { run_id: o.runId } : {}) });
    }
    this.pumpInto(out);
    return out;
  }

  /** Stop: nothing held starts any more. */
  dropHeld(): number {
    let n = 0;
    for (const e of this.entries.values()) {
      if (e.phase !== 'pending') continue;
      e.phase = 'idle';
      e.hold = undefined;
      n++;
    }
    return n;
  }

  // ---------------------------------------------------------------------------------------------

  private pumpInto(out: Result): void {
    for (const e of this.entries.values()) if (e.phase === 'pending') this.decide(e, out, false);
  }

  private decide(e: Entry, out: Result, received: boolean): void {
    const now = this.now();
    const r = e.route;
    let d: Decision;
    let reason: string | undefined;
    if (e.phase === 'running') d = 'in_flight';
    else if (e.lockedUntil !== undefined && now < e.lockedUntil) {
      d = 'locked';
      reason = `another run holds the host lock; asked again ${Math.ceil((e.lockedUntil - now) / 1000)} s from now`;
    } else if (e.attentionUntil !== undefined && now < e.attentionUntil) {
      d = 'max_attempts';
      reason = `left for a human after the last run (${e.lastEnd?.status ?? 'max attempts'}); fix the host, or wait until the alert resolves`;
    } else if (e.lastStart !== undefined && now - e.lastStart < r.cooldownMs) {
      d = 'cooldown';
      reason = `${r.runbook.name} started on ${e.host} ${Math.round((now - e.lastStart) / 1000)} s ago; cooldown ${Math.round(r.cooldownMs / 1000)} s`;
    } else if (r.runbook.destructive && !r.unattended) {
      d = 'approval_needed';
      reason = `${r.runbook.name} is destructive and route ${r.name} does not say unattended: true; run it by hand`;
    } else if (this.unhealthy(r) > this.cfg.brake.maxUnhealthy) {
      d = 'brake_unhealthy';
      reason = `${this.firing(r)} of ${r.hosts.length} hosts of route ${r.name} are firing, above max_unhealthy ${Math.round(this.cfg.brake.maxUnhealthy * 100)}%: nothing runs automatically`;
    } else if (this.startsInLastHour() >= this.cfg.brake.maxPerHour) {
      d = 'brake_rate';
      reason = `${this.cfg.brake.maxPerHour} runs started in the last hour (max_per_hour)`;
    } else if (this.running >= this.cfg.brake.maxConcurrent) {
      d = 'queued';
      reason = `${this.running} run(s) in flight (max_concurrent ${this.cfg.brake.maxConcurrent}); it starts when one ends`;
    } else d = 'run_started';

    if (d === 'run_started') {
      e.phase = 'running';
      e.hold = undefined;
      e.prevStart = e.lastStart;
      e.lastStart = now;
      this.running++;
      this.starts.push(now);
      out.start.push({ key: e.key, route: r, host: e.host });
      out.records.push(this.record(e, d));
      return;
    }
    if (HOLDS.has(d)) {
      const changed = e.hold !== d;
      if (e.phase !== 'running') e.phase = 'pending';
      e.hold = d;
      if (received || changed) out.records.push(this.record(e, d, reason));
      return;
    }
    if (e.phase === 'pending') e.phase = 'idle';
    e.hold = undefined;
    if (received) out.records.push(this.record(e, d, reason));
  }

  private record(e: Entry, decision: Decision, reason?: string): DecisionRecord {
    return {
      decision,
      route: e.route.name,
      runbook: e.route.runbook.name,
      host: e.host,
      alertname: e.alert.labels.alertname,
      fingerprint: fingerprintOf(e.alert),
      labels: e.alert.labels,
      ...(reason ? { reason } : {}),
    };
  }

  private firing(r: RouteConfig): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.firing && e.route.name === r.name) n++;
    return n;
  }

  private unhealthy(r: RouteConfig): number {
    return r.hosts.length ? this.firing(r) / r.hosts.length : 0;
  }

  private startsInLastHour(): number {
    const cut = this.now() - HOUR;
    while (this.starts.length && this.starts[0] <= cut) this.starts.shift();
    return this.starts.length;
  }

  /** Alerts not heard of for forget_after are forgotten (Alertmanager re-sends firing ones every repeat_interval). */
  private forget(): void {
    const cut = this.now() - this.cfg.forgetAfterMs;
    for (const [k, e] of this.entries) {
      if (e.phase === 'running' || e.lastSeen > cut) continue;
      if (e.lastStart !== undefined && this.now() - e.lastStart < Math.max(e.route.cooldownMs, e.route.maxAttempts.withinMs)) {
        e.firing = false;
        if (e.phase === 'pending') e.phase = 'idle';
        continue;
      }
      this.entries.delete(k);
    }
  }

  /** For /metrics. */
  view(): {
    entries: Array<Readonly<Entry>>;
    brakes: Array<{ route: string; brake: string; engaged: boolean }>;
    firing: Array<{ route: string; firing: number; hosts: number }>;
  } {
    const entries = [...this.entries.values()];
    const brakes: Array<{ route: string; brake: string; engaged: boolean }> = [];
    const firing: Array<{ route: string; firing: number; hosts: number }> = [];
    for (const r of this.cfg.routes) {
      const held = (d: Decision) => entries.some((e) => e.route.name === r.name && e.phase === 'pending' && e.hold === d);
      brakes.push({ route: r.name, brake: 'unhealthy', engaged: held('brake_unhealthy') });
      brakes.push({ route: r.name, brake: 'rate', engaged: held('brake_rate') });
      brakes.push({ route: r.name, brake: 'concurrent', engaged: held('queued') });
      firing.push({ route: r.name, firing: this.firing(r), hosts: r.hosts.length });
    }
    return { entries, brakes, firing };
  }
}

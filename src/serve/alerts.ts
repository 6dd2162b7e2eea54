/** Alertmanager's webhook payload (version 4), checked: what `serve` reads of it and nothing more. */
import { z } from 'zod';
import type { RouteConfig } from './config.js';
import { matches } from './matchers.js';

const labels = z.record(z.string(), z.string());
const alert = z.object({
  status: z.enum(['firing', 'resolved']),
  labels,
  annotations: labels.optional(),
  startsAt: z.string().optional(),
  endsAt: z.string().optional(),
  fingerprint: z.string().max(64).optional(),
});
const payload = z.object({
  version: z.literal('4'),
  status: z.enum(['firing', 'resolved']),
  receiver: z.string().optional(),
  groupKey: z.string().optional(),
  alerts: z.array(alert).max(10_000),
});

export type Alert = z.infer<typeof alert>;

/** The alerts of a payload, or why it is not one (a 400). */
export function parsePayload(body: unknown): { alerts: Alert[] } | { error: string } {
  const r = payload.safeParse(body);
  if (r.success) return { alerts: r.data.alerts };
  const iss = r.error.issues[0];
  return { error: `not an Alertmanager webhook payload (version 4): ${iss.path.join('.') || 'body'}: ${iss.message}` };
}

/** The first route for this alert (alertname, then the route's matchers), as Alertmanager picks routes. */
export function routeFor(routes: RouteConfig[], a: Alert): RouteConfig | undefined {
  return routes.find((r) => a.labels.alertname === r.alert && matches(r.matchers, a.labels));
}

/** The inventory host an alert names (its host label, through host_regex), or why none. */
export function hostOf(route: RouteConfig, a: Alert, byAddress: Map<string, string[]>): { host: string } | { error: string } {
  const raw = a.labels[route.hostLabel];
  if (raw === undefined || raw === '') return { error: `the alert has no "${route.hostLabel}" label (the route's host_label)` };
  let name = raw;
  if (route.hostRegex) {
    const m = route.hostRegex.exec(raw);
    if (!m || m[1] === undefined) return { error: `"${raw}" does not match the route's host_regex` };
    name = m[1];
  }
  if (route.hosts.includes(name)) return { host: name };
  // An address (ansible_host) instead of an inventory name: only when exactly one host of the route has it.
  const by = (byAddress.get(name) ?? []).filter((h) => route.hosts.includes(h));
  if (by.length === 1) return { host: by[0] };
  if (by.length > 1)
    return { error: `"${name}" is the address of several hosts (${by.join(', ')}); label the alert with the inventory name` };
  return { error: `"${name}" is not a host of route ${route.name} (its runbook's hosts: and the route's hosts: in the inventory)` };
}

/** A stable id of an alert for the audit: Alertmanager's fingerprint, else its labels. */
export function fingerprintOf(a: Alert): string {
  if (a.fingerprint) return a.fingerprint;
  return Object.keys(a.labels)
    .sort()
    .map((k) => `${k}=${a.labels[k]}`)
    .join(',');
}

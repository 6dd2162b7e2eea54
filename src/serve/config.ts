/**
 * serve.yml: loaded and validated like a runbook (every problem at once, with file, path and line),
 * and everything it names checked before the service listens: the inventory, each route's runbook
 * and plan for every host of its pattern, the token files (not readable by others), the regexes.
 */
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { YAMLException } from 'js-yaml';
import { z } from 'zod';
import { parseDuration } from '../core/duration.js';
import { RunbookError, ValidationError, type ValidationIssue } from '../core/errors.js';
import { decodeUtf8 } from '../core/text.js';
import { connectionFor, loadInventory, selectHosts } from '../inventory/index.js';
import type { Inventory } from '../inventory/types.js';
import { createPlan } from '../plan/plan.js';
import { loadRunbook } from '../runbook/load.js';
import { type PositionMap, parseYamlWithPositions } from '../runbook/positions.js';
import { suggest, zodPath } from '../runbook/schema.js';
import type { Runbook } from '../runbook/types.js';
import { type Matcher, parseMatcher } from './matchers.js';

export interface RouteConfig {
  /** Label value of every metric and audit record of this route (default: the alert name). */
  name: string;
  alert: string;
  matchers: Matcher[];
  runbook: Runbook;
  hostLabel: string;
  hostRegex?: RegExp;
  /** Inventory hosts this route may act on (the runbook's hosts: narrowed by the route's hosts:). */
  hosts: string[];
  cooldownMs: number;
  maxAttempts: { count: number; withinMs: number };
  unattended: boolean;
}

export interface ServeConfig {
  file: string;
  listen: { host: string; port: number };
  inventoryFiles: string[];
  inventory: Inventory;
  stateDir?: string;
  audit?: string;
  knownHosts?: string;
  auth: { bearer?: Buffer; hmac?: Buffer };
  maxBodyBytes: number;
  forgetAfterMs: number;
  routes: RouteConfig[];
  brake: { maxConcurrent: number; maxPerHour: number; maxUnhealthy: number };
}

const duration = z.union([z.string(), z.number()]);
const routeSchema = z.strictObject({
  name: z.string().min(1).optional(),
  alert: z.string().min(1),
  matchers: z.array(z.string()).optional(),
  runbook: z.string().min(1),
  host_label: z.string().min(1),
  host_regex: z.string().optional(),
  hosts: z.string().min(1).optional(),
  cooldown: duration.optional(),
  max_attempts: z.strictObject({ count: z.number().int().min(1), within: duration }).optional(),
  unattended: z.boolean().optional(),
});
const schema = z.strictObject({
  listen: z.string(),
  inventory: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
  state_dir: z.string().min(1).optional(),
  audit: z.string().min(1).optional(),
  known_hosts: z.string().min(1).optional(),
  auth: z.strictObject({ bearer_token_file: z.string().min(1).optional(), hmac_secret_file: z.string().min(1).optional() }),
  max_body: z.union([z.string(), z.number().int().positive()]).optional(),
  forget_after: duration.optional(),
  routes: z.array(routeSchema).min(1),
  brake: z
    .strictObject({
      max_concurrent: z.number().int().min(1).optional(),
      max_per_hour: z.number().int().min(1).optional(),
      max_unhealthy: z.string().optional(),
    })
    .optional(),
});
type Raw = z.infer<typeof schema>;
const TOP = Object.keys(schema.shape);
const ROUTE = Object.keys(routeSchema.shape);

export const DEFAULTS = {
  cooldown: '30m',
  maxAttempts: { count: 3, within: '24h' },
  maxBody: 1 << 20,
  forgetAfter: '6h',
  brake: { maxConcurrent: 1, maxPerHour: 10, maxUnhealthy: '30%' },
};

/** Loads and checks `file`; throws ValidationError with every problem, or RunbookError if unreadable. */
export function loadServeConfig(file: string, cwd = process.cwd()): ServeConfig {
  const path = resolve(cwd, file);
  let source: string;
  try {
    source = decodeUtf8(readFileSync(path), path, 'serve config');
  } catch (err) {
    if (err instanceof RunbookError) throw err;
    throw new RunbookError(
      'E_SERVE_CONFIG',
      `cannot read the serve config ${path}: ${(err as Error).message}; check the path given to -c.`,
    );
  }
  const issues: ValidationIssue[] = [];
  let positions: PositionMap;
  let doc: unknown;
  try {
    const parsed = parseYamlWithPositions(source, file);
    positions = parsed.positions;
    doc = parsed.docs.length === 1 ? parsed.docs[0] : undefined;
  } catch (err) {
    if (!(err instanceof YAMLException)) throw err;
    const m = err.mark;
    throw new ValidationError([{ file, line: m ? m.line + 1 : undefined, message: `YAML syntax error: ${err.reason}` }]);
  }
  const add = (p: string, message: string, prefer: 'key' | 'value' = 'key') => {
    const pos = positions.find(p, prefer);
    issues.push({ file, path: p || undefined, line: pos?.line, column: pos?.column, message });
  };
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    add('', 'the file is not a serve config (a mapping with listen, inventory, auth and routes)');
    throw new ValidationError(issues);
  }
  const r = schema.safeParse(doc);
  if (!r.success) {
    for (const iss of r.error.issues) {
      const p = zodPath(iss.path);
      if (iss.code === 'unrecognized_keys') {
        const known = iss.path.length === 0 ? TOP : iss.path[0] === 'routes' && iss.path.length === 2 ? ROUTE : [];
        for (const k of iss.keys) {
          const close = suggest(k, known);
          add(p ? `${p}.${k}` : k, `unknown key "${k}"${close ? `; did you mean "${close}"?` : ''}`);
        }
      } else add(p, iss.message.replace(/^Invalid input: /, ''), 'value');
    }
    throw new ValidationError(issues);
  }
  const cfg = check(r.data, path, dirname(path), add);
  if (issues.length || !cfg) {
    issues.sort((a, b) => (a.line ?? 1e9) - (b.line ?? 1e9));
    throw new ValidationError(issues);
  }
  return cfg;
}

type Add = (path: string, message: string, prefer?: 'key' | 'value') => void;

function check(d: Raw, file: string, base: string, add: Add): ServeConfig | undefined {
  const listen = parseListen(d.listen);
  if (!listen) add('listen', `"${d.listen}" is not HOST:PORT (e.g. 127.0.0.1:9469, [::1]:9469)`, 'value');
  const auth = readAuth(d, base, add);
  const inventoryFiles = (Array.isArray(d.inventory) ? d.inventory : [d.inventory]).map((f) => resolve(base, f));
  let inventory: Inventory | undefined;
  try {
    inventory = loadInventory(inventoryFiles, { cwd: base });
  } catch (err) {
    add('inventory', `the inventory cannot be used: ${(err as Error).message.split('\n').join('; ')}`, 'value');
  }
  const dur = (p: string, v: string | number | undefined, dflt: string) => {
    const ms = parseDuration(v ?? dflt);
    if (ms === undefined || ms <= 0) add(p, `${JSON.stringify(v)} is not a duration (e.g. 30m, 24h, 1d)`, 'value');
    return ms ?? 0;
  };
  const names = new Set<string>();
  const routes: RouteConfig[] = [];
  d.routes.forEach((raw, i) => {
    const p = `routes[${i}]`;
    const name = raw.name ?? raw.alert;
    if (names.has(name)) add(`${p}.${raw.name ? 'name' : 'alert'}`, `a second route named "${name}"; give each route its own name:`);
    names.add(name);
    const matchers: Matcher[] = [];
    (raw.matchers ?? []).forEach((m, j) => {
      const parsed = parseMatcher(m);
      if (typeof parsed === 'string') add(`${p}.matchers[${j}]`, parsed, 'value');
      else matchers.push(parsed);
    });
    let hostRegex: RegExp | undefined;
    if (raw.host_regex !== undefined) {
      try {
        hostRegex = new RegExp(`^(?:${raw.host_regex})$`);
        if (!/\((?!\?)/.test(raw.host_regex)) add(`${p}.host_regex`, 'needs a capture group: its first group is the host name', 'value');
      } catch (err) {
        add(`${p}.host_regex`, `not a regular expression: ${(err as Error).message}`, 'value');
      }
    }
    const cooldownMs = dur(`${p}.cooldown`, raw.cooldown, DEFAULTS.cooldown);
    const withinMs = dur(`${p}.max_attempts.within`, raw.max_attempts?.within, DEFAULTS.maxAttempts.within);
    let runbook: Runbook | undefined;
    try {
      runbook = loadRunbook(raw.runbook, base);
    } catch (err) {
      add(`${p}.runbook`, `${(err as Error).message.split('\n').join('; ')}`, 'value');
    }
    let hosts: string[] = [];
    if (runbook && inventory) {
      try {
        hosts = selectHosts(inventory, raw.hosts, { cwd: base, hosts: runbook.hosts });
        checkPlan(runbook, inventory, hosts);
      } catch (err) {
        add(`${p}.${raw.hosts ? 'hosts' : 'runbook'}`, `${(err as Error).message.split('\n').join('; ')}`, 'value');
      }
    }
    if (runbook) {
      routes.push({
        name,
        alert: raw.alert,
        matchers,
        runbook,
        hostLabel: raw.host_label,
        hostRegex,
        hosts,
        cooldownMs,
        maxAttempts: { count: raw.max_attempts?.count ?? DEFAULTS.maxAttempts.count, withinMs },
        unattended: raw.unattended ?? false,
      });
    }
  });
  const maxBodyBytes = parseSize(d.max_body ?? DEFAULTS.maxBody);
  if (maxBodyBytes === undefined) add('max_body', `${JSON.stringify(d.max_body)} is not a size (e.g. 1MiB, 512KiB, 65536)`, 'value');
  const un = d.brake?.max_unhealthy ?? DEFAULTS.brake.maxUnhealthy;
  const m = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(un);
  if (!m || Number(m[1]) > 100) add('brake.max_unhealthy', `"${un}" is not a percentage of the route's hosts (e.g. 30%)`, 'value');
  const forgetAfterMs = dur('forget_after', d.forget_after, DEFAULTS.forgetAfter);
  if (!listen || !auth || !inventory || maxBodyBytes === undefined || !m) return undefined;
  return {
    file,
    listen,
    inventoryFiles,
    inventory,
    stateDir: d.state_dir && resolve(base, d.state_dir),
    audit: d.audit && resolve(base, d.audit),
    knownHosts: d.known_hosts && resolve(base, d.known_hosts),
    auth,
    maxBodyBytes,
    forgetAfterMs,
    routes,
    brake: {
      maxConcurrent: d.brake?.max_concurrent ?? DEFAULTS.brake.maxConcurrent,
      maxPerHour: d.brake?.max_per_hour ?? DEFAULTS.brake.maxPerHour,
      maxUnhealthy: Number(m[1]) / 100,
    },
  };
}

/** Every variable of the runbook resolved for every host the route may act on, as apply would. */
function checkPlan(runbook: Runbook, inventory: Inventory, names: string[]): void {
  const hosts = names.map((n) => {
    const h = inventory.hosts.get(n)!;
    return { name: n, vars: h.vars, connection: connectionFor(h) };
  });
  createPlan(runbook, hosts, { runId: 'serve-check', forks: 1, extraVars: {} });
}

export function parseListen(s: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(s.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined; // 0: any free port (the log line says which)
  return { host: m[1] ?? m[2], port };
}

function parseSize(v: string | number): number | undefined {
  if (typeof v === 'number') return v;
  const m = /^\s*(\d+)\s*(B|KiB|MiB|KB|MB)?\s*$/.exec(v);
  if (!m) return undefined;
  const mult = { B: 1, KiB: 1024, MiB: 1 << 20, KB: 1000, MB: 1_000_000 }[m[2] ?? 'B'] ?? 1;
  const n = Number(m[1]) * mult;
  return n > 0 ? n : undefined;
}

/** The secrets, read now (and again on reload): present, not empty, not readable by group or others. */
function readAuth(d: Raw, base: string, add: Add): ServeConfig['auth'] | undefined {
  const out: ServeConfig['auth'] = {};
  const { bearer_token_file: bearer, hmac_secret_file: hmac } = d.auth;
  if (!bearer && !hmac) {
    add('auth', 'needs bearer_token_file or hmac_secret_file (or both): the listener refuses unauthenticated requests');
    return undefined;
  }
  const read = (key: string, f: string): Buffer | undefined => {
    const p = resolve(base, f);
    try {
      const st = statSync(p);
      if (st.mode & 0o077) {
        add(`auth.${key}`, `${p} is readable by others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`, 'value');
        return undefined;
      }
      const v = Buffer.from(readFileSync(p, 'utf8').trim(), 'utf8');
      if (v.length < 16) {
        add(`auth.${key}`, `${p} holds fewer than 16 characters; put a long random secret in it (openssl rand -hex 32)`, 'value');
        return undefined;
      }
      return v;
    } catch (err) {
      add(`auth.${key}`, `cannot read ${p}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'value');
      return undefined;
    }
  };
  if (bearer) out.bearer = read('bearer_token_file', bearer);
  if (hmac) out.hmac = read('hmac_secret_file', hmac);
  if ((bearer && !out.bearer) || (hmac && !out.hmac)) return undefined;
  return out;
}

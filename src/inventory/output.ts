/**
 * The outputs of `ansible-inventory`: --list (JSON object), --graph (text), --host (JSON object).
 */
import { RunbookError } from '../core/errors.js';
import type { Inventory, InventoryGroup } from './types.js';
import { groupHosts } from './patterns.js';

/** Variables ansible-inventory never prints (cli/inventory.py INTERNAL_VARS). */
export const INTERNAL_VARS = new Set([
  'ansible_diff_mode',
  'ansible_config_file',
  'ansible_facts',
  'ansible_forks',
  'ansible_inventory_sources',
  'ansible_limit',
  'ansible_playbook_python',
  'ansible_run_tags',
  'ansible_skip_tags',
  'ansible_verbosity',
  'ansible_version',
  'inventory_dir',
  'inventory_file',
  'inventory_hostname',
  'inventory_hostname_short',
  'groups',
  'group_names',
  'omit',
  'playbook_dir',
]);

function visibleVars(vars: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(vars).sort()) if (!INTERNAL_VARS.has(k)) out[k] = vars[k];
  return out;
}

/** Like `ansible-inventory --list`: groups with hosts/children (empty ones left out), `_meta.hostvars`. */
export function inventoryListJson(inv: Inventory): Record<string, unknown> {
  const results: Record<string, unknown> = {};
  const seen = new Set<string>();
  const format = (g: InventoryGroup) => {
    const entry: Record<string, unknown> = {};
    results[g.name] = entry;
    if (g.name !== 'all') entry.hosts = g.hosts.filter((h) => !inv.hosts.get(h)?.implicit);
    const children: string[] = [];
    entry.children = children;
    for (const c of g.children) {
      children.push(c);
      const cg = inv.groups.get(c);
      if (cg && !seen.has(c)) {
        format(cg);
        seen.add(c);
      }
    }
    for (const k of ['hosts', 'vars', 'children']) {
      const v = entry[k];
      if (v !== undefined && (!v || (Array.isArray(v) && v.length === 0))) delete entry[k];
    }
    if (Object.keys(entry).length === 0) delete results[g.name];
  };
  const all = inv.groups.get('all');
  if (all) format(all);
  const hostvars: Record<string, unknown> = {};
  for (const h of groupHosts(inv, 'all')) {
    const hv = visibleVars(inv.hosts.get(h)?.vars ?? {});
    if (Object.keys(hv).length) hostvars[h] = hv;
  }
  const sorted: Record<string, unknown> = { _meta: { hostvars } };
  for (const k of Object.keys(results).sort()) sorted[k] = results[k];
  return sorted;
}

/** Like `ansible-inventory --graph [group]`. */
export function inventoryGraph(inv: Inventory, group = 'all'): string {
  const start = inv.groups.get(group);
  if (!start) throw new RunbookError('E_PATTERN', `--graph needs a group name; '${group}' is not a group of this inventory.`);
  const name = (n: string, depth: number) => (depth ? `${'  |'.repeat(depth)}--${n}` : n);
  const lines: string[] = [];
  const walk = (g: InventoryGroup, depth: number) => {
    lines.push(name(`@${g.name}:`, depth));
    for (const c of g.children) {
      const cg = inv.groups.get(c);
      if (cg) walk(cg, depth + 1);
    }
    if (g.name !== 'all') for (const h of g.hosts) if (!inv.hosts.get(h)?.implicit) lines.push(name(h, depth + 1));
  };
  walk(start, 0);
  return lines.join('\n');
}

/** Like `ansible-inventory --host NAME`: the host's merged variables. */
export function hostVarsJson(inv: Inventory, host: string): Record<string, unknown> {
  const h = inv.hosts.get(host) ?? inv.implicitHosts?.get(host);
  if (!h) throw new RunbookError('E_PATTERN', `host '${host}' is not in the inventory; see runbook inventory --list.`);
  return visibleVars(h.vars);
}

/** JSON text as ansible-inventory prints it: keys sorted, 4-space indent. */
export function ansibleJson(v: unknown): string {
  return JSON.stringify(sortKeys(v), null, 4);
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') {
    const o: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) o[k] = sortKeys((v as Record<string, unknown>)[k]);
    return o;
  }
  return v;
}

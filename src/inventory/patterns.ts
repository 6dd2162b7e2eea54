/**
 * Ansible host patterns (inventory/manager.py of ansible-core 2.14): `a,b`, `a:b`, `a:&b`, `a:!b`,
 * globs `web*`, regexes `~web\d+`, `all`/`*`, subscripts `group[0]`, `group[1:3]`, `group[-1]`, `@file`.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { didYouMean, ValidationError, type ValidationIssue } from '../core/errors.js';
import { decodeUtf8 } from '../core/text.js';
import type { Inventory, InventoryGroup, InventoryHost } from './types.js';
import { parseAddress } from './hostpattern.js';
import { LOCALHOST_NAMES } from './data.js';

/** split_host_pattern(): commas, else colons outside brackets (unless the whole thing is an address). */
export function splitHostPattern(pattern: string): string[] {
  let parts: string[];
  if (pattern.includes(',')) parts = pattern.split(',');
  else if (parseAddress(pattern)) parts = [pattern];
  else parts = pattern.match(/(?:[^\s:[\]]|\[[^\]]*\])+/g) ?? [];
  return parts.map((p) => p.trim()).filter((p) => p);
}

/** order_patterns(): regular first, then &intersections, then !exclusions; no regular pattern means all. */
export function orderPatterns(patterns: string[]): string[] {
  const reg: string[] = [];
  const inter: string[] = [];
  const excl: string[] = [];
  for (const p of patterns) {
    if (!p) continue;
    if (p[0] === '!') excl.push(p);
    else if (p[0] === '&') inter.push(p);
    else reg.push(p);
  }
  return [...(reg.length ? reg : ['all']), ...inter, ...excl];
}

/** fnmatch.translate, case-sensitive (Ansible on POSIX). */
export function fnmatchToRegExp(pat: string): RegExp {
  let i = 0;
  let res = '';
  const n = pat.length;
  while (i < n) {
    const c = pat[i++];
    if (c === '*') {
      while (pat[i] === '*') i++;
      res += '.*';
    } else if (c === '?') res += '.';
    else if (c === '[') {
      let j = i;
      if (j < n && pat[j] === '!') j++;
      if (j < n && pat[j] === ']') j++;
      while (j < n && pat[j] !== ']') j++;
      if (j >= n) res += '\\[';
      else {
        let stuff = pat.slice(i, j).replace(/\\/g, '\\\\');
        i = j + 1;
        if (stuff[0] === '!') stuff = `^${stuff.slice(1)}`;
        else if (stuff[0] === '^') stuff = `\\${stuff}`;
        res += `[${stuff.replace(/\[/g, '\\[')}]`;
      }
    } else res += c.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
  }
  return new RegExp(`^(?:${res})$`, 's');
}

const SUBSCRIPT = /^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$/s;

/** The hosts of a group and all its descendants, in Ansible's order (Group.get_hosts). */
export function groupHosts(inv: Inventory, name: string): string[] {
  const start = inv.groups.get(name);
  if (!start) return [];
  const ordered: InventoryGroup[] = [start, ...childrenOf(inv, start)];
  const seen = new Set<InventoryGroup>();
  let unprocessed = [...new Set([start, ...childrenOf(inv, start)])];
  while (unprocessed.length) {
    for (const g of unprocessed) seen.add(g);
    const next: InventoryGroup[] = [];
    for (const g of unprocessed)
      for (const k of childrenOf(inv, g)) {
        next.push(k);
        if (!seen.has(k)) ordered.push(k);
      }
    unprocessed = [...new Set(next.filter((g) => !seen.has(g)))];
  }
  const out: string[] = [];
  const done = new Set<string>();
  for (const g of ordered)
    for (const h of g.hosts) {
      if (done.has(h)) continue;
      done.add(h);
      if (name === 'all' && inv.hosts.get(h)?.implicit) continue;
      out.push(h);
    }
  return out;
}

/**
 * True when Ansible's host order for this group is not reproducible: Ansible walks each level of child
 * groups through a Python set, so when two groups on one level bring different new child groups, the
 * order between those children changes from run to run (even Ansible disagrees with itself).
 */
export function hostOrderIsAmbiguous(inv: Inventory, name: string): boolean {
  const start = inv.groups.get(name);
  if (!start) return false;
  const seen = new Set<InventoryGroup>();
  let unprocessed = [...new Set([start, ...childrenOf(inv, start)])];
  while (unprocessed.length) {
    for (const g of unprocessed) seen.add(g);
    const contributions = new Set<string>();
    const next: InventoryGroup[] = [];
    for (const g of unprocessed) {
      const fresh = childrenOf(inv, g).filter((k) => !seen.has(k));
      next.push(...fresh);
      if (fresh.length) contributions.add(fresh.map((k) => k.name).join('\0'));
    }
    if (contributions.size > 1) return true;
    unprocessed = [...new Set(next)];
  }
  return false;
}

function childrenOf(inv: Inventory, g: InventoryGroup): InventoryGroup[] {
  return g.children.map((c) => inv.groups.get(c)).filter((x): x is InventoryGroup => !!x);
}

class Matcher {
  cache = new Map<string, string[]>();
  unmatched: string[] = [];
  constructor(readonly inv: Inventory) {}

  matchList(items: Iterable<string>, pat: string): string[] {
    let re: RegExp;
    try {
      re = pat[0] === '~' ? new RegExp(pat.slice(1), 'y') : fnmatchToRegExp(pat);
    } catch {
      throw new ValidationError([{ path: 'limit', message: `invalid host pattern '${pat}': not a valid regular expression` }], 'E_PATTERN');
    }
    const out: string[] = [];
    for (const it of items) {
      re.lastIndex = 0;
      if (re.test(it)) out.push(it);
    } // ~regex: re.match = anchored at start
    return out;
  }

  enumerate(pattern: string): string[] {
    const results: string[] = [];
    const groupNames = [...this.inv.groups.keys()];
    const matchingGroups = this.matchList(groupNames, pattern);
    for (const g of matchingGroups) results.push(...groupHosts(this.inv, g));
    if (!matchingGroups.length || pattern[0] === '~' || ['.', '?', '*', '['].some((s) => pattern.includes(s))) {
      results.push(
        ...this.matchList(
          [...this.inv.hosts.keys()].filter((h) => !this.inv.hosts.get(h)?.implicit),
          pattern,
        ),
      );
    }
    if (!results.length && LOCALHOST_NAMES.includes(pattern)) {
      const implicit = implicitLocalhost(this.inv, pattern);
      if (implicit) results.push(implicit);
    }
    if (!results.length && !matchingGroups.length && pattern !== 'all') this.unmatched.push(pattern);
    return results;
  }

  matchOne(p: string): string[] {
    const pattern = p[0] === '&' || p[0] === '!' ? p.slice(1) : p;
    const hit = this.cache.get(pattern);
    if (hit) return hit;
    let expr = pattern;
    let sub: [number, number | undefined] | undefined;
    if (pattern[0] !== '~') {
      const m = SUBSCRIPT.exec(pattern);
      if (m) {
        expr = m[1];
        if (m[2] !== undefined) sub = [parseInt(m[2], 10), undefined];
        else sub = [parseInt(m[3], 10), m[5] ? parseInt(m[5], 10) : -1];
      }
    }
    let hosts = this.enumerate(expr);
    if (hosts.length && sub) {
      const [start, endRaw] = sub;
      if (endRaw !== undefined && endRaw !== 0) {
        const end = endRaw === -1 ? hosts.length - 1 : endRaw;
        hosts = pySlice(hosts, start, end + 1);
      } else {
        const idx = start < 0 ? hosts.length + start : start;
        if (idx < 0 || idx >= hosts.length) {
          throw new ValidationError(
            [
              {
                path: 'limit',
                message: `no hosts matched the subscripted pattern '${pattern}' (${expr} has ${hosts.length} host${hosts.length === 1 ? '' : 's'})`,
              },
            ],
            'E_PATTERN',
          );
        }
        hosts = [hosts[idx]];
      }
    }
    this.cache.set(pattern, hosts);
    return hosts;
  }

  /** _evaluate_patterns */
  evaluate(patterns: string[]): string[] {
    let hosts: string[] = [];
    for (const p of orderPatterns(patterns)) {
      if (this.inv.hosts.has(p) && !this.inv.hosts.get(p)!.implicit) {
        hosts.push(p);
        continue;
      }
      const that = this.matchOne(p);
      if (p[0] === '!') {
        const s = new Set(that);
        hosts = hosts.filter((h) => !s.has(h));
      } else if (p[0] === '&') {
        const s = new Set(that);
        hosts = hosts.filter((h) => s.has(h));
      } else {
        const have = new Set(hosts);
        hosts.push(...that.filter((h) => !have.has(h)));
      }
    }
    return [...new Set(hosts)];
  }
}

function pySlice<T>(xs: T[], start: number, end: number): T[] {
  const n = xs.length;
  const s = start < 0 ? Math.max(0, n + start) : Math.min(start, n);
  const e = end < 0 ? Math.max(0, n + end) : Math.min(end, n);
  return xs.slice(s, Math.max(s, e));
}

function implicitLocalhost(inv: Inventory, name: string): string | undefined {
  if (inv.hosts.has(name)) return name;
  const h: InventoryHost = inv.implicitHosts?.get(name) ?? { name, vars: { ansible_connection: 'local' }, groups: ['all'], implicit: true };
  inv.hosts.set(name, h);
  return name;
}

/** --limit parsing (InventoryManager.subset): split, and expand @file entries (one pattern a line). */
export function expandLimit(limit: string, cwd: string): string[] {
  const out: string[] = [];
  for (const x of splitHostPattern(limit)) {
    if (x[0] === '@') {
      const f = resolve(cwd, x.slice(1));
      if (!existsSync(f))
        throw new ValidationError([{ file: x.slice(1), path: 'limit', message: `limit file not found: ${f}` }], 'E_PATTERN');
      if (!statSync(f).isFile())
        throw new ValidationError(
          [{ file: x.slice(1), path: 'limit', message: `a limit starting with '@' must be a file, not a directory: ${f}` }],
          'E_PATTERN',
        );
      out.push(
        ...decodeUtf8(readFileSync(f), f, 'limit file')
          .split('\n')
          .map((l) => l.trim()),
      );
    } else out.push(x);
  }
  return out;
}

export interface SelectOptions {
  cwd?: string;
  /** The base pattern (a runbook's `hosts:`); default 'all'. `pattern` then limits it, like --limit. */
  hosts?: string;
}

/**
 * Hosts selected by `pattern` (a --limit) within `opts.hosts` (default `all`), in Ansible's order:
 * the order of the base pattern (for `all`: inventory order), filtered by the limit.
 * A sub-pattern that matches no host and no group -> ValidationError E_PATTERN naming it.
 * Deviation, on purpose: a limit naming localhost / 127.0.0.1 / ::1 that is not in the inventory selects
 * Ansible's implicit localhost (ansible_connection=local) even with base `all`; Ansible would select
 * nothing there (`all` never contains the implicit localhost).
 */
export function selectHosts(inv: Inventory, pattern: string | undefined, opts: SelectOptions = {}): string[] {
  const cwd = opts.cwd ?? process.cwd();
  const m = new Matcher(inv);
  const base = opts.hosts ?? 'all';
  let hosts = m.evaluate(splitHostPattern(base));
  if (pattern !== undefined && pattern.trim() !== '') {
    const subset = expandLimit(pattern, cwd);
    const chosen = m.evaluate(subset);
    const keep = new Set(chosen);
    hosts = hosts.filter((h) => keep.has(h));
    if (base === 'all') for (const h of chosen) if (inv.hosts.get(h)?.implicit && !hosts.includes(h)) hosts.push(h);
  }
  if (m.unmatched.length) {
    const issues: ValidationIssue[] = [...new Set(m.unmatched)].map((p) => ({
      path: 'limit',
      message: `host pattern '${p}' matches no host and no group in the inventory${suggest(inv, p)}`,
    }));
    throw new ValidationError(issues, 'E_PATTERN');
  }
  return hosts;
}

function suggest(inv: Inventory, p: string): string {
  const names = [...inv.groups.keys(), ...[...inv.hosts.values()].filter((h) => !h.implicit).map((h) => h.name)];
  const best = didYouMean(p, names);
  return best !== undefined ? ` (did you mean '${best}'?)` : '';
}

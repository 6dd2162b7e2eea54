/**
 * Host names in inventories: `name:port`, `[v6addr]:port`, ranges `node[01:20]`, `db-[a:f]`, `[0:10:2]`.
 * A port of Ansible's parse_address() and expand_hostname_range(). Pure.
 */
import { CodedError } from '../core/errors.js';

const numericRange = String.raw`\[[0-9]+:[0-9]+(?::[0-9]+)?\]`;
const hexadecimalRange = String.raw`\[(?:[0-9a-f]+:[0-9a-f]+)(?::[0-9]+)?\]`;
const alphanumericRange = String.raw`\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]`;
const ipv6c = `(?:[0-9a-f]{1,4}|${hexadecimalRange})`;
const ipv4c = `(?:[01]?[0-9]{1,2}|2[0-4][0-9]|25[0-5]|${numericRange})`;
const label = String.raw`(?:[\p{L}\p{N}_]|${alphanumericRange})(?:[\p{L}\p{N}_-]|${alphanumericRange})*(?<![_-])`;
const c = ipv6c;

const RE = {
  bracketedHostport: /^\[(.+)\]:([0-9]+)$/,
  hostport: /^((?:[^:[\]]|\[[^\]]*\])*):([0-9]+)$/,
  ipv4: new RegExp(String.raw`^(?:${ipv4c}\.){3}${ipv4c}$`, 'i'),
  ipv6: new RegExp(
    '^(?:' +
      [
        `(?:${c}:){7}${c}`,
        `(?:${c}:){1,6}:`,
        `(?:${c}:)(?::${c}){1,6}`,
        `(?:${c}:){2}(?::${c}){1,5}`,
        `(?:${c}:){3}(?::${c}){1,4}`,
        `(?:${c}:){4}(?::${c}){1,3}`,
        `(?:${c}:){5}(?::${c}){1,2}`,
        `(?:${c}:){6}(?::${c})`,
        `:(?::${c}){1,6}`,
        `${c}?::`,
        String.raw`(?:0:){6}(?:${c}\.){3}${c}`,
        String.raw`::(?:ffff:)?(?:${c}\.){3}${c}`,
        String.raw`(?:0:){5}ffff:(?:${c}\.){3}${c}`,
      ].join('|') +
      ')$',
    'i',
  ),
  hostname: new RegExp(String.raw`^${label}(?:\.${label})*$`, 'iu'),
};

/** parse_address(address, allow_ranges=True); undefined where Python raises. */
export function parseAddress(address: string): { host: string; port?: number } | undefined {
  let port: number | undefined;
  let a = address;
  for (const re of [RE.bracketedHostport, RE.hostport]) {
    const m = re.exec(a);
    if (m) {
      a = m[1];
      port = parseInt(m[2], 10);
    }
  }
  if (RE.ipv4.test(a) || RE.ipv6.test(a) || RE.hostname.test(a)) return { host: a, port };
  return undefined;
}

/** A bad host range (`node[01:x]`); the parsers report it with the file's name and line. */
export class RangeError_ extends CodedError {
  constructor(message: string) {
    super('E_HOST_RANGE', message);
    this.name = 'RangeError_';
  }
}

const ASCII_LETTERS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';

/**
 * Names one host pattern may expand to (`h[0:99999999]` would take gigabytes before anything else could
 * be said). RUNBOOK_MAX_RANGE_HOSTS raises it.
 */
export const MAX_RANGE_HOSTS = 100_000;

function rangeLimit(env: NodeJS.ProcessEnv = process.env): number {
  const n = Number(env.RUNBOOK_MAX_RANGE_HOSTS);
  return Number.isInteger(n) && n > 0 ? n : MAX_RANGE_HOSTS;
}

/** The first '[a:b(:s)]' of a line: what is around it and its values, not yet materialized. */
interface FirstRange {
  head: string;
  tail: string;
  count: number;
  item(i: number): string;
}

function firstRange(line: string): FirstRange {
  const open = line.indexOf('[');
  const close = line.indexOf(']');
  // Python: line.replace('[','|',1).replace(']','|',1).split('|') must give exactly 3 parts
  const replaced = line.replace('[', '|').replace(']', '|');
  const parts = replaced.split('|');
  if (parts.length !== 3 || open < 0 || close < 0) {
    throw new RangeError_(`bad host range '${line}': use one [begin:end] or [begin:end:step] per bracket pair`);
  }
  const [head, nrange, tail] = parts;
  const bounds = nrange.split(':');
  if (bounds.length !== 2 && bounds.length !== 3) throw new RangeError_(`host range must be begin:end or begin:end:step, got [${nrange}]`);
  let beg = bounds[0];
  const end = bounds[1];
  const stepStr = bounds.length === 3 ? bounds[2] : '1';
  if (!beg) beg = '0';
  if (!end) throw new RangeError_(`host range [${nrange}] must specify an end value`);
  let fill = (x: string | number) => String(x);
  if (beg[0] === '0' && beg.length > 1) {
    const rlen = beg.length;
    if (rlen !== end.length) throw new RangeError_(`host range [${nrange}] must use begin and end of equal length (like 01:20)`);
    fill = (x) => String(x).padStart(rlen, '0');
  }
  const step = pyInt(stepStr);
  if (step === undefined) throw new RangeError_(`host range step '${stepStr}' is not a number`);
  if (step <= 0) throw new RangeError_(`host range step must be a positive number, got ${stepStr}`);
  const ib = beg.length === 1 ? ASCII_LETTERS.indexOf(beg) : -1;
  const ie = end.length === 1 ? ASCII_LETTERS.indexOf(end) : -1;
  if (ib >= 0 && ie >= 0) {
    if (ib > ie) throw new RangeError_(`host range [${nrange}] must have begin <= end`);
    return { head, tail, count: Math.floor((ie - ib) / step) + 1, item: (i) => ASCII_LETTERS[ib + i * step] };
  }
  const b = pyInt(beg);
  const e = pyInt(end);
  if (b === undefined || e === undefined) throw new RangeError_(`host range [${nrange}] must be numbers (01:20) or single letters (a:f)`);
  return { head, tail, count: e < b ? 0 : Math.floor((e - b) / step) + 1, item: (i) => fill(b + i * step) };
}

/** How many names a line with ranges expands to (the product of its ranges' sizes), without expanding it. */
function rangeCount(line: string): number {
  let n = 1;
  for (let rest = line; rest.includes('[') && n > 0; ) {
    const r = firstRange(rest);
    n *= r.count;
    rest = r.tail;
  }
  return n;
}

/**
 * expand_hostname_range: every '[a:b(:s)]' expanded, left to right, recursively. Throws RangeError_,
 * also when the line would give more than MAX_RANGE_HOSTS names (before expanding any).
 */
export function expandHostnameRange(line: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const limit = rangeLimit(env);
  const n = rangeCount(line);
  if (n > limit) {
    throw new RangeError_(
      `host range '${line}' gives ${n} hosts, more than the limit of ${limit} for one pattern; split it, or raise the limit with RUNBOOK_MAX_RANGE_HOSTS=N`,
    );
  }
  return expandChecked(line);
}

function expandChecked(line: string): string[] {
  const r = firstRange(line);
  const out: string[] = [];
  for (let i = 0; i < r.count; i++) {
    const h = r.head + r.item(i) + r.tail;
    if (h.includes('[')) out.push(...expandChecked(h));
    else out.push(h);
  }
  return out;
}

function pyInt(s: string): number | undefined {
  const t = s.trim();
  if (!/^[+-]?[0-9](?:_?[0-9])*$/.test(t)) return undefined;
  return parseInt(t.replace(/_/g, ''), 10);
}

/** BaseInventoryPlugin._expand_hostpattern: names and an optional port. Throws RangeError_. */
export function expandHostPattern(pattern: string): { names: string[]; port?: number } {
  const pa = parseAddress(pattern);
  const p = pa ? pa.host : pattern;
  const port = pa?.port;
  const names = p.includes('[') ? expandHostnameRange(p) : [p];
  return { names, port };
}

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

/** expand_hostname_range: every '[a:b(:s)]' expanded, left to right, recursively. Throws RangeError_. */
export function expandHostnameRange(line: string): string[] {
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
  let seq: (string | number)[];
  const ib = beg.length === 1 ? ASCII_LETTERS.indexOf(beg) : -1;
  const ie = end.length === 1 ? ASCII_LETTERS.indexOf(end) : -1;
  if (ib >= 0 && ie >= 0) {
    if (ib > ie) throw new RangeError_(`host range [${nrange}] must have begin <= end`);
    seq = [];
    for (let k = ib; k <= ie; k += step) seq.push(ASCII_LETTERS[k]);
  } else {
    const b = pyInt(beg);
    const e = pyInt(end);
    if (b === undefined || e === undefined) throw new RangeError_(`host range [${nrange}] must be numbers (01:20) or single letters (a:f)`);
    seq = [];
    for (let k = b; k <= e; k += step) seq.push(k);
  }
  const out: string[] = [];
  for (const r of seq) {
    const h = head + fill(r) + tail;
    if (h.includes('[')) out.push(...expandHostnameRange(h));
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

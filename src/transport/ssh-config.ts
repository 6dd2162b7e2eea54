/**
 * The parts of OpenSSH client configuration runbook honours: ~/.ssh/config (or --ssh-config FILE) and the
 * options in ansible_ssh_common_args / ansible_ssh_extra_args.
 *
 * Config file: `Host` blocks (space-separated patterns, `*` / `?` wildcards, `!` negation), `Include` (relative
 * to ~/.ssh, `*` globs in the file name), keywords case-insensitive, `Key Value` or `Key=Value`, quoted values.
 * First value wins per keyword, except IdentityFile which accumulates. `Match` blocks are skipped (not
 * evaluated). Keywords used: HostName, User, Port, IdentityFile, IdentitiesOnly, ProxyJump, ConnectTimeout,
 * UserKnownHostsFile, StrictHostKeyChecking, ServerAliveInterval, ServerAliveCountMax. Tokens: %h %p %r %u %d
 * %%, and a leading ~ in file names.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { globSource, matchPatternList } from './known-hosts.js';

export interface SshConfigLine {
  key: string; // lower-case
  value: string;
  file: string;
  line: number;
}

export interface SshConfigBlock {
  /** Host patterns; empty for the lines before the first Host (they apply to every host). */
  patterns: string[];
  /** A Match block: skipped. */
  match?: boolean;
  lines: SshConfigLine[];
}

export interface ResolvedSshConfig {
  hostName?: string;
  user?: string;
  port?: number;
  identityFiles: string[];
  identitiesOnly?: boolean;
  /** "none" is returned as undefined. */
  proxyJump?: string;
  connectTimeoutSec?: number;
  userKnownHostsFiles?: string[];
  strictHostKeyChecking?: string;
  serverAliveIntervalSec?: number;
  serverAliveCountMax?: number;
  /** Keywords from the matching blocks runbook does not implement (for a note). */
  ignored: string[];
}

const USED = new Set([
  'hostname',
  'user',
  'port',
  'identityfile',
  'identitiesonly',
  'proxyjump',
  'connecttimeout',
  'userknownhostsfile',
  'stricthostkeychecking',
  'serveraliveinterval',
  'serveralivecountmax',
]);
const HARMLESS = new Set([
  'host',
  'match',
  'include',
  'addkeystoagent',
  'forwardagent',
  'compression',
  'loglevel',
  'controlmaster',
  'controlpath',
  'controlpersist',
  'hashknownhosts',
  'visualhostkey',
  'preferredauthentications',
  'pubkeyauthentication',
  'passwordauthentication',
  'usekeychain',
  'sendenv',
  'setenv',
  'tcpkeepalive',
  'requesttty',
  'batchmode',
  'globalknownhostsfile',
  'checkhostip',
  'updatehostkeys',
  'forwardx11',
  'forwardx11trusted',
  'identityagent',
  'canonicalizehostname',
  'canonicaldomains',
]);

/** Splits a config line into key and value (handles `Key=Value`, `Key Value`, quotes). */
function splitLine(line: string): { key: string; value: string } | undefined {
  const m = /^\s*([A-Za-z][A-Za-z0-9]*)\s*(?:=\s*|\s+)(.*?)\s*$/.exec(line);
  if (!m) return undefined;
  return { key: m[1].toLowerCase(), value: m[2] };
}

/** Splits a value into words, honouring double quotes. */
export function words(value: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|(\S+)/g;
  for (const m of value.matchAll(re)) out.push(m[1] ?? m[2]);
  return out;
}

export function parseSshConfig(text: string, file: string, depth = 0): SshConfigBlock[] {
  const blocks: SshConfigBlock[] = [{ patterns: [], lines: [] }];
  text.split(/\r?\n/).forEach((raw, i) => {
    const t = raw.trim();
    if (!t || t.startsWith('#')) return;
    const kv = splitLine(t);
    if (!kv) return;
    if (kv.key === 'host') {
      blocks.push({ patterns: words(kv.value), lines: [] });
      return;
    }
    if (kv.key === 'match') {
      blocks.push({ patterns: [], match: true, lines: [] });
      return;
    }
    if (kv.key === 'include' && depth < 8) {
      const cur = blocks[blocks.length - 1];
      for (const pat of words(kv.value)) {
        for (const f of expandInclude(pat)) {
          let sub: string;
          try {
            sub = readFileSync(f, 'utf8');
          } catch {
            continue;
          }
          const inc = parseSshConfig(sub, f, depth + 1);
          // lines before the first Host of the included file belong to the current block
          cur.lines.push(...inc[0].lines);
          blocks.push(...inc.slice(1));
          // continue the current block after the include (OpenSSH semantics approximated)
          if (inc.length > 1) blocks.push({ patterns: cur.patterns, match: cur.match, lines: [] });
        }
      }
      return;
    }
    blocks[blocks.length - 1].lines.push({ key: kv.key, value: kv.value, file, line: i + 1 });
  });
  return blocks;
}

function expandTilde(p: string): string {
  return p === '~' ? homedir() : p.startsWith('~/') ? join(homedir(), p.slice(2)) : p;
}

function expandInclude(pattern: string): string[] {
  let p = expandTilde(pattern);
  if (!isAbsolute(p)) p = join(homedir(), '.ssh', p);
  const base = basename(p);
  if (!/[*?]/.test(base)) return [p];
  const re = new RegExp(`^${globSource(base)}$`);
  try {
    return readdirSync(dirname(p))
      .filter((f) => re.test(f))
      .sort()
      .map((f) => join(dirname(p), f));
  } catch {
    return [];
  }
}

export function loadSshConfig(file: string): SshConfigBlock[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return parseSshConfig(text, file);
}

function blockMatches(b: SshConfigBlock, host: string): boolean {
  if (b.match) return false;
  if (b.patterns.length === 0) return true;
  let positive = false;
  for (const p of b.patterns) {
    if (p.startsWith('!')) {
      if (matchPatternList(p.slice(1), host)) return false;
    } else if (matchPatternList(p, host)) positive = true;
  }
  return positive;
}

/** Expands %h %p %r %u %d %% and a leading ~. */
export function expandTokens(value: string, t: { host: string; port: number; user: string }): string {
  const v = value.replace(/%([hpruLd%])/g, (_, c: string) => {
    switch (c) {
      case 'h':
        return t.host;
      case 'p':
        return String(t.port);
      case 'r':
        return t.user;
      case 'u':
        return userInfo().username;
      case 'd':
        return homedir();
      case '%':
        return '%';
      default:
        return `%${c}`;
    }
  });
  return expandTilde(v);
}

/** Options as OpenSSH `-o Key=Value` lines parsed from command-line args (they win over the config file). */
export function parseSshArgs(args: string | undefined): { lines: SshConfigLine[]; unknown: string[] } {
  const lines: SshConfigLine[] = [];
  const unknown: string[] = [];
  if (!args) return { lines, unknown };
  const w = shellWords(args);
  const add = (key: string, value: string): void => {
    lines.push({ key: key.toLowerCase(), value, file: 'ansible_ssh_common_args', line: 0 });
  };
  for (let i = 0; i < w.length; i++) {
    const a = w[i];
    const next = (): string => w[++i] ?? '';
    if (a === '-o' || a.startsWith('-o')) {
      const opt = a === '-o' ? next() : a.slice(2);
      const kv = splitLine(opt);
      if (kv) add(kv.key, kv.value);
      else unknown.push(opt);
    } else if (a === '-J' || (a.startsWith('-J') && a.length > 2)) add('proxyjump', a === '-J' ? next() : a.slice(2));
    else if (a === '-p') add('port', next());
    else if (a === '-l') add('user', next());
    else if (a === '-i') add('identityfile', next());
    else if (/^-[46AaCfGgKkMNnqsTtVvXxYy]+$/.test(a)) {
      /* flags without effect here */
    } else unknown.push(a);
  }
  return { lines, unknown };
}

/** Minimal shell-like word splitting for ansible_ssh_common_args (single/double quotes, backslash). */
export function shellWords(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inWord = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === "'") {
      const j = s.indexOf("'", i + 1);
      cur += s.slice(i + 1, j < 0 ? s.length : j);
      i = j < 0 ? s.length : j;
      inWord = true;
    } else if (c === '"') {
      let j = i + 1;
      while (j < s.length && s[j] !== '"') {
        if (s[j] === '\\' && j + 1 < s.length) j++;
        cur += s[j];
        j++;
      }
      i = j;
      inWord = true;
    } else if (c === '\\' && i + 1 < s.length) {
      cur += s[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) {
        out.push(cur);
        cur = '';
        inWord = false;
      }
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (inWord) out.push(cur);
  return out;
}

/**
 * Resolves the settings for `host` (the name/address being connected to): command-line style lines first
 * (ansible_ssh_common_args), then the config blocks in order; first value wins.
 */
export function resolveSshConfig(blocks: SshConfigBlock[], host: string, extra: SshConfigLine[] = []): ResolvedSshConfig {
  const first = new Map<string, string>();
  const identity: string[] = [];
  const ignored = new Set<string>();
  // Values may be quoted ("/path with spaces"); UserKnownHostsFile is a list, split by words() below.
  const unquote = (l: SshConfigLine): string => (l.key === 'userknownhostsfile' ? l.value : (words(l.value)[0] ?? ''));
  const take = (l: SshConfigLine): void => {
    if (l.key === 'identityfile') {
      identity.push(unquote(l));
      return;
    }
    if (!USED.has(l.key)) {
      if (!HARMLESS.has(l.key)) ignored.add(l.key);
      return;
    }
    if (!first.has(l.key)) first.set(l.key, unquote(l));
  };
  for (const l of extra) take(l);
  for (const b of blocks) if (blockMatches(b, host)) for (const l of b.lines) take(l);
  const num = (k: string): number | undefined => {
    const v = first.get(k);
    if (v === undefined) return undefined;
    const n = Number(v);
    return Number.isFinite(n) ? n : undefined;
  };
  const pj = first.get('proxyjump');
  const yes = (v: string | undefined): boolean | undefined => (v === undefined ? undefined : /^(yes|true)$/i.test(v));
  return {
    hostName: first.get('hostname'),
    user: first.get('user'),
    port: num('port'),
    identityFiles: identity,
    identitiesOnly: yes(first.get('identitiesonly')),
    proxyJump: pj && pj.toLowerCase() !== 'none' ? pj : undefined,
    connectTimeoutSec: num('connecttimeout'),
    userKnownHostsFiles: first.has('userknownhostsfile') ? words(first.get('userknownhostsfile')!) : undefined,
    strictHostKeyChecking: first.get('stricthostkeychecking'),
    serverAliveIntervalSec: num('serveraliveinterval'),
    serverAliveCountMax: num('serveralivecountmax'),
    ignored: [...ignored],
  };
}

/** Parses one ProxyJump hop: `[user@]host[:port]` or `ssh://[user@]host[:port]`. */
export function parseJumpHop(hop: string): { user?: string; host: string; port?: number } {
  let h = hop.trim().replace(/^ssh:\/\//, '');
  let user: string | undefined;
  const at = h.lastIndexOf('@');
  if (at >= 0) {
    user = h.slice(0, at);
    h = h.slice(at + 1);
  }
  let port: number | undefined;
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(h) ?? /^([^:]+)(?::(\d+))?$/.exec(h);
  if (m) {
    h = m[1];
    if (m[2]) port = Number(m[2]);
  }
  return { user, host: h, port };
}

/**
 * OpenSSH known_hosts: parsing and host key verification (no prompts, ever).
 *
 * Supported: plain host patterns (comma lists, `*` / `?` wildcards, `!` negation), hashed names (`|1|salt|hmac`),
 * the `[host]:port` form for non-22 ports, `@revoked` (the key is refused for every host), comments and blank
 * lines. `@cert-authority` lines are ignored (runbook does not do OpenSSH certificates; such hosts need their
 * plain host key in known_hosts).
 *
 * Cost at fleet scale (every connection checks its host against every line): files are parsed once per process
 * and re-read only when their inode/size/mtime/ctime change (accept-new appends invalidate them at once), each
 * pattern list is compiled once (exact names in a set, wildcards as one RegExp), and the entries matching a
 * lookup name are found once per loaded set of files: exact names through a map, only wildcard and hashed
 * entries are tried one by one.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

export type HostKeyPolicy = 'strict' | 'accept-new' | 'off';

export interface KnownHostEntry {
  file: string;
  line: number;
  marker?: 'revoked' | 'cert-authority';
  /** The host field as written (patterns or a hashed name). */
  hosts: string;
  keyType: string;
  /** Key blob (wire format), decoded from base64. */
  key: Buffer;
}

export type HostKeyVerdict =
  | { status: 'ok'; entry: KnownHostEntry }
  | { status: 'unknown'; otherTypes: string[] }
  | { status: 'changed'; entry: KnownHostEntry }
  | { status: 'revoked'; entry: KnownHostEntry };

export function parseKnownHosts(text: string, file: string): KnownHostEntry[] {
  const out: KnownHostEntry[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const f = line.split(/\s+/);
    let marker: KnownHostEntry['marker'];
    if (f[0].startsWith('@')) {
      if (f[0] === '@revoked') marker = 'revoked';
      else if (f[0] === '@cert-authority') marker = 'cert-authority';
      else return; // unknown marker: OpenSSH ignores the line too
      f.shift();
    }
    if (f.length < 3) return;
    const [hosts, keyType, b64] = f;
    const key = Buffer.from(b64, 'base64');
    if (key.length === 0) return;
    out.push({ file, line: i + 1, marker, hosts, keyType, key });
  });
  return out;
}

const fileCache = new Map<string, { sig: string; entries: KnownHostEntry[] }>();
const listCache = new Map<string, { sig: string; entries: KnownHostEntry[] }>();

/**
 * Reads every existing file (missing or unreadable ones are skipped). Parsed files are cached per process and
 * re-read when the file changed (inode, size, mtime or ctime). The result is shared: do not modify it.
 */
export function loadKnownHosts(files: string[]): KnownHostEntry[] {
  const parts: KnownHostEntry[][] = [];
  const sigs: string[] = [];
  for (const f of files) {
    let sig: string;
    try {
      const st = statSync(f);
      sig = `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    } catch {
      sigs.push('-');
      continue;
    }
    let c = fileCache.get(f);
    if (!c || c.sig !== sig) {
      let text: string;
      try {
        text = readFileSync(f, 'utf8');
      } catch {
        fileCache.delete(f);
        sigs.push('-');
        continue;
      }
      c = { sig, entries: parseKnownHosts(text, f) };
      fileCache.set(f, c);
    }
    parts.push(c.entries);
    sigs.push(sig);
  }
  const key = files.join('\0');
  const sig = sigs.join('|');
  const hit = listCache.get(key);
  if (hit && hit.sig === sig) return hit.entries;
  const entries = parts.length === 1 ? parts[0] : parts.flat();
  listCache.set(key, { sig, entries });
  return entries;
}

/** Forget the parsed copy of a file (after writing to it). */
function invalidate(file: string): void {
  fileCache.delete(file);
  listCache.clear();
}

/** The name OpenSSH looks up: `host` for port 22, else `[host]:port`. */
export function hostEntryName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** A shell-style glob (`*`, `?`) as regular-expression source. */
export function globSource(pattern: string): string {
  return pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
}

/** A compiled pattern list: exact names (lower case) in sets, wildcard patterns as one RegExp per side. */
interface CompiledList {
  pos: Set<string>;
  posRe?: RegExp;
  neg: Set<string>;
  negRe?: RegExp;
  /** Only exact positive names: the list matches exactly the names in `pos`. */
  exactOnly: boolean;
}

const compiled = new Map<string, CompiledList>();
const COMPILED_MAX = 20_000;

function compileList(list: string): CompiledList {
  let c = compiled.get(list);
  if (c) return c;
  const pos = new Set<string>();
  const neg = new Set<string>();
  const posGlobs: string[] = [];
  const negGlobs: string[] = [];
  for (const raw of list.split(',')) {
    if (!raw) continue;
    const isNeg = raw.startsWith('!');
    const p = isNeg ? raw.slice(1) : raw;
    const wild = /[*?]/.test(p);
    if (isNeg) {
      if (wild) negGlobs.push(globSource(p));
      else neg.add(p.toLowerCase());
    } else if (wild) posGlobs.push(globSource(p));
    else pos.add(p.toLowerCase());
  }
  c = {
    pos,
    neg,
    posRe: posGlobs.length ? new RegExp(`^(?:${posGlobs.join('|')})$`, 'i') : undefined,
    negRe: negGlobs.length ? new RegExp(`^(?:${negGlobs.join('|')})$`, 'i') : undefined,
    exactOnly: !posGlobs.length && !negGlobs.length && !neg.size,
  };
  if (compiled.size >= COMPILED_MAX) compiled.clear();
  compiled.set(list, c);
  return c;
}

/** OpenSSH pattern-list matching: true if some positive pattern matches and no negated one does. */
export function matchPatternList(list: string, name: string): boolean {
  const c = compileList(list);
  const lower = name.toLowerCase();
  if (c.neg.has(lower) || c.negRe?.test(name)) return false;
  return c.pos.has(lower) || (c.posRe?.test(name) ?? false);
}

export function matchHost(entry: Pick<KnownHostEntry, 'hosts'>, name: string): boolean {
  if (entry.hosts.startsWith('|1|')) {
    const [, , salt, hash] = entry.hosts.split('|');
    if (!salt || !hash) return false;
    const h = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64');
    return h === hash;
  }
  return matchPatternList(entry.hosts, name);
}

/** Per loaded entry list: exact names -> entries, the rest (wildcards, negations, hashed) tried one by one. */
interface EntryIndex {
  exact: Map<string, KnownHostEntry[]>;
  other: KnownHostEntry[];
  revoked: KnownHostEntry[];
  order: Map<KnownHostEntry, number>;
  byName: Map<string, KnownHostEntry[]>;
}

const indexes = new WeakMap<KnownHostEntry[], EntryIndex>();

function indexFor(entries: KnownHostEntry[]): EntryIndex {
  let ix = indexes.get(entries);
  if (ix) return ix;
  ix = { exact: new Map(), other: [], revoked: [], order: new Map(), byName: new Map() };
  entries.forEach((e, i) => {
    ix!.order.set(e, i);
    if (e.marker === 'revoked') {
      ix!.revoked.push(e);
      return;
    }
    if (e.marker !== undefined) return;
    const c = e.hosts.startsWith('|1|') ? undefined : compileList(e.hosts);
    if (!c?.exactOnly) {
      ix!.other.push(e);
      return;
    }
    for (const n of c.pos) {
      const l = ix!.exact.get(n);
      if (l) l.push(e);
      else ix!.exact.set(n, [e]);
    }
  });
  indexes.set(entries, ix);
  return ix;
}

/** The host entries (no markers) matching one of `names`, in file order. Memoized per entry list and name. */
function entriesFor(entries: KnownHostEntry[], names: string[]): KnownHostEntry[] {
  const ix = indexFor(entries);
  const forName = (name: string): KnownHostEntry[] => {
    let m = ix.byName.get(name);
    if (!m) {
      const exact = ix.exact.get(name.toLowerCase()) ?? [];
      const rest = ix.other.filter((e) => matchHost(e, name));
      m = rest.length ? [...exact, ...rest].sort((a, b) => ix.order.get(a)! - ix.order.get(b)!) : exact;
      ix.byName.set(name, m);
    }
    return m;
  };
  if (names.length === 1) return forName(names[0]);
  const all = new Set<KnownHostEntry>();
  for (const n of names) for (const e of forName(n)) all.add(e);
  return [...all].sort((a, b) => ix.order.get(a)! - ix.order.get(b)!);
}

/** Key type from a wire-format key blob ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa", ...). */
export function keyTypeOf(blob: Buffer): string {
  if (blob.length < 4) return 'unknown';
  const n = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + n).toString('latin1');
}

/** "SHA256:..." like ssh-keygen -l. */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** Decides about a host key. `names` are the lookup names (usually one: hostEntryName(host, port)). */
export function checkHostKey(entries: KnownHostEntry[], names: string[], blob: Buffer): HostKeyVerdict {
  const revoked = indexFor(entries).revoked.find((e) => e.key.equals(blob));
  if (revoked) return { status: 'revoked', entry: revoked };
  const mine = entriesFor(entries, names);
  const same = mine.find((e) => e.key.equals(blob));
  if (same) return { status: 'ok', entry: same };
  const type = keyTypeOf(blob);
  const sameType = mine.find((e) => e.keyType === type);
  if (sameType) return { status: 'changed', entry: sameType };
  const other = mine[0];
  // A host known only with other key types that now offers a new type is treated as changed as well:
  // the known keys were negotiated first (see knownKeyTypes), so the server no longer has them.
  if (other) return { status: 'changed', entry: other };
  return { status: 'unknown', otherTypes: [] };
}

/** Key types known for a host, to put first in the host key algorithm negotiation (as OpenSSH does). */
export function knownKeyTypes(entries: KnownHostEntry[], names: string[]): string[] {
  const types = new Set<string>();
  for (const e of entriesFor(entries, names)) types.add(e.keyType);
  return [...types];
}

/** Host key algorithms (ssh2 names) for known key types, in preference order. */
export function algorithmsForKeyTypes(types: string[]): string[] {
  const out: string[] = [];
  for (const t of types) {
    if (t === 'ssh-rsa') out.push('rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa');
    else out.push(t);
  }
  return out;
}

/** Appends `name keytype base64` (accept-new). Creates the file (0600) and its directory (0700) if needed. */
export function appendKnownHost(file: string, name: string, blob: Buffer, opts: { hash?: boolean } = {}): void {
  const dir = dirname(file);
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  let hostField = name;
  if (opts.hash) {
    const salt = randomBytes(20);
    hostField = `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update(name).digest('base64')}`;
  }
  let prefix = '';
  try {
    const cur = readFileSync(file, 'utf8');
    if (cur.length && !cur.endsWith('\n')) prefix = '\n';
  } catch {
    /* new file */
  }
  try {
    appendFileSync(file, `${prefix}${hostField} ${keyTypeOf(blob)} ${blob.toString('base64')}\n`, { mode: 0o600 });
  } finally {
    invalidate(file);
  }
}

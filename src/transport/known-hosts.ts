/**
 * OpenSSH known_hosts: parsing and host key verification (no prompts, ever).
 *
 * Supported: plain host patterns (comma lists, `*` / `?` wildcards, `!` negation), hashed names (`|1|salt|hmac`),
 * the `[host]:port` form for non-22 ports, `@revoked` (the key is refused for every host), comments and blank
 * lines. `@cert-authority` lines are ignored (runbook does not do OpenSSH certificates; such hosts need their
 * plain host key in known_hosts).
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
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

/** Reads every existing file (missing or unreadable ones are skipped). */
export function loadKnownHosts(files: string[]): KnownHostEntry[] {
  const out: KnownHostEntry[] = [];
  for (const f of files) {
    let text: string;
    try { text = readFileSync(f, 'utf8'); } catch { continue; }
    out.push(...parseKnownHosts(text, f));
  }
  return out;
}

/** The name OpenSSH looks up: `host` for port 22, else `[host]:port`. */
export function hostEntryName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function globToRegExp(pattern: string): RegExp {
  const re = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${re}$`, 'i');
}

/** OpenSSH pattern-list matching: true if some positive pattern matches and no negated one does. */
export function matchPatternList(list: string, name: string): boolean {
  let matched = false;
  for (const p of list.split(',')) {
    if (!p) continue;
    if (p.startsWith('!')) {
      if (globToRegExp(p.slice(1)).test(name)) return false;
    } else if (globToRegExp(p).test(name)) matched = true;
  }
  return matched;
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
  const revoked = entries.find((e) => e.marker === 'revoked' && e.key.equals(blob));
  if (revoked) return { status: 'revoked', entry: revoked };
  const mine = entries.filter((e) => e.marker === undefined && names.some((n) => matchHost(e, n)));
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
  for (const e of entries) if (e.marker === undefined && names.some((n) => matchHost(e, n))) types.add(e.keyType);
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
  } catch { /* new file */ }
  appendFileSync(file, `${prefix}${hostField} ${keyTypeOf(blob)} ${blob.toString('base64')}\n`, { mode: 0o600 });
}

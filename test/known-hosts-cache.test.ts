// tier: unit
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  matchPatternList,
  matchHost,
  parseKnownHosts,
  loadKnownHosts,
  checkHostKey,
  knownKeyTypes,
  appendKnownHost,
} from '../src/transport/known-hosts.js';

// the implementation before the cache, as the reference
function oldGlob(p: string) {
  return new RegExp(
    `^${p
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
    'i',
  );
}
function oldList(list: string, name: string) {
  let m = false;
  for (const p of list.split(',')) {
    if (!p) continue;
    if (p.startsWith('!')) {
      if (oldGlob(p.slice(1)).test(name)) return false;
    } else if (oldGlob(p).test(name)) m = true;
  }
  return m;
}

const blob = (type: string, b = randomBytes(32)) => {
  const t = Buffer.from(type);
  const h = Buffer.alloc(4);
  h.writeUInt32BE(t.length);
  return Buffer.concat([h, t, b]);
};

test('pattern lists: same answers as the uncompiled matcher', () => {
  const atoms = [
    'web1',
    'WEB1',
    'web*',
    '!web2',
    'w?b1',
    '*',
    '!*.corp',
    'db.corp',
    '[10.0.0.1]:2222',
    '[10.0.0.*]:2222',
    '',
    'a.b',
    'a?b',
    '!',
    '10.0.0.1',
  ];
  const names = [
    'web1',
    'Web1',
    'web2',
    'wab1',
    'db.corp',
    'x.corp',
    '[10.0.0.1]:2222',
    '[10.0.0.9]:2222',
    'a.b',
    'axb',
    '',
    '10.0.0.1',
    '10.0.0.12',
  ];
  let n = 0;
  for (let i = 0; i < 3000; i++) {
    const k = 1 + (i % 4);
    const list = Array.from({ length: k }, (_, j) => atoms[(i * 7 + j * 13 + (i >> 3)) % atoms.length]).join(',');
    for (const name of names) {
      assert.equal(matchPatternList(list, name), oldList(list, name), `${list} vs ${name}`);
      n++;
    }
  }
  assert.ok(n > 30000);
});

test('checkHostKey/knownKeyTypes on a big file: same verdicts as a linear scan, file order kept', () => {
  const lines: string[] = [];
  const keys = new Map<string, Buffer>();
  for (let i = 0; i < 300; i++) {
    const name = `[10.1.${i >> 8}.${i & 255}]:22${i % 10}`;
    const k = blob('ssh-ed25519');
    keys.set(name, k);
    if (i % 3 === 0) {
      const salt = randomBytes(20);
      lines.push(
        `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update(name).digest('base64')} ssh-ed25519 ${k.toString('base64')}`,
      );
    } else if (i % 3 === 1) lines.push(`${name},alias${i} ssh-ed25519 ${k.toString('base64')}`);
    else lines.push(`${name.toUpperCase()} ssh-ed25519 ${k.toString('base64')}`);
  }
  const wild = blob('ecdsa-sha2-nistp256');
  lines.push(`[10.1.0.*]:220,!*.x ecdsa-sha2-nistp256 ${wild.toString('base64')}`);
  const rev = blob('ssh-ed25519');
  lines.push(`@revoked * ssh-ed25519 ${rev.toString('base64')}`);
  const entries = parseKnownHosts(lines.join('\n'), 'kh');
  for (const [name, k] of keys) {
    const linear = entries.filter((e) => e.marker === undefined && matchHost(e, name));
    const v = checkHostKey(entries, [name], k);
    assert.equal(v.status, 'ok', name);
    assert.equal(
      (v as { entry: unknown }).entry,
      linear.find((e) => e.key.equals(k)),
    );
    assert.deepEqual(knownKeyTypes(entries, [name]), [...new Set(linear.map((e) => e.keyType))]);
    const other = checkHostKey(entries, [name], blob('ssh-ed25519'));
    assert.equal(other.status, 'changed');
    assert.equal(
      (other as { entry: unknown }).entry,
      linear.find((e) => e.keyType === 'ssh-ed25519'),
    );
  }
  assert.equal(checkHostKey(entries, ['[10.1.0.4]:220'], wild).status, 'ok');
  assert.equal(checkHostKey(entries, ['nobody'], blob('ssh-ed25519')).status, 'unknown');
  assert.equal(checkHostKey(entries, ['[10.1.0.1]:221'], rev).status, 'revoked');
});

test('loadKnownHosts: cached while unchanged, re-read after a change, invalidated by accept-new', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kh-'));
  const f = join(dir, 'known_hosts');
  const k1 = blob('ssh-ed25519');
  writeFileSync(f, `h1 ssh-ed25519 ${k1.toString('base64')}\n`);
  const a = loadKnownHosts([f, join(dir, 'missing')]);
  const b = loadKnownHosts([f, join(dir, 'missing')]);
  assert.equal(a, b, 'same parsed array while the file is unchanged');
  assert.equal(checkHostKey(a, ['h2'], k1).status, 'unknown');
  const k2 = blob('ssh-ed25519');
  appendKnownHost(f, 'h2', k2);
  const c = loadKnownHosts([f, join(dir, 'missing')]);
  assert.notEqual(c, a);
  assert.equal(checkHostKey(c, ['h2'], k2).status, 'ok');
  appendFileSync(f, `h3 ssh-ed25519 ${k1.toString('base64')}\n`); // changed behind our back
  const d = loadKnownHosts([f, join(dir, 'missing')]);
  assert.equal(checkHostKey(d, ['h3'], k1).status, 'ok');
  writeFileSync(join(dir, 'missing'), `h4 ssh-ed25519 ${k2.toString('base64')}\n`); // a file that appears
  assert.equal(checkHostKey(loadKnownHosts([f, join(dir, 'missing')]), ['h4'], k2).status, 'ok');
});

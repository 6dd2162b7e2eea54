// Host key verification against real sshd hosts: unknown / changed / revoked / hashed / [host]:port /
// accept-new then strict / off.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canUseNamespaces } from './harness/netns.js';
import { startSshHosts, type SshFleet, type SshHost } from './harness/sshd.js';
import { SshTransport } from '../src/transport/ssh.js';
import type { HostKeyPolicy } from '../src/transport/known-hosts.js';
import { matchPatternList, parseKnownHosts, checkHostKey } from '../src/transport/known-hosts.js';

let fleet: SshFleet;
let h: SshHost;
let dir: string;
let otherKey: string; // "ssh-ed25519 AAAA..." not belonging to any host

before(async () => {
  // a second port (netns mode: each host has its own address, so no collisions)
  const netns = canUseNamespaces() && process.env.RUNBOOK_TEST_SSH_MODE !== 'local';
  fleet = await startSshHosts(1, netns ? { sshdConfigExtra: 'Port 2222' } : {});
  console.log(`# ssh fleet mode: ${fleet.mode}`);
  h = fleet.hosts[0];
  dir = mkdtempSync(join(tmpdir(), 'rb-hostkeys-'));
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'other')]);
  otherKey = readFileSync(join(dir, 'other.pub'), 'utf8').trim().split(' ').slice(0, 2).join(' ');
});
after(async () => {
  await fleet?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function khFile(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}
function transport(file: string, policy: HostKeyPolicy = 'strict', port = h.port): SshTransport {
  return new SshTransport(
    { kind: 'ssh', name: h.name, address: h.address, port, user: h.user, privateKeyFile: fleet.clientKeyFile },
    { hostKeyChecking: policy, knownHostsFiles: [file], connectTimeoutMs: 20_000, sshConfigFile: 'none', agent: false },
  );
}
async function connectErr(t: SshTransport): Promise<{ code: string; message: string }> {
  try {
    await t.connect();
  } catch (e) {
    return e as { code: string; message: string };
  } finally {
    await t.close();
  }
  assert.fail('connected, but should have been refused');
}
const entry = (port = h.port): string => (port === 22 ? h.address : `[${h.address}]:${port}`);

test('unknown host key under strict: E_HOSTKEY_UNKNOWN naming the host and the ssh-keyscan fix', async () => {
  const e = await connectErr(transport(khFile('empty', '')));
  assert.equal(e.code, 'E_HOSTKEY_UNKNOWN');
  assert.match(e.message, new RegExp(h.name));
  assert.match(e.message, /ssh-keyscan -p \d+ -t ssh-ed25519 /);
  assert.match(e.message, /SHA256:/);
});

test('changed host key: E_HOSTKEY_CHANGED, loud, also under accept-new', async () => {
  const f = khFile('changed', `# comment\n${entry()} ${otherKey}\n`);
  const e = await connectErr(transport(f));
  assert.equal(e.code, 'E_HOSTKEY_CHANGED');
  assert.match(e.message, /HAS CHANGED/);
  assert.match(e.message, /changed:2/);
  const e2 = await connectErr(transport(f, 'accept-new'));
  assert.equal(e2.code, 'E_HOSTKEY_CHANGED');
  assert.equal(readFileSync(f, 'utf8'), `# comment\n${entry()} ${otherKey}\n`, 'accept-new must not touch a changed entry');
});

test('@revoked key is refused even when also listed as valid, and under off', async () => {
  const f = khFile('revoked', `${entry()} ${h.hostKeyPublic}\n@revoked * ${h.hostKeyPublic}\n`);
  assert.equal((await connectErr(transport(f))).code, 'E_HOSTKEY_REVOKED');
  assert.equal((await connectErr(transport(f, 'off'))).code, 'E_HOSTKEY_REVOKED');
});

test('hashed known_hosts entries (ssh-keygen -H) are honoured', async () => {
  const f = khFile('hashed', readFileSync(fleet.knownHostsFile, 'utf8'));
  execFileSync('ssh-keygen', ['-q', '-H', '-f', f], { stdio: 'ignore' });
  assert.match(readFileSync(f, 'utf8'), /^\|1\|/);
  const t = transport(f);
  await t.connect();
  assert.equal((await t.exec('echo ok')).stdout, 'ok\n');
  await t.close();
});

test('[host]:port entries match only that port; a plain entry does not cover another port', async (t) => {
  const port = fleet.mode === 'netns' ? 2222 : h.port;
  if (fleet.mode !== 'netns') t.diagnostic('local mode: the fleet port is already non-22');
  const ok = transport(khFile('port', `[${h.address}]:${port} ${h.hostKeyPublic}\n`), 'strict', port);
  await ok.connect();
  await ok.close();
  const e = await connectErr(transport(khFile('plain', `${h.address} ${h.hostKeyPublic}\n`), 'strict', port));
  assert.equal(e.code, 'E_HOSTKEY_UNKNOWN');
  assert.match(e.message, new RegExp(`-p ${port} `));
});

test('accept-new adds the key (with a warning); a second run under strict passes', async () => {
  const f = khFile('acceptnew', '');
  const t1 = transport(f, 'accept-new');
  await t1.connect();
  assert.match(t1.warnings.join('\n'), /added the host key/);
  await t1.close();
  assert.equal(readFileSync(f, 'utf8'), `${entry()} ${h.hostKeyPublic}\n`);
  const t2 = transport(f, 'strict');
  await t2.connect();
  assert.deepEqual(t2.warnings, []);
  assert.equal((await t2.exec('echo strict')).stdout, 'strict\n');
  await t2.close();
});

test('off: connects to an unknown host with a warning naming it', async () => {
  const t = transport(khFile('off', ''), 'off');
  await t.connect();
  assert.match(t.warnings.join('\n'), new RegExp(`host key checking is off.*${h.name}.*NOT verified`));
  await t.close();
});

test('known_hosts patterns: wildcards, negation, comma lists, cert-authority ignored', () => {
  assert.equal(matchPatternList('*.example.com,!bad.example.com', 'a.example.com'), true);
  assert.equal(matchPatternList('*.example.com,!bad.example.com', 'bad.example.com'), false);
  assert.equal(matchPatternList('10.0.0.?', '10.0.0.7'), true);
  assert.equal(matchPatternList('10.0.0.?', '10.0.0.17'), false);
  const key = Buffer.from(h.hostKeyPublic.split(' ')[1], 'base64');
  const entries = parseKnownHosts(`@cert-authority * ${h.hostKeyPublic}\nweb*,!web9 ${h.hostKeyPublic}\n`, 'x');
  assert.equal(checkHostKey(entries, ['web1'], key).status, 'ok');
  assert.equal(checkHostKey(entries, ['web9'], key).status, 'unknown');
  assert.equal(checkHostKey(entries, ['db1'], key).status, 'unknown');
});

// OpenSSH client config through bin/runbook (--ssh-config FILE) against real sshd hosts: Host patterns
// (wildcards, negation), HostName/User/Port/IdentityFile, first match wins, ProxyJump from the config and
// from ansible_ssh_common_args (the target is unreachable from the controller: only the jump host gets in).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from 'js-yaml';
import { canUseNamespaces } from './harness/netns.js';
import { startSshHosts, type SshFleet, type SshHost } from './harness/sshd.js';
import { waitFor } from './harness/wait.js';
import {
  background,
  cleanEnv,
  fixture,
  hostEnd,
  hostEnds,
  runbook,
  tmp,
  waitWhileRunning,
  why,
  write,
  type CliRun,
} from './fixtures/ssh/cli.js';
import { parseSshConfig, resolveSshConfig, parseSshArgs } from '../src/transport/ssh-config.js';

let fleet: SshFleet;
let dir: string;
let env: NodeJS.ProcessEnv;
let knownHosts: string;
const ALT_PORT = 2222;

before(async () => {
  // every sshd also listens on ALT_PORT (netns: each host has its own address); local mode: one port each
  const names = ['web1', 'web2', 'db1', 'jump', 'inner'];
  fleet = await startSshHosts(names.length, {
    names,
    prefix: 'rbc',
    sshdConfigExtra: canUseNamespaces() && process.env.RUNBOOK_TEST_SSH_MODE !== 'local' ? `Port ${ALT_PORT}` : '',
  });
  console.log(`# ssh fleet mode: ${fleet.mode}`);
  dir = tmp('rb-ssh-config-');
  env = cleanEnv(join(dir, 'home'));
  knownHosts = write(
    join(dir, 'known_hosts'),
    fleet.hosts
      .map((h) => `${h.address} ${h.hostKeyPublic}\n[${h.address}]:${h.port === 22 ? ALT_PORT : h.port} ${h.hostKeyPublic}\n`)
      .join(''),
  );
});
after(async () => {
  await fleet?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const H = (n: string): SshHost => fleet.host(n);

function apply(inv: Record<string, Record<string, unknown>>, extra: string[], name: string): Promise<CliRun> {
  const invFile = write(join(dir, `${name}.yml`), dump({ all: { hosts: inv } }));
  return runbook(
    [
      'apply',
      fixture('ssh-echo.yml'),
      '-i',
      invFile,
      '--json',
      '--state-dir',
      join(dir, `state-${name}`),
      '--known-hosts',
      knownHosts,
      ...extra,
    ],
    { env },
  );
}

/** Waits until the sshd logs show at least the expected connections (`what`), so exact counts can follow. */
function connectionsLogged(enough: () => boolean, what: string): Promise<boolean> {
  return waitFor(enough, { what: `the sshd logs to show the connections (${what})`, timeoutMs: 10_000 });
}

/** The `who` step's output per host: "INVENTORY_NAME user@hostname". */
function whoOut(r: CliRun): Record<string, string> {
  return Object.fromEntries(
    r.events.filter((e) => e.type === 'step-end' && e.step === 'who').map((e) => [e.host, (e.stdout ?? '').trim()]),
  );
}

test('Host patterns: aliases resolve through HostName/User/Port/IdentityFile; wildcards, negation, first match wins', async () => {
  const netns = fleet.mode === 'netns';
  const user = fleet.users.login;
  const web1 = H('web1'),
    web2 = H('web2'),
    db1 = H('db1');
  const web1Port = netns ? ALT_PORT : web1.port;
  // Expected: alias-web1 -> web1:ALT_PORT as root (User from "alias-*" comes before "*"; HostName/Port of the
  // first block win over the later 192.0.2.1/22); alias-web2 -> web2 as rbuser (negated out of "alias-*");
  // alias-db1 -> db1 through "alias-db?"; plain-db (ansible_host = db1's address) -> only "*".
  const other = netns ? 'rbuser' : user;
  const config = write(
    join(dir, 'config-patterns'),
    `# test config
Host alias-web1
  HostName ${web1.address}
  Port ${web1Port}
Host alias-web2 alias-db?
  IdentityFile ${fleet.clientKeyFile}
Host alias-web2
  HostName ${web2.address}
  Port ${web2.port}
Host alias-db?
  HostName ${db1.address}
  Port ${db1.port}
Host alias-* !alias-web2
  User ${user}
  HostName 192.0.2.1
  Port 1
  IdentityFile ${fleet.clientKeyFile}
Host *
  User=${other}
  IdentityFile "${fleet.clientKeyFile}"
  IdentitiesOnly yes
  Port ${db1.port}
`,
  );
  const lock = (n: string) => ({ runbook_lock_path: `/tmp/rb-lock-${n}` });
  const before = Object.fromEntries(fleet.hosts.map((h) => [h.name, fleet.connectionCount(h)]));
  // inventory: nothing but the alias (no address, user, port or key); plain-db has only ansible_host
  const r = await apply(
    {
      'alias-web1': lock('alias-web1'),
      'alias-web2': lock('alias-web2'),
      'alias-db1': lock('alias-db1'),
      'plain-db': { ansible_host: db1.address, ...lock('plain-db') },
    },
    ['--ssh-config', config],
    'patterns',
  );
  assert.equal(r.code, 0, why(r));
  const name = (h: SshHost): string => (netns ? h.name : execFileSync('hostname', { encoding: 'utf8' }).trim());
  assert.deepEqual(whoOut(r), {
    'alias-web1': `alias-web1 ${user}@${name(web1)}`,
    'alias-web2': `alias-web2 ${other}@${name(web2)}`,
    'alias-db1': `alias-db1 ${user}@${name(db1)}`,
    'plain-db': `plain-db ${other}@${name(db1)}`,
  });
  const delta = (h: SshHost): number => fleet.connectionCount(h) - before[h.name];
  // sshd logs a connection when it accepts it: wait until the expected ones are logged, then compare exactly.
  await connectionsLogged(() => delta(web1) >= 1 && delta(web2) >= 1 && delta(db1) >= 2, 'web1 1, web2 1, db1 2');
  assert.deepEqual([delta(web1), delta(web2), delta(db1), delta(H('jump'))], [1, 1, 2, 0]);
  if (netns)
    assert.match(
      fleet.logText(web1),
      new RegExp(`Connection from \\S+ port \\d+ on ${web1.address.replace(/\./g, '\\.')} port ${ALT_PORT}`),
      'web1 reached on the Port from the config',
    );
  // the same aliases without the config file: nothing resolves
  const none = await apply({ 'alias-web1': lock('alias-web1') }, ['--ssh-config', 'none', '--connect-timeout', '3s'], 'patterns-none');
  assert.equal(none.code, 2, why(none));
  assert.equal(hostEnd(none, 'alias-web1').status, 'unreachable');
});

test('ProxyJump: from the config (jump host resolved through the config too) and from ansible_ssh_common_args', async (t) => {
  if (fleet.mode !== 'netns') {
    t.diagnostic('needs netns mode (a target only the jump host can reach)');
    return;
  }
  const jump = H('jump'),
    inner = H('inner');
  // inner drops every packet to the controller: only other hosts (the jump host) can talk to it
  execFileSync('ip', ['-n', inner.netns!, 'route', 'add', 'blackhole', `${fleet.network!.gateway}/32`]);
  const direct = await apply(
    { 'inner-direct': { ansible_host: inner.address, ansible_user: 'root', ansible_ssh_private_key_file: fleet.clientKeyFile } },
    ['--ssh-config', 'none', '--connect-timeout', '2s'],
    'direct',
  );
  assert.equal(direct.code, 2, why(direct));
  assert.match(hostEnd(direct, 'inner-direct').message ?? '', /no SSH handshake within 2000 ms/);

  const fromJump = new RegExp(`^Connection from ${jump.address.replace(/\./g, '\\.')} port`, 'gm');
  const jumpBefore = fleet.connectionCount(jump);
  const viaJumpBefore = (fleet.logText(inner).match(fromJump) ?? []).length;
  const config = write(
    join(dir, 'config-jump'),
    `Host inner-via-jump
  HostName ${inner.address}
  ProxyJump jumpbox
Host jumpbox
  HostName ${jump.address}
Host *
  User root
  IdentityFile ${fleet.clientKeyFile}
`,
  );
  const r = await apply(
    {
      'inner-via-jump': { runbook_lock_path: '/tmp/rb-lock-a' },
      'inner-args': {
        ansible_host: inner.address,
        ansible_user: 'root',
        ansible_ssh_private_key_file: fleet.clientKeyFile,
        ansible_ssh_common_args: `-o ProxyJump=root@${jump.address} -o StrictHostKeyChecking=yes`,
        runbook_lock_path: '/tmp/rb-lock-b',
      },
    },
    ['--ssh-config', config, '--connect-timeout', '20s'], // two hops; generous: the timeout is not what is tested
    'jump',
  );
  assert.equal(r.code, 0, why(r));
  assert.deepEqual(whoOut(r), { 'inner-via-jump': 'inner-via-jump root@inner', 'inner-args': 'inner-args root@inner' });
  // an OpenSSH option runbook does not apply is said, not silently dropped
  assert.deepEqual(
    r.events.filter((e) => e.type === 'warning').map((e) => [e.host, (e.message ?? '').replace(/ is not applied.*/, '')]),
    [['inner-args', 'StrictHostKeyChecking yes (ssh config / ansible_ssh_common_args)']],
  );
  await connectionsLogged(
    () => fleet.connectionCount(jump) - jumpBefore >= 1 && (fleet.logText(inner).match(fromJump) ?? []).length - viaJumpBefore >= 2,
    'one on jump, two on inner from jump',
  );
  // Both targets reach the jump host as the same login with the same key: one connection to it, shared.
  assert.equal(fleet.connectionCount(jump) - jumpBefore, 1, 'one jump connection for both targets');
  assert.equal((fleet.logText(inner).match(fromJump) ?? []).length - viaJumpBefore, 2, 'both reached inner from the jump host');
});

test('ProxyJump: every target behind one jump host shares one connection to it for the whole run', async (t) => {
  if (fleet.mode !== 'netns') {
    t.diagnostic('needs netns mode (hosts that reach each other)');
    return;
  }
  const jump = H('jump');
  const targets = ['web1', 'web2', 'db1', 'inner'].map(H);
  const before = fleet.connectionCount(jump);
  const inv = Object.fromEntries(
    targets.map((h) => [
      `via-${h.name}`,
      {
        ansible_host: h.address,
        ansible_user: 'root',
        ansible_ssh_private_key_file: fleet.clientKeyFile,
        ansible_ssh_common_args: `-o ProxyJump=root@${jump.address}`,
        runbook_lock_path: `/run/rb-lock-pool-${h.name}`,
      },
    ]),
  );
  const r = await apply(inv, ['--ssh-config', 'none', '--forks', '4', '--connect-timeout', '20s'], 'pool');
  assert.equal(r.code, 0, why(r));
  assert.deepEqual(Object.keys(whoOut(r)).sort(), targets.map((h) => `via-${h.name}`).sort());
  await connectionsLogged(() => fleet.connectionCount(jump) - before >= 1, 'a connection on the jump host');
  assert.equal(fleet.connectionCount(jump) - before, 1, 'one connection to the jump host, shared by the four targets');
});

test('ProxyJump: the bastion connection lost mid-run: its targets in flight end unknown and are rolled back, one new connection serves the rest', async (t) => {
  if (fleet.mode !== 'netns') {
    t.diagnostic('needs netns mode (hosts that reach each other)');
    return;
  }
  const jump = H('jump');
  const targets = ['web1', 'web2', 'db1', 'inner'].map(H);
  const mark = `lost-jump-${process.pid}`;
  const rb = write(
    join(dir, 'hold.yml'),
    `name: hold\nmax_failed: 2\nsteps:\n  - name: hold\n    run: touch /tmp/rb-held-${mark}; while [ ! -e /tmp/rb-go-${mark} ]; do sleep 0.1; done\n    rollback: touch /tmp/rb-undone-${mark}\n`,
  );
  const inv = Object.fromEntries(
    targets.map((h) => [
      h.name,
      {
        ansible_host: h.address,
        ansible_user: 'root',
        ansible_ssh_private_key_file: fleet.clientKeyFile,
        ansible_ssh_common_args: `-o ProxyJump=root@${jump.address}`,
        runbook_lock_path: `/run/rb-lock-lost-${h.name}`,
      },
    ]),
  );
  const invFile = write(join(dir, 'lost-jump.yml'), dump({ all: { hosts: inv } }));
  const before = fleet.connectionCount(jump);
  const has = async (h: SshHost, f: string) => (await fleet.exec(h, `[ -e /tmp/${f} ]`)).code === 0;
  // forks 2: two targets hold on the bastion connection, the other two start once those have ended
  const run = background(
    runbook(
      [
        'apply',
        rb,
        '-i',
        invFile,
        '--json',
        '--forks',
        '2',
        '--ssh-config',
        'none',
        '--connect-timeout',
        '20s',
        '--known-hosts',
        knownHosts,
        '--state-dir',
        join(dir, 'state-lost-jump'),
      ],
      { env },
    ),
  );
  const held = await waitWhileRunning(
    run,
    async () => {
      const hs: SshHost[] = [];
      for (const h of targets) if (await has(h, `rb-held-${mark}`)) hs.push(h);
      return hs.length === 2 && hs;
    },
    { what: 'two targets holding in their step, through the bastion' },
  );
  // Cut our connection on the bastion: every sshd there but its listener (the oldest).
  const cut = await fleet.exec(jump, 'L=$(pgrep -o -x sshd); for p in $(pgrep -x sshd); do [ "$p" = "$L" ] || kill -KILL "$p"; done');
  assert.equal(cut.code, 0, cut.stderr);
  const rest = targets.filter((h) => !held.includes(h));
  for (const h of rest) await fleet.exec(h, `touch /tmp/rb-go-${mark}`);
  const r = await run.done;
  const ends = hostEnds(r);
  for (const h of held) {
    assert.equal(ends[h.name], 'rolled-back', `${h.name} was in flight when the bastion connection was lost\n${why(r)}`);
    assert.match(String(hostEnd(r, h.name).message), /unknown outcome/);
    assert.ok(await has(h, `rb-undone-${mark}`), `${h.name}: its step was rolled back`);
    // The rollback came only after its command was shown dead, through the new connection.
    assert.equal((await fleet.exec(h, `pgrep -f "[r]b-go-${mark}"`)).code, 1, `${h.name}: the held command is not left running`);
  }
  for (const h of rest) {
    assert.equal(ends[h.name], 'changed', `${h.name} started after the loss\n${why(r)}`);
    assert.equal(await has(h, `rb-undone-${mark}`), false);
  }
  await connectionsLogged(() => fleet.connectionCount(jump) - before >= 2, 'the first bastion connection and the re-opened one');
  assert.equal(fleet.connectionCount(jump) - before, 2, 'the bastion connection was re-opened once, for all the targets after the loss');
});

test('config parsing: patterns, negation, first value wins, IdentityFile accumulates, args before the file', () => {
  const blocks = parseSshConfig(
    `User top
Host a* !ab
  HostName one
  IdentityFile k1
Host a?
  HostName two
  Port 2200
  IdentityFile k2
Host *
  Port 22
  ProxyJump none
  IdentityFile "/keys/with space"
  User "quoted"
`,
    'cfg',
  );
  assert.deepEqual(resolveSshConfig(blocks, 'ax'), {
    hostName: 'one',
    user: 'top',
    port: 2200,
    identityFiles: ['k1', 'k2', '/keys/with space'],
    identitiesOnly: undefined,
    proxyJump: undefined,
    connectTimeoutSec: undefined,
    userKnownHostsFiles: undefined,
    strictHostKeyChecking: undefined,
    serverAliveIntervalSec: undefined,
    serverAliveCountMax: undefined,
    ignored: [],
  });
  const ab = resolveSshConfig(blocks, 'ab');
  assert.deepEqual([ab.hostName, ab.port, ab.identityFiles], ['two', 2200, ['k2', '/keys/with space']]);
  const b = resolveSshConfig(blocks, 'bcd');
  assert.deepEqual([b.hostName, b.port, b.user], [undefined, 22, 'top']);
  assert.equal(resolveSshConfig(parseSshConfig('Host x\n  User "q u"\n', 'c2'), 'x').user, 'q u');
  const args = parseSshArgs(`-o ProxyJump=j1 -o 'Port 2201' -l me -o StrictHostKeyChecking=no`);
  const withArgs = resolveSshConfig(blocks, 'ax', args.lines);
  assert.deepEqual([withArgs.proxyJump, withArgs.port, withArgs.user, withArgs.strictHostKeyChecking], ['j1', 2201, 'me', 'no']);
});

// The harness itself: real sshd hosts start, are isolated from each other, and leave nothing behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { startSshHosts, TEST_PASSWORD } from './harness/sshd.js';
import { canUseNamespaces, createNetwork } from './harness/netns.js';

function ssh(argv: string[], cmd: string, input?: string) {
  return spawnSync(argv[0], [...argv.slice(1), cmd], { encoding: 'utf8', input, timeout: 20_000 });
}

test('ssh fleet: hosts start, are reachable with the fleet key and known_hosts, and are isolated', async (t) => {
  const t0 = Date.now();
  const fleet = await startSshHosts(3);
  t.diagnostic(`ssh fleet mode: ${fleet.mode}, 3 hosts started in ${Date.now() - t0} ms`);
  try {
    for (const h of fleet.hosts) {
      const r = ssh(fleet.sshArgv(h), 'echo ok; echo "$SHLVL"');
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout.split('\n')[0], 'ok');
    }
    assert.equal(readFileSync(fleet.knownHostsFile, 'utf8').trim().split('\n').length, 3);
    assert.match(fleet.inventoryYaml(), /ansible_ssh_private_key_file: /);
    if (fleet.mode === 'netns') {
      assert.deepEqual(
        fleet.hosts.map((h) => h.address),
        fleet.hosts.map((_, i) => `${fleet.network!.subnet.split('.').slice(0, 3).join('.')}.${i + 2}`),
      );
      // own hostname, own pid namespace, own /var/lib
      const [h1, h2] = fleet.hosts;
      assert.equal((await fleet.exec(h1, 'hostname')).stdout.trim(), 'h1');
      assert.equal((await fleet.exec(h1, 'cat /proc/1/comm')).stdout.trim(), 'sshd');
      await fleet.exec(h1, 'echo one > /var/lib/marker');
      assert.equal(readFileSync(fleet.hostPath(h1, '/var/lib/marker'), 'utf8'), 'one\n');
      assert.equal((await fleet.exec(h2, 'test -e /var/lib/marker; echo $?')).stdout.trim(), '1');
      assert.equal(existsSync('/var/lib/marker'), false);
      // test users: sudo with password for rbuser (prompt on stderr), no password for rbnopw
      const r = ssh(fleet.sshArgv(h1, 'rbuser'), 'sudo -S -p "<PROMPT>" id -u', `${TEST_PASSWORD}\n`);
      assert.equal(r.stdout.trim(), '0', r.stderr);
      assert.match(r.stderr, /<PROMPT>/);
      const r2 = ssh(fleet.sshArgv(h1, 'rbnopw'), 'sudo -n id -u');
      assert.equal(r2.stdout.trim(), '0', r2.stderr);
      // users exist only in the hosts' view
      assert.doesNotMatch(readFileSync('/etc/passwd', 'utf8'), /^rbuser:/m);
    }
    // connection counting, kill and restart
    const h3 = fleet.hosts[2];
    const before = fleet.connectionCount(h3);
    assert.ok(before >= 1);
    ssh(fleet.sshArgv(h3), 'true');
    assert.equal(fleet.connectionCount(h3), before + 1);
    const oldPid = h3.pid;
    await fleet.kill(h3);
    assert.notEqual(ssh(fleet.sshArgv(h3), 'true').status, 0);
    await fleet.restart(h3);
    assert.notEqual(h3.pid, oldPid);
    assert.equal(ssh(fleet.sshArgv(h3), 'echo back').stdout, 'back\n');
  } finally {
    await fleet.stop();
  }
  for (const h of fleet.hosts)
    assert.equal(
      existsSync(`/proc/${h.pid}`) && !readFileSync(`/proc/${h.pid}/stat`, 'utf8').includes(') Z'),
      false,
      `sshd ${h.pid} still running`,
    );
  assert.equal(existsSync(fleet.dir), false);
  if (fleet.mode === 'netns') {
    const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const h of fleet.hosts) assert.doesNotMatch(netns, new RegExp(`^${h.netns} `, 'm'));
    assert.equal(existsSync(`/sys/class/net/${fleet.network!.bridge}`), false);
  }
});

test('netns: two networks get distinct subnets and bridges; destroy kills processes in them', {
  skip: !canUseNamespaces() && 'needs root (namespaces)',
}, async () => {
  const [a, b] = await Promise.all([createNetwork('rbt'), createNetwork('rbt')]);
  try {
    assert.notEqual(a.id, b.id);
    assert.notEqual(a.bridge, b.bridge);
    const h = await a.addHost('x');
    const pidFile = `${a.dir}/sleeper.pid`;
    execFileSync('sh', ['-c', `ip netns exec ${h.netns} setsid sleep 300 >/dev/null 2>&1 & echo $! > ${pidFile}`]);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    assert.ok(existsSync(`/proc/${pid}`));
    await a.destroy();
    const st = existsSync(`/proc/${pid}/stat`) ? readFileSync(`/proc/${pid}/stat`, 'utf8') : '';
    assert.ok(st === '' || / Z /.test(st.slice(st.lastIndexOf(')'))), 'sleep in the namespace was killed');
    assert.equal(existsSync(`/run/netns/${h.netns}`), false);
    assert.equal(existsSync(`/sys/class/net/${h.veth}`), false);
  } finally {
    await a.destroy();
    await b.destroy();
  }
  assert.equal(existsSync(`/sys/class/net/${b.bridge}`), false);
});

/**
 * containerd-recover and containerd-health on the node shapes where the failure really happens, over SSH, state
 * checked by the test itself:
 * - containerd 1.6 (Debian 12), 1.7.24 with ENABLE_CRI_SANDBOXES (Debian 13: the seed's exact error), 2.1.9 (sid:
 *   the same record is logged and dropped, the node is healthy and not affected);
 * - k3s and RKE2 LAYOUT STAND-INS: Debian's containerd run by a k3s-agent / rke2-agent unit with their real
 *   paths, flags, log file, ctr and a killall script (test/harness/rancher-layout.sh). The real k3s and RKE2
 *   binaries cannot be fetched here; these tests check the layout handling, not k3s or RKE2 themselves;
 * - a root login on a node without sudo, a sudo login (`ops`), and `ops` on a node without sudo.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Fleet } from './harness/nspawn.js';
import { explain, inode, runbook, treeFingerprint, useFleet, withoutLog, type RunOutput } from './containerd-common.js';

let fleet: Fleet;
useFleet(
  [
    { name: 'k3spanic', suite: 'bookworm', layout: 'k3s' },
    { name: 'rkeseed', suite: 'trixie', layout: 'rke2' },
    { name: 'ctdseed', suite: 'trixie' },
    { name: 'k3sok', suite: 'sid', layout: 'k3s' },
    { name: 'siddrop', suite: 'sid', sudo: false },
    { name: 'k3slock', suite: 'bookworm', layout: 'k3s' },
    { name: 'rkebad', suite: 'bookworm', layout: 'rke2' },
    { name: 'rkepages', suite: 'sid', layout: 'rke2' },
  ],
  (f) => {
    fleet = f;
  },
);

const stepOut = (out: RunOutput, host: string, step: string) => {
  const e = out.events.find((x) => x.type === 'step-end' && x.host === host && x.step === step);
  return `${e?.stdout ?? ''}${e?.stderr ?? ''}`;
};
/** A step's registered stdout (its step-end's stdout is its verify's when it has one). */
const registered = (out: RunOutput, host: string, step: string) =>
  out.events.find((x) => x.type === 'step-end' && x.host === host && x.step === step)?.register?.stdout ?? '';
const hostMessage = (out: RunOutput, host: string) =>
  String(out.events.find((e) => e.type === 'host-end' && e.host === host)?.message ?? '');
/** The node's images in namespace k8s.io: name and digest, one per line. */
const images = async (name: string) => {
  const lines = (await fleet.sh(name, `${fleet.node(name).ctr} -n k8s.io images ls`)).trim().split('\n').slice(1);
  assert.ok(lines.length > 0, `${name} has images`);
  return lines
    .map((l) =>
      l
        .split(/\s+/)
        .filter((_, i) => i === 0 || i === 2)
        .join(' '),
    )
    .join('\n');
};
const facts = (out: RunOutput, host: string) => out.events.find((e) => e.type === 'host-end' && e.host === host)?.facts ?? {};
/** No shim of this node's containerd and nothing mounted below its root or state (what the killall and our clean-up must leave). */
const leftoverShimsAndMounts = async (name: string) => {
  const n = fleet.node(name);
  return (
    await fleet.sh(
      name,
      `for p in $(pgrep containerd-shim); do tr '\\0' ' ' < /proc/$p/cmdline | grep -q -- '-address ${n.socket} ' && echo "shim $p"; done; findmnt -rn -o TARGET | grep -E '^(${n.root}|${n.state})/' | sed 's/^/mount /'; true`,
    )
  ).trim();
};

test('layout stand-ins (k3s, RKE2) and containerd 1.6/1.7/2.x: the broken are repaired through their own socket, the healthy untouched, with version advice', async (t) => {
  await fleet.runContainer('k3spanic', 'web');
  await fleet.break('k3spanic', 'panic');
  const imagesBefore: Record<string, string> = {};
  await fleet.runContainer('rkeseed', 'web');
  imagesBefore.rkeseed = await images('rkeseed');
  const seed = await fleet.break('rkeseed', 'sandbox-record');
  assert.equal(seed.outcome, 'restart-loop', JSON.stringify(seed));
  await fleet.runContainer('ctdseed', 'web');
  imagesBefore.ctdseed = await images('ctdseed');
  const seed2 = await fleet.break('ctdseed', 'sandbox-record');
  assert.equal(seed2.outcome, 'restart-loop', JSON.stringify(seed2));
  assert.match(seed2.line ?? '', /failed to recover state: failed to get metadata for stored sandbox \\?"rb-[^"\\]+\\?": not found/);
  await fleet.runContainer('k3sok', 'web');
  const dropped = await fleet.break('siddrop', 'sandbox-record');
  assert.equal(dropped.outcome, 'dropped', JSON.stringify(dropped));
  // and one scribbled meta page: bolt opens the other one, containerd stays healthy, so the node is left alone
  const meta = await fleet.break('siddrop', 'meta-page', { page: 0 });
  assert.ok(meta.health.healthy, JSON.stringify(meta));
  const pages = await fleet.break('rkepages', 'random-pages', { seed: 7 });
  const seedInodes = {
    rkeseed: await inode(fleet, 'rkeseed', fleet.node('rkeseed').root),
    ctdseed: await inode(fleet, 'ctdseed', fleet.node('ctdseed').root),
  };
  const okBefore = await treeFingerprint(fleet, 'k3sok', fleet.node('k3sok').root);
  const okInode = await inode(fleet, 'k3sok', fleet.node('k3sok').root);

  const hosts = ['k3spanic', 'rkeseed', 'ctdseed', 'k3sok', 'siddrop', 'rkepages'];
  const out = await runbook(fleet, 'apply', 'containerd-recover', { inventory: fleet.writeInventory(`${fleet.dir}/layouts.yml`, hosts) });
  const want: Record<string, string> = {
    k3spanic: 'changed',
    rkeseed: 'changed',
    ctdseed: 'changed',
    k3sok: 'ok',
    siddrop: 'ok',
    rkepages: 'changed',
  };
  if (pages.outcome === 'healthy') want.rkepages = 'ok'; // the random pages were not ones bolt reads
  for (const e of out.events.filter((x) => x.type === 'host-end')) {
    const n = fleet.node(e.host ?? '');
    t.diagnostic(`${e.host} (${n.suite}, ${n.layout}): ${e.status} in ${e.duration_ms} ms (its 5 s settle window included when repaired)`);
  }
  assert.equal(out.code, 0, explain(out));
  assert.deepEqual(out.hosts, want, explain(out));

  // What was found, per node: by evidence, with the version's advice.
  assert.match(
    stepOut(out, 'k3spanic', 'Discover containerd paths'),
    /layout=k3s\nunit=k3s-agent\nroot=\/var\/lib\/rancher\/k3s\/agent\/containerd\n/,
  );
  assert.match(
    stepOut(out, 'k3spanic', 'Discover containerd paths'),
    /ctr=\S+( ctr)?\nlog=\/var\/lib\/rancher\/k3s\/agent\/containerd\/containerd\.log\nkillall=\S*k3s-killall\.sh/,
  );
  assert.match(
    stepOut(out, 'rkeseed', 'Discover containerd paths'),
    /layout=rke2\nunit=rke2-agent\n[\s\S]*ctr=\/var\/lib\/rancher\/rke2\/bin\/ctr\n/,
  );
  assert.match(
    stepOut(out, 'k3spanic', 'Diagnose containerd'),
    /^broken: metadata database corrupt \(\w+, \d+ restarts\): (panic|fatal error|unexpected fault)/,
  );
  for (const h of ['rkeseed', 'ctdseed'])
    assert.match(
      stepOut(out, h, 'Diagnose containerd'),
      /^broken: CRI state corrupt, sandbox record without CRI metadata .*failed to get metadata for stored sandbox/,
      h,
    );
  if (want.rkepages === 'changed') assert.match(stepOut(out, 'rkepages', 'Diagnose containerd'), /^broken: metadata database corrupt/);
  assert.match(
    facts(out, 'ctdseed').containerd ?? '',
    /^containerd 1\.7\.24\S*: affected \(1\.7's CRI sandbox server, ENABLE_CRI_SANDBOXES, was never fixed\): unset ENABLE_CRI_SANDBOXES/,
  );
  assert.match(facts(out, 'rkeseed').containerd ?? '', /^containerd 1\.7\.24\S*: affected/);
  assert.match(facts(out, 'k3spanic').containerd ?? '', /^containerd 1\.6\.20\S*: not affected/);
  assert.match(facts(out, 'siddrop').containerd ?? '', /^containerd 2\.1\.\d+\S*: not affected \(fixed in/);

  // Repaired: healthy through the layout's own socket, nothing of the old containerd left (the k3s killall and our
  // clean-up). The seed's error by its first rung: the same root (its containers kept), meta.db's copy as evidence,
  // the planted record gone. The rest wiped: the old root kept as the backup.
  for (const h of hosts.filter((x) => want[x] === 'changed')) {
    const n = fleet.node(h);
    assert.ok((await fleet.health(h)).healthy, `${h} healthy`);
    const ev = `${n.root}.recover-${out.runId}.evidence`;
    assert.equal(await leftoverShimsAndMounts(h), '', `${h}: shims or mounts of the old containerd`);
    if (h in seedInodes) {
      const id = (h === 'ctdseed' ? seed2 : seed).id;
      assert.match(hostMessage(out, h), /repaired by remove the bad records/, h);
      assert.equal(await inode(fleet, h, n.root), seedInodes[h as keyof typeof seedInodes], `${h}: the root kept`);
      await fleet.sh(h, `! test -e ${n.root}.recover-${out.runId} && test -s ${ev}/meta.db && test -f ${ev}/diagnosis.txt`);
      assert.match(registered(out, h, 'Delete sandbox records without CRI metadata'), new RegExp(`^deleted ${id}$`, 'm'));
      const sandboxes = (await fleet.sh(h, `${n.ctr} -n k8s.io sandboxes ls`))
        .split('\n')
        .slice(1)
        .map((l) => l.split(/\s+/)[0]);
      assert.ok(!sandboxes.includes(id), `${h}: the planted record ${id} is gone: ${sandboxes.join(' ')}`);
      // every image kept, and a new container runs from one (the nodes have no registry); the old one is still there
      assert.equal(await images(h), imagesBefore[h], `${h}: the same images (names, digests)`);
      await fleet.runContainer(h, 'web2');
      assert.equal((await fleet.sh(h, `${n.ctr} -n k8s.io containers ls -q | sort`)).trim(), 'web\nweb2', `${h}: containers`);
    } else {
      assert.match(
        hostMessage(out, h),
        /repaired by wipe \(remove the bad records did not apply; carry the images over did not apply\)/,
        h,
      );
      await fleet.sh(h, `test -d ${n.root}.recover-${out.runId} && test -f ${ev}/diagnosis.txt`);
    }
  }
  assert.equal((await fleet.exec('k3spanic', `k3s ctr -n k8s.io containers ls -q`)).stdout.trim(), '', 'a wiped root has no containers');
  // Healthy nodes untouched: same root inode, same files.
  assert.equal(await inode(fleet, 'k3sok', fleet.node('k3sok').root), okInode);
  assert.equal(await treeFingerprint(fleet, 'k3sok', fleet.node('k3sok').root), okBefore);
  assert.equal(stepOut(out, 'siddrop', 'Diagnose containerd').split('\n')[0], 'healthy');
});

test('layout stand-ins: a held bolt lock is not wiped, and a failed proof rolls the RKE2 layout back exactly', async () => {
  await fleet.break('k3slock', 'bolt-lock');
  const lockBefore = await treeFingerprint(fleet, 'k3slock', fleet.node('k3slock').root);
  const lock = await runbook(fleet, 'apply', 'containerd-recover', {
    inventory: fleet.writeInventory(`${fleet.dir}/lock.yml`, ['k3slock']),
  });
  assert.deepEqual(lock.hosts, { k3slock: 'skipped' }, explain(lock));
  assert.match(stepOut(lock, 'k3slock', 'Diagnose containerd'), /do not wipe: the bolt lock on \S+ is held by PID \d+ \(flock\)/);
  // containerd, waiting for the lock, may append to its log in the root (k3s layout): that file aside, the same.
  assert.equal(withoutLog(await treeFingerprint(fleet, 'k3slock', fleet.node('k3slock').root)), withoutLog(lockBefore));

  const n = fleet.node('rkebad');
  await fleet.runContainer('rkebad', 'web');
  await fleet.break('rkebad', 'silent');
  await fleet.break('rkebad', 'bad-config');
  // Directory mtimes aside (a restart loop touches them), the same files and inodes after the rollback.
  const before = await treeFingerprint(fleet, 'rkebad', n.root);
  const bad = await runbook(fleet, 'apply', 'containerd-recover', { inventory: fleet.writeInventory(`${fleet.dir}/bad.yml`, ['rkebad']) });
  assert.equal(bad.code, 2, explain(bad));
  assert.deepEqual(bad.hosts, { rkebad: 'rolled-back' }, explain(bad));
  const after = await treeFingerprint(fleet, 'rkebad', n.root);
  assert.equal(withoutLog(after), withoutLog(before), 'the root is back exactly (its log file aside: containerd appends to it)');
  await fleet.sh('rkebad', `! test -e ${n.root}.recover-${bad.runId}`);
});

test('become: a root login without sudo needs none; ops with sudo works; ops on a node without sudo fails in one line before anything runs', async () => {
  const root = await runbook(fleet, 'apply', 'containerd-health', {
    inventory: fleet.writeInventory(`${fleet.dir}/root.yml`, ['siddrop']),
  });
  assert.deepEqual(root.hosts, { siddrop: 'ok' }, explain(root));
  await fleet.sh('siddrop', '! command -v sudo');
  const ops = await runbook(fleet, 'apply', 'containerd-health', {
    inventory: fleet.writeInventory(`${fleet.dir}/ops.yml`, ['k3sok', 'siddrop'], { ansible_user: 'ops' }),
  });
  assert.equal(ops.hosts.k3sok, 'ok', explain(ops));
  assert.equal(ops.hosts.siddrop, 'skipped', explain(ops));
  assert.match(
    JSON.stringify(ops.events.filter((e) => e.host === 'siddrop')),
    /"message":"siddrop: logged in as ops, becoming root needs sudo, which is not installed on this host: install sudo, or log in as root \(ansible_user\)","code":"E_NO_SUDO"/,
  );
  assert.equal(
    ops.events.filter((e) => e.host === 'siddrop' && e.type === 'step-end' && e.status === 'changed').length,
    0,
    'nothing ran on siddrop',
  );
});

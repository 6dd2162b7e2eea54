/**
 * containerd-recover against real nodes (systemd + containerd 1.6 in systemd-nspawn, reached over SSH):
 * - three nodes, one healthy, one panicking (with a running container), one with silent CRI death: the
 *   broken two are repaired (proven here over SSH), the healthy one is untouched; wall time printed.
 * - a node with the bolt lock held by another process: its preflight fails, nothing changes.
 * The node state is checked by the test itself (ssh), never taken from the runbook's output.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { META_DB, ROOT, type Fleet } from './harness/nspawn.js';
import { runbook, stepsOf, inode, explain, treeFingerprint, useFleet } from './containerd-common.js';

const CHANGING = [
  'Cordon the node',
  'Drain the node',
  'Stop kubelet',
  'Stop containerd and what it left behind',
  'Back up the data root',
  'Clean the state dir',
  'Start containerd and prove it is healthy',
  'Start kubelet',
  'Uncordon the node',
];

let fleet: Fleet;
useFleet(['healthy1', 'panic2', 'silent3', 'locked4'], (f) => {
  fleet = f;
});

test('three nodes, serial 1: the broken two are repaired and proven healthy, the healthy one is untouched', async () => {
  // A node with pods: a real shim + overlay mount that `systemctl stop containerd` leaves behind (KillMode=process).
  await fleet.runContainer('panic2', 'web');
  await fleet.break('panic2', 'panic');
  await fleet.break('silent3', 'silent');
  const h1 = await fleet.health('healthy1');
  assert.equal(h1.healthy, true, JSON.stringify(h1));
  assert.equal((await fleet.health('panic2')).active, 'activating');
  const s3 = await fleet.health('silent3');
  assert.equal(s3.active, 'active', 'silent CRI death: systemd says active');
  assert.equal(s3.plugins.cri, 'error');
  const inodeBefore = await inode(fleet, 'healthy1', ROOT);
  const dbBefore = await fleet.sh('healthy1', `md5sum ${META_DB}`);
  const shimPid = (await fleet.sh('panic2', 'pgrep -f containerd-shim')).trim();
  assert.match(shimPid, /^\d+$/, 'the old shim survives the panic loop');
  const workPid = (await fleet.sh('panic2', `pgrep -P ${shimPid}`)).trim();
  assert.match(workPid, /^\d+$/, "the container's process runs under the old shim");

  // plan --probe names the broken nodes and their signature, and changes nothing
  const probe = await runbook(fleet, 'plan', 'containerd-recover', {
    extra: ['--probe'],
    inventory: fleet.writeInventory(`${fleet.dir}/three.yml`, ['healthy1', 'panic2', 'silent3']),
  });
  assert.equal(probe.code, 0, probe.stderr);
  assert.match(probe.stderr, /healthy1[\s\S]*Diagnose containerd: healthy/);
  assert.match(probe.stderr, /panic2[\s\S]*broken: metadata database corrupt \(activating, \d+ restarts\): panic: invalid freelist page/);
  // The evidence is containerd's last line naming the corruption, cut at 300 columns: often the CRI plugin's, whose
  // error chain names whichever service Go's map order tried first, so "invalid database" may be past the cut.
  assert.match(
    probe.stderr,
    /silent3[\s\S]*broken: metadata database corrupt \(active, 0 restarts\): .*(invalid database|failed to load plugin io\.containerd\.)/,
  );

  const out = await runbook(fleet, 'apply', 'containerd-recover', { inventory: `${fleet.dir}/three.yml` });
  console.log(`# three-node containerd-recover wall time: ${(out.ms / 1000).toFixed(1)} s`);
  assert.equal(out.code, 0, explain(out));
  assert.deepEqual(out.hosts, { healthy1: 'ok', panic2: 'changed', silent3: 'changed' }, explain(out));
  // serial 1: one node at a time, and only the broken ones take a place in a batch (apply_if)
  const starts = out.events.filter((e) => e.type === 'host-start').map((e) => `${e.host}:${e.batch}`);
  assert.deepEqual(starts, ['panic2:0', 'silent3:1']);

  // The healthy node: it left after its diagnosis (apply_if): no step of the main phase, data dir not touched.
  assert.deepEqual(
    stepsOf(out, 'healthy1').filter((x) => CHANGING.includes(x.split('=')[0])),
    [],
  );
  const healthyEnd = out.events.find((e) => e.type === 'host-end' && e.host === 'healthy1');
  assert.match(String(healthyEnd?.message), /^nothing to do: diag\.stdout\.startsWith\('broken'\)/);
  assert.equal(await inode(fleet, 'healthy1', ROOT), inodeBefore, "the healthy node's data dir is the same directory");
  assert.equal(await fleet.sh('healthy1', `md5sum ${META_DB}`), dbBefore);
  assert.equal((await fleet.exec('healthy1', `ls -d ${ROOT}.recover-* 2>/dev/null`)).stdout, '', 'no backup on the healthy node');

  // The repaired nodes, checked here over SSH.
  for (const n of ['panic2', 'silent3']) {
    assert.deepEqual(
      stepsOf(out, n).filter((x) => CHANGING.includes(x.split('=')[0])),
      [
        'Cordon the node=skipped',
        'Drain the node=skipped',
        'Stop kubelet=changed',
        'Stop containerd and what it left behind=changed',
        'Back up the data root=changed',
        'Clean the state dir=changed',
        'Start containerd and prove it is healthy=changed',
        'Start kubelet=changed',
        'Uncordon the node=skipped',
      ],
      n,
    );
    const h = await fleet.health(n);
    assert.equal(h.healthy, true, `${n}: ${JSON.stringify(h)}`);
    // still healthy a moment later (no restart loop)
    await new Promise((r) => setTimeout(r, 2000));
    const h2 = await fleet.health(n);
    assert.equal(h2.healthy, true);
    assert.equal(h2.nRestarts, h.nRestarts, `${n} restarted after the repair`);
    assert.equal((await fleet.sh(n, 'systemctl is-active kubelet')).trim(), 'active');
    const bk = `${ROOT}.recover-${out.runId}`;
    // the backup is the old root (moved, same filesystem), with the evidence for a bug report next to it
    await fleet.sh(
      n,
      `test -s ${bk}/io.containerd.metadata.v1.bolt/meta.db && test -s ${bk}.evidence/meta.db && test -s ${bk}.evidence/journal.txt && grep -q broken ${bk}.evidence/diagnosis.txt && grep -qx move ${bk}.evidence/method`,
    );
    // the new root is fresh: its meta.db is not the corrupt one
    assert.notEqual(await fleet.sh(n, `md5sum < ${META_DB}`), await fleet.sh(n, `md5sum < ${bk}/io.containerd.metadata.v1.bolt/meta.db`));
    // a new ctr call works end to end (metadata written and read back)
    await fleet.sh(
      n,
      'ctr -n rbtest namespaces create rbtest-ok 2>/dev/null || ctr namespaces create rbtest-ok; ctr namespaces ls | grep -q rbtest-ok',
    );
  }
  // The old shim and its container were stopped, and nothing of them is mounted any more.
  assert.equal((await fleet.exec('panic2', `kill -0 ${shimPid} 2>/dev/null && echo alive`)).stdout, '');
  assert.equal(
    (await fleet.exec('panic2', `kill -0 ${workPid} 2>/dev/null && echo alive`)).stdout,
    '',
    'the orphaned container process was killed too',
  );
  assert.equal((await fleet.exec('panic2', `findmnt -rn -o TARGET | grep -E '^(/run/containerd|${ROOT})/'`)).stdout, '');
  const journal = await fleet.sh('panic2', `grep -c 'panic: invalid freelist page' ${ROOT}.recover-${out.runId}.evidence/journal.txt`);
  assert.ok(Number(journal) >= 1, 'the journal excerpt has the panic');

  // Running it again changes nothing anywhere.
  const again = await runbook(fleet, 'apply', 'containerd-recover', { inventory: `${fleet.dir}/three.yml` });
  assert.equal(again.code, 0, explain(again));
  assert.deepEqual(again.hosts, { healthy1: 'ok', panic2: 'ok', silent3: 'ok' }, explain(again));
});

test('bolt lock held by another process: preflight fails with the reason, nothing changes', async () => {
  await fleet.break('locked4', 'bolt-lock');
  const before = await treeFingerprint(fleet, 'locked4', ROOT);
  const ino = await inode(fleet, 'locked4', ROOT);
  const out = await runbook(fleet, 'apply', 'containerd-recover', {
    inventory: fleet.writeInventory(`${fleet.dir}/locked.yml`, ['locked4']),
  });
  assert.equal(out.code, 2, explain(out));
  assert.deepEqual(out.hosts, { locked4: 'skipped' }, explain(out));
  const diag = out.events.find((e) => e.type === 'step-end' && e.step === 'Diagnose containerd');
  assert.equal(diag?.status, 'failed');
  assert.match(
    diag?.stderr ?? '',
    /do not wipe: the bolt lock on \/var\/lib\/containerd\/io\.containerd\.metadata\.v1\.bolt\/meta\.db is held by PID \d+ \(flock\)/,
  );
  const hostEnd = out.events.find((e) => e.type === 'host-end');
  assert.match(hostEnd?.message ?? '', /Diagnose containerd/);
  assert.equal(out.events.filter((e) => e.type === 'step-start' && e.phase === 'step').length, 0, 'no step started');
  // nothing changed: same directory, same files, the lock holder still there, containerd still waiting
  assert.equal(await inode(fleet, 'locked4', ROOT), ino);
  assert.equal(await treeFingerprint(fleet, 'locked4', ROOT), before);
  assert.equal((await fleet.sh('locked4', 'systemctl is-active rb-boltlock')).trim(), 'active');
  assert.equal((await fleet.exec('locked4', `ls -d ${ROOT}.recover-* 2>/dev/null`)).stdout, '');
  // once the human removes the lock holder, containerd comes up by itself: the wipe was indeed not needed
  await fleet.sh('locked4', 'systemctl stop rb-boltlock');
  await fleet.waitHealthy('locked4');
});

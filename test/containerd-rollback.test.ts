/**
 * containerd-recover when the repair does not work or is interrupted, on real nodes:
 * - containerd still fails after the clean (config.toml broken at the repaired start): the node is rolled
 *   back to exactly its former files, `rolled-back`, exit 2, and with max_failed 0 the next node never starts.
 * - SIGINT right after the clean step: the node is restored, exit 130.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ROOT, type Fleet } from './harness/nspawn.js';
import { runbook, inode, explain, treeFingerprint, stepsOf, useFleet } from './containerd-common.js';

let fleet: Fleet;
useFleet(['badcfg1', 'next2', 'sigint3'], (f) => {
  fleet = f;
});

test('containerd still fails after the clean: rolled back to exactly its former state, the next node is not started', async () => {
  await fleet.runContainer('badcfg1', 'web');
  await fleet.break('badcfg1', 'panic');
  await fleet.break('badcfg1', 'bad-config');
  await fleet.break('next2', 'sandboxes-file');
  const before1 = await treeFingerprint(fleet, 'badcfg1', ROOT);
  const ino1 = await inode(fleet, 'badcfg1', ROOT);
  const before2 = await treeFingerprint(fleet, 'next2', ROOT);

  const out = await runbook(fleet, 'apply', 'containerd-recover', {
    inventory: fleet.writeInventory(`${fleet.dir}/two.yml`, ['badcfg1', 'next2']),
  });
  assert.equal(out.code, 2, explain(out));
  assert.deepEqual(out.hosts, { badcfg1: 'rolled-back', next2: 'skipped' }, explain(out));
  const failed = out.events.find((e) => e.type === 'step-end' && e.host === 'badcfg1' && e.status === 'failed');
  assert.equal(failed?.step, 'Start containerd and prove it is healthy', explain(out));
  // rollbacks in reverse order, all ok
  const rb = out.events.filter((e) => e.type === 'rollback-end' && e.host === 'badcfg1').map((e) => `${e.step}=${e.status}`);
  assert.deepEqual(
    rb,
    [
      'Start containerd and prove it is healthy=ok',
      'Back up the data root=ok',
      'Stop containerd and what it left behind=ok',
      'Stop kubelet=ok',
    ],
    explain(out),
  );
  // next2 was never contacted beyond its preflight
  assert.equal(out.events.filter((e) => e.type === 'step-start' && e.host === 'next2' && e.phase === 'step').length, 0);

  // Same directory, same files (names, sizes, inodes, mtimes, contents), no backup left behind.
  assert.equal(await inode(fleet, 'badcfg1', ROOT), ino1);
  assert.equal(await treeFingerprint(fleet, 'badcfg1', ROOT), before1);
  assert.equal((await fleet.exec('badcfg1', `ls -d ${ROOT}.recover-${out.runId} 2>/dev/null`)).stdout, '');
  // the evidence stays for the human; kubelet is running again; containerd is back to what it was (failing)
  await fleet.sh('badcfg1', `test -s ${ROOT}.recover-${out.runId}.evidence/journal.txt`);
  assert.equal((await fleet.sh('badcfg1', 'systemctl is-active kubelet')).trim(), 'active');
  assert.notEqual((await fleet.health('badcfg1')).active, 'active');
  // the node that was not started is exactly as it was
  assert.equal(await treeFingerprint(fleet, 'next2', ROOT), before2);
  assert.equal((await fleet.exec('next2', `ls -d ${ROOT}.recover-* 2>/dev/null`)).stdout, '');
});

test('SIGINT right after the clean step: the node is restored and the run exits 130', async () => {
  await fleet.break('sigint3', 'panic');
  const before = await treeFingerprint(fleet, 'sigint3', ROOT);
  const ino = await inode(fleet, 'sigint3', ROOT);
  let sent = false;
  const out = await runbook(fleet, 'apply', 'containerd-recover', {
    inventory: fleet.writeInventory(`${fleet.dir}/sigint.yml`, ['sigint3']),
    onEvent: (e, child) => {
      if (!sent && e.type === 'step-end' && e.step === 'Clean the state dir' && e.status === 'changed') {
        sent = true;
        child.kill('SIGINT');
      }
    },
  });
  assert.ok(sent, explain(out));
  assert.equal(out.code, 130, explain(out));
  assert.deepEqual(out.hosts, { sigint3: 'rolled-back' }, explain(out));
  assert.ok(!stepsOf(out, 'sigint3').includes('Start kubelet=changed'));
  assert.equal(await inode(fleet, 'sigint3', ROOT), ino);
  assert.equal(await treeFingerprint(fleet, 'sigint3', ROOT), before);
  assert.equal((await fleet.exec('sigint3', `ls -d ${ROOT}.recover-${out.runId} 2>/dev/null`)).stdout, '');
  assert.equal((await fleet.sh('sigint3', 'systemctl is-active kubelet')).trim(), 'active');
});

/**
 * containerd-recover's repair rungs when the gentlest does not hold (real containerd 1.7 with the CRI sandbox
 * server, Debian 13, over SSH; state checked by the test itself):
 * - the seed's error plus a CRI state the record delete does not reach (ROOT/io.containerd.grpc.v1.cri/sandboxes
 *   a regular file): "remove the bad records" is undone (meta.db back byte for byte), the wipe holds;
 * - the seed's error on the k3s LAYOUT STAND-IN (not the real k3s, which cannot be fetched here) whose every
 *   repaired start fails (a config broken once a backup exists): both rungs undone, the root back exactly.
 * - the controller SIGKILLed inside the first rung (its records deleted, the held-off containerd running), then
 *   `resume` (the rung completes: the same end as an uninterrupted run) and, on another node, `rollback` (the
 *   start state: meta.db byte for byte, the same files).
 * In all, the held-off containerd of the first rung leaves nothing: no unit, process, socket or state dir.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Fleet } from './harness/nspawn.js';
import { explain, inode, runbook, treeFingerprint, useFleet, type RunOutput } from './containerd-common.js';

let fleet: Fleet;
useFleet(
  [
    { name: 'mix1', suite: 'trixie' },
    { name: 'k3sbad2', suite: 'trixie', layout: 'k3s' },
    { name: 'kill3', suite: 'trixie' },
    { name: 'kill4', suite: 'trixie', layout: 'k3s' },
  ],
  (f) => {
    fleet = f;
  },
);

const alternatives = (out: RunOutput, host: string) =>
  out.events.filter((e) => e.type === 'alternative-end' && e.host === host).map((e) => `${e.alternative}=${e.status}`);

/** What the first rung's own containerd could leave on the node ('' when nothing). */
const heldLeftovers = async (name: string) =>
  (
    await fleet.sh(
      name,
      `systemctl is-active --quiet runbook-containerd-held && echo "unit runbook-containerd-held active"
ls -d /run/runbook-held-* 2>/dev/null | sed 's/^/dir /'
pgrep -af -- '--address /run/runbook-held[-]' | sed 's/^/process /'
findmnt -rn -o TARGET | grep '^/run/runbook-held-' | sed 's/^/mount /'; true`,
    )
  ).trim();

const metaDb = (name: string) => `${fleet.node(name).root}/io.containerd.metadata.v1.bolt/meta.db`;

test('first rung undone when containerd still fails without the bad records: meta.db back byte for byte, then the wipe holds', async () => {
  const n = fleet.node('mix1');
  await fleet.runContainer('mix1', 'web');
  const seed = await fleet.break('mix1', 'sandbox-record');
  assert.equal(seed.outcome, 'restart-loop', JSON.stringify(seed));
  await fleet.break('mix1', 'sandboxes-file');
  const md5 = (await fleet.sh('mix1', `md5sum < ${metaDb('mix1')}`)).trim();

  const out = await runbook(fleet, 'apply', 'containerd-recover', { inventory: fleet.writeInventory(`${fleet.dir}/mix.yml`, ['mix1']) });
  assert.deepEqual(out.hosts, { mix1: 'changed' }, explain(out));
  assert.deepEqual(alternatives(out, 'mix1'), ['remove the bad records=undone', 'wipe=held'], explain(out));
  const end = out.events.find((e) => e.type === 'host-end' && e.host === 'mix1');
  assert.match(
    String(end?.message),
    /Repair: repaired by wipe \(remove the bad records did not hold: step "Start containerd, its records removed, and prove it is healthy"/,
  );
  // The record was deleted, then the undo put meta.db back: the backup the wipe took holds the original bytes.
  const pruned = out.events.find(
    (e) => e.type === 'step-end' && e.host === 'mix1' && e.step === 'Delete sandbox records without CRI metadata',
  );
  assert.match(String(pruned?.register?.stdout), new RegExp(`^deleted ${seed.id}$`, 'm'));
  const bk = `${n.root}.recover-${out.runId}`;
  assert.equal((await fleet.sh('mix1', `md5sum < ${bk}/io.containerd.metadata.v1.bolt/meta.db`)).trim(), md5, 'meta.db back byte for byte');
  assert.ok((await fleet.health('mix1')).healthy);
  assert.equal(await heldLeftovers('mix1'), '');
});

test('k3s layout stand-in, every repaired start fails: both rungs undone, the root back exactly, nothing of the held-off containerd left', async () => {
  const n = fleet.node('k3sbad2');
  await fleet.runContainer('k3sbad2', 'web');
  const seed = await fleet.break('k3sbad2', 'sandbox-record');
  assert.equal(seed.outcome, 'restart-loop', JSON.stringify(seed));
  await fleet.break('k3sbad2', 'bad-config');
  // The log file in the root aside (containerd appends to it), the same files, sizes, inodes, mtimes and contents.
  const noLog = (s: string) =>
    s
      .split('\n')
      .filter((l) => !/containerd\.log/.test(l))
      .join('\n');
  const before = await treeFingerprint(fleet, 'k3sbad2', n.root);
  const ino = await inode(fleet, 'k3sbad2', n.root);

  const out = await runbook(fleet, 'apply', 'containerd-recover', { inventory: fleet.writeInventory(`${fleet.dir}/bad.yml`, ['k3sbad2']) });
  assert.equal(out.code, 2, explain(out));
  assert.deepEqual(out.hosts, { k3sbad2: 'rolled-back' }, explain(out));
  assert.deepEqual(alternatives(out, 'k3sbad2'), ['remove the bad records=undone', 'wipe=undone'], explain(out));
  assert.equal(await inode(fleet, 'k3sbad2', n.root), ino);
  assert.equal(noLog(await treeFingerprint(fleet, 'k3sbad2', n.root)), noLog(before), 'the root is back exactly');
  await fleet.sh('k3sbad2', `! test -e ${n.root}.recover-${out.runId}`);
  assert.equal(await heldLeftovers('k3sbad2'), '');
});

/** apply, SIGKILLed once the first rung has deleted the records (its own containerd still running). */
async function killedInFirstRung(name: string) {
  let killed = false;
  const out = await runbook(fleet, 'apply', 'containerd-recover', {
    inventory: fleet.writeInventory(`${fleet.dir}/${name}.yml`, [name]),
    onEvent: (e, child) => {
      if (!killed && e.type === 'step-end' && e.step === 'Delete sandbox records without CRI metadata' && e.status === 'changed') {
        killed = true;
        child.kill('SIGKILL');
      }
    },
  });
  assert.ok(killed, `the run never deleted the records: ${explain(out)}`);
  assert.equal(out.code, null, 'the controller died by SIGKILL');
  await fleet.sh(name, 'systemctl is-active --quiet runbook-containerd-held'); // the rung was cut in its middle
  return out;
}

test('controller SIGKILLed inside the first rung: resume completes it (records gone, images and root kept), rollback restores the start exactly', async () => {
  const prepare = async (name: string) => {
    await fleet.runContainer(name, 'web');
    const imgs = await fleet.sh(name, `${fleet.node(name).ctr} -n k8s.io images ls -q`);
    const seed = await fleet.break(name, 'sandbox-record');
    assert.equal(seed.outcome, 'restart-loop', JSON.stringify(seed));
    return { imgs, seed, ino: await inode(fleet, name, fleet.node(name).root) };
  };
  const [r3, r4] = await Promise.all([prepare('kill3'), prepare('kill4')]);
  const md5 = (await fleet.sh('kill4', `md5sum < ${metaDb('kill4')}`)).trim();
  const noLog = (s: string) =>
    s
      .split('\n')
      .filter((l) => !/containerd\.log/.test(l))
      .join('\n');
  const before4 = noLog(await treeFingerprint(fleet, 'kill4', fleet.node('kill4').root));

  const [k3, k4] = await Promise.all([killedInFirstRung('kill3'), killedInFirstRung('kill4')]);
  const [res, rb] = await Promise.all([
    runbook(fleet, 'resume', k3.runId, { stateDir: k3.stateDir }),
    runbook(fleet, 'rollback', k4.runId, { stateDir: k4.stateDir }),
  ]);

  // resume: what an uninterrupted run ends with
  assert.deepEqual(res.hosts, { kill3: 'changed' }, explain(res));
  assert.ok((await fleet.health('kill3')).healthy);
  assert.equal(await inode(fleet, 'kill3', fleet.node('kill3').root), r3.ino, 'the root kept');
  assert.equal(await fleet.sh('kill3', `ctr -n k8s.io images ls -q`), r3.imgs, 'the same images');
  const sandboxes = await fleet.sh('kill3', 'ctr -n k8s.io sandboxes ls');
  assert.ok(!sandboxes.includes(r3.seed.id), `the planted record is gone: ${sandboxes}`);
  assert.equal((await fleet.sh('kill3', 'ctr -n k8s.io containers ls -q')).trim(), 'web');
  assert.equal(await heldLeftovers('kill3'), '');

  // rollback: the start state (containerd restart-looping on the same record again, as before the run)
  assert.equal(rb.code, 0, explain(rb));
  assert.equal((await fleet.sh('kill4', `md5sum < ${metaDb('kill4')}`)).trim(), md5, 'meta.db back byte for byte');
  assert.equal(await inode(fleet, 'kill4', fleet.node('kill4').root), r4.ino);
  assert.equal(noLog(await treeFingerprint(fleet, 'kill4', fleet.node('kill4').root)), before4, 'the root is back exactly');
  await fleet.sh('kill4', `! test -e ${fleet.node('kill4').root}.recover-${k4.runId}`);
  assert.equal(await heldLeftovers('kill4'), '');
});

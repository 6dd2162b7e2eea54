/**
 * The containerd runbooks beyond the main repair path, on real nodes:
 * - the files: valid, the promised defaults, a comment on every step, one diagnosis text shared by all;
 * - containerd-health: healthy / broken with its signature / needs a human, changing nothing;
 * - containerd-recover uses the discovered paths: a root given by the unit's --root flag, a root that is its own
 *   mount (backup by copy), and refuses a system directory as root;
 * - containerd-prune-backups: keeps backups younger than the retention, removes older ones, nothing else.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { loadRunbook } from '../src/runbook/load.js';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';
import * as yaml from 'js-yaml';
import { ROOT, type Fleet } from './harness/nspawn.js';
import { runbook, explain, inode, treeFingerprint, REPO, BIN, useFleet } from './containerd-common.js';

const BOOKS = ['containerd-recover', 'containerd-health', 'containerd-prune-backups'];
/** The parts of a runbook file these checks read (the file is validated by `runbook validate` first). */
interface BookStep {
  name: string;
  run?: string;
  rollback?: string;
}
interface BookDoc {
  serial?: unknown;
  max_failed?: unknown;
  destructive?: boolean;
  vars?: Record<string, unknown>;
  preflight?: BookStep[];
  steps: BookStep[];
}
const load = (n: string) => ({
  text: readFileSync(join(REPO, 'runbooks', `${n}.yml`), 'utf8'),
  doc: yaml.load(readFileSync(join(REPO, 'runbooks', `${n}.yml`), 'utf8')) as BookDoc,
});

test('the runbook files: valid, promised defaults, a comment per step, one shared diagnosis', () => {
  for (const n of BOOKS) {
    const r = spawnSync(BIN, ['validate', `runbooks/${n}.yml`], { cwd: REPO, encoding: 'utf8' });
    assert.equal(r.status, 0, `${n}: ${r.stdout}${r.stderr}`);
    // every step and preflight entry is introduced by a comment line
    const lines = load(n).text.split('\n');
    lines.forEach((l, i) => {
      if (/^ {2}- (name|include): /.test(l)) assert.match(lines[i - 1], /^\s*#/, `${n}:${i + 1} "${l.trim()}" has no comment above it`);
    });
  }
  for (const f of readdirSync(join(REPO, 'runbooks', 'lib'))) {
    const lines = readFileSync(join(REPO, 'runbooks', 'lib', f), 'utf8').split('\n');
    assert.match(lines[0], /^# /, `lib/${f} says what it is for in its first line`);
    lines.forEach((l, i) => {
      if (/^ {2}- name: /.test(l)) assert.match(lines[i - 1], /^\s*#/, `lib/${f}:${i + 1} "${l.trim()}" has no comment above it`);
    });
  }
  const rec = load('containerd-recover').doc;
  assert.equal(rec.serial, 1);
  assert.equal(rec.max_failed, 0);
  assert.equal(rec.destructive, true);
  assert.equal(load('containerd-health').doc.destructive, false);
  assert.equal(load('containerd-prune-backups').doc.vars?.retention_days, 3);
  // One discovery and one diagnosis, in runbooks/lib, included by each runbook that needs them.
  const fromFile = (n: string, step: string) => {
    const f = loadRunbook(join(REPO, 'runbooks', `${n}.yml`), REPO).preflight.find((s) => s.name === step)?.origin?.file;
    return f && relative(REPO, f);
  };
  for (const n of ['containerd-recover', 'containerd-health', 'containerd-prune-backups'])
    assert.equal(fromFile(n, 'Discover containerd paths'), 'runbooks/lib/containerd-paths.yml', n);
  for (const n of ['containerd-recover', 'containerd-health'])
    assert.equal(fromFile(n, 'Diagnose containerd'), 'runbooks/lib/containerd-diagnose.yml', n);
  // every step that changes a node can be undone, or is a start/clean that needs none (included steps too)
  const expanded = loadRunbook(join(REPO, 'runbooks', 'containerd-recover.yml'), REPO);
  assert.deepEqual(
    expanded.includes?.map((f) => relative(REPO, f)),
    [
      'runbooks/lib/containerd-paths.yml',
      'runbooks/lib/containerd-diagnose.yml',
      'runbooks/lib/k8s-drain.yml',
      'runbooks/lib/k8s-uncordon.yml',
    ],
  );
  // no gate is a shell round trip on the diagnosis any more: those are decided on the controller
  for (const st of [...expanded.preflight, ...expanded.steps])
    assert.doesNotMatch(`${st.when ?? ''} ${st.unless ?? ''}`, /diag\.stdout|printf/, `${st.name}: a shell gate on a register`);
  const noRollback = expanded.steps.filter((s) => !s.rollback).map((s) => s.name);
  assert.deepEqual(noRollback, [
    'Drain the node',
    'Repair', // an escalation: its alternatives' steps undo themselves
    'Delete sandbox records without CRI metadata', // meta.db's copy (the first step of its rung) undoes it
    'Stop the held-off containerd',
    'Clean the state dir, for the new root',
    'Carry the images over', // the new root goes with the backup's undo
    'Stop the containerd on the old root',
    'Clean the state dir',
    'Count the images', // read-only
    'Start kubelet',
    'Uncordon the node',
  ]);
});

let fleet: Fleet;
useFleet(['ok1', 'cri2', 'lock3', 'flag4', 'mount5', 'sys6', 'mountrb7', 'ro8'], (f) => {
  fleet = f;
});

/** containerd's root on its own filesystem (a tmpfs here), as on nodes with a dedicated disk for it. */
async function rootOnOwnMount(node: string): Promise<void> {
  await fleet.sh(
    node,
    `systemctl stop containerd && mkdir -p /var/tmp/old && mv ${ROOT} /var/tmp/old/ && mkdir ${ROOT} && mount -t tmpfs -o size=256m ctd ${ROOT} && cp -a /var/tmp/old/containerd/. ${ROOT}/ && systemctl start containerd`,
  );
  await fleet.waitHealthy(node);
}

test('containerd-health reports healthy, broken with the signature, and needs-a-human, changing nothing', async () => {
  await fleet.break('cri2', 'sandboxes-file');
  await fleet.break('lock3', 'bolt-lock');
  const fp = await treeFingerprint(fleet, 'cri2', ROOT);
  const out = await runbook(fleet, 'apply', 'containerd-health', {
    inventory: fleet.writeInventory(`${fleet.dir}/health.yml`, ['ok1', 'cri2', 'lock3']),
  });
  assert.equal(out.code, 2, explain(out));
  assert.deepEqual(out.hosts, { ok1: 'ok', cri2: 'failed', lock3: 'skipped' }, explain(out));
  const step = (h: string, s: string) => out.events.find((e) => e.type === 'step-end' && e.host === h && e.step === s);
  assert.match(
    step('cri2', 'containerd is healthy')?.stderr ?? '',
    /broken: CRI state corrupt \((activating|failed), \d+ restarts\): .*failed to recover state/,
  );
  assert.match(step('lock3', 'Diagnose containerd')?.stderr ?? '', /do not wipe: the bolt lock .* is held by PID \d+ \(flock\)/);
  // healthy: the report is decided on the controller from the diagnosis, no command sent
  assert.equal(step('ok1', 'containerd is healthy')?.status, 'skipped');
  assert.equal(step('ok1', 'containerd is healthy')?.stage, 'if');
  assert.equal(await treeFingerprint(fleet, 'cri2', ROOT), fp);
  await fleet.sh('lock3', 'systemctl stop rb-boltlock');
});

test("the root given by the unit's --root flag is the one repaired (and config.toml's root is ignored)", async () => {
  const custom = '/var/lib/ctd-flag';
  await fleet.sh(
    'flag4',
    `mkdir -p /etc/systemd/system/containerd.service.d && printf '[Service]\\nExecStart=\\nExecStart=/usr/bin/containerd --root ${custom}\\n' > /etc/systemd/system/containerd.service.d/10-root.conf && systemctl daemon-reload && systemctl restart containerd`,
  );
  await fleet.waitHealthy('flag4');
  await fleet.break('flag4', 'panic', { root: custom });
  const defaultIno = await inode(fleet, 'flag4', ROOT); // the image's default root (unused now) must not be touched
  const out = await runbook(fleet, 'apply', 'containerd-recover', { inventory: fleet.writeInventory(`${fleet.dir}/flag.yml`, ['flag4']) });
  assert.equal(out.code, 0, explain(out));
  assert.deepEqual(out.hosts, { flag4: 'changed' });
  const disc = out.events.find((e) => e.type === 'step-end' && e.step === 'Discover containerd paths');
  assert.match(disc?.stdout ?? '', new RegExp(`^root=${custom}$`, 'm'));
  await fleet.sh('flag4', `test -d ${custom}.recover-${out.runId} && test -s ${custom}.recover-${out.runId}.evidence/meta.db`);
  assert.equal(await inode(fleet, 'flag4', ROOT), defaultIno);
  assert.equal((await fleet.exec('flag4', `ls -d ${ROOT}.recover-* 2>/dev/null`)).stdout, '');
  assert.equal((await fleet.health('flag4')).healthy, true);
});

test('a data root that is its own mount is backed up by copy and emptied in place; the mount stays', async () => {
  await rootOnOwnMount('mount5');
  await fleet.break('mount5', 'sandboxes-file');
  const out = await runbook(fleet, 'apply', 'containerd-recover', {
    inventory: fleet.writeInventory(`${fleet.dir}/mount.yml`, ['mount5']),
  });
  assert.equal(out.code, 0, explain(out));
  assert.deepEqual(out.hosts, { mount5: 'changed' });
  const bk = `${ROOT}.recover-${out.runId}`;
  await fleet.sh(
    'mount5',
    `mountpoint -q ${ROOT} && ! mountpoint -q ${bk} && test -f ${bk}/io.containerd.grpc.v1.cri/sandboxes && grep -qx copy ${bk}.evidence/method`,
  );
  await fleet.sh('mount5', `test -d ${ROOT}/io.containerd.metadata.v1.bolt && ! test -f ${ROOT}/io.containerd.grpc.v1.cri/sandboxes`);
  assert.equal((await fleet.health('mount5')).healthy, true);
});

test('a data root on its own mount whose repair fails is restored by copy: same files, same mount', async () => {
  await rootOnOwnMount('mountrb7');
  await fleet.break('mountrb7', 'panic');
  await fleet.break('mountrb7', 'bad-config');
  // a copy gets new inodes: compare names, types, sizes, mtimes and contents
  const fp = () => treeFingerprint(fleet, 'mountrb7', ROOT, { inodes: false });
  const before = await fp();
  const out = await runbook(fleet, 'apply', 'containerd-recover', {
    inventory: fleet.writeInventory(`${fleet.dir}/mountrb.yml`, ['mountrb7']),
  });
  assert.equal(out.code, 2, explain(out));
  assert.deepEqual(out.hosts, { mountrb7: 'rolled-back' }, explain(out));
  assert.equal(await fp(), before);
  await fleet.sh(
    'mountrb7',
    `mountpoint -q ${ROOT} && ! test -e ${ROOT}.recover-${out.runId} && grep -qx copy ${ROOT}.recover-${out.runId}.evidence/method`,
  );
});

test('a data root on a read-only filesystem is not wiped: preflight fails with the reason', async () => {
  await rootOnOwnMount('ro8');
  await fleet.sh('ro8', `systemctl stop containerd && mount -o remount,ro ${ROOT} && (systemctl start containerd || true)`);
  const before = await treeFingerprint(fleet, 'ro8', ROOT);
  const out = await runbook(fleet, 'apply', 'containerd-recover', { inventory: fleet.writeInventory(`${fleet.dir}/ro.yml`, ['ro8']) });
  assert.equal(out.code, 2, explain(out));
  assert.deepEqual(out.hosts, { ro8: 'skipped' }, explain(out));
  const diag = out.events.find((e) => e.type === 'step-end' && e.step === 'Diagnose containerd');
  assert.match(diag?.stderr ?? '', /do not wipe: \/var\/lib\/containerd is on a read-only filesystem/);
  assert.equal(await treeFingerprint(fleet, 'ro8', ROOT), before);
  assert.match(
    await fleet.sh('ro8', `journalctl -u containerd -b -o cat | grep -i 'read-only file system' | tail -n1`),
    /read-only file system/,
  );
});

test('a system directory as data root is refused before anything changes', async () => {
  await fleet.sh('sys6', `sed -i '1i root = "/var/lib"' /etc/containerd/config.toml && systemctl stop containerd`);
  const out = await runbook(fleet, 'apply', 'containerd-recover', { inventory: fleet.writeInventory(`${fleet.dir}/sys.yml`, ['sys6']) });
  assert.equal(out.code, 2, explain(out));
  assert.deepEqual(out.hosts, { sys6: 'skipped' });
  const disc = out.events.find((e) => e.type === 'step-end' && e.step === 'Discover containerd paths');
  assert.equal(disc?.status, 'failed');
  assert.match(disc?.stderr ?? '', /refusing containerd path '\/var\/lib': it is a system directory/);
  await fleet.sh('sys6', 'test -d /var/lib/dpkg && test -d /var/lib/containerd');
});

test('containerd-prune-backups keeps young backups, removes expired ones, and nothing else', async () => {
  // mount5 holds a real backup (+ evidence) of the run above, seconds old; add a hand-made one and a look-alike that is not one
  await fleet.sh('mount5', `mkdir -p /var/lib/containerd-notes ${ROOT}.recover-manual && touch ${ROOT}.recover-manual/keep`);
  const inv = fleet.writeInventory(`${fleet.dir}/prune.yml`, ['mount5']);
  const keep = await runbook(fleet, 'apply', 'containerd-prune-backups', { inventory: inv });
  assert.equal(keep.code, 0, explain(keep));
  assert.deepEqual(keep.hosts, { mount5: 'ok' }, 'nothing is 3 days old');
  assert.equal((await fleet.sh('mount5', `ls -d ${ROOT}.recover-* | wc -l`)).trim(), '3');

  const prune = await runbook(fleet, 'apply', 'containerd-prune-backups', { inventory: inv, extra: ['-e', 'retention_days=0'] });
  assert.equal(prune.code, 0, explain(prune));
  assert.deepEqual(prune.hosts, { mount5: 'changed' });
  assert.equal((await fleet.exec('mount5', `ls -d ${ROOT}.recover-* 2>/dev/null`)).stdout, '');
  await fleet.sh('mount5', `mountpoint -q ${ROOT} && test -d /var/lib/containerd-notes && test -d ${ROOT}/io.containerd.metadata.v1.bolt`);
  assert.equal((await fleet.health('mount5')).healthy, true);

  const bad = await runbook(fleet, 'apply', 'containerd-prune-backups', {
    inventory: inv,
    extra: ['-e', '{"retention_days": "0 -o 1; $(touch /tmp/pwned)"}'],
  });
  // refused when the plan is built (the value is used inside $(( ))): exit 1, no host contacted
  assert.equal(bad.code, 1, explain(bad));
  assert.match(bad.stderr, /"retention_days" is used inside \$\(\( \)\) but its value is not an integer \(host mount5/, explain(bad));
  assert.deepEqual(bad.hosts, {}, explain(bad));
  assert.equal((await fleet.exec('mount5', 'ls /tmp/pwned 2>/dev/null')).stdout, '');
});

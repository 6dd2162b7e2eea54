/**
 * containerd-recover's repair rungs when the gentlest does not hold (real containerd 1.7 with the CRI sandbox
 * server, Debian 13, over SSH; state checked by the test itself):
 * - the seed's error plus a CRI state the record delete does not reach (ROOT/io.containerd.grpc.v1.cri/sandboxes
 *   a regular file): "remove the bad records" is undone (meta.db back byte for byte), "carry the images over"
 *   holds: the same images (names, digests) in the new root, and a container runs from one;
 * - bolt corruption on the k3s LAYOUT STAND-IN (not the real k3s, which cannot be fetched here) with images_dir:
 *   the images come from its tarballs;
 * - the seed's error on the k3s layout stand-in whose every repaired start fails (a config broken once a backup
 *   exists): all three rungs undone, the root back exactly.
 * - the controller SIGKILLed inside the first rung (its records deleted, the held-off containerd running), then
 *   `resume` (the rung completes: the same end as an uninterrupted run) and, on another node, `rollback` (the
 *   start state: meta.db put back byte for byte, the same files, containerd failing as before; the start after
 *   the rollback commits to meta.db and drops the bundles of the containers the stop killed, see restartedRoot).
 * - the controller SIGKILLed in the middle of an image stream (a 200 MB image): resume and rollback first end the
 *   dead run's stream, still running on the host; resume completes the carry, rollback restores the start.
 * In all, the held-off containerd of the first rung leaves nothing: no unit, process, socket or state dir.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Fleet } from './harness/nspawn.js';
import { explain, inode, runbook, treeFingerprint, useFleet, withoutLog, type RunOutput } from './containerd-common.js';
import type { LogMark } from './harness/nspawn.js';
import { waitFor } from './harness/wait.js';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

let fleet: Fleet;
useFleet(
  [
    { name: 'mix1', suite: 'trixie' },
    { name: 'k3sbad2', suite: 'trixie', layout: 'k3s' },
    { name: 'kill3', suite: 'trixie' },
    { name: 'kill4', suite: 'trixie', layout: 'k3s' },
    { name: 'dir5', suite: 'bookworm', layout: 'k3s' },
    { name: 'kill6', suite: 'trixie' },
    { name: 'kill7', suite: 'trixie', layout: 'k3s' },
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

/** The node's images in namespace k8s.io: name and digest, one per line. */
const images = async (name: string) =>
  (await fleet.sh(name, `${fleet.node(name).ctr} -n k8s.io images ls`))
    .trim()
    .split('\n')
    .slice(1)
    .map((l) =>
      l
        .split(/\s+/)
        .filter((_, i) => i === 0 || i === 2)
        .join(' '),
    )
    .join('\n');

test('first rung undone when containerd still fails without the bad records (meta.db back byte for byte); the images carried over to a new root', async (t) => {
  const n = fleet.node('mix1');
  await fleet.runContainer('mix1', 'web');
  const imgs = await images('mix1');
  const seed = await fleet.break('mix1', 'sandbox-record');
  assert.equal(seed.outcome, 'restart-loop', JSON.stringify(seed));
  await fleet.break('mix1', 'sandboxes-file');

  const out = await runbook(fleet, 'apply', 'containerd-recover', { inventory: fleet.writeInventory(`${fleet.dir}/mix.yml`, ['mix1']) });
  assert.deepEqual(out.hosts, { mix1: 'changed' }, explain(out));
  assert.deepEqual(alternatives(out, 'mix1'), ['remove the bad records=undone', 'carry the images over=held'], explain(out));
  const end = out.events.find((e) => e.type === 'host-end' && e.host === 'mix1');
  assert.match(
    String(end?.message),
    /Repair: repaired by carry the images over \(remove the bad records did not hold: step "Start containerd, its records removed, and prove it is healthy"/,
  );
  // The record was deleted, then the undo put meta.db back: the root rung 2 moved aside holds the bytes of the
  // copy rung 1 took once containerd was stopped (kept in the evidence; containerd's restart loop before the run
  // commits to meta.db on each start, so a copy taken by the test before the run could differ).
  const pruned = out.events.find(
    (e) => e.type === 'step-end' && e.host === 'mix1' && e.step === 'Delete sandbox records without CRI metadata',
  );
  assert.match(String(pruned?.register?.stdout), new RegExp(`^deleted ${seed.id}$`, 'm'));
  const bk = `${n.root}.recover-${out.runId}`;
  await fleet.sh('mix1', `cmp ${bk}/io.containerd.metadata.v1.bolt/meta.db ${bk}.evidence/meta.db`); // meta.db back byte for byte
  assert.ok((await fleet.health('mix1')).healthy);
  assert.equal(await heldLeftovers('mix1'), '');
  // a new root with the old root's images (the pause image too, where there is one); a container runs from one
  for (const i of ['sleep', 'busybox', 'busybox-web']) assert.match(imgs, new RegExp(`local/${i}:1 sha256:`));
  assert.equal(await images('mix1'), imgs, 'the same images (names, digests)');
  const carried = out.events.find((e) => e.type === 'step-end' && e.host === 'mix1' && e.step === 'Carry the images over');
  assert.match(
    String(carried?.register?.stdout),
    new RegExp(`^${imgs.split('\n').length} images carried over, 0 not \\(from the old root\\)`),
  );
  assert.equal((await fleet.sh('mix1', 'ctr -n k8s.io containers ls -q')).trim(), '', 'no container record in the new root');
  const end1 = out.events.find((e) => e.type === 'host-end' && e.host === 'mix1');
  assert.match(String(end1?.facts?.images), /^3 images in the new data root, carried over or imported \(the old root is \S+\.recover-/);
  await fleet.runContainer('mix1', 'web2');
  t.diagnostic(
    `mix1 (trixie, containerd): rung 1 undone, rung 2 held in ${out.ms} ms (run); ${carried?.duration_ms} ms to carry ${imgs.split('\n').length} images`,
  );
});

test('bolt corruption with images_dir (k3s layout stand-in): the first rung does not apply, the images come from the tarballs', async (t) => {
  const dir = '/var/lib/rancher/k3s/agent/images';
  await fleet.sh(
    'dir5',
    `s=/usr/local/share/runbook-test; mkdir -p ${dir} && cp $s/sleep.tar ${dir}/ && gzip -c $s/busybox.tar > ${dir}/busybox.tar.gz && gzip -c $s/busybox-web.tar > ${dir}/web.tgz`,
  );
  await fleet.break('dir5', 'panic');
  const out = await runbook(fleet, 'apply', 'containerd-recover', {
    inventory: fleet.writeInventory(`${fleet.dir}/dir.yml`, ['dir5'], { images_dir: dir }),
  });
  assert.deepEqual(out.hosts, { dir5: 'changed' }, explain(out));
  assert.deepEqual(alternatives(out, 'dir5'), ['remove the bad records=not-applicable', 'carry the images over=held'], explain(out));
  const carried = out.events.find((e) => e.type === 'step-end' && e.host === 'dir5' && e.step === 'Carry the images over');
  assert.match(
    String(carried?.register?.stdout),
    /^3 images carried over, 0 not \(from \/var\/lib\/rancher\/k3s\/agent\/images; the old root's own images could not be read/,
  );
  const names = (await images('dir5')).replace(/ sha256:\S+/g, '').split('\n');
  for (const i of ['sleep', 'busybox', 'busybox-web']) assert.ok(names.includes(`docker.io/local/${i}:1`), `local/${i}:1 in ${names}`);
  const end5 = out.events.find((e) => e.type === 'host-end' && e.host === 'dir5');
  assert.match(String(end5?.facts?.images), /^3 images in the new data root, carried over or imported/);
  await fleet.runContainer('dir5', 'web');
  assert.equal(await heldLeftovers('dir5'), '');
  t.diagnostic(`dir5 (bookworm, k3s): rung 2 from images_dir held in ${out.ms} ms (run); ${carried?.duration_ms} ms to import 3 tarballs`);
});

test('k3s layout stand-in, every repaired start fails: all three rungs undone, the root back exactly, nothing of the held-off containerd left', async () => {
  const n = fleet.node('k3sbad2');
  await fleet.runContainer('k3sbad2', 'web');
  const seed = await fleet.break('k3sbad2', 'sandbox-record');
  assert.equal(seed.outcome, 'restart-loop', JSON.stringify(seed));
  await fleet.break('k3sbad2', 'bad-config');
  // The log file in the root aside (containerd appends to it), the same files, sizes, inodes, mtimes and contents.
  const before = await treeFingerprint(fleet, 'k3sbad2', n.root);
  const ino = await inode(fleet, 'k3sbad2', n.root);

  const out = await runbook(fleet, 'apply', 'containerd-recover', { inventory: fleet.writeInventory(`${fleet.dir}/bad.yml`, ['k3sbad2']) });
  assert.equal(out.code, 2, explain(out));
  assert.deepEqual(out.hosts, { k3sbad2: 'rolled-back' }, explain(out));
  assert.deepEqual(
    alternatives(out, 'k3sbad2'),
    ['remove the bad records=undone', 'carry the images over=undone', 'wipe=undone'],
    explain(out),
  );
  assert.equal(await inode(fleet, 'k3sbad2', n.root), ino);
  assert.equal(withoutLog(await treeFingerprint(fleet, 'k3sbad2', n.root)), withoutLog(before), 'the root is back exactly');
  await fleet.sh('k3sbad2', `! test -e ${n.root}.recover-${out.runId}`);
  assert.equal(await heldLeftovers('k3sbad2'), '');
});

/** The run's journal in `stateDir` holds the outcome (step-end) of `step` on `host`. */
function outcomeInJournal(stateDir: string, host: string, step: string): boolean {
  const dir = join(stateDir, 'runs');
  if (!existsSync(dir)) return false;
  return readdirSync(dir).some((f) =>
    readFileSync(join(dir, f), 'utf8')
      .split('\n')
      .some((l) => l.includes('"step-end"') && l.includes(JSON.stringify(step)) && l.includes(JSON.stringify(host))),
  );
}

/**
 * apply, SIGKILLed at the first event `at` matches, once the outcome of step `durable` is in the run's journal (the
 * event can come before the journal has it: a kill then would leave that step unknown, not the one meant).
 */
async function killedAt(name: string, at: (e: RunOutput['events'][number]) => boolean, what: string, durable: string) {
  const stateDir = mkdtempSync(join(tmpdir(), 'rb-ctd-state-'));
  let killing: Promise<void> | undefined;
  let failed: unknown;
  const out = await runbook(fleet, 'apply', 'containerd-recover', {
    inventory: fleet.writeInventory(`${fleet.dir}/${name}.yml`, [name]),
    stateDir,
    onEvent: (e, child) => {
      if (killing || !at(e)) return;
      killing = waitFor(() => outcomeInJournal(stateDir, name, durable), {
        what: `the outcome of "${durable}" on ${name} in the run's journal`,
        timeoutMs: 60_000,
        intervalMs: 20,
      })
        .then(() => {
          child.kill('SIGKILL');
        })
        .catch((err: unknown) => {
          failed = err;
        });
    },
  });
  await killing;
  if (failed) throw failed;
  assert.ok(killing, `the run never reached ${what}: ${explain(out)}`);
  assert.equal(out.code, null, 'the controller died by SIGKILL');
  // The step after the kill point may have gone on without its controller (a stop finishes in ms), or not:
  // either way the end state must be the same.
  const held = await fleet.sh(name, 'systemctl is-active runbook-containerd-held || true');
  return { ...out, held: held.trim() };
}

/** apply, SIGKILLed once the first rung has deleted the records (its outcome durable; its own containerd still running). */
const killedInFirstRung = (name: string) =>
  killedAt(
    name,
    (e) => e.type === 'step-start' && e.step === 'Stop the held-off containerd',
    'the records delete',
    'Delete sandbox records without CRI metadata',
  );

/**
 * A root after a rollback that started the node's containerd again: that start commits to meta.db (the restore
 * itself is checked byte for byte by the rollback, with cmp against the copy) and drops the task bundles of the
 * containers our stop killed (processes cannot be brought back); containerd.log grows. The rest must be the same.
 */
const restartedRoot = (s: string) =>
  s
    .split('\n')
    .filter((l) => !/containerd\.log|\/meta\.db( |$)|io\.containerd\.runtime\.v2\.task\/[^/ ]+\/[^/ ]+/.test(l))
    .join('\n');

/** After `rollback`: exit 0, what the rollback of `step` printed, and containerd failing as before the run (`again`, in its log). */
async function rolledBack(name: string, rb: RunOutput, step: string, said: RegExp, again: RegExp, mark: LogMark) {
  assert.equal(rb.code, 0, explain(rb));
  const undo = rb.events.find((e) => e.type === 'rollback-end' && e.host === name && e.step === step);
  assert.equal(undo?.status, 'ok', explain(rb));
  assert.match(String(undo?.stdout), said, explain(rb));
  await waitFor(async () => (await fleet.containerdLog(name, { since: mark })).match(again), {
    what: `${name}'s containerd log to match ${again} again, as before the run`,
    timeoutMs: 120_000,
    intervalMs: 500,
  });
  await fleet.sh(name, `! test -e ${fleet.node(name).root}.recover-${rb.runId}`);
  assert.equal(await heldLeftovers(name), '');
}

test('controller SIGKILLed inside the first rung: resume completes it (records gone, images and root kept), rollback restores the start (meta.db byte for byte, the same files, the same failure)', async (t) => {
  const prepare = async (name: string) => {
    await fleet.runContainer(name, 'web');
    const imgs = await fleet.sh(name, `${fleet.node(name).ctr} -n k8s.io images ls -q`);
    const seed = await fleet.break(name, 'sandbox-record');
    assert.equal(seed.outcome, 'restart-loop', JSON.stringify(seed));
    return { imgs, seed, ino: await inode(fleet, name, fleet.node(name).root) };
  };
  const [r3, r4] = await Promise.all([prepare('kill3'), prepare('kill4')]);
  const before4 = restartedRoot(await treeFingerprint(fleet, 'kill4', fleet.node('kill4').root));

  const [k3, k4] = await Promise.all([killedInFirstRung('kill3'), killedInFirstRung('kill4')]);
  t.diagnostic(`after the kill, the held-off containerd was ${k3.held} (kill3), ${k4.held} (kill4)`);
  const mark4 = await fleet.logMark('kill4');
  const [res, rb] = await Promise.all([
    runbook(fleet, 'resume', k3.runId, { stateDir: k3.stateDir }),
    runbook(fleet, 'rollback', k4.runId, { stateDir: k4.stateDir }),
  ]);

  // resume: what an uninterrupted run ends with
  assert.deepEqual(res.hosts, { kill3: 'changed' }, explain(res));
  assert.ok((await fleet.health('kill3')).healthy);
  assert.deepEqual(alternatives(res, 'kill3'), ['remove the bad records=held'], explain(res));
  const end3 = res.events.find((e) => e.type === 'host-end' && e.host === 'kill3');
  assert.equal(end3?.facts?.images, '3 images kept (the data root kept)');
  assert.equal(await inode(fleet, 'kill3', fleet.node('kill3').root), r3.ino, 'the root kept');
  assert.equal(await fleet.sh('kill3', `ctr -n k8s.io images ls -q`), r3.imgs, 'the same images');
  const sandboxes = await fleet.sh('kill3', 'ctr -n k8s.io sandboxes ls');
  assert.ok(!sandboxes.includes(r3.seed.id), `the planted record is gone: ${sandboxes}`);
  assert.equal((await fleet.sh('kill3', 'ctr -n k8s.io containers ls -q')).trim(), 'web');
  assert.equal(await heldLeftovers('kill3'), '');

  // rollback: the start state (containerd restart-looping on the same record again, as before the run)
  await rolledBack(
    'kill4',
    rb,
    'Back up meta.db',
    /^meta\.db restored from /,
    new RegExp(`failed to recover state: .*stored sandbox .*${r4.seed.id}`),
    mark4,
  );
  assert.equal(await inode(fleet, 'kill4', fleet.node('kill4').root), r4.ino);
  assert.equal(restartedRoot(await treeFingerprint(fleet, 'kill4', fleet.node('kill4').root)), before4, 'the root is back');
});

/** A 200 MB image of random bytes (one layer), imported into the node's containerd: a carry that lasts seconds. */
async function importBulk(name: string): Promise<void> {
  await fleet.sh(
    name,
    `set -e; d=$(mktemp -d); mkdir $d/l; head -c 200M /dev/urandom > $d/l/blob; tar -C $d/l -cf $d/layer.tar .
L=$(sha256sum $d/layer.tar | cut -d' ' -f1)
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' $L > $d/config.json
printf '[{"Config":"config.json","RepoTags":["local/bulk:1"],"Layers":["layer.tar"]}]' > $d/manifest.json
tar -C $d -cf $d/bulk.tar manifest.json config.json layer.tar; ${fleet.node(name).ctr} -n k8s.io images import $d/bulk.tar >/dev/null; rm -rf $d`,
  );
}

/** Bytes an ingest line of `ctr content active` has in (REF SIZE AGE; SIZE as 12.6MB). */
function ingested(line: string): number {
  const m = /^\S+\s+([\d.]+)\s*([kMGT]?)B\b/.exec(line);
  return m ? Number(m[1]) * 1000 ** ' kMGT'.indexOf(m[2] || ' ') : 0;
}

/**
 * apply, SIGKILLed in the middle of an image's stream: once the node's new containerd has 8 MB or more of one
 * ingest in (the carry's import of the bulk image). Then the dead run's export and import on the host are
 * stopped (SIGSTOP), so they can neither finish nor fail by themselves before the next command: what resume or
 * rollback does about them is seen.
 */
async function killedMidStream(name: string) {
  let polling: Promise<void> | undefined;
  let failed: unknown;
  let seen = '';
  const poll = async (child: { kill(s: NodeJS.Signals): boolean }) => {
    await waitFor(
      async () => {
        const active = await fleet.sh(name, `${fleet.node(name).ctr} -n k8s.io content active`);
        seen = active.split('\n').find((l) => ingested(l) >= 8e6) ?? '';
        return seen !== '';
      },
      { what: `an image stream into ${name}'s new containerd with 8 MB or more in`, timeoutMs: 180_000, intervalMs: 50 },
    );
    child.kill('SIGKILL');
  };
  const out = await runbook(fleet, 'apply', 'containerd-recover', {
    inventory: fleet.writeInventory(`${fleet.dir}/${name}.yml`, [name]),
    onEvent: (e, child) => {
      if (!polling && e.type === 'step-start' && e.step === 'Carry the images over')
        polling = poll(child).catch((err: unknown) => {
          failed = err;
        });
    },
  });
  await polling;
  if (failed) throw failed;
  assert.equal(out.code, null, `the controller died by SIGKILL: ${explain(out)}`);
  const frozen = (await fleet.sh(name, `pkill -STOP -f -e -- ' images (export|import) ' || true`)).trim();
  return { ...out, seen: seen.trim(), frozen };
}

test("controller SIGKILLed in the middle of an image stream: resume ends the dead run's stream and completes the carry (the same images), rollback ends it and restores the start (the old root moved back, the same files, the same failure)", async (t) => {
  const prepare = async (name: string) => {
    await fleet.runContainer(name, 'web');
    await importBulk(name);
    const imgs = await images(name);
    const seed = await fleet.break(name, 'sandbox-record');
    assert.equal(seed.outcome, 'restart-loop', JSON.stringify(seed));
    await fleet.break(name, 'sandboxes-file');
    return imgs;
  };
  const [imgs6] = await Promise.all([prepare('kill6'), prepare('kill7')]);
  assert.match(imgs6, /local\/bulk:1 sha256:/);
  const root7 = fleet.node('kill7').root;
  const ino7 = await inode(fleet, 'kill7', root7);
  const before7 = restartedRoot(await treeFingerprint(fleet, 'kill7', root7));

  const [k6, k7] = await Promise.all([killedMidStream('kill6'), killedMidStream('kill7')]);
  for (const [n, k] of [
    ['kill6', k6],
    ['kill7', k7],
  ] as const) {
    t.diagnostic(`${n}: killed with ${k.seen} in; the dead run's stream, stopped: ${k.frozen.replace(/\n/g, '; ')}`);
    // (pkill -e says "ctr killed (pid N)" for each process it signalled, here with SIGSTOP)
    assert.match(k.frozen, /\(pid \d+\)/, `${n}: the dead run's stream was still running on the host`);
  }
  // the old root's log, moved aside with it (the mark follows its inode back)
  const mark7 = (await fleet.sh('kill7', `stat -c %i:%s ${root7}.recover-${k7.runId}/containerd.log`)).trim();
  const [res, rb] = await Promise.all([
    runbook(fleet, 'resume', k6.runId, { stateDir: k6.stateDir }),
    runbook(fleet, 'rollback', k7.runId, { stateDir: k7.stateDir }),
  ]);
  for (const [n, out] of [
    ['kill6', res],
    ['kill7', rb],
  ] as const) {
    const ended = out.events.find((e) => e.type === 'warning' && e.host === n);
    assert.match(String(ended?.message), /^ended what the host shell of run \S+'s dead controller .* was still running$/, explain(out));
    assert.equal(
      (await fleet.sh(n, `pgrep -f -- ' images (export|import) ' || true`)).trim(),
      '',
      `${n}: nothing of the dead run's stream left`,
    );
  }

  assert.deepEqual(res.hosts, { kill6: 'changed' }, explain(res));
  assert.equal(alternatives(res, 'kill6').at(-1), 'carry the images over=held', explain(res));
  assert.ok((await fleet.health('kill6')).healthy);
  assert.equal(await images('kill6'), imgs6, 'the same images (names, digests) as before the break');
  await fleet.runContainer('kill6', 'web2');
  assert.equal(await heldLeftovers('kill6'), '');

  // rollback: the old root moved back (the same inode), the node's containerd failing on its CRI state again
  await rolledBack('kill7', rb, 'Move the data root aside, its images to be carried over', /^restored /, /failed to recover state/, mark7);
  assert.equal(await inode(fleet, 'kill7', root7), ino7);
  assert.equal(restartedRoot(await treeFingerprint(fleet, 'kill7', root7)), before7, 'the root is back');
});

/**
 * Disk full for the journal: the state dir is a 64 KiB tmpfs, filled while the run is in
 * flight. The run must stop changing hosts, roll back the hosts in flight, and say so in its
 * exit code (4: the journal could not be written).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync, mkdirSync, openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { localFleet, startRunbook, runbook, journalRecords, tmp, START_STATE, ROOT } from './crash-common.js';
import { waitFor } from './harness/wait.js';
import { existsSync } from 'node:fs';

// Every step prints 5 KB, so each step-end record (4 KiB output tail) needs a new tmpfs page.
const RB = `name: bigout
steps:
  - name: stop
    run: echo stopped > {{ dir }}/svc; yes x | head -c 5000
    rollback: echo running > {{ dir }}/svc
  - name: aside
    run: mv {{ dir }}/data {{ dir }}/data.bak; yes y | head -c 5000; sleep 2
    rollback: if [ -e {{ dir }}/data.bak ]; then mv -f {{ dir }}/data.bak {{ dir }}/data; fi
  - name: rebuild
    run: echo new > {{ dir }}/data
    rollback: rm -f {{ dir }}/data
  - name: start
    run: echo running > {{ dir }}/svc
    rollback: echo stopped > {{ dir }}/svc
`;

const mounts: string[] = [];
after(() => {
  for (const m of mounts) {
    try {
      execFileSync('umount', [m]);
    } catch {
      try {
        execFileSync('umount', ['-l', m]);
      } catch {
        /* gone */
      }
    }
  }
});

function fill(dir: string): number {
  const fd = openSync(join(dir, 'filler'), 'w');
  const chunk = Buffer.alloc(1024, 0x41);
  let n = 0;
  try {
    for (;;) {
      writeSync(fd, chunk);
      n += chunk.length;
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
  return n;
}

test('disk full for the journal: the run stops, rolls back the hosts in flight, exit 4', async () => {
  assert.ok(existsSync(join(ROOT, 'dist', 'cli', 'main.js')), 'dist/ is missing: build first');
  assert.equal(process.getuid?.(), 0, 'mounting a tmpfs needs root');
  const fleet = localFleet(3);
  await fleet.reset();
  const work = tmp('rb-diskfull-');
  const rb = join(work, 'bigout.yml');
  writeFileSync(rb, RB);
  const inv = await fleet.inventory(join(work, 'inv.yml'));
  const stateDir = join(work, 'state');
  mkdirSync(stateDir);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', stateDir]);
  mounts.push(stateDir);

  const { done } = startRunbook(['apply', rb, '-i', inv, '--state-dir', stateDir]);
  // All hosts are inside "aside" (sleeping): fill the disk under the journal now.
  await waitFor(
    () => ['h1', 'h2', 'h3'].every((h) => journalRecords(stateDir).some((r) => r.type === 'step-start' && r.host === h && r.index === 1)),
    { what: 'every host in step aside (its intent in the journal)' },
  );
  const filled = fill(stateDir);
  assert.ok(filled > 0 && filled < 64 * 1024);
  const r = await done;
  assert.equal(r.code, 4, `exit 4 = stopped because the journal could not be written (stderr: ${r.stderr})`);
  assert.match(r.stdout + r.stderr, /cannot write the run journal .*no space left on device \(ENOSPC\); the run stops changing hosts/);
  for (const h of fleet.names) assert.equal(await fleet.state(h), START_STATE, `${h} rolled back to its start state`);
  for (const h of fleet.names) assert.equal(await fleet.lock(h), null, `${h} unlocked`);
  // The journal on the full disk still reads (its torn tail, if any, is tolerated).
  const show = await runbook(['show-run', journalRecords(stateDir).find((x) => x.type === 'run-start')!.run_id, '--state-dir', stateDir]);
  assert.equal(show.code, 0, show.stderr);
  assert.match(show.stdout, /aside/);
});

// tier: local
/**
 * A stale host lock through bin/runbook: a run killed with kill -9 leaves its lock; another
 * apply is refused with the holder's details; `unlock` breaks it only with the holder's run
 * id, and journals it in that run's journal.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { localFleet, startRunbook, runbook, journalRecords, onlyRunId, tmp, RUNBOOK, START_STATE, END_STATE } from './crash-common.js';
import { parseNdjson } from './harness/events.js';
import { waitFor } from './harness/wait.js';

test("unlock: a dead run's lock refuses others; unlock needs the holder run id and is journaled", async () => {
  const fleet = localFleet(2);
  await fleet.reset();
  const work = tmp('rb-unlock-');
  const rb = join(work, 'crashy.yml');
  writeFileSync(rb, RUNBOOK);
  const inv = await fleet.inventory(join(work, 'inv.yml'), { h1: { pf_nap: 3 }, h2: { pf_nap: 3 } });
  const dead = join(work, 'dead');
  const { child, done } = startRunbook(['apply', rb, '-i', inv, '--state-dir', dead]);
  // Each host is locked before its preflight (which naps 3 s): kill the controller once both locks exist.
  let ended = false;
  void done.then(() => {
    ended = true;
  });
  const locks = await waitFor(
    async () => {
      if (ended) throw new Error(`the run ended before it locked both hosts: ${JSON.stringify(await done)}`);
      const l = await Promise.all(fleet.names.map((h) => fleet.lock(h)));
      return l.every((x) => x !== null) && (l as string[]);
    },
    { what: 'the run locks of h1 and h2' },
  );
  child.kill('SIGKILL');
  const killed = await done;
  assert.equal(killed.signal, 'SIGKILL', `the controller was still running when killed (stderr: ${killed.stderr})`);
  const deadId = onlyRunId(dead);
  const held = JSON.parse(locks[0]) as { run_id: string; pid: number; started: string };
  assert.equal(held.run_id, deadId);
  assert.equal(await fleet.lock('h1'), locks[0], 'the dead run left its lock');

  // A new run is refused on both hosts, with the holder's details; nothing changed.
  const other = join(work, 'other');
  const r = await runbook(['apply', rb, '-i', inv, '--state-dir', other, '--json']);
  const ends = parseNdjson(r.stdout).filter((e) => e.type === 'host-end');
  assert.equal(ends.length, 2);
  for (const e of ends) {
    assert.equal(e.status, 'skipped');
    assert.match(
      e.message ?? '',
      new RegExp(
        `${e.host} is locked by run ${deadId} \\(crashy\\), controller \\S+ pid ${held.pid}, since ${held.started.replace(/[.]/g, '\\.')}; .*runbook unlock ${e.host} -i INVENTORY --run ${deadId}`,
      ),
    );
  }
  for (const h of fleet.names) assert.equal(await fleet.state(h), START_STATE);

  // unlock with the wrong run id: refused, lock kept.
  const wrong = await runbook(['unlock', 'h1', '-i', inv, '--run', '20200101T000000Z-000000', '--state-dir', dead]);
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, new RegExp(`h1 is locked by run ${deadId} .*not by run 20200101T000000Z-000000; nothing was removed`));
  assert.ok(await fleet.lock('h1'));
  // Unknown host: a clear error.
  const unknown = await runbook(['unlock', 'h9', '-i', inv, '--run', deadId, '--state-dir', dead]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /host h9 is not in .*inv\.yml/);

  // The right run id: removed and journaled.
  const ok = await runbook(['unlock', 'h1', '-i', inv, '--run', deadId, '--state-dir', dead]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stderr, new RegExp(`removed the lock on h1 .* held by run ${deadId}`));
  assert.equal(await fleet.lock('h1'), null);
  const rec = journalRecords(dead).find((x) => x.type === 'lock-broken');
  assert.ok(rec, "lock-broken journaled in the run's journal");
  assert.equal(rec.host, 'h1');
  assert.equal((rec.holder as { run_id?: string } | undefined)?.run_id, deadId);
  assert.equal(typeof rec.by_pid, 'number');
  const again = await runbook(['unlock', 'h1', '-i', inv, '--run', deadId, '--state-dir', dead]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /h1 has no run lock .*nothing to unlock/);
  const show = await runbook(['show-run', deadId, '--state-dir', dead]);
  assert.match(show.stdout, new RegExp(`lock of run ${deadId} broken at`));

  // h1 is free again; h2 still held by the dead run.
  const r2 = await runbook(['apply', rb, '-i', inv, '--state-dir', other, '--json']);
  const ends2 = Object.fromEntries(
    parseNdjson(r2.stdout)
      .filter((e) => e.type === 'host-end')
      .map((e) => [e.host, e.status]),
  );
  assert.deepEqual(ends2, { h1: 'changed', h2: 'skipped' });
  assert.equal(await fleet.state('h1'), END_STATE);
  assert.equal(await fleet.state('h2'), START_STATE);
  assert.ok(readFileSync(join(dead, 'runs', `${deadId}.ndjson`), 'utf8').includes('"lock-broken"'));
});

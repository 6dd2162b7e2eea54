// tier: unit
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, statSync, symlinkSync, mkdirSync, writeFileSync, appendFileSync, rmSync } from 'node:fs';
import { tmpdir, homedir } from 'node:os';
import { join } from 'node:path';
import { openJournal, newRunId, defaultStateDir, journalPath, isRunId } from '../src/journal/writer.js';
import { parseJournal, readJournal, listRuns } from '../src/journal/reader.js';
import { RunbookError } from '../src/core/errors.js';
import { replay } from '../src/journal/history.js';
import { hostRecovery } from '../src/plan/recovery.js';
import type { Runbook } from '../src/runbook/types.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'rb-journal-'));
const lines = (p: string) =>
  readFileSync(p, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));

test('writer: append-only NDJSON under runs/, file 0600, dirs 0700, journal-open first', async () => {
  const dir = join(tmp(), 'state');
  const id = newRunId();
  const j = await openJournal(dir, id, { fsync: true });
  assert.equal(j.path, journalPath(dir, id));
  assert.equal(j.path, join(dir, 'runs', `${id}.ndjson`));
  j.write({ type: 'run-start', run_id: id, time: 't0' });
  j.write({ type: 'host-start', host: 'a', time: 't1' });
  await j.sync();
  const recs = lines(j.path);
  assert.deepEqual(
    recs.map((r) => r.type),
    ['journal-open', 'run-start', 'host-start'],
  );
  assert.equal(recs[0].pid, process.pid);
  assert.equal(statSync(j.path).mode & 0o777, 0o600);
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  assert.equal(statSync(join(dir, 'runs')).mode & 0o777, 0o700);
  j.write({ type: 'run-end', time: 't2' });
  await j.close();
  const all = lines(j.path);
  assert.deepEqual(all.map((r) => r.type).slice(3), ['run-end', 'journal-close'], 'close() flushes what is buffered, then says how');
  assert.deepEqual(
    all[4].stats,
    { records: 5, syncs: 1, writes: 1, fsyncs: 1, bytes: all[4].stats.bytes },
    'counts before its own (final) commit',
  );
  await j.close(); // idempotent
});

test('writer: records are not on disk before sync(), and are after it (the fsync follows the write)', async () => {
  const dir = tmp();
  let fsyncs = 0;
  const seenAtFsync: number[] = [];
  const j = await openJournal(dir, newRunId(), {
    fsync: true,
    onFsync: () => {
      fsyncs++;
      seenAtFsync.push(readFileSync(j.path, 'utf8').split('\n').filter(Boolean).length);
    },
  });
  j.write({ type: 'step-start', host: 'a', index: 0 });
  assert.equal(readFileSync(j.path, 'utf8'), '', 'write() only buffers');
  await j.sync();
  assert.equal(fsyncs, 1);
  assert.deepEqual(seenAtFsync, [2], 'the fsync ran after both buffered records were written');
  await j.sync(); // nothing new: no extra fsync
  assert.equal(fsyncs, 1);
  assert.equal(j.stats.fsyncs, 1);
  await j.close();
});

test('writer: group commit — 200 concurrent intents cost a handful of fsyncs, order and content intact', async () => {
  const dir = tmp();
  let fsyncs = 0;
  const j = await openJournal(dir, newRunId(), {
    fsync: true,
    onFsync: () => {
      fsyncs++;
    },
  });
  await j.sync();
  const base = fsyncs;
  const N = 200;
  const done: Promise<void>[] = [];
  for (let i = 0; i < N; i++) {
    j.write({ type: 'step-start', host: `h${i}`, index: i });
    done.push(
      j.sync().then(() => {
        // When my sync resolves, my record is in the file.
        const text = readFileSync(j.path, 'utf8');
        assert.ok(text.includes(`"host":"h${i}"`), `record ${i} durable when its sync resolved`);
      }),
    );
    if (i % 7 === 0) await new Promise((r) => setImmediate(r)); // arrivals spread over time
  }
  await Promise.all(done);
  const used = fsyncs - base;
  assert.ok(used >= 1 && used < N / 4, `group commit: ${used} fsyncs for ${N} syncs`);
  assert.equal(j.stats.syncs, N + 1);
  const recs = lines(j.path).filter((r) => r.type === 'step-start');
  assert.deepEqual(
    recs.map((r) => r.index),
    Array.from({ length: N }, (_, i) => i),
    'records in write order',
  );
  await j.close();
});

test('writer: a sync() arriving during an fsync waits for the next fsync, which carries its record', async () => {
  const dir = tmp();
  const order: string[] = [];
  const j = await openJournal(dir, newRunId(), { fsync: true, onFsync: () => order.push(`fsync:${lines(j.path).length}`) });
  j.write({ type: 'a' });
  const s1 = j.sync().then(() => order.push('s1'));
  // s1's flush is now in progress (it took the buffer synchronously); B arrives after.
  j.write({ type: 'b' });
  const s2 = j.sync().then(() => order.push('s2'));
  j.write({ type: 'c' });
  const s3 = j.sync().then(() => order.push('s3'));
  await Promise.all([s1, s2, s3]);
  // 2 records in the first fsync (journal-open + a), b and c share the second.
  // (s1's callback may run before or after the second fsync starts; what matters is what each waited for.)
  assert.deepEqual(
    order.filter((x) => x.startsWith('fsync')),
    ['fsync:2', 'fsync:4'],
  );
  assert.ok(order.indexOf('s1') > order.indexOf('fsync:2'));
  assert.ok(order.indexOf('s2') > order.indexOf('fsync:4') && order.indexOf('s3') > order.indexOf('fsync:4'));
  await j.close();
});

test('writer: fsync:false writes but never fsyncs', async () => {
  const dir = tmp();
  let fsyncs = 0;
  const j = await openJournal(dir, newRunId(), {
    fsync: false,
    onFsync: () => {
      fsyncs++;
    },
  });
  for (let i = 0; i < 10; i++) {
    j.write({ type: 'x', i });
    await j.sync();
  }
  await j.close();
  assert.equal(fsyncs, 0);
  assert.equal(j.stats.fsyncs, 0);
  assert.equal(lines(j.path).length, 12);
});

test('writer: disk full -> sync() rejects with E_JOURNAL naming the file and the reason, and keeps rejecting', async () => {
  const dir = tmp();
  const id = newRunId();
  mkdirSync(join(dir, 'runs'), { recursive: true });
  symlinkSync('/dev/full', journalPath(dir, id)); // every write(2) fails with ENOSPC
  const j = await openJournal(dir, id, { fsync: true });
  j.write({ type: 'step-start', host: 'a', index: 0 });
  await assert.rejects(j.sync(), (err: unknown) => {
    assert.ok(err instanceof RunbookError);
    assert.equal(err.code, 'E_JOURNAL');
    assert.match(
      err.message,
      new RegExp(
        `cannot write the run journal ${journalPath(dir, id).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: no space left on device \\(ENOSPC\\); the run stops changing hosts`,
      ),
    );
    return true;
  });
  await assert.rejects(j.sync(), /E_JOURNAL|cannot write the run journal/);
  j.write({ type: 'later' });
  await assert.rejects(j.sync(), (e: unknown) => (e as RunbookError).code === 'E_JOURNAL');
  await j.close();
});

test('writer: state dir that cannot be created -> E_JOURNAL_OPEN (exit 1, nothing changed), saying what to fix', async () => {
  const dir = tmp();
  writeFileSync(join(dir, 'file'), 'x');
  await assert.rejects(openJournal(join(dir, 'file', 'state'), newRunId(), { fsync: true }), (e: unknown) => {
    assert.equal((e as RunbookError).code, 'E_JOURNAL_OPEN');
    assert.match((e as Error).message, /cannot open the run journal .*a parent is not a directory \(ENOTDIR\); nothing was changed/);
    return true;
  });
});

test('writer: reopening a journal appends; a torn tail left by a crash is cut off first', async () => {
  const dir = tmp();
  const id = newRunId();
  const j1 = await openJournal(dir, id, { fsync: true });
  j1.write(full({ type: 'run-start', run_id: id }));
  await j1.close();
  appendFileSync(j1.path, '{"type":"step-start","host":"a","ind'); // crash mid-write
  const j2 = await openJournal(dir, id, { fsync: true });
  j2.write(full({ type: 'run-start', run_id: id, again: true }));
  await j2.close();
  const { records, torn } = await readJournal(j2.path);
  assert.equal(torn, false);
  assert.deepEqual(
    records.map((r) => r.type),
    ['journal-open', 'run-start', 'journal-close', 'journal-open', 'run-start', 'journal-close'],
  );
  assert.equal(records[3].type === 'journal-open' && records[3].torn_bytes_dropped, 36);
});

test('newRunId: shape, sortable by time, unique', () => {
  const a = newRunId(new Date('2026-11-26T19:50:12.345Z'));
  assert.match(a, /^20261126T195012Z-[0-9a-f]{6}$/);
  assert.ok(isRunId(a));
  const b = newRunId(new Date('2026-11-26T19:50:13.000Z'));
  assert.ok(a < b);
  const many = new Set(Array.from({ length: 2000 }, () => newRunId()));
  assert.equal(many.size, 2000);
});

test('defaultStateDir: RUNBOOK_STATE_DIR, else XDG_STATE_HOME/runbook, else ~/.local/state/runbook', () => {
  assert.equal(defaultStateDir({ RUNBOOK_STATE_DIR: '/s', XDG_STATE_HOME: '/x' }), '/s');
  assert.equal(defaultStateDir({ XDG_STATE_HOME: '/x' }), '/x/runbook');
  assert.equal(defaultStateDir({ HOME: '/home/u' }), '/home/u/.local/state/runbook');
  assert.equal(defaultStateDir({}), join(homedir(), '.local/state/runbook'));
});

// ---------------------------------------------------------------------------------------------
// reader

/** A record with the fields the decoder requires filled in (tests name only what they test). */
function full(r: Record<string, unknown>): Record<string, unknown> {
  const base: Record<string, unknown> = { time: 't' };
  if (r.type === 'run-start') Object.assign(base, { run_id: 'r', runbook: 'rb', hosts: [] });
  if (typeof r.type === 'string' && /^(step|rollback)-/.test(r.type)) Object.assign(base, { step: `s${String(r.index)}` });
  if (typeof r.type === 'string' && r.type.startsWith('step-')) base.phase = 'step';
  return { ...base, ...r };
}
const J = (recs: object[]) => recs.map((r) => `${JSON.stringify(full(r as Record<string, unknown>))}\n`).join('');

test('reader: a torn last line (no newline) is ignored and reported', () => {
  const text = `${J([{ type: 'run-start' }, { type: 'host-start', host: 'a' }])}{"type":"step-sta`;
  const r = parseJournal(text, '/j.ndjson');
  assert.equal(r.torn, true);
  assert.deepEqual(
    r.records.map((x) => x.type),
    ['run-start', 'host-start'],
  );
});

test('reader: a last line that parses but lacks its newline is torn too (its sync never returned)', () => {
  const r = parseJournal(`${J([{ type: 'run-start' }])}{"type":"step-start"}`, '/j');
  assert.equal(r.torn, true);
  assert.equal(r.records.length, 1);
});

test('reader: an unparsable last line with a newline (zeros after power loss) is torn', () => {
  const r = parseJournal(`${J([{ type: 'run-start' }])}\0\0\0\0\n`, '/j');
  assert.equal(r.torn, true);
  assert.equal(r.records.length, 1);
});

test('reader: a malformed line in the middle is E_JOURNAL_CORRUPT naming file and line', () => {
  const text = `${J([{ type: 'run-start' }])}{"type": oops}\n${J([{ type: 'run-end' }])}`;
  assert.throws(
    () => parseJournal(text, '/state/runs/x.ndjson'),
    (e: unknown) => {
      assert.equal((e as RunbookError).code, 'E_JOURNAL_CORRUPT');
      assert.match((e as Error).message, /run journal \/state\/runs\/x\.ndjson line 2 is not valid JSON/);
      return true;
    },
  );
  const ok = J([{ type: 'run-start' }]);
  assert.throws(() => parseJournal(`${ok}[1,2]\n${ok}`, '/j'), /line 2 is not a journal record/);
  assert.throws(() => parseJournal(`${ok}\n${ok}`, '/j'), /line 2 is not valid JSON/);
  assert.throws(() => parseJournal(`{"notype":1}\n${ok}`, '/j'), /line 1 is not a journal record/);
  // Decoded against the schema: a record that lacks what recovery relies on is corrupt, not guessed at.
  assert.throws(
    () => parseJournal(`${J([{ type: 'step-end', host: 'a', status: 'changed' }])}${ok}`, '/j'),
    /line 1 \(step-end\) lacks its field "index"/,
  );
  assert.throws(
    () => parseJournal(`${J([{ type: 'host-end', host: 'a', status: 'fine' }])}${ok}`, '/j'),
    /line 1 \(host-end\) has a bad "status"/,
  );
  assert.throws(() => parseJournal(`${J([{ type: 'teleport' }])}${ok}`, '/j'), /line 1 has an unknown record type "teleport"/);
  // The inputs and plan that resume rebuilds from are checked too, not only their presence.
  const inputs = { inventory: ['/i'], extra_vars: [], cwd: '/', options: {} };
  assert.equal(parseJournal(`${J([{ type: 'run-start', inputs }])}${ok}`, '/j').records.length, 2);
  assert.throws(
    () => parseJournal(`${J([{ type: 'run-start', inputs: { ...inputs, extra_vars: 'x=1' } }])}${ok}`, '/j'),
    /line 1 \(run-start\) has a bad "inputs\.extra_vars"/,
  );
  assert.throws(
    () => parseJournal(`${J([{ type: 'run-start', plan: { hosts: [{ name: 'a' }], batches: [], max_failed: 0 } }])}${ok}`, '/j'),
    /line 1 \(run-start\) has a bad "plan\.hosts"/,
  );
  assert.throws(
    () => parseJournal(`${J([{ type: 'journal-open', v: 99 }])}${ok}`, '/j'),
    (e: unknown) => (e as RunbookError).code === 'E_JOURNAL_VERSION',
  );
});

test('reader: empty file, missing file', async () => {
  assert.deepEqual(parseJournal('', '/j').records, []);
  assert.equal(parseJournal('', '/j').torn, false);
  await assert.rejects(readJournal(join(tmp(), 'nope.ndjson')), (e: unknown) => (e as RunbookError).code === 'E_RUN_NOT_FOUND');
});

// ---------------------------------------------------------------------------------------------
// replay (journal -> run history) and hostRecovery (history + runbook -> resume state / ledger)

const steps = [
  { index: 0, rollback: 'undo0' },
  { index: 1 }, // no rollback
  { index: 2, rollback: 'undo2', register: 'out2' },
  { index: 3, rollback: 'undo3' },
  { index: 4, rollback: 'undo4' },
];
const book = { steps, preflight: [{ index: 0, register: 'pre' }] } as unknown as Pick<Runbook, 'steps' | 'preflight'>;
const ss = (host: string, index: number, phase = 'step') => ({ type: 'step-start', host, index, phase, step: `s${index}` });
const se = (host: string, index: number, status: string, stage: string, extra: object = {}) => ({
  type: 'step-end',
  host,
  index,
  phase: 'step',
  step: `s${index}`,
  status,
  stage,
  ...extra,
});
/** Replays records (through the decoder, as a journal file is read) and plans recovery per host. */
function states(recs: object[]) {
  const h = replay(parseJournal(J(recs), '/j').records, { runId: 'r', path: '/j' });
  return new Map([...h.hosts].map(([name, s]) => [name, { ...s, ...hostRecovery(s, book) }]));
}

test('replay: done outcomes, the unknown step, ledger of started steps with a rollback, registers', () => {
  const recs = [
    { type: 'journal-open' },
    { type: 'run-start', hosts: ['a', 'b', 'c'] },
    ss('a', 0, 'preflight'),
    {
      type: 'step-end',
      host: 'a',
      index: 0,
      phase: 'preflight',
      status: 'ok',
      stage: 'run',
      register: { stdout: 'pf', stderr: '', code: 0 },
    },
    { type: 'host-start', host: 'a', batch: 0 },
    ss('a', 0),
    se('a', 0, 'changed', 'verify'),
    ss('a', 1),
    se('a', 1, 'changed', 'run'),
    ss('a', 2),
    se('a', 2, 'changed', 'run', { register: { stdout: 'hello', stderr: 'w', code: 0 } }),
    ss('a', 3),
    se('a', 3, 'skipped', 'when'),
    ss('a', 4), // intent, no outcome: controller died
    { type: 'host-start', host: 'b', batch: 0 },
    ss('b', 0),
    se('b', 0, 'ok', 'unless'),
  ];
  const st = states(recs);
  const a = st.get('a')!;
  assert.equal(a.started, true);
  assert.equal(a.finished, undefined);
  assert.equal(a.preflightDone, true);
  assert.deepEqual(
    [...a.done.entries()],
    [
      [0, 'changed'],
      [1, 'changed'],
      [2, 'changed'],
      [3, 'skipped'],
    ],
  );
  assert.equal(a.unknown, 4);
  assert.deepEqual(a.resume?.ledger, [0, 2], 'step 1 has no rollback, 3 was skipped, 4 is unknown');
  assert.deepEqual(a.undo, [0, 2, 4], 'a rollback also undoes the unknown step, first');
  assert.deepEqual(a.resume?.registers, { pre: { stdout: 'pf', stderr: '', code: 0 }, out2: { stdout: 'hello', stderr: 'w', code: 0 } });
  assert.deepEqual(a.ran, [0, 1, 2], 'every started step, before the runbook says which have a rollback');
  const b = st.get('b')!;
  assert.equal(b.unknown, undefined);
  assert.deepEqual(b.resume?.ledger, [], 'unless said done: the run never started');
  const c = st.get('c')!;
  assert.equal(c.started, false);
  assert.equal(c.preflightDone, false);
  assert.equal(c.resume, undefined, 'never worked on: a resume starts it normally');
});

test('replay: rollbacks already done leave the ledger; an interrupted rollback stays; a later resume appends', () => {
  const recs = [
    { type: 'run-start', hosts: ['a'] },
    { type: 'host-start', host: 'a' },
    ss('a', 0),
    se('a', 0, 'changed', 'run'),
    ss('a', 2),
    se('a', 2, 'changed', 'run'),
    ss('a', 3),
    se('a', 3, 'failed', 'verify'),
    { type: 'rollback-start', host: 'a', index: 3 },
    { type: 'rollback-end', host: 'a', index: 3, status: 'ok' },
    { type: 'rollback-start', host: 'a', index: 2 }, // died here
  ];
  const a = states(recs).get('a')!;
  assert.deepEqual(a.resume?.ledger, [0, 2]);
  assert.deepEqual([...a.rolledBack], [3]);
  assert.equal(a.rollbackInFlight, 2);
  assert.equal(a.done.get(3), 'failed', 'a failed step stays failed after its rollback (the engine finishes the unwind)');
  assert.equal(a.done.get(2), 'changed', 'its rollback did not end: still done');

  const more = [
    ...recs,
    { type: 'journal-open' },
    { type: 'run-start', hosts: ['a'] },
    { type: 'rollback-start', host: 'a', index: 2 },
    { type: 'rollback-end', host: 'a', index: 2, status: 'ok' },
    { type: 'rollback-start', host: 'a', index: 0 },
    { type: 'rollback-end', host: 'a', index: 0, status: 'failed' },
    { type: 'host-end', host: 'a', status: 'needs-attention' },
  ];
  const a2 = states(more).get('a')!;
  assert.deepEqual(a2.undo, [0], 'the failed rollback is still owed');
  assert.deepEqual([...a2.rollbackFailed], [0]);
  assert.equal(a2.rollbackInFlight, undefined);
  assert.equal(a2.finished, 'needs-attention');
  assert.equal(a2.done.has(2), false, 'changed then rolled back ok: undone, resume would run it again');
  assert.equal(a2.done.get(0), 'changed', 'its rollback failed: still in effect');
});

test('replay: a recorded unknown outcome (connection lost) stays unknown; a resumed outcome settles it', () => {
  const recs = [{ type: 'host-start', host: 'a' }, ss('a', 0), se('a', 0, 'unknown', 'run')];
  const a = states(recs).get('a')!;
  assert.equal(a.unknown, 0);
  assert.equal(a.done.has(0), false);
  const resumed = states([
    ...recs,
    { type: 'host-start', host: 'a' },
    ss('a', 0),
    se('a', 0, 'changed', 'verify'),
    { type: 'host-end', host: 'a', status: 'changed' },
  ]).get('a')!;
  assert.equal(resumed.unknown, undefined);
  assert.equal(resumed.done.get(0), 'changed');
  assert.deepEqual(resumed.resume?.ledger, [0]);
  assert.equal(resumed.finished, 'changed');
  assert.deepEqual(resumed.events, ['resumed at t'], 'show-run says the host was resumed');
});

// ---------------------------------------------------------------------------------------------
// listRuns

test('listRuns: newest first, status from run-end, incomplete, running? (live pid), corrupt listed', async () => {
  const dir = tmp();
  const runs = join(dir, 'runs');
  mkdirSync(runs, { recursive: true });
  const { hostname } = await import('node:os');
  const done = '20261101T000000Z-000001';
  writeFileSync(
    join(runs, `${done}.ndjson`),
    J([
      { type: 'journal-open', pid: 999999999, controller: hostname() },
      { type: 'run-start', run_id: done, runbook: 'hello', time: '2026-11-01T00:00:00Z', hosts: ['a', 'b', 'c'] },
      { type: 'host-start', host: 'a' },
      { type: 'host-end', host: 'a', status: 'changed' },
      { type: 'host-start', host: 'b' },
      { type: 'host-end', host: 'b', status: 'failed' },
      { type: 'host-start', host: 'c' },
      { type: 'host-end', host: 'c', status: 'changed' },
      { type: 'run-end', run_id: done, status: 'failed', exit_code: 2, time: '2026-11-01T00:01:00Z' },
    ]),
  );
  const dead = '20261102T000000Z-000002';
  writeFileSync(
    join(runs, `${dead}.ndjson`),
    `${J([
      { type: 'journal-open', pid: 999999999, controller: hostname() },
      { type: 'run-start', run_id: dead, runbook: 'hello', time: '2026-11-02T00:00:00Z', hosts: ['a', 'b'] },
      { type: 'host-start', host: 'a' },
    ])}{"type":"ste`,
  );
  const live = '20261103T000000Z-000003';
  writeFileSync(
    join(runs, `${live}.ndjson`),
    J([
      { type: 'journal-open', pid: process.pid, controller: hostname() },
      { type: 'run-start', run_id: live, runbook: 'fix', time: '2026-11-03T00:00:00Z', hosts: ['a'] },
    ]),
  );
  const bad = '20261104T000000Z-000004';
  writeFileSync(join(runs, `${bad}.ndjson`), `garbage\n${J([{ type: 'x' }])}`);
  writeFileSync(join(runs, 'notes.txt'), 'ignored');
  const list = await listRuns(dir);
  assert.deepEqual(
    list.map((r) => r.run_id),
    [bad, live, dead, done],
  );
  assert.equal(list[0].status, 'corrupt');
  assert.match(list[0].error!, /line 1/);
  assert.equal(list[1].status, 'running?');
  assert.equal(list[2].status, 'incomplete');
  assert.equal(list[2].torn, true);
  assert.deepEqual(list[2].hosts, { incomplete: 1, pending: 1 });
  assert.equal(list[3].status, 'failed');
  assert.equal(list[3].exit_code, 2);
  assert.equal(list[3].ended, '2026-11-01T00:01:00Z');
  assert.equal(list[3].runbook, 'hello');
  assert.deepEqual(list[3].hosts, { changed: 2, failed: 1 });
  assert.deepEqual(await listRuns(join(dir, 'none')), []);
  rmSync(dir, { recursive: true, force: true });
});

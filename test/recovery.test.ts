// tier: unit
// The recovery core: the pure planner (history + request + plan -> what resume/rollback do, or a
// refusal as data), table-driven without hosts; and a journal written by runbook 0.1.0 (journal
// version 1, committed as a fixture) that today's resume and rollback still finish.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { ConnectionSpec } from '../src/inventory/types.js';
import { replay } from '../src/journal/history.js';
import { parseJournal } from '../src/journal/reader.js';
import { planRecovery, type RecoveryRequest, recoveryInputs } from '../src/plan/recovery.js';
import type { Plan } from '../src/plan/types.js';
import type { Runbook, StepSpec } from '../src/runbook/types.js';

const root = new URL('..', import.meta.url).pathname;

// ---------------------------------------------------------------------------------------------
// The planner, from data

const HASH = 'a'.repeat(64);
const conn = (name: string, over: Partial<ConnectionSpec> = {}): ConnectionSpec => ({
  kind: 'ssh',
  name,
  address: `${name}.lan`,
  port: 22,
  user: 'ops',
  ...over,
});
const stepOf = (index: number, rollback?: string): StepSpec => ({
  name: `s${index}`,
  phase: 'step',
  index,
  run: `run ${index}`,
  timeoutMs: 1000,
  local: false,
  become: false,
  ...(rollback ? { rollback } : {}),
});
const runbook = { name: 'rb', steps: [stepOf(0, 'undo 0'), stepOf(1), stepOf(2, 'undo 2')], preflight: [] } as unknown as Runbook;

function freshPlan(hosts: Array<[string, Partial<ConnectionSpec>?]>): Plan {
  return {
    runId: 'R',
    runbook,
    hosts: hosts.map(([n, over]) => ({ name: n, connection: conn(n, over), vars: {} })),
    batches: [hosts.map(([n]) => n)],
    maxFailed: 0,
    forks: 50,
    secrets: [],
  };
}

const t = (i: number) => `2026-12-01T00:00:0${i}Z`;
function journal(opts: { extraVars?: string[]; noPlan?: boolean; hash?: string; open?: object; end?: boolean } = {}): object[] {
  const start = {
    type: 'run-start',
    time: t(1),
    run_id: 'R',
    runbook: 'rb',
    hosts: ['a', 'b'],
    batches: [['a'], ['b']],
    max_failed: 1,
    forks: 5,
    ...(opts.noPlan
      ? {}
      : {
          runbook_file: '/rb.yml',
          runbook_hash: opts.hash ?? HASH,
          inputs: { inventory: ['/inv.yml'], extra_vars: opts.extraVars ?? ['x=1'], cwd: '/w', options: { forks: 5, user: 'ops' } },
          plan: {
            hosts: [
              { name: 'a', connection: { kind: 'ssh', address: 'a.lan', port: 22, user: 'ops' } },
              { name: 'b', connection: { kind: 'ssh', address: 'b.lan', port: 22, user: 'ops' } },
            ],
            batches: [['a'], ['b']],
            max_failed: 1,
          },
        }),
  };
  return [
    { type: 'journal-open', time: t(0), controller: 'ctl', pid: 4242, ...opts.open },
    start,
    { type: 'host-start', time: t(2), host: 'a', batch: 0 },
    { type: 'step-start', time: t(2), host: 'a', step: 's0', phase: 'step', index: 0 },
    { type: 'step-end', time: t(3), host: 'a', step: 's0', phase: 'step', index: 0, status: 'changed', stage: 'run' },
    { type: 'step-start', time: t(3), host: 'a', step: 's1', phase: 'step', index: 1 },
    { type: 'step-end', time: t(4), host: 'a', step: 's1', phase: 'step', index: 1, status: 'changed', stage: 'run' },
    { type: 'step-start', time: t(4), host: 'a', step: 's2', phase: 'step', index: 2 },
    ...(opts.end ? [{ type: 'run-end', time: t(5), status: 'failed', exit_code: 2 }] : []),
  ];
}
const history = (recs: object[]) =>
  replay(parseJournal(recs.map((r) => `${JSON.stringify(r)}\n`).join(''), '/state/runs/R.ndjson').records, {
    runId: 'R',
    path: '/state/runs/R.ndjson',
  });
const request = (over: Partial<RecoveryRequest> = {}): RecoveryRequest => ({
  mode: 'resume',
  force: false,
  alive: false,
  runbookNow: { hash: HASH },
  given: { extraVars: [] },
  ...over,
});

const refusals: Array<{ name: string; recs: object[]; req: Partial<RecoveryRequest>; code: string; says: RegExp }> = [
  {
    name: 'a live controller',
    recs: journal(),
    req: { alive: true },
    code: 'E_RUN_ACTIVE',
    says: /looks alive \(its controller process 4242/,
  },
  {
    name: 'a live process opened the journal after the run ended (an unlock in flight)',
    recs: [...journal({ end: true }), { type: 'journal-open', time: t(6), controller: 'ctl', pid: 4343 }],
    req: { alive: true },
    code: 'E_RUN_ACTIVE',
    says: /controller process 4343/,
  },
  { name: 'no recorded plan', recs: journal({ noPlan: true }), req: {}, code: 'E_RUN_NO_PLAN', says: /died before it recorded its plan/ },
  {
    name: 'runbook unreadable',
    recs: journal(),
    req: { runbookNow: { error: 'ENOENT' } },
    code: 'E_RUNBOOK_CHANGED',
    says: /cannot be read any more: ENOENT/,
  },
  {
    name: 'runbook changed',
    recs: journal(),
    req: { runbookNow: { hash: 'b'.repeat(64) } },
    code: 'E_RUNBOOK_CHANGED',
    says: /changed since run R \(sha256 aaaaaaaaaaaa… then, bbbbbbbbbbbb… now\).*--force to resume/,
  },
  {
    name: 'secret -e not given again',
    recs: journal({ extraVars: ['token=***'] }),
    req: { mode: 'rollback' },
    code: 'E_RESUME_SECRETS',
    says: /secret extra vars \(token=\*\*\*\).*runbook rollback R -e NAME=VALUE/,
  },
];

for (const c of refusals) {
  test(`recoveryInputs refuses: ${c.name}`, () => {
    const d = recoveryInputs(history(c.recs), request(c.req));
    assert.equal(d.ok, false);
    if (d.ok) return;
    assert.equal(d.refusal.code, c.code);
    assert.match(d.refusal.message, c.says);
  });
}

test('recoveryInputs: a finished run is not alive whatever its pid; --force takes a changed runbook; given -e win', () => {
  const ended = recoveryInputs(history(journal({ end: true })), request({ alive: true }));
  assert.equal(ended.ok, true, 'a run-end after the last open: the process is not that run any more');
  const forced = recoveryInputs(
    history(journal({ extraVars: ['token=***'] })),
    request({ force: true, runbookNow: { hash: 'b'.repeat(64) }, given: { extraVars: ['token=s3cret'], user: 'root' } }),
  );
  assert.ok(forced.ok);
  if (!forced.ok) return;
  assert.deepEqual(forced.value, {
    runbookFile: '/rb.yml',
    inventory: ['/inv.yml'],
    extraVars: ['token=***', 'token=s3cret'],
    forks: 5,
    user: 'root',
    privateKey: undefined,
    cwd: '/w',
  });
});

const planRefusals: Array<{ name: string; hosts: Array<[string, Partial<ConnectionSpec>?]>; force?: boolean; says?: RegExp }> = [
  {
    name: 'a recorded host left the inventory',
    hosts: [['a']],
    says: /no longer yields host b of run R; restore the inventory \(\/inv\.yml\)/,
  },
  {
    name: 'a host moved',
    hosts: [['a', { address: '10.9.9.9' }], ['b']],
    says: /host a of run R now resolves to address 10\.9\.9\.9 \(was a\.lan\)/,
  },
  { name: 'a host moved, --force', hosts: [['a', { port: 2222 }], ['b']], force: true },
];
for (const c of planRefusals) {
  test(`planRecovery: ${c.name}`, () => {
    const d = planRecovery(history(journal()), request({ force: c.force ?? false }), freshPlan(c.hosts));
    if (!c.says) return assert.equal(d.ok, true);
    assert.equal(d.ok, false);
    if (!d.ok) {
      assert.equal(d.refusal.code, 'E_RUN_PLAN_CHANGED');
      assert.match(d.refusal.message, c.says);
    }
  });
}

test('planRecovery: the recorded hosts, batches and budget; per host the resume state and the ledger to undo', () => {
  const fresh = freshPlan([['c'], ['b'], ['a']]); // the inventory grew and changed order since
  const resume = planRecovery(history(journal()), request(), fresh);
  assert.ok(resume.ok);
  if (!resume.ok) return;
  const p = resume.value.plan;
  assert.deepEqual(
    p.hosts.map((h) => h.name),
    ['a', 'b'],
  );
  assert.deepEqual(p.batches, [['a'], ['b']]);
  assert.equal(p.maxFailed, 1);
  assert.equal(fresh.hosts.length, 3, 'the fresh plan is not edited');
  const a = resume.value.resume.get('a')!;
  assert.deepEqual(
    [...a.done],
    [
      [0, 'changed'],
      [1, 'changed'],
    ],
  );
  assert.equal(a.unknown, 2);
  assert.deepEqual(a.ledger, [0], 'step 1 has no rollback; step 2 is settled by the engine first');
  assert.equal(resume.value.resume.has('b'), false, 'b never started: it starts normally');

  const rollback = planRecovery(history(journal()), request({ mode: 'rollback' }), fresh);
  assert.ok(rollback.ok);
  if (!rollback.ok) return;
  assert.deepEqual(Object.fromEntries(rollback.value.undo), { a: [0, 2], b: [] }, 'the unknown step 2 may have run: undone first');
});

// ---------------------------------------------------------------------------------------------
// A journal of runbook 0.1.0 (journal v1, no `v` field), killed with kill -9 in step Two on both
// hosts (step Two's command had written its file, its verify had not run). Paths were replaced by
// @DIR@ and the dead controller's pid by one that cannot exist.

const FIXTURE = join(root, 'test/fixtures/journals/v1-killed');
const RUN_ID = '20261201T200314Z-45bdc8';

function fixtureRun(): { dir: string; out: string; cli: (args: string[]) => ReturnType<typeof spawnSync> } {
  const dir = mkdtempSync(join(tmpdir(), 'rb-v1-'));
  for (const f of ['fixture.yml', 'inv.yml']) writeFileSync(join(dir, f), readFileSync(join(FIXTURE, f)));
  mkdirSync(join(dir, 'state', 'runs'), { recursive: true });
  const text = readFileSync(join(FIXTURE, 'journal.ndjson'), 'utf8').replaceAll('@DIR@', dir);
  writeFileSync(join(dir, 'state', 'runs', `${RUN_ID}.ndjson`), text);
  const out = join(dir, 'out');
  mkdirSync(out);
  // What the killed run had done on each host: step One and step Two's command.
  for (const h of ['a', 'b']) {
    writeFileSync(join(out, `${h}-1`), 'one\n');
    writeFileSync(join(out, `${h}-2`), 'ready\n');
  }
  const cli = (args: string[]) =>
    spawnSync(process.execPath, [join(root, 'bin/runbook'), ...args, '--state-dir', join(dir, 'state'), '--json'], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, NO_COLOR: '1', TMPDIR: dir },
    });
  return { dir, out, cli };
}

const events = (stdout: string) =>
  stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { type: string; host?: string; status?: string; step?: string });

test('a v1 journal (runbook 0.1.0, killed mid-step) still resumes: the unknown step is settled by its verify, the rest runs', () => {
  const { out, cli } = fixtureRun();
  const r = cli(['resume', RUN_ID]);
  assert.equal(r.status, 0, `resume exit ${r.status}: ${r.stderr}`);
  const ev = events(String(r.stdout));
  assert.deepEqual(Object.fromEntries(ev.filter((e) => e.type === 'host-end').map((e) => [e.host, e.status])), {
    a: 'changed',
    b: 'changed',
  });
  for (const h of ['a', 'b']) {
    assert.equal(readFileSync(join(out, `${h}-3`), 'utf8'), 'three\n', `step Three ran on ${h}`);
    assert.ok(!ev.some((e) => e.type === 'step-start' && e.host === h && e.step === 'One'), 'step One is not repeated');
  }
  const again = cli(['resume', RUN_ID]);
  assert.equal(again.status, 0, 'resuming a finished run changes nothing');
  assert.ok(!events(String(again.stdout)).some((e) => e.type === 'step-start'), 'no step starts again');
});

test('a v1 journal (runbook 0.1.0, killed mid-step) still rolls back: the unknown step first, then the earlier ones', () => {
  const { out, cli } = fixtureRun();
  const r = cli(['rollback', RUN_ID]);
  assert.equal(r.status, 0, `rollback exit ${r.status}: ${r.stderr}`);
  const ev = events(String(r.stdout));
  assert.deepEqual(
    ev.filter((e) => e.type === 'rollback-end' && e.host === 'a').map((e) => `${e.step}:${e.status}`),
    ['Two:ok', 'One:ok'],
  );
  for (const h of ['a', 'b']) for (const n of [1, 2, 3]) assert.ok(!existsSync(join(out, `${h}-${n}`)), `${h}-${n} removed`);
});

// tier: unit
// Pure unit tests of the engine's state machine, ledger and fleet policy, with a scripted fake
// transport (no I/O). End-to-end behaviour over real processes is in e2e-local.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runPlan, Engine, type EngineOptions } from '../src/engine/engine.js';
import type { HostResumeState } from '../src/plan/types.js';
import type { RunEvent, JournalSink } from '../src/engine/events.js';
import type { Runbook, StepSpec } from '../src/runbook/types.js';
import type { PlannedHost } from '../src/plan/types.js';
import { createPlan, splitBatches, resolveCount } from '../src/plan/plan.js';
import { TransportError } from '../src/transport/types.js';
import { type Behaviour, FakeTransport } from './harness/fake-transport.js';

/** A type guard for events of one type. */
const isType =
  <T extends RunEvent['type']>(type: T) =>
  (e: RunEvent): e is Extract<RunEvent, { type: T }> =>
    e.type === type;

function step(name: string, index: number, extra: Partial<StepSpec> = {}): StepSpec {
  return {
    name,
    phase: 'step',
    index,
    run: `run ${name}`,
    rollback: `undo ${name}`,
    timeoutMs: 1000,
    local: false,
    become: false,
    ...extra,
  };
}

function runbook(steps: StepSpec[], extra: Partial<Runbook> = {}): Runbook {
  return {
    name: 't',
    destructive: false,
    become: false,
    serial: [],
    maxFailed: 0,
    preflightFailure: 'skip-host',
    vars: {},
    secretVars: [],
    preflight: [],
    steps,
    file: '/x/t.yml',
    hash: 'h',
    source: '',
    ...extra,
  };
}

function hosts(n: number): Array<{ name: string; vars: Record<string, unknown>; connection: PlannedHost['connection'] }> {
  return Array.from({ length: n }, (_, i) => ({
    name: `h${i + 1}`,
    vars: {},
    connection: { kind: 'local' as const, name: `h${i + 1}`, address: 'localhost' },
  }));
}

async function go(
  rb: Runbook,
  n: number,
  b: Behaviour,
  extra: Partial<EngineOptions> & { fake?: Record<string, { unreachable?: boolean; reconnectFails?: boolean }> } = {},
) {
  const plan = createPlan(rb, hosts(n), { runId: 'r1', forks: extra.plan?.forks ?? 10 });
  const events: RunEvent[] = [];
  const log: string[] = [];
  const result = await runPlan({
    plan,
    transport: (h) => new FakeTransport(h.name, b, log, extra.fake?.[h.name]),
    localTransport: (h) => new FakeTransport(h.name, b, log),
    emit: (e) => events.push(e),
    ...extra,
  });
  return { result, events, log };
}

const ok: Behaviour = () => ({ code: 0 });

test('all steps succeed: changed, exit 0, events in contract order', async () => {
  const { result, events } = await go(runbook([step('a', 0), step('b', 1)]), 2, ok);
  assert.equal(result.exit_code, 0);
  assert.deepEqual(result.hosts, { h1: 'changed', h2: 'changed' });
  assert.equal(events[0].type, 'run-start');
  assert.equal(events.at(-1)!.type, 'run-end');
  for (const e of events) assert.ok(e.time && e.type);
  const h1 = events.filter((e) => 'host' in e && e.host === 'h1').map((e) => e.type);
  assert.deepEqual(h1, ['host-start', 'step-start', 'step-end', 'step-start', 'step-end', 'host-end']);
});

test('step 3 of 4 fails: rollbacks 3,2,1 in that order, rolled-back, exit 2', async () => {
  const rb = runbook([step('s1', 0), step('s2', 1), step('s3', 2), step('s4', 3)]);
  const { result, log, events } = await go(rb, 1, (_h, s) => ({ code: s === 'run s3' ? 1 : 0 }));
  assert.deepEqual(
    log.map((l) => l.split(':')[1]),
    ['run s1', 'run s2', 'run s3', 'undo s3', 'undo s2', 'undo s1'],
  );
  assert.equal(result.hosts.h1, 'rolled-back');
  assert.equal(result.exit_code, 2);
  assert.deepEqual(
    events.filter(isType('rollback-end')).map((e) => e.step),
    ['s3', 's2', 's1'],
  );
});

test('skipped and ok steps owe no rollback', async () => {
  const rb = runbook([step('s1', 0, { when: 'no' }), step('s2', 1, { unless: 'done' }), step('s3', 2), step('s4', 3)]);
  const { result, log, events } = await go(rb, 1, (_h, s) => ({ code: s === 'no' || s === 'run s4' ? 1 : 0 }));
  assert.deepEqual(
    log.map((l) => l.split(':')[1]),
    ['no', 'done', 'run s3', 'run s4', 'undo s4', 'undo s3'],
  );
  assert.deepEqual(
    events.filter(isType('step-end')).map((e) => e.status),
    ['skipped', 'ok', 'changed', 'failed'],
  );
  assert.equal(result.hosts.h1, 'rolled-back');
});

test('a failing rollback does not stop the unwind; host needs-attention, exit 3', async () => {
  const rb = runbook([step('s1', 0), step('s2', 1), step('s3', 2)]);
  const { result, log } = await go(rb, 1, (_h, s) => ({ code: s === 'run s3' || s === 'undo s2' ? 1 : 0 }));
  assert.deepEqual(
    log.map((l) => l.split(':')[1]),
    ['run s1', 'run s2', 'run s3', 'undo s3', 'undo s2', 'undo s1'],
  );
  assert.equal(result.hosts.h1, 'needs-attention');
  assert.equal(result.exit_code, 3);
});

test('failed step without any rollback: failed, not rolled-back', async () => {
  const rb = runbook([step('s1', 0, { rollback: undefined }), step('s2', 1, { rollback: undefined })]);
  const { result } = await go(rb, 1, (_h, s) => ({ code: s === 'run s2' ? 1 : 0 }));
  assert.equal(result.hosts.h1, 'failed');
});

test('verify holds on its 3rd attempt', async () => {
  const rb = runbook([step('s1', 0, { verify: { run: 'check', retries: 3, delayMs: 5 } })]);
  const { result, events } = await go(rb, 1, (_h, s, n) => ({ code: s === 'check' && n < 3 ? 1 : 0 }));
  assert.equal(result.hosts.h1, 'changed');
  const end = events.find(isType('step-end'))!;
  assert.equal(end.attempts, 3);
  assert.equal(end.stage, 'verify');
});

test('verify that never holds fails the step after retries+1 attempts and rolls it back', async () => {
  const rb = runbook([step('s1', 0, { verify: { run: 'check', retries: 2, delayMs: 1 } })]);
  const { result, log } = await go(rb, 1, (_h, s) => ({ code: s === 'check' ? 1 : 0 }));
  assert.equal(log.filter((l) => l.endsWith(':check')).length, 3);
  assert.ok(log.at(-1)!.endsWith('undo s1'));
  assert.equal(result.hosts.h1, 'rolled-back');
});

test('a timed-out run fails the step', async () => {
  const rb = runbook([step('s1', 0)]);
  const { result, events } = await go(rb, 1, (_h, s) => (s === 'run s1' ? { code: null, timedOut: true, signal: 'SIGKILL' } : { code: 0 }));
  assert.equal(result.hosts.h1, 'rolled-back');
  assert.equal(events.find(isType('step-end'))?.timed_out, true);
});

test('max_failed 0 with serial 1: the first failure stops new hosts', async () => {
  const rb = runbook([step('s1', 0)], { serial: [1] });
  const { result, log } = await go(rb, 3, (h, s) => ({ code: h === 'h1' && s === 'run s1' ? 1 : 0 }));
  assert.deepEqual(result.hosts, { h1: 'rolled-back', h2: 'skipped', h3: 'skipped' });
  assert.ok(!log.some((l) => l.startsWith('h2:') || l.startsWith('h3:')));
});

test('max_failed is over the whole run, not per batch', async () => {
  const rb = runbook([step('s1', 0)], { serial: [1], maxFailed: 1 });
  const { result } = await go(rb, 4, (h, s) => ({ code: (h === 'h1' || h === 'h2') && s === 'run s1' ? 1 : 0 }));
  assert.deepEqual(result.hosts, { h1: 'rolled-back', h2: 'rolled-back', h3: 'skipped', h4: 'skipped' });
});

test('planner: serial lists, percentages, budgets', () => {
  const names = Array.from({ length: 10 }, (_, i) => `n${i}`);
  assert.deepEqual(
    splitBatches(names, []).map((b) => b.length),
    [10],
  );
  assert.deepEqual(
    splitBatches(names, [0]).map((b) => b.length),
    [10],
  );
  assert.deepEqual(
    splitBatches(names, [3]).map((b) => b.length),
    [3, 3, 3, 1],
  );
  assert.deepEqual(
    splitBatches(names, [1, '30%']).map((b) => b.length),
    [1, 3, 3, 3],
  );
  assert.deepEqual(
    splitBatches(names, [1, 2, 5]).map((b) => b.length),
    [1, 2, 5, 2],
  );
  assert.deepEqual(
    splitBatches(names, ['5%']).map((b) => b.length),
    Array(10).fill(1),
  );
  assert.equal(resolveCount('10%', 50), 5);
  assert.equal(resolveCount('10%', 5), 0);
  assert.equal(resolveCount(2, 5), 2);
});

test('forks bounds concurrency', async () => {
  let active = 0;
  let peak = 0;
  const slow: Behaviour = async () => {
    active++;
    peak = Math.max(peak, active);
    await new Promise((r) => setTimeout(r, 10));
    active--;
    return { code: 0 };
  };
  const rb = runbook([step('s1', 0)]);
  const plan = createPlan(rb, hosts(8), { runId: 'r', forks: 3 });
  await runPlan({
    plan,
    transport: (h) => new FakeTransport(h.name, slow, []),
    localTransport: (h) => new FakeTransport(h.name, slow, []),
    emit: () => {},
  });
  assert.equal(peak, 3);
});

test('unreachable host: unreachable, counts against the budget', async () => {
  const rb = runbook([step('s1', 0)], { maxFailed: 0 });
  const { result } = await go(rb, 2, ok, { fake: { h1: { unreachable: true } } });
  assert.equal(result.hosts.h1, 'unreachable');
  assert.equal(result.hosts.h2, 'skipped');
  assert.equal(result.exit_code, 2);
});

test('connection lost mid-step: outcome unknown, reconnect, roll back', async () => {
  const rb = runbook([step('s1', 0), step('s2', 1)]);
  const { result, events, log } = await go(rb, 1, (_h, s) => (s === 'run s2' ? 'lost' : { code: 0 }));
  assert.equal(events.filter(isType('step-end'))[1].status, 'unknown');
  assert.deepEqual(
    log.slice(-2).map((l) => l.split(':')[1]),
    ['undo s2', 'undo s1'],
  );
  assert.equal(result.hosts.h1, 'rolled-back');
});

test('connection lost mid-step and cannot reconnect: needs-attention', async () => {
  const rb = runbook([step('s1', 0), step('s2', 1)]);
  const { result } = await go(rb, 1, (_h, s) => (s === 'run s2' ? 'lost' : { code: 0 }), {
    fake: { h1: { reconnectFails: true } },
  });
  assert.equal(result.hosts.h1, 'needs-attention');
  assert.equal(result.exit_code, 3);
});

test('preflight runs on every host before any host changes; a failing preflight drops that host', async () => {
  const pf: StepSpec = { name: 'pf', phase: 'preflight', index: 0, run: 'check-pf', timeoutMs: 1000, local: false, become: false };
  const rb = runbook([step('s1', 0)], { preflight: [pf], serial: [1], maxFailed: 0 });
  const { result, log } = await go(rb, 3, (h, s) => ({ code: h === 'h2' && s === 'check-pf' ? 1 : 0 }));
  assert.deepEqual(
    log.slice(0, 3).map((l) => l.split(':')[1]),
    ['check-pf', 'check-pf', 'check-pf'],
  );
  assert.deepEqual(result.hosts, { h1: 'changed', h2: 'skipped', h3: 'changed' });
  assert.ok(!log.includes('h2:run s1'));
});

test('preflight_failure: abort stops the whole run before any change', async () => {
  const pf: StepSpec = { name: 'pf', phase: 'preflight', index: 0, run: 'check-pf', timeoutMs: 1000, local: false, become: false };
  const rb = runbook([step('s1', 0)], { preflight: [pf], preflightFailure: 'abort' });
  const { result, log } = await go(rb, 3, (h, s) => ({ code: h === 'h3' && s === 'check-pf' ? 1 : 0 }));
  assert.ok(!log.some((l) => l.includes('run s1')));
  assert.deepEqual(Object.values(result.hosts), ['skipped', 'skipped', 'skipped']);
});

test('interrupt between steps: no new step, host rolls back, exit 130', async () => {
  const ac = new AbortController();
  const rb = runbook([step('s1', 0), step('s2', 1), step('s3', 2)]);
  const { result, log } = await go(
    rb,
    1,
    (_h, s) => {
      if (s === 'run s2') ac.abort();
      return { code: 0 };
    },
    { signal: ac.signal },
  );
  assert.deepEqual(
    log.map((l) => l.split(':')[1]),
    ['run s1', 'run s2', 'undo s2', 'undo s1'],
  );
  assert.equal(result.hosts.h1, 'rolled-back');
  assert.equal(result.exit_code, 130);
});

test('write-ahead: a step intent is durable before its run starts', async () => {
  const written: Array<Record<string, unknown>> = [];
  let durable = 0;
  const journal: JournalSink = {
    write: (r) => {
      written.push(r);
    },
    sync: async () => {
      durable = written.length;
    },
  };
  const rb = runbook([step('s1', 0), step('s2', 1)]);
  const b: Behaviour = (_h, s) => {
    if (s.startsWith('run ')) {
      const name = s.slice(4);
      const idx = written.findIndex((r) => r.type === 'step-start' && r.step === name);
      assert.ok(idx >= 0 && idx < durable, `intent of ${name} durable before run`);
    }
    return { code: 0 };
  };
  await go(rb, 2, b, { journal });
  assert.ok(written.some((r) => r.type === 'step-end'));
});

test('journal cannot be written: no step runs after it, in-flight host rolls back, exit 4', async () => {
  let syncs = 0;
  const journal: JournalSink = {
    write() {},
    sync: async () => {
      if (++syncs > 3) throw new Error('ENOSPC: no space left on device');
    },
  };
  const rb = runbook([step('s1', 0), step('s2', 1), step('s3', 2)]);
  const { result, log } = await go(rb, 1, ok, { journal });
  assert.ok(!log.includes('h1:run s3'));
  assert.ok(log.includes('h1:undo s1'));
  assert.equal(result.exit_code, 4);
});

test('resume: durable steps are not repeated, an unknown step is settled by its verify', async () => {
  const rb = runbook([step('s1', 0), step('s2', 1, { verify: { run: 'check s2', retries: 0, delayMs: 0 } }), step('s3', 2)]);
  const resume = new Map<string, HostResumeState>([['h1', { done: new Map([[0, 'changed']]), unknown: 1, ledger: [0], registers: {} }]]);
  const { result, log } = await go(rb, 1, ok, { mode: { kind: 'resume', hosts: resume } });
  assert.deepEqual(
    log.map((l) => l.split(':')[1]),
    ['check s2', 'run s3'],
  );
  assert.equal(result.hosts.h1, 'changed');
});

test('resume: an unknown step that did not take effect rolls back the whole ledger', async () => {
  const rb = runbook([step('s1', 0), step('s2', 1, { verify: { run: 'check s2', retries: 0, delayMs: 0 } }), step('s3', 2)]);
  const resume = new Map<string, HostResumeState>([['h1', { done: new Map([[0, 'changed']]), unknown: 1, ledger: [0], registers: {} }]]);
  const { result, log } = await go(rb, 1, (_h, s) => ({ code: s === 'check s2' ? 1 : 0 }), { mode: { kind: 'resume', hosts: resume } });
  assert.deepEqual(
    log.map((l) => l.split(':')[1]),
    ['check s2', 'undo s2', 'undo s1'],
  );
  assert.equal(result.hosts.h1, 'rolled-back');
});

test('resume: an unknown step whose verify reads its own unrecorded register fails (rolled back), not a crash', async () => {
  const rb = runbook([
    step('s1', 0),
    step('s2', 1, { register: 'out', verify: { run: 'check {{ out.stdout }}', retries: 0, delayMs: 0 } }),
    step('s3', 2),
  ]);
  const resume = new Map<string, HostResumeState>([['h1', { done: new Map([[0, 'changed']]), unknown: 1, ledger: [0], registers: {} }]]);
  const { result, log } = await go(rb, 1, ok, { mode: { kind: 'resume', hosts: resume } });
  assert.deepEqual(
    log.map((l) => l.split(':')[1]),
    ['undo s2', 'undo s1'],
  );
  assert.equal(result.hosts.h1, 'rolled-back');
});

test('resume: an unknown step marked rerun is run again (its checks too), not rolled back', async () => {
  const rb = runbook([step('s1', 0), step('s2', 1, { rerun: true, verify: { run: 'check s2', retries: 0, delayMs: 0 } }), step('s3', 2)]);
  const resume = new Map<string, HostResumeState>([['h1', { done: new Map([[0, 'changed']]), unknown: 1, ledger: [0], registers: {} }]]);
  const { result, log } = await go(rb, 1, ok, { mode: { kind: 'resume', hosts: resume } });
  assert.deepEqual(
    log.map((l) => l.split(':')[1]),
    ['run s2', 'check s2', 'run s3'],
  );
  assert.equal(result.hosts.h1, 'changed');
});

test('a read_only step that ran ends ok, not changed: a host whose other steps were skipped ends ok', async () => {
  const rb = runbook([step('s1', 0, { when: 'false' }), step('s2', 1, { readOnly: true, rollback: undefined })]);
  const { result, events, log } = await go(rb, 1, (_h, cmd) => ({ code: cmd === 'false' ? 1 : 0 }));
  assert.ok(log.includes('h1:run s2'), log.join(' '));
  assert.deepEqual(
    events.filter((e) => e.type === 'step-end').map((e) => `${e.step}=${e.status}`),
    ['s1=skipped', 's2=ok'],
  );
  assert.deepEqual(result.hosts, { h1: 'ok' });
});

test('resume: an unknown read_only step settled by its verify is ok, not changed', async () => {
  const rb = runbook([step('s1', 0, { readOnly: true, rollback: undefined, verify: { run: 'check s1', retries: 0, delayMs: 0 } })]);
  const resume = new Map<string, HostResumeState>([['h1', { done: new Map(), unknown: 0, ledger: [], registers: {} }]]);
  const { result, events, log } = await go(rb, 1, ok, { mode: { kind: 'resume', hosts: resume } });
  assert.deepEqual(log, ['h1:check s1']);
  assert.deepEqual(
    events.filter((e) => e.type === 'step-end').map((e) => `${e.step}=${e.status}`),
    ['s1=ok'],
  );
  assert.deepEqual(result.hosts, { h1: 'ok' });
});

test('rollback mode unwinds a recorded ledger in reverse', async () => {
  const rb = runbook([step('s1', 0), step('s2', 1), step('s3', 2)]);
  const plan = createPlan(rb, hosts(2), { runId: 'r', forks: 5 });
  const log: string[] = [];
  const r = await runPlan({
    plan,
    mode: { kind: 'rollback', undo: new Map([['h1', [0, 2]]]) },
    emit: () => {},
    transport: (h) => new FakeTransport(h.name, ok, log),
    localTransport: (h) => new FakeTransport(h.name, ok, log),
  });
  assert.deepEqual(log, ['h1:undo s3', 'h1:undo s1']);
  assert.deepEqual(r.hosts, { h1: 'rolled-back' });
  assert.equal(r.exit_code, 0);
});

test("rollback mode renders rollbacks with the run's registers (from its journal)", async () => {
  const rb = runbook([step('s1', 0, { register: 'where', rollback: 'undo in {{ where.stdout }}' }), step('s2', 1)]);
  const plan = createPlan(rb, hosts(1), { runId: 'r', forks: 5 });
  const log: string[] = [];
  const registers = new Map([['h1', { where: { stdout: '/srv/x', stderr: '', code: 0 } }]]);
  const r = await runPlan({
    plan,
    mode: { kind: 'rollback', undo: new Map([['h1', [0]]]), registers },
    emit: () => {},
    transport: (h) => new FakeTransport(h.name, ok, log),
    localTransport: (h) => new FakeTransport(h.name, ok, log),
  });
  assert.deepEqual(log, ['h1:undo in /srv/x']);
  assert.deepEqual(r.hosts, { h1: 'rolled-back' });
});

test('registered output is available to later steps; secrets are redacted in events', async () => {
  const rb = runbook([step('s1', 0, { run: 'produce', register: 'out' }), step('s2', 1, { run: 'use {{ out.stdout }} {{ pw }}' })], {
    vars: { pw: 'hunter2' },
    secretVars: ['pw'],
  });
  const { events, log } = await go(rb, 1, (_h, s) => ({ code: 0, stdout: s === 'produce' ? 'val' : 'said hunter2' }));
  assert.ok(log.includes('h1:use val hunter2'));
  const text = JSON.stringify(events);
  assert.ok(!text.includes('hunter2'), 'secret must not appear in events');
  assert.ok(text.includes('***'));
});

test('probe never runs run or rollback', async () => {
  const rb = runbook([step('s1', 0, { when: 'w1' }), step('s2', 1, { unless: 'u2' }), step('s3', 2)]);
  const plan = createPlan(rb, hosts(1), { runId: 'r', forks: 5 });
  const log: string[] = [];
  const res = await new Engine({
    plan,
    emit: () => {},
    transport: (h) => new FakeTransport(h.name, (_h, s) => ({ code: s === 'w1' ? 1 : 0 }), log),
    localTransport: (h) => new FakeTransport(h.name, ok, log),
  }).probe();
  assert.deepEqual(
    log.map((l) => l.split(':')[1]),
    ['w1', 'u2'],
  );
  assert.deepEqual(
    res[0].steps.map((s) => s.verdict.split(' ')[0]),
    ['skip', 'ok', 'would'],
  );
});

test('host lost during the unwind: one reconnect try, the rest is marked not attempted, needs-attention', async () => {
  const rb = runbook([step('s1', 0), step('s2', 1), step('s3', 2)]);
  const { result, log, events } = await go(rb, 1, (_h, s) => (s === 'run s3' ? { code: 1 } : s === 'undo s3' ? 'lost' : { code: 0 }), {
    fake: { h1: { reconnectFails: true } },
  });
  assert.deepEqual(
    log.map((l) => l.split(':')[1]),
    ['run s1', 'run s2', 'run s3', 'undo s3'],
  );
  const ends = events.filter(isType('rollback-end'));
  assert.deepEqual(
    ends.map((e) => [e.step, e.status]),
    [
      ['s3', 'failed'],
      ['s2', 'failed'],
      ['s1', 'failed'],
    ],
  );
  assert.match(ends[1].message ?? '', /not attempted/);
  assert.equal(result.hosts.h1, 'needs-attention');
});

// ---------------------------------------------------------------------------------------------
// One host state machine for every mode: how a lost connection or a lock failure counts is the
// same rule in apply, resume and rollback (nothing owed -> unreachable, counted against the
// budget; owed and never reached, or the lock never taken -> needs-attention, nothing undone
// without the lock; locked by another run -> skipped). A link lost while taking the lock is tried
// once more on a new connection.

const lockThat = (fail: 'transport' | 'transport-once' | 'held'): EngineOptions['lock'] => {
  let tries = 0;
  return {
    async acquire(_t, host) {
      tries++;
      if (fail === 'transport' || (fail === 'transport-once' && tries === 1)) {
        throw new TransportError('E_CONN_LOST', host, 'connection lost while taking the lock');
      }
      if (fail === 'held') throw new Error(`${host} is locked by run other`);
    },
    async release() {},
  };
};

const modes: Array<{ mode: 'apply' | 'resume' | 'rollback'; extra: () => Partial<EngineOptions> }> = [
  { mode: 'apply', extra: () => ({}) },
  {
    mode: 'resume',
    extra: () => ({
      mode: { kind: 'resume', hosts: new Map([['h1', { done: new Map([[0, 'changed' as const]]), ledger: [0], registers: {} }]]) },
    }),
  },
  { mode: 'rollback', extra: () => ({ mode: { kind: 'rollback', undo: new Map([['h1', [0]]]) } }) },
];
const hostRules: Array<{
  what: string;
  fake?: { unreachable?: boolean };
  lock?: 'transport' | 'transport-once' | 'held';
  want: Record<string, string>;
  /** Steps run or undone (false: nothing may be). */
  works?: boolean;
}> = [
  {
    what: 'cannot connect',
    fake: { unreachable: true },
    want: { apply: 'unreachable', resume: 'needs-attention', rollback: 'needs-attention' },
  },
  {
    what: 'connection lost taking the lock, twice',
    lock: 'transport',
    want: { apply: 'unreachable', resume: 'needs-attention', rollback: 'needs-attention' },
  },
  {
    what: 'connection lost taking the lock once',
    lock: 'transport-once',
    want: { apply: 'changed', resume: 'changed', rollback: 'rolled-back' },
    works: true,
  },
  { what: 'locked by another run', lock: 'held', want: { apply: 'skipped', resume: 'skipped', rollback: 'skipped' } },
];
for (const r of hostRules) {
  for (const m of modes) {
    test(`one host rule: ${r.what} in ${m.mode} -> ${r.want[m.mode]}`, async () => {
      const rb = runbook([step('s1', 0), step('s2', 1)]);
      const { result, log } = await go(rb, 1, ok, {
        ...m.extra(),
        ...(r.fake ? { fake: { h1: r.fake } } : {}),
        ...(r.lock ? { lock: lockThat(r.lock) } : {}),
      });
      assert.equal(result.hosts.h1, r.want[m.mode]);
      if (!r.works) assert.ok(!log.some((l) => / (run|undo) s/.test(l)), `nothing ran or was undone without the lock: ${log.join(', ')}`);
    });
  }
}

test('an error the engine did not expect ends that host, not the run: the others finish, every connection is closed', async () => {
  const rb = runbook([step('s1', 0), step('s2', 1)]);
  const plan = createPlan(rb, hosts(3), { runId: 'r1', forks: 10 });
  const log: string[] = [];
  const transports: FakeTransport[] = [];
  const closed = new Set<string>();
  const events: RunEvent[] = [];
  const bug: Behaviour = (h, s) => {
    if (h === 'h2' && s === 'run s2') throw new TypeError("Cannot read properties of undefined (reading 'x')");
    return { code: 0 };
  };
  const result = await runPlan({
    plan,
    emit: (e) => events.push(e),
    transport: (h) => {
      const t = new FakeTransport(h.name, bug, log);
      t.close = async () => {
        closed.add(h.name);
      };
      transports.push(t);
      return t;
    },
    localTransport: (h) => new FakeTransport(h.name, ok, log),
  });
  assert.deepEqual(result.hosts, { h1: 'changed', h2: 'needs-attention', h3: 'changed' });
  assert.equal(result.exit_code, 3);
  const end = events.filter(isType('host-end')).find((e) => e.host === 'h2');
  assert.match(end?.message ?? '', /^internal error \(a bug in runbook, please report it\): Cannot read properties.*runbook rollback r1$/);
  assert.ok(
    events.some((e) => e.type === 'run-end'),
    'the run still ends (journal, reports, exit code)',
  );
  assert.deepEqual([...closed].sort(), ['h1', 'h2', 'h3']);
});

test('a short secret is redacted from output, never from statuses and names: the journal stays readable', async () => {
  const { parseJournal } = await import('../src/journal/reader.js');
  const rb = runbook([step('s1', 0, { run: 'say {{ pw }}' })], { vars: { pw: 'changed' }, secretVars: ['pw'] });
  const { events } = await go(rb, 1, () => ({ code: 0, stdout: 'it changed' }));
  const end = events.filter(isType('step-end'))[0];
  assert.equal(end.status, 'changed');
  assert.equal(end.stdout, 'it ***');
  assert.equal(end.command, 'say ***');
  assert.deepEqual(events.filter(isType('run-end'))[0].hosts, { h1: 'changed' });
  const text = events.map((e) => `${JSON.stringify(e)}\n`).join('');
  assert.equal(parseJournal(text, '/j').records.length, events.length, 'every event decodes as a journal record');
});

// tier: unit
// The engine on format-2 runbooks (loaded from YAML by the real loader) with the scripted fake
// transport: if: sends nothing, apply_if and batches, escalation ledgers, resume inside an
// alternative. Over real sshd hosts: format2-e2e.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runPlan } from '../src/engine/engine.js';
import type { RunEvent } from '../src/engine/events.js';
import { parseRunbook } from '../src/runbook/load.js';
import { createPlan } from '../src/plan/plan.js';
import type { HostResumeState, PlannedHost } from '../src/plan/types.js';
import { type Behaviour, FakeTransport } from './harness/fake-transport.js';

const rb = (yaml: string) => parseRunbook(`name: t\n${yaml}`, '/x/t.yml', { cwd: '/x' });

function hostList(n: number, vars: (i: number) => Record<string, unknown> = () => ({})) {
  return Array.from({ length: n }, (_, i) => ({
    name: `h${i + 1}`,
    vars: vars(i + 1),
    connection: { kind: 'local' as const, name: `h${i + 1}`, address: 'localhost' } as PlannedHost['connection'],
  }));
}

/** Scripts (quotes of rendered values dropped): "fail ..." exits 1, "print X" prints X, anything else exits 0. */
const scripted: Behaviour = (_h, quoted) => {
  const script = quoted.replace(/'/g, '');
  if (script.startsWith('fail')) return { code: 1, stderr: 'it failed' };
  const m = /^print (.*)$/.exec(script);
  return m ? { code: 0, stdout: `${m[1]}\n` } : { code: 0 };
};

async function go(
  book: ReturnType<typeof rb>,
  n: number,
  o: { vars?: (i: number) => Record<string, unknown>; b?: Behaviour; resume?: Map<string, HostResumeState> } = {},
) {
  const plan = createPlan(book, hostList(n, o.vars), { runId: 'r1', forks: 10 });
  const events: RunEvent[] = [];
  const log: string[] = [];
  const b = o.b ?? scripted;
  const result = await runPlan({
    plan,
    transport: (h) => new FakeTransport(h.name, b, log),
    localTransport: (h) => new FakeTransport(h.name, b, log),
    emit: (e) => events.push(e),
    ...(o.resume ? { mode: { kind: 'resume' as const, hosts: o.resume } } : {}),
  });
  return { result, events, log };
}

const sent = (log: string[], host: string) =>
  log.filter((l) => l.startsWith(`${host}:`)).map((l) => l.slice(host.length + 1).replace(/'/g, ''));
const ofType = <T extends RunEvent['type']>(events: RunEvent[], t: T) =>
  events.filter((e): e is Extract<RunEvent, { type: T }> => e.type === t);

test('if: false sends no command for the step (not even its when); true runs it; the step-end says stage if', async () => {
  const book = rb(`vars: { on: false }
steps:
  - name: Off
    if: vars.on
    when: when-off
    run: run-off
  - name: On
    if: "!vars.on && host.name == 'h1'"
    run: run-on
`);
  const { result, log, events } = await go(book, 1);
  assert.equal(result.exit_code, 0);
  assert.deepEqual(sent(log, 'h1'), ['run-on']);
  const off = ofType(events, 'step-end').find((e) => e.step === 'Off')!;
  assert.equal(off.status, 'skipped');
  assert.equal(off.stage, 'if');
  assert.equal(off.message, 'if is false: vars.on');
});

test('apply_if: hosts where it is false end ok after their preflight; serial batches count only the hosts that go on', async () => {
  const book = rb(`serial: 1
preflight:
  - name: Diagnose
    register: diag
    run: print {{ state }}
apply_if: diag.stdout.startsWith('broken')
steps:
  - { name: S1, run: s1 }
  - { name: S2, run: s2 }
`);
  const broken = new Set([2, 5]);
  const { result, events, log } = await go(book, 6, { vars: (i) => ({ state: broken.has(i) ? 'broken' : 'healthy' }) });
  assert.equal(result.exit_code, 0);
  assert.deepEqual(result.hosts, { h1: 'ok', h2: 'changed', h3: 'ok', h4: 'ok', h5: 'changed', h6: 'ok' });
  assert.deepEqual(ofType(events, 'batches')[0].batches, [['h2'], ['h5']]);
  assert.deepEqual(sent(log, 'h1'), ['print healthy']);
  assert.deepEqual(sent(log, 'h2'), ['print broken', 's1', 's2']);
  const h1 = ofType(events, 'host-end').find((e) => e.host === 'h1')!;
  assert.equal(h1.message, "nothing to do: diag.stdout.startsWith('broken')");
  assert.ok(!ofType(events, 'host-start').some((e) => e.host === 'h1'), 'a host with nothing to do never starts the main phase');

  // preflight_failure: abort is about failed preflights: a host with nothing to do does not abort the run.
  const aborting = await go(
    rb(`preflight_failure: abort
preflight:
  - { name: D, register: diag, run: 'print {{ state }}' }
apply_if: diag.stdout.startsWith('broken')
steps:
  - { name: S1, run: s1 }
`),
    3,
    { vars: (i) => ({ state: i === 2 ? 'broken' : 'healthy' }) },
  );
  assert.deepEqual(aborting.result.hosts, { h1: 'ok', h2: 'changed', h3: 'ok' });

  // A percentage counts only those that go on: 4 of 10 go on, 50% -> batches of 2.
  const pct = rb(`serial: "50%"
preflight:
  - { name: D, register: diag, run: 'print {{ state }}' }
apply_if: diag.stdout.startsWith('broken')
steps:
  - { name: S1, run: s1 }
`);
  const four = new Set([1, 4, 7, 10]);
  const r2 = await go(pct, 10, { vars: (i) => ({ state: four.has(i) ? 'broken' : 'ok' }) });
  assert.deepEqual(ofType(r2.events, 'batches')[0].batches, [
    ['h1', 'h4'],
    ['h7', 'h10'],
  ]);
});

const ESC = `steps:
  - { name: Before, run: before, rollback: undo-before }
  - name: Repair
    escalate:
      - name: gentle
        steps:
          - { name: G1, run: g1, rollback: undo-g1 }
          - { name: G2, run: "{{ g2 }}", rollback: undo-g2 }
      - name: middle
        steps:
          - { name: M1, run: m1, rollback: "{{ undo_m1 }}", verify: "{{ m1_verify }}" }
      - name: wipe
        steps:
          - { name: W1, run: w1, rollback: undo-w1 }
  - { name: After, run: "{{ after }}", rollback: undo-after }
vars: { g2: g2, undo_m1: undo-m1, m1_verify: m1-ok, after: after }
`;

test('escalate: the first alternative holds; the others never run', async () => {
  const { result, log, events } = await go(rb(ESC), 1);
  assert.equal(result.hosts.h1, 'changed');
  assert.deepEqual(sent(log, 'h1'), ['before', 'g1', 'g2', 'after']);
  const group = ofType(events, 'step-end').find((e) => e.step === 'Repair')!;
  assert.equal(group.alternative, 'gentle');
  assert.equal(ofType(events, 'host-end')[0].message, 'Repair: repaired by gentle');
});

test('escalate: the first fails and is undone in reverse, the second fails its verify and is undone, the third holds; a later failure undoes only what stayed', async () => {
  const { result, log, events } = await go(rb(ESC), 1, {
    vars: () => ({ g2: 'fail g2', m1_verify: 'fail verify', after: 'fail after' }),
  });
  assert.equal(result.hosts.h1, 'rolled-back');
  assert.deepEqual(sent(log, 'h1'), [
    'before',
    'g1',
    'fail g2',
    'undo-g2',
    'undo-g1',
    'm1',
    'fail verify',
    'undo-m1',
    'w1',
    'fail after',
    'undo-after',
    'undo-w1',
    'undo-before',
  ]);
  assert.deepEqual(
    ofType(events, 'alternative-end').map((e) => [e.alternative, e.status]),
    [
      ['gentle', 'undone'],
      ['middle', 'undone'],
      ['wipe', 'held'],
    ],
  );
  const g2 = ofType(events, 'step-end').find((e) => e.step === 'G2')!;
  assert.equal(g2.alternative, 'gentle');
  assert.equal(ofType(events, 'host-end')[0].failed_step, 'After');
});

test('escalate: every alternative fails: each is undone, the escalation fails, the host unwinds as for any failed step', async () => {
  const { result, log, events } = await go(rb(ESC.replace('run: w1', 'run: fail w1')), 1, {
    vars: () => ({ g2: 'fail g2', m1_verify: 'fail v' }),
  });
  assert.equal(result.hosts.h1, 'rolled-back');
  assert.deepEqual(sent(log, 'h1').slice(-3), ['fail w1', 'undo-w1', 'undo-before']);
  const group = ofType(events, 'step-end').find((e) => e.step === 'Repair')!;
  assert.equal(group.status, 'failed');
  assert.match(
    group.message!,
    /^no alternative held: gentle did not hold: step "G2": exit 1: it failed; middle did not hold: step "M1": verify did not hold/,
  );
  assert.ok(!sent(log, 'h1').includes('after'));
});

test('escalate: a rollback of an alternative fails: no further alternative runs, the rest unwinds, the host needs attention', async () => {
  const { result, log, events } = await go(rb(ESC), 1, { vars: () => ({ m1_verify: 'fail v', undo_m1: 'fail undo-m1', g2: 'fail g2' }) });
  assert.equal(result.hosts.h1, 'needs-attention');
  assert.deepEqual(sent(log, 'h1'), ['before', 'g1', 'fail g2', 'undo-g2', 'undo-g1', 'm1', 'fail v', 'fail undo-m1', 'undo-before']);
  assert.deepEqual(
    ofType(events, 'alternative-end').map((e) => [e.alternative, e.status]),
    [
      ['gentle', 'undone'],
      ['middle', 'undo-failed'],
    ],
  );
});

test('escalate: an alternative whose if is false is passed over; the escalation’s own if false skips all of it', async () => {
  const book = rb(ESC.replace('      - name: middle\n', "      - name: middle\n        if: vars.g2 == 'never'\n"));
  const { log, events } = await go(book, 1, { vars: () => ({ g2: 'fail g2' }) });
  assert.deepEqual(sent(log, 'h1'), ['before', 'g1', 'fail g2', 'undo-g2', 'undo-g1', 'w1', 'after']);
  assert.deepEqual(ofType(events, 'alternative-end')[1].status, 'not-applicable');
  assert.equal(
    ofType(events, 'host-end')[0].message,
    'Repair: repaired by wipe (gentle did not hold: step "G2": exit 1: it failed; middle did not apply)',
  );
  const skipAll = rb(ESC.replace('  - name: Repair\n', '  - name: Repair\n    if: host.name == "other"\n'));
  const r2 = await go(skipAll, 1);
  assert.deepEqual(sent(r2.log, 'h1'), ['before', 'after']);
});

test('resume inside an alternative: a dead run’s failed step there is undone and the next alternative runs, as in a run that never died', async () => {
  const book = rb(ESC);
  // The dead run: Before changed, Repair started, G1 changed, G2 failed; its unwind had undone G2 only.
  const rs: HostResumeState = {
    done: new Map([
      [0, 'changed'],
      [2, 'changed'],
      [3, 'failed'],
    ]),
    ledger: [0, 2],
    registers: {},
  };
  const { result, log, events } = await go(book, 1, { resume: new Map([['h1', rs]]) });
  assert.equal(result.hosts.h1, 'changed');
  assert.deepEqual(sent(log, 'h1'), ['undo-g1', 'm1', 'm1-ok', 'after']);
  assert.deepEqual(
    ofType(events, 'alternative-end').map((e) => [e.alternative, e.status]),
    [
      ['gentle', 'undone'],
      ['middle', 'held'],
    ],
  );

  // Died after the first alternative was recorded undone: resume starts with the second.
  const rs2: HostResumeState = {
    done: new Map([
      [0, 'changed'],
      [3, 'failed'],
    ]),
    ledger: [0],
    registers: {},
    alternatives: new Map([['1/0', 'undone']]),
  };
  const r2 = await go(book, 1, { resume: new Map([['h1', rs2]]) });
  assert.deepEqual(sent(r2.log, 'h1'), ['m1', 'm1-ok', 'after']);
  assert.equal(ofType(r2.events, 'host-end')[0].message, 'Repair: repaired by middle (gentle did not hold)');
});

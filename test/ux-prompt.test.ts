// tier: unit
/** The destructive-runbook question: --yes, a terminal answer, and the refusal without a terminal. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { confirmDestructive, planSummaryText } from '../src/cli/prompt.js';
import type { Plan } from '../src/plan/types.js';
import type { Runbook, StepSpec } from '../src/runbook/types.js';

function io(input?: string) {
  const stdin = new PassThrough();
  const stderr = new PassThrough();
  let err = '';
  stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  if (input !== undefined) stdin.end(input);
  return {
    stdin,
    stderr,
    get err() {
      return err;
    },
  };
}

const step = (name: string, index: number, rollback?: string): StepSpec => ({
  name,
  phase: 'step',
  index,
  run: 'true',
  rollback,
  timeoutMs: 300_000,
  local: false,
  become: true,
});

function plan(hosts: number): Plan {
  const runbook: Runbook = {
    name: 'containerd-recover',
    description: 'Repair containerd',
    destructive: true,
    become: true,
    serial: [1, '25%'],
    maxFailed: 0,
    preflightFailure: 'skip-host',
    vars: {},
    secretVars: [],
    preflight: [{ ...step('Diagnose', 0), phase: 'preflight' }],
    steps: [step('Stop containerd', 0, 'systemctl start containerd'), step('Prune', 1)],
    file: '/x/containerd-recover.yml',
    hash: 'h',
    source: '',
  };
  const names = Array.from({ length: hosts }, (_, i) => `node${i + 1}`);
  return {
    runId: 'r1',
    runbook,
    forks: 50,
    maxFailed: 0,
    secrets: [],
    hosts: names.map((n) => ({ name: n, connection: { kind: 'ssh', name: n, address: n }, vars: {} })),
    batches: [names.slice(0, 1), names.slice(1)],
  };
}

test('--yes confirms without asking', async () => {
  const t = io();
  assert.equal(await confirmDestructive('summary', { yes: true, tty: false, stdin: t.stdin, stderr: t.stderr, runbook: 'x' }), true);
  assert.equal(t.err, '');
});

test('without a terminal and without --yes: E_CONFIRM, nothing asked', async () => {
  const t = io('y\n');
  await assert.rejects(
    confirmDestructive('summary', { yes: false, tty: false, stdin: t.stdin, stderr: t.stderr, runbook: 'containerd-recover' }),
    (e: { code?: string; message: string }) => {
      assert.equal(e.code, 'E_CONFIRM');
      assert.equal(
        e.message,
        'runbook containerd-recover is destructive and there is no terminal to confirm; pass --yes to run it unattended.',
      );
      return true;
    },
  );
  assert.equal(t.err, '');
});

test('on a terminal: asks once on stderr; "y" and "yes" confirm', async () => {
  for (const answer of ['y\n', 'YES\n', ' y \n']) {
    const t = io(answer);
    assert.equal(await confirmDestructive('THE PLAN\n', { yes: false, tty: true, stdin: t.stdin, stderr: t.stderr, runbook: 'rb' }), true);
    assert.match(t.err, /^THE PLAN\nRun the destructive runbook rb\? \[y\/N\] $/);
  }
});

test('on a terminal: anything else, an empty line or end of input refuses with E_CONFIRM', async () => {
  for (const answer of ['n\n', '\n', 'yep\n', '']) {
    const t = io(answer);
    await assert.rejects(
      confirmDestructive('P', { yes: false, tty: true, stdin: t.stdin, stderr: t.stderr, runbook: 'rb' }),
      (e: { code?: string; message: string }) => {
        assert.equal(e.code, 'E_CONFIRM');
        assert.match(e.message, /Not confirmed: nothing was run/);
        return true;
      },
    );
  }
});

test('the plan summary names hosts, batches, budget and steps', () => {
  const text = planSummaryText(plan(20), { window: '22:00-06:00' });
  assert.match(text, /^Runbook containerd-recover \(destructive\): Repair containerd$/m);
  assert.match(text, /Hosts \(20\): node1, node2, .*node12, … \(8 more\)/);
  assert.match(text, /Batches: 2 of 1, 19 hosts, at most 50 hosts at once/);
  assert.match(text, /Failure budget: no host starts after the first failure/);
  assert.match(text, /Window: hosts start only between 22:00 and 06:00/);
  assert.match(text, /1\. Stop containerd\n/);
  assert.match(text, /2\. Prune {2}\(no rollback\)/);
  assert.match(planSummaryText(plan(1)), /Hosts \(1\): node1\n/);
});

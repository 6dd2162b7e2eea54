// tier: unit
// Every check `plan` makes happens when the plan is built, so `validate -i` and `apply` find it
// before any host is contacted: a value that does not fit where it lands (an integer inside
// $(( )) given as "abc") is a validation error, not a failure after step 1 changed the host.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ValidationError } from '../src/core/errors.js';
import { createPlan } from '../src/plan/plan.js';
import { parseRunbook } from '../src/runbook/load.js';

const root = new URL('..', import.meta.url).pathname;
const BOOK = `name: arith
vars:
  n: 3
steps:
  - name: one
    run: echo one > "{{ dir }}/one"
  - name: probe
    register: got
    run: echo 5
  - name: two
    run: echo $(( {{ n }} + {{ got.stdout }} )) > "{{ dir }}/two"
`;
const host = (n: string) => ({ name: n, vars: { dir: '/tmp' }, connection: { kind: 'local' as const, name: n, address: 'localhost' } });

test('createPlan renders every command for every host: a non-integer inside $(( )) is an error naming host and step', () => {
  const rb = parseRunbook(BOOK, '/rb/arith.yml');
  assert.equal(createPlan(rb, [host('a')], { runId: 'r', forks: 1 }).hosts.length, 1, 'n=3 fits; the register is checked at run time');
  assert.throws(
    () => createPlan(rb, [host('a'), host('b')], { runId: 'r', forks: 1, extraVars: { n: 'abc' } }),
    (e: unknown) =>
      e instanceof ValidationError &&
      e.issues.length === 2 &&
      /steps\[2\]\.run: "n" is used inside \$\(\( \)\) but its value is not an integer \(host a, step "two"\)/.test(e.message),
  );
});

test('validate -i and apply refuse it before contacting a host: exit 1, no journal, step one never ran', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rb-plan-checks-'));
  writeFileSync(join(dir, 'arith.yml'), BOOK);
  writeFileSync(join(dir, 'inv.yml'), 'all:\n  vars:\n    ansible_connection: local\n  hosts:\n    a:\n');
  const cli = (args: string[]) =>
    spawnSync(
      process.execPath,
      [join(root, 'bin/runbook'), ...args, join(dir, 'arith.yml'), '-i', join(dir, 'inv.yml'), '-e', 'n=abc', '-e', `dir=${dir}`],
      {
        encoding: 'utf8',
        timeout: 60_000,
        env: { ...process.env, RUNBOOK_STATE_DIR: join(dir, 'state'), TMPDIR: dir },
      },
    );
  for (const cmd of [['validate'], ['apply']]) {
    const r = cli(cmd);
    assert.equal(r.status, 1, `${cmd[0]}: ${r.stderr}`);
    assert.match(r.stderr, /"n" is used inside \$\(\( \)\) but its value is not an integer \(host a, step "two"\)/);
  }
  assert.ok(!existsSync(join(dir, 'one')), 'step one did not run');
  assert.ok(!existsSync(join(dir, 'state')), 'no journal: nothing was started');
});

test('a call step: its parameters get their defaults, and every template in with: resolves for every host before anything runs', () => {
  const book = `name: prune
steps:
  - name: Paths
    run: echo /run/containerd/containerd.sock
    register: sock
  - name: Prune
    call: containerd.sandboxes.prune
    with:
      socket: "{{ sock.stdout }}"
  - name: Prune elsewhere
    call: containerd.sandboxes.prune
    with:
      socket: "{{ where }}"
      namespace: moby
`;
  const rb = parseRunbook(book, '/rb/prune.yml');
  assert.deepEqual(rb.steps[1].call, { action: 'containerd.sandboxes.prune', with: { socket: '{{ sock.stdout }}', namespace: 'k8s.io' } });
  assert.equal(rb.steps[2].run, 'containerd.sandboxes.prune socket={{ where }} namespace=moby');
  assert.throws(
    () => createPlan(rb, [host('a')], { runId: 'r', forks: 1 }),
    (e: unknown) => e instanceof ValidationError && /variable "where" is not defined for host a \(step "Prune elsewhere"\)/.test(e.message),
  );
  assert.equal(
    createPlan(rb, [host('a')], { runId: 'r', forks: 1, extraVars: { where: '/run/k3s/containerd/containerd.sock' } }).hosts.length,
    1,
  );
});

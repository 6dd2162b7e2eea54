// tier: local
// The shipped Kubernetes fragments (runbooks/lib/k8s-drain.yml, k8s-uncordon.yml) included by a runbook,
// through bin/runbook on local hosts, with a kubectl STAND-IN on the controller that records its argv: no
// Kubernetes API server can be had here, so what is proven is which kubectl commands run, in which order,
// with which node name and timeout, and that a failed repair uncordons the node again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNdjson } from './harness/events.js';

const root = new URL('..', import.meta.url).pathname;
const bin = join(root, 'bin/runbook');
const lib = join(root, 'runbooks/lib');

function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'rb-k8s-'));
  const calls = join(dir, 'kubectl.log');
  const kubectl = join(dir, 'kubectl');
  writeFileSync(kubectl, `#!/bin/sh\nprintf '%s\\n' "$*" >> ${calls}\n`);
  chmodSync(kubectl, 0o755);
  writeFileSync(
    join(dir, 'repair.yml'),
    `name: repair
vars:
  fail: "no"
steps:
  - include: ${lib}/k8s-drain.yml
    vars: { drain_timeout: 42s }
  - name: Work
    run: test {{ fail }} = no
  - include: ${lib}/k8s-uncordon.yml
`,
  );
  const inv = join(dir, 'inv.yml');
  writeFileSync(
    inv,
    `all:\n  hosts:\n    node-a: { ansible_connection: local, runbook_lock_path: ${dir}/lock-a, k8s_node: worker-a.k8s }\n    node-b: { ansible_connection: local, runbook_lock_path: ${dir}/lock-b }\n`,
  );
  const run = (extra: string[]) => {
    const r = spawnSync(
      process.execPath,
      [
        bin,
        'apply',
        join(dir, 'repair.yml'),
        '-i',
        inv,
        '--json',
        '--forks',
        '1',
        '--state-dir',
        join(dir, 'state'),
        '-e',
        `kubectl=${kubectl}`,
        ...extra,
      ],
      { encoding: 'utf8', timeout: 60_000, env: { ...process.env, NO_COLOR: '1' } },
    );
    return { code: r.status, stderr: r.stderr, events: parseNdjson(r.stdout) };
  };
  const plan = (extra: string[]) =>
    spawnSync(process.execPath, [bin, 'plan', join(dir, 'repair.yml'), '-i', inv, '-e', `kubectl=${kubectl}`, ...extra], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, NO_COLOR: '1' },
    });
  const log = () => (existsSync(calls) ? readFileSync(calls, 'utf8').trim().split('\n') : []);
  return { run, plan, log };
}

test('k8s fragments with a kubectl stand-in (no API server here): off by default, no kubectl call', () => {
  const s = setup();
  const r = s.run([]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(s.log(), []);
  const cordon = r.events.find((e) => e.type === 'step-end' && e.step === 'Cordon the node');
  assert.equal(cordon?.status, 'skipped');
  assert.equal(cordon?.stage, 'if');
});

test('k8s fragments with a kubectl stand-in (no API server here): -e kubernetes=true cordons, drains with the include’s timeout, uncordons', () => {
  const s = setup();
  const r = s.run(['-e', 'kubernetes=true']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(s.log(), [
    'cordon worker-a.k8s',
    'drain worker-a.k8s --ignore-daemonsets --delete-emptydir-data --timeout=42s',
    'wait --for=condition=Ready node/worker-a.k8s --timeout=5m',
    'uncordon worker-a.k8s',
    'cordon node-b',
    'drain node-b --ignore-daemonsets --delete-emptydir-data --timeout=42s',
    'wait --for=condition=Ready node/node-b --timeout=5m',
    'uncordon node-b',
  ]);
});

test('k8s fragments with a kubectl stand-in (no API server here): a failed repair uncordons the node by rollback', () => {
  const s = setup();
  const r = s.run(['-e', '{"kubernetes": true, "fail": "yes"}', '--limit', 'node-b']);
  assert.equal(r.code, 2, r.stderr);
  assert.deepEqual(s.log(), ['cordon node-b', 'drain node-b --ignore-daemonsets --delete-emptydir-data --timeout=42s', 'uncordon node-b']);
  assert.equal(r.events.find((e) => e.type === 'host-end')?.status, 'rolled-back');
});

test('plan shows, per host, what the conditions decide from its variables, and runs nothing', () => {
  const s = setup();
  const off = s.plan([]);
  assert.equal(off.status, 0, off.stderr);
  assert.match(off.stdout, /step 1: Cordon the node \[on controller\][^\n]*\n\s+if:\s+string\(vars\.kubernetes\) == 'true' {2}-> false/);
  const on = s.plan(['-e', 'kubernetes=true']);
  assert.match(on.stdout, /if:\s+string\(vars\.kubernetes\) == 'true' {2}-> true/);
  assert.deepEqual(s.log(), [], 'plan runs nothing');
});

// tier: unit
// `facts:`: what a runbook found on each host (e.g. containerd-health's "containerd 2.1.3: affected (fixed in
// 2.1.4): upgrade containerd to >= 2.1.4"), rendered on the controller at the host's end from its registers,
// and reported in the host-end event, the summary and the metrics file. Validated like everything else.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ValidationError } from '../src/core/errors.js';
import { parseRunbook } from '../src/runbook/load.js';

const root = new URL('..', import.meta.url).pathname;

test('facts are validated: names fit a metric label, templates name registers or vars, never secrets', () => {
  const bad = `name: f
secrets: [token]
vars: { token: x }
facts:
  Bad-Name: x
  unknown: "{{ nope.stdout }}"
  secret: "{{ token }}"
  broken: "{{ r.stdout"
steps:
  - name: a
    register: r
    run: "true"
`;
  assert.throws(
    () => parseRunbook(bad, '/rb/f.yml'),
    (e: unknown) => {
      assert.ok(e instanceof ValidationError);
      const m = e.issues.map((i) => `${i.line} ${i.path}: ${i.message}`).join('\n');
      assert.match(m, /^5 facts: fact name "Bad-Name" must be lower case letters, digits and _/m);
      return true;
    },
  );
  const bad2 = bad.replace('  Bad-Name: x\n', '');
  assert.throws(
    () => parseRunbook(bad2, '/rb/f.yml'),
    (e: unknown) => {
      assert.ok(e instanceof ValidationError);
      const m = e.issues.map((i) => `${i.line} ${i.path}: ${i.message}`).join('\n');
      assert.match(m, /^5 facts\.unknown: "nope\.stdout" is neither a register of this runbook nor one of its vars$/m);
      assert.match(m, /^6 facts\.secret: "token" is secret and cannot be a fact$/m);
      assert.match(m, /^7 facts\.broken: bad template/m);
      return true;
    },
  );
});

test('facts at the host end: the event, the summary and the metrics file; a register that never ran leaves its fact out', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rb-facts-'));
  const book = join(dir, 'found.yml');
  writeFileSync(
    book,
    `name: found
vars: { where: lab }
facts:
  version: "{{ ver.stdout }} ({{ where }})"
  never: "{{ skipped.stdout }}"
preflight:
  - name: look
    register: ver
    run: |
      echo "containerd 2.1.3: affected (fixed in 2.1.4): upgrade containerd to >= 2.1.4"
steps:
  - name: not this time
    register: skipped
    if: "false"
    run: echo no
`,
  );
  const prom = join(dir, 'runbook.prom');
  const run = (...extra: string[]) =>
    spawnSync(
      join(root, 'bin/runbook'),
      ['apply', book, '-i', join(root, 'inventory/local.yml'), '--limit', 'local1', '--yes', '--state-dir', dir, ...extra],
      {
        encoding: 'utf8',
      },
    );
  const json = run('--json', '--metrics-file', prom);
  assert.equal(json.status, 0, json.stderr);
  const end = json.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { type: string; facts?: Record<string, string> })
    .find((e) => e.type === 'host-end');
  assert.deepEqual(end?.facts, { version: 'containerd 2.1.3: affected (fixed in 2.1.4): upgrade containerd to >= 2.1.4 (lab)' });
  assert.match(
    readFileSync(prom, 'utf8'),
    /^runbook_last_run_host_fact\{runbook="found",host="local1",fact="version",value="containerd 2\.1\.3: affected \(fixed in 2\.1\.4\): upgrade containerd to >= 2\.1\.4 \(lab\)"\} 1$/m,
  );
  const text = run();
  assert.match(
    text.stderr + text.stdout,
    /^local1: version: containerd 2\.1\.3: affected \(fixed in 2\.1\.4\): upgrade containerd to >= 2\.1\.4 \(lab\)$/m,
  );
});

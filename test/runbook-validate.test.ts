// tier: unit
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { loadRunbook, listRunbooks, resolveRunbookPath, shippedRunbooksDir } from '../src/runbook/load.js';
import { RunbookError, ValidationError, formatIssue } from '../src/core/errors.js';

const root = resolve(import.meta.dirname, '..');
const BAD = join(root, 'test/fixtures/runbooks/bad');
const GOOD = join(root, 'test/fixtures/runbooks/good');

/** file -> expected issues: [path (undefined = whole file), line, message fragment]. Every issue listed, in order. */
const EXPECT: Record<string, Array<[string | undefined, number, string]>> = {
  'yaml-syntax': [[undefined, 5, 'YAML syntax error']],
  'duplicate-key': [[undefined, 5, 'duplicated mapping key']],
  tabs: [[undefined, 4, 'tab characters']],
  'unknown-top-key': [['descripton', 2, 'unknown key "descripton" (did you mean "description"?)']],
  'unknown-step-key': [
    ['steps[1].run', 5, 'missing required key "run"'],
    ['steps[1].rn', 6, 'did you mean "run"?'],
  ],
  'unknown-verify-key': [['steps[0].verify.retry', 7, 'did you mean "retries"?']],
  'missing-name': [['name', 1, 'missing required key "name"']],
  'name-mismatch': [['name', 1, 'does not match the file name "name-mismatch.yml"']],
  'missing-steps': [['steps', 1, 'missing required key "steps"']],
  'empty-steps': [['steps', 2, 'is empty']],
  'steps-not-list': [['steps', 3, 'is not a list of steps']],
  'step-missing-name': [['steps[1].name', 5, 'missing required key "name"']],
  'step-missing-run': [['steps[0].run', 3, 'missing required key "run"']],
  'bad-call': [
    ['steps[0].call', 4, '"containerd.sandboxes.purge" is not a built-in action (known: containerd.sandboxes.prune)'],
    ['steps[1].with', 8, 'missing parameter "socket" of containerd.sandboxes.prune'],
    ['steps[1].with.sockett', 8, 'containerd.sandboxes.prune has no parameter "sockett" (it takes: socket, namespace)'],
    ['steps[2].run', 11, 'unknown key "run"; known keys: name, if, when, unless, call, with, verify'],
    ['steps[3].with.socket', 17, 'bad template: "nope." is not a variable name'],
    ['steps[3].with.namespace', 18, '3 is not a non-empty string'],
  ],
  'empty-run': [['steps[0].run', 4, 'is empty']],
  'duplicate-step-name': [['steps[1].name', 8, 'step name "Check" is already used by preflight[0]']],
  'bad-timeout': [['steps[1].timeout', 7, '"5 minutes" is not a duration (use 500ms, 30s, 5m, 1h)']],
  'timeout-number': [['steps[0].timeout', 5, 'a number needs a unit']],
  'bad-verify-retries': [
    ['steps[2].verify.retries', 11, '-1 is not a whole number >= 0'],
    ['steps[2].verify.delay', 12, '"soon" is not a duration'],
  ],
  'verify-wrong-type': [['steps[0].verify', 5, 'is not a command or a mapping']],
  'when-not-string': [['steps[0].when', 4, 'true is not a string']],
  'bad-booleans': [
    ['destructive', 2, 'is not a boolean'],
    ['steps[0].local', 6, '"maybe" is not a boolean'],
  ],
  'bad-serial': [['serial', 2, 'between 1% and 100%']],
  'bad-serial-list': [
    ['serial[1]', 2, '0 is not a batch size'],
    ['serial[2]', 2, '"x%" is not a batch size'],
  ],
  'bad-max-failed': [['max_failed', 2, '-2 is not a failure budget']],
  'bad-max-failed-percent': [['max_failed', 2, '"ten percent" is not a failure budget']],
  'preflight-rollback': [['preflight[0].rollback', 5, 'may not have a rollback']],
  'register-invalid': [['steps[0].register', 5, '"9lives" is not a valid name']],
  'register-duplicate': [['steps[1].register', 8, 'already registered by steps[0]']],
  'register-shadows-var': [['steps[0].register', 7, 'would shadow the variable']],
  'register-builtin': [['steps[0].register', 5, 'built-in']],
  'register-used-early': [['steps[0].run', 4, 'registered by a later step (steps[1])']],
  'unclosed-template': [['steps[0].run', 6, 'unclosed "{{"']],
  'unknown-filter': [['steps[0].rollback', 7, 'unknown filter "upper"']],
  'template-in-block': [['steps[0].run', 8, 'unknown filter "rwa" (did you mean "raw"?)']],
  'template-bad-context': [['steps[0].run', 6, 'inside ${...}']],
  'vars-not-mapping': [['vars', 2, 'is not a mapping']],
  'bad-var-name': [
    ['vars.my-var', 3, 'not a valid variable name'],
    ['vars.run_id', 4, 'built-in'],
  ],
  'bad-secrets': [['secrets[1]', 4, 'is not a variable name']],
  'secret-raw': [['steps[0].run', 5, 'is secret and cannot be used with | raw']],
  'bad-preflight-failure': [['preflight_failure', 2, 'is not one of skip-host, abort']],
  'hosts-not-string': [['hosts', 2, 'is not a string']],
  'step-not-mapping': [['steps[0]', 3, 'is not a step']],
  'not-a-mapping': [[undefined, 1, 'not a runbook']],
  empty: [[undefined, 1, 'the file is empty']],
  'two-documents': [[undefined, 6, '2 YAML documents']],
  'many-problems': [
    ['serial', 2, '"lots" is not a batch size'],
    ['steps[0].timeout', 6, '"forever" is not a duration'],
    ['steps[1].run', 7, 'missing required key "run"'],
    ['steps[1].name', 7, 'already used by steps[0]'],
    ['steps[1].runn', 8, 'did you mean "run"?'],
  ],
};

test('the bad corpus has at least 25 runbooks, each with expectations', () => {
  assert.ok(Object.keys(EXPECT).length >= 25);
});

for (const [name, expected] of Object.entries(EXPECT)) {
  test(`bad runbook ${name}: every problem with file, path and line`, () => {
    const file = join(BAD, `${name}.yml`);
    let err: unknown;
    try {
      loadRunbook(file, root);
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof ValidationError, `expected a ValidationError, got ${String(err)}`);
    assert.equal(err.code, 'E_VALIDATION');
    const got = err.issues.map((i) => [i.path, i.line, i.message] as const);
    assert.equal(err.issues.length, expected.length, `issues: ${err.message}`);
    expected.forEach(([path, line, fragment], k) => {
      const [gp, gl, gm] = got[k];
      assert.equal(gp, path, `issue ${k} path; all: ${err.message}`);
      assert.equal(gl, line, `issue ${k} line; all: ${err.message}`);
      assert.ok(gm.includes(fragment), `issue ${k}: "${gm}" should contain "${fragment}"`);
      assert.equal(err.issues[k].file, `test/fixtures/runbooks/bad/${name}.yml`);
      assert.ok(typeof err.issues[k].column === 'number' && err.issues[k].column! >= 1);
    });
    assert.ok(err.message.includes(`test/fixtures/runbooks/bad/${name}.yml:`), 'the message names the file');
    // formatIssue puts file:line:col path: message
    const first = err.issues[0];
    assert.ok(formatIssue(first).startsWith(`${first.file}:${first.line}:${first.column}`));
  });
}

test('the issue-2 example loads verbatim with normalized values', () => {
  const file = join(GOOD, 'hello.yml');
  const rb = loadRunbook(file, root);
  const bytes = readFileSync(file);
  assert.equal(rb.name, 'hello');
  assert.equal(rb.description, 'Say hello');
  assert.equal(rb.destructive, false);
  assert.equal(rb.become, false);
  assert.deepEqual(rb.serial, []);
  assert.equal(rb.maxFailed, 0);
  assert.equal(rb.preflightFailure, 'skip-host');
  assert.deepEqual(rb.vars, { greeting: 'hello' });
  assert.deepEqual(rb.secretVars, []);
  assert.equal(rb.hosts, undefined);
  assert.deepEqual(rb.preflight, [
    {
      name: 'Shell works',
      phase: 'preflight',
      index: 0,
      run: 'true',
      timeoutMs: 300_000,
      local: false,
      become: false,
      line: 10,
      origin: { path: 'preflight[0]' },
    },
  ]);
  assert.deepEqual(rb.steps, [
    {
      name: 'Write greeting',
      phase: 'step',
      index: 0,
      line: 13,
      when: 'test -d /tmp',
      unless: 'test -f /tmp/x',
      run: 'echo {{ greeting }} > /tmp/x',
      verify: { run: 'grep -q hello /tmp/x', retries: 3, delayMs: 1000 },
      rollback: 'rm -f /tmp/x',
      timeoutMs: 30_000,
      register: 'wrote',
      local: false,
      become: false,
      origin: { path: 'steps[0]' },
    },
  ]);
  assert.equal(rb.file, file);
  assert.equal(rb.hash, createHash('sha256').update(bytes).digest('hex'));
  assert.equal(rb.source, bytes.toString('utf8'));
});

test('good: minimal runbook gets every default', () => {
  const rb = loadRunbook(join(GOOD, 'minimal.yml'), root);
  assert.deepEqual(
    { ...rb, source: undefined, hash: undefined, file: undefined },
    {
      name: 'minimal',
      destructive: false,
      become: false,
      serial: [],
      maxFailed: 0,
      preflightFailure: 'skip-host',
      vars: {},
      secretVars: [],
      preflight: [],
      steps: [
        {
          name: 'only',
          phase: 'step',
          index: 0,
          run: 'true',
          timeoutMs: 300_000,
          local: false,
          become: false,
          line: 3,
          origin: { path: 'steps[0]' },
        },
      ],
      scopes: [],
      includes: [],
      source: undefined,
      hash: undefined,
      file: undefined,
    },
  );
});

test('good: fleet settings, runbook-level become, secrets, nested vars, preflight register', () => {
  const rb = loadRunbook(join(GOOD, 'fleet.yml'), root);
  assert.equal(rb.destructive, true);
  assert.equal(rb.become, true);
  assert.deepEqual(rb.serial, [1, '25%']);
  assert.equal(rb.maxFailed, '10%');
  assert.equal(rb.hosts, 'k8s_nodes');
  assert.equal(rb.preflightFailure, 'abort');
  assert.deepEqual(rb.secretVars, ['api_token']);
  assert.deepEqual(rb.vars, { service: 'containerd', limits: { cpu: 2 } });
  assert.equal(rb.preflight[0].register, 'probe');
  assert.equal(rb.preflight[0].become, true, 'runbook become is the default');
  assert.equal(rb.steps[0].become, false, 'step become overrides');
  assert.equal(rb.steps[0].timeoutMs, 500);
  assert.deepEqual(rb.steps[0].verify, { run: 'systemctl is-active {{ service }}', retries: 0, delayMs: 0 });
  assert.equal(rb.steps[1].local, true);
  assert.equal(rb.steps[1].index, 1);
  assert.equal(rb.steps[1].line, 23);
});

test('good: serial number, max_failed count, default filter, own register in verify/rollback, literal braces', () => {
  const rb = loadRunbook(join(GOOD, 'serial-number.yml'), root);
  assert.deepEqual(rb.serial, [3]);
  assert.equal(rb.maxFailed, 2);
  assert.equal(rb.steps[0].timeoutMs, 3_600_000);
  assert.equal(rb.steps[0].verify?.run, "test -n '{{ first.stdout }}'");
});

test('good: percent serial, heredoc with a value, verify retries 0', () => {
  const rb = loadRunbook(join(GOOD, 'serial-percent.yml'), root);
  assert.deepEqual(rb.serial, ['50%']);
  assert.deepEqual(rb.steps[0].verify, { run: 'grep -q value /tmp/x', retries: 0, delayMs: 0 });
  assert.ok(rb.steps[0].run.endsWith('EOF\n'));
});

test('good: .yaml extension and a raw reference', () => {
  const rb = loadRunbook(join(GOOD, 'alt-ext.yaml'), root);
  assert.equal(rb.name, 'alt-ext');
  assert.equal(rb.steps[0].run, '{{ cmd | raw }}');
});

test('resolveRunbookPath: path, ./runbooks NAME.yml/.yaml, shipped, not found', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rb-resolve-'));
  try {
    mkdirSync(join(dir, 'runbooks'));
    writeFileSync(join(dir, 'runbooks', 'mine.yaml'), 'name: mine\ndescription: local one\nsteps:\n  - name: a\n    run: "true"\n');
    writeFileSync(
      join(dir, 'runbooks', 'hello.yml'),
      'name: hello\ndescription: shadow\ndestructive: true\nsteps:\n  - name: a\n    run: "true"\n',
    );
    writeFileSync(join(dir, 'runbooks', 'broken.yml'), 'name: [\n');
    assert.equal(resolveRunbookPath('mine', dir), join(dir, 'runbooks', 'mine.yaml'));
    assert.equal(resolveRunbookPath('runbooks/mine.yaml', dir), join(dir, 'runbooks', 'mine.yaml'));
    assert.equal(resolveRunbookPath('hello', dir), join(dir, 'runbooks', 'hello.yml'), 'local shadows shipped');
    const empty = mkdtempSync(join(tmpdir(), 'rb-resolve-empty-'));
    try {
      assert.equal(resolveRunbookPath('hello', empty), join(shippedRunbooksDir(), 'hello.yml'), 'falls back to shipped');
      assert.equal(loadRunbook('hello', empty).name, 'hello');
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
    assert.throws(
      () => resolveRunbookPath('nope', dir),
      (e: unknown) =>
        e instanceof RunbookError &&
        e.code === 'E_RUNBOOK_NOT_FOUND' &&
        e.message.includes(join(dir, 'runbooks', 'nope.yml')) &&
        e.message.includes(join(shippedRunbooksDir(), 'nope.yml')) &&
        e.message.includes('runbook list'),
    );
    assert.throws(
      () => loadRunbook('./nope.yml', dir),
      (e: unknown) => e instanceof RunbookError && e.code === 'E_RUNBOOK_NOT_FOUND',
    );

    const list = listRunbooks(dir);
    const byName = new Map(list.map((e) => [e.name, e]));
    assert.deepEqual(byName.get('mine'), {
      name: 'mine',
      file: join(dir, 'runbooks', 'mine.yaml'),
      description: 'local one',
      destructive: false,
      shipped: false,
    });
    assert.deepEqual(byName.get('hello'), {
      name: 'hello',
      file: join(dir, 'runbooks', 'hello.yml'),
      description: 'shadow',
      destructive: true,
      shipped: false,
    });
    assert.equal(byName.get('broken')?.shipped, false, 'an invalid runbook is still listed');
    assert.equal(list.filter((e) => e.name === 'hello').length, 1);
    assert.deepEqual(
      list.slice(0, 3).map((e) => e.name),
      ['broken', 'hello', 'mine'],
      'local ones first',
    );
    // From the package root, the shipped directory is not listed twice.
    const fromRoot = listRunbooks(root);
    assert.equal(fromRoot.filter((e) => e.name === 'hello').length, 1);
    assert.equal(fromRoot.find((e) => e.name === 'hello')?.shipped, true);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// tier: local
// End-to-end through bin/runbook (the compiled CLI) on local hosts: exit codes, host statuses,
// the NDJSON stream and the real effects on disk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type CliEvent, parseNdjson } from './harness/events.js';
import { waitFor } from './harness/wait.js';

const root = new URL('..', import.meta.url).pathname;
const bin = join(root, 'bin/runbook');
const fx = (f: string) => join(root, 'test/fixtures/e2e', f);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  events: CliEvent[];
}

// A private TMPDIR: local hosts keep their run locks there, and hello writes its files there.
const privateTmp = mkdtempSync(join(tmpdir(), 'rb-e2e-tmp-'));

function runbook(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): Run {
  const r = spawnSync(process.execPath, [bin, ...args], {
    cwd: opts.cwd ?? root,
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, NO_COLOR: '1', TMPDIR: privateTmp, ...opts.env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, events: parseNdjson(r.stdout) };
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'rb-e2e-'));
}

function apply(book: string, dir: string, extra: string[] = [], inv = fx('inv3.yml')): Run {
  return runbook(['apply', fx(book), '-i', inv, '--json', '--state-dir', join(dir, 'state'), '-e', `dir=${dir}`, ...extra]);
}

const hostEnds = (r: Run) => Object.fromEntries(r.events.filter((e) => e.type === 'host-end').map((e) => [e.host, e.status]));

test('README commands: validate, plan, apply and --json on the shipped hello runbook', () => {
  const dir = tmp();
  const v = runbook(['validate', 'runbooks/hello.yml']);
  assert.equal(v.code, 0, v.stderr);
  const p = runbook(['plan', 'hello', '-i', 'inventory/local.yml']);
  assert.equal(p.code, 0, p.stderr);
  assert.match(p.stdout, /local1/);
  const a = runbook(['apply', 'hello', '-i', 'inventory/local.yml', '--state-dir', join(dir, 's')]);
  assert.equal(a.code, 0, a.stderr);
  const j = runbook(['apply', 'hello', '-i', 'inventory/local.yml', '--json', '--state-dir', join(dir, 's')]);
  assert.equal(j.code, 0, j.stderr);
  // --json: stdout holds NDJSON and nothing else; every line has type and time.
  const lines = j.stdout.trim().split('\n');
  assert.ok(lines.length > 3);
  for (const l of lines) {
    const e = JSON.parse(l);
    assert.ok(typeof e.type === 'string' && typeof e.time === 'string', l);
  }
  const end = j.events.at(-1)!;
  assert.equal(end.type, 'run-end');
  assert.equal(end.exit_code, 0);
  // Second apply: everything already in place.
  assert.ok(
    Object.values(end.hosts ?? {}).every((s) => s === 'ok'),
    JSON.stringify(end.hosts),
  );
  assert.equal(readFileSync(join(privateTmp, 'runbook-hello-local3.txt'), 'utf8'), 'hi, world from local3\n');
});

test('step 3 of 4 fails: rollbacks 3,2,1 in that order, rolled-back, exit 2', () => {
  const dir = tmp();
  const r = apply('four.yml', dir, ['-e', 'fail_at=3', '--limit', 'h1']);
  assert.equal(r.code, 2, r.stderr);
  assert.deepEqual(hostEnds(r), { h1: 'rolled-back' });
  assert.deepEqual(
    r.events.filter((e) => e.type === 'rollback-end').map((e) => [e.step, e.status]),
    [
      ['three', 'ok'],
      ['two', 'ok'],
      ['one', 'ok'],
    ],
  );
  assert.equal(readFileSync(join(dir, 'h1.undo'), 'utf8'), '3\n2\n1\n');
  for (const i of [1, 2, 3, 4]) assert.ok(!existsSync(join(dir, `h1.${i}`)), `h1.${i} removed`);
  const failed = r.events.find((e) => e.type === 'step-end' && e.status === 'failed');
  assert.equal(failed?.step, 'three');
  assert.equal(failed?.code, 1);
  assert.equal(r.events.at(-1)?.exit_code, 2);
});

test('a failing rollback: unwind continues, host needs-attention, exit 3', () => {
  const dir = tmp();
  const r = apply('four.yml', dir, ['-e', 'fail_at=4', '-e', 'bad_rollback=2', '--limit', 'h1']);
  assert.equal(r.code, 3, r.stderr);
  assert.deepEqual(hostEnds(r), { h1: 'needs-attention' });
  assert.deepEqual(
    r.events.filter((e) => e.type === 'rollback-end').map((e) => [e.step, e.status]),
    [
      ['four', 'ok'],
      ['three', 'ok'],
      ['two', 'failed'],
      ['one', 'ok'],
    ],
  );
  assert.ok(existsSync(join(dir, 'h1.2')), 'the failed rollback left its file');
});

test('verify succeeds on its 3rd attempt', () => {
  const dir = tmp();
  const r = apply('retry.yml', dir, ['--limit', 'h2']);
  assert.equal(r.code, 0, r.stderr);
  const end = r.events.find((e) => e.type === 'step-end');
  assert.equal(end?.status, 'changed');
  assert.equal(end?.attempts, 3);
  assert.equal(readFileSync(join(dir, 'h2.n'), 'utf8').trim(), '3');
});

test('timeout kills the whole process group: no orphan left, step failed, rolled back', async () => {
  const dir = tmp();
  const marker = `${String(400 + Math.floor(Math.random() * 500))}.5`;
  // Not timed: a step that is not killed sleeps ~10 minutes and the run is killed after 60 s (code null).
  const r = apply('timeout.yml', dir, ['-e', `marker=${marker}`, '--limit', 'h1']);
  assert.equal(r.code, 2, r.stderr);
  const end = r.events.find((e) => e.type === 'step-end');
  assert.equal(end?.status, 'failed');
  assert.equal(end?.timed_out, true);
  assert.deepEqual(hostEnds(r), { h1: 'rolled-back' });
  // SIGKILLed processes vanish a moment after the kill: wait for that, then none may be left.
  let left = '';
  await waitFor(
    () => {
      left = spawnSync('pgrep', ['-f', `sleep ${marker}`], { encoding: 'utf8' }).stdout.trim();
      return left === '';
    },
    { what: `the step's sleep ${marker} processes to be gone`, detail: () => `still running: ${left}` },
  );
});

test('max_failed 0 with serial 1: the first failure stops new hosts (skipped), exit 2', () => {
  const dir = tmp();
  const r = apply('four.yml', dir, ['-e', 'fail_at=4', '--forks', '1']);
  // inv3 has 3 hosts; the runbook has no serial: forks 1 runs them one at a time; budget 0.
  assert.equal(r.code, 2, r.stderr);
  assert.deepEqual(hostEnds(r), { h1: 'rolled-back', h2: 'skipped', h3: 'skipped' });
  assert.ok(!existsSync(join(dir, 'h2.1')) && !existsSync(join(dir, 'h3.1')));
  assert.deepEqual(r.events.at(-1)?.hosts, { h1: 'rolled-back', h2: 'skipped', h3: 'skipped' });
});

// SIGHUP is what a controller gets when its terminal goes away (the ssh session to it dropped): the same as SIGTERM.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  test(`${sig} mid-run: the step in flight ends, the host rolls back, the lock is released, exit 130`, async () => {
    const dir = tmp();
    const child = spawn(
      process.execPath,
      [bin, 'apply', fx('slow.yml'), '-i', fx('inv3.yml'), '--limit', 'h1', '--json', '--state-dir', join(dir, 's'), '-e', `dir=${dir}`],
      { env: { ...process.env, NO_COLOR: '1' } },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    let exited = false;
    const closed = new Promise<number | null>((res) =>
      child.on('close', (c) => {
        exited = true;
        res(c);
      }),
    );
    const running = (what: string) => {
      if (exited) throw new Error(`the run ended before ${what}: ${out}${err}`);
    };
    try {
      // Step two holds on its gate ({{ dir }}/go) once it has created h1.2: interrupt it there.
      await waitFor(
        () => {
          running('step two started');
          return existsSync(join(dir, 'h1.2'));
        },
        { what: 'step two running (h1.2 created)' },
      );
      child.kill(sig);
      await waitFor(
        () => {
          running('it took the interrupt');
          return new RegExp(`${sig}: no new step starts`).test(err);
        },
        { what: `runbook to acknowledge ${sig} on stderr`, detail: () => err },
      );
    } finally {
      writeFileSync(join(dir, 'go'), ''); // the step in flight ends
    }
    const code = await closed;
    assert.equal(code, 130, err);
    const events = parseNdjson(out);
    assert.deepEqual(
      events.filter((e) => e.type === 'rollback-end').map((e) => e.step),
      ['two', 'one'],
    );
    assert.ok(!events.some((e) => e.type === 'step-start' && e.step === 'three'), 'no step starts after the interrupt');
    assert.deepEqual(hostEnds({ events } as Run), { h1: 'rolled-back' });
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.startsWith('h1.')),
      [],
    );
    assert.ok(!existsSync(join(tmpdir(), 'runbook-lock-h1')), "the host lock (a local host's, under TMPDIR) is released");
  });
}

test('values never run as code, in any shell context, through the CLI', () => {
  const dir = tmp();
  for (const v of ['x; touch PWN', '$(touch PWN)', '`touch PWN`', `'"; touch PWN; echo "'`, 'a\nb; touch PWN']) {
    const value = v.replace(/PWN/g, join(dir, 'pwned'));
    const r = apply('inject.yml', dir, ['-e', JSON.stringify({ v: value }), '--limit', 'h1']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!existsSync(join(dir, 'pwned')), `injection through ${JSON.stringify(v)}`);
    for (const f of ['bare', 'double', 'single', 'assigned'])
      assert.equal(readFileSync(join(dir, f), 'utf8'), `${value}\n`, `${f} context keeps the value`);
  }
});

test('an undefined variable fails validation before any host is touched: names variable, host and step', () => {
  const dir = tmp();
  const r = runbook(['apply', fx('four.yml'), '-i', fx('inv3.yml'), '--state-dir', join(dir, 's')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /dir/);
  assert.match(r.stderr, /h1/);
  assert.match(r.stderr, /one/);
  assert.ok(!existsSync(join(dir, 's')), 'no journal, nothing contacted');
});

test('a bad --report extension is refused before anything runs', () => {
  const dir = tmp();
  const r = apply('four.yml', dir, ['--report', join(dir, 'r.txt'), '--limit', 'h1']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /r\.txt/);
  assert.ok(!existsSync(join(dir, 'h1.1')), 'nothing ran');
});

test('--help and --version: the fast path answers exactly what the full CLI would', () => {
  const fast = runbook(['--help']);
  const full = runbook(['--help'], { env: { RUNBOOK_HELP_CACHE: '0' } });
  assert.equal(fast.code, 0);
  assert.equal(fast.stdout, full.stdout);
  for (const cmd of [
    'validate',
    'plan',
    'apply',
    'list',
    'show',
    'inventory',
    'runs',
    'show-run',
    'resume',
    'rollback',
    'unlock',
    'completion',
  ]) {
    assert.match(fast.stdout, new RegExp(`runbook ${cmd}\\b`), cmd);
  }
  const v = runbook(['--version']);
  assert.equal(v.stdout.trim(), JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version);
  assert.equal(runbook(['--version'], { env: { RUNBOOK_HELP_CACHE: '0' } }).stdout, v.stdout);
  // Every command's own --help has examples.
  for (const cmd of ['validate', 'plan', 'apply', 'list', 'show', 'inventory', 'runs', 'show-run', 'resume', 'rollback', 'unlock']) {
    const h = runbook([cmd, '--help']);
    assert.equal(h.code, 0, cmd);
    assert.match(h.stdout, /Examples:/, `${cmd} --help has examples`);
  }
});

// tier: local
/**
 * Start-up machinery of bin/runbook (scripts/build.mjs): the V8 code caches of the bundles are used
 * after a build, and every way a cache can be unusable (off, missing, from another build, rejected
 * by V8) gives the same output and exit code; `validate FILE` without yargs answers exactly what
 * the yargs path answers; the ssh2 bundle loads ssh2's native parts from node_modules.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = new URL('..', import.meta.url).pathname;
const WORK = mkdtempSync(join(tmpdir(), 'runbook-startup-'));
after(() => rmSync(WORK, { recursive: true, force: true }));

interface Out {
  code: number | null;
  stdout: string;
  stderr: string;
}
function run(root: string, args: string[], env: Record<string, string> = {}, cwd = ROOT): Out {
  const r = spawnSync(process.execPath, [join(root, 'bin/runbook'), ...args], {
    cwd,
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, NO_COLOR: '1', ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const answers = new Map<string, Out>();
/**
 * bin/runbook of the package under test. Its files are never changed by these tests, so an invocation gives one
 * answer: each distinct one runs once (the same cases are compared in several tests), keeping this file cheap.
 */
function runRoot(args: string[], env: Record<string, string> = {}, cwd = ROOT): Out {
  const key = JSON.stringify([args, env, cwd]);
  let o = answers.get(key);
  if (!o) {
    o = run(ROOT, args, env, cwd);
    answers.set(key, o);
  }
  return o;
}
/** Output without the RUNBOOK_CODE_CACHE=debug lines. */
const plain = (o: Out): Out => ({
  ...o,
  stderr: o.stderr
    .split('\n')
    .filter((l) => !l.startsWith('runbook: code cache '))
    .join('\n'),
});

/** A copy of the package (bin, dist, runbooks, package.json; node_modules linked) to break things in. */
function copyPackage(): string {
  const dir = mkdtempSync(join(WORK, 'pkg-'));
  for (const p of ['bin', 'dist', 'runbooks', 'package.json']) cpSync(join(ROOT, p), join(dir, p), { recursive: true });
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

const GOOD = 'test/fixtures/runbooks/good/fleet.yml';
const BAD = readdirSync(join(ROOT, 'test/fixtures/runbooks/bad'))
  .filter((f) => f.endsWith('.yml'))
  .slice(0, 4)
  .map((f) => `test/fixtures/runbooks/bad/${f}`);
const CASES: string[][] = [
  ['validate', 'runbooks/hello.yml'],
  ['validate', 'hello'],
  ['validate', GOOD],
  ...BAD.map((f) => ['validate', f]),
  ['validate', 'no-such-runbook'],
  ['validate', './nope.yml'],
  ['validate', 'runbooks'],
  ['list'],
  ['show', 'hello'],
  ['validate', 'hello', '-i', 'inventory/local.yml'],
];

test('after a build, both bundles load from their code caches', () => {
  const v = runRoot(['validate', 'runbooks/hello.yml'], { RUNBOOK_CODE_CACHE: 'debug' });
  assert.equal(v.code, 0, v.stderr);
  assert.match(v.stderr, /code cache main\.validate\.bin: used/);
  const p = runRoot(['plan', 'hello', '-i', 'inventory/local.yml', '--probe'], { RUNBOOK_CODE_CACHE: 'debug' });
  assert.equal(p.code, 0, p.stderr);
  assert.match(p.stderr, /code cache main\.cli\.bin: used/);
  assert.match(p.stderr, /code cache ssh2\.bin: used/, 'plan --probe loads the transports, and with them ssh2');
  // Commands that do not connect do not load ssh2.
  for (const args of [['plan', 'hello', '-i', 'inventory/local.yml'], ['validate', 'hello', '-i', 'inventory/local.yml'], ['list']]) {
    const o = runRoot(args, { RUNBOOK_CODE_CACHE: 'debug' });
    assert.equal(o.code, 0, o.stderr);
    assert.match(o.stderr, /code cache main\.(cli|validate)\.bin: used/);
    assert.doesNotMatch(o.stderr, /ssh2/, args.join(' '));
  }
  // Without debug, nothing about caches is printed.
  assert.doesNotMatch(runRoot(['validate', 'runbooks/hello.yml']).stderr, /code cache/);
});

test('with the code cache off, the same output and exit codes', () => {
  for (const args of CASES) {
    const a = runRoot(args);
    const b = runRoot(args, { RUNBOOK_CODE_CACHE: '0' });
    assert.deepEqual(b, a, args.join(' '));
  }
  assert.ok(
    runRoot(['validate', BAD[0]]).code === 1 && runRoot(['validate', 'hello']).code === 0,
    'the cases include failures and successes',
  );
});

test('a cache that is missing, from another build or rejected by V8 is not used, and nothing else changes', () => {
  const pkg = copyPackage();
  const caches = join(pkg, 'dist/cli/code-cache');
  const expected = CASES.map((args) => run(pkg, args, { RUNBOOK_CODE_CACHE: '0' }));
  assert.deepEqual(
    expected.map((o) => o.code),
    CASES.map((args) => runRoot(args).code),
  );
  const check = (what: RegExp) => {
    CASES.forEach((args, i) => {
      const o = run(pkg, args, { RUNBOOK_CODE_CACHE: 'debug' });
      assert.match(o.stderr, what, `${args.join(' ')}: ${o.stderr}`);
      assert.deepEqual(plain(o), expected[i], args.join(' '));
    });
  };
  // Another build: same bundle text except the build id line.
  const main = join(pkg, 'dist/cli/main.js');
  const text = readFileSync(main, 'utf8');
  writeFileSync(main, text.replace(/^\/\/ runbook-build [0-9a-f]+\n/, '// runbook-build 0123456789abcdef\n'));
  check(/code cache main\.(validate|cli)\.bin: from another build/);
  writeFileSync(main, text);
  // V8 refuses data that is not its code cache for this source.
  for (const f of readdirSync(caches)) {
    const buf = readFileSync(join(caches, f));
    const nl = buf.indexOf(10);
    writeFileSync(join(caches, f), Buffer.concat([buf.subarray(0, nl + 1), Buffer.alloc(buf.length - nl - 1, 0x5a)]));
  }
  check(/code cache main\.(validate|cli)\.bin: rejected by V8/);
  rmSync(caches, { recursive: true });
  check(/code cache main\.(validate|cli)\.bin: missing/);
});

test('dist/ missing: one line that says how to build, exit 1', () => {
  const dir = mkdtempSync(join(WORK, 'nodist-'));
  cpSync(join(ROOT, 'bin'), join(dir, 'bin'), { recursive: true });
  cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
  const o = run(dir, ['validate', 'hello']);
  assert.equal(o.code, 1);
  assert.equal(o.stderr, 'runbook: dist/ is missing; run `npm ci` (or `npm run build`) in the package directory first.\n');
});

test('validate FILE without yargs answers exactly as the yargs path', () => {
  const dir = mkdtempSync(join(WORK, 'cwd-'));
  mkdirSync(join(dir, 'runbooks'));
  writeFileSync(join(dir, 'runbooks/local.yml'), 'name: local\nsteps:\n  - name: a\n    run: "true"\n');
  writeFileSync(join(dir, 'runbooks/broken.yml'), 'name: broken\nsteps: [\n');
  const cases: Array<[string[], string]> = [
    ...CASES.filter((c) => c[0] === 'validate').map((c): [string[], string] => [c, ROOT]),
    [['validate', 'local'], dir],
    [['validate', 'broken'], dir],
    [['validate', 'runbooks/broken.yml'], dir],
    [['validate', '0x10'], dir],
    [['validate', 'a=b'], dir],
    [['validate', 'hello '], dir],
    [['validate', '-'], dir],
    [['validate', ''], dir],
    [['validate'], dir],
    [['validate', 'a', 'b'], dir],
    [['validate', '--help'], dir],
  ];
  for (const [args, cwd] of cases) {
    const fast = runRoot(args, {}, cwd);
    const full = runRoot(args, { RUNBOOK_FAST_PATH: '0' }, cwd);
    assert.deepEqual(fast, full, `${JSON.stringify(args)} in ${cwd}`);
  }
});

test('the ssh2 bundle loads ssh2 native parts from node_modules', () => {
  const r = spawnSync(
    process.execPath,
    [
      '-e',
      `
    const m = require(${JSON.stringify(join(ROOT, 'dist/cli/ssh2.js'))});
    const native = Object.keys(require.cache).filter((k) => k.endsWith('.node')).map((k) => k.replace(/.*node_modules\\//, ''));
    console.log(JSON.stringify({ client: typeof m.Client, native }));
  `,
    ],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.client, 'function');
  // The same addons ssh2 loads when required from node_modules (sshcrypto when it was built).
  const ref = spawnSync(
    process.execPath,
    [
      '-e',
      `
    require('ssh2');
    console.log(JSON.stringify(Object.keys(require.cache).filter((k) => k.endsWith('.node')).map((k) => k.replace(/.*node_modules\\//, ''))));
  `,
    ],
    { encoding: 'utf8', cwd: ROOT },
  );
  assert.equal(ref.status, 0, ref.stderr);
  assert.deepEqual([...out.native].sort(), [...JSON.parse(ref.stdout)].sort(), 'the same native addons (in any load order)');
});

test('the bundles are ASCII, so bin/runbook reads them as latin1; non-ASCII text still goes in and out as written', () => {
  for (const f of ['main.js', 'ssh2.js']) {
    const b = readFileSync(join(ROOT, 'dist/cli', f));
    const at = b.findIndex((c) => c > 0x7f);
    assert.equal(at, -1, `dist/cli/${f}: a non-ASCII byte at offset ${at}`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'runbook-ascii-'));
  try {
    const rb = join(dir, 'r-✓.yml');
    writeFileSync(rb, 'name: grüße\ndescription: ein Schritt\nsteps:\n  - name: größe\n    run: "true"\n');
    const r = spawnSync(process.execPath, [join(ROOT, 'bin/runbook'), 'validate', rb], { encoding: 'utf8' });
    assert.notEqual(r.status, 0, r.stderr);
    assert.match(r.stderr, /r-✓\.yml:1:7 name: "grüße" does not match the file name "r-✓\.yml"/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// tier: unit
/**
 * The shipped diagnosis (runbooks/lib/containerd-diagnose.yml), tested from data: every excerpt of the corpus
 * (test/fixtures/containerd-corpus: real containerd logs from the test nodes, one per signature) gets its expected
 * verdict, and bolt's meta page checks read real meta.db files made from a test node's database.
 *
 * The fragment's own script runs under /bin/sh, as on a node, with the node's commands it asks for state
 * (systemctl, ctr, journalctl, findmnt, dmesg) replaced by stubs that answer what the node answered when the
 * excerpt was taken: a fake for a pure unit test. The same script runs against real containerd in the nspawn
 * tests (containerd-random-pages.test.ts, containerd-runbooks.test.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import * as yaml from 'js-yaml';
import { renderCommand } from '../src/plan/template.js';

const REPO = new URL('..', import.meta.url).pathname;
const CORPUS = join(REPO, 'test/fixtures/containerd-corpus');
const STEPS = (
  yaml.load(readFileSync(join(REPO, 'runbooks/lib/containerd-diagnose.yml'), 'utf8')) as { steps: { name: string; run: string }[] }
).steps;
const script = (name: string) => STEPS.find((s) => s.name === name)?.run ?? assert.fail(`no step "${name}" in lib/containerd-diagnose.yml`);
const DIAGNOSE = script('Diagnose containerd');
const VERSION = script('containerd version');
const PRISTINE = readFileSync(join(CORPUS, 'meta.db'));

interface Case {
  state: string;
  plugins: string;
  db: string;
  expect: string;
}

/** FNV-1a 64, as bolt checksums its meta pages. */
function fnv1a64(bytes: Uint8Array): bigint {
  let h = 0xcbf29ce484222325n;
  for (const x of bytes) h = ((h ^ BigInt(x)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return h;
}

/** A meta.db variant made from the pristine test-node database. */
export function dbVariant(kind: string, seed = 1): Buffer | undefined {
  const b = Buffer.from(PRISTINE);
  let s = seed;
  const rnd = (n: number) => {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) {
      s = (s * 1103515245 + 12345) & 0x7fffffff;
      out[i] = s >> 16;
    }
    return out;
  };
  switch (kind) {
    case 'pristine':
      return b;
    case 'missing':
      return undefined;
    case 'silent':
      rnd(8192).copy(b, 0);
      return b;
    case 'zero-meta':
      b.fill(0, 0, 8192);
      return b;
    case 'truncated':
      return b.subarray(0, 4096);
    case 'version':
      b[20] = 3;
      b[4096 + 20] = 3;
      return b;
    case 'meta0':
      rnd(4096).copy(b, 0);
      return b;
    case 'meta1':
      rnd(4096).copy(b, 4096);
      return b;
    case 'meta0-checksum':
      b[72] ^= 0xff;
      return b;
    case 'both-checksum':
      b[72] ^= 0xff;
      b[4096 + 72] ^= 0xff;
      return b;
    case 'hwm':
      // meta page 1 (the newer txid) claims 100 pages in a file of 8; page 0 keeps a bad checksum
      b.writeBigUInt64LE(100n, 4096 + 56);
      b.writeBigUInt64LE(fnv1a64(b.subarray(4096 + 16, 4096 + 72)), 4096 + 72);
      b[72] ^= 0xff;
      return b;
    default:
      throw new Error(`unknown db variant ${kind}`);
  }
}

const STUBS: Record<string, string> = {
  systemctl: `case "$*" in
  *ActiveState*) echo "$STUB_ACTIVE" ;;
  *NRestarts*) echo "$STUB_RESTARTS" ;;
  *' Environment '*) echo "$STUB_ENV" ;;
  *) echo ;;
esac`,
  ctr: `case "$*" in
  *'plugins ls'*) [ -n "$STUB_PLUGINS" ] || exit 1
    echo "TYPE ID PLATFORMS STATUS"
    for p in $STUB_PLUGINS; do echo "io.containerd.x.v1 \${p%%=*} linux/amd64 \${p#*=}"; done ;;
  *) exit 1 ;;
esac`,
  journalctl: 'cat "$STUB_LOG"',
  findmnt: `case "$*" in *OPTIONS*) echo rw,relatime ;; *SOURCE*) echo /dev/rb-test-none ;; esac`,
  dmesg: ':',
  containerd: 'echo "containerd github.com/containerd/containerd $STUB_VERSION"',
};

export interface Diagnosis {
  code: number | null;
  stdout: string;
  stderr: string;
  /** The verdict: stdout's first line, or the "do not wipe" line. */
  verdict: string;
}

/** Runs the shipped diagnosis script against a stubbed node whose containerd root holds `db`. */
export function diagnose(o: {
  log: string;
  state: string;
  plugins: string;
  db: Buffer | undefined;
  env?: string;
  version?: string;
  /** The fragment step to run (default: the diagnosis). */
  script?: string;
}): Diagnosis {
  const dir = mkdtempSync(join(tmpdir(), 'rb-diag-'));
  try {
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    for (const [name, body] of Object.entries(STUBS)) {
      writeFileSync(join(bin, name), `#!/bin/sh\n${body}\n`);
      chmodSync(join(bin, name), 0o755);
    }
    const root = join(dir, 'var/lib/containerd');
    mkdirSync(join(root, 'io.containerd.metadata.v1.bolt'), { recursive: true });
    if (o.db) writeFileSync(join(root, 'io.containerd.metadata.v1.bolt/meta.db'), o.db);
    // The excerpt names the node's root; here it lives in the temp dir.
    writeFileSync(join(dir, 'log'), o.log.replaceAll('/var/lib/containerd', root));
    const paths = `layout=containerd\nunit=rb-test-containerd\nroot=${root}\nstate=${dir}/run\nsocket=${dir}/run/containerd.sock\nctr=ctr\nlog=journal\nkillall=`;
    const rendered = renderCommand(o.script ?? DIAGNOSE, (k) => (k === 'paths.stdout' ? paths : undefined));
    const [active, restarts] = o.state.split(' ');
    const r = spawnSync('/bin/sh', ['-c', rendered], {
      encoding: 'utf8',
      timeout: 30_000,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        PATH: `${bin}:/usr/bin:/bin`,
        STUB_ACTIVE: active,
        STUB_RESTARTS: restarts ?? '0',
        STUB_PLUGINS: o.plugins,
        STUB_LOG: join(dir, 'log'),
        STUB_ENV: o.env ?? '',
        STUB_VERSION: o.version ?? '',
      },
    });
    const verdict = r.status === 0 ? r.stdout.split('\n')[0] : (/^do not wipe: .*$/m.exec(r.stderr)?.[0] ?? r.stderr.trim());
    return { code: r.status, stdout: r.stdout, stderr: r.stderr, verdict: verdict.replaceAll(root, '/var/lib/containerd') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const index = yaml.load(readFileSync(join(CORPUS, 'index.yml'), 'utf8')) as Record<string, Record<string, Case>>;

test('the corpus: at least 15 real excerpts, every one gets its expected verdict', () => {
  const all = Object.entries(index).flatMap(([suite, cases]) => Object.entries(cases).map(([name, c]) => ({ suite, name, c })));
  assert.ok(all.length >= 15, `${all.length} excerpts`);
  const wrong: string[] = [];
  for (const { suite, name, c } of all) {
    const d = diagnose({ log: readFileSync(join(CORPUS, `${name}.log`), 'utf8'), state: c.state, plugins: c.plugins, db: dbVariant(c.db) });
    if (!new RegExp(c.expect).test(d.verdict)) wrong.push(`${suite} ${name}: expected /${c.expect}/, got: ${d.verdict}`);
  }
  assert.deepEqual(wrong, [], `score ${all.length - wrong.length}/${all.length}`);
});

test('a crash is recognised by its bbolt frames, not its message; a crash elsewhere is not wiped', () => {
  const start = 'time="2026-12-02T14:33:04Z" level=info msg="starting containerd" revision="x" version="1.6.20~ds1"';
  const crash = (msg: string, frame: string) =>
    [
      start,
      msg,
      '',
      'goroutine 1 [running]:',
      `${frame}(0xc0006d68a0, {0xc0006d6968, 0x2, 0x20})`,
      '\tsome/file.go:250 +0x299',
      'main.main()',
    ].join('\n');
  const d1 = diagnose({
    log: crash('panic: a message nobody has seen before', 'go.etcd.io/bbolt.(*Cursor).search'),
    state: 'activating 3',
    plugins: '',
    db: dbVariant('pristine'),
  });
  assert.match(
    d1.verdict,
    /^broken: metadata database corrupt \(activating, 3 restarts\): panic: a message nobody has seen before \[in go\.etcd\.io\/bbolt\.\(\*Cursor\)\.search\(\.\.\.\)\]/,
  );
  const d2 = diagnose({
    log: crash('unexpected fault address 0x7f4d586beb14', 'github.com/boltdb/bolt.(*DB).page'),
    state: 'failed 5',
    plugins: '',
    db: dbVariant('pristine'),
  });
  assert.match(d2.verdict, /^broken: metadata database corrupt .*unexpected fault address/);
  const d3 = diagnose({
    log: crash('panic: runtime error: invalid memory address', 'github.com/containerd/containerd/pkg/cri.(*criService).Run'),
    state: 'activating 2',
    plugins: '',
    db: dbVariant('pristine'),
  });
  assert.match(d3.verdict, /^do not wipe: containerd crashed outside its metadata database/);
  assert.equal(d3.code, 1);
  // a restart loop caught between two crashes (the last start has no evidence yet): the crash before it decides
  const d4 = diagnose({
    log: `${crash('panic: whatever', 'go.etcd.io/bbolt.(*freelist).read')}\n${start}`,
    state: 'activating 4',
    plugins: '',
    db: dbVariant('pristine'),
  });
  assert.match(d4.verdict, /^broken: metadata database corrupt .*panic: whatever/);
  // no evidence anywhere: a human looks
  // a crash without bbolt frames while the metadata plugin loads is the metadata plugin's too
  const loading = 'time="x" level=info msg="loading plugin \\"io.containerd.metadata.v1.bolt\\"..." type=io.containerd.metadata.v1';
  const d6 = diagnose({
    log: crash(
      'panic: runtime error: invalid memory address',
      'github.com/containerd/containerd/services/server.(*Server).ServeGRPC',
    ).replace(start, `${start}\n${loading}`),
    state: 'activating 2',
    plugins: '',
    db: dbVariant('pristine'),
  });
  assert.match(d6.verdict, /^broken: metadata database corrupt .*\[while loading plugin io\.containerd\.metadata\.v1\.bolt\]/);
  // 2.x logs a dangling record at error level and drops it: not evidence of anything on a node that is down
  const drop = readFileSync(join(CORPUS, 'dropped-record-2.1.log'), 'utf8');
  assert.match(
    diagnose({ log: drop, state: 'activating 3', plugins: '', db: dbVariant('pristine') }).verdict,
    /^do not wipe: .*no evidence/,
  );
  const d5 = diagnose({ log: start, state: 'activating 4', plugins: '', db: dbVariant('pristine') });
  assert.match(d5.verdict, /^do not wipe: containerd is activating \(4 restarts, plugins: no answer\) with no evidence of corruption/);
});

test("a crash in containerd's metadata code is the database too; a stack still being written or a nil server says nothing", () => {
  const start = 'time="2026-12-02T17:18:40Z" level=info msg="starting containerd" revision="x" version="2.1.9"';
  const exited = 'containerd.service: Main process exited, code=exited, status=2/INVALIDARGUMENT';
  const trace = (msg: string, ...frames: string[]) => [
    msg,
    '',
    'goroutine 14 [running]:',
    ...frames.flatMap((f) => [`${f}(0x12882770ac0)`, '\tsome/file.go:1 +0x29']),
    exited,
  ];
  const run = (...segments: string[][]) =>
    diagnose({
      log: segments.map((l) => [start, ...l].join('\n')).join('\n'),
      state: 'activating 2',
      plugins: '',
      db: dbVariant('pristine'),
    });
  const nilDeref = 'panic: runtime error: invalid memory address or nil pointer dereference';
  // containerd's own metadata package reads nothing but bolt: a crash there is corrupt metadata (1.6 and 2.x paths)
  for (const frame of [
    'github.com/containerd/containerd/v2/core/metadata.(*imageStore).List',
    'github.com/containerd/containerd/metadata.(*DB).Init',
  ]) {
    assert.match(
      run(trace(nilDeref, frame, 'main.main')).verdict,
      /^broken: metadata database corrupt .*nil pointer dereference \[in github\.com\/containerd/,
      frame,
    );
  }
  // the latest start crashed but its stack is not in the log yet: the start before it decides
  const bolt = trace('panic: assertion failed: Page expected to be: 4', 'go.etcd.io/bbolt.(*Tx).page', 'go.etcd.io/bbolt.Open');
  assert.match(
    run(bolt, [nilDeref]).verdict,
    /^broken: metadata database corrupt .*assertion failed: Page expected to be: 4 \[in go\.etcd\.io\/bbolt/,
  );
  // a nil server serving (start-up failed and the panic hid why) is no evidence: an earlier start's is used, if any
  const nilServer = trace(nilDeref, 'github.com/containerd/containerd/v2/cmd/containerd/server.(*Server).ServeGRPC');
  nilServer[3] = 'github.com/containerd/containerd/v2/cmd/containerd/server.(*Server).ServeGRPC(0x0, {0x2528868, 0xc0004b9050})';
  assert.match(run(bolt, nilServer).verdict, /^broken: metadata database corrupt .*assertion failed/);
  assert.match(run(nilServer).verdict, /^do not wipe: containerd is activating .* with no evidence of corruption/);
  // 2.x: the start-up goroutine ended without a server and main waits on nil (Wait is inlined: no receiver shown)
  const nilWait = trace(nilDeref, 'github.com/containerd/containerd/v2/cmd/containerd/command.App.func1.2');
  nilWait.splice(3, 0, 'github.com/containerd/containerd/v2/cmd/containerd/server.(*Server).Wait(...)', '\tserver.go:475');
  assert.match(run(nilWait).verdict, /^do not wipe: containerd is activating .* with no evidence of corruption/);
  const cgroups = 'time="x" level=info msg="loading plugin" id=io.containerd.monitor.task.v1.cgroups type=io.containerd.monitor.task.v1';
  const bolt2 = 'time="x" level=info msg="loading plugin" id=io.containerd.metadata.v1.bolt type=io.containerd.metadata.v1';
  assert.match(run([cgroups, ...nilWait]).verdict, /^do not wipe: containerd is activating .* with no evidence of corruption/);
  assert.match(
    run([cgroups, bolt2, ...nilWait]).verdict,
    /^broken: metadata database corrupt .*nil pointer dereference \[while loading plugin io\.containerd\.metadata\.v1\.bolt\]/,
  );
  // a finished crash outside bolt is still a crash outside bolt, whatever came before it
  const cri = trace(nilDeref, 'github.com/containerd/containerd/v2/internal/cri/server.(*criService).Run');
  assert.match(run(bolt, cri).verdict, /^do not wipe: containerd crashed outside its metadata database/);
});

test("bolt's meta page checks: which check failed, both bad is corruption on its own, one bad is not", () => {
  const meta = (db: string) => diagnose({ log: '', state: 'activating 1', plugins: '', db: dbVariant(db) });
  const ok = meta('pristine');
  assert.match(ok.stdout + ok.stderr, /meta\.db: 32768 bytes, meta page 0 ok \(txid \d+\), meta page 1 ok \(txid \d+\)/);
  assert.match(meta('meta0-checksum').stderr, /meta page 0 checksum mismatch, meta page 1 ok/);
  assert.match(meta('meta0').stderr, /meta page 0 no bolt magic, meta page 1 ok/);
  assert.match(meta('meta1').stderr, /meta page 0 ok \(txid \d+\), meta page 1 no bolt magic/);
  const both = meta('both-checksum');
  assert.match(
    both.verdict,
    /^broken: metadata database corrupt \(activating, 1 restarts\): meta\.db: 32768 bytes, meta page 0 checksum mismatch, meta page 1 checksum mismatch/,
  );
  assert.match(meta('version').verdict, /meta page 0 format version 3, not 2, meta page 1 format version 3, not 2/);
  assert.match(meta('truncated').verdict, /^broken: metadata database corrupt .*meta\.db: 4096 bytes, smaller than two pages/);
  assert.match(meta('hwm').verdict, /meta page 0 checksum mismatch, meta page 1 high-water mark page 100 beyond the file \(8 pages\)/);
  // one meta page scribbled on a containerd that runs with its plugins ok: healthy, left alone
  const h = diagnose({ log: '', state: 'active 0', plugins: 'bolt=ok cri=ok overlayfs=ok', db: dbVariant('meta0') });
  assert.equal(h.verdict, 'healthy');
  assert.match(h.stdout, /meta page 0 no bolt magic, meta page 1 ok/);
});

test('version advice: which versions have the dangling-sandbox-record crash, and what to do', () => {
  const advice = (version: string, env = '', extra = '') =>
    diagnose({
      log: `time="x" level=info msg="starting containerd" revision="r" version="${version}"\n${extra}`,
      state: 'active 0',
      plugins: 'bolt=ok cri=ok overlayfs=ok',
      db: dbVariant('pristine'),
      env,
      script: VERSION,
    }).stdout.trim();
  assert.equal(advice('1.6.20~ds1'), 'containerd 1.6.20~ds1: not affected (no CRI sandbox store before 1.7)');
  assert.match(advice('1.7.24~ds1'), /: not affected \(1\.7's default CRI server/);
  assert.match(advice('1.7.24~ds1', 'ENABLE_CRI_SANDBOXES=1'), /^containerd 1\.7\.24~ds1: affected .*: unset ENABLE_CRI_SANDBOXES/);
  assert.match(
    advice('v1.7.27', '', 'time="x" level=info msg="using experimental CRI Sandbox server - unset ENABLE_CRI_SANDBOXES to disable"'),
    /: affected .*unset ENABLE_CRI_SANDBOXES/,
  );
  assert.match(advice('2.0.5'), /: affected \(fixed in 2\.0\.6\): upgrade containerd to >= 2\.0\.6/);
  assert.match(advice('v2.0.4-k3s1'), /: affected \(fixed in 2\.0\.6\)/);
  assert.match(advice('v2.0.4-k3s2'), /: not affected \(k3s\/RKE2 patched it/);
  assert.match(advice('2.0.6'), /: not affected \(fixed in/);
  assert.match(advice('2.1.3'), /: affected \(fixed in 2\.1\.4\): upgrade containerd to >= 2\.1\.4/);
  assert.match(advice('2.1.9~ds1'), /: not affected/);
  assert.match(advice('2.2.0'), /: not affected/);
  assert.match(advice('garbage'), /: unknown \(cannot read the version\)/);
});

// The hostile-review sweep (issue 18), through bin/runbook against real OpenSSH hosts: closed output,
// secrets in every output channel, a rollback after an unknown outcome, deadlines when a kill channel
// cannot open, unbounded output, terminal escapes from a host, inventory ranges, lock names, non-UTF-8
// input, unlock of a live run. The next hostile review starts from here: add a case per finding.
// Every wait is for an observable condition (a file on the host, an event); no fixed delays.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startSshHosts, type SshFleet, type SshHost } from './harness/sshd.js';
import { runWithPeakRss } from './harness/rss.js';
import { waitFor, within } from './harness/wait.js';
import {
  BIN,
  ROOT,
  background,
  cleanEnv,
  waitWhileRunning,
  journals,
  parseNdjson,
  runbook,
  tmp,
  why,
  write,
  type CliRun,
} from './fixtures/ssh/cli.js';

const NAMES = ['ep', 'ul', 'ho', 'se', 'o1', 'o2', 'st'];
let fleet: SshFleet;
/** One host with `MaxSessions 1`: a second channel (a kill) cannot open while a command runs. */
let single: SshFleet;
let dir: string;
let env: NodeJS.ProcessEnv;
const book = (f: string): string => join(ROOT, 'test/fixtures/hardening', f);

before(async () => {
  [fleet, single] = await Promise.all([
    startSshHosts(NAMES.length, { names: NAMES, prefix: 'rbh' }),
    startSshHosts(1, { names: ['ms'], prefix: 'rbm', sshdConfigExtra: 'MaxSessions 1\n' }),
  ]);
  dir = tmp('rb-hard-');
  env = cleanEnv(join(dir, 'home'));
});
after(async () => {
  await Promise.all([fleet?.stop(), single?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** netns mode: each host has its own /run; local mode: all hosts are this machine, one lock file each. */
const lockPath = (h: SshHost, f: SshFleet = fleet): string => (f.mode === 'netns' ? '/run/runbook/lock' : join(dir, `lock-${h.name}`));

function inventory(name: string, hosts: SshHost[], vars: Record<string, unknown> = {}, f: SshFleet = fleet): string {
  const hostVars = Object.fromEntries(hosts.map((h) => [h.name, { runbook_lock_path: lockPath(h, f) }]));
  return write(join(dir, `${name}.yml`), f.inventoryYaml({ only: hosts.map((h) => h.name), vars, hostVars }));
}
const common = (f: SshFleet = fleet): string[] => ['--known-hosts', f.knownHostsFile];
const existsOn = async (h: SshHost, path: string, f: SshFleet = fleet): Promise<boolean> => (await f.exec(h, `test -e ${path}`)).code === 0;
/** `sleep MARK` processes on the host (`[s]leep`: pgrep must not match its own sh). */
const sleepers = async (f: SshFleet, h: SshHost, mark: number): Promise<string> =>
  (await f.exec(h, `pgrep -f '[s]leep ${mark}' || true`)).stdout.trim();
/** Client config that notices a silent connection in ~6-8 s (ServerAlive 2 s x 3): soon, yet not fooled by a busy machine. */
const fastKeepalive = (): string => write(join(dir, 'ssh_config_fast'), 'Host *\n  ServerAliveInterval 2\n  ServerAliveCountMax 3\n');

describe('hardening sweep', { concurrency: true }, () => {
  test('1: a closed stdout does not end a run: it goes on to its end, writes its journal, frees the lock, exits with its own code', async () => {
    const h = fleet.host('ep');
    const hostDir = '/tmp/rbh-ep';
    await fleet.exec(h, `rm -rf ${hostDir}`);
    const inv = inventory('ep', [h], { dir: hostDir });
    const state = tmp('rb-hard-state-');
    // `runbook apply ... | head -2`: read two lines, then close the pipe.
    const child = spawn(process.execPath, [BIN, 'apply', book('gated.yml'), '-i', inv, '--state-dir', state, '--verbose', ...common()], {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    let seen = '';
    await new Promise<void>((res) => {
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        seen += d;
        if (seen.split('\n').length > 2) {
          child.stdout.destroy();
          res();
        }
      });
    });
    const exited = new Promise<number | null>((res) => child.on('close', (code) => res(code)));
    await waitFor(() => existsOn(h, `${hostDir}/two`), { what: 'step two running on the host' });
    await fleet.exec(h, `touch ${hostDir}/go`);
    const code = await within(exited, { what: 'the run to exit after its stdout was closed', timeoutMs: 90_000 });
    assert.equal(code, 0, stderr);
    assert.ok(await existsOn(h, `${hostDir}/three`), 'step three ran after the output went away');
    assert.match(stderr, /stdout was closed; the run goes on/);
    const [j] = journals(state);
    const recs = parseNdjson(j);
    assert.ok(
      recs.some((r) => r.type === 'run-end'),
      'the journal has the run end',
    );
    assert.ok(
      recs.some((r) => r.type === 'host-end' && r.host === 'ep' && r.status === 'changed'),
      j,
    );
    // The lock was released: another run takes it at once.
    await fleet.exec(h, `rm -rf ${hostDir}; mkdir -p ${hostDir}; touch ${hostDir}/go`);
    const again: CliRun = await runbook(['apply', book('gated.yml'), '-i', inv, '--json', '--state-dir', state, ...common()], { env });
    assert.equal(again.code, 0, why(again));
  });
});

/** What a host printed reached us; no control sequence of it did (tty: our own CSI cursor and color codes may be there). */
function assertNoControls(text: string, where: string, tty = false, words = /clip .*end/): void {
  assert.match(text, words, `${where}: the host's words are shown`);
  const bad = [
    /[\u0000-\u0008\u000b-\u001a\u001c-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/,
    tty ? /\u001b[^[]|\u001b\[6n/ : /\u001b/,
  ];
  for (const re of bad) {
    const m = re.exec(text);
    assert.equal(
      m,
      null,
      `${where}: a control sequence got through at ${m?.index}: ${JSON.stringify(text.slice(Math.max(0, (m?.index ?? 0) - 40), (m?.index ?? 0) + 40))}`,
    );
  }
}

describe('hardening sweep: hostile output', { concurrency: true }, () => {
  test('9: control sequences from a host reach no terminal: plain and verbose output, the TTY view, NDJSON, show-run, reports', async () => {
    const h = fleet.host('ho');
    const inv = inventory('ho', [h]);
    const state = tmp('rb-hard-state-');
    const md = join(dir, 'ho.md');
    const plain = await runbook(
      ['apply', book('hostile-output.yml'), '-i', inv, '--verbose', '--state-dir', state, '--report', md, ...common()],
      { env },
    );
    assert.equal(plain.code, 2, why(plain));
    assertNoControls(plain.stdout, 'plain stdout');
    assertNoControls(readFileSync(md, 'utf8'), 'markdown report');
    const json = await runbook(['apply', book('hostile-output.yml'), '-i', inv, '--json', '--verbose', '--state-dir', state, ...common()], {
      env,
    });
    assert.equal(json.code, 2, why(json));
    assertNoControls(json.stdout.replace(/\\u[0-9a-f]{4}/g, ''), 'NDJSON');
    assert.match(json.stdout, /\\u001b\]52;/, 'NDJSON keeps the bytes, escaped');
    const runId = String(plain.stdout.match(/run (\S+) start/)?.[1]);
    const shown = await runbook(['show-run', runId, '--state-dir', state], { env });
    assert.equal(shown.code, 0, why(shown));
    assertNoControls(shown.stdout, 'show-run', false, /failed: exit 3: err/);
    // The live view: stderr is a terminal (script(1) gives the run a pty and keeps every byte it wrote).
    const typescript = join(dir, 'ho.typescript');
    const argv = [BIN, 'apply', book('hostile-output.yml'), '-i', inv, '--verbose', '--state-dir', state, ...common()];
    const tty = await new Promise<number | null>((res) => {
      const c = spawn('script', ['-q', '-e', '-c', argv.map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' '), typescript], {
        cwd: ROOT,
        env: { ...env, NO_COLOR: '' },
        stdio: 'ignore',
      });
      c.on('close', (code) => res(code));
    });
    assert.equal(tty, 2);
    assertNoControls(readFileSync(typescript, 'utf8').replace(/\r/g, ''), 'the TTY view', true);
  });
});

const SECRET = `Pa'ss$wo"rd-7f3k9QzX\`bq`;

/** Fails when `text` holds the secret or any 6-character piece of it, also once JSON's escapes are undone. */
function assertNoSecret(text: string, where: string): void {
  const forms = [text, text.replace(/\\(["\\])/g, '$1')];
  for (let i = 0; i + 6 <= SECRET.length; i++) {
    const piece = SECRET.slice(i, i + 6);
    for (const t of forms) {
      const at = t.indexOf(piece);
      assert.equal(
        at,
        -1,
        `${where}: a piece of the secret (${JSON.stringify(piece)}) at ${at}: ${JSON.stringify(t.slice(Math.max(0, at - 60), at + 60))}`,
      );
    }
  }
}

describe('hardening sweep: secrets', { concurrency: true }, () => {
  test('2: a secret shows in no output channel, whole or in pieces: stdout, stderr, NDJSON, journal, reports, metrics, show-run, runs, plan; -e errors do not echo it', async () => {
    const h = fleet.host('se');
    const inv = inventory('se', [h], { token_copy: SECRET });
    const state = tmp('rb-hard-state-');
    const ev = ['-e', JSON.stringify({ token: SECRET, other: 'fine' })];
    const out = (f: string) => join(dir, `se-${f}`);
    const texts: Array<[string, string]> = [];
    const keep = (where: string, r: CliRun) => texts.push([`${where} stdout`, r.stdout], [`${where} stderr`, r.stderr]);
    const reports = ['--report', out('r.md'), '--report', out('r.json'), '--report', out('r.xml'), '--metrics-file', out('m.prom')];
    const plain = await runbook(
      ['apply', book('secret-everywhere.yml'), '-i', inv, ...ev, '--verbose', '--state-dir', state, ...reports, ...common()],
      { env },
    );
    assert.equal(plain.code, 2, why(plain));
    assert.match(plain.stdout, /token is \*\*\*/, 'the step ran with the secret');
    keep('apply', plain);
    for (const f of ['r.md', 'r.json', 'r.xml', 'm.prom']) texts.push([f, readFileSync(out(f), 'utf8')]);
    const json = await runbook(
      ['apply', book('secret-everywhere.yml'), '-i', inv, ...ev, '--json', '--verbose', '--state-dir', state, ...common()],
      { env },
    );
    assert.equal(json.code, 2, why(json));
    assert.ok(
      json.events.some((e) => e.type === 'output' && e.step === 'chunks'),
      'chunks were streamed',
    );
    keep('apply --json', json);
    const runId = String(json.events.find((e) => e.type === 'run-start')?.run_id);
    for (const args of [['show-run', runId], ['show-run', runId, '--json'], ['runs'], ['runs', '--json']])
      keep(args.join(' '), await runbook([...args, '--state-dir', state], { env }));
    for (const extra of [[], ['--json']])
      keep(`plan ${extra}`, await runbook(['plan', book('secret-everywhere.yml'), '-i', inv, ...ev, ...extra], { env }));
    const js = journals(state);
    assert.equal(js.length, 2);
    for (const [i, j] of js.entries()) texts.push([`journal ${i}`, j]);
    assert.match(
      js[0],
      /"extra_vars":\["\{\\"token\\":\\"\*\*\*\\",\\"other\\":\\"fine\\"\}"\]/,
      'the journal keeps the -e without the secret',
    );
    // -e that cannot be parsed: the error names the -e and its variables, never the text.
    for (const bad of [`token='${SECRET}`, `{"token": "${SECRET}"`, `token ${SECRET}`]) {
      const r = await runbook(['validate', book('secret-everywhere.yml'), '-i', inv, '-e', bad], { env });
      assert.equal(r.code, 1, why(r));
      assert.match(r.stderr, /-e number 1/);
      keep(`validate -e ${bad.slice(0, 8)}`, r);
    }
    for (const [where, text] of texts) assertNoSecret(text, where);
  });
});

describe('hardening sweep: resources', { concurrency: true }, () => {
  test('6: a step printing 250 MB on each of two hosts: the controller keeps a head and a tail, says so, stays under 200 MB RSS', async (t) => {
    const inv = inventory('loud', [fleet.host('o1'), fleet.host('o2')]);
    const r = await runWithPeakRss(
      [BIN, 'apply', book('loud.yml'), '-i', inv, '--json', '--state-dir', tmp('rb-hard-state-'), ...common()],
      { cwd: ROOT, env },
    );
    t.diagnostic(`controller peak RSS ${r.peakMb.toFixed(0)} MB for 2 x 250 MB of output`);
    const events = parseNdjson(r.stdout);
    assert.equal(r.code, 0, r.stderr + r.stdout.slice(-3000));
    for (const host of ['o1', 'o2']) {
      const end = events.find((e) => e.type === 'step-end' && e.host === host && e.step === 'loud');
      assert.ok(end, `step-end of loud on ${host}`);
      assert.match(String(end.stdout), /^… \[output truncated: 250000014 bytes printed, the last 4096 characters kept\]\n/);
      assert.match(String(end.stdout), /END-OF-OUTPUT\n$/);
      assert.ok(events.some((e) => e.type === 'host-end' && e.host === host && e.status === 'changed'));
    }
    assert.ok(r.peakMb > 0, 'RSS was sampled');
    assert.ok(r.peakMb < 200, `controller peak RSS ${r.peakMb.toFixed(0)} MB`);
  });
});

describe('hardening sweep: hostile hosts', { concurrency: true }, () => {
  test('3: after a lost connection the command is killed through a new one before its rollback runs; never reported rolled back while it runs', async (t) => {
    const h = fleet.host('st');
    const hostDir = '/tmp/rbh-st';
    const mark = 1017;
    await fleet.exec(h, `rm -rf ${hostDir}`);
    const inv = inventory('st', [h], { dir: hostDir, mark });
    const run = background(
      runbook(
        [
          'apply',
          book('stuck.yml'),
          '-i',
          inv,
          '--json',
          '--state-dir',
          tmp('rb-hard-state-'),
          '--ssh-config',
          fastKeepalive(),
          ...common(),
        ],
        { env },
      ),
    );
    await waitWhileRunning(run, async () => (await sleepers(fleet, h, mark)) !== '', { what: `sleep ${mark} running on the host` });
    // Freeze the connection's sshd processes (children of the listener): the link goes silent, the command runs on.
    const listener = fleet.mode === 'netns' ? 1 : h.pid;
    const frozen = (await fleet.exec(h, `for p in $(pgrep -P ${listener}); do echo $p; pgrep -P $p; done`)).stdout
      .trim()
      .split(/\s+/)
      .filter(Boolean);
    assert.ok(frozen.length > 0, 'found the connection sshd');
    await fleet.exec(h, `kill -STOP ${frozen.join(' ')}`);
    try {
      const r = await within(run.done, { what: 'the run to end after its connection froze', timeoutMs: 120_000 });
      t.diagnostic(`exit after ${r.ms} ms`);
      assert.equal(r.code, 2, why(r));
      const end = r.events.find((e) => e.type === 'host-end' && e.host === 'st');
      assert.equal(end?.status, 'rolled-back', why(r));
      assert.equal(await sleepers(fleet, h, mark), '', 'the command was killed before the rollback');
      assert.ok(!(await existsOn(h, `${hostDir}/two`)) && !(await existsOn(h, `${hostDir}/one`)), 'the rollbacks ran');
    } finally {
      await fleet.exec(h, `kill -CONT ${frozen.join(' ')}; kill -KILL ${frozen.join(' ')} 2>/dev/null; pkill -f '[s]leep ${mark}'; true`);
    }
  });

  test('5: a timeout is a deadline even when no kill channel can open (MaxSessions 1): unknown, the command killed over a new connection, rolled back', async (t) => {
    const h = single.host('ms');
    const hostDir = '/tmp/rbh-ms';
    const mark = 1018;
    await single.exec(h, `rm -rf ${hostDir}`);
    const inv = inventory('ms', [h], { dir: hostDir, mark }, single);
    try {
      const r = await runbook(
        ['apply', book('stuck-timeout.yml'), '-i', inv, '--json', '--state-dir', tmp('rb-hard-state-'), ...common(single)],
        {
          env,
          timeoutMs: 120_000,
        },
      );
      assert.equal(r.code, 2, why(r));
      const step = r.events.find((e) => e.type === 'step-end' && e.step === 'two');
      t.diagnostic(`step two ended after ${step?.duration_ms} ms (timeout 3000 ms); exit after ${r.ms} ms`);
      assert.equal(step?.status, 'unknown', why(r));
      assert.match(String(step?.message), /timed out after 3000 ms; the kill could not be confirmed/);
      assert.equal(r.events.find((e) => e.type === 'host-end')?.status, 'rolled-back', why(r));
      assert.equal(await sleepers(single, h, mark), '', 'the command was killed');
      assert.ok(!(await existsOn(h, `${hostDir}/two`, single)), 'rolled back');
    } finally {
      await single.exec(h, `pkill -f '[s]leep ${mark}'; true`);
    }
  });
});

describe('hardening sweep: state', { concurrency: true }, () => {
  test('11: unlock refuses the lock of a run that is still running here (exit 1, lock kept) unless --force', async () => {
    const h = fleet.host('ul');
    const hostDir = '/tmp/rbh-ul';
    await fleet.exec(h, `rm -rf ${hostDir}`);
    const inv = inventory('ul', [h], { dir: hostDir });
    const state = tmp('rb-hard-state-');
    let runId: string | undefined;
    const run = background(
      runbook(['apply', book('gated.yml'), '-i', inv, '--json', '--state-dir', state, ...common()], {
        env,
        onEvent: (e) => {
          if (e.type === 'run-start') runId = String(e.run_id);
        },
      }),
    );
    await waitWhileRunning(run, async () => runId !== undefined && (await existsOn(h, `${hostDir}/two`)), {
      what: 'step two running on the host',
    });
    const unlock = (extra: string[]) =>
      runbook(['unlock', 'ul', '-i', inv, '--run', runId!, '--state-dir', state, ...common(), ...extra], { env });
    const refused = await unlock([]);
    assert.equal(refused.code, 1, why(refused));
    assert.match(refused.stderr, /ul is locked by run \S+ \(gated\).*still running; nothing was removed\. .*--force/);
    assert.ok(await existsOn(h, lockPath(h)), 'the lock is kept');
    const forced = await unlock(['--force']);
    assert.equal(forced.code, 0, why(forced));
    assert.ok(!(await existsOn(h, lockPath(h))), 'the lock is gone');
    await fleet.exec(h, `touch ${hostDir}/go`);
    const r = await run.done;
    assert.equal(r.code, 0, why(r));
  });
});

describe('hardening sweep: inputs', { concurrency: true }, () => {
  test('10: a host range past the limit is one clear error (exit 1) before anything is expanded', async () => {
    const r = await runbook(['inventory', '-i', join(ROOT, 'test/fixtures/inventories/_bad/huge-range.ini'), '--list'], { env });
    assert.equal(r.code, 1, why(r));
    assert.match(r.stderr, /huge-range\.ini:3: .*gives 100000000 hosts, more than the limit of 100000 .*RUNBOOK_MAX_RANGE_HOSTS=N/);
    assert.equal(r.stdout, '');
  });

  test('11: a runbook or inventory that is not UTF-8 is refused with its byte offset (exit 1), nothing run', async () => {
    const rb = join(dir, 'latin1.yml');
    writeFileSync(rb, Buffer.from('name: latin1\nsteps:\n  - name: caf\u00e9\n    run: touch /tmp/never\n', 'latin1'));
    const v = await runbook(['validate', rb], { env });
    assert.equal(v.code, 1, why(v));
    assert.match(v.stderr, /latin1\.yml:3: the runbook is not UTF-8 \(byte 0xe9 at offset 33\)/);
    const inv = join(dir, 'latin1.ini');
    writeFileSync(inv, Buffer.from('[web]\nh\u00f4te ansible_connection=local\n', 'latin1'));
    const a = await runbook(['apply', book('gated.yml'), '-i', inv, '--state-dir', tmp('rb-hard-state-')], { env });
    assert.equal(a.code, 1, why(a));
    assert.match(a.stderr, /latin1\.ini:2: the inventory file is not UTF-8 \(byte 0xf4 at offset 7\)/);
  });
});

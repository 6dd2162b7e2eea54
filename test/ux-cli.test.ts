// tier: local
/**
 * Operator experience end to end through bin/runbook on local hosts: list/show, the destructive
 * prompt on a real terminal (tmux) and its refusal when piped, plain output when piped, --json,
 * every --report format and the metrics file parsed back, --window refusing to start hosts.
 */
import { test, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, existsSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLParser } from 'fast-xml-parser';
import { waitFor } from './harness/wait.js';

const ROOT = new URL('..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/runbook');
const WORK = mkdtempSync(join(tmpdir(), 'runbook-uxcli-'));
after(() => rmSync(WORK, { recursive: true, force: true }));
const ISO_LINE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z \S/;
const ANSI = /\u001b\[/;

let k = 0;
/** A project dir with runbooks/, an inventory of local hosts (unique names: host locks live in /tmp) and a state dir. */
function project(hosts = 2) {
  const dir = join(WORK, `p${k++}`);
  const out = join(dir, 'out');
  mkdirSync(join(dir, 'runbooks'), { recursive: true });
  mkdirSync(out);
  const names = Array.from({ length: hosts }, (_, i) => `uxcli-${process.pid}-${k}-${i + 1}`);
  writeFileSync(
    join(dir, 'inv.yml'),
    `all:\n  vars:\n    ansible_connection: local\n    out: ${out}\n  hosts:\n${names.map((n) => `    ${n}:\n`).join('')}`,
  );
  writeFileSync(
    join(dir, 'runbooks/danger.yml'),
    `name: danger
description: Touches a file per host (pretend destructive)
destructive: true
steps:
  - name: Touch
    run: touch {{ out }}/{{ inventory_hostname }}.done
    rollback: rm -f {{ out }}/{{ inventory_hostname }}.done
`,
  );
  writeFileSync(
    join(dir, 'runbooks/failing.yml'),
    `name: failing
description: The second host fails and is rolled back
steps:
  - name: First
    run: touch {{ out }}/{{ inventory_hostname }}.first
    rollback: rm -f {{ out }}/{{ inventory_hostname }}.first
  - name: Boom
    when: test {{ inventory_hostname }} = ${names[names.length - 1]}
    run: echo "disk on fire" >&2; echo "last words" >&2; exit 7
`,
  );
  return { dir, out, names, state: join(dir, 'state') };
}

function runbook(cwd: string, args: string[], opts: { input?: string; env?: Record<string, string> } = {}) {
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
  if (!opts.env?.NO_COLOR) delete env.NO_COLOR;
  const r = spawnSync(BIN, args, { cwd, input: opts.input ?? '', encoding: 'utf8', env, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('list and show', () => {
  test('list: names, destructive, where from, description', () => {
    const p = project();
    const r = runbook(p.dir, ['list']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^NAME\s+DESTRUCTIVE\s+FROM\s+DESCRIPTION$/m);
    assert.match(r.stdout, /^danger\s+yes\s+\.\/runbooks\s+Touches a file per host/m);
    assert.match(r.stdout, /^failing\s+no\s+\.\/runbooks\s+/m);
    assert.match(r.stdout, /^containerd-recover\s+yes\s+shipped\s+/m);
    assert.doesNotMatch(r.stdout, ANSI);
  });

  test('show: steps with when/unless/run/verify/rollback', () => {
    const r = runbook(ROOT, ['show', 'hello']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^hello$/m);
    assert.match(r.stdout, /^ {2}1\. Write greeting/m);
    for (const k of ['when', 'unless', 'run', 'verify', 'rollback']) assert.match(r.stdout, new RegExp(`^     ${k}: +\\S`, 'm'));
    const p = project();
    const d = runbook(p.dir, ['show', 'danger']);
    assert.match(d.stdout, /^danger {2}\(destructive/m);
    const f = runbook(p.dir, ['show', 'failing']);
    assert.match(f.stdout, /^ {5}rollback: none$/m);
    const missing = runbook(p.dir, ['show', 'nope']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /runbook "nope" not found/);
  });
});

describe('destructive prompt', () => {
  test('piped, without --yes: refuses with exit 1, says why, runs nothing', () => {
    const p = project();
    const r = runbook(p.dir, ['apply', 'danger', '-i', 'inv.yml', '--state-dir', p.state], { input: 'y\n' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /runbook danger is destructive and there is no terminal to confirm; pass --yes to run it unattended\./);
    assert.equal(r.stdout, '');
    assert.deepEqual(readdirSync(p.out), []);
  });

  test('piped, with --yes: runs', () => {
    const p = project();
    const r = runbook(p.dir, ['apply', 'danger', '-i', 'inv.yml', '--state-dir', p.state, '--yes']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readdirSync(p.out).sort(), p.names.map((n) => `${n}.done`).sort());
  });

  // A real terminal: tmux gives the process a pty for stdin and stderr.
  const SOCK = join(WORK, 'tmux.sock');
  const tmux = (...a: string[]) => execFileSync('tmux', ['-S', SOCK, ...a], { encoding: 'utf8' });
  after(() => {
    try {
      tmux('kill-server');
    } catch {
      /* not started or gone */
    }
  });
  async function screenUntil(name: string, re: RegExp): Promise<string> {
    let s = '';
    return waitFor(
      () => {
        s = tmux('capture-pane', '-p', '-J', '-t', name);
        return re.test(s) && s;
      },
      { what: `the screen to match ${re}`, intervalMs: 100, detail: () => `screen:\n${s}` },
    );
  }
  let started = false;
  async function onTerminal(answer: string) {
    const p = project();
    if (!started) {
      tmux('new-session', '-d', '-s', 'keeper', 'sleep 600');
      started = true;
    }
    const name = `t${k}`;
    tmux(
      'new-session',
      '-d',
      '-s',
      name,
      '-x',
      '100',
      '-y',
      '40',
      `cd ${p.dir} && env -u NO_COLOR ${BIN} apply danger -i inv.yml --state-dir ${p.state}; echo __EXIT__$?; sleep 60`,
    );
    try {
      const asked = await screenUntil(name, /\[y\/N\] *$/m);
      tmux('send-keys', '-t', name, answer, 'Enter');
      const done = await screenUntil(name, /__EXIT__\d+/);
      return { p, asked, done, code: Number(/__EXIT__(\d+)/.exec(done)![1]) };
    } finally {
      tmux('kill-session', '-t', name);
    }
  }

  test('on a terminal: shows the plan, asks once, "y" runs', async () => {
    const { p, asked, done, code } = await onTerminal('y');
    assert.match(asked, /Runbook danger \(destructive\): Touches a file per host/);
    assert.match(asked, /Hosts \(2\): /);
    assert.match(asked, /Failure budget: /);
    assert.match(asked, /1\. Touch/);
    assert.equal(asked.match(/\[y\/N\]/g)?.length, 1);
    assert.equal(code, 0, done);
    assert.match(done, /What to do now: Nothing/);
    assert.equal(readdirSync(p.out).length, 2);
  });

  test('on a terminal: "n" runs nothing and exits 1', async () => {
    const { p, done, code } = await onTerminal('n');
    assert.equal(code, 1);
    assert.match(done, /Not confirmed: nothing was run/);
    assert.deepEqual(readdirSync(p.out), []);
  });
});

describe('unattended output', () => {
  test('piped: plain timestamped lines, no ANSI, summary with the failing command and stderr tail; exit 2', () => {
    const p = project();
    const r = runbook(p.dir, ['apply', 'failing', '-i', 'inv.yml', '--state-dir', p.state]);
    assert.equal(r.code, 2, r.stderr);
    assert.doesNotMatch(r.stdout + r.stderr, ANSI);
    const cut = r.stdout.indexOf('\n\nRun ');
    assert.ok(cut > 0, r.stdout);
    const events = r.stdout.slice(0, cut);
    const summary = r.stdout.slice(cut + 2);
    for (const l of events.split('\n')) assert.match(l, ISO_LINE);
    const bad = p.names[p.names.length - 1];
    assert.match(summary, new RegExp(`^${bad}\\s+rolled-back\\s+Boom \\(failed\\)`, 'm'));
    assert.match(summary, /command: echo "disk on fire" >&2; echo "last words" >&2; exit 7/);
    assert.match(summary, /exit code: 7/);
    assert.match(summary, /\| disk on fire\n.*\| last words/);
    assert.match(summary, /What to do now: Fix what failed on /);
  });

  test('--json: stdout is exactly NDJSON events, each with type and time', () => {
    const p = project();
    const r = runbook(p.dir, ['apply', 'failing', '-i', 'inv.yml', '--state-dir', p.state, '--json']);
    assert.equal(r.code, 2, r.stderr);
    const lines = r.stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l));
    for (const e of lines) {
      assert.equal(typeof e.type, 'string');
      assert.equal(typeof e.time, 'string');
    }
    assert.equal(lines[0].type, 'run-start');
    assert.equal(lines.at(-1).type, 'run-end');
    assert.equal(lines.at(-1).exit_code, 2);
  });

  test('NO_COLOR and a pipe: no escapes anywhere', () => {
    const p = project();
    const r = runbook(p.dir, ['apply', 'failing', '-i', 'inv.yml', '--state-dir', p.state], { env: { NO_COLOR: '1' } });
    assert.doesNotMatch(r.stdout + r.stderr, ANSI);
  });

  test('--report .json/.md/.xml and --metrics-file from a real run parse back', () => {
    const p = project();
    const rep = join(p.dir, 'reports');
    const prom = join(p.dir, 'textfile/runbook.prom');
    const r = runbook(p.dir, [
      'apply',
      'failing',
      '-i',
      'inv.yml',
      '--state-dir',
      p.state,
      '--report',
      join(rep, 'r.json'),
      '--report',
      join(rep, 'r.md'),
      '--report',
      join(rep, 'r.xml'),
      '--metrics-file',
      prom,
    ]);
    assert.equal(r.code, 2, r.stderr);
    const j = JSON.parse(readFileSync(join(rep, 'r.json'), 'utf8'));
    assert.equal(j.runbook, 'failing');
    assert.equal(j.exit_code, 2);
    assert.deepEqual(
      j.hosts.map((h: { status: string }) => h.status),
      ['changed', 'rolled-back'],
    );
    assert.equal(j.hosts[1].code, 7);
    assert.match(j.hosts[1].stderr_tail, /disk on fire\nlast words/);
    const md = readFileSync(join(rep, 'r.md'), 'utf8');
    assert.match(md, /^# runbook failing: FAILED \(exit 2\)/);
    assert.match(md, /Last lines of stderr/);
    const xml = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@', isArray: (n) => n === 'testcase' }).parse(
      readFileSync(join(rep, 'r.xml'), 'utf8'),
    );
    const suite = xml.testsuites.testsuite;
    assert.equal(suite.testcase.length, 2);
    assert.equal(suite['@failures'], '1');
    assert.equal(suite.testcase[1].failure['@type'], 'rolled-back');
    const text = readFileSync(prom, 'utf8');
    for (const line of text.trimEnd().split('\n')) {
      assert.match(line, /^(# (HELP|TYPE) runbook_\w+ .+|runbook_\w+\{[^}]*\} [0-9.]+)$/, line);
    }
    assert.match(text, /^runbook_last_run_exit_code\{runbook="failing"\} 2$/m);
    assert.match(text, /^runbook_last_run_hosts\{runbook="failing",status="rolled-back"\} 1$/m);
    assert.match(text, /^runbook_last_run_hosts\{runbook="failing",status="ok"\} 0$/m);
    assert.deepEqual(readdirSync(join(p.dir, 'textfile')), ['runbook.prom']);
  });
});

describe('--window', () => {
  const hhmm = (d: Date) => `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
  test('outside the window no host starts: every host skipped with the reason, exit 2', () => {
    const p = project();
    const now = Date.now();
    const spec = `${hhmm(new Date(now + 2 * 3600_000))}-${hhmm(new Date(now + 3 * 3600_000))}`;
    const r = runbook(p.dir, ['apply', 'danger', '-i', 'inv.yml', '--state-dir', p.state, '--yes', '--window', spec, '--json']);
    assert.equal(r.code, 2, r.stderr);
    const events = r.stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l));
    const end = events.at(-1);
    assert.deepEqual(Object.values(end.hosts), ['skipped', 'skipped']);
    assert.ok(!events.some((e) => e.type === 'step-start' && e.phase === 'step'), 'no step started');
    assert.ok(JSON.stringify(events).includes(`outside the maintenance window ${spec}`));
    assert.deepEqual(readdirSync(p.out), []);
  });

  test('inside the window hosts run (a window across midnight included)', () => {
    const p = project();
    const now = Date.now();
    const spec = `${hhmm(new Date(now - 3600_000))}-${hhmm(new Date(now + 3600_000))}`;
    const r = runbook(p.dir, ['apply', 'danger', '-i', 'inv.yml', '--state-dir', p.state, '--yes', '--window', spec]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(readdirSync(p.out).length, 2);
  });

  test('a bad window is a usage error before anything runs', () => {
    const p = project();
    const r = runbook(p.dir, ['apply', 'danger', '-i', 'inv.yml', '--state-dir', p.state, '--yes', '--window', '25:00-01:00']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--window 25:00-01:00/);
    assert.equal(existsSync(p.state) && readdirSync(p.state).length > 0, false);
  });
});

/**
 * The live view and final summary on a real terminal: a synthetic run of 1, 5 and 60 hosts rendered
 * inside tmux (fixed 80x24), read back with capture-pane. No line may overflow the width, finished
 * hosts collapse into counts, many hosts give a compact view, and the summary fits on one screen.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, existsSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = new URL('..', import.meta.url).pathname;
const WORK = mkdtempSync(join(tmpdir(), 'runbook-ux-tmux-'));
const SOCKET = join(WORK, 'tmux.sock');
const COLS = 80;
const ROWS = 24;
const tmux = (...args: string[]) => execFileSync('tmux', ['-S', SOCKET, ...args], { encoding: 'utf8' });
// A keeper session holds our private server up between tests (the server exits with its last session).
tmux('new-session', '-d', '-s', 'keeper', '-x', String(COLS), '-y', String(ROWS), 'sleep 600');
after(() => {
  try {
    tmux('kill-server');
  } catch {
    /* already gone */
  }
  rmSync(WORK, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitFile(f: string, ms = 30_000) {
  const end = Date.now() + ms;
  while (!existsSync(f)) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${f}`);
    await sleep(50);
  }
}

let n = 0;
/** Runs the simulation in a fresh tmux window; returns the screen mid-run and after the summary. */
async function simulate(hosts: number, forks: number, env: Record<string, string> = {}, escapes = false) {
  const dir = mkdtempSync(join(WORK, 'sim-'));
  const name = `s${n++}`;
  const envArgs = Object.entries(env)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  const cmd = `cd ${ROOT} && env -u NO_COLOR ${envArgs} TERM=xterm-256color node --import tsx test/fixtures/events/simulate.ts ${hosts} ${forks} ${dir}; echo __EXIT__$?; sleep 60`;
  tmux('new-session', '-d', '-s', name, '-x', String(COLS), '-y', String(ROWS), cmd);
  const capture = () => tmux('capture-pane', '-p', '-J', ...(escapes ? ['-e'] : []), '-t', name);
  try {
    await waitFile(join(dir, 'paused'));
    await sleep(400); // a few frames at 10/s
    const live = capture();
    writeFileSync(join(dir, 'go'), '');
    await waitFile(join(dir, 'done'));
    let final = '';
    for (let i = 0; i < 50 && !final.includes('__EXIT__'); i++) {
      await sleep(100);
      final = capture();
    }
    return { live, final };
  } finally {
    tmux('kill-session', '-t', name);
  }
}

const visible = (s: string) => s.replace(/\u001b\[[0-9;:]*m/g, '');
function assertFits(screen: string) {
  for (const line of screen.split('\n')) {
    assert.ok([...visible(line)].length <= COLS, `line overflows ${COLS} columns: ${JSON.stringify(line)}`);
  }
}
const nonBlank = (s: string) => s.split('\n').filter((l) => l.trim() !== '');
const HOST = (i: number) => `worker-${String(i).padStart(2, '0')}.k8s.prod.example.com`;

test('1 host: one line for it in flight, then a summary on one screen', async () => {
  const { live, final } = await simulate(1, 50);
  assertFits(live);
  assertFits(final);
  const l = nonBlank(live);
  assert.match(l[0], /containerd-recover · 0\/1 done · 1 running · \d+s$/);
  assert.match(l[1], new RegExp(`^  ${HOST(1).replace(/\./g, '\\.')}  step 1: Stop kubelet +\\d+s$`));
  assert.equal(l.length, 2);
  assert.match(final, /^Run 20261127-0200-sim1 containerd-recover: ok \(exit 0\), 1 host/m);
  assert.match(final, /^What to do now: Nothing/m);
  assert.match(final, /__EXIT__0/);
});

test('5 hosts: one line per host in flight with its step; finished hosts become counts', async () => {
  const { live, final } = await simulate(5, 50);
  assertFits(live);
  assertFits(final);
  const l = nonBlank(live);
  assert.equal(l.length, 6, 'header + 5 hosts');
  for (let i = 1; i <= 5; i++)
    assert.ok(
      l.some((x) => x.includes(HOST(i)) && /(step \d: |connecting)/.test(x)),
      `host ${i} in flight`,
    );
  assert.match(final, /^Hosts: 1 ok, 3 changed, 1 rolled-back$/m);
  assert.match(final, /^worker-04\S+ rolled-back at step "Move the data root aside a/m);
  assert.match(final, /^ {2}command: mv \/var\/lib\/containerd/m);
  assert.match(final, /^ {4}\| mv: cannot move: Device or resource busy$/m);
  // The whole summary is on the screen: from its first line to the advice.
  assert.match(final, /^Run 20261127-0200-sim1 containerd-recover: failed \(exit 2\), 5 hosts/m);
  assert.match(final, /^What to do now: Fix what failed on worker-04/m);
});

test('60 hosts on 24 rows: compact live view (counts per step), compact summary that fits the screen', async () => {
  const { live, final } = await simulate(60, 50);
  assertFits(live);
  assertFits(final);
  const l = nonBlank(live);
  assert.match(l[0], /0\/60 done · 50 running · 10 waiting/);
  assert.ok(l.length <= ROWS - 2, 'the live block fits');
  const groups = l.slice(1);
  assert.ok(groups.length >= 2 && groups.every((x) => /^ +\d+ × (step \d: |connecting)/.test(x)), `grouped by step:\n${groups.join('\n')}`);
  const inFlight = groups.reduce((sum, x) => sum + Number(/^ +(\d+) ×/.exec(x)![1]), 0);
  assert.equal(inFlight, 50);
  assert.ok(!l.some((x) => x.includes(HOST(40))), 'hosts are not listed one by one');
  // Summary: header to advice on one screen, ok/changed hosts counted, not listed.
  assert.match(final, /^Run 20261127-0200-sim1 containerd-recover: failed \(exit 2\), 60 hosts/m);
  assert.match(final, /^47 hosts ok or changed, not listed/m);
  assert.match(final, /^Hosts: 9 ok, 38 changed, 9 rolled-back, 4 unreachable$/m);
  assert.match(final, /^ {2}command: mv \/var\/lib\/containerd/m);
  assert.match(final, /^What to do now: /m);
  assert.ok(!/^worker-\d+\S* +changed/m.test(final), 'changed hosts not in the table');
});

test('colors on the terminal, none with NO_COLOR', async () => {
  const colored = await simulate(5, 50, {}, true);
  assert.match(colored.final, /\u001b\[[0-9;]*3[1-3]m/, 'status colors');
  const plain = await simulate(5, 50, { NO_COLOR: '1' }, true);
  assert.doesNotMatch(plain.live + plain.final, /\u001b\[[0-9;]*3[0-7]m/);
  assert.doesNotMatch(plain.live + plain.final, /\u001b\[[0-9;]*[12]m/, 'no bold/dim either');
  assert.match(plain.final, /^Hosts: 1 ok, 3 changed, 1 rolled-back$/m);
});

test('a terminal without a size (script(1), stdin at EOF): the live view runs and the run ends', async () => {
  const state = mkdtempSync(join(WORK, 'nosize-'));
  // script gives bin/runbook a pty with 0 columns and 0 rows; ora used to divide by that width and loop forever.
  const started = Date.now();
  const out = execFileSync(
    'timeout',
    [
      '-s',
      'KILL',
      '40',
      'script',
      '-qec',
      `stty cols 0 rows 0 2>/dev/null; ${ROOT}bin/runbook apply hello -i ${ROOT}inventory/local.yml --state-dir ${state}`,
      '/dev/null',
    ],
    { encoding: 'utf8', input: '', cwd: ROOT, env: { ...process.env, TERM: 'xterm-256color' } },
  );
  assert.ok(Date.now() - started < 30_000, 'ended promptly');
  assert.match(visible(out), /hello: ok \(exit 0\), 3 hosts/);
});

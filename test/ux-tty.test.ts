// tier: local
/**
 * The live view and final summary on a real terminal: a synthetic run of 1, 5 and 60 hosts rendered
 * inside tmux (fixed 80x24), read back with capture-pane. No line may overflow the width, finished
 * hosts collapse into counts, many hosts give a compact view, and the summary fits on one screen.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, existsSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from './harness/wait.js';

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

const visible = (s: string) => s.replace(/\u001b\[[0-9;:]*m/g, '');

let n = 0;
/**
 * Runs the simulation in a fresh tmux window; returns the screen mid-run (once it shows `live`: the first wave of
 * hosts in flight, e.g. /0\/5 done · 5 running/) and after the summary.
 */
async function simulate(
  hosts: number,
  forks: number,
  live: RegExp | ((screen: string) => boolean),
  env: Record<string, string> = {},
  escapes = false,
) {
  const dir = mkdtempSync(join(WORK, 'sim-'));
  const name = `s${n++}`;
  const envArgs = Object.entries(env)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  const cmd = `cd ${ROOT} && env -u NO_COLOR ${envArgs} TERM=xterm-256color node --import tsx test/fixtures/events/simulate.ts ${hosts} ${forks} ${dir}; echo __EXIT__$?; sleep 60`;
  tmux('new-session', '-d', '-s', name, '-x', String(COLS), '-y', String(ROWS), cmd);
  const capture = () => tmux('capture-pane', '-p', '-J', ...(escapes ? ['-e'] : []), '-t', name);
  let screen = '';
  const shows = (want: RegExp | ((screen: string) => boolean)) => () => {
    screen = capture();
    const v = visible(screen);
    return (typeof want === 'function' ? want(v) : want.test(v)) && screen;
  };
  try {
    await waitFor(() => existsSync(join(dir, 'paused')), { what: 'the simulation to pause with its first wave in flight' });
    // the renderer draws ~10 frames a second: the first one with every paused host in it
    const liveScreen = await waitFor(shows(live), { what: `the live view showing ${live}`, detail: () => `screen:\n${screen}` });
    writeFileSync(join(dir, 'go'), '');
    await waitFor(() => existsSync(join(dir, 'done')), { what: 'the simulation to finish' });
    const final = await waitFor(shows(/__EXIT__\d+/), {
      what: 'the summary and the exit code on the screen',
      detail: () => `screen:\n${screen}`,
    });
    return { live: liveScreen, final };
  } finally {
    tmux('kill-session', '-t', name);
  }
}

function assertFits(screen: string) {
  for (const line of screen.split('\n')) {
    assert.ok([...visible(line)].length <= COLS, `line overflows ${COLS} columns: ${JSON.stringify(line)}`);
  }
}
const nonBlank = (s: string) => s.split('\n').filter((l) => l.trim() !== '');
/** The 5-host live view with all five in flight (the last one's line drawn too). */
const FIVE_LIVE = /0\/5 done · 5 running[\s\S]*worker-05\S* +(step \d: |connecting)/;
const HOST = (i: number) => `worker-${String(i).padStart(2, '0')}.k8s.prod.example.com`;

test('1 host: one line for it in flight, then a summary on one screen', async () => {
  const { live, final } = await simulate(1, 50, /0\/1 done · 1 running .*\n.*step 1: /);
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
  const { live, final } = await simulate(5, 50, FIVE_LIVE);
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

/** Hosts counted in the compact view's step groups (`  12 × step 1: ...`). */
const grouped = (screen: string) =>
  nonBlank(screen)
    .slice(1)
    .reduce((sum, x) => sum + Number(/^ +(\d+) ×/.exec(x)?.[1] ?? 0), 0);

test('60 hosts on 24 rows: compact live view (counts per step), compact summary that fits the screen', async () => {
  // A capture can land between ora's clearing of the last frame and its drawing of the next one: wait for a whole frame.
  const wholeFrame = (s: string) => /0\/60 done · 50 running · 10 waiting/.test(s) && grouped(s) === 50;
  const { live, final } = await simulate(60, 50, wholeFrame);
  assertFits(live);
  assertFits(final);
  const l = nonBlank(live);
  assert.match(l[0], /0\/60 done · 50 running · 10 waiting/);
  assert.ok(l.length <= ROWS - 2, 'the live block fits');
  const groups = l.slice(1);
  assert.ok(groups.length >= 2 && groups.every((x) => /^ +\d+ × (step \d: |connecting)/.test(x)), `grouped by step:\n${groups.join('\n')}`);
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
  const colored = await simulate(5, 50, FIVE_LIVE, {}, true);
  assert.match(colored.final, /\u001b\[[0-9;]*3[1-3]m/, 'status colors');
  const plain = await simulate(5, 50, FIVE_LIVE, { NO_COLOR: '1' }, true);
  assert.doesNotMatch(plain.live + plain.final, /\u001b\[[0-9;]*3[0-7]m/);
  assert.doesNotMatch(plain.live + plain.final, /\u001b\[[0-9;]*[12]m/, 'no bold/dim either');
  assert.match(plain.final, /^Hosts: 1 ok, 3 changed, 1 rolled-back$/m);
});

test('a terminal without a size (script(1), stdin at EOF): the live view runs and the run ends', async () => {
  const state = mkdtempSync(join(WORK, 'nosize-'));
  // script gives bin/runbook a pty with 0 columns and 0 rows; ora used to divide by that width and loop forever.
  // `timeout` kills a hang (exit 137); how long the run takes on this machine is not asserted.
  const r = spawnSync(
    'timeout',
    [
      '-s',
      'KILL',
      '120',
      'script',
      '-qec',
      `stty cols 0 rows 0 2>/dev/null; ${ROOT}bin/runbook apply hello -i ${ROOT}inventory/local.yml --state-dir ${state}`,
      '/dev/null',
    ],
    { encoding: 'utf8', input: '', cwd: ROOT, env: { ...process.env, TERM: 'xterm-256color' } },
  );
  assert.notEqual(r.status, 137, `the run hung on a terminal without a size (killed after 120 s):\n${r.stdout}${r.stderr}`);
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  assert.match(visible(r.stdout), /hello: ok \(exit 0\), 3 hosts/);
});

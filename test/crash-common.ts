/**
 * Shared by the crash-safety fault tests: a runbook that repairs a fake service the way the
 * containerd runbook does (stop, move data aside, rebuild, start), a fleet of hosts (local
 * directories or real SSH hosts), the controller run through bin/runbook as a child process we
 * can SIGKILL, and a direct view of each host's state (never through our own output).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { dump } from 'js-yaml';
import { waitFor } from './harness/wait.js';

export const ROOT = resolve(new URL('..', import.meta.url).pathname);
export const BIN = join(ROOT, 'bin', 'runbook');

/** Steps: 0 stop, 1 aside, 2 rebuild (sleeps `nap`), 3 start (fails when fail_at == 3). */
export const RUNBOOK = `# Fault-test runbook: repairs a fake service like containerd-recover does.
name: crashy
vars:
  nap: 0
  rb_nap: 0
  pf_nap: 0
  fail_at: 99
  hold: no
preflight:
  - name: look
    run: test -d {{ dir }} && touch {{ dir }}.look && sleep {{ pf_nap }}
steps:
  - name: stop
    run: echo stopped > {{ dir }}/svc
    verify:
      run: grep -qx stopped {{ dir }}/svc
    rollback: echo running > {{ dir }}/svc
  - name: aside
    run: mv {{ dir }}/data {{ dir }}/data.bak
    verify:
      run: test -e {{ dir }}/data.bak && test ! -e {{ dir }}/data
    rollback: if [ -e {{ dir }}/data.bak ]; then mv -f {{ dir }}/data.bak {{ dir }}/data; fi
  - name: rebuild
    run: touch {{ dir }}.rebuild; sleep {{ nap }}; if [ {{ hold }} = yes ]; then i=0; while [ ! -e {{ dir }}.go ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done; fi; echo new > {{ dir }}/data.tmp && mv {{ dir }}/data.tmp {{ dir }}/data
    verify:
      run: grep -qx new {{ dir }}/data
    rollback: sleep {{ rb_nap }}; rm -f {{ dir }}/data {{ dir }}/data.tmp
  - name: start
    run: echo running > {{ dir }}/svc && test {{ fail_at }} != 3
    verify:
      run: grep -qx running {{ dir }}/svc
    rollback: echo stopped > {{ dir }}/svc
`;

/** What a host holds before the run, and after a successful one. */
export const START_STATE = 'data=old\nsvc=running\n';
export const END_STATE = 'data=new\ndata.bak=old\nsvc=running\n';
/** Script printing a host's state: each file in the dir, name=content, sorted. */
export const STATE_SCRIPT = (dir: string) =>
  `cd ${dir} && for f in $(ls -A | LC_ALL=C sort); do printf '%s=%s\\n' "$f" "$(cat "$f")"; done`;
export const RESET_SCRIPT = (dir: string) =>
  `rm -rf ${dir} ${dir}.* && mkdir -p ${dir} && echo old > ${dir}/data && echo running > ${dir}/svc`;

export interface TestFleet {
  kind: 'local' | 'ssh';
  names: string[];
  /** Writes an inventory with per-host extra vars; returns its path. */
  inventory(file: string, hostVars?: Record<string, Record<string, unknown>>): Promise<string>;
  /** Puts every host back to START_STATE and removes locks. */
  reset(): Promise<void>;
  /** A host's state, read directly (fs or nsenter), not through runbook. */
  state(name: string): Promise<string>;
  /** Run-lock file content on a host, or null. */
  lock(name: string): Promise<string | null>;
  /** Whether a step's command has started on a host: it touches `<dir>.<what>` first (look, rebuild, ...). */
  started(name: string, what: string): Promise<boolean>;
  /** Lets a held rebuild (host var hold: yes) go on: creates `<dir>.go` on the host. */
  release(name: string): Promise<void>;
  /** Extra CLI args for apply/resume/rollback (keys, known_hosts). */
  args: string[];
  stop(): Promise<void>;
}

export function tmp(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Hosts that are directories on this machine (`ansible_connection: local`), each with its own lock file. */
export function localFleet(n: number): TestFleet {
  const base = tmp('rb-crash-local-');
  const names = Array.from({ length: n }, (_, i) => `h${i + 1}`);
  const dirOf = (h: string) => join(base, 'hosts', h);
  const lockOf = (h: string) => join(base, 'locks', h, 'lock');
  mkdirSync(join(base, 'locks'), { recursive: true });
  const sh = async (cmd: string) => {
    const r = await runCapture('sh', ['-c', cmd]);
    if (r.code !== 0) throw new Error(`${cmd}: ${r.stderr}`);
    return r.stdout;
  };
  return {
    kind: 'local',
    names,
    args: [],
    async inventory(file, hostVars = {}) {
      const hosts: Record<string, unknown> = {};
      for (const h of names)
        hosts[h] = { ansible_connection: 'local', dir: dirOf(h), runbook_lock_path: lockOf(h), ...(hostVars[h] ?? {}) };
      writeFileSync(file, dump({ all: { hosts } }));
      return file;
    },
    async reset() {
      for (const h of names) await sh(`${RESET_SCRIPT(dirOf(h))}; rm -rf ${join(base, 'locks', h)}`);
    },
    async state(h) {
      return sh(STATE_SCRIPT(dirOf(h)));
    },
    async lock(h) {
      return existsSync(lockOf(h)) ? readFileSync(lockOf(h), 'utf8') : null;
    },
    async started(h, what) {
      return existsSync(`${dirOf(h)}.${what}`);
    },
    async release(h) {
      writeFileSync(`${dirOf(h)}.go`, '');
    },
    async stop() {},
  };
}

/** Real OpenSSH hosts from test/harness/sshd.ts; state read with nsenter (fleet.exec), not ssh. */
export async function sshFleet(n: number): Promise<TestFleet> {
  const { startSshHosts } = await import('./harness/sshd.js');
  const fleet = await startSshHosts(n);
  console.log(`ssh fleet mode: ${fleet.mode}`);
  const names = fleet.hosts.map((h) => h.name);
  // netns: each host has private /var/lib and /run; local mode: one machine, so per-host paths.
  const base = fleet.mode === 'netns' ? '/var/lib/rbcrash' : tmp('rb-crash-sshlocal-');
  const dirOf = (h: string) => (fleet.mode === 'netns' ? base : join(base, h));
  const lockOf = (h: string) => (fleet.mode === 'netns' ? '/run/runbook/lock' : join(base, `${h}.lock`));
  const sh = async (h: string, cmd: string) => {
    const r = await fleet.exec(h, cmd, { timeoutMs: 20_000 });
    if (r.code !== 0) throw new Error(`${h}: ${cmd}: ${r.stderr}`);
    return r.stdout;
  };
  return {
    kind: 'ssh',
    names,
    args: ['--known-hosts', fleet.knownHostsFile, '--private-key', fleet.clientKeyFile],
    async inventory(file, hostVars = {}) {
      const hv: Record<string, Record<string, unknown>> = {};
      for (const h of names) {
        hv[h] = { dir: dirOf(h), ...(fleet.mode === 'netns' ? {} : { runbook_lock_path: lockOf(h) }), ...(hostVars[h] ?? {}) };
      }
      await fleet.writeInventory(file, { hostVars: hv });
      return file;
    },
    async reset() {
      for (const h of names) await sh(h, `${RESET_SCRIPT(dirOf(h))}; rm -f ${lockOf(h)}`);
    },
    async state(h) {
      return sh(h, STATE_SCRIPT(dirOf(h)));
    },
    async lock(h) {
      const r = await fleet.exec(h, `cat ${lockOf(h)}`);
      return r.code === 0 ? r.stdout : null;
    },
    async started(h, what) {
      return (await fleet.exec(h, `test -e ${dirOf(h)}.${what}`)).code === 0;
    },
    async release(h) {
      await sh(h, `touch ${dirOf(h)}.go`);
    },
    async stop() {
      await fleet.stop();
    },
  };
}

export interface Captured {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

export function runCapture(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {},
): Promise<Captured> {
  return new Promise((res) => {
    const p = spawn(cmd, args, { cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '',
      stderr = '';
    p.stdout!.on('data', (d) => (stdout += d));
    p.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      res({ code, signal, stdout, stderr });
    });
  });
}

/** bin/runbook, waited for. */
export function runbook(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<Captured> {
  return runCapture(process.execPath, [BIN, ...args], opts);
}

/** bin/runbook started in the background, to be killed. */
export function startRunbook(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): { child: ChildProcess; done: Promise<Captured> } {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: opts.cwd ?? ROOT,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '',
    stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<Captured>((res) => child.on('close', (code, signal) => res({ code, signal, stdout, stderr })));
  return { child, done };
}

/** A journal line as the tests read it: any record, its fields looked at by name. */
// biome-ignore lint/suspicious/noExplicitAny: the tests read every record type's fields by name; decoding belongs to the product
export type JournalLine = Record<string, any>;

export function journalRecords(stateDir: string): JournalLine[] {
  const dir = join(stateDir, 'runs');
  if (!existsSync(dir)) return [];
  const files = readdirSync(dir).filter((f) => f.endsWith('.ndjson'));
  const out: JournalLine[] = [];
  for (const f of files) {
    for (const l of readFileSync(join(dir, f), 'utf8').split('\n')) {
      if (!l) continue;
      try {
        out.push(JSON.parse(l));
      } catch {
        /* torn */
      }
    }
  }
  return out;
}

export function onlyRunId(stateDir: string): string {
  const files = readdirSync(join(stateDir, 'runs')).filter((f) => f.endsWith('.ndjson'));
  if (files.length !== 1) throw new Error(`expected one journal in ${stateDir}, found ${files.join(', ')}`);
  return files[0].replace(/\.ndjson$/, '');
}

// ---------------------------------------------------------------------------------------------
// Scenarios, shared by the local and the SSH fleet

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

type Recs = JournalLine[];
/** When to kill the controller: a condition on the journal on disk and the hosts, and its name for a timeout. */
interface KillPoint {
  what: string;
  holds: (recs: Recs) => boolean | Promise<boolean>;
}
const has = (recs: Recs, p: (r: JournalLine) => boolean) => recs.some(p);
const stepStarted = (recs: Recs, host: string, index: number) =>
  has(recs, (r) => r.type === 'step-start' && r.host === host && r.phase === 'step' && r.index === index);
const stepEnded = (recs: Recs, host: string, index: number) =>
  has(recs, (r) => r.type === 'step-end' && r.host === host && r.phase === 'step' && r.index === index);

export function crashScenarios(label: string, makeFleet: () => Promise<TestFleet>): void {
  let fleet: TestFleet;
  let work: string;
  let rb: string;
  const H = ['h1', 'h2', 'h3'];
  const everyHost = async (p: (h: string) => Promise<boolean>) => {
    for (const h of H) if (!(await p(h))) return false;
    return true;
  };
  const limit = ['-l', H.join(',')];

  before(async () => {
    if (!existsSync(join(ROOT, 'dist', 'cli', 'main.js')))
      throw new Error('dist/ is missing: run `npx tsc -p tsconfig.json` (npm test does)');
    fleet = await makeFleet();
    work = tmp(`rb-crash-${label}-`);
    rb = join(work, 'crashy.yml');
    writeFileSync(rb, RUNBOOK);
  });
  after(async () => {
    await fleet?.stop();
  });

  const states = async (names = H) => Object.fromEntries(await Promise.all(names.map(async (h) => [h, await fleet.state(h)] as const)));
  const expectStates = async (want: Record<string, string>, why: string) => {
    assert.deepEqual(await states(Object.keys(want)), want, why);
  };
  const all = (s: string, names = H) => Object.fromEntries(names.map((h) => [h, s]));
  const noLocks = async (names = H) => {
    for (const h of names) assert.equal(await fleet.lock(h), null, `no run lock left on ${h}`);
  };

  async function setup(hostVars: Record<string, Record<string, unknown>>) {
    await fleet.reset();
    const stateDir = tmp(`rb-crash-state-${label}-`);
    const inv = await fleet.inventory(join(stateDir, 'inv.yml'), hostVars);
    const base = ['--state-dir', stateDir, ...fleet.args];
    return { stateDir, inv, base };
  }

  /** apply in the background, SIGKILL it as soon as `when` holds (journal on disk, commands seen running on the hosts). */
  async function applyAndKill(hostVars: Record<string, Record<string, unknown>>, when: KillPoint) {
    const s = await setup(hostVars);
    const { child, done } = startRunbook(['apply', rb, '-i', s.inv, ...limit, ...s.base]);
    let exited = false;
    void done.then(() => {
      exited = true;
    });
    await waitFor(
      async () => {
        if (exited) throw new Error(`the controller ended before ${when.what}`);
        return when.holds(journalRecords(s.stateDir));
      },
      { what: when.what },
    );
    child.kill('SIGKILL');
    const r = await done;
    assert.equal(r.signal, 'SIGKILL', `the controller was still running when killed (stderr: ${r.stderr})`);
    const runId = onlyRunId(s.stateDir);
    return { ...s, runId };
  }

  const resume = (s: { runId: string; base: string[] }, extra: string[] = []) => runbook(['resume', s.runId, ...s.base, ...extra]);
  const rollback = (s: { runId: string; base: string[] }) => runbook(['rollback', s.runId, '--yes', ...s.base]);

  test(`${label}: uninterrupted runs give the reference end states`, async () => {
    let s = await setup({});
    let r = await runbook(['apply', rb, '-i', s.inv, ...limit, ...s.base]);
    assert.equal(r.code, 0, r.stderr);
    await expectStates(all(END_STATE), 'every host repaired');
    await noLocks();
    s = await setup({ h3: { fail_at: 3 } });
    r = await runbook(['apply', rb, '-i', s.inv, ...limit, ...s.base]);
    assert.equal(r.code, 2, r.stderr);
    await expectStates({ h1: END_STATE, h2: END_STATE, h3: START_STATE }, 'h3 failed its last step and was rolled back');
    await noLocks();
  });

  // (a) killed before the first step: every host is in its preflight (which naps 3 s after it is seen running).
  const beforeFirstStep = { h1: { pf_nap: 3 }, h2: { pf_nap: 3 }, h3: { pf_nap: 3 } };
  const runStarted: KillPoint = {
    what: 'every host in its preflight',
    holds: async (recs) => has(recs, (r) => r.type === 'run-start') && (await everyHost((h) => fleet.started(h, 'look'))),
  };

  test(`${label}: kill -9 before the first step, then resume -> every host repaired`, async () => {
    const s = await applyAndKill(beforeFirstStep, runStarted);
    assert.ok(!has(journalRecords(s.stateDir), (r) => r.type === 'step-start' && r.phase === 'step'), 'no step had started');
    await expectStates(all(START_STATE), 'nothing changed before the kill');
    const runs = await runbook(['runs', '--json', '--state-dir', s.stateDir]);
    assert.equal(JSON.parse(runs.stdout.trim().split('\n')[0]).status, 'incomplete');
    const r = await resume(s);
    assert.equal(r.code, 0, r.stderr);
    await expectStates(all(END_STATE), 'resume finished the repair');
    await noLocks();
    const after = JSON.parse((await runbook(['runs', '--json', '--state-dir', s.stateDir])).stdout.trim().split('\n')[0]);
    assert.equal(after.status, 'ok');
  });

  test(`${label}: kill -9 before the first step, then rollback -> nothing to undo, start state`, async () => {
    const s = await applyAndKill(beforeFirstStep, runStarted);
    const r = await rollback(s);
    assert.equal(r.code, 0, r.stderr);
    await expectStates(all(START_STATE), 'start state');
    await noLocks();
  });

  // (b) killed between the intent and the outcome of a changing step (rebuild sleeps 2 s).
  const midStep = { h1: { nap: 2 }, h2: { nap: 2 }, h3: { nap: 2 } };
  const allInRebuild: KillPoint = {
    what: "every host's rebuild command running (intent durable, its marker on the host)",
    holds: async (recs) => H.every((h) => stepStarted(recs, h, 2)) && (await everyHost((h) => fleet.started(h, 'rebuild'))),
  };
  const MID_REBUILD_DONE = 'data=new\ndata.bak=old\nsvc=stopped\n';
  const rebuildFinished = () =>
    waitFor(() => everyHost(async (h) => (await fleet.state(h)) === MID_REBUILD_DONE), {
      what: 'the orphaned rebuild commands to finish on the hosts',
    });

  test(`${label}: kill -9 between intent and outcome of a changing step, torn last line, then resume -> same end state`, async () => {
    const s = await applyAndKill(midStep, allInRebuild);
    const recs = journalRecords(s.stateDir);
    for (const h of H) assert.ok(stepStarted(recs, h, 2) && !stepEnded(recs, h, 2), `${h}: intent of rebuild durable, no outcome`);
    // The commands of the dead controller run on to their end on the hosts (nobody kills them).
    await rebuildFinished();
    // A crash mid-append leaves a torn last line; it must be tolerated.
    const { appendFileSync } = await import('node:fs');
    appendFileSync(join(s.stateDir, 'runs', `${s.runId}.ndjson`), '{"type":"step-end","host":"h1","ind');
    const show = await runbook(['show-run', s.runId, '--state-dir', s.stateDir]);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /rebuild: STARTED, NO OUTCOME/);
    assert.match(show.stdout, /torn last line ignored/);
    const r = await resume(s);
    assert.equal(r.code, 0, r.stderr);
    await expectStates(all(END_STATE), 'resume settled the unknown step by its verify and finished');
    await noLocks();
    const recs2 = journalRecords(s.stateDir);
    for (const h of H) {
      const ends = recs2.filter((x) => x.type === 'step-end' && x.host === h && x.index === 2 && x.phase === 'step');
      assert.equal(ends.length, 1);
      assert.equal(ends[0].stage, 'verify', `${h}: the unknown step was settled by its verify, not run again`);
    }
  });

  test(`${label}: kill -9 between intent and outcome of a changing step, then rollback -> start state`, async () => {
    const s = await applyAndKill(midStep, allInRebuild);
    await rebuildFinished();
    const r = await rollback(s);
    assert.equal(r.code, 0, r.stderr);
    await expectStates(all(START_STATE), 'every host unwound, including the step whose outcome was unknown');
    await noLocks();
    // A second rollback has nothing left to do (already rolled back steps are skipped).
    const again = await rollback(s);
    assert.equal(again.code, 0, again.stderr);
    const recs = journalRecords(s.stateDir);
    const rbEnds = recs.filter((x) => x.type === 'rollback-end');
    assert.equal(rbEnds.length, 3 * 3, 'each host rolled back rebuild, aside and stop exactly once');
    await expectStates(all(START_STATE), 'still the start state');
  });

  if (label === 'local') {
    test(`${label}: the controller and its commands die together (power loss) -> resume settles the unknown step as not done and rolls that host back`, async () => {
      const s = await setup(midStep);
      const { child, done } = startRunbook(['apply', rb, '-i', s.inv, ...limit, ...s.base]);
      await waitFor(() => allInRebuild.holds(journalRecords(s.stateDir)), { what: allInRebuild.what });
      // The local transport runs each command in its own process group: kill those too.
      const groups = childGroups(child.pid!);
      assert.ok(groups.length >= 3, `the rebuild commands run (${groups.length} groups)`);
      child.kill('SIGKILL');
      for (const g of groups) {
        try {
          process.kill(-g, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await done;
      const runId = onlyRunId(s.stateDir);
      await expectStates(all('data.bak=old\nsvc=stopped\n'), 'half-repaired: stopped, data moved aside, rebuild never finished');
      const r = await resume({ runId, base: s.base });
      assert.equal(r.code, 2, r.stderr);
      await expectStates(
        all(START_STATE),
        'the unknown step had not taken effect (verify): each host unwound to its start, never left half-done',
      );
      const recs = journalRecords(s.stateDir);
      for (const h of H) assert.equal(recs.filter((x) => x.type === 'host-end' && x.host === h).pop()?.status, 'rolled-back');
      await noLocks();
    });
  }

  // (c) killed during a rollback: h3 fails its last step and unwinds; rebuild's rollback sleeps.
  const failing = { h3: { fail_at: 3, rb_nap: 2 } };
  // h1 and h2 are done on the hosts (their host-end may not be durable yet: resume settles that).
  const inRollback: KillPoint = {
    what: "h3's rollback of rebuild (intent durable), h1 and h2 repaired",
    holds: async (recs) =>
      has(recs, (r) => r.type === 'rollback-start' && r.host === 'h3' && r.index === 2) &&
      (await fleet.state('h1')) === END_STATE &&
      (await fleet.state('h2')) === END_STATE,
  };

  test(`${label}: kill -9 during a rollback, then resume -> same end state as uninterrupted`, async () => {
    const s = await applyAndKill(failing, inRollback);
    const r = await resume(s);
    assert.equal(r.code, 2, `same exit as the uninterrupted run (h3 failed, rolled back): ${r.stderr}`);
    await expectStates({ h1: END_STATE, h2: END_STATE, h3: START_STATE }, 'h3 finished its unwind; h1, h2 untouched');
    await noLocks();
  });

  test(`${label}: kill -9 during a rollback, then rollback -> start state everywhere`, async () => {
    const s = await applyAndKill(failing, inRollback);
    const r = await rollback(s);
    assert.equal(r.code, 0, r.stderr);
    await expectStates(all(START_STATE), 'all hosts back to the start');
    await noLocks();
  });

  test(`${label}: resume refuses a changed runbook unless --force`, async () => {
    const s = await applyAndKill(beforeFirstStep, runStarted);
    const original = readFileSync(rb, 'utf8');
    try {
      writeFileSync(rb, original.replace('# Fault-test runbook', '# Fault-test runbook (edited)'));
      const r = await resume(s);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /the runbook .*crashy\.yml changed since run .*pass --force/);
      await expectStates(all(START_STATE), 'nothing was contacted');
      const f = await resume(s, ['--force']);
      assert.equal(f.code, 0, f.stderr);
      await expectStates(all(END_STATE), 'forced resume ran');
    } finally {
      writeFileSync(rb, original);
    }
  });

  test(`${label}: two concurrent applies on overlapping hosts -> exactly one works on each host`, async () => {
    const five = ['h1', 'h2', 'h3', 'h4', 'h5'];
    await fleet.reset();
    // The run that takes h3 (the shared host) holds in its rebuild until the other run has been refused h3.
    const hv = Object.fromEntries(five.map((h) => [h, h === 'h3' ? { hold: 'yes' } : {}]));
    const dA = tmp('rb-conc-a-'),
      dB = tmp('rb-conc-b-');
    const inv = await fleet.inventory(join(dA, 'inv.yml'), hv);
    const A = startRunbook(['apply', rb, '-i', inv, '-l', 'h1,h2,h3', '--json', '--state-dir', dA, ...fleet.args]);
    const B = startRunbook(['apply', rb, '-i', inv, '-l', 'h3,h4,h5', '--json', '--state-dir', dB, ...fleet.args]);
    try {
      await waitFor(
        () => [dA, dB].some((d) => journalRecords(d).some((r) => r.type === 'host-end' && r.host === 'h3' && r.status === 'skipped')),
        { what: 'one of the two runs to be refused h3 (host-end skipped in its journal)' },
      );
    } finally {
      await fleet.release('h3');
    }
    const [ra, rb2] = await Promise.all([A.done, B.done]);
    const ev = (out: string) =>
      out
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l));
    const ea = ev(ra.stdout),
      eb = ev(rb2.stdout);
    const idA = ea.find((e) => e.type === 'run-start').run_id,
      idB = eb.find((e) => e.type === 'run-start').run_id;
    const h3a = ea.find((e) => e.type === 'host-end' && e.host === 'h3'),
      h3b = eb.find((e) => e.type === 'host-end' && e.host === 'h3');
    const worked = [h3a, h3b].filter((e) => e.status === 'changed');
    assert.equal(
      worked.length,
      1,
      `exactly one run worked on h3: A ${h3a.status} ${h3a.message ?? ''}, B ${h3b.status} ${h3b.message ?? ''}`,
    );
    const loser = h3a.status === 'changed' ? h3b : h3a;
    const winnerId = h3a.status === 'changed' ? idA : idB;
    assert.equal(loser.status, 'skipped');
    assert.match(loser.message, new RegExp(`h3 is locked by run ${winnerId} \\(crashy\\), controller \\S+ pid \\d+, since `));
    await expectStates(all(END_STATE, five), 'every host repaired exactly once (a second "aside" would have failed)');
    await noLocks(five);
  });
}

/** Process groups led by the direct children of a process (Linux /proc). */
export function childGroups(pid: number): number[] {
  const out = new Set<number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      // Only groups the child leads (the local transport's per-command groups): a child that inherited
      // the controller's group shares it with this test runner, which must not be killed.
      if (Number(f[1]) === pid && Number(f[2]) === Number(d)) out.add(Number(f[2]));
    } catch {
      /* exited */
    }
  }
  out.delete(pid);
  return [...out];
}

// tier: unit
/**
 * Host locks through a real POSIX shell on the real filesystem (a minimal Transport that runs
 * `sh -s` with the script on stdin, as the ssh/local transports do).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir, hostname } from 'node:os';
import { join } from 'node:path';
import type { Transport, ExecResult, ExecOptions } from '../src/transport/types.js';
import {
  acquireLock,
  releaseLock,
  breakLock,
  readLock,
  createHostLock,
  lockAccessFromHosts,
  DEFAULT_LOCK_PATH,
  lockPathForHost,
  type LockInfo,
} from '../src/engine/lock.js';
import { RunbookError } from '../src/core/errors.js';
import { waitFor } from './harness/wait.js';

function shTransport(host: string): Transport & { scripts: string[] } {
  const scripts: string[] = [];
  return {
    host,
    scripts,
    async connect() {},
    async reconnect() {},
    async close() {},
    async put() {
      throw new Error('unused');
    },
    async get() {
      throw new Error('unused');
    },
    exec(script: string, _o?: ExecOptions): Promise<ExecResult> {
      scripts.push(script);
      const t0 = Date.now();
      return new Promise((resolve) => {
        const p = spawn('sh', ['-s'], { stdio: ['pipe', 'pipe', 'pipe'] });
        let stdout = '',
          stderr = '';
        p.stdout.on('data', (d) => (stdout += d));
        p.stderr.on('data', (d) => (stderr += d));
        p.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, timedOut: false, durationMs: Date.now() - t0 }));
        p.stdin.end(script);
      });
    },
  };
}

const me = (run_id: string, pid = 4242): LockInfo => ({
  run_id,
  controller: 'ctl-1',
  pid,
  started: '2026-11-26T19:50:12Z',
  runbook: 'hello',
});
const dir = () => mkdtempSync(join(tmpdir(), 'rb-lock-'));

test('lock: acquire writes holder details atomically; a second run is refused with them', async () => {
  const path = join(dir(), 'run', 'runbook', 'lock');
  const t = shTransport('node1');
  assert.equal(await acquireLock(t, 'node1', me('R1'), { path }), 'acquired');
  const { session, ...held } = JSON.parse(readFileSync(path, 'utf8'));
  assert.deepEqual(held, me('R1'));
  assert.match(session, /^\d+:\d+:\d+$/, 'the host shell that took it: PGID:PID:STARTTICKS');
  await assert.rejects(acquireLock(t, 'node1', me('R2'), { path }), (e: unknown) => {
    assert.ok(e instanceof RunbookError);
    assert.equal(e.code, 'E_LOCKED');
    assert.match(e.message, /node1 is locked by run R1 \(hello\), controller ctl-1 pid 4242, since 2026-11-26T19:50:12Z/);
    assert.match(e.message, /runbook unlock node1 -i INVENTORY --run R1/);
    return true;
  });
  assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), { ...me('R1'), session }, 'the refused run left the lock alone');
  assert.deepEqual((await readLock(t, 'node1', { path }))!.holder, { ...me('R1'), session });
});

test('lock: the same run id (resume) takes the lock over; release removes only our own lock', async () => {
  const path = join(dir(), 'lock');
  const t = shTransport('n');
  await acquireLock(t, 'n', me('R1', 1), { path });
  assert.equal(await acquireLock(t, 'n', me('R1', 2), { path }), 'taken-over');
  assert.equal(JSON.parse(readFileSync(path, 'utf8')).pid, 2);
  assert.equal(await releaseLock(t, 'n', 'R2', { path }), false);
  assert.ok(existsSync(path), 'another run cannot release it');
  // A run id that is a prefix of the holder's does not match.
  assert.equal(await releaseLock(t, 'n', 'R', { path }), false);
  assert.equal(await releaseLock(t, 'n', 'R1', { path }), true);
  assert.equal(existsSync(path), false);
  assert.equal(await releaseLock(t, 'n', 'R1', { path }), false, 'releasing twice is harmless');
  assert.equal(await readLock(t, 'n', { path }), null);
});

test('lock: 16 runs racing for one host -> exactly one gets it, the others see that one', async () => {
  const path = join(dir(), 'lock');
  const results = await Promise.allSettled(
    Array.from({ length: 16 }, (_, i) => acquireLock(shTransport('n'), 'n', me(`RACE${i}`), { path })),
  );
  const won = results.map((r, i) => (r.status === 'fulfilled' ? i : -1)).filter((i) => i >= 0);
  assert.equal(won.length, 1);
  const holder = JSON.parse(readFileSync(path, 'utf8')).run_id;
  assert.equal(holder, `RACE${won[0]}`);
  for (const r of results) {
    if (r.status === 'rejected') {
      assert.equal((r.reason as RunbookError).code, 'E_LOCKED');
      assert.match((r.reason as Error).message, new RegExp(`locked by run ${holder} `));
    }
  }
});

test('lock: breakLock only with the holder run id; no lock -> E_NOT_LOCKED', async () => {
  const path = join(dir(), 'lock');
  const t = shTransport('n');
  await assert.rejects(breakLock(t, 'n', 'R1', { path }), (e: unknown) => (e as RunbookError).code === 'E_NOT_LOCKED');
  await acquireLock(t, 'n', me('R1'), { path });
  await assert.rejects(breakLock(t, 'n', 'R9', { path }), (e: unknown) => {
    assert.equal((e as RunbookError).code, 'E_LOCK_HOLDER_MISMATCH');
    assert.match((e as Error).message, /locked by run R1 .*not by run R9; nothing was removed/);
    return true;
  });
  assert.ok(existsSync(path));
  const { session: _, ...holder } = await breakLock(t, 'n', 'R1', { path });
  assert.deepEqual(holder, me('R1'));
  assert.equal(existsSync(path), false);
});

test('lock: a foreign file at the lock path is reported, never overwritten', async () => {
  const path = join(dir(), 'lock');
  writeFileSync(path, 'someone else\n');
  await assert.rejects(acquireLock(shTransport('n'), 'n', me('R1'), { path }), /n is locked by an unknown holder .*someone else/);
  assert.equal(readFileSync(path, 'utf8'), 'someone else\n');
  await assert.rejects(breakLock(shTransport('n'), 'n', 'R1', { path }), /unknown holder/);
});

test('lock: paths and values are quoted (no shell injection), unwritable lock dir -> E_LOCK', async () => {
  const d = dir();
  const path = join(d, "it's $(touch pwned) `x`", 'lock');
  const t = shTransport('n');
  await acquireLock(t, 'n', { ...me("R'1;touch pwned2"), runbook: '$(touch pwned3)' }, { path });
  assert.ok(existsSync(path));
  assert.equal(JSON.parse(readFileSync(path, 'utf8')).runbook, '$(touch pwned3)');
  for (const f of ['pwned', 'pwned2', 'pwned3']) assert.equal(existsSync(join(process.cwd(), f)), false);
  writeFileSync(join(d, 'file'), '');
  await assert.rejects(acquireLock(t, 'n', me('R1'), { path: join(d, 'file', 'lock') }), (e: unknown) => {
    assert.equal((e as RunbookError).code, 'E_LOCK');
    assert.match((e as Error).message, /cannot take the run lock on n: exit 11/);
    return true;
  });
});

test('createHostLock: the engine HostLock, per-host path from the runbook_lock_path host variable', async () => {
  const d = dir();
  const hosts = [
    { name: 'a', vars: { runbook_lock_path: join(d, 'a.lock') }, connection: { kind: 'ssh', become: false } },
    { name: 'b', vars: {}, connection: { kind: 'ssh', become: true } },
  ];
  const acc = lockAccessFromHosts(hosts, tmpdir());
  assert.equal(acc.pathFor('b'), DEFAULT_LOCK_PATH);
  assert.equal(acc.becomeFor('b'), true);
  const l1 = createHostLock({ runId: 'RUN1', runbook: 'hello', ...acc });
  assert.equal(l1.info.controller, hostname());
  assert.equal(l1.info.pid, process.pid);
  const t = shTransport('a');
  await l1.acquire(t, 'a');
  const l2 = createHostLock({ runId: 'RUN2', ...acc });
  await assert.rejects(l2.acquire(t, 'a'), /a is locked by run RUN1 \(hello\)/);
  await l2.release(t, 'a');
  assert.ok(existsSync(join(d, 'a.lock')));
  await l1.release(t, 'a');
  assert.equal(existsSync(join(d, 'a.lock')), false);
  await l2.acquire(t, 'a');
  await l2.release(t, 'a');
});

/** A detached `sh` (its own process group) with a child, as a dead controller's host shell mid-command. */
function deadRunShell(): { pid: number; session: string; alive: () => boolean } {
  const p = spawn('sh', ['-c', 'sleep 300 & sleep 300; wait'], { detached: true, stdio: 'ignore' });
  p.unref();
  const f = readFileSync(`/proc/${p.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  const alive = () => {
    try {
      process.kill(-p.pid!, 0);
      return true;
    } catch {
      return false;
    }
  };
  return { pid: p.pid!, session: `${f[2]}:${p.pid}:${f[19]}`, alive };
}

test("resume's lock take-over ends what the dead controller's host shell still runs, and only that", async (t) => {
  const path = join(dir(), 'lock');
  const acc = { pathFor: () => path, becomeFor: () => false };
  const sh = shTransport('n');
  const dead = deadRunShell();
  const other = deadRunShell();
  t.after(() => {
    for (const s of [dead, other]) if (s.alive()) process.kill(-s.pid, 'SIGKILL');
  });
  // a lock written by the dead run's shell: the same run id, another controller pid
  writeFileSync(path, `${JSON.stringify({ ...me('R1', 1), session: dead.session })}\n`);
  const note = await createHostLock({ runId: 'R1', runbook: 'hello', ...acc }).acquire(sh, 'n');
  assert.match(String(note), /^ended what the host shell of run R1's dead controller ctl-1 pid 1 \(process group \d+\) was still running$/);
  await waitFor(() => !dead.alive(), { what: "the dead run's shell and its command to be gone (zombies reaped)", timeoutMs: 10_000 });
  assert.match(JSON.parse(readFileSync(path, 'utf8')).session, /^\d+:\d+:\d+$/);

  // a shell that is gone, or a pid now used by another process (another start time or group): nothing is ended
  const [pg, pid, ticks] = other.session.split(':');
  for (const session of [`${pg}:${pid}:${Number(ticks) - 1}`, `${Number(pg) + 1}:${pid}:${ticks}`, dead.session]) {
    writeFileSync(path, `${JSON.stringify({ ...me('R1', 1), session })}\n`);
    assert.equal(await createHostLock({ runId: 'R1', ...acc }).acquire(sh, 'n'), undefined, session);
    assert.ok(other.alive(), `${session}: another process group is left alone`);
  }
  // another run's lock is never taken over, so nothing of it is ended
  writeFileSync(path, `${JSON.stringify({ ...me('R7', 1), session: other.session })}\n`);
  await assert.rejects(createHostLock({ runId: 'R1', ...acc }).acquire(sh, 'n'), /locked by run R7/);
  assert.ok(other.alive());
});

test('a local host name with "/" or ".." keeps its lock file in the temp dir (encoded), and apart from other names', () => {
  const tmp = '/tmp/x';
  const at = (name: string) => lockPathForHost({ name, vars: {}, connection: { kind: 'local' } }, tmp);
  for (const name of ['a/../../etc/evil', '../up', 'a/b', 'plain', 'a%2Fb']) {
    const p = at(name);
    assert.ok(p.startsWith(`${tmp}/runbook-lock-`) && !p.slice(tmp.length + 1).includes('/'), `${name} -> ${p}`);
  }
  assert.equal(at('plain'), '/tmp/x/runbook-lock-plain');
  assert.notEqual(at('a/b'), at('a%2Fb'));
  assert.equal(at('a/b'), '/tmp/x/runbook-lock-a%2Fb');
  assert.equal(lockPathForHost({ name: 'a/b', vars: {}, connection: { kind: 'ssh' } }, tmp), '/run/runbook/lock');
});

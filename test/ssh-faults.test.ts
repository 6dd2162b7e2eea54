// Transport-level fault tests against real sshd hosts (netns mode for link/netem faults).
// Faults are injected once the host shows the command running, never after a fixed delay; how long detection
// takes is printed, and bounded only by generous deadlines that say what they waited for (no hang), since a slow
// machine is not a bug.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSshHosts, type SshFleet, type SshHost } from './harness/sshd.js';
import { waitFor, within } from './harness/wait.js';
import { SshTransport, type SshOptions } from '../src/transport/ssh.js';
import type { ConnectionSpec } from '../src/inventory/types.js';
import { TransportError } from '../src/transport/types.js';
import { Limiter } from '../src/core/limiter.js';

let fleet: SshFleet;
let dir: string;
before(async () => {
  fleet = await startSshHosts(4);
  console.log(`# ssh fleet mode: ${fleet.mode}`);
  dir = mkdtempSync(join(tmpdir(), 'rb-faults-'));
});
after(async () => {
  await fleet?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function tr(h: SshHost, extra: Partial<ConnectionSpec> = {}, o: Partial<SshOptions> = {}): SshTransport {
  return new SshTransport(
    { kind: 'ssh', name: h.name, address: h.address, port: h.port, user: h.user, privateKeyFile: fleet.clientKeyFile, ...extra },
    {
      hostKeyChecking: 'strict',
      knownHostsFiles: [fleet.knownHostsFile],
      connectTimeoutMs: 20_000, // generous: only the test of the connect timeout sets a short one
      sshConfigFile: 'none',
      agent: false,
      keepaliveIntervalMs: 1000,
      keepaliveCountMax: 2,
      ...o,
    },
  );
}
async function rejection(p: Promise<unknown>): Promise<TransportError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof TransportError, `not a TransportError: ${e}`);
    return e;
  }
  assert.fail('expected a rejection');
}
/** sshd logs each accepted connection before its handshake: waits until `n` new ones since `before` are logged. */
function connectionsSince(f: SshFleet, h: SshHost, before: number, n: number): Promise<number> {
  return waitFor(() => f.connectionCount(h) - before >= n && f.connectionCount(h) - before, {
    what: `${n} new connection(s) in the sshd log of ${h.name}`,
    timeoutMs: 10_000,
  });
}
/** Waits until `sleep MARK` runs on the host (the command is in flight). `[s]leep`: pgrep must not match its own sh. */
function sleepRunningOn(h: SshHost, m: string): Promise<boolean> {
  return waitFor(async () => (await fleet.exec(h, `pgrep -f '[s]leep ${m}' >/dev/null`)).code === 0, {
    what: `\`sleep ${m}\` running on ${h.name}`,
  });
}
const mark = (): string => `${7000 + Math.floor(Math.random() * 1000)}.${process.pid % 1000}`;

test('wrong key -> E_AUTH, one connection (no retry storm)', async (t) => {
  const h = fleet.hosts[0];
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'wrong')]);
  const before = fleet.connectionCount(h);
  const t0 = Date.now();
  const e = await rejection(tr(h, { privateKeyFile: join(dir, 'wrong') }).connect());
  assert.equal(e.code, 'E_AUTH');
  assert.match(e.message, /authentication failed/);
  t.diagnostic(`refused after ${Date.now() - t0} ms`); // "fast" = no retries: the one connection below
  assert.equal(await connectionsSince(fleet, h, before, 1), 1);
});

test('wrong password -> E_AUTH, password not in the message', async (t) => {
  const h = fleet.hosts[0];
  const user = fleet.users.sudoUser ?? h.user;
  if (!fleet.users.sudoUser) t.diagnostic('local mode: password auth checked against the current user');
  const e = await rejection(tr(h, { user, privateKeyFile: join(dir, 'missing-key'), password: 'not-the-password' }).connect());
  assert.equal(e.code, 'E_AUTH');
  assert.equal(e.message.includes('not-the-password'), false);
  assert.match(e.message, /password/);
  if (fleet.users.password) {
    const ok = tr(h, { user, privateKeyFile: join(dir, 'missing-key'), password: fleet.users.password });
    assert.equal((await ok.exec('id -un')).stdout, `${user}\n`);
    await ok.close();
  }
});

test('never reachable -> E_UNREACHABLE; connect timeout honoured', async (t) => {
  // closed port on a reachable address: refused at once
  const h = fleet.hosts[0];
  const refused = await rejection(tr(h, { port: 1 }).connect());
  assert.equal(refused.code, 'E_UNREACHABLE');
  // a host whose link is down (netns) / an unroutable address: the connect timeout applies
  const t0 = Date.now();
  let target: SshTransport;
  if (fleet.mode === 'netns') {
    await fleet.linkDown(fleet.hosts[3]);
    target = tr(fleet.hosts[3], {}, { connectTimeoutMs: 1500 });
  } else {
    target = tr(h, { address: '192.0.2.254', port: 22 }, { connectTimeoutMs: 1500 });
  }
  try {
    const e = await rejection(target.connect());
    assert.equal(e.code, 'E_UNREACHABLE');
    const took = Date.now() - t0;
    t.diagnostic(`gave up after ${took} ms (connect timeout 1500 ms)`);
    // It waited for the timeout (a lower bound holds on any machine); how much later a loaded machine gives up is not a bug.
    assert.ok(took >= 1000, `gave up after ${took} ms, before the connect timeout`);
  } finally {
    if (fleet.mode === 'netns') await fleet.linkUp(fleet.hosts[3]);
  }
});

test('connections admitted one at a time: a queued one does not time out, a silent address gives its turn back', async () => {
  const handshakes = new Limiter(1);
  const o = { connectTimeoutMs: 1500, handshakes };
  // The only turn is held for longer than the connect timeout: the queued handshakes have not started, so they
  // do not time out. (A fixed wait on our side, to make the queue time longer than the timeout; nothing is polled.)
  let release!: () => void;
  const held = handshakes.run(() => new Promise<void>((r) => (release = r)));
  const live = [0, 1, 2].map((i) => tr(fleet.hosts[i], {}, o));
  const connects = live.map((x) => x.connect());
  await new Promise((r) => setTimeout(r, 2500));
  release();
  await held;
  await Promise.all(connects);
  await Promise.all(live.map((x) => x.close()));
  // A silent address: its TCP connect gives its turn back long before it times out, and the live hosts connect
  // meanwhile (its timeout is long enough for them on a slow machine).
  if (fleet.mode === 'netns') await fleet.linkDown(fleet.hosts[3]);
  const so = { connectTimeoutMs: 6000, handshakes };
  const silent = fleet.mode === 'netns' ? tr(fleet.hosts[3], {}, so) : tr(fleet.hosts[0], { address: '192.0.2.254', port: 22 }, so);
  try {
    const order: string[] = [];
    const again = [0, 1, 2].map((i) => tr(fleet.hosts[i], {}, o));
    await Promise.all([
      rejection(silent.connect()).then((e) => order.push(`silent ${e.code}: ${e.message}`)),
      ...again.map((x) => x.connect().then(() => order.push('live'))),
    ]);
    assert.deepEqual(order.slice(0, 3), ['live', 'live', 'live']);
    assert.match(
      order[3],
      /^silent E_UNREACHABLE: .*no SSH handshake within 6000 ms \(--connect-timeout\): the TCP connection did not open/,
    );
    await Promise.all(again.map((x) => x.close()));
  } finally {
    if (fleet.mode === 'netns') await fleet.linkUp(fleet.hosts[3]);
  }
});

test('sshd killed mid-exec -> E_CONN_LOST; reconnect() retries until sshd is back', async (tc) => {
  const h = fleet.hosts[1];
  const t = tr(h, {}, { reconnectBackoffMs: 200, reconnectAttempts: 12 }); // ~30 s of retries: enough for a slow restart
  await t.connect();
  const m = mark();
  const running = rejection(t.exec(`sleep ${m}`));
  await sleepRunningOn(h, m);
  const t0 = Date.now();
  await fleet.kill(h);
  const e = await within(running, { what: 'E_CONN_LOST after sshd was killed' });
  assert.equal(e.code, 'E_CONN_LOST');
  tc.diagnostic(`connection loss noticed after ${Date.now() - t0} ms`);
  // reconnect() starts while sshd is still down and must keep retrying until it is back
  const back = fleet.restart(h);
  await t.reconnect();
  await back;
  assert.equal((await t.exec('echo back')).stdout, 'back\n');
  await t.close();
});

test('link cut inside the namespace mid-exec -> E_CONN_LOST within keepalive limits, not a hang', async (t) => {
  if (fleet.mode !== 'netns') {
    t.diagnostic('needs netns mode (root)');
    return;
  }
  const h = fleet.hosts[2];
  const tt = tr(h); // keepalive 1 s x 2
  await tt.connect();
  const m = mark();
  const running = rejection(tt.exec(`sleep ${m}`)); // would run for hours: only the keepalive can end it
  await sleepRunningOn(h, m);
  const t0 = Date.now();
  await fleet.linkDown(h);
  try {
    const e = await within(running, { what: 'E_CONN_LOST from the keepalive (1 s x 2) after the link was cut' });
    assert.equal(e.code, 'E_CONN_LOST');
    t.diagnostic(`link cut detected after ${Date.now() - t0} ms`);
  } finally {
    await fleet.exec(h, `pkill -f '[s]leep ${m}' || true`);
    await fleet.linkUp(h);
    await tt.close();
  }
});

/** A TCP proxy on 127.0.0.1 delaying every chunk by `ms` in both directions (order kept). */
function delayProxy(host: string, port: number, ms: number): Promise<{ port: number; close(): void }> {
  return new Promise((resolve) => {
    const socks = new Set<Socket>();
    const srv = createServer((a) => {
      const b = connect(port, host);
      socks.add(a);
      socks.add(b);
      const pipeDelayed = (from: Socket, to: Socket): void => {
        from.on('data', (d) =>
          setTimeout(() => {
            if (!to.destroyed) to.write(d);
          }, ms),
        );
        from.on('end', () => setTimeout(() => to.end(), ms));
        from.on('error', () => to.destroy());
      };
      pipeDelayed(a, b);
      pipeDelayed(b, a);
    });
    srv.listen(0, '127.0.0.1', () =>
      resolve({
        port: (srv.address() as { port: number }).port,
        close: () => {
          for (const s of socks) s.destroy();
          srv.close();
        },
      }),
    );
  });
}

test('slow host (200 ms delay each way) still completes; output exact', async (t) => {
  const h = fleet.hosts[2];
  let tt: SshTransport;
  let cleanup: () => Promise<void>;
  const netem =
    fleet.mode === 'netns' &&
    (await fleet.setDelay(h, 200).then(
      () => true,
      (e) => {
        t.diagnostic(`netem unavailable (${String(e).slice(0, 80)}): using a delaying TCP proxy`);
        return false;
      },
    ));
  if (netem) {
    tt = tr(h);
    cleanup = async () => {
      await fleet.setDelay(h, null);
    };
  } else {
    const px = await delayProxy(h.address, h.port, 200);
    const kh = join(dir, 'kh-proxy');
    writeFileSync(kh, `[127.0.0.1]:${px.port} ${h.hostKeyPublic}\n`);
    tt = tr(h, { address: '127.0.0.1', port: px.port }, { knownHostsFiles: [kh] });
    cleanup = async () => {
      px.close();
    };
  }
  try {
    const t0 = Date.now();
    const r = await tt.exec('echo slow; exit 4');
    assert.equal(r.stdout, 'slow\n');
    assert.equal(r.code, 4);
    assert.ok(Date.now() - t0 >= 400, 'the delay was in effect');
    const r2 = await tt.exec('head -c 120000 /dev/zero | tr "\\0" a');
    assert.equal(r2.stdout, 'a'.repeat(120000), 'every byte (up to what a result keeps: capture.ts)');
  } finally {
    await tt.close();
    await cleanup();
  }
});

test('20 hosts x 10 execs: every result correct, exactly one TCP connection per host', async () => {
  const big = await startSshHosts(20, { prefix: 'rbf' });
  try {
    const ts = big.hosts.map(
      (h) =>
        new SshTransport(
          { kind: 'ssh', name: h.name, address: h.address, port: h.port, user: h.user, privateKeyFile: big.clientKeyFile },
          {
            hostKeyChecking: 'strict',
            knownHostsFiles: [big.knownHostsFile],
            connectTimeoutMs: 30_000, // 20 handshakes at once on a loaded machine
            sshConfigFile: 'none',
            agent: false,
          },
        ),
    );
    const before = big.hosts.map((h) => big.connectionCount(h));
    await Promise.all(
      ts.map(async (t, i) => {
        for (let s = 0; s < 10; s++) {
          const r = await t.exec(`echo "${big.hosts[i].name}-${s}"; exit ${s % 3}`);
          assert.equal(r.stdout, `${big.hosts[i].name}-${s}\n`);
          assert.equal(r.code, s % 3);
        }
      }),
    );
    await Promise.all(ts.map((t) => t.close()));
    for (const [i, h] of big.hosts.entries()) assert.equal(await connectionsSince(big, h, before[i], 1), 1, `${h.name} connections`);
  } finally {
    await big.stop();
  }
});

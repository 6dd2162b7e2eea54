// Transport-level fault tests against real sshd hosts (netns mode for link/netem faults).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSshHosts, type SshFleet, type SshHost } from './harness/sshd.js';
import { SshTransport, type SshOptions } from '../src/transport/ssh.js';
import type { ConnectionSpec } from '../src/inventory/types.js';
import { TransportError } from '../src/transport/types.js';

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
      connectTimeoutMs: 5000,
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

test('wrong key -> E_AUTH fast, one connection (no retry storm)', async () => {
  const h = fleet.hosts[0];
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'wrong')]);
  const before = fleet.connectionCount(h);
  const t0 = Date.now();
  const e = await rejection(tr(h, { privateKeyFile: join(dir, 'wrong') }).connect());
  assert.equal(e.code, 'E_AUTH');
  assert.match(e.message, /authentication failed/);
  assert.ok(Date.now() - t0 < 3000);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(fleet.connectionCount(h) - before, 1);
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

test('never reachable -> E_UNREACHABLE; connect timeout honoured', async () => {
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
    assert.ok(took >= 1000 && took < 4000, `took ${took} ms`);
  } finally {
    if (fleet.mode === 'netns') await fleet.linkUp(fleet.hosts[3]);
  }
});

test('sshd killed mid-exec -> E_CONN_LOST; reconnect() after restart works', async () => {
  const h = fleet.hosts[1];
  const t = tr(h, {}, { reconnectBackoffMs: 200 });
  await t.connect();
  const running = rejection(t.exec('sleep 20'));
  await new Promise((r) => setTimeout(r, 300));
  const t0 = Date.now();
  await fleet.kill(h);
  const e = await running;
  assert.equal(e.code, 'E_CONN_LOST');
  assert.ok(Date.now() - t0 < 5000);
  setTimeout(() => {
    void fleet.restart(h);
  }, 400);
  await t.reconnect();
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
  const running = rejection(tt.exec('sleep 30'));
  await new Promise((r) => setTimeout(r, 300));
  const t0 = Date.now();
  await fleet.linkDown(h);
  try {
    const e = await running;
    assert.equal(e.code, 'E_CONN_LOST');
    const took = Date.now() - t0;
    assert.ok(took < 6000, `detected after ${took} ms`);
  } finally {
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
    const r2 = await tt.exec('head -c 200000 /dev/zero | tr "\\0" a');
    assert.equal(r2.stdout.length, 200000);
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
            connectTimeoutMs: 10000,
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
    await new Promise((r) => setTimeout(r, 100));
    big.hosts.forEach((h, i) => assert.equal(big.connectionCount(h) - before[i], 1, `${h.name} connections`));
  } finally {
    await big.stop();
  }
});

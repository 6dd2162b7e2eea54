// End-to-end SSH fault tests through bin/runbook (the compiled CLI) against real OpenSSH hosts from the
// fleet harness: host keys, auth failures, sshd killed mid-step, link cut, connect timeout, become with a
// sudo password (no leaks), and 20 hosts x 10 steps over one connection per host.
// Every test checks the NDJSON stream, the exit code and the host's real state (fleet.exec, sshd logs).
// Faults are injected once the host shows the step running (its marker file exists), never after a fixed delay;
// durations are printed as diagnostics, never asserted against an upper bound (a slow machine is not a bug).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from 'js-yaml';
import { setTimeout as sleep } from 'node:timers/promises';
import { startSshHosts, TEST_USER, TEST_PASSWORD, type SshFleet, type SshHost } from './harness/sshd.js';
import { waitFor } from './harness/wait.js';
import {
  background,
  cleanEnv,
  fixture,
  hostEnd,
  journals,
  runbook,
  runEnd,
  stepEnd,
  tmp,
  waitWhileRunning,
  why,
  write,
  type CliEvent,
  type CliRun,
} from './fixtures/ssh/cli.js';

// hk: host keys, au: auth, kr: killed + restarted, kn: killed for good, lc: link cut mid-step, lp: link cut
// in preflight, ct: connect timeout, bc: become. Each test owns its hosts, so the tests run concurrently.
const NAMES = ['hk', 'au', 'kr', 'kn', 'lc', 'lp', 'ct', 'bc'];
let fleet: SshFleet;
let big: SshFleet | undefined;
let dir: string;
let env: NodeJS.ProcessEnv;
const netns = (): boolean => fleet.mode === 'netns';

before(async () => {
  fleet = await startSshHosts(NAMES.length, { names: NAMES, prefix: 'rbe' });
  console.log(`# ssh fleet mode: ${fleet.mode}`);
  dir = tmp();
  env = cleanEnv(join(dir, 'home'));
});
after(async () => {
  await Promise.all([fleet?.stop(), big?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Inventory with the given fleet hosts; `vars` override the connection variables per host. */
function inventory(name: string, hosts: SshHost[], vars: Record<string, Record<string, unknown>> = {}, f: SshFleet = fleet): string {
  const hs: Record<string, Record<string, unknown>> = {};
  for (const h of hosts) {
    hs[h.name] = {
      ansible_host: h.address,
      ansible_port: h.port,
      ansible_user: h.user,
      ansible_ssh_private_key_file: f.clientKeyFile,
      ...(vars[h.name] ?? {}),
    };
  }
  return write(join(dir, `${name}.yml`), dump({ all: { hosts: hs } }));
}

/** apply BOOK -i INV --json, isolated state dir per call unless given. */
function apply(
  book: string,
  inv: string,
  extra: string[],
  o: { state?: string; onEvent?: (e: CliEvent) => void; timeoutMs?: number; json?: boolean } = {},
): Promise<CliRun> {
  const state = o.state ?? tmp('rb-ssh-state-');
  return runbook(['apply', fixture(book), '-i', inv, ...(o.json === false ? [] : ['--json']), '--state-dir', state, ...extra], {
    env,
    onEvent: o.onEvent,
    timeoutMs: o.timeoutMs,
  });
}

/** True once `path` exists on the host (looked at from inside it, not through runbook). */
const existsOn = async (f: SshFleet, h: SshHost, path: string): Promise<boolean> => (await f.exec(h, `test -e ${path}`)).code === 0;

/**
 * sshd logs "Connection from" when it accepts, before the handshake; waits until `n` new ones are logged since
 * `before`, so an exact count compared afterwards cannot miss a connection still being logged.
 */
const connectionsSince = (f: SshFleet, h: SshHost, before: number, n: number): Promise<number> =>
  waitFor(() => f.connectionCount(h) - before >= n && f.connectionCount(h) - before, {
    what: `${n} new connection(s) in the sshd log of ${h.name}`,
    timeoutMs: 10_000,
    detail: () => f.logText(h).split('\n').slice(-10).join('\n'),
  });

describe('ssh end-to-end', { concurrency: true }, () => {
  test('host keys: unknown (strict) -> unreachable with the ssh-keyscan fix; changed -> louder, distinct; accept-new then strict; off warns in NDJSON and journal', async () => {
    const h = fleet.host('hk');
    const inv = inventory('hk', [h]);
    const otherKeyFile = join(dir, 'other_host_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', otherKeyFile]);
    const otherKey = readFileSync(`${otherKeyFile}.pub`, 'utf8').trim().split(' ').slice(0, 2).join(' ');
    const entryName = h.port === 22 ? h.address : `[${h.address}]:${h.port}`;
    const before = fleet.connectionCount(h);

    // unknown key, strict (the default: no --host-key-checking given)
    const emptyKh = write(join(dir, 'kh-empty'), '');
    const unknown = await apply('ssh-echo.yml', inv, ['--known-hosts', emptyKh]);
    assert.equal(unknown.code, 2, why(unknown));
    const ue = hostEnd(unknown, 'hk');
    assert.equal(ue.status, 'unreachable', why(unknown));
    const um = ue.message ?? '';
    assert.match(um, /\bhk\b/);
    assert.match(um, new RegExp(`ssh-keyscan -p ${h.port} -t ssh-ed25519 ${h.address.replace(/\./g, '\\.')} >> ${emptyKh}`));
    assert.match(um, /SHA256:/);
    assert.doesNotMatch(um, /CHANGED/i);
    assert.equal(readFileSync(emptyKh, 'utf8'), '', 'strict never writes known_hosts');
    assert.ok(!unknown.events.some((e) => e.type === 'step-start'), 'no step ran');

    // changed key: another key on file for this host
    const changedKh = write(join(dir, 'kh-changed'), `${entryName} ${otherKey}\n`);
    for (const policy of ['strict', 'accept-new']) {
      const changed = await apply('ssh-echo.yml', inv, ['--known-hosts', changedKh, '--host-key-checking', policy]);
      assert.equal(changed.code, 2, why(changed));
      const ce = hostEnd(changed, 'hk');
      assert.equal(ce.status, 'unreachable');
      const cm = ce.message ?? '';
      assert.match(cm, /WARNING: THE HOST KEY OF hk .* HAS CHANGED/);
      assert.match(cm, /man-in-the-middle/);
      assert.match(cm, new RegExp(`${changedKh}:1`));
      assert.doesNotMatch(cm, /not in known_hosts/);
      assert.notEqual(ce.message, ue.message);
    }
    assert.equal(readFileSync(changedKh, 'utf8'), `${entryName} ${otherKey}\n`, 'a changed key is never overwritten');

    // accept-new: the key is added, with a warning; then strict passes with that file
    const newKh = write(join(dir, 'kh-new'), '');
    const an = await apply('ssh-echo.yml', inv, ['--known-hosts', newKh, '--host-key-checking', 'accept-new']);
    assert.equal(an.code, 0, why(an));
    assert.ok(
      an.events.some((e) => e.type === 'warning' && e.host === 'hk' && /added the host key/.test(e.message ?? '')),
      why(an),
    );
    assert.equal(readFileSync(newKh, 'utf8'), `${entryName} ${h.hostKeyPublic}\n`);
    const strict = await apply('ssh-echo.yml', inv, ['--known-hosts', newKh]);
    assert.equal(strict.code, 0, why(strict));
    assert.equal(hostEnd(strict, 'hk').status, 'changed');
    assert.ok(!strict.events.some((e) => e.type === 'warning'), why(strict));

    // off: runs, warns in the NDJSON and in the journal
    const state = tmp('rb-ssh-state-');
    const off = await apply('ssh-echo.yml', inv, ['--known-hosts', write(join(dir, 'kh-off'), ''), '--host-key-checking', 'off'], {
      state,
    });
    assert.equal(off.code, 0, why(off));
    const w = off.events.find((e) => e.type === 'warning');
    assert.ok(w, why(off));
    assert.equal(w.host, 'hk');
    assert.match(w.message ?? '', /host key checking is off: the identity of hk .*NOT verified/);
    const js = journals(state);
    assert.equal(js.length, 1);
    const recs = js[0]
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.ok(
      recs.some((r) => r.type === 'warning' && r.host === 'hk' && /host key checking is off/.test(r.message)),
      js[0],
    );
    // 2 refused + 3 successful runs + the changed-key runs: one TCP connection each, nothing more
    assert.equal(await connectionsSince(fleet, h, before, 6), 6);
  });

  test('wrong key / wrong password -> unreachable with an auth message, exit 2, one connection each (no retry storm)', async (t) => {
    const h = fleet.host('au');
    const wrongKey = join(dir, 'wrong_client_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', wrongKey]);
    const cases: Array<[string, Record<string, unknown>]> = [['key', { ansible_ssh_private_key_file: wrongKey }]];
    const badPassword = `not-${TEST_PASSWORD}`;
    if (fleet.users.sudoUser) {
      cases.push([
        'password',
        { ansible_user: TEST_USER, ansible_ssh_private_key_file: join(dir, 'no-such-key'), ansible_password: badPassword },
      ]);
    }
    for (const [what, vars] of cases) {
      const before = fleet.connectionCount(h);
      const r = await apply('ssh-echo.yml', inventory(`au-${what}`, [h], { au: vars }), ['--known-hosts', fleet.knownHostsFile]);
      assert.equal(r.code, 2, why(r));
      const e = hostEnd(r, 'au');
      assert.equal(e.status, 'unreachable');
      assert.match(e.message ?? '', /authentication failed for au/);
      assert.match(e.message ?? '', what === 'key' ? /tried: publickey\)/ : /tried: password\b/);
      // Not timed (a slow machine is not a bug): "fast" is the single connection below, i.e. no retries.
      t.diagnostic(`${what}: refused after ${runEnd(r).duration_ms} ms`);
      assert.ok(!r.stdout.includes(badPassword) && !r.stderr.includes(badPassword), 'the password is not echoed');
      assert.equal(
        await connectionsSince(fleet, h, before, 1),
        1,
        `${what}: no retry storm: ${fleet.logText(h).split('\n').slice(-10).join('\n')}`,
      );
    }
  });

  test('sshd killed mid-step, back shortly: step unknown, reconnect, rollbacks run, host rolled-back, exit 2', async (t) => {
    const h = fleet.host('kr');
    const d = '/var/lib/rbt';
    const run = background(apply('ssh-nap.yml', inventory('kr', [h]), ['--known-hosts', fleet.knownHostsFile, '-e', `dir=${d}`]));
    await waitWhileRunning(run, () => existsOn(fleet, h, `${d}/two`), { what: 'step two running on kr (its marker file)' });
    await fleet.kill(h);
    const killedAt = Date.now();
    await sleep(1000); // down for a moment: the engine's reconnect retries (backoff up to ~12 s) must bridge it
    await fleet.restart(h);
    const r = await run.done;
    assert.equal(r.code, 2, why(r));
    const two = stepEnd(r, 'two');
    assert.equal(two.status, 'unknown', why(r));
    assert.match(two.message ?? '', /lost/);
    assert.deepEqual(
      r.events.filter((e) => e.type === 'rollback-end').map((e) => [e.step, e.status]),
      [
        ['two', 'ok'],
        ['one', 'ok'],
      ],
      why(r),
    );
    const end = hostEnd(r, 'kr');
    assert.equal(end.status, 'rolled-back');
    assert.equal(end.failed_step, 'two');
    assert.ok(!r.events.some((e) => e.type === 'step-start' && e.step === 'three'));
    t.diagnostic(`killed -> run end: ${Date.parse(runEnd(r).time) - killedAt} ms`);
    const state = await fleet.exec(h, `ls -A ${d}`);
    assert.equal(state.stdout, '', 'rollbacks removed every marker');
  });

  test('sshd killed mid-step for good: needs-attention with the rollback command, exit 3', async (t) => {
    const h = fleet.host('kn');
    const d = '/var/lib/rbt';
    const run = background(apply('ssh-nap.yml', inventory('kn', [h]), ['--known-hosts', fleet.knownHostsFile, '-e', `dir=${d}`]));
    await waitWhileRunning(run, () => existsOn(fleet, h, `${d}/two`), { what: 'step two running on kn (its marker file)' });
    await fleet.kill(h);
    const killedAt = Date.now();
    const r = await run.done;
    assert.equal(r.code, 3, why(r));
    const two = stepEnd(r, 'two');
    assert.equal(two.status, 'unknown');
    const end = hostEnd(r, 'kn');
    assert.equal(end.status, 'needs-attention', why(r));
    assert.match(end.message ?? '', /could not reconnect/);
    assert.match(end.message ?? '', new RegExp(`runbook rollback ${runEnd(r).run_id}`));
    assert.ok(!r.events.some((e) => e.type === 'rollback-start'), 'no rollback could run');
    assert.equal(runEnd(r).status, 'needs-attention');
    // The reconnect is bounded by its retry count, not a clock: a hang would end in apply()'s kill (no exit 3).
    t.diagnostic(`killed -> needs-attention after ${Date.parse(runEnd(r).time) - killedAt} ms`);
    // the host keeps what the run did (the state a human must look at)
    await fleet.restart(h);
    assert.equal((await fleet.exec(h, `ls -A ${d} | sort | tr '\\n' ' '`)).stdout, 'one two ');
  });

  test('link cut mid-step: detected by keepalive (no hang), needs-attention, exit 3', async (t) => {
    if (!netns()) {
      t.diagnostic('link control needs netns mode (root)');
      return;
    }
    const h = fleet.host('lc');
    let lostAt = 0;
    // The step would sleep 30 s and the dead link never answers: only the keepalive (5 s x 2) can end the step.
    // Each reconnect attempt then waits --connect-timeout on the dead link (6 attempts + backoff).
    const run = background(
      apply(
        'ssh-nap.yml',
        inventory('lc', [h]),
        ['--known-hosts', fleet.knownHostsFile, '-e', 'dir=/var/lib/rbt', '--connect-timeout', '5s'],
        {
          onEvent: (e) => {
            if (e.type === 'step-end' && e.step === 'two') lostAt = Date.now();
          },
          timeoutMs: 180_000,
        },
      ),
    );
    let cutAt = 0;
    try {
      await waitWhileRunning(run, () => existsOn(fleet, h, '/var/lib/rbt/two'), { what: 'step two running on lc (its marker file)' });
      await fleet.linkDown(h);
      cutAt = Date.now();
      const r = await run.done;
      assert.equal(r.code, 3, why(r));
      const two = stepEnd(r, 'two');
      assert.equal(two.status, 'unknown');
      assert.match(two.message ?? '', /lost/);
      t.diagnostic(`link cut detected after ${lostAt - cutAt} ms; run ended ${Date.parse(runEnd(r).time) - cutAt} ms after the cut`);
      // keepalive 5 s x 2 unanswered: the loss cannot be noticed before ~10 s (an early "lost" is not the keepalive)
      assert.ok(lostAt - cutAt >= 5_000, `detected after ${lostAt - cutAt} ms`);
      assert.equal(hostEnd(r, 'lc').status, 'needs-attention', why(r));
    } finally {
      await fleet.linkUp(h);
      await run.done;
    }
    // the host really still has what the run did: one and two
    assert.equal((await fleet.exec(h, "ls -A /var/lib/rbt | sort | tr '\\n' ' '")).stdout, 'one two ');
  });

  test('link cut during preflight (before any change): detected, host unreachable, nothing changed, exit 2', async (t) => {
    if (!netns()) {
      t.diagnostic('link control needs netns mode (root)');
      return;
    }
    const h = fleet.host('lp');
    const run = background(
      apply('ssh-preflight-nap.yml', inventory('lp', [h]), [
        '--known-hosts',
        fleet.knownHostsFile,
        '-e',
        'dir=/var/lib/rbt',
        '--connect-timeout',
        '5s',
      ]),
    );
    try {
      // the preflight's `sleep 30` is running on the host
      await waitWhileRunning(run, async () => (await fleet.exec(h, 'pgrep -x sleep')).stdout.trim() !== '', {
        what: "the preflight's sleep running on lp",
      });
      await fleet.linkDown(h);
      const cutAt = Date.now();
      const r = await run.done;
      assert.equal(r.code, 2, why(r));
      const end = hostEnd(r, 'lp');
      assert.equal(end.status, 'unreachable', why(r));
      assert.match(end.message ?? '', /lost/);
      const took = Date.parse(end.time) - cutAt;
      t.diagnostic(`link cut in preflight: unreachable after ${took} ms`);
      assert.ok(took >= 5_000, `noticed after ${took} ms: before the keepalive could have`);
      assert.ok(!r.events.some((e) => e.type === 'step-start' && e.phase === 'step'), 'no step started');
    } finally {
      await fleet.linkUp(h);
      await run.done;
    }
    assert.equal((await fleet.exec(h, 'ls -A /var/lib/rbt 2>&1')).code, 2, 'nothing was created');
  });

  test('--connect-timeout 2s against a host that does not answer: unreachable in about 2 s, exit 2', async (t) => {
    const h = fleet.host('ct');
    let inv: string;
    if (netns()) {
      await fleet.linkDown(h);
      inv = inventory('ct', [h]);
    } else {
      t.diagnostic('local mode: an unrouted TEST-NET address stands in for a cut link');
      inv = inventory('ct', [h], { ct: { ansible_host: '192.0.2.254', ansible_port: 22 } });
    }
    try {
      const r = await apply('ssh-echo.yml', inv, ['--known-hosts', fleet.knownHostsFile, '--connect-timeout', '2s']);
      assert.equal(r.code, 2, why(r));
      const e = hostEnd(r, 'ct');
      assert.equal(e.status, 'unreachable');
      assert.match(e.message ?? '', /no SSH handshake within 2000 ms \(--connect-timeout\)/);
      // host-end duration: from the start of the connect to giving up. It waited the timeout out (a lower bound
      // holds on any machine); how much longer a loaded machine takes is not asserted.
      const d = e.duration_ms ?? 0;
      t.diagnostic(`unreachable after ${d} ms (run ${runEnd(r).duration_ms} ms, process ${r.ms} ms)`);
      assert.ok(d >= 1900, `gave up after ${d} ms, before the 2 s timeout`);
    } finally {
      if (netns()) await fleet.linkUp(h);
    }
  });

  test('become with a sudo password: runs as root; the password is nowhere (NDJSON, plain output, journal, ps on the host)', async (t) => {
    if (!fleet.users.sudoUser) {
      t.diagnostic('needs netns mode (users with sudo)');
      return;
    }
    const h = fleet.host('bc');
    const inv = inventory('bc', [h], { bc: { ansible_user: TEST_USER, ansible_become: true, ansible_become_password: TEST_PASSWORD } });
    const state = tmp('rb-ssh-state-');
    // The nap step blocks on a gate the test controls: it creates GATE/in, then waits (bounded) for GATE/go.
    const gate = '/tmp/rb-become-gate';
    await fleet.exec(h, `rm -rf ${gate}`);
    const run = background(apply('ssh-become.yml', inv, ['--known-hosts', fleet.knownHostsFile, '-e', `gate=${gate}`], { state }));
    let ps: string;
    try {
      await waitWhileRunning(run, () => existsOn(fleet, h, `${gate}/in`), { what: 'the nap step running on bc (GATE/in)' });
      ps = (await fleet.exec(h, 'ps -eo user,args')).stdout;
    } finally {
      await fleet.exec(h, `touch ${gate}/go`);
    }
    const r = await run.done;
    assert.equal(r.code, 0, why(r));
    const who = stepEnd(r, 'whoami');
    assert.equal(who.status, 'changed', why(r));
    assert.equal(who.stdout, 'root 600\n');
    assert.equal((await fleet.exec(h, 'stat -c "%U %a" /root/become-id; cat /root/become-id')).stdout, 'root 600\n0\n');
    // ps, sampled while the step ran, saw the step's gate wait run as root through sudo, and no secret
    assert.match(ps, /^root +sh -c until .* rb-gate /m, `the step's process, as root, in ps:\n${ps}`);
    assert.match(ps, /sudo -H -S -p/, 'the command ran through sudo');
    // a second run, plain output (not a TTY), verbose
    const plain = await apply('ssh-become.yml', inv, ['--known-hosts', fleet.knownHostsFile, '-e', `gate=${gate}`, '--verbose'], {
      state,
      json: false,
    });
    assert.equal(plain.code, 0, why(plain));
    assert.match(plain.stdout + plain.stderr, /bc/);
    const js = journals(state);
    assert.equal(js.length, 2);
    const pieces = [TEST_PASSWORD, ...TEST_PASSWORD.split(/\s+/).filter((p) => p.length >= 4)];
    for (const [where, text] of [
      ['NDJSON', r.stdout + r.stderr],
      ['plain output', plain.stdout + plain.stderr],
      ['journal', js.join('\n')],
      ['ps', ps],
    ] as const) {
      for (const p of pieces) assert.ok(!text.includes(p), `${where} contains ${JSON.stringify(p)}`);
    }
  });

  test('20 hosts x 10 steps in one run: every step output and exit code right, one TCP connection per host', async (t) => {
    big = await startSshHosts(20, { prefix: 'rbm' });
    const inv = inventory('big', big.hosts, {}, big);
    const before = big.hosts.map((h) => big!.connectionCount(h));
    const r = await apply('ssh-many.yml', inv, ['--known-hosts', big.knownHostsFile], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, why(r));
    t.diagnostic(`20 x 10 run: ${runEnd(r).duration_ms} ms`);
    for (const h of big.hosts) {
      const n = h.name;
      const ends = r.events.filter((e) => e.type === 'step-end' && e.host === n);
      assert.deepEqual(
        ends.map((e) => e.step),
        ['s0', 's1', 's2', 's3', 's4', 's5', 's6', 's7', 's8', 's9'],
        n,
      );
      for (const e of ends) {
        const i = Number(e.step?.slice(1));
        if (i === 4) {
          assert.deepEqual([e.status, e.stage, e.code], ['skipped', 'when', 3], n);
          continue;
        }
        if (i === 6) {
          assert.deepEqual([e.status, e.stage, e.code], ['ok', 'unless', 0], n);
          continue;
        }
        assert.equal(e.status, 'changed', `${n} ${e.step}`);
        assert.equal(e.code, 0);
        if (i === 9) {
          assert.equal(e.stdout, `last ${n}-0 ${n}-8\n`);
          continue;
        }
        assert.equal(e.stdout, `${n}-${i}\n`, `${n} ${e.step}`);
        assert.equal(e.stderr, `err-${i}\n`, `${n} ${e.step}`);
      }
      assert.equal(hostEnd(r, n).status, 'changed');
    }
    for (const [i, h] of big.hosts.entries()) assert.equal(await connectionsSince(big, h, before[i], 1), 1, `${h.name}: TCP connections`);
    await big.stop();
    big = undefined;
  });
});

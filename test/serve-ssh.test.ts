/**
 * `runbook serve` end to end on real sshd hosts (network namespaces, each with its own /var/lib and
 * /run): webhooks posted as Alertmanager posts them, runs started as ordinary `runbook apply`
 * children, the host's own attempt record and lock, the audit journal and /metrics read back.
 * (The whole loop with real Prometheus, Alertmanager and node_exporter on containerd nodes is
 * serve-loop.test.ts.)
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSshHosts, type SshFleet } from './harness/sshd.js';
import { BIN, payload, type Serve, startServe, TOKEN, writeToken } from './harness/serve.js';
import { waitFor } from './harness/wait.js';

const NAMES = ['s1', 's2', 's3'];
let fleet: SshFleet;
let dir: string;
const serves: Serve[] = [];

before(async () => {
  fleet = await startSshHosts(NAMES.length, { names: NAMES, prefix: 'rbsv' });
  dir = mkdtempSync(join(tmpdir(), 'rb-serve-'));
  writeToken(dir);
});
after(async () => {
  for (const s of serves) await s.stop();
  for (const s of serves) assert.ok(!alive(s.child.pid!), `serve pid ${s.child.pid} is gone`);
  await fleet?.stop();
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A remediation runbook of its own name (the on-host attempt record is per runbook name). */
function book(name: string, o: { destructive?: boolean } = {}): string {
  const f = join(dir, `${name}.yml`);
  writeFileSync(
    f,
    `name: ${name}
description: serve test remediation
destructive: ${o.destructive ?? false}
steps:
  # The "repair": a started marker per run, then the time it takes; undone on rollback.
  - name: repair
    run: mkdir -p /var/lib/rbtest && touch /var/lib/rbtest/${name}-started-{{ run_id }} && sleep {{ nap }}
    rollback: rm -f /var/lib/rbtest/${name}-started-{{ run_id }}
    timeout: 300s
  # Its proof, a second step (an interrupted run stops before it and rolls back).
  - name: fixed
    run: touch /var/lib/rbtest/${name}-fixed-{{ run_id }}
    rollback: rm -f /var/lib/rbtest/${name}-fixed-{{ run_id }}
`,
  );
  return f;
}

/** Marker files of one runbook on a host. */
function markers(host: string, name: string): { started: string[]; fixed: string[] } {
  const d = fleet.hostPath(host, '/var/lib/rbtest');
  const all = existsSync(d) ? readdirSync(d) : [];
  return { started: all.filter((f) => f.startsWith(`${name}-started-`)), fixed: all.filter((f) => f.startsWith(`${name}-fixed-`)) };
}

function attempts(host: string, name: string): string[] {
  const f = fleet.hostPath(host, `/var/lib/runbook/attempts/${name}.log`);
  return existsSync(f) ? readFileSync(f, 'utf8').split('\n').filter(Boolean) : [];
}

interface Cfg {
  name: string;
  naps?: Record<string, number>;
  route?: string;
  brake?: string;
  extra?: string;
}

/** serve.yml + inventory for one scenario; returns the config path and its audit file. */
async function config(c: Cfg, tag = ''): Promise<{ file: string; audit: string }> {
  const inv = join(dir, `${c.name}${tag}-inv.yml`);
  await fleet.writeInventory(inv, {
    vars: { nap: 0 },
    hostVars: Object.fromEntries(Object.entries(c.naps ?? {}).map(([h, n]) => [h, { nap: n }])),
  });
  const audit = join(dir, `${c.name}${tag}-audit.ndjson`);
  const file = join(dir, `${c.name}${tag}-serve.yml`);
  writeFileSync(
    file,
    `listen: 127.0.0.1:0
inventory: ${inv}
state_dir: ${join(dir, 'state')}
audit: ${audit}
known_hosts: ${fleet.knownHostsFile}
auth: { bearer_token_file: ${join(dir, 'token')} }
${c.extra ?? ''}routes:
  - alert: Broken
    runbook: ${join(dir, `${c.name}.yml`)}
    host_label: host
${c.route ?? '    cooldown: 30m\n    max_attempts: { count: 2, within: 24h }\n'}brake:
${c.brake ?? '  max_concurrent: 4\n  max_per_hour: 100\n  max_unhealthy: 100%\n'}`,
  );
  return { file, audit };
}

async function serve(c: { file: string; audit: string }): Promise<Serve> {
  const s = await startServe(c.file, { auditFile: c.audit });
  serves.push(s);
  return s;
}

const ENDS = new Set(['run_ended', 'locked', 'cooldown', 'max_attempts']);
/** Waits for the audit record that ends the n-th run (1-based) this replica started for `host`. */
async function runEnd(s: Serve, host: string, n = 1) {
  return waitFor(
    () => {
      const recs = s.audit().filter((r) => r.host === host && r.run_id && ENDS.has(r.decision));
      return recs[n - 1];
    },
    { what: `the end of run ${n} on ${host} in the audit`, timeoutMs: 120_000, detail: () => s.stderr().slice(-3000) },
  );
}

describe('runbook serve on sshd hosts', () => {
  test('two replicas, the same alert delivered to both at once: one repair, recorded once on the host', async () => {
    book('twice');
    const a = await serve(await config({ name: 'twice', naps: { s1: 2 } }, '-a'));
    const b = await serve(await config({ name: 'twice', naps: { s1: 2 } }, '-b'));
    const body = payload([{ name: 'Broken', host: 's1' }]);
    const [ra, rb] = await Promise.all([a.post(body), b.post(body)]);
    assert.equal(ra.code, 200, ra.body);
    assert.equal(rb.code, 200, rb.body);
    const [ea, eb] = await Promise.all([runEnd(a, 's1'), runEnd(b, 's1')]);
    const ends = [ea, eb].map((e) => `${e.decision}:${e.status}`).sort();
    assert.equal(ends.filter((e) => e === 'run_ended:changed').length, 1, `one repair: ${ends.join(', ')}`);
    const other = [ea, eb].find((e) => e.decision !== 'run_ended')!;
    assert.ok(['locked', 'cooldown'].includes(other.decision), `the other replica was refused by the host: ${JSON.stringify(other)}`);
    assert.match(other.reason ?? '', other.decision === 'locked' ? /s1 is locked by run / : /cooldown: twice last started on this host/);
    assert.equal(markers('s1', 'twice').fixed.length, 1, 'repaired once');
    assert.equal(attempts('s1', 'twice').length, 1, `one attempt on the host's record: ${attempts('s1', 'twice')}`);
    // Ordinary runs: `runbook runs` shows both (one changed the host, one was refused there).
    const runs = spawnSync(BIN, ['runs', '--json', '--state-dir', join(dir, 'state')], { encoding: 'utf8' });
    for (const e of [ea, eb]) assert.ok(runs.stdout.includes(e.run_id!), `runbook runs lists ${e.run_id}: ${runs.stdout.slice(0, 500)}`);
    // Every record carries the alert: fingerprint and labels.
    for (const r of [...a.audit(), ...b.audit()]) {
      assert.equal(r.fingerprint, 'fp-Broken-s1');
      assert.deepEqual(r.labels, { alertname: 'Broken', host: 's1' });
    }
    await Promise.all([a.stop(), b.stop()]);
  });

  test('cooldown and attempts: repeats within the cooldown are recorded, not run; past max_attempts the host is left for a human', async () => {
    book('budget');
    // 10 s: long enough that a run on a slow, busy machine still ends within it (the cooldown counts from the start).
    const route = '    cooldown: 10s\n    max_attempts: { count: 2, within: 1h }\n';
    const c = await config({ name: 'budget', route });
    const s = await serve(c);
    const body = payload([{ name: 'Broken', host: 's2' }]);
    const decide = async () => {
      const r = await s.post(body);
      assert.equal(r.code, 200, r.body);
      return (JSON.parse(r.body) as { decisions: Array<{ decision: string }> }).decisions[0].decision;
    };
    assert.equal(await decide(), 'run_started');
    assert.equal((await runEnd(s, 's2', 1)).status, 'changed');
    assert.equal(await decide(), 'cooldown', 'a repeat at once is within the cooldown');
    // Past the cooldown (10 s: a wait on the clock itself, the state the product is asked about), a second run.
    // The host's own record of the start is the later one (the serve decided before the run connected): once that
    // cooldown is over (whole seconds, as the host counts), the serve's is too.
    const hostCooldownOver = () => {
      const last = Math.max(...attempts('s2', 'budget').map((l) => Number(l.split(' ')[0])));
      return Date.now() / 1000 - last >= 11;
    };
    const what = "the host's cooldown (10 s from its attempt record) to pass";
    await waitFor(hostCooldownOver, { what, timeoutMs: 60_000, intervalMs: 250 });
    await waitFor(async () => (await decide()) === 'run_started', { what: 'the cooldown to end (a second run_started)', intervalMs: 250 });
    assert.equal((await runEnd(s, 's2', 2)).status, 'changed');
    await waitFor(hostCooldownOver, { what, timeoutMs: 60_000, intervalMs: 250 });
    await waitFor(async () => (await decide()) === 'run_started', { what: 'the cooldown to end again', intervalMs: 250 });
    const third = await runEnd(s, 's2', 3);
    assert.equal(third.decision, 'max_attempts', JSON.stringify(third));
    assert.match(third.reason ?? '', /max attempts: budget started 2 times on this host within 1h .*left for a human/);
    assert.equal(markers('s2', 'budget').fixed.length, 2, 'two repairs, not three');
    assert.equal(attempts('s2', 'budget').length, 2);
    // Known now: no connection for a repeat, and the host is exposed as needing a human.
    const started = s.audit().filter((r) => r.decision === 'run_started').length;
    assert.equal(await decide(), 'max_attempts');
    assert.equal(s.audit().filter((r) => r.decision === 'run_started').length, started, 'no new run');
    assert.deepEqual(
      (await s.metric('runbook_serve_needs_attention')).map((m) => [m.labels.host, m.value]),
      [['s2', 1]],
    );
    // A replica that knows nothing asks the host, which still says no.
    const fresh = await serve(await config({ name: 'budget', route }, '-fresh'));
    assert.equal(
      (JSON.parse((await fresh.post(body)).body) as { decisions: Array<{ decision: string }> }).decisions[0].decision,
      'run_started',
    );
    assert.equal((await runEnd(fresh, 's2', 1)).decision, 'max_attempts');
    assert.equal(markers('s2', 'budget').fixed.length, 2);
    // Resolved: the alert is gone, and with it the needs-attention series.
    await s.post(payload([{ name: 'Broken', host: 's2', status: 'resolved' }]));
    assert.deepEqual(await s.metric('runbook_serve_needs_attention'), []);
    assert.ok(s.audit().some((r) => r.decision === 'resolved' && r.host === 's2'));
    const dec = await s.metric('runbook_serve_decisions_total');
    const count = (d: string) => dec.find((m) => m.labels.decision === d && m.labels.route === 'Broken')?.value;
    assert.equal(count('cooldown'), s.audit().filter((r) => r.decision === 'cooldown').length);
    assert.equal(count('run_started'), started);
    await Promise.all([s.stop(), fresh.stop()]);
  });

  test('the brake: too many hosts firing holds everything; a full slot queues; SIGHUP reloads, and a bad config is refused', async () => {
    book('brake');
    const cfg = (brake: string) => config({ name: 'brake', naps: { s1: 8 }, brake });
    const c = await cfg('  max_concurrent: 1\n  max_per_hour: 10\n  max_unhealthy: 50%\n');
    const s = await serve(c);
    // Three of three hosts firing, max 50%: nothing runs, the brake is audited and exposed.
    const all = await s.post(payload(NAMES.map((h) => ({ name: 'Broken', host: h }))));
    assert.equal(all.code, 200, all.body);
    assert.deepEqual(
      s.audit().map((r) => `${r.decision}:${r.host}`),
      NAMES.map((h) => `brake_unhealthy:${h}`),
    );
    assert.match(s.audit()[0].reason ?? '', /3 of 3 hosts of route Broken are firing, above max_unhealthy 50%/);
    const engaged = await s.metric('runbook_serve_brake_engaged');
    assert.equal(engaged.find((m) => m.labels.brake === 'unhealthy')?.value, 1);
    for (const h of NAMES) assert.deepEqual(markers(h, 'brake').started, [], `nothing ran on ${h}`);
    // One resolves: 2 of 3 is still above 50%. A second resolves: 1 of 3 is not, and s1 runs.
    await s.post(payload([{ name: 'Broken', host: 's3', status: 'resolved' }]));
    assert.equal(s.audit().filter((r) => r.decision === 'run_started').length, 0);
    await s.post(payload([{ name: 'Broken', host: 's2', status: 'resolved' }]));
    await waitFor(() => s.audit().find((r) => r.decision === 'run_started' && r.host === 's1'), {
      what: 'run_started for s1 once the brake releases',
    });
    // SIGHUP: max_unhealthy 100%, max_concurrent 1. While s1 runs (8 s), s2 firing again is queued, and
    // starts once s1 ends.
    await cfg('  max_concurrent: 1\n  max_per_hour: 10\n  max_unhealthy: 100%\n');
    s.child.kill('SIGHUP');
    await waitFor(() => /SIGHUP: .* reloaded/.test(s.stderr()), { what: 'the reload log line' });
    const q = await s.post(
      payload([
        { name: 'Broken', host: 's1' },
        { name: 'Broken', host: 's2' },
      ]),
    );
    assert.deepEqual(
      (JSON.parse(q.body) as { decisions: Array<{ decision: string; host: string }> }).decisions.map((d) => `${d.decision}:${d.host}`),
      ['in_flight:s1', 'queued:s2'],
    );
    assert.equal((await runEnd(s, 's1')).status, 'changed');
    assert.equal((await runEnd(s, 's2')).status, 'changed');
    const order = s.audit().filter((r) => r.host === 's2' && ['queued', 'run_started'].includes(r.decision));
    assert.deepEqual(
      order.map((r) => r.decision),
      ['queued', 'run_started'],
    );
    // SIGHUP with max_per_hour 2 (two runs started already): s3 is held by the hourly budget.
    await cfg('  max_concurrent: 1\n  max_per_hour: 2\n  max_unhealthy: 100%\n');
    s.child.kill('SIGHUP');
    await waitFor(() => (s.stderr().match(/SIGHUP: .* reloaded/g) ?? []).length === 2, { what: 'the second reload log line' });
    const r3 = await s.post(payload([{ name: 'Broken', host: 's3' }]));
    assert.match(r3.body, /"decision":"brake_rate"/);
    // An invalid config is refused with its problems, and the running one kept.
    writeFileSync(c.file, `${readFileSync(c.file, 'utf8')}bogus_key: 1\n`);
    s.child.kill('SIGHUP');
    await waitFor(() => /SIGHUP: .* refused, the running config is kept:\n.*unknown key "bogus_key"/.test(s.stderr()), {
      what: 'the refusal of the bad config',
      detail: () => s.stderr().slice(-1500),
    });
    assert.match((await s.post(payload([{ name: 'Broken', host: 's3' }]))).body, /"decision":"brake_rate"/);
    const reloads = await s.metric('runbook_serve_config_reloads_total');
    assert.deepEqual(reloads.map((m) => `${m.labels.result}=${m.value}`).sort(), ['ok=2', 'refused=1']);
    assert.equal(markers('s3', 'brake').started.length, 0);
    await s.stop();
  });

  test('a destructive runbook runs only where its route says unattended: true; otherwise approval_needed', async () => {
    book('wipe', { destructive: true });
    const held = await serve(await config({ name: 'wipe' }, '-held'));
    const r = await held.post(payload([{ name: 'Broken', host: 's3' }]));
    assert.match(r.body, /"decision":"approval_needed"/);
    assert.match(held.stderr(), /wipe is destructive and the route does not say unattended: true/);
    assert.deepEqual(
      (await held.metric('runbook_serve_approval_needed')).map((m) => m.labels.host),
      ['s3'],
    );
    assert.deepEqual(markers('s3', 'wipe').started, []);
    await held.stop();
    const ok = await serve(await config({ name: 'wipe', route: '    unattended: true\n' }, '-ok'));
    await ok.post(payload([{ name: 'Broken', host: 's3' }]));
    assert.equal((await runEnd(ok, 's3')).status, 'changed');
    await ok.stop();
  });

  test('SIGTERM lets the run in flight finish and exits 0; a second SIGTERM rolls it back after the command in flight', async () => {
    book('term');
    for (const twice of [false, true]) {
      const c = await config({ name: 'term', naps: { s1: 15 }, route: '    cooldown: 1s\n' }, twice ? '-2' : '-1');
      const s = await serve(c);
      const before = markers('s1', 'term').started.length;
      await s.post(payload([{ name: 'Broken', host: 's1' }]));
      await waitFor(() => markers('s1', 'term').started.length > before, {
        what: 'the step to start on s1',
        timeoutMs: 120_000,
        detail: () => s.stderr().slice(-2000),
      });
      s.child.kill('SIGTERM');
      await waitFor(() => /stopping: no new alert is accepted/.test(s.stderr()), { what: 'the stop log line' });
      // No new alert is accepted while the run finishes.
      const late = await s.post(payload([{ name: 'Broken', host: 's2' }])).catch((e: Error) => ({ code: 0, body: e.message }));
      assert.ok(late.code === 503 || late.code === 0, `refused while stopping: ${late.code} ${late.body}`);
      if (twice) s.child.kill('SIGTERM');
      const exit = await s.exited;
      assert.deepEqual(exit, { code: 0, signal: null }, s.stderr().slice(-2000));
      const end = s.audit().find((r) => r.decision === 'run_ended' && r.host === 's1')!;
      assert.ok(end, 'the run end is audited before serve exits');
      assert.equal(end.status, twice ? 'rolled-back' : 'changed');
      const m = markers('s1', 'term');
      if (twice) assert.equal(m.started.length, before, 'rolled back: no marker of that run left');
      else assert.ok(m.fixed.length >= 1, 'finished');
      assert.deepEqual(markers('s2', 'term').started, [], 'nothing started after SIGTERM');
    }
  });

  test('abuse: 2,000 posts in about 20 s (valid, invalid, oversize, wrong token, wrong path): no crash, bounded memory, one run', async () => {
    book('abuse');
    const c = await config({ name: 'abuse', extra: 'max_body: 64KiB\n' });
    const s = await serve(c);
    const valid = JSON.stringify(payload([{ name: 'Broken', host: 's1' }]));
    const big = JSON.stringify(
      payload(Array.from({ length: 800 }, (_, i) => ({ name: 'Broken', host: 's1', labels: { pad: `${i}`.padEnd(100, 'x') } }))),
    );
    assert.ok(big.length > 64 * 1024);
    const kinds: Array<{ kind: string; want: number; send: () => Promise<{ code: number; body: string }> }> = [
      { kind: 'valid', want: 200, send: () => s.post(undefined, { raw: valid }) },
      { kind: 'not json', want: 400, send: () => s.post(undefined, { raw: '{"version": "4", "alerts": [' }) },
      { kind: 'not a payload', want: 400, send: () => s.post({ version: '3', alerts: 'x' }) },
      { kind: 'oversize', want: 413, send: () => s.post(undefined, { raw: big }) },
      { kind: 'wrong token', want: 401, send: () => s.post(undefined, { raw: valid, token: `${TOKEN}x` }) },
      {
        kind: 'no token',
        want: 401,
        send: () =>
          fetch(`${s.url}/alertmanager`, { method: 'POST', body: valid }).then(async (r) => ({ code: r.status, body: await r.text() })),
      },
      {
        kind: 'wrong path',
        want: 404,
        send: () => fetch(`${s.url}/x`, { method: 'POST', body: valid }).then(async (r) => ({ code: r.status, body: await r.text() })),
      },
      { kind: 'wrong method', want: 405, send: () => s.get('/alertmanager') },
      { kind: 'unknown host', want: 422, send: () => s.post(payload([{ name: 'Broken', host: 'nope' }])) },
      { kind: 'text body', want: 415, send: () => s.post(undefined, { raw: valid, contentType: 'text/plain' }) },
    ];
    const got = new Map<string, Map<number, number>>();
    const t0 = Date.now();
    const N = 2000;
    let sent = 0;
    // Paced: 100 posts a second, 10 in flight at a time.
    const worker = async () => {
      for (;;) {
        const i = sent++;
        if (i >= N) return;
        const due = t0 + i * 10;
        if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
        const k = kinds[i % kinds.length];
        const r = await k.send().catch((e: Error) => ({ code: -1, body: e.message }));
        const m = got.get(k.kind) ?? new Map<number, number>();
        m.set(r.code, (m.get(r.code) ?? 0) + 1);
        got.set(k.kind, m);
      }
    };
    await Promise.all(Array.from({ length: 10 }, worker));
    const seconds = (Date.now() - t0) / 1000;
    for (const k of kinds)
      assert.deepEqual([...(got.get(k.kind) ?? [])], [[k.want, N / kinds.length]], `${k.kind}: every answer ${k.want}`);
    assert.equal(s.child.exitCode, null, 'serve is still running');
    const status = readFileSync(`/proc/${s.child.pid}/status`, 'utf8');
    const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) / 1024;
    const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
    console.log(`# abuse: ${N} posts in ${seconds.toFixed(1)} s; serve peak RSS ${hwm.toFixed(0)} MB, now ${rss.toFixed(0)} MB`);
    assert.ok(hwm < 200, `serve's peak RSS ${hwm.toFixed(0)} MB stays under 200 MB`);
    // One run for the 200 valid posts (cooldown 30m), none for anything else.
    await runEnd(s, 's1');
    const audit = s.audit();
    assert.equal(audit.filter((r) => r.decision === 'run_started').length, 1);
    assert.equal(audit.filter((r) => r.decision === 'unknown_host').length, N / kinds.length);
    assert.equal(
      audit.filter((r) => r.host === 's1' && r.decision !== 'run_ended').length,
      N / kinds.length,
      'one decision per valid post',
    );
    assert.equal(markers('s1', 'abuse').fixed.length, 1);
    // The log is bounded too: 20 lines a minute per refused code, the rest counted.
    const refused = s
      .stderr()
      .split('\n')
      .filter((l) => l.includes(' refused: ')).length;
    assert.ok(refused <= 7 * 20 * Math.ceil(seconds / 60 + 1), `refused requests logged at a bounded rate (${refused} lines)`);
    const req = await s.metric('runbook_serve_requests_total');
    assert.equal(req.find((m) => m.labels.code === '401')?.value, (2 * N) / kinds.length);
    await s.stop();
  });

  test('apply --cooldown / --max-attempts from the command line; bad values are refused before anything runs', async () => {
    book('cli');
    const inv = join(dir, 'cli-inv.yml');
    await fleet.writeInventory(inv, { only: ['s3'], vars: { nap: 0 } });
    const apply = (...extra: string[]) =>
      spawnSync(
        BIN,
        [
          'apply',
          join(dir, 'cli.yml'),
          '-i',
          inv,
          '--known-hosts',
          fleet.knownHostsFile,
          '--state-dir',
          join(dir, 'state'),
          '--json',
          ...extra,
        ],
        {
          encoding: 'utf8',
        },
      );
    for (const [opt, v] of [
      ['--cooldown', 'soon'],
      ['--max-attempts', '2'],
      ['--max-attempts', '0/1h'],
    ]) {
      const r = apply(opt, v);
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`^runbook: ${opt} "${v.replace('/', '\\/')}" is not `));
    }
    assert.deepEqual(markers('s3', 'cli').started, [], 'nothing ran');
    assert.equal(apply('--cooldown', '1h').status, 0);
    const again = apply('--cooldown', '1h');
    assert.equal(again.status, 2);
    const end = again.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { type: string; code?: string; message?: string; status?: string })
      .find((e) => e.type === 'host-end')!;
    assert.equal(end.status, 'skipped');
    assert.equal(end.code, 'E_COOLDOWN');
    assert.match(
      end.message ?? '',
      /^cooldown: cli last started on this host \d+s ago \(run \S+\), within its cooldown of 1h; not run again$/,
    );
    assert.equal(markers('s3', 'cli').fixed.length, 1);
  });
});

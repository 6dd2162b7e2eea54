// tier: unit
/**
 * serve.yml validation (every problem at once, with file, path and line; secrets checked for mode)
 * and the policy's decisions on a fake clock (pure: no listener, no run).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ValidationError } from '../src/core/errors.js';
import { loadServeConfig } from '../src/serve/config.js';
import { sign, signatureOk } from '../src/serve/http.js';
import { parseMatcher, matches } from '../src/serve/matchers.js';
import { Policy } from '../src/serve/policy.js';

function workdir(): string {
  const d = mkdtempSync(join(tmpdir(), 'rb-serve-cfg-'));
  writeFileSync(
    join(d, 'inv.yml'),
    'all:\n  hosts:\n    n1: { ansible_connection: local }\n    n2: { ansible_connection: local }\n    n3: { ansible_connection: local }\n    n4: { ansible_connection: local }\n',
  );
  writeFileSync(join(d, 'fix.yml'), 'name: fix\ndescription: d\nsteps:\n  - name: s\n    run: "true"\n');
  writeFileSync(join(d, 'token'), 'a'.repeat(40), { mode: 0o600 });
  writeFileSync(join(d, 'open-token'), 'b'.repeat(40), { mode: 0o644 });
  return d;
}

const GOOD = `listen: 127.0.0.1:9469
inventory: inv.yml
auth: { bearer_token_file: token }
routes:
  - alert: Broken
    runbook: ./fix.yml
    host_label: instance
    host_regex: '([^:]+)(?::\\d+)?'
    cooldown: 30m
    max_attempts: { count: 2, within: 24h }
brake:
  max_concurrent: 1
  max_per_hour: 10
  max_unhealthy: 50%
`;

test('a good serve.yml loads with its defaults and resolved paths', () => {
  const d = workdir();
  writeFileSync(join(d, 'serve.yml'), GOOD);
  const c = loadServeConfig(join(d, 'serve.yml'));
  assert.deepEqual(c.listen, { host: '127.0.0.1', port: 9469 });
  assert.equal(c.routes[0].name, 'Broken');
  assert.deepEqual(c.routes[0].hosts, ['n1', 'n2', 'n3', 'n4']);
  assert.equal(c.routes[0].cooldownMs, 30 * 60_000);
  assert.deepEqual(c.routes[0].maxAttempts, { count: 2, withinMs: 24 * 3_600_000 });
  assert.equal(c.brake.maxUnhealthy, 0.5);
  assert.equal(c.maxBodyBytes, 1 << 20);
  assert.equal(c.auth.bearer?.toString(), 'a'.repeat(40));
});

test('a bad serve.yml: every problem at once, each with file, path and line', () => {
  const d = workdir();
  writeFileSync(
    join(d, 'serve.yml'),
    `listen: localhost
inventory: inv.yml
auth: { bearer_token_file: open-token, hmac_secret_file: missing }
routes:
  - alert: Broken
    runbook: ./nope.yml
    host_label: instance
    host_regex: '([a-z'
    cooldown: soon
    matchers: ['severity=="x"']
  - alert: Broken
    runbook: ./fix.yml
    host_label: instance
    hosts: 'zz*'
brake:
  max_unhealthy: 130
`,
  );
  let err: ValidationError | undefined;
  try {
    loadServeConfig(join(d, 'serve.yml'));
  } catch (e) {
    err = e as ValidationError;
  }
  assert.ok(err instanceof ValidationError, String(err));
  const text = err.message;
  // zod refuses the brake's type first; fix it and see the rest.
  assert.match(text, /serve\.yml:16:\d+ brake\.max_unhealthy: expected string/);
  writeFileSync(
    join(d, 'serve.yml'),
    readBack(d).replace('max_unhealthy: 130', 'max_unhealthy: 130%').replace('routes:', 'routez: 1\nroutes:'),
  );
  let err2: ValidationError | undefined;
  try {
    loadServeConfig(join(d, 'serve.yml'));
  } catch (e) {
    err2 = e as ValidationError;
  }
  assert.match(err2!.message, /serve\.yml:4:1 routez: unknown key "routez"; did you mean "routes"\?/);
  writeFileSync(join(d, 'serve.yml'), readBack(d).replace('routez: 1\n', ''));
  let err3: ValidationError | undefined;
  try {
    loadServeConfig(join(d, 'serve.yml'));
  } catch (e) {
    err3 = e as ValidationError;
  }
  const lines = err3!.message.split('\n');
  const want = [
    /serve\.yml:1:9 listen: "localhost" is not HOST:PORT/,
    /serve\.yml:3:\d+ auth\.bearer_token_file: .*open-token is readable by others \(mode 644\); chmod 600 it$/,
    /serve\.yml:3:\d+ auth\.hmac_secret_file: cannot read .*missing: ENOENT$/,
    /serve\.yml:6:\d+ routes\[0\]\.runbook: /,
    /serve\.yml:8:\d+ routes\[0\]\.host_regex: not a regular expression/,
    /serve\.yml:9:\d+ routes\[0\]\.cooldown: "soon" is not a duration/,
    /serve\.yml:10:\d+ routes\[0\]\.matchers\[0\]: "severity=="x"" is not a matcher/,
    /serve\.yml:11:\d+ routes\[1\]\.alert: a second route named "Broken"; give each route its own name:$/,
    /serve\.yml:14:\d+ routes\[1\]\.hosts: /,
    /serve\.yml:16:\d+ brake\.max_unhealthy: "130%" is not a percentage/,
  ];
  for (const re of want)
    assert.ok(
      lines.some((l) => re.test(l)),
      `${re} in:\n${err3!.message}`,
    );
  assert.equal(lines.length, want.length, err3!.message);
});

function readBack(d: string): string {
  return readFileSync(join(d, 'serve.yml'), 'utf8');
}

test('matchers as Alertmanager writes them; HMAC signatures are bound to the body and to the time', () => {
  const m = ['severity="critical"', 'cluster=~"prod-.*"', 'team!="x"'].map((s) => parseMatcher(s));
  for (const x of m) assert.notEqual(typeof x, 'string');
  const ms = m as Exclude<(typeof m)[number], string>[];
  assert.equal(matches(ms, { severity: 'critical', cluster: 'prod-eu' }), true);
  assert.equal(matches(ms, { severity: 'critical', cluster: 'xprod-eu' }), false, 'regexes are anchored');
  assert.equal(matches(ms, { severity: 'critical', cluster: 'prod-eu', team: 'x' }), false);
  const secret = Buffer.from('s'.repeat(32));
  const req = (h: string) => ({ headers: { 'x-runbook-signature': h } }) as never;
  const now = 1_800_000_000;
  assert.equal(signatureOk(req(sign(secret, 'body', now)), Buffer.from('body'), { hmac: secret }, now), true);
  assert.equal(signatureOk(req(sign(secret, 'body', now)), Buffer.from('bodx'), { hmac: secret }, now), false);
  assert.equal(signatureOk(req(sign(secret, 'body', now - 301)), Buffer.from('body'), { hmac: secret }, now), false, 'replayed later');
  assert.equal(signatureOk(req(sign(Buffer.from('t'.repeat(32)), 'body', now)), Buffer.from('body'), { hmac: secret }, now), false);
});

test('policy on a fake clock: the hourly budget frees by time alone, an unheard alert is forgotten, the queue drains', () => {
  const d = workdir();
  writeFileSync(
    join(d, 'serve.yml'),
    GOOD.replace('max_concurrent: 1', 'max_concurrent: 1')
      .replace('max_per_hour: 10', 'max_per_hour: 2')
      .replace('50%', '100%')
      .replace('cooldown: 30m', 'cooldown: 1m'),
  );
  const cfg = loadServeConfig(join(d, 'serve.yml'));
  let now = 1_000_000_000_000;
  const p = new Policy(cfg, () => now);
  const alert = (h: string, status: 'firing' | 'resolved' = 'firing') => ({
    status,
    labels: { alertname: 'Broken', instance: `${h}:9100` },
  });
  const by = new Map<string, string[]>();
  const r1 = p.receive([alert('n1'), alert('n2')], by);
  assert.deepEqual(
    r1.records.map((r) => `${r.decision}:${r.host}`),
    ['run_started:n1', 'queued:n2'],
  );
  const r2 = p.ended(r1.start[0].key, { status: 'changed' });
  assert.deepEqual(
    r2.records.map((r) => `${r.decision}:${r.host}`),
    ['run_ended:n1', 'run_started:n2'],
  );
  p.ended(r2.start[0].key, { status: 'changed' });
  now += 61_000; // past the cooldown, within the hour: the budget of 2 holds n3
  assert.deepEqual(
    p.receive([alert('n3')], by).records.map((r) => r.decision),
    ['brake_rate'],
  );
  now += 3_600_000; // an hour later the budget is free again; the held alert starts without a re-send
  const r4 = p.pump();
  assert.deepEqual(
    r4.records.map((r) => `${r.decision}:${r.host}`),
    ['run_started:n3'],
  );
  p.ended(r4.start[0].key, { status: 'failed' });
  // n4 fires once and is never heard of again: forgotten after forget_after (6h), no longer counted as firing.
  p.receive([alert('n4', 'resolved')], by);
  now += 7 * 3_600_000;
  p.pump();
  assert.deepEqual(p.view().firing, [{ route: 'Broken', firing: 0, hosts: 4 }]);
  // unknown host and no route: rejected (a 4xx), nothing starts
  const bad = p.receive([alert('zz'), { status: 'firing', labels: { alertname: 'Other', instance: 'n1' } }], by);
  assert.equal(bad.rejected, true);
  assert.deepEqual(
    bad.records.map((r) => r.decision),
    ['unknown_host', 'no_route'],
  );
  assert.deepEqual(bad.start, []);
});

// Engine + gate (ExecOptions.gate): the write-ahead sync overlaps the transport's channel setup; the script is
// sent only after the intent is durable; a journal failure stops the host before anything runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runPlan } from '../src/engine/engine.js';
import type { RunEvent, JournalSink } from '../src/engine/events.js';
import type { Runbook, StepSpec } from '../src/runbook/types.js';
import { createPlan } from '../src/plan/plan.js';
import { TransportError, type ExecOptions, type ExecResult, type Transport } from '../src/transport/types.js';
import { LocalTransport } from '../src/transport/local.js';
import { mkdtempSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

class GatingFake implements Transport {
  readonly gates = true;
  started: string[] = [];
  gatesSeen = 0;
  constructor(
    readonly host: string,
    private log: string[],
    private lostBeforeGate?: (s: string) => boolean,
  ) {}
  async connect() {}
  async exec(script: string, o: ExecOptions = {}): Promise<ExecResult> {
    if (o.gate !== undefined) {
      this.gatesSeen++;
      o.gate.catch(() => undefined);
    }
    await new Promise((r) => setTimeout(r, 5)); // "opening the channel"
    if (this.lostBeforeGate?.(script)) throw new TransportError('E_CONN_LOST', this.host, 'lost while opening');
    if (o.gate !== undefined) await o.gate;
    this.log.push(`${this.host}:${script}`);
    return { code: 0, signal: null, stdout: '', stderr: '', timedOut: false, durationMs: 1 };
  }
  async put() {}
  async get() {
    return Buffer.alloc(0);
  }
  async reconnect() {}
  async close() {}
}

function step(name: string, index: number): StepSpec {
  return { name, phase: 'step', index, run: `run ${name}`, rollback: `undo ${name}`, timeoutMs: 1000, local: false, become: false };
}
function runbook(steps: StepSpec[]): Runbook {
  return {
    name: 't',
    destructive: false,
    become: false,
    serial: [],
    maxFailed: 0,
    preflightFailure: 'skip-host',
    vars: {},
    secretVars: [],
    preflight: [],
    steps,
    file: '/x/t.yml',
    hash: 'h',
    source: '',
  } as Runbook;
}
async function go(rb: Runbook, journal: JournalSink, lost?: (s: string) => boolean) {
  const plan = createPlan(rb, [{ name: 'h1', vars: {}, connection: { kind: 'local' as const, name: 'h1', address: 'localhost' } }], {
    runId: 'r1',
    forks: 1,
  });
  const events: RunEvent[] = [];
  const log: string[] = [];
  const fakes: GatingFake[] = [];
  const result = await runPlan({
    plan,
    transport: (h) => {
      const f = new GatingFake(h.name, log, lost);
      fakes.push(f);
      return f;
    },
    localTransport: (h) => new GatingFake(h.name, log),
    emit: (e) => events.push(e),
    journal,
  });
  return { result, events, log, fakes };
}

test('gate: the run is sent only after its intent is durable, and the sync overlaps the exec', async () => {
  const written: Array<Record<string, unknown>> = [];
  let durable = 0;
  let syncing = false;
  const overlapped: boolean[] = [];
  const checks: string[] = [];
  const journal: JournalSink = {
    write: (r) => {
      written.push(r);
    },
    sync: async () => {
      syncing = true;
      const n = written.length;
      await new Promise((r) => setTimeout(r, 20));
      durable = n;
      syncing = false;
    },
  };
  const rb = runbook([step('s1', 0), step('s2', 1)]);
  const origPush = Array.prototype.push;
  const { result, log, fakes } = await go(rb, journal, (s) => {
    if (s.startsWith('run ')) overlapped.push(syncing);
    return false;
  });
  assert.equal(result.exit_code, 0);
  assert.deepEqual(log, ['h1:run s1', 'h1:run s2']);
  assert.equal(fakes[0].gatesSeen, 2);
  assert.deepEqual(overlapped, [true, true], 'exec was under way while the intent was being synced');
  void origPush;
  void checks;
  void durable;
});

test('gate: at the moment a run is sent, its step-start is durable', async () => {
  const written: Array<Record<string, unknown>> = [];
  let durable = 0;
  const journal: JournalSink = {
    write: (r) => {
      written.push(r);
    },
    sync: async () => {
      const n = written.length;
      await new Promise((r) => setTimeout(r, 15));
      durable = n;
    },
  };
  const rb = runbook([step('s1', 0), step('s2', 1)]);
  const plan = createPlan(rb, [{ name: 'h1', vars: {}, connection: { kind: 'local' as const, name: 'h1', address: 'localhost' } }], {
    runId: 'r1',
    forks: 1,
  });
  class Checking extends GatingFake {
    override async exec(script: string, o: ExecOptions = {}) {
      const r = await super.exec(script, o);
      if (script.startsWith('run ')) {
        const idx = written.findIndex((w) => w.type === 'step-start' && w.step === script.slice(4));
        assert.ok(idx >= 0 && idx < durable, `intent of ${script} durable before it ran`);
      }
      return r;
    }
  }
  const log: string[] = [];
  const result = await runPlan({
    plan,
    transport: (h) => new Checking(h.name, log),
    localTransport: (h) => new Checking(h.name, log),
    emit: () => {},
    journal,
  });
  assert.equal(result.exit_code, 0);
  assert.deepEqual(log, ['h1:run s1', 'h1:run s2']);
});

test('gate: a journal failure at a step stops the host before the step runs; only earlier steps roll back (exit 4)', async () => {
  let syncs = 0;
  const journal: JournalSink = {
    write() {},
    sync: async () => {
      await new Promise((r) => setTimeout(r, 10));
      if (++syncs > 3) throw new Error('ENOSPC: no space left on device');
    },
  };
  const rb = runbook([step('s1', 0), step('s2', 1), step('s3', 2)]);
  const { result, log } = await go(rb, journal);
  assert.ok(log.includes('h1:run s1'));
  const ran = log.filter((l) => l.startsWith('h1:run'));
  const failedAt = ran.length; // the step whose sync failed never ran
  assert.ok(!log.includes(`h1:run s${failedAt + 1}`));
  assert.ok(!log.includes(`h1:undo s${failedAt + 1}`), 'the step that never ran is not on the ledger');
  assert.ok(log.includes('h1:undo s1'));
  assert.equal(result.exit_code, 4);
});

test('gate: a transport error before the gate still waits for the journal; journal failure wins', async () => {
  let syncs = 0;
  const journal: JournalSink = {
    write() {},
    sync: async () => {
      await new Promise((r) => setTimeout(r, 30));
      if (++syncs > 3) throw new Error('EIO');
    },
  };
  const rb = runbook([step('s1', 0), step('s2', 1)]);
  const { result, log, events } = await go(rb, journal, (s) => s === 'run s2');
  // as when the sync ran before the exec: JournalStop, no step-end (no "unknown" outcome) for s2
  assert.ok(
    !events.some((e) => e.type === 'step-end' && (e as { step?: string }).step === 's2'),
    JSON.stringify(events.filter((e) => e.type === 'step-end')),
  );
  assert.ok(log.includes('h1:run s1'));
  assert.ok(!log.includes('h1:run s2'));
  assert.ok(!log.includes('h1:undo s2'));
  assert.equal(result.exit_code, 4);
});

test('gate on the real local transport: rejected gate -> nothing runs, the gate error comes back unchanged, no shell left', async () => {
  const t = new LocalTransport({ name: 'l', address: 'localhost' } as never);
  const dir = mkdtempSync(join(tmpdir(), 'gate-'));
  const marker = join(dir, 'ran');
  const boom = new Error('journal broke');
  let reject!: (e: Error) => void;
  const gate = new Promise<void>((_, rj) => {
    reject = rj;
  });
  const p = t.exec(`touch ${marker}`, { gate });
  await new Promise((r) => setTimeout(r, 100));
  reject(boom);
  await assert.rejects(p, (e) => e === boom);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(existsSync(marker), false);
  // resolved gate: runs
  const r = await t.exec(`touch ${marker}; echo ok`, { gate: new Promise((res) => setTimeout(res, 50)) });
  assert.equal(r.stdout, 'ok\n');
  assert.equal(existsSync(marker), true);
});

test('gate on the real ssh transport: the channel opens, nothing runs until the gate; a rejected gate comes back unchanged', async () => {
  const { startSshHosts } = await import('./harness/sshd.js');
  const { SshTransport } = await import('../src/transport/ssh.js');
  const fleet = await startSshHosts(1);
  const h = fleet.hosts[0];
  const t = new SshTransport(
    { kind: 'ssh', name: h.name, address: h.address, port: h.port, user: h.user, privateKeyFile: fleet.clientKeyFile } as never,
    { hostKeyChecking: 'strict', knownHostsFiles: [fleet.knownHostsFile], connectTimeoutMs: 5000, sshConfigFile: 'none', agent: false },
  );
  try {
    const marker = `/tmp/rb-gate-${process.pid}`;
    await t.exec(`rm -f ${marker}`);
    const boom = new Error('journal broke');
    let reject!: (e: Error) => void;
    const p = t.exec(`touch ${marker}`, {
      gate: new Promise<void>((_, rj) => {
        reject = rj;
      }),
    });
    await new Promise((r) => setTimeout(r, 300));
    reject(boom);
    await assert.rejects(p, (e) => e === boom);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal((await t.exec(`test -e ${marker} && echo yes || echo no`)).stdout, 'no\n');
    const r = await t.exec(`touch ${marker}; echo "$# $V"`, { env: { V: 'v' }, gate: new Promise((res) => setTimeout(res, 100)) });
    assert.equal(r.stdout, '0 v\n');
    assert.equal((await t.exec(`test -e ${marker} && echo yes; rm -f ${marker}`)).stdout, 'yes\n');
    // an immediately rejected gate (before the connection is even checked) is not an unhandled rejection
    await assert.rejects(t.exec('true', { gate: Promise.reject(boom) }), (e) => e === boom);
  } finally {
    await t.close();
    await fleet.stop();
  }
});

/**
 * The executor: runs a Plan on hosts through the Transport interface, one state machine per
 * host (when -> unless -> run -> verify, then the rollback ledger), fleet policy around it
 * (preflight everywhere first, forks, serial batches, a failure budget over the whole run,
 * interrupts), and the write-ahead journal. It emits events; it never prints.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Plan, PlannedHost } from '../plan/types.js';
import type { StepSpec } from '../runbook/types.js';
import type { ExecResult, Transport } from '../transport/types.js';
import { TransportError } from '../transport/types.js';
import { renderCommand, lookupPath } from '../plan/template.js';
import { Redactor } from '../core/redact.js';
import { RunbookError } from '../core/errors.js';
import {
  type EventInput,
  type EventSink,
  type HostStatus,
  type Registered,
  type JournalSink,
  type RunEvent,
  type StepStatus,
  type RunStatus,
  nullJournal,
  runStatusOf,
} from './events.js';

/** What the journal says about a host of an earlier (dead) run. */
export interface HostResumeState {
  /** Durable outcomes of main-phase steps, by index. */
  done: Map<number, StepStatus>;
  /** A step whose intent is durable but whose outcome is not. */
  unknown?: number;
  /** Indices of steps that started running and own a rollback not yet done, in order. */
  ledger: number[];
  registers: Record<string, Registered>;
  finished?: HostStatus;
}

export interface HostLock {
  acquire(t: Transport, host: string): Promise<void>;
  release(t: Transport, host: string): Promise<void>;
}

export interface EngineOptions {
  plan: Plan;
  /** Transport for a host (ssh or local, by its connection spec). */
  transport: (h: PlannedHost) => Transport;
  /** Transport for `local: true` steps of a host (runs on the controller). */
  localTransport: (h: PlannedHost) => Transport;
  emit: EventSink;
  journal?: JournalSink;
  /** Abort = interrupt: stop starting steps, roll back hosts in flight. */
  signal?: AbortSignal;
  /** false (--no-rollback): leave hosts as they are on failure or interrupt. */
  rollbackOnFailure?: boolean;
  /** Gate checked before each host starts (maintenance window): a reason string blocks it. */
  mayStartHost?: () => string | undefined;
  resume?: Map<string, HostResumeState>;
  lock?: HostLock;
  /** Emit `output` events as command output arrives (--verbose). */
  streamOutput?: boolean;
  /** Extra fields for the journal's run-start record (inputs, runbook hash...). */
  journalRunInfo?: Record<string, unknown>;
  /** Reconnect attempts after a lost connection, before giving up on a host's rollbacks. */
  reconnectAttempts?: number;
}

export interface RunResult {
  runId: string;
  hosts: Record<string, HostStatus>;
  status: RunStatus;
  exit_code: number;
  journalError?: string;
}

const OUTPUT_TAIL = 4096;
const REGISTER_MAX = 65536;

function tail(s: string, n = OUTPUT_TAIL): string {
  return s.length > n ? `…${s.slice(s.length - n)}` : s;
}

/** A counting semaphore for --forks. */
class Limiter {
  private active = 0;
  private queue: Array<() => void> = [];
  constructor(private readonly max: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((r) => this.queue.push(r));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.queue.shift()?.();
    }
  }
}

interface LedgerEntry {
  step: StepSpec;
}

/** One host's working state during a run. */
interface HostCtx {
  host: PlannedHost;
  t: Transport;
  local?: Transport;
  registers: Record<string, Registered>;
  ledger: LedgerEntry[];
  changed: string[];
  started: number;
  locked: boolean;
  /** The step being worked on (for a connection lost between commands). */
  current?: StepSpec;
}

/** Thrown inside a host's flow when the journal cannot be written: stop changing this host. */
class JournalStop extends Error {}

export class Engine {
  private readonly plan: Plan;
  private readonly redactor = new Redactor();
  private readonly journal: JournalSink;
  private readonly results = new Map<string, HostStatus>();
  private readonly ctx = new Map<string, HostCtx>();
  private failures = 0;
  private journalError?: string;
  private readonly runStart = Date.now();

  constructor(private readonly opts: EngineOptions) {
    this.plan = opts.plan;
    for (const s of opts.plan.secrets) this.redactor.add(s);
    this.journal = opts.journal ?? nullJournal;
  }

  private get interrupted(): boolean {
    return this.opts.signal?.aborted ?? false;
  }

  /** Stop changing hosts: interrupted, or the journal is broken. */
  private get stopping(): boolean {
    return this.interrupted || this.journalError !== undefined;
  }

  private emit(e: EventInput, journal = true): void {
    const ev = this.redactor.redactValue({ ...e, time: new Date().toISOString() } as RunEvent);
    if (journal && ev.type !== 'output') this.journal.write(ev as unknown as Record<string, unknown>);
    this.opts.emit(ev);
  }

  /** Makes everything written so far durable; a failure stops the run from changing hosts. */
  private async sync(): Promise<void> {
    if (this.journalError !== undefined) throw new JournalStop(this.journalError);
    try {
      await this.journal.sync();
    } catch (err) {
      this.journalError ??= errMessage(err);
      this.emit({ type: 'warning', message: `${this.journalError}` }, false);
      throw new JournalStop(this.journalError);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Fleet level

  async run(): Promise<RunResult> {
    const { plan } = this;
    this.emit({
      type: 'run-start',
      run_id: plan.runId,
      runbook: plan.runbook.name,
      hosts: plan.hosts.map((h) => h.name),
      batches: plan.batches,
      max_failed: plan.maxFailed,
      forks: plan.forks,
      ...(this.opts.resume ? { mode: 'resume' } : {}),
      ...(this.opts.journalRunInfo ?? {}),
    } as RunEvent);
    await this.sync().catch(() => undefined);

    const byName = new Map(plan.hosts.map((h) => [h.name, h]));
    const resume = this.opts.resume;
    for (const h of plan.hosts) {
      const finished = resume?.get(h.name)?.finished;
      if (finished) this.results.set(h.name, finished);
    }

    // Phase 1: connect, lock and preflight every host before any host changes.
    const limiter = new Limiter(plan.forks);
    const todo = plan.hosts.filter((h) => !this.results.has(h.name));
    await Promise.all(todo.map((h) => limiter.run(() => this.prepareHost(h))));
    if (plan.runbook.preflightFailure === 'abort' && todo.some((h) => this.results.has(h.name))) {
      for (const h of todo) {
        if (!this.results.has(h.name))
          this.finishUnstarted(
            h.name,
            'skipped',
            'a preflight failed on another host and this runbook aborts the run then (preflight_failure: abort)',
          );
      }
    }

    // Phase 2: batches, in order; the failure budget spans the whole run.
    for (const [bi, batch] of plan.batches.entries()) {
      await Promise.all(
        batch.map((name) =>
          limiter.run(async () => {
            if (this.results.has(name)) return;
            const why = this.whyNotStart();
            if (why) return this.finishUnstarted(name, 'skipped', why);
            await this.runHost(byName.get(name)!, bi);
          }),
        ),
      );
    }

    // Anything left (never started) is skipped; close what is still open.
    for (const h of plan.hosts) if (!this.results.has(h.name)) this.finishUnstarted(h.name, 'skipped', this.whyNotStart() ?? 'not started');
    await Promise.all([...this.ctx.values()].map((c) => this.closeHost(c)));

    return this.finishRun();
  }

  /**
   * Unwinds, on every host with a non-empty ledger (rebuilt from the journal of an earlier
   * run), its rollbacks in reverse. Hosts with nothing to undo are not contacted. A host
   * ends `rolled-back` (success here) or `needs-attention`.
   */
  async rollback(ledgers: Map<string, number[]>): Promise<RunResult> {
    const { plan } = this;
    const hosts = plan.hosts.filter((h) => (ledgers.get(h.name) ?? []).length > 0);
    this.emit({
      type: 'run-start',
      run_id: plan.runId,
      runbook: plan.runbook.name,
      hosts: hosts.map((h) => h.name),
      batches: [hosts.map((h) => h.name)],
      max_failed: plan.maxFailed,
      forks: plan.forks,
      mode: 'rollback',
      ...(this.opts.journalRunInfo ?? {}),
    } as RunEvent);
    const limiter = new Limiter(plan.forks);
    await Promise.all(
      hosts.map((h) =>
        limiter.run(async () => {
          const c = this.newCtx(h);
          c.ledger = ledgers.get(h.name)!.map((i) => ({ step: plan.runbook.steps[i] }));
          this.emit({ type: 'host-start', host: h.name, batch: 0 });
          try {
            await this.connect(c);
          } catch (err) {
            return this.endHost(
              c,
              'needs-attention',
              `cannot reach the host to roll back: ${errMessage(err)}; run runbook rollback ${plan.runId} again when it is back`,
            );
          }
          if (this.opts.lock) {
            try {
              await this.opts.lock.acquire(c.t, h.name);
              c.locked = true;
            } catch (err) {
              return this.endHost(c, 'skipped', errMessage(err));
            }
          }
          const ok = await this.unwind(c);
          await this.endHost(c, ok ? 'rolled-back' : 'needs-attention', ok ? undefined : 'a rollback failed; fix the host by hand');
        }),
      ),
    );
    await Promise.all([...this.ctx.values()].map((c) => this.closeHost(c)));
    return this.finishRun(
      hosts.map((h) => h.name),
      ['rolled-back'],
    );
  }

  /**
   * Read-only look at every host (plan --probe): connect, run preflight, then evaluate each
   * step's when/unless. Never runs a step's `run` or `rollback`.
   */
  async probe(): Promise<ProbeResult[]> {
    const limiter = new Limiter(this.plan.forks);
    return Promise.all(
      this.plan.hosts.map((h) =>
        limiter.run(async (): Promise<ProbeResult> => {
          const c = this.newCtx(h);
          const res: ProbeResult = { host: h.name, reachable: true, preflight: [], steps: [] };
          try {
            await this.connect(c);
            for (const step of this.plan.runbook.preflight) {
              const r = await this.stepBody(c, step);
              if (step.register && !(step.register in c.registers)) c.registers[step.register] = { stdout: '', stderr: '', code: null };
              res.preflight.push({
                step: step.name,
                ok: r.status !== 'failed',
                output: this.redactor.redact(lastLines(r.result ? `${r.result.stdout}\n${r.result.stderr}` : '', 3)),
                reason: r.reason,
              });
              if (r.status === 'failed') {
                res.blocked = `preflight "${step.name}" failed: ${r.reason}`;
                break;
              }
            }
            if (!res.blocked) {
              for (const step of this.plan.runbook.steps) res.steps.push({ step: step.name, verdict: await this.probeStep(c, step) });
            }
          } catch (err) {
            res.reachable = false;
            res.blocked = errMessage(err);
          } finally {
            await this.closeHost(c);
          }
          return res;
        }),
      ),
    );
  }

  private async probeStep(c: HostCtx, step: StepSpec): Promise<string> {
    try {
      if (step.when !== undefined) {
        const r = await this.exec(c, step, this.render(c, step.when), step.timeoutMs);
        if (r.code !== 0) return 'skip (when is false)';
      }
      if (step.unless !== undefined) {
        const r = await this.exec(c, step, this.render(c, step.unless), step.timeoutMs);
        if (r.code === 0) return 'ok (unless is true: already done)';
      }
      return 'would run';
    } catch (err) {
      if (err instanceof RunbookError) return `unknown until earlier steps run (${err.message})`;
      throw err;
    }
  }

  /** `success` statuses count as ok for the exit code (a rollback run: rolled-back). */
  private finishRun(names = this.plan.hosts.map((h) => h.name), success: HostStatus[] = []): RunResult {
    const hosts: Record<string, HostStatus> = {};
    for (const n of names) hosts[n] = this.results.get(n) ?? 'skipped';
    const judged = Object.fromEntries(Object.entries(hosts).map(([n, st]) => [n, success.includes(st) ? ('changed' as const) : st]));
    let { status, exit_code } = runStatusOf(judged, this.interrupted);
    if (this.journalError !== undefined && exit_code !== 3) {
      status = 'failed';
      exit_code = 4;
    }
    this.emit({
      type: 'run-end',
      run_id: this.plan.runId,
      status,
      exit_code,
      hosts,
      duration_ms: Date.now() - this.runStart,
      ...(this.journalError ? { journal_error: this.journalError } : {}),
    } as RunEvent);
    return { runId: this.plan.runId, hosts, status, exit_code, journalError: this.journalError };
  }

  private whyNotStart(): string | undefined {
    if (this.journalError !== undefined) return 'the run journal cannot be written, so no host starts';
    if (this.interrupted) return 'the run was interrupted before this host started';
    if (this.failures > this.plan.maxFailed) {
      return `the failure budget is spent (${this.failures} failed, max_failed ${this.plan.maxFailed})`;
    }
    return this.opts.mayStartHost?.();
  }

  private finishUnstarted(name: string, status: HostStatus, message: string): void {
    if (this.results.has(name)) return;
    this.results.set(name, status);
    this.emit({ type: 'host-end', host: name, status, duration_ms: 0, message });
  }

  private newCtx(h: PlannedHost): HostCtx {
    const c: HostCtx = {
      host: h,
      t: this.opts.transport(h),
      registers: {},
      ledger: [],
      changed: [],
      started: Date.now(),
      locked: false,
    };
    this.ctx.set(h.name, c);
    return c;
  }

  private async connect(c: HostCtx): Promise<void> {
    await c.t.connect();
    for (const w of c.t.warnings ?? []) this.emit({ type: 'warning', host: c.host.name, message: w });
  }

  /** Connect, lock, preflight. Failures here end the host before it changes anything. */
  private async prepareHost(h: PlannedHost): Promise<void> {
    const c = this.newCtx(h);
    const rs = this.opts.resume?.get(h.name);
    if (rs) c.registers = { ...rs.registers };
    try {
      await this.connect(c);
    } catch (err) {
      this.failures++;
      return this.endHost(c, 'unreachable', errMessage(err));
    }
    if (this.opts.lock) {
      try {
        await this.opts.lock.acquire(c.t, h.name);
        c.locked = true;
      } catch (err) {
        if (err instanceof TransportError) {
          this.failures++;
          return this.endHost(c, 'unreachable', errMessage(err));
        }
        return this.endHost(c, 'skipped', errMessage(err));
      }
    }
    // A host that already ran main steps in the dead run does not repeat its preflight.
    if (rs && (rs.done.size > 0 || rs.unknown !== undefined)) return;
    for (const step of this.plan.runbook.preflight) {
      if (this.interrupted) return this.endHost(c, 'skipped', 'interrupted during preflight');
      let r: StepOutcome;
      try {
        r = await this.runStep(c, step);
      } catch (err) {
        if (err instanceof TransportError) {
          this.failures++;
          return this.endHost(c, 'unreachable', errMessage(err));
        }
        throw err;
      }
      if (r.status === 'failed') {
        return this.endHost(c, 'skipped', `preflight "${step.name}" failed: ${r.reason}`, step.name);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Host level

  private async runHost(h: PlannedHost, batch: number): Promise<void> {
    const c = this.ctx.get(h.name)!;
    const rs = this.opts.resume?.get(h.name);
    c.started = Date.now();
    this.emit({ type: 'host-start', host: h.name, batch });
    try {
      await this.sync();
      const steps = this.plan.runbook.steps;
      if (rs) {
        c.ledger = rs.ledger.map((i) => ({ step: steps[i] }));
        // The dead run had already failed a step on this host: finish its unwind.
        const failed = [...rs.done.entries()].find(([, st]) => st === 'failed' || st === 'unknown');
        if (failed) {
          for (const [i, st] of rs.done) if (st === 'changed') c.changed.push(steps[i].name);
          return await this.failHost(c, steps[failed[0]], {
            status: 'failed',
            stage: 'run',
            code: null,
            reason: 'failed in the interrupted run',
          });
        }
      }
      for (const step of steps) {
        if (rs?.done.has(step.index)) {
          const st = rs.done.get(step.index)!;
          if (st === 'changed') c.changed.push(step.name);
          continue;
        }
        if (this.stopping) {
          return await this.abortHost(c, this.interrupted ? 'interrupted' : `the run journal cannot be written: ${this.journalError}`);
        }
        let r: StepOutcome;
        if (rs?.unknown === step.index) r = await this.settleUnknown(c, step);
        else r = await this.runStep(c, step);
        if (r.status === 'changed') c.changed.push(step.name);
        if (r.status === 'failed' || r.status === 'unknown') return await this.failHost(c, step, r);
      }
      await this.endHost(c, c.changed.length ? 'changed' : 'ok');
    } catch (err) {
      if (err instanceof JournalStop) return this.abortHost(c, `the run journal cannot be written: ${err.message}`);
      if (err instanceof TransportError) return this.lostHost(c, err);
      throw err;
    }
  }

  /** A step's intent was durable in a dead run but not its outcome: learn what happened. */
  private async settleUnknown(c: HostCtx, step: StepSpec): Promise<StepOutcome> {
    const started = Date.now();
    this.emit({ type: 'step-start', host: c.host.name, step: step.name, phase: step.phase, index: step.index });
    if (step.rollback) c.ledger.push({ step });
    const probe = step.verify
      ? { run: step.verify.run, stage: 'verify' as const }
      : step.unless
        ? { run: step.unless, stage: 'unless' as const }
        : undefined;
    if (!probe) {
      const reason = 'the dead run started this step and it has no verify or unless to tell whether it took effect';
      this.endStep(c, step, { status: 'failed', stage: 'run', code: null, reason }, started);
      return { status: 'failed', stage: 'run', code: null, reason };
    }
    const cmd = this.render(c, probe.run);
    const res = await this.exec(c, step, cmd, step.timeoutMs);
    const out: StepOutcome =
      res.code === 0
        ? { status: 'changed', stage: probe.stage, code: 0, result: res, command: cmd }
        : {
            status: 'failed',
            stage: probe.stage,
            code: res.code,
            result: res,
            command: cmd,
            reason: `the dead run's step did not take effect (${probe.stage} exit ${res.code})`,
          };
    this.endStep(c, step, out, started);
    return out;
  }

  private async failHost(c: HostCtx, step: StepSpec, r: StepOutcome): Promise<void> {
    this.failures++;
    const why = `step "${step.name}" ${r.status === 'unknown' ? 'has an unknown outcome' : 'failed'}: ${r.reason ?? ''}`.trim();
    if (r.status === 'unknown') {
      // The connection died mid-step: reconnect to run the rollbacks, or hand the host to a human.
      try {
        await this.reconnect(c);
      } catch (err) {
        return this.endHost(
          c,
          'needs-attention',
          `${why}; could not reconnect to roll back (${errMessage(err)}); check the host by hand, then run: runbook rollback ${this.plan.runId}`,
          step.name,
        );
      }
    }
    if (this.opts.rollbackOnFailure === false) {
      return this.endHost(
        c,
        c.changed.length || c.ledger.length ? 'needs-attention' : 'failed',
        `${why}; rollback disabled (--no-rollback)`,
        step.name,
      );
    }
    if (c.ledger.length === 0) return this.endHost(c, 'failed', why, step.name);
    const ok = await this.unwind(c);
    await this.endHost(
      c,
      ok ? 'rolled-back' : 'needs-attention',
      ok ? why : `${why}; a rollback failed too, the host needs a human`,
      step.name,
    );
  }

  /** Interrupted or journal broken between steps: undo what this host changed. */
  private async abortHost(c: HostCtx, why: string): Promise<void> {
    if (this.opts.rollbackOnFailure === false) {
      return this.endHost(
        c,
        c.changed.length ? 'needs-attention' : 'skipped',
        `${why}; rollback disabled (--no-rollback), host left as it is`,
      );
    }
    if (c.ledger.length === 0)
      return this.endHost(
        c,
        c.changed.length ? 'needs-attention' : 'skipped',
        c.changed.length ? `${why}; steps without rollback changed the host` : why,
      );
    const ok = await this.unwind(c);
    await this.endHost(c, ok ? 'rolled-back' : 'needs-attention', ok ? why : `${why}; a rollback failed, the host needs a human`);
  }

  /** The connection was lost outside a step's command (e.g. between steps). */
  private async lostHost(c: HostCtx, err: TransportError): Promise<void> {
    if (c.ledger.length === 0 && c.changed.length === 0) {
      this.failures++;
      return this.endHost(c, 'unreachable', errMessage(err));
    }
    const step = c.current ?? this.plan.runbook.steps[0];
    return this.failHost(c, step, { status: 'unknown', stage: 'run', code: null, reason: errMessage(err) });
  }

  private async reconnect(c: HostCtx): Promise<void> {
    const attempts = this.opts.reconnectAttempts ?? 1; // Transport.reconnect() already retries with backoff; more here multiplies the wait
    let last: unknown;
    for (let i = 0; i < attempts; i++) {
      try {
        await c.t.reconnect();
        return;
      } catch (err) {
        last = err;
        if (i + 1 < attempts) await sleep(Math.min(500 * 2 ** i, 5000));
      }
    }
    throw last;
  }

  /**
   * Runs the ledger in reverse: the failed step's own rollback first (it was pushed last),
   * then earlier changed steps. A failing rollback does not stop the unwind.
   */
  private async unwind(c: HostCtx): Promise<boolean> {
    let allOk = true;
    let lost: string | undefined; // set once the host cannot be reached again: the rest is not attempted
    while (c.ledger.length) {
      const { step } = c.ledger.pop()!;
      const started = Date.now();
      this.emit({ type: 'rollback-start', host: c.host.name, step: step.name, index: step.index });
      await this.sync().catch(() => undefined); // a broken journal must not stop a rollback
      let res: ExecResult | undefined;
      let message: string | undefined;
      let cmd = '';
      try {
        cmd = this.render(c, step.rollback!);
        if (lost) throw new TransportError('E_CONN_LOST', c.host.name, lost);
        res = await this.exec(c, step, cmd, step.timeoutMs);
      } catch (err) {
        if (lost) {
          message = `not attempted: ${lost}`;
        } else if (err instanceof TransportError) {
          try {
            await this.reconnect(c);
            res = await this.exec(c, step, cmd, step.timeoutMs);
          } catch (err2) {
            lost = `the host cannot be reached (${errMessage(err2)})`;
            message = `connection lost during rollback: ${errMessage(err2)}`;
          }
        } else {
          message = errMessage(err);
        }
      }
      const ok = res !== undefined && res.code === 0 && !res.timedOut;
      if (!ok) allOk = false;
      if (res && !ok) message = res.timedOut ? `timed out after ${step.timeoutMs} ms` : `exit ${res.code ?? res.signal}`;
      this.emit({
        type: 'rollback-end',
        host: c.host.name,
        step: step.name,
        index: step.index,
        status: ok ? 'ok' : 'failed',
        code: res?.code ?? null,
        duration_ms: Date.now() - started,
        stdout: tail(res?.stdout ?? ''),
        stderr: tail(res?.stderr ?? ''),
        command: cmd,
        ...(message ? { message } : {}),
      });
    }
    return allOk;
  }

  private async endHost(c: HostCtx, status: HostStatus, message?: string, failedStep?: string): Promise<void> {
    if (this.results.has(c.host.name)) return;
    this.results.set(c.host.name, status);
    this.emit({
      type: 'host-end',
      host: c.host.name,
      status,
      duration_ms: Date.now() - c.started,
      ...(message ? { message } : {}),
      ...(failedStep ? { failed_step: failedStep } : {}),
      ...(c.changed.length ? { changed_steps: c.changed } : {}),
    });
    await this.sync().catch(() => undefined); // the end is durable before the lock goes
    await this.closeHost(c);
  }

  private async closeHost(c: HostCtx): Promise<void> {
    if (c.locked && this.opts.lock) {
      c.locked = false;
      await this.opts.lock.release(c.t, c.host.name).catch((err) => {
        this.emit({ type: 'warning', host: c.host.name, message: `could not release the host lock: ${errMessage(err)}` });
      });
    }
    this.ctx.delete(c.host.name);
    await Promise.allSettled([c.t.close(), c.local?.close()]);
  }

  // ---------------------------------------------------------------------------------------------
  // Step level

  private render(c: HostCtx, tpl: string): string {
    return renderCommand(tpl, (path) => {
      const root = path.split('.')[0];
      if (root in c.registers) return lookupPath(c.registers as unknown as Record<string, unknown>, path);
      return lookupPath(c.host.vars, path);
    });
  }

  /** gate: see ExecOptions.gate; awaited here first when the transport cannot take it. */
  private async exec(c: HostCtx, step: StepSpec, cmd: string, timeoutMs: number, gate?: Promise<void>): Promise<ExecResult> {
    let t = c.t;
    if (step.local) {
      c.local ??= this.opts.localTransport(c.host);
      t = c.local;
      await t.connect();
    }
    if (gate && !t.gates) {
      await gate;
      gate = undefined;
    }
    const onOutput = this.opts.streamOutput
      ? (stream: 'stdout' | 'stderr', data: string) =>
          this.emit({ type: 'output', host: c.host.name, step: step.name, stream, data }, false)
      : undefined;
    return t.exec(cmd, {
      timeoutMs,
      become: step.become || undefined, // not set on the step: the host's ansible_become applies
      becomeUser: c.host.connection.becomeUser,
      onOutput,
      ...(gate ? { gate } : {}),
    });
  }

  /**
   * when -> unless -> run -> verify (retried). The intent is durable before `run` starts.
   * Rejects with TransportError only if the connection is lost before `run` starts.
   */
  private async runStep(c: HostCtx, step: StepSpec): Promise<StepOutcome> {
    const started = Date.now();
    c.current = step;
    this.emit({ type: 'step-start', host: c.host.name, step: step.name, phase: step.phase, index: step.index });
    let out: StepOutcome;
    try {
      out = await this.stepBody(c, step);
    } catch (err) {
      if (err instanceof TransportError) {
        this.endStep(c, step, { status: 'unknown', stage: 'run', code: null, reason: errMessage(err) }, started);
        throw err;
      }
      if (!(err instanceof RunbookError)) throw err;
      // A template that cannot render for this host (e.g. a register of a skipped step).
      out = { status: 'failed', stage: 'run', code: null, reason: errMessage(err) };
    }
    if (step.register && !(step.register in c.registers)) c.registers[step.register] = { stdout: '', stderr: '', code: null };
    this.endStep(c, step, out, started);
    return out;
  }

  private async stepBody(c: HostCtx, step: StepSpec): Promise<StepOutcome> {
    if (step.when !== undefined) {
      const cmd = this.render(c, step.when);
      const r = await this.exec(c, step, cmd, step.timeoutMs);
      if (r.timedOut)
        return {
          status: 'failed',
          stage: 'when',
          code: null,
          result: r,
          command: cmd,
          reason: `when timed out after ${step.timeoutMs} ms`,
        };
      if (r.code !== 0) return { status: 'skipped', stage: 'when', code: r.code, result: r, command: cmd };
    }
    if (step.unless !== undefined) {
      const cmd = this.render(c, step.unless);
      const r = await this.exec(c, step, cmd, step.timeoutMs);
      if (r.code === 0) return { status: 'ok', stage: 'unless', code: 0, result: r, command: cmd };
    }
    const cmd = this.render(c, step.run);
    // Write-ahead: the step-start intent is on disk before anything changes. The sync is the exec's gate: the
    // transport opens the channel meanwhile and sends the script only after it; the ledger entry comes first.
    let gate: Promise<void> | undefined;
    if (step.phase === 'step') {
      gate = this.sync().then(() => {
        if (step.rollback) c.ledger.push({ step });
      });
      gate.catch(() => {
        /* awaited by the transport, or below */
      });
    }
    let r: ExecResult;
    try {
      r = await this.exec(c, step, cmd, step.timeoutMs, gate);
    } catch (err) {
      if (gate) await gate; // a journal failure wins (JournalStop), as if the sync had run before the exec
      if (err instanceof TransportError && step.phase === 'step') {
        return { status: 'unknown', stage: 'run', code: null, command: cmd, reason: errMessage(err) };
      }
      throw err;
    }
    if (step.register) {
      c.registers[step.register] = { stdout: r.stdout.slice(0, REGISTER_MAX), stderr: r.stderr.slice(0, REGISTER_MAX), code: r.code };
    }
    if (r.timedOut)
      return {
        status: 'failed',
        stage: 'run',
        code: null,
        result: r,
        command: cmd,
        reason: `timed out after ${step.timeoutMs} ms and was killed`,
      };
    if (r.code !== 0)
      return { status: 'failed', stage: 'run', code: r.code, result: r, command: cmd, reason: `exit ${r.code ?? r.signal}${lastWords(r)}` };
    if (!step.verify) return { status: step.phase === 'preflight' ? 'ok' : 'changed', stage: 'run', code: 0, result: r, command: cmd };

    const vcmd = this.render(c, step.verify.run);
    let last: ExecResult | undefined;
    const attempts = step.verify.retries + 1;
    for (let i = 1; i <= attempts; i++) {
      try {
        last = await this.exec(c, step, vcmd, step.timeoutMs);
      } catch (err) {
        if (err instanceof TransportError && step.phase === 'step') {
          return { status: 'unknown', stage: 'verify', code: null, command: vcmd, reason: errMessage(err), attempts: i };
        }
        throw err;
      }
      if (last.code === 0 && !last.timedOut) {
        return {
          status: step.phase === 'preflight' ? 'ok' : 'changed',
          stage: 'verify',
          code: 0,
          result: last,
          command: vcmd,
          attempts: i,
        };
      }
      if (i < attempts) {
        if (this.interrupted) break;
        await sleep(step.verify.delayMs);
      }
    }
    return {
      status: 'failed',
      stage: 'verify',
      code: last?.code ?? null,
      result: last,
      command: vcmd,
      attempts,
      reason: `verify did not hold after ${attempts} attempt${attempts > 1 ? 's' : ''} (last exit ${last?.timedOut ? 'timeout' : (last?.code ?? last?.signal)})${last ? lastWords(last) : ''}`,
    };
  }

  private endStep(c: HostCtx, step: StepSpec, r: StepOutcome, started: number): void {
    const reg = step.register && c.registers[step.register];
    this.emit({
      type: 'step-end',
      host: c.host.name,
      step: step.name,
      phase: step.phase,
      index: step.index,
      status: r.status,
      code: r.code,
      duration_ms: Date.now() - started,
      stage: r.stage,
      ...(r.attempts ? { attempts: r.attempts } : {}),
      ...(r.result?.timedOut ? { timed_out: true } : {}),
      stdout: tail(r.result?.stdout ?? ''),
      stderr: tail(r.result?.stderr ?? ''),
      ...(r.command !== undefined ? { command: r.command } : {}),
      ...(r.reason ? { message: r.reason } : {}),
      ...(reg ? { register: reg } : {}),
    } as RunEvent);
  }
}

export interface ProbeResult {
  host: string;
  reachable: boolean;
  /** Why the host would not change (unreachable, failed preflight). */
  blocked?: string;
  preflight: Array<{ step: string; ok: boolean; output: string; reason?: string }>;
  steps: Array<{ step: string; verdict: string }>;
}

function lastLines(s: string, n: number): string {
  return s.trim().split('\n').filter(Boolean).slice(-n).join('\n');
}

interface StepOutcome {
  status: StepStatus;
  stage: 'when' | 'unless' | 'run' | 'verify';
  code: number | null;
  result?: ExecResult;
  command?: string;
  reason?: string;
  attempts?: number;
}

/** ": <last line the command printed>" (stderr first), to say why in one line; '' if silent. */
function lastWords(r: ExecResult): string {
  const line = (r.stderr.trim() || r.stdout.trim()).split('\n').pop()?.trim() ?? '';
  return line ? `: ${line.length > 300 ? `${line.slice(0, 300)}…` : line}` : '';
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function runPlan(opts: EngineOptions): Promise<RunResult> {
  return new Engine(opts).run();
}

export function rollbackRun(opts: EngineOptions & { ledgers: Map<string, number[]> }): Promise<RunResult> {
  return new Engine(opts).rollback(opts.ledgers);
}

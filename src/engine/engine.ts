/**
 * The executor: runs a Plan on hosts through the Transport interface. Fleet policy lives here
 * (preflight everywhere first, forks, serial batches, a failure budget over the whole run,
 * interrupts, the write-ahead journal); each host is one state machine (host.ts) whatever the
 * mode: apply, resume (continue a dead run), rollback (undo an earlier run), probe (read-only).
 * It emits events; it never prints.
 */
import { Limiter } from '../core/limiter.js';
import { Redactor } from '../core/redact.js';
import { splitBatches } from '../plan/plan.js';
import type { Registered } from '../core/status.js';
import type { PlannedHost } from '../plan/types.js';
import { shEscapeDouble, shQuote } from '../transport/shell.js';
import { type EventInput, type HostStatus, type JournalSink, nullJournal, type RunEvent, runStatusOf } from './events.js';
import { type FleetScope, HostRun } from './host.js';
import { ProbeRun } from './probe.js';
import type { EngineOptions, ProbeResult, RunMode, RunResult } from './options.js';
import { errMessage, JournalStop } from './step.js';

export type { EngineOptions, HostLock, ProbeResult, RunInfo, RunMode, RunResult } from './options.js';

/** Event fields that are names, statuses, counts and times, set by the engine (see emit). */
const STRUCTURAL = new Set([
  'type',
  'time',
  'run_id',
  'runbook',
  'runbook_file',
  'runbook_hash',
  'journal',
  'mode',
  'host',
  'hosts',
  'batch',
  'batches',
  'max_failed',
  'forks',
  'step',
  'phase',
  'index',
  'status',
  'stage',
  'code',
  'exit_code',
  'attempts',
  'timed_out',
  'duration_ms',
  'failed_step',
  'changed_steps',
  'alternative',
  'rank',
]);

/** A Redactor of the run's secrets, each also as a command renders it (shell-quoted, escaped for "..."). */
export function redactorFor(secrets: string[]): Redactor {
  const r = new Redactor();
  for (const s of secrets) r.add(s, [shQuote(s), shEscapeDouble(s)]);
  return r;
}

export class Engine implements FleetScope {
  readonly redactor: Redactor;
  private readonly journal: JournalSink;
  private readonly results = new Map<string, HostStatus>();
  private readonly open: HostRun[] = [];
  private failures = 0;
  journalError?: string;
  private readonly runStart = Date.now();
  private readonly mode: RunMode;

  constructor(readonly opts: EngineOptions) {
    this.redactor = redactorFor(opts.plan.secrets);
    this.journal = opts.journal ?? nullJournal;
    this.mode = opts.mode ?? { kind: 'apply' };
  }

  get runId(): string {
    return this.opts.plan.runId;
  }

  get interrupted(): boolean {
    return this.opts.signal?.aborted ?? false;
  }

  get stopping(): boolean {
    return this.interrupted || this.journalError !== undefined;
  }

  countFailure(): void {
    this.failures++;
  }

  settle(host: string, status: HostStatus): boolean {
    if (this.results.has(host)) return false;
    this.results.set(host, status);
    return true;
  }

  redact(s: string): string {
    return this.redactor.redact(s);
  }

  emit(e: EventInput, journal = true): void {
    const ev = { ...e, time: new Date().toISOString() } as RunEvent & Record<string, unknown>;
    // Secrets are redacted from what commands printed and said, never from the fields that say what
    // happened: a short secret ("ok") must not turn a status into "***" and the journal unreadable.
    for (const [k, v] of Object.entries(ev)) if (!STRUCTURAL.has(k)) ev[k] = this.redactor.redactValue(v);
    if (journal && ev.type !== 'output') this.journal.write(ev as unknown as Record<string, unknown>);
    this.opts.emit(ev);
  }

  async sync(): Promise<void> {
    if (this.journalError !== undefined) throw new JournalStop(this.journalError);
    try {
      await this.journal.sync();
    } catch (err) {
      this.journalError ??= errMessage(err);
      this.emit({ type: 'warning', message: `${this.journalError}` }, false);
      throw new JournalStop(this.journalError);
    }
  }

  private hostRun(h: PlannedHost): HostRun {
    const r = new HostRun(this, h);
    this.open.push(r);
    return r;
  }

  /** Runs the plan in its mode. Whatever happens, every connection is closed and every lock taken is released. */
  async run(): Promise<RunResult> {
    try {
      return await (this.mode.kind === 'rollback' ? this.rollback(this.mode.undo, this.mode.registers) : this.apply());
    } finally {
      await Promise.all(this.open.map((r) => r.close()));
    }
  }

  /** A host's part of a phase; an error nobody expected ends that host, not the run. */
  private guarded(r: HostRun, fn: () => Promise<unknown>): Promise<void> {
    return fn().then(
      () => undefined,
      (err: unknown) => r.crashed(err),
    );
  }

  private async apply(): Promise<RunResult> {
    const { plan } = this.opts;
    const resume = this.mode.kind === 'resume' ? this.mode.hosts : undefined;
    this.runStartEvent(
      plan.hosts.map((h) => h.name),
      plan.batches,
    );
    await this.sync().catch(() => undefined);
    for (const h of plan.hosts) {
      const finished = resume?.get(h.name)?.finished;
      if (finished) this.results.set(h.name, finished);
    }

    // Phase 1: connect, lock and preflight every host before any host changes.
    const limiter = new Limiter(plan.forks);
    const runs = new Map<string, HostRun>();
    const todo = plan.hosts.filter((h) => !this.results.has(h.name));
    await Promise.all(
      todo.map((h) =>
        limiter.run(async () => {
          const r = this.hostRun(h);
          runs.set(h.name, r);
          const rs = resume?.get(h.name);
          if (rs) r.adopt(rs);
          await this.guarded(r, async () => {
            if (!(await r.open(true))) return;
            // A host that already ran main steps in the dead run does not repeat its preflight.
            if (rs && (rs.done.size > 0 || rs.unknown !== undefined)) return;
            await r.preflight();
          });
        }),
      ),
    );
    // (A host that ended `ok` here had nothing to do: apply_if.)
    const preflightFailed = todo.some((h) => (this.results.get(h.name) ?? 'ok') !== 'ok');
    if (plan.runbook.preflightFailure === 'abort' && preflightFailed) {
      for (const h of todo) {
        this.endUnstarted(
          h.name,
          'skipped',
          'a preflight failed on another host and this runbook aborts the run then (preflight_failure: abort)',
        );
      }
    }

    // Phase 2: batches, in order; the failure budget spans the whole run. With apply_if, only the hosts
    // that go on take a place in a batch (a percentage counts only them).
    let batches = plan.batches;
    if (plan.runbook.applyIf) {
      batches = splitBatches(
        plan.hosts.map((h) => h.name).filter((n) => !this.results.has(n)),
        plan.runbook.serial,
      );
      this.emit({ type: 'batches', batches });
    }
    for (const [bi, batch] of batches.entries()) {
      await Promise.all(
        batch.map((name) =>
          limiter.run(async () => {
            if (this.results.has(name)) return;
            const why = this.whyNotStart();
            if (why) return this.endUnstarted(name, 'skipped', why);
            const r = runs.get(name)!;
            await this.guarded(r, () => r.apply(bi, resume?.get(name)));
          }),
        ),
      );
    }

    // Anything left (never started) is skipped; close what is still open.
    for (const h of plan.hosts) this.endUnstarted(h.name, 'skipped', this.whyNotStart() ?? 'not started');
    return this.finish(plan.hosts.map((h) => h.name));
  }

  /**
   * Unwinds, on every host with something to undo, its rollbacks in reverse. A host ends
   * `rolled-back` (success here) or `needs-attention`. Hosts with nothing to undo are only
   * visited to drop a lock the earlier run may have left there.
   */
  private async rollback(undo: Map<string, number[]>, registers?: Map<string, Record<string, Registered>>): Promise<RunResult> {
    const { plan } = this.opts;
    const hosts = plan.hosts.filter((h) => (undo.get(h.name) ?? []).length > 0);
    const names = hosts.map((h) => h.name);
    this.runStartEvent(names, [names]);
    const limiter = new Limiter(plan.forks);
    await Promise.all([
      ...hosts.map((h) =>
        limiter.run(() => {
          const r = this.hostRun(h);
          return this.guarded(r, () => r.undo(undo.get(h.name)!, registers?.get(h.name)));
        }),
      ),
      ...plan.hosts.filter((h) => !names.includes(h.name)).map((h) => limiter.run(() => new HostRun(this, h).releaseLeftLock())),
    ]);
    return this.finish(names, ['rolled-back']);
  }

  /** Read-only look at every host (plan --probe): connect, preflight, apply_if, then each step's if/when/unless. */
  async probe(): Promise<ProbeResult[]> {
    const limiter = new Limiter(this.opts.plan.forks);
    return Promise.all(this.opts.plan.hosts.map((h) => limiter.run(() => new ProbeRun(this, h).probe())));
  }

  private runStartEvent(hosts: string[], batches: string[][]): void {
    const { plan } = this.opts;
    this.emit({
      type: 'run-start',
      run_id: plan.runId,
      runbook: plan.runbook.name,
      hosts,
      batches,
      max_failed: plan.maxFailed,
      forks: plan.forks,
      ...(this.mode.kind !== 'apply' ? { mode: this.mode.kind } : {}),
      ...(this.opts.journalRunInfo ?? {}),
    } as EventInput);
  }

  /** Closes what is open; `success` statuses count as ok for the exit code (a rollback run: rolled-back). */
  private async finish(names: string[], success: HostStatus[] = []): Promise<RunResult> {
    await Promise.all(this.open.map((r) => r.close()));
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
      run_id: this.runId,
      status,
      exit_code,
      hosts,
      duration_ms: Date.now() - this.runStart,
      ...(this.journalError ? { journal_error: this.journalError } : {}),
    });
    return { runId: this.runId, hosts, status, exit_code, journalError: this.journalError };
  }

  private whyNotStart(): string | undefined {
    if (this.journalError !== undefined) return 'the run journal cannot be written, so no host starts';
    if (this.interrupted) return 'the run was interrupted before this host started';
    if (this.failures > this.opts.plan.maxFailed) {
      return `the failure budget is spent (${this.failures} failed, max_failed ${this.opts.plan.maxFailed})`;
    }
    return this.opts.mayStartHost?.();
  }

  private endUnstarted(name: string, status: HostStatus, message: string): void {
    if (!this.settle(name, status)) return;
    this.emit({ type: 'host-end', host: name, status, duration_ms: 0, message });
  }
}

export function runPlan(opts: EngineOptions): Promise<RunResult> {
  return new Engine(opts).run();
}

/**
 * One host's state machine, the same for every mode of a run (apply, resume, rollback; probe.ts looks only):
 *
 *   open (connect, lock) -> preflight -> steps -> end
 *                 \______________\__________\__> fail / abort / lost -> unwind the ledger -> end
 *
 * The rules for what an outcome means for the host are written once, here:
 * - lost (cannot connect, lock or reach the host between steps): nothing owed -> `unreachable`;
 *   owed (a resumed or rolled-back host the earlier run changed) and never reached ->
 *   `needs-attention`; owed and the link dropped -> reconnect and unwind as for a failed step.
 *   Each counts against the failure budget.
 * - a failed or unknown step: its own rollback, then the earlier ones in reverse; every
 *   rollback ok -> `rolled-back`, else `needs-attention`.
 * - locked by another run, or a failed preflight -> `skipped`, nothing changed.
 */
import { RunbookError } from '../core/errors.js';
import { ExprError } from '../plan/expr.js';
import type { Registered } from '../core/status.js';
import type { HostResumeState } from '../plan/types.js';
import type { StepSpec } from '../runbook/types.js';
import type { ExecResult } from '../transport/types.js';
import { TransportError } from '../transport/types.js';
import type { HostStatus } from './events.js';
import { errMessage, JournalStop, type RunScope, StepRunner, type StepOutcome, tail } from './step.js';

/** What a host needs from the fleet around it. */
export interface FleetScope extends RunScope {
  readonly runId: string;
  /** Interrupted, or the journal is broken: stop changing hosts. */
  readonly stopping: boolean;
  readonly journalError?: string;
  countFailure(): void;
  /** Records a host's final status; false if it already has one. */
  settle(host: string, status: HostStatus): boolean;
  redact(s: string): string;
}

/** How one alternative ended (HostRun.alternative). */
type Tried = { held: true } | { passed: string; why?: string } | { outcome: StepOutcome & { step?: StepSpec } } | { stop: true };

export class HostRun extends StepRunner {
  private readonly changed: string[] = [];
  /** What the escalations did ("repaired by: wipe (targeted did not hold: ...)"), for the host's end. */
  private readonly notes: string[] = [];
  /** An alternative could not be undone: however the rest unwinds, a human must look. */
  private undoFailed = false;
  private started = Date.now();
  private connected = false;
  private locked = false;
  private closed = false;

  constructor(
    private readonly fleet: FleetScope,
    host: StepRunner['host'],
  ) {
    super(fleet, host);
  }

  private get steps(): StepSpec[] {
    return this.fleet.opts.plan.runbook.steps;
  }

  // ---------------------------------------------------------------------------------------------
  // Opening

  /** Connects and, with `lock`, takes the host lock. false: the host ended here (lost or locked). */
  async open(lock: boolean): Promise<boolean> {
    try {
      await this.t.connect();
    } catch (err) {
      await this.lost(err);
      return false;
    }
    this.connected = true;
    for (const w of this.t.warnings ?? []) this.fleet.emit({ type: 'warning', host: this.host.name, message: w });
    const hostLock = this.fleet.opts.lock;
    if (!lock || !hostLock) return true;
    try {
      this.noteLock(await hostLock.acquire(this.t, this.host.name));
      this.locked = true;
      return true;
    } catch (err) {
      if (!(err instanceof TransportError)) {
        await this.end('skipped', errMessage(err), undefined, codeOf(err));
        return false;
      }
      // The link dropped while taking the lock, which may have been taken: release it at the end if
      // it is ours, and try once more on a new connection (taking over our own lock is safe to repeat).
      this.locked = true;
      try {
        await this.t.reconnect();
        this.noteLock(await hostLock.acquire(this.t, this.host.name));
        return true;
      } catch (err2) {
        if (!(err2 instanceof TransportError)) {
          await this.end('skipped', errMessage(err2), undefined, codeOf(err2));
          return false;
        }
        this.connected = false; // nothing is done on a host without its lock: as if never reached
        await this.lost(err2);
        return false;
      }
    }
  }

  private noteLock(note: string | undefined): void {
    if (note) this.fleet.emit({ type: 'warning', host: this.host.name, message: note });
  }

  /** Runs the preflight; false: the host ended (preflight failed, lost, interrupted). */
  async preflight(): Promise<boolean> {
    for (const step of this.fleet.opts.plan.runbook.preflight) {
      if (this.fleet.interrupted) {
        await this.end('skipped', 'interrupted during preflight');
        return false;
      }
      let r: StepOutcome;
      try {
        r = await this.runStep(step);
      } catch (err) {
        if (!(err instanceof TransportError)) throw err;
        await this.lost(err);
        return false;
      }
      if (r.status === 'failed') {
        await this.end('skipped', `preflight "${step.name}" failed: ${r.reason}`, step.name);
        return false;
      }
    }
    const applyIf = this.fleet.opts.plan.runbook.applyIf;
    if (!applyIf) return this.claimAttempt();
    let go: boolean;
    try {
      go = this.decide(applyIf);
    } catch (err) {
      if (!(err instanceof ExprError)) throw err;
      await this.end('skipped', `apply_if: ${applyIf.source}: ${err.message}`);
      return false;
    }
    if (!go) {
      await this.end('ok', `nothing to do: ${applyIf.source}`);
      return false;
    }
    return this.claimAttempt();
  }

  /** --cooldown / --max-attempts: the host's own record says whether this run may start here. */
  private async claimAttempt(): Promise<boolean> {
    const gate = this.fleet.opts.attempts;
    if (!gate || (this.fleet.opts.mode ?? { kind: 'apply' }).kind !== 'apply') return true;
    let c: Awaited<ReturnType<typeof gate.claim>>;
    try {
      c = await gate.claim(this.t, this.host.name);
    } catch (err) {
      if (err instanceof TransportError) {
        await this.lost(err);
        return false;
      }
      await this.end('skipped', errMessage(err), undefined, codeOf(err));
      return false;
    }
    if (c.ok) return true;
    await this.end('skipped', c.reason, undefined, c.code);
    return false;
  }

  // ---------------------------------------------------------------------------------------------
  // apply / resume

  /** Takes over what a dead run left on this host: its registers, its ledger, the steps it changed. */
  adopt(rs: HostResumeState): void {
    this.registers = { ...rs.registers };
    this.ledger = rs.ledger.map((i) => this.steps[i]);
    for (const step of this.steps) if (rs.done.get(step.index) === 'changed') this.changed.push(step.name);
  }

  /** The main steps, in order; `rs`: continue where a dead run stopped. */
  async apply(batch: number, rs?: HostResumeState): Promise<void> {
    this.started = Date.now();
    this.fleet.emit({ type: 'host-start', host: this.host.name, batch });
    try {
      await this.fleet.sync();
      const steps = this.steps;
      // The dead run had already failed a step on this host: finish its unwind.
      // (A step of an alternative that failed is the escalation's to handle: it tries the next one.)
      const failed = rs && [...rs.done.entries()].find(([i, st]) => (st === 'failed' || st === 'unknown') && !steps[i]?.alternative);
      if (failed) {
        return await this.fail(steps[failed[0]], { status: 'failed', stage: 'run', code: null, reason: 'failed in the interrupted run' });
      }
      for (const step of steps) {
        if (step.alternative || rs?.done.has(step.index)) continue; // run by its escalation; adopt() took its outcome
        if (this.fleet.stopping) return await this.abort(this.stopReason());
        const r = step.escalate
          ? await this.escalation(step, rs)
          : rs?.unknown === step.index
            ? await this.settleUnknown(step)
            : await this.runStep(step);
        if ('stop' in r) return await this.abort(this.stopReason());
        if (r.status === 'changed' && !step.escalate) this.changed.push(step.name);
        if (r.status === 'failed' || r.status === 'unknown') return await this.fail(r.step ?? step, r);
      }
      await this.end(this.changed.length ? 'changed' : 'ok');
    } catch (err) {
      if (err instanceof JournalStop) return this.abort(`the run journal cannot be written: ${err.message}`);
      if (err instanceof TransportError) return this.lost(err);
      return this.crashed(err);
    }
  }

  /**
   * An error the engine did not expect (a bug): the host is not touched again, ends
   * `needs-attention` if anything was changed (else `failed`), and the run goes on for the
   * other hosts, so its journal, locks, reports and exit code are all still written.
   */
  async crashed(err: unknown): Promise<void> {
    this.fleet.countFailure();
    const what = `internal error (a bug in runbook, please report it): ${errMessage(err)}`;
    if (this.ledger.length === 0 && this.changed.length === 0) return this.end('failed', `${what}; nothing was changed`);
    return this.end('needs-attention', `${what}; the host was left as it is: check it, then runbook rollback ${this.fleet.runId}`);
  }

  private stopReason(): string {
    return this.fleet.interrupted ? 'interrupted' : `the run journal cannot be written: ${this.fleet.journalError}`;
  }

  /**
   * An escalation: its alternatives in order, least destructive first. A step of one fails (run,
   * verify, timeout): that alternative's own rollbacks run in reverse and the next one starts. The
   * first whose steps all hold wins and its rollbacks stay in the host's ledger. A lost link
   * (`unknown`) ends the escalation as any step's would; `rs`: continue where a dead run stopped.
   */
  private async escalation(group: StepSpec, rs?: HostResumeState): Promise<(StepOutcome & { step?: StepSpec }) | { stop: true }> {
    const started = Date.now();
    this.current = group;
    this.fleet.emit({ type: 'step-start', host: this.host.name, step: group.name, phase: group.phase, index: group.index });
    const done = (out: StepOutcome, alternative?: string): StepOutcome => {
      this.endStep(group, out, started, alternative);
      return out;
    };
    if (group.if) {
      const said = this.condition(group.if, group);
      if (said !== true) return done(said);
    }
    const tried: string[] = [];
    for (const [rank, alt] of group.escalate!.entries()) {
      const prior = rs?.alternatives?.get(`${group.index}/${rank}`);
      const r: Tried = prior === 'held' ? { held: true } : prior ? { passed: prior } : await this.alternative(group, rank, rs);
      if ('stop' in r) return r;
      if ('outcome' in r) return r.outcome.step ? r.outcome : done(r.outcome);
      if ('passed' in r) {
        tried.push(r.passed === 'not-applicable' ? `${alt.name} did not apply` : `${alt.name} did not hold${r.why ? `: ${r.why}` : ''}`);
        continue;
      }
      const note = `${group.name}: repaired by ${alt.name}${tried.length ? ` (${tried.join('; ')})` : ''}`;
      this.notes.push(note);
      const changed = alt.steps.some((i) => this.changed.includes(this.steps[i].name));
      return done({ status: changed ? 'changed' : 'ok', stage: 'run', code: 0, reason: note }, alt.name);
    }
    return done({ status: 'failed', stage: 'run', code: null, reason: `no alternative held: ${tried.join('; ')}` });
  }

  /**
   * One alternative: held; passed over (its if is false) or undone (a step failed, its own part of
   * the ledger unwound); or an outcome that ends the escalation (its undo failed, an if that cannot
   * be decided, a lost link: `step` set), or a stop.
   */
  private async alternative(
    group: StepSpec,
    rank: number,
    rs?: HostResumeState,
  ): Promise<{ held: true } | { passed: string; why?: string } | { outcome: StepOutcome & { step?: StepSpec } } | { stop: true }> {
    const alt = group.escalate![rank];
    const ev = { host: this.host.name, step: group.name, index: group.index, alternative: alt.name, rank };
    if (alt.if) {
      let applies: boolean;
      try {
        applies = this.decide(alt.if, group);
      } catch (err) {
        if (!(err instanceof ExprError)) throw err;
        const reason = `alternative "${alt.name}" if: ${alt.if.source}: ${err.message}`;
        return { outcome: { status: 'failed', stage: 'if', code: null, reason } };
      }
      if (!applies) {
        this.fleet.emit({ type: 'alternative-end', ...ev, status: 'not-applicable', message: `if is false: ${alt.if.source}` });
        return { passed: 'not-applicable' };
      }
    }
    this.fleet.emit({ type: 'alternative-start', ...ev });
    // Its own part of the ledger: what a dead run already pushed for it (at the end), and what comes now.
    const first = this.ledger.findIndex((st) => st.alternative?.group === group.index && st.alternative.rank === rank);
    const mark = first < 0 ? this.ledger.length : first;
    let failure: (StepOutcome & { step: StepSpec }) | undefined;
    for (const i of alt.steps) {
      const step = this.steps[i];
      const was = rs?.done.get(i);
      if (was === 'failed') {
        failure = { status: 'failed', stage: 'run', code: null, reason: 'failed in the interrupted run', step };
        break;
      }
      if (was !== undefined) continue;
      if (this.fleet.stopping) return { stop: true };
      const r = rs?.unknown === i ? await this.settleUnknown(step) : await this.runStep(step);
      if (r.status === 'changed') this.changed.push(step.name);
      if (r.status === 'unknown') return { outcome: { ...r, step } };
      if (r.status === 'failed') {
        failure = { ...r, step };
        break;
      }
    }
    if (!failure) {
      this.fleet.emit({ type: 'alternative-end', ...ev, status: 'held' });
      return { held: true };
    }
    const why = `step "${failure.step.name}": ${failure.reason ?? failure.status}`;
    if (!(await this.unwind(mark))) {
      this.undoFailed = true;
      this.fleet.emit({ type: 'alternative-end', ...ev, status: 'undo-failed', message: why });
      const reason = `alternative "${alt.name}" did not hold (${why}) and a rollback of it failed`;
      return { outcome: { status: 'failed', stage: 'run', code: null, reason } };
    }
    const undone = new Set(alt.steps.filter((i) => this.steps[i].rollback).map((i) => this.steps[i].name));
    this.changed.splice(0, this.changed.length, ...this.changed.filter((n) => !undone.has(n)));
    this.fleet.emit({ type: 'alternative-end', ...ev, status: 'undone', message: why });
    return { passed: 'undone', why };
  }

  /** A step's intent was durable in a dead run but not its outcome: learn what happened. */
  private async settleUnknown(step: StepSpec): Promise<StepOutcome> {
    // Safe to run twice (rerun: true): run it again, with its own checks, instead of asking whether it took effect.
    if (step.rerun) return this.runStep(step);
    const started = Date.now();
    this.current = step;
    this.fleet.emit({ type: 'step-start', host: this.host.name, step: step.name, phase: step.phase, index: step.index });
    if (step.rollback) this.ledger.push(step);
    const probe = step.verify
      ? { run: step.verify.run, stage: 'verify' as const }
      : step.unless
        ? { run: step.unless, stage: 'unless' as const }
        : undefined;
    const out: StepOutcome = probe
      ? await this.settleByProbe(step, probe)
      : {
          status: 'failed',
          stage: 'run',
          code: null,
          reason: 'the dead run started this step and it has no verify or unless to tell whether it took effect',
        };
    this.endStep(step, out, started);
    return out;
  }

  /** Whether a dead run's step took effect, as its verify (or unless) says now. */
  private async settleByProbe(step: StepSpec, probe: { run: string; stage: 'verify' | 'unless' }): Promise<StepOutcome> {
    let cmd: string;
    try {
      cmd = this.render(probe.run, step);
    } catch (err) {
      if (!(err instanceof RunbookError)) throw err;
      // e.g. a verify that reads the step's own register, which the dead run did not record
      const reason = `the dead run started this step and its ${probe.stage} cannot tell whether it took effect: ${errMessage(err)}`;
      return { status: 'failed', stage: probe.stage, code: null, reason };
    }
    const res = await this.exec(step, cmd);
    if (res.code === 0) return { status: step.readOnly ? 'ok' : 'changed', stage: probe.stage, code: 0, result: res, command: cmd };
    const reason = `the dead run's step did not take effect (${probe.stage} exit ${res.code})`;
    return { status: 'failed', stage: probe.stage, code: res.code, result: res, command: cmd, reason };
  }

  // ---------------------------------------------------------------------------------------------
  // rollback

  /** Undoes `indices` (in run order: the last is undone first) of an earlier run. */
  async undo(indices: number[], registers: Record<string, Registered> = {}): Promise<void> {
    this.ledger = indices.map((i) => this.steps[i]);
    this.registers = { ...registers };
    this.fleet.emit({ type: 'host-start', host: this.host.name, batch: 0 });
    if (!(await this.open(true))) return;
    const ok = await this.unwind();
    await this.end(ok ? 'rolled-back' : 'needs-attention', ok ? undefined : 'a rollback failed; fix the host by hand');
  }

  // ---------------------------------------------------------------------------------------------
  // Failure paths: the rules, once

  /** The host cannot be reached (connect, lock, or outside a step's command). */
  async lost(err: unknown): Promise<void> {
    if (this.ledger.length === 0 && this.changed.length === 0) {
      this.fleet.countFailure();
      return this.end('unreachable', errMessage(err));
    }
    if (!this.connected) {
      this.fleet.countFailure();
      const id = this.fleet.runId;
      return this.end(
        'needs-attention',
        `cannot reach the host, which run ${id} changed and has not undone: ${errMessage(err)}; when it is back, undo it: runbook rollback ${id}`,
      );
    }
    return this.fail(this.current, { status: 'unknown', stage: 'run', code: null, reason: errMessage(err) });
  }

  /** A step failed, or its outcome is unknown (`step` undefined: the link dropped between steps). */
  private async fail(step: StepSpec | undefined, r: StepOutcome): Promise<void> {
    this.fleet.countFailure();
    const what = step ? `step "${step.name}" ${r.status === 'unknown' ? 'has an unknown outcome' : 'failed'}` : 'the connection was lost';
    const why = `${what}: ${r.reason ?? ''}`.trim();
    if (r.status === 'unknown') {
      // The connection died (or a kill was not confirmed): reconnect, make sure the command is no longer
      // running (a rollback must not race it), then roll back; else hand the host to a human.
      try {
        await this.t.reconnect();
      } catch (err) {
        return this.end(
          'needs-attention',
          `${why}; could not reconnect to roll back (${errMessage(err)}); check the host by hand, then run: runbook rollback ${this.fleet.runId}`,
          step?.name,
        );
      }
      const settled = (await this.t.settleOrphans?.()) ?? { ok: true };
      if (!settled.ok) {
        return this.end(
          'needs-attention',
          `${why}; ${settled.detail}, so nothing was rolled back (it would race the command): stop it on the host, then run: runbook rollback ${this.fleet.runId}`,
          step?.name,
        );
      }
    }
    if (this.fleet.opts.rollbackOnFailure === false) {
      return this.end(
        this.changed.length || this.ledger.length ? 'needs-attention' : 'failed',
        `${why}; rollback disabled (--no-rollback)`,
        step?.name,
      );
    }
    if (this.ledger.length === 0) return this.end('failed', why, step?.name);
    const ok = (await this.unwind()) && !this.undoFailed;
    await this.end(ok ? 'rolled-back' : 'needs-attention', ok ? why : `${why}; a rollback failed too, the host needs a human`, step?.name);
  }

  /** Interrupted or journal broken between steps: undo what this host changed. */
  private async abort(why: string): Promise<void> {
    if (this.fleet.opts.rollbackOnFailure === false) {
      return this.end(this.changed.length ? 'needs-attention' : 'skipped', `${why}; rollback disabled (--no-rollback), host left as it is`);
    }
    if (this.ledger.length === 0) {
      return this.end(
        this.changed.length ? 'needs-attention' : 'skipped',
        this.changed.length ? `${why}; steps without rollback changed the host` : why,
      );
    }
    const ok = (await this.unwind()) && !this.undoFailed;
    await this.end(ok ? 'rolled-back' : 'needs-attention', ok ? why : `${why}; a rollback failed, the host needs a human`);
  }

  /**
   * Runs the ledger in reverse, down to `downTo` entries: the failed step's own rollback first
   * (it was pushed last), then earlier changed steps. A failing rollback does not stop the unwind.
   */
  private async unwind(downTo = 0): Promise<boolean> {
    let allOk = true;
    let lost: string | undefined; // set once the host cannot be reached again: the rest is not attempted
    while (this.ledger.length > downTo) {
      const step = this.ledger.pop()!;
      const started = Date.now();
      this.fleet.emit({ type: 'rollback-start', host: this.host.name, step: step.name, index: step.index });
      await this.fleet.sync().catch(() => undefined); // a broken journal must not stop a rollback
      let res: ExecResult | undefined;
      let message: string | undefined;
      let cmd = '';
      try {
        cmd = this.render(step.rollback!, step);
        if (lost) throw new TransportError('E_CONN_LOST', this.host.name, lost);
        res = await this.exec(step, cmd);
      } catch (err) {
        if (lost) {
          message = `not attempted: ${lost}`;
        } else if (err instanceof TransportError) {
          try {
            await this.t.reconnect();
            // The first try may still run: it must be gone before the rollback runs again.
            const settled = (await this.t.settleOrphans?.()) ?? { ok: true };
            if (!settled.ok) throw new Error(`the first try of this rollback: ${settled.detail}`);
            res = await this.exec(step, cmd);
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
      this.fleet.emit({
        type: 'rollback-end',
        host: this.host.name,
        step: step.name,
        index: step.index,
        status: ok ? 'ok' : 'failed',
        code: res?.code ?? null,
        duration_ms: Date.now() - started,
        stdout: tail(this.fleet.redactor, res?.stdout ?? '', res?.truncated?.stdout),
        stderr: tail(this.fleet.redactor, res?.stderr ?? '', res?.truncated?.stderr),
        command: cmd,
        ...(message ? { message } : {}),
      });
    }
    return allOk;
  }

  // ---------------------------------------------------------------------------------------------
  // The end

  async end(status: HostStatus, message?: string, failedStep?: string, code?: string): Promise<void> {
    if (!this.fleet.settle(this.host.name, status)) return;
    if (message === undefined && this.notes.length) message = this.notes.join('; ');
    // In step order, whether the dead run (adopt) or this one changed them.
    const order = new Map(this.steps.map((s) => [s.name, s.index]));
    this.changed.sort((a, b) => (order.get(a) ?? 0) - (order.get(b) ?? 0));
    const facts = this.facts();
    this.fleet.emit({
      type: 'host-end',
      host: this.host.name,
      status,
      duration_ms: Date.now() - this.started,
      ...(message ? { message } : {}),
      ...(failedStep ? { failed_step: failedStep } : {}),
      ...(code ? { code } : {}),
      ...(this.changed.length ? { changed_steps: this.changed } : {}),
      ...(facts ? { facts } : {}),
    });
    await this.fleet.sync().catch(() => undefined); // the end is durable before the lock goes
    await this.close();
  }

  /** Releases the lock (if held) and closes the connections. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const hostLock = this.fleet.opts.lock;
    if (this.locked && hostLock) {
      this.locked = false;
      await hostLock.release(this.t, this.host.name).catch((err) => {
        this.fleet.emit({ type: 'warning', host: this.host.name, message: `could not release the host lock: ${errMessage(err)}` });
      });
    }
    await this.closeTransports();
  }

  /** A host with nothing to undo in a rollback: only drop the lock the earlier run may have left. */
  async releaseLeftLock(): Promise<void> {
    const hostLock = this.fleet.opts.lock;
    if (!hostLock) return;
    try {
      await this.t.connect();
      await hostLock.release(this.t, this.host.name);
    } catch (err) {
      this.fleet.emit({
        type: 'warning',
        host: this.host.name,
        message: `could not check for a lock left by run ${this.fleet.runId}: ${errMessage(err)}`,
      });
    } finally {
      this.closed = true;
      await this.closeTransports();
    }
  }
}

/** The stable code of a RunbookError (E_LOCKED, ...), for the host's end. */
function codeOf(err: unknown): string | undefined {
  return err instanceof RunbookError ? err.code : undefined;
}

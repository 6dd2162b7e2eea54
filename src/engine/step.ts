/**
 * One step on one host: when -> unless -> run -> verify (retried), rendering every command for
 * this host and recording the step's end. The host's state machine (host.ts) decides what a
 * step's outcome means for the host.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ACTIONS } from '../actions/index.js';
import { RunbookError } from '../core/errors.js';
import type { Redactor } from '../core/redact.js';
import { type Expr, ExprError, evalExpr } from '../plan/expr.js';
import { lookupPath, renderCommand, renderText } from '../plan/template.js';
import { type PlannedHost, varsFor } from '../plan/types.js';
import type { StepSpec, VerifySpec } from '../runbook/types.js';
import type { ExecResult, Transport } from '../transport/types.js';
import { TransportError } from '../transport/types.js';
import type { EventInput, Registered, RunEvent, StepStatus } from './events.js';
import type { EngineOptions } from './options.js';

const OUTPUT_TAIL = 4096;
const REGISTER_MAX = 65536;

/**
 * The last n characters of s, redacted: what is left of a secret at the cut goes too. `bytes`: how much the
 * command printed when the transport kept only part of it (said in front).
 */
export function tail(redactor: Redactor, s: string, bytes?: number, n = OUTPUT_TAIL): string {
  if (s.length <= n && bytes === undefined) return redactor.redact(s);
  const said =
    bytes === undefined ? '…' : `… [output truncated: ${bytes} bytes printed, the last ${Math.min(n, s.length)} characters kept]\n`;
  return `${said}${redactor.redactCut(s.slice(Math.max(0, s.length - n)), { start: true })}`;
}

export function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export interface StepOutcome {
  status: StepStatus;
  /** The step that decided (an escalation's failing step). */
  step?: StepSpec;
  stage: 'if' | 'when' | 'unless' | 'run' | 'verify';
  code: number | null;
  result?: ExecResult;
  command?: string;
  reason?: string;
  attempts?: number;
}

/** Thrown inside a host's flow when the journal cannot be written: stop changing this host. */
export class JournalStop extends Error {}

/** What a host's steps need from the run around them. */
export interface RunScope {
  readonly opts: EngineOptions;
  readonly interrupted: boolean;
  /** Every secret of the run, in every form (engine.ts redactorFor). */
  readonly redactor: Redactor;
  emit(e: EventInput, journal?: boolean): void;
  /** Makes everything journaled so far durable; throws JournalStop when the journal is broken. */
  sync(): Promise<void>;
}

/** A host's connection and the step machinery on it. */
export class StepRunner {
  readonly t: Transport;
  private local?: Transport;
  registers: Record<string, Registered> = {};
  /** Steps whose run started and own a rollback, in order (the last is undone first). */
  ledger: StepSpec[] = [];
  /** The step being worked on (for a connection lost between commands). */
  current?: StepSpec;

  constructor(
    protected readonly run: RunScope,
    readonly host: PlannedHost,
  ) {
    this.t = run.opts.transport(host);
  }

  protected async closeTransports(): Promise<void> {
    await Promise.allSettled([this.t.close(), this.local?.close()]);
  }

  /** A template of `step` rendered for this host: its registers, then the step's variables. */
  render(tpl: string, step: StepSpec): string {
    return renderCommand(tpl, this.lookup(varsFor(this.host, step)));
  }

  /** A template's values for this host: its registers first, then `vars`. */
  private lookup(vars: Record<string, unknown>): (path: string) => unknown {
    return (path) => lookupPath(path.split('.')[0] in this.registers ? (this.registers as unknown as Record<string, unknown>) : vars, path);
  }

  /**
   * The runbook's facts for this host, from what ran: one line each (at most 300 characters, redacted).
   * A fact whose register did not run (a failed preflight) is left out.
   */
  facts(): Record<string, string> | undefined {
    const defs = this.run.opts.plan.runbook.facts;
    if (!defs) return undefined;
    const lookup = this.lookup(varsFor(this.host, {}));
    const out: Record<string, string> = {};
    for (const [name, tpl] of Object.entries(defs)) {
      try {
        const v = renderText(tpl, (path) => {
          const x = lookup(path);
          return typeof x === 'string' ? x.trimEnd() : x; // a command's output ends with a newline
        });
        const line = this.run.redactor.redact(v.trim().replace(/\s*\n\s*/g, ' | ')).slice(0, 300);
        if (line) out[name] = line;
      } catch {
        /* its register did not run */
      }
    }
    return Object.keys(out).length ? out : undefined;
  }

  /** A condition (if:, apply_if:) decided here, without a round trip; throws ExprError. */
  decide(e: Expr, scope: { scope?: number } = {}): boolean {
    return evalExpr(e, {
      vars: varsFor(this.host, scope),
      host: this.host.name,
      runId: this.run.opts.plan.runId,
      registers: this.registers,
    });
  }

  /** gate: see ExecOptions.gate; awaited here first when the transport cannot take it. */
  async exec(step: StepSpec, cmd: string, gate?: Promise<void>): Promise<ExecResult> {
    let t = this.t;
    if (step.local) {
      this.local ??= this.run.opts.localTransport(this.host);
      t = this.local;
      await t.connect();
    }
    if (gate !== undefined && !t.gates) {
      await gate;
      gate = undefined;
    }
    const name = this.host.name;
    // Streamed output is redacted as it comes: a secret split over two chunks is held back until it is whole.
    const streams = this.run.opts.streamOutput ? { stdout: this.run.redactor.stream(), stderr: this.run.redactor.stream() } : undefined;
    const show = (stream: 'stdout' | 'stderr', data: string): void => {
      if (data) this.run.emit({ type: 'output', host: name, step: step.name, stream, data }, false);
    };
    try {
      return await t.exec(cmd, {
        timeoutMs: step.timeoutMs,
        become: step.become || undefined, // not set on the step: the host's ansible_become applies
        becomeUser: this.host.connection.becomeUser,
        onOutput: streams && ((stream, data) => show(stream, streams[stream].push(data))),
        ...(gate !== undefined ? { gate } : {}),
      });
    } finally {
      if (streams) for (const s of ['stdout', 'stderr'] as const) show(s, streams[s].end());
    }
  }

  /** A step's built-in action (call:), its parameters rendered for this host (trimmed: a register's output ends with a newline). */
  private async callAction(step: StepSpec, call: NonNullable<StepSpec['call']>, gate?: Promise<void>): Promise<ExecResult> {
    const lookup = this.lookup(varsFor(this.host, step));
    const args = Object.fromEntries(Object.entries(call.with).map(([k, v]) => [k, renderText(v, lookup).trim()]));
    await gate;
    const started = Date.now();
    await this.t.connect();
    const r = await ACTIONS[call.action](
      {
        transport: this.t,
        become: step.become || undefined,
        becomeUser: this.host.connection.becomeUser,
        timeoutMs: step.timeoutMs,
      },
      args,
    );
    return { code: r.code, signal: null, stdout: r.stdout, stderr: r.stderr, timedOut: false, durationMs: Date.now() - started };
  }

  /**
   * A step with its start and end events. Rejects with TransportError only if the connection is
   * lost before `run` starts (the step's end then says `unknown`).
   */
  async runStep(step: StepSpec): Promise<StepOutcome> {
    const started = Date.now();
    this.current = step;
    this.run.emit({ type: 'step-start', host: this.host.name, step: step.name, phase: step.phase, index: step.index });
    let out: StepOutcome;
    try {
      out = await this.stepBody(step);
    } catch (err) {
      if (err instanceof TransportError) {
        this.endStep(step, { status: 'unknown', stage: 'run', code: null, reason: errMessage(err) }, started);
        throw err;
      }
      if (!(err instanceof RunbookError)) throw err;
      // A template that cannot render for this host (e.g. a register of a skipped step).
      out = { status: 'failed', stage: 'run', code: null, reason: errMessage(err) };
    }
    this.settleRegister(step, out.status);
    this.endStep(step, out, started);
    return out;
  }

  /** Records how a step ended in its register; a step that did not run still defines it (empty), so later templates render. */
  settleRegister(step: StepSpec, status: StepStatus): void {
    if (!step.register) return;
    this.registers[step.register] ??= { stdout: '', stderr: '', code: null };
    this.registers[step.register].status = status;
  }

  /** if (here) -> when -> unless -> run -> verify (retried). The intent is durable before `run` starts. */
  async stepBody(step: StepSpec): Promise<StepOutcome> {
    if (step.if) {
      const said = this.condition(step.if, step);
      if (said !== true) return said;
    }
    if (step.when !== undefined) {
      const cmd = this.render(step.when, step);
      const r = await this.exec(step, cmd);
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
      const cmd = this.render(step.unless, step);
      const r = await this.exec(step, cmd);
      if (r.code === 0) return { status: 'ok', stage: 'unless', code: 0, result: r, command: cmd };
    }
    const cmd = this.render(step.run, step);
    // Write-ahead: the step-start intent is on disk before anything changes. The sync is the exec's gate: the
    // transport opens the channel meanwhile and sends the script only after it; the ledger entry comes first.
    let gate: Promise<void> | undefined;
    if (step.phase === 'step') {
      gate = this.run.sync().then(() => {
        if (step.rollback) this.ledger.push(step);
      });
      gate.catch(() => {
        /* awaited by the transport, or below */
      });
    }
    let r: ExecResult;
    try {
      r = step.call ? await this.callAction(step, step.call, gate) : await this.exec(step, cmd, gate);
    } catch (err) {
      if (gate !== undefined) await gate; // a journal failure wins (JournalStop), as if the sync had run before the exec
      if (err instanceof TransportError && step.phase === 'step') {
        return { status: 'unknown', stage: 'run', code: null, command: cmd, reason: errMessage(err) };
      }
      throw err;
    }
    if (step.register) {
      this.registers[step.register] = { stdout: r.stdout.slice(0, REGISTER_MAX), stderr: r.stderr.slice(0, REGISTER_MAX), code: r.code };
    }
    const done: StepStatus = step.phase === 'preflight' || step.readOnly ? 'ok' : 'changed';
    if (r.timedOut)
      return {
        // A kill that could not be confirmed leaves the command perhaps running: its effect is unknown.
        status: r.killUnconfirmed && step.phase === 'step' ? 'unknown' : 'failed',
        stage: 'run',
        code: null,
        result: r,
        command: cmd,
        reason: r.killUnconfirmed
          ? `timed out after ${step.timeoutMs} ms; the kill could not be confirmed (no channel for it, or the command outlived it), so it may still be running`
          : `timed out after ${step.timeoutMs} ms and was killed`,
      };
    if (r.code !== 0)
      return {
        status: 'failed',
        stage: 'run',
        code: r.code,
        result: r,
        command: cmd,
        reason: `exit ${r.code ?? r.signal}${lastWords(this.run.redactor, r)}`,
      };
    if (!step.verify) return { status: done, stage: 'run', code: 0, result: r, command: cmd };
    return this.verify(step, step.verify, done);
  }

  /** A step's if: true, or the outcome it decides (false: skipped; an error: failed, nothing sent). */
  condition(e: Expr, step: StepSpec): true | StepOutcome {
    try {
      if (this.decide(e, step)) return true;
      return { status: 'skipped', stage: 'if', code: null, reason: `if is false: ${e.source}` };
    } catch (err) {
      if (!(err instanceof ExprError)) throw err;
      return { status: 'failed', stage: 'if', code: null, reason: `if: ${e.source}: ${err.message}` };
    }
  }

  private async verify(step: StepSpec, verify: VerifySpec, done: StepStatus): Promise<StepOutcome> {
    const vcmd = this.render(verify.run, step);
    let last: ExecResult | undefined;
    const attempts = verify.retries + 1;
    for (let i = 1; i <= attempts; i++) {
      try {
        last = await this.exec(step, vcmd);
      } catch (err) {
        if (err instanceof TransportError && step.phase === 'step') {
          return { status: 'unknown', stage: 'verify', code: null, command: vcmd, reason: errMessage(err), attempts: i };
        }
        throw err;
      }
      if (last.code === 0 && !last.timedOut) return { status: done, stage: 'verify', code: 0, result: last, command: vcmd, attempts: i };
      if (i < attempts) {
        if (this.run.interrupted) break;
        await sleep(verify.delayMs);
      }
    }
    return {
      status: 'failed',
      stage: 'verify',
      code: last?.code ?? null,
      result: last,
      command: vcmd,
      attempts,
      reason: `verify did not hold after ${attempts} attempt${attempts > 1 ? 's' : ''} (last exit ${last?.timedOut ? 'timeout' : (last?.code ?? last?.signal)})${last ? lastWords(this.run.redactor, last) : ''}`,
    };
  }

  /** A register as events show it: redacted, and a secret cut at REGISTER_MAX goes too. */
  private shownRegister(reg: Registered): Registered {
    const cut = (s: string) => this.run.redactor.redactCut(s, { end: s.length >= REGISTER_MAX });
    return { ...reg, stdout: cut(reg.stdout), stderr: cut(reg.stderr) };
  }

  /** `alternative`: for an escalation, the one that held (a step of an alternative names its own). */
  endStep(step: StepSpec, r: StepOutcome, started: number, alternative = step.alternative?.name): void {
    const reg = step.register && this.registers[step.register];
    this.run.emit({
      type: 'step-end',
      host: this.host.name,
      step: step.name,
      phase: step.phase,
      index: step.index,
      status: r.status,
      code: r.code,
      duration_ms: Date.now() - started,
      stage: r.stage,
      ...(r.attempts ? { attempts: r.attempts } : {}),
      ...(r.result?.timedOut ? { timed_out: true } : {}),
      stdout: tail(this.run.redactor, r.result?.stdout ?? '', r.result?.truncated?.stdout),
      stderr: tail(this.run.redactor, r.result?.stderr ?? '', r.result?.truncated?.stderr),
      ...(r.command !== undefined ? { command: r.command } : {}),
      ...(r.reason ? { message: r.reason } : {}),
      ...(reg ? { register: this.shownRegister(reg) } : {}),
      ...(alternative !== undefined ? { alternative } : {}),
    } as Omit<Extract<RunEvent, { type: 'step-end' }>, 'time'>);
  }
}

/** ": <last line the command printed>" (stderr first), to say why in one line; '' if silent. */
export function lastWords(redactor: Redactor, r: ExecResult): string {
  const line = (r.stderr.trim() || r.stdout.trim()).split('\n').pop()?.trim() ?? '';
  return line ? `: ${line.length > 300 ? `${redactor.redactCut(line.slice(0, 300), { end: true })}…` : redactor.redact(line)}` : '';
}

/**
 * `plan --probe`: a read-only look at one host. Connect, run the preflight, decide apply_if,
 * then per step its if, when and unless; never a step's `run` or `rollback`.
 */
import { RunbookError } from '../core/errors.js';
import { ExprError } from '../plan/expr.js';
import type { StepSpec } from '../runbook/types.js';
import type { ProbeResult } from './options.js';
import { errMessage, StepRunner } from './step.js';

export class ProbeRun extends StepRunner {
  /** Connect, run the preflight, then each step's when/unless. Never runs a step's `run` or `rollback`. */
  async probe(): Promise<ProbeResult> {
    const res: ProbeResult = { host: this.host.name, reachable: true, preflight: [], steps: [] };
    try {
      await this.t.connect();
      for (const step of this.run.opts.plan.runbook.preflight) {
        const r = await this.stepBody(step);
        this.settleRegister(step, r.status);
        res.preflight.push({
          step: step.name,
          ok: r.status !== 'failed',
          output: this.run.redactor.redact(lastLines(r.result ? `${r.result.stdout}\n${r.result.stderr}` : '', 10)),
          reason: r.reason,
        });
        if (r.status === 'failed') {
          res.blocked = `preflight "${step.name}" failed: ${r.reason}`;
          break;
        }
      }
      const applyIf = this.run.opts.plan.runbook.applyIf;
      if (!res.blocked && applyIf) {
        try {
          res.applyIf = this.decide(applyIf);
        } catch (err) {
          if (!(err instanceof ExprError)) throw err;
          res.blocked = `apply_if: ${applyIf.source}: ${err.message}`;
        }
      }
      if (!res.blocked && res.applyIf !== false) {
        for (const step of this.run.opts.plan.runbook.steps) res.steps.push({ step: step.name, verdict: await this.probeStep(step) });
      }
    } catch (err) {
      res.reachable = false;
      res.blocked = errMessage(err);
    } finally {
      await this.closeTransports();
    }
    return res;
  }

  private async probeStep(step: StepSpec): Promise<string> {
    const alt = step.alternative ? `[alternative ${step.alternative.name}] ` : '';
    try {
      if (step.if) {
        const said = this.condition(step.if, step);
        if (said !== true) return `${alt}${said.status === 'skipped' ? 'skip (if is false)' : `would fail: ${said.reason}`}`;
      }
      if (step.escalate) return `would try, until one holds: ${step.escalate.map((a) => a.name).join(', then ')}`;
      if (step.when !== undefined && (await this.exec(step, this.render(step.when, step))).code !== 0) return `${alt}skip (when is false)`;
      if (step.unless !== undefined && (await this.exec(step, this.render(step.unless, step))).code === 0) {
        return `${alt}ok (unless is true: already done)`;
      }
      return `${alt}would run`;
    } catch (err) {
      if (err instanceof RunbookError) return `unknown until earlier steps run (${err.message})`;
      throw err;
    }
  }
}

function lastLines(s: string, n: number): string {
  return s.trim().split('\n').filter(Boolean).slice(-n).join('\n');
}

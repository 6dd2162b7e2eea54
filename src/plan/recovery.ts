/**
 * Pure recovery planning: a run's history (journal replayed) + the runbook + a plan rebuilt
 * from the run's recorded inputs -> what `resume` or `rollback` will do on each host. Every
 * refusal (live run, no recorded plan, changed runbook, missing secret, changed inventory)
 * is returned as data. No I/O: the caller reads the journal and the runbook file, checks
 * whether the run's controller still lives, and loads the inventory.
 *
 * Two calls, because the plan can only be rebuilt from what the first one decides:
 *   recoveryInputs(history, request)        -> the inputs to load (runbook file, inventory, -e ...)
 *   planRecovery(history, request, plan)    -> per host: the resume state or the ledger to undo
 */
import type { HostStatus, StepStatus } from '../core/status.js';
import type { RunStartEvent } from '../engine/events.js';
import type { HostHistory, RunHistory } from '../journal/history.js';
import type { Runbook } from '../runbook/types.js';
import type { HostResumeState, Plan } from './types.js';

export type RecoveryMode = 'resume' | 'rollback';

export interface Refusal {
  code: 'E_RUN_ACTIVE' | 'E_RUN_NO_PLAN' | 'E_RUNBOOK_CHANGED' | 'E_RESUME_SECRETS' | 'E_RUN_PLAN_CHANGED';
  message: string;
}

export type Decided<T> = { ok: true; value: T } | { ok: false; refusal: Refusal };

export interface RecoveryRequest {
  mode: RecoveryMode;
  /** --force: go on with a changed runbook file or changed host addresses. */
  force: boolean;
  /** Whether the process that last opened the journal, with no run ended after, still runs (the caller looked). */
  alive: boolean;
  /** The runbook file now: its sha256, or why it cannot be read. */
  runbookNow: { hash: string } | { error: string };
  /** Given again on the command line. */
  given: { extraVars: string[]; user?: string; privateKey?: string; forks?: number };
}

/** What to load to rebuild the run's plan. */
export interface RecoveryInputs {
  runbookFile: string;
  inventory: string[];
  limit?: string;
  /** Recorded -e values, then those given again (they win over redacted ones). */
  extraVars: string[];
  forks?: number;
  user?: string;
  privateKey?: string;
  cwd?: string;
}

export interface RecoveryPlan {
  mode: RecoveryMode;
  /** The run's plan: its recorded hosts, batches and budget, with today's variables and connections. */
  plan: Plan;
  /** resume: what the engine needs to continue each host that had started (others start normally). */
  resume: Map<string, HostResumeState>;
  /** rollback: per recorded host, the step indices to undo, in run order (the engine undoes the last first). */
  undo: Map<string, number[]>;
}

const refuse = (code: Refusal['code'], message: string): { ok: false; refusal: Refusal } => ({ ok: false, refusal: { code, message } });

export function recoveryInputs(h: RunHistory, req: RecoveryRequest): Decided<RecoveryInputs> {
  const verb = req.mode;
  if (req.alive && h.openedBy) {
    return refuse(
      'E_RUN_ACTIVE',
      `run ${h.runId} looks alive (its controller process ${String(h.openedBy.pid)} on this machine still runs); stop it first, then ${verb} it`,
    );
  }
  const first = h.start;
  if (!first?.runbook_file || !first.inputs) {
    return refuse(
      'E_RUN_NO_PLAN',
      `run ${h.runId} died before it recorded its plan (${h.path}); no host was changed by it. Start a new run with runbook apply`,
    );
  }
  const file = first.runbook_file;
  if ('error' in req.runbookNow) {
    return refuse(
      'E_RUNBOOK_CHANGED',
      `the runbook of run ${h.runId} (${file}) cannot be read any more: ${req.runbookNow.error}; put it back to ${verb} the run`,
    );
  }
  // The latest run-start with a hash (a forced resume records the new one) is what the hosts now follow.
  const was = (h.current ?? first).runbook_hash;
  const now = req.runbookNow.hash;
  if (was && now !== was && !req.force) {
    return refuse(
      'E_RUNBOOK_CHANGED',
      `the runbook ${file} changed since run ${h.runId} (sha256 ${was.slice(0, 12)}… then, ${now.slice(0, 12)}… now); its step numbers may no longer match the journal. Restore it, or pass --force to ${verb} with the new file`,
    );
  }
  const inputs = first.inputs;
  // Secret -e values are redacted in the journal ("***"): they must be given again.
  const secret = inputs.extra_vars.filter((e) => e.includes('***'));
  if (secret.length && req.given.extraVars.length === 0) {
    return refuse(
      'E_RESUME_SECRETS',
      `run ${h.runId} was given secret extra vars (${secret.join(' ')}), which the journal does not keep; nothing was run. Give them again: runbook ${verb} ${h.runId} -e NAME=VALUE`,
    );
  }
  const o = inputs.options;
  return {
    ok: true,
    value: {
      runbookFile: file,
      inventory: inputs.inventory,
      ...(inputs.limit !== undefined ? { limit: inputs.limit } : {}),
      extraVars: [...inputs.extra_vars, ...req.given.extraVars],
      forks: o.forks ?? req.given.forks,
      user: req.given.user ?? o.user,
      privateKey: req.given.privateKey ?? o['private-key'],
      cwd: inputs.cwd,
    },
  };
}

/** Connection fields that must not have changed for a host (unless --force). */
const PINNED = ['kind', 'address', 'port', 'user'] as const;

export function planRecovery(h: RunHistory, req: RecoveryRequest, fresh: Plan): Decided<RecoveryPlan> {
  const first = h.start as RunStartEvent; // recoveryInputs() refused runs without one
  const verb = req.mode;
  const recordedHosts = first.plan?.hosts.map((x) => x.name) ?? first.hosts;
  const byName = new Map(fresh.hosts.map((x) => [x.name, x]));
  const missing = recordedHosts.filter((n) => !byName.has(n));
  if (missing.length) {
    return refuse(
      'E_RUN_PLAN_CHANGED',
      `the inventory no longer yields host${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of run ${h.runId}; restore the inventory (${(first.inputs?.inventory ?? []).join(', ')}) to ${verb} the run`,
    );
  }
  if (!req.force) {
    for (const rec of first.plan?.hosts ?? []) {
      const now = byName.get(rec.name)!.connection;
      for (const k of PINNED) {
        if (rec.connection[k] !== undefined && rec.connection[k] !== now[k]) {
          return refuse(
            'E_RUN_PLAN_CHANGED',
            `host ${rec.name} of run ${h.runId} now resolves to ${k} ${String(now[k])} (was ${String(rec.connection[k])}); restore the inventory, or pass --force to ${verb} against the new address`,
          );
        }
      }
    }
  }
  // Same hosts, batches and budget as the dead run, even if the inventory or runbook changed since.
  const plan: Plan = {
    ...fresh,
    hosts: recordedHosts.map((n) => byName.get(n)!),
    batches: first.plan?.batches ?? first.batches,
    maxFailed: first.plan?.max_failed ?? first.max_failed,
  };
  const resume = new Map<string, HostResumeState>();
  const undo = new Map<string, number[]>();
  for (const name of recordedHosts) {
    const s = h.hosts.get(name);
    const r = s ? hostRecovery(s, plan.runbook) : { undo: [] };
    undo.set(name, r.undo);
    if (r.resume) resume.set(name, r.resume);
  }
  return { ok: true, value: { mode: req.mode, plan, resume, undo } };
}

/**
 * One host of a dead run: what a resume continues from (undefined: the run never worked on
 * it) and what a rollback undoes (the ledger, plus a step with an intent and no outcome: it
 * may have taken effect, so it is undone first).
 */
export function hostRecovery(s: HostHistory, runbook: Pick<Runbook, 'steps' | 'preflight'>): { resume?: HostResumeState; undo: number[] } {
  const hasRollback = (i: number) => runbook.steps[i]?.rollback !== undefined;
  const ledger = s.ran.filter((i) => hasRollback(i) && !s.rolledBack.has(i) && i !== s.unknown);
  const u = s.unknown;
  const undo = u !== undefined && hasRollback(u) && !s.rolledBack.has(u) ? [...ledger, u] : ledger;
  const worked = s.started || s.done.size > 0 || u !== undefined || s.finished !== undefined;
  if (!worked) return { undo };
  const registers: HostResumeState['registers'] = {};
  for (const r of s.registers) {
    const name = (r.phase === 'preflight' ? runbook.preflight : runbook.steps)[r.index]?.register;
    if (name) registers[name] = r.value;
  }
  const resume: HostResumeState = {
    done: new Map<number, StepStatus>(s.done),
    ...(u !== undefined ? { unknown: u } : {}),
    ledger,
    registers,
    ...(s.alternatives.size ? { alternatives: new Map(s.alternatives) } : {}),
    ...(s.finished !== undefined ? { finished: s.finished as HostStatus } : {}),
  };
  return { resume, undo };
}

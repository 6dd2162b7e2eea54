/**
 * Pure planning: runbook + selected hosts + options -> Plan. No I/O. Every variable a
 * runbook references is resolved here for every host, so bad input fails before any
 * connection is opened.
 */
import type { Runbook, StepSpec } from '../runbook/types.js';
import type { ConnectionSpec } from '../inventory/types.js';
import { type Plan, type PlannedHost, varsFor } from './types.js';
import { checkForHost, type Expr } from './expr.js';
import { RunbookError, ValidationError, type ValidationIssue } from '../core/errors.js';
import { lookupPath, renderCommand, templateRefs } from './template.js';

export interface HostInput {
  name: string;
  /** Inventory variables, already merged in Ansible precedence. */
  vars: Record<string, unknown>;
  connection: ConnectionSpec;
}

export interface PlanOptions {
  runId: string;
  forks: number;
  extraVars?: Record<string, unknown>;
}

/** Variables that hold secrets whatever the runbook says. */
export const SECRET_VAR_NAMES = [
  'ansible_password',
  'ansible_ssh_pass',
  'ansible_become_password',
  'ansible_become_pass',
  'ansible_sudo_pass',
];

export function createPlan(runbook: Runbook, hosts: HostInput[], opts: PlanOptions): Plan {
  const issues: ValidationIssue[] = [];
  if (hosts.length === 0) {
    issues.push({ message: "no hosts selected; check the inventory (-i) and --limit or the runbook's hosts: pattern" });
  }
  if (!Number.isInteger(opts.forks) || opts.forks < 1)
    issues.push({ path: '--forks', message: `--forks must be a whole number >= 1 (got ${opts.forks})` });

  const planned: PlannedHost[] = hosts.map((h) => {
    const over = {
      ...h.vars,
      ...(opts.extraVars ?? {}),
      inventory_hostname: h.name,
      inventory_hostname_short: h.name.split('.')[0],
      run_id: opts.runId,
    };
    const p: PlannedHost = { name: h.name, connection: h.connection, vars: { ...runbook.vars, ...over } };
    if (runbook.scopes?.length) p.scoped = runbook.scopes.map((sc) => ({ ...sc, ...over }));
    return p;
  });

  for (const h of planned) {
    checkRefs(runbook, h, issues);
    checkConditions(runbook, h, issues);
  }

  const secrets = new Set<string>();
  for (const h of planned) {
    for (const vars of [h.vars, ...(h.scoped ?? [])]) {
      for (const name of [...runbook.secretVars, ...SECRET_VAR_NAMES]) {
        const v = vars[name];
        if (v !== undefined && v !== null && String(v) !== '') secrets.add(String(v));
      }
    }
    for (const v of [h.connection.password, h.connection.becomePassword]) if (v) secrets.add(v);
  }

  const batches = hosts.length
    ? splitBatches(
        planned.map((h) => h.name),
        runbook.serial,
      )
    : [];
  const maxFailed = resolveCount(runbook.maxFailed, hosts.length);
  if (issues.length)
    throw new ValidationError(issues.map((i) => ({ file: i.file ?? (i.path?.startsWith('--') ? undefined : runbook.file), ...i })));
  return { runId: opts.runId, runbook, hosts: planned, batches, maxFailed, forks: opts.forks, secrets: [...secrets] };
}

/** Every {{ ref }} must resolve for this host; registered names only in later steps. */
function checkRefs(runbook: Runbook, host: PlannedHost, issues: ValidationIssue[]): void {
  const registered = new Set<string>();
  const all: StepSpec[] = [...runbook.preflight, ...runbook.steps];
  const registers = new Set(registerNames(runbook));
  for (const step of all) {
    const fields: Array<[string, string | undefined]> = [
      ['when', step.when],
      ['unless', step.unless],
      ['run', step.run],
      ['verify.run', step.verify?.run],
      ['rollback', step.rollback],
    ];
    for (const [field, tpl] of fields) {
      if (tpl === undefined) continue;
      const before = issues.length;
      for (const ref of templateRefs(tpl)) {
        if (registered.has(ref.name) || ref.default !== undefined) continue;
        // A step's own register is available to its verify and rollback (they run after run).
        if (ref.name === step.register && (field === 'verify.run' || field === 'rollback')) continue;
        if (lookupPath(varsFor(host, step), ref.path) === undefined) {
          const later = all.some((s) => s.register === ref.name);
          issues.push({
            ...where(runbook, step, field),
            message: later
              ? `variable "${ref.path}" is registered by a later step; step "${step.name}" cannot use it (host ${host.name})`
              : `variable "${ref.path}" is not defined for host ${host.name} (step "${step.name}"); define it in the runbook's vars, the inventory, or with -e ${ref.name}=...`,
          });
        }
      }
      // Every value must also fit where it lands (e.g. an integer inside $(( ))): render the command
      // for this host now, as plan does, so apply finds it before contacting a host. A registered
      // value is only known at run time and is checked then.
      if (issues.length === before) {
        try {
          renderCommand(tpl, (path) => (registers.has(path.split('.')[0]) ? '0' : lookupPath(varsFor(host, step), path)));
        } catch (err) {
          if (!(err instanceof RunbookError)) throw err;
          issues.push({
            ...where(runbook, step, field),
            message: `${err.message} (host ${host.name}, step "${step.name}")`,
          });
        }
      }
    }
    if (step.register) registered.add(step.register);
  }
}

/** Where a step's field is written, for an issue: its file (an included one, or the runbook), path and line. */
function where(runbook: Runbook, step: StepSpec, field: string): Pick<ValidationIssue, 'file' | 'path' | 'line'> {
  const path = step.origin?.path ?? `${step.phase === 'preflight' ? 'preflight' : 'steps'}[${step.index}]`;
  return { file: step.origin?.file ?? runbook.file, path: `${path}.${field}`, ...(step.line !== undefined ? { line: step.line } : {}) };
}

/** Names the conditions of a runbook read as registers. */
export function registerNames(runbook: Runbook): string[] {
  return [...runbook.preflight, ...runbook.steps].flatMap((s) => (s.register ? [s.register] : []));
}

/** Every condition of the runbook, with the step whose variables it sees and the field it is written in. */
export function conditionsOf(runbook: Runbook): Array<{ expr: Expr; step: StepSpec | undefined; field: string }> {
  const out: Array<{ expr: Expr; step: StepSpec | undefined; field: string }> = [];
  if (runbook.applyIf) out.push({ expr: runbook.applyIf, step: undefined, field: 'apply_if' });
  for (const s of [...runbook.preflight, ...runbook.steps]) {
    if (s.if) out.push({ expr: s.if, step: s, field: 'if' });
    s.escalate?.forEach((a, i) => {
      if (a.if) out.push({ expr: a.if, step: s, field: `escalate[${i}].if` });
    });
  }
  return out;
}

/** Every condition must type-check with this host's values, and every vars.NAME it reads be defined. */
function checkConditions(runbook: Runbook, host: PlannedHost, issues: ValidationIssue[]): void {
  const regs = registerNames(runbook);
  for (const c of conditionsOf(runbook)) {
    const err = checkForHost(c.expr, regs, c.step ? varsFor(host, c.step) : host.vars);
    if (!err) continue;
    issues.push({
      ...(c.step ? where(runbook, c.step, c.field) : { file: runbook.file, path: 'apply_if' }),
      message: `${err.message} (host ${host.name}${c.step ? `, step "${c.step.name}"` : ''})`,
    });
  }
}

/** "25%" of total (at least 1) or a plain count. */
export function resolveCount(v: number | string, total: number): number {
  if (typeof v === 'number') return v;
  const m = /^(\d+(?:\.\d+)?)%$/.exec(v.trim());
  if (m) return Math.floor((total * parseFloat(m[1])) / 100);
  return Number(v);
}

/**
 * Ansible's serial: a list of batch sizes; the last one repeats until hosts run out.
 * Empty or [0] = one batch with every host.
 */
export function splitBatches(names: string[], serial: Array<number | string>): string[][] {
  const sizes = serial.length ? serial : [0];
  const out: string[][] = [];
  let i = 0;
  let k = 0;
  while (i < names.length) {
    const spec = sizes[Math.min(k, sizes.length - 1)];
    // A percentage is at least one host; a count of 0 means every host at once.
    let n = typeof spec === 'string' ? Math.max(1, resolveCount(spec, names.length)) : spec;
    if (n <= 0) n = names.length;
    out.push(names.slice(i, i + n));
    i += n;
    k++;
  }
  return out;
}

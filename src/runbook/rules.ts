/**
 * Rules across fields, after the shapes (schema.ts) are checked, on whatever parts have the
 * right shape: names, variables, secrets, registers, every command's template and every
 * condition (CEL), over the steps laid out in run order (expand.ts), includes and all.
 */
import { basename, extname } from 'node:path';
import { compileExpr, type Expr, ExprError } from '../plan/expr.js';
import { analyzeTemplate, TemplateError, type TemplateRef, templateRefs } from '../plan/template.js';
import { type Entry, type Expanded, type FileCtx, checkVarNames, inOrder } from './expand.js';
import type { Pos, PositionMap } from './positions.js';
import { BUILTIN_VARS, IDENT, isMapping, serialItem, show } from './schema.js';

export type AddIssue = (path: string, message: string, pos?: Pos) => void;

/** Top-level rules: the name matches the file, vars and secrets are names, serial items. Returns the runbook's vars. */
export function checkTopLevel(d: Record<string, unknown>, ctx: FileCtx): Record<string, unknown> {
  const { positions, add } = ctx;
  const base = basename(ctx.file, extname(ctx.file));
  if (typeof d.name === 'string' && d.name.trim() !== '' && d.name !== base) {
    add(
      'name',
      `"${d.name}" does not match the file name "${basename(ctx.file)}" (the name must be "${base}", or rename the file)`,
      positions.find('name', 'value'),
    );
  }
  checkVarNames(d.vars, 'vars', ctx);
  if (Array.isArray(d.secrets)) {
    const seen = new Set<string>();
    d.secrets.forEach((s, i) => {
      const p = `secrets[${i}]`;
      if (typeof s !== 'string' || !IDENT.test(s)) add(p, `${show(s)} is not a variable name`, positions.find(p));
      else if (BUILTIN_VARS.includes(s)) add(p, `"${s}" is a built-in variable and cannot be secret`, positions.find(p));
      else if (seen.has(s)) add(p, `"${s}" is listed twice`, positions.find(p));
      seen.add(s);
    });
  }
  if (Array.isArray(d.serial)) {
    d.serial.forEach((s, i) => {
      const msg = serialItem(false)(s);
      if (msg) add(`serial[${i}]`, msg, positions.find(`serial[${i}]`));
    });
  }
  return isMapping(d.vars) === undefined ? (d.vars as Record<string, unknown>) : {};
}

/** Who registers what, and where each entry sits in run order. */
export interface StepIndex {
  order: Map<Entry, number>;
  registers: Map<string, { entry: Entry; order: number }>;
  secretNames: Set<string>;
}

/** Step rules: unique names, read-only preflight, register names, unique alternative names. */
export function checkSteps(d: Record<string, unknown>, x: Expanded, vars: Record<string, unknown>, main: FileCtx): StepIndex {
  const secretNames = new Set(Array.isArray(d.secrets) ? d.secrets.filter((s): s is string => typeof s === 'string') : []);
  const names = new Map<string, Entry>();
  const registers = new Map<string, { entry: Entry; order: number }>();
  const order = new Map<Entry, number>();
  const label = (e: Entry) => (e.ctx === main ? e.path : `${e.path} of ${e.ctx.shown}`);
  let n = 0;
  for (const e of inOrder(x)) {
    order.set(e, n++);
    const { obj: st, ctx, path: sp } = e;
    if (typeof st.name === 'string' && st.name.trim() !== '') {
      const prev = names.get(st.name);
      if (prev)
        ctx.add(
          `${sp}.name`,
          `step name "${st.name}" is already used by ${label(prev)} (step names must be unique)`,
          ctx.positions.find(`${sp}.name`, 'value'),
        );
      else names.set(st.name, e);
    }
    if (e.phase === 'preflight' && st.rollback !== undefined) {
      ctx.add(
        `${sp}.rollback`,
        'preflight steps are read-only and may not have a rollback (move the step to steps:)',
        ctx.positions.find(`${sp}.rollback`),
      );
    }
    const seen = new Map<string, string>();
    for (const a of e.alternatives ?? []) {
      if (seen.has(a.name))
        ctx.add(
          `${a.path}.name`,
          `alternative "${a.name}" is already used by ${seen.get(a.name)}`,
          ctx.positions.find(`${a.path}.name`, 'value'),
        );
      seen.set(a.name, a.path);
    }
    if (typeof st.register === 'string' && IDENT.test(st.register)) {
      const p = `${sp}.register`;
      const reg = st.register;
      const pos = ctx.positions.find(p, 'value');
      if (BUILTIN_VARS.includes(reg) || ['vars', 'host', 'run'].includes(reg))
        ctx.add(p, `"${reg}" is a built-in name; choose another register name`, pos);
      else if (Object.hasOwn(vars, reg))
        ctx.add(p, `"${reg}" would shadow the variable of the same name in vars; choose another register name`, pos);
      else if (registers.has(reg))
        ctx.add(p, `"${reg}" is already registered by ${label(registers.get(reg)!.entry)}; register names must be unique`, pos);
      else registers.set(reg, { entry: e, order: order.get(e)! });
    }
  }
  return { order, registers, secretNames };
}

/**
 * Every command must parse, be placed where a value can be quoted, and use registers only
 * after the registering step (or in its own verify and rollback).
 */
export function checkTemplates(x: Expanded, idx: StepIndex, vars: Record<string, unknown>): void {
  const { registers, secretNames, order } = idx;
  for (const e of inOrder(x)) {
    if (e.kind !== 'step') continue;
    const { obj: st, ctx, path: sp } = e;
    const positions: PositionMap = ctx.positions;
    const myOrder = order.get(e)!;
    const fields: Array<[string, unknown, boolean]> = [
      ['name', st.name, false],
      ['when', st.when, true],
      ['unless', st.unless, true],
      ['run', st.run, true],
      ['verify', typeof st.verify === 'string' ? st.verify : undefined, true],
      [
        'verify.run',
        st.verify && typeof st.verify === 'object' && !Array.isArray(st.verify) ? (st.verify as Record<string, unknown>).run : undefined,
        true,
      ],
      ['rollback', st.rollback, true],
      // a call's parameters are data for the action, never shell text
      ...(st.with && typeof st.with === 'object' && !Array.isArray(st.with)
        ? Object.entries(st.with as Record<string, unknown>).map(([k, v]): [string, unknown, boolean] => [`with.${k}`, v, false])
        : []),
    ];
    for (const [field, tpl, isCommand] of fields) {
      if (typeof tpl !== 'string') continue;
      const p = `${sp}.${field}`;
      let refs: TemplateRef[];
      try {
        refs = templateRefs(tpl);
        if (isCommand) {
          for (const c of analyzeTemplate(tpl)) {
            if (c.unsupported) ctx.add(p, c.unsupported, positions.findInScalar(p, c.offset, tpl));
          }
        }
      } catch (err) {
        if (err instanceof TemplateError) {
          ctx.add(p, `bad template: ${err.message}`, positions.findInScalar(p, err.offset, tpl));
          continue;
        }
        throw err;
      }
      for (const ref of refs) {
        if (ref.raw && secretNames.has(ref.name))
          ctx.add(p, `"${ref.name}" is secret and cannot be used with | raw (remove | raw)`, positions.find(p, 'value'));
        const reg = registers.get(ref.name);
        if (!reg || Object.hasOwn(vars, ref.name)) continue;
        const own = reg.entry === e;
        const ownOk = own && (field === 'verify' || field === 'verify.run' || field === 'rollback');
        if (reg.order > myOrder || (own && !ownOk)) {
          ctx.add(
            p,
            `"${ref.path}" is registered by ${own ? 'this step' : `a later step (${reg.entry.path})`}; it is available only in later steps${own ? " and in this step's verify and rollback" : ''}`,
            positions.find(p, 'value'),
          );
        }
      }
    }
  }
}

/** The compiled conditions, by entry (`if:`) and alternative (`escalate[i].if`), and apply_if. */
export interface Conditions {
  steps: Map<Entry, Expr>;
  alternatives: Map<string, Expr>;
  applyIf?: Expr;
}

/**
 * Every `if:` and `apply_if:` parses and type-checks, reads registers only of earlier steps
 * (apply_if: of the preflight), and gives a bool.
 */
export function checkConditions(d: Record<string, unknown>, x: Expanded, idx: StepIndex, main: FileCtx): Conditions {
  const names = [...idx.registers.keys()];
  const out: Conditions = { steps: new Map(), alternatives: new Map() };
  const compile = (src: string, ctx: FileCtx, path: string, before: number, what: string): Expr | undefined => {
    let e: Expr;
    try {
      e = compileExpr(src, names);
    } catch (err) {
      if (!(err instanceof ExprError)) throw err;
      ctx.add(path, `bad expression: ${err.message}`, ctx.positions.findInScalar(path, err.offset, src));
      return undefined;
    }
    for (const r of e.registers) {
      const reg = idx.registers.get(r)!;
      if (reg.order >= before) {
        const by = reg.order === before ? 'this step' : `a later step (${reg.entry.path})`;
        ctx.add(path, `"${r}" is registered by ${by}; ${what}`, ctx.positions.findInScalar(path, src.indexOf(r), src));
        return undefined;
      }
    }
    return e;
  };
  for (const e of inOrder(x)) {
    const my = idx.order.get(e)!;
    if (typeof e.obj.if === 'string') {
      const c = compile(e.obj.if, e.ctx, `${e.path}.if`, my, "a step's if: can read only the registers of earlier steps");
      if (c) out.steps.set(e, c);
    }
    for (const a of e.alternatives ?? []) {
      if (a.if === undefined) continue;
      const c = compile(a.if, e.ctx, `${a.path}.if`, my, "an alternative's if: can read only the registers of steps before the escalation");
      if (c) out.alternatives.set(a.path, c);
    }
  }
  if (typeof d.apply_if === 'string') {
    const afterPreflight = x.preflight.length ? idx.order.get(x.preflight[x.preflight.length - 1])! + 1 : 0;
    out.applyIf = compile(
      d.apply_if,
      main,
      'apply_if',
      afterPreflight,
      'apply_if is decided after the preflight and can read only its registers',
    );
  }
  return out;
}

/** `facts:` templates parse and name only registers or variables (no secrets: facts reach reports and metrics). */
export function checkFacts(d: Record<string, unknown>, idx: StepIndex, vars: Record<string, unknown>, main: FileCtx): void {
  if (!d.facts || typeof d.facts !== 'object' || Array.isArray(d.facts)) return;
  for (const [name, tpl] of Object.entries(d.facts as Record<string, unknown>)) {
    if (typeof tpl !== 'string') continue;
    const path = `facts.${name}`;
    let refs: TemplateRef[];
    try {
      refs = templateRefs(tpl);
    } catch (err) {
      if (!(err instanceof TemplateError)) throw err;
      main.add(path, `bad template: ${err.message}`, main.positions.findInScalar(path, err.offset, tpl));
      continue;
    }
    for (const ref of refs) {
      if (idx.secretNames.has(ref.name)) main.add(path, `"${ref.name}" is secret and cannot be a fact`, main.positions.find(path, 'value'));
      else if (!idx.registers.has(ref.name) && !Object.hasOwn(vars, ref.name) && ref.default === undefined)
        main.add(path, `"${ref.path}" is neither a register of this runbook nor one of its vars`, main.positions.find(path, 'value'));
    }
  }
}

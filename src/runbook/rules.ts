/**
 * Rules across fields, after the shapes (schema.ts) are checked, on whatever parts have the
 * right shape: names, variables, secrets, registers, and every command's template.
 */
import { basename, extname } from 'node:path';
import { analyzeTemplate, TemplateError, type TemplateRef, templateRefs } from '../plan/template.js';
import { joinPath, type Pos, type PositionMap } from './positions.js';
import { BUILTIN_VARS, IDENT, isMapping, serialItem, show } from './schema.js';

export type AddIssue = (path: string, message: string, pos?: Pos) => void;

/** Top-level rules: the name matches the file, vars and secrets are names, serial items. Returns the runbook's vars. */
export function checkTopLevel(d: Record<string, unknown>, file: string, positions: PositionMap, add: AddIssue): Record<string, unknown> {
  const base = basename(file, extname(file));
  if (typeof d.name === 'string' && d.name.trim() !== '' && d.name !== base) {
    add(
      'name',
      `"${d.name}" does not match the file name "${basename(file)}" (the name must be "${base}", or rename the file)`,
      positions.find('name', 'value'),
    );
  }
  const vars = isMapping(d.vars) === undefined ? (d.vars as Record<string, unknown>) : {};
  for (const k of Object.keys(vars)) {
    const p = joinPath('vars', k);
    if (!IDENT.test(k)) add(p, `"${k}" is not a valid variable name (letters, digits and _, not starting with a digit)`, positions.find(p));
    else if (BUILTIN_VARS.includes(k)) add(p, `"${k}" is a built-in variable and cannot be set here`, positions.find(p));
  }
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

  return vars;
}

/** The step lists as found, with what the template rules need: step order and who registers what. */
export interface StepIndex {
  lists: Array<['preflight' | 'steps', unknown[]]>;
  secretNames: Set<string>;
  registers: Map<string, { path: string; order: number }>;
  stepOrder: Map<string, number>;
}

/** Step rules: unique names, read-only preflight, register names. */
export function checkSteps(d: Record<string, unknown>, vars: Record<string, unknown>, positions: PositionMap, add: AddIssue): StepIndex {
  const lists: Array<['preflight' | 'steps', unknown[]]> = [];
  if (Array.isArray(d.preflight)) lists.push(['preflight', d.preflight]);
  if (Array.isArray(d.steps)) lists.push(['steps', d.steps]);
  const secretNames = new Set(Array.isArray(d.secrets) ? d.secrets.filter((s): s is string => typeof s === 'string') : []);
  const names = new Map<string, string>(); // step name -> path
  const registers = new Map<string, { path: string; order: number }>();
  let order = 0;
  const stepOrder = new Map<string, number>();
  for (const [phase, list] of lists) {
    list.forEach((s, i) => {
      const sp = `${phase}[${i}]`;
      stepOrder.set(sp, order++);
      if (s === null || typeof s !== 'object' || Array.isArray(s)) return;
      const st = s as Record<string, unknown>;
      if (typeof st.name === 'string' && st.name.trim() !== '') {
        const prev = names.get(st.name);
        if (prev)
          add(
            `${sp}.name`,
            `step name "${st.name}" is already used by ${prev} (step names must be unique)`,
            positions.find(`${sp}.name`, 'value'),
          );
        else names.set(st.name, sp);
      }
      if (phase === 'preflight' && st.rollback !== undefined) {
        add(
          `${sp}.rollback`,
          'preflight steps are read-only and may not have a rollback (move the step to steps:)',
          positions.find(`${sp}.rollback`),
        );
      }
      if (typeof st.register === 'string' && IDENT.test(st.register)) {
        const p = `${sp}.register`;
        const reg = st.register;
        if (BUILTIN_VARS.includes(reg)) add(p, `"${reg}" is a built-in variable; choose another register name`, positions.find(p, 'value'));
        else if (Object.hasOwn(vars, reg))
          add(p, `"${reg}" would shadow the variable of the same name in vars; choose another register name`, positions.find(p, 'value'));
        else if (registers.has(reg))
          add(
            p,
            `"${reg}" is already registered by ${registers.get(reg)!.path}; register names must be unique`,
            positions.find(p, 'value'),
          );
        else registers.set(reg, { path: sp, order: stepOrder.get(sp)! });
      }
    });
  }

  return { lists, secretNames, registers, stepOrder };
}

/**
 * Every command must parse, be placed where a value can be quoted, and use registers only
 * after the registering step (or in its own verify and rollback).
 */
export function checkTemplates(idx: StepIndex, vars: Record<string, unknown>, positions: PositionMap, add: AddIssue): void {
  const { lists, secretNames, registers, stepOrder } = idx;
  for (const [phase, list] of lists) {
    list.forEach((s, i) => {
      if (s === null || typeof s !== 'object' || Array.isArray(s)) return;
      const st = s as Record<string, unknown>;
      const sp = `${phase}[${i}]`;
      const myOrder = stepOrder.get(sp)!;
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
      ];
      for (const [field, tpl, isCommand] of fields) {
        if (typeof tpl !== 'string') continue;
        const p = `${sp}.${field}`;
        let refs: TemplateRef[];
        try {
          refs = templateRefs(tpl);
          if (isCommand) {
            for (const c of analyzeTemplate(tpl)) {
              if (c.unsupported) add(p, c.unsupported, positions.findInScalar(p, c.offset, tpl));
            }
          }
        } catch (err) {
          if (err instanceof TemplateError) {
            add(p, `bad template: ${err.message}`, positions.findInScalar(p, err.offset, tpl));
            continue;
          }
          throw err;
        }
        for (const ref of refs) {
          if (ref.raw && secretNames.has(ref.name))
            add(p, `"${ref.name}" is secret and cannot be used with | raw (remove | raw)`, positions.find(p, 'value'));
          const reg = registers.get(ref.name);
          if (!reg || Object.hasOwn(vars, ref.name)) continue;
          const ownOk = reg.path === sp && (field === 'verify' || field === 'verify.run' || field === 'rollback');
          if (reg.order > myOrder || (reg.order === myOrder && !ownOk)) {
            add(
              p,
              `"${ref.path}" is registered by ${reg.path === sp ? 'this step' : `a later step (${reg.path})`}; it is available only in later steps${reg.path === sp ? " and in this step's verify and rollback" : ''}`,
              positions.find(p, 'value'),
            );
          }
        }
      }
    });
  }
}

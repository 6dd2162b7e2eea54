/**
 * The runbook's shape: one check per leaf value with our own messages, assembled into zod
 * schemas; the key lists (for "unknown key", "did you mean") come from the schemas themselves.
 */
// zod/mini with named imports: the bundle keeps ~30 KB of zod instead of ~800 KB (the classic `z`
// namespace drags in every schema type and locale), which is most of `runbook validate`'s start-up.
// Every message shown comes from our checks; zod's own messages (locales) are never used.
import { optional, strictObject, superRefine, unknown } from 'zod/mini';
import { didYouMean } from '../core/errors.js';
import { parseDuration } from '../core/duration.js';
import { joinPath, type PositionMap } from './positions.js';
import type { AddIssue } from './rules.js';
import { checkCall } from '../actions/specs.js';

/** Variables every host has; runbook vars and registers may not shadow them. */
export const BUILTIN_VARS: readonly string[] = ['inventory_hostname', 'run_id'];

export const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const PERCENT = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/;

type Check = (v: unknown) => string | undefined;

export function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return String(v);
}

export const MISSING = Symbol('missing');

/** A leaf validated by a check function (custom, precise messages). */
function leaf(check: Check, required: string | false = false) {
  return unknown().check(
    superRefine((v, ctx) => {
      if (v === undefined) {
        if (required) ctx.addIssue({ code: 'custom', message: required, params: { missing: MISSING } });
        return;
      }
      const msg = check(v);
      if (msg) ctx.addIssue({ code: 'custom', message: msg });
    }),
  );
}

const isString: Check = (v) => (typeof v === 'string' ? undefined : `${show(v)} is not a string (quote it: "...")`);
const nonEmptyString: Check = (v) => isString(v) ?? ((v as string).trim() === '' ? 'is empty (give a shell command)' : undefined);
const isBool: Check = (v) => (typeof v === 'boolean' ? undefined : `${show(v)} is not a boolean (use true or false)`);
const isDuration =
  (positive: boolean): Check =>
  (v) => {
    const hint = '(use 500ms, 30s, 5m, 1h)';
    if (typeof v !== 'string') return `${show(v)} is not a duration ${hint}${typeof v === 'number' ? ': a number needs a unit' : ''}`;
    const ms = parseDuration(v);
    if (ms === undefined) return `${show(v)} is not a duration ${hint}`;
    if (positive && ms <= 0) return `${show(v)} must be longer than 0 ${hint}`;
    return undefined;
  };
const isIdent: Check = (v) =>
  typeof v === 'string' && IDENT.test(v) ? undefined : `${show(v)} is not a valid name (letters, digits and _, not starting with a digit)`;
const isNonNegInt: Check = (v) =>
  typeof v === 'number' && Number.isInteger(v) && v >= 0 ? undefined : `${show(v)} is not a whole number >= 0`;
const percentOk = (v: string): boolean => {
  const m = PERCENT.exec(v);
  if (!m) return false;
  const n = parseFloat(m[1]);
  return n >= 1 && n <= 100;
};
export const serialItem =
  (allowZero: boolean): Check =>
  (v) => {
    if (typeof v === 'number') {
      if (Number.isInteger(v) && (v > 0 || (allowZero && v === 0))) return undefined;
      return `${show(v)} is not a batch size (use ${allowZero ? '0 for all hosts, ' : ''}a whole number >= 1, or a percentage like "25%")`;
    }
    if (typeof v === 'string') {
      if (percentOk(v)) return undefined;
      if (PERCENT.test(v)) return `${show(v)}: a percentage must be between 1% and 100%`;
    }
    return `${show(v)} is not a batch size (use ${allowZero ? '0 for all hosts, ' : ''}a whole number >= 1, or a percentage like "25%")`;
  };
const isSerial: Check = (v) =>
  Array.isArray(v)
    ? v.length === 0
      ? 'is an empty list (give batch sizes, e.g. [1, "25%"], or 0 for all hosts)'
      : undefined
    : serialItem(true)(v);
const isMaxFailed: Check = (v) => {
  if (typeof v === 'number')
    return Number.isInteger(v) && v >= 0
      ? undefined
      : `${show(v)} is not a failure budget (use a whole number >= 0 or a percentage like "10%")`;
  if (typeof v === 'string') {
    const m = PERCENT.exec(v);
    if (m) return parseFloat(m[1]) <= 100 ? undefined : `${show(v)}: a percentage must be between 0% and 100%`;
  }
  return `${show(v)} is not a failure budget (use a whole number >= 0 or a percentage like "10%")`;
};
export const isMapping: Check = (v) =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? undefined : `${show(v)} is not a mapping (write key: value lines)`;
const isList: Check = (v) => (Array.isArray(v) ? undefined : `${show(v)} is not a list (write "- " items)`);
const FACT_NAME = /^[a-z_][a-z0-9_]*$/;
/** facts: name -> one-line template, reported per host at its end (summary, reports, metrics). */
const isFacts: Check = (v) => {
  const m = isMapping(v);
  if (m) return m;
  for (const [k, t] of Object.entries(v as Record<string, unknown>)) {
    if (!FACT_NAME.test(k)) return `fact name "${k}" must be lower case letters, digits and _ (it becomes a metric label value)`;
    if (typeof t !== 'string' || t.trim() === '') return `fact "${k}" must be a non-empty template string, like "{{ reg.stdout }}"`;
  }
  return undefined;
};
const isPreflightFailure: Check = (v) => (v === 'skip-host' || v === 'abort' ? undefined : `${show(v)} is not one of skip-host, abort`);

const verifyObject = strictObject({
  run: leaf(nonEmptyString, 'missing required key "run" (the command that proves the step worked)'),
  retries: optional(leaf(isNonNegInt)),
  delay: optional(leaf(isDuration(false))),
});

const verifySchema = unknown().check(
  superRefine((v, ctx) => {
    if (v === undefined || typeof v === 'string') {
      if (typeof v === 'string' && v.trim() === '') ctx.addIssue({ code: 'custom', message: 'is empty (give a shell command)' });
      return;
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      ctx.addIssue({ code: 'custom', message: `${show(v)} is not a command or a mapping {run, retries, delay}` });
      return;
    }
    const r = verifyObject.safeParse(v);
    if (!r.success) for (const i of r.error.issues) ctx.addIssue({ ...i, path: i.path } as never);
  }),
);

const stepSchema = strictObject({
  name: leaf(nonEmptyString, 'missing required key "name" (every step needs a unique name)'),
  if: optional(leaf(nonEmptyString)),
  when: optional(leaf(nonEmptyString)),
  unless: optional(leaf(nonEmptyString)),
  run: leaf(nonEmptyString, 'missing required key "run" (the shell command of the step)'),
  verify: optional(verifySchema),
  rollback: optional(leaf(nonEmptyString)),
  timeout: optional(leaf(isDuration(true))),
  register: optional(leaf(isIdent)),
  local: optional(leaf(isBool)),
  become: optional(leaf(isBool)),
  rerun: optional(leaf(isBool)),
  read_only: optional(leaf(isBool)),
});

/** A step that calls a built-in action (src/actions/specs.ts) instead of running a shell command. */
const callStepSchema = strictObject({
  name: stepSchema.shape.name,
  if: stepSchema.shape.if,
  when: stepSchema.shape.when,
  unless: stepSchema.shape.unless,
  call: unknown().check(
    superRefine((v, ctx) => {
      const [first] = checkCall(v, {}).filter(([p]) => p === 'call');
      if (first) ctx.addIssue({ code: 'custom', message: first[1] });
    }),
  ),
  with: optional(unknown()),
  verify: optional(verifySchema),
  rollback: stepSchema.shape.rollback,
  timeout: stepSchema.shape.timeout,
  register: stepSchema.shape.register,
  become: stepSchema.shape.become,
  rerun: stepSchema.shape.rerun,
  read_only: stepSchema.shape.read_only,
});

/** `- include: lib/drain.yml` with optional vars: the steps of another file, in place. */
const includeSchema = strictObject({
  include: leaf(nonEmptyString),
  vars: optional(leaf(isMapping)),
});

type Issue = Parameters<Parameters<typeof superRefine>[0]>[1]['addIssue'] extends (i: infer I) => void ? I : never;
const nest = (ctx: { addIssue: (i: Issue) => void }, prefix: PropertyKey[], issues: ReadonlyArray<{ path: PropertyKey[] }>): void => {
  for (const iss of issues) ctx.addIssue({ ...iss, path: [...prefix, ...iss.path] } as never);
};

/** A list of steps (each a step, an include or an escalation); `what` names it in messages. */
const stepListSchema = (what: string, required: boolean, escalations = true) =>
  unknown().check(
    superRefine((v, ctx) => {
      if (v === undefined || v === null) {
        if (required)
          ctx.addIssue({ code: 'custom', message: `missing required key "${what}" (a list of steps)`, params: { missing: MISSING } });
        return;
      }
      if (!Array.isArray(v)) {
        ctx.addIssue({ code: 'custom', message: `${show(v)} is not a list of steps (write "- name: ..." items)` });
        return;
      }
      if (v.length === 0 && required) {
        ctx.addIssue({
          code: 'custom',
          message: `is empty (${what === 'steps' ? 'a runbook needs at least one step' : 'give at least one step'})`,
        });
        return;
      }
      v.forEach((item, i) => {
        if (item === null || typeof item !== 'object' || Array.isArray(item)) {
          ctx.addIssue({ code: 'custom', message: `${show(item)} is not a step (a step is a mapping with name and run)`, path: [i] });
          return;
        }
        const kind = stepKind(item as Record<string, unknown>);
        if (kind === 'escalate' && !escalations) {
          ctx.addIssue({
            code: 'custom',
            message: 'an escalation cannot be inside another escalation or in preflight (write its steps in place)',
            path: [i, 'escalate'],
          });
          return;
        }
        const call = kind === 'step' && 'call' in item;
        const schema = kind === 'include' ? includeSchema : kind === 'escalate' ? escalateSchema : call ? callStepSchema : stepSchema;
        const r = schema.safeParse(item);
        if (!r.success) nest(ctx, [i], r.error.issues);
        if (call) {
          const c = item as Record<string, unknown>;
          for (const [p, message] of checkCall(c.call, c.with))
            if (p !== 'call') ctx.addIssue({ code: 'custom', message, path: [i, ...p.split('.')] });
        }
      });
    }),
  );

export function stepKind(item: Record<string, unknown>): 'include' | 'escalate' | 'step' {
  return 'include' in item ? 'include' : 'escalate' in item ? 'escalate' : 'step';
}

const alternativeSchema = strictObject({
  name: leaf(nonEmptyString, 'missing required key "name" (every alternative needs a name)'),
  if: optional(leaf(nonEmptyString)),
  steps: stepListSchema('steps', true, false),
});

/** `escalate:` alternatives, least destructive first. */
const escalateSchema = strictObject({
  name: leaf(nonEmptyString, 'missing required key "name" (every step needs a unique name)'),
  if: optional(leaf(nonEmptyString)),
  escalate: unknown().check(
    superRefine((v, ctx) => {
      if (!Array.isArray(v) || v.length === 0) {
        ctx.addIssue({
          code: 'custom',
          message: `${Array.isArray(v) ? 'is empty' : `${show(v)} is not a list`} (give the alternatives, least destructive first: "- name: ...\n  steps: [...]")`,
        });
        return;
      }
      v.forEach((item, i) => {
        if (item === null || typeof item !== 'object' || Array.isArray(item)) {
          ctx.addIssue({ code: 'custom', message: `${show(item)} is not an alternative (a mapping with name and steps)`, path: [i] });
          return;
        }
        const r = alternativeSchema.safeParse(item);
        if (!r.success) nest(ctx, [i], r.error.issues);
      });
    }),
  ),
});

export const runbookSchema = strictObject({
  name: leaf(nonEmptyString, 'missing required key "name" (it must equal the file name without .yml)'),
  description: optional(leaf(isString)),
  destructive: optional(leaf(isBool)),
  become: optional(leaf(isBool)),
  serial: optional(leaf(isSerial)),
  max_failed: optional(leaf(isMaxFailed)),
  vars: optional(leaf(isMapping)),
  hosts: optional(leaf(nonEmptyString)),
  secrets: optional(leaf(isList)),
  preflight_failure: optional(leaf(isPreflightFailure)),
  preflight: optional(stepListSchema('preflight', false, false)),
  apply_if: optional(leaf(nonEmptyString)),
  facts: optional(leaf(isFacts)),
  steps: stepListSchema('steps', true),
});

/** A file of steps that runbooks include (`- include: lib/drain.yml`). */
export const fragmentSchema = strictObject({
  description: optional(leaf(isString)),
  vars: optional(leaf(isMapping)),
  steps: stepListSchema('steps', true),
});

export const TOP_KEYS = Object.keys(runbookSchema.shape);
export const FRAGMENT_KEYS = Object.keys(fragmentSchema.shape);
export const STEP_KEYS = Object.keys(stepSchema.shape);
const CALL_STEP_KEYS = Object.keys(callStepSchema.shape);
const VERIFY_KEYS = Object.keys(verifyObject.shape);
const INCLUDE_KEYS = Object.keys(includeSchema.shape);
const ESCALATE_KEYS = Object.keys(escalateSchema.shape);
const ALTERNATIVE_KEYS = Object.keys(alternativeSchema.shape);

export function zodPath(path: ReadonlyArray<PropertyKey>): string {
  let s = '';
  for (const p of path) s = joinPath(s, typeof p === 'number' ? p : String(p));
  return s;
}

/** didYouMean, plus a shared-prefix match (`retry` -> `retries`). */
export function suggest(word: string, known: readonly string[]): string | undefined {
  const w = word.toLowerCase();
  const common = (k: string) => {
    let n = 0;
    while (n < k.length && n < w.length && k[n] === w[n]) n++;
    return n;
  };
  return didYouMean(word, known) ?? known.find((k) => common(k.toLowerCase()) >= Math.min(4, k.length, w.length) && w.length >= 3);
}

/** The keys allowed in the mapping at `path` (`top`: the document's own). */
function knownKeysAt(path: ReadonlyArray<PropertyKey>, d: Record<string, unknown>, top: readonly string[]): readonly string[] {
  if (path.length === 0) return top;
  let v: unknown = d;
  for (const p of path) v = v && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  const last = path[path.length - 1];
  const parent = path[path.length - 2];
  if (last === 'verify') return VERIFY_KEYS;
  if (typeof last === 'number' && parent === 'escalate') return ALTERNATIVE_KEYS;
  if (typeof last === 'number' && v && typeof v === 'object') {
    const kind = stepKind(v as Record<string, unknown>);
    if (kind === 'step' && 'call' in v) return CALL_STEP_KEYS;
    return kind === 'include' ? INCLUDE_KEYS : kind === 'escalate' ? ESCALATE_KEYS : STEP_KEYS;
  }
  return [];
}

/** Translates the schema's issues into ours: "unknown key" with a did-you-mean, the rest as the check said. */
export function shapeIssues(d: Record<string, unknown>, positions: PositionMap, add: AddIssue, fragment = false): void {
  const r = (fragment ? fragmentSchema : runbookSchema).safeParse(d);
  if (!r.success) {
    for (const iss of r.error.issues) {
      const path = zodPath(iss.path);
      if (iss.code === 'unrecognized_keys') {
        const known = knownKeysAt(iss.path, d, fragment ? FRAGMENT_KEYS : TOP_KEYS);
        for (const key of iss.keys) {
          const kp = joinPath(path, key);
          const close = suggest(key, known);
          add(
            kp,
            `unknown key "${key}"${close ? ` (did you mean "${close}"?)` : ''}; known keys: ${known.join(', ')}`,
            positions.find(kp, 'key'),
          );
        }
        continue;
      }
      const missing = (iss as { params?: { missing?: symbol } }).params?.missing === MISSING;
      add(path, iss.message, missing ? positions.find(path) : positions.find(path, 'value'));
    }
  }
}

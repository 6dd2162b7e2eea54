/**
 * Reading and validating runbooks. Validation reports every problem at once, each with file,
 * path (`steps[2].verify.retries`) and line:column: the YAML (positions.ts), the shapes
 * (schema.ts), the rules across fields and templates (rules.ts), then the normalized Runbook.
 */
import { type ActionName, callArgs } from '../actions/specs.js';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { decodeUtf8 } from '../core/text.js';
import { YAMLException } from 'js-yaml';
import { parseDuration } from '../core/duration.js';
import { RunbookError, ValidationError, type ValidationIssue } from '../core/errors.js';
import { displayPath, resolveRunbookPath } from './find.js';
import { type PositionMap, parseYamlWithPositions } from './positions.js';
import { type Entry, type Expanded, expand, type FileCtx, inOrder } from './expand.js';
import { type AddIssue, type Conditions, checkConditions, checkFacts, checkSteps, checkTemplates, checkTopLevel } from './rules.js';
import { shapeIssues, show } from './schema.js';
import { DEFAULT_STEP_TIMEOUT_MS, type Runbook, type StepSpec, type VerifySpec } from './types.js';

export { displayPath, listRunbooks, resolveRunbookPath, shippedRunbooksDir } from './find.js';

/**
 * Finds, reads, parses and validates a runbook. Throws RunbookError E_RUNBOOK_NOT_FOUND /
 * E_RUNBOOK_READ, or ValidationError with every problem found.
 */
export function loadRunbook(nameOrPath: string, cwd: string = process.cwd()): Runbook {
  const file = resolveRunbookPath(nameOrPath, cwd);
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new RunbookError('E_RUNBOOK_READ', `cannot read runbook ${file}: ${(err as Error).message}; check the file's permissions.`, {
      cause: err,
    });
  }
  return parseRunbook(decodeUtf8(bytes, displayPath(file, cwd), 'runbook'), file, {
    cwd,
    hash: createHash('sha256').update(bytes).digest('hex'),
  });
}

/** Validates runbook text as if read from `file` (absolute). Exported for tests and tools. */
export function parseRunbook(
  source: string,
  file: string,
  opts: { cwd?: string; hash?: string; read?: (file: string) => Buffer } = {},
): Runbook {
  const cwd = opts.cwd ?? process.cwd();
  const shown = displayPath(file, cwd);
  const issues: ValidationIssue[] = [];
  const issue =
    (inFile: string): AddIssue =>
    (path, message, pos) => {
      issues.push({ file: inFile, path: path || undefined, line: pos?.line, column: pos?.column, message });
    };
  const add = issue(shown);
  const { d, positions } = parseDocument(source, shown, issues, add);
  const main: FileCtx = { file, shown, positions, add };
  shapeIssues(d, positions, add);
  const vars = checkTopLevel(d, main);
  const x = expand(d, main, vars, { cwd, issue, ...(opts.read ? { read: opts.read } : {}) });
  const idx = checkSteps(d, x, vars, main);
  checkTemplates(x, idx, vars);
  checkFacts(d, idx, vars, main);
  const conds = checkConditions(d, x, idx, main);
  if (issues.length) {
    const files = [shown, ...x.includes.map((i) => displayPath(i.file, cwd))];
    issues.sort(
      (a, b) =>
        files.indexOf(a.file ?? shown) - files.indexOf(b.file ?? shown) ||
        (a.line ?? 1e9) - (b.line ?? 1e9) ||
        (a.column ?? 0) - (b.column ?? 0),
    );
    throw new ValidationError(issues);
  }
  // Without includes the hash is the file's own (journals of earlier versions still match).
  let hash = opts.hash ?? createHash('sha256').update(source, 'utf8').digest('hex');
  if (x.includes.length) {
    const h = createHash('sha256').update(hash);
    for (const inc of x.includes) h.update(`\0${inc.file}\0`).update(createHash('sha256').update(inc.bytes).digest('hex'));
    hash = h.digest('hex');
  }
  return normalize(d, vars, x, conds, main, { file, source, hash });
}

/** The one YAML document of a runbook, as a mapping; anything else is a ValidationError. */
function parseDocument(
  source: string,
  shown: string,
  issues: ValidationIssue[],
  add: AddIssue,
): { d: Record<string, unknown>; positions: PositionMap } {
  let docs: unknown[];
  let positions: PositionMap;
  try {
    ({ docs, positions } = parseYamlWithPositions(source, shown));
  } catch (err) {
    if (err instanceof YAMLException) {
      const m = err.mark;
      issues.push({
        file: shown,
        line: m ? m.line + 1 : undefined,
        column: m ? m.column + 1 : undefined,
        message: `YAML syntax error: ${err.reason}`,
      });
      throw new ValidationError(issues);
    }
    throw err;
  }
  if (docs.length !== 1) {
    add(
      '',
      docs.length === 0
        ? 'the file is empty (a runbook needs at least name and steps)'
        : `the file holds ${docs.length} YAML documents; a runbook is one document`,
      docs.length ? positions.find('#2') : { line: 1, column: 1 },
    );
    throw new ValidationError(issues);
  }
  const doc = docs[0];
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    add('', `the file holds ${show(doc)}, not a runbook (a mapping with name and steps)`, { line: 1, column: 1 });
    throw new ValidationError(issues);
  }
  // YAML aliases share one value, so a small file can stand for billions of values ("billion
  // laughs") that explode once anything walks them (templates, the journal): bound it here.
  if (expandedSize(doc, MAX_VALUES) > MAX_VALUES) {
    add(
      '',
      `the file expands to more than ${MAX_VALUES} values through YAML aliases (&anchor / *alias); a runbook needs far fewer: remove the nested aliases`,
      { line: 1, column: 1 },
    );
    throw new ValidationError(issues);
  }
  return { d: doc as Record<string, unknown>, positions };
}

/** Values a runbook may expand to, aliases counted every time they are used. */
export const MAX_VALUES = 100_000;

/** How many values `v` stands for, aliases expanded; stops counting past `cap`. */
function expandedSize(v: unknown, cap: number): number {
  let n = 0;
  const stack: unknown[] = [v];
  while (stack.length && n <= cap) {
    const x = stack.pop();
    n++;
    if (x !== null && typeof x === 'object') stack.push(...(Array.isArray(x) ? x : Object.values(x)));
  }
  return n;
}

/** The validated document as a Runbook: defaults filled in, durations in ms, steps numbered in run order. */
function normalize(
  d: Record<string, unknown>,
  vars: Record<string, unknown>,
  x: Expanded,
  conds: Conditions,
  main: FileCtx,
  src: { file: string; source: string; hash: string },
): Runbook {
  const { file, source, hash } = src;
  const toStep = (e: Entry, index: number): StepSpec => {
    const s = e.obj;
    let verify: VerifySpec | undefined;
    if (typeof s.verify === 'string') verify = { run: s.verify, retries: 0, delayMs: 0 };
    else if (s.verify && typeof s.verify === 'object') {
      const v = s.verify as Record<string, unknown>;
      verify = {
        run: v.run as string,
        retries: (v.retries as number | undefined) ?? 0,
        delayMs: v.delay !== undefined ? parseDuration(v.delay)! : 0,
      };
    }
    const step: StepSpec = {
      name: s.name as string,
      phase: e.phase,
      index,
      run: (s.run as string | undefined) ?? '',
      timeoutMs: s.timeout !== undefined ? parseDuration(s.timeout)! : DEFAULT_STEP_TIMEOUT_MS,
      local: (s.local as boolean | undefined) ?? false,
      become: (s.become as boolean | undefined) ?? (d.become as boolean | undefined) ?? false,
      line: e.ctx.positions.find(e.path, 'value')?.line,
      origin: { ...(e.ctx !== main ? { file: e.ctx.file } : {}), path: e.path },
    };
    const cond = conds.steps.get(e);
    if (cond) step.if = cond;
    if (s.when !== undefined) step.when = s.when as string;
    if (s.unless !== undefined) step.unless = s.unless as string;
    if (verify) step.verify = verify;
    if (s.rollback !== undefined) step.rollback = s.rollback as string;
    if (s.register !== undefined) step.register = s.register as string;
    if (s.rerun === true) step.rerun = true;
    if (s.read_only === true) step.readOnly = true;
    if (e.scope !== undefined) step.scope = e.scope;
    if (s.call !== undefined) {
      const action = s.call as ActionName;
      step.call = { action, with: callArgs(action, s.with as Record<string, string> | undefined) };
      // what plan and show print (and where templates are checked for every host): the call and its parameters
      step.run = [action, ...Object.entries(step.call.with).map(([k, v]) => `${k}=${v}`)].join(' ');
      step.local = false;
    }
    return step;
  };
  const preflight = x.preflight.map((e, i) => toStep(e, i));
  const steps: StepSpec[] = [];
  const byEntry = new Map<Entry, StepSpec>();
  for (const e of inOrder({ preflight: [], steps: x.steps })) {
    const st = toStep(e, steps.length);
    byEntry.set(e, st);
    steps.push(st);
    if (e.alt) {
      const group = byEntry.get(e.alt.group)!;
      st.alternative = { group: group.index, name: e.alt.name, rank: e.alt.rank };
      group.escalate![e.alt.rank].steps.push(st.index);
    }
    if (e.alternatives) {
      st.escalate = e.alternatives.map((a) => {
        const c = conds.alternatives.get(a.path);
        return { name: a.name, ...(c ? { if: c } : {}), steps: [] };
      });
    }
  }
  let serial: Array<number | string> = [];
  if (Array.isArray(d.serial)) serial = d.serial.map((x) => (typeof x === 'string' ? x.replace(/\s+/g, '') : x)) as Array<number | string>;
  else if (typeof d.serial === 'string') serial = [d.serial.replace(/\s+/g, '')];
  else if (typeof d.serial === 'number' && d.serial > 0) serial = [d.serial];
  const rb: Runbook = {
    name: d.name as string,
    destructive: (d.destructive as boolean | undefined) ?? false,
    become: (d.become as boolean | undefined) ?? false,
    serial,
    maxFailed: typeof d.max_failed === 'string' ? d.max_failed.replace(/\s+/g, '') : ((d.max_failed as number | undefined) ?? 0),
    preflightFailure: (d.preflight_failure as 'skip-host' | 'abort' | undefined) ?? 'skip-host',
    vars: { ...vars },
    secretVars: Array.isArray(d.secrets) ? (d.secrets as string[]) : [],
    preflight,
    steps,
    scopes: x.scopes,
    includes: x.includes.map((i) => i.file),
    file,
    hash,
    source,
  };
  if (conds.applyIf) rb.applyIf = conds.applyIf;
  if (d.facts && typeof d.facts === 'object') rb.facts = { ...(d.facts as Record<string, string>) };
  if (typeof d.description === 'string') rb.description = d.description;
  if (typeof d.hosts === 'string') rb.hosts = d.hosts;
  return rb;
}

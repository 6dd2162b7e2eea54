/**
 * Finding, reading and validating runbooks. Validation reports every problem at once, each
 * with file, path (`steps[2].verify.retries`) and line:column.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, extname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { constructFromEvents, parseEvents, YAMLException } from 'js-yaml';
// zod/mini with named imports: the bundle keeps ~30 KB of zod instead of ~800 KB (the classic `z`
// namespace drags in every schema type and locale), which is most of `runbook validate`'s start-up.
// Every message shown comes from our checks; zod's own messages (locales) are never used.
import { optional, strictObject, superRefine, unknown } from 'zod/mini';
import { didYouMean, RunbookError, ValidationError, type ValidationIssue } from '../core/errors.js';
import { parseDuration } from '../core/duration.js';
import { analyzeTemplate, templateRefs, TemplateError, type TemplateRef } from '../plan/template.js';
import { DEFAULT_STEP_TIMEOUT_MS, type Runbook, type StepSpec, type VerifySpec } from './types.js';

/** Variables every host has; runbook vars and registers may not shadow them. */
export const BUILTIN_VARS = ['inventory_hostname', 'run_id'] as const;

export const TOP_KEYS = [
  'name',
  'description',
  'destructive',
  'become',
  'serial',
  'max_failed',
  'vars',
  'hosts',
  'secrets',
  'preflight_failure',
  'preflight',
  'steps',
] as const;
export const STEP_KEYS = ['name', 'when', 'unless', 'run', 'verify', 'rollback', 'timeout', 'register', 'local', 'become'] as const;
export const VERIFY_KEYS = ['run', 'retries', 'delay'] as const;

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const PERCENT = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/;

// ---------------------------------------------------------------------------------------
// Locations

/** The package root: two directories up from this file (dist/runbook/load.js or src/runbook/load.ts). */
export function packageRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

export function shippedRunbooksDir(): string {
  return join(packageRoot(), 'runbooks');
}

function looksLikePath(s: string): boolean {
  return s.includes('/') || s.includes('\\') || /\.ya?ml$/i.test(s);
}

/**
 * A path (contains `/` or ends .yml/.yaml) is taken as is (relative to cwd); a name is looked up
 * as ./runbooks/NAME.yml, ./runbooks/NAME.yaml, then the package's runbooks/NAME.yml(.yaml).
 * Throws RunbookError E_RUNBOOK_NOT_FOUND listing where it looked.
 */
export function resolveRunbookPath(nameOrPath: string, cwd: string): string {
  const tried: string[] = [];
  if (looksLikePath(nameOrPath)) {
    const p = resolve(cwd, nameOrPath);
    if (isFile(p)) return p;
    tried.push(p);
  } else {
    const dirs = [join(resolve(cwd), 'runbooks'), shippedRunbooksDir()];
    for (const dir of dirs) {
      for (const ext of ['.yml', '.yaml']) {
        const p = join(dir, nameOrPath + ext);
        if (tried.includes(p)) continue;
        if (isFile(p)) return p;
        tried.push(p);
      }
    }
  }
  throw new RunbookError(
    'E_RUNBOOK_NOT_FOUND',
    `runbook "${nameOrPath}" not found; looked at: ${tried.join(', ')}. Run \`runbook list\` to see the available runbooks, or give a path to a .yml file.`,
  );
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** `file` relative to cwd when it lies below it, else as given. */
export function displayPath(file: string, cwd: string): string {
  const rel = relative(resolve(cwd), file);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : file;
}

export interface RunbookListEntry {
  name: string;
  file: string;
  description?: string;
  destructive: boolean;
  shipped: boolean;
}

/** ./runbooks first, then the shipped ones; a local runbook shadows a shipped one of the same name. */
export function listRunbooks(cwd: string = process.cwd()): RunbookListEntry[] {
  const shippedDir = shippedRunbooksDir();
  const localDir = join(resolve(cwd), 'runbooks');
  const same = realOrSelf(localDir) === realOrSelf(shippedDir);
  const out: RunbookListEntry[] = [];
  const seen = new Set<string>();
  const dirs: Array<[string, boolean]> = same
    ? [[shippedDir, true]]
    : [
        [localDir, false],
        [shippedDir, true],
      ];
  for (const [dir, shipped] of dirs) {
    let names: string[];
    try {
      names = readdirSync(dir).sort();
    } catch {
      continue;
    }
    for (const f of names) {
      if (!/\.ya?ml$/i.test(f)) continue;
      const file = join(dir, f);
      if (!isFile(file)) continue;
      const name = f.replace(/\.ya?ml$/i, '');
      if (seen.has(name)) continue;
      seen.add(name);
      const entry: RunbookListEntry = { name, file, destructive: false, shipped };
      try {
        const text = readFileSync(file, 'utf8');
        const [doc] = constructFromEvents(parseEvents(text, { filename: file }), { source: text, filename: file });
        if (doc && typeof doc === 'object' && !Array.isArray(doc)) {
          const d = doc as Record<string, unknown>;
          if (typeof d.description === 'string') entry.description = d.description;
          entry.destructive = d.destructive === true;
        }
      } catch {
        /* listed anyway; `validate` explains what is wrong */
      }
      out.push(entry);
    }
  }
  return out;
}

function realOrSelf(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

// ---------------------------------------------------------------------------------------
// YAML with positions

interface Pos {
  line: number;
  column: number;
} // 1-based
interface NodeLoc {
  /** Where the key of a mapping entry is (undefined for sequence items and the root). */
  key?: Pos;
  /** Where the value starts. */
  value: Pos;
  /** For scalars: style and the value's source range, to locate text inside it. */
  scalarStyle?: number;
  valueStart?: number;
  valueEnd?: number;
}

/** Maps `steps[2].verify.retries` style paths to source positions. */
export class PositionMap {
  private readonly locs = new Map<string, NodeLoc>();
  private readonly lineStarts: number[];
  constructor(readonly source: string) {
    this.lineStarts = [0];
    for (let i = 0; i < source.length; i++) if (source[i] === '\n') this.lineStarts.push(i + 1);
  }
  posOf(offset: number): Pos {
    let lo = 0;
    let hi = this.lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.lineStarts[mid] <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, column: offset - this.lineStarts[lo] + 1 };
  }
  set(path: string, loc: NodeLoc): void {
    if (!this.locs.has(path)) this.locs.set(path, loc);
  }
  get(path: string): NodeLoc | undefined {
    return this.locs.get(path);
  }
  /** Position for an issue at `path`: the key of a mapping entry, else the value; else the nearest ancestor. */
  find(path: string, prefer: 'key' | 'value' = 'key'): Pos | undefined {
    let p = path;
    for (;;) {
      const loc = this.locs.get(p);
      if (loc) return prefer === 'key' ? (loc.key ?? loc.value) : loc.value;
      if (p === '') return undefined;
      p = parentPath(p);
    }
  }
  /** Position of a character offset inside a scalar's decoded value, where it can be mapped exactly. */
  findInScalar(path: string, index: number, value: string): Pos | undefined {
    const loc = this.locs.get(path);
    if (!loc || loc.valueStart === undefined) return this.find(path);
    const start = this.posOf(loc.valueStart);
    const before = value.slice(0, index);
    const nl = before.lastIndexOf('\n');
    if (loc.scalarStyle === 4 /* literal block */) {
      const line = start.line + (before.match(/\n/g)?.length ?? 0);
      if (nl < 0) return { line, column: start.column + index };
      const ls = this.lineStarts[line - 1];
      return ls === undefined ? { line, column: 1 } : { line, column: start.column + (index - nl - 1) };
    }
    // Plain or quoted on one line without escapes: offsets map 1:1.
    const raw = this.source.slice(loc.valueStart, loc.valueEnd);
    if (raw === value) return { line: start.line, column: start.column + index };
    return loc.key ?? start;
  }
}

function parentPath(p: string): string {
  const m = /^(.*?)(?:\.[^.[\]]+|\[\d+\])$/.exec(p);
  return m ? m[1] : '';
}

function joinPath(parent: string, key: string | number): string {
  if (typeof key === 'number') return `${parent}[${key}]`;
  return parent ? `${parent}.${key}` : key;
}

type Frame =
  | { kind: 'map'; path: string; key: string | null; keyPos?: Pos; expectKey: boolean }
  | { kind: 'seq'; path: string; index: number };

/** Parses YAML into a value plus a path -> position map. Throws YAMLException. */
export function parseYamlWithPositions(source: string, filename: string): { docs: unknown[]; positions: PositionMap } {
  const events = parseEvents(source, { filename });
  const positions = new PositionMap(source);
  const stack: Frame[] = [];
  let docIndex = 0;
  const nodePath = (): { path: string; keyPos?: Pos } | 'key' => {
    const top = stack[stack.length - 1];
    if (!top) return { path: docIndex > 1 ? `#${docIndex}` : '' };
    if (top.kind === 'seq') return { path: joinPath(top.path, top.index++) };
    if (top.expectKey) return 'key';
    top.expectKey = true;
    return { path: joinPath(top.path, top.key ?? '?'), keyPos: top.keyPos };
  };
  for (const e of events) {
    switch (e.type) {
      case 1:
        docIndex++;
        break;
      case 2:
      case 3: {
        const at = nodePath();
        if (at === 'key') {
          // A collection used as a key: give it an unmatchable name.
          const top = stack[stack.length - 1] as Extract<Frame, { kind: 'map' }>;
          top.key = '<complex key>';
          top.keyPos = positions.posOf(e.start);
          top.expectKey = false;
          stack.push({ kind: 'map', path: '<complex key>', key: null, expectKey: true });
          // Keep the frame shape consistent for both kinds.
          if (e.type === 2) stack[stack.length - 1] = { kind: 'seq', path: '<complex key>', index: 0 };
          break;
        }
        positions.set(at.path, { key: at.keyPos, value: positions.posOf(e.start) });
        stack.push(e.type === 2 ? { kind: 'seq', path: at.path, index: 0 } : { kind: 'map', path: at.path, key: null, expectKey: true });
        break;
      }
      case 4: {
        const at = nodePath();
        let off = e.valueStart;
        if (e.style === 2 || e.style === 3) off = Math.max(0, off - 1); // the opening quote
        if (at === 'key') {
          const top = stack[stack.length - 1] as Extract<Frame, { kind: 'map' }>;
          top.key = source.slice(e.valueStart, e.valueEnd);
          if (e.style !== 1) {
            try {
              top.key = String(
                constructFromEvents([{ type: 1, explicitStart: false, explicitEnd: false, directives: [] }, e, { type: 6 }], { source })[0],
              );
            } catch {
              /* keep raw */
            }
          }
          top.keyPos = positions.posOf(off);
          top.expectKey = false;
          break;
        }
        positions.set(at.path, {
          key: at.keyPos,
          value: positions.posOf(off),
          scalarStyle: e.style,
          valueStart: e.valueStart,
          valueEnd: e.valueEnd,
        });
        break;
      }
      case 5: {
        const at = nodePath();
        if (at === 'key') {
          const top = stack[stack.length - 1] as Extract<Frame, { kind: 'map' }>;
          top.key = '<alias>';
          top.expectKey = false;
          top.keyPos = positions.posOf(e.anchorStart);
          break;
        }
        positions.set(at.path, { key: at.keyPos, value: positions.posOf(Math.max(0, e.anchorStart - 1)) });
        break;
      }
      case 6:
        stack.pop();
        break;
    }
  }
  const docs = constructFromEvents(events, { source, filename });
  return { docs, positions };
}

// ---------------------------------------------------------------------------------------
// Schema

type Check = (v: unknown) => string | undefined;

function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return String(v);
}

const MISSING = Symbol('missing');

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
const serialItem =
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
const isMapping: Check = (v) =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? undefined : `${show(v)} is not a mapping (write key: value lines)`;
const isList: Check = (v) => (Array.isArray(v) ? undefined : `${show(v)} is not a list (write "- " items)`);
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
  when: optional(leaf(nonEmptyString)),
  unless: optional(leaf(nonEmptyString)),
  run: leaf(nonEmptyString, 'missing required key "run" (the shell command of the step)'),
  verify: optional(verifySchema),
  rollback: optional(leaf(nonEmptyString)),
  timeout: optional(leaf(isDuration(true))),
  register: optional(leaf(isIdent)),
  local: optional(leaf(isBool)),
  become: optional(leaf(isBool)),
});

const stepListSchema = (what: string, required: boolean) =>
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
        ctx.addIssue({ code: 'custom', message: 'is empty (a runbook needs at least one step)' });
        return;
      }
      v.forEach((item, i) => {
        if (item === null || typeof item !== 'object' || Array.isArray(item)) {
          ctx.addIssue({ code: 'custom', message: `${show(item)} is not a step (a step is a mapping with name and run)`, path: [i] });
          return;
        }
        const r = stepSchema.safeParse(item);
        if (!r.success) for (const iss of r.error.issues) ctx.addIssue({ ...iss, path: [i, ...iss.path] } as never);
      });
    }),
  );

const runbookSchema = strictObject({
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
  preflight: optional(stepListSchema('preflight', false)),
  steps: stepListSchema('steps', true),
});

function zodPath(path: ReadonlyArray<PropertyKey>): string {
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

function knownKeysAt(path: string): readonly string[] {
  if (path === '') return TOP_KEYS;
  if (/^(steps|preflight)\[\d+\]$/.test(path)) return STEP_KEYS;
  if (/^(steps|preflight)\[\d+\]\.verify$/.test(path)) return VERIFY_KEYS;
  return [];
}

// ---------------------------------------------------------------------------------------
// Loading

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
  return parseRunbook(bytes.toString('utf8'), file, { cwd, hash: createHash('sha256').update(bytes).digest('hex') });
}

/** Validates runbook text as if read from `file` (absolute). Exported for tests and tools. */
export function parseRunbook(source: string, file: string, opts: { cwd?: string; hash?: string } = {}): Runbook {
  const shown = displayPath(file, opts.cwd ?? process.cwd());
  const issues: ValidationIssue[] = [];
  const add = (path: string, message: string, pos?: Pos) => {
    issues.push({ file: shown, path: path || undefined, line: pos?.line, column: pos?.column, message });
  };

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
  const d = doc as Record<string, unknown>;

  // 1. Shapes and types.
  const r = runbookSchema.safeParse(d);
  if (!r.success) {
    for (const iss of r.error.issues) {
      const path = zodPath(iss.path);
      if (iss.code === 'unrecognized_keys') {
        const known = knownKeysAt(path);
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

  // 2. Rules across fields (on whatever parts have the right shape).
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
    else if ((BUILTIN_VARS as readonly string[]).includes(k))
      add(p, `"${k}" is a built-in variable and cannot be set here`, positions.find(p));
  }
  if (Array.isArray(d.secrets)) {
    const seen = new Set<string>();
    d.secrets.forEach((s, i) => {
      const p = `secrets[${i}]`;
      if (typeof s !== 'string' || !IDENT.test(s)) add(p, `${show(s)} is not a variable name`, positions.find(p));
      else if ((BUILTIN_VARS as readonly string[]).includes(s))
        add(p, `"${s}" is a built-in variable and cannot be secret`, positions.find(p));
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
        if ((BUILTIN_VARS as readonly string[]).includes(reg))
          add(p, `"${reg}" is a built-in variable; choose another register name`, positions.find(p, 'value'));
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

  // 3. Templates: every command must parse, be placed where a value can be quoted, and use
  //    registers only after the registering step.
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

  if (issues.length) {
    issues.sort((a, b) => (a.line ?? 1e9) - (b.line ?? 1e9) || (a.column ?? 0) - (b.column ?? 0));
    throw new ValidationError(issues);
  }

  // 4. Normalize.
  const toStep = (phase: 'preflight' | 'step', s: Record<string, unknown>, index: number): StepSpec => {
    const sp = `${phase === 'preflight' ? 'preflight' : 'steps'}[${index}]`;
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
      phase,
      index,
      run: s.run as string,
      timeoutMs: s.timeout !== undefined ? parseDuration(s.timeout)! : DEFAULT_STEP_TIMEOUT_MS,
      local: (s.local as boolean | undefined) ?? false,
      become: (s.become as boolean | undefined) ?? (d.become as boolean | undefined) ?? false,
      line: positions.find(sp, 'value')?.line,
    };
    if (s.when !== undefined) step.when = s.when as string;
    if (s.unless !== undefined) step.unless = s.unless as string;
    if (verify) step.verify = verify;
    if (s.rollback !== undefined) step.rollback = s.rollback as string;
    if (s.register !== undefined) step.register = s.register as string;
    return step;
  };
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
    preflight: (Array.isArray(d.preflight) ? d.preflight : []).map((s, i) => toStep('preflight', s as Record<string, unknown>, i)),
    steps: (d.steps as unknown[]).map((s, i) => toStep('step', s as Record<string, unknown>, i)),
    file,
    hash: opts.hash ?? createHash('sha256').update(source, 'utf8').digest('hex'),
    source,
  };
  if (typeof d.description === 'string') rb.description = d.description;
  if (typeof d.hosts === 'string') rb.hosts = d.hosts;
  return rb;
}

/**
 * The runbook's step lists laid out in run order: every `include:` replaced by the steps of the
 * file it names (read, parsed and shape-checked here, its problems reported in that file), and
 * every escalation followed by its alternatives' steps. The rules (rules.ts) and the Runbook
 * (load.ts) are built from these entries, so a fragment's steps are validated as if written in
 * place.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { YAMLException } from 'js-yaml';
import { decodeUtf8 } from '../core/text.js';
import { displayPath } from './find.js';
import { joinPath, type PositionMap, parseYamlWithPositions } from './positions.js';
import type { AddIssue } from './rules.js';
import { BUILTIN_VARS, IDENT, isMapping, shapeIssues, show, stepKind } from './schema.js';

/** One file of the runbook: the runbook itself or an included fragment. */
export interface FileCtx {
  file: string;
  shown: string;
  positions: PositionMap;
  add: AddIssue;
}

export interface Entry {
  obj: Record<string, unknown>;
  ctx: FileCtx;
  /** Its path in its own file (`steps[2]`). */
  path: string;
  phase: 'preflight' | 'step';
  scope?: number;
  kind: 'step' | 'escalate';
  alt?: { group: Entry; name: string; rank: number };
  alternatives?: Array<{ name: string; if?: string; path: string; steps: Entry[] }>;
}

export interface Expanded {
  preflight: Entry[];
  steps: Entry[];
  scopes: Array<Record<string, unknown>>;
  /** Included files (absolute) and their bytes, in the order first read. */
  includes: Array<{ file: string; bytes: Buffer }>;
}

/** Steps a runbook may expand to, includes counted every time they are used. */
export const MAX_STEPS = 2000;

export interface ExpandOptions {
  cwd: string;
  /** Adds an issue in the named file (as shown). */
  issue: (shown: string) => AddIssue;
  /** Reads an included file (tests give a map). */
  read?: (file: string) => Buffer;
}

export function expand(d: Record<string, unknown>, main: FileCtx, vars: Record<string, unknown>, o: ExpandOptions): Expanded {
  const out: Expanded = { preflight: [], steps: [], scopes: [], includes: [] };
  const read = o.read ?? ((f: string) => readFileSync(f));
  const parsed = new Map<string, { ctx: FileCtx; doc?: Record<string, unknown> }>();
  let count = 0;

  const loadFragment = (file: string, at: { ctx: FileCtx; path: string }): { ctx: FileCtx; doc?: Record<string, unknown> } | undefined => {
    const known = parsed.get(file);
    if (known) return known;
    const shown = displayPath(file, o.cwd);
    const where = at.ctx.positions.find(`${at.path}.include`, 'value');
    let bytes: Buffer;
    try {
      bytes = read(file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      at.ctx.add(
        `${at.path}.include`,
        code === 'ENOENT'
          ? `the included file ${shown} does not exist (a path is relative to the file that includes it)`
          : `cannot read the included file ${shown}: ${(err as Error).message}`,
        where,
      );
      return undefined;
    }
    out.includes.push({ file, bytes });
    const add = o.issue(shown);
    let docs: unknown[];
    let positions: PositionMap;
    try {
      ({ docs, positions } = parseYamlWithPositions(decodeUtf8(bytes, shown, 'runbook'), shown));
    } catch (err) {
      if (!(err instanceof YAMLException)) throw err;
      add('', `YAML syntax error: ${err.reason}`, err.mark ? { line: err.mark.line + 1, column: err.mark.column + 1 } : undefined);
      return undefined;
    }
    const ctx: FileCtx = { file, shown, positions, add };
    const doc = docs.length === 1 ? docs[0] : undefined;
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
      add(
        '',
        `the file holds ${docs.length === 1 ? show(doc) : `${docs.length} YAML documents`}, not steps to include (a mapping with steps:)`,
        {
          line: 1,
          column: 1,
        },
      );
      parsed.set(file, { ctx });
      return { ctx };
    }
    const fd = doc as Record<string, unknown>;
    shapeIssues(fd, positions, add, true);
    checkVarNames(fd.vars, 'vars', ctx);
    const entry = { ctx, doc: fd };
    parsed.set(file, entry);
    return entry;
  };

  const list = (
    items: unknown,
    ctx: FileCtx,
    base: string,
    phase: Entry['phase'],
    scope: number | undefined,
    stack: string[],
    alt?: Entry['alt'],
  ): Entry[] => {
    if (!Array.isArray(items)) return [];
    const res: Entry[] = [];
    items.forEach((item, i) => {
      const path = `${base}[${i}]`;
      if (item === null || typeof item !== 'object' || Array.isArray(item)) return;
      const obj = item as Record<string, unknown>;
      const kind = stepKind(obj);
      if (kind === 'include') {
        if (typeof obj.include !== 'string' || obj.include.trim() === '') return;
        const file = resolve(dirname(ctx.file), obj.include);
        if (stack.includes(file)) {
          const cycle = [...stack.slice(stack.indexOf(file)), file].map((f) => displayPath(f, o.cwd)).join(' -> ');
          ctx.add(
            `${path}.include`,
            `include cycle: ${cycle}; a file cannot include itself`,
            ctx.positions.find(`${path}.include`, 'value'),
          );
          return;
        }
        if (!isAbsolute(file)) return;
        const frag = loadFragment(file, { ctx, path });
        if (!frag?.doc) return;
        checkVarNames(obj.vars, `${path}.vars`, ctx);
        const fvars = isMapping(frag.doc.vars) === undefined ? (frag.doc.vars as Record<string, unknown>) : {};
        const given = isMapping(obj.vars) === undefined ? (obj.vars as Record<string, unknown>) : {};
        let inner = scope;
        if (Object.keys(fvars).length || Object.keys(given).length) {
          out.scopes.push({ ...fvars, ...(scope === undefined ? vars : out.scopes[scope]), ...given });
          inner = out.scopes.length - 1;
        }
        res.push(...list(frag.doc.steps, frag.ctx, 'steps', phase, inner, [...stack, file], alt));
        return;
      }
      if (++count > MAX_STEPS) {
        if (count === MAX_STEPS + 1)
          ctx.add(
            path,
            `the runbook expands to more than ${MAX_STEPS} steps through its includes; include fewer times`,
            ctx.positions.find(path),
          );
        return;
      }
      // (A runbook's own lists are checked by the schema; a fragment does not know where it is included.)
      if (kind === 'escalate' && (alt || phase === 'preflight') && ctx !== main) {
        ctx.add(
          `${path}.escalate`,
          `an escalation cannot be inside another escalation or in preflight, and this file is included ${alt ? `in alternative "${alt.name}"` : 'in the preflight'}`,
          ctx.positions.find(`${path}.escalate`),
        );
        return;
      }
      const e: Entry = { obj, ctx, path, phase, kind, ...(scope !== undefined ? { scope } : {}), ...(alt ? { alt } : {}) };
      res.push(e);
      if (kind === 'escalate' && Array.isArray(obj.escalate)) {
        e.alternatives = [];
        obj.escalate.forEach((a, rank) => {
          if (a === null || typeof a !== 'object' || Array.isArray(a)) return;
          const ao = a as Record<string, unknown>;
          const ap = `${path}.escalate[${rank}]`;
          const name = typeof ao.name === 'string' ? ao.name : `#${rank + 1}`;
          const steps = list(ao.steps, ctx, `${ap}.steps`, phase, scope, stack, { group: e, name, rank });
          e.alternatives!.push({ name, ...(typeof ao.if === 'string' ? { if: ao.if } : {}), path: ap, steps });
        });
      }
    });
    return res;
  };

  out.preflight = list(d.preflight, main, 'preflight', 'preflight', undefined, [main.file]);
  out.steps = list(d.steps, main, 'steps', 'step', undefined, [main.file]);
  return out;
}

/** Variable names of a vars: mapping (the runbook's, a fragment's, an include's). */
export function checkVarNames(v: unknown, base: string, ctx: FileCtx): void {
  if (isMapping(v) !== undefined) return;
  for (const k of Object.keys(v as Record<string, unknown>)) {
    const p = joinPath(base, k);
    if (!IDENT.test(k))
      ctx.add(p, `"${k}" is not a valid variable name (letters, digits and _, not starting with a digit)`, ctx.positions.find(p));
    else if (BUILTIN_VARS.includes(k)) ctx.add(p, `"${k}" is a built-in variable and cannot be set here`, ctx.positions.find(p));
  }
}

/** Every entry in run order: preflight, then steps, an escalation followed by its alternatives' steps. */
export function* inOrder(x: Pick<Expanded, 'preflight' | 'steps'>): Generator<Entry> {
  yield* x.preflight;
  const walk = function* (list: Entry[]): Generator<Entry> {
    for (const e of list) {
      yield e;
      for (const a of e.alternatives ?? []) yield* walk(a.steps);
    }
  };
  yield* walk(x.steps);
}

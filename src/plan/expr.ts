/**
 * Conditions decided on the controller (`if:`, `apply_if:`): CEL expressions, parsed and
 * type-checked when the runbook is loaded, checked again per host against the types of its
 * variables when the plan is made, and evaluated without a round trip when a host gets there.
 *
 * Names in scope: `vars` (the host's variables), each register by its name (`diag.stdout`,
 * `.stderr`, `.code`, `.status`), `host.name`, `run.id`. The implementation is
 * @marcbachmann/cel-js (its Environment type-checks declared names; see the README).
 */
import { Environment } from '@marcbachmann/cel-js';
import type { Registered } from '../core/status.js';

/** A problem with an expression; `offset` is the character it points at. */
export class ExprError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(message);
  }
}

export interface Expr {
  source: string;
  /** Registers it reads, by name. */
  registers: string[];
  /** `vars.NAME` / `vars['NAME']` it reads, with the offset of each; not those it tests with has(). */
  vars: Array<{ name: string; offset: number }>;
  /** The names it tests with has(vars.NAME). */
  tested: string[];
}

/** What a register looks like to an expression: `code` is -1 when there is no exit code (the step did not run, or was killed). */
const REGISTER_SCHEMA = { stdout: 'string', stderr: 'string', code: 'int', status: 'string' } as const;
const LIMITS = { maxAstNodes: 2000, maxDepth: 64, maxListElements: 200, maxMapEntries: 200, maxCallArguments: 16 };

type Env = InstanceType<typeof Environment>;

function baseEnv(registers: readonly string[], varsType: string | Record<string, string>): Env {
  const env = new Environment({ limits: LIMITS });
  if (typeof varsType === 'string') env.registerVariable('vars', varsType);
  else env.registerVariable({ name: 'vars', schema: varsType });
  env.registerVariable({ name: 'host', schema: { name: 'string' } });
  env.registerVariable({ name: 'run', schema: { id: 'string' } });
  for (const r of registers) env.registerVariable({ name: r, schema: REGISTER_SCHEMA });
  return env;
}

/** The first line of a cel-js message and the offset its node points at. */
function exprError(err: unknown, fallback = 0): ExprError {
  const e = err as { message?: string; node?: { pos?: number } };
  const msg = String(e?.message ?? err)
    .split('\n')[0]
    .trim();
  return new ExprError(msg, typeof e?.node?.pos === 'number' ? e.node.pos : fallback);
}

const envCache = new Map<string, Env>();
function cachedEnv(registers: readonly string[], varsType: string | Record<string, string>): Env {
  const key = JSON.stringify([registers, varsType]);
  let env = envCache.get(key);
  if (!env) {
    if (envCache.size > 500) envCache.clear();
    env = baseEnv(registers, varsType);
    envCache.set(key, env);
  }
  return env;
}

/**
 * Parses and type-checks `source` with `registers` as the register names of the runbook.
 * Throws ExprError (syntax, unknown name or field, a type that does not fit, not a bool).
 */
export function compileExpr(source: string, registers: readonly string[]): Expr {
  const env = cachedEnv(registers, 'map<string, dyn>');
  const r = env.check(source) as { valid: boolean; type?: string; error?: unknown };
  if (!r.valid) throw exprError(r.error);
  if (r.type !== 'bool' && r.type !== 'dyn') throw new ExprError(`the expression is a ${r.type}, not a bool (true or false)`, 0);
  const ast = (env.parse(source) as { ast: Node }).ast;
  const regs = new Set<string>();
  const reads: Expr['vars'] = [];
  const tested = new Set<string>(); // has(vars.NAME) anywhere: the expression handles its absence
  walk(ast, false, (n, guarded) => {
    if (n.op === 'id' && typeof n.args === 'string' && registers.includes(n.args)) regs.add(n.args);
    const name = varAccess(n);
    if (name !== undefined) guarded ? tested.add(name) : reads.push({ name, offset: n.pos ?? 0 });
  });
  return { source, registers: [...regs], vars: reads.filter((v) => !tested.has(v.name)), tested: [...tested] };
}

interface Node {
  op: string;
  args: unknown;
  pos?: number;
}

const isNode = (x: unknown): x is Node => typeof x === 'object' && x !== null && typeof (x as Node).op === 'string';

/** `vars.NAME` or `vars['NAME']`: the name, else undefined. */
function varAccess(n: Node): string | undefined {
  if ((n.op !== '.' && n.op !== '[]') || !Array.isArray(n.args)) return undefined;
  const [obj, key] = n.args as [unknown, unknown];
  if (!isNode(obj) || obj.op !== 'id' || obj.args !== 'vars') return undefined;
  if (n.op === '.') return typeof key === 'string' ? key : undefined;
  return isNode(key) && key.op === 'value' && typeof key.args === 'string' ? key.args : undefined;
}

/** Visits every node; `guarded`: inside has(...) (a missing variable is then not an error). */
function walk(n: unknown, guarded: boolean, visit: (n: Node, guarded: boolean) => void): void {
  if (Array.isArray(n)) {
    for (const x of n) walk(x, guarded, visit);
    return;
  }
  if (!isNode(n)) return;
  visit(n, guarded);
  const inHas = n.op === 'call' && Array.isArray(n.args) && n.args[0] === 'has';
  walk(n.args, guarded || inHas, visit);
}

/** A value as CEL sees it: whole numbers are ints (YAML's 3 is CEL's 3, not 3.0). */
export function toCel(v: unknown): unknown {
  if (typeof v === 'number') return Number.isInteger(v) ? BigInt(v) : v;
  if (Array.isArray(v)) return v.map(toCel);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toCel(x)]));
  return v;
}

/** A value's CEL type name, for the per-host check. */
function celType(v: unknown): string {
  if (typeof v === 'string') return 'string';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'double';
  if (Array.isArray(v)) return 'list<dyn>';
  if (v !== null && typeof v === 'object') return 'map<string, dyn>';
  return 'dyn';
}

/**
 * The check for one host, before anything runs: every `vars.NAME` it reads is defined (unless
 * under has()), and the expression type-checks with the types of this host's values. The
 * message, else undefined.
 */
export function checkForHost(e: Expr, allRegisters: readonly string[], vars: Record<string, unknown>): ExprError | undefined {
  for (const v of e.vars) {
    if (!Object.hasOwn(vars, v.name) || vars[v.name] === undefined) {
      return new ExprError(
        `vars.${v.name} is not defined (define it in vars, the inventory or with -e, or test it with has(vars.${v.name}))`,
        v.offset,
      );
    }
  }
  const schema: Record<string, string> = {};
  for (const k of e.tested) schema[k] = 'dyn'; // may be absent: has() says
  for (const [k, v] of Object.entries(vars)) schema[k] = celType(v);
  const r = cachedEnv(allRegisters, schema).check(e.source) as { valid: boolean; type?: string; error?: unknown };
  if (!r.valid) return exprError(r.error);
  return r.type === 'bool' || r.type === 'dyn'
    ? undefined
    : new ExprError(`with this host's values the expression is a ${r.type}, not a bool`, 0);
}

export interface ExprContext {
  vars: Record<string, unknown>;
  host: string;
  runId: string;
  /** Registers known so far; a register not here is unknown (see evalPartial). */
  registers: Record<string, Registered>;
}

function activation(ctx: ExprContext, registers: readonly string[]): Record<string, unknown> {
  const a: Record<string, unknown> = { vars: toCel(ctx.vars), host: { name: ctx.host }, run: { id: ctx.runId } };
  for (const name of registers) {
    const r = ctx.registers[name];
    if (r)
      a[name] = {
        stdout: r.stdout,
        stderr: r.stderr,
        code: BigInt(r.code ?? -1),
        status: r.status ?? (r.code === null ? 'skipped' : 'ok'),
      };
  }
  return a;
}

/** Evaluates to a boolean; throws ExprError when it cannot (a missing value, a type at run time, not a bool). */
export function evalExpr(e: Expr, ctx: ExprContext): boolean {
  let v: unknown;
  try {
    v = cachedEnv(e.registers, 'map<string, dyn>').evaluate(e.source, activation(ctx, e.registers));
  } catch (err) {
    throw exprError(err);
  }
  if (typeof v !== 'boolean')
    throw new ExprError(`the expression gave ${typeof v === 'bigint' ? 'an int' : `a ${typeof v}`}, not a bool`, 0);
  return v;
}

/**
 * Before the registers it reads are known (plan): true/false when the known part decides it
 * (`vars.kubernetes && diag.code == 0` with kubernetes false), else undefined.
 */
export function evalPartial(e: Expr, ctx: ExprContext): boolean | undefined {
  try {
    return evalExpr(e, ctx);
  } catch {
    return undefined;
  }
}

// tier: unit
// CEL conditions (src/plan/expr.ts): compile-time checks, the per-host check against the types of
// a host's values, evaluation (types, registers, string/int/bool operations) and partial evaluation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkForHost, compileExpr, evalExpr, evalPartial, ExprError } from '../src/plan/expr.js';

const REGS = ['diag', 'kubelet'];
const reg = (stdout: string, code: number | null = 0, status?: 'ok' | 'changed' | 'skipped' | 'failed') => ({
  stdout,
  stderr: '',
  code,
  ...(status ? { status } : {}),
});
const ctx = (vars: Record<string, unknown> = {}, registers: Record<string, ReturnType<typeof reg>> = {}) => ({
  vars,
  host: 'web1',
  runId: 'r1',
  registers,
});
const ev = (src: string, c = ctx()) => evalExpr(compileExpr(src, REGS), c);
const compileErr = (src: string): ExprError => {
  try {
    compileExpr(src, REGS);
  } catch (err) {
    assert.ok(err instanceof ExprError, String(err));
    return err;
  }
  assert.fail(`expected ${src} not to compile`);
};

test('compile: syntax errors, unknown names and fields, wrong types and non-bool results are refused with an offset', () => {
  assert.match(compileErr("diag.stdout.startsWith('x'").message, /Expected RPAREN/);
  const unknown = compileErr("dig.stdout == 'x'");
  assert.match(unknown.message, /Unknown variable: dig/);
  assert.equal(unknown.offset, 0);
  const field = compileErr("diag.stdot == ''");
  assert.match(field.message, /stdot/);
  assert.equal(field.offset, 5);
  assert.match(compileErr("diag.code == 'x'").message, /no such overload: int == string/);
  assert.match(compileErr('1 + 2').message, /is a int, not a bool/);
  assert.match(compileErr("'a'").message, /not a bool/);
});

test('compile: the registers and vars an expression reads (vars under has() are not required)', () => {
  const e = compileExpr("diag.stdout.startsWith('broken') && vars.kubernetes && has(vars.extra) && vars['k8s_node'] != ''", REGS);
  assert.deepEqual(e.registers, ['diag']);
  assert.deepEqual(
    e.vars.map((v) => v.name),
    ['kubernetes', 'k8s_node'],
  );
});

test('evaluate: strings, ints, bools, host and run; YAML whole numbers are ints', () => {
  const c = ctx(
    { n: 3, ratio: 0.5, on: true, name: 'node-1', list: ['a', 'b'], m: { k: 2 } },
    { diag: reg('broken: CRI state corrupt\n', 0, 'ok') },
  );
  assert.equal(ev("diag.stdout.startsWith('broken')", c), true);
  assert.equal(ev("diag.stdout.contains('CRI') && !diag.stdout.contains('meta')", c), true);
  assert.equal(ev("diag.stdout.matches('^broken: (CRI|metadata)')", c), true);
  assert.equal(ev('diag.code == 0 && vars.n > 2 && vars.n + 1 == 4', c), true);
  assert.equal(ev('vars.ratio < 1.0', c), true);
  assert.equal(ev("vars.on && vars.name.endsWith('-1') && host.name == 'web1' && run.id == 'r1'", c), true);
  assert.equal(ev("size(vars.list) == 2 && 'b' in vars.list && vars.m.k == 2", c), true);
  assert.equal(ev("diag.status == 'ok' && string(vars.on) == 'true'", c), true);
});

test('evaluate: a register of a step that did not run reads as empty, code -1, status skipped', () => {
  const c = ctx({}, { kubelet: reg('', null) });
  assert.equal(ev("kubelet.stdout == '' && kubelet.code == -1 && kubelet.status == 'skipped'", c), true);
  assert.equal(ev("kubelet.status == 'changed'", ctx({}, { kubelet: reg('stopped\n', 0, 'changed') })), true);
});

test('evaluate: a missing value or a type that does not fit at run time is an ExprError, never a wrong answer', () => {
  assert.throws(
    () => ev('vars.nope == 1'),
    (err: unknown) => err instanceof ExprError && /nope/.test(err.message),
  );
  assert.throws(
    () => ev("vars.k && diag.stdout == 'x'", ctx({ k: 'true' }, { diag: reg('x') })),
    (err: unknown) => err instanceof ExprError && /bool/.test(err.message),
  );
  assert.throws(
    () => ev('vars.x', ctx({ x: 'yes' })),
    (err: unknown) => err instanceof ExprError && /not a bool/.test(err.message),
  );
});

test('per host: undefined vars and types that do not fit this host are found before any run', () => {
  const e = compileExpr("vars.kubernetes && diag.stdout != ''", REGS);
  assert.match(checkForHost(e, REGS, {})!.message, /vars\.kubernetes is not defined/);
  assert.match(checkForHost(e, REGS, { kubernetes: 'true' })!.message, /requires bool operands, got 'string'/);
  assert.equal(checkForHost(e, REGS, { kubernetes: false }), undefined);
  const guarded = compileExpr('has(vars.extra) && vars.extra == 1', REGS);
  assert.equal(checkForHost(guarded, REGS, {}), undefined);
  assert.match(checkForHost(compileExpr('vars.x', REGS), REGS, { x: 'a' })!.message, /a string, not a bool/);
});

test('partial: the host variables decide it before the registers are known, or it is undefined', () => {
  const e = compileExpr("vars.kubernetes && diag.stdout.startsWith('broken')", REGS);
  assert.equal(evalPartial(e, ctx({ kubernetes: false })), false);
  assert.equal(evalPartial(e, ctx({ kubernetes: true })), undefined);
  assert.equal(evalPartial(compileExpr("diag.stdout.startsWith('broken') || vars.force", REGS), ctx({ force: true })), true);
});

// tier: unit
// Runbook format 2 as the loader sees it: include (relative paths, vars, cycles, errors pointing
// into the fragment), escalate (layout), if/apply_if (checked at load and per host), and a corpus
// of bad input for the new keys, each with file, path, line and message.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { loadRunbook } from '../src/runbook/load.js';
import { ValidationError, type ValidationIssue } from '../src/core/errors.js';
import { createPlan } from '../src/plan/plan.js';
import { varsFor } from '../src/plan/types.js';
import { showText } from '../src/cli/commands/show.js';

/** Writes `files` (path -> text) into a fresh directory; returns it. */
function tree(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'rb-f2-'));
  for (const [p, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, p)), { recursive: true });
    writeFileSync(join(dir, p), text);
  }
  return dir;
}

function issuesOf(files: Record<string, string>, main = 'rb.yml'): ValidationIssue[] {
  const dir = tree(files);
  try {
    loadRunbook(join(dir, main), dir);
  } catch (err) {
    if (err instanceof ValidationError) return err.issues;
    throw err;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.fail('expected a validation error');
}

const PRE = `name: rb
preflight:
  - name: Diagnose
    register: diag
    run: echo broken
`;

/** name -> files, and every issue expected: [file, path, line, message fragment]. */
const BAD: Record<string, { files: Record<string, string>; expect: Array<[string, string | undefined, number, string | RegExp]> }> = {
  'if: syntax error': {
    files: { 'rb.yml': `${PRE}steps:\n  - name: A\n    if: diag.stdout.startsWith('x'\n    run: 'true'\n` },
    expect: [['rb.yml', 'steps[0].if', 8, 'bad expression: Expected RPAREN']],
  },
  'if: unknown name': {
    files: { 'rb.yml': `${PRE}steps:\n  - name: A\n    if: dig.code == 0\n    run: 'true'\n` },
    expect: [['rb.yml', 'steps[0].if', 8, 'Unknown variable: dig']],
  },
  'if: unknown field of a register': {
    files: { 'rb.yml': `${PRE}steps:\n  - name: A\n    if: diag.exit == 0\n    run: 'true'\n` },
    expect: [['rb.yml', 'steps[0].if', 8, 'No such key: exit']],
  },
  'if: a register of a later step': {
    files: {
      'rb.yml': `${PRE}steps:\n  - name: A\n    if: later.code == 0\n    run: 'true'\n  - name: B\n    register: later\n    run: 'true'\n`,
    },
    expect: [['rb.yml', 'steps[0].if', 8, '"later" is registered by a later step (steps[1])']],
  },
  'if: its own register': {
    files: { 'rb.yml': `${PRE}steps:\n  - name: A\n    register: mine\n    if: mine.code == 0\n    run: 'true'\n` },
    expect: [['rb.yml', 'steps[0].if', 9, '"mine" is registered by this step']],
  },
  'if: not a bool': {
    files: { 'rb.yml': `${PRE}steps:\n  - name: A\n    if: diag.code + 1\n    run: 'true'\n` },
    expect: [['rb.yml', 'steps[0].if', 8, 'is a int, not a bool']],
  },
  'if: a YAML boolean instead of an expression': {
    files: { 'rb.yml': `${PRE}steps:\n  - name: A\n    if: true\n    run: 'true'\n` },
    expect: [['rb.yml', 'steps[0].if', 8, 'true is not a string']],
  },
  'apply_if: reads a register of a main step': {
    files: { 'rb.yml': `${PRE}apply_if: main.code == 0\nsteps:\n  - name: A\n    register: main\n    run: 'true'\n` },
    expect: [['rb.yml', 'apply_if', 6, 'apply_if is decided after the preflight']],
  },
  'apply_if: a type error': {
    files: { 'rb.yml': `${PRE}apply_if: diag.stdout == 1\nsteps:\n  - name: A\n    run: 'true'\n` },
    expect: [['rb.yml', 'apply_if', 6, 'no such overload: string == int']],
  },
  'include: a file that does not exist': {
    files: { 'rb.yml': `name: rb\nsteps:\n  - include: lib/nope.yml\n` },
    expect: [['rb.yml', 'steps[0].include', 3, 'lib/nope.yml does not exist (a path is relative to the file that includes it)']],
  },
  'include: a cycle through two files': {
    files: {
      'rb.yml': `name: rb\nsteps:\n  - include: lib/a.yml\n`,
      'lib/a.yml': `steps:\n  - name: A\n    run: 'true'\n  - include: b.yml\n`,
      'lib/b.yml': `steps:\n  - include: a.yml\n`,
    },
    expect: [['lib/b.yml', 'steps[0].include', 2, 'include cycle: lib/a.yml -> lib/b.yml -> lib/a.yml']],
  },
  'include: an unknown key in a fragment step points into the fragment': {
    files: {
      'rb.yml': `name: rb\nsteps:\n  - name: First\n    run: 'true'\n  - include: lib/f.yml\n`,
      'lib/f.yml': `# a fragment\nsteps:\n  - name: F\n    rn: 'true'\n`,
    },
    expect: [
      ['lib/f.yml', 'steps[0].run', 3, 'missing required key "run"'],
      ['lib/f.yml', 'steps[0].rn', 4, 'did you mean "run"?'],
    ],
  },
  'include: a YAML error in the fragment': {
    files: { 'rb.yml': `name: rb\nsteps:\n  - include: f.yml\n`, 'f.yml': `steps:\n  - name: F\n   run: x\n` },
    expect: [['f.yml', undefined, 3, 'YAML syntax error']],
  },
  'include: a fragment step using a register registered later in the runbook': {
    files: {
      'rb.yml': `name: rb\nsteps:\n  - include: f.yml\n  - name: B\n    register: out\n    run: 'true'\n`,
      'f.yml': `steps:\n  - name: F\n    run: echo {{ out.stdout }}\n`,
    },
    expect: [['f.yml', 'steps[0].run', 3, '"out.stdout" is registered by a later step (steps[1])']],
  },
  'include: a bad variable name in vars': {
    files: {
      'rb.yml': `name: rb\nsteps:\n  - include: f.yml\n    vars: { 9lives: 1 }\n`,
      'f.yml': `steps:\n  - name: F\n    run: 'true'\n`,
    },
    expect: [['rb.yml', 'steps[0].vars.9lives', 4, 'is not a valid variable name']],
  },
  'include: with step keys beside it': {
    files: { 'rb.yml': `name: rb\nsteps:\n  - include: f.yml\n    run: 'true'\n`, 'f.yml': `steps:\n  - name: F\n    run: 'true'\n` },
    expect: [['rb.yml', 'steps[0].run', 4, 'unknown key "run"; known keys: include, vars']],
  },
  'include: a fragment that is a list': {
    files: { 'rb.yml': `name: rb\nsteps:\n  - include: f.yml\n`, 'f.yml': `- name: F\n  run: 'true'\n` },
    expect: [['f.yml', undefined, 1, 'not steps to include (a mapping with steps:)']],
  },
  'include: the same step name in the fragment and the runbook': {
    files: {
      'rb.yml': `name: rb\nsteps:\n  - include: f.yml\n  - name: F\n    run: 'true'\n`,
      'f.yml': `steps:\n  - name: F\n    run: 'true'\n`,
    },
    expect: [['rb.yml', 'steps[1].name', 4, 'step name "F" is already used by steps[0] of f.yml']],
  },
  'escalate: empty': {
    files: { 'rb.yml': `name: rb\nsteps:\n  - name: Repair\n    escalate: []\n` },
    expect: [['rb.yml', 'steps[0].escalate', 4, 'is empty (give the alternatives']],
  },
  'escalate: an alternative without steps': {
    files: { 'rb.yml': `name: rb\nsteps:\n  - name: Repair\n    escalate:\n      - name: gentle\n` },
    expect: [['rb.yml', 'steps[0].escalate[0].steps', 5, 'missing required key "steps"']],
  },
  'escalate: an unknown key of an alternative': {
    files: { 'rb.yml': `name: rb\nsteps:\n  - name: Repair\n    escalate:\n      - name: gentle\n        step: []\n` },
    expect: [
      ['rb.yml', 'steps[0].escalate[0].steps', 5, 'missing required key "steps"'],
      ['rb.yml', 'steps[0].escalate[0].step', 6, 'did you mean "steps"?'],
    ],
  },
  'escalate: a run beside it': {
    files: {
      'rb.yml': `name: rb\nsteps:\n  - name: Repair\n    run: 'true'\n    escalate:\n      - name: a\n        steps: [{ name: A, run: 'true' }]\n`,
    },
    expect: [['rb.yml', 'steps[0].run', 4, 'unknown key "run"; known keys: name, if, escalate']],
  },
  'escalate: nested in an alternative': {
    files: {
      'rb.yml': `name: rb\nsteps:\n  - name: Repair\n    escalate:\n      - name: a\n        steps:\n          - name: Inner\n            escalate: []\n`,
    },
    expect: [['rb.yml', 'steps[0].escalate[0].steps[0].escalate', 8, 'cannot be inside another escalation']],
  },
  'escalate: in the preflight': {
    files: { 'rb.yml': `name: rb\npreflight:\n  - name: Repair\n    escalate: []\nsteps:\n  - name: A\n    run: 'true'\n` },
    expect: [['rb.yml', 'preflight[0].escalate', 4, 'cannot be inside another escalation or in preflight']],
  },
  'escalate: in a fragment included inside an alternative': {
    files: {
      'rb.yml': `name: rb\nsteps:\n  - name: Repair\n    escalate:\n      - name: a\n        steps:\n          - include: f.yml\n`,
      'f.yml': `steps:\n  - name: Inner\n    escalate:\n      - name: x\n        steps: [{ name: X, run: 'true' }]\n`,
    },
    expect: [['f.yml', 'steps[0].escalate', 3, 'this file is included in alternative "a"']],
  },
  'escalate: two alternatives of the same name': {
    files: {
      'rb.yml': `name: rb\nsteps:\n  - name: Repair\n    escalate:\n      - name: a\n        steps: [{ name: A1, run: 'true' }]\n      - name: a\n        steps: [{ name: A2, run: 'true' }]\n`,
    },
    expect: [['rb.yml', 'steps[0].escalate[1].name', 7, 'alternative "a" is already used by steps[0].escalate[0]']],
  },
  'escalate: an alternative if reading a register of its own steps': {
    files: {
      'rb.yml': `name: rb\nsteps:\n  - name: Repair\n    escalate:\n      - name: a\n        if: got.code == 0\n        steps: [{ name: A1, register: got, run: 'true' }]\n`,
    },
    expect: [['rb.yml', 'steps[0].escalate[0].if', 6, '"got" is registered by a later step']],
  },
  'register: a name conditions use for something else': {
    files: { 'rb.yml': `name: rb\nsteps:\n  - name: A\n    register: vars\n    run: 'true'\n` },
    expect: [['rb.yml', 'steps[0].register', 4, '"vars" is a built-in name']],
  },
};

for (const [name, c] of Object.entries(BAD)) {
  test(`bad format-2 input: ${name}`, () => {
    const got = issuesOf(c.files).map((i) => [i.file, i.path, i.line, i.message] as const);
    assert.equal(got.length, c.expect.length, `issues: ${JSON.stringify(got, null, 1)}`);
    c.expect.forEach(([file, path, line, msg], k) => {
      const [gf, gp, gl, gm] = got[k];
      assert.ok(gf?.endsWith(file), `issue ${k}: file ${gf}, expected ${file}`);
      assert.equal(gp, path, `issue ${k}: ${gm}`);
      assert.equal(gl, line, `issue ${k}: ${gp}: ${gm}`);
      if (typeof msg === 'string') assert.ok(gm.includes(msg), `issue ${k}: "${gm}" lacks "${msg}"`);
      else assert.match(gm, msg);
    });
  });
}

test('include: nested relative paths, steps in place with their origin, vars: fragment < runbook < include < inventory < -e', () => {
  const dir = tree({
    'rb.yml': `name: rb\nvars: { who: runbook, depth: runbook }\nsteps:\n  - name: Before\n    run: echo {{ who }}\n  - include: lib/outer.yml\n    vars: { depth: include }\n  - name: After\n    run: echo {{ who }}\n`,
    'lib/outer.yml': `vars: { who: outer-default, only_here: frag }\nsteps:\n  - name: Outer\n    run: echo {{ who }} {{ depth }} {{ only_here }}\n  - include: inner/inner.yml\n`,
    'lib/inner/inner.yml': `steps:\n  - name: Inner\n    run: echo {{ depth }}\n`,
  });
  try {
    const rb = loadRunbook(join(dir, 'rb.yml'), dir);
    assert.deepEqual(
      rb.steps.map((s) => [s.name, s.index, s.origin?.file?.slice(dir.length + 1), s.origin?.path, s.line]),
      [
        ['Before', 0, undefined, 'steps[0]', 4],
        ['Outer', 1, 'lib/outer.yml', 'steps[0]', 3],
        ['Inner', 2, 'lib/inner/inner.yml', 'steps[0]', 2],
        ['After', 3, undefined, 'steps[2]', 8],
      ],
    );
    assert.deepEqual(rb.includes, [join(dir, 'lib/outer.yml'), join(dir, 'lib/inner/inner.yml')]);
    const hosts = [
      { name: 'a', vars: {}, connection: { kind: 'local' as const, name: 'a', address: 'localhost' } },
      { name: 'b', vars: { depth: 'inventory' }, connection: { kind: 'local' as const, name: 'b', address: 'localhost' } },
    ];
    const plan = createPlan(rb, hosts, { runId: 'r', forks: 1 });
    const [a, b] = plan.hosts;
    const seen = (h: typeof a, i: number) => {
      const v = varsFor(h, rb.steps[i]);
      return [v.who, v.depth, v.only_here];
    };
    assert.deepEqual(seen(a, 0), ['runbook', 'runbook', undefined]);
    assert.deepEqual(seen(a, 1), ['runbook', 'include', 'frag']);
    assert.deepEqual(seen(a, 2), ['runbook', 'include', 'frag']);
    assert.deepEqual(seen(b, 1), ['runbook', 'inventory', 'frag']);
    const withE = createPlan(rb, hosts, { runId: 'r', forks: 1, extraVars: { depth: 'cli' } });
    assert.equal(varsFor(withE.hosts[1], rb.steps[1]).depth, 'cli');
    assert.match(showText(rb, { cwd: dir }), /2\. Outer {2}\[from lib\/outer\.yml\]/);
    // The run's hash covers the fragments: a changed fragment is a changed runbook for resume.
    const before = rb.hash;
    writeFileSync(join(dir, 'lib/inner/inner.yml'), `steps:\n  - name: Inner\n    run: echo changed {{ depth }}\n`);
    assert.notEqual(loadRunbook(join(dir, 'rb.yml'), dir).hash, before);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('escalate: one step, then each alternative’s steps in order, each knowing its place', () => {
  const dir = tree({
    'rb.yml': `name: rb\nsteps:\n  - name: Stop\n    run: 'true'\n  - name: Repair\n    if: host.name != 'x'\n    escalate:\n      - name: gentle\n        steps:\n          - { name: G1, run: 'true' }\n          - include: g.yml\n      - name: wipe\n        if: "true"\n        steps:\n          - { name: W1, run: 'true', rollback: 'true' }\n  - name: Start\n    run: 'true'\n`,
    'g.yml': `steps:\n  - name: G2\n    run: 'true'\n`,
  });
  try {
    const rb = loadRunbook(join(dir, 'rb.yml'), dir);
    assert.deepEqual(
      rb.steps.map((s) => [s.name, s.index, s.alternative ? `${s.alternative.group}/${s.alternative.name}#${s.alternative.rank}` : '-']),
      [
        ['Stop', 0, '-'],
        ['Repair', 1, '-'],
        ['G1', 2, '1/gentle#0'],
        ['G2', 3, '1/gentle#0'],
        ['W1', 4, '1/wipe#1'],
        ['Start', 5, '-'],
      ],
    );
    const repair = rb.steps[1];
    assert.equal(repair.if?.source, "host.name != 'x'");
    assert.deepEqual(
      repair.escalate?.map((a) => [a.name, a.steps, a.if?.source]),
      [
        ['gentle', [2, 3], undefined],
        ['wipe', [4], 'true'],
      ],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('plan: a condition that does not fit a host’s values is refused before any connection, naming host and step', () => {
  const dir = tree({
    'rb.yml': `name: rb\nvars: { kubernetes: false }\nsteps:\n  - include: f.yml\n`,
    'f.yml': `steps:\n  - name: Cordon\n    if: vars.kubernetes && host.name != ''\n    run: 'true'\n`,
  });
  try {
    const rb = loadRunbook(join(dir, 'rb.yml'), dir);
    const hosts = [{ name: 'n1', vars: { kubernetes: 'true' }, connection: { kind: 'local' as const, name: 'n1', address: 'localhost' } }];
    assert.throws(
      () => createPlan(rb, hosts, { runId: 'r', forks: 1 }),
      (err: unknown) =>
        err instanceof ValidationError &&
        err.issues.length === 1 &&
        err.issues[0].file === join(dir, 'f.yml') &&
        err.issues[0].path === 'steps[0].if' &&
        err.issues[0].line === 2 &&
        /requires bool operands, got 'string' \(host n1, step "Cordon"\)/.test(err.issues[0].message),
    );
    // The same host with a boolean plans.
    createPlan(rb, [{ ...hosts[0], vars: { kubernetes: true } }], { runId: 'r', forks: 1 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// tier: unit
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import {
  analyzeTemplate,
  parseTemplate,
  rawRefs,
  renderCommand,
  renderText,
  templateRefs,
  TemplateError,
  varLookup,
} from '../src/plan/template.js';
import { RunbookError } from '../src/core/errors.js';

// /bin/sh plus bash and dash when present (each real shell once).
const SHELLS = [...new Map(['/bin/sh', '/bin/bash', '/bin/dash'].filter((s) => existsSync(s)).map((s) => [realpathSync(s), s])).values()];

function sh(shell: string, cmd: string, cwd: string, env: Record<string, string> = {}) {
  const r = spawnSync(shell, ['-c', cmd], {
    cwd,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    encoding: 'utf8',
    timeout: 10_000,
    // stdin not a socket: otherwise bash believes it runs under rshd and reads ~/.bashrc.
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface ShResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs each command in its own subshell of ONE shell process, each with its own stdout/stderr/exit-code files
 * (hundreds of cases cost a few shells instead of one each). undefined when the batch as a whole went wrong (the
 * shell failed, something was created in cwd, a case left no exit code): the caller then runs the cases one shell
 * each, for a message naming the case.
 */
function shBatch(shell: string, cmds: string[], cwd: string): ShResult[] | undefined {
  const out = mkdtempSync(join(tmpdir(), 'rb-batch-'));
  try {
    const script = cmds.map((c, i) => `(\n${c}\n) >"$O/${i}.out" 2>"$O/${i}.err"; echo $? >"$O/${i}.code"`).join('\n');
    const r = sh(shell, script, cwd, { T: cwd, O: out });
    if (r.code !== 0 || readdirSync(cwd).length > 0) return undefined;
    const results = cmds.map((_, i) => {
      const f = (ext: string) => join(out, `${i}.${ext}`);
      if (!existsSync(f('code'))) return undefined;
      return {
        code: Number(readFileSync(f('code'), 'utf8')),
        stdout: readFileSync(f('out'), 'utf8'),
        stderr: readFileSync(f('err'), 'utf8'),
      };
    });
    return results.every((x) => x !== undefined) ? (results as ShResult[]) : undefined;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

const EVIL = [
  'x; touch $T/pwned',
  '$(touch $T/pwned)',
  '`touch $T/pwned`',
  `'"`,
  '\\',
  'a\ntouch $T/pwned',
  '\ntouch $T/pwned #',
  "\ntouch $T/pwned '",
  '--help',
  '',
  `'; touch $T/pwned; '`,
  `"; touch $T/pwned; "`,
  '$(touch $T/pwned)\'$(touch $T/pwned)\'"`touch $T/pwned`"',
  "\\'; touch $T/pwned #",
  ')"; touch $T/pwned; echo "(',
  ' leading and trailing  ',
  '*',
  '~',
  '%s %n',
  '#not-a-comment',
  'tab\there',
  'ünïcødé ✓',
];

/** template -> expected stdout as a function of the value (null: only check that nothing ran). */
const TEMPLATES: Array<[string, (v: string) => string | null]> = [
  ['printf %s {{ v }}', (v) => v],
  ['printf %s "{{ v }}"', (v) => v],
  ["printf %s '{{ v }}'", (v) => v],
  ['printf %s "a$( printf %s {{ v }} )b"', (v) => `a${v.replace(/\n+$/, '')}b`],
  ['X={{ v }} sh -c \'printf %s "$X"\'', (v) => v],
  ['printf %s pre{{ v }}post', (v) => `pre${v}post`],
  ['printf %s "[{{ v }}]" \'[{{ v }}]\' [{{ v }}]', (v) => `[${v}][${v}][${v}]`],
  ['X=`printf %s {{ v }}`; printf %s "$X"', (v) => v.replace(/\n+$/, '')],
  ['printf %s "`printf %s {{ v }}`"', (v) => v.replace(/\n+$/, '')],
  ['printf %s "$(printf %s \'{{ v }}\')"', (v) => v.replace(/\n+$/, '')],
  ['printf %s $(printf %s "{{ v }}" | od -An -c | tr -d \' \\n\') >/dev/null; printf %s {{ v }}', (v) => v],
  ['printf %s "$(echo "$(printf %s {{ v }})")"', (v) => v.replace(/\n+$/, '')],
  ["# it's a comment with a quote\nprintf %s {{ v }}", (v) => v],
  ['( printf %s {{ v }} )', (v) => v],
  ['printf %s {{ v }} # trailing {{ v }}', (v) => v],
  ["printf %s {{ v }} # {{ v }}{{ v }} '{{ v }}", (v) => v],
  ['f() { printf %s "$1"; }; f {{ v }}', (v) => v],
];

test('parse: refs, dotted paths, filters, literals', () => {
  assert.deepEqual(templateRefs('echo {{ a }} {{b.c.d}} {{ e | raw }} {{ f | default("x y") }} {{ g.0 }}'), [
    { name: 'a', path: 'a', raw: false },
    { name: 'b', path: 'b.c.d', raw: false },
    { name: 'e', path: 'e', raw: true },
    { name: 'f', path: 'f', raw: false, default: 'x y' },
    { name: 'g', path: 'g.0', raw: false },
  ]);
  assert.deepEqual(rawRefs('a {{ x | raw }} {{ y }} {{ z|raw }}'), ['x', 'z']);
  assert.equal(
    renderText("docker inspect -f '{{ '{{' }}.State{{ '}}' }}'", () => undefined),
    "docker inspect -f '{{.State}}'",
  );
  assert.equal(renderText('{% raw %}{{ not a var }}{% endraw %} {{ a }}', varLookup({ a: 1 })), '{{ not a var }} 1');
  assert.equal(
    renderText('no braces } { }}', () => undefined),
    'no braces } { }}',
  );
  assert.deepEqual(templateRefs('nothing'), []);
});

test('parse errors carry the offset', () => {
  const cases: Array<[string, RegExp, number]> = [
    ['echo {{ x', /unclosed/, 5],
    ['echo {{ x {{ y }}', /unclosed/, 5],
    ['a {{ }}', /empty/, 2],
    ['a {{ x | upper }}', /unknown filter "upper"/, 2],
    ['a {{ x | rwa }}', /did you mean "raw"/, 2],
    ['a {{ 1x }}', /not a variable name/, 2],
    ['a {{ x | default(y) }}', /default needs/, 2],
    ['a {{ x | raw | raw }}', /twice/, 2],
    ['{% raw %} unterminated', /endraw/, 0],
  ];
  for (const [tpl, re, off] of cases) {
    assert.throws(
      () => parseTemplate(tpl),
      (e: unknown) => e instanceof TemplateError && e.code === 'E_TEMPLATE' && re.test(e.message) && e.offset === off,
      tpl,
    );
  }
});

test('contexts are detected', () => {
  const ctx = (t: string) =>
    analyzeTemplate(t).map((c) => (c.unsupported ? `!${c.context}` : `${c.context}${c.backticks ? `/bt${c.backticks}` : ''}`));
  assert.deepEqual(ctx(`a {{ v }} "{{ v }}" '{{ v }}' $( {{ v }} ) "$( '{{ v }}' )" \`{{ v }}\` $(( {{ v }} + 1 ))`), [
    'bare',
    'double',
    'single',
    'bare',
    'single',
    'bare/bt1',
    'arith',
  ]);
  assert.deepEqual(ctx("# don't\n{{ v }}"), ['bare']);
  assert.deepEqual(ctx("echo a#b '{{ v }}'"), ['single']);
  assert.deepEqual(ctx("echo \\'{{ v }}"), ['bare'], 'escaped quote does not open a quote');
  assert.deepEqual(ctx('cat <<EOF\n{{ v }}\nEOF\n{{ v }}'), ['heredoc', 'bare']);
  assert.deepEqual(ctx("cat <<'EOF'\nx {{ v }}\nEOF"), ['heredoc-literal']);
  assert.deepEqual(ctx('cat <<EOF\n{{ v }}\nEOF'), ['heredoc']);
  // Refused: places where a value would be glued to shell syntax.
  assert.deepEqual(ctx('echo ${X:-{{ v }}}'), ['!bare']);
  assert.deepEqual(ctx("echo $'{{ v }}'"), ['!bare']);
  assert.deepEqual(ctx('echo \\{{ v }}'), ['!bare']);
  assert.deepEqual(ctx('echo "${{ v }}"'), ['!double']);
  assert.deepEqual(ctx('echo ${{ v }}'), ['!bare']);
  assert.equal(analyzeTemplate('cat <<EOF\nE{{ v }}\nEOF')[0].heredocLineRisk, true, 'a value could complete the delimiter line');
  assert.equal(analyzeTemplate('cat <<EOF\nx={{ v }}\nEOF')[0].heredocLineRisk, undefined);
  assert.throws(
    () => renderCommand('cat <<EOF\nE{{ v }}\nEOF\necho {{ v }}', varLookup({ v: 'OF' })),
    (e: unknown) => e instanceof RunbookError && e.code === 'E_VAR_UNSAFE',
  );
  assert.equal(renderCommand('cat <<EOF\n{{ v }}\nEOF', varLookup({ v: 'fine' })), 'cat <<EOF\nfine\nEOF');
  assert.deepEqual(ctx('cat <<{{ v }}\nx\n'), ['!bare']);
});

test('values: numbers, booleans, objects, null, default, undefined', () => {
  const vars = { n: 42, b: true, o: { k: 'v w' }, a: [1, 'two'], z: null, s: "it's" };
  const r = (t: string) => renderCommand(t, varLookup(vars));
  assert.equal(r('echo {{ n }} {{ b }}'), 'echo 42 true');
  assert.equal(r('echo {{ o }}'), `echo '{"k":"v w"}'`);
  assert.equal(r('echo {{ o.k }}'), `echo 'v w'`);
  assert.equal(r('echo {{ a.1 }} {{ a }}'), `echo two '[1,"two"]'`);
  assert.equal(r('echo x{{ z }}y'), `echo x''y`);
  assert.equal(r("echo {{ missing | default('d e') }}"), "echo 'd e'");
  assert.equal(r('echo {{ s }}'), `echo 'it'\\''s'`);
  assert.throws(
    () => r('echo {{ missing }}'),
    (e: unknown) => e instanceof RunbookError && e.code === 'E_VAR_UNDEFINED' && e.message.includes('"missing"'),
  );
  assert.throws(
    () => r('echo {{ o.nope }}'),
    (e: unknown) => e instanceof RunbookError && e.code === 'E_VAR_UNDEFINED',
  );
  assert.throws(
    () => r('echo ${X:-{{ n }}}'),
    (e: unknown) => e instanceof RunbookError && e.code === 'E_TEMPLATE_CONTEXT',
  );
  assert.equal(r('echo $(( {{ n }} + 1 ))'), 'echo $(( 42 + 1 ))');
  assert.throws(
    () => renderCommand('echo $(( {{ v }} ))', varLookup({ v: '1); touch x; ((1' })),
    (e: unknown) => e instanceof RunbookError && e.code === 'E_VAR_UNSAFE',
  );
  assert.throws(
    () => renderCommand('cat <<EOF\nx {{ v }}\nEOF', varLookup({ v: 'a\nEOF\ntouch x' })),
    (e: unknown) => e instanceof RunbookError && e.code === 'E_VAR_UNSAFE',
  );
  assert.equal(
    renderCommand('no vars {{ "{{" }}', () => {
      throw new Error('not called');
    }),
    'no vars {{',
  );
});

for (const shell of SHELLS) {
  test(`injection attempts never run, and values arrive byte-exact (${shell})`, () => {
    const T = mkdtempSync(join(tmpdir(), 'rb-inject-'));
    try {
      let checked = 0;
      for (const [tpl, expect] of TEMPLATES) {
        const cmds = EVIL.map((v) => renderCommand(tpl, varLookup({ v })));
        const batch = shBatch(shell, cmds, T);
        if (!batch) for (const f of readdirSync(T)) rmSync(join(T, f), { recursive: true, force: true });
        for (const [i, v] of EVIL.entries()) {
          const cmd = cmds[i];
          const r = batch?.[i] ?? sh(shell, cmd, T, { T });
          assert.deepEqual(
            readdirSync(T),
            [],
            `something was created: template ${JSON.stringify(tpl)} value ${JSON.stringify(v)} -> ${JSON.stringify(cmd)}`,
          );
          assert.equal(r.code, 0, `exit ${r.code} for ${JSON.stringify(cmd)}: ${r.stderr}`);
          const want = expect(v);
          if (want !== null) {
            assert.equal(r.stdout, want, `template ${JSON.stringify(tpl)} value ${JSON.stringify(v)} -> ${JSON.stringify(cmd)}`);
            checked++;
          }
        }
      }
      assert.ok(checked >= TEMPLATES.length * EVIL.length - 1);
    } finally {
      rmSync(T, { recursive: true, force: true });
    }
  });

  test(`here-documents carry values as data (${shell})`, () => {
    const T = mkdtempSync(join(tmpdir(), 'rb-inject-'));
    try {
      for (const v of EVIL.filter((x) => !x.includes('\n'))) {
        for (const tpl of ['cat <<EOF\n[{{ v }}]\nEOF', "cat <<'EOF'\n[{{ v }}]\nEOF", 'cat <<-EOF\n\t[{{ v }}]\n\tEOF']) {
          const cmd = renderCommand(tpl, varLookup({ v }));
          const r = sh(shell, cmd, T, { T });
          assert.deepEqual(readdirSync(T), [], cmd);
          assert.equal(r.stdout, `[${v}]\n`, `${JSON.stringify(tpl)} ${JSON.stringify(v)} -> ${JSON.stringify(cmd)}`);
        }
      }
    } finally {
      rmSync(T, { recursive: true, force: true });
    }
  });

  test(`| raw inserts verbatim and runs as shell code (${shell})`, () => {
    const T = mkdtempSync(join(tmpdir(), 'rb-raw-'));
    try {
      const cmd = renderCommand('echo start; {{ code | raw }}', varLookup({ code: 'touch "$T/made-by-raw"; echo $((1+2))' }));
      assert.equal(cmd, 'echo start; touch "$T/made-by-raw"; echo $((1+2))');
      const r = sh(shell, cmd, T, { T });
      assert.equal(r.stdout, 'start\n3\n');
      assert.deepEqual(readdirSync(T), ['made-by-raw']);
    } finally {
      rmSync(T, { recursive: true, force: true });
    }
  });

  test(`secret values go through the environment, never into the command (${shell})`, () => {
    const T = mkdtempSync(join(tmpdir(), 'rb-secret-'));
    try {
      const secret = `s3cr3t '"$(touch $T/pwned)`;
      const tpls: Array<[string, string]> = [
        ['printf %s {{ pw }}', secret],
        ['printf %s "<{{ pw }}>"', `<${secret}>`],
        ["printf %s '<{{ pw }}>'", `<${secret}>`],
        ['cat <<EOF\n<{{ pw }}>\nEOF', `<${secret}>\n`],
        ['X=`printf %s {{ pw }}`; printf %s "$X"', secret],
      ];
      for (const [tpl, want] of tpls) {
        const cmd = renderCommand(tpl, varLookup({ pw: secret }), { secretEnv: (p) => (p === 'pw' ? 'RB_SECRET_PW' : undefined) });
        assert.ok(!cmd.includes('s3cr3t'), cmd);
        const r = sh(shell, cmd, T, { T, RB_SECRET_PW: secret });
        assert.equal(r.stdout, want, cmd);
        assert.deepEqual(readdirSync(T), []);
      }
      assert.throws(
        () => renderCommand('x {{ pw | raw }}', varLookup({ pw: 'a' }), { secretEnv: () => 'RB_SECRET_PW' }),
        (e: unknown) => e instanceof RunbookError && e.code === 'E_TEMPLATE_SECRET_RAW',
      );
    } finally {
      rmSync(T, { recursive: true, force: true });
    }
  });
}

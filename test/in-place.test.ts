// tier: unit
// Which commands a shell session runs in place (src/transport/in-place.ts), and that running one in place in a
// real dash and bash leaves the shell as it was and prints what the subshell would.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { releaseScript } from '../src/engine/lock.js';
import { runsInPlace } from '../src/transport/in-place.js';
import { shQuote } from '../src/transport/shell.js';

const ACCEPTED = [
  'echo step 1',
  'systemctl stop containerd',
  'test -f /etc/hostname',
  '[ -d / ]',
  'ctr -n k8s.io images ls -q | wc -l',
  'echo x |\n  cat',
  'echo --opt=val "$HOME" \'${x} $(no) `no`\' "${HOME}" "$1" $? >/dev/null 2>&1',
  "printf '%s\\n' x",
  'printf "%s\\n" y',
  'grep -q root /etc/passwd\n',
  '\n  echo leading and trailing blank lines\n\n',
  '/usr/bin/env FOO=1 sh -c true',
  'echo a\\ b "q\\"uote" a#b',
  '2>/dev/null echo redirect first',
  'echo x 2>&1 >/dev/null',
  'ls /nonexistent 2>&- || true'.replace(' || true', ''),
  'false',
  'pwd',
  'type sh >/dev/null',
  'echo *',
];

const REFUSED = [
  'true && echo a',
  'true &&\n  echo continued',
  'echo a | cat && echo b',
  'echo a&',
  '',
  '\n',
  'cd /tmp',
  'exit 3',
  'X=1',
  'X=1 env',
  'echo a; echo b',
  'echo a || echo b',
  'sleep 1 & echo b',
  'sleep 1 &',
  '! false',
  '(echo a)',
  '{ echo a; }',
  'echo a\necho b',
  'echo $(id)',
  'echo `id`',
  'echo "$(id)"',
  'echo "`id`"',
  'echo $((x=1))',
  'echo ${x:=1}',
  'echo "${x=1}"',
  'echo ${#x}',
  'cat <<EOF\nx\nEOF',
  'cat <<<x',
  'cat <>f',
  "echo $'x'",
  'printf -v x y',
  "printf '-v' x y",
  'printf "$f" x',
  'printf $f x',
  'set -e',
  "trap 'echo' EXIT",
  'export A=1',
  'read x',
  'eval echo',
  '. /etc/profile',
  'source /etc/profile',
  'umask 077',
  'unset HOME',
  'shift',
  'local x',
  'declare x=1',
  'typeset x',
  'let x=1',
  'alias l=ls',
  'hash -r',
  'wait',
  'exec 3>/dev/null',
  'command cd /',
  'builtin cd /',
  'getopts a x',
  'ulimit -n 10',
  'shopt -s nullglob',
  'enable -n echo',
  ':',
  'time sleep 0',
  'if true; then echo a; fi',
  'while false; do :; done',
  'for x in a; do echo; done',
  'case a in a) ;; esac',
  '[[ -f x ]]',
  '"cd" /',
  "'echo' x",
  '$CMD x',
  '${CMD} x',
  'c\\d /',
  'e* x',
  '# a comment',
  'echo x # a comment',
  'echo a |& cat',
  'echo a &> f',
  'echo {fd}>f',
  'echo {a,b}',
  'true &&',
  '&& true',
  'echo a |',
  'echo a | | cat',
  "echo 'unterminated",
  'echo "unterminated',
  'echo trailing\\',
  'echo "a\\\nb"',
  'echo a\\\nb',
  '>f',
  '>f && echo',
  'echo >',
  'echo $',
  'echo "$"',
  'echo ${x',
  'cat <(echo a)',
  'true\n| cat',
];

test('runsInPlace: one pipeline of programs and harmless builtins', () => {
  for (const s of ACCEPTED) assert.equal(runsInPlace(s), true, JSON.stringify(s));
});

test('runsInPlace: anything that could change the shell, or that it cannot be sure of, is refused', () => {
  for (const s of REFUSED) assert.equal(runsInPlace(s), false, JSON.stringify(s));
});

// The shell's state, printed by the shell itself: cwd, variables (less the ones every command changes), options,
// traps, umask, fds, aliases, functions.
const STATE =
  "echo \"pwd=$(pwd) umask=$(umask) opts=$- fds=$(ls /proc/$$/fd | tr '\\n' ' ')\"; trap; alias 2>/dev/null; " +
  "set | grep -Ev '^(_|PIPESTATUS|BASH_LINENO|BASH_COMMAND|BASH_ARGC|BASH_ARGV|LINENO|SHLVL|RANDOM|SECONDS|EPOCH[A-Z]*|SRANDOM|BASHPID)='";

for (const sh of ['dash', 'bash']) {
  const have = spawnSync(sh, ['-c', 'true']).status === 0;
  test(`in place in a real ${sh}: the shell is left as it was and the output is the subshell's`, {
    skip: !have && `${sh} not installed`,
  }, () => {
    const scripts = ACCEPTED.filter((s) => !/systemctl|ctr /.test(s));
    // The commands run in an empty directory but for two files (for `echo *`); what they print goes elsewhere.
    const cwd = mkdtempSync(join(tmpdir(), 'rb-inplace-cwd-'));
    const out = mkdtempSync(join(tmpdir(), 'rb-inplace-out-'));
    writeFileSync(join(cwd, 'a'), '');
    writeFileSync(join(cwd, 'b'), '');
    try {
      for (const s of scripts) {
        const q = `'${s.replace(/'/g, `'\\''`)}'`;
        // Same shell, same input: before; the command in a subshell; in place (as the session runs it); after.
        const input = [
          `cd ${cwd}`,
          `rb_script=${q}`,
          `{ ${STATE}; } > ${out}/before.$$`,
          `( eval "$rb_script" ) </dev/null > ${out}/sub.$$ 2>&1; echo "rc=$?" >> ${out}/sub.$$`,
          `{ eval "$rb_script"; } </dev/null > ${out}/here.$$ 2>&1; echo "rc=$?" >> ${out}/here.$$`,
          `{ ${STATE}; } > ${out}/after.$$`,
          `for f in before after sub here; do echo "== $f"; cat ${out}/$f.$$; rm -f ${out}/$f.$$; done`,
        ].join('\n');
        const r = spawnSync(sh, ['-s'], { input, encoding: 'utf8', cwd });
        assert.equal(r.status, 0, `${sh} ${JSON.stringify(s)}: ${r.stderr}`);
        const parts = Object.fromEntries(
          r.stdout
            .split(/^== /m)
            .slice(1)
            .map((p) => [p.slice(0, p.indexOf('\n')), p.slice(p.indexOf('\n') + 1)]),
        );
        const part = (name: string): string | undefined => parts[name];
        assert.equal(part('after'), part('before'), `${sh}: ${JSON.stringify(s)} changed the shell`);
        assert.equal(part('here'), part('sub'), `${sh}: ${JSON.stringify(s)} printed otherwise in place`);
      }
    } finally {
      rmSync(cwd, { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }
  });
}

for (const sh of ['dash', 'bash']) {
  const have = spawnSync(sh, ['-c', 'true']).status === 0;
  test(`the lock's release script, run in place in a real ${sh}: removes only its own run's lock and leaves the shell as it was`, {
    skip: !have && `${sh} not installed`,
  }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'rb-inplace-lock-'));
    try {
      const lock = join(dir, "lo'ck");
      const cases = [
        { held: '{"run_id":"r1","controller":"c"}', want: 'released\nrc=0\n', gone: true },
        { held: '{"run_id":"r10","controller":"c"}', want: 'rc=0\n', gone: false },
        { held: undefined, want: 'rc=0\n', gone: true },
      ];
      for (const c of cases) {
        if (c.held !== undefined) writeFileSync(lock, `${c.held}\n`);
        else rmSync(lock, { force: true });
        const input = [
          `rb_script=${shQuote(releaseScript(lock, 'r1'))}`,
          `{ ${STATE}; } > ${dir}/before`,
          `{ eval "$rb_script"; } </dev/null > ${dir}/here 2>&1; echo "rc=$?" >> ${dir}/here`,
          `{ ${STATE}; } > ${dir}/after`,
          `cat ${dir}/here; cmp -s ${dir}/before ${dir}/after && echo same`,
        ].join('\n');
        const r = spawnSync(sh, ['-s'], { input, encoding: 'utf8', cwd: dir });
        assert.equal(r.stdout, `${c.want}same\n`, `${sh}, lock ${c.held}: ${r.stderr}`);
        assert.equal(existsSync(lock), !c.gone, `${sh}, lock ${c.held}: the lock file`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

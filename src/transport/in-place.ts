/**
 * Which scripts a shell session may run in place: in the session shell itself, without the subshell that isolates
 * every other command (shell.ts prepareStep). On the hosts this saves a fork per command, which on a loaded host
 * is most of what a one-line step costs.
 *
 * Only a script that cannot change the session shell qualifies, checked by a strict parser, never by guessing:
 * one pipeline of simple commands (a line break may follow a `|`). Each simple command is a literal command name
 * that is not a shell builtin or keyword (so an external program, run in a child) or one of the builtins that
 * change nothing and end at once (echo, printf but not bash's `printf -v`, test, [, true, false, pwd, type, kill),
 * with its arguments and redirections. Refused, so run in a subshell as before: `;`, `&&`, `||`, `&`, `!`, `( )`,
 * `{ }`, a line break between commands, comments, assignments, `$( )`, backquotes, `$(( ))`, `${...}` beyond
 * `${name}`, here-documents, `<>`, `$'...'`, and every other builtin (cd, exit, set, export, read, trap, umask,
 * eval, ...).
 *
 * Why one pipeline: on a timeout the kill script ends the command's processes, not the session shell, which then
 * goes on with the rest of the script; after one pipeline there is no rest. (After `a && b`, b would run if a
 * exited 0 on its TERM.)
 * The session uses this only when its shell is dash or bash (the READY report): in busybox ash some applets run
 * inside the shell (NOFORK), out of reach of the kill script.
 */

/** Builtins that change nothing in the shell and end at once: allowed in place. */
const HARMLESS = new Set(['echo', 'printf', 'test', '[', 'true', 'false', 'pwd', 'type', 'kill']);

/** Builtins and reserved words of dash and bash (POSIX sh included): anything else named here is refused. */
const SHELL_WORDS = new Set(
  (
    '. : alias bg bind break builtin caller cd chdir command compgen complete compopt continue declare dirs disown ' +
    'enable eval exec exit export fc fg getopts hash help history jobs let local logout mapfile popd pushd read ' +
    'readarray readonly return set shift shopt source suspend times trap typeset ulimit umask unalias unset wait ' +
    '! case coproc do done elif else esac fi for function if in select then time until while { } [[ ]]'
  ).split(' '),
);

/** A command name that is only itself: no quoting, expansion, glob, or assignment. */
const LITERAL_NAME = /^(?:\[|[A-Za-z0-9_./+@%:,-]+)$/;

type Token = { kind: 'word'; raw: string } | { kind: 'redir' } | { kind: 'op'; op: '|' | 'nl' };

/** A `$...` expansion at s[i] (s[i] === '$'): the index after it, or -1 when it is not one we allow. */
function dollar(s: string, i: number): number {
  const c = s[i + 1] ?? '';
  if (/[A-Za-z_]/.test(c)) {
    let j = i + 2;
    while (j < s.length && /[A-Za-z0-9_]/.test(s[j])) j++;
    return j;
  }
  if (/[0-9@*#?$!-]/.test(c)) return i + 2;
  if (c === '{') {
    const m = /^\{(?:[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*#?$!-])\}/.exec(s.slice(i + 1));
    return m ? i + 1 + m[0].length : -1;
  }
  return -1;
}

/** One word from s[i]: its end index, or -1 when it holds something refused. */
function word(s: string, i: number): number {
  if (s[i] === '#') return -1; // a comment
  while (i < s.length) {
    const c = s[i];
    if (' \t\n|;<>()'.includes(c)) return i;
    if (c === '&') return -1; // `&`, `&&`, `&>`
    if ('{}`'.includes(c)) return -1;
    if (c === "'") {
      const e = s.indexOf("'", i + 1);
      if (e < 0) return -1;
      i = e + 1;
    } else if (c === '"') {
      i++;
      for (;;) {
        if (i >= s.length || s[i] === '`') return -1;
        if (s[i] === '"') break;
        if (s[i] === '\\') {
          if (i + 1 >= s.length || s[i + 1] === '\n') return -1;
          i += 2;
        } else if (s[i] === '$') {
          i = dollar(s, i);
          if (i < 0) return -1;
        } else i++;
      }
      i++;
    } else if (c === '\\') {
      if (i + 1 >= s.length || s[i + 1] === '\n') return -1;
      i += 2;
    } else if (c === '$') {
      i = dollar(s, i);
      if (i < 0) return -1;
    } else i++;
  }
  return i;
}

/** The script's tokens, or undefined when it holds something refused. */
function tokens(s: string): Token[] | undefined {
  const out: Token[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (c === ' ' || c === '\t') i++;
    else if (c === '\n') {
      out.push({ kind: 'op', op: 'nl' });
      i++;
    } else if (c === '|') {
      if (s[i + 1] === '|' || s[i + 1] === '&') return undefined;
      out.push({ kind: 'op', op: '|' });
      i++;
    } else if (c === '<' || c === '>') {
      const op = /^(?:>>|>\||>&|<&|>|<)/.exec(s.slice(i))![0];
      if (s.startsWith('<<', i) || s.startsWith('<>', i)) return undefined;
      i += op.length;
      while (s[i] === ' ' || s[i] === '\t') i++;
      const e = word(s, i);
      if (e <= i) return undefined; // no target, or a refused one
      out.push({ kind: 'redir' });
      i = e;
    } else {
      const e = word(s, i);
      if (e <= i) return undefined;
      const raw = s.slice(i, e);
      // `2>file`: digits right before a redirection are its fd, not a word.
      if (!(/^[0-9]+$/.test(raw) && (s[e] === '<' || s[e] === '>'))) out.push({ kind: 'word', raw });
      i = e;
    }
  }
  return out;
}

/** Verdicts by script text: a fleet runs the same rendered step on many hosts. */
const verdicts = new Map<string, boolean>();

/** True when the script may run in the session shell itself (see the module comment). */
export function runsInPlace(script: string): boolean {
  let v = verdicts.get(script);
  if (v === undefined) {
    v = decide(script);
    if (verdicts.size >= 1000) verdicts.clear();
    verdicts.set(script, v);
  }
  return v;
}

function decide(script: string): boolean {
  const toks = tokens(script);
  if (!toks) return false;
  let named = false; // the current simple command has its name
  let items = 0; // its words and redirections
  let ended = false; // a line break ended it: only more line breaks may follow (a second command would be `;`)
  let printfArg = false; // the next word is the first argument of printf (bash's `printf -v NAME` assigns)
  for (const t of toks) {
    if (t.kind === 'op' && t.op === 'nl') {
      if (items > 0) ended = true;
      continue;
    }
    if (ended) return false;
    if (t.kind === 'op') {
      if (!named) return false; // `| b`, `a | | b`, or a command of redirections only
      named = false;
      printfArg = false;
      items = 0;
      continue;
    }
    items++;
    if (t.kind !== 'word') continue;
    if (printfArg && !/^(?:[^-$"'\\]|'[^-$]|"[^-$\\])/.test(t.raw)) return false;
    printfArg = false;
    if (!named) {
      if (!LITERAL_NAME.test(t.raw)) return false;
      if (SHELL_WORDS.has(t.raw) && !HARMLESS.has(t.raw)) return false;
      named = true;
      printfArg = t.raw === 'printf';
    }
  }
  return named;
}

/**
 * Templates: `{{ name }}`, `{{ name.field }}`, filters `| raw` and `| default('x')`,
 * literals `{{ '{{' }}` and `{% raw %}...{% endraw %}` (for go-templates such as
 * `docker inspect -f '{{ '{{' }}.State.Running{{ '}}' }}'`).
 *
 * Rendering into a shell command is context aware: the template's literal text is scanned
 * with POSIX sh lexing rules, and each value is quoted for the exact context it lands in
 * (bare word, "double quotes", 'single quotes', $( ), backticks, here-documents, $(( ))).
 * A value is always data; only `| raw` inserts shell code, and `plan` shows those.
 *
 * Pure: imports only the shell quoting module.
 */
import { didYouMean, RunbookError } from '../core/errors.js';
import { shEscapeDouble, shEscapeSingle, shQuote } from '../transport/shell.js';

/** A `{{ ... }}` reference to a variable. */
export interface TemplateRef {
  /** Root variable name (`wrote` in `{{ wrote.stdout }}`). */
  name: string;
  /** Full dotted path (`wrote.stdout`). */
  path: string;
  /** `| raw`: inserted as shell code, not as data. */
  raw: boolean;
  /** `| default('x')`: the value used when the variable is undefined. */
  default?: string;
}

export type TemplatePart = { kind: 'text'; text: string; offset: number } | ({ kind: 'var'; offset: number; source: string } & TemplateRef);

/** A template that does not parse. `offset` is the index of the problem in the template text. */
export class TemplateError extends RunbookError {
  readonly offset: number;
  constructor(message: string, offset: number, code = 'E_TEMPLATE') {
    super(code, message);
    this.offset = offset;
    this.name = 'TemplateError';
  }
}

export const FILTERS = ['raw', 'default'] as const;

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const SEGMENT = /^(?:[A-Za-z_][A-Za-z0-9_-]*|\d+)$/;

const cache = new Map<string, TemplatePart[]>();
const contextCache = new Map<string, PlaceholderContext[]>();

/** Parses a template into text and variable parts. Throws TemplateError. */
export function parseTemplate(tpl: string): TemplatePart[] {
  const hit = cache.get(tpl);
  if (hit) return hit;
  const parts: TemplatePart[] = [];
  let text = '';
  let textStart = 0;
  const flush = () => {
    if (text) parts.push({ kind: 'text', text, offset: textStart });
    text = '';
  };
  let i = 0;
  while (i < tpl.length) {
    const rawOpen = /^\{%-?\s*raw\s*-?%\}/.exec(tpl.slice(i));
    if (rawOpen) {
      const rest = tpl.slice(i + rawOpen[0].length);
      const close = /\{%-?\s*endraw\s*-?%\}/.exec(rest);
      if (!close) throw new TemplateError('"{% raw %}" has no matching "{% endraw %}"', i);
      if (!text) textStart = i;
      text += rest.slice(0, close.index);
      i += rawOpen[0].length + close.index + close[0].length;
      continue;
    }
    if (tpl.startsWith('{{', i)) {
      const end = findClose(tpl, i + 2);
      if (end < 0) throw new TemplateError(`unclosed "{{" (add the closing "}}")`, i);
      const inner = tpl.slice(i + 2, end);
      const lit = /^\s*(?:'([^']*)'|"([^"]*)")\s*$/.exec(inner);
      if (lit) {
        if (!text) textStart = i;
        text += lit[1] ?? lit[2];
      } else {
        flush();
        parts.push({ kind: 'var', offset: i, source: tpl.slice(i, end + 2), ...parseExpression(inner, i) });
        textStart = end + 2;
      }
      i = end + 2;
      continue;
    }
    if (!text) textStart = i;
    text += tpl[i];
    i++;
  }
  flush();
  if (cache.size > 2000) cache.clear();
  cache.set(tpl, parts);
  return parts;
}

/** Index of the `}}` closing an expression that starts at `from`, skipping quoted strings; -1 if none (or a new `{{` comes first). */
function findClose(tpl: string, from: number): number {
  let q: string | null = null;
  for (let j = from; j < tpl.length; j++) {
    const c = tpl[j];
    if (q) {
      if (c === q) q = null;
      continue;
    }
    if (c === "'" || c === '"') {
      q = c;
      continue;
    }
    if (c === '}' && tpl[j + 1] === '}') return j;
    if (c === '{' && tpl[j + 1] === '{') return -1;
    if (c === '\n') return -1;
  }
  return -1;
}

function parseExpression(inner: string, offset: number): TemplateRef {
  const pieces = splitFilters(inner);
  const expr = pieces[0].trim();
  if (expr === '') throw new TemplateError('empty "{{ }}" (write a variable name: {{ name }})', offset);
  const segs = expr.split('.');
  if (!IDENT.test(segs[0]) || !segs.slice(1).every((s) => SEGMENT.test(s))) {
    throw new TemplateError(`"${expr}" is not a variable name (use {{ name }} or {{ name.field }})`, offset);
  }
  const ref: TemplateRef = { name: segs[0], path: expr, raw: false };
  const seen = new Set<string>();
  for (const f of pieces.slice(1)) {
    const fm = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$/s.exec(f);
    if (!fm) throw new TemplateError(`"|${f}" is not a filter (filters: ${FILTERS.join(', ')})`, offset);
    const [, fname, args] = fm;
    if (seen.has(fname)) throw new TemplateError(`filter "${fname}" is used twice`, offset);
    seen.add(fname);
    if (fname === 'raw') {
      if (args !== undefined) throw new TemplateError('the raw filter takes no arguments: {{ name | raw }}', offset);
      ref.raw = true;
    } else if (fname === 'default') {
      const am = /^\s*(?:'([^']*)'|"([^"]*)"|(-?\d+(?:\.\d+)?))\s*$/.exec(args ?? '');
      if (!am) throw new TemplateError(`default needs one quoted string or number: {{ ${expr} | default('x') }}`, offset);
      ref.default = am[1] ?? am[2] ?? am[3];
    } else {
      const close = didYouMeanFilter(fname);
      throw new TemplateError(
        `unknown filter "${fname}"${close ? ` (did you mean "${close}"?)` : ''} (filters: ${FILTERS.join(', ')})`,
        offset,
      );
    }
  }
  return ref;
}

function didYouMeanFilter(f: string): string | undefined {
  const l = f.toLowerCase();
  const sorted = (s: string) => [...s].sort().join('');
  return (
    FILTERS.find((x) => x === l || sorted(x) === sorted(l) || (l.length >= 3 && x.startsWith(l)) || (l === 'safe' && x === 'raw')) ??
    (didYouMean(l, FILTERS) as string | undefined)
  );
}

/** Splits on `|` outside quotes. */
function splitFilters(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let q: string | null = null;
  for (const c of s) {
    if (q) {
      if (c === q) q = null;
      cur += c;
      continue;
    }
    if (c === "'" || c === '"') {
      q = c;
      cur += c;
      continue;
    }
    if (c === '|') {
      out.push(cur);
      cur = '';
      continue;
    }
    cur += c;
  }
  out.push(cur);
  return out;
}

/** Every variable reference in a template, in order. Throws TemplateError if it does not parse. */
export function templateRefs(tpl: string): TemplateRef[] {
  return parseTemplate(tpl).flatMap((p) =>
    p.kind === 'var' ? [{ name: p.name, path: p.path, raw: p.raw, ...(p.default !== undefined ? { default: p.default } : {}) }] : [],
  );
}

/** Paths used with `| raw` (shell code by the runbook author's choice): `plan` shows them. */
export function rawRefs(tpl: string): string[] {
  return templateRefs(tpl)
    .filter((r) => r.raw)
    .map((r) => r.path);
}

/** Resolves a dotted path (`a.b.0`) in a variable map; undefined when any step is missing. */
export function lookupPath(vars: Record<string, unknown>, dotted: string): unknown {
  let cur: unknown = vars;
  for (const seg of dotted.split('.')) {
    if (cur === null || cur === undefined || typeof cur !== 'object') return undefined;
    if (!Object.hasOwn(cur, seg)) return undefined;
    cur = (cur as Record<string, unknown>)[seg];
  }
  return cur;
}

/** A lookup function over a variable map, for renderCommand/renderText. */
export function varLookup(vars: Record<string, unknown>): (dotted: string) => unknown {
  return (p) => lookupPath(vars, p);
}

/** How a value becomes text before quoting: strings as is, numbers/booleans as text, objects as JSON, null as ''. */
export function valueToString(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v === null) return '';
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (v instanceof Date) return v.toISOString();
  return JSON.stringify(v);
}

function resolve(ref: TemplateRef, lookup: (p: string) => unknown): string {
  const v = lookup(ref.path);
  if (v === undefined) {
    if (ref.default !== undefined) return ref.default;
    throw new RunbookError(
      'E_VAR_UNDEFINED',
      `variable "${ref.path}" is not defined (define it in the runbook's vars, the inventory, or with -e ${ref.name}=...)`,
    );
  }
  return valueToString(v);
}

/** Plain-text rendering (step names, messages): no quoting. */
export function renderText(tpl: string, lookup: (dotted: string) => unknown): string {
  return parseTemplate(tpl)
    .map((p) => (p.kind === 'text' ? p.text : resolve(p, lookup)))
    .join('');
}

// ---------------------------------------------------------------------------------------
// Shell context scanning

/** The shell context a placeholder lands in. */
export type ShellContext = 'bare' | 'double' | 'single' | 'heredoc' | 'heredoc-literal' | 'arith' | 'comment';

export interface PlaceholderContext {
  ref: TemplateRef;
  offset: number;
  context: ShellContext;
  /** Backtick nesting levels around it (each level needs one more escaping pass). */
  backticks: number;
  /** Set when the placeholder is somewhere we cannot insert data safely. */
  unsupported?: string;
  /** For here-documents: the delimiter a value line must not equal. */
  heredocDelim?: string;
  heredocStripTabs?: boolean;
  /** The here-document line around it could equal the delimiter for some value: checked at render time. */
  heredocLineRisk?: boolean;
}

type Frame =
  | { t: 'top' }
  | { t: 'cmd' } // $( ... )
  | { t: 'sub' } // ( ... ) inside a bare-like frame
  | { t: 'bt' } // ` ... `
  | { t: 'dq' }
  | { t: 'sq' }
  | { t: 'ansi' } // $'...'
  | { t: 'brace' } // ${ ... }
  | { t: 'arith'; depth: number }; // $(( ... ))

interface PendingHeredoc {
  delim: string;
  literal: boolean;
  stripTabs: boolean;
}

const BREAK = /[\s;&|()<>]/;

/**
 * Scans the template text with sh lexing rules and reports the context of every placeholder,
 * in template order. Placeholders never change the scan state (a value is one piece of data).
 */
export function analyzeTemplate(tpl: string): PlaceholderContext[] {
  // Same text, same contexts: the engine renders every command of every host through here.
  const hit = contextCache.get(tpl);
  if (hit) return hit;
  const parts = parseTemplate(tpl);
  const out: PlaceholderContext[] = [];
  const stack: Frame[] = [{ t: 'top' }];
  const pending: PendingHeredoc[] = [];
  type Heredoc = PendingHeredoc & { line: string; lineCtx: PlaceholderContext[] };
  let heredoc = null as Heredoc | null;
  let inComment = false;
  let wordStart = true; // at the start of a word (for `#` comments)
  // Set when the char just before the next token is an active `\` or `$`: a value placed
  // there would be glued to it (`\'...` or `$(...`), so that position is refused.
  let glued = null as string | null;
  type Tok = { c: string } | { ph: Extract<TemplatePart, { kind: 'var' }> };
  const toks: Tok[] = [];
  for (const p of parts) {
    if (p.kind === 'text') for (const c of p.text) toks.push({ c });
    else toks.push({ ph: p });
  }
  const top = () => stack[stack.length - 1];
  const btCount = () => stack.filter((f) => f.t === 'bt').length;
  const peek = (k: number): string | undefined => {
    const t = toks[k];
    return t && 'c' in t ? t.c : undefined;
  };
  const isPh = (k: number) => {
    const t = toks[k];
    return !!t && 'ph' in t;
  };

  for (let k = 0; k < toks.length; k++) {
    const tok = toks[k];
    if ('ph' in tok) {
      const ph = tok.ph;
      const base: PlaceholderContext = { ref: ph, offset: ph.offset, context: 'bare', backticks: btCount() };
      let ctx: PlaceholderContext;
      if (heredoc) {
        ctx = {
          ...base,
          context: heredoc.literal ? 'heredoc-literal' : 'heredoc',
          heredocDelim: heredoc.delim,
          heredocStripTabs: heredoc.stripTabs,
        };
        heredoc.line += '\u0000';
        heredoc.lineCtx.push(ctx);
      } else if (inComment) ctx = { ...base, context: 'comment' };
      else {
        const f = top();
        if (f.t === 'dq') ctx = { ...base, context: 'double' };
        else if (f.t === 'sq') ctx = { ...base, context: 'single' };
        else if (f.t === 'arith') ctx = { ...base, context: 'arith' };
        else if (f.t === 'ansi')
          ctx = {
            ...base,
            unsupported: `{{ ${ph.path} }} is inside $'...', where a value cannot be quoted (use "..." or a bare {{ ${ph.path} }})`,
          };
        else if (f.t === 'brace')
          ctx = {
            ...base,
            unsupported: `{{ ${ph.path} }} is inside \${...}, where a value cannot be quoted (assign it first: X={{ ${ph.path} }}, then use \${X...})`,
          };
        else ctx = base;
      }
      if (glued && !ctx.unsupported && ctx.context !== 'single' && ctx.context !== 'heredoc-literal' && ctx.context !== 'comment') {
        ctx.unsupported = `{{ ${ph.path} }} directly follows "${glued}", which would change how its value is read (put a space or quotes between them)`;
      }
      glued = null;
      out.push(ctx);
      wordStart = false;
      continue;
    }
    glued = null;
    const c = tok.c;
    // Here-document body: line by line until the delimiter line.
    if (heredoc) {
      if (c === '\n') {
        endHeredocLine();
        continue;
      }
      if (!heredoc.literal && (c === '\\' || c === '$')) {
        if (isPh(k + 1)) glued = c;
        else if (c === '\\') {
          heredoc.line += c + (peek(k + 1) ?? '');
          k++;
          continue;
        }
      }
      heredoc.line += c;
      continue;
    }
    if (inComment) {
      if (c === '\n') {
        inComment = false;
        wordStart = true;
        startHeredocIfPending();
      }
      continue;
    }
    const f = top();
    switch (f.t) {
      case 'sq':
        if (c === "'") stack.pop();
        continue;
      case 'ansi':
        if (c === '\\') {
          if (!isPh(k + 1)) k++;
          continue;
        }
        if (c === "'") stack.pop();
        continue;
      case 'dq':
        if (c === '\\') {
          if (isPh(k + 1)) glued = c;
          else k++;
          continue;
        }
        if (c === '"') {
          stack.pop();
          continue;
        }
        if (c === '`') {
          stack.push({ t: 'bt' });
          continue;
        }
        if (c === '$') {
          k = dollar(k);
          continue;
        }
        continue;
      case 'brace':
        if (c === '\\') {
          if (isPh(k + 1)) glued = c;
          else k++;
          continue;
        }
        if (c === '}') {
          stack.pop();
          continue;
        }
        if (c === "'" && !stack.some((x) => x.t === 'dq')) {
          stack.push({ t: 'sq' });
          continue;
        }
        if (c === '"') {
          stack.push({ t: 'dq' });
          continue;
        }
        if (c === '`') {
          stack.push({ t: 'bt' });
          continue;
        }
        if (c === '$') {
          k = dollar(k);
          continue;
        }
        continue;
      case 'arith':
        if (c === '(') {
          f.depth++;
          continue;
        }
        if (c === ')') {
          if (f.depth > 0) {
            f.depth--;
            continue;
          }
          if (peek(k + 1) === ')') {
            k++;
            stack.pop();
          }
          continue;
        }
        if (c === '$') {
          k = dollar(k);
          continue;
        }
        if (c === '`') {
          stack.push({ t: 'bt' });
          continue;
        }
        continue;
      default:
        break;
    }
    // bare-like frames: top, cmd, sub, bt
    const wasStart = wordStart;
    wordStart = BREAK.test(c);
    if (c === '\\') {
      if (isPh(k + 1)) glued = c;
      else k++;
      continue;
    }
    if (c === '#' && wasStart) {
      inComment = true;
      continue;
    }
    if (c === "'") {
      stack.push({ t: 'sq' });
      continue;
    }
    if (c === '"') {
      stack.push({ t: 'dq' });
      continue;
    }
    if (c === '`') {
      if (f.t === 'bt') stack.pop();
      else stack.push({ t: 'bt' });
      continue;
    }
    if (c === '$') {
      k = dollar(k);
      continue;
    }
    if (c === '(') {
      stack.push({ t: 'sub' });
      continue;
    }
    if (c === ')') {
      if (f.t === 'cmd' || f.t === 'sub') stack.pop();
      continue;
    }
    if (c === '<' && peek(k + 1) === '<' && peek(k + 2) !== '<') {
      k = heredocOp(k);
      wordStart = true;
      continue;
    }
    if (c === '\n') startHeredocIfPending();
  }
  if (heredoc) endHeredocLine();
  if (contextCache.size > 2000) contextCache.clear();
  contextCache.set(tpl, out);
  return out;

  function endHeredocLine() {
    const h = heredoc!;
    const line = h.stripTabs ? h.line.replace(/^\t+/, '') : h.line;
    // A line with placeholders must not be able to become the delimiter line.
    if (h.lineCtx.length) {
      const re = new RegExp(
        `^${line
          .split('\u0000')
          .map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
          .join('.*')}$`,
        's',
      );
      if (re.test(h.delim)) {
        for (const ctx of h.lineCtx) ctx.heredocLineRisk = true;
      }
    }
    if (line === h.delim) {
      heredoc = null;
      startHeredocIfPending();
    } else {
      h.line = '';
      h.lineCtx = [];
    }
  }

  function startHeredocIfPending() {
    const next = pending.shift();
    if (next) heredoc = { ...next, line: '', lineCtx: [] };
  }

  /** At a `$` (index k): pushes the frame it opens; returns the index of the last consumed char. */
  function dollar(k: number): number {
    if (isPh(k + 1)) {
      glued = '$';
      return k;
    }
    const n = peek(k + 1);
    if (n === '(') {
      if (peek(k + 2) === '(') {
        stack.push({ t: 'arith', depth: 0 });
        return k + 2;
      }
      stack.push({ t: 'cmd' });
      return k + 1;
    }
    if (n === '{') {
      stack.push({ t: 'brace' });
      return k + 1;
    }
    if (n === "'" && top().t !== 'dq') {
      stack.push({ t: 'ansi' });
      return k + 1;
    }
    return k;
  }

  /** At `<<` (index k): reads the delimiter word; returns the index of its last char. */
  function heredocOp(k: number): number {
    let j = k + 2;
    let stripTabs = false;
    if (peek(j) === '-') {
      stripTabs = true;
      j++;
    }
    while (peek(j) === ' ' || peek(j) === '\t') j++;
    let delim = '';
    let literal = false;
    let q: string | null = null;
    for (; j < toks.length; j++) {
      const t = toks[j];
      if ('ph' in t) {
        out.push({
          ref: t.ph,
          offset: t.ph.offset,
          context: 'bare',
          backticks: btCount(),
          unsupported: `{{ ${t.ph.path} }} cannot be a here-document delimiter`,
        });
        delim += '\u0000';
        continue;
      }
      const ch = t.c;
      if (q) {
        if (ch === q) {
          q = null;
          continue;
        }
        delim += ch;
        continue;
      }
      if (ch === "'" || ch === '"') {
        q = ch;
        literal = true;
        continue;
      }
      if (ch === '\\') {
        literal = true;
        const nx = peek(j + 1);
        if (nx !== undefined) {
          delim += nx;
          j++;
        }
        continue;
      }
      if (BREAK.test(ch)) break;
      delim += ch;
    }
    if (delim) pending.push({ delim, literal, stripTabs });
    return j - 1;
  }
}

export interface RenderOptions {
  /**
   * For secret variables: the name of an environment variable that will hold the value when the
   * command runs. The command then references `"$NAME"` instead of containing the value, so the
   * secret never appears in any argv. Return undefined for non-secret paths.
   */
  secretEnv?: (dottedPath: string) => string | undefined;
}

/**
 * Renders a template into a shell command. Every value is inserted as data for the context it
 * lands in; `| raw` values are inserted verbatim (shell code). Throws RunbookError
 * E_VAR_UNDEFINED, E_TEMPLATE (parse), E_TEMPLATE_CONTEXT (placeholder where data cannot be
 * inserted safely), E_VAR_UNSAFE (a value that cannot be represented in its context).
 */
export function renderCommand(tpl: string, lookup: (dotted: string) => unknown, opts: RenderOptions = {}): string {
  const parts = parseTemplate(tpl);
  if (!parts.some((p) => p.kind === 'var')) return parts.map((p) => (p.kind === 'text' ? p.text : '')).join('');
  const contexts = analyzeTemplate(tpl);
  let ci = 0;
  let out = '';
  for (const p of parts) {
    if (p.kind === 'text') {
      out += p.text;
      continue;
    }
    const ctx = contexts[ci++];
    out += renderPlaceholder(ctx, lookup, opts);
  }
  return out;
}

function renderPlaceholder(ctx: PlaceholderContext, lookup: (p: string) => unknown, opts: RenderOptions): string {
  const { ref } = ctx;
  const env = opts.secretEnv?.(ref.path);
  if (ref.raw) {
    if (env) throw new RunbookError('E_TEMPLATE_SECRET_RAW', `"${ref.path}" is a secret and cannot be used with | raw (remove | raw)`);
    return resolve(ref, lookup);
  }
  if (ctx.unsupported) throw new RunbookError('E_TEMPLATE_CONTEXT', ctx.unsupported);
  let text: string;
  if (env) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(env)) throw new RunbookError('E_INTERNAL', `bad environment variable name ${env}`);
    // The value must still resolve (undefined is an error either way).
    resolve(ref, lookup);
    switch (ctx.context) {
      case 'bare':
      case 'comment':
        text = `"\${${env}}"`;
        break;
      case 'double':
      case 'heredoc':
      case 'arith':
        text = `\${${env}}`;
        break;
      case 'single':
        text = `'"\${${env}}"'`;
        break;
      case 'heredoc-literal':
        throw new RunbookError(
          'E_TEMPLATE_CONTEXT',
          `secret "${ref.path}" cannot be used in a quoted here-document (use an unquoted delimiter: <<EOF)`,
        );
    }
  } else {
    const v = resolve(ref, lookup);
    switch (ctx.context) {
      case 'bare':
        text = shQuote(v);
        break;
      // A line break in a comment would end it: the rest of the value must not become code.
      case 'comment':
        text = shQuote(v.replace(/[\r\n]/g, ' '));
        break;
      case 'double':
        text = shEscapeDouble(v);
        break;
      case 'single':
        text = shEscapeSingle(v);
        break;
      case 'arith':
        if (!/^-?\d+$/.test(v.trim())) {
          throw new RunbookError('E_VAR_UNSAFE', `"${ref.path}" is used inside $(( )) but its value is not an integer`);
        }
        text = v.trim();
        break;
      case 'heredoc':
      case 'heredoc-literal':
        if (v.includes('\n')) {
          throw new RunbookError(
            'E_VAR_UNSAFE',
            `the value of "${ref.path}" has a line break and is used in a here-document, where it could end the document early (pipe it instead: printf '%s\\n' {{ ${ref.path} }} | ...)`,
          );
        }
        if (ctx.heredocLineRisk && ctx.heredocDelim?.includes(ctx.heredocStripTabs ? v.replace(/^\t+/, '') : v)) {
          throw new RunbookError(
            'E_VAR_UNSAFE',
            `the value of "${ref.path}" could end the here-document early (its line would read ${ctx.heredocDelim}); put other text on that line`,
          );
        }
        text = ctx.context === 'heredoc' ? v.replace(/[\\$`]/g, (c) => `\\${c}`) : v;
        break;
    }
  }
  for (let i = 0; i < ctx.backticks; i++) text = text.replace(/[\\`$]/g, (c) => `\\${c}`);
  return text;
}

/**
 * The two bits of Python syntax Ansible's INI inventory parser leans on, ported faithfully:
 * `shlex.split(line, comments=True)` (host lines) and `ast.literal_eval` (every INI value).
 * Pure functions, no I/O.
 */

/** Python's shlex.split(s, comments=True, posix=True). Throws Error('No closing quotation') like Python. */
export function shlexSplit(s: string): string[] {
  const out: string[] = [];
  const ws = ' \t\r\n';
  let i = 0;
  let state: ' ' | 'a' | '"' | "'" | '\\' | null = ' ';
  let escapedState = ' ' as string;
  let token = '';
  let quoted = false;
  const emit = () => {
    if (token !== '' || quoted) out.push(token);
    token = '';
    quoted = false;
  };
  for (;;) {
    const ch = i < s.length ? s[i++] : '';
    if (state === ' ') {
      if (!ch) break;
      if (ws.includes(ch)) {
        if (token || quoted) emit();
        continue;
      }
      if (ch === '#') {
        const nl = s.indexOf('\n', i);
        i = nl < 0 ? s.length : nl + 1;
        continue;
      }
      if (ch === '\\') {
        escapedState = 'a';
        state = '\\';
        continue;
      }
      if (ch === '"' || ch === "'") {
        state = ch;
        continue;
      }
      token = ch;
      state = 'a';
    } else if (state === '"' || state === "'") {
      quoted = true;
      if (!ch) throw new Error('No closing quotation');
      if (ch === state) state = 'a';
      else if (ch === '\\' && state === '"') {
        escapedState = state as string;
        state = '\\';
      } else token += ch;
    } else if (state === '\\') {
      if (!ch) throw new Error('No escaped character');
      if ((escapedState === '"' || escapedState === "'") && ch !== '\\' && ch !== escapedState) token += '\\';
      token += ch;
      state = escapedState as typeof state;
    } else if (state === 'a') {
      if (!ch) {
        emit();
        break;
      }
      if (ws.includes(ch)) {
        state = ' ';
        emit();
        continue;
      }
      if (ch === '#') {
        const nl = s.indexOf('\n', i);
        i = nl < 0 ? s.length : nl + 1;
        state = ' ';
        emit();
        continue;
      }
      if (ch === '"' || ch === "'") {
        state = ch;
        continue;
      }
      if (ch === '\\') {
        escapedState = 'a';
        state = '\\';
        continue;
      }
      token += ch;
    }
  }
  return out;
}

class NotLiteral extends Error {}

/** A Python tuple, kept apart from lists only while parsing. */
type PyValue = unknown;

/**
 * Python's ast.literal_eval on a string, or `undefined` when Python would raise
 * (ValueError/SyntaxError) — the INI parser then keeps the raw string.
 * Supports what appears in inventories: numbers (int/float incl. hex/oct/bin, underscores, exponents),
 * strings (quotes, triple quotes, prefixes r/u/b, escapes, implicit concatenation), True/False/None,
 * lists, tuples, dicts, sets, unary +/-.
 */
export function literalEval(src: string): { value: PyValue } | undefined {
  const p = new LitParser(src.replace(/^[ \t]+/, ''));
  try {
    const v = p.parseExpr();
    p.skipWs();
    if (p.pos < p.src.length) return undefined;
    return { value: v };
  } catch (e) {
    if (e instanceof NotLiteral) return undefined;
    throw e;
  }
}

class LitParser {
  pos = 0;
  depth = 0;
  constructor(readonly src: string) {}

  fail(): never {
    throw new NotLiteral();
  }

  skipWs(): void {
    // Inside brackets Python allows newlines; at top level a newline would end the statement (we only get one line).
    for (;;) {
      const c = this.src[this.pos];
      if (c === ' ' || c === '\t' || c === '\f' || (this.depth > 0 && (c === '\n' || c === '\r'))) {
        this.pos++;
        continue;
      }
      if (c === '\\' && this.src[this.pos + 1] === '\n') {
        this.pos += 2;
        continue;
      }
      if (c === '#') {
        while (this.pos < this.src.length && this.src[this.pos] !== '\n') this.pos++;
        continue;
      }
      break;
    }
  }

  parseExpr(): PyValue {
    this.skipWs();
    const c = this.src[this.pos];
    if (c === '-' || c === '+') {
      this.pos++;
      this.skipWs();
      const v = this.parseAtom();
      if (typeof v !== 'number' && typeof v !== 'bigint') this.fail();
      if (c === '-') return typeof v === 'bigint' ? -v : -(v as number);
      return v;
    }
    return this.parseAtom();
  }

  parseAtom(): PyValue {
    this.skipWs();
    const s = this.src;
    const c = s[this.pos];
    if (c === undefined) this.fail();
    if (c === '[') return this.parseSeq('[', ']');
    if (c === '(') {
      const r = this.parseSeq('(', ')');
      return r;
    }
    if (c === '{') return this.parseDictOrSet();
    const strStart = /^([rRuUbB]|[rR][bB]|[bB][rR])?['"]/.exec(s.slice(this.pos));
    if (strStart) {
      let out = '';
      let any = false;
      for (;;) {
        this.skipWs();
        const m = /^([rRuUbB]|[rR][bB]|[bB][rR])?['"]/.exec(s.slice(this.pos));
        if (!m) break;
        out += this.parseString();
        any = true;
      }
      if (!any) this.fail();
      return out;
    }
    if (/[0-9.]/.test(c)) return this.parseNumber();
    const w = /^[A-Za-z_][A-Za-z0-9_]*/.exec(s.slice(this.pos));
    if (w) {
      this.pos += w[0].length;
      if (w[0] === 'True') return true;
      if (w[0] === 'False') return false;
      if (w[0] === 'None') return null;
    }
    this.fail();
  }

  parseSeq(open: string, close: string): PyValue[] {
    this.pos++;
    this.depth++;
    const items: PyValue[] = [];
    let sawComma = false;
    for (;;) {
      this.skipWs();
      if (this.src[this.pos] === close) {
        this.pos++;
        break;
      }
      if (items.length > 0 && !sawComma) this.fail();
      items.push(this.parseExpr());
      this.skipWs();
      sawComma = false;
      if (this.src[this.pos] === ',') {
        this.pos++;
        sawComma = true;
      } else if (this.src[this.pos] !== close) this.fail();
    }
    this.depth--;
    if (open === '(' && items.length === 1 && !sawComma) return items[0] as PyValue[]; // parenthesised expression
    return items;
  }

  parseDictOrSet(): PyValue {
    this.pos++;
    this.depth++;
    this.skipWs();
    if (this.src[this.pos] === '}') {
      this.pos++;
      this.depth--;
      return {};
    }
    const first = this.parseExpr();
    this.skipWs();
    if (this.src[this.pos] === ':') {
      const obj: Record<string, unknown> = {};
      let key = first;
      for (;;) {
        this.pos++; // ':'
        const val = this.parseExpr();
        if (typeof key === 'object' && key !== null) this.fail(); // unhashable
        obj[pyKeyString(key)] = val;
        this.skipWs();
        if (this.src[this.pos] === ',') {
          this.pos++;
          this.skipWs();
        } else if (this.src[this.pos] !== '}') this.fail();
        if (this.src[this.pos] === '}') {
          this.pos++;
          break;
        }
        key = this.parseExpr();
        this.skipWs();
        if (this.src[this.pos] !== ':') this.fail();
      }
      this.depth--;
      return obj;
    }
    // a set: literal_eval accepts it; JSON has no sets, Ansible's encoder would fail; treat as a list
    const items = [first];
    for (;;) {
      this.skipWs();
      if (this.src[this.pos] === ',') {
        this.pos++;
        this.skipWs();
      }
      if (this.src[this.pos] === '}') {
        this.pos++;
        break;
      }
      items.push(this.parseExpr());
    }
    this.depth--;
    return items;
  }

  parseString(): string {
    const s = this.src;
    let raw = false;
    let bytes = false;
    while (/[rRuUbB]/.test(s[this.pos])) {
      if (/[rR]/.test(s[this.pos])) raw = true;
      if (/[bB]/.test(s[this.pos])) bytes = true;
      this.pos++;
    }
    void bytes;
    const q = s[this.pos];
    const triple = s.startsWith(q.repeat(3), this.pos);
    const delim = triple ? q.repeat(3) : q;
    this.pos += delim.length;
    let out = '';
    for (;;) {
      if (this.pos >= s.length) this.fail();
      if (s.startsWith(delim, this.pos)) {
        this.pos += delim.length;
        return out;
      }
      const ch = s[this.pos];
      if (!triple && ch === '\n') this.fail();
      if (ch === '\\') {
        const n = s[this.pos + 1];
        if (n === undefined) this.fail();
        if (raw) {
          out += ch + n;
          this.pos += 2;
          continue;
        }
        this.pos += 2;
        switch (n) {
          case '\n':
            break;
          case '\\':
            out += '\\';
            break;
          case "'":
            out += "'";
            break;
          case '"':
            out += '"';
            break;
          case 'a':
            out += '\x07';
            break;
          case 'b':
            out += '\b';
            break;
          case 'f':
            out += '\f';
            break;
          case 'n':
            out += '\n';
            break;
          case 'r':
            out += '\r';
            break;
          case 't':
            out += '\t';
            break;
          case 'v':
            out += '\v';
            break;
          case 'x': {
            const h = s.slice(this.pos, this.pos + 2);
            if (!/^[0-9a-fA-F]{2}$/.test(h)) this.fail();
            out += String.fromCharCode(parseInt(h, 16));
            this.pos += 2;
            break;
          }
          case 'u':
          case 'U': {
            const len = n === 'u' ? 4 : 8;
            const h = s.slice(this.pos, this.pos + len);
            if (!new RegExp(`^[0-9a-fA-F]{${len}}$`).test(h)) this.fail();
            out += String.fromCodePoint(parseInt(h, 16));
            this.pos += len;
            break;
          }
          default:
            if (/[0-7]/.test(n)) {
              let o = n;
              while (o.length < 3 && /[0-7]/.test(s[this.pos])) o += s[this.pos++];
              out += String.fromCharCode(parseInt(o, 8));
            } else out += `\\${n}`;
        }
        continue;
      }
      out += ch;
      this.pos++;
    }
  }

  parseNumber(): number {
    const rest = this.src.slice(this.pos);
    let m = /^0[xX](?:_?[0-9a-fA-F])+/.exec(rest) ?? /^0[oO](?:_?[0-7])+/.exec(rest) ?? /^0[bB](?:_?[01])+/.exec(rest);
    if (m) {
      this.pos += m[0].length;
      this.noTrailingName();
      return Number(m[0].replace(/_/g, ''));
    }
    const dig = '[0-9](?:_?[0-9])*';
    const fl = new RegExp(`^(?:(?:${dig})?\\.${dig}(?:[eE][+-]?${dig})?|${dig}\\.(?:[eE][+-]?${dig})?|${dig}[eE][+-]?${dig})`);
    m = fl.exec(rest);
    if (m) {
      this.pos += m[0].length;
      if (/^[jJ]/.test(this.src.slice(this.pos))) this.fail(); // complex: not JSON-representable
      this.noTrailingName();
      return Number(m[0].replace(/_/g, ''));
    }
    m = /^(?:[1-9](?:_?[0-9])*|0(?:_?0)*)/.exec(rest);
    if (m) {
      this.pos += m[0].length;
      if (/^[0-9]/.test(this.src.slice(this.pos))) this.fail(); // leading zeros: SyntaxError
      if (/^[jJ]/.test(this.src.slice(this.pos))) this.fail();
      this.noTrailingName();
      return Number(m[0].replace(/_/g, ''));
    }
    this.fail();
  }

  noTrailingName(): void {
    if (/^[A-Za-z0-9_]/.test(this.src.slice(this.pos))) this.fail();
  }
}

function pyKeyString(k: unknown): string {
  if (k === true) return 'true';
  if (k === false) return 'false';
  if (k === null) return 'null';
  return String(k);
}

/**
 * -e/--extra-vars, as Ansible's load_extra_vars(): `key=value key2="a b"` (values stay strings),
 * a JSON/YAML object (`{...}` / `[...]` must give a mapping), or `@file` (YAML/JSON). Later -e win.
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ValidationError } from '../core/errors.js';
import { decodeUtf8 } from '../core/text.js';
import { isMapping, loadYaml, YamlSyntaxError } from './yaml.js';

/**
 * Ansible's split_args + parse_kv for one -e string: quote-aware split on spaces, then key=value. An error
 * never shows the value (it may be a secret): only its place (`which`) and the names before '='.
 */
export function parseKv(s: string, which = '-e'): Record<string, string> {
  const tokens: string[] = [];
  let cur = '';
  let quote: string | undefined;
  let has = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '\\' && i + 1 < s.length) {
      cur += c + s[++i];
      has = true;
      continue;
    }
    if (quote) {
      cur += c;
      if (c === quote) quote = undefined;
      continue;
    }
    if (c === '"' || c === "'") {
      quote = c;
      cur += c;
      has = true;
      continue;
    }
    if (/\s/.test(c)) {
      if (has) {
        tokens.push(cur);
        cur = '';
        has = false;
      }
      continue;
    }
    cur += c;
    has = true;
  }
  if (quote)
    throw new ValidationError(
      [{ path: 'extra-vars', message: `unbalanced quotes in ${which}${namesIn(s)} (its value is not shown: it may be a secret)` }],
      'E_EXTRA_VARS',
    );
  if (has) tokens.push(cur);
  const out: Record<string, string> = {};
  for (const t of tokens) {
    let eq = -1;
    for (let i = 0; i < t.length; i++) {
      if (t[i] === '\\') {
        i++;
        continue;
      }
      if (t[i] === '=') {
        eq = i;
        break;
      }
    }
    if (eq <= 0)
      throw new ValidationError(
        [
          {
            path: 'extra-vars',
            message: `a word of ${which}${namesIn(s)} is not key=value (not shown: it may be a secret); use -e key=value, -e '{"key": ...}' or -e @file.yml`,
          },
        ],
        'E_EXTRA_VARS',
      );
    const k = t.slice(0, eq).trim();
    let v = t.slice(eq + 1).trim();
    if (v.length >= 2 && (v[0] === '"' || v[0] === "'") && v[v.length - 1] === v[0] && v[v.length - 2] !== '\\') v = v.slice(1, -1);
    out[k] = v.replace(/\\([=\\ "'])/g, '$1');
  }
  return out;
}

/** ` (setting a, b)`: the names an -e string sets, as far as they can be told, for an error message. */
function namesIn(s: string): string {
  const names = [...s.matchAll(/(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=/g)].map((m) => m[1]);
  return names.length ? ` (setting ${names.join(', ')})` : '';
}

export function parseExtraVars(values: string[], cwd: string): Record<string, unknown> {
  let vars: Record<string, unknown> = {};
  for (const [i, raw] of (values ?? []).entries()) {
    if (!raw) continue;
    const which = `-e number ${i + 1}`;
    let data: unknown;
    if (raw.startsWith('@')) {
      const f = resolve(cwd, raw.slice(1));
      if (!existsSync(f))
        throw new ValidationError([{ file: raw.slice(1), path: 'extra-vars', message: `extra vars file not found: ${f}` }], 'E_EXTRA_VARS');
      const text = decodeUtf8(readFileSync(f), f, 'extra vars file');
      if (text.trimStart().startsWith('$ANSIBLE_VAULT')) {
        throw new ValidationError(
          [{ file: f, path: 'extra-vars', message: 'the file is Ansible Vault-encrypted; runbook does not decrypt vault' }],
          'E_INVENTORY_VAULT',
        );
      }
      try {
        data = loadYaml(text, f);
      } catch (e) {
        if (e instanceof YamlSyntaxError)
          throw new ValidationError([{ file: f, line: e.line, path: 'extra-vars', message: e.message }], 'E_EXTRA_VARS');
        throw e;
      }
      if (data === null) continue;
    } else if (raw[0] === '/' || raw[0] === '.') {
      throw new ValidationError(
        [{ path: 'extra-vars', message: `'${raw}' looks like a file name: prefix it with '@' (-e @${raw})` }],
        'E_EXTRA_VARS',
      );
    } else if (raw[0] === '{' || raw[0] === '[') {
      try {
        data = loadYaml(raw, '-e');
      } catch (e) {
        if (e instanceof YamlSyntaxError)
          throw new ValidationError(
            [
              {
                path: 'extra-vars',
                message: `${which} is not valid JSON or YAML (line ${e.line ?? '?'}; its text is not shown: it may hold a secret)`,
              },
            ],
            'E_EXTRA_VARS',
          );
        throw e;
      }
    } else {
      data = parseKv(raw, which);
    }
    if (!isMapping(data)) {
      throw new ValidationError([{ path: 'extra-vars', message: `${which} does not give a mapping of names to values` }], 'E_EXTRA_VARS');
    }
    vars = { ...vars, ...data };
  }
  return vars;
}

/**
 * The -e values as the journal keeps them (resume and rollback replay them): one that sets a secret is kept
 * as a JSON object in which each secret's value is "***" (it must be given again); `@file` stays a path.
 */
export function journaledExtraVars(values: string[], secretNames: ReadonlySet<string>, cwd: string): string[] {
  return values.map((raw) => {
    if (!raw || raw.startsWith('@')) return raw;
    const set = parseExtraVars([raw], cwd);
    if (!Object.keys(set).some((k) => secretNames.has(k))) return raw;
    return JSON.stringify(Object.fromEntries(Object.entries(set).map(([k, v]) => [k, secretNames.has(k) ? '***' : v])));
  });
}

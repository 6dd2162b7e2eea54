/** Alertmanager-style label matchers (`severity="critical"`, `cluster=~"prod-.*"`, `!=`, `!~`). */
export interface Matcher {
  label: string;
  op: '=' | '!=' | '=~' | '!~';
  value: string;
  re?: RegExp;
}

/** A matcher, or the reason the text is not one. */
export function parseMatcher(text: string): Matcher | string {
  const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([^\s"]*))\s*$/.exec(text);
  if (!m) return `"${text}" is not a matcher (label="value", label!="value", label=~"regex", label!~"regex")`;
  const op = m[2] as Matcher['op'];
  const value = m[3] !== undefined ? m[3].replace(/\\(.)/g, '$1') : (m[4] ?? '');
  if (op === '=~' || op === '!~') {
    try {
      // Anchored, as Alertmanager anchors its regex matchers.
      return { label: m[1], op, value, re: new RegExp(`^(?:${value})$`) };
    } catch (err) {
      return `"${text}": not a regular expression: ${(err as Error).message}`;
    }
  }
  return { label: m[1], op, value };
}

export function matches(ms: Matcher[], labels: Record<string, string>): boolean {
  return ms.every((m) => {
    const v = labels[m.label] ?? '';
    if (m.op === '=') return v === m.value;
    if (m.op === '!=') return v !== m.value;
    const hit = m.re!.test(v);
    return m.op === '=~' ? hit : !hit;
  });
}

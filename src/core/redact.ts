/**
 * Replaces every known secret with `***` in any string that leaves the process (events, journal, reports,
 * error messages). One instance per run, shared by all sinks.
 *
 * A secret is known in every form it is rendered in (added by the caller: shell-quoted, escaped for double
 * quotes) and as JSON writes it. Text cut from a longer one (a tail, a first line, a bounded register) goes
 * through redactCut(), which also removes what is left of a secret at the cut edge; stream() redacts output
 * that arrives in chunks, holding back a chunk's end while it could be the start of a secret.
 */
import { mapStrings } from './text.js';

export class Redactor {
  private forms: string[] = [];

  /** A secret value and the other forms it may be rendered in. */
  add(value: unknown, renderedForms: string[] = []): void {
    if (value === undefined || value === null) return;
    const s = String(value);
    if (s.length < 1) return;
    for (const f of [s, JSON.stringify(s).slice(1, -1), ...renderedForms]) if (f.length > 0 && !this.forms.includes(f)) this.forms.push(f);
    this.forms.sort((a, b) => b.length - a.length);
  }
  get size(): number {
    return this.forms.length;
  }
  redact(text: string): string;
  redact(text: string | undefined): string | undefined;
  redact(text: string | undefined): string | undefined {
    if (text === undefined || this.forms.length === 0) return text;
    let out = text;
    for (const s of this.forms) if (out.includes(s)) out = out.split(s).join('***');
    return out;
  }

  /**
   * Redacted text that was cut from a longer one: at a cut `start`, a beginning that is the end of a secret
   * goes; at a cut `end`, an ending that is the start of one. (At a cut, a few characters too many is fine.)
   */
  redactCut(text: string, cut: { start?: boolean; end?: boolean }): string {
    let out = this.redact(text);
    if (cut.start) {
      const k = this.startIsSecretEnd(out);
      if (k) out = `***${out.slice(k)}`;
    }
    if (cut.end) {
      const k = this.endIsSecretStart(out);
      if (k) out = `${out.slice(0, out.length - k)}***`;
    }
    return out;
  }

  /** Longest n such that text ends with the first n characters of a secret (n shorter than it), or 0. */
  private endIsSecretStart(text: string): number {
    let best = 0;
    for (const f of this.forms)
      for (let n = Math.min(f.length - 1, text.length); n > best; n--)
        if (text.charCodeAt(text.length - n) === f.charCodeAt(0) && text.endsWith(f.slice(0, n))) best = n;
    return best;
  }

  /** Longest n such that text starts with the last n characters of a secret (n shorter than it), or 0. */
  private startIsSecretEnd(text: string): number {
    let best = 0;
    for (const f of this.forms)
      for (let n = Math.min(f.length - 1, text.length); n > best; n--)
        if (text.charCodeAt(0) === f.charCodeAt(f.length - n) && text.startsWith(f.slice(f.length - n))) best = n;
    return best;
  }

  /** Redacts a stream of chunks: push() returns what is safe to show now, end() the rest. */
  stream(): { push(chunk: string): string; end(): string } {
    let held = '';
    return {
      push: (chunk) => {
        const text = this.redact(held + chunk);
        const k = this.endIsSecretStart(text);
        held = text.slice(text.length - k);
        return text.slice(0, text.length - k);
      },
      end: () => {
        const rest = held;
        held = '';
        return rest;
      },
    };
  }

  /** Deep-redacts strings inside plain JSON-like values. */
  redactValue<T>(v: T): T {
    return this.forms.length === 0 ? v : mapStrings(v, (s) => this.redact(s));
  }
}

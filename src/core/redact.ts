/**
 * Replaces every known secret value with `***` in any string that leaves the process
 * (events, journal, reports, error messages). One instance per run, shared by all sinks.
 */
export class Redactor {
  private secrets: string[] = [];
  add(value: unknown): void {
    if (value === undefined || value === null) return;
    const s = String(value);
    if (s.length < 1 || this.secrets.includes(s)) return;
    this.secrets.push(s);
    this.secrets.sort((a, b) => b.length - a.length);
  }
  get size(): number {
    return this.secrets.length;
  }
  redact(text: string): string;
  redact(text: string | undefined): string | undefined;
  redact(text: string | undefined): string | undefined {
    if (text === undefined || this.secrets.length === 0) return text;
    let out = text;
    for (const s of this.secrets) if (out.includes(s)) out = out.split(s).join('***');
    return out;
  }
  /** Deep-redacts strings inside plain JSON-like values. */
  redactValue<T>(v: T): T {
    if (this.secrets.length === 0) return v;
    if (typeof v === 'string') return this.redact(v) as unknown as T;
    if (Array.isArray(v)) return v.map((x) => this.redactValue(x)) as unknown as T;
    if (v && typeof v === 'object') {
      const o: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) o[k] = this.redactValue(x);
      return o as T;
    }
    return v;
  }
}

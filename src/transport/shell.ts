/**
 * The one place where values become shell text. Everything that puts data into a command
 * (templating, sudo wrapping, transports) goes through here.
 */

/** Single-quotes a value for POSIX sh: the result is always exactly one word, never code. */
export function shQuote(value: string): string {
  if (value === '') return "''";
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(value)) return value;
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** Escapes a value for the inside of a double-quoted sh string ("...here..."). */
export function shEscapeDouble(value: string): string {
  return value.replace(/[\\"$`]/g, (c) => `\\${c}`);
}

/** Escapes a value for the inside of a single-quoted sh string ('...here...'). */
export function shEscapeSingle(value: string): string {
  return value.replace(/'/g, `'\\''`);
}

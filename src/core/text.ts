/** `v` with `f` applied to every string inside it (plain JSON-like values: arrays, objects). */
export function mapStrings<T>(v: T, f: (s: string) => string): T {
  if (typeof v === 'string') return f(v) as T;
  if (Array.isArray(v)) return v.map((x) => mapStrings(x, f)) as T;
  if (v && typeof v === 'object') {
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) o[k] = mapStrings(x, f);
    return o as T;
  }
  return v;
}

/**
 * Input files (runbooks, inventories, variables and limit files) must be UTF-8: a file in another encoding
 * would be silently altered (every invalid byte turned into U+FFFD) and then run. Refused instead, with the
 * byte offset of the first invalid sequence.
 */
import { ValidationError } from './errors.js';

/** Byte offset of the first invalid UTF-8 sequence in buf (overlongs, surrogates and > U+10FFFF included), or -1. */
export function invalidUtf8At(buf: Uint8Array): number {
  for (let i = 0; i < buf.length; ) {
    const b = buf[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    let n: number;
    let min: number;
    if (b >= 0xc2 && b <= 0xdf) [n, min] = [1, 0x80];
    else if (b >= 0xe0 && b <= 0xef) [n, min] = [2, 0x800];
    else if (b >= 0xf0 && b <= 0xf4) [n, min] = [3, 0x10000];
    else return i;
    if (i + n >= buf.length) return i;
    let cp = b & (0x3f >> n);
    for (let k = 1; k <= n; k++) {
      const c = buf[i + k];
      if (c === undefined || (c & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += n + 1;
  }
  return -1;
}

/** buf as a string; a ValidationError (E_ENCODING, file and line) when it is not UTF-8. */
export function decodeUtf8(buf: Buffer, file: string, what: string): string {
  const at = invalidUtf8At(buf);
  if (at < 0) return buf.toString('utf8');
  let line = 1;
  for (let i = 0; i < at; i++) if (buf[i] === 0x0a) line++;
  const byte = buf[at].toString(16).padStart(2, '0');
  throw new ValidationError(
    [
      {
        file,
        line,
        message: `the ${what} is not UTF-8 (byte 0x${byte} at offset ${at}); convert it first, e.g. iconv -f LATIN1 -t UTF-8`,
      },
    ],
    'E_ENCODING',
  );
}

/** Request checks of serve's listener: authentication (bearer and/or HMAC) and a bounded body. */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { ServeConfig } from './config.js';

/** Signed requests: `X-Runbook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. */
export const SIGNATURE_HEADER = 'x-runbook-signature';
const MAX_SKEW_S = 300;

const digest = (b: Buffer | string) => createHash('sha256').update(b).digest();
/** Equal in constant time (both sides hashed first, so their lengths leak nothing). */
const same = (a: Buffer | string, b: Buffer | string) => timingSafeEqual(digest(a), digest(b));

/** Whether the bearer token (when configured) is right; the body is not needed for it. */
export function bearerOk(req: IncomingMessage, auth: ServeConfig['auth']): boolean {
  if (!auth.bearer) return true;
  const h = req.headers.authorization ?? '';
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return !!m && same(Buffer.from(m[1], 'utf8'), auth.bearer);
}

/** Whether the HMAC signature (when configured) is right for this body and recent. */
export function signatureOk(req: IncomingMessage, body: Buffer, auth: ServeConfig['auth'], nowS = Date.now() / 1000): boolean {
  if (!auth.hmac) return true;
  const h = req.headers[SIGNATURE_HEADER];
  const m = typeof h === 'string' ? /^t=(\d{1,12}),v1=([0-9a-f]{64})$/.exec(h.trim()) : null;
  if (!m || Math.abs(nowS - Number(m[1])) > MAX_SKEW_S) return false;
  const want = createHmac('sha256', auth.hmac).update(`${m[1]}.`).update(body).digest('hex');
  return same(m[2], want);
}

export function sign(secret: Buffer | string, body: Buffer | string, nowS = Math.floor(Date.now() / 1000)): string {
  return `t=${nowS},v1=${createHmac('sha256', secret).update(`${nowS}.`).update(body).digest('hex')}`;
}

export class BodyTooLarge extends Error {}

/** The request body, at most `max` bytes (BodyTooLarge past it: the rest is not read). */
export function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > max) return reject(new BodyTooLarge());
    const parts: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > max) {
        req.removeAllListeners('data');
        reject(new BodyTooLarge());
        req.resume();
        return;
      }
      parts.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });
}

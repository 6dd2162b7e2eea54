/** apply --cooldown / --max-attempts: parsed once, before anything runs. */
import { RunbookError } from '../core/errors.js';
import { parseDuration } from '../core/duration.js';
import type { AttemptPolicy } from '../engine/attempts.js';
import type { Args } from './main.js';

export function attemptPolicyFrom(argv: Args): AttemptPolicy | undefined {
  const c = argv.cooldown;
  const m = argv['max-attempts'];
  if (c === undefined && m === undefined) return undefined;
  const policy: AttemptPolicy = {};
  if (c !== undefined) {
    const ms = parseDuration(String(c));
    if (ms === undefined || ms <= 0) {
      throw new RunbookError('E_USAGE', `--cooldown ${JSON.stringify(String(c))} is not a duration; give one such as 30m, 2h or 1d.`);
    }
    policy.cooldownMs = ms;
  }
  if (m !== undefined) {
    const parts = /^\s*(\d+)\s*\/\s*(\S+)\s*$/.exec(String(m));
    const withinMs = parts ? parseDuration(parts[2]) : undefined;
    if (!parts || Number(parts[1]) < 1 || withinMs === undefined || withinMs <= 0) {
      throw new RunbookError('E_USAGE', `--max-attempts ${JSON.stringify(String(m))} is not COUNT/DURATION; give one such as 2/24h.`);
    }
    policy.maxAttempts = { count: Number(parts[1]), withinMs };
  }
  return policy;
}

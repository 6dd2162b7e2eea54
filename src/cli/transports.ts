/**
 * From argv to the engine's transports: SSH options and the two transport factories. Apart from
 * context.ts so that `validate -i` and `plan` (without --probe) do not load the transports and
 * ssh2 (~25 ms of start-up).
 */
import { resolve } from 'node:path';
import type { Args } from './main.js';
import { ValidationError } from '../core/errors.js';
import { parseDuration } from '../core/duration.js';
import { Limiter } from '../core/limiter.js';
import { DEFAULT_CONNECT_CONCURRENCY } from './defaults.js';
import { createTransport, type SshOptions } from '../transport/index.js';
import { JumpPool } from '../transport/jump-pool.js';
import type { PlannedHost } from '../plan/types.js';
import type { Transport } from '../transport/types.js';

export function sshOptionsFrom(argv: Args): SshOptions {
  const connectTimeoutMs = parseDuration(argv['connect-timeout'] ?? '10s');
  if (connectTimeoutMs === undefined) {
    throw new ValidationError(
      [{ path: '--connect-timeout', message: `"${argv['connect-timeout']}" is not a duration (use 500ms, 30s, 5m)` }],
      'E_USAGE',
    );
  }
  const n = argv['connect-concurrency'] ?? DEFAULT_CONNECT_CONCURRENCY;
  if (!Number.isInteger(n) || n < 1) {
    throw new ValidationError(
      [{ path: '--connect-concurrency', message: `--connect-concurrency must be a whole number >= 1 (got ${n})` }],
      'E_USAGE',
    );
  }
  return {
    handshakes: new Limiter(n),
    jumpPool: new JumpPool(),
    hostKeyChecking: argv['host-key-checking'] ?? 'strict',
    knownHostsFiles: argv['known-hosts'] ? [resolve(String(argv['known-hosts']))] : undefined,
    connectTimeoutMs,
    sshConfigFile: argv['ssh-config'],
    user: argv.user,
    privateKeyFile: argv['private-key'],
  };
}

/**
 * The engine's two transport factories: the host's own (ssh or local), and the controller for `local: true` steps;
 * close() once the run is over (the jump host connections are kept for the whole run).
 */
export function transportsFrom(argv: Args): {
  transport: (h: PlannedHost) => Transport;
  localTransport: (h: PlannedHost) => Transport;
  close: () => void;
} {
  const ssh = sshOptionsFrom(argv);
  return {
    transport: (h) => createTransport(h.connection, ssh),
    localTransport: (h) => createTransport({ kind: 'local', name: h.name, address: 'localhost' }, ssh),
    close: () => ssh.jumpPool?.close(),
  };
}

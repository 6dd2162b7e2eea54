/**
 * Transport factory: `ansible_connection: local` -> LocalTransport (zx-free child processes on the controller),
 * everything else -> SshTransport (ssh2). The engine receives Transport objects (types.ts) and never imports this.
 */
import type { ConnectionSpec } from '../inventory/types.js';
import { LocalTransport } from './local.js';
import { SshTransport, type SshOptions } from './ssh.js';
import type { Transport } from './types.js';

export type { SshOptions } from './ssh.js';
export type { HostKeyPolicy } from './known-hosts.js';
export { LocalTransport } from './local.js';
export { SshTransport } from './ssh.js';

export function createTransport(conn: ConnectionSpec, opts: SshOptions): Transport {
  return conn.kind === 'local' ? new LocalTransport(conn) : new SshTransport(conn, opts);
}

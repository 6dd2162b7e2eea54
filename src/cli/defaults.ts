/**
 * SSH connections (TCP connect + handshake) in flight at once (--connect-concurrency). Measured with bench/connect.ts on 2 cores
 * (200 loopback sshd hosts, forks 200): see bench/README.md.
 */
export const DEFAULT_CONNECT_CONCURRENCY = 32;

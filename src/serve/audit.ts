/**
 * The audit journal of `serve`: one JSON line per decision (version 1), appended; a record that
 * starts a run is flushed to disk before the run starts. Reopened on SIGHUP (logrotate: rename,
 * then HUP). Labels come from alerts, never secrets of ours.
 */
import { closeSync, fdatasyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { RunbookError } from '../core/errors.js';
import type { DecisionRecord } from './policy.js';

export const AUDIT_VERSION = 1;

export class Audit {
  private fd: number;
  constructor(
    readonly file: string,
    private readonly replica: string,
  ) {
    this.fd = Audit.open(file);
  }

  private static open(file: string): number {
    try {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      return openSync(file, 'a', 0o600);
    } catch (err) {
      throw new RunbookError(
        'E_SERVE_AUDIT',
        `cannot open the audit journal ${file}: ${(err as Error).message}; check that its directory is writable.`,
      );
    }
  }

  write(r: DecisionRecord, o: { sync?: boolean } = {}): void {
    const line = `${JSON.stringify({ v: AUDIT_VERSION, time: new Date().toISOString(), replica: this.replica, ...r })}\n`;
    writeSync(this.fd, line);
    if (o.sync) fdatasyncSync(this.fd);
  }

  reopen(): void {
    const fd = Audit.open(this.file);
    closeSync(this.fd);
    this.fd = fd;
  }

  close(): void {
    closeSync(this.fd);
  }
}

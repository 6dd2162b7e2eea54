/**
 * One SSH connection per jump host (per chain of jumps, and per login and keys) for a whole run, shared by
 * every target behind it: each target is a channel (forwardOut) over it. A stock bastion drops new
 * unauthenticated connections past MaxStartups (10:30:100), so a connection per target is what makes a large
 * fleet behind one bastion fail at random. Counted by users; one no target uses stays open for the next
 * target (with forks below the fleet size, or between serial batches) until close(), at the end of the run. A
 * lost bastion connection is dropped from the pool, and the next target to connect opens a new one.
 */
import type { Client } from 'ssh2';

interface Entry {
  client: Promise<Client>;
  users: number;
}

export class JumpPool {
  private readonly entries = new Map<string, Entry>();
  private closed = false;

  /** The pooled connection for `key`, opened with `open` if there is none (concurrent callers share one open). */
  async acquire(key: string, open: () => Promise<Client>): Promise<Client> {
    let e = this.entries.get(key);
    if (!e) {
      const client = open();
      const entry: Entry = { client, users: 0 };
      e = entry;
      this.entries.set(key, entry);
      client.then(
        (c) => {
          c.setMaxListeners(0); // one 'close' listener per target behind it
          c.once('close', () => {
            if (this.entries.get(key) === entry) this.entries.delete(key);
          });
        },
        () => {
          if (this.entries.get(key) === entry) this.entries.delete(key); // the next target tries again
        },
      );
    }
    e.users++;
    try {
      return await e.client;
    } catch (err) {
      e.users--;
      throw err;
    }
  }

  /** A target no longer uses `key`'s connection; after close(), the last one closes it. */
  release(key: string): void {
    const e = this.entries.get(key);
    if (!e || --e.users > 0 || !this.closed) return;
    this.end(key, e);
  }

  /** The run is over: closes every connection no target uses now, and the others when their last target lets go. */
  close(): void {
    this.closed = true;
    for (const [key, e] of [...this.entries]) if (e.users <= 0) this.end(key, e);
  }

  private end(key: string, e: Entry): void {
    this.entries.delete(key);
    void e.client.then(
      (c) => c.end(),
      () => undefined,
    );
  }
}

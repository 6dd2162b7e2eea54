/**
 * `runbook unlock HOST -i INV --run RUN_ID`: break a stale host lock, explicitly. Only the lock
 * held by RUN_ID is removed; the act is journaled (`lock-broken`) in that run's journal.
 */
import { hostname, tmpdir, userInfo } from 'node:os';
import { resolve } from 'node:path';
import type { Args } from '../main.js';
import { RunbookError, didYouMean } from '../../core/errors.js';
import { loadInventory, connectionFor } from '../../inventory/index.js';
import { createTransport } from '../../transport/index.js';
import { sshOptionsFrom } from '../transports.js';
import { breakLock, describeHolder, lockAccessFor } from '../../engine/lock.js';
import { openJournal, resolveStateDir, checkRunId, journalPath } from '../../journal/writer.js';
import { existsSync, rmSync } from 'node:fs';

export async function run(argv: Args): Promise<number> {
  const host = String(argv.host);
  const runId = checkRunId(argv.run);
  const cwd = process.cwd();
  const sources: string[] = (argv.inventory ?? []).map((p: string) => resolve(cwd, p));
  if (sources.length === 0) throw new RunbookError('E_USAGE', `no inventory given; pass -i FILE so runbook knows how to reach ${host}.`);
  const inventory = loadInventory(sources, { cwd });
  const h = inventory.hosts.get(host);
  if (!h) {
    const dym = didYouMean(host, inventory.hosts.keys());
    throw new RunbookError('E_UNKNOWN_HOST', `host ${host} is not in ${sources.join(', ')}${dym ? `; did you mean ${dym}?` : ''}`);
  }
  const connection = connectionFor(h, { user: argv.user as string | undefined, privateKeyFile: argv['private-key'] as string | undefined });
  const access = lockAccessFor({ name: host, vars: h.vars, connection }, tmpdir());
  const { path } = access;

  // Journal first: if it cannot be written, nothing is removed.
  const stateDir = resolveStateDir(argv['state-dir']);
  const hadJournal = existsSync(journalPath(stateDir, runId));
  const journal = await openJournal(stateDir, runId, { fsync: true });
  const t = createTransport(connection, sshOptionsFrom(argv));
  let removed = false;
  try {
    await journal.sync();
    await t.connect();
    const holder = await breakLock(t, host, runId, access);
    journal.write({
      type: 'lock-broken',
      time: new Date().toISOString(),
      host,
      lock_path: path,
      holder,
      by_controller: hostname(),
      by_pid: process.pid,
      by_user: userInfo().username,
    });
    await journal.sync();
    removed = true;
    const msg = `removed the lock on ${host} (${path}) held by ${describeHolder(holder)}; recorded in ${journal.path}`;
    if (argv.json)
      process.stdout.write(`${JSON.stringify({ type: 'lock-broken', host, lock_path: path, holder, journal: journal.path })}\n`);
    else process.stderr.write(`runbook: ${msg}\n`);
    if (!hadJournal && !argv.json)
      process.stderr.write(
        `runbook: note: run ${runId} had no journal in ${stateDir} (it ran from another controller?); a new one records this unlock.\n`,
      );
    return 0;
  } finally {
    await t.close().catch(() => {});
    await journal.close().catch(() => {});
    // Nothing was broken: do not leave a journal behind for a run this state dir never knew.
    if (!removed && !hadJournal) rmSync(journal.path, { force: true });
  }
}

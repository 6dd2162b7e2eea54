/**
 * `runbook unlock HOST -i INV --run RUN_ID`: break a stale host lock, explicitly. Only the lock
 * held by RUN_ID is removed; the act is journaled (`lock-broken`) in that run's journal.
 * A refused or failed unlock leaves nothing behind: no journal, no state directory it created.
 */
import { existsSync, rmdirSync, rmSync } from 'node:fs';
import { hostname, tmpdir, userInfo } from 'node:os';
import { dirname, resolve } from 'node:path';
import { didYouMean, RunbookError } from '../../core/errors.js';
import { processAlive } from '../../core/pid.js';
import { breakLock, describeHolder, type LockInfo, lockAccessFor } from '../../engine/lock.js';
import { connectionFor, loadInventory } from '../../inventory/index.js';
import { checkRunId, journalPath, openJournal, resolveStateDir } from '../../journal/writer.js';
import { createTransport } from '../../transport/index.js';
import { TransportError } from '../../transport/types.js';
import type { Args } from '../main.js';
import { sshOptionsFrom } from '../transports.js';

export async function run(argv: Args): Promise<number> {
  const host = String(argv.host);
  const runId = checkRunId(argv.run);
  const cwd = process.cwd();
  const sources = (argv.inventory ?? []).map((p) => resolve(cwd, p));
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
  const sshOptions = sshOptionsFrom(argv); // a bad option is refused before anything is created or contacted
  const stateDir = resolveStateDir(argv['state-dir']);
  const jpath = journalPath(stateDir, runId);
  const hadJournal = existsSync(jpath);
  // Directories the journal would create, outermost first: removed again if nothing was unlocked.
  const created = [stateDir, dirname(jpath)].filter((d) => !existsSync(d));

  const t = createTransport(connection, sshOptions);
  let journal: Awaited<ReturnType<typeof openJournal>> | undefined;
  let removed = false;
  let removing = false;
  try {
    // Connecting is read-only: a host that cannot be reached costs no journal. The journal is written
    // (and synced) before the lock is touched: if it cannot be, nothing is removed.
    await t.connect();
    journal = await openJournal(stateDir, runId, { fsync: true });
    await journal.sync();
    removing = true;
    const live = (holder: LockInfo): boolean => !argv.force && processAlive(holder.controller, holder.pid) === true;
    const holder = await breakLock(t, host, runId, access, live);
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
  } catch (err) {
    if (removing && err instanceof TransportError && err.code === 'E_CONN_LOST') {
      throw new TransportError(
        err.code,
        err.host,
        `lost the connection to ${host} while unlocking it, so the lock (${path}) may or may not be gone; run the same runbook unlock again once ${host} answers.`,
        { cause: err },
      );
    }
    throw err;
  } finally {
    await t.close().catch(() => {});
    sshOptions.jumpPool?.close();
    await journal?.close().catch(() => {});
    // Nothing was broken: do not leave a journal (or a state directory) behind for a run this state dir never knew.
    if (!removed && !hadJournal) {
      try {
        rmSync(jpath, { force: true });
        for (const d of created.reverse()) rmdirSync(d);
      } catch {
        /* never created (the state dir is unusable), or a directory someone else now uses: keep it */
      }
    }
  }
}

/** `runbook runs`: recent runs from the journals, newest first. */
import { join } from 'node:path';
import { listRuns } from '../../journal/reader.js';
import { resolveStateDir } from '../../journal/writer.js';
import { runsTable } from '../../report/runs.js';
import type { Args } from '../main.js';

export async function run(argv: Args): Promise<number> {
  const stateDir = resolveStateDir(argv['state-dir']);
  const runs = await listRuns(stateDir);
  if (argv.json) {
    for (const r of runs) process.stdout.write(`${JSON.stringify(r)}\n`);
    return 0;
  }
  if (runs.length === 0) {
    process.stderr.write(
      `No runs in ${join(stateDir, 'runs')} (runbook apply records one there; --state-dir or RUNBOOK_STATE_DIR choose another directory).\n`,
    );
    return 0;
  }
  process.stdout.write(runsTable(runs));
  const open = runs.filter((r) => r.status === 'incomplete');
  if (open.length) {
    process.stderr.write(
      `\n${open.length} run${open.length > 1 ? 's' : ''} did not finish (controller died?): runbook show-run ID, then runbook resume ID or runbook rollback ID.\n`,
    );
  }
  return 0;
}

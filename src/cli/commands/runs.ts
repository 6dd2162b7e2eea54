/** `runbook runs`: recent runs from the journals, newest first. */
import type { Args } from '../main.js';
import { resolveStateDir } from '../../journal/writer.js';
import { listRuns, type RunSummary } from '../../journal/reader.js';
import { join } from 'node:path';

const HOST_ORDER = ['changed', 'ok', 'failed', 'rolled-back', 'needs-attention', 'unreachable', 'skipped', 'incomplete', 'pending'];

export function hostsText(h: Record<string, number>): string {
  const keys = Object.keys(h).sort((a, b) => ((HOST_ORDER.indexOf(a) + 99) % 99) - ((HOST_ORDER.indexOf(b) + 99) % 99));
  return keys.map((k) => `${h[k]} ${k}`).join(', ') || '-';
}

export function runsTable(runs: RunSummary[]): string {
  const rows = [['RUN ID', 'RUNBOOK', 'STARTED', 'STATUS', 'HOSTS']];
  for (const r of runs) {
    rows.push([
      r.run_id,
      r.runbook ?? '-',
      r.started ? r.started.replace(/\.\d+Z$/, 'Z') : '-',
      r.status,
      r.status === 'corrupt' ? (r.error ?? '') : hostsText(r.hosts),
    ]);
  }
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return `${rows.map((r) => r.map((x, c) => (c === r.length - 1 ? x : x.padEnd(w[c]))).join('  ')).join('\n')}\n`;
}

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

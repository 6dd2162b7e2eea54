/** Run listings as text: `runbook runs` and the header of `runbook show-run`. */
import type { RunSummary } from '../journal/history.js';

const HOST_ORDER = ['changed', 'ok', 'failed', 'rolled-back', 'needs-attention', 'unreachable', 'skipped', 'incomplete', 'pending'];

/** "2 changed, 1 failed" in a fixed order. */
export function hostsText(h: Record<string, number>): string {
  const rank = (k: string) => (HOST_ORDER.indexOf(k) + 99) % 99;
  const keys = Object.keys(h).sort((a, b) => rank(a) - rank(b));
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

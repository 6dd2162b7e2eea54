/**
 * --metrics-file FILE.prom: node_exporter textfile collector format, written atomically.
 * One file may hold several runbooks (label `runbook`): this run replaces its own runbook's series
 * and keeps every other series of the existing file.
 */
import { readFile } from 'node:fs/promises';
import { RunbookError } from '../core/errors.js';
import type { HostStatus } from '../engine/events.js';
import { writeAtomic } from './files.js';
import { HOST_STATUSES, type RunSummary } from './summary.js';

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: string;
}

interface Family {
  help: string;
  type: string;
}

export const METRIC_FAMILIES: Record<string, Family> = {
  runbook_last_run_timestamp_seconds: { help: 'Unix time the last run of this runbook ended.', type: 'gauge' },
  runbook_last_run_duration_seconds: { help: 'Wall-clock duration of the last run of this runbook.', type: 'gauge' },
  runbook_last_run_exit_code: {
    help: 'Exit code of the last run (0 ok, 2 hosts failed, 3 needs attention, 130 interrupted).',
    type: 'gauge',
  },
  runbook_last_run_hosts: { help: 'Hosts of the last run by final status.', type: 'gauge' },
  runbook_last_success_timestamp_seconds: { help: 'Unix time the last run with exit code 0 ended.', type: 'gauge' },
  runbook_last_run_host_status: {
    help: 'Final status of each host in the last run of this runbook that included it (1, labelled by status).',
    type: 'gauge',
  },
  runbook_last_run_host_timestamp_seconds: {
    help: 'Unix time the last run of this runbook that included the host ended.',
    type: 'gauge',
  },
  runbook_last_run_host_fact: {
    help: "What the last run found on the host: the runbook's facts (1, labelled by fact and value).",
    type: 'gauge',
  },
};

/** Per-host families: a run replaces its own hosts' series and keeps the other hosts' (a --limit run). */
const PER_HOST = new Set(['runbook_last_run_host_status', 'runbook_last_run_host_timestamp_seconds', 'runbook_last_run_host_fact']);

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

/** Parses the text exposition format (samples, HELP, TYPE); unparseable lines are dropped. */
export function parsePromText(text: string): { samples: PromSample[]; families: Map<string, Partial<Family>> } {
  const samples: PromSample[] = [];
  const families = new Map<string, Partial<Family>>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const meta = /^#\s+(HELP|TYPE)\s+(\S+)\s*(.*)$/.exec(line);
    if (meta) {
      const f = families.get(meta[2]) ?? {};
      if (meta[1] === 'HELP') f.help = meta[3];
      else f.type = meta[3];
      families.set(meta[2], f);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$/.exec(line);
    if (!m) continue;
    const labels = parseLabels(m[2] ?? '');
    if (!labels) continue;
    samples.push({ name: m[1], labels, value: m[3] });
  }
  return { samples, families };
}

function parseLabels(s: string): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  const re = /\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)/y;
  let i = 0;
  while (i < s.length) {
    re.lastIndex = i;
    const m = re.exec(s);
    if (!m) return undefined;
    out[m[1]] = m[2].replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    i = re.lastIndex;
  }
  return out;
}

export function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function sampleLine(s: PromSample): string {
  const keys = Object.keys(s.labels);
  const l = keys.length ? `{${keys.map((k) => `${k}="${escapeLabel(s.labels[k])}"`).join(',')}}` : '';
  return `${s.name}${l} ${s.value}`;
}

const num = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(3));

/** The new file's text: this run's series for `summary.runbook`, other runbooks' series from `previous`. */
export function renderMetrics(summary: RunSummary, previous = ''): string {
  const rb = summary.runbook;
  const old = parsePromText(previous);
  const mine = (s: PromSample) => s.labels.runbook === rb;
  const endSec = Date.parse(summary.ended_at) / 1000;
  const fresh: PromSample[] = [
    { name: 'runbook_last_run_timestamp_seconds', labels: { runbook: rb }, value: num(endSec) },
    { name: 'runbook_last_run_duration_seconds', labels: { runbook: rb }, value: num(summary.duration_ms / 1000) },
    { name: 'runbook_last_run_exit_code', labels: { runbook: rb }, value: String(summary.exit_code) },
    ...HOST_STATUSES.map((st: HostStatus) => ({
      name: 'runbook_last_run_hosts',
      labels: { runbook: rb, status: st },
      value: String(summary.counts[st]),
    })),
  ];
  if (summary.exit_code === 0) {
    fresh.push({ name: 'runbook_last_success_timestamp_seconds', labels: { runbook: rb }, value: num(endSec) });
  } else {
    // A failed run keeps the last success: monitoring alerts on its age.
    const prev = old.samples.find((s) => s.name === 'runbook_last_success_timestamp_seconds' && mine(s));
    if (prev) fresh.push({ name: 'runbook_last_success_timestamp_seconds', labels: { runbook: rb }, value: prev.value });
  }
  // A host another run had locked was not looked at: its last known series stay (a health check must
  // not report a node under repair as a problem of its own).
  const looked = summary.hosts.filter((h) => h.end_code !== 'E_LOCKED');
  const ran = new Set(looked.map((h) => h.host));
  for (const h of looked) {
    fresh.push({ name: 'runbook_last_run_host_status', labels: { runbook: rb, host: h.host, status: h.status }, value: '1' });
    fresh.push({ name: 'runbook_last_run_host_timestamp_seconds', labels: { runbook: rb, host: h.host }, value: num(endSec) });
    for (const [fact, value] of Object.entries(h.facts ?? {}))
      fresh.push({ name: 'runbook_last_run_host_fact', labels: { runbook: rb, host: h.host, fact, value }, value: '1' });
  }
  const kept = old.samples.filter(
    (s) => !mine(s) || !(s.name in METRIC_FAMILIES) || (PER_HOST.has(s.name) && !ran.has(s.labels.host ?? '')),
  );
  const all = [...kept, ...fresh];
  const names = [...Object.keys(METRIC_FAMILIES), ...new Set(kept.map((s) => s.name).filter((n) => !(n in METRIC_FAMILIES)))];
  const out: string[] = [];
  for (const name of names) {
    if (!NAME.test(name)) continue;
    const ss = all.filter((s) => s.name === name);
    if (ss.length === 0) continue;
    const fam = METRIC_FAMILIES[name] ?? old.families.get(name) ?? {};
    if (fam.help) out.push(`# HELP ${name} ${fam.help}`);
    out.push(`# TYPE ${name} ${fam.type ?? 'untyped'}`);
    ss.sort(
      (a, b) =>
        (a.labels.runbook ?? '').localeCompare(b.labels.runbook ?? '') ||
        (a.labels.host ?? '').localeCompare(b.labels.host ?? '') ||
        HOST_STATUSES.indexOf(a.labels.status as HostStatus) - HOST_STATUSES.indexOf(b.labels.status as HostStatus),
    );
    for (const s of ss) out.push(sampleLine(s));
  }
  return `${out.join('\n')}\n`;
}

/** Reads the previous file (if any), merges, writes atomically (temp file + fsync + rename). */
export async function writeMetrics(file: string, summary: RunSummary): Promise<void> {
  let previous = '';
  try {
    previous = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') {
      throw new RunbookError('E_REPORT', `Cannot read the metrics file ${file}: ${(err as Error).message}; check its permissions.`, {
        cause: err,
      });
    }
  }
  await writeAtomic(file, renderMetrics(summary, previous), 'metrics file');
}

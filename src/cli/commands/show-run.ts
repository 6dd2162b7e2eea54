/** `runbook show-run RUN_ID`: per host, per step, what a run did, read from its journal. */
import type { Args } from '../main.js';
import { resolveStateDir, checkRunId, journalPath } from '../../journal/writer.js';
import { readJournal, summarizeRun, type JournalRecord } from '../../journal/reader.js';
import { hostsText } from './runs.js';

export interface StepLine {
  kind: 'step' | 'rollback';
  phase: string;
  index: number;
  step: string;
  /** Outcome; 'no outcome' when the intent is the last thing recorded. */
  status: string;
  stage?: string;
  code?: number | null;
  duration_ms?: number;
  message?: string;
  time?: string;
}

export interface HostView {
  host: string;
  status: string;
  message?: string;
  steps: StepLine[];
  events: string[];
}

/** Folds journal records into per-host step lines, in order. */
export function hostViews(records: JournalRecord[]): HostView[] {
  const hosts = new Map<string, HostView>();
  const get = (h: string) => {
    let v = hosts.get(h);
    if (!v) {
      v = { host: h, status: 'pending', steps: [], events: [] };
      hosts.set(h, v);
    }
    return v;
  };
  const open = new Map<string, StepLine>();
  for (const r of records) {
    if (r.type === 'run-start' && Array.isArray(r.hosts)) for (const h of r.hosts) get(String(h));
    const host = typeof r.host === 'string' ? r.host : undefined;
    if (!host) continue;
    const v = get(host);
    const key = `${host}\0${r.type.startsWith('rollback') ? 'r' : 's'}\0${String(r.phase ?? 'step')}\0${String(r.index)}`;
    switch (r.type) {
      case 'host-start':
        if (v.status !== 'pending') v.events.push(`resumed at ${String(r.time)}`);
        v.status = 'incomplete';
        break;
      case 'host-end':
        v.status = String(r.status);
        v.message = typeof r.message === 'string' ? r.message : undefined;
        break;
      case 'step-start':
      case 'rollback-start': {
        const line: StepLine = {
          kind: r.type === 'step-start' ? 'step' : 'rollback',
          phase: String(r.phase ?? 'step'),
          index: Number(r.index),
          step: String(r.step),
          status: 'no outcome',
          time: typeof r.time === 'string' ? r.time : undefined,
        };
        v.steps.push(line);
        open.set(key, line);
        break;
      }
      case 'step-end':
      case 'rollback-end': {
        let line = open.get(key);
        if (!line) {
          line = {
            kind: r.type === 'step-end' ? 'step' : 'rollback',
            phase: String(r.phase ?? 'step'),
            index: Number(r.index),
            step: String(r.step),
            status: '',
          };
          v.steps.push(line);
        }
        open.delete(key);
        line.status = String(r.status);
        if (typeof r.stage === 'string') line.stage = r.stage;
        if (r.code !== undefined) line.code = r.code as number | null;
        if (typeof r.duration_ms === 'number') line.duration_ms = r.duration_ms;
        if (typeof r.message === 'string') line.message = r.message;
        break;
      }
      case 'lock-broken':
        v.events.push(
          `lock of run ${String((r.holder as { run_id?: string } | undefined)?.run_id)} broken at ${String(r.time)} by ${String(r.by_controller)} pid ${String(r.by_pid)}`,
        );
        break;
      case 'warning':
        if (typeof r.message === 'string') v.events.push(`warning: ${r.message}`);
        break;
    }
  }
  return [...hosts.values()];
}

function fmtLine(l: StepLine): string {
  const what = l.kind === 'rollback' ? `rollback of ${l.step}` : l.phase === 'preflight' ? `preflight ${l.step}` : l.step;
  const status = l.status === 'no outcome' ? 'STARTED, NO OUTCOME (controller died?)' : l.status;
  const bits: string[] = [];
  if (l.stage && l.kind === 'step') bits.push(`by ${l.stage}`);
  if (l.code !== undefined && l.code !== null && l.code !== 0) bits.push(`exit ${l.code}`);
  if (l.duration_ms !== undefined) bits.push(`${(l.duration_ms / 1000).toFixed(1)}s`);
  return `  ${l.kind === 'step' ? `#${l.index}` : '  ↶'} ${what}: ${status}${bits.length ? ` (${bits.join(', ')})` : ''}${l.message ? ` — ${l.message}` : ''}`;
}

export async function run(argv: Args): Promise<number> {
  const runId = checkRunId(argv.run_id);
  const stateDir = resolveStateDir(argv['state-dir']);
  const path = journalPath(stateDir, runId);
  const { records, torn } = await readJournal(path);
  const sum = summarizeRun(runId, path, records, torn);
  const views = hostViews(records);
  if (argv.json) {
    process.stdout.write(`${JSON.stringify({ type: 'run', ...sum })}\n`);
    for (const v of views) process.stdout.write(`${JSON.stringify({ type: 'host', ...v })}\n`);
    return 0;
  }
  const out: string[] = [];
  out.push(`Run ${sum.run_id}: ${sum.runbook ?? '?'}${sum.runbook_file ? ` (${sum.runbook_file})` : ''}`);
  out.push(
    `  started ${sum.started ?? '?'}${sum.ended ? `, ended ${sum.ended}` : ''}; status ${sum.status}${sum.exit_code !== undefined ? ` (exit ${sum.exit_code})` : ''}; hosts: ${hostsText(sum.hosts)}`,
  );
  out.push(`  journal ${path}${torn ? ' (torn last line ignored: the controller died while writing it)' : ''}`);
  for (const v of views) {
    out.push('');
    out.push(`${v.host}: ${v.status}${v.message ? ` — ${v.message}` : ''}`);
    for (const e of v.events) out.push(`  · ${e}`);
    for (const l of v.steps) out.push(fmtLine(l));
  }
  if (sum.status === 'incomplete') {
    out.push('');
    out.push(`The run did not finish. Continue it: runbook resume ${sum.run_id}   or undo it: runbook rollback ${sum.run_id}`);
  }
  process.stdout.write(`${out.join('\n')}\n`);
  return 0;
}

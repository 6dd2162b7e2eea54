/** `runbook show-run RUN_ID`: per host, per step, what a run did, read from its journal. */
import { type HostHistory, type StepLine, summarize } from '../../journal/history.js';
import { openerAlive, readHistory } from '../../journal/reader.js';
import { checkRunId, resolveStateDir } from '../../journal/writer.js';
import { hostsText } from '../../report/runs.js';
import { safeJson, safeText } from '../../report/text.js';
import type { Args } from '../main.js';

/** A host as show-run prints it (and --json emits it). */
function hostView(s: HostHistory) {
  return {
    host: s.host,
    status: s.finished ?? (s.started ? 'incomplete' : 'pending'),
    ...(s.message !== undefined ? { message: s.message } : {}),
    steps: s.lines,
    events: s.events,
  };
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
  const history = await readHistory(resolveStateDir(argv['state-dir']), runId);
  const { path, torn } = history;
  const sum = summarize(history, openerAlive);
  const views = [...history.hosts.values()].map(hostView);
  if (argv.json) {
    process.stdout.write(`${safeJson({ type: 'run', ...sum })}\n`);
    for (const v of views) process.stdout.write(`${safeJson({ type: 'host', ...v })}\n`);
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
  process.stdout.write(`${safeText(out.join('\n'))}\n`);
  return 0;
}

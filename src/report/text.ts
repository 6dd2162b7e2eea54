/** Text helpers shared by the renderers and the reports: colors, widths, the summary block. */
import { formatDuration } from '../core/duration.js';
import type { HostStatus } from '../engine/events.js';
import { HOST_STATUSES, PROBLEM_STATUSES, stepColumn, type HostSummary, type RunSummary } from './summary.js';

export interface Paint {
  red(s: string): string; green(s: string): string; yellow(s: string): string;
  cyan(s: string): string; dim(s: string): string; bold(s: string): string;
}

const wrap = (open: number, close: number) => (s: string) => `\u001b[${open}m${s}\u001b[${close}m`;
export const COLORS: Paint = {
  red: wrap(31, 39), green: wrap(32, 39), yellow: wrap(33, 39), cyan: wrap(36, 39), dim: wrap(2, 22), bold: wrap(1, 22),
};
const id = (s: string) => s;
export const NO_COLORS: Paint = { red: id, green: id, yellow: id, cyan: id, dim: id, bold: id };

/** Colors only on a TTY, never when NO_COLOR is set (any value, per no-color.org), never for TERM=dumb. */
export function colorAllowed(tty: boolean, env: NodeJS.ProcessEnv = process.env): boolean {
  if (!tty) return false;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.TERM === 'dumb') return false;
  return true;
}

// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;?]*[A-Za-z]|\u001b\][^\u0007]*\u0007/g;
export function stripAnsi(s: string): string { return s.replace(ANSI, ''); }

/** Display width, counting code points (the names we print are ASCII in practice). */
export function width(s: string): number { return [...stripAnsi(s)].length; }

/** Cuts plain text to at most `max` columns, ending with an ellipsis when cut. */
export function truncate(s: string, max: number): string {
  if (max <= 0) return '';
  if (width(s) <= max) return s;
  // Cutting through color escapes would leave the terminal colored: cut the plain text instead.
  s = stripAnsi(s);
  const cps = [...s];
  if (cps.length <= max) return s;
  return max === 1 ? '…' : cps.slice(0, max - 1).join('') + '…';
}

export function pad(s: string, n: number): string { return s + ' '.repeat(Math.max(0, n - width(s))); }

export function statusColor(st: HostStatus, p: Paint): (s: string) => string {
  switch (st) {
    case 'ok': return p.green;
    case 'changed': return p.yellow;
    case 'skipped': return p.dim;
    case 'failed': case 'rolled-back': case 'unreachable': case 'needs-attention': return p.red;
  }
}

/** "3 changed, 1 ok, 1 failed" — only non-zero counts, in the canonical status order. */
export function countsText(counts: Record<HostStatus, number>, p: Paint = NO_COLORS): string {
  const parts = HOST_STATUSES.filter((s) => counts[s] > 0).map((s) => statusColor(s, p)(`${counts[s]} ${s}`));
  return parts.length ? parts.join(', ') : 'no hosts';
}

export interface TableOptions {
  paint?: Paint;
  /** Maximum line width (TTY columns); undefined = no limit. */
  columns?: number;
}

/** host x status x changed/failed step x duration. */
export function hostTable(hosts: HostSummary[], o: TableOptions = {}): string[] {
  const p = o.paint ?? NO_COLORS;
  const rows = hosts.map((h) => [h.host, h.status, stepColumn(h), h.started_at === undefined && h.duration_ms === 0 ? '-' : formatDuration(h.duration_ms)]);
  const head = ['HOST', 'STATUS', 'STEP', 'DURATION'];
  const w = head.map((t, i) => Math.max(width(t), ...rows.map((r) => width(r[i]))));
  if (o.columns !== undefined) {
    // Shrink HOST then STEP so a row fits: 3 gaps of 2 columns.
    const budget = o.columns - 1 - 6;
    const fixed = () => w[0] + w[1] + w[2] + w[3];
    if (fixed() > budget) w[2] = Math.max(8, w[2] - (fixed() - budget));
    if (fixed() > budget) w[0] = Math.max(8, w[0] - (fixed() - budget));
  }
  const line = (cells: string[], color?: (s: string) => string) => {
    const c = cells.map((t, i) => truncate(t, w[i]));
    const st = color ? color(pad(c[1], w[1])) : pad(c[1], w[1]);
    let out = `${pad(c[0], w[0])}  ${st}  ${pad(c[2], w[2])}  ${c[3]}`;
    if (o.columns !== undefined && width(out) > o.columns - 1) out = truncate(stripAnsi(out), o.columns - 1);
    return out.replace(/\s+$/, '');
  };
  return [p.bold(line(head)), ...hosts.map((h, i) => line(rows[i], statusColor(h.status, p)))];
}

export interface SummaryOptions extends TableOptions {
  /** Terminal rows: with more hosts than fit, only problem hosts are listed and the rest are counted. */
  rows?: number;
  /** How many trailing stderr lines to show per failing host. */
  stderrLines?: number;
  /** At most this many detail blocks (the rest are named in one line). */
  maxDetails?: number;
}

function indent(text: string, prefix: string, columns?: number): string[] {
  return text.split('\n').map((l) => {
    const s = prefix + l.replace(/\s+$/, '');
    return columns !== undefined ? truncate(s, columns - 1) : s;
  });
}

/** The detail block of one failed / rolled-back / needs-attention / unreachable host. */
export function hostDetail(h: HostSummary, o: SummaryOptions = {}): string[] {
  const p = o.paint ?? NO_COLORS;
  const n = o.stderrLines ?? 8;
  const cut = (s: string) => (o.columns !== undefined ? truncate(s, o.columns - 1) : s);
  const out: string[] = [];
  const where = h.failed_step ? ` at ${h.failed_phase === 'preflight' ? 'preflight ' : 'step '}"${h.failed_step}"${h.failed_stage && h.failed_stage !== 'run' ? ` (${h.failed_stage})` : ''}` : '';
  out.push(cut(`${p.bold(h.host)} ${statusColor(h.status, p)(h.status)}${where}${h.message ? `: ${h.message}` : ''}`));
  if (h.command !== undefined) out.push(...indent(h.command, '  command: ', o.columns).slice(0, 3));
  if (h.failed_step !== undefined || h.code !== undefined) {
    out.push(`  exit code: ${h.timed_out ? 'timed out (killed)' : h.code ?? 'none (no exit status)'}`);
  }
  const err = h.stderr_tail ?? h.stdout_tail;
  if (err) {
    const lines = err.split('\n').slice(-n);
    out.push(`  ${h.stderr_tail ? 'stderr' : 'stdout'} (last ${lines.length} line${lines.length === 1 ? '' : 's'}):`);
    out.push(...indent(lines.join('\n'), '    | ', o.columns).map(p.dim));
  }
  for (const r of h.rollbacks) {
    if (r.status === 'ok') continue;
    out.push(cut(`  ${p.red('rollback failed')}: "${r.step}" exit ${r.code ?? 'none'}${r.message ? `: ${r.message}` : ''}`));
    if (r.command) out.push(...indent(r.command, '    command: ', o.columns).slice(0, 2));
    if (r.stderr_tail) out.push(...indent(r.stderr_tail.split('\n').slice(-Math.min(n, 4)).join('\n'), '    | ', o.columns).map(p.dim));
  }
  const okRb = h.rollbacks.filter((r) => r.status === 'ok').map((r) => r.step);
  if (okRb.length) out.push(cut(`  rolled back: ${okRb.join(', ')}`));
  return out;
}

/**
 * The final summary: header, table (compact when more hosts than rows), detail blocks of
 * problem hosts, counts, and the "what to do now" line last so it is on screen.
 */
export function summaryText(s: RunSummary, o: SummaryOptions = {}): string {
  const p = o.paint ?? NO_COLORS;
  const cut = (x: string) => (o.columns !== undefined ? truncate(x, o.columns - 1) : x);
  const lines: string[] = [];
  const verdict = s.exit_code === 0 ? p.green(s.status) : s.status === 'needs-attention' ? p.red(s.status) : p.red(s.status);
  lines.push(cut(`${p.bold('Run')} ${s.run_id}  runbook ${s.runbook}  ${verdict} (exit ${s.exit_code})  ${s.hosts.length} host${s.hosts.length === 1 ? '' : 's'} in ${formatDuration(s.duration_ms)}`));
  const problems = s.hosts.filter((h) => PROBLEM_STATUSES.includes(h.status));
  // Compact when the whole table would not fit on one screen next to the details.
  const compact = o.rows !== undefined && s.hosts.length + 6 > o.rows;
  if (compact) {
    const listed = s.hosts.filter((h) => h.status !== 'ok' && h.status !== 'changed');
    const room = Math.max(3, (o.rows ?? 24) - 12);
    if (listed.length) {
      const shown = listed.slice(0, room);
      lines.push(...hostTable(shown, o));
      if (listed.length > shown.length) lines.push(cut(`… and ${listed.length - shown.length} more not ok (see --report or runbook show-run ${s.run_id})`));
    }
    const fine = s.hosts.length - listed.length;
    if (fine) lines.push(cut(p.dim(`${fine} host${fine === 1 ? '' : 's'} ok or changed, not listed (--report FILE.md lists every host)`)));
  } else {
    lines.push(...hostTable(s.hosts, o));
  }
  const maxDetails = o.maxDetails ?? Infinity;
  const detailed = problems.slice(0, maxDetails);
  for (const h of detailed) {
    lines.push('');
    lines.push(...hostDetail(h, o));
  }
  if (problems.length > detailed.length) {
    lines.push('', cut(`… ${problems.length - detailed.length} more hosts need a look: ${problems.slice(detailed.length).map((h) => h.host).join(', ')}`));
  }
  for (const w of s.warnings.slice(0, 5)) lines.push(cut(p.yellow(`warning: ${w}`)));
  if (s.warnings.length > 5) lines.push(cut(p.yellow(`… ${s.warnings.length - 5} more warnings`)));
  lines.push('');
  lines.push(cut(`Hosts: ${countsText(s.counts, p)}`));
  const next = `What to do now: ${s.next}`;
  const wrapped = o.columns !== undefined ? wrapWords(next, o.columns - 1) : [next];
  lines.push(p.bold(wrapped[0].slice(0, 15)) + wrapped[0].slice(15), ...wrapped.slice(1).map((l) => `  ${l}`));
  return lines.join('\n') + '\n';
}

/** Word-wraps plain text to `max` columns (continuation lines get 2 columns less: the caller indents them). */
export function wrapWords(text: string, max: number): string[] {
  const out: string[] = [];
  let cur = '';
  for (const word of text.split(/\s+/)) {
    const limit = out.length === 0 ? max : max - 2;
    if (cur === '') cur = word;
    else if (width(cur) + 1 + width(word) <= limit) cur += ' ' + word;
    else { out.push(cur); cur = word; }
    while (width(cur) > (out.length === 0 ? max : max - 2)) {
      const l = out.length === 0 ? max : max - 2;
      out.push([...cur].slice(0, l).join(''));
      cur = [...cur].slice(l).join('');
    }
  }
  if (cur !== '') out.push(cur);
  return out;
}

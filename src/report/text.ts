/** Text helpers shared by the renderers and the reports: colors, widths, the summary block. */
import { formatDuration } from '../core/duration.js';
import { mapStrings } from '../core/text.js';
import type { HostStatus } from '../engine/events.js';
import { HOST_STATUSES, PROBLEM_STATUSES, stepColumn, whatToDoNow, type HostSummary, type RunSummary } from './summary.js';

export interface Paint {
  red(s: string): string;
  green(s: string): string;
  yellow(s: string): string;
  cyan(s: string): string;
  dim(s: string): string;
  bold(s: string): string;
}

const wrap = (open: number, close: number) => (s: string) => `\u001b[${open}m${s}\u001b[${close}m`;
export const COLORS: Paint = {
  red: wrap(31, 39),
  green: wrap(32, 39),
  yellow: wrap(33, 39),
  cyan: wrap(36, 39),
  dim: wrap(2, 22),
  bold: wrap(1, 22),
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
export function stripAnsi(s: string): string {
  return s.replace(ANSI, '');
}

/**
 * Every terminal control sequence and control character a host's output (or any other text from outside)
 * could carry: ESC sequences (CSI, OSC to BEL or ST, DCS/SOS/PM/APC to ST, unterminated ones to the end,
 * two-byte ones like `ESC c`), their 8-bit C1 forms, C0 controls but tab and newline, DEL, and the Unicode
 * bidirectional overrides (text that reads differently than it runs).
 */
const CONTROLS =
  /\u001b(?:\[[0-?]*[ -/]*[@-~]?|[\]PX^_][^\u0007\u001b\u009c]*(?:\u0007|\u001b\\|\u009c)?|[ -/]*[0-~]?)|\u009b[0-?]*[ -/]*[@-~]?|[\u0090\u0098\u009d\u009e\u009f][^\u0007\u001b\u009c]*(?:\u0007|\u009c|\u001b\\)?|[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

/** `s` with every control sequence and character removed (CONTROLS); tabs and newlines stay. Our own colors are added after. */
export function safeText(s: string): string {
  return s.replace(CONTROLS, '');
}

/** Deep safeText over the strings of a JSON-like value (an event). */
export function safeValue<T>(v: T): T {
  return mapStrings(v, safeText);
}

/** JSON text that a terminal shows as it is: JSON escapes C0 itself; DEL, C1 and the bidi overrides are escaped too. */
export function safeJson(v: unknown): string {
  return JSON.stringify(v).replace(
    /[\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** Display width, counting code points (the names we print are ASCII in practice). */
export function width(s: string): number {
  return [...stripAnsi(s)].length;
}

/** Cuts plain text to at most `max` columns, ending with an ellipsis when cut. */
export function truncate(s: string, max: number): string {
  if (max <= 0) return '';
  if (width(s) <= max) return s;
  // Cutting through color escapes would leave the terminal colored: cut the plain text instead.
  s = stripAnsi(s);
  const cps = [...s];
  if (cps.length <= max) return s;
  return max === 1 ? '…' : `${cps.slice(0, max - 1).join('')}…`;
}

export function pad(s: string, n: number): string {
  return s + ' '.repeat(Math.max(0, n - width(s)));
}

export function statusColor(st: HostStatus, p: Paint): (s: string) => string {
  switch (st) {
    case 'ok':
      return p.green;
    case 'changed':
      return p.yellow;
    case 'skipped':
      return p.dim;
    case 'failed':
    case 'rolled-back':
    case 'unreachable':
    case 'needs-attention':
      return p.red;
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
  const rows = hosts.map((h) => [
    h.host,
    h.status,
    stepColumn(h),
    h.started_at === undefined && h.duration_ms === 0 ? '-' : formatDuration(h.duration_ms),
  ]);
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
  const where = h.failed_step
    ? ` at ${h.failed_phase === 'preflight' ? 'preflight ' : 'step '}"${h.failed_step}"${h.failed_stage && h.failed_stage !== 'run' ? ` (${h.failed_stage})` : ''}`
    : '';
  out.push(cut(`${p.bold(h.host)} ${statusColor(h.status, p)(h.status)}${where}${h.message ? `: ${h.message}` : ''}`));
  if (h.command !== undefined) out.push(...indent(h.command, '  command: ', o.columns).slice(0, 3));
  if (h.failed_step !== undefined || h.code !== undefined) {
    out.push(`  exit code: ${h.timed_out ? 'timed out (killed)' : (h.code ?? 'none (no exit status)')}`);
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
 * The final summary: header, table, detail blocks of problem hosts, counts, and the "what to do
 * now" line last so it stays on screen. With `rows` (a terminal) everything fits in rows-1 lines:
 * with more hosts than fit, only the hosts that are not ok/changed are listed, and detail blocks
 * are added while they fit (the rest are named in one line).
 */
export function summaryText(s: RunSummary, o: SummaryOptions = {}): string {
  const p = o.paint ?? NO_COLORS;
  const cut = (x: string) => (o.columns !== undefined ? truncate(x, o.columns - 1) : x);
  const tty = o.rows !== undefined;
  const verdict = s.exit_code === 0 ? p.green(s.status) : p.red(s.status);
  const header = cut(
    `${p.bold(`Run ${s.run_id}`)} ${s.runbook}: ${verdict} (exit ${s.exit_code}), ${s.hosts.length} host${s.hosts.length === 1 ? '' : 's'}, ${formatDuration(s.duration_ms)}`,
  );
  const problems = s.hosts.filter((h) => PROBLEM_STATUSES.includes(h.status));

  // Tail: warnings, counts, what to do now.
  const tail: string[] = [];
  const maxWarn = tty ? 2 : Infinity;
  for (const w of s.warnings.slice(0, maxWarn)) tail.push(cut(p.yellow(`warning: ${w}`)));
  if (s.warnings.length > maxWarn)
    tail.push(cut(p.yellow(`… ${s.warnings.length - maxWarn} more warnings (runbook show-run ${s.run_id})`)));
  tail.push('', cut(`Hosts: ${countsText(s.counts, p)}`));
  const nextText = `What to do now: ${tty && s.hosts.length > 3 ? whatToDoNow(s, 2) : s.next}`;
  const wrapped = o.columns !== undefined ? wrapWords(nextText, o.columns - 1) : [nextText];
  tail.push(p.bold(wrapped[0].slice(0, 15)) + wrapped[0].slice(15), ...wrapped.slice(1).map((l) => `  ${l}`));

  // Room for the blank line before the summary and the shell prompt after it.
  const maxLines = tty ? Math.max(10, (o.rows ?? 24) - 3) : Infinity;
  let budget = maxLines - 1 - tail.length;

  // Table: every host when it fits with room for one detail block, else only the hosts not ok.
  const body: string[] = [];
  const firstDetail = problems.length ? hostDetail(problems[0], o).length + 1 : 0;
  const compact = tty && s.hosts.length + 1 + firstDetail > budget;
  const listed = compact ? s.hosts.filter((h) => h.status !== 'ok' && h.status !== 'changed') : s.hosts;
  const fine = s.hosts.length - listed.length;
  if (listed.length) {
    let rowsFor = listed.length;
    if (compact) {
      // Header row, the "ok or changed" line, one full detail block and a "… more" line must fit too.
      const room = budget - 1 - (fine ? 1 : 0) - firstDetail - (problems.length > 1 ? 2 : 0);
      if (rowsFor > room) rowsFor = Math.max(1, room - 1);
    }
    body.push(...hostTable(listed.slice(0, Math.max(1, rowsFor)), o));
    if (listed.length > rowsFor)
      body.push(cut(`… and ${listed.length - rowsFor} more not ok (runbook show-run ${s.run_id}, or --report FILE.md)`));
  }
  // What an escalation did on a host that ended well ("Repair: repaired by wipe (targeted did not hold: ...)").
  if (!compact) for (const h of listed) if (h.status === 'changed' && h.message) body.push(cut(`${h.host}: ${h.message}`));
  // What the runbook found on each host (its facts: "n1: containerd: containerd 1.7.24: affected ...").
  if (!compact) for (const h of listed) for (const [k, v] of Object.entries(h.facts ?? {})) body.push(cut(`${h.host}: ${k}: ${v}`));
  if (fine && compact)
    body.push(cut(p.dim(`${fine} host${fine === 1 ? '' : 's'} ok or changed, not listed (--report FILE.md lists every host)`)));
  budget -= body.length;

  // Detail blocks while they fit; the first one always (shortened if it must).
  const maxDetails = o.maxDetails ?? Infinity;
  let shown = 0;
  for (const h of problems) {
    if (shown >= maxDetails) break;
    let block = ['', ...hostDetail(h, o)];
    const reserve = problems.length - shown > 1 ? 2 : 0; // the "… N more" line
    if (block.length + reserve > budget) {
      if (shown > 0) break;
      block = block.slice(0, Math.max(3, budget - reserve));
    }
    body.push(...block);
    budget -= block.length;
    shown++;
  }
  if (problems.length > shown) {
    body.push(
      '',
      cut(
        `… ${problems.length - shown} more host${problems.length - shown === 1 ? '' : 's'} to look at: ${problems
          .slice(shown)
          .map((h) => h.host)
          .join(', ')} (runbook show-run ${s.run_id})`,
      ),
    );
  }
  return `${[header, ...body, ...tail].join('\n')}\n`;
}

/** Word-wraps plain text to `max` columns (continuation lines get 2 columns less: the caller indents them). */
export function wrapWords(text: string, max: number): string[] {
  const out: string[] = [];
  let cur = '';
  for (const word of text.split(/\s+/)) {
    const limit = out.length === 0 ? max : max - 2;
    if (cur === '') cur = word;
    else if (width(cur) + 1 + width(word) <= limit) cur += ` ${word}`;
    else {
      out.push(cur);
      cur = word;
    }
    while (width(cur) > (out.length === 0 ? max : max - 2)) {
      const l = out.length === 0 ? max : max - 2;
      out.push([...cur].slice(0, l).join(''));
      cur = [...cur].slice(l).join('');
    }
  }
  if (cur !== '') out.push(cur);
  return out;
}

/** Elapsed time for the live view, whole seconds: 7s, 1m05s, 1h02m. */
export function formatElapsed(ms: number): string {
  const t = Math.max(0, Math.floor(ms / 1000));
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s`;
  return `${Math.floor(t / 3600)}h${String(Math.floor((t % 3600) / 60)).padStart(2, '0')}m`;
}

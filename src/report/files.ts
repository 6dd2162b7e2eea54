/** --report FILE.json | FILE.md | FILE.xml (JUnit), written atomically (tmp + rename). */
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import { RunbookError } from '../core/errors.js';
import { formatDuration } from '../core/duration.js';
import { PROBLEM_STATUSES, stepColumn, type HostSummary, type RunSummary } from './summary.js';
import { countsText, hostDetail, safeText, safeValue } from './text.js';

export type ReportFormat = 'json' | 'md' | 'xml';

/** The format a report file gets from its extension; E_USAGE for anything else (check before the run). */
export function reportFormatOf(file: string): ReportFormat {
  const ext = extname(file).toLowerCase();
  if (ext === '.json') return 'json';
  if (ext === '.md' || ext === '.markdown') return 'md';
  if (ext === '.xml') return 'xml';
  throw new RunbookError(
    'E_USAGE',
    `--report ${file}: unknown report format "${ext || '(no extension)'}"; name the file .json (machine summary), .md (human summary) or .xml (JUnit).`,
  );
}

/** A report of the run; what hosts printed is made safe to `cat` on a terminal (safeText) in every format. */
export function renderReport(format: ReportFormat, summary: RunSummary): string {
  const s = safeValue(summary);
  switch (format) {
    case 'json':
      return `${JSON.stringify({ schema: 'runbook-report/1', ...s }, null, 2)}\n`;
    case 'md':
      return markdown(s);
    case 'xml':
      return junit(s);
  }
}

/** Writes every report; each file appears whole or not at all. */
export async function writeReports(files: string[], summary: RunSummary): Promise<void> {
  const jobs = files.map((f) => ({ file: f, format: reportFormatOf(f) }));
  for (const j of jobs) await writeAtomic(j.file, renderReport(j.format, summary), 'report');
}

/** Writes `text` to a temp file next to `file` (not matching *.prom / the final name), fsyncs, renames. */
export async function writeAtomic(file: string, text: string, what: string): Promise<void> {
  const dir = dirname(file);
  const tmp = join(dir, `.${basename(file)}.${process.pid}.${Math.random().toString(36).slice(2, 8)}.tmp`);
  try {
    await mkdir(dir, { recursive: true });
    const fh = await open(tmp, 'w', 0o644);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => {});
    throw new RunbookError(
      'E_REPORT',
      `Cannot write the ${what} ${file}: ${(err as Error).message}; check the directory exists and is writable.`,
      { cause: err },
    );
  }
}

// ------------------------------------------------------------------ Markdown

function mdCell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function fence(text: string): string {
  const longest = Math.max(2, ...(text.match(/`+/g) ?? []).map((m) => m.length));
  const f = '`'.repeat(longest + 1);
  return `${f}\n${text}\n${f}`;
}

function markdown(s: RunSummary): string {
  const out: string[] = [];
  const icon = s.exit_code === 0 ? 'OK' : s.status === 'needs-attention' ? 'NEEDS ATTENTION' : s.status.toUpperCase();
  out.push(`# runbook ${s.runbook}: ${icon} (exit ${s.exit_code})`, '');
  out.push(`- Run: \`${s.run_id}\``);
  out.push(`- Started: ${s.started_at}`);
  out.push(`- Ended: ${s.ended_at} (${formatDuration(s.duration_ms)})`);
  out.push(`- Hosts: ${s.hosts.length} (${countsText(s.counts)})`);
  if (s.journal) out.push(`- Journal: \`${s.journal}\``);
  out.push('', `**What to do now:** ${s.next}`, '');
  out.push('| Host | Status | Step | Duration |', '|---|---|---|---|');
  for (const h of s.hosts) out.push(`| ${mdCell(h.host)} | ${h.status} | ${mdCell(stepColumn(h))} | ${formatDuration(h.duration_ms)} |`);
  const problems = s.hosts.filter((h) => PROBLEM_STATUSES.includes(h.status));
  if (problems.length) {
    out.push('', '## Hosts that need a look');
    for (const h of problems) {
      out.push('', `### ${h.host}: ${h.status}`, '');
      if (h.failed_step)
        out.push(
          `- Failed ${h.failed_phase === 'preflight' ? 'preflight' : 'step'}: ${h.failed_step}${h.failed_stage ? ` (${h.failed_stage})` : ''}`,
        );
      if (h.message) out.push(`- Why: ${h.message}`);
      if (h.failed_step || h.code !== undefined) out.push(`- Exit code: ${h.timed_out ? 'timed out (killed)' : (h.code ?? 'none')}`);
      if (h.command) out.push('- Command:', '', fence(h.command), '');
      if (h.stderr_tail) out.push('- Last lines of stderr:', '', fence(h.stderr_tail), '');
      else if (h.stdout_tail) out.push('- Last lines of stdout:', '', fence(h.stdout_tail), '');
      for (const r of h.rollbacks) {
        out.push(`- Rollback "${r.step}": ${r.status}${r.status === 'failed' ? ` (exit ${r.code ?? 'none'})` : ''}`);
        if (r.status === 'failed' && r.stderr_tail) out.push('', fence(r.stderr_tail), '');
      }
    }
  }
  if (s.warnings.length) {
    out.push('', '## Warnings', '');
    for (const w of s.warnings) out.push(`- ${w}`);
  }
  return `${out.join('\n').replace(/\n{3,}/g, '\n\n')}\n`;
}

// ------------------------------------------------------------------ JUnit

/** Drops characters XML 1.0 forbids (control chars, ANSI escapes) and escapes the rest. */
export function xmlEscape(s: string): string {
  return safeText(s)
    .replace(/[\uFFFE\uFFFF]/g, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

const secs = (ms: number) => (ms / 1000).toFixed(3);

function junitBody(h: HostSummary): string {
  return hostDetail(h).join('\n');
}

function junit(s: RunSummary): string {
  const failures = s.hosts.filter((h) => h.status === 'failed' || h.status === 'rolled-back').length;
  const errors = s.hosts.filter((h) => h.status === 'unreachable' || h.status === 'needs-attention').length;
  const skipped = s.counts.skipped;
  const suite = `runbook.${s.runbook}`;
  const a = (k: string, v: string | number) => `${k}="${xmlEscape(String(v))}"`;
  const out: string[] = ['<?xml version="1.0" encoding="UTF-8"?>'];
  const counts = [
    a('tests', s.hosts.length),
    a('failures', failures),
    a('errors', errors),
    a('skipped', skipped),
    a('time', secs(s.duration_ms)),
  ].join(' ');
  out.push(`<testsuites ${a('name', 'runbook')} ${counts}>`);
  out.push(`  <testsuite ${a('name', suite)} ${counts} ${a('timestamp', s.started_at)}>`);
  out.push('    <properties>');
  out.push(`      <property ${a('name', 'run_id')} ${a('value', s.run_id)}/>`);
  out.push(`      <property ${a('name', 'status')} ${a('value', s.status)}/>`);
  out.push(`      <property ${a('name', 'exit_code')} ${a('value', s.exit_code)}/>`);
  out.push(`      <property ${a('name', 'next')} ${a('value', s.next)}/>`);
  out.push('    </properties>');
  for (const h of s.hosts) {
    const open = `    <testcase ${a('name', h.host)} ${a('classname', suite)} ${a('time', secs(h.duration_ms))}`;
    const msg = `${h.status}${h.failed_step ? ` at "${h.failed_step}"` : ''}${h.message ? `: ${h.message}` : ''}`;
    switch (h.status) {
      case 'ok':
      case 'changed':
        out.push(`${open}>`);
        out.push(
          `      <system-out>${xmlEscape(`${h.status}${h.changed_steps.length ? `: ${h.changed_steps.join(', ')}` : ''}`)}</system-out>`,
        );
        out.push('    </testcase>');
        break;
      case 'skipped':
        out.push(`${open}>`, `      <skipped ${a('message', h.message ?? 'not started')}/>`, '    </testcase>');
        break;
      case 'failed':
      case 'rolled-back':
        out.push(
          `${open}>`,
          `      <failure ${a('message', msg)} ${a('type', h.status)}>${xmlEscape(junitBody(h))}</failure>`,
          '    </testcase>',
        );
        break;
      case 'unreachable':
      case 'needs-attention':
        out.push(
          `${open}>`,
          `      <error ${a('message', msg)} ${a('type', h.status)}>${xmlEscape(junitBody(h))}</error>`,
          '    </testcase>',
        );
        break;
    }
  }
  out.push('  </testsuite>', '</testsuites>');
  return `${out.join('\n')}\n`;
}

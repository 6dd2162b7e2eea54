/** `runbook show NAME`: the steps as an SRE reads them: name, when/unless, run, verify, rollback. */
import type { Args } from '../main.js';
import { displayPath, loadRunbook } from '../../runbook/load.js';
import { DEFAULT_STEP_TIMEOUT_MS, type Runbook, type StepSpec } from '../../runbook/types.js';
import { formatDuration } from '../../core/duration.js';
import { colorAllowed, COLORS, NO_COLORS, type Paint } from '../../report/text.js';

export async function run(argv: Args): Promise<number> {
  const rb = loadRunbook(String(argv.runbook), process.cwd());
  const p = colorAllowed(Boolean(process.stdout.isTTY)) ? COLORS : NO_COLORS;
  process.stdout.write(showText(rb, { paint: p, cwd: process.cwd() }));
  return 0;
}

function value(v: unknown): string {
  return typeof v === 'string' ? (v === '' ? '""' : v) : JSON.stringify(v);
}

/** A command: inline when one line, else a block under the label with a `|` gutter. */
function command(label: string, text: string, p: Paint, extra = ''): string[] {
  const t = text.replace(/\s+$/, '');
  const lab = p.dim(`${label}:`.padEnd(10));
  if (!t.includes('\n')) return [`     ${lab}${t}${extra ? `  ${p.dim(extra)}` : ''}`];
  return [`     ${lab}${extra ? p.dim(extra) : ''}`.replace(/\s+$/, ''), ...t.split('\n').map((l) => `       ${p.dim('|')} ${l}`)];
}

function step(s: StepSpec, p: Paint, cwd: string, rb: Runbook): string[] {
  if (s.alternative) return [];
  const flags: string[] = [];
  if (s.origin?.file) flags.push(`from ${displayPath(s.origin.file, cwd)}`);
  if (s.local) flags.push('on the controller');
  if (s.become) flags.push('sudo');
  if (s.timeoutMs !== DEFAULT_STEP_TIMEOUT_MS) flags.push(`timeout ${formatDuration(s.timeoutMs)}`);
  if (s.register) flags.push(`register ${s.register}`);
  const out = [`  ${p.bold(`${s.index + 1}. ${s.name}`)}${flags.length ? `  ${p.dim(`[${flags.join(', ')}]`)}` : ''}`];
  if (s.if) out.push(...command('if', s.if.source, p, '(decided on the controller: no command is sent)'));
  if (s.escalate) {
    out.push(`     ${p.dim('escalate: the alternatives in order, until one holds; a failed one is undone first')}`);
    s.escalate.forEach((a, i) => {
      out.push(`     ${p.bold(`${String.fromCharCode(97 + (i % 26))}) ${a.name}`)}`);
      if (a.if) out.push(...command('if', a.if.source, p, '(else this alternative is passed over)').map((l) => `  ${l}`));
      for (const j of a.steps) out.push(...step({ ...rb.steps[j], alternative: undefined }, p, cwd, rb).map((l) => `    ${l}`));
    });
    return out;
  }
  if (s.when) out.push(...command('when', s.when, p, '(runs the step only if this succeeds)'));
  if (s.unless) out.push(...command('unless', s.unless, p, '(already done if this succeeds)'));
  out.push(...(s.call ? command('call', s.run, p, '(a built-in action)') : command('run', s.run, p)));
  if (s.verify) {
    const tries = s.verify.retries ? `(retried ${s.verify.retries}x, ${formatDuration(s.verify.delayMs)} apart)` : '';
    out.push(...command('verify', s.verify.run, p, tries));
  }
  if (s.phase === 'step') {
    out.push(...(s.rollback ? command('rollback', s.rollback, p) : [`     ${p.dim('rollback: '.padEnd(10))}${p.yellow('none')}`]));
  }
  return out;
}

export function showText(rb: Runbook, o: { paint?: Paint; cwd?: string } = {}): string {
  const p = o.paint ?? NO_COLORS;
  const lines: string[] = [];
  lines.push(`${p.bold(rb.name)}${rb.destructive ? `  ${p.yellow('(destructive: asks before it runs, or needs --yes)')}` : ''}`);
  const cwd = o.cwd ?? process.cwd();
  lines.push(p.dim(displayPath(rb.file, cwd)));
  if (rb.description) lines.push(rb.description);
  const fleet = [
    `serial: ${rb.serial.length ? rb.serial.join(', ') : 'all hosts at once'}`,
    `max_failed: ${rb.maxFailed}`,
    `become: ${rb.become ? 'yes' : 'no'}`,
    `failing preflight: ${rb.preflightFailure === 'abort' ? 'aborts the run' : 'drops the host'}`,
  ];
  if (rb.hosts) fleet.unshift(`hosts: ${rb.hosts}`);
  lines.push(fleet.join(' · '));
  const vars = Object.entries(rb.vars);
  if (vars.length) {
    lines.push('', p.bold('Variables (defaults; inventory and -e override):'));
    for (const [k, v] of vars) lines.push(`  ${k} = ${rb.secretVars.includes(k) ? '*** (secret)' : value(v)}`);
  }
  if (rb.preflight.length) {
    lines.push('', p.bold('Preflight (read-only, on every host before any host changes):'));
    for (const s of rb.preflight) lines.push(...step(s, p, cwd, rb));
  }
  if (rb.applyIf)
    lines.push(
      '',
      `${p.bold('apply_if:')} ${rb.applyIf.source}  ${p.dim('(after the preflight; a host where it is false ends ok, untouched)')}`,
    );
  lines.push('', p.bold(`Steps (per host, in order; on failure the rollbacks run in reverse):`));
  for (const s of rb.steps) lines.push(...step(s, p, cwd, rb));
  return `${lines.join('\n')}\n`;
}

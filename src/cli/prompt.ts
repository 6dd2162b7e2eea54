/**
 * The one question runbook ever asks: before a destructive runbook, on a terminal. Unattended
 * (no TTY) it never asks: without --yes it refuses.
 */
import { createInterface } from 'node:readline';
import { RunbookError } from '../core/errors.js';
import type { Plan } from '../plan/types.js';

export interface ConfirmOptions {
  yes: boolean;
  /** stdin and stderr are both terminals. */
  tty: boolean;
  stdin: NodeJS.ReadableStream;
  stderr: NodeJS.WritableStream;
  /** Runbook name, for the messages. */
  runbook?: string;
}

/**
 * Resolves true when the run may go ahead: --yes, or "y"/"yes" typed on the terminal.
 * Throws RunbookError E_CONFIRM (exit 1, nothing contacted) when there is no terminal and no
 * --yes, and when the operator answers anything but yes (so a caller cannot run by mistake).
 */
export async function confirmDestructive(summaryText: string, o: ConfirmOptions): Promise<boolean> {
  const name = o.runbook ?? 'this runbook';
  if (o.yes) return true;
  if (!o.tty) {
    throw new RunbookError(
      'E_CONFIRM',
      `runbook ${name} is destructive and there is no terminal to confirm; pass --yes to run it unattended.`,
    );
  }
  o.stderr.write(summaryText.replace(/\n?$/, '\n'));
  o.stderr.write(`Run the destructive runbook ${name}? [y/N] `);
  const answer = await readLine(o.stdin);
  if (answer !== undefined && /^\s*y(es)?\s*$/i.test(answer)) return true;
  if (answer === undefined) o.stderr.write('\n');
  throw new RunbookError('E_CONFIRM', `Not confirmed: nothing was run. Answer "y" to run ${name}, or pass --yes.`);
}

function readLine(input: NodeJS.ReadableStream): Promise<string | undefined> {
  return new Promise((resolve) => {
    const rl = createInterface({ input, terminal: false });
    let done = false;
    const finish = (v: string | undefined) => {
      if (done) return;
      done = true;
      rl.close();
      resolve(v);
    };
    rl.once('line', (l) => finish(l));
    rl.once('close', () => finish(undefined));
  });
}

function list(names: string[], max: number): string {
  return names.length <= max ? names.join(', ') : `${names.slice(0, max).join(', ')}, … (${names.length - max} more)`;
}

/** What the operator confirms: runbook, hosts, batches, failure budget, steps (with rollbacks). */
/** confirmDestructive on this process's terminal (stdin + stderr), with --yes from the command line. */
export function confirmOnTerminal(summaryText: string, yes: unknown, runbook: string): Promise<boolean> {
  return confirmDestructive(summaryText, {
    yes: Boolean(yes),
    tty: Boolean(process.stdin.isTTY && process.stderr.isTTY),
    stdin: process.stdin,
    stderr: process.stderr,
    runbook,
  });
}

export function planSummaryText(plan: Plan, opts: { window?: string } = {}): string {
  const rb = plan.runbook;
  const n = plan.hosts.length;
  const lines: string[] = [];
  lines.push(`Runbook ${rb.name}${rb.destructive ? ' (destructive)' : ''}${rb.description ? `: ${rb.description}` : ''}`);
  lines.push(
    `  Hosts (${n}): ${list(
      plan.hosts.map((h) => h.name),
      12,
    )}`,
  );
  const sizes = plan.batches.map((b) => b.length);
  lines.push(
    `  Batches: ${plan.batches.length}${plan.batches.length > 1 ? ` of ${list(sizes.map(String), 10)} hosts` : ''}, at most ${plan.forks} hosts at once`,
  );
  lines.push(
    `  Failure budget: ${plan.maxFailed === 0 ? 'no host starts after the first failure' : `no host starts after more than ${plan.maxFailed} failure${plan.maxFailed === 1 ? '' : 's'}`}`,
  );
  if (opts.window) lines.push(`  Window: hosts start only between ${opts.window.replace('-', ' and ')} (local time)`);
  if (rb.preflight.length) lines.push(`  Preflight (read-only, every host first): ${rb.preflight.map((s) => s.name).join(', ')}`);
  lines.push('  Steps:');
  for (const s of rb.steps) lines.push(`    ${s.index + 1}. ${s.name}${s.rollback ? '' : '  (no rollback)'}`);
  return `${lines.join('\n')}\n`;
}

/**
 * `runbook apply NAME -i INV`: validate everything, confirm a destructive runbook, open the
 * journal, run the engine, render, write reports. Also exports the pieces resume reuses.
 */
import { hostname, tmpdir } from 'node:os';
import type { Args } from '../main.js';
import type { Plan } from '../../plan/types.js';
import type { RunEvent } from '../../engine/events.js';
import { runPlan, type EngineOptions, type HostResumeState, type RunResult } from '../../engine/engine.js';
import { loadPlan, type Loaded } from '../context.js';
import { transportsFrom } from '../transports.js';
import { createRenderer, reportFormatOf } from '../../report/index.js';
import { openJournal, newRunId, defaultStateDir } from '../../journal/writer.js';
import { createHostLock, lockAccessFromHosts } from '../../engine/lock.js';
import { confirmOnTerminal, planSummaryText } from '../prompt.js';
import { windowGate } from '../window.js';

export async function run(argv: Args): Promise<number> {
  const runId = newRunId();
  const loaded = loadPlan(argv, runId);
  const gate = argv.window ? windowGate(String(argv.window)) : undefined;
  for (const f of argv.report ?? []) reportFormatOf(String(f)); // a bad report name fails before anything runs
  if (loaded.runbook.destructive) {
    await confirmOnTerminal(planSummaryText(loaded.plan, { window: argv.window }), argv.yes, loaded.runbook.name);
  }
  return execute(argv, loaded, { mayStartHost: gate });
}

export interface ExecuteExtras {
  mayStartHost?: () => string | undefined;
  resume?: Map<string, HostResumeState>;
  /** Append to an existing journal (resume, rollback) instead of a new one. */
  journalRunId?: string;
  /** Run something other than a plain apply (rollback) with the same plumbing. */
  engine?: (opts: EngineOptions) => Promise<RunResult>;
}

/** Journal, transports, renderer, signals and reports around one engine run. */
export async function execute(argv: Args, loaded: Loaded, extras: ExecuteExtras = {}): Promise<number> {
  const { plan } = loaded;
  const stateDir = argv['state-dir'] ?? defaultStateDir(process.env);
  const journal = await openJournal(stateDir, extras.journalRunId ?? plan.runId, { fsync: argv.fsync !== false });
  const renderer = createRenderer({
    json: Boolean(argv.json),
    verbose: Boolean(argv.verbose),
    tty: Boolean(process.stderr.isTTY) && !argv.json,
    color: Boolean(process.stderr.isTTY) && !process.env.NO_COLOR,
    stdout: process.stdout,
    stderr: process.stderr,
  });
  const events: RunEvent[] = [];
  const { transport, localTransport } = transportsFrom(argv);

  const abort = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals === 1) {
      process.stderr.write(
        `\nrunbook: ${sig}: no new step starts; hosts in flight finish their command and roll back. Press Ctrl-C twice more to quit at once (run "runbook rollback ${plan.runId}" later).\n`,
      );
      abort.abort();
    } else if (signals >= 3) {
      process.stderr.write(
        `runbook: quitting now; the journal knows what was in flight: runbook resume ${plan.runId} or runbook rollback ${plan.runId}\n`,
      );
      process.exit(130);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let result: RunResult;
  try {
    const opts: EngineOptions = {
      plan,
      transport,
      localTransport,
      journal,
      signal: abort.signal,
      emit: (e) => {
        events.push(e);
        renderer.onEvent(e);
      },
      rollbackOnFailure: argv.rollback !== false,
      mayStartHost: extras.mayStartHost,
      resume: extras.resume,
      lock: hostLock(plan, extras.journalRunId ?? plan.runId),
      streamOutput: Boolean(argv.verbose),
      journalRunInfo: journalRunInfo(loaded, journal.path),
    };
    result = await (extras.engine ?? runPlan)(opts);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await renderer.close();
    await journal.close();
  }
  try {
    await writeOutputs(argv, events);
  } catch (err) {
    // The run's own exit code matters more to a timer than a report that could not be written.
    process.stderr.write(`runbook: warning: ${(err as Error).message}\n`);
  }
  return result.exit_code;
}

/** Locks live on the hosts (/run/runbook/lock); local-connection hosts get one each under the temp dir. */
function hostLock(plan: Plan, runId: string) {
  return createHostLock({
    runId,
    runbook: plan.runbook.name,
    controller: hostname(),
    pid: process.pid,
    ...lockAccessFromHosts(plan.hosts, tmpdir()),
  });
}

function journalRunInfo(loaded: Loaded, path: string): Record<string, unknown> {
  const { plan, runbook } = loaded;
  return {
    journal: path,
    runbook_file: runbook.file,
    runbook_hash: runbook.hash,
    inputs: loaded.inputs,
    plan: {
      hosts: plan.hosts.map((h) => ({ name: h.name, connection: { ...h.connection, password: undefined, becomePassword: undefined } })),
      batches: plan.batches,
      max_failed: plan.maxFailed,
    },
  };
}

async function writeOutputs(argv: Args, events: RunEvent[]): Promise<void> {
  const reports: string[] = argv.report ?? [];
  if (!reports.length && !argv['metrics-file']) return;
  const { summarize, writeReports, writeMetrics } = await import('../../report/index.js');
  const summary = summarize(events);
  if (reports.length) await writeReports(reports, summary);
  if (argv['metrics-file']) await writeMetrics(String(argv['metrics-file']), summary);
}

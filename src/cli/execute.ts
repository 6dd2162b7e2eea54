/**
 * The one execution path of `apply`, `resume` and `rollback`: journal, transports, renderer,
 * signals and reports around one engine run, in the mode the command chose.
 */
import { hostname, tmpdir } from 'node:os';
import { type EngineOptions, type RunInfo, type RunMode, type RunResult, runPlan } from '../engine/engine.js';
import type { RunEvent } from '../engine/events.js';
import { createHostLock, lockAccessFromHosts } from '../engine/lock.js';
import { type AttemptPolicy, attemptsDirForHost, createAttemptGate } from '../engine/attempts.js';
import { defaultStateDir, openJournal } from '../journal/writer.js';
import type { Plan } from '../plan/types.js';
import { createRenderer } from '../report/index.js';
import type { Loaded } from './context.js';
import type { Args } from './main.js';
import { runStarted } from './output-guard.js';
import { transportsFrom } from './transports.js';

export interface ExecuteOptions {
  mode: RunMode;
  mayStartHost?: () => string | undefined;
  attempts?: AttemptPolicy;
}

/** Runs `loaded.plan` in `mode`; the journal is the run's own (a resume or rollback appends to it). Returns the exit code. */
export async function execute(argv: Args, loaded: Loaded, o: ExecuteOptions): Promise<number> {
  const { plan } = loaded;
  const stateDir = argv['state-dir'] ?? defaultStateDir(process.env);
  const journal = await openJournal(stateDir, plan.runId, { fsync: argv.fsync !== false });
  const renderer = createRenderer({
    json: Boolean(argv.json),
    verbose: Boolean(argv.verbose),
    tty: Boolean(process.stderr.isTTY) && !argv.json,
    color: Boolean(process.stderr.isTTY) && !process.env.NO_COLOR,
    stdout: process.stdout,
    stderr: process.stderr,
  });
  const events: RunEvent[] = [];
  const { transport, localTransport, close: closeTransports } = transportsFrom(argv);

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
  // SIGHUP: the controller's terminal went away (an ssh session to it dropped): the same as SIGTERM.
  const signalNames: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const sig of signalNames) process.on(sig, onSignal);

  let result: RunResult;
  runStarted();
  try {
    const opts: EngineOptions = {
      plan,
      mode: o.mode,
      transport,
      localTransport,
      journal,
      signal: abort.signal,
      emit: (e) => {
        events.push(e);
        renderer.onEvent(e);
      },
      rollbackOnFailure: argv.rollback !== false,
      mayStartHost: o.mayStartHost,
      lock: hostLock(plan),
      attempts: o.attempts && attemptGate(plan, o.attempts),
      streamOutput: Boolean(argv.verbose),
      journalRunInfo: journalRunInfo(loaded, journal.path),
    };
    result = await runPlan(opts);
  } finally {
    closeTransports();
    for (const sig of signalNames) process.off(sig, onSignal);
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
function hostLock(plan: Plan) {
  return createHostLock({
    runId: plan.runId,
    runbook: plan.runbook.name,
    controller: hostname(),
    pid: process.pid,
    ...lockAccessFromHosts(plan.hosts, tmpdir(), plan.runbook.become),
  });
}

/** --cooldown / --max-attempts, recorded on each host (runbook_attempts_dir, else /var/lib/runbook/attempts). */
function attemptGate(plan: Plan, policy: AttemptPolicy) {
  const by = new Map(plan.hosts.map((h) => [h.name, h]));
  return createAttemptGate({
    ...policy,
    runId: plan.runId,
    runbook: plan.runbook.name,
    dirFor: (h) => attemptsDirForHost(by.get(h)!, tmpdir()),
    becomeFor: lockAccessFromHosts(plan.hosts, tmpdir(), plan.runbook.become).becomeFor, // the same rule as the lock
  });
}

function journalRunInfo(loaded: Loaded, path: string): RunInfo {
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
  const { summarize, writeReports, writeMetrics } = await import('../report/index.js');
  const summary = summarize(events);
  if (reports.length) await writeReports(reports, summary);
  if (argv['metrics-file']) await writeMetrics(String(argv['metrics-file']), summary);
}

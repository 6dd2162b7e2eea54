/**
 * The composition root: yargs commands, lazy-loaded handlers, and the one place where errors
 * become exit codes. Handlers return an exit code; they throw a CodedError (RunbookError for usage,
 * validation, journal; TransportError for a host's connection) for anything a user can cause.
 */
import type { Argv } from 'yargs';
import { CodedError } from '../core/errors.js';
import { TransportError } from '../transport/types.js';
import { DEFAULT_CONNECT_CONCURRENCY } from './defaults.js';
import { outputClosed } from './output-guard.js';

/**
 * The parsed command line every handler gets: yargs' result for the options declared below (each
 * command sees its own subset; the rest are absent). Other keys (yargs' camelCase copies) are unknown.
 */
export interface Args {
  [key: string]: unknown;
  _: (string | number)[];
  $0?: string;
  // positionals
  runbook?: string;
  run_id?: string;
  host?: string;
  group?: string;
  // inventoryOpts
  inventory?: string[];
  limit?: string;
  'extra-vars'?: string[];
  // connectionOpts
  forks?: number;
  user?: string;
  'private-key'?: string;
  'ssh-config'?: string;
  'known-hosts'?: string;
  'host-key-checking'?: 'strict' | 'accept-new' | 'off';
  'connect-timeout'?: string;
  'connect-concurrency'?: number;
  // outputOpts
  json?: boolean;
  verbose?: boolean;
  'state-dir'?: string;
  // plan, apply, resume, rollback
  probe?: boolean;
  yes?: boolean;
  rollback?: boolean;
  report?: string[];
  'metrics-file'?: string;
  window?: string;
  cooldown?: string;
  'max-attempts'?: string;
  fsync?: boolean;
  force?: boolean;
  // inventory
  list?: boolean;
  graph?: boolean;
  'list-hosts'?: boolean;
  // unlock
  run?: string;
  // serve
  config?: string;
}
type Handler = (argv: Args) => Promise<number>;

/** EX_SOFTWARE (sysexits.h): an error that is not a CodedError reached the CLI; that is a bug. */
export const EXIT_INTERNAL = 70;
/** EX_IOERR (sysexits.h): stdout could not be written (a full disk, a broken device); EPIPE excepted. */
export const EXIT_OUTPUT = 74;

/**
 * Exit codes (README "Host statuses and exit codes"): 0 ok, 1 usage/validation/refused before anything
 * changed, 2 a host failed or could not be reached, 3 needs attention, 4 journal, 70 bug, 74 stdout, 130 interrupted.
 */
export function exitCodeFor(err: unknown): number {
  if (!(err instanceof CodedError)) return EXIT_INTERNAL;
  // A command that works on one host itself (unlock) could not reach it, or lost it: as `unreachable` in a run.
  if (err instanceof TransportError) return 2;
  switch (err.code) {
    case 'E_INTERRUPTED':
      return 130;
    case 'E_JOURNAL':
      return 4;
    case 'E_LOCK': // the host's lock command failed (unlock): the host failed, nothing was removed
      return 2;
    case 'E_INTERNAL':
      return EXIT_INTERNAL;
    default:
      return 1;
  }
}

/**
 * What runbook prints for an error that ends a command, and its exit code: `runbook: MESSAGE` for a
 * CodedError (one line, unless a ValidationError lists several issues); for anything else (a bug)
 * `runbook: internal error: MESSAGE (this is a bug; ...)`, one line. RUNBOOK_DEBUG=1 adds the stacks.
 */
export function errorReport(err: unknown, env: NodeJS.ProcessEnv = process.env): { text: string; exitCode: number } {
  const line = err instanceof CodedError && err.code !== 'E_INTERNAL' ? `runbook: ${err.message}\n` : internalErrorLine(err);
  return { text: line + debugLines(err, env), exitCode: exitCodeFor(err) };
}

function internalErrorLine(err: unknown): string {
  const msg = (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ').trim();
  return `runbook: internal error: ${msg || (err instanceof Error ? err.name : 'unknown error')} (this is a bug; RUNBOOK_DEBUG=1 shows the stack)\n`;
}

/** RUNBOOK_DEBUG=1: the stack of an error and of its causes, after the one-line message. */
function debugLines(err: unknown, env: NodeJS.ProcessEnv): string {
  if (env.RUNBOOK_DEBUG !== '1') return '';
  const out: string[] = [];
  let e: unknown = err;
  for (let depth = 0; e !== undefined && depth < 8; depth++) {
    out.push(`${depth ? 'caused by: ' : ''}${e instanceof Error ? (e.stack ?? `${e.name}: ${e.message}`) : String(e)}`);
    e = e instanceof Error ? e.cause : undefined;
  }
  return `${out.join('\n')}\n`;
}

/** Last resort for an error that escaped every handler (a stray promise, an event listener): a bug, reported in one line. */
function onEscapedError(err: unknown): void {
  try {
    process.stderr.write(internalErrorLine(err) + debugLines(err, process.env));
  } finally {
    process.exit(EXIT_INTERNAL);
  }
}

function lazy(load: () => Promise<{ run: Handler }>) {
  return async (argv: Args) => {
    const mod = await load();
    process.exitCode = await mod.run(argv);
  };
}

function inventoryOpts(y: Argv) {
  return y
    .option('inventory', { alias: 'i', type: 'string', array: true, describe: 'Inventory file or directory (YAML, INI); repeatable' })
    .option('limit', { alias: 'l', type: 'string', describe: "Host pattern: 'web*,db1', 'kube_node:!node3', '@file'" })
    .option('extra-vars', {
      alias: 'e',
      type: 'string',
      array: true,
      describe: 'key=value, JSON/YAML object, or @file; highest precedence',
    });
}

function connectionOpts(y: Argv) {
  return y
    .option('forks', { alias: 'f', type: 'number', default: 50, describe: 'Hosts worked on at once' })
    .option('user', { alias: 'u', type: 'string', describe: 'SSH user when the inventory has none' })
    .option('private-key', { type: 'string', describe: 'SSH private key file' })
    .option('ssh-config', { type: 'string', describe: 'OpenSSH client config (default ~/.ssh/config)' })
    .option('known-hosts', { type: 'string', describe: 'known_hosts file (default ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts)' })
    .option('host-key-checking', {
      choices: ['strict', 'accept-new', 'off'] as const,
      default: 'strict',
      describe: 'Unknown host keys: refuse, add, or ignore (warned)',
    })
    .option('connect-timeout', { type: 'string', default: '10s', describe: 'SSH connect timeout, per connection, from its own start' })
    .option('connect-concurrency', {
      type: 'number',
      default: DEFAULT_CONNECT_CONCURRENCY,
      describe: 'SSH connections (TCP + handshake) in flight at once (the rest wait, their timeout not yet started)',
    });
}

/** resume and rollback: two modes of recovering one recorded run, with the same options. */
function recoveryOpts(y: Argv, verb: 'Resume' | 'Roll back') {
  return outputOpts(connectionOpts(y.positional('run_id', { type: 'string' })))
    .option('extra-vars', {
      alias: 'e',
      type: 'string',
      array: true,
      describe: 'Give again the -e values the run had (secrets are not kept in the journal)',
    })
    .option('force', { type: 'boolean', default: false, describe: `${verb} even if the runbook file changed` })
    .option('yes', { alias: 'y', type: 'boolean', default: false });
}

function outputOpts(y: Argv) {
  return y
    .option('json', { type: 'boolean', default: false, describe: 'NDJSON events on stdout, nothing else on stdout' })
    .option('verbose', { alias: 'v', type: 'boolean', default: false, describe: 'Stream command output, prefixed by host' })
    .option('state-dir', {
      type: 'string',
      describe: 'Where run journals live (default $XDG_STATE_HOME/runbook or ~/.local/state/runbook; env RUNBOOK_STATE_DIR)',
    });
}

export async function main(args: string[]): Promise<void> {
  process.on('uncaughtException', onEscapedError);
  process.on('unhandledRejection', onEscapedError);
  // `runbook plan ... | head`: a closed pipe ends the command quietly, except during a run, which goes on
  // (output-guard.ts). Any other write error (`> /dev/full`) is one line on stderr (when stderr is not
  // the one failing) and exit 74.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') {
        if (outputClosed(stream === process.stdout ? 'stdout' : 'stderr')) return;
        process.exit(process.exitCode ?? 0);
      }
      if (stream === process.stdout) {
        process.stderr.write(`runbook: cannot write the output: ${err.message}; check the file or pipe stdout goes to.\n`);
      }
      process.exit(EXIT_OUTPUT);
    });
  }
  // `runbook validate FILE` (one positional, no option) skips yargs: building the CLI costs about as
  // much as node's own start-up. Same handler, same output and exit codes; anything else (options,
  // --help, a missing or extra argument) goes through yargs. RUNBOOK_FAST_PATH=0 turns it off.
  if (args.length === 2 && args[0] === 'validate' && args[1] !== '' && !args[1].startsWith('-') && process.env.RUNBOOK_FAST_PATH !== '0') {
    await runHandler(() => lazy(() => import('./commands/validate.js'))({ _: ['validate'], runbook: args[1], $0: 'runbook' }));
    return;
  }
  const { default: yargs } = await import('yargs');
  const cli = yargs(args)
    .scriptName('runbook')
    .usage(
      '$0 <command> [options]\n\nRemediation runbooks over SSH: a check before each step, a proof after it, rollback when something fails.',
    )
    .command(
      'validate <runbook>',
      'Validate a runbook (and, with -i, every variable for every host)',
      (y) =>
        inventoryOpts(y.positional('runbook', { type: 'string', describe: 'Runbook name or path' }))
          .example('$0 validate runbooks/hello.yml', 'Check the file')
          .example('$0 validate containerd-recover -i prod.yml', 'Also resolve every variable for every host'),
      lazy(() => import('./commands/validate.js')),
    )
    .command(
      'plan <runbook>',
      'Show per host the steps and their rendered commands',
      (y) =>
        outputOpts(connectionOpts(inventoryOpts(y.positional('runbook', { type: 'string' }))))
          .option('probe', {
            type: 'boolean',
            default: false,
            describe: 'Also run preflight, when and unless (read-only) to say which steps would run',
          })
          .example('$0 plan hello -i inventory/local.yml', 'Rendered commands per host')
          .example('$0 plan containerd-recover -i prod.yml --probe', 'Which nodes are broken'),
      lazy(() => import('./commands/plan.js')),
    )
    .command(
      'apply <runbook>',
      'Run a runbook against the inventory',
      (y) =>
        outputOpts(connectionOpts(inventoryOpts(y.positional('runbook', { type: 'string' }))))
          .option('yes', { alias: 'y', type: 'boolean', default: false, describe: 'Do not ask before a destructive runbook' })
          .option('rollback', {
            type: 'boolean',
            default: true,
            describe: 'Roll back hosts in flight on failure or interrupt (--no-rollback to keep state)',
          })
          .option('report', { type: 'string', array: true, describe: 'Write a summary: FILE.json, FILE.md or FILE.xml (JUnit)' })
          .option('metrics-file', { type: 'string', describe: 'node_exporter textfile (.prom), written atomically' })
          .option('window', { type: 'string', describe: 'Maintenance window HH:MM-HH:MM (local time); no host starts outside it' })
          .option('cooldown', {
            type: 'string',
            describe: 'Skip a host this runbook started on within DURATION (30m; recorded on the host)',
          })
          .option('max-attempts', {
            type: 'string',
            describe: 'COUNT/DURATION (2/24h): skip a host with that many starts of this runbook in that span; left for a human',
          })
          .option('fsync', {
            type: 'boolean',
            default: true,
            describe: 'fsync the journal before every action (--no-fsync: faster, not crash-safe)',
          })
          .example('$0 apply hello -i inventory/local.yml', 'Run on local hosts')
          .example('$0 apply containerd-recover -i prod.yml --yes --report /var/log/runbook.md', 'Unattended'),
      lazy(() => import('./commands/apply.js')),
    )
    .command(
      'list',
      'List the runbooks found',
      (y) => y.example('$0 list', 'Shipped and ./runbooks/ runbooks'),
      lazy(() => import('./commands/list.js')),
    )
    .command(
      'show <runbook>',
      'Show the steps of a runbook as an SRE reads them',
      (y) => y.positional('runbook', { type: 'string' }).example('$0 show containerd-recover', 'Steps, predicates, rollbacks'),
      lazy(() => import('./commands/show.js')),
    )
    .command(
      'inventory [group]',
      'Show an inventory as Ansible would',
      (y) =>
        inventoryOpts(y)
          .option('list', { type: 'boolean', describe: 'JSON like ansible-inventory --list' })
          .option('graph', { type: 'boolean', describe: 'Group tree' })
          .option('host', { type: 'string', describe: 'Merged variables of one host' })
          .option('list-hosts', { type: 'boolean', describe: 'Selected host names, one a line' })
          .example('$0 inventory -i inventory/ --limit "kube_node:!node3" --list-hosts', 'Which hosts a pattern selects'),
      lazy(() => import('./commands/inventory.js')),
    )
    .command(
      'runs',
      'Recent runs from the journal',
      (y) => outputOpts(y).example('$0 runs', 'id, runbook, started, status'),
      lazy(() => import('./commands/runs.js')),
    )
    .command(
      'show-run <run_id>',
      'Per host, per step: what a run did',
      (y) => outputOpts(y.positional('run_id', { type: 'string' })).example('$0 show-run 20261126-1950-ab12', 'From the journal'),
      lazy(() => import('./commands/show-run.js')),
    )
    .command(
      'resume <run_id>',
      'Continue a run whose controller died',
      (y) => recoveryOpts(y, 'Resume').example('$0 resume 20261126-1950-ab12', 'Finish what the dead run started'),
      lazy(() => import('./commands/resume.js')),
    )
    .command(
      'rollback <run_id>',
      'Unwind on every host what a run changed',
      (y) => recoveryOpts(y, 'Roll back').example('$0 rollback 20261126-1950-ab12', 'Put every host back'),
      lazy(() => import('./commands/rollback.js')),
    )
    .command(
      'unlock <host>',
      'Break a stale host lock (journaled)',
      (y) =>
        outputOpts(connectionOpts(inventoryOpts(y.positional('host', { type: 'string' }))))
          .option('run', { type: 'string', demandOption: true, describe: 'Run id that holds the lock' })
          .option('force', { type: 'boolean', default: false, describe: 'Remove it even if that run is still running here' })
          .example('$0 unlock node3 -i prod.yml --run 20261126-1950-ab12', 'Remove the lock that run left'),
      lazy(() => import('./commands/unlock.js')),
    )
    .command(
      'serve',
      'Repair on alerts: receive Alertmanager webhooks and run the routed runbooks',
      (y) =>
        y
          .option('config', {
            alias: 'c',
            type: 'string',
            demandOption: true,
            describe: 'serve.yml (listen, inventory, auth, routes, brake)',
          })
          .example('$0 serve -c /etc/runbook/serve.yml', 'Foreground service; /metrics and /healthz on the same listener'),
      lazy(() => import('./commands/serve.js')),
    )
    .completion('completion', 'Print a shell completion script (bash/zsh)')
    .demandCommand(1, 'Name a command; see runbook --help.')
    .strict()
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .version()
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((msg, err) => {
      if (err) throw err;
      process.stderr.write(`runbook: ${msg}\nRun "runbook --help" for usage.\n`);
      process.exit(1);
    });
  // yargs renders the command's help text after starting its handler, in case it must show it
  // later; this CLI never does (fail() above prints its own line), and rendering it measures every
  // string's display width (string-width's Unicode set-up included: apply's start-up went from
  // ~225 to ~130 ms without it). Turned off through yargs' internal usage object
  // (when a yargs version lacks it, nothing changes but the time).
  const usage = (cli as unknown as { getInternalMethods?: () => { getUsageInstance?: () => { cacheHelpMessage?: () => void } } })
    .getInternalMethods?.()
    .getUsageInstance?.();
  if (usage && typeof usage.cacheHelpMessage === 'function') usage.cacheHelpMessage = () => {};
  await runHandler(() => cli.parseAsync());
}

/** Runs the command; an error becomes `runbook: MESSAGE` on stderr (its stack only with RUNBOOK_DEBUG=1) and its exit code. */
async function runHandler(run: () => Promise<unknown>): Promise<void> {
  try {
    await run();
  } catch (err) {
    const { text, exitCode } = errorReport(err);
    process.exitCode = exitCode;
    // A bug may leave a connection or a timer behind that would keep the process alive: end it now.
    if (exitCode === EXIT_INTERNAL) process.stderr.write(text, () => process.exit(exitCode));
    else process.stderr.write(text);
  }
}

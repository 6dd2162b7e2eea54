// tier: local
/**
 * Every failure a user can cause, through bin/runbook: each command against each bad input that
 * applies to it (a host on a closed port, a host name that does not resolve, a missing inventory,
 * a missing or malformed run id, a corrupt journal, a missing or broken runbook). For each: the
 * documented exit code, no stack trace, a one-line `runbook: ...` message, and nothing left behind
 * that should not be (no journal or state directory after a refused command, a corrupt journal
 * untouched). Also the mapping itself (src/cli/main.ts errorReport): coded errors -> exit codes,
 * anything else -> one `internal error` line and exit 70, the stack only with RUNBOOK_DEBUG=1.
 *
 * Needs no root, no sshd and no network: the unreachable host is 127.0.0.1 on a port that was just
 * closed (refused at once), the other one `nonexistent.invalid` (RFC 2606: never resolves).
 * Run with: npm run build && node test/run.mjs cli-errors
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { errorReport } from '../src/cli/main.js';
import { RunbookError, ValidationError } from '../src/core/errors.js';
import { TransportError } from '../src/transport/types.js';

const ROOT = new URL('..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/runbook');
const WORK = mkdtempSync(join(tmpdir(), 'runbook-clierr-'));
after(() => rmSync(WORK, { recursive: true, force: true }));

/** A stack frame, or a source position of ours, anywhere in stderr. */
const STACK = /^\s+at .*\(|\.ts:\d+|\.js:\d+/m;
const RUN_ID = '20261126T195012Z-ab12cd'; // well-formed, never recorded anywhere
const MALFORMED_ID = '../../etc/passwd';

/** A TCP port on 127.0.0.1 that nothing listens on: bound by us, then closed; checked to refuse. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((res) => srv.listen(0, '127.0.0.1', res));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((res) => srv.close(() => res()));
  await new Promise<void>((res, rej) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      rej(new Error(`port ${port} answered after it was closed`));
    });
    s.once('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNREFUSED' ? res() : rej(e)));
  });
  return port;
}

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

const HOME = join(WORK, 'home');
/** Where a command would write if it ignored --state-dir: must never appear. */
const DEFAULT_STATE = join(WORK, 'default-state');
const ENV: NodeJS.ProcessEnv = (() => {
  const e: NodeJS.ProcessEnv = { ...process.env, HOME, RUNBOOK_STATE_DIR: DEFAULT_STATE, XDG_STATE_HOME: join(WORK, 'xdg'), NO_COLOR: '1' };
  delete e.SSH_AUTH_SOCK; // no agent: the unreachable cases must not depend on the caller's keys
  delete e.RUNBOOK_DEBUG;
  delete e.RUNBOOK_KEY_PASSPHRASE;
  return e;
})();

/** Runs bin/runbook; a command that hangs is killed (and fails its case) instead of blocking the file. */
function runbook(args: string[], o: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: o.cwd ?? WORK, env: o.env ?? ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Every file and directory under dir, with a hash of each file: equal snapshots = nothing created, removed or changed. */
function snapshot(dir: string): string[] {
  if (!existsSync(dir)) return ['(absent)'];
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) {
        out.push(`${relative(dir, p)}/`);
        walk(p);
      } else out.push(`${relative(dir, p)} ${createHash('sha256').update(readFileSync(p)).digest('hex').slice(0, 16)}`);
    }
  };
  walk(dir);
  return out;
}

// ------------------------------------------------------------------ fixtures

let port = 0;
const P = {
  closedInv: join(WORK, 'closed.yml'),
  nxInv: join(WORK, 'nxdomain.yml'),
  missingInv: join(WORK, 'no-such-inventory.yml'),
  missingRunbook: join(WORK, 'no-such-runbook.yml'),
  knownHosts: join(WORK, 'known_hosts'),
  /** Broken runbooks in ./runbooks/ of this directory (for list and show). */
  brokenProject: join(WORK, 'broken-project'),
  /** State dirs: one with a run recorded against the closed port, one with that journal damaged in the middle, one whose run died after its plan. */
  recorded: join(WORK, 'state-recorded'),
  corrupt: join(WORK, 'state-corrupt'),
  dead: join(WORK, 'state-dead'),
  /** Never created by any case (every refused command must leave it absent). */
  fresh: join(WORK, 'state-fresh'),
  /** A file where a state directory should be. */
  notADir: join(WORK, 'state-is-a-file'),
};
let recordedId = '';

/** Connection flags for every command that may connect: no ~/.ssh/config, no known host, fast but not flaky. */
const SSH = ['--ssh-config', 'none', '--known-hosts', P.knownHosts, '--connect-timeout', '3s'];

before(async () => {
  port = await closedPort();
  mkdirSync(HOME, { recursive: true });
  writeFileSync(P.knownHosts, '');
  writeFileSync(
    P.closedInv,
    `all:\n  hosts:\n    node1:\n      ansible_host: 127.0.0.1\n      ansible_port: ${port}\n      ansible_user: root\n`,
  );
  writeFileSync(P.nxInv, 'all:\n  hosts:\n    node1:\n      ansible_host: nonexistent.invalid\n      ansible_user: root\n');
  mkdirSync(join(P.brokenProject, 'runbooks'), { recursive: true });
  writeFileSync(join(P.brokenProject, 'runbooks/broken.yml'), 'name: broken\nsteps: [\n');
  writeFileSync(P.notADir, 'not a directory\n');

  // A real run against the closed port: its journal (with the plan) is what resume, rollback, show-run read.
  const r = await runbook(['apply', 'hello', '-i', P.closedInv, '--state-dir', P.recorded, ...SSH]);
  assert.equal(r.code, 2, `setup: apply on an unreachable host exits 2\n${r.stderr}`);
  const files = readdirSync(join(P.recorded, 'runs'));
  assert.equal(files.length, 1, 'setup: one journal');
  recordedId = files[0].replace(/\.ndjson$/, '');
  const lines = readFileSync(join(P.recorded, 'runs', files[0]), 'utf8')
    .trimEnd()
    .split('\n');
  assert.ok(lines.length >= 4, 'setup: the journal has open, start, host and end records');

  // Corrupt: a garbage line in the middle (a torn last line would be tolerated; this is not).
  mkdirSync(join(P.corrupt, 'runs'), { recursive: true });
  writeFileSync(
    join(P.corrupt, 'runs', files[0]),
    `${[...lines.slice(0, 2), '{"type":"step-end","host":garbage!!', ...lines.slice(2)].join('\n')}\n`,
  );
  // Dead: the controller died right after recording its plan (journal-open, run-start): node1 never started.
  mkdirSync(join(P.dead, 'runs'), { recursive: true });
  writeFileSync(join(P.dead, 'runs', files[0]), `${lines.slice(0, 2).join('\n')}\n`);
});

// ------------------------------------------------------------------ the cases

interface Case {
  /** What the user did wrong. */
  input: string;
  args: () => string[];
  cwd?: () => string;
  code: number;
  /** stderr must match (a `runbook: ` line saying what happened); for `lines: 'any'`, stdout and stderr together (plain progress goes to stdout). */
  says?: () => RegExp;
  /** stdout must match (commands that report on stdout: plan, runs, inventory). */
  stdout?: () => RegExp;
  /**
   * How many lines stderr may have: 1 (the default for a refused command: one `runbook: ` line),
   * 2 (the product prints a hint line after it), or 'any' (the command ran and printed its progress).
   */
  lines?: 1 | 2 | 'any';
  /** Directories whose content must be exactly as before (nothing created, removed or changed). */
  unchanged?: () => string[];
  /** Marks a case that fails today because of a file this change does not own: the reason (file:line, fix). */
  failsToday?: string;
}

const unreachableMsg = /connection refused on port \d+\. Check that sshd runs on 127\.0\.0\.1/;
/** A resolver may say "does not resolve" at once, or (no DNS at all) not answer before --connect-timeout. */
const nxMsg = /the name nonexistent\.invalid (does not resolve|could not be resolved now)|no SSH handshake within 3000 ms/;
const notFoundRunbook = /runbook ".*no-such-runbook\.yml" not found; looked at: .*\. Run `runbook list`/;
const notFoundInventory = /no-such-inventory\.yml: inventory source not found .*; pass an existing file or directory with -i/;
const noJournal = (dir: string) => new RegExp(`no run journal at ${dir}/runs/${RUN_ID}\\.ndjson; see \`runbook runs\``);
const notARunId = /"\.\.\/\.\.\/etc\/passwd" is not a run id; run ids look like/;
const corruptMsg = () =>
  new RegExp(`run journal ${P.corrupt}/runs/${recordedId}\\.ndjson line 3 is not valid JSON .*; the file was damaged or edited`);

const CASES: Record<string, Case[]> = {
  validate: [
    { input: 'missing runbook', args: () => ['validate', P.missingRunbook], code: 1, says: () => notFoundRunbook },
    { input: 'missing inventory', args: () => ['validate', 'hello', '-i', P.missingInv], code: 1, says: () => notFoundInventory },
    { input: 'unreachable host (not contacted)', args: () => ['validate', 'hello', '-i', P.closedInv], code: 0, lines: 'any' },
  ],
  plan: [
    { input: 'missing runbook', args: () => ['plan', P.missingRunbook, '-i', P.closedInv], code: 1, says: () => notFoundRunbook },
    { input: 'missing inventory', args: () => ['plan', 'hello', '-i', P.missingInv], code: 1, says: () => notFoundInventory },
    {
      input: 'unreachable host (not contacted without --probe)',
      args: () => ['plan', 'hello', '-i', P.closedInv, ...SSH],
      code: 0,
      stdout: () => /step 1: Write greeting/,
      lines: 'any',
    },
  ],
  'plan --probe': [
    {
      input: 'missing runbook',
      args: () => ['plan', P.missingRunbook, '-i', P.closedInv, '--probe', ...SSH],
      code: 1,
      says: () => notFoundRunbook,
    },
    {
      input: 'missing inventory',
      args: () => ['plan', 'hello', '-i', P.missingInv, '--probe', ...SSH],
      code: 1,
      says: () => notFoundInventory,
    },
    {
      input: 'host on a closed port',
      args: () => ['plan', 'hello', '-i', P.closedInv, '--probe', '--state-dir', P.fresh, ...SSH],
      code: 2,
      stdout: () => new RegExp(`node1 .*BLOCKED: cannot connect to node1 \\(root@127\\.0\\.0\\.1:\\d+\\): ${unreachableMsg.source}`),
      lines: 'any',
    },
    {
      input: 'host name that does not resolve',
      args: () => ['plan', 'hello', '-i', P.nxInv, '--probe', '--state-dir', P.fresh, ...SSH],
      code: 2,
      stdout: () => /node1 .*BLOCKED: cannot connect to node1/,
      lines: 'any',
    },
  ],
  apply: [
    {
      input: 'missing runbook',
      args: () => ['apply', P.missingRunbook, '-i', P.closedInv, '--state-dir', P.fresh, ...SSH],
      code: 1,
      says: () => notFoundRunbook,
    },
    {
      input: 'missing inventory',
      args: () => ['apply', 'hello', '-i', P.missingInv, '--state-dir', P.fresh, ...SSH],
      code: 1,
      says: () => notFoundInventory,
    },
    {
      input: 'host on a closed port (the run is journaled: exit 2, host unreachable)',
      args: () => ['apply', 'hello', '-i', P.closedInv, '--state-dir', join(WORK, 'state-apply-closed'), ...SSH],
      code: 2,
      says: () => new RegExp(`node1 unreachable .*${unreachableMsg.source}`),
      lines: 'any',
    },
    {
      input: 'host name that does not resolve (exit 2, host unreachable)',
      args: () => ['apply', 'hello', '-i', P.nxInv, '--state-dir', join(WORK, 'state-apply-nx'), ...SSH],
      code: 2,
      says: () => new RegExp(`node1 unreachable .*(${nxMsg.source})`),
      lines: 'any',
    },
  ],
  list: [
    {
      input: 'a broken runbook in ./runbooks (listed, not fatal)',
      args: () => ['list'],
      cwd: () => P.brokenProject,
      code: 0,
      stdout: () => /^broken\s+no\s+\.\/runbooks/m,
      lines: 'any',
    },
  ],
  show: [
    { input: 'missing runbook', args: () => ['show', P.missingRunbook], code: 1, says: () => notFoundRunbook },
    {
      input: 'broken runbook (YAML syntax)',
      args: () => ['show', 'broken'],
      cwd: () => P.brokenProject,
      code: 1,
      says: () => /runbooks\/broken\.yml:\d+:\d+: YAML syntax error/,
    },
  ],
  inventory: [
    { input: 'missing inventory', args: () => ['inventory', '-i', P.missingInv, '--list'], code: 1, says: () => notFoundInventory },
    {
      input: 'unknown --host',
      args: () => ['inventory', '-i', P.closedInv, '--host', 'nodeX'],
      code: 1,
      says: () => /host 'nodeX' is not in the inventory/,
    },
    {
      input: 'unreachable host (not contacted)',
      args: () => ['inventory', '-i', P.closedInv, '--list'],
      code: 0,
      stdout: () => /"node1"/,
      lines: 'any',
    },
  ],
  runs: [
    {
      input: 'corrupt journal (listed as corrupt)',
      args: () => ['runs', '--state-dir', P.corrupt],
      code: 0,
      stdout: () => new RegExp(`^${recordedId}\\s.*corrupt`, 'm'),
      lines: 'any',
      unchanged: () => [P.corrupt],
    },
    {
      input: 'state dir that is a file',
      args: () => ['runs', '--state-dir', P.notADir],
      code: 1,
      says: () => /cannot list runs in .*state-is-a-file\/runs/,
    },
    {
      input: 'state dir that does not exist',
      args: () => ['runs', '--state-dir', P.fresh],
      code: 0,
      says: () => /No runs in .*state-fresh\/runs/,
      lines: 'any',
      unchanged: () => [P.fresh],
    },
  ],
  'show-run': [
    {
      input: 'run id not recorded',
      args: () => ['show-run', RUN_ID, '--state-dir', P.recorded],
      code: 1,
      says: () => noJournal(P.recorded),
      unchanged: () => [P.recorded],
    },
    { input: 'malformed run id', args: () => ['show-run', MALFORMED_ID, '--state-dir', P.recorded], code: 1, says: () => notARunId },
    {
      input: 'corrupt journal',
      args: () => ['show-run', recordedId, '--state-dir', P.corrupt],
      code: 1,
      says: () => corruptMsg(),
      unchanged: () => [P.corrupt],
    },
  ],
  resume: [
    {
      input: 'run id not recorded',
      args: () => ['resume', RUN_ID, '--state-dir', P.fresh, ...SSH],
      code: 1,
      says: () => noJournal(P.fresh),
    },
    { input: 'malformed run id', args: () => ['resume', MALFORMED_ID, '--state-dir', P.recorded, ...SSH], code: 1, says: () => notARunId },
    {
      input: 'corrupt journal',
      args: () => ['resume', recordedId, '--state-dir', P.corrupt, ...SSH],
      code: 1,
      says: () => corruptMsg(),
      unchanged: () => [P.corrupt],
    },
    {
      input: 'dead run whose host is on a closed port (exit 2, host unreachable)',
      args: () => ['resume', recordedId, '--state-dir', P.dead, ...SSH],
      code: 2,
      says: () => new RegExp(`node1 unreachable .*${unreachableMsg.source}`),
      lines: 'any',
    },
  ],
  rollback: [
    {
      input: 'run id not recorded',
      args: () => ['rollback', RUN_ID, '--state-dir', P.fresh, '--yes', ...SSH],
      code: 1,
      says: () => noJournal(P.fresh),
    },
    {
      input: 'malformed run id',
      args: () => ['rollback', MALFORMED_ID, '--state-dir', P.recorded, '--yes', ...SSH],
      code: 1,
      says: () => notARunId,
    },
    {
      input: 'corrupt journal',
      args: () => ['rollback', recordedId, '--state-dir', P.corrupt, '--yes', ...SSH],
      code: 1,
      says: () => corruptMsg(),
      unchanged: () => [P.corrupt],
    },
    {
      input: 'run whose host is on a closed port (nothing to roll back: exit 0, the lock check warned)',
      args: () => ['rollback', recordedId, '--state-dir', P.recorded, '--yes', ...SSH],
      code: 0,
      says: () =>
        new RegExp(`warning: node1: could not check for a lock left by run \\S+: cannot connect to node1 .*${unreachableMsg.source}`),
      lines: 'any',
    },
  ],
  unlock: [
    {
      input: 'host on a closed port',
      args: () => ['unlock', 'node1', '-i', P.closedInv, '--run', RUN_ID, '--state-dir', P.fresh, ...SSH],
      code: 2,
      says: () => new RegExp(`^runbook: cannot connect to node1 \\(root@127\\.0\\.0\\.1:${port}\\): ${unreachableMsg.source}`),
    },
    {
      input: 'host name that does not resolve',
      args: () => ['unlock', 'node1', '-i', P.nxInv, '--run', RUN_ID, '--state-dir', P.fresh, ...SSH],
      code: 2,
      says: () => new RegExp(`^runbook: cannot connect to node1 \\(root@nonexistent\\.invalid:22\\): (${nxMsg.source})`),
    },
    {
      input: 'host on a closed port, run with a corrupt journal (journal untouched)',
      args: () => ['unlock', 'node1', '-i', P.closedInv, '--run', recordedId, '--state-dir', P.corrupt, ...SSH],
      code: 2,
      says: () => unreachableMsg,
      unchanged: () => [P.corrupt],
    },
    {
      input: 'host on a closed port, recorded run (journal untouched)',
      args: () => ['unlock', 'node1', '-i', P.closedInv, '--run', recordedId, '--state-dir', P.recorded, ...SSH],
      code: 2,
      says: () => unreachableMsg,
      unchanged: () => [P.recorded],
    },
    {
      input: 'missing inventory',
      args: () => ['unlock', 'node1', '-i', P.missingInv, '--run', RUN_ID, '--state-dir', P.fresh, ...SSH],
      code: 1,
      says: () => notFoundInventory,
    },
    {
      input: 'no inventory',
      args: () => ['unlock', 'node1', '--run', RUN_ID, '--state-dir', P.fresh, ...SSH],
      code: 1,
      says: () => /no inventory given; pass -i FILE so runbook knows how to reach node1/,
    },
    {
      input: 'host not in the inventory',
      args: () => ['unlock', 'nodeX', '-i', P.closedInv, '--run', RUN_ID, '--state-dir', P.fresh, ...SSH],
      code: 1,
      says: () => /host nodeX is not in .*closed\.yml; did you mean node1\?/,
    },
    {
      input: 'malformed run id',
      args: () => ['unlock', 'node1', '-i', P.closedInv, '--run', MALFORMED_ID, '--state-dir', P.fresh, ...SSH],
      code: 1,
      says: () => notARunId,
    },
    {
      input: 'bad --connect-timeout (refused before anything is created)',
      args: () => ['unlock', 'node1', '-i', P.closedInv, '--run', RUN_ID, '--state-dir', P.fresh, '--connect-timeout', 'soon'],
      code: 1,
      says: () => /--connect-timeout: "soon" is not a duration/,
    },
    {
      input: 'bad --connect-concurrency (refused before anything is created)',
      args: () => ['unlock', 'node1', '-i', P.closedInv, '--run', RUN_ID, '--state-dir', P.fresh, '--connect-concurrency', '0'],
      code: 1,
      says: () => /--connect-concurrency: --connect-concurrency must be a whole number >= 1 \(got 0\)/,
    },
    {
      input: 'missing --run (usage, with the help hint)',
      args: () => ['unlock', 'node1', '-i', P.closedInv, '--state-dir', P.fresh],
      code: 1,
      says: () => /^runbook: Missing required argument: run\nRun "runbook --help" for usage\.\n$/,
      lines: 2,
    },
  ],
};

for (const [command, cases] of Object.entries(CASES)) {
  describe(command, () => {
    for (const c of cases) {
      test(c.input, { todo: c.failsToday }, async () => {
        const watched = [P.fresh, DEFAULT_STATE, ...(c.unchanged?.() ?? [])];
        const before = watched.map(snapshot);
        const args = c.args();
        const r = await runbook(args, { cwd: c.cwd?.() });
        const what = `runbook ${args.join(' ')}\n--- exit ${r.code}\n--- stderr:\n${r.stderr}--- stdout:\n${r.stdout.slice(0, 2000)}`;
        assert.equal(r.code, c.code, `exit code\n${what}`);
        assert.doesNotMatch(r.stderr, STACK, `no stack trace on stderr\n${what}`);
        assert.doesNotMatch(r.stdout, STACK, `no stack trace on stdout\n${what}`);
        const lines = c.lines ?? 1;
        if (lines !== 'any') {
          const got = r.stderr.trimEnd().split('\n');
          assert.ok(got.length <= lines, `stderr has at most ${lines} line(s)\n${what}`);
          assert.match(got[0], /^runbook: \S/, `stderr starts with "runbook: "\n${what}`);
          assert.equal(r.stdout, '', `nothing on stdout\n${what}`);
        }
        if (c.says)
          assert.match(lines === 'any' ? `${r.stderr}\n${r.stdout}` : r.stderr, c.says(), `the message says what happened\n${what}`);
        if (c.stdout) assert.match(r.stdout, c.stdout(), `stdout\n${what}`);
        assert.deepEqual(watched.map(snapshot), before, `nothing created, removed or changed in ${watched.join(', ')}\n${what}`);
      });
    }
  });
}

// ------------------------------------------------------------------ the mapping itself

describe('errorReport (src/cli/main.ts)', () => {
  const env = {} as NodeJS.ProcessEnv;
  test('coded errors: one `runbook:` line and the documented exit code', () => {
    const cases: Array<[unknown, number]> = [
      [new RunbookError('E_USAGE', 'no inventory given; pass -i FILE.'), 1],
      [new ValidationError([{ file: 'x.yml', line: 3, message: 'steps is required' }]), 1],
      [new RunbookError('E_LOCK', 'cannot remove the run lock on h1: exit 1; check the lock directory'), 2],
      [new TransportError('E_UNREACHABLE', 'h1', 'cannot connect to h1: connection refused on port 22. Check sshd.'), 2],
      [new TransportError('E_HOSTKEY_UNKNOWN', 'h1', 'the host key of h1 is not in known_hosts.'), 2],
      [new TransportError('E_CONN_LOST', 'h1', 'lost the connection to h1 while unlocking it.'), 2],
      [new RunbookError('E_JOURNAL', 'cannot write the run journal /x: disk full'), 4],
      [new RunbookError('E_INTERRUPTED', 'interrupted'), 130],
    ];
    for (const [err, code] of cases) {
      const r = errorReport(err, env);
      assert.equal(r.exitCode, code, (err as Error).message);
      assert.equal(r.text, `runbook: ${(err as Error).message}\n`);
    }
  });
  test('anything else is a bug: one `internal error` line, exit 70, the stack only with RUNBOOK_DEBUG=1', () => {
    const boom = new TypeError("Cannot read properties of undefined (reading 'x')");
    const r = errorReport(boom, env);
    assert.equal(r.exitCode, 70);
    assert.equal(
      r.text,
      "runbook: internal error: Cannot read properties of undefined (reading 'x') (this is a bug; RUNBOOK_DEBUG=1 shows the stack)\n",
    );
    const sys = Object.assign(new Error('ENOENT: no such file or directory, open\n/x'), { code: 'ENOENT' }); // a Node error's code is not ours
    assert.equal(errorReport(sys, env).exitCode, 70);
    assert.equal(errorReport(sys, env).text.split('\n').length, 2, 'one line, newline-terminated');
    assert.equal(errorReport('a string', env).text, 'runbook: internal error: a string (this is a bug; RUNBOOK_DEBUG=1 shows the stack)\n');
    assert.equal(errorReport(new RunbookError('E_INTERNAL', 'bad environment variable name x-y'), env).exitCode, 70);

    const debug = errorReport(new Error('outer', { cause: new Error('inner') }), { RUNBOOK_DEBUG: '1' });
    assert.match(debug.text, /^runbook: internal error: outer \(this is a bug; RUNBOOK_DEBUG=1 shows the stack\)\nError: outer\n\s+at /);
    assert.match(debug.text, /\ncaused by: Error: inner\n\s+at /);
    assert.doesNotMatch(errorReport(new Error('outer'), env).text, STACK);
  });
});

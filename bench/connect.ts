/**
 * Connect admission (issue 17, item 1): N sshd hosts of the test harness, one trivial step each, forks N
 * (every host connects at once), for each --connect-concurrency value: wall time, exit code and how many
 * hosts ended `unreachable` (with the first such message). A host is unreachable only when it really did
 * not answer, so with healthy hosts that count must be 0 for every value; the default is the fastest.
 *
 *   npm run build && node --import tsx bench/connect.ts [--hosts 200] [--values 8,16,32,64,200] [--runs 2]
 *
 * A failing run is reported in the table; the bench never dies with a stack trace.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type SshFleet, startSshHosts } from '../test/harness/sshd.js';
import { bin, hostStatuses, lockPath, opt, run, runMain, workDir } from './lib.js';

const HOSTS = Number(opt('hosts', '200'));
const VALUES = opt('values', '8,16,32,64,200').split(',').map(Number);
const RUNS = Number(opt('runs', '2'));

interface Outcome {
  ms: number;
  code: number | null;
  unreachable: number;
  first?: string;
}

async function apply(args: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<Outcome> {
  const o = await run([process.execPath, bin, ...args], env, cwd);
  const s = hostStatuses(o.out);
  return { ms: o.ms, code: o.code, unreachable: s.counts.unreachable ?? 0, ...(s.first ? { first: s.first } : {}) };
}

async function main(): Promise<void> {
  const work = workDir('connect');
  let fleet: SshFleet | undefined;
  try {
    fleet = await startSshHosts(HOSTS, { prefix: 'rbcn' });
    const f = fleet;
    const inv = join(work, 'inv.yml');
    const lock = (h: string) => lockPath(f, work, h);
    writeFileSync(
      inv,
      f.inventoryYaml({ hostVars: Object.fromEntries(f.hosts.map((h) => [h.name, { runbook_lock_path: lock(h.name) }])) }),
    );
    const rb = join(work, 'one.yml');
    writeFileSync(rb, 'name: one\nsteps:\n  - name: noop\n    run: "true"\n');
    const env = { ...process.env, NO_COLOR: '1', HOME: work };
    const args = (c: number) => [
      'apply',
      rb,
      '-i',
      inv,
      '--json',
      '--known-hosts',
      f.knownHostsFile,
      '--state-dir',
      join(work, 'state'),
      '--forks',
      String(HOSTS),
      '--connect-concurrency',
      String(c),
    ];
    await apply(args(VALUES[0]), env, work); // warm-up
    const rows: string[] = [];
    for (const c of VALUES) {
      const os: Outcome[] = [];
      for (let r = 0; r < RUNS; r++) os.push(await apply(args(c), env, work));
      const med = [...os.map((o) => o.ms)].sort((a, b) => a - b)[os.length >> 1];
      const bad = os.find((o) => o.unreachable || o.code !== 0);
      const row = {
        hosts: HOSTS,
        connect_concurrency: c,
        wall_s: Number((med / 1000).toFixed(2)),
        unreachable: os.map((o) => o.unreachable),
        exits: os.map((o) => o.code),
        ...(bad?.first ? { first_unreachable: bad.first } : {}),
      };
      console.log(JSON.stringify(row));
      rows.push(`${c}\t${row.wall_s}\t${row.unreachable.join(',')}\t${row.exits.join(',')}`);
    }
    console.log(`\nconcurrency\twall_s\tunreachable\texit\n${rows.join('\n')}`);
  } finally {
    await fleet?.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

runMain(main, { hosts: HOSTS });

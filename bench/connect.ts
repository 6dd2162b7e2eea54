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
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { type SshFleet, startSshHosts } from '../test/harness/sshd.js';

const root = new URL('..', import.meta.url).pathname;
const opt = (name: string, def: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : def;
};
const HOSTS = Number(opt('hosts', '200'));
const VALUES = opt('values', '8,16,32,64,200').split(',').map(Number);
const RUNS = Number(opt('runs', '2'));

interface Outcome {
  ms: number;
  code: number | null;
  unreachable: number;
  first?: string;
}

function apply(args: string[], env: NodeJS.ProcessEnv): Promise<Outcome> {
  return new Promise((res) => {
    const t0 = performance.now();
    let out = '';
    const p = spawn(process.execPath, [join(root, 'bin/runbook'), ...args], { env, stdio: ['ignore', 'pipe', 'ignore'] });
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.on('close', (code) => {
      const ends = out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { type: string; status?: string; message?: string })
        .filter((e) => e.type === 'host-end' && e.status === 'unreachable');
      res({ ms: performance.now() - t0, code, unreachable: ends.length, ...(ends[0] ? { first: ends[0].message } : {}) });
    });
  });
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'rb-bench-connect-'));
  let fleet: SshFleet | undefined;
  try {
    fleet = await startSshHosts(HOSTS, { prefix: 'rbcn' });
    const f = fleet;
    const inv = join(work, 'inv.yml');
    const lock = (h: string) => (f.mode === 'netns' ? '/run/runbook/lock' : join(work, `lock-${h}`));
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
    await apply(args(VALUES[0]), env); // warm-up
    const rows: string[] = [];
    for (const c of VALUES) {
      const os: Outcome[] = [];
      for (let r = 0; r < RUNS; r++) os.push(await apply(args(c), env));
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

main().catch((e: unknown) => {
  console.log(JSON.stringify({ hosts: HOSTS, error: e instanceof Error ? e.message.split('\n')[0] : String(e) }));
  process.exitCode = 1;
});

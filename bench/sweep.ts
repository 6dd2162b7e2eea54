/**
 * Fleet sweep (issue 13): N loopback sshd hosts, K of them broken, the containerd-recover shape: a
 * read-only diagnosis in preflight, 9 steps of `sleep 0.2` for broken hosts only, serial 1, budget 0.
 * Side by side in one run, per N and K (median of --runs):
 *   sweep          format 2: apply_if after the diagnosis (healthy hosts leave, the batches hold only broken ones)
 *   sweep-v1       the same as a format-1 runbook: 9 steps gated by `when: printf ... | grep -q '^broken'`
 *   diagnosis      the sweep with no host broken: the diagnosis over every host at once
 *   one-broken     the sweep on one broken host alone (--limit)
 *   ansible        ansible-playbook, serial: 1, `when:` on the registered result (only at --ansible-hosts)
 * Target: sweep <= 1.2 x (diagnosis + K x one-broken), and no worse from N = 100 to 200.
 *
 *   npm run build && node --import tsx bench/sweep.ts [--hosts 100,200] [--broken 1,2] [--runs 3] [--ansible-hosts 20]
 *
 * A contender that fails is reported with its first error line; the bench never dies with a stack trace.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type SshFleet, startSshHosts } from '../test/harness/sshd.js';
import { ANSIBLE_TUNED, ansibleBaseEnv, killControlMasters } from './ansible.js';
import { bin, lockPath, median, numbers as list, opt, type Outcome as Sample, run, runMain, workDir } from './lib.js';

const HOSTS = list(opt('hosts', '100,200'));
const BROKEN = list(opt('broken', '1,2'));
const RUNS = Number(opt('runs', '3'));
const ANSIBLE_HOSTS = Number(opt('ansible-hosts', '20'));
/** The harness's mode (auto: a network namespace per host as root, else loopback processes). */
const MODE = (process.env.RUNBOOK_TEST_SSH_MODE ?? 'auto') as 'auto' | 'local' | 'netns';

/** The shape: a read-only diagnosis, then 9 steps of sleep 0.2 that only broken hosts need; `gate` decides how. */
const shape = (name: string, applyIf: string, gate: string) => `name: ${name}
serial: 1
max_failed: 0
preflight:
  - name: Diagnose
    register: diag
    run: echo "{{ state }}"
${applyIf}steps:
${Array.from({ length: 9 }, (_, i) => `  - name: step ${i + 1}\n${gate}    run: sleep 0.2`).join('\n')}
`;
const SWEEP = shape('sweep', "apply_if: diag.stdout.startsWith('broken')\n", '');
const SWEEP_V1 = shape('sweep-v1', '', `    when: printf '%s\\n' "{{ diag.stdout }}" | grep -q '^broken'\n`);
const PLAYBOOK = `- hosts: all
  gather_facts: false
  serial: 1
  max_fail_percentage: 0
  tasks:
    - name: Diagnose
      ansible.builtin.command: echo "{{ state }}"
      register: diag
      changed_when: false
${Array.from({ length: 9 }, (_, i) => `    - name: step ${i + 1}\n      ansible.builtin.command: sleep 0.2\n      when: diag.stdout.startswith('broken')`).join('\n')}
`;

async function fleetOf(n: number): Promise<SshFleet> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startSshHosts(n, { mode: MODE, prefix: 'rbsw' });
    } catch (e) {
      if (attempt >= 3) throw e;
    }
  }
}

async function main(): Promise<void> {
  const work = workDir('sweep');
  const env = { ...process.env, NO_COLOR: '1', HOME: work };
  const haveAnsible = spawnSync('ansible-playbook', ['--version'], { stdio: 'ignore' }).status === 0;
  const rows: Array<Record<string, unknown>> = [];
  let fleet: SshFleet | undefined;
  const stop = async () => {
    const f = fleet;
    fleet = undefined;
    await f?.stop().catch(() => undefined);
  };
  process.on('SIGINT', () => void stop().then(() => process.exit(130)));
  try {
    for (const n of [...new Set([...HOSTS, ...(haveAnsible ? [ANSIBLE_HOSTS] : [])])].sort((a, b) => a - b)) {
      process.stderr.write(`sweep: ${n} sshd hosts...\n`);
      fleet = await fleetOf(n);
      process.stderr.write(`sweep: fleet up (${fleet.mode} mode)\n`);
      const dir = join(work, `n${n}`);
      mkdirSync(dir);
      for (const [f, text] of [
        ['sweep.yml', SWEEP],
        ['sweep-v1.yml', SWEEP_V1],
        ['playbook.yml', PLAYBOOK],
      ])
        writeFileSync(join(dir, f), text);
      const names = fleet.hosts.map((h) => h.name);
      const inventory = (k: number) => {
        const file = join(dir, `inv-${k}.yml`);
        const hostVars = Object.fromEntries(
          names.map((h, i) => [
            h,
            {
              state: i < k ? 'broken: meta.db' : 'healthy',
              runbook_lock_path: lockPath(fleet!, dir, h),
            },
          ]),
        );
        writeFileSync(file, fleet!.inventoryYaml({ hostVars }));
        return file;
      };
      const rbArgs = (file: string, inv: string, extra: string[] = []) => [
        process.execPath,
        bin,
        'apply',
        join(dir, file),
        '-i',
        inv,
        '--known-hosts',
        fleet!.knownHostsFile,
        '--state-dir',
        join(dir, 'state'),
        '--forks',
        '50',
        ...extra,
      ];
      const ansibleRun = async (inv: string): Promise<Sample> => {
        const cp = mkdtempSync(join(work, 'cp-'));
        try {
          return await run(
            ['ansible-playbook', '-i', inv, '-f', '50', join(dir, 'playbook.yml')],
            {
              ...env,
              ...ansibleBaseEnv(fleet!.knownHostsFile, cp),
              ...ANSIBLE_TUNED,
            },
            dir,
          );
        } finally {
          killControlMasters(cp);
          rmSync(cp, { recursive: true, force: true });
        }
      };
      for (const k of BROKEN) {
        const inv = inventory(k);
        const contenders: Array<[string, () => Promise<Sample>]> = [];
        if (HOSTS.includes(n)) {
          const healthy = inventory(0);
          contenders.push(
            ['sweep', () => run(rbArgs('sweep.yml', inv), env, dir)],
            ['sweep-v1', () => run(rbArgs('sweep-v1.yml', inv), env, dir)],
            ['diagnosis', () => run(rbArgs('sweep.yml', healthy), env, dir)],
            ['one-broken', () => run(rbArgs('sweep.yml', inv, ['--limit', names[0]]), env, dir)],
          );
        }
        if (haveAnsible && n === ANSIBLE_HOSTS) contenders.push(['ansible', () => ansibleRun(inv)]);
        const samples = new Map<string, Sample[]>(contenders.map(([c]) => [c, []]));
        for (const [, f] of contenders) await f(); // warm-up round (page cache, known-hosts cache)
        for (let r = 0; r < RUNS; r++) {
          for (let i = 0; i < contenders.length; i++) {
            const [c, f] = contenders[(i + r) % contenders.length]; // rotate the order per round
            samples.get(c)!.push(await f());
          }
        }
        const row: Record<string, unknown> = { hosts: n, broken: k };
        for (const [c, ss] of samples) {
          const ok = ss.filter((s) => !s.error).map((s) => s.ms);
          row[c] = ok.length === ss.length ? Number((median(ok) / 1000).toFixed(2)) : `failed: ${ss.find((s) => s.error)?.error}`;
        }
        if (typeof row.sweep === 'number' && typeof row.diagnosis === 'number' && typeof row['one-broken'] === 'number') {
          const needed = row.diagnosis + k * row['one-broken'];
          row.needed = Number(needed.toFixed(2));
          row.ratio = Number((row.sweep / needed).toFixed(2));
          if (typeof row['sweep-v1'] === 'number') row.ratio_v1 = Number((row['sweep-v1'] / needed).toFixed(2));
        }
        rows.push(row);
        console.log(JSON.stringify(row));
      }
      await stop();
    }
  } finally {
    await stop();
    rmSync(work, { recursive: true, force: true });
  }
  const cols = ['hosts', 'broken', 'sweep', 'diagnosis', 'one-broken', 'needed', 'ratio', 'sweep-v1', 'ratio_v1', 'ansible'];
  console.log(`\n${cols.join('\t')}`);
  for (const r of rows) console.log(cols.map((c) => (r[c] === undefined ? '-' : String(r[c]))).join('\t'));
  console.log('(seconds, median; ratio = sweep / (diagnosis + broken x one-broken); target <= 1.2)');
}

runMain(main);

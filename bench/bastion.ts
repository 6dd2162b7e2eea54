/**
 * Through one stock bastion (issue 17, item 4): N loopback sshd targets reached only through one more sshd, the
 * bastion, left at sshd's defaults: MaxStartups 10:30:100 (past 10 unauthenticated connections it drops new
 * ones at random) and MaxSessions 10 (ProxyJump's direct-tcpip channels are not sessions: it does not count
 * them, so no bastion operator needs to raise it for this). Each target has
 * `ansible_ssh_common_args: -o ProxyJump=root@BASTION`, and 10 `echo` steps. Side by side in one run:
 *   runbook   apply --forks N: one connection to the bastion for the whole run, a channel per target
 *   ansible   ansible-playbook -f 50, pipelining, ControlPersist, strategy free; ProxyJump from the same
 *             inventory (its jump ssh reads the host keys and key from an ssh config file given with -F)
 * For each: wall time, hosts that did not end changed (and the first such error), and the connections the
 * bastion's own log shows from the controller.
 *
 *   npm run build && node --import tsx bench/bastion.ts [--hosts 200] [--runs 3] [--ansible-runs 1] [--ansible-forks 50]
 *
 * A contender that fails is reported with its first error line; the bench never dies with a stack trace.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type SshFleet, startSshHosts } from '../test/harness/sshd.js';
import { ANSIBLE_TUNED, ansibleBaseEnv, killControlMasters } from './ansible.js';
import { bin, hostStatuses, lockPath, median, opt, type Outcome, run, runMain, workDir } from './lib.js';

const HOSTS = Number(opt('hosts', '200'));
const RUNS = Number(opt('runs', '3'));
const ANSIBLE_RUNS = Number(opt('ansible-runs', '1'));
const ANSIBLE_FORKS = Number(opt('ansible-forks', '50'));
/** Ansible is stopped after this many seconds (its failures and finished hosts until then are reported). */
const ANSIBLE_TIMEOUT_S = Number(opt('ansible-timeout', '1800'));
const STEPS = 10;

const RUNBOOK = `name: bastion\ndescription: trivial steps through a bastion\nsteps:\n${Array.from({ length: STEPS }, (_, i) => `  - name: step ${i + 1}\n    run: echo step ${i + 1}`).join('\n')}\n`;
const PLAYBOOK = `- hosts: all\n  gather_facts: false\n  tasks:\n${Array.from({ length: STEPS }, (_, i) => `    - name: step ${i + 1}\n      ansible.builtin.command: echo step ${i + 1}`).join('\n')}\n`;

interface Row {
  contender: string;
  runs: number;
  wall_s?: number;
  /** Per run: hosts that failed or were unreachable (runbook: every host that did not end changed). */
  not_changed: number[];
  /** Per run: hosts that finished every step. */
  finished: number[];
  bastion_connections: number[];
  first_error?: string;
  /** Set when a run was stopped at its timeout (--ansible-timeout). */
  stopped?: string;
}

/**
 * Hosts of an ansible run that were unreachable or failed, its first UNREACHABLE/FAILED line, and the hosts that
 * finished the last step. From PLAY RECAP when the run ended; from its `fatal: [host]` lines and the results under
 * each task banner (the default callback prints the banner again whenever a result is of another task, also with
 * strategy free) when it was stopped at its timeout.
 */
export function ansibleFailures(out: string, steps = STEPS): { bad: number; finished: number; first?: string } {
  const failed = new Set<string>();
  const finished = new Set<string>();
  let recap = 0;
  let task = '';
  for (const l of out.split('\n')) {
    const banner = /^TASK \[(.*)\]/.exec(l);
    if (banner) task = banner[1];
    const fatal = /^fatal: \[([^\]]+)\]: (UNREACHABLE|FAILED)!/.exec(l);
    if (fatal) failed.add(fatal[1]);
    const ok = /^(ok|changed): \[([^\]]+)\]/.exec(l);
    if (ok && task === `step ${steps}`) finished.add(ok[2]);
    const r = /^(\S+)\s+:\s+ok=\d+\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)/.exec(l);
    if (r) {
      recap++;
      if (r[2] !== '0' || r[3] !== '0') failed.add(r[1]);
    }
  }
  const first = out.split('\n').find((l) => /UNREACHABLE!|FAILED!/.test(l));
  return { bad: failed.size, finished: recap ? recap - failed.size : finished.size, first: first?.trim().slice(0, 240) };
}

async function main(): Promise<void> {
  const work = workDir('bastion');
  let fleet: SshFleet | undefined;
  try {
    // The bastion is one more host of the fleet, with sshd's stock limits (the harness sets neither).
    const names = ['bastion', ...Array.from({ length: HOSTS }, (_, i) => `t${i + 1}`)];
    fleet = await startSshHosts(names.length, { names, mode: 'local' });
    const f = fleet;
    const bastion = f.host('bastion');
    const targets = names.slice(1);
    const jump = `${bastion.user}@${bastion.address}:${bastion.port}`;
    const inv = join(work, 'inventory.yml');
    const hostVars = Object.fromEntries(
      targets.map((h) => [h, { ansible_ssh_common_args: `-o ProxyJump=${jump}`, runbook_lock_path: lockPath(f, work, h) }]),
    );
    writeFileSync(inv, f.inventoryYaml({ only: targets, hostVars }));
    writeFileSync(join(work, 'bastion.yml'), RUNBOOK);
    writeFileSync(join(work, 'playbook.yml'), PLAYBOOK);
    // Ansible's ProxyJump starts a second ssh for the jump, which gets -F but not the -o options.
    const sshCfg = join(work, 'ssh_config');
    writeFileSync(
      sshCfg,
      `Host *\n  UserKnownHostsFile ${f.knownHostsFile}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n  IdentityFile ${f.clientKeyFile}\n  IdentitiesOnly yes\n`,
    );
    const env = { ...process.env, NO_COLOR: '1', HOME: work };
    const rbArgv = [
      process.execPath,
      bin,
      'apply',
      join(work, 'bastion.yml'),
      '-i',
      inv,
      '--json',
      '--ssh-config',
      'none',
      '--known-hosts',
      f.knownHostsFile,
      '--state-dir',
      join(work, 'state'),
      '--forks',
      String(HOSTS),
    ];
    const haveAnsible = spawnSync('ansible-playbook', ['--version'], { stdio: 'ignore' }).status === 0;
    const ansible = async (): Promise<Outcome> => {
      const cp = mkdtempSync(join(work, 'cp-'));
      mkdirSync(join(cp, 'tmp'));
      try {
        return await run(
          ['ansible-playbook', '-i', inv, '-f', String(ANSIBLE_FORKS), join(work, 'playbook.yml')],
          {
            ...env,
            ...ansibleBaseEnv(f.knownHostsFile, cp),
            ...ANSIBLE_TUNED,
            ANSIBLE_SSH_ARGS: `-F ${sshCfg} ${ANSIBLE_TUNED.ANSIBLE_SSH_ARGS}`,
            ANSIBLE_STRATEGY: 'free',
          },
          work,
          ANSIBLE_TIMEOUT_S * 1000,
        );
      } finally {
        killControlMasters(cp);
        rmSync(cp, { recursive: true, force: true });
      }
    };
    const contenders: Array<{
      key: string;
      runs: number;
      go: () => Promise<Outcome>;
      bad: (o: Outcome) => { bad: number; finished: number; first?: string };
    }> = [
      {
        key: 'runbook',
        runs: RUNS,
        go: () => run(rbArgv, env, work),
        bad: (o) => {
          const s = hostStatuses(o.out);
          return { bad: HOSTS - (s.counts.changed ?? 0), finished: s.counts.changed ?? 0, first: s.first };
        },
      },
      ...(haveAnsible && ANSIBLE_RUNS > 0
        ? [{ key: `ansible (forks ${ANSIBLE_FORKS})`, runs: ANSIBLE_RUNS, go: ansible, bad: (o: Outcome) => ansibleFailures(o.out) }]
        : []),
    ];
    await run(rbArgv, env, work); // warm-up (page cache, known-hosts cache)
    const rows: Row[] = [];
    for (const c of contenders) {
      const row: Row = { contender: c.key, runs: c.runs, not_changed: [], finished: [], bastion_connections: [] };
      const ms: number[] = [];
      for (let r = 0; r < c.runs; r++) {
        const before = f.connectionCount(bastion);
        const o = await c.go();
        const b = c.bad(o);
        // The bastion logs each connection as it accepts it: all of them are in its log by the time the run ended.
        row.bastion_connections.push(f.connectionCount(bastion) - before);
        row.not_changed.push(b.bad);
        row.finished.push(b.finished);
        row.first_error ??= b.first ?? (o.timedOut ? undefined : o.error);
        if (o.timedOut) row.stopped ??= o.error;
        ms.push(o.ms);
      }
      row.wall_s = Number((median(ms) / 1000).toFixed(2));
      rows.push(row);
      console.log(JSON.stringify(row));
    }
    if (!haveAnsible) console.log(JSON.stringify({ contender: 'ansible', skipped: 'ansible-playbook not installed' }));
    console.log(`\n${HOSTS} targets x ${STEPS} steps behind one stock bastion (MaxStartups 10:30:100, MaxSessions 10)`);
    console.log('contender\truns\twall_s\tfailed\tfinished\tbastion connections\tfirst error\tstopped');
    for (const r of rows)
      console.log(
        [
          r.contender,
          r.runs,
          r.wall_s,
          r.not_changed.join(','),
          r.finished.join(','),
          r.bastion_connections.join(','),
          r.first_error ?? '-',
          r.stopped ?? '-',
        ].join('\t'),
      );
  } finally {
    await fleet?.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

runMain(main, { hosts: HOSTS });

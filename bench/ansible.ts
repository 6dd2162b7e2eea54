/**
 * What the benches give ansible-playbook, once: the same host key checking as runbook (strict, the fleet's
 * known_hosts, no prompt), a private ControlPath dir per run, and the ControlPersist masters killed by pid
 * afterwards (they daemonize, so nothing else ends them). Imported by bench/run.mjs (under tsx) and sweep.ts.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The environment every ansible run of a bench shares; `cp` is its own ControlPath dir. */
export function ansibleBaseEnv(knownHostsFile: string, cp: string): Record<string, string> {
  return {
    ANSIBLE_HOST_KEY_CHECKING: 'True',
    ANSIBLE_SSH_EXTRA_ARGS: `-o UserKnownHostsFile=${knownHostsFile} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes`,
    ANSIBLE_SSH_CONTROL_PATH_DIR: cp,
    ANSIBLE_PYTHON_INTERPRETER: 'auto_silent',
    ANSIBLE_NOCOLOR: '1',
    ANSIBLE_RETRY_FILES_ENABLED: 'False',
    ANSIBLE_LOCAL_TEMP: join(cp, 'tmp'),
  };
}

/** The tuned settings: pipelining and ControlPersist. */
export const ANSIBLE_TUNED = { ANSIBLE_PIPELINING: 'True', ANSIBLE_SSH_ARGS: '-C -o ControlMaster=auto -o ControlPersist=60s' };

/** ssh ControlPersist masters started for this control path dir: kill them by pid. */
export function killControlMasters(cpDir: string): void {
  for (const n of readdirSync('/proc')) {
    if (!/^\d+$/.test(n)) continue;
    try {
      const cmd = readFileSync(`/proc/${n}/cmdline`, 'latin1');
      if (cmd.startsWith('ssh\0') && cmd.includes(cpDir)) process.kill(Number(n), 'SIGTERM');
    } catch {
      /* gone */
    }
  }
}

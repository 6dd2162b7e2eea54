/**
 * Transport for `ansible_connection: local` hosts: runs on the controller.
 *
 * Same protocol as the SSH transport (shell.ts prepareRun): a fixed `sh -s` command line is spawned with zx, detached (its own
 * session and process group), the script + env are written to its stdin, opts.stdin reaches the script as its
 * stdin (after the wrapper, base64 through a pipe), nothing secret is in argv. The process inherits the
 * controller's environment minus RUNBOOK_* secrets (RUNBOOK_KEY_PASSPHRASE, *PASSWORD*, *SECRET*, *TOKEN*).
 * timeout/abort: SIGTERM to the whole process group (and the group sudo reported, with become), SIGKILL after
 * 2 s. become: sudo wrapping from shell.ts (password over stdin only if sudo prompts). put/get: file copy.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { chmod, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConnectionSpec } from '../inventory/types.js';
import { prepareRun, type PreparedRun } from './shell.js';
import { driveRun } from './run-driver.js';
import { TransportError, type ExecOptions, type ExecResult, type Transport } from './types.js';

const KILL_GRACE_MS = 2000;
let zx: Promise<typeof import('zx')> | undefined;

function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k === 'RUNBOOK_KEY_PASSPHRASE' || (k.startsWith('RUNBOOK_') && /PASS|SECRET|TOKEN/.test(k))) continue;
    env[k] = v;
  }
  return env;
}

/** Any live (non-zombie) process in the group? Reads /proc (Linux); elsewhere falls back to kill(-pgid, 0). */
function groupAlive(pgid: number): boolean {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    try {
      process.kill(-pgid, 0);
      return true;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'EPERM';
    }
  }
  for (const pid of pids) {
    try {
      const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      if (Number(f[2]) === pgid && f[0] !== 'Z' && f[0] !== 'X') return true;
    } catch {
      /* exited meanwhile */
    }
  }
  return false;
}

export class LocalTransport implements Transport {
  readonly host: string;
  readonly warnings: string[] = [];
  readonly gates = true;
  private closed = false;

  constructor(private readonly conn: ConnectionSpec) {
    this.host = conn.name;
  }

  async connect(): Promise<void> {
    this.closed = false;
  }
  async reconnect(): Promise<void> {
    this.closed = false;
  }
  async close(): Promise<void> {
    this.closed = true;
  }

  async exec(script: string, opts: ExecOptions = {}): Promise<ExecResult> {
    opts.gate?.catch(() => {
      /* awaited below; a rejection before that must not be unhandled */
    });
    if (this.closed) throw new TransportError('E_CONN_LOST', this.host, `transport for ${this.host} is closed; call connect() first`);
    const become = opts.become ?? this.conn.become ?? false;
    let prep: PreparedRun;
    try {
      prep = prepareRun({
        script,
        env: opts.env,
        stdin: opts.stdin,
        become,
        becomeUser: opts.becomeUser ?? this.conn.becomeUser,
        becomePassword: become ? this.conn.becomePassword : undefined,
      });
    } catch (e) {
      throw new TransportError('E_INVALID', this.host, (e as Error).message);
    }
    // prepareRun's command is already shell text (fixed markers only): zx must not quote it again.
    // zx is loaded on first use: a run with only SSH hosts never pays for it.
    zx ??= import('zx');
    const { $ } = await zx;
    const p = $({
      shell: '/bin/sh',
      prefix: '',
      postfix: '',
      quote: (s: string) => s,
      detached: true,
      quiet: true,
      verbose: false,
      nothrow: true,
      env: childEnv(),
      stdio: ['pipe', 'pipe', 'pipe'],
    })`${prep.command}`;
    const child = p.child!;
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve, reject) => {
      child.once('error', (e) =>
        reject(new TransportError('E_UNREACHABLE', this.host, `cannot start /bin/sh on the controller: ${e.message}`, { cause: e })),
      );
      child.once('close', (code, signal) => resolve({ code, signal }));
    });
    p.catch(() => undefined); // outcome comes from `exited`; zx must not report an unhandled rejection
    const killGroup = async (pgid: number | undefined): Promise<void> => {
      const groups = [...new Set([child.pid!, ...(pgid ? [pgid] : [])])];
      for (const g of groups) {
        try {
          process.kill(-g, 'SIGTERM');
        } catch {
          /* gone or not ours */
        }
      }
      const deadline = Date.now() + KILL_GRACE_MS;
      while (Date.now() < deadline && groups.some(groupAlive)) await sleep(50);
      for (const g of groups) {
        try {
          process.kill(-g, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    };
    if (opts.gate !== undefined) {
      // The shell waits on its stdin: nothing runs until the wrapper is written after the gate.
      try {
        await opts.gate;
      } catch (e) {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          /* not started or gone */
        }
        await exited.catch(() => undefined);
        throw e;
      }
    }
    return driveRun({ stdin: p.stdin, stdout: child.stdout!, stderr: child.stderr!, exited, killGroup }, prep, opts);
  }

  async put(content: string | Buffer, remotePath: string, opts: { mode?: number } = {}): Promise<void> {
    const tmp = join(dirname(remotePath), `.${basename(remotePath)}.rbtmp-${randomBytes(4).toString('hex')}`);
    try {
      await writeFile(tmp, content, { mode: opts.mode ?? 0o644 });
      if (opts.mode !== undefined) await chmod(tmp, opts.mode);
      await rename(tmp, remotePath);
    } catch (e) {
      throw new TransportError('E_FILE', this.host, `cannot write ${remotePath} on ${this.host}: ${(e as Error).message}`, { cause: e });
    }
  }

  async get(remotePath: string): Promise<Buffer> {
    try {
      return await readFile(remotePath);
    } catch (e) {
      throw new TransportError('E_FILE', this.host, `cannot read ${remotePath} on ${this.host}: ${(e as Error).message}`, { cause: e });
    }
  }
}

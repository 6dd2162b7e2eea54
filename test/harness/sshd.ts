/**
 * Test harness: a fleet of real OpenSSH servers.
 *
 *   import { startSshHosts } from './harness/sshd.js';
 *   const fleet = await startSshHosts(3);                 // hosts h1..h3, started in parallel (~0.5 s)
 *   console.log(`ssh fleet mode: ${fleet.mode}`);          // 'netns' (root) or 'local' (127.0.0.1 high ports)
 *   const h = fleet.hosts[0];                              // { name, address, port, user: 'root', pid, logFile, ... }
 *   await fleet.writeInventory('/tmp/x/inv.yml');          // ansible_host/port/user/ansible_ssh_private_key_file
 *   // connect with fleet.clientKeyFile and fleet.knownHostsFile (correct entries for every host)
 *   const r = await fleet.exec(h, 'pgrep -c sleep');       // check state on the host WITHOUT our transport
 *   fleet.connectionCount(h);                              // TCP connections sshd accepted (from its VERBOSE log)
 *   await fleet.kill(h); await fleet.restart(h);           // sshd and everything under it dies / comes back
 *   await fleet.stop();                                    // kills by PID, removes netns/bridge/dirs (also at exit)
 *
 * Mode 'netns' (root + iproute2 + util-linux; RUNBOOK_TEST_SSH_MODE=local forces the other mode):
 *   each host is a network namespace on a bridge made by ./netns.ts, then
 *   `unshare --mount --uts --pid --fork --mount-proc` with its own hostname (= host name), its own PID 1 (sshd),
 *   a private tmpfs on /run, and private directories bound on /var/lib, /tmp, /root, /home, /etc/sudoers.d and
 *   private copies of /etc/passwd, /etc/shadow, /etc/group, /etc/hosts. Address = the netns IP, port 22.
 *   host.root is the host's private tree: hostPath(host, '/var/lib/x') is where /var/lib/x lives outside.
 *   Users (in the host's view only): root (key), `rbuser` (TEST_PASSWORD; key or password; sudo WITH password,
 *   shell /bin/sh), `rbnopw` (TEST_PASSWORD; sudo NOPASSWD). linkDown/linkUp/setDelay act on the host's eth0.
 * Mode 'local' (no root): plain `sshd -D` processes on 127.0.0.1, high ports, running as the current user
 *   (the only user that can log in); no private state, no extra users, no link/delay control.
 *
 * sshd_config: UsePAM no, pubkey + password auth, PermitRootLogin prohibit-password, LogLevel VERBOSE,
 * `SetEnv SHLVL=1` (Debian's bash sources ~/.bashrc for ssh commands only when SHLVL < 2; root's ~/.bashrc here
 * runs pyenv init, ~200 ms per command), internal-sftp, default MaxSessions (10), like a stock server.
 * Needs: openssh-server, openssh-client (ssh-keygen), iproute2 (ip, tc), util-linux (unshare, nsenter),
 * openssl (password hash), sudo.
 */
import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { dump } from 'js-yaml';
import { canUseNamespaces, createNetwork, registerCleanup, type Network } from './netns.js';
import { refuseInUnitTier, waitFor } from './wait.js';

export const TEST_USER = 'rbuser';
export const NOPASSWD_USER = 'rbnopw';
/** Password of TEST_USER and NOPASSWD_USER (login and sudo). Deliberately full of shell metacharacters. */
export const TEST_PASSWORD = `pw S3cr'et"$(id)\`;x`;

export interface SshHost {
  name: string;
  address: string;
  port: number;
  /** User the inventory logs in as (root in netns mode, the current user in local mode). */
  user: string;
  /** PID (root pid namespace) of the sshd listener; in netns mode PID 1 of the host's pid namespace. */
  pid: number;
  logFile: string;
  /** "ssh-ed25519 AAAA..." */
  hostKeyPublic: string;
  /** Host's private key file (tests may use it to fake a changed key elsewhere). */
  hostKeyFile: string;
  /** netns mode: the host's private tree (var/lib, tmp, root, home, etc/...). */
  root?: string;
  /** netns mode: network namespace name. */
  netns?: string;
}

export interface InventoryExtra {
  /** Only these hosts (default: every host of the fleet). */
  only?: string[];
  /** Variables under all.vars. */
  vars?: Record<string, unknown>;
  /** Extra variables per host name (merged over the connection variables). */
  hostVars?: Record<string, Record<string, unknown>>;
  /** Groups under all.children: group name -> host names. */
  groups?: Record<string, string[]>;
}

export interface ExecOutcome {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

export interface SshFleet {
  mode: 'netns' | 'local';
  dir: string;
  hosts: SshHost[];
  network?: Network;
  clientKeyFile: string;
  clientPublicKey: string;
  knownHostsFile: string;
  /** Users available on every host (netns mode); in local mode only `login`. */
  users: { login: string; sudoUser?: string; nopasswdUser?: string; password?: string };
  host(name: string): SshHost;
  inventoryYaml(extra?: InventoryExtra): string;
  writeInventory(path: string, extra?: InventoryExtra): Promise<void>;
  /** Runs `sh -c cmd` as root inside the host (netns: nsenter into its namespaces; local: on this machine). */
  exec(host: SshHost | string, cmd: string, opts?: { stdin?: string; timeoutMs?: number }): Promise<ExecOutcome>;
  /** Where an in-host path (under /var/lib, /tmp, /root, /home, /etc/sudoers.d) lives outside (netns mode). */
  hostPath(host: SshHost | string, inHostPath: string): string;
  /** OpenSSH client argv reaching the host with the fleet's key and known_hosts (append the remote command). */
  sshArgv(host: SshHost | string, user?: string): string[];
  /** Number of TCP connections sshd accepted so far (VERBOSE log "Connection from"). */
  connectionCount(host: SshHost | string): number;
  logText(host: SshHost | string): string;
  /** SIGKILL the host's sshd and everything under it (netns: its whole pid namespace). */
  kill(host: SshHost | string): Promise<void>;
  /** Start the host's sshd again (same key, config, state); updates host.pid. */
  restart(host: SshHost | string): Promise<void>;
  /** netns mode: take the host's eth0 down/up (a cut cable), add/remove netem delay. */
  linkDown(host: SshHost | string): Promise<void>;
  linkUp(host: SshHost | string): Promise<void>;
  setDelay(host: SshHost | string, ms: number | null): Promise<void>;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Host names (default h1..hn). */
  names?: string[];
  /** 'auto' (default): netns when possible; RUNBOOK_TEST_SSH_MODE=local|netns overrides auto. */
  mode?: 'auto' | 'netns' | 'local';
  /** Use an existing network instead of creating one (netns mode; it is not destroyed by stop()). */
  network?: Network;
  /** Namespace name prefix when the fleet creates its network. */
  prefix?: string;
  /** Extra sshd_config lines (appended). */
  sshdConfigExtra?: string;
}

interface HostState {
  host: SshHost;
  /** Start time (/proc stat field 22) of host.pid: a pid is only killed while it is still that process. */
  pidStart?: string;
  dir: string;
  config: string;
  child?: ChildProcess;
  exited?: Promise<void>;
}

function run(
  cmd: string,
  args: string[],
  opts: { stdin?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<ExecOutcome> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { encoding: 'utf8', maxBuffer: 64 << 20, timeout: opts.timeoutMs ?? 30_000, killSignal: 'SIGKILL', env: opts.env },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: unknown; signal?: string | null }) | null;
        if (e && typeof e.code === 'string') {
          reject(new Error(`${cmd}: ${e.message}`));
          return;
        }
        resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, stdout, stderr });
      },
    );
    if (opts.stdin !== undefined) child.stdin?.end(opts.stdin);
    else child.stdin?.end();
  });
}

async function must(cmd: string, args: string[], opts?: { stdin?: string }): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code ?? r.signal}): ${r.stderr.trim()}`);
  return r.stdout;
}

function descendants(pid: number): number[] {
  const out: number[] = [];
  const walk = (p: number): void => {
    let kids: number[] = [];
    try {
      for (const t of readdirSync(`/proc/${p}/task`)) {
        kids.push(...readFileSync(`/proc/${p}/task/${t}/children`, 'utf8').split(/\s+/).filter(Boolean).map(Number));
      }
    } catch {
      kids = [];
    }
    for (const k of kids) {
      out.push(k);
      walk(k);
    }
  };
  walk(pid);
  return out;
}

/** Start time of a process (field 22 of /proc/PID/stat), undefined when it is gone. */
function procStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function tcpReady(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: address, port });
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.once('data', () => done(true)); // the SSH banner: sshd is really serving
    s.once('error', () => done(false));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function pubKeyOf(file: string): string {
  return readFileSync(`${file}.pub`, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
}

/** Mount setup + sshd, run by `sh -c SCRIPT sh NAME FLEETDIR` inside unshare. */
const HOST_INIT = `set -e
hostname "$1"
mount -t tmpfs -o mode=0755,size=64m rbrun /run
mkdir -p /run/sshd /run/fleet /run/sudo
mount --bind "$2" /run/fleet
F=/run/fleet/hosts/$1/fs
for d in /var/lib /root /home /etc/sudoers.d; do mount --bind "$F$d" "$d"; done
for f in passwd shadow group hosts; do mount --bind "$F/etc/$f" "/etc/$f"; done
mount --bind "$F/tmp" /tmp
exec /usr/sbin/sshd -D -e -f "/run/fleet/hosts/$1/sshd_config"
`;

/** Starts n real sshd hosts in parallel. See the file comment. */
export async function startSshHosts(n: number, opts: StartOptions = {}): Promise<SshFleet> {
  refuseInUnitTier('startSshHosts()');
  const names = opts.names ?? Array.from({ length: n }, (_, i) => `h${i + 1}`);
  if (names.length !== n) throw new Error('startSshHosts: names.length must equal n');
  let mode: 'netns' | 'local';
  const want = opts.mode && opts.mode !== 'auto' ? opts.mode : (process.env.RUNBOOK_TEST_SSH_MODE as 'netns' | 'local' | undefined);
  if (want === 'local') mode = 'local';
  else if (want === 'netns') {
    if (!canUseNamespaces()) throw new Error('netns mode needs root, ip and unshare');
    mode = 'netns';
  } else mode = canUseNamespaces() ? 'netns' : 'local';

  const dir = mkdtempSync(join(tmpdir(), 'rbfleet-'));
  chmodSync(dir, 0o755);
  const inside = (p: string): string => (mode === 'netns' ? p.replace(dir, '/run/fleet') : p);
  const states = new Map<string, HostState>();
  let network: Network | undefined = opts.network;
  const ownNetwork = mode === 'netns' && !opts.network;
  let stopped = false;

  const stopSync = (): void => {
    if (stopped) return;
    stopped = true;
    for (const st of states.values()) killTreeSync(st);
    // network destroy (own network) kills anything left in the namespaces; it is registered separately
    rmSync(dir, { recursive: true, force: true });
  };
  const unregister = registerCleanup(stopSync);

  function killTreeSync(st: HostState): void {
    // sshd first (in netns mode PID 1 of the host's pid namespace: everything in it dies); its parent (unshare)
    // then reaps it and exits by itself, so no zombie is left to the machine's init.
    if (!st.host.pid) return;
    // A dead sshd's pid may belong to another process by now (pids wrap quickly on a busy machine): leave it.
    if (procStartTime(st.host.pid) !== st.pidStart) return;
    const pids = [st.host.pid, ...descendants(st.host.pid)];
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }

  const clientKeyFile = join(dir, 'client_key');
  let passwordHash = '';
  try {
    const keygens: Promise<unknown>[] = [
      must('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'runbook-test-client', '-f', clientKeyFile]),
    ];
    if (mode === 'netns') {
      if (ownNetwork) network = await createNetwork(opts.prefix ?? 'rbs');
      keygens.push(
        must('openssl', ['passwd', '-6', '-stdin'], { stdin: `${TEST_PASSWORD}\n` }).then((h) => {
          passwordHash = h.trim();
        }),
      );
    }
    await Promise.all(keygens);
    const clientPublicKey = readFileSync(`${clientKeyFile}.pub`, 'utf8').trim();
    writeFileSync(join(dir, 'authorized_keys'), `${clientPublicKey}\n`, { mode: 0o644 });
    mkdirSync(join(dir, 'hosts'), { mode: 0o755 });
    const login = mode === 'netns' ? 'root' : userInfo().username;
    // sshd run as root needs its privilege separation directory, which Debian's sshd unit creates at boot
    // (RuntimeDirectory=sshd, under the /run tmpfs): a machine where that unit never ran has none.
    if (mode === 'local' && process.getuid?.() === 0) mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });

    await Promise.all(
      names.map(async (name) => {
        const hdir = join(dir, 'hosts', name);
        mkdirSync(hdir, { mode: 0o755 });
        const hostKeyFile = join(hdir, 'ssh_host_ed25519_key');
        const netHost = mode === 'netns' ? network!.addHost(name) : undefined; // addresses in name order
        netHost?.catch(() => {
          /* awaited below */
        });
        await must('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `runbook-test-${name}`, '-f', hostKeyFile]);
        let address: string;
        let port: number;
        let root: string | undefined;
        let netns: string | undefined;
        if (mode === 'netns') {
          const nh = await netHost!;
          address = nh.ip;
          port = 22;
          netns = nh.netns;
          root = join(hdir, 'fs');
          prepareHostFs(root, name, passwordHash);
        } else {
          address = '127.0.0.1';
          port = await freePort();
        }
        const config = join(hdir, 'sshd_config');
        const host: SshHost = {
          name,
          address,
          port,
          user: login,
          pid: 0,
          logFile: join(hdir, 'sshd.log'),
          hostKeyPublic: pubKeyOf(hostKeyFile),
          hostKeyFile,
          root,
          netns,
        };
        const st: HostState = { host, dir: hdir, config };
        writeConfig(st);
        states.set(name, st);
        for (let attempt = 0; ; attempt++) {
          try {
            await startHost(st);
            break;
          } catch (e) {
            if (mode === 'local' && attempt < 4 && /Address already in use|Bind to port/.test(String(e))) {
              host.port = await freePort();
              writeConfig(st);
              continue;
            }
            throw e;
          }
        }
      }),
    );

    const hosts = names.map((nm) => states.get(nm)!.host);
    const knownHostsFile = join(dir, 'known_hosts');
    writeFileSync(
      knownHostsFile,
      hosts.map((h) => `${h.port === 22 ? h.address : `[${h.address}]:${h.port}`} ${h.hostKeyPublic}\n`).join(''),
    );

    const get = (h: SshHost | string): HostState => {
      const st = states.get(typeof h === 'string' ? h : h.name);
      if (!st) throw new Error(`no such fleet host: ${typeof h === 'string' ? h : h.name}`);
      return st;
    };
    const needNetns = (h: SshHost | string, what: string): SshHost => {
      const host = get(h).host;
      if (mode !== 'netns' || !host.netns) throw new Error(`${what} needs netns mode (fleet runs in ${mode} mode)`);
      return host;
    };

    const inventoryYaml = (extra: InventoryExtra = {}): string => {
      const hostsObj: Record<string, Record<string, unknown>> = {};
      for (const h of hosts) {
        if (extra.only && !extra.only.includes(h.name)) continue;
        hostsObj[h.name] = {
          ansible_host: h.address,
          ansible_port: h.port,
          ansible_user: h.user,
          ansible_ssh_private_key_file: clientKeyFile,
          ...(extra.hostVars?.[h.name] ?? {}),
        };
      }
      const all: Record<string, unknown> = { hosts: hostsObj };
      if (extra.vars) all.vars = extra.vars;
      if (extra.groups)
        all.children = Object.fromEntries(
          Object.entries(extra.groups).map(([g, hs]) => [g, { hosts: Object.fromEntries(hs.map((x) => [x, null])) }]),
        );
      return dump({ all });
    };

    const fleet: SshFleet = {
      mode,
      dir,
      hosts,
      network,
      clientKeyFile,
      clientPublicKey,
      knownHostsFile,
      users: mode === 'netns' ? { login, sudoUser: TEST_USER, nopasswdUser: NOPASSWD_USER, password: TEST_PASSWORD } : { login },
      host: (name) => get(name).host,
      inventoryYaml,
      async writeInventory(path, extra) {
        writeFileSync(path, inventoryYaml(extra));
      },
      async exec(h, cmd, o = {}) {
        const host = get(h).host;
        const env = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C' };
        if (mode === 'netns') {
          return run('nsenter', ['-t', String(host.pid), '-m', '-u', '-p', '-n', '--', 'sh', '-c', cmd], { ...o, env });
        }
        return run('sh', ['-c', cmd], { ...o, env: { ...process.env, ...env, HOME: process.env.HOME } });
      },
      hostPath(h, p) {
        const host = get(h).host;
        if (!host.root) throw new Error('hostPath needs netns mode');
        if (!/^\/(var\/lib|tmp|root|home|etc\/sudoers\.d)(\/|$)/.test(p)) throw new Error(`${p} is not in a private host directory`);
        return join(host.root, p);
      },
      sshArgv(h, user) {
        const host = get(h).host;
        return [
          'ssh',
          '-i',
          clientKeyFile,
          '-o',
          'IdentitiesOnly=yes',
          '-o',
          `UserKnownHostsFile=${knownHostsFile}`,
          '-o',
          'GlobalKnownHostsFile=/dev/null',
          '-o',
          'StrictHostKeyChecking=yes',
          '-o',
          'BatchMode=yes',
          '-o',
          'ConnectTimeout=5',
          '-F',
          '/dev/null',
          '-p',
          String(host.port),
          `${user ?? host.user}@${host.address}`,
        ];
      },
      connectionCount(h) {
        return (fleet.logText(h).match(/^Connection from /gm) ?? []).length;
      },
      logText(h) {
        try {
          return readFileSync(get(h).host.logFile, 'utf8');
        } catch {
          return '';
        }
      },
      async kill(h) {
        const st = get(h);
        killTreeSync(st);
        await st.exited;
      },
      async restart(h) {
        const st = get(h);
        if (st.child && st.child.exitCode === null && st.child.signalCode === null) {
          killTreeSync(st);
          await st.exited;
        }
        await startHost(st);
      },
      async linkDown(h) {
        await must('ip', ['-n', needNetns(h, 'linkDown').netns!, 'link', 'set', 'eth0', 'down']);
      },
      async linkUp(h) {
        await must('ip', ['-n', needNetns(h, 'linkUp').netns!, 'link', 'set', 'eth0', 'up']);
      },
      async setDelay(h, ms) {
        const ns = needNetns(h, 'setDelay').netns!;
        await run('tc', ['-n', ns, 'qdisc', 'del', 'dev', 'eth0', 'root']);
        if (ms !== null && ms > 0) await must('tc', ['-n', ns, 'qdisc', 'add', 'dev', 'eth0', 'root', 'netem', 'delay', `${ms}ms`]);
      },
      async stop() {
        const waits = [...states.values()].map((s) => s.exited);
        stopSync();
        await Promise.all(waits);
        if (ownNetwork) await network?.destroy();
        unregister();
      },
    };
    return fleet;
  } catch (e) {
    stopSync();
    if (ownNetwork) await network?.destroy();
    unregister();
    throw e;
  }

  function writeConfig(st: HostState): void {
    const h = st.host;
    writeFileSync(
      st.config,
      [
        `Port ${h.port}`,
        `ListenAddress ${h.address}`,
        `HostKey ${inside(h.hostKeyFile)}`,
        'UsePAM no',
        'PermitRootLogin prohibit-password',
        'PubkeyAuthentication yes',
        'PasswordAuthentication yes',
        'KbdInteractiveAuthentication no',
        `AuthorizedKeysFile ${inside(join(dir, 'authorized_keys'))}`,
        'StrictModes no',
        'PidFile none',
        'LogLevel VERBOSE',
        'UseDNS no',
        'PrintMotd no',
        'SetEnv SHLVL=1',
        'Subsystem sftp internal-sftp',
        opts.sshdConfigExtra ?? '',
        '',
      ].join('\n'),
    );
  }

  async function startHost(st: HostState): Promise<void> {
    const h = st.host;
    const fd = openSync(h.logFile, 'a');
    let child: ChildProcess;
    try {
      if (mode === 'netns') {
        child = spawn(
          'ip',
          [
            'netns',
            'exec',
            h.netns!,
            'unshare',
            '--mount',
            '--uts',
            '--pid',
            '--fork',
            '--mount-proc',
            '--propagation',
            'private',
            'sh',
            '-c',
            HOST_INIT,
            'sh',
            h.name,
            dir,
          ],
          { stdio: ['ignore', fd, fd], env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' } },
        );
      } else {
        child = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', st.config], { stdio: ['ignore', fd, fd] });
      }
    } finally {
      closeSync(fd);
    }
    st.child = child;
    st.exited = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
    child.once('error', () => {
      /* reported through exit/readiness */
    });
    // Generous: 20 hosts starting at once on a slow, loaded machine (keygen, unshare, mounts, sshd) take a while.
    const timeoutMs = 60_000;
    const exitedEarly = (sshdPid?: number): void => {
      if (child.exitCode !== null || child.signalCode !== null || (sshdPid !== undefined && !alive(sshdPid)))
        throw new Error(`sshd for ${h.name} exited during startup: ${tail(h.logFile)}`);
    };
    // find sshd's PID
    h.pid = await waitFor(
      () => {
        exitedEarly();
        if (mode === 'local') return child.pid;
        return descendants(child.pid!).find((p) => comm(p) === 'sshd');
      },
      { what: `sshd of ${h.name} to start`, timeoutMs, intervalMs: 10, detail: () => tail(h.logFile) },
    );
    st.pidStart = procStartTime(h.pid);
    // wait until it serves the SSH banner
    await waitFor(
      async () => {
        if (await tcpReady(h.address, h.port)) return true;
        exitedEarly(h.pid);
        return false;
      },
      { what: `sshd of ${h.name} to serve SSH on ${h.address}:${h.port}`, timeoutMs, intervalMs: 20, detail: () => tail(h.logFile) },
    );
  }
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-5).join(' | ');
  } catch {
    return '(no log)';
  }
}

/** Private tree of a netns host: users, sudo rules, hosts file, empty /var/lib, /tmp, /root, /home. */
function prepareHostFs(root: string, name: string, passwordHash: string): void {
  for (const d of ['var/lib', 'tmp', 'root', 'home', 'etc/sudoers.d', `home/${TEST_USER}`, `home/${NOPASSWD_USER}`]) {
    mkdirSync(join(root, d), { recursive: true, mode: 0o755 });
  }
  chmodSync(join(root, 'tmp'), 0o1777);
  chmodSync(join(root, 'root'), 0o700);
  chmodSync(join(root, 'etc/sudoers.d'), 0o755);
  const users: Array<[string, number]> = [
    [TEST_USER, 2901],
    [NOPASSWD_USER, 2902],
  ];
  let passwd = readFileSync('/etc/passwd', 'utf8');
  let shadow = readFileSync('/etc/shadow', 'utf8');
  let group = readFileSync('/etc/group', 'utf8');
  const strip = (text: string, user: string): string =>
    text
      .split('\n')
      .filter((l) => !l.startsWith(`${user}:`))
      .join('\n')
      .replace(/\n*$/, '\n');
  for (const [u, id] of users) {
    passwd = `${strip(passwd, u)}${u}:x:${id}:${id}:runbook test:/home/${u}:/bin/sh\n`;
    shadow = `${strip(shadow, u)}${u}:${passwordHash}:19000:0:99999:7:::\n`;
    group = `${strip(group, u)}${u}:x:${id}:\n`;
  }
  writeFileSync(join(root, 'etc/passwd'), passwd, { mode: 0o644 });
  writeFileSync(join(root, 'etc/shadow'), shadow, { mode: 0o640 });
  writeFileSync(join(root, 'etc/group'), group, { mode: 0o644 });
  writeFileSync(join(root, 'etc/hosts'), `127.0.0.1\tlocalhost\n127.0.1.1\t${name}\n::1\tlocalhost ip6-localhost ip6-loopback\n`, {
    mode: 0o644,
  });
  writeFileSync(
    join(root, 'etc/sudoers.d/runbook-test'),
    `${TEST_USER} ALL=(ALL:ALL) ALL\n${NOPASSWD_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n`,
    { mode: 0o440 },
  );
  execFileSync('chown', [`2901:2901`, join(root, 'home', TEST_USER)]);
  execFileSync('chown', [`2902:2902`, join(root, 'home', NOPASSWD_USER)]);
  if (existsSync('/etc/shadow')) {
    try {
      execFileSync('chgrp', ['shadow', join(root, 'etc/shadow')], { stdio: 'ignore' });
    } catch {
      /* no shadow group */
    }
  }
}

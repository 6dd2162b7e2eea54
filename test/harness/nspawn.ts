/**
 * Test harness: a fleet of real Debian 12 "nodes" (systemd as PID 1, sshd, containerd 1.6, runc, a dummy
 * kubelet), each a systemd-nspawn container in its own network namespace. Tests reach them over real SSH.
 *
 *   import { bootFleet } from './harness/nspawn.js';
 *   const fleet = await bootFleet(['node1', 'node2']);    // image built once (test/harness/rootfs.sh), ~1-2 s per boot
 *   await fleet.runContainer('node2', 'web');             // a real container: a shim + an overlay mount
 *   await fleet.break('node2', 'panic');                   // corrupt containerd the way real nodes break
 *   const r = await fleet.exec('node2', 'systemctl is-active containerd');   // plain `ssh`, not our product
 *   // fleet.inventory (YAML file), fleet.knownHosts, fleet.image.clientKey -> bin/runbook apply ... -i fleet.inventory --known-hosts fleet.knownHosts
 *   await fleet.destroy();                                 // by PID: containers, namespaces, mounts, files; also at exit/SIGINT
 *   // a fleet whose test process was SIGKILLed is reclaimed by the next bootFleet() (reclaimStaleFleets)
 *
 * Each node: `systemd-nspawn -b -D IMAGE/rootfs --volatile=overlay --register=no --keep-unit -M NAME
 * --network-namespace-path=/run/netns/NS --console=pipe --bind=DIR/NAME/var-lib:/var/lib` (+ cgroup v2 and the
 * syscalls runc needs). The disk is pristine every boot (volatile overlay); /var/lib is a fresh per-node copy on
 * the host's real filesystem, because containerd's overlayfs snapshotter cannot use an overlayfs upper dir, and so
 * that /var/lib/containerd and its `.recover-*` backups share one filesystem (as on a real node).
 */
import { spawn, spawnSync, execFile } from 'node:child_process';
import {
  appendFileSync,
  rmdirSync,
  mkdtempSync,
  writeFileSync,
  readFileSync,
  readdirSync,
  rmSync,
  openSync,
  closeSync,
  existsSync,
  mkdirSync,
} from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNetwork, registerCleanup, type Network } from './netns.js';
import { pollSync, refuseInUnitTier, waitFor } from './wait.js';

const HERE = dirname(fileURLToPath(import.meta.url));

export interface Image {
  /** The image directory (cache): rootfs/, client_key, host_key.pub. */
  dir: string;
  rootfs: string;
  /** Private key authorized for root on every node. */
  clientKey: string;
  /** "ssh-ed25519 AAAA..." of every node (one fixed host key per image). */
  hostKey: string;
  /** Seconds the build took when it was built (it is reused afterwards). */
  buildSeconds: number;
}

export interface Node {
  name: string;
  ip: string;
  netns: string;
  /** PID of the systemd-nspawn process. */
  pid: number;
  /** PID (in our pid namespace) of the node's init (systemd). */
  leader: number;
  /** Host directory bind-mounted at the node's /var/lib. */
  varLib: string;
  /** Milliseconds from spawn to sshd + containerd + kubelet active. */
  bootMs: number;
}

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export type BreakKind =
  /** Zeroed bolt data pages: `panic: invalid freelist page`, exit 2, restart loop. */
  | 'panic'
  /** Random bytes over the first 8 KiB of meta.db: daemon `active`, bolt + cri plugins in error. */
  | 'silent'
  /** ROOT/io.containerd.grpc.v1.cri/sandboxes is a regular file: `failed to recover state`, fatal. */
  | 'sandboxes-file'
  /** Another process (unit rb-boltlock) holds the bolt flock on meta.db: containerd hangs in bolt open. Must NOT be wiped. */
  | 'bolt-lock'
  /**
   * Arms a trap: the next containerd start that happens while a `/var/lib/containerd.recover-*` backup exists
   * first breaks /etc/containerd/config.toml (invalid TOML), so the repaired start fails. Combine with a real break.
   */
  | 'bad-config';

export interface Fleet {
  image: Image;
  network: Network;
  nodes: Node[];
  /** Working directory (outside the repo): per-node /var/lib copies, logs, inventory, known_hosts. */
  dir: string;
  /** Inventory YAML (all hosts; ansible_host/port/user root/ssh key). */
  inventory: string;
  /** known_hosts with every node's address and the image's host key. */
  knownHosts: string;
  node(name: string): Node;
  /** argv for `ssh` to a node (client key, strict known_hosts, batch mode). */
  sshArgs(name: string): string[];
  /** Runs a shell command on the node over SSH (OpenSSH client). Never throws for a non-zero exit. */
  exec(name: string, cmd: string, opts?: { timeoutMs?: number; input?: string }): Promise<ExecResult>;
  /** Like exec, but throws (with stderr) unless the exit code is 0; returns stdout. */
  sh(name: string, cmd: string, opts?: { timeoutMs?: number }): Promise<string>;
  /** Breaks containerd on the node; returns once the breakage is visible. */
  break(name: string, kind: BreakKind, opts?: { root?: string }): Promise<void>;
  /** Starts a real container (namespace k8s.io) running /bin/sleep: a shim that survives `systemctl stop containerd`. */
  runContainer(name: string, id: string): Promise<void>;
  /** The node's containerd health as a test sees it (independent of the runbooks). */
  health(name: string): Promise<Health>;
  /** Polls health() until healthy; throws with the last health after timeoutMs (default 60 s). */
  waitHealthy(name: string, timeoutMs?: number): Promise<Health>;
  /** Writes another inventory with some of the hosts and extra all-vars; returns its path. */
  writeInventory(file: string, hosts?: string[], vars?: Record<string, unknown>): string;
  /** Kills every node (by PID), removes namespaces, mounts and files. Idempotent. */
  destroy(): Promise<void>;
}

export interface Health {
  active: string;
  nRestarts: number;
  /** STATUS column of `ctr plugins ls` for bolt, overlayfs and cri ('' when ctr cannot answer). */
  plugins: { bolt: string; overlayfs: string; cri: string };
  /** True when active and bolt, overlayfs and cri are `ok`. */
  healthy: boolean;
}

export const ROOT = '/var/lib/containerd';
export const META_DB = `${ROOT}/io.containerd.metadata.v1.bolt/meta.db`;
const DEFAULT_ROOT = ROOT;

// ---------------------------------------------------------------------------------------------
// Image

let imageCache: Image | undefined;

/** Builds the image if needed (test/harness/rootfs.sh: ~45 s once, then cached) and returns where it is. */
export function ensureImage(): Image {
  refuseInUnitTier('ensureImage()');
  if (imageCache) return imageCache;
  const r = spawnSync('bash', [join(HERE, 'rootfs.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) throw new Error(`test/harness/rootfs.sh failed (exit ${r.status}); see its output above`);
  const dir = r.stdout.trim().split('\n').pop()!;
  imageCache = {
    dir,
    rootfs: join(dir, 'rootfs'),
    clientKey: join(dir, 'client_key'),
    hostKey: readFileSync(join(dir, 'host_key.pub'), 'utf8').trim().split(/\s+/).slice(0, 2).join(' '),
    buildSeconds: Number(readFileSync(join(dir, 'build-seconds'), 'utf8').trim()),
  };
  return imageCache;
}

/** What a machine needs for this harness; returns the missing commands (empty = ready). */
export function missingTools(): string[] {
  const need: Array<[string, string]> = [
    ['systemd-nspawn', 'systemd-container'],
    ['debootstrap', 'debootstrap'],
    ['ip', 'iproute2'],
    ['ssh', 'openssh-client'],
  ];
  return need
    .filter(([cmd]) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status !== 0)
    .map(([cmd, pkg]) => `${cmd} (apt package ${pkg})`);
}

// ---------------------------------------------------------------------------------------------
// Processes

/** Alive and not a zombie (our own exited children stay zombies until the event loop reaps them). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(e));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Start times of a node's nspawn and init, taken when they were found: a pid is only killed while it is still that process. */
const startTimes = new Map<number, string | undefined>();

function killSync(n: { pid: number; leader: number }): void {
  // SIGKILL on the container's init kills its whole pid namespace; nspawn then exits and drops its mounts.
  // A pid whose process has gone (and may have been reused: pids wrap quickly on a busy machine) is left alone.
  for (const p of [n.leader, n.pid])
    if (p > 0 && (!startTimes.has(p) || procStartTime(p) === startTimes.get(p))) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  pollSync(() => !alive(n.pid), 30_000);
}

/** The cgroups (unified + name=systemd on a hybrid host; just one on a pure v2 host) a node runs in. */
function cgroupDirs(key: string): string[] {
  const name = `runbook-test-${key}`;
  if (existsSync('/sys/fs/cgroup/unified/cgroup.procs')) return [`/sys/fs/cgroup/unified/${name}`, `/sys/fs/cgroup/systemd/${name}`];
  if (existsSync('/sys/fs/cgroup/cgroup.procs')) return [`/sys/fs/cgroup/${name}`];
  return [`/sys/fs/cgroup/systemd/${name}`];
}

/** rmdir a cgroup tree, deepest first (cgroup dirs are removed with rmdir, never rm -r). */
function removeCgroup(dir: string): void {
  if (!existsSync(dir)) return;
  const dirs: string[] = [];
  (function walk(d: string) {
    dirs.push(d);
    for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
  })(dir);
  // Retried while the last processes of the node are still being reaped (slowly on a loaded machine).
  pollSync(() => {
    let busy = false;
    for (const d of [...dirs].reverse()) {
      try {
        if (existsSync(d)) rmdirSync(d);
      } catch {
        busy = true;
      }
    }
    return !busy;
  }, 30_000);
}

const FLEET_PARENT = '/var/tmp';

function procStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/**
 * Fleets whose test process died without cleaning up (SIGKILL): kill their nspawn processes and node inits,
 * remove their cgroups, mounts and directory. (Their network namespaces are reclaimed by netns.ts.)
 */
export function reclaimStaleFleets(): string[] {
  const reclaimed: string[] = [];
  for (const e of readdirSync(FLEET_PARENT)) {
    if (!e.startsWith('rb-fleet-')) continue;
    const dir = join(FLEET_PARENT, e);
    let owner: string[];
    try {
      owner = readFileSync(join(dir, 'owner'), 'utf8').trim().split(' ');
    } catch {
      continue;
    }
    if (procStartTime(Number(owner[0])) === owner[1]) continue; // its owner is alive
    const lines = (f: string) => {
      try {
        return readFileSync(join(dir, f), 'utf8').split('\n').filter(Boolean);
      } catch {
        return [];
      }
    };
    for (const pid of lines('pids').map(Number)) {
      const cmd = (() => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        } catch {
          return '';
        }
      })();
      if (cmd.includes(dir)) killSync({ pid, leader: childrenOf(pid)[0] ?? 0 });
    }
    for (const d of lines('cgroups')) removeCgroup(d);
    const mounts = spawnSync('findmnt', ['-rn', '-o', 'TARGET'], { encoding: 'utf8' })
      .stdout.split('\n')
      .filter((m) => m.startsWith(`${dir}/`));
    for (const m of mounts.sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
    rmSync(dir, { recursive: true, force: true });
    reclaimed.push(dir);
  }
  return reclaimed;
}

// ---------------------------------------------------------------------------------------------
// Fleet

export interface BootOptions {
  image?: Image;
  /** Seconds to wait for a node to be ready (default 120: generous for a slow, loaded machine). */
  bootTimeoutS?: number;
}

export async function bootFleet(names: string[], opts: BootOptions = {}): Promise<Fleet> {
  refuseInUnitTier('bootFleet()');
  if (process.getuid?.() !== 0) throw new Error('bootFleet needs root (systemd-nspawn, network namespaces)');
  const missing = missingTools();
  if (missing.length) throw new Error(`missing: ${missing.join(', ')}`);
  const image = opts.image ?? ensureImage();
  reclaimStaleFleets();
  const dir = mkdtempSync(`${FLEET_PARENT}/rb-fleet-`);
  writeFileSync(join(dir, 'owner'), `${process.pid} ${procStartTime(process.pid)}\n`);
  const network = await createNetwork('rbc');
  const nodes: Node[] = [];
  const knownHosts = join(dir, 'known_hosts');
  const cgroups: string[] = [];
  let destroyed = false;

  const destroySync = (): void => {
    if (destroyed) return;
    destroyed = true;
    for (const n of nodes) killSync(n);
    // Leftover processes in the namespaces, the namespaces, veths and the bridge.
    void network.destroy();
    for (const d of cgroups) removeCgroup(d);
    // Nothing may still be mounted below our dir before we delete it.
    const mounts = spawnSync('findmnt', ['-rn', '-o', 'TARGET'], { encoding: 'utf8' })
      .stdout.split('\n')
      .filter((m) => m.startsWith(`${dir}/`));
    for (const m of mounts.sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
    rmSync(dir, { recursive: true, force: true });
  };
  const unregister = registerCleanup(destroySync);

  const sshArgs = (name: string): string[] => {
    const n = fleet.node(name);
    return [
      '-i',
      image.clientKey,
      '-o',
      `UserKnownHostsFile=${knownHosts}`,
      '-o',
      'StrictHostKeyChecking=yes',
      '-o',
      'BatchMode=yes',
      '-o',
      'ConnectTimeout=5',
      '-o',
      'LogLevel=ERROR',
      '-o',
      'GlobalKnownHostsFile=/dev/null',
      `root@${n.ip}`,
    ];
  };

  const exec = (name: string, cmd: string, o: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> =>
    new Promise((resolve) => {
      const child = execFile(
        'ssh',
        [...sshArgs(name), cmd],
        { encoding: 'utf8', timeout: o.timeoutMs ?? 60_000, maxBuffer: 64 << 20 },
        (err, stdout, stderr) => {
          const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null) : 0;
          resolve({ code, stdout, stderr });
        },
      );
      if (o.input !== undefined) child.stdin!.end(o.input);
      else child.stdin!.end();
    });

  const sh = async (name: string, cmd: string, o: { timeoutMs?: number } = {}): Promise<string> => {
    const r = await exec(name, cmd, o);
    if (r.code !== 0)
      throw new Error(
        `${name}: \`${cmd.length > 200 ? `${cmd.slice(0, 200)}...` : cmd}\` exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`,
      );
    return r.stdout;
  };

  /** Polls `cmd` on the node until it exits 0. */
  const waitOn = async (name: string, what: string, cmd: string, timeoutMs = 60_000): Promise<void> => {
    let last: ExecResult | undefined;
    await waitFor(
      async () => {
        last = await exec(name, cmd, { timeoutMs: 15_000 });
        return last.code === 0;
      },
      { what: `${name}: ${what}`, timeoutMs, intervalMs: 200, detail: () => last?.stderr.trim() || last?.stdout.trim() || '(no output)' },
    );
  };

  const health = async (name: string): Promise<Health> => {
    const out = await sh(
      name,
      `systemctl show -p ActiveState --value containerd; systemctl show -p NRestarts --value containerd;
      ctr --connect-timeout 3s --timeout 10s plugins ls 2>/dev/null | awk '$2=="bolt"||$2=="overlayfs"||$2=="cri"{print $2"="$NF}'`,
    );
    const [active, nr, ...rest] = out.trim().split('\n');
    const plugins = { bolt: '', overlayfs: '', cri: '' };
    for (const l of rest) {
      const [k, v] = l.split('=');
      if (k in plugins) (plugins as Record<string, string>)[k] = v;
    }
    const healthy = active === 'active' && plugins.bolt === 'ok' && plugins.overlayfs === 'ok' && plugins.cri === 'ok';
    return { active, nRestarts: Number(nr), plugins, healthy };
  };

  const breakNode = async (name: string, kind: BreakKind, o: { root?: string } = {}): Promise<void> => {
    const ROOT = o.root ?? DEFAULT_ROOT;
    const stop = `systemctl stop containerd; DB=${ROOT}/io.containerd.metadata.v1.bolt/meta.db; test -s "$DB"`;
    switch (kind) {
      case 'panic':
        await sh(
          name,
          `${stop}; dd if=/dev/zero of="$DB" bs=4096 seek=2 count=$(( $(stat -c%s "$DB")/4096 - 2 )) conv=notrunc status=none; systemctl start containerd || true`,
        );
        await waitOn(
          name,
          'the panic restart loop',
          `journalctl -u containerd -b -o cat | grep -q 'panic: invalid freelist page' && test "$(systemctl show -p ActiveState --value containerd)" = activating`,
        );
        return;
      case 'silent':
        await sh(name, `${stop}; head -c 8192 /dev/urandom | dd of="$DB" conv=notrunc status=none; systemctl start containerd`);
        await waitOn(name, 'the bolt plugin in error', `ctr --timeout 5s plugins ls | grep -E '\\sbolt\\s.*error'`);
        return;
      case 'sandboxes-file':
        await sh(
          name,
          `${stop}; mkdir -p ${ROOT}/io.containerd.grpc.v1.cri && rm -rf ${ROOT}/io.containerd.grpc.v1.cri/sandboxes && touch ${ROOT}/io.containerd.grpc.v1.cri/sandboxes; systemctl start containerd || true`,
        );
        await waitOn(name, 'the fatal CRI recovery', `journalctl -u containerd -b -o cat | grep -q 'failed to recover state'`);
        return;
      case 'bolt-lock':
        await sh(
          name,
          // containerd starts only once the holder has the lock (flock -n succeeds while nobody holds it)
          `${stop}; systemd-run --quiet --unit=rb-boltlock --collect flock "$DB" sleep infinity || exit 1; n=0; while flock -n "$DB" true; do n=$((n+1)); [ $n -le 600 ] || { echo "rb-boltlock never took the lock on $DB" >&2; exit 1; }; sleep 0.1; done; systemctl start --no-block containerd`,
        );
        await waitOn(
          name,
          'containerd blocked in bolt open',
          `test "$(systemctl show -p ActiveState --value containerd)" = activating && grep -q FLOCK /proc/locks`,
        );
        return;
      case 'bad-config': {
        const pre = `for b in ${ROOT}.recover-*; do if [ -d "$b" ] && ! [ -e /etc/containerd/.rb-broken ]; then printf '\\n[[[ this is not toml\\n' >> /etc/containerd/config.toml; touch /etc/containerd/.rb-broken; fi; done`;
        await sh(
          name,
          `mkdir -p /etc/systemd/system/containerd.service.d && cat > /etc/systemd/system/containerd.service.d/50-rb-bad-config.conf <<'EOF'
[Service]
ExecStartPre=/bin/sh -c '${pre}'
EOF
systemctl daemon-reload`,
        );
        return;
      }
    }
  };

  const writeInventory = (file: string, hosts: string[] = nodes.map((n) => n.name), vars: Record<string, unknown> = {}): string => {
    const lines = ['all:', '  vars:', '    ansible_user: root', `    ansible_ssh_private_key_file: ${JSON.stringify(image.clientKey)}`];
    for (const [k, v] of Object.entries(vars)) lines.push(`    ${k}: ${JSON.stringify(v)}`);
    lines.push('  hosts:');
    for (const h of hosts) {
      const n = fleet.node(h);
      lines.push(`    ${n.name}:`, `      ansible_host: ${n.ip}`, '      ansible_port: 22');
    }
    writeFileSync(file, `${lines.join('\n')}\n`);
    return file;
  };

  const fleet: Fleet = {
    image,
    network,
    nodes,
    dir,
    knownHosts,
    inventory: join(dir, 'inventory.yml'),
    node(name) {
      const n = nodes.find((x) => x.name === name);
      if (!n) throw new Error(`no node ${name} (nodes: ${nodes.map((x) => x.name).join(', ')})`);
      return n;
    },
    sshArgs,
    exec,
    sh,
    health,
    writeInventory,
    async waitHealthy(name, timeoutMs = 60_000) {
      let last: Health | undefined;
      return waitFor(
        async () => {
          last = await health(name);
          return last.healthy && last;
        },
        { what: `${name}: containerd healthy`, timeoutMs, intervalMs: 250, detail: () => JSON.stringify(last) },
      );
    },
    break: breakNode,
    runContainer: async (name, id) => {
      await sh(name, `rb-test-container ${id}`);
      await waitOn(name, `container ${id} running`, `ctr -n k8s.io task ls | grep -qE '^${id}\\s+[0-9]+\\s+RUNNING'`);
    },
    async destroy() {
      destroySync();
      unregister();
    },
  };

  const spawnedAt = new Map<string, number>();
  try {
    await Promise.all(
      names.map(async (name) => {
        const h = await network.addHost(name);
        const nd = join(dir, name);
        mkdirSync(nd);
        const varLib = join(nd, 'var-lib');
        const cp = spawnSync('cp', ['-a', join(image.rootfs, 'var/lib'), varLib]);
        if (cp.status !== 0) throw new Error(`copying /var/lib for ${name} failed: ${cp.stderr}`);
        const log = openSync(join(nd, 'console.log'), 'w');
        const t0 = Date.now();
        // Each node in its own cgroup: with --keep-unit nspawn puts the node's tree under its *own* cgroup, so
        // nodes sharing one would share (and kill) each other's service cgroups.
        const cg = cgroupDirs(h.netns);
        for (const d of cg) mkdirSync(d, { recursive: true });
        const enter = `for d in ${cg.map((d) => `'${d}'`).join(' ')}; do echo $$ > "$d/cgroup.procs" || exit 1; done; exec systemd-nspawn "$@"`;
        const child = spawn(
          'sh',
          [
            '-c',
            enter,
            'sh',
            '-b',
            '-D',
            image.rootfs,
            '--volatile=overlay',
            '--register=no',
            '--keep-unit',
            '-M',
            name,
            `--network-namespace-path=/run/netns/${h.netns}`,
            '--console=pipe',
            `--bind=${varLib}:/var/lib`,
            // runc inside the node: all capabilities and the syscalls nspawn filters by default
            '--capability=all',
            '--system-call-filter=add_key keyctl request_key @mount @privileged @system-service @clock @module @raw-io @reboot @swap @cpu-emulation @obsolete',
          ],
          {
            // cgroup v2 inside the node (runc cannot create v1 cgroups there)
            env: { ...process.env, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY: '1' },
            stdio: ['ignore', log, log],
            detached: true,
          },
        );
        closeSync(log);
        child.unref();
        const node: Node = { name, ip: h.ip, netns: h.netns, pid: child.pid!, leader: 0, varLib, bootMs: 0 };
        startTimes.set(node.pid, procStartTime(node.pid));
        cgroups.push(...cg);
        appendFileSync(join(dir, 'cgroups'), cg.map((d) => `${d}\n`).join(''));
        appendFileSync(join(dir, 'pids'), `${child.pid}\n`);
        spawnedAt.set(name, t0);
        nodes.push(node);
        let exited = false;
        child.on('exit', () => {
          exited = true;
        });
        const consoleTail = () => readFileSync(join(nd, 'console.log'), 'utf8').slice(-2000);
        node.leader = await waitFor(
          () => {
            if (exited) throw new Error(`${name}: systemd-nspawn exited at start: ${consoleTail()}`);
            return childrenOf(node.pid)[0];
          },
          { what: `${name}: systemd-nspawn to start the node's init`, timeoutMs: 60_000, intervalMs: 20, detail: consoleTail },
        );
        startTimes.set(node.leader, procStartTime(node.leader));
      }),
    );
    nodes.sort((a, b) => names.indexOf(a.name) - names.indexOf(b.name));
    writeFileSync(knownHosts, nodes.map((n) => `${n.ip} ${image.hostKey}\n`).join(''));
    writeInventory(fleet.inventory);
    const limitMs = (opts.bootTimeoutS ?? 60) * 1000;
    await Promise.all(
      nodes.map(async (n) => {
        await waitOn(n.name, 'sshd, containerd and kubelet', 'systemctl is-active --quiet ssh containerd kubelet', limitMs);
        n.bootMs = Date.now() - spawnedAt.get(n.name)!;
      }),
    );
  } catch (e) {
    destroySync();
    unregister();
    throw e;
  }
  return fleet;
}

/** Reports leftovers of a fleet directory, for tests of the harness itself. */
export function leftovers(f: Fleet): string[] {
  const out: string[] = [];
  const same = (p: number) => !startTimes.has(p) || procStartTime(p) === startTimes.get(p); // not a reused pid
  for (const n of f.nodes) for (const p of [n.pid, n.leader]) if (alive(p) && same(p)) out.push(`process ${p} (${n.name})`);
  if (existsSync(f.dir)) out.push(`directory ${f.dir}`);
  for (const n of f.nodes) if (existsSync(`/run/netns/${n.netns}`)) out.push(`netns ${n.netns}`);
  const mounts = spawnSync('findmnt', ['-rn', '-o', 'TARGET'], { encoding: 'utf8' })
    .stdout.split('\n')
    .filter((m) => m.startsWith(f.dir));
  out.push(...mounts.map((m) => `mount ${m}`));
  return out;
}

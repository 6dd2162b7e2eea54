/**
 * Test harness: a fleet of real Debian "nodes" (systemd as PID 1, sshd, Debian's containerd and runc, a dummy
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
 * Per-node options (a name alone is { name, suite: 'bookworm', layout: 'containerd', sudo: true }):
 *
 *   const fleet = await bootFleet([
 *     'n1',                                                 // bookworm, containerd 1.6, Debian's containerd.service
 *     { name: 'n2', suite: 'trixie' },                      // containerd 1.7 with ENABLE_CRI_SANDBOXES=1
 *     { name: 'n3', suite: 'sid', layout: 'k3s' },          // containerd 2.x embedded in a k3s-agent unit
 *     { name: 'n4', layout: 'rke2', sudo: false },          // rke2-agent; no sudo on the node (root only)
 *   ], { suite: 'bookworm' });                              // defaults for the names without options
 *   const n = fleet.node('n3');   // n.unit 'k3s-agent', n.root, n.state, n.socket, n.config, n.ctr 'k3s ctr', n.log (file)
 *   await fleet.sh('n3', `${n.ctr} version`);
 *   await fleet.exec('n1', 'sudo -n true', { user: 'ops' });   // every image has `ops`: same key, passwordless sudo
 *   fleet.writeInventory(file, ['n1'], { ansible_user: 'ops' });
 *   const r = await fleet.break('n2', 'sandbox-record');   // { outcome: 'restart-loop', line: '... failed to get metadata for stored sandbox ...' }
 *   const log = await fleet.containerdLog('n3');           // containerd's lines since boot (journal or the layout's log file)
 *
 * Suites: bookworm (containerd 1.6.20), trixie (1.7.24, Debian's unit plus ENABLE_CRI_SANDBOXES=1), sid (2.1.x).
 * Layouts: 'containerd' (Debian's containerd.service, /var/lib/containerd, journal); 'k3s' and 'rke2': LAYOUT
 * STAND-INS (test/harness/rancher-layout.sh; not the real k3s/RKE2, which cannot be fetched here), whose unit
 * (k3s-agent / rke2-agent: KillMode=process, Restart=always) runs Debian's containerd as a child with the real
 * layout's flags: socket and state /run/k3s/containerd, root /var/lib/rancher/{k3s,rke2}/agent/containerd, config
 * .../agent/etc/containerd/config.toml, log .../agent/containerd/containerd.log; `k3s ctr`, RKE2's binaries in
 * /var/lib/rancher/rke2/bin (links to Debian's), k3s-killall.sh / rke2-killall.sh. A k3s/rke2 node is converted after
 * boot: containerd.service and kubelet.service stopped, disabled and deleted (LoadState=not-found), /var/lib/containerd,
 * /run/containerd and /etc/containerd removed, the agent unit enabled and started, ready once its containerd answers
 * with cri ok. Every helper (health, waitHealthy, runContainer, break, containerdLog) follows the node's layout.
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

/** Debian suites with an image: bookworm = containerd 1.6, trixie = 1.7 (CRI sandbox server on), sid = 2.x. */
export type Suite = 'bookworm' | 'trixie' | 'sid';
export const SUITES: readonly Suite[] = ['bookworm', 'trixie', 'sid'];
/** How containerd runs on a node: Debian's unit, or embedded in a k3s / RKE2 agent (layout stand-ins). */
export type Layout = 'containerd' | 'k3s' | 'rke2';
export const LAYOUTS: readonly Layout[] = ['containerd', 'k3s', 'rke2'];

export interface Image {
  suite: Suite;
  /** The image directory (cache): rootfs/, client_key, host_key.pub. */
  dir: string;
  rootfs: string;
  /** Private key authorized for root and ops on every node (one key shared by every suite's image). */
  clientKey: string;
  /** "ssh-ed25519 AAAA..." of every node (one fixed host key, shared by every suite's image). */
  hostKey: string;
  /** Seconds the build took when it was built (it is reused afterwards). */
  buildSeconds: number;
}

/** Where a layout's containerd runs and keeps things, as seen on the node. */
export interface LayoutPaths {
  layout: Layout;
  /** The systemd unit that runs containerd: containerd | k3s-agent | rke2-agent. */
  unit: string;
  /** containerd's --root (data dir) and --state dirs, its socket and config file. */
  root: string;
  state: string;
  socket: string;
  config: string;
  /** The bolt database under root. */
  metaDb: string;
  /** The ctr command line that talks to this containerd (e.g. `k3s ctr`); append arguments to it. */
  ctr: string;
  /** Where containerd's log lines go: 'journal' (journalctl -u containerd) or a file on the node. */
  log: 'journal' | string;
  /** The layout's killall script ('' for containerd): kills the shims, unmounts, stops the unit. */
  killall: string;
}

export function layoutPaths(layout: Layout): LayoutPaths {
  if (layout === 'containerd') {
    const root = '/var/lib/containerd';
    return {
      layout,
      unit: 'containerd',
      root,
      state: '/run/containerd',
      socket: '/run/containerd/containerd.sock',
      config: '/etc/containerd/config.toml',
      metaDb: `${root}/io.containerd.metadata.v1.bolt/meta.db`,
      ctr: 'ctr',
      log: 'journal',
      killall: '',
    };
  }
  const data = `/var/lib/rancher/${layout}`;
  const root = `${data}/agent/containerd`;
  const socket = '/run/k3s/containerd/containerd.sock';
  return {
    layout,
    unit: `${layout}-agent`,
    root,
    state: '/run/k3s/containerd',
    socket,
    config: `${data}/agent/etc/containerd/config.toml`,
    metaDb: `${root}/io.containerd.metadata.v1.bolt/meta.db`,
    ctr: layout === 'k3s' ? 'k3s ctr' : `${data}/bin/ctr --address ${socket}`,
    log: `${root}/containerd.log`,
    killall: `/usr/local/bin/${layout}-killall.sh`,
  };
}

export interface NodeSpec {
  name: string;
  /** Default: BootOptions.suite, else bookworm. */
  suite?: Suite;
  /** Default: BootOptions.layout, else containerd. */
  layout?: Layout;
  /** false: sudo is purged from the node after boot (root logs in, nobody can sudo). Default true. */
  sudo?: boolean;
}

export interface Node extends LayoutPaths {
  name: string;
  suite: Suite;
  sudo: boolean;
  image: Image;
  ip: string;
  netns: string;
  /** PID of the systemd-nspawn process. */
  pid: number;
  /** PID (in our pid namespace) of the node's init (systemd). */
  leader: number;
  /** Host directory bind-mounted at the node's /var/lib. */
  varLib: string;
  /** Milliseconds from spawn to ready: sshd + containerd + kubelet active, or (k3s/rke2) converted and cri ok. */
  bootMs: number;
}

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  timeoutMs?: number;
  input?: string;
  /** Login user (default root); 'ops' is a non-root user with passwordless sudo on every image. */
  user?: string;
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
   * Arms a trap: the next start of the node's containerd unit that happens while a `ROOT.recover-*` backup exists
   * first breaks the layout's config.toml (invalid TOML), so the repaired start fails. Combine with a real break.
   */
  | 'bad-config'
  /**
   * A sandbox record without CRI metadata in the sandbox store (`ctr -n k8s.io sandboxes run SPEC ID`), then a
   * restart. 1.7 with ENABLE_CRI_SANDBOXES: `failed to recover state: failed to get metadata for stored sandbox
   * "ID": not found`, restart loop; 2.x with the fix (2.0.6+, 2.1.4+): logged, dropped, healthy; 1.6: throws.
   */
  | 'sandbox-record'
  /** K random in-use bolt data pages overwritten with random bytes (seeded); returns what containerd then did. */
  | 'random-pages'
  /** One of the two bolt meta pages scribbled: bolt opens from the other one, containerd stays healthy. */
  | 'meta-page';

export interface BreakOptions {
  /** containerd's data root on the node (default: the node's layout's). */
  root?: string;
  /** Deadline for the breakage to become visible (default 90 s). */
  timeoutMs?: number;
}
export interface RandomPagesOptions extends BreakOptions {
  /** How many distinct pages (default 3; fewer when the database has fewer in-use data pages). */
  pages?: number;
  /** PRNG seed for the page choice and the bytes (default: random; returned, to repeat a trial). */
  seed?: number;
  /** How long containerd must stay healthy to count as 'healthy' (default 10 s). */
  settleMs?: number;
}
export interface MetaPageOptions extends BreakOptions {
  /** The meta page to scribble (default 0). */
  page?: 0 | 1;
  seed?: number;
}
export interface SandboxRecordOptions extends BreakOptions {
  /** Sandbox id (default rb-dangling-<random hex>). */
  id?: string;
}

export interface BreakResult {
  kind: BreakKind;
  /** The log line that shows the breakage (a fatal/panic line), when there is one. */
  line?: string;
}
export interface RandomPagesResult extends BreakResult {
  /** Page ids overwritten (2 .. pgid-1 of the meta page in use), and the bolt page size. */
  pages: number[];
  pageSize: number;
  /** The high-water mark `pgid` and txid of the meta page in use before the corruption. */
  pgid: number;
  txid: number;
  seed: number;
  /**
   * restart-loop: containerd exited and systemd restarted it; plugin-error: running but bolt, overlayfs or cri not ok;
   * healthy: stayed healthy for the settle window; stuck: none of these by the deadline (e.g. hung in bolt open).
   */
  outcome: 'restart-loop' | 'plugin-error' | 'healthy' | 'stuck';
  health: Health;
}
export interface MetaPageResult extends BreakResult {
  page: 0 | 1;
  seed: number;
  health: Health;
}
export interface SandboxRecordResult extends BreakResult {
  id: string;
  /** containerd's version on the node (e.g. 1.7.24). */
  version: string;
  /**
   * restart-loop: the fatal `failed to get metadata for stored sandbox "ID": not found` line, restarted at least
   * twice; dropped: healthy and the record is gone (2.x with the fix); kept: healthy with the record still there.
   */
  outcome: 'restart-loop' | 'dropped' | 'kept';
  /** Log lines since the restart that name the id. */
  lines: string[];
  health: Health;
}

/** Position in a node's containerd log (a journal cursor, or a byte offset in the log file). */
export type LogMark = string;

export interface Fleet {
  /** The first node's image (every image shares one client key and one host key). */
  image: Image;
  network: Network;
  nodes: Node[];
  /** Working directory (outside the repo): per-node /var/lib copies, logs, inventory, known_hosts. */
  dir: string;
  /** Inventory YAML (all hosts; ansible_host/port/user root/ssh key). */
  inventory: string;
  /** known_hosts with every node's address and its image's host key. */
  knownHosts: string;
  node(name: string): Node;
  /** argv for `ssh` to a node (client key, strict known_hosts, batch mode), as root or `user`. */
  sshArgs(name: string, user?: string): string[];
  /** Runs a shell command on the node over SSH (OpenSSH client). Never throws for a non-zero exit. */
  exec(name: string, cmd: string, opts?: ExecOptions): Promise<ExecResult>;
  /** Like exec, but throws (with stderr) unless the exit code is 0; returns stdout. */
  sh(name: string, cmd: string, opts?: ExecOptions): Promise<string>;
  /** Breaks containerd on the node (the node's layout: unit, paths, ctr); returns once the breakage is visible. */
  break(name: string, kind: 'random-pages', opts?: RandomPagesOptions): Promise<RandomPagesResult>;
  break(name: string, kind: 'meta-page', opts?: MetaPageOptions): Promise<MetaPageResult>;
  break(name: string, kind: 'sandbox-record', opts?: SandboxRecordOptions): Promise<SandboxRecordResult>;
  break(name: string, kind: BreakKind, opts?: BreakOptions): Promise<BreakResult>;
  /** Starts a real container (namespace k8s.io) running /bin/sleep: a shim that survives stopping the unit. */
  runContainer(name: string, id: string): Promise<void>;
  /** The node's containerd health as a test sees it (independent of the runbooks). */
  health(name: string): Promise<Health>;
  /** Polls health() until healthy; throws with the last health after timeoutMs (default 60 s). */
  waitHealthy(name: string, timeoutMs?: number): Promise<Health>;
  /**
   * containerd's log lines on the node: since boot (journal: `journalctl -u containerd -b`; k3s/rke2: the log file,
   * after the log files of any `ROOT.recover-*` backups, which a wipe by move takes along), or since a logMark().
   */
  containerdLog(name: string, opts?: { since?: LogMark }): Promise<string>;
  /** The current end of the node's containerd log, for containerdLog({ since }). */
  logMark(name: string): Promise<LogMark>;
  /** Writes another inventory with some of the hosts and extra all-vars (override the defaults); returns its path. */
  writeInventory(file: string, hosts?: string[], vars?: Record<string, unknown>): string;
  /** Kills every node (by PID), removes namespaces, mounts and files. Idempotent. */
  destroy(): Promise<void>;
}

export interface Health {
  /** ActiveState of the node's containerd unit (containerd, k3s-agent or rke2-agent). */
  active: string;
  nRestarts: number;
  /** STATUS column of `ctr plugins ls` for bolt, overlayfs and cri ('' when ctr cannot answer). */
  plugins: { bolt: string; overlayfs: string; cri: string };
  /** True when active and bolt, overlayfs and cri are `ok`. */
  healthy: boolean;
}

/** Debian's containerd layout (the 'containerd' nodes); other layouts: layoutPaths() or the Node's fields. */
export const ROOT = '/var/lib/containerd';
export const META_DB = `${ROOT}/io.containerd.metadata.v1.bolt/meta.db`;

// ---------------------------------------------------------------------------------------------
// Image

const imageCache = new Map<Suite, Image>();

/**
 * Builds the suite's image if needed (test/harness/rootfs.sh SUITE: a few minutes once, then cached) and returns
 * where it is.
 */
export function ensureImage(suite: Suite = 'bookworm'): Image {
  refuseInUnitTier('ensureImage()');
  if (!SUITES.includes(suite)) throw new Error(`ensureImage: unknown suite ${suite} (${SUITES.join(', ')})`);
  const cached = imageCache.get(suite);
  if (cached) return cached;
  const r = spawnSync('bash', [join(HERE, 'rootfs.sh'), suite], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) throw new Error(`test/harness/rootfs.sh ${suite} failed (exit ${r.status}); see its output above`);
  const dir = r.stdout.trim().split('\n').pop()!;
  const image: Image = {
    suite,
    dir,
    rootfs: join(dir, 'rootfs'),
    clientKey: join(dir, 'client_key'),
    hostKey: readFileSync(join(dir, 'host_key.pub'), 'utf8').trim().split(/\s+/).slice(0, 2).join(' '),
    buildSeconds: Number(readFileSync(join(dir, 'build-seconds'), 'utf8').trim()),
  };
  imageCache.set(suite, image);
  return image;
}

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
// bbolt and reproducible randomness (for the corruption breaks)

/** The fields of a bbolt meta page: a 16-byte page header, then the meta struct (little endian). */
export interface BoltMeta {
  magic: number;
  version: number;
  pageSize: number;
  flags: number;
  root: number;
  freelist: number;
  /** High-water mark: pages 0 .. pgid-1 are in the file's use. */
  pgid: number;
  txid: number;
  /** Magic 0xED0CDAED, version 2 and the FNV-1a 64 checksum of the fields before it all hold. */
  valid: boolean;
}

export function parseBoltMeta(page: Buffer): BoltMeta | undefined {
  if (page.length < 80) return undefined;
  let h = 0xcbf29ce484222325n; // FNV-1a 64 over the meta fields before the checksum (bytes 16..71)
  for (const b of page.subarray(16, 72)) h = BigInt.asUintN(64, (h ^ BigInt(b)) * 0x100000001b3n);
  const m = {
    magic: page.readUInt32LE(16),
    version: page.readUInt32LE(20),
    pageSize: page.readUInt32LE(24),
    flags: page.readUInt32LE(28),
    root: Number(page.readBigUInt64LE(32)),
    freelist: Number(page.readBigUInt64LE(48)),
    pgid: Number(page.readBigUInt64LE(56)),
    txid: Number(page.readBigUInt64LE(64)),
  };
  return { ...m, valid: m.magic === 0xed0cdaed && m.version === 2 && page.readBigUInt64LE(72) === h };
}

/** mulberry32: a small seeded PRNG, so that a failing corruption trial can be repeated from its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(rand: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rand() * 256);
  return b;
}

/** Single-quotes a value for a POSIX shell. */
const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

// ---------------------------------------------------------------------------------------------
// Fleet

export interface BootOptions {
  /** The image for the nodes of its suite (default: ensureImage(suite)). */
  image?: Image;
  /** Defaults for the nodes given by name alone (or without these options): bookworm, containerd. */
  suite?: Suite;
  layout?: Layout;
  /** Seconds to wait for a node to be ready (default 120: generous for a slow, loaded machine). */
  bootTimeoutS?: number;
}

/**
 * Boots the nodes in parallel, one fleet. A node is a name (suite bookworm, layout containerd, with sudo: as
 * before) or a NodeSpec; BootOptions.suite/layout set the defaults.
 */
export async function bootFleet(specs: Array<string | NodeSpec>, opts: BootOptions = {}): Promise<Fleet> {
  refuseInUnitTier('bootFleet()');
  if (process.getuid?.() !== 0) throw new Error('bootFleet needs root (systemd-nspawn, network namespaces)');
  const missing = missingTools();
  if (missing.length) throw new Error(`missing: ${missing.join(', ')}`);
  const wanted = specs.map((s) => {
    const o = typeof s === 'string' ? { name: s } : s;
    const w = {
      name: o.name,
      suite: o.suite ?? opts.suite ?? opts.image?.suite ?? 'bookworm',
      layout: o.layout ?? opts.layout ?? 'containerd',
      sudo: o.sudo ?? true,
    };
    if (!SUITES.includes(w.suite)) throw new Error(`bootFleet: node ${w.name}: unknown suite ${w.suite} (${SUITES.join(', ')})`);
    if (!LAYOUTS.includes(w.layout)) throw new Error(`bootFleet: node ${w.name}: unknown layout ${w.layout} (${LAYOUTS.join(', ')})`);
    return w;
  });
  const names = wanted.map((w) => w.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) throw new Error(`bootFleet: node name ${dup} given twice`);
  if (names.length === 0) throw new Error('bootFleet: no nodes');
  const images = new Map<Suite, Image>();
  for (const w of wanted) if (!images.has(w.suite)) images.set(w.suite, opts.image?.suite === w.suite ? opts.image : ensureImage(w.suite));
  const image = images.get(wanted[0].suite)!;
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

  const sshArgs = (name: string, user = 'root'): string[] => {
    const n = fleet.node(name);
    return [
      '-i',
      n.image.clientKey,
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
      `${user}@${n.ip}`,
    ];
  };

  const exec = (name: string, cmd: string, o: ExecOptions = {}): Promise<ExecResult> =>
    new Promise((resolve) => {
      const child = execFile(
        'ssh',
        [...sshArgs(name, o.user), cmd],
        { encoding: 'utf8', timeout: o.timeoutMs ?? 60_000, maxBuffer: 64 << 20 },
        (err, stdout, stderr) => {
          const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null) : 0;
          resolve({ code, stdout, stderr });
        },
      );
      // ssh may exit before it has read all of stdin (a failing command): that is its exit code's business
      child.stdin!.on('error', () => {});
      if (o.input !== undefined) child.stdin!.end(o.input);
      else child.stdin!.end();
    });

  const sh = async (name: string, cmd: string, o: ExecOptions = {}): Promise<string> => {
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

  /** Shell that prints the node's containerd log, all of this boot or after a mark. */
  const logCmd = (n: Node, since?: LogMark): string => {
    if (n.log === 'journal') return `journalctl -u ${n.unit} -b -o cat --no-pager${since ? ` --after-cursor=${q(since)}` : ''}; true`;
    if (since !== undefined) {
      const [ino, off] = since.split(':');
      return `f=${n.log}; [ "$(stat -c %i "$f" 2>/dev/null)" = ${q(ino)} ] && o=${Number(off) || 0} || o=0; tail -c +$((o+1)) "$f" 2>/dev/null; true`;
    }
    return `for f in ${n.root}.recover-*/containerd.log ${n.log}; do [ -f "$f" ] && cat "$f"; done; true`;
  };
  const logMark = async (name: string): Promise<LogMark> => {
    const n = fleet.node(name);
    if (n.log === 'journal')
      return (await sh(name, `journalctl -q -n 1 --show-cursor -o cat --no-pager | sed -n 's/^-- cursor: //p'`)).trim();
    return (await sh(name, `stat -c %i:%s ${n.log} 2>/dev/null || echo 0:0`)).trim();
  };
  const containerdLog = async (name: string, o: { since?: LogMark } = {}): Promise<string> => sh(name, logCmd(fleet.node(name), o.since));
  const logSince = (name: string, mark: LogMark): Promise<string> => containerdLog(name, { since: mark });

  const health = async (name: string): Promise<Health> => {
    const n = fleet.node(name);
    const out = await sh(
      name,
      `systemctl show -p ActiveState --value ${n.unit}; systemctl show -p NRestarts --value ${n.unit};
      ${n.ctr} --connect-timeout 3s --timeout 10s plugins ls 2>/dev/null | awk '$2=="bolt"||$2=="overlayfs"||$2=="cri"{print $2"="$NF}'`,
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

  const waitHealthy = async (name: string, timeoutMs = 60_000): Promise<Health> => {
    let last: Health | undefined;
    return waitFor(
      async () => {
        last = await health(name);
        return last.healthy && last;
      },
      { what: `${name}: containerd healthy (${fleet.node(name).unit})`, timeoutMs, intervalMs: 250, detail: () => JSON.stringify(last) },
    );
  };

  /** Stops the node's containerd unit; fails unless containerd is gone and the bolt database is there. */
  const stopCmd = (n: Node, root: string): string =>
    `systemctl stop ${n.unit}; i=0; while pgrep -x containerd >/dev/null; do i=$((i+1)); [ $i -le 300 ] || { echo "containerd still runs after systemctl stop ${n.unit}" >&2; exit 1; }; sleep 0.1; done; DB=${root}/io.containerd.metadata.v1.bolt/meta.db; test -s "$DB"`;

  /** The two meta pages of the node's (stopped) bolt database. */
  const readMetas = async (name: string, db: string): Promise<[BoltMeta | undefined, BoltMeta | undefined]> => {
    const m0 = parseBoltMeta(Buffer.from((await sh(name, `head -c 128 ${db} | base64 -w0`)).trim(), 'base64'));
    const ps = m0?.valid ? m0.pageSize : 4096;
    const m1 = parseBoltMeta(
      Buffer.from((await sh(name, `dd if=${db} bs=${ps} skip=1 count=1 status=none | head -c 128 | base64 -w0`)).trim(), 'base64'),
    );
    return [m0, m1];
  };
  /** Overwrites whole pages of the database (node-side dd, fed base64 on stdin). */
  const writePages = async (name: string, db: string, pageSize: number, pages: Array<[number, Buffer]>): Promise<void> => {
    await sh(
      name,
      `while read -r p b; do printf %s "$b" | base64 -d | dd of=${db} bs=${pageSize} seek=$p count=1 conv=notrunc status=none || exit 1; done; sync`,
      { input: pages.map(([p, b]) => `${p} ${b.toString('base64')}\n`).join('') },
    );
  };
  const firstLine = (log: string, re: RegExp): string | undefined => log.split('\n').find((l) => re.test(l));
  const FATAL = /panic: |fatal error: |level=fatal|invalid database|unexpected fault/;

  const breakNode = async (name: string, kind: BreakKind, o: RandomPagesOptions & MetaPageOptions & SandboxRecordOptions = {}) => {
    const n = fleet.node(name);
    const ROOT = o.root ?? n.root;
    const U = n.unit;
    const deadline = o.timeoutMs ?? 90_000;
    const stop = stopCmd(n, ROOT);
    const since = (mark: LogMark) => logSince(name, mark);
    switch (kind) {
      case 'panic': {
        const mark = await logMark(name);
        await sh(
          name,
          `${stop}; dd if=/dev/zero of="$DB" bs=4096 seek=2 count=$(( $(stat -c%s "$DB")/4096 - 2 )) conv=notrunc status=none; systemctl start ${U} || true`,
        );
        await waitOn(
          name,
          `the panic restart loop (${U})`,
          `{ ${logCmd(n, mark)}; } | grep -qE 'panic: |fatal error: ' && test "$(systemctl show -p ActiveState --value ${U})" = activating`,
          deadline,
        );
        return { kind, line: firstLine(await since(mark), /panic: |fatal error: /) };
      }
      case 'silent':
        await sh(name, `${stop}; head -c 8192 /dev/urandom | dd of="$DB" conv=notrunc status=none; systemctl start ${U}`);
        await waitOn(name, 'the bolt plugin in error', `${n.ctr} --timeout 5s plugins ls | grep -E '\\sbolt\\s.*error'`, deadline);
        return { kind };
      case 'sandboxes-file': {
        const mark = await logMark(name);
        await sh(
          name,
          `${stop}; mkdir -p ${ROOT}/io.containerd.grpc.v1.cri && rm -rf ${ROOT}/io.containerd.grpc.v1.cri/sandboxes && touch ${ROOT}/io.containerd.grpc.v1.cri/sandboxes; systemctl start ${U} || true`,
        );
        await waitOn(name, 'the fatal CRI recovery', `{ ${logCmd(n, mark)}; } | grep -q 'failed to recover state'`, deadline);
        return { kind, line: firstLine(await since(mark), /failed to recover state/) };
      }
      case 'bolt-lock':
        await sh(
          name,
          // containerd starts only once the holder has the lock (flock -n succeeds while nobody holds it)
          `${stop}; systemd-run --quiet --unit=rb-boltlock --collect flock "$DB" sleep infinity || exit 1; n=0; while flock -n "$DB" true; do n=$((n+1)); [ $n -le 600 ] || { echo "rb-boltlock never took the lock on $DB" >&2; exit 1; }; sleep 0.1; done; systemctl start --no-block ${U}`,
        );
        await waitOn(
          name,
          'containerd blocked in bolt open',
          `test "$(systemctl show -p ActiveState --value ${U})" = activating && grep -q FLOCK /proc/locks`,
          deadline,
        );
        return { kind };
      case 'bad-config': {
        const cfg = n.config;
        const marker = `${dirname(cfg)}/.rb-broken`;
        // A script, not `sh -c '...'` in the unit: systemd would split a quoted script at the quotes inside it.
        await sh(
          name,
          `cat > /usr/local/sbin/rb-bad-config-trap <<'EOF'
#!/bin/sh
# Test harness (break 'bad-config'): the first start while a backup of the data root exists breaks the config.
for b in ${ROOT}.recover-*; do
  if [ -d "$b" ] && ! [ -e ${marker} ]; then
    mkdir -p ${dirname(cfg)}; printf '\\n[[[ this is not toml\\n' >> ${cfg}; touch ${marker}
  fi
done
exit 0
EOF
chmod 755 /usr/local/sbin/rb-bad-config-trap
mkdir -p /etc/systemd/system/${U}.service.d && cat > /etc/systemd/system/${U}.service.d/50-rb-bad-config.conf <<'EOF'
[Service]
ExecStartPre=/usr/local/sbin/rb-bad-config-trap
EOF
systemctl daemon-reload`,
        );
        return { kind };
      }
      case 'sandbox-record':
        return sandboxRecord(n, o);
      case 'random-pages':
        return randomPages(n, o);
      case 'meta-page':
        return metaPage(n, o);
      default:
        throw new Error(`break: unknown kind ${String(kind)}`);
    }
  };

  const containerdVersion = async (n: Node): Promise<string> => {
    const bin = n.layout === 'rke2' ? '/var/lib/rancher/rke2/bin/containerd' : 'containerd';
    const out = await sh(n.name, `${bin} --version`);
    const m = /^v?(\d+\.\d+\.\d+)/.exec(out.trim().split(/\s+/)[2] ?? '');
    if (!m) throw new Error(`${n.name}: cannot read containerd's version from: ${out.trim()}`);
    return m[1];
  };

  const sandboxRecord = async (n: Node, o: SandboxRecordOptions): Promise<SandboxRecordResult> => {
    const name = n.name;
    const version = await containerdVersion(n);
    const [major, minor] = version.split('.').map(Number);
    if (major === 1 && minor < 7)
      throw new Error(
        `${name}: break 'sandbox-record' needs containerd's sandbox store; containerd ${version} (${n.suite}) has none (1.6). Use a trixie node (1.7 with ENABLE_CRI_SANDBOXES=1) or a sid node (2.x)`,
      );
    await waitHealthy(name);
    const id = o.id ?? `rb-dangling-${Math.floor(Math.random() * 2 ** 32).toString(16)}`;
    // A record made through the sandbox API, never through CRI: no CRI metadata extension, as after the crash.
    const made = await exec(
      name,
      `echo '{}' > /run/rb-sandbox-${id}.json && ${n.ctr} -n k8s.io sandboxes run /run/rb-sandbox-${id}.json ${id}`,
    );
    const listed = await sh(name, `${n.ctr} -n k8s.io sandboxes ls`);
    if (!listed.split('\n').some((l) => l.split(/\s+/)[0] === id))
      throw new Error(
        `${name}: \`ctr sandboxes run\` left no record ${id} (exit ${made.code}: ${(made.stderr + made.stdout).trim()}); sandboxes: ${listed.trim()}`,
      );
    const mark = await logMark(name);
    const before = (await health(name)).nRestarts;
    await sh(name, `systemctl restart --no-block ${n.unit}`);
    // In containerd's logfmt line the quotes around the id are escaped: ...stored sandbox \"ID\": not found"
    const fatal = (l: string) => l.includes(`failed to get metadata for stored sandbox \\"${id}\\": not found`);
    let last: Health | undefined;
    let lines: string[] = [];
    let healthySince = 0;
    const outcome = await waitFor(
      async (): Promise<SandboxRecordResult['outcome'] | undefined> => {
        lines = (await logSince(name, mark)).split('\n').filter((l) => l.includes(id));
        last = await health(name);
        if (lines.some(fatal)) return last.nRestarts >= before + 2 ? 'restart-loop' : undefined;
        if (!last.healthy) {
          healthySince = 0;
          return undefined;
        }
        healthySince ||= Date.now();
        const still = (await sh(name, `${n.ctr} -n k8s.io sandboxes ls`)).split('\n').some((l) => l.split(/\s+/)[0] === id);
        const settled = Date.now() - healthySince >= 10_000;
        if (!still && (lines.length > 0 || settled)) return 'dropped';
        return still && settled ? 'kept' : undefined;
      },
      {
        what: `${name}: containerd ${version} to crash on, drop or keep the sandbox record ${id}`,
        timeoutMs: o.timeoutMs ?? 120_000,
        intervalMs: 500,
        detail: async () => `${JSON.stringify(last)}; log since the restart: ${(await logSince(name, mark)).slice(-2000)}`,
      },
    );
    const line = lines.find(fatal) ?? lines[0];
    return { kind: 'sandbox-record', id, version, outcome, line, lines, health: last! };
  };

  const randomPages = async (n: Node, o: RandomPagesOptions): Promise<RandomPagesResult> => {
    const name = n.name;
    const seed = o.seed ?? Math.floor(Math.random() * 2 ** 31);
    const rand = prng(seed);
    const db = `${o.root ?? n.root}/io.containerd.metadata.v1.bolt/meta.db`;
    await sh(name, stopCmd(n, o.root ?? n.root));
    const metas = (await readMetas(name, db)).filter((m): m is BoltMeta => !!m?.valid);
    if (!metas.length) throw new Error(`${name}: ${db} has no valid meta page: not a bolt database to corrupt`);
    const meta = metas.sort((a, b) => b.txid - a.txid)[0];
    const candidates = Array.from({ length: Math.max(0, meta.pgid - 2) }, (_, i) => i + 2);
    const k = Math.min(o.pages ?? 3, candidates.length);
    if (k === 0) throw new Error(`${name}: ${db} has no data pages (pgid ${meta.pgid})`);
    for (let i = 0; i < k; i++) {
      const j = i + Math.floor(rand() * (candidates.length - i));
      [candidates[i], candidates[j]] = [candidates[j], candidates[i]];
    }
    const pages = candidates.slice(0, k).sort((a, b) => a - b);
    await writePages(
      name,
      db,
      meta.pageSize,
      pages.map((p) => [p, randomBytes(rand, meta.pageSize)]),
    );
    const mark = await logMark(name);
    const before = (await health(name)).nRestarts;
    await sh(name, `systemctl start --no-block ${n.unit}`);
    const settleMs = o.settleMs ?? 10_000;
    let last: Health | undefined;
    let healthySince = 0;
    let outcome: RandomPagesResult['outcome'];
    try {
      outcome = await waitFor(
        async (): Promise<RandomPagesResult['outcome'] | undefined> => {
          last = await health(name);
          const sub = (await sh(name, `systemctl show -p SubState --value ${n.unit}`)).trim();
          if (last.nRestarts > before || sub === 'auto-restart' || last.active === 'failed') return 'restart-loop';
          const listed = Object.values(last.plugins).some((s) => s !== '');
          if (last.active === 'active' && listed && !last.healthy) return 'plugin-error';
          if (!last.healthy) {
            healthySince = 0;
            return undefined;
          }
          healthySince ||= Date.now();
          return Date.now() - healthySince >= settleMs ? 'healthy' : undefined;
        },
        {
          what: `${name}: containerd after random pages ${pages.join(',')} (seed ${seed})`,
          timeoutMs: o.timeoutMs ?? 90_000,
          intervalMs: 250,
        },
      );
    } catch {
      outcome = 'stuck';
    }
    const line = firstLine(await logSince(name, mark), FATAL);
    return { kind: 'random-pages', pages, pageSize: meta.pageSize, pgid: meta.pgid, txid: meta.txid, seed, outcome, line, health: last! };
  };

  const metaPage = async (n: Node, o: MetaPageOptions): Promise<MetaPageResult> => {
    const name = n.name;
    const seed = o.seed ?? Math.floor(Math.random() * 2 ** 31);
    const page = o.page ?? 0;
    const db = `${o.root ?? n.root}/io.containerd.metadata.v1.bolt/meta.db`;
    await sh(name, stopCmd(n, o.root ?? n.root));
    const valid = (await readMetas(name, db)).filter((m): m is BoltMeta => !!m?.valid);
    if (!valid.length) throw new Error(`${name}: ${db} has no valid meta page: not a bolt database to scribble on`);
    const pageSize = valid[0].pageSize;
    await writePages(name, db, pageSize, [[page, randomBytes(prng(seed), pageSize)]]);
    const mark = await logMark(name);
    await sh(name, `systemctl start --no-block ${n.unit}`);
    let h: Health;
    try {
      h = await waitHealthy(name, o.timeoutMs ?? 90_000);
    } catch (e) {
      throw new Error(
        `${name}: meta page ${page} scribbled (seed ${seed}): containerd did not come up healthy from the other meta page: ${(e as Error).message}; log: ${(await containerdLog(name, { since: mark })).slice(-2000)}`,
      );
    }
    return { kind: 'meta-page', page, seed, health: h };
  };

  const writeInventory = (file: string, hosts: string[] = nodes.map((n) => n.name), vars: Record<string, unknown> = {}): string => {
    const all: Record<string, unknown> = { ansible_user: 'root', ansible_ssh_private_key_file: image.clientKey, ...vars };
    const lines = ['all:', '  vars:'];
    for (const [k, v] of Object.entries(all)) lines.push(`    ${k}: ${JSON.stringify(v)}`);
    lines.push('  hosts:');
    const key = readFileSync(image.clientKey, 'utf8');
    for (const h of hosts) {
      const n = fleet.node(h);
      lines.push(`    ${n.name}:`, `      ansible_host: ${n.ip}`, '      ansible_port: 22');
      // Every image normally shares one key; a node of an image built with another key gets its own.
      if (!('ansible_ssh_private_key_file' in vars) && readFileSync(n.image.clientKey, 'utf8') !== key)
        lines.push(`      ansible_ssh_private_key_file: ${JSON.stringify(n.image.clientKey)}`);
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
    waitHealthy,
    containerdLog,
    logMark,
    writeInventory,
    break: breakNode as Fleet['break'],
    runContainer: async (name, id) => {
      const n = fleet.node(name);
      await sh(name, `CTR=${q(n.ctr)} STATE=${n.state} rb-test-container ${id}`);
      await waitOn(name, `container ${id} running`, `${n.ctr} -n k8s.io task ls | grep -qE '^${id}\\s+[0-9]+\\s+RUNNING'`);
    },
    async destroy() {
      destroySync();
      unregister();
    },
  };

  /** A k3s/rke2 node: Debian's containerd and the dummy kubelet go (as if never installed), the agent unit comes. */
  const convert = async (n: Node, limitMs: number): Promise<void> => {
    await sh(
      n.name,
      `set -e
systemctl disable --now --quiet kubelet.service containerd.service
rm -f /etc/systemd/system/kubelet.service /usr/lib/systemd/system/containerd.service /lib/systemd/system/containerd.service
rm -rf /etc/systemd/system/containerd.service.d /var/lib/containerd /run/containerd /etc/containerd
systemctl daemon-reload
test "$(systemctl show -p LoadState --value containerd)" = not-found
systemctl enable --now --quiet ${n.unit}`,
      { timeoutMs: limitMs },
    );
    await waitHealthy(n.name, limitMs);
  };

  const spawnedAt = new Map<string, number>();
  try {
    await Promise.all(
      wanted.map(async (w) => {
        const { name } = w;
        const img = images.get(w.suite)!;
        const h = await network.addHost(name);
        const nd = join(dir, name);
        mkdirSync(nd);
        const varLib = join(nd, 'var-lib');
        const cp = spawnSync('cp', ['-a', join(img.rootfs, 'var/lib'), varLib]);
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
            img.rootfs,
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
        const node: Node = {
          ...layoutPaths(w.layout),
          name,
          suite: w.suite,
          sudo: w.sudo,
          image: img,
          ip: h.ip,
          netns: h.netns,
          pid: child.pid!,
          leader: 0,
          varLib,
          bootMs: 0,
        };
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
    writeFileSync(knownHosts, nodes.map((n) => `${n.ip} ${n.image.hostKey}\n`).join(''));
    writeInventory(fleet.inventory);
    const limitMs = (opts.bootTimeoutS ?? 120) * 1000;
    await Promise.all(
      nodes.map(async (n) => {
        await waitOn(n.name, 'sshd, containerd and kubelet', 'systemctl is-active --quiet ssh containerd kubelet', limitMs);
        if (n.layout !== 'containerd') await convert(n, limitMs);
        if (!n.sudo)
          await sh(n.name, 'SUDO_FORCE_REMOVE=yes dpkg --purge sudo >/dev/null && rm -f /etc/sudoers.d/ops && ! command -v sudo');
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

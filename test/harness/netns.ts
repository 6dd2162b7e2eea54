/**
 * Test harness: private Linux networks made of network namespaces on a bridge.
 *
 *   import { canUseNamespaces, createNetwork } from './harness/netns.js';
 *   if (canUseNamespaces()) {
 *     const net = await createNetwork('rbx');            // bridge rbbrN, subnet 10.213.N.0/24, controller = 10.213.N.1
 *     const h = await net.addHost('node1');              // { netns: 'rbxN-node1', ip: '10.213.N.2', ... }
 *     // run things inside: `ip netns exec ${h.netns} ...` (or nsenter --net=/run/netns/${h.netns})
 *     await net.destroy();                               // kills every PID in the namespaces, deletes netns/veths/bridge
 *   }
 *
 * Allocation: each network owns the directory /run/runbook-test/net-N (created with an atomic mkdir; the `owner`
 * file holds "pid starttime"). N picks the subnet 10.213.N.0/24 and the bridge name rbbrN, so parallel test files
 * and several developers on one machine never collide. A network whose owner process died (SIGKILL) is reclaimed
 * by the next createNetwork(). Live networks are also destroyed on process exit / SIGINT / SIGTERM.
 *
 * Inside a host namespace the interface is `eth0` (address ip/24, default route via the controller address);
 * `lo` is up. The controller (root network namespace) reaches every host IP through the bridge; nothing is
 * forwarded beyond it.
 */
import { execFileSync, execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pollSync, refuseInUnitTier } from './wait.js';

const execFileP = promisify(execFile);

export const STATE_DIR = '/run/runbook-test';
const SUBNET_BASE = '10.213';

export interface NetHost {
  /** Name given to addHost. */
  name: string;
  /** Network namespace name (a file under /run/netns). */
  netns: string;
  /** Host address on the bridge (the /24 of its network). */
  ip: string;
  /** Interface name inside the namespace. */
  ifname: 'eth0';
  /** Host-side (root namespace) veth name, attached to the bridge. */
  veth: string;
}

export interface Network {
  /** N: subnet 10.213.N.0/24, bridge rbbrN. */
  readonly id: number;
  readonly bridge: string;
  /** e.g. "10.213.7.0/24" */
  readonly subnet: string;
  /** Controller's address on the bridge, e.g. "10.213.7.1" (also the hosts' default gateway). */
  readonly gateway: string;
  /** Lock/marker directory /run/runbook-test/net-N (free for the owner to keep small state files in). */
  readonly dir: string;
  readonly hosts: NetHost[];
  addHost(name: string): Promise<NetHost>;
  /** Kill every process in the namespaces, delete namespaces, veths, bridge and the marker dir. Idempotent. */
  destroy(): Promise<void>;
}

/** True when this process can create namespaces: root, `ip` and `unshare` available. */
export function canUseNamespaces(): boolean {
  refuseInUnitTier('canUseNamespaces()');
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return false;
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
    execFileSync('unshare', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Exit-time cleanup registry (sync functions; run once, in reverse registration order).

const cleanups = new Set<() => void>();
let handlersInstalled = false;

function runCleanups(): void {
  for (const fn of [...cleanups].reverse()) {
    cleanups.delete(fn);
    try {
      fn();
    } catch {
      /* best effort at exit */
    }
  }
}

/**
 * Registers a synchronous cleanup to run at process exit, SIGINT or SIGTERM (for harness users that start
 * processes/mounts of their own). Returns an unregister function.
 */
export function registerCleanup(fn: () => void): () => void {
  if (!handlersInstalled) {
    handlersInstalled = true;
    process.on('exit', runCleanups);
    for (const [sig, code] of [
      ['SIGINT', 130],
      ['SIGTERM', 143],
      ['SIGHUP', 129],
    ] as const) {
      process.on(sig, () => {
        runCleanups();
        process.exit(code);
      });
    }
  }
  cleanups.add(fn);
  return () => {
    cleanups.delete(fn);
  };
}

// ---------------------------------------------------------------------------------------------

function ipSync(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

async function ip(args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP('ip', args, { encoding: 'utf8' });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')} failed: ${err.stderr?.trim() || err.message}`);
  }
}

/** Start time of a process (field 22 of /proc/PID/stat), undefined when it is gone. */
export function procStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // field 22 (starttime); fields after the ")" of comm
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function ownerAlive(dir: string): boolean {
  try {
    const [pidS, start] = readFileSync(join(dir, 'owner'), 'utf8').trim().split(/\s+/);
    const pid = Number(pidS);
    return Number.isInteger(pid) && pid > 0 && procStartTime(pid) === start;
  } catch {
    // no owner file yet: being created right now (or a crash between mkdir and write); treat as alive if young
    try {
      const age = Date.now() - Number(execFileSync('stat', ['-c', '%Y', dir], { encoding: 'utf8' }).trim()) * 1000;
      return age < 60_000;
    } catch {
      return false;
    }
  }
}

/** PIDs (root pid namespace) of every process in a network namespace. */
export function netnsPids(netns: string): number[] {
  try {
    return ipSync(['netns', 'pids', netns]).split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Kill all processes in netns (SIGKILL), wait until gone (<= 30 s: a loaded machine reaps slowly), delete the namespace. */
function deleteNetnsSync(netns: string): void {
  pollSync(() => {
    const pids = netnsPids(netns);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    return pids.length === 0;
  }, 30_000);
  try {
    ipSync(['netns', 'del', netns]);
  } catch {
    /* already gone */
  }
}

function linkExists(name: string): boolean {
  return existsSync(`/sys/class/net/${name}`);
}

function destroyDirSync(dir: string, id: number): void {
  if (existsSync(join(dir, 'foreign'))) {
    rmSync(dir, { recursive: true, force: true });
    return;
  }
  let names: string[] = [];
  try {
    names = readFileSync(join(dir, 'netns'), 'utf8').split('\n').filter(Boolean);
  } catch {
    /* none */
  }
  for (const ns of names) deleteNetnsSync(ns);
  let veths: string[] = [];
  try {
    veths = readFileSync(join(dir, 'veths'), 'utf8').split('\n').filter(Boolean);
  } catch {
    /* none */
  }
  for (const v of veths)
    if (linkExists(v)) {
      try {
        ipSync(['link', 'del', v]);
      } catch {
        /* gone with its peer */
      }
    }
  const bridge = `rbbr${id}`;
  if (linkExists(bridge)) {
    try {
      ipSync(['link', 'del', bridge]);
    } catch {
      /* gone */
    }
  }
  rmSync(dir, { recursive: true, force: true });
}

/** Reclaim networks whose owner process is gone (a SIGKILLed test run). */
function reclaimStale(): void {
  let entries: string[] = [];
  try {
    entries = readdirSync(STATE_DIR);
  } catch {
    return;
  }
  for (const e of entries) {
    const m = /^net-(\d+)$/.exec(e);
    if (!m) continue;
    const dir = join(STATE_DIR, e);
    if (!ownerAlive(dir)) {
      // take it over atomically-ish: rename so two reclaimers do not both work on it
      const tmp = `${dir}.reclaim-${process.pid}`;
      try {
        execFileSync('mv', ['-T', dir, tmp], { stdio: 'ignore' });
      } catch {
        continue;
      }
      destroyDirSync(tmp, Number(m[1]));
    }
  }
  // leftovers of interrupted reclaims
  for (const e of entries) {
    const m = /^net-(\d+)\.reclaim-(\d+)$/.exec(e);
    if (m && procStartTime(Number(m[2])) === undefined) destroyDirSync(join(STATE_DIR, e), Number(m[1]));
  }
}

function subnetInUse(id: number): boolean {
  if (linkExists(`rbbr${id}`)) return true;
  const addrs = ipSync(['-o', '-4', 'addr', 'show']);
  const routes = ipSync(['-4', 'route', 'show']);
  const prefix = `${SUBNET_BASE}.${id}.`;
  return addrs.includes(` ${prefix}`) || routes.split('\n').some((l) => l.startsWith(prefix));
}

function sanitize(s: string): string {
  return s.replace(/[^A-Za-z0-9_.-]/g, '_');
}

/**
 * Creates a bridge with a fresh private /24 (controller address .1) and returns a Network to add hosts to.
 * `prefix` starts the namespace names: `${prefix}${N}-${hostName}`.
 */
export async function createNetwork(prefix = 'rb'): Promise<Network> {
  refuseInUnitTier('createNetwork()');
  if (!canUseNamespaces()) throw new Error('createNetwork needs root, iproute2 (ip) and util-linux (unshare)');
  mkdirSync(STATE_DIR, { recursive: true, mode: 0o755 });
  reclaimStale();
  let id = 0;
  let dir = '';
  for (let n = 1; n <= 250 && id === 0; n++) {
    const d = join(STATE_DIR, `net-${n}`);
    try {
      mkdirSync(d);
    } catch {
      continue;
    }
    writeFileSync(join(d, 'owner'), `${process.pid} ${procStartTime(process.pid)}\n`);
    if (subnetInUse(n)) {
      // someone else (not through this harness) uses it: keep the marker so nobody retries it in this run
      writeFileSync(join(d, 'foreign'), 'subnet or bridge in use outside the harness\n');
      foreignMarkers.push(d);
      continue;
    }
    id = n;
    dir = d;
  }
  if (id === 0) throw new Error(`no free test subnet ${SUBNET_BASE}.1-250.0/24 (see ${STATE_DIR})`);

  const bridge = `rbbr${id}`;
  const gateway = `${SUBNET_BASE}.${id}.1`;
  const hosts: NetHost[] = [];
  let destroyed = false;
  let nextHost = 2;

  const destroySync = (): void => {
    if (destroyed) return;
    destroyed = true;
    destroyDirSync(dir, id);
  };
  const unregister = registerCleanup(destroySync);

  try {
    await ip(['link', 'add', bridge, 'type', 'bridge']);
    await ip(['addr', 'add', `${gateway}/24`, 'dev', bridge]);
    await ip(['link', 'set', bridge, 'up']);
  } catch (e) {
    destroySync();
    unregister();
    throw e;
  }

  const network: Network = {
    id,
    bridge,
    subnet: `${SUBNET_BASE}.${id}.0/24`,
    gateway,
    dir,
    hosts,
    async addHost(name: string): Promise<NetHost> {
      if (destroyed) throw new Error('network destroyed');
      if (hosts.some((h) => h.name === name)) throw new Error(`host ${name} already exists on ${bridge}`);
      const idx = nextHost++;
      if (idx > 254) throw new Error(`network ${bridge} is full`);
      const netns = sanitize(`${prefix}${id}-${name}`);
      const veth = `rbv${id}x${idx}`;
      const peer = `rbp${id}x${idx}`;
      const hostIp = `${SUBNET_BASE}.${id}.${idx}`;
      appendFileSync(join(dir, 'netns'), `${netns}\n`);
      appendFileSync(join(dir, 'veths'), `${veth}\n`);
      await ip(['netns', 'add', netns]);
      await ip(['link', 'add', veth, 'type', 'veth', 'peer', 'name', peer]);
      await ip(['link', 'set', peer, 'netns', netns]);
      await ip(['link', 'set', veth, 'master', bridge, 'up']);
      await ip(['-n', netns, 'link', 'set', 'lo', 'up']);
      await ip(['-n', netns, 'link', 'set', peer, 'name', 'eth0']);
      await ip(['-n', netns, 'addr', 'add', `${hostIp}/24`, 'dev', 'eth0']);
      await ip(['-n', netns, 'link', 'set', 'eth0', 'up']);
      await ip(['-n', netns, 'route', 'add', 'default', 'via', gateway]);
      const h: NetHost = { name, netns, ip: hostIp, ifname: 'eth0', veth };
      hosts.push(h);
      return h;
    },
    async destroy(): Promise<void> {
      destroySync();
      unregister();
    },
  };
  return network;
}

const foreignMarkers: string[] = [];
registerCleanupLazy();
function registerCleanupLazy(): void {
  // markers for subnets found in use by others are released at exit (they are only a per-run hint)
  process.on('exit', () => {
    for (const d of foreignMarkers) rmSync(d, { recursive: true, force: true });
  });
}

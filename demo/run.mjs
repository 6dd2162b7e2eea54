#!/usr/bin/env node
// npm run demo: a sandbox fleet of three real Debian 12 nodes (systemd + containerd 1.6 in systemd-nspawn) on
// this machine, one of them broken the way production nodes break (a pod running, then a corrupt meta.db:
// containerd panics in a restart loop), repaired before your eyes by `runbook apply containerd-recover`.
// Everything is torn down at the end, and on Ctrl-C (after the runbook has rolled back what it was doing).
//
// Needs root and: systemd-nspawn (systemd-container), debootstrap, ip (iproute2), ssh (openssh-client).
// Missing ones are installed with apt-get, each announced on its own line; DEMO_NO_INSTALL=1 only lists them.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const REPO = new URL('..', import.meta.url).pathname;
const BIN = join(REPO, 'bin/runbook');
const NODES = ['node1', 'node2', 'node3'];
const BROKEN = 'node2';
const bold = (s) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (s = '') => console.log(s);
const step = (n, s) => say(bold(`\n[${n}/6] ${s}`));

if (process.getuid?.() !== 0) {
  console.error('The demo boots containers and network namespaces: run it as root (sudo npm run demo).');
  process.exit(1);
}

// 1. Tools: check, and install what is missing with a clear line each (never silently).
step(1, 'Checking what the sandbox needs');
const TOOLS = [
  ['systemd-nspawn', 'systemd-container'],
  ['debootstrap', 'debootstrap'],
  ['ip', 'iproute2'],
  ['ssh', 'openssh-client'],
];
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const missing = TOOLS.filter(([cmd]) => !has(cmd));
for (const [cmd, pkg] of TOOLS) say(`  ${has(cmd) ? 'ok     ' : 'MISSING'} ${cmd.padEnd(15)} (apt package ${pkg})`);
if (missing.length) {
  const pkgs = missing.map(([, pkg]) => pkg);
  if (process.env.DEMO_NO_INSTALL === '1' || !has('apt-get')) {
    console.error(`\nMissing: ${pkgs.join(' ')}. Install them with: apt-get install -y ${pkgs.join(' ')}`);
    process.exit(1);
  }
  for (const pkg of pkgs) {
    say(`  installing ${pkg}: apt-get install -y --no-install-recommends ${pkg}`);
    let r = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', pkg], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
    if (r.status !== 0) {
      say('  (apt-get update first)');
      spawnSync('apt-get', ['update'], { stdio: ['ignore', 'ignore', 'inherit'] });
      r = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', pkg], {
        stdio: ['ignore', 'ignore', 'inherit'],
        env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      });
    }
    if (r.status !== 0) {
      console.error(`could not install ${pkg}; install it by hand and run the demo again`);
      process.exit(1);
    }
  }
  const still = TOOLS.filter(([cmd]) => !has(cmd));
  if (still.length) {
    console.error(`still missing after install: ${still.map(([c]) => c).join(', ')}`);
    process.exit(1);
  }
}
if (spawnSync(BIN, ['--version'], { stdio: 'ignore' }).status !== 0) {
  console.error(`${BIN} does not run: build the project first (npm ci, or npm run build).`);
  process.exit(1);
}

// The harness is TypeScript (shared with the tests): load it through tsx.
const { register } = await import('tsx/esm/api');
register();
const { ensureImage, bootFleet } = await import('../test/harness/nspawn.ts');

// 2. Image: built once (debootstrap, 1-2 min), cached outside the repo.
step(2, 'Node image (Debian 12 + systemd + containerd 1.6 + sshd, built once and cached)');
let t = Date.now();
const image = ensureImage();
say(
  `  ${image.dir}  (${Date.now() - t > 5000 ? `built now in ${Math.round((Date.now() - t) / 1000)} s` : `cached; the build took ${image.buildSeconds} s`})`,
);

// 3. Boot.
step(3, `Booting ${NODES.join(', ')} (systemd-nspawn, each in its own network namespace)`);
t = Date.now();
let fleet;
let child;
let interrupted = false;
let tornDown = false;
const teardown = async () => {
  if (tornDown || !fleet) return;
  tornDown = true;
  say(bold('\nTearing the sandbox down'));
  await fleet.destroy();
  say('  done: node processes, network namespaces, mounts and files are gone');
};
fleet = await bootFleet(NODES);
// Ctrl-C: let a running runbook roll back first (it gets the SIGINT too), then tear down.
process.removeAllListeners('SIGINT');
process.removeAllListeners('SIGTERM');
const onSignal = (sig) => {
  if (interrupted) return;
  interrupted = true;
  say(`\n${sig}: ${child && child.exitCode === null ? 'waiting for runbook to roll back, then ' : ''}tearing down`);
  if (!child || child.exitCode !== null) void teardown().then(() => process.exit(130));
};
process.on('SIGINT', () => onSignal('SIGINT'));
process.on('SIGTERM', () => {
  child?.kill('SIGTERM');
  onSignal('SIGTERM');
});

try {
  say(`  up in ${((Date.now() - t) / 1000).toFixed(1)} s: ${fleet.nodes.map((n) => `${n.name} ${n.ip}`).join(', ')}`);
  say(`  sandbox: ${fleet.dir}, network namespaces ${fleet.nodes.map((n) => n.netns).join(' ')}`);
  say(`  ${BROKEN}: starting a container (a pod), then corrupting containerd's meta.db (zeroed data pages)`);
  await fleet.runContainer(BROKEN, 'web');
  await fleet.break(BROKEN, 'panic');

  // 4. Before.
  step(4, 'Before: containerd on each node, as seen over SSH (not by the runbook)');
  await table();

  // 5. The repair.
  const stateDir = join(fleet.dir, 'runbook-state');
  mkdirSync(stateDir);
  const args = ['apply', 'containerd-recover', '-i', fleet.inventory, '--known-hosts', fleet.knownHosts, '--state-dir', stateDir, '--yes'];
  step(5, `The repair: runbook ${args.join(' ')}`);
  say('');
  const code = await new Promise((resolve) => {
    child = spawn(BIN, args, { stdio: 'inherit', cwd: REPO });
    child.on('close', (c, s) => resolve(c ?? 128 + (s === 'SIGKILL' ? 9 : s === 'SIGTERM' ? 15 : 2)));
  });
  say(
    `\n  runbook exited ${code}${code === 0 ? '' : code === 130 ? ' (interrupted; it rolled back what it was doing)' : ' (see its summary above)'}`,
  );
  if (interrupted) {
    await teardown();
    process.exit(130);
  }

  // 6. After.
  step(6, 'After: containerd on each node, checked over SSH');
  await table();
  const bk = await fleet.exec(BROKEN, 'ls -d /var/lib/containerd.recover-* 2>/dev/null');
  say(`  ${BROKEN} keeps its old data as a backup: ${bk.stdout.trim().split('\n').join(', ') || '(none)'}`);
  say('  (runbook containerd-prune-backups removes such backups after a retention, 3 days by default)');
  process.exitCode = code;
} catch (e) {
  console.error(`demo failed: ${e instanceof Error ? e.message : e}`);
  process.exitCode = 1;
} finally {
  await teardown();
}

async function table() {
  say(
    `  ${'NODE'.padEnd(7)}${'CONTAINERD'.padEnd(13)}${'RESTARTS'.padEnd(10)}${'bolt'.padEnd(7)}${'overlayfs'.padEnd(11)}${'cri'.padEnd(7)}VERDICT`,
  );
  for (const n of NODES) {
    const h = await fleet.health(n);
    say(
      `  ${n.padEnd(7)}${h.active.padEnd(13)}${String(h.nRestarts).padEnd(10)}${(h.plugins.bolt || '-').padEnd(7)}${(h.plugins.overlayfs || '-').padEnd(11)}${(h.plugins.cri || '-').padEnd(7)}${h.healthy ? 'healthy' : 'BROKEN'}`,
    );
  }
}

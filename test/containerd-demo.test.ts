/**
 * `npm run demo` (node demo/run.mjs) end to end: it finds its tools, boots the sandbox fleet, repairs the broken
 * node, and leaves nothing behind; on Ctrl-C during the repair it lets the runbook roll back, then tears down.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, mkdtempSync, symlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './containerd-common.js';

interface DemoRun {
  code: number | null;
  out: string;
}

function demo(onOutput?: (all: string, child: ReturnType<typeof spawn>) => void, env: Record<string, string> = {}): Promise<DemoRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(REPO, 'demo/run.mjs')], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, DEMO_NO_INSTALL: '1', ...env },
    });
    let out = '';
    // generous: image build on first use, three boots and a repair on a slow, loaded machine
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`demo did not end within 10 minutes:\n${out}`));
    }, 600_000);
    const add = (d: Buffer) => {
      out += d.toString();
      onOutput?.(out, child);
    };
    child.stdout!.on('data', add);
    child.stderr!.on('data', add);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** What the demo created (from its own output) and whether any of it is still there. */
function leftovers(out: string): string[] {
  const m = /sandbox: (\S+), network namespaces (.+)/.exec(out);
  assert.ok(m, `the demo names its sandbox:\n${out}`);
  const [, dir, nets] = m;
  const left: string[] = [];
  if (existsSync(dir)) left.push(dir);
  for (const ns of nets.trim().split(/\s+/)) if (existsSync(`/run/netns/${ns}`)) left.push(`netns ${ns}`);
  if (readFileSync('/proc/self/mountinfo', 'utf8').includes(dir)) left.push(`mounts under ${dir}`);
  for (const p of readdirProcs()) {
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(dir)) left.push(`process ${p}`);
    } catch {
      /* gone */
    }
  }
  return left;
}

function readdirProcs(): string[] {
  return readdirSync('/proc').filter((e) => /^\d+$/.test(e));
}

test('demo on a machine without debootstrap: says exactly which package is missing, installs nothing, starts nothing', async () => {
  // a PATH with every tool but debootstrap
  const bin = mkdtempSync(join(tmpdir(), 'rb-demo-path-'));
  for (const t of ['sh', 'ip', 'ssh', 'systemd-nspawn']) {
    const p = spawnSync('sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).stdout.trim();
    symlinkSync(p, join(bin, t));
  }
  const r = await demo(undefined, { PATH: bin });
  rmSync(bin, { recursive: true });
  assert.equal(r.code, 1, r.out);
  assert.match(r.out, /MISSING debootstrap\s+\(apt package debootstrap\)/);
  assert.match(r.out, /ok\s+systemd-nspawn/);
  assert.match(r.out, /Missing: debootstrap\. Install them with: apt-get install -y debootstrap/);
  assert.doesNotMatch(r.out, /Booting|sandbox:/);
});

test('npm run demo: one broken node of three is repaired before your eyes, and everything is torn down', async () => {
  const r = await demo();
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /ok\s+systemd-nspawn/);
  assert.match(r.out, /Before:[\s\S]*node2\s+activating[\s\S]*BROKEN/);
  assert.match(r.out, /node2\s+changed/);
  const after = r.out.slice(r.out.indexOf('After:'));
  for (const n of ['node1', 'node2', 'node3']) assert.match(after, new RegExp(`${n}\\s+active\\s+\\d+\\s+ok\\s+ok\\s+ok\\s+healthy`));
  assert.match(after, /keeps its old data as a backup: \/var\/lib\/containerd\.recover-/);
  assert.match(r.out, /Tearing the sandbox down\s+done/);
  assert.deepEqual(leftovers(r.out), []);
});

test('demo Ctrl-C during the repair: the runbook rolls back, then the sandbox is torn down (exit 130)', async () => {
  let sent = false;
  let runbookPid: number | undefined;
  const r = await demo((all, child) => {
    // the repair has started on the broken node: interrupt the demo (the runbook gets SIGINT as in a terminal)
    if (!sent && /node2 step 4 "Stop containerd and what it left behind" (changed|start)/.test(all)) {
      sent = true;
      runbookPid = findRunbookPid(all);
      if (runbookPid) process.kill(runbookPid, 'SIGINT');
      child.kill('SIGINT');
    }
  });
  assert.ok(sent, r.out);
  assert.ok(runbookPid, `the runbook process was found and interrupted:\n${r.out}`);
  assert.equal(r.code, 130, r.out);
  assert.match(r.out, /runbook exited 130/);
  assert.match(r.out, /node2 rolled-back|rolled back/);
  assert.match(r.out, /Tearing the sandbox down\s+done/);
  assert.deepEqual(leftovers(r.out), []);
});

/** In a terminal Ctrl-C reaches the whole process group; here we signal the runbook child ourselves. */
function findRunbookPid(out: string): number | undefined {
  const m = /sandbox: (\S+),/.exec(out);
  if (!m) return undefined;
  for (const p of readdirProcs()) {
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      if (cmd.includes('bin/runbook') && cmd.includes(m[1])) return Number(p);
    } catch {
      /* gone */
    }
  }
  return undefined;
}

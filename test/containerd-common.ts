/**
 * Shared by the containerd tests: run bin/runbook against an nspawn fleet and read its NDJSON, and look at
 * a node's containerd data the way a human would (over SSH, independent of the runbooks).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { CliEvent } from './harness/events.js';
import { bootFleet, leftovers, type Fleet, type NodeSpec } from './harness/nspawn.js';

export const REPO = new URL('..', import.meta.url).pathname;
export const BIN = join(REPO, 'bin/runbook');

export interface RunOutput {
  code: number | null;
  events: CliEvent[];
  stderr: string;
  ms: number;
  /** host -> final status (from run-end). */
  hosts: Record<string, string>;
  runId: string;
  stateDir: string;
}

export interface RunOpts {
  inventory?: string;
  extra?: string[];
  /** Called for every NDJSON event as it arrives (e.g. to send SIGINT at the right moment). */
  onEvent?: (e: CliEvent, child: ChildProcess) => void;
  timeoutMs?: number;
  /** The controller's state dir (its run journals); default a new one per call. resume/rollback need the run's. */
  stateDir?: string;
}

/**
 * `bin/runbook <cmd> <runbook> -i INV --known-hosts KH --json ...` against the fleet; resume and rollback take
 * the run id instead of a runbook (and the run's stateDir).
 */
export function runbook(fleet: Fleet, cmd: 'apply' | 'plan' | 'resume' | 'rollback', book: string, o: RunOpts = {}): Promise<RunOutput> {
  const stateDir = o.stateDir ?? mkdtempSync(join(tmpdir(), 'rb-ctd-state-'));
  const ndjson = cmd !== 'plan';
  const args = [
    cmd,
    book,
    ...(cmd === 'apply' || cmd === 'plan' ? ['-i', o.inventory ?? fleet.inventory] : []),
    '--known-hosts',
    fleet.knownHosts,
    '--state-dir',
    stateDir,
    ...(ndjson ? ['--yes', '--json'] : []),
    ...(o.extra ?? []),
  ];
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, args, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    const events: CliEvent[] = [];
    let buf = '';
    let stderr = '';
    let raw = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`runbook ${args.join(' ')} timed out; stderr: ${stderr}`));
    }, o.timeoutMs ?? 300_000);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      raw += d;
      if (!ndjson) return;
      buf += d;
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const line of lines) {
        if (!line.trim()) continue;
        const e = JSON.parse(line) as CliEvent;
        events.push(e);
        o.onEvent?.(e, child);
      }
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      const end = events.find((e) => e.type === 'run-end');
      const start = events.find((e) => e.type === 'run-start');
      resolve({
        code,
        events,
        stderr: ndjson ? stderr : raw + stderr,
        ms: Date.now() - t0,
        hosts: (end?.hosts as Record<string, string> | undefined) ?? {},
        runId: start?.run_id ?? '',
        stateDir,
      });
    });
  });
}

/** step-end events of one host, as "step=status". */
export function stepsOf(out: RunOutput, host: string): string[] {
  return out.events.filter((e) => e.type === 'step-end' && e.host === host).map((e) => `${e.step}=${e.status}`);
}

/** A treeFingerprint without the k3s/RKE2 log file in the root (their containerd appends to it whenever it runs). */
export const withoutLog = (fingerprint: string): string =>
  fingerprint
    .split('\n')
    .filter((l) => !/containerd\.log/.test(l))
    .join('\n');

/**
 * A line-per-entry fingerprint of a directory tree on a node: path, type, inode for everything; size, mtime and
 * md5 for files. Directory mtimes are left out: a restart-looping containerd touches them on every attempt.
 * `inodes: false` for trees restored by copy (same files, new inodes).
 */
export async function treeFingerprint(fleet: Fleet, node: string, dir: string, o: { inodes?: boolean } = {}): Promise<string> {
  const i = o.inodes === false ? '' : ' %i';
  return fleet.sh(
    node,
    `cd ${dir} && find . -xdev \\( -type d -printf '%p d${i}\\n' \\) -o -printf '%p %y %s${i} %T@\\n' | sort && find . -xdev -type f -exec md5sum {} + | sort -k2`,
  );
}

/** Inode of a path on the node ('' when missing). */
export async function inode(fleet: Fleet, node: string, path: string): Promise<string> {
  return (await fleet.exec(node, `stat -c %i ${path} 2>/dev/null`)).stdout.trim();
}

/** Human-readable dump of a run for assertion messages. */
export function explain(out: RunOutput): string {
  return `${out.events
    .filter((e) => ['step-end', 'rollback-end', 'host-end', 'run-end', 'warning'].includes(e.type))
    .map((e) => JSON.stringify({ ...e, time: undefined, command: undefined }))
    .join('\n')}\nstderr: ${out.stderr.slice(-3000)}`;
}

/**
 * Boots `names` before the file's tests (handing the fleet to `use`); after them destroys it and
 * asserts it left nothing behind (processes, cgroups, mounts, namespaces, files).
 */
export function useFleet(names: Array<string | NodeSpec>, use: (f: Fleet) => void): void {
  let fleet: Fleet | undefined;
  before(async () => {
    fleet = await bootFleet(names);
    use(fleet);
  });
  after(async () => {
    if (!fleet) return;
    await fleet.destroy();
    assert.deepEqual(leftovers(fleet), [], 'the fleet left nothing behind');
  });
}

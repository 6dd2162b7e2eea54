/** Runs a node script as a child and samples its peak RSS (VmHWM of /proc/PID/status, every 50 ms) until it exits. */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface PeakRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Peak resident set size of the child, MB. */
  peakMb: number;
  ms: number;
}

export async function runWithPeakRss(args: string[], o: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<PeakRun> {
  const t0 = Date.now();
  const child = spawn(process.execPath, args, { cwd: o.cwd, env: o.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  let peakKb = 0;
  const sample = setInterval(() => {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      if (m) peakKb = Math.max(peakKb, Number(m[1]));
    } catch {
      /* exited */
    }
  }, 50);
  const code = await new Promise<number | null>((res) => child.on('close', (c) => res(c)));
  clearInterval(sample);
  return { code, stdout, stderr, peakMb: peakKb / 1024, ms: Date.now() - t0 };
}

/**
 * Controller memory under loud commands (issue 18, item 6): N sshd hosts of the test harness (netns as root), one step printing MB
 * megabytes on each (test/fixtures/hardening/loud.yml), every host at once. Reports the controller's peak RSS
 * (VmHWM, sampled every 50 ms), wall time, throughput and whether every host ended `changed` with its
 * tail intact. Not a test.
 *
 *   npm run build && node --import tsx bench/output.ts [--hosts 10] [--mb 1000]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runWithPeakRss } from '../test/harness/rss.js';
import { startSshHosts, type SshFleet } from '../test/harness/sshd.js';

const root = new URL('..', import.meta.url).pathname;
const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const hosts = arg('hosts', 10);
const mb = arg('mb', 1000);

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'rb-bench-output-'));
  let fleet: SshFleet | undefined;
  try {
    fleet = await startSshHosts(hosts, { prefix: 'rbo' });
    const f = fleet;
    const inv = join(work, 'inv.yml');
    const lock = (name: string) => (f.mode === 'netns' ? '/run/runbook/lock' : join(work, `lock-${name}`));
    writeFileSync(
      inv,
      f.inventoryYaml({ hostVars: Object.fromEntries(f.hosts.map((h) => [h.name, { runbook_lock_path: lock(h.name) }])) }),
    );
    const args = [
      join(root, 'bin/runbook'),
      'apply',
      join(root, 'test/fixtures/hardening/loud.yml'),
      '-i',
      inv,
      '-e',
      `mb=${mb}`,
      '--json',
    ];
    args.push('--known-hosts', f.knownHostsFile, '--state-dir', join(work, 'state'), '--forks', String(hosts));
    const { code, stdout: out, stderr: err, peakMb, ms } = await runWithPeakRss(args, { env: { ...process.env, HOME: work } });
    const s = ms / 1000;
    const events = out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const changed = events.filter((e) => e.type === 'host-end' && e.status === 'changed').length;
    const tails = events.filter((e) => e.type === 'step-end' && e.step === 'loud' && /END-OF-OUTPUT\n$/.test(String(e.stdout))).length;
    console.log(
      JSON.stringify({
        hosts,
        mb_per_host: mb,
        exit: code,
        changed,
        tails_intact: tails,
        wall_s: Number(s.toFixed(1)),
        mb_per_s: Math.round((hosts * mb) / s),
        peak_rss_mb: Math.round(peakMb),
        ...(code === 0 ? {} : { stderr: err.slice(-500) }),
      }),
    );
  } finally {
    await fleet?.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  // A benchmark reports; it never dies with a stack trace.
  console.log(JSON.stringify({ hosts, mb_per_host: mb, error: e instanceof Error ? e.message : String(e) }));
  process.exitCode = 1;
});

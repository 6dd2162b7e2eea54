/**
 * containerd-recover on every layout and version the harness has, end to end: for each of Debian 12 (containerd
 * 1.6.20), 13 (1.7.24, ENABLE_CRI_SANDBOXES=1) and sid (2.1.9), as Debian's containerd unit and as the k3s and
 * RKE2 LAYOUT STAND-INS (the real k3s/RKE2 binaries cannot be fetched here: Debian's containerd run by their
 * units, paths, flags, log file and killall), one node goes through, in turn: the seed's exact error (1.7 only:
 * the other versions do not have it), zeroed data pages (a panic), both meta pages scribbled (bolt fails to open,
 * containerd stays up with CRI dead) and random in-use pages (a panic of whatever kind). After each break:
 * `runbook apply containerd-recover --limit NODE` must say what it found, repair, and leave containerd healthy
 * through the layout's own socket. The nodes run side by side; each node's repairs one after another.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { BreakKind, Fleet, Layout, Suite } from './harness/nspawn.js';
import { explain, runbook, useFleet } from './containerd-common.js';

const SUITES: Suite[] = ['bookworm', 'trixie', 'sid'];
const LAYOUTS: Layout[] = ['containerd', 'k3s', 'rke2'];
const nodes = SUITES.flatMap((suite) => LAYOUTS.map((layout) => ({ name: `${suite[0]}-${layout[0]}`, suite, layout })));

let fleet: Fleet;
useFleet(nodes, (f) => {
  fleet = f;
});

const EXPECT: Record<string, RegExp> = {
  'sandbox-record': /^broken: CRI state corrupt, sandbox record without CRI metadata .*failed to get metadata for stored sandbox/,
  panic: /^broken: metadata database corrupt \(\w+, \d+ restarts\): (panic: |fatal error: |unexpected fault address)/,
  silent: /^broken: metadata database corrupt \(active, \d+ restarts\): /,
  'random-pages': /^broken: metadata database corrupt /,
};

async function breakIt(name: string, kind: BreakKind): Promise<string> {
  if (kind !== 'random-pages') {
    await fleet.break(name, kind);
    return kind;
  }
  // Random pages that bolt never reads leave containerd healthy: another seed, until it breaks.
  for (let seed = 1; seed <= 6; seed++) {
    const r = await fleet.break(name, 'random-pages', { seed, pages: 2 });
    if (r.outcome !== 'healthy') return `random-pages (seed ${seed}, pages ${r.pages.join(',')}: ${r.outcome})`;
  }
  throw new Error(`${name}: six random-page corruptions all left containerd healthy`);
}

test('every layout stand-in and version: the seed error (1.7), zeroed pages, scribbled meta pages and random pages are each repaired', async (t) => {
  const results = await Promise.all(
    nodes.map(async (n) => {
      const kinds: BreakKind[] = [...(n.suite === 'trixie' ? (['sandbox-record'] as const) : []), 'panic', 'silent', 'random-pages'];
      const inv = fleet.writeInventory(`${fleet.dir}/${n.name}.yml`, [n.name]);
      const lines: string[] = [];
      for (const kind of kinds) {
        const mark = await fleet.logMark(n.name);
        const what = await breakIt(n.name, kind);
        const out = await runbook(fleet, 'apply', 'containerd-recover', { inventory: inv });
        const diag = out.events.find((e) => e.type === 'step-end' && e.host === n.name && e.step === 'Diagnose containerd');
        const end = out.events.find((e) => e.type === 'host-end' && e.host === n.name);
        if (out.hosts[n.name] !== 'changed') {
          // the log the diagnosis read, for the corpus: what did this containerd print?
          const log = (await fleet.containerdLog(n.name, { since: mark })).split('\n').slice(-150).join('\n');
          assert.fail(`${n.name} after ${what}: ${out.hosts[n.name]}: ${explain(out)}\ncontainerd's log since the break:\n${log}`);
        }
        assert.match(diag?.stdout ?? '', EXPECT[kind], `${n.name} after ${what}`);
        // the seed's error by its first rung (the records deleted), everything else wiped
        const rung = /repaired by ([a-z ]+?)(?: \(|$|;)/.exec(String(end?.message ?? ''))?.[1];
        assert.equal(rung, kind === 'sandbox-record' ? 'remove the bad records' : 'wipe', `${n.name} after ${what}: ${end?.message}`);
        const h = await fleet.health(n.name);
        assert.ok(h.healthy, `${n.name} after ${what}: not healthy afterwards: ${JSON.stringify(h)}`);
        lines.push(
          `${n.name} (${n.suite}, ${n.layout}) ${what}: repaired by ${rung} in ${end?.duration_ms} ms: ${(diag?.stdout ?? '').split('\n')[0].slice(0, 110)}`,
        );
      }
      return lines;
    }),
  );
  for (const l of results.flat()) t.diagnostic(l);
});

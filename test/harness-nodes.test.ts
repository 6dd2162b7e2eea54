/**
 * The test nodes themselves (test/harness/nspawn.ts, rootfs.sh, rancher-layout.sh): one fleet, booted in parallel,
 * with a node per suite and layout that matters:
 * - each node runs its suite's containerd (bookworm 1.6, trixie 1.7, sid 2.x); the k3s/RKE2 layout stand-ins have no
 *   containerd unit, their embedded containerd is a child of the agent unit on /run/k3s/containerd/containerd.sock,
 *   logs to its file and answers `k3s ctr` / RKE2's own ctr;
 * - runContainer works on every layout; k3s-killall.sh / rke2-killall.sh leave no shim and no mount behind;
 * - a node without sudo (root logs in), and `ops` with passwordless sudo on the others;
 * - 'sandbox-record': the exact fatal line in a restart loop on trixie (1.7 with the CRI sandbox server), logged and
 *   dropped on sid (2.x, fixed), refused on bookworm (1.6 has no sandbox store);
 * - the other breaks follow the node's layout (unit, paths, log file).
 * The nodes are looked at over SSH (the test's own commands), never through the product.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { bootFleet, leftovers, type Fleet, type NodeSpec } from './harness/nspawn.js';
import { waitFor } from './harness/wait.js';

const SPECS: NodeSpec[] = [
  { name: 'b1', suite: 'bookworm' },
  { name: 't1', suite: 'trixie' },
  { name: 's1', suite: 'sid' },
  { name: 'bk', suite: 'bookworm', layout: 'k3s' },
  { name: 'tr', suite: 'trixie', layout: 'rke2' },
  { name: 'sk', suite: 'sid', layout: 'k3s', sudo: false },
];
const VERSION: Record<string, RegExp> = { bookworm: /^1\.6\./, trixie: /^1\.7\./, sid: /^2\./ };
const names = SPECS.map((s) => s.name);

let fleet: Fleet;
before(async () => {
  const t0 = Date.now();
  fleet = await bootFleet([...SPECS]);
  console.log(
    `# ${SPECS.length} nodes booted in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${fleet.nodes.map((n) => `${n.name} ${(n.bootMs / 1000).toFixed(1)} s`).join(', ')}`,
  );
});
after(async () => {
  if (!fleet) return;
  await fleet.destroy();
  assert.deepEqual(leftovers(fleet), [], 'the fleet left nothing behind');
});

/** Lines of `findmnt` targets below any of the prefixes, on the node. */
async function mountsBelow(node: string, prefixes: string[]): Promise<string[]> {
  const all = (await fleet.sh(node, 'findmnt -rn -o TARGET')).split('\n');
  return all.filter((m) => prefixes.some((p) => m.startsWith(`${p}/`)));
}

test('each node runs the containerd of its suite, in its layout', async () => {
  await Promise.all(
    fleet.nodes.map(async (n) => {
      const server = await fleet.sh(n.name, `${n.ctr} version | sed -n '/^Server/,$s/^ *Version: *//p'`);
      assert.match(server.trim(), VERSION[n.suite], `${n.name} (${n.suite}): server version`);
      const h = await fleet.health(n.name);
      assert.equal(h.healthy, true, `${n.name}: ${JSON.stringify(h)}`);
      if (n.layout === 'containerd') {
        assert.equal(n.unit, 'containerd');
        assert.equal((await fleet.sh(n.name, 'systemctl is-active containerd kubelet')).trim(), 'active\nactive');
        return;
      }
      // k3s / RKE2: no containerd unit (as if never installed), the agent runs containerd as its child
      const st = await fleet.sh(n.name, 'systemctl show -p LoadState --value containerd kubelet');
      assert.deepEqual(st.split('\n').filter(Boolean), ['not-found', 'not-found'], `${n.name}: containerd and kubelet units`);
      assert.equal((await fleet.exec(n.name, 'test -e /var/lib/containerd')).code, 1, `${n.name}: no /var/lib/containerd`);
      assert.equal((await fleet.sh(n.name, `systemctl is-active ${n.unit}`)).trim(), 'active');
      const data = `/var/lib/rancher/${n.layout}`;
      const argv = await fleet.sh(
        n.name,
        `main=$(systemctl show -p MainPID --value ${n.unit}); p=$(pgrep -x -P $main containerd); tr '\\0' ' ' < /proc/$p/cmdline`,
      );
      const bin = n.layout === 'rke2' ? `${data}/bin/containerd` : 'containerd';
      assert.equal(
        argv.trim(),
        `${bin} -c ${data}/agent/etc/containerd/config.toml -a /run/k3s/containerd/containerd.sock --state /run/k3s/containerd --root ${data}/agent/containerd`,
      );
      assert.equal(n.socket, '/run/k3s/containerd/containerd.sock');
      assert.equal(n.log, `${data}/agent/containerd/containerd.log`);
      assert.match(await fleet.containerdLog(n.name), /containerd successfully booted/, `${n.name}: containerd logs to ${n.log}`);
      const journal = await fleet.sh(n.name, `journalctl -u ${n.unit} -b -o cat`);
      assert.doesNotMatch(journal, /successfully booted/, `${n.name}: containerd's lines are not in the journal`);
      if (n.layout === 'k3s') {
        assert.equal(n.ctr, 'k3s ctr');
        assert.match(await fleet.sh(n.name, 'k3s ctr version'), /Server:\s+Version:/);
        assert.match(await fleet.sh(n.name, 'k3s --version'), /^k3s version v1\.\d+\.\d+\+k3s1 \(layout stand-in/);
      } else {
        assert.equal(n.ctr, '/var/lib/rancher/rke2/bin/ctr --address /run/k3s/containerd/containerd.sock');
        assert.match(await fleet.sh(n.name, 'rke2 --version'), /^rke2 version v1\.\d+\.\d+\+rke2r1 \(layout stand-in/);
        assert.equal((await fleet.exec(n.name, 'command -v k3s-agent rke2-killall.sh')).stdout.trim(), '/usr/local/bin/rke2-killall.sh');
      }
    }),
  );
  // trixie: Debian's unit with the experimental CRI sandbox server switched on
  const t1 = await fleet.containerdLog('t1');
  assert.match(t1, /using experimental CRI Sandbox server/);
});

test('runContainer works on every layout: a shim on the layout socket, a rootfs mount under its state dir', async () => {
  await Promise.all(
    fleet.nodes.map(async (n) => {
      await fleet.runContainer(n.name, 'web');
      const shim = await fleet.sh(n.name, `pgrep -a -f '^[^ ]*containerd-shim-runc-v2 .*-id web '`);
      assert.ok(shim.includes(`-address ${n.socket}`), `${n.name}: ${shim}`);
      assert.deepEqual(await mountsBelow(n.name, [n.state]), [`${n.state}/runbook-test/web/rootfs`], n.name);
    }),
  );
});

test('k3s-killall.sh and rke2-killall.sh leave no shim and no mount below /run/k3s and the data dir; safe to run again', async () => {
  await Promise.all(
    fleet.nodes
      .filter((n) => n.layout !== 'containerd')
      .map(async (n) => {
        const data = `/var/lib/rancher/${n.layout}`;
        const prefixes = ['/run/k3s', data, '/var/lib/kubelet/pods'];
        assert.notDeepEqual(await mountsBelow(n.name, prefixes), [], `${n.name}: a container mount before`);
        await fleet.sh(n.name, n.killall);
        assert.equal((await fleet.exec(n.name, 'pgrep -f containerd-shim')).stdout, '', `${n.name}: no shim`);
        assert.equal((await fleet.exec(n.name, 'pgrep -x sleep')).stdout, '', `${n.name}: no container process`);
        assert.deepEqual(await mountsBelow(n.name, prefixes), [], `${n.name}: no mount`);
        assert.equal((await fleet.exec(n.name, `systemctl is-active ${n.unit}`)).stdout.trim(), 'inactive');
        await fleet.sh(n.name, n.killall); // nothing running: still exit 0
        await fleet.sh(n.name, `systemctl start ${n.unit}`);
        await fleet.waitHealthy(n.name);
      }),
  );
});

test('sudo: false leaves root only; ops logs in with the same key and has passwordless sudo', async () => {
  assert.equal((await fleet.exec('sk', 'command -v sudo')).code, 1, 'no sudo on sk');
  assert.equal((await fleet.sh('sk', 'id -u')).trim(), '0', 'root login works on sk');
  assert.equal((await fleet.exec('sk', 'sudo -n true', { user: 'ops' })).code, 127, 'ops on sk: no sudo at all');
  for (const n of names.filter((x) => x !== 'sk')) {
    assert.equal((await fleet.sh(n, 'id -un', { user: 'ops' })).trim(), 'ops', n);
    assert.equal((await fleet.sh(n, 'sudo -n id -u', { user: 'ops' })).trim(), '0', `${n}: ops sudo -n`);
  }
  const inv = readFileSync(
    fleet.writeInventory(`${fleet.dir}/ops.yml`, ['b1', 's1'], { ansible_user: 'ops', ansible_become: true }),
    'utf8',
  );
  assert.equal(inv.match(/ansible_user:/g)?.length, 1, inv);
  assert.match(inv, /ansible_user: "ops"/);
  assert.match(inv, /ansible_become: true/);
});

test("'sandbox-record': the exact fatal line in a restart loop on trixie (1.7), logged and dropped on sid (2.x), refused on 1.6", async () => {
  await assert.rejects(fleet.break('b1', 'sandbox-record'), /containerd 1\.6\.\d+.* \(bookworm\) has none/);
  const [t, s] = await Promise.all([
    fleet.break('t1', 'sandbox-record', { id: 'rb-dangling-t1' }),
    fleet.break('s1', 'sandbox-record', { id: 'rb-dangling-s1' }),
  ]);
  console.log(`# trixie ${t.version}: ${t.outcome}: ${t.line}\n# sid ${s.version}: ${s.outcome}: ${s.line}`);
  assert.equal(t.outcome, 'restart-loop', JSON.stringify(t));
  assert.ok(
    t.line?.includes(
      'level=fatal msg="Failed to run CRI service" error="failed to recover state: failed to get metadata for stored sandbox \\"rb-dangling-t1\\": not found"',
    ),
    t.line,
  );
  const h = await fleet.health('t1');
  assert.equal(h.healthy, false);
  assert.equal(h.active, 'activating');
  // still looping: the restart count keeps rising
  await waitFor(async () => (await fleet.health('t1')).nRestarts > t.health.nRestarts, {
    what: 't1: containerd restarting again after the fatal line',
    timeoutMs: 60_000,
    intervalMs: 500,
  });
  assert.equal(s.outcome, 'dropped', JSON.stringify(s));
  assert.ok(
    s.lines.some((l) => l.includes('msg="failed to get metadata for stored sandbox \\"rb-dangling-s1\\"" error="not found"')),
    s.lines.join('\n'),
  );
  assert.equal(s.health.healthy, true);
  assert.equal(
    (await fleet.sh('s1', 'ctr -n k8s.io sandboxes ls -q 2>/dev/null || ctr -n k8s.io sandboxes ls')).includes('rb-dangling-s1'),
    false,
  );
});

test('the breaks follow the layout: unit, data root, log file', async () => {
  const [panic, sandbox, pages, meta] = await Promise.all([
    fleet.break('bk', 'panic'),
    fleet.break('tr', 'sandbox-record', { id: 'rb-dangling-tr' }),
    fleet.break('sk', 'random-pages', { seed: 42 }),
    fleet.break('s1', 'meta-page', { page: 0, seed: 7 }),
  ]);
  console.log(`# bk panic: ${panic.line}\n# sk random-pages: ${JSON.stringify({ ...pages, health: undefined })}`);
  // k3s: the panic is in the k3s log file, the unit restarts
  assert.match(panic.line ?? '', /panic: invalid freelist page/);
  assert.equal((await fleet.health('bk')).active, 'activating');
  assert.match(await fleet.sh('bk', 'journalctl -u k3s-agent -b -o cat'), /containerd exited: exit status 2/);
  // RKE2 on trixie: the same crash as containerd.service's, in RKE2's log file
  assert.equal(sandbox.outcome, 'restart-loop', JSON.stringify(sandbox));
  const crashes = await fleet.sh('tr', `grep -c 'stored sandbox ..rb-dangling-tr..: not found' ${fleet.node('tr').log}`);
  assert.ok(Number(crashes) >= 2, `tr: the fatal line ${crashes.trim()} times in ${fleet.node('tr').log}`);
  // random pages: distinct in-use data pages, reproducible from the seed, an outcome a test can assert on
  assert.equal(pages.seed, 42);
  assert.equal(new Set(pages.pages).size, pages.pages.length);
  assert.ok(
    pages.pages.every((p) => p >= 2 && p < pages.pgid),
    JSON.stringify(pages),
  );
  assert.ok(['restart-loop', 'plugin-error', 'healthy', 'stuck'].includes(pages.outcome));
  // a scribbled meta page: bolt opens from the other one
  assert.equal(meta.health.healthy, true, JSON.stringify(meta));
});

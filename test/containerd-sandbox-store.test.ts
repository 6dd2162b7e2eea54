/**
 * containerd's sandbox store over the SSH connection (src/transport/stream.ts + src/actions/): real containerd
 * 1.7.24 with the CRI sandbox server (Debian 13) in nspawn nodes, as a Debian `containerd` unit and as the k3s
 * LAYOUT STAND-IN (Debian's containerd run with k3s's paths; the real k3s binary cannot be fetched here).
 * - the store is reached as root, and as `ops` through sudo; `ops` without become is refused in one line;
 * - the seed's exact error (a record without CRI metadata): containerd started with the CRI plugin held off, the
 *   record deleted through the store, the other records kept, containerd started normally stays healthy.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Fleet } from './harness/nspawn.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runbook, useFleet } from './containerd-common.js';
import { SshTransport } from '../src/transport/ssh.js';
import { TransportError } from '../src/transport/types.js';
import { type GrpcChannel, grpcOver } from '../src/actions/grpc.js';
import { pruneWithoutCriMetadata, SandboxStore } from '../src/actions/containerd-sandboxes.js';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';

/** StoreCreateRequest{sandbox: Sandbox{id 1, runtime 2 {name 1}, extensions 7 {"metadata": Any{type_url 1, value 2}}}}: what CRI writes. */
function createWithCriMetadata(id: string): Uint8Array {
  const any = new BinaryWriter()
    .tag(1, WireType.LengthDelimited)
    .string('github.com/containerd/containerd/pkg/cri/store/sandbox/Metadata')
    .tag(2, WireType.LengthDelimited)
    .bytes(new TextEncoder().encode('{}'))
    .finish();
  const entry = new BinaryWriter().tag(1, WireType.LengthDelimited).string('metadata').tag(2, WireType.LengthDelimited).bytes(any).finish();
  const runtime = new BinaryWriter().tag(1, WireType.LengthDelimited).string('io.containerd.runc.v2').finish();
  const sandbox = new BinaryWriter()
    .tag(1, WireType.LengthDelimited)
    .string(id)
    .tag(2, WireType.LengthDelimited)
    .bytes(runtime)
    .tag(7, WireType.LengthDelimited)
    .bytes(entry)
    .finish();
  return new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(sandbox).finish();
}

let fleet: Fleet;
useFleet(
  [
    { name: 'st-c', suite: 'trixie' },
    { name: 'st-k', suite: 'trixie', layout: 'k3s' },
  ],
  (f) => {
    fleet = f;
  },
);

function transport(name: string, user: string, become: boolean): SshTransport {
  const n = fleet.node(name);
  return new SshTransport(
    { kind: 'ssh', name, address: n.ip, port: 22, user, privateKeyFile: fleet.image.clientKey, become },
    { hostKeyChecking: 'strict', knownHostsFiles: [fleet.knownHosts], connectTimeoutMs: 30_000, sshConfigFile: 'none', agent: false },
  );
}

/** The store's records in k8s.io, through the node's socket, as `user`. */
async function withStore<T>(
  name: string,
  user: string,
  become: boolean,
  use: (s: SandboxStore, ch: GrpcChannel) => Promise<T>,
): Promise<T> {
  const t = transport(name, user, become);
  try {
    const open = await t.openSocket(fleet.node(name).socket);
    const ch = grpcOver(open.stream);
    try {
      return await use(new SandboxStore(ch, 'k8s.io'), ch);
    } finally {
      ch.close();
      const end = await open.closed;
      assert.equal(end.code, 0, `the bridge on ${name} ended badly: ${JSON.stringify(end)}`);
    }
  } finally {
    await t.close();
  }
}

const ids = async (name: string) =>
  (await fleet.sh(name, `${fleet.node(name).ctr} -n k8s.io sandboxes ls`))
    .split('\n')
    .slice(1)
    .map((l) => l.split(/\s+/)[0])
    .filter(Boolean)
    .sort();

const plant = async (name: string, id: string) => {
  const n = fleet.node(name);
  // `ctr sandboxes run` makes the record, then fails to start it (no controller for it): the record stays
  await fleet.exec(name, `echo '{}' > /run/rb-${id}.json && ${n.ctr} -n k8s.io sandboxes run /run/rb-${id}.json ${id}`);
  assert.ok((await ids(name)).includes(id), `${name}: no record ${id} planted`);
};

test('the sandbox store over the SSH connection: as root, as ops through sudo; ops without become is refused in one line', async () => {
  await plant('st-c', 'rb-listed');
  for (const [user, become] of [
    ['root', false],
    ['ops', true],
  ] as const) {
    const list = await withStore('st-c', user, become, (s) => s.list());
    const mine = list.find((r) => r.id === 'rb-listed');
    assert.ok(mine, `${user}: rb-listed not in ${JSON.stringify(list)}`);
    assert.deepEqual(mine.extensions, [], 'a record made through the sandbox API has no CRI metadata');
  }
  await assert.rejects(
    withStore('st-c', 'ops', false, (s) => s.list()),
    (e: unknown) =>
      e instanceof TransportError &&
      e.code === 'E_SOCKET' &&
      /^st-c: cannot reach \/run\/containerd\/containerd\.sock: cannot connect to \/run\/containerd\/containerd\.sock: Permission denied$/.test(
        e.message,
      ),
  );
  // a record with CRI metadata (as CRI writes it) is kept; the other goes, through the store (ctr sandboxes rm
  // cannot: it asks the sandbox controller first)
  const pruned = await withStore('st-c', 'root', false, async (s, ch) => {
    await ch.call('/containerd.services.sandbox.v1.Store/Create', createWithCriMetadata('rb-with-metadata'), {
      'containerd-namespace': 'k8s.io',
    });
    const listed = (await s.list()).find((r) => r.id === 'rb-with-metadata');
    assert.deepEqual(listed?.extensions, ['metadata']);
    const r = await pruneWithoutCriMetadata(s);
    await s.delete('rb-with-metadata');
    return r;
  });
  assert.deepEqual(pruned, { deleted: ['rb-listed'], kept: ['rb-with-metadata'] });
  assert.deepEqual(await ids('st-c'), []);
});

for (const name of ['st-c', 'st-k']) {
  test(`${name}: the seed's error, repaired by deleting only the record without CRI metadata (CRI held off meanwhile)`, async () => {
    const n = fleet.node(name);
    const r = await fleet.break(name, 'sandbox-record', { id: `rb-dangling-${name}` });
    assert.equal(r.outcome, 'restart-loop', `${name}: the planted record should crash 1.7's CRI: ${JSON.stringify(r)}`);
    // held off: the unit stopped, a containerd of our own on the same root and socket, without the CRI plugin
    await fleet.sh(
      name,
      [
        `systemctl stop ${n.unit}`,
        'mkdir -p /run/rb-nocri',
        `printf 'version = 2\\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\\n' > /run/rb-nocri/config.toml`,
        `systemd-run --quiet --unit=rb-nocri --collect -p Type=notify /usr/bin/containerd --config /run/rb-nocri/config.toml --root ${n.root} --state ${n.state} --address ${n.socket}`,
      ].join(' && '),
    );
    let pruned: Awaited<ReturnType<typeof pruneWithoutCriMetadata>>;
    try {
      pruned = await withStore(name, 'ops', true, (s) => pruneWithoutCriMetadata(s));
    } finally {
      await fleet.sh(name, 'systemctl stop rb-nocri; rm -rf /run/rb-nocri');
    }
    assert.deepEqual(pruned.deleted, [`rb-dangling-${name}`]);
    await fleet.sh(name, `systemctl reset-failed ${n.unit}; systemctl start ${n.unit}`);
    const h = await fleet.waitHealthy(name, 90_000);
    assert.ok(h.healthy);
    assert.deepEqual(await ids(name), [], 'the planted record is gone');
    const restarts = h.nRestarts;
    // the settle window: a containerd that still crashes on the record would restart within it
    await fleet.sh(name, 'sleep 10');
    const later = await fleet.health(name);
    assert.ok(later.healthy && later.nRestarts === restarts, `${name} did not stay up: ${JSON.stringify(later)}`);
  });
}

test('a runbook step that calls the store (call: containerd.sandboxes.prune), as ops through sudo: output registered, verified, shown', async () => {
  await plant('st-c', 'rb-engine');
  const dir = mkdtempSync(join(tmpdir(), 'rb-call-'));
  const book = join(dir, 'prune.yml');
  writeFileSync(
    book,
    [
      'name: prune',
      'become: true',
      'vars:',
      '  sock: /run/containerd/containerd.sock',
      'steps:',
      '  - name: Delete sandbox records without CRI metadata',
      '    call: containerd.sandboxes.prune',
      '    with:',
      '      socket: "{{ sock }}"',
      '    register: pruned',
      `    verify: printf '%s\\n' "{{ pruned.stdout }}" | grep -qx 'deleted rb-engine'`,
      '',
    ].join('\n'),
  );
  const inv = join(dir, 'inv.yml');
  writeFileSync(
    inv,
    `all:\n  hosts:\n    st-c:\n      ansible_host: ${fleet.node('st-c').ip}\n      ansible_user: ops\n      ansible_ssh_private_key_file: ${fleet.image.clientKey}\n`,
  );
  const out = await runbook(fleet, 'apply', book, { inventory: inv });
  assert.deepEqual(out.hosts, { 'st-c': 'changed' }, out.stderr + JSON.stringify(out.events.filter((e) => e.type === 'step-end')));
  const end = out.events.find((e) => e.type === 'step-end' && e.step === 'Delete sandbox records without CRI metadata');
  assert.equal((end?.register as { stdout?: string } | undefined)?.stdout, 'deleted rb-engine\n');
  const plan = await runbook(fleet, 'plan', book, { inventory: inv });
  assert.match(plan.stderr, /call: +containerd\.sandboxes\.prune socket=\/run\/containerd\/containerd\.sock namespace=k8s\.io\n/);
  assert.deepEqual(await ids('st-c'), []);
  // a socket that is not there: the step fails with the bridge's one line, nothing else happens
  const bad = await runbook(fleet, 'apply', book, { inventory: inv, extra: ['-e', 'sock=/run/nothing.sock'] });
  assert.deepEqual(bad.hosts, { 'st-c': 'failed' });
  const failed = bad.events.find((e) => e.type === 'step-end' && e.status === 'failed');
  assert.match(
    String(failed?.message),
    /^exit 1: st-c: cannot reach \/run\/nothing\.sock: cannot connect to \/run\/nothing\.sock: No such file or directory$/,
  );
});

/**
 * Differential test: for every inventory under test/fixtures/inventories/, runbook's view equals
 * the real Ansible's (ansible-core from Debian):
 *   - inventoryListJson() deep-equals `ansible-inventory -i SRC... --list`
 *   - selectHosts(inv, P) equals the hosts of `ansible all --list-hosts --limit P`, in the same order
 *     (computed by _ansible_probe.py with InventoryManager.subset + list_hosts('all'), the code path of
 *     `ansible all --list-hosts`; a few pairs are also checked against the real `ansible` command).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadInventory } from '../src/inventory/load.js';
import { selectHosts, hostOrderIsAmbiguous } from '../src/inventory/patterns.js';
import { inventoryListJson, inventoryGraph } from '../src/inventory/output.js';

const root = new URL('..', import.meta.url).pathname;
const FIX = join(root, 'test/fixtures/inventories');
const PROBE = join(FIX, '_ansible_probe.py');
const ansibleHome = mkdtempSync(join(tmpdir(), 'runbook-ansible-home-'));
const ENV = {
  ...process.env,
  ANSIBLE_HOME: ansibleHome,
  ANSIBLE_LOCAL_TEMP: join(ansibleHome, 'tmp'),
  ANSIBLE_LOCALHOST_WARNING: 'False',
  ANSIBLE_INVENTORY_UNPARSED_WARNING: 'False',
  ANSIBLE_DEPRECATION_WARNINGS: 'False',
  ANSIBLE_NOCOLOR: '1',
  ANSIBLE_CONFIG: join(ansibleHome, 'none.cfg'),
};

interface Case {
  sources: string[];
  limits: string[];
}
const names = readdirSync(FIX)
  .filter((n) => !n.startsWith('_') && statSync(join(FIX, n)).isDirectory())
  .sort();
const cases = names.map((n) => ({ name: n, dir: join(FIX, n), spec: JSON.parse(readFileSync(join(FIX, n, 'case.json'), 'utf8')) as Case }));

function run(cmd: string, args: string[], cwd: string): Promise<string> {
  return new Promise((res, rej) => {
    execFile(cmd, args, { cwd, env: ENV, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) rej(new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed: ${err.message}\n${stderr}`));
      else res(stdout);
    });
  });
}

async function pool<T>(jobs: (() => Promise<T>)[], n: number): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < jobs.length) {
        const i = next++;
        out[i] = await jobs[i]();
      }
    }),
  );
  return out;
}

const srcArgs = (c: Case) => c.sources.flatMap((s) => ['-i', s]);

// Ansible's answers for every case, computed up front in parallel (ansible starts slowly).
const ansibleAnswers = (async () => {
  const jobs: (() => Promise<unknown>)[] = [];
  for (const c of cases) {
    jobs.push(() => run('ansible-inventory', [...srcArgs(c.spec), '--list'], c.dir).then((s) => JSON.parse(s)));
    jobs.push(() => run('/usr/bin/python3', [PROBE, JSON.stringify(c.spec)], c.dir).then((s) => JSON.parse(s)));
  }
  const res = await pool(jobs, 4);
  return new Map(
    cases.map((c, i) => [c.name, { list: res[2 * i] as object, limits: res[2 * i + 1] as Record<string, string[] | { error: string }> }]),
  );
})();

test('the corpus is big enough', () => {
  assert.ok(cases.length >= 30, `${cases.length} inventories`);
  assert.ok(cases.reduce((n, c) => n + c.spec.limits.length, 0) >= 150);
});

for (const c of cases) {
  test(`${c.name}: --list and --limit agree with Ansible`, async () => {
    const want = (await ansibleAnswers).get(c.name)!;
    const inv = loadInventory(c.spec.sources, { cwd: c.dir });
    assert.deepStrictEqual(inventoryListJson(inv), want.list, `${c.name}: inventoryListJson differs from ansible-inventory --list`);
    const ambiguous = [...inv.groups.keys()].some((g) => hostOrderIsAmbiguous(inv, g));
    for (const p of c.spec.limits) {
      const theirs = want.limits[p];
      assert.ok(Array.isArray(theirs), `${c.name}: ansible failed on --limit ${p}: ${JSON.stringify(theirs)}`);
      assert.ok(theirs.length > 0, `${c.name}: pattern ${p} selects nothing in Ansible; pick patterns that select something`);
      const ours = selectHosts(inv, p, { cwd: c.dir });
      if (ambiguous) {
        // Ansible's own order changes from run to run here (see hostOrderIsAmbiguous); compare the sets.
        assert.deepStrictEqual([...ours].sort(), [...theirs].sort(), `${c.name}: --limit '${p}' (as sets)`);
      } else {
        assert.deepStrictEqual(ours, theirs, `${c.name}: --limit '${p}'`);
      }
    }
  });
}

test('the probe is faithful: real `ansible all --list-hosts --limit` for a sample of pairs', async () => {
  const answers = await ansibleAnswers;
  const sample: [string, string][] = [
    ['01-ini-basic', 'all:!web'],
    ['04-ranges', 'padded[3:5]'],
    ['06-yaml-nested', 'prod:!prod_db'],
    ['16-kubespray-ini', 'kube_node:!node3'],
    ['18-kubespray-dir', 'etcd[0]'],
    ['01-ini-basic', '@limit.txt'],
  ];
  await pool(
    sample.map(([name, p]) => async () => {
      const c = cases.find((x) => x.name === name)!;
      const out = await run('ansible', ['all', ...srcArgs(c.spec), '--list-hosts', '--limit', p], c.dir);
      const hosts = out
        .split('\n')
        .slice(1)
        .map((l) => l.trim())
        .filter(Boolean);
      assert.deepStrictEqual(hosts, answers.get(name)!.limits[p], `${name} ${p}`);
    }),
    3,
  );
});

test('--graph output equals ansible-inventory --graph (sample)', async () => {
  for (const name of ['03-ini-children', '16-kubespray-ini', '18-kubespray-dir', '26-diamond']) {
    const c = cases.find((x) => x.name === name)!;
    const theirs = (await run('ansible-inventory', [...srcArgs(c.spec), '--graph'], c.dir)).trimEnd();
    assert.equal(inventoryGraph(loadInventory(c.spec.sources, { cwd: c.dir })), theirs, name);
  }
});

test('through bin/runbook: inventory --list / --host / --list-hosts equal Ansible', async () => {
  if (!existsSync(join(root, 'dist/cli/main.js'))) execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'ignore' });
  const bin = join(root, 'bin/runbook');
  const answers = await ansibleAnswers;
  for (const name of ['16-kubespray-ini', '12-directory', '13-multi-source']) {
    const c = cases.find((x) => x.name === name)!;
    const ours = JSON.parse(await run(process.execPath, [bin, 'inventory', ...srcArgs(c.spec), '--list'], c.dir));
    assert.deepStrictEqual(ours, answers.get(name)!.list, name);
  }
  const c16 = cases.find((x) => x.name === '16-kubespray-ini')!;
  const hostOurs = JSON.parse(await run(process.execPath, [bin, 'inventory', '-i', 'inventory.ini', '--host', 'node3'], c16.dir));
  const hostTheirs = JSON.parse(await run('ansible-inventory', ['-i', 'inventory.ini', '--host', 'node3'], c16.dir));
  assert.deepStrictEqual(hostOurs, hostTheirs);
  const lh = await run(process.execPath, [bin, 'inventory', '-i', 'inventory.ini', '--limit', 'kube_node:!node3', '--list-hosts'], c16.dir);
  assert.deepStrictEqual(lh.trim().split('\n'), answers.get('16-kubespray-ini')!.limits['kube_node:!node3']);
});

test.after(() => rmSync(ansibleHome, { recursive: true, force: true }));

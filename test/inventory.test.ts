// tier: unit
/**
 * Unit tests of the inventory layer: bad inventories (code, file, line), patterns errors, the implicit
 * localhost, connectionFor, -e parsing, extraVarDirs precedence, Python literal/shlex ports.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RunbookError, ValidationError } from '../src/core/errors.js';
import { loadInventory, selectHosts, connectionFor, parseExtraVars, hostVarsJson, inventoryListJson } from '../src/inventory/index.js';
import { literalEval, shlexSplit } from '../src/inventory/pysyntax.js';
import { expandHostnameRange } from '../src/inventory/hostpattern.js';

const root = new URL('..', import.meta.url).pathname;
const BAD = join(root, 'test/fixtures/inventories/_bad');

function expectError(src: string, code: string, line: number | undefined, msg: RegExp) {
  let err: unknown;
  try {
    loadInventory([src], { cwd: BAD });
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof RunbookError, `${src}: expected an error, got ${String(err)}`);
  assert.equal(err.code, code, `${src}: ${err.message}`);
  assert.match(err.message, msg, src);
  assert.ok(err.message.includes(src), `${src}: message names the file: ${err.message}`);
  if (line !== undefined) {
    assert.ok(err instanceof ValidationError, `${src}: a ValidationError`);
    assert.equal(err.issues[0].line, line, `${src}: line (${err.message})`);
    assert.ok(err.issues[0].file?.endsWith(src));
  }
}

test('host ranges: the limit counts the product of every bracket before expanding; RUNBOOK_MAX_RANGE_HOSTS raises it', () => {
  assert.equal(expandHostnameRange('h[1:100000]').length, 100_000);
  assert.throws(() => expandHostnameRange('h[0:100000]'), /gives 100001 hosts, more than the limit of 100000/);
  assert.throws(
    () => expandHostnameRange('h[a:j]-[0:99]', { RUNBOOK_MAX_RANGE_HOSTS: '999' }),
    /gives 1000 hosts, more than the limit of 999/,
  );
  assert.equal(expandHostnameRange('h[0:100000]', { RUNBOOK_MAX_RANGE_HOSTS: '200000' }).length, 100_001);
  assert.deepEqual(expandHostnameRange('h[0:10:5]-[a:b]'), ['h0-a', 'h0-b', 'h5-a', 'h5-b', 'h10-a', 'h10-b']);
  assert.deepEqual(expandHostnameRange('h[3:1]'), []);
});

test('bad inventories: each fails with a code, the file and the line', () => {
  expectError('dup-key.yml', 'E_INVENTORY_SYNTAX', 6, /duplicate/);
  expectError('cycle.ini', 'E_INVENTORY_SYNTAX', 4, /loop/);
  expectError('self-child.yml', 'E_INVENTORY_SYNTAX', 3, /child of itself/);
  expectError('bad-range-width.ini', 'E_INVENTORY_SYNTAX', 2, /equal length/);
  expectError('bad-range-letters.ini', 'E_INVENTORY_SYNTAX', 2, /numbers .* or single letters/);
  expectError('huge-range.ini', 'E_INVENTORY_SYNTAX', 3, /gives 100000000 hosts, more than the limit of 100000 .*RUNBOOK_MAX_RANGE_HOSTS/);
  expectError('huge-range-product.yml', 'E_INVENTORY_SYNTAX', 4, /gives 1000000 hosts, more than the limit of 100000/);
  expectError('vars-undefined.ini', 'E_INVENTORY_SYNTAX', 3, /never declared/);
  expectError('child-undefined.ini', 'E_INVENTORY_SYNTAX', 2, /undefined group 'nosuch'/);
  expectError('host-token.ini', 'E_INVENTORY_SYNTAX', 2, /key=value/);
  expectError('unknown-section.ini', 'E_INVENTORY_SYNTAX', 1, /unknown type/);
  expectError('unterminated.ini', 'E_INVENTORY_SYNTAX', 2, /No closing quotation/);
  expectError('hosts-list.yml', 'E_INVENTORY_SYNTAX', 3, /'hosts' must be a mapping/);
  expectError('yaml-syntax.yml', 'E_INVENTORY_SYNTAX', 4, /YAML/);
  expectError('vault-value.yml', 'E_INVENTORY_VAULT', undefined, /vault.*password|password.*vault/i);
  expectError('vault-file.yml', 'E_INVENTORY_VAULT', undefined, /Vault-encrypted/);
  expectError('script.sh', 'E_INVENTORY_SCRIPT', undefined, /inventory scripts are not supported/);
  expectError('plugin.yml', 'E_INVENTORY_PLUGIN', undefined, /not supported/);
  assert.throws(
    () => loadInventory(['nope.yml'], { cwd: BAD }),
    (e: unknown) => e instanceof ValidationError && e.code === 'E_INVENTORY_NOT_FOUND' && /nope\.yml/.test(e.message),
  );
});

function tmp(files: Record<string, string>): string {
  const d = mkdtempSync(join(tmpdir(), 'runbook-inv-'));
  for (const [p, c] of Object.entries(files)) {
    mkdirSync(join(d, p, '..'), { recursive: true });
    writeFileSync(join(d, p), c);
  }
  return d;
}

test('patterns: unknown names are errors naming them; matches of empty groups are not', () => {
  const d = tmp({ 'h.ini': '[web]\nweb1\nweb2\n[db]\ndb1\n[empty]\n' });
  try {
    const inv = loadInventory(['h.ini'], { cwd: d });
    assert.deepEqual(selectHosts(inv, undefined), ['web1', 'web2', 'db1']);
    assert.deepEqual(selectHosts(inv, 'empty'), []);
    assert.deepEqual(selectHosts(inv, 'db1,web'), ['web1', 'web2', 'db1'], 'limit keeps inventory order');
    assert.deepEqual(selectHosts(inv, undefined, { hosts: 'db1,web' }), ['db1', 'web1', 'web2'], 'a hosts: pattern keeps its own order');
    assert.throws(
      () => selectHosts(inv, 'web,webb'),
      (e: unknown) =>
        e instanceof ValidationError && e.code === 'E_PATTERN' && /'webb'/.test(e.message) && /did you mean 'web'/.test(e.message),
    );
    assert.throws(
      () => selectHosts(inv, 'web[5]'),
      (e: unknown) => e instanceof ValidationError && e.code === 'E_PATTERN' && /web\[5\]/.test(e.message),
    );
    assert.throws(
      () => selectHosts(inv, '@missing.txt', { cwd: d }),
      (e: unknown) => e instanceof ValidationError && e.code === 'E_PATTERN',
    );
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('no inventory: empty, and localhost named explicitly is the implicit local host', () => {
  const inv = loadInventory([]);
  assert.deepEqual(selectHosts(inv, undefined), []);
  assert.deepEqual(inventoryListJson(inv), { _meta: { hostvars: {} }, all: { children: ['ungrouped'] } });
  assert.deepEqual(selectHosts(inv, 'localhost'), ['localhost']);
  const h = inv.hosts.get('localhost')!;
  assert.equal(h.implicit, true);
  assert.deepEqual(connectionFor(h), { kind: 'local', name: 'localhost', address: 'localhost' });
  assert.deepEqual(inventoryListJson(inv).all, { children: ['ungrouped'] }, 'the implicit localhost is not listed, like Ansible');
});

test('implicit localhost takes group_vars/all and host_vars/localhost', () => {
  const d = tmp({ 'inv/h.ini': '[web]\nw1\n', 'inv/group_vars/all.yml': 'a: 1\n', 'inv/host_vars/localhost.yml': 'b: 2\n' });
  try {
    const inv = loadInventory(['inv/h.ini'], { cwd: d });
    assert.deepEqual(selectHosts(inv, 'localhost'), ['localhost']);
    assert.deepEqual(hostVarsJson(inv, 'localhost'), { a: 1, ansible_connection: 'local', b: 2 });
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('extraVarDirs act like a playbook dir: after the inventory dir, per level', () => {
  const d = tmp({
    'inv/h.ini': '[web]\nw1\n[web:vars]\nv=ini\n',
    'inv/group_vars/all.yml': 'all_v: inv\nv_all: inv\n',
    'inv/group_vars/web.yml': 'v: inv_web\nw: inv_web\n',
    'inv/host_vars/w1.yml': 'h: inv_host\n',
    'book/group_vars/all.yml': 'v_all: book\n',
    'book/group_vars/web.yml': 'w: book_web\n',
    'book/host_vars/w1.yml': 'h: book_host\n',
  });
  try {
    const inv = loadInventory(['inv/h.ini'], { cwd: d, extraVarDirs: ['book'] });
    assert.deepEqual(inv.hosts.get('w1')!.vars, { v: 'inv_web', all_v: 'inv', v_all: 'book', w: 'book_web', h: 'book_host' });
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('connectionFor: ansible_* variables, aliases, overrides, errors', () => {
  const host = (vars: Record<string, unknown>) => ({ name: 'n1', vars, groups: ['all'] });
  assert.deepEqual(connectionFor(host({})), { kind: 'ssh', name: 'n1', address: 'n1' });
  assert.deepEqual(
    connectionFor(
      host({
        ansible_host: '10.0.0.1',
        ansible_port: '2222',
        ansible_user: 'ops',
        ansible_connection: 'smart',
        ansible_ssh_private_key_file: '/k',
        ansible_password: 'pw',
        ansible_become: 'yes',
        ansible_become_user: 'root',
        ansible_become_pass: 'bp',
        ansible_ssh_common_args: '-o ProxyJump=bastion',
        ansible_ssh_extra_args: '-o Foo=bar',
      }),
    ),
    {
      kind: 'ssh',
      name: 'n1',
      address: '10.0.0.1',
      port: 2222,
      user: 'ops',
      privateKeyFile: '/k',
      password: 'pw',
      become: true,
      becomeUser: 'root',
      becomePassword: 'bp',
      sshArgs: '-o ProxyJump=bastion -o Foo=bar',
    },
  );
  assert.deepEqual(
    connectionFor(
      host({ ansible_ssh_host: 'h', ansible_ssh_port: 22, ansible_ssh_user: 'u', ansible_ssh_pass: 'p', ansible_sudo_pass: 's' }),
    ),
    { kind: 'ssh', name: 'n1', address: 'h', port: 22, user: 'u', password: 'p', becomePassword: 's' },
  );
  assert.deepEqual(connectionFor(host({ ansible_user: 'inv' }), { user: 'cli', privateKeyFile: '/cli' }), {
    kind: 'ssh',
    name: 'n1',
    address: 'n1',
    user: 'inv',
    privateKeyFile: '/cli',
  });
  assert.equal(connectionFor(host({ ansible_connection: 'local' })).kind, 'local');
  assert.equal(connectionFor(host({ ansible_connection: 'paramiko' })).kind, 'ssh');
  assert.throws(
    () => connectionFor(host({ ansible_connection: 'winrm' })),
    (e: unknown) => e instanceof RunbookError && e.code === 'E_CONNECTION' && /winrm/.test(e.message),
  );
  // sudo only: su reads its password from a terminal (README: become)
  assert.equal(connectionFor(host({ ansible_become_method: 'sudo' })).kind, 'ssh');
  assert.throws(
    () => connectionFor(host({ ansible_become_method: 'su' })),
    (e: unknown) =>
      e instanceof RunbookError && e.code === 'E_CONNECTION' && /'su' is not supported, runbook becomes with sudo only/.test(e.message),
  );
  assert.throws(
    () => connectionFor(host({ ansible_port: 'abc' })),
    (e: unknown) => e instanceof RunbookError && /abc/.test(e.message),
  );
});

test('parseExtraVars: key=value strings, JSON/YAML objects, @file, later wins', () => {
  const d = tmp({ 'vars.yml': 'a: 1\nlist: [1, 2]\n', 'bad.yml': '- 1\n' });
  try {
    assert.deepEqual(parseExtraVars(['a=1 b="two words" c=\'x=y\'', '{"d": {"e": true}}', '@vars.yml', 'a=last'], d), {
      a: 'last',
      b: 'two words',
      c: 'x=y',
      d: { e: true },
      list: [1, 2],
    });
    assert.deepEqual(parseExtraVars(['{x: yes}'], d), { x: true });
    assert.throws(
      () => parseExtraVars(['novalue'], d),
      (e: unknown) => e instanceof ValidationError && e.code === 'E_EXTRA_VARS',
    );
    assert.throws(
      () => parseExtraVars(['@bad.yml'], d),
      (e: unknown) => e instanceof ValidationError && /mapping/.test(e.message),
    );
    assert.throws(
      () => parseExtraVars(['./vars.yml'], d),
      (e: unknown) => e instanceof ValidationError && /@/.test(e.message),
    );
    assert.throws(
      () => parseExtraVars(['@nope.yml'], d),
      (e: unknown) => e instanceof ValidationError && /not found/.test(e.message),
    );
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('python ports: literal_eval and shlex', () => {
  assert.deepEqual(literalEval('[1, "a", (2, 3), {"k": None}]')?.value, [1, 'a', [2, 3], { k: null }]);
  assert.equal(literalEval('True')?.value, true);
  assert.equal(literalEval('true'), undefined);
  assert.equal(literalEval('0x1F')?.value, 31);
  assert.equal(literalEval('010'), undefined);
  assert.equal(literalEval('\'a\' "b"')?.value, 'ab');
  assert.equal(literalEval('1e3')?.value, 1000);
  assert.equal(literalEval('-2')?.value, -2);
  assert.equal(literalEval('a b'), undefined);
  assert.deepEqual(shlexSplit(`h1 a="x y" b='it''s' c=d#comment e=f`), ['h1', 'a=x y', 'b=its', 'c=d']);
  assert.deepEqual(shlexSplit(`h a="q\\"q" b=\\$x`), ['h', 'a=q"q', 'b=$x']);
  assert.throws(() => shlexSplit('h a="x'), /No closing quotation/);
  assert.deepEqual(expandHostnameRange('n[01:03]'), ['n01', 'n02', 'n03']);
  assert.deepEqual(expandHostnameRange('x[a:e:2]'), ['xa', 'xc', 'xe']);
  assert.deepEqual(expandHostnameRange('r[1:2]c[a:b]'), ['r1ca', 'r1cb', 'r2ca', 'r2cb']);
});

test('inventory/example.yml and inventory/example.ini describe the same kubespray-shaped fleet', () => {
  const y = loadInventory(['inventory/example.yml'], { cwd: root });
  const i = loadInventory(['inventory/example.ini'], { cwd: root });
  assert.deepEqual(inventoryListJson(y), inventoryListJson(i));
  assert.deepEqual(selectHosts(y, 'kube_node:!node3'), ['node1', 'node2', 'node4', 'node5']);
  assert.equal(connectionFor(y.hosts.get('node1')!).address, '10.0.0.11');
});

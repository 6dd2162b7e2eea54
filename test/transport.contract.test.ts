// One contract for the Transport interface, run against the local transport and the SSH transport
// (real OpenSSH sshd from test/harness/sshd.ts).
// Commands that must be observed mid-flight hold on a gate file the test controls (gated() below), so nothing
// depends on how fast the machine is.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CAPTURE_HEAD, CAPTURE_TAIL } from '../src/transport/capture.js';
import { startSshHosts, type SshFleet } from './harness/sshd.js';
import { waitFor } from './harness/wait.js';
import { LocalTransport } from '../src/transport/local.js';
import { SshTransport } from '../src/transport/ssh.js';
import type { ConnectionSpec } from '../src/inventory/types.js';
import type { Transport } from '../src/transport/types.js';

interface Target {
  /** Make a transport (extra overrides the connection spec). */
  make(extra?: Partial<ConnectionSpec>): Transport;
  /** Run a check on the target independently of the transport under test. */
  check(cmd: string): Promise<string>;
  /** A directory on the target for put/get. */
  dir: string;
  /** become with a password really prompts (false for a root controller: sudo never asks root). */
  passwordPrompts: boolean;
  /** Connection spec extras for a user that needs a sudo password / for a NOPASSWD user. */
  sudoUser?: Partial<ConnectionSpec>;
  nopasswdUser?: Partial<ConnectionSpec>;
  password?: string;
}

/**
 * A script fragment that creates IN, then waits (at most 2 minutes) until GO exists: the test waits for IN (the
 * command is running), looks, then creates GO.
 */
const gated = (inFile: string, goFile: string): string =>
  `touch ${inFile}; n=0; while [ ! -e ${goFile} ] && [ $n -lt 2400 ]; do sleep 0.05; n=$((n+1)); done`;

let gates = 0;
/** Fresh IN/GO paths in `dir` (on the target). */
function gatePaths(dir: string): { inFile: string; goFile: string } {
  const base = `${dir}/gate-${process.pid}-${gates++}`;
  return { inFile: `${base}.in`, goFile: `${base}.go` };
}

/** True once `path` exists on the target (checked without the transport under test). */
async function existsOn(T: Target, path: string): Promise<boolean> {
  return (await T.check(`test -e ${path} && echo yes || true`)).trim() === 'yes';
}

/** ps -eo stat,args lines of `sleep MARK...` processes still alive (not zombies) on the target. */
async function sleepsLeft(T: Target, mark: number): Promise<string> {
  return (await T.check(`ps -eo stat,args | grep '[s]leep ${mark}' | grep -v '^Z' || true`)).trim();
}

function contract(name: string, setup: () => Promise<Target>, teardown: () => Promise<void>): void {
  describe(`Transport contract: ${name}`, () => {
    let T: Target;
    let t: Transport;
    before(async () => {
      T = await setup();
      t = T.make();
      await t.connect();
    });
    after(async () => {
      await t?.close();
      await teardown();
    });

    test('exit codes, stdout and stderr come back exactly', async () => {
      const r = await t.exec("printf 'a\\nb'; printf 'e1\\n' >&2; exit 7");
      assert.equal(r.code, 7);
      assert.equal(r.signal, null);
      assert.equal(r.stdout, 'a\nb');
      assert.equal(r.stderr, 'e1\n');
      assert.equal(r.timedOut, false);
      assert.equal((await t.exec('true')).code, 0);
      assert.equal((await t.exec('exit 255')).code, 255);
    });

    test('killed by a signal: code null, signal name', async () => {
      const r = await t.exec('kill -TERM $$');
      assert.equal(r.code, null);
      assert.equal(r.signal, 'SIGTERM');
    });

    test('binary-ish and large output, interleaved streams, no trailing-newline changes; a huge one keeps its head and tail', async () => {
      const r = await t.exec("printf 'x\\001\\002\\t\\r\\n\\303\\251'; head -c 100000 /dev/zero | tr '\\0' 'z'; printf 'end' >&2");
      assert.equal(r.code, 0);
      assert.equal(r.stdout, `x\u0001\u0002\t\r\n\u00e9${'z'.repeat(100_000)}`);
      assert.equal(r.stderr, 'end');
      assert.equal(r.truncated, undefined);
      const huge = await t.exec("printf 'head'; head -c 3000000 /dev/zero | tr '\\0' 'z'; printf 'tail'");
      assert.equal(huge.code, 0);
      assert.deepEqual(huge.truncated, { stdout: 3_000_008 });
      assert.ok(
        huge.stdout.startsWith(`head${'z'.repeat(CAPTURE_HEAD - 4)}\n… output truncated (`),
        huge.stdout.slice(CAPTURE_HEAD - 10, CAPTURE_HEAD + 80),
      );
      assert.ok(huge.stdout.endsWith(`…\n${'z'.repeat(CAPTURE_TAIL - 4)}tail`));
      const big = await t.exec('i=0; while [ $i -lt 2000 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done');
      assert.equal(big.stdout.split('\n').length, 2001);
      assert.equal(big.stderr.split('\n')[1999], 'err 1999');
    });

    test('env values are data, never code', async () => {
      const nasty = `a'b"c $(echo PWNED) \`id\` ; \\ \n line2`;
      const r = await t.exec('printf "%s|%s" "$V1" "$V2"', { env: { V1: nasty, V2: '' } });
      assert.equal(r.stdout, `${nasty}|`);
      await assert.rejects(t.exec('true', { env: { 'BAD NAME': 'x' } }), (e: Error & { code?: string }) => e.code === 'E_INVALID');
    });

    test('stdin reaches the script (binary-safe); without stdin the script reads EOF', async () => {
      const input = Buffer.from([0, 1, 2, 255, 10, 65, 0]);
      const r = await t.exec('od -An -tx1 | tr -s " \\n" " "', { stdin: input });
      assert.equal(r.stdout.trim(), '00 01 02 ff 0a 41 00');
      const text = await t.exec('cat; echo "[$x]"', { stdin: 'line1\nline2\n', env: { x: 'y' } });
      assert.equal(text.stdout, 'line1\nline2\n[y]\n');
      const none = await t.exec('cat; echo done');
      assert.equal(none.stdout, 'done\n');
    });

    test('the script is not in argv (ps on the target never shows it)', async () => {
      const secret = `S3CRET-${Date.now()}`;
      const g = gatePaths(T.dir);
      const run = t.exec(`: ${secret}; ${gated(g.inFile, g.goFile)}`);
      let ps: string;
      try {
        await waitFor(() => existsOn(T, g.inFile), { what: 'the script running on the target (its gate file)' });
        ps = await T.check('ps -eo args');
      } finally {
        await T.check(`touch ${g.goFile}`);
      }
      assert.equal((await run).code, 0);
      assert.equal(ps.includes(secret), false, 'secret visible in ps');
    });

    test('timeout kills the whole process group (no sleep left on the target)', async () => {
      const mark = 4000 + Math.floor(Math.random() * 1000);
      // Not timed: if the group were not killed, exec would wait ~70 minutes for the sleeps (and the test time out).
      const r = await t.exec(`sleep ${mark}.1 & sleep ${mark}.2 & (sleep ${mark}.3; echo never) ; echo never`, { timeoutMs: 500 });
      assert.equal(r.timedOut, true);
      assert.equal(r.code, null);
      assert.ok(r.signal, 'a signal is reported');
      assert.doesNotMatch(r.stdout, /never/);
      // killed processes vanish a moment after the kill
      let left = '';
      await waitFor(
        async () => {
          left = await sleepsLeft(T, mark);
          return left === '';
        },
        { what: `no sleep ${mark}.* left on the target`, detail: () => `left on the target:\n${left}` },
      );
    });

    test('a one-pipeline command runs in place (its program is a child of the shell); its timeout ends it, and the next command runs', async () => {
      const shell = (await t.exec('echo $$')).stdout.trim();
      const stat = (await t.exec('cat /proc/self/stat')).stdout;
      // ssh: the session shell (no subshell between); local: a shell of its own per command, also its parent.
      const parent = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1];
      if (name.startsWith('ssh')) assert.equal(parent, shell, 'cat ran in the session shell, not in a subshell of it');
      const mark = 6000 + Math.floor(Math.random() * 1000);
      const r = await t.exec(`sleep ${mark}.4 | cat`, { timeoutMs: 500 });
      assert.equal(r.timedOut, true);
      assert.equal(r.code, null);
      let left = '';
      await waitFor(
        async () => {
          left = await sleepsLeft(T, mark);
          return left === '';
        },
        { what: `no sleep ${mark}.4 left on the target`, detail: () => `left on the target:\n${left}` },
      );
      assert.equal((await t.exec('echo next')).stdout, 'next\n');
      // ssh: the kill ended the command, not the session shell
      if (name.startsWith('ssh')) assert.equal((await t.exec('echo $$')).stdout.trim(), shell);
    });

    test('commands do not leak state into later ones (cwd, variables, umask, traps, options, fds)', async () => {
      const probe = 'pwd; echo "[${RB_LEAK-}][${rb_x-}]"; umask; trap; case $- in *e*) echo errexit;; esac; ls /proc/self/fd | wc -l';
      const before = await t.exec(probe);
      assert.equal(before.code, 0, before.stderr);
      const dirty = await t.exec("cd /; export RB_LEAK=1; rb_x=2; umask 077; set -e; trap 'echo trapped' EXIT; exec 7>/dev/null; exit 3");
      assert.equal(dirty.code, 3);
      assert.equal(dirty.stdout, 'trapped\n');
      const after = await t.exec(probe);
      assert.equal(after.stdout, before.stdout);
      assert.equal(after.stderr, '');
    });

    test('a command closing its own stdout/stderr, or printing marker look-alikes, is reported exactly', async () => {
      const closed = await t.exec('echo before; exec >&- 2>&-; sleep 0.1; exit 4');
      assert.equal(closed.code, 4);
      assert.equal(closed.stdout, 'before\n');
      const fake = '<<rb-e-0123:0>>\n<<rb-s-x:1:2>>\n<<rb-ready-y:5>>\n<<rb-';
      const r = await t.exec(`printf '%s' '${fake}'; printf '%s' '${fake}' >&2`);
      assert.equal(r.code, 0);
      assert.equal(r.stdout, fake);
      assert.equal(r.stderr, fake);
    });

    test('timeout: a double-forked child of the command dies with it; a background process of an earlier command survives; the next command runs', async () => {
      const mark = 5000 + Math.floor(Math.random() * 1000);
      const bg = await t.exec(`sleep ${mark}.7 >/dev/null 2>&1 </dev/null & echo started`);
      assert.equal(bg.stdout, 'started\n');
      try {
        const g = gatePaths(T.dir);
        // the double-forked sleep exists before the timeout can fire: the command waits for it
        const r = await t.exec(
          `( (sleep ${mark}.8 >/dev/null 2>&1 &) ); while ! ps -eo args | grep -q '^[s]leep ${mark}\\.8'; do sleep 0.05; done; touch ${g.inFile}; sleep ${mark}.9`,
          { timeoutMs: 5000 }, // far longer than the wait for the child: the timeout fires in the final sleep
        );
        assert.equal(r.timedOut, true);
        assert.equal(r.code, null);
        assert.ok(await existsOn(T, g.inFile), 'the double-forked child was running when the timeout fired');
        let left = '';
        await waitFor(
          async () => {
            left = await sleepsLeft(T, mark);
            return !new RegExp(`sleep ${mark}\\.[89]`).test(left);
          },
          { what: `sleep ${mark}.8 and .9 gone from the target`, detail: () => `left on the target:\n${left}` },
        );
        assert.match(left, new RegExp(`sleep ${mark}\\.7`), "the earlier command's background process is still running");
        const next = await t.exec('echo next');
        assert.equal(next.code, 0);
        assert.equal(next.stdout, 'next\n');
      } finally {
        await T.check(`pkill -f '[s]leep ${mark}' || true`);
      }
    });

    test('abort signal kills like a timeout, timedOut false', async () => {
      const ac = new AbortController();
      const g = gatePaths(T.dir);
      const run = t.exec(`touch ${g.inFile}; sleep 3000`, { signal: ac.signal });
      await waitFor(() => existsOn(T, g.inFile), { what: 'the command running on the target' });
      ac.abort();
      const r = await run;
      assert.equal(r.timedOut, false);
      assert.equal(r.code, null);
    });

    test('onOutput streams chunks as they arrive', async () => {
      const chunks: string[] = [];
      const g = gatePaths(T.dir);
      let released: Promise<string> | undefined;
      // the second line is printed only after the first one reached the caller
      const r = await t.exec(`echo one; ${gated(g.inFile, g.goFile)}; echo two >&2`, {
        onOutput: (s, c) => {
          chunks.push(`${s}:${c}`);
          if (!released && chunks.join('').includes('stdout:one\n')) released = T.check(`touch ${g.goFile}`);
        },
      });
      await released;
      assert.equal(r.code, 0);
      assert.ok(released, 'the first line arrived while the command was still running');
      assert.deepEqual(chunks.join(''), 'stdout:one\nstderr:two\n');
    });

    test('become without password (sudo -n)', async () => {
      const tb = T.nopasswdUser ? T.make(T.nopasswdUser) : t;
      try {
        const r = await tb.exec('id -u; echo "$V"', { become: true, env: { V: 'kept' } });
        assert.equal(r.stdout, '0\nkept\n', r.stderr);
        const nob = await tb.exec('id -un', { become: true, becomeUser: 'nobody' });
        assert.equal(nob.stdout, 'nobody\n', nob.stderr);
      } finally {
        if (tb !== t) await tb.close();
      }
    });

    test('become as the login user itself goes through no sudo (a root login on a host without sudo works)', async () => {
      const me = (await t.exec('id -un')).stdout.trim();
      for (const becomePassword of [undefined, 'never-asked']) {
        const tb = T.make(becomePassword ? { becomePassword } : {});
        try {
          // In a step, $PPID is the session shell's parent: sudo when the session was started through it.
          const r = await tb.exec('cat /proc/$PPID/comm; id -un', { become: true, becomeUser: me });
          assert.equal(r.code, 0, r.stderr);
          const [parent, who] = r.stdout.trim().split('\n');
          assert.notEqual(parent, 'sudo', `password ${becomePassword ?? 'none'}`);
          assert.equal(who, me);
        } finally {
          await tb.close();
        }
      }
    });

    test('become with a password: sent only when sudo prompts, never in output', async () => {
      const pw = T.password ?? 'unused-password';
      const tb = T.make({ ...(T.sudoUser ?? {}), becomePassword: pw });
      try {
        const r = await tb.exec('id -u; cat', { become: true, stdin: 'data-after-password\n' });
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, '0\ndata-after-password\n');
        assert.equal(r.stdout.includes(pw) || r.stderr.includes(pw), false);
        assert.equal(r.stderr, '');
        if (T.passwordPrompts) {
          const wrong = T.make({ ...(T.sudoUser ?? {}), becomePassword: 'definitely-wrong' });
          try {
            const w = await wrong.exec('id -u', { become: true });
            assert.notEqual(w.code, 0);
            assert.match(w.stderr, /become password/);
            assert.equal(w.stdout, '');
          } finally {
            await wrong.close();
          }
          const none = T.make({ ...(T.sudoUser ?? {}) });
          try {
            const n = await none.exec('id -u', { become: true });
            assert.notEqual(n.code, 0);
            assert.match(n.stderr, /password is required/);
          } finally {
            await none.close();
          }
        }
      } finally {
        await tb.close();
      }
    });

    test('put/get round-trip with mode, binary content; get of a missing file fails clearly', async () => {
      const p = `${T.dir}/put-${Date.now()}.bin`;
      const content = Buffer.from([0, 1, 2, 3, 250, 251, 10]);
      await t.put(content, p, { mode: 0o640 });
      assert.deepEqual(await t.get(p), content);
      assert.equal((await T.check(`stat -c %a ${p}`)).trim(), '640');
      await t.put('replaced\n', p);
      assert.equal((await t.get(p)).toString(), 'replaced\n');
      await assert.rejects(
        t.get(`${T.dir}/nope-${Date.now()}`),
        (e: Error & { code?: string }) => e.code === 'E_FILE' && /nope-/.test(e.message),
      );
    });

    test('concurrent execs on one transport', async () => {
      const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => t.exec(`sleep 0.0${i % 10}; echo ${i}; exit ${i % 4}`)));
      rs.forEach((r, i) => {
        assert.equal(r.stdout, `${i}\n`);
        assert.equal(r.code, i % 4);
      });
    });
  });
}

// ---- local
let localDir = '';
contract(
  'local',
  async () => {
    localDir = mkdtempSync(join(tmpdir(), 'rb-local-'));
    return {
      make: (extra = {}) => new LocalTransport({ kind: 'local', name: 'localhost', address: 'localhost', ...extra }),
      check: async (cmd: string) => {
        const { execFileSync } = await import('node:child_process');
        return execFileSync('sh', ['-c', cmd], { encoding: 'utf8' });
      },
      dir: localDir,
      // the controller runs as root in CI: sudo never prompts root, so the password must not be needed/sent
      passwordPrompts: false,
    };
  },
  async () => {
    rmSync(localDir, { recursive: true, force: true });
  },
);

// ---- ssh
let fleet: SshFleet;
contract(
  'ssh',
  async () => {
    fleet = await startSshHosts(1);
    console.log(`# ssh fleet mode: ${fleet.mode}`);
    const h = fleet.hosts[0];
    const base: ConnectionSpec = {
      kind: 'ssh',
      name: h.name,
      address: h.address,
      port: h.port,
      user: h.user,
      privateKeyFile: fleet.clientKeyFile,
    };
    const netns = fleet.mode === 'netns';
    return {
      make: (extra = {}) =>
        new SshTransport(
          { ...base, ...extra },
          {
            hostKeyChecking: 'strict',
            knownHostsFiles: [fleet.knownHostsFile],
            connectTimeoutMs: 20_000,
            sshConfigFile: 'none',
            agent: false,
          },
        ),
      check: async (cmd: string) => (await fleet.exec(h, cmd)).stdout,
      dir: netns ? '/tmp' : mkdtempSync(join(tmpdir(), 'rb-sshput-')),
      passwordPrompts: netns,
      sudoUser: netns ? { user: fleet.users.sudoUser } : undefined,
      nopasswdUser: netns ? { user: fleet.users.nopasswdUser } : undefined,
      password: fleet.users.password,
    };
  },
  async () => {
    await fleet?.stop();
  },
);

test("ssh: the become password is never in the host's ps output while sudo runs", async (t) => {
  const f = await startSshHosts(1);
  try {
    if (f.mode !== 'netns') {
      t.diagnostic('local mode: no sudo user with a password; checked in netns mode only');
      return;
    }
    const h = f.hosts[0];
    const tr = new SshTransport(
      {
        kind: 'ssh',
        name: h.name,
        address: h.address,
        port: h.port,
        user: f.users.sudoUser,
        privateKeyFile: f.clientKeyFile,
        becomePassword: f.users.password,
      },
      { hostKeyChecking: 'strict', knownHostsFiles: [f.knownHostsFile], connectTimeoutMs: 20_000, sshConfigFile: 'none', agent: false },
    );
    const g = gatePaths('/tmp');
    const run = tr.exec(`${gated(g.inFile, g.goFile)}; id -u`, { become: true });
    let ps: string;
    try {
      await waitFor(async () => (await f.exec(h, `test -e ${g.inFile}`)).code === 0, { what: 'the sudo command running on the host' });
      ps = (await f.exec(h, 'ps -eo args')).stdout;
    } finally {
      await f.exec(h, `touch ${g.goFile}`);
    }
    assert.match(ps, /sudo -H -S -p/);
    assert.equal(ps.includes(f.users.password!), false);
    assert.equal(ps.includes('S3cr'), false);
    assert.equal((await run).stdout, '0\n');
    await tr.close();
  } finally {
    await f.stop();
  }
});

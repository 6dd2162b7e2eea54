#!/usr/bin/env node
// The raw ssh2 floor: connect to every host at once (TCP_NODELAY from the first byte), verify the
// host key against known_hosts, then run STEPS commands one after the other on each connection.
// Usage: node bench/floor.mjs HOSTS.json STEPS [exec|session]
//   exec (default): one exec request (channel + login shell on the host) per command: the floor.
//   session: one `sh -s` channel per connection, the commands written to its stdin one after the other, each
//   answered by an end line: the floor of runbook's own technique (its transport runs a shell session per host).
//   HOSTS.json: { "key": "/path/client_key", "knownHosts": "/path/known_hosts",
//                 "hosts": [{ "name", "address", "port", "user" }, ...] }
// Exit 0 when every command on every host exited 0 with the expected output.
import { readFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import ssh2 from 'ssh2';

const tImported = performance.now(); // ms since process start: node + ssh2 load

const [file, stepsArg, mode = 'exec'] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(file, 'utf8'));
const steps = Number(stepsArg ?? 10);
const key = readFileSync(spec.key);
const known = new Map();
for (const line of readFileSync(spec.knownHosts, 'utf8').split('\n')) {
  const [name, , b64] = line.trim().split(/\s+/);
  if (b64) known.set(name, Buffer.from(b64, 'base64'));
}

function exec(client, cmd) {
  return new Promise((resolve, reject) => {
    client.exec(cmd, (err, ch) => {
      if (err) return reject(err);
      let out = '';
      let code = null;
      ch.on('data', (d) => {
        out += d;
      });
      ch.stderr.on('data', () => {});
      ch.on('exit', (c) => {
        code = c;
      });
      ch.on('close', () => resolve({ code, out }));
    });
  });
}

function openSession(client) {
  return new Promise((resolve, reject) =>
    client.exec('exec sh -s', (err, ch) => {
      if (err) return reject(err);
      let out = '';
      let waiter;
      ch.stderr.on('data', () => {});
      ch.on('data', (d) => {
        out += d;
        const i = out.indexOf('\n<<end:');
        const e = i >= 0 ? out.indexOf('>>\n', i) : -1;
        if (e >= 0) {
          const w = waiter;
          waiter = undefined;
          const r = { out: out.slice(0, i), code: Number(out.slice(i + 7, e)) };
          out = '';
          w(r);
        }
      });
      resolve({
        run: (cmd) =>
          new Promise((r) => {
            waiter = r;
            ch.write(`${cmd}\nprintf '\\n<<end:%s>>\\n' $?\n`);
          }),
        end: () => ch.end(),
      });
    }),
  );
}

async function host(h) {
  const entry = h.port === 22 ? h.address : `[${h.address}]:${h.port}`;
  const sock = tcpConnect({ host: h.address, port: h.port });
  sock.setNoDelay(true);
  const client = new ssh2.Client();
  await new Promise((resolve, reject) => {
    client.once('ready', resolve).once('error', reject);
    client.connect({
      sock,
      username: h.user,
      privateKey: key,
      readyTimeout: 60_000,
      hostVerifier: (k) => known.has(entry) && known.get(entry).equals(k),
    });
  });
  connected.push(performance.now());
  const session = mode === 'session' ? await openSession(client) : undefined;
  for (let i = 1; i <= steps; i++) {
    const r = session ? await session.run(`echo step ${i}`) : await exec(client, `echo step ${i}`);
    if (r.code !== 0 || r.out !== `step ${i}\n`) throw new Error(`${h.name}: step ${i}: exit ${r.code} ${JSON.stringify(r.out)}`);
  }
  session?.end();
  client.end();
}

const connected = [];
const results = await Promise.allSettled(spec.hosts.map(host));
const tDone = performance.now();
// Phases like the runbook ones in run.mjs: startup, connect (until the last host is connected), steps.
process.stdout.write(
  `${JSON.stringify({ phases_ms: { startup: Math.round(tImported), connect: Math.round(Math.max(...connected) - tImported), steps: Math.round(tDone - Math.max(...connected)) } })}\n`,
);
const bad = results.filter((r) => r.status === 'rejected');
for (const r of bad) process.stderr.write(`floor: ${r.reason?.message ?? r.reason}\n`);
process.exit(bad.length ? 1 : 0);

#!/usr/bin/env node
// The raw ssh2 floor: connect to every host at once (TCP_NODELAY from the first byte), verify the
// host key against known_hosts, then run STEPS commands one after the other on each connection.
// Usage: node bench/floor.mjs HOSTS.json STEPS [exec|session|subshell] [CONNECT_CONCURRENCY]
//   exec (default): one exec request (channel + login shell on the host) per command: the floor.
//   session: one `sh -s` channel per connection, the commands written to its stdin one after the other, each
//   answered by an end line: the floor of runbook's own technique (its transport runs a shell session per host).
//   subshell: session, each command in a subshell `( cmd ) </dev/null`, as runbook runs every step (a step's
//   exit, cd, variables and traps end with it): the fork that isolation costs on the host, and nothing else.
//   CONNECT_CONCURRENCY (default 32, runbook's --connect-concurrency default; 0 = all at once): connections
//   (TCP + handshake) in flight at once. With hosts that share the controller's 2 cores, all at once makes every
//   sshd fork and re-exec at the same moment: at 1,000 hosts most handshakes then time out.
//   HOSTS.json: { "key": "/path/client_key", "knownHosts": "/path/known_hosts",
//                 "hosts": [{ "name", "address", "port", "user" }, ...] }
// Exit 0 when every command on every host exited 0 with the expected output.
import { readFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import ssh2 from 'ssh2';

const tImported = performance.now(); // ms since process start: node + ssh2 load

const [file, stepsArg, mode = 'exec', ccArg = '32'] = process.argv.slice(2);
const connectConcurrency = Number(ccArg);
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
            ch.write(
              mode === 'subshell' ? `( ${cmd}\n) </dev/null; printf '\\n<<end:%s>>\\n' $?\n` : `${cmd}\nprintf '\\n<<end:%s>>\\n' $?\n`,
            );
          }),
        end: () => ch.end(),
      });
    }),
  );
}

// A counting semaphore for the connections in flight.
let inFlight = 0;
const waiting = [];
async function admitted(fn) {
  if (connectConcurrency > 0 && inFlight >= connectConcurrency) await new Promise((r) => waiting.push(r));
  inFlight++;
  try {
    return await fn();
  } finally {
    inFlight--;
    waiting.shift()?.();
  }
}

function connectClient(h) {
  const entry = h.port === 22 ? h.address : `[${h.address}]:${h.port}`;
  const sock = tcpConnect({ host: h.address, port: h.port });
  sock.setNoDelay(true);
  const client = new ssh2.Client();
  return new Promise((resolve, reject) => {
    client.once('ready', () => resolve(client)).once('error', reject);
    client.connect({
      sock,
      username: h.user,
      privateKey: key,
      readyTimeout: 60_000,
      hostVerifier: (k) => known.has(entry) && known.get(entry).equals(k),
    });
  });
}

async function host(h) {
  const client = await admitted(() => connectClient(h));
  connected.push(performance.now());
  const session = mode === 'exec' ? undefined : await openSession(client);
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
for (const r of bad.slice(0, 3)) process.stderr.write(`floor: ${r.reason?.message ?? r.reason}\n`);
if (bad.length > 3) process.stderr.write(`floor: ${bad.length - 3} more hosts failed\n`);
process.exit(bad.length ? 1 : 0);

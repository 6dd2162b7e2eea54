#!/usr/bin/env node
// Per-exec latency of command-launch variants on one ssh2 connection per host (all hosts at once), to price
// the transport's exec protocol against a bare `echo`. Usage (fleet from bench/fleet-up.ts):
//   node --import tsx bench/exec-variants.mjs DIR/fleet.json STEPS [plain|stdin|shc|shs|shs-init|wrap]
//   plain: `echo step i`; stdin: same + empty stdin/EOF; shc: `exec sh -c 'echo'`; shs: `exec sh -s` + script on
//   stdin; shs-init: shs + the READY/pgid line; wrap: exactly what the transport sends (shell.ts prepareRun).
import { readFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import ssh2 from 'ssh2';
const { prepareRun } = await import(new URL('../src/transport/shell.ts', import.meta.url).href); // run with node --import tsx
const [file, stepsArg, mode] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(file, 'utf8'));
const steps = Number(stepsArg ?? 10);
const key = readFileSync(spec.key);
const t0 = performance.now();
const lat = [];
const conn = [];
function exec(client, cmd, stdin) {
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
      if (stdin !== undefined) ch.end(stdin);
    });
  });
}
// persist: one `exec sh -s` channel per host, each command sent on its stdin and ended by a marker
// (persist: in a subshell; persist-setsid: in its own session via setsid; persist-setsid-env: script via env)
function openPersistent(client) {
  return new Promise((resolve, reject) =>
    client.exec('exec sh -s', (err, ch) => {
      if (err) return reject(err);
      let out = '';
      let waiter;
      ch.on('data', (d) => {
        out += d;
        if (waiter && out.includes(waiter.mark)) {
          const w = waiter;
          waiter = undefined;
          const i = out.indexOf(w.mark);
          const r = out.slice(0, i);
          out = '';
          w.resolve(r);
        }
      });
      ch.stderr.on('data', () => {});
      resolve({
        run(script, m) {
          const mark = `<<rb-end-${Math.random().toString(36).slice(2)}:`;
          const q = `'${script.replace(/'/g, `'\\''`)}'`;
          let body;
          if (m === 'persist') body = `rb_script=${q}\n( eval "$rb_script" ) </dev/null\nprintf '%s%s>>\\n' '${mark}' $?\n`;
          else if (m === 'persist-setsid')
            body = `rb_script=${q}\n( read -r rb_s </proc/self/stat; printf '%s\\n' "\${rb_s%% *}" >&2; exec setsid sh -c 'eval "$1"' sh "$rb_script" ) </dev/null\nprintf '%s%s>>\\n' '${mark}' $?\n`;
          else
            body = `rb_script=${q}\n( read -r rb_s </proc/self/stat; printf '%s\\n' "\${rb_s%% *}" >&2; RB_S=$rb_script exec setsid sh -c 'rb_s=$RB_S; unset RB_S; eval "$rb_s"' ) </dev/null\nprintf '%s%s>>\\n' '${mark}' $?\n`;
          return new Promise((res) => {
            waiter = { mark, resolve: res };
            ch.write(body);
          });
        },
      });
    }),
  );
}
async function host(h) {
  const c0 = performance.now();
  const sock = tcpConnect({ host: h.address, port: h.port });
  sock.setNoDelay(true);
  const client = new ssh2.Client();
  await new Promise((resolve, reject) => {
    client.once('ready', resolve).once('error', reject);
    client.connect({ sock, username: h.user, privateKey: key, readyTimeout: 60000 });
  });
  conn.push(performance.now() - c0);
  let sh;
  if (mode?.startsWith('persist')) sh = await openPersistent(client);
  for (let i = 1; i <= steps; i++) {
    const s = performance.now();
    if (sh) {
      await sh.run(`echo step ${i}`, mode);
      lat.push(performance.now() - s);
      continue;
    }
    if (mode === 'wrap') {
      const p = prepareRun({ script: `echo step ${i}` });
      await exec(client, p.command, p.wrapper);
    } else if (mode === 'shc') await exec(client, `exec sh -c 'echo step ${i}'`);
    else if (mode === 'shs') await exec(client, `exec sh -s`, `echo step ${i}\n`);
    else if (mode === 'stdin') await exec(client, `echo step ${i}`, '');
    else if (mode === 'shs-init') {
      const p = prepareRun({ script: `echo step ${i}` });
      await exec(
        client,
        'exec sh -s',
        `read -r rb_s </proc/$$/stat; rb_s=\${rb_s##*) }; set -- $rb_s; printf '%s%s>>\\n' '<<rb-ready-x:' "$3" >&2\n${p.wrapper}`,
      );
    } else await exec(client, `echo step ${i}`);
    lat.push(performance.now() - s);
  }
  client.end();
}
await Promise.all(spec.hosts.map(host));
const q = (a, p) => {
  a.sort((x, y) => x - y);
  return a[Math.floor(a.length * p)].toFixed(0);
};
console.log(
  mode ?? 'plain',
  'total',
  (performance.now() - t0).toFixed(0),
  'connect p50/max',
  q(conn, 0.5),
  q(conn, 0.99),
  'exec p50/p90',
  q(lat, 0.5),
  q(lat, 0.9),
);

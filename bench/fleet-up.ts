// Dev helper (profiling by hand): start N loopback sshd hosts, write DIR/inventory.yml (+ per-host lock paths), DIR/known_hosts
// path in DIR/fleet.json, and keep them up until SIGINT/SIGTERM. Usage: node --import tsx bench/fleet-up.ts N DIR
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startSshHosts } from '../test/harness/sshd.ts';

const [nArg, dir] = process.argv.slice(2);
const fleet = await startSshHosts(Number(nArg), { mode: 'local' });
const hostVars = Object.fromEntries(fleet.hosts.map((h) => [h.name, { runbook_lock_path: join(dir, 'locks', h.name, 'lock') }]));
await fleet.writeInventory(join(dir, 'inventory.yml'), { hostVars });
writeFileSync(
  join(dir, 'fleet.json'),
  JSON.stringify({
    key: fleet.clientKeyFile,
    knownHosts: fleet.knownHostsFile,
    hosts: fleet.hosts.map((h) => ({ name: h.name, address: h.address, port: h.port, user: h.user })),
  }),
);
process.stdout.write(`up ${fleet.hosts.length}\n`);
const stop = async () => {
  await fleet.stop();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
setInterval(() => {}, 1 << 30);

#!/usr/bin/env node
// Runs test/**/*.test.ts with node's test runner (TypeScript through tsx).
// Usage: node test/run.mjs [--unit | --local] [substring-filter ...]
//
//   (no flag)  every test file: the whole suite (`npm test`; needs root for sshd hosts and nspawn nodes).
//   --unit     the fast tier (`npm run test:unit`, the inner loop, seconds): files whose first line is exactly
//              `// tier: unit`: pure unit tests and quick local ones, no root, no sshd, no nspawn.
//   --local    everything that needs no root (`npm run test:local`): the unit tier plus the files marked
//              `// tier: local`, which need no root either but run the CLI on local hosts many times over
//              (crash scenarios, start-up, end-to-end; about 90 s of two cores, too slow for the inner loop).
//              Not in it although it needs no root: inventory-ansible.test.ts (runs the real ansible-core, a minute
//              of Python start-ups).
//   Both tiers run with RUNBOOK_TEST_TIER set: the harness then refuses to start sshd, network namespaces or nspawn
//   nodes, so a file in a tier that needs them fails loudly instead of being skipped.
//
// TEST_CONCURRENCY: files run at once (default 2; 4 in the unit tier, whose files mostly wait on child processes).
// TEST_TIMEOUT_MS: per-test deadline (default 10 minutes): a hang fails with node's "test timed out" instead of
// hanging the run.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const MARKERS = { unit: ['// tier: unit'], local: ['// tier: unit', '// tier: local'] };
// Started first in a tier (the longest files; a tier ends when its longest file does). Order only.
const SLOW_FIRST = [
  'test/crash-local.test.ts',
  'test/cli-startup.test.ts',
  'test/e2e-local.test.ts',
  'test/lock.test.ts',
  'test/template.test.ts',
];

const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (name === 'fixtures' || name === 'node_modules') continue;
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.ts')) files.push(relative(root, p));
  }
})(join(root, 'test'));

const args = process.argv.slice(2);
const tier = args.includes('--unit') ? 'unit' : args.includes('--local') ? 'local' : undefined;
const filters = args.filter((a) => a !== '--unit' && a !== '--local');
const unknownFlag = filters.find((a) => a.startsWith('--'));
if (unknownFlag) {
  console.error(`unknown option ${unknownFlag} (usage: node test/run.mjs [--unit | --local] [substring-filter ...])`);
  process.exit(1);
}

const firstLine = (f) => readFileSync(join(root, f), 'utf8').split('\n', 1)[0].trim();
let pool = files;
if (tier) pool = files.filter((f) => MARKERS[tier].includes(firstLine(f)));
let chosen = filters.length ? pool.filter((f) => filters.some((x) => f.includes(x))) : pool;
if (tier) {
  const rank = (f) => (SLOW_FIRST.includes(f) ? SLOW_FIRST.indexOf(f) : SLOW_FIRST.length);
  chosen = [...chosen].sort((a, b) => rank(a) - rank(b));
}
if (chosen.length === 0) {
  console.error(tier ? `no ${tier}-tier test files matched` : 'no test files matched');
  process.exit(1);
}
const concurrency = process.env.TEST_CONCURRENCY ?? (tier ? '4' : '2');
const timeout = process.env.TEST_TIMEOUT_MS ?? '600000';
// Every temp file any test makes goes under one private TMPDIR, removed when the run ends.
const tmp = mkdtempSync('/tmp/runbook-tests-');
const t0 = Date.now();
const env = { ...process.env, TMPDIR: tmp };
if (tier) env.RUNBOOK_TEST_TIER = tier;
else delete env.RUNBOOK_TEST_TIER;
const r = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, `--test-timeout=${timeout}`, ...chosen],
  { stdio: 'inherit', cwd: root, env },
);
try {
  rmSync(tmp, { recursive: true, force: true });
} catch (err) {
  console.error(`note: could not remove ${tmp}: ${err.message}`);
}
console.error(`${tier ? `${tier} tier: ` : ''}${chosen.length} test file(s) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
process.exit(r.status ?? 1);

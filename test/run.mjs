#!/usr/bin/env node
// Runs every test/**/*.test.ts with node's test runner (TypeScript through tsx).
// Usage: node test/run.mjs [substring-filter ...]
import { readdirSync, statSync, mkdtempSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (name === 'fixtures' || name === 'node_modules') continue;
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.ts')) files.push(relative(root, p));
  }
})(join(root, 'test'));
const filters = process.argv.slice(2);
const chosen = filters.length ? files.filter((f) => filters.some((x) => f.includes(x))) : files;
if (chosen.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
const concurrency = process.env.TEST_CONCURRENCY ?? '2';
// Every temp file any test makes goes under one private TMPDIR, removed when the run ends.
const tmp = mkdtempSync('/tmp/runbook-tests-');
const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, ...chosen], {
  stdio: 'inherit',
  cwd: root,
  env: { ...process.env, TMPDIR: tmp },
});
try {
  rmSync(tmp, { recursive: true, force: true });
} catch (err) {
  console.error(`note: could not remove ${tmp}: ${err.message}`);
}
process.exit(r.status ?? 1);

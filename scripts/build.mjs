#!/usr/bin/env node
// Build: type-check with tsc, then bundle src/ into dist/cli/ with esbuild (one file per lazily
// loaded command chunk). Loading one bundle instead of ~100 small ES modules (ours, yargs', zod's)
// cuts the CLI's start-up by about a third. ssh2, zx and ora stay external: they load lazily or
// carry optional native parts. Then write dist/help.txt for the `--help` fast path in bin/runbook.
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { build } from 'esbuild';

const root = new URL('..', import.meta.url).pathname;
execFileSync(process.execPath, [`${root}node_modules/typescript/bin/tsc`, '-p', `${root}tsconfig.json`, '--noEmit'], { stdio: 'inherit' });
rmSync(`${root}dist`, { recursive: true, force: true });
await build({
  entryPoints: [`${root}src/cli/main.ts`],
  outdir: `${root}dist/cli`,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  sourcemap: true,
  external: ['ssh2', 'cpu-features', 'zx', 'ora'],
  // Bundled CommonJS dependencies (yargs' helpers) may call require().
  banner: { js: "import { createRequire as __runbookRequire } from 'node:module'; const require = __runbookRequire(import.meta.url);" },
  logLevel: 'warning',
});
const help = execFileSync(process.execPath, [`${root}bin/runbook`, '--help'], { env: { ...process.env, RUNBOOK_HELP_CACHE: '0' } });
writeFileSync(`${root}dist/help.txt`, help);

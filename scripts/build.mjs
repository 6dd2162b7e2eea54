#!/usr/bin/env node
// Build: type-check with tsc, bundle with esbuild, write the V8 code caches bin/runbook loads the
// bundles with, and dist/help.txt for the `--help` fast path in bin/runbook.
// - dist/cli/main.js: src/ with yargs, js-yaml and zod, one CommonJS file: node 20 can use a code
//   cache only for scripts (vm.Script), not for ES modules. Lazily imported commands stay lazy:
//   esbuild turns import('./commands/x.js') into an init function in the same file.
// - dist/cli/ssh2.js: ssh2's client (Client, utils.parseKey) and its JS dependencies, a second CommonJS file (its modules keep their
//   own strict or sloppy mode; main.js is strict throughout). Its native parts (sshcrypto.node,
//   cpu-features) are still loaded from node_modules. zx and ora stay in node_modules (ES modules,
//   loaded late and only when needed).
// - dist/cli/code-cache/*.bin: from training runs of bin/runbook (RUNBOOK_CODE_CACHE_TRAIN): a
//   `validate` of the shipped hello runbook and an `apply` on two local hosts in a temp dir. A cache
//   holds the functions its run compiled; anything else compiles on first use as usual.
// Output is deterministic except the code caches (V8's serializer; they are checked at load).
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { build } from 'esbuild';

const root = new URL('..', import.meta.url).pathname;
const bin = join(root, 'bin', 'runbook');
const out = join(root, 'dist', 'cli');
execFileSync(process.execPath, [`${root}node_modules/typescript/bin/tsc`, '-p', `${root}tsconfig.json`, '--noEmit'], { stdio: 'inherit' });
rmSync(`${root}dist`, { recursive: true, force: true });

// yargs and cliui import string-width (three copies, two versions), whose module set-up builds an
// Intl.Segmenter and Unicode-property regular expressions: ~35 ms before any command runs, for
// width computations that only help output needs. Each importer gets a stand-in that loads its own
// string-width on the first call (same function, same results; esbuild turns the require() into
// a lazy init of the bundled ES module).
const lazyStringWidth = {
  name: 'lazy-string-width',
  setup(b) {
    b.onResolve({ filter: /^string-width$/ }, async (args) => {
      if (args.pluginData?.real) return undefined;
      const real = await b.resolve(args.path, {
        kind: args.kind,
        importer: args.importer,
        resolveDir: args.resolveDir,
        pluginData: { real: true },
      });
      if (real.errors.length) return { errors: real.errors };
      return { path: relative(root, real.path), namespace: 'lazy-string-width' }; // relative: same output in any checkout
    });
    b.onLoad({ filter: /.*/, namespace: 'lazy-string-width' }, (args) => ({
      contents: `let f;\nexport default function stringWidth(...a) { return (f ??= require(${JSON.stringify(`./${basename(args.path)}`)}).default)(...a); }\n`,
      resolveDir: join(root, dirname(args.path)),
      loader: 'js',
    }));
  },
};

// A native addon inside a bundled package is required from node_modules by its package path.
const nativeFromNodeModules = {
  name: 'native-from-node-modules',
  setup(b) {
    b.onResolve({ filter: /\.node$/ }, (args) => {
      const p = relative(realpathSync(join(root, 'node_modules')), realpathSync(join(args.resolveDir, args.path)));
      if (p.startsWith('..')) return { errors: [{ text: `native addon outside node_modules: ${args.path}` }] };
      return { path: p, external: true };
    });
  },
};

const ID_PLACEHOLDER = '0'.repeat(16);
const common = {
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  sourcemap: true,
  // bin/runbook checks that a code cache was made from this very file: `// runbook-build ID`.
  banner: { js: `// runbook-build ${ID_PLACEHOLDER}` },
  write: false,
  logLevel: 'warning',
};
// bin/runbook runs main.js as a function of (exports, require, module, __filename, __dirname,
// __runbookImportMeta, __runbookImport), with require('ssh2') answered by dist/cli/ssh2.js.
const EXTERNAL = ['ssh2', 'cpu-features', 'zx', 'ora'];
const main = await build({
  ...common,
  entryPoints: [`${root}src/cli/main.ts`],
  outfile: join(out, 'main.js'),
  external: EXTERNAL,
  define: { 'import.meta': '__runbookImportMeta' },
  supported: { 'dynamic-import': true }, // keep import('zx'), see routeDynamicImports
  plugins: [lazyStringWidth],
});
const ssh2 = await build({
  ...common,
  // Only what src/transport/ssh.ts uses: ssh2's index also loads its server, agents and HTTP(S) agents
  // (node:http, https and tls: ~8 ms at every start of a command that connects).
  stdin: {
    contents:
      "module.exports = { Client: require('ssh2/lib/client.js'), utils: { parseKey: require('ssh2/lib/protocol/keyParser.js').parseKey } };",
    resolveDir: root,
    sourcefile: 'ssh2-entry.js',
    loader: 'js',
  },
  outfile: join(out, 'ssh2.js'),
  external: ['cpu-features'],
  plugins: [nativeFromNodeModules],
});

// import() of an external ES module (ora, zx) must not run inside the vm.Script: code that V8 takes
// from a code cache has lost the script's dynamic-import callback (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING).
// bin/runbook passes __runbookImport, an import() of its own (source map columns shift on those lines only).
function routeDynamicImports(text) {
  const routed = text.replace(/\bimport\((["'])([^"']+)\1\)/g, (_m, q, spec) => {
    if (!EXTERNAL.includes(spec)) throw new Error(`build: unexpected dynamic import of "${spec}" in the bundle`);
    return `__runbookImport(${q}${spec}${q})`;
  });
  // (`import()` with nothing inside is prose in a comment, as in zod's sources.)
  if (/\bimport\(\s*[^)\s]/.test(routed))
    throw new Error('build: a dynamic import() the build cannot route through __runbookImport is left in the bundle');
  return routed;
}

// esbuild leaves non-ASCII characters in comments and regular expression literals (a dash in a comment, `µs`
// in a pattern). One of them makes the whole 1.9 MB source a two-byte string: reading it as UTF-8 and checking
// it against its code cache then cost ~30 ms at every start instead of ~10. Each becomes a \uXXXX escape
// (the same character in a string, template or pattern; text in a comment), and bin/runbook reads the bundles
// as latin1.
const ascii = (text) => text.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

mkdirSync(join(out, 'code-cache'), { recursive: true });
for (const [result, patch] of [
  [main, routeDynamicImports],
  [ssh2, (t) => t],
]) {
  const js = result.outputFiles.find((f) => f.path.endsWith('.js'));
  // The build id (a hash of the bundle) ties each code cache to the bundle it was made from.
  const id = createHash('sha256').update(js.contents).digest('hex').slice(0, 16);
  for (const f of result.outputFiles) {
    writeFileSync(
      f.path,
      f === js ? ascii(patch(js.text)).replace(`// runbook-build ${ID_PLACEHOLDER}`, `// runbook-build ${id}`) : f.contents,
    );
  }
}
writeFileSync(join(out, 'package.json'), '{ "type": "commonjs" }\n');

// Training runs: same node binary, no NODE_OPTIONS (V8 rejects a cache made under other flags).
const env = { ...process.env };
delete env.NODE_OPTIONS;
const tmp = mkdtempSync(join(tmpdir(), 'runbook-build-'));
try {
  writeFileSync(
    join(tmp, 'train.yml'),
    [
      'name: train',
      'vars: { greeting: hi }',
      'preflight:',
      '  - name: shell works',
      '    run: "true"',
      'steps:',
      '  - name: greet',
      '    unless: test "{{ greeting }}" = bye',
      '    run: echo "{{ greeting }} {{ inventory_hostname }}"',
      '    verify: "true"',
      '    rollback: "true"',
      '',
    ].join('\n'),
  );
  writeFileSync(join(tmp, 'inv.yml'), 'all:\n  vars:\n    ansible_connection: local\n  hosts:\n    train1:\n    train2:\n');
  const train = (argv, cwd) => {
    const r = spawnSync(process.execPath, [bin, ...argv], {
      cwd,
      encoding: 'utf8',
      env: { ...env, TMPDIR: tmp, NO_COLOR: '1', RUNBOOK_CODE_CACHE_TRAIN: join(out, 'code-cache') },
    });
    if (r.status !== 0) throw new Error(`code cache training run \`runbook ${argv.join(' ')}\` failed with ${r.status}:\n${r.stderr}`);
  };
  train(['validate', 'runbooks/hello.yml'], root);
  train(['apply', join(tmp, 'train.yml'), '-i', join(tmp, 'inv.yml'), '--state-dir', join(tmp, 'state'), '--json'], tmp);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

const help = execFileSync(process.execPath, [bin, '--help'], { env: { ...process.env, RUNBOOK_HELP_CACHE: '0' } });
writeFileSync(`${root}dist/help.txt`, help);

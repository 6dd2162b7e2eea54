#!/usr/bin/env node
// Summarizes a V8 .cpuprofile (node --cpu-prof) by where the time went: module loading, socket writes
// (syscalls into the loopback TCP stack), crypto, GC, idle, else the package or dist/ file on the stack.
//   node --cpu-prof --cpu-prof-dir=/tmp/prof bin/runbook apply ...; node bench/prof-summary.mjs /tmp/prof/CPU.*.cpuprofile [TOP]
import { readFileSync } from 'node:fs';

const [file, topArg] = process.argv.slice(2);
const p = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const cnt = new Map();
for (let i = 0; i < p.samples.length; i++) cnt.set(p.samples[i], (cnt.get(p.samples[i]) ?? 0) + p.timeDeltas[i]);
const cats = [
  ['idle', (f) => f.functionName === '(idle)'],
  ['gc', (f) => f.functionName === '(garbage collector)'],
  ['module loading', (f) => /modules\/esm\/(loader|module_job|translators|utils)|modules\/cjs\/loader/.test(f.url)],
  ['socket write syscalls', (f) => f.functionName === 'writeBuffer'],
  ['crypto sign/verify', (f) => /crypto\/(sig|keys)/.test(f.url)],
];
const short = (u) => u.replace(/^file:\/\/.*?\/dist\//, 'dist/').replace(/.*node_modules\/((@[^/]+\/)?[^/]+)\/.*/, 'pkg:$1');
const out = new Map();
let total = 0;
for (const [id, us] of cnt) {
  total += us;
  const chain = [];
  for (let c = id; c; c = parent.get(c)) chain.push(byId.get(c).callFrame);
  let cat = cats.find(([, pred]) => chain.some(pred))?.[0];
  if (!cat) {
    const ours = chain.find((f) => /\/dist\//.test(f.url) || /node_modules/.test(f.url));
    cat = ours ? short(ours.url) : chain[0].url ? short(chain[0].url) : chain[0].functionName;
  }
  out.set(cat, (out.get(cat) ?? 0) + us);
}
console.log(`total ${(total / 1000).toFixed(0)} ms sampled`);
for (const [k, v] of [...out].sort((a, b) => b[1] - a[1]).slice(0, Number(topArg ?? 25))) {
  console.log(`${(v / 1000).toFixed(1).padStart(9)} ms  ${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`);
}

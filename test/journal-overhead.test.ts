// tier: local
/**
 * Journal overhead: the same 20 hosts x N steps (local hosts), with and without fsync,
 * through bin/runbook. Prints the numbers; asserts (never a time) that both modes journal
 * the same records and that group commit keeps fsyncs well below one per intent.
 * The workload is small by default: these are checks, not a measurement (bench/ measures). For
 * numbers worth noting: RUNBOOK_BENCH_STEPS=10 RUNBOOK_BENCH_REPS=5 node test/run.mjs journal-overhead
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from 'js-yaml';
import { runbook, tmp, journalRecords, ROOT } from './crash-common.js';
import { openJournal, newRunId } from '../src/journal/writer.js';
import { existsSync } from 'node:fs';

const HOSTS = 20,
  STEPS = 10,
  CLI_STEPS = Number(process.env.RUNBOOK_BENCH_STEPS ?? 3),
  REPS = Number(process.env.RUNBOOK_BENCH_REPS ?? 1);

test(`journal overhead: ${HOSTS} hosts x ${CLI_STEPS} steps, fsync vs no fsync`, async () => {
  assert.ok(existsSync(join(ROOT, 'dist', 'cli', 'main.js')), 'dist/ is missing: build first');
  const work = tmp('rb-overhead-');
  const steps = Array.from({ length: CLI_STEPS }, (_, i) => ({
    name: `s${i}`,
    run: `touch {{ dir }}/s${i}`,
    rollback: `rm -f {{ dir }}/s${i}`,
  }));
  writeFileSync(join(work, 'overhead.yml'), dump({ name: 'overhead', steps }));
  const hosts: Record<string, unknown> = {};
  for (let i = 1; i <= HOSTS; i++) {
    const d = join(work, 'hosts', `n${i}`);
    mkdirSync(d, { recursive: true });
    hosts[`n${i}`] = { ansible_connection: 'local', dir: d, runbook_lock_path: join(work, 'locks', `n${i}`) };
  }
  writeFileSync(join(work, 'inv.yml'), dump({ all: { hosts } }));
  const times: Record<string, number[]> = { fsync: [], 'no-fsync': [] };
  const stats: Record<string, { records: number; syncs: number; fsyncs: number; bytes: number }> = {};
  const intents: Record<string, number> = {};
  for (let rep = 0; rep < REPS; rep++) {
    for (const mode of rep % 2 ? ['no-fsync', 'fsync'] : ['fsync', 'no-fsync']) {
      const stateDir = join(work, `state-${mode}-${rep}`); // on the real disk (the repo's filesystem)
      const t0 = process.hrtime.bigint();
      const r = await runbook([
        'apply',
        join(work, 'overhead.yml'),
        '-i',
        join(work, 'inv.yml'),
        '--forks',
        String(HOSTS),
        '--state-dir',
        stateDir,
        ...(mode === 'fsync' ? [] : ['--no-fsync']),
      ]);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      assert.equal(r.code, 0, r.stderr);
      times[mode].push(ms);
      const recs = journalRecords(stateDir);
      stats[mode] = recs.find((x) => x.type === 'journal-close')?.stats;
      intents[mode] = recs.filter((x) => x.type === 'step-start' || x.type === 'host-start').length;
    }
  }
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const line =
    `journal overhead (${HOSTS} hosts x ${CLI_STEPS} steps, local hosts, forks ${HOSTS}, ${REPS} runs each, median wall time of bin/runbook apply): ` +
    `fsync ${med(times.fsync).toFixed(0)} ms [${times.fsync.map((t) => t.toFixed(0)).join(', ')}], ` +
    `no-fsync ${med(times['no-fsync']).toFixed(0)} ms [${times['no-fsync'].map((t) => t.toFixed(0)).join(', ')}]; ` +
    `overhead ${(med(times.fsync) - med(times['no-fsync'])).toFixed(0)} ms (${((med(times.fsync) / med(times['no-fsync']) - 1) * 100).toFixed(1)}%); ` +
    `fsync run: ${stats.fsync.records} records, ${stats.fsync.syncs} sync() calls, ${stats.fsync.fsyncs} fsyncs (+1 at close), ${stats.fsync.bytes} bytes`;
  console.log(line);
  process.stdout.write(`# ${line}\n`);
  assert.equal(intents.fsync, HOSTS * (CLI_STEPS + 1), 'every host-start and step intent journaled');
  assert.equal(intents['no-fsync'], intents.fsync);
  assert.equal(stats['no-fsync'].fsyncs, 0);
  assert.ok(
    stats.fsync.fsyncs > 0 && stats.fsync.fsyncs < stats.fsync.syncs,
    `group commit: ${stats.fsync.fsyncs} fsyncs for ${stats.fsync.syncs} syncs`,
  );
});

test(`journal writer alone: ${HOSTS} concurrent hosts x ${STEPS} steps of intent+sync+outcome, fsync vs no fsync`, async () => {
  const work = tmp('rb-overhead-w-');
  const res: Record<string, { ms: number; fsyncs: number; syncs: number }> = {};
  for (const fsync of [true, false, true, false]) {
    const j = await openJournal(work, newRunId(), { fsync });
    const t0 = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: HOSTS }, async (_, h) => {
        for (let s = 0; s < STEPS; s++) {
          j.write({ type: 'step-start', host: `n${h}`, index: s, phase: 'step', step: `s${s}`, time: new Date().toISOString() });
          await j.sync();
          await new Promise((r) => setTimeout(r, 1)); // the remote action
          j.write({
            type: 'step-end',
            host: `n${h}`,
            index: s,
            phase: 'step',
            step: `s${s}`,
            status: 'changed',
            time: new Date().toISOString(),
          });
        }
      }),
    );
    await j.sync();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    res[fsync ? 'fsync' : 'no-fsync'] = { ms, fsyncs: j.stats.fsyncs, syncs: j.stats.syncs };
    await j.close();
  }
  const line = `journal writer alone (${HOSTS} hosts x ${STEPS} steps, 1 ms actions, on ${work}): fsync ${res.fsync.ms.toFixed(0)} ms with ${res.fsync.fsyncs} fsyncs for ${res.fsync.syncs} syncs; no-fsync ${res['no-fsync'].ms.toFixed(0)} ms`;
  console.log(line);
  assert.equal(res['no-fsync'].fsyncs, 0);
  assert.ok(res.fsync.fsyncs < res.fsync.syncs, 'group commit');
});

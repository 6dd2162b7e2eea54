// tier: unit
/**
 * No secret reaches the journal on disk (bin/runbook, local hosts): secret vars given with -e,
 * echoed by a step, registered, shown in a failing command. And resume of such a run must not
 * run with the redacted placeholder in place of the secret.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync, readdirSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from 'js-yaml';
import { runbook, startRunbook, journalRecords, onlyRunId, tmp, childGroups } from './crash-common.js';
import { waitFor } from './harness/wait.js';

const SECRET = 'S3cr3t-t0ken-value';

test('journal: secrets never reach the file; resume refuses to run with redacted secret -e values', async () => {
  const work = tmp('rb-redact-');
  const dir = join(work, 'h1');
  mkdirSync(dir);
  writeFileSync(
    join(work, 'secretive.yml'),
    dump({
      name: 'secretive',
      secrets: ['token'],
      vars: { token: 'unset' },
      steps: [
        {
          name: 'use',
          run: `echo "token is {{ token }}"; echo {{ token }} > ${dir}/token`,
          register: 'out',
          rollback: `rm -f ${dir}/token`,
        },
        { name: 'wait', run: 'sleep 30', rollback: 'true' },
        { name: 'fail', run: 'echo "{{ out.stdout }}" >&2; exit 3', rollback: 'true' },
      ],
    }),
  );
  writeFileSync(
    join(work, 'inv.yml'),
    dump({ all: { hosts: { h1: { ansible_connection: 'local', runbook_lock_path: join(work, 'lock') } } } }),
  );
  const state = join(work, 'state');
  const { child, done } = startRunbook([
    'apply',
    join(work, 'secretive.yml'),
    '-i',
    join(work, 'inv.yml'),
    '-e',
    `token=${SECRET}`,
    '--state-dir',
    state,
  ]);
  // Killed while the second step runs: its intent is durable, so the first step's outcome (with the secret's echo) is too.
  await waitFor(() => journalRecords(state).some((r) => r.type === 'step-start' && r.index === 1), {
    what: 'the intent of step "wait" in the journal',
  });
  const groups = childGroups(child.pid!); // the host's shell, running `sleep 30`: not left behind
  child.kill('SIGKILL');
  for (const g of groups) {
    try {
      process.kill(-g, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  const killed = await done;
  assert.equal(killed.signal, 'SIGKILL', `the controller was still running when killed (stderr: ${killed.stderr})`);
  assert.equal(readFileSync(join(dir, 'token'), 'utf8').trim(), SECRET, 'the step did use the secret');
  const id = onlyRunId(state);
  const file = join(state, 'runs', `${id}.ndjson`);
  const text = readFileSync(file, 'utf8');
  assert.ok(!text.includes(SECRET), 'the secret is not in the journal');
  assert.match(text, /token is \*\*\*/, 'its output was journaled, redacted');

  // Resume: the journal only has token=***; running with it would be wrong.
  const r = await runbook(['resume', id, '--state-dir', state]);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /secret/);
  assert.equal(readFileSync(join(dir, 'token'), 'utf8').trim(), SECRET, 'nothing ran');
  for (const f of readdirSync(join(state, 'runs'))) assert.ok(!readFileSync(join(state, 'runs', f), 'utf8').includes(SECRET));
});

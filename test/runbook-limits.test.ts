// tier: unit
// Bounds on what a runbook file may expand to: YAML aliases ("billion laughs") are refused at
// load time, in `validate` too, with a clear error and exit 1.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ValidationError } from '../src/core/errors.js';
import { MAX_VALUES, parseRunbook } from '../src/runbook/load.js';

const root = new URL('..', import.meta.url).pathname;

/** A runbook whose vars nest `levels` lists of nine aliases of the level below: 9^levels values. */
function laughs(levels: number): string {
  const lines = ['name: laughs', 'vars:', '  l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
  for (let i = 1; i <= levels; i++)
    lines.push(
      `  l${i}: &l${i} [${Array(9)
        .fill(`*l${i - 1}`)
        .join(',')}]`,
    );
  lines.push('steps:', '  - name: x', '    run: "true"', '');
  return lines.join('\n');
}

test('YAML aliases that expand past the limit are a validation error naming the limit', () => {
  assert.throws(
    () => parseRunbook(laughs(9), '/rb/laughs.yml'),
    (e: unknown) =>
      e instanceof ValidationError && new RegExp(`expands to more than ${MAX_VALUES} values through YAML aliases`).test(e.message),
  );
  // Aliases within reason are fine: 9^4 = 6561 values.
  assert.equal(parseRunbook(laughs(3), '/rb/laughs.yml').name, 'laughs');
});

test('runbook validate refuses a billion-laughs file at once: exit 1, one line, no stack', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rb-laughs-'));
  const file = join(dir, 'laughs.yml');
  writeFileSync(file, laughs(9)); // 9^10 values if expanded
  const r = spawnSync(process.execPath, [join(root, 'bin/runbook'), 'validate', file], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /laughs\.yml:1:1: the file expands to more than 100000 values through YAML aliases/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
});

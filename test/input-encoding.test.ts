// tier: unit
// Input files must be UTF-8: a runbook, inventory, variables file, -e @file or --limit @file in another
// encoding is refused with the file, line and byte offset (was: silently altered to U+FFFD and run).
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ValidationError } from '../src/core/errors.js';
import { decodeUtf8, invalidUtf8At } from '../src/core/text.js';
import { loadInventory, parseExtraVars } from '../src/inventory/index.js';
import { loadRunbook } from '../src/runbook/load.js';

test('invalidUtf8At: the offset of the first invalid sequence, or -1', () => {
  const cases: Array<[number[] | string, number]> = [
    ['plain ascii', -1],
    ['é ü 日本 🚀', -1],
    [[0x61, 0xe9, 0x62], 1], // Latin-1 é
    [[0x61, 0xc3], 1], // truncated two-byte sequence
    [[0xe6, 0x97], 0], // truncated three-byte sequence
    [[0xc0, 0xaf], 0], // overlong '/'
    [[0xe0, 0x80, 0xaf], 0], // overlong, three bytes
    [[0xed, 0xa0, 0x80], 0], // UTF-16 surrogate
    [[0xf4, 0x90, 0x80, 0x80], 0], // > U+10FFFF
    [[0x41, 0x80], 1], // stray continuation byte
    [[0xff], 0],
    [[0xef, 0xbf, 0xbd], -1], // a real U+FFFD is fine
  ];
  for (const [input, want] of cases) {
    const buf = typeof input === 'string' ? Buffer.from(input) : Buffer.from(input);
    assert.equal(invalidUtf8At(buf), want, JSON.stringify(input));
  }
});

test('decodeUtf8: E_ENCODING with the file, the line and the byte', () => {
  assert.throws(
    () => decodeUtf8(Buffer.from([0x61, 0x0a, 0x62, 0x0a, 0x63, 0xe9]), 'f.yml', 'runbook'),
    (e: unknown) =>
      e instanceof ValidationError &&
      e.code === 'E_ENCODING' &&
      e.issues[0].line === 3 &&
      /f\.yml:3: the runbook is not UTF-8 \(byte 0xe9 at offset 5\)/.test(e.message),
  );
});

test('every input file is refused when it is not UTF-8', () => {
  const d = mkdtempSync(join(tmpdir(), 'rb-enc-'));
  const latin1 = (name: string, text: string): string => {
    const f = join(d, name);
    writeFileSync(f, Buffer.from(text, 'latin1'));
    return f;
  };
  const refused = (what: string, f: () => unknown, line: number) =>
    assert.throws(f, (e: unknown) => e instanceof ValidationError && e.code === 'E_ENCODING' && e.issues[0].line === line, what);
  refused('runbook', () => loadRunbook(latin1('rb.yml', 'name: rb\nsteps:\n  - name: caf\u00e9\n    run: "true"\n'), d), 3);
  refused('inventory', () => loadInventory([latin1('inv.ini', '[web]\nh\u00e9te\n')], { cwd: d }), 2);
  refused('yaml inventory', () => loadInventory([latin1('inv.yml', 'all:\n  hosts:\n    h\u00e9:\n')], { cwd: d }), 3);
  refused('extra vars file', () => parseExtraVars([`@${latin1('ev.yml', 'x: caf\u00e9\n')}`], d), 1);
});

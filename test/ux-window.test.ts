// tier: unit
/** --window HH:MM-HH:MM: parsing, local-time math (also across midnight) and the engine gate. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseWindow, inWindow, windowGate } from '../src/cli/window.js';

const at = (hh: number, mm: number) => new Date(2026, 10, 26, hh, mm, 30); // local time

test('a same-day window: start inclusive, end exclusive', () => {
  const w = '09:00-17:30';
  assert.equal(inWindow(w, at(8, 59)), false);
  assert.equal(inWindow(w, at(9, 0)), true);
  assert.equal(inWindow(w, at(12, 0)), true);
  assert.equal(inWindow(w, at(17, 29)), true);
  assert.equal(inWindow(w, at(17, 30)), false);
  assert.equal(inWindow(w, at(23, 0)), false);
});

test('a window crossing midnight', () => {
  const w = parseWindow('22:00-06:00');
  assert.deepEqual([w.start, w.end], [22 * 60, 6 * 60]);
  assert.equal(inWindow(w, at(21, 59)), false);
  assert.equal(inWindow(w, at(22, 0)), true);
  assert.equal(inWindow(w, at(23, 59)), true);
  assert.equal(inWindow(w, at(0, 0)), true);
  assert.equal(inWindow(w, at(5, 59)), true);
  assert.equal(inWindow(w, at(6, 0)), false);
  assert.equal(inWindow(w, at(12, 0)), false);
});

test('00:00-24:00 is the whole day; single-digit hours are accepted', () => {
  for (let h = 0; h < 24; h++) assert.equal(inWindow('00:00-24:00', at(h, 17)), true);
  assert.equal(inWindow('2:00-4:00', at(3, 0)), true);
  assert.equal(inWindow(' 02:00 - 04:00 ', at(4, 0)), false);
});

test('bad specs are usage errors that say how to write one', () => {
  for (const bad of [
    '',
    '22:00',
    '22-06',
    '25:00-06:00',
    '22:60-06:00',
    '22:00-06:00-07:00',
    'aa:bb-cc:dd',
    '24:00-06:00',
    '10:00-10:00',
    '22:00-24:30',
  ]) {
    assert.throws(
      () => parseWindow(bad),
      (e: { code?: string; message: string }) => {
        assert.equal(e.code, 'E_USAGE', bad);
        assert.match(e.message, /--window/);
        assert.match(e.message, /HH:MM-HH:MM|00:00-24:00/);
        return true;
      },
    );
  }
});

test('the gate gives no reason inside the window and a reason outside it', () => {
  let now = at(23, 10);
  const gate = windowGate('22:00-06:00', () => now);
  assert.equal(gate(), undefined);
  now = at(6, 5);
  assert.equal(gate(), 'outside the maintenance window 22:00-06:00 (local time now 06:05)');
  assert.throws(() => windowGate('nope'), /--window nope/);
});

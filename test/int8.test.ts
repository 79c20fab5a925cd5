/** quantizeRowsI8: the int8 rows the WebGPU backend stores predictor B as (block-select.ts, I8). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { quantizeRowsI8 } from '../src/util/int8.js';
import { randomArray, rng } from './helpers.js';

test('quantizeRowsI8: a scale a row (its largest magnitude, stored as ±127), values within half a step, zero rows zero', () => {
  const r = rng(5);
  for (const [rows, cols] of [[7, 13], [3, 1], [5, 64]] as const) {
    const w = randomArray(rows * cols, r, 2);
    w.fill(0, 0, cols);                          // row 0: all zero
    const at = cols + Math.min(2, cols - 1);
    w[at] = -5;                                  // row 1: its largest magnitude negative
    const { q, scale, values } = quantizeRowsI8(w, rows, cols);
    assert.equal(scale[0], 0);
    assert.ok(q.subarray(0, cols).every((v) => v === 0) && values.subarray(0, cols).every((v) => v === 0));
    assert.equal(scale[1], 5);
    assert.equal(q[at], -127);
    for (let i = 0; i < rows; i++) {
      const m = Math.max(...w.subarray(i * cols, (i + 1) * cols).map(Math.abs));
      assert.equal(scale[i], Math.fround(m));
      for (let c = 0; c < cols; c++) {
        const j = i * cols + c;
        assert.ok(Math.abs(q[j]) <= 127);
        assert.ok(Math.abs(values[j] - w[j]) <= m / 254 + 1e-6 * m, `row ${i} col ${c}: ${values[j]} for ${w[j]}`);
        assert.equal(values[j], Math.fround(Math.fround(q[j] / 127) * scale[i]));
      }
    }
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { columns, sideBySide } from '../src/util/rows.js';

test('sideBySide joins rows of two widths; columns takes them apart again', () => {
  const a = Float32Array.from([1, 2, 3, 4, 5, 6]), b = Float32Array.from([7, 8, 9, 10]);   // (2, 3) and (2, 2)
  const ab = sideBySide(a, b, 2, 3, 2);
  assert.deepEqual([...ab], [1, 2, 3, 7, 8, 4, 5, 6, 9, 10]);
  assert.deepEqual(columns(ab, 2, 5, 0, 3), a);
  assert.deepEqual(columns(ab, 2, 5, 3, 2), b);
});

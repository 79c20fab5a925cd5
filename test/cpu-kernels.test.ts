/**
 * The CPU backend's linear (the reference every WGSL GEMV is tested against): its tiles on random odd
 * shapes against a plain float64 product, and each row's result independent of how many rows came
 * with it (prefill and decode compute the same bits).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { linear } from '../src/backend/cpu/kernels.js';
import { randomArray, relErr, rng } from './helpers.js';

function naive(x: Float32Array, T: number, W: Float32Array, b: Float32Array | null, nIn: number, nOut: number): Float32Array {
  const y = new Float32Array(T * nOut);
  for (let t = 0; t < T; t++) for (let o = 0; o < nOut; o++) {
    let s = b ? b[o] : 0;
    for (let i = 0; i < nIn; i++) s += x[t * nIn + i] * W[o * nIn + i];
    y[t * nOut + o] = s;
  }
  return y;
}

test('cpu linear: tiles of rows and outputs on odd shapes equal the plain product, and a row does not depend on T', () => {
  const r = rng(41);
  for (const T of [1, 2, 3, 4, 5, 7, 9]) for (const [nIn, nOut] of [[1, 1], [13, 3], [37, 11], [8, 5], [64, 7]] as const) {
    const x = randomArray(T * nIn, r), W = randomArray(nOut * nIn, r), b = T % 2 ? randomArray(nOut, r) : null;
    const got = linear(x, T, W, b, nIn, nOut);
    const want = naive(x, T, W, b, nIn, nOut);
    assert.ok(relErr(got, want) < 1e-5, `T=${T} ${nOut}x${nIn}: ${relErr(got, want)}`);
    for (let t = 0; t < T; t++) {
      const one = linear(x.subarray(t * nIn, (t + 1) * nIn), 1, W, b, nIn, nOut);
      assert.deepEqual(got.subarray(t * nOut, (t + 1) * nOut), one, `T=${T} ${nOut}x${nIn} row ${t}: the same bits alone`);
    }
    // Into a given output buffer, every element overwritten.
    const y = new Float32Array(T * nOut).fill(NaN);
    assert.deepEqual(linear(x, T, W, b, nIn, nOut, y), got);
  }
});

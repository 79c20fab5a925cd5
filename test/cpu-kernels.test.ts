/**
 * The CPU backend's linear (the reference every WGSL GEMV is tested against): its tiles on random odd
 * shapes against a plain float64 product, and each row's result independent of how many rows came
 * with it (prefill and decode compute the same bits). Its attention: the 4-key passes give the plain
 * loop's bits, and any split of the (head, query) cells (attentionRange) gives attention's.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attention, attentionRange, linear } from '../src/backend/cpu/kernels.js';
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

/** attention as it was written before its 4-key passes: a key at a time, o accumulated in place. */
function plainAttention(q: Float32Array, T: number, pos: number, kCache: Float32Array, vCache: Float32Array, H: number, hd: number, headNorm?: Float32Array): Float32Array {
  const d = H * hd, scale = 1 / Math.sqrt(hd), o = new Float32Array(T * d), scores = new Float32Array(pos + T);
  for (let t = 0; t < T; t++) {
    const n = pos + t + 1;
    for (let h = 0; h < H; h++) {
      const qo = t * d + h * hd;
      let max = -Infinity;
      for (let j = 0; j < n; j++) {
        const ko = j * d + h * hd;
        let s = 0;
        for (let i = 0; i < hd; i++) s += q[qo + i] * kCache[ko + i];
        s *= scale;
        scores[j] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let j = 0; j < n; j++) { const e = Math.exp(scores[j] - max); scores[j] = e; sum += e; }
      for (let j = 0; j < n; j++) {
        const p = scores[j] / sum, vo = j * d + h * hd;
        for (let i = 0; i < hd; i++) o[qo + i] += p * vCache[vo + i];
      }
      if (headNorm) {
        let s = 0;
        for (let i = 0; i < hd; i++) s += o[qo + i] * o[qo + i];
        headNorm[t * H + h] = Math.sqrt(s);
      }
    }
  }
  return o;
}

const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

test('cpu attention: the 4-key passes give the plain loop\'s bits (odd shapes, every remainder of 4 keys, pos > 0, head norms), and attentionRange over any split of the cells gives attention\'s', () => {
  const r = rng(43);
  for (const [T, pos, H, hd] of [[1, 0, 1, 1], [1, 6, 3, 5], [2, 1, 2, 3], [5, 0, 4, 7], [9, 13, 3, 17], [16, 40, 2, 32], [3, 101, 5, 9]] as const) {
    const d = H * hd, maxPos = pos + T;
    // Scaled so softmax is peaked in some rows; a few exact zeros in q (±0 products).
    const q = randomArray(T * d, r, 4).map((v, i) => (i % 11 === 0 ? 0 : v)), K = randomArray(maxPos * d, r), V = randomArray(maxPos * d, r);
    const wantN = new Float32Array(T * H), gotN = new Float32Array(T * H);
    const want = plainAttention(q, T, pos, K, V, H, hd, wantN), got = attention(q, T, pos, K, V, H, hd, undefined, gotN);
    assert.deepEqual(bits(got), bits(want), `T ${T} pos ${pos} H ${H} hd ${hd}`);
    assert.deepEqual(bits(gotN), bits(wantN), `T ${T} pos ${pos} H ${H} hd ${hd}: head norms`);
    // Cells in a scattered order of (head, query block), each block its own size.
    const o = new Float32Array(T * d).fill(NaN), n = new Float32Array(T * H).fill(NaN), scores = new Float32Array(maxPos + 5).fill(NaN);
    const cuts = [0, ...Array.from({ length: T - 1 }, (_, t) => t + 1).filter(() => r() < 0.4), T];
    for (let h = H - 1; h >= 0; h--) for (let b = cuts.length - 2; b >= 0; b--) attentionRange(q, T, pos, K, V, H, hd, o, n, h, h + 1, cuts[b], cuts[b + 1], scores);
    assert.deepEqual(bits(o), bits(want), `T ${T} pos ${pos} H ${H} hd ${hd}: cells apart`);
    assert.deepEqual(bits(n), bits(wantN), `T ${T} pos ${pos} H ${H} hd ${hd}: cells apart, head norms`);
    // Without norms, into a given o.
    const o2 = new Float32Array(T * d).fill(NaN);
    assert.equal(attention(q, T, pos, K, V, H, hd, o2), o2);
    assert.deepEqual(bits(o2), bits(want));
  }
});

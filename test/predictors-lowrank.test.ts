import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crossMoment, lowRankFc1, secondMoment } from '../src/sparsity/lowrank-init.js';
import { rankStats } from '../src/sparsity/calibrate.js';
import { CpuTrainEngine, trainPredictor } from '../src/sparsity/train.js';
import type { LowRankPredictor } from '../src/sparsity/policy.js';
import { randomArray, rng } from './helpers.js';

/** x with correlated, unequal-variance coordinates: x = Q g, g ~ noise, so whitening matters. */
function correlated(rows: number, d: number, seed: number): Float32Array {
  const r = rng(seed), Q = randomArray(d * d, rng(seed + 1)), x = new Float32Array(rows * d), g = new Float32Array(d);
  for (let t = 0; t < rows; t++) {
    for (let i = 0; i < d; i++) g[i] = (r() - 0.5) * (i < 3 ? 4 : 0.5);
    for (let i = 0; i < d; i++) { let s = 0; for (let k = 0; k < d; k++) s += Q[i * d + k] * g[k]; x[t * d + i] = s; }
  }
  return x;
}

const scores = (p: LowRankPredictor, x: Float32Array, rows: number, d: number, f: number): Float64Array => {
  const out = new Float64Array(rows * f), u = new Float64Array(p.rank);
  for (let t = 0; t < rows; t++) {
    for (let k = 0; k < p.rank; k++) { let s = 0; for (let i = 0; i < d; i++) s += p.A[k * d + i] * x[t * d + i]; u[k] = s; }
    for (let j = 0; j < f; j++) { let s = p.bias[j]; for (let k = 0; k < p.rank; k++) s += p.B[j * p.rank + k] * u[k]; out[t * f + j] = s; }
  }
  return out;
};
const preact = (W: Float32Array, b: Float32Array, x: Float32Array, rows: number, d: number, f: number): Float64Array => {
  const out = new Float64Array(rows * f);
  for (let t = 0; t < rows; t++) for (let j = 0; j < f; j++) { let s = b[j]; for (let i = 0; i < d; i++) s += W[j * d + i] * x[t * d + i]; out[t * f + j] = s; }
  return out;
};
const sqErr = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + (v - b[i]) ** 2, 0) / a.length;

test('secondMoment is (1/n) Xᵀ X', () => {
  const d = 5, rows = 7, x = randomArray(rows * d, rng(3)), C = secondMoment(x, rows, d);
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) {
    let s = 0;
    for (let t = 0; t < rows; t++) s += x[t * d + i] * x[t * d + j];
    assert.ok(Math.abs(C[i * d + j] - s / rows) < 1e-9);
  }
});

test('crossMoment is (1/n) Tᵀ X over the strided subsample, on odd shapes (rows not a multiple of four, zeros in t)', () => {
  for (const [rows, d, dx, maxRows] of [[7, 5, 9, 32768], [13, 3, 6, 5], [1, 4, 2, 32768], [22, 6, 11, 10]]) {
    const t = randomArray(rows * d, rng(rows + d)), x = randomArray(rows * dx, rng(dx));
    for (let i = 0; i < t.length; i += 3) t[i] = 0;
    const E = crossMoment(t, x, rows, d, maxRows, dx), n = Math.min(rows, maxRows), stride = rows / n;
    for (let i = 0; i < d; i++) for (let j = 0; j < dx; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) { const r = Math.floor(k * stride); s += t[r * d + i] * x[r * dx + j]; }
      assert.ok(Math.abs(E[i * dx + j] - s / n) < 1e-9, `rows ${rows} d ${d} dx ${dx} max ${maxRows}: E[${i},${j}] ${E[i * dx + j]} vs ${s / n}`);
    }
  }
});

test('lowRankFc1 at rank >= d reproduces fc1 (W1 x + b1) on odd shapes', () => {
  for (const [d, f, rank] of [[7, 23, 7], [9, 31, 12]]) {
    const W = randomArray(f * d, rng(d)), b = randomArray(f, rng(f)), x = correlated(200, d, d + f);
    const p = lowRankFc1(W, b, x, 200, d, f, rank);
    assert.equal(p.rank, rank);
    assert.equal(p.A.length, rank * d);
    const want = preact(W, b, x, 200, d, f), got = scores(p, x, 200, d, f);
    assert.ok(sqErr(got, want) < 1e-6 * sqErr(want, new Float64Array(want.length)), `error ${sqErr(got, want)}`);
  }
});

test('lowRankFc1 is the best rank-r fit on the data: beats truncating W1 without whitening, and random factors', () => {
  const d = 11, f = 37, r = 3, rows = 400;
  const W = randomArray(f * d, rng(1)), b = randomArray(f, rng(2)), x = correlated(rows, d, 5);
  const want = preact(W, b, x, rows, d, f);
  const whitened = sqErr(scores(lowRankFc1(W, b, x, rows, d, f, r), x, rows, d, f), want);
  // Plain truncated SVD of W1 = the whitened one computed with identity data (C ∝ I).
  const eye = new Float32Array(d * d);
  for (let i = 0; i < d; i++) eye[i * d + i] = 1;
  const plain = sqErr(scores(lowRankFc1(W, b, eye, d, d, f, r), x, rows, d, f), want);
  assert.ok(whitened < plain * 0.95, `whitened ${whitened.toFixed(4)} vs plain ${plain.toFixed(4)}`);
  // And any other rank-r map does no better (a few random perturbations of the optimum).
  const p = lowRankFc1(W, b, x, rows, d, f, r);
  for (let s = 0; s < 3; s++) {
    const noise = randomArray(p.A.length, rng(10 + s));
    const q = { ...p, A: p.A.map((v, i) => v + 0.05 * noise[i]) };
    assert.ok(sqErr(scores(q, x, rows, d, f), want) >= whitened - 1e-9);
  }
});

test('trainPredictor with a low-rank init and 0 epochs returns the init and its validation recall', async () => {
  const d = 8, f = 40, r = 8, W = randomArray(f * d, rng(4)), b = randomArray(f, rng(6));
  const mk = (rows: number, seed: number) => {
    const x = correlated(rows, d, seed), z = preact(W, b, x, rows, d, f), words = Math.ceil(f / 32), labels = new Uint32Array(rows * words);
    for (let t = 0; t < rows; t++) for (let j = 0; j < f; j++) if (z[t * f + j] > 0) labels[t * words + (j >>> 5)] |= 1 << (j & 31);
    return { rows, x, labels };
  };
  const train = mk(256, 7), val = mk(64, 8);
  const init = lowRankFc1(W, b, train.x, train.rows, d, f, r);
  const res = await trainPredictor(new CpuTrainEngine(), train, val, d, f, { rank: r, epochs: 0, monitorK: 20, init });
  assert.equal(res.epochs, 0);
  assert.deepEqual(res.predictor.A, init.A);
  // Full rank: the init is fc1 itself, so its top-20 recall is the oracle's (ranking by the true z).
  const oracle = rankStats(Float32Array.from(preact(W, b, val.x, val.rows, d, f)), val.labels, val.rows, f).countRecall(20);
  assert.ok(Math.abs(res.recall - oracle) < 1e-9, `recall ${res.recall} vs oracle ${oracle}`);
  assert.ok(oracle > 0.5);
  await assert.rejects(trainPredictor(new CpuTrainEngine(), train, val, d, f, { rank: 4, epochs: 0, monitorK: 20, init }), /rank 8/);
});

test("lowRankFc1's subspace method (large d) fits as well as the exact eigendecomposition", () => {
  const d = 41, f = 97, rows = 500;
  const W = randomArray(f * d, rng(21)), b = randomArray(f, rng(22)), x = correlated(rows, d, 23);
  const want = preact(W, b, x, rows, d, f);
  for (const r of [5, 13, 30]) {
    const exact = sqErr(scores(lowRankFc1(W, b, x, rows, d, f, r, { method: 'exact' }), x, rows, d, f), want);
    const sub = sqErr(scores(lowRankFc1(W, b, x, rows, d, f, r, { method: 'subspace' }), x, rows, d, f), want);
    assert.ok(sub <= exact * 1.01 + 1e-12, `rank ${r}: subspace ${sub} vs exact ${exact}`);
  }
  // k = r + 16 >= d: the block spans everything, so the fit is the exact one.
  const full = lowRankFc1(W, b, x, rows, d, f, d, { method: 'subspace' });
  const wantAll = sqErr(want, new Float64Array(want.length));
  assert.ok(sqErr(scores(full, x, rows, d, f), want) < 1e-6 * wantAll);
});

test('lowRankFc1 with a target (attn_in predictors): fits W1 t from x; at full rank it is the least-squares map, and rank r beats rank r - 2', () => {
  const d = 9, f = 29, rows = 300;
  // t = T x + small noise: fc1's input as a linear function of the attention input, as a residual
  // block makes it approximately.
  const x = correlated(rows, d, 21), T = randomArray(d * d, rng(22), 0.4), noise = rng(23);
  const t = new Float32Array(rows * d);
  for (let s = 0; s < rows; s++) for (let i = 0; i < d; i++) {
    let v = 0;
    for (let k = 0; k < d; k++) v += T[i * d + k] * x[s * d + k];
    t[s * d + i] = v + 0.01 * (noise() - 0.5);
  }
  const W = randomArray(f * d, rng(24)), b = randomArray(f, rng(25));
  const want = preact(W, b, t, rows, d, f);
  // At rank d: the least-squares fit of W1 t from x, here W1 T up to the noise.
  const full = lowRankFc1(W, b, x, rows, d, f, d, { target: t });
  const WT = new Float32Array(f * d);
  for (let j = 0; j < f; j++) for (let k = 0; k < d; k++) { let v = 0; for (let i = 0; i < d; i++) v += W[j * d + i] * T[i * d + k]; WT[j * d + k] = v; }
  const lsq = preact(WT, b, x, rows, d, f);
  const scale = sqErr(want, new Float64Array(want.length));
  assert.ok(sqErr(scores(full, x, rows, d, f), lsq) < 1e-3 * scale, `full rank vs W1 T: ${sqErr(scores(full, x, rows, d, f), lsq)}`);
  assert.ok(sqErr(scores(full, x, rows, d, f), want) < 1e-3 * scale);
  // Lower ranks: the error grows as the rank falls, and beats the mlp_in formula applied to x.
  const errAt = (r: number) => sqErr(scores(lowRankFc1(W, b, x, rows, d, f, r, { target: t }), x, rows, d, f), want);
  assert.ok(errAt(3) < errAt(1), `${errAt(3)} vs ${errAt(1)}`);
  const naive = sqErr(scores(lowRankFc1(W, b, x, rows, d, f, 3), x, rows, d, f), want);
  assert.ok(errAt(3) < naive, `regression ${errAt(3)} vs fc1's own approximation on x ${naive}`);
  // The subspace method agrees with the exact one (a dense K, not a Cholesky factor).
  const sub = lowRankFc1(W, b, x, rows, d, f, 3, { target: t, method: 'subspace', iterations: 30 });
  assert.ok(Math.abs(sqErr(scores(sub, x, rows, d, f), want) - errAt(3)) < 0.02 * errAt(3) + 1e-9);
  assert.throws(() => lowRankFc1(W, b, x, rows, d, f, 3, { target: t.subarray(0, 10) }), /target rows/);
});

test('lowRankFc1 with a target reads an input wider than fc1 (two activations side by side): fits what the first alone cannot', () => {
  const d = 7, e = 5, n = d + e, f = 23, rows = 400;
  // t = T1 x1 + T2 x2: fc1's input depends on the attention input x1 and on what attention adds (x2).
  const x1 = correlated(rows, d, 31), x2 = correlated(rows, e, 32), T1 = randomArray(d * d, rng(33), 0.4), T2 = randomArray(d * e, rng(34), 0.4);
  const x = new Float32Array(rows * n), t = new Float32Array(rows * d);
  for (let s = 0; s < rows; s++) {
    x.set(x1.subarray(s * d, (s + 1) * d), s * n); x.set(x2.subarray(s * e, (s + 1) * e), s * n + d);
    for (let i = 0; i < d; i++) {
      let v = 0;
      for (let k = 0; k < d; k++) v += T1[i * d + k] * x1[s * d + k];
      for (let k = 0; k < e; k++) v += T2[i * e + k] * x2[s * e + k];
      t[s * d + i] = v;
    }
  }
  const W = randomArray(f * d, rng(35)), b = randomArray(f, rng(36));
  const want = preact(W, b, t, rows, d, f), scale = sqErr(want, new Float64Array(want.length));
  // At rank n the map from [x1; x2] is exact; from x1 alone the x2 part is out of reach.
  const wide = lowRankFc1(W, b, x, rows, d, f, n + 2, { target: t });
  assert.equal(wide.A.length, (n + 2) * n);   // rank n + 2 is padded with zero components, n columns each
  assert.ok(sqErr(scores(wide, x, rows, n, f), want) < 1e-4 * scale, `wide, full rank: ${sqErr(scores(wide, x, rows, n, f), want)} of ${scale}`);
  const narrow = sqErr(scores(lowRankFc1(W, b, x1, rows, d, f, d, { target: t }), x1, rows, d, f), want);
  assert.ok(narrow > 0.05 * scale, `x1 alone should miss x2's share: ${narrow} of ${scale}`);
  // A lower rank still uses both halves: better than x1 alone at the same rank.
  const r = 4, wideR = sqErr(scores(lowRankFc1(W, b, x, rows, d, f, r, { target: t }), x, rows, n, f), want);
  assert.ok(wideR < sqErr(scores(lowRankFc1(W, b, x1, rows, d, f, r, { target: t }), x1, rows, d, f), want));
  assert.throws(() => lowRankFc1(W, b, x, rows, d, f, 3, { target: t, method: 'subspace' }), /subspace method needs x as wide/);
  assert.throws(() => lowRankFc1(W, b, x.subarray(0, rows * n - 1), rows, d, f, 3, { target: t }), /not a whole number/);
});

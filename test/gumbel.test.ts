/**
 * The Gumbel-max draw (backend/gumbel.ts): its frequencies are softmax(logits / T), it depends only on
 * (seed, position, id), and the hash is the 32-bit PCG permutation the WGSL copy computes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkSampling, expVariate, gumbelPick, gumbelUniform, pcgHash } from '../src/backend/gumbel.js';

test('gumbelPick draws from softmax(logits / T): frequencies over 40,000 positions within 4.5 sigma', () => {
  const logits = Float32Array.from([1.2, -0.3, 0.5, 2.0, -2.5, 0.0, 1.9]);
  for (const T of [1, 0.5, 2]) {
    const z = Array.from(logits, (v) => Math.exp(v / T)), sum = z.reduce((a, b) => a + b, 0), p = z.map((v) => v / sum);
    const N = 40000, count = new Array(logits.length).fill(0);
    for (let pos = 0; pos < N; pos++) count[gumbelPick(logits, { invTemperature: 1 / T, seed: 99 }, pos)]++;
    p.forEach((pi, i) => {
      const sd = Math.sqrt(N * pi * (1 - pi));
      assert.ok(Math.abs(count[i] - N * pi) < 4.5 * sd + 1, `T=${T} id ${i}: ${count[i]} against ${(N * pi).toFixed(0)} ± ${sd.toFixed(0)}`);
    });
  }
});

test('gumbelPick with top-k draws from the softmax over the k largest logits only', () => {
  const logits = Float32Array.from([1.2, -0.3, 0.5, 2.0, -2.5, 0.0, 1.9, 1.2]);
  const k = 4, top = [3, 6, 0, 7];   // the four largest; 0 and 7 tie, both in
  const z = top.map((i) => Math.exp(logits[i])), sum = z.reduce((a, b) => a + b, 0);
  const N = 40000, count = new Map<number, number>();
  for (let pos = 0; pos < N; pos++) { const id = gumbelPick(logits, { invTemperature: 1, seed: 4, topK: k }, pos); count.set(id, (count.get(id) ?? 0) + 1); }
  assert.deepEqual([...count.keys()].sort((a, b) => a - b), [...top].sort((a, b) => a - b));
  top.forEach((id, j) => {
    const p = z[j] / sum, sd = Math.sqrt(N * p * (1 - p));
    assert.ok(Math.abs(count.get(id)! - N * p) < 4.5 * sd + 1, `id ${id}: ${count.get(id)} against ${(N * p).toFixed(0)}`);
  });
  // k = 3 cuts the tie by id: 0 is in, 7 is out (topIds: a stable sort's first k).
  for (let pos = 0; pos < 2000; pos++) assert.notEqual(gumbelPick(logits, { invTemperature: 1, seed: 4, topK: 3 }, pos), 7);
  assert.throws(() => checkSampling({ invTemperature: 1, seed: 1, topK: 0 }), /top-k an integer >= 1/);
});

test('gumbelPick: the same (seed, position) the same token; other seeds and positions other draws; NaN never, ties lowest', () => {
  const logits = Float32Array.from({ length: 500 }, (_, i) => Math.sin(i));
  const s = { invTemperature: 1, seed: 5 };
  assert.equal(gumbelPick(logits, s, 10), gumbelPick(logits, s, 10));
  const bySeed = new Set(Array.from({ length: 40 }, (_, seed) => gumbelPick(logits, { invTemperature: 1, seed }, 10)));
  const byPos = new Set(Array.from({ length: 40 }, (_, pos) => gumbelPick(logits, s, pos)));
  assert.ok(bySeed.size > 10 && byPos.size > 10, `${bySeed.size} / ${byPos.size} distinct draws`);
  // A very low temperature is the argmax; NaN is never drawn; equal keys (all -Infinity) give id 0.
  assert.equal(gumbelPick(logits, { invTemperature: 1e6, seed: 3 }, 0), logits.indexOf(Math.max(...logits)));
  const nan = Float32Array.from([NaN, 0, NaN]);
  for (let pos = 0; pos < 50; pos++) assert.equal(gumbelPick(nan, s, pos), 1);
  assert.equal(gumbelPick(new Float32Array(4).fill(-Infinity), s, 0), 0);
});

test('pcgHash is a 32-bit permutation step, gumbelUniform lies in (0, 1); bad draw parameters are one-line errors', () => {
  // Reference values of PCG's RXS-M-XS output function on a few inputs (computed with BigInt here).
  const ref = (v: number) => {
    const M = 2n ** 32n;
    const s = (BigInt(v) * 747796405n + 2891336453n) % M;
    const w = (((s >> ((s >> 28n) + 4n)) ^ s) * 277803737n) % M;
    return Number((w >> 22n) ^ w);
  };
  for (const v of [0, 1, 2, 12345, 2 ** 31, 2 ** 32 - 1, 0xdeadbeef]) assert.equal(pcgHash(v), ref(v), `pcg(${v})`);
  for (let i = 0; i < 1000; i++) { const u = gumbelUniform(i * 7, i, i * 13); assert.ok(u > 0 && u < 1); }
  // The extremes of the 23-bit uniform are exact in f32 (their centre never rounds to 0 or 1), and
  // −log u by its series near 1 agrees with the logarithm.
  for (const m of [0, 1, 2 ** 23 - 2, 2 ** 23 - 1]) {
    const u = (m + 0.5) / 2 ** 23;
    assert.equal(Math.fround(u), u);
    assert.ok(Math.fround(u) < 1 && Math.fround(u) > 0);
    assert.ok(Math.abs(expVariate(u) - -Math.log(u)) <= 1e-12 * -Math.log(u), `m=${m}`);
  }
  assert.ok(Math.abs(expVariate(1 - 1 / 2048) / -Math.log(1 - 1 / 2048) - 1) < 1e-10);   // the series cut after e³: e³/4 relative
  assert.throws(() => checkSampling({ invTemperature: 0, seed: 1 }), /1 \/ temperature in/);
  assert.throws(() => checkSampling({ invTemperature: Infinity, seed: 1 }), /1 \/ temperature in \(0, 1e30\]/);
  assert.throws(() => checkSampling({ invTemperature: 1e31, seed: 1 }), /1e30/);
  assert.throws(() => checkSampling({ invTemperature: 1, seed: 1.5 }), /integer seed/);
});

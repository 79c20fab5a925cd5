import assert from 'node:assert/strict';
import { test } from 'node:test';
import { calibrateLayer, denseRule, rankStats, roundK, smallestK } from '../src/sparsity/calibrate.js';
import { CAPS, calibrateBlock, f32Below } from '../src/sparsity/calibrate-block.js';
import { blockSelect } from '../src/backend/cpu/kernels.js';
import { rng } from './helpers.js';

// One row of f = 64 neurons scored so that neuron j ranks j-th; positives at ranks 0-7, 17 and 40.
const f = 64;
const scores = Float32Array.from({ length: f }, (_, j) => -j);
const positives = [0, 1, 2, 3, 4, 5, 6, 7, 17, 40];
const labels = new Uint32Array(2);
for (const j of positives) labels[j >>> 5] |= 1 << (j & 31);
const act = new Float32Array(f);
positives.forEach((j) => (act[j] = j === 40 ? 10 : 1)); // the rank-40 neuron carries half the mass

test('recall at every K from one ranking: count, mass and precision', () => {
  const s = rankStats(scores, labels, 1, f, act);
  assert.equal(s.countRecall(16), 0.8);
  assert.equal(s.countRecall(32), 0.9);
  assert.equal(s.countRecall(48), 1);
  assert.equal(s.massRecall(16), 8 / 19);
  assert.equal(s.massRecall(48), 1);
  assert.equal(s.precision(16), 0.5);
});

test('calibration picks the smallest multiple of 16 meeting the target', () => {
  const s = rankStats(scores, labels, 1, f, act);
  assert.equal(smallestK(s, 0.8), 16);
  assert.equal(smallestK(s, 0.85), 32);
  assert.equal(smallestK(s, 0.95), 48);
  assert.equal(smallestK(s, 1), 48);
  const c = calibrateLayer(3, s, 0.9, { targetRecall: 0.85, maxDensity: 0.6 });
  assert.deepEqual([c.k, c.recall, c.density, c.dense], [32, 0.9, 0.5, false]);
  assert.equal(roundK(1, 1536), 16);
  assert.equal(roundK(231, 1536), 240);
  assert.equal(roundK(5000, 1536), 1536);
});

test('dense rule: too active for the budget, or too many neurons needed', () => {
  assert.match(denseRule(0.73, 400, 1536, { targetRecall: 0.9, maxDensity: 0.15 }), /active > density budget/);
  assert.match(denseRule(0.95, 1000, 1536, { targetRecall: 0.9, maxDensity: 0.15 }), /K\/f = 0\.65/);
  assert.equal(denseRule(0.95, 240, 1536, { targetRecall: 0.9, maxDensity: 0.15 }), '');
});

test('block calibration: the threshold meets the target recall; a cap only where it costs little density; f32Below', () => {
  const r = rng(5), rows = 300, f = 200, words = Math.ceil(f / 32);
  // Scores = a noisy copy of the truth: positives score higher on average. Neurons 0-63 are active
  // 30% of the time, the rest 5%: block 0 holds most positives, so a tight cap would cost recall.
  const scores = new Float32Array(rows * f), labels = new Uint32Array(rows * words);
  for (let t = 0; t < rows; t++) for (let j = 0; j < f; j++) {
    const pos = r() < (j < 64 ? 0.3 : 0.05);
    if (pos) labels[t * words + (j >>> 5)] |= 1 << (j & 31);
    scores[t * f + j] = (pos ? 1.5 : 0) + (r() * 2 - 1);
  }
  const c = calibrateBlock(scores, labels, rows, f, 0.9)!;
  assert.ok(c.recall >= 0.9 && c.recall < 0.93, `recall ${c.recall}`);
  // Recount with the CPU twin of the rule: the same recall and density.
  let hit = 0, pos = 0, chosen = 0;
  for (let t = 0; t < rows; t++) {
    const row = scores.subarray(t * f, (t + 1) * f), sel = new Set(blockSelect(row, 64, c.cap, c.tau).chosen);
    chosen += sel.size;
    for (let j = 0; j < f; j++) if ((labels[t * words + (j >>> 5)] >>> (j & 31)) & 1) { pos++; if (sel.has(j)) hit++; }
  }
  assert.equal(hit / pos, c.recall);
  assert.equal(chosen / (rows * f), c.density);
  assert.ok((CAPS as readonly number[]).includes(c.cap));
  assert.ok(c.cap > 8, `block 0 needs room: cap ${c.cap}`);
  assert.equal(calibrateBlock(scores, labels, rows, f, 1.01), null, 'an unreachable target');
  for (const v of [1, -1, 0, Math.fround(3.5e-38), Math.fround(1e30)]) { const b = f32Below(v); assert.ok(b < v && Math.fround(b) === b, `${v}`); }
  assert.equal(f32Below(1), 1 - 2 ** -24);
  assert.equal(f32Below(-1), -(1 + 2 ** -23));
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { calibrateLayer, denseRule, rankStats, roundK, smallestK } from '../src/sparsity/calibrate.js';

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

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { LayerData } from '../src/sparsity/collect.js';
import { CpuTrainEngine, trainPredictor, type TrainEngine } from '../src/sparsity/train.js';
import { GpuTrainEngine } from '../src/sparsity/train-gpu/session.js';
import { rng } from './helpers.js';
import { NO_GPU, testGpu } from './predictors-gpu-helpers.js';

after(async () => { (await testGpu().catch(() => null))?.device.destroy(); });

const d = 24, f = 96, plantedRank = 4;

/** Labels from a planted rank-4 linear rule: active = (U V x + c > 0), about 8% active per row. */
function planted(seed: number) {
  const r = rng(seed), gauss = () => r() + r() + r() - 1.5;
  const V = Float32Array.from({ length: plantedRank * d }, gauss), U = Float32Array.from({ length: f * plantedRank }, gauss);
  const make = (rows: number): LayerData => {
    const x = Float32Array.from({ length: rows * d }, gauss), words = Math.ceil(f / 32), labels = new Uint32Array(rows * words);
    for (let t = 0; t < rows; t++) {
      const h = new Float64Array(plantedRank);
      for (let k = 0; k < plantedRank; k++) for (let i = 0; i < d; i++) h[k] += V[k * d + i] * x[t * d + i];
      for (let j = 0; j < f; j++) {
        let s = -1.7;
        for (let k = 0; k < plantedRank; k++) s += U[j * plantedRank + k] * h[k];
        if (s > 0) labels[t * words + (j >>> 5)] |= 1 << (j & 31);
      }
    }
    return { rows, x, labels };
  };
  return { train: make(4096), val: make(512) };
}

async function trainsPlantedRule(engine: TrainEngine): Promise<void> {
  const { train, val } = planted(7);
  const res = await trainPredictor(engine, train, val, d, f, { rank: 8, epochs: 40, batch: 256, lr: 1e-2, monitorK: 32, patience: 4 });
  assert.ok(res.recall >= 0.95, `recall@32 ${res.recall.toFixed(3)} after ${res.epochs} epochs`);
  assert.equal(res.predictor.A.length, 8 * d);
  assert.equal(res.valScores.length, val.rows * f);
}

test('CPU training learns a planted low-rank rule (recall@32 >= 0.95)', async () => {
  await trainsPlantedRule(new CpuTrainEngine());
});

test('WebGPU training learns a planted low-rank rule (recall@32 >= 0.95)', async (t) => {
  const gpu = await testGpu();
  if (!gpu) return t.skip(NO_GPU);
  await trainsPlantedRule(new GpuTrainEngine(gpu));
});

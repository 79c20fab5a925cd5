import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PredictorManifest } from '../src/sparsity/predictors-io.js';
import { savePredictors } from '../src/sparsity/predictors-save.js';
import { checkpoint, MODELS, randomArray, rng } from './helpers.js';

/**
 * A predictors folder for the 5m model with random weights: MLP predictors (layer 0 dense, K 64) and,
 * with `withHeads`, full-rank head predictors calibrated to k = 5 of 8 (layer 1 dense).
 */
export async function randomPredictorSet(withHeads = true) {
  const ck = await checkpoint(MODELS['5m']);
  const { layers, hidden: d, ffn: f, heads: H } = ck.config;
  const r = rng(4), rank = 8;
  const preds = Array.from({ length: layers }, () => ({ rank, A: randomArray(rank * d, r), B: randomArray(f * rank, r), bias: randomArray(f, r) }));
  const hp = Array.from({ length: layers }, () => ({ rank: H, A: randomArray(H * d, r), B: randomArray(H * H, r), bias: randomArray(H, r) }));
  const manifest: PredictorManifest = {
    format: 'dejavu-predictors/1', model_fingerprint: ck.fingerprint, rank, input: 'mlp_in', target_recall: 0.95, tokens: 1000, d, f,
    layers: preds.map((_, l) => ({ layer: l, dense: l === 0, k: 64, recall: 0.95, mass_recall: 0.98, precision: 0.3, density: 64 / f })),
    ...(withHeads ? { heads: { rank: H, heads: H, target_mass: 0.9, layers: hp.map((_, l) => ({ layer: l, dense: l === 1, k: 5, mass_recall: 0.9, oracle_mass: 0.92, recall: 0.9 })) } } : {}),
  };
  const dir = mkdtempSync(join(tmpdir(), 'dejavu-hpred-'));
  savePredictors(dir, manifest, preds, withHeads ? hp : []);
  return { ck, dir, hp, H };
}

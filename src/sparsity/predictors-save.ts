/**
 * Writes a predictor set to a folder (the format predictors-io.ts describes and reads). Node only:
 * it is kept out of predictors-io.ts so the browser-facing main entry never imports node:fs.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeSafetensors } from '../model/safetensors.js';
import { predictorWidth, type LowRankPredictor } from './policy.js';
import { MANIFEST, WEIGHTS, type PredictorManifest } from './predictors-io.js';

/**
 * Writes the set; `predictors[l]` must exist for every layer the manifest marks sparse, and with
 * manifest.heads `headPredictors[l]` for every layer (a head predictor is kept even where calibration
 * keeps every head, so --head-density can still make that layer sparse).
 */
export function savePredictors(dir: string, manifest: PredictorManifest, predictors: (LowRankPredictor | null)[], headPredictors: (LowRankPredictor | null)[] = []): void {
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const L of manifest.layers) {
    if (L.dense) continue;
    const p = predictors[L.layer];
    if (!p) throw new Error(`no predictor for sparse layer ${L.layer}`);
    tensors[`layers.${L.layer}.A`] = { shape: [p.rank, predictorWidth(manifest.input, manifest.d)], data: p.A };
    tensors[`layers.${L.layer}.B`] = { shape: [manifest.f, p.rank], data: p.B };
    tensors[`layers.${L.layer}.bias`] = { shape: [manifest.f], data: p.bias };
  }
  const mh = manifest.heads;
  if (mh) {
    for (const L of mh.layers) {
      const p = headPredictors[L.layer];
      if (!p) throw new Error(`no head predictor for layer ${L.layer}`);
      tensors[`heads.${L.layer}.A`] = { shape: [mh.rank, manifest.d], data: p.A };
      tensors[`heads.${L.layer}.B`] = { shape: [mh.heads, mh.rank], data: p.B };
      tensors[`heads.${L.layer}.bias`] = { shape: [mh.heads], data: p.bias };
    }
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, WEIGHTS), encodeSafetensors(tensors, { format: 'dejavu-predictors/1' }));
  writeFileSync(join(dir, MANIFEST), JSON.stringify(manifest, null, 2) + '\n');
}

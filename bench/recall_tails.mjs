// Per-token tails of the MLP predictors' output-mass recall: for each validation token of a
// collection (train-predictors --work DIR), the share of the active neurons' output mass
// (act_j · ‖W2[:, j]‖) that a predictor set's calibrated block rule keeps, per layer; printed as the
// mean and the 1st / 5th / 10th percentiles over tokens. Averages can look alike while the tails
// differ, and a perplexity is sensitive to the tail tokens.
//
//   npx tsc -p . && node bench/recall_tails.mjs MODEL_DIR WORK_DIR PREDICTORS_DIR [PREDICTORS_DIR ...]
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist', import.meta.url));
const { loadModel } = await import(`${dist}/src/engine/model.js`);
const { readMeta, loadLayer, loadMass } = await import(`${dist}/src/sparsity/collect.js`);
const { loadPredictors } = await import(`${dist}/src/sparsity/predictors-io.js`);
const { predictScores } = await import(`${dist}/src/sparsity/predict.js`);
const { blockSelect } = await import(`${dist}/src/backend/cpu/kernels.js`);
const { BLOCK_SIZE } = await import(`${dist}/src/sparsity/policy.js`);

const [modelDir, work, ...sets] = process.argv.slice(2);
if (!modelDir || !work || !sets.length) { console.error('usage: node bench/recall_tails.mjs MODEL_DIR WORK_DIR PREDICTORS_DIR...'); process.exit(1); }
const model = await loadModel(modelDir, { backend: 'cpu' });
const meta = readMeta(work), { d, f } = meta;
const q = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
const pct = (x) => (x * 100).toFixed(1).padStart(5);

for (const dir of sets) {
  const set = await loadPredictors(dir, model.checkpoint);
  const policy = set.policy();
  console.log(`${dir}: input ${set.manifest.input}, rank ${set.manifest.rank}, target recall ${set.manifest.target_recall}`);
  console.log('layer   mean    p1    p5   p10   (output-mass recall per token, %)');
  for (let l = 0; l < meta.layers; l++) {
    const lp = policy.mlp[l];
    if (!lp || lp.selector.kind !== 'predictor' || !lp.selector.block) continue;
    const { predictor, block } = lp.selector;
    const val = loadLayer(work, meta, l, 'val', set.manifest.input);
    const { act, w2norm } = loadMass(work, l);
    const rec = [];
    for (let t = 0; t < val.rows; t++) {
      const s = predictScores(predictor, val.x.subarray(t * d, (t + 1) * d), d);
      const chosen = blockSelect(s, BLOCK_SIZE, block.cap, block.tau).chosen;
      let total = 0, kept = 0;
      for (let j = 0; j < f; j++) { const a = act[t * f + j]; if (a > 0) total += a * w2norm[j]; }
      for (const j of chosen) { const a = act[t * f + j]; if (a > 0) kept += a * w2norm[j]; }
      if (total > 0) rec.push(kept / total);
    }
    rec.sort((a, b) => a - b);
    const mean = rec.reduce((a, v) => a + v, 0) / rec.length;
    console.log(`${String(l).padStart(5)}  ${pct(mean)} ${pct(q(rec, 0.01))} ${pct(q(rec, 0.05))} ${pct(q(rec, 0.1))}`);
  }
}
model.dispose();

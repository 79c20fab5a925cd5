// What eval --compare pays a window: reset, a dense forward of 128 tokens, reset, setSparsity(policy),
// a sparse forward, then back to dense, five times (mean), against two dense forwards with no switch.
// Synthetic weights, random predictors of DejaVu's proportions (block rule, 10 %).
//
//   npx tsc -p . && node bench/switch_sparsity.mjs              # on the GPU host (carry dist)
//
// SWITCH_SHAPES (default opt-1.3b,opt-6.7b).
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const { createWebGpuRunner } = await import(`${dist}/src/backend/webgpu/runner.js`);
const { shapeConfig } = await import(`${dist}/src/bench/shapes.js`);
const { syntheticPredictorPolicy } = await import(`${dist}/src/bench/policies.js`);
const gpu = await openGpu({});
for (const shape of (process.env.SWITCH_SHAPES ?? 'opt-1.3b,opt-6.7b').split(',')) {
  const c = shapeConfig(shape);
  const r = await createWebGpuRunner(c, 'synthetic', { gpu });
  const policy = syntheticPredictorPolicy(c, 0.1);
  const ids = Array.from({ length: 128 }, (_, i) => (i * 7919) % c.vocabSize);
  r.setSparsity(policy); await r.forward(ids); r.setSparsity(null); await r.forward(ids); // fc2ᵀ made, pipelines compiled
  const n = 5;
  let t0 = performance.now();
  for (let i = 0; i < n; i++) {
    r.reset(); r.setSparsity(null); await r.forward(ids);
    r.reset(); r.setSparsity(policy); await r.forward(ids);
  }
  const switched = (performance.now() - t0) / n;
  r.setSparsity(null);
  t0 = performance.now();
  for (let i = 0; i < n; i++) { r.reset(); await r.forward(ids); r.reset(); await r.forward(ids); }
  const plain = (performance.now() - t0) / n;
  console.log(`${shape} (${gpu.adapterName}): dense + sparse window with switches ${switched.toFixed(1)} ms; two dense windows ${plain.toFixed(1)} ms`);
  r.dispose();
}
process.exit(0);

// Prefill time by prompt length on the WebGPU runner: forward() of T tokens from position 0 (the
// last row's logits read back), synthetic weights of real OPT shapes, mean of 5 after a warm-up,
// with the matmul's short form (kernels/matmul.ts) as the runner picks it, then forced off and on.
//
//   npx tsc -p . && node bench/prefill.mjs                      # on the GPU host (carry dist)
//
// PREFILL_SHAPES (default opt-1.3b,opt-6.7b), PREFILL_TOKENS (default 8,16,32,48,64,128).
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const { createWebGpuRunner } = await import(`${dist}/src/backend/webgpu/runner.js`);
const { shapeConfig } = await import(`${dist}/src/bench/shapes.js`);
const shapes = (process.env.PREFILL_SHAPES ?? 'opt-1.3b,opt-6.7b').split(',');
const lengths = (process.env.PREFILL_TOKENS ?? '8,16,32,48,64,128').split(',').map(Number);
const gpu = await openGpu({});
console.log(`${gpu.adapterName}; ms a prefill of T tokens`);
for (const shape of shapes) {
  const c = shapeConfig(shape);
  for (const [form, max] of [['default', null], ['16-k stages', 0], ['short form', Infinity]]) {
    const r = await createWebGpuRunner(c, 'synthetic', { gpu });
    if (max !== null) r.k.matmulShortMax = max; // the Kernels field the plan reads when it is built
    const out = [];
    for (const T of lengths) {
      const ids = Array.from({ length: T }, (_, i) => (i * 7919) % c.vocabSize);
      r.reset(); await r.forward(ids);
      const t0 = performance.now();
      for (let i = 0; i < 5; i++) { r.reset(); await r.forward(ids); }
      out.push(`${T}: ${((performance.now() - t0) / 5).toFixed(1)}`);
    }
    console.log(`${shape} ${form} | ${out.join(' | ')}`);
    r.dispose();
  }
}
process.exit(0);

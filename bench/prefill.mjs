// Prefill time by prompt length on the WebGPU runner: forward() of T tokens from position 0 (the
// last row's logits read back), synthetic weights of real OPT shapes, mean of 5 after a warm-up,
// with the kernels as the runner picks them (the skinny matmul up to Kernels.skinnyMax tokens, then
// the tiled matmul's short form, then its 16-k stages), then each form forced.
//
//   npx tsc -p . && node bench/prefill.mjs                      # on the GPU host (carry dist)
//
// PREFILL_SHAPES (default opt-1.3b,opt-6.7b), PREFILL_TOKENS (default 2,4,8,16,32,48,64,128),
// PREFILL_FORMS (default all of: default, matmul, skinny4, skinny8).
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const { createWebGpuRunner } = await import(`${dist}/src/backend/webgpu/runner.js`);
const { shapeConfig } = await import(`${dist}/src/bench/shapes.js`);
const shapes = (process.env.PREFILL_SHAPES ?? 'opt-1.3b,opt-6.7b').split(',');
const lengths = (process.env.PREFILL_TOKENS ?? '2,4,8,16,32,48,64,128').split(',').map(Number);
// Each form: the Kernels fields the plans read when they are built.
const FORMS = {
  default: {},
  matmul: { skinnyMax: 0 },                                  // the tiled matmul alone (its short form up to 64 tokens)
  skinny4: { skinnyMax: Infinity, skinnyTokens: 4 },
  skinny8: { skinnyMax: Infinity, skinnyTokens: 8 },
};
const forms = (process.env.PREFILL_FORMS ?? Object.keys(FORMS).join(',')).split(',');
const gpu = await openGpu({});
console.log(`${gpu.adapterName}; ms a prefill of T tokens`);
for (const shape of shapes) {
  const c = shapeConfig(shape);
  for (const form of forms) {
    const r = await createWebGpuRunner(c, 'synthetic', { gpu });
    Object.assign(r.k, FORMS[form]);
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

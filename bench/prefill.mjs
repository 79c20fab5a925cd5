// Prefill time by prompt length on the WebGPU runner: forward() of T tokens from position 0 (the
// last row's logits read back), synthetic weights of real OPT shapes, the median of PREFILL_REPS (7)
// after a warm-up,
// in the skinny matmul's default form (kernels/matmul-skinny.ts) and in the forms named.
//
//   npx tsc -p . && node bench/prefill.mjs                      # on the GPU host (carry dist)
//
// PREFILL_SHAPES (default opt-1.3b,opt-6.7b), PREFILL_TOKENS (default 2,4,8,16,32,64,128),
// PREFILL_FORMS (default all of FORMS: t<tokens a tile>l<lanes a row>r<rows a lane>). The tiled
// matmul the skinny one replaced ("matmul" in docs/benchmarks.md) is in git history before it.
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const { createWebGpuRunner } = await import(`${dist}/src/backend/webgpu/runner.js`);
const { shapeConfig } = await import(`${dist}/src/bench/shapes.js`);
const shapes = (process.env.PREFILL_SHAPES ?? 'opt-1.3b,opt-6.7b').split(',');
const lengths = (process.env.PREFILL_TOKENS ?? '2,4,8,16,32,64,128').split(',').map(Number);
// Each form: the Kernels fields the plans read when they are built.
const skinny = (tt, lanes, rpl) => ({ skinny: { tt, lanes, rpl } });
const FORMS = {
  default: {},
  t8l32r2: skinny(8, 32, 2), t4l32r2: skinny(4, 32, 2), t4l32r4: skinny(4, 32, 4), t8l32r4: skinny(8, 32, 4),
  t4l64r4: skinny(4, 64, 4), t8l64r4: skinny(8, 64, 4), t4l32r8: skinny(4, 32, 8), t16l32r2: skinny(16, 32, 2),
};
const REPS = Number(process.env.PREFILL_REPS ?? 7);
const forms = (process.env.PREFILL_FORMS ?? Object.keys(FORMS).join(',')).split(',');
for (const f of forms) if (!Object.hasOwn(FORMS, f)) throw new Error(`unknown form ${f} (choose ${Object.keys(FORMS).join(', ')})`);
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
      const ms = [];
      for (let i = 0; i < REPS; i++) { r.reset(); const t0 = performance.now(); await r.forward(ids); ms.push(performance.now() - t0); }
      ms.sort((a, b) => a - b);
      out.push(`${T}: ${ms[REPS >> 1].toFixed(1)}`);
    }
    console.log(`${shape} ${form} | ${out.join(' | ')}`);
    r.dispose();
  }
}
process.exit(0);

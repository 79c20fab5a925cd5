// Probe: does a GEMV slow down when the weights it streams through span more device memory? The
// decode step of opt-30b walks ~60 GB of weights a token, while the kernel bench rotates its GEMVs
// over ~256 MiB–2 GiB of copies; if address translation (TLB reach) costs, the same GEMV should take
// longer as the copies' footprint grows. Runs the kernel bench's `gemv` rows at one shape with the
// rotation (and memory budget) at each footprint in FP_GIB (GiB, default 0.25,4,24); FP_DIST: another build's dist;
// FP_VARIANTS=1: the kernel bench's other GEMV shapes too (rows a workgroup × threads a row × rows a thread).
//
//   source .gpu-bundle/enter.sh; FP_SHAPE=opt-30b node bench/footprint_probe.mjs    # on the GPU host (carry dist)
import { fileURLToPath } from 'node:url';

const dist = process.env.FP_DIST ?? fileURLToPath(new URL('../dist', import.meta.url));
const { runKernelBench } = await import(`${dist}/src/bench/kernels.js`);
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const shape = process.env.FP_SHAPE ?? 'opt-30b';
const gibs = (process.env.FP_GIB ?? '0.25,4,24').split(',').map(Number);
const variants = process.env.FP_VARIANTS === '1';
const gpu = await openGpu({});
const table = new Map();
for (const g of gibs) {
  const bytes = g * 2 ** 30;
  const rows = await runKernelBench({ shape, gpu, only: ['gemv'], rotateBytes: bytes, memBudgetBytes: bytes * 1.05, targetMs: 20, samples: 7, variants });
  for (const r of rows) {
    if (r.kernel !== 'gemv' || (r.params.form && !variants)) continue;
    const key = `${r.params.op}${r.params.form ? ` ${r.params.form}` : ''}`;
    if (!table.has(key)) table.set(key, []);
    table.get(key).push(`${r.us.toFixed(1)} µs (${r.params.copies} copies)`);
  }
}
console.log(`${shape}: gemv µs by footprint of the rotated copies`);
console.log(`op | ${gibs.map((g) => `${g} GiB`).join(' | ')}`);
for (const [op, v] of table) console.log(`${op} | ${v.join(' | ')}`);

// Probe: why the big GEMVs slow down over a large weight footprint (bench/footprint_probe.mjs) while
// a plain read of the same matrices barely does (bench/arena_probe.mjs), and why the GEMV forms whose
// workgroups span fewer bytes slow down least. If it is address translation, what counts is how many
// distinct pages the resident workgroups touch at once: ~1000 resident workgroups × the bytes each
// streams. This reads 308 MB matrices (an opt-30b qkv) in rotation, each workgroup 16 KB a round
// (256 threads, four 16-byte loads in flight each), in two orders:
//   wg:   workgroup w streams its own contiguous WP_KB (a GEMV workgroup's rows), round after round;
//   trip: round r of workgroup w reads block r·nwg + w, so the resident workgroups' rounds at any
//         moment lie in a few MB (a weight layout in the order the kernel reads it).
// Both read every byte once; µs a read and GB/s per (KB a workgroup, order, footprint).
//
//   source .gpu-bundle/enter.sh; node bench/window_probe.mjs          # on the GPU host (carry dist)
// WP_KB (16,64,128,256), WP_GIB (0.25,24), WP_MB (308)
import { fileURLToPath } from 'node:url';

const dist = process.env.WP_DIST ?? fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const { Kernels, runNow } = await import(`${dist}/src/backend/webgpu/ops.js`);
const { GpuTimer } = await import(`${dist}/src/bench/gpu-timer.js`);
const { blockedReadWgsl, fillRanges, ROUND_BYTES } = await import('./probe_util.mjs');

const GiB = 2 ** 30;
const kbs = (process.env.WP_KB ?? '16,64,128,256').split(',').map(Number);
const gibs = (process.env.WP_GIB ?? '0.25,24').split(',').map(Number);
const unit = Math.max(...kbs) * 1024;
const matBytes = Math.ceil((Number(process.env.WP_MB ?? 308) * 1e6) / unit) * unit;
const gpu = await openGpu({});
const k = new Kernels(gpu);

const out = k.buffer((matBytes / ROUND_BYTES) * 4, 'out');
const res = new Map();
for (const g of gibs) {
  const n = Math.max(2, Math.round((g * GiB) / matBytes));
  const bufs = Array.from({ length: n }, (_, i) => k.buffer(matBytes, `m${i}`));
  await fillRanges(k, runNow, bufs.map((buffer) => ({ buffer })), matBytes);
  for (const kb of kbs) {
    for (const order of ['wg', 'trip']) {
      const rounds = (kb * 1024) / ROUND_BYTES, nwg = matBytes / (kb * 1024);
      const pl = k.pipeline(`window_probe_${rounds}_${order}`, () => blockedReadWgsl(rounds, order));
      const own = [];
      const inst = bufs.map((b) => [k.dispatch('read', pl, [0, 0, 0, 0], [[1, b], [2, out]], [nwg, 1, 1], own)]);
      const t = await new GpuTimer(gpu, { targetMs: 20, samples: 7 }).time(inst);
      res.set(`${kb}|${order}|${g}`, t.us);
      console.log(`${kb} KB a workgroup, ${order}, ${g} GiB (${n} matrices): ${t.us.toFixed(1)} µs, ${(matBytes / t.us / 1e3).toFixed(0)} GB/s`);
      own.forEach((b) => b.destroy());
    }
  }
  bufs.forEach((b) => b.destroy());
  await gpu.device.queue.onSubmittedWorkDone();
}
console.log(`\n${(matBytes / 1e6).toFixed(0)} MB matrices, µs a read | ${gibs.map((g) => `${g} GiB`).join(' | ')}`);
for (const kb of kbs) for (const order of ['wg', 'trip']) console.log(`${kb} KB ${order} | ${gibs.map((g) => res.get(`${kb}|${order}|${g}`)?.toFixed(1) ?? '—').join(' | ')}`);

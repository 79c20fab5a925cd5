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
const { fillRanges } = await import('./probe_fill.mjs');

const GiB = 2 ** 30, WG = 256, ROUND = 16 * 1024;
const kbs = (process.env.WP_KB ?? '16,64,128,256').split(',').map(Number);
const gibs = (process.env.WP_GIB ?? '0.25,24').split(',').map(Number);
const unit = Math.max(...kbs) * 1024;
const matBytes = Math.ceil((Number(process.env.WP_MB ?? 308) * 1e6) / unit) * unit;
const gpu = await openGpu({});
const k = new Kernels(gpu);

function wgsl(rounds, order) {
  const at = order === 'wg' ? `(wid.x * ${rounds}u + r) * 1024u` : '(r * nwg + wid.x) * 1024u';
  return `
@group(0) @binding(0) var<uniform> p: vec4<u32>;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
var<workgroup> acc: atomic<u32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let nwg = nw.x;
  var a = vec4<u32>(0u);
  for (var r = 0u; r < ${rounds}u; r++) {
    let b = ${at} + lid;
    let w0 = src[b]; let w1 = src[b + 256u]; let w2 = src[b + 512u]; let w3 = src[b + 768u];
    a += (w0 + w1) + (w2 + w3);
  }
  atomicAdd(&acc, (a.x + a.y) + (a.z + a.w));
  workgroupBarrier();
  if (lid == 0u) { out[p.x + wid.x] = atomicLoad(&acc); }
}`;
}

const out = k.buffer((matBytes / ROUND) * 4, 'out');
const res = new Map();
for (const g of gibs) {
  const n = Math.max(2, Math.round((g * GiB) / matBytes));
  const bufs = Array.from({ length: n }, (_, i) => k.buffer(matBytes, `m${i}`));
  await fillRanges(k, runNow, bufs.map((buffer) => ({ buffer })), matBytes);
  for (const kb of kbs) {
    for (const order of ['wg', 'trip']) {
      const rounds = (kb * 1024) / ROUND, nwg = matBytes / (kb * 1024);
      const pl = k.pipeline(`window_probe_${rounds}_${order}`, () => wgsl(rounds, order));
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

// Probe: is the big GEMVs' slowdown over a large weight footprint (bench/footprint_probe.mjs: 4–10 %
// past ~4–12 GiB) a matter of how the weights are allocated? The engine gives every weight matrix
// (or each part of one) its own GPUBuffer; Dawn gives a buffer that large its own device-memory
// allocation. Here the same matrices are read, in rotation, either
//   sep:   one GPUBuffer a matrix (the engine's layout), or
//   arena: packed into a few large GPUBuffers (as large as one storage binding may be), each matrix a
//          binding at a 2 MiB-aligned offset of one of them,
// at several total footprints. The kernel reads a matrix as the GEMVs do: workgroup w streams its own
// contiguous 64 KiB (rows × columns of a GEMV's workgroup), 256 threads, four 16-byte loads in flight.
// Prints µs a read and GB/s per (mode, footprint); the checksums of both modes are compared.
//
//   source .gpu-bundle/enter.sh; node bench/arena_probe.mjs          # on the GPU host (carry dist)
// AP_MB (308: an opt-30b qkv matrix), AP_GIB (0.25,4,24), AP_MODES (sep,arena), AP_ARENA_GIB (cap on an arena)
import { fileURLToPath } from 'node:url';

const dist = process.env.AP_DIST ?? fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const { Kernels, runNow, readU32 } = await import(`${dist}/src/backend/webgpu/ops.js`);
const { GpuTimer } = await import(`${dist}/src/bench/gpu-timer.js`);
const { blockedReadWgsl, fillRanges, ROUND_BYTES } = await import('./probe_util.mjs');

const MiB = 2 ** 20, GiB = 2 ** 30, BLK = 64 * 1024, ALIGN = 2 * MiB;
const matBytes = Math.ceil((Number(process.env.AP_MB ?? 308) * 1e6) / BLK) * BLK;
const gibs = (process.env.AP_GIB ?? '0.25,4,24').split(',').map(Number);
const modes = (process.env.AP_MODES ?? 'sep,arena').split(',');
const gpu = await openGpu({});
const k = new Kernels(gpu);
const L = gpu.limits;
const arenaCap = Math.floor(Math.min(L.maxStorageBufferBindingSize, L.maxBufferSize, Number(process.env.AP_ARENA_GIB ?? 64) * GiB) / ALIGN) * ALIGN;
console.log(`${gpu.adapterName}: maxBufferSize ${(L.maxBufferSize / GiB).toFixed(2)} GiB, maxStorageBufferBindingSize ${(L.maxStorageBufferBindingSize / GiB).toFixed(2)} GiB; matrix ${(matBytes / 1e6).toFixed(1)} MB, arena up to ${(arenaCap / GiB).toFixed(2)} GiB`);

// Workgroup w reads its own contiguous 64 KiB (blockedReadWgsl's wg order, four rounds).
const pl = k.pipeline('arena_probe_read', () => blockedReadWgsl(BLK / ROUND_BYTES));
const groups = matBytes / BLK;

async function layout(mode, n) {
  const bufs = [], mats = [];
  if (mode === 'sep') {
    for (let i = 0; i < n; i++) { const b = k.buffer(matBytes, `m${i}`); bufs.push(b); mats.push({ buffer: b, offset: 0 }); }
  } else {
    const stride = Math.ceil(matBytes / ALIGN) * ALIGN, per = Math.max(1, Math.floor(arenaCap / stride));
    for (let i = 0; i < n; i += per) {
      const m = Math.min(per, n - i), b = k.buffer((m - 1) * stride + matBytes, `arena${bufs.length}`);
      bufs.push(b);
      for (let j = 0; j < m; j++) mats.push({ buffer: b, offset: j * stride });
    }
  }
  await fillRanges(k, runNow, mats, matBytes);
  return { bufs, mats };
}

const out = k.buffer(groups * 4, 'out');
const rows = [];
const sums = new Map();
for (const g of gibs) {
  const n = Math.max(2, Math.round((g * GiB) / matBytes));
  for (const mode of modes) {
    const { bufs, mats } = await layout(mode, n);
    const own = [];
    const inst = mats.map((m) => [k.dispatch('read', pl, [0, 0, 0, 0], [[1, { buffer: m.buffer, offset: m.offset, size: matBytes }], [2, out]], [groups, 1, 1], own)]);
    // A checksum of the last matrix read, for comparing the modes.
    await runNow(k, inst[n - 1], []);
    const cs = (await readU32(k, out, groups)).reduce((a, b) => (a + b) >>> 0, 0);
    const prev = sums.get(n);
    if (prev !== undefined && prev !== cs) console.log(`CHECKSUM MISMATCH at ${n} matrices: ${prev} vs ${cs}`);
    sums.set(n, cs);
    const t = await new GpuTimer(gpu, { targetMs: 20, samples: 7 }).time(inst);
    rows.push({ mode, gib: g, n, buffers: bufs.length, us: t.us, gbps: matBytes / t.us / 1e3 });
    console.log(`${mode} ${g} GiB (${n} matrices, ${bufs.length} buffers): ${t.us.toFixed(1)} µs, ${(matBytes / t.us / 1e3).toFixed(0)} GB/s`);
    for (const b of own) b.destroy();
    for (const b of bufs) b.destroy();
    await gpu.device.queue.onSubmittedWorkDone();
  }
}
console.log('\nmode | ' + gibs.map((g) => `${g} GiB`).join(' | '));
for (const mode of modes) console.log(`${mode} | ${gibs.map((g) => { const r = rows.find((x) => x.mode === mode && x.gib === g); return r ? `${r.us.toFixed(1)} µs (${r.buffers} buf)` : '—'; }).join(' | ')}`);

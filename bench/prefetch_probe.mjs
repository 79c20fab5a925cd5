// Probe: can a latency-bound dispatch (decode attention, fc2's sum: little to read, ~10-18 µs in the
// OPT-6.7B step) warm L2 with the NEXT dispatch's weights, so that the next GEMV reads them faster?
//
// An earlier probe (docs/benchmarks.md, "The fixed cost of a dependent dispatch, and L2 prefetch")
// prefetched from bandwidth-bound dispatches and found nothing: the prefetch took the bandwidth the
// dispatch itself needed. Here the first dispatch mostly waits on a chain of dependent loads (as
// attention's q → K → softmax → V → combine does), so the memory system is idle while it runs.
//
//   lat:       LAT_WG workgroups each walking a chain of PP_STEPS dependent loads (small, L2-resident)
//   lat+pf:    the same dispatch with extra workgroups that read the first PP_PF MiB of the next
//              matrix (xor of 16-byte loads, stored only if it equals a magic value)
//   gemv:      the engine's GEMV (ops.ts linear: y = W x) over a PP_ROWS × PP_D fp16 matrix
// Each row times one iteration: [lat, gemv] against [lat+pf, gemv], copies of W rotating so that no
// iteration finds its matrix in L2 except through the prefetch.
//
//   npx tsc -p . && node bench/prefetch_probe.mjs        # on the GPU host (carry dist)
// PP_D (4096), PP_ROWS (4096), PP_STEPS (24), PP_PF (MiB list, default 8,16,32), PP_PFWG (264 prefetch
// workgroups), PP_LATWG (1024 latency workgroups), PP_PFFIRST (1: prefetch workgroups first in the grid)
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const { Kernels } = await import(`${dist}/src/backend/webgpu/ops.js`);
const { GpuTimer } = await import(`${dist}/src/bench/gpu-timer.js`);

const D = Number(process.env.PP_D ?? 4096), ROWS = Number(process.env.PP_ROWS ?? 4096);
const STEPS = Number(process.env.PP_STEPS ?? 24), PFWG = Number(process.env.PP_PFWG ?? 264);
const PFS = (process.env.PP_PF ?? '8,16,32').split(',').map(Number);
const LAT_WG = Number(process.env.PP_LATWG ?? 1024), PFFIRST = process.env.PP_PFFIRST === '1';
const gpu = await openGpu({});
const dev = gpu.device;
const k = new Kernels(gpu);
const MIB = 1 << 20;
const matBytes = ROWS * D * 2;
const COPIES = Math.max(4, Math.ceil((512 * MIB) / matBytes));
const fillOwn = [];
const mats = Array.from({ length: COPIES }, (_, i) => k.matrix(ROWS, D, `W${i}`));
const x = k.buffer(D * 4, 'x'), y = k.buffer(ROWS * 4, 'y');
const NCH = 1 << 16;
const chase = k.buffer(NCH * 4, 'chase'), out = k.buffer(64, 'out');
{
  // a random cycle over NCH entries: each step's address depends on the last load
  const perm = Uint32Array.from({ length: NCH }, (_, i) => i);
  for (let i = NCH - 1; i > 0; i--) { const j = (Math.random() * (i + 1)) | 0; [perm[i], perm[j]] = [perm[j], perm[i]]; }
  const next = new Uint32Array(NCH);
  for (let i = 0; i < NCH; i++) next[perm[i]] = perm[(i + 1) % NCH];
  dev.queue.writeBuffer(chase, 0, next);
  const xs = Float32Array.from({ length: D }, () => Math.random() - 0.5);
  dev.queue.writeBuffer(x, 0, xs);
}
{
  const enc = dev.createCommandEncoder();
  k.encode(enc, mats.flatMap((m, i) => k.fillMatrix(m, i + 1, 0.02, fillOwn)).map((d) => ({ d })));
  dev.queue.submit([enc.finish()]);
  await dev.queue.onSubmittedWorkDone();
}

const latWgsl = `
struct P { nLat: u32, steps: u32, perWg: u32, pfVec: u32, nPf: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> chase: array<u32>;
@group(0) @binding(2) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  // PP_PFFIRST=1: the prefetch workgroups take the grid's first ids (scheduled first), else its last
  let lw = ${PFFIRST ? 'wid.x - p.nPf' : 'wid.x'};
  if (${PFFIRST ? 'wid.x >= p.nPf' : 'wid.x < p.nLat'}) {
    var i = (lw * 256u + lid) % ${NCH}u;
    for (var s = 0u; s < p.steps; s++) { i = chase[i]; }
    if (i == 0xffffffffu) { out[0] = i; }
    return;
  }
  // prefetch: workgroup w reads vec4s [w·perWg, (w+1)·perWg) of the first pfVec, 4 loads in flight
  let w = ${PFFIRST ? 'wid.x' : 'wid.x - p.nLat'};
  let b0 = w * p.perWg;
  let b1 = min(b0 + p.perWg, p.pfVec);
  var a = vec4<u32>(0u);
  for (var c = b0 + lid; c < b1; c += 1024u) {
    let v0 = W[c];
    var v1 = vec4<u32>(0u); var v2 = vec4<u32>(0u); var v3 = vec4<u32>(0u);
    if (c + 256u < b1) { v1 = W[c + 256u]; }
    if (c + 512u < b1) { v2 = W[c + 512u]; }
    if (c + 768u < b1) { v3 = W[c + 768u]; }
    a ^= v0 ^ v1 ^ v2 ^ v3;
  }
  if (all(a == vec4<u32>(0x12345678u))) { out[1] = a.x; }
}`;
const latPl = k.pipeline('pp_lat', () => latWgsl);
const own = [];
function lat(m, pfMib) {
  const pfVec = Math.min(matBytes, pfMib * MIB) / 16;
  const nPf = pfMib > 0 ? PFWG : 0;
  const perWg = nPf ? Math.ceil(pfVec / nPf) : 0;
  return k.dispatch('pp_lat', latPl, [LAT_WG, STEPS, perWg, pfVec, nPf], [[1, chase], [2, m.parts[0].buffer], [3, out]], [LAT_WG + nPf, 1, 1], own);
}
const gemv = (m) => k.linear({ W: m, x, y, T: 1 }, own);
if (mats[0].parts.length !== 1) throw new Error('prefetch_probe: the matrix must be one part');

const timer = new GpuTimer(gpu, { targetMs: 20, samples: 7 });
const rows = [];
const t = async (name, f) => {
  const r = await timer.time(mats.map(f));
  rows.push({ name, us: +r.us.toFixed(2) });
  console.log(JSON.stringify({ name, us: +r.us.toFixed(2), samples: r.samplesUs.map((v) => +v.toFixed(2)) }));
};
console.log(JSON.stringify({ adapter: gpu.adapterName, D, ROWS, matMiB: matBytes / MIB, COPIES, STEPS, LAT_WG, PFWG, PFFIRST }));
await t('gemv alone', (m) => gemv(m));
await t('lat alone', (m) => [lat(m, 0)]);
for (const pf of PFS) await t(`lat + pf ${pf} MiB alone`, (m) => [lat(m, pf)]);
await t('lat, gemv', (m) => [lat(m, 0), ...gemv(m)]);
for (const pf of PFS) await t(`lat + pf ${pf} MiB, gemv`, (m) => [lat(m, pf), ...gemv(m)]);
// the prefetch of the NEXT copy (what gemv does not read): the cost of the prefetch's bandwidth alone
for (const pf of PFS) await t(`lat + pf ${pf} MiB of another matrix, gemv`, (m) => { const o = mats[(mats.indexOf(m) + COPIES / 2) % COPIES]; return [lat(o, pf), ...gemv(m)]; });
console.log('what | µs an iteration');
for (const r of rows) console.log(`${r.name} | ${r.us}`);

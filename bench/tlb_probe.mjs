// Probe: is the GEMVs' slowdown over a large weight footprint address translation, and does touching
// the next matrix's pages ahead of its GEMV (one 16-byte load every TP_STRIDE KiB, a few workgroups)
// take it back? An opt-30b decode step walks ~60 GB of weights a token, and its big GEMVs run 4-10 %
// slower than the same GEMV rotated over a few GiB (footprint_probe.mjs); a plain read loses less
// (window_probe.mjs). If the cost is the first touch of each page's translation, warming the next
// matrix's translations while the current one streams should help and cost almost no bandwidth.
//
// Rotates the engine's GEMV (Kernels.linear) over copies of one matrix filling TP_GIB GiB, each
// instance one of:
//   plain:      [GEMV(W_i)]
//   touch-next: [touch(W_{i+1}), GEMV(W_i)]   the pages of the matrix the next instance reads
//   touch-self: [touch(W_i), GEMV(W_i)]       the same dispatch count, its own pages (just touched)
//   touch-none: [touch(small), GEMV(W_i)]     the touch dispatch's own cost, nothing warmed
// µs an instance (GPU timestamps), median of samples.
//
//   source .gpu-bundle/enter.sh; TP_GIB=0.25,24 TP_OPS=qkv,fc1 TP_STRIDES=64,2048 node bench/tlb_probe.mjs
import { fileURLToPath } from 'node:url';

const dist = process.env.TP_DIST ?? fileURLToPath(new URL('../dist', import.meta.url));
const { Kernels, runNow } = await import(`${dist}/src/backend/webgpu/ops.js`);
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const { GpuTimer } = await import(`${dist}/src/bench/gpu-timer.js`);
const { shapeConfig } = await import(`${dist}/src/bench/shapes.js`);

const shape = process.env.TP_SHAPE ?? 'opt-30b';
const gibs = (process.env.TP_GIB ?? '0.25,24').split(',').map(Number);
const ops = (process.env.TP_OPS ?? 'qkv,fc1').split(',');
const strides = (process.env.TP_STRIDES ?? '64,2048').split(',').map(Number);   // KiB between touches
const modes = (process.env.TP_MODES ?? 'plain,touch-next,touch-self,touch-none').split(',');
const c = shapeConfig(shape), d = c.hidden, f = c.ffn;
const dims = { qkv: [3 * d, d], fc1: [f, d], fc2: [d, f], o: [d, d] };

const gpu = await openGpu({});
const k = new Kernels(gpu);
const timer = new GpuTimer(gpu, { targetMs: 20, samples: 7 });
const touchWgsl = () => `
struct P { n: u32, stride: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> sink: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x >= p.n) { return; }
  let v = W[gid.x * p.stride];
  if (v.x == 0x12345678u && v.y == 0x9abcdef0u && v.z == 0x0fedcba9u) { sink[0] = v.w; }   // keeps the load
}`;
const touchPl = k.pipeline('tlb_touch', touchWgsl);
const sink = k.buffer(256, 'sink'), small = k.buffer(1 << 20, 'small');
console.log(JSON.stringify({ adapter: gpu.adapterName, shape, gibs, ops, strides }));
const out = [];
for (const op of ops) {
  const [rows, cols] = dims[op];
  for (const g of gibs) {
    const own = [], fillOwn = [];
    const probe = k.matrix(rows, cols, 'probe');
    const bytes = probe.parts.reduce((a, p) => a + p.buffer.size, 0);
    probe.parts.forEach((p) => p.buffer.destroy());
    const copies = Math.max(2, Math.floor((g * 2 ** 30) / bytes));
    const Ws = [];
    for (let i = 0; i < copies; i++) {
      const W = k.matrix(rows, cols, `W${i}`);
      await runNow(k, k.fillMatrix(W, i + 1, 0.02, fillOwn), fillOwn);
      Ws.push(W);
    }
    const x = k.buffer(cols * 4, 'x'), y = k.buffer(rows * 4, 'y');
    const touch = (W, strideKiB) => W.parts.map((p) => {
      const s = (strideKiB * 1024) / 16, n = Math.ceil(p.buffer.size / 16 / s);
      return k.dispatch('tlb_touch', touchPl, [n, s], [[1, p.buffer], [2, sink]], [Math.ceil(n / 64), 1, 1], own);
    });
    const gemv = (W) => k.linear({ W, x, y, T: 1 }, own);
    for (const mode of modes) {
      for (const st of mode === 'plain' ? [0] : strides) {
        const inst = Ws.map((W, i) => mode === 'plain' ? gemv(W)
          : [...(mode === 'touch-next' ? touch(Ws[(i + 1) % copies], st) : mode === 'touch-self' ? touch(W, st) : touch({ parts: [{ buffer: small }] }, st)), ...gemv(W)]);
        const tm = await timer.time(inst);
        const row = { op, rows, cols, gib: g, copies, mode, stride_kib: st || null, us: +tm.us.toFixed(2), gbps: +(bytes / (tm.us * 1e3)).toFixed(0) };
        out.push(row);
        console.log(JSON.stringify(row));
      }
    }
    Ws.forEach((W) => W.parts.forEach((p) => p.buffer.destroy()));
    x.destroy(); y.destroy();
    own.forEach((b) => b.destroy()); fillOwn.forEach((b) => b.destroy());
  }
}
console.log('\nop | GiB | mode | stride KiB | µs | GB/s');
for (const r of out) console.log(`${r.op} | ${r.gib} | ${r.mode} | ${r.stride_kib ?? '-'} | ${r.us} | ${r.gbps}`);

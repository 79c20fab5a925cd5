// Probe: what do the qkv GEMV's fusions cost? In the OPT-6.7B decode profile the qkv GEMV (the
// attention LayerNorm folded in, the K/V store, predictor A's rows) takes ~36 µs a layer in the step,
// while a plain GEMV of the same 3d × d matrix takes ~28 µs in a stream of them (bench/prefetch_probe.mjs).
// Each form here runs alone, back to back (copies of the weights rotating so that each reads from
// DRAM), through the engine's own ops.ts `linear`:
//   plain:         y = W x + b
//   ln:            y = W LN(x) (γ, β and b folded: c1 = W γ, c2 = W β + b)
//   ln+kv:         and rows [d, 3d) stored to the K/V caches at step[0]
//   ln+kv+pred:    and predictor A's r rows (the MLP lookahead) as rows [3d, 3d + r) of y
//   plain 3d+r:    a plain GEMV over as many rows as ln+kv+pred reads
//   … gw:          the ln forms with γ in the stored weights (ln.gammaInW: gemv.ts, GAMMA IN W); γ = 1
//                  here, so W∘γ = W and the same c1, c2 serve
//
//   npx tsc -p . && node bench/qkv_probe.mjs        # on the GPU host (carry dist)
// QP_DIST (another build's dist folder), QP_D (4096), QP_R (rank: round(1000 d / 12288) to a multiple of 16, as the bench's predictors), QP_POS (150),
// QP_SHAPES (e.g. 4x64p2,8x32p3: also the two gw forms at these shapes, rows a workgroup x threads a row, rows a thread)
import { fileURLToPath } from 'node:url';

const dist = process.env.QP_DIST ?? fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const { Kernels } = await import(`${dist}/src/backend/webgpu/ops.js`);
const { GpuTimer } = await import(`${dist}/src/bench/gpu-timer.js`);

const D = Number(process.env.QP_D ?? 4096);
const R = Number(process.env.QP_R ?? Math.ceil((1000 * D) / 12288 / 16) * 16);
const POS = Number(process.env.QP_POS ?? 150), MAXPOS = 2048;
const gpu = await openGpu({});
const dev = gpu.device;
const k = new Kernels(gpu);
const MIB = 1 << 20;
const COPIES = Math.max(3, Math.ceil((512 * MIB) / (3 * D * D * 2)));
const own = [], fillOwn = [];
const vec = (n, val = null) => {
  const b = k.buffer(n * 4, 'v');
  dev.queue.writeBuffer(b, 0, Float32Array.from({ length: n }, () => val ?? Math.random() - 0.5));
  return b;
};
const layers = Array.from({ length: COPIES }, (_, i) => {
  const W = k.matrix(3 * D, D, `qkv${i}`), A = k.matrix(R, D, `A${i}`), Wp = k.matrix(3 * D + R, D, `qkvA${i}`);
  return { W, A, Wp, b: vec(3 * D), gamma: vec(D, 1), beta: vec(D), c: k.buffer(2 * 3 * D * 4, 'c'), cp: k.buffer(2 * (3 * D + R) * 4, 'cp'), kc: k.buffer(MAXPOS * D * 4, 'k'), vc: k.buffer(MAXPOS * D * 4, 'v') };
});
const x = vec(D), y = k.buffer((3 * D + R + 64) * 4, 'y');
const step = k.buffer(16, 'step');
dev.queue.writeBuffer(step, 0, Uint32Array.from([POS, 0, 0, 0]));
{
  const enc = dev.createCommandEncoder();
  const ds = layers.flatMap((l, i) => [...k.fillMatrix(l.W, 3 * i + 1, 0.02, fillOwn), ...k.fillMatrix(l.A, 3 * i + 2, 0.02, fillOwn), ...k.fillMatrix(l.Wp, 3 * i + 3, 0.02, fillOwn)]);
  k.encode(enc, ds.map((d) => ({ d })));
  dev.queue.submit([enc.finish()]);
  await dev.queue.onSubmittedWorkDone();
  // c1 = W γ, c2 = W β + b: over qkv's rows, and (for the pred form) over qkv's then A's rows
  const enc2 = dev.createCommandEncoder();
  k.encode(enc2, layers.flatMap((l) => [
    ...k.foldLayerNorm({ W: l.W, gamma: l.gamma, beta: l.beta, bias: l.b, c: l.c }, fillOwn),
    ...k.foldLayerNorm({ W: l.Wp, gamma: l.gamma, beta: l.beta, bias: null, c: l.cp }, fillOwn),
  ]).map((d) => ({ d })));
  dev.queue.submit([enc2.finish()]);
  await dev.queue.onSubmittedWorkDone();
}
const forms = {
  plain: (l) => k.linear({ W: l.W, x, y, T: 1, bias: l.b }, own),
  ln: (l) => k.linear({ W: l.W, x, y, T: 1, ln: { gamma: l.gamma, c: l.c, eps: 1e-5 } }, own),
  'ln+kv': (l) => k.linear({ W: l.W, x, y, T: 1, ln: { gamma: l.gamma, c: l.c, eps: 1e-5 }, kv: { step, k: l.kc, v: l.vc } }, own),
  'ln+kv+pred': (l) => k.linear({ W: l.W, x, y, T: 1, ln: { gamma: l.gamma, c: l.cp, eps: 1e-5 }, kv: { step, k: l.kc, v: l.vc, pred: l.A } }, own),
  'plain 3d+r': (l) => k.linear({ W: l.Wp, x, y, T: 1 }, own),
  'ln gw': (l) => k.linear({ W: l.W, x, y, T: 1, ln: { gamma: l.gamma, c: l.c, eps: 1e-5, gammaInW: true } }, own),
  'ln+kv+pred gw': (l) => k.linear({ W: l.W, x, y, T: 1, ln: { gamma: l.gamma, c: l.cp, eps: 1e-5, gammaInW: true }, kv: { step, k: l.kc, v: l.vc, pred: l.A } }, own),
};
for (const sh of (process.env.QP_SHAPES ?? '').split(',').filter(Boolean)) {
  const m = /^(\d+)x(\d+)p(\d+)$/.exec(sh);
  if (!m) { console.error(`qkv_probe: bad shape ${sh} (want e.g. 4x64p2)`); process.exit(2); }
  const shape = { rows: Number(m[1]), tpr: Number(m[2]), rpt: Number(m[3]) };
  forms[`ln gw ${sh}`] = (l) => k.linear({ W: l.W, x, y, T: 1, ln: { gamma: l.gamma, c: l.c, eps: 1e-5, gammaInW: true }, shape }, own);
  forms[`ln+kv+pred gw ${sh}`] = (l) => k.linear({ W: l.W, x, y, T: 1, ln: { gamma: l.gamma, c: l.cp, eps: 1e-5, gammaInW: true }, kv: { step, k: l.kc, v: l.vc, pred: l.A }, shape }, own);
}
const timer = new GpuTimer(gpu, { targetMs: 20, samples: 7 });
console.log(JSON.stringify({ adapter: gpu.adapterName, D, R, POS, COPIES }));
const rows = [];
for (const [name, f] of Object.entries(forms)) {
  const insts = layers.map(f);
  const r = await timer.time(insts);
  rows.push([name, r.us, insts[0].map((d) => `${d.label} ${d.wg.join('x')}`).join(', ')]);
}
console.log('form | µs a GEMV | dispatches');
for (const [n, us, ds] of rows) console.log(`${n} | ${us.toFixed(2)} | ${ds}`);

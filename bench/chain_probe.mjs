// Probe: can one dispatch run a chain of dependent GEMVs faster than one dispatch per GEMV?
//
// A decode step is ~6 dependent dispatches a layer; each pays a ramp and a drain (docs/benchmarks.md:
// ~3 µs beyond its bytes, and a 32 MiB read in one dispatch reaches only ~70 % of the card's rate).
// Here the four GEMVs of NL OPT layers (qkv 3d×d, o d×d, fc1 4d×d, fc2 d×4d; each stage reads the
// first K outputs of the one before) run
//   sep:   one dispatch per GEMV in one compute pass (what the engine does now);
//   chain: ONE dispatch. Each workgroup takes a logical id from an atomic counter (so every workgroup
//          of stage s has started before any of stage s + 1 gets an id: a waiting workgroup waits only
//          on running ones, never on one that is not yet scheduled), issues its weight loads, then
//          waits until stage s − 1's done-counter is full, then reads x and finishes. Weight loads
//          of the next stage overlap the drain of the one before.
//   tag:   as chain, but the outputs are stored as atomic words whose low 8 mantissa bits carry the
//          step's tag and readers spin per word until the tag matches: correct under relaxed atomics
//          alone (the done-counter only saves spinning), at 16 bits of mantissa for activations.
// Every mode's output is checked against sep's, and the GPU time (timestamps around the pass) is
// compared with the bytes read at the card's read rate.
//
//   npx tsc -p . && node bench/chain_probe.mjs          # on the GPU host (carry dist)
// CP_D (4096), CP_LAYERS (4), CP_REPS (7 samples, the first dropped), CP_ITER (30 chains a sample),
// CP_MODES (sep,chain,tag), CP_STAGE (0), CP_BACKOFF (0)
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);

const d = Number(process.env.CP_D ?? 4096);
const NL = Number(process.env.CP_LAYERS ?? 4);
const REPS = Number(process.env.CP_REPS ?? 7);
const MODES = (process.env.CP_MODES ?? 'sep,chain,tag').split(',');
const gpu = await openGpu({});
const dev = gpu.device;
const WG = 256;
const WBYTES = 65536;
// x staged in workgroup memory as packed halves (tag mode always; else CP_STAGE=1), or read from
// the activation buffer in the dot loop as the engine's GEMVs do (CP_STAGE=0, default).
const STAGE = process.env.CP_STAGE === '1';
const BACKOFF = Number(process.env.CP_BACKOFF ?? 0);
// Blocks of 64 KiB of weights a workgroup (CP_NB, default 2): only the first is loaded before the wait.
const NB = Number(process.env.CP_NB ?? 2);
// Subgroup reductions (subgroups of 32, NVIDIA) where every row has a multiple of 32 lanes (d >= 4096).
const SG = gpu.subgroups && d >= 4096 && process.env.CP_SG !== '0'; // weight bytes a workgroup: 16 loads of 16 B a thread

// Matrices: 0 qkv (3d, d), 1 o (d, d), 2 fc1 (4d, d), 3 fc2 (d, 4d). Each buffer holds NL layers.
const mats = [{ rows: 3 * d, K: d }, { rows: d, K: d }, { rows: 4 * d, K: d }, { rows: d, K: 4 * d }];
const stages = [];
let wgStart = 0, actOff = 0;
const inOff0 = 0;
actOff = d; // act[0..d) holds the chain's input
let prevOut = inOff0;
for (let l = 0; l < NL; l++) {
  for (let m = 0; m < 4; m++) {
    const { rows, K } = mats[m];
    const rw = WBYTES / (K * 2);
    const nwg = rows / rw / NB;
    stages.push({ mat: m, layer: l, K, rows, nwg, wgStart, inOff: prevOut, outOff: actOff });
    prevOut = actOff;
    wgStart += nwg;
    actOff += rows;
  }
}
const S = stages.length, totalWg = wgStart, actLen = actOff;

// float -> IEEE half bits (round to nearest; the values here are normal and small).
const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
function half(v) {
  f32[0] = v;
  const x = u32[0], sign = (x >>> 16) & 0x8000, e = ((x >>> 23) & 0xff) - 112, m = x & 0x7fffff;
  if (e <= 0) return sign;
  return sign | (e << 10) | ((m + 0x1000) >>> 13);
}
// Uniform in [-a, a], a = sqrt(3 / K): each output keeps the input's scale along the chain. One
// random 32 MiB block, written over the whole buffer (its content does not matter for speed, and
// every mode reads the same weights).
function fill(buf, bytes, K) {
  const a = Math.sqrt(3 / K), chunk = 32 << 20;
  const h = new Uint16Array(chunk / 2).map(() => half((Math.random() * 2 - 1) * a));
  for (let off = 0; off < bytes; off += chunk) dev.queue.writeBuffer(buf, off, h, 0, Math.min(chunk, bytes - off) / 2);
}
const W = mats.map((m) => {
  const bytes = NL * m.rows * m.K * 2;
  const b = dev.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  fill(b, bytes, m.K);
  return b;
});
const weightBytes = mats.reduce((s, m) => s + NL * m.rows * m.K * 2, 0);
const act = dev.createBuffer({ size: actLen * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
const x0 = new Float32Array(d).map(() => Math.random() * 2 - 1);
const table = new Uint32Array(S * 8);
stages.forEach((s, i) => table.set([s.wgStart, s.mat, s.layer, s.K, s.rows, s.inOff, s.outOff, s.nwg], i * 8));
const tbl = dev.createBuffer({ size: table.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
dev.queue.writeBuffer(tbl, 0, table);
const ctr = dev.createBuffer({ size: (S + 4) * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });

function wgsl(mode) {
  const tag = mode === 'tag';
  const fn = (m) => {
    const { K } = mats[m];
    const RW = WBYTES / (K * 2), LANES = WG / RW, C = K / 8; // rows a wg, lanes a row, chunks a row
    const loads = Array.from({ length: 16 }, (_, i) => `let w${i} = W${m}[base + lane + ${i * LANES}u];`).join('\n  ');
    const dots = Array.from({ length: 16 }, (_, i) => `acc += dot8(w${i}, (lane + ${i * LANES}u) * 8u);`).join('\n  ');
    return `
fn run${m}(s: u32, lw: u32, lid: u32) {
  let lane = lid % ${LANES}u;
  // NB blocks of ${RW} rows: the first block's weights are loaded before the wait for x.
  for (var b = 0u; b < ${NB}u; b++) {
  let row = (lw * ${NB}u + b) * ${RW}u + lid / ${LANES}u;
  let base = (tbv(s * 8u + 2u) * ${mats[m].rows}u + row) * ${C}u;
  ${loads}
  if (b == 0u) { waitInput(s, lid, ${K}u); }
  var acc = 0.0;
  ${dots}
  ${SG ? `// The row's sum: subgroups of 32 lanes (LANES = ${LANES}, a multiple of 32), then across them.
  let sum = subgroupAdd(acc);
  if (lid % 32u == 0u) { red[lid / 32u] = sum; }
  workgroupBarrier();
  if (lane == 0u) {
    var t = 0.0;
    for (var j = 0u; j < ${LANES / 32}u; j++) { t += red[lid / 32u + j]; }
    stx(tbv(s * 8u + 6u) + row, t);
  }
  workgroupBarrier();` : `red[lid] = acc;
  workgroupBarrier();
  for (var o = ${LANES / 2}u; o > 0u; o >>= 1u) {
    if (lane < o) { red[lid] += red[lid + o]; }
    workgroupBarrier();
  }
  if (lane == 0u) { stx(tbv(s * 8u + 6u) + row, red[lid]); }
  workgroupBarrier();`}
  }
  signal(s, lid);
}`;
  };
  return `
${SG ? 'enable subgroups;' : ''}
struct P { stage: u32, mode: u32, tag: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W0: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> W1: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> W2: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> W3: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> act: array<${tag ? 'atomic<u32>' : 'f32'}>;
@group(0) @binding(6) var<uniform> tb: array<vec4<u32>, ${2 * S}>;
fn tbv(i: u32) -> u32 { return tb[i / 4u][i % 4u]; }
@group(0) @binding(7) var<storage, read_write> ctr: array<atomic<u32>>;
var<workgroup> red: array<f32, ${SG ? WG / 32 : WG}>;
// x staged as f16 (the stage's whole input: up to 4d halves, 32 KiB at d = 4096).
var<workgroup> xs: array<vec2<u32>, ${d}>;   // packed halves (no shader-f16 on Dawn/NVIDIA here)
var<workgroup> sid: vec2<u32>;
fn w8(w: vec4<u32>) -> array<vec4<f32>, 2> {
  return array<vec4<f32>, 2>(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)), vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)));
}
var<private> xo: u32;
fn dot8(w: vec4<u32>, k: u32) -> f32 {
  let v = w8(w);
  ${STAGE || tag ? '' : `let i = xo + k;
  return dot(v[0], vec4<f32>(act[i], act[i + 1u], act[i + 2u], act[i + 3u])) + dot(v[1], vec4<f32>(act[i + 4u], act[i + 5u], act[i + 6u], act[i + 7u]));`}
  let a = xs[k / 4u]; let b = xs[k / 4u + 1u];
  return dot(v[0], vec4<f32>(unpack2x16float(a.x), unpack2x16float(a.y))) + dot(v[1], vec4<f32>(unpack2x16float(b.x), unpack2x16float(b.y)));
}
fn ldx(i: u32) -> f32 {
  ${tag ? `// A bounded spin: a word that never gets its tag is counted (ctr[S + 1]) instead of hanging.
  for (var n = 0u; n < (1u << 24u); n++) {
    let v = atomicLoad(&act[i]);
    if ((v & 0xffu) == p.tag) { return bitcast<f32>(v & 0xffffff00u); }
  }
  atomicAdd(&ctr[${S + 1}u], 1u);
  return 0.0;` : 'return act[i];'}
}
fn stx(i: u32, v: f32) {
  ${tag ? 'atomicStore(&act[i], (bitcast<u32>(v) & 0xffffff00u) | p.tag);' : 'act[i] = v;'}
}
// x into workgroup memory, after the stage before has finished (chain) or at once (sep: the
// dispatch boundary orders it).
fn waitInput(s: u32, lid: u32, K: u32) {
  if (p.mode == 1u && s > 0u) {
    if (lid == 0u) {
      let need = tbv((s - 1u) * 8u + 7u);
      // Poll with a pause between loads (BACKOFF rounds of dependent ALU work) so that a thousand
      // waiting workgroups do not hammer the counter's L2 line that producers are adding to.
      var z = lid;
      for (var n = 0u; n < (1u << 24u); n++) {
        if (atomicLoad(&ctr[s]) >= need) { break; }
        for (var b = 0u; b < ${BACKOFF}u; b++) { z = z * 1664525u + 1013904223u; }
      }
      if (z == 0xdeadbeefu) { atomicAdd(&ctr[${S + 2}u], 1u); }
    }
    workgroupBarrier();
  }
  let inOff = tbv(s * 8u + 5u);
  xo = inOff;
  ${STAGE || tag ? '' : 'return;'}
  for (var k = lid; k < K / 4u; k += ${WG}u) {
    let i = inOff + 4u * k;
    xs[k] = vec2<u32>(pack2x16float(vec2<f32>(ldx(i), ldx(i + 1u))), pack2x16float(vec2<f32>(ldx(i + 2u), ldx(i + 3u))));
  }
  workgroupBarrier();
}
fn signal(s: u32, lid: u32) {
  if (p.mode == 1u) {
    storageBarrier();
    workgroupBarrier();
    if (lid == 0u) { atomicAdd(&ctr[s + 1u], 1u); }
  }
}
${[0, 1, 2, 3].map(fn).join('\n')}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  if (lid == 0u) {
    var id = 0u; var s = p.stage;
    if (p.mode == 1u) {
      id = atomicAdd(&ctr[0], 1u);
      s = 0u;
      loop { if (s + 1u >= ${S}u || tbv((s + 1u) * 8u) > id) { break; } s++; }
    } else {
      id = tbv(s * 8u) + wid.x + wid.y * 65535u;
    }
    sid = vec2<u32>(s, id - tbv(s * 8u));
  }
  let v = workgroupUniformLoad(&sid);
  switch (tbv(v.x * 8u + 1u)) {
    case 0u: { run0(v.x, v.y, lid); }
    case 1u: { run1(v.x, v.y, lid); }
    case 2u: { run2(v.x, v.y, lid); }
    default: { run3(v.x, v.y, lid); }
  }
}`;
}

const ITER = Number(process.env.CP_ITER ?? 30);
const querySet = dev.createQuerySet({ type: 'timestamp', count: 2 });
const qbuf = dev.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
const qread = dev.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
const outRead = dev.createBuffer({ size: actLen * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
const xBufs = Array.from({ length: ITER }, () => dev.createBuffer({ size: d * 4, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST }));

function grid(n) { return n <= 65535 ? [n, 1] : [65535, Math.ceil(n / 65535)]; }

const pipes = new Map();
async function pipeline(mode) {
  if (pipes.has(mode)) return pipes.get(mode);
  dev.pushErrorScope('validation');
  const pipe = dev.createComputePipeline({ layout: 'auto', compute: { module: dev.createShaderModule({ code: wgsl(mode) }), entryPoint: 'main' } });
  const err = await dev.popErrorScope();
  if (err) { console.error(`${mode}: ${err.message.split('\n').slice(0, 4).join(' ')}`); process.exit(1); }
  // Bind groups per (stage, iteration): the uniform holds the stage (sep) and the iteration's tag.
  const bgs = [];
  for (let i = 0; i < ITER; i++) {
    bgs.push(stages.map((_, st) => {
      const u = dev.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
      return { u, bg: dev.createBindGroup({
        layout: pipe.getBindGroupLayout(0),
        entries: [{ binding: 0, resource: { buffer: u } }, ...W.map((b, j) => ({ binding: j + 1, resource: { buffer: b } })),
          { binding: 5, resource: { buffer: act } }, { binding: 6, resource: { buffer: tbl } }, { binding: 7, resource: { buffer: ctr } }],
      }), st };
    }));
  }
  const r = { pipe, bgs };
  pipes.set(mode, r);
  return r;
}

// One timed sample: ITER runs of the whole chain back to back in one submission (each after a clear
// of the counters and a copy of its input), timestamps at the start of the first pass and the end
// of the last; per-run time = span / ITER (the clears and copies between passes included, alike
// for every mode).
async function runMode(mode, rep) {
  const { pipe, bgs } = await pipeline(mode);
  const enc = dev.createCommandEncoder();
  // Tag 0 is never a run's tag: words left by another mode (plain floats) must not pass for fresh.
  if (mode === 'tag' && rep === 0) enc.clearBuffer(act);
  for (let i = 0; i < ITER; i++) {
    const tagV = ((rep * ITER + i) % 255) + 1;
    for (const { u, st } of bgs[i]) dev.queue.writeBuffer(u, 0, new Uint32Array([st, mode === 'sep' ? 0 : 1, tagV, 0]));
    const xin = new Float32Array(x0);
    if (mode === 'tag') { const w = new Uint32Array(xin.buffer); for (let k = 0; k < d; k++) w[k] = (w[k] & 0xffffff00) | tagV; }
    dev.queue.writeBuffer(xBufs[i], 0, xin);
    enc.clearBuffer(ctr);
    enc.copyBufferToBuffer(xBufs[i], 0, act, 0, d * 4);
    const tw = {};
    if (i === 0) tw.beginningOfPassWriteIndex = 0;
    if (i === ITER - 1) tw.endOfPassWriteIndex = 1;
    const pass = enc.beginComputePass(i === 0 || i === ITER - 1 ? { timestampWrites: { querySet, ...tw } } : {});
    pass.setPipeline(pipe);
    if (mode === 'sep') {
      stages.forEach((s, st) => { pass.setBindGroup(0, bgs[i][st].bg); const [gx, gy] = grid(s.nwg); pass.dispatchWorkgroups(gx, gy); });
    } else {
      pass.setBindGroup(0, bgs[i][0].bg);
      const [gx, gy] = grid(totalWg);
      pass.dispatchWorkgroups(gx, gy);
    }
    pass.end();
  }
  enc.resolveQuerySet(querySet, 0, 2, qbuf, 0);
  enc.copyBufferToBuffer(qbuf, 0, qread, 0, 16);
  enc.copyBufferToBuffer(act, 0, outRead, 0, actLen * 4);
  dev.queue.submit([enc.finish()]);
  await qread.mapAsync(GPUMapMode.READ);
  const t = new BigUint64Array(qread.getMappedRange().slice(0));
  qread.unmap();
  await outRead.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(outRead.getMappedRange().slice(0));
  outRead.unmap();
  return { us: Number(t[1] - t[0]) / 1000 / ITER, out: out.slice(stages[S - 1].outOff, stages[S - 1].outOff + d) };
}

console.log(`adapter ${gpu.adapterName}; d ${d}, ${NL} layers, ${S} GEMVs, ${totalWg} workgroups, ${(weightBytes / 1e6).toFixed(0)} MB of weights`);
const results = {};
let ref = null;
for (const mode of MODES) {
  const us = [];
  let maxErr = 0;
  for (let r = 0; r < REPS; r++) {
    const { us: t, out } = await runMode(mode, r);
    if (r > 0) us.push(t);
    if (mode === 'sep' && !ref) ref = out;
    if (ref) {
      let e2 = 0, r2 = 0;
      for (let i = 0; i < d; i++) { e2 += (out[i] - ref[i]) ** 2; r2 += ref[i] ** 2; }
      maxErr = Math.max(maxErr, Math.sqrt(e2 / r2));
    }
  }
  us.sort((a, b) => a - b);
  const med = us[us.length >> 1];
  results[mode] = med;
  console.log(`${mode.padEnd(6)} median ${med.toFixed(1)} µs (min ${us[0].toFixed(1)}), ${(weightBytes / med / 1e3).toFixed(0)} GB/s, ${(med / NL).toFixed(1)} µs a layer, worst ‖out − sep‖/‖sep‖ ${maxErr.toExponential(2)}`);
}
dev.destroy();
process.exit(0);

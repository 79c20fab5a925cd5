// Probe: what does it cost to sum the sparse fc2's per-block partials in the SAME dispatch as fc1,
// with integer atomics instead of a second dispatch (fc2_direct, ~10 µs alone at OPT-6.7B, 10 %)?
//
// NBLK workgroups of 512 threads (one per block of 64 neurons; 256 at opt-6.7b) each read ROWS rows of
// fc2ᵀ (d halves a row, 16-byte chunks) scaled by h, and add the d-vector into the token's output:
//   none:  the rows' reads and sums only (each thread keeps its sums; nothing summed across blocks)
//   store: each block stores its partial d-vector (what a partial-sum form writes; no combine)
//   a1s:   one i32 fixed-point atomicAdd an element, a thread's 8 columns contiguous (strided warps)
//   a1c:   the same through workgroup memory: thread lid adds columns lid, lid + 512, ... (coalesced)
//   tree:  no integer sums: each block stores its partial as self-marking words (bits + 1, as the
//          fused attention's partials), the last block of each group of AP_G (16) sums its group's
//          partials (in block order) into a group partial, the last group sums those into x
//   store+reduce: store's partials, then a second dispatch sums them into x (a workgroup of 256
//          threads = AP_CW (8) vec4 columns × AP_SG (32) slot groups, a tree over the groups);
//          reduce: that second dispatch alone
//   a2c:   exact 64-bit fixed point (2^-24) as lo (u32, its carry from the returned old value) + hi
//          words, coalesced: order-independent, so deterministic
// Every atomic form ends as the engine's would: the last block to finish (a done counter) turns the
// sums into floats, adds them into x and zeroes the accumulators. a1c and a2c are checked against the
// CPU sum of store's partials.
//
//   npx tsc -p . && node bench/atomic_probe.mjs        # on the GPU host (carry dist)
// AP_D (4096), AP_NBLK (256), AP_ROWS (6), AP_COPIES (8), AP_G (16), AP_CW (8), AP_U (4),
// AP_MODES (default none,store,store+reduce,reduce; also a1s, a1c, a2c, tree). The checks compare with
// store's partials, so list store before the modes to check. a1c / a2c / tree keep d floats in
// workgroup memory: 16 KiB at d = 4096, more than WebGPU's default limit (the H200 allows it).
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const { GpuTimer } = await import(`${dist}/src/bench/gpu-timer.js`);

const D = Number(process.env.AP_D ?? 4096), NBLK = Number(process.env.AP_NBLK ?? 256), ROWS = Number(process.env.AP_ROWS ?? 6);
const COPIES = Number(process.env.AP_COPIES ?? 8);
const MODES = (process.env.AP_MODES ?? 'none,store,store+reduce,reduce').split(',');
const WG = 512, D8 = D / 8;
const gpu = await openGpu({});
const dev = gpu.device;
const S = 24;
const G = Number(process.env.AP_G ?? 16), NG = Math.ceil(NBLK / G); // fixed-point fraction bits of a2c (a1*: 16)

const rowsAll = NBLK * ROWS;
const wBytes = rowsAll * D * 2;
const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
const W = dev.createBuffer({ size: wBytes * COPIES, usage });
{
  const h = new Uint16Array(wBytes / 2);
  // halves in [-1, 1): sign, exponent 14 (0.5..1) or smaller, random mantissa
  for (let i = 0; i < h.length; i++) h[i] = ((Math.random() < 0.5 ? 0x8000 : 0) | ((10 + ((Math.random() * 4) | 0)) << 10) | ((Math.random() * 1024) | 0));
  for (let c = 0; c < COPIES; c++) dev.queue.writeBuffer(W, c * wBytes, h);
}
const part = dev.createBuffer({ size: NBLK * D * 4, usage });
const acc = dev.createBuffer({ size: Math.max(2 * D, (NBLK + NG) * D) * 4, usage });
const done = dev.createBuffer({ size: 4 * (NG + 4), usage });
const x = dev.createBuffer({ size: D * 4, usage });

function wgsl(mode) {
  const atom = mode.startsWith('a');
  return `
struct P { row0: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> part: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> acc: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read_write> done: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read_write> x: array<f32>;
var<workgroup> st: array<f32, ${D}>;
var<workgroup> last: u32;
var<workgroup> sink: u32;
fn lo(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn hi(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)); }
// exact: v·2^${S} rounded, as 64 bits (hi, lo), added with the carry taken from lo's old value. The
// split is exact in f32: hq·2^32 + r = s with |r| <= 2^31 (r keeps s's low bits, at most 24 of them).
fn add64(i: u32, v: f32) -> u32 {
  let s = round(v * ${2 ** S}.0);
  var hq = round(s / 4294967296.0);
  var r = s - hq * 4294967296.0;
  if (r >= 2147483648.0) { r -= 4294967296.0; hq += 1.0; }
  let l = bitcast<u32>(i32(r));
  let old = atomicAdd(&acc[2u * i], l);
  let carry = select(0u, 1u, old + l < old);
  return atomicAdd(&acc[2u * i + 1u], bitcast<u32>(i32(hq) + select(0, -1, r < 0.0)) + carry);
}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = wid.x;
  var ack = 0u;
  for (var c = lid; c < ${D8}u; c += ${WG}u) {
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0);
    ${Array.from({ length: ROWS }, (_, q) => `let w${q} = W[(p.row0 + b * ${ROWS}u + ${q}u) * ${D8}u + c];`).join('\n    ')}
    ${Array.from({ length: ROWS }, (_, q) => `a0 += ${(0.01 * (q + 1)).toFixed(2)} * lo(w${q}); a1 += ${(0.01 * (q + 1)).toFixed(2)} * hi(w${q});`).join('\n    ')}
    ${mode === 'none' ? 'if (a0.x == 12345.0 && a1.y == 1.0) { ack += 1u; }'
    : mode === 'store' ? 'part[(b * ' + D8 + 'u + c) * 2u] = a0; part[(b * ' + D8 + 'u + c) * 2u + 1u] = a1;'
    : mode === 'a1s' ? Array.from({ length: 8 }, (_, e) => `ack |= atomicAdd(&acc[c * 8u + ${e}u], bitcast<u32>(i32(round(${e < 4 ? `a0[${e}]` : `a1[${e - 4}]`} * 65536.0))));`).join('\n    ')
    : Array.from({ length: 8 }, (_, e) => `st[c * 8u + ${e}u] = ${e < 4 ? `a0[${e}]` : `a1[${e - 4}]`};`).join(' ')}
  }
  ${mode === 'a1c' || mode === 'a2c' ? `workgroupBarrier();
  for (var i = lid; i < ${D}u; i += ${WG}u) { ${mode === 'a1c' ? 'ack |= atomicAdd(&acc[i], bitcast<u32>(i32(round(st[i] * 65536.0))));' : 'ack |= add64(i, st[i]);'} }` : ''}
  // the returned values are used: every add has landed before this workgroup counts itself done
  if (ack == 0xfffffffeu) { sink = ack; }
  ${atom ? `workgroupBarrier();
  if (lid == 0u) { last = select(0u, 1u, atomicAdd(&done[0], 1u) == ${NBLK - 1}u); }
  if (workgroupUniformLoad(&last) == 1u) {
    for (var i = lid; i < ${D}u; i += ${WG}u) {
      ${mode === 'a2c' ? `let l = atomicExchange(&acc[2u * i], 0u); let h = bitcast<i32>(atomicExchange(&acc[2u * i + 1u], 0u));
      let ls = bitcast<i32>(l);   // lo as signed, hi one up where it is negative: no cancellation
      x[i] += f32(h + select(0, 1, ls < 0)) * ${2 ** (32 - S)}.0 + f32(ls) * ${2 ** -S};` : `x[i] += f32(bitcast<i32>(atomicExchange(&acc[i], 0u))) / 65536.0;`}
    }
    if (lid == 0u) { atomicStore(&done[0], 0u); }
  }` : `if (ack == 7u) { x[lid] = 1.0; }`}
}`;
}

function treeWgsl() {
  const M = D / WG; // columns a thread in the sums
  const takeN = (base, n) => `{
      var v: array<u32, ${n}>;
      ${Array.from({ length: n }, (_, k) => `v[${k}] = atomicLoad(&acc[${base(k)}]);`).join(' ')}
      var s = 0.0;
      ${Array.from({ length: n }, (_, k) => `for (var q = 0u; q < 65536u && v[${k}] == 0u; q++) { v[${k}] = atomicLoad(&acc[${base(k)}]); } s += bitcast<f32>(v[${k}] - 1u); atomicStore(&acc[${base(k)}], 0u);`).join('\n      ')}
      r = s;
    }`;
  return `
struct P { row0: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> acc: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read_write> done: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read_write> x: array<f32>;
var<workgroup> st: array<f32, ${D}>;
var<workgroup> last: u32;
fn lo(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn hi(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)); }
fn put(i: u32, x: f32) { let u = bitcast<u32>(x); atomicStore(&acc[i], select(u, 0xfffffffeu, u == 0xffffffffu) + 1u); }
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = wid.x;
  let g = b / ${G}u;
  for (var c = lid; c < ${D8}u; c += ${WG}u) {
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0);
    ${Array.from({ length: ROWS }, (_, q) => `let w${q} = W[(p.row0 + b * ${ROWS}u + ${q}u) * ${D8}u + c];`).join('\n    ')}
    ${Array.from({ length: ROWS }, (_, q) => `a0 += ${(0.01 * (q + 1)).toFixed(2)} * lo(w${q}); a1 += ${(0.01 * (q + 1)).toFixed(2)} * hi(w${q});`).join('\n    ')}
    ${Array.from({ length: 8 }, (_, e) => `st[c * 8u + ${e}u] = ${e < 4 ? `a0[${e}]` : `a1[${e - 4}]`};`).join(' ')}
  }
  workgroupBarrier();
  for (var i = lid; i < ${D}u; i += ${WG}u) { put(b * ${D}u + i, st[i]); }
  workgroupBarrier();
  let gn = min(${G}u, ${NBLK}u - g * ${G}u);
  if (lid == 0u) { let l = atomicAdd(&done[g], 1u) == gn - 1u; if (l) { atomicStore(&done[g], 0u); } last = select(0u, 1u, l); }
  if (workgroupUniformLoad(&last) == 0u) { return; }
  // the group's partials, in block order (a group of ${G}; the last may be short: its missing blocks read as 0 words... not here: NBLK % G == 0)
  for (var i = lid; i < ${D}u; i += ${WG}u) {
    var r = 0.0;
    ${takeN((k) => `(g * ${G}u + ${k}u) * ${D}u + i`, G)}
    put((${NBLK}u + g) * ${D}u + i, r);
  }
  workgroupBarrier();
  if (lid == 0u) { let l = atomicAdd(&done[${NG}u], 1u) == ${NG - 1}u; if (l) { atomicStore(&done[${NG}u], 0u); } last = select(0u, 1u, l); }
  if (workgroupUniformLoad(&last) == 0u) { return; }
  for (var i = lid; i < ${D}u; i += ${WG}u) {
    var r = 0.0;
    ${takeN((k) => `(${NBLK}u + ${k}u) * ${D}u + i`, NG)}
    x[i] += r;
  }
}`;
}

const CW = Number(process.env.AP_CW ?? 8), SG = 256 / CW, U = Number(process.env.AP_U ?? 4);
function reduceWgsl() {
  return `
@group(0) @binding(2) var<storage, read> part: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> x: array<vec4<f32>>;
var<workgroup> red: array<vec4<f32>, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let cw = lid % ${CW}u;
  let sg = lid / ${CW}u;
  let c = min(wid.x * ${CW}u + cw, ${D / 4 - 1}u);
  var a = array<vec4<f32>, ${U}>();
  for (var s = sg; s < ${NBLK}u; s += ${SG * U}u) {
    ${Array.from({ length: U }, (_, u) => `if (s + ${u * SG}u < ${NBLK}u) { a[${u}] += part[(s + ${u * SG}u) * ${D / 4}u + c]; }`).join('\n    ')}
  }
  red[lid] = ${Array.from({ length: U }, (_, u) => `a[${u}]`).join(' + ')};
  workgroupBarrier();
  for (var st = ${SG / 2}u; st > 0u; st >>= 1u) {
    if (sg < st) { red[lid] += red[lid + st * ${CW}u]; }
    workgroupBarrier();
  }
  if (sg == 0u && wid.x * ${CW}u + cw < ${D / 4}u) { x[c] += red[cw]; }
}`;
}

if (NBLK % G) throw new Error('AP_NBLK must be a multiple of AP_G');
const res = [];
let rp;
let partials = null;
for (const mode of MODES) {
  const base = mode === 'store+reduce' || mode === 'reduce' ? 'store' : mode;
  const module = dev.createShaderModule({ code: base === 'tree' ? treeWgsl() : wgsl(base) });
  const info = await module.getCompilationInfo();
  for (const m of info.messages) if (m.type === 'error') throw new Error(`${mode}: ${m.message} (line ${m.lineNum})`);
  const pipeline = dev.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const inst = [];
  for (let c = 0; c < COPIES; c++) {
    const u = dev.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    dev.queue.writeBuffer(u, 0, new Uint32Array([c * rowsAll, 0, 0, 0]));
    const entries = [{ binding: 0, resource: { buffer: u } }, { binding: 1, resource: { buffer: W } }];
    const used = { 'store+reduce': [2, 5], reduce: [2, 5], store: [2, 5], none: [5], a1s: [3, 4, 5], a1c: [3, 4, 5], a2c: [3, 4, 5], tree: [3, 4, 5] }[mode];
    for (const [bnd, buf] of [[2, part], [3, acc], [4, done], [5, x]]) if (used.includes(bnd)) entries.push({ binding: bnd, resource: { buffer: buf } });
    const ds = [{ label: mode, pipeline, bind: dev.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries }), wg: [NBLK, 1, 1] }];
    if (mode === 'store+reduce' || mode === 'reduce') {
      rp ??= await (async () => { const m = dev.createShaderModule({ code: reduceWgsl() }); for (const e of (await m.getCompilationInfo()).messages) if (e.type === 'error') throw new Error(`reduce: ${e.message} (line ${e.lineNum})`); return dev.createComputePipeline({ layout: 'auto', compute: { module: m, entryPoint: 'main' } }); })();
      const rd = { label: 'reduce', pipeline: rp, bind: dev.createBindGroup({ layout: rp.getBindGroupLayout(0), entries: [{ binding: 2, resource: { buffer: part } }, { binding: 5, resource: { buffer: x } }] }), wg: [Math.ceil(D / 4 / CW), 1, 1] };
      if (mode === 'reduce') ds.length = 0;
      ds.push(rd);
    }
    inst.push(ds);
  }
  // correctness: one run of copy 0 from zeroed x / acc
  dev.queue.writeBuffer(x, 0, new Float32Array(D));
  dev.queue.writeBuffer(acc, 0, new Uint32Array(acc.size / 4));
  dev.queue.writeBuffer(done, 0, new Uint32Array(done.size / 4));
  const enc = dev.createCommandEncoder();
  const pass = enc.beginComputePass();
  for (const d0 of mode === 'reduce' ? [] : inst[0]) { pass.setPipeline(d0.pipeline); pass.setBindGroup(0, d0.bind); pass.dispatchWorkgroups(...d0.wg); }
  pass.end();
  const rb = dev.createBuffer({ size: Math.max(D * 4, mode === 'store' ? NBLK * D * 4 : 0), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  enc.copyBufferToBuffer(mode === 'store' ? part : x, 0, rb, 0, mode === 'store' ? NBLK * D * 4 : D * 4);
  dev.queue.submit([enc.finish()]);
  await rb.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(rb.getMappedRange().slice(0));
  rb.unmap();
  let err = '';
  if (mode === 'store') {
    partials = new Float64Array(D);
    for (let b = 0; b < NBLK; b++) for (let i = 0; i < D; i++) partials[i] += out[b * D + i];
  } else if ((mode.startsWith('a') || mode === 'tree' || mode === 'store+reduce') && partials) {
    let m = 0, scale = 0;
    for (let i = 0; i < D; i++) { m = Math.max(m, Math.abs(out[i] - partials[i])); scale = Math.max(scale, Math.abs(partials[i])); }
    err = `max |x − Σ partials| ${m.toExponential(2)} (max |Σ| ${scale.toFixed(2)})`;
  }
  const t = await new GpuTimer(gpu, { targetMs: 5, samples: 7 }).time(inst);
  res.push({ mode, us: t.us.toFixed(2), gbps: ((wBytes / t.us) / 1e3).toFixed(0), err });
  console.log(JSON.stringify(res.at(-1)));
}
console.log(`\nd ${D}, ${NBLK} blocks x ${ROWS} rows (${(wBytes / 2 ** 20).toFixed(1)} MiB a copy, ${COPIES} copies), ${gpu.adapterName}`);
console.log('| mode | µs | GB/s of rows | check |\n|---|---|---|---|');
for (const r of res) console.log(`| ${r.mode} | ${r.us} | ${r.gbps} | ${r.err} |`);

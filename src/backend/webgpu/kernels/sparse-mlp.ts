import { enables, weightDecl, wmode, type KernelFeatures, halves8Wgsl } from './common.js';

/**
 * Second half of the sparse MLP: y = Σ_j h_j · W2t[sel_j] over the selected neurons, with W2t = fc2
 * transposed (f, d) so a neuron is one contiguous row. WGSL has no float atomics, so:
 * - fc2_partial: workgroup (column block, slice s, token t) sums its slice of the selected rows into
 *   partial[t, slot, :] (slot = part * S + s). Neurons with h_j = 0 (ReLU) are skipped: the branch is
 *   uniform over the workgroup, so their rows are never read.
 * - then fc2_sum (below): x[t, i] += b2[i] + Σ_slot partial[t, slot, i] (residual and bias fused).
 * The first half (gathered fc1 with bias + ReLU) is gemv with GATHER. CPU twin: `sparseMlp`.
 */
export const FC2P_WG = 64;
/**
 * How the selected rows are split over workgroups: at most FC2_MAX_SLICES slices of at least
 * FC2_MIN_SLICE_ROWS rows. Each slice's loop is a chain of dependent loads (sel -> row), so short
 * slices (many workgroups in flight) beat long ones: 32-row slices ran OPT-6.7B's 10 % fc2 at
 * ~0.5 TB/s on an H200.
 */
export const FC2_MAX_SLICES = 128;
export const FC2_MIN_SLICE_ROWS = 16;
export const FC2P_PARAMS = ['d4', 'k', 'slice', 'slots', 'slot0', 'selStride', 'row0', 'partRows'] as const;
export const fc2PartialKey = (f: KernelFeatures, wide = false) => `fc2_partial_${wide ? 'w8x4' : wmode(f)}_wg${FC2P_WG}`;

export function fc2PartialWgsl(f: KernelFeatures, wide = false): string {
  return wide ? fc2PartialWideWgsl() : `${enables(f)}
struct P { d4: u32, k: u32, slice: u32, slots: u32, slot0: u32, selStride: u32, row0: u32, partRows: u32 }
@group(0) @binding(0) var<uniform> p: P;
${weightDecl(f, 1, 'W')}
@group(0) @binding(2) var<storage, read> h: array<f32>;
@group(0) @binding(3) var<storage, read> sel: array<u32>;
@group(0) @binding(4) var<storage, read_write> part: array<vec4<f32>>;
@compute @workgroup_size(${FC2P_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let c = wid.x * ${FC2P_WG}u + lid;
  let sl = wid.y;
  let t = wid.z;
  var acc = vec4<f32>(0.0);
  let j1 = min(p.k, (sl + 1u) * p.slice);
  for (var j = sl * p.slice; j < j1; j++) {
    let hv = h[t * p.k + j];
    let idx = sel[t * p.selStride + j];
    if (hv != 0.0 && idx >= p.row0 && idx < p.row0 + p.partRows && c < p.d4) {
      acc += hv * W_4((idx - p.row0) * p.d4 + c);
    }
  }
  if (c < p.d4) { part[(t * p.slots + p.slot0 + sl) * p.d4 + c] = acc; }
}
`;
}

/**
 * The wide form of fc2_partial (rows padded to 8 halves): a thread owns 8 columns, reads them as one
 * 16-byte vec4<u32>, and keeps four selected rows' loads in flight. The narrow form (one 8-byte load
 * per row, each waiting on its sel/h loads) reached ~430 GB/s on an H200.
 * The same partial layout: part[(t * slots + slot) * d4 + c4] as vec4<f32>.
 */
function fc2PartialWideWgsl(): string {
  return `
struct P { d4: u32, k: u32, slice: u32, slots: u32, slot0: u32, selStride: u32, row0: u32, partRows: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> h: array<f32>;
@group(0) @binding(3) var<storage, read> sel: array<u32>;
@group(0) @binding(4) var<storage, read_write> part: array<vec4<f32>>;
${halves8Wgsl()}
@compute @workgroup_size(${FC2P_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let c = wid.x * ${FC2P_WG}u + lid;   // 8-column chunk
  let d8 = p.d4 / 2u;
  let sl = wid.y;
  let t = wid.z;
  let live = c < d8;
  let cc = min(c, d8 - 1u);
  var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0);
  var b0 = vec4<f32>(0.0); var b1 = vec4<f32>(0.0);
  let j1 = min(p.k, (sl + 1u) * p.slice);
  var j = sl * p.slice;
  let hb = t * p.k;
  let sb = t * p.selStride;
  // Rows with h = 0 (ReLU) or outside this weight part are not read: the condition is the same for
  // every thread of the workgroup, so the branch costs no divergence.
  loop {
    if (j + 4u > j1) { break; }
    let i0 = sel[sb + j]; let i1 = sel[sb + j + 1u]; let i2 = sel[sb + j + 2u]; let i3 = sel[sb + j + 3u];
    let h0 = h[hb + j]; let h1 = h[hb + j + 1u]; let h2 = h[hb + j + 2u]; let h3 = h[hb + j + 3u];
    var w0 = vec4<u32>(0u); var w1 = vec4<u32>(0u); var w2 = vec4<u32>(0u); var w3 = vec4<u32>(0u);
    let v0 = h0 != 0.0 && i0 >= p.row0 && i0 < p.row0 + p.partRows;
    let v1 = h1 != 0.0 && i1 >= p.row0 && i1 < p.row0 + p.partRows;
    let v2 = h2 != 0.0 && i2 >= p.row0 && i2 < p.row0 + p.partRows;
    let v3 = h3 != 0.0 && i3 >= p.row0 && i3 < p.row0 + p.partRows;
    if (v0) { w0 = W[(i0 - p.row0) * d8 + cc]; }
    if (v1) { w1 = W[(i1 - p.row0) * d8 + cc]; }
    if (v2) { w2 = W[(i2 - p.row0) * d8 + cc]; }
    if (v3) { w3 = W[(i3 - p.row0) * d8 + cc]; }
    let g0 = select(0.0, h0, v0); let g1 = select(0.0, h1, v1); let g2 = select(0.0, h2, v2); let g3 = select(0.0, h3, v3);
    a0 += g0 * lo(w0) + g1 * lo(w1); a1 += g0 * hi(w0) + g1 * hi(w1);
    b0 += g2 * lo(w2) + g3 * lo(w3); b1 += g2 * hi(w2) + g3 * hi(w3);
    j += 4u;
  }
  for (; j < j1; j++) {
    let i0 = sel[sb + j];
    let h0 = h[hb + j];
    if (h0 != 0.0 && i0 >= p.row0 && i0 < p.row0 + p.partRows) {
      let w0 = W[(i0 - p.row0) * d8 + cc];
      a0 += h0 * lo(w0); a1 += h0 * hi(w0);
    }
  }
  if (live) {
    let o = (t * p.slots + p.slot0 + sl) * p.d4 + 2u * c;
    part[o] = a0 + b0;
    part[o + 1u] = a1 + b1;
  }
}
`;
}

/**
 * One-pass sparse fc2 (`fc2_direct`, wide rows only: padded to 8 halves): x[t, :] += b2 +
 * Σ_j h[t, j] · W2t[sel[t, j], :] with no partial-sum buffer and no reduce dispatch.
 * A workgroup owns a column block of CH 8-half chunks (CH × 16 bytes of each row) for ALL selected
 * rows: thread (rl, ch), lid = rl · CH + ch, sums the rows j ≡ rl (mod RL = W / CH) in rounds of U
 * rows with all U loads in flight (their sel/h loads first; the last round masked rather than a
 * serial tail), then a tree over rl in workgroup memory, and the rl == 0 threads add the block into
 * x (bias and residual fused; x and b2 are loaded before the rows so their latency hides).
 * Every selected row is read once, in CH × 16-byte pieces. Neurons with h = 0 (ReLU) are not read.
 * A matrix split into parts is one dispatch a part, each adding its own rows' share (the bias with
 * the first). The sum order over j is fixed: deterministic.
 * Measured on an H200 (docs/benchmarks.md): more threads a workgroup mattered most (256 threads:
 * 20 µs at OPT-6.7B, 10 %; 512 or 1024: 10.2-10.4), and a subgroupShuffleXor sum instead of the
 * tree was slower (12.5-13.5 µs), so there is none.
 */
/** wg threads, ch 16-byte chunks a row piece, unroll rows in flight a thread. */
export interface Fc2DirectShape { wg: number; ch: number; unroll: number }
/**
 * The shape to use: the fastest of those timed on an H200 (docs/benchmarks.md: 10.2 µs at OPT-6.7B,
 * 10 %, against 18.2 µs for partial sums + reduce; 11.9 against 20.9 at OPT-13B), where the device
 * allows 1024-thread workgroups with 16 KiB of workgroup memory; else 256 threads (13.9 µs).
 */
export function fc2DirectShape(l: { maxComputeInvocationsPerWorkgroup: number; maxComputeWorkgroupSizeX: number; maxComputeWorkgroupStorageSize: number }): Fc2DirectShape {
  const big = l.maxComputeInvocationsPerWorkgroup >= 1024 && l.maxComputeWorkgroupSizeX >= 1024 && l.maxComputeWorkgroupStorageSize >= 1024 * 16;
  return big ? { wg: 1024, ch: 8, unroll: 8 } : { wg: 256, ch: 2, unroll: 16 };
}
export const FC2D_PARAMS = ['d', 'd8', 'k', 'selStride', 'row0', 'partRows', 'bias'] as const;
export const fc2DirectKey = (s: Fc2DirectShape, bias: boolean) => `fc2_direct_w8_wg${s.wg}_ch${s.ch}_u${s.unroll}${bias ? '_bias' : ''}`;

export function fc2DirectWgsl(s: Fc2DirectShape, bias: boolean): string {
  const { wg: W, ch: CH, unroll: U } = s;
  const RL = W / CH;
  if (!Number.isInteger(RL) || RL & (RL - 1)) throw new Error(`fc2_direct: wg / ch must be a power of two (${W} / ${CH})`);
  const rows = Array.from({ length: U }, (_, u) => u);
  return `
struct P { d: u32, d8: u32, k: u32, selStride: u32, row0: u32, partRows: u32, bias: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> h: array<f32>;
@group(0) @binding(3) var<storage, read> sel: array<u32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
${bias ? '@group(0) @binding(5) var<storage, read> b: array<f32>;' : ''}
var<workgroup> red: array<vec4<f32>, ${W}>;
${halves8Wgsl()}
// Sum over rl of v (one vec4 a thread), a tree in workgroup memory; valid in the rl == 0 threads.
fn treeSum(lid: u32, rl: u32, v: vec4<f32>) -> vec4<f32> {
  red[lid] = v;
  workgroupBarrier();
  for (var st = ${RL / 2}u; st > 0u; st >>= 1u) {
    if (rl < st) { red[lid] += red[lid + st * ${CH}u]; }
    workgroupBarrier();
  }
  let r = red[lid % ${CH}u];
  workgroupBarrier();
  return r;
}
@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let ch = lid % ${CH}u;
  let rl = lid / ${CH}u;
  let c = wid.x * ${CH}u + ch;   // 8-column chunk
  let t = wid.y;
  let live = c < p.d8;
  let cc = min(c, p.d8 - 1u);
  let hb = t * p.k;
  let sb = t * p.selStride;
  let r0 = p.row0;
  let r1 = p.row0 + p.partRows;
  let o = t * p.d;
  let c0 = c * 8u;
  // The output's x (and bias) are loaded first: their latency hides under the rows' loads.
  var xo0 = vec4<f32>(0.0); var xo1 = vec4<f32>(0.0);
  if (rl == 0u && live) {
    for (var q = 0u; q < 8u; q++) {
      let i = c0 + q;
      if (i < p.d) {
        var v = x[o + i];
        ${bias ? 'if (p.bias != 0u) { v += b[i]; }' : ''}
        if (q < 4u) { xo0[q] = v; } else { xo1[q - 4u] = v; }
      }
    }
  }
  var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0);
  var b0 = vec4<f32>(0.0); var b1 = vec4<f32>(0.0);
  // Rounds of U rows (j, j + RL, ...), the last one masked: every round has all its loads in flight.
  for (var j = rl; j < p.k; j += ${U * RL}u) {
${rows.map((u) => `    let q${u} = j + ${u * RL}u < p.k;
    var i${u} = 0u; var h${u} = 0.0; if (q${u}) { i${u} = sel[sb + j + ${u * RL}u]; h${u} = h[hb + j + ${u * RL}u]; }`).join('\n')}
${rows.map((u) => `    let v${u} = q${u} && h${u} != 0.0 && i${u} >= r0 && i${u} < r1;
    var w${u} = vec4<u32>(0u); if (v${u}) { w${u} = W[(i${u} - r0) * p.d8 + cc]; }`).join('\n')}
${rows.map((u) => `    { let g = select(0.0, h${u}, v${u}); ${u % 2 ? 'b0 += g * lo(w' + u + '); b1 += g * hi(w' + u + ');' : 'a0 += g * lo(w' + u + '); a1 += g * hi(w' + u + ');'} }`).join('\n')}
  }
  let s0 = treeSum(lid, rl, a0 + b0);
  let s1 = treeSum(lid, rl, a1 + b1);
  if (rl == 0u && live) {
    let r0v = xo0 + s0;
    let r1v = xo1 + s1;
    for (var q = 0u; q < 8u; q++) {
      let i = c0 + q;
      if (i < p.d) { x[o + i] = select(r1v[q & 3u], r0v[q & 3u], q < 4u); }
    }
  }
}
`;
}

/**
 * fc2_sum: x[t, i] += b2[i] + Σ_b part[t, b, i], the blocks' fc2 partials (block-select.ts, FC2) added
 * into the residual. A workgroup of 256 threads takes FC2S_CW vec4 columns × FC2S_SG block groups:
 * thread (cw, sg) sums blocks sg, sg + SG, … with FC2S_U loads in flight, then a tree over sg in
 * workgroup memory. The partials (nb × d floats a token, 4 MB at OPT-6.7B) were just written, so they
 * come from L2; the order of the sum is fixed: deterministic. Measured on an H200 (bench/atomic_probe.mjs,
 * 256 partials of 4096): 3.7 µs with (CW, U) = (8, 4), the same with CW 4 or U 8, 3.9 with CW 16,
 * 4.5 with U 2. In the decode step (bench/ab_decode.mjs, GPU ms a token, mlp / dejavu) U 8 against
 * U 4: opt-6.7b −0.3 / −0.7 %, opt-13b −0.15 / −0.1 %, opt-30b −0.5 / −0.5 %, opt-1.3b ±0 (at 6.7b a
 * thread's 8 partials go out in one round); CW 4: −0.3 / −0.2 % (6.7b), −0.4 / −0.1 % (13b); CW 16
 * with U 2: +0.5 / +0.6 % (6.7b). Params: d (floats of x a token), c4 (vec4s of a partial row), nb
 * (partials a token); b2 is bound and added where the kernel is compiled with `bias`. CPU twin: `sparseMlp` (the same sum, another order).
 */
export const FC2S_CW = 8;
export const FC2S_SG = 256 / FC2S_CW;
export const FC2S_U = 8;
export const FC2S_PARAMS = ['d', 'c4', 'nb'] as const;
export const fc2SumKey = (bias: boolean, half = false) => `fc2_sum_cw${FC2S_CW}_u${FC2S_U}${bias ? '_bias' : ''}${half ? '_h' : ''}`;

/** `half`: the partials are f16 pairs (block-select.ts, FC2's partHalf), a vec2<u32> where the f32 form has a vec4<f32>. */
export function fc2SumWgsl(bias: boolean, half = false): string {
  const CW = FC2S_CW, SG = FC2S_SG, U = FC2S_U;
  const us = Array.from({ length: U }, (_, u) => u);
  return `
struct P { d: u32, c4: u32, nb: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> part: array<${half ? 'vec2<u32>' : 'vec4<f32>'}>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
${bias ? '@group(0) @binding(3) var<storage, read> b: array<f32>;' : ''}
var<workgroup> red: array<vec4<f32>, 256>;
fn partAt(i: u32) -> vec4<f32> { ${half ? 'let w = part[i]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));' : 'return part[i];'} }
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let cw = lid % ${CW}u;
  let sg = lid / ${CW}u;
  let c = wid.x * ${CW}u + cw;
  let t = wid.y;
  let cc = min(c, p.c4 - 1u);
  let rb = t * p.nb;
${us.map((u) => `  var a${u} = vec4<f32>(0.0);`).join('\n')}
  for (var s = sg; s < p.nb; s += ${SG * U}u) {
${us.map((u) => `    if (s + ${u * SG}u < p.nb) { a${u} += partAt((rb + s + ${u * SG}u) * p.c4 + cc); }`).join('\n')}
  }
  red[lid] = ${us.map((u) => `a${u}`).join(' + ')};
  workgroupBarrier();
  for (var st = ${SG / 2}u; st > 0u; st >>= 1u) {
    if (sg < st) { red[lid] += red[lid + st * ${CW}u]; }
    workgroupBarrier();
  }
  if (sg == 0u && c < p.c4) {
    let r = red[cw];
    for (var e = 0u; e < 4u; e++) {
      let i = 4u * c + e;
      if (i < p.d) { x[t * p.d + i] = x[t * p.d + i] + r[e]${bias ? ' + b[i]' : ''}; }
    }
  }
}
`;
}

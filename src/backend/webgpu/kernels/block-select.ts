import { BLOCK_SIZE } from '../../../sparsity/policy.js';
import { enables, weightDecl } from './common.js';

/**
 * Block selection fused with the predictor's second product and the gathered fc1 (sparse MLP, one
 * dispatch instead of predictor-B GEMV + top-K + gathered fc1). CPU twin: `blockSelect` + `sparseMlp`.
 *
 * Why: a global top-K needs every score before any neuron is chosen, so it is its own dispatch (one
 * workgroup, ~16 µs at f = 16384 on an H200) between two GEMVs, each paying the fixed cost of a
 * dependent dispatch. A per-block rule needs only the block's own scores, so one workgroup can score
 * its neurons, choose among them, and compute fc1 for the chosen ones without waiting for anyone.
 *
 * The rule, per block of NB = 64 consecutive neurons: neuron j is chosen when its score
 * s_j = B[j]·u + bias_j exceeds the layer's threshold τ, at most `cap` of them (the highest scores;
 * ties to the lower index). τ = -∞ (`tau: null`) with cap = k/nb is a blocked top-k: exactly cap
 * neurons a block. Output slots are fixed: block b owns slots [b·cap, (b+1)·cap) of the token's k =
 * nb·cap, filled in descending score order; unused slots get h = 0 (sparse fc2 skips h = 0 rows
 * without reading them) and sel = the block's first neuron (a valid row).
 *
 * One workgroup of 256 threads a (block, token):
 * 1. scores: 4 threads a row of B over u (the predictor's first product, A·x), + bias;
 * 2. choice: thread i < 64 ranks its score against the block's 64 by comparison in workgroup memory;
 * 3. fc1: 256 / capP threads a chosen row of W1 over x (bias, ReLU), a tree sum in workgroup memory.
 * Also adds the block's chosen count into cnt[0] (u32 atomic): the measured density, read on request.
 *
 * Weights are fp16 rows padded to 4 halves; rows padded to 8 halves (every real OPT width) are read
 * 16 bytes a load (`wideB` / `wideW`), four loads in flight. B and W1 may be split into parts: the
 * runner dispatches one segment of blocks per (B part, W1 part) overlap, parts cut at multiples of NB.
 */
export const BS_NB = BLOCK_SIZE;
export const BS_WG = 256;
export const BS_PARAMS = ['f', 'r', 'd', 'k', 'cap', 'tauOn', 'tauBits', 'blk0', 'bRow0', 'wRow0'] as const;

export interface BlockSelectOpts {
  wideB: boolean; wideW: boolean;   // B / W1 rows padded to 8 halves: 16-byte loads
  uv4: boolean; xv4: boolean;       // r / d a multiple of 4: the vector read as vec4<f32>
  capP: number;                     // cap rounded up to a power of two (threads a row = 256 / capP)
  f16: boolean;                     // shader-f16 for the narrow weight view (else packed u32)
}

export const blockSelectKey = (o: BlockSelectOpts) =>
  `block_select_B${o.wideB ? 8 : 4}_W${o.wideW ? 8 : 4}_u${o.uv4 ? 4 : 1}_x${o.xv4 ? 4 : 1}_cap${o.capP}${o.f16 ? '_f16' : ''}`;

/** Power of two ≥ cap (cap ≤ NB). */
export const capPow2 = (cap: number) => 2 ** Math.ceil(Math.log2(Math.max(1, cap)));

/**
 * WGSL for one weight matrix `M` at binding `bind` with its input vector `v` at binding `vbind`:
 * `M_dot(row, lane, lanes, vb, n)` = Σ_k M[row, k] v[vb + k] over k < n, the part of lane `lane` of
 * `lanes` (the caller sums the lanes); chunks of 8 (wide) or 4 halves, four loads in flight.
 */
function dotFn(M: string, bind: number, vName: string, vbind: number, wide: boolean, v4: boolean, f16: boolean): string {
  const cw = wide ? 8 : 4;
  const vdecl = v4
    ? `@group(0) @binding(${vbind}) var<storage, read> ${vName}: array<vec4<f32>>;
fn ${vName}4(i: u32) -> vec4<f32> { return ${vName}[i / 4u]; }
fn ${vName}1(i: u32) -> f32 { return ${vName}[i / 4u][i % 4u]; }`
    : `@group(0) @binding(${vbind}) var<storage, read> ${vName}: array<f32>;
fn ${vName}4(i: u32) -> vec4<f32> { return vec4<f32>(${vName}[i], ${vName}[i + 1u], ${vName}[i + 2u], ${vName}[i + 3u]); }
fn ${vName}1(i: u32) -> f32 { return ${vName}[i]; }`;
  const mdecl = wide
    ? `@group(0) @binding(${bind}) var<storage, read> ${M}: array<vec4<u32>>;
fn ${M}_c(row: u32, rc: u32, c: u32, vb: u32) -> f32 {
  let w = ${M}[row * rc + c];
  return dot(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)), ${vName}4(vb + c * 8u))
       + dot(vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)), ${vName}4(vb + c * 8u + 4u));
}
fn ${M}_t(row: u32, rc: u32, c: u32, i: u32) -> f32 { let w = ${M}[row * rc + c]; let q = i % 8u; let pr = select(select(w.x, w.y, q >= 2u), select(w.z, w.w, q >= 6u), q >= 4u); return unpack2x16float(pr)[q % 2u]; }`
    : `${weightDecl({ f16, subgroups: false }, bind, M)}
fn ${M}_c(row: u32, rc: u32, c: u32, vb: u32) -> f32 { return dot(${M}_4(row * rc + c), ${vName}4(vb + c * 4u)); }
fn ${M}_t(row: u32, rc: u32, c: u32, i: u32) -> f32 { return ${M}_1((row * rc + c) * 4u + i % 4u); }`;
  return `${vdecl}
${mdecl}
fn ${M}_dot(row: u32, rc: u32, lane: u32, lanes: u32, vb: u32, n: u32) -> f32 {
  let full = n / ${cw}u;
  var a0 = 0.0; var a1 = 0.0; var a2 = 0.0; var a3 = 0.0;
  var c = lane;
  loop {
    if (c + 3u * lanes >= full) { break; }
    a0 += ${M}_c(row, rc, c, vb); a1 += ${M}_c(row, rc, c + lanes, vb);
    a2 += ${M}_c(row, rc, c + 2u * lanes, vb); a3 += ${M}_c(row, rc, c + 3u * lanes, vb);
    c += 4u * lanes;
  }
  for (; c < full; c += lanes) { a0 += ${M}_c(row, rc, c, vb); }
  // n not a multiple of the chunk: the last chunk is zero-padded in M; read only the v that exists.
  if (lane == 0u) {
    for (var i = full * ${cw}u; i < n; i++) { a1 += ${M}_t(row, rc, full, i) * ${vName}1(vb + i); }
  }
  return (a0 + a1) + (a2 + a3);
}`;
}

export function blockSelectWgsl(o: BlockSelectOpts): string {
  const capP = o.capP, tpr3 = BS_WG / capP;
  if (capP > BS_NB || capP & (capP - 1)) throw new Error(`block_select: capP must be a power of two <= ${BS_NB}`);
  return `${enables({ f16: o.f16 && !(o.wideB && o.wideW), subgroups: false })}
struct P { f: u32, r: u32, d: u32, k: u32, cap: u32, tauOn: u32, tauBits: u32, blk0: u32, bRow0: u32, wRow0: u32 }
@group(0) @binding(0) var<uniform> p: P;
${dotFn('B', 1, 'u', 3, o.wideB, o.uv4, o.f16)}
${dotFn('W', 4, 'x', 6, o.wideW, o.xv4, o.f16)}
@group(0) @binding(2) var<storage, read> bb: array<f32>;
@group(0) @binding(5) var<storage, read> b1: array<f32>;
@group(0) @binding(7) var<storage, read_write> sel: array<u32>;
@group(0) @binding(8) var<storage, read_write> h: array<f32>;
@group(0) @binding(9) var<storage, read_write> cnt: array<atomic<u32>>;
var<workgroup> red: array<f32, ${BS_WG}>;
var<workgroup> sc: array<f32, ${BS_NB}>;
var<workgroup> ok: array<u32, ${BS_NB}>;
var<workgroup> chosen: array<u32, ${BS_NB}>;
var<workgroup> nChosen: atomic<u32>;
@compute @workgroup_size(${BS_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let blk = p.blk0 + wid.x;
  let t = wid.z;
  let j0 = blk * ${BS_NB}u;
  if (lid == 0u) { atomicStore(&nChosen, 0u); }
  // 1. Scores of the block's rows: 4 lanes a row.
  let row = lid / 4u;
  let j = j0 + row;
  var acc = 0.0;
  if (j < p.f) { acc = B_dot(j - p.bRow0, ${o.wideB ? '(p.r + 7u) / 8u' : '(p.r + 3u) / 4u'}, lid % 4u, 4u, t * p.r, p.r); }
  red[lid] = acc;
  workgroupBarrier();
  if (lid < ${BS_NB}u) {
    let jj = j0 + lid;
    let q = lid * 4u;
    sc[lid] = select(0.0, (red[q] + red[q + 1u]) + (red[q + 2u] + red[q + 3u]) + bb[min(jj, p.f - 1u)], jj < p.f);
    ok[lid] = select(0u, 1u, jj < p.f);
  }
  workgroupBarrier();
  // 2. Choice: rank among the block's valid scores (descending, ties to the lower index).
  if (lid < ${BS_NB}u && ok[lid] == 1u) {
    let s = sc[lid];
    var rank = 0u;
    for (var i = 0u; i < ${BS_NB}u; i++) {
      let o = sc[i];
      rank += select(0u, 1u, ok[i] == 1u && (o > s || (o == s && i < lid)));
    }
    if ((p.tauOn == 0u || s > bitcast<f32>(p.tauBits)) && rank < p.cap) {
      chosen[rank] = j0 + lid;
      atomicAdd(&nChosen, 1u);
    }
  }
  workgroupBarrier();
  let count = atomicLoad(&nChosen);
  if (lid == 0u) { atomicAdd(&cnt[0], count); }
  // 3. fc1 over the chosen rows: ${tpr3} lanes a row, then a tree over the lanes.
  let q3 = lid / ${tpr3}u;
  let lane3 = lid % ${tpr3}u;
  var jn = j0;
  var a3 = 0.0;
  if (q3 < count) {
    jn = chosen[q3];
    a3 = W_dot(jn - p.wRow0, ${o.wideW ? '(p.d + 7u) / 8u' : '(p.d + 3u) / 4u'}, lane3, ${tpr3}u, t * p.d, p.d);
  }
  red[lid] = a3;
  workgroupBarrier();
  for (var st = ${tpr3 / 2}u; st > 0u; st >>= 1u) {
    if (lane3 < st) { red[lid] += red[lid + st]; }
    workgroupBarrier();
  }
  if (lane3 == 0u && q3 < p.cap) {
    let slot = t * p.k + blk * p.cap + q3;
    sel[slot] = jn;
    h[slot] = select(0.0, max(red[lid] + b1[jn], 0.0), q3 < count);
  }
}
`;
}

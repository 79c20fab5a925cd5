import { enables, weightDecl, wgTotalWgsl, wmode, type KernelFeatures } from './common.js';

/**
 * GEMV for batch-1 decode (memory-bound): y[t, r] = epi(W[r, :] · x[t, :]), one workgroup per R rows,
 * TPR threads per row reading vec4 chunks (consecutive threads, consecutive chunks: coalesced).
 * Grid: x (and y beyond 65535) over row groups, z over tokens (each token re-reads W: only used for
 * T = 1 or for gathers, where every token has its own rows).
 * GATHER: row r of the output is weight row sel[t * selStride + r] (sparse fc1); rows outside this
 * weight part are skipped (a matrix split into parts is dispatched once per part).
 * Epilogue: + bias[row], ReLU, and RESID: y += result (residual add into the stream).
 * CPU twin: `linear` (dense) and the fc1 half of `sparseMlp` (gather).
 *
 * LN: the pre-LayerNorm folded into the GEMV (decode of pre-LN models: the LayerNorm before qkv and
 * before a dense fc1). A separate LayerNorm is one workgroup of dependent loads and barriers, ~8 µs
 * on an H200 at d = 4096, twice a layer; folded, its work rides in the GEMV's (the saving is the
 * dispatch and its serial latency; untimed on an H200 so far: A/B with foldLayerNorm: false). With
 * LN(x) = γ ∘ (x − μ)·s + β, s = 1/sqrt(var + eps), and the stored weights unchanged:
 *   W[r]·LN(x) + b[r] = s·(Σ_k W[r,k] γ_k x_k − μ·c1[r]) + c2[r],  c1 = W·γ,  c2 = W·β + b,
 * so the dot product reads x' = γ ∘ x on the fly, every workgroup computes μ and var of the raw x row
 * itself (a strided pass for the mean, a second for the variance about it: the order of the CPU twin
 * `layerNorm`; over the whole workgroup, after the weight loop so the weight stream starts at once),
 * and the epilogue is v = s·(acc − μ·c1[row]) + c2[row] before ReLU / RESID. c1 and c2 are per-matrix
 * vectors made once at load (Kernels.foldLayerNorm, through this kernel); the bias is inside c2.
 * Bindings 6 (γ), 7 (c1), 8 (c2, by global row like the bias); eps in the uniform's last field.
 * Costs: each workgroup re-reads the x row twice more (from cache) and adds barriers (four with
 * subgroups); and acc − μ·c1 cancels where |μ| >> the row's spread σ (f32 rounding grows by about
 * |μ|/σ). Measured: 1.5e-6 relative against LayerNorm-then-GEMV at mean 3, σ 0.58 (webgpu-kernels
 * test), and decode logits of the opt-gutenberg checkpoints within 7e-7 of the separate LayerNorm's.
 */
export interface GemvOpts {
  rows: number; tpr: number; bias: boolean; relu: boolean; resid: boolean; gather: boolean;
  /**
   * Wide loads: 16 bytes (8 halves) per load as vec4<u32> decoded with unpack2x16float, four loads in
   * flight per thread. Needs rows padded to a multiple of 8 halves. The 8-byte vec4<f16> loads of the
   * narrow form left an H200 at ~1 TB/s of its ~4 TB/s: too few bytes in flight per SM.
   */
  wide?: boolean;
  /** x read as vec4<f32> (needs x offsets and strides that are multiples of 4): two loads per chunk instead of eight. */
  xv4?: boolean;
  /** The pre-LayerNorm folded in (see above): needs gamma, c1, c2 bound and epsBits; no bias (c2 has it). */
  ln?: boolean;
}

export function gemvKey(f: KernelFeatures, o: GemvOpts): string {
  return `gemv_${o.wide ? (o.xv4 ? 'w8x4v' : 'w8x4') : wmode(f)}_${f.subgroups ? 'sg' : 'wgmem'}_r${o.rows}_tpr${o.tpr}${o.bias ? '_bias' : ''}${o.relu ? '_relu' : ''}${o.resid ? '_resid' : ''}${o.gather ? '_gather' : ''}${o.ln ? '_ln' : ''}`;
}

/** Uniform layout (u32 each). */
export const GEMV_PARAMS = ['rows', 'K', 'K4', 'rowOff', 'partRows', 'inStride', 'inOff', 'outStride', 'outOff', 'selStride', 'nwgx', 'epsBits'] as const;

export function gemvWgsl(f: KernelFeatures, o: GemvOpts): string {
  const WG = o.rows * o.tpr;
  const sg = f.subgroups;
  const ln = !!o.ln;
  if (ln && o.bias) throw new Error('gemv: with the LayerNorm folded in, the bias is part of c2');
  // x' = γ ∘ x at element k of the row (xb: the row's start in x); γ as vec4 where x is (K % 4 == 0 then).
  const g4 = !ln ? '' : o.xv4 ? ' * gv[k / 4u]' : ' * vec4<f32>(gam[k], gam[k + 1u], gam[k + 2u], gam[k + 3u])';
  const g1 = !ln ? '' : o.xv4 ? ' * gv[k / 4u][k % 4u]' : ' * gam[k]';
  const sgArgs = sg ? ', sl, ss' : '';
  return `${o.wide ? enables({ ...f, f16: false }, true) : enables(f, true)}
struct P { rows: u32, K: u32, K4: u32, rowOff: u32, partRows: u32, inStride: u32, inOff: u32, outStride: u32, outOff: u32, selStride: u32, nwgx: u32, epsBits: u32 }
@group(0) @binding(0) var<uniform> p: P;
${o.wide ? '@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;' : weightDecl(f, 1, 'W')}
${o.xv4 ? `@group(0) @binding(2) var<storage, read> xv: array<vec4<f32>>;
fn xs(i: u32) -> f32 { return xv[i / 4u][i % 4u]; }
fn x4(i: u32) -> vec4<f32> { return xv[i / 4u]; }` : `@group(0) @binding(2) var<storage, read> x: array<f32>;
fn xs(i: u32) -> f32 { return x[i]; }
fn x4(i: u32) -> vec4<f32> { return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]); }`}
${ln ? `${o.xv4 ? '@group(0) @binding(6) var<storage, read> gv: array<vec4<f32>>;' : '@group(0) @binding(6) var<storage, read> gam: array<f32>;'}
@group(0) @binding(7) var<storage, read> c1: array<f32>;
@group(0) @binding(8) var<storage, read> c2: array<f32>;` : ''}
fn xk4(xb: u32, k: u32) -> vec4<f32> { return x4(xb + k)${g4}; }
fn xk1(xb: u32, k: u32) -> f32 { return xs(xb + k)${g1}; }
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
${o.wide ? `fn dot8(w: vec4<u32>, xb: u32, k: u32) -> f32 {
  return dot(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)), xk4(xb, k))
       + dot(vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)), xk4(xb, k + 4u));
}` : ''}
${o.bias ? '@group(0) @binding(4) var<storage, read> bias: array<f32>;' : ''}
${o.gather ? '@group(0) @binding(5) var<storage, read> sel: array<u32>;' : ''}
const R = ${o.rows}u;
const TPR = ${o.tpr}u;
const WG = ${WG}u;
var<workgroup> red: array<f32, ${WG}>;
${ln ? wgTotalWgsl(WG, sg) : ''}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${sg ? ', @builtin(subgroup_invocation_id) sl: u32, @builtin(subgroup_size) ss: u32' : ''}) {
  let g = wid.x + wid.y * p.nwgx;
  let t = wid.z;
  let lane = lid % TPR;
  let r = g * R + lid / TPR;
  var live = r < p.rows;
  var wrow = r;
  ${o.gather ? `if (live) {
    let gi = sel[t * p.selStride + r];
    live = gi >= p.rowOff && gi < p.rowOff + p.partRows;
    wrow = gi - p.rowOff;
  }` : ''}
${o.wide ? `  var acc = 0.0;
  if (live) {
    let wb = wrow * (p.K4 / 2u);
    let xb = t * p.inStride + p.inOff;
    let full = p.K / 8u;
    var a0 = 0.0; var a1 = 0.0; var a2 = 0.0; var a3 = 0.0;
    var c = lane;
    // Four independent 16-byte loads per iteration keep enough bytes in flight to saturate HBM.
    loop {
      if (c + 3u * TPR >= full) { break; }
      let w0 = W[wb + c]; let w1 = W[wb + c + TPR]; let w2 = W[wb + c + 2u * TPR]; let w3 = W[wb + c + 3u * TPR];
      a0 += dot8(w0, xb, c * 8u);
      a1 += dot8(w1, xb, (c + TPR) * 8u);
      a2 += dot8(w2, xb, (c + 2u * TPR) * 8u);
      a3 += dot8(w3, xb, (c + 3u * TPR) * 8u);
      c += 4u * TPR;
    }
    for (; c < full; c += TPR) { a0 += dot8(W[wb + c], xb, c * 8u); }
    acc = (a0 + a1) + (a2 + a3);
    // K not a multiple of 8: the last chunk is zero-padded in W; read only the x that exists.
    if (lane == 0u && full * 8u < p.K) {
      let w = W[wb + full];
      var x0 = vec4<f32>(0.0); var x1 = vec4<f32>(0.0);
      for (var i = 0u; i < p.K - full * 8u; i++) {
        let v = xk1(xb, full * 8u + i);
        if (i < 4u) { x0[i] = v; } else { x1[i - 4u] = v; }
      }
      acc += dot(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)), x0) + dot(vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)), x1);
    }
  }
` : `  var acc = 0.0;
  if (live) {
    let wb = wrow * p.K4;
    let xb = t * p.inStride + p.inOff;
    let full = p.K / 4u;
    for (var c = lane; c < full; c += TPR) {
      acc += dot(W_4(wb + c), xk4(xb, c * 4u));
    }
    // Odd K: the last chunk is zero-padded in W; read only the x that exists.
    if (lane == 0u && full * 4u < p.K) {
      var xt = vec4<f32>(0.0);
      for (var i = 0u; i < p.K - full * 4u; i++) { xt[i] = xk1(xb, full * 4u + i); }
      acc += dot(W_4(wb + full), xt);
    }
  }
`}${!ln ? '' : `  // LayerNorm statistics of the raw x row, after the weight loop (its loads are in flight first).
  let xr = t * p.inStride + p.inOff;
  var sm = 0.0;
  ${o.xv4 ? 'for (var i = lid; i < p.K / 4u; i += WG) { let v = x4(xr + i * 4u); sm += (v.x + v.y) + (v.z + v.w); }' : 'for (var i = lid; i < p.K; i += WG) { sm += xs(xr + i); }'}
  let mu = wgTotal(sm, lid${sgArgs}) / f32(p.K);
  var sv = 0.0;
  ${o.xv4 ? 'for (var i = lid; i < p.K / 4u; i += WG) { let v = x4(xr + i * 4u) - vec4<f32>(mu); sv += dot(v, v); }' : 'for (var i = lid; i < p.K; i += WG) { let c = xs(xr + i) - mu; sv += c * c; }'}
  let inv = 1.0 / sqrt(wgTotal(sv, lid${sgArgs}) / f32(p.K) + bitcast<f32>(p.epsBits));
`}
  ${sg ? `// subgroupAdd, then one slot per subgroup (assumes subgroups are runs of consecutive
  // local_invocation_index within a 1-D workgroup and subgroup size <= TPR, true of every driver seen).
  let s = subgroupAdd(acc);
  red[lid] = select(0.0, s, sl == 0u);
  workgroupBarrier();
  for (var st = TPR / 2u; st >= ss; st >>= 1u) {
    if (lane < st) { red[lid] += red[lid + st]; }
    workgroupBarrier();
  }` : `red[lid] = acc;
  workgroupBarrier();
  for (var st = TPR / 2u; st > 0u; st >>= 1u) {
    if (lane < st) { red[lid] += red[lid + st]; }
    workgroupBarrier();
  }`}
  if (lane == 0u && live) {
    var v = red[lid];
    ${ln ? 'v = inv * (v - mu * c1[p.rowOff + wrow]) + c2[p.rowOff + wrow];' : ''}
    ${o.bias ? `v += bias[p.rowOff + wrow];` : ''}
    ${o.relu ? 'v = max(v, 0.0);' : ''}
    let oi = t * p.outStride + p.outOff + r;
    ${o.resid ? 'y[oi] = y[oi] + v;' : 'y[oi] = v;'}
  }
}
`;
}

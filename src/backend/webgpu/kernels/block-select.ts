import { BLOCK_SIZE } from '../../../sparsity/policy.js';
import { enables, laneSumWgsl, weightDecl, halves8Wgsl } from './common.js';

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
 * One workgroup of WG threads (512 by default) a (block, token):
 * 1. scores: WG / 64 lanes a row of B over u (the predictor's first product, A·x), + bias;
 * 2. ranks: thread (i, g) compares neuron i with a group of the block's 64 scores and adds its count
 *    into rk[i] (workgroup u32 atomics: integer sums, deterministic); rank < cap and s > τ choose;
 * 3. fc1: the whole workgroup on the chosen rows, WG / (count rounded up to a power of two) lanes a
 *    row of W1 over x (so 6 chosen rows of 512 chunks at WG 512: 64 lanes, 8 chunks a thread), then
 *    bias and ReLU. The first form gave each of cap rows a fixed 16 lanes: ~27 µs instead of 14.5.
 * Also adds the block's chosen count into cnt[0] (u32 atomic): the measured density, read on request.
 *
 * LN (decode of a pre-LN model whose predictors read attn_in, DejaVu's lookahead): the MLP's
 * LayerNorm is folded in, with the algebra of the dense GEMV's fold (gemv.ts, LN): x is the raw
 * residual stream; before scoring, the workgroup loads it once, takes Σu and Σu² of u = x − sh (two
 * workgroup sums) and keeps γ∘u in workgroup memory (xs, d floats: the width is compiled in); fc1's
 * chosen rows dot xs, and fc1 = s·(dot − (μ − sh)·c1[j]) + c2[j] with c1 = W1·γ, c2 = W1·β + b1
 * (binding 5 holds c1 then c2, binding 10 γ). Two other forms were slower (H200, decode profile,
 * µs a layer at OPT-6.7B / 13B): the statistics taken in fc1's dot loop from global x and γ, as the
 * GEMV does (vec3 sums): 30.1 / 42.8; γ∘(x − sh) recomputed from x and γ in the dot after a
 * statistics phase: 29.8 / 43.4; this form: 28.4 / 40.8; without LN (x = LN(x) from predictor A):
 * 26.1 / 32.3. With choiceFirst (the runner's default; attn_io predictors reach this form) the
 * workgroup scores and chooses first and the LayerNorm's work comes after, the chosen rows' first
 * loads issued before it (W_pre, as in the 'fc1' phase): x's loads and the two sums no longer stand
 * before B's loads (H200, decode GPU ms: opt-30b mlp −0.7 %, dejavu −1.5 %; 1.3b −0.4 / −0.6 %; 6.7b
 * −0.2 % or less). Without LN the MLP LayerNorm is a dispatch
 * of its own between out_proj and this kernel (or, reading mlp_in, predictor A writes LN(x)). u is read at uOff + t·uStride: with the lookahead, predictor A's
 * rows ride the qkv GEMV and u sits after qkv's rows in its output.
 *
 * Weights are fp16 rows padded to 4 halves; rows padded to 8 halves (every real OPT width) are read
 * 16 bytes a load (`wideB` / `wideW`), `unroll` (4) loads in flight. B and W1 may be split into parts: the
 * runner dispatches one segment of blocks per (B part, W1 part) overlap, parts cut at multiples of NB.
 */
export const BS_NB = BLOCK_SIZE;
export const BS_PARAMS = ['f', 'r', 'd', 'k', 'cap', 'tauOn', 'tauBits', 'blk0', 'bRow0', 'wRow0', 'uOff', 'uStride', 'epsBits', 'c8', 'nbt'] as const;

export interface BlockSelectOpts {
  wideB: boolean; wideW: boolean;   // B / W1 rows padded to 8 halves: 16-byte loads
  i8B?: boolean;                    // B stored as int8 rows (I8 above; wideB then unused)
  uv4: boolean; xv4: boolean;       // r / d a multiple of 4: the vector read as vec4<f32>
  wg: number;                       // 256, 512 or 1024 threads (blockSelectWorkgroupSize)
  unroll?: number;                  // loads in flight a thread in the dot loops (default 4)
  f16: boolean;                     // shader-f16 for the narrow weight view (else packed u32)
  subgroups: boolean;               // subgroupAdd in fc1's row sums
  ln?: boolean;                     // the MLP LayerNorm folded into fc1 (see LN above)
  d?: number;                       // with ln: the width (xs is sized at compile time)
  xsHalf?: boolean;                 // with ln and xv4: xs holds f16 pairs (half the workgroup memory)
  gw?: boolean;                     // with ln: W1 stored as W1∘γ (gemv.ts, GAMMA IN W): xs holds x − sh, γ not bound
  /**
   * 'fc1': the choice was made earlier, by the scoring role inside another dispatch (blockScoreRoleWgsl:
   * DejaVu's lookahead puts it beside attention); this kernel reads each block's count (binding 11)
   * and chosen rows (sel) and computes their fc1 only, issuing the rows' first loads before the
   * LayerNorm's work on x (W_pre, W_dotp: at opt-6.7b on an H200 the step's gain from the role went
   * from −0.8 to −1.3 %, opt-13b's loss from +0.8 % to ±0). Default: score, choose and fc1 here.
   */
  phase?: 'all' | 'fc1';
  /** In the 'fc1' phase (and with choiceFirst): the rows' first loads before the LayerNorm's work (W_pre, default true); false: after it (W_dot). */
  early?: boolean;
  /**
   * With ln in the default phase: score and choose before the LayerNorm's work on x (which only fc1
   * needs), so the chosen rows' first loads go out before it as in the 'fc1' phase, instead of the
   * LayerNorm's loads and sums standing before B's loads.
   */
  choiceFirst?: boolean;
  /**
   * fc2's share of the block (see FC2 below): its chosen rows of fc2ᵀ (binding 12, rows padded to 8
   * halves, one weight part) times their h, stored as the block's partial d-vector (binding 13); a
   * second, small dispatch (sparse-mlp.ts, fc2Sum) adds the blocks' partials into x.
   */
  fc2?: boolean;
  /** With fc2: 16-byte chunks of fc2ᵀ's row a thread, ceil(c8 / wg) (ops.ts, blockSelectFc1, computes it). */
  fc2Cpt?: number;
  /** With fc2: the partials stored as f16 (packed pairs, half the bytes written and summed; FC2 below), else f32. */
  partHalf?: boolean;
}

export const blockSelectKey = (o: BlockSelectOpts) =>
  `block_select_wg${o.wg}_u${o.unroll ?? 4}_B${o.i8B ? 'i8' : o.wideB ? 8 : 4}_W${o.wideW ? 8 : 4}_u${o.uv4 ? 4 : 1}_x${o.xv4 ? 4 : 1}${o.f16 ? '_f16' : ''}${o.subgroups ? '_sg' : ''}${o.ln ? `_ln${o.d}${o.xsHalf ? 'h' : ''}${o.gw ? 'g' : ''}` : ''}${o.phase === 'fc1' ? `_fc1${o.early === false ? 'late' : ''}` : ''}${o.choiceFirst && o.ln && o.phase !== 'fc1' ? `_cf${o.early === false ? 'late' : ''}` : ''}${o.fc2 ? `_fc2c${o.fc2Cpt ?? 1}${o.partHalf ? 'h' : ''}` : ''}`;

/**
 * The workgroup size under the device limits: 512 threads where allowed. H200, OPT-6.7B at 10 %
 * (docs/benchmarks.md): 256 threads 19.8 µs, 512 14.5, 1024 17.8 (four loads in flight a thread;
 * eight: 19.8 / 15.1 / 18.9).
 */
export function blockSelectWorkgroupSize(l: { maxComputeInvocationsPerWorkgroup: number; maxComputeWorkgroupSizeX: number }): number {
  return l.maxComputeInvocationsPerWorkgroup >= 512 && l.maxComputeWorkgroupSizeX >= 512 ? 512 : 256;
}

/**
 * How a weight matrix's rows are stored for dotFn: fp16 padded to 8 halves (16-byte loads), to 4
 * halves, or int8 (I8: predictor B only; gpuMatrixI8 in ops.ts).
 *
 * I8: a row is 16-byte chunks, chunk 0 holding the row's scale s (f32, in its first word), then
 * ceil(cols / 16) chunks of 16 signed bytes q (zero-padded); the row's values are s·q/127
 * (unpack4x8snorm: core WGSL, no extension). CPU twin: quantizeRowsI8. Why: predictor B is scored
 * for every neuron of every token (f × r values, a quarter of the sparse MLP's bytes at DejaVu's
 * proportions), while only the order of the scores around the layer's threshold matters; int8
 * halves those bytes (docs/benchmarks.md measures the step and docs/sparsity.md the choices).
 */
export type DotForm = 'wide' | 'narrow' | 'i8';

/** A storage vector `v` at binding `vbind` with accessors v4(i) (4 from element i) and v1(i). */
function vecDecl(vName: string, vbind: number, v4: boolean): string {
  return v4
    ? `@group(0) @binding(${vbind}) var<storage, read> ${vName}: array<vec4<f32>>;
fn ${vName}4(i: u32) -> vec4<f32> { return ${vName}[i / 4u]; }
fn ${vName}1(i: u32) -> f32 { return ${vName}[i / 4u][i % 4u]; }`
    : `@group(0) @binding(${vbind}) var<storage, read> ${vName}: array<f32>;
fn ${vName}4(i: u32) -> vec4<f32> { return vec4<f32>(${vName}[i], ${vName}[i + 1u], ${vName}[i + 2u], ${vName}[i + 3u]); }
fn ${vName}1(i: u32) -> f32 { return ${vName}[i]; }`;
}

/**
 * WGSL for one weight matrix `M` at binding `bind` with its input vector `v` at binding `vbind`:
 * `M_dot(row, lane, lanes, vb, n)` = Σ_k M[row, k] v[vb + k] over k < n, the part of lane `lane` of
 * `lanes` (the caller sums the lanes); chunks of 8 (wide) or 4 halves, U loads in flight.
 */
function dotFn(M: string, bind: number, vName: string, vbind: number, form: DotForm, v4: boolean, f16: boolean, U: number, vOverride?: string): string {
  const wide = form !== 'narrow', cw = form === 'i8' ? 16 : wide ? 8 : 4, zero = wide ? 'vec4<u32>(0u)' : 'vec4<f32>(0.0)';
  const vdecl = vOverride ?? vecDecl(vName, vbind, v4);
  const mdecl = form === 'i8'
    ? `@group(0) @binding(${bind}) var<storage, read> ${M}: array<vec4<u32>>;
// int8 rows (see I8 above): chunk 0 holds the row's scale, then 16 values a chunk.
fn ${M}_l(row: u32, rc: u32, c: u32) -> vec4<u32> { return ${M}[row * rc + 1u + c]; }
fn ${M}_d(w: vec4<u32>, c: u32, vb: u32) -> f32 {
  let b = vb + c * 16u;
  return (dot(unpack4x8snorm(w.x), ${vName}4(b)) + dot(unpack4x8snorm(w.y), ${vName}4(b + 4u)))
       + (dot(unpack4x8snorm(w.z), ${vName}4(b + 8u)) + dot(unpack4x8snorm(w.w), ${vName}4(b + 12u)));
}
fn ${M}_t(row: u32, rc: u32, c: u32, i: u32) -> f32 { let w = ${M}[row * rc + 1u + c]; let q = i % 16u; let pr = select(select(w.x, w.y, q >= 4u), select(w.z, w.w, q >= 12u), q >= 8u); return unpack4x8snorm(pr)[q % 4u]; }
fn ${M}_scale(row: u32, rc: u32) -> f32 { return bitcast<f32>(${M}[row * rc].x); }`
    : wide
    ? `@group(0) @binding(${bind}) var<storage, read> ${M}: array<vec4<u32>>;
fn ${M}_l(row: u32, rc: u32, c: u32) -> vec4<u32> { return ${M}[row * rc + c]; }
fn ${M}_d(w: vec4<u32>, c: u32, vb: u32) -> f32 {
  return dot(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)), ${vName}4(vb + c * 8u))
       + dot(vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)), ${vName}4(vb + c * 8u + 4u));
}
fn ${M}_t(row: u32, rc: u32, c: u32, i: u32) -> f32 { let w = ${M}[row * rc + c]; let q = i % 8u; let pr = select(select(w.x, w.y, q >= 2u), select(w.z, w.w, q >= 6u), q >= 4u); return unpack2x16float(pr)[q % 2u]; }`
    : `${weightDecl({ f16, subgroups: false }, bind, M)}
fn ${M}_l(row: u32, rc: u32, c: u32) -> vec4<f32> { return ${M}_4(row * rc + c); }
fn ${M}_d(w: vec4<f32>, c: u32, vb: u32) -> f32 { return dot(w, ${vName}4(vb + c * 4u)); }
fn ${M}_t(row: u32, rc: u32, c: u32, i: u32) -> f32 { return ${M}_1((row * rc + c) * 4u + i % 4u); }`;
  const T = wide ? 'vec4<u32>' : 'vec4<f32>';
  return `${vdecl}
${mdecl}
// The first round's ${U} chunks of a row, loaded ahead of the vector (M_dotp then starts from them).
struct ${M}Pre { ${Array.from({ length: U }, (_, u) => `w${u}: ${T}`).join(', ')} }
fn ${M}_pre(row: u32, rc: u32, lane: u32, lanes: u32, n: u32) -> ${M}Pre {
  let full = n / ${cw}u;
  var q: ${M}Pre;
${Array.from({ length: U }, (_, u) => `  q.w${u} = ${zero}; if (lane + ${u}u * lanes < full) { q.w${u} = ${M}_l(row, rc, lane + ${u}u * lanes); }`).join('\n')}
  return q;
}
fn ${M}_dotp(row: u32, rc: u32, lane: u32, lanes: u32, vb: u32, n: u32, q: ${M}Pre) -> f32 {
  let full = n / ${cw}u;
  var a0 = 0.0; var a1 = 0.0; var a2 = 0.0; var a3 = 0.0;
${Array.from({ length: U }, (_, u) => `  if (lane + ${u}u * lanes < full) { a${u % 4} += ${M}_d(q.w${u}, lane + ${u}u * lanes, vb); }`).join('\n')}
  // Rounds of ${U} chunks, all ${U} loads issued before any is used; the last round masked.
  for (var c = lane + ${U}u * lanes; c < full; c += ${U}u * lanes) {
${Array.from({ length: U }, (_, u) => `    let c${u} = c + ${u}u * lanes; var w${u} = ${zero}; if (c${u} < full) { w${u} = ${M}_l(row, rc, c${u}); }`).join('\n')}
${Array.from({ length: U }, (_, u) => `    if (c${u} < full) { a${u % 4} += ${M}_d(w${u}, c${u}, vb); }`).join('\n')}
  }
  // n not a multiple of the chunk: the last chunk is zero-padded in M; read only the v that exists.
  if (lane == 0u) {
    for (var i = full * ${cw}u; i < n; i++) { a1 += ${M}_t(row, rc, full, i) * ${vName}1(vb + i); }
  }
  return (a0 + a1) + (a2 + a3);
}
// The whole dot: the first round loaded, then the rest (the first round is only a round of M_dotp's loop).
fn ${M}_dot(row: u32, rc: u32, lane: u32, lanes: u32, vb: u32, n: u32) -> f32 { return ${M}_dotp(row, rc, lane, lanes, vb, n, ${M}_pre(row, rc, lane, lanes, n)); }`;
}

/**
 * With LN: the workgroup array xs holding γ∘(x − sh) of the token (d floats, or d/4 vec4s), and the
 * accessors xw4 / xw1 that fc1's dot reads it through (vb = 0).
 */
function lnVecDecl(d: number, v4: boolean, half: boolean): string {
  if (half) {
    return `var<workgroup> xs: array<u32, ${d / 2}>;
fn xw4(i: u32) -> vec4<f32> { return vec4<f32>(unpack2x16float(xs[i / 2u]), unpack2x16float(xs[i / 2u + 1u])); }
fn xw1(i: u32) -> f32 { return unpack2x16float(xs[i / 2u])[i % 2u]; }`;
  }
  return v4
    ? `var<workgroup> xs: array<vec4<f32>, ${d / 4}>;
fn xw4(i: u32) -> vec4<f32> { return xs[i / 4u]; }
fn xw1(i: u32) -> f32 { return xs[i / 4u][i % 4u]; }`
    : `var<workgroup> xs: array<f32, ${d}>;
fn xw4(i: u32) -> vec4<f32> { return vec4<f32>(xs[i], xs[i + 1u], xs[i + 2u], xs[i + 3u]); }
fn xw1(i: u32) -> f32 { return xs[i]; }`;
}

/** B's row form in block-select and the scoring role. */
const bForm = (o: { wideB: boolean; i8B?: boolean }): DotForm => (o.i8B ? 'i8' : o.wideB ? 'wide' : 'narrow');

/** WGSL for a row's count of 16-byte (wide, i8: with the scale's chunk) or 8-byte chunks over r columns. */
const rcExpr = (form: DotForm) => (form === 'i8' ? '1u + (r + 15u) / 16u' : form === 'wide' ? '(r + 7u) / 8u' : '(r + 3u) / 4u');

/** Workgroup memory fc2Decl adds: hq, a block's h. */
const FC2_WG_BYTES = 4 * BS_NB;

/** fc2 row loads in flight a thread in fc2Partial: FC2_LOADS / chunks-a-thread rows a round (cap is ~7 at 10 % density). */
const FC2_LOADS = 8;

/**
 * FC2: the block's share of the sparse fc2, y_b = Σ_q h_q · W2t[chosen_q] over its chosen rows, into
 * part[t, blk, :] (vec4s, rows of 8·c8 floats, c8 = W2t's 16-byte chunks a row; a block with nothing
 * chosen stores zeros). A thread owns `cpt` chunks of 8 columns (c = lid + m·WG; cpt = ceil(c8 / WG),
 * compiled in); rows go FC2_LOADS / cpt at a time, all the round's loads in flight (rows with h = 0
 * are not read). Why: the one-pass fc2 (sparse-mlp.ts, fc2_direct) is a dispatch of its own whose
 * workgroups each walk a column block of every chosen row, a chain of sel → row loads; a block
 * already holds its rows and h, and whole rows read best (bench/atomic_probe.mjs). Summing the
 * partials in this dispatch (integer atomics, or the last block reducing them) measured slower than a
 * second, small dispatch: fc2Sum. Loading the first round before fc1 (the rows are known from the start
 * in the 'fc1' phase) made the OPT-6.7B step 9 % slower on an H200: 32 more registers live through fc1.
 * `half`: the partial is rounded to f16 once, at its store (pack2x16float: core WGSL), 8 columns a
 * vec4<u32>; fc2_sum adds them in f32. The partials are a third of the sparse fc2's bytes again at
 * 10 % density (written here, read by fc2_sum); f16 halves that, at the rounding of each block's
 * share of the MLP's output (relative 2⁻¹¹ at most, the precision fp16 inference keeps activations at).
 */
function fc2Decl(cpt: number, half: boolean): string {
  const R = Math.max(1, Math.floor(FC2_LOADS / cpt));
  const ms = Array.from({ length: cpt }, (_, m) => m), us = Array.from({ length: R }, (_, u) => u);
  return `@group(0) @binding(12) var<storage, read> W2: array<vec4<u32>>;
@group(0) @binding(13) var<storage, read_write> part: array<${half ? 'vec4<u32>' : 'vec4<f32>'}>;
var<workgroup> hq: array<f32, ${BS_NB}>;
${halves8Wgsl('f2lo', 'f2hi')}
// The 8 columns of chunk c of the partial at base: as f32 (two vec4s) or f16 (one vec4<u32>).
fn partStore(base: u32, c: u32, lo: vec4<f32>, hi: vec4<f32>) {
  ${half ? 'part[base + c] = vec4<u32>(pack2x16float(lo.xy), pack2x16float(lo.zw), pack2x16float(hi.xy), pack2x16float(hi.zw));' : 'part[2u * (base + c)] = lo; part[2u * (base + c) + 1u] = hi;'}
}
fn fc2Zero(blk: u32, t: u32, lid: u32) {
  let base = (t * p.nbt + blk) * p.c8;
  for (var c = lid; c < p.c8; c += WGS) { partStore(base, c, vec4<f32>(0.0), vec4<f32>(0.0)); }
}
// hq[0..count) and chosen[0..count) are set (a barrier before the call).
fn fc2Partial(blk: u32, t: u32, lid: u32, count: u32) {
  let base = (t * p.nbt + blk) * p.c8;
${ms.map((m) => `  let c${m} = lid + ${m}u * WGS; var a${m} = vec4<f32>(0.0); var b${m} = vec4<f32>(0.0);`).join('\n')}
  for (var q0 = 0u; q0 < count; q0 += ${R}u) {
${us.map((u) => `    let q${u} = q0 + ${u}u; let on${u} = q${u} < count && hq[min(q${u}, ${BS_NB - 1}u)] != 0.0; let g${u} = select(0.0, hq[min(q${u}, ${BS_NB - 1}u)], on${u}); let r${u} = chosen[min(q${u}, ${BS_NB - 1}u)] * p.c8;`).join('\n')}
${ms.flatMap((m) => us.map((u) => `    var w${m}_${u} = vec4<u32>(0u); if (on${u} && c${m} < p.c8) { w${m}_${u} = W2[r${u} + c${m}]; }`)).join('\n')}
${ms.flatMap((m) => us.map((u) => `    a${m} += g${u} * f2lo(w${m}_${u}); b${m} += g${u} * f2hi(w${m}_${u});`)).join('\n')}
  }
${ms.map((m) => `  if (c${m} < p.c8) { partStore(base, c${m}, a${m}, b${m}); }`).join('\n')}
}`;
}

/** Bytes of workgroup memory block-select takes with LN at width d and wg threads (red, xs, the block's arrays). */
export const blockSelectLnBytes = (d: number, wg: number, half = false, fc2 = false) => (half ? 2 : 4) * d + 4 * wg + 12 * BS_NB + 16 + (fc2 ? FC2_WG_BYTES : 0);

export function blockSelectWgsl(o: BlockSelectOpts): string {
  const W = o.wg, sg = o.subgroups, ln = !!o.ln, d = o.d ?? 0, fc1 = o.phase === 'fc1';
  // The LayerNorm's work after the choice (the 'fc1' phase, or choiceFirst), and then the rows' first loads before it.
  const lnLate = fc1 || (ln && !!o.choiceFirst), early = lnLate && o.early !== false;
  // fc1's dot of chosen row q3 (lanes a row): over xs with the folded LayerNorm, else over x of token t.
  const dotArgs = `jn - p.wRow0, rc3, lane3, lanes, ${ln ? '0u' : 't * p.d'}, p.d`;
  if (ln && !(d > 0 && (!o.xv4 || d % 4 === 0))) throw new Error('block_select: the folded LayerNorm needs the width d (a multiple of 4 with xv4)');
  if (o.xsHalf && !(ln && o.xv4)) throw new Error('block_select: f16 pairs in xs need ln and xv4');
  if (![256, 512, 1024].includes(W)) throw new Error('block_select: a workgroup is 256, 512 or 1024 threads');
  return `${enables({ f16: o.f16 && !((o.wideB || o.i8B) && o.wideW), subgroups: sg }, true)}
struct P { f: u32, r: u32, d: u32, k: u32, cap: u32, tauOn: u32, tauBits: u32, blk0: u32, bRow0: u32, wRow0: u32, uOff: u32, uStride: u32, epsBits: u32, c8: u32, nbt: u32 }
@group(0) @binding(0) var<uniform> p: P;
${o.fc2 ? fc2Decl(o.fc2Cpt ?? 1, !!o.partHalf) : ''}
${o.phase === 'fc1' ? '@group(0) @binding(11) var<storage, read> bcnt: array<u32>;   // each block\'s chosen count (the scoring role)' : `${dotFn('B', 1, 'u', 3, bForm(o), o.uv4, o.f16, o.unroll ?? 4)}
fn B_rc(r: u32) -> u32 { return ${rcExpr(bForm(o))}; }
@group(0) @binding(2) var<storage, read> bb: array<f32>;
@group(0) @binding(9) var<storage, read_write> cnt: array<atomic<u32>>;`}
${ln ? `${vecDecl('x', 6, o.xv4)}
${o.gw ? '' : o.xv4 ? '@group(0) @binding(10) var<storage, read> gv: array<vec4<f32>>;' : '@group(0) @binding(10) var<storage, read> gam: array<f32>;'}
${dotFn('W', 4, 'xw', -1, o.wideW ? 'wide' : 'narrow', o.xv4, o.f16, o.unroll ?? 4, lnVecDecl(d, o.xv4, !!o.xsHalf))}` : dotFn('W', 4, 'x', 6, o.wideW ? 'wide' : 'narrow', o.xv4, o.f16, o.unroll ?? 4)}
${ln ? '@group(0) @binding(5) var<storage, read> cc: array<f32>;   // c1 (f) then c2 (f)' : '@group(0) @binding(5) var<storage, read> b1: array<f32>;'}
@group(0) @binding(7) var<storage, read_write> sel: array<u32>;
@group(0) @binding(8) var<storage, read_write> h: array<f32>;
${choiceArraysWgsl(W, '')}
const WGS = ${W}u;
@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${sg ? ', @builtin(subgroup_invocation_id) sl: u32, @builtin(subgroup_size) ss: u32' : ''}) {
  let blk = p.blk0 + wid.x;
  let t = wid.z;
  let j0 = blk * ${BS_NB}u;
  let nv = min(${BS_NB}u, p.f - j0);   // the block's neurons (the last block may be short)
  ${fc1 ? '' : `if (lid == 0u) { atomicStore(&nChosen, 0u); }
  if (lid < ${BS_NB}u) { atomicStore(&rk[lid], 0u); }`}
  ${fc1 ? `${fc1Choice()}
  if (count == 0u) { ${o.fc2 ? 'fc2Zero(blk, t, lid); ' : ''}return; }` : ln && !lnLate ? lnPhase(o, W, sg) : ''}
${fc1 ? '' : `${scorePhase(W, 'p', '', !!o.i8B)}
  if (count == 0u) { ${o.fc2 ? 'fc2Zero(blk, t, lid); ' : ''}return; }`}
  // 3. fc1 over the chosen rows, the whole workgroup on them: rowsP = count rounded up to a power of
  //    two, lanes = ${W} / rowsP threads a row (a row of 512 16-byte chunks at d = 4096 and 6 chosen
  //    rows: 128 lanes, 4 chunks a thread, one round of loads), then a sum over each row's lanes.
  let rowsP = 1u << (32u - countLeadingZeros(count - 1u));
  let lanes = ${W}u / rowsP;
  let q3 = lid / lanes;
  let lane3 = lid % lanes;
  let rc3 = ${o.wideW ? '(p.d + 7u) / 8u' : '(p.d + 3u) / 4u'};
  var jn = j0;
  if (q3 < count) { jn = chosen[q3]; }
  var a3 = 0.0;
  ${early ? `// The rows are known before x's LayerNorm ('fc1' phase, choiceFirst): their first loads go out before its work.
  var pre: WPre;
  if (q3 < count) { pre = W_pre(jn - p.wRow0, rc3, lane3, lanes, p.d); }
  ${ln ? lnPhase(o, W, sg) : ''}
  if (q3 < count) { a3 = W_dotp(${dotArgs}, pre); }` : `${lnLate && ln ? lnPhase(o, W, sg) : ''}
  if (q3 < count) { a3 = W_dot(${dotArgs}); }`}
  // Each chosen row's sum over its lanes (subgroupAdd first where the lanes span whole subgroups).
  ${laneSumWgsl({ v: 'a3', lanes: 'lanes', lane: 'lane3', sg, narrow: true })}
  if (lane3 == 0u && q3 < count) {
    let slot = t * p.k + blk * p.cap + q3;
    sel[slot] = jn;
    let hv = ${ln ? 'max(lnInv * (red[lid] - lnM * cc[jn]) + cc[p.f + jn], 0.0)' : 'max(red[lid] + b1[jn], 0.0)'};
    h[slot] = hv;${o.fc2 ? `
    hq[q3] = hv;` : ''}
  }${o.fc2 ? `
  workgroupBarrier();
  fc2Partial(blk, t, lid, count);` : ''}
}
`;
}

/**
 * WGSL statements of the choice (steps 1 and 2 above) for block blk of token t at j0 (nv neurons),
 * through the workgroup arrays red, sc, rk, chosen, nChosen, nUni and the bindings B (dot), u, bb,
 * sel, h, cnt, with the parameters in uniform `P` (f, r, k, cap, tauOn, tauBits, bRow0, uOff,
 * uStride). Leaves `count` (workgroup-uniform) and chosen[0..count) (descending score); unused
 * slots get sel = j0, h = 0.
 */
function scorePhase(W: number, P: string, pre: string, i8: boolean): string {
  const L1 = W / BS_NB, G = W / BS_NB, per = BS_NB / G;
  const { sc, rk, chosen, nChosen, nUni, B, bb, sel, h, cnt } = choiceNames(pre);
  return `// 1. Scores of the block's rows: ${L1} lanes a row, a tree over them in workgroup memory.
  let row = lid / ${L1}u;
  let l1 = lid % ${L1}u;
  var acc = 0.0;
  if (row < nv) { acc = ${B}_dot(j0 + row - ${P}.bRow0, ${B}_rc(${P}.r), l1, ${L1}u, ${P}.uOff + t * ${P}.uStride, ${P}.r); }
  ${laneSumWgsl({ v: 'acc', lanes: `${L1}u`, lane: 'l1', sg: false })}
  if (lid < nv) { ${sc}[lid] = red[lid * ${L1}u]${i8 ? ` * ${B}_scale(j0 + lid - ${P}.bRow0, ${B}_rc(${P}.r))` : ''} + ${bb}[j0 + lid]; }
  workgroupBarrier();
  // 2. Ranks (descending score, ties to the lower index): thread (i, g) compares neuron i with the
  //    ${per} neurons of group g and adds its count into ${rk}[i] (integer atomics: deterministic).
  let ri = lid % ${BS_NB}u;
  let g = lid / ${BS_NB}u;
  if (ri < nv) {
    let s = ${sc}[ri];
    var c = 0u;
    for (var q = g * ${per}u; q < min(nv, (g + 1u) * ${per}u); q++) {
      let o2 = ${sc}[q];
      c += select(0u, 1u, o2 > s || (o2 == s && q < ri));
    }
    if (c > 0u) { atomicAdd(&${rk}[ri], c); }
  }
  workgroupBarrier();
  if (lid < nv) {
    let rank = atomicLoad(&${rk}[lid]);
    if ((${P}.tauOn == 0u || ${sc}[lid] > bitcast<f32>(${P}.tauBits)) && rank < ${P}.cap) {
      ${chosen}[rank] = j0 + lid;   // the chosen are ranks 0 .. count-1: slot = rank
      atomicAdd(&${nChosen}, 1u);
    }
  }
  workgroupBarrier();
  if (lid == 0u) { let n = atomicLoad(&${nChosen}); ${nUni} = n; atomicAdd(&${cnt}[0], n); }
  let count = workgroupUniformLoad(&${nUni});
  // Unused slots: h = 0 (sparse fc2 skips them), sel = a valid row.
  if (lid >= count && lid < ${P}.cap) {
    let slot = t * ${P}.k + blk * ${P}.cap + lid;
    ${sel}[slot] = j0;
    ${h}[slot] = 0.0;
  }`;
}

/**
 * The choice's workgroup arrays: red (laneSumWgsl's), the block's scores, ranks and chosen rows, the
 * chosen count and its uniform copy; names prefixed with `pre` ('' in block-select, 'bs' in the role).
 */
function choiceArraysWgsl(W: number, pre: string): string {
  const n = choiceNames(pre);
  return `var<workgroup> red: array<f32, ${W}>;
var<workgroup> ${n.sc}: array<f32, ${BS_NB}>;
var<workgroup> ${n.rk}: array<atomic<u32>, ${BS_NB}>;
var<workgroup> ${n.chosen}: array<u32, ${BS_NB}>;
var<workgroup> ${n.nChosen}: atomic<u32>;
var<workgroup> ${n.nUni}: u32;`;
}

/** The choice's names: block-select's own ('' prefix) or, prefixed, those of the role inside another kernel. */
function choiceNames(pre: string) {
  const n = (a: string, b: string) => (pre ? pre + b : a);
  return { sc: n('sc', 'Sc'), rk: n('rk', 'Rk'), chosen: n('chosen', 'Chosen'), nChosen: n('nChosen', 'N'), nUni: n('nUni', 'NU'),
    B: n('B', 'B'), bb: n('bb', 'Bias'), sel: n('sel', 'Sel'), h: n('h', 'H'), cnt: n('cnt', 'Cnt') };
}

/** The 'fc1' phase's choice: the scoring role's count (bcnt, a u32 a block a token) and chosen rows (sel). */
function fc1Choice(): string {
  return `if (lid == 0u) { nUni = bcnt[t * (p.k / p.cap) + blk]; }
  let count = workgroupUniformLoad(&nUni);
  if (lid < count) { chosen[lid] = sel[t * p.k + blk * p.cap + lid]; }
  workgroupBarrier();`;
}

/** Workgroup memory bytes the scoring role adds to its host kernel at wg threads (red, bsSc, bsRk, bsChosen, bsN, bsNU). */
export const blockScoreRoleBytes = (wg: number) => 4 * wg + 12 * BS_NB + 8;

/** The scoring role's parameters (a uniform of its own at binding 27; `ny`: the host's own grid rows). */
export const BS_ROLE_PARAMS = ['ny', 'f', 'r', 'k', 'cap', 'tauOn', 'tauBits', 'bRow0', 'uOff', 'uStride', 'nb'] as const;
export interface BlockScoreRoleOpts { wideB: boolean; uv4: boolean; f16: boolean; wg: number; unroll?: number; i8B?: boolean }
export const blockScoreRoleKey = (o: BlockScoreRoleOpts) => `bsrole_B${o.i8B ? 'i8' : o.wideB ? 8 : 4}_u${o.uv4 ? 4 : 1}_u${o.unroll ?? 4}${o.f16 ? '_f16' : ''}`;

/**
 * Block selection's choice (steps 1 and 2, no fc1) as a role inside another kernel's dispatch: with
 * DejaVu's lookahead u is known once the qkv GEMV has run, long before fc1's input (the residual after
 * out_proj), so the scoring and the choice need not wait on the dispatches in between. The host kernel
 * (attention: kernels/attention.ts) adds grid rows whose workgroups call blockScoreRole(blk, t, lid)
 * and return; then this file's 'fc1' phase computes the chosen rows' fc1 only. Writes sel (all cap
 * slots: chosen rows, then the block's first neuron), h = 0 for unused slots, the count into bcnt and
 * cnt[0]. Bindings 20 (B), 21 (u), 22 (bias), 23 (sel), 24 (h), 25 (cnt), 26 (bcnt), 27 (its uniform);
 * its names are prefixed so as not to meet the host's (but `red` and `lid`: laneSumWgsl's).
 */
export function blockScoreRoleWgsl(o: BlockScoreRoleOpts): string {
  const W = o.wg;
  if (![256, 512, 1024].includes(W)) throw new Error('block score role: a workgroup is 256, 512 or 1024 threads');
  const body = scorePhase(W, 'bp', 'bs', !!o.i8B);
  return `struct BP { ny: u32, f: u32, r: u32, k: u32, cap: u32, tauOn: u32, tauBits: u32, bRow0: u32, uOff: u32, uStride: u32, nb: u32 }
@group(0) @binding(27) var<uniform> bp: BP;
${dotFn('bsB', 20, 'bsU', 21, bForm(o), o.uv4, o.f16, o.unroll ?? 4)}
fn bsB_rc(r: u32) -> u32 { return ${rcExpr(bForm(o))}; }
@group(0) @binding(22) var<storage, read> bsBias: array<f32>;
@group(0) @binding(23) var<storage, read_write> bsSel: array<u32>;
@group(0) @binding(24) var<storage, read_write> bsH: array<f32>;
@group(0) @binding(25) var<storage, read_write> bsCnt: array<atomic<u32>>;
@group(0) @binding(26) var<storage, read_write> bsBcnt: array<u32>;
${choiceArraysWgsl(W, 'bs')}
// Block blk of token t (workgroup-uniform arguments: every thread calls it, with its barriers).
fn blockScoreRole(blk: u32, t: u32, lid: u32) {
  if (blk >= bp.nb) { return; }
  let j0 = blk * ${BS_NB}u;
  let nv = min(${BS_NB}u, bp.f - j0);
  if (lid == 0u) { atomicStore(&bsN, 0u); }
  if (lid < ${BS_NB}u) { atomicStore(&bsRk[lid], 0u); }
  workgroupBarrier();
  ${body}
  if (lid < count) { bsSel[t * bp.k + blk * bp.cap + lid] = bsChosen[lid]; }
  if (lid == 0u) { bsBcnt[t * bp.nb + blk] = count; }
}
`;
}

/**
 * WGSL statements of LN's first phase (see LN above): xs = γ∘(x − sh) (gw: x − sh) for token t, and lnM = μ − sh,
 * lnInv = 1 / sqrt(var + eps) in every thread, from two workgroup sums through red.
 */
function lnPhase(o: BlockSelectOpts, W: number, sg: boolean): string {
  const v4 = o.xv4;
  return `// 0. The MLP LayerNorm's input: sh = the mean of x[0..8) (gemv.ts, LN), u = x − sh into xs (times γ), Σu, Σu².
  var sh = 0.0;
  for (var i = 0u; i < min(p.d, 8u); i++) { sh += x1(t * p.d + i); }
  sh /= f32(min(p.d, 8u));
  var s1 = 0.0; var s2 = 0.0;
  ${v4 ? `for (var i = lid; i < p.d / 4u; i += ${W}u) {
    let u = x4(t * p.d + 4u * i) - vec4<f32>(sh);
    s1 += dot(u, vec4<f32>(1.0)); s2 += dot(u, u);
    ${o.xsHalf ? `let w = u${o.gw ? '' : ' * gv[i]'}; xs[2u * i] = pack2x16float(w.xy); xs[2u * i + 1u] = pack2x16float(w.zw);` : `xs[i] = u${o.gw ? '' : ' * gv[i]'};`}
  }` : `for (var i = lid; i < p.d; i += ${W}u) {
    let u = x1(t * p.d + i) - sh;
    s1 += u; s2 += u * u;
    xs[i] = u${o.gw ? '' : ' * gam[i]'};
  }`}
  var lnS1 = 0.0; var lnS2 = 0.0;
  { ${laneSumWgsl({ v: 's1', lanes: `${W}u`, lane: 'lid', sg })}
  lnS1 = red[0]; workgroupBarrier(); }
  { ${laneSumWgsl({ v: 's2', lanes: `${W}u`, lane: 'lid', sg })}
  lnS2 = red[0]; workgroupBarrier(); }
  let lnM = lnS1 / f32(p.d);
  let lnInv = 1.0 / sqrt(max(lnS2 / f32(p.d) - lnM * lnM, 0.0) + bitcast<f32>(p.epsBits));`;
}

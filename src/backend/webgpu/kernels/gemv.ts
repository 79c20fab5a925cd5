import { enables, kvPutWgsl, laneSumWgsl, weightDecl, wmode, type KernelFeatures, halves8Wgsl } from './common.js';
import { headChoiceWgsl } from './head-select.js';
import { argmaxKeyWgsl } from './argmax.js';

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
 * before a dense fc1, and the final one before the LM head, whose tied rows keep W as stored). A separate LayerNorm is one workgroup of dependent loads and barriers, ~8 µs
 * on an H200 at d = 4096, twice a layer; folded, its work rides in the GEMV's. With
 * LN(x) = γ ∘ (x − μ)·s + β, s = 1/sqrt(var + eps), and the stored weights unchanged:
 *   W[r]·LN(x) + b[r] = s·(Σ_k W[r,k] γ_k (x_k − h) − (μ − h)·c1[r]) + c2[r],  c1 = W·γ,  c2 = W·β + b,
 * for any shift h. The kernel takes h = the mean of x[0..8) (cached broadcast loads) and, for each x
 * chunk the dot loop loads anyway, accumulates u = x − h three ways: the dot product with W ∘ γ, Σu
 * and Σu². The lanes of one row together load every x element once, so the row's one existing
 * reduction (a vec3 instead of a float) yields μ − h = Σu/K and var = Σu²/K − (μ − h)²: no extra
 * passes over x and no extra barriers. (The first form made two more strided passes over x for the
 * mean, then the variance, with four more barriers, in every workgroup: 4-6 % slower at d = 4096
 * and 5120.) The shift keeps both subtractions small: f32 rounding of Σu²/K − (μ − h)² grows with
 * (μ − h)²/var (unshifted, μ²/var), so h must be near μ. A single element as h made an outlier
 * there cost that much (x[0] 50σ off the mean: 1.4e-4 relative error against LayerNorm-then-GEMV);
 * the mean of 8 moves by an eighth of one outlier's distance (2e-6 there, as the two-pass form;
 * 1-3e-7 with no outlier at mean 3, where the two-pass form gave 0.9-3e-6). c1 and c2 are per-matrix vectors
 * made once at load (Kernels.foldLayerNorm, through this kernel) and held in one buffer, c1 then c2
 * (allRows each; one binding, so ln + kv fit WebGPU's default of 8 storage buffers a stage); the
 * bias is inside c2. Bindings 6 (γ), 7 (c1 | c2, by global row like the bias); eps in the uniform.
 *
 * GAMMA IN W (gw, with LN): the stored weights are W∘γ (Kernels.foldLayerNormIntoWeights, at load;
 * c2 = W·β + b from the weights before, c1 = (W∘γ)·1 after, so the μ − h term cancels against the
 * rows as stored), and the dot loop takes u = x − h as it is: no γ loads and multiplies a chunk.
 * The qkv GEMV's dot loop with γ was ~2.7 µs of its ~35.5 at OPT-6.7B on an H200 (bench/qkv_probe.mjs).
 * Matrices riding the dispatch (PRED's A, HNEXT's head predictor) are stored the same way then (the
 * runner scales them when it fuses them); a GEMV over a mix would need two x sides (first measured
 * form: A's rows with the γ side beside qkv's without gained nothing at OPT-13B).
 *
 * KV: the qkv GEMV of decode also stores the new token's K and V in the cache (the kvStore kernel's
 * job, one dispatch fewer a layer): with d = allRows / 3, a row r in [d, 2d) also goes to
 * kc[(step[0] + t) d + r − d] and r in [2d, 3d) to vc[(step[0] + t) d + r − 2d], the layout
 * kvStoreWgsl writes. y still gets every row (attention reads q from it). Bindings 8 (step),
 * 9 (K cache), 10 (V cache). Not with GATHER or RESID (the cache gets the row's value, not y's).
 *
 * PRED (with KV and LN): DejaVu's lookahead. A sparse MLP's predictor that reads the layer's attention
 * input LN(x) needs the same x and the same LayerNorm as qkv, so its first product A (r, d) rides
 * in the qkv dispatch: rows [3d, 3d + r) of the output are A's, read from binding 13 (A's rows
 * have qkv's padding), written to y after qkv's rows. A separate A GEMV was a dependent dispatch of
 * its own, ~9 µs a layer in an OPT-6.7B decode step for 2.75 MB of weights. Workgroups hold rows of
 * one matrix only (3d a multiple of the rows a workgroup: Kernels.linear checks), so the branch is
 * uniform. c (binding 7) holds c1 then c2 over all 3d + r rows.
 *
 * HEADS (with KV): DejaVu's sparse attention heads. Every workgroup ranks the H head scores (binding
 * 14; kernels/head-select.ts, chooseHeads: two barriers, no sort) and workgroup 0 writes the chosen
 * list (15) and this position's skip row (16) for the kernels after it, so no dispatch of its own
 * chooses the heads (~7 µs a layer at OPT-6.7B on an H200). A workgroup's rows lie in one head (the
 * head dim a multiple of the rows a workgroup: Kernels.headsFit), so a workgroup of an unchosen head
 * returns once it knows: its q, k, v weights are never read and its K/V store does not happen (the
 * skip row marks the position). With kvAll (HeadLayerPolicy.kv 'all', the default) only q rows are
 * skipped: every head stores K/V and the skip row stays 0. The predictor rows (PRED) always run.
 *
 * HNEXT (with KV and LN): DejaVu's lookahead for heads. The next layer's head predictor (H, d), fitted
 * on this layer's attention input (policy.ts, HeadInput 'prev_attn_in'), reads the same LN(x) as
 * qkv, so its scores ride this dispatch too: rows [3d + PR, 3d + PR + H) (PR = the lookahead MLP
 * predictor's rows before them, or 0) are its rows, read from binding 18, and their values go to the
 * next layer's score buffer (binding 19), not to y. The score GEMV was a dependent dispatch of its own
 * in front of every sparse-heads layer's qkv GEMV (~8 µs a layer at OPT-6.7B on an H200, for 0.25 MB
 * of weights). c (binding 7) holds c1 then c2 over all 3d + PR + H rows. As with PRED, workgroups
 * hold rows of one matrix only (3d + PR a multiple of the rows a workgroup).
 *
 * LAZY (HEADS with lazy: kv 'chosen' with kvWindow 2, DejaVu's lazy K/V completion): at an even
 * position p only the chosen heads' q, k and v rows run; workgroup 0 records the unchosen heads as
 * holes (binding 16: H u32, not the skip rows) and saves this layer's input (binding 17: x, or with
 * LN γ∘(x − h) and its Σu, Σu², so the second input costs no LayerNorm work where it is read). At the
 * odd position p + 1 the chosen heads' q rows run and every head's k and v rows, and a workgroup of
 * a head with a hole reads its weights once for two inputs, x and the saved x, storing K/V at p + 1
 * and at p (its "two-vector" loop: multi-row form only, Kernels.linear forces it). So attention
 * never meets a hole (every position below an even p was completed at the odd step before; an odd
 * step completes itself first): the cache equals kv 'all''s, at (2ρ + 2)/2 of K and V's weight bytes
 * a step instead of 2 (ρ = k/H).
 *
 * AMAX (T = 1, no kv / resid): greedy decoding's first half of the argmax, in the LM head GEMV's
 * epilogue. Each workgroup also writes the largest of its rows as a pair (order-preserving key,
 * global row) to am[2 (amaxOff + g)] (binding 20; amaxOff: this part's first workgroup slot), with
 * the rule of kernels/argmax.ts (the largest key, the lowest row on ties, a row's first value taken
 * whatever its key); the argmax kernel's pairs form then reduces the slots (V / rows a workgroup of
 * them: 6284 pairs at OPT's vocabulary and 8 rows a workgroup (6.7b, 13b; 3142 at 1.3b's 16), not 50272 floats). The one-workgroup
 * argmax over the logits was ~14 µs of a greedy step; reading y back costs each row's writer one
 * load of what it just stored.
 *
 * RIDE (T = 1, no ln / kv / gather / amax; a plain or residual GEMV): rows [D, D + r) (D = kvD, the
 * main matrix's rows) are another matrix's, read from binding 13 (WA, the main matrix's width) on the
 * same x, and each adds its dot into y2[rideOff + row − D] (binding 21; no bias, no ReLU). attn_io
 * predictors (policy.ts): their A's o half rides out_proj, which reads o anyway, and adds into u where
 * the qkv GEMV left A's attn_in half: no dispatch of its own (~5–9 µs a layer in a decode step).
 * Workgroups hold rows of one matrix only (D a multiple of the rows a workgroup: Kernels.canRide).
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
  /** The pre-LayerNorm folded in (see above): needs gamma and c (c1 | c2) bound and epsBits; no bias (c2 has it). */
  ln?: boolean;
  /** The K and V rows of a qkv matrix also written to the KV cache at step[0] + t (see above). */
  kv?: boolean;
  /**
   * With ln: also write the normalized row LN(x) = γ ∘ (x − μ)·s + β to xn (bindings 11 β, 12 xn),
   * each workgroup its own slice, from the statistics every workgroup computes anyway. For a GEMV
   * whose input's LayerNorm output has another reader (the sparse MLP's predictor A: the fused
   * block-select kernel and the gathered fc1 read LN(x) too): the LayerNorm dispatch goes.
   */
  lnOut?: boolean;
  /** With lnOut: write x̂ = (x − μ)·s instead (no γ, β; binding 11 unused), for readers whose weights carry γ (GAMMA IN W). */
  lnOutHat?: boolean;
  /**
   * Rows a thread (wide form, no gather): each thread's lanes walk `rpt` rows R apart with the same
   * column chunks, so every x chunk it loads (and, with ln, its γ∘(x − h) and the statistics' terms)
   * serves rpt weight loads instead of one. The workgroup covers R·rpt rows. Default 1.
   */
  rpt?: number;
  /** With kv: the cache holds packed f16 (Kernels.kvHalf, kvPutWgsl). */
  kvHalf?: boolean;
  /** With kv and ln: rows from 3d on are predictor A's, read from binding 13 (see PRED above). */
  pred?: boolean;
  /** Rows from kvD on are another matrix's (binding 13), added into y2 (binding 21) from rideOff (see RIDE above). */
  ride?: boolean;
  /**
   * With kv: sparse heads (HEADS below): head dim hd, the top k of H heads by the scores run. A
   * workgroup whose rows are q, k or v rows of another head returns before reading weights.
   */
  /**
   * lazy (LAZY below): the form for even positions or for odd ones (the runner picks by position), or
   * 'complete': only the owed completion of the position before step[0] (a prompt or a policy change
   * that comes after an even decode step).
   */
  heads?: { hd: number; H: number; k: number; kvAll: boolean; lazy?: 'even' | 'odd' | 'complete' };
  /** With kv and ln: rows from 3d + hnext on are the next layer's head predictor's (HNEXT above; hnext = PRED's rows, or 0). */
  hnext?: number;
  /**
   * With ln: the weights already carry γ (GAMMA IN W above: W∘γ made at load; so do PRED's and
   * HNEXT's matrices), so the dot loop takes u = x − h as it is; only lnOut still reads γ.
   */
  gw?: boolean;
  /** AMAX above: each workgroup's largest row as a (key, row) pair into binding 20. */
  amax?: boolean;
  /**
   * PEEL (with ln and rpt > 1): the dot loop's first trip is written out before the loop with its
   * weight and x loads ahead of the shift's (shiftOf), so that the shift's round trip to L2 overlaps
   * theirs instead of coming before any weight load. Decode on an H200, GPU ms a token
   * (docs/benchmarks.md, sixteenth session): opt-1.3b dense 1.282 → 1.229 (−4.1 %), mlp (the qkv
   * GEMV with predictor A's rows) 1.012 → 1.002; at d ≥ 4096 it gained nothing dense (+0.3 / +0.7 %)
   * and lost with riders or sparse heads (opt-6.7b mlp +4.4 %, dejavu +2.5 %), so ops.ts sets it for
   * folded GEMVs without sparse heads of rows of at most 256 chunks (d ≤ 2048) only.
   */
  peel?: boolean;
}

/**
 * Whether a row's lanes are exactly one subgroup (TPR = the adapter's one subgroup size): a row's sum
 * is then subgroupAdd alone, with no workgroup memory and no barrier a row (H200: opt-6.7b dense
 * decode −2.7 %, its qkv and fc1 at 8 rows of 32 threads; LAZY's odd form sums its second input's dots
 * so too). Not for lnOut (it reads row 0's sums from `red`). Subgroups are runs of consecutive invocations, as laneSumWgsl
 * assumes too. (Rows of several subgroups, a subgroupAdd each and one barrier for a thread's rows,
 * measured −0.9 % at opt-6.7b but +3.7 % at opt-13b dense: not kept.)
 */
export function sgExact(f: KernelFeatures, o: GemvOpts): boolean {
  return f.subgroups && f.subgroupSize === o.tpr && !o.lnOut;
}

/** Whether the several-rows-a-thread main peels its first trip (PEEL): the option, with ln and rpt > 1. */
export function gemvPeels(o: GemvOpts): boolean {
  return !!o.ln && !!o.peel && (o.rpt ?? 1) > 1;
}

/** Whether the GEMV reads γ (binding 6): the folded LayerNorm, unless the weights carry it (then lnOut only). */
export function gemvReadsGamma(o: GemvOpts): boolean {
  return !!o.ln && (!o.gw || (!!o.lnOut && !o.lnOutHat));
}

export function gemvKey(f: KernelFeatures, o: GemvOpts): string {
  return `gemv_${o.wide ? (o.xv4 ? 'w8x4v' : 'w8x4') : wmode(f)}_${f.subgroups ? `sg${sgExact(f, o) ? 'x' : ''}` : 'wgmem'}_r${o.rows}_tpr${o.tpr}${o.bias ? '_bias' : ''}${o.relu ? '_relu' : ''}${o.resid ? '_resid' : ''}${o.gather ? '_gather' : ''}${o.kv ? (o.kvHalf ? '_kv16' : '_kv') : ''}${o.ln ? '_ln' : ''}${o.lnOut ? (o.lnOutHat ? 'hat' : 'out') : ''}${o.pred ? '_predA' : ''}${o.ride ? '_ride' : ''}${o.heads ? `_hd${o.heads.hd}h${o.heads.H}k${o.heads.k}${o.heads.kvAll ? 'q' : ''}${o.heads.lazy ? `z${o.heads.lazy[0]}` : ''}` : ''}${o.hnext !== undefined ? `_hn${o.hnext}` : ''}${(o.rpt ?? 1) > 1 ? `_p${o.rpt}` : ''}${gemvPeels(o) ? '_pl' : ''}${o.gw ? '_gw' : ''}${o.amax ? '_amax' : ''}`;
}

/**
 * Uniform layout (u32 each). allRows: rows of the whole matrix (all parts; with pred, A's too), for
 * ln's c2; kvD: kv's d; amaxOff: AMAX's first slot for this part (callers without AMAX may leave it
 * out: Kernels.uniform pads to a multiple of 4 words, and every GEMV caller passes at least 13).
 */
export const GEMV_PARAMS = ['rows', 'K', 'K4', 'rowOff', 'partRows', 'inStride', 'inOff', 'outStride', 'outOff', 'selStride', 'nwgx', 'epsBits', 'allRows', 'kvD', 'amaxOff', 'rideOff'] as const;

/**
 * AMAX's code (workgroup-uniform, after every row's epi): lane 0 of each row slot takes its rows' best
 * (key, row) from y as epi stored it, then the workgroup's best through two workgroup atomics (zeroed
 * at the start: key 0 is below every key a row can give, the row stored as ~row so that 0 is "none").
 * `rowsOf` lists the thread's rows (output row r of the part, in increasing order).
 */
function amaxCode(rowsOf: string[]): string {
  return `{
    var bk = 0u; var bi = AM_NONE;
    if (lane == 0u) {
      ${rowsOf.map((r) => `if (${r} < p.rows) {
        let k = amKey(bitcast<u32>(y[t * p.outStride + p.outOff + ${r}]));
        if (bi == AM_NONE || k > bk) { bk = k; bi = p.rowOff + ${r}; }
      }`).join('\n      ')}
    }
    atomicMax(&amk, bk);
    workgroupBarrier();
    let top = atomicLoad(&amk);
    if (bi != AM_NONE && bk == top) { atomicMax(&ami, ~bi); }
    workgroupBarrier();
    if (lid == 0u && g * RP < p.rows) {
      let s = 2u * (p.amaxOff + g);
      am[s] = top;
      am[s + 1u] = ~atomicLoad(&ami);
    }
  }`;
}

/** AMAX's declarations: the pair buffer, the workgroup's atomics and argmax.ts's key. */
const AMAX_DECL = `@group(0) @binding(20) var<storage, read_write> am: array<u32>;
var<workgroup> amk: atomic<u32>;
var<workgroup> ami: atomic<u32>;
const AM_NONE = 0xffffffffu;
${argmaxKeyWgsl('amKey')}`;

export function gemvWgsl(f: KernelFeatures, o: GemvOpts): string {
  const WG = o.rows * o.tpr;
  const sg = f.subgroups;
  const ln = !!o.ln;
  if (ln && o.bias) throw new Error('gemv: with the LayerNorm folded in, the bias is part of c2');
  if (o.kv && (o.gather || o.resid)) throw new Error('gemv: the KV-cache store is for the dense qkv GEMV (no gather, no residual add)');
  if (o.lnOut && (!ln || o.kv || o.gather)) throw new Error('gemv: lnOut needs ln (and no kv or gather)');
  if (o.pred && !(o.kv && ln)) throw new Error('gemv: the lookahead predictor rows ride the folded qkv GEMV (kv and ln)');
  if (o.hnext !== undefined && !(o.kv && ln)) throw new Error('gemv: the next layer\'s head scores ride the folded qkv GEMV (kv and ln)');
  if (o.heads && !o.kv) throw new Error('gemv: sparse heads are a form of the qkv GEMV (kv)');
  if (o.gw && !ln) throw new Error('gemv: γ in the weights is a form of the folded LayerNorm');
  if (o.amax && (o.kv || o.resid || o.gather || o.heads || o.hnext !== undefined)) throw new Error('gemv: the argmax epilogue is a form of the plain or folded GEMV (no kv, residual, gather or heads)');
  if (o.ride && (ln || o.kv || o.gather || o.amax || o.relu)) throw new Error('gemv: riding rows are a form of the plain or residual GEMV (no ln, kv, gather, ReLU or argmax)');
  const gw = !!o.gw, readsG = gemvReadsGamma(o);
  const P = o.rpt ?? 1;
  if (P > 1 && (!o.wide || o.gather)) throw new Error('gemv: several rows a thread is a form of the wide, non-gather GEMV');
  const lazy = !!o.heads?.lazy, complete = o.heads?.lazy === 'complete', odd = o.heads?.lazy === 'odd' || complete;
  if (lazy && (o.heads!.kvAll || P < 2 || !o.xv4)) throw new Error('gemv: lazy K/V completion is a form of the multi-row qkv GEMV with vec4 x and kv chosen');
  // LAZY's saved input: x, or with ln γ∘(x − sh) and then (Σu, Σu², 0, 0): the two-input loop then
  // costs one more dot a chunk and no LayerNorm work (the first form redid the LayerNorm terms of the
  // saved raw x there: opt-6.7b's dejavu step 3.258 GPU ms against 3.214 with this, H200).
  const saveCode = !lazy ? '' : ln ? `{
    var sh0 = 0.0;
    for (var i = 0u; i < min(p.K, 8u); i++) { sh0 += xs(p.inOff + i); }
    sh0 /= f32(min(p.K, 8u));
    var s = vec2<f32>(0.0);
    for (var j = lid; j < p.K / 4u; j += WG) {
      let u = x4(p.inOff + 4u * j) - vec4<f32>(sh0);
      xp[j] = u${gw ? '' : ' * g4(4u * j)'};
      s += vec2<f32>(dot(u, vec4<f32>(1.0)), dot(u, u));
    }
    red[lid] = RT(0.0, s.x, s.y);
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st >>= 1u) {
      if (lid < st) { red[lid] += red[lid + st]; }
      workgroupBarrier();
    }
    if (lid == 0u) { xp[p.K / 4u] = vec4<f32>(red[0].y, red[0].z, 0.0, 0.0); }
    workgroupBarrier();
  }` : `{
    for (var j = lid; j < p.K / 4u; j += WG) { xp[j] = x4(p.inOff + 4u * j); }
  }`;
  // Per-thread partial sums: the dot product, or (dot, Σu, Σu²) of the shifted x with the LayerNorm folded in.
  const RT = ln ? 'vec3<f32>' : 'f32';
  // γ at element k of the row (4 from k, or 1), as vec4 where x is (K % 4 == 0 then).
  const g4 = o.xv4 ? 'gv[k / 4u]' : 'vec4<f32>(gam[k], gam[k + 1u], gam[k + 2u], gam[k + 3u])';
  const g1 = o.xv4 ? 'gv[k / 4u][k % 4u]' : 'gam[k]';
  const sh = ln ? ', sh' : '';
  // One chunk's contribution: wv (4 weights) against x from element k of the row at xb.
  const term4 = ln ? `fn term4(wv: vec4<f32>, xb: u32, k: u32, sh: f32) -> vec3<f32> {
  let u = x4(xb + k) - vec4<f32>(sh);
  return vec3<f32>(dot(wv${gw ? '' : ' * g4(k)'}, u), dot(u, vec4<f32>(1.0)), dot(u, u));
}` : `fn term4(wv: vec4<f32>, xb: u32, k: u32) -> f32 { return dot(wv, x4(xb + k)); }`;
  // The zero-padded last chunk of a row (K not a multiple of the chunk): n < 4 elements from k exist.
  const tail4 = ln ? `fn tail4(wv: vec4<f32>, xb: u32, k: u32, n: u32, sh: f32) -> vec3<f32> {
  var u = vec4<f32>(0.0); var g = vec4<f32>(0.0);
  for (var i = 0u; i < n; i++) { u[i] = xs(xb + k + i) - sh; g[i] = ${gw ? '1.0' : 'g1(k + i)'}; }
  return vec3<f32>(dot(wv * g, u), dot(u, vec4<f32>(1.0)), dot(u, u));
}` : `fn tail4(wv: vec4<f32>, xb: u32, k: u32, n: u32) -> f32 {
  var u = vec4<f32>(0.0);
  for (var i = 0u; i < n; i++) { u[i] = xs(xb + k + i); }
  return dot(wv, u);
}`;
  // Unpeeled forms take the shift with this loop; the peeled form calls the straight-line shiftOf
  // (the same bits). shiftOf in every form measured slower (H200, docs/benchmarks.md: opt-6.7b dense
  // +2.5 %, mlp +6.5 %, 13b dense +2.3 %), so the two stay.
  const shiftCode = ln ? `// The statistics' shift, the same in every thread: the mean of the row's first 8 elements
  // (cached broadcast loads; an outlier among them moves it by an eighth of its distance).
  var sh = 0.0;
  for (var i = 0u; i < min(p.K, 8u); i++) { sh += xs(xb + i); }
  sh /= f32(min(p.K, 8u));` : '';
  // LN(x) for the other readers (lnOut): workgroup g writes its slice, with the statistics of row
  // 0's totals in red[0] (every row of the workgroup reduced the same x the same way: the same values).
  const lnOutCode = o.lnOut ? `{
    let t0 = red[0];
    let m0 = t0.y / f32(p.K);
    let inv0 = 1.0 / sqrt(max(t0.z / f32(p.K) - m0 * m0, 0.0) + bitcast<f32>(p.epsBits));
    let mu = sh + m0;
    let nwg = (p.rows + RP - 1u) / RP;
    let per = (p.K + nwg - 1u) / nwg;
    for (var j = lid; j < per; j += WG) {
      let i = g * per + j;
      if (i < p.K) { xn[t * p.K + i] = ${o.lnOutHat ? '(xs(xb + i) - mu) * inv0' : 'g1(i) * (xs(xb + i) - mu) * inv0 + beta[i]'}; }
    }
  }` : '';
  // The row's value from its reduced sums (epi, and epiPrev for LAZY's second input).
  const epiValue = `${ln ? `// tot = (Σ W γ u, Σu, Σu²), u = x − sh; m = μ − sh.
  let m = tot.y / f32(p.K);
  let inv = 1.0 / sqrt(max(tot.z / f32(p.K) - m * m, 0.0) + bitcast<f32>(p.epsBits));
  var v = inv * (tot.x - m * cc[p.rowOff + wrow]) + cc[p.allRows + p.rowOff + wrow];` : 'var v = tot;'}
  ${o.bias ? `v += bias[p.rowOff + wrow];` : ''}
  ${o.relu ? 'v = max(v, 0.0);' : ''}`;
  const kvHalf = !!(o.kv && o.kvHalf), kvE = kvHalf ? 'atomic<u32>' : 'f32';
  const kvPut = (buf: string, i: string) => (kvHalf ? kvPutWgsl(buf, i, 'v') : `${buf}[${i}] = v;`);
  return `${o.wide ? enables({ ...f, f16: false }, true) : enables(f, true)}
struct P { rows: u32, K: u32, K4: u32, rowOff: u32, partRows: u32, inStride: u32, inOff: u32, outStride: u32, outOff: u32, selStride: u32, nwgx: u32, epsBits: u32, allRows: u32, kvD: u32, amaxOff: u32, rideOff: u32 }
@group(0) @binding(0) var<uniform> p: P;
${o.wide ? '@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;' : weightDecl(f, 1, 'W')}
${o.pred || o.ride ? (o.wide ? '@group(0) @binding(13) var<storage, read> WA: array<vec4<u32>>;' : weightDecl(f, 13, 'WA')) : ''}
${o.ride ? '@group(0) @binding(21) var<storage, read_write> y2: array<f32>;' : ''}
${o.hnext !== undefined ? `${o.wide ? '@group(0) @binding(18) var<storage, read> WH: array<vec4<u32>>;' : weightDecl(f, 18, 'WH')}
@group(0) @binding(19) var<storage, read_write> hs: array<f32>;
const HN0 = ${o.hnext}u;   // where the next layer's head rows start, after 3d` : ''}
${o.xv4 ? `@group(0) @binding(2) var<storage, read> xv: array<vec4<f32>>;
fn xs(i: u32) -> f32 { return xv[i / 4u][i % 4u]; }
fn x4(i: u32) -> vec4<f32> { return xv[i / 4u]; }` : `@group(0) @binding(2) var<storage, read> x: array<f32>;
fn xs(i: u32) -> f32 { return x[i]; }
fn x4(i: u32) -> vec4<f32> { return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]); }`}
${readsG ? `${o.xv4 ? '@group(0) @binding(6) var<storage, read> gv: array<vec4<f32>>;' : '@group(0) @binding(6) var<storage, read> gam: array<f32>;'}
fn g4(k: u32) -> vec4<f32> { return ${g4}; }
fn g1(k: u32) -> f32 { return ${g1}; }` : ''}
${ln ? '@group(0) @binding(7) var<storage, read> cc: array<f32>;' : ''}
${o.lnOut ? `${o.lnOutHat ? '' : '@group(0) @binding(11) var<storage, read> beta: array<f32>;'}
@group(0) @binding(12) var<storage, read_write> xn: array<f32>;` : ''}
${o.kv ? `@group(0) @binding(8) var<storage, read> step: array<u32>;
@group(0) @binding(9) var<storage, read_write> kc: array<${kvE}>;
@group(0) @binding(10) var<storage, read_write> vc: array<${kvE}>;` : ''}
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
alias RT = ${RT};
${term4}
${tail4}
${o.wide ? `${halves8Wgsl('w8lo', 'w8hi')}
fn dot8(w: vec4<u32>, xb: u32, k: u32${ln ? ', sh: f32' : ''}) -> RT { return term4(w8lo(w), xb, k${sh}) + term4(w8hi(w), xb, k + 4u${sh}); }` : ''}
${o.bias ? '@group(0) @binding(4) var<storage, read> bias: array<f32>;' : ''}
${o.gather ? '@group(0) @binding(5) var<storage, read> sel: array<u32>;' : ''}
const R = ${o.rows}u;
const TPR = ${o.tpr}u;
const WG = ${WG}u;
const RP = ${o.rows * P}u;   // rows a workgroup
var<workgroup> red: array<RT, ${WG}>;
${o.amax ? AMAX_DECL : ''}
${lazy ? `@group(0) @binding(17) var<storage, read_write> xp: array<vec4<f32>>;
fn x8P(k: u32) -> X8 { return X8(xp[k / 4u], xp[k / 4u + 1u]); }
${headChoiceWgsl(o.heads!.H, o.heads!.k, { scores: 14, hl: 15, skip: 16 }, false, true)}
var<workgroup> hmode: u32;
// LAZY: what workgroup g does: 0 nothing (q, or at an even position k/v, of an unchosen head), 1 its
// rows for this token, 2 (k/v rows at an odd position of a head whose hole tag is this position) its
// rows for this token and for the saved input. At an even position workgroup 0 also saves x. The
// 'complete' form runs the mode-2 workgroups only and stores only the saved input's K/V (its loop
// still dots x too and drops that: the form runs once per prompt or policy change, not per token).
fn headMode(g: u32, lid: u32) -> u32 {
  let first = g == 0u && p.rowOff == 0u;
  let odd = ${odd};
  let wr = p.rowOff + g * RP;
  let h = (wr % p.kvD) / ${o.heads!.hd}u;
  // Only the workgroups whose rows depend on the choice (q rows, and at an even position k/v rows
  // too) and the one that writes it rank the heads: the ranking's loads and barriers stand before a
  // workgroup's first weight load (the full step 1.8 % faster at opt-13b and 2.5 % at 30b than with
  // every workgroup ranking, H200). (Counting only the heads that beat a workgroup's own, with a workgroup atomic,
  // was 0.7 % slower at opt-6.7b.) (The completion writes no choice; its q rows rank anyway so the
  // bind group stays the decode forms'.)
  if (first || wr < ${odd ? 'p.kvD' : '3u * p.kvD'}) { chooseHeads(lid, step[0], ${complete ? 'false' : 'first'}); }
  ${odd ? '' : `if (first) ${saveCode}`}
  if (lid == 0u) {
    var m = ${complete ? '0u' : '1u'};
    if (wr < 3u * p.kvD) {
      let owed = skip[h] == step[0];
      ${complete ? 'm = select(0u, 2u, wr >= p.kvD && owed);' : 'if (wr < p.kvD || !odd) { m = hch[h]; } else { m = select(1u, 2u, owed); }'}
    }
    hmode = m;
  }
  return workgroupUniformLoad(&hmode);
}` : o.heads ? `${headChoiceWgsl(o.heads.H, o.heads.k, { scores: 14, hl: 15, skip: 16 }, o.heads.kvAll)}
var<workgroup> hskip: u32;
// Whether workgroup g's rows are q, k or v rows of a head not chosen for this token (HEADS).
fn headSkipped(g: u32, lid: u32) -> bool {
  let first = g == 0u && p.rowOff == 0u;
  let wr = p.rowOff + g * RP;
  // The rows a choice can skip (q rows; k/v rows too unless every head keeps K/V): only their
  // workgroups and the one that writes the choice rank the heads. The ranking's loads and barriers
  // stand before a workgroup's first weight load; k/v rows with kvAll and predictor rows never use it
  // (opt-6.7b's full step 2.2 % faster, H200).
  let choosy = wr < ${o.heads.kvAll ? 'p.kvD' : '3u * p.kvD'};
  if (!choosy && !first) { return false; }
  chooseHeads(lid, step[0], first);
  if (lid == 0u) {
    hskip = select(0u, 1u, choosy && hch[(wr % p.kvD) / ${o.heads.hd}u] == 0u);
  }
  return workgroupUniformLoad(&hskip) == 1u;
}` : ''}

// The epilogue of output row r (weight row wrow of this part) from its reduced sums.
fn epi(t: u32, r: u32, wrow: u32, tot: RT) {
  ${o.ride ? `if (p.rowOff + wrow >= p.kvD) {   // a riding row (T = 1): into y2, as it is
    let oi2 = p.rideOff + p.rowOff + wrow - p.kvD;
    y2[oi2] = y2[oi2] + tot;
    return;
  }` : ''}
  ${epiValue}
  ${o.hnext !== undefined ? `let hr = p.rowOff + wrow;
  if (hr >= 3u * p.kvD + HN0) { hs[hr - 3u * p.kvD - HN0] = v; return; }   // the next layer's head score` : ''}
  let oi = t * p.outStride + p.outOff + r;
  ${o.resid ? 'y[oi] = y[oi] + v;' : 'y[oi] = v;'}
  ${o.kv ? `// The matrix row (q [0, d), k [d, 2d), v [2d, 3d)): K and V rows also go to the cache.
  let kr = p.rowOff + wrow;
  let kd = p.kvD;
  if (kr >= kd && kr < 3u * kd) {
    let kp = (step[0] + t) * kd;
    if (kr < 2u * kd) { ${kvPut('kc', 'kp + kr - kd')} } else { ${kvPut('vc', 'kp + kr - 2u * kd')} }
  }` : ''}
}
${odd ? `// LAZY: the K or V row wrow of the saved input goes to the cache at the position before this one.
fn epiPrev(wrow: u32, tot: RT) {
  ${epiValue}
  let kr = p.rowOff + wrow;
  let kd = p.kvD;
  let kp = (step[0] - 1u) * kd;
  if (kr < 2u * kd) { ${kvPut('kc', 'kp + kr - kd')} } else { ${kvPut('vc', 'kp + kr - 2u * kd')} }
}` : ''}
${P > 1 ? multiRowMain(o, P, sg, sgExact(f, o), ln, shiftCode, lnOutCode) : `
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${sg ? ', @builtin(subgroup_invocation_id) sl: u32, @builtin(subgroup_size) ss: u32' : ''}) {
  let g = wid.x + wid.y * p.nwgx;
  ${o.heads ? 'if (headSkipped(g, lid)) { return; }' : ''}
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
  var acc = RT(0.0);
  let xb = t * p.inStride + p.inOff;
  ${shiftCode}
  if (live) {
${o.hnext !== undefined ? `    if (g * R >= 3u * p.kvD + HN0) {   // the next layer's head predictor's rows (uniform, as PRED's)
${singleRowDot(o, sh, 'WH', '(wrow - 3u * p.kvD - HN0)')}
    } else ` : '    '}${o.pred ? `if (g * R >= 3u * p.kvD) {   // the lookahead predictor's rows (uniform: 3d is a multiple of R)
${singleRowDot(o, sh, 'WA', '(wrow - 3u * p.kvD)')}
    } else ` : ''}${o.ride ? `if (g * R >= p.kvD) {   // the riding matrix's rows (uniform: D is a multiple of R)
${singleRowDot(o, sh, 'WA', '(wrow - p.kvD)')}
    } else ` : ''}{
${singleRowDot(o, sh, 'W', 'wrow')}
    }
  }
  // The row's sum (subgroup size <= TPR: true of every driver seen).
  ${sgExact(f, o) ? `let tot = subgroupAdd(acc);
  if (lane == 0u && live) { epi(t, r, wrow, tot); }` : `${laneSumWgsl({ v: 'acc', lanes: 'TPR', lane: 'lane', sg, zero: 'RT(0.0)' })}
  ${lnOutCode}
  if (lane == 0u && live) { epi(t, r, wrow, red[lid]); }`}
  ${o.amax ? amaxCode(['r']) : ''}
}
`}
`;
}

/** The single-row form's dot loop over weight matrix `M` (W, or WA / WH for the lookahead rows) at row `row`. */
function singleRowDot(o: GemvOpts, sh: string, M: string, row: string): string {
  return o.wide ? `    let wb = ${row} * (p.K4 / 2u);
    let full = p.K / 8u;
    var a0 = RT(0.0); var a1 = RT(0.0); var a2 = RT(0.0); var a3 = RT(0.0);
    var c = lane;
    // Four independent 16-byte loads per iteration keep enough bytes in flight to saturate HBM.
    loop {
      if (c + 3u * TPR >= full) { break; }
      let w0 = ${M}[wb + c]; let w1 = ${M}[wb + c + TPR]; let w2 = ${M}[wb + c + 2u * TPR]; let w3 = ${M}[wb + c + 3u * TPR];
      a0 += dot8(w0, xb, c * 8u${sh});
      a1 += dot8(w1, xb, (c + TPR) * 8u${sh});
      a2 += dot8(w2, xb, (c + 2u * TPR) * 8u${sh});
      a3 += dot8(w3, xb, (c + 3u * TPR) * 8u${sh});
      c += 4u * TPR;
    }
    for (; c < full; c += TPR) { a0 += dot8(${M}[wb + c], xb, c * 8u${sh}); }
    acc = (a0 + a1) + (a2 + a3);
    // K not a multiple of 8: the last chunk is zero-padded in W; read only the x that exists.
    if (lane == 0u && full * 8u < p.K) {
      let w = ${M}[wb + full];
      let k = full * 8u;
      let n = p.K - k;
      acc += tail4(w8lo(w), xb, k, min(n, 4u)${sh});
      if (n > 4u) { acc += tail4(w8hi(w), xb, k + 4u, n - 4u${sh}); }
    }` : `    let wb = ${row} * p.K4;
    let full = p.K / 4u;
    for (var c = lane; c < full; c += TPR) {
      acc += term4(${M}_4(wb + c), xb, c * 4u${sh});
    }
    // Odd K: the last chunk is zero-padded in W; read only the x that exists.
    if (lane == 0u && full * 4u < p.K) { acc += tail4(${M}_4(wb + full), xb, full * 4u, p.K - full * 4u${sh}); }`;
}

/**
 * The main of the several-rows-a-thread form (GemvOpts.rpt = P > 1, wide rows, no gather): thread
 * (slot q, lane) owns rows g·R·P + q + i·R, i < P, and walks their chunks lane, lane + TPR, ... two
 * at a time: 2·P 16-byte weight loads in flight, each x chunk loaded once for P rows. With ln, the
 * x side is γ∘(x − sh) and the statistics' terms Σu, Σu² are taken once a chunk, not once a row.
 * Rows past the matrix read its last row (valid memory) and drop the result.
 */
function multiRowMain(o: GemvOpts, P: number, sg: boolean, exact: boolean, ln: boolean, shiftCode: string, lnOutCode: string): string {
  const peel = gemvPeels(o);
  const rows = Array.from({ length: P }, (_, i) => i);
  const each = (fn: (i: number) => string, sep = '\n') => rows.map(fn).join(sep);
  const shArgs = ln ? ', sh, &su' : '';
  const lazy = !!o.heads?.lazy, complete = o.heads?.lazy === 'complete', odd = o.heads?.lazy === 'odd' || complete;
  const gw = !!o.gw;
  // One trip of the dot loop: chunks c and c + TPR of each row, their x side made by `xside` (va, vb);
  // `two` (LAZY, odd positions): each weight chunk also meets the saved input (x8P, accumulators e#).
  const trip = (M: string, two: boolean, xside: string) => `${each((i) => `let w${i}a = ${M}[wb${i} + c]; let w${i}b = ${M}[wb${i} + c + TPR];`, '\n    ')}
    ${xside}
    ${each((i) => `d${i} += wdot(w${i}a, va) + wdot(w${i}b, vb);`, '\n    ')}
    ${two ? `let qa = x8P(c * 8u);
    let qb = x8P((c + TPR) * 8u);
    ${each((i) => `e${i} += wdot(w${i}a, qa) + wdot(w${i}b, qb);`, '\n    ')}` : ''}
    c += 2u * TPR;`;
  // The dot loop over weight matrix M (W, or WA / WH for the lookahead rows, whose row index is shifted by `off`).
  const loop = (M: string, off: string, two = false) => `${each((i) => `let wb${i} = (min(r0 + ${i}u * R, p.rows - 1u)${off}) * rc;`, '\n  ')}
  var c = lane;
  ${peel ? `// PEEL: the first trip peeled, its weight and x loads before the shift's, so that the shift's
  // x loads wait beside them and not ahead of them.
  if (c + TPR < full) {
    ${trip(M, two, `let ra = xraw(xb, c * 8u);
    let rb = xraw(xb, (c + TPR) * 8u);
    sh = shiftOf(xb);
    let va = xsh(ra, c * 8u, sh, &su);
    let vb = xsh(rb, (c + TPR) * 8u, sh, &su);`)}
  } else {
    sh = shiftOf(xb);
  }` : ''}
  loop {
    if (c + TPR >= full) { break; }
    ${trip(M, two, `let va = xin(xb, c * 8u${shArgs});
    let vb = xin(xb, (c + TPR) * 8u${shArgs});`)}
  }
  if (c < full) {
    ${each((i) => `let w${i}a = ${M}[wb${i} + c];`, ' ')}
    let va = xin(xb, c * 8u${shArgs});
    ${each((i) => `d${i} += wdot(w${i}a, va);`, ' ')}
    ${two ? `let qa = x8P(c * 8u);
    ${each((i) => `e${i} += wdot(w${i}a, qa);`, ' ')}` : ''}
  }
  // K not a multiple of 8: the last chunk is zero-padded in W; read only the x that exists.
  if (lane == 0u && full * 8u < p.K) {
    let k = full * 8u;
    let n = p.K - k;
    ${each((i) => `{
      let w = ${M}[wb${i} + full];
      var e = tail4(w8lo(w), xb, k, min(n, 4u)${ln ? ', sh' : ''});
      if (n > 4u) { e += tail4(w8hi(w), xb, k + 4u, n - 4u${ln ? ', sh' : ''}); }
      ${ln ? `d${i} += e.x;${i === 0 ? ' su += e.yz;' : ''}` : `d${i} += e;`}
    }`, '\n    ')}
  }
`;
  // Each row's sum over its lanes into tot (or tot2), one reduction after the other through red.
  const reduce = (acc: (i: number) => string, into: string, withLnOut: boolean) => each((i) => `{
    let acc = ${acc(i)};
    ${laneSumWgsl({ v: 'acc', lanes: 'TPR', lane: 'lane', sg, zero: 'RT(0.0)' })}
    ${into}[${i}] = red[lid];
    ${i === 0 && withLnOut && o.lnOut ? `${lnOutCode}\n    workgroupBarrier();` : ''}
  }`, '\n  ');
  return `
struct X8 { lo: vec4<f32>, hi: vec4<f32> }
// The x side of the chunk at element k: x itself, or with ln γ∘(x − sh) (x − sh where W carries γ:
// gw), adding Σu and Σu² into su.
fn xraw(xb: u32, k: u32) -> X8 { return X8(x4(xb + k), x4(xb + k + 4u)); }
${ln ? `// The x side from the raw chunk r at element k.
fn xsh(r: X8, k: u32, sh: f32, su: ptr<function, vec2<f32>>) -> X8 {
  let ul = r.lo - vec4<f32>(sh);
  let uh = r.hi - vec4<f32>(sh);
  *su += vec2<f32>(dot(ul, vec4<f32>(1.0)) + dot(uh, vec4<f32>(1.0)), dot(ul, ul) + dot(uh, uh));
  return ${gw ? 'X8(ul, uh)' : 'X8(ul * g4(k), uh * g4(k + 4u))'};
}
${peel ? `// The statistics' shift, the same in every thread: the mean of the row's first 8 elements (cached
// broadcast loads; an outlier among them moves it by an eighth of its distance). Straight-line
// where K >= 8, so its loads can issue together with the first trip's.
fn shiftOf(xb: u32) -> f32 {
  if (p.K >= 8u) {
    return (xs(xb) + xs(xb + 1u) + xs(xb + 2u) + xs(xb + 3u) + xs(xb + 4u) + xs(xb + 5u) + xs(xb + 6u) + xs(xb + 7u)) / 8.0;
  }
  var s = 0.0;
  for (var i = 0u; i < p.K; i++) { s += xs(xb + i); }
  return s / f32(p.K);
}` : ''}
fn xin(xb: u32, k: u32, sh: f32, su: ptr<function, vec2<f32>>) -> X8 { return xsh(xraw(xb, k), k, sh, su); }` : 'fn xin(xb: u32, k: u32) -> X8 { return xraw(xb, k); }'}
fn wdot(w: vec4<u32>, v: X8) -> f32 { return dot(w8lo(w), v.lo) + dot(w8hi(w), v.hi); }

@compute @workgroup_size(${o.rows * o.tpr})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${sg ? ', @builtin(subgroup_invocation_id) sl: u32, @builtin(subgroup_size) ss: u32' : ''}) {
  let g = wid.x + wid.y * p.nwgx;
  ${lazy ? 'let mode = headMode(g, lid);\n  if (mode == 0u) { return; }' : o.heads ? 'if (headSkipped(g, lid)) { return; }' : ''}
  let t = wid.z;
  let lane = lid % TPR;
  let r0 = g * RP + lid / TPR;
  let xb = t * p.inStride + p.inOff;
  ${peel ? 'var sh = 0.0;   // set by the dot loop\'s first trip (shiftOf)' : shiftCode}
  let rc = p.K4 / 2u;
  let full = p.K / 8u;
  ${each((i) => `var d${i} = 0.0;`, ' ')}
  var su = vec2<f32>(0.0);
  ${odd ? each((i) => `var e${i} = 0.0;`, ' ') : ''}
  ${o.hnext !== undefined ? `if (g * RP >= 3u * p.kvD + HN0) {   // the next layer's head predictor's rows (uniform, as PRED's)
  ${loop('WH', ' - 3u * p.kvD - HN0')}
  } else ` : ''}${o.pred ? `if (g * RP >= 3u * p.kvD) {   // the lookahead predictor's rows (uniform: 3d is a multiple of RP)
  ${loop('WA', ' - 3u * p.kvD')}
  } else ` : ''}${o.ride ? `if (g * RP >= p.kvD) {   // the riding matrix's rows (uniform: D is a multiple of RP)
  ${loop('WA', ' - p.kvD')}
  } else ` : ''}${odd ? `if (mode == 2u) {
  ${loop('W', '', true)}
  } else ` : ''}{
  ${loop('W', '')}
  }
  ${complete ? `if (mode == 3u) { y[0] = 0.0;${o.hnext !== undefined ? ' hs[0] = 0.0;' : ''} }   // never: keeps y (and hs) in the bind group the decode forms share` : `var tot: array<RT, ${P}>;
  ${exact ? each((i) => `tot[${i}] = subgroupAdd(${ln ? `vec3<f32>(d${i}, su.x, su.y)` : `d${i}`});`, ' ') : reduce((i) => (ln ? `vec3<f32>(d${i}, su.x, su.y)` : `d${i}`), 'tot', true)}
  if (lane == 0u) {
    ${each((i) => `if (r0 + ${i}u * R < p.rows) { epi(t, r0 + ${i}u * R, r0 + ${i}u * R, tot[${i}]); }`, '\n    ')}
  }
  ${o.amax ? amaxCode(rows.map((i) => `(r0 + ${i}u * R)`)) : ''}`}
  ${odd ? `if (mode == 2u) {   // uniform (workgroupUniformLoad): the reductions' barriers are allowed
    var tot2: array<RT, ${P}>;
    ${exact ? each((i) => `tot2[${i}] = subgroupAdd(${ln ? `vec3<f32>(e${i}, 0.0, 0.0)` : `e${i}`});`, ' ') : reduce((i) => (ln ? `vec3<f32>(e${i}, 0.0, 0.0)` : `e${i}`), 'tot2', false)}
    if (lane == 0u) {
      ${ln ? 'let st = xp[p.K / 4u];   // the saved input\'s (Σu, Σu²)' : ''}
      ${each((i) => `if (r0 + ${i}u * R < p.rows) { epiPrev(r0 + ${i}u * R, ${ln ? `vec3<f32>(tot2[${i}].x, st.x, st.y)` : `tot2[${i}]`}); }`, '\n      ')}
    }
  }` : ''}
}
`;
}

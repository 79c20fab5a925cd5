import { blockScoreRoleKey, blockScoreRoleWgsl, type BlockScoreRoleOpts } from './block-select.js';

/**
 * Causal attention for T queries at positions [pos, pos + T) over the KV cache ((maxPos, d), f16
 * packed two to a u32 with `half` (common.ts, kvPutWgsl), else f32; math in f32 either way).
 * One workgroup per (head, query): scores for all visible keys in workgroup memory, softmax, then
 * o = Σ p_j v_j. Also writes each head's output L2 norm (the head_norm trace point; one float).
 * q is read from the fused qkv buffer (T, 3d). pos comes from step[0]. CPU twin: `attention`.
 * Prefill (T > 1) runs this kernel; decode runs the split-K pair below (Kernels.attention chooses).
 */
export const ATT_WG = 64;
export const ATT_PARAMS = ['d', 'H', 'hd', 'scaleBits'] as const;

export const attentionKey = (maxPos: number, hd: number, half = false) => `attention_wg${ATT_WG}_p${maxPos}_hd${hd}${half ? '_kv16' : ''}`;

export function attentionWgsl(maxPos: number, hd: number, half = false): string {
  const E = half ? 'u32' : 'f32';
  const get = (buf: string) => (half ? `fn ${buf}1(i: u32) -> f32 { return unpack2x16float(${buf}[i / 2u])[i % 2u]; }` : `fn ${buf}1(i: u32) -> f32 { return ${buf}[i]; }`);
  return `
struct P { d: u32, H: u32, hd: u32, scaleBits: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read> kc: array<${E}>;
@group(0) @binding(4) var<storage, read> vc: array<${E}>;
@group(0) @binding(5) var<storage, read_write> o: array<f32>;
@group(0) @binding(6) var<storage, read_write> hn: array<f32>;
${get('kc')}
${get('vc')}
var<workgroup> sc: array<f32, ${maxPos}>;
var<workgroup> qs: array<f32, ${hd}>;
var<workgroup> red: array<f32, ${ATT_WG}>;
fn reduce(v: f32, lid: u32, isMax: bool) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var st = ${ATT_WG / 2}u; st > 0u; st >>= 1u) {
    if (lid < st) { red[lid] = select(red[lid] + red[lid + st], max(red[lid], red[lid + st]), isMax); }
    workgroupBarrier();
  }
  let s = red[0];
  workgroupBarrier();
  return s;
}
@compute @workgroup_size(${ATT_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let h = wid.x;
  let t = wid.y;
  let n = step[0] + t + 1u;
  let hb = h * p.hd;
  for (var i = lid; i < p.hd; i += ${ATT_WG}u) { qs[i] = qkv[t * 3u * p.d + hb + i]; }
  workgroupBarrier();
  let scale = bitcast<f32>(p.scaleBits);
  var m = -3.0e38;
  for (var j = lid; j < n; j += ${ATT_WG}u) {
    var s = 0.0;
    let kb = j * p.d + hb;
    for (var i = 0u; i < p.hd; i++) { s += qs[i] * kc1(kb + i); }
    s *= scale;
    sc[j] = s;
    m = max(m, s);
  }
  m = reduce(m, lid, true);
  var sum = 0.0;
  for (var j = lid; j < n; j += ${ATT_WG}u) { let e = exp(sc[j] - m); sc[j] = e; sum += e; }
  sum = reduce(sum, lid, false);
  var nrm = 0.0;
  for (var i = lid; i < p.hd; i += ${ATT_WG}u) {
    var a = 0.0;
    for (var j = 0u; j < n; j++) { a += sc[j] * vc1(j * p.d + hb + i); }
    a /= sum;
    o[t * p.d + hb + i] = a;
    nrm += a * a;
  }
  nrm = reduce(nrm, lid, false);
  if (lid == 0u) { hn[t * p.H + h] = sqrt(nrm); }
}
`;
}

// ---- split-K decode attention (flash-decoding) ----
//
// The kernel above is one workgroup per (head, query): 32 workgroups for an OPT-6.7B decode step,
// each walking every position serially. The split form spreads one query's positions over S splits:
//   phase 1 (grid S × H × T): each split covers `chunk` consecutive positions, in tiles of TILE
//     rows (64 for OPT's head dims). A row of K (or V) of one head is read by HV consecutive threads (vec4 loads when hd % 4 == 0),
//     so loads coalesce; ATS_WG / HV such thread groups take rows round-robin. K and V of a row are
//     loaded together (V into registers) so their latencies overlap. Scores go through workgroup
//     memory (or, GROUP ROWS below, stay in each thread group's registers); the tile keeps an online
//     softmax (running max m, rescaled sum l and acc[hd] = Σ e_j v_j).
//     Writes the split's (m, l) and acc.
//   phase 2 (grid H × T): combines the live splits (o = Σ_s exp(m_s - M) acc_s / Σ_s exp(m_s - M) l_s,
//     M = max_s m_s), writes o and the head norm.
// The plan is built once while the position changes per token, so both phases read n from step[0]:
// chunk = max(minChunk, ceil(n / want)) (minChunk ATS_MIN_CHUNK, ATS_SHORT_CHUNK up to ATS_SHORT_KEYS keys), want <= S the splits wanted (attentionTargetSplits), past
// one tile rounded up to whole tiles (chunkOf); splits at or past n exit (phase 1) or are skipped (phase 2).

export const ATS_WG = 256;   // phase-1 threads
export const ATS_WG2 = 256;  // phase-2 threads (at least HV and ATS_MAX_SPLITS)
export const ATS_MAX_SPLITS = 64;
/** Positions a split takes at least past ATS_SHORT_KEYS keys (below, ATS_SHORT_CHUNK): short contexts use fewer splits (less phase-2 work). */
export const ATS_MIN_CHUNK = 32;
/**
 * Up to ATS_SHORT_KEYS keys a split takes at least ATS_SHORT_CHUNK (chunkOf; the fused plan's steps):
 * half as many partials for the combine to wait on, each split's loads still all in flight at once.
 * H200, decode GPU ms against 32 (prompt 128, 128 steps): opt-1.3b mlp −1.3 %, 6.7b −0.4 to −0.7 %,
 * opt-13b mlp −1.6 %; dense and dejavu within ±1 %. (16 instead: +4 % at opt-1.3b.)
 */
export const ATS_SHORT_KEYS = 256;
export const ATS_SHORT_CHUNK = 64;
/** The most live splits a step of at most maxKeys keys makes (chunkOf's floor: ATS_SHORT_CHUNK up to ATS_SHORT_KEYS keys, else ATS_MIN_CHUNK). */
export const attentionMaxLive = (maxKeys: number) => Math.max(1, Math.ceil(maxKeys / (maxKeys <= ATS_SHORT_KEYS ? ATS_SHORT_CHUNK : ATS_MIN_CHUNK)));
/** heads × splits × head dim a decode attention aims at (attentionTargetSplits). */
export const ATS_TARGET_WORK = 32768;

/** Compile-time shape of the split kernels for head dim hd, or null when hd is too wide for them. */
export function attentionSplitShape(hd: number): { W: number; HV: number; RV: number; TILE: number; RPT: number } | null {
  const W = hd % 4 === 0 ? 4 : 1;
  const HV = hd / W; // vector slots per head row: one thread each
  if (HV > ATS_WG) return null;
  const RV = Math.floor(ATS_WG / HV); // rows read at once
  // Workgroup memory (16 KiB, WebGPU's default limit): scores TILE × (HV + 1) + TILE, group sums RV × hd + RV
  // (GROUP ROWS adds RV maxima: attentionSplitBytes counts them).
  const TILE = Math.min(64, Math.floor((16000 / 4 - RV * HV * W - RV) / (HV + 2)));
  if (TILE < 1) return null;
  return { W, HV, RV, TILE, RPT: Math.ceil(TILE / RV) };
}

/**
 * Splits a head's positions are cut into (at most; short contexts take fewer, at least ATS_MIN_CHUNK
 * positions a split): about ATS_TARGET_WORK / d, so heads × splits × head dim stays about the same at
 * every width. On an H200 (fused form, f32 cache, µs; bench --kernels --kernel-variants) the best
 * count was ~16 at opt-1.3b (d 2048), 8 at 6.7b, 4–8 at 13b, 4 at 30b, from 384 positions on: at
 * 6.7b 1024 positions 20.0 with 8 splits against 29.8 with 32 (the rule before this one, ceil(n / S)
 * with S = 32) and 25.2 for the pair; 30b 512 positions 18.8 with 4 against 24.8.
 */
export function attentionTargetSplits(d: number, S: number): number {
  return Math.max(1, Math.min(S, Math.round(ATS_TARGET_WORK / d)));
}

/** Workgroup memory bytes of the split kernel at head dim hd (its arrays as attentionSplitWgsl declares them; 0 where it has no shape). */
export function attentionSplitBytes(hd: number): number {
  const sh = attentionSplitShape(hd);
  return sh ? 4 * (sh.TILE * (sh.HV + 1) + sh.TILE + sh.RV * sh.HV * sh.W + 2 * sh.RV + 1) : 0;
}

/** Splits per query for H heads: about 1024 workgroups in all, no more than maxPos / ATS_MIN_CHUNK (the grid; attentionTargetSplits of them work). */
export function attentionSplits(H: number, maxPos: number): number {
  return Math.max(1, Math.min(ATS_MAX_SPLITS, Math.ceil(maxPos / ATS_MIN_CHUNK), Math.max(8, Math.ceil(1024 / H))));
}

export const attentionSplitKey = (hd: number, half = false, heads = false, fused = false, role?: BlockScoreRoleOpts, ss = 0) =>
  `attention_split1_wg${ATS_WG}_hd${hd}${half ? '_kv16' : ''}${heads ? '_heads' : ''}${fused ? '_fused' : ''}${attentionGroupRows(hd, ss) ? `_grp${ss}` : ''}${role ? '_' + blockScoreRoleKey(role) : ''}`;

/**
 * GROUP ROWS (phase 1, with subgroups of one size ss): each thread group (the HV lanes reading one
 * head row) sums its rows' q·k in registers (subgroupAdd, or a shuffle butterfly where HV < ss) and
 * keeps its own running max, sum and acc; the RV groups' are joined once, about the largest max, at
 * the split's end. The tile loop then has no barrier, no pass through workgroup memory and no serial
 * sum or max over the tile's rows (the other form: part[], two barriers, a thread a row summing HV
 * partials, every thread a max over the rows). The fused form's combine then also sums the head
 * norm's terms (lanes < HV, in the first subgroup) with one subgroupAdd instead of a tree of eight
 * barriers. Where HV is a power of two that divides ss and the groups fill the workgroup (head dims
 * 64 and 128 at ss 32: every OPT shape but 2.7b's 80).
 */
export function attentionGroupRows(hd: number, ss: number): boolean {
  const sh = attentionSplitShape(hd);
  return !!sh && ss > 0 && sh.W === 4 && (sh.HV & (sh.HV - 1)) === 0 && sh.HV <= ss && ss % sh.HV === 0 && sh.RV * sh.HV === ATS_WG;
}
export const attentionCombineKey = (hd: number, heads = false) => `attention_split2_wg${ATS_WG2}_hd${hd}${heads ? '_heads' : ''}`;

// Sparse heads (`heads`, decode: HeadLayerPolicy): the grid's head axis walks the k chosen heads, hl[i]
// (binding 7 in phase 1, 6 in phase 2), not all H. Phase 1 leaves out the positions the head skipped
// (skip: (maxPos, H) u32, binding 8; their K/V rows are not read): a skipped row's score is the
// sentinel -3e38 and its weight 0. The current position is never skipped for a chosen head, so every
// query has a live key. CPU twin: headAttention (backend/cpu/heads.ts).

// Fused form (`fused`; the runner's choice for decode steps of up to 256 keys, where it measured
// faster: runner.ts, FUSED_ATTENTION_MAX_KEYS): no phase-2 dispatch, one dependent dispatch a layer
// fewer (measured 0.4–1.4 % of an H200 decode step, docs/benchmarks.md). The LAST split of each
// (query, head) to finish combines:
// each live split writes its partials, then adds 1 to the (query, head) arrival counter; the one
// that sees live − 1 resets the counter and runs phase 2's code over the partials.
// WGSL has no device-scope fence, so a split's partial stores may become visible to the last one
// after its counter add does. The partials therefore travel as atomic words that carry their own
// "full" mark: word = bits(x) + 1 (bits 0xffffffff, a NaN no arithmetic produces, is first moved
// to 0xfffffffe), 0 = empty. The last split spins on each word until it is full (the store was
// issued before the add, so it arrives), reads it exactly (bits = word − 1) and stores 0 back, so
// every word is empty again when the dispatch ends (the next layer's or token's run, after the
// dispatch boundary, starts from all-empty; buffers start zeroed). No value is rounded: the fused
// and two-dispatch forms give the same output bits (with GROUP ROWS the fused combine sums the head
// norm by one subgroupAdd where the pair's takes a tree, so the norms may differ in their last
// bits; they feed the head_norm trace only). Scratch layout (u32 words, one binding): acc
// (T·H·S·hd), then (m, l) (T·H·S·2), then the counters (T·H). Bindings: 5 the scratch, 9 o,
// 10 the head norms (6 unused).
/** Words of the fused form's scratch buffer. */
export const attentionFusedWords = (T: number, H: number, S: number, hd: number) => T * H * S * (hd + 2) + T * H;
/** Whether the fused form's workgroup memory (phase 1's `part`, reused) holds phase 2's (m, l) list and sums. */
export function attentionFusedFits(hd: number): boolean {
  const sh = attentionSplitShape(hd);
  return !!sh && sh.TILE * (sh.HV + 1) >= 2 * ATS_MAX_SPLITS + ATS_WG2 && ATS_WG === ATS_WG2;
}
/**
 * Loads of a partial word before it counts as lost (the output is then NaN): a store issued before
 * the counter add arrives within a few loads; this bounds a bug to milliseconds, not a hang.
 */
const FUSED_SPIN = 1 << 16;

/** The fused combine's loads of partial i (acc vector or (m, l) pair), issued (a vec4<u32> / vec2<u32> of words) and settled from them. */
interface Together { issueAcc: (i: string) => string; issueMl: (i: string) => string; settleAcc: (i: string, u: string) => string; settleMl: (i: string, u: string) => string }

/**
 * Phase 2's body: combine the live splits of (t, h) into o and the head norm. `ml(s)` reads split
 * s's (m, l), `accAt(i)` the partial acc vector i = (b + s) · HV + slot, each exactly once (with
 * `together`, its issue / settle calls read every (m, l) and each group's first partial instead); `mls`,
 * `red(i)` name workgroup storage for S (m, l) pairs and ATS_WG2 floats.
 */
function combineBody(HV: number, RV2: number, mls: { get: (i: string) => string; set: (i: string, v: string) => string }, red: (i: string) => string, ml: (i: string) => string, accAt: (i: string) => string, sgNorm = false, together?: Together): string {
  // together (the fused form, vec4 partials): a thread's first partial (4 words) and its (m, l) (2)
  // are loaded in one go before the barrier and settled after, so the combining split waits about one
  // round trip for them, not six (a spin loop a word). H200, decode GPU ms: opt-1.3b dense −1.9 %,
  // mlp −1.1 %, dejavu −2.0 %; opt-6.7b ±0.3 %.
  return `  let chunk = chunkOf(n);
  let live = (n + chunk - 1u) / chunk;
  let b = (t * p.H + h) * p.S;
  let grp = lid / ${HV}u;
  let slot = lid % ${HV}u;
  ${together ? `let hasA = grp < ${RV2}u && grp < live;
  var ua = vec4<u32>(0u);
  var um = vec2<u32>(0u);
  if (hasA) { ua = ${together.issueAcc(`(b + grp) * ${HV}u + slot`)}; }
  if (lid < live) { um = ${together.issueMl('b + lid')}; }
  var a0 = V(0.0);
  if (hasA) { a0 = ${together.settleAcc(`(b + grp) * ${HV}u + slot`, 'ua')}; }
  if (lid < live) { ${mls.set('lid', together.settleMl('b + lid', 'um'))} }` : `if (lid < live) { ${mls.set('lid', ml('b + lid'))} }`}
  workgroupBarrier();
  var mx = -3.0e38;
  for (var s = 0u; s < live; s++) { mx = max(mx, ${mls.get('s')}.x); }
  var sum = 0.0;
  for (var s = 0u; s < live; s++) { let e = ${mls.get('s')}; sum += e.y * exp(e.x - mx); }
  if (grp < ${RV2}u) {
    var a = V(0.0);
    ${together ? `if (hasA) { a = exp(${mls.get('grp')}.x - mx) * a0; }
    for (var s = grp + ${RV2}u; s < live; s += ${RV2}u)` : `for (var s = grp; s < live; s += ${RV2}u)`} { a += exp(${mls.get('s')}.x - mx) * ${accAt(`(b + s) * ${HV}u + slot`)}; }
    gacc[lid] = a;
  }
  workgroupBarrier();
  var nrm = 0.0;
  if (lid < ${HV}u) {
    var a = V(0.0);
    for (var g = 0u; g < ${RV2}u; g++) { a += gacc[g * ${HV}u + lid]; }
    a /= sum;
    o[t * p.dv + h * ${HV}u + lid] = a;
    nrm = dotv(a, a);
  }
  ${sgNorm ? `// The norm's terms sit in lanes < HV, inside the first subgroup (sgNorm): one subgroupAdd, no tree.
  let nt = subgroupAdd(nrm);
  if (lid == 0u) { hn[t * p.H + h] = sqrt(nt); }` : `${red('lid')} = nrm;
  workgroupBarrier();
  for (var st = ${ATS_WG2 / 2}u; st > 0u; st >>= 1u) {
    if (lid < st) { ${red('lid')} += ${red('lid + st')}; }
    workgroupBarrier();
  }
  if (lid == 0u) { hn[t * p.H + h] = sqrt(${red('0u')}); }`}`;
}

const vtype = (W: number) => `alias V = ${W === 4 ? 'vec4<f32>' : 'f32'};
fn dotv(a: V, b: V) -> f32 { return ${W === 4 ? 'dot(a, b)' : 'a * b'}; }`;

/**
 * Positions a split covers at n visible keys: at least ATS_MIN_CHUNK (ATS_SHORT_CHUNK up to ATS_SHORT_KEYS keys), ceil(n / want) (the splits wanted),
 * and past one tile a whole number of tiles. A last partial tile cost a tile's time: opt-30b (H200,
 * fused, 5 splits wanted) took 37.6 µs at 1024 positions with 205-position splits against 28.7 with
 * 256 (and 35.6 with the 32 splits of the rule before).
 */
const chunkWgsl = `fn chunkOf(n: u32) -> u32 {
  let floor = select(${ATS_MIN_CHUNK}u, ${Math.max(ATS_MIN_CHUNK, ATS_SHORT_CHUNK)}u, n <= ${ATS_SHORT_KEYS}u);
  let c = max(floor, (n + p.want - 1u) / p.want);
  return select(c, (c + TILE - 1u) / TILE * TILE, c > TILE);
}`;

/**
 * Phase 1. Params: dv (d / W), H, S, scale bits, splits wanted. `half`: the cache holds packed f16 (W of them a load).
 *
 * `role` (decode, the sparse MLP's block rule with DejaVu's lookahead): grid rows from bp.ny on are not
 * attention's; their workgroups score and choose the sparse MLP's neurons (block-select.ts,
 * blockScoreRoleWgsl), block (row − ny)·S + split, and return. The choice then needs no dispatch of
 * its own and no place on the critical path: u is ready once the qkv GEMV has run, and attention,
 * latency-bound, leaves the card room for it.
 */
export function attentionSplitWgsl(hd: number, half = false, heads = false, fused = false, role?: BlockScoreRoleOpts, ss = 0): string {
  const sh = attentionSplitShape(hd);
  if (!sh) throw new Error(`attention split kernel: head dim ${hd} too wide`);
  if (fused && !attentionFusedFits(hd)) throw new Error(`attention split kernel: head dim ${hd} has no room for the fused combine`);
  const { W, HV, RV, TILE, RPT } = sh;
  const groups = attentionGroupRows(hd, ss);
  // The fused combine's partial words for vec4 rows: issued together, settled after (combineBody, `together`).
  const tg: Together | undefined = fused && W === 4 ? {
    issueAcc: (i) => `load4((${i}) * 4u)`, settleAcc: (i, u) => `settle4((${i}) * 4u, ${u})`,
    issueMl: (i) => `vec2<u32>(atomicLoad(&sw[ML0 + 2u * (${i})]), atomicLoad(&sw[ML0 + 2u * (${i}) + 1u]))`,
    settleMl: (i, u) => `vec2<f32>(settle(ML0 + 2u * (${i}), ${u}.x), settle(ML0 + 2u * (${i}) + 1u, ${u}.y))`,
  } : undefined;
  // Fused: the scratch words (see above). ML0 / CNT0: where (m, l) and the counters start.
  const words = `let T = nwg.z;
  let ML0 = T * p.H * p.S * ${HV * W}u;
  let CNT0 = ML0 + T * p.H * p.S * 2u;`;
  const putAcc = W === 4 ? (i: string, v: string) => `for (var c = 0u; c < 4u; c++) { put((${i}) * 4u + c, ${v}[c]); }` : (i: string, v: string) => `put(${i}, ${v});`;
  // One copy of `line` per row u < RPT a thread takes in a tile, # -> u.
  const rowsUnrolled = (line: string) => Array.from({ length: RPT }, (_, u) => '    ' + line.replaceAll('#', String(u))).join('\n');
  // Packed f16: W = 4 elements are one vec2<u32>; a single one is half of a u32 word.
  const KV = half ? (W === 4 ? 'vec2<u32>' : 'u32') : 'V';
  const load = (buf: string, at: string) => !half ? `${buf}[${at}]` : W === 4 ? `kv4(${buf}[${at}])` : `unpack2x16float(${buf}[(${at}) / 2u])[(${at}) % 2u]`;
  return `${groups ? 'enable subgroups;' : ''}
${vtype(W)}
fn kv4(w: vec2<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
struct P { dv: u32, H: u32, S: u32, scaleBits: u32, want: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read> qkv: array<V>;
@group(0) @binding(3) var<storage, read> kc: array<${KV}>;
@group(0) @binding(4) var<storage, read> vc: array<${KV}>;
${fused ? `@group(0) @binding(5) var<storage, read_write> sw: array<atomic<u32>>;
@group(0) @binding(9) var<storage, read_write> o: array<V>;
@group(0) @binding(10) var<storage, read_write> hn: array<f32>;
fn put(i: u32, x: f32) { let u = bitcast<u32>(x); atomicStore(&sw[i], select(u, 0xfffffffeu, u == 0xffffffffu) + 1u); }
// The word's value once it is full, leaving it empty. Bounded: a word still empty after FUSED_SPIN
// loads (a bug, never seen) reads NaN and is left as it is, so the store it waited for cannot land
// after a reset and pass for a later one. settle(i, u0) is take with the first load already issued
// (u0): the combine issues a thread's words together and settles them after, so it waits about one
// round trip for them where take after take waited one a word (H200: opt-1.3b decode −1.9 %).
fn settle(i: u32, u0: u32) -> f32 {
  var u = u0;
  for (var n = 0u; n < ${FUSED_SPIN}u && u == 0u; n++) { u = atomicLoad(&sw[i]); }
  if (u != 0u) { atomicStore(&sw[i], 0u); }
  return bitcast<f32>(u - 1u);
}
fn take(i: u32) -> f32 { return settle(i, atomicLoad(&sw[i])); }
// Four words issued together (one round trip where they are full), then settled one by one.
fn load4(i: u32) -> vec4<u32> { return vec4<u32>(atomicLoad(&sw[i]), atomicLoad(&sw[i + 1u]), atomicLoad(&sw[i + 2u]), atomicLoad(&sw[i + 3u])); }
fn settle4(i: u32, u: vec4<u32>) -> vec4<f32> { return vec4<f32>(settle(i, u.x), settle(i + 1u, u.y), settle(i + 2u, u.z), settle(i + 3u, u.w)); }
var<workgroup> last: u32;` : `@group(0) @binding(5) var<storage, read_write> pacc: array<V>;
@group(0) @binding(6) var<storage, read_write> pml: array<vec2<f32>>;`}
${heads ? `@group(0) @binding(7) var<storage, read> hl: array<u32>;
@group(0) @binding(8) var<storage, read> skip: array<u32>;
fn live(j: u32, h: u32) -> bool { return skip[j * p.H + h] == 0u; }` : 'fn live(j: u32, h: u32) -> bool { return true; }'}
const HV = ${HV}u;
const HP = ${HV + 1}u; // padded row of partial products: the row sums read without bank conflicts
const RV = ${RV}u;
const TILE = ${TILE}u;
${chunkWgsl}
var<workgroup> part: array<f32, ${TILE * (HV + 1)}>;
var<workgroup> sc: array<f32, ${TILE}>;
var<workgroup> gacc: array<V, ${RV * HV}>;
var<workgroup> gl: array<f32, ${RV}>;
${groups ? `var<workgroup> gm: array<f32, ${RV}>;
// The sum over a group's HV lanes (aligned runs of HV inside a subgroup of ${ss}).
fn rowSum(x: f32) -> f32 { ${HV === ss ? 'return subgroupAdd(x);' : `var y = x;${Array.from({ length: Math.log2(HV) }, (_, i) => ` y += subgroupShuffleXor(y, ${HV >> (i + 1)}u);`).join('')} return y;`} }` : ''}
${role ? blockScoreRoleWgsl({ ...role, wg: ATS_WG }) : ''}
@compute @workgroup_size(${ATS_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${fused || role ? ', @builtin(num_workgroups) nwg: vec3<u32>' : ''}) {
  ${role ? 'if (wid.y >= bp.ny) { blockScoreRole((wid.y - bp.ny) * nwg.x + wid.x, wid.z, lid); return; }' : ''}
  let s = wid.x;
  let h = ${heads ? 'hl[wid.y]' : 'wid.y'};
  let t = wid.z;
  let n = step[0] + t + 1u;
  let chunk = chunkOf(n);
  let c0 = s * chunk;
  if (c0 >= n) { return; } // the whole workgroup: phase 2 skips this split
  let c1 = min(n, c0 + chunk);
  let grp = lid / HV;
  let slot = lid % HV;
  let busy = grp < RV; // threads past RV × HV only join the barriers
  let hb = h * HV + slot;
  let qv = qkv[t * 3u * p.dv + hb];
  let scale = bitcast<f32>(p.scaleBits);
  var m = -3.0e38;
  var l = 0.0;
  var acc = V(0.0);
  for (var j0 = c0; j0 < c1; j0 += TILE) {
    let rows = min(TILE, c1 - j0);
    // Unrolled here rather than left to the driver: all 2 × RPT loads of a thread are in flight at once.
${rowsUnrolled('let r# = grp + #u * RV; var k# = V(0.0); var v# = V(0.0);')}
${rowsUnrolled(`if (busy && r# < rows${heads ? ' && live(j0 + r#, h)' : ''}) { let at = (j0 + r#) * p.dv + hb; k# = ${load('kc', 'at')}; v# = ${load('vc', 'at')}; }`)}
${groups ? `    // GROUP ROWS: a group's rows' scores summed over its HV lanes in registers, its own running max.
${rowsUnrolled(`let s# = select(-3.0e38, rowSum(dotv(qv, k#)) * scale, busy && r# < rows${heads ? ' && live(j0 + r#, h)' : ''});`)}
    var mt = m;
${rowsUnrolled('mt = max(mt, s#);')}
    let alpha = exp(m - mt);
    acc *= alpha;
    l *= alpha;
${rowsUnrolled('if (s# > -1.0e38) { let e = exp(s# - mt); acc += e * v#; l += e; }')}
    m = mt;
  }
  // The groups' (m, l, acc) to one about the largest m.
  if (busy) {
    gacc[lid] = acc;
    if (slot == 0u) { gl[grp] = l; gm[grp] = m; }
  }
  workgroupBarrier();
  var mg = -3.0e38;
  for (var g = 0u; g < RV; g++) { mg = max(mg, gm[g]); }
  m = mg;` : `${rowsUnrolled('if (busy && r# < rows) { part[r# * HP + slot] = dotv(qv, k#); }')}
    workgroupBarrier();
    if (lid < rows) {
      var x = 0.0;
      for (var k = 0u; k < HV; k++) { x += part[lid * HP + k]; }
      sc[lid] = select(-3.0e38, x * scale, live(j0 + lid, h));
    }
    workgroupBarrier();
    var mt = m;
    for (var r = 0u; r < rows; r++) { mt = max(mt, sc[r]); }
    let alpha = exp(m - mt);
    acc *= alpha;
    l *= alpha;
${rowsUnrolled(`if (busy && r# < rows${heads ? ' && sc[r#] > -1.0e38' : ''}) { let e = exp(sc[r#] - mt); acc += e * v#; l += e; }`)}
    m = mt;
    workgroupBarrier();
  }
  if (busy) {
    gacc[lid] = acc;
    if (slot == 0u) { gl[grp] = l; }
  }
  workgroupBarrier();`}
  let bs = (t * p.H + h) * p.S + s;
  ${fused ? words : ''}
  if (lid < HV) {
    var a = V(0.0);
    for (var g = 0u; g < RV; g++) { a += ${groups ? 'exp(gm[g] - m) * ' : ''}gacc[g * HV + lid]; }
    ${fused ? putAcc('bs * HV + lid', 'a') : 'pacc[bs * HV + lid] = a;'}
  }
  if (lid == 0u) {
    var sum = 0.0;
    for (var g = 0u; g < RV; g++) { sum += ${groups ? 'exp(gm[g] - m) * ' : ''}gl[g]; }
    ${fused ? 'put(ML0 + 2u * bs, m); put(ML0 + 2u * bs + 1u, sum);' : 'pml[bs] = vec2<f32>(m, sum);'}
  }
${fused ? `  // Arrive; the last live split of (t, h) combines (see "Fused form" above).
  workgroupBarrier();
  if (lid == 0u) {
    let ci = CNT0 + t * p.H + h;
    let live = (n + chunk - 1u) / chunk;
    let isLast = atomicAdd(&sw[ci], 1u) == live - 1u;
    if (isLast) { atomicStore(&sw[ci], 0u); }
    last = select(0u, 1u, isLast);
  }
  if (workgroupUniformLoad(&last) == 0u) { return; }
  { // phase 2's code, in a scope of its own (its names shadow phase 1's)
  ${combineBody(HV, RV, { get: (i) => `vec2<f32>(part[2u * ${i}], part[2u * ${i} + 1u])`, set: (i, v) => `let e = ${v}; part[2u * ${i}] = e.x; part[2u * ${i} + 1u] = e.y;` },
    (i) => `part[${2 * ATS_MAX_SPLITS}u + ${i}]`, (i) => `vec2<f32>(take(ML0 + 2u * (${i})), take(ML0 + 2u * (${i}) + 1u))`,
    (i) => (tg ? tg.settleAcc(i, tg.issueAcc(i)) : `take(${i})`), groups, tg)}
  }` : ''}
}
`;
}

/**
 * Phase 2. Params: dv, H, S, splits wanted. Threads as in phase 1: HV slots × RV2 groups, group g summing
 * splits g, g + RV2, …, so a thread's loads of the partials are few and independent.
 */
export function attentionCombineWgsl(hd: number, heads = false): string {
  const sh = attentionSplitShape(hd);
  if (!sh) throw new Error(`attention split kernel: head dim ${hd} too wide`);
  const { W, HV } = sh;
  const RV2 = Math.floor(ATS_WG2 / HV);
  return `
${vtype(W)}
struct P { dv: u32, H: u32, S: u32, want: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read> pacc: array<V>;
@group(0) @binding(3) var<storage, read> pml: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> o: array<V>;
@group(0) @binding(5) var<storage, read_write> hn: array<f32>;
${heads ? '@group(0) @binding(6) var<storage, read> hl: array<u32>;' : ''}
const HV = ${HV}u;
const TILE = ${sh.TILE}u;
${chunkWgsl}
const RV2 = ${RV2}u;
var<workgroup> mls: array<vec2<f32>, ${ATS_MAX_SPLITS}>;
var<workgroup> gacc: array<V, ${RV2 * HV}>;
var<workgroup> red: array<f32, ${ATS_WG2}>;
@compute @workgroup_size(${ATS_WG2})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let h = ${heads ? 'hl[wid.x]' : 'wid.x'};
  let t = wid.y;
  let n = step[0] + t + 1u;
${combineBody(HV, RV2, { get: (i) => `mls[${i}]`, set: (i, v) => `mls[${i}] = ${v};` }, (i) => `red[${i}]`, (i) => `pml[${i}]`, (i) => `pacc[${i}]`)}
}
`;
}

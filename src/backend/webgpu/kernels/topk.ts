/**
 * Exact top-K per token on the device, one workgroup per token (CPU twin: `topK`, compared as sets).
 * Keys: order-preserving u32 of the score (-0 == +0, as in the CPU comparison).
 * 1. Min/max of the token's scores (workgroup atomics spread over 32 slots).
 * 2. A 2048-bin histogram of a value-linear bucket, b(v) = floor((v - min) * 2048 / (max - min)):
 *    monotone in v, so the K-th largest lies in the bucket B where the count from the top reaches K;
 *    spread out for any ordinary score distribution (the top bits of a float key put nearly all
 *    scores into a few bins, serialising the atomics). The bin is found by a parallel suffix scan
 *    (256 partial sums, Hillis-Steele ping-pong), not a serial loop.
 * 3a. Usually B holds at most WG scores: they are gathered into workgroup memory and ranked by
 *    comparison (one thread a candidate), giving the K-th largest key `thr` and how many keys equal
 *    to it to take (`need`).
 * 3b. Otherwise (heavy ties, huge outliers, infinities: B too full), radix select over the scores in B,
 *    8 bits a pass from global memory, each pass's bin again found by the parallel scan.
 * 4. Compaction, deterministic. Usually every key equal to `thr` is taken (need == their count):
 *    the set is {key >= thr}, written by two coalesced strided passes in (thread, index) order after
 *    one exclusive scan of per-thread counts. Otherwise thread i owns a contiguous segment; one
 *    exclusive scan of (greater, equal) counts gives each its output offset and its rank among equal
 *    keys (ties go to lower indices, as the CPU sort does), output in index order.
 *    The sparse MLP only needs the set.
 * No count or index list goes back to the CPU.
 */
export const TOPK_PARAMS = ['n', 'k', 'inStride', 'outStride'] as const;
/** Workgroup sizes the kernel is built for: the larger where the adapter allows it. */
export const TOPK_WGS = [1024, 256] as const;
const BINS = 2048;
const GROUPS = 256;

/** u32 words of workgroup memory the kernel needs at workgroup size wg (plus a few scalars). */
function poolWords(wg: number): number {
  return Math.max(BINS + 2 * GROUPS + wg, 4 * wg);
}
export function topKStorageBytes(wg: number): number {
  return (poolWords(wg) + 64 + 8) * 4;
}

/** The workgroup size to use under the device limits: 1024 where allowed, else 256. */
export function topKWorkgroupSize(l: { maxComputeInvocationsPerWorkgroup: number; maxComputeWorkgroupSizeX: number; maxComputeWorkgroupStorageSize: number }): number {
  for (const wg of TOPK_WGS) {
    if (wg <= l.maxComputeInvocationsPerWorkgroup && wg <= l.maxComputeWorkgroupSizeX && topKStorageBytes(wg) <= l.maxComputeWorkgroupStorageSize) return wg;
  }
  return 256;
}

export const topKKey = (wg: number) => `topk_linbucket_wg${wg}`;

export function topKWgsl(wg: number): string {
  const W = wg;
  const POOL = poolWords(W);
  const SCAN = BINS;            // bin-search ping-pong: [SCAN, SCAN + 2*GROUPS)
  const CAND = BINS + 2 * GROUPS; // candidate keys: [CAND, CAND + W)
  // Strided loop over the token's scores, unrolled by 4 so loads overlap; `body` sees `v` (f32) and `i`.
  const strided = (body: string) => `
  {
    var i = lid;
    for (; i + ${3 * W}u < n; i += ${4 * W}u) {
      let v0 = s[base + i]; let v1 = s[base + i + ${W}u]; let v2 = s[base + i + ${2 * W}u]; let v3 = s[base + i + ${3 * W}u];
      { let v = v0; let ii = i; ${body} }
      { let v = v1; let ii = i + ${W}u; ${body} }
      { let v = v2; let ii = i + ${2 * W}u; ${body} }
      { let v = v3; let ii = i + ${3 * W}u; ${body} }
    }
    for (; i < n; i += ${W}u) { let v = s[base + i]; let ii = i; ${body} }
  }`;
  return `
struct P { n: u32, k: u32, inStride: u32, outStride: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> s: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
var<workgroup> pool: array<atomic<u32>, ${POOL}>;
var<workgroup> mm: array<atomic<u32>, 64>;   // [0, 32): max key slots, [32, 64): min key slots
var<workgroup> chosen: u32;
var<workgroup> remaining: u32;
var<workgroup> chosenCount: u32;
var<workgroup> ncand: atomic<u32>;
var<workgroup> thrA: atomic<u32>;
var<workgroup> needA: atomic<u32>;
var<workgroup> eqA: atomic<u32>;
var<workgroup> res: vec3<u32>;
var<workgroup> bspan: vec2<u32>;   // min and max key in the chosen bucket   // thr, need, count of keys equal to thr

fn key(v: f32) -> u32 {
  let b = bitcast<u32>(select(v, 0.0, v == 0.0));
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
fn unkey(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}
// Monotone non-decreasing in v: subtraction, multiplication by scale >= 0 and floor all round monotonically.
fn bucket(v: f32, vmin: f32, scale: f32) -> u32 {
  return u32(clamp(floor((select(v, 0.0, v == 0.0) - vmin) * scale), 0.0, ${BINS - 1}.0));
}

// Finds the bin b (bins of g consecutive words from pool[0], ${GROUPS}*g of them) where the count of
// entries in bins >= b first reaches tgt; sets chosen = b, remaining = tgt - count(bins > b).
fn findBin(lid: u32, g: u32, tgt: u32) {
  if (lid < ${GROUPS}u) {
    var sum = 0u;
    for (var j = 0u; j < g; j++) { sum += atomicLoad(&pool[lid * g + j]); }
    atomicStore(&pool[${SCAN}u + ${GROUPS - 1}u - lid], sum);   // reversed: prefix sums become suffix sums
  }
  workgroupBarrier();
  for (var st = 0u; st < 8u; st++) {
    let src = ${SCAN}u + (st & 1u) * ${GROUPS}u;
    let dst = ${SCAN}u + (1u - (st & 1u)) * ${GROUPS}u;
    let d = 1u << st;
    if (lid < ${GROUPS}u) {
      var v = atomicLoad(&pool[src + lid]);
      if (lid >= d) { v += atomicLoad(&pool[src + lid - d]); }
      atomicStore(&pool[dst + lid], v);
    }
    workgroupBarrier();
  }
  // 8 steps: the inclusive scan is back in the first buffer.
  if (lid < ${GROUPS}u) {
    let r = ${GROUPS - 1}u - lid;
    let inc = atomicLoad(&pool[${SCAN}u + r]);
    var cum = 0u;
    if (r > 0u) { cum = atomicLoad(&pool[${SCAN}u + r - 1u]); }
    if (cum < tgt && inc >= tgt) {
      for (var j = g; j > 0u; j--) {
        let b = lid * g + j - 1u;
        let c = atomicLoad(&pool[b]);
        if (cum + c >= tgt) { chosen = b; remaining = tgt - cum; chosenCount = c; break; }
        cum += c;
      }
    }
  }
  workgroupBarrier();
}

// Exclusive scan over the workgroup of a pair of counts (Hillis-Steele, ping-pong in pool[0, 4W)).
fn scan2(lid: u32, x: vec2<u32>) -> vec2<u32> {
  atomicStore(&pool[lid], x.x);
  atomicStore(&pool[${W}u + lid], x.y);
  workgroupBarrier();
  var sb = 0u;
  for (var d = 1u; d < ${W}u; d <<= 1u) {
    let db = ${2 * W}u - sb;
    var a = atomicLoad(&pool[sb + lid]);
    var e = atomicLoad(&pool[sb + ${W}u + lid]);
    if (lid >= d) { a += atomicLoad(&pool[sb + lid - d]); e += atomicLoad(&pool[sb + ${W}u + lid - d]); }
    atomicStore(&pool[db + lid], a);
    atomicStore(&pool[db + ${W}u + lid], e);
    workgroupBarrier();
    sb = db;
  }
  return vec2<u32>(atomicLoad(&pool[sb + lid]), atomicLoad(&pool[sb + ${W}u + lid])) - x;
}

@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let base = wid.x * p.inStride;
  let n = p.n;
  let k = min(p.k, n);
  if (k == 0u) { return; }

  // 1. min and max keys
  if (lid < 32u) { atomicStore(&mm[lid], 0u); atomicStore(&mm[32u + lid], 0xffffffffu); }
  for (var j = lid; j < ${BINS}u; j += ${W}u) { atomicStore(&pool[j], 0u); }
  if (lid == 0u) { atomicStore(&ncand, 0u); atomicStore(&thrA, 0u); atomicStore(&needA, 0u); atomicStore(&eqA, 0u); }
  workgroupBarrier();
  var kmax = 0u; var kmin = 0xffffffffu;
  ${strided('let kk = key(v); kmax = max(kmax, kk); kmin = min(kmin, kk);')}
  atomicMax(&mm[lid & 31u], kmax);
  atomicMin(&mm[32u + (lid & 31u)], kmin);
  workgroupBarrier();
  for (var j = 0u; j < 32u; j++) { kmax = max(kmax, atomicLoad(&mm[j])); kmin = min(kmin, atomicLoad(&mm[32u + j])); }
  let vmin = unkey(kmin);
  let range = unkey(kmax) - vmin;
  var scale = 0.0;
  if (range > 1e-30 && range < 3e38) { scale = ${BINS}.0 / range; }

  // 2. histogram of the value-linear bucket; the bucket holding the K-th largest
  ${strided('atomicAdd(&pool[bucket(v, vmin, scale)], 1u);')}
  workgroupBarrier();
  findBin(lid, ${BINS / GROUPS}u, k);
  let B = workgroupUniformLoad(&chosen);
  let r1 = workgroupUniformLoad(&remaining);
  let C = workgroupUniformLoad(&chosenCount);
  if (C <= ${W}u) {
    // 3a. gather the bucket's keys, rank them by comparison
    ${strided(`if (bucket(v, vmin, scale) == B) { atomicStore(&pool[${CAND}u + atomicAdd(&ncand, 1u)], key(v)); }`)}
    workgroupBarrier();
    if (lid < C) {
      let kj = atomicLoad(&pool[${CAND}u + lid]);
      var gt = 0u; var eq = 0u;
      for (var i = 0u; i < C; i++) {
        let c = atomicLoad(&pool[${CAND}u + i]);
        gt += select(0u, 1u, c > kj);
        eq += select(0u, 1u, c == kj);
      }
      if (gt < r1 && r1 <= gt + eq) { atomicStore(&thrA, kj); atomicStore(&needA, r1 - gt); atomicStore(&eqA, eq); }
    }
    workgroupBarrier();
    if (lid == 0u) { res = vec3<u32>(atomicLoad(&thrA), atomicLoad(&needA), atomicLoad(&eqA)); }
  } else {
    // 3b. radix select over the bucket's keys, 8 bits a pass, from the first byte where the bucket's
    //     smallest and largest keys differ (none when they are equal: ties).
    if (lid < 32u) { atomicStore(&mm[lid], 0u); atomicStore(&mm[32u + lid], 0xffffffffu); }
    workgroupBarrier();
    var bmax = 0u; var bmin = 0xffffffffu;
    ${strided('if (bucket(v, vmin, scale) == B) { let kk = key(v); bmax = max(bmax, kk); bmin = min(bmin, kk); }')}
    atomicMax(&mm[lid & 31u], bmax);
    atomicMin(&mm[32u + (lid & 31u)], bmin);
    workgroupBarrier();
    if (lid == 0u) {
      for (var j = 0u; j < 32u; j++) { bmax = max(bmax, atomicLoad(&mm[j])); bmin = min(bmin, atomicLoad(&mm[32u + j])); }
      bspan = vec2<u32>(bmin, bmax);
    }
    let span = workgroupUniformLoad(&bspan);
    let ps0 = min(4u, countLeadingZeros(span.x ^ span.y) / 8u);   // bytes all the bucket's keys share
    var mask = 0u;
    if (ps0 > 0u) { mask = 0xffffffffu << (32u - 8u * ps0); }
    var prefix = span.x & mask;
    var rem = r1;
    var cnt = C;
    for (var ps = ps0; ps < 4u; ps++) {
      let shift = 24u - 8u * ps;
      for (var j = lid; j < ${BINS}u; j += ${W}u) { atomicStore(&pool[j], 0u); }
      workgroupBarrier();
      ${strided('let kk = key(v); if ((kk & mask) == prefix && bucket(v, vmin, scale) == B) { atomicAdd(&pool[(kk >> shift) & 255u], 1u); }')}
      workgroupBarrier();
      findBin(lid, 1u, rem);
      prefix |= workgroupUniformLoad(&chosen) << shift;
      rem = workgroupUniformLoad(&remaining);
      cnt = workgroupUniformLoad(&chosenCount);
      mask |= 255u << shift;
    }
    if (lid == 0u) { res = vec3<u32>(prefix, rem, cnt); }
  }
  let r = workgroupUniformLoad(&res);   // also: pool is free again
  let thr = r.x;
  let need = r.y;
  let ob = wid.x * p.outStride;

  if (r.z == need) {
    // 4. Common case: every key equal to thr is taken, so the set is {key >= thr}: coalesced strided
    //    passes, output in (thread, index) order via one exclusive scan of per-thread counts.
    var c = 0u;
    ${strided('c += select(0u, 1u, key(v) >= thr);')}
    var o = scan2(lid, vec2<u32>(c, 0u)).x;
    ${strided('if (key(v) >= thr && o < k) { out[ob + o] = ii; o++; }')}
    return;
  }

  // 4. deterministic compaction: exclusive scan of (greater, equal) over contiguous segments
  let seg = (n + ${W - 1}u) / ${W}u;
  let lo = min(n, lid * seg);
  let hi = min(n, lo + seg);
  var gt = 0u; var eq = 0u;
  for (var i = lo; i < hi; i++) { let kk = key(s[base + i]); gt += select(0u, 1u, kk > thr); eq += select(0u, 1u, kk == thr); }
  let ex = scan2(lid, vec2<u32>(gt, eq));
  let gtBefore = ex.x;
  let eqBefore = ex.y;
  var o = gtBefore + min(eqBefore, need);
  var eqSeen = eqBefore;
  for (var i = lo; i < hi; i++) {
    let kk = key(s[base + i]);
    var take = kk > thr;
    if (kk == thr) { take = eqSeen < need; eqSeen++; }
    if (take && o < k) { out[ob + o] = i; o++; }
  }
}
`;
}

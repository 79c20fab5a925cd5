/**
 * Exact top-K per token on the device, one workgroup per token (CPU twin: `topK`, compared as sets).
 * 1. Radix select on order-preserving u32 keys, 8 bits a pass (4 passes, histogram in workgroup
 *    atomics): finds the K-th largest key and how many of the keys equal to it to take (`need`).
 * 2. Deterministic compaction: thread i owns a contiguous segment; exclusive scans over the threads
 *    give each its rank among equal keys (ties go to lower indices, as the CPU sort does) and its
 *    output offset. Output is in index order (the sparse MLP only needs the set).
 * No count or index list goes back to the CPU.
 */
export const TOPK_WG = 256;
export const TOPK_PARAMS = ['n', 'k', 'inStride', 'outStride'] as const;
export const topKKey = () => `topk_radix8_wg${TOPK_WG}`;

export function topKWgsl(): string {
  return `
struct P { n: u32, k: u32, inStride: u32, outStride: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> s: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> scan: array<u32, ${TOPK_WG}>;
var<workgroup> chosen: u32;
var<workgroup> remaining: u32;

fn key(v: f32) -> u32 {
  let b = bitcast<u32>(select(v, 0.0, v == 0.0));   // -0 == +0, as in the CPU comparison
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
// Inclusive scan of scan[] (Hillis-Steele); returns this thread's inclusive value.
fn exscan(lid: u32) -> u32 {
  for (var st = 1u; st < ${TOPK_WG}u; st <<= 1u) {
    var v = 0u;
    if (lid >= st) { v = scan[lid - st]; }
    workgroupBarrier();
    scan[lid] += v;
    workgroupBarrier();
  }
  let inc = scan[lid];
  workgroupBarrier();
  return inc;
}

@compute @workgroup_size(${TOPK_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let base = wid.x * p.inStride;
  if (lid == 0u) { remaining = p.k; }
  var prefix = 0u;
  var mask = 0u;
  for (var ps = 0u; ps < 4u; ps++) {
    let shift = 24u - 8u * ps;
    atomicStore(&hist[lid], 0u);
    workgroupBarrier();
    for (var i = lid; i < p.n; i += ${TOPK_WG}u) {
      let kk = key(s[base + i]);
      if ((kk & mask) == prefix) { atomicAdd(&hist[(kk >> shift) & 255u], 1u); }
    }
    workgroupBarrier();
    if (lid == 0u) {
      var cum = 0u;
      var b = 255i;
      chosen = 0u;
      loop {
        if (b < 0i) { break; }
        let c = atomicLoad(&hist[u32(b)]);
        if (cum + c >= remaining) { chosen = u32(b); remaining -= cum; break; }
        cum += c;
        b--;
      }
    }
    let ch = workgroupUniformLoad(&chosen);
    prefix |= ch << shift;
    mask |= 255u << shift;
  }
  let need = workgroupUniformLoad(&remaining);   // keys equal to the threshold still to take
  let thr = prefix;
  let seg = (p.n + ${TOPK_WG - 1}u) / ${TOPK_WG}u;
  let lo = min(p.n, lid * seg);
  let hi = min(p.n, lo + seg);
  var gt = 0u; var eq = 0u;
  for (var i = lo; i < hi; i++) { let kk = key(s[base + i]); gt += select(0u, 1u, kk > thr); eq += select(0u, 1u, kk == thr); }
  scan[lid] = eq;
  workgroupBarrier();
  let eqBefore = exscan(lid) - eq;
  let takeEq = min(eq, need - min(need, eqBefore));
  scan[lid] = gt + takeEq;
  workgroupBarrier();
  var o = exscan(lid) - (gt + takeEq);
  var eqSeen = eqBefore;
  for (var i = lo; i < hi; i++) {
    let kk = key(s[base + i]);
    var take = kk > thr;
    if (kk == thr) { take = eqSeen < need; eqSeen++; }
    if (take && o < p.k) { out[wid.x * p.outStride + o] = i; o++; }
  }
}
`;
}

/**
 * Greedy decoding's pick on the device, so a chained decode step never waits on the host: one
 * workgroup scans the logits row (n floats), takes the largest, and feeds it to the next step:
 *   step[1] = id; tokens[step[0]] = id; step[0] += 1
 * (`step` is the runner's [pos, ids...] buffer that embedding, KV store and attention read;
 * `tokens[q]` is the id produced by the token at position q, so the host can read back the ids of
 * several queued steps by position, after the fact.) CPU twin: `argmax` in cpu/kernels.ts.
 *
 * Comparison is on order-preserving u32 keys of the raw bits, never on floats: exact, and defined for
 * what WGSL leaves undefined (an implementation may assume no NaN/Inf in float math). The rule, the
 * same as the CPU twin: the largest value wins, ties go to the lowest index, -0 ties +0, NaN ranks
 * below -Infinity (key 0), so an all-NaN row gives index 0.
 *
 * Reduction: each thread keeps its best (key, index) over a strided scan (four loads in flight), then
 * the workgroup takes the max key and, among threads holding it, the min index. With subgroups:
 * subgroupMax/subgroupMin and one workgroup atomic per subgroup (correct however the adapter lays
 * subgroups over local_invocation_index); without: a tree in workgroup memory.
 */
export const ARGMAX_PARAMS = ['n', 'slots'] as const;
/** Workgroup sizes the kernel is built for: the larger where the adapter allows it (one workgroup
 *  reads 200 KB of OPT logits: more threads, more loads in flight). */
export const ARGMAX_WGS = [1024, 256] as const;

export function argmaxWorkgroupSize(l: { maxComputeInvocationsPerWorkgroup: number; maxComputeWorkgroupSizeX: number }): number {
  for (const wg of ARGMAX_WGS) if (wg <= l.maxComputeInvocationsPerWorkgroup && wg <= l.maxComputeWorkgroupSizeX) return wg;
  return 256;
}

export const argmaxKey = (wg: number, sg: boolean) => `argmax_step_wg${wg}${sg ? '_sg' : ''}`;

export function argmaxWgsl(wg: number, sg: boolean): string {
  const W = wg;
  const reduce = sg ? `
  // Max key over the workgroup, then the lowest index holding it. Workgroup memory starts zeroed:
  // gk = 0 is below every key a thread can hold, and gi holds ~index so that 0 means "none yet".
  let m = subgroupMax(bk);
  if (sl == 0u) { atomicMax(&gk, m); }
  workgroupBarrier();
  let top = atomicLoad(&gk);
  let mi = subgroupMin(select(NONE, bi, bk == top));
  if (sl == 0u) { atomicMax(&gi, ~mi); }
  workgroupBarrier();
  if (lid == 0u) { finish(~atomicLoad(&gi)); }` : `
  rk[lid] = bk; ri[lid] = bi;
  workgroupBarrier();
  for (var st = ${W / 2}u; st > 0u; st >>= 1u) {
    if (lid < st) {
      let k2 = rk[lid + st]; let i2 = ri[lid + st];
      if (k2 > rk[lid] || (k2 == rk[lid] && i2 < ri[lid])) { rk[lid] = k2; ri[lid] = i2; }
    }
    workgroupBarrier();
  }
  if (lid == 0u) { finish(ri[0]); }`;
  return `${sg ? 'enable subgroups;' : ''}
struct P { n: u32, slots: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<u32>;      // the logits' f32 bits
@group(0) @binding(2) var<storage, read_write> step: array<u32>;
@group(0) @binding(3) var<storage, read_write> tokens: array<u32>;
const NONE = 0xffffffffu;  // no index: loses every tie
${sg ? `var<workgroup> gk: atomic<u32>;
var<workgroup> gi: atomic<u32>;` : `var<workgroup> rk: array<u32, ${W}>;
var<workgroup> ri: array<u32, ${W}>;`}

/** Order-preserving key: a > b as floats <=> key(a) > key(b); -0 -> +0; NaN -> 0 (below -Inf). */
fn key(b0: u32) -> u32 {
  if ((b0 & 0x7fffffffu) > 0x7f800000u) { return 0u; }
  var b = b0;
  if (b == 0x80000000u) { b = 0u; }
  if ((b & 0x80000000u) != 0u) { return ~b; }
  return b | 0x80000000u;
}

fn finish(id: u32) {
  let pos = step[0];
  if (pos < p.slots) { tokens[pos] = id; }
  step[1] = id;
  step[0] = pos + 1u;
}

@compute @workgroup_size(${W})
fn main(@builtin(local_invocation_index) lid: u32${sg ? ', @builtin(subgroup_invocation_id) sl: u32' : ''}) {
  var bk = 0u; var bi = NONE;
  // A thread's indices increase, so a strict > keeps its lowest index on ties; the first element it
  // sees is taken whatever its key (a NaN at index 0 must still be a candidate for the all-NaN rule).
  if (lid < p.n) { bk = key(x[lid]); bi = lid; }
  var i = lid + ${W}u;
  for (; i + ${3 * W}u < p.n; i += ${4 * W}u) {
    let k0 = key(x[i]); let k1 = key(x[i + ${W}u]); let k2 = key(x[i + ${2 * W}u]); let k3 = key(x[i + ${3 * W}u]);
    if (k0 > bk) { bk = k0; bi = i; }
    if (k1 > bk) { bk = k1; bi = i + ${W}u; }
    if (k2 > bk) { bk = k2; bi = i + ${2 * W}u; }
    if (k3 > bk) { bk = k3; bi = i + ${3 * W}u; }
  }
  for (; i < p.n; i += ${W}u) { let k = key(x[i]); if (k > bk) { bk = k; bi = i; } }
${reduce}
}
`;
}

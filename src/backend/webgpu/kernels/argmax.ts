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
 *
 * PAIRS: the input is n (key, index) pairs, each the largest of a group of rows with its lowest index
 * (the LM head GEMV's AMAX epilogue, gemv.ts), in increasing index order; the same scan and reduction
 * over the keys as given, each pair's index as the candidate's. The result is the logits' argmax
 * under the rule above, from a scan of V / (rows a workgroup) pairs instead of V floats.
 *
 * SAMPLE (not with PAIRS): sampling by temperature, as an argmax (the Gumbel-max trick,
 * backend/gumbel.ts, the CPU twin `gumbelPick`): each logit's key is that of logit · invT −
 * log(−log u), u the uniform of (seed, pos, id) from the same integer hash as the twin, pos = step[0]
 * (the position of the token whose logits these are). Binding 4 holds [invT's f32 bits, seed],
 * written once a generation, so one plan serves every temperature and seed.
 * SEL (with SAMPLE): the draw among n ids (binding 5, topk.ts's set of the k largest logits): top-k
 * sampling; ties (±Infinity logits) to the lowest id, as elsewhere. A NaN logit: topk.ts may take
 * it into the set (its key ranks NaN high), where it never wins, so with m NaN logits the draw is
 * among k − m ids (the twin's topIds skips NaN: among k).
 */
export const ARGMAX_PARAMS = ['n', 'slots'] as const;
/** Workgroup sizes the kernel is built for: the larger where the adapter allows it (one workgroup
 *  reads 200 KB of OPT logits: more threads, more loads in flight). */
export const ARGMAX_WGS = [1024, 256] as const;

export function argmaxWorkgroupSize(l: { maxComputeInvocationsPerWorkgroup: number; maxComputeWorkgroupSizeX: number }): number {
  for (const wg of ARGMAX_WGS) if (wg <= l.maxComputeInvocationsPerWorkgroup && wg <= l.maxComputeWorkgroupSizeX) return wg;
  return 256;
}

export const argmaxKey = (wg: number, sg: boolean, pairs = false, sample = false, sel = false) => `argmax_step_wg${wg}${sg ? '_sg' : ''}${pairs ? '_pairs' : ''}${sample ? '_sample' : ''}${sel ? '_sel' : ''}`;

/** WGSL `pcg(v)`: backend/gumbel.ts's pcgHash. */
export const pcgWgsl = `fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}`;

/** The order-preserving key of f32 bits as a WGSL function `name`: a > b as floats <=> key(a) > key(b); -0 -> +0; NaN -> 0 (below -Inf). */
export function argmaxKeyWgsl(name: string): string {
  return `fn ${name}(b0: u32) -> u32 {
  if ((b0 & 0x7fffffffu) > 0x7f800000u) { return 0u; }
  var b = b0;
  if (b == 0x80000000u) { b = 0u; }
  if ((b & 0x80000000u) != 0u) { return ~b; }
  return b | 0x80000000u;
}`;
}

export function argmaxWgsl(wg: number, sg: boolean, pairs = false, sample = false, sel = false): string {
  if (pairs && sample) throw new Error('argmax: sampling keys each logit: not a form of the pairs scan');
  if (sel && !sample) throw new Error('argmax: a set of ids is a form of sampling');
  // A thread's candidate: a larger key, or (SEL, whose ids need not increase along the scan) an equal
  // key at a lower id: ties go to the lowest id in every form.
  const beats = (k: string, id: string) => sel ? `{ let c = ${id}; if (${k} > bk || (${k} == bk && c < bi)) { bk = ${k}; bi = c; } }` : `if (${k} > bk) { bk = ${k}; bi = ${id}; }`;
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
@group(0) @binding(1) var<storage, read> x: array<u32>;      // ${pairs ? 'the (key, index) pairs' : 'the logits\' f32 bits'}
@group(0) @binding(2) var<storage, read_write> step: array<u32>;
@group(0) @binding(3) var<storage, read_write> tokens: array<u32>;
const NONE = 0xffffffffu;  // no index: loses every tie
${sg ? `var<workgroup> gk: atomic<u32>;
var<workgroup> gi: atomic<u32>;` : `var<workgroup> rk: array<u32, ${W}>;
var<workgroup> ri: array<u32, ${W}>;`}

${pairs ? `// Element i: pair i's key as given, and its index.
fn kat(i: u32) -> u32 { return x[2u * i]; }
fn iat(i: u32) -> u32 { return x[2u * i + 1u]; }` : `${argmaxKeyWgsl('key')}
${sample ? `@group(0) @binding(4) var<storage, read> samp: array<u32>;   // [invT's f32 bits, seed]
${pcgWgsl}
var<private> IT: f32;    // 1 / temperature
var<private> SH: u32;    // pcg(pos ^ pcg(seed)): the id's hash input is id ^ SH
${sel ? `@group(0) @binding(5) var<storage, read> sel: array<u32>;   // the ids drawn among
fn iat(i: u32) -> u32 { return sel[i]; }` : 'fn iat(i: u32) -> u32 { return i; }'}
fn kat(i: u32) -> u32 {
  let id = iat(i);
  // 23 bits: u and 1 − u exact (gumbel.ts gumbelUniform, expVariate).
  let m = f32(pcg(id ^ SH) >> 9u) + 0.5;
  let u = m * (1.0 / 8388608.0);
  let e = (8388608.0 - m) * (1.0 / 8388608.0);
  let nl = select(-log(u), e * (1.0 + e * (0.5 + e / 3.0)), e < 0.0009765625);
  return key(bitcast<u32>(bitcast<f32>(x[id]) * IT - log(nl)));
}` : `fn kat(i: u32) -> u32 { return key(x[i]); }
fn iat(i: u32) -> u32 { return i; }`}`}

fn finish(id: u32) {
  let pos = step[0];
  if (pos < p.slots) { tokens[pos] = id; }
  step[1] = id;
  step[0] = pos + 1u;
}

@compute @workgroup_size(${W})
fn main(@builtin(local_invocation_index) lid: u32${sg ? ', @builtin(subgroup_invocation_id) sl: u32' : ''}) {
${sample ? `  // Read before the reduction: finish (lid 0, after its barriers) advances step[0].
  IT = bitcast<f32>(samp[0]);
  SH = pcg(step[0] ^ pcg(samp[1]));
` : ''}  var bk = 0u; var bi = NONE;
  // A thread's indices increase, so a strict > keeps its lowest index on ties; the first element it
  // sees is taken whatever its key (a NaN at index 0 must still be a candidate for the all-NaN rule).
  if (lid < p.n) { bk = kat(lid); bi = iat(lid); }
  var i = lid + ${W}u;
  for (; i + ${3 * W}u < p.n; i += ${4 * W}u) {
    let k0 = kat(i); let k1 = kat(i + ${W}u); let k2 = kat(i + ${2 * W}u); let k3 = kat(i + ${3 * W}u);
    ${beats('k0', 'iat(i)')}
    ${beats('k1', `iat(i + ${W}u)`)}
    ${beats('k2', `iat(i + ${2 * W}u)`)}
    ${beats('k3', `iat(i + ${3 * W}u)`)}
  }
  for (; i < p.n; i += ${W}u) { let k = kat(i); ${beats('k', 'iat(i)')} }
${reduce}
}
`;
}

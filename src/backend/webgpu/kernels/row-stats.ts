/**
 * What evaluation needs from a forward's logits, computed where they are, so that a (T, V) logits
 * matrix (512 × 8192 floats = 16 MB a window of the 18m model, 412 MB for 2048 × 50272) never crosses
 * to the host: per row, log Σ exp (the softmax's normaliser), the logit of a given target token,
 * the argmax, and with KL the divergence KL(ref ‖ this) from a reference forward's logits kept on the
 * device (`eval --compare`: dense kept, then sparse against it). CPU twin: `rowStatsOf` in
 * src/backend/row-stats.ts (float64; the CPU backend's own path).
 *
 * One workgroup a row, WG threads each over a stride of the row, then a tree in workgroup memory:
 *   1. the largest value and its lowest index, on argmax.ts's order-preserving keys (ties to the lowest
 *      index, as torch.argmax and the CPU's argmaxRow);
 *   2. s = Σ exp(x − max), each thread's part summed with Kahan's compensation (V / WG terms in f32),
 *      lse = max + log s;
 *   3. with KL: Σ exp(a) (a − b), a = ref − lse_ref (from the reference's stats), b = x − lse.
 * f32 throughout: lse came within ~1e-6 of the float64 twin in the tests (which allow 2e-5
 * relative), against differences of 1e-3 and more between what evaluation compares. NaN: the argmax
 * ranks it below every number (argmax.ts's keys; the CPU's argmaxRow skips it too unless it is the
 * row's first value), and a NaN sum stays NaN.
 *
 * Bindings: 0 params; 1 logits (rows of V from row 0 of this pass); 2 targets (u32 by global row);
 * 3 out (4 words a global row: lse and the target's logit as f32 bits, the argmax as u32, KL or 0
 * as f32 bits); with KL 4 the reference logits of this pass's rows (rows of V from its row 0: the
 * runner keeps them a pass to a buffer, within any binding limit) and 5 the reference's out rows (by
 * global row). Global row = rowOff + local row.
 */
import type { RowStats } from '../../types.js';
import { argmaxKeyWgsl } from './argmax.js';

export const ROW_STATS_PARAMS = ['V', 'rowOff'] as const;
/** Words a row in the out buffer: lse, the target's logit (f32 bits), the argmax (u32), KL (f32 bits). */
export const ROW_STATS_FLOATS = 4;
export const ROW_STATS_WG = 256;

/** RowStats of `rows` rows from global row `first` of the out words read back (`kl`: with the KL column). */
export function readRowStats(words: ArrayBuffer, first: number, rows: number, kl: boolean): RowStats {
  const u = new Uint32Array(words), f = new Float32Array(words);
  const s: RowStats = { lse: new Float64Array(rows), target: new Float64Array(rows), argmax: new Int32Array(rows), kl: kl ? new Float64Array(rows) : null };
  for (let t = 0; t < rows; t++) {
    const o = (first + t) * ROW_STATS_FLOATS;
    s.lse[t] = f[o]; s.target[t] = f[o + 1]; s.argmax[t] = u[o + 2];
    if (s.kl) s.kl[t] = f[o + 3];
  }
  return s;
}

export const rowStatsKey = (kl: boolean) => `row_stats_wg${ROW_STATS_WG}${kl ? '_kl' : ''}`;

export function rowStatsWgsl(kl: boolean): string {
  const WG = ROW_STATS_WG;
  // A tree over the workgroup's slots of `arr` with `op`, leaving the result in slot 0.
  const tree = (arr: string, op: (a: string, b: string) => string) => `workgroupBarrier();
  for (var st = ${WG / 2}u; st > 0u; st >>= 1u) {
    if (lid < st) { ${arr}[lid] = ${op(`${arr}[lid]`, `${arr}[lid + st]`)}; }
    workgroupBarrier();
  }`;
  // Kahan-compensated running sum of `term` over the thread's stride of the row.
  const kahan = (term: string) => `var s = 0.0;
  var comp = 0.0;
  for (var i = lid; i < p.V; i += ${WG}u) {
    let y = ${term} - comp;
    let t = s + y;
    comp = (t - s) - y;
    s = t;
  }`;
  return `
struct P { V: u32, rowOff: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
${kl ? `@group(0) @binding(4) var<storage, read> refLogits: array<f32>;
@group(0) @binding(5) var<storage, read> refOut: array<u32>;` : ''}
var<workgroup> rk: array<u32, ${WG}>;
var<workgroup> ri: array<u32, ${WG}>;
var<workgroup> rs: array<f32, ${WG}>;
${argmaxKeyWgsl('keyOf')}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x;
  let g = p.rowOff + row;
  let base = row * p.V;
  // 1. The largest key and, among its holders, the lowest index.
  var bk = 0u;
  var bi = 0xffffffffu;
  for (var i = lid; i < p.V; i += ${WG}u) {
    let k = keyOf(bitcast<u32>(logits[base + i]));
    if (k > bk || bi == 0xffffffffu) { bk = k; bi = i; }
  }
  rk[lid] = bk;
  ri[lid] = bi;
  workgroupBarrier();
  for (var st = ${WG / 2}u; st > 0u; st >>= 1u) {
    if (lid < st) {
      let ok = rk[lid + st];
      let oi = ri[lid + st];
      if (oi != 0xffffffffu && (ri[lid] == 0xffffffffu || ok > rk[lid] || (ok == rk[lid] && oi < ri[lid]))) { rk[lid] = ok; ri[lid] = oi; }
    }
    workgroupBarrier();
  }
  let top = ri[0];
  let mx = logits[base + top];
  // 2. lse = max + log Σ exp(x − max).
  ${kahan('exp(logits[base + i] - mx)')}
  rs[lid] = s;
  ${tree('rs', (a, b) => `${a} + ${b}`)}
  let lse = mx + log(rs[0]);
  ${kl ? `// 3. KL(ref ‖ this) = Σ exp(a) (a − b), a = ref − lse_ref, b = x − lse.
  workgroupBarrier();   // every thread has read rs[0]
  let lr = bitcast<f32>(refOut[g * ${ROW_STATS_FLOATS}u]);
  let rb = row * p.V;
  {
    ${kahan('exp(refLogits[rb + i] - lr) * ((refLogits[rb + i] - lr) - (logits[base + i] - lse))')}
    rs[lid] = s;
  }
  ${tree('rs', (a, b) => `${a} + ${b}`)}` : ''}
  if (lid == 0u) {
    let o = g * ${ROW_STATS_FLOATS}u;
    out[o] = bitcast<u32>(lse);
    out[o + 1u] = bitcast<u32>(logits[base + min(targets[g], p.V - 1u)]);
    out[o + 2u] = top;
    out[o + 3u] = bitcast<u32>(${kl ? 'select(rs[0], 0.0, rs[0] < 0.0)' : '0.0'});   // (rounding can leave a tiny negative KL; NaN stays)
  }
}
`;
}

/**
 * DejaVu's head choice for one decode token, one workgroup: the top k of the H head scores s (at sOff;
 * ties: the lower index), and three outputs:
 * - hl (k): the chosen heads in ascending order (attention and out_proj walk them);
 * - hm (H): 1 for a chosen head, else 0 (the qkv GEMV skips the others' workgroups: gemv.ts, HEADS);
 * - skip (maxPos, H): row step[0] gets 0 for a chosen head, 1 for the others (their cache has no K/V
 *   at this position; attention's `heads` form leaves such positions out).
 * The scores come from the head predictor's GEMV (the runner multiplies B·A once: H < r, so one
 * (H, d) matrix reads fewer bytes than A and is one product); a fixed head set is its 0/1 flags.
 * Heads are ranked by counting (H ≤ 256, one thread a head): no sort.
 *
 * Measured alternatives (OPT-6.7B decode, H200, docs/benchmarks.md): the first form also took B u
 * here, one workgroup walking H × r products (26 µs a layer); dropping this dispatch and letting
 * every reader rank the heads itself from the scores (each workgroup of qkv, both attention phases
 * and out_proj) cost those kernels more than the dispatch saved (step 3.07 → 3.30 ms).
 * CPU twin: selectHeads (backend/cpu/heads.ts).
 */
export const HS_WG = 256;
export const HS_PARAMS = ['H', 'k', 'sOff'] as const;
export const headSelectKey = () => `head_select2_wg${HS_WG}`;

export function headSelectWgsl(): string {
  return `
struct P { H: u32, k: u32, sOff: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read> s: array<f32>;
@group(0) @binding(5) var<storage, read_write> hl: array<u32>;
@group(0) @binding(6) var<storage, read_write> hm: array<u32>;
@group(0) @binding(7) var<storage, read_write> skip: array<u32>;
var<workgroup> sc: array<f32, ${HS_WG}>;
var<workgroup> chosen: array<u32, ${HS_WG}>;
@compute @workgroup_size(${HS_WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  if (lid < p.H) { sc[lid] = s[p.sOff + lid]; }
  workgroupBarrier();
  var mine = 0u;
  if (lid < p.H) {
    let v = sc[lid];
    var rank = 0u;
    for (var g = 0u; g < p.H; g++) {
      let w = sc[g];
      if (w > v || (w == v && g < lid)) { rank++; }
    }
    mine = select(0u, 1u, rank < p.k);
    chosen[lid] = mine;
  }
  workgroupBarrier();
  if (lid < p.H) {
    hm[lid] = mine;
    skip[step[0] * p.H + lid] = 1u - mine;
    if (mine == 1u) {
      var at = 0u;
      for (var g = 0u; g < lid; g++) { at += chosen[g]; }
      hl[at] = lid;
    }
  }
}
`;
}

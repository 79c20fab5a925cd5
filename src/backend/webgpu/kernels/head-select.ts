/**
 * DejaVu's head choice for one decode token, one workgroup: scores = B u + bias (B: (H, r) f32, u the
 * head predictor's first product at uOff), the top k heads (ties: the lower index), and three outputs:
 * - hl (k): the chosen heads in ascending order (attention and out_proj walk them);
 * - hm (H): 1 for a chosen head, else 0 (the qkv GEMV skips the others' workgroups: gemv.ts, HEADS);
 * - skip (maxPos, H): row step[0] gets 0 for a chosen head, 1 for the others (their cache has no K/V
 *   at this position; attention's `heads` form leaves such positions out).
 * A fixed head set is r = 0 with bias 1 on its heads and 0 elsewhere. Heads are ranked by counting
 * (H ≤ 256, one thread a head): no sort, two barriers. CPU twin: selectHeads (backend/cpu/heads.ts).
 */
export const HS_WG = 256;
export const HS_PARAMS = ['H', 'r', 'k', 'uOff'] as const;
export const headSelectKey = () => `head_select_wg${HS_WG}`;

export function headSelectWgsl(): string {
  return `
struct P { H: u32, r: u32, k: u32, uOff: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read> B: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> hl: array<u32>;
@group(0) @binding(6) var<storage, read_write> hm: array<u32>;
@group(0) @binding(7) var<storage, read_write> skip: array<u32>;
var<workgroup> part: array<f32, ${HS_WG}>;
var<workgroup> sc: array<f32, ${HS_WG}>;
var<workgroup> chosen: array<u32, ${HS_WG}>;
@compute @workgroup_size(${HS_WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  // Lanes a head: the largest power of two with H · lanes <= ${HS_WG} (H = 32: 8 lanes, 72: 2).
  var lanes = ${HS_WG}u;
  while (lanes > 1u && lanes * p.H > ${HS_WG}u) { lanes /= 2u; }
  let h = lid / lanes;
  let lane = lid % lanes;
  var s = 0.0;
  if (h < p.H) {
    for (var j = lane; j < p.r; j += lanes) { s += B[h * p.r + j] * u[p.uOff + j]; }
  }
  part[lid] = s;
  workgroupBarrier();
  if (lid < p.H) {
    var t = bias[lid];
    for (var i = 0u; i < lanes; i++) { t += part[lid * lanes + i]; }
    sc[lid] = t;
  }
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

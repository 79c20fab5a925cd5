/**
 * The head choice of one decode token, as a WGSL piece every sparse-heads kernel carries (DejaVu's
 * attention half; HeadLayerPolicy): the top k of the H head scores (binding `binding`, array<f32>;
 * ties: the lower index). A head's rank is the number of heads that beat it, so a workgroup needs no
 * sort and no other workgroup: it loads the H scores into workgroup memory (one barrier) and counts.
 * The qkv GEMV, both attention phases and out_proj each do this for the heads they touch, so no
 * dispatch of its own chooses the heads: a separate head-select kernel (one workgroup) cost ~7 µs a
 * layer in an OPT-6.7B decode step on an H200, nearly all of it a dependent dispatch's fixed cost.
 * Scores come from the head predictor's GEMV (the runner's B·A, H × d) or, for a fixed head set,
 * its 0/1 flags. CPU twin: selectHeads (backend/cpu/heads.ts).
 *
 * WGSL it declares: `hsc` (H floats of workgroup memory), `loadHeadScores(lid)` (every thread of the
 * workgroup calls it, in uniform control flow: it holds a barrier), `headRank(h)` and `headChosen(h)`.
 */
export const headRankKey = (H: number, k: number) => `_h${H}k${k}`;

export function headRankWgsl(H: number, k: number, binding: number, wg: number): string {
  return `
@group(0) @binding(${binding}) var<storage, read> hscores: array<f32>;
const HEADS = ${H}u;
const HEADS_K = ${k}u;
var<workgroup> hsc: array<f32, ${H}>;
fn loadHeadScores(lid: u32) {
  for (var i = lid; i < HEADS; i += ${wg}u) { hsc[i] = hscores[i]; }
  workgroupBarrier();
}
fn headRank(h: u32) -> u32 {
  let v = hsc[h];
  var rank = 0u;
  for (var g = 0u; g < HEADS; g++) {
    let w = hsc[g];
    if (w > v || (w == v && g < h)) { rank++; }
  }
  return rank;
}
fn headChosen(h: u32) -> bool { return headRank(h) < HEADS_K; }
`;
}

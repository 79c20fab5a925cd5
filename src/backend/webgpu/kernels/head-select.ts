/**
 * DejaVu's head choice for one decode token: the top k of the H head scores (binding `scores`, f32;
 * ties: the lower index). A head's rank is the number of heads that beat it, so a workgroup chooses
 * with no sort and no other workgroup: threads h < H load the scores (one barrier), each ranks its
 * head (a second barrier). The workgroup asked to `write` also records the choice for the kernels
 * after it:
 * - hl (k): the chosen heads in ascending order (attention and out_proj walk them);
 * - skip (maxPos, H): row `pos` gets 0 for a chosen head, 1 for the others (their cache has no K/V at
 *   this position; attention's `heads` form leaves such positions out later).
 * Two homes for it: the qkv GEMV, where every workgroup whose rows the choice can skip chooses and
 * skips them if their head lost (gemv.ts, HEADS; workgroup 0 writes), and, where that GEMV cannot take the three extra bindings,
 * this file's one-workgroup kernel before it.
 *
 * The scores come from the head predictor's GEMV (the runner multiplies B·A once: H < r, so one
 * (H, d) matrix reads fewer bytes than A and is one product); a fixed head set's scores are its 0/1
 * flags. Measured forms (OPT-6.7B decode, H200, docs/benchmarks.md): this kernel taking B u itself,
 * one workgroup walking H × r products, 26 µs a layer; every reader (each workgroup of qkv, both
 * attention phases, out_proj) ranking for itself instead of reading hl, 3.07 → 3.30 ms a step.
 * CPU twin: selectHeads (backend/cpu/heads.ts).
 */
export const HS_WG = 256;

/**
 * WGSL: `chooseHeads(lid, pos, write)` and the workgroup flags `hch` (1: chosen), for a kernel of ≥ H
 * threads. `kvAll` (HeadLayerPolicy.kv 'all': every head stores K/V): the skip row is all zeros.
 * `lazy` (the qkv GEMV's LAZY form, gemv.ts): `skip` is the layer's H hole tags instead of the skip
 * rows, written at even positions p only: p + 1 (the odd position that owes the completion) for an
 * unchosen head, 0 for a chosen one. A tag is honoured only at that very position, so a step queued
 * past a stop and dropped cannot make a later one complete from the wrong input.
 */
export function headChoiceWgsl(H: number, k: number, b: { scores: number; hl: number; skip: number }, kvAll: boolean, lazy = false): string {
  return `
@group(0) @binding(${b.scores}) var<storage, read> hscores: array<f32>;
@group(0) @binding(${b.hl}) var<storage, read_write> hl: array<u32>;
@group(0) @binding(${b.skip}) var<storage, read_write> skip: array<u32>;
const HEADS = ${H}u;
const HEADS_K = ${k}u;
var<workgroup> hsc: array<f32, ${H}>;
var<workgroup> hch: array<u32, ${H}>;
// Every thread calls it, in uniform control flow (two barriers).
fn chooseHeads(lid: u32, pos: u32, write: bool) {
  if (lid < HEADS) { hsc[lid] = hscores[lid]; }
  workgroupBarrier();
  var mine = 0u;
  if (lid < HEADS) {
    let v = hsc[lid];
    var rank = 0u;
    for (var g = 0u; g < HEADS; g++) {
      let w = hsc[g];
      if (w > v || (w == v && g < lid)) { rank++; }
    }
    mine = select(0u, 1u, rank < HEADS_K);
    hch[lid] = mine;
  }
  workgroupBarrier();
  if (write && lid < HEADS) {
    ${lazy ? "if ((pos & 1u) == 0u) { skip[lid] = select(0u, pos + 1u, mine == 0u); }" : `skip[pos * HEADS + lid] = ${kvAll ? '0u' : '1u - mine'};`}
    if (mine == 1u) {
      var at = 0u;
      for (var g = 0u; g < lid; g++) { at += hch[g]; }
      hl[at] = lid;
    }
  }
}
`;
}

export const headSelectKey = (H: number, k: number, kvAll: boolean) => `head_select3_wg${HS_WG}_h${H}k${k}${kvAll ? '_kvall' : ''}`;

/** The one-workgroup kernel: bindings 0 params (the token: 0 in decode), 1 step, 2 scores, 3 hl, 4 skip. */
export function headSelectWgsl(H: number, k: number, kvAll: boolean): string {
  return `
struct P { t: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> step: array<u32>;
${headChoiceWgsl(H, k, { scores: 2, hl: 3, skip: 4 }, kvAll)}
@compute @workgroup_size(${HS_WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  chooseHeads(lid, step[0] + p.t, true);
}
`;
}

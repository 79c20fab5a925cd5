/**
 * out_proj with sparse heads (decode, one token): y[i] += b[i] + Σ over the chosen heads h (hl, k of
 * them) of W[i, h·hd .. (h+1)·hd) · o[h·hd .. (h+1)·hd). The unchosen heads' columns are never read,
 * nor their attention outputs (stale: attention did not run for them). W is out_proj (d, d) as stored,
 * rows padded to 8 halves: a head's columns are hd/8 consecutive 16-byte chunks of a row, so the
 * lanes of a row read whole chunks, coalesced within a head. R rows a workgroup, TPR lanes a row, four
 * chunks in flight a lane. Rows of one weight part (row0, partRows) per dispatch. CPU twin: the CPU
 * runner's out_proj over headAttention's output (zeros outside the chosen heads).
 */
export const HO_WG = 256;
export const HO_PARAMS = ['d', 'd8', 'k', 'cph', 'row0', 'partRows'] as const;
export interface HeadOutShape { tpr: number; bias: boolean }
export const headOutKey = (s: HeadOutShape) => `head_out_wg${HO_WG}_tpr${s.tpr}${s.bias ? '_bias' : ''}`;

/** Lanes a row: enough for the chunks the chosen heads give a row (k · hd / 8), at least 32. */
export function headOutTpr(k: number, hd: number): number {
  return k * (hd / 8) > 256 ? 64 : 32;
}

export function headOutWgsl(s: HeadOutShape): string {
  const R = HO_WG / s.tpr;
  return `
struct P { d: u32, d8: u32, k: u32, cph: u32, row0: u32, partRows: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> o: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> hl: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
${s.bias ? '@group(0) @binding(5) var<storage, read> b: array<f32>;' : ''}
const TPR = ${s.tpr}u;
var<workgroup> red: array<f32, ${HO_WG}>;
fn lo(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn hi(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)); }
// Chunk c of the chosen columns (c < k · cph): its 8 weights of row wb and the 8 outputs they meet.
fn term(wb: u32, c: u32) -> f32 {
  let col8 = hl[c / p.cph] * p.cph + c % p.cph;
  let w = W[wb + col8];
  return dot(lo(w), o[2u * col8]) + dot(hi(w), o[2u * col8 + 1u]);
}
@compute @workgroup_size(${HO_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let lane = lid % TPR;
  let pr = wid.x * ${R}u + lid / TPR;      // row within this part
  let live = pr < p.partRows;
  let wb = min(pr, p.partRows - 1u) * p.d8;
  let n = p.k * p.cph;
  var a0 = 0.0; var a1 = 0.0; var a2 = 0.0; var a3 = 0.0;
  var c = lane;
  loop {
    if (c + 3u * TPR >= n) { break; }
    a0 += term(wb, c); a1 += term(wb, c + TPR); a2 += term(wb, c + 2u * TPR); a3 += term(wb, c + 3u * TPR);
    c += 4u * TPR;
  }
  for (; c < n; c += TPR) { a0 += term(wb, c); }
  red[lid] = (a0 + a1) + (a2 + a3);
  workgroupBarrier();
  for (var st = TPR / 2u; st > 0u; st >>= 1u) {
    if (lane < st) { red[lid] += red[lid + st]; }
    workgroupBarrier();
  }
  if (lane == 0u && live) {
    let i = p.row0 + pr;
    y[i] = y[i] + red[lid]${s.bias ? ' + b[i]' : ''};
  }
}
`;
}

import { halves8Wgsl, laneSumWgsl } from './common.js';
/**
 * out_proj with sparse heads (decode, one token): y[i] += b[i] + Σ over the chosen heads h (hl, k of
 * them, from head-select.ts) of W[i, h·hd .. (h+1)·hd) · o[h·hd .. (h+1)·hd). The unchosen heads' columns are never read,
 * nor their attention outputs (stale: attention did not run for them). W is out_proj (d, d) as stored,
 * rows padded to 8 halves: a head's columns are hd/8 consecutive 16-byte chunks of a row, so the
 * lanes of a row read whole chunks, coalesced within a head. R rows a workgroup, TPR lanes a row, four
 * chunks in flight a lane. Rows of one weight part (row0, partRows) per dispatch. CPU twin: the CPU
 * runner's out_proj over headAttention's output (zeros outside the chosen heads).
 *
 * Two layouts of the same weights: out_proj as stored (row-major: a row's chosen heads are k runs of
 * hd halves, 8 KiB apart at OPT-6.7B), or head-major (headMajorWgsl, made once by setSparsity: head
 * h's columns for every row in one block, so the rows a workgroup reads of a head are contiguous).
 */
export const HO_WG = 256;
/** Rows a thread: each x chunk (and its column index) is loaded once for RPT rows' weights. */
export const HO_RPT = 2;
/** rstride: vec4 chunks from one row to the next; hstride: from one head's columns to the next (the two layouts below). */
export const HO_PARAMS = ['rstride', 'hstride', 'row0', 'partRows', 'yOff', 'rideRows', 'rideRstride', 'rideOff', 'mainWgs'] as const;
/**
 * n: chosen chunks a row (k · hd / 8: the column table's size); cph: chunks a head. ride: RIDE (as
 * gemv.ts's): workgroups past `mainWgs` run another matrix WA of the same width, stored row-major
 * (rideRows rows of rideRstride chunks), over the same chosen heads, adding into y2[rideOff + row]
 * with no bias: attn_io's o half of predictor A (its head columns) in out_proj's dispatch.
 */
/**
 * sg: the row sums start with subgroupAdd (then a tree over the row's subgroups where a row spans
 * several; the workgroup tree where a subgroup is wider than a row); sgx: a row is exactly one
 * subgroup (the adapter's one subgroup size is tpr), so subgroupAdd alone sums it, with no barrier.
 */
export interface HeadOutShape { tpr: number; bias: boolean; k: number; cph: number; ride?: boolean; sg?: boolean; sgx?: boolean }
export const headOutKey = (s: HeadOutShape) => `head_out4_wg${HO_WG}_tpr${s.tpr}_p${HO_RPT}_k${s.k}_c${s.cph}${s.bias ? '_bias' : ''}${s.ride ? '_ride' : ''}${s.sgx ? '_sgx' : s.sg ? '_sg' : ''}`;

/** Lanes a row: enough for the chunks the chosen heads give a row (k · hd / 8), at least 32. */
export function headOutTpr(k: number, hd: number): number {
  return k * (hd / 8) > 512 ? 64 : 32;
}

/**
 * The column table first (cols[c] = the 16-byte chunk of a row that chosen chunk c is, from hl), so
 * the dot loop's weight loads wait on no global load; then each thread walks its chunks two at a
 * time for HO_RPT rows R apart: 2 · HO_RPT weight loads in flight. The first form (a row a thread,
 * hl read in the loop) ran OPT-6.7B's out_proj at 40 % heads in 16.2 µs (H200), against the dense
 * GEMV's 19.3 µs for all of it. The row sums take subgroupAdd where there are subgroups (sg, sgx):
 * a row of 32 lanes on a 32-wide subgroup needs no barrier, where the tree took six a row (H200,
 * decode GPU ms: opt-6.7b kv all and opt-30b kv lazy −0.3 %).
 */
export function headOutWgsl(s: HeadOutShape): string {
  const R = HO_WG / s.tpr, P = HO_RPT, ride = !!s.ride;
  const each = (fn: (i: number) => string, sep = ' ') => Array.from({ length: P }, (_, i) => fn(i)).join(sep);
  // The dot loop over matrix M's rows (W, or WA in a riding workgroup: WGSL takes no storage pointer arguments).
  const dots = (M: string) => `var c = lane;
  loop {
    if (c + TPR >= N) { break; }
    let ca = cols[c]; let cb = cols[c + TPR]; let va = wcol[c]; let vb = wcol[c + TPR];
    ${each((i) => `let w${i}a = ${M}[wb${i} + va]; let w${i}b = ${M}[wb${i} + vb];`, '\n    ')}
    let xa0 = o[2u * ca]; let xa1 = o[2u * ca + 1u]; let xb0 = o[2u * cb]; let xb1 = o[2u * cb + 1u];
    ${each((i) => `a${i} += wdot(w${i}a, xa0, xa1) + wdot(w${i}b, xb0, xb1);`, '\n    ')}
    c += 2u * TPR;
  }
  if (c < N) {
    let ca = cols[c]; let va = wcol[c];
    let x0 = o[2u * ca]; let x1 = o[2u * ca + 1u];
    ${each((i) => `a${i} += wdot(${M}[wb${i} + va], x0, x1);`)}
  }`;
  const store = (v: string) => `let row = p.row0 + pr;
      y[p.yOff + row] = y[p.yOff + row] + ${v}${s.bias ? ' + b[row]' : ''};`;
  const sg = !!s.sg || !!s.sgx;
  // Row i's sum into `v` at lane 0, then its store.
  const rowSum = (i: number) => {
    const v = s.sgx ? 'tot' : 'red[lid]';
    const put = `let pr = r0 + ${i}u * R;
    if (lane == 0u && pr < nRows) {
      ${ride ? `if (isRide) { y2[p.rideOff + pr] = y2[p.rideOff + pr] + ${v}; } else {
      ${store(v)}
      }` : store(v)}
    }`;
    return s.sgx ? `{
    let tot = subgroupAdd(a${i});
    ${put}
  }` : `{
    ${laneSumWgsl({ v: `a${i}`, lanes: 'TPR', lane: 'lane', sg, narrow: true })}
    ${put}
    workgroupBarrier();
  }`;
  };
  return `${sg ? 'enable subgroups;' : ''}
struct P { rstride: u32, hstride: u32, row0: u32, partRows: u32, yOff: u32, rideRows: u32, rideRstride: u32, rideOff: u32, mainWgs: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> o: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> hl: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
${s.bias ? '@group(0) @binding(5) var<storage, read> b: array<f32>;' : ''}
${ride ? `@group(0) @binding(6) var<storage, read> WA: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read_write> y2: array<f32>;` : ''}
const TPR = ${s.tpr}u;
const R = ${R}u;
const N = ${s.k * s.cph}u;
const CPH = ${s.cph}u;
var<workgroup> cols: array<u32, N>;
var<workgroup> wcol: array<u32, N>;
var<workgroup> red: array<f32, ${HO_WG}>;
${halves8Wgsl()}
fn wdot(w: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>) -> f32 { return dot(lo(w), x0) + dot(hi(w), x1); }
@compute @workgroup_size(${HO_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${s.sg && !s.sgx ? ', @builtin(subgroup_invocation_id) sl: u32, @builtin(subgroup_size) ss: u32' : ''}) {
  ${ride ? `let isRide = wid.x >= p.mainWgs;   // uniform in a workgroup
  let hs = select(p.hstride, CPH, isRide);   // WA as stored: a head's columns are CPH chunks of a row
  let rs = select(p.rstride, p.rideRstride, isRide);
  let nRows = select(p.partRows, p.rideRows, isRide);
  let wg = select(wid.x, wid.x - p.mainWgs, isRide);` : `let hs = p.hstride; let rs = p.rstride; let nRows = p.partRows; let wg = wid.x;`}
  for (var c = lid; c < N; c += ${HO_WG}u) {
    let h = hl[c / CPH];
    cols[c] = h * CPH + c % CPH;             // the chunk's place in o
    wcol[c] = h * hs + c % CPH;              // and in a row's weights
  }
  workgroupBarrier();
  let lane = lid % TPR;
  let r0 = wg * R * ${P}u + lid / TPR;   // rows r0 + i·R of this part
  ${each((i) => `let wb${i} = min(r0 + ${i}u * R, nRows - 1u) * rs;`, '\n  ')}
  ${each((i) => `var a${i} = 0.0;`)}
  ${ride ? `if (isRide) {
  ${dots('WA')}
  } else {
  ${dots('W')}
  }` : dots('W')}
  ${each(rowSum, '\n  ')}
}
`;
}

/**
 * out_proj (rows, H·hd) as stored → head-major: dst[(h · dRows + row0 + r) · hw + w] = src[r · srcW +
 * h · hw + w] in u32 words of two halves (hw = hd / 2), one weight part of `rows` rows from row0.
 */
export const HEAD_MAJOR_PARAMS = ['srcW', 'hw', 'H', 'rows', 'row0', 'dRows', 'nwgx'] as const;
export const headMajorKey = () => 'head_major_wg256';
export function headMajorWgsl(): string {
  return `
struct P { srcW: u32, hw: u32, H: u32, rows: u32, row0: u32, dRows: u32, nwgx: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = (wid.x + wid.y * p.nwgx) * 256u + lid;
  let per = p.H * p.hw;
  if (w >= p.rows * per) { return; }
  let r = w / per;
  let h = (w % per) / p.hw;
  let c = w % p.hw;
  dst[(h * p.dRows + p.row0 + r) * p.hw + c] = src[r * p.srcW + h * p.hw + c];
}
`;
}

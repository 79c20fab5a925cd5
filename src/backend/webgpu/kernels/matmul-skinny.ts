import { enables, weightDecl, wmode, type KernelFeatures } from './common.js';

/**
 * Prefill of a few tokens: y[t, n] = epi(Σ_k x[t, k] W[n, k]) as a GEMV over a tile of `tt` tokens.
 * A short prompt is what a chat or a completion request sends, and there the tiled matmul
 * (matmul.ts) has one 64-token tile, mostly empty, and only rows / 64 workgroups, each walking all
 * of K: OPT-6.7B's 16-token prefill took as long as 16 decode steps. Here a workgroup of 256
 * threads holds 16 rows (8 groups of 32 lanes, 2 rows a lane) and a tile of tt tokens; a lane walks
 * K in vec4 chunks (lanes on consecutive chunks: coalesced), loading each weight chunk once for its
 * tt tokens and each x chunk (from L1: every group of the workgroup reads the same x) once for its
 * two rows. The grid's x runs over token tiles, fastest, so the tiles of one row group run side by
 * side and all but the first read those weight rows from L2: the weights cross DRAM about once
 * whatever the number of tiles.
 * Rows and tokens past the ends are clamped to the last (their sums are computed, never written),
 * so the dot loop has no branches. Sums over a row's 32 lanes: subgroupAdd where the adapter's one
 * subgroup size is 32 (`sg`), else a tree in workgroup memory (256 × 2·tt floats: 16 KiB at tt = 8,
 * WebGPU's default limit).
 * `xv4`: x read as vec4<f32> (K, x's stride and offset multiples of 4), else four checked scalars.
 * Same epilogue and uniform layout as the matmul. CPU twin: `linear`.
 */
export interface SkinnyOpts { bias: boolean; relu: boolean; resid: boolean; tt: number; sg: boolean; xv4: boolean }

/** Lanes a row, rows a lane, rows a workgroup. */
const LANES = 32, RPL = 2;
export const SKINNY_ROWS = (256 / LANES) * RPL;
/** Tokens a tile (the default; Kernels.skinnyTokens) and the longest pass that takes this form, by default. */
export const SKINNY_TT = 8;
export const SKINNY_MAX = 32;

export function skinnyKey(f: KernelFeatures, o: SkinnyOpts): string {
  return `skinny_${wmode(f)}_tt${o.tt}${o.sg ? '_sg' : ''}${o.xv4 ? '_xv4' : ''}${o.bias ? '_bias' : ''}${o.relu ? '_relu' : ''}${o.resid ? '_resid' : ''}`;
}

/** Whether the subgroup reduction applies: the adapter's one subgroup size is a row's lanes. */
export const skinnySubgroups = (f: KernelFeatures) => f.subgroups && f.subgroupSize === LANES;

export function skinnyWgsl(f: KernelFeatures, o: SkinnyOpts): string {
  const T = o.tt, NV = RPL * T;
  const toks = Array.from({ length: T }, (_, t) => t), rws = Array.from({ length: RPL }, (_, r) => r);
  const acc = (r: number, t: number) => `a${r}_${t}`;
  const xdecl = o.xv4 ? '@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;' : '@group(0) @binding(2) var<storage, read> x: array<f32>;';
  const xchunk = o.xv4
    ? `fn xchunk(t: u32, c: u32) -> vec4<f32> { return x[(t * p.inStride + p.inOff) / 4u + c]; }`
    : `fn xchunk(t: u32, c: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  let kb = 4u * c;
  let xb = t * p.inStride + p.inOff + kb;
  for (var e = 0u; e < 4u; e++) { if (kb + e < p.K) { v[e] = x[xb + e]; } }
  return v;
}`;
  // The write of one sum: value v of the lane group (row r0 + v / T, token t0 + v % T).
  const write = (v: string, s: string) => `{
      let n = r0 + ${v} / ${T}u;
      let t = t0 + ${v} % ${T}u;
      if (n < p.rows && t < p.T) {
        var y1 = ${s};
        ${o.bias ? 'y1 += bias[p.rowOff + n];' : ''}
        ${o.relu ? 'y1 = max(y1, 0.0);' : ''}
        let oi = t * p.outStride + p.outOff + n;
        ${o.resid ? 'y[oi] = y[oi] + y1;' : 'y[oi] = y1;'}
      }
    }`;
  const sums: string[] = [];
  rws.forEach((r) => toks.forEach((t) => sums.push(acc(r, t))));
  const reduce = o.sg
    ? sums.map((a, v) => `  { let s = subgroupAdd(${a}); if (lane == ${v}u) ${write(`${v}u`, 's')} }`).join('\n')
    : `  ${sums.map((a, v) => `red[lid * ${NV}u + ${v}u] = ${a};`).join(' ')}
  workgroupBarrier();
  for (var st = ${LANES / 2}u; st > 0u; st >>= 1u) {
    if (lane < st) {
      for (var v = 0u; v < ${NV}u; v++) { red[lid * ${NV}u + v] += red[(lid + st) * ${NV}u + v]; }
    }
    workgroupBarrier();
  }
  if (lane < ${NV}u) ${write('lane', `red[(lid - lane) * ${NV}u + lane]`)}`;
  return `${enables(f, o.sg)}
struct P { rows: u32, K: u32, K4: u32, rowOff: u32, T: u32, inStride: u32, inOff: u32, outStride: u32, outOff: u32 }
@group(0) @binding(0) var<uniform> p: P;
${weightDecl(f, 1, 'W')}
${xdecl}
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
${o.bias ? '@group(0) @binding(4) var<storage, read> bias: array<f32>;' : ''}
${o.sg ? '' : `var<workgroup> red: array<f32, ${256 * NV}>;`}
${xchunk}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t0 = wid.x * ${T}u;
  let lane = lid % ${LANES}u;
  let r0 = wid.y * ${SKINNY_ROWS}u + (lid / ${LANES}u) * ${RPL}u;
  // Past the last row or token: the last one's (read, summed, not written).
${rws.map((r) => `  let w${r}b = min(r0 + ${r}u, p.rows - 1u) * p.K4;`).join('\n')}
${toks.map((t) => `  let x${t}t = min(t0 + ${t}u, p.T - 1u);`).join('\n')}
${rws.map((r) => toks.map((t) => `  var ${acc(r, t)} = 0.0;`).join('')).join('\n')}
  for (var c = lane; c < p.K4; c += ${LANES}u) {
${rws.map((r) => `    let w${r} = W_4(w${r}b + c);`).join('\n')}
${toks.map((t) => `    { let xv = xchunk(x${t}t, c);${rws.map((r) => ` ${acc(r, t)} += dot(w${r}, xv);`).join('')} }`).join('\n')}
  }
${reduce}
}
`;
}

import { enables, halves8Wgsl, weightDecl, wmode, type KernelFeatures } from './common.js';

/**
 * Prefill: y[t, n] = epi(Σ_k x[t, k] W[n, k]) as a GEMV over tiles of `tt` tokens. A short prompt
 * is what a chat or a completion request sends, and there the tiled matmul this replaced (64-token ×
 * 64-row tiles, each thread a 4 × 4 block in registers; in git history as kernels/matmul.ts) had one
 * 64-token tile, mostly empty, and only rows / 64 workgroups, each walking all of K: OPT-6.7B's
 * 16-token prefill took as long as 16 decode steps (H200: 65 ms; this kernel 18). Here a workgroup of
 * 256 threads holds (256 / lanes) · rpl rows and a tile of tt tokens: each group of `lanes` lanes
 * has `rpl` rows, and a lane walks K in chunks (lanes on consecutive chunks: coalesced), loading each
 * weight chunk once for its tt tokens and each x chunk (from L1: every group reads the same x) once
 * for its rpl rows. The grid's x runs over token tiles, fastest, so the tiles of one row group run
 * side by side and all but the first find those weight rows in L2. It also beat the tiled matmul on
 * long prompts (passes of 128 tokens, the runner's longest: H200, opt-1.3b to 30b, docs/benchmarks.md),
 * so every prompt pass takes it.
 * Rows and tokens past the ends are clamped to the last (their sums are computed, never written),
 * so the dot loop has no branches. Sums over a row's lanes: subgroupAdd where the adapter's one
 * subgroup size is `lanes` (`sg`), else a tree in workgroup memory, in rounds of 16 sums a lane group
 * (256 × 16 floats: 16 KiB, WebGPU's default limit).
 * `wide`: 16-byte weight loads (8 halves), else 8-byte; `xv4`: x read as vec4<f32> (K, x's stride
 * and offset multiples of 4), else four checked scalars.
 * Same epilogue and uniform layout as the matmul. CPU twin: `linear`.
 */
export interface SkinnyOpts {
  bias: boolean; relu: boolean; resid: boolean;
  /** Tokens a tile, lanes a row (a power of two, 256 / lanes groups a workgroup), rows a lane. */
  tt: number; lanes: number; rpl: number;
  /** 16-byte weight loads (8 halves; rows a whole number of them: K4 even), else 8-byte. */
  wide: boolean;
  sg: boolean; xv4: boolean;
}

/**
 * The default form (Kernels.skinny): tokens a tile, lanes a row, rows a lane. Of the forms timed
 * (tt 4/8/16, lanes 32/64, rpl 2/4/8; bench/prefill.mjs), 4 × 32 × 4 was the fastest or within a
 * few per cent of it from 32 tokens up at every shape; at a few short lengths another was up to 20 %
 * faster (and at others slower): one form for every length.
 */
export const SKINNY_FORM = { tt: 4, lanes: 32, rpl: 4 };
/** Rows a workgroup of a form. */
export const skinnyRows = (o: { lanes: number; rpl: number }) => (256 / o.lanes) * o.rpl;

export function skinnyKey(f: KernelFeatures, o: SkinnyOpts): string {
  return `skinny_${wmode(f)}_tt${o.tt}l${o.lanes}r${o.rpl}${o.wide ? '_w16' : ''}${o.sg ? '_sg' : ''}${o.xv4 ? '_xv4' : ''}${o.bias ? '_bias' : ''}${o.relu ? '_relu' : ''}${o.resid ? '_resid' : ''}`;
}

/** Whether the subgroup reduction applies: the adapter's one subgroup size is a row's lanes. */
export const skinnySubgroups = (f: KernelFeatures, lanes: number) => f.subgroups && f.subgroupSize === lanes;

/** Values the tree reduction sums a round (256 × this floats of workgroup memory: 16 KiB, WebGPU's default limit). */
const ROUND = 16;

export function skinnyWgsl(f: KernelFeatures, o: SkinnyOpts): string {
  const T = o.tt, R = o.rpl, L = o.lanes, NV = R * T, ROWS = skinnyRows(o);
  const toks = Array.from({ length: T }, (_, t) => t), rws = Array.from({ length: R }, (_, r) => r);
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
      let n = r0 + (${v}) / ${T}u;
      let t = t0 + (${v}) % ${T}u;
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
  const rounds = Array.from({ length: Math.ceil(NV / ROUND) }, (_, i) => sums.slice(i * ROUND, (i + 1) * ROUND));
  const W8 = Math.min(ROUND, NV);
  const reduce = o.sg
    ? sums.map((a, v) => `  { let s = subgroupAdd(${a}); if (lane == ${v % L}u) ${write(`${v}u`, 's')} }`).join('\n')
    : rounds.map((vals, i) => `  ${vals.map((a, v) => `red[lid * ${W8}u + ${v}u] = ${a};`).join(' ')}
  workgroupBarrier();
  for (var st = ${L / 2}u; st > 0u; st >>= 1u) {
    if (lane < st) {
      for (var v = 0u; v < ${vals.length}u; v++) { red[lid * ${W8}u + v] += red[(lid + st) * ${W8}u + v]; }
    }
    workgroupBarrier();
  }
  for (var v = lane; v < ${vals.length}u; v += ${L}u) ${write(`v + ${i * ROUND}u`, `red[(lid - lane) * ${W8}u + v]`)}
  workgroupBarrier();`).join('\n');
  // One step of the dot loop: weight chunk(s) of each row, then each token's x against them.
  const step = o.wide
    ? `${rws.map((r) => `    let w${r} = W[w${r}b + c]; let w${r}l = lo(w${r}); let w${r}h = hi(w${r});`).join('\n')}
${toks.map((t) => `    { let xl = xchunk(x${t}t, 2u * c); let xh = xchunk(x${t}t, 2u * c + 1u);${rws.map((r) => ` ${acc(r, t)} += dot(w${r}l, xl) + dot(w${r}h, xh);`).join('')} }`).join('\n')}`
    : `${rws.map((r) => `    let w${r} = W_4(w${r}b + c);`).join('\n')}
${toks.map((t) => `    { let xv = xchunk(x${t}t, c);${rws.map((r) => ` ${acc(r, t)} += dot(w${r}, xv);`).join('')} }`).join('\n')}`;
  return `${enables(f, o.sg)}
struct P { rows: u32, K: u32, K4: u32, rowOff: u32, T: u32, inStride: u32, inOff: u32, outStride: u32, outOff: u32 }
@group(0) @binding(0) var<uniform> p: P;
${o.wide ? `@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;\n${halves8Wgsl()}` : weightDecl(f, 1, 'W')}
${xdecl}
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
${o.bias ? '@group(0) @binding(4) var<storage, read> bias: array<f32>;' : ''}
${o.sg ? '' : `var<workgroup> red: array<f32, ${256 * W8}>;`}
${xchunk}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t0 = wid.x * ${T}u;
  let lane = lid % ${L}u;
  let r0 = wid.y * ${ROWS}u + (lid / ${L}u) * ${R}u;
  // Chunks a row (of 8 halves with 16-byte loads, else of 4).
  let KC = ${o.wide ? 'p.K4 / 2u' : 'p.K4'};
  // Past the last row or token: the last one's (read, summed, not written).
${rws.map((r) => `  let w${r}b = min(r0 + ${r}u, p.rows - 1u) * KC;`).join('\n')}
${toks.map((t) => `  let x${t}t = min(t0 + ${t}u, p.T - 1u);`).join('\n')}
${rws.map((r) => toks.map((t) => `  var ${acc(r, t)} = 0.0;`).join('')).join('\n')}
  for (var c = lane; c < KC; c += ${L}u) {
${step}
  }
${reduce}
}
`;
}

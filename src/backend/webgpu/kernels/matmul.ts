import { enables, weightDecl, wmode, type KernelFeatures } from './common.js';

/**
 * Batched matmul for prefill (T > 1): y[t, n] = epi(Σ_k x[t, k] W[n, k]). A workgroup of 16 × 16
 * threads computes a 64-token × 64-row output tile, each thread a 4 × 4 block of it in registers;
 * K goes through workgroup memory a stage at a time (x: 64 tokens × KS, W: 64 rows × KS, as vec4s
 * over tokens and over rows), so each weight chunk is read once per 64 tokens and each
 * workgroup-memory read (two vec4s) feeds 16 FMAs. The first form (a 16 × 16 tile, one output a
 * thread, a scalar read each FMA) ran OPT-6.7B's 128-token prefill in 312 ms on an H200 (Hugging
 * Face: 11.5 ms); this one 114 ms.
 * `short` (prompts of few tokens): stages of 32 k, and each thread loads the next stage into
 * registers before this stage's FMAs. A workgroup walks the whole K, and with few tokens there is
 * one token tile, so a matrix of few rows (fc2, out_proj: d / 64 workgroups) has little else to
 * hide that walk's load latency. Better at 16 tokens, worse at 128 (docs/benchmarks.md).
 * Same epilogue and uniform layout as gemv (nwgx unused; T is a parameter). CPU twin: `linear`.
 */
export interface MatmulOpts { bias: boolean; relu: boolean; resid: boolean; short?: boolean }

export const MM_TILE = 64;
/** Passes of at most this many tokens take the `short` form (H200, docs/benchmarks.md). */
export const MATMUL_SHORT_MAX = 64;

export function matmulKey(f: KernelFeatures, o: MatmulOpts): string {
  return `matmul_${wmode(f)}_t64r4${o.short ? '_k32pf' : ''}${o.bias ? '_bias' : ''}${o.relu ? '_relu' : ''}${o.resid ? '_resid' : ''}`;
}

export const MATMUL_PARAMS = ['rows', 'K', 'K4', 'rowOff', 'T', 'inStride', 'inOff', 'outStride', 'outOff'] as const;

export function matmulWgsl(f: KernelFeatures, o: MatmulOpts): string {
  const KS = o.short ? 32 : 16, C = KS / 16; // k a stage; chunks of 4 k a thread brings a stage, per operand
  const chunks = Array.from({ length: C }, (_, c) => c);
  const each = (fn: (c: number) => string) => chunks.map(fn).join('\n');
  const load = (k0: string) => each((c) => `  sx${c} = xload(t0 + lm, ${k0} + 4u * lc + ${16 * c}u); sw${c} = wload(n0 + lm, ${k0} + 4u * lc + ${16 * c}u);`);
  return `${enables(f)}
struct P { rows: u32, K: u32, K4: u32, rowOff: u32, T: u32, inStride: u32, inOff: u32, outStride: u32, outOff: u32 }
@group(0) @binding(0) var<uniform> p: P;
${weightDecl(f, 1, 'W')}
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
${o.bias ? '@group(0) @binding(4) var<storage, read> bias: array<f32>;' : ''}
// [k][i]: tokens (xs) or rows (ws) 4i .. 4i + 3 of the stage at k (${KS} k: ${KS / 2} KiB in all).
var<workgroup> xs: array<array<vec4<f32>, 16>, ${KS}>;
var<workgroup> ws: array<array<vec4<f32>, 16>, ${KS}>;

// 4 consecutive k from kb of token t (zero past T and K) and of row r (W's padding columns are zero).
fn xload(t: u32, kb: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (t < p.T) {
    let xb = t * p.inStride + p.inOff + kb;
    for (var e = 0u; e < 4u; e++) { if (kb + e < p.K) { v[e] = x[xb + e]; } }
  }
  return v;
}
fn wload(r: u32, kb: u32) -> vec4<f32> {
  if (r < p.rows && kb / 4u < p.K4) { return W_4(r * p.K4 + kb / 4u); }
  return vec4<f32>(0.0);
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let n0 = wid.x * 64u;   // the tile's first row
  let t0 = wid.y * 64u;   // the tile's first token
  // Loads: thread li brings 4 consecutive k of token (or row) li / 4 at chunks li % 4 (+ 4 c) of the stage.
  let lm = li / 4u;
  let lc = li % 4u;
  var acc: array<vec4<f32>, 4>;   // acc[i][j]: token t0 + 4 l.y + i, row n0 + 4 l.x + j
  ${each((c) => `var sx${c} = vec4<f32>(0.0); var sw${c} = vec4<f32>(0.0);`)}
${o.short ? load('0u') : ''}
  for (var k0 = 0u; k0 < p.K; k0 += ${KS}u) {
${o.short ? '' : load('k0')}
    for (var e = 0u; e < 4u; e++) {
${each((c) => `      xs[4u * lc + e + ${16 * c}u][lm / 4u][lm % 4u] = sx${c}[e];
      ws[4u * lc + e + ${16 * c}u][lm / 4u][lm % 4u] = sw${c}[e];`)}
    }
    workgroupBarrier();
${o.short ? `    if (k0 + ${KS}u < p.K) {
${load(`k0 + ${KS}u`)}
    }` : ''}
    for (var kk = 0u; kk < ${KS}u; kk++) {
      let a = xs[kk][l.y];
      let b = ws[kk][l.x];
      acc[0] += a.x * b;
      acc[1] += a.y * b;
      acc[2] += a.z * b;
      acc[3] += a.w * b;
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let t = t0 + 4u * l.y + i;
    if (t >= p.T) { break; }
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + 4u * l.x + j;
      if (n < p.rows) {
        var v = acc[i][j];
        ${o.bias ? 'v += bias[p.rowOff + n];' : ''}
        ${o.relu ? 'v = max(v, 0.0);' : ''}
        let oi = t * p.outStride + p.outOff + n;
        ${o.resid ? 'y[oi] = y[oi] + v;' : 'y[oi] = v;'}
      }
    }
  }
}
`;
}

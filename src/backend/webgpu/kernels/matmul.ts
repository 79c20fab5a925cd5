import { enables, weightDecl, wmode, type KernelFeatures } from './common.js';

/**
 * Batched matmul for prefill (T > 1): y[t, n] = epi(Σ_k x[t, k] W[n, k]), 16x16 output tiles with
 * K staged through workgroup memory 16 at a time, so each weight chunk is read once per 16 tokens.
 * Same epilogue and uniform layout as gemv (nwgx unused; T is a parameter). CPU twin: `linear`.
 */
export interface MatmulOpts { bias: boolean; relu: boolean; resid: boolean }

export function matmulKey(f: KernelFeatures, o: MatmulOpts): string {
  return `matmul_${wmode(f)}_t16${o.bias ? '_bias' : ''}${o.relu ? '_relu' : ''}${o.resid ? '_resid' : ''}`;
}

export const MATMUL_PARAMS = ['rows', 'K', 'K4', 'rowOff', 'T', 'inStride', 'inOff', 'outStride', 'outOff'] as const;

export function matmulWgsl(f: KernelFeatures, o: MatmulOpts): string {
  return `${enables(f)}
struct P { rows: u32, K: u32, K4: u32, rowOff: u32, T: u32, inStride: u32, inOff: u32, outStride: u32, outOff: u32 }
@group(0) @binding(0) var<uniform> p: P;
${weightDecl(f, 1, 'W')}
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
${o.bias ? '@group(0) @binding(4) var<storage, read> bias: array<f32>;' : ''}
var<workgroup> xs: array<array<f32, 17>, 16>;
var<workgroup> ws: array<array<f32, 17>, 16>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let n = wid.x * 16u + l.x;
  let t = wid.y * 16u + l.y;
  var acc = 0.0;
  for (var k0 = 0u; k0 < p.K; k0 += 16u) {
    let kk = k0 + l.x;
    var xv = 0.0;
    if (t < p.T && kk < p.K) { xv = x[t * p.inStride + p.inOff + kk]; }
    xs[l.y][l.x] = xv;
    if (li < 64u) {
      let rr = wid.x * 16u + li / 4u;
      let c = k0 / 4u + li % 4u;
      var w = vec4<f32>(0.0);
      if (rr < p.rows && c < p.K4) { w = W_4(rr * p.K4 + c); }
      let j = (li % 4u) * 4u;
      ws[li / 4u][j] = w.x; ws[li / 4u][j + 1u] = w.y; ws[li / 4u][j + 2u] = w.z; ws[li / 4u][j + 3u] = w.w;
    }
    workgroupBarrier();
    for (var i = 0u; i < 16u; i++) { acc += xs[l.y][i] * ws[l.x][i]; }
    workgroupBarrier();
  }
  if (n < p.rows && t < p.T) {
    var v = acc;
    ${o.bias ? 'v += bias[p.rowOff + n];' : ''}
    ${o.relu ? 'v = max(v, 0.0);' : ''}
    let oi = t * p.outStride + p.outOff + n;
    ${o.resid ? 'y[oi] = y[oi] + v;' : 'y[oi] = v;'}
  }
}
`;
}

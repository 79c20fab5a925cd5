import { wgTotalWgsl } from './common.js';
/**
 * LayerNorm, one workgroup per row (a single pass per row: mean, then variance about the mean, as the
 * CPU twin `layerNorm` does). INPLACE (post-LN models) normalises the residual stream itself: a buffer
 * cannot be bound both read-only and writable in one dispatch.
 */
export const LN_PARAMS = ['n', 'inOff', 'outOff', 'epsBits'] as const;
/**
 * Workgroup sizes, the larger where the adapter allows it: one workgroup walks the whole row three
 * times (mean, variance, output), so at d = 4096 a 256-thread group makes 16 dependent loads per
 * thread per pass where 1024 threads make 4.
 */
export const LN_WGS = [1024, 256] as const;

export function layerNormWorkgroupSize(l: { maxComputeInvocationsPerWorkgroup: number; maxComputeWorkgroupSizeX: number }): number {
  for (const wg of LN_WGS) if (wg <= l.maxComputeInvocationsPerWorkgroup && wg <= l.maxComputeWorkgroupSizeX) return wg;
  return 256;
}

export const layerNormKey = (inplace: boolean, sg = false, wg = 256) => `layernorm_wg${wg}${sg ? '_sg' : ''}${inplace ? '_inplace' : ''}`;

/**
 * With subgroups, each reduction is a subgroupAdd plus one slot per subgroup (two barriers) instead of
 * an eight-level tree with a barrier per level: the kernel is latency-bound (d = 4096 is 16 KB), and
 * it ran 10 µs a call on an H200, twice per layer. Assumes subgroups are runs of consecutive
 * local_invocation_index, as the GEMV does.
 */
export function layerNormWgsl(inplace: boolean, sg = false, wg = 256): string {
  const LN_WG = wg;
  return `${sg ? 'enable subgroups;' : ''}
struct P { n: u32, inOff: u32, outOff: u32, epsBits: u32 }
@group(0) @binding(0) var<uniform> p: P;
${inplace ? '' : '@group(0) @binding(1) var<storage, read> x: array<f32>;'}
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> b: array<f32>;
var<workgroup> red: array<f32, ${LN_WG}>;
fn rd(i: u32) -> f32 { return ${inplace ? 'y' : 'x'}[i]; }
${wgTotalWgsl(LN_WG, sg)}
@compute @workgroup_size(${LN_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${sg ? ', @builtin(subgroup_invocation_id) sl: u32, @builtin(subgroup_size) ss: u32' : ''}) {
  let xb = p.inOff + wid.x * p.n;
  let yb = p.outOff + wid.x * p.n;
  var s = 0.0;
  for (var i = lid; i < p.n; i += ${LN_WG}u) { s += rd(xb + i); }
  let mean = wgTotal(s, lid${sg ? ', sl, ss' : ''}) / f32(p.n);
  var v = 0.0;
  for (var i = lid; i < p.n; i += ${LN_WG}u) { let c = rd(xb + i) - mean; v += c * c; }
  let inv = 1.0 / sqrt(wgTotal(v, lid${sg ? ', sl, ss' : ''}) / f32(p.n) + bitcast<f32>(p.epsBits));
  for (var i = lid; i < p.n; i += ${LN_WG}u) { y[yb + i] = (rd(xb + i) - mean) * inv * w[i] + b[i]; }
}
`;
}

import { enables, weightDecl, wmode, type KernelFeatures } from './common.js';

/**
 * Second half of the sparse MLP: y = Σ_j h_j · W2t[sel_j] over the selected neurons, with W2t = fc2
 * transposed (f, d) so a neuron is one contiguous row. WGSL has no float atomics, so:
 * - fc2_partial: workgroup (column block, slice s, token t) sums its slice of the selected rows into
 *   partial[t, slot, :] (slot = part * S + s). Neurons with h_j = 0 (ReLU) are skipped: the branch is
 *   uniform over the workgroup, so their rows are never read.
 * - fc2_reduce: x[t, i] += b2[i] + Σ_slot partial[t, slot, i] (residual and bias fused).
 * The first half (gathered fc1 with bias + ReLU) is gemv with GATHER. CPU twin: `sparseMlp`.
 */
export const FC2P_WG = 64;
export const FC2P_PARAMS = ['d4', 'k', 'slice', 'slots', 'slot0', 'selStride', 'row0', 'partRows'] as const;
export const fc2PartialKey = (f: KernelFeatures) => `fc2_partial_${wmode(f)}_wg${FC2P_WG}`;

export function fc2PartialWgsl(f: KernelFeatures): string {
  return `${enables(f)}
struct P { d4: u32, k: u32, slice: u32, slots: u32, slot0: u32, selStride: u32, row0: u32, partRows: u32 }
@group(0) @binding(0) var<uniform> p: P;
${weightDecl(f, 1, 'W')}
@group(0) @binding(2) var<storage, read> h: array<f32>;
@group(0) @binding(3) var<storage, read> sel: array<u32>;
@group(0) @binding(4) var<storage, read_write> part: array<vec4<f32>>;
@compute @workgroup_size(${FC2P_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let c = wid.x * ${FC2P_WG}u + lid;
  let sl = wid.y;
  let t = wid.z;
  var acc = vec4<f32>(0.0);
  let j1 = min(p.k, (sl + 1u) * p.slice);
  for (var j = sl * p.slice; j < j1; j++) {
    let hv = h[t * p.k + j];
    let idx = sel[t * p.selStride + j];
    if (hv != 0.0 && idx >= p.row0 && idx < p.row0 + p.partRows && c < p.d4) {
      acc += hv * W_4((idx - p.row0) * p.d4 + c);
    }
  }
  if (c < p.d4) { part[(t * p.slots + p.slot0 + sl) * p.d4 + c] = acc; }
}
`;
}

export const FC2R_PARAMS = ['d', 'd4', 'slots', 'bias'] as const;
export const fc2ReduceKey = (bias: boolean) => `fc2_reduce_wg256${bias ? '_bias' : ''}`;
export function fc2ReduceWgsl(bias: boolean): string {
  return `
struct P { d: u32, d4: u32, slots: u32, bias: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
${bias ? '@group(0) @binding(3) var<storage, read> b: array<f32>;' : ''}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let i = gid.x;
  let t = wid.y;
  if (i >= p.d) { return; }
  var s = ${bias ? 'b[i]' : '0.0'};
  for (var q = 0u; q < p.slots; q++) { s += part[(t * p.slots + q) * p.d4 * 4u + i]; }
  x[t * p.d + i] = x[t * p.d + i] + s;
}
`;
}

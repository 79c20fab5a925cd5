import { enables, kvPutWgsl, weightDecl, wmode, type KernelFeatures } from './common.js';

/** Appends the new tokens' K and V (from the fused qkv (T, 3d)) to the cache rows pos + t (packed f16 with `half`, common.ts). */
export const KV_PARAMS = ['d', 'T'] as const;
export const kvStoreKey = (half = false) => `kvstore_wg256${half ? '_kv16' : ''}`;
export function kvStoreWgsl(half = false): string {
  const E = half ? 'atomic<u32>' : 'f32';
  const put = (buf: string, src: string) => (half ? kvPutWgsl(buf, 'dst', src) : `${buf}[dst] = ${src};`);
  return `
struct P { d: u32, T: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read_write> kc: array<${E}>;
@group(0) @binding(4) var<storage, read_write> vc: array<${E}>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let e = gid.x;
  if (e >= p.d * p.T) { return; }
  let t = e / p.d; let i = e % p.d;
  let dst = (step[0] + t) * p.d + i;
  ${put('kc', 'qkv[t * 3u * p.d + p.d + i]')}
  ${put('vc', 'qkv[t * 3u * p.d + 2u * p.d + i]')}
}
`;
}

/**
 * Embeddings for token ids step[1 + t] at positions step[0] + t: dispatched once per part of the
 * (V, e) token table (rows [row0, row0 + partRows)). Without project_in: x = tok + pos. With it:
 * tmp = tok (e wide; project_in then adds into x) and x = pos (written by the part-0 dispatch).
 */
export const EMBED_PARAMS = ['d', 'e', 'T', 'row0', 'partRows', 'eP', 'dP', 'proj', 'writePos'] as const;
export const embedKey = (f: KernelFeatures) => `embed_${wmode(f)}`;
export function embedWgsl(f: KernelFeatures): string {
  return `${enables(f)}
struct P { d: u32, e: u32, T: u32, row0: u32, partRows: u32, eP: u32, dP: u32, proj: u32, writePos: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> step: array<u32>;
${weightDecl(f, 2, 'E')}
${weightDecl(f, 3, 'PE')}
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> tmp: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let w = max(p.d, p.e);
  if (gid.x >= w * p.T) { return; }
  let t = gid.x / w; let i = gid.x % w;
  let id = step[1u + t];
  let pr = step[0] + t + 2u;   // OPT's learned positions are offset by 2
  let mine = id >= p.row0 && id < p.row0 + p.partRows;
  if (p.proj == 0u) {
    if (mine && i < p.d) { x[t * p.d + i] = E_1((id - p.row0) * p.eP + i) + PE_1(pr * p.dP + i); }
  } else {
    if (mine && i < p.e) { tmp[t * p.e + i] = E_1((id - p.row0) * p.eP + i); }
    if (p.writePos != 0u && i < p.d) { x[t * p.d + i] = PE_1(pr * p.dP + i); }
  }
}
`;
}

/**
 * Synthetic weights, generated on the GPU (no host copies): a hash of (seed, element) -> uniform in
 * [-1, 1) scaled to standard deviation `std`, packed two fp16 per u32; padding columns stay zero.
 * The same bytes serve both the f16 and packed views.
 */
export const FILL_PARAMS = ['words', 'K', 'Kp', 'seed', 'stdBits', 'base'] as const;
export const fillKey = () => 'fill_f16_hash';
const HASH = `fn hash(v: u32) -> u32 {
  var s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}
fn rnd(seed: u32, i: u32) -> f32 { return f32(hash(i ^ hash(seed))) * (2.0 / 4294967296.0) - 1.0; }`;
export function fillWgsl(): string {
  return `
struct P { words: u32, K: u32, Kp: u32, seed: u32, stdBits: u32, base: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
${HASH}
fn val(e: u32) -> f32 {
  if (e % p.Kp >= p.K) { return 0.0; }
  return rnd(p.seed, p.base + e) * bitcast<f32>(p.stdBits) * 1.7320508;
}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nw: vec3<u32>) {
  let w = (wid.x + wid.y * nw.x) * 256u + lid;
  if (w >= p.words) { return; }
  out[w] = pack2x16float(vec2<f32>(val(2u * w), val(2u * w + 1u)));
}
`;
}
/** f32 vectors (LayerNorm weights = value, biases small): out[i] = value + std * rnd. */
export const FILL32_PARAMS = ['n', 'seed', 'stdBits', 'valueBits'] as const;
export const fill32Key = () => 'fill_f32_hash';
export function fill32Wgsl(): string {
  return `
struct P { n: u32, seed: u32, stdBits: u32, valueBits: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
${HASH}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x >= p.n) { return; }
  out[gid.x] = bitcast<f32>(p.valueBits) + rnd(p.seed, gid.x) * bitcast<f32>(p.stdBits) * 1.7320508;
}
`;
}

/**
 * fp16 transpose of one (source part, destination part) pair: src rows [s0, s0 + sRows) of a
 * (rows, cols) matrix (row width srcP) into dst rows [d0, d0 + dRows) of its (cols, rows) transpose
 * (row width dstP). Each thread writes one u32 (two halves); bits are moved, never rounded.
 * Source part row counts are even, so both halves of a word come from the same part. CPU twin: `transpose`.
 */
export const TRANSPOSE_PARAMS = ['rows', 'srcP', 'dstP', 's0', 'sRows', 'd0', 'dRows', 'nwgx'] as const;
export const transposeKey = () => 'transpose_f16_bits';
export function transposeWgsl(): string {
  return `
struct P { rows: u32, srcP: u32, dstP: u32, s0: u32, sRows: u32, d0: u32, dRows: u32, nwgx: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
fn half(i: u32) -> u32 { return extractBits(src[i / 2u], (i % 2u) * 16u, 16u); }
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = (wid.x + wid.y * p.nwgx) * 256u + lid;
  let wpr = p.dstP / 2u;
  if (w >= p.dRows * wpr) { return; }
  let j = p.d0 + w / wpr;          // source column = destination row
  let i0 = (w % wpr) * 2u;         // source row of the low half
  if (i0 < p.s0 || i0 >= p.s0 + p.sRows) { return; }
  let r = i0 - p.s0;
  var lo = 0u; var hi = 0u;
  if (i0 < p.rows) { lo = half(r * p.srcP + j); }
  if (i0 + 1u < p.rows) { hi = half((r + 1u) * p.srcP + j); }
  dst[w] = lo | (hi << 16u);
}
`;
}

/**
 * Column scaling in place, one matrix part: W[r, k] ← f16(W[r, k] · g[k]) (packed fp16, a thread a
 * u32 of two halves; padding columns stay zero). For γ folded into the stored weights at load
 * (Kernels.foldLayerNormIntoWeights; gemv.ts, GAMMA IN W). CPU twin: `scaleColumns`.
 */
export const SCALE_COLS_PARAMS = ['words', 'K', 'Kp', 'nwgx'] as const;
export const scaleColsKey = () => 'scale_cols_halves';
export function scaleColsWgsl(): string {
  return `
struct P { words: u32, K: u32, Kp: u32, nwgx: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> W: array<u32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = (wid.x + wid.y * p.nwgx) * 256u + lid;
  if (w >= p.words) { return; }
  let k = (w % (p.Kp / 2u)) * 2u;   // the low half's column (Kp is even: a word never spans rows)
  if (k >= p.K) { return; }
  let v = unpack2x16float(W[w]);
  let gh = select(0.0, g[min(k + 1u, p.K - 1u)], k + 1u < p.K);
  W[w] = pack2x16float(vec2<f32>(v.x * g[k], v.y * gh));
}
`;
}

/** fc1_act trace on sparse layers: a dense (f) row per token, zeros outside the selection. */
export const SCATTER_PARAMS = ['f', 'k', 'selStride'] as const;
export const scatterKey = () => 'scatter_wg256';
export function scatterWgsl(): string {
  return `
struct P { f: u32, k: u32, selStride: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> hsel: array<f32>;
@group(0) @binding(2) var<storage, read> sel: array<u32>;
@group(0) @binding(3) var<storage, read_write> act: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wid.x;
  for (var i = lid; i < p.f; i += 256u) { act[t * p.f + i] = 0.0; }
  storageBarrier();
  // Only nonzero values: the block rule's unused slots (h = 0) name a neuron another slot may hold.
  for (var j = lid; j < p.k; j += 256u) { let v = hsel[t * p.k + j]; if (v != 0.0) { act[t * p.f + sel[t * p.selStride + j]] = v; } }
}
`;
}

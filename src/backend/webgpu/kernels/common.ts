/**
 * Shared WGSL pieces. Weight matrices are fp16, stored row-major with each row padded to a multiple
 * of 4 columns (zeros), so a row is a whole number of vec4 chunks of 8 bytes. The bytes are the same
 * in both modes; only the shader's view differs:
 * - f16 (shader-f16):  array<vec4<f16>>
 * - packed (no f16):   array<vec2<u32>>, two halves per u32 decoded with unpack2x16float
 *   (browsers without shader-f16 take this path).
 */

/** Features a kernel's WGSL enables. */
export interface KernelFeatures {
  f16: boolean;
  subgroups: boolean;
  /** The adapter's one subgroup size, where it has one (Gpu.subgroupSize); with subgroups only. */
  subgroupSize?: number;
}

export function enables(f: KernelFeatures, useSubgroups = false): string {
  return (f.f16 ? 'enable f16;\n' : '') + (useSubgroups && f.subgroups ? 'enable subgroups;\n' : '');
}

/** Declares weight binding `name` and `name_4(i)` -> vec4<f32> (chunk i) and `name_1(i)` -> f32 (element i). */
export function weightDecl(f: KernelFeatures, binding: number, name: string): string {
  if (f.f16) {
    return `@group(0) @binding(${binding}) var<storage, read> ${name}: array<vec4<f16>>;
fn ${name}_4(i: u32) -> vec4<f32> { return vec4<f32>(${name}[i]); }
fn ${name}_1(i: u32) -> f32 { return f32(${name}[i / 4u][i % 4u]); }
`;
  }
  return `@group(0) @binding(${binding}) var<storage, read> ${name}: array<vec2<u32>>;
fn ${name}_4(i: u32) -> vec4<f32> { let p = ${name}[i]; return vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y)); }
fn ${name}_1(i: u32) -> f32 { let p = ${name}[i / 4u]; let w = select(p.x, p.y, (i % 4u) >= 2u); return unpack2x16float(w)[i % 2u]; }
`;
}

export const wmode = (f: KernelFeatures) => (f.f16 ? 'f16' : 'u32');

/**
 * The f16 KV cache is packed two halves to a u32 (element i in word i / 2, low half first: the byte
 * layout of an f16 array), so it needs no shader-f16 (Dawn on NVIDIA/Vulkan offers none). Writers
 * bind it as array<atomic<u32>> and store one half with two atomics: neighbouring elements belong to
 * other threads (other rows of the qkv GEMV), and a plain store of the word would clobber theirs.
 * WGSL statement: element `i` of `buf` = f16(v); the other half of the word is left as it is.
 */
export function kvPutWgsl(buf: string, i: string, v: string): string {
  return `{ let kvI = ${i}; let kvS = (kvI % 2u) * 16u;
    atomicAnd(&${buf}[kvI / 2u], ~(0xffffu << kvS));
    atomicOr(&${buf}[kvI / 2u], (pack2x16float(vec2<f32>(${v}, 0.0)) & 0xffffu) << kvS); }`;
}
/**
 * WGSL `${lo}(w)` and `${hi}(w)`: the first and last four halves of a 16-byte chunk of fp16 weights
 * (8 halves as vec4<u32>) as vec4<f32>: the wide kernels' one unpacking.
 */
export const halves8Wgsl = (lo = 'lo', hi = 'hi') => `fn ${lo}(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn ${hi}(w: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)); }`;
export const ceil4 = (n: number) => Math.ceil(n / 4) * 4;
export const ceilDiv = (a: number, b: number) => Math.ceil(a / b);

/**
 * WGSL `fn wgTotal(v, lid[, sl, ss]) -> f32`: the sum of v over a 1-D workgroup of `wg` threads, the
 * same value in every thread, through `red` (workgroup array<f32> of at least wg slots, declared by
 * the kernel). With subgroups: subgroupAdd, one slot per subgroup, two barriers (assumes subgroups
 * are runs of consecutive local_invocation_index); without: a tree with a barrier per level.
 * LayerNorm takes its row statistics with it (the LayerNorm-folding GEMV now rides its statistics
 * in its own reduction: gemv.ts).
 */
export function wgTotalWgsl(wg: number, sg: boolean): string {
  return sg ? `fn wgTotal(v: f32, lid: u32, sl: u32, ss: u32) -> f32 {
  let s = subgroupAdd(v);
  if (sl == 0u) { red[lid / ss] = s; }
  workgroupBarrier();
  var t = 0.0;
  for (var i = 0u; i < ${wg}u / ss; i++) { t += red[i]; }
  workgroupBarrier();
  return t;
}` : `fn wgTotal(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var st = ${wg / 2}u; st > 0u; st >>= 1u) {
    if (lid < st) { red[lid] += red[lid + st]; }
    workgroupBarrier();
  }
  let s = red[0];
  workgroupBarrier();
  return s;
}`;
}

/**
 * WGSL statements: sums `v` over each run of `lanes` consecutive threads (lane = `lane`, runs aligned
 * to multiples of lanes, a power of two) into red[lid] of the run's lane 0, through `red` (workgroup
 * array of the value's type, one slot a thread); ends after a barrier. With subgroups: subgroupAdd,
 * one slot per subgroup, then a tree over the subgroup sums (assumes subgroups are runs of
 * consecutive local_invocation_index, as every driver seen); `narrow` adds the plain tree for runs
 * shorter than a subgroup (lanes then must be workgroup-uniform, as ss is). Without: a tree over lanes.
 */
export function laneSumWgsl(o: { v: string; lanes: string; lane: string; sg: boolean; zero?: string; narrow?: boolean }): string {
  const tree = (stop: string) => `for (var st = ${o.lanes} / 2u; st ${stop}; st >>= 1u) {
    if (${o.lane} < st) { red[lid] += red[lid + st]; }
    workgroupBarrier();
  }`;
  const plain = `red[lid] = ${o.v};
  workgroupBarrier();
  ${tree('> 0u')}`;
  if (!o.sg) return plain;
  const sub = `red[lid] = select(${o.zero ?? '0.0'}, sa, sl == 0u);
  workgroupBarrier();
  ${tree('>= ss')}`;
  return `let sa = subgroupAdd(${o.v});
  ${o.narrow ? `if (${o.lanes} >= ss) {
  ${sub}
  } else {
  ${plain}
  }` : sub}`;
}

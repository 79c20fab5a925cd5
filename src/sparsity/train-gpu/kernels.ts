/**
 * The few kernels predictor training needs, each a function returning WGSL plus its CPU twin (the
 * twins are the CPU trainer's math and the reference the WGSL is tested against on odd shapes).
 * Everything is f32: training needs the precision, and these are small matrices (d x r, f x r).
 */

// ---------------------------------------------------------------------------------------------------
// Matmul: C(M, N) = op(A) · op(B) [+ bias(N)], op = identity or transpose, fixed at compile time.
// A is stored (M, K), or (K, M) when transA; B is stored (K, N), or (N, K) when transB.
// ---------------------------------------------------------------------------------------------------

export interface MatmulVariant { transA: boolean; transB: boolean; bias: boolean }

/** Tile sizes: a 16x16 workgroup computes a 64x64 block of C, 4x4 per thread, K in steps of 16. */
export const MM_TILE = 64;
const BK = 16;

export const matmulKey = (v: MatmulVariant): string => `train_mm_${v.transA ? 't' : 'n'}${v.transB ? 't' : 'n'}${v.bias ? '_bias' : ''}_t64x64k16`;

/**
 * Classic shared-memory tiling: each workgroup stages a 64x16 slice of op(A) and a 16x64 slice of
 * op(B) in workgroup memory (both stored K-major so the inner loop reads them the same way whatever
 * the transposes), then every thread accumulates a 4x4 register block. Threads own rows
 * `ty + 16i` and columns `tx + 16j` (strided, not contiguous) so that neighbouring threads write
 * neighbouring addresses of C. Loads are arranged along the stored matrix's contiguous axis.
 * Out-of-range elements load as 0, so any M, N, K works. Dispatch (ceil(N/64), ceil(M/64)).
 */
export function matmulWgsl(v: MatmulVariant): string {
  // Index of tile element e (0..1023) -> (row-in-tile, k-in-tile), chosen so consecutive e read consecutive memory.
  const aLoad = v.transA
    ? `let kk = e / 64u; let mm = e % 64u; let gm = m0 + mm; let gk = k0 + kk;
       var val = 0.0; if (gm < p.M && gk < p.K) { val = a[gk * p.M + gm]; }`
    : `let mm = e / 16u; let kk = e % 16u; let gm = m0 + mm; let gk = k0 + kk;
       var val = 0.0; if (gm < p.M && gk < p.K) { val = a[gm * p.K + gk]; }`;
  const bLoad = v.transB
    ? `let nn = e / 16u; let kk = e % 16u; let gn = n0 + nn; let gk = k0 + kk;
       var val = 0.0; if (gn < p.N && gk < p.K) { val = b[gn * p.K + gk]; }`
    : `let kk = e / 64u; let nn = e % 64u; let gn = n0 + nn; let gk = k0 + kk;
       var val = 0.0; if (gn < p.N && gk < p.K) { val = b[gk * p.N + gn]; }`;
  return /* wgsl */ `
struct P { M: u32, N: u32, K: u32, pad: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
${v.bias ? '@group(0) @binding(4) var<storage, read> bias: array<f32>;' : ''}
var<workgroup> As: array<f32, ${BK * MM_TILE}>;  // [k][m]
var<workgroup> Bs: array<f32, ${BK * MM_TILE}>;  // [k][n]

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) li: vec3u, @builtin(local_invocation_index) lidx: u32) {
  let m0 = wg.y * 64u;
  let n0 = wg.x * 64u;
  var acc: array<f32, 16>;
  for (var k0 = 0u; k0 < p.K; k0 += ${BK}u) {
    for (var e = lidx; e < ${BK * MM_TILE}u; e += 256u) {
      ${aLoad}
      As[kk * 64u + mm] = val;
    }
    for (var e = lidx; e < ${BK * MM_TILE}u; e += 256u) {
      ${bLoad}
      Bs[kk * 64u + nn] = val;
    }
    workgroupBarrier();
    for (var k = 0u; k < ${BK}u; k++) {
      var av: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) { av[i] = As[k * 64u + li.y + 16u * i]; bv[i] = Bs[k * 64u + li.x + 16u * i]; }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) { acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]); }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + li.y + 16u * i;
    if (m >= p.M) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + li.x + 16u * j;
      if (n < p.N) { c[m * p.N + n] = acc[i * 4u + j]${v.bias ? ' + bias[n]' : ''}; }
    }
  }
}`;
}

/** CPU twin of matmulWgsl. Normalises B to (K, N) first so the inner loop is a contiguous axpy. */
export function matmulCpu(a: Float32Array, b: Float32Array, M: number, N: number, K: number, v: MatmulVariant, bias?: Float32Array, c: Float32Array = new Float32Array(M * N)): Float32Array {
  let bk = b;
  if (v.transB) {
    bk = new Float32Array(K * N);
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) bk[k * N + n] = b[n * K + k];
  }
  c.fill(0);
  if (v.transA) {
    for (let k = 0; k < K; k++) {
      const br = k * N;
      for (let m = 0; m < M; m++) {
        const av = a[k * M + m];
        if (av === 0) continue;
        const cr = m * N;
        for (let n = 0; n < N; n++) c[cr + n] += av * bk[br + n];
      }
    }
  } else {
    for (let m = 0; m < M; m++) {
      const cr = m * N;
      for (let k = 0; k < K; k++) {
        const av = a[m * K + k];
        if (av === 0) continue;
        const br = k * N;
        for (let n = 0; n < N; n++) c[cr + n] += av * bk[br + n];
      }
    }
  }
  if (bias) for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) c[m * N + n] += bias[n];
  return c;
}

// ---------------------------------------------------------------------------------------------------
// Weighted BCE on logits: G = scale · w · (σ(s) - y), w = posWeight where y = 1; loss summed per row.
// Labels are bit-packed (bit j%32 of word j/32 of the row), as collected.
// ---------------------------------------------------------------------------------------------------

export const BCE_WG = 256;

/**
 * One workgroup per row (rows <= 65535 per dispatch: one minibatch). Writes G (rows, f) and adds the
 * row's loss to loss[row] (the host reads the sums once per epoch). log σ and log(1-σ) go through a
 * stable softplus so large logits do not overflow.
 */
export function bceGradWgsl(): string {
  return /* wgsl */ `
struct P { rows: u32, f: u32, words: u32, pad: u32, posWeight: f32, scale: f32, pad2: f32, pad3: f32 }
@group(0) @binding(0) var<storage, read> s: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<uniform> p: P;
var<workgroup> red: array<f32, ${BCE_WG}>;

fn softplus(z: f32) -> f32 { return max(z, 0.0) + log(1.0 + exp(-abs(z))); }

@compute @workgroup_size(${BCE_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lidx: u32) {
  let row = wg.x;
  var acc = 0.0;
  for (var j = lidx; j < p.f; j += ${BCE_WG}u) {
    let i = row * p.f + j;
    let x = s[i];
    let y = (labels[row * p.words + j / 32u] >> (j % 32u)) & 1u;
    let e = exp(-abs(x));
    let prob = select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
    if (y == 1u) {
      g[i] = p.scale * p.posWeight * (prob - 1.0);
      acc += p.posWeight * softplus(-x);
    } else {
      g[i] = p.scale * prob;
      acc += softplus(x);
    }
  }
  red[lidx] = acc;
  workgroupBarrier();
  for (var w = ${BCE_WG / 2}u; w > 0u; w >>= 1u) {
    if (lidx < w) { red[lidx] += red[lidx + w]; }
    workgroupBarrier();
  }
  if (lidx == 0u) { loss[row] += red[0]; }
}`;
}

const softplus = (z: number) => Math.max(z, 0) + Math.log1p(Math.exp(-Math.abs(z)));

/** CPU twin of bceGradWgsl: fills g and returns the summed loss of all rows. */
export function bceGradCpu(s: Float32Array, labels: Uint32Array, rows: number, f: number, posWeight: number, scale: number, g: Float32Array): number {
  const words = Math.ceil(f / 32);
  let loss = 0;
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < f; j++) {
      const i = r * f + j, x = s[i];
      const y = (labels[r * words + (j >>> 5)] >>> (j & 31)) & 1;
      const e = Math.exp(-Math.abs(x));
      const prob = x >= 0 ? 1 / (1 + e) : e / (1 + e);
      if (y) { g[i] = scale * posWeight * (prob - 1); loss += posWeight * softplus(-x); }
      else { g[i] = scale * prob; loss += softplus(x); }
    }
  }
  return loss;
}

// ---------------------------------------------------------------------------------------------------
// Column sum (the bias gradient): out(N) = Σ_m G(m, N). One thread per column: reads are coalesced.
// ---------------------------------------------------------------------------------------------------

export function colSumWgsl(): string {
  return /* wgsl */ `
struct P { M: u32, N: u32, pad: u32, pad2: u32 }
@group(0) @binding(0) var<storage, read> g: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3u) {
  let n = id.x;
  if (n >= p.N) { return; }
  var acc = 0.0;
  for (var m = 0u; m < p.M; m++) { acc += g[m * p.N + n]; }
  out[n] = acc;
}`;
}

export function colSumCpu(g: Float32Array, M: number, N: number, out: Float32Array = new Float32Array(N)): Float32Array {
  out.fill(0);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) out[n] += g[m * N + n];
  return out;
}

// ---------------------------------------------------------------------------------------------------
// AdamW (Loshchilov & Hutter): decoupled weight decay, bias-corrected moments.
// ---------------------------------------------------------------------------------------------------

export interface AdamParams { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; step: number }

/** Uniform layout for adamwWgsl: lr, b1, b2, eps, wd, 1-b1^t, 1-b2^t, n (as f32 bits of a u32). */
export function adamUniform(a: AdamParams, n: number): ArrayBuffer {
  const buf = new ArrayBuffer(32);
  const f = new Float32Array(buf), u = new Uint32Array(buf);
  f.set([a.lr, a.beta1, a.beta2, a.eps, a.weightDecay, 1 - a.beta1 ** a.step, 1 - a.beta2 ** a.step]);
  u[7] = n;
  return buf;
}

export function adamwWgsl(): string {
  return /* wgsl */ `
struct P { lr: f32, b1: f32, b2: f32, eps: f32, wd: f32, bc1: f32, bc2: f32, n: u32 }
@group(0) @binding(0) var<storage, read_write> w: array<f32>;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<uniform> p: P;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3u, @builtin(num_workgroups) nw: vec3u) {
  let i = id.x + id.y * nw.x * 256u;
  if (i >= p.n) { return; }
  let gi = g[i];
  let mi = p.b1 * m[i] + (1.0 - p.b1) * gi;
  let vi = p.b2 * v[i] + (1.0 - p.b2) * gi * gi;
  m[i] = mi;
  v[i] = vi;
  w[i] = w[i] - p.lr * ((mi / p.bc1) / (sqrt(vi / p.bc2) + p.eps) + p.wd * w[i]);
}`;
}

export function adamwCpu(w: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, a: AdamParams): void {
  const bc1 = 1 - a.beta1 ** a.step, bc2 = 1 - a.beta2 ** a.step;
  for (let i = 0; i < w.length; i++) {
    const mi = (m[i] = a.beta1 * m[i] + (1 - a.beta1) * g[i]);
    const vi = (v[i] = a.beta2 * v[i] + (1 - a.beta2) * g[i] * g[i]);
    w[i] -= a.lr * ((mi / bc1) / (Math.sqrt(vi / bc2) + a.eps) + a.weightDecay * w[i]);
  }
}

/**
 * Plain float32 kernels: the CPU backend's math and the twins that every WGSL kernel is tested against.
 * Matrices are row-major; linear weights are (out, in) as in PyTorch.
 */
import { floatsToHalves, halvesToFloats } from '../../util/f16.js';

/**
 * y(T, out) = x(T, in) · W(out, in)ᵀ + b. Tiles of 4 rows of x × 2 rows of W share each pass over
 * their inputs (8 sums from 6 loads a step; a lone row takes 4 rows of W a pass): on Node 20 here,
 * (40, 384) × (1536, 384) 1.14 → 1.74 GMAC/s, one row 0.77 → 1.14. Every output is one sequential
 * sum over `in` whatever its tile, so a row's result does not depend on T (prefill and decode agree
 * to the bit).
 */
export function linear(x: Float32Array, T: number, W: Float32Array, b: Float32Array | null, nIn: number, nOut: number, y: Float32Array = new Float32Array(T * nOut)): Float32Array {
  return linearRange(x, T, W, b, nIn, nOut, y, 0, nOut);
}

/** linear's outputs [o0, o1) of every row into y (row stride nOut): the same bits as linear's (CPU threads split the outputs so). */
export function linearRange(x: Float32Array, T: number, W: Float32Array, b: Float32Array | null, nIn: number, nOut: number, y: Float32Array, o0: number, o1: number): Float32Array {
  let t = 0;
  for (; t + 4 <= T; t += 4) {
    const x0 = t * nIn, x1 = x0 + nIn, x2 = x1 + nIn, x3 = x2 + nIn;
    const y0 = t * nOut, y1 = y0 + nOut, y2 = y1 + nOut, y3 = y2 + nOut;
    let o = o0;
    for (; o + 2 <= o1; o += 2) {
      const w0 = o * nIn, w1 = w0 + nIn;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0, c0 = 0, c1 = 0, c2 = 0, c3 = 0;
      for (let i = 0; i < nIn; i++) {
        const u = W[w0 + i], v = W[w1 + i];
        const p0 = x[x0 + i], p1 = x[x1 + i], p2 = x[x2 + i], p3 = x[x3 + i];
        a0 += p0 * u; a1 += p1 * u; a2 += p2 * u; a3 += p3 * u;
        c0 += p0 * v; c1 += p1 * v; c2 += p2 * v; c3 += p3 * v;
      }
      const bu = b ? b[o] : 0, bv = b ? b[o + 1] : 0;
      y[y0 + o] = a0 + bu; y[y1 + o] = a1 + bu; y[y2 + o] = a2 + bu; y[y3 + o] = a3 + bu;
      y[y0 + o + 1] = c0 + bv; y[y1 + o + 1] = c1 + bv; y[y2 + o + 1] = c2 + bv; y[y3 + o + 1] = c3 + bv;
    }
    for (; o < o1; o++) {
      const w = o * nIn;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (let i = 0; i < nIn; i++) {
        const u = W[w + i];
        a0 += x[x0 + i] * u; a1 += x[x1 + i] * u; a2 += x[x2 + i] * u; a3 += x[x3 + i] * u;
      }
      const bu = b ? b[o] : 0;
      y[y0 + o] = a0 + bu; y[y1 + o] = a1 + bu; y[y2 + o] = a2 + bu; y[y3 + o] = a3 + bu;
    }
  }
  for (; t < T; t++) {
    const xo = t * nIn, yo = t * nOut;
    let o = o0;
    for (; o + 4 <= o1; o += 4) {
      const w0 = o * nIn, w1 = w0 + nIn, w2 = w1 + nIn, w3 = w2 + nIn;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < nIn; i++) {
        const v = x[xo + i];
        s0 += W[w0 + i] * v; s1 += W[w1 + i] * v; s2 += W[w2 + i] * v; s3 += W[w3 + i] * v;
      }
      y[yo + o] = s0 + (b ? b[o] : 0); y[yo + o + 1] = s1 + (b ? b[o + 1] : 0);
      y[yo + o + 2] = s2 + (b ? b[o + 2] : 0); y[yo + o + 3] = s3 + (b ? b[o + 3] : 0);
    }
    for (; o < o1; o++) {
      const w = o * nIn;
      let s = 0;
      for (let i = 0; i < nIn; i++) s += W[w + i] * x[xo + i];
      y[yo + o] = s + (b ? b[o] : 0);
    }
  }
  return y;
}

/** LayerNorm over the last dimension of x(T, n), eps inside the square root, as torch does. */
export function layerNorm(x: Float32Array, T: number, n: number, w: Float32Array, b: Float32Array, eps: number, y: Float32Array = new Float32Array(T * n)): Float32Array {
  for (let t = 0; t < T; t++) {
    const o = t * n;
    let mean = 0;
    for (let i = 0; i < n; i++) mean += x[o + i];
    mean /= n;
    let v = 0;
    for (let i = 0; i < n; i++) { const c = x[o + i] - mean; v += c * c; }
    const inv = 1 / Math.sqrt(v / n + eps);
    for (let i = 0; i < n; i++) y[o + i] = (x[o + i] - mean) * inv * w[i] + b[i];
  }
  return y;
}

export function reluInPlace(x: Float32Array): Float32Array {
  for (let i = 0; i < x.length; i++) if (x[i] < 0) x[i] = 0;
  return x;
}

export function addInPlace(x: Float32Array, y: Float32Array): Float32Array {
  for (let i = 0; i < x.length; i++) x[i] += y[i];
  return x;
}

/**
 * Causal multi-head attention for T new queries at positions [pos, pos + T) over a KV cache that
 * already holds their keys and values. q(T, d) is unscaled; kCache/vCache are (maxPos, d).
 * Returns o(T, d) and, when headNorm is given, each head's output L2 norm into headNorm(T, H).
 */
export function attention(q: Float32Array, T: number, pos: number, kCache: Float32Array, vCache: Float32Array, H: number, hd: number, o: Float32Array = new Float32Array(T * H * hd), headNorm?: Float32Array): Float32Array {
  return attentionRange(q, T, pos, kCache, vCache, H, hd, o, headNorm ?? null, 0, H, 0, T, new Float32Array(pos + T));
}

const fround = Math.fround;

/**
 * attention's cells (t, h) for queries [t0, t1) and heads [h0, h1) into o (and headNorm): each cell
 * is computed alone, so any split of the cells gives attention's bits (CPU threads split them so).
 * `scores` holds at least pos + t1 floats (overwritten).
 *
 * Each cell: a score a key (a sequential float64 sum over hd, times 1/√hd, kept as f32; the max over
 * the keys in key order), exp(score − max) kept as f32 and summed in float64, then o = Σ_j p_j v_j in
 * key order, rounded to f32 after every key (o is a Float32Array; the 4-key pass rounds with fround
 * where a store would), then ‖o‖. Four keys share a pass over q (scores) or o (values): 1.8× a 512-
 * token prompt of 12 heads of 32 on Node 20 here (217 → 121 ms), the same bits.
 */
export function attentionRange(q: Float32Array, T: number, pos: number, kCache: Float32Array, vCache: Float32Array, H: number, hd: number,
  o: Float32Array, headNorm: Float32Array | null, h0: number, h1: number, t0: number, t1: number, scores: Float32Array): Float32Array {
  const d = H * hd, scale = 1 / Math.sqrt(hd), K = kCache, V = vCache;
  for (let t = t0; t < t1; t++) {
    const n = pos + t + 1; // causal: sees itself and everything before
    for (let h = h0; h < h1; h++) {
      const qo = t * d + h * hd, hoff = h * hd;
      let max = -Infinity, j = 0;
      for (; j + 4 <= n; j += 4) {
        const k0 = j * d + hoff, k1 = k0 + d, k2 = k1 + d, k3 = k2 + d;
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (let i = 0; i < hd; i++) {
          const u = q[qo + i];
          s0 += u * K[k0 + i]; s1 += u * K[k1 + i]; s2 += u * K[k2 + i]; s3 += u * K[k3 + i];
        }
        s0 *= scale; s1 *= scale; s2 *= scale; s3 *= scale;
        scores[j] = s0; scores[j + 1] = s1; scores[j + 2] = s2; scores[j + 3] = s3;
        if (s0 > max) max = s0;
        if (s1 > max) max = s1;
        if (s2 > max) max = s2;
        if (s3 > max) max = s3;
      }
      for (let ko = j * d + hoff; j < n; j++, ko += d) {
        let s = 0;
        for (let i = 0; i < hd; i++) s += q[qo + i] * K[ko + i];
        s *= scale;
        scores[j] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let j = 0; j < n; j++) { const e = Math.exp(scores[j] - max); scores[j] = e; sum += e; }
      // o's cell is [qo, qo + hd); vN is key j + N's offset less qo, so V[vN + i] pairs with o[i].
      const oe = qo + hd;
      for (let i = qo; i < oe; i++) o[i] = 0;
      j = 0;
      for (; j + 4 <= n; j += 4) {
        const p0 = scores[j] / sum, p1 = scores[j + 1] / sum, p2 = scores[j + 2] / sum, p3 = scores[j + 3] / sum;
        const v0 = j * d + hoff - qo, v1 = v0 + d, v2 = v1 + d, v3 = v2 + d;
        for (let i = qo; i < oe; i++) o[i] = fround(fround(fround(fround(o[i] + p0 * V[v0 + i]) + p1 * V[v1 + i]) + p2 * V[v2 + i]) + p3 * V[v3 + i]);
      }
      for (let vo = j * d + hoff - qo; j < n; j++, vo += d) {
        const p = scores[j] / sum;
        for (let i = qo; i < oe; i++) o[i] += p * V[vo + i];
      }
      if (headNorm) {
        let s = 0;
        for (let i = qo; i < oe; i++) s += o[i] * o[i];
        headNorm[t * H + h] = Math.sqrt(s);
      }
    }
  }
  return o;
}

/**
 * Index of the largest value of x(n): the first one on ties (-0 ties +0), as torch.argmax does for
 * numbers. NaN never wins (it is below -Infinity); an all-NaN row gives 0. The GPU twin is
 * kernels/argmax.ts: greedy decoding picks tokens on either side, and they must agree.
 */
export function argmax(x: Float32Array): number {
  let b = 0;
  // `x[b] !== x[b]`: the best so far is NaN (only x[0] can be), so any number replaces it.
  for (let i = 1; i < x.length; i++) if (x[i] > x[b] || (x[b] !== x[b] && x[i] === x[i])) b = i;
  return b;
}

/** Indices of the k largest values of x(n), in descending order of value (ties: lower index first). */
export function topK(x: Float32Array, k: number): Uint32Array {
  const idx = new Uint32Array(x.length);
  for (let i = 0; i < idx.length; i++) idx[i] = i;
  const sorted = Array.from(idx).sort((a, b) => x[b] - x[a] || a - b);
  return Uint32Array.from(sorted.slice(0, k));
}

/**
 * Sparse MLP for one token: only the neurons in `sel` are computed.
 * h = relu(W1[sel] · x + b1[sel]);  y = Σ_j h_j · W2t[sel_j] + b2.
 * W1 is fc1.weight (f, d); W2t is fc2.weight transposed to (f, d), so each neuron is one contiguous row.
 * Returns y(d); `act`(f), when given, receives h at the selected neurons and zeros elsewhere.
 */
export function sparseMlp(x: Float32Array, W1: Float32Array, b1: Float32Array | null, W2t: Float32Array, b2: Float32Array | null, d: number, sel: Uint32Array, y: Float32Array = new Float32Array(d), act?: Float32Array): Float32Array {
  if (b2) y.set(b2); else y.fill(0);
  if (act) act.fill(0);
  for (const j of sel) {
    const w = j * d;
    let s = b1 ? b1[j] : 0;
    for (let i = 0; i < d; i++) s += W1[w + i] * x[i];
    if (s <= 0) continue;
    if (act) act[j] = s;
    for (let i = 0; i < d; i++) y[i] += s * W2t[w + i];
  }
  return y;
}

/**
 * sparseMlp as the block rule's decode computes it with f16 partials (GPU twin: block-select.ts, FC2
 * with partHalf, then sparse-mlp.ts fc2_sum): each block of `nb` consecutive neurons sums its chosen
 * rows' share of fc2 in f32, that share is rounded to f16, and the shares are added to b2 in f32.
 */
export function sparseMlpHalfPartials(x: Float32Array, W1: Float32Array, b1: Float32Array | null, W2t: Float32Array, b2: Float32Array | null, d: number, sel: Uint32Array, nb: number): Float32Array {
  const y = new Float32Array(d);
  if (b2) y.set(b2);
  const blocks = new Map<number, number[]>();
  for (const j of sel) blocks.set(Math.floor(j / nb), [...(blocks.get(Math.floor(j / nb)) ?? []), j]);
  for (const js of blocks.values()) {
    const share = halvesToFloats(floatsToHalves(sparseMlp(x, W1, b1, W2t, null, d, Uint32Array.from(js))));
    for (let i = 0; i < d; i++) y[i] += share[i];
  }
  return y;
}

/** W (rows, cols) with column k scaled by g[k], rounded to f16 as stored (GPU twin: kernels/misc.ts scaleColsWgsl). */
export function scaleColumns(w: Float32Array, rows: number, cols: number, g: Float32Array): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) out[r * cols + k] = w[r * cols + k] * g[k];
  return halvesToFloats(floatsToHalves(out));
}

/** Transpose a (rows, cols) matrix to (cols, rows). */
export function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}

/**
 * Block selection (the rule of the fused WebGPU kernel, kernels/block-select.ts): in each block of
 * `block` consecutive neurons, those scoring above `tau` (null: no threshold), at most `cap` of them,
 * the highest first (ties to the lower index). Returns the chosen neurons block by block, in that
 * order, and `slots` (nb · cap): the slot layout the GPU writes (unused slots: the block's first
 * neuron, with `used` 0).
 */
export function blockSelect(scores: Float32Array, block: number, cap: number, tau: number | null): { chosen: Uint32Array; slots: Uint32Array; used: Uint8Array } {
  const f = scores.length, nb = Math.ceil(f / block);
  const slots = new Uint32Array(nb * cap), used = new Uint8Array(nb * cap), chosen: number[] = [];
  for (let b = 0; b < nb; b++) {
    const j0 = b * block, js: number[] = [];
    for (let j = j0; j < Math.min(f, j0 + block); j++) if (tau === null || scores[j] > tau) js.push(j);
    js.sort((x, y) => scores[y] - scores[x] || x - y);
    for (let q = 0; q < cap; q++) {
      slots[b * cap + q] = q < js.length ? js[q] : j0;
      if (q < js.length) { used[b * cap + q] = 1; chosen.push(js[q]); }
    }
  }
  return { chosen: Uint32Array.from(chosen), slots, used };
}

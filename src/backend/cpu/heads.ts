/**
 * Sparse attention heads for one decode token (the CPU reference; the WebGPU twins are the head
 * choice in kernels/head-select.ts, the split attention's `heads` form and kernels/head-out.ts).
 * Semantics in src/sparsity/policy.ts (HeadLayerPolicy): with kv 'chosen', a head that does not run
 * at a position writes no K/V there and is marked skipped, and a head attends only to the positions
 * where it ran; with kv 'all' (default) nothing is ever skipped.
 */
import { topK } from './kernels.js';

/** The k heads with the highest scores (ties: the lower index), in ascending head order. */
export function selectHeads(scores: Float32Array, k: number): Uint32Array {
  return topK(scores, k).sort();
}

/**
 * One query of the heads in `heads` (ascending) at position `pos`, over the cache positions [0, pos]
 * that head did not skip (skip: (maxPos, H), 1 = skipped). q (d) holds the token's query; the
 * output o (d) gets the chosen heads' results and zeros elsewhere (out_proj then reads zeros).
 */
export function headAttention(q: Float32Array, pos: number, kCache: Float32Array, vCache: Float32Array, H: number, hd: number,
  heads: Uint32Array, skip: Uint8Array, o: Float32Array = new Float32Array(H * hd)): Float32Array {
  const d = H * hd, scale = 1 / Math.sqrt(hd);
  const scores = new Float64Array(pos + 1);
  o.fill(0);
  for (const h of heads) {
    let max = -Infinity;
    for (let j = 0; j <= pos; j++) {
      if (skip[j * H + h]) continue;
      let s = 0;
      for (let i = 0; i < hd; i++) s += q[h * hd + i] * kCache[j * d + h * hd + i];
      scores[j] = s * scale;
      if (scores[j] > max) max = scores[j];
    }
    let sum = 0;
    for (let j = 0; j <= pos; j++) if (!skip[j * H + h]) { scores[j] = Math.exp(scores[j] - max); sum += scores[j]; }
    for (let j = 0; j <= pos; j++) {
      if (skip[j * H + h]) continue;
      const p = scores[j] / sum;
      for (let i = 0; i < hd; i++) o[h * hd + i] += p * vCache[j * d + h * hd + i];
    }
  }
  return o;
}


/**
 * Per head h, the Gram matrix G_h = W_hᵀ W_h (hd, hd) of out_proj's columns for that head (W_o is
 * (d, d) row-major, [out, in]): a head's contribution to the residual, W_h o_h, has norm
 * sqrt(o_hᵀ G_h o_h), so ranking heads by it costs hd² a head instead of d·hd. (H, hd, hd).
 */
export function headOutGram(oW: Float32Array, d: number, H: number, hd: number): Float32Array {
  const G = new Float64Array(H * hd * hd);
  for (let i = 0; i < d; i++) {
    const row = i * d;
    for (let h = 0; h < H; h++) {
      const base = h * hd * hd, c0 = row + h * hd;
      for (let a = 0; a < hd; a++) {
        const wa = oW[c0 + a];
        if (wa === 0) continue;
        for (let b = a; b < hd; b++) G[base + a * hd + b] += wa * oW[c0 + b];
      }
    }
  }
  for (let h = 0; h < H; h++) for (let a = 0; a < hd; a++) for (let b = 0; b < a; b++) G[h * hd * hd + a * hd + b] = G[h * hd * hd + b * hd + a];
  return Float32Array.from(G);
}

/**
 * ‖W_h o_h‖ for every row of o (T, d) and head: each head's contribution to out_proj's output (what
 * the residual stream receives from it; the bias aside). The head oracle and the head predictors'
 * labels rank by it. (T, H).
 */
export function headContribNorms(o: Float32Array, T: number, G: Float32Array, H: number, hd: number): Float32Array {
  const out = new Float32Array(T * H), d = H * hd;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      const ob = t * d + h * hd, gb = h * hd * hd;
      let s = 0;
      for (let a = 0; a < hd; a++) {
        let r = 0;
        for (let b = 0; b < hd; b++) r += G[gb + a * hd + b] * o[ob + b];
        s += o[ob + a] * r;
      }
      out[t * H + h] = Math.sqrt(Math.max(s, 0));
    }
  }
  return out;
}

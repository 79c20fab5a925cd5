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


/**
 * Per-row statistics of a (T, V) logits matrix, computed in float64: the log-sum-exp of a row of
 * 8192+ float32 logits loses digits in float32, and perplexity differences between dense and sparse
 * runs are small enough that those digits matter.
 */

/** log(sum_i exp(logits[row, i])). */
export function logSumExp(logits: Float32Array, row: number, V: number): number {
  const o = row * V;
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[o + i] > max) max = logits[o + i];
  let s = 0;
  for (let i = 0; i < V; i++) s += Math.exp(logits[o + i] - max);
  return max + Math.log(s);
}

/** log p(token) under the softmax of one row. */
export function tokenLogprob(logits: Float32Array, row: number, V: number, token: number): number {
  return logits[row * V + token] - logSumExp(logits, row, V);
}

/** Index of the largest logit of a row (the first one on ties, like torch.argmax). */
export function argmaxRow(logits: Float32Array, row: number, V: number): number {
  const o = row * V;
  let best = 0;
  for (let i = 1; i < V; i++) if (logits[o + i] > logits[o + best]) best = i;
  return best;
}

/** KL(p || q) in nats between the softmaxes of row `row` of two logits matrices of the same shape. */
export function klRow(p: Float32Array, q: Float32Array, row: number, V: number): number {
  const lp = logSumExp(p, row, V), lq = logSumExp(q, row, V), o = row * V;
  let kl = 0;
  for (let i = 0; i < V; i++) {
    const a = p[o + i] - lp;
    kl += Math.exp(a) * (a - (q[o + i] - lq));
  }
  return Math.max(0, kl); // rounding can leave a tiny negative value for identical rows
}


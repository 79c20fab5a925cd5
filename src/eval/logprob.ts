import type { RowStats } from '../backend/types.js';

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

/**
 * RowStats of rows [0, rows) of `logits` in float64 (the CPU backend's forwardStats, and the twin of
 * the WebGPU kernel kernels/row-stats.ts); with `ref` ((rows, V) of a reference forward) also
 * KL(ref ‖ logits) a row. Rows before `from` are skipped (maskRows).
 */
export function rowStatsOf(logits: Float32Array, rows: number, V: number, targets: number[], ref: Float32Array | null = null, from = 0): RowStats {
  if (targets.length !== rows) throw new Error(`rowStatsOf: ${targets.length} targets for ${rows} rows`);
  if (ref && ref.length < rows * V) throw new Error(`rowStatsOf: the reference has ${ref.length / V} rows, not ${rows}`);
  const lse = new Float64Array(rows), target = new Float64Array(rows), argmax = new Int32Array(rows), kl = ref ? new Float64Array(rows) : null;
  maskRows({ lse, target, argmax, kl }, from);
  for (let t = from; t < rows; t++) {
    lse[t] = logSumExp(logits, t, V);
    target[t] = logits[t * V + targets[t]];
    argmax[t] = argmaxRow(logits, t, V);
    if (kl) kl[t] = klRow(ref!, logits, t, V);
  }
  return { lse, target, argmax, kl };
}

/** Rows before `from` of a RowStats marked as not computed: NaN, and argmax -1. */
export function maskRows(s: RowStats, from: number): void {
  for (let t = 0; t < from; t++) {
    s.lse[t] = NaN; s.target[t] = NaN; s.argmax[t] = -1;
    if (s.kl) s.kl[t] = NaN;
  }
}

import { linear } from '../backend/cpu/kernels.js';
import type { LowRankPredictor } from './policy.js';

/** Predictor scores for one token: B (A x) + bias, one per neuron. x is (d). */
export function predictScores(p: LowRankPredictor, x: Float32Array, d: number): Float32Array {
  const u = linear(x, 1, p.A, null, d, p.rank);
  return linear(u, 1, p.B, p.bias, p.rank, p.bias.length);
}

/**
 * The head predictor's two products as one (H, d) matrix B·A (f64 sums): scores = (B·A) x + bias.
 * With H heads below the rank r this reads fewer weights than A alone (the WebGPU runner's form).
 */
export function headScoreMatrix(p: LowRankPredictor, H: number, d: number): Float32Array {
  const W = new Float32Array(H * d), acc = new Float64Array(d);
  for (let h = 0; h < H; h++) {
    acc.fill(0);
    for (let j = 0; j < p.rank; j++) {
      const b = p.B[h * p.rank + j];
      if (b === 0) continue;
      for (let i = 0; i < d; i++) acc[i] += b * p.A[j * d + i];
    }
    W.set(acc, h * d);
  }
  return W;
}

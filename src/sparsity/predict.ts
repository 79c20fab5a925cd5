import { linear } from '../backend/cpu/kernels.js';
import type { LowRankPredictor } from './policy.js';

/** Predictor scores for one token: B (A x) + bias, one per neuron. x is (d). */
export function predictScores(p: LowRankPredictor, x: Float32Array, d: number): Float32Array {
  const u = linear(x, 1, p.A, null, d, p.rank);
  return linear(u, 1, p.B, p.bias, p.rank, p.bias.length);
}

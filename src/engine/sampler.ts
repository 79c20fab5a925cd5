import { fail } from '../util/errors.js';
import { argmax } from '../backend/cpu/kernels.js';
import { seededRandom } from '../util/random.js';
import { topIds } from '../backend/gumbel.js';

export interface SamplingOptions {
  /** 0 is greedy (argmax). */
  temperature?: number;
  /** Keep only the k most likely tokens (0 or undefined: all). */
  topK?: number;
  /** Nucleus sampling: keep the smallest set whose probability reaches p (1 or undefined: all). */
  topP?: number;
}

export function validateSampling(o: SamplingOptions): void {
  if (o.temperature !== undefined && !(o.temperature >= 0 && Number.isFinite(o.temperature))) fail(`temperature must be a number >= 0, got ${o.temperature}`);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0)) fail(`top-k must be an integer >= 0, got ${o.topK}`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) fail(`top-p must be in (0, 1], got ${o.topP}`);
}

/** The CPU twin of the GPU's greedy pick (ties: lowest index; NaN never wins). */
export { argmax, seededRandom, topIds };

/** Greedy picks argmax: temperature 0, or top-k 1 (one candidate left, whatever the temperature). */
export function isGreedy(o: SamplingOptions): boolean {
  return o.temperature === 0 || o.topK === 1;
}

/** Picks the next token from one position's logits. */
export function sample(logits: Float32Array, o: SamplingOptions, random: () => number): number {
  const temp = o.temperature ?? 1;
  if (temp === 0) return argmax(logits);
  // Candidates sorted by logit (ties: the lower id first); top-k cuts first, then softmax, then top-p.
  // A small k is selected in one pass: sorting OPT's 50272 logits took most of a host-sampled step.
  const idx = o.topK && o.topK > 0 && o.topK * 8 < logits.length ? topIds(logits, o.topK)
    : Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]).slice(0, o.topK && o.topK > 0 ? o.topK : undefined);
  if (idx.length === 0) return argmax(logits);   // every logit NaN: argmax's rule (id 0)
  const max = logits[idx[0]];
  const p = idx.map((i) => Math.exp((logits[i] - max) / temp));
  const sum = p.reduce((a, b) => a + b, 0);
  for (let i = 0; i < p.length; i++) p[i] /= sum;
  let n = p.length;
  if (o.topP !== undefined && o.topP < 1) {
    let c = 0;
    for (n = 0; n < p.length; ) { c += p[n++]; if (c >= o.topP) break; }
  }
  const total = p.slice(0, n).reduce((a, b) => a + b, 0);
  let r = random() * total;
  for (let i = 0; i < n; i++) { r -= p[i]; if (r <= 0) return idx[i]; }
  return idx[n - 1];
}

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

/**
 * A prefix of the stable sort of the logits (largest first, ties to the lower id) that holds at least
 * `topP` of softmax(logits / temp), and that softmax's sum (max-subtracted); null where it cannot tell
 * (NaN logits, or the mass spread past the histogram's range), and the caller sorts them all. One pass
 * bins the logits by value over the top 40·temp (e^-40 of the top's weight below it), the bins from
 * the top give the one where the mass reaches topP, and only the logits in it and above are sorted:
 * bins are monotone in the logit, so those are exactly the sort's first ones.
 */
function nucleusIds(logits: Float32Array, topP: number, temp: number): { ids: number[]; sum: number } | null {
  const V = logits.length, B = 1024;
  let max = -Infinity;
  for (let i = 0; i < V; i++) { const v = logits[i]; if (v !== v) return null; if (v > max) max = v; }
  if (!Number.isFinite(max)) return null;
  const range = 40 * temp, bin = (v: number) => Math.min(B - 1, Math.floor(((max - v) / range) * B));
  const mass = new Float64Array(B);
  let sum = 0;
  for (let i = 0; i < V; i++) {
    const e = Math.exp((logits[i] - max) / temp);
    sum += e;
    if (max - logits[i] < range) mass[bin(logits[i])] += e;
  }
  let c = 0, b = 0;
  for (; b < B; b++) { c += mass[b]; if (c >= topP * sum * (1 + 1e-9)) break; }
  if (b === B) return null;
  const ids: number[] = [];
  for (let i = 0; i < V; i++) if (max - logits[i] < range && bin(logits[i]) <= b) ids.push(i);
  ids.sort((x, y) => logits[y] - logits[x] || x - y);
  return { ids, sum };
}

/** Picks the next token from one position's logits. */
export function sample(logits: Float32Array, o: SamplingOptions, random: () => number): number {
  const temp = o.temperature ?? 1;
  if (temp === 0) return argmax(logits);
  const V = logits.length, k = o.topK && o.topK > 0 ? o.topK : 0, topP = o.topP !== undefined && o.topP < 1 ? o.topP : 1;
  // Candidates sorted by logit (ties: the lower id first); top-k cuts first, then softmax, then top-p.
  // Sorting OPT's 50272 logits took most of a host-sampled step (~20 ms), so a small k is selected in
  // one pass (topIds), and top-p alone sorts only the logits that can be in its nucleus (nucleusIds).
  const sorted = (m?: number) => Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]).slice(0, m);
  let idx: number[] | null = k ? (k * 8 < V ? topIds(logits, k) : sorted(k)) : null;
  let full: number | null = null;   // the softmax's sum over every candidate, where idx holds a prefix of them
  if (!idx && topP < 1) {
    const nucleus = nucleusIds(logits, topP, temp);
    if (nucleus) ({ ids: idx, sum: full } = nucleus);
  }
  idx ??= sorted();
  if (idx.length === 0) return argmax(logits);   // every logit NaN: argmax's rule (id 0)
  const max = logits[idx[0]];
  const p = idx.map((i) => Math.exp((logits[i] - max) / temp));
  const sum = full ?? p.reduce((a, b) => a + b, 0);
  for (let i = 0; i < p.length; i++) p[i] /= sum;
  let n = p.length;
  if (topP < 1) {
    let c = 0;
    for (n = 0; n < p.length; ) { c += p[n++]; if (c >= topP) break; }
  }
  const total = p.slice(0, n).reduce((a, b) => a + b, 0);
  let r = random() * total;
  for (let i = 0; i < n; i++) { r -= p[i]; if (r <= 0) return idx[i]; }
  return idx[n - 1];
}

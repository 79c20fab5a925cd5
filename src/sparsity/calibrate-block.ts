/**
 * Calibration of the block rule (policy.ts BlockRule): per layer, a threshold τ and a cap per block
 * of BLOCK_SIZE neurons, from validation scores and labels, such that the chosen neurons hold the
 * target share of the truly active ones (count recall), at the lowest density.
 *
 * Under the rule a neuron is chosen when its score exceeds τ and its rank by score inside its block
 * (0 = highest) is below the cap. So for a fixed cap the chosen positives are the positives of rank
 * < cap with score > τ: the τ that reaches the target is a quantile of those positives' scores, and
 * the density is the count of all neurons of rank < cap above it. Each cap is scored that way; the
 * smallest cap whose density is within CAP_SLACK of the uncapped rule's is kept (a smaller cap means
 * fewer slots for sparse fc2 to walk, at the price of a lower τ).
 */
import { BLOCK_SIZE } from './policy.js';

export const CAPS = [4, 6, 8, 12, 16, 24, 32, 48, 64] as const;
/** A cap may cost this much density (relative) over no cap. */
export const CAP_SLACK = 0.02;
/** Rows used (a subsample, evenly spaced, when rows · f exceeds this many scores). */
export const MAX_SCORES = 1 << 24;

export interface BlockCalibration {
  cap: number;
  tau: number;
  density: number;      // mean fraction of neurons chosen per token
  recall: number;       // count recall of the chosen neurons
  mass_recall: number;  // output-mass recall (NaN without act / w2norm)
  rows: number;         // validation rows used
}

/**
 * scores (rows, f), labels (rows, ceil(f/32)) bit-packed; act (rows, f) and w2norm (f) for mass recall.
 * Returns null when no cap reaches the target (it always does at cap 64 unless target > 1).
 */
export function calibrateBlock(scores: Float32Array, labels: Uint32Array, rows: number, f: number, target: number, act?: Float32Array, w2norm?: Float32Array): BlockCalibration | null {
  const words = Math.ceil(f / 32), nb = Math.ceil(f / BLOCK_SIZE);
  const step = Math.max(1, Math.ceil((rows * f) / MAX_SCORES));
  const used: number[] = [];
  for (let r = 0; r < rows; r += step) used.push(r);
  // Per neuron of the used rows: its rank inside its block, its score, positive or not, its mass.
  const n = used.length * f;
  const rank = new Uint8Array(n), sc = new Float32Array(n), pos = new Uint8Array(n), mass = new Float32Array(n);
  let totalPos = 0, totalMass = 0;
  const idx: number[] = [];
  used.forEach((r, i) => {
    for (let b = 0; b < nb; b++) {
      idx.length = 0;
      for (let j = b * BLOCK_SIZE; j < Math.min(f, (b + 1) * BLOCK_SIZE); j++) idx.push(j);
      idx.sort((x, y) => scores[r * f + y] - scores[r * f + x] || x - y);
      idx.forEach((j, q) => { rank[i * f + j] = q; });
    }
    for (let j = 0; j < f; j++) {
      const o = i * f + j;
      sc[o] = scores[r * f + j];
      pos[o] = (labels[r * words + (j >>> 5)] >>> (j & 31)) & 1;
      if (pos[o]) {
        totalPos++;
        if (act) { mass[o] = act[r * f + j] * (w2norm ? w2norm[j] : 1); totalMass += mass[o]; }
      }
    }
  });
  const need = Math.ceil(target * totalPos);
  const fit = (cap: number): BlockCalibration | null => {
    const p: number[] = [];
    for (let o = 0; o < n; o++) if (pos[o] && rank[o] < cap) p.push(sc[o]);
    if (p.length < need || need === 0) return null;
    p.sort((x, y) => y - x);
    // "score > τ" then takes exactly the scores >= the need-th highest positive one.
    const tau = f32Below(p[need - 1]);
    let chosen = 0, hit = 0, hitMass = 0;
    for (let o = 0; o < n; o++) {
      if (rank[o] < cap && sc[o] > tau) { chosen++; if (pos[o]) { hit++; hitMass += mass[o]; } }
    }
    return { cap, tau, density: chosen / n, recall: totalPos ? hit / totalPos : 1, mass_recall: act && totalMass ? hitMass / totalMass : NaN, rows: used.length };
  };
  const fits = CAPS.map(fit);
  const free = fits[fits.length - 1];
  if (!free) return null;
  return fits.find((c) => c !== null && c.density <= free.density * (1 + CAP_SLACK)) ?? free;
}

/** The largest float32 below v (v a finite float32). */
export function f32Below(v: number): number {
  const fb = new Float32Array([v]), ib = new Int32Array(fb.buffer);
  if (v === 0) { ib[0] = 0x80000001; return fb[0]; }  // -(smallest subnormal)
  ib[0] += v > 0 ? -1 : 1;
  return fb[0];
}

/**
 * Head predictors (DejaVu's attention half): per layer, a linear map from the attention input (after
 * self_attn_layer_norm) to one score per head, whose top k are the heads a decode token computes.
 *
 * Label: a head's share of the token's head contributions, s_h = n_h / Σ_g n_g with n_h = ‖W_o,h o_h‖
 * (o_h the head's attention output, W_o,h out_proj's columns for it: what the head adds to the
 * residual; the CPU oracle ranks by the same n_h). Only the order of the scores within a token
 * matters, and shares remove the per-token scale that a linear model of raw norms would spend itself
 * on. (Ranking by ‖o_h‖ alone made a worse oracle: docs/sparsity.md.)
 *
 * Fit: the reduced-rank ridge regression of s on x, in closed form as for the MLP predictors
 * (lowrank-init.ts), with the means taken out so the bias carries them: with the centred covariance
 * C = L Lᵀ and cross moment E[s xᵀ] (H, d), M = E[s xᵀ] L⁻ᵀ (H, d) ≈ U_r S_r V_rᵀ, and
 *   A = V_rᵀ L⁻¹ (r, d),  B = U_r S_r (H, r),  bias = s̄ − B A x̄.
 * At r ≥ H (the default: H is small, and the WebGPU runner multiplies B·A into one (H, d) GEMV at
 * load anyway) this is the plain ridge regression of every head's share.
 */
import { CholeskyDecomposition, EigenvalueDecomposition, Matrix } from 'ml-matrix';
import { fail } from '../util/errors.js';
import type { LowRankPredictor } from './policy.js';
import { secondMoment } from './lowrank-init.js';
import { headContribNorms, headOutGram } from '../backend/cpu/heads.js';
import type { Checkpoint } from '../model/checkpoint.js';
import { toF32 } from '../model/tensor.js';

/**
 * The head predictors' labels of a checkpoint: for layer l and attention outputs o (T, d), each head's
 * ‖W_o,h o_h‖ (T, H). Each layer's Gram matrices (headOutGram) are made on first use.
 */
export function headContributions(ck: Checkpoint): (l: number, o: Float32Array, T: number) => Float32Array {
  const c = ck.config, grams: Float32Array[] = [];
  return (l, o, T) => headContribNorms(o, T, (grams[l] ??= headOutGram(toF32(ck.weights.layers[l].oW), c.hidden, c.heads, c.headDim)), c.heads, c.headDim);
}

export interface HeadFitOptions {
  /** Rows used for the moments (default 32768, evenly strided). */
  maxRows?: number;
  /** Ridge added to the covariance, relative to its mean diagonal (default 1e-3). */
  ridge?: number;
  /** What the scores fit: each head's share of the token's head norms n_h (default), or log n_h. */
  label?: HeadLabel;
}

export type HeadLabel = 'share' | 'lognorm';

/** log n_h per row (a floor keeps zero norms finite); the per-token offset does not change a ranking. */
export function headLogNorms(norms: Float32Array): Float32Array {
  return norms.map((v) => Math.log(Math.max(v, 1e-6)));
}

/** Per-token shares of the head norms (rows, H): each row divided by its sum (a zero row stays 0). */
export function headShares(norms: Float32Array, rows: number, H: number): Float32Array {
  const s = new Float32Array(rows * H);
  for (let t = 0; t < rows; t++) {
    let sum = 0;
    for (let h = 0; h < H; h++) sum += norms[t * H + h];
    if (sum > 0) for (let h = 0; h < H; h++) s[t * H + h] = norms[t * H + h] / sum;
  }
  return s;
}

/**
 * The rank-r head predictor fitted to x (rows, d) and head norms (rows, H); scores = B (A x) + bias
 * approximate each head's share of the norm. The rank is min(r, H, d).
 */
export function fitHeadPredictor(x: Float32Array, norms: Float32Array, rows: number, d: number, H: number, r: number, o: HeadFitOptions = {}): LowRankPredictor {
  if (x.length !== rows * d || norms.length !== rows * H) fail(`head fit: expected x (${rows}, ${d}) and norms (${rows}, ${H})`);
  if (rows < 2) fail('the head predictor fit needs at least two rows of data');
  const maxRows = o.maxRows ?? 32768, n = Math.min(rows, maxRows), stride = rows / n;
  const y = o.label === 'lognorm' ? headLogNorms(norms) : headShares(norms, rows, H);
  const xm = new Float64Array(d), ym = new Float64Array(H);
  const E = new Float64Array(H * d); // Σ y xᵀ over the strided rows
  for (let s = 0; s < n; s++) {
    const t = Math.floor(s * stride);
    for (let i = 0; i < d; i++) xm[i] += x[t * d + i];
    for (let h = 0; h < H; h++) {
      const v = y[t * H + h];
      ym[h] += v;
      for (let i = 0; i < d; i++) E[h * d + i] += v * x[t * d + i];
    }
  }
  for (let i = 0; i < d; i++) xm[i] /= n;
  for (let h = 0; h < H; h++) ym[h] /= n;
  // Centre: Cov = E[x xᵀ] − x̄ x̄ᵀ, Cross = E[y xᵀ] − ȳ x̄ᵀ.
  const C = secondMoment(x, rows, d, maxRows);
  let tr = 0;
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) C[i * d + j] -= xm[i] * xm[j];
  for (let i = 0; i < d; i++) tr += C[i * d + i];
  const ridge = (o.ridge ?? 1e-3) * Math.max(tr / d, 1e-12);
  const Cm = new Matrix(d, d);
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) Cm.set(i, j, C[i * d + j] + (i === j ? ridge : 0));
  const L = new CholeskyDecomposition(Cm).lowerTriangularMatrix;
  // Mᵀ = L⁻¹ Crossᵀ (d, H): forward substitution, column by column.
  const Mt = new Matrix(d, H);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < d; i++) {
      let s = E[h * d + i] / n - ym[h] * xm[i];
      for (let k = 0; k < i; k++) s -= L.get(i, k) * Mt.get(k, h);
      Mt.set(i, h, s / L.get(i, i));
    }
  }
  // M Mᵀ (H, H) = U S² Uᵀ; V_r = Mᵀ U_r S_r⁻¹.
  const MMt = Mt.transpose().mmul(Mt);
  const eig = new EigenvalueDecomposition(MMt, { assumeSymmetric: true });
  const all = eig.realEigenvalues, U = eig.eigenvectorMatrix;
  const rank = Math.max(1, Math.min(r, H, d));
  const order = all.map((_, i) => i).sort((p, q) => all[q] - all[p]).slice(0, rank);
  // A = V_rᵀ L⁻¹ and B = U_r S_r, so B A = U_r U_rᵀ M L⁻¹: write A = U_rᵀ M L⁻¹ (unit-scaled
  // components) and B = U_r; Aᵀ = L⁻ᵀ (Mᵀ U_r) by back substitution on Lᵀ.
  const A = new Float32Array(rank * d), B = new Float32Array(H * rank);
  const col = new Float64Array(d), sol = new Float64Array(d);
  order.forEach((c, k) => {
    for (let i = 0; i < d; i++) { let s = 0; for (let h = 0; h < H; h++) s += Mt.get(i, h) * U.get(h, c); col[i] = s; }
    for (let i = d - 1; i >= 0; i--) {
      let s = col[i];
      for (let j = i + 1; j < d; j++) s -= L.get(j, i) * sol[j];
      sol[i] = s / L.get(i, i);
    }
    for (let i = 0; i < d; i++) A[k * d + i] = sol[i];
    for (let h = 0; h < H; h++) B[h * rank + k] = U.get(h, c);
  });
  // bias = ȳ − B A x̄.
  const bias = new Float32Array(H);
  const ax = new Float64Array(rank);
  for (let k = 0; k < rank; k++) { let s = 0; for (let i = 0; i < d; i++) s += A[k * d + i] * xm[i]; ax[k] = s; }
  for (let h = 0; h < H; h++) { let s = ym[h]; for (let k = 0; k < rank; k++) s -= B[h * rank + k] * ax[k]; bias[h] = s; }
  return { rank, A, B, bias };
}

/** How well the top-k of some scores keeps the heads that matter, for every k = 1..H. */
export interface HeadRankStats {
  rows: number;
  H: number;
  /** Mean share of the head norms (the labels: contributions) carried by the k chosen heads, k = 0..H. */
  mass: Float64Array;        // (H + 1)
  /** The same for the oracle (the k largest norms): the bound for any choice. */
  oracleMass: Float64Array;  // (H + 1)
  /** Mean share of the oracle's top k that the chosen k contain, k = 0..H (1 at k = 0 and H). */
  recall: Float64Array;      // (H + 1)
}

/** Descending order of v (ties: the lower index first). */
function order(v: ArrayLike<number>, H: number): number[] {
  return Array.from({ length: H }, (_, i) => i).sort((a, b) => v[b] - v[a] || a - b);
}

/** Ranks each row's scores and norms once; the stats for every k come from prefix sums. */
export function headRankStats(scores: Float32Array, norms: Float32Array, rows: number, H: number): HeadRankStats {
  const mass = new Float64Array(H + 1), oracleMass = new Float64Array(H + 1), recall = new Float64Array(H + 1);
  const inOracle = new Uint8Array(H);
  let used = 0;
  for (let t = 0; t < rows; t++) {
    const nr = norms.subarray(t * H, (t + 1) * H);
    let total = 0;
    for (let h = 0; h < H; h++) total += nr[h];
    if (!(total > 0)) continue;
    used++;
    const pred = order(scores.subarray(t * H, (t + 1) * H), H), best = order(nr, H);
    inOracle.fill(0);
    let m = 0, om = 0, overlap = 0;
    for (let k = 1; k <= H; k++) {
      m += nr[pred[k - 1]] / total;
      om += nr[best[k - 1]] / total;
      // |pred[0..k) ∩ best[0..k)|, kept up to date as both prefixes grow by one.
      const a = pred[k - 1], b = best[k - 1];
      inOracle[b] |= 1;
      if (inOracle[a] & 1) overlap++;
      inOracle[a] |= 2;
      if (a !== b && inOracle[b] & 2) overlap++;
      mass[k] += m; oracleMass[k] += om; recall[k] += overlap / k;
    }
  }
  for (let k = 1; k <= H; k++) { mass[k] /= Math.max(1, used); oracleMass[k] /= Math.max(1, used); recall[k] /= Math.max(1, used); }
  recall[0] = 1;
  return { rows: used, H, mass, oracleMass, recall };
}

export interface HeadCalibration {
  layer: number;
  /** Every head runs: the target needs all H heads. */
  dense: boolean;
  k: number;
  mass_recall: number;   // mean norm share of the chosen k
  oracle_mass: number;   // the oracle's at the same k
  recall: number;        // share of the oracle's top k chosen
}

/** The smallest k whose chosen heads carry `targetMass` of the head norms (contributions) on average. */
export function calibrateHeads(layer: number, st: HeadRankStats, targetMass: number): HeadCalibration {
  let k = 1;
  while (k < st.H && st.mass[k] < targetMass) k++;
  return { layer, dense: k >= st.H, k, mass_recall: st.mass[k], oracle_mass: st.oracleMass[k], recall: st.recall[k] };
}

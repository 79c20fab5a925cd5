/**
 * A data-aware starting point for an mlp_in predictor: the best rank-r approximation of fc1 itself.
 *
 * Why: on mlp_in (fc1's own input x) a neuron is active exactly when z = W1 x + b1 > 0, a linear rule.
 * A full-rank predictor (r >= d) could copy fc1 and be perfect; a rank-r one should approximate the
 * pre-activations where the data lives. The r that minimises E‖W1 x − P x‖² over rank-r maps P is
 * a whitened truncated SVD (reduced-rank regression): with C = E[x xᵀ] = L Lᵀ (Cholesky),
 *   M = W1 L,  M ≈ U_r S_r V_rᵀ,  P = U_r S_r V_rᵀ L⁻¹,
 * so A = V_rᵀ L⁻¹ (r, d) and B = U_r S_r = W1 L V_r (f, r), and bias = b1. Ranking neurons by the
 * approximated z then is the oracle's ranking up to the approximation error. Training with BCE
 * starts from here instead of from noise (trainPredictor keeps whichever scores better).
 *
 * C comes from a strided subsample of the training rows (maxRows): it is d×d, and d² · rows
 * multiply-adds is the dominant cost in JS.
 */
import { CholeskyDecomposition, EigenvalueDecomposition, Matrix } from 'ml-matrix';
import { fail } from '../util/errors.js';
import type { LowRankPredictor } from './policy.js';

export interface LowRankInitOptions {
  /** Rows of x used for the second moment (default 32768, evenly strided over the training rows). */
  maxRows?: number;
  /** Ridge added to C, relative to its mean diagonal (default 1e-4): keeps the Cholesky defined. */
  ridge?: number;
}

/**
 * Σ_rows v vᵀ over the rows of a (n, d) array into the upper triangle of acc (d, d), four rows a
 * pass: each pass reads and writes acc once for four rank-1 updates (acc, not the rows, is what
 * streams through memory at d ≥ 1024). `row(i)` maps the i-th of n rows to its index in a.
 */
function addGramUpper(acc: Float64Array, a: Float32Array, n: number, d: number, row: (i: number) => number): void {
  const v = [new Float64Array(d), new Float64Array(d), new Float64Array(d), new Float64Array(d)];
  for (let s = 0; s < n; s += 4) {
    const m = Math.min(4, n - s);
    for (let q = 0; q < 4; q++) {
      if (q < m) { const o = row(s + q) * d; for (let i = 0; i < d; i++) v[q][i] = a[o + i]; } else v[q].fill(0);
    }
    const [v0, v1, v2, v3] = v;
    for (let i = 0; i < d; i++) {
      const a0 = v0[i], a1 = v1[i], a2 = v2[i], a3 = v3[i], base = i * d;
      for (let j = i; j < d; j++) acc[base + j] += a0 * v0[j] + a1 * v1[j] + a2 * v2[j] + a3 * v3[j];
    }
  }
}

/** Second moment C = (1/n) Σ x xᵀ over a strided subsample of `rows` rows of x (rows, d); (d, d) row-major. */
export function secondMoment(x: Float32Array, rows: number, d: number, maxRows = 32768): Float64Array {
  const n = Math.min(rows, maxRows), stride = rows / n;
  const C = new Float64Array(d * d);
  addGramUpper(C, x, n, d, (s) => Math.floor(s * stride));
  for (let i = 0; i < d; i++) for (let j = i; j < d; j++) { C[i * d + j] /= n; C[j * d + i] = C[i * d + j]; }
  return C;
}

/**
 * The whitened rank-r approximation of fc1 (f, d) with bias b1 (f) or null, for inputs x (rows, d).
 * Returns a predictor with scores = B (A x) + bias ≈ W1 x + b1.
 */
export function lowRankFc1(W1: Float32Array, b1: Float32Array | null, x: Float32Array, rows: number, d: number, f: number, r: number, o: LowRankInitOptions = {}): LowRankPredictor {
  if (W1.length !== f * d) fail(`fc1 has ${W1.length} values, expected ${f} x ${d}`);
  if (rows < 1) fail('the low-rank init needs at least one row of data');
  const rank = Math.min(r, d);
  const C = secondMoment(x, rows, d, o.maxRows);
  let tr = 0;
  for (let i = 0; i < d; i++) tr += C[i * d + i];
  const ridge = (o.ridge ?? 1e-4) * Math.max(tr / d, 1e-12);
  for (let i = 0; i < d; i++) C[i * d + i] += ridge;
  const L = new CholeskyDecomposition(toMatrix(C, d, d)).lowerTriangularMatrix; // C = L Lᵀ
  // G = Mᵀ M = Lᵀ (W1ᵀ W1) L: d×d, so the eigen-solve never touches an f-sized matrix.
  const H = new Float64Array(d * d);
  addGramUpper(H, W1, f, d, (j) => j); // W1ᵀ W1 = Σ over neurons of row rowᵀ
  for (let a = 0; a < d; a++) for (let b = a + 1; b < d; b++) H[b * d + a] = H[a * d + b];
  const G = L.transpose().mmul(toMatrix(H, d, d)).mmul(L);
  const eig = new EigenvalueDecomposition(symmetrize(G), { assumeSymmetric: true });
  const values = eig.realEigenvalues, vectors = eig.eigenvectorMatrix;
  const order = values.map((_, i) => i).sort((p, q) => values[q] - values[p]).slice(0, rank);
  const Vr = new Matrix(d, rank);
  order.forEach((c, k) => { for (let i = 0; i < d; i++) Vr.set(i, k, vectors.get(i, c)); });
  // A = V_rᵀ L⁻¹, i.e. Aᵀ solves Lᵀ Aᵀ = V_r (back substitution on the upper-triangular Lᵀ).
  const At = backSubstituteUpper(L.transpose(), Vr);
  const LV = L.mmul(Vr); // (d, r): B = W1 (L V_r)
  // Balance the two factors (the product is unchanged): row k of A and column k of B both get
  // norm ~ sqrt(s_k), so AdamW's per-element steps are comparable on both sides.
  const A = new Float32Array(rank * d), B = new Float32Array(f * rank);
  const scale = order.map((c) => Math.pow(Math.max(values[c], 1e-30), 0.25)); // sqrt(s_k) with s_k = sqrt(λ_k)
  for (let k = 0; k < rank; k++) for (let i = 0; i < d; i++) A[k * d + i] = At.get(i, k) * scale[k];
  const lv = LV.to1DArray(); // row-major (d, r)
  for (let j = 0; j < f; j++) {
    const w = j * d;
    for (let k = 0; k < rank; k++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += W1[w + i] * lv[i * rank + k];
      B[j * rank + k] = s / scale[k];
    }
  }
  const bias = b1 ? Float32Array.from(b1) : new Float32Array(f);
  return padRank({ rank, A, B, bias }, r, d, f);
}

function toMatrix(a: Float64Array, rows: number, cols: number): Matrix {
  const m = new Matrix(rows, cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) m.set(i, j, a[i * cols + j]);
  return m;
}

function symmetrize(m: Matrix): Matrix {
  const n = m.rows, out = new Matrix(n, n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) out.set(i, j, (m.get(i, j) + m.get(j, i)) / 2);
  return out;
}

/** X with U X = Y for upper-triangular U (n, n), Y (n, m). */
function backSubstituteUpper(U: Matrix, Y: Matrix): Matrix {
  const n = U.rows, m = Y.columns, X = new Matrix(n, m);
  for (let c = 0; c < m; c++) {
    for (let i = n - 1; i >= 0; i--) {
      let s = Y.get(i, c);
      for (let k = i + 1; k < n; k++) s -= U.get(i, k) * X.get(k, c);
      X.set(i, c, s / U.get(i, i));
    }
  }
  return X;
}

/** A rank above d adds nothing; keep the asked-for shape with zero components so files stay uniform. */
function padRank(p: LowRankPredictor, r: number, d: number, f: number): LowRankPredictor {
  if (p.rank === r) return p;
  const A = new Float32Array(r * d), B = new Float32Array(f * r);
  A.set(p.A);
  for (let j = 0; j < f; j++) B.set(p.B.subarray(j * p.rank, (j + 1) * p.rank), j * r);
  return { rank: r, A, B, bias: p.bias };
}

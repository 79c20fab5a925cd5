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
 *
 * An attn_in predictor (DejaVu's lookahead) reads x = the attention input, while fc1 reads t = the
 * MLP input of the same token. The same reduced-rank regression then fits W1 t from x: with
 * C = E[x xᵀ] = L Lᵀ and the cross moment E[t xᵀ], K = E[t xᵀ] L⁻ᵀ, M = W1 K ≈ U_r S_r V_rᵀ,
 * A = V_rᵀ L⁻¹ and B = W1 K V_r (`target`: t's rows, paired with x's). With t = x, K = L: the
 * formula above. x need not be d wide there: with n columns C is n×n, K is d×n and A is (r, n)
 * (bench/input_probe.mjs fits from the attention input and the heads' outputs side by side).
 */
import { CholeskyDecomposition, EigenvalueDecomposition, Matrix } from 'ml-matrix';
import { fail } from '../util/errors.js';
import type { LowRankPredictor } from './policy.js';
import { seededRandom } from '../util/random.js';

export interface LowRankInitOptions {
  /** Rows of x used for the second moment (default 32768, evenly strided over the training rows). */
  maxRows?: number;
  /** Ridge added to C, relative to its mean diagonal (default 1e-4): keeps the Cholesky defined. */
  ridge?: number;
  /**
   * How the top-r eigenvectors of G = Lᵀ W1ᵀ W1 L are found: 'exact' (a full d×d eigendecomposition,
   * O(d³)), or 'subspace' (block power iteration on r + 16 vectors with a Rayleigh-Ritz step, G never
   * formed: O(d² r) an iteration). Default: exact up to d = 1024, subspace above (the full
   * decomposition and the two d×d products took minutes a layer at d = 2048 in Node).
   */
  method?: 'exact' | 'subspace';
  /** Power iterations of the subspace method (default 8). */
  iterations?: number;
  /**
   * fc1's own input t (rows, d) for each row of x, when x is another activation (attn_in): fit W1 t
   * from x. x may then be wider than d (rows, n), e.g. two activations side by side; A is (r, n).
   */
  target?: Float32Array;
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
 * Cross moment E[t xᵀ] (d, dx) row-major over the same strided rows secondMoment takes (t: (rows, d),
 * x: (rows, dx)). Four rows a pass, as addGramUpper: E (d × dx doubles, past the L2 at d = 384 and
 * dx = 768) streams through memory once for four rank-1 updates; the row-at-a-time form took 16 s a
 * layer of the 18m model's attn_io fit, half of it (docs/sparsity.md).
 */
export function crossMoment(t: Float32Array, x: Float32Array, rows: number, d: number, maxRows = 32768, dx = d): Float64Array {
  const n = Math.min(rows, maxRows), stride = rows / n;
  const E = new Float64Array(d * dx);
  const v = [new Float64Array(dx), new Float64Array(dx), new Float64Array(dx), new Float64Array(dx)];
  const w = [new Float64Array(d), new Float64Array(d), new Float64Array(d), new Float64Array(d)];
  for (let s = 0; s < n; s += 4) {
    for (let q = 0; q < 4; q++) {
      if (s + q >= n) { v[q].fill(0); w[q].fill(0); continue; }
      const row = Math.floor((s + q) * stride), o = row * d, ox = row * dx;
      for (let j = 0; j < dx; j++) v[q][j] = x[ox + j];
      for (let i = 0; i < d; i++) w[q][i] = t[o + i] / n;
    }
    const [v0, v1, v2, v3] = v, [w0, w1, w2, w3] = w;
    for (let i = 0; i < d; i++) {
      const a0 = w0[i], a1 = w1[i], a2 = w2[i], a3 = w3[i], base = i * dx;
      if (a0 === 0 && a1 === 0 && a2 === 0 && a3 === 0) continue;
      for (let j = 0; j < dx; j++) E[base + j] += a0 * v0[j] + a1 * v1[j] + a2 * v2[j] + a3 * v3[j];
    }
  }
  return E;
}

/**
 * The whitened rank-r approximation of fc1 (f, d) with bias b1 (f) or null, for inputs x (rows, d)
 * (with o.target: of fc1 applied to the target rows, predicted from x). Returns a predictor with
 * scores = B (A x) + bias ≈ W1 x + b1 (W1 t + b1).
 */
export function lowRankFc1(W1: Float32Array, b1: Float32Array | null, x: Float32Array, rows: number, d: number, f: number, r: number, o: LowRankInitOptions = {}): LowRankPredictor {
  if (W1.length !== f * d) fail(`fc1 has ${W1.length} values, expected ${f} x ${d}`);
  if (rows < 1) fail('the low-rank init needs at least one row of data');
  // x's width: d, or with a target any width (an input wider than fc1's, e.g. two activations side by side).
  const n = o.target ? x.length / rows : d;
  if (!Number.isInteger(n) || (!o.target && x.length !== rows * d)) fail(`x has ${x.length} values, not a whole number of ${rows} rows${o.target ? '' : ` of ${d}`}`);
  if (o.target && o.target.length !== rows * d) fail(`the target rows have ${o.target.length} values, expected ${rows} x ${d}`);
  const rank = Math.min(r, n);
  const C = secondMoment(x, rows, n, o.maxRows);
  let tr = 0;
  for (let i = 0; i < n; i++) tr += C[i * n + i];
  const ridge = (o.ridge ?? 1e-4) * Math.max(tr / n, 1e-12);
  for (let i = 0; i < n; i++) C[i * n + i] += ridge;
  const L = new CholeskyDecomposition(toMatrix(C, n, n)).lowerTriangularMatrix; // C = L Lᵀ
  // K (d, n): L itself (x is fc1's input), or E[t xᵀ] L⁻ᵀ, i.e. Kᵀ = L⁻¹ E[x tᵀ] (forward substitution).
  const K = o.target ? forwardSubstituteLower(L, toMatrix(crossMoment(o.target, x, rows, d, o.maxRows, n), d, n).transpose()).transpose() : L;
  // G = Mᵀ M = Kᵀ (W1ᵀ W1) K: n×n, so the eigen-solve never touches an f-sized matrix.
  const H = new Float64Array(d * d);
  addGramUpper(H, W1, f, d, (j) => j); // W1ᵀ W1 = Σ over neurons of row rowᵀ
  for (let a = 0; a < d; a++) for (let b = a + 1; b < d; b++) H[b * d + a] = H[a * d + b];
  const method = o.method ?? (n > 1024 ? 'subspace' : 'exact');
  if (method === 'subspace' && n !== d) fail(`the subspace method needs x as wide as fc1's input (${n} against ${d})`);
  let values: number[], Vr: Matrix;
  if (method === 'exact') {
    const G = K.transpose().mmul(toMatrix(H, d, d)).mmul(K);
    const eig = new EigenvalueDecomposition(symmetrize(G), { assumeSymmetric: true });
    const all = eig.realEigenvalues, vectors = eig.eigenvectorMatrix;
    const order = all.map((_, i) => i).sort((p, q) => all[q] - all[p]).slice(0, rank);
    values = order.map((c) => all[c]);
    Vr = new Matrix(n, rank);
    order.forEach((c, k) => { for (let i = 0; i < n; i++) Vr.set(i, k, vectors.get(i, c)); });
  } else {
    ({ values, Vr } = topEigenSubspace(Float64Array.from(K.to1DArray()), H, d, rank, o.iterations ?? 8, !o.target));
  }
  // A = V_rᵀ L⁻¹, i.e. Aᵀ solves Lᵀ Aᵀ = V_r (back substitution on the upper-triangular Lᵀ).
  const At = backSubstituteUpper(L.transpose(), Vr);
  const LV = K.mmul(Vr); // (d, r): B = W1 (K V_r)
  // Balance the two factors (the product is unchanged): row k of A and column k of B both get
  // norm ~ sqrt(s_k), so AdamW's per-element steps are comparable on both sides.
  const A = new Float32Array(rank * n), B = new Float32Array(f * rank);
  const scale = values.map((v) => Math.pow(Math.max(v, 1e-30), 0.25)); // sqrt(s_k) with s_k = sqrt(λ_k)
  for (let k = 0; k < rank; k++) for (let i = 0; i < n; i++) A[k * n + i] = At.get(i, k) * scale[k];
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
  return padRank({ rank, A, B, bias }, r, n, f);
}

/**
 * The r largest eigenpairs of G = Lᵀ H L (L lower-triangular when `lower`, else dense; both (d, d)
 * row-major) without forming G: a block of k = min(d, r + 16) vectors, `iterations` rounds of
 * Q ← orth(G Q), then Rayleigh-Ritz (the k×k eigenproblem Qᵀ G Q). Blocks are row-major (d, k) so
 * the inner loops run over k.
 */
function topEigenSubspace(L: Float64Array, H: Float64Array, d: number, r: number, iterations: number, lower: boolean): { values: number[]; Vr: Matrix } {
  const k = Math.min(d, r + 16);
  const applyG = (Q: Float64Array): Float64Array => {
    const Y = new Float64Array(d * k), Z = new Float64Array(d * k), W = new Float64Array(d * k);
    for (let i = 0; i < d; i++) for (let j = 0; j <= (lower ? i : d - 1); j++) axpy(Y, i * k, L[i * d + j], Q, j * k, k);   // Y = L Q
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) axpy(Z, i * k, H[i * d + j], Y, j * k, k);   // Z = H Y
    for (let j = 0; j < d; j++) for (let i = 0; i <= (lower ? j : d - 1); i++) axpy(W, i * k, L[j * d + i], Z, j * k, k);  // W = Lᵀ Z
    return W;
  };
  const rand = seededRandom(12345);
  let Q = orthonormalColumns(Float64Array.from({ length: d * k }, () => rand() - 0.5), d, k);
  for (let it = 0; it < iterations; it++) Q = orthonormalColumns(applyG(Q), d, k);
  const GQ = applyG(Q), S = new Matrix(k, k);
  for (let a = 0; a < k; a++) for (let b = 0; b < k; b++) {
    let t = 0;
    for (let i = 0; i < d; i++) t += Q[i * k + a] * GQ[i * k + b];
    S.set(a, b, t);
  }
  const eig = new EigenvalueDecomposition(symmetrize(S), { assumeSymmetric: true });
  const all = eig.realEigenvalues, U = eig.eigenvectorMatrix;
  const order = all.map((_, i) => i).sort((p, q) => all[q] - all[p]).slice(0, r);
  const Vr = new Matrix(d, r);
  order.forEach((c, col) => {
    for (let i = 0; i < d; i++) {
      let t = 0;
      for (let a = 0; a < k; a++) t += Q[i * k + a] * U.get(a, c);
      Vr.set(i, col, t);
    }
  });
  return { values: order.map((c) => all[c]), Vr };
}

function axpy(y: Float64Array, yo: number, a: number, x: Float64Array, xo: number, n: number): void {
  if (a === 0) return;
  for (let c = 0; c < n; c++) y[yo + c] += a * x[xo + c];
}

/** Modified Gram-Schmidt on the columns of a row-major (d, k) block (a column that vanishes stays 0). */
function orthonormalColumns(Q: Float64Array, d: number, k: number): Float64Array {
  for (let c = 0; c < k; c++) {
    for (let p = 0; p < c; p++) {
      let t = 0;
      for (let i = 0; i < d; i++) t += Q[i * k + p] * Q[i * k + c];
      for (let i = 0; i < d; i++) Q[i * k + c] -= t * Q[i * k + p];
    }
    let n = 0;
    for (let i = 0; i < d; i++) n += Q[i * k + c] ** 2;
    n = Math.sqrt(n);
    for (let i = 0; i < d; i++) Q[i * k + c] = n > 1e-300 ? Q[i * k + c] / n : 0;
  }
  return Q;
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

/** X with L X = Y for lower-triangular L (n, n), Y (n, m). */
function forwardSubstituteLower(L: Matrix, Y: Matrix): Matrix {
  const n = L.rows, m = Y.columns, X = new Matrix(n, m);
  for (let c = 0; c < m; c++) {
    for (let i = 0; i < n; i++) {
      let s = Y.get(i, c);
      for (let k = 0; k < i; k++) s -= L.get(i, k) * X.get(k, c);
      X.set(i, c, s / L.get(i, i));
    }
  }
  return X;
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

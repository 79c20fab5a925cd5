/**
 * Calibration (DESIGN.md item 4, "K calibrated per layer"): from validation scores and labels, the
 * recall of top-K selection for every K at once, the smallest K meeting a target recall, and the rule
 * for which layers stay dense.
 *
 * Two recalls:
 * - count recall: share of the truly active neurons (fc1_act > 0) that the top-K contains.
 * - mass recall: share of the active neurons' output mass that it contains, where a neuron's mass is
 *   act_j · ‖W2[:, j]‖ (the norm of its contribution to the MLP output). Missing a barely-active
 *   neuron costs little; this weighs misses by what they would have added to the residual stream.
 */

/** K is a multiple of this: the sparse MLP kernels gather neurons in groups of 16 (vec4 rows and
 * workgroup tiles), so a partial group costs the same as a full one; rounding up only adds recall. */
export const K_ALIGN = 16;

export const roundK = (k: number, f: number): number => Math.min(f, Math.max(K_ALIGN, Math.ceil(k / K_ALIGN) * K_ALIGN));

/** Sortable key of a float32: unsigned order of the result equals numeric order of the float. */
const fbuf = new Float32Array(1), ubuf = new Uint32Array(fbuf.buffer);
function orderKey(v: number): number {
  fbuf[0] = v;
  const u = ubuf[0];
  return (u & 0x80000000 ? ~u : u | 0x80000000) >>> 0;
}

export interface RankStats {
  rows: number;
  f: number;
  /** Positives (or mass) found at each rank position, prefix-summed: hits[k] = within the top k. */
  hits: Float64Array;      // (f + 1)
  mass: Float64Array | null;
  totalPos: number;
  totalMass: number;
  countRecall(k: number): number;
  massRecall(k: number): number;
  precision(k: number): number;
}

/**
 * Ranks every validation row's scores once and accumulates, per rank position, how many true
 * positives (and how much mass) sit there; prefix sums then give the recall at every K.
 * `act` (rows, f) and `w2norm` (f) enable mass recall.
 */
export function rankStats(scores: Float32Array, labels: Uint32Array, rows: number, f: number, act?: Float32Array, w2norm?: Float32Array): RankStats {
  const words = Math.ceil(f / 32);
  const atRank = new Float64Array(f), massAt = act ? new Float64Array(f) : null;
  // key * 65536 + index is exact in a double (48 bits) and a native numeric sort orders it:
  // descending score, ties to the lower index, without a comparator callback.
  const keys = new Float64Array(f);
  let totalPos = 0, totalMass = 0;
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < f; j++) keys[j] = (0xffffffff - orderKey(scores[r * f + j])) * 65536 + j;
    keys.sort();
    for (let i = 0; i < f; i++) {
      const j = keys[i] % 65536;
      if ((labels[r * words + (j >>> 5)] >>> (j & 31)) & 1) {
        atRank[i]++;
        totalPos++;
        if (massAt) { const m = act![r * f + j] * (w2norm ? w2norm[j] : 1); massAt[i] += m; totalMass += m; }
      }
    }
  }
  const prefix = (a: Float64Array) => { const p = new Float64Array(f + 1); for (let i = 0; i < f; i++) p[i + 1] = p[i] + a[i]; return p; };
  const hits = prefix(atRank), mass = massAt ? prefix(massAt) : null;
  const at = (k: number) => Math.min(f, Math.max(0, Math.round(k)));
  return {
    rows, f, hits, mass, totalPos, totalMass,
    countRecall: (k) => (totalPos ? hits[at(k)] / totalPos : 1),
    massRecall: (k) => (mass && totalMass ? mass[at(k)] / totalMass : NaN),
    precision: (k) => (k > 0 && rows ? hits[at(k)] / (at(k) * rows) : 0),
  };
}

export interface LayerCalibration {
  layer: number;
  dense: boolean;
  /** Why the layer stays dense (empty when sparse). */
  reason: string;
  k: number;
  recall: number;        // count recall at k
  mass_recall: number;
  precision: number;
  density: number;       // k / f
  /** Measured fraction of inactive neurons (fc1_act == 0) on the collected tokens. */
  sparsity: number;
}

export interface CalibrateOptions {
  targetRecall: number;
  /** Density budget for sparse layers (default 0.15): see denseRule. */
  maxDensity: number;
  /** A layer needing more than this fraction of neurons for the target stays dense (default 0.5). */
  denseAbove?: number;
}

/** Smallest multiple-of-16 K (capped at f) whose count recall reaches the target. */
export function smallestK(stats: RankStats, target: number): number {
  for (let k = K_ALIGN; k < stats.f; k += K_ALIGN) if (stats.countRecall(k) >= target) return k;
  return stats.f;
}

/**
 * Which layers stay dense, and why:
 * - a layer whose measured active fraction exceeds the density budget: even the oracle top-K at
 *   the budget must drop truly active neurons on every token (OPT layer 0, ~27% active here: sparse at
 *   15% it cost +6.3% perplexity, while layers 1-7 at 10% cost +0.41% together);
 * - a layer whose calibrated K exceeds `denseAbove`·f: it would read most of the weights anyway,
 *   and the predictor's own cost eats the rest of the saving.
 */
export function denseRule(sparsity: number, k: number, f: number, o: CalibrateOptions): string {
  const active = 1 - sparsity;
  if (active > o.maxDensity) return `${(active * 100).toFixed(1)}% of neurons active > density budget ${(o.maxDensity * 100).toFixed(0)}%`;
  const denseAbove = o.denseAbove ?? 0.5;
  if (k / f > denseAbove) return `target recall needs K/f = ${(k / f).toFixed(2)} > ${denseAbove}`;
  return '';
}

export function calibrateLayer(layer: number, stats: RankStats, sparsity: number, o: CalibrateOptions): LayerCalibration {
  const f = stats.f;
  const k = smallestK(stats, o.targetRecall);
  const reason = denseRule(sparsity, k, f, o);
  return {
    layer, dense: reason !== '', reason, k,
    recall: stats.countRecall(k), mass_recall: stats.massRecall(k), precision: stats.precision(k),
    density: k / f, sparsity,
  };
}

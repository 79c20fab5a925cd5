/**
 * Synthetic sparsity policies for speed measurements: the benchmark needs the right amount of work
 * at the right shapes, not a model that predicts anything.
 */
import type { OptConfig } from '../model/config.js';
import { BLOCK_SIZE, blockSlots, headKvFields, predictorWidth, type HeadKvMode, type HeadLayerPolicy, type LowRankPredictor, type MlpLayerPolicy, type PredictorInput, type SparsityPolicy } from '../sparsity/policy.js';
import { predictScores } from '../sparsity/predict.js';
import { mlpK, predictorRank } from './shapes.js';
import { seededRandom } from '../util/random.js';

export const rng = seededRandom;

/** k distinct indices in [0, n), ascending (partial Fisher-Yates). */
export function randomSubset(n: number, k: number, r: () => number): Uint32Array {
  const perm = new Uint32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(r() * (n - i));
    const t = perm[i]; perm[i] = perm[j]; perm[j] = t;
  }
  return perm.slice(0, k).sort();
}

/**
 * --oracle: a fixed random index set per layer. No predictor runs, so the time isolates the sparse
 * kernels; a different set per layer keeps a cache from serving one layer's rows to the next.
 */
export function fixedPolicy(c: OptConfig, density: number, seed = 1): SparsityPolicy {
  const r = rng(seed), k = mlpK(c, density);
  return {
    input: 'attn_in',
    mlp: Array.from({ length: c.layers }, () => ({ k, selector: { kind: 'fixed' as const, indices: randomSubset(c.ffn, k, r) } })),
  };
}

/**
 * Random low-rank predictors at DejaVu's proportions (rank from `predictorRank`). One predictor
 * object is shared by every layer to keep host memory at one layer's worth (B alone is f x r floats:
 * 111 MB at OPT-66B); a backend uploads each layer's predictor to its own buffers, so the bytes read
 * per token are still L predictors' worth. Scales keep the scores O(1) like a trained predictor's.
 */
export function syntheticPredictorPolicy(c: OptConfig, density: number,
  o: { seed?: number; rank?: number; selection?: 'topk' | 'block'; input?: PredictorInput } = {}): SparsityPolicy {
  const r = rng(o.seed ?? 2), d = c.hidden, f = c.ffn, rank = o.rank ?? predictorRank(d), selection = o.selection ?? 'block';
  const fill = (n: number, scale: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
    return a;
  };
  const input = o.input ?? 'attn_in', n = predictorWidth(input, d);
  const predictor: LowRankPredictor = { rank, A: fill(rank * n, 1 / Math.sqrt(n)), B: fill(f * rank, 1 / Math.sqrt(rank)), bias: fill(f, 0.1) };
  let lp: MlpLayerPolicy;
  if (selection === 'topk') lp = { k: mlpK(c, density), selector: { kind: 'predictor', predictor } };
  else {
    // The block rule as calibrated predictors use it: a threshold for the density, and a cap of
    // twice the mean count a block (calibration lands near that: docs/sparsity.md). The threshold is
    // the density's quantile of the scores on unit-variance random inputs (the bench's LayerNorm
    // outputs are about that); the runner counts what was actually chosen (the bench reports it).
    const cap = Math.min(BLOCK_SIZE, 2 * Math.ceil(density * BLOCK_SIZE));
    const all: number[] = [];
    for (let s = 0; s < 8; s++) {
      // (attn_io: the attention input's half only, o's share left out: at opt-13b and 30b the measured
      // density came out at 17–19 % for 0.1. `dejavu bench` and bench/ab_decode.mjs calibrate the
      // threshold on the model before timing: calibrate.ts.)
      const x = Float32Array.from({ length: n }, (_, i) => (i < d ? gaussian(r) : 0));
      all.push(...predictScores(predictor, x, n));
    }
    all.sort((a, b) => b - a);
    const tau = all[Math.min(all.length - 1, Math.floor(density * all.length))];
    lp = { k: blockSlots(f, cap), density, selector: { kind: 'predictor', predictor, block: { cap, tau } } };
  }
  // attn_in (default): DejaVu's lookahead; decode runs predictor A inside the qkv GEMV (and the block
  // rule folds the MLP LayerNorm into block-select): one dispatch fewer a layer than mlp_in, and
  // measured faster (H200, GPU ms a token, docs/benchmarks.md: opt-6.7b 3.75 → 3.39, opt-13b 5.70 →
  // 5.69). mlp_in is what train-predictors makes by default (better recall: docs/sparsity.md);
  // decode then folds both LayerNorms (the MLP's into predictor A, which writes LN(x) for fc1).
  // Same bytes either way. attn_io (A twice as wide: the attention input and attention's output):
  // A's halves ride the qkv and out_proj GEMVs, and block-select scores.
  return { input, mlp: Array.from({ length: c.layers }, () => lp) };
}

/** A standard normal draw (Box-Muller). */
function gaussian(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

/** Heads a layer computes at a head density: at least one. */
export function headCount(c: OptConfig, density: number): number {
  return Math.max(1, Math.min(c.heads, Math.round(density * c.heads)));
}

/**
 * Sparse heads for `--sparsity dejavu` (HeadLayerPolicy per layer): with `oracle`, a fixed random head
 * set per layer (no predictor cost); else a random low-rank head predictor of DejaVu's proportions
 * (the MLP predictors' rank rule, predictorRank), its top k heads a token. Like the MLP's, one
 * predictor object serves every layer; each layer uploads its own copy.
 */
export function syntheticHeads(c: OptConfig, density: number, o: { seed?: number; rank?: number; oracle?: boolean; kv?: HeadKvMode } = {}): HeadLayerPolicy[] {
  const r = rng(o.seed ?? 3), d = c.hidden, H = c.heads, k = headCount(c, density), kv = headKvFields(o.kv ?? 'all');
  if (o.oracle) return Array.from({ length: c.layers }, () => ({ k, ...kv, selector: { kind: 'fixed' as const, heads: randomSubset(H, k, r) } }));
  const rank = o.rank ?? predictorRank(d);
  const fill = (n: number, scale: number) => Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);
  const predictor: LowRankPredictor = { rank, A: fill(rank * d, 1 / Math.sqrt(d)), B: fill(H * rank, 1 / Math.sqrt(rank)), bias: fill(H, 0.1) };
  return Array.from({ length: c.layers }, () => ({ k, ...kv, selector: { kind: 'predictor' as const, predictor } }));
}

/**
 * The sparsity policy the forward pass consults per layer. It is a policy, not a second model: a layer
 * whose entry is null runs dense. Attention heads will get a sibling field (`heads`) when sparse
 * attention lands.
 */

/**
 * DejaVu's low-rank MLP predictor: scores = B (A x) + bias, with no nonlinearity between the two
 * products. x is the predictor input of the layer (see PredictorInput), scores are one per neuron.
 */
export interface LowRankPredictor {
  rank: number;        // r
  A: Float32Array;     // (r, d): first product, a row per rank component
  B: Float32Array;     // (f, r): second product, a row per neuron
  bias: Float32Array;  // (f)
}

/**
 * Block selection, the alternative to a global top-K (WebGPU runs it fused with the predictor and
 * fc1, kernels/block-select.ts): in each block of BLOCK_SIZE consecutive neurons, those whose score
 * exceeds `tau` (null: no threshold), at most `cap` of them, the highest first. A token then computes
 * between 0 and ceil(f / BLOCK_SIZE) · cap neurons (k, the slots); `tau: null` is exactly cap a block.
 */
export interface BlockRule { cap: number; tau: number | null }
export const BLOCK_SIZE = 64;
export const blockSlots = (f: number, cap: number): number => Math.ceil(f / BLOCK_SIZE) * cap;

export type MlpSelector =
  /** DejaVu: the predictor's scores pick the neurons: its top-K, or with `block` the block rule. */
  | { kind: 'predictor'; predictor: LowRankPredictor; block?: BlockRule }
  /** The true top-K of fc1's pre-activation: an upper bound on quality (it computes fc1 densely). */
  | { kind: 'oracle' }
  /** A given index set, no predictor cost: isolates kernel speed in benchmarks. */
  | { kind: 'fixed'; indices: Uint32Array };

export interface MlpLayerPolicy {
  k: number;           // neurons computed per token (block rule: slots, the most a token computes)
  /** Expected fraction of neurons computed (block rule with a threshold: calibrated); default k / f. */
  density?: number;
  selector: MlpSelector;
}

/**
 * Which activation the predictors read:
 * - 'attn_in': the layer's attention input (after self_attn_layer_norm); known before attention runs,
 *   so prediction overlaps attention (DejaVu's lookahead, Figure 2 of the paper).
 * - 'mlp_in': the MLP's own input (after final_layer_norm); fc1 itself reads it, so it predicts better,
 *   but prediction then sits on the critical path between attention and the MLP.
 */
export type PredictorInput = 'attn_in' | 'mlp_in';

export interface SparsityPolicy {
  input: PredictorInput;
  mlp: (MlpLayerPolicy | null)[];   // (L): null runs that layer's MLP dense
}

/** Mean fraction of MLP neurons computed over the layers that run sparse (NaN when none do). */
export function meanMlpDensity(policy: SparsityPolicy, ffn: number): number {
  const sparse = policy.mlp.filter((p): p is MlpLayerPolicy => p !== null);
  return sparse.length ? sparse.reduce((a, p) => a + (p.density ?? p.k / ffn), 0) / sparse.length : NaN;
}

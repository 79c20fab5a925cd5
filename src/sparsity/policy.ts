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

export type MlpSelector =
  /** DejaVu: the predictor's top-K scores pick the neurons. */
  | { kind: 'predictor'; predictor: LowRankPredictor }
  /** The true top-K of fc1's pre-activation: an upper bound on quality (it computes fc1 densely). */
  | { kind: 'oracle' }
  /** A given index set, no predictor cost: isolates kernel speed in benchmarks. */
  | { kind: 'fixed'; indices: Uint32Array };

export interface MlpLayerPolicy {
  k: number;           // neurons computed per token
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
  return sparse.length ? sparse.reduce((a, p) => a + p.k / ffn, 0) / sparse.length : NaN;
}

import { fail } from '../util/errors.js';

/**
 * The sparsity policy the forward pass consults per layer. It is a policy, not a second model: a layer
 * whose entry is null runs dense. `mlp` picks MLP neurons, `heads` attention heads (DejaVu's two halves).
 */

/**
 * DejaVu's low-rank MLP predictor: scores = B (A x) + bias, with no nonlinearity between the two
 * products. x is the predictor input of the layer (see PredictorInput), scores are one per neuron.
 */
export interface LowRankPredictor {
  rank: number;        // r
  A: Float32Array;     // (r, d), or (r, 2d) reading attn_io (predictorWidth): first product, a row per rank component
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
 * - 'attn_io': the attention input and attention's output o (the heads' outputs side by side, what
 *   out_proj reads) as one 2d-wide input. fc1's input is LN(x + W_o·o + b_o), so this sees what
 *   attention adds, which attn_in cannot (as good as mlp_in on opt-gutenberg-18m: docs/sparsity.md),
 *   while A splits into A_a·attn_in, known before attention (riding the qkv GEMV as attn_in's does),
 *   plus A_o·o, known when attention ends: u = A_a·attn_in + A_o·o.
 */
export type PredictorInput = 'attn_in' | 'mlp_in' | 'attn_io';
export const PREDICTOR_INPUTS: readonly PredictorInput[] = ['attn_in', 'mlp_in', 'attn_io'];

/** Columns of a predictor's A reading `input` in a model of width d: 2d for attn_io (attn_in then o), else d. */
export const predictorWidth = (input: PredictorInput, d: number): number => (input === 'attn_io' ? 2 * d : d);
/** Whether predictors reading `input` read the attention input (attn_in, or attn_io's first half): known before attention. */
export const readsAttnIn = (input: PredictorInput): boolean => input !== 'mlp_in';

/**
 * Which attention heads a token computes. A head predictor is the same low-rank form with one score
 * per head (B: (H, r)); it always reads the layer's attention input (it must be known before attention).
 */
export type HeadSelector =
  /** DejaVu: the predictor's top-k heads. */
  | { kind: 'predictor'; predictor: LowRankPredictor }
  /** A given head set, no predictor cost: isolates kernel speed in benchmarks. */
  | { kind: 'fixed'; heads: Uint32Array }
  /**
   * The k heads whose contributions to out_proj's output, ‖W_o,h o_h‖, are largest this token (every
   * head computed first: an upper bound on what a head predictor could keep; the CPU backend only,
   * for quality measurements).
   */
  | { kind: 'oracle' };

/**
 * Sparse heads in decode (a forward of one token): the k chosen heads compute q, attention and their
 * share of out_proj. K and V (`kv`):
 * - 'all' (default): every head still computes and stores its K and V, so the cache stays complete
 *   and a head chosen later sees every position. Reads Q's and O's share plus all of K and V.
 * - 'chosen': unchosen heads compute nothing and store no K/V at this position, which their cache
 *   records as skipped: a head attends to the positions where it ran (every prompt position and the
 *   decode steps that chose it). Reads the chosen share of Q, K, V and O. Measured far worse on
 *   opt-gutenberg-18m (docs/sparsity.md): a head's history gets holes wherever it was not chosen.
 * Forwards of several tokens (prompts, eval windows) run every head. setSparsity forgets the skip
 * record (positions before it count as run by every head).
 *
 * `kvWindow` W (with kv 'chosen'; the CPU backend only, a quality experiment): DejaVu's lazy K/V
 * completion without its per-head half. Every W decode positions (at positions p with (p + 1) % W
 * = 0, before that step's attention) the holes of the last W positions are filled for every head,
 * so a head's history has holes only since the last completion, at most W − 1 positions back. On
 * a GPU this is the chosen heads' K/V every step plus every head's K/V for W inputs every W steps
 * ((2ρ(W − 1) + 2)d²/W weight bytes a step at ρ = k/H) instead of kv 'all''s 2d² every step;
 * W = 2 is exact (docs/sparsity.md). The CPU computes every head's K/V each step and completes by
 * unmarking: the same values, since a position's K/V depend only on its own attention input. A
 * forward of several tokens that holds a completion position completes that window first (with W = 2:
 * a prompt right after an even decode step fills that step's holes, as the WebGPU runner does).
 */
export interface HeadLayerPolicy {
  k: number;           // heads computed per token (a fixed set: its size)
  selector: HeadSelector;
  kv?: 'all' | 'chosen';
  kvWindow?: number;
}

/**
 * The K/V modes users pick (`--head-kv`): 'all' and 'chosen' as HeadLayerPolicy.kv, and 'lazy' = kv
 * 'chosen' with kvWindow 2: DejaVu's lazy completion, the cache (and so the output) of kv 'all'
 * while reading K and V's weights for every head only every second step (WebGPU: gemv.ts, LAZY).
 */
export type HeadKvMode = 'all' | 'chosen' | 'lazy';

/** A --head-kv value, checked. */
export function parseHeadKv(s: string): HeadKvMode {
  if (s !== 'all' && s !== 'chosen' && s !== 'lazy') fail(`--head-kv must be all, chosen or lazy (got ${s})`);
  return s;
}

/** A mode's HeadLayerPolicy fields. */
export const headKvFields = (m: HeadKvMode): Pick<HeadLayerPolicy, 'kv' | 'kvWindow'> =>
  m === 'lazy' ? { kv: 'chosen', kvWindow: 2 } : { kv: m };

/** A layer policy's mode (kv 'chosen' with another window reads as 'chosen'; window 1 is kv all's cache but reads as chosen too). */
export const headKvMode = (hp: HeadLayerPolicy): HeadKvMode => (hp.kv !== 'chosen' ? 'all' : hp.kvWindow === 2 ? 'lazy' : 'chosen');

/** Whether a layer's unchosen heads skip their K/V too (HeadLayerPolicy.kv = 'chosen'). */
export const headKvChosen = (hp: HeadLayerPolicy): boolean => hp.kv === 'chosen';

/**
 * Which activation the head predictors read:
 * - 'attn_in' (default): the layer's own attention input; the scores are a dependent step right before
 *   the layer's q/k/v (WebGPU: a GEMV dispatch of its own a layer).
 * - 'prev_attn_in': DejaVu's lookahead for heads (DESIGN.md item 7): layer l >= 1 reads layer l − 1's
 *   attention input (layer 0, with none before it, reads its own), so the scores are known a layer
 *   early. On WebGPU they ride the previous layer's qkv GEMV as extra rows (gemv.ts, HNEXT): no
 *   dispatch of their own. The predictors must be fitted on that input (train-predictors --head-input).
 */
export type HeadInput = 'attn_in' | 'prev_attn_in';

/** A --head-input value, checked. */
export function parseHeadInput(s: string): HeadInput {
  if (s !== 'attn_in' && s !== 'prev_attn_in') fail(`--head-input must be attn_in or prev_attn_in (got ${s})`);
  return s;
}

/** Whether layer l's head predictor reads the layer before's attention input (HeadInput 'prev_attn_in'). */
export const headReadsPrev = (p: SparsityPolicy | null, l: number): boolean => l > 0 && p?.headInput === 'prev_attn_in';

export interface SparsityPolicy {
  input: PredictorInput;
  /** What the head predictors read (default 'attn_in'). */
  headInput?: HeadInput;
  mlp: (MlpLayerPolicy | null)[];   // (L): null runs that layer's MLP dense
  /** (L) or absent: null runs that layer's attention dense. */
  heads?: (HeadLayerPolicy | null)[];
}

/** Whether a policy runs any layer's MLP sparsely. */
export const hasSparseMlp = (p: SparsityPolicy | null): boolean => !!p?.mlp.some((m) => m !== null);
/** Whether a policy runs any layer's heads sparsely (they act on one-token forwards only). */
export const hasSparseHeads = (p: SparsityPolicy | null): boolean => !!p?.heads?.some((h) => h !== null);

/** Heads a sparse-attention layer computes per token. */
export function headK(hp: HeadLayerPolicy): number {
  return hp.selector.kind === 'fixed' ? hp.selector.heads.length : hp.k;
}

/** Mean fraction of heads computed over the layers with sparse heads (NaN when none). */
export function meanHeadDensity(policy: SparsityPolicy, heads: number): number {
  const s = (policy.heads ?? []).filter((p): p is HeadLayerPolicy => p !== null);
  return s.length ? s.reduce((a, p) => a + headK(p) / heads, 0) / s.length : NaN;
}

/** Mean fraction of MLP neurons computed over the layers that run sparse (NaN when none do). */
export function meanMlpDensity(policy: SparsityPolicy, ffn: number): number {
  const sparse = policy.mlp.filter((p): p is MlpLayerPolicy => p !== null);
  return sparse.length ? sparse.reduce((a, p) => a + (p.density ?? p.k / ffn), 0) / sparse.length : NaN;
}

/** Checks a policy's MLP predictors against the model (both runners call it first): a known input, and A, B, bias of its shapes. */
export function checkMlpPredictors(policy: SparsityPolicy, d: number, f: number): void {
  if (!PREDICTOR_INPUTS.includes(policy.input)) fail(`predictor input must be ${PREDICTOR_INPUTS.join(', ')}, got ${String(policy.input)}`);
  const n = predictorWidth(policy.input, d);
  policy.mlp.forEach((lp, l) => {
    const s = lp?.selector;
    if (s?.kind !== 'predictor') return;
    const p = s.predictor;
    if (p.A.length !== p.rank * n || p.B.length !== f * p.rank || p.bias.length !== f) fail(`layer ${l}: a predictor reading ${policy.input} must be (${p.rank}, ${n}) then (${f}, ${p.rank}) with ${f} biases`);
  });
}

/**
 * Checks a policy's heads against the model (both runners call it before changing anything): one
 * entry a layer, k in 1..H, fixed sets of distinct heads below H, predictors of the model's width.
 */
export function checkHeadsPolicy(policy: SparsityPolicy, layers: number, H: number, d: number): void {
  const hs = policy.heads;
  if (!hs) return;
  if (policy.headInput !== undefined && policy.headInput !== 'attn_in' && policy.headInput !== 'prev_attn_in') fail(`heads input must be 'attn_in' or 'prev_attn_in', got ${String(policy.headInput)}`);
  if (hs.length !== layers) fail(`sparsity policy has ${hs.length} head layers, the model has ${layers}`);
  hs.forEach((hp, l) => {
    if (!hp) return;
    const k = headK(hp), s = hp.selector;
    if (!(Number.isInteger(k) && k >= 1 && k <= H)) fail(`layer ${l}: heads k = ${k} must be between 1 and ${H}`);
    if (hp.kv !== undefined && hp.kv !== 'all' && hp.kv !== 'chosen') fail(`layer ${l}: heads kv must be 'all' or 'chosen', got ${String(hp.kv)}`);
    if (hp.kvWindow !== undefined && !(Number.isInteger(hp.kvWindow) && hp.kvWindow >= 1 && hp.kv === 'chosen')) fail(`layer ${l}: heads kvWindow must be a whole number >= 1, with kv 'chosen' (got ${String(hp.kvWindow)})`);
    if (s.kind === 'fixed' && (new Set(s.heads).size !== k || s.heads.some((h) => h >= H))) fail(`layer ${l}: the fixed head set must hold distinct heads below ${H}`);
    if (s.kind === 'predictor') {
      const p = s.predictor;
      if (p.A.length !== p.rank * d || p.B.length !== H * p.rank || p.bias.length !== H) fail(`layer ${l}: the head predictor must be (${p.rank}, ${d}) then (${H}, ${p.rank}) with ${H} biases`);
    }
  });
}

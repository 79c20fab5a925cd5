import type { OptConfig } from '../model/config.js';
import type { SparsityPolicy } from '../sparsity/policy.js';
import type { GumbelSampling } from './gumbel.js';

export type BackendName = 'cpu' | 'webgpu';
export type BackendChoice = BackendName | 'auto';

/**
 * Points inside a layer whose values analysis and predictor collection read.
 * - attn_in:   (T, d) after self_attn_layer_norm (attention's input)
 * - mlp_in:    (T, d) after final_layer_norm (fc1's input)
 * - fc1_act:   (T, f) fc1 output after ReLU (dense; on sparse layers, zeros outside the selection)
 * - head_norm: (T, H) L2 norm of each head's attention output (before out_proj)
 * - attn_out:  (T, d) the attention output before out_proj (the heads' outputs side by side)
 */
export type TracePoint = 'attn_in' | 'mlp_in' | 'fc1_act' | 'head_norm' | 'attn_out';

/** Receives a (rows, n) row-major copy of a trace point; it may keep the array. */
export type TraceFn = (layer: number, point: TracePoint, data: Float32Array, rows: number) => void;

export interface ForwardOptions {
  /** Logits for every position, (T, V) row-major. Default: only the last position, (V). */
  allLogits?: boolean;
  /** Skip the LM head and return an empty array (collection needs layer values only). */
  noLogits?: boolean;
  /** Called during the forward pass with the values at the requested points. */
  trace?: TraceFn;
  tracePoints?: TracePoint[];
}

/**
 * Per-row statistics of a forward's (T, V) logits: what evaluation reads instead of the logits
 * (Runner.forwardStats). Row t is the distribution after ids[0..t].
 */
export interface RowStats {
  /** log Σ exp(logits[t, ·]): log p(token) = logits[t, token] − lse[t]. */
  lse: Float64Array;
  /** logits[t, targets[t]]. */
  target: Float64Array;
  /** The row's argmax (ties: the lowest id). */
  argmax: Int32Array;
  /** With `kl`: KL(reference ‖ this forward's row) in nats; else null. */
  kl: Float64Array | null;
}

export interface StatsOptions {
  /** A token id per row: the logit that `target` returns (any valid id where it does not matter). */
  targets: number[];
  /** Keep this forward's logits as the reference a later forward's `kl` is taken against. */
  keep?: boolean;
  /** Also KL(reference ‖ this) per row, against the last forward run with `keep` (same row count). */
  kl?: boolean;
  /** Rows before this one are not wanted: their statistics are NaN (the host path skips them). Default 0. */
  from?: number;
}

/**
 * A loaded model on one backend: weights resident, KV cache allocated for the whole context.
 * Every backend runs the same OPT forward pass; the CPU one is the oracle the others are tested against.
 */
export interface Runner {
  readonly backend: BackendName;
  readonly config: OptConfig;
  /** One line: the device or adapter and the precision, e.g. "webgpu: NVIDIA H100 (shader-f16)". */
  readonly description: string;
  /** Tokens now in the KV cache. */
  readonly position: number;
  /** Runs `ids` at positions [position, position + T), appending their K/V, and returns logits. */
  forward(ids: number[], opts?: ForwardOptions): Promise<Float32Array>;
  /**
   * Greedy decoding, chained: step j runs one token at position p + j, p = `position` at the call
   * (step 0 runs `first`, step j > 0 the id step j - 1 produced) and produces the argmax of its
   * logits (ties: lowest id; NaN never wins; cpu/kernels.ts `argmax`), passed to
   * `onToken`; it goes on while `onToken` returns true, for at most `maxSteps` steps (which must fit
   * the context). Returns the ids produced, in order, including the one on which `onToken` said stop.
   * Afterwards `position` is the starting position + that count: the token that produced the last
   * id is in the KV cache, the last id itself is not (as a host loop that stops before feeding it).
   * The WebGPU runner keeps several steps queued and picks the ids on the device (no logits cross to
   * the host); steps it queued past the stop are discarded. Same ids as argmax over `forward`'s
   * logits, step by step. Don't call forward or decodeGreedy from `onToken`.
   *
   * With `sampling`, each step draws from softmax(logits / temperature) instead of taking the argmax,
   * with `topK` among the k largest logits only (a k at or above the vocabulary: all): the Gumbel-max
   * rule of backend/gumbel.ts (`gumbelPick` at the step's position), on the device on WebGPU (top-k
   * up to MAX_DEVICE_TOPK there; the CPU runner takes any k), so sampling chains as greedy decoding does.
   */
  decodeGreedy(first: number, maxSteps: number, onToken: (id: number) => boolean, sampling?: GumbelSampling): Promise<number[]>;
  /**
   * `forward(ids, { allLogits: true })` reduced to RowStats where the logits are: the WebGPU runner
   * computes them on the device (f32; kernels/row-stats.ts) and reads back 4 words a row instead of
   * V floats; the CPU runner in float64 (backend/row-stats.ts rowStatsOf). Same positions and KV effect
   * as forward.
   */
  forwardStats(ids: number[], opts: StatsOptions): Promise<RowStats>;
  /** Empties the KV cache. */
  reset(): void;
  /** Sparsity for later forwards; null runs dense. Resets the density count (mlpDensity). */
  setSparsity(policy: SparsityPolicy | null): void;
  /**
   * Measured MLP density: per layer, the mean fraction of its neurons computed per token over the
   * tokens run since setSparsity or resetMlpDensity (null: a dense layer; top-K layers: k / f; the
   * block rule: counted as it runs, NaN before any token).
   */
  mlpDensity(): Promise<(number | null)[]>;
  resetMlpDensity(): void;
  /**
   * The block rule's threshold τ per layer (null, or a layer without the block rule: unchanged) for
   * the policy now set, keeping its uploads; a later setSparsity forgets them (another policy, the
   * same one again, or null and then a parked policy brought back).
   * The benchmark uses it to bring synthetic predictors to a density (bench/calibrate.ts). Resets
   * the density count.
   */
  setBlockThresholds(tau: (number | null)[]): void;
  dispose(): void;
}

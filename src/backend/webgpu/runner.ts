/**
 * The WebGPU backend: the CPU runner's OPT forward pass (src/backend/cpu/runner.ts) as a plan of
 * GPU dispatches. Weights are fp16 on the GPU (read as f16, or as packed u32 without shader-f16),
 * activations and accumulation f32, KV cache f32 (or f16, packed in u32: `kvCache`) for the whole context.
 *
 * Plans are built once per shape (decode T = 1 at load) and replayed: a token writes one small
 * `step` buffer [pos, ids...] and submits one command buffer with one compute pass; only the logits
 * come back (or nothing with noLogits). Prompts run as batched passes of up to TCAP tokens.
 */
import type { OptConfig } from '../../model/config.js';
import { OPT_POSITION_OFFSET } from '../../model/config.js';
import { toF16Bits, toF32, type Tensor } from '../../model/tensor.js';
import type { OptWeights } from '../../model/weights.js';
import { BLOCK_SIZE, blockSlots, checkHeadsPolicy, checkMlpPredictors, headK, headKvChosen, headKvMode, headReadsPrev, readsAttnIn, type BlockRule, type MlpLayerPolicy, type SparsityPolicy } from '../../sparsity/policy.js';
import { floatsToHalves } from '../../util/f16.js';
import { columns } from '../../util/rows.js';
import { fail } from '../../util/errors.js';
import type { ForwardOptions, RowStats, Runner, StatsOptions, TracePoint } from '../types.js';
import { checkStatsRequest, maskRows } from '../row-stats.js';
import { readRowStats, ROW_STATS_FLOATS } from './kernels/row-stats.js';
import { openGpu, type Gpu, type GpuOptions } from './device.js';
import { ceil4, ceilDiv } from './kernels/common.js';
import { attentionSplitShape } from './kernels/attention.js';
import { headScoreMatrix } from '../../sparsity/predict.js';
import { FC2_MAX_SLICES, FC2_MIN_SLICE_ROWS } from './kernels/sparse-mlp.js';
import { f32bits, fc2OnePass, Kernels, lazyShape, readU32, runNow, unshared, type Dispatch, type GpuMatrix, type LinearArgs, type PlanItem, type Tap } from './ops.js';
import { checkSampling, MAX_DEVICE_TOPK, type GumbelSampling } from '../gumbel.js';

/** Tokens per prefill pass: activations are allocated for this many rows; longer prompts take several passes. */
const TCAP = 128;
/** f32 values of the sparse-MLP partial-sum buffer (bounds slices x tokens x d). */
const PARTIAL_BUDGET = 1 << 22;

interface GpuLayer {
  attnLnW: GPUBuffer; attnLnB: GPUBuffer;    // (d) f32
  qkv: GpuMatrix; qkvB: GPUBuffer | null;    // (3d, d) fp16: q, k, v stacked so one pass reads x; (3d)
  o: GpuMatrix; oB: GPUBuffer | null;        // (d, d), (d)
  mlpLnW: GPUBuffer; mlpLnB: GPUBuffer;      // (d)
  fc1: GpuMatrix; fc1B: GPUBuffer | null;    // (f, d): neuron j is row j; (f)
  /**
   * fc2 in the layout the current policy reads: (d, f) as stored where the layer's MLP runs dense,
   * (f, d) transposed (fc2T: each neuron's weights one row, for the sparse fc2) where it runs sparse.
   * setSparsity transposes between them (exact: fp16 moved, not computed) and, unless
   * keepDenseFc2, frees the layout no longer read, so a sparse model holds one copy of fc2.
   */
  fc2: GpuMatrix | null; fc2B: GPUBuffer | null;    // (d, f), (d)
  fc2T: GpuMatrix | null;                           // (f, d)
  k: GPUBuffer; v: GPUBuffer;                // (maxPositions, d) KV cache, f32 (kvCache 'f16': packed f16)
  // Pre-LN models: c1 = W·γ, c2 = W·β + b of qkv (attention LN) and fc1 (MLP LN), so decode's GEMVs
  // fold the LayerNorm in (gemv.ts); c1 then c2 in one buffer, (2 × 3d) and (2 × f). Null for
  // post-LN models or with folding off.
  qkvFold: { c: GPUBuffer } | null;
  fc1Fold: { c: GPUBuffer } | null;
  /**
   * With γ in the weights (gammaInWeights: qkv holds W∘γ of the attention LayerNorm, fc1 W∘γ of the
   * MLP LayerNorm, made at load; gemv.ts, GAMMA IN W): c2 = W·β + b alone, (3d) and (f), the bias of
   * the unfolded product, which reads the LayerNorm without its affine part (x̂: the runner's hX,
   * and hXM or the mlp_in buffer for fc1). Null otherwise.
   */
  qkvC2: GPUBuffer | null;
  fc1C2: GPUBuffer | null;
}

interface LayerSparse {
  lp: MlpLayerPolicy; k: number;
  pred?: { A: GpuMatrix; B: GpuMatrix; bias: GPUBuffer; rank: number; fold: GPUBuffer | null; c2: GPUBuffer | null; Ao?: GpuMatrix }; // (r, d), (f, r), (f); A's LN constants (2r)
  // (pred.Ao: with input attn_io, A's second half (r, d), read on attention's output o; pred.A is then its first half, read on attn_in: u = A·attn_in + Ao·o.)
  // (pred.c2: A's c2 alone (r) where A, riding a qkv GEMV over W∘γ, is stored as A∘γ too: the bias of the unfolded A product, which reads x̂.)
  block?: BlockRule;                                                    // the block rule (k = slots)
  fixed?: GPUBuffer;                                                    // (k) u32, uploaded once
  /**
   * DejaVu's lookahead (input attn_in, folded LayerNorms, decode): predictor A rides the qkv GEMV
   * (gemv.ts, PRED) and u lands in the qkv buffer after qkv's 3d rows; c = c1 | c2 over qkv's 3d and
   * A's r rows (2 (3d + r)), made only where the next layer's head rows do not ride too (those GEMVs
   * take qkvNextC's constants; null there). With the block rule the MLP LayerNorm folds into block-select too.
   */
  look?: { c: GPUBuffer | null };
}

/**
 * A layer's sparse heads (decode; HeadLayerPolicy). The head predictor's two products collapse into one
 * (H, d) matrix W = B·A (H < r for every OPT shape: fewer bytes than A alone, and one GEMV); the qkv
 * GEMV (or, where it cannot, a head-select dispatch) chooses from its scores. A fixed set has no W:
 * its 0/1 flags are the scores.
 */
interface HeadSparse {
  k: number; kvAll: boolean;                    // HeadLayerPolicy.kv: 'all' (every head stores K/V) or 'chosen'
  W: GpuMatrix | null; fold: GPUBuffer | null;   // (H, d) fp16; its LayerNorm constants (2H, c2 with the bias) when folding
  c2: GPUBuffer | null;                          // (H): c2 alone where W, riding a qkv GEMV over W∘γ, is stored as W∘γ (the unfolded product's bias; it reads x̂)
  bias: GPUBuffer;                               // (H): the predictor's bias, or a fixed set's flags
  uh: GPUBuffer;                                 // (H): the scores W makes (a layer each: the lookahead writes layer l + 1's during layer l)
  /**
   * The head lookahead (policy.ts, HeadInput 'prev_attn_in'; not layer 0): W reads the layer
   * before's attention input, so its scores are made during that layer (fold: with that layer's
   * LayerNorm), inside its qkv GEMV where that fits (qkvNextC; gemv.ts, HNEXT).
   */
  prev: boolean;
  skip: GPUBuffer;                               // (maxPos, H): 1 where the head did not run
  /**
   * DejaVu's lazy K/V completion (kv 'chosen', kvWindow 2; gemv.ts, LAZY): the heads with a hole
   * at the last even position (H u32) and that position's layer input as the GEMV keeps it (d + 4
   * floats: gemv.ts, LAZY); null otherwise.
   */
  lazy: { holes: GPUBuffer; xPrev: GPUBuffer } | null;
  qkvMask: boolean;                              // the qkv GEMV skips unchosen heads' rows (Kernels.headsFit)
  major: GPUBuffer | null;                       // out_proj head-major (Kernels.headMajor), or null: out_proj as stored
}

/**
 * One folded GEMV's LayerNorm constants for matrices stacked by rows (gemv.ts, LN: c1 of every row, then
 * c2 of every row) from each matrix's own (rows c1, then rows c2): a buffer, filled by copies queued
 * after the folds run.
 */
function joinFolds(parts: [GPUBuffer, number][], label: string, sb: (bytes: number, label: string) => GPUBuffer, copies: [GPUBuffer, number, GPUBuffer, number, number][]): GPUBuffer {
  const F = 4, n = parts.reduce((a, [, rows]) => a + rows, 0), c = sb(2 * n * F, label);
  let at = 0;
  for (const [src, rows] of parts) {
    copies.push([src, 0, c, at * F, rows * F], [src, rows * F, c, (n + at) * F, rows * F]);
    at += rows;
  }
  return c;
}

/** Neurons a sparse layer computes per token: the fixed set's size, the block rule's slots, else k. */
function layerK(lp: MlpLayerPolicy, f: number): number {
  const s = lp.selector;
  if (s.kind === 'fixed') return s.indices.length;
  return s.kind === 'predictor' && s.block ? blockSlots(f, s.block.cap) : lp.k;
}

/** What setSparsity builds for a policy: per-layer parts, their buffers, and the sparse MLP's scratch. */
interface SparseState {
  policy: SparsityPolicy; sparse: (LayerSparse | null)[]; heads: (HeadSparse | null)[]; bufs: GPUBuffer[];
  hl: GPUBuffer | null; qkvNextC: (GPUBuffer | null)[]; bcnt: GPUBuffer | null;
  scores: GPUBuffer | null; u: GPUBuffer | null; sel: GPUBuffer | null; hsel: GPUBuffer | null;
  partial: GPUBuffer | null; partialFloats: number; chosen: GPUBuffer | null; zeroB1: GPUBuffer | null;
  fc2Part: GPUBuffer | null;
}

interface Plan { items: PlanItem[]; own: GPUBuffer[]; dispatches: number }
/**
 * forwardStats' device state (statsState): targets (u32 a position), out (ROW_STATS_FLOATS words a
 * position), its staging copy, the reference's out rows, the reference's logits a pass to a buffer,
 * and the passes' row-stats dispatches by pass / T / rowOff / kl (their uniforms in own).
 */
interface StatsBuffers {
  targets: GPUBuffer; out: GPUBuffer; stage: GPUBuffer; refOut: GPUBuffer; refLogits: GPUBuffer[];
  dispatches: Map<string, Dispatch>; own: GPUBuffer[];
}
const destroyStats = (S: StatsBuffers): void => {
  for (const b of [S.targets, S.out, S.stage, S.refOut, ...S.refLogits, ...S.own]) b.destroy();
};
/**
 * Prompt plans kept at most (runner.plan, evictPlans): more than the TCAP prompt lengths of one head
 * form, so an eval over items of every length builds each plan once.
 */
const PLAN_CACHE_MAX = 320;
/**
 * ... and at most this many dispatches in all (a bind group and a uniform buffer each: ~35 a prompt
 * plan of the 5m model, ~500 at opt-30b, where this keeps ~130 plans).
 */
const PLAN_CACHE_DISPATCHES = 65536;
/** What follows the layers: nothing, the last row's logits, every row's, or the last row's logits
 *  and the argmax kernel that feeds the pick to the next step (decodeGreedy: 'greedy'; 'sample' draws
 *  by temperature instead, kernels/argmax.ts SAMPLE). */
type Head = 'none' | 'last' | 'all' | 'greedy' | 'sample';

/**
 * Decode steps decodeGreedy keeps queued. The host's turn per token (the id's map resolving, onToken,
 * encoding the next step, ~0.6 ms for OPT-6.7B's 196 dispatches) must fit in the GPU time of the
 * steps still queued, and so must the host's pauses: V8 runs a full mark-compact every ~250 ms of
 * decoding (Dawn's per-call wrappers are the garbage), 8-12 ms each, and other hiccups reach
 * ~25 ms. With 4 queued (20 ms at 6.7B, 6 ms at 1.3B) those pauses drained the queue: 1-2 steps in
 * 60 took ~20 ms and the mean was 3-6 % over the median (H200, docs/benchmarks.md). 16 rides them
 * out. The queue starts CHAIN_START deep and grows by 2 a token, so the first id is not held up by
 * encoding 16 steps first. The price of depth: a stop (EOS, a stop string) leaves up to 15 steps
 * running whose results are dropped (GPU time, off the host's path: decodeGreedy returns at once).
 */
const CHAIN_WINDOW = 16;
const CHAIN_START = 4;

/**
 * Decode folds LayerNorm into the next GEMV by default at every width. The first folded form (two
 * more strided passes over x behind four barriers in every GEMV workgroup) lost above d = 2048, so it
 * was on only up to there; with the statistics riding the dot loop's own x loads (gemv.ts) it wins at
 * every size measured. H200, GPU ms/token, dense, build before → after, fold off / on (26 Nov 2026,
 * docs/benchmarks.md): opt-1.3b 1.89 / 1.71 → 1.82 / 1.63; opt-6.7b 6.04 / 6.26 → 5.88 / 5.79;
 * opt-13b 10.23 / 10.77 → 10.07 / 10.03.
 */
const FOLD_LN_DEFAULT = true;

export interface DecodeTiming {
  steps: number;
  /** Wall-clock per token from submit to onSubmittedWorkDone, steps queued back to back. */
  msPerToken: number;
  /** GPU time per token from timestamp queries (when the adapter has timestamp-query). */
  gpuMsPerToken?: number;
  dispatchesPerToken: number;
  /** Weight bytes one decode step reads (sparse layers: the selected rows and the predictor). */
  weightBytesPerToken: number;
}

/**
 * A decode step dispatch by dispatch (profileDecodeSteps): each dispatch in a compute pass of its
 * own with GPU timestamps at its start and end, so a row is a kernel's own time without the gap to
 * the next dispatch. Rows group the dispatches of one pipeline and grid (e.g. every layer's qkv GEMV).
 */
export interface DecodeProfile {
  steps: number;
  rows: { kernel: string; workgroups: number; perToken: number; usPerToken: number }[];
  /** Sum of the rows: the step's kernels back to back, no gaps (GPU ms a token). */
  busyMsPerToken: number;
  dispatchesPerToken: number;
}

export type WebGpuRunner = Runner & {
  gpu: Gpu;
  /** Dispatches in one decode step's command buffer. */
  readonly dispatchesPerToken: number;
  /** Dispatches of a forward of T tokens that returns the last row's logits (with `trace`, the traced form). */
  dispatchesFor(T: number, trace?: boolean): number;
  /** Pipeline cache keys built so far (each records its compile-time choices). */
  readonly pipelineKeys: string[];
  weightBytesPerToken(): number;
  /** Device bytes of the model's weight matrices as held now (fc2 in one layout, or both with keepDenseFc2). */
  weightMatrixBytes(): number;
  /** Queues `steps` decode steps of token `token` (no logits), advancing the position, and times them. */
  timeDecodeSteps(steps: number, token?: number): Promise<DecodeTiming>;
  /** Queues `steps` decode steps like timeDecodeSteps, each dispatch timed on its own (needs timestamp-query). */
  profileDecodeSteps(steps: number, token?: number): Promise<DecodeProfile>;
  /** Plans built so far (a prompt length or decode form seen before replays its cached plan). */
  readonly planBuilds: number;
  /** Prompt plans kept at most, and their dispatches at most (least recently used dropped first). */
  planCacheMax: number;
  planCacheDispatches: number;
};

export interface WebGpuRunnerOptions extends GpuOptions {
  gpu?: Gpu;
  seed?: number;
  /** Largest bytes of one weight buffer (default: the adapter's binding limit); tests lower it to exercise row splits. */
  maxPartBytes?: number;
  /**
   * Pre-LN models: fold the LayerNorms before qkv and before dense layers' fc1 into those GEMVs in
   * decode plans (T = 1, no trace), two dispatches fewer a dense layer, and the final LayerNorm into
   * the head's first GEMV (one fewer a token). Default on (FOLD_LN_DEFAULT:
   * measured faster at d = 2048, 4096 and 5120); false keeps the separate LayerNorm dispatches.
   */
  foldLayerNorm?: boolean;
  /** Rows a thread in the dense GEMVs (wide rows), overriding the shape rule: for A/B measurements. */
  gemvRowsPerThread?: number;
  /**
   * The KV cache's element type: 'f32' (default: the CPU runner's attention inputs bit for bit, and
   * the faster on an H200) or 'f16' (packed two to a u32: half the cache's memory, as Hugging Face
   * keeps fp16 models; measured 1-2 µs slower a layer in attention, ~1.4 % of opt-6.7b's decode
   * step, docs/benchmarks.md).
   */
  kvCache?: 'f16' | 'f32';
  /**
   * Sparse heads: the qkv GEMV chooses the heads itself where it can (default true: one dispatch
   * fewer a layer; gemv.ts, HEADS); false keeps the head-select dispatch and a qkv GEMV over every
   * head (A/B runs, tests of that path).
   */
  headsInQkv?: boolean;
  /**
   * Sparse heads: out_proj read from a head-major copy made by setSparsity (true) or as stored
   * (default). The copy (d² halves a layer) made the step 0.4–0.9 % faster on an H200 (opt-6.7b
   * 3.314 → 3.300 GPU ms, opt-13b 5.405 → 5.376; bench/heads_ab.mjs): not worth its memory by default.
   */
  headOutMajor?: boolean;
  /**
   * The sparse MLP's block scoring and choice (predictor B, the block rule) run as extra workgroups of
   * the attention dispatch, where DejaVu's lookahead has u ready (attention.ts, `role`), and the
   * block-select dispatch computes the chosen rows' fc1 only (where the bindings allow). Default true.
   * Measured on an H200 (GPU ms a token): before fc2 moved into block-select (blockFc2) opt-1.3b −4 to
   * −5.5 %, opt-6.7b −1.3 % with sparse heads and −0.5 % without, opt-13b ±0 and +1.4 % (then on only
   * up to d = 4096); with it, opt-6.7b −1.6 / −3.5 % (mlp / dejavu), opt-13b −1.0 / −2.7 %, opt-30b
   * −0.3 / −0.2 %.
   */
  blockScoreInAttention?: boolean;
  /**
   * attn_io predictors (policy.ts) in decode with the lookahead: the o half of A rides the out_proj
   * GEMV (default true; gemv.ts, RIDE), else it is a GEMV of its own after attention (A/B runs).
   */
  attnIoRide?: boolean;
  /**
   * Decode attention in one dispatch (default true: the last split of each head combines; kernels/
   * attention.ts, "Fused form"); false keeps the split + combine pair (A/B runs).
   */
  fuseAttention?: boolean;
  /**
   * Keep fc2 in both layouts once a sparse policy has made the transposed one (true), or hold only
   * the layout the current policy reads (default false: a sparse model's memory is the dense model's
   * plus its predictors; switching between dense and sparse then transposes fc2 each time, a copy of
   * f·d halves a layer at copy speed).
   */
  keepDenseFc2?: boolean;
  /**
   * The block rule's decode steps: block-select also computes fc2 over its chosen rows, a partial
   * d-vector a block, and a small dispatch sums the partials into x (kernels/block-select.ts, FC2;
   * sparse-mlp.ts, fc2_sum), instead of the one-pass fc2 dispatch walking every chosen row again
   * (default true where fc2ᵀ is one part with rows padded to 8 halves; false: fc2_direct, A/B runs).
   */
  blockFc2?: boolean;
  /**
   * The block rule's predictor B stored as int8 with a scale a row where its scoring rides the
   * attention dispatch (the lookahead, predictors reading attn_in, blockScoreInAttention): half the
   * bytes of the scoring, which reads B whole for every token (default true; block-select.ts, I8).
   * Measured on an H200 (GPU ms a token, mlp / dejavu): opt-6.7b −0.9 / ±0 %, opt-13b −0.9 / −1.7 %,
   * opt-30b −0.9 / −1.4 %. Where block-select scores itself (predictors reading mlp_in) int8 measured
   * slower at opt-13b and 30b (the sparse block +3.4 / +2.9 %: unpacking and twice the loads of u in
   * a short dot), so B stays fp16 there, as for top-K (the GEMV reads it). false: fp16 everywhere
   * (A/B runs, tests that need the CPU's choices near ties).
   */
  predictorInt8?: boolean;
  /**
   * With blockFc2: the blocks' partials stored as f16 (default true; half the bytes block-select
   * writes and fc2_sum reads, each block's share of the MLP output rounded to f16 once) or f32 (false).
   */
  blockPartHalf?: boolean;
  /**
   * Block-select's 'fc1' phase issues its chosen rows' first loads before the LayerNorm's work (default
   * true: measured −0.5 to −1.3 % on an H200 before fc2 moved into the kernel, and with fc2 in it false
   * is +2 % at 6.7b, +0.6 % at 1.3b, +0.2 % at 30b); false loads them after it (A/B runs).
   */
  blockFc1EarlyLoads?: boolean;
  /**
   * Block-select with the MLP LayerNorm folded in (attn_io and mlp_in predictors): score and choose
   * before the LayerNorm's work on x, the chosen rows' first loads then going out before it (default
   * true); false: the LayerNorm first (A/B runs).
   */
  blockChoiceFirst?: boolean;
  /** out_proj over the chosen heads sums its rows with subgroupAdd where the adapter has subgroups (default true); false: the workgroup tree (A/B runs). */
  headOutSubgroups?: boolean;
  /** Largest bytes of one part of the token embedding / LM head matrix (A/B runs of the head's GEMV in several dispatches). */
  lmHeadPartBytes?: number;
  /** Decode attention works every split of its grid, the rule before attentionTargetSplits (A/B runs). */
  attentionGridSplits?: boolean;
  /** Decode steps whose attention sees more keys run the split + combine pair (default FUSED_ATTENTION_MAX_KEYS; A/B runs). */
  fusedAttentionMaxKeys?: number;
  /**
   * With folded LayerNorms: store qkv as W∘γ of the attention LayerNorm and fc1 as W∘γ of the MLP
   * LayerNorm (and the lookahead's matrices riding qkv alike), so decode's folded GEMVs skip γ's loads
   * and multiplies (gemv.ts, GAMMA IN W); unfolded products (prompts, traces, the gathered fc1) read
   * the LayerNorm without its affine part, with c2 = W·β + b as the bias. It rounds W∘γ to f16 once
   * more than W (~1e-4 of the logits on opt-gutenberg-5m). Default true; false: A/B runs, and tests
   * that need the CPU's choices near ties.
   */
  gammaInWeights?: boolean;
  /** The qkv decode GEMV's shape where rows ride along or sparse heads choose, rows a workgroup and threads a row (two rows a thread), over qkvRiderShape: A/B runs. */
  qkvGemvShape?: { rows: number; tpr: number };
}

/**
 * Decode steps whose attention sees more keys than this run the split + combine pair instead of the
 * fused form: on an H200 the fused form took ~1 µs less a layer at 128 positions, the same at 256,
 * and 0.8–4.6 µs more from 320 on at OPT-6.7B (bench --kernels --kernel-variants, docs/benchmarks.md). Both give the same bits, so
 * a step that runs the other form (a command buffer encoded ahead) is only slower, never wrong.
 */
export const FUSED_ATTENTION_MAX_KEYS = 256;

export async function createWebGpuRunner(config: OptConfig, weights: OptWeights | 'synthetic', opts: WebGpuRunnerOptions = {}): Promise<WebGpuRunner> {
  const owned = !opts.gpu;
  const gpu = opts.gpu ?? await openGpu(opts);
  try {
    if (opts.kvCache !== undefined && opts.kvCache !== 'f16' && opts.kvCache !== 'f32') fail(`kvCache must be 'f16' or 'f32', got ${String(opts.kvCache)}`);
    const r = new GpuRunner(config, gpu, owned, opts.maxPartBytes, opts.foldLayerNorm ?? FOLD_LN_DEFAULT, opts.gemvRowsPerThread, opts.kvCache === 'f16');
    r.headsInQkv = opts.headsInQkv ?? true;
    r.headOutMajor = opts.headOutMajor ?? false;
    r.blockScoreInAttention = opts.blockScoreInAttention ?? true;
    r.attnIoRide = opts.attnIoRide ?? true;
    r.keepDenseFc2 = opts.keepDenseFc2 ?? false;
    r.attentionGridSplits = opts.attentionGridSplits ?? false;
    r.fusedAttentionMaxKeys = opts.fusedAttentionMaxKeys ?? FUSED_ATTENTION_MAX_KEYS;
    r.fuseAttention = opts.fuseAttention ?? true;
    r.blockFc2 = opts.blockFc2 ?? true;
    r.blockPartHalf = opts.blockPartHalf ?? true;
    r.predictorInt8 = opts.predictorInt8 ?? true;
    r.setBlockFc1EarlyLoads(opts.blockFc1EarlyLoads ?? true);
    r.setBlockChoiceFirst(opts.blockChoiceFirst ?? true);
    r.setHeadOutSubgroups(opts.headOutSubgroups ?? true);
    r.gammaInWeights = opts.gammaInWeights ?? true;
    r.lmHeadPartBytes = opts.lmHeadPartBytes ?? Infinity;
    r.setQkvGemvShape(opts.qkvGemvShape ?? null);
    await r.load(weights, opts.seed ?? 1);
    return r;
  } catch (e) {
    if (owned) gpu.device.destroy();
    throw e;
  }
}

class GpuRunner implements WebGpuRunner {
  readonly backend = 'webgpu' as const;
  readonly description: string;
  private k: Kernels;
  private pos = 0;
  private layers: GpuLayer[] = [];
  private sparse: (LayerSparse | null)[] = [];
  /** Sparse heads per layer, and their shared scratch: the head scores (H), the chosen heads (k). */
  private heads: (HeadSparse | null)[] = [];
  private hl: GPUBuffer | null = null;
  /** (ceil(f / 64)) u32: each block's chosen count, from attention's scoring role to block-select's fc1 phase (blockScoreInAttention). */
  private bcnt: GPUBuffer | null = null;
  /**
   * Per layer l, where layer l + 1's head scores ride layer l's qkv GEMV (gemv.ts, HNEXT): that GEMV's
   * LayerNorm constants over qkv's 3d rows, the lookahead MLP predictor's r (if it rides too) and the
   * H head rows (c1 of each, then c2 of each); null where the scores get a dispatch of their own.
   */
  private qkvNextC: (GPUBuffer | null)[] = [];
  private policy: SparsityPolicy | null = null;
  private plans = new Map<string, Plan>();
  private buffers: GPUBuffer[] = [];
  private matrices: GpuMatrix[] = [];
  private sparseBufs: GPUBuffer[] = [];
  // Embedding / head weights
  private embed!: GpuMatrix; private positions!: GpuMatrix;   // (V, e) also the tied lm_head; (maxPos + 2, d)
  private lmHead!: GpuMatrix;
  private projectIn: GpuMatrix | null = null; private projectOut: GpuMatrix | null = null; // (d, e), (e, d)
  private finalLnW: GPUBuffer | null = null; private finalLnB: GPUBuffer | null = null;
  /**
   * Decode's head with folded LayerNorms (load): the final LayerNorm folded into the head's first
   * GEMV (project_out, or the lm_head, often the tied embedding, whose rows cannot take γ: the γ-side
   * form, gemv.ts LN), c1 | c2 of that matrix; one dispatch fewer a decoded token.
   */
  private headFold: GPUBuffer | null = null;
  /** The greedy head's (key, row) pairs, one a workgroup of the lm_head GEMV (gemv.ts, AMAX: amaxSlots of them), which argmax's pairs form reduces. */
  private amaxPairs!: GPUBuffer;
  private amaxSlots = 0;
  // Activations, TCAP rows each
  private step: GPUBuffer;                                  // u32 [pos, ids...]
  private x: GPUBuffer; private hA: GPUBuffer; private hM: GPUBuffer; // (T, d)
  /** (T, d): the attention LayerNorm without γ and β, qkv's input unfolded when qkv holds W∘γ (GpuLayer.qkvC2). */
  private hX: GPUBuffer;
  /** (T, d): the MLP LayerNorm without γ and β, fc1's input unfolded when fc1 holds W∘γ (GpuLayer.fc1C2) and mlp_in has other readers. */
  private hXM: GPUBuffer;
  private qkv: GPUBuffer; private ao: GPUBuffer; private hn: GPUBuffer; // (T, 3d), (T, d), (T, H)
  private act: GPUBuffer;                                   // (T, f)
  private tmpE: GPUBuffer; private hF: GPUBuffer;           // (T, max(e, d)), (T, d)
  private logits: GPUBuffer;                                // (T, V)
  private stage: GPUBuffer | null = null;
  /** forwardStats' device state (statsState), and the rows of the reference its last `keep` left (null: none). */
  private stats: StatsBuffers | null = null;
  private statsRefRows: number | null = null;
  // decodeGreedy: the argmax kernel writes tokens[q] = the id the token at position q produced; each
  // queued step copies its one id into a slot of a ring of small mappable buffers.
  private tokens: GPUBuffer;                                // (maxPositions) u32
  /** The 'sample' head's draw parameters: [1 / temperature as f32 bits, seed] (kernels/argmax.ts SAMPLE). */
  private samp: GPUBuffer;
  /** The 'sample' head's top-k (0: the whole vocabulary), read when its plans are built (their key holds it), and the k ids it draws among. */
  private sampleTopK = 0;
  private sampleSel: GPUBuffer;
  private idStage: GPUBuffer[] = [];                        // CHAIN_WINDOW x one u32
  private chaining = false;
  /** Maps of steps an earlier decodeGreedy queued past its stop; the next one waits for them. */
  private chainTail: Promise<unknown> = Promise.resolve();
  // Sparse MLP scratch (allocated by setSparsity)
  private scores: GPUBuffer | null = null; private u: GPUBuffer | null = null;
  private sel: GPUBuffer | null = null; private hsel: GPUBuffer | null = null; private partial: GPUBuffer | null = null;
  /** Block rule: neurons chosen per layer (a u32 every `chosenStride` bytes: binding offsets are aligned). */
  private chosen: GPUBuffer | null = null; private zeroB1: GPUBuffer | null = null;
  private get chosenStride(): number { return Math.max(4, this.gpu.limits.minStorageBufferOffsetAlignment); }
  /** Tokens the sparse layers have run since resetMlpDensity (decode steps queued past a stop included). */
  private mlpTokens = 0;
  private partialFloats = 0;
  private querySet: GPUQuerySet | null = null;

  private readonly foldLn: boolean;
  /** WebGpuRunnerOptions.gammaInWeights, read by load (only with foldLn). */
  gammaInWeights = true;
  /** WebGpuRunnerOptions.lmHeadPartBytes, read by load. */
  lmHeadPartBytes = Infinity;
  /** The LayerNorm's identity affine (ones, zeros; d floats each) for x̂ = LN(x) without γ and β: set by load with γ in the weights. */
  private lnId: { ones: GPUBuffer; zeros: GPUBuffer } | null = null;
  headsInQkv = true;
  headOutMajor = false;
  blockScoreInAttention = true;   // set by createWebGpuRunner
  attnIoRide = true;   // set by createWebGpuRunner
  blockFc2 = true;
  /** WebGpuRunnerOptions.predictorInt8; read by setSparsity. */
  predictorInt8 = true;
  /** WebGpuRunnerOptions.qkvGemvShape (the kernels hold the choice). */
  setQkvGemvShape(s: { rows: number; tpr: number } | null): void { this.k.qkvShape = s; }
  /** WebGpuRunnerOptions.blockFc1EarlyLoads (the kernels hold the choice). */
  setBlockFc1EarlyLoads(on: boolean): void { this.k.blockFc1EarlyLoads = on; }
  /** WebGpuRunnerOptions.blockChoiceFirst (the kernels hold the choice). */
  setBlockChoiceFirst(on: boolean): void { this.k.blockChoiceFirst = on; }
  /** WebGpuRunnerOptions.headOutSubgroups (the kernels hold the choice). */
  setHeadOutSubgroups(on: boolean): void { this.k.headOutSubgroups = on; }
  /** The blocks' fc2 partials of one token (blockFc2; (ceil(f / 64), fc2ᵀ's padded width) f16 or f32), or null. */
  private fc2Part: GPUBuffer | null = null;
  keepDenseFc2 = false;
  fusedAttentionMaxKeys = FUSED_ATTENTION_MAX_KEYS;
  /** WebGpuRunnerOptions.blockPartHalf; read when the partial buffer is sized and plans are built. */
  set blockPartHalf(v: boolean) { this.k.blockPartHalf = v; }
  /** WebGpuRunnerOptions.fuseAttention; read when plans are built. */
  set fuseAttention(v: boolean) { this.k.fuseAttention = v; }
  /** WebGpuRunnerOptions.attentionGridSplits; read when plans are built. */
  set attentionGridSplits(v: boolean) { this.k.attentionGridSplits = v; }

  constructor(readonly config: OptConfig, readonly gpu: Gpu, private ownsDevice: boolean, maxPartBytes?: number, foldLn = true, gemvRpt?: number, kvHalf = false) {
    this.foldLn = foldLn && config.preLayerNorm;
    this.k = new Kernels(gpu, maxPartBytes, kvHalf);
    if (gemvRpt) this.k.gemvRowsPerThread = gemvRpt;
    this.description = `webgpu: ${gpu.adapterName} (f16 weights${gpu.f16 ? '' : ' as packed u32'}, ${this.k.kvHalf ? 'f16' : 'f32'} KV cache, ${gpu.subgroups ? 'subgroups' : 'workgroup-memory reductions'})`;
    const c = config, d = c.hidden, T = Math.min(TCAP, c.maxPositions);
    const buf = (floats: number, label: string) => { const b = this.k.buffer(floats * 4, label); this.buffers.push(b); return b; };
    this.step = buf(1 + T, 'step');
    this.x = buf(T * d, 'x'); this.hA = buf(T * d, 'attn_in'); this.hM = buf(T * d, 'mlp_in'); this.hX = buf(T * d, 'attn_in_hat'); this.hXM = buf(T * d, 'mlp_in_hat');
    this.qkv = buf(T * 3 * d, 'qkv'); this.ao = buf(T * d, 'attn_out'); this.hn = buf(T * c.heads, 'head_norm');
    this.act = buf(T * c.ffn, 'fc1_act');
    this.tmpE = buf(T * Math.max(d, c.wordEmbedProjDim), 'tmp_e'); this.hF = buf(T * d, 'final_ln');
    this.logits = buf(T * c.vocabSize, 'logits');
    this.tokens = buf(c.maxPositions, 'tokens');
    this.samp = buf(2, 'sampling');
    this.sampleSel = buf(MAX_DEVICE_TOPK, 'sampling top-k ids');
    for (let i = 0; i < CHAIN_WINDOW; i++) this.idStage.push(gpu.device.createBuffer({ label: `greedy id ${i}`, size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }));
  }

  get position(): number { return this.pos; }
  get pipelineKeys(): string[] { return this.k.pipelineKeys; }
  get dispatchesPerToken(): number { return this.plan(1, 'last', false).dispatches; }
  dispatchesFor(T: number, trace = false): number { return this.plan(T, 'last', trace).dispatches; }
  reset(): void {
    // A running chain owns the position and the step buffer until its last id lands.
    if (this.chaining) fail('reset called while decodeGreedy runs');
    this.pos = 0;
  }

  private mat(rows: number, cols: number, label: string, maxBytes?: number): GpuMatrix {
    const m = this.k.matrix(rows, cols, label, maxBytes);
    this.matrices.push(m);
    return m;
  }
  /** A KV cache of n elements, f16 or f32 (Kernels.kvHalf). */
  private kvCache(n: number, label: string): GPUBuffer {
    const b = this.k.buffer(this.k.kvBytes(n), label);
    this.buffers.push(b);
    return b;
  }

  private vec(n: number, label: string): GPUBuffer {
    const b = this.k.buffer(n * 4, label);
    this.buffers.push(b);
    return b;
  }

  async load(w: OptWeights | 'synthetic', seed: number): Promise<void> {
    const c = this.config, d = c.hidden, f = c.ffn, e = c.wordEmbedProjDim, V = c.vocabSize;
    const synth = w === 'synthetic';
    const own: GPUBuffer[] = [];
    let fills: Dispatch[] = [];
    let nextSeed = seed * 1000003;
    // One place decides how each tensor gets its values: uploaded from the checkpoint, or hash noise on the GPU.
    // `fill` gives a made matrix its values; M makes one with the usual part size and fills it.
    const fill = (m: GpuMatrix, ts: (Tensor | undefined)[]): GpuMatrix => {
      const { rows, cols } = m;
      if (synth) fills.push(...this.k.fillMatrix(m, nextSeed++, 0.02, own));
      else {
        const bits = ts.map((t) => toF16Bits(t!));
        if (bits.length === 1) this.k.upload(m, bits[0]);
        else { const all = new Uint16Array(rows * cols); let o = 0; for (const b of bits) { all.set(b, o); o += b.length; } this.k.upload(m, all); }
      }
      return m;
    };
    const M = (rows: number, cols: number, label: string, ...ts: (Tensor | undefined)[]): GpuMatrix => fill(this.mat(rows, cols, label), ts);
    const Vf = (n: number, label: string, value: number, std: number, ...ts: (Tensor | null | undefined)[]): GPUBuffer => {
      const b = this.vec(n, label);
      if (synth) fills.push(this.k.fillVector(b, n, nextSeed++, std, value, own));
      else { const all = new Float32Array(n); let o = 0; for (const t of ts) { const a = toF32(t!); all.set(a, o); o += a.length; } this.k.device.queue.writeBuffer(b, 0, all); }
      return b;
    };
    const W = synth ? null : w;
    const bias = c.enableBias;
    // The token table is the LM head too where tied: both capped at lmHeadPartBytes a part.
    this.embed = fill(this.mat(V, e, 'embed_tokens', this.lmHeadPartBytes), [W?.embedTokens]);
    this.positions = M(c.maxPositions + OPT_POSITION_OFFSET, d, 'embed_positions', W?.embedPositions);
    if (this.positions.parts.length > 1) fail('the position table is larger than one GPU buffer');
    this.lmHead = synth || W!.lmHead === W!.embedTokens ? this.embed : fill(this.mat(V, e, 'lm_head', this.lmHeadPartBytes), [W!.lmHead]);
    if (e !== d) { this.projectIn = M(d, e, 'project_in', W?.projectIn!); this.projectOut = M(e, d, 'project_out', W?.projectOut!); }
    if (c.finalLayerNorm) { this.finalLnW = Vf(d, 'final_ln.w', 1, 0, W?.finalLnW); this.finalLnB = Vf(d, 'final_ln.b', 0, 0, W?.finalLnB); }
    for (let l = 0; l < c.layers; l++) {
      const L = W?.layers[l];
      this.layers.push({
        attnLnW: Vf(d, `${l}.attn_ln.w`, 1, 0, L?.attnLnW), attnLnB: Vf(d, `${l}.attn_ln.b`, 0, 0, L?.attnLnB),
        qkv: M(3 * d, d, `${l}.qkv`, L?.qW, L?.kW, L?.vW),
        qkvB: bias ? Vf(3 * d, `${l}.qkv.b`, 0, 0.01, L?.qB, L?.kB, L?.vB) : null,
        o: M(d, d, `${l}.out_proj`, L?.oW), oB: bias ? Vf(d, `${l}.out_proj.b`, 0, 0.01, L?.oB) : null,
        mlpLnW: Vf(d, `${l}.mlp_ln.w`, 1, 0, L?.mlpLnW), mlpLnB: Vf(d, `${l}.mlp_ln.b`, 0, 0, L?.mlpLnB),
        fc1: M(f, d, `${l}.fc1`, L?.fc1W), fc1B: bias ? Vf(f, `${l}.fc1.b`, 0, 0.01, L?.fc1B) : null,
        fc2: M(d, f, `${l}.fc2`, L?.fc2W), fc2B: bias ? Vf(d, `${l}.fc2.b`, 0, 0.01, L?.fc2B) : null,
        fc2T: null,
        k: this.kvCache(c.maxPositions * d, `${l}.k_cache`), v: this.kvCache(c.maxPositions * d, `${l}.v_cache`),
        qkvFold: null, fc1Fold: null, qkvC2: null, fc1C2: null,
      });
      // Submit fills layer by layer: bounded command buffers for 13b-size models.
      if (fills.length > 64) { await runNow(this.k, fills, own); fills = []; }
    }
    await runNow(this.k, fills, own);
    if (this.foldLn) {
      // c1 = W·γ, c2 = W·β + b for the GEMVs that fold the LayerNorm in, from the weights on the GPU.
      // With γ in the weights (qkv, fc1): c2 from W, then W ← W∘γ, c1 = (W∘γ)·1, and c2 alone for prompts.
      const gw = this.gammaInWeights;
      if (gw) {
        const ones = this.vec(d, 'ln_ones'), zeros = this.vec(d, 'ln_zeros');
        this.k.device.queue.writeBuffer(ones, 0, new Float32Array(d).fill(1));
        this.lnId = { ones, zeros };
      }
      let ds: Dispatch[] = [];
      const copies: [GPUBuffer, number, GPUBuffer, number, number][] = [];
      const vb = (bytes: number, label: string) => this.vec(bytes / 4, label);
      for (const [l, L] of this.layers.entries()) {
        L.qkvFold = { c: this.vec(2 * 3 * d, `${l}.qkv.ln_c`) };
        L.fc1Fold = { c: this.vec(2 * f, `${l}.fc1.ln_c`) };
        const fold = { gw, alloc: vb, ds, copies, own };   // (ds is a new list after each runNow below)
        L.qkvC2 = this.foldInto({ W: L.qkv, gamma: L.attnLnW, beta: L.attnLnB, bias: L.qkvB, c: L.qkvFold.c }, `${l}.qkv`, fold);
        L.fc1C2 = this.foldInto({ W: L.fc1, gamma: L.mlpLnW, beta: L.mlpLnB, bias: L.fc1B, c: L.fc1Fold.c }, `${l}.fc1`, fold);
        if (ds.length > 64) { await runNow(this.k, ds, own); ds = []; }
      }
      await runNow(this.k, ds, own);
      if (copies.length) {
        const enc = this.k.device.createCommandEncoder();
        for (const cp of copies) enc.copyBufferToBuffer(...cp);
        this.k.device.queue.submit([enc.finish()]);
      }
    }
    if (this.foldLn && this.finalLnW) {
      const H0 = this.projectOut ?? this.lmHead;
      this.headFold = this.vec(2 * H0.rows, 'final_ln.ln_c');
      await runNow(this.k, this.k.foldLayerNorm({ W: H0, gamma: this.finalLnW, beta: this.finalLnB!, bias: null, c: this.headFold }, own), own);
    }
    this.amaxSlots = this.k.amaxSlots(this.lmHead);
    this.amaxPairs = this.vec(2 * this.amaxSlots, 'lm_head.amax');
    this.plan(1, 'last', false); // the decode plan, built at load
  }

  /**
   * The sparse state of the last policy, kept aside while the runner runs dense: setting the same
   * policy object again (eval --compare switches every window) reuses its uploaded predictors and
   * scratch instead of building them again. Another policy frees it.
   */
  private parked: SparseState | null = null;
  /** How many times setSparsity built a sparse state (uploads, LayerNorm folds): tests check the reuse. */
  sparseBuilds = 0;
  /** How many plans were built (a cached plan is replayed): tests check the cache. */
  planBuilds = 0;
  /** Prompt plans kept at most, and their dispatches at most (evictPlans; tests lower them). */
  planCacheMax = PLAN_CACHE_MAX;
  planCacheDispatches = PLAN_CACHE_DISPATCHES;

  private takeSparse(): SparseState | null {
    if (!this.policy) return null;
    const s: SparseState = { policy: this.policy, sparse: this.sparse, heads: this.heads, bufs: this.sparseBufs, scores: this.scores, u: this.u, sel: this.sel,
      hsel: this.hsel, partial: this.partial, partialFloats: this.partialFloats, chosen: this.chosen, zeroB1: this.zeroB1, hl: this.hl, qkvNextC: this.qkvNextC, bcnt: this.bcnt, fc2Part: this.fc2Part };
    this.policy = null; this.sparse = []; this.heads = []; this.sparseBufs = []; this.partialFloats = 0;
    this.scores = this.u = this.sel = this.hsel = this.partial = this.chosen = this.zeroB1 = this.hl = this.bcnt = this.fc2Part = null;
    this.qkvNextC = [];
    return s;
  }

  private putSparse(s: SparseState): void {
    ({ policy: this.policy, sparse: this.sparse, heads: this.heads, bufs: this.sparseBufs, scores: this.scores, u: this.u, sel: this.sel,
      hsel: this.hsel, partial: this.partial, partialFloats: this.partialFloats, chosen: this.chosen, zeroB1: this.zeroB1, hl: this.hl, qkvNextC: this.qkvNextC, bcnt: this.bcnt, fc2Part: this.fc2Part } = s);
  }

  setSparsity(policy: SparsityPolicy | null): void {
    if (this.chaining) fail('setSparsity called while decodeGreedy runs'); // it would drop the plan the chain replays
    const c = this.config, d = c.hidden, f = c.ffn;
    if (policy && policy.mlp.length !== c.layers) fail(`sparsity policy has ${policy.mlp.length} layers, the model has ${c.layers}`);
    // Checked before anything changes: a policy refused half-way would leave fc2ᵀ allocated but
    // never transposed (the transposes are submitted at the end), and later policies would use it.
    policy?.mlp.forEach((lp, l) => {
      if (!lp) return;
      const s = lp.selector, block = s.kind === 'predictor' ? s.block : undefined;
      if (block && !(Number.isInteger(block.cap) && block.cap >= 1 && block.cap <= BLOCK_SIZE)) fail(`layer ${l}: block cap ${block.cap} must be between 1 and ${BLOCK_SIZE}`);
      const k = layerK(lp, f);
      if (!block && !(Number.isInteger(k) && k >= 1 && k <= f)) fail(`layer ${l}: k = ${k} must be between 1 and ${f}`);
    });
    if (policy) {
      checkMlpPredictors(policy, d, f);
      checkHeadsPolicy(policy, c.layers, c.heads, d);
      if (policy.heads?.some((hp) => hp?.selector.kind === 'oracle')) fail('oracle head selection runs on the CPU backend only (it computes every head first)');
      if (policy.heads?.some((hp) => hp?.kvWindow !== undefined && hp.kvWindow > 2)) fail('on WebGPU a heads K/V completion window (kvWindow) must be 1 or 2 (the CPU backend takes any, a quality experiment)');
      if (policy.heads?.some((hp) => hp) && !(attentionSplitShape(c.headDim) && Kernels.headOutFits(this.layers[0].o, c.headDim) && c.heads <= 256)) {
        fail(`sparse heads on WebGPU need a head dim that is a multiple of 8 (this model's is ${c.headDim}) and at most 256 heads`);
      }
      policy.heads?.forEach((hp, l) => {
        if (hp && headKvMode(hp) === 'lazy' && !(this.headsInQkv && this.k.headsFit(this.layers[l].qkv, c.headDim, c.heads, undefined, undefined, true))) {
          fail(`lazy K/V completion (kv chosen, window 2) on WebGPU needs the qkv GEMV to choose the heads: a width that is a multiple of 8, a head dim that is a multiple of 16 and 13 storage buffers a shader stage (layer ${l})`);
        }
      });
    }
    if (policy && policy === this.policy) { this.ownThresholds(); this.resetMlpDensity(); this.clearSkips(); return; }
    this.completeHoles(); // the lazy heads' state is about to go: fill what the next step owed
    this.dropPlans();
    const cur = this.takeSparse();
    this.mlpTokens = 0;
    const free = (s: SparseState | null) => s?.bufs.forEach((b) => b.destroy());
    if (!policy) { // park the current state; an older parked one goes
      if (cur) { free(this.parked); this.parked = cur; }
      this.layoutFc2();
      return;
    }
    if (this.parked?.policy === policy) { // back to the parked policy: reuse it
      free(cur);
      this.putSparse(this.parked);
      this.parked = null;
      this.ownThresholds();
      this.layoutFc2();
      this.resetMlpDensity();
      this.clearSkips();
      return;
    }
    free(cur); free(this.parked); this.parked = null;
    this.sparseBuilds++;
    this.policy = policy;
    // fc2 in the layouts this policy reads, before anything below reads fc2T (same queue, submitted first).
    this.layoutFc2();
    const own: GPUBuffer[] = [];
    const ds: Dispatch[] = [];
    const copies: [GPUBuffer, number, GPUBuffer, number, number][] = [];   // after ds: (src, offset, dst, offset, bytes)
    const sb = (bytes: number, label: string) => { const b = this.k.buffer(bytes, label); this.sparseBufs.push(b); return b; };
    let rMax = 1, kMax = 1;
    this.sparse = policy.mlp.map((lp, l) => {
      if (!lp) return null;
      const L = this.layers[l];
      const s = lp.selector;
      const block = s.kind === 'predictor' ? s.block : undefined;
      const k = layerK(lp, f);
      kMax = Math.max(kMax, k);
      const out: LayerSparse = { lp, k, block };
      if (s.kind === 'fixed') {
        out.fixed = sb(k * 4, `${l}.fixed_sel`);
        this.k.device.queue.writeBuffer(out.fixed, 0, unshared(s.indices));
      } else if (s.kind === 'predictor') {
        const p = s.predictor, r = p.rank;
        rMax = Math.max(rMax, r);
        // B as int8 where the block rule scores beside attention (DejaVu's lookahead; predictorInt8), else fp16.
        const i8 = !!block && this.predictorInt8 && policy.input === 'attn_in' && this.blockScoreInAttention;
        const A = this.k.matrix(r, d, `${l}.pred.A`), B = i8 ? this.k.matrixI8(f, r, `${l}.pred.B`) : this.k.matrix(f, r, `${l}.pred.B`);
        // attn_io: A (r, 2d) holds the attn_in half, then the o half, side by side in each row.
        const io = policy.input === 'attn_io', Ao = io ? this.k.matrix(r, d, `${l}.pred.Ao`) : null;
        this.k.upload(A, floatsToHalves(io ? columns(p.A, r, 2 * d, 0, d) : p.A));
        if (Ao) this.k.upload(Ao, floatsToHalves(columns(p.A, r, 2 * d, d, d)));
        if (i8) this.k.uploadI8(B, p.B); else this.k.upload(B, floatsToHalves(p.B));
        for (const m of [A, B, ...(Ao ? [Ao] : [])]) this.sparseBufs.push(...m.parts.map((q) => q.buffer));
        const bias = sb(f * 4, `${l}.pred.bias`);
        this.k.device.queue.writeBuffer(bias, 0, unshared(p.bias));
        out.pred = { A, B, bias, rank: r, fold: null, c2: null, ...(Ao ? { Ao } : {}) };
        if (this.foldLn) {
          // c1 = A·γ, c2 = A·β of the LayerNorm in front of the predictor's input, for the folded decode GEMV.
          const L = this.layers[l], attn = readsAttnIn(policy.input);
          out.pred.fold = sb(2 * r * 4, `${l}.pred.A.ln_c`);
          const hp = policy.heads?.[l];
          const fuse = attn && this.k.canFusePredictor(L.qkv, A, hp && headKvMode(hp) === 'lazy' ? lazyShape(undefined, this.k.gemvRowsPerThread) : undefined);
          // Riding a qkv GEMV over W∘γ, A is stored as A∘γ too (one x side; gemv.ts, GAMMA IN W).
          out.pred.c2 = this.foldInto({ W: A, gamma: attn ? L.attnLnW : L.mlpLnW, beta: attn ? L.attnLnB : L.mlpLnB, bias: null, c: out.pred.fold },
            `${l}.pred.A`, { gw: fuse && !!L.qkvC2, alloc: sb, ds, copies, own });
          if (fuse) out.look = { c: null };   // its constants once buildQkvNext has said where they are needed
        }
      }
      return out;
    });
    this.buildHeads(policy, sb, ds, own);
    this.buildQkvNext(sb, ds, copies, own);
    // The lookahead's constants (qkv's c1, A's c1, qkv's c2, A's c2; copied after the folds run), for the
    // layers whose qkv GEMV does not carry the next layer's head rows (those have qkvNextC).
    this.sparse.forEach((S, l) => {
      if (S?.look && !this.qkvNextC[l]) S.look.c = joinFolds([[this.layers[l].qkvFold!.c, 3 * d], [S.pred!.fold!, S.pred!.rank]], `${l}.qkv+A.ln_c`, sb, copies);
    });
    const T = Math.min(TCAP, c.maxPositions);
    this.scores = sb(T * f * 4, 'scores'); this.u = sb(T * rMax * 4, 'pred_u');
    this.sel = sb(T * kMax * 4, 'sel'); this.hsel = sb(T * kMax * 4, 'h_sel');
    this.bcnt = sb(Math.ceil(f / BLOCK_SIZE) * 4, 'block counts');
    // Neurons the block rule chose, a u32 a layer, summed over tokens since resetMlpDensity.
    this.chosen = sb(c.layers * this.chosenStride, 'chosen_count');
    // The fused kernel binds fc1's bias; a model without one gets zeros.
    this.zeroB1 = this.layers.some((L) => !L.fc1B) ? sb(f * 4, 'zero_b1') : null;
    this.resetMlpDensity();
    // Partial sums only where sparse fc2 can't run in one pass (d not a multiple of 8: no OPT width).
    const fc2T = this.layers.find((L) => L.fc2T)?.fc2T;
    if (fc2T && !fc2OnePass(fc2T)) {
      this.partialFloats = Math.min(PARTIAL_BUDGET, T * FC2_MAX_SLICES * ceil4(d) * 2);
      this.partial = sb(this.partialFloats * 4, 'fc2_partial');
    } else { this.partial = null; this.partialFloats = 0; }
    // The blocks' fc2 partials of a decode step (blockFc2), where some block-rule layer can use them.
    const blockT = this.layers.find((L, l) => L.fc2T && this.sparse[l]?.block && this.k.blockFc2Fits(L.fc2T))?.fc2T;
    this.fc2Part = this.blockFc2 && blockT ? sb(this.k.blockFc2PartBytes(blockT, 1), 'fc2_block_part') : null;
    // The transposes run before anything that reads fc2T: same queue, submitted now.
    const enc = this.k.device.createCommandEncoder();
    this.k.encode(enc, ds.map((x) => ({ d: x })));
    for (const cp of copies) enc.copyBufferToBuffer(...cp);
    this.k.device.queue.submit([enc.finish()]);
    this.k.device.queue.onSubmittedWorkDone().then(() => own.forEach((b) => b.destroy()));
  }

  /**
   * Puts each layer's fc2 in the layout the current policy reads (LayerGpu.fc2). Unless keepDenseFc2,
   * a layer switches in place: transposed into one scratch buffer, then copied back over its own
   * buffer (both layouts hold the same bytes when f and d are multiples of 4 and the matrix is one
   * part, as at every OPT width up to 30B's), so the switch needs one layer's fc2 of extra memory,
   * not the model's. Otherwise the missing layout is allocated and the other freed once the GPU is
   * past the transposes. A parked policy keeps nothing: returning to it transposes again.
   */
  private layoutFc2(): void {
    const c = this.config, d = c.hidden, f = c.ffn, own: GPUBuffer[] = [], unused: GpuMatrix[] = [];
    const enc = this.k.device.createCommandEncoder();
    let scratch: GPUBuffer | null = null, work = false;
    const bytes = (m: GpuMatrix) => m.rows * m.colsP * 2;
    this.layers.forEach((L, l) => {
      const sparse = !!this.policy?.mlp[l];
      const src = sparse ? (L.fc2T ? null : L.fc2!) : (L.fc2 ? null : L.fc2T!);
      if (src) {
        const [rows, cols] = sparse ? [f, d] : [d, f];
        const colsP = ceil4(cols);
        work = true;
        if (!this.keepDenseFc2 && src.parts.length === 1 && rows * colsP * 2 === bytes(src) && this.k.maxPartBytes >= bytes(src)) {
          // In place: src's buffer ends up holding the other layout.
          scratch ??= this.k.buffer(Math.max(...this.layers.map((M) => bytes((M.fc2 ?? M.fc2T)!))), 'fc2 transpose scratch');
          const dst: GpuMatrix = { rows, cols, colsP, parts: [{ buffer: scratch, row0: 0, rows }] };
          this.k.encode(enc, this.k.transpose(src, dst, own).map((x) => ({ d: x })));
          enc.copyBufferToBuffer(scratch, 0, src.parts[0].buffer, 0, bytes(src));
          const moved: GpuMatrix = { ...dst, parts: [{ buffer: src.parts[0].buffer, row0: 0, rows }] };
          this.matrices[this.matrices.indexOf(src)] = moved;
          if (sparse) { L.fc2T = moved; L.fc2 = null; } else { L.fc2 = moved; L.fc2T = null; }
          return;
        }
        const dst = this.mat(rows, cols, `${l}.fc2${sparse ? 'T' : ''}`);
        this.k.encode(enc, this.k.transpose(src, dst, own).map((x) => ({ d: x })));
        if (sparse) L.fc2T = dst; else L.fc2 = dst;
      }
      if (this.keepDenseFc2) return;
      if (sparse && L.fc2) { unused.push(L.fc2); L.fc2 = null; }
      if (!sparse && L.fc2T) { unused.push(L.fc2T); L.fc2T = null; }
    });
    if (!work && !unused.length) return;
    this.k.device.queue.submit([enc.finish()]);
    this.matrices = this.matrices.filter((m) => !unused.includes(m));
    const done = [...own, ...(scratch ? [scratch] : []), ...unused.flatMap((m) => m.parts.map((p) => p.buffer))];
    this.k.device.queue.onSubmittedWorkDone().then(() => done.forEach((b) => b.destroy()));
  }

  /** setSparsity's part for sparse heads: each layer's head-select inputs, its skip record, the shared scratch. */
  private buildHeads(policy: SparsityPolicy, sb: (bytes: number, label: string) => GPUBuffer, ds: Dispatch[], own: GPUBuffer[]): void {
    const c = this.config, d = c.hidden, H = c.heads;
    const collapsed = new Map<object, Uint16Array>();
    this.heads = (policy.heads ?? new Array<null>(c.layers).fill(null)).map((hp, l) => {
      if (!hp) return null;
      const L = this.layers[l], s = hp.selector, k = headK(hp);
      const skip = sb(c.maxPositions * H * 4, `${l}.head_skip`);
      const bias = sb(H * 4, `${l}.head_pred.bias`);
      // kvWindow 1 completes every position at once: kv 'all'. 2 is the lazy form (gemv.ts, LAZY).
      const lazy = headKvMode(hp) === 'lazy';
      const prev = headReadsPrev(policy, l) && s.kind === 'predictor';
      const out: HeadSparse = { k, kvAll: !headKvChosen(hp) || hp.kvWindow === 1, W: null, fold: null, c2: null, bias, uh: sb(H * 4, `${l}.head_scores`), prev, skip, qkvMask: false, major: null,
        lazy: lazy ? { holes: sb(H * 4, `${l}.head_holes`), xPrev: sb((d + 4) * 4, `${l}.head_x_prev`) } : null };
      const major = this.headOutMajor ? this.k.headMajor(L.o, c.headDim, own) : null;
      if (major) { out.major = major.buffer; this.sparseBufs.push(major.buffer); ds.push(...major.ds); }
      if (s.kind === 'fixed') {
        const flags = new Float32Array(H);
        for (const h of s.heads) flags[h] = 1;
        this.k.device.queue.writeBuffer(bias, 0, flags);
      } else if (s.kind === 'predictor') {
        const p = s.predictor;
        out.W = this.k.matrix(H, d, `${l}.head_pred.BA`);
        // Synthetic policies share one predictor across layers: multiply it once.
        let bits = collapsed.get(p);
        if (!bits) collapsed.set(p, bits = floatsToHalves(headScoreMatrix(p, H, d)));
        this.k.upload(out.W, bits);
        this.sparseBufs.push(...out.W.parts.map((q) => q.buffer));
        this.k.device.queue.writeBuffer(bias, 0, unshared(p.bias));
        if (this.foldLn) {
          // The lookahead's W reads the layer before's attention input: that layer's LayerNorm.
          const LN = prev ? this.layers[l - 1] : L;
          out.fold = sb(2 * H * 4, `${l}.head_pred.ln_c`);
          ds.push(...this.k.foldLayerNorm({ W: out.W, gamma: LN.attnLnW, beta: LN.attnLnB, bias, c: out.fold }, own));
        }
      }
      const S = this.sparse[l];
      out.qkvMask = this.headsInQkv && this.k.headsFit(L.qkv, c.headDim, H, S?.look ? S.pred!.A : undefined, undefined, lazy);
      if (lazy && !out.qkvMask) throw new Error(`layer ${l}: lazy K/V completion passed setSparsity's check but the qkv GEMV cannot choose the heads`);
      return out;
    });
    if (this.heads.some((h) => h)) {
      const kMax = Math.max(...this.heads.map((h) => h?.k ?? 1));
      this.hl = sb(kMax * 4, 'head_list');
    }
  }

  /**
   * The head lookahead's seat in the qkv GEMV (gemv.ts, HNEXT): for each layer l whose next layer's
   * head predictor reads layer l's input, with folded LayerNorms, and where the GEMV has the rows and
   * bindings for it, the constants of qkv, A (when the MLP lookahead rides too) and the next layer's
   * head rows, copied together after the folds run.
   */
  private buildQkvNext(sb: (bytes: number, label: string) => GPUBuffer, ds: Dispatch[], copies: [GPUBuffer, number, GPUBuffer, number, number][], own: GPUBuffer[]): void {
    const d = this.config.hidden;
    this.qkvNextC = this.layers.map((L, l) => {
      const HN = this.heads[l + 1], HS = this.heads[l], S = this.sparse[l];
      if (!this.foldLn || !HN?.prev || !HN.W || !HN.fold) return null;
      const A = S?.look ? S.pred!.A : undefined;
      if (!this.k.canFuseHeadsNext(L.qkv, HN.W, A, undefined, !HS ? 'none' : HS.lazy ? 'lazy' : HS.qkvMask ? 'heads' : 'none')) return null;
      if (L.qkvC2) {
        // Riding a qkv GEMV over W∘γ: the head predictor is stored as W∘γ too (gemv.ts, GAMMA IN W):
        // its c2 (buildHeads, from W as it was) stays; c1 again from the scaled rows; c2 alone for traces.
        const H = HN.W.rows;
        ds.push(...this.k.scaleColumns(HN.W, L.attnLnW, own), ...this.k.linear({ W: HN.W, x: this.lnId!.ones, y: HN.fold, T: 1 }, own));
        HN.c2 = sb(H * 4, `${l + 1}.head_pred.ln_c2`);
        copies.push([HN.fold, H * 4, HN.c2, 0, H * 4]);
      }
      const parts: [GPUBuffer, number][] = [[L.qkvFold!.c, 3 * d], ...(A ? [[S!.pred!.fold!, A.rows]] as [GPUBuffer, number][] : []), [HN.fold, HN.W.rows]];
      return joinFolds(parts, `${l}.qkv+next heads.ln_c`, sb, copies);
    });
  }

  /** Forgets which heads skipped which positions (HeadLayerPolicy: a new policy starts from "every head ran"). */
  private clearSkips(): void {
    const enc = this.k.device.createCommandEncoder();
    // Lazy completion's holes stay: one owed by the next (odd) step is still owed (tags: gemv.ts, LAZY).
    for (const hs of this.heads) if (hs) enc.clearBuffer(hs.skip);
    this.k.device.queue.submit([enc.finish()]);
  }

  /**
   * The next decode step's command buffer, encoded while the GPU runs the current one: a step's
   * 6 to 11 dispatches a layer cost a few µs each to encode from JS, and the token id travels in the
   * `step` buffer, so the encoding doesn't depend on it. Its plan form does (stepForm: lazy K/V
   * completion's parity), so it is kept with the position it was made for and used only there.
   */
  private nextDecode: { pos: number; cb: GPUCommandBuffer } | null = null;

  private encodeDecode(pos: number): GPUCommandBuffer {
    const enc = this.k.device.createCommandEncoder();
    this.k.encode(enc, this.plan(1, 'last', false, this.stepForm(pos)).items);
    enc.copyBufferToBuffer(this.logits, 0, this.stage!, 0, this.config.vocabSize * 4);
    return enc.finish();
  }

  /**
   * Lazy K/V completion owed by the position now due (odd): the holes of the even decode step before
   * it, filled from its saved input (gemv.ts, LAZY, 'complete'), then no holes. A pass of several
   * tokens or a policy change comes before that odd step would have filled them. A no-op elsewhere
   * (the kernels honour a hole only at the position it names).
   */
  private completeHoles(): void {
    if (this.pos % 2 === 0 || !this.lazyHeads) return;
    const dev = this.k.device;
    dev.queue.writeBuffer(this.step, 0, Uint32Array.from([this.pos, 0]));
    const enc = dev.createCommandEncoder();
    this.k.encode(enc, this.plan(1, 'none', false, 4).items);
    for (const hs of this.heads) if (hs?.lazy) enc.clearBuffer(hs.lazy.holes);
    dev.queue.submit([enc.finish()]);
  }

  /**
   * Queues the folded LayerNorm's constants of W into c (c1 | c2: foldLayerNorm) on ds; with `gw` W
   * is then stored as W∘γ (foldLayerNormIntoWeights) and c2 alone, the unfolded product's bias, is
   * returned, copied out of c once ds has run (`copies`); else null.
   */
  private foldInto(a: { W: GpuMatrix; gamma: GPUBuffer; beta: GPUBuffer; bias: GPUBuffer | null; c: GPUBuffer }, label: string,
    o: { gw: boolean; alloc: (bytes: number, label: string) => GPUBuffer; ds: Dispatch[]; copies: [GPUBuffer, number, GPUBuffer, number, number][]; own: GPUBuffer[] }): GPUBuffer | null {
    if (!o.gw) { o.ds.push(...this.k.foldLayerNorm(a, o.own)); return null; }
    const bytes = a.W.rows * 4, c2 = o.alloc(bytes, `${label}.ln_c2`);
    o.ds.push(...this.k.foldLayerNormIntoWeights({ ...a, ones: this.lnId!.ones }, o.own));
    o.copies.push([a.c, bytes, c2, 0, bytes]);
    return c2;
  }

  /** The 'complete' plan: each lazy layer's qkv GEMV in its completion form, bound as the decode plans bind it. */
  private buildCompletePlan(): Plan {
    const own: GPUBuffer[] = [], items: PlanItem[] = [];
    this.layers.forEach((_, l) => {
      if (!this.heads[l]?.lazy) return;
      // x is not read for the result (the completion stores the saved input's K/V only).
      const ds = this.k.linear(this.qkvArgs(l, 1, this.foldLn ? this.x : this.hA, this.foldLn, true, { odd: true, complete: true }), own);
      ds.forEach((d) => items.push({ d }));
    });
    return { items, own, dispatches: items.length };
  }

  /**
   * Layer l's qkv GEMV: the LayerNorm folded in (x the residual) or not (x its output); in decode
   * (T = 1) also the K/V store, the lookahead's predictor rows and, where `chooses`, the sparse heads'
   * choice (`lazy`: lazy completion's form, for layers that complete lazily).
   */
  private qkvArgs(l: number, T: number, x: GPUBuffer, fold: boolean, chooses: boolean, lazy: { odd: boolean; complete?: boolean }): LinearArgs {
    const c = this.config, L = this.layers[l], S = this.sparse[l] ?? null, HS = this.heads[l] ?? null;
    const look = fold && S?.look ? S.look : null;
    const HN = this.heads[l + 1], nextC = T === 1 && fold ? this.qkvNextC[l] ?? null : null;
    const kv = T === 1 ? { step: this.step, k: L.k, v: L.v, pred: look ? S!.pred!.A : undefined, hnext: nextC ? { W: HN!.W!, out: HN!.uh } : undefined,
      heads: chooses && HS ? { scores: this.headScores(HS), hl: this.hl!, skip: HS.lazy?.holes ?? HS.skip, hd: c.headDim, H: c.heads, k: HS.k, kvAll: HS.kvAll,
        lazy: HS.lazy ? { xPrev: HS.lazy.xPrev, ...lazy } : undefined } : undefined } : null;
    // With γ in qkv's weights, the unfolded product reads x̂ (buildPlan's hX) with c2 as its bias.
    return fold ? { W: L.qkv, x, y: this.qkv, T, ln: { gamma: L.attnLnW, c: nextC ?? (look ? look.c! : L.qkvFold!.c), eps: c.layerNormEps, gammaInW: !!L.qkvC2 }, kv }
      : { W: L.qkv, x: L.qkvC2 ? this.hX : x, y: this.qkv, T, bias: L.qkvC2 ?? L.qkvB, kv };
  }

  private dropPlans(): void {
    this.nextDecode = null;
    for (const p of this.plans.values()) p.own.forEach((b) => b.destroy());
    this.plans.clear();
  }

  /** Whether some layer's sparse heads complete K/V lazily (HeadSparse.lazy). */
  private get lazyHeads(): boolean { return this.heads.some((h) => h?.lazy); }

  /** Whether a decode step at `pos` runs attention as the split + combine pair (FUSED_ATTENTION_MAX_KEYS). */
  private longAttention(pos: number): boolean { return pos + 1 > this.fusedAttentionMaxKeys; }

  /**
   * A decode step's plan form by position (bits): 1 attention as the pair (longAttention), 2 an odd
   * position with lazy K/V completion (its qkv GEMV fills the holes; the even form saves its input:
   * gemv.ts, LAZY). Unlike the attention forms, a lazy step must run its parity's plan.
   */
  private stepForm(pos: number): number {
    return (this.longAttention(pos) ? 1 : 0) | (pos % 2 === 1 && this.lazyHeads ? 2 : 0);
  }

  /** `form`: a decode plan's form (stepForm; 4: lazy completion's 'complete' plan); prompts ignore it. */
  private plan(T: number, head: Head, trace: boolean, form = 0): Plan {
    const long = !!(form & 1) && T === 1 && this.k.fuseAttention, odd = !!(form & 2) && T === 1, complete = !!(form & 4) && T === 1;
    const key = `${T}/${head}${head === 'sample' ? this.sampleTopK : ''}/${trace}${long ? '/long' : ''}${odd ? '/odd' : ''}${complete ? '/complete' : ''}`;
    let p = this.plans.get(key);
    if (p) {
      if (T > 1) { this.plans.delete(key); this.plans.set(key, p); } // most recently used last
      return p;
    }
    p = complete ? this.buildCompletePlan() : this.buildPlan(T, head, trace, long, odd);
    this.planBuilds++;
    this.plans.set(key, p);
    if (T > 1) this.evictPlans(p);
    return p;
  }

  /**
   * Drops prompt plans (T > 1), least recently used first, until they are within planCacheMax plans
   * and planCacheDispatches dispatches (each holds a bind group and a uniform buffer), but never
   * `keep`, the plan just built, which forward then encodes. Only a prompt build evicts, so no build
   * between fetching a plan and encoding it can drop it. Decode plans (a handful of forms) are not
   * evicted (setSparsity drops every plan). Why keep many: an eval of zero-shot items runs a prompt of
   * a new length almost every forward, and building a plan cost 8-11 ms on an H200 host against a
   * ~2 ms forward of a small model, and serialised processes sharing the GPU on their buffer creation.
   */
  private evictPlans(keep: Plan): void {
    const prompts = [...this.plans].filter(([k]) => !k.startsWith('1/'));
    let dispatches = prompts.reduce((a, [, v]) => a + v.dispatches, 0), n = prompts.length;
    for (const [k, v] of prompts) {
      if (n <= this.planCacheMax && dispatches <= this.planCacheDispatches) break;
      if (v === keep) continue;
      v.own.forEach((b) => b.destroy());
      this.plans.delete(k);
      dispatches -= v.dispatches; n--;
    }
  }

  /** The forward pass for T tokens as dispatches (and trace taps), mirroring CpuRunner.forward. */
  private buildPlan(T: number, head: Head, trace: boolean, long: boolean, odd: boolean): Plan {
    const c = this.config, d = c.hidden, f = c.ffn, K = this.k, eps = c.layerNormEps;
    const own: GPUBuffer[] = [];
    const items: PlanItem[] = [];
    const add = (...ds: Dispatch[]) => ds.forEach((x) => items.push({ d: x }));
    const tap = (layer: number, point: TracePoint, buffer: GPUBuffer, n: number) => { if (trace) items.push({ tap: { layer, point, buffer, offset: 0, floats: T * n, rows: T } }); };
    // Decode of a pre-LN model folds the LayerNorm into the GEMV after it (gemv.ts) where nothing
    // else reads its output: not when tracing (attn_in / mlp_in taps), not before a predictor
    // reading attn_in, not before a sparse MLP (its predictor and gathered fc1 read mlp_in).
    const fold = T === 1 && !trace && this.foldLn;

    // Embeddings: token (projected when e != d) + learned position at pos + 2.
    add(...K.embed({ step: this.step, E: this.embed, P: this.positions, x: this.x, tmp: this.tmpE, d, T, proj: !!this.projectIn }, own));
    if (this.projectIn) add(...K.linear({ W: this.projectIn, x: this.tmpE, y: this.x, T, resid: true }, own));

    for (let l = 0; l < c.layers; l++) {
      const L = this.layers[l], S = this.sparse[l] ?? null;
      // Sparse heads run in decode only (HeadLayerPolicy); prompts clear their skip rows (forward).
      const HS = T === 1 ? this.heads[l] ?? null : null;
      // Attention block
      let attnIn = this.x;
      // Folded, a predictor reading attn_in folds the same LayerNorm into its A product. Unfolded,
      // LN(x) is read by the taps, a predictor or head scores reading attn_in, and a qkv holding W
      // apart from γ; a qkv holding W∘γ reads x̂ (the next LayerNorm) instead.
      const attnPred = !!S?.pred && readsAttnIn(this.policy!.input), io = !!S?.pred?.Ao;
      const lnA = !fold && (trace || !L.qkvC2 || attnPred || (T === 1 && (!!HS || !!this.heads[l + 1]?.prev)));
      if (c.preLayerNorm && lnA) { add(K.layerNorm({ x: this.x, y: this.hA, w: L.attnLnW, b: L.attnLnB, n: d, rows: T, eps }, own)); attnIn = this.hA; }
      // qkv holding W∘γ reads x̂ unfolded (qkvArgs): a second, affine-free LayerNorm (prompts, traces).
      if (L.qkvC2 && !fold) add(K.layerNorm({ x: this.x, y: this.hX, w: this.lnId!.ones, b: this.lnId!.zeros, n: d, rows: T, eps }, own));
      tap(l, 'attn_in', attnIn, d);
      // Lookahead: a predictor reading attn_in runs before attention (off the MLP's critical path);
      // folded in decode, its A product rides the qkv GEMV (S.look) and B, top-K follow it.
      const look = fold && S?.look ? S.look : null;
      // (attn_io: only A's attn_in half here; its o half and B follow attention.)
      if (attnPred && !look) this.predict(S!, attnIn, T, own, add, fold ? { gamma: L.attnLnW, beta: L.attnLnB, out: null } : null, !io);
      // Decode stores the new K and V rows from the qkv GEMV's epilogue (attention reads the current
      // token's K and V from the cache, q from qkv); prefill's skinny matmul leaves that to kvStore.
      // Sparse heads: the head scores, then the qkv GEMV chooses the heads itself where it can (gemv.ts,
      // HEADS), else a head-select dispatch does and qkv runs every head (with kv 'chosen' the
      // unchosen heads' K/V are written but stay marked skipped).
      const qkvChooses = !!HS && this.headsInQkv && K.headsFit(L.qkv, c.headDim, c.heads, look ? S!.pred!.A : undefined, undefined, !!HS.lazy);
      if (HS) this.chooseHeads(HS, l, fold ? this.x : attnIn, fold, !qkvChooses, own, add);
      const qkv = this.qkvArgs(l, T, fold ? this.x : attnIn, fold, qkvChooses, { odd });
      add(...K.linear(qkv, own));
      // The head lookahead: the next layer's scores from this layer's input, in the qkv GEMV above
      // where it has the seat (qkvNextC), else here, before out_proj changes the residual.
      const HN = T === 1 ? this.heads[l + 1] : null;
      if (HN?.prev && !qkv.kv?.hnext) add(...this.headScoreGemv(HN, L, fold ? this.x : attnIn, fold, own));
      if (look && !S!.block && !io) this.predictB(S!, this.qkv, 3 * d, own, add);
      if (!qkv.kv) add(K.kvStore({ step: this.step, qkv: this.qkv, k: L.k, v: L.v, d, T }, own));
      // The block rule with the lookahead: its scoring and choice need only u, so they ride attention's
      // dispatch (attention.ts, `role`) and block-select below computes the chosen rows' fc1 only.
      // (With the lookahead u sits in the qkv GEMV's output after its 3d rows; cnt: the layer's chosen count.)
      const lookBlock = !!(look && S?.block) && K.blockSelectLnFits(d);
      const uLook = look ? { u: this.qkv, uOff: 3 * d, uStride: 3 * d + S!.pred!.rank } : null, cnt = { buffer: this.chosen!, offset: this.chosenStride * l, size: 4 };
      const scoreEarly = lookBlock && !io && this.blockScoreInAttention && K.blockScoreFits(S!.pred!.B, !!HS, c.headDim);
      const blockScore = scoreEarly ? { B: S!.pred!.B, bias: S!.pred!.bias, ...uLook!, sel: this.sel!, h: this.hsel!, cnt, bcnt: this.bcnt!, cap: S!.block!.cap, tau: S!.block!.tau } : undefined;
      add(...K.attention({ step: this.step, qkv: this.qkv, k: L.k, v: L.v, o: this.ao, hn: this.hn, H: c.heads, hd: c.headDim, T, maxPos: c.maxPositions,
        heads: HS ? { hl: this.hl!, skip: HS.skip, k: HS.k } : undefined, fused: !long, blockScore,
        // With the fused form on, this plan's steps see at most fusedAttentionMaxKeys keys (stepForm
        // gives longer ones the pair's plan): a smaller grid. Without it this plan takes every step.
        maxKeys: T === 1 && !long && this.k.fuseAttention ? this.fusedAttentionMaxKeys : undefined }, own));
      tap(l, 'head_norm', this.hn, c.heads);
      tap(l, 'attn_out', this.ao, d);
      // attn_io: u += Ao·o once attention is done: its rows ride out_proj's GEMV in decode with the
      // lookahead (gemv.ts, RIDE; u is then after qkv's rows), else a product of its own (with sparse
      // heads over the chosen heads' columns only, as out_proj reads them); B follows where top-K
      // selects (the block rule scores in block-select).
      const Ao = io ? S!.pred!.Ao! : null;
      const uOut = !io ? null : look ? { y: this.qkv, outOff: 3 * d, outStride: 3 * d + S!.pred!.rank } : { y: this.u!, outOff: 0, outStride: S!.pred!.rank };
      // With sparse heads the o half rides out_proj's head-out dispatch the same way (head-out.ts, RIDE).
      const rideO = !!Ao && !!look && this.attnIoRide && (HS ? Kernels.canRideHeadOut(L.o, Ao, c.headDim) : K.canRide(L.o, Ao));
      if (Ao && !rideO) add(...(HS ? K.headOut({ W: Ao, o: this.ao, hl: this.hl!, k: HS.k, hd: c.headDim, y: uOut!.y, yOff: uOut!.outOff, bias: null }, own)
        : K.linear({ W: Ao, x: this.ao, T, ...uOut!, resid: true }, own)));
      // Sparse heads: out_proj reads the chosen heads' columns only (the others' outputs are stale).
      add(...(HS ? K.headOut({ W: L.o, major: HS.major ?? undefined, o: this.ao, hl: this.hl!, k: HS.k, hd: c.headDim, y: this.x, bias: L.oB, ...(rideO ? { ride: { W: Ao!, y: this.qkv, off: 3 * d } } : {}) }, own)
        : K.linear({ W: L.o, x: this.ao, y: this.x, T, bias: L.oB, resid: true, ...(rideO ? { ride: { W: Ao!, y: this.qkv, off: 3 * d } } : {}) }, own)));
      if (uOut && !S!.block) this.predictB(S!, uOut.y, uOut.outOff, own, add, T);
      if (!c.preLayerNorm) add(K.layerNorm({ x: null, y: this.x, w: L.attnLnW, b: L.attnLnB, n: d, rows: T, eps }, own));

      // MLP block
      let mlpIn = this.x;
      // A sparse layer whose predictor reads mlp_in folds the LayerNorm into predictor A, which also
      // writes LN(x) (x̂ where fc1 holds W∘γ) into hM for the gathered fc1 (lnOut in gemv.ts): no LayerNorm dispatch either way.
      // With the lookahead and the block rule, block-select folds it into fc1 (x: the raw residual)
      // where x fits its workgroup memory (every OPT width up to 30B's 7168; blockSelectLnFits).
      const predM = !!S?.pred && this.policy!.input === 'mlp_in';
      const foldM = fold && (!S || predM || lookBlock);
      // fc1 holding W∘γ (fc1C2): its unfolded readers take x̂ (fc1X) with c2 as the bias (fc1Bias).
      const hatM = !!L.fc1C2, fc1Bias = hatM ? L.fc1C2 : L.fc1B;
      let fc1X = this.x;
      if (c.preLayerNorm && !foldM) {
        // Where nothing reads LN(x) itself (no taps, no predictor reading mlp_in) only fc1's readers
        // read mlp_in: with hatM the LayerNorm writes x̂ itself; else LN(x) stays and x̂ goes beside it.
        const hatOnly = hatM && (fold || !(trace || predM));
        add(K.layerNorm({ x: this.x, y: this.hM, w: hatOnly ? this.lnId!.ones : L.mlpLnW, b: hatOnly ? this.lnId!.zeros : L.mlpLnB, n: d, rows: T, eps }, own));
        mlpIn = fc1X = this.hM;
        if (hatM && !hatOnly) { add(K.layerNorm({ x: this.x, y: this.hXM, w: this.lnId!.ones, b: this.lnId!.zeros, n: d, rows: T, eps }, own)); fc1X = this.hXM; }
      }
      // (predict's lnOut writes LN(x) there, or x̂ with hatM.)
      if (foldM && predM) mlpIn = fc1X = this.hM;
      tap(l, 'mlp_in', mlpIn, d);
      if (!S) {
        add(...K.linear(foldM ? { W: L.fc1, x: this.x, y: this.act, T, relu: true, ln: { gamma: L.mlpLnW, ...L.fc1Fold!, eps, gammaInW: hatM } }
          : { W: L.fc1, x: fc1X, y: this.act, T, bias: fc1Bias, relu: true }, own));
        tap(l, 'fc1_act', this.act, f);
        add(...K.linear({ W: L.fc2!, x: this.act, y: this.x, T, bias: L.fc2B, resid: true }, own));
      } else {
        const sel = S.fixed ?? this.sel!, selStride = S.fixed ? 0 : S.k;
        if (predM) this.predict(S, foldM ? this.x : mlpIn, T, own, add, foldM ? { gamma: L.mlpLnW, beta: L.mlpLnB, out: this.hM, hat: hatM } : null);
        // Decode with the block rule: fc2's rows in block-select too, then a sum of the blocks' partials.
        const blockFc2 = T === 1 && !!S.block && !!this.fc2Part && K.blockFc2Fits(L.fc2T!, lookBlock);
        if (S.block) {
          // Predictor B, the block rule and fc1 in one dispatch (kernels/block-select.ts), then fc2 over the slots.
          // With the lookahead, u sits in the qkv GEMV's output after its 3d rows.
          const u = uLook ?? { u: this.u! };
          add(...K.blockSelectFc1({ B: S.pred!.B, bias: S.pred!.bias, ...u, W1: L.fc1, b1: lookBlock ? null : fc1Bias ?? this.zeroB1!,
            ln: lookBlock ? { gamma: L.mlpLnW, c: L.fc1Fold!.c, eps, gammaInW: hatM } : null, x: lookBlock ? this.x : fc1X,
            sel, h: this.hsel!, cnt, T, cap: S.block.cap, tau: S.block.tau,
            chosenBy: scoreEarly ? { bcnt: this.bcnt! } : undefined, fc2: blockFc2 ? { W2t: L.fc2T!, part: this.fc2Part! } : undefined }, own));
        } else {
          if (S.lp.selector.kind === 'oracle') {
            add(...K.linear({ W: L.fc1, x: fc1X, y: this.scores!, T, bias: fc1Bias }, own));
            add(K.topK({ scores: this.scores!, out: this.sel!, n: f, k: S.k, T, inStride: f, outStride: S.k }, own));
          }
          add(...K.gatherLinear({ W: L.fc1, x: fc1X, h: this.hsel!, T, k: S.k, sel, selStride, bias: fc1Bias, relu: true }, own));
        }
        let slices: number | undefined;
        if (this.partial) {
          const perSlice = T * ceil4(d) * L.fc2T!.parts.length;
          slices = Math.max(1, Math.min(FC2_MAX_SLICES, ceilDiv(S.k, FC2_MIN_SLICE_ROWS), Math.floor(this.partialFloats / perSlice)));
          if (slices * perSlice > this.partialFloats) fail('sparse MLP partial sums do not fit their buffer');
        }
        if (blockFc2) add(K.fc2Sum({ W2t: L.fc2T!, part: this.fc2Part!, x: this.x, bias: L.fc2B, T }, own));
        else add(...K.sparseDown({ W2t: L.fc2T!, h: this.hsel!, sel, selStride, k: S.k, T, slices, partial: this.partial ?? undefined, x: this.x, bias: L.fc2B }, own));
        if (trace) { add(K.scatter({ h: this.hsel!, sel, act: this.act, f, k: S.k, selStride, T }, own)); tap(l, 'fc1_act', this.act, f); }
      }
      if (!c.preLayerNorm) add(K.layerNorm({ x: null, y: this.x, w: L.mlpLnW, b: L.mlpLnB, n: d, rows: T, eps }, own));
    }

    if (head !== 'none') {
      // Final LayerNorm, project_out, tied or separate lm_head, on the rows asked for.
      // Decode folds the final LayerNorm into the first GEMV after it (headFold), and the greedy head
      // (always one row) takes each lm_head workgroup's best row in its epilogue (AMAX), so argmax reads pairs.
      const rows = head === 'all' ? T : 1, off = (T - rows) * d;
      let h = this.x, hOff = off;
      let ln: LinearArgs['ln'] = fold && this.headFold ? { gamma: this.finalLnW!, c: this.headFold, eps } : null;
      if (this.finalLnW && !ln) { add(K.layerNorm({ x: this.x, y: this.hF, w: this.finalLnW, b: this.finalLnB!, n: d, rows, inOff: off, eps }, own)); h = this.hF; hOff = 0; }
      if (this.projectOut) { add(...K.linear({ W: this.projectOut, x: h, inOff: hOff, y: this.tmpE, T: rows, ln }, own)); h = this.tmpE; hOff = 0; ln = null; }
      const greedy = head === 'greedy';
      add(...K.linear({ W: this.lmHead, x: h, inOff: hOff, y: this.logits, T: rows, ln, amax: greedy ? this.amaxPairs : undefined }, own));
      if (greedy) add(K.argmax({ logits: this.amaxPairs, step: this.step, tokens: this.tokens, n: this.amaxSlots, slots: c.maxPositions, pairs: true }, own));
      // Sampling keys every logit (the draw's noise is per id), so it scans the row, not the pairs; with
      // top-k, among the k largest (kernels/topk.ts, the set in sampleSel).
      if (head === 'sample') {
        const k = this.sampleTopK;
        if (k) add(K.topK({ scores: this.logits, out: this.sampleSel, n: c.vocabSize, k, T: 1, inStride: c.vocabSize, outStride: k }, own));
        add(K.argmax({ logits: this.logits, step: this.step, tokens: this.tokens, n: k || c.vocabSize, slots: c.maxPositions, sample: this.samp, ...(k ? { sel: this.sampleSel } : {}) }, own));
      }
    }
    return { items, own, dispatches: items.filter((i) => 'd' in i).length };
  }

  /**
   * The heads this decode token computes: the head predictor's scores (B·A)·LN(x) + bias as one GEMV
   * (LayerNorm folded in when `fold`: x is then the raw residual; a fixed set's flags are its scores);
   * with `select`, a head-select dispatch then writes the chosen list and the skip row (where the qkv
   * GEMV can, it does that itself: gemv.ts, HEADS).
   */
  private chooseHeads(HS: HeadSparse, l: number, x: GPUBuffer, fold: boolean, select: boolean, own: GPUBuffer[], add: (...d: Dispatch[]) => void): void {
    const c = this.config, K = this.k, L = this.layers[l];
    if (HS.W && !HS.prev) add(...this.headScoreGemv(HS, L, x, fold, own));
    if (select) add(K.headSelect({ step: this.step, scores: this.headScores(HS), H: c.heads, k: HS.k, hl: this.hl!, skip: HS.skip, kvAll: HS.kvAll }, own));
  }

  /** HS's scores from x, layer L's input (fold: the raw residual, L's LayerNorm constants in HS.fold). */
  private headScoreGemv(HS: HeadSparse, L: GpuLayer, x: GPUBuffer, fold: boolean, own: GPUBuffer[]): Dispatch[] {
    // W stored as W∘γ (HS.c2): folded without γ, unfolded from x̂ (buildPlan's hX) with c2 as the bias.
    return this.k.linear(fold ? { W: HS.W!, x, y: HS.uh, T: 1, ln: { gamma: L.attnLnW, c: HS.fold!, eps: this.config.layerNormEps, gammaInW: !!HS.c2 } }
      : { W: HS.W!, x: HS.c2 ? this.hX : x, y: HS.uh, T: 1, bias: HS.c2 ?? HS.bias }, own);
  }

  /** Where a layer's head scores are: the predictor GEMV's output, or a fixed set's flags. */
  private headScores(HS: HeadSparse): GPUBuffer { return HS.W ? HS.uh : HS.bias; }

  /**
   * scores = B (A x) + bias, then top-K into `sel` (DejaVu's low-rank predictor). With the block rule
   * only u = A x: B, the choice and fc1 run fused at the MLP (blockSelectFc1).
   */
  private predict(S: LayerSparse, x: GPUBuffer, T: number, own: GPUBuffer[], add: (...d: Dispatch[]) => void,
    fold: { gamma: GPUBuffer; beta: GPUBuffer; out: GPUBuffer | null; hat?: boolean } | null, withB = true): void {
    const p = S.pred!, K = this.k, eps = this.config.layerNormEps;
    // Folded: x is the raw residual stream and A's own LayerNorm constants apply (out: also write LN(x), or x̂ with hat).
    // A stored as A∘γ (p.c2): folded without γ, unfolded from x̂ (buildPlan's hX) with c2 as the bias.
    add(...K.linear(fold ? { W: p.A, x, y: this.u!, T, ln: { gamma: fold.gamma, c: p.fold!, eps, out: fold.out ? { beta: fold.beta, xn: fold.out, hat: fold.hat } : undefined, gammaInW: !!p.c2 } }
      : { W: p.A, x: p.c2 ? this.hX : x, y: this.u!, T, bias: p.c2 }, own));
    if (!S.block && withB) this.predictB(S, this.u!, 0, own, add, T);
  }

  /** scores = B u + bias, then top-K into `sel`; u of token t at uOff + t·r (the lookahead: one token, u after qkv's rows). */
  private predictB(S: LayerSparse, u: GPUBuffer, uOff: number, own: GPUBuffer[], add: (...d: Dispatch[]) => void, T = 1): void {
    const p = S.pred!, f = this.config.ffn, K = this.k;
    add(...K.linear({ W: p.B, x: u, inOff: uOff, y: this.scores!, T, bias: p.bias }, own));
    add(K.topK({ scores: this.scores!, out: this.sel!, n: f, k: S.k, T, inStride: f, outStride: S.k }, own));
  }

  async forwardStats(ids: number[], opts: StatsOptions): Promise<RowStats> {
    const V = this.config.vocabSize, N = ids.length;
    checkStatsRequest(ids, opts, V, this.statsRefRows, this.pos, this.config.maxPositions);
    const S = this.statsState();
    this.k.device.queue.writeBuffer(S.targets, 0, Uint32Array.from(opts.targets));
    if (opts.keep) this.statsRefRows = null;   // (overwritten from the first pass on; valid again once all ran)
    // The passes' stats dispatches and, in the last pass's submission, the copies out (run).
    await this.run(ids, { allLogits: true }, { keep: !!opts.keep, kl: !!opts.kl });
    if (opts.keep) this.statsRefRows = N;
    const bytes = N * ROW_STATS_FLOATS * 4;
    await S.stage.mapAsync(GPUMapMode.READ, 0, bytes);
    const stats = readRowStats(S.stage.getMappedRange(0, bytes).slice(0), 0, N, !!opts.kl);
    S.stage.unmap();
    maskRows(stats, opts.from ?? 0);   // (computed on the device anyway: a few µs a row)
    return stats;
  }

  /**
   * forwardStats' device state, made once for the whole context (targets, out, its staging copy and
   * the reference's out rows: 16 bytes a position); the reference's logits, a pass to a buffer, come
   * from refLogits. Nothing is created per call: with fifteen eval processes on one GPU, buffers
   * created every forward cost more than the statistics saved (buffer creation serialises across
   * processes).
   */
  private statsState(): StatsBuffers {
    const c = this.config, k = this.k;
    if (!this.stats) {
      const words = c.maxPositions * ROW_STATS_FLOATS * 4;
      this.stats = {
        targets: k.buffer(c.maxPositions * 4, 'stats targets'), out: k.buffer(words, 'stats out'), refOut: k.buffer(words, 'stats reference out'),
        stage: k.device.createBuffer({ label: 'stats stage', size: words, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }),
        refLogits: [], dispatches: new Map(), own: [],
      };
    }
    return this.stats;
  }

  /**
   * The buffer that keeps pass i's logits as the reference (TCAP rows of V floats: within any binding
   * limit), made the first time a `keep` reaches that pass; a `kl` of the same length reads the same ones.
   */
  private refLogits(S: StatsBuffers, i: number): GPUBuffer {
    const c = this.config;
    while (S.refLogits.length <= i) S.refLogits.push(this.k.buffer(Math.min(TCAP, c.maxPositions) * c.vocabSize * 4, `stats reference logits, pass ${S.refLogits.length}`));
    return S.refLogits[i];
  }

  /** The row-stats dispatch of pass i (T rows from global row rowOff): kept, as a window's passes recur. */
  private statsDispatch(S: StatsBuffers, i: number, T: number, rowOff: number, kl: boolean): Dispatch {
    const key = `${i}/${T}/${rowOff}/${kl}`;
    let d = S.dispatches.get(key);
    if (!d) {
      d = this.k.rowStats({ logits: this.logits, targets: S.targets, out: S.out, rows: T, V: this.config.vocabSize, rowOff,
        ref: kl ? { logits: this.refLogits(S, i), out: S.refOut } : undefined }, S.own);
      S.dispatches.set(key, d);
    }
    return d;
  }

  forward(ids: number[], opts: ForwardOptions = {}): Promise<Float32Array> { return this.run(ids, opts); }

  /** forward, or with `stats` forwardStats' passes: each pass's row statistics instead of its logits read back. */
  private async run(ids: number[], opts: ForwardOptions = {}, stats?: { keep: boolean; kl: boolean }): Promise<Float32Array> {
    const c = this.config, V = c.vocabSize, dev = this.k.device;
    if (ids.length === 0) fail('forward needs at least one token');
    if (this.chaining) fail('forward called while decodeGreedy runs');
    if (this.pos + ids.length > c.maxPositions) fail(`sequence of ${this.pos + ids.length} tokens is longer than the model's context of ${c.maxPositions}`);
    for (const id of ids) if (!(Number.isInteger(id) && id >= 0 && id < V)) fail(`token id ${id} is outside the vocabulary of ${V}`);
    const want = new Set<TracePoint>(opts.tracePoints ?? ['attn_in', 'mlp_in', 'fc1_act', 'head_norm']);
    const head: Head = opts.noLogits ? 'none' : opts.allLogits ? 'all' : 'last';
    // A traced step reads the LayerNorm's output unfolded, so its saved input would not be in the form
    // the next step's completion reads (gemv.ts, LAZY).
    const cap = Math.min(TCAP, c.maxPositions);
    if (opts.trace && ids.length === 1 && this.lazyHeads) fail('trace points on a one-token forward are not supported with lazy K/V completion (--head-kv lazy)');
    const outs: Float32Array[] = [];
    // Passes of at most cap tokens. A forward of several tokens never ends in a one-token pass: that
    // would run as a decode step (sparse heads, lazy completion's parity) where the CPU runs a prompt,
    // so cap + 1 tokens go as cap − 1 and 2.
    const starts: number[] = [];
    for (let s = 0; s < ids.length; s += cap) starts.push(s);
    if (ids.length > 1 && cap > 2 && ids.length % cap === 1) starts[starts.length - 1] -= 1;
    for (const [i, s] of starts.entries()) {
      const chunk = ids.slice(s, starts[i + 1] ?? ids.length), T = chunk.length;
      const h: Head = head === 'all' ? 'all' : head === 'last' && s + T >= ids.length ? 'last' : 'none';
      // A pass of several tokens runs every head: their positions are no longer skipped by any. Lazy
      // completion: the holes of a decode step just before are filled first (it writes the step
      // buffer, so before this pass does), then there are none. (Before this pass's plan is fetched:
      // nothing built after the fetch may evict it.)
      if (T > 1) this.completeHoles();
      const plan = this.plan(T, h, !!opts.trace, this.stepForm(this.pos));
      dev.queue.writeBuffer(this.step, 0, Uint32Array.from([this.pos, ...chunk]));
      if (T > 1) for (const hs of this.heads) if (hs) {
        dev.queue.writeBuffer(hs.skip, this.pos * c.heads * 4, new Uint32Array(T * c.heads));
        if (hs.lazy) dev.queue.writeBuffer(hs.lazy.holes, 0, new Uint32Array(c.heads));
      }
      const rows = h === 'all' ? T : 1;
      const taps: { tap: Tap; buf: GPUBuffer }[] = [];
      const decodeStep = T === 1 && h === 'last' && !opts.trace;
      if (h !== 'none' && !stats) {
        const bytes = rows * V * 4;
        if (!this.stage || this.stage.size < bytes) {
          this.stage?.destroy(); this.nextDecode = null;
          this.stage = dev.createBuffer({ size: Math.max(bytes, V * 4), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
        }
      }
      if (decodeStep) {
        dev.queue.submit([this.nextDecode?.pos === this.pos ? this.nextDecode.cb : this.encodeDecode(this.pos)]);
        this.nextDecode = { pos: this.pos + 1, cb: this.encodeDecode(this.pos + 1) }; // overlaps the GPU's work on this step
      } else {
        const enc = dev.createCommandEncoder();
        const onTap = opts.trace ? (tap: Tap) => {
          if (!want.has(tap.point)) return null;
          const buf = dev.createBuffer({ size: tap.floats * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
          taps.push({ tap, buf });
          return buf;
        } : undefined;
        this.k.encode(enc, plan.items, onTap);
        if (stats) {
          // Rows s.. of the forward: their stats (kernels/row-stats.ts), and with keep the logits as the
          // reference; after the last pass the rows go to the staging buffer (and with keep to refOut).
          const S = this.stats!;
          if (stats.keep) enc.copyBufferToBuffer(this.logits, 0, this.refLogits(S, i), 0, T * V * 4);
          this.k.encode(enc, [{ d: this.statsDispatch(S, i, T, s, stats.kl) }]);
          if (i === starts.length - 1) {
            const bytes = ids.length * ROW_STATS_FLOATS * 4;
            if (stats.keep) enc.copyBufferToBuffer(S.out, 0, S.refOut, 0, bytes);
            enc.copyBufferToBuffer(S.out, 0, S.stage, 0, bytes);
          }
        } else if (h !== 'none') enc.copyBufferToBuffer(this.logits, 0, this.stage!, 0, rows * V * 4);
        dev.queue.submit([enc.finish()]);
      }
      this.pos += T;
      this.mlpTokens += T;
      for (const { tap, buf } of taps) {
        await buf.mapAsync(GPUMapMode.READ);
        const data = new Float32Array(buf.getMappedRange().slice(0));
        buf.destroy();
        opts.trace!(tap.layer, tap.point, data, tap.rows);
      }
      if (h !== 'none' && !stats) {
        const stage = this.stage!;
        await stage.mapAsync(GPUMapMode.READ, 0, rows * V * 4);
        outs.push(new Float32Array(stage.getMappedRange(0, rows * V * 4).slice(0)));
        stage.unmap();
      }
    }
    if (head === 'none') return new Float32Array(0);
    if (outs.length === 1) return outs[0];
    const all = new Float32Array(outs.reduce((a, o) => a + o.length, 0));
    let o = 0;
    for (const x of outs) { all.set(x, o); o += x.length; }
    return all;
  }

  /**
   * Greedy decode chained on the device (see Runner.decodeGreedy): each step is the decode plan with
   * the 'greedy' head (LM head, then argmax writes the id into `step` for the next step) plus a copy
   * of that one id to a mappable slot. CHAIN_WINDOW steps stay queued; the host reads ids as they
   * land and queues one more per id it accepts, so the GPU never waits on a readback.
   *
   * On a stop, steps already queued still run: they write KV rows at positions >= the accepted
   * count, advance step[0] on the device, and put their ids in `tokens`. All of that is harmless:
   * `pos` is set to the accepted count; attention reads positions < step[0] + 1 only, and the next
   * forward (or chain) writes `step` from the host, queued after those steps, then overwrites the
   * rows from `pos` on before anything reads them.
   */
  async decodeGreedy(first: number, maxSteps: number, onToken: (id: number) => boolean, sampling?: GumbelSampling): Promise<number[]> {
    const c = this.config, dev = this.k.device, W = CHAIN_WINDOW;
    if (this.chaining) fail('decodeGreedy is already running on this runner');
    checkSampling(sampling);
    const topK = sampling?.topK !== undefined && sampling.topK < c.vocabSize ? sampling.topK : 0;
    if (topK > MAX_DEVICE_TOPK) fail(`decodeGreedy draws among at most ${MAX_DEVICE_TOPK} ids on the device, asked ${topK}`);
    const head: Head = sampling ? 'sample' : 'greedy';
    if (!(Number.isInteger(maxSteps) && maxSteps >= 0)) fail(`decode steps must be an integer >= 0, got ${maxSteps}`);
    if (!(Number.isInteger(first) && first >= 0 && first < c.vocabSize)) fail(`token id ${first} is outside the vocabulary of ${c.vocabSize}`);
    // Never queue a step past the context: the last one runs at position pos + maxSteps - 1.
    if (this.pos + maxSteps > c.maxPositions) fail(`${maxSteps} decode steps from position ${this.pos} pass the context of ${c.maxPositions}`);
    const ids: number[] = [];
    if (maxSteps === 0) return ids;
    this.chaining = true;
    try {
      await this.chainTail;
      // Decode plans stay cached, and a 'sample' plan holds its k: keep those of one k at a time, so a
      // server taking any top_k does not pile up plans (the steps an earlier chain queued are done).
      if (sampling && topK !== this.sampleTopK) {
        for (const [key, p] of [...this.plans]) if (key.includes('/sample')) { p.own.forEach((b) => b.destroy()); this.plans.delete(key); }
      }
      this.sampleTopK = topK;
      const pos0 = this.pos;
      dev.queue.writeBuffer(this.step, 0, Uint32Array.from([pos0, first]));
      if (sampling) dev.queue.writeBuffer(this.samp, 0, Uint32Array.from([f32bits(sampling.invTemperature), sampling.seed >>> 0]));
      const maps: (Promise<void> | null)[] = new Array(W).fill(null);
      const submit = (j: number) => {
        const slot = j % W, out = this.idStage[slot];
        const enc = dev.createCommandEncoder();
        this.k.encode(enc, this.plan(1, head, false, this.stepForm(pos0 + j)).items);
        enc.copyBufferToBuffer(this.tokens, (pos0 + j) * 4, out, 0, 4);
        dev.queue.submit([enc.finish()]);
        this.mlpTokens++;
        maps[slot] = out.mapAsync(GPUMapMode.READ, 0, 4);
      };
      let queued = 0, depth = CHAIN_START;
      while (queued < Math.min(depth, maxSteps)) submit(queued++);
      try {
        while (ids.length < maxSteps) {
          const slot = ids.length % W, out = this.idStage[slot];
          const m = maps[slot]!;
          maps[slot] = null;
          await m;
          const id = new Uint32Array(out.getMappedRange(0, 4))[0];
          out.unmap();
          ids.push(id);
          this.pos = pos0 + ids.length;
          if (!onToken(id)) break;
          // Encoded while the GPU runs the queued steps; the queue deepens by 2 a token up to W.
          depth = Math.min(W, depth + 2);
          while (queued < maxSteps && queued < ids.length + depth) submit(queued++);
        }
      } finally {
        // Steps queued past the stop: their ids are dropped once they land (the slots are reused).
        this.chainTail = Promise.all(maps.map((m, s) => m?.then(() => { const b = this.idStage[s]; if (b.mapState === 'mapped') b.unmap(); }, () => {})));
      }
    } finally {
      this.chaining = false;
    }
    return ids;
  }

  /**
   * Back to the policy's own block thresholds: setBlockThresholds' hold for the state they were set
   * on, until the policy is set again (as on the CPU runner), also when a parked state comes back.
   */
  private ownThresholds(): void {
    let changed = false;
    this.sparse.forEach((S) => {
      const own = S?.lp.selector.kind === 'predictor' ? S.lp.selector.block : undefined;
      if (S?.block && own && S.block !== own) { S.block = own; changed = true; }
    });
    if (changed) this.dropPlans();
  }

  setBlockThresholds(tau: (number | null)[]): void {
    if (this.chaining) fail('setBlockThresholds called while decodeGreedy runs');
    if (tau.length !== this.config.layers) fail(`setBlockThresholds: ${tau.length} thresholds for ${this.config.layers} layers`);
    this.sparse.forEach((S, l) => { const t = tau[l]; if (S?.block && t !== null) S.block = { ...S.block, tau: t }; });
    this.dropPlans(); // τ is a plan-time parameter of block-select
    this.resetMlpDensity();
  }

  resetMlpDensity(): void {
    this.mlpTokens = 0;
    if (this.chosen) this.k.device.queue.writeBuffer(this.chosen, 0, new Uint32Array(this.config.layers * this.chosenStride / 4));
  }

  async mlpDensity(): Promise<(number | null)[]> {
    const f = this.config.ffn;
    const counts = this.chosen && this.sparse.some((S) => S?.block) ? await readU32(this.k, this.chosen, this.config.layers * this.chosenStride / 4) : null;
    return this.sparse.map((S, l) => !S ? null : S.block ? (this.mlpTokens ? counts![l * this.chosenStride / 4] / (this.mlpTokens * f) : NaN) : S.k / f);
  }

  weightMatrixBytes(): number {
    return this.matrices.reduce((a, m) => a + m.parts.reduce((b, p) => b + p.rows * m.colsP * 2, 0), 0);
  }

  weightBytesPerToken(): number {
    const c = this.config, d = c.hidden, f = c.ffn, e = c.wordEmbedProjDim;
    let n = c.vocabSize * e * 2 + (this.projectIn ? 2 * d * e * 2 : 0);
    for (let l = 0; l < c.layers; l++) {
      const HS = this.heads[l];
      // Sparse heads read their share of Q/K/V/O and the head predictor's A (f16) and B (f32).
      const share = HS ? HS.k / c.heads : 1;
      // Sparse heads read their share of Q and O; of K and V too where unchosen heads skip them (kv 'chosen').
      // Lazy completion: K and V for the chosen heads at even positions, for every head at odd ones
      // (the mean of the two: (2 share + 2) / 2 of K and V's 2 d²).
      n += (HS?.qkvMask ? (HS.kvAll ? 2 + 2 * share : HS.lazy ? 1 + 3 * share : 4 * share) : 3 + share) * d * d * 2;
      if (HS?.W) n += c.heads * d * 2;
      const S = this.sparse[l];
      if (!S) n += 2 * d * f * 2;
      else {
        // The block rule computes a varying count: its calibrated density where known, else all slots.
        const k = S.block && S.lp.density !== undefined ? Math.round(S.lp.density * f) : S.k;
        n += 2 * k * d * 2;
        if (S.pred) n += (S.pred.rank * d * (S.pred.Ao ? 2 : 1) + f * S.pred.rank) * 2;
        if (S.lp.selector.kind === 'oracle') n += d * f * 2;
      }
    }
    return n;
  }

  async timeDecodeSteps(steps: number, token = 0): Promise<DecodeTiming> {
    const dev = this.k.device;
    if (this.pos + steps > this.config.maxPositions) fail(`${steps} decode steps from position ${this.pos} pass the context of ${this.config.maxPositions}`);
    const plan = this.plan(1, 'none', false, this.stepForm(this.pos));
    const ts = this.gpu.timestamps;
    let resolve: GPUBuffer | null = null, read: GPUBuffer | null = null;
    if (ts) {
      this.querySet?.destroy();
      this.querySet = dev.createQuerySet({ type: 'timestamp', count: 2 * steps });
      resolve = dev.createBuffer({ size: 16 * steps, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
      read = dev.createBuffer({ size: 16 * steps, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    }
    await dev.queue.onSubmittedWorkDone();
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) {
      dev.queue.writeBuffer(this.step, 0, Uint32Array.from([this.pos, token]));
      const enc = dev.createCommandEncoder();
      this.k.encode(enc, this.plan(1, 'none', false, this.stepForm(this.pos)).items, undefined, ts ? { querySet: this.querySet!, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } : undefined);
      dev.queue.submit([enc.finish()]);
      this.pos++;
      this.mlpTokens++;
    }
    await dev.queue.onSubmittedWorkDone();
    const ms = (performance.now() - t0) / steps;
    let gpuMs: number | undefined;
    if (ts) {
      const enc = dev.createCommandEncoder();
      enc.resolveQuerySet(this.querySet!, 0, 2 * steps, resolve!, 0);
      enc.copyBufferToBuffer(resolve!, 0, read!, 0, 16 * steps);
      dev.queue.submit([enc.finish()]);
      await read!.mapAsync(GPUMapMode.READ);
      const t = new BigUint64Array(read!.getMappedRange());
      let sum = 0n;
      for (let i = 0; i < steps; i++) sum += t[2 * i + 1] - t[2 * i];
      gpuMs = Number(sum) / 1e6 / steps;
      read!.unmap(); read!.destroy(); resolve!.destroy();
    }
    return { steps, msPerToken: ms, gpuMsPerToken: gpuMs, dispatchesPerToken: plan.dispatches, weightBytesPerToken: this.weightBytesPerToken() };
  }

  async profileDecodeSteps(steps: number, token = 0): Promise<DecodeProfile> {
    const dev = this.k.device;
    if (!this.gpu.timestamps) fail('profiling needs the timestamp-query feature, which this adapter does not offer');
    if (this.pos + steps > this.config.maxPositions) fail(`${steps} decode steps from position ${this.pos} pass the context of ${this.config.maxPositions}`);
    // Each step runs its position's plan (stepForm); forms differ in their kernels (attention's pair
    // past FUSED_ATTENTION_MAX_KEYS has one dispatch more), so rows add up by kernel, step by step.
    const dispatchesAt = (pos: number) => this.plan(1, 'none', false, this.stepForm(pos)).items.flatMap((it) => ('d' in it ? [it.d] : []));
    const pos0 = this.pos;
    const n = 2 * Math.max(...Array.from({ length: steps }, (_, i) => dispatchesAt(pos0 + i).length));
    // One query set a step, resolved after it (WebGPU caps a query set at 4096 queries).
    const qs = dev.createQuerySet({ type: 'timestamp', count: n });
    const resolve = dev.createBuffer({ size: 8 * n, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = dev.createBuffer({ size: 8 * n, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const rows = new Map<string, DecodeProfile['rows'][number]>();
    let dispatches = 0;
    try {
      for (let i = 0; i < steps; i++) {
        const ds = dispatchesAt(this.pos);
        dispatches += ds.length;
        dev.queue.writeBuffer(this.step, 0, Uint32Array.from([this.pos, token]));
        const enc = dev.createCommandEncoder();
        this.k.encodeTimed(enc, ds, qs);
        enc.resolveQuerySet(qs, 0, 2 * ds.length, resolve, 0);
        enc.copyBufferToBuffer(resolve, 0, read, 0, 16 * ds.length);
        dev.queue.submit([enc.finish()]);
        this.pos++;
        this.mlpTokens++;
        await read.mapAsync(GPUMapMode.READ, 0, 16 * ds.length);
        const t = new BigUint64Array(read.getMappedRange(0, 16 * ds.length));
        ds.forEach((x, j) => {
          const workgroups = x.wg[0] * x.wg[1] * x.wg[2], key = `${x.label}/${workgroups}`;
          const r = rows.get(key) ?? { kernel: x.label, workgroups, perToken: 0, usPerToken: 0 };
          r.perToken += 1 / steps;
          r.usPerToken += (t[2 * j + 1] > t[2 * j] ? Number(t[2 * j + 1] - t[2 * j]) : 0) / 1e3 / steps;
          rows.set(key, r);
        });
        read.unmap();
      }
    } finally { qs.destroy(); resolve.destroy(); read.destroy(); }
    const out = [...rows.values()].map((r) => ({ ...r, perToken: Math.round(r.perToken * 1000) / 1000 })).sort((a, b) => b.usPerToken - a.usPerToken);
    return { steps, rows: out, busyMsPerToken: out.reduce((a, r) => a + r.usPerToken, 0) / 1e3, dispatchesPerToken: dispatches / steps };
  }

  dispose(): void {
    this.dropPlans();
    for (const b of [...this.buffers, ...this.sparseBufs, ...(this.parked?.bufs ?? []), ...this.idStage]) b.destroy();
    this.parked = null;
    for (const m of this.matrices) for (const p of m.parts) p.buffer.destroy();
    this.stage?.destroy(); this.querySet?.destroy();
    if (this.stats) destroyStats(this.stats);
    this.buffers = []; this.sparseBufs = []; this.matrices = []; this.idStage = []; this.stage = null; this.stats = null;
    // A live Dawn device busy-polls a CPU core: destroy the one this runner opened.
    if (this.ownsDevice) { this.gpu.device.destroy(); this.ownsDevice = false; }
  }
}

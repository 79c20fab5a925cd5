/**
 * The published OPT shapes as typed configs, and the bytes a batch-1 decode step must read.
 *
 * Decode is memory-bound: every weight a token uses is read once, so bytes / bandwidth is the floor
 * on ms/token, and time / floor is the honest measure of an implementation (DESIGN.md, GPU practice).
 */
import { parseOptConfig, type OptConfig } from '../model/config.js';
import type { HeadKvMode, SparsityPolicy } from '../sparsity/policy.js';
import { fail } from '../util/errors.js';

/** [layers, hidden, heads, ffn] as in the Hugging Face facebook/opt-* config.json files. */
const TABLE: Record<string, [number, number, number, number]> = {
  'opt-125m': [12, 768, 12, 3072],
  'opt-350m': [24, 1024, 16, 4096],
  'opt-1.3b': [24, 2048, 32, 8192],
  'opt-2.7b': [32, 2560, 32, 10240],
  'opt-6.7b': [32, 4096, 32, 16384],
  'opt-13b': [40, 5120, 40, 20480],
  'opt-30b': [48, 7168, 56, 28672],
  'opt-66b': [64, 9216, 72, 36864],
};

export const SHAPE_NAMES = Object.keys(TABLE);

/**
 * The HF-style config.json of a shape (also what bench/hf_baseline.py builds its OPTConfig from;
 * test/bench-shapes.test.ts checks that the two agree). OPT-350m alone embeds at 512 wide with
 * project_in/out and is post-LayerNorm (no final LayerNorm).
 */
export function shapeJson(name: string): Record<string, unknown> {
  const row = TABLE[name];
  if (!row) fail(`unknown shape "${name}" (choose ${SHAPE_NAMES.join(', ')})`);
  const [layers, hidden, heads, ffn] = row;
  const is350m = name === 'opt-350m';
  return {
    model_type: 'opt', activation_function: 'relu',
    vocab_size: 50272, max_position_embeddings: 2048,
    num_hidden_layers: layers, hidden_size: hidden, num_attention_heads: heads, ffn_dim: ffn,
    word_embed_proj_dim: is350m ? 512 : hidden,
    do_layer_norm_before: !is350m,
    enable_bias: true, tie_word_embeddings: true,
    bos_token_id: 2, eos_token_id: 2, pad_token_id: 1, dtype: 'float16',
  };
}

export function shapeConfig(name: string): OptConfig {
  return parseOptConfig(shapeJson(name));
}

/** What one layer's MLP reads per token. */
export interface MlpBytesSpec {
  k: number;          // neurons computed (rows of fc1 and of fc2 transposed)
  rank: number;       // predictor rank r (0: no predictor, e.g. fixed index sets)
  denseFc1: boolean;  // the oracle selector computes fc1 in full to find the true top-K
  blockLookahead?: boolean;  // the block rule chooses beside attention (predictors reading attn_in): its B int8 where the layout says so
  aCols?: number;     // columns of the predictor's A (default d; 2d reading attn_io)
}

/**
 * Bytes per element, by kind of tensor. Matrices are what matter; vectors (biases, LayerNorm
 * parameters) and the KV cache are held at a different width by some backends.
 */
export interface Layout {
  weightBytes: number;     // weight matrices
  vectorBytes: number;     // biases and LayerNorm parameters (also the predictor bias)
  kvBytes: number;         // KV cache elements
  predictorBytes: number;  // predictor matrices A and B
  /** The block rule's B, where it is scored beside attention, as int8 rows (a byte a value, padded to 16, and a 16-byte scale chunk a row; ops.ts matrixI8). */
  blockBInt8?: boolean;
}

/** PyTorch / Hugging Face fp16: everything 2 bytes (also the plain "fp16 model" count). */
export const FP16_LAYOUT: Layout = { weightBytes: 2, vectorBytes: 2, kvBytes: 2, predictorBytes: 2 };
/** src/backend/webgpu/runner.ts: fp16 matrices, f32 vectors and an f32 KV cache (its default; kvCache 'f16': 2 bytes), the lookahead's block-rule B in int8 (predictorInt8). */
export const WEBGPU_LAYOUT: Layout = { weightBytes: 2, vectorBytes: 4, kvBytes: 4, predictorBytes: 2, blockBInt8: true };
/** src/backend/cpu/runner.ts converts everything to float32. */
export const CPU_LAYOUT: Layout = { weightBytes: 4, vectorBytes: 4, kvBytes: 4, predictorBytes: 4 };

export interface ByteOptions {
  /** Tokens already in the KV cache before this one (it attends to position + 1 keys). */
  position: number;
  /** Element widths (default FP16_LAYOUT). */
  layout?: Layout;
  /** Per layer (L): null or missing runs that layer's MLP dense. */
  mlp?: (MlpBytesSpec | null)[] | null;
  /**
   * Fraction of attention heads computed (1: dense). Scales Q/K/V/O weights and the KV read (an upper
   * bound with sparse heads: a chosen head does not read the positions it skipped).
   */
  headDensity?: number;
  /**
   * With headDensity < 1: 'all' (default) every head still reads its K/V weights; 'chosen' scales them
   * too; 'lazy' reads the chosen heads' at even positions and every head's at odd ones, counted as the
   * mean of the two ((density + 1) / 2) at every position.
   */
  headKv?: HeadKvMode;
  /** Rank of the head predictors of the layers with sparse heads (0: fixed sets, no predictor; any other value: the (H, d) product B·A is read). */
  headRank?: number;
}

/** Bytes read by one decode token, by part. */
export interface TokenBytes {
  embed: number;      // one token row, one position row, project_in/out, final LayerNorm
  attention: number;  // LayerNorm + Q/K/V/O weights and biases, all layers
  kv: number;         // K and V cache rows attended to, all layers
  mlp: number;        // LayerNorm + fc1/fc2 (selected rows when sparse), all layers
  predictor: number;  // low-rank predictors, all sparse layers
  lmHead: number;     // (V, e)
  total: number;
}

/**
 * Bytes one decode step reads. Writes (the new K/V row, activations) and the top-K scan over f
 * scores are small next to these and not counted. For a sparse layer fc2's K rows are an upper
 * bound: the fc2 kernel skips neurons whose ReLU output is zero.
 */
export function tokenBytes(c: OptConfig, o: ByteOptions): TokenBytes {
  const { weightBytes: wb, vectorBytes: vb, kvBytes: kvb, predictorBytes: pb, blockBInt8 } = o.layout ?? FP16_LAYOUT;
  const hd = o.headDensity ?? 1;
  const d = c.hidden, f = c.ffn, e = c.wordEmbedProjDim, b = c.enableBias ? 1 : 0;
  let embed = (e + d) * wb;
  if (e !== d) embed += 2 * d * e * wb;
  if (c.finalLayerNorm) embed += 2 * d * vb;
  // Q/K/V/O weights + Q/K/V biases scale with heads (K and V only with headKv 'chosen'); out_proj's
  // bias and the LayerNorm do not.
  const kvShare = o.headKv === 'chosen' ? hd : o.headKv === 'lazy' ? (hd + 1) / 2 : 1;
  const attnLayer = (2 * hd + 2 * kvShare) * (d * d * wb) + (hd + 2 * kvShare) * d * b * vb + (d * b + 2 * d) * vb;
  const kvLayer = hd * 2 * (o.position + 1) * d * kvb;
  let mlp = 0, predictor = 0;
  for (let l = 0; l < c.layers; l++) {
    const s = o.mlp?.[l] ?? null;
    const ln = 2 * d * vb;
    if (!s) { mlp += ln + 2 * f * d * wb + (f + d) * b * vb; continue; }
    const fc1Rows = s.denseFc1 ? f : s.k;
    mlp += ln + (fc1Rows + s.k) * d * wb + (fc1Rows + d) * b * vb;
    const bBytes = s.blockLookahead && blockBInt8 ? f * (16 + Math.ceil(s.rank / 16) * 16) : f * s.rank * pb;
    if (s.rank > 0) predictor += s.rank * (s.aCols ?? d) * pb + bBytes + f * vb;
  }
  // Head predictors (HeadLayerPolicy): the runners' one (H, d) matrix B·A at weight width (H < r, so
  // fewer bytes than A) and the bias in f32; the rank does not enter.
  if (o.headRank) predictor += c.layers * (c.heads * d * wb + c.heads * 4);
  const attention = c.layers * attnLayer, kv = c.layers * kvLayer, lmHead = c.vocabSize * e * wb;
  return { embed, attention, kv, mlp, predictor, lmHead, total: embed + attention + kv + mlp + predictor + lmHead };
}

/** Mean bytes per token over decode steps at positions [start, start + n): KV reads grow linearly. */
export function meanTokenBytes(c: OptConfig, o: Omit<ByteOptions, 'position'>, start: number, n: number): TokenBytes {
  return tokenBytes(c, { ...o, position: start + (n - 1) / 2 });
}

/** Neurons per sparse layer at a density: at least one. */
export function mlpK(c: OptConfig, density: number): number {
  return Math.max(1, Math.min(c.ffn, Math.round(density * c.ffn)));
}

/** The same spec for every layer (the synthetic benchmarks). */
export function uniformMlp(c: OptConfig, density: number, rank: number): MlpBytesSpec[] {
  return Array.from({ length: c.layers }, () => ({ k: mlpK(c, density), rank, denseFc1: false }));
}

/** What a sparsity policy makes each layer read. */
export function mlpBytesFromPolicy(p: SparsityPolicy | null): (MlpBytesSpec | null)[] | null {
  if (!p) return null;
  return p.mlp.map((lp) => lp && {
    k: lp.k,
    rank: lp.selector.kind === 'predictor' ? lp.selector.predictor.rank : 0,
    denseFc1: lp.selector.kind === 'oracle',
    blockLookahead: p.input === 'attn_in' && lp.selector.kind === 'predictor' && !!lp.selector.block,
    ...(p.input === 'attn_io' && lp.selector.kind === 'predictor' ? { aCols: lp.selector.predictor.A.length / lp.selector.predictor.rank } : {}),
  });
}

/**
 * DejaVu's predictor proportions: rank 1000 at d = 12288 (OPT-175B), scaled with d and rounded to a
 * multiple of 16 (at least 16): 336 at d = 4096, 752 at d = 9216.
 */
export function predictorRank(d: number): number {
  return Math.max(16, Math.round((1000 * d) / 12288 / 16) * 16);
}

/** Bytes the weights occupy on the device (tied lm_head counted once). */
export function deviceWeightBytes(c: OptConfig, layout: Layout = FP16_LAYOUT): number {
  const full = tokenBytes(c, { position: -1, layout: { ...layout, kvBytes: 0 } });
  // tokenBytes reads one embedding/position row; the device holds them all (embed_tokens == lm_head).
  const wb = layout.weightBytes;
  return full.total - (c.wordEmbedProjDim + c.hidden) * wb + (c.maxPositions + 2) * c.hidden * wb;
}

/** Bytes of a KV cache for the whole context (the runners allocate it at load). */
export function kvCacheBytes(c: OptConfig, layout: Layout = FP16_LAYOUT): number {
  return c.layers * 2 * c.maxPositions * c.hidden * layout.kvBytes;
}

import type { Runner } from '../backend/types.js';
import type { Checkpoint } from '../model/checkpoint.js';
import { toF32 } from '../model/tensor.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { fail } from '../util/errors.js';
import { headContributions } from './head-fit.js';

/**
 * Sparsity analysis of a dense OPT model over a text: per layer, how many MLP neurons are zero after
 * ReLU, how many neurons carry most of the MLP output, and how concentrated the attention heads'
 * output norms are. Statistics stream over tokens; memory does not grow with tokens × neurons
 * (per-layer histograms of size ffn + 1, per-neuron counters, and a small heatmap sample only).
 */

/** Output-norm shares whose neuron counts are reported (n90, n95, n99). */
export const NORM_SHARES = [0.9, 0.95, 0.99] as const;
/** Fractions of heads whose share of the total head norm is reported. */
export const HEAD_FRACTIONS = [0.1, 0.3, 0.5] as const;

export interface LayerSparsity {
  layer: number;
  /** MLP width f. */
  ffn: number;
  /** Fraction of the f neurons that are exactly zero after ReLU, per token: mean, std and p10/p90 over tokens. */
  mlp_zero_fraction: { mean: number; std: number; p10: number; p90: number };
  /**
   * Mean over tokens of the fewest neurons whose output-norm weights sum to at least 90/95/99% of the
   * token's total (weight of neuron j = act_j · ‖W2[:, j]‖₂; see `analyze`).
   */
  mlp_neurons_for_output_norm: { at_90: number; at_95: number; at_99: number };
  /** Mean over tokens of the share of the total head-output norm carried by the top 10/30/50% of heads. */
  head_norm_share: { top_10pct: number; top_30pct: number; top_50pct: number };
  /** How many heads "top 10/30/50%" is for this model (ceil(p · H), at least 1). */
  head_counts: { top_10pct: number; top_30pct: number; top_50pct: number };
  /** Mean cumulative share of the k largest head norms, k = 1..H (comparable to reference.json's head_norm_cumshare). */
  head_norm_cumshare: number[];
  /**
   * The same shares for each head's contribution to out_proj's output, ‖W_o,h o_h‖: what the head adds
   * to the residual, the measure the head oracle and the head predictors rank by.
   */
  head_contrib_share: { top_10pct: number; top_30pct: number; top_50pct: number };
  head_contrib_cumshare: number[];
}

/** A token × neuron sample of fc1 activations (after ReLU) for one layer, for the heatmap. */
export interface ActivitySample {
  layer: number;
  /** Position in the token stream of the first sampled token. */
  firstToken: number;
  tokens: number;
  /** Neuron ids shown, in display order (most often active first). */
  neurons: number[];
  /** Firing rate of each shown neuron over the whole run (same order as `neurons`). */
  firingRate: number[];
  /** values[i][t]: activation of neurons[i] at sampled token t. */
  values: Float32Array[];
}

export interface SparsityAnalysis {
  tokens: number;
  window: number;
  layers: LayerSparsity[];
  sample?: ActivitySample;
}

export interface AnalyzeOptions {
  /** Tokens per forward window (each window starts with an empty KV cache). Default: the context length. */
  window?: number;
  /** Layer whose activations are sampled for the heatmap (default: none). */
  sampleLayer?: number;
  /** Tokens and neurons in the heatmap sample (default 128 × 256). */
  sampleTokens?: number;
  sampleNeurons?: number;
  /** Called after each window with tokens done so far. */
  onProgress?: (done: number, total: number) => void;
}

/** Per-layer streaming accumulators. */
class LayerAcc {
  tokens = 0;
  /** zeroHist[k]: tokens with exactly k zero neurons (exact quantiles in O(f) memory). */
  readonly zeroHist: Float64Array;
  zeroSum = 0;
  zeroSumSq = 0;
  readonly normCountSum = new Float64Array(NORM_SHARES.length);
  normTokens = 0;
  readonly cumShareSum: Float64Array;
  headTokens = 0;
  readonly contribShareSum: Float64Array;
  contribTokens = 0;
  /** Tokens on which each neuron was active (> 0). */
  readonly active: Float64Array;

  constructor(readonly f: number, readonly H: number) {
    this.zeroHist = new Float64Array(f + 1);
    this.cumShareSum = new Float64Array(H);
    this.contribShareSum = new Float64Array(H);
    this.active = new Float64Array(f);
  }
}

/**
 * Reads the first `n` tokens of a text whose documents are separated by `<|endoftext|>`: each document
 * is encoded with the tokenizer's special tokens (OPT: a leading </s>), long documents in pieces cut
 * after a blank line so that only the needed part of the text is encoded.
 */
export function tokenizeDocuments(tokenizer: TextTokenizer, text: string, n: number, pieceChars = 16_000): number[] {
  const ids: number[] = [];
  for (const doc of text.split('<|endoftext|>')) {
    if (ids.length >= n) break;
    if (!doc.trim()) continue;
    let start = 0, first = true;
    while (start < doc.length && ids.length < n) {
      let end = Math.min(doc.length, start + pieceChars);
      if (end < doc.length) {
        const cut = doc.lastIndexOf('\n\n', end);
        if (cut > start) end = cut + 2;
      }
      ids.push(...tokenizer.encode(doc.slice(start, end), first));
      first = false;
      start = end;
    }
  }
  return ids.slice(0, n);
}

/** Adds each row's cumulative shares of its k largest values (k = 1..H) into cum; returns the rows counted (a zero row is not). */
function addCumShares(cum: Float64Array, data: Float32Array, rows: number, H: number, scratch: Float32Array): number {
  let n = 0;
  for (let t = 0; t < rows; t++) {
    scratch.set(data.subarray(t * H, (t + 1) * H));
    scratch.sort();
    let total = 0;
    for (let h = 0; h < H; h++) total += scratch[h];
    if (!(total > 0)) continue;
    let c = 0;
    for (let k = 0; k < H; k++) {
      c += scratch[H - 1 - k];
      cum[k] += c / total;
    }
    n++;
  }
  return n;
}

/** Nearest-rank quantile of a histogram over values 0..hist.length-1. */
function histQuantile(hist: Float64Array, total: number, q: number): number {
  const rank = Math.max(1, Math.ceil(q * total));
  let c = 0;
  for (let k = 0; k < hist.length; k++) {
    c += hist[k];
    if (c >= rank) return k;
  }
  return hist.length - 1;
}

/**
 * Runs the dense model over `ids` in windows, tracing fc1 activations and head norms.
 *
 * "Output norm" of the MLP: its output for a token is Σ_j act_j · W2[:, j] (plus the bias), so neuron j
 * contributes a vector of norm act_j · ‖W2[:, j]‖₂ (act_j ≥ 0 after ReLU). Those norms are the weights
 * we rank: n90 is the fewest neurons whose weights sum to 90% of the token's total weight. (The total
 * is the triangle-inequality bound of the output norm, the usual proxy; the activation alone would
 * ignore that some neurons write much larger columns than others.)
 */
export async function analyzeSparsity(
  runner: Runner, checkpoint: Checkpoint, ids: number[], opts: AnalyzeOptions = {},
): Promise<SparsityAnalysis> {
  const c = runner.config, L = c.layers, f = c.ffn, H = c.heads;
  const window = opts.window ?? c.maxPositions;
  if (!Number.isInteger(window) || window < 1) fail(`--window must be a positive integer, got ${window}`);
  if (window > c.maxPositions) fail(`--window ${window} is longer than the model's context of ${c.maxPositions}`);
  if (ids.length === 0) fail('no tokens to analyze');
  const sampleLayer = opts.sampleLayer;
  if (sampleLayer !== undefined && !(Number.isInteger(sampleLayer) && sampleLayer >= 0 && sampleLayer < L)) {
    fail(`--plot-layer ${sampleLayer} is out of range (the model has layers 0..${L - 1})`);
  }

  // ‖W2[:, j]‖₂ per layer: fc2W is (d, f) row-major, neuron j is column j.
  const colNorm = checkpoint.weights.layers.map((lw) => {
    const w = toF32(lw.fc2W), d = c.hidden, out = new Float64Array(f);
    for (let i = 0; i < d; i++) {
      const row = i * f;
      for (let j = 0; j < f; j++) out[j] += w[row + j] * w[row + j];
    }
    return Float32Array.from(out, Math.sqrt);
  });

  const acc = Array.from({ length: L }, () => new LayerAcc(f, H));
  const contributions = headContributions(checkpoint);
  const sampleTokens = Math.min(opts.sampleTokens ?? 128, ids.length - 1 > 0 ? ids.length - 1 : ids.length);
  // The sample skips stream position 0 (the document's </s>, whose activations are atypical).
  const sampleStart = ids.length > 1 ? 1 : 0;
  const sampleRows = sampleLayer !== undefined ? new Float32Array(sampleTokens * f) : undefined;
  const weights = new Float32Array(f);
  const heads = new Float32Array(H);
  let offset = 0; // stream position of the current window's first token

  const onTrace = (l: number, point: string, data: Float32Array, rows: number) => {
    const a = acc[l];
    if (point === 'fc1_act') {
      const cn = colNorm[l];
      for (let t = 0; t < rows; t++) {
        const base = t * f;
        let zeros = 0, n = 0, total = 0;
        for (let j = 0; j < f; j++) {
          const v = data[base + j];
          if (v <= 0) { zeros++; continue; }
          a.active[j]++;
          const w = v * cn[j];
          weights[n++] = w;
          total += w;
        }
        a.tokens++;
        a.zeroHist[zeros]++;
        const z = zeros / f;
        a.zeroSum += z;
        a.zeroSumSq += z * z;
        if (total > 0) {
          const ws = weights.subarray(0, n).sort(); // ascending: walk from the end
          let cum = 0, k = 0, s = 0;
          for (let i = n - 1; i >= 0 && s < NORM_SHARES.length; i--) {
            cum += ws[i];
            k++;
            while (s < NORM_SHARES.length && cum >= NORM_SHARES[s] * total * (1 - 1e-9)) a.normCountSum[s++] += k;
          }
          while (s < NORM_SHARES.length) a.normCountSum[s++] += n;
        }
        a.normTokens++; // a token with no active neuron needs 0 neurons
        if (sampleRows && l === sampleLayer) {
          const pos = offset + t - sampleStart;
          if (pos >= 0 && pos < sampleTokens) sampleRows.set(data.subarray(base, base + f), pos * f);
        }
      }
    } else if (point === 'head_norm') {
      a.headTokens += addCumShares(a.cumShareSum, data, rows, H, heads);
    } else if (point === 'attn_out') {
      a.contribTokens += addCumShares(a.contribShareSum, contributions(l, data, rows), rows, H, heads);
    }
  };

  for (offset = 0; offset < ids.length; offset += window) {
    runner.reset();
    await runner.forward(ids.slice(offset, offset + window), { noLogits: true, trace: onTrace, tracePoints: ['fc1_act', 'head_norm', 'attn_out'] });
    opts.onProgress?.(Math.min(ids.length, offset + window), ids.length);
  }
  runner.reset();

  const headCount = (p: number) => Math.min(H, Math.max(1, Math.ceil(p * H - 1e-9)));
  const layers = acc.map((a, l): LayerSparsity => {
    const mean = a.zeroSum / a.tokens;
    const cum = Array.from(a.cumShareSum, (s) => (a.headTokens ? s / a.headTokens : 0));
    const contrib = Array.from(a.contribShareSum, (s) => (a.contribTokens ? s / a.contribTokens : 0));
    const [h10, h30, h50] = HEAD_FRACTIONS.map(headCount);
    return {
      layer: l,
      ffn: f,
      mlp_zero_fraction: {
        mean,
        std: Math.sqrt(Math.max(0, a.zeroSumSq / a.tokens - mean * mean)),
        p10: histQuantile(a.zeroHist, a.tokens, 0.1) / f,
        p90: histQuantile(a.zeroHist, a.tokens, 0.9) / f,
      },
      mlp_neurons_for_output_norm: {
        at_90: a.normCountSum[0] / a.normTokens,
        at_95: a.normCountSum[1] / a.normTokens,
        at_99: a.normCountSum[2] / a.normTokens,
      },
      head_norm_share: { top_10pct: cum[h10 - 1], top_30pct: cum[h30 - 1], top_50pct: cum[h50 - 1] },
      head_counts: { top_10pct: h10, top_30pct: h30, top_50pct: h50 },
      head_norm_cumshare: cum,
      head_contrib_share: { top_10pct: contrib[h10 - 1], top_30pct: contrib[h30 - 1], top_50pct: contrib[h50 - 1] },
      head_contrib_cumshare: contrib,
    };
  });

  let sample: ActivitySample | undefined;
  if (sampleRows && sampleLayer !== undefined) {
    const a = acc[sampleLayer];
    const count = Math.min(f, opts.sampleNeurons ?? 256);
    // The first `count` neurons (an unbiased sample of the layer), shown most-often-active first.
    const neurons = Array.from({ length: count }, (_, j) => j).sort((x, y) => a.active[y] - a.active[x] || x - y);
    const values = neurons.map((j) => {
      const row = new Float32Array(sampleTokens);
      for (let t = 0; t < sampleTokens; t++) row[t] = sampleRows[t * f + j];
      return row;
    });
    sample = {
      layer: sampleLayer, firstToken: sampleStart, tokens: sampleTokens, neurons,
      firingRate: neurons.map((j) => a.active[j] / a.tokens), values,
    };
  }
  return { tokens: ids.length, window, layers, sample };
}

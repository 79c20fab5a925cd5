/** Perplexity of a runner over a text file: exp(mean negative log-likelihood per scored token). */
import type { RowStats, Runner } from '../backend/types.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { fail } from '../util/errors.js';
import { scoredTokens, tokenizeDocuments, windowsOf } from './corpus.js';
import { rowStatsOf } from '../backend/row-stats.js';
import type { ProgressFn } from './progress.js';

export interface PerplexityOptions {
  /** Window length in tokens; default (and maximum) the model's context length. */
  window?: number;
  /** Score only the first `limit` tokens of the tokenized documents. */
  limit?: number;
  /**
   * Feed each window one token a forward, as decode does, instead of in one forward. Sparse heads
   * (HeadLayerPolicy) apply to one-token forwards only, so their quality shows only this way.
   */
  decode?: boolean;
  onProgress?: ProgressFn;
}

export interface PerplexityResult {
  ppl: number;
  /** Mean negative log-likelihood per scored token, in nats. */
  nll: number;
  /** Tokens scored (predictions), excluding each window's first token. */
  tokens: number;
  windows: number;
  window: number;
}

/** The windows a perplexity run scores, with the options checked against the model. */
export function prepareWindows(runner: Runner, tokenizer: TextTokenizer, text: string, opts: PerplexityOptions): { windows: number[][]; window: number } {
  const window = opts.window ?? runner.config.maxPositions;
  if (!Number.isInteger(window) || window < 2) fail(`--window must be an integer >= 2, got ${window}`);
  if (window > runner.config.maxPositions) fail(`--window ${window} is longer than the model's context of ${runner.config.maxPositions}`);
  const windows = windowsOf(tokenizeDocuments(tokenizer, text, opts.limit), window);
  if (windows.length === 0) fail('the text has no tokens to score (it needs at least one document of 2+ tokens)');
  return { windows, window };
}

/**
 * (T, V) logits of `ids` the way generation runs them: ids[0, prompt) as one forward (a prompt), then
 * one token a forward. Rows before prompt − 1 stay zero. Sparse heads (HeadLayerPolicy) act on the
 * one-token forwards only. Runs from the runner's current position (callers reset it).
 */
export async function decodeLogits(runner: Runner, ids: number[], prompt: number): Promise<Float32Array> {
  const V = runner.config.vocabSize, logits = new Float32Array(ids.length * V);
  logits.set(await runner.forward(ids.slice(0, prompt)), (prompt - 1) * V);
  for (let t = prompt; t < ids.length; t++) logits.set(await runner.forward([ids[t]]), t * V);
  return logits;
}

/** (T, V) logits of one window from an empty KV cache: in one forward, or with `decode` one token a forward. */
export async function windowLogits(runner: Runner, ids: number[], decode = false): Promise<Float32Array> {
  runner.reset();
  const logits = decode ? await decodeLogits(runner, ids, 1) : await runner.forward(ids, { allLogits: true });
  runner.reset();
  return logits;
}

/** Where a dense run's logits are kept for the sparse run's KL in decode mode (the host path of windowStats). */
export interface HostReference { logits: Float32Array | null }

/**
 * RowStats of one window from an empty KV cache, each row's target the next token (the last row's
 * unused): `forwardStats` (on the device with WebGPU: no logits read back), or with `decode` the
 * logits one token a forward and rowStatsOf on the host, the kept logits then in `host`. `keep` /
 * `kl` as in StatsOptions.
 */
export async function windowStats(runner: Runner, ids: number[], opts: { decode?: boolean; keep?: boolean; kl?: boolean } = {}, host: HostReference = { logits: null }): Promise<RowStats> {
  const targets = [...ids.slice(1), 0], V = runner.config.vocabSize;
  if (!opts.decode) {
    runner.reset();
    const stats = await runner.forwardStats(ids, { targets, keep: opts.keep, kl: opts.kl });
    runner.reset();
    return stats;
  }
  if (opts.kl && host.logits?.length !== ids.length * V) fail(`windowStats: kl needs a window of ${ids.length} tokens kept before`);
  const logits = await windowLogits(runner, ids, true);
  if (opts.keep) host.logits = logits;
  return rowStatsOf(logits, ids.length, V, targets, opts.kl ? host.logits : null);
}

/** Sum of -log p(ids[t+1] | ids[..t]) over a window of n tokens, from its row statistics. */
export function windowNll(stats: RowStats, n: number): number {
  let nll = 0;
  for (let t = 0; t + 1 < n; t++) nll -= stats.target[t] - stats.lse[t];
  return nll;
}

export function pplResult(nllSum: number, tokens: number, windows: number, window: number): PerplexityResult {
  const nll = nllSum / tokens;
  return { ppl: Math.exp(nll), nll, tokens, windows, window };
}

/** Perplexity under whatever sparsity the runner is set to. */
export async function perplexity(runner: Runner, tokenizer: TextTokenizer, text: string, opts: PerplexityOptions = {}): Promise<PerplexityResult> {
  const { windows, window } = prepareWindows(runner, tokenizer, text, opts);
  const total = scoredTokens(windows);
  let nllSum = 0, done = 0;
  opts.onProgress?.(0, total);
  for (const ids of windows) {
    nllSum += windowNll(await windowStats(runner, ids, { decode: opts.decode }), ids.length);
    done += ids.length - 1;
    opts.onProgress?.(done, total);
  }
  return pplResult(nllSum, total, windows.length, window);
}

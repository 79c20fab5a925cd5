/** Perplexity of a runner over a text file: exp(mean negative log-likelihood per scored token). */
import type { Runner } from '../backend/types.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { fail } from '../util/errors.js';
import { scoredTokens, tokenizeDocuments, windowsOf } from './corpus.js';
import { tokenLogprob } from './logprob.js';
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

/** Sum of -log p(ids[t+1] | ids[..t]) over a window, from its logits. */
export function windowNll(logits: Float32Array, ids: number[], V: number): number {
  let nll = 0;
  for (let t = 0; t + 1 < ids.length; t++) nll -= tokenLogprob(logits, t, V, ids[t + 1]);
  return nll;
}

export function pplResult(nllSum: number, tokens: number, windows: number, window: number): PerplexityResult {
  const nll = nllSum / tokens;
  return { ppl: Math.exp(nll), nll, tokens, windows, window };
}

/** Perplexity under whatever sparsity the runner is set to. */
export async function perplexity(runner: Runner, tokenizer: TextTokenizer, text: string, opts: PerplexityOptions = {}): Promise<PerplexityResult> {
  const { windows, window } = prepareWindows(runner, tokenizer, text, opts);
  const total = scoredTokens(windows), V = runner.config.vocabSize;
  let nllSum = 0, done = 0;
  opts.onProgress?.(0, total);
  for (const ids of windows) {
    nllSum += windowNll(await windowLogits(runner, ids, opts.decode), ids, V);
    done += ids.length - 1;
    opts.onProgress?.(done, total);
  }
  return pplResult(nllSum, total, windows.length, window);
}

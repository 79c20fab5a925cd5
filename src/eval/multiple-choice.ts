/** Zero-shot multiple choice: the choice whose continuation is most likely wins. */
import type { Runner } from '../backend/types.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import type { ProgressFn } from './progress.js';
import { scoreRequest } from './score.js';
import type { McItem } from './tasks.js';

export interface McResult {
  /** Fraction of items where the highest total log-likelihood is the gold choice. */
  acc: number;
  /** Same, with each log-likelihood divided by its continuation's length in characters (lm-eval's acc_norm). */
  accNorm: number;
  n: number;
  /** Per item: the chosen index by raw and by normalised log-likelihood. */
  predictions: number[];
  predictionsNorm: number[];
  /** Per item: log-likelihood of each choice. */
  logprobs: number[][];
}

/** Index of the largest value (the first on ties). */
export function argmax(xs: number[]): number {
  let b = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i] > xs[b]) b = i;
  return b;
}

/** Accuracy figures from per-choice log-likelihoods (kept apart from the model so tests can feed numbers). */
export function mcResult(items: McItem[], logprobs: number[][]): McResult {
  const predictions = logprobs.map(argmax);
  const predictionsNorm = logprobs.map((lp, i) => argmax(lp.map((x, j) => x / items[i].requests[j].continuation.length)));
  const hits = (p: number[]) => p.filter((c, i) => c === items[i].gold).length / Math.max(1, items.length);
  return { acc: hits(predictions), accNorm: hits(predictionsNorm), n: items.length, predictions, predictionsNorm, logprobs };
}

/** Scores every choice of every item under whatever sparsity the runner is set to (`decode`: scoreIds). */
export async function multipleChoice(runner: Runner, tokenizer: TextTokenizer, items: McItem[], onProgress?: ProgressFn, decode = false): Promise<McResult> {
  const logprobs: number[][] = [];
  onProgress?.(0, items.length);
  for (const item of items) {
    const lp: number[] = [];
    for (const r of item.requests) lp.push((await scoreRequest(runner, tokenizer, r, decode)).logprob);
    logprobs.push(lp);
    onProgress?.(logprobs.length, items.length);
  }
  return mcResult(items, logprobs);
}

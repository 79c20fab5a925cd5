/** LAMBADA: predict a passage's last word from the passage. */
import type { Runner } from '../backend/types.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import type { ProgressFn } from './progress.js';
import { scoreRequest } from './score.js';
import type { Request } from './tasks.js';

export interface LambadaResult {
  /** Fraction of items whose target tokens are exactly the greedy continuation. */
  acc: number;
  /** exp(-mean over items of the target's total log-likelihood): lm-eval's LAMBADA perplexity (per word). */
  ppl: number;
  /** exp(-mean log-likelihood per target token). */
  tokenPpl: number;
  n: number;
  tokens: number;
  /** Per item: greedy hit and target log-likelihood. */
  correct: boolean[];
  logprobs: number[];
}

/** `decode`: the target scored one token a forward after the passage's forward (scoreIds). */
export async function lambada(runner: Runner, tokenizer: TextTokenizer, items: Request[], onProgress?: ProgressFn, decode = false): Promise<LambadaResult> {
  const correct: boolean[] = [], logprobs: number[] = [];
  let tokens = 0;
  onProgress?.(0, items.length);
  for (const r of items) {
    const s = await scoreRequest(runner, tokenizer, r, decode);
    correct.push(s.greedy);
    logprobs.push(s.logprob);
    tokens += s.tokens;
    onProgress?.(correct.length, items.length);
  }
  const n = Math.max(1, items.length), sum = logprobs.reduce((a, x) => a + x, 0);
  return {
    acc: correct.filter(Boolean).length / n, ppl: Math.exp(-sum / n), tokenPpl: Math.exp(-sum / Math.max(1, tokens)),
    n: items.length, tokens, correct, logprobs,
  };
}

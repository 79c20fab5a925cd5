/** Log-likelihood of a continuation given a context: the primitive the zero-shot tasks share. */
import type { Runner } from '../backend/types.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { fail } from '../util/errors.js';
import { rowStatsOf } from '../backend/row-stats.js';
import { decodeLogits } from './perplexity.js';
import type { Request } from './tasks.js';

export interface ContinuationScore {
  /** Sum of log p over the continuation's tokens, in nats. */
  logprob: number;
  /** Whether greedy decoding from the context produces exactly the continuation's tokens. */
  greedy: boolean;
  /** Continuation tokens scored. */
  tokens: number;
}

/**
 * Context and continuation are tokenized separately (the context with the leading `</s>`, the
 * continuation without), as lm-eval does, so the scored tokens are exactly the continuation's own.
 * The last continuation token is never fed (it has nothing to predict), and a context longer than the
 * model's window loses its oldest tokens.
 */
export function requestIds(tokenizer: TextTokenizer, r: Request): { context: number[]; continuation: number[] } {
  const continuation = tokenizer.encode(r.continuation, false);
  if (continuation.length === 0) fail(`empty continuation after "${r.context.slice(-40)}"`);
  return { context: tokenizer.encode(r.context), continuation };
}

export async function scoreRequest(runner: Runner, tokenizer: TextTokenizer, r: Request, decode = false): Promise<ContinuationScore> {
  const { context, continuation } = requestIds(tokenizer, r);
  return scoreIds(runner, context, continuation, decode);
}

/**
 * With `decode`, the context runs as one forward (a prompt) and the continuation one token a forward,
 * as generation runs it: sparse heads (HeadLayerPolicy) act on those one-token forwards only.
 */
export async function scoreIds(runner: Runner, context: number[], continuation: number[], decode = false): Promise<ContinuationScore> {
  const max = runner.config.maxPositions, V = runner.config.vocabSize;
  if (continuation.length > max) fail(`a continuation of ${continuation.length} tokens does not fit the context of ${max}`);
  let input = [...context, ...continuation].slice(0, -1);
  if (input.length > max) input = input.slice(input.length - max);
  const first = input.length - continuation.length; // logits row that predicts continuation[0]
  const targets = new Array<number>(input.length).fill(0);
  continuation.forEach((tok, j) => { targets[first + j] = tok; });
  runner.reset();
  // Rows first.. only. decode: row first from the context's forward, then one token a forward.
  const stats = decode ? rowStatsOf(await decodeLogits(runner, input, first + 1), input.length, V, targets, null, first)
    : await runner.forwardStats(input, { targets, from: first });
  runner.reset();
  let logprob = 0, greedy = true;
  continuation.forEach((tok, j) => {
    logprob += stats.target[first + j] - stats.lse[first + j];
    if (stats.argmax[first + j] !== tok) greedy = false;
  });
  return { logprob, greedy, tokens: continuation.length };
}

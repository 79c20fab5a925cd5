import type { Runner } from '../backend/types.js';
import { logSumExp } from '../eval/logprob.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { fail } from '../util/errors.js';
import { argmax, isGreedy, sample, seededRandom, validateSampling, type SamplingOptions } from './sampler.js';
import { gumbelPick, MAX_DEVICE_TOPK, MAX_INV_TEMPERATURE, type GumbelSampling } from '../backend/gumbel.js';

export interface GenerateOptions extends SamplingOptions {
  /** Tokens to generate at most (default 64). */
  maxTokens?: number;
  /** Seed for sampling (default: random). */
  seed?: number;
  /** Stop when the generated text contains one of these; the stop string is not returned. */
  stop?: string[];
  /** Token ids that end generation (default: the model's EOS). */
  eosTokenIds?: number[];
  /**
   * Log-probabilities of the generated tokens (GenerationResult.logprobs), each with this many most
   * likely alternatives (0 to MAX_LOGPROBS; 0: the chosen token's only). Greedy decoding then runs
   * step by step on the host (runner.forward and argmax: the same tokens), not chained.
   */
  logprobs?: number;
  /**
   * Also score the prompt (GenerationResult.promptLogprobs): each prompt token's log-probability
   * given the tokens before it, with `logprobs` alternatives (none without it). The prompt then runs
   * with every row's logits (runner.forward allLogits), even with maxTokens 0.
   */
  promptLogprobs?: boolean;
}

/** The most alternatives per token GenerateOptions.logprobs may ask for. */
export const MAX_LOGPROBS = 20;

/** A token and its log-probability: log-softmax of its logits row, in float64. */
export interface TopLogprob { id: number; logprob: number }

/** A generated token's log-probability and the most likely tokens at its position (logit order, ties: lowest id). */
export interface TokenLogprob { id: number; logprob: number; top: TopLogprob[] }

/** A prompt token's; the first has none (logprob and top null): nothing before it predicts it. */
export interface PromptTokenLogprob { id: number; logprob: number | null; top: TopLogprob[] | null }

export interface GenerationResult {
  promptIds: number[];
  generatedIds: number[];
  text: string;
  finishReason: 'stop' | 'length';
  prefillMs: number;
  /** Mean time per generated token after the first (the first comes from prefill). */
  decodeMsPerToken: number;
  /**
   * With options.logprobs: one entry per token of generatedIds, in order (the one a stop string cut
   * included), and one more, last, for the end-of-sequence token when generation ended on it (that
   * token is not in generatedIds).
   */
  logprobs?: TokenLogprob[];
  /** With options.promptLogprobs: one entry per token of promptIds. */
  promptLogprobs?: PromptTokenLogprob[];
}

/** An async iterable of text pieces, with the whole result once iteration ends. */
export interface Generation extends AsyncIterable<string> {
  result: Promise<GenerationResult>;
  /**
   * result.logprobs as it fills: a token's entry is here before the piece that shows its text is
   * yielded (a streaming server sends them along). Empty without options.logprobs.
   */
  readonly logprobs: readonly TokenLogprob[];
  /** result.promptLogprobs, filled once the prompt has run (before the first piece). Empty until then or without the option. */
  readonly promptLogprobs: readonly PromptTokenLogprob[];
  /** The prompt's token ids (result.promptIds), known when generate() returns. */
  readonly promptIds: readonly number[];
}

const now = () => performance.now();

/**
 * Streams generated text. Pieces are emitted only once they decode to whole characters (a byte-level
 * BPE token can end inside a UTF-8 sequence) and cannot be the start of a stop string.
 *
 * Greedy decoding, and sampling by temperature with or without top-k (the Gumbel-max draw,
 * backend/gumbel.ts), run chained (runner.decodeGreedy: on WebGPU the device picks each token and
 * feeds it to the next step, no logits read back); top-p reads each step's logits and samples on the
 * host (as does top-k above MAX_DEVICE_TOPK, by the same Gumbel rule). With
 * `logprobs`, every form runs on the host (it must read the logits), with the same picks: argmax, or
 * the Gumbel draw at the same positions and seed.
 *
 * `prompt` is text (tokenized with the tokenizer's special tokens: OPT's leading </s>) or token ids,
 * used as given (no </s> added), each an integer in [0, vocabulary size).
 */
export function generate(runner: Runner, tokenizer: TextTokenizer, prompt: string | number[], o: GenerateOptions = {}): Generation {
  validateSampling(o);
  const maxTokens = o.maxTokens ?? 64;
  if (!(Number.isInteger(maxTokens) && maxTokens >= 0)) fail(`max tokens must be an integer >= 0, got ${o.maxTokens}`);
  const topN = o.logprobs;
  if (topN !== undefined && !(Number.isInteger(topN) && topN >= 0 && topN <= MAX_LOGPROBS)) fail(`logprobs must be an integer in [0, ${MAX_LOGPROBS}], got ${topN}`);
  const V = runner.config.vocabSize;
  const promptIds = typeof prompt === 'string' ? tokenizer.encode(prompt) : checkedIds(prompt, V);
  const ctx = runner.config.maxPositions;
  if (promptIds.length > ctx) fail(`prompt of ${promptIds.length} tokens is longer than the model's context of ${ctx}`);
  const budget = Math.min(maxTokens, ctx - promptIds.length);
  const eos = new Set(o.eosTokenIds ?? [runner.config.eosTokenId]);
  const stops = (o.stop ?? []).filter((s) => s.length > 0);
  const seed = o.seed ?? Math.floor(Math.random() * 2 ** 32);
  const random = seededRandom(seed);
  // Sampling by temperature, with or without top-k, draws by the Gumbel-max rule (backend/gumbel.ts),
  // which chains on the device like greedy decoding (top-k up to MAX_DEVICE_TOPK); top-p sorts the
  // candidates on the host (sample). (A temperature below 1e-30 draws the argmax anyway: greedy.)
  const invT = 1 / (o.temperature ?? 1);
  const greedy = isGreedy(o) || invT > MAX_INV_TEMPERATURE;
  const gumbel: GumbelSampling | undefined = !greedy && (o.topP ?? 1) === 1
    ? { invTemperature: invT, seed: seed >>> 0, ...(o.topK && o.topK > 0 && o.topK < V ? { topK: o.topK } : {}) } : undefined;
  const chainable = greedy || (gumbel !== undefined && (gumbel.topK ?? 0) <= MAX_DEVICE_TOPK);

  let resolve!: (r: GenerationResult) => void, reject!: (e: unknown) => void;
  const result = new Promise<GenerationResult>((a, b) => { resolve = a; reject = b; });
  result.catch(() => {}); // the iterator rethrows; an unobserved result must not crash the process
  const tokenLogprobs: TokenLogprob[] = [], promptLogprobs: PromptTokenLogprob[] = [];

  async function* run(): AsyncGenerator<string> {
    const generated: number[] = [];
    const pieces: string[] = [];
    let emitted = 0, text = '', finish: 'stop' | 'length' = 'length';
    /** Takes the next token: queues the text that is safe to show, returns whether to go on. */
    const accept = (next: number): boolean => {
      if (eos.has(next)) { finish = 'stop'; return false; }
      generated.push(next);
      text = tokenizer.decode(generated);
      const hit = stops.map((s) => text.indexOf(s)).filter((p) => p >= 0);
      if (hit.length) { text = text.slice(0, Math.min(...hit)); finish = 'stop'; }
      // Hold back an incomplete character and any tail that could begin a stop string.
      let safe = text.length;
      if (finish !== 'stop') {
        if (text.endsWith('\uFFFD')) safe = text.length - 1;
        for (const s of stops) for (let k = Math.min(s.length - 1, text.length); k > 0; k--) {
          if (s.startsWith(text.slice(text.length - k))) { safe = Math.min(safe, text.length - k); break; }
        }
      }
      if (safe > emitted) { pieces.push(text.slice(emitted, safe)); emitted = safe; }
      return finish !== 'stop';
    };
    runner.reset();
    const t0 = now();
    let logits: Float32Array;
    if (o.promptLogprobs) {
      // Row t of the (T, V) logits is the distribution after ids[0..t]: it scores ids[t + 1].
      const all = await runner.forward(promptIds, { allLogits: true });
      promptLogprobs.push(...scorePrompt(all, promptIds, V, topN ?? 0));
      logits = all.subarray((promptIds.length - 1) * V, promptIds.length * V);
    } else {
      logits = budget > 0 ? await runner.forward(promptIds) : new Float32Array(0);
    }
    const prefillMs = now() - t0;
    const t1 = now();
    // The i-th generated token is drawn from the logits of the token at position promptIds.length - 1 + i.
    const pick = (l: Float32Array, i: number) => gumbel ? gumbelPick(l, gumbel, promptIds.length - 1 + i) : greedy ? argmax(l) : sample(l, o, random);
    if (topN !== undefined) {
      // Logprobs read every step's logits: the host loop, greedy and Gumbel draws included (the same
      // picks as decodeGreedy's).
      for (let i = 0; i < budget; i++) {
        const next = pick(logits, i);
        tokenLogprobs.push(scoreToken(logits, next, V, topN)); // before accept: ahead of its piece
        const more = accept(next);
        yield* pieces.splice(0);
        if (!more) break;
        if (i + 1 < budget) logits = await runner.forward([next]);
      }
    } else if (budget > 0 && chainable) {
      // The first token comes from the prompt's logits; the runner chains the other budget - 1.
      const first = pick(logits, 0);
      if (accept(first) && budget > 1) yield* chained(first, budget - 1);
      else yield* pieces.splice(0);
    } else {
      for (let i = 0; i < budget; i++) {
        const next = pick(logits, i);
        const more = accept(next);
        yield* pieces.splice(0);
        if (!more) break;
        if (i + 1 < budget) logits = await runner.forward([next]);
      }
    }
    if (text.length > emitted) yield text.slice(emitted);
    const decodeSteps = Math.max(0, generated.length - 1);
    resolve({
      promptIds, generatedIds: generated, text, finishReason: finish, prefillMs,
      decodeMsPerToken: decodeSteps ? (now() - t1) / decodeSteps : 0,
      ...(topN !== undefined ? { logprobs: tokenLogprobs } : {}),
      ...(o.promptLogprobs ? { promptLogprobs } : {}),
    });

    /**
     * Streams the pieces of a running decodeGreedy. onToken runs inside the runner's loop and can't
     * yield, so it queues pieces and wakes this generator. If the consumer stops iterating, the next
     * onToken says stop, and the runner is left idle (awaited) before the generator finishes.
     */
    async function* chained(first: number, steps: number): AsyncGenerator<string> {
      let wake: (() => void) | null = null, done = false, cancelled = false;
      const poke = () => { const w = wake; wake = null; w?.(); };
      const decoding = runner.decodeGreedy(first, steps, (id) => {
        const more = !cancelled && accept(id);
        poke();
        return more;
      }, gumbel).finally(() => { done = true; poke(); });
      decoding.catch(() => {}); // rethrown below
      try {
        for (;;) {
          while (pieces.length) yield pieces.shift()!;
          if (done) break;
          await new Promise<void>((r) => { wake = r; });
        }
        await decoding;
      } finally {
        cancelled = true;
        await decoding.catch(() => {});
      }
    }
  }

  return {
    result,
    logprobs: tokenLogprobs,
    promptLogprobs,
    promptIds,
    [Symbol.asyncIterator]() {
      const it = run();
      return {
        next: () => it.next().catch((e) => { reject(e); throw e; }),
        return: (v?: unknown) => it.return(v as undefined),
      } as AsyncIterator<string>;
    },
  };
}

/** A prompt of token ids, copied, each checked to be a token of the model's vocabulary. */
function checkedIds(ids: number[], V: number): number[] {
  if (ids.length === 0) fail('prompt of token ids is empty');
  ids.forEach((id, i) => {
    if (!(Number.isInteger(id) && id >= 0 && id < V)) fail(`prompt token id ${id} (at index ${i}) is not in the vocabulary [0, ${V})`);
  });
  return [...ids];
}

/**
 * The `n` most likely tokens of row `row` of (rows, V) logits, by logit (ties: the lowest id; NaN
 * never taken), with their log-probabilities given the row's log-sum-exp.
 */
function topOf(logits: Float32Array, row: number, V: number, n: number, lse: number): TopLogprob[] {
  if (n === 0) return [];
  const o = row * V, ids: number[] = [];
  for (let i = 0; i < V; i++) {
    const x = logits[o + i];
    if (x !== x || (ids.length === n && !(x > logits[o + ids[n - 1]]))) continue;
    let j = ids.length;
    while (j > 0 && logits[o + ids[j - 1]] < x) j--;
    ids.splice(j, 0, i);
    if (ids.length > n) ids.pop();
  }
  return ids.map((id) => ({ id, logprob: logits[o + id] - lse }));
}

/** The chosen token's log-probability under one step's logits (V), and the top `n`. */
function scoreToken(logits: Float32Array, id: number, V: number, n: number): TokenLogprob {
  const lse = logSumExp(logits, 0, V);
  return { id, logprob: logits[id] - lse, top: topOf(logits, 0, V, n, lse) };
}

/** Each prompt token's log-probability from the row before it of the prompt's (T, V) logits. */
function scorePrompt(all: Float32Array, ids: number[], V: number, n: number): PromptTokenLogprob[] {
  return ids.map((id, t) => {
    if (t === 0) return { id, logprob: null, top: null };
    const lse = logSumExp(all, t - 1, V);
    return { id, logprob: all[(t - 1) * V + id] - lse, top: topOf(all, t - 1, V, n, lse) };
  });
}

import type { Runner } from '../backend/types.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { fail } from '../util/errors.js';
import { argmax, isGreedy, sample, seededRandom, validateSampling, type SamplingOptions } from './sampler.js';

export interface GenerateOptions extends SamplingOptions {
  /** Tokens to generate at most (default 64). */
  maxTokens?: number;
  /** Seed for sampling (default: random). */
  seed?: number;
  /** Stop when the generated text contains one of these; the stop string is not returned. */
  stop?: string[];
  /** Token ids that end generation (default: the model's EOS). */
  eosTokenIds?: number[];
}

export interface GenerationResult {
  promptIds: number[];
  generatedIds: number[];
  text: string;
  finishReason: 'stop' | 'length';
  prefillMs: number;
  /** Mean time per generated token after the first (the first comes from prefill). */
  decodeMsPerToken: number;
}

/** An async iterable of text pieces, with the whole result once iteration ends. */
export interface Generation extends AsyncIterable<string> {
  result: Promise<GenerationResult>;
}

const now = () => performance.now();

/**
 * Streams generated text. Pieces are emitted only once they decode to whole characters (a byte-level
 * BPE token can end inside a UTF-8 sequence) and cannot be the start of a stop string.
 *
 * Greedy sampling runs chained (runner.decodeGreedy: on WebGPU the device picks each token and feeds
 * it to the next step, no logits read back); other sampling reads each step's logits and samples on
 * the host. Both give the same tokens, pieces and finish for the same argmax.
 */
export function generate(runner: Runner, tokenizer: TextTokenizer, prompt: string, o: GenerateOptions = {}): Generation {
  validateSampling(o);
  const maxTokens = o.maxTokens ?? 64;
  if (!(Number.isInteger(maxTokens) && maxTokens >= 0)) fail(`max tokens must be an integer >= 0, got ${o.maxTokens}`);
  const promptIds = tokenizer.encode(prompt);
  const ctx = runner.config.maxPositions;
  if (promptIds.length > ctx) fail(`prompt of ${promptIds.length} tokens is longer than the model's context of ${ctx}`);
  const budget = Math.min(maxTokens, ctx - promptIds.length);
  const eos = new Set(o.eosTokenIds ?? [runner.config.eosTokenId]);
  const stops = (o.stop ?? []).filter((s) => s.length > 0);
  const random = seededRandom(o.seed ?? Math.floor(Math.random() * 2 ** 32));

  let resolve!: (r: GenerationResult) => void, reject!: (e: unknown) => void;
  const result = new Promise<GenerationResult>((a, b) => { resolve = a; reject = b; });
  result.catch(() => {}); // the iterator rethrows; an unobserved result must not crash the process

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
    let logits = budget > 0 ? await runner.forward(promptIds) : new Float32Array(0);
    const prefillMs = now() - t0;
    const t1 = now();
    if (budget > 0 && isGreedy(o)) {
      // The first token comes from the prompt's logits; the runner chains the other budget - 1.
      const first = argmax(logits);
      if (accept(first) && budget > 1) yield* chained(first, budget - 1);
      else yield* pieces.splice(0);
    } else {
      for (let i = 0; i < budget; i++) {
        const next = sample(logits, o, random);
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
      }).finally(() => { done = true; poke(); });
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
    [Symbol.asyncIterator]() {
      const it = run();
      return {
        next: () => it.next().catch((e) => { reject(e); throw e; }),
        return: (v?: unknown) => it.return(v as undefined),
      } as AsyncIterator<string>;
    },
  };
}

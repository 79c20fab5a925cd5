/**
 * The decode timing loop: batch 1, a random prompt, then greedy decode one token at a time.
 *
 * Times are wall clock around each awaited forward. forward() resolves after its logits are read
 * back, so each step's time covers the GPU work of that step (plus submission and readback, which
 * a real generate loop pays too).
 */
import type { Runner } from '../backend/types.js';
import { fail } from '../util/errors.js';
import { rng } from './policies.js';

export interface DecodeTiming {
  promptLen: number;
  gen: number;
  prefillMs: number;
  /** Mean over the `gen` measured decode steps. */
  msPerToken: number;
  /** Fastest and median step, to tell steady state from hiccups. */
  minMs: number;
  medianMs: number;
}

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

/**
 * A warm-up round (prefill + `warmup` decode steps: pipelines compiled, buffers touched), a reset,
 * then the measured round at the same positions: prefill of `promptLen` tokens, `gen` decode steps.
 */
export async function timeDecode(runner: Runner, o: { promptLen: number; gen: number; warmup: number; seed?: number }): Promise<DecodeTiming> {
  const c = runner.config;
  if (o.promptLen < 1) fail('--prompt-len must be at least 1');
  if (o.gen < 1) fail('--gen must be at least 1');
  if (o.promptLen + o.gen > c.maxPositions) {
    fail(`--prompt-len ${o.promptLen} + --gen ${o.gen} exceeds the model's context of ${c.maxPositions} tokens`);
  }
  const r = rng(o.seed ?? 7);
  const prompt = Array.from({ length: o.promptLen }, () => Math.floor(r() * c.vocabSize));

  runner.reset();
  let next = argmax(await runner.forward(prompt));
  for (let i = 0; i < Math.min(o.warmup, o.gen); i++) next = argmax(await runner.forward([next]));

  runner.reset();
  let t = performance.now();
  next = argmax(await runner.forward(prompt));
  const prefillMs = performance.now() - t;
  const steps: number[] = [];
  for (let i = 0; i < o.gen; i++) {
    t = performance.now();
    const logits = await runner.forward([next]);
    steps.push(performance.now() - t);
    next = argmax(logits);
  }
  runner.reset();
  const sorted = [...steps].sort((a, b) => a - b);
  return {
    promptLen: o.promptLen, gen: o.gen, prefillMs,
    msPerToken: steps.reduce((a, b) => a + b, 0) / steps.length,
    minMs: sorted[0], medianMs: sorted[Math.floor(sorted.length / 2)],
  };
}

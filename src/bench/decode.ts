/**
 * The decode timing loop: batch 1, a random prompt, then greedy decode, timed two ways at the same
 * positions:
 * - chained (`msPerToken`): runner.decodeGreedy, what generate() runs for greedy sampling. On WebGPU
 *   the device picks each token and feeds it to the next step, several steps queued, only the ids
 *   read back. Wall clock from the call until the gen-th id has reached the host, over gen.
 * - readback (`msPerTokenReadback`): one awaited forward per token, logits read back and argmax on
 *   the host, so each step also pays the host round trip while the GPU idles. Wall clock around each
 *   forward. What a host-sampling loop (temperature > 0) pays.
 */
import type { Runner } from '../backend/types.js';
import { argmax } from '../backend/cpu/kernels.js';
import { fail } from '../util/errors.js';
import { randomPrompt } from './sequences.js';

export interface DecodeTiming {
  promptLen: number;
  gen: number;
  prefillMs: number;
  /** Chained greedy decode: mean over the `gen` measured steps. */
  msPerToken: number;
  /** Fastest and median gap between consecutive ids landing on the host (chained), to tell steady
   *  state from hiccups. */
  minMs: number;
  medianMs: number;
  /** The per-step readback loop: mean over the `gen` measured steps. */
  msPerTokenReadback: number;
}

/**
 * A warm-up round of both loops (prefill + `warmup` decode steps: pipelines compiled, buffers
 * touched), then the measured rounds, each after a reset at the same positions: prefill of
 * `promptLen` tokens and `gen` steps of the readback loop; prefill again and `gen` chained steps.
 */
export async function timeDecode(runner: Runner, o: { promptLen: number; gen: number; warmup: number; seed?: number }): Promise<DecodeTiming> {
  const c = runner.config;
  if (o.promptLen < 1) fail('--prompt-len must be at least 1');
  if (o.gen < 1) fail('--gen must be at least 1');
  if (o.promptLen + o.gen > c.maxPositions) {
    fail(`--prompt-len ${o.promptLen} + --gen ${o.gen} exceeds the model's context of ${c.maxPositions} tokens`);
  }
  const prompt = randomPrompt(c, o.promptLen, o.seed ?? 7);
  const warm = Math.min(o.warmup, o.gen);

  runner.reset();
  let next = argmax(await runner.forward(prompt));
  for (let i = 0; i < warm; i++) next = argmax(await runner.forward([next]));
  runner.reset();
  if (warm > 0) await runner.decodeGreedy(argmax(await runner.forward(prompt)), warm, () => true);

  runner.reset();
  let t = performance.now();
  next = argmax(await runner.forward(prompt));
  const prefillMs = performance.now() - t;
  const first = next;
  let readback = 0;
  for (let i = 0; i < o.gen; i++) {
    t = performance.now();
    const logits = await runner.forward([next]);
    readback += performance.now() - t;
    next = argmax(logits);
  }

  runner.reset();
  // The same KV cache again. With logits: forward then waits for the prefill to finish, which a
  // noLogits forward would leave running inside the timed chain.
  await runner.forward(prompt);
  const t0 = performance.now();
  const landed: number[] = [];
  await runner.decodeGreedy(first, o.gen, () => { landed.push(performance.now()); return true; });
  runner.reset();
  const gaps = landed.map((x, i) => x - (i ? landed[i - 1] : t0)).sort((a, b) => a - b);
  return {
    promptLen: o.promptLen, gen: o.gen, prefillMs,
    msPerToken: (landed[landed.length - 1] - t0) / o.gen,
    minMs: gaps[0], medianMs: gaps[Math.floor(gaps.length / 2)],
    msPerTokenReadback: readback / o.gen,
  };
}

/**
 * Sampling by temperature as an argmax, so that it can run where greedy decoding's argmax runs (on
 * the device, chained: kernels/argmax.ts SAMPLE): the Gumbel-max trick. With g_i = −log(−log u_i)
 * for independent uniforms u_i, argmax_i (logit_i / T + g_i) is distributed as softmax(logits / T):
 * an exact draw, from one pass over the logits, with no sort and no normalisation.
 *
 * The uniforms come from a counter-based hash of (seed, position, token id), so a draw depends only
 * on the seed and where it is made, not on how many draws came before or which backend made it: the
 * CPU and WebGPU runners give the same tokens for the same seed, but where two perturbed logits lie
 * within the backends' rounding of each other (their logits differ in the last bits; the GPU takes
 * the key in f32, this twin in f64).
 *
 * Ties go to the lowest id and NaN never wins, as in `argmax`.
 */
import { fail } from '../util/errors.js';

/** Draw parameters: 1 / temperature (> 0), a 32-bit seed, and top-k (the draw among the k likeliest; none: all). */
export interface GumbelSampling { invTemperature: number; seed: number; topK?: number }

/** The largest top-k the device draws among (kernels/topk.ts selects them); a larger k draws on the host. */
export const MAX_DEVICE_TOPK = 1024;

/** The largest 1 / temperature a draw takes; generate() treats lower temperatures as greedy. */
export const MAX_INV_TEMPERATURE = 1e30;

/** A one-line error for draw parameters a runner cannot use (temperature 0 is greedy: no sampling object). */
export function checkSampling(s: GumbelSampling | undefined): void {
  if (s === undefined) return;
  // (1e30: within f32's range with logits of any size OPT gives; a temperature that low is greedy.)
  if (!(s.invTemperature > 0 && s.invTemperature <= MAX_INV_TEMPERATURE)) fail(`sampling needs 1 / temperature in (0, 1e30], got ${s.invTemperature}`);
  if (!Number.isInteger(s.seed)) fail(`sampling needs an integer seed, got ${s.seed}`);
  if (s.topK !== undefined && !(Number.isInteger(s.topK) && s.topK >= 1)) fail(`sampling needs top-k an integer >= 1, got ${s.topK}`);
}

/** PCG's output hash (a 32-bit permutation): the same integer steps as the WGSL `pcg`. */
export function pcgHash(v: number): number {
  const s = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
  const w = Math.imul(((s >>> ((s >>> 28) + 4)) ^ s) >>> 0, 277803737) >>> 0;
  return ((w >>> 22) ^ w) >>> 0;
}

/**
 * The uniform in (0, 1) of token `id` at `pos` under `seed`: 23 bits of hash, centred in their step,
 * so that it and 1 − it are exact in f32 too (24 bits would round the top step's centre to 1.0 there,
 * whose −log(−log u) is +Infinity: a token drawn whatever its logit).
 */
export function gumbelUniform(seed: number, pos: number, id: number): number {
  return uniformAt(drawHash(seed, pos), id);
}

/** The hash of (seed, pos) a draw's ids share (the kernel's SH), and the uniform of one id under it. */
const drawHash = (seed: number, pos: number) => pcgHash((pos ^ pcgHash(seed >>> 0)) >>> 0);
const uniformAt = (sh: number, id: number) => ((pcgHash((id ^ sh) >>> 0) >>> 9) + 0.5) / 8388608;

/**
 * −log u, the exponential variate of the draw: for u within 2^-10 of 1 from 1 − u by its series (the
 * GPU's log is accurate to an absolute ~2^-21 only, which there is most of −log u itself), else −log u.
 * The WGSL copy (kernels/argmax.ts) takes the same branch.
 */
export function expVariate(u: number): number {
  const e = 1 - u;
  return e < 1 / 1024 ? e * (1 + e * (0.5 + e / 3)) : -Math.log(u);
}

/**
 * The token drawn from softmax(logits · invTemperature) at position `pos` (the position of the token
 * whose logits these are); with topK, from that softmax over the k largest logits (topIds) only.
 */
export function gumbelPick(logits: Float32Array, s: GumbelSampling, pos: number): number {
  let best = 0, bestKey = -Infinity, any = false;
  const n = s.topK !== undefined && s.topK < logits.length ? s.topK : logits.length;
  const ids = n < logits.length ? topIds(logits, n).sort((a, b) => a - b) : null;
  if (ids && ids.length === 0) return 0;   // every logit NaN: argmax's rule
  const sh = drawHash(s.seed, pos);
  for (let j = 0; j < (ids ? ids.length : n); j++) {
    const i = ids ? ids[j] : j;
    const k = logits[i] * s.invTemperature - Math.log(expVariate(uniformAt(sh, i)));
    if (Number.isNaN(k)) continue;
    if (!any || k > bestKey) { best = i; bestKey = k; any = true; }
  }
  return best;
}

/**
 * The k largest logits' ids, largest first, ties to the lower id (a stable sort's first k): one pass
 * keeping the best k in order, each later id entering only above the k-th (NaN never does).
 */
export function topIds(logits: Float32Array, k: number): number[] {
  const best: number[] = [];
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (v !== v || (best.length === k && !(v > logits[best[k - 1]]))) continue;   // NaN: never a candidate
    let j = best.length === k ? k - 1 : best.length;
    while (j > 0 && v > logits[best[j - 1]]) j--;
    if (best.length < k) best.push(0);
    best.copyWithin(j + 1, j, best.length - 1);
    best[j] = i;
  }
  return best;
}


/**
 * The benchmark's GPU-timed sequence (run.ts's queuedTiming and --profile, bench/ab_decode.mjs, and
 * the calibration of synthetic thresholds on it): a fixed prompt of spread-out ids, then one token fed
 * at every step. Fixed so that every build and every configuration times the same positions and ids.
 */
import type { OptConfig } from '../model/config.js';
import type { CalibrationRun } from './calibrate.js';
import { seededRandom } from '../util/random.js';

/** timeDecode's prompt (the wall-clock greedy run): `n` random ids from the seeded generator. */
export function randomPrompt(c: OptConfig, n: number, seed = 7): number[] {
  const r = seededRandom(seed);
  return Array.from({ length: n }, () => Math.floor(r() * c.vocabSize));
}

/** The token fed at every GPU-timed step. */
export const STEPS_TOKEN = 2;

/** The GPU-timed sequence's prompt: ids i·7919 mod V (a prime stride: every id distinct up to V). */
export const stepsPrompt = (c: OptConfig, n: number): number[] => Array.from({ length: n }, (_, i) => (i * 7919) % c.vocabSize);

/** The GPU-timed sequence as a calibration run: `promptLen` prompt ids, then `steps` steps of STEPS_TOKEN. */
export const gpuTimedRun = (c: OptConfig, promptLen: number, steps: number): CalibrationRun =>
  ({ prompt: stepsPrompt(c, promptLen), steps, token: STEPS_TOKEN });

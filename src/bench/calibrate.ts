/**
 * Brings synthetic block-rule predictors to a density on the model they run in. The synthetic
 * threshold (policies.ts) is the density's quantile of the scores on unit-variance inputs; the real
 * inputs differ per layer (attn_io's second half, attention's output o, is not unit-variance, and at
 * opt-13b and 30b the threshold set for 10 % chose 17–19 %: docs/benchmarks.md), so a comparison of
 * predictor inputs would compare densities too. The density also depends on the sequence (a token
 * fed again and again, as the GPU-timed steps do, chooses other neurons than a greedy path) and on
 * the positions (32 steps calibrated to 10 % ran at 8.5 % over 128). This runs the benchmark's own
 * sequences whole, reads the measured density per layer, and moves each layer's τ in the normal
 * quantile's scale (a layer's scores are near Gaussian and centred near 0, so τ / Φ⁻¹(1 − density)
 * is their spread: one such step lands within a few percent), keeping every upload
 * (Runner.setBlockThresholds).
 */
import { argmax } from '../backend/cpu/kernels.js';
import type { Runner } from '../backend/types.js';
import type { SparsityPolicy } from '../sparsity/policy.js';
import { normalQuantile } from '../util/normal.js';

/** A measured sequence: a prompt, then `steps` decode steps, greedy, or `token` fed at each (timeDecodeSteps' form). */
export interface CalibrationRun { prompt: number[]; steps: number; token?: number }

export interface CalibrateOptions {
  target: number;          // the density every block-rule layer should compute, (0, 1)
  runs: CalibrationRun[];  // what the timed measurements run; a round counts them all together
  tolerance?: number;      // relative: done when every layer is within target·(1 ± tolerance) (default 0.03)
  rounds?: number;         // at most this many measurements (default 6)
}

export interface Calibration {
  tau: (number | null)[];        // per layer (null: no block rule)
  density: (number | null)[];    // measured at those thresholds
  rounds: number;
  converged: boolean;
}

/** Runs `runs` from an empty cache each and returns the MLP density per layer they measured together (reset first). */
export async function measureRuns(runner: Runner, runs: CalibrationRun[]): Promise<(number | null)[]> {
  runner.resetMlpDensity();
  for (const u of runs) {
    runner.reset();
    if (u.token === undefined) await runner.decodeGreedy(argmax(await runner.forward(u.prompt)), u.steps, () => true);
    else {
      await runner.forward(u.prompt, { noLogits: true });
      for (let i = 0; i < u.steps; i++) await runner.forward([u.token], { noLogits: true });
    }
  }
  runner.reset();
  return runner.mlpDensity();
}

/** The policy's block-rule layers brought to `o.target` density on `runner` (whose sparsity is `policy`). */
export async function calibrateBlockDensity(runner: Runner, policy: SparsityPolicy, o: CalibrateOptions): Promise<Calibration> {
  const c = runner.config, tol = o.tolerance ?? 0.03, maxRounds = o.rounds ?? 6;
  if (!(o.target > 0 && o.target < 1)) throw new RangeError(`calibrateBlockDensity: target ${o.target} is outside (0, 1)`);
  const tau = policy.mlp.map((lp) => (lp?.selector.kind === 'predictor' && lp.selector.block ? lp.selector.block.tau ?? 0 : null));
  const zTarget = normalQuantile(1 - o.target);
  // A density of 0 or 1 has no quantile: clamp it to what a count over these tokens can resolve.
  const eps = 1 / (o.runs.reduce((a, u) => a + u.prompt.length + u.steps, 0) * c.ffn);
  let density: (number | null)[] = [];
  for (let round = 1; ; round++) {
    runner.setBlockThresholds(tau);
    density = (await measureRuns(runner, o.runs)).map((p, l) => (tau[l] === null ? null : p));
    const off = density.map((p) => p !== null && Math.abs(p / o.target - 1) > tol);
    if (!off.some((x) => x)) return { tau, density, rounds: round, converged: true };
    if (round >= maxRounds) return { tau, density, rounds: round, converged: false };
    density.forEach((p, l) => {
      if (p === null || !off[l]) return;
      const t = tau[l]!, z = normalQuantile(1 - Math.min(1 - eps, Math.max(eps, p)));
      // Scores centred near 0 (the synthetic predictors' are): τ / Φ⁻¹(1 − p) estimates their spread.
      // A secant step through two rounds was tried and overshot (a layer from 10 % to 2 % or 22 %):
      // each layer's density also moves with the layers before it and with the greedy path's ids.
      tau[l] = Math.abs(z) > 0.05 && t * z > 0 ? t * zTarget / z : t + Math.sign(zTarget - z) * Math.max(Math.abs(t), 1e-3);
    });
  }
}

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { CpuRunner } from '../src/backend/cpu/runner.js';
import { createWebGpuRunner } from '../src/backend/webgpu/runner.js';
import type { Gpu } from '../src/backend/webgpu/device.js';
import { calibrateBlockDensity, measureRuns, type CalibrationRun } from '../src/bench/calibrate.js';
import { syntheticPredictorPolicy } from '../src/bench/policies.js';
import { normalQuantile } from '../src/util/normal.js';
import { checkpoint, MODELS, runCli } from './helpers.js';

// The benchmark brings synthetic block-rule predictors to a density on the model they run in
// (bench/calibrate.ts): the synthetic threshold is set on unit-variance inputs, which attn_io's o half
// is not.

let gpu: Gpu | null = null;
after(() => gpu?.device.destroy());

test('normalQuantile: known quantiles and symmetry; outside (0, 1) is an error', () => {
  for (const [p, z] of [[0.5, 0], [0.9, 1.2815516], [0.975, 1.9599640], [0.999, 3.0902323], [0.01, -2.3263479]]) {
    assert.ok(Math.abs(normalQuantile(p) - z) < 1e-6, `Φ⁻¹(${p}) = ${normalQuantile(p)}, want ${z}`);
  }
  for (const p of [1e-6, 0.02, 0.3]) assert.ok(Math.abs(normalQuantile(p) + normalQuantile(1 - p)) < 1e-8);
  assert.throws(() => normalQuantile(0), /outside \(0, 1\)/);
  assert.throws(() => normalQuantile(1.5), /outside \(0, 1\)/);
});

const runsFor = (V: number): CalibrationRun[] => [
  { prompt: Array.from({ length: 24 }, (_, i) => (i * 131 + 7) % V), steps: 6 },
  { prompt: Array.from({ length: 20 }, (_, i) => (i * 7919) % V), steps: 6, token: 2 },
];

test('calibrateBlockDensity: attn_io synthetic predictors from off the target to within 3 % on every layer, on the CPU runner; setBlockThresholds sets what it found', async () => {
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, runs = runsFor(c.vocabSize), target = 0.2;
  const policy = syntheticPredictorPolicy(c, target, { input: 'attn_io' });
  const cpu = new CpuRunner(c, ck.weights);
  cpu.setSparsity(policy);
  const before = await measureRuns(cpu, runs);
  assert.ok(before.some((p) => Math.abs(p! / target - 1) > 0.03), `the synthetic threshold is already on target (${before.join(', ')}): nothing to calibrate`);
  const cal = await calibrateBlockDensity(cpu, policy, { target, runs, rounds: 8 });
  assert.ok(cal.converged, `not converged in ${cal.rounds} rounds: ${cal.density.join(', ')}`);
  cal.density.forEach((p, l) => assert.ok(Math.abs(p! / target - 1) <= 0.03, `layer ${l}: ${p}`));
  // The policy is untouched (the runner holds the thresholds) and the runner decodes at them.
  policy.mlp.forEach((lp) => assert.equal(lp!.selector.kind === 'predictor' && lp!.selector.block!.tau, policy.mlp[0]!.selector.kind === 'predictor' && policy.mlp[0]!.selector.block!.tau));
  cpu.setBlockThresholds(cal.tau);
  assert.deepEqual(await measureRuns(cpu, runs), cal.density);
  // Setting the policy again forgets them.
  cpu.setSparsity(policy);
  assert.deepEqual(await measureRuns(cpu, runs), before);
  assert.throws(() => cpu.setBlockThresholds([0.1]), /1 thresholds for 4 layers/);
});

test('calibrateBlockDensity on WebGPU: attn_io and attn_in to within 3 %, no sparse state built again (5m)', async (t) => {
  gpu ??= await (await import('./gpu.js')).gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, runs = runsFor(c.vocabSize), target = 0.15;
  const g = await createWebGpuRunner(c, ck.weights, { gpu }) as Awaited<ReturnType<typeof createWebGpuRunner>> & { sparseBuilds: number };
  for (const input of ['attn_io', 'attn_in'] as const) {
    const policy = syntheticPredictorPolicy(c, target, { input });
    g.setSparsity(policy);
    const before = await measureRuns(g, runs);
    const builds = g.sparseBuilds;
    const cal = await calibrateBlockDensity(g, policy, { target, runs, rounds: 8 });
    assert.ok(cal.converged, `${input}: not converged in ${cal.rounds} rounds: ${cal.density.join(', ')}`);
    assert.ok(before.some((p, l) => Math.abs(p! - cal.density[l]!) > 1e-9), `${input}: the synthetic threshold was already on target: the restores below would prove nothing`);
    cal.density.forEach((p, l) => assert.ok(Math.abs(p! / target - 1) <= 0.03, `${input}, layer ${l}: ${p}`));
    assert.equal(g.sparseBuilds, builds, `${input}: setBlockThresholds rebuilt the sparse state`);
    const again = await measureRuns(g, runs);
    again.forEach((p, l) => assert.ok(Math.abs(p! - cal.density[l]!) < 1e-9, `${input}, layer ${l}: ${p} after, ${cal.density[l]} in the calibration`));
    // Setting the policy again forgets them, as on the CPU runner, and so does a parked state brought back.
    g.setSparsity(policy);
    assert.deepEqual(await measureRuns(g, runs), before, `${input}: the same policy set again kept the calibrated thresholds`);
    g.setBlockThresholds(cal.tau);
    g.setSparsity(null);
    g.setSparsity(policy);
    assert.equal(g.sparseBuilds, builds, `${input}: the parked state was rebuilt`);
    assert.deepEqual(await measureRuns(g, runs), before, `${input}: the parked state came back with the calibrated thresholds`);
  }
  g.dispose();
});

test('bench --shape, synthetic block rule on WebGPU: calibrated on the GPU-timed sequence, whose own density the row reports (gpu_mlp_density)', async (t) => {
  gpu ??= await (await import('./gpu.js')).gpuOrSkip(t);
  if (!gpu) return;
  const r = runCli('bench', '--shape', 'opt-125m', '--backend', 'webgpu', '--sparsity', 'mlp', '--predictor-input', 'attn_io',
    '--mlp-density', '0.12', '--prompt-len', '4', '--gen', '8', '--warmup', '1', '--json');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /opt-125m: mlp: block thresholds calibrated in \d rounds? on the GPU-timed sequence: density /);
  const row = JSON.parse(r.stdout.trim()) as { mlp_density: number; gpu_mlp_density?: number; gpu_gbps: number | null; bytes_per_token: number };
  // Every layer within 3 % of the target on that sequence, so their mean is too (the row rounds to 3 places).
  assert.ok(row.gpu_mlp_density !== undefined && Math.abs(row.gpu_mlp_density / 0.12 - 1) <= 0.03 + 0.0005 / 0.12, `gpu_mlp_density ${row.gpu_mlp_density}`);
  assert.ok(row.mlp_density > 0 && row.mlp_density < 0.5, `mlp_density ${row.mlp_density}`); // the wall-clock run's own
});

// Probe: decode steps a submission in the greedy chain (runner option chainStepsPerSubmit). Each
// submission is a command buffer with its own id copy and map; wall ms a token of the chain sits
// 0.05–0.14 ms above the GPU time of the steps it runs (bench/head_probe.mjs). Per shape, synthetic
// weights, a 128-token prompt, then CB_STEPS (128) chained greedy steps at each batch size in turn,
// CB_ROUNDS (2) times: mean wall ms a token (what bench's ms/token is) and the median gap between ids.
//
//   source .gpu-bundle/enter.sh; CB_SHAPES=opt-1.3b,opt-6.7b,opt-13b node bench/chain_batch_probe.mjs   # on the GPU host (carry dist)
// CB_BATCHES (1,2,4)
import { fileURLToPath } from 'node:url';

const dist = process.env.CB_DIST ?? fileURLToPath(new URL('../dist', import.meta.url));
const { createWebGpuRunner } = await import(`${dist}/src/backend/webgpu/runner.js`);
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const { shapeConfig } = await import(`${dist}/src/bench/shapes.js`);

const shapes = (process.env.CB_SHAPES ?? 'opt-1.3b,opt-6.7b').split(',');
const batches = (process.env.CB_BATCHES ?? '1,2,4').split(',').map(Number);
const STEPS = Number(process.env.CB_STEPS ?? 128), ROUNDS = Number(process.env.CB_ROUNDS ?? 2);
const gpu = await openGpu({});
const out = [];
for (const shape of shapes) {
  const c = shapeConfig(shape);
  const r = await createWebGpuRunner(c, 'synthetic', { gpu });
  const prompt = Array.from({ length: 128 }, (_, i) => (i * 7919) % c.vocabSize);
  r.reset(); await r.forward(prompt, { noLogits: true });
  const gpuMs = (await r.timeDecodeSteps(STEPS, 2)).gpuMsPerToken;
  for (let round = 1; round <= ROUNDS; round++) {
    for (const B of batches) {
      r.chainBatch = B;
      r.reset(); await r.forward(prompt, { noLogits: true });
      await r.decodeGreedy(1, 16, () => true);   // warm-up at this batch size
      r.reset(); await r.forward(prompt);        // with logits: waits for the prompt to finish
      const t0 = performance.now(), landed = [];
      await r.decodeGreedy(1, STEPS, () => { landed.push(performance.now()); return true; });
      const gaps = landed.map((x, i) => x - (i ? landed[i - 1] : t0)).sort((a, b) => a - b);
      const row = { shape, round, batch: B, ms: (landed[landed.length - 1] - t0) / STEPS, median_gap: gaps[gaps.length >> 1], gpu_ms_no_head: gpuMs };
      out.push(row);
      console.log(JSON.stringify(row));
    }
  }
  r.dispose();
}
console.log('\nshape | steps a submission | wall ms a token (each round) | GPU ms of the step without the head');
for (const shape of shapes) for (const B of batches) {
  const rs = out.filter((x) => x.shape === shape && x.batch === B);
  console.log(`${shape} | ${B} | ${rs.map((x) => x.ms.toFixed(3)).join(' / ')} | ${rs[0].gpu_ms_no_head?.toFixed(3)}`);
}
gpu.device.destroy();

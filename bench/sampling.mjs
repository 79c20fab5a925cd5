// Sampled decode on the WebGPU runner, ms a token: greedy chained on the device (decodeGreedy), sampling
// by temperature chained (decodeGreedy with the Gumbel draw, kernels/argmax.ts SAMPLE), and the host
// loop sampling took before (one awaited forward a token, logits read back, `sample` on the host:
// temperature alone, and with top-k 40, chained now too). Synthetic fp16 weights, a random
// 128-token prompt, SAMPLING_GEN (64) tokens after a warm-up round.
//
//   npx tsc -p . && node bench/sampling.mjs          # on the GPU host (carry dist); SAMPLING_SHAPES (opt-1.3b,opt-6.7b)
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const { createWebGpuRunner } = await import(`${dist}/src/backend/webgpu/runner.js`);
const { shapeConfig } = await import(`${dist}/src/bench/shapes.js`);
const { randomPrompt } = await import(`${dist}/src/bench/sequences.js`);
const { argmax, sample, seededRandom } = await import(`${dist}/src/engine/sampler.js`);
const shapes = (process.env.SAMPLING_SHAPES ?? 'opt-1.3b,opt-6.7b').split(',');
const GEN = Number(process.env.SAMPLING_GEN ?? 64);
const gpu = await openGpu({});
console.log(`${gpu.adapterName}; ms a token over ${GEN} tokens after a 128-token prompt`);
for (const shape of shapes) {
  const c = shapeConfig(shape);
  const r = await createWebGpuRunner(c, 'synthetic', { gpu });
  const prompt = randomPrompt(c, 128, 7);
  const chain = async (sampling) => {
    r.reset();
    const first = argmax(await r.forward(prompt));
    const t0 = performance.now();
    await r.decodeGreedy(first, GEN, () => true, sampling);
    return (performance.now() - t0) / GEN;
  };
  const host = async (o) => {
    r.reset();
    const random = seededRandom(1);
    let logits = await r.forward(prompt);
    const t0 = performance.now();
    for (let i = 0; i < GEN; i++) logits = await r.forward([sample(logits, o, random)]);
    return (performance.now() - t0) / GEN;
  };
  const forms = {
    'greedy, chained': () => chain(undefined),
    'temperature 1, chained (Gumbel)': () => chain({ invTemperature: 1, seed: 5 }),
    'temperature 1, host loop (before)': () => host({ temperature: 1 }),
    'temperature 1 + top-k 40, chained (Gumbel)': () => chain({ invTemperature: 1, seed: 5, topK: 40 }),
    'temperature 1 + top-k 40, host loop': () => host({ temperature: 1, topK: 40 }),
  };
  for (const f of Object.values(forms)) await f(); // warm-up: pipelines, plans
  const row = [];
  for (const [name, f] of Object.entries(forms)) {
    const ms = [await f(), await f(), await f()].sort((a, b) => a - b)[1];
    row.push(`${name} ${ms.toFixed(3)}`);
  }
  console.log(`${shape} | ${row.join(' | ')}`);
  r.dispose();
}
process.exit(0);

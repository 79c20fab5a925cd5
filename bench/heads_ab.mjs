// A/B of the sparse-heads decode forms on synthetic OPT shapes (GPU ms a token from timestamps, the
// runner's timeDecodeSteps after a 128-token prompt): out_proj from its head-major copy or as
// stored, heads chosen in the qkv GEMV or by a head-select dispatch, K/V of every head or of the
// chosen only. MLP sparse (block rule, 10 %, lookahead), 40 % of heads, random predictors.
//
//   npx tsc -p . && node bench/heads_ab.mjs                  # on the GPU host (carry dist)
//
// AB_SHAPES (default opt-6.7b,opt-13b), AB_ROUNDS (3: the two K/V forms interleaved, the best of each kept).
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const { createWebGpuRunner } = await import(`${dist}/src/backend/webgpu/runner.js`);
const { shapeConfig } = await import(`${dist}/src/bench/shapes.js`);
const { syntheticHeads, syntheticPredictorPolicy } = await import(`${dist}/src/bench/policies.js`);

const forms = [
  { name: 'qkv chooses, head-major out_proj', headsInQkv: true, headOutMajor: true },
  { name: 'qkv chooses, out_proj as stored', headsInQkv: true, headOutMajor: false },
  { name: 'head-select dispatch (qkv over every head), head-major out_proj', headsInQkv: false, headOutMajor: true },
];
const rounds = Number(process.env.AB_ROUNDS ?? 3);
const rows = [];
for (const shape of (process.env.AB_SHAPES ?? 'opt-6.7b,opt-13b').split(',')) {
  const c = shapeConfig(shape);
  const mlp = syntheticPredictorPolicy(c, 0.1);
  const prompt = Array.from({ length: 128 }, (_, i) => (i * 7919) % c.vocabSize);
  const best = new Map();
  // One runner at a time (an opt-30b runner holds ~80 GB); its forms' rounds interleave the two K/V forms.
  for (const f of forms) {
    // A device per runner, destroyed after it: its memory is free again at once (as bench does per shape).
    const gpu = await openGpu({});
    const r = await createWebGpuRunner(c, 'synthetic', { gpu, headsInQkv: f.headsInQkv, headOutMajor: f.headOutMajor });
    for (let round = 0; round < rounds; round++) {
      for (const kv of ['all', 'chosen']) {
        r.setSparsity({ ...mlp, heads: syntheticHeads(c, 0.4, { kv }) }); r.reset();
        await r.forward(prompt, { noLogits: true });
        const t = await r.timeDecodeSteps(128, 2);
        const key = `${shape} | kv ${kv} | ${f.name}`;
        best.set(key, Math.min(best.get(key) ?? Infinity, t.gpuMsPerToken));
        console.error(`${key}: ${t.gpuMsPerToken.toFixed(3)} ms`);
      }
    }
    r.setSparsity(null); r.dispose();
    gpu.device.destroy();
  }
  for (const [k, v] of best) rows.push(`| ${k} | ${v.toFixed(3)} |`);
}
console.log('| shape | K/V | form | GPU ms a token (best of rounds) |\n|---|---|---|---|');
console.log(rows.join('\n'));

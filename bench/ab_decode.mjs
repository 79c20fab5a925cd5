// A/B of two builds on one device, in one process: GPU ms per decode token from the WebGPU runner's
// timeDecodeSteps (prompt 128, 128 steps, as `dejavu bench` measures gpu_ms_per_token), dense,
// synthetic weights of real OPT shapes, the builds alternating for AB_ROUNDS rounds.
//
//   git worktree add /tmp/base <commit> && (cd /tmp/base && npm ci && npx tsc -p .)
//   npx tsc -p . && AB_BASE=/tmp/base/dist node bench/ab_decode.mjs        # on the GPU host: carry both dists
//
// AB_SHAPES (default opt-6.7b,opt-13b,opt-1.3b), AB_ROUNDS (2). Prints one JSON line a run, then a table.
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const base = process.env.AB_BASE;
if (!base) { console.error('ab_decode: set AB_BASE to the dist folder of the build to compare against'); process.exit(2); }
const shapes = (process.env.AB_SHAPES ?? 'opt-6.7b,opt-13b,opt-1.3b').split(',');
const rounds = Number(process.env.AB_ROUNDS ?? 2), prompt = 128, gen = 128;
const builds = { base: resolve(base), new: resolve(fileURLToPath(new URL('../dist', import.meta.url))) };
const mods = {};
for (const [k, d] of Object.entries(builds)) mods[k] = await import(`${d}/src/backend/webgpu/runner.js`);
const { openGpu } = await import(`${builds.new}/src/backend/webgpu/device.js`);
const { shapeConfig } = await import(`${builds.new}/src/bench/shapes.js`);
const gpu = await openGpu({});
console.log(JSON.stringify({ adapter: gpu.adapterName, timestamps: gpu.timestamps, builds }));
const res = [];
for (const shape of shapes) {
  const c = shapeConfig(shape);
  for (let round = 1; round <= rounds; round++) {
    for (const build of ['base', 'new']) {
      const r = await mods[build].createWebGpuRunner(c, 'synthetic', { gpu });
      await r.forward(Array.from({ length: prompt }, (_, i) => (i * 7919) % c.vocabSize), { noLogits: true });
      const t = await r.timeDecodeSteps(gen, 2);
      r.dispose();
      const row = { shape, round, build, gpu_ms: t.gpuMsPerToken ?? null, wall_ms: +t.msPerToken.toFixed(4), dispatches: t.dispatchesPerToken };
      res.push(row);
      console.log(JSON.stringify(row));
    }
  }
}
console.log('shape | build | GPU ms a token (each round)');
for (const shape of shapes) for (const b of ['base', 'new']) {
  console.log(`${shape} | ${b} | ${res.filter((x) => x.shape === shape && x.build === b).map((x) => x.gpu_ms?.toFixed(3) ?? 'n/a').join(' / ')}`);
}
gpu.device.destroy();

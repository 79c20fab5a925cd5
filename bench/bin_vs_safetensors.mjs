// Loads OUT/st (safetensors) and OUT/bin (pytorch_model.bin shards) of bench/bin_vs_safetensors.py twice each on
// WebGPU, printing the load time and 12 greedy tokens of each: the two formats must give the same tokens.
import { loadModel } from '../dist/src/index.js';
const root = process.argv[2];
const ids = [];
for (const d of ['st', 'bin', 'st', 'bin']) {
  const t0 = performance.now();
  const m = await loadModel(`${root}/${d}`, { backend: 'webgpu' });
  const loadMs = performance.now() - t0;
  const g = m.generate('It was a dark and stormy night', { maxTokens: 12, temperature: 0 });
  for await (const _ of g) { /* drain */ }
  const r = await g.result;
  console.log(JSON.stringify({ format: d, load_ms: Math.round(loadMs), ids: r.generatedIds, backend: m.runner.description }));
  ids.push(r.generatedIds.join(','));
  m.dispose();
}
console.log(ids[0] === ids[1] ? 'same tokens' : 'DIFFERENT TOKENS');

// What the WebGPU runner's two reduced-precision stores cost in quality, on a real checkpoint with
// trained predictors: predictor B as int8 rows (predictorInt8; block-select.ts, I8) and the block
// rule's fc2 partials as f16 (blockPartHalf; block-select.ts, FC2). Every window is fed one token at
// a time (decode: the f16 partials act on one-token steps only), dense, sparse with both stores off
// (fp16 B, f32 partials) and sparse with the runner's defaults, each from an empty cache. Prints the
// perplexity of each, and for the defaults against the fp16/f32 form: top-1 agreement, mean
// KL(fp16/f32 ‖ defaults) a token.
//
//   npx tsc -p . && node bench/precision_quality.mjs     # lavapipe will do for opt-gutenberg-18m
//
// PQ_MODEL (../shared/models/opt-gutenberg-18m), PQ_PREDICTORS (required: a train-predictors folder),
// PQ_DATA (../shared/data/gutenberg-val.txt), PQ_WINDOWS (8), PQ_WINDOW (256).
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';

const dist = fileURLToPath(new URL('../dist', import.meta.url));
const { NodeFileSource } = await import(`${dist}/src/model/node-source.js`);
const { loadCheckpoint } = await import(`${dist}/src/model/checkpoint.js`);
const { createWebGpuRunner } = await import(`${dist}/src/backend/webgpu/runner.js`);
const { tokenizeDocuments, windowsOf } = await import(`${dist}/src/eval/corpus.js`);
const { decodeLogits } = await import(`${dist}/src/eval/perplexity.js`);
const { loadPredictors } = await import(`${dist}/src/sparsity/predictors-io.js`);
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);

const root = fileURLToPath(new URL('..', import.meta.url));
if (!process.env.PQ_PREDICTORS) { console.error('precision_quality: set PQ_PREDICTORS to a folder from train-predictors'); process.exit(2); }
const src = await NodeFileSource.open(process.env.PQ_MODEL ?? `${root}../shared/models/opt-gutenberg-18m`);
const ck = await loadCheckpoint(src);
await src.close();
const c = ck.config, V = c.vocabSize;
const policy = (await loadPredictors(process.env.PQ_PREDICTORS, ck)).policy({});
const W = Number(process.env.PQ_WINDOW ?? 256), N = Number(process.env.PQ_WINDOWS ?? 8);
const text = readFileSync(process.env.PQ_DATA ?? `${root}../shared/data/gutenberg-val.txt`, 'utf8');
const windows = windowsOf(tokenizeDocuments(ck.tokenizer, text, W * N * 2), W).slice(0, N);
const gpu = await openGpu({});
const runners = {
  dense: await createWebGpuRunner(c, ck.weights, { gpu }),
  exact: await createWebGpuRunner(c, ck.weights, { gpu, predictorInt8: false, blockPartHalf: false }),
  reduced: await createWebGpuRunner(c, ck.weights, { gpu }),
};
runners.exact.setSparsity(policy); runners.reduced.setSparsity(policy);

const logSoftmax = (l, t) => {
  const row = l.subarray(t * V, (t + 1) * V);
  let m = -Infinity;
  for (const v of row) if (v > m) m = v;
  let s = 0;
  for (const v of row) s += Math.exp(v - m);
  const lse = m + Math.log(s);
  return Float64Array.from(row, (v) => v - lse);
};
const argmax = (a) => { let b = 0; for (let i = 1; i < a.length; i++) if (a[i] > a[b]) b = i; return b; };

const nll = { dense: 0, exact: 0, reduced: 0 };
let tokens = 0, agree = 0, kl = 0;
for (const ids of windows) {
  const logits = {};
  for (const [name, r] of Object.entries(runners)) { r.reset(); logits[name] = await decodeLogits(r, ids, 1); r.reset(); }
  for (let t = 0; t + 1 < ids.length; t++) {
    const ls = Object.fromEntries(Object.entries(logits).map(([k, l]) => [k, logSoftmax(l, t)]));
    for (const k of Object.keys(nll)) nll[k] -= ls[k][ids[t + 1]];
    if (argmax(ls.exact) === argmax(ls.reduced)) agree++;
    for (let i = 0; i < V; i++) kl += Math.exp(ls.exact[i]) * (ls.exact[i] - ls.reduced[i]);
    tokens++;
  }
}
const ppl = (k) => +Math.exp(nll[k] / tokens).toFixed(4);
console.log(JSON.stringify({ model: c.hidden, tokens, windows: windows.length, window: W, adapter: gpu.adapterName,
  dense_ppl: ppl('dense'), sparse_fp16B_f32partials_ppl: ppl('exact'), sparse_int8B_f16partials_ppl: ppl('reduced'),
  top1_agreement_reduced_vs_exact: +(agree / tokens).toFixed(5), kl_exact_reduced: +(kl / tokens).toExponential(3) }));
for (const r of Object.values(runners)) r.dispose();
gpu.device.destroy();

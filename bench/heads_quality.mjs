// Decode-mode quality of sparse attention heads, on the CPU reference: every window is fed one token
// at a time, so every token after the first runs the heads policy (HeadLayerPolicy applies to one-token
// forwards), and the next token's NLL is scored. Policies, on every layer, MLP dense: dense; the oracle
// keeping the k heads with the largest output norm (an upper bound on a head predictor); a fixed random
// head set per layer of the same k; with HQ_PREDICTORS (a folder from train-predictors --heads) its
// trained head predictors at the same k.
//
//   npx tsc -p . && node bench/heads_quality.mjs
//
// HQ_MODEL (../shared/models/opt-gutenberg-18m), HQ_DATA (../shared/data/gutenberg-val.txt),
// HQ_PREDICTORS (none), HQ_POLICIES (oracle,fixed[,trained]: which rows to run), HQ_WINDOWS (4), HQ_WINDOW (256), HQ_DENSITIES (0.5,0.4,0.25), HQ_KV (all: every head stores K/V;
// chosen: unchosen heads skip it too; HeadLayerPolicy.kv), HQ_KV_WINDOW (none; with HQ_KV=chosen, the
// holes of the last W positions filled every W positions: HeadLayerPolicy.kvWindow).
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';

const dist = fileURLToPath(new URL('../dist', import.meta.url));
const { loadModel } = await import(`${dist}/src/engine/model.js`);
const { tokenizeDocuments, windowsOf } = await import(`${dist}/src/eval/corpus.js`);
const { randomSubset, rng } = await import(`${dist}/src/bench/policies.js`);
const { loadPredictors } = await import(`${dist}/src/sparsity/predictors-io.js`);

const root = fileURLToPath(new URL('..', import.meta.url));
const model = await loadModel(process.env.HQ_MODEL ?? `${root}../shared/models/opt-gutenberg-18m`, { backend: 'cpu' });
const c = model.config, H = c.heads;
const W = Number(process.env.HQ_WINDOW ?? 256), N = Number(process.env.HQ_WINDOWS ?? 4);
const text = readFileSync(process.env.HQ_DATA ?? `${root}../shared/data/gutenberg-val.txt`, 'utf8');
const windows = windowsOf(tokenizeDocuments(model.tokenizer, text, W * N * 2), W).slice(0, N);

function logSoftmaxAt(logits, id) {
  let m = -Infinity;
  for (const v of logits) if (v > m) m = v;
  let s = 0;
  for (const v of logits) s += Math.exp(v - m);
  return logits[id] - m - Math.log(s);
}

/** Mean NLL of the next token and top-1 agreement with `ref` (the dense argmaxes), one token a step. */
function score(policy, ref) {
  const r = model.runner;
  r.setSparsity(policy);
  let nll = 0, n = 0, agree = 0;
  const tops = [];
  return (async () => {
    for (const w of windows) {
      r.reset();
      for (let t = 0; t + 1 < w.length; t++) {
        const logits = await r.forward([w[t]]);
        nll -= logSoftmaxAt(logits, w[t + 1]);
        let best = 0;
        for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
        tops.push(best);
        if (ref && ref[n] === best) agree++;
        n++;
      }
    }
    return { ppl: Math.exp(nll / n), tokens: n, tops, agree: ref ? agree / n : 1 };
  })();
}

const none = new Array(c.layers).fill(null);
const want = new Set((process.env.HQ_POLICIES ?? 'oracle,fixed,trained').split(','));
const trained = process.env.HQ_PREDICTORS ? await loadPredictors(process.env.HQ_PREDICTORS, model.checkpoint) : null;
const kv = process.env.HQ_KV ?? 'all';
const kvWindow = process.env.HQ_KV_WINDOW ? Number(process.env.HQ_KV_WINDOW) : undefined;
const t0 = performance.now();
const dense = await score(null, null);
console.log(`${c.layers} layers, ${H} heads, kv ${kv}${kvWindow ? `, completion window ${kvWindow}` : ''}; ${windows.length} windows of ${W}; ${dense.tokens} scored tokens, one token a forward`);
console.log(`dense: ppl ${dense.ppl.toFixed(3)} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
for (const density of (process.env.HQ_DENSITIES ?? '0.5,0.4,0.25').split(',').map(Number)) {
  const k = Math.max(1, Math.round(density * H));
  const rows = [];
  if (want.has('oracle')) rows.push(['oracle (largest contributions)', await score({ input: 'attn_in', mlp: none, heads: none.map(() => ({ k, kv, kvWindow, selector: { kind: 'oracle' } })) }, dense.tops)]);
  const r = rng(7);
  if (want.has('fixed')) rows.push(['fixed random set', await score({ input: 'attn_in', mlp: none, heads: none.map(() => ({ k, kv, kvWindow, selector: { kind: 'fixed', heads: randomSubset(H, k, r) } })) }, dense.tops)]);
  if (trained && want.has('trained')) rows.push(['trained head predictors', await score(trained.policy({ parts: ['heads'], headDensity: k / H, headKv: kv }), dense.tops)]);
  for (const [name, s] of rows) {
    console.log(`heads ${k}/${H} (${(k / H).toFixed(2)}), ${name}: ppl ${s.ppl.toFixed(3)} (${((s.ppl / dense.ppl - 1) * 100).toFixed(2)} %), top-1 agreement ${(s.agree * 100).toFixed(1)} %`);
  }
}

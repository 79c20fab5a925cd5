// Probe: which activation predicts a layer's fc1 best, for DejaVu's MLP predictors. A predictor
// reading the attention input (attn_in, LN(x) before attention) can run ahead of attention (the
// lookahead: its first product rides the qkv GEMV), but on opt-gutenberg-18m it costs three times the
// perplexity of one reading fc1's own input (mlp_in), because attention changes fc1's input and
// attn_in cannot see how (docs/sparsity.md). fc1's input is LN2(x + W_o·o + b_o), with o the heads'
// outputs side by side (attn_out), so [attn_in; o] sees everything but LN2's per-token scale, and a
// product A_o·o could ride the out_proj GEMV, which reads o anyway. This fits the same whitened
// reduced-rank regression of W1·mlp_in (src/sparsity/lowrank-init.ts) from each input:
//   mlp_in:         the default (fc1's own input: the low-rank fc1)
//   attn_in:        DejaVu's lookahead input
//   attn_in+o:      [attn_in; attn_out] (2d wide)
//   o:              attn_out alone (what attention adds, without the residual)
// and reports, over held-out tokens, the recall of the active neurons and of their output mass
// (act_j · ‖W2[:, j]‖) when each token keeps its top-K scores (K = IP_DENSITY · f), as the mean and
// the 1st / 5th percentiles over tokens (the tails are what perplexity feels), with the oracle
// (top-K by the true activation) beside them. CPU backend: runs anywhere.
//
//   npx tsc -p . && node bench/input_probe.mjs
//   IP_MODEL=../shared/models/opt-gutenberg-18m IP_TRAIN=32768 IP_VAL=4096 IP_RANK=128 IP_DENSITY=0.1 node bench/input_probe.mjs
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist', import.meta.url));
const { loadModel } = await import(`${dist}/src/engine/model.js`);
const { windows } = await import(`${dist}/src/sparsity/collect.js`);
const { lowRankFc1 } = await import(`${dist}/src/sparsity/lowrank-init.js`);
const { toF32 } = await import(`${dist}/src/model/tensor.js`);
const { sideBySide } = await import(`${dist}/src/util/rows.js`);

const shared = fileURLToPath(new URL('../../shared', import.meta.url));
const modelDir = process.env.IP_MODEL ?? `${shared}/models/opt-gutenberg-18m`;
const nTrain = Number(process.env.IP_TRAIN ?? 32768), nVal = Number(process.env.IP_VAL ?? 4096);
const rank = Number(process.env.IP_RANK ?? 128), density = Number(process.env.IP_DENSITY ?? 0.1);
const WINDOW = 512;

const model = await loadModel(modelDir, { backend: 'cpu' });
const ck = model.checkpoint, c = ck.config, L = c.layers, d = c.hidden, f = c.ffn;
const tokens = (file, n) => {
  const text = readFileSync(file, 'utf8');
  return ck.tokenizer.encode(text.slice(0, Math.min(text.length, n * 8))).slice(0, n);
};

/** Per layer, the rows of attn_in, attn_out and mlp_in over `ids` in windows of WINDOW tokens. */
async function collect(ids) {
  const wins = windows(ids, WINDOW, c.bosTokenId), rows = wins.reduce((a, w) => a + w.length, 0);
  const out = Array.from({ length: L }, () => ({ attn_in: new Float32Array(rows * d), attn_out: new Float32Array(rows * d), mlp_in: new Float32Array(rows * d) }));
  let at = 0;
  for (const w of wins) {
    model.runner.reset();
    await model.runner.forward(w, { noLogits: true, tracePoints: ['attn_in', 'attn_out', 'mlp_in'], trace: (l, p, data) => out[l][p].set(data.subarray(0, w.length * d), at * d) });
    at += w.length;
  }
  return { rows, out };
}

const t0 = performance.now();
const train = await collect(tokens(`${shared}/data/gutenberg-calib.txt`, nTrain));
const val = await collect(tokens(`${shared}/data/gutenberg-val.txt`, nVal));
console.log(`${modelDir}: d ${d}, f ${f}, ${train.rows} training rows (gutenberg-calib), ${val.rows} held-out rows (gutenberg-val), rank ${rank}, top-K ${Math.ceil(density * f)} of ${f} (${(density * 100).toFixed(0)} %); collected in ${((performance.now() - t0) / 1e3).toFixed(0)} s`);

const INPUTS = {
  mlp_in: (s) => s.mlp_in,
  attn_in: (s) => s.attn_in,
  'attn_in+o': (s, rows) => sideBySide(s.attn_in, s.attn_out, rows, d),
  o: (s) => s.attn_out,
};

const K = Math.ceil(density * f);
const q = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
const pct = (x) => (x * 100).toFixed(1);
/** Indices of the K largest of s. */
const topK = (s) => Array.from(s.keys()).sort((a, b) => s[b] - s[a]).slice(0, K);
const summary = (a) => { const s = [...a].sort((x, y) => x - y); return `${pct(s.reduce((p, v) => p + v, 0) / s.length)} / ${pct(q(s, 0.01))} / ${pct(q(s, 0.05))}`; };

console.log('layer | input | A bytes (fp16) | count recall mean / p1 / p5 % | mass recall mean / p1 / p5 % | fit s');
for (let l = 1; l < L; l++) {
  const lw = ck.weights.layers[l];
  const W1 = toF32(lw.fc1W), b1 = lw.fc1B ? toF32(lw.fc1B) : new Float32Array(f), W2 = toF32(lw.fc2W);
  const w2norm = new Float32Array(f);
  for (let i = 0; i < d; i++) for (let j = 0; j < f; j++) w2norm[j] += W2[i * f + j] ** 2;
  for (let j = 0; j < f; j++) w2norm[j] = Math.sqrt(w2norm[j]);
  // The truth on held-out rows: h = ReLU(W1 m + b1) from the MLP's own input.
  const act = new Float32Array(val.rows * f);
  const m = val.out[l].mlp_in;
  for (let t = 0; t < val.rows; t++) for (let j = 0; j < f; j++) {
    let z = b1[j];
    for (let i = 0; i < d; i++) z += W1[j * d + i] * m[t * d + i];
    act[t * f + j] = Math.max(0, z);
  }
  const score = (chosen, t) => {
    let n = 0, nk = 0, mass = 0, mk = 0;
    const keep = new Uint8Array(f);
    for (const j of chosen) keep[j] = 1;
    for (let j = 0; j < f; j++) {
      const a = act[t * f + j];
      if (a > 0) { n++; mass += a * w2norm[j]; if (keep[j]) { nk++; mk += a * w2norm[j]; } }
    }
    return [n ? nk / n : 1, mass ? mk / mass : 1];
  };
  const report = (name, chosenOf, bytes, secs) => {
    const cr = [], mr = [];
    for (let t = 0; t < val.rows; t++) { const [a, b] = score(chosenOf(t), t); cr.push(a); mr.push(b); }
    console.log(`${l} | ${name} | ${bytes} | ${summary(cr)} | ${summary(mr)} | ${secs}`);
  };
  report('oracle (true top-K)', (t) => topK(act.subarray(t * f, (t + 1) * f)), '—', '—');
  for (const [name, pick] of Object.entries(INPUTS)) {
    const t1 = performance.now();
    const x = pick(train.out[l], train.rows), n = x.length / train.rows;
    const p = lowRankFc1(W1, b1, x, train.rows, d, f, rank, name === 'mlp_in' ? {} : { target: train.out[l].mlp_in });
    const secs = ((performance.now() - t1) / 1e3).toFixed(0);
    const xv = pick(val.out[l], val.rows);
    report(name, (t) => {
      const xt = xv.subarray(t * n, (t + 1) * n), u = new Float32Array(rank), s = new Float32Array(f);
      for (let k = 0; k < rank; k++) { let a = 0; for (let i = 0; i < n; i++) a += p.A[k * n + i] * xt[i]; u[k] = a; }
      for (let j = 0; j < f; j++) { let a = p.bias[j]; for (let k = 0; k < rank; k++) a += p.B[j * rank + k] * u[k]; s[j] = a; }
      return topK(s);
    }, rank * n * 2, secs);
  }
}
model.dispose();

/**
 * Trained head predictors: the fit (head-fit.ts), its calibration, the predictors file's heads section,
 * decode-mode perplexity, and the CLI end to end on the 5m model.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { calibrateHeads, fitHeadPredictor, headRankStats, headShares } from '../src/sparsity/head-fit.js';
import { predictScores } from '../src/sparsity/predict.js';
import { loadPredictors } from '../src/sparsity/predictors-io.js';
import type { LowRankPredictor } from '../src/sparsity/policy.js';
import { randomPredictorSet } from './predictor-sets.js';
import { CpuRunner } from '../src/backend/cpu/runner.js';
import { headContribNorms, headOutGram } from '../src/backend/cpu/heads.js';
import { windowLogits } from '../src/eval/perplexity.js';
import { scoreIds } from '../src/eval/score.js';
import { DejavuError } from '../src/util/errors.js';
import { probeAdapter } from '../src/backend/webgpu/device.js';
import { checkpoint, DATA, MODELS, oneLineError, randomArray, rng, runCli } from './helpers.js';

/** Rows of x with head norms that follow a planted linear rule of x (plus a little noise). */
function planted(rows: number, d: number, H: number, seed: number, rowSeed: number) {
  const W = randomArray(H * d, rng(seed), 1 / Math.sqrt(d)), r = rng(rowSeed), x = randomArray(rows * d, r);
  const norms = new Float32Array(rows * H);
  for (let t = 0; t < rows; t++) {
    for (let h = 0; h < H; h++) {
      let z = 0;
      for (let i = 0; i < d; i++) z += W[h * d + i] * x[t * d + i];
      norms[t * H + h] = Math.exp(z + 0.05 * (r() - 0.5)); // positive, ordered by z
    }
  }
  return { x, norms };
}

function scoresOf(p: LowRankPredictor, x: Float32Array, rows: number, d: number, H: number): Float32Array {
  const s = new Float32Array(rows * H);
  for (let t = 0; t < rows; t++) s.set(predictScores(p, x.subarray(t * d, (t + 1) * d), d), t * H);
  return s;
}

test('head fit: a planted linear rule is learned; the chosen heads carry nearly the oracle\'s share', () => {
  for (const [d, H, seed] of [[37, 7, 1], [64, 12, 2], [23, 5, 3]]) {
    const train = planted(3001, d, H, seed, 100 + seed), val = planted(401, d, H, seed, 200 + seed); // one rule, fresh rows
    const p = fitHeadPredictor(train.x, train.norms, 3001, d, H, H);
    assert.equal(p.rank, H);
    const st = headRankStats(scoresOf(p, val.x, 401, d, H), val.norms, 401, H);
    const k = Math.ceil(H / 2);
    assert.ok(st.recall[k] >= 0.9, `d ${d} H ${H}: recall of the oracle's top ${k} ${st.recall[k]}`);
    assert.ok(st.mass[k] >= st.oracleMass[k] - 0.02, `mass ${st.mass[k]} vs oracle ${st.oracleMass[k]}`);
    const lg = fitHeadPredictor(train.x, train.norms, 3001, d, H, H, { label: 'lognorm' });
    assert.ok(headRankStats(scoresOf(lg, val.x, 401, d, H), val.norms, 401, H).recall[k] >= 0.9, 'lognorm labels');
    // A lower rank keeps the shape and still orders heads better than chance.
    const low = fitHeadPredictor(train.x, train.norms, 3001, d, H, 2);
    assert.equal(low.rank, 2);
    assert.equal(low.A.length, 2 * d);
    assert.equal(low.B.length, H * 2);
  }
});

test('head contributions: the Gram form equals ‖W_o,h o_h‖ computed directly, on random odd shapes', () => {
  const r = rng(21);
  for (const [T, H, hd] of [[3, 5, 7], [1, 3, 16], [4, 7, 5]]) {
    const d = H * hd, oW = randomArray(d * d, r), o = randomArray(T * d, r);
    const got = headContribNorms(o, T, headOutGram(oW, d, H, hd), H, hd);
    for (let t = 0; t < T; t++) for (let h = 0; h < H; h++) {
      let s = 0;
      for (let i = 0; i < d; i++) { let v = 0; for (let j = h * hd; j < (h + 1) * hd; j++) v += oW[i * d + j] * o[t * d + j]; s += v * v; }
      assert.ok(Math.abs(got[t * H + h] - Math.sqrt(s)) < 1e-3 * Math.max(1, Math.sqrt(s)), `T ${T} H ${H} hd ${hd}: ${got[t * H + h]} vs ${Math.sqrt(s)}`);
    }
  }
});

test('head rank stats match a brute-force count on random odd shapes', () => {
  const r = rng(9);
  for (const [rows, H] of [[5, 3], [17, 7], [9, 13]]) {
    const scores = randomArray(rows * H, r), norms = randomArray(rows * H, r).map(Math.abs);
    const st = headRankStats(scores, norms, rows, H);
    for (let k = 1; k <= H; k++) {
      let mass = 0, om = 0, rec = 0;
      for (let t = 0; t < rows; t++) {
        const n = Array.from(norms.subarray(t * H, (t + 1) * H)), s = Array.from(scores.subarray(t * H, (t + 1) * H));
        const total = n.reduce((a, v) => a + v, 0);
        const byScore = n.map((_, i) => i).sort((a, b) => s[b] - s[a] || a - b).slice(0, k);
        const byNorm = n.map((_, i) => i).sort((a, b) => n[b] - n[a] || a - b).slice(0, k);
        mass += byScore.reduce((a, i) => a + n[i], 0) / total;
        om += byNorm.reduce((a, i) => a + n[i], 0) / total;
        rec += byScore.filter((i) => byNorm.includes(i)).length / k;
      }
      assert.ok(Math.abs(st.mass[k] - mass / rows) < 1e-9, `mass k=${k}`);
      assert.ok(Math.abs(st.oracleMass[k] - om / rows) < 1e-9, `oracle k=${k}`);
      assert.ok(Math.abs(st.recall[k] - rec / rows) < 1e-9, `recall k=${k}`);
    }
    assert.ok(Math.abs(st.mass[H] - 1) < 1e-9 && Math.abs(st.recall[H] - 1) < 1e-9);
    // Calibration takes the smallest k reaching the target, and all H means dense.
    const c = calibrateHeads(0, st, st.mass[2] - 1e-12);
    assert.equal(c.k, st.mass[1] >= st.mass[2] - 1e-12 ? 1 : 2);
    assert.equal(calibrateHeads(0, st, 1.5).dense, true);
  }
  assert.deepEqual(Array.from(headShares(Float32Array.from([1, 3, 0, 0]), 2, 2)), [0.25, 0.75, 0, 0]);
});

test('a predictors file with heads: round trip, --sparse parts, --head-density, and one-line refusals', async () => {
  const { ck, dir, hp, H } = await randomPredictorSet();
  const set = await loadPredictors(dir, ck);
  assert.equal(set.policy().heads, undefined); // heads are asked for
  const p = set.policy({ parts: ['heads'] });
  assert.ok(p.mlp.every((m) => m === null));
  p.heads!.forEach((h, l) => {
    if (l === 1) return assert.equal(h, null); // calibrated dense
    assert.ok(h && h.selector.kind === 'predictor');
    assert.equal(h.k, 5);
    assert.equal(h.kv, 'all');
    assert.deepEqual(h.selector.predictor.A, hp[l].A);
    assert.deepEqual(h.selector.predictor.bias, hp[l].bias);
  });
  const both = set.policy({ parts: ['mlp', 'heads'], headDensity: 0.25, headKv: 'chosen' });
  assert.ok(both.mlp.slice(1).every((m) => m !== null));
  for (const h of both.heads!) assert.ok(h && h.k === Math.round(0.25 * H) && h.kv === 'chosen'); // an override makes every layer sparse
  const dense = set.policy({ parts: ['heads'], headDensity: 1 });
  assert.ok(dense.heads!.every((h) => h === null));
  const refused = (re: RegExp) => (e: Error) => e instanceof DejavuError && re.test(e.message) && !e.message.includes('\n');
  assert.throws(() => set.policy({ parts: ['heads'], headDensity: 1.5 }), refused(/--head-density must be in \(0, 1\]/));
  const none = await loadPredictors((await randomPredictorSet(false)).dir, ck);
  assert.throws(() => none.policy({ parts: ['heads'] }), refused(/have no head predictors: train them with train-predictors --heads/));
});

test('decode-mode window logits equal the one-forward logits (dense, CPU)', async () => {
  const ck = await checkpoint(MODELS['5m']);
  const runner = new CpuRunner(ck.config, ck.weights);
  const ids = [2, 100, 57, 891, 13, 4000, 77, 5];
  const a = await windowLogits(runner, ids), b = await windowLogits(runner, ids, true);
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  assert.ok(max < 1e-3, `max |diff| ${max}`);
  // A continuation's log-likelihood likewise: the context as one forward, then one token a forward.
  const one = await scoreIds(runner, [2, 100, 57], [891, 13, 4000]), dec = await scoreIds(runner, [2, 100, 57], [891, 13, 4000], true);
  assert.ok(Math.abs(one.logprob - dec.logprob) < 1e-3, `${one.logprob} vs ${dec.logprob}`);
  assert.equal(one.greedy, dec.greedy);
});

test('train-predictors --heads, then eval --sparse heads --compare, on the 5m model (CPU, then WebGPU)', async (t) => {
  const calib = join(DATA, 'gutenberg-calib.txt'), val = join(DATA, 'gutenberg-val.txt');
  if (!existsSync(calib)) return t.skip(`${calib} not found`);
  const tmp = mkdtempSync(join(tmpdir(), 'dejavu-htrain-')), out = join(tmp, 'pred'), work = join(tmp, 'work');
  const train = (o: string, ...a: string[]) => runCli('train-predictors', '--model', MODELS['5m'], '--backend', 'cpu', '--data', calib, '--out', o, '--tokens', '2048', '--window', '128', '--rank', '16', '--heads', '--head-target', '0.8', '--work', work, ...a);
  const r = train(out, '--head-input', 'attn_in');
  assert.equal(r.code, 0, r.stderr);
  const m = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
  assert.equal(m.heads.heads, 8);
  assert.equal(m.heads.layers.length, 4);
  for (const L of m.heads.layers) {
    assert.ok(L.dense || L.mass_recall >= 0.8, JSON.stringify(L));
    assert.ok(L.mass_recall <= L.oracle_mass + 1e-9, 'no choice beats the oracle');
  }
  assert.match(r.stdout, /head predictors: input attn_in, rank 8, target norm share 0\.8/);
  assert.equal(m.heads.input, 'attn_in');
  // The head lookahead: layer l >= 1 fitted on layer l - 1's attention input (same collection), layer 0 on its own.
  const outPrev = join(tmp, 'pred-prev');
  const rp = train(outPrev);   // the default: the lookahead
  assert.equal(rp.code, 0, rp.stderr);
  assert.match(rp.stdout, /head predictors: input prev_attn_in/);
  assert.equal(JSON.parse(readFileSync(join(outPrev, 'manifest.json'), 'utf8')).heads.input, 'prev_attn_in');
  const ck = await checkpoint(MODELS['5m']);
  const own = (await loadPredictors(out, ck)).policy({ parts: ['heads'], headDensity: 0.5 }), prev = (await loadPredictors(outPrev, ck)).policy({ parts: ['heads'], headDensity: 0.5 });
  assert.equal(own.headInput, undefined);
  assert.equal(prev.headInput, 'prev_attn_in');
  const predOf = (p: typeof own, l: number) => (p.heads![l]!.selector as { predictor: { A: Float32Array } }).predictor.A;
  assert.deepEqual(predOf(prev, 0), predOf(own, 0), 'layer 0 reads its own input either way');
  assert.notDeepEqual(predOf(prev, 1), predOf(own, 1), 'layer 1 is fitted on layer 0\'s input');
  oneLineError(train(outPrev, '--head-input', 'mlp_in'), /^dejavu: --head-input must be attn_in or prev_attn_in \(got mlp_in\)$/m);
  // Such a set is format /2, so a build that knows only /1 refuses it rather than run it on the wrong input.
  const mf = join(outPrev, 'manifest.json'), bad = JSON.parse(readFileSync(mf, 'utf8'));
  assert.equal(bad.format, 'dejavu-predictors/2');
  assert.equal(JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')).format, 'dejavu-predictors/1');
  const rewrite = async (format: string, input: string, re: RegExp) => {
    writeFileSync(mf, JSON.stringify({ ...bad, format, heads: { ...bad.heads, input } }));
    await assert.rejects(loadPredictors(outPrev, ck), re);
  };
  await rewrite('dejavu-predictors/1', 'mlp_in', /the heads section's input must be attn_in or prev_attn_in/);
  await rewrite('dejavu-predictors/1', 'prev_attn_in', /format dejavu-predictors\/1 does not go with head predictors reading prev_attn_in/);
  await rewrite('dejavu-predictors/2', 'attn_in', /format dejavu-predictors\/2 does not go with head predictors reading attn_in/);
  writeFileSync(mf, JSON.stringify(bad));
  oneLineError(runCli('train-predictors', '--model', MODELS['5m'], '--data', calib, '--out', out, '--heads', '--head-label', 'attention'), /^dejavu: --head-label must be share or lognorm \(got attention\)$/m);
  const ev = (...a: string[]) => runCli('eval', '--model', MODELS['5m'], '--backend', 'cpu', '--task', 'ppl', '--data', val, '--limit', '128', '--window', '64', '--predictors', out, '--json', ...a);
  const e = ev('--sparse', 'heads', '--head-density', '0.5', '--compare');
  assert.equal(e.code, 0, e.stderr);
  const j = JSON.parse(e.stdout);
  assert.equal(j.decode, true);
  assert.equal(j.head_density, 0.5);
  assert.equal(j.mlp_density, 1);
  assert.ok(j.sparse_ppl > 0 && j.top1_agreement < 1, JSON.stringify(j)); // half the heads must change something
  assert.match(e.stderr, /scoring one token a forward/);
  // The WebGPU runner runs the same trained head predictors (its B·A score GEMV, the qkv GEMV's choice).
  if (await probeAdapter()) {
    const g = runCli('eval', '--model', MODELS['5m'], '--backend', 'webgpu', '--task', 'ppl', '--data', val, '--limit', '128', '--window', '64', '--predictors', out, '--json', '--sparse', 'heads', '--head-density', '0.5');
    assert.equal(g.code, 0, g.stderr);
    const w = JSON.parse(g.stdout);
    assert.equal(w.backend, 'webgpu');
    assert.ok(Math.abs(w.ppl / j.sparse_ppl - 1) < 0.03, `webgpu ${w.ppl} vs cpu ${j.sparse_ppl} (dense ${j.dense_ppl})`);
    // The lookahead set on both backends (WebGPU: the scores in the layer before's qkv GEMV).
    const evPrev = (backend: string) => runCli('eval', '--model', MODELS['5m'], '--backend', backend, '--task', 'ppl', '--data', val, '--limit', '128', '--window', '64', '--predictors', outPrev, '--json', '--sparse', 'heads', '--head-density', '0.5');
    const pc = evPrev('cpu'), pg = evPrev('webgpu');
    assert.equal(pc.code, 0, pc.stderr); assert.equal(pg.code, 0, pg.stderr);
    const [pcj, pgj] = [JSON.parse(pc.stdout), JSON.parse(pg.stdout)];
    assert.ok(Math.abs(pgj.ppl / pcj.ppl - 1) < 0.03, `lookahead: webgpu ${pgj.ppl} vs cpu ${pcj.ppl}`);
    assert.notEqual(pcj.ppl, j.sparse_ppl, 'the lookahead set chooses other heads');
  } else if (process.env.CI) assert.fail('no WebGPU adapter in CI');
  // Zero-shot tasks too: contexts run as prompts, continuations one token a forward.
  const copa = runCli('eval', '--model', MODELS['5m'], '--backend', 'cpu', '--task', 'copa', '--data', join(DATA, 'eval', 'copa.jsonl'), '--limit', '6', '--predictors', out, '--json', '--sparse', 'heads', '--head-density', '0.5', '--compare');
  assert.equal(copa.code, 0, copa.stderr);
  const cj = JSON.parse(copa.stdout);
  assert.equal(cj.decode, true);
  assert.equal(cj.n, 6);
  assert.match(copa.stderr, /its continuation one token a forward/);
  oneLineError(ev('--sparse', 'attention'), /^dejavu: --sparse must be mlp, heads or mlp,heads \(got attention\)$/m);
  oneLineError(ev('--head-density', '0.5'), /--head-density needs --sparse heads/);
});

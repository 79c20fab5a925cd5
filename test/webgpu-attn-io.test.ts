import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { CpuRunner } from '../src/backend/cpu/runner.js';
import { createWebGpuRunner } from '../src/backend/webgpu/runner.js';
import type { Gpu } from '../src/backend/webgpu/device.js';
import type { LowRankPredictor, MlpLayerPolicy, SparsityPolicy } from '../src/sparsity/policy.js';
import { columns } from '../src/util/rows.js';
import { fp16Predictor, gpuOrSkip } from './gpu.js';
import { checkpoint, MODELS, reference, relErr, rng } from './helpers.js';

// Predictors reading attn_io (policy.ts): A (r, 2d) reads the attention input and attention's output
// o side by side. WebGPU splits A into its attn_in half (riding the qkv GEMV in decode, as attn_in's
// lookahead does) and its o half (riding the out_proj GEMV in decode, gemv.ts RIDE; else a GEMV
// adding into u once attention is done; with sparse heads a head-out product over the chosen heads'
// columns), and the block rule scores in block-select.

let gpu: Gpu | null = null;
after(() => gpu?.device.destroy());

test('webgpu attn_io predictors: prompts choose the CPU runner\'s neurons, decode matches it (lookahead with A\'s o half riding out_proj or apart, unfolded, top-K, block rule, sparse heads), as many dispatches as attn_in scored in block-select (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, d = c.hidden, f = c.ffn, r = rng(41);
  const preds = Array.from({ length: c.layers }, () => fp16Predictor(19, 2 * d, f, r));
  const mlp = (sel: (p: LowRankPredictor) => MlpLayerPolicy): (MlpLayerPolicy | null)[] => preds.map((p, l) => (l === 1 ? null : sel(p)));
  const topK: SparsityPolicy = { input: 'attn_io', mlp: mlp((predictor) => ({ k: 301, selector: { kind: 'predictor', predictor } })) };
  const block = (cap: number, tau: number | null): SparsityPolicy => ({ input: 'attn_io', mlp: mlp((predictor) => ({ k: 0, selector: { kind: 'predictor', predictor, block: { cap, tau } } })) });
  const none = new Array(c.layers).fill(null);
  const withHeads: SparsityPolicy = { ...block(8, null), heads: none.map((_, l) => (l === 2 ? null : { k: 3, selector: { kind: 'fixed' as const, heads: Uint32Array.from([l % c.heads, (l + 3) % c.heads, (l + 5) % c.heads]) } })) };
  // f32 KV cache, qkv as stored, fp16 B and f32 block partials: the CPU's choices near ties (as the attn_in tests).
  const opts = { gpu, kvCache: 'f32' as const, gammaInWeights: false, predictorInt8: false, blockPartHalf: false };
  const cpu = new CpuRunner(c, ck.weights);
  const g = await createWebGpuRunner(c, ck.weights, opts), unfolded = await createWebGpuRunner(c, ck.weights, { ...opts, foldLayerNorm: false });
  const apart = await createWebGpuRunner(c, ck.weights, { ...opts, attnIoRide: false });
  gpu.device.pushErrorScope('validation');
  const ids = reference(MODELS['5m'])[1].input_ids, steps = [5, 17, 300, 41];
  for (const [name, p] of [['top-K', topK], ['blocked top-5', block(5, null)], ['threshold 0', block(64, 0)], ['block rule, sparse heads', withHeads]] as const) {
    // A prompt (unfolded, traced): the same neurons as the CPU, token by token.
    const acts = new Map<string, Float32Array>();
    for (const x of [cpu, g, unfolded, apart]) { x.setSparsity(p); x.reset(); }
    const want = await cpu.forward(ids, { allLogits: true, tracePoints: ['fc1_act'], trace: (l, pt, data) => acts.set(`${l}`, data) });
    const got = await g.forward(ids, { allLogits: true, tracePoints: ['fc1_act'], trace: (l, _pt, data) => {
      const ref = acts.get(`${l}`)!;
      for (let i = 0; i < ref.length; i++) assert.equal(data[i] !== 0, ref[i] !== 0, `${name}: layer ${l} neuron ${i % f} of token ${Math.floor(i / f)}`);
    } });
    assert.ok(relErr(got, want) < 1e-2, `${name}: prompt logits ${relErr(got, want)}`);
    for (const x of [unfolded, apart]) await x.forward(ids, { noLogits: true });
    // Decode steps: folded (A's first half in the qkv GEMV and its o half on out_proj's GEMV, or its
    // head-out dispatch with sparse heads), the o half apart, and unfolded.
    for (const id of steps) {
      const [a, b, e, w] = await Promise.all([g, unfolded, apart, cpu].map((x) => x.forward([id])));
      assert.ok(relErr(a, w) < 1e-2 && relErr(b, w) < 1e-2 && relErr(e, w) < 1e-2, `${name}, token ${id}: ${relErr(a, w)} / ${relErr(b, w)} / ${relErr(e, w)}`);
      assert.ok(relErr(a, e) < 1e-4, `${name}, token ${id}: riding vs apart ${relErr(a, e)}`);
    }
    const [dg, dc] = [await g.mlpDensity(), await cpu.mlpDensity()];
    if (p !== topK && p !== withHeads) dg.forEach((v, l) => assert.ok(v === dc[l] || Math.abs(v! - dc[l]!) < 1e-9, `${name}: layer ${l} density ${v} vs ${dc[l]}`));
  }
  assert.ok(g.pipelineKeys.some((k) => k.includes('_predA')), 'A\'s attn_in half rode the qkv GEMV');
  assert.ok(g.pipelineKeys.some((k) => k.includes('_resid_ride')) && !apart.pipelineKeys.some((k) => k.includes('_ride')), 'A\'s o half rode out_proj');
  assert.ok(g.pipelineKeys.some((k) => k.startsWith('head_out') && /_ride(_sgx?)?$/.test(k)), 'with sparse heads A\'s o half rode out_proj\'s head-out dispatch');
  g.setSparsity(withHeads); apart.setSparsity(withHeads);
  assert.equal(apart.dispatchesPerToken, g.dispatchesPerToken + 3, 'sparse heads: the o half apart is a head-out dispatch on each of the three sparse layers');
  // Dispatches: as many as attn_in predictors of A's first half scored in block-select as attn_io's
  // are; apart, the o half's GEMV on each of the three sparse layers more.
  const noEarly = await createWebGpuRunner(c, ck.weights, { ...opts, blockScoreInAttention: false });
  const half = (q: SparsityPolicy): SparsityPolicy => ({ input: 'attn_in', mlp: q.mlp.map((lp) => lp && lp.selector.kind === 'predictor' ? { ...lp, selector: { ...lp.selector, predictor: { ...lp.selector.predictor, A: columns(lp.selector.predictor.A, 19, 2 * d, 0, d) } } } : lp) });
  for (const p of [topK, block(5, null)]) {
    g.setSparsity(p); apart.setSparsity(p); noEarly.setSparsity(half(p));
    const what = p === topK ? 'top-K' : 'block rule';
    assert.equal(g.dispatchesPerToken, noEarly.dispatchesPerToken, `${what}: dispatches a token`);
    assert.equal(apart.dispatchesPerToken, noEarly.dispatchesPerToken + 3, `${what}: dispatches a token, the o half apart`);
  }
  // A predictor of the wrong width for its input is refused before anything changes.
  assert.throws(() => g.setSparsity(half(topK) && { ...half(topK), input: 'attn_io' }), /^DejavuError: layer 0: a predictor reading attn_io must be \(19, 512\)/);
  assert.throws(() => cpu.setSparsity({ ...half(topK), input: 'attn_io' }), /^DejavuError: layer 0: a predictor reading attn_io must be/);
  assert.equal(await gpu.device.popErrorScope(), null, 'no validation error');
  g.dispose(); unfolded.dispose(); noEarly.dispose(); apart.dispose();
});

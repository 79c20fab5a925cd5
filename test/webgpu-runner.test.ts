/**
 * The WebGPU runner against the CPU oracle on the tiny real models: logits at every prompt position,
 * greedy tokens against Hugging Face's, the packed-u32 path (no shader-f16) with weights split into
 * several buffers, prefill-then-decode against one-shot prefill, the sparse MLP with a predictor, and
 * greedy decoding chained on the device against the per-step readback loop.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { CpuRunner } from '../src/backend/cpu/runner.js';
import { createWebGpuRunner, FUSED_ATTENTION_MAX_KEYS } from '../src/backend/webgpu/runner.js';
import type { Gpu } from '../src/backend/webgpu/device.js';
import type { SparsityPolicy } from '../src/sparsity/policy.js';
import type { Runner } from '../src/backend/types.js';
import { floatsToHalves, halvesToFloats } from '../src/util/f16.js';
import { fp16Predictor, gpuOrSkip } from './gpu.js';
import { rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { argmax } from '../src/backend/cpu/kernels.js';
import { generate } from '../src/engine/generate.js';
import { checkpoint, greedyContinue, hasShared, hostGreedy, MODELS, randomArray, reference, relErr, rng, ROOT } from './helpers.js';
import { tinyConfig, writeTinyModel } from './tiny-model.js';

let gpu: Gpu | null = null;
after(() => gpu?.device.destroy());


/** Every position's logits within 1e-2 relative L2 of the CPU's. */
function assertRows(got: Float32Array, want: Float32Array, V: number, what: string): void {
  assert.equal(got.length, want.length, what);
  for (let t = 0; t < want.length / V; t++) {
    const e = relErr(got.subarray(t * V, (t + 1) * V), want.subarray(t * V, (t + 1) * V));
    assert.ok(e < 1e-2, `${what}, position ${t}: relative error ${e}`);
  }
}

for (const name of ['5m', '18m', '50m'] as const) {
  test(`webgpu runner matches the CPU runner and Hugging Face on opt-gutenberg-${name}`, { skip: name !== '5m' && !hasShared ? 'no ../shared' : false }, async (t) => {
    gpu ??= await gpuOrSkip(t);
    if (!gpu) return;
    const dir = MODELS[name];
    const ck = await checkpoint(dir);
    const V = ck.config.vocabSize;
    const cpu = new CpuRunner(ck.config, ck.weights);
    const g = await createWebGpuRunner(ck.config, ck.weights, { gpu });
    assert.match(g.description, /^webgpu: /);
    // lavapipe runs 50m decode at ~1 s/token on 2 cores: greedy-check one of its prompts unless
    // DEJAVU_FULL_TESTS is set (logits at every position are still checked for all four).
    const greedyPrompts = name === '50m' && !process.env.DEJAVU_FULL_TESTS ? 1 : Infinity;
    for (const [pi, r] of reference(dir).entries()) {
      cpu.reset(); g.reset();
      const want = await cpu.forward(r.input_ids, { allLogits: true });
      let logits = await g.forward(r.input_ids, { allLogits: true });
      assertRows(logits, want, V, `"${r.prompt}"`);
      if (pi >= greedyPrompts) continue;
      logits = logits.subarray(logits.length - V);
      const got = await greedyContinue(g, logits, r.greedy_new_ids.length);
      assert.deepEqual(got, r.greedy_new_ids, `greedy tokens of "${r.prompt}"`);
    }
    g.dispose();
  });
}

test('webgpu runner: packed-u32 weights split into parts, and prefill-then-decode equals one-shot prefill (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const V = ck.config.vocabSize;
  const cpu = new CpuRunner(ck.config, ck.weights);
  // Same device, shaders without shader-f16 (the path browsers take); 1 MiB parts force row splits.
  const g = await createWebGpuRunner(ck.config, ck.weights, { gpu: { ...gpu, f16: false }, maxPartBytes: 1 << 20 });
  // The packed path: no kernel reads f16 (the wide GEMV reads vec4<u32> in both modes).
  assert.ok(g.pipelineKeys.some((k) => k.includes('u32')) && !g.pipelineKeys.some((k) => k.includes('f16')), g.pipelineKeys.join());
  const ids = reference(MODELS['5m'])[0].input_ids;
  const oneShot = await g.forward(ids, { allLogits: true });
  assertRows(oneShot, await cpu.forward(ids, { allLogits: true }), V, 'packed u32');
  g.reset();
  const split = ids.length - 3;
  const parts = [await g.forward(ids.slice(0, split), { allLogits: true })];
  for (let i = split; i < ids.length; i++) parts.push(await g.forward([ids[i]]));
  const stepwise = new Float32Array(oneShot.length);
  let o = 0;
  for (const p of parts) { stepwise.set(p, o); o += p.length; }
  assertRows(stepwise, oneShot, V, 'prefill then decode');
  g.dispose();
});

test('webgpu prompt plans: a length seen before replays its plan, the least recently used go past the cap, the same logits either way (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const V = ck.config.vocabSize;
  const g = await createWebGpuRunner(ck.config, ck.weights, { gpu });
  const ids = reference(MODELS['5m'])[0].input_ids;
  const run = async (T: number) => { g.reset(); const l = await g.forward(ids.slice(0, T), { allLogits: true }); g.reset(); return l; };
  const first = new Map<number, Float32Array>();
  const built = g.planBuilds;
  for (const T of [5, 6, 7]) first.set(T, await run(T));
  assert.equal(g.planBuilds - built, 3, 'one plan a new length');
  for (const T of [7, 5, 6, 5]) assert.deepEqual(await run(T), first.get(T), `T = ${T} replayed`);
  assert.equal(g.planBuilds - built, 3, 'lengths seen before build nothing');
  // A cap of 2 prompt plans: 8 keeps itself and 5 (used last), dropping 7 and 6, the least recently used.
  g.planCacheMax = 2;
  await run(8);
  assert.equal(g.planBuilds - built, 4);
  await run(5);
  assert.equal(g.planBuilds - built, 4, '5 kept');
  assert.deepEqual(await run(7), first.get(7), 'T = 7 rebuilt');
  assert.equal(g.planBuilds - built, 5, '7 was dropped');
  // A dispatch cap below one plan keeps only the plan just built (6 was dropped above, 5 by 6); decode plans are not evicted.
  g.planCacheDispatches = 1;
  for (const T of [6, 5]) assertRows(await run(T), first.get(T)!, V, `T = ${T} under a dispatch cap`);
  assert.equal(g.planBuilds - built, 7);
  const decodes = g.planBuilds;
  g.reset(); await g.forward(ids.slice(0, 4)); await g.forward([ids[4]]); await g.forward([ids[5]]); g.reset();
  assert.equal(g.planBuilds - decodes, 1, 'the 4-token prompt only: the decode plan stays');
  g.dispose();
});

test('webgpu decode folds the pre-LayerNorms into the GEMVs: 2 dispatches fewer a dense layer and 1 for the final one, the same logits (5m; tiny post-LN unchanged)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, V = c.vocabSize, f = c.ffn, d = c.hidden, r = rng(5);
  assert.ok(c.preLayerNorm);
  const cpu = new CpuRunner(c, ck.weights);
  const g = await createWebGpuRunner(c, ck.weights, { gpu });
  const off = await createWebGpuRunner(c, ck.weights, { gpu, foldLayerNorm: false });
  assert.equal(off.dispatchesPerToken - g.dispatchesPerToken, 2 * c.layers + 1, 'dense: both LayerNorms of every layer folded, and the final one into the LM head');
  // Embedding, final LayerNorm and LM head, and a layer: LayerNorm, qkv (storing K and V: no
  // kvStore dispatch in decode), attention (1: the last split of each head combines), o, LayerNorm, fc1, fc2.
  assert.equal(off.dispatchesPerToken, 3 + 7 * c.layers, 'decode: K/V stored by the qkv GEMV, attention in one dispatch');
  // Prompts and traced steps fold nothing (the final LayerNorm included): a prompt runs the unfolded
  // runner's dispatches (with W∘γ its LayerNorms write x̂ alone: nothing reads LN(x) itself); a traced
  // one adds x̂ beside each layer's two LN(x), which the taps read.
  assert.equal(g.dispatchesFor(5), off.dispatchesFor(5), 'a prompt: nothing folded, one LayerNorm a block');
  for (const T of [1, 5]) assert.equal(g.dispatchesFor(T, true), off.dispatchesFor(T, true) + 2 * c.layers, `T ${T}, traced: nothing folded`);
  // Attention as the split + combine pair: one dispatch more a layer, the same logits to the bit.
  const pair = await createWebGpuRunner(c, ck.weights, { gpu, fuseAttention: false });
  assert.equal(pair.dispatchesPerToken - g.dispatchesPerToken, c.layers, 'the combine dispatch');
  // qkv holds W∘γ by default (its key ends _gw; gemv.ts, GAMMA IN W); gammaInWeights false keeps W and γ apart.
  const ng = await createWebGpuRunner(c, ck.weights, { gpu, gammaInWeights: false });
  assert.equal(ng.dispatchesPerToken, g.dispatchesPerToken);
  assert.ok(g.pipelineKeys.some((k) => /_kv(16)?_ln_gw$/.test(k)) && off.pipelineKeys.some((k) => /_bias_kv(16)?$/.test(k)));
  assert.ok(ng.pipelineKeys.some((k) => /_kv(16)?_ln$/.test(k)) && !ng.pipelineKeys.some((k) => k.endsWith('_gw')));
  assert.ok(g.pipelineKeys.some((k) => /_relu_ln_gw$/.test(k)) && !off.pipelineKeys.some((k) => /_ln(_gw)?$/.test(k)), 'fc1 folded, as W∘γ');
  // Prefill (unfused, T > 1: LayerNorm dispatches, kvStore), then decode steps (LayerNorm folded,
  // K/V stored from the qkv GEMV) against the unfolded runner and the CPU: the decode steps attend
  // over the K/V rows prefill's kvStore wrote and those the fused epilogue wrote.
  const ids = reference(MODELS['5m'])[2].input_ids;
  const next = [11, 400, 7, 2900];
  const runs = await Promise.all([g, off, ng].map(async (x) => { const out = [await x.forward(ids)]; for (const id of next) out.push(await x.forward([id])); return out; }));
  const want = [await cpu.forward(ids)];
  for (const id of next) want.push(await cpu.forward([id]));
  // Two rows a thread in every wide GEMV (the rule picks it for rows of >= 2048 columns only, so the
  // 5m model's decode would not run it otherwise): the same decode, folded LayerNorms and K/V store included.
  const runPair = [await pair.forward(ids)];
  for (const id of next) runPair.push(await pair.forward([id]));
  pair.dispose();
  for (let i = 0; i <= next.length; i++) assert.deepEqual(runPair[i], runs[0][i], `step ${i}: fused attention vs the pair`);
  const p2 = await createWebGpuRunner(c, ck.weights, { gpu, gemvRowsPerThread: 2 });
  // (Rows this short take the peeled first trip, gemv.ts PEEL: _pl.)
  assert.ok(p2.pipelineKeys.some((k) => /_kv(16)?_ln_p2_pl_gw$/.test(k)), p2.pipelineKeys.join());
  const run2 = [await p2.forward(ids)];
  for (const id of next) run2.push(await p2.forward([id]));
  p2.dispose();
  for (let i = 1; i <= next.length; i++) {
    assert.ok(relErr(runs[2][i], runs[1][i]) < 1e-5, `decode step ${i}: folded vs separate LayerNorm ${relErr(runs[2][i], runs[1][i])}`);
    // W∘γ is rounded to f16 once more than W: close, not equal (the prompt ran on W∘γ too, through x̂ and c2).
    // (5m: 0.8–1.7e-4.)
    assert.ok(relErr(runs[0][i], runs[2][i]) < 1e-3, `decode step ${i}: qkv as W∘γ vs W and γ apart ${relErr(runs[0][i], runs[2][i])}`);
    if (i === 1) assert.ok(relErr(runs[0][0], runs[2][0]) < 1e-3 && relErr(runs[0][0], runs[2][0]) > 0, 'the prompt: qkv as W∘γ through x̂ and c2');
    assert.ok(relErr(run2[i], runs[0][i]) < 1e-5, `decode step ${i}: two rows a thread vs one ${relErr(run2[i], runs[0][i])}`);
    assertRows(runs[0][i], want[i], V, `decode step ${i} against the CPU`);
  }
  // Sparse layers with fixed or oracle sets keep the MLP LayerNorm (the gathered fc1 reads mlp_in);
  // a predictor folds the LayerNorm in front of its input into its A product, and one reading mlp_in
  // also writes LN(x) for fc1 (lnOut). Layer 1 dense: 2 fewer; 2 (fixed) and 3 (oracle): 1 fewer
  // each; 0 (predictor): with input mlp_in 2 (top-K or the block rule); with attn_in its A product
  // rides the qkv GEMV (the lookahead): 2 with top-K (the MLP LayerNorm stays for the gathered fc1),
  // 3 with the block rule (block-select folds the MLP LayerNorm in too); and the final LayerNorm: 1.
  const h = (a: Float32Array) => halvesToFloats(floatsToHalves(a));
  const policy: SparsityPolicy = {
    input: 'attn_in',
    mlp: [
      { k: 301, selector: { kind: 'predictor', predictor: { rank: 7, A: h(randomArray(7 * d, r, 0.2)), B: h(randomArray(f * 7, r, 0.2)), bias: randomArray(f, r, 0.1) } } },
      null,
      { k: 77, selector: { kind: 'fixed', indices: Uint32Array.from({ length: 77 }, (_, i) => (i * 13) % f) } },
      { k: 200, selector: { kind: 'oracle' } },
    ],
  };
  assert.equal(c.layers, policy.mlp.length);
  const blockRule: SparsityPolicy = { input: 'mlp_in', mlp: policy.mlp.map((lp) => (lp?.selector.kind === 'predictor' ? { k: 0, selector: { ...lp.selector, block: { cap: 9, tau: null } } } : lp)) };
  const lookBlock: SparsityPolicy = { ...blockRule, input: 'attn_in' };
  for (const [p, fewer] of [[policy, 7], [{ ...policy, input: 'mlp_in' as const }, 7], [blockRule, 7], [lookBlock, 8]] as const) {
    g.setSparsity(p); off.setSparsity(p); cpu.setSparsity(p); ng.setSparsity(p);
    assert.equal(off.dispatchesPerToken - g.dispatchesPerToken, fewer, p.input);
    if (p.input === 'attn_in') assert.ok(g.pipelineKeys.some((k) => k.includes('_predA')), 'the lookahead GEMV');
    // (Its fc1 phase: the choice rides attention at this width, blockScoreInAttention.)
    if (p === lookBlock) assert.ok(g.pipelineKeys.some((k) => k.startsWith('block_select') && new RegExp(`_ln${d}h?g(_fc1)?(_fc2c\\dh?)?$`).test(k)), 'block-select with the MLP LayerNorm');
    g.reset(); off.reset(); cpu.reset(); ng.reset();
    const [a, b, w, n] = await Promise.all([g, off, cpu, ng].map(async (x) => { await x.forward(ids, { noLogits: true }); return x.forward([next[0]]); }));
    assert.ok(relErr(n, b) < 1e-4, `sparse (${p.input}) decode: folded vs separate ${relErr(n, b)}`);
    assert.ok(relErr(a, n) < 1e-3, `sparse (${p.input}) decode: qkv as W∘γ vs W and γ apart ${relErr(a, n)}`);
    assert.ok(relErr(a, w) < 1e-2, `sparse (${p.input}) decode against the CPU`);
  }
  g.dispose(); off.dispose(); ng.dispose();

  // Post-LN: nothing to fold; decode still matches the CPU.
  const dir = writeTinyModel(tinyConfig({ do_layer_norm_before: false }));
  const tiny = await checkpoint(dir);
  const gt = await createWebGpuRunner(tiny.config, tiny.weights, { gpu }), ot = await createWebGpuRunner(tiny.config, tiny.weights, { gpu, foldLayerNorm: false });
  assert.equal(gt.dispatchesPerToken, ot.dispatchesPerToken);
  const ct = new CpuRunner(tiny.config, tiny.weights);
  for (const x of [gt, ct]) await x.forward([2, 10, 20], { noLogits: true });
  assert.ok(relErr(await gt.forward([30]), await ct.forward([30])) < 1e-3, 'post-LN decode');
  gt.dispose(); ot.dispose();
  rmSync(dir, { recursive: true });

  // Pre-LN with project_out (no published OPT, but a config that loads): the final LayerNorm folds
  // into project_out's GEMV and the lm_head runs plain after it; decode as unfolded and as the CPU,
  // the greedy chain's ids too (its lm_head GEMV picks through the argmax epilogue).
  const pdir = writeTinyModel(tinyConfig({ word_embed_proj_dim: 8 }));
  const pm = await checkpoint(pdir);
  const gp = await createWebGpuRunner(pm.config, pm.weights, { gpu }), op = await createWebGpuRunner(pm.config, pm.weights, { gpu, foldLayerNorm: false });
  assert.equal(op.dispatchesPerToken - gp.dispatchesPerToken, 2 * pm.config.layers + 1, 'project_out: the final LayerNorm folded too');
  const cp = new CpuRunner(pm.config, pm.weights);
  for (const x of [gp, op, cp]) await x.forward([2, 10, 20], { noLogits: true });
  for (const id of [30, 31, 7]) {
    const [a, b, w] = await Promise.all([gp, op, cp].map((x) => x.forward([id])));
    assert.ok(relErr(a, b) < 1e-3 && relErr(a, w) < 1e-3, `project_out decode, token ${id}: ${relErr(a, b)} / ${relErr(a, w)}`);
  }
  // The chain against the same runner's per-step loop over the same tokens (host argmax of its logits).
  const chained = await gp.decodeGreedy(5, 6, () => true);
  gp.reset();
  for (const ids of [[2, 10, 20], [30], [31], [7]]) await gp.forward(ids, { noLogits: true });
  assert.deepEqual(chained, await greedyContinue(gp, await gp.forward([5]), 6), 'project_out: the greedy chain');
  gp.dispose(); op.dispose();
  rmSync(pdir, { recursive: true });
});

test('webgpu sparse MLP: predictor policy selects and computes like the CPU runner (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, d = c.hidden, f = c.ffn, r = rng(11);
  // Predictor weights exactly representable in fp16, so the GPU's fp16 copy scores like the CPU.
  const h = (a: Float32Array) => halvesToFloats(floatsToHalves(a));
  const rank = 19;
  const policy: SparsityPolicy = {
    input: 'attn_in',
    mlp: Array.from({ length: c.layers }, (_, l) => (l === 1 ? null : {
      k: 301, selector: { kind: 'predictor' as const, predictor: { rank, A: h(randomArray(rank * d, r, 0.2)), B: h(randomArray(f * rank, r, 0.2)), bias: randomArray(f, r, 0.1) } },
    })),
  };
  policy.mlp[2] = { k: 77, selector: { kind: 'fixed', indices: Uint32Array.from({ length: 77 }, (_, i) => (i * 13) % f) } };
  policy.mlp[3] = { k: 200, selector: { kind: 'oracle' } };
  // The block rule on the predictor layer: blocked top-5, and a threshold (0) with no cap (64).
  const blockRule = (block: { cap: number; tau: number | null }): SparsityPolicy => ({
    input: 'mlp_in',
    mlp: policy.mlp.map((lp) => (lp?.selector.kind === 'predictor' ? { k: 0, selector: { ...lp.selector, block } } : lp)),
  });
  const top5 = blockRule({ cap: 5, tau: null }), thr = blockRule({ cap: 64, tau: 0 });
  const cpu = new CpuRunner(c, ck.weights);
  // An f32 KV cache: the CPU's attention inputs exactly, so near-ties in the selections fall alike;
  // for the same reason qkv keeps the checkpoint's weights (qkv as W∘γ, the default, rounds them
  // once more: ~1e-4 of the logits, the folding test above, enough to flip a near-tie here).
  // fp16 B (predictorInt8 false): the CPU's choices near ties (block-select.ts, I8).
  const g = await createWebGpuRunner(c, ck.weights, { gpu, kvCache: 'f32', gammaInWeights: false, predictorInt8: false });
  assert.ok(!g.pipelineKeys.some((k) => k.includes('kv16')));
  // With attn_in, decode runs the lookahead (A in the qkv GEMV, the MLP LayerNorm in block-select).
  for (const p of [policy, { ...policy, input: 'mlp_in' as const }, top5, thr, { ...top5, input: 'attn_in' as const }, { ...thr, input: 'attn_in' as const }]) {
    cpu.setSparsity(p); g.setSparsity(p); cpu.reset(); g.reset();
    const ids = reference(MODELS['5m'])[1].input_ids;
    const acts = new Map<string, Float32Array>();
    const want = await cpu.forward(ids, { allLogits: true, trace: (l, pt, data) => acts.set(`${l}/${pt}`, data), tracePoints: ['fc1_act'] });
    let seen = 0;
    const got = await g.forward(ids, { allLogits: true, tracePoints: ['fc1_act'], trace: (l, pt, data, rows) => {
      seen++;
      assert.equal(rows, ids.length);
      const ref = acts.get(`${l}/${pt}`)!;
      for (let i = 0; i < ref.length; i++) assert.equal(data[i] !== 0, ref[i] !== 0, `layer ${l} neuron ${i % f} of token ${Math.floor(i / f)}: selection differs`);
      assert.ok(relErr(data, ref) < 1e-3, `layer ${l} fc1_act`);
    } });
    assert.equal(seen, c.layers);
    assertRows(got, want, c.vocabSize, `sparse (${p.input})`);
    const dec = await g.forward([5]), decCpu = await cpu.forward([5]);
    assert.ok(relErr(dec, decCpu) < 1e-2, 'sparse decode');
    // Measured density: the same counts both ways (block rule), k / f for the others.
    const [dg, dc] = [await g.mlpDensity(), await cpu.mlpDensity()];
    dg.forEach((v, l) => assert.ok(v === dc[l] || Math.abs(v! - dc[l]!) < 1e-9, `layer ${l} density ${v} vs ${dc[l]}`));
    if (p === top5) assert.equal(dc[0], (5 * Math.ceil(f / 64)) / f, 'blocked top-5: 5 a block');
    if (p === thr) assert.ok(dc[0]! > 0.05 && dc[0]! < 0.95, `threshold: ${dc[0]}`);
  }
  g.setSparsity(null);
  g.dispose();
});

test('webgpu block scoring in the attention dispatch (block rule with the lookahead): the choice, density and logits of block-select scoring itself; fused attention and the pair, sparse heads, the greedy chain (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, d = c.hidden, f = c.ffn, H = c.heads, r = rng(31);
  const pred = () => fp16Predictor(20, d, f, r);
  const policy = (block: { cap: number; tau: number | null }, heads: boolean): SparsityPolicy => ({
    input: 'attn_in',
    mlp: Array.from({ length: c.layers }, (_, l) => (l === 2 ? null : { k: 0, selector: { kind: 'predictor' as const, predictor: pred(), block } })),
    ...(heads ? { heads: Array.from({ length: c.layers }, (_, l) => ({ k: 3, selector: { kind: 'fixed' as const, heads: Uint32Array.from([l % H, (l + 2) % H, (l + 5) % H]) } })) } : {}),
  });
  // Crosses FUSED_ATTENTION_MAX_KEYS: the role rides the fused dispatch, then the pair's split.
  const prompt = Array.from({ length: FUSED_ATTENTION_MAX_KEYS - 3 }, () => Math.floor(r() * c.vocabSize));
  const next = [11, 400, 7, 2900, 5, 31];
  // fp16 B on both sides: int8 B goes only with the role (predictorInt8), and these compare bits.
  const early = await createWebGpuRunner(c, ck.weights, { gpu, kvCache: 'f32', predictorInt8: false });
  const own = await createWebGpuRunner(c, ck.weights, { gpu, kvCache: 'f32', blockScoreInAttention: false, predictorInt8: false });
  const steps = async (x: typeof early, p: SparsityPolicy) => {
    x.setSparsity(p); x.reset(); x.resetMlpDensity();
    await x.forward(prompt);
    const out: Float32Array[] = [];
    for (const id of next) out.push(await x.forward([id]));
    return { out, density: await x.mlpDensity(), perToken: x.dispatchesPerToken };
  };
  for (const [block, heads] of [[{ cap: 5, tau: null }, false], [{ cap: 64, tau: 0 }, false], [{ cap: 7, tau: -0.05 }, true]] as const) {
    const p = policy(block, heads), what = `cap ${block.cap} tau ${block.tau}${heads ? ', sparse heads' : ''}`;
    const [a, b] = [await steps(early, p), await steps(own, p)];
    a.out.forEach((v, i) => assert.ok(relErr(v, b.out[i]) < 1e-5, `${what}, step ${i}: ${relErr(v, b.out[i])}`));
    assert.deepEqual(a.density, b.density, `${what}: the same neurons chosen`);
    assert.equal(a.perToken, b.perToken, `${what}: no dispatch more or fewer`);
  }
  assert.ok(early.pipelineKeys.some((k) => /_fused(_grp\d+)?_bsrole/.test(k)) && early.pipelineKeys.some((k) => /split1.*_bsrole/.test(k) && !k.includes('_fused')), 'the role rode the fused dispatch and the split of the pair');
  assert.ok(early.pipelineKeys.some((k) => k.startsWith('block_select') && k.includes('_fc1')), 'block-select ran its fc1 phase');
  assert.ok(!own.pipelineKeys.some((k) => k.includes('bsrole') || k.includes('_fc1')), 'the option turns it off');
  // The chain on the device: the same ids.
  const chained = policy({ cap: 5, tau: null }, true);
  const greedy = async (x: typeof early) => { x.setSparsity(chained); x.reset(); await x.forward(prompt.slice(0, 40), { noLogits: true }); return x.decodeGreedy(next[0], 10, () => true); };
  assert.deepEqual(await greedy(early), await greedy(own));
  early.setSparsity(null); own.setSparsity(null);
  early.dispose(); own.dispose();
});

test('webgpu fc2 in block-select (each block\'s partial, then one sum) decodes as the one-pass fc2: the same neurons, logits and dispatch count; greedy chain (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, d = c.hidden, f = c.ffn, H = c.heads, r = rng(37);
  const policy = (input: 'attn_in' | 'mlp_in', block: { cap: number; tau: number | null }, heads: boolean): SparsityPolicy => ({
    input,
    mlp: Array.from({ length: c.layers }, (_, l) => (l === 1 ? null : { k: 0, selector: { kind: 'predictor' as const, predictor: fp16Predictor(20, d, f, r), block } })),
    ...(heads ? { heads: Array.from({ length: c.layers }, (_, l) => ({ k: 3, selector: { kind: 'fixed' as const, heads: Uint32Array.from([l % H, (l + 1) % H, (l + 4) % H]) } })) } : {}),
  });
  const prompt = Array.from({ length: 37 }, () => Math.floor(r() * c.vocabSize)), next = [11, 400, 7, 2900, 5];
  // fp16 B and f32 partials: the forms below do the same arithmetic (int8 B rides only the attention
  // dispatch's scoring, which noRole turns off; f16 partials round what the one-pass fc2 does not).
  const exact = { gpu, kvCache: 'f32', predictorInt8: false, blockPartHalf: false } as const;
  const on = await createWebGpuRunner(c, ck.weights, exact);
  const off = await createWebGpuRunner(c, ck.weights, { ...exact, blockFc2: false });
  // The lookahead with block-select scoring itself: the 'all' phase with the folded LayerNorm and fc2.
  const noRole = await createWebGpuRunner(c, ck.weights, { ...exact, blockScoreInAttention: false });
  // The fc1 phase loading its rows after the LayerNorm's work (an A/B option): the same arithmetic.
  const late = await createWebGpuRunner(c, ck.weights, { ...exact, blockFc1EarlyLoads: false });
  // The defaults (int8 B, f16 partials) against the one-pass fc2 over the same int8 B: the same
  // neurons, logits within the f16 partials' rounding.
  const half = await createWebGpuRunner(c, ck.weights, { gpu, kvCache: 'f32' }), offI8 = await createWebGpuRunner(c, ck.weights, { gpu, kvCache: 'f32', blockFc2: false });
  const steps = async (x: typeof on, p: SparsityPolicy) => {
    x.setSparsity(p); x.reset(); x.resetMlpDensity();
    await x.forward(prompt, { noLogits: true });
    const out: Float32Array[] = [];
    for (const id of next) out.push(await x.forward([id]));
    return { out, density: await x.mlpDensity(), perToken: x.dispatchesPerToken };
  };
  // The lookahead (the choice beside attention, block-select's fc1 phase with the folded LayerNorm) and
  // the block's own input (scoring in block-select); a cap, a threshold, sparse heads.
  for (const [input, block, heads] of [['attn_in', { cap: 5, tau: null }, false], ['attn_in', { cap: 9, tau: -0.05 }, true], ['mlp_in', { cap: 64, tau: 0 }, false]] as const) {
    const p = policy(input, block, heads), what = `${input} cap ${block.cap} tau ${block.tau}${heads ? ', sparse heads' : ''}`;
    const b = await steps(off, p);
    const forms: [typeof on, string][] = [[on, 'fc2 in block-select'], ...(input === 'attn_in' ? [[noRole, 'fc2 in block-select, scoring there too'], [late, 'fc1 rows loaded late']] as [typeof on, string][] : [])];
    for (const [x, form] of forms) {
      const a = await steps(x, p);
      a.out.forEach((v, i) => assert.ok(relErr(v, b.out[i]) < 1e-5, `${what}, ${form}, step ${i}: ${relErr(v, b.out[i])}`));
      assert.deepEqual(a.density, b.density, `${what}, ${form}: the same neurons chosen`);
      assert.equal(a.perToken, b.perToken, `${what}, ${form}: one sum dispatch for the one-pass fc2`);
    }
    if (input === 'attn_in' && !heads) {
      const a = await steps(half, p), bi = await steps(offI8, p);
      a.out.forEach((v, i) => assert.ok(relErr(v, bi.out[i]) < 2e-3, `${what}, int8 B and f16 partials, step ${i}: ${relErr(v, bi.out[i])}`));
      assert.deepEqual(a.density, bi.density, `${what}, int8 B and f16 partials: the same neurons chosen`);
    }
  }
  assert.ok(half.pipelineKeys.some((k) => /^block_select.*_Bi8.*_fc2c\dh$/.test(k)) || half.pipelineKeys.some((k) => k.startsWith('attention') && k.includes('bsrole_Bi8')), 'the defaults took int8 B');
  assert.ok(half.pipelineKeys.some((k) => /_fc2c\dh$/.test(k)) && half.pipelineKeys.some((k) => k.startsWith('fc2_sum') && k.endsWith('_h')), 'the defaults took f16 partials');
  assert.ok(!on.pipelineKeys.some((k) => k.includes('Bi8') || /_fc2c\dh$/.test(k)), 'the exact form: fp16 B, f32 partials');
  half.dispose(); offI8.dispose();
  assert.ok(noRole.pipelineKeys.some((k) => new RegExp(`^block_select.*_ln${d}h?g?(_cf)?_fc2c1$`).test(k)), 'the scoring phase with the folded LayerNorm took fc2');
  assert.ok(late.pipelineKeys.some((k) => k.includes('_fc1late_fc2')) && !on.pipelineKeys.some((k) => k.includes('_fc1late')), 'the late form where asked for');
  assert.ok(on.pipelineKeys.some((k) => k.startsWith('block_select') && k.includes('_fc1_fc2')) && on.pipelineKeys.some((k) => /^block_select.*_fc2c\d$/.test(k) && !k.includes('_fc1')), 'both phases took fc2');
  assert.ok(on.pipelineKeys.some((k) => k.startsWith('fc2_sum')) && !off.pipelineKeys.some((k) => k.startsWith('fc2_sum') || k.includes('_fc2c')), 'the option turns it off');
  const chained = policy('attn_in', { cap: 5, tau: null }, true);
  const greedy = async (x: typeof on) => { x.setSparsity(chained); x.reset(); await x.forward(prompt, { noLogits: true }); return x.decodeGreedy(next[0], 10, () => true); };
  assert.deepEqual(await greedy(on), await greedy(off));
  on.dispose(); off.dispose(); noRole.dispose(); late.dispose();
  // fc2ᵀ in parts (a tiny model, 8 KiB parts: fc2ᵀ in 4 of 64 rows): no seat in block-select, so the
  // one-pass fc2 runs; the CPU agrees.
  const dir = writeTinyModel(tinyConfig({ hidden_size: 64, ffn_dim: 256, num_attention_heads: 4, max_position_embeddings: 8 }));
  const tiny = await checkpoint(dir), tc = tiny.config;
  const split = await createWebGpuRunner(tc, tiny.weights, { gpu, kvCache: 'f32', maxPartBytes: 8192 }), cpu = new CpuRunner(tc, tiny.weights);
  const tp: SparsityPolicy = { input: 'attn_in', mlp: Array.from({ length: tc.layers }, () => ({ k: 0, selector: { kind: 'predictor' as const, predictor: fp16Predictor(16, tc.hidden, tc.ffn, r), block: { cap: 5, tau: null } } })) };
  split.setSparsity(tp); cpu.setSparsity(tp);
  for (const x of [split, cpu]) await x.forward([3, 77, 5], { noLogits: true });
  assert.ok(relErr(await split.forward([9]), await cpu.forward([9])) < 1e-3, 'split fc2ᵀ against the CPU');
  assert.ok(split.pipelineKeys.some((k) => k.startsWith('fc2_direct')) && !split.pipelineKeys.some((k) => k.startsWith('fc2_sum')), 'the one-pass fc2 where fc2ᵀ is split');
  split.dispose();
  rmSync(dir, { recursive: true });
});

test('webgpu chained greedy decode: the same ids as the per-step readback loop, position and KV after an early stop (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const g = await createWebGpuRunner(ck.config, ck.weights, { gpu });
  const refs = reference(MODELS['5m']);
  const N = 21; // more steps than the window of queued steps (16, reached after 6 ids), so its slots are reused
  const runs = async (ids: number[]) => {
    g.reset();
    const logits = await g.forward(ids);
    const old = await greedyContinue(g, logits, N);
    assert.equal(g.position, ids.length + N - 1);
    g.reset();
    const first = argmax(await g.forward(ids));
    const seen: number[] = [];
    const chained = [first, ...await g.decodeGreedy(first, N - 1, (id) => { seen.push(id); return true; })];
    assert.equal(g.position, ids.length + N - 1, 'position after the chain');
    assert.deepEqual(seen, chained.slice(1), 'onToken sees every id, in order');
    return { old, chained };
  };
  for (const r of refs.slice(0, 2)) {
    const { old, chained } = await runs(r.input_ids);
    assert.deepEqual(chained, old, `"${r.prompt}"`);
    assert.deepEqual(chained.slice(0, r.greedy_new_ids.length), r.greedy_new_ids.slice(0, N), `"${r.prompt}" against Hugging Face`);
  }

  // Early stop: 3 ids accepted out of 10 steps asked for, with more already queued on the device.
  const P = refs[0].input_ids;
  g.reset();
  const first = argmax(await g.forward(P));
  let n = 0;
  const got = await g.decodeGreedy(first, 10, () => ++n < 3);
  assert.equal(got.length, 3);
  assert.equal(g.position, P.length + 3, 'prompt + the fed tokens: first and the two accepted ids');
  const after = await g.forward([got[2]]);
  // A fresh run over the same tokens, one readback step at a time: the same kernels, the same logits.
  g.reset();
  await g.forward(P);
  for (const id of [first, got[0], got[1]]) await g.forward([id]);
  const fresh = await g.forward([got[2]]);
  assert.deepEqual(after, fresh, 'logits after an early stop equal a fresh run');
  // A second chain right after the first (the queued steps' slots are drained first) continues alike.
  const more = await g.decodeGreedy(argmax(after), 5, () => true);
  g.reset();
  await g.forward(P);
  for (const id of [first, ...got]) await g.forward([id]);
  assert.deepEqual(more, (await greedyContinue(g, await g.forward([argmax(after)]), 5)), 'a second chain');

  // The chain owns the runner while it runs: reset, setSparsity and forward refuse from onToken.
  g.reset();
  const errs: string[] = [];
  let pending: Promise<unknown> | null = null;
  await g.decodeGreedy(argmax(await g.forward(P)), 4, () => {
    for (const call of [() => g.reset(), () => g.setSparsity(null)]) {
      try { call(); } catch (e) { errs.push((e as Error).message); }
    }
    pending = g.forward([1]);
    return false;
  });
  await assert.rejects(pending!, /forward called while decodeGreedy runs/);
  assert.deepEqual(errs, ['reset called while decodeGreedy runs', 'setSparsity called while decodeGreedy runs']);
  assert.equal(g.position, P.length + 1);

  // The context bound: a chain may end exactly at the last position, never past it (a tiny model
  // with a context of 32: filling the 5m model's 1024 takes a minute on lavapipe).
  const dir = writeTinyModel();
  const tiny = await checkpoint(dir);
  const gt = await createWebGpuRunner(tiny.config, tiny.weights, { gpu });
  const ctx = tiny.config.maxPositions;
  await gt.forward(Array.from({ length: ctx - 3 }, (_, i) => (i * 31) % tiny.config.vocabSize), { noLogits: true });
  await assert.rejects(gt.decodeGreedy(5, 4, () => true), /pass the context/);
  assert.equal((await gt.decodeGreedy(5, 3, () => true)).length, 3);
  assert.equal(gt.position, ctx);
  gt.dispose();
  rmSync(dir, { recursive: true });

  // With a sparsity policy the chain runs the sparse plan.
  const f = ck.config.ffn;
  const policy: SparsityPolicy = { input: 'mlp_in', mlp: Array.from({ length: ck.config.layers }, (_, l) => (l % 2 ? null : { k: 300, selector: { kind: 'fixed' as const, indices: Uint32Array.from({ length: 300 }, (_, i) => (i * 7 + l) % f) } })) };
  g.setSparsity(policy);
  const sparse = await runs(refs[1].input_ids);
  assert.deepEqual(sparse.chained, sparse.old, 'sparse');
  const cpu = new CpuRunner(ck.config, ck.weights);
  cpu.setSparsity(policy);
  assert.deepEqual(sparse.chained, await greedyContinue(cpu, await cpu.forward(refs[1].input_ids), N), 'sparse, against the CPU');
  // The block rule (fused block-select kernel, LayerNorm folded into predictor A) in the chain.
  const d = ck.config.hidden, r = rng(5), rank = 16, h = (a: Float32Array) => halvesToFloats(floatsToHalves(a));
  const block: SparsityPolicy = { input: 'mlp_in', mlp: Array.from({ length: ck.config.layers }, (_, l) => (l === 0 ? null : {
    k: 0, selector: { kind: 'predictor' as const, predictor: { rank, A: h(randomArray(rank * d, r, 0.2)), B: h(randomArray(f * rank, r, 0.2)), bias: randomArray(f, r, 0.1) }, block: { cap: 12, tau: 0.05 } },
  })) };
  g.setSparsity(block); cpu.setSparsity(block);
  const blocked = await runs(refs[2].input_ids);
  assert.deepEqual(blocked.chained, blocked.old, 'block rule');
  cpu.reset();
  assert.deepEqual(blocked.chained, await greedyContinue(cpu, await cpu.forward(refs[2].input_ids), N), 'block rule, against the CPU');
  g.setSparsity(null);
  g.dispose();
});

test('webgpu profileDecodeSteps across the switch to the attention pair: every step runs, rows add up by kernel, the cache as timeDecodeSteps leaves it (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  if (!gpu.timestamps) { t.skip('no timestamp-query on this adapter'); return; }
  const ck = await checkpoint(MODELS['5m']);
  const prompt = Array.from({ length: 36 }, (_, i) => (i * 37) % ck.config.vocabSize);
  const run = async (profile: boolean) => {
    const g = await createWebGpuRunner(ck.config, ck.weights, { gpu: gpu!, kvCache: 'f32', fusedAttentionMaxKeys: 40 });
    await g.forward(prompt, { noLogits: true });
    const p = profile ? await g.profileDecodeSteps(10, 3) : (await g.timeDecodeSteps(10, 3), null);
    const next = await g.forward([5]);
    g.dispose();
    return { p, next };
  };
  const timed = await run(false), profiled = await run(true);
  assert.ok(relErr(profiled.next, timed.next) < 1e-5, `the step after profiling: ${relErr(profiled.next, timed.next)}`);
  // Positions 36..45: 4 steps see at most 40 keys (fused), 6 the pair (one dispatch more a layer).
  const L = ck.config.layers, p = profiled.p!;
  const combine = p.rows.filter((r) => r.kernel.startsWith('attention_split2'));
  assert.ok(Math.abs(combine.reduce((a, r) => a + r.perToken, 0) - 0.6 * L) < 1e-9, 'the pair\'s combine in 6 of 10 steps');
  assert.ok(Math.abs(p.rows.reduce((a, r) => a + r.perToken, 0) - p.dispatchesPerToken) < 1e-6, 'rows add up to the dispatches');
});

test('webgpu fc2 in one layout: a sparse policy frees the dense fc2 and going back transposes it again, with the logits of keeping both (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, f = c.ffn, fc2Bytes = c.layers * f * c.hidden * 2;
  const one = await createWebGpuRunner(c, ck.weights, { gpu }), both = await createWebGpuRunner(c, ck.weights, { gpu, keepDenseFc2: true });
  const ids = reference(MODELS['5m'])[0].input_ids;
  const run = async (g: typeof one) => { g.reset(); const a = await g.forward(ids); return [a, await g.forward([7]), await g.forward([300])]; };
  const fixed = (l: number) => ({ k: 200, selector: { kind: 'fixed' as const, indices: Uint32Array.from({ length: 200 }, (_, i) => (i * 5 + l) % f) } });
  const allSparse: SparsityPolicy = { input: 'mlp_in', mlp: Array.from({ length: c.layers }, (_, l) => fixed(l)) };
  const halfSparse: SparsityPolicy = { input: 'mlp_in', mlp: Array.from({ length: c.layers }, (_, l) => (l % 2 ? fixed(l) : null)) };
  const bytes0 = one.weightMatrixBytes(), dense0 = await run(one);
  for (const [p, what] of [[allSparse, 'every layer sparse'], [halfSparse, 'half the layers'], [null, 'dense again'], [allSparse, 'a new sparse policy'], [null, 'parked'], [allSparse, 'the parked policy']] as const) {
    one.setSparsity(p); both.setSparsity(p);
    assert.equal(one.weightMatrixBytes(), bytes0, `${what}: one copy of fc2`);
    if (p) assert.equal(both.weightMatrixBytes(), bytes0 + fc2Bytes, `${what}: keepDenseFc2 holds both layouts`);
    const got = await run(one), want = await run(both);
    got.forEach((v, i) => assert.deepEqual(v, want[i], `${what}: logits ${i} as with both layouts`));
    if (!p) got.forEach((v, i) => assert.deepEqual(v, dense0[i], `${what}: the dense logits of before, to the bit`));
  }
  one.dispose(); both.dispose();

  // Matrices in several parts (a tiny model with 512-byte parts: fc2 in 2) switch by allocating the
  // other layout and freeing the first: the same bytes and logits as one part.
  const dir = writeTinyModel(tinyConfig({ max_position_embeddings: 8 }));
  const tiny = await checkpoint(dir), tc = tiny.config;
  const whole = await createWebGpuRunner(tc, tiny.weights, { gpu }), parts = await createWebGpuRunner(tc, tiny.weights, { gpu, maxPartBytes: 512 });
  const tinyPolicy: SparsityPolicy = { input: 'mlp_in', mlp: Array.from({ length: tc.layers }, (_, l) => ({ k: 9, selector: { kind: 'fixed' as const, indices: Uint32Array.from({ length: 9 }, (_, i) => (i * 5 + l) % tc.ffn) } })) };
  const tinyRun = async (g: typeof one) => { g.reset(); return [await g.forward([3, 77, 5]), await g.forward([9])]; };
  const partBytes0 = parts.weightMatrixBytes();
  for (const p of [tinyPolicy, null, tinyPolicy]) {
    whole.setSparsity(p); parts.setSparsity(p);
    assert.equal(parts.weightMatrixBytes(), partBytes0, 'one copy of fc2 (matrices in parts)');
    const want = await tinyRun(whole), got = await tinyRun(parts);
    got.forEach((v, i) => assert.ok(relErr(v, want[i]) < 1e-5, `${p ? 'sparse' : 'dense'}: logits ${i} with matrices in parts ${relErr(v, want[i])}`));
  }
  whole.dispose(); parts.dispose();
  rmSync(dir, { recursive: true });
});

test('webgpu generate: greedy chained on the device streams the same pieces, ids and finish as the readback loop (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const g = await createWebGpuRunner(ck.config, ck.weights, { gpu });
  const run = async (r: typeof g | ReturnType<typeof hostGreedy>, prompt: string, o: { maxTokens: number; stop?: string[]; eosTokenIds?: number[] }) => {
    const gen = generate(r, ck.tokenizer, prompt, { temperature: 0, ...o });
    const pieces: string[] = [];
    for await (const p of gen) pieces.push(p);
    const res = await gen.result;
    return { pieces, ids: res.generatedIds, text: res.text, finish: res.finishReason, position: r.position };
  };
  const prompt = 'It was a dark and stormy night, and';
  const full = await run(g, prompt, { maxTokens: 24 });
  assert.deepEqual(full, await run(hostGreedy(g), prompt, { maxTokens: 24 }));
  assert.equal(full.ids.length, 24);
  // A stop string and an EOS id taken from the greedy text: both end early with steps still queued.
  const stop = full.text.slice(10, 14);
  const viaStop = await run(g, prompt, { maxTokens: 24, stop: [stop] });
  assert.equal(viaStop.finish, 'stop');
  assert.equal(viaStop.text, full.text.slice(0, full.text.indexOf(stop)));
  assert.deepEqual(viaStop, await run(hostGreedy(g), prompt, { maxTokens: 24, stop: [stop] }));
  const eos = [full.ids[6]];
  const viaEos = await run(g, prompt, { maxTokens: 24, eosTokenIds: eos });
  assert.equal(viaEos.finish, 'stop');
  assert.deepEqual(viaEos.ids, full.ids.slice(0, full.ids.indexOf(eos[0])));
  assert.deepEqual(viaEos, await run(hostGreedy(g), prompt, { maxTokens: 24, eosTokenIds: eos }));
  // A consumer that stops iterating: the chain stops, the runner is idle and usable.
  const gen = generate(g, ck.tokenizer, prompt, { temperature: 0, maxTokens: 24 });
  for await (const _ of gen) break;
  assert.ok(g.position < ck.tokenizer.encode(prompt).length + 23);
  assert.deepEqual(await run(g, prompt, { maxTokens: 24 }), full);
  g.dispose();
});

test('webgpu generate: sampling by temperature (and top-k) chains on the device (the Gumbel draw): the host loop\'s pieces and ids, with logprobs too, and the CPU runner\'s (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const g = await createWebGpuRunner(ck.config, ck.weights, { gpu });
  const run = async (r: Runner, o: { temperature: number; topK?: number; seed: number; maxTokens: number; stop?: string[]; logprobs?: number }) => {
    const gen = generate(r, ck.tokenizer, 'It was a dark and stormy night, and', o);
    const pieces: string[] = [];
    for await (const p of gen) pieces.push(p);
    const res = await gen.result;
    return { pieces, ids: res.generatedIds, finish: res.finishReason, position: r.position };
  };
  for (const o of [{ temperature: 1, seed: 11, maxTokens: 24 }, { temperature: 0.7, seed: 2 ** 32 - 3, maxTokens: 24 }, { temperature: 0.9, topK: 40, seed: 5, maxTokens: 24 }]) {
    const chained = await run(g, o);
    assert.equal(chained.ids.length, 24);
    // The same draws step by step on the host: the WebGPU runner's own logits, the twin's rule.
    assert.deepEqual(chained, await run(hostGreedy(g), o), JSON.stringify(o));
    // With logprobs generate reads every step's logits (the host loop) and draws the same tokens.
    const lp = await run(g, { ...o, logprobs: 1 });
    assert.deepEqual(lp.ids, chained.ids, 'with logprobs');
    // The CPU runner draws the same tokens for these seeds (its logits differ from the fp16 GPU's in
    // the last bits, so a near tie of two perturbed logits could part them; none here).
    assert.deepEqual((await run(new CpuRunner(ck.config, ck.weights), o)).ids, chained.ids, `CPU ${JSON.stringify(o)}`);
    // A stop string cuts the chain early, with steps still queued: as the host loop.
    const stop = ck.tokenizer.decode(chained.ids).slice(8, 12);
    const cut = await run(g, { ...o, stop: [stop] });
    assert.equal(cut.finish, 'stop');
    assert.deepEqual(cut, await run(hostGreedy(g), { ...o, stop: [stop] }));
  }
  // Other seeds, other draws; after the top-k chain (its plans dropped for the new k), the whole
  // vocabulary's draw again as the host loop makes it.
  const again = await run(g, { temperature: 1, seed: 11, maxTokens: 24 });
  assert.deepEqual(again, await run(hostGreedy(g), { temperature: 1, seed: 11, maxTokens: 24 }));
  assert.notDeepEqual((await run(g, { temperature: 1, seed: 12, maxTokens: 24 })).ids, again.ids);
  g.dispose();
});

test('webgpu sparse MLP with d not a multiple of 8 (fc2 by partial sums + reduce) matches the CPU runner', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const dir = writeTinyModel(tinyConfig({ hidden_size: 12, word_embed_proj_dim: 12 }));
  const tiny = await checkpoint(dir);
  const f = tiny.config.ffn;
  const policy: SparsityPolicy = { input: 'mlp_in', mlp: [0, 1].map((l) => ({ k: 9, selector: { kind: 'fixed' as const, indices: Uint32Array.from({ length: 9 }, (_, i) => (i * 5 + l) % f) } })) };
  const g = await createWebGpuRunner(tiny.config, tiny.weights, { gpu }), c = new CpuRunner(tiny.config, tiny.weights);
  for (const x of [g, c]) x.setSparsity(policy);
  assertRows(await g.forward([2, 10, 20, 30], { allLogits: true }), await c.forward([2, 10, 20, 30], { allLogits: true }), tiny.config.vocabSize, 'sparse prefill, d = 12');
  for (const id of [40, 50]) assertRows(await g.forward([id]), await c.forward([id]), tiny.config.vocabSize, 'sparse decode, d = 12');
  g.dispose();
  rmSync(dir, { recursive: true });
});

test('webgpu decode profile: every dispatch of the step timed on its own, grouped by kernel; the decode after it unchanged (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const g = await createWebGpuRunner(ck.config, ck.weights, { gpu });
  const ids = reference(MODELS['5m'])[0].input_ids;
  await g.forward(ids, { noLogits: true });
  const steps = 3;
  const p = await g.profileDecodeSteps(steps, 11);
  assert.equal(p.steps, steps);
  assert.equal(p.rows.reduce((a, r) => a + r.perToken, 0), p.dispatchesPerToken, 'every dispatch in exactly one row');
  assert.ok(p.rows.every((r) => r.usPerToken >= 0 && r.workgroups >= 1 && r.kernel.length > 0));
  assert.ok(p.rows.some((r) => r.kernel.startsWith('gemv_') && r.perToken === 2 * ck.config.layers), p.rows.map((r) => `${r.kernel} ×${r.perToken}`).join(', '));
  for (let i = 1; i < p.rows.length; i++) assert.ok(p.rows[i - 1].usPerToken >= p.rows[i].usPerToken, 'slowest first');
  assert.ok(Math.abs(p.busyMsPerToken * 1e3 - p.rows.reduce((a, r) => a + r.usPerToken, 0)) < 1e-6 * p.busyMsPerToken * 1e3 + 1e-9);
  assert.ok(p.busyMsPerToken > 0);
  // The profiled steps are timeDecodeSteps' steps (the same plan: no LM head) and advance the
  // position and the cache like them: the next step's logits equal a timed runner's.
  const ref = await createWebGpuRunner(ck.config, ck.weights, { gpu });
  await ref.forward(ids, { noLogits: true });
  assert.equal((await ref.timeDecodeSteps(steps, 11)).dispatchesPerToken, p.dispatchesPerToken);
  const [a, b] = [await g.forward([7]), await ref.forward([7])];
  assert.ok(relErr(a, b) < 1e-6, `after the profile: ${relErr(a, b)}`);
  g.dispose(); ref.dispose();
});

test('webgpu KV cache in f16 (kvCache: f16): half the cache memory, logits within f16 rounding of the f32 cache, the same greedy ids (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, V = c.vocabSize;
  const [h, f] = await Promise.all((['f16', 'f32'] as const).map((kv) => createWebGpuRunner(c, ck.weights, { gpu: gpu!, kvCache: kv })));
  assert.match(h.description, /f16 KV cache/);
  assert.match(f.description, /f32 KV cache/);
  assert.ok(h.pipelineKeys.some((k) => k.includes('_kv16')) && !f.pipelineKeys.some((k) => k.includes('_kv16')));
  const cpu = new CpuRunner(c, ck.weights);
  for (const r of reference(MODELS['5m']).slice(0, 2)) {
    const ids = r.input_ids;
    h.reset(); f.reset(); cpu.reset();
    // Prefill (kvStore writes the cache), then decode steps (the qkv GEMV's epilogue writes it).
    const [a, b, want] = [await h.forward(ids, { allLogits: true }), await f.forward(ids, { allLogits: true }), await cpu.forward(ids, { allLogits: true })];
    assertRows(a, want, V, `"${r.prompt}" prefill, f16 cache`);
    assert.ok(relErr(a, b) < 5e-3, `prefill: ${relErr(a, b)}`);
    const first = argmax(a.subarray(a.length - V));
    const ga = await h.decodeGreedy(first, 12, () => true), gb = await f.decodeGreedy(first, 12, () => true);
    assert.deepEqual(ga, gb, `"${r.prompt}": greedy ids`);
    assert.deepEqual([first, ...ga].slice(0, r.greedy_new_ids.length), r.greedy_new_ids.slice(0, 13), `"${r.prompt}" against Hugging Face`);
  }
  h.dispose(); f.dispose();
  // The CLI's --kv-cache reaches the runner.
  const info = JSON.parse(execFileSync('node', [join(ROOT, 'dist', 'src', 'cli.js'), 'info', '--backend', 'webgpu', '--kv-cache', 'f16', '--json'], { encoding: 'utf8' }));
  assert.match(info.runner, /f16 KV cache/);
});

test('webgpu setSparsity: going dense parks the sparse state, the same policy again reuses it (eval --compare switches every window) (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, d = c.hidden, f = c.ffn, r = rng(21);
  const h = (a: Float32Array) => halvesToFloats(floatsToHalves(a));
  const pred = (seed: number) => ({ rank: 9, A: h(randomArray(9 * d, rng(seed), 0.2)), B: h(randomArray(f * 9, rng(seed + 1), 0.2)), bias: randomArray(f, r, 0.1) });
  const P: SparsityPolicy = { input: 'mlp_in', mlp: Array.from({ length: c.layers }, (_, l) => (l === 0 ? null : { k: 0, selector: { kind: 'predictor' as const, predictor: pred(l), block: { cap: 6, tau: null } } })) };
  const Q: SparsityPolicy = { input: 'mlp_in', mlp: P.mlp.map((lp) => lp && { k: 100, selector: { kind: 'oracle' as const } }) };
  const g = await createWebGpuRunner(c, ck.weights, { gpu }) as Awaited<ReturnType<typeof createWebGpuRunner>> & { sparseBuilds: number };
  const ids = reference(MODELS['5m'])[0].input_ids;
  const run = async () => { g.reset(); const out = await g.forward(ids); const dec = await g.forward([7]); return { out, dec, density: await g.mlpDensity() }; };
  // A policy refused for a bad layer changes nothing (fc2ᵀ is not left allocated but untransposed).
  const bad: SparsityPolicy = { input: 'mlp_in', mlp: P.mlp.map((lp, l) => (l === 3 ? { k: 0, selector: { kind: 'predictor' as const, predictor: pred(3), block: { cap: 65, tau: null } } } : lp)) };
  assert.throws(() => g.setSparsity(bad), /layer 3: block cap 65 must be between 1 and 64/);
  assert.equal(g.sparseBuilds, 0);
  g.setSparsity(P);
  const first = await run();
  assert.equal(g.sparseBuilds, 1);
  const cpu = new CpuRunner(c, ck.weights);
  cpu.setSparsity(P);
  assertRows(first.out, await cpu.forward(ids), c.vocabSize, 'sparse after a refused policy, against the CPU');
  g.setSparsity(null);
  const dense = await run();
  assert.ok(relErr(dense.out, first.out) > 1e-4, 'dense differs from sparse');
  assert.ok(dense.density.every((v) => v === null), 'dense: no sparse layer');
  g.setSparsity(P); // parked: reused
  const again = await run();
  assert.equal(g.sparseBuilds, 1, 'no second build');
  assert.deepEqual(again.out, first.out);
  assert.deepEqual(again.dec, first.dec);
  assert.deepEqual(again.density, first.density, 'density counted from the switch on');
  g.setSparsity(P); // the current policy again: counts reset, nothing rebuilt
  assert.equal(g.sparseBuilds, 1);
  assert.deepEqual((await g.mlpDensity()).map((v) => (v === null ? null : Number.isNaN(v))), [null, true, true, true]);
  g.setSparsity(Q); // another policy frees the parked one
  assert.equal(g.sparseBuilds, 2);
  g.setSparsity(null); g.setSparsity(P);
  assert.equal(g.sparseBuilds, 3, 'P was freed when Q came');
  assert.deepEqual((await run()).out, first.out);
  g.dispose();
});

test('webgpu decode across FUSED_ATTENTION_MAX_KEYS: the fused attention, then the pair, the same logits and greedy ids as the pair throughout (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, r = rng(9);
  const prompt = Array.from({ length: FUSED_ATTENTION_MAX_KEYS - 3 }, () => Math.floor(r() * c.vocabSize));
  const next = [11, 400, 7, 2900, 5, 31];   // keys seen: MAX - 2 ... MAX + 3
  const fused = await createWebGpuRunner(c, ck.weights, { gpu });
  const pair = await createWebGpuRunner(c, ck.weights, { gpu, fuseAttention: false });
  const steps = async (x: typeof fused) => { await x.forward(prompt); const out: Float32Array[] = []; for (const id of next) out.push(await x.forward([id])); return out; };
  const [a, b] = [await steps(fused), await steps(pair)];
  for (let i = 0; i < next.length; i++) assert.deepEqual(a[i], b[i], `step ${i} (${prompt.length + i + 1} keys)`);
  // Past the threshold the fused runner runs the pair's dispatches; before it, one fewer a layer.
  const perToken = async (x: typeof fused) => (await x.timeDecodeSteps(1)).dispatchesPerToken;
  assert.equal(await perToken(fused), await perToken(pair), 'long context: the pair');
  fused.reset(); pair.reset();
  await fused.forward([1, 2, 3]); await pair.forward([1, 2, 3]);
  assert.equal(await perToken(pair) - await perToken(fused), c.layers, 'short context: fused');
  // The greedy chain picks the form per step too.
  const greedy = async (x: typeof fused) => { x.reset(); await x.forward(prompt, { noLogits: true }); return x.decodeGreedy(next[0], 8, () => true); };
  assert.deepEqual(await greedy(fused), await greedy(pair));
  fused.dispose(); pair.dispose();
});

test('webgpu runner: the token embedding / LM head in several parts (lmHeadPartBytes) gives the same logits and greedy ids, an embedding and a head GEMV dispatch a part (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, ids = reference(MODELS['5m'])[1].input_ids;
  const whole = await createWebGpuRunner(c, ck.weights, { gpu });
  // A part cap that is not a multiple of a row: parts of a multiple of 64 rows and a short last part.
  const partBytes = 300_000, rowBytes = c.hidden * 2, parts = Math.ceil(c.vocabSize / (Math.floor(partBytes / rowBytes / 64) * 64));
  assert.ok(parts > 2, `${parts} parts`);
  const split = await createWebGpuRunner(c, ck.weights, { gpu, lmHeadPartBytes: partBytes });
  assert.equal(split.dispatchesPerToken - whole.dispatchesPerToken, 2 * (parts - 1));
  const run = async (x: typeof whole) => { const out = [await x.forward(ids)]; for (const id of [11, 400, 7]) out.push(await x.forward([id])); return out; };
  const [a, b] = [await run(whole), await run(split)];
  for (let i = 0; i < a.length; i++) assert.deepEqual(b[i], a[i], `step ${i}: each part's rows computed as the whole matrix's`);
  const greedy = async (x: typeof whole) => { x.reset(); await x.forward(ids, { noLogits: true }); return x.decodeGreedy(5, 10, () => true); };
  assert.deepEqual(await greedy(split), await greedy(whole), 'argmax over the parts\' pairs');
  whole.dispose(); split.dispose();
});

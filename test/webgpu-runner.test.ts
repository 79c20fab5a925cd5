/**
 * The WebGPU runner against the CPU oracle on the tiny real models: logits at every prompt position,
 * greedy tokens against Hugging Face's, the packed-u32 path (no shader-f16) with weights split into
 * several buffers, prefill-then-decode against one-shot prefill, and the sparse MLP with a predictor.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { CpuRunner } from '../src/backend/cpu/runner.js';
import { createWebGpuRunner } from '../src/backend/webgpu/runner.js';
import type { Gpu } from '../src/backend/webgpu/device.js';
import type { SparsityPolicy } from '../src/sparsity/policy.js';
import { floatsToHalves, halvesToFloats } from '../src/util/f16.js';
import { gpuOrSkip } from './gpu.js';
import { checkpoint, greedyContinue, hasShared, MODELS, randomArray, reference, relErr, rng } from './helpers.js';

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
  const cpu = new CpuRunner(c, ck.weights);
  const g = await createWebGpuRunner(c, ck.weights, { gpu });
  for (const p of [policy, { ...policy, input: 'mlp_in' as const }]) {
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
  }
  g.setSparsity(null);
  g.dispose();
});

/**
 * The CPU reference of sparse heads (backend/cpu/heads.ts; semantics in HeadLayerPolicy): a chosen
 * head attends exactly to the positions it did not skip (against dense attention over a cache that
 * holds only those positions), unchosen heads output zeros, and selectHeads is the top k in head order.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attention } from '../src/backend/cpu/kernels.js';
import { headAttention, headContribNorms, headOutGram, selectHeads } from '../src/backend/cpu/heads.js';
import { toF32 } from '../src/model/tensor.js';
import { CpuRunner } from '../src/backend/cpu/runner.js';
import type { SparsityPolicy } from '../src/sparsity/policy.js';
import { checkpoint, MODELS, randomArray, reference, relErr, rng } from './helpers.js';
import { predictScores } from '../src/sparsity/predict.js';

test('selectHeads: the k highest scores, the lower index on ties, in ascending head order', () => {
  assert.deepEqual(Array.from(selectHeads(Float32Array.from([0.5, 3, -1, 3, 2]), 3)), [1, 3, 4]);
  assert.deepEqual(Array.from(selectHeads(Float32Array.from([1, 1, 1, 1]), 2)), [0, 1]);
});

test('headAttention: each chosen head attends to the positions it ran at, the others output zeros (random odd shapes)', () => {
  const r = rng(7);
  for (const [H, hd, pos] of [[3, 5, 0], [4, 7, 13], [6, 16, 40]]) {
    const d = H * hd;
    const kc = randomArray((pos + 1) * d, r), vc = randomArray((pos + 1) * d, r), q = randomArray(d, r, 2);
    const skip = new Uint8Array((pos + 1) * H);
    for (let j = 0; j < pos; j++) for (let h = 0; h < H; h++) skip[j * H + h] = r() < 0.4 ? 1 : 0;
    const heads = selectHeads(randomArray(H, r), Math.max(1, H - 2));
    const o = headAttention(q, pos, kc, vc, H, hd, heads, skip);
    for (let h = 0; h < H; h++) {
      const got = o.subarray(h * hd, (h + 1) * hd);
      if (!heads.includes(h)) { assert.ok(got.every((v) => v === 0), `head ${h} not chosen`); continue; }
      // The head's live positions packed into a one-head cache; dense attention over it is the reference.
      const live = Array.from({ length: pos + 1 }, (_, j) => j).filter((j) => j === pos || !skip[j * H + h]);
      const k1 = new Float32Array(live.length * hd), v1 = new Float32Array(live.length * hd);
      live.forEach((j, i) => { k1.set(kc.subarray(j * d + h * hd, j * d + (h + 1) * hd), i * hd); v1.set(vc.subarray(j * d + h * hd, j * d + (h + 1) * hd), i * hd); });
      const want = attention(q.subarray(h * hd, (h + 1) * hd), 1, live.length - 1, k1, v1, 1, hd);
      assert.ok(relErr(got, want) < 1e-6, `H=${H} hd=${hd} pos=${pos} head ${h}: ${relErr(got, want)}`);
    }
  }
});

test('oracle heads (CPU): every head kept = dense; else the k heads with the largest contributions ‖W_o,h o_h‖ this token, the others dropped (5m)', async () => {
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, H = c.heads, none = new Array(c.layers).fill(null);
  const oracle = (k: number): SparsityPolicy => ({ input: 'attn_in', mlp: none, heads: none.map(() => ({ k, selector: { kind: 'oracle' as const } })) });
  const ids = reference(MODELS['5m'])[0].input_ids;
  const run = async (p: SparsityPolicy | null) => {
    const r = new CpuRunner(c, ck.weights);
    r.setSparsity(p);
    await r.forward(ids);
    const norms: Float32Array[] = [], outs: Float32Array[] = [];
    const logits = await r.forward([5], { trace: (l, pt, data) => { (pt === 'head_norm' ? norms : outs)[l] = data; }, tracePoints: ['head_norm', 'attn_out'] });
    return { logits, norms, outs };
  };
  const dense = await run(null), all = await run(oracle(H)), three = await run(oracle(3));
  assert.ok(relErr(all.logits, dense.logits) < 1e-6);
  // Layer 0 sees the same input either way: its kept heads are dense's three largest contributions,
  // at dense's norms.
  const top = selectHeads(headContribNorms(dense.outs[0], 1, headOutGram(toF32(ck.weights.layers[0].oW), c.hidden, H, c.headDim), H, c.headDim), 3);
  assert.notDeepEqual(Array.from(top), Array.from(selectHeads(dense.norms[0], 3)), 'this token ranks differently by ‖o_h‖ (else the test shows nothing)');
  for (let g = 0; g < H; g++) {
    const got = three.norms[0][g], want = top.includes(g) ? dense.norms[0][g] : 0;
    assert.ok(Math.abs(got - want) <= 1e-5 * (1 + want), `layer 0 head ${g}: ${got} vs ${want}`);
  }
  assert.ok(relErr(three.logits, dense.logits) > 1e-3, 'dropping heads changes the logits');
});

test('kvWindow (CPU): W = 1 and W = 2 are kv all to the bit; before the first completion, or with no completion in reach, it is kv chosen; a completion changes what follows (5m, oracle heads)', async () => {
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, none = new Array(c.layers).fill(null);
  const ids = reference(MODELS['5m'])[0].input_ids, next = [5, 17, 300, 41, 9, 1200, 77, 8];
  const policy = (kv: 'all' | 'chosen', kvWindow?: number): SparsityPolicy =>
    ({ input: 'attn_in', mlp: none, heads: none.map(() => ({ k: 2, kv, kvWindow, selector: { kind: 'oracle' as const } })) });
  const run = async (p: SparsityPolicy) => {
    const r = new CpuRunner(c, ck.weights);
    r.setSparsity(p);
    await r.forward(ids);
    const out: Float32Array[] = [];
    for (const id of next) out.push(await r.forward([id]));
    return out;
  };
  const all = await run(policy('all')), chosen = await run(policy('chosen'));
  assert.deepEqual(await run(policy('chosen', 1)), all, 'every position completed before its attention');
  // Every 2: an even position's attention follows the completion at the odd one before it, an odd
  // position's completion comes before its attention, so no step reads a hole.
  assert.deepEqual(await run(policy('chosen', 2)), all, 'completion every 2 positions is exact');
  assert.deepEqual(await run(policy('chosen', 64)), chosen, 'no completion within these positions');
  // Completions at positions p with (p + 1) % 3 = 0: the steps before the first one are kv chosen's.
  const win = await run(policy('chosen', 3)), P = ids.length;
  const first = next.findIndex((_, i) => (P + i + 1) % 3 === 0);
  for (let i = 0; i < first; i++) assert.deepEqual(win[i], chosen[i], `step ${i}: before the first completion`);
  assert.ok(next.some((_, i) => i > first && relErr(win[i], chosen[i]) > 1e-4), 'the filled holes change later steps');
  assert.ok(next.some((_, i) => relErr(chosen[i], all[i]) > 1e-4), 'holes matter on this input (else the test shows nothing)');
  // Policy checks: a window needs kv 'chosen' and a whole number >= 1.
  for (const bad of [policy('all', 4), policy('chosen', 0), policy('chosen', 2.5)]) {
    assert.throws(() => new CpuRunner(c, ck.weights).setSparsity(bad), /kvWindow must be a whole number >= 1, with kv 'chosen'/);
  }
});

test('head lookahead (CPU): layer l >= 1 chooses its heads from layer l - 1\'s attention input, layer 0 from its own (5m, traced decode steps)', async () => {
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, d = c.hidden, H = c.heads, r = rng(41), k = 3;
  const preds = Array.from({ length: c.layers }, () => ({ rank: H, A: randomArray(H * d, r, 0.3), B: Float32Array.from({ length: H * H }, (_, i) => (i % (H + 1) === 0 ? 1 : 0)), bias: randomArray(H, r, 0.1) }));
  const policy: SparsityPolicy = { input: 'attn_in', headInput: 'prev_attn_in', mlp: preds.map(() => null), heads: preds.map((predictor) => ({ k, selector: { kind: 'predictor' as const, predictor } })) };
  const cpu = new CpuRunner(c, ck.weights);
  cpu.setSparsity(policy);
  await cpu.forward(reference(MODELS['5m'])[0].input_ids);
  for (const id of [5, 300, 17]) {
    const attnIn: Float32Array[] = [], norms: Float32Array[] = [];
    await cpu.forward([id], { tracePoints: ['attn_in', 'head_norm'], trace: (l, pt, data) => (pt === 'attn_in' ? attnIn : norms)[l] = Float32Array.from(data) });
    for (let l = 0; l < c.layers; l++) {
      const ran = Array.from({ length: H }, (_, h) => h).filter((h) => norms[l][h] !== 0);
      const want = Array.from(selectHeads(predictScores(preds[l], attnIn[l === 0 ? 0 : l - 1], d), k));
      assert.deepEqual(ran, want, `token ${id}, layer ${l}: the heads that ran`);
    }
  }
});

test('kvWindow 2 (CPU): a pass of several tokens right after an even decode step completes that step\'s holes first, so the output stays kv all\'s (5m)', async () => {
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, d = c.hidden, H = c.heads, r = rng(43);
  const preds = Array.from({ length: c.layers }, () => ({ rank: H, A: randomArray(H * d, r, 0.3), B: Float32Array.from({ length: H * H }, (_, i) => (i % (H + 1) === 0 ? 1 : 0)), bias: randomArray(H, r, 0.1) }));
  const policy = (win: boolean): SparsityPolicy => ({ input: 'attn_in', mlp: preds.map(() => null),
    heads: preds.map((predictor) => ({ k: 2, ...(win ? { kv: 'chosen' as const, kvWindow: 2 } : {}), selector: { kind: 'predictor' as const, predictor } })) });
  const run = async (p: SparsityPolicy) => {
    const cpu = new CpuRunner(c, ck.weights);
    cpu.setSparsity(p);
    const out: Float32Array[] = [];
    // Prompt of 5 (positions 0-4), decode 5..8 (8 even: its holes owed by 9), a pass at 9-11, decode 12, 13.
    for (const ids of [[3, 70, 5, 900, 41], [7], [8], [9], [10], [13, 14, 15], [16], [17]]) out.push(await cpu.forward(ids));
    return out;
  };
  const [lazy, all] = [await run(policy(true)), await run(policy(false))];
  lazy.forEach((v, i) => assert.ok(relErr(v, all[i]) < 1e-6, `output ${i}: ${relErr(v, all[i])}`));
});

/**
 * Evaluation's per-row statistics on the device (kernels/row-stats.ts) against their float64 twin
 * (backend/row-stats.ts rowStatsOf): the kernel on random odd shapes with planted ties, and the runners'
 * forwardStats against the statistics of their own forward's logits, across prompt passes.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Kernels, readF32, runNow } from '../src/backend/webgpu/ops.js';
import { readRowStats, ROW_STATS_FLOATS } from '../src/backend/webgpu/kernels/row-stats.js';
import { createWebGpuRunner } from '../src/backend/webgpu/runner.js';
import { CpuRunner } from '../src/backend/cpu/runner.js';
import type { Gpu } from '../src/backend/webgpu/device.js';
import type { RowStats, Runner } from '../src/backend/types.js';
import { argmaxRow, klRow, tokenLogprob } from '../src/eval/logprob.js';
import { rowStatsOf } from '../src/backend/row-stats.js';
import { comparePerplexity } from '../src/eval/compare.js';
import { perplexity, prepareWindows } from '../src/eval/perplexity.js';
import { requestIds, scoreRequest } from '../src/eval/score.js';
import type { SparsityPolicy } from '../src/sparsity/policy.js';
import { gpuOrSkip } from './gpu.js';
import { checkpoint, MODELS, randomArray, rng } from './helpers.js';

let gpu: Gpu | null = null;
after(() => gpu?.device.destroy());

function assertStats(got: RowStats, want: RowStats, what: string, tol = 2e-5): void {
  assert.deepEqual(Array.from(got.argmax), Array.from(want.argmax), `${what}: argmax`);
  for (let t = 0; t < want.lse.length; t++) {
    assert.ok(Math.abs(got.lse[t] - want.lse[t]) < tol * (1 + Math.abs(want.lse[t])), `${what} row ${t}: lse ${got.lse[t]} vs ${want.lse[t]}`);
    assert.ok(Math.abs(got.target[t] - want.target[t]) < 1e-6 * (1 + Math.abs(want.target[t])), `${what} row ${t}: target logit`);
    if (want.kl) assert.ok(Math.abs(got.kl![t] - want.kl[t]) < tol * (1 + want.kl[t]) + 1e-6, `${what} row ${t}: kl ${got.kl![t]} vs ${want.kl[t]}`);
  }
  assert.equal(got.kl === null, want.kl === null, `${what}: kl present`);
}

test('webgpu row stats: lse, target logit, argmax (ties to the lowest index) and KL against a reference equal the float64 twin (odd V and rows, offsets)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const k = new Kernels(gpu), r = rng(7);
  for (const [rows, V, rowOff] of [[1, 1, 0], [3, 37, 2], [5, 1001, 0], [2, 8193, 3], [4, 255, 1]] as const) {
    const total = rowOff + rows;
    const logits = randomArray(rows * V, r, 4);
    // Ties for the top: row 0 gets its largest value again at a later index (and at index 0 where V allows);
    // row 1 (V > 261) its largest at 261 and 200, held by threads 5 and 200 of 256: the tree must
    // bring the lower index up from the higher thread.
    if (V > 2) { let m = 0; for (let i = 1; i < V; i++) if (logits[i] > logits[m]) m = i; logits[V - 1] = logits[m]; logits[0] = logits[m]; }
    if (rows > 1 && V > 261) { const top = Math.max(...logits.subarray(V, 2 * V)) + 1; logits[V + 261] = top; logits[V + 200] = top; }
    const ref = randomArray(total * V, r, 4);
    const targets = Array.from({ length: total }, (_, i) => (i * 7919) % V);
    const own: GPUBuffer[] = [];
    const L = k.f32Buffer(logits, 'logits'), T = k.f32Buffer(Uint32Array.from(targets), 'targets');
    // The reference's own stats first (rows 0.. of a forward of `total` rows), then these rows against
    // the reference's rows of this pass (from its row 0, as the runner keeps them a pass to a buffer).
    const refOut = k.buffer(total * ROW_STATS_FLOATS * 4, 'ref out'), out = k.buffer(total * ROW_STATS_FLOATS * 4, 'out');
    await runNow(k, [k.rowStats({ logits: k.f32Buffer(ref, 'ref'), targets: T, out: refOut, rows: total, V, rowOff: 0 }, own)], own);
    const R = k.f32Buffer(ref.slice(rowOff * V), 'ref, this pass');
    await runNow(k, [k.rowStats({ logits: L, targets: T, out, rows, V, rowOff, ref: { logits: R, out: refOut } }, own)], own);
    const got = readRowStats((await readF32(k, out, total * ROW_STATS_FLOATS)).buffer as ArrayBuffer, rowOff, rows, true);
    const want = rowStatsOf(logits, rows, V, targets.slice(rowOff), ref.subarray(rowOff * V));
    assertStats(got, want, `rows=${rows} V=${V} rowOff=${rowOff}`);
    if (V > 2) assert.equal(got.argmax[0], 0, 'a tie goes to the lowest index');
    if (rows > 1 && V > 261) assert.equal(got.argmax[1], 200, 'a tie across threads goes to the lowest index');
  }
});

test('forwardStats on both runners: the statistics of the runner\'s own forward logits, KL against a kept forward, across passes of 128 tokens; bad requests are one-line errors (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const V = ck.config.vocabSize, r = rng(3);
  const ids = Array.from({ length: 200 }, () => Math.floor(r() * V)), targets = [...ids.slice(1), 2];
  const cpu = new CpuRunner(ck.config, ck.weights), g = await createWebGpuRunner(ck.config, ck.weights, { gpu });
  for (const [name, runner, tol] of [['cpu', cpu, 0], ['webgpu', g, 2e-5]] as [string, Runner, number][]) {
    runner.reset();
    const dense = await runner.forward(ids, { allLogits: true });
    runner.reset();
    const kept = await runner.forwardStats(ids, { targets, keep: true });
    assert.equal(runner.position, ids.length, `${name}: forwardStats advances like forward`);
    runner.reset();
    // The second forward is the first one's logits perturbed only by running again: KL ≈ 0.
    const again = await runner.forwardStats(ids, { targets, kl: true });
    runner.reset();
    const want = rowStatsOf(dense, ids.length, V, targets, dense);
    if (tol === 0) { assert.deepEqual(kept, { ...want, kl: null }); assert.deepEqual(again, want); }
    else { assertStats(kept, { ...want, kl: null }, `${name} kept`, tol); assertStats(again, want, `${name} again`, tol); }
    await assert.rejects(runner.forwardStats(ids.slice(0, 5), { targets: targets.slice(0, 5), kl: true }), /^DejavuError: forwardStats: kl needs a reference of 5 rows kept by an earlier forwardStats with keep \(200 kept\)$/);
    // A longer forward between keep and kl leaves the reference; a keep that fails drops it.
    runner.reset();
    await runner.forwardStats([...ids, ...ids.slice(0, 100)], { targets: [...targets, ...targets.slice(0, 100)] });
    runner.reset();
    const later = await runner.forwardStats(ids, { targets, kl: true });
    runner.reset();
    if (tol === 0) assert.deepEqual(later, want); else assertStats(later, want, `${name} after a longer forward`, tol);
    await assert.rejects(runner.forwardStats(new Array(ck.config.maxPositions + 1).fill(5), { targets: new Array(ck.config.maxPositions + 1).fill(5), keep: true }), /longer than the model's context/);
    runner.reset();
    // (A keep rejected before it runs leaves the reference; one that fails while running drops it.)
    assert.deepEqual(await runner.forwardStats(ids, { targets, kl: true }).then((x) => x.argmax), want.argmax);
    runner.reset();
    await assert.rejects(runner.forwardStats(ids.slice(0, 3), { targets: [1, 2] }), /^DejavuError: forwardStats: 2 targets for 3 tokens$/);
    await assert.rejects(runner.forwardStats([1], { targets: [V] }), /outside the vocabulary/);
    runner.reset();
  }
  g.dispose();
});

test('eval on the WebGPU runner (statistics on the device): perplexity, --compare and zero-shot scores equal the same sums over the runner\'s own logits on the host (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const { ffn, layers, vocabSize: V } = ck.config;
  const g = await createWebGpuRunner(ck.config, ck.weights, { gpu });
  const text = 'It was a bright cold day in April, and the clocks were striking thirteen. Winston Smith slipped quickly through the glass doors.';
  // Every neuron of layers 1.. in a fixed set that leaves a quarter out: sparse differs from dense.
  const keep = Uint32Array.from({ length: Math.round(0.75 * ffn) }, (_, i) => i * 4 % ffn + Math.floor(i * 4 / ffn));
  const policy: SparsityPolicy = { input: 'mlp_in', mlp: Array.from({ length: layers }, (_, l) => (l === 0 ? null : { k: keep.length, selector: { kind: 'fixed' as const, indices: keep } })) };
  const { windows } = prepareWindows(g, ck.tokenizer, text, { window: 20 });
  const logitsOf = async (ids: number[]) => { g.reset(); const l = await g.forward(ids, { allLogits: true }); g.reset(); return l; };
  let dNll = 0, sNll = 0, agree = 0, kl = 0, n = 0;
  for (const ids of windows) {
    g.setSparsity(null); const d = await logitsOf(ids);
    g.setSparsity(policy); const s = await logitsOf(ids);
    for (let i = 0; i + 1 < ids.length; i++, n++) {
      dNll -= tokenLogprob(d, i, V, ids[i + 1]); sNll -= tokenLogprob(s, i, V, ids[i + 1]);
      if (argmaxRow(d, i, V) === argmaxRow(s, i, V)) agree++;
      kl += klRow(d, s, i, V);
    }
  }
  g.setSparsity(null);
  const c = await comparePerplexity(g, ck.tokenizer, text, policy, { window: 20 });
  const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-5 * (1 + Math.abs(b)), `${what}: ${a} vs ${b}`);
  assert.equal(c.tokens, n);
  close(c.dense.nll, dNll / n, 'dense nll'); close(c.sparse.nll, sNll / n, 'sparse nll');
  assert.equal(c.top1Agreement, agree / n);
  close(c.kl, kl / n, 'kl');
  assert.ok(c.kl > 1e-4, `the policy changes the distribution (kl ${c.kl})`);
  close((await perplexity(g, ck.tokenizer, text, { window: 20 })).nll, dNll / n, 'perplexity');
  // A zero-shot continuation: its log-likelihood and greedy hit from rows first.. of the statistics.
  const r = { context: 'The sky is', continuation: ' blue and the sea is grey.' };
  const { context, continuation } = requestIds(ck.tokenizer, r);
  const input = [...context, ...continuation].slice(0, -1), first = input.length - continuation.length;
  const l = await logitsOf(input);
  const want = continuation.reduce((a, tok, j) => a + tokenLogprob(l, first + j, V, tok), 0);
  const got = await scoreRequest(g, ck.tokenizer, r);
  close(got.logprob, want, 'continuation log-likelihood');
  assert.equal(got.greedy, continuation.every((tok, j) => argmaxRow(l, first + j, V) === tok));
  g.dispose();
});

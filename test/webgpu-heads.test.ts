/**
 * Sparse attention heads (HeadLayerPolicy) on WebGPU against the CPU twins, kernel by kernel on odd
 * shapes — head-select against selectHeads (ties included), split attention's `heads` form against
 * headAttention (skipped cache positions hold NaN: a read of one would show), out_proj over the chosen
 * heads' columns, the qkv GEMV skipping unchosen heads' rows and their K/V stores — and the runner's
 * decode against the CPU runner on the 5m model.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { headAttention, selectHeads } from '../src/backend/cpu/heads.js';
import { headScoreMatrix, predictScores } from '../src/sparsity/predict.js';
import { linear } from '../src/backend/cpu/kernels.js';
import { CpuRunner } from '../src/backend/cpu/runner.js';
import { createWebGpuRunner } from '../src/backend/webgpu/runner.js';
import { Kernels, readF32, readU32, runNow } from '../src/backend/webgpu/ops.js';
import type { Gpu } from '../src/backend/webgpu/device.js';
import type { SparsityPolicy } from '../src/sparsity/policy.js';
import { floatsToHalves, halvesToFloats } from '../src/util/f16.js';
import { fp16Predictor, gpuOrSkip, kvBuffer, randomMatrix, readKv } from './gpu.js';
import { checkpoint, greedyContinue, MODELS, randomArray, reference, relErr, rng } from './helpers.js';
import { rmSync } from 'node:fs';
import { tinyConfig, writeTinyModel } from './tiny-model.js';

let gpu: Gpu | null = null;

/**
 * A head predictor of rank H with B = I, A rounded to fp16: the GPU's fp16 B·A is then exactly A, so
 * the GPU and the CPU score the heads alike.
 */
const identityHeadPredictor = (H: number, d: number, r: () => number) => ({
  rank: H, A: halvesToFloats(floatsToHalves(randomArray(H * d, r, 0.2))), B: Float32Array.from({ length: H * H }, (_, i) => (i % (H + 1) === 0 ? 1 : 0)), bias: randomArray(H, r, 0.1),
});
after(() => gpu?.device.destroy());

type StepRunner = Pick<CpuRunner, 'setSparsity' | 'reset' | 'forward'>;
/** Logits of each step token, one a forward, after `prompt` under policy p (from a reset). */
async function decodeSteps(x: StepRunner, p: SparsityPolicy | null, prompt: number[], steps: number[]): Promise<Float32Array[]> {
  x.setSparsity(p); x.reset();
  await x.forward(prompt);
  const out: Float32Array[] = [];
  for (const id of steps) out.push(await x.forward([id]));
  return out;
}

test('webgpu head-select matches selectHeads: top k of the scores, the skip row (odd H, k; a fixed set\'s flags; ties)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const k = new Kernels(gpu), r = rng(5), own: GPUBuffer[] = [];
  const cases: [number, number, number, Float32Array | null][] = [[7, 3, 0, null], [13, 13, 4, null], [40, 16, 9, null], [72, 29, 2, null], [1, 1, 1, null],
    [11, 4, 3, Float32Array.from([0, 1, 0, 0, 1, 1, 0, 0, 0, 0, 1])],   // a fixed set's flags
    [9, 5, 1, Float32Array.from([2, 1, 2, 1, 2, 1, 2, 1, 2])]];           // ties: the lower index wins
  for (const [H, kk, pos, fixed] of cases) for (const kvAll of [false, true]) {
    const scores = fixed ?? randomArray(H, r);
    const want = selectHeads(scores, kk);
    const hl = k.buffer(H * 4, 'hl'), skip = k.f32Buffer(new Uint32Array((pos + 2) * H).fill(7), 'skip');
    await runNow(k, [k.headSelect({ step: k.f32Buffer(Uint32Array.from([pos]), 'step'), scores: k.f32Buffer(scores, 's'), H, k: kk, hl, skip, kvAll }, own)], own);
    const what = `H=${H} k=${kk} kv ${kvAll ? 'all' : 'chosen'}`;
    assert.deepEqual(Array.from(await readU32(k, hl, kk)), Array.from(want), `${what}: chosen heads`);
    const flags = Array.from({ length: H }, (_, h) => (want.includes(h) ? 1 : 0));
    const sk = await readU32(k, skip, (pos + 2) * H);
    assert.deepEqual(Array.from(sk.subarray(pos * H, (pos + 1) * H)), flags.map((f) => (kvAll ? 0 : 1 - f)), `${what}: skip row`);
    assert.ok(sk.subarray(0, pos * H).every((v) => v === 7) && sk.subarray((pos + 1) * H).every((v) => v === 7), `${what}: other rows untouched`);
  }
});

test('headScoreMatrix: (B·A) x + bias equals the predictor\'s B (A x) + bias', () => {
  const r = rng(3), d = 37, H = 5, rank = 11;
  const p = { rank, A: randomArray(rank * d, r), B: randomArray(H * rank, r), bias: randomArray(H, r) };
  const x = randomArray(d, r);
  assert.ok(relErr(linear(x, 1, headScoreMatrix(p, H, d), p.bias, d, H), predictScores(p, x, d)) < 1e-5);
});

test('webgpu split attention over chosen heads leaves skipped positions out, like headAttention (odd H, hd, contexts, splits)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const r = rng(9);
  for (const kv16 of [false, true]) {
    const k: Kernels = new Kernels(gpu, undefined, kv16), own: GPUBuffer[] = [];
    for (const [H, hd, pos, kk, splits] of [[5, 8, 0, 2, undefined], [5, 8, 37, 3, undefined], [3, 12, 129, 2, 2], [7, 16, 70, 7, 64], [4, 128, 40, 1, 3], [6, 5, 33, 4, undefined]] as [number, number, number, number, number | undefined][]) {
      const d = H * hd, maxPos = pos + 4;
      const heads = selectHeads(randomArray(H, r), kk);
      // A third of the earlier positions skipped per head; the current one runs for every chosen head.
      const skip = new Uint8Array(maxPos * H);
      for (let j = 0; j < pos; j++) for (let h = 0; h < H; h++) skip[j * H + h] = r() < 0.33 ? 1 : 0;
      for (let h = 0; h < H; h++) skip[pos * H + h] = heads.includes(h) ? 0 : 1;
      const kc = new Float32Array(maxPos * d).fill(NaN), vc = new Float32Array(maxPos * d).fill(NaN);
      for (let j = 0; j <= pos; j++) for (let h = 0; h < H; h++) {
        if (skip[j * H + h]) continue;
        for (let i = 0; i < hd; i++) { kc[j * d + h * hd + i] = r() * 2 - 1; vc[j * d + h * hd + i] = r() * 2 - 1; }
      }
      const round = (a: Float32Array) => (kv16 ? halvesToFloats(floatsToHalves(a)) : a);
      const qkv = randomArray(3 * d, r, 4);
      const ref = headAttention(qkv.subarray(0, d), pos, round(kc), round(vc), H, hd, heads, skip);
      const kvBuf = (a: Float32Array, label: string) => {
        if (!kv16) return k.f32Buffer(a, label);
        const h = new Uint16Array(Math.ceil(a.length / 2) * 2); h.set(floatsToHalves(a));
        const b = k.buffer(h.byteLength, label); k.device.queue.writeBuffer(b, 0, h); return b;
      };
      // The fused form (the last split of each head combines) and the split + combine pair: the same bits.
      const runForm = async (fused: boolean) => {
        k.fuseAttention = fused;
        const o = k.f32Buffer(new Float32Array(d).fill(1234), 'o'), hn = k.buffer(H * 4, 'hn');
        const skipBuf = k.f32Buffer(Uint32Array.from(skip), 'skip');
        await runNow(k, k.attention({ step: k.f32Buffer(Uint32Array.from([pos]), 'step'), qkv: k.f32Buffer(qkv, 'qkv'), k: kvBuf(kc, 'k'), v: kvBuf(vc, 'v'), o, hn, H, hd, T: 1, maxPos, splits,
          heads: { hl: k.f32Buffer(heads, 'hl'), skip: skipBuf, k: kk } }, own), own);
        k.fuseAttention = true;
        return readF32(k, o, d);
      };
      const got = await runForm(true);
      assert.deepEqual(await runForm(false), got, `H=${H} hd=${hd} pos=${pos}: the pair and the fused form`);
      const what = `kv${kv16 ? 16 : 32} H=${H} hd=${hd} pos=${pos} k=${kk}`;
      for (let h = 0; h < H; h++) {
        const g = got.subarray(h * hd, (h + 1) * hd), w = ref.subarray(h * hd, (h + 1) * hd);
        if (heads.includes(h)) assert.ok(relErr(g, w) < 1e-5, `${what}: head ${h} ${relErr(g, w)}`);
        else assert.ok(g.every((v) => v === 1234), `${what}: head ${h} was not chosen and must not be written`);
      }
    }
  }
});

test('webgpu out_proj over the chosen heads\' columns matches the dense product of the masked output (odd d, hd, parts)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const r = rng(13);
  // Row sums from subgroupAdd where the adapter has subgroups (and the workgroup tree, the other form).
  for (const [H, hd, kk, partBytes] of [[5, 8, 2, undefined], [3, 24, 3, undefined], [9, 16, 4, 16 * 144 * 2], [40, 64, 16, undefined], [2, 128, 1, undefined]] as [number, number, number, number | undefined][]) for (const sums of gpu.subgroups ? [true, false] : [false]) {
    const k: Kernels = new Kernels(gpu, partBytes), own: GPUBuffer[] = [];
    k.headOutSubgroups = sums;
    const d = H * hd, { m: W, w } = randomMatrix(k, d, d, r, 0.2);
    const heads = selectHeads(randomArray(H, r), kk);
    const o = randomArray(d, r), y0 = randomArray(d, r), bias = randomArray(d, r, 0.1);
    const masked = new Float32Array(d);
    for (const h of heads) masked.set(o.subarray(h * hd, (h + 1) * hd), h * hd);
    const want = linear(masked, 1, w, bias, d, d).map((v, i) => v + y0[i]);
    // Both layouts: out_proj as stored, and its head-major copy (one binding: from a Kernels without the
    // small part limit, so the copy also gathers from several parts).
    const major = new Kernels(gpu).headMajor(W, hd, own);
    assert.ok(major, 'the head-major copy fits one binding');
    await runNow(k, major.ds, own);
    for (const m of [undefined, major.buffer]) {
      const y = k.f32Buffer(y0, 'y');
      const ds = k.headOut({ W, major: m, o: k.f32Buffer(o, 'o'), hl: k.f32Buffer(heads, 'hl'), k: kk, hd, y, bias: k.f32Buffer(bias, 'b') }, own);
      assert.ok(ds.every((x) => /_sgx?$/.test(x.label) === sums), ds.map((x) => x.label).join());
      await runNow(k, ds, own);
      const e = relErr(await readF32(k, y, d), want);
      assert.ok(e < 1e-5, `H=${H} hd=${hd} k=${kk} parts=${W.parts.length} ${m ? 'head-major' : 'as stored'} subgroup sums=${sums}: ${e}`);
    }
    // Into y from an offset (attn_io's o half of A adds into u after qkv's rows): the rows before it untouched.
    const off = 3, y = k.f32Buffer(Float32Array.from([7, 8, 9, ...y0]), 'y');
    await runNow(k, k.headOut({ W, o: k.f32Buffer(o, 'o'), hl: k.f32Buffer(heads, 'hl'), k: kk, hd, y, bias: k.f32Buffer(bias, 'b'), yOff: off }, own), own);
    const got = await readF32(k, y, d + off);
    assert.deepEqual([...got.subarray(0, off)], [7, 8, 9]);
    assert.ok(relErr(got.subarray(off), want) < 1e-5, `H=${H} hd=${hd}: from offset ${off}`);
    // RIDE: an odd number of another matrix's rows (one part) over the same heads into a second
    // output from an offset, in the first part's dispatch; out_proj's rows bit-equal to running alone.
    const rr = 2 * H + 3, { m: WA, w: wa } = randomMatrix(new Kernels(gpu), rr, d, r, 0.2);
    const wantA = linear(masked, 1, wa, null, d, rr);
    for (const m of [undefined, major.buffer]) {
      const y1 = k.f32Buffer(y0, 'y'), alone = k.f32Buffer(y0, 'y'), y2 = k.f32Buffer(new Float32Array(rr + 5).fill(1), 'y2');
      const base = { W, major: m, o: k.f32Buffer(o, 'o'), hl: k.f32Buffer(heads, 'hl'), k: kk, hd, bias: k.f32Buffer(bias, 'b') };
      const ds = k.headOut({ ...base, y: y1, ride: { W: WA, y: y2, off: 5 } }, own);
      assert.equal(ds.length, m ? 1 : W.parts.length, 'no dispatch of its own');
      await runNow(k, ds, own);
      await runNow(k, k.headOut({ ...base, y: alone }, own), own);
      assert.deepEqual([...await readF32(k, y1, d)], [...await readF32(k, alone, d)], `H=${H} hd=${hd} ${m ? 'head-major' : 'as stored'}: out_proj's rows with a rider`);
      const got2 = await readF32(k, y2, rr + 5);
      assert.deepEqual([...got2.subarray(0, 5)], [1, 1, 1, 1, 1]);
      const e = relErr(got2.subarray(5).map((v) => v - 1), wantA);
      assert.ok(e < 1e-5, `H=${H} hd=${hd} k=${kk} ${m ? 'head-major' : 'as stored'}: riding rows ${e}`);
    }
  }
});

test('webgpu qkv GEMV choosing heads: the top k\'s rows (and every head\'s K/V with kv all) as dense, the others untouched; the chosen list and skip row written', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const r = rng(17);
  const k = new Kernels(gpu), own: GPUBuffer[] = [];
  for (const [H, hd, pos, kk] of [[4, 32, 3, 2], [6, 64, 0, 1], [3, 128, 5, 3], [7, 16, 2, 4]]) for (const kvAll of [false, true]) {
    const d = H * hd, maxPos = pos + 2;
    const { m: W, w } = randomMatrix(k, 3 * d, d, r, 0.2);
    assert.ok(k.headsFit(W, hd, H), `H=${H} hd=${hd}: rows a workgroup divide the head dim`);
    const x = randomArray(d, r), want = linear(x, 1, w, null, d, 3 * d);
    const scores = Float32Array.from({ length: H }, () => Math.floor(r() * 3));   // ties: the lower index wins
    const chosen = selectHeads(scores, kk), flags = Array.from({ length: H }, (_, h) => (chosen.includes(h) ? 1 : 0));
    const y = k.f32Buffer(new Float32Array(3 * d).fill(-7), 'y');
    const kc = k.f32Buffer(new Float32Array(maxPos * d).fill(-7), 'k'), vc = k.f32Buffer(new Float32Array(maxPos * d).fill(-7), 'v');
    const hl = k.buffer(H * 4, 'hl'), skip = k.f32Buffer(new Uint32Array(maxPos * H).fill(7), 'skip');
    await runNow(k, k.linear({ W, x: k.f32Buffer(x, 'x'), y, T: 1, kv: { step: k.f32Buffer(Uint32Array.from([pos]), 'step'), k: kc, v: vc,
      heads: { scores: k.f32Buffer(scores, 'scores'), hl, skip, hd, H, k: kk, kvAll } } }, own), own);
    assert.deepEqual(Array.from(await readU32(k, hl, kk)), Array.from(chosen), `H=${H}: chosen list`);
    const sk = await readU32(k, skip, maxPos * H);
    assert.deepEqual(Array.from(sk.subarray(pos * H, (pos + 1) * H)), flags.map((f) => (kvAll ? 0 : 1 - f)), `H=${H}: skip row`);
    assert.ok(sk.every((v, i) => (i >= pos * H && i < (pos + 1) * H) || v === 7), `H=${H}: other skip rows untouched`);
    const got = await readF32(k, y, 3 * d), kg = await readF32(k, kc, maxPos * d), vg = await readF32(k, vc, maxPos * d);
    for (let row = 0; row < 3 * d; row++) {
      const h = Math.floor((row % d) / hd), what = `H=${H} hd=${hd} kv ${kvAll ? 'all' : 'chosen'} row ${row} (head ${h})`;
      if (flags[h] || (kvAll && row >= d)) assert.ok(Math.abs(got[row] - want[row]) < 1e-4 * (1 + Math.abs(want[row])), `${what}: ${got[row]} vs ${want[row]}`);
      else assert.equal(got[row], -7, `${what}: not chosen, must not be written`);
      if (row >= d) {
        const cache = row < 2 * d ? kg : vg, at = pos * d + (row % d);
        assert.equal(cache[at], flags[h] || kvAll ? got[row] : -7, `${what}: cache`);
      }
    }
  }
});

test('webgpu qkv GEMV, lazy K/V completion: an even position runs the chosen heads and records the holes and x; the odd one after runs every head\'s K/V and fills the holes from the saved x (odd shapes, f32 and f16 cache)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const r = rng(19);
  // [H, hd, even position, k, shape]: the default shape, and 2 rows of 32 threads (4 rows a workgroup
  // with two a thread: a head of 16 rows spans 4 workgroups), and rows one subgroup wide where the
  // adapter has one subgroup size (sgExact: both inputs' sums from subgroupAdd alone).
  const ss = gpu.subgroups ? gpu.subgroupSize : undefined;
  const cases: [number, number, number, number, { rows: number; tpr: number } | undefined][] = [[4, 32, 2, 2, undefined], [5, 16, 0, 3, { rows: 2, tpr: 32 }], [3, 64, 4, 1, undefined], [7, 16, 6, 4, undefined],
    ...(ss && 256 % ss === 0 ? [[3, 64, 2, 2, { rows: Math.min(32, 256 / ss), tpr: ss }] as [number, number, number, number, { rows: number; tpr: number }]] : [])];
  for (const kv16 of [false, true]) for (const [H, hd, pos, kk, shape] of cases) {
    const k: Kernels = new Kernels(gpu, undefined, kv16), own: GPUBuffer[] = [];
    const d = H * hd, maxPos = pos + 3;
    const { m: W, w } = randomMatrix(k, 3 * d, d, r, 0.2);
    assert.ok(k.headsFit(W, hd, H, undefined, shape, true), `H=${H} hd=${hd}: the lazy form fits`);
    const x0 = randomArray(d, r), x1 = randomArray(d, r);
    const want0 = linear(x0, 1, w, null, d, 3 * d), want1 = linear(x1, 1, w, null, d, 3 * d);
    const step = k.f32Buffer(Uint32Array.from([pos]), 'step'), scores = k.buffer(H * 4, 'scores');
    const y = k.buffer(3 * d * 4, 'y'), hl = k.buffer(H * 4, 'hl');
    const kc = kvBuffer(k, new Float32Array(maxPos * d).fill(-7), 'k'), vc = kvBuffer(k, new Float32Array(maxPos * d).fill(-7), 'v');
    const holes = k.f32Buffer(new Uint32Array(H).fill(9), 'holes'), xPrev = k.f32Buffer(new Float32Array(d + 4).fill(NaN), 'x prev');
    const run = async (at: number, x: Float32Array, sc: Float32Array) => {
      k.device.queue.writeBuffer(step, 0, Uint32Array.from([at]));
      k.device.queue.writeBuffer(scores, 0, sc as Float32Array<ArrayBuffer>);
      k.device.queue.writeBuffer(y, 0, new Float32Array(3 * d).fill(-7));
      const ds = k.linear({ W, x: k.f32Buffer(x, 'x'), y, T: 1, shape, kv: { step, k: kc, v: vc,
        heads: { scores, hl, skip: holes, hd, H, k: kk, kvAll: false, lazy: { xPrev, odd: at % 2 === 1 } } } }, own);
      if (shape && shape.tpr === ss) assert.ok(ds.every((dd) => dd.label.includes('_sgx_')), `sums from subgroupAdd: ${ds.map((dd) => dd.label).join()}`);
      await runNow(k, ds, own);
      return readF32(k, y, 3 * d);
    };
    const s0 = randomArray(H, r), s1 = randomArray(H, r);
    const c0 = selectHeads(s0, kk), c1 = selectHeads(s1, kk);
    const what = `kv${kv16 ? 16 : 32} H=${H} hd=${hd} k=${kk}`;
    const close = (a: number, b: number) => Math.abs(a - b) < (kv16 ? 2e-3 : 1e-4) * (1 + Math.abs(b));
    // The even position: chosen heads' rows only; their K/V at pos; holes = the unchosen; x saved.
    const y0 = await run(pos, x0, s0);
    // A hole is tagged with the odd position that owes it.
    assert.deepEqual(Array.from(await readU32(k, holes, H)), Array.from({ length: H }, (_, h) => (c0.includes(h) ? 0 : pos + 1)), `${what}: holes at the even position`);
    assert.deepEqual(await readF32(k, xPrev, d), x0, `${what}: x saved`);
    for (let row = 0; row < 3 * d; row++) {
      const h = Math.floor((row % d) / hd);
      if (c0.includes(h)) assert.ok(close(y0[row], want0[row]), `${what} even row ${row}: ${y0[row]} vs ${want0[row]}`);
      else assert.equal(y0[row], -7, `${what} even row ${row}: head ${h} not chosen, must not run`);
    }
    // The odd position: chosen q rows; every head's K/V at pos + 1; the holes' K/V at pos from x0.
    const y1 = await run(pos + 1, x1, s1);
    assert.deepEqual(Array.from(await readU32(k, holes, H)), Array.from({ length: H }, (_, h) => (c0.includes(h) ? 0 : pos + 1)), `${what}: an odd position leaves the holes`);
    const kg = await readKv(k, kc, maxPos * d), vg = await readKv(k, vc, maxPos * d);
    for (let row = 0; row < 3 * d; row++) {
      const h = Math.floor((row % d) / hd), col = row % d;
      if (row < d) {
        if (c1.includes(h)) assert.ok(close(y1[row], want1[row]), `${what} odd q row ${row}`);
        else assert.equal(y1[row], -7, `${what} odd q row ${row}: head ${h} not chosen`);
        continue;
      }
      assert.ok(close(y1[row], want1[row]), `${what} odd k/v row ${row}: ${y1[row]} vs ${want1[row]}`);
      const cache = row < 2 * d ? kg : vg;
      assert.ok(close(cache[(pos + 1) * d + col], want1[row]), `${what}: cache at the odd position, row ${row}`);
      assert.ok(close(cache[pos * d + col], want0[row]), `${what}: cache at the even position, row ${row} (head ${h} ${c0.includes(h) ? 'chosen' : 'filled'})`);
      for (const j of [pos + 2]) assert.equal(cache[j * d + col], -7, `${what}: other positions untouched`);
    }
  }
});

test('webgpu sparse heads decode like the CPU runner: fixed sets, predictors with the MLP lookahead, the chained greedy decode; all heads = dense (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, d = c.hidden, f = c.ffn, H = c.heads, r = rng(21);
  const headPred = () => identityHeadPredictor(H, d, r);
  const mlpPred = (rank: number) => fp16Predictor(rank, d, f, r);
  const none = new Array(c.layers).fill(null);
  const allHeads: SparsityPolicy = { input: 'attn_in', mlp: none, heads: none.map(() => ({ k: H, selector: { kind: 'fixed' as const, heads: Uint32Array.from({ length: H }, (_, i) => i) } })) };
  const fixed: SparsityPolicy = { input: 'attn_in', mlp: none, heads: none.map((_, l) => (l === 1 ? null : { k: 3, selector: { kind: 'fixed' as const, heads: Uint32Array.from([l, 5, 7].map((v) => v % H)).filter((v, i, a) => a.indexOf(v) === i) } })) };
  fixed.heads = fixed.heads!.map((hp) => hp && { ...hp, k: (hp.selector as { heads: Uint32Array }).heads.length });
  const dejavu: SparsityPolicy = {
    input: 'attn_in',
    mlp: none.map(() => ({ k: 0, selector: { kind: 'predictor' as const, predictor: mlpPred(16), block: { cap: 8, tau: null } } })),
    heads: none.map((_, l) => (l === 2 ? null : { k: 3, selector: { kind: 'predictor' as const, predictor: headPred() } })),
  };
  const cpu = new CpuRunner(c, ck.weights);
  // fp16 B: the CPU's choices near ties (int8 B flips the random predictors' blocks; block-select.ts, I8).
  const g = await createWebGpuRunner(c, ck.weights, { gpu, kvCache: 'f32', predictorInt8: false });
  const ids = reference(MODELS['5m'])[0].input_ids;
  const decode = (x: StepRunner, p: SparsityPolicy | null, steps: number[]) => decodeSteps(x, p, ids, steps);
  const steps = [5, 17, 300, 41, 9, 77];
  const dense = await decode(cpu, null, steps);
  const everyHead = await decode(cpu, allHeads, steps), everyHeadGpu = await decode(g, allHeads, steps);
  everyHead.forEach((v, i) => assert.ok(relErr(v, dense[i]) < 1e-5, `CPU, every head chosen = dense, step ${i}`));
  everyHeadGpu.forEach((v, i) => assert.ok(relErr(v, dense[i]) < 1e-2, `GPU, every head chosen = dense, step ${i}: ${relErr(v, dense[i])}`));
  // The other paths: a head-select dispatch chooses, the qkv GEMV runs every head, out_proj from its head-major copy.
  const g2 = await createWebGpuRunner(c, ck.weights, { gpu, kvCache: 'f32', headsInQkv: false, headOutMajor: true, predictorInt8: false });
  const kvChosen = (p: SparsityPolicy): SparsityPolicy => ({ ...p, heads: p.heads!.map((hp) => hp && { ...hp, kv: 'chosen' as const }) });
  for (const [name, p] of [['fixed', fixed], ['dejavu', dejavu], ['fixed, kv chosen', kvChosen(fixed)], ['dejavu, kv chosen', kvChosen(dejavu)]] as const) {
    const want = await decode(cpu, p, steps), got = await decode(g, p, steps), got2 = await decode(g2, p, steps);
    want.forEach((v, i) => assert.ok(relErr(v, dense[i]) > 1e-3, `${name}: skipping heads changes step ${i}`));
    got.forEach((v, i) => assert.ok(relErr(v, want[i]) < 1e-2, `${name}, step ${i}: ${relErr(v, want[i])}`));
    got2.forEach((v, i) => assert.ok(relErr(v, want[i]) < 1e-2, `${name} (head-select dispatch), step ${i}: ${relErr(v, want[i])}`));
  }
  assert.ok(g.pipelineKeys.some((key) => /_hd32h8k3/.test(key)) && !g.pipelineKeys.some((key) => key.startsWith('head_select')), 'qkv chooses the heads');
  assert.ok(g2.pipelineKeys.some((key) => key.startsWith('head_select')), 'the head-select dispatch');
  g2.dispose();
  // The chain on the device against the host loop, same policy: same ids.
  for (const x of [cpu, g]) { x.setSparsity(dejavu); x.reset(); }
  const last = await cpu.forward(ids); await g.forward(ids);
  const first = last.indexOf(Math.max(...last));
  const wantIds = await cpu.decodeGreedy(first, 12, () => true), gotIds = await g.decodeGreedy(first, 12, () => true);
  assert.deepEqual(gotIds, wantIds);
  g.setSparsity(null);
  g.dispose();
});

test('webgpu lazy K/V completion (kv chosen, window 2) decodes as kv all, unlike kv chosen: fixed sets and predictors with the MLP lookahead, prompts of both parities, the chained decode (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, d = c.hidden, f = c.ffn, H = c.heads, r = rng(23);
  const none = new Array(c.layers).fill(null);
  const fixed: SparsityPolicy = { input: 'attn_in', mlp: none, heads: none.map((_, l) => ({ k: 3, selector: { kind: 'fixed' as const, heads: Uint32Array.from([l % H, (l + 3) % H, (l + 5) % H]) } })) };
  const dejavu: SparsityPolicy = {
    input: 'attn_in',
    mlp: none.map(() => ({ k: 0, selector: { kind: 'predictor' as const, predictor: fp16Predictor(16, d, f, r), block: { cap: 8, tau: null } } })),
    heads: none.map(() => ({ k: 2, selector: { kind: 'predictor' as const, predictor: identityHeadPredictor(H, d, r) } })),
  };
  const kv = (p: SparsityPolicy, kind: 'all' | 'chosen' | 'lazy'): SparsityPolicy =>
    ({ ...p, heads: p.heads!.map((hp) => hp && { ...hp, kv: kind === 'all' ? 'all' as const : 'chosen' as const, kvWindow: kind === 'lazy' ? 2 : undefined }) });
  const cpu = new CpuRunner(c, ck.weights);
  // fp16 B and f32 block partials: the CPU's choices near ties (the random predictors' blocks flip on
  // int8 B's and f16 partials' rounding; block-select.ts, I8 and FC2).
  const g = await createWebGpuRunner(c, ck.weights, { gpu, kvCache: 'f32', blockPartHalf: false, predictorInt8: false });
  const ids = reference(MODELS['5m'])[0].input_ids;
  const steps = [5, 17, 300, 41, 9, 77, 12];
  const decode = (x: StepRunner, p: SparsityPolicy, prompt: number[]) => decodeSteps(x, p, prompt, steps);
  const allDejavu = new Map<number, Float32Array[]>();
  for (const [name, p] of [['fixed', fixed], ['dejavu', dejavu]] as const) for (const prompt of [ids, ids.slice(0, -1)]) {
    const what = `${name}, prompt of ${prompt.length}`;
    const cpuLazy = await decode(cpu, kv(p, 'lazy'), prompt), all = await decode(g, kv(p, 'all'), prompt);
    if (name === 'dejavu') allDejavu.set(prompt.length, all);
    const lazy = await decode(g, kv(p, 'lazy'), prompt), chosen = await decode(g, kv(p, 'chosen'), prompt);
    lazy.forEach((v, i) => {
      assert.ok(relErr(v, cpuLazy[i]) < 1e-2, `${what}, step ${i}: against the CPU's window 2 ${relErr(v, cpuLazy[i])}`);
      assert.ok(relErr(v, all[i]) < 1e-4, `${what}, step ${i}: against kv all ${relErr(v, all[i])}`);
    });
    // A fixed set never changes, so its holes belong to heads that never attend: kv chosen is kv all there.
    if (name === 'dejavu') assert.ok(chosen.some((v, i) => relErr(v, all[i]) > 1e-3), `${what}: kv chosen (holes never filled) differs from kv all`);
  }
  assert.ok(g.pipelineKeys.some((key) => /_hd32h8k3z/.test(key)), 'the lazy form of the qkv GEMV ran');
  // One policy over prompts of both parities, only reset between them: every step must run its own
  // position's form, whatever was encoded ahead for the step after the last one (an even number of
  // steps, so that step's parity differs from the next prompt's first).
  const lazyPolicy = kv(dejavu, 'lazy');
  g.setSparsity(lazyPolicy);
  for (const prompt of [ids, ids.slice(0, -1), ids]) {
    g.reset();
    await g.forward(prompt);
    const want = allDejavu.get(prompt.length)!;
    for (const [i, id] of steps.slice(0, 6).entries()) {
      const got = await g.forward([id]);
      assert.ok(relErr(got, want[i]) < 1e-4, `one policy, prompt of ${prompt.length}, step ${i}: against kv all ${relErr(got, want[i])}`);
    }
  }
  // The chain on the device against the host loop, on the same runner (against the CPU's greedy ids
  // only a runner with qkv as stored agrees token for token: the default qkv as W∘γ, and the
  // lookahead's A and head rows with it, round once more, and this model's random predictors meet
  // near-ties; the chain against the CPU: the sparse-heads test above).
  g.setSparsity(kv(dejavu, 'lazy')); g.reset();
  const last = await g.forward(ids);
  const first = last.indexOf(Math.max(...last));
  const host = await greedyContinue(g, last, 13);
  assert.equal(host[0], first);
  g.reset(); await g.forward(ids);
  assert.deepEqual(await g.decodeGreedy(first, 12, () => true), host.slice(1));
  // Where the qkv GEMV cannot choose the heads, lazy completion is refused before anything changes:
  // the runner keeps its policy, and asking again is refused again.
  const noMask = await createWebGpuRunner(c, ck.weights, { gpu, kvCache: 'f32', headsInQkv: false });
  noMask.setSparsity(kv(dejavu, 'all'));
  const lazyAgain = kv(dejavu, 'lazy');
  for (let i = 0; i < 2; i++) assert.throws(() => noMask.setSparsity(lazyAgain), /^DejavuError: lazy K\/V completion \(kv chosen, window 2\) on WebGPU needs the qkv GEMV to choose the heads/);
  noMask.dispose();
  // Windows other than 1 and 2 stay on the CPU.
  assert.throws(() => g.setSparsity({ ...fixed, heads: fixed.heads!.map((hp) => hp && { ...hp, kv: 'chosen' as const, kvWindow: 4 }) }), /^DejavuError: on WebGPU a heads K\/V completion window \(kvWindow\) must be 1 or 2/);
  g.setSparsity(null);
  g.dispose();
});

test('webgpu head lookahead (head predictors reading the layer before\'s attention input): the CPU runner\'s logits with kv all and lazy, with and without the MLP lookahead, the scores in the qkv GEMV or (no folded LayerNorm) a GEMV of their own (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, d = c.hidden, f = c.ffn, H = c.heads, r = rng(29);
  const none = new Array(c.layers).fill(null);
  const heads = none.map(() => ({ k: 3, selector: { kind: 'predictor' as const, predictor: identityHeadPredictor(H, d, r) } }));
  gpu.device.pushErrorScope('validation');   // every form's bind group must match its pipeline (the completion form too)
  const mlp = none.map(() => ({ k: 0, selector: { kind: 'predictor' as const, predictor: fp16Predictor(16, d, f, r), block: { cap: 8, tau: null } } }));
  const policy = (withMlp: boolean, kv: 'all' | 'lazy', prev: boolean): SparsityPolicy => ({
    input: 'attn_in', ...(prev ? { headInput: 'prev_attn_in' as const } : {}), mlp: withMlp ? mlp : none,
    heads: heads.map((hp) => ({ ...hp, ...(kv === 'lazy' ? { kv: 'chosen' as const, kvWindow: 2 } : {}) })),
  });
  const cpu = new CpuRunner(c, ck.weights);
  // fp16 B: the CPU's choices near ties (int8 B flips the random predictors' blocks; block-select.ts, I8).
  const g = await createWebGpuRunner(c, ck.weights, { gpu, kvCache: 'f32', predictorInt8: false });
  const unfolded = await createWebGpuRunner(c, ck.weights, { gpu, kvCache: 'f32', foldLayerNorm: false, predictorInt8: false });
  const ids = reference(MODELS['5m'])[0].input_ids;
  const steps = [5, 17, 300, 41, 9, 77, 12];
  const decode = (x: StepRunner, p: SparsityPolicy) => decodeSteps(x, p, ids, steps);
  for (const withMlp of [false, true]) {
    const what = withMlp ? 'with the MLP lookahead' : 'heads only';
    const own = await decode(cpu, policy(withMlp, 'all', false)), want = await decode(cpu, policy(withMlp, 'all', true));
    assert.ok(want.some((v, i) => relErr(v, own[i]) > 1e-3), `${what}: the CPU's lookahead scores choose other heads than the layer's own input`);
    for (const kv of ['all', 'lazy'] as const) {
      const p = policy(withMlp, kv, true);
      const got = await decode(g, p);
      got.forEach((v, i) => assert.ok(relErr(v, want[i]) < 1e-2, `${what}, kv ${kv}, step ${i}: ${relErr(v, want[i])}`));
      // Every layer after the first gets its scores from the layer before's qkv GEMV: a dispatch fewer.
      const perToken = g.dispatchesPerToken;
      g.setSparsity(policy(withMlp, kv, false));
      assert.equal(perToken, g.dispatchesPerToken - (c.layers - 1), `${what}, kv ${kv}: dispatches a token`);
    }
    if (!withMlp) {
      const got = await decode(unfolded, policy(false, 'all', true));
      got.forEach((v, i) => assert.ok(relErr(v, want[i]) < 1e-2, `no folded LayerNorm, step ${i}: ${relErr(v, want[i])}`));
    }
  }
  // A parked policy restored (setSparsity(p), null, p again) keeps its lookahead state.
  const again = policy(true, 'lazy', true), before = await decode(g, again);
  g.setSparsity(null);
  const restored = await decode(g, again);
  restored.forEach((v, i) => assert.deepEqual(v, before[i], `restored policy, step ${i}`));
  assert.ok(g.pipelineKeys.some((key) => /_hn16/.test(key)) && g.pipelineKeys.some((key) => /_hn0/.test(key)), 'the head rows rode the qkv GEMV (after A\'s 16 rows, and alone)');
  assert.ok(!unfolded.pipelineKeys.some((key) => /_hn/.test(key)), 'without folded LayerNorms the scores have a GEMV of their own');
  // The chain on the device against the host loop.
  const lazy = policy(true, 'lazy', true);
  for (const x of [cpu, g]) { x.setSparsity(lazy); x.reset(); }
  const last = await cpu.forward(ids); await g.forward(ids);
  const first = last.indexOf(Math.max(...last));
  assert.deepEqual(await g.decodeGreedy(first, 12, () => true), await cpu.decodeGreedy(first, 12, () => true));
  // A policy's head input is checked.
  assert.throws(() => g.setSparsity({ ...lazy, headInput: 'mlp_in' as never }), /^DejavuError: heads input must be 'attn_in' or 'prev_attn_in'/);
  g.setSparsity(null); unfolded.setSparsity(null);
  g.dispose(); unfolded.dispose();
  assert.equal(await gpu.device.popErrorScope(), null, 'no validation error');
});

test('webgpu lazy K/V completion keeps kv all\'s output through a prompt after a decode step, setSparsity between steps (same policy, dense and back) and a greedy chain stopped early (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, d = c.hidden, H = c.heads, r = rng(29);
  const none = new Array(c.layers).fill(null);
  const pred = identityHeadPredictor(H, d, r);
  const policy = (kv: 'all' | 'lazy'): SparsityPolicy => ({ input: 'attn_in', mlp: none, heads: none.map(() => ({ k: 3, kv: kv === 'all' ? 'all' as const : 'chosen' as const, kvWindow: kv === 'lazy' ? 2 : undefined, selector: { kind: 'predictor' as const, predictor: pred } })) });
  const ids = reference(MODELS['5m'])[0].input_ids;   // 12 tokens: the first decode position is even
  // The same calls on two runners; every output of the lazy one must be kv all's.
  const script = async (g: Awaited<ReturnType<typeof createWebGpuRunner>>, p: SparsityPolicy) => {
    const out: Float32Array[] = [];
    g.setSparsity(p); g.reset();
    await g.forward(ids);
    out.push(await g.forward([17]));              // position 12 (even): holes owed by 13
    out.push(await g.forward([5, 9, 300]));       // a prompt at 13: completes 12 first
    out.push(await g.forward([7]));               // 16 (even)
    g.setSparsity(p);                             // the same policy between 16 and 17: the holes stay owed
    out.push(await g.forward([8]));               // 17
    out.push(await g.forward([11]));              // 18 (even)
    g.setSparsity(null);                          // dense at 19: 18's holes are filled before the state goes
    out.push(await g.forward([12]));
    g.setSparsity(p);                             // back (the parked state)
    out.push(await g.forward([13]), await g.forward([14]));   // 20, 21
    let n = 0;
    await g.decodeGreedy(3, 8, () => ++n < 3);    // 22, 23, 24 taken; the steps queued past the stop ran too
    out.push(await g.forward([15]), await g.forward([16]));   // 25 (odd): what 24 owes, not what a dropped step wrote
    return out;
  };
  const all = await createWebGpuRunner(c, ck.weights, { gpu, kvCache: 'f32' }), lazy = await createWebGpuRunner(c, ck.weights, { gpu, kvCache: 'f32' });
  const want = await script(all, policy('all')), got = await script(lazy, policy('lazy'));
  got.forEach((v, i) => assert.ok(relErr(v, want[i]) < 1e-4, `output ${i}: against kv all ${relErr(v, want[i])}`));
  // Again with no prompt plan kept beyond the one in use (the completion plan that a prompt at an odd
  // position builds first must not evict it), and where the adapter has one subgroup size, qkv rows
  // one subgroup wide (the folded forms' sums from subgroupAdd alone, gemv.ts sgExact).
  const ss = gpu.subgroups ? gpu.subgroupSize : undefined;
  const tight = await createWebGpuRunner(c, ck.weights, { gpu, kvCache: 'f32', ...(ss && 256 % ss === 0 ? { qkvGemvShape: { rows: 4, tpr: ss } } : {}) });
  tight.planCacheMax = 0;
  (await script(tight, policy('lazy'))).forEach((v, i) => assert.ok(relErr(v, want[i]) < 1e-4, `no prompt plans kept, output ${i}: against kv all ${relErr(v, want[i])}`));
  if (ss && 256 % ss === 0) assert.ok(['ze', 'zo', 'zc'].every((z) => tight.pipelineKeys.some((key) => key.includes('_sgx_') && key.includes(z))), tight.pipelineKeys.join());
  all.dispose(); lazy.dispose(); tight.dispose();
});

test('webgpu: a prompt of 129 tokens (one more than a pass) runs every head, as the CPU does, not a sparse decode step at its end (5m)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, none = new Array(c.layers).fill(null);
  const policy: SparsityPolicy = { input: 'attn_in', mlp: none, heads: none.map((_, l) => ({ k: 2, selector: { kind: 'fixed' as const, heads: Uint32Array.from([l % c.heads, (l + 4) % c.heads]) } })) };
  const prompt = Array.from({ length: 129 }, (_, i) => (i * 53 + 7) % c.vocabSize);
  const cpu = new CpuRunner(c, ck.weights), g = await createWebGpuRunner(c, ck.weights, { gpu, kvCache: 'f32' });
  for (const x of [cpu, g]) x.setSparsity(policy);
  const want = await cpu.forward(prompt), got = await g.forward(prompt);
  assert.ok(relErr(got, want) < 1e-2, `last logits against the CPU: ${relErr(got, want)}`);
  // The next token is a decode step: sparse there, on both.
  assert.ok(relErr(await g.forward([11]), await cpu.forward([11])) < 1e-2);
  g.dispose();
});

test('webgpu lazy K/V completion on a post-LayerNorm model (no folded LayerNorm) and with matrices in parts: kv all\'s output (tiny models)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  for (const [over, maxPartBytes] of [[{}, undefined], [{ do_layer_norm_before: false }, undefined], [{}, 8192]] as [Record<string, unknown>, number | undefined][]) {
    const dir = writeTinyModel(tinyConfig({ hidden_size: 64, word_embed_proj_dim: 64, num_attention_heads: 2, ffn_dim: 96, max_position_embeddings: 30, ...over }));
    const ck = await checkpoint(dir), c = ck.config, r = rng(31);
    const pred = Array.from({ length: c.layers }, () => identityHeadPredictor(c.heads, c.hidden, r));
    const policy = (lazy: boolean): SparsityPolicy => ({ input: 'attn_in', mlp: new Array(c.layers).fill(null),
      heads: pred.map((p) => ({ k: 1, kv: lazy ? 'chosen' as const : 'all' as const, kvWindow: lazy ? 2 : undefined, selector: { kind: 'predictor' as const, predictor: p } })) });
    const what = `${JSON.stringify(over)} parts ${maxPartBytes ?? 'whole'}`;
    const run = async (lazy: boolean) => {
      const g = await createWebGpuRunner(c, ck.weights, { gpu: gpu!, kvCache: 'f32', maxPartBytes });
      g.setSparsity(policy(lazy));
      const out = [await g.forward([3, 70, 5, 900, 41])];
      for (const id of [7, 8, 9, 10, 11, 12]) out.push(await g.forward([id]));
      out.push(await g.forward([13, 14, 15]));
      for (const id of [16, 17, 18]) out.push(await g.forward([id]));
      if (lazy) assert.ok(g.pipelineKeys.some((k) => /z[eo]_/.test(k)), `${what}: the lazy forms ran`);
      g.dispose();
      return out;
    };
    const want = await run(false), got = await run(true);
    got.forEach((v, i) => assert.ok(relErr(v, want[i]) < 1e-4, `${what}, output ${i}: against kv all ${relErr(v, want[i])}`));
    // The head lookahead here too, against the CPU: with matrices in parts or no folded LayerNorm the
    // scores have no seat in the qkv GEMV and take a GEMV of their own at the layer before.
    const prev: SparsityPolicy = { ...policy(true), headInput: 'prev_attn_in' };
    const cpu = new CpuRunner(c, ck.weights), g = await createWebGpuRunner(c, ck.weights, { gpu: gpu!, kvCache: 'f32', maxPartBytes });
    cpu.setSparsity(prev); g.setSparsity(prev);
    for (const ids of [[3, 70, 5, 900, 41], [7], [8], [9], [10], [13, 14, 15], [16], [17]]) {
      const [a, b] = [await g.forward(ids), await cpu.forward(ids)];
      assert.ok(relErr(a, b) < 1e-2, `${what}, head lookahead, after ${ids.join(',')}: ${relErr(a, b)}`);
    }
    const seated = !maxPartBytes && over.do_layer_norm_before !== false;
    assert.equal(g.pipelineKeys.some((k) => /_hn/.test(k)), seated, `${what}: the scores ${seated ? 'ride' : 'have no seat in'} the qkv GEMV`);
    g.dispose();
    rmSync(dir, { recursive: true });
  }
});

test('sparse heads policies are checked: one entry a layer, k in 1..H, distinct fixed heads, predictor shapes (CPU and WebGPU)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  const ck = await checkpoint(MODELS['5m']);
  const c = ck.config, none = new Array(c.layers).fill(null);
  const fixedAt0 = (heads: number[], k = heads.length): SparsityPolicy => ({ input: 'attn_in', mlp: none, heads: none.map((_, l) => (l === 0 ? { k, selector: { kind: 'fixed' as const, heads: Uint32Array.from(heads) } } : null)) });
  const cases: [SparsityPolicy, RegExp][] = [
    [{ input: 'attn_in', mlp: none, heads: [null] }, /sparsity policy has 1 head layers, the model has 4/],
    [fixedAt0([]), /layer 0: heads k = 0 must be between 1 and 8/],
    [fixedAt0([1, 1]), /layer 0: the fixed head set must hold distinct heads below 8/],
    [fixedAt0([8]), /layer 0: the fixed head set must hold distinct heads below 8/],
    [{ input: 'attn_in', mlp: none, heads: none.map(() => ({ k: 2, selector: { kind: 'predictor' as const, predictor: { rank: 2, A: new Float32Array(2 * c.hidden), B: new Float32Array(2 * 7), bias: new Float32Array(8) } } })) },
      /layer 0: the head predictor must be \(2, 256\) then \(8, 2\) with 8 biases/],
  ];
  const runners: { setSparsity(p: SparsityPolicy | null): void }[] = [new CpuRunner(c, ck.weights)];
  const g = gpu ? await createWebGpuRunner(c, ck.weights, { gpu }) : null;
  if (g) runners.push(g);
  for (const x of runners) for (const [p, re] of cases) assert.throws(() => x.setSparsity(p), re);
  // The oracle computes every head before choosing: a CPU measurement, refused on WebGPU.
  const oracle: SparsityPolicy = { input: 'attn_in', mlp: none, heads: none.map(() => ({ k: 2, selector: { kind: 'oracle' as const } })) };
  runners[0].setSparsity(oracle);
  if (g) assert.throws(() => g.setSparsity(oracle), /^DejavuError: oracle head selection runs on the CPU backend only/);
  g?.dispose();
});

test('the attn_out trace point (head predictors\' labels) is the CPU runner\'s on WebGPU (5m, prefill)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const cpu = new CpuRunner(ck.config, ck.weights), g = await createWebGpuRunner(ck.config, ck.weights, { gpu, kvCache: 'f32' });
  const ids = reference(MODELS['5m'])[0].input_ids;
  const grab = async (r: { forward: CpuRunner['forward'] }) => {
    const out: Float32Array[] = [];
    await r.forward(ids, { noLogits: true, tracePoints: ['attn_out'], trace: (l, pt, data, rows) => { assert.equal(pt, 'attn_out'); assert.equal(rows, ids.length); out[l] = data.slice(0, rows * ck.config.hidden); } });
    return out;
  };
  const want = await grab(cpu), got = await grab(g);
  assert.equal(got.length, ck.config.layers);
  got.forEach((o, l) => assert.ok(relErr(o, want[l]) < 1e-2, `layer ${l}: ${relErr(o, want[l])}`));
  g.dispose();
});

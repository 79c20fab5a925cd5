/**
 * The fused block-selection kernel (predictor B product + per-block choice + gathered fc1) against
 * its CPU twin (`blockSelect` + `sparseMlp`) on random odd shapes, then through sparse fc2 over its
 * fixed slots (unused slots carry h = 0) against the sparse MLP of the chosen neurons.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { blockSelect, layerNorm, linear, sparseMlp, sparseMlpHalfPartials, transpose } from '../src/backend/cpu/kernels.js';
import { Kernels, readF32, readU32, runNow, type Dispatch } from '../src/backend/webgpu/ops.js';
import { BS_NB, blockSelectLnBytes } from '../src/backend/webgpu/kernels/block-select.js';
import type { Gpu } from '../src/backend/webgpu/device.js';
import { gpuOrSkip, randomMatrix, randomMatrixI8, readMatrix } from './gpu.js';
import { randomArray, rng, relErr } from './helpers.js';

let gpu: Gpu | null = null;
after(() => gpu?.device.destroy());


test('block selection + fc1 (fused) matches blockSelect + sparseMlp on odd shapes', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const r = rng(11);
  // Both weight views, both workgroup sizes, with and without subgroups (one combination each).
  const combos = [{ f16: gpu.f16, sg: gpu.subgroups, wg: 1024 }, { f16: false, sg: false, wg: 256 }, { f16: false, sg: gpu.subgroups, wg: 512 }];
  for (const { f16, sg, wg } of combos) {
    // 6 KiB parts: W1 rows of up to 48 halves split every 64 rows (block edges), B stays whole.
    const k: Kernels = new Kernels({ ...gpu, f16, subgroups: sg }, 6144);
    const own: GPUBuffer[] = [];
    // (f, r, d): r = 13 pads to 16 halves (wide B with an odd tail), r = 10 to 12 (narrow), r = 24
    // (vec4 u); d = 37 wide with a tail, d = 35 narrow, d = 48 vec4 x. f = 200 ends in a block of 8.
    // B as int8 (block-select.ts, I8) in the first combination: r = 13 all tail, 24 a chunk and a
    // tail, 40 two chunks and a tail, 48 three chunks (its 6144-byte parts: 64 rows each, 3 parts).
    const shapes = [[200, 13, 37, false], [101, 10, 35, false], [130, 24, 48, false], [64, 7, 9, false]] as [number, number, number, boolean][];
    if (f16 === gpu.f16 && sg === gpu.subgroups && wg === 1024) shapes.push([200, 13, 37, true], [130, 24, 48, true], [150, 40, 24, true], [160, 48, 16, true]);
    for (const [f, rk, d, i8] of shapes) {
      const T = 2;
      const { m: B, w: wB } = i8 ? randomMatrixI8(k, f, rk, r) : randomMatrix(k, f, rk, r);
      const { m: W1, w: w1 } = randomMatrix(k, f, d, r);
      const { m: W2, w: w2 } = randomMatrix(k, d, f, r);
      const W2t = k.matrix(f, d, 'W2t');
      await runNow(k, k.transpose(W2, W2t, own), own);
      const w2t = transpose(w2, d, f);
      const bias = randomArray(f, r, 0.3), b1 = randomArray(f, r, 0.5), b2 = randomArray(d, r);
      const u = randomArray(T * rk, r), x = randomArray(T * d, r), x0 = randomArray(T * d, r);
      const scores = linear(u, T, wB, bias, rk, f);
      const sorted = Float32Array.from(scores).sort();
      const median = sorted[sorted.length >> 1];
      for (const [cap, tau] of [[3, null], [16, median], [BS_NB, null], [5, median]] as const) {
        const nb = Math.ceil(f / BS_NB), kk = nb * cap;
        const sel = k.buffer(T * kk * 4, 'sel'), h = k.buffer(T * kk * 4, 'h'), cnt = k.f32Buffer(new Uint32Array(4), 'cnt');
        const res = k.f32Buffer(x0, 'res');
        await runNow(k, [
          ...k.blockSelectFc1({ B, bias: k.f32Buffer(bias, 'bias'), u: k.f32Buffer(u, 'u'), W1, b1: k.f32Buffer(b1, 'b1'), x: k.f32Buffer(x, 'x'), sel, h, cnt, T, cap, tau, wg }, own),
          ...k.sparseDown({ W2t, h, sel, selStride: kk, k: kk, T, x: res, bias: k.f32Buffer(b2, 'b2'), slices: 3, partial: k.buffer(T * 3 * 48 * 4 * W2t.parts.length, 'p') }, own),
        ], own);
        const gSel = await readU32(k, sel, T * kk), gH = await readF32(k, h, T * kk), gRes = await readF32(k, res, T * d);
        let chosenTotal = 0;
        const ref = new Float32Array(T * d);
        const msg: string = `f=${f} r=${rk} d=${d} cap=${cap} tau=${tau} f16=${f16} sg=${sg} wg=${wg} parts=${W1.parts.length} B int8=${i8} (${B.parts.length} parts)`;
        for (let tt = 0; tt < T; tt++) {
          const want = blockSelect(scores.subarray(tt * f, (tt + 1) * f), BS_NB, cap, tau);
          chosenTotal += want.chosen.length;
          assert.deepEqual([...gSel.subarray(tt * kk, (tt + 1) * kk)], [...want.slots], `slots ${msg}`);
          const act = new Float32Array(f);
          const y = sparseMlp(x.subarray(tt * d, (tt + 1) * d), w1, b1, w2t, b2, d, want.chosen, undefined, act);
          const wantH = Float32Array.from(want.slots, (j, i) => (want.used[i] ? act[j] : 0));
          assert.ok(relErr(gH.subarray(tt * kk, (tt + 1) * kk), wantH) < 1e-5, `h ${msg}: ${relErr(gH.subarray(tt * kk, (tt + 1) * kk), wantH)}`);
          for (let i = 0; i < d; i++) ref[tt * d + i] = x0[tt * d + i] + y[i];
        }
        assert.ok(relErr(gRes, ref) < 1e-5, `fc2 ${msg}: ${relErr(gRes, ref)}`);
        assert.equal((await readU32(k, cnt, 1))[0], chosenTotal, `count ${msg}`);
        if (tau === null) assert.equal(chosenTotal, T * Math.min(cap * nb, (nb - 1) * cap + Math.min(cap, f - (nb - 1) * BS_NB)), 'blocked top-cap chooses cap a block');
      }
      own.forEach((b) => b.destroy());
    }
  }
});

test('block scoring as a role of the attention dispatch, then block-select\'s fc1 phase, matches blockSelect + sparseMlp; attention\'s own output unchanged (odd shapes, fused and pair)', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const r = rng(13), k = new Kernels(gpu), own: GPUBuffer[] = [];
  // Attention: 3 heads of 16 at position 5 of 8 (its inputs random; only its output's bits matter).
  const H = 3, hd = 16, da = H * hd, maxPos = 8, pos = 5;
  const step = k.f32Buffer(Uint32Array.from([pos, 0]), 'step'), qkv = k.f32Buffer(randomArray(3 * da, r), 'qkv');
  const kc = k.f32Buffer(randomArray(maxPos * da, r), 'k'), vc = k.f32Buffer(randomArray(maxPos * da, r), 'v');
  const attend = async (fused: boolean, blockScore?: Parameters<Kernels['attention']>[0]['blockScore']) => {
    const o = k.buffer(da * 4, 'o'), hn = k.buffer(H * 4, 'hn');
    await runNow(k, k.attention({ step, qkv, k: kc, v: vc, o, hn, H, hd, T: 1, maxPos, fused, blockScore }, own), own);
    return readF32(k, o, da);
  };
  for (const fused of [true, false]) {
    const plain = await attend(fused);
    // The int8 B (block-select.ts, I8) with a tail only, a chunk and a tail, and two chunks.
    for (const [f, rk, d, i8] of [[200, 13, 37, false], [101, 10, 35, false], [130, 24, 48, false], [64, 7, 9, false], [200, 13, 37, true], [130, 24, 48, true], [90, 32, 20, true]] as const) {
      const { m: B, w: wB } = i8 ? randomMatrixI8(k, f, rk, r) : randomMatrix(k, f, rk, r), { m: W1, w: w1 } = randomMatrix(k, f, d, r);
      assert.ok(k.blockScoreFits(B, false, hd));
      const bias = randomArray(f, r, 0.3), b1 = randomArray(f, r, 0.5), x = randomArray(d, r);
      const uOff = rk % 4 === 0 ? 4 : 3, u = randomArray(uOff + rk, r);   // u after other values, as it sits after qkv's rows
      const scores = linear(u.subarray(uOff), 1, wB, bias, rk, f);
      const median = Float32Array.from(scores).sort()[f >> 1];
      for (const [cap, tau] of [[3, null], [16, median], [BS_NB, null]] as const) {
        const nb = Math.ceil(f / BS_NB), kk = nb * cap, msg = `f=${f} r=${rk} d=${d} cap=${cap} tau=${tau} fused=${fused} B int8=${i8}`;
        const sel = k.f32Buffer(new Uint32Array(kk).fill(7777), 'sel'), h = k.f32Buffer(new Float32Array(kk).fill(NaN), 'h');
        const cnt = k.f32Buffer(new Uint32Array(4), 'cnt'), bcnt = k.f32Buffer(new Uint32Array(nb).fill(99), 'bcnt');
        const o = await attend(fused, { B, bias: k.f32Buffer(bias, 'bias'), u: k.f32Buffer(u, 'u'), uOff, uStride: rk, sel, h, cnt, bcnt, cap, tau });
        assert.deepEqual(o, plain, `${msg}: attention's output`);
        await runNow(k, k.blockSelectFc1({ B, bias: k.f32Buffer(bias, 'bias'), u: k.buffer(16, 'unused'), W1, b1: k.f32Buffer(b1, 'b1'), x: k.f32Buffer(x, 'x'), sel, h, cnt, T: 1, cap, tau, chosenBy: { bcnt } }, own), own);
        const want = blockSelect(scores, BS_NB, cap, tau);
        assert.deepEqual([...await readU32(k, sel, kk)], [...want.slots], `${msg}: slots`);
        const act = new Float32Array(f);
        sparseMlp(x, w1, b1, transpose(randomArray(f * d, r), d, f), new Float32Array(d), d, want.chosen, undefined, act);
        const wantH = Float32Array.from(want.slots, (j, i) => (want.used[i] ? act[j] : 0));
        assert.ok(relErr(await readF32(k, h, kk), wantH) < 1e-5, `${msg}: h`);
        assert.equal((await readU32(k, cnt, 1))[0], want.chosen.length, `${msg}: count`);
        const per = Array.from({ length: nb }, (_, b) => want.used.slice(b * cap, (b + 1) * cap).filter(Boolean).length);
        assert.deepEqual([...await readU32(k, bcnt, nb)], per, `${msg}: each block's count`);
      }
    }
  }
  own.forEach((b) => b.destroy());
});

test('block selection with the MLP LayerNorm folded into fc1 (the lookahead) matches LayerNorm, then block selection, the choice before the LayerNorm\'s work or after it', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const r = rng(12), eps = 1e-5;
  // The last combination keeps x's LayerNorm as f16 pairs (the form above d = 4096) where d % 4 = 0.
  for (const { f16, sg, wg, half } of [{ f16: gpu.f16, sg: gpu.subgroups, wg: 512, half: false }, { f16: false, sg: false, wg: 256, half: false },
    { f16: false, sg: gpu.subgroups, wg: 1024, half: true }]) {
    const k: Kernels = new Kernels({ ...gpu, f16, subgroups: sg }, 6144);
    k.blockSelectLnHalf = half;
    const own: GPUBuffer[] = [];
    // d = 37 (wide W1 rows with a tail), 35 (narrow), 48 (x as vec4); u read at an offset and stride
    // (inside the qkv GEMV's output in decode) and plain. x has an offset mean, as a residual stream does.
    // gw: W1 stored as W1∘γ (foldLayerNormIntoWeights; gemv.ts, GAMMA IN W): against x̂ · (W1∘γ)ᵀ + c2 as stored.
    for (const [f, rk, d, uOff] of [[200, 13, 37, 3 * 37], [101, 10, 35, 0], [130, 24, 48, 3 * 48]] as const) for (const gw of [false, true]) for (const [cf, early] of [[true, true], [true, false], [false, true]]) {
      k.blockChoiceFirst = cf; k.blockFc1EarlyLoads = early;
      const T = 1, cap = 7;
      const { m: B, w: wB } = randomMatrix(k, f, rk, r);
      const { m: W1, w: w1 } = randomMatrix(k, f, d, r);
      const bias = randomArray(f, r, 0.3), b1 = randomArray(f, r, 0.5);
      const gamma = randomArray(d, r).map((v) => 1 + 0.5 * v), beta = randomArray(d, r, 0.2);
      const x = randomArray(d, r).map((v) => 3 + 2 * v);
      const u = randomArray(rk, r), uBuf = new Float32Array(uOff + rk + 5);
      uBuf.set(u, uOff);
      // τ halfway between two scores: one equal to τ would be chosen or not by the last bit of its sum.
      const sorted = [...linear(u, 1, wB, bias, rk, f)].sort((a, b) => a - b), tau = (sorted[f >> 1] + sorted[(f >> 1) + 1]) / 2;
      const c = k.buffer(2 * f * 4, 'c');
      const gB = k.f32Buffer(gamma, 'gamma');
      const fold = { W: W1, gamma: gB, beta: k.f32Buffer(beta, 'beta'), bias: k.f32Buffer(b1, 'b1'), c };
      await runNow(k, gw ? k.foldLayerNormIntoWeights({ ...fold, ones: k.f32Buffer(new Float32Array(d).fill(1), 'ones') }, own) : k.foldLayerNorm(fold, own), own);
      const kk = Math.ceil(f / BS_NB) * cap;
      const sel = k.buffer(kk * 4, 'sel'), h = k.buffer(kk * 4, 'h'), cnt = k.f32Buffer(new Uint32Array(4), 'cnt');
      const ds = k.blockSelectFc1({ B, bias: k.f32Buffer(bias, 'bias'), u: k.f32Buffer(uBuf, 'u'), uOff, uStride: uOff + rk, W1, b1: null,
        ln: { gamma: gB, c, eps, gammaInW: gw }, x: k.f32Buffer(x, 'x'), sel, h, cnt, T, cap, tau, wg }, own);
      const packed = half && d % 4 === 0;
      assert.ok(ds.every((x) => x.label.endsWith(`_ln${d}${packed ? 'h' : ''}${gw ? 'g' : ''}${cf ? `_cf${early ? '' : 'late'}` : ''}`)), ds.map((x) => x.label).join());
      await runNow(k, ds, own);
      const xn = gw ? layerNorm(x, 1, d, new Float32Array(d).fill(1), new Float32Array(d), eps) : layerNorm(x, 1, d, gamma, beta, eps);
      const w1Used = gw ? await readMatrix(k, W1) : w1, b1Used = gw ? linear(beta, 1, w1, b1, d, f) : b1;
      const want = blockSelect(linear(u, 1, wB, bias, rk, f), BS_NB, cap, tau);
      const msg = `f=${f} r=${rk} d=${d} f16=${f16} sg=${sg} wg=${wg} gw=${gw} choice first=${cf} early loads=${early}`;
      assert.deepEqual([...await readU32(k, sel, kk)], [...want.slots], `slots ${msg}`);
      const act = new Float32Array(f);
      sparseMlp(xn, w1Used, b1Used, new Float32Array(f * d), new Float32Array(d), d, want.chosen, undefined, act);
      const wantH = Float32Array.from(want.slots, (j, i) => (want.used[i] ? act[j] : 0));
      const gotH = await readF32(k, h, kk);
      // f16 pairs round γ∘(x − sh) to 11 bits: the error of fp16 activations.
      assert.ok(relErr(gotH, wantH) < (packed ? 3e-3 : 1e-4), `h ${msg}${packed ? ' (f16 pairs)' : ''}: ${relErr(gotH, wantH)}`);
      own.forEach((b) => b.destroy());
    }
  }
});

test('fc2 in the block (each block\'s partial, f16 or f32, then fc2Sum) matches blockSelect + sparseMlp, in both phases, with and without the folded LayerNorm', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const r = rng(14), eps = 1e-5;
  // One combination of the features: the tests above run the others through the same fc1 code.
  {
    const k = new Kernels(gpu), own: GPUBuffer[] = [];
    k.blockSelectLnHalf = false;   // x's LayerNorm in f32 at every width here (the f16 pairs: the test above)
    const { f16, subgroups: sg } = gpu;
    // d = 37 pads fc2ᵀ's rows to 40 halves (wide, with a tail), 64 (vec4 x); f = 257 ends in a block
    // of one neuron, 200 in one of 8. d = 2056 and 4104 at 256 threads: 2 and 3 chunks a thread (257
    // and 513 chunks a row: the last round of chunks has one thread working).
    for (const [f, rk, d, wg] of [[200, 13, 37, 512], [257, 16, 64, 512], [130, 8, 2056, 256], [70, 8, 4104, 256]] as const) {
      const { m: B, w: wB } = randomMatrix(k, f, rk, r), { m: W1, w: w1 } = randomMatrix(k, f, d, r), { m: W2, w: w2 } = randomMatrix(k, d, f, r);
      const W2t = k.matrix(f, d, 'W2t');
      await runNow(k, k.transpose(W2, W2t, own), own);
      const w2t = transpose(w2, d, f);
      assert.ok(k.blockFc2Fits(W2t));
      const bias = randomArray(f, r, 0.3), b1 = randomArray(f, r, 0.5), b2 = randomArray(d, r);
      const gamma = randomArray(d, r).map((v) => 1 + 0.5 * v), beta = randomArray(d, r, 0.2), gB = k.f32Buffer(gamma, 'gamma');
      const c = k.buffer(2 * f * 4, 'c');
      await runNow(k, k.foldLayerNorm({ W: W1, gamma: gB, beta: k.f32Buffer(beta, 'beta'), bias: k.f32Buffer(b1, 'b1'), c }, own), own);
      k.blockPartHalf = false;
      const part = k.buffer(k.blockFc2PartBytes(W2t, 2), 'part');   // f32's size: room for both forms
      // The partials in f16 (the default) at every shape; in f32 at the first (the same code but the store and the load).
      for (const half of d === 37 ? [true, false] : [true]) for (const T of [1, 2]) {
        k.blockPartHalf = half;
        const u = randomArray(T * rk, r), x = randomArray(T * d, r).map((v) => 2 + v), x0 = randomArray(T * d, r);
        const scores = linear(u, T, wB, bias, rk, f);
        const median = Float32Array.from(scores).sort()[scores.length >> 1];
        // tau 1e9 chooses nothing: every block's partial must be zeros, not what the last run left.
        const cases = [[3, null, false, 'all'], [7, median, true, 'all'], [BS_NB, null, false, 'all'], [5, median, false, 'fc1'], [7, null, true, 'fc1'], [4, 1e9, false, 'all'], [4, 1e9, false, 'fc1']] as const;
        // The wide rows: fewer cases (lavapipe compiles each form slowly), one token; nothing chosen in both phases.
        if (d > 64 && T > 1) continue;
        for (const [cap, tau, ln, phase] of d > 64 ? [cases[1], cases[3], cases[5], cases[6]] : cases) {
          if (phase === 'fc1' && T > 1) continue;   // the scoring role is decode's (one token)
          if (ln && blockSelectLnBytes(d, wg, false, true) > gpu.limits.maxComputeWorkgroupStorageSize) continue;
          const nb = Math.ceil(f / BS_NB), kk = nb * cap, msg = `f=${f} r=${rk} d=${d} T=${T} cap=${cap} tau=${tau} ln=${ln} ${phase} f16=${f16} sg=${sg} wg=${wg} half partials=${half}`;
          const sel = k.buffer(T * kk * 4, 'sel'), h = k.buffer(T * kk * 4, 'h'), cnt = k.f32Buffer(new Uint32Array(4), 'cnt'), bcnt = k.buffer(nb * 4, 'bcnt');
          const res = k.f32Buffer(x0, 'res'), uB = k.f32Buffer(u, 'u'), biasB = k.f32Buffer(bias, 'bias');
          const ds: Dispatch[] = [];
          if (phase === 'fc1') {
            // The choice as the attention dispatch's role would make it (2 heads of 8 at position 0).
            const qkv = k.f32Buffer(randomArray(48, r), 'qkv'), kc = k.f32Buffer(randomArray(16, r), 'kc'), vc = k.f32Buffer(randomArray(16, r), 'vc');
            ds.push(...k.attention({ step: k.f32Buffer(Uint32Array.from([0, 0]), 'step'), qkv, k: kc, v: vc, o: k.buffer(64, 'o'), hn: k.buffer(8, 'hn'), H: 2, hd: 8, T: 1, maxPos: 1, fused: true,
              blockScore: { B, bias: biasB, u: uB, uOff: 0, uStride: rk, sel, h, cnt, bcnt, cap, tau } }, own));
          }
          ds.push(...k.blockSelectFc1({ B, bias: biasB, u: uB, W1, b1: ln ? null : k.f32Buffer(b1, 'b1'), ln: ln ? { gamma: gB, c, eps } : null, x: k.f32Buffer(x, 'x'),
            sel, h, cnt, T, cap, tau, wg, chosenBy: phase === 'fc1' ? { bcnt } : undefined, fc2: { W2t, part } }, own));
          assert.ok(ds.at(-1)!.label.endsWith(`_fc2c${Math.ceil(Math.ceil(d / 8) / wg)}${half ? 'h' : ''}`), msg);
          ds.push(k.fc2Sum({ W2t, part, x: res, bias: k.f32Buffer(b2, 'b2'), T }, own));
          await runNow(k, ds, own);
          const gSel = await readU32(k, sel, T * kk), gRes = await readF32(k, res, T * d);
          const ref = new Float32Array(T * d);
          for (let tt = 0; tt < T; tt++) {
            const want = blockSelect(scores.subarray(tt * f, (tt + 1) * f), BS_NB, cap, tau);
            assert.deepEqual([...gSel.subarray(tt * kk, (tt + 1) * kk)], [...want.slots], `slots ${msg}`);
            const xt = x.subarray(tt * d, (tt + 1) * d);
            const xm = ln ? layerNorm(xt, 1, d, gamma, beta, eps) : xt;
            const y = half ? sparseMlpHalfPartials(xm, w1, b1, w2t, b2, d, want.chosen, BS_NB) : sparseMlp(xm, w1, b1, w2t, b2, d, want.chosen);
            for (let i = 0; i < d; i++) ref[tt * d + i] = x0[tt * d + i] + y[i];
          }
          assert.ok(relErr(gRes, ref) < 1e-4, `x ${msg}: ${relErr(gRes, ref)}`);
        }
      }
    }
    // fc2ᵀ in several parts (rows of 40 halves, 4 KiB parts) has no seat: refused, not run wrong.
    const kp = new Kernels(gpu, 4096), { m: B } = randomMatrix(kp, 200, 13, r), { m: W1 } = randomMatrix(kp, 200, 37, r), W2t = kp.matrix(200, 37, 'W2t');
    assert.ok(W2t.parts.length > 1 && !kp.blockFc2Fits(W2t));
    const buf = (n: number) => kp.buffer(n * 4, 'b');
    assert.throws(() => kp.blockSelectFc1({ B, bias: buf(200), u: buf(13), W1, b1: buf(200), x: buf(37), sel: buf(64), h: buf(64), cnt: buf(4), T: 1, cap: 3, tau: null,
      fc2: { W2t, part: kp.buffer(kp.blockFc2PartBytes(W2t, 1), 'p') } }, own), /one part/);
    // A partial buffer too small for the tokens: refused.
    const W2one = k.matrix(200, 37, 'W2t');
    assert.throws(() => k.blockSelectFc1({ B: randomMatrix(k, 200, 13, r).m, bias: k.buffer(800, 'b'), u: k.buffer(52, 'u'), W1: randomMatrix(k, 200, 37, r).m, b1: k.buffer(800, 'b1'), x: k.buffer(296, 'x'),
      sel: k.buffer(256, 's'), h: k.buffer(256, 'h'), cnt: k.buffer(16, 'c'), T: 2, cap: 3, tau: null, fc2: { W2t: W2one, part: k.buffer(k.blockFc2PartBytes(W2one, 1), 'p') } }, own), /partials need/);
    own.forEach((b) => b.destroy());
  }
});

/**
 * Decode attention on the GPU against the CPU twin `attention`: the split-K (flash-decoding) pair on
 * odd shapes — scalar (hd 5, 7, 255) and vec4 (hd 12, 128) rows, contexts of 1, 2, 37 and 130
 * positions spanning several splits and several tiles a split — and the one-workgroup-per-query
 * kernel that prefill keeps, each over an f32 and a packed-f16 KV cache. Cache rows past the context
 * hold NaN: a read past it would show. The split form runs fused (the last split of each head
 * combines) and as two dispatches; the fused one runs twice on new queries with its scratch read back
 * after each run (every partial word and counter must be empty again), and both forms must give the
 * same bits. (That a partial's store may become visible after the counter add cannot be forced on a
 * software adapter: the spin that covers it is argued in kernels/attention.ts.)
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { attention } from '../src/backend/cpu/kernels.js';
import { Kernels, readF32, readU32, runNow } from '../src/backend/webgpu/ops.js';
import { ATS_MIN_CHUNK, ATS_SHORT_CHUNK, attentionFusedFits, attentionMaxLive, attentionFusedWords, attentionGroupRows, attentionSplits, attentionSplitShape, attentionTargetSplits } from '../src/backend/webgpu/kernels/attention.js';
import type { Gpu } from '../src/backend/webgpu/device.js';
import { gpuOrSkip, kvBuffer, kvRound } from './gpu.js';
import { randomArray, rng, relErr } from './helpers.js';

let gpu: Gpu | null = null;
after(() => gpu?.device.destroy());


test('split shapes fit WebGPU default limits', () => {
  for (const hd of [1, 5, 7, 12, 64, 128, 255, 256, 1024]) {
    const s = attentionSplitShape(hd)!;
    assert.ok(s && s.TILE >= 1 && s.RV * s.HV <= 256 && s.RPT * s.RV >= s.TILE, `hd ${hd}`);
    assert.ok(4 * (s.TILE * (s.HV + 2) + s.RV * s.HV * s.W + s.RV) <= 16384, `hd ${hd}: workgroup memory`);
  }
  assert.equal(attentionSplitShape(257), null); // scalar rows wider than the workgroup: old kernel
  assert.equal(attentionSplits(32, 2048), 32);
  // The fused form (its combine reuses phase 1's workgroup memory) takes the head dims models have.
  for (const hd of [5, 7, 20, 32, 64, 80, 128, 255, 256]) assert.ok(attentionFusedFits(hd), `hd ${hd} fused`);
  assert.ok(!attentionFusedFits(4) && !attentionFusedFits(257));
  assert.equal(attentionSplits(3, 131), 5);
  // Splits wanted: ~32768 / d, at most the grid's (OPT-1.3B 16, 6.7B 8, 13B 6, 30B 5).
  assert.deepEqual([2048, 4096, 5120, 7168].map((d) => attentionTargetSplits(d, 32)), [16, 8, 6, 5]);
  assert.equal(attentionTargetSplits(64, 5), 5);
});

test('webgpu attention matches the CPU twin (split-K decode and the prefill kernel)', async (t) => {
  gpu = await gpuOrSkip(t);
  if (!gpu) return;
  const r = rng(11);
  for (const sg of gpu.subgroups ? [true, false] : [false]) {
   for (const kv16 of [false, true]) {
    const k = new Kernels({ ...gpu, subgroups: sg }, undefined, kv16);
    const own: GPUBuffer[] = [];
    // [H, hd, pos, T, splits?, want?]: pos + T positions visible to the last query; want: the splits
    // wanted (targetSplits), fewer than the grid's, so each split covers more positions.
    type Case = [H: number, hd: number, pos: number, T: number, splits?: number, want?: number];
    const cases: Case[] = [
      [3, 5, 0, 1], [3, 5, 1, 1], [3, 5, 36, 1], [3, 5, 129, 1], [3, 7, 129, 1], [3, 7, 36, 1],
      [3, 12, 0, 1], [3, 12, 36, 1], [3, 12, 129, 1], [2, 128, 129, 1], [3, 255, 36, 1],
      [3, 7, 129, 1, 2], [3, 12, 129, 1, 2], [3, 255, 129, 1, 1], // chunk > tile: several tiles a split
      [3, 7, 129, 1, 64], [3, 12, 5, 1, 64],                          // more splits than positions
      [3, 5, 34, 3, 4], [3, 12, 127, 3, 3],                           // split form on prefill rows
      [3, 20, 40, 3, 4], [2, 64, 100, 2, 3], [2, 64, 129, 1],         // vec4 rows fused, T > 1 too
      [3, 5, 34, 3], [3, 12, 6, 3],                                   // prefill kernel
      [3, 12, 129, 1, undefined, 2], [2, 64, 300, 1, 64, 3],          // fewer splits wanted than the grid has
      [3, 7, 200, 1, 8, 5], [3, 12, 127, 3, 6, 2], [2, 128, 129, 1, undefined, 1],
      [2, 128, 300, 1, 16],   // more live splits (10) than the combine's groups (8): its second partials
      // Head dims whose lane groups fit lavapipe's subgroups of 8 (GROUP ROWS: rows summed in
      // registers, hd 32 by subgroupAdd, 16 and 8 by shuffles): one tile, several tiles a split, T > 1.
      // (The fused form with shuffles, head dim 64 at NVIDIA's 32, cannot fit lavapipe's 8: it was
      // checked on an H200 against the build before it, logits within 3.4e-6: docs/benchmarks.md.)
      [3, 32, 36, 1], [3, 32, 200, 1, 2], [3, 16, 129, 1, 2], [2, 8, 70, 1], [3, 32, 40, 3, 4],
    ];
    await t.test(`attention ${sg ? 'sg' : 'wgmem'} kv${kv16 ? 16 : 32}`, async () => {
      for (const [H, hd, pos, T, splits, want] of cases) {
        const d = H * hd, maxPos = pos + T + 3;
        const kc = new Float32Array(maxPos * d).fill(NaN), vc = new Float32Array(maxPos * d).fill(NaN);
        kc.set(randomArray((pos + T) * d, r)); vc.set(randomArray((pos + T) * d, r));
        const kb = kvBuffer(k, kc, 'k'), vb = kvBuffer(k, vc, 'v');
        const step = k.f32Buffer(Uint32Array.from([pos]), 'step');
        const split = T === 1 || !!splits;
        const outs: Float32Array[] = [];
        // Queries of run 0 and run 1, the same for both forms. Large scores: the softmax must subtract its max.
        const qkvs = [randomArray(T * 3 * d, r, 4), randomArray(T * 3 * d, r, 4)];
        for (const fused of split ? [true, false] : [true]) {
          k.fuseAttention = fused;
          const qkvBuf = k.buffer(T * 3 * d * 4, 'qkv');
          const o = k.buffer(T * d * 4, 'o'), hn = k.buffer(T * H * 4, 'hn');
          const keep: GPUBuffer[] = []; // the kernels' scratch lives for both runs
          const ds = k.attention({ step, qkv: qkvBuf, k: kb, v: vb, o, hn, H, hd, T, maxPos, splits, targetSplits: want }, keep);
          assert.equal(ds.length, split ? (fused && attentionFusedFits(hd) ? 1 : 2) : 1, 'decode (or forced splits) takes the split form, fused where it fits');
          if (split) assert.equal(ds[0].label.includes('_grp'), attentionGroupRows(hd, sg ? gpu!.subgroupSize ?? 0 : 0), `hd ${hd}: rows summed in registers where the subgroups allow`);
          for (let run = 0; run < (fused ? 2 : 1); run++) {
            const qkv = qkvs[run];
            k.gpu.device.queue.writeBuffer(qkvBuf, 0, qkv as Float32Array<ArrayBuffer>);
            k.gpu.device.queue.writeBuffer(o, 0, new Float32Array(T * d).fill(NaN));
            const q = new Float32Array(T * d);
            for (let t2 = 0; t2 < T; t2++) q.set(qkv.subarray(t2 * 3 * d, t2 * 3 * d + d), t2 * d);
            const hnRef = new Float32Array(T * H);
            // The reference reads the cache's values as the cache holds them (f16 with shader-f16).
            const ref = attention(q, T, pos, kvRound(k, kc), kvRound(k, vc), H, hd, undefined, hnRef);
            await runNow(k, ds, []);
            const what = `H=${H} hd=${hd} pos=${pos} T=${T} splits=${splits ?? 'auto'} want=${want ?? 'auto'} ${fused ? 'fused' : 'two dispatches'} run ${run}`;
            const got = await readF32(k, o, T * d);
            const eo = relErr(got, ref), eh = relErr(await readF32(k, hn, T * H), hnRef);
            assert.ok(eo < 1e-5, `${what}: output ${eo}`);
            assert.ok(eh < 1e-5, `${what}: head norms ${eh}`);
            if (run === 0) outs.push(got);
            // Every partial word and counter the fused form used is empty again for the next run.
            if (split && fused && attentionFusedFits(hd)) {
              const S = ds[0].wg[0];   // the grid's splits (attentionMaxLive may cap attentionSplits)
              assert.equal(keep[0].size, 4 * attentionFusedWords(T, H, S, hd), `${what}: the scratch's size`);
              const words = await readU32(k, keep[0], attentionFusedWords(T, H, S, hd));
              assert.ok(words.every((w) => w === 0), `${what}: scratch left ${words.filter((w) => w !== 0).length} words set`);
            }
          }
          for (const b of [...keep, qkvBuf, o, hn]) b.destroy();
        }
        for (const b of [kb, vb, step]) b.destroy();
        if (outs.length === 2) assert.deepEqual(outs[0], outs[1], `H=${H} hd=${hd} pos=${pos}: fused and two-dispatch forms give the same bits`);
      }
      k.fuseAttention = true;
    });
   }
  }
});

test('decode attention sized for the keys its plan sees (maxKeys): fewer splits in the grid, the same bits', async (t) => {
  // The runner's fused plan runs steps of at most FUSED_ATTENTION_MAX_KEYS keys: its grid stops at
  // attentionMaxLive(maxKeys) splits a head (ceil(maxKeys / ATS_SHORT_CHUNK) up to 256 keys, else
  // / ATS_MIN_CHUNK), where chunkOf never makes more live ones.
  gpu = await gpuOrSkip(t);
  if (!gpu) return;
  const r = rng(13), k = new Kernels(gpu, undefined, false), own: GPUBuffer[] = [];
  assert.deepEqual([64, 65, 256, 257, 300].map(attentionMaxLive), [1, 2, 4, Math.ceil(257 / ATS_MIN_CHUNK), Math.ceil(300 / ATS_MIN_CHUNK)]);
  assert.equal(attentionMaxLive(256), 256 / ATS_SHORT_CHUNK);
  for (const [H, hd, pos, maxKeys] of [[3, 32, 37, 64], [2, 64, 200, 256], [4, 20, 255, 256], [3, 12, 10, 11], [2, 32, 290, 300]] as const) {
    const d = H * hd, maxPos = 600;
    const kb = kvBuffer(k, randomArray(maxPos * d, r), 'k'), vb = kvBuffer(k, randomArray(maxPos * d, r), 'v');
    const step = k.f32Buffer(Uint32Array.from([pos]), 'step'), qkv = k.f32Buffer(randomArray(3 * d, r, 4), 'qkv');
    const outs: Float32Array[] = [];
    for (const mk of [undefined, maxKeys]) {
      const o = k.buffer(d * 4, 'o'), hn = k.buffer(H * 4, 'hn');
      const ds = k.attention({ step, qkv, k: kb, v: vb, o, hn, H, hd, T: 1, maxPos, maxKeys: mk }, own);
      assert.equal(ds[0].wg[0], mk ? Math.min(attentionSplits(H, maxPos), attentionMaxLive(mk)) : attentionSplits(H, maxPos), `H ${H} hd ${hd}: splits in the grid`);
      await runNow(k, ds, own);
      outs.push(await readF32(k, o, d), await readF32(k, hn, H));
    }
    assert.ok(attentionSplits(H, maxPos) > attentionMaxLive(maxKeys), 'the full grid is larger');
    assert.deepEqual(outs[2], outs[0], `H ${H} hd ${hd} pos ${pos}: output`);
    assert.deepEqual(outs[3], outs[1], `H ${H} hd ${hd} pos ${pos}: head norms`);
  }
});

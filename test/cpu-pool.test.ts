/**
 * The CPU backend's linear on several threads (linear-pool.ts): the same bits as the one-thread
 * linear on odd shapes, whatever the thread count, and a CPU runner with threads decodes as one without.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { linear } from '../src/backend/cpu/kernels.js';
import { LinearPool, POOL_MIN_MACS } from '../src/backend/cpu/linear-pool.js';
import { CpuRunner } from '../src/backend/cpu/runner.js';
import { checkpoint, MODELS, randomArray, reference, rng } from './helpers.js';

test('LinearPool: every thread count gives linear\'s bits on odd shapes (a shared bias or none, scratch growing); unshared or small work stays on the calling thread', () => {
  const r = rng(5);
  for (const threads of [2, 3]) {
    const pool = new LinearPool(threads);
    try {
      for (const [T, nIn, nOut] of [[1, 257, 301], [5, 129, 513], [4, 64, 1031], [9, 33, 2049], [2, 300, 3]] as const) {
        const x = randomArray(T * nIn, r), W = randomArray(nOut * nIn, r), b = randomArray(nOut, r);
        const Ws = pool.share(W), bs = pool.share(b);
        const want = linear(x, T, W, b, nIn, nOut), wantNoBias = linear(x, T, W, null, nIn, nOut);
        assert.deepEqual(pool.linear(x, T, Ws, bs, nIn, nOut), want, `threads ${threads}, ${T}x${nIn} -> ${nOut}`);
        assert.deepEqual(pool.linear(x, T, Ws, null, nIn, nOut), wantNoBias, `threads ${threads}, no bias`);
        // An unshared bias (or W) runs on the calling thread: the same bits.
        assert.deepEqual(pool.linear(x, T, Ws, b, nIn, nOut), want);
      }
      assert.equal(pool.pooledCalls, 8, 'the shared calls ran on the threads (not the 3-output one: fewer than 4 a thread)');
      // Small work stays on the calling thread.
      const xs = randomArray(8, r), Wsmall = pool.share(randomArray(8 * 64, r));
      assert.ok(8 * 64 < POOL_MIN_MACS);
      assert.deepEqual(pool.linear(xs, 1, Wsmall, null, 8, 64), linear(xs, 1, Wsmall, null, 8, 64));
      assert.equal(pool.pooledCalls, 8);
    } finally {
      pool.close();
    }
    // Closed: linear on the calling thread.
    const x = randomArray(300, r), W = randomArray(300 * 700, r);
    assert.deepEqual(pool.linear(x, 1, pool.share(W), null, 300, 700), linear(x, 1, W, null, 300, 700));
  }
});

test('a CPU runner with 3 threads gives the logits of one thread, prompt and decode, dense and sparse (5m)', async () => {
  const ck = await checkpoint(MODELS['5m']);
  const one = new CpuRunner(ck.config, ck.weights), three = new CpuRunner(ck.config, ck.weights, { pool: new LinearPool(3) });
  const ids = reference(MODELS['5m'])[0].input_ids;
  const { ffn, layers } = ck.config;
  const keep = Uint32Array.from({ length: ffn / 4 }, (_, i) => i * 4);
  for (const policy of [null, { input: 'mlp_in' as const, mlp: Array.from({ length: layers }, (_, l) => (l === 0 ? null : { k: keep.length, selector: { kind: 'fixed' as const, indices: keep } })) }]) {
    for (const r of [one, three]) { r.setSparsity(policy); r.reset(); }
    assert.deepEqual(await three.forward(ids, { allLogits: true }), await one.forward(ids, { allLogits: true }));
    for (const id of [5, 17, 300]) assert.deepEqual(await three.forward([id]), await one.forward([id]));
  }
  one.dispose(); three.dispose();
});

test('LinearPool: a worker that is gone leaves its parts to the calling thread; a closed pool runs alone', async () => {
  const r = rng(9), pool = new LinearPool(2);
  try {
    const x = randomArray(3 * 200, r), W = randomArray(500 * 200, r), Ws = pool.share(W);
    const want = linear(x, 3, W, null, 200, 500);
    assert.deepEqual(pool.linear(x, 3, Ws, null, 200, 500), want);
    await (pool as unknown as { workers: { terminate(): Promise<number> }[] }).workers[0].terminate();
    assert.deepEqual(pool.linear(x, 3, Ws, null, 200, 500), want, 'the calling thread took every part');
  } finally {
    pool.close();
  }
});

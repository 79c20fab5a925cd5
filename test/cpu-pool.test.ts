/**
 * The CPU backend's linear and attention on several threads (pool.ts): the same bits as the
 * one-thread kernels on odd shapes, whatever the thread count; small work stays on the calling
 * thread; a dead worker's parts are taken by the others; and a CPU runner with threads gives the
 * logits (and head norms) of one without, prompt and decode.
 */
import { availableParallelism } from 'node:os';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attention, linear, topK } from '../src/backend/cpu/kernels.js';
import { predictScores } from '../src/sparsity/predict.js';
import { attentionBlock, attentionMacs, attentionPart, attentionParts, CpuPool, POOL_MIN_MACS, beginJob, claimParts, CTL, linearParts, outputRange, LINEAR_PARTS_PER_THREAD, SPIN } from '../src/backend/cpu/pool.js';
import { CpuRunner } from '../src/backend/cpu/runner.js';
import type { SparsityPolicy } from '../src/sparsity/policy.js';
import { syntheticPredictorPolicy } from '../src/bench/policies.js';
import { checkpoint, MODELS, randomArray, reference, rng } from './helpers.js';

/** a and b hold the same bits (±0 and NaN payloads included). */
function sameBits(a: Float32Array, b: Float32Array, msg: string): void {
  assert.equal(a.length, b.length, msg);
  assert.deepEqual(new Uint32Array(a.buffer, a.byteOffset, a.length), new Uint32Array(b.buffer, b.byteOffset, b.length), msg);
}

test('CpuPool: every thread count gives linear\'s bits on odd shapes (a shared bias or none, scratch growing); unshared or small work stays on the calling thread', () => {
  const r = rng(5);
  for (const threads of [2, 3]) {
    const pool = new CpuPool(threads);
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
      assert.equal(pool.pooledCalls.linear, 8, 'the shared calls ran on the threads (not the 3-output one: fewer than 4 a thread)');
      // Small work stays on the calling thread.
      const xs = randomArray(8, r), Wsmall = pool.share(randomArray(8 * 64, r));
      assert.ok(8 * 64 < POOL_MIN_MACS);
      assert.deepEqual(pool.linear(xs, 1, Wsmall, null, 8, 64), linear(xs, 1, Wsmall, null, 8, 64));
      assert.equal(pool.pooledCalls.linear, 8);
      assert.equal(pool.pooledCalls.attention, 0);
    } finally {
      pool.close();
    }
    // Closed: linear on the calling thread.
    const x = randomArray(300, r), W = randomArray(300 * 700, r);
    assert.deepEqual(pool.linear(x, 1, pool.share(W), null, 300, 700), linear(x, 1, W, null, 300, 700));
  }
});

test('attention\'s parts: every (head, query) cell exactly once, the longest rows first, within a claim word', () => {
  for (const [T, H, threads] of [[1, 12, 2], [7, 5, 3], [512, 12, 2], [33, 2, 16], [2048, 96, 16], [1_000_000, 1, 2]]) {
    const qb = attentionBlock(T, H, threads), parts = attentionParts(T, H, qb);
    assert.ok(parts <= 0xffff, `${T} x ${H}: ${parts} parts`);
    const seen = new Uint8Array(T * H);
    let lastT0 = Infinity;
    for (let i = 0; i < parts; i++) {
      const [h, t0, t1] = attentionPart(T, H, qb, i);
      assert.ok(t0 < t1 && t0 <= lastT0, `${T} x ${H}: part ${i}`);
      lastT0 = t0;
      for (let t = t0; t < t1; t++) seen[t * H + h]++;
    }
    assert.ok(seen.every((n) => n === 1), `${T} x ${H}: every cell once`);
  }
});

test('CpuPool: attention on 2 and 3 threads gives attention\'s bits on odd shapes (prompts and decode, pos > 0, odd head sizes, with and without head norms); unshared caches or small work stay on the calling thread', () => {
  const r = rng(11);
  // [T, pos, H, hd]: prompts at 0 and later, decode steps (T = 1) and short passes far into the cache.
  const shapes = [[1, 1000, 3, 17], [1, 300, 3, 17], [7, 0, 5, 9], [40, 5, 2, 31], [64, 70, 4, 13], [129, 3, 3, 5], [3, 400, 7, 11], [2, 1, 3, 7], [17, 250, 1, 33]] as const;
  for (const threads of [2, 3]) {
    const pool = new CpuPool(threads);
    try {
      let pooled = 0;
      for (const [T, pos, H, hd] of shapes) {
        const d = H * hd, maxPos = pos + T + 3;
        const K = randomArray(maxPos * d, r), V = randomArray(maxPos * d, r), q = randomArray(T * d, r, 3);
        const Ks = pool.zeros(maxPos * d), Vs = pool.zeros(maxPos * d);
        assert.ok(Ks.every((v) => v === 0) && Vs.length === maxPos * d, 'zeros: zero-filled, n floats');
        Ks.set(K); Vs.set(V);
        const big = attentionMacs(T, pos, H, hd) >= POOL_MIN_MACS && attentionParts(T, H, attentionBlock(T, H, threads)) >= 2;
        for (const norm of [false, true]) {
          const msg = `threads ${threads}, T ${T} pos ${pos} H ${H} hd ${hd}${norm ? ', head norms' : ''}`;
          const wantN = norm ? new Float32Array(T * H) : undefined, gotN = norm ? new Float32Array(T * H).fill(NaN) : undefined;
          const want = attention(q, T, pos, K, V, H, hd, undefined, wantN);
          const before = pool.pooledCalls.attention;
          const got = pool.attention(q, T, pos, Ks, Vs, H, hd, new Float32Array(T * d).fill(NaN), gotN);
          sameBits(got, want, msg);
          if (norm) sameBits(gotN!, wantN!, `${msg}: the norms`);
          assert.equal(pool.pooledCalls.attention - before, big ? 1 : 0, `${msg}: ${big ? 'on the threads' : 'on the calling thread (small)'}`);
          if (big) pooled++;
          // Unshared caches: the calling thread, the same bits.
          sameBits(pool.attention(q, T, pos, K, V, H, hd), want, `${msg}: unshared caches`);
          assert.equal(pool.pooledCalls.attention - before, big ? 1 : 0);
        }
      }
      assert.ok(pooled >= 10, `${pooled} calls on the threads`);
      assert.ok(attentionMacs(1, 300, 3, 17) < POOL_MIN_MACS && attentionMacs(2, 1, 3, 7) < POOL_MIN_MACS, 'the small shapes are small');
      assert.equal(pool.pooledCalls.linear, 0);
    } finally {
      pool.close();
    }
  }
});

test('a CPU runner with 3 threads gives the logits of one thread, prompt and decode, dense and sparse, attention on the threads (5m)', async () => {
  const ck = await checkpoint(MODELS['5m']);
  const pool = new CpuPool(3);
  const one = new CpuRunner(ck.config, ck.weights), three = new CpuRunner(ck.config, ck.weights, { pool });
  const short = reference(MODELS['5m'])[0].input_ids;
  const { ffn, layers, heads, headDim, vocabSize } = ck.config;
  // A prompt long enough that its attention, and the decode steps' after it, cross POOL_MIN_MACS.
  const r = rng(3), long = Array.from({ length: 160 }, () => Math.floor(r() * vocabSize));
  assert.ok(attentionMacs(short.length, 0, heads, headDim) < POOL_MIN_MACS, 'the short prompt\'s attention stays on the calling thread');
  assert.ok(attentionMacs(1, long.length, heads, headDim) >= POOL_MIN_MACS, 'the long prompt\'s decode steps go to the threads');
  const keep = Uint32Array.from({ length: ffn / 4 }, (_, i) => i * 4);
  const none = new Array(layers).fill(null);
  const policies: (SparsityPolicy | null)[] = [
    null,
    { input: 'mlp_in', mlp: none.map((_, l) => (l === 0 ? null : { k: keep.length, selector: { kind: 'fixed' as const, indices: keep } })) },
    // Sparse heads in decode (heads.ts, on the calling thread) write the shared caches that the dense prompt after them reads.
    { input: 'attn_in', mlp: none, heads: none.map(() => ({ k: 3, kv: 'chosen' as const, selector: { kind: 'fixed' as const, heads: Uint32Array.from([0, 2, 5]) } })) },
  ];
  for (const policy of policies) {
    for (const ids of [short, long]) {
      for (const rr of [one, three]) { rr.setSparsity(policy); rr.reset(); }
      const a0 = pool.pooledCalls.attention;
      const norms = () => {
        const got: Float32Array[] = [];
        return { got, opts: { trace: (l: number, _p: string, data: Float32Array) => { got[l] = data; }, tracePoints: ['head_norm' as const] } };
      };
      const n1 = norms(), n3 = norms();
      assert.deepEqual(await three.forward(ids, { allLogits: true, ...n3.opts }), await one.forward(ids, { allLogits: true, ...n1.opts }));
      assert.deepEqual(n3.got, n1.got, 'the prompt\'s head norms');
      assert.equal(n3.got.length, layers);
      for (const id of [5, 17, 300]) assert.deepEqual(await three.forward([id]), await one.forward([id]));
      // Another prompt after the decode steps (pos > 0).
      assert.deepEqual(await three.forward(ids.slice(0, 9), { allLogits: true }), await one.forward(ids.slice(0, 9), { allLogits: true }));
      // Dense attention goes to the threads where it is large enough (sparse heads' decode never does).
      const big = (T: number, pos: number) => (attentionMacs(T, pos, heads, headDim) >= POOL_MIN_MACS ? 1 : 0);
      const P = ids.length, decode = policy?.heads ? 0 : big(1, P) + big(1, P + 1) + big(1, P + 2);
      const ran = pool.pooledCalls.attention - a0, want = layers * (big(P, 0) + decode + big(9, P + 3));
      assert.equal(ran, want, `attention on the threads ${ran} times (policy ${policy ? policy.input : 'dense'}, prompt ${P})`);
      if (ids === long) assert.equal(ran, layers * (policy?.heads ? 2 : 5), 'the long prompt, its dense decode steps and the prompt after them all on the threads');
    }
  }
  one.dispose(); three.dispose();
});

test('CpuPool: a worker that is gone leaves its parts to the calling thread, for linear and attention; a closed pool runs alone', async () => {
  const r = rng(9), pool = new CpuPool(2);
  try {
    const x = randomArray(3 * 200, r), W = randomArray(500 * 200, r), Ws = pool.share(W);
    const want = linear(x, 3, W, null, 200, 500);
    const [T, pos, H, hd] = [20, 30, 3, 19], d = H * hd;
    const q = randomArray(T * d, r), K = randomArray((pos + T) * d, r), V = randomArray((pos + T) * d, r);
    const Ks = pool.zeros(K.length), Vs = pool.zeros(V.length);
    Ks.set(K); Vs.set(V);
    const wantN = new Float32Array(T * H), wantO = attention(q, T, pos, K, V, H, hd, undefined, wantN);
    assert.deepEqual(pool.linear(x, 3, Ws, null, 200, 500), want);
    const n = new Float32Array(T * H);
    sameBits(pool.attention(q, T, pos, Ks, Vs, H, hd, undefined, n), wantO, 'attention on the pool');
    sameBits(n, wantN, 'head norms on the pool');
    assert.deepEqual(pool.pooledCalls, { linear: 1, attention: 1 });
    await (pool as unknown as { workers: { terminate(): Promise<number> }[] }).workers[0].terminate();
    // As if the pool had not yet heard of the worker's exit: the jobs go out, the calling thread claims every part.
    (pool as unknown as { closed: boolean }).closed = false;
    assert.deepEqual(pool.linear(x, 3, Ws, null, 200, 500), want, 'the calling thread took every part of linear');
    const n2 = new Float32Array(T * H);
    sameBits(pool.attention(q, T, pos, Ks, Vs, H, hd, undefined, n2), wantO, 'the calling thread took every part of attention');
    sameBits(n2, wantN, 'head norms, the calling thread alone');
    assert.deepEqual(pool.pooledCalls, { linear: 2, attention: 2 });
  } finally {
    pool.close();
  }
  // Closed: attention on the calling thread.
  const q = randomArray(8 * 30, r), K = randomArray(40 * 30, r), V = randomArray(40 * 30, r), Ks = pool.zeros(K.length), Vs = pool.zeros(V.length);
  Ks.set(K); Vs.set(V);
  sameBits(pool.attention(q, 8, 32, Ks, Vs, 3, 10), attention(q, 8, 32, K, V, 3, 10), 'closed');
  assert.deepEqual(pool.pooledCalls, { linear: 2, attention: 2 });
});

test('CpuPool: a worker still in the last job cannot claim a part of the next (its claims close before its fields are written)', () => {
  const ctl = new Int32Array(new SharedArrayBuffer(32 * 4)), G = 5;
  // Job G is done: both of its parts were claimed. A worker woken late for it is about to read NEXT.
  ctl[CTL.GEN] = G; ctl[CTL.PARTS] = 2; Atomics.store(ctl, CTL.NEXT, (G << 16) | 2);
  const gen = beginJob(ctl);
  assert.equal(gen, G + 1);
  ctl[CTL.PARTS] = 36;   // the next job's fields, written before its claims open
  let stale = 0;
  assert.equal(claimParts(ctl, G, () => { stale++; }), 0, 'no part claimed under the old generation');
  assert.equal(stale, 0);
  assert.equal(claimParts(ctl, gen, () => {}), 0, 'nor under the new one before the claims open');
  Atomics.store(ctl, CTL.NEXT, gen << 16);
  assert.equal(claimParts(ctl, gen, () => {}), 36, 'once open, every part');
});

test('linear\'s parts: several a thread (at least 4 outputs each), together every output exactly once, ranges on multiples of 4', () => {
  for (const threads of [2, 3, 16]) {
    for (const nOut of [8, 9, 13, 63, 64, 384, 1000, 1031, 8192]) {
      if (nOut < 4 * threads) continue;   // such products stay on the calling thread
      const parts = linearParts(nOut, threads);
      assert.ok(parts >= 1 && parts <= threads * LINEAR_PARTS_PER_THREAD && parts <= Math.floor(nOut / 4), `${nOut} outputs, ${threads} threads: ${parts} parts`);
      const seen = new Uint8Array(nOut);
      for (let i = 0; i < parts; i++) {
        const [o0, o1] = outputRange(nOut, parts, i);
        assert.ok(o0 <= o1 && (o0 % 4 === 0 || o0 === nOut), `part ${i}: [${o0}, ${o1})`);
        for (let o = o0; o < o1; o++) seen[o]++;
      }
      assert.ok(seen.every((v) => v === 1), `${nOut} outputs, ${threads} threads: every output once`);
    }
  }
  assert.equal(linearParts(384, 2), 2 * LINEAR_PARTS_PER_THREAD);
});

test('the CPU runner scores a prompt\'s rows with its predictors in one product (on the threads where there are some): the neurons and logits of one row at a time (block rule and top-K, attn_io)', async () => {
  const ck = await checkpoint(MODELS['5m']);
  const ids = reference(MODELS['5m'])[0].input_ids, f = ck.config.ffn, layers = ck.config.layers;
  const pool = new CpuPool(2);
  for (const runner of [new CpuRunner(ck.config, ck.weights), new CpuRunner(ck.config, ck.weights, { pool })]) {
    for (const selection of ['block', 'topk'] as const) {
      const policy = syntheticPredictorPolicy(ck.config, 0.2, { input: 'attn_io', rank: 24, selection });
      runner.setSparsity(policy);
      const acts: Float32Array[][] = Array.from({ length: layers }, () => []), ins: Float32Array[][] = Array.from({ length: layers }, () => []);
      const opts = {
        trace: (l: number, p: string, data: Float32Array) => { (p === 'fc1_act' ? acts : ins)[l].push(data.slice()); },
        tracePoints: ['fc1_act' as const, 'attn_in' as const, 'attn_out' as const],
      };
      runner.reset();
      const prompt = await runner.forward(ids, { allLogits: true, ...opts });
      const whole = acts.map((a) => a.splice(0));
      runner.reset();
      const steps: Float32Array[] = [];
      for (const id of ids) steps.push(await runner.forward([id], opts));
      for (let l = 0; l < layers; l++) {
        const rows = new Float32Array(ids.length * f);
        acts[l].forEach((a, t) => rows.set(a, t * f));
        assert.deepEqual(whole[l][0], rows, `${selection}: layer ${l}'s chosen neurons and activations`);
      }
      const V = ck.config.vocabSize;
      steps.forEach((s, t) => assert.deepEqual(prompt.subarray(t * V, (t + 1) * V), s, `${selection}: row ${t}'s logits`));
      // Against the predictor itself (top-K: the k best of predictScores over attn_in and attn_out side
      // by side): every neuron a decode step activated is among them.
      if (selection === 'topk') {
        const d = ck.config.hidden;
        policy.mlp.forEach((lp, l) => {
          if (!lp || lp.selector.kind !== 'predictor') return;
          const pred = lp.selector.predictor;
          ids.forEach((_, t) => {
            const [h, o] = [ins[l][2 * (t + 1)], ins[l][2 * (t + 1) + 1]];   // this step's attn_in, attn_out (after the prompt's pair)
            const x = new Float32Array(2 * d); x.set(h); x.set(o, d);
            const chosen = new Set(topK(predictScores(pred, x, 2 * d), lp.k));
            acts[l][t].forEach((v, j) => { if (v !== 0) assert.ok(chosen.has(j), `layer ${l} step ${t}: neuron ${j} active but not predicted`); });
          });
        });
      }
    }
    runner.dispose();
  }
});

test('CpuPool spins before sleeping only where its threads fit the cores; the runner keeps its predictors\' shared copies through a dense interlude and drops them for a policy without them', async () => {
  const cores = availableParallelism();
  const fits = new CpuPool(Math.min(2, cores)), over = new CpuPool(cores + 1);
  try {
    assert.equal(fits.spin, SPIN);
    assert.equal(over.spin, 0);
  } finally { fits.close(); over.close(); }
  const ck = await checkpoint(MODELS['5m']);
  const pool = new CpuPool(2), runner = new CpuRunner(ck.config, ck.weights, { pool });
  const policy = syntheticPredictorPolicy(ck.config, 0.2, { input: 'attn_io', rank: 24 });
  const pred = policy.mlp.find((lp) => lp?.selector.kind === 'predictor')!.selector as { predictor: object };
  const mats = () => (runner as unknown as { predMats: Map<object, object> }).predMats;
  runner.setSparsity(policy);
  const copy = mats().get(pred.predictor);
  assert.ok(copy && copy !== pred.predictor, 'a shared copy');
  runner.setSparsity(null);
  runner.setSparsity(policy);
  assert.equal(mats().get(pred.predictor), copy, 'the same copy after a dense interlude (eval --compare)');
  runner.setSparsity(syntheticPredictorPolicy(ck.config, 0.2, { input: 'attn_io', rank: 24, seed: 9 }));
  assert.equal(mats().has(pred.predictor), false, 'dropped for a policy without it');
  runner.dispose();
});

// `dejavu bench --kernels` on a tiny custom shape (fast on lavapipe), the read-bandwidth kernel's
// checksum against its CPU twin, and the timer. Skipped without a WebGPU adapter, failing in CI.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { Gpu } from '../src/backend/webgpu/device.js';
import { Kernels, readU32, runNow } from '../src/backend/webgpu/ops.js';
import { destroyReadTarget, readChecksumCpu, readDispatches, readTarget } from '../src/bench/bandwidth.js';
import { GpuTimer } from '../src/bench/gpu-timer.js';
import { disjointSets, kernelShape } from '../src/bench/kernels.js';
import { gpuOrSkip } from './gpu.js';
import { ROOT, rng } from './helpers.js';

const CLI = join(ROOT, 'dist', 'src', 'cli.js');
const TINY = 'd=256,f=1024,heads=4,vocab=4096,pos=512';
let gpu: Gpu | null = null;
after(() => gpu?.device.destroy());

test('read kernel checksum equals the CPU sum, one binding or several, odd sizes', async (t) => {
  gpu = await gpuOrSkip(t);
  if (!gpu) return;
  const k = new Kernels(gpu);
  const r = rng(3);
  // bytes, max bytes per binding: 64 KiB in one; 1 MiB + 20 KiB in 4 KiB-multiples of 256 KiB (5 bindings,
  // the last short, and groups whose threads see uneven counts of elements).
  for (const [bytes, maxBinding] of [[64 * 1024, Infinity], [(1024 + 20) * 1024, 256 * 1024]] as const) {
    const target = readTarget(k, bytes, maxBinding);
    try {
      const expected: number[] = [];
      let total = 0;
      target.chunks.forEach((c, i) => {
        const words = Uint32Array.from({ length: c.bytes / 4 }, () => Math.floor(r() * 2 ** 32));
        gpu!.device.queue.writeBuffer(c.buffer, 0, words);
        expected.push(...readChecksumCpu(words, target.groups[i]));
        for (const w of words) total = (total + w) >>> 0;
      });
      if (maxBinding !== Infinity) assert.equal(target.chunks.length, 5);
      const own: GPUBuffer[] = [];
      await runNow(k, readDispatches(k, target, own), own);
      const got = await readU32(k, target.out, expected.length);
      assert.deepEqual([...got], expected);
      // And the total, which does not depend on how elements were dealt to threads: every word read once.
      assert.equal(got.reduce((a, b) => (a + b) >>> 0, 0), total);
    } finally {
      destroyReadTarget(target);
    }
  }
});

test('GpuTimer: positive per-iteration times with timestamps and with the wall clock', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const k = new Kernels(gpu);
  const target = readTarget(k, 256 * 1024);
  const own: GPUBuffer[] = [];
  try {
    const ds = readDispatches(k, target, own);
    for (const forceWall of [false, true]) {
      const tm = await new GpuTimer(gpu, { targetMs: 2, samples: 3, forceWall }).time([ds, ds]);
      assert.ok(tm.us > 0, `${forceWall}: ${tm.us}`);
      assert.equal(tm.samplesUs.length, 3);
      assert.equal(tm.method, forceWall || !gpu.timestamps ? 'wall' : tm.method);
    }
  } finally {
    destroyReadTarget(target);
    own.forEach((b) => b.destroy());
  }
});

test('disjointSets and kernelShape', () => {
  const sets = disjointSets(100, 30, 3, 1);
  const all = sets.flatMap((s) => [...s]);
  assert.equal(new Set(all).size, 90);
  for (const s of sets) assert.deepEqual([...s], [...s].sort((a, b) => a - b));
  assert.deepEqual(kernelShape('opt-6.7b'), { name: 'opt-6.7b', d: 4096, f: 16384, heads: 32, vocab: 50272, e: 4096, maxPos: 2048 });
  assert.deepEqual(kernelShape('d=256,heads=4'), { name: 'd=256,heads=4', d: 256, f: 1024, heads: 4, vocab: 50272, e: 256, maxPos: 2048 });
  assert.throws(() => kernelShape('d=256,x=3'), /unknown key "x"/);
});

test('bench --kernels --json prints a row for every kernel with positive times', async (t) => {
  gpu ??= await gpuOrSkip(t);
  if (!gpu) return;
  const r = spawnSync(process.execPath, [CLI, 'bench', '--kernels', '--shape', TINY, '--json',
    '--kernel-ms', '1', '--kernel-samples', '3', '--read-mib', '1'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  for (const row of rows) {
    assert.deepEqual(Object.keys(row), ['kernel', 'shape', 'params', 'us', 'gbps', 'bytes', 'timing']);
    assert.equal(row.shape, TINY);
    assert.ok((row.us as number) > 0, JSON.stringify(row));
    assert.ok(row.timing === 'gpu-timestamps' || row.timing === 'wall');
  }
  const count = (k: string) => rows.filter((x) => x.kernel === k).length;
  assert.equal(count('read-bandwidth'), 1);
  assert.equal(count('copy-bandwidth'), 1);
  assert.equal(count('gemv'), 5);
  assert.equal(count('gather-gemv'), 5);
  assert.equal(count('sparse-fc2'), 6); // five densities, and the block rule's slots
  assert.equal(count('mlp-dense'), 1);
  assert.equal(count('mlp-sparse'), 5);  // top-K, the block rule, and the block rule with the lookahead (fc2 in block-select with B int8 and fp16, and one-pass)
  assert.equal(count('block-select'), 3); // and with the MLP LayerNorm folded in, with and without fc2's partials
  assert.equal(count('fc2-sum'), 1);
  assert.equal(count('topk'), 1);
  assert.equal(count('layernorm'), 1);
  // Each context over an f32 and an f16 KV cache; the f16 rows read half the bytes.
  const att = rows.filter((x) => x.kernel === 'attention').map((x) => x.params as { positions: number; kv: string });
  assert.deepEqual(att.map((p) => `${p.positions}/${p.kv}`), ['128/f32', '128/f16', '512/f32', '512/f16']);
  const attBytes = rows.filter((x) => x.kernel === 'attention').map((x) => x.bytes as number);
  assert.equal(attBytes[0], 2 * attBytes[1]);
  const sparse = rows.find((x) => x.kernel === 'mlp-sparse')!;
  assert.ok(((sparse.params as { speedup_vs_dense: number }).speedup_vs_dense) > 0);
  const gemv = rows.find((x) => x.kernel === 'gemv')!;
  assert.equal(gemv.bytes, 256 * 256 * 2);
  assert.ok(Math.abs((gemv.gbps as number) - (gemv.bytes as number) / ((gemv.us as number) * 1e3)) < 0.01 + 1e-3 * (gemv.gbps as number));
  assert.match(r.stderr, /sparse MLP block \(top-K, density 0\.1; predictor and selection included\): [\d.]+x/);
  assert.match(r.stderr, /sparse MLP block \(block rule, density [\d.]+ measured; predictor and selection included\): [\d.]+x/);
  for (const f of ['fc2 in block-select, B int8', 'fc2 in block-select, B fp16', 'one-pass fc2, B int8']) {
    assert.match(r.stderr, new RegExp(`sparse MLP block \\(block rule, lookahead, ${f}, density [\\d.]+ measured; predictor and selection included\\): [\\d.]+x`));
  }
  for (const form of ['block', ...['fc2 in block-select, B int8', 'fc2 in block-select, B fp16', 'one-pass fc2, B int8'].map((f) => `block lookahead (A in the qkv GEMV), ${f}`)]) {
    const block = rows.find((x) => x.kernel === 'mlp-sparse' && (x.params as { form: string }).form === form)!;
    const bp = block.params as { density: number; slots: number; cap: number; dispatches: number };
    assert.ok(bp.density > 0.05 && bp.density < 0.15, `${form}: the threshold picks about 10 %: ${bp.density}`);
    assert.equal(bp.dispatches, form === 'block' ? 3 : 2);
  }
});

test('bench --kernels errors are one line', () => {
  for (const [args, re] of [
    [['--kernels', '--shape', 'opt-9b'], /^dejavu: unknown shape "opt-9b"/],
    [['--kernels', '--shape', 'd=256,q=1'], /^dejavu: unknown key "q"/],
    [['--kernels', '--backend', 'cpu'], /^dejavu: --kernels benchmarks the WebGPU kernels/],
  ] as [string[], RegExp][]) {
    const r = spawnSync(process.execPath, [CLI, 'bench', ...args], { encoding: 'utf8' });
    assert.equal(r.status, 1, r.stderr);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('dejavu:'));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], re);
  }
});

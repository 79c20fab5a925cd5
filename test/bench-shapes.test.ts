// Byte counting of the benchmark (src/bench/shapes.ts) and the HF baseline's shape table.
import { blockSelect } from '../src/backend/cpu/kernels.js';
import { predictScores } from '../src/sparsity/predict.js';
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parameterCount } from '../src/model/config.js';
import { fixedPolicy, headCount, randomSubset, rng, syntheticHeads, syntheticPredictorPolicy } from '../src/bench/policies.js';
import { benchTable, type BenchRow } from '../src/bench/report.js';
import { gpuStepFields } from '../src/bench/run.js';
import {
  CPU_LAYOUT, deviceWeightBytes, mlpBytesFromPolicy, mlpK, predictorRank, SHAPE_NAMES, shapeConfig, shapeJson,
  tokenBytes, uniformMlp, WEBGPU_LAYOUT, type MlpBytesSpec,
} from '../src/bench/shapes.js';
import { ROOT } from './helpers.js';

const c67 = shapeConfig('opt-6.7b');

test('OPT-6.7B dense decode reads ~13.3 GB of fp16 weights: every parameter once, one embedding and one position row', () => {
  const b = tokenBytes(c67, { position: 0 });
  const d = c67.hidden, e = c67.wordEmbedProjDim;
  const expectWeights = (parameterCount(c67) - (c67.maxPositions + 2) * d + d + e) * 2;
  assert.equal(b.total - b.kv, expectWeights);
  assert.ok(b.total - b.kv > 13.2e9 && b.total - b.kv < 13.4e9, `${b.total - b.kv}`);
  assert.equal(b.kv, 32 * 2 * 1 * 4096 * 2); // position 0 attends to itself only
  assert.equal(tokenBytes(c67, { position: 127 }).kv, 32 * 2 * 128 * 4096 * 2);
  assert.equal(b.lmHead, 50272 * 4096 * 2);
  // The device also holds the whole position table.
  assert.equal(deviceWeightBytes(c67), parameterCount(c67) * 2);
});

test('layouts: the WebGPU runner keeps vectors and the KV cache in f32 (its default), the CPU runner everything', () => {
  const fp16 = tokenBytes(c67, { position: 10 }), gpu = tokenBytes(c67, { position: 10, layout: WEBGPU_LAYOUT });
  assert.equal(gpu.kv, 2 * fp16.kv);
  assert.equal(gpu.lmHead, fp16.lmHead);
  assert.ok(gpu.total > fp16.total && gpu.total < fp16.total * 1.01);
  const cpu = tokenBytes(c67, { position: 10, layout: CPU_LAYOUT });
  assert.equal(cpu.total, 2 * fp16.total);
});

test('sparse MLP reads K rows of fc1 and fc2 plus the predictor', () => {
  const d = 4096, f = 16384, L = 32, r = predictorRank(d), K = mlpK(c67, 0.1);
  assert.equal(r, 336);
  assert.equal(K, 1638);
  const dense = tokenBytes(c67, { position: 0 });
  const sparse = tokenBytes(c67, { position: 0, mlp: uniformMlp(c67, 0.1, r) });
  assert.equal(sparse.mlp, L * (2 * d * 2 + 2 * K * d * 2 + (K + d) * 2));
  assert.equal(sparse.predictor, L * ((r * d + f * r) * 2 + f * 2));
  // The WebGPU runner's block rule with the lookahead holds B as int8 rows (a 16-byte scale chunk, then r bytes padded to 16); other selectors fp16.
  const blockSpec = uniformMlp(c67, 0.1, r).map((sp) => ({ ...sp, blockLookahead: true }));
  assert.equal(tokenBytes(c67, { position: 0, layout: WEBGPU_LAYOUT, mlp: blockSpec }).predictor, L * (r * d * 2 + f * (16 + 336) + f * 4));
  assert.equal(tokenBytes(c67, { position: 0, layout: WEBGPU_LAYOUT, mlp: uniformMlp(c67, 0.1, r) }).predictor, L * ((r * d + f * r) * 2 + f * 4));
  assert.equal(tokenBytes(c67, { position: 0, mlp: blockSpec }).predictor, sparse.predictor, 'the fp16 layout keeps B in fp16');
  assert.equal(sparse.attention, dense.attention);
  assert.equal(sparse.lmHead, dense.lmHead);
  // MLP is 2/3 of the layer weights: at 10% density with predictors, about 0.47 of dense.
  const ratio = sparse.total / dense.total;
  assert.ok(ratio > 0.4 && ratio < 0.55, `${ratio}`);
  // Fixed index sets: no predictor.
  assert.equal(tokenBytes(c67, { position: 0, mlp: uniformMlp(c67, 0.1, 0) }).predictor, 0);
  // The oracle computes fc1 in full.
  const oracle = tokenBytes(c67, { position: 0, mlp: uniformMlp(c67, 0.1, 0).map((s) => ({ ...s, denseFc1: true })) });
  assert.equal(oracle.mlp - sparse.mlp, L * (f - K) * (d + 1) * 2);
  // Head density scales Q and O weights and the KV read; K and V weights too where unchosen heads skip them.
  const heads = tokenBytes(c67, { position: 99, headDensity: 0.5 });
  assert.equal(heads.kv, tokenBytes(c67, { position: 99 }).kv / 2);
  const chosen = tokenBytes(c67, { position: 99, headDensity: 0.5, headKv: 'chosen' });
  assert.ok(chosen.attention < dense.attention * 0.51);
  assert.ok(Math.abs(heads.attention - dense.attention * 0.75) < dense.attention * 0.01, `${heads.attention / dense.attention}`);
  // Lazy completion: K and V at the mean of an even step (the chosen heads) and an odd one (every head).
  const lazy = tokenBytes(c67, { position: 99, headDensity: 0.5, headKv: 'lazy' });
  assert.ok(Math.abs(lazy.attention - (heads.attention + chosen.attention) / 2) < dense.attention * 1e-6, `${lazy.attention / dense.attention}`);
  // Head predictors: the (H, d) product B·A (fp16) and H f32 biases a layer, whatever the rank.
  const withPred = tokenBytes(c67, { position: 99, headDensity: 0.5, headRank: 336 });
  assert.equal(withPred.predictor - heads.predictor, L * (32 * d * 2 + 32 * 4));
  assert.equal(tokenBytes(c67, { position: 99, headDensity: 0.5, headRank: 16 }).predictor, withPred.predictor);
});

test('synthetic heads: k = round(density · H) a layer, fixed random sets with --oracle, else one shared predictor of the rank rule', () => {
  const c = shapeConfig('opt-6.7b');
  const fixed = syntheticHeads(c, 0.4, { oracle: true });
  assert.equal(fixed.length, c.layers);
  for (const hp of fixed) {
    assert.equal(hp.k, 13);
    assert.ok(hp.selector.kind === 'fixed' && new Set(hp.selector.heads).size === 13 && hp.selector.heads.every((h) => h < 32));
  }
  assert.notDeepEqual(fixed[0].selector, fixed[1].selector);
  const pred = syntheticHeads(c, 0.4);
  const s0 = pred[0].selector;
  assert.ok(s0.kind === 'predictor' && s0.predictor.rank === predictorRank(c.hidden) && s0.predictor.B.length === 32 * s0.predictor.rank);
  assert.ok(pred.every((hp) => hp.selector === s0 || (hp.selector.kind === 'predictor' && hp.selector.predictor === s0.predictor)));
  assert.equal(headCount(c, 0.001), 1);
});

test('predictor ranks scale DejaVu\'s 1000 at d = 12288 in multiples of 16', () => {
  assert.equal(predictorRank(9216), 752);
  assert.equal(predictorRank(768), 64);
  for (const n of SHAPE_NAMES) assert.equal(predictorRank(shapeConfig(n).hidden) % 16, 0);
});

test('synthetic policies: distinct sorted fixed sets per layer, shared predictor, byte specs follow', () => {
  const c = shapeConfig('opt-125m');
  const p = fixedPolicy(c, 0.1);
  assert.equal(p.mlp.length, 12);
  const specs = mlpBytesFromPolicy(p)!;
  for (const [l, lp] of p.mlp.entries()) {
    assert.ok(lp && lp.selector.kind === 'fixed');
    const idx = lp.selector.indices;
    assert.equal(idx.length, mlpK(c, 0.1));
    assert.equal(new Set(idx).size, idx.length);
    for (let i = 1; i < idx.length; i++) assert.ok(idx[i] > idx[i - 1] && idx[i] < c.ffn);
    assert.deepEqual(specs[l], { k: idx.length, rank: 0, denseFc1: false, blockLookahead: false });
  }
  const s = syntheticPredictorPolicy(c, 0.2);
  const sel = s.mlp[0]!.selector;
  assert.ok(sel.kind === 'predictor');
  assert.equal(sel.predictor.A.length, 64 * 768);
  assert.equal(sel.predictor.B.length, 3072 * 64);
  // The default synthetic rule is the block rule: a cap of twice the mean count a block, and a
  // threshold that keeps about the density on unit-variance inputs (checked with the CPU twin).
  assert.deepEqual(sel.block && sel.block.cap, 26);
  assert.equal(s.mlp[0]!.k, (3072 / 64) * 26);
  assert.equal(s.mlp[0]!.density, 0.2);
  // DejaVu's lookahead by default (attn_in); mlp_in on request.
  assert.equal(s.input, 'attn_in');
  assert.equal(syntheticPredictorPolicy(c, 0.2, { input: 'mlp_in' }).input, 'mlp_in');
  const r = rng(9);
  let chosen = 0;
  for (let i = 0; i < 4; i++) {
    const x = Float32Array.from({ length: 768 }, () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()));
    chosen += blockSelect(predictScores(sel.predictor, x, 768), 64, sel.block!.cap, sel.block!.tau).chosen.length;
  }
  assert.ok(Math.abs(chosen / (4 * 3072) - 0.2) < 0.05, `synthetic threshold keeps ${chosen / (4 * 3072)}`);
  const t = syntheticPredictorPolicy(c, 0.2, { selection: 'topk' });
  assert.deepEqual(mlpBytesFromPolicy(t)![3], { k: mlpK(c, 0.2), rank: 64, denseFc1: false, blockLookahead: false });
  assert.equal(mlpBytesFromPolicy(s)![3]!.blockLookahead, true);
  assert.equal(mlpBytesFromPolicy(syntheticPredictorPolicy(c, 0.2, { input: 'mlp_in' }))![3]!.blockLookahead, false);
  // attn_io: A reads 2d columns (the attention input, then attention's output), counted in the bytes.
  const io = syntheticPredictorPolicy(c, 0.2, { input: 'attn_io' }), ioSel = io.mlp[0]!.selector;
  assert.ok(ioSel.kind === 'predictor' && ioSel.predictor.A.length === 64 * 2 * 768);
  const ioSpec = mlpBytesFromPolicy(io)![3]!;
  assert.deepEqual(ioSpec, { k: s.mlp[3]!.k, rank: 64, denseFc1: false, blockLookahead: false, aCols: 2 * 768 });
  const bytesOf = (m: MlpBytesSpec) => tokenBytes(c, { position: 0, mlp: Array.from({ length: c.layers }, () => m) }).predictor;
  assert.equal(bytesOf(ioSpec) - bytesOf({ ...ioSpec, aCols: undefined }), c.layers * 64 * 768 * 2, 'A\'s second half, fp16');
  assert.equal(randomSubset(10, 10, rng(3)).join(), '0,1,2,3,4,5,6,7,8,9');
});

test('OPT-350m: 512-wide embeddings with project_in/out, post-LayerNorm', () => {
  const c = shapeConfig('opt-350m');
  assert.equal(c.wordEmbedProjDim, 512);
  assert.equal(c.preLayerNorm, false);
  assert.equal(c.finalLayerNorm, false);
  const b = tokenBytes(c, { position: 0 });
  assert.equal(b.lmHead, 50272 * 512 * 2);
  assert.equal(b.total - b.kv, (parameterCount(c) - 2050 * 1024 + 1024 + 512) * 2);
  assert.throws(() => shapeConfig('opt-175b'), /unknown shape "opt-175b"/);
});

test('the aligned table has equal-width lines', () => {
  const row = { shape: 'opt-6.7b', backend: 'webgpu', sparsity: 'mlp', selector: 'fixed', mlp_density: 0.1, prefill_ms: 12.3,
    ms_per_token: 4.5, tokens_per_s: 222, bytes_per_token: 6e9, gbps: 1333, floor_ms: 2, pct_of_floor: 44 } as BenchRow;
  const lines = benchTable([row, { ...row, shape: 'opt-13b', sparsity: 'dense', floor_ms: null, pct_of_floor: null }]).trimEnd().split('\n');
  assert.equal(lines.length, 4);
  assert.equal(new Set(lines.map((l) => l.length)).size, 1);
  assert.match(lines[2], /mlp 0\.1 fixed/);
  // With the GPU step's fields: its percent of the floor is its own rate against the card's.
  const g = { ...row, card_gbps: 4000, ...gpuStepFields({ msPerToken: 4.2, gpuMsPerToken: 4, dispatchesPerToken: 161 }, 6e9 - 4e8, 4000) };
  const gl = benchTable([g]).trimEnd().split('\n');
  assert.match(gl[0], /GPU ms\s+GPU % floor\s+dispatches/);
  assert.match(gl[2], /4\.000\s+35\.0\s+161/);
});

test('the GPU step (no LM head) counts its own bytes: its percent of the floor is not floor_ms / gpu_ms', () => {
  // 6 GB a token of which 0.4 GB is the LM head, which timeDecodeSteps leaves out; 4 ms on a 4000 GB/s card.
  const f = gpuStepFields({ msPerToken: 4.2, gpuMsPerToken: 4, dispatchesPerToken: 161 }, 6e9 - 4e8, 4000);
  assert.equal(f.gpu_gbps, 1400);
  assert.equal(f.gpu_pct_of_floor, 35);   // (5.6 GB / 4 ms) / 4000 GB/s, not (6 GB / 4000 GB/s) / 4 ms = 37.5 %
  assert.equal(f.dispatches_per_token, 161);
  const none = gpuStepFields({ msPerToken: 4.2, dispatchesPerToken: 161 }, 5.6e9, 4000);
  assert.equal(none.gpu_ms_per_token, null);
  assert.equal(none.gpu_pct_of_floor, null);
  assert.equal(gpuStepFields({ msPerToken: 4.2, gpuMsPerToken: 4, dispatchesPerToken: 1 }, 5.6e9, null).gpu_pct_of_floor, null);
});

const HF = join(ROOT, 'bench', 'hf_baseline.py');
const hasPython = spawnSync('python3', ['--version']).status === 0;

test('bench/hf_baseline.py parses, and its shape table matches shapes.ts', { skip: !hasPython && 'no python3' }, () => {
  const src = readFileSync(HF, 'utf8');
  const r = spawnSync('python3', ['-c', 'import ast, sys; ast.parse(sys.stdin.read())'], { input: src, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const out = spawnSync('python3', [HF, '--print-config'], { encoding: 'utf8' });
  assert.equal(out.status, 0, out.stderr);
  const all = JSON.parse(out.stdout) as Record<string, Record<string, unknown>>;
  assert.deepEqual(Object.keys(all), SHAPE_NAMES);
  for (const name of SHAPE_NAMES) {
    const ts = shapeJson(name);
    for (const [k, v] of Object.entries(all[name])) assert.deepEqual(v, ts[k], `${name}.${k}`);
  }
  // Argument errors are argparse's (exit 2), before any import of torch.
  const bad = spawnSync('python3', [HF, '--shape', 'opt-9b'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /invalid choice/);
  assert.equal(spawnSync('python3', [HF, '--shape', 'opt-125m', '--gen', '0'], { encoding: 'utf8' }).status, 2);
  assert.equal(spawnSync('python3', [HF, '--prompt-len', '4'], { encoding: 'utf8' }).status, 2); // --shape or --model required
});

test('bench/hf_baseline.py without torch prints a "skipped" JSON line and exits 3', { skip: (!hasPython || spawnSync('python3', ['-c', 'import torch']).status === 0) && 'torch present or no python3' }, () => {
  const r = spawnSync('python3', [HF, '--shape', 'opt-125m', '--gen', '2'], { encoding: 'utf8' });
  assert.equal(r.status, 3);
  assert.match((JSON.parse(r.stdout.trim()) as { error: string }).error, /^skipped: /);
});

test('device memory estimate: opt-30b fits an H100 (78 GiB) dense and sparse (fc2 in one layout); opt-66b an H200 (139 GiB) dense, within 5 GiB sparse; not an H100', async () => {
  const { deviceBytesNeeded } = await import('../src/bench/run.js');
  const GiB = 2 ** 30;
  const need = (n: string, m: 'dense' | 'mlp', oracle = false) => deviceBytesNeeded(shapeConfig(n), m, oracle) / GiB;
  assert.ok(need('opt-30b', 'dense') < 77 && need('opt-30b', 'mlp') < 77);
  assert.ok(need('opt-66b', 'dense') < 134 && need('opt-66b', 'mlp') > 134 && need('opt-66b', 'mlp') < 139 && need('opt-66b', 'dense') > 78);
  // Sparse costs the predictors and one layer's fc2 (the in-place transpose's scratch), not a second fc2.
  const c = shapeConfig('opt-6.7b');
  assert.ok((need('opt-6.7b', 'mlp', true) - need('opt-6.7b', 'dense')) * GiB < 2 * c.ffn * c.hidden * 2);
  assert.ok(need('opt-6.7b', 'mlp') > need('opt-6.7b', 'mlp', true)); // predictors cost memory too
});

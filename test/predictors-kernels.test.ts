import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { adamUniform, adamwCpu, adamwWgsl, bceGradCpu, bceGradWgsl, colSumCpu, colSumWgsl, matmulCpu, matmulWgsl, MM_TILE, type MatmulVariant } from '../src/sparsity/train-gpu/kernels.js';
import { randomArray, rng } from './helpers.js';
import { NO_GPU, runKernel, testGpu } from './predictors-gpu-helpers.js';

after(async () => { (await testGpu().catch(() => null))?.device.destroy(); });

function close(got: Float32Array, want: Float32Array, tol: number, what: string): void {
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= tol * (1 + Math.abs(want[i])))) assert.fail(`${what}: element ${i} is ${got[i]}, want ${want[i]}`);
  }
}

/** Plain triple loop: checks the CPU twin, which then checks the WGSL. */
function naive(a: Float32Array, b: Float32Array, M: number, N: number, K: number, v: MatmulVariant, bias?: Float32Array): Float32Array {
  const c = new Float32Array(M * N);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
    let s = bias ? bias[n] : 0;
    for (let k = 0; k < K; k++) s += (v.transA ? a[k * M + m] : a[m * K + k]) * (v.transB ? b[n * K + k] : b[k * N + n]);
    c[m * N + n] = s;
  }
  return c;
}

const VARIANTS: MatmulVariant[] = [
  { transA: false, transB: false, bias: false }, { transA: false, transB: true, bias: false },
  { transA: true, transB: false, bias: false }, { transA: false, transB: true, bias: true }, { transA: true, transB: true, bias: true },
];
const SHAPES = [[67, 45, 33], [5, 130, 70], [1, 1, 1]];

test('matmul CPU twin matches a triple loop on odd shapes, all transposes', () => {
  const r = rng(1);
  for (const v of VARIANTS) for (const [M, N, K] of SHAPES) {
    const a = randomArray(M * K, r), b = randomArray(K * N, r), bias = v.bias ? randomArray(N, r) : undefined;
    close(matmulCpu(a, b, M, N, K, v, bias), naive(a, b, M, N, K, v, bias), 1e-5, `${JSON.stringify(v)} ${M}x${N}x${K}`);
  }
});

test('matmul WGSL matches its CPU twin on odd shapes, all transposes', async (t) => {
  const g = await testGpu();
  if (!g) return t.skip(NO_GPU);
  const r = rng(2);
  for (const v of VARIANTS) for (const [M, N, K] of SHAPES) {
    const a = randomArray(M * K, r), b = randomArray(K * N, r), bias = v.bias ? randomArray(N, r) : undefined;
    const inputs: (Float32Array | Uint32Array)[] = [a, b, new Float32Array(M * N), new Uint32Array([M, N, K, 0])];
    if (bias) inputs.push(bias);
    const got = await runKernel(g, matmulWgsl(v), inputs, [3], 2, [Math.ceil(N / MM_TILE), Math.ceil(M / MM_TILE)]);
    close(got.subarray(0, M * N), matmulCpu(a, b, M, N, K, v, bias), 1e-4, `${JSON.stringify(v)} ${M}x${N}x${K}`);
  }
});

function bceCase(rows: number, f: number, seed: number) {
  const r = rng(seed), words = Math.ceil(f / 32);
  const s = randomArray(rows * f, r, 30); // large logits exercise the stable softplus
  const labels = new Uint32Array(rows * words);
  for (let i = 0; i < rows; i++) for (let j = 0; j < f; j++) if (r() < 0.2) labels[i * words + (j >>> 5)] |= 1 << (j & 31);
  return { s, labels, words };
}

test('BCE gradient: CPU twin matches finite differences of its loss', () => {
  const rows = 3, f = 37, { s, labels } = bceCase(rows, f, 3);
  s.forEach((v, i) => (s[i] = v / 10));
  const g = new Float32Array(rows * f);
  bceGradCpu(s, labels, rows, f, 4, 1, g);
  for (const i of [0, 5, 40, 100]) {
    const h = 1e-2, sp = s.slice(), sm = s.slice();
    sp[i] += h; sm[i] -= h;
    const tmp = new Float32Array(rows * f);
    const num = (bceGradCpu(sp, labels, rows, f, 4, 1, tmp) - bceGradCpu(sm, labels, rows, f, 4, 1, tmp)) / (2 * h);
    assert.ok(Math.abs(num - g[i]) < 2e-2 * (1 + Math.abs(num)), `element ${i}: numeric ${num}, analytic ${g[i]}`);
  }
});

test('BCE gradient WGSL matches its CPU twin (odd f, bit-packed labels)', async (t) => {
  const gpu = await testGpu();
  if (!gpu) return t.skip(NO_GPU);
  for (const [rows, f] of [[7, 37], [3, 1000], [1, 33]]) {
    const { s, labels, words } = bceCase(rows, f, rows * f);
    const want = new Float32Array(rows * f);
    const lossWant = bceGradCpu(s, labels, rows, f, 7.5, 0.25, want);
    const u = new ArrayBuffer(32);
    new Uint32Array(u, 0, 4).set([rows, f, words, 0]);
    new Float32Array(u, 16, 2).set([7.5, 0.25]);
    const inputs = [s, labels, new Float32Array(rows * f), new Float32Array(rows), u];
    close((await runKernel(gpu, bceGradWgsl(), inputs, [4], 2, [rows, 1])).subarray(0, rows * f), want, 1e-5, `grad ${rows}x${f}`);
    const loss = (await runKernel(gpu, bceGradWgsl(), inputs, [4], 3, [rows, 1])).subarray(0, rows).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(loss - lossWant) < 1e-4 * lossWant, `loss ${loss} vs ${lossWant}`);
  }
});

test('column sum and AdamW WGSL match their CPU twins', async (t) => {
  const gpu = await testGpu();
  if (!gpu) return t.skip(NO_GPU);
  const r = rng(5);
  const M = 13, N = 301, g = randomArray(M * N, r);
  close((await runKernel(gpu, colSumWgsl(), [g, new Float32Array(N), new Uint32Array([M, N, 0, 0])], [2], 1, [2, 1])).subarray(0, N), colSumCpu(g, M, N), 1e-5, 'colsum');
  const n = 517, w = randomArray(n, r), gr = randomArray(n, r), m = randomArray(n, r, 0.1), v = randomArray(n, r, 0.1).map(Math.abs);
  const a = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 3 };
  const got = await runKernel(gpu, adamwWgsl(), [w, gr, m, v, adamUniform(a, n)], [4], 0, [Math.ceil(n / 256), 1]);
  const ww = w.slice(), mm = m.slice(), vv = v.slice();
  adamwCpu(ww, gr, mm, vv, a);
  close(got.subarray(0, n), ww, 1e-5, 'adamw');
});

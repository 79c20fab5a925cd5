import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DATA, ROOT, oneLineError, runCli } from './helpers.js';

const MODEL = join(ROOT, 'models', 'opt-gutenberg-5m');
const dejavu = (...args: string[]) => runCli('train-predictors', '--model', MODEL, '--backend', 'cpu', ...args);

const dir = mkdtempSync(join(tmpdir(), 'dejavu-train-'));
const text = join(dir, 'text.txt');
writeFileSync(text, 'x');

test('train-predictors: an unknown --init is a one-line error', () => {
  oneLineError(dejavu('--data', text, '--out', join(dir, 'o1'), '--init', 'svd'), /^dejavu: --init must be lowrank or random \(got svd\)$/m);
});

test('train-predictors: --epochs 0 with random weights is a one-line error', () => {
  oneLineError(dejavu('--data', text, '--out', join(dir, 'o2'), '--init', 'random', '--epochs', '0'), /--epochs 0 keeps the initial weights/);
});

test('train-predictors: the default low-rank predictors of the 5m model, end to end on the CPU', (t) => {
  const calib = join(DATA, 'gutenberg-calib.txt');
  if (!existsSync(calib)) return t.skip(`${calib} not found`);
  const out = join(dir, 'pred');
  const r = dejavu('--data', calib, '--out', out, '--tokens', '1024', '--window', '128', '--rank', '32');
  assert.equal(r.code, 0, r.stderr);
  const m = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
  assert.equal(m.init, 'lowrank');
  assert.equal(m.input, 'attn_io'); // the default input since the twenty-fourth session
  assert.equal(m.rank, 32);
  assert.deepEqual(m.epochs, m.layers.map(() => 0)); // no BCE epochs by default from the low-rank init
  assert.equal(m.layers.length, 4);
  for (const l of m.layers) assert.ok(l.recall >= 0.95 || l.dense, `layer ${l.layer}: recall ${l.recall}`);
  assert.ok(existsSync(join(out, 'predictors.safetensors')));
  assert.match(r.stdout, /saved: input attn_io, rank 32, target recall 0\.95/);
  // Every layer also has its block rule, calibrated to the same recall.
  for (const l of m.layers) {
    assert.ok(Number.isInteger(l.block.cap) && l.block.cap >= 1 && l.block.cap <= 64, `layer ${l.layer}: cap ${l.block.cap}`);
    assert.ok(l.block.recall >= 0.95 && l.block.density > 0 && l.block.density <= 1, JSON.stringify(l.block));
  }
  // eval runs them with the block rule by default and reports the measured density; a bad
  // --selection is a one-line error.
  const val = join(DATA, 'gutenberg-val.txt');
  const ev = (...a: string[]) => runCli('eval', '--model', MODEL, '--backend', 'cpu', '--task', 'ppl', '--data', val, '--limit', '256', '--window', '128', '--predictors', out, '--json', ...a);
  const sparse = m.layers.filter((l: { dense: boolean }) => !l.dense);
  for (const [sel, expect] of [['auto', 'block'], ['topk', 'topk']] as const) {
    const e = ev('--selection', sel);
    assert.equal(e.code, 0, e.stderr);
    const density = JSON.parse(e.stdout).mlp_density;
    if (expect === 'topk') assert.equal(density, Math.round(1e6 * sparse.reduce((a: number, l: { k: number }) => a + l.k / 1024, 0) / sparse.length) / 1e6);
    else assert.ok(density > 0 && density < 1 && Math.abs(density - sparse.reduce((a: number, l: { block: { density: number } }) => a + l.block.density, 0) / sparse.length) < 0.15, `measured ${density}`);
  }
  oneLineError(ev('--selection', 'best'), /^dejavu: --selection must be auto, block or topk \(got best\)$/m);
});

test('train-predictors --input attn_io: the attention input and output side by side (A of 2d columns), a collection without o refused, eval runs them (5m, CPU)', (t) => {
  const calib = join(DATA, 'gutenberg-calib.txt');
  if (!existsSync(calib)) return t.skip(`${calib} not found`);
  const work = join(dir, 'work-io'), out = join(dir, 'pred-io');
  const small = ['--data', calib, '--tokens', '1024', '--window', '128', '--rank', '32', '--work', work];
  // A collection made for mlp_in has no attention outputs: attn_io on it is a one-line error.
  assert.equal(dejavu(...small, '--out', join(dir, 'pred-mlp'), '--input', 'mlp_in').code, 0);
  // Reusing it for other options than it was collected with is a one-line error that leaves it as it was.
  const meta = readFileSync(join(work, 'meta.json'), 'utf8');
  oneLineError(dejavu(...small.slice(0, 4), '--window', '256', ...small.slice(6), '--out', join(dir, 'pred-w')),
    /^dejavu: collected data in .*work-io was collected in windows of 128 tokens, not 256: delete it or pick another --work folder$/m);
  oneLineError(dejavu('--data', calib, '--tokens', '2048', ...small.slice(4), '--out', join(dir, 'pred-t')), /was collected with --tokens 1024, not 2048: delete it/);
  assert.equal(readFileSync(join(work, 'meta.json'), 'utf8'), meta);
  oneLineError(dejavu(...small, '--out', out, '--input', 'attn_io'), /has no attention outputs \(attn_io predictors read them\)/);
  const r = dejavu(...small.slice(0, -2), '--out', out, '--input', 'attn_io', '--threads', '3');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /fitting attn_io predictors on 3 threads/);
  // The fits in worker threads are the inline ones, bit for bit (same collection, --threads 1).
  const inline = join(dir, 'pred-io-1'), r1 = dejavu(...small.slice(0, -2), '--out', inline, '--input', 'attn_io', '--threads', '1');
  assert.equal(r1.code, 0, r1.stderr);
  assert.doesNotMatch(r1.stderr, /threads/);
  assert.ok(readFileSync(join(inline, 'predictors.safetensors')).equals(readFileSync(join(out, 'predictors.safetensors'))), 'threaded fits differ from inline ones');
  const m = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
  assert.equal(m.input, 'attn_io');
  assert.match(r.stdout, /saved: input attn_io, rank 32/);
  // The safetensors header: A is (32, 2 × 256).
  const st = readFileSync(join(out, 'predictors.safetensors')), n = Number(st.readBigUInt64LE(0));
  const header = JSON.parse(st.subarray(8, 8 + n).toString('utf8'));
  const sparse = m.layers.find((l: { dense: boolean }) => !l.dense);
  assert.deepEqual(header[`layers.${sparse.layer}.A`].shape, [32, 512]);
  const e = runCli('eval', '--model', MODEL, '--backend', 'cpu', '--task', 'ppl', '--data', join(DATA, 'gutenberg-val.txt'), '--limit', '256', '--window', '128', '--predictors', out, '--json');
  assert.equal(e.code, 0, e.stderr);
  const density = JSON.parse(e.stdout).mlp_density;
  assert.ok(density > 0 && density < 1, `measured density ${density}`);
  oneLineError(dejavu('--data', calib, '--out', out, '--input', 'attn_out'), /^dejavu: --input must be attn_in, mlp_in, attn_io or both \(got attn_out\)$/m);
});

test('a collection is reused only for its own model, window and tokens cap (reuseMismatch); older ones by shape', async () => {
  const { reuseMismatch } = await import('../src/sparsity/collect.js');
  const { checkpoint, MODELS } = await import('./helpers.js');
  const ck = await checkpoint(MODELS['5m']), c = ck.config;
  const meta = { layers: c.layers, d: c.hidden, f: c.ffn, heads: c.heads, rows: { train: 10, val: 2 }, tokens: 1000, requested_tokens: 1024, model_fingerprint: ck.fingerprint, window: 128, sparsity: [] };
  assert.equal(reuseMismatch(meta, ck, { tokens: 1024, window: 128 }), null);
  assert.equal(reuseMismatch({ ...meta, model_fingerprint: 'another' }, ck, { tokens: 1024, window: 128 }), 'is from another model');
  assert.equal(reuseMismatch({ ...meta, d: 64 }, ck, { tokens: 1024, window: 128 }), 'is for another model shape');
  assert.equal(reuseMismatch({ ...meta, window: c.maxPositions }, ck, { tokens: 1024 }), null);   // no --window: the context
  assert.equal(reuseMismatch(meta, ck, { tokens: 1024, window: 64 }), 'was collected in windows of 128 tokens, not 64');
  assert.equal(reuseMismatch(meta, ck, { tokens: 4096, window: 128 }), 'was collected with --tokens 1024, not 4096');
  const { requested_tokens: _r, model_fingerprint: _f, ...older } = meta;
  assert.equal(reuseMismatch(older, ck, { tokens: 4096, window: 128 }), null);
});

test('fitThreads: the cores, at most the layers, and what half the free memory holds at one layer\'s rows', async () => {
  const { fitThreads } = await import('../src/sparsity/fit-pool.js');
  const meta = { layers: 8, d: 384, f: 1536, heads: 12, rows: { train: 187392, val: 9600 }, tokens: 196992, window: 512, sparsity: [] };
  assert.equal(fitThreads(meta, 'mlp_in', 1e12, 16), 8);                 // the layers
  assert.equal(fitThreads(meta, 'mlp_in', 1e12, 2), 2);                  // the cores
  const perIo = 187392 * (768 + 384) * 6;                                // attn_io: x (2d) and its target (d)
  assert.equal(fitThreads(meta, 'attn_io', 2 * 3 * perIo + 1, 16), 3);   // memory
  assert.equal(fitThreads(meta, 'attn_io', 1e6, 16), 1);                 // never below one
});

test('FitPool: a fit that fails in a worker rejects with its one-line message (a DejavuError stays one), and the pool still fits and closes', async () => {
  const { FitPool } = await import('../src/sparsity/fit-pool.js');
  const { fileOf } = await import('../src/sparsity/collect.js');
  const { DejavuError } = await import('../src/util/errors.js');
  const work = mkdtempSync(join(tmpdir(), 'dejavu-pool-'));
  const meta = { layers: 1, d: 4, f: 8, heads: 2, rows: { train: 2, val: 0 }, tokens: 2, window: 2, sparsity: [0] };
  writeFileSync(fileOf(work, 0, 'train', 'labels'), new Uint8Array(8));
  const W1 = new Float32Array(32).map((_, i) => Math.sin(i)), job = { dir: work, meta, layer: 0, rank: 2, W1, b1: null };
  const pool = new FitPool(2);
  try {
    // attn_io needs attention's outputs, which this collection lacks.
    await assert.rejects(pool.fit({ ...job, input: 'attn_io' }), (e: Error) => e instanceof DejavuError && /has no attention outputs/.test(e.message));
    // mlp_in reads its rows: two of d = 4 as f16.
    writeFileSync(fileOf(work, 0, 'train', 'mlp_in'), new Uint8Array(new Uint16Array([0x3c00, 0, 0x4000, 0x3c00, 0xbc00, 0x3800, 0, 0x4200]).buffer));
    const p = await pool.fit({ ...job, input: 'mlp_in' });
    assert.equal(p.rank, 2);
    assert.equal(p.A.length, 8);
    assert.ok([...p.A, ...p.B].every(Number.isFinite));
  } finally { await pool.close(); }
});

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadPredictors, MANIFEST, type PredictorManifest } from '../src/sparsity/predictors-io.js';
import { savePredictors } from '../src/sparsity/predictors-save.js';
import type { LowRankPredictor } from '../src/sparsity/policy.js';
import { DejavuError } from '../src/util/errors.js';
import { FetchFileSource } from '../src/model/fetch-source.js';
import { serveStatic } from '../examples/browser/serve.js';
import { checkpoint, MODELS, randomArray, reference, rng } from './helpers.js';
import { gpuOrSkip } from './gpu.js';
import { CpuPool } from '../src/backend/cpu/pool.js';
import { createWebGpuRunner } from '../src/backend/webgpu/runner.js';
import type { SparsityPolicy } from '../src/sparsity/policy.js';

async function saved() {
  const ck = await checkpoint(MODELS['5m']);
  const { layers, hidden: d, ffn: f } = ck.config;
  const r = rng(3), rank = 8;
  const preds: LowRankPredictor[] = Array.from({ length: layers }, () => ({ rank, A: randomArray(rank * d, r), B: randomArray(f * rank, r), bias: randomArray(f, r) }));
  const manifest: PredictorManifest = {
    format: 'dejavu-predictors/1', model_fingerprint: ck.fingerprint, rank, input: 'attn_in', target_recall: 0.9, tokens: 1000, d, f,
    layers: preds.map((_, l) => ({ layer: l, dense: l === 0, k: 16 * (l + 1), recall: 0.9, mass_recall: 0.95, precision: 0.3, density: (16 * (l + 1)) / f })),
  };
  const dir = mkdtempSync(join(tmpdir(), 'dejavu-pred-'));
  savePredictors(dir, manifest, preds);
  return { ck, dir, preds, manifest, f };
}

test('save -> load round trip gives the same policy; --mlp-density overrides K on sparse layers only', async () => {
  const { ck, dir, preds, manifest, f } = await saved();
  const set = await loadPredictors(dir, ck);
  assert.deepEqual(set.manifest, manifest);
  const p = set.policy();
  assert.equal(p.input, 'attn_in');
  assert.equal(p.mlp[0], null);
  p.mlp.forEach((lp, l) => {
    if (l === 0) return;
    assert.ok(lp && lp.selector.kind === 'predictor');
    assert.equal(lp.k, manifest.layers[l].k);
    assert.deepEqual(lp.selector.predictor.A, preds[l].A);
    assert.deepEqual(lp.selector.predictor.B, preds[l].B);
    assert.deepEqual(lp.selector.predictor.bias, preds[l].bias);
  });
  const q = set.policy({ mlpDensity: 0.1 });
  assert.equal(q.mlp[0], null);
  for (const lp of q.mlp.slice(1)) assert.equal(lp!.k, Math.ceil((0.1 * f) / 16) * 16);
});

test("loaded predictors live in shared memory: a CPU runner's threads take them as they are, and the WebGPU runner (which copies such views for Dawn) gives the logits of plain arrays", async (t) => {
  const { ck, dir, preds } = await saved();
  const p = (await loadPredictors(dir, ck)).policy();
  const lp = p.mlp[1]!;
  assert.ok(lp.selector.kind === 'predictor');
  const pred = lp.selector.predictor;
  for (const a of [pred.A, pred.B, pred.bias]) assert.ok(a.buffer instanceof SharedArrayBuffer, 'in a SharedArrayBuffer');
  const pool = new CpuPool(2);
  try {
    assert.equal(pool.share(pred.A), pred.A, 'shared as it is, not copied');
    const plain = Float32Array.from(pred.A);
    assert.notEqual(pool.share(plain), plain, 'a plain array is copied');
  } finally { pool.close(); }
  // The same policy with plain arrays, on WebGPU: the same logits (a shared view reaching Dawn's writeBuffer would crash the process).
  const gpu = await gpuOrSkip(t);
  if (!gpu) return;
  const plainPolicy: SparsityPolicy = { ...p, mlp: p.mlp.map((m, l) => m && m.selector.kind === 'predictor' ? { ...m, selector: { ...m.selector, predictor: preds[l] } } : m) };
  const ids = reference(MODELS['5m'])[0].input_ids;
  const out: Float32Array[] = [];
  try {
    for (const policy of [p, plainPolicy]) {
      const g = await createWebGpuRunner(ck.config, ck.weights, { gpu });
      try { g.setSparsity(policy); out.push(await g.forward(ids)); } finally { g.dispose(); }
    }
  } finally { gpu.device.destroy(); }
  assert.deepEqual(Array.from(out[0]), Array.from(out[1]));
});

test('predictors for another model are refused in one line naming both fingerprints', async () => {
  const { ck, dir } = await saved();
  const m = JSON.parse(readFileSync(join(dir, MANIFEST), 'utf8'));
  m.model_fingerprint = 'deadbeef';
  writeFileSync(join(dir, MANIFEST), JSON.stringify(m));
  await assert.rejects(loadPredictors(dir, ck), (e: Error) => e instanceof DejavuError && e.message.includes('deadbeef') && e.message.includes(ck.fingerprint) && !e.message.includes('\n'));
});

test('missing or corrupt predictor files give one-line errors', async () => {
  const { ck, dir } = await saved();
  const oneLine = (re: RegExp) => (e: Error) => e instanceof DejavuError && re.test(e.message) && !e.message.includes('\n');
  await assert.rejects(loadPredictors(join(dir, 'nope'), ck), oneLine(/not found/));
  writeFileSync(join(dir, 'predictors.safetensors'), new Uint8Array(5));
  await assert.rejects(loadPredictors(dir, ck), oneLine(/safetensors/));
  writeFileSync(join(dir, MANIFEST), '{ not json');
  await assert.rejects(loadPredictors(dir, ck), oneLine(/not valid JSON/));
  const empty = mkdtempSync(join(tmpdir(), 'dejavu-pred-'));
  await assert.rejects(loadPredictors(empty, ck), oneLine(/missing file manifest\.json/));
});

test('over HTTP through a FetchFileSource (the browser path): the same set, the same one-line errors', async () => {
  const { ck, dir, manifest } = await saved();
  const oneLine = (re: RegExp) => (e: Error) => e instanceof DejavuError && re.test(e.message) && !e.message.includes('\n');
  const server = await serveStatic(dir, 0);
  try {
    const set = await loadPredictors(new FetchFileSource(server.url), ck);
    assert.deepEqual(set.manifest, manifest);
    assert.deepEqual(set.policy(), (await loadPredictors(dir, ck)).policy());
    await assert.rejects(loadPredictors(new FetchFileSource(`${server.url}/nope`), ck), oneLine(/^missing file manifest\.json in http:\/\/127\.0\.0\.1:\d+\/nope \(not a predictors folder/));
    const m = JSON.parse(readFileSync(join(dir, MANIFEST), 'utf8'));
    m.model_fingerprint = 'deadbeef';
    writeFileSync(join(dir, MANIFEST), JSON.stringify(m));
    await assert.rejects(loadPredictors(new FetchFileSource(server.url), ck), oneLine(/deadbeef/));
    writeFileSync(join(dir, MANIFEST), '{ not json');
    await assert.rejects(loadPredictors(new FetchFileSource(server.url), ck), oneLine(/not valid JSON/));
  } finally {
    await server.close();
  }
});

test('the block rule: auto picks it where every sparse layer is calibrated; topk, --mlp-density, old files and malformed rules', async () => {
  const { ck, dir, manifest, f } = await saved();
  const nb = Math.ceil(f / 64);
  // An older manifest (no block entries): auto is top-K, block without --mlp-density is a one-line error.
  let set = await loadPredictors(dir, ck);
  assert.ok(set.policy().mlp.slice(1).every((lp) => lp!.selector.kind === 'predictor' && !lp!.selector.block));
  assert.throws(() => set.policy({ selection: 'block' }), (e: Error) => e instanceof DejavuError && /no block-rule calibration/.test(e.message));
  const b = set.policy({ selection: 'block', mlpDensity: 0.1 });
  for (const lp of b.mlp.slice(1)) {
    assert.ok(lp!.selector.kind === 'predictor');
    assert.deepEqual(lp!.selector.block, { cap: 7, tau: null }); // ceil(0.1 * 64)
    assert.equal(lp!.k, 7 * nb);
  }
  // Calibrated: auto runs the rule with the manifest's cap, threshold and density; topk keeps K.
  const m = structuredClone(manifest);
  m.layers.forEach((L, l) => { L.block = { cap: 12, tau: 0.25 * l, density: 0.05 * l, recall: 0.95, mass_recall: 0.97 }; });
  writeFileSync(join(dir, MANIFEST), JSON.stringify(m));
  set = await loadPredictors(dir, ck);
  set.policy().mlp.forEach((lp, l) => {
    if (l === 0) return assert.equal(lp, null);
    assert.ok(lp!.selector.kind === 'predictor');
    assert.deepEqual(lp!.selector.block, { cap: 12, tau: 0.25 * l });
    assert.equal(lp!.k, 12 * nb);
    assert.equal(lp!.density, 0.05 * l);
  });
  set.policy({ selection: 'topk' }).mlp.slice(1).forEach((lp, i) => { assert.ok(lp!.selector.kind === 'predictor' && !lp!.selector.block); assert.equal(lp!.k, manifest.layers[i + 1].k); });
  assert.throws(() => set.policy({ selection: 'best' as never }), /--selection must be/);
  // A malformed rule is refused at load, in one line.
  m.layers[2].block = { cap: 65, tau: 0, density: 0.1, recall: 1, mass_recall: 1 };
  writeFileSync(join(dir, MANIFEST), JSON.stringify(m));
  await assert.rejects(loadPredictors(dir, ck), (e: Error) => e instanceof DejavuError && /layer entry 2 has a malformed block rule/.test(e.message) && !e.message.includes('\n'));
});

test('attn_io predictors (A reads attn_in and o side by side: 2d columns) round-trip; an A of the other width is refused in one line', async () => {
  const ck = await checkpoint(MODELS['5m']);
  const { layers, hidden: d, ffn: f } = ck.config;
  const r = rng(5), rank = 6;
  const preds: LowRankPredictor[] = Array.from({ length: layers }, () => ({ rank, A: randomArray(rank * 2 * d, r), B: randomArray(f * rank, r), bias: randomArray(f, r) }));
  const manifest: PredictorManifest = {
    format: 'dejavu-predictors/1', model_fingerprint: ck.fingerprint, rank, input: 'attn_io', target_recall: 0.9, tokens: 1000, d, f,
    layers: preds.map((_, l) => ({ layer: l, dense: l === 0, k: 32, recall: 0.9, mass_recall: 0.95, precision: 0.3, density: 32 / f })),
  };
  const dir = mkdtempSync(join(tmpdir(), 'dejavu-pred-'));
  savePredictors(dir, manifest, preds);
  const p = (await loadPredictors(dir, ck)).policy();
  assert.equal(p.input, 'attn_io');
  const lp = p.mlp[2]!;
  assert.ok(lp.selector.kind === 'predictor');
  assert.deepEqual(lp.selector.predictor.A, preds[2].A);
  // The same tensors under a manifest that says attn_in (d columns): the shape check names the tensor.
  writeFileSync(join(dir, MANIFEST), JSON.stringify({ ...manifest, input: 'attn_in' }));
  await assert.rejects(loadPredictors(dir, ck), (e: Error) => e instanceof DejavuError && /layers\.1\.A is F32 \[6,512\], expected F32 \[6,256\]/.test(e.message) && !e.message.includes('\n'));
  writeFileSync(join(dir, MANIFEST), JSON.stringify({ ...manifest, input: 'attn_out' }));
  await assert.rejects(loadPredictors(dir, ck), /not a dejavu predictor manifest/);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { loadModel } from '../src/engine/model.js';
import { sample, seededRandom, topIds } from '../src/engine/sampler.js';
import { argmax } from '../src/backend/cpu/kernels.js';
import { greedyContinue, MODELS, ROOT } from './helpers.js';
import { tinyConfig, writeTinyModel } from './tiny-model.js';
import { randomPredictorSet } from './predictor-sets.js';
import { loadPredictors } from '../src/sparsity/predictors-io.js';

async function collect(gen: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const p of gen) out.push(p);
  return out;
}

test('streamed pieces add up to the text; greedy is deterministic; seeds reproduce samples', async () => {
  const m = await loadModel(MODELS['5m'], { backend: 'cpu' });
  const g1 = m.generate('The old man looked at the sea and said', { maxTokens: 12, temperature: 0 });
  const pieces = await collect(g1);
  const r1 = await g1.result;
  assert.equal(pieces.join(''), r1.text);
  assert.equal(r1.generatedIds.length, 12);
  assert.equal(r1.text, m.tokenizer.decode(r1.generatedIds));
  const s1 = m.generate('Once upon a time', { maxTokens: 10, temperature: 0.9, topK: 40, topP: 0.95, seed: 7 });
  await collect(s1);
  const s2 = m.generate('Once upon a time', { maxTokens: 10, temperature: 0.9, topK: 40, topP: 0.95, seed: 7 });
  await collect(s2);
  assert.deepEqual((await s1.result).generatedIds, (await s2.result).generatedIds);
  m.dispose();
});

test('stop strings end generation and are not returned', async () => {
  const m = await loadModel(MODELS['5m'], { backend: 'cpu' });
  const full = m.generate('It was a dark and stormy night, and', { maxTokens: 24, temperature: 0 });
  await collect(full);
  const text = (await full.result).text; // " the sun was shining ..." (greedy)
  const stop = text.slice(10, 14);
  const g = m.generate('It was a dark and stormy night, and', { maxTokens: 24, temperature: 0, stop: [stop] });
  const pieces = await collect(g);
  const r = await g.result;
  assert.equal(r.finishReason, 'stop');
  assert.equal(r.text, text.slice(0, text.indexOf(stop)));
  assert.equal(pieces.join(''), r.text);
  m.dispose();
});

test('greedy generate (chained decodeGreedy) gives the per-step loop\'s ids; an early stop leaves position and KV as a fresh run', async () => {
  const m = await loadModel(MODELS['5m'], { backend: 'cpu' });
  const r = m.runner, prompt = 'The old man looked at the sea and said';
  const g = m.generate(prompt, { maxTokens: 12, temperature: 0 });
  await collect(g);
  const ids = m.tokenizer.encode(prompt);
  assert.equal(r.position, ids.length + 11, 'the last token is not fed');
  r.reset();
  assert.deepEqual((await g.result).generatedIds, await greedyContinue(r, await r.forward(ids), 12));
  // top-k 1 is greedy too, whatever the temperature.
  const k1 = m.generate(prompt, { maxTokens: 12, temperature: 0.7, topK: 1 });
  await collect(k1);
  assert.deepEqual((await k1.result).generatedIds, (await g.result).generatedIds);

  r.reset();
  const first = argmax(await r.forward(ids));
  let n = 0;
  const got = await r.decodeGreedy(first, 10, () => ++n < 3);
  assert.deepEqual(got, (await g.result).generatedIds.slice(1, 4));
  assert.equal(r.position, ids.length + 3);
  const after = await r.forward([got[2]]);
  r.reset();
  await r.forward(ids);
  for (const id of [first, got[0], got[1]]) await r.forward([id]);
  assert.deepEqual(after, await r.forward([got[2]]));
  m.dispose();
});

test('sampler: top-k 1 is argmax, top-p keeps the nucleus', () => {
  const logits = Float32Array.from([0, 5, 1, 4.9, -2]);
  const r = seededRandom(1);
  for (let i = 0; i < 20; i++) assert.equal(sample(logits, { temperature: 1, topK: 1 }, r), 1);
  const seen = new Set<number>();
  for (let i = 0; i < 200; i++) seen.add(sample(logits, { temperature: 1, topP: 0.9 }, r));
  assert.deepEqual([...seen].sort(), [1, 3]);
  assert.equal(sample(logits, { temperature: 0 }, r), 1);
});

test('sampler: top-k by one-pass selection gives a stable sort\'s first k (ties to the lower id), and the same draws', () => {
  const r = seededRandom(3);
  for (const V of [7, 1000, 50272]) for (const k of [1, 2, 5, 40, 99]) {
    if (k > V) continue;
    // Values on a coarse grid: many ties.
    const logits = Float32Array.from({ length: V }, () => Math.round((r() - 0.5) * 40) / 4);
    const sorted = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]).slice(0, k);
    assert.deepEqual(topIds(logits, k), sorted, `V=${V} k=${k}`);
  }
  // NaN is never a candidate; a row of NaN falls back to argmax's rule (id 0).
  assert.deepEqual(topIds(Float32Array.from([3, NaN, 1, 5, 9, 7]), 2), [4, 5]);
  assert.equal(sample(new Float32Array(100).fill(NaN), { temperature: 1, topK: 3 }, r), 0);
  // The draws equal those of the full sort's candidates (the sampler before the selection).
  const logits = Float32Array.from({ length: 5000 }, (_, i) => Math.sin(i * 0.37) * 3);
  const ref = (o: { temperature: number; topK: number; topP?: number }, random: () => number) => {
    const idx = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]).slice(0, o.topK);
    const p = idx.map((i) => Math.exp((logits[i] - logits[idx[0]]) / o.temperature));
    const sum = p.reduce((a, b) => a + b, 0);
    let n = p.length, c = 0;
    if (o.topP !== undefined) for (n = 0; n < p.length; ) { c += p[n++] / sum; if (c >= o.topP) break; }
    let x = random() * p.slice(0, n).reduce((a, b) => a + b / sum, 0);
    for (let i = 0; i < n; i++) { x -= p[i] / sum; if (x <= 0) return idx[i]; }
    return idx[n - 1];
  };
  for (const o of [{ temperature: 1, topK: 40 }, { temperature: 0.6, topK: 50, topP: 0.9 }]) {
    const a = seededRandom(9), b = seededRandom(9);
    for (let i = 0; i < 300; i++) assert.equal(sample(logits, o, a), ref(o, b), JSON.stringify(o));
  }
  // Top-p alone sorts only the logits its nucleus can reach (nucleusIds): the same draws as the full
  // sort, on OPT's vocabulary with a peaked, a flat and a tied distribution.
  const r2 = seededRandom(5), V = 50272;
  const rows = [
    Float32Array.from({ length: V }, (_, i) => (i % 97 === 0 ? 8 : 0) + 3 * Math.sin(i * 1.3) * r2()),
    Float32Array.from({ length: V }, () => (r2() + r2() + r2() - 1.5) * 2),
    Float32Array.from({ length: V }, () => Math.round(r2() * 6)),
  ];
  for (const [j, row] of rows.entries()) for (const o of [{ temperature: 1, topP: 0.9 }, { temperature: 0.5, topP: 0.5 }, { temperature: 1.5, topP: 0.999 }]) {
    const refTopP = (random: () => number) => {
      const idx = Array.from(row.keys()).sort((a, b) => row[b] - row[a]);
      const p = idx.map((i) => Math.exp((row[i] - row[idx[0]]) / o.temperature));
      const sum = p.reduce((a, b) => a + b, 0);
      let n = 0, c = 0;
      for (; n < p.length; ) { c += p[n++] / sum; if (c >= o.topP) break; }
      let x = random() * p.slice(0, n).reduce((a, b) => a + b / sum, 0);
      for (let i = 0; i < n; i++) { x -= p[i] / sum; if (x <= 0) return idx[i]; }
      return idx[n - 1];
    };
    const a = seededRandom(21), b = seededRandom(21);
    for (let i = 0; i < 40; i++) assert.equal(sample(row, o, a), refTopP(b), `row ${j} ${JSON.stringify(o)} draw ${i}`);
  }
  // NaN logits: the full sort's path, no failure.
  assert.ok(Number.isInteger(sample(Float32Array.from([1, NaN, 2, 0.5]), { temperature: 1, topP: 0.9 }, r2)));
});

test('post-LayerNorm, project_in/out and an untied lm_head load and run', async () => {
  const dir = writeTinyModel(tinyConfig({ do_layer_norm_before: false, word_embed_proj_dim: 8, tie_word_embeddings: false }));
  const m = await loadModel(dir, { backend: 'cpu' });
  const logits = await m.runner.forward([2, 10, 20], { allLogits: true });
  assert.equal(logits.length, 3 * 8192);
  assert.ok(logits.every(Number.isFinite));
  m.dispose();
  rmSync(dir, { recursive: true });
});

test('dejavu generate --json prints ids, text and timings', () => {
  const out = execFileSync('node', [join(ROOT, 'dist', 'src', 'cli.js'), 'generate', '--backend', 'cpu', '--max-tokens', '5', '--json', 'Hello there'], { encoding: 'utf8' });
  const j = JSON.parse(out.trim().split('\n').pop()!);
  for (const k of ['prompt_ids', 'generated_ids', 'text', 'prefill_ms', 'decode_ms_per_token', 'backend']) assert.ok(k in j, k);
  assert.equal(j.backend, 'cpu');
  assert.equal(j.prompt_ids[0], 2);
  assert.equal(j.generated_ids.length, 5);
});

test('dejavu generate --predictors --sparse heads runs the trained head predictors in decode (CPU and the library agree)', async () => {
  const { dir } = await randomPredictorSet();
  const args = (sparse: string) => [join(ROOT, 'dist', 'src', 'cli.js'), 'generate', '--backend', 'cpu', '--max-tokens', '6', '--json', '--predictors', dir, '--sparse', sparse, '--head-density', '0.25', 'Hello there'];
  const heads = JSON.parse(execFileSync('node', args('heads'), { encoding: 'utf8' }).trim().split('\n').pop()!);
  assert.equal(heads.generated_ids.length, 6);
  // The same policy through the library gives the same greedy ids.
  const model = await loadModel(MODELS['5m'], { backend: 'cpu' });
  const set = await loadPredictors(dir, model.checkpoint);
  model.setSparsity(set.policy({ parts: ['heads'], headDensity: 0.25 }));
  const gen = model.generate('Hello there', { maxTokens: 6, temperature: 0 });
  await collect(gen);
  assert.deepEqual((await gen.result).generatedIds, heads.generated_ids);
  model.dispose();
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadModel } from '../src/engine/model.js';
import { DejavuError } from '../src/util/errors.js';
import { encodeSafetensors } from '../src/model/safetensors.js';
import { ROOT } from './helpers.js';
import { tinyConfig, tinyTensors, writeTinyModel } from './tiny-model.js';

async function loadError(dir: string): Promise<string> {
  try {
    const m = await loadModel(dir, { backend: 'cpu' });
    m.dispose();
  } catch (e) {
    assert.ok(e instanceof DejavuError, `expected a DejavuError, got ${(e as Error).stack}`);
    assert.ok(!e.message.includes('\n'), 'error messages are one line');
    return e.message;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.fail('loading should have failed');
}

/** The safetensors bytes with the 8-byte header length patched. */
function withHeaderLength(bytes: Uint8Array, n: bigint): Uint8Array {
  const b = bytes.slice();
  new DataView(b.buffer).setBigUint64(0, n, true);
  return b;
}

/** Rewrites one header entry of a safetensors image (keeps the header length). */
function patchHeader(bytes: Uint8Array, fn: (h: Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>) => void): Uint8Array {
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const h = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  fn(h);
  let json = JSON.stringify(h);
  if (json.length > n) throw new Error('patched header grew');
  json = json.padEnd(n, ' ');
  const out = bytes.slice();
  out.set(new TextEncoder().encode(json), 8);
  return out;
}

test('a tiny valid checkpoint loads and generates', async () => {
  const dir = writeTinyModel();
  const m = await loadModel(dir, { backend: 'cpu' });
  const r = m.generate('Hello', { maxTokens: 3, temperature: 0 });
  for await (const _ of r) { /* drain */ }
  assert.equal((await r.result).generatedIds.length <= 3, true);
  m.dispose();
  rmSync(dir, { recursive: true });
});

test('missing folder', async () => {
  assert.match(await loadError('/definitely/not/here'), /model folder not found: \/definitely\/not\/here/);
});

test('missing config.json and missing weights', async () => {
  const a = writeTinyModel(); unlinkSync(join(a, 'config.json'));
  assert.match(await loadError(a), /missing file config\.json/);
  const b = writeTinyModel(); unlinkSync(join(b, 'model.safetensors'));
  assert.match(await loadError(b), /no weights in .*: expected model\.safetensors, pytorch_model\.bin, or the index of their shards/);
  const c = writeTinyModel(); unlinkSync(join(c, 'tokenizer.json'));
  assert.match(await loadError(c), /no tokenizer in .*: expected tokenizer\.json, or vocab\.json and merges\.txt/);
});

test('unsupported model_type and missing config fields', async () => {
  assert.match(await loadError(writeTinyModel(tinyConfig({ model_type: 'llama' }))), /unsupported model_type "llama"/);
  const cfg = tinyConfig(); delete cfg.hidden_size;
  assert.match(await loadError(writeTinyModel(cfg, tinyTensors(tinyConfig()))), /missing required field "hidden_size"/);
});

test('safetensors header length or tensor offsets past the end of the file', async () => {
  const cfg = tinyConfig();
  const good = encodeSafetensors(tinyTensors(cfg));
  assert.match(await loadError(writeTinyModel(cfg, undefined, withHeaderLength(good, 10n ** 12n))), /header declares \d+ bytes but the file has only/);
  const truncated = good.subarray(0, good.length - 100);
  assert.match(await loadError(writeTinyModel(cfg, undefined, truncated)), /runs past the end of the file/);
});

test('unknown dtype, and byte size that does not match the shape', async () => {
  const cfg = tinyConfig();
  const good = encodeSafetensors(tinyTensors(cfg));
  const badType = patchHeader(good, (h) => { h['model.decoder.layers.0.fc1.bias'].dtype = 'I8'; });
  assert.match(await loadError(writeTinyModel(cfg, undefined, badType)), /fc1\.bias has unknown dtype "I8"/);
  const badShape = patchHeader(good, (h) => { h['model.decoder.layers.0.fc1.bias'].shape = [25]; });
  assert.match(await loadError(writeTinyModel(cfg, undefined, badShape)), /fc1\.bias has 96 bytes but shape \[25\] of F32 needs 100/);
});

test('missing or unexpected tensor, and wrong shape', async () => {
  const cfg = tinyConfig();
  const t = tinyTensors(cfg); delete t['model.decoder.layers.1.fc2.weight'];
  assert.match(await loadError(writeTinyModel(cfg, t)), /missing tensor decoder\.layers\.1\.fc2\.weight/);
  const u = tinyTensors(cfg); u['model.decoder.layers.7.extra'] = { shape: [2], data: new Float32Array(2) };
  assert.match(await loadError(writeTinyModel(cfg, u)), /unexpected tensor decoder\.layers\.7\.extra/);
  const v = tinyTensors(tinyConfig({ ffn_dim: 20 }));
  assert.match(await loadError(writeTinyModel(cfg, v)), /fc1\.weight has shape \[20, 16\], expected \[24, 16\]/);
});

test('sharded index naming a missing shard', async () => {
  const dir = writeTinyModel();
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: 'model-00001-of-00002.safetensors' } }));
  assert.match(await loadError(dir), /missing file model-00001-of-00002\.safetensors/);
});

test('a prompt longer than the context is refused', async () => {
  const dir = writeTinyModel(); // context 32
  const m = await loadModel(dir, { backend: 'cpu' });
  assert.throws(() => m.generate('word '.repeat(100)), /prompt of \d+ tokens is longer than the model's context of 32/);
  m.dispose();
  rmSync(dir, { recursive: true });
});

test('the CLI prints one line and exits non-zero on bad input', () => {
  const cli = join(ROOT, 'dist', 'src', 'cli.js');
  const run = (args: string[]) => {
    try { execFileSync('node', [cli, ...args], { stdio: 'pipe' }); } catch (e) {
      const err = e as { status: number; stderr: Buffer };
      return { status: err.status, stderr: err.stderr.toString() };
    }
    return { status: 0, stderr: '' };
  };
  const a = run(['generate', '--model', '/no/such/dir', 'hi']);
  assert.equal(a.status, 1);
  assert.equal(a.stderr.trim(), 'dejavu: model folder not found: /no/such/dir');
  const b = run(['generate', '--backend', 'cpu', 'word '.repeat(1100)]);
  assert.equal(b.status, 1);
  assert.match(b.stderr.trim(), /^dejavu: prompt of \d+ tokens is longer than the model's context of 1024$/);
  const kv = run(['generate', '--backend', 'cpu', '--kv-cache', 'f64', 'hi']);
  assert.equal(kv.status, 1);
  assert.equal(kv.stderr.trim(), 'dejavu: unknown KV cache type "f64" (choose f32 or f16)');
  assert.ok(readFileSync(cli, 'utf8').length > 0);
});

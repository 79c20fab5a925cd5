import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CpuRunner } from '../src/backend/cpu/runner.js';
import { splitDocuments, tokenizeDocuments, windowsOf } from '../src/eval/corpus.js';
import { perplexity } from '../src/eval/perplexity.js';
import { checkpoint, DATA, hasShared, MODELS } from './helpers.js';

/** Two short documents in the shared files' layout. */
const TEXT = '\n\nIt was a bright cold day in April, and the clocks were striking thirteen. The hall smelt of boiled cabbage.\n\n' +
  '<|endoftext|>\n\nCall me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, I thought I would sail about.\n';

/** log-softmax of one row, in float64, written apart from src/eval/logprob.ts. */
function logProb(logits: Float32Array, token: number): number {
  let max = -Infinity;
  for (const x of logits) max = Math.max(max, x);
  let s = 0;
  for (const x of logits) s += Math.exp(x - max);
  return logits[token] - max - Math.log(s);
}

test('documents split on <|endoftext|>, windows never cross them and drop 1-token tails', () => {
  assert.deepEqual(splitDocuments('a<|endoftext|>\n \n<|endoftext|> b '), ['a', 'b']);
  const w = windowsOf([[2, 5, 6, 7, 8], [2, 9, 10]], 2);
  assert.deepEqual(w, [[2, 5], [6, 7], [2, 9]]); // [8] and [10] would score nothing
});

test('tokenizing a prefix under --limit gives the same tokens as the whole text', { skip: !hasShared && 'no ../shared' }, async () => {
  const ck = await checkpoint(MODELS['5m']);
  const text = readFileSync(join(DATA, 'gutenberg-val.txt'), 'utf8').slice(0, 60000);
  const full = splitDocuments(text).map((d) => ck.tokenizer.encode(d)).flat();
  for (const limit of [1, 100, 3000]) {
    assert.deepEqual(tokenizeDocuments(ck.tokenizer, text, limit).flat(), full.slice(0, limit), `limit ${limit}`);
  }
});

test('perplexity equals exp(mean NLL) of a token-by-token incremental decode', async () => {
  const ck = await checkpoint(MODELS['5m']);
  const runner = new CpuRunner(ck.config, ck.weights);
  const W = 16, limit = 60;
  const got = await perplexity(runner, ck.tokenizer, TEXT, { window: W, limit });

  // Independent: decode one token at a time, restarting the KV cache where a window starts.
  const docs = splitDocuments(TEXT).map((d) => ck.tokenizer.encode(d));
  let left = limit, nll = 0, n = 0;
  for (const doc of docs) {
    const ids = doc.slice(0, left);
    left -= ids.length;
    for (let i = 0; i + 1 < ids.length; i++) {
      if (i % W === 0) runner.reset();
      const logits = await runner.forward([ids[i]]);
      if ((i + 1) % W !== 0) { nll -= logProb(logits, ids[i + 1]); n++; }
    }
  }
  assert.equal(got.tokens, n);
  assert.equal(got.window, W);
  assert.ok(Math.abs(got.nll - nll / n) < 1e-4, `nll ${got.nll} vs ${nll / n}`);
  assert.ok(Math.abs(got.ppl - Math.exp(nll / n)) / got.ppl < 1e-4, `ppl ${got.ppl} vs ${Math.exp(nll / n)}`);
  assert.ok(got.ppl > 1 && got.ppl < 1000);
  runner.dispose();
});

test('a window longer than the context is an error', async () => {
  const ck = await checkpoint(MODELS['5m']);
  const runner = new CpuRunner(ck.config, ck.weights);
  await assert.rejects(perplexity(runner, ck.tokenizer, TEXT, { window: ck.config.maxPositions + 1 }), /longer than the model's context/);
});

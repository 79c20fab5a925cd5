import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuRunner } from '../src/backend/cpu/runner.js';
import { compareLambada, compareMultipleChoice, comparePerplexity } from '../src/eval/compare.js';
import { perplexity } from '../src/eval/perplexity.js';
import type { McItem } from '../src/eval/tasks.js';
import { meanMlpDensity, type SparsityPolicy } from '../src/sparsity/policy.js';
import { checkpoint, MODELS } from './helpers.js';

const TEXT = 'It was a bright cold day in April, and the clocks were striking thirteen. Winston Smith, his chin nuzzled ' +
  'into his breast in an effort to escape the vile wind, slipped quickly through the glass doors.';

/** Layer 0 dense (DejaVu leaves it dense: it is the least sparse), the others under `mlp`. */
function policy(layers: number, mlp: SparsityPolicy['mlp'][number]): SparsityPolicy {
  return { input: 'mlp_in', mlp: Array.from({ length: layers }, (_, l) => (l === 0 ? null : mlp)) };
}

test('--compare with every neuron selected agrees with dense: agreement 1, KL ~ 0', async () => {
  const ck = await checkpoint(MODELS['5m']);
  const { ffn, layers } = ck.config;
  const runner = new CpuRunner(ck.config, ck.weights);
  const all = policy(layers, { k: ffn, selector: { kind: 'fixed', indices: Uint32Array.from({ length: ffn }, (_, i) => i) } });
  assert.equal(meanMlpDensity(all, ffn), 1);

  const c = await comparePerplexity(runner, ck.tokenizer, TEXT, all, { window: 24 });
  assert.equal(c.top1Agreement, 1);
  assert.ok(c.kl < 1e-6, `kl ${c.kl}`);
  assert.ok(Math.abs(c.dense.ppl - c.sparse.ppl) / c.dense.ppl < 1e-4, `${c.dense.ppl} vs ${c.sparse.ppl}`);
  // The dense half is the plain perplexity, and compare leaves the runner dense.
  const plain = await perplexity(runner, ck.tokenizer, TEXT, { window: 24 });
  assert.equal(plain.ppl, c.dense.ppl);
  assert.equal(c.tokens, plain.tokens);

  const items: McItem[] = [
    { requests: [{ context: 'The sky is', continuation: ' blue.' }, { context: 'The sky is', continuation: ' a fish.' }], gold: 0 },
    { requests: [{ context: 'She opened the', continuation: ' door.' }, { context: 'She opened the', continuation: ' of.' }], gold: 0 },
  ];
  const m = await compareMultipleChoice(runner, ck.tokenizer, items, all);
  assert.equal(m.agreement, 1);
  assert.deepEqual(m.dense.predictions, m.sparse.predictions);
  m.dense.logprobs.flat().forEach((x, i) => assert.ok(Math.abs(x - m.sparse.logprobs.flat()[i]) < 1e-3));
  const l = await compareLambada(runner, ck.tokenizer, [{ context: 'The sky is', continuation: ' blue' }], all);
  assert.equal(l.agreement, 1);
  assert.ok(Math.abs(l.dense.ppl - l.sparse.ppl) / l.dense.ppl < 1e-3);
  runner.dispose();
});

test('--compare with a 15% oracle policy differs from dense but stays close', async () => {
  const ck = await checkpoint(MODELS['5m']);
  const { ffn, layers } = ck.config;
  const runner = new CpuRunner(ck.config, ck.weights);
  const p = policy(layers, { k: Math.round(0.15 * ffn), selector: { kind: 'oracle' } });
  assert.ok(Math.abs(meanMlpDensity(p, ffn) - 0.15) < 1e-2);
  const c = await comparePerplexity(runner, ck.tokenizer, TEXT, p, { window: 24 });
  assert.ok(c.kl > 0 && c.kl < 2, `kl ${c.kl}`);
  assert.ok(c.top1Agreement > 0.3 && c.top1Agreement <= 1, `agreement ${c.top1Agreement}`);
  assert.notEqual(c.sparse.ppl, c.dense.ppl);
  runner.dispose();
});

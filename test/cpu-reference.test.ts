import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuRunner } from '../src/backend/cpu/runner.js';
import { checkpoint, greedyContinue, hasShared, MODELS, reference } from './helpers.js';


for (const name of ['5m', '18m', '50m'] as const) {
  const dir = MODELS[name];
  test(`cpu backend reproduces Hugging Face on opt-gutenberg-${name}`, { skip: name !== '5m' && !hasShared ? 'no ../shared' : false }, async () => {
    const ck = await checkpoint(dir);
    const ref = reference(dir);
    const runner = new CpuRunner(ck.config, ck.weights);
    for (const r of ref) {
      const ids = ck.tokenizer.encode(r.prompt);
      assert.deepEqual(ids, r.input_ids, `input ids of "${r.prompt}"`);
      runner.reset();
      const logits = await runner.forward(ids);
      r.last_logits_top10_ids.forEach((id, i) => {
        assert.ok(Math.abs(logits[id] - r.last_logits_top10_values[i]) < 2e-3, `logit ${id}: ${logits[id]} vs ${r.last_logits_top10_values[i]}`);
      });
      const got = await greedyContinue(runner, logits, r.greedy_new_ids.length);
      assert.deepEqual(got, r.greedy_new_ids, `greedy tokens of "${r.prompt}"`);
    }
    runner.dispose();
  });
}

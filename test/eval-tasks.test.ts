import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CpuRunner } from '../src/backend/cpu/runner.js';
import { lambada } from '../src/eval/lambada.js';
import { mcResult, multipleChoice } from '../src/eval/multiple-choice.js';
import { loadLambadaItems, loadMcItems, type McItem } from '../src/eval/tasks.js';
import { DejavuError } from '../src/util/errors.js';
import { checkpoint, DATA, hasShared, MODELS } from './helpers.js';

const shared = { skip: !hasShared && 'no ../shared' };
const file = (name: string) => join(DATA, 'eval', name);
const read = (name: string) => readFileSync(file(name), 'utf8');

test('copa, piqa and arc_easy load as query + " choice" requests', shared, () => {
  const copa = loadMcItems('copa', read('copa.jsonl'), 'copa.jsonl');
  assert.equal(copa.length, 100);
  assert.deepEqual(copa[0].requests, [
    { context: 'The man turned on the faucet, therefore', continuation: ' the toilet filled with water.' },
    { context: 'The man turned on the faucet, therefore', continuation: ' water flowed from the spout.' },
  ]);
  assert.equal(copa[0].gold, 1);
  const piqa = loadMcItems('piqa', read('piqa.jsonl'), 'piqa.jsonl', 3);
  assert.equal(piqa.length, 3);
  assert.match(piqa[0].requests[0].context, /^Question: How do I ready a guinea pig cage for it's new occupants\?\nAnswer:$/);
  assert.ok(piqa[0].requests[0].continuation.startsWith(' Provide the guinea pig'));
  const arc = loadMcItems('arc_easy', read('arc_easy.jsonl'), 'arc_easy.jsonl', 5);
  assert.equal(arc[0].requests.length, 4);
  assert.ok(arc[0].requests[0].context.endsWith('food webs?\nAnswer:'));
  assert.equal(arc[0].gold, 0);
});

test('winogrande puts the options in the context and scores the shared rest', shared, () => {
  const [w] = loadMcItems('winogrande', read('winogrande.jsonl'), 'winogrande.jsonl', 1);
  assert.deepEqual(w.requests, [
    { context: 'Sarah was a much better surgeon than Maria so Sarah', continuation: ' always got the easier cases.' },
    { context: 'Sarah was a much better surgeon than Maria so Maria', continuation: ' always got the easier cases.' },
  ]);
  assert.equal(w.gold, 1);
});

test('lambada loads the context and the target word', shared, () => {
  const items = loadLambadaItems(read('lambada_openai.jsonl'), 'lambada_openai.jsonl', 2);
  assert.equal(items.length, 2);
  assert.ok(items[0].context.endsWith("I don't care about"));
  assert.equal(items[0].continuation, ' signs');
});

test('malformed lines and fields are one-line errors naming the line', () => {
  const bad = '{"query": "a", "choices": ["b", "c"], "gold": 0}\n\n{"query": "a", "choices": ["b"\n';
  assert.throws(() => loadMcItems('copa', bad, 'x.jsonl'), (e: Error) => e instanceof DejavuError && e.message === 'x.jsonl:3: malformed JSON line');
  assert.throws(() => loadMcItems('copa', '{"query": "a", "choices": ["b", "c"], "gold": 2}', 'x.jsonl'), /x.jsonl:1: field "gold" must be an integer in \[0, 2\)/);
  assert.throws(() => loadMcItems('winogrande', '{"continuation": "x", "gold": 0}', 'w.jsonl'), /w.jsonl:1: field "context_options"/);
  assert.throws(() => loadLambadaItems('[1]', 'l.jsonl'), /l.jsonl:1: expected a JSON object/);
  // --limit stops before a bad line further on
  assert.equal(loadMcItems('copa', bad, 'x.jsonl', 1).length, 1);
});

test('acc picks the largest total log-likelihood, acc_norm the largest per character', () => {
  const items: McItem[] = [
    { requests: [{ context: 'q', continuation: ' aaaa' }, { context: 'q', continuation: ' bbbbbbbbbbbbbbbbbbb' }], gold: 1 },
    { requests: [{ context: 'q', continuation: ' a' }, { context: 'q', continuation: ' b' }, { context: 'q', continuation: ' c' }], gold: 2 },
  ];
  const r = mcResult(items, [[-10, -12], [-5, -4, -3]]);
  assert.deepEqual(r.predictions, [0, 2]);      // -10 > -12
  assert.deepEqual(r.predictionsNorm, [1, 2]);  // -10/5 = -2 < -12/20 = -0.6
  assert.equal(r.acc, 0.5);
  assert.equal(r.accNorm, 1);
});

/** Log-likelihood of a continuation by incremental decoding, apart from src/eval/score.ts. */
async function incremental(runner: CpuRunner, ctx: number[], cont: number[]): Promise<{ lp: number; greedy: boolean }> {
  runner.reset();
  let logits = await runner.forward(ctx);
  let lp = 0, greedy = true;
  for (const tok of cont) {
    let max = -Infinity, arg = 0;
    logits.forEach((x, i) => { if (x > max) { max = x; arg = i; } });
    let s = 0;
    for (const x of logits) s += Math.exp(x - max);
    lp += logits[tok] - max - Math.log(s);
    if (arg !== tok) greedy = false;
    logits = await runner.forward([tok]);
  }
  return { lp, greedy };
}

test('multiple choice scores each continuation given its context and picks the likeliest', async () => {
  const ck = await checkpoint(MODELS['5m']);
  const runner = new CpuRunner(ck.config, ck.weights);
  const tok = ck.tokenizer;
  const context = 'one two three four five six seven. one two three four five six seven. one two three';
  const items: McItem[] = [{
    requests: [' kettle banana xylophone', ' four five six', ' the the the'].map((continuation) => ({ context, continuation })),
    gold: 1,
  }];
  const r = await multipleChoice(runner, tok, items);
  for (const [j, req] of items[0].requests.entries()) {
    const ref = await incremental(runner, tok.encode(req.context), tok.encode(req.continuation, false));
    assert.ok(Math.abs(r.logprobs[0][j] - ref.lp) < 1e-3, `choice ${j}: ${r.logprobs[0][j]} vs ${ref.lp}`);
  }
  assert.equal(r.predictions[0], 1, `log-likelihoods ${r.logprobs[0]}`);
  assert.equal(r.acc, 1);

  // LAMBADA on the same context: the copied continuation is also the greedy one.
  const target = { context, continuation: ' four' };
  const l = await lambada(runner, tok, [target]);
  const ref = await incremental(runner, tok.encode(context), tok.encode(' four', false));
  assert.equal(l.correct[0], ref.greedy);
  assert.ok(Math.abs(l.logprobs[0] - ref.lp) < 1e-3);
  assert.ok(Math.abs(l.ppl - Math.exp(-ref.lp)) / l.ppl < 1e-3);
  runner.dispose();
});

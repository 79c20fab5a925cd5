/**
 * Log-probabilities: generate()'s logprobs and promptLogprobs, and the server's completions
 * (logprobs, echo, token-id prompts) and chat (logprobs, top_logprobs), checked against a log-softmax
 * computed here by hand from runner.forward's logits (demo model, CPU backend).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel, type Model } from '../src/engine/model.js';
import { generate, type GenerateOptions, type GenerationResult, type TopLogprob } from '../src/engine/generate.js';
import { createServer } from '../src/server/http.js';
import { chatTranscript, CHAT_STOP } from '../src/server/openai.js';
import { TextOffsets, tokenText } from '../src/server/logprobs.js';
import { checkpoint, MODELS } from './helpers.js';
import { startDemoServer, type DemoServer } from './server-helpers.js';
import { gpuOrSkip } from './gpu.js';
import { createWebGpuRunner } from '../src/backend/webgpu/runner.js';
import type { Runner } from '../src/backend/types.js';
import { seededRandom } from '../src/util/random.js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeFileSource } from '../src/model/node-source.js';
import { TextTokenizer } from '../src/model/tokenizer.js';

let model: Model, base: string, V: number, demo: DemoServer;

before(async () => { demo = await startDemoServer(); ({ model, base } = demo); V = model.config.vocabSize; });

after(() => demo.stop());

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

const TOL = 1e-6;
const PROMPT = 'It was a dark and stormy night, and';

async function call(path: string, body: unknown, url = base): Promise<{ status: number; json: Json }> {
  const res = await fetch(url + path, { method: 'POST', body: JSON.stringify(body) });
  return { status: res.status, json: await res.json() };
}

/** A streamed response's chunks (without the final [DONE]). */
async function chunks(path: string, body: object): Promise<Json[]> {
  const res = await fetch(base + path, { method: 'POST', body: JSON.stringify({ ...body, stream: true }) });
  assert.equal(res.status, 200);
  const events = (await res.text()).split('\n\n').filter((b) => b).map((b) => b.slice('data: '.length));
  assert.equal(events.pop(), '[DONE]');
  return events.map((e) => JSON.parse(e));
}

async function run(prompt: string | number[], o: GenerateOptions): Promise<GenerationResult> {
  const g = typeof prompt === 'string' ? model.generate(prompt, o) : generate(model.runner, model.tokenizer, prompt, { eosTokenIds: model.checkpoint.generation.eosTokenId, ...o });
  let text = '';
  for await (const p of g) text += p;
  const r = await g.result;
  assert.equal(text, r.text);
  return r;
}

/**
 * The reference: log-softmax by hand (float64, max-subtracted) of every row of one
 * forward(ids, { allLogits: true }). Row t is the distribution of ids[t + 1].
 */
async function logSoftmaxRows(ids: number[]): Promise<Float64Array[]> {
  model.runner.reset();
  const logits = await model.runner.forward(ids, { allLogits: true });
  model.runner.reset();
  const rows: Float64Array[] = [];
  for (let t = 0; t < ids.length; t++) {
    const row = logits.subarray(t * V, (t + 1) * V);
    let max = -Infinity;
    for (const x of row) if (x > max) max = x;
    let sum = 0;
    for (const x of row) sum += Math.exp(x - max);
    const lse = max + Math.log(sum);
    rows.push(Float64Array.from(row, (x) => x - lse));
  }
  return rows;
}

/** A row's n most likely ids, by log-probability (ties: lowest id). */
function topIds(row: Float64Array, n: number): number[] {
  return Array.from(row.keys()).sort((a, b) => row[b] - row[a] || a - b).slice(0, n);
}

function near(actual: number, expected: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= TOL, `${what}: ${actual} vs ${expected}`);
}

/** An entry (id, logprob, top) against its reference row. */
function checkEntry(e: { id: number; logprob: number | null; top: TopLogprob[] | null }, row: Float64Array, n: number, what: string): void {
  near(e.logprob!, row[e.id], what);
  assert.deepEqual(e.top!.map((t) => t.id), topIds(row, n), `${what}: top ids`);
  e.top!.forEach((t, k) => near(t.logprob, row[t.id], `${what}: top ${k}`));
  for (let k = 1; k < e.top!.length; k++) assert.ok(e.top![k - 1].logprob >= e.top![k].logprob, `${what}: top sorted`);
  if (n > 0) assert.ok(e.logprob! <= e.top![0].logprob, `${what}: the chosen token is at most as likely as the top one`);
}

test('library: logprobs of generated and prompt tokens are the log-softmax of the logits rows (greedy, seeded sampling)', async () => {
  const greedyPlain = await run(PROMPT, { maxTokens: 10, temperature: 0 });
  assert.equal(greedyPlain.logprobs, undefined);
  assert.equal(greedyPlain.promptLogprobs, undefined);
  for (const o of [{ temperature: 0 }, { temperature: 0.9, topK: 40, topP: 0.95, seed: 7 }, { temperature: 1.3, seed: 3 }] as GenerateOptions[]) {
    const plain = await run(PROMPT, { maxTokens: 10, ...o });
    const n = 3;
    const r = await run(PROMPT, { maxTokens: 10, ...o, logprobs: n, promptLogprobs: true });
    const what = JSON.stringify(o);
    // The same tokens as without logprobs (greedy: the chained path; sampling: the same draws).
    assert.deepEqual(r.generatedIds, plain.generatedIds, what);
    assert.equal(r.text, plain.text, what);
    assert.equal(r.finishReason, 'length');
    const P = r.promptIds.length, G = r.generatedIds.length;
    const rows = await logSoftmaxRows([...r.promptIds, ...r.generatedIds]);
    assert.equal(r.promptLogprobs!.length, P);
    assert.deepEqual(r.promptLogprobs![0], { id: r.promptIds[0], logprob: null, top: null });
    for (let t = 1; t < P; t++) {
      assert.equal(r.promptLogprobs![t].id, r.promptIds[t]);
      checkEntry(r.promptLogprobs![t], rows[t - 1], n, `${what} prompt token ${t}`);
    }
    assert.equal(r.logprobs!.length, G);
    for (let j = 0; j < G; j++) {
      assert.equal(r.logprobs![j].id, r.generatedIds[j]);
      checkEntry(r.logprobs![j], rows[P - 1 + j], n, `${what} generated token ${j}`);
      if (o.temperature === 0) {
        assert.equal(r.logprobs![j].top[0].id, r.generatedIds[j], 'greedy picks the top token');
        assert.equal(r.logprobs![j].logprob, r.logprobs![j].top[0].logprob);
      }
    }
    if (o.temperature !== 0) assert.ok(r.logprobs!.some((e) => e.id !== e.top[0]?.id), `${what}: sampling took a token other than the top one`);
  }
  // logprobs 0: only the chosen token's; without promptLogprobs, no prompt entries.
  const zero = await run(PROMPT, { maxTokens: 3, temperature: 0, logprobs: 0 });
  assert.ok(zero.logprobs!.every((e) => e.top.length === 0 && e.logprob < 0));
  assert.equal(zero.promptLogprobs, undefined);
});

test('library: a prompt of token ids is used as given; promptLogprobs scores it even with maxTokens 0; bad ids and options fail', async () => {
  const ids = model.tokenizer.encode(PROMPT, false); // no </s>
  const r = await run(ids, { maxTokens: 0, promptLogprobs: true, logprobs: 2 });
  assert.deepEqual(r.promptIds, ids);
  assert.deepEqual(r.generatedIds, []);
  assert.deepEqual(r.logprobs, []);
  const rows = await logSoftmaxRows(ids);
  assert.equal(r.promptLogprobs![0].logprob, null);
  for (let t = 1; t < ids.length; t++) checkEntry(r.promptLogprobs![t], rows[t - 1], 2, `token ${t}`);
  // The same ids as text (with its </s>) generate the same as the text.
  const text = await run(PROMPT, { maxTokens: 6, temperature: 0 });
  assert.deepEqual((await run(text.promptIds, { maxTokens: 6, temperature: 0 })).generatedIds, text.generatedIds);

  const start = (prompt: number[], o: GenerateOptions = {}) => generate(model.runner, model.tokenizer, prompt, o);
  assert.throws(() => start([2, V]), { message: `prompt token id ${V} (at index 1) is not in the vocabulary [0, ${V})` });
  assert.throws(() => start([2, -1]), /prompt token id -1 \(at index 1\)/);
  assert.throws(() => start([2, 1.5]), /prompt token id 1\.5/);
  assert.throws(() => start([]), /prompt of token ids is empty/);
  assert.throws(() => start(new Array(model.config.maxPositions + 1).fill(5)), /prompt of 1025 tokens is longer than the model's context of 1024/);
  assert.throws(() => start([2], { logprobs: 21 }), /logprobs must be an integer in \[0, 20\], got 21/);
  assert.throws(() => start([2], { logprobs: 1.5 }), /logprobs must be an integer/);
});

test('library: with logprobs, a generation that ends on the end-of-sequence token has a last entry for it', async () => {
  const plain = await run(PROMPT, { maxTokens: 8, temperature: 0 });
  const eos = plain.generatedIds[3];
  const r = await run(PROMPT, { maxTokens: 8, temperature: 0, logprobs: 1, eosTokenIds: [eos] });
  assert.equal(r.finishReason, 'stop');
  assert.deepEqual(r.generatedIds, plain.generatedIds.slice(0, 3));
  assert.deepEqual(r.logprobs!.map((e) => e.id), plain.generatedIds.slice(0, 4));
  const rows = await logSoftmaxRows([...r.promptIds, ...plain.generatedIds.slice(0, 3)]);
  checkEntry(r.logprobs![3], rows.at(-1)!, 1, 'the eos entry');
});

test('TextOffsets: each token\'s offset is where it begins in the text, as decoding every prefix gives', () => {
  const tok = model.tokenizer;
  /** The definition: the common prefix of the text before the token and the text with it. */
  const exact = (ids: number[]) => ids.map((_, i) => {
    const a = i === 0 ? '' : tok.decode(ids.slice(0, i)), b = tok.decode(ids.slice(0, i + 1));
    let k = 0;
    while (k < a.length && a[k] === b[k]) k++;
    return k;
  });
  const random = seededRandom(11);
  const cases = [
    'café über 日本 😀 and 🎉🎉 done',
    'Hello , world . Is it ? Yes ! It isn\'t , I \'m sure ; we \'ve ( they \'re ) x \' y .',
    'I do n\'t know ; you do n\'t either , we ca n\'t . It \' s a \' test \' .',
    'a </s> b </s>',
    'It was the best of times, it was the worst of times, it was the age of wisdom. '.repeat(4),
  ].map((s) => tok.encode(s));
  // Clean-up across token boundaries: pieces tokenized one by one (a lone " ", then "n", "'t"...).
  const pieces = (...ps: string[]) => ps.flatMap((p) => tok.encode(p, false));
  cases.push(pieces('x', ' ', 'n', "'t", ' y', ' ', ',', 'z', ' ', "'", ' ', 'w', ' ', '.', ' ', "'", 'm', 'e'));
  for (let n = 0; n < 20; n++) cases.push(Array.from({ length: 60 }, () => Math.floor(random() * V)));
  for (const ids of cases) {
    for (const start of [0, 7]) {
      const o = new TextOffsets(tok, start);
      assert.deepEqual(ids.map((id) => o.push(id)), exact(ids).map((x) => x + start), JSON.stringify(ids));
    }
  }
  // In plain text the offsets are where each token's text stands.
  const ids = tok.encode('It was a dark and stormy night; the rain fell in torrents.');
  const text = tok.decode(ids), o = new TextOffsets(tok);
  for (const id of ids) {
    const at = o.push(id), piece = tok.decode([id]);
    assert.equal(text.slice(at, at + piece.length), piece);
  }
});

test('token texts and bytes: the vocabulary\'s bytes spell the text; a split character\'s tokens read "bytes:\\xNN"', async () => {
  const tok = model.tokenizer;
  const text = 'naïve café — “quoted” 日本語 😊 Ωmega\ttab  two spaces\n';
  const ids = tok.encode(text, false);
  const bytes = ids.map((id) => tok.tokenBytes(id));
  assert.ok(bytes.every((b) => b !== null));
  assert.deepEqual(Buffer.concat(bytes.map((b) => Buffer.from(b!))), Buffer.from(text, 'utf8'));
  let split = 0;
  ids.forEach((id, i) => {
    const t = tokenText(tok, id, true);
    assert.deepEqual(t.bytes, [...bytes[i]!]);
    const whole = !tok.decode([id]).includes('\uFFFD');
    if (whole) assert.equal(t.text, tok.decode([id], true, false));
    else {
      split++;
      assert.match(t.text, /^bytes:(\\x[0-9a-f]{2})+$/);
      assert.deepEqual(t.text.slice(6).split('\\x').slice(1).map((h) => parseInt(h, 16)), t.bytes);
    }
  });
  assert.ok(split >= 2, 'the text has characters split across tokens');
  // Special tokens have no bytes of their own: text "", bytes [].
  assert.equal(tok.tokenBytes(2), null);
  assert.deepEqual(tokenText(tok, 2), { text: '', bytes: [] });
  // An added token that is not special is plain text in the vocabulary, not byte-level: its bytes
  // are its text's (a fine-tune's added "é", read as byte-level, would be the single byte 0xe9).
  const dir = mkdtempSync(join(tmpdir(), 'dejavu-added-'));
  try {
    const json = JSON.parse(readFileSync(join(MODELS['5m'], 'tokenizer.json'), 'utf8'));
    const id = V + 1;
    json.added_tokens.push({ id, content: 'é', single_word: false, lstrip: false, rstrip: false, normalized: false, special: false });
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(json));
    const src = await NodeFileSource.open(dir);
    const added = await TextTokenizer.load(src);
    await src.close();
    assert.equal(added.tokenBytes(id), null);
    assert.deepEqual(tokenText(added, id), { text: 'é', bytes: [0xc3, 0xa9] });
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

/** token_logprobs, top_logprobs and tokens against the reference rows: entry i of the arrays is token ids[first + i]. */
function checkCompletionLogprobs(lp: Json, ids: number[], rows: Float64Array[], n: number, first: number, greedyFrom = Infinity): void {
  const tok = model.tokenizer;
  assert.deepEqual(Object.keys(lp), ['tokens', 'token_logprobs', 'top_logprobs', 'text_offset']);
  const count = ids.length - first;
  for (const k of ['tokens', 'token_logprobs', 'top_logprobs', 'text_offset']) assert.equal(lp[k].length, count, k);
  for (let i = 0; i < count; i++) {
    const t = first + i;
    assert.equal(lp.tokens[i], tokenText(tok, ids[t]).text, `token ${t}`);
    if (t === 0) {
      assert.equal(lp.token_logprobs[i], null);
      assert.equal(lp.top_logprobs[i], null);
      continue;
    }
    const row = rows[t - 1];
    near(lp.token_logprobs[i], row[ids[t]], `token ${t}`);
    // An object keyed by the alternatives' texts (the likeliest of those sharing a text), then the
    // chosen token's where it is not among them.
    const expected = [...topIds(row, n), ids[t]];
    const key = (id: number) => tokenText(tok, id).text;
    const texts = new Set(expected.map(key));
    assert.equal(Object.keys(lp.top_logprobs[i]).length, texts.size, `top of token ${t}`);
    for (const id of expected) {
      if (expected.find((x) => key(x) === key(id)) === id) near(lp.top_logprobs[i][key(id)], row[id], `top ${JSON.stringify(key(id))} of token ${t}`);
    }
    const best = Math.max(...Object.values(lp.top_logprobs[i]) as number[]);
    assert.ok(lp.token_logprobs[i] <= best);
    if (t >= greedyFrom) assert.equal(lp.token_logprobs[i], best, `greedy token ${t} is the top one`);
  }
}

test('completions: logprobs of the generated tokens, greedy and seeded; greedy gives the same text as without', async () => {
  for (const sampling of [{ temperature: 0 }, { temperature: 0.9, top_k: 40, seed: 5 }]) {
    const body = { prompt: PROMPT, max_tokens: 12, ...sampling };
    const plain = await call('/v1/completions', body);
    const r = await call('/v1/completions', { ...body, logprobs: 3 });
    assert.equal(r.status, 200);
    const c = r.json.choices[0];
    assert.equal(c.text, plain.json.choices[0].text);
    assert.deepEqual(r.json.usage, plain.json.usage);
    const ref = await run(PROMPT, { maxTokens: 12, temperature: sampling.temperature, topK: sampling.top_k, seed: sampling.seed });
    assert.equal(c.text, ref.text);
    const ids = [...ref.promptIds, ...ref.generatedIds];
    const rows = await logSoftmaxRows(ids);
    checkCompletionLogprobs(c.logprobs, ids, rows, 3, ref.promptIds.length, sampling.temperature === 0 ? 0 : Infinity);
    assert.equal(c.logprobs.tokens.join(''), c.text);
    assert.equal(c.logprobs.text_offset[0], 0);
    c.logprobs.tokens.forEach((t: string, i: number) => assert.equal(c.text.slice(c.logprobs.text_offset[i], c.logprobs.text_offset[i] + t.length), t));
  }
  // logprobs 0: no alternatives, top_logprobs holds the chosen token alone.
  const zero = (await call('/v1/completions', { prompt: PROMPT, max_tokens: 2, temperature: 0, logprobs: 0 })).json.choices[0].logprobs;
  assert.deepEqual(zero.top_logprobs, zero.tokens.map((t: string, i: number) => ({ [t]: zero.token_logprobs[i] })));
  assert.ok(zero.token_logprobs.every((x: number) => x < 0));
});

test('completions: echo with a token-id prompt and max_tokens 0 scores the prompt; text_offset follows the tokens', async () => {
  const ids = model.tokenizer.encode('The old man looked at the sea and said nothing.');
  const rows = await logSoftmaxRows(ids);
  for (const prompt of [ids, [ids]]) {
    const r = await call('/v1/completions', { prompt, max_tokens: 0, echo: true, logprobs: 2 });
    assert.equal(r.status, 200);
    const c = r.json.choices[0];
    const text = model.tokenizer.decode(ids);
    assert.equal(c.text, text);
    assert.equal(c.finish_reason, 'length');
    assert.deepEqual(r.json.usage, { prompt_tokens: ids.length, completion_tokens: 0, total_tokens: ids.length });
    checkCompletionLogprobs(c.logprobs, ids, rows, 2, 0);
    const off = c.logprobs.text_offset;
    assert.equal(off[0], 0);
    c.logprobs.tokens.forEach((t: string, i: number) => {
      assert.equal(text.slice(off[i], off[i] + t.length), t, `token ${i}`);
      if (i + 1 < off.length) assert.equal(off[i + 1], off[i] + t.length);
    });
  }

  // lm-evaluation-harness's request: ids, echo, logprobs 1, max_tokens 1, greedy. The continuation's
  // log-likelihood is token_logprobs[ctxlen:-1], its greediness each against max(top_logprobs).
  const ctx = model.tokenizer.encode('It was a dark and stormy night,'), cont = model.tokenizer.encode(' and the rain fell', false);
  const all = [...ctx, ...cont];
  const h = await call('/v1/completions', { model: 'demo', prompt: [all], echo: true, logprobs: 1, max_tokens: 1, temperature: 0, seed: 1234 });
  assert.equal(h.status, 200);
  const lp = h.json.choices[0].logprobs;
  assert.equal(lp.token_logprobs.length, all.length + 1);
  const rowsAll = await logSoftmaxRows(all);
  const expected = cont.reduce((s, id, i) => s + rowsAll[ctx.length + i - 1][id], 0);
  const got = lp.token_logprobs.slice(ctx.length, -1).reduce((s: number, x: number) => s + x, 0);
  near(got, expected, 'continuation log-likelihood');
  const greedy = cont.every((id, i) => topIds(rowsAll[ctx.length + i - 1], 1)[0] === id);
  assert.equal(lp.token_logprobs.slice(ctx.length, -1).every((x: number, i: number) => x === Math.max(...Object.values(lp.top_logprobs.slice(ctx.length, -1)[i]) as number[])), greedy);
  // Its batches (batch_size > 1): several token-id prompts in one request, a choice each, each the
  // answer the prompt gets alone.
  const other = model.tokenizer.encode('The old man looked at the sea');
  const alone = (await call('/v1/completions', { prompt: [other], echo: true, logprobs: 1, max_tokens: 1, temperature: 0 })).json.choices[0];
  const batch = await call('/v1/completions', { model: 'demo', prompt: [all, other], echo: true, logprobs: 1, max_tokens: 1, temperature: 0, seed: 1234 });
  assert.equal(batch.status, 200);
  assert.deepEqual(batch.json.choices.map((c: Json) => c.logprobs), [lp, alone.logprobs]);
  assert.deepEqual(batch.json.choices.map((c: Json) => c.index), [0, 1]);

  // echo of a text prompt: the prompt as sent, then the completion; its first token is </s>.
  const e = await call('/v1/completions', { prompt: PROMPT, max_tokens: 4, temperature: 0, echo: true, logprobs: 1 });
  const ref = await run(PROMPT, { maxTokens: 4, temperature: 0 });
  assert.equal(e.json.choices[0].text, PROMPT + ref.text);
  const eids = [...ref.promptIds, ...ref.generatedIds];
  checkCompletionLogprobs(e.json.choices[0].logprobs, eids, await logSoftmaxRows(eids), 1, 0, ref.promptIds.length);
  assert.equal(e.json.choices[0].logprobs.tokens[0], '');
  assert.equal(e.json.choices[0].logprobs.text_offset[ref.promptIds.length], PROMPT.length);
  // echo without logprobs: the text only.
  const plain = await call('/v1/completions', { prompt: PROMPT, max_tokens: 4, temperature: 0, echo: true });
  assert.deepEqual([plain.json.choices[0].text, plain.json.choices[0].logprobs], [PROMPT + ref.text, null]);
});

test('completions: a token cut by a stop string keeps its logprob, and the end-of-sequence token has one', async () => {
  const ref = await run(PROMPT, { maxTokens: 12, temperature: 0 });
  // A stop string starting inside the 4th token: text ends before it, the 4th token stays.
  const pieces = ref.generatedIds.map((id) => model.tokenizer.decode([id]));
  const before = pieces.slice(0, 3).join('');
  const stop = pieces[3].slice(1) + pieces[4];
  const r = await call('/v1/completions', { prompt: PROMPT, max_tokens: 12, temperature: 0, stop, logprobs: 1 });
  const c = r.json.choices[0];
  assert.equal(c.finish_reason, 'stop');
  assert.equal(c.text, before + pieces[3].slice(0, 1));
  assert.equal(r.json.usage.completion_tokens, 5);
  assert.deepEqual(c.logprobs.tokens, pieces.slice(0, 5));

  // A second server whose model's end-of-sequence token is the greedy 3rd token.
  const m = await loadModel(MODELS['5m'], { backend: 'cpu' });
  m.checkpoint.generation.eosTokenId = [ref.generatedIds[2]];
  const s = createServer(m);
  const url = await s.listen(0);
  try {
    const e = await call('/v1/completions', { prompt: PROMPT, max_tokens: 12, temperature: 0, logprobs: 1 }, url);
    const ec = e.json.choices[0];
    assert.equal(ec.finish_reason, 'stop');
    assert.equal(ec.text, pieces.slice(0, 2).join(''));
    assert.equal(e.json.usage.completion_tokens, 2, 'the end-of-sequence token is not counted');
    assert.deepEqual(ec.logprobs.tokens, pieces.slice(0, 3), 'but it has its logprob, last');
    const ids = [...ref.promptIds, ...ref.generatedIds.slice(0, 3)];
    checkCompletionLogprobs(ec.logprobs, ids, await logSoftmaxRows(ids), 1, ref.promptIds.length, 0);
    const streamed = await fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: PROMPT, max_tokens: 12, temperature: 0, logprobs: 1, stream: true }) });
    const events = (await streamed.text()).split('\n\n').filter((b) => b && b !== 'data: [DONE]').map((b) => JSON.parse(b.slice(6)));
    assert.deepEqual(events.at(-1).choices[0].logprobs.tokens, [pieces[2]], 'the final chunk carries the end-of-sequence token');
  } finally {
    await s.close();
    m.dispose();
  }
});

/** The logprobs of a stream's chunks joined. */
function joined(cs: Json[]): Json {
  const out: Json = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  for (const c of cs) {
    const lp = c.choices[0]?.logprobs;
    if (lp) for (const k of Object.keys(out)) out[k].push(...lp[k]);
  }
  return out;
}

test('streaming: each chunk carries its tokens\' logprobs; joined they are the non-streamed ones', async () => {
  const ref = await run(PROMPT, { maxTokens: 24, temperature: 0 });
  const stop = ref.text.slice(10, 14);
  const bodies = [
    { prompt: PROMPT, max_tokens: 16, temperature: 0, logprobs: 2 },
    { prompt: PROMPT, max_tokens: 16, temperature: 0, logprobs: 2, echo: true },
    { prompt: model.tokenizer.encode('café über 日本', false), max_tokens: 8, temperature: 0.8, seed: 2, logprobs: 5, echo: true },
    { prompt: PROMPT, max_tokens: 24, temperature: 0, logprobs: 1, stop },
    { prompt: PROMPT, max_tokens: 0, logprobs: 1, echo: true },
  ];
  for (const body of bodies) {
    const whole = (await call('/v1/completions', body)).json.choices[0];
    const cs = await chunks('/v1/completions', body);
    assert.equal(cs.map((c) => c.choices[0].text).join(''), whole.text, JSON.stringify(body));
    assert.deepEqual(joined(cs), whole.logprobs, JSON.stringify(body));
    assert.ok(cs.length > 2 || body.max_tokens === 0);
    if (body.echo) assert.equal(cs[0].choices[0].logprobs.token_logprobs[0], null, 'the echoed prompt comes first');
  }
  // Chat: the same with content lists.
  const chat = { messages: [{ role: 'user', content: 'Tell me about the sea.' }], max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 3 };
  const whole = (await call('/v1/chat/completions', chat)).json.choices[0];
  const cs = await chunks('/v1/chat/completions', chat);
  assert.deepEqual(cs.flatMap((c) => c.choices[0].logprobs?.content ?? []), whole.logprobs.content);
  assert.equal(cs[0].choices[0].logprobs, null, 'the role chunk has none');
});

test('chat: logprobs.content per token with bytes and top_logprobs, matching the transcript\'s logits', async () => {
  const messages = [{ role: 'user', content: 'Tell me about the sea.' }];
  const r = await call('/v1/chat/completions', { messages, max_tokens: 10, temperature: 0, logprobs: true, top_logprobs: 4 });
  assert.equal(r.status, 200);
  const c = r.json.choices[0];
  const transcript = chatTranscript(messages as Parameters<typeof chatTranscript>[0]);
  const ref = await run(transcript, { maxTokens: 10, temperature: 0, stop: [CHAT_STOP] });
  assert.equal(c.message.content, ref.text.trimStart());
  assert.equal(c.logprobs.content.length, ref.generatedIds.length);
  const ids = [...ref.promptIds, ...ref.generatedIds];
  const rows = await logSoftmaxRows(ids);
  c.logprobs.content.forEach((e: Json, j: number) => {
    assert.deepEqual(Object.keys(e), ['token', 'logprob', 'bytes', 'top_logprobs']);
    const row = rows[ref.promptIds.length - 1 + j];
    assert.deepEqual({ text: e.token, bytes: e.bytes }, tokenText(model.tokenizer, ref.generatedIds[j]));
    // A whole token's bytes are its text's UTF-8 (whatever the vocabulary spells: " ." decodes to ".").
    if (!e.token.startsWith('bytes:')) assert.deepEqual(e.bytes, [...Buffer.from(e.token, 'utf8')]);
    near(e.logprob, row[ref.generatedIds[j]], `token ${j}`);
    assert.deepEqual(e.top_logprobs.map((t: Json) => t.token), topIds(row, 4).map((id) => tokenText(model.tokenizer, id).text));
    e.top_logprobs.forEach((t: Json, k: number) => {
      assert.deepEqual(Object.keys(t), ['token', 'logprob', 'bytes']);
      near(t.logprob, row[topIds(row, 4)[k]], `top ${k} of token ${j}`);
      if (k > 0) assert.ok(e.top_logprobs[k - 1].logprob >= t.logprob);
    });
    assert.equal(e.logprob, e.top_logprobs[0].logprob, 'greedy: the top token');
  });
  assert.equal(c.logprobs.content.map((e: Json) => e.token).join('').trimStart(), c.message.content);
  // logprobs without top_logprobs: no alternatives; logprobs false: none.
  const bare = (await call('/v1/chat/completions', { messages, max_tokens: 2, temperature: 0, logprobs: true })).json.choices[0];
  assert.ok(bare.logprobs.content.every((e: Json) => e.top_logprobs.length === 0));
  const off = (await call('/v1/chat/completions', { messages, max_tokens: 2, temperature: 0, logprobs: false })).json.choices[0];
  assert.equal(off.logprobs, null);
});

test('bad logprobs requests are 400s naming the field and the limit', async () => {
  const chat = { messages: [{ role: 'user', content: 'hi' }] };
  const cases: [string, object, RegExp, string][] = [
    ['/v1/completions', { prompt: 'x', logprobs: 6 }, /^logprobs must be an integer in \[0, 5\]$/, 'logprobs'],
    ['/v1/completions', { prompt: 'x', logprobs: -1 }, /^logprobs must be an integer in \[0, 5\]$/, 'logprobs'],
    ['/v1/completions', { prompt: 'x', logprobs: true }, /^logprobs must be an integer in \[0, 5\]$/, 'logprobs'],
    ['/v1/completions', { prompt: 'x', echo: 'yes' }, /^echo must be true or false$/, 'echo'],
    ['/v1/completions', { prompt: [2, V + 5], echo: true, logprobs: 1, max_tokens: 0 }, new RegExp(`^prompt token id ${V + 5} \\(at index 1\\) is not in the vocabulary \\[0, ${V}\\)$`), 'prompt'],
    ['/v1/completions', { prompt: [[2, -3]] }, /^prompt token id -3 \(at index 1\)/, 'prompt'],
    ['/v1/completions', { prompt: [2, 1.5] }, /^prompt must be a string, an array of token ids, or a non-empty array of strings or of token-id arrays$/, 'prompt'],
    ['/v1/completions', { prompt: [] }, /^prompt must be a string, an array of token ids, or a non-empty array of strings or of token-id arrays$/, 'prompt'],
    ['/v1/completions', { prompt: [[2], 3] }, /^prompt must be a string, an array of token ids, or a non-empty array of strings or of token-id arrays$/, 'prompt'],
    ['/v1/completions', { prompt: [2, 'a'] }, /^prompt must be a string, an array of token ids, or a non-empty array of strings or of token-id arrays$/, 'prompt'],
    ['/v1/completions', { prompt: [2, 2 ** 60] }, /^prompt\[1\] must be a string, an array of token ids, or a non-empty array of strings or of token-id arrays$/, 'prompt[1]'],
    ['/v1/completions', { prompt: [[]] }, /^prompt\[0\] must be a string, an array of token ids, or a non-empty array of strings or of token-id arrays$/, 'prompt[0]'],
    ['/v1/completions', { prompt: new Array(1025).fill(5) }, /^prompt of 1025 tokens is longer than the model's context of 1024$/, 'prompt'],
    // A scoring request with no room for its generated entry (lm-evaluation-harness would drop a prompt token instead).
    ['/v1/completions', { prompt: new Array(1024).fill(5), echo: true, logprobs: 1, max_tokens: 1 }, /^prompt of 1024 tokens fills the model's context of 1024: no room for max_tokens with echo and logprobs \(send at most 1023 tokens, or max_tokens 0\)$/, 'prompt'],
    ['/v1/completions', { prompt: 'x', best_of: 2 }, /^best_of must equal n \(1\)/, 'best_of'],
    ['/v1/completions', { prompt: 'x', suffix: 'y' }, /^suffix is not supported$/, 'suffix'],
    ['/v1/chat/completions', { ...chat, top_logprobs: 2 }, /^top_logprobs requires logprobs: true$/, 'top_logprobs'],
    ['/v1/chat/completions', { ...chat, logprobs: false, top_logprobs: 0 }, /^top_logprobs requires logprobs: true$/, 'top_logprobs'],
    ['/v1/chat/completions', { ...chat, logprobs: true, top_logprobs: 21 }, /^top_logprobs must be an integer in \[0, 20\]$/, 'top_logprobs'],
    ['/v1/chat/completions', { ...chat, logprobs: 1 }, /^logprobs must be true or false$/, 'logprobs'],
  ];
  for (const [path, body, message, param] of cases) {
    const r = await call(path, body);
    assert.equal(r.status, 400, JSON.stringify(body).slice(0, 80));
    assert.match(r.json.error.message, message);
    assert.equal(r.json.error.param, param);
  }
});

test('webgpu: greedy with logprobs (the host loop) picks the chained path\'s tokens; logprobs are its logits\' log-softmax', async (t) => {
  const gpu = await gpuOrSkip(t);
  if (!gpu) return;
  const ck = await checkpoint(MODELS['5m']);
  const g: Runner = await createWebGpuRunner(ck.config, ck.weights, { gpu });
  try {
    const go = async (prompt: string, o: GenerateOptions) => {
      const gen = generate(g, ck.tokenizer, prompt, o);
      for await (const _ of gen);
      return gen.result;
    };
    for (const prompt of [PROMPT, 'The old man looked at the sea and said']) {
      const chained = await go(prompt, { maxTokens: 16, temperature: 0 });
      const r = await go(prompt, { maxTokens: 16, temperature: 0, logprobs: 2, promptLogprobs: true });
      assert.deepEqual(r.generatedIds, chained.generatedIds);
      // The reference: the same forwards (the prompt with all rows, then one token a step), log-softmax by hand.
      g.reset();
      const rowsOf = (logits: Float32Array) => Array.from({ length: logits.length / V }, (_, i) => {
        const row = logits.subarray(i * V, (i + 1) * V);
        let max = -Infinity, sum = 0;
        for (const x of row) if (x > max) max = x;
        for (const x of row) sum += Math.exp(x - max);
        return Float64Array.from(row, (x) => x - max - Math.log(sum));
      });
      const rows = rowsOf(await g.forward(r.promptIds, { allLogits: true }));
      for (let i = 1; i < r.promptIds.length; i++) checkEntry(r.promptLogprobs![i], rows[i - 1], 2, `prompt token ${i}`);
      let step = rows.at(-1)!;
      for (let j = 0; j < r.generatedIds.length; j++) {
        checkEntry(r.logprobs![j], step, 2, `generated token ${j}`);
        assert.equal(r.logprobs![j].top[0].id, r.generatedIds[j]);
        if (j + 1 < r.generatedIds.length) step = rowsOf(await g.forward([r.generatedIds[j]]))[0];
      }
    }
  } finally {
    g.dispose();
    gpu.device.destroy();
  }
});

test('chat logprobs cover the content only: not the trimmed leading whitespace, not the stop string', async () => {
  const messages = [{ role: 'user', content: 'Tell me a story about the old house.' }];
  let cut = 0;
  for (const stop of [' the', ' and', ' of', '.']) {
    for (const stream of [false, true]) {
      const body = { messages, max_tokens: 40, temperature: 0, logprobs: true, stop: [stop], ...(stream ? { stream: true } : {}) };
      const r = stream ? joinedChat(await chunks('/v1/chat/completions', body)) : (await call('/v1/chat/completions', body)).json.choices[0];
      const content: string = stream ? r.content : r.message.content;
      const tokens: string[] = r.logprobs.content.map((e: Json) => e.token);
      assert.equal(tokens.join('').trimStart(), content, `stop ${JSON.stringify(stop)}${stream ? ', streamed' : ''}: the tokens spell the content`);
      if (r.finish_reason === 'stop') cut++;
    }
  }
  assert.ok(cut >= 4, 'some generations ended on their stop string');
});

/** A streamed chat answer's content and logprobs, joined from its chunks. */
function joinedChat(cs: Json[]): Json {
  const choices = cs.filter((c) => c.choices?.length).map((c) => c.choices[0]);
  return {
    content: choices.map((c) => c.delta.content ?? '').join(''),
    logprobs: { content: choices.flatMap((c) => c.logprobs?.content ?? []) },
    finish_reason: choices.at(-1).finish_reason,
  };
}

test('completions: an echoed text prompt\'s offsets are those of its own text, spaces before punctuation included', async () => {
  const prompt = "Hello , world . It is n't so , is it ?";
  const r = await call('/v1/completions', { prompt, echo: true, logprobs: 0, max_tokens: 0 });
  assert.equal(r.status, 200);
  const c = r.json.choices[0], lp = c.logprobs;
  assert.equal(c.text, prompt);
  assert.equal(lp.tokens.join(''), prompt, 'the tokens spell the prompt as sent');
  lp.tokens.forEach((t: string, i: number) => assert.equal(c.text.slice(lp.text_offset[i], lp.text_offset[i] + t.length), t, `token ${i}`));
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { join } from 'node:path';
import { loadModel, type Model } from '../src/engine/model.js';
import type { GenerateOptions, GenerationResult } from '../src/engine/generate.js';
import { createServer, type DejavuServer } from '../src/server/http.js';
import { CHAT_STOP, chatJob, chatTranscript } from '../src/server/openai.js';
import { FifoQueue } from '../src/server/queue.js';
import { MODELS, oneLineError, ROOT, runCli } from './helpers.js';
import { startDemoServer, type DemoServer } from './server-helpers.js';

// One server on the embedded demo model, on the CPU backend: deterministic, and fast enough.
let model: Model, server: DejavuServer, base: string, demo: DemoServer;

before(async () => { demo = await startDemoServer(); ({ model, server, base } = demo); });

after(() => demo.stop());

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

/** GET without a body; POST with one (an object is sent as JSON, a string as it is). */
async function call(path: string, body?: unknown, method = body === undefined ? 'GET' : 'POST', url = base): Promise<{ status: number; json: Json; headers: Headers }> {
  const res = await fetch(url + path, { method, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) });
  return { status: res.status, headers: res.headers, json: await res.json() };
}

/** A streamed response: its `data:` payloads in order (JSON, or the string "[DONE]"). */
async function stream(path: string, body: object): Promise<{ status: number; contentType: string | null; events: Json[] }> {
  const res = await fetch(base + path, { method: 'POST', body: JSON.stringify(body) });
  const raw = await res.text();
  const blocks = raw.split('\n\n');
  assert.equal(blocks.pop(), '', 'every event ends with a blank line');
  const events = blocks.map((b) => {
    assert.match(b, /^data: /);
    const data = b.slice('data: '.length);
    return data === '[DONE]' ? data : JSON.parse(data);
  });
  return { status: res.status, contentType: res.headers.get('content-type'), events };
}

/** What the library gives for the same prompt and options (run while the server is idle: one runner). */
async function generated(prompt: string, options: GenerateOptions): Promise<GenerationResult> {
  const g = model.generate(prompt, options);
  for await (const _ of g);
  return g.result;
}

const PROMPT = 'It was a dark and stormy night, and';

test('GET /v1/models, /v1/models/{id} and /health', async () => {
  const list = await call('/v1/models');
  assert.equal(list.status, 200);
  assert.equal(list.json.object, 'list');
  assert.deepEqual(list.json.data.map((m: Json) => [m.id, m.object, m.owned_by]), [['demo', 'model', 'dejavu']]);
  assert.ok(Number.isInteger(list.json.data[0].created));
  const one = await call('/v1/models/demo');
  assert.equal(one.status, 200);
  assert.deepEqual(one.json, list.json.data[0]);
  const health = await call('/health');
  assert.equal(health.status, 200);
  assert.deepEqual(health.json, { status: 'ok', model: 'demo', backend: 'cpu', queue: 0 });
});

test('a greedy completion is model.generate()\'s greedy text, with usage counted in tokens', async () => {
  const expected = await generated(PROMPT, { maxTokens: 12, temperature: 0 });
  const r = await call('/v1/completions', { model: 'demo', prompt: PROMPT, max_tokens: 12, temperature: 0 });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type')!, /^application\/json/);
  const j = r.json;
  assert.match(j.id, /^cmpl-/);
  assert.equal(j.object, 'text_completion');
  assert.equal(j.model, 'demo');
  assert.ok(Number.isInteger(j.created));
  assert.equal(j.choices.length, 1);
  assert.deepEqual(j.choices[0], { text: expected.text, index: 0, logprobs: null, finish_reason: 'length' });
  assert.equal(expected.generatedIds.length, 12);
  assert.deepEqual(j.usage, { prompt_tokens: expected.promptIds.length, completion_tokens: 12, total_tokens: expected.promptIds.length + 12 });
  assert.equal(expected.promptIds.length, model.tokenizer.encode(PROMPT).length);

  // A prompt given as an array of one string, `model` left out, and OpenAI's default of 16 tokens.
  const arr = await call('/v1/completions', { prompt: [PROMPT], temperature: 0 });
  assert.equal(arr.status, 200);
  assert.equal(arr.json.usage.completion_tokens, 16);
  assert.ok(arr.json.choices[0].text.startsWith(expected.text));
});

test('a streamed completion: its deltas add up to the non-streamed text, then [DONE]', async () => {
  const body = { prompt: PROMPT, max_tokens: 20, temperature: 0 };
  const whole = (await call('/v1/completions', body)).json;
  const s = await stream('/v1/completions', { ...body, stream: true, stream_options: { include_usage: true } });
  assert.equal(s.status, 200);
  assert.match(s.contentType!, /^text\/event-stream/);
  assert.equal(s.events.at(-1), '[DONE]');
  const chunks = s.events.slice(0, -1);
  const usage = chunks.pop();
  assert.deepEqual(usage.choices, []);
  assert.deepEqual(usage.usage, whole.usage);
  const last = chunks.at(-1);
  assert.equal(last.choices[0].finish_reason, 'length');
  assert.equal(last.choices[0].text, '');
  for (const c of chunks) {
    assert.equal(c.object, 'text_completion');
    assert.equal(c.id, chunks[0].id);
    assert.equal(c.model, 'demo');
  }
  assert.ok(chunks.slice(0, -1).every((c: Json) => c.choices[0].finish_reason === null));
  assert.ok(chunks.length > 3, 'the text comes in pieces');
  assert.equal(chunks.map((c: Json) => c.choices[0].text).join(''), whole.choices[0].text);

  // Without include_usage there is no usage chunk.
  const plain = await stream('/v1/completions', { ...body, stream: true });
  assert.equal(plain.events.at(-1), '[DONE]');
  assert.ok(plain.events.slice(0, -1).every((c: Json) => c.choices.length === 1 && !('usage' in c)));
  assert.equal(plain.events.slice(0, -1).map((c: Json) => c.choices[0].text).join(''), whole.choices[0].text);
});

test('several prompts and n: a choice per prompt and sample, in OpenAI\'s index order; each as the library generates it', async () => {
  const B = 'Once upon a time there was';
  const a = await generated(PROMPT, { maxTokens: 6, temperature: 0 }), b = await generated(B, { maxTokens: 6, temperature: 0 });
  const want = (r: GenerationResult, index: number) => ({ text: r.text, index, logprobs: null, finish_reason: 'length' });
  // Texts, then the same prompts as token-id arrays: the same choices; usage adds up over them.
  for (const prompt of [[PROMPT, B], [model.tokenizer.encode(PROMPT), model.tokenizer.encode(B)]]) {
    const r = await call('/v1/completions', { prompt, max_tokens: 6, temperature: 0 });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json.choices, [want(a, 0), want(b, 1)]);
    const p = a.promptIds.length + b.promptIds.length;
    assert.deepEqual(r.json.usage, { prompt_tokens: p, completion_tokens: 12, total_tokens: p + 12 });
  }
  // n samples of each prompt, prompt by prompt; sample j with seed + j (sample 0 is the n = 1 answer).
  const opts = { maxTokens: 8, temperature: 1, seed: 11 };
  const samples: GenerationResult[] = [];
  for (const prompt of [PROMPT, B]) for (let j = 0; j < 3; j++) samples.push(await generated(prompt, { ...opts, seed: opts.seed + j }));
  assert.ok(new Set(samples.slice(0, 3).map((x) => x.text)).size > 1, 'different seeds, different samples');
  const r = await call('/v1/completions', { prompt: [PROMPT, B], n: 3, best_of: 3, max_tokens: 8, temperature: 1, seed: 11 });
  assert.equal(r.status, 200);
  assert.deepEqual(r.json.choices.map((c: Json) => [c.index, c.text]), samples.map((x, i) => [i, x.text]));
  const completion = samples.reduce((n, x) => n + x.generatedIds.length, 0);
  assert.deepEqual(r.json.usage, { prompt_tokens: a.promptIds.length + b.promptIds.length, completion_tokens: completion, total_tokens: a.promptIds.length + b.promptIds.length + completion });
  const one = await call('/v1/completions', { prompt: PROMPT, max_tokens: 8, temperature: 1, seed: 11 });
  assert.equal(one.json.choices[0].text, samples[0].text);

  // Streamed: each choice's chunks carry its index and end with its finish_reason; joined per index,
  // the non-streamed texts; one usage chunk for all, then [DONE].
  const s = await stream('/v1/completions', { prompt: [PROMPT, B], n: 2, max_tokens: 8, temperature: 1, seed: 11, stream: true, stream_options: { include_usage: true } });
  assert.equal(s.events.at(-1), '[DONE]');
  const chunks = s.events.slice(0, -2), usage = s.events.at(-2);
  assert.deepEqual(usage.choices, []);
  assert.equal(usage.usage.completion_tokens, [0, 1, 3, 4].reduce((n, i) => n + samples[i].generatedIds.length, 0));
  const indexes = chunks.map((c: Json) => c.choices[0].index);
  assert.deepEqual(indexes, [...indexes].sort((p, q) => p - q), 'choice by choice, in index order');
  [0, 1, 3, 4].forEach((k, index) => {
    const mine = chunks.filter((c: Json) => c.choices[0].index === index);
    assert.equal(mine.map((c: Json) => c.choices[0].text).join(''), samples[k].text, `choice ${index}`);
    assert.equal(mine.at(-1).choices[0].finish_reason, 'length');
    assert.ok(mine.slice(0, -1).every((c: Json) => c.choices[0].finish_reason === null));
  });

  // Chat: n replies to one transcript, each stream opening with the assistant's role.
  const messages = [{ role: 'user', content: 'Tell me a story.' }];
  const chat = await call('/v1/chat/completions', { messages, n: 2, max_tokens: 6, temperature: 1, seed: 3 });
  assert.deepEqual(chat.json.choices.map((c: Json) => c.index), [0, 1]);
  const cs = await stream('/v1/chat/completions', { messages, n: 2, max_tokens: 6, temperature: 1, seed: 3, stream: true });
  for (const index of [0, 1]) {
    const mine = cs.events.slice(0, -1).filter((c: Json) => c.choices[0].index === index);
    assert.deepEqual(mine[0].choices[0].delta, { role: 'assistant', content: '' });
    assert.equal(mine.slice(1).map((c: Json) => c.choices[0].delta.content ?? '').join(''), chat.json.choices[index].message.content);
  }
});

test('chat completions: the plain-text transcript, the reply without its leading space, streamed alike', async () => {
  const messages = [
    { role: 'system', content: 'You are a storyteller.' },
    { role: 'user', content: 'Tell me about the sea.' },
  ];
  const transcript = chatTranscript(messages as Parameters<typeof chatTranscript>[0]);
  assert.equal(transcript, 'system: You are a storyteller.\nuser: Tell me about the sea.\nassistant:');
  const expected = await generated(transcript, { maxTokens: 20, temperature: 0, stop: [CHAT_STOP] });

  const r = await call('/v1/chat/completions', { model: 'demo', messages, max_tokens: 20, temperature: 0 });
  assert.equal(r.status, 200);
  const j = r.json;
  assert.match(j.id, /^chatcmpl-/);
  assert.equal(j.object, 'chat.completion');
  assert.equal(j.model, 'demo');
  assert.deepEqual(j.choices, [{ index: 0, message: { role: 'assistant', content: expected.text.trimStart() }, logprobs: null, finish_reason: expected.finishReason }]);
  assert.notEqual(expected.text, expected.text.trimStart(), 'the model continues "assistant:" with a space');
  assert.deepEqual(j.usage, { prompt_tokens: expected.promptIds.length, completion_tokens: expected.generatedIds.length, total_tokens: expected.promptIds.length + expected.generatedIds.length });

  const s = await stream('/v1/chat/completions', { messages, max_tokens: 20, temperature: 0, stream: true });
  assert.equal(s.events.at(-1), '[DONE]');
  const chunks = s.events.slice(0, -1);
  assert.ok(chunks.every((c: Json) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id));
  assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' });
  assert.deepEqual(chunks.at(-1).choices[0], { index: 0, delta: {}, logprobs: null, finish_reason: expected.finishReason });
  assert.equal(chunks.slice(1, -1).map((c: Json) => c.choices[0].delta.content).join(''), j.choices[0].message.content);

  // Text parts are joined; "developer" is written as "system".
  const parts = chatTranscript([{ role: 'developer', content: 'Be brief.' }, { role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }]);
  assert.equal(parts, 'system: Be brief.\nuser: a\nb\nassistant:');
  // The assistant's turn ends where the model starts the user's next line, besides the client's stops.
  const job = chatJob({ messages: [{ role: 'user', content: 'hi' }], stop: '\n\n' }, 'demo', 1024);
  assert.deepEqual(job.choices[0].options.stop, ['\n\n', CHAT_STOP]);
  assert.equal(job.choices[0].options.maxTokens, 1024, 'no max_tokens: up to the end of the context, as OpenAI');
});

test('stop strings end the completion (finish_reason "stop") and are not returned, streamed or not', async () => {
  const full = await generated(PROMPT, { maxTokens: 24, temperature: 0 });
  const stop = full.text.slice(10, 14);
  const cut = full.text.slice(0, full.text.indexOf(stop));
  for (const s of [stop, ['nowhere-in-the-text', stop]]) {
    const r = await call('/v1/completions', { prompt: PROMPT, max_tokens: 24, temperature: 0, stop: s });
    assert.equal(r.status, 200);
    assert.equal(r.json.choices[0].text, cut);
    assert.equal(r.json.choices[0].finish_reason, 'stop');
  }
  const st = await stream('/v1/completions', { prompt: PROMPT, max_tokens: 24, temperature: 0, stop, stream: true });
  const chunks = st.events.slice(0, -1);
  assert.equal(chunks.map((c: Json) => c.choices[0].text).join(''), cut);
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
  // In chat too: the demo model answers "Hello." to a run of hellos, then a blank line.
  const hellos = [1, 2, 3].flatMap(() => [{ role: 'user', content: 'Hello.' }, { role: 'assistant', content: 'Hello.' }]);
  const chat = await call('/v1/chat/completions', { messages: [...hellos, { role: 'user', content: 'Hello.' }], max_tokens: 30, temperature: 0, stop: ['\n\n'] });
  assert.deepEqual([chat.json.choices[0].message.content, chat.json.choices[0].finish_reason], ['Hello.', 'stop']);
});

test('seeded sampling (temperature, top_p and the non-standard top_k) reproduces model.generate()', async () => {
  const opts = { temperature: 0.9, top_p: 0.95, top_k: 40, seed: 7, max_tokens: 10 };
  const expected = await generated('Once upon a time', { temperature: 0.9, topP: 0.95, topK: 40, seed: 7, maxTokens: 10 });
  const a = await call('/v1/completions', { prompt: 'Once upon a time', ...opts });
  const b = await call('/v1/completions', { prompt: 'Once upon a time', ...opts });
  assert.equal(a.json.choices[0].text, expected.text);
  assert.equal(b.json.choices[0].text, expected.text);
});

test('concurrent requests wait their turn and each gets its own answer', async () => {
  const prompts = ['The old man looked at the sea and said', 'Once upon a time', PROMPT];
  const expected = [];
  for (const p of prompts) expected.push((await generated(p, { maxTokens: 15, temperature: 0 })).text);
  const [a, b, c] = await Promise.all([
    call('/v1/completions', { prompt: prompts[0], max_tokens: 15, temperature: 0 }),
    stream('/v1/completions', { prompt: prompts[1], max_tokens: 15, temperature: 0, stream: true }),
    call('/v1/completions', { prompt: prompts[2], max_tokens: 15, temperature: 0 }),
  ]);
  assert.equal(a.json.choices[0].text, expected[0]);
  assert.equal(b.events.slice(0, -1).map((e: Json) => e.choices[0].text).join(''), expected[1]);
  assert.equal(c.json.choices[0].text, expected[2]);
  assert.equal((await call('/health')).json.queue, 0);
});

test('a client that disconnects mid-stream stops its generation; the server goes on', async () => {
  const prompt = 'Once upon a time';
  const promptLen = model.tokenizer.encode(prompt).length;
  await new Promise<void>((resolve, reject) => {
    const req = request(`${base}/v1/completions`, { method: 'POST' }, (res) => {
      assert.equal(res.statusCode, 200);
      res.once('data', () => { req.destroy(); resolve(); });
    });
    req.on('error', (e) => { if (!req.destroyed) reject(e); });
    req.end(JSON.stringify({ prompt, max_tokens: 1000, temperature: 0, stream: true }));
  });
  const t0 = Date.now();
  while ((await call('/health')).json.queue > 0) {
    assert.ok(Date.now() - t0 < 10_000, 'the generation did not stop');
    await new Promise((r) => setTimeout(r, 20));
  }
  // ~1000 tokens would take seconds on the CPU; it stopped within a few of the disconnect.
  assert.ok(model.runner.position < promptLen + 50, `runner position ${model.runner.position}`);
  const r = await call('/v1/completions', { prompt, max_tokens: 5, temperature: 0 });
  assert.equal(r.status, 200);
  assert.equal(r.json.usage.completion_tokens, 5);
});

test('bad requests get OpenAI-style JSON errors naming the problem; the server goes on serving', async () => {
  const long = 'word '.repeat(1100);
  const cases: [method: string, path: string, body: string | undefined, status: number, message: RegExp, param: string | null][] = [
    ['POST', '/v1/completions', '{"prompt": "x",', 400, /^request body is not valid JSON: /, null],
    ['POST', '/v1/completions', '', 400, /^request body is empty/, null],
    ['POST', '/v1/completions', '[1, 2]', 400, /^request body must be a JSON object$/, null],
    ['POST', '/v1/completions', '{"max_tokens": 4}', 400, /^prompt is required$/, 'prompt'],
    ['POST', '/v1/completions', '{"prompt": 3}', 400, /^prompt must be a string, an array of token ids, or a non-empty array of strings or of token-id arrays$/, 'prompt'],
    ['POST', '/v1/completions', '{"prompt": []}', 400, /^prompt must be a string, an array of token ids, or a non-empty array of strings or of token-id arrays$/, 'prompt'],
    ['POST', '/v1/completions', '{"prompt": ["a", 2]}', 400, /^prompt must be a string, an array of token ids, or a non-empty array of strings or of token-id arrays$/, 'prompt'],
    ['POST', '/v1/completions', '{"prompt": [[2, 5], []]}', 400, /^prompt\[1\] must be a string, an array of token ids, or a non-empty array of strings or of token-id arrays$/, 'prompt[1]'],
    ['POST', '/v1/completions', '{"prompt": "x", "max_tokens": "10"}', 400, /^max_tokens must be an integer >= 0$/, 'max_tokens'],
    ['POST', '/v1/completions', '{"prompt": "x", "max_tokens": -1}', 400, /^max_tokens must be an integer >= 0$/, 'max_tokens'],
    ['POST', '/v1/completions', '{"prompt": "x", "temperature": 2.5}', 400, /^temperature must be a number in \[0, 2\]$/, 'temperature'],
    ['POST', '/v1/completions', '{"prompt": "x", "top_p": 0}', 400, /^top_p must be a number in \(0, 1\]$/, 'top_p'],
    ['POST', '/v1/completions', '{"prompt": "x", "top_k": 1.5}', 400, /^top_k must be an integer >= 0$/, 'top_k'],
    ['POST', '/v1/completions', '{"prompt": "x", "seed": "7"}', 400, /^seed must be an integer$/, 'seed'],
    ['POST', '/v1/completions', '{"prompt": "x", "stop": ["a", 1]}', 400, /^stop must be a string or an array of strings$/, 'stop'],
    ['POST', '/v1/completions', '{"prompt": "x", "stream": "yes"}', 400, /^stream must be true or false$/, 'stream'],
    ['POST', '/v1/completions', '{"prompt": "x", "n": 0}', 400, /^n must be an integer in \[1, 128\]$/, 'n'],
    ['POST', '/v1/completions', '{"prompt": "x", "n": 129}', 400, /^n must be an integer in \[1, 128\]$/, 'n'],
    ['POST', '/v1/completions', '{"prompt": ["x", "y"], "n": 65}', 400, /^2 prompt\(s\) × n = 65 asks for 130 completions: at most 128 per request$/, 'prompt'],
    ['POST', '/v1/completions', '{"prompt": "x", "best_of": 3}', 400, /^best_of must equal n \(1\): choosing the best of more samples is not supported$/, 'best_of'],
    ['POST', '/v1/completions', '{"prompt": "x", "n": 2, "best_of": 3}', 400, /^best_of must equal n \(2\)/, 'best_of'],
    ['POST', '/v1/completions', JSON.stringify({ prompt: ['x', long] }), 400, /^prompt\[1\]: prompt of 1102 tokens is longer than the model's context of 1024$/, 'prompt'],
    ['POST', '/v1/completions', JSON.stringify({ prompt: [[2, 5], [2, 999999]] }), 400, /^prompt\[1\]: .*999999/, 'prompt'],
    ['POST', '/v1/completions', '{"prompt": "x", "suffix": "y"}', 400, /^suffix is not supported$/, 'suffix'],
    ['POST', '/v1/completions', '{"prompt": "x", "logit_bias": {"5": 1}}', 400, /^logit_bias is not supported$/, 'logit_bias'],
    ['POST', '/v1/completions', '{"prompt": "x", "logprobs": 6}', 400, /^logprobs must be an integer in \[0, 5\]$/, 'logprobs'],
    ['POST', '/v1/completions', '{"prompt": "x", "presence_penalty": 0.5}', 400, /^presence_penalty is not supported/, 'presence_penalty'],
    ['POST', '/v1/completions', JSON.stringify({ prompt: long }), 400, /^prompt of 1102 tokens is longer than the model's context of 1024$/, 'prompt'],
    ['POST', '/v1/completions', JSON.stringify({ prompt: 'a'.repeat(1 << 20) }), 413, /^request body is larger than the limit of 1048576 bytes$/, null],
    ['POST', '/v1/completions', '{"prompt": "x", "model": "gpt-4"}', 404, /^The model `gpt-4` does not exist/, 'model'],
    ['GET', '/v1/models/gpt-4', undefined, 404, /^The model `gpt-4` does not exist/, 'model'],
    ['POST', '/v1/chat/completions', '{"messages": []}', 400, /^messages must hold at least one message$/, 'messages'],
    ['POST', '/v1/chat/completions', '{"messages": "hi"}', 400, /^messages must be an array of messages$/, 'messages'],
    ['POST', '/v1/chat/completions', '{"messages": [{"role": "robot", "content": "hi"}]}', 400, /^messages\[0\]\.role must be "system", "user" or "assistant"$/, 'messages[0].role'],
    ['POST', '/v1/chat/completions', '{"messages": [{"role": "user", "content": "hi"}, {"role": "user"}]}', 400, /^messages\[1\]\.content is required$/, 'messages[1].content'],
    ['POST', '/v1/chat/completions', '{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}', 400, /^messages\[0\]\.content must be a string or an array of text parts$/, 'messages[0].content'],
    ['POST', '/v1/chat/completions', '{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}', 400, /^tools is not supported/, 'tools'],
    ['POST', '/v1/chat/completions', '{"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 1}', 400, /^top_logprobs requires logprobs: true$/, 'top_logprobs'],
    ['POST', '/v1/chat/completions', '{"messages": [{"role": "user", "content": "hi"}], "n": 200}', 400, /^n must be an integer in \[1, 128\]$/, 'n'],
    ['POST', '/v1/chat/completions', JSON.stringify({ messages: [{ role: 'user', content: long }] }), 400, /is longer than the model's context of 1024$/, 'messages'],
    ['GET', '/v1/nope', undefined, 404, /^Unknown route: GET \/v1\/nope$/, null],
    ['GET', '/v1/completions', undefined, 405, /^Method GET is not allowed on \/v1\/completions \(use POST\)$/, null],
    ['POST', '/v1/models', '{}', 405, /^Method POST is not allowed on \/v1\/models \(use GET\)$/, null],
  ];
  for (const [method, path, body, status, message, param] of cases) {
    const what = `${method} ${path} ${body?.slice(0, 80)}`;
    const r = await call(path, body, method);
    assert.equal(r.status, status, what);
    assert.match(r.headers.get('content-type')!, /^application\/json/, what);
    assert.deepEqual(Object.keys(r.json), ['error'], what);
    const e = r.json.error;
    assert.match(e.message, message, what);
    assert.ok(!e.message.includes('\n'), `one line: ${what}`);
    assert.equal(e.type, 'invalid_request_error', what);
    assert.equal(e.param, param, what);
    assert.equal(e.code, status === 404 && param === 'model' ? 'model_not_found' : null, what);
    if (status === 405) assert.ok(r.headers.get('allow'), what);
  }
  // Fields the server doesn't use are ignored; no-op values of unsupported ones are accepted.
  const ok = await call('/v1/completions', { prompt: PROMPT, max_tokens: 3, temperature: 0, user: 'me', n: 1, best_of: 1, echo: false, logprobs: null, stop: null, seed: null });
  assert.equal(ok.status, 200);
  assert.equal(ok.json.usage.completion_tokens, 3);
  assert.equal((await call('/health')).json.status, 'ok');
});

test('errors inside a generation: a 500 with one line (an SSE error event once streaming) and the server goes on', async () => {
  // A second model and server, whose weights are disposed under them: the next forward pass throws.
  const m = await loadModel(MODELS['5m'], { backend: 'cpu' });
  const logged: string[] = [];
  const s = createServer(m, { log: (line) => logged.push(line) });
  const url = await s.listen(0);
  try {
    const events = await new Promise<string>((resolve, reject) => {
      const req = request(`${url}/v1/completions`, { method: 'POST' }, (res) => {
        let raw = '';
        res.setEncoding('utf8');
        res.once('data', () => m.dispose());
        res.on('data', (d: string) => { raw += d; });
        res.on('end', () => resolve(raw));
      });
      req.on('error', reject);
      req.end(JSON.stringify({ prompt: PROMPT, max_tokens: 500, temperature: 0, stream: true }));
    });
    const blocks = events.trim().split('\n\n');
    assert.ok(blocks.length >= 2);
    assert.ok(!events.includes('[DONE]'));
    const err = JSON.parse(blocks.at(-1)!.slice('data: '.length));
    assert.equal(err.error.type, 'server_error');
    assert.match(err.error.message, /^internal error: [^\n]+$/);

    const r = await call('/v1/completions', { prompt: PROMPT, max_tokens: 5 }, 'POST', url);
    assert.equal(r.status, 500);
    assert.equal(r.json.error.type, 'server_error');
    assert.match(r.json.error.message, /^internal error: [^\n]+$/);
    assert.equal(logged.length, 2);
    assert.ok(logged.every((l) => l.startsWith('POST /v1/completions: internal error: ') && !l.includes('\n')));

    const h = await call('/health', undefined, 'GET', url);
    assert.equal(h.status, 200);
    assert.equal(h.json.queue, 0);
  } finally {
    await s.close();
  }
});

test('FifoQueue runs jobs one at a time in arrival order; a failing job does not hold up the rest', async () => {
  const q = new FifoQueue();
  const order: string[] = [];
  let running = 0;
  const job = (name: string, ms: number, fail = false) => q.run(async () => {
    assert.equal(++running, 1, 'one job at a time');
    order.push(`${name}+`);
    await new Promise((r) => setTimeout(r, ms));
    order.push(`${name}-`);
    running--;
    if (fail) throw new Error(`${name} failed`);
    return name;
  });
  const results = await Promise.allSettled([job('a', 20), job('b', 5, true), job('c', 1)]);
  assert.deepEqual(order, ['a+', 'a-', 'b+', 'b-', 'c+', 'c-']);
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
  assert.equal(q.size, 0);
  await q.idle();
});

test('dejavu serve: prints where it listens, serves, and exits 0 on SIGTERM; a taken port is a one-line error', async () => {
  const child = spawn(process.execPath, [join(ROOT, 'dist', 'src', 'cli.js'), 'serve', '--backend', 'cpu', '--port', '0', '--model-name', 'cli-demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => { out += d; if (out.includes('\n')) resolve(out); });
    child.on('exit', () => reject(new Error(`serve exited: ${stderr}`)));
  });
  assert.match(line, /^dejavu: serving cli-demo at http:\/\/127\.0\.0\.1:\d+\/v1 \(cpu: TypeScript, float32, \d+ threads?\); Ctrl-C stops\n$/);
  const url = line.match(/(http:\/\/\S+)\/v1/)![1];
  const models = await call('/v1/models', undefined, 'GET', url);
  assert.equal(models.json.data[0].id, 'cli-demo');
  const r = await call('/v1/completions', { prompt: PROMPT, max_tokens: 4, temperature: 0 }, 'POST', url);
  assert.equal(r.status, 200);
  child.kill('SIGTERM');
  assert.equal(await exited, 0, stderr);
  assert.match(stderr, /SIGTERM: shutting down/);

  const port = new URL(base).port;
  oneLineError(runCli('serve', '--backend', 'cpu', '--port', port), new RegExp(`^dejavu: cannot listen on 127\\.0\\.0\\.1:${port}: address already in use$`, 'm'));
  oneLineError(runCli('serve', '--backend', 'cpu', '--port', '70000'), /--port must be an integer in \[0, 65535\]/);
});

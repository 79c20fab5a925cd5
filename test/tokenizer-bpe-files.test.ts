import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeFileSource } from '../src/model/node-source.js';
import { TextTokenizer } from '../src/model/tokenizer.js';
import { DejavuError } from '../src/util/errors.js';
import { DATA, hasShared, MODELS, reference } from './helpers.js';

// The demo model's tokenizer.json (byte-identical to ../shared/models/opt-gutenberg-5m/tokenizer.json):
// what transformers wrote for an OPT-style byte-level BPE. Its vocab and merges become the slow files.
const REF_DIR = MODELS['5m'];
const REF = JSON.parse(readFileSync(join(REF_DIR, 'tokenizer.json'), 'utf8')) as {
  added_tokens: { id: number; content: string }[];
  model: { vocab: Record<string, number>; merges: [string, string][] };
};
const SPECIAL = { bos_token: '</s>', eos_token: '</s>', pad_token: '<pad>', unk_token: '<unk>' };

const dirs: string[] = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

/** A folder with vocab.json and merges.txt from the demo tokenizer, plus the given JSON files (null: none). */
function bpeFolder(files: Record<string, unknown> = {}, merges?: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'dejavu-bpe-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'vocab.json'), JSON.stringify(REF.model.vocab));
  writeFileSync(join(dir, 'merges.txt'), merges ?? `#version: 0.2\n${REF.model.merges.map((m) => m.join(' ')).join('\n')}\n`);
  for (const [name, v] of Object.entries(files)) {
    if (v === null) rmSync(join(dir, name), { force: true });
    else writeFileSync(join(dir, name), typeof v === 'string' ? v : JSON.stringify(v));
  }
  return dir;
}

async function load(dir: string): Promise<TextTokenizer> {
  const src = await NodeFileSource.open(dir);
  try { return await TextTokenizer.load(src); } finally { await src.close(); }
}

async function loadError(dir: string): Promise<string> {
  try {
    await load(dir);
  } catch (e) {
    assert.ok(e instanceof DejavuError, `expected a DejavuError, got ${(e as Error).stack}`);
    assert.ok(!e.message.includes('\n'), `one line: ${e.message}`);
    return e.message;
  }
  assert.fail(`loading ${dir} should have failed`);
}

const EDGE = [
  '', ' ', '  ', 'a', ' leading space', 'trailing space ', 'multiple   spaces  inside', '   ',
  'line one\nline two', '\n', '\n\nparagraph\n\n', 'tab\tseparated\tvalues', '\t indented',
  'naïve café — 日本語 🙂', 'Ünïcödé ßtraße ﬁne “quotes” ‘single’ …', 'emoji 👩‍👩‍👧 flags 🇫🇷',
  'end of text</s>and more', '</s>', ' </s> ', '</s></s>', 'a<pad>b<unk>c',
  '1234567890', '3.14159 and 2,718 and -42', 'year 1885, page 12', "don't can't I'm we'll they've",
  'CAPITALS and MiXeD', '--dashes--and__underscores__', 'http://example.com/a?b=c&d=e',
];

/** A few hundred strings: lines and paragraphs of the Gutenberg validation text, and the edge cases. */
function samples(): string[] {
  const out = [...EDGE];
  if (hasShared) {
    const text = readFileSync(join(DATA, 'gutenberg-val.txt'), 'utf8').slice(200_000, 260_000);
    const lines = text.split('\n').slice(1, -1);
    out.push(...lines.filter((l) => l.trim() !== '').slice(0, 300));
    out.push(...text.split('\n\n').slice(1, 40));
  } else {
    // Without ../shared, the demo model's reference prompts and greedy texts stand in for the validation text.
    for (const r of reference(REF_DIR)) out.push(r.prompt, r.greedy_text, r.prompt + r.greedy_text);
  }
  return out;
}

async function assertSameTokenizer(dir: string, texts: string[]): Promise<void> {
  const ref = await load(REF_DIR);
  const got = await load(dir);
  for (const s of texts) {
    const ids = got.encode(s);
    assert.deepEqual(ids, ref.encode(s), `ids of ${JSON.stringify(s)}`);
    assert.equal(ids[0], 2, `leading </s> of ${JSON.stringify(s)}`);
    assert.deepEqual(got.encode(s, false), ref.encode(s, false), `ids without special tokens of ${JSON.stringify(s)}`);
    assert.equal(got.decode(ids), ref.decode(ids), `decode of ${JSON.stringify(s)}`);
    assert.equal(got.decode(ids, false), ref.decode(ids, false), `decode with special tokens of ${JSON.stringify(s)}`);
    // Every token but the special ones (</s>: text-less) has bytes, the same from both files.
    const bytes = ids.map((id) => got.tokenBytes(id));
    assert.ok(ids.every((id, i) => (bytes[i] === null) === (got.decode([id]) === '')), `token bytes of ${JSON.stringify(s)}`);
    assert.deepEqual(bytes, ids.map((id) => ref.tokenBytes(id)), `token bytes of ${JSON.stringify(s)}`);
  }
}

describe('a tokenizer from vocab.json + merges.txt equals the tokenizer.json transformers wrote', () => {
  const texts = samples();

  test('the sample is a few hundred strings', () => {
    assert.ok(texts.length >= (hasShared ? 300 : EDGE.length), `${texts.length} strings`);
  });

  test('tokenizer_config.json with added_tokens_decoder', async () => {
    const decoder = Object.fromEntries(REF.added_tokens.map((t) => [String(t.id), {
      content: t.content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true,
    }]));
    const dir = bpeFolder({ 'tokenizer_config.json': { add_bos_token: true, add_prefix_space: false, ...SPECIAL, added_tokens_decoder: decoder } });
    // <s> is an added token here as in the reference, so it is matched whole too.
    await assertSameTokenizer(dir, [...texts, '<s>', 'x<s>y</s>z']);
  });

  test('special tokens only in special_tokens_map.json (as facebook/opt-125m has them)', async () => {
    const obj = (content: string) => ({ content, lstrip: false, normalized: true, rstrip: false, single_word: false });
    const dir = bpeFolder({
      'tokenizer_config.json': { add_bos_token: true, add_prefix_space: false, errors: 'replace', tokenizer_class: 'GPT2Tokenizer' },
      'special_tokens_map.json': { bos_token: obj('</s>'), eos_token: obj('</s>'), pad_token: '<pad>', unk_token: obj('<unk>') },
    });
    await assertSameTokenizer(dir, texts);
  });

  test('special token names in tokenizer_config.json, add_bos_token left to its default', async () => {
    await assertSameTokenizer(bpeFolder({ 'tokenizer_config.json': SPECIAL }), texts);
  });

  test('no tokenizer_config.json at all: </s> is still the bos token', async () => {
    await assertSameTokenizer(bpeFolder({ 'special_tokens_map.json': SPECIAL }), texts);
  });

  test('merges.txt with CRLF line ends and no trailing newline', async () => {
    const merges = `#version: 0.2\r\n${REF.model.merges.map((m) => m.join(' ')).join('\r\n')}`;
    await assertSameTokenizer(bpeFolder({ 'tokenizer_config.json': SPECIAL }, merges), EDGE);
  });
});

test('add_bos_token false: no leading </s>, the same tokens otherwise', async () => {
  const ref = await load(REF_DIR);
  const tok = await load(bpeFolder({ 'tokenizer_config.json': { ...SPECIAL, add_bos_token: false } }));
  for (const s of EDGE) {
    const ids = tok.encode(s);
    assert.deepEqual(ids, ref.encode(s, false), JSON.stringify(s));
    if (ids.length > 0) assert.equal(tok.decode(ids), ref.decode(ids), JSON.stringify(s));
  }
  assert.deepEqual(tok.encode('Hello'), ref.encode('Hello').slice(1));
  assert.notEqual(tok.encode('Hello')[0], 2);
});

test('add_prefix_space true tokenizes "Hello" as " Hello"', async () => {
  const ref = await load(REF_DIR);
  const tok = await load(bpeFolder({ 'tokenizer_config.json': { ...SPECIAL, add_prefix_space: true } }));
  assert.deepEqual(tok.encode('Hello'), ref.encode(' Hello'));
  assert.notDeepEqual(tok.encode('Hello'), ref.encode('Hello'));
});

test('tokenizer.json wins over vocab.json and merges.txt', async () => {
  const dir = bpeFolder({ 'vocab.json': 'not json', 'tokenizer.json': readFileSync(join(REF_DIR, 'tokenizer.json'), 'utf8') });
  const ref = await load(REF_DIR);
  const tok = await load(dir);
  assert.deepEqual(tok.encode('It was a dark and stormy night'), ref.encode('It was a dark and stormy night'));
  assert.deepEqual(tok.files, ['tokenizer.json']);
  assert.deepEqual((await load(bpeFolder({ 'tokenizer_config.json': SPECIAL }))).files, ['vocab.json', 'merges.txt']);
});

describe('errors are one line naming the file or token', () => {
  test('neither tokenizer.json nor vocab.json + merges.txt', async () => {
    const dir = bpeFolder({ 'tokenizer_config.json': SPECIAL });
    rmSync(join(dir, 'vocab.json'));
    rmSync(join(dir, 'merges.txt'));
    assert.equal(await loadError(dir), `no tokenizer in ${dir}: expected tokenizer.json, or vocab.json and merges.txt`);
    const onlyVocab = bpeFolder();
    rmSync(join(onlyVocab, 'merges.txt'));
    assert.match(await loadError(onlyVocab), /^no tokenizer in .*: expected tokenizer\.json, or vocab\.json and merges\.txt$/);
  });

  test('a malformed merges.txt line', async () => {
    const lines = ['#version: 0.2', ...REF.model.merges.slice(0, 3).map((m) => m.join(' ')), 'Ġ t h', ...REF.model.merges.slice(3).map((m) => m.join(' '))];
    const dir = bpeFolder({}, lines.join('\n') + '\n');
    assert.match(await loadError(dir), /^merges\.txt in .* line 5: expected two tokens separated by one space, got "Ġ t h"$/);
    const oneToken = bpeFolder({}, '#version: 0.2\nĠ t\nhe\n');
    assert.match(await loadError(oneToken), /^merges\.txt in .* line 3: /);
  });

  test('a merge of tokens that vocab.json lacks', async () => {
    const dir = bpeFolder({}, '#version: 0.2\nĠ t\nq\u0100 z\n');
    assert.match(await loadError(dir), /^merges\.txt in .* line 3: "q\u0100" is not in vocab\.json$/);
  });

  test('vocab.json that is not valid JSON, or not token -> integer id', async () => {
    assert.match(await loadError(bpeFolder({ 'vocab.json': '{"a": 1,' })), /^vocab\.json in .* is not valid JSON$/);
    assert.match(await loadError(bpeFolder({ 'vocab.json': '["a", "b"]' })), /^vocab\.json in .* is not a JSON object$/);
    assert.match(await loadError(bpeFolder({ 'vocab.json': '{"a": 0, "b": 1.5}' })), /^vocab\.json in .* must map each token to an integer id: "b" has 1\.5$/);
    assert.match(await loadError(bpeFolder({ 'vocab.json': '{"a": "0"}' })), /^vocab\.json in .* must map each token to an integer id: "a" has "0"$/);
  });

  test('special_tokens_map.json or tokenizer_config.json that is not valid JSON', async () => {
    assert.match(await loadError(bpeFolder({ 'special_tokens_map.json': '{' })), /^special_tokens_map\.json in .* is not valid JSON$/);
    assert.match(await loadError(bpeFolder({ 'tokenizer_config.json': 'nope' })), /^tokenizer_config\.json in .* is not valid JSON$/);
  });

  test('a special token that is not in the vocabulary', async () => {
    const dir = bpeFolder({ 'tokenizer_config.json': { ...SPECIAL, pad_token: '<mask>' } });
    assert.match(await loadError(dir), /^special token "<mask>" \(pad_token in tokenizer_config\.json\) is not in vocab\.json in /);
    const fromMap = bpeFolder({ 'special_tokens_map.json': { ...SPECIAL, unk_token: { content: '<oov>' } } });
    assert.match(await loadError(fromMap), /^special token "<oov>" \(unk_token in special_tokens_map\.json\) is not in vocab\.json in /);
  });

  test('a bos token that is not in the vocabulary', async () => {
    const dir = bpeFolder({ 'tokenizer_config.json': { bos_token: '<bos>' } });
    assert.match(await loadError(dir), /"<bos>".* is not in vocab\.json in /);
  });
});

test('the temp folders are really without tokenizer.json', () => {
  assert.ok(!existsSync(join(bpeFolder(), 'tokenizer.json')));
});

import { fail } from '../util/errors.js';
import { readText, type FileSource } from './source.js';

/**
 * The tokenizer.json object that transformers' GPT2Converter writes for a folder that has only the
 * slow GPT-2 byte-level BPE files (`vocab.json`, `merges.txt`, `tokenizer_config.json`, often
 * `special_tokens_map.json`), as facebook/opt-125m … opt-66b and their fine-tunes ship them. Built in
 * memory for `new Tokenizer(json, config)` of @huggingface/tokenizers.
 *
 * `config` is the parsed tokenizer_config.json ({} where the folder has none).
 */
export async function tokenizerJsonFromBpeFiles(src: FileSource, config: Record<string, unknown>): Promise<object> {
  const where = src.location;
  const vocab = parseVocab(await readText(src, 'vocab.json'), where);
  const merges = parseMerges(await readText(src, 'merges.txt'), vocab, where);
  let map: Record<string, unknown> = {};
  if (await src.exists('special_tokens_map.json')) map = parseObject(await readText(src, 'special_tokens_map.json'), 'special_tokens_map.json', where);

  const added = specialTokens(config, map, vocab, where);
  const bos = tokenContent(config.bos_token) ?? tokenContent(map.bos_token) ?? '</s>';
  const bosId = added.find((t) => t.content === bos)?.id ?? vocab.get(bos);
  // OPT prepends its bos token (`</s>`, id 2) to every text; its tokenizer_config.json says
  // add_bos_token: true, and folders that do not say it are OPT's too, so true is the default.
  const addBos = config.add_bos_token === undefined ? true : config.add_bos_token === true;
  if (addBos && bosId === undefined) fail(`bos token ${JSON.stringify(bos)} is not in vocab.json in ${where}`);

  const seq = (id: 'A' | 'B') => ({ Sequence: { id, type_id: 0 } });
  const special = { SpecialToken: { id: bos, type_id: 0 } };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: config.add_prefix_space === true, trim_offsets: true, use_regex: true },
    post_processor: addBos
      ? {
          type: 'TemplateProcessing',
          single: [special, seq('A')],
          pair: [special, seq('A'), special, seq('B')],
          special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
        }
      : { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false,
      vocab: Object.fromEntries(vocab), merges,
    },
  };
}

interface AddedToken {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

const SPECIAL_NAMES = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseObject(text: string, file: string, where: string): Record<string, unknown> {
  let v: unknown;
  try { v = JSON.parse(text); } catch { fail(`${file} in ${where} is not valid JSON`); }
  if (!isObject(v)) fail(`${file} in ${where} is not a JSON object`);
  return v;
}

function parseVocab(text: string, where: string): Map<string, number> {
  const obj = parseObject(text, 'vocab.json', where);
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(obj)) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
      fail(`vocab.json in ${where} must map each token to an integer id: ${JSON.stringify(token)} has ${JSON.stringify(id)}`);
    }
    vocab.set(token, id);
  }
  if (vocab.size === 0) fail(`vocab.json in ${where} has no tokens`);
  return vocab;
}

/** `#version: 0.2`, then one merge `a b` a line (the format of tokenizers' BPE::from_file). */
function parseMerges(text: string, vocab: Map<string, number>, where: string): [string, string][] {
  const merges: [string, string][] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].endsWith('\r') ? lines[i].slice(0, -1) : lines[i];
    if (line === '' || (i === 0 && line.startsWith('#version'))) continue;
    const parts = line.split(' ');
    if (parts.length !== 2 || parts[0] === '' || parts[1] === '') {
      fail(`merges.txt in ${where} line ${i + 1}: expected two tokens separated by one space, got ${JSON.stringify(line.slice(0, 80))}`);
    }
    for (const t of [parts[0], parts[1], parts[0] + parts[1]]) {
      if (!vocab.has(t)) fail(`merges.txt in ${where} line ${i + 1}: ${JSON.stringify(t)} is not in vocab.json`);
    }
    merges.push([parts[0], parts[1]]);
  }
  return merges;
}

/** A special token as tokenizer_config.json or special_tokens_map.json gives it: a string or {content, …}. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return undefined;
}

function flag(o: Record<string, unknown>, name: string, dflt: boolean): boolean {
  return typeof o[name] === 'boolean' ? (o[name] as boolean) : dflt;
}

function addedToken(id: number, content: string, o: Record<string, unknown>, special: boolean): AddedToken {
  return {
    id, content,
    single_word: flag(o, 'single_word', false),
    lstrip: flag(o, 'lstrip', false),
    rstrip: flag(o, 'rstrip', false),
    normalized: flag(o, 'normalized', !special),
    special,
  };
}

/**
 * tokenizer.json's added_tokens: tokenizer_config.json's added_tokens_decoder (id -> token) where it
 * has one, and each named special token (bos, eos, unk, pad, … and additional_special_tokens, from
 * tokenizer_config.json, else special_tokens_map.json) that it does not list, with its vocab.json id.
 */
function specialTokens(config: Record<string, unknown>, map: Record<string, unknown>, vocab: Map<string, number>, where: string): AddedToken[] {
  const out: AddedToken[] = [];
  const decoder = config.added_tokens_decoder;
  if (decoder !== undefined) {
    if (!isObject(decoder)) fail(`tokenizer_config.json in ${where}: added_tokens_decoder is not an object`);
    for (const [key, v] of Object.entries(decoder)) {
      const id = Number(key);
      if (!/^\d+$/.test(key) || !Number.isSafeInteger(id)) fail(`tokenizer_config.json in ${where}: added_tokens_decoder key ${JSON.stringify(key)} is not an integer id`);
      if (!isObject(v) || typeof v.content !== 'string') fail(`tokenizer_config.json in ${where}: added_tokens_decoder["${key}"] has no string content`);
      out.push(addedToken(id, v.content, v, flag(v, 'special', false)));
    }
  }
  const named: [unknown, string, string][] = [];
  const from = (name: string): [unknown, string, string] =>
    config[name] !== undefined && config[name] !== null ? [config[name], 'tokenizer_config.json', name] : [map[name], 'special_tokens_map.json', name];
  for (const name of SPECIAL_NAMES) named.push(from(name));
  const [extra, extraFile] = from('additional_special_tokens');
  if (Array.isArray(extra)) for (const v of extra) named.push([v, extraFile, 'additional_special_tokens']);
  for (const [v, file, name] of named) {
    if (v === undefined || v === null) continue;
    const content = tokenContent(v);
    if (content === undefined) fail(`${file} in ${where}: ${name} ${JSON.stringify(v).slice(0, 80)} is neither a string nor {content}`);
    if (out.some((t) => t.content === content)) continue;
    const id = vocab.get(content);
    if (id === undefined) fail(`special token ${JSON.stringify(content)} (${name} in ${file}) is not in vocab.json in ${where}`);
    out.push(addedToken(id, content, isObject(v) ? v : {}, true));
  }
  return out.sort((a, b) => a.id - b.id);
}

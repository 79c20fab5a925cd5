import { readText, type FileSource } from './source.js';
import { parseOptConfig, type OptConfig } from './config.js';
import { loadWeights, type OptWeights } from './weights.js';
import { TextTokenizer } from './tokenizer.js';
import { fail } from '../util/errors.js';

/** Decoding defaults from generation_config.json (all optional there). */
export interface GenerationDefaults {
  maxNewTokens?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  doSample?: boolean;
  eosTokenId: number[];
}

export interface Checkpoint {
  config: OptConfig;
  weights: OptWeights;
  tokenizer: TextTokenizer;
  generation: GenerationDefaults;
  /** A short fingerprint of the config and weights, so artefacts (predictors) can be tied to one model. */
  fingerprint: string;
  /** Where it was read (the FileSource's location: for a hub id, its snapshot folder). */
  location: string;
}

async function readJson(src: FileSource, name: string): Promise<Record<string, unknown>> {
  if (!(await src.exists(name))) fail(`missing file ${name} in ${src.location}`);
  try { return JSON.parse(await readText(src, name)); } catch { fail(`${name} in ${src.location} is not valid JSON`); }
}

/** FNV-1a over the config and a sample of every tensor's bytes: cheap, and differs between checkpoints. */
function fingerprintOf(config: OptConfig, w: OptWeights): string {
  let h = 0x811c9dc5;
  const mix = (b: number) => { h ^= b & 0xff; h = Math.imul(h, 0x01000193) >>> 0; };
  for (const ch of JSON.stringify(config)) mix(ch.charCodeAt(0));
  const tensors = [w.embedTokens, w.embedPositions, ...w.layers.flatMap((l) => [l.qW, l.fc1W, l.fc2W])];
  for (const t of tensors) {
    const u8 = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    const step = Math.max(1, Math.floor(u8.length / 4096));
    for (let i = 0; i < u8.length; i += step) mix(u8[i]);
  }
  return h.toString(16).padStart(8, '0');
}

export async function loadCheckpoint(src: FileSource): Promise<Checkpoint> {
  const config = parseOptConfig(await readJson(src, 'config.json'));
  const tokenizer = await TextTokenizer.load(src);
  const generation: GenerationDefaults = { eosTokenId: [config.eosTokenId] };
  if (await src.exists('generation_config.json')) {
    const g = await readJson(src, 'generation_config.json');
    if (typeof g.max_new_tokens === 'number') generation.maxNewTokens = g.max_new_tokens;
    if (typeof g.temperature === 'number') generation.temperature = g.temperature;
    if (typeof g.top_k === 'number') generation.topK = g.top_k;
    if (typeof g.top_p === 'number') generation.topP = g.top_p;
    if (typeof g.do_sample === 'boolean') generation.doSample = g.do_sample;
    const eos = g.eos_token_id;
    if (typeof eos === 'number') generation.eosTokenId = [eos];
    else if (Array.isArray(eos)) generation.eosTokenId = eos.filter((x): x is number => typeof x === 'number');
  }
  const weights = await loadWeights(src, config);
  return { config, weights, tokenizer, generation, fingerprint: fingerprintOf(config, weights), location: src.location };
}

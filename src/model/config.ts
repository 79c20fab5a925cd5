import { fail } from '../util/errors.js';

/** Typed view of a Hugging Face OPT config.json. d = hidden, f = ffn, V = vocab. */
export interface OptConfig {
  vocabSize: number;         // V
  hidden: number;            // d
  layers: number;            // L
  heads: number;             // H
  headDim: number;           // d / H
  ffn: number;               // f (4d in OPT)
  maxPositions: number;      // context length; learned positions have maxPositions + 2 rows
  wordEmbedProjDim: number;  // e: embedding width; != d means project_in (e->d) and project_out (d->e)
  preLayerNorm: boolean;     // do_layer_norm_before (false for OPT-350m: post-LayerNorm)
  enableBias: boolean;
  tieWordEmbeddings: boolean;
  finalLayerNorm: boolean;   // pre-LN models have decoder.final_layer_norm (unless _remove_final_layer_norm)
  layerNormEps: number;
  bosTokenId: number;
  eosTokenId: number;
  padTokenId: number;
  dtype: 'float16' | 'bfloat16' | 'float32';
}

/** OPT's learned positional embedding is indexed at position + 2 (a fairseq leftover). */
export const OPT_POSITION_OFFSET = 2;

type Json = Record<string, unknown>;

function num(cfg: Json, key: string, fallback?: number): number {
  const v = cfg[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    fail(`config.json is missing required field "${key}"`);
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(`config.json field "${key}" must be a number, got ${JSON.stringify(v)}`);
  return v;
}

function bool(cfg: Json, key: string, fallback: boolean): boolean {
  const v = cfg[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') fail(`config.json field "${key}" must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

export function parseOptConfig(cfg: Json): OptConfig {
  if (cfg.model_type !== 'opt') {
    fail(`unsupported model_type ${JSON.stringify(cfg.model_type ?? null)} in config.json (dejavu runs OPT models: model_type "opt")`);
  }
  const act = cfg.activation_function ?? 'relu';
  if (act !== 'relu') fail(`unsupported activation_function ${JSON.stringify(act)} in config.json (OPT uses "relu")`);
  const hidden = num(cfg, 'hidden_size');
  const heads = num(cfg, 'num_attention_heads');
  if (hidden % heads !== 0) fail(`config.json: hidden_size ${hidden} is not divisible by num_attention_heads ${heads}`);
  const dtypeRaw = (cfg.dtype ?? cfg.torch_dtype ?? 'float16') as string;
  if (!['float16', 'bfloat16', 'float32'].includes(dtypeRaw)) fail(`unsupported dtype ${JSON.stringify(dtypeRaw)} in config.json`);
  const preLayerNorm = bool(cfg, 'do_layer_norm_before', true);
  return {
    vocabSize: num(cfg, 'vocab_size'),
    hidden,
    layers: num(cfg, 'num_hidden_layers'),
    heads,
    headDim: hidden / heads,
    ffn: num(cfg, 'ffn_dim'),
    maxPositions: num(cfg, 'max_position_embeddings'),
    wordEmbedProjDim: num(cfg, 'word_embed_proj_dim', hidden),
    preLayerNorm,
    enableBias: bool(cfg, 'enable_bias', true),
    tieWordEmbeddings: bool(cfg, 'tie_word_embeddings', true),
    finalLayerNorm: preLayerNorm && !bool(cfg, '_remove_final_layer_norm', false),
    layerNormEps: 1e-5,
    bosTokenId: num(cfg, 'bos_token_id', 2),
    eosTokenId: num(cfg, 'eos_token_id', 2),
    padTokenId: num(cfg, 'pad_token_id', 1),
    dtype: dtypeRaw as OptConfig['dtype'],
  };
}

/** Parameter count of the model as stored (tied embeddings counted once). */
export function parameterCount(c: OptConfig): number {
  const b = c.enableBias ? 1 : 0;
  const d = c.hidden, f = c.ffn, e = c.wordEmbedProjDim;
  const perLayer = 4 * d * d + 4 * d * b + 2 * d * f + (f + d) * b + 4 * d;
  let n = c.vocabSize * e + (c.maxPositions + OPT_POSITION_OFFSET) * d + c.layers * perLayer;
  if (c.finalLayerNorm) n += 2 * d;
  if (e !== d) n += 2 * d * e;
  if (!c.tieWordEmbeddings) n += c.vocabSize * e;
  return n;
}

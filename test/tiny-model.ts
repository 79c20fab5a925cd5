import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeSafetensors } from '../src/model/safetensors.js';
import { MODELS, randomArray, rng } from './helpers.js';

/** config.json fields of a tiny OPT (d=16, 2 layers, 2 heads, f=24, the demo tokenizer's vocab). */
export function tinyConfig(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model_type: 'opt', activation_function: 'relu', hidden_size: 16, num_attention_heads: 2, num_hidden_layers: 2,
    ffn_dim: 24, vocab_size: 8192, max_position_embeddings: 32, word_embed_proj_dim: 16, do_layer_norm_before: true,
    enable_bias: true, tie_word_embeddings: true, bos_token_id: 2, eos_token_id: 2, pad_token_id: 1, dtype: 'float32', ...over,
  };
}

/** Random f32 tensors of a tiny OPT with the given config, named as Hugging Face saves them. */
export function tinyTensors(cfg: Record<string, unknown>, seed = 1): Record<string, { shape: number[]; data: Float32Array }> {
  const r = rng(seed);
  const d = cfg.hidden_size as number, f = cfg.ffn_dim as number, V = cfg.vocab_size as number, e = cfg.word_embed_proj_dim as number;
  const t: Record<string, { shape: number[]; data: Float32Array }> = {};
  const add = (name: string, shape: number[], scale = 0.2, base = 0) => {
    const data = randomArray(shape.reduce((a, b) => a * b, 1), r, scale);
    if (base) for (let i = 0; i < data.length; i++) data[i] += base;
    t['model.decoder.' + name] = { shape, data };
  };
  add('embed_tokens.weight', [V, e]);
  add('embed_positions.weight', [(cfg.max_position_embeddings as number) + 2, d]);
  if (e !== d) { add('project_in.weight', [d, e]); add('project_out.weight', [e, d]); }
  if (cfg.do_layer_norm_before !== false) { add('final_layer_norm.weight', [d], 0.1, 1); add('final_layer_norm.bias', [d]); }
  for (let l = 0; l < (cfg.num_hidden_layers as number); l++) {
    const p = `layers.${l}.`;
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) { add(`${p}self_attn.${n}.weight`, [d, d]); add(`${p}self_attn.${n}.bias`, [d]); }
    add(p + 'self_attn_layer_norm.weight', [d], 0.1, 1); add(p + 'self_attn_layer_norm.bias', [d]);
    add(p + 'final_layer_norm.weight', [d], 0.1, 1); add(p + 'final_layer_norm.bias', [d]);
    add(p + 'fc1.weight', [f, d]); add(p + 'fc1.bias', [f]);
    add(p + 'fc2.weight', [d, f]); add(p + 'fc2.bias', [d]);
  }
  if (cfg.tie_word_embeddings === false) t['lm_head.weight'] = { shape: [V, e], data: randomArray(V * e, r, 0.2) };
  return t;
}

/** Writes a tiny OPT checkpoint folder (with the demo model's tokenizer) and returns its path. */
export function writeTinyModel(cfg = tinyConfig(), tensors = tinyTensors(cfg), bytes?: Uint8Array): string {
  const dir = mkdtempSync(join(tmpdir(), 'dejavu-tiny-'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
  writeFileSync(join(dir, 'model.safetensors'), bytes ?? encodeSafetensors(tensors));
  copyFileSync(join(MODELS['5m'], 'tokenizer.json'), join(dir, 'tokenizer.json'));
  return dir;
}

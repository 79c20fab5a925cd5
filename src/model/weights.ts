import { fail } from '../util/errors.js';
import type { OptConfig } from './config.js';
import { OPT_POSITION_OFFSET } from './config.js';
import { readTorchCheckpoint } from './pytorch.js';
import { readSafetensorsHeader, readTensor, type TensorEntry } from './safetensors.js';
import { readText, type FileSource } from './source.js';
import type { Tensor } from './tensor.js';

/** One decoder layer. Linear weights are [out, in] as in PyTorch. */
export interface LayerWeights {
  attnLnW: Tensor; attnLnB: Tensor;        // (d)
  qW: Tensor; kW: Tensor; vW: Tensor;      // (d, d)
  qB: Tensor | null; kB: Tensor | null; vB: Tensor | null; // (d)
  oW: Tensor; oB: Tensor | null;           // (d, d), (d)
  mlpLnW: Tensor; mlpLnB: Tensor;          // (d)
  fc1W: Tensor; fc1B: Tensor | null;       // (f, d), (f): neuron i is row i
  fc2W: Tensor; fc2B: Tensor | null;       // (d, f), (d)
}

export interface OptWeights {
  embedTokens: Tensor;                     // (V, e)
  embedPositions: Tensor;                  // (maxPositions + 2, d)
  projectIn: Tensor | null;                // (d, e) when e != d
  projectOut: Tensor | null;               // (e, d) when e != d
  finalLnW: Tensor | null; finalLnB: Tensor | null; // (d) for pre-LN models
  lmHead: Tensor;                          // (V, e); the same object as embedTokens when tied
  layers: LayerWeights[];                  // L
  /** The weight files read, in the folder (`dejavu info` shows them). */
  files: string[];
}

/** A checkpoint's weight files and their format. */
interface WeightFiles { format: 'safetensors' | 'pytorch'; files: string[] }

/** The files named by a sharded checkpoint's index (`weight_map`: tensor → file), each checked to exist. */
async function indexFiles(src: FileSource, index: string): Promise<string[]> {
  let json: { weight_map?: Record<string, unknown> } | null;
  try { json = JSON.parse(await readText(src, index)); } catch { fail(`${index} in ${src.location} is not valid JSON`); }
  if (!json || typeof json !== 'object' || !json.weight_map || typeof json.weight_map !== 'object') fail(`${index} in ${src.location} has no weight_map`);
  // Shards lie in the folder itself: a name that is not a plain file name (a path, "..") is refused.
  const plain = (f: unknown): f is string => typeof f === 'string' && /^[^/\\]+$/.test(f) && f !== '.' && f !== '..';
  const files = [...new Set(Object.values(json.weight_map))].sort();
  for (const f of files) if (!plain(f)) fail(`${index} in ${src.location} names ${JSON.stringify(f)}, not a file of the folder`);
  const names = files.filter(plain);
  for (const f of names) if (!(await src.exists(f))) fail(`missing file ${f} in ${src.location} (listed in ${index})`);
  return names;
}

/**
 * Finds the weight files: model.safetensors or the shards of model.safetensors.index.json; else, as
 * older Hugging Face folders (facebook/opt-*) hold them, pytorch_model.bin or the shards of
 * pytorch_model.bin.index.json (torch.save's zip format: pytorch.ts). safetensors wins where both exist.
 */
async function listWeightFiles(src: FileSource): Promise<WeightFiles> {
  if (await src.exists('model.safetensors.index.json')) return { format: 'safetensors', files: await indexFiles(src, 'model.safetensors.index.json') };
  if (await src.exists('model.safetensors')) return { format: 'safetensors', files: ['model.safetensors'] };
  if (await src.exists('pytorch_model.bin.index.json')) return { format: 'pytorch', files: await indexFiles(src, 'pytorch_model.bin.index.json') };
  if (await src.exists('pytorch_model.bin')) return { format: 'pytorch', files: ['pytorch_model.bin'] };
  fail(`no weights in ${src.location}: expected model.safetensors, pytorch_model.bin, or the index of their shards`);
}

/** HF checkpoints name tensors "model.decoder.…" (newer) or "decoder.…" (older); lm_head stays at top level. */
function canonicalName(name: string): string {
  return name.startsWith('model.') ? name.slice(6) : name;
}

export async function loadWeights(src: FileSource, cfg: OptConfig): Promise<OptWeights> {
  const entries = new Map<string, TensorEntry>();
  const { format, files } = await listWeightFiles(src);
  for (const file of files) {
    for (const e of format === 'safetensors' ? await readSafetensorsHeader(src, file) : await readTorchCheckpoint(src, file)) entries.set(canonicalName(e.name), e);
  }
  const used = new Set<string>();
  const d = cfg.hidden, f = cfg.ffn, e = cfg.wordEmbedProjDim, V = cfg.vocabSize;

  async function get(name: string, shape: number[]): Promise<Tensor> {
    const entry = entries.get(name);
    if (!entry) fail(`missing tensor ${name} in ${src.location}`);
    if (entry.shape.length !== shape.length || entry.shape.some((s, i) => s !== shape[i])) {
      fail(`tensor ${name} has shape [${entry.shape.join(', ')}], expected [${shape.join(', ')}] from config.json`);
    }
    used.add(name);
    const raw = await readTensor(src, entry);
    return { dtype: raw.dtype === 'F32' ? 'f32' : raw.dtype === 'F16' ? 'f16' : 'bf16', shape: raw.shape, data: raw.data };
  }
  const bias = (name: string, n: number) => (cfg.enableBias ? get(name, [n]) : Promise.resolve(null));

  const p = 'decoder.';
  const embedTokens = await get(p + 'embed_tokens.weight', [V, e]);
  const embedPositions = await get(p + 'embed_positions.weight', [cfg.maxPositions + OPT_POSITION_OFFSET, d]);
  const projectIn = e !== d ? await get(p + 'project_in.weight', [d, e]) : null;
  const projectOut = e !== d ? await get(p + 'project_out.weight', [e, d]) : null;
  const finalLnW = cfg.finalLayerNorm ? await get(p + 'final_layer_norm.weight', [d]) : null;
  const finalLnB = cfg.finalLayerNorm ? await get(p + 'final_layer_norm.bias', [d]) : null;
  let lmHead = embedTokens;
  if (entries.has('lm_head.weight') && !cfg.tieWordEmbeddings) lmHead = await get('lm_head.weight', [V, e]);
  else if (!cfg.tieWordEmbeddings) fail(`missing tensor lm_head.weight in ${src.location} (tie_word_embeddings is false)`);
  else if (entries.has('lm_head.weight')) used.add('lm_head.weight'); // tied copy saved anyway: identical, skip it

  const layers: LayerWeights[] = [];
  for (let l = 0; l < cfg.layers; l++) {
    const q = `${p}layers.${l}.`;
    layers.push({
      attnLnW: await get(q + 'self_attn_layer_norm.weight', [d]),
      attnLnB: await get(q + 'self_attn_layer_norm.bias', [d]),
      qW: await get(q + 'self_attn.q_proj.weight', [d, d]), qB: await bias(q + 'self_attn.q_proj.bias', d),
      kW: await get(q + 'self_attn.k_proj.weight', [d, d]), kB: await bias(q + 'self_attn.k_proj.bias', d),
      vW: await get(q + 'self_attn.v_proj.weight', [d, d]), vB: await bias(q + 'self_attn.v_proj.bias', d),
      oW: await get(q + 'self_attn.out_proj.weight', [d, d]), oB: await bias(q + 'self_attn.out_proj.bias', d),
      mlpLnW: await get(q + 'final_layer_norm.weight', [d]),
      mlpLnB: await get(q + 'final_layer_norm.bias', [d]),
      fc1W: await get(q + 'fc1.weight', [f, d]), fc1B: await bias(q + 'fc1.bias', f),
      fc2W: await get(q + 'fc2.weight', [d, f]), fc2B: await bias(q + 'fc2.bias', d),
    });
  }
  for (const name of entries.keys()) {
    if (!used.has(name)) fail(`unexpected tensor ${name} in ${src.location} (not part of an OPT model with this config.json)`);
  }
  return { embedTokens, embedPositions, projectIn, projectOut, finalLnW, finalLnB, lmHead, layers, files };
}

/** Bytes of all weight tensors as stored (tied lm_head counted once). */
export function weightBytes(w: OptWeights): number {
  const seen = new Set<Tensor>();
  let n = 0;
  const add = (t: Tensor | null) => { if (t && !seen.has(t)) { seen.add(t); n += t.data.byteLength; } };
  [w.embedTokens, w.embedPositions, w.projectIn, w.projectOut, w.finalLnW, w.finalLnB, w.lmHead].forEach(add);
  for (const l of w.layers) Object.values(l).forEach((t) => add(t as Tensor | null));
  return n;
}

import { createRunner, type KvCacheType } from '../backend/select.js';
import type { BackendChoice, Runner } from '../backend/types.js';
import type { GpuOptions } from '../backend/webgpu/device.js';
import { loadCheckpoint, type Checkpoint } from '../model/checkpoint.js';
import type { OptConfig } from '../model/config.js';
import type { FileSource } from '../model/source.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import type { SparsityPolicy } from '../sparsity/policy.js';
import { generate, type GenerateOptions, type Generation } from './generate.js';

export interface LoadOptions {
  /** 'auto' (default): WebGPU on a GPU, else (no adapter, or a software one such as lavapipe) CPU with a notice on stderr. */
  backend?: BackendChoice;
  gpu?: GpuOptions;
  /** WebGPU's KV cache: 'f32' (default, fastest measured) or 'f16' (half the cache's memory). */
  kvCache?: KvCacheType;
  /** The CPU backend's threads (Node; default: the cores, at most 16; a browser runs one). */
  cpuThreads?: number;
}

/** A model ready to generate: checkpoint, tokenizer and a runner on one backend. */
export class Model {
  constructor(readonly checkpoint: Checkpoint, readonly runner: Runner) {}

  get config(): OptConfig { return this.checkpoint.config; }
  get tokenizer(): TextTokenizer { return this.checkpoint.tokenizer; }

  /** Streams generated text pieces; `await gen.result` gives ids, text and timings. `prompt`: text, or token ids used as given. */
  generate(prompt: string | number[], options: GenerateOptions = {}): Generation {
    const g = this.checkpoint.generation;
    return generate(this.runner, this.tokenizer, prompt, {
      eosTokenIds: g.eosTokenId,
      ...options,
    });
  }

  /** Run MLPs sparsely under this policy (null: dense). */
  setSparsity(policy: SparsityPolicy | null): void { this.runner.setSparsity(policy); }

  dispose(): void { this.runner.dispose(); }
}

/**
 * Loads a Hugging Face OPT checkpoint folder (config.json, safetensors weights, tokenizer.json) as it is.
 * `source` is a folder path in Node, or any FileSource (a browser passes one backed by fetch or File).
 */
export async function loadModel(source: string | FileSource, options: LoadOptions = {}): Promise<Model> {
  // Node reads folders from disk; a browser passes a FileSource (e.g. FetchFileSource). The import is
  // dynamic so that bundling for the browser never pulls in node:fs.
  const src = typeof source === 'string' ? await (await import('../model/node-source.js')).NodeFileSource.open(source) : source;
  try {
    const ck = await loadCheckpoint(src);
    return new Model(ck, await createRunner(ck, options.backend ?? 'auto', { ...options.gpu, kvCache: options.kvCache }, options.cpuThreads));
  } finally {
    await src.close();
  }
}

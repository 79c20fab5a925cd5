import type { Checkpoint } from '../model/checkpoint.js';
import type { OptConfig } from '../model/config.js';
import type { OptWeights } from '../model/weights.js';
import { fail } from '../util/errors.js';
import { notice } from '../util/notice.js';
import { CpuRunner } from './cpu/runner.js';
import { probeAdapter, type GpuOptions } from './webgpu/device.js';
import type { BackendChoice, Runner } from './types.js';

/** The KV cache's element type on the WebGPU backend (the CPU backend keeps f32). */
export type KvCacheType = 'f32' | 'f16';

type WebGpuFactory = (config: OptConfig, weights: OptWeights, opts?: GpuOptions & { kvCache?: KvCacheType }) => Promise<Runner>;

async function webGpuFactory(): Promise<WebGpuFactory> {
  // Loaded on demand so the CPU path never touches Dawn.
  const mod: { createWebGpuRunner: WebGpuFactory } = await import('./webgpu/runner.js');
  return mod.createWebGpuRunner;
}

export function parseKvCache(s: string): KvCacheType {
  if (s !== 'f32' && s !== 'f16') fail(`unknown KV cache type "${s}" (choose f32 or f16)`);
  return s;
}

export function parseBackend(s: string): BackendChoice {
  if (s !== 'auto' && s !== 'cpu' && s !== 'webgpu') fail(`unknown backend "${s}" (choose auto, cpu or webgpu)`);
  return s;
}

/**
 * A runner for a loaded checkpoint. 'auto' takes WebGPU when an adapter exists and otherwise the CPU,
 * saying so once on stderr.
 */
export async function createRunner(ck: Checkpoint, choice: BackendChoice = 'auto', gpuOpts?: GpuOptions & { kvCache?: KvCacheType }): Promise<Runner> {
  if (choice === 'cpu') return new CpuRunner(ck.config, ck.weights);
  if (choice === 'auto' && !(await probeAdapter())) {
    notice('dejavu: no WebGPU adapter found; using the CPU backend');
    return new CpuRunner(ck.config, ck.weights);
  }
  return (await webGpuFactory())(ck.config, ck.weights, gpuOpts);
}

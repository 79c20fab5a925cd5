import type { Checkpoint } from '../model/checkpoint.js';
import type { OptConfig } from '../model/config.js';
import type { OptWeights } from '../model/weights.js';
import { fail } from '../util/errors.js';
import { notice } from '../util/notice.js';
import { CpuRunner } from './cpu/runner.js';
import { adapterName, isSoftwareAdapter, probeAdapter, type GpuOptions } from './webgpu/device.js';
import type { BackendChoice, BackendName, Runner } from './types.js';

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
 * What 'auto' runs a checkpoint on: WebGPU on a GPU; the CPU backend where there is no adapter or
 * only a software one (lavapipe, SwiftShader: device.ts, isSoftwareAdapter), saying why once on stderr.
 */
export async function autoBackend(): Promise<BackendName> {
  const adapter = await probeAdapter();
  if (!adapter) {
    notice('dejavu: no WebGPU adapter found; using the CPU backend');
    return 'cpu';
  }
  if (isSoftwareAdapter(adapter)) {
    notice(`dejavu: the WebGPU adapter emulates a GPU on the CPU (${adapterName(adapter)}); using the CPU backend, faster there (backend 'webgpu' uses the adapter)`);
    return 'cpu';
  }
  return 'webgpu';
}

/** A runner for a loaded checkpoint, on the backend chosen ('auto': autoBackend). */
export async function createRunner(ck: Checkpoint, choice: BackendChoice = 'auto', gpuOpts?: GpuOptions & { kvCache?: KvCacheType }, cpuThreads?: number): Promise<Runner> {
  const backend = choice === 'auto' ? await autoBackend() : choice;
  if (backend === 'cpu') return cpuRunner(ck, cpuThreads);
  return (await webGpuFactory())(ck.config, ck.weights, gpuOpts);
}

/** Most threads the CPU backend takes by default (each thread's share of a product shrinks; not measured past 2 cores). */
const CPU_THREADS_MAX = 16;

/**
 * The CPU runner, its linear and attention on `threads` threads (default: the cores, at most
 * CPU_THREADS_MAX) in Node; one thread in a browser. The pool's module is loaded only here, so a
 * browser never imports node:worker_threads.
 */
export async function cpuRunner(ck: Checkpoint, threads?: number): Promise<CpuRunner> {
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1)) fail(`CPU threads must be an integer >= 1, got ${threads}`);
  const node = typeof process !== 'undefined' && !!process.versions?.node;
  const cores = node ? (await import('node:os')).availableParallelism() : 1;
  if (threads !== undefined && threads > 4 * cores) fail(`CPU threads: ${threads} is more than 4 per core (${cores} cores)`);
  const n = node ? threads ?? Math.min(CPU_THREADS_MAX, cores) : 1;
  const pool = n > 1 ? new (await import('./cpu/pool.js')).CpuPool(n) : undefined;
  return new CpuRunner(ck.config, ck.weights, { pool });
}

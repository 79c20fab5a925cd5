import type { TestContext } from 'node:test';
import { openGpu, probeAdapter, type Gpu, type GpuOptions } from '../src/backend/webgpu/device.js';
import type { GpuMatrix, Kernels } from '../src/backend/webgpu/ops.js';
import { floatsToHalves, halvesToFloats } from '../src/util/f16.js';
import { randomArray } from './helpers.js';

/**
 * A Gpu for a test file, or a skip when this machine has no WebGPU adapter. In CI a missing adapter
 * is a failure: the WebGPU tests must not pass by skipping. Destroy the device at the end of the file
 * (an open Dawn device busy-polls a CPU core).
 */
export async function gpuOrSkip(t: TestContext, opts: GpuOptions = {}): Promise<Gpu | null> {
  if (!(await probeAdapter())) {
    if (process.env.CI) throw new Error('no WebGPU adapter in CI');
    t.skip('no WebGPU adapter on this machine');
    return null;
  }
  return openGpu(opts);
}

/** Uploads random weights (× scale); returns the matrix and the fp16-rounded values the CPU twin should use. */
export function randomMatrix(k: Kernels, rows: number, cols: number, r: () => number, scale = 0.5): { m: GpuMatrix; w: Float32Array } {
  const bits = floatsToHalves(randomArray(rows * cols, r, scale));
  const m = k.matrix(rows, cols, 'W');
  k.upload(m, bits);
  return { m, w: halvesToFloats(bits) };
}

/** Values as the KV cache holds them: rounded to f16 where the kernels keep it in f16 (Kernels.kvHalf). */
export function kvRound(k: Kernels, a: Float32Array): Float32Array {
  return k.kvHalf ? halvesToFloats(floatsToHalves(a)) : a;
}

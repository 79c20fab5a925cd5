import type { TestContext } from 'node:test';
import { openGpu, probeAdapter, type Gpu, type GpuOptions } from '../src/backend/webgpu/device.js';
import { readF32, type GpuMatrix, type Kernels } from '../src/backend/webgpu/ops.js';
import { floatsToHalves, halvesToFloats } from '../src/util/f16.js';
import { quantizeRowsI8 } from '../src/util/int8.js';
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
  return failOnGpuErrors(await openGpu(opts));
}

/**
 * Makes an uncaptured WebGPU error (validation, out of memory) fail the test that is running: the
 * engine only prints a notice for one, and a test could then pass on what an invalid command left
 * (a copy that never ran reads back zeros). Tests that expect an error catch it in an error scope.
 */
export function failOnGpuErrors(g: Gpu): Gpu {
  g.device.addEventListener('uncapturederror', (ev) => {
    throw new Error(`WebGPU error during a test: ${(ev as GPUUncapturedErrorEvent).error.message.split('\n')[0]}`);
  });
  return g;
}

/** Uploads random weights (× scale); returns the matrix and the fp16-rounded values the CPU twin should use. */
export function randomMatrix(k: Kernels, rows: number, cols: number, r: () => number, scale = 0.5): { m: GpuMatrix; w: Float32Array } {
  const bits = floatsToHalves(randomArray(rows * cols, r, scale));
  const m = k.matrix(rows, cols, 'W');
  k.upload(m, bits);
  return { m, w: halvesToFloats(bits) };
}

/** A random int8 matrix (Kernels.matrixI8, quantized from uniform values of `scale`) and the values it holds (quantizeRowsI8). */
export function randomMatrixI8(k: Kernels, rows: number, cols: number, r: () => number, scale = 0.5): { m: GpuMatrix; w: Float32Array } {
  const w = randomArray(rows * cols, r, scale), m = k.matrixI8(rows, cols, 'Wi8');
  k.uploadI8(m, w);
  return { m, w: quantizeRowsI8(w, rows, cols).values };
}

/** A matrix's values as stored on the GPU (every part, padding columns dropped), (rows, cols) row-major. */
export async function readMatrix(k: Kernels, m: GpuMatrix): Promise<Float32Array> {
  const out = new Float32Array(m.rows * m.cols);
  for (const p of m.parts) {
    const raw = await readF32(k, p.buffer, (p.rows * m.colsP) / 2);
    const h = halvesToFloats(new Uint16Array(raw.buffer, 0, p.rows * m.colsP));
    for (let i = 0; i < p.rows; i++) out.set(h.subarray(i * m.colsP, i * m.colsP + m.cols), (p.row0 + i) * m.cols);
  }
  return out;
}

/** Values as the KV cache holds them: rounded to f16 where the kernels keep it in f16 (Kernels.kvHalf). */
export function kvRound(k: Kernels, a: Float32Array): Float32Array {
  return k.kvHalf ? halvesToFloats(floatsToHalves(a)) : a;
}

/** A KV-cache buffer holding `data` in the cache's element type (packed f16: values rounded). */
export function kvBuffer(k: Kernels, data: Float32Array, label: string): GPUBuffer {
  if (!k.kvHalf) return k.f32Buffer(data, label);
  const h = new Uint16Array(Math.ceil(data.length / 2) * 2);
  h.set(floatsToHalves(data));
  const b = k.buffer(h.byteLength, label);
  k.device.queue.writeBuffer(b, 0, h as Uint16Array<ArrayBuffer>);
  return b;
}

/** A KV cache's first n elements as f32 (f16 caches widened). */
export async function readKv(k: Kernels, src: GPUBuffer, n: number): Promise<Float32Array> {
  if (!k.kvHalf) return readF32(k, src, n);
  const raw = await readF32(k, src, Math.ceil(n / 2));
  return halvesToFloats(new Uint16Array(raw.buffer, 0, n));
}

/**
 * A low-rank predictor (out, rank, d) whose A and B are exactly representable in fp16 (scale 0.2;
 * bias 0.1), so the GPU's fp16 copy scores like the CPU's float32 one. Draws A, then B, then the bias.
 */
export function fp16Predictor(rank: number, d: number, out: number, r: () => number): { rank: number; A: Float32Array; B: Float32Array; bias: Float32Array } {
  const h16 = (a: Float32Array) => halvesToFloats(floatsToHalves(a));
  return { rank, A: h16(randomArray(rank * d, r, 0.2)), B: h16(randomArray(out * rank, r, 0.2)), bias: randomArray(out, r, 0.1) };
}

import { bf16ToFloats, halvesToFloats, floatsToHalves } from '../util/f16.js';

/** A host tensor: fp16/bf16 kept as 16-bit patterns until a backend decides what it needs. */
export interface Tensor {
  dtype: 'f16' | 'bf16' | 'f32';
  shape: number[];
  data: Uint16Array | Float32Array;
}

export function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function toF32(t: Tensor): Float32Array {
  if (t.dtype === 'f32') return t.data as Float32Array;
  return t.dtype === 'f16' ? halvesToFloats(t.data as Uint16Array) : bf16ToFloats(t.data as Uint16Array);
}

/** fp16 bit patterns, converting from f32/bf16 when needed (the GPU stores weights in fp16). */
export function toF16Bits(t: Tensor): Uint16Array {
  if (t.dtype === 'f16') return t.data as Uint16Array;
  return floatsToHalves(toF32(t));
}

export function f32Tensor(shape: number[], data: Float32Array = new Float32Array(numel(shape))): Tensor {
  return { dtype: 'f32', shape, data };
}

/**
 * `a` in a SharedArrayBuffer where the platform has them (Node; a cross-origin-isolated page), else `a`
 * itself. The CPU backend's threads read arrays in shared memory without a copy of their own
 * (CpuPool.share takes such an array as it is), so predictors loaded this way are held once, not
 * twice (~0.34 GB at opt-6.7b's rank-128 predictors, computed). The WebGPU backend copies such a view before
 * writeBuffer (ops.ts, unshared): Dawn's Node binding crashes on one.
 */
export function inSharedMemory(a: Float32Array): Float32Array {
  if (typeof SharedArrayBuffer === 'undefined' || a.buffer instanceof SharedArrayBuffer) return a;
  const s = new Float32Array(new SharedArrayBuffer(Math.max(4, a.byteLength)), 0, a.length);
  s.set(a);
  return s;
}

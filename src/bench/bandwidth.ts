/**
 * The card's memory bandwidth, measured in the same run as the decode benchmark, so floor_ms is
 * against this card and this driver rather than a datasheet number.
 */
import type { Gpu } from '../backend/webgpu/device.js';

export interface Bandwidth {
  /** Bytes read + written per second, in GB/s (1e9). */
  gbps: number;
  method: 'gpu-timestamps' | 'wall-clock' | 'memcpy';
  /** Bytes of one copy (each copy reads and writes this many). */
  copyBytes: number;
  copies: number;
}

const GIB = 1024 ** 3;

/** Wall-clock ms of `n` copies src -> dst submitted in one encoder, plus GPU-timestamp ms when available. */
async function timeCopies(gpu: Gpu, src: GPUBuffer, dst: GPUBuffer, bytes: number, n: number): Promise<{ wallMs: number; gpuMs: number | null }> {
  const { device } = gpu;
  let qs: GPUQuerySet | null = null, resolve: GPUBuffer | null = null, read: GPUBuffer | null = null;
  if (gpu.timestamps) {
    qs = device.createQuerySet({ type: 'timestamp', count: 2 });
    resolve = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    read = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  }
  const enc = device.createCommandEncoder();
  // Copies are encoder commands, not passes, and WebGPU only timestamps passes: bracket them with
  // two empty compute passes, one writing its beginning and one its end.
  if (qs) enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0 } }).end();
  for (let i = 0; i < n; i++) enc.copyBufferToBuffer(src, 0, dst, 0, bytes);
  if (qs) {
    enc.beginComputePass({ timestampWrites: { querySet: qs, endOfPassWriteIndex: 1 } }).end();
    enc.resolveQuerySet(qs, 0, 2, resolve!, 0);
    enc.copyBufferToBuffer(resolve!, 0, read!, 0, 16);
  }
  const t0 = performance.now();
  device.queue.submit([enc.finish()]);
  await device.queue.onSubmittedWorkDone();
  const wallMs = performance.now() - t0;
  let gpuMs: number | null = null;
  if (read) {
    await read.mapAsync(GPUMapMode.READ);
    const ts = new BigUint64Array(read.getMappedRange().slice(0));
    read.unmap();
    const ns = Number(ts[1] - ts[0]);
    gpuMs = ns > 0 ? ns / 1e6 : null;
    read.destroy(); resolve!.destroy(); qs!.destroy();
  }
  return { wallMs, gpuMs };
}

/**
 * Copies a buffer of up to 1 GiB (capped by the adapter's maxBufferSize) device to device, enough
 * times for about `targetMs` of work, and reports (read + written bytes) / time. GPU timestamps are
 * used when the device has them and they are plausible (not longer than the wall clock, which
 * includes submission); else the wall clock over the batch, which overstates time a little.
 */
export async function measureGpuBandwidth(gpu: Gpu, { maxBytes = GIB, targetMs = 200 } = {}): Promise<Bandwidth> {
  const { device } = gpu;
  const bytes = Math.floor(Math.min(maxBytes, gpu.limits.maxBufferSize) / 256) * 256;
  const usage = GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const src = device.createBuffer({ size: bytes, usage });
  const dst = device.createBuffer({ size: bytes, usage });
  try {
    const first = await timeCopies(gpu, src, dst, bytes, 1); // warm-up; also sizes the batch
    const per = Math.max(first.gpuMs ?? first.wallMs, 1e-3);
    const n = Math.max(2, Math.min(100, Math.round(targetMs / per)));
    const { wallMs, gpuMs } = await timeCopies(gpu, src, dst, bytes, n);
    const useGpu = gpuMs !== null && gpuMs <= wallMs * 1.05;
    const ms = useGpu ? gpuMs! : wallMs;
    return { gbps: (2 * bytes * n) / (ms * 1e6), method: useGpu ? 'gpu-timestamps' : 'wall-clock', copyBytes: bytes, copies: n };
  } finally {
    src.destroy(); dst.destroy();
  }
}

/** Host memcpy rate (read + write) for the CPU backend's floor: 64 MiB (past the caches) copied 8 times. */
export function measureMemcpyBandwidth(bytes = 64 * 1024 * 1024, repeats = 8): Bandwidth {
  const a = new Uint8Array(bytes).fill(1), b = new Uint8Array(bytes);
  b.set(a); // first touch of the destination pages is not bandwidth
  const t0 = performance.now();
  for (let i = 0; i < repeats; i++) b.set(a);
  const ms = performance.now() - t0;
  return { gbps: (2 * bytes * repeats) / (ms * 1e6), method: 'memcpy', copyBytes: bytes, copies: repeats };
}

/**
 * The card's memory bandwidth, measured in the same run as the decode benchmark, so floor_ms is
 * against this card and this driver rather than a datasheet number.
 *
 * The primary figure is a compute-shader READ kernel: a decode step reads its weights from compute
 * shaders, and under Dawn/Vulkan copyBufferToBuffer is no roofline for that (on an H200 copies gave
 * 852 GB/s of read + write while our own GEMV already read weights at about 1.2 TB/s). The copy
 * figure is kept as a secondary, labelled number.
 */
import type { Gpu } from '../backend/webgpu/device.js';
import { Kernels, runNow, type Dispatch, type GpuMatrix } from '../backend/webgpu/ops.js';
import { GpuTimer, type TimerOptions } from './gpu-timer.js';

export interface Bandwidth {
  /**
   * GB/s (1e9) the floor is computed against. GPU: bytes READ per second by the read kernel. CPU
   * backend: host memcpy, read + write.
   */
  gbps: number;
  method: 'gpu-timestamps' | 'wall-clock' | 'memcpy';
  kind: 'read-kernel' | 'memcpy';
  /** Bytes of one repetition (the read kernel's buffer; one memcpy). */
  bytes: number;
  /** Repetitions in one timed sample (read kernel) or in the timed batch (memcpy). */
  reps: number;
  /** Secondary (GPU only): copyBufferToBuffer, (read + write bytes) / time. Not the roofline. */
  copy?: CopyBandwidth;
}

export interface CopyBandwidth { gbps: number; method: 'gpu-timestamps' | 'wall-clock'; copyBytes: number; copies: number }

const GIB = 1024 ** 3;
export const READ_WG = 256;
/** vec4<u32> loads per thread, at least, when sizing the read kernel's grid. */
const READ_LOADS_PER_THREAD = 32;

/**
 * The read kernel: thread t of a grid of `threads` sums (wrapping u32 adds) the vec4<u32> elements
 * t, t + threads, t + 2·threads, ... with four independent 16-byte loads in flight per iteration;
 * each workgroup writes the wrapping sum of its threads' lanes to out[outOff + workgroup]. The sums
 * make every load count, so no compiler can drop them. CPU twin: `readChecksumCpu`.
 */
export const readKey = () => `bench_read_v4u32x4_wg${READ_WG}`;
export function readWgsl(): string {
  return `
struct P { n4: u32, threads: u32, outOff: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
var<workgroup> acc: atomic<u32>;
@compute @workgroup_size(${READ_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let T = p.threads;
  var i = wid.x * ${READ_WG}u + lid;
  var a0 = vec4<u32>(0u); var a1 = vec4<u32>(0u); var a2 = vec4<u32>(0u); var a3 = vec4<u32>(0u);
  loop {
    if (i + 3u * T >= p.n4) { break; }
    a0 += src[i]; a1 += src[i + T]; a2 += src[i + 2u * T]; a3 += src[i + 3u * T];
    i += 4u * T;
  }
  loop {
    if (i >= p.n4) { break; }
    a0 += src[i];
    i += T;
  }
  let v = (a0 + a1) + (a2 + a3);
  atomicAdd(&acc, (v.x + v.y) + (v.z + v.w));
  workgroupBarrier();
  if (lid == 0u) { out[p.outOff + wid.x] = atomicLoad(&acc); }
}
`;
}

/** Workgroups of the read kernel over n4 vec4<u32> elements (one dimension, at most 65535). */
export function readGroups(n4: number): number {
  return Math.max(1, Math.min(65535, Math.ceil(n4 / (READ_WG * READ_LOADS_PER_THREAD))));
}

/** What the read kernel writes for `words` (u32, a multiple of 4) read by `groups` workgroups. */
export function readChecksumCpu(words: Uint32Array, groups: number): Uint32Array {
  const n4 = words.length / 4, T = groups * READ_WG, out = new Uint32Array(groups);
  for (let e = 0; e < n4; e++) {
    const g = Math.floor((e % T) / READ_WG);
    out[g] = (out[g] + words[4 * e] + words[4 * e + 1] + words[4 * e + 2] + words[4 * e + 3]) >>> 0;
  }
  return out;
}

/** Buffers to read: `bytes` in chunks that each fit one storage binding (and one buffer). */
export interface ReadTarget { chunks: { buffer: GPUBuffer; bytes: number }[]; out: GPUBuffer; groups: number[] }

export function readTarget(k: Kernels, bytes: number, maxBindingBytes = Infinity): ReadTarget {
  const L = k.gpu.limits;
  const maxChunk = Math.max(4096, Math.floor(Math.min(maxBindingBytes, L.maxStorageBufferBindingSize, L.maxBufferSize) / 4096) * 4096);
  const total = Math.max(4096, Math.floor(bytes / 4096) * 4096);
  const chunks: ReadTarget['chunks'] = [];
  for (let done = 0; done < total; done += maxChunk) {
    const n = Math.min(maxChunk, total - done);
    chunks.push({ buffer: k.buffer(n, `read[${chunks.length}]`), bytes: n });
  }
  const groups = chunks.map((c) => readGroups(c.bytes / 16));
  const out = k.buffer(4 * groups.reduce((a, b) => a + b, 0), 'read_out');
  return { chunks, out, groups };
}

/** One read of every chunk: one dispatch per binding. */
export function readDispatches(k: Kernels, t: ReadTarget, own: GPUBuffer[]): Dispatch[] {
  const pl = k.pipeline(readKey(), readWgsl);
  let off = 0;
  return t.chunks.map((c, i) => {
    const g = t.groups[i];
    const d = k.dispatch('read', pl, [c.bytes / 16, g * READ_WG, off, 0], [[1, c.buffer], [2, t.out]], [g, 1, 1], own);
    off += g;
    return d;
  });
}

/** Fills the chunks with hash noise on the GPU (not zeros: some memory systems compress those). */
export async function fillReadTarget(k: Kernels, t: ReadTarget, seed = 1): Promise<void> {
  const own: GPUBuffer[] = [];
  const ds: Dispatch[] = [];
  for (const c of t.chunks) {
    // Viewed as fp16 rows of 2048 halves (4 KiB), the shape fillMatrix wants.
    const m: GpuMatrix = { rows: c.bytes / 4096, cols: 2048, colsP: 2048, parts: [{ buffer: c.buffer, row0: 0, rows: c.bytes / 4096 }] };
    ds.push(...k.fillMatrix(m, seed++, 1, own));
  }
  await runNow(k, ds, own);
}

export function destroyReadTarget(t: ReadTarget): void {
  for (const c of t.chunks) c.buffer.destroy();
  t.out.destroy();
}

export interface ReadBandwidth { gbps: number; us: number; bytes: number; reps: number; bindings: number; method: 'gpu-timestamps' | 'wall' }

/**
 * Read bandwidth over a buffer of `bytes` (default 1 GiB; split into bindings the adapter allows),
 * timed with GPU timestamps when the device has them: median of `samples` passes of `reps` full reads.
 */
export async function measureReadBandwidth(gpu: Gpu, o: TimerOptions & { bytes?: number; k?: Kernels } = {}): Promise<ReadBandwidth> {
  const k = o.k ?? new Kernels(gpu);
  const t = readTarget(k, o.bytes ?? GIB);
  const own: GPUBuffer[] = [];
  try {
    await fillReadTarget(k, t);
    const ds = readDispatches(k, t, own);
    const timing = await new GpuTimer(gpu, o).time([ds]);
    const bytes = t.chunks.reduce((a, c) => a + c.bytes, 0);
    return { gbps: bytes / (timing.us * 1e3), us: timing.us, bytes, reps: timing.reps, bindings: t.chunks.length, method: timing.method };
  } finally {
    destroyReadTarget(t);
    own.forEach((b) => b.destroy());
  }
}

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
 * Secondary figure: copies a buffer of up to 1 GiB (capped by the adapter's maxBufferSize) device to
 * device, enough times for about `targetMs` of work, and reports (read + written bytes) / time. GPU
 * timestamps are used when the device has them and they are plausible (not longer than the wall
 * clock, which includes submission); else the wall clock over the batch.
 */
export async function measureCopyBandwidth(gpu: Gpu, { maxBytes = GIB, targetMs = 200 } = {}): Promise<CopyBandwidth> {
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

/** CPU implementations of WebGPU: no device memory to measure, and a 1 GiB read takes seconds there. */
export const isSoftwareAdapter = (name: string) => /llvmpipe|lavapipe|swiftshader/i.test(name);

/**
 * The GPU's bandwidth for the floor: the read kernel (primary) and copies (secondary), over 1 GiB
 * (64 MiB on a software adapter).
 */
export async function measureGpuBandwidth(gpu: Gpu, { bytes = isSoftwareAdapter(gpu.adapterName) ? 64 * 2 ** 20 : GIB } = {}): Promise<Bandwidth> {
  const read = await measureReadBandwidth(gpu, { bytes });
  const copy = await measureCopyBandwidth(gpu, { maxBytes: bytes });
  return {
    gbps: read.gbps, method: read.method === 'wall' ? 'wall-clock' : 'gpu-timestamps', kind: 'read-kernel',
    bytes: read.bytes, reps: read.reps, copy,
  };
}

/** Host memcpy rate (read + write) for the CPU backend's floor: 64 MiB (past the caches) copied 8 times. */
export function measureMemcpyBandwidth(bytes = 64 * 1024 * 1024, repeats = 8): Bandwidth {
  const a = new Uint8Array(bytes).fill(1), b = new Uint8Array(bytes);
  b.set(a); // first touch of the destination pages is not bandwidth
  const t0 = performance.now();
  for (let i = 0; i < repeats; i++) b.set(a);
  const ms = performance.now() - t0;
  return { gbps: (2 * bytes * repeats) / (ms * 1e6), method: 'memcpy', kind: 'memcpy', bytes, reps: repeats };
}

/** The log line of a bandwidth measurement. */
export function bandwidthLine(bw: Bandwidth, adapter: string): string {
  const mib = (b: number) => (b / 2 ** 20).toFixed(0);
  if (bw.kind === 'memcpy') return `bandwidth: ${bw.gbps.toFixed(1)} GB/s (memcpy, ${mib(bw.bytes)} MiB x ${bw.reps}) on ${adapter}`;
  const c = bw.copy;
  return `bandwidth: ${bw.gbps.toFixed(1)} GB/s read (read kernel, ${bw.method}, ${mib(bw.bytes)} MiB x ${bw.reps})` +
    (c ? `; secondary: copyBufferToBuffer ${c.gbps.toFixed(1)} GB/s read + write (${c.method}, ${mib(c.copyBytes)} MiB x ${c.copies})` : '') +
    ` on ${adapter}`;
}

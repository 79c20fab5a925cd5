/**
 * `dejavu bench --kernels`: micro-benchmarks of the decode kernels at a real OPT shape, with synthetic
 * weights filled on the GPU, each timed by GpuTimer (GPU timestamps when the device has them, else
 * the wall clock; every row says which): the read-bandwidth roofline, the fixed cost of a dispatch,
 * dense GEMVs, the sparse MLP's pieces at several densities, the predictor's GEMVs, the whole sparse
 * MLP block (predictor + top-K + gathered fc1 + sparse fc2) against the dense one, top-K, LayerNorm
 * and decode attention. `variants` adds candidate shapes and earlier forms (rows say `form`), `only`
 * restricts to some benchmarks.
 *
 * L2 matters at these sizes (an H100/H200 holds 50 MB: a d×d matrix of OPT-6.7B, 32 MB, would be
 * served from it when repeated). So each benchmark rotates over copies of its data — weight matrices
 * and disjoint neuron sets, or the KV caches of several "layers" — until one cycle reads at least
 * `rotateBytes` (default 256 MiB) or the copies reach `memBudgetBytes`; every row gives its `copies`.
 * That is what a decode step sees: each layer's weights once, cold.
 */
import { openGpu, type Gpu } from '../backend/webgpu/device.js';
import { Kernels, readF32, readU32, runNow, type Dispatch, type GpuMatrix } from '../backend/webgpu/ops.js';
import { BLOCK_SIZE, blockSlots } from '../sparsity/policy.js';
import { ceil4, ceilDiv } from '../backend/webgpu/kernels/common.js';
import { fill32Key, fill32Wgsl } from '../backend/webgpu/kernels/misc.js';
import { FC2_MAX_SLICES, FC2_MIN_SLICE_ROWS, type Fc2DirectShape } from '../backend/webgpu/kernels/sparse-mlp.js';
import { gemvKey, gemvWgsl, type GemvOpts } from '../backend/webgpu/kernels/gemv.js';
import { blockSelectLnBytes } from '../backend/webgpu/kernels/block-select.js';
import { attentionSplits } from '../backend/webgpu/kernels/attention.js';
import { fail } from '../util/errors.js';
import { destroyReadTarget, fillReadTarget, isSoftwareAdapter, measureCopyBandwidth, readDispatches, readTarget } from './bandwidth.js';
import { GpuTimer, type TimingMethod } from './gpu-timer.js';
import { predictorRank, shapeConfig } from './shapes.js';
import { seededRandom } from '../util/random.js';
import { floatsToHalves } from '../util/f16.js';

export interface KernelShape { name: string; d: number; f: number; heads: number; vocab: number; e: number; maxPos: number }

/**
 * A published shape (opt-125m … opt-66b) or a custom one, `d=256,f=1024,heads=4,vocab=4096,pos=256`
 * (f defaults to 4d, heads to d/64, vocab to 50272, pos — the longest attention context — to 2048).
 */
export function kernelShape(spec: string): KernelShape {
  if (!spec.includes('=')) {
    const c = shapeConfig(spec);
    return { name: spec, d: c.hidden, f: c.ffn, heads: c.heads, vocab: c.vocabSize, e: c.wordEmbedProjDim, maxPos: c.maxPositions };
  }
  const kv: Record<string, number> = {};
  for (const part of spec.split(',')) {
    const [k, v] = part.split('=').map((s) => s.trim());
    const n = Number(v);
    if (!['d', 'f', 'heads', 'vocab', 'pos'].includes(k)) fail(`unknown key "${k}" in --shape ${spec} (d, f, heads, vocab, pos)`);
    if (!Number.isInteger(n) || n < 1) fail(`--shape ${spec}: ${k} must be a positive integer`);
    kv[k] = n;
  }
  const d = kv.d ?? fail(`--shape ${spec} needs d=`);
  const heads = kv.heads ?? Math.max(1, Math.round(d / 64));
  if (d % heads) fail(`--shape ${spec}: d must be a multiple of heads`);
  return { name: spec, d, f: kv.f ?? 4 * d, heads, vocab: kv.vocab ?? 50272, e: d, maxPos: kv.pos ?? 2048 };
}

export interface KernelRow {
  kernel: string;
  shape: string;
  params: Record<string, number | string>;
  /** Median µs per iteration. */
  us: number;
  /** bytes / time, GB/s (1e9); null where no byte count applies. */
  gbps: number | null;
  /** Bytes one iteration reads (weights, KV cache, or the buffer). */
  bytes: number | null;
  timing: TimingMethod;
}

export interface KernelBenchOptions {
  shape: string;
  /** Time per timed sample, ms (default 20). */
  targetMs?: number;
  /** Timed samples per kernel (default 9; the median is reported). */
  samples?: number;
  /** Bytes one rotation cycle should read, at least (default 256 MiB; 4 MiB on a software adapter). */
  rotateBytes?: number;
  /** Device bytes the copies of one benchmark may take (default 2 GiB). */
  memBudgetBytes?: number;
  /** The read-bandwidth kernel's buffer (default 1 GiB; 64 MiB on a software adapter). */
  readBytes?: number;
  densities?: number[];
  /** Density of the whole-block comparison (default 0.1). */
  blockDensity?: number;
  positions?: number[];
  /** Only the benchmarks whose kernel name starts with one of these (default: all). */
  only?: string[];
  /** Also time the candidate shapes and earlier forms of the sparse-MLP kernels (rows say `form`). */
  variants?: boolean;
  forceWall?: boolean;
  gpu?: Gpu;
  log?: (line: string) => void;
}

export const DEFAULT_DENSITIES = [0.05, 0.1, 0.2, 0.3, 0.5];
export const DEFAULT_POSITIONS = [128, 512, 1024, 2048];
const MIB = 2 ** 20, GIB = 2 ** 30;
const MAX_COPIES = 64;
const WEIGHT_STD = 0.02;

const rng = seededRandom;

/** `sets` disjoint sorted index sets of size k from [0, n) (a shuffle cut in pieces); top-K also emits index order. */
export function disjointSets(n: number, k: number, sets: number, seed: number): Uint32Array[] {
  const r = rng(seed);
  const perm = Uint32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) { const j = Math.floor(r() * (i + 1)); [perm[i], perm[j]] = [perm[j], perm[i]]; }
  const out: Uint32Array[] = [];
  for (let s = 0; s < sets; s++) out.push(perm.slice(s * k, (s + 1) * k).sort());
  return out;
}

/** Allocation, GPU fills and clean-up for one benchmark. */
class Scratch {
  readonly bufs: GPUBuffer[] = [];
  /** Parameter uniforms of the dispatches being timed. */
  readonly own: GPUBuffer[] = [];
  private fills: Dispatch[] = [];
  private fillOwn: GPUBuffer[] = [];
  private seed = 1;
  constructor(readonly k: Kernels) {}

  mat(rows: number, cols: number, label: string): GpuMatrix {
    const m = this.k.matrix(rows, cols, label);
    this.bufs.push(...m.parts.map((p) => p.buffer));
    this.fills.push(...this.k.fillMatrix(m, this.seed++, WEIGHT_STD, this.fillOwn));
    return m;
  }

  /**
   * A matrix of random values made on the host (uniform, WEIGHT_STD's spread), stored both ways the
   * runner may hold predictor B: fp16 and int8 (Kernels.matrixI8), the same values in each.
   */
  matBoth(rows: number, cols: number, label: string): { h: GpuMatrix; q: GpuMatrix } {
    const r = rng(this.seed++), a = Math.sqrt(3) * WEIGHT_STD;
    const w = Float32Array.from({ length: rows * cols }, () => (2 * r() - 1) * a);
    const h = this.k.matrix(rows, cols, label), q = this.k.matrixI8(rows, cols, `${label}.i8`);
    this.k.upload(h, floatsToHalves(w)); this.k.uploadI8(q, w);
    this.bufs.push(...h.parts.map((p) => p.buffer), ...q.parts.map((p) => p.buffer));
    return { h, q };
  }

  /** An f32 vector of n values `value + std·noise` (std 0 and value 0: left zero). */
  vec(n: number, label: string, value = 0, std = 0): GPUBuffer {
    const b = this.k.buffer(n * 4, label);
    this.bufs.push(b);
    if (value !== 0 || std !== 0) this.fillF32(b, n, value, std);
    return b;
  }

  /** A KV cache of rows × d, f32 or packed f16 (Kernels.kvHalf), random values. */
  kv(rows: number, d: number, label: string, half: boolean): GPUBuffer {
    if (!half) return this.vec(rows * d, label, 0, 1);
    const m = this.mat(rows, d, label); // fp16 rows of d (a multiple of 4 at every OPT width): the cache's layout
    if (m.parts.length !== 1 || m.colsP !== d) throw new Error(`kernel bench: a ${rows} x ${d} KV cache is not one unpadded buffer`);
    return m.parts[0].buffer;
  }

  u32(data: Uint32Array, label: string): GPUBuffer {
    const b = this.k.f32Buffer(data, label);
    this.bufs.push(b);
    return b;
  }

  /** fill32 in chunks of at most 65535 workgroups, through binding offsets (KV caches exceed one grid). */
  private fillF32(b: GPUBuffer, n: number, value: number, std: number): void {
    const pl = this.k.pipeline(fill32Key(), fill32Wgsl);
    const chunk = 65535 * 256 - ((65535 * 256) % 64); // a multiple of 64 floats keeps offsets 256-byte aligned
    const f32 = (v: number) => new Uint32Array(new Float32Array([v]).buffer)[0];
    for (let o = 0; o < n; o += chunk) {
      const m = Math.min(chunk, n - o);
      this.fills.push(this.k.dispatch('fill32', pl, [m, this.seed++, f32(std), f32(value)],
        [[1, { buffer: b, offset: o * 4, size: m * 4 }]], [ceilDiv(m, 256), 1, 1], this.fillOwn));
    }
  }

  async ready(): Promise<void> {
    await runNow(this.k, this.fills, this.fillOwn);
    this.fills = [];
  }

  release(): void {
    for (const b of [...this.bufs, ...this.own, ...this.fillOwn]) b.destroy();
    this.bufs.length = 0; this.own.length = 0; this.fillOwn.length = 0;
  }
}

const matBytes = (rows: number, cols: number) => rows * ceil4(cols) * 2;
/** Bytes of an int8 matrix (Kernels.matrixI8): a 16-byte scale chunk a row, then its values padded to 16. */
const matBytesI8 = (rows: number, cols: number) => rows * (16 + Math.ceil(cols / 16) * 16);

/** Candidate shapes timed with `variants`: gathered fc1 (rows per workgroup, threads per row) ... */
const GATHER_SHAPES = [{ rows: 4, tpr: 64 }, { rows: 2, tpr: 128 }, { rows: 1, tpr: 256 }, { rows: 8, tpr: 32 }];
/** ... the one-pass sparse fc2 (workgroup size, 16-byte chunks a row piece, rows in flight a thread) ... */
const FC2_SHAPES: Fc2DirectShape[] = [
  { wg: 1024, ch: 8, unroll: 8 }, { wg: 512, ch: 4, unroll: 16 }, { wg: 1024, ch: 4, unroll: 4 }, { wg: 512, ch: 2, unroll: 8 },
  { wg: 256, ch: 4, unroll: 8 }, { wg: 256, ch: 2, unroll: 16 }, { wg: 1024, ch: 8, unroll: 16 }, { wg: 1024, ch: 8, unroll: 12 },
];
/** ... and predictor A (r rows: few, so the default 4 rows a workgroup gives few workgroups). */
const PRED_A_SHAPES = [{ rows: 2, tpr: 128 }, { rows: 1, tpr: 256 }];
/** Dense GEMV shapes timed with `variants`: rows a workgroup × threads a row (× rows a thread, `_p2`). */
const GEMV_SHAPES: { rows: number; tpr: number; rpt?: number }[] = [
  { rows: 1, tpr: 256 }, { rows: 2, tpr: 128 }, { rows: 4, tpr: 64 }, { rows: 8, tpr: 32 },
  { rows: 1, tpr: 256, rpt: 2 }, { rows: 2, tpr: 128, rpt: 2 }, { rows: 4, tpr: 64, rpt: 2 }, { rows: 8, tpr: 32, rpt: 2 }, { rows: 4, tpr: 64, rpt: 4 },
];
const gemvForm = (sh: { rows: number; tpr: number; rpt?: number }) => `r${sh.rows}_tpr${sh.tpr}${(sh.rpt ?? 1) > 1 ? `_p${sh.rpt}` : ''}`;
const fc2Form = (s: Fc2DirectShape) => `wg${s.wg}_ch${s.ch}_u${s.unroll}`;

/** y = W x through the GEMV kernel with a given shape (ops picks one per width; this tries others). */
function gemvWith(k: Kernels, a: { W: GpuMatrix; x: GPUBuffer; y: GPUBuffer }, sh: { rows: number; tpr: number; rpt?: number }, own: GPUBuffer[]): Dispatch[] {
  const K = a.W.cols, K4 = a.W.colsP / 4;
  const o: GemvOpts = { rows: sh.rows, tpr: sh.tpr, rpt: sh.rpt, wide: K4 % 2 === 0, bias: false, relu: false, resid: false, gather: false };
  o.xv4 = o.wide && K % 4 === 0;
  const key = gemvKey(k.feats, o);
  const pl = k.pipeline(key, () => gemvWgsl(k.feats, o));
  return a.W.parts.map((p) => {
    const n = ceilDiv(p.rows, o.rows * (o.rpt ?? 1)), gx = Math.min(n, 65535), gy = ceilDiv(n, 65535);
    return k.dispatch(key, pl, [p.rows, K, K4, p.row0, p.rows, K, 0, a.W.rows, p.row0, 0, gx, 0, a.W.rows], [[1, p.buffer], [2, a.x], [3, a.y]], [gx, gy, 1], own);
  });
}

export async function runKernelBench(o: KernelBenchOptions): Promise<KernelRow[]> {
  const S = kernelShape(o.shape);
  const log = o.log ?? (() => {});
  const gpu = o.gpu ?? await openGpu();
  const k = new Kernels(gpu);
  const timer = new GpuTimer(gpu, { targetMs: o.targetMs, samples: o.samples, forceWall: o.forceWall });
  const soft = isSoftwareAdapter(gpu.adapterName);
  const rotate = o.rotateBytes ?? (soft ? 4 : 256) * MIB, budget = o.memBudgetBytes ?? 2 * GIB;
  /** Instances so that a cycle reads `rotate` bytes, within the memory budget. */
  const copiesFor = (readPer: number, memPer: number) =>
    Math.max(1, Math.min(MAX_COPIES, Math.ceil(rotate / Math.max(1, readPer)), Math.floor(budget / Math.max(1, memPer))));
  const rows: KernelRow[] = [];
  const { d, f } = S;
  const bd = o.blockDensity ?? 0.1;
  const add = (kernel: string, params: KernelRow['params'], us: number, bytes: number | null, timing: TimingMethod): KernelRow => {
    const row: KernelRow = { kernel, shape: S.name, params, us, gbps: bytes !== null && us > 0 ? bytes / (us * 1e3) : null, bytes, timing };
    rows.push(row);
    log(`${kernel} ${Object.entries(params).map(([a, b]) => `${a}=${b}`).join(' ')}: ${us.toFixed(1)} µs`);
    return row;
  };
  /** Runs one benchmark with its own buffers, inside error scopes: what fails is logged and skipped. */
  const bench = async (what: string, fn: (s: Scratch) => Promise<void>) => {
    if (o.only && !o.only.some((p) => what.startsWith(p))) return;
    const s = new Scratch(k);
    const first = rows.length;
    gpu.device.pushErrorScope('out-of-memory');
    gpu.device.pushErrorScope('validation');
    let thrown: unknown = null;
    try { await fn(s); } catch (e) { thrown = e; }
    const validation = await gpu.device.popErrorScope();
    const oom = await gpu.device.popErrorScope();
    s.release();
    const err = oom ?? validation;
    if (thrown) throw thrown;
    if (err) {
      log(`skipped: ${what}: ${oom ? 'out of device memory' : 'WebGPU error'}: ${err.message.split('\n')[0]}`);
      // A row timed while an allocation or a pipeline failed means nothing: drop every row this
      // benchmark added (the 'mlp' one adds rows of several kernel names).
      rows.length = first;
    }
  };

  try {
    log(`kernels: ${S.name} (d ${d}, f ${f}, heads ${S.heads}, vocab ${S.vocab}) on ${gpu.adapterName}, timing: ${timer.method}`);

    const variants = !!o.variants;
    // ---- roofline: compute-shader read, and copies (secondary) ----
    await bench('read-bandwidth', async () => {
      const bytes = o.readBytes ?? (soft ? 64 * MIB : GIB);
      const t = readTarget(k, bytes);
      try {
        await fillReadTarget(k, t);
        const own: GPUBuffer[] = [];
        const tm = await timer.time([readDispatches(k, t, own)]);
        own.forEach((b) => b.destroy());
        const total = t.chunks.reduce((a, c) => a + c.bytes, 0);
        add('read-bandwidth', { buffer_mib: Math.round(total / MIB), bindings: t.chunks.length }, tm.us, total, tm.method);
      } finally { destroyReadTarget(t); }
      // With variants: the same kernel over buffers of one GEMV's size (16-128 MiB), several of them
      // in turn so that no read finds its buffer in L2 (50 MB on an H200): how much of the roofline a
      // single dispatch of that size can reach, the ramp and tail included.
      if (variants && !soft) {
        for (const mib of [16, 32, 64, 128]) {
          const ts = Array.from({ length: Math.max(2, Math.ceil(512 / mib)) }, () => readTarget(k, mib * MIB));
          try {
            for (const tt of ts) await fillReadTarget(k, tt);
            const own: GPUBuffer[] = [];
            const tm = await timer.time(ts.map((tt) => readDispatches(k, tt, own)));
            own.forEach((b) => b.destroy());
            add('read-bandwidth', { buffer_mib: mib, bindings: ts[0].chunks.length, copies: ts.length, form: 'one GEMV-sized read' }, tm.us, mib * MIB, tm.method);
          } finally { ts.forEach(destroyReadTarget); }
        }
      }
    });
    await bench('copy-bandwidth', async () => {
      const c = await measureCopyBandwidth(gpu, { maxBytes: o.readBytes ?? (soft ? 64 * MIB : GIB) });
      const bytes = 2 * c.copyBytes;
      add('copy-bandwidth', { note: 'secondary: copyBufferToBuffer, read + write', buffer_mib: Math.round(c.copyBytes / MIB), copies: c.copies },
        (bytes / (c.gbps * 1e9)) * 1e6, bytes, c.method === 'wall-clock' ? 'wall' : 'gpu-timestamps');
    });

    // ---- dense GEMV (T = 1): weight bytes per µs ----
    const gemvs: { op: string; rows: number; cols: number; bias?: boolean; relu?: boolean; resid?: boolean }[] = [
      { op: 'd x d', rows: d, cols: d },
      { op: 'qkv 3d x d', rows: 3 * d, cols: d, bias: true },
      { op: 'fc1 4d x d', rows: f, cols: d, bias: true, relu: true },
      { op: 'fc2 d x 4d', rows: d, cols: f, bias: true, resid: true },
      { op: 'lm_head vocab x d', rows: S.vocab, cols: S.e },
    ];
    for (const g of gemvs) {
      await bench('gemv', async (s) => {
        const bytes = matBytes(g.rows, g.cols);
        const copies = copiesFor(bytes, bytes);
        const x = s.vec(g.cols, 'x', 0, 1), y = s.vec(g.rows, 'y'), bias = g.bias ? s.vec(g.rows, 'bias', 0, 0.1) : null;
        const Ws = Array.from({ length: copies }, (_, i) => s.mat(g.rows, g.cols, `W${i}`));
        await s.ready();
        const inst = Ws.map((W) => k.linear({ W, x, y, T: 1, bias, relu: g.relu, resid: g.resid }, s.own));
        const tm = await timer.time(inst);
        add('gemv', { op: g.op, rows: g.rows, cols: g.cols, copies }, tm.us, bytes, tm.method);
        // With variants: other (rows a workgroup × threads a row) shapes, no epilogue.
        if (variants && g.op !== 'lm_head vocab x d') {
          for (const sh of GEMV_SHAPES) {
            const v = await timer.time(Ws.map((W) => gemvWith(k, { W, x, y }, sh, s.own)));
            add('gemv', { op: g.op, rows: g.rows, cols: g.cols, copies, form: gemvForm(sh) }, v.us, bytes, v.method);
          }
        }
      });
    }

    const densities = o.densities ?? DEFAULT_DENSITIES;
    /** Instances (copy, disjoint neuron set) for K-row gathers from f-row matrices. */
    const gatherPlan = (K: number, rowBytes: number) => {
      const perInstance = K * rowBytes;
      const want = Math.max(1, Math.min(MAX_COPIES, Math.ceil(rotate / perInstance)));
      const setsPerCopy = Math.max(1, Math.floor(f / K));
      const copies = Math.max(1, Math.min(Math.ceil(want / setsPerCopy), Math.floor(budget / (f * rowBytes))));
      return { copies, instances: Math.min(want, copies * setsPerCopy), setsPerCopy, bytes: perInstance };
    };

    // ---- the fixed cost of a dispatch: one workgroup writing one float, back to back ----
    await bench('dispatch-floor', async (s) => {
      const b = s.vec(64, 'one');
      await s.ready();
      const tm = await timer.time([[k.fillVector(b, 1, 1, 0, 1, s.own)]]);
      add('dispatch-floor', { note: 'fill32 of one float: one workgroup', workgroups: 1 }, tm.us, null, tm.method);
    });

    // ---- gathered fc1 (sparse rows + bias + ReLU): bytes of the K rows read ----
    const gatherRuns: { p: number; shape?: { rows: number; tpr: number } }[] = densities.map((p) => ({ p }));
    if (variants) for (const shape of GATHER_SHAPES) gatherRuns.push({ p: bd, shape });
    for (const { p, shape } of gatherRuns) {
      await bench('gather-gemv', async (s) => {
        const K = Math.max(1, Math.round(p * f));
        const plan = gatherPlan(K, ceil4(d) * 2);
        const x = s.vec(d, 'x', 0, 1), h = s.vec(K, 'h'), bias = s.vec(f, 'b1', 0, 0.1);
        const Ws = Array.from({ length: plan.copies }, (_, i) => s.mat(f, d, `fc1_${i}`));
        const sets = Ws.flatMap((_, c) => disjointSets(f, K, plan.setsPerCopy, 7 + c).map((set) => ({ c, set }))).slice(0, plan.instances);
        await s.ready();
        const inst = sets.map(({ c, set }) => k.gatherLinear({ W: Ws[c], x, h, T: 1, k: K, sel: s.u32(set, 'sel'), selStride: K, bias, relu: true, shape }, s.own));
        const tm = await timer.time(inst);
        add('gather-gemv', { density: p, k: K, rows: f, cols: d, form: shape ? `r${shape.rows}_tpr${shape.tpr}` : 'default', copies: plan.copies, sets: plan.instances }, tm.us, plan.bytes, tm.method);
      });
    }

    // ---- sparse fc2 (default: one pass over the selected rows of fc2ᵀ into x; 'partial': partial sums + reduce) ----
    const slicesFor = (K: number) => Math.max(1, Math.min(FC2_MAX_SLICES, ceilDiv(K, FC2_MIN_SLICE_ROWS)));
    type Fc2Run = { p: number; mode?: 'partial'; shape?: Fc2DirectShape };
    const fc2Runs: Fc2Run[] = densities.map((p) => ({ p }));
    if (variants) fc2Runs.push({ p: bd, mode: 'partial' }, ...FC2_SHAPES.map((shape) => ({ p: bd, shape })));
    for (const { p, mode, shape } of fc2Runs) {
      await bench('sparse-fc2', async (s) => {
        const K = Math.max(1, Math.round(p * f));
        const plan = gatherPlan(K, ceil4(d) * 2);
        // h nonzero everywhere: the kernel skips rows whose ReLU output is 0, and a predictor picks active neurons.
        const h = s.vec(K, 'h', 1, 0.5), x = s.vec(d, 'x'), bias = s.vec(d, 'b2', 0, 0.1);
        const Ws = Array.from({ length: plan.copies }, (_, i) => s.mat(f, d, `fc2T_${i}`));
        const slices = slicesFor(K);
        const partial = s.vec(mode === 'partial' ? slices * ceil4(d) * Ws[0].parts.length : 4, 'partial');
        const sets = Ws.flatMap((_, c) => disjointSets(f, K, plan.setsPerCopy, 11 + c).map((set) => ({ c, set }))).slice(0, plan.instances);
        await s.ready();
        const inst = sets.map(({ c, set }) => k.sparseDown({ W2t: Ws[c], h, sel: s.u32(set, 'sel'), selStride: K, k: K, T: 1, slices, partial, x, bias, mode, fc2Shape: shape }, s.own));
        const tm = await timer.time(inst);
        const form = mode === 'partial' ? `partial_s${slices}` : shape ? fc2Form(shape) : 'default';
        add('sparse-fc2', { density: p, k: K, rows: f, cols: d, form, copies: plan.copies, sets: plan.instances }, tm.us, plan.bytes, tm.method);
      });
    }

    // ---- predictor GEMVs at their shapes: A (r x d), B (f x r), the default GEMV shape and, with variants, others ----
    const Kb = Math.max(1, Math.round(bd * f)), r = predictorRank(d);
    const predRuns: { op: string; rows: number; cols: number; shape?: { rows: number; tpr: number } }[] = [
      { op: 'pred A r x d', rows: r, cols: d }, { op: 'pred B f x r', rows: f, cols: r },
    ];
    if (variants) {
      for (const shape of PRED_A_SHAPES) predRuns.push({ op: 'pred A r x d', rows: r, cols: d, shape });
      predRuns.push({ op: 'pred B f x r', rows: f, cols: r, shape: { rows: 4, tpr: 64 } });
    }
    for (const g of predRuns) {
      await bench('gemv-pred', async (s) => {
        const bytes = matBytes(g.rows, g.cols);
        const copies = copiesFor(bytes, bytes);
        const x = s.vec(g.cols, 'x', 0, 1), y = s.vec(g.rows, 'y');
        const Ws = Array.from({ length: copies }, (_, i) => s.mat(g.rows, g.cols, `W${i}`));
        await s.ready();
        const inst = Ws.map((W) => (g.shape ? gemvWith(k, { W, x, y }, g.shape, s.own) : k.linear({ W, x, y, T: 1 }, s.own)));
        const tm = await timer.time(inst);
        add('gemv-pred', { op: g.op, rows: g.rows, cols: g.cols, form: g.shape ? `r${g.shape.rows}_tpr${g.shape.tpr}` : 'default', copies }, tm.us, bytes, tm.method);
      });
    }

    // ---- the whole MLP block: dense (fc1 + ReLU GEMV, fc2 GEMV) against sparse (predictor, top-K, gathers) ----
    let denseUs: number | null = null;
    await bench('mlp-dense', async (s) => {
      const bytes = matBytes(f, d) + matBytes(d, f);
      const layers = copiesFor(bytes, bytes);
      const xin = s.vec(d, 'mlp_in', 0, 1), act = s.vec(f, 'act'), x = s.vec(d, 'x'), b1 = s.vec(f, 'b1', 0, 0.1), b2 = s.vec(d, 'b2', 0, 0.1);
      const L = Array.from({ length: layers }, (_, i) => ({ fc1: s.mat(f, d, `fc1_${i}`), fc2: s.mat(d, f, `fc2_${i}`) }));
      await s.ready();
      const inst = L.map((l) => [
        ...k.linear({ W: l.fc1, x: xin, y: act, T: 1, bias: b1, relu: true }, s.own),
        ...k.linear({ W: l.fc2, x: act, y: x, T: 1, bias: b2, resid: true }, s.own),
      ]);
      const tm = await timer.time(inst);
      denseUs = tm.us;
      add('mlp-dense', { density: 1, layers }, tm.us, bytes, tm.method);
    });
    // 'default': what the runner gets from ops today. With variants, 'before' is the earlier composition
    // (partial-sum fc2 + reduce), 'predA_r1_tpr256' the default with predictor A one row a workgroup.
    type BlockForm = { form: string; fc2?: 'partial'; predA?: { rows: number; tpr: number } };
    const blockForms: BlockForm[] = [{ form: 'default' }];
    if (variants) blockForms.push({ form: 'before', fc2: 'partial' }, { form: 'predA_r1_tpr256', predA: { rows: 1, tpr: 256 } });
    for (const bf of blockForms) {
      await bench('mlp-sparse', async (s) => {
        const predBytes = matBytes(r, d) + matBytes(f, r) + f * 4;
        const bytes = predBytes + 2 * Kb * ceil4(d) * 2;
        const layers = copiesFor(bytes, 2 * matBytes(f, d) + predBytes);
        // fc1 bias large enough that every selected neuron is active: fc2 then reads all K rows (the
        // kernel skips zeros), as with a predictor that picks the active ones.
        const xin = s.vec(d, 'mlp_in', 0, 1), x = s.vec(d, 'x'), b1 = s.vec(f, 'b1', 10, 0.1), b2 = s.vec(d, 'b2', 0, 0.1);
        const u = s.vec(r, 'pred_u'), scores = s.vec(f, 'scores'), sel = s.vec(Kb, 'sel'), h = s.vec(Kb, 'h_sel');
        const slices = slicesFor(Kb);
        const L = Array.from({ length: layers }, (_, i) => ({
          A: s.mat(r, d, `A_${i}`), B: s.mat(f, r, `B_${i}`), pb: s.vec(f, `pred_b_${i}`, 0, 0.1),
          fc1: s.mat(f, d, `fc1_${i}`), fc2T: s.mat(f, d, `fc2T_${i}`),
        }));
        const partial = s.vec(bf.fc2 === 'partial' ? slices * ceil4(d) * L[0].fc2T.parts.length : 4, 'partial');
        await s.ready();
        const inst = L.map((l) => [
          ...(bf.predA ? gemvWith(k, { W: l.A, x: xin, y: u }, bf.predA, s.own) : k.linear({ W: l.A, x: xin, y: u, T: 1 }, s.own)),
          ...k.linear({ W: l.B, x: u, y: scores, T: 1, bias: l.pb }, s.own),
          k.topK({ scores, out: sel, n: f, k: Kb, T: 1, inStride: f, outStride: Kb }, s.own),
          ...k.gatherLinear({ W: l.fc1, x: xin, h, T: 1, k: Kb, sel, selStride: Kb, bias: b1, relu: true }, s.own),
          ...k.sparseDown({ W2t: l.fc2T, h, sel, selStride: Kb, k: Kb, T: 1, slices, partial, x, bias: b2, mode: bf.fc2 }, s.own),
        ]);
        const tm = await timer.time(inst);
        const params: KernelRow['params'] = { density: bd, k: Kb, rank: r, form: bf.form, dispatches: inst[0].length, layers };
        if (denseUs !== null && tm.us > 0) params.speedup_vs_dense = Math.round((denseUs / tm.us) * 100) / 100;
        add('mlp-sparse', params, tm.us, bytes, tm.method);
      });
    }

    // The block rule (the runner's default for calibrated predictors): predictor A, then predictor B +
    // per-block threshold + gathered fc1 fused (block-select.ts), then sparse fc2 over the slots. The
    // threshold is the scores' (1 - density) quantile on this x (read back once, untimed), the cap
    // twice the mean count a block as calibration lands; the chosen count is read back and reported.
    await bench('mlp-sparse', async (s) => {
      const cap = Math.min(BLOCK_SIZE, 2 * Math.ceil(bd * BLOCK_SIZE)), slots = blockSlots(f, cap);
      const predBytes = matBytes(r, d) + matBytes(f, r) + f * 4;
      const xin = s.vec(d, 'mlp_in', 0, 1), x = s.vec(d, 'x'), b1 = s.vec(f, 'b1', 10, 0.1), b2 = s.vec(d, 'b2', 0, 0.1);
      const u = s.vec(r, 'pred_u'), scores = s.vec(f, 'scores'), sel = s.vec(slots, 'sel'), h = s.vec(slots, 'h_sel'), cnt = s.vec(4, 'cnt');
      const layers = copiesFor(predBytes + 2 * Kb * ceil4(d) * 2, 2 * matBytes(f, d) + predBytes);
      const L = Array.from({ length: layers }, (_, i) => ({
        A: s.mat(r, d, `A_${i}`), B: s.mat(f, r, `B_${i}`), pb: s.vec(f, `pred_b_${i}`, 0, 0.1),
        fc1: s.mat(f, d, `fc1_${i}`), fc2T: s.mat(f, d, `fc2T_${i}`),
      }));
      await s.ready();
      const tmp: GPUBuffer[] = [];
      await runNow(k, [...k.linear({ W: L[0].A, x: xin, y: u, T: 1 }, tmp), ...k.linear({ W: L[0].B, x: u, y: scores, T: 1, bias: L[0].pb }, tmp)], tmp);
      const sc = Float32Array.from(await readF32(k, scores, f)).sort();
      const tau = sc[Math.max(0, Math.min(f - 1, f - Kb))];
      const inst = L.map((l) => [
        ...k.linear({ W: l.A, x: xin, y: u, T: 1 }, s.own),
        ...k.blockSelectFc1({ B: l.B, bias: l.pb, u, W1: l.fc1, b1, x: xin, sel, h, cnt, T: 1, cap, tau }, s.own),
        ...k.sparseDown({ W2t: l.fc2T, h, sel, selStride: slots, k: slots, T: 1, x, bias: b2 }, s.own),
      ]);
      const tm = await timer.time(inst);
      k.device.queue.writeBuffer(cnt, 0, new Uint32Array(4));
      await runNow(k, inst[0], []); // one more pass, to count what the rule chose (its uniforms stay in s.own)
      const chosen = (await readU32(k, cnt, 1))[0];
      const bytes = predBytes + 2 * chosen * ceil4(d) * 2;
      const params: KernelRow['params'] = { density: r3(chosen / f), k: chosen, slots, cap, rank: r, form: 'block', dispatches: inst[0].length, layers };
      if (denseUs !== null && tm.us > 0) params.speedup_vs_dense = Math.round((denseUs / tm.us) * 100) / 100;
      add('mlp-sparse', params, tm.us, bytes, tm.method);
      // Where the block's time goes: the fused kernel alone, and sparse fc2 over the slots alone.
      const shapes = [{}, ...(variants ? [256, 512, 1024].flatMap((wg) => [4, 8].map((unroll) => ({ wg, unroll }))) : [])] as { wg?: number; unroll?: number }[];
      for (const sh of shapes) {
        const sel1 = await timer.time(L.map((l) => k.blockSelectFc1({ B: l.B, bias: l.pb, u, W1: l.fc1, b1, x: xin, sel, h, cnt, T: 1, cap, tau, ...sh }, s.own)));
        add('block-select', { density: r3(chosen / f), k: chosen, cap, rank: r, form: sh.wg ? `wg${sh.wg}_u${sh.unroll}` : 'default', layers }, sel1.us, matBytes(f, r) + f * 4 + chosen * ceil4(d) * 2, sel1.method);
      }
      for (const fc2Shape of [undefined, ...(variants ? FC2_SHAPES : [])]) {
        const fc2s = await timer.time(L.map((l) => k.sparseDown({ W2t: l.fc2T, h, sel, selStride: slots, k: slots, T: 1, x, bias: b2, fc2Shape }, s.own)));
        add('sparse-fc2', { density: r3(chosen / f), k: chosen, slots, form: `block slots${fc2Shape ? ' ' + fc2Form(fc2Shape) : ''}`, layers }, fc2s.us, chosen * ceil4(d) * 2, fc2s.method);
      }
    });

    // The lookahead (predictors reading attn_in, decode; the runner's form for them): predictor A's
    // rows ride the qkv GEMV (the decode profile shows no time added there: docs/benchmarks.md), so
    // the block's own dispatches are block-select with the MLP LayerNorm folded in (x the raw
    // residual) and sparse fc2. Timed here: those two; the threshold as in the block rule above.
    // (Block-select scores the block itself here, its 'all' phase; the runner's decode moves the
    // scoring into the attention dispatch, where it reads B as int8: here B is timed both ways.)
    if (k.blockSelectLnFits(d)) await bench('mlp-sparse', async (s) => {
      const cap = Math.min(BLOCK_SIZE, 2 * Math.ceil(bd * BLOCK_SIZE)), slots = blockSlots(f, cap);
      const predBytes = matBytes(r, d) + matBytes(f, r) + f * 4;
      const xin = s.vec(d, 'x_resid', 1, 1), x = s.vec(d, 'x'), b2 = s.vec(d, 'b2', 0, 0.1);
      const gamma = s.vec(d, 'mlp_ln.w', 1, 0.1), c = s.vec(2 * f, 'fc1.ln_c', 10, 0.1);
      const predBytesI8 = matBytes(r, d) + matBytesI8(f, r) + f * 4;
      const u = s.vec(r, 'pred_u', 0, 1), scores = s.vec(f, 'scores'), sel = s.vec(slots, 'sel'), h = s.vec(slots, 'h_sel'), cnt = s.vec(4, 'cnt');
      const layers = copiesFor(predBytes + 2 * Kb * ceil4(d) * 2, 2 * matBytes(f, d) + predBytes);
      // B both ways (fp16, int8: the runner's default for the block rule), from the same values.
      const L = Array.from({ length: layers }, (_, i) => { const Bs = s.matBoth(f, r, `B_${i}`); return { B: Bs.h, Bq: Bs.q, pb: s.vec(f, `pred_b_${i}`, 0, 0.1), fc1: s.mat(f, d, `fc1_${i}`), fc2T: s.mat(f, d, `fc2T_${i}`) }; });
      let chosen = 0;
      await s.ready();
      const tmp: GPUBuffer[] = [];
      await runNow(k, k.linear({ W: L[0].B, x: u, y: scores, T: 1, bias: L[0].pb }, tmp), tmp);
      const sc = Float32Array.from(await readF32(k, scores, f)).sort();
      const tau = sc[Math.max(0, Math.min(f - 1, f - Kb))];
      const ln = { gamma, c, eps: 1e-5 };
      // The runner's form: fc2's rows inside block-select (a partial a block), then their sum; with
      // the one-pass fc2 dispatch it replaced (the only form where fc2 has no seat in block-select).
      const inBlock = k.blockFc2Fits(L[0].fc2T, true);
      const part = inBlock ? s.vec(k.blockFc2PartBytes(L[0].fc2T, 1) / 4, 'fc2_part') : null;
      // The decode form (fc2 in block-select, B int8), then B in fp16, then the one-pass fc2. Each
      // after 300 ms of GPU work: after the seconds the host takes to make B, the first timing ran
      // 3-4x slow on an H200 (114 µs against 25 at opt-6.7b, its parts alone 21 + 4; again at
      // opt-13b when timed twice), as a GPU whose clocks dropped while idle would.
      for (const [fc2In, i8] of [[inBlock, true], ...(inBlock ? [[true, false], [false, true]] : [])] as [boolean, boolean][]) {
        const inst = L.map((l) => [
          ...k.blockSelectFc1({ B: i8 ? l.Bq : l.B, bias: l.pb, u, W1: l.fc1, b1: null, ln, x: xin, sel, h, cnt, T: 1, cap, tau, fc2: fc2In ? { W2t: l.fc2T, part: part! } : undefined }, s.own),
          ...(fc2In ? [k.fc2Sum({ W2t: l.fc2T, part: part!, x, bias: b2, T: 1 }, s.own)] : k.sparseDown({ W2t: l.fc2T, h, sel, selStride: slots, k: slots, T: 1, x, bias: b2 }, s.own)),
        ]);
        for (const t0 = performance.now(); performance.now() - t0 < 300;) await runNow(k, inst.flat(), []);
        const tm = await timer.time(inst);
        k.device.queue.writeBuffer(cnt, 0, new Uint32Array(4));
        await runNow(k, inst[0], []);
        chosen = (await readU32(k, cnt, 1))[0];
        const bytes = (i8 ? predBytesI8 : predBytes) + 2 * chosen * ceil4(d) * 2;
        const params: KernelRow['params'] = { density: r3(chosen / f), k: chosen, slots, cap, rank: r, form: `block lookahead (A in the qkv GEMV)${fc2In ? ', fc2 in block-select' : ', one-pass fc2'}${i8 ? ', B int8' : ', B fp16'}`, dispatches: inst[0].length, layers };
        if (denseUs !== null && tm.us > 0) params.speedup_vs_dense = Math.round((denseUs / tm.us) * 100) / 100;
        add('mlp-sparse', params, tm.us, bytes, tm.method);
      }
      if (part) {
        const t1 = await timer.time(L.map((l) => k.blockSelectFc1({ B: l.Bq, bias: l.pb, u, W1: l.fc1, b1: null, ln, x: xin, sel, h, cnt, T: 1, cap, tau, fc2: { W2t: l.fc2T, part } }, s.own)));
        const partBytes = k.blockFc2PartBytes(L[0].fc2T, 1);
        // Bytes: B, its bias, the chosen rows of fc1 and fc2, the partials written.
        add('block-select', { density: r3(chosen / f), k: chosen, cap, rank: r, form: `MLP LayerNorm folded in (lookahead), fc2 partials (${k.blockPartHalf ? 'f16' : 'f32'}), B int8`, layers }, t1.us, matBytesI8(f, r) + f * 4 + 2 * chosen * ceil4(d) * 2 + partBytes, t1.method);
        const t2 = await timer.time(L.map((l) => [k.fc2Sum({ W2t: l.fc2T, part, x, bias: b2, T: 1 }, s.own)]));
        // Bytes: the partials, fc2's bias, x read and written.
        add('fc2-sum', { blocks: Math.ceil(f / BLOCK_SIZE), cols: d, layers }, t2.us, partBytes + 3 * d * 4, t2.method);
      }
      for (const sh of [{}, ...(variants ? [256, 512, 1024].filter((wg) => blockSelectLnBytes(d, wg) <= k.gpu.limits.maxComputeWorkgroupStorageSize).flatMap((wg) => [2, 4, 8].map((unroll) => ({ wg, unroll }))) : [])] as { wg?: number; unroll?: number }[]) {
        const sel1 = await timer.time(L.map((l) => k.blockSelectFc1({ B: l.B, bias: l.pb, u, W1: l.fc1, b1: null, ln, x: xin, sel, h, cnt, T: 1, cap, tau, ...sh }, s.own)));
        add('block-select', { density: r3(chosen / f), k: chosen, cap, rank: r, form: `MLP LayerNorm folded in (lookahead)${sh.wg ? ` wg${sh.wg}_u${sh.unroll}` : ''}`, layers }, sel1.us, matBytes(f, r) + f * 4 + chosen * ceil4(d) * 2, sel1.method);
      }
      // With variants: x's LayerNorm kept in workgroup memory as f32 and as f16 pairs (the default picks by width).
      if (variants && d % 4 === 0) {
        for (const half of [false, true]) {
          k.blockSelectLnHalf = half;
          const selH = await timer.time(L.map((l) => k.blockSelectFc1({ B: l.B, bias: l.pb, u, W1: l.fc1, b1: null, ln, x: xin, sel, h, cnt, T: 1, cap, tau }, s.own)));
          add('block-select', { density: r3(chosen / f), k: chosen, cap, rank: r, form: `MLP LayerNorm folded in (lookahead), xs as ${half ? 'f16 pairs' : 'f32'}`, layers }, selH.us, matBytes(f, r) + f * 4 + chosen * ceil4(d) * 2, selH.method);
        }
        k.blockSelectLnHalf = null;
      }
    });

    // ---- top-K over f scores ----
    await bench('topk', async (s) => {
      const K = Math.max(1, Math.round(bd * f));
      const scores = s.vec(f, 'scores', 0, 1), out = s.vec(K, 'sel');
      await s.ready();
      const tm = await timer.time([[k.topK({ scores, out, n: f, k: K, T: 1, inStride: f, outStride: K }, s.own)]]);
      add('topk', { n: f, k: K }, tm.us, f * 4, tm.method);
    });

    // ---- LayerNorm over d ----
    await bench('layernorm', async (s) => {
      const x = s.vec(d, 'x', 0, 1), y = s.vec(d, 'y'), w = s.vec(d, 'w', 1, 0.1), b = s.vec(d, 'b', 0, 0.1);
      await s.ready();
      const tm = await timer.time([[k.layerNorm({ x, y, w, b, n: d, rows: 1, eps: 1e-5 }, s.own)]]);
      add('layernorm', { n: d }, tm.us, d * 4 * 3, tm.method);
    });

    // ---- decode attention: one query over P cached positions, per layer's own KV cache, f32 and f16 ----
    const positions = (o.positions ?? DEFAULT_POSITIONS).filter((p) => p <= S.maxPos);
    const k16 = new Kernels(gpu, undefined, true);
    // With variants also the split + combine pair (form=pair) that the fused default replaced, and
    // both with other splits wanted (splits=N; default attentionTargetSplits, `splits=grid`: every
    // split of the grid, the rule before it).
    const grid = attentionSplits(S.heads, S.maxPos);
    const forms: { fused: boolean; targetSplits?: number }[] = variants
      ? [true, false].flatMap((fused) => [{ fused }, ...[4, 8, 16, grid].map((t) => ({ fused, targetSplits: t }))])
      : [{ fused: true }];
    for (const P of positions.length ? positions : [S.maxPos]) for (const kk of [k, k16]) for (const { fused, targetSplits } of forms) {
      if (targetSplits && kk.kvHalf) continue;
      await bench('attention', async (s) => {
        kk.fuseAttention = fused;
        const bytes = 2 * kk.kvBytes(P * d);
        const layers = copiesFor(bytes, bytes);
        const hd = d / S.heads;
        const qkv = s.vec(3 * d, 'qkv', 0, 1), out = s.vec(d, 'o'), hn = s.vec(S.heads, 'hn');
        const step = s.u32(Uint32Array.from([P - 1, 0, 0, 0]), 'step'); // pos = P - 1: P keys visible
        const kv = Array.from({ length: layers }, (_, i) => ({ k: s.kv(P, d, `k_${i}`, kk.kvHalf), v: s.kv(P, d, `v_${i}`, kk.kvHalf) }));
        await s.ready();
        const inst = kv.map((c) => kk.attention({ step, qkv, k: c.k, v: c.v, o: out, hn, H: S.heads, hd, T: 1, maxPos: S.maxPos, targetSplits }, s.own));
        const tm = await timer.time(inst);
        kk.fuseAttention = true;
        add('attention', { positions: P, heads: S.heads, head_dim: hd, layers, kv: kk.kvHalf ? 'f16' : 'f32', ...(fused ? {} : { form: 'pair' }), ...(targetSplits ? { splits: targetSplits === grid ? 'grid' : targetSplits } : {}) }, tm.us, bytes, tm.method);
      });
    }
  } finally {
    if (!o.gpu) gpu.device.destroy(); // a live device busy-polls a core (DESIGN.md)
  }
  for (const sp of rows.filter((x) => x.kernel === 'mlp-sparse' && (x.params.form === 'default' || String(x.params.form).startsWith('block')))) {
    if (typeof sp.params.speedup_vs_dense !== 'number') continue;
    const form = String(sp.params.form);
    const fc2 = form.includes('one-pass fc2') ? ', one-pass fc2' : form.includes('fc2 in block-select') ? ', fc2 in block-select' : '';
    const bForm = form.endsWith('B int8') ? ', B int8' : form.endsWith('B fp16') ? ', B fp16' : '';
    const how = form === 'default' ? `top-K, density ${bd}` : `${form === 'block' ? 'block rule' : `block rule, lookahead${fc2}${bForm}`}, density ${sp.params.density} measured`;
    log(`sparse MLP block (${how}; predictor and selection included): ${sp.params.speedup_vs_dense}x the dense block's speed (target: >= 5x at opt-6.7b)`);
  }
  return rows;
}

const r3 = (x: number) => Math.round(x * 1000) / 1000;

/** One JSON object per row, floats rounded. */
export function kernelJson(row: KernelRow): string {
  return JSON.stringify({ ...row, us: r3(row.us), gbps: row.gbps === null ? null : r3(row.gbps) });
}

export function kernelTable(rows: KernelRow[]): string {
  const fmt = (x: number | null, digits: number) => (x === null || !Number.isFinite(x) ? '-' : x.toFixed(digits));
  const body = rows.map((r) => [
    r.kernel,
    Object.entries(r.params).filter(([key]) => key !== 'note').map(([key, v]) => `${key}=${v}`).join(' '),
    fmt(r.us, 1), fmt(r.gbps, 1), fmt(r.bytes === null ? null : r.bytes / 1e6, 2), r.timing,
  ]);
  const header = ['kernel', 'params', 'us', 'GB/s', 'MB read', 'timing'];
  const w = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  // Text columns (kernel, params, timing) left-aligned, numbers right-aligned.
  const left = new Set([0, 1, 5]);
  const line = (r: string[]) => r.map((s, i) => (left.has(i) ? s.padEnd(w[i]) : s.padStart(w[i]))).join('  ').trimEnd();
  return [line(header), w.map((n) => '-'.repeat(n)).join('  '), ...body.map(line)].join('\n') + '\n';
}

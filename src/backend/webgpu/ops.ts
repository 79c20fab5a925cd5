/**
 * The kernel library: a pipeline cache keyed by readable names that record every compile-time choice,
 * and builders that turn one operation into Dispatch records (pipeline + bind group + grid). A plan is
 * a list of these, built once and replayed; builders allocate their small parameter uniforms into the
 * caller's `own` list so a plan can free what it made.
 */
import type { TracePoint } from '../types.js';
import { quantizeRowsI8 } from '../../util/int8.js';
import type { Gpu } from './device.js';
import { ceil4, ceilDiv, type KernelFeatures } from './kernels/common.js';
import { gemvKey, gemvReadsGamma, gemvWgsl, type GemvOpts } from './kernels/gemv.js';
import { SKINNY_FORM, skinnyKey, skinnyRows, skinnySubgroups, skinnyWgsl } from './kernels/matmul-skinny.js';
import { layerNormKey, layerNormWgsl, layerNormWorkgroupSize } from './kernels/layernorm.js';
import { ATS_MAX_SPLITS, ATS_WG, ATT_WG, attentionMaxLive, attentionSplitBytes, attentionTargetSplits, attentionCombineKey, attentionCombineWgsl, attentionFusedFits, attentionFusedWords, attentionKey, attentionSplitKey, attentionSplitShape, attentionSplits, attentionSplitWgsl, attentionWgsl } from './kernels/attention.js';
import { embedKey, embedWgsl, fill32Key, fill32Wgsl, fillKey, fillWgsl, kvStoreKey, kvStoreWgsl, scaleColsKey, scaleColsWgsl, scatterKey, scatterWgsl, transposeKey, transposeWgsl } from './kernels/misc.js';
import { topKKey, topKWgsl, topKWorkgroupSize } from './kernels/topk.js';
import { argmaxKey, argmaxWgsl, argmaxWorkgroupSize } from './kernels/argmax.js';
import { rowStatsKey, rowStatsWgsl } from './kernels/row-stats.js';
import { BS_NB, blockScoreRoleBytes, blockSelectKey, blockSelectLnBytes, blockSelectWgsl, blockSelectWorkgroupSize, type BlockScoreRoleOpts, type BlockSelectOpts } from './kernels/block-select.js';
import { headSelectKey, headSelectWgsl, HS_WG } from './kernels/head-select.js';
import { headMajorKey, headMajorWgsl, headOutKey, headOutTpr, headOutWgsl, HO_RPT, HO_WG } from './kernels/head-out.js';
import { FC2P_WG, FC2S_CW, fc2DirectKey, fc2DirectShape, fc2DirectWgsl, fc2PartialKey, fc2PartialWgsl, fc2SumKey, fc2SumWgsl, type Fc2DirectShape } from './kernels/sparse-mlp.js';

export interface Dispatch { label: string; pipeline: GPUComputePipeline; bind: GPUBindGroup; wg: [number, number, number] }
/** A copy of a trace point taken between dispatches (trace path only). */
export interface Tap { layer: number; point: TracePoint; buffer: GPUBuffer; offset: number; floats: number; rows: number }
export type PlanItem = { d: Dispatch } | { tap: Tap };

/** An fp16 matrix on the GPU: rows padded to colsP (a multiple of 4) and split by rows into parts
 *  that each fit one storage binding. */
export interface GpuMatrix {
  rows: number; cols: number; colsP: number;
  parts: { buffer: GPUBuffer; row0: number; rows: number }[];
  /** int8 rows with a scale each (matrixI8; block-select.ts, I8): colsP int8 columns (a multiple of 16) after a 16-byte scale chunk. Only block-select and its scoring role read these. */
  i8?: true;
}

export type Entry = GPUBuffer | { buffer: GPUBuffer; offset?: number; size?: number };
// Read at call time: in Node the GPU* globals exist only once device.ts has loaded the webgpu package.
const storageUsage = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
const MAX_WG = 65535;
export const f32bits = (v: number) => new Uint32Array(new Float32Array([v]).buffer)[0];

/** Workgroup grid for n groups: x up to 65535, the rest in y (kernels linearise with nwgx). */
function grid(n: number): [number, number] {
  const x = Math.max(1, Math.min(n, MAX_WG));
  return [x, Math.max(1, ceilDiv(n, MAX_WG))];
}

/**
 * Workgroups a dense GEMV with two rows a thread should make at least (gemvShape): two for each of an
 * H200's 132 SMs. Under it one row a thread: opt-1.3b decode (H200, GPU ms a token, docs/benchmarks.md)
 * dense 1.435 → 1.40, mlp 1.112 → 1.100; opt-2.7b (out_proj only) dense 2.40 → 2.37.
 */
const GEMV_MIN_GROUPS = 264;

/**
 * Threads per row of a GEMV: enough vec4 chunks per thread to hide the reduction (short rows such as
 * d = 256 would leave most of 64 threads one chunk), but at least 32 so a subgroup never spans two
 * rows (subgroups are at most 32 wide on the GPUs seen; AMD's 64 would need tpr 64). 256 threads a group.
 */
function gemvShape(K4: number, nRows = Infinity): { rows: number; tpr: number; rpt: number; wide: boolean } {
  // Rows padded to 8 halves take the wide (16-byte load) form: every real OPT width does.
  const wide = K4 % 2 === 0;
  const chunks = wide ? K4 / 2 : K4;
  // A short, wide matrix (the predictor's A: rank x d) makes too few workgroups to fill the card
  // with 4 rows each: one row of 256 threads a group ran OPT-6.7B's 336 x 4096 in 4.3-4.7 µs
  // against 6.4 (H200; 1.3B 3.4 vs 6.1, 13B 5.0 vs 7.6).
  if (wide && nRows < 1024 && chunks >= 256) return { rows: 1, tpr: 256, rpt: 1, wide };
  // Rows of >= 256 chunks (d >= 2048): two rows a thread, each x chunk loaded once for both (and,
  // with a folded LayerNorm, its statistics' terms taken once): rows of >= 512 chunks 4 rows of 64
  // threads a workgroup, shorter 8 of 32. Decode on an H200, GPU ms a token (docs/benchmarks.md):
  // opt-6.7b 5.66 → 5.01, opt-13b 10.04 → 8.55, opt-1.3b 1.64 → 1.54 (4 rows of 64 at 1.3B: 1.63).
  // Four rows a thread was slower at every shape timed.
  // fc2's long rows (>= 2048 chunks) took one row of 256 threads until the sixteenth session: alone
  // in the kernel bench that shape was as fast (6.7B 35.7 µs against 37.4), but in the decode step
  // 4 rows of 64 are faster: opt-6.7b dense 4.38 → 4.06 GPU ms, opt-13b 7.93 → 7.84, opt-30b equal
  // (2 rows of 128: 13B +3 %).
  // But one row a thread where two would leave fewer than GEMV_MIN_GROUPS workgroups (OPT-1.3B's
  // out_proj and fc2: 2048 rows): too few loads in flight on the card otherwise.
  const tpr = chunks >= 512 ? 64 : 32, rows = 256 / tpr;
  const rpt = wide && chunks >= 256 && nRows / (2 * rows) >= GEMV_MIN_GROUPS ? 2 : 1;
  return { rows, tpr, rpt, wide };
}

/**
 * The shape of a dense layer's folded-LayerNorm GEMV with γ in the weights (qkv with its K/V store,
 * `kv`, or fc1; no rows riding along, no sparse heads) where measured faster: 8 rows of 32 threads,
 * three rows a thread. Without γ's multiply the x side of a chunk is x − h and the statistics' terms,
 * which a third row shares. qkv alone (bench/qkv_probe.mjs QP_SHAPES, H200, µs, against the rule's 4
 * rows of 64 threads, two a thread): opt-6.7b 31.8 → 28.8 (a plain GEMV of the matrix: 28.5),
 * opt-13b 43.8 → 41.3; four rows a thread 30.0–30.8 and 43.1–49.0. In the dense decode step (GPU ms
 * a token, docs/benchmarks.md) it pays for qkv at d = 4096 and 5120 (−2.0 / −1.0 %) but not at 7168
 * (+3.6 %), and for fc1 at 4096 only (−1.7 %; +4.3 % at 5120, +0.8 % at 7168). Null: the rule's shape.
 */
function foldedShape(K4: number, nRows: number, kv: boolean): { rows: number; tpr: number; rpt: number } | null {
  const chunks = K4 / 2;
  return K4 % 2 === 0 && nRows >= 1024 && chunks >= 512 && chunks <= (kv ? 640 : 512) ? { rows: 8, tpr: 32, rpt: 3 } : null;
}

/**
 * The folded qkv decode GEMV's shape where rows ride along or sparse heads choose (the forms
 * foldedShape leaves to the rule) and where measured faster: at d = 4096, 8 rows of 32 threads, two
 * a thread (a workgroup's 16 rows stay inside a head of 128). Decode, GPU ms a token (H200,
 * docs/benchmarks.md): opt-6.7b mlp 2.914 → 2.864 (−1.7 %), dejavu 2.589 → 2.579; at opt-13b it was
 * slower (mlp +4.5 %, dejavu +0.5 %). Null: the rule's shape.
 */
function qkvRiderShape(K4: number): { rows: number; tpr: number } | null {
  return K4 === 1024 ? { rows: 8, tpr: 32 } : null;
}

/**
 * The gathered fc1's shape: rows a workgroup so that the K selected rows make about 400 workgroups
 * (one wave, enough of them), threads a row = 256 / rows, not many more than the row's chunks.
 * Timed on an H200 at 10 %: OPT-1.3B (K 819) 4.8 µs with 2 rows of 128 threads against 7.1 with the
 * dense rule's 8 of 32; OPT-6.7B (K 1638) and 13B (K 2048) fastest with 4 of 64, the dense rule's.
 */
function gatherShape(k: number, K4: number): { rows: number; tpr: number; wide: boolean } {
  const dense = gemvShape(K4), wide = dense.wide;
  const chunks = wide ? K4 / 2 : K4;
  // Never fewer threads a row than the dense rule (untimed: fewer, longer rows were slower at 13B).
  let rows = 2 ** Math.round(Math.log2(Math.max(1, k / 400)));
  rows = Math.min(dense.rows, Math.max(1, rows));
  while (rows < 8 && 256 / rows > Math.max(32, 2 ** Math.floor(Math.log2(chunks)))) rows *= 2;
  return { rows, tpr: 256 / rows, wide };
}

/** The qkv GEMV's shape override for lazy K/V completion: at least two rows a thread (gemv.ts, LAZY). */
export function lazyShape(shape?: LinearArgs['shape'], rowsPerThread?: number | null): LinearArgs['shape'] {
  return { ...shape, rpt: Math.max(2, shape?.rpt ?? rowsPerThread ?? 2) };
}

/** Whether sparseDown runs fc2ᵀ (f, d) in one pass: rows padded to 8 halves; otherwise it needs a partial-sum buffer. */
export function fc2OnePass(W2t: GpuMatrix): boolean {
  return (W2t.colsP / 4) % 2 === 0;
}

/** The block scoring role's inputs and outputs (Kernels.attention's `blockScore`). */
export interface BlockScoreArgs {
  B: GpuMatrix; bias: GPUBuffer; u: GPUBuffer; uOff: number; uStride: number;
  sel: GPUBuffer; h: GPUBuffer; cnt: Entry; bcnt: GPUBuffer; cap: number; tau: number | null;
}

export interface LinearArgs {
  W: GpuMatrix; x: GPUBuffer; y: GPUBuffer; T: number;
  inStride?: number; inOff?: number; outStride?: number; outOff?: number;
  bias?: GPUBuffer | null; relu?: boolean; resid?: boolean;
  /**
   * Another matrix's rows riding this GEMV (T = 1, no ln / kv / relu / amax; gemv.ts, RIDE): W2 (r, the
   * same width) on the same x, each row's dot added into y2[off + row] (no bias). attn_io predictors'
   * o half of A, riding out_proj. Only where canRide(W, W2).
   */
  ride?: { W: GpuMatrix; y: GPUBuffer; off: number };
  /**
   * The pre-LayerNorm folded in (GEMV, T = 1 only): y = epi(W · LN(x)) with LN's γ and eps, and
   * c (2 × W.rows: c1 = W·γ, then c2 = W·β + b) from foldLayerNorm (c2 carries the bias: `bias`
   * must be unset). See gemv.ts.
   */
  ln?: {
    /** out: also write LN(x) to xn, or with `hat` x̂ = (x − μ)·s, the LayerNorm without γ and β (beta unread), for readers whose weights carry γ. */
    gamma: GPUBuffer; c: GPUBuffer; eps: number; out?: { beta: GPUBuffer; xn: GPUBuffer; hat?: boolean };
    /**
     * W's stored rows are W∘γ, with c from foldLayerNormIntoWeights (gemv.ts, GAMMA IN W), and so are
     * kv.pred's and kv.hnext's when they ride along: γ is then read only for `out`'s LN(x).
     */
    gammaInW?: boolean;
  } | null;
  /**
   * W is a fused qkv (3d, d) and this is decode (GEMV, T = 1 only): rows [d, 2d) and [2d, 3d) of
   * the result also go to the K and V caches at position step[0], as kvStore would write them
   * (one dispatch fewer a layer; y still gets all 3d rows). No `resid`. See gemv.ts.
   */
  kv?: {
    step: GPUBuffer; k: GPUBuffer; v: GPUBuffer;
    /**
     * DejaVu's lookahead (with ln): a sparse MLP predictor's first product A (r, d), reading the
     * same LN(x) as qkv, computed in the same dispatch as rows [3d, 3d + r) of y; ln.c then holds
     * c1 and c2 over all 3d + r rows. Only where canFusePredictor(W, A) (gemv.ts, PRED).
     */
    pred?: GpuMatrix;
    /**
     * DejaVu's lookahead for heads (with ln): the next layer's head predictor W (H, d), reading this
     * layer's LN(x), computed in the same dispatch as rows [3d + r, 3d + r + H) (r: pred's rows, or
     * 0), its scores written to `out` (H floats) instead of y; ln.c then holds c1 and c2 over all
     * those rows. Only where canFuseHeadsNext (gemv.ts, HNEXT).
     */
    hnext?: { W: GpuMatrix; out: GPUBuffer };
    /**
     * Sparse heads (gemv.ts, HEADS): the H head scores (the top k run), where to write the chosen
     * list hl and the skip record, and the head dim; workgroups of unchosen heads' rows return at once.
     * Only where headsFit(W, hd, H) says the rows and the bindings allow it.
     */
    heads?: { scores: GPUBuffer; hl: GPUBuffer; skip: GPUBuffer; hd: number; H: number; k: number; kvAll: boolean;
      /**
       * DejaVu's lazy K/V completion (gemv.ts, LAZY; kv 'chosen', kvWindow 2): `skip` is then the
       * layer's H hole tags, and xPrev (d + 4 floats) the layer's input saved at the last even
       * position; `odd` / `complete` pick the form. Only where headsFit(W, hd, H, …, lazy).
       */
      lazy?: { xPrev: GPUBuffer; odd: boolean; complete?: boolean } };
  } | null;
  /** Overrides gemvShape's choice (tests, bench): rows a workgroup, threads a row, rows a thread (wide rows only). */
  shape?: { rows?: number; tpr?: number; rpt?: number };
  /**
   * GEMV (T = 1) only, no kv, resid or γ in the weights (ln.gammaInW: linear's folded shapes would
   * not match amaxSlots): each workgroup also writes its rows' largest as a (key, row)
   * pair to this buffer (gemv.ts, AMAX), amaxSlots(W, shape) pairs in all, for argmax's `pairs` form.
   */
  amax?: GPUBuffer;
}

export class Kernels {
  readonly feats: KernelFeatures;
  readonly device: GPUDevice;
  private pipelines = new Map<string, GPUComputePipeline>();
  /** Largest bytes one weight part may have (the adapter's binding limit; tests lower it to force splits). */
  readonly maxPartBytes: number;
  /** Rows a thread for dense GEMVs with wide rows, when set (A/B runs); else gemvShape's choice. */
  gemvRowsPerThread: number | null = null;
  /**
   * The qkv decode GEMV's shape (rows a workgroup, threads a row; rows a thread 2: the lazy form's)
   * where set (A/B runs), over qkvRiderShape, for the forms with rows riding along or sparse heads:
   * linear and the fits below agree.
   */
  qkvShape: { rows: number; tpr: number } | null = null;
  /** Block-select's folded LayerNorm keeps γ∘(x − sh) as f16 pairs: true / false, or null for the width rule (lnHalf). */
  blockSelectLnHalf: boolean | null = null;
  /**
   * Block-select's fc2 partials (blockSelectFc1's `fc2`) are stored as f16 and fc2Sum reads them so
   * (block-select.ts, FC2). Set before any partial buffer is sized (blockFc2PartBytes follows it).
   */
  blockPartHalf = true;
  /** Block-select's 'fc1' phase issues its rows' first loads before the LayerNorm's work (W_pre; block-select.ts): A/B runs turn it off. */
  blockFc1EarlyLoads = true;
  /** Block-select with the LayerNorm folded in: the choice before the LayerNorm's work (BlockSelectOpts.choiceFirst). */
  blockChoiceFirst = true;
  /** headOut's row sums from subgroupAdd where the adapter has subgroups (HeadOutShape.sg / sgx); false: the workgroup tree (A/B runs). */
  headOutSubgroups = true;
  /** Decode attention works every split of its grid (the rule before attentionTargetSplits): A/B runs. */
  attentionGridSplits = false;
  /** The skinny matmul's form (matmul-skinny.ts), which every prompt pass (T > 1) takes. */
  skinny = { ...SKINNY_FORM };

  /**
   * The KV cache holds f16 (packed two to a u32: no shader-f16 needed; half the memory, as Hugging
   * Face keeps fp16 models) when true, else f32. Every kernel that reads or writes the cache follows.
   */
  readonly kvHalf: boolean;
  /**
   * Decode attention in one dispatch where it fits (kernels/attention.ts, "Fused form"): the last
   * split of each head combines instead of a second dispatch. false: the split + combine pair (A/B).
   */
  fuseAttention = true;

  constructor(readonly gpu: Gpu, maxPartBytes?: number, kvHalf = false) {
    this.device = gpu.device;
    this.feats = { f16: gpu.f16, subgroups: gpu.subgroups, subgroupSize: gpu.subgroups ? gpu.subgroupSize : undefined };
    this.kvHalf = kvHalf;
    this.maxPartBytes = Math.min(maxPartBytes ?? Infinity, gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
  }

  get pipelineKeys(): string[] { return [...this.pipelines.keys()]; }

  pipeline(key: string, wgsl: () => string): GPUComputePipeline {
    let p = this.pipelines.get(key);
    if (!p) {
      const module = this.device.createShaderModule({ label: key, code: wgsl() });
      p = this.device.createComputePipeline({ label: key, layout: 'auto', compute: { module, entryPoint: 'main' } });
      this.pipelines.set(key, p);
    }
    return p;
  }

  buffer(bytes: number, label: string, usage = storageUsage()): GPUBuffer {
    return this.device.createBuffer({ label, size: Math.max(16, Math.ceil(bytes / 4) * 4), usage });
  }

  /** Bytes of n KV-cache elements (f16 or f32, Kernels.kvHalf). */
  kvBytes(n: number): number { return n * (this.kvHalf ? 2 : 4); }

  f32Buffer(data: Float32Array | Uint32Array, label: string): GPUBuffer {
    const b = this.buffer(data.byteLength, label);
    this.device.queue.writeBuffer(b, 0, unshared(data));
    return b;
  }

  uniform(vals: number[], own: GPUBuffer[]): GPUBuffer {
    const data = new Uint32Array(Math.max(4, ceil4(vals.length)));
    vals.forEach((v, i) => { data[i] = v >>> 0; });
    const b = this.device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.UNIFORM, mappedAtCreation: true });
    new Uint32Array(b.getMappedRange()).set(data);
    b.unmap();
    own.push(b);
    return b;
  }

  dispatch(label: string, pipeline: GPUComputePipeline, params: number[], entries: [number, Entry][], wg: [number, number, number], own: GPUBuffer[]): Dispatch {
    const all: [number, Entry][] = [[0, this.uniform(params, own)], ...entries];
    const bind = this.device.createBindGroup({
      label, layout: pipeline.getBindGroupLayout(0),
      entries: all.map(([binding, e]) => ({ binding, resource: 'buffer' in e ? e : { buffer: e } })),
    });
    return { label, pipeline, bind, wg };
  }

  // ---- weights ----

  /** `maxBytes`: a smaller cap on a part's bytes than maxPartBytes, for this matrix. */
  matrix(rows: number, cols: number, label: string, maxBytes = Infinity): GpuMatrix {
    const colsP = ceil4(cols);
    // Parts hold a multiple of 4 rows (the transpose kernel needs even part boundaries), of 64 where
    // a part holds that many: block selection cuts f into blocks of 64 that must not straddle parts.
    const fit = Math.floor(Math.min(this.maxPartBytes, maxBytes) / (colsP * 2));
    const maxRows = fit >= BS_NB ? Math.floor(fit / BS_NB) * BS_NB : Math.max(4, Math.floor(fit / 4) * 4);
    const parts: GpuMatrix['parts'] = [];
    for (let r0 = 0; r0 < rows; r0 += maxRows) {
      const n = Math.min(maxRows, rows - r0);
      parts.push({ buffer: this.buffer(n * colsP * 2, `${label}[${r0}..]`), row0: r0, rows: n });
    }
    return { rows, cols, colsP, parts };
  }

  /**
   * An int8 matrix (block-select.ts, I8): rows of 16 + colsP bytes (the scale's chunk, then colsP =
   * cols rounded up to 16), in parts of a multiple of 64 rows as `matrix` cuts them. Fill with uploadI8.
   */
  matrixI8(rows: number, cols: number, label: string): GpuMatrix {
    const colsP = Math.ceil(cols / 16) * 16, rowBytes = 16 + colsP;
    const fit = Math.floor(this.maxPartBytes / rowBytes);
    const maxRows = fit >= BS_NB ? Math.floor(fit / BS_NB) * BS_NB : Math.max(4, Math.floor(fit / 4) * 4);
    const parts: GpuMatrix['parts'] = [];
    for (let r0 = 0; r0 < rows; r0 += maxRows) {
      const n = Math.min(maxRows, rows - r0);
      parts.push({ buffer: this.buffer(n * rowBytes, `${label}[${r0}..]`), row0: r0, rows: n });
    }
    return { rows, cols, colsP, parts, i8: true };
  }

  /** Quantizes w (rows, cols, row-major) a row at a time (quantizeRowsI8) into an int8 matrix. */
  uploadI8(m: GpuMatrix, w: Float32Array): void {
    if (!m.i8) throw new Error('uploadI8: not an int8 matrix (matrixI8)');
    const { q, scale } = quantizeRowsI8(w, m.rows, m.cols), rowBytes = 16 + m.colsP;
    for (const p of m.parts) {
      const buf = new Uint8Array(p.rows * rowBytes), dv = new DataView(buf.buffer);
      for (let r = 0; r < p.rows; r++) {
        const g = p.row0 + r;
        dv.setFloat32(r * rowBytes, scale[g], true);
        buf.set(new Uint8Array(q.buffer, g * m.cols, m.cols), r * rowBytes + 16);
      }
      this.device.queue.writeBuffer(p.buffer, 0, buf);
    }
  }

  /** Uploads fp16 bits (rows, cols) row-major, padding each row. */
  upload(m: GpuMatrix, bits: Uint16Array): void {
    for (const p of m.parts) {
      const buf = new Uint16Array(p.rows * m.colsP);
      for (let r = 0; r < p.rows; r++) buf.set(bits.subarray((p.row0 + r) * m.cols, (p.row0 + r + 1) * m.cols), r * m.colsP);
      this.device.queue.writeBuffer(p.buffer, 0, buf);
    }
  }

  /** Fills a matrix with hash noise of standard deviation `std` on the GPU (synthetic weights). */
  fillMatrix(m: GpuMatrix, seed: number, std: number, own: GPUBuffer[]): Dispatch[] {
    const pl = this.pipeline(fillKey(), fillWgsl);
    return m.parts.map((p) => {
      const words = (p.rows * m.colsP) / 2;
      const [x, y] = grid(ceilDiv(words, 256));
      return this.dispatch('fill', pl, [words, m.cols, m.colsP, seed, f32bits(std), p.row0 * m.colsP], [[1, p.buffer]], [x, y, 1], own);
    });
  }

  fillVector(b: GPUBuffer, n: number, seed: number, std: number, value: number, own: GPUBuffer[]): Dispatch {
    return this.dispatch('fill32', this.pipeline(fill32Key(), fill32Wgsl), [n, seed, f32bits(std), f32bits(value)], [[1, b]], [ceilDiv(n, 256), 1, 1], own);
  }

  /** dst (cols, rows) = src (rows, cols)ᵀ, fp16 bits, on the GPU. */
  transpose(src: GpuMatrix, dst: GpuMatrix, own: GPUBuffer[]): Dispatch[] {
    const pl = this.pipeline(transposeKey(), transposeWgsl);
    const out: Dispatch[] = [];
    for (const s of src.parts) for (const d of dst.parts) {
      const [x, y] = grid(ceilDiv((d.rows * dst.colsP) / 2, 256));
      out.push(this.dispatch('transpose', pl, [src.rows, src.colsP, dst.colsP, s.row0, s.rows, d.row0, d.rows, x], [[1, s.buffer], [2, d.buffer]], [x, y, 1], own));
    }
    return out;
  }

  // ---- forward-pass operations ----

  /**
   * y = epi(x · Wᵀ) for T rows. THE kernel choice: batch-1 (decode) is memory-bound, so a GEMV that
   * streams each weight once with vec4 loads; T > 1 (prefill) takes the skinny matmul, which reuses
   * each weight chunk across a tile of a few tokens (matmul-skinny.ts).
   */
  linear(a: LinearArgs, own: GPUBuffer[]): Dispatch[] {
    if (a.W.i8) throw new Error('linear: an int8 matrix is read by block-select only');
    const K = a.W.cols, K4 = a.W.colsP / 4;
    const inStride = a.inStride ?? K, inOff = a.inOff ?? 0, outStride = a.outStride ?? a.W.rows, outOff = a.outOff ?? 0;
    const epi = { bias: !!a.bias, relu: !!a.relu, resid: !!a.resid };
    const ln = a.ln ?? null, kv = a.kv ?? null;
    if (ln && a.T !== 1) throw new Error('linear: the folded LayerNorm is a GEMV (T = 1) form');
    if (ln && a.bias) throw new Error('linear: with the LayerNorm folded in, the bias is part of c2');
    // Prefill keeps the kvStore dispatch (the skinny matmul has no K/V store in its epilogue).
    if (kv && a.T !== 1) throw new Error('linear: the KV-cache store in the epilogue is a GEMV (T = 1) form');
    if (kv && (a.resid || a.W.rows % 3 !== 0)) throw new Error('linear: the KV-cache store needs a (3d, d) qkv matrix and no residual add');
    const pred = kv?.pred ?? null;
    const hnext = kv?.hnext ?? null;
    // A dense layer's folded GEMV over W∘γ takes its own shape (foldedShape) unless told otherwise.
    const folded = ln?.gammaInW && !pred && !hnext && !kv?.heads && !a.shape && !this.gemvRowsPerThread ? foldedShape(K4, a.W.rows, !!kv) : null;
    // The forms with rows riding along or sparse heads: qkvForm, as the fits below read them.
    const qs = kv && (pred || hnext || kv.heads) ? this.qkvForm(K4, a.shape) : a.shape;
    // The lazy form's two-input loop exists in the several-rows-a-thread form only.
    const shape = kv?.heads?.lazy ? lazyShape(qs, this.gemvRowsPerThread) : folded ?? qs;
    if (pred && !(ln && this.canFusePredictor(a.W, pred, shape, hnext?.W))) throw new Error('linear: the lookahead predictor rides a folded, one-part qkv GEMV whose rows fill whole workgroups');
    const heads = kv?.heads ?? null;
    if (hnext && !(ln && this.canFuseHeadsNext(a.W, hnext.W, pred ?? undefined, shape, heads ? (heads.lazy ? 'lazy' : 'heads') : 'none'))) throw new Error('linear: the next layer\'s head scores ride a folded, one-part qkv GEMV whose rows fill whole workgroups, with two storage bindings to spare');
    const ride = a.ride ?? null;
    if (ride && (a.T !== 1 || ln || kv || a.relu || a.amax || !this.canRide(a.W, ride.W, a.shape))) throw new Error('linear: riding rows need a one-part GEMV (T = 1, no ln, kv, ReLU or argmax) whose rows fill whole workgroups, and a riding matrix of the same width');
    const extra = (pred?.rows ?? 0) + (hnext?.W.rows ?? 0) + (ride?.W.rows ?? 0);
    const rows = a.W.rows + extra;
    if (heads && !this.headsFit(a.W, heads.hd, heads.H, pred ?? undefined, a.shape, !!heads.lazy, hnext?.W)) throw new Error('linear: sparse heads need each workgroup\'s rows inside one head');
    if (heads?.lazy && (heads.kvAll || ln?.out || a.inOff !== undefined || a.W.cols % 4 !== 0)) throw new Error('linear: lazy K/V completion needs kv chosen, x from 0 and a width that is a multiple of 4');
    if (a.amax && (a.T !== 1 || kv || a.resid || ln?.gammaInW)) throw new Error('linear: the argmax epilogue is a GEMV (T = 1) form without kv, residual or γ in W');
    const out: Dispatch[] = [];
    let amaxOff = 0;
    for (const p of a.W.parts) {
      const ent: [number, Entry][] = [[1, p.buffer], [2, a.x], [3, a.y]];
      if (a.bias) ent.push([4, a.bias]);
      if (ln) ent.push([7, ln.c]);
      if (ln?.out) ent.push(...(ln.out.hat ? [] : [[11, ln.out.beta]] as [number, Entry][]), [12, ln.out.xn]);
      if (kv) ent.push([8, kv.step], [9, kv.k], [10, kv.v]);
      if (pred) ent.push([13, pred.parts[0].buffer]);
      if (ride) ent.push([13, ride.W.parts[0].buffer], [21, ride.y]);
      if (heads) ent.push([14, heads.scores], [15, heads.hl], [16, heads.skip]);
      if (heads?.lazy) ent.push([17, heads.lazy.xPrev]);
      if (hnext) ent.push([18, hnext.W.parts[0].buffer], [19, hnext.out]);
      if (a.amax) ent.push([20, a.amax]);
      switch (a.T === 1 ? 'gemv' : 'skinny') {
        case 'gemv': {
          const o: GemvOpts = { ...this.gemvForm(K4, rows, shape), ...epi, gather: false, ln: !!ln, kv: !!kv, kvHalf: !!kv && this.kvHalf, lnOut: !!ln?.out, lnOutHat: !!ln?.out?.hat, pred: !!pred, hnext: hnext ? pred?.rows ?? 0 : undefined,
            heads: heads ? { hd: heads.hd, H: heads.H, k: heads.k, kvAll: heads.kvAll, lazy: heads.lazy ? (heads.lazy.complete ? 'complete' : heads.lazy.odd ? 'odd' : 'even') : undefined } : undefined, gw: !!ln?.gammaInW, ride: !!ride,
            // The shift's loads after the first trip's (gemv.ts PEEL): where measured faster, rows of <= 256 chunks without sparse heads.
            peel: !!ln && !heads && K4 <= 512, amax: !!a.amax };
          if (gemvReadsGamma(o)) ent.push([6, ln!.gamma]);
          // The folded LayerNorm reads γ (K floats, from 0) as vec4 alongside x: whole vec4s only.
          o.xv4 = o.wide && inOff % 4 === 0 && inStride % 4 === 0 && (!ln || K % 4 === 0);
          const key = gemvKey(this.feats, o);
          const pRows = p.rows + extra;
          const groups = ceilDiv(pRows, o.rows * (o.rpt ?? 1)), [x, y] = grid(groups);
          out.push(this.dispatch(key, this.pipeline(key, () => gemvWgsl(this.feats, o)),
            [pRows, K, K4, p.row0, pRows, inStride, inOff, outStride, outOff + p.row0, 0, x, ln ? f32bits(ln.eps) : 0, rows, kv ? a.W.rows / 3 : ride ? a.W.rows : 0, amaxOff, ride?.off ?? 0], ent, [x, y, a.T], own));
          amaxOff += groups;
          break;
        }
        case 'skinny': {
          const so = { ...epi, ...this.skinny, wide: K4 % 2 === 0, sg: skinnySubgroups(this.feats, this.skinny.lanes), xv4: K % 4 === 0 && inStride % 4 === 0 && inOff % 4 === 0 };
          const [tiles, groups] = [ceilDiv(a.T, so.tt), ceilDiv(p.rows, skinnyRows(so))];
          if (tiles > 65535 || groups > 65535) throw new Error(`linear: ${a.T} tokens × ${p.rows} rows is past the skinny matmul's grid`);
          const key = skinnyKey(this.feats, so);
          out.push(this.dispatch(key, this.pipeline(key, () => skinnyWgsl(this.feats, so)),
            [p.rows, K, K4, p.row0, a.T, inStride, inOff, outStride, outOff + p.row0], ent, [tiles, groups, 1], own));
          break;
        }
      }
    }
    return out;
  }

  /**
   * A folded qkv GEMV's shape overrides (rows of K4 vec4 chunks): `shape` over qkvShape (A/B runs) or
   * qkvRiderShape, two rows a thread (the lazy form's, so that every form of the layer agrees).
   */
  private qkvForm(K4: number, shape?: LinearArgs['shape']): LinearArgs['shape'] {
    const base = this.gemvRowsPerThread ? null : this.qkvShape ?? qkvRiderShape(K4);
    return base ? { ...base, rpt: 2, ...shape } : shape;
  }

  /** How many (key, row) pairs linear's `amax` writes for W (with linear's `shape`, if any): one a workgroup of each part. */
  amaxSlots(W: GpuMatrix, shape?: LinearArgs['shape']): number {
    const o = this.gemvForm(W.colsP / 4, W.rows, shape);
    return W.parts.reduce((n, p) => n + ceilDiv(p.rows, o.rows * (o.rpt ?? 1)), 0);
  }

  /** The GEMV shape linear() takes for a matrix of rows padded to 4·K4 halves over `rows` rows: gemvShape with the overrides. */
  private gemvForm(K4: number, rows: number, shape?: LinearArgs['shape']): { rows: number; tpr: number; rpt: number; wide: boolean } {
    const o = { ...gemvShape(K4, rows), ...(this.gemvRowsPerThread ? { rpt: this.gemvRowsPerThread } : {}), ...shape };
    if (o.rpt > 1 && !o.wide) o.rpt = 1;   // several rows a thread: a form of the wide GEMV only
    return o;
  }

  /** Whether block-select can fold the MLP LayerNorm in at width d (x kept in workgroup memory: block-select.ts, LN). */
  blockSelectLnFits(d: number, fc2 = false): boolean {
    return blockSelectLnBytes(d, blockSelectWorkgroupSize(this.gpu.limits), this.lnHalf(d), fc2) <= this.gpu.limits.maxComputeWorkgroupStorageSize;
  }

  /**
   * Whether block-select's folded LayerNorm keeps γ∘(x − sh) as f16 pairs (block-select.ts, LN):
   * above d = 4096, where the f32 copy's workgroup memory cuts how many workgroups an SM holds. H200,
   * the kernel alone at 10 %, f32 / f16 pairs: opt-6.7b 16.1 / 24.0 µs, opt-13b 27.5 / 22.7,
   * opt-30b 51.2 / 37.8 (without the LayerNorm: 14.6 / 18.7 / 33.4). f16 is the precision of the
   * activations in Hugging Face's fp16 inference; the rest of our decode keeps f32.
   */
  private lnHalf(d: number): boolean {
    return d % 4 === 0 && (this.blockSelectLnHalf ?? d > 4096);
  }

  /**
   * Whether predictor A (r, d) can ride qkv's decode GEMV (LinearArgs.kv.pred): both in one part,
   * the same padded width, and qkv's rows whole workgroups of the shape the combined GEMV takes.
   */
  /**
   * Whether W2's rows can ride W's GEMV (gemv.ts, RIDE): one part each, the same width, W's rows a
   * multiple of the rows a workgroup (so no workgroup mixes the two), and the bindings (W, x, y, bias,
   * W2, y2: 6 storage buffers, under WebGPU's default 8).
   */
  canRide(W: GpuMatrix, W2: GpuMatrix, shape?: LinearArgs['shape']): boolean {
    if (W.parts.length !== 1 || W2.parts.length !== 1 || W2.cols !== W.cols || W2.colsP !== W.colsP || W.i8 || W2.i8) return false;
    const o = this.gemvForm(W.colsP / 4, W.rows + W2.rows, shape);
    return W.rows % (o.rows * o.rpt) === 0;
  }

  canFusePredictor(qkv: GpuMatrix, A: GpuMatrix, shape?: LinearArgs['shape'], hnext?: GpuMatrix): boolean {
    // The fused kernels bind 9 (GEMV) and 10 (block-select with the LayerNorm) storage buffers.
    if (this.gpu.limits.maxStorageBuffersPerShaderStage < 10) return false;
    if (qkv.parts.length !== 1 || A.parts.length !== 1 || A.cols !== qkv.cols || A.colsP !== qkv.colsP) return false;
    const o = this.gemvForm(qkv.colsP / 4, qkv.rows + A.rows + (hnext?.rows ?? 0), this.qkvForm(qkv.colsP / 4, shape));
    return qkv.rows % (o.rows * o.rpt) === 0;
  }

  /**
   * Whether the qkv decode GEMV (3d, d; with A's rows when `pred`) can also compute the next layer's
   * head scores (gemv.ts, HNEXT): one part each, the same width, 3d + r a multiple of the rows a
   * workgroup, and two storage bindings more than the GEMV's other choices take (8 for the folded
   * qkv with its K/V store, A 1, sparse heads 3, lazy completion 1).
   */
  canFuseHeadsNext(qkv: GpuMatrix, Wh: GpuMatrix, pred: GpuMatrix | undefined, shape: LinearArgs['shape'] | undefined, heads: 'none' | 'heads' | 'lazy'): boolean {
    const need = 8 + (pred ? 1 : 0) + (heads === 'none' ? 0 : heads === 'heads' ? 3 : 4) + 2;
    if (this.gpu.limits.maxStorageBuffersPerShaderStage < need) return false;
    if (qkv.parts.length !== 1 || Wh.parts.length !== 1 || Wh.cols !== qkv.cols || Wh.colsP !== qkv.colsP) return false;
    if (pred && (pred.cols !== qkv.cols || pred.colsP !== qkv.colsP || pred.parts.length !== 1)) return false;
    const o = this.gemvForm(qkv.colsP / 4, qkv.rows + (pred?.rows ?? 0) + Wh.rows, this.qkvForm(qkv.colsP / 4, heads === 'lazy' ? lazyShape(shape, this.gemvRowsPerThread) : shape));
    return (qkv.rows + (pred?.rows ?? 0)) % (o.rows * o.rpt) === 0;
  }

  /**
   * Whether the qkv decode GEMV (3d, d; with A's rows when `pred`) can choose the heads and skip
   * unchosen heads' rows (gemv.ts, HEADS): every workgroup's rows inside one head, so the head dim a
   * multiple of the rows a workgroup and every part starting on such a boundary; a thread a head; and
   * three storage bindings to spare (12 with the folded LayerNorm and the lookahead's A).
   */
  headsFit(qkv: GpuMatrix, hd: number, H: number, pred?: GpuMatrix, shape?: LinearArgs['shape'], lazy = false, hnext?: GpuMatrix): boolean {
    if (this.gpu.limits.maxStorageBuffersPerShaderStage < (lazy ? 13 : 12)) return false;
    if (lazy && !((qkv.colsP / 4) % 2 === 0 && qkv.cols % 4 === 0)) return false;
    const o = this.gemvForm(qkv.colsP / 4, qkv.rows + (pred?.rows ?? 0) + (hnext?.rows ?? 0), this.qkvForm(qkv.colsP / 4, lazy ? lazyShape(shape, this.gemvRowsPerThread) : shape)), rp = o.rows * o.rpt;
    return H <= o.rows * o.tpr && hd % rp === 0 && qkv.parts.every((p) => p.row0 % rp === 0);
  }

  /**
   * Sparse heads for one decode token where the qkv GEMV cannot choose them itself (kernels/head-select.ts):
   * the top k of the H scores into hl (ascending) and the skip row at step[0].
   */
  headSelect(a: { step: GPUBuffer; scores: GPUBuffer; H: number; k: number; hl: GPUBuffer; skip: GPUBuffer; kvAll: boolean }, own: GPUBuffer[]): Dispatch {
    if (a.H > HS_WG) throw new Error(`headSelect: at most ${HS_WG} heads`);
    const key = headSelectKey(a.H, a.k, a.kvAll);
    return this.dispatch(key, this.pipeline(key, () => headSelectWgsl(a.H, a.k, a.kvAll)), [0],
      [[1, a.step], [2, a.scores], [3, a.hl], [4, a.skip]], [1, 1, 1], own);
  }

  /** Whether out_proj can run over the chosen heads' columns (kernels/head-out.ts): rows of 8-half chunks, heads whole chunks. */
  static headOutFits(o: GpuMatrix, hd: number): boolean {
    return o.cols === o.colsP && o.colsP % 8 === 0 && hd % 8 === 0;
  }

  /**
   * y += out_proj over the k chosen heads' columns (hl) of the attention output o, + bias
   * (kernels/head-out.ts): from `major` (headMajor's copy) where given, else W as stored.
   */
  /**
   * y[yOff + i] += (W o)[i] (+ bias[i]) over the chosen heads' columns (yOff: attn_io's o half of A
   * adds into u after qkv's rows). `ride`: another matrix of W's width, one part, stored as is, over the
   * same heads into ride.y[ride.off + j] in the first part's dispatch (head-out.ts, RIDE).
   */
  headOut(a: { W: GpuMatrix; major?: GPUBuffer; o: GPUBuffer; hl: GPUBuffer; k: number; hd: number; y: GPUBuffer; bias: GPUBuffer | null; yOff?: number;
    ride?: { W: GpuMatrix; y: GPUBuffer; off: number } }, own: GPUBuffer[]): Dispatch[] {
    if (!Kernels.headOutFits(a.W, a.hd)) throw new Error('headOut: needs rows of whole 8-half chunks and a head dim that is a multiple of 8');
    if (a.ride && !Kernels.canRideHeadOut(a.W, a.ride.W, a.hd)) throw new Error('headOut: a riding matrix has W\'s width and one part');
    const cph = a.hd / 8, tpr = headOutTpr(a.k, a.hd), rowsWg = (HO_WG / tpr) * HO_RPT;
    const parts = a.major ? [{ buffer: a.major, row0: 0, rows: a.W.rows }] : a.W.parts;
    return parts.map((p, i) => {
      const ride = i === 0 ? a.ride : undefined;
      const sg = this.feats.subgroups && this.headOutSubgroups, sgx = sg && this.feats.subgroupSize === tpr;
      const sh = { tpr, bias: !!a.bias, k: a.k, cph, ride: !!ride, sg, sgx }, key = headOutKey(sh), pl = this.pipeline(key, () => headOutWgsl(sh));
      const ent: [number, Entry][] = [[1, p.buffer], [2, a.o], [3, a.hl], [4, a.y]];
      if (a.bias) ent.push([5, a.bias]);
      if (ride) ent.push([6, ride.W.parts[0].buffer], [7, ride.y]);
      const [rstride, hstride] = a.major ? [cph, a.W.rows * cph] : [a.W.colsP / 8, cph];
      const mainWgs = ceilDiv(p.rows, rowsWg), rideWgs = ride ? ceilDiv(ride.W.rows, rowsWg) : 0;
      return this.dispatch(key, pl, [rstride, hstride, p.row0, p.rows, a.yOff ?? 0, ride?.W.rows ?? 0, ride ? ride.W.colsP / 8 : 0, ride?.off ?? 0, mainWgs],
        ent, [mainWgs + rideWgs, 1, 1], own);
    });
  }

  /** Whether R can ride W's head-out dispatch (headOut's `ride`): W's width, one part, whole chunks. */
  static canRideHeadOut(W: GpuMatrix, R: GpuMatrix, hd: number): boolean {
    return Kernels.headOutFits(R, hd) && R.cols === W.cols && R.parts.length === 1;
  }

  /** out_proj's head-major copy for headOut (kernels/head-out.ts), or null where it does not fit one binding. */
  headMajor(W: GpuMatrix, hd: number, own: GPUBuffer[]): { buffer: GPUBuffer; ds: Dispatch[] } | null {
    const bytes = W.rows * W.cols * 2;
    if (!Kernels.headOutFits(W, hd) || bytes > this.maxPartBytes) return null;
    const buffer = this.buffer(bytes, 'out_proj head-major'), H = W.cols / hd, hw = hd / 2;
    const pl = this.pipeline(headMajorKey(), headMajorWgsl);
    const ds = W.parts.map((p) => {
      const [x, y] = grid(ceilDiv(p.rows * H * hw, 256));
      return this.dispatch('head_major', pl, [W.colsP / 2, hw, H, p.rows, p.row0, W.rows, x], [[1, p.buffer], [2, buffer]], [x, y, 1], own);
    });
    return { buffer, ds };
  }

  /** h[t, j] = relu(W[sel[t, j]] · x[t] + b[sel[t, j]]): the gathered fc1 of the sparse MLP. `shape` overrides gatherShape (tests, bench). */
  gatherLinear(a: { W: GpuMatrix; x: GPUBuffer; h: GPUBuffer; T: number; k: number; sel: GPUBuffer; selStride: number; bias: GPUBuffer | null; relu: boolean; shape?: { rows: number; tpr: number } }, own: GPUBuffer[]): Dispatch[] {
    const o: GemvOpts = { ...gatherShape(a.k, a.W.colsP / 4), ...a.shape, bias: !!a.bias, relu: a.relu, resid: false, gather: true };
    o.xv4 = o.wide && a.W.cols % 4 === 0;
    const key = gemvKey(this.feats, o);
    const pl = this.pipeline(key, () => gemvWgsl(this.feats, o));
    const [x, y] = grid(ceilDiv(a.k, o.rows));
    return a.W.parts.map((p) => {
      const ent: [number, Entry][] = [[1, p.buffer], [2, a.x], [3, a.h], [5, a.sel]];
      if (a.bias) ent.push([4, a.bias]);
      return this.dispatch(key, pl, [a.k, a.W.cols, a.W.colsP / 4, p.row0, p.rows, a.W.cols, 0, a.k, 0, a.selStride, x, 0, a.W.rows, 0], ent, [x, y, a.T], own);
    });
  }

  /**
   * Block selection fused with the predictor's B product and the gathered fc1 (kernels/block-select.ts):
   * per token, slots [b·cap, (b+1)·cap) of sel / h (k = nb·cap a token) get block b's chosen neurons
   * and their ReLU(fc1) values; cnt[0] += the number chosen. `tau` null: no threshold (blocked top-cap).
   * One dispatch per run of blocks that lies in one part of B and one part of W1.
   */
  blockSelectFc1(a: {
    B: GpuMatrix; bias: GPUBuffer; u: GPUBuffer; W1: GpuMatrix; x: GPUBuffer; sel: GPUBuffer; h: GPUBuffer; cnt: Entry; T: number; cap: number; tau: number | null;
    /** fc1's bias (zeros for a model without one); unused with ln (c2 carries it). */
    b1: GPUBuffer | null;
    /** u (the predictor's first product) of token t at uOff + t·uStride (default 0, r). */
    uOff?: number; uStride?: number;
    /** The MLP LayerNorm folded into fc1 (x the raw residual; c = c1 | c2 of W1 from foldLayerNorm): block-select.ts, LN. */
    ln?: { gamma: GPUBuffer; c: GPUBuffer; eps: number; gammaInW?: boolean } | null;
    wg?: number; unroll?: number;
    /** The choice already made by attention's scoring role (`blockScore`): fc1 of the chosen rows only, each block's count in bcnt. */
    chosenBy?: { bcnt: GPUBuffer };
    /** fc2's partial of each block into part (block-select.ts, FC2; then fc2Sum). Only where blockFc2Fits(W2t). */
    fc2?: { W2t: GpuMatrix; part: GPUBuffer };
  }, own: GPUBuffer[]): Dispatch[] {
    const f = a.W1.rows, r = a.B.cols, d = a.W1.cols, nb = ceilDiv(f, BS_NB), k = nb * a.cap;
    if (a.B.rows !== f) throw new Error(`blockSelectFc1: B has ${a.B.rows} rows for ${f} neurons`);
    if (!(a.cap >= 1 && a.cap <= BS_NB)) throw new Error(`blockSelectFc1: cap ${a.cap} is outside 1..${BS_NB}`);
    const uOff = a.uOff ?? 0, uStride = a.uStride ?? r, ln = a.ln ?? null;
    if (!ln && !a.b1) throw new Error('blockSelectFc1: fc1 needs its bias buffer (or the folded LayerNorm, whose c2 has it)');
    const fc2 = a.fc2 ?? null;
    if (fc2 && !(this.blockFc2Fits(fc2.W2t, !!ln) && fc2.W2t.rows === f && fc2.W2t.cols === d)) throw new Error('blockSelectFc1: fc2 in the block needs fc2ᵀ (f, d) in one part with rows padded to 8 halves (blockFc2Fits)');
    if (fc2 && fc2.part.size < this.blockFc2PartBytes(fc2.W2t, a.T)) throw new Error(`blockSelectFc1: fc2's partials need ${this.blockFc2PartBytes(fc2.W2t, a.T)} bytes for ${a.T} token(s), the buffer has ${fc2.part.size}`);
    const o: BlockSelectOpts = { wideB: (a.B.colsP / 4) % 2 === 0, i8B: !!a.B.i8, wideW: (a.W1.colsP / 4) % 2 === 0, uv4: r % 4 === 0 && uOff % 4 === 0 && uStride % 4 === 0, xv4: d % 4 === 0,
      wg: a.wg ?? blockSelectWorkgroupSize(this.gpu.limits), unroll: a.unroll, f16: this.feats.f16, subgroups: this.feats.subgroups, ln: !!ln, d: ln ? d : undefined, xsHalf: !!ln && this.lnHalf(d), phase: a.chosenBy ? 'fc1' : undefined, fc2: !!fc2, early: this.blockFc1EarlyLoads, choiceFirst: this.blockChoiceFirst, gw: !!ln?.gammaInW };
    if (fc2) { o.fc2Cpt = ceilDiv(fc2.W2t.colsP / 8, o.wg); o.partHalf = this.blockPartHalf; }
    if (ln && blockSelectLnBytes(d, o.wg, o.xsHalf, !!fc2) > this.gpu.limits.maxComputeWorkgroupStorageSize) throw new Error(`blockSelectFc1: the folded LayerNorm keeps x in workgroup memory, too small for d = ${d} (blockSelectLnFits)`);
    const key = blockSelectKey(o), pl = this.pipeline(key, () => blockSelectWgsl(o));
    // Segments: cut [0, f) at every part boundary of either matrix; each must fall on a block edge.
    const cuts = [...new Set([...a.B.parts, ...a.W1.parts].map((p) => p.row0).concat(f))].sort((x, y) => x - y);
    const out: Dispatch[] = [];
    for (let i = 0; i + 1 < cuts.length; i++) {
      const lo = cuts[i], hi = cuts[i + 1];
      if (lo % BS_NB) throw new Error(`blockSelectFc1: a weight part starts at row ${lo}, not a multiple of ${BS_NB}`);
      const bp = a.B.parts.find((p) => p.row0 <= lo && lo < p.row0 + p.rows)!, wp = a.W1.parts.find((p) => p.row0 <= lo && lo < p.row0 + p.rows)!;
      const blk0 = lo / BS_NB, blocks = ceilDiv(hi - lo, BS_NB);
      const ent: [number, Entry][] = [[4, wp.buffer], [5, ln ? ln.c : a.b1!], [6, a.x], [7, a.sel], [8, a.h],
        ...(a.chosenBy ? [[11, a.chosenBy.bcnt]] as [number, Entry][] : [[1, bp.buffer], [2, a.bias], [3, a.u], [9, a.cnt]] as [number, Entry][])];
      if (ln && !ln.gammaInW) ent.push([10, ln.gamma]);
      if (fc2) ent.push([12, fc2.W2t.parts[0].buffer], [13, fc2.part]);
      out.push(this.dispatch(key, pl, [f, r, d, k, a.cap, a.tau === null ? 0 : 1, a.tau === null ? 0 : f32bits(a.tau), blk0, bp.row0, wp.row0, uOff, uStride, ln ? f32bits(ln.eps) : 0,
        fc2 ? fc2.W2t.colsP / 8 : 0, nb], ent, [blocks, 1, a.T], own));
    }
    return out;
  }

  /**
   * Whether block-select can take fc2's share itself (`blockSelectFc1`'s fc2): fc2ᵀ in one part, rows
   * padded to 8 halves, with the folded LayerNorm (`ln`) room for the h of a block beside x, and the
   * storage bindings (11, 12 with ln, in the phase that scores: block-select.ts's bindings 1-10, 12, 13).
   */
  blockFc2Fits(W2t: GpuMatrix, ln = false): boolean {
    return W2t.parts.length === 1 && fc2OnePass(W2t) && (!ln || this.blockSelectLnFits(W2t.cols, true))
      && this.gpu.limits.maxStorageBuffersPerShaderStage >= (ln ? 12 : 11);
  }

  /** Bytes of the partial buffer blockSelectFc1's fc2 writes for T tokens: a row of fc2ᵀ's padded width a block, f16 or f32 (blockPartHalf). */
  blockFc2PartBytes(W2t: GpuMatrix, T: number): number {
    return T * ceilDiv(W2t.rows, BS_NB) * W2t.colsP * (this.blockPartHalf ? 2 : 4);
  }

  /** x[t] += b2 + Σ_b part[t, b]: the blocks' fc2 partials from blockSelectFc1 (sparse-mlp.ts, fc2_sum), f16 where blockPartHalf. */
  fc2Sum(a: { W2t: GpuMatrix; part: GPUBuffer; x: GPUBuffer; bias: GPUBuffer | null; T: number }, own: GPUBuffer[]): Dispatch {
    return this.sumPartials({ part: a.part, x: a.x, bias: a.bias, d: a.W2t.cols, c4: a.W2t.colsP / 4, n: ceilDiv(a.W2t.rows, BS_NB), T: a.T, half: this.blockPartHalf }, own);
  }

  /** x[t, :d] += bias + Σ_{i < n} part[t, i] over partial rows of c4 vec4s, f32 or (half) f16 (sparse-mlp.ts, fc2_sum). */
  private sumPartials(a: { part: GPUBuffer; x: GPUBuffer; bias: GPUBuffer | null; d: number; c4: number; n: number; T: number; half?: boolean }, own: GPUBuffer[]): Dispatch {
    const bias = !!a.bias, half = !!a.half, key = fc2SumKey(bias, half);
    const ent: [number, Entry][] = [[1, a.part], [2, a.x]];
    if (a.bias) ent.push([3, a.bias]);
    return this.dispatch(key, this.pipeline(key, () => fc2SumWgsl(bias, half)), [a.d, a.c4, a.n], ent, [ceilDiv(a.c4, FC2S_CW), a.T, 1], own);
  }

  /**
   * c1 = W·γ and c2 = W·β + b (bias b, if any): the per-row vectors a GEMV with the LayerNorm (γ, β)
   * folded in needs for W (`LinearArgs.ln`); run once at load. Into c (2 × W.rows floats): c1 in
   * [0, rows), c2 in [rows, 2 rows), one buffer so the folded GEMV binds them once.
   */
  foldLayerNorm(a: { W: GpuMatrix; gamma: GPUBuffer; beta: GPUBuffer; bias: GPUBuffer | null; c: GPUBuffer }, own: GPUBuffer[]): Dispatch[] {
    return [...this.linear({ W: a.W, x: a.gamma, y: a.c, T: 1 }, own), ...this.linear({ W: a.W, x: a.beta, y: a.c, outOff: a.W.rows, T: 1, bias: a.bias }, own)];
  }

  /**
   * foldLayerNorm's constants for a W that is then stored as W∘γ (`LinearArgs.ln.gammaInW`; gemv.ts,
   * GAMMA IN W), in order: c2 = W·β + b from W as it was, W ← W∘γ in place (columns scaled, f16
   * rounded), c1 = (W∘γ)·1 from W as it is now (`ones`: W.cols floats of 1), so that the folded
   * GEMV's μ − h term cancels against the rows it reads. Dispatches run in order (one pass).
   */
  foldLayerNormIntoWeights(a: { W: GpuMatrix; gamma: GPUBuffer; beta: GPUBuffer; bias: GPUBuffer | null; c: GPUBuffer; ones: GPUBuffer }, own: GPUBuffer[]): Dispatch[] {
    return [...this.linear({ W: a.W, x: a.beta, y: a.c, outOff: a.W.rows, T: 1, bias: a.bias }, own), ...this.scaleColumns(a.W, a.gamma, own),
      ...this.linear({ W: a.W, x: a.ones, y: a.c, T: 1 }, own)];
  }

  /** W[r, k] ← f16(W[r, k] · g[k]) in place, every part (CPU twin: scaleColumns in cpu/kernels.ts). */
  scaleColumns(W: GpuMatrix, g: GPUBuffer, own: GPUBuffer[]): Dispatch[] {
    const pl = this.pipeline(scaleColsKey(), scaleColsWgsl);
    return W.parts.map((p) => {
      const words = (p.rows * W.colsP) / 2;
      const [x, y] = grid(ceilDiv(words, 256));
      return this.dispatch('scale_cols', pl, [words, W.cols, W.colsP, x], [[1, p.buffer], [2, g]], [x, y, 1], own);
    });
  }

  /**
   * x[t] += b2 + Σ_j h[t, j] W2t[sel[t, j]]. Rows padded to 8 halves (every real OPT width): one
   * pass, a workgroup a column block over all selected rows (fc2_direct; `slices` and `partial` are
   * not used). Otherwise, or with `mode: 'partial'`: partial sums over slices of the selection, then
   * a reduce. `fc2Shape` overrides the one-pass kernel's shape (bench).
   */
  sparseDown(a: { W2t: GpuMatrix; h: GPUBuffer; sel: GPUBuffer; selStride: number; k: number; T: number; slices?: number; partial?: GPUBuffer; x: GPUBuffer; bias: GPUBuffer | null; mode?: 'direct' | 'partial'; fc2Shape?: Fc2DirectShape }, own: GPUBuffer[]): Dispatch[] {
    const d = a.W2t.cols, d4 = a.W2t.colsP / 4;
    if (fc2OnePass(a.W2t) && a.mode !== 'partial') {
      const sh = a.fc2Shape ?? fc2DirectShape(this.gpu.limits), bias = !!a.bias, d8 = d4 / 2;
      const key = fc2DirectKey(sh, bias);
      const pl = this.pipeline(key, () => fc2DirectWgsl(sh, bias));
      return a.W2t.parts.map((p, i) => {
        const ent: [number, Entry][] = [[1, p.buffer], [2, a.h], [3, a.sel], [4, a.x]];
        if (a.bias) ent.push([5, a.bias]);
        return this.dispatch(key, pl, [d, d8, a.k, a.selStride, p.row0, p.rows, i === 0 ? 1 : 0], ent, [ceilDiv(d8, sh.ch), a.T, 1], own);
      });
    }
    if (a.mode === 'direct') throw new Error('sparseDown: the one-pass form needs rows padded to 8 halves');
    const partial = a.partial;
    if (!partial || !a.slices) throw new Error('sparseDown: the partial-sum form needs `partial` and `slices`');
    const S = Math.max(1, Math.min(a.slices, a.k)), slice = ceilDiv(a.k, S);
    const slots = S * a.W2t.parts.length;
    // Rows padded to 8 halves take the wide form (a thread owns 8 columns), as the GEMV does.
    const wide = d4 % 2 === 0;
    const pk = fc2PartialKey(this.feats, wide);
    const pl = this.pipeline(pk, () => fc2PartialWgsl(this.feats, wide));
    const out = a.W2t.parts.map((p, i) => this.dispatch(pk, pl, [d4, a.k, slice, slots, i * S, a.selStride, p.row0, p.rows],
      [[1, p.buffer], [2, a.h], [3, a.sel], [4, partial]], [ceilDiv(wide ? d4 / 2 : d4, FC2P_WG), S, a.T], own));
    // The slots' partials (rows of d4 vec4s) into x: the sum block-select's partials take (fc2_sum).
    out.push(this.sumPartials({ part: partial, x: a.x, bias: a.bias, d, c4: d4, n: slots, T: a.T }, own));
    return out;
  }

  layerNorm(a: { x: GPUBuffer | null; y: GPUBuffer; w: GPUBuffer; b: GPUBuffer; n: number; rows: number; inOff?: number; outOff?: number; eps: number; wg?: number }, own: GPUBuffer[]): Dispatch {
    const inplace = a.x === null;
    const sg = this.feats.subgroups, wg = a.wg ?? layerNormWorkgroupSize(this.gpu.limits);
    const key = layerNormKey(inplace, sg, wg);
    const ent: [number, Entry][] = [[2, a.y], [3, a.w], [4, a.b]];
    if (a.x) ent.push([1, a.x]);
    return this.dispatch(key, this.pipeline(key, () => layerNormWgsl(inplace, sg, wg)), [a.n, a.inOff ?? 0, a.outOff ?? 0, f32bits(a.eps)], ent, [a.rows, 1, 1], own);
  }

  kvStore(a: { step: GPUBuffer; qkv: GPUBuffer; k: GPUBuffer; v: GPUBuffer; d: number; T: number }, own: GPUBuffer[]): Dispatch {
    const h = this.kvHalf;
    return this.dispatch('kvstore', this.pipeline(kvStoreKey(h), () => kvStoreWgsl(h)), [a.d, a.T], [[1, a.step], [2, a.qkv], [3, a.k], [4, a.v]], [ceilDiv(a.d * a.T, 256), 1, 1], own);
  }

  /**
   * Causal attention of T queries over the KV cache. Decode (T = 1) takes the split-K (flash-decoding)
   * kernels: S splits of the positions per head, then a combine, which the last split of each head
   * runs itself where the fused form fits (one dispatch; `fuseAttention`), else a second dispatch. Prefill (T > 1) keeps the
   * one-workgroup-per-(head, query) kernel, which already has T × H workgroups and needs no scratch
   * (the split form would want T × H × S × hd floats of it). `splits` forces the split form with that
   * many splits, for any T (tests). Head dims too wide for the split form take the old kernel.
   */
  attention(a: { step: GPUBuffer; qkv: GPUBuffer; k: GPUBuffer; v: GPUBuffer; o: GPUBuffer; hn: GPUBuffer; H: number; hd: number; T: number; maxPos: number; splits?: number;
    /** Sparse heads (decode): the k chosen heads hl and the skip record (attention.ts, `heads`). Split form only. */
    heads?: { hl: GPUBuffer; skip: GPUBuffer; k: number };
    /** false: the split + combine pair even where the fused form fits (long contexts: runner.ts, FUSED_ATTENTION_MAX_KEYS). */
    fused?: boolean;
    /** The most keys a query of this plan sees (default maxPos; more than maxPos changes nothing): the grid's splits stop at what those need. */
    maxKeys?: number;
    /** Splits wanted (default attentionTargetSplits; with `splits`, that many): kernel-bench variants. */
    targetSplits?: number;
    /**
     * The sparse MLP's block scoring and choice in the split dispatch's extra grid rows (attention.ts,
     * `role`; block-select.ts, blockScoreRoleWgsl): u (predictor A's output, at uOff + t·uStride), B
     * (f, r, one part), the bias, then sel, h (unused slots), the chosen count cnt[0] and each
     * block's count bcnt for blockSelectFc1's 'fc1' phase. Only where blockScoreFits.
     */
    blockScore?: BlockScoreArgs }, own: GPUBuffer[]): Dispatch[] {
    const scale = f32bits(1 / Math.sqrt(a.hd));
    const shape = attentionSplitShape(a.hd);
    const hs = a.heads ?? null;
    if (hs && !(shape && a.T === 1)) throw new Error('attention: sparse heads are a form of the split decode kernels (T = 1, head dim they take)');
    if (shape && (a.T === 1 || a.splits)) { // the switch: split-K for decode
      if (a.splits && a.splits > ATS_MAX_SPLITS) throw new Error(`attention: at most ${ATS_MAX_SPLITS} splits`);
      // A plan whose queries see at most maxKeys keys needs no more splits than attentionMaxLive(maxKeys):
      // chunkOf never makes more live ones, so the rest of the grid would only start and exit.
      const S = a.splits ?? Math.min(attentionSplits(a.H, a.maxPos), attentionMaxLive(a.maxKeys ?? a.maxPos));
      const dv = (a.H * a.hd) / shape.W, groups = a.T * a.H * S;
      const target = Math.min(S, a.targetSplits ?? (a.splits || this.attentionGridSplits ? S : attentionTargetSplits(a.H * a.hd, S)));
      const nh = hs ? hs.k : a.H;
      const heads: [number, Entry][] = hs ? [[7, hs.hl], [8, hs.skip]] : [];
      const bsa = a.blockScore ?? null;
      if (bsa && !(a.T === 1 && this.blockScoreFits(bsa.B, !!hs, a.hd))) throw new Error('attention: the block scoring role needs decode, B in one part and 7 storage bindings to spare');
      const role = bsa ? this.blockScoreRole(bsa) : undefined;
      // Phase 1's rows summed in registers where the subgroups allow (attention.ts, GROUP ROWS).
      const ss = this.feats.subgroupSize ?? 0;   // (set only with subgroups)
      const ny = nh, extraY = bsa ? ceilDiv(ceilDiv(bsa.B.rows, BS_NB), S) : 0;
      const roleEnt: [number, Entry][] = bsa ? this.blockScoreEntries(bsa, ny, own) : [];
      if (this.fuseAttention && a.fused !== false && attentionFusedFits(a.hd) && 7 + heads.length <= this.gpu.limits.maxStorageBuffersPerShaderStage) {
        // One dispatch: the last split of each head combines (kernels/attention.ts, "Fused form").
        const sw = this.buffer(attentionFusedWords(a.T, a.H, S, a.hd) * 4, 'attention partials (fused)');
        own.push(sw);
        const k1 = attentionSplitKey(a.hd, this.kvHalf, !!hs, true, role, ss);
        return [this.dispatch(k1, this.pipeline(k1, () => attentionSplitWgsl(a.hd, this.kvHalf, !!hs, true, role, ss)), [dv, a.H, S, scale, target],
          [[1, a.step], [2, a.qkv], [3, a.k], [4, a.v], [5, sw], [9, a.o], [10, a.hn], ...heads, ...roleEnt], [S, nh + extraY, a.T], own)];
      }
      const acc = this.buffer(groups * a.hd * 4, 'attention partial acc'), ml = this.buffer(groups * 8, 'attention partial m, l');
      own.push(acc, ml);
      const k1 = attentionSplitKey(a.hd, this.kvHalf, !!hs, false, role, ss), k2 = attentionCombineKey(a.hd, !!hs);
      return [
        this.dispatch(k1, this.pipeline(k1, () => attentionSplitWgsl(a.hd, this.kvHalf, !!hs, false, role, ss)), [dv, a.H, S, scale, target],
          [[1, a.step], [2, a.qkv], [3, a.k], [4, a.v], [5, acc], [6, ml], ...heads, ...roleEnt], [S, nh + extraY, a.T], own),
        this.dispatch(k2, this.pipeline(k2, () => attentionCombineWgsl(a.hd, !!hs)), [dv, a.H, S, target],
          [[1, a.step], [2, acc], [3, ml], [4, a.o], [5, a.hn], ...(hs ? [[6, hs.hl]] as [number, Entry][] : [])], [nh, a.T, 1], own),
      ];
    }
    if (a.blockScore) throw new Error('attention: the block scoring role rides the split decode kernel only');
    const key = attentionKey(a.maxPos, a.hd, this.kvHalf);
    return [this.dispatch(key, this.pipeline(key, () => attentionWgsl(a.maxPos, a.hd, this.kvHalf)), [a.H * a.hd, a.H, a.hd, scale],
      [[1, a.step], [2, a.qkv], [3, a.k], [4, a.v], [5, a.o], [6, a.hn]], [a.H, a.T, 1], own)];
  }
  static readonly attentionWg = ATT_WG;

  /**
   * Whether the block scoring role fits the decode attention dispatch: B in one part, storage bindings
   * for its 7 beside attention's (fused 7, or 6 for the split of the pair; 2 more with sparse heads),
   * and its workgroup arrays beside the split kernel's (sized for WebGPU's default 16 KiB).
   */
  blockScoreFits(B: GpuMatrix, heads: boolean, hd: number): boolean {
    const l = this.gpu.limits;
    return !!attentionSplitShape(hd) && B.parts.length === 1 && 7 + (heads ? 2 : 0) + 7 <= l.maxStorageBuffersPerShaderStage &&
      attentionSplitBytes(hd) + blockScoreRoleBytes(ATS_WG) <= l.maxComputeWorkgroupStorageSize;
  }

  private blockScoreRole(a: BlockScoreArgs): BlockScoreRoleOpts {
    const r = a.B.cols;
    return { wideB: (a.B.colsP / 4) % 2 === 0, i8B: !!a.B.i8, uv4: r % 4 === 0 && a.uOff % 4 === 0 && a.uStride % 4 === 0, f16: false, wg: ATS_WG };
  }

  private blockScoreEntries(a: BlockScoreArgs, ny: number, own: GPUBuffer[]): [number, Entry][] {
    const f = a.B.rows, r = a.B.cols, nb = ceilDiv(f, BS_NB), k = nb * a.cap;
    if (!(a.cap >= 1 && a.cap <= BS_NB)) throw new Error(`attention: block cap ${a.cap} is outside 1..${BS_NB}`);
    const bp = [ny, f, r, k, a.cap, a.tau === null ? 0 : 1, a.tau === null ? 0 : f32bits(a.tau), a.B.parts[0].row0, a.uOff, a.uStride, nb];
    return [[20, a.B.parts[0].buffer], [21, a.u], [22, a.bias], [23, a.sel], [24, a.h], [25, a.cnt], [26, a.bcnt], [27, this.uniform(bp, own)]];
  }

  embed(a: { step: GPUBuffer; E: GpuMatrix; P: GpuMatrix; x: GPUBuffer; tmp: GPUBuffer; d: number; T: number; proj: boolean }, own: GPUBuffer[]): Dispatch[] {
    const key = embedKey(this.feats);
    const pl = this.pipeline(key, () => embedWgsl(this.feats));
    const e = a.E.cols;
    return a.E.parts.map((p, i) => this.dispatch(key, pl, [a.d, e, a.T, p.row0, p.rows, a.E.colsP, a.P.colsP, a.proj ? 1 : 0, i === 0 ? 1 : 0],
      [[1, a.step], [2, p.buffer], [3, a.P.parts[0].buffer], [4, a.x], [5, a.tmp]], [ceilDiv(Math.max(a.d, e) * a.T, 256), 1, 1], own));
  }

  /** `wg` forces a workgroup size (tests run the 256-thread fallback); by default the largest the device allows. */
  topK(a: { scores: GPUBuffer; out: GPUBuffer; n: number; k: number; T: number; inStride: number; outStride: number; wg?: number }, own: GPUBuffer[]): Dispatch {
    const wg = a.wg ?? topKWorkgroupSize(this.gpu.limits);
    return this.dispatch('topk', this.pipeline(topKKey(wg), () => topKWgsl(wg)), [a.n, a.k, a.inStride, a.outStride], [[1, a.scores], [2, a.out]], [a.T, 1, 1], own);
  }

  /**
   * Greedy pick on the device: id = argmax(logits[0, n)), then step[1] = id, tokens[step[0]] = id and
   * step[0] += 1, so the next decode step reads its token and position without the host. `slots` is
   * the length of `tokens`. `wg` forces a workgroup size (tests run the 256-thread form).
   */
  /** Greedy's pick into step and tokens (kernels/argmax.ts) from n logits, or with `pairs` from n (key, index) pairs (linear's `amax`). */
  /**
   * `sample`: [invT's f32 bits, seed] (argmax.ts SAMPLE): a draw by temperature instead of the argmax;
   * with `sel`, among the n ids it holds (SEL: top-k sampling).
   */
  argmax(a: { logits: GPUBuffer; step: GPUBuffer; tokens: GPUBuffer; n: number; slots: number; wg?: number; pairs?: boolean; sample?: GPUBuffer; sel?: GPUBuffer }, own: GPUBuffer[]): Dispatch {
    const wg = a.wg ?? argmaxWorkgroupSize(this.gpu.limits), sg = this.feats.subgroups, pairs = !!a.pairs, sample = !!a.sample, sel = !!a.sel;
    const key = argmaxKey(wg, sg, pairs, sample, sel);
    return this.dispatch(key, this.pipeline(key, () => argmaxWgsl(wg, sg, pairs, sample, sel)), [a.n, a.slots],
      [[1, a.logits], [2, a.step], [3, a.tokens], ...(a.sample ? [[4, a.sample]] as [number, Entry][] : []), ...(a.sel ? [[5, a.sel]] as [number, Entry][] : [])], [1, 1, 1], own);
  }

  /**
   * Evaluation's per-row statistics of `rows` logits rows (kernels/row-stats.ts), written to `out` at
   * global rows rowOff..; with `ref` also KL(ref ‖ these) from the reference's logits of the same rows
   * (from its row 0) and its out rows (by global row).
   */
  rowStats(a: { logits: GPUBuffer; targets: GPUBuffer; out: GPUBuffer; rows: number; V: number; rowOff: number; ref?: { logits: GPUBuffer; out: GPUBuffer } }, own: GPUBuffer[]): Dispatch {
    const kl = !!a.ref, key = rowStatsKey(kl);
    return this.dispatch(key, this.pipeline(key, () => rowStatsWgsl(kl)), [a.V, a.rowOff],
      [[1, a.logits], [2, a.targets], [3, a.out], ...(a.ref ? [[4, a.ref.logits], [5, a.ref.out]] as [number, Entry][] : [])], [a.rows, 1, 1], own);
  }

  scatter(a: { h: GPUBuffer; sel: GPUBuffer; act: GPUBuffer; f: number; k: number; selStride: number; T: number }, own: GPUBuffer[]): Dispatch {
    return this.dispatch('scatter', this.pipeline(scatterKey(), scatterWgsl), [a.f, a.k, a.selStride], [[1, a.h], [2, a.sel], [3, a.act]], [a.T, 1, 1], own);
  }

  /** Encodes items in one compute pass, split only where a trace tap copies a buffer out. */
  encode(enc: GPUCommandEncoder, items: PlanItem[], onTap?: (t: Tap) => GPUBuffer | null, timestampWrites?: GPUComputePassTimestampWrites): void {
    let pass: GPUComputePassEncoder | null = null;
    for (const it of items) {
      if ('d' in it) {
        if (!pass) pass = enc.beginComputePass(timestampWrites ? { timestampWrites } : undefined);
        pass.setPipeline(it.d.pipeline);
        pass.setBindGroup(0, it.d.bind);
        pass.dispatchWorkgroups(...it.d.wg);
      } else if (onTap) {
        const dst = onTap(it.tap);
        if (!dst) continue;
        if (pass) { pass.end(); pass = null; }
        enc.copyBufferToBuffer(it.tap.buffer, it.tap.offset, dst, 0, it.tap.floats * 4);
      }
    }
    if (pass) pass.end();
  }

  /** Each dispatch in a compute pass of its own, GPU timestamps 2i and 2i + 1 at its start and end (profiling). */
  encodeTimed(enc: GPUCommandEncoder, ds: Dispatch[], querySet: GPUQuerySet): void {
    ds.forEach((d, i) => {
      const pass = enc.beginComputePass({ timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bind);
      pass.dispatchWorkgroups(...d.wg);
      pass.end();
    });
  }
}

/**
 * `a` as writeBuffer may take it: Dawn's Node binding crashes the process on a view of a
 * SharedArrayBuffer (the CPU backend's threads keep predictors there: util/shared-memory.ts), so such a
 * view is copied first.
 */
export function unshared<T extends Float32Array | Uint32Array>(a: T): T & ArrayBufferView<ArrayBuffer> {
  const shared = typeof SharedArrayBuffer !== 'undefined' && a.buffer instanceof SharedArrayBuffer;
  return (shared ? a.slice() : a) as T & ArrayBufferView<ArrayBuffer>;
}

/** Runs dispatches now and waits (load-time work and tests). */
export async function runNow(k: Kernels, ds: Dispatch[], own: GPUBuffer[]): Promise<void> {
  const enc = k.device.createCommandEncoder();
  k.encode(enc, ds.map((d) => ({ d })));
  k.device.queue.submit([enc.finish()]);
  await k.device.queue.onSubmittedWorkDone();
  for (const b of own) b.destroy();
  own.length = 0;
}

/** Copies a buffer's first `floats` f32 values back to the host. */
export async function readF32(k: Kernels, src: GPUBuffer, floats: number, offset = 0): Promise<Float32Array> {
  const bytes = floats * 4;
  // A copy past the end is only a validation error (a notice): the staging buffer would read as zeros.
  if (offset + bytes > src.size) throw new Error(`read of ${bytes} bytes at ${offset} from "${src.label}" passes its ${src.size} bytes`);
  const st = k.device.createBuffer({ size: Math.max(16, bytes), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = k.device.createCommandEncoder();
  enc.copyBufferToBuffer(src, offset, st, 0, bytes);
  k.device.queue.submit([enc.finish()]);
  await st.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(st.getMappedRange(0, bytes).slice(0));
  st.unmap(); st.destroy();
  return out;
}

export async function readU32(k: Kernels, src: GPUBuffer, n: number): Promise<Uint32Array> {
  return new Uint32Array((await readF32(k, src, n)).buffer);
}

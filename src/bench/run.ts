/**
 * `dejavu bench`: decode speed of a real checkpoint or of a published OPT shape with synthetic
 * weights, dense or with a sparse MLP, against the bandwidth floor measured on the same card.
 */
import { cpus, totalmem } from 'node:os';
import { basename, resolve } from 'node:path';
import type { BackendName, Runner } from '../backend/types.js';
import { autoBackend, type KvCacheType } from '../backend/select.js';
import { openGpu, type Gpu, type GpuOptions } from '../backend/webgpu/device.js';
import type { DecodeProfile } from '../backend/webgpu/runner.js';
import { loadModel, type Model } from '../engine/model.js';
import type { OptConfig } from '../model/config.js';
import type { Checkpoint } from '../model/checkpoint.js';
import { headKvMode, meanHeadDensity, meanMlpDensity, type HeadInput, type HeadKvMode, type PredictorInput, type SparsityPolicy } from '../sparsity/policy.js';
import { DejavuError, fail } from '../util/errors.js';
import { bandwidthLine, measureGpuBandwidth, measureMemcpyBandwidth, type Bandwidth } from './bandwidth.js';
import { timeDecode } from './decode.js';
import { runHfBaseline } from './hf.js';
import { calibrateBlockDensity } from './calibrate.js';
import { gpuTimedRun, randomPrompt } from './sequences.js';
import { fixedPolicy, syntheticHeads, syntheticPredictorPolicy } from './policies.js';
import type { BenchRow } from './report.js';
import { CPU_LAYOUT, deviceWeightBytes, FP16_LAYOUT, kvCacheBytes, mlpBytesFromPolicy, meanTokenBytes, predictorRank, shapeConfig, WEBGPU_LAYOUT } from './shapes.js';
import { loadPredictors, type SparsePart } from '../sparsity/predictors-io.js';

export type SparsityMode = 'dense' | 'mlp' | 'dejavu';

/** --mlp-density when not given (DejaVu's OPT-175B MLPs keep roughly 10 % of neurons). */
export const DEFAULT_DENSITY = 0.1;

/**
 * --predictor-input when not given: what train-predictors makes by default (attn_io, mlp_in's
 * quality on real models, docs/sparsity.md). Before the twenty-fourth session it was attn_in,
 * DejaVu's lookahead, which costs three to four times the perplexity on the Gutenberg checkpoints:
 * the earlier tables in docs/benchmarks.md ran that.
 */
export const DEFAULT_PREDICTOR_INPUT: PredictorInput = 'attn_io';

export interface BenchOptions {
  model?: string;
  shapes?: string[];
  backend: 'auto' | BackendName;
  /** WebGPU's KV cache (default f32); its bytes count at that width. */
  kvCache?: KvCacheType;
  /** The CPU backend's threads (LoadOptions.cpuThreads). */
  cpuThreads?: number;
  promptLen: number;
  gen: number;
  warmup: number;
  sparsity: SparsityMode[];
  /** Fraction of neurons per sparse layer; with --predictors, undefined keeps the calibrated K. */
  mlpDensity?: number;
  headDensity: number;
  /** With dejavu: whether unchosen heads still store K/V (policy.ts, HeadKvMode; default all). */
  headKv?: HeadKvMode;
  /** With dejavu: a row for each of these K/V modes (default [headKv]): an A/B in one process. */
  headKvs?: HeadKvMode[];
  /** With dejavu, synthetic predictors: what the head predictors read (policy.ts, HeadInput; default prev_attn_in, DejaVu's lookahead). */
  headInput?: HeadInput;
  /** With dejavu: a row for each of these head inputs (default [headInput]). */
  headInputs?: HeadInput[];
  /** How predictors pick neurons (src/sparsity/predictors-io.ts Selection); synthetic predictors: auto = block. */
  selection?: 'auto' | 'block' | 'topk';
  /** What synthetic predictors read (default attn_in: DejaVu's lookahead); trained ones keep theirs. */
  predictorInput?: PredictorInput;
  oracle: boolean;
  predictors?: string;
  compareHf: boolean;
  /** Also time the decode step dispatch by dispatch (WebGPU with timestamp-query): BenchRow.profile. */
  profile?: boolean;
  /** Device memory to assume for the fit check of --shape, GiB (default: known cards, else none). */
  deviceMemoryGib?: number;
  /** One line per event (skips, progress) — stderr in the CLI. */
  log: (line: string) => void;
}

type SyntheticFactory = (config: OptConfig, weights: 'synthetic', opts?: GpuOptions & { gpu?: Gpu; kvCache?: KvCacheType }) => Promise<Runner>;

async function syntheticRunner(c: OptConfig, gpu: Gpu, kvCache: KvCacheType = 'f32'): Promise<Runner> {
  // Loaded on demand (a variable specifier), like select.ts does: the CPU path never touches Dawn.
  const spec = '../backend/webgpu/runner.js';
  const mod = (await import(spec)) as { createWebGpuRunner: SyntheticFactory };
  return mod.createWebGpuRunner(c, 'synthetic', { gpu, kvCache });
}

/**
 * Runs `fn` inside out-of-memory and validation error scopes: WebGPU reports a failed allocation
 * there, not as an exception, and a model that did not fit must be skipped, not timed.
 */
async function scoped<T>(gpu: Gpu, fn: () => Promise<T>): Promise<{ value: T; error: string | null }> {
  gpu.device.pushErrorScope('out-of-memory');
  gpu.device.pushErrorScope('validation');
  let value: T | undefined, thrown: unknown = null;
  try { value = await fn(); } catch (e) { thrown = e; }
  const validation = await gpu.device.popErrorScope();
  const oom = await gpu.device.popErrorScope();
  if (thrown) throw thrown;
  const e = oom ?? validation;
  return { value: value as T, error: e ? `${oom ? 'out of device memory' : 'WebGPU error'}: ${e.message.split('\n')[0]}` : null };
}

/** A trained set's policy; `dejavu` adds its head predictors at --head-density (one-line error when it has none). */
async function loadPredictorPolicy(dir: string, ck: Checkpoint, o: BenchOptions, mode: SparsityMode): Promise<SparsityPolicy> {
  const heads = mode === 'dejavu' ? { parts: ['mlp', 'heads'] as SparsePart[], headDensity: o.headDensity, headKv: o.headKv } : {};
  return (await loadPredictors(dir, ck)).policy({ mlpDensity: o.mlpDensity, selection: o.selection, ...heads });
}

/**
 * Usable memory of cards whose size WebGPU does not report (it has no such query): what a process
 * can allocate, a little under the marketing size. lavapipe allocates from host RAM.
 */
function knownMemoryBytes(adapter: string): number | null {
  const GiB = 1024 ** 3;
  if (/H200/i.test(adapter)) return 139 * GiB;
  if (/H100/i.test(adapter)) return 78 * GiB;
  if (/llvmpipe|lavapipe|swiftshader/i.test(adapter)) return totalmem() * 0.8;
  return null;
}

/**
 * Device bytes the WebGPU runner allocates for a shape: fp16 matrices, f32 vectors, an f32 KV cache
 * for the whole context (half with --kv-cache f16), activations for 128-token prefill passes; for a
 * sparse MLP also the predictors and one layer's fc2 while fc2 is transposed in place (the runner
 * holds fc2 in one layout: WebGpuRunnerOptions.keepDenseFc2).
 */
export function deviceBytesNeeded(c: OptConfig, mode: SparsityMode, oracle: boolean): number {
  const d = c.hidden, f = c.ffn, T = 128;
  let n = deviceWeightBytes(c, WEBGPU_LAYOUT) + kvCacheBytes(c, WEBGPU_LAYOUT) + T * (c.vocabSize + f + 10 * d) * 4;
  if (mode !== 'dense') {
    const r = predictorRank(d);
    n += f * d * 2 + 3 * T * f * 4;
    if (!oracle) n += c.layers * ((r * d + f * r) * 2 + f * 4);
  }
  // dejavu: the head predictors (H, d) and the skip records.
  if (mode === 'dejavu') n += c.layers * (c.heads * d * 2 + c.maxPositions * c.heads * 4);
  return n;
}

/** Why a configuration cannot run on this device, or null when it (probably) can. */
function doesNotFit(c: OptConfig, name: string, mode: SparsityMode, gpu: Gpu, o: BenchOptions): string | null {
  const GiB = 1024 ** 3;
  // The runner splits matrices by rows to fit a binding; a single row must still fit one.
  const widest = Math.max(c.hidden, c.ffn, c.wordEmbedProjDim) * 2;
  if (widest > gpu.limits.maxStorageBufferBindingSize) return `${name}: one weight row exceeds maxStorageBufferBindingSize`;
  const need = deviceBytesNeeded(c, mode, o.oracle);
  const have = o.deviceMemoryGib !== undefined ? o.deviceMemoryGib * GiB : knownMemoryBytes(gpu.adapterName);
  // Headroom for the driver and Dawn's own allocations: 3 % of the device, at least 1 GiB (5 % of a
  // small one). opt-66b with sparse MLPs, estimated at 136.3 of the H200's 139 GiB, lost the device
  // mid-run (dense, 131.5, ran).
  if (have !== null && need > have - (have > 20 * GiB ? Math.max(GiB, 0.03 * have) : 0.05 * have)) {
    return `${name} ${mode} needs about ${(need / GiB).toFixed(1)} GiB on the device, which has about ${(have / GiB).toFixed(1)} GiB`;
  }
  return null;
}

interface Opened { runner: Runner; model?: Model; gpu?: Gpu }

interface Target {
  name: string;
  config: OptConfig;
  /** Builds the runner; null when the target is skipped. */
  open(): Promise<Opened | null>;
}

export async function runBench(o: BenchOptions): Promise<BenchRow[]> {
  if (o.model && o.shapes?.length) fail('give --model or --shape, not both');
  const shapes = o.shapes ?? [];
  const configs = shapes.map((s) => shapeConfig(s)); // unknown shapes fail here, before any device work

  let backend: BackendName;
  if (shapes.length) {
    if (o.backend === 'cpu') fail('--shape runs synthetic weights on the GPU; on the CPU backend benchmark a real checkpoint with --model');
    backend = 'webgpu';
  } else backend = o.backend === 'auto' ? await autoBackend() : o.backend;
  if (o.sparsity.includes('mlp') && !o.oracle && !o.predictors && !shapes.length) {
    fail('--sparsity mlp on a checkpoint needs --predictors DIR (trained predictors) or --oracle (fixed random neuron sets)');
  }
  if (o.sparsity.includes('dejavu') && !o.oracle && !o.predictors && !shapes.length) {
    fail('--sparsity dejavu on a checkpoint needs --predictors DIR (trained with --heads) or --oracle (fixed random neuron and head sets)');
  }

  // Bandwidth first, on a device of its own, before the model takes the memory.
  let bw: Bandwidth, adapter: string, gpu: Gpu | null = null;
  if (backend === 'webgpu') {
    gpu = await openGpu();
    adapter = gpu.adapterName;
    bw = await measureGpuBandwidth(gpu);
    gpu.device.destroy(); // a live device busy-polls a core (DESIGN.md)
  } else {
    adapter = cpus()[0]?.model.trim() ?? 'cpu';
    bw = measureMemcpyBandwidth();
  }
  o.log(bandwidthLine(bw, adapter));

  const targets: Target[] = shapes.map((name, i) => ({
    name, config: configs[i],
    async open() {
      const why = doesNotFit(configs[i], name, 'dense', gpu!, o);
      if (why) { o.log(`skipped: ${why}`); return null; }
      // A device per shape, destroyed after it: its memory is free again for the next shape and for
      // the HF baseline's process.
      const g = await openGpu();
      try {
        const { value: runner, error } = await scoped(g, () => syntheticRunner(configs[i], g, o.kvCache));
        if (!error) return { runner, gpu: g };
        runner.dispose();
        o.log(`skipped: ${name}: ${error}`);
      } catch (e) {
        // Limits the runner checks itself (a table larger than one buffer, ...) also mean "does not fit here".
        o.log(`skipped: ${name}: ${(e as Error).message.split('\n')[0]}`);
      }
      g.device.destroy();
      return null;
    },
  }));
  if (!shapes.length) {
    const dir = o.model!;
    const model = await loadModel(dir, { backend, kvCache: o.kvCache, cpuThreads: o.cpuThreads });
    targets.push({ name: basename(resolve(dir)), config: model.config, open: async () => ({ runner: model.runner, model }) });
  }

  const rows: BenchRow[] = [];
  for (const t of targets) {
    const opened = await t.open();
    if (!opened) continue;
    const { runner } = opened;
    try {
      measuring: for (const mode of o.sparsity as SparsityMode[]) {
        const why = shapes.length && mode !== 'dense' ? doesNotFit(t.config, t.name, mode, gpu!, o) : null;
        if (why) { o.log(`skipped: ${why}`); continue; }
        const dejavu = mode === 'dejavu';
        for (const headInput of dejavu && o.headInputs?.length ? o.headInputs : [o.headInput]) for (const headKv of dejavu && o.headKvs?.length ? o.headKvs : [o.headKv]) {
          let row: BenchRow | null;
          try {
            row = await measure(t, opened, mode, { ...o, headKv, headInput }, bw, adapter, backend);
          } catch (e) {
            // A configuration that fails on the device (a lost device: out of memory mid-run) is
            // skipped, and the rows already measured are still reported.
            if (!(e instanceof DOMException)) throw e;   // bugs and DejavuErrors go on up
            o.log(`skipped: ${t.name} ${mode}${mode === 'dejavu' ? ` kv ${headKv ?? 'all'}` : ''}: ${e.message || e.name} (the device may be lost; the rest of this shape is skipped)`);
            break measuring;
          }
          if (row) rows.push(row);
        }
      }
    } finally {
      runner.dispose();
      opened.gpu?.device.destroy();
    }
    if (o.compareHf) await attachHf(rows.filter((r) => r.shape === t.name), t.config, o, shapes.length ? { shape: t.name } : { model: o.model! });
  }
  return rows;
}

/** One configuration's row, or null when its sparse buffers did not fit (logged). */
async function measure(t: Target, { runner, model, gpu }: Opened, mode: SparsityMode, o: BenchOptions,
  bw: Bandwidth, adapter: string, backend: BackendName): Promise<BenchRow | null> {
  const c = t.config;
  let policy: SparsityPolicy | null = null;
  if (mode !== 'dense') {
    if (o.oracle) policy = fixedPolicy(c, o.mlpDensity ?? DEFAULT_DENSITY);
    else if (o.predictors && model) policy = await loadPredictorPolicy(o.predictors, model.checkpoint, o, mode);
    else policy = syntheticPredictorPolicy(c, o.mlpDensity ?? DEFAULT_DENSITY, { selection: o.selection === 'topk' ? 'topk' : 'block', input: o.predictorInput ?? DEFAULT_PREDICTOR_INPUT });
  }
  // dejavu: the MLP's sparsity plus sparse heads at --head-density (DejaVu's attention half).
  if (mode === 'dejavu' && !(o.predictors && model)) {
    policy = { ...policy!, heads: syntheticHeads(c, o.headDensity, { oracle: o.oracle, kv: o.headKv }), ...(!o.oracle ? { headInput: o.headInput ?? 'prev_attn_in' } : {}) };
  }
  const headDensity = policy?.heads ? meanHeadDensity(policy, c.heads) : null;
  const headSel = policy?.heads?.find((h) => h)?.selector;
  const headRank = headSel?.kind === 'predictor' ? headSel.predictor.rank : null;
  const firstHeads = policy?.heads?.find((hp) => hp);
  const headKv = firstHeads ? headKvMode(firstHeads) : null;
  let density = policy ? meanMlpDensity(policy, c.ffn) : null;
  if (gpu) {
    // setSparsity allocates fc2 transposed and the predictors: the second big allocation.
    const { error } = await scoped(gpu, async () => { runner.setSparsity(policy); await gpu.device.queue.onSubmittedWorkDone(); });
    if (error) { runner.setSparsity(null); o.log(`skipped: ${t.name} ${mode}: ${error}`); return null; }
  } else runner.setSparsity(policy);
  // Synthetic block-rule predictors: thresholds brought to the density on this model (calibrate.ts).
  const synthetic = policy && !o.oracle && !(o.predictors && model) && o.selection !== 'topk';
  if (synthetic) {
    // The sequence whose time is the headline, whole: the GPU-timed steps where the runner has them
    // (gpu_ms_per_token), else timeDecode's greedy one. Calibrating on both together brought their
    // mean to the target but not each: at opt-6.7b with sparse heads the greedy run measured 11 % and
    // the GPU-timed one correspondingly less. A layer's density also drifts with the position
    // (attn_io with sparse heads: 10 % over 32 steps came out at 8.5 % over 128), so the runs are whole.
    const runs = [hasStepTiming(runner) ? gpuTimedRun(c, o.promptLen, o.gen) : { prompt: randomPrompt(c, o.promptLen), steps: o.gen }];
    const cal = await calibrateBlockDensity(runner, policy!, { target: o.mlpDensity ?? DEFAULT_DENSITY, runs });
    const m = cal.density.filter((v): v is number => v !== null);
    o.log(`${t.name}: ${mode}: block thresholds calibrated in ${cal.rounds} round${cal.rounds > 1 ? 's' : ''} on the ${hasStepTiming(runner) ? 'GPU-timed' : 'timed'} sequence: density ${Math.min(...m).toFixed(3)}–${Math.max(...m).toFixed(3)} a layer${cal.converged ? '' : ' (not within 3 % of the target)'}`);
  }
  o.log(`${t.name}: ${mode}${policy ? ` (density ${density!.toFixed(3)}${headDensity !== null ? `, heads ${headDensity.toFixed(3)}, kv ${headKv}` : ''}, ${o.oracle ? 'fixed sets' : 'predictors'})` : ''}: prompt ${o.promptLen}, ${o.gen} tokens...`);
  runner.resetMlpDensity();
  const timing = await timeDecode(runner, { promptLen: o.promptLen, gen: o.gen, warmup: o.warmup });
  // The block rule's count varies by token: report (and count bytes at) what was actually chosen.
  const measured = policy ? await runner.mlpDensity() : null;
  if (policy && measured) {
    density = meanOf(measured);
    policy = withMeasuredK(policy, measured, c.ffn);
  }

  const layout = backend === 'cpu' ? CPU_LAYOUT : o.kvCache === 'f16' ? { ...WEBGPU_LAYOUT, kvBytes: 2 } : WEBGPU_LAYOUT;
  const tokenBytes = (p: SparsityPolicy | null) =>
    meanTokenBytes(c, { layout, mlp: mlpBytesFromPolicy(p), headDensity: headDensity ?? 1, headRank: headRank ?? 0, headKv: headKv ?? 'all' }, o.promptLen, o.gen);
  const tb = tokenBytes(policy);
  const bytes = tb.total;
  if (policy) runner.resetMlpDensity();
  const gpuT = await queuedTiming(runner, o);
  // The GPU-timed sequence chooses its own count: its density, and its bytes for gpu_gbps.
  const gpuMeasured = gpuT && policy ? await runner.mlpDensity() : null;
  const gpuDensity = gpuMeasured ? meanOf(gpuMeasured) : null;
  const gtb = gpuMeasured ? tokenBytes(withMeasuredK(policy!, gpuMeasured, c.ffn)) : tb, gpuBytes = gtb.total - gtb.lmHead;
  const profile = o.profile ? await decodeProfile(runner, o) : null;
  runner.setSparsity(null);
  const floorMs = bytes / (bw.gbps * 1e6);
  const sel = policy?.mlp.find((p) => p)?.selector;
  return {
    shape: t.name, backend, adapter, sparsity: mode,
    selector: sel ? (sel.kind === 'predictor' ? 'predictor' : 'fixed') : 'none',
    selection: sel?.kind === 'predictor' ? (sel.block ? 'block' : 'topk') : null,
    predictor_input: sel?.kind === 'predictor' ? policy!.input : null,
    mlp_density: density,
    ...(gpuDensity !== null && { gpu_mlp_density: gpuDensity }),
    predictor_rank: sel?.kind === 'predictor' ? sel.predictor.rank : null,
    head_density: headDensity, head_rank: headRank, head_kv: headKv, head_input: headRank !== null ? policy!.headInput ?? 'attn_in' : null,
    kv_cache: backend === 'webgpu' ? o.kvCache ?? 'f32' : 'f32',
    prompt_len: o.promptLen, gen: o.gen,
    prefill_ms: timing.prefillMs, ms_per_token: timing.msPerToken, median_ms: timing.medianMs, min_ms: timing.minMs,
    ms_per_token_readback: timing.msPerTokenReadback,
    tokens_per_s: 1000 / timing.msPerToken,
    bytes_per_token: Math.round(bytes),
    gbps: bytes / (timing.msPerToken * 1e6),
    card_gbps: bw.gbps, card_gbps_method: bw.kind === 'memcpy' ? 'memcpy' : `read-kernel ${bw.method}`,
    ...(bw.copy && { card_copy_gbps: bw.copy.gbps }),
    floor_ms: floorMs, pct_of_floor: (floorMs / timing.msPerToken) * 100,
    ...(gpuT && gpuStepFields(gpuT, gpuBytes, bw.gbps)),
    ...(profile && { profile }),
  };
}

/** The WebGPU runner's own timing: steps queued back to back, GPU timestamps per step. */
interface StepTiming { msPerToken: number; gpuMsPerToken?: number; dispatchesPerToken: number }

/**
 * The row's GPU-step fields. timeDecodeSteps runs the decode plan without the LM head, so its rate
 * and percent of the floor count the bytes without the LM head's (stepBytes): floor_ms counts them,
 * so floor_ms / gpu_ms_per_token would overstate the percent (1–4 points at OPT-1.3B to 30B).
 */
export function gpuStepFields(t: StepTiming, stepBytes: number, cardGbps: number | null): Pick<BenchRow, 'dispatches_per_token' | 'queued_ms_per_token' | 'gpu_ms_per_token' | 'gpu_gbps' | 'gpu_pct_of_floor'> {
  const gbps = t.gpuMsPerToken ? stepBytes / (t.gpuMsPerToken * 1e6) : null;
  return {
    dispatches_per_token: t.dispatchesPerToken,
    queued_ms_per_token: t.msPerToken,
    gpu_ms_per_token: t.gpuMsPerToken ?? null,
    gpu_gbps: gbps,
    gpu_pct_of_floor: gbps !== null && cardGbps ? (100 * gbps) / cardGbps : null,
  };
}
type StepTimed = Runner & { timeDecodeSteps(steps: number, token?: number): Promise<StepTiming> };

/** The mean over the sparse layers of a per-layer measurement (null: a dense layer). */
function meanOf(v: (number | null)[]): number {
  const m = v.filter((x): x is number => x !== null);
  return m.reduce((a, x) => a + x, 0) / m.length;
}

/** The policy with each sparse layer's k set to the count it measured (the block rule's varies by token). */
const withMeasuredK = (p: SparsityPolicy, measured: (number | null)[], ffn: number): SparsityPolicy =>
  ({ ...p, mlp: p.mlp.map((lp, l) => lp && { ...lp, k: Math.round(measured[l]! * ffn) }) });

const hasStepTiming = (runner: Runner): runner is StepTimed => typeof (runner as Partial<StepTimed>).timeDecodeSteps === 'function';

/**
 * Runs the runner's timeDecodeSteps at the same positions as the measured loop (after the same
 * prompt), when it has one. It queues steps without reading logits back and without the LM head,
 * so it shows what the GPU alone takes; ms_per_token stays the end-to-end number.
 */
async function queuedTiming(runner: Runner, o: BenchOptions): Promise<StepTiming | null> {
  if (!hasStepTiming(runner)) return null;
  runner.reset();
  const run = gpuTimedRun(runner.config, o.promptLen, o.gen);
  await runner.forward(run.prompt, { noLogits: true });
  const t = await runner.timeDecodeSteps(run.steps, run.token);
  runner.reset();
  return t;
}

type Profiled = Runner & { profileDecodeSteps(steps: number, token?: number): Promise<DecodeProfile> };

/** The decode step dispatch by dispatch at the measured loop's positions (BenchRow.profile); null where the backend can't. */
async function decodeProfile(runner: Runner, o: BenchOptions): Promise<BenchRow['profile'] | null> {
  const r = runner as Partial<Profiled>;
  if (typeof r.profileDecodeSteps !== 'function') { o.log('skipped: --profile: the CPU backend has no GPU timestamps'); return null; }
  runner.reset();
  const run = gpuTimedRun(runner.config, o.promptLen, o.gen);
  await runner.forward(run.prompt, { noLogits: true });
  let p: DecodeProfile;
  try {
    p = await r.profileDecodeSteps(run.steps, run.token);
  } catch (e) {
    // An adapter without timestamp-query: the row stands without a profile.
    if (!(e instanceof DejavuError)) throw e;
    o.log(`skipped: --profile: ${e.message}`);
    return null;
  } finally { runner.reset(); }
  const r1 = (x: number) => Math.round(x * 10) / 10;
  return {
    busy_ms_per_token: Math.round(p.busyMsPerToken * 1e4) / 1e4,
    rows: p.rows.map((x) => ({ kernel: x.kernel, workgroups: x.workgroups, per_token: x.perToken, us_per_token: r1(x.usPerToken), us_each: r1(x.usPerToken / x.perToken) })),
  };
}

/** Adds the HF baseline's numbers to a target's rows, or logs one "skipped:" line. */
async function attachHf(rows: BenchRow[], c: OptConfig, o: BenchOptions, what: { shape?: string; model?: string }): Promise<void> {
  if (!rows.length) return;
  o.log(`${rows[0].shape}: running bench/hf_baseline.py...`);
  const hf = await runHfBaseline({ ...what, promptLen: o.promptLen, gen: o.gen, warmup: o.warmup });
  if (!hf.ok) { o.log(`skipped: Hugging Face baseline: ${hf.reason.replace(/^skipped: /, '')}`); return; }
  // HF runs dense fp16 with an fp16 KV cache: the dense WebGPU byte count applies.
  const dense = meanTokenBytes(c, { layout: FP16_LAYOUT }, o.promptLen, o.gen).total;
  for (const r of rows) {
    r.hf_ms_per_token = hf.result.ms_per_token;
    r.hf_prefill_ms = hf.result.prefill_ms;
    r.hf_device = hf.result.device;
    r.hf_gbps = dense / (hf.result.ms_per_token * 1e6);
    r.speedup_vs_hf = hf.result.ms_per_token / r.ms_per_token;
  }
}

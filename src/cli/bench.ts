import type { Command } from 'commander';
import { parseBackend, parseKvCache } from '../backend/select.js';
import { probeAdapter } from '../backend/webgpu/device.js';
import { kernelJson, kernelShape, kernelTable, runKernelBench, type KernelRow } from '../bench/kernels.js';
import { benchTable, profileTable, rounded } from '../bench/report.js';
import { runBench, type SparsityMode } from '../bench/run.js';
import { SHAPE_NAMES } from '../bench/shapes.js';
import { fail } from '../util/errors.js';
import { parseHeadInput, parseHeadKv, PREDICTOR_INPUTS, type HeadInput, type HeadKvMode, type PredictorInput } from '../sparsity/policy.js';
import { action, DEMO_MODEL, floatArg, intArg, modelOptions } from './common.js';

interface BenchFlags {
  model?: string; shape?: string; backend: string; kvCache: string; cpuThreads?: number; promptLen: number; gen: number; warmup: number;
  sparsity: string; mlpDensity?: number; headDensity: number; headKv: string; headInput?: string; oracle?: boolean; predictors?: string; selection: string; predictorInput?: string;
  json?: boolean; compareHf?: boolean; deviceMemoryGib?: number; profile?: boolean;
  kernels?: boolean; kernelMs: number; kernelSamples: number; readMib?: number; rotateMib?: number; kernelOnly?: string; kernelVariants?: boolean; kernelPositions?: string;
}

/** Comma-separated lists, so one process (one device start, one bandwidth measurement) covers a sweep. */
const list = (s: string) => s.split(',').map((x) => x.trim()).filter((x) => x);

function parseSparsity(s: string): SparsityMode[] {
  const modes = list(s);
  for (const m of modes) if (m !== 'dense' && m !== 'mlp' && m !== 'dejavu') fail(`unknown sparsity "${m}" (choose dense, mlp or dejavu)`);
  if (!modes.length) fail('--sparsity needs at least one of dense, mlp, dejavu');
  return modes as SparsityMode[];
}

function parseHeadKvs(s: string): HeadKvMode[] {
  const kvs = list(s).map(parseHeadKv);
  if (!kvs.length) fail('--head-kv needs at least one of all, chosen, lazy');
  return kvs;
}

/** `bench --kernels`: one device per shape; rows as a table or JSON lines. */
async function kernelsAction(o: BenchFlags): Promise<void> {
  if (o.model) fail('--kernels runs synthetic weights at --shape; it takes no --model');
  if (o.backend === 'cpu') fail('--kernels benchmarks the WebGPU kernels; it has no CPU backend');
  const spec = o.shape ?? 'opt-6.7b';
  // A custom shape (d=...,f=...) has commas of its own: it is one shape.
  const shapes = spec.includes('=') ? [spec] : list(spec);
  for (const s of shapes) kernelShape(s); // unknown shapes fail before any device work
  const positions = o.kernelPositions === undefined ? undefined : list(o.kernelPositions).map((x) => {
    const n = Number(x);
    if (!(Number.isInteger(n) && n >= 1)) fail(`--kernel-positions takes whole numbers >= 1, got ${x}`);
    return n;
  });
  if (!(await probeAdapter())) fail('--kernels needs a WebGPU adapter (none found)');
  const rows: KernelRow[] = [];
  for (const shape of shapes) {
    rows.push(...await runKernelBench({
      shape, targetMs: o.kernelMs, samples: o.kernelSamples, readBytes: o.readMib ? o.readMib * 2 ** 20 : undefined,
      rotateBytes: o.rotateMib !== undefined ? o.rotateMib * 2 ** 20 : undefined,
      only: o.kernelOnly ? list(o.kernelOnly) : undefined, variants: !!o.kernelVariants, positions,
      log: (line) => process.stderr.write(line + '\n'),
    }));
  }
  if (o.json) for (const r of rows) process.stdout.write(kernelJson(r) + '\n');
  else if (rows.length) process.stdout.write(kernelTable(rows));
}

function parsePredictorInput(o: BenchFlags): PredictorInput | undefined {
  const v = o.predictorInput;
  if (v === undefined) return undefined;
  if (!PREDICTOR_INPUTS.includes(v as PredictorInput)) fail(`--predictor-input must be ${PREDICTOR_INPUTS.join(', ')} (got ${v})`);
  if (o.predictors || o.oracle) fail(`--predictor-input is for synthetic predictors (${o.predictors ? 'trained ones read what they were trained on' : '--oracle runs no predictor'})`);
  return v as PredictorInput;
}

/** --head-input's list (synthetic head predictors only: trained ones read what they were fitted on). */
function parseHeadInputs(o: BenchFlags): HeadInput[] | undefined {
  if (o.headInput === undefined) return undefined;
  const v = list(o.headInput).map(parseHeadInput);
  if (o.predictors || o.oracle) fail(`--head-input is for synthetic head predictors (${o.predictors ? 'trained ones read what they were fitted on' : '--oracle runs no predictor'})`);
  if (!list(o.sparsity).includes('dejavu')) fail('--head-input is for --sparsity dejavu (the only mode with sparse heads)');
  return v;
}

function parseSelection(v: string): 'auto' | 'block' | 'topk' {
  if (v !== 'auto' && v !== 'block' && v !== 'topk') fail(`--selection must be auto, block or topk (got ${v})`);
  return v;
}

export function register(program: Command): void {
  const cmd = program.command('bench')
    .description('decode speed (ms/token, GB/s) against the bandwidth floor measured on the same device');
  modelOptions(cmd)
    .option('--shape <names>', `published OPT shapes with synthetic weights on the GPU, comma-separated (${SHAPE_NAMES.join(', ')})`)
    .option('--prompt-len <n>', 'prompt tokens (random ids)', intArg('--prompt-len', 1), 128)
    .option('--gen <n>', 'decode steps measured', intArg('--gen', 1), 128)
    .option('--warmup <n>', 'decode steps of the untimed warm-up round', intArg('--warmup'), 3)
    .option('--sparsity <modes>', 'dense | mlp | dejavu, comma-separated', 'dense')
    .option('--mlp-density <d>', 'fraction of MLP neurons per sparse layer (default 0.1; with --predictors: the calibrated K)', floatArg('--mlp-density', 0, 1))
    .option('--head-density <d>', 'fraction of attention heads (for --sparsity dejavu)', floatArg('--head-density', 0, 1), 0.4)
    .option('--head-kv <which>', 'with --sparsity dejavu: all (every head stores K/V; only q, attention and out_proj are sparse) | chosen (unchosen heads skip K/V too) | lazy (chosen, every head\'s K/V completed every second step: the output of all); comma-separated: a row each', 'all')
    .option('--head-input <which>', 'with --sparsity dejavu, synthetic predictors: what head predictors read: prev_attn_in (default: the layer before\'s attention input, DejaVu\'s lookahead: the scores computed in that layer\'s qkv GEMV) | attn_in (the layer\'s own: a score GEMV before each layer\'s qkv); comma-separated: a row each')
    .option('--oracle', 'sparse MLP with fixed random neuron sets: no predictor cost, isolates the kernels')
    .option('--predictors <dir>', 'trained predictors for --model (from train-predictors)')
    .option('--selection <how>', 'how predictors pick neurons: auto | block (threshold a block of 64, fused with fc1) | topk (global top-K); synthetic: auto = block', 'auto')
    .option('--predictor-input <where>', 'what synthetic predictors read: attn_io (default, as train-predictors makes them: the attention input and attention\'s output side by side; A\'s halves ride the qkv and out_proj GEMVs, block-select scores) | attn_in (the attention input, DejaVu\'s lookahead: predictor A computed with qkv) | mlp_in (the MLP input: a predictor dispatch of its own)')
    .option('--device-memory-gib <n>', 'device memory for the --shape fit check (default: known cards)', floatArg('--device-memory-gib', 0))
    .option('--compare-hf', 'also run bench/hf_baseline.py (PyTorch + transformers, CUDA) and print the ratios')
    .option('--json', 'one JSON object per configuration, one per line')
    .option('--profile', 'also time the decode step dispatch by dispatch (WebGPU, GPU timestamps): where the step\'s time goes')
    .option('--kernels', 'kernel micro-benchmarks at --shape (default opt-6.7b; or d=N,f=N,heads=N,vocab=N,pos=N) instead of decode')
    .option('--kernel-ms <ms>', 'with --kernels: time of one timed sample', floatArg('--kernel-ms', 0), 20)
    .option('--kernel-samples <n>', 'with --kernels: timed samples per kernel (the median is reported)', intArg('--kernel-samples', 1), 9)
    .option('--read-mib <n>', 'with --kernels: buffer of the read-bandwidth kernel (default 1024; 64 on a software adapter)', intArg('--read-mib', 1))
    .option('--kernel-only <names>', 'with --kernels: only these benchmarks, comma-separated name prefixes (e.g. topk,sparse-fc2,mlp)')
    .option('--kernel-variants', 'with --kernels: also the candidate shapes and earlier forms of the sparse-MLP kernels (rows say form=)')
    .option('--kernel-positions <list>', 'with --kernels: cached positions of the attention benchmark (default 128,512,1024,2048)')
    .option('--rotate-mib <n>', 'with --kernels: bytes each benchmark cycles through, past the L2 (default 256; 4 on a software adapter)', floatArg('--rotate-mib', 0));
  cmd.action(action(async (o: BenchFlags) => {
    if (o.kernels) return kernelsAction(o);
    const shapes = o.shape ? list(o.shape) : undefined;
    const rows = await runBench({
      model: shapes ? o.model : (o.model ?? DEMO_MODEL),
      shapes,
      backend: parseBackend(o.backend), kvCache: parseKvCache(o.kvCache), cpuThreads: o.cpuThreads,
      promptLen: o.promptLen, gen: o.gen, warmup: o.warmup,
      sparsity: parseSparsity(o.sparsity),
      mlpDensity: o.mlpDensity, headDensity: o.headDensity, headKvs: parseHeadKvs(o.headKv), headInputs: parseHeadInputs(o),
      oracle: !!o.oracle, predictors: o.predictors, selection: parseSelection(o.selection), predictorInput: parsePredictorInput(o),
      compareHf: !!o.compareHf, deviceMemoryGib: o.deviceMemoryGib, profile: !!o.profile,
      log: (line) => process.stderr.write(line + '\n'),
    });
    if (o.json) for (const r of rows) process.stdout.write(JSON.stringify(rounded(r)) + '\n');
    else if (rows.length) {
      process.stdout.write(benchTable(rows));
      for (const r of rows) if (r.profile) process.stdout.write('\n' + profileTable(r));
    }
  }));
}

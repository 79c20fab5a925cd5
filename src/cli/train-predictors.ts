import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { cpuRunner, createRunner, parseBackend } from '../backend/select.js';
import type { BackendChoice, Runner } from '../backend/types.js';
import { loadCheckpoint, type Checkpoint } from '../model/checkpoint.js';
import { NodeFileSource } from '../model/node-source.js';
import { calibrateLayer, rankStats, roundK, type LayerCalibration } from '../sparsity/calibrate.js';
import { calibrateBlock, type BlockCalibration } from '../sparsity/calibrate-block.js';
import { collect, loadHeadNorms, loadLayer, loadMass, readMeta, requireAttnOut, reuseMismatch, type CollectionMeta } from '../sparsity/collect.js';
import { calibrateHeads, fitHeadPredictor, headRankStats, type HeadCalibration, type HeadLabel } from '../sparsity/head-fit.js';
import { predictScores } from '../sparsity/predict.js';
import { parseHeadInput, predictorWidth, type HeadInput, type LowRankPredictor, type PredictorInput } from '../sparsity/policy.js';
import { manifestFormat, type ManifestHeads, type PredictorManifest } from '../sparsity/predictors-io.js';
import { savePredictors } from '../sparsity/predictors-save.js';
import { pickTrainEngine, trainPredictor, type TrainEngine } from '../sparsity/train.js';
import { FitPool, fitLayerInit, fitThreads } from '../sparsity/fit-pool.js';
import { toF32 } from '../model/tensor.js';
import { fail } from '../util/errors.js';
import { action, floatArg, intArg } from './common.js';

interface Opts {
  model: string; data: string; out: string; tokens: number; rank: number; targetRecall: number; input: string;
  backend: string; epochs: number; window?: number; work?: string; maxDensity: number; batch: number; lr?: number; init: string;
  heads?: boolean; headRank?: number; headTarget: number; headLabel: string; headInput: string; threads?: number;
}

/** AdamW learning rates: from noise, and for fine-tuning the low-rank fc1 (a larger step undoes it: see below). */
const LR_RANDOM = 2e-3, LR_LOWRANK = 3e-5;

/** A runner for collection; while the WebGPU runner module is absent, 'auto' falls back to the CPU. */
async function collectionRunner(ck: Checkpoint, choice: BackendChoice): Promise<Runner> {
  try { return await createRunner(ck, choice); } catch (e) {
    if (choice !== 'auto' || (e as { code?: string }).code !== 'ERR_MODULE_NOT_FOUND') throw e;
    process.stderr.write('dejavu: the WebGPU runner is not available; collecting on the CPU backend\n');
    return cpuRunner(ck);
  }
}

function bar(format: string): cliProgress.SingleBar {
  return new cliProgress.SingleBar({ stream: process.stderr, format, hideCursor: false, clearOnComplete: false, etaBuffer: 20 }, cliProgress.Presets.shades_classic);
}

async function collectOrReuse(ck: Checkpoint, o: Opts, dir: string, attnOut: boolean): Promise<CollectionMeta> {
  if (existsSync(join(dir, 'meta.json'))) {
    const m = readMeta(dir);
    const why = reuseMismatch(m, ck, o);
    if (why) fail(`collected data in ${dir} ${why}: delete it or pick another --work folder`);
    if (attnOut) requireAttnOut(dir, m);
    process.stderr.write(`dejavu: reusing collected data in ${dir} (${m.tokens} tokens)\n`);
    return m;
  }
  let text: string;
  try { text = readFileSync(o.data, 'utf8'); } catch { fail(`cannot read --data ${o.data}`); }
  const runner = await collectionRunner(ck, parseBackend(o.backend));
  const b = bar('collect   |{bar}| {value}/{total} tokens | {duration_formatted} (eta {eta_formatted})');
  b.start(o.tokens, 0);
  try {
    const meta = await collect(runner, ck, text, dir, { tokens: o.tokens, window: o.window, attnOut, onProgress: (d, t) => { b.setTotal(t); b.update(d); } });
    return meta;
  } finally { b.stop(); runner.dispose(); }
}

interface LayerResult { cal: LayerCalibration; block: BlockCalibration | null; predictor: LowRankPredictor; epochs: number; seconds: number; recallBudget: number; massBudget: number }

async function trainInput(engine: TrainEngine, ck: Checkpoint, dir: string, meta: CollectionMeta, input: PredictorInput, o: Opts): Promise<LayerResult[]> {
  const { d, f } = meta;
  const monitorK = roundK(o.maxDensity * f, f);
  const out: LayerResult[] = [];
  const b = bar(`${input.padEnd(8)}  |{bar}| layer {layer} epoch {epoch} | loss {loss} | recall@${monitorK} {recall}`);
  const per = Math.max(1, o.epochs); // bar units per layer (epochs 0 still scores the init)
  b.start(meta.layers * per, 0, { layer: 0, epoch: 0, loss: '-', recall: '-' });
  // The low-rank inits: with more than one thread, layers side by side (fit-pool.ts), at most
  // `threads` in flight (each holds fc1 as f32 and its layer's rows), taken in order below; with one,
  // inline on the rows the loop has loaded.
  const lowRank = o.init === 'lowrank', n = predictorWidth(input, d);
  const threads = lowRank ? Math.min(o.threads ?? fitThreads(meta, input), meta.layers) : 1;
  const pool = threads > 1 ? new FitPool(threads) : null;
  if (pool) process.stderr.write(`dejavu: fitting ${input} predictors on ${threads} threads\n`);
  const jobOf = (l: number) => { const W = ck.weights.layers[l]; return { dir, meta, layer: l, input, W1: toF32(W.fc1W), b1: W.fc1B ? toF32(W.fc1B) : null, rank: o.rank }; };
  const inits: (Promise<LowRankPredictor> | undefined)[] = [];
  const submit = (l: number) => {
    if (!pool || l >= meta.layers || inits[l] !== undefined) return;
    inits[l] = pool.fit(jobOf(l));
    void inits[l]!.catch(() => {}); // awaited in order below: a later one failing first must not go unhandled meanwhile
  };
  for (let l = 0; l < threads; l++) submit(l);
  try {
    for (let l = 0; l < meta.layers; l++) {
      const t0 = performance.now();
      const train = loadLayer(dir, meta, l, 'train', input), val = loadLayer(dir, meta, l, 'val', input);
      let init: LowRankPredictor | undefined;
      if (pool) {
        init = await inits[l];
        inits[l] = undefined; // consumed: not held to the end
        submit(l + threads);
      } else if (lowRank) init = fitLayerInit(jobOf(l), train);
      const res = await trainPredictor(engine, train, val, n, f, {
        rank: o.rank, epochs: o.epochs, monitorK, batch: o.batch, lr: o.lr ?? (lowRank ? LR_LOWRANK : LR_RANDOM), seed: l + 1, init,
        onEpoch: (r) => b.update(l * per + Math.min(r.epoch, per), { layer: l, epoch: r.epoch, loss: r.loss.toFixed(4), recall: r.recall.toFixed(3) }),
      });
      b.update((l + 1) * per);
      const { act, w2norm } = loadMass(dir, l);
      const stats = rankStats(res.valScores, val.labels, val.rows, f, act, w2norm);
      const cal = calibrateLayer(l, stats, meta.sparsity[l], { targetRecall: o.targetRecall, maxDensity: o.maxDensity });
      const block = calibrateBlock(res.valScores, val.labels, val.rows, f, o.targetRecall, act, w2norm);
      // The bar draws only on a terminal; logs get one line per layer instead.
      if (!process.stderr.isTTY) process.stderr.write(`${input} layer ${l}: ${res.epochs} epochs, recall@${monitorK} ${stats.countRecall(monitorK).toFixed(3)}, K ${cal.k}, ${((performance.now() - t0) / 1000).toFixed(1)}s\n`);
      out.push({ cal, block, predictor: res.predictor, epochs: res.epochs, seconds: (performance.now() - t0) / 1000, recallBudget: stats.countRecall(monitorK), massBudget: stats.massRecall(monitorK) });
    }
  } finally { b.stop(); await pool?.close(); }
  return out;
}

interface HeadResult { cal: HeadCalibration; predictor: LowRankPredictor; seconds: number }

/** The head predictors' rank: --head-rank, at most (and by default) the number of heads. */
const headRankOf = (o: Opts, H: number): number => Math.min(o.headRank ?? H, H);

/**
 * Per layer: the head predictor fitted on the training rows, calibrated on the validation rows. With
 * the lookahead input (prev_attn_in) layer l >= 1 reads layer l − 1's attention input of the same
 * token (the collection's rows line up across layers), layer 0 its own.
 */
function fitHeads(dir: string, meta: CollectionMeta, H: number, o: Opts, input: HeadInput): HeadResult[] {
  const { d } = meta, rank = headRankOf(o, H);
  const out: HeadResult[] = [];
  for (let l = 0; l < meta.layers; l++) {
    const t0 = performance.now();
    const src = input === 'prev_attn_in' && l > 0 ? l - 1 : l;
    const train = loadLayer(dir, meta, src, 'train', 'attn_in'), val = loadLayer(dir, meta, src, 'val', 'attn_in');
    const predictor = fitHeadPredictor(train.x, loadHeadNorms(dir, meta, l, 'train'), train.rows, d, H, rank, { label: o.headLabel as HeadLabel });
    const scores = new Float32Array(val.rows * H);
    for (let t = 0; t < val.rows; t++) scores.set(predictScores(predictor, val.x.subarray(t * d, (t + 1) * d), d), t * H);
    const cal = calibrateHeads(l, headRankStats(scores, loadHeadNorms(dir, meta, l, 'val'), val.rows, H), o.headTarget);
    if (!process.stderr.isTTY) process.stderr.write(`heads layer ${l}: k ${cal.k}/${H}, norm share ${cal.mass_recall.toFixed(3)} (oracle ${cal.oracle_mass.toFixed(3)})\n`);
    out.push({ cal, predictor, seconds: (performance.now() - t0) / 1000 });
  }
  return out;
}

function headTable(res: HeadResult[], H: number, o: Opts): string {
  const head = ['layer', 'k', 'heads', 'norm share', 'oracle share', 'recall of oracle top-k', 'time', 'mode'];
  const rows = res.map(({ cal: c, seconds }) => [String(c.layer), String(c.k), `${c.k}/${H}`, pct(c.mass_recall), pct(c.oracle_mass), pct(c.recall), seconds.toFixed(0) + 's', c.dense ? 'dense (the target needs every head)' : 'sparse']);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (r: string[]) => r.map((s, i) => (i === r.length - 1 ? s : s.padStart(w[i]))).join('  ');
  const sparse = res.filter((r) => !r.cal.dense);
  const mean = sparse.length ? sparse.reduce((a, r) => a + r.cal.k / H, 0) / sparse.length : NaN;
  return [fmt(head), ...rows.map(fmt), `head predictors: input ${o.headInput}, rank ${headRankOf(o, H)}, target norm share ${o.headTarget}; mean head density over ${sparse.length} sparse layers ${pct(mean)}`].join('\n');
}

const pct = (x: number) => (Number.isFinite(x) ? (x * 100).toFixed(1) + '%' : '-');

function table(meta: CollectionMeta, results: Map<PredictorInput, LayerResult[]>, saved: PredictorInput, o: Opts): string {
  const monitorK = roundK(o.maxDensity * meta.f, meta.f);
  const inputs = [...results.keys()];
  const head = ['layer', 'sparsity', ...inputs.map((i) => `recall@${monitorK} ${i}`), `mass@${monitorK}`, 'K', 'density', 'recall@K', 'mass@K', 'precision', 'block cap', 'block density', 'block recall', 'block mass', 'epochs', 'time', 'mode'];
  const rows = results.get(saved)!.map((r, l) => {
    const c = r.cal;
    const recallAt = inputs.map((i) => pct(results.get(i)![l].recallBudget));
    return [String(l), pct(meta.sparsity[l]), ...recallAt, pct(r.massBudget), String(c.k), pct(c.density), pct(c.recall), pct(c.mass_recall), pct(c.precision), String(r.block?.cap ?? '-'), pct(r.block?.density ?? NaN), pct(r.block?.recall ?? NaN), pct(r.block?.mass_recall ?? NaN), String(r.epochs), r.seconds.toFixed(0) + 's', c.dense ? `dense (${c.reason})` : 'sparse'];
  });
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (r: string[]) => r.map((s, i) => (i === r.length - 1 ? s : s.padStart(w[i]))).join('  ');
  const sparse = results.get(saved)!.filter((r) => !r.cal.dense);
  const mean = sparse.length ? sparse.reduce((a, r) => a + r.cal.density, 0) / sparse.length : NaN;
  const meanBlock = sparse.length ? sparse.reduce((a, r) => a + (r.block?.density ?? NaN), 0) / sparse.length : NaN;
  return [fmt(head), ...rows.map(fmt), `saved: input ${saved}, rank ${o.rank}, target recall ${o.targetRecall}; mean density over ${sparse.length} sparse layers: top-K ${pct(mean)}, block rule ${pct(meanBlock)}`].join('\n');
}

/*
 * Defaults chosen by measurement on opt-gutenberg-18m (H200, gutenberg-calib, windows of 512; perplexity on
 * the first 131,072 tokens of gutenberg-val, dense 26.988; docs/sparsity.md has the tables):
 * - input attn_io (since the twenty-fourth session; mlp_in before): the attention input and attention's
 *   output side by side, the reduced-rank regression of fc1's pre-activations on both. On the 131,072
 *   tokens it cost +1.48% at 10.2% measured density against mlp_in's +1.80% at 9.9% (same
 *   196,608-token collection size, rank and target), WikiText-2 +0.85% against +0.99%; on the 5m model
 *   +0.25% against +0.14%. Same K and recall per layer as mlp_in, and on WebGPU its halves ride the qkv
 *   and out_proj GEMVs (no predictor dispatch of its own: 5-10% faster decode steps at opt-1.3b/6.7b).
 * - mlp_in: only on fc1's own input is activity a linear rule (z = W1 x + b1 > 0), which its low-rank
 *   init approximates directly; with BCE from noise its recall@240 equals attn_in's on layers 0-2 and
 *   6-7 and is 2-4 points higher on 3-5. attn_in alone (DejaVu's lookahead) cost +8.31% at 11.9%
 *   against mlp_in's +2.45% at 9.5% (block rule, first 32,768 tokens of gutenberg-val, CPU): what it
 *   misses is attention's own output, which attn_io adds.
 * - init lowrank, no BCE epochs: at rank 128 / target recall 0.95 the whitened rank-r fc1 gives +1.35%
 *   at 11.8% mean density, where BCE-trained predictors from noise gave +4.46% at 11.5%. BCE fine-tuning
 *   from the low-rank init lowered validation recall@240 (layer 7: 87.0% -> 86.8% at lr 3e-5, 83.9% at
 *   2e-3), so 0 epochs is the default; --epochs N with early stopping keeps the init unless BCE beats it.
 * - rank 128: the smallest measured rank that meets the target (density <= 15% and ppl <= +2%): +1.35%
 *   at 11.8% with top-K, +1.80% at 9.9% with the block rule. Rank 96 fits the budget (14.0% / 12.1%)
 *   but costs +3.31% / +3.85%; rank 64 needs 18.2% / 16.1% (over the budget); rank 192 (top-K) gives
 *   +0.37% at 9.8%. A rank-r predictor is r(d+f)+f values against the MLP's 2df
 *   (rank 128 on 18m: 21%; on d=768: 10%).
 */
export function register(program: Command): void {
  const cmd = program.command('train-predictors')
    .description('collect activations, train per-layer low-rank MLP predictors, calibrate top-K and the block rule, and save them')
    .requiredOption('--model <dir>', 'Hugging Face OPT checkpoint folder, or a hub id in the local Hugging Face cache (facebook/opt-125m)')
    .requiredOption('--data <file>', 'calibration text (UTF-8)')
    .requiredOption('--out <dir>', 'folder for predictors.safetensors and manifest.json')
    .option('--tokens <n>', 'tokens to collect', intArg('--tokens', 64), 196608)
    .option('--window <n>', 'window length in tokens (default: the model context)', intArg('--window', 2))
    .option('--rank <r>', 'predictor rank', intArg('--rank', 1), 128)
    .option('--target-recall <x>', 'per-layer count recall that sets K', floatArg('--target-recall', 0, 1), 0.95)
    .option('--max-density <x>', 'density budget: early-stopping K, and layers more active than this stay dense', floatArg('--max-density', 0, 1), 0.15)
    .option('--input <which>', 'attn_io (the attention input and attention\'s output side by side: mlp_in\'s quality, its first half known before attention; on WebGPU no dispatch of its own) | mlp_in (the MLP input) | attn_in (the attention input alone: DejaVu\'s lookahead, worse on real models) | both (train and report attn_in and mlp_in, save mlp_in)', 'attn_io')
    .option('--backend <name>', 'auto | cpu | webgpu (collection and training)', 'auto')
    .option('--init <how>', 'lowrank (the data-whitened rank-r fit of fc1\'s pre-activations: of fc1 itself on mlp_in, a reduced-rank regression on attn_io or attn_in) | random', 'lowrank')
    .option('--epochs <e>', 'maximum BCE epochs per layer, early stopping on validation recall (default 0 from lowrank: the init as it is; 15 from random)', intArg('--epochs', 0))
    .option('--batch <n>', 'minibatch rows', intArg('--batch', 1), 1024)
    .option('--lr <x>', `AdamW learning rate (default ${LR_RANDOM} from random, ${LR_LOWRANK} from lowrank)`, floatArg('--lr', 0, 1))
    .option('--work <dir>', 'keep collected data here and reuse it on later runs (default: a temp folder, deleted)')
    .option('--heads', 'also fit head predictors (attention input -> one score per head, fitted to each head\'s contribution ‖W_o,h o_h‖) and calibrate k per layer')
    .option('--head-rank <r>', 'head predictor rank (default: the number of heads, i.e. full)', intArg('--head-rank', 1))
    .option('--head-label <what>', 'what head predictors fit: share (each head\'s share of the token\'s head contributions ‖W_o,h o_h‖) | lognorm (the log of its contribution)', 'share')
    .option('--head-input <which>', 'what head predictors read: prev_attn_in (the layer before\'s attention input: DejaVu\'s lookahead, scores known a layer early, as good on opt-gutenberg-18m; layer 0 reads its own) | attn_in (the layer\'s own)', 'prev_attn_in')
    .option('--head-target <x>', 'mean share of the heads\' contributions ‖W_o,h o_h‖ the chosen heads must keep (sets k per layer)', floatArg('--head-target', 0, 1), 0.9)
    .option('--threads <n>', 'layers whose low-rank fits run side by side (default: the cores, at most the layers and what half the free memory holds)', intArg('--threads', 1));
  cmd.action(action(async (o: Opts) => {
    if (!['attn_in', 'mlp_in', 'attn_io', 'both'].includes(o.input)) fail(`--input must be attn_in, mlp_in, attn_io or both (got ${o.input})`);
    if (!['lowrank', 'random'].includes(o.init)) fail(`--init must be lowrank or random (got ${o.init})`);
    if (!['share', 'lognorm'].includes(o.headLabel)) fail(`--head-label must be share or lognorm (got ${o.headLabel})`);
    const headInput = parseHeadInput(o.headInput);
    // No --epochs: keep fc1's low-rank approximation as it is (BCE fine-tuning lowered its recall, see the note above); 15 from noise.
    if ((o as { epochs?: number }).epochs === undefined) o.epochs = o.init === 'lowrank' ? 0 : 15;
    if (o.epochs === 0 && o.init === 'random') fail('--epochs 0 keeps the initial weights: it needs --init lowrank');
    const inputs: PredictorInput[] = o.input === 'both' ? ['attn_in', 'mlp_in'] : [o.input as PredictorInput];
    const saved: PredictorInput = o.input === 'both' ? 'mlp_in' : (o.input as PredictorInput);
    const src = await NodeFileSource.open(o.model);
    const ck = await loadCheckpoint(src).finally(() => src.close());
    const dir = o.work ?? mkdtempSync(join(tmpdir(), 'dejavu-collect-'));
    const t0 = performance.now();
    try {
      const meta = await collectOrReuse(ck, o, dir, inputs.includes('attn_io'));
      if (o.heads && meta.head_label !== 'contrib') fail(`the collected data in ${dir} has no head labels of this version (collected by an older one): delete it or pick another --work folder`);
      const tc = performance.now();
      const { engine, close } = await pickTrainEngine(parseBackend(o.backend));
      process.stderr.write(`dejavu: training on ${engine.name}: ${meta.rows.train} train rows, ${meta.rows.val} validation rows\n`);
      const results = new Map<PredictorInput, LayerResult[]>();
      try {
        for (const input of inputs) results.set(input, await trainInput(engine, ck, dir, meta, input, o));
      } finally { close(); }
      const res = results.get(saved)!;
      const H = ck.config.heads;
      const heads = o.heads ? fitHeads(dir, meta, H, o, headInput) : null;
      const headsSection: ManifestHeads | undefined = heads ? {
        rank: headRankOf(o, H), heads: H, target_mass: o.headTarget, input: headInput,
        layers: heads.map(({ cal: c }) => ({ layer: c.layer, dense: c.dense, k: c.k, mass_recall: c.mass_recall, oracle_mass: c.oracle_mass, recall: c.recall })),
      } : undefined;
      const manifest: PredictorManifest = {
        format: manifestFormat(headsSection?.input), model_fingerprint: ck.fingerprint, rank: o.rank, input: saved, target_recall: o.targetRecall,
        tokens: meta.tokens, init: o.init, epochs: res.map((r) => r.epochs), d: meta.d, f: meta.f,
        layers: res.map(({ cal: c, block: b }) => ({
          layer: c.layer, dense: c.dense, k: c.k, recall: c.recall, mass_recall: c.mass_recall, precision: c.precision, density: c.density,
          ...(b ? { block: { cap: b.cap, tau: b.tau, density: b.density, recall: b.recall, mass_recall: b.mass_recall } } : {}),
        })),
        ...(headsSection ? { heads: headsSection } : {}),
      };
      savePredictors(o.out, manifest, res.map((r) => r.predictor), heads?.map((h) => h.predictor));
      process.stdout.write(table(meta, results, saved, o) + '\n');
      if (heads) process.stdout.write(headTable(heads, H, o) + '\n');
      process.stdout.write(`collection ${((tc - t0) / 1000).toFixed(0)}s, training ${((performance.now() - tc) / 1000).toFixed(0)}s; saved ${o.out}\n`);
    } finally {
      if (!o.work) rmSync(dir, { recursive: true, force: true });
    }
  }));
}

/**
 * Training one layer's MLP predictor (DESIGN.md item 4): scores = B (A x) + bias, no nonlinearity
 * between the two products (a rank-r factorisation of a linear classifier, as in DejaVu), trained
 * with binary cross-entropy against fc1_act > 0, positives up-weighted, AdamW on shuffled minibatches.
 *
 * Early stopping watches validation count-recall at a fixed budget K (`monitorK`, by default the
 * target density × f): at inference the predictor is only ever used through its top-K ranking, so
 * ranking quality at the K we will run is the thing to maximise. Recall at threshold 0.5 would
 * instead measure the calibration of the probabilities, which pos_weight deliberately distorts.
 *
 * The loop is engine-agnostic: a TrainSession runs the steps on WebGPU (train-gpu/session.ts) or on
 * the CPU (below, built from the kernels' CPU twins).
 */
import type { LowRankPredictor } from './policy.js';
import type { LayerData } from './collect.js';
import { adamwCpu, bceGradCpu, colSumCpu, matmulCpu, type AdamParams } from './train-gpu/kernels.js';
import { rankStats } from './calibrate.js';
import { seededRandom } from '../util/random.js';
import { fail } from '../util/errors.js';

export interface SessionConfig {
  d: number; f: number; rank: number;
  batch: number;          // rows per step (fixed: the last partial batch of an epoch is skipped; shuffling covers it)
  posWeight: number;
  adam: Omit<AdamParams, 'step'>;
}

export interface TrainSession {
  /** One AdamW step on x (batch, d) with labels (batch, ceil(f/32)). */
  step(x: Float32Array, labels: Uint32Array): Promise<void>;
  /** Summed loss of the steps since the last call. */
  takeLoss(): Promise<number>;
  /** Scores (rows, f) of x (rows, d). */
  scores(x: Float32Array, rows: number): Promise<Float32Array>;
  params(): Promise<LowRankPredictor>;
  dispose(): void;
}

export interface TrainEngine {
  readonly name: string;
  session(init: LowRankPredictor, cfg: SessionConfig): Promise<TrainSession>;
}

export interface TrainOptions {
  rank: number;
  epochs: number;          // upper bound; early stopping usually ends sooner
  batch?: number;          // default 1024
  lr?: number;             // default 2e-3
  weightDecay?: number;    // default 1e-4
  maxPosWeight?: number;   // cap on negatives/positives (default 20)
  patience?: number;       // epochs without a better validation recall before stopping (default 2)
  monitorK: number;        // early-stopping metric: validation count-recall at this K
  seed?: number;
  /** Starting weights (e.g. lowRankFc1); default: small random factors and prior log-odds biases. */
  init?: LowRankPredictor;
  onEpoch?: (r: EpochReport) => void;
}

/** Epoch 0 reports the starting weights (no step taken, loss NaN). */
export interface EpochReport { epoch: number; loss: number; recall: number; best: number }

export interface TrainResult {
  predictor: LowRankPredictor;
  recall: number;          // best validation count-recall at monitorK
  epochs: number;          // epochs run
  posWeight: number;
  /** Validation scores of the best predictor (rows, f), for calibration without recomputing. */
  valScores: Float32Array;
}

export const mulberry = seededRandom;

function countPositives(labels: Uint32Array, rows: number, f: number): Float64Array {
  const words = Math.ceil(f / 32), per = new Float64Array(f);
  for (let r = 0; r < rows; r++) for (let j = 0; j < f; j++) if ((labels[r * words + (j >>> 5)] >>> (j & 31)) & 1) per[j]++;
  return per;
}

/**
 * Initial weights: small random A and B (Gaussian via Box-Muller-free uniform sums, scale 1/sqrt(fan-in)),
 * and the bias at the weighted prior log-odds of each neuron, log(pw·p / (1-p)): the model then
 * starts at the best input-independent answer and training only has to learn the contextual part.
 */
function initPredictor(d: number, f: number, r: number, posRate: Float64Array, posWeight: number, rand: () => number): LowRankPredictor {
  const gauss = () => (rand() + rand() + rand() - 1.5) * 2; // variance 1
  const A = new Float32Array(r * d), B = new Float32Array(f * r), bias = new Float32Array(f);
  for (let i = 0; i < A.length; i++) A[i] = gauss() / Math.sqrt(d);
  for (let i = 0; i < B.length; i++) B[i] = gauss() * 0.1 / Math.sqrt(r);
  for (let j = 0; j < f; j++) {
    const p = Math.min(Math.max(posRate[j], 1e-4), 1 - 1e-4);
    bias[j] = Math.log((posWeight * p) / (1 - p));
  }
  return { rank: r, A, B, bias };
}

export async function trainPredictor(engine: TrainEngine, train: LayerData, val: LayerData, d: number, f: number, o: TrainOptions): Promise<TrainResult> {
  const batch = Math.min(o.batch ?? 1024, train.rows);
  const words = Math.ceil(f / 32);
  const rand = mulberry(o.seed ?? 1);
  const pos = countPositives(train.labels, train.rows, f);
  const totalPos = pos.reduce((a, b) => a + b, 0);
  // negatives/positives balances the two classes' total weight; capped so the rarest layers
  // (1-2% active) do not turn every near-miss into a false positive that swamps the gradient.
  const posWeight = Math.min(o.maxPosWeight ?? 20, Math.max(1, (train.rows * f - totalPos) / Math.max(1, totalPos)));
  const init = o.init ?? initPredictor(d, f, o.rank, pos.map((p) => p / train.rows), posWeight, rand);
  if (init.rank !== o.rank) fail(`initial predictor has rank ${init.rank}, training asked for ${o.rank}`);
  const session = await engine.session(init, {
    d, f, rank: o.rank, batch, posWeight,
    adam: { lr: o.lr ?? 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: o.weightDecay ?? 1e-4 },
  });
  try {
    const order = new Uint32Array(train.rows).map((_, i) => i);
    const xb = new Float32Array(batch * d), yb = new Uint32Array(batch * words);
    // The starting point is a candidate too: a data-aware init can already beat what BCE finds, and
    // early stopping then keeps it (epochs 0 only scores it).
    let bestScores = await session.scores(val.x, val.rows);
    let best = rankStats(bestScores, val.labels, val.rows, f).countRecall(o.monitorK), bestParams = init, since = 0, epoch = 0;
    o.onEpoch?.({ epoch: 0, loss: NaN, recall: best, best });
    const patience = o.patience ?? 2;
    while (epoch < o.epochs) {
      epoch++;
      for (let i = order.length - 1; i > 0; i--) { const j = Math.floor(rand() * (i + 1)); const t = order[i]; order[i] = order[j]; order[j] = t; }
      const steps = Math.floor(train.rows / batch);
      for (let s = 0; s < steps; s++) {
        for (let b = 0; b < batch; b++) {
          const row = order[s * batch + b];
          xb.set(train.x.subarray(row * d, (row + 1) * d), b * d);
          yb.set(train.labels.subarray(row * words, (row + 1) * words), b * words);
        }
        await session.step(xb, yb);
      }
      const loss = (await session.takeLoss()) / (steps * batch * f);
      const scores = await session.scores(val.x, val.rows);
      const recall = rankStats(scores, val.labels, val.rows, f).countRecall(o.monitorK);
      if (recall > best) { best = recall; bestParams = await session.params(); bestScores = scores; since = 0; } else since++;
      o.onEpoch?.({ epoch, loss, recall, best });
      if (since >= patience) break;
    }
    return { predictor: bestParams, recall: best, epochs: epoch, posWeight, valScores: bestScores };
  } finally {
    session.dispose();
  }
}

/** The CPU engine: the same step as the GPU, built from the kernels' CPU twins. */
export class CpuTrainEngine implements TrainEngine {
  readonly name = 'cpu';
  async session(init: LowRankPredictor, cfg: SessionConfig): Promise<TrainSession> {
    const { d, f, rank: r, batch: n } = cfg;
    const A: Float32Array = init.A.slice(), B: Float32Array = init.B.slice(), bias: Float32Array = init.bias.slice();
    const mom = [A, B, bias].map((p) => [new Float32Array(p.length), new Float32Array(p.length)]);
    const u = new Float32Array(n * r), s = new Float32Array(n * f), g = new Float32Array(n * f);
    const dU = new Float32Array(n * r), dA = new Float32Array(r * d), dB = new Float32Array(f * r), db = new Float32Array(f);
    const nt = { transA: false, transB: true, bias: false }, tn = { transA: true, transB: false, bias: false }, nn = { transA: false, transB: false, bias: false };
    let t = 0, loss = 0;
    const forward = (x: Float32Array, rows: number, uo: Float32Array, so: Float32Array) => {
      matmulCpu(x, A, rows, r, d, nt, undefined, uo);
      matmulCpu(uo, B, rows, f, r, nt, bias, so);
    };
    return {
      async step(x, labels) {
        forward(x, n, u, s);
        loss += bceGradCpu(s, labels, n, f, cfg.posWeight, 1 / n, g);
        matmulCpu(g, u, f, r, n, tn, undefined, dB);
        colSumCpu(g, n, f, db);
        matmulCpu(g, B, n, r, f, nn, undefined, dU);
        matmulCpu(dU, x, r, d, n, tn, undefined, dA);
        t++;
        adamwCpu(A, dA, mom[0][0], mom[0][1], { ...cfg.adam, step: t });
        adamwCpu(B, dB, mom[1][0], mom[1][1], { ...cfg.adam, step: t });
        adamwCpu(bias, db, mom[2][0], mom[2][1], { ...cfg.adam, weightDecay: 0, step: t });
      },
      async takeLoss() { const l = loss; loss = 0; return l; },
      async scores(x, rows) { const uo = new Float32Array(rows * r), so = new Float32Array(rows * f); forward(x, rows, uo, so); return so; },
      async params() { return { rank: r, A: A.slice(), B: B.slice(), bias: bias.slice() }; },
      dispose() {},
    };
  }
}

/**
 * The engine for a backend choice: WebGPU when asked for or (auto) on a GPU (not a software adapter), else the CPU.
 * Returns a disposer for the GPU device (a live Dawn device busy-polls a core until destroyed).
 */
export async function pickTrainEngine(choice: 'auto' | 'cpu' | 'webgpu'): Promise<{ engine: TrainEngine; close(): void }> {
  if (choice !== 'cpu') {
    // On a software adapter (device.ts, isSoftwareAdapter) the tiled WGSL matmul ran at 0.15 GFLOP/s
    // under lavapipe on the 2-core dev machine against 0.14 for the JS twin under the same load,
    // while Dawn busy-polls a further core: no gain, so 'auto' trains on the CPU there ('webgpu'
    // still forces it, e.g. for tests).
    const { probeAdapter, openGpu, isSoftwareAdapter } = await import('../backend/webgpu/device.js');
    const adapter = await probeAdapter();
    if (choice === 'webgpu' || (adapter && !isSoftwareAdapter(adapter))) {
      const gpu = await openGpu();
      const { GpuTrainEngine } = await import('./train-gpu/session.js');
      return { engine: new GpuTrainEngine(gpu), close: () => gpu.device.destroy() };
    }
  }
  return { engine: new CpuTrainEngine(), close: () => {} };
}

/**
 * The low-rank inits of train-predictors' layers, fitted side by side in worker threads. Each
 * layer's fit (lowrank-init.ts) is seconds to minutes of single-threaded arithmetic on its own
 * collected rows and nothing else, so layers are independent jobs: a pool of `threads` workers takes
 * them in order and each loads its layer's rows from the collection itself (nothing large crosses
 * threads but fc1's weights in and the predictor out). With one thread there is no pool: the caller
 * fits inline on the rows it has loaded (train-predictors.ts).
 */
import { availableParallelism, freemem } from 'node:os';
import { Worker } from 'node:worker_threads';
import { DejavuError } from '../util/errors.js';
import { loadLayer, type CollectionMeta, type LayerData } from './collect.js';
import { lowRankFc1 } from './lowrank-init.js';
import { predictorWidth, type LowRankPredictor, type PredictorInput } from './policy.js';

/** One layer's fit: its collection, fc1 (f, d) and bias, and the rank. */
export interface FitJob {
  dir: string;
  meta: CollectionMeta;
  layer: number;
  input: PredictorInput;
  W1: Float32Array;        // (f, d)
  b1: Float32Array | null; // (f)
  rank: number;
}

/**
 * The fit itself (also what a worker runs): mlp_in, fc1's own whitened low-rank approximation;
 * attn_in and attn_io, the reduced-rank regression of fc1's pre-activations (W1 · mlp_in) on that
 * input for the same tokens. `loaded`: the layer's training rows where the caller has them already.
 */
export function fitLayerInit(j: FitJob, loaded?: LayerData): LowRankPredictor {
  const { d, f } = j.meta;
  const train = loaded ?? loadLayer(j.dir, j.meta, j.layer, 'train', j.input);
  const target = j.input !== 'mlp_in' ? loadLayer(j.dir, j.meta, j.layer, 'train', 'mlp_in').x : undefined;
  return lowRankFc1(j.W1, j.b1, train.x, train.rows, d, f, j.rank, { target });
}

/**
 * How many layers to fit at once: the cores, the layers, and what fits in half the free memory at
 * one layer's training rows (its input as f32, the target's for a regression, and the f16 reads).
 */
export function fitThreads(meta: CollectionMeta, input: PredictorInput, free = freemem(), cores = availableParallelism()): number {
  const n = predictorWidth(input, meta.d), perLayer = meta.rows.train * (n + (input !== 'mlp_in' ? meta.d : 0)) * 6;
  return Math.max(1, Math.min(cores, meta.layers, Math.floor(free / 2 / Math.max(1, perLayer))));
}

type Reply = { id: number; ok: true; p: LowRankPredictor } | { id: number; ok: false; message: string; dejavu: boolean };

export class FitPool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly queue: { id: number; job: FitJob }[] = [];
  private readonly pending = new Map<number, { resolve: (p: LowRankPredictor) => void; reject: (e: Error) => void }>();
  private next = 0;
  /** Set when a worker dies: every fit waiting or asked for later fails with it. */
  private failed: Error | null = null;
  private closing = false;

  constructor(readonly threads: number) {
    for (let i = 0; i < threads; i++) {
      const w = new Worker(new URL('./fit-worker.js', import.meta.url));
      w.on('message', (r: Reply) => {
        const p = this.pending.get(r.id);
        if (!p) return; // failed meanwhile: already rejected
        this.pending.delete(r.id);
        if (r.ok) p.resolve(r.p); else p.reject(r.dejavu ? new DejavuError(r.message) : new Error(r.message));
        this.idle.push(w);
        this.pump();
      });
      // A worker that dies (out of memory) or exits fails every fit still waiting: the command stops with its message.
      w.on('error', (e) => this.fail(e));
      w.on('exit', (code) => { if (!this.closing) this.fail(new Error(`a fitting thread exited (code ${code})`)); });
      this.workers.push(w);
      this.idle.push(w);
    }
  }

  private fail(e: Error): void {
    this.failed ??= e;
    this.queue.length = 0;
    for (const p of this.pending.values()) p.reject(this.failed);
    this.pending.clear();
  }

  /** The layer's predictor; jobs start in the order they are submitted. */
  fit(job: FitJob): Promise<LowRankPredictor> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.queue.push({ id, job });
      this.pump();
    });
  }

  private pump(): void {
    while (this.idle.length && this.queue.length) {
      const { id, job } = this.queue.shift()!;
      this.idle.pop()!.postMessage({ id, job });
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

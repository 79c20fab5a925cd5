/**
 * The CPU backend's linear and attention on several threads: the calling thread and worker threads
 * claim parts of a job until none are left — for linear contiguous ranges of the outputs
 * (linearRange), for attention (head, block of queries) cells (attentionRange) — so the result is
 * the one-thread kernel's to the bit whatever the thread count, and a worker that is slow to wake,
 * never started or has died only leaves its parts to the others. Weights and the K/V caches live in
 * SharedArrayBuffers (`share` / `zeros`, once at load) that every worker holds by id; a call copies
 * its input (x, q) into a shared scratch, wakes the workers through one Int32Array of control words
 * (Atomics.wait / notify: no message a call) and copies its outputs (y; o and the head norms) out.
 * The calling thread blocks until every part is done, as the single-threaded kernel would.
 *
 * Claims carry the job's generation (NEXT holds gen << 16 | next part, taken by compareExchange), so
 * a worker that woke for an earlier job and read its fields cannot claim a part of a later one.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { attention, attentionRange, linear, linearRange } from './kernels.js';

/** What a job computes (CTL.OP). */
export const OP = { LINEAR: 0, ATTENTION: 1 } as const;

/**
 * Control words: the job's generation (workers wait on it), stop, the op, a part's failure, claims,
 * completions and the part count; then the job's fields (T is both ops'; arrays by their ids, −1 none).
 */
export const CTL = {
  GEN: 0, STOP: 1, OP: 2, ERR: 3, NEXT: 4, DONE: 5, PARTS: 6, T: 7,
  // linear: y(T, OUT) = x(T, IN) · W(OUT, IN)ᵀ + B
  IN: 8, OUT: 9, W: 10, B: 11, X: 12, Y: 13,
  // attention: T queries at positions [POS, POS + T), H heads of HD, QB queries a part
  POS: 14, H: 15, HD: 16, QB: 17, Q: 18, K: 19, V: 20, O: 21, NORM: 22,
} as const;
const CTL_WORDS = 24;
/** Generations kept in a claim word's high half (gen << 16 | part). */
export const GEN_MASK = 0x7fff;
/** Below this many multiply-adds a call runs on the calling thread alone (waking the workers costs tens of µs). */
export const POOL_MIN_MACS = 1 << 16;
/**
 * A call whose parts make no progress for this long fails (a worker died holding a part). A part is
 * a thread's share of one product: OPT-30B's LM head over 2048 positions is ~30 s of it on 16 threads.
 */
const STALL_MS = 300_000;
/**
 * Checks of a control word before a thread sleeps on it (Atomics.wait; ~120 µs on the 2-core dev
 * machine): a sleeping thread takes tens of µs to wake, about what a decode step's small products
 * take, and they follow each other closely. Decode on 2 cores, ms/token: 18m 11.8 → 10.0, the 5m
 * demo 3.35 → 2.70 (no spin against this; 4× as many checks gained no more). Only where the threads
 * fit the cores: with 8 threads on 2 cores the spinning threads took the working ones' time (18m
 * 13.1 → 17 ms/token), so a pool with more threads than cores sleeps at once.
 */
export const SPIN = 1 << 14;

/** The outputs [o0, o1) of part `i` of `parts`: multiples of 4 where they can be (linear's widest tiles). */
export function outputRange(nOut: number, parts: number, i: number): [number, number] {
  const per = Math.ceil(nOut / parts / 4) * 4;
  return [Math.min(nOut, i * per), Math.min(nOut, (i + 1) * per)];
}

/**
 * Parts of a linear of nOut outputs on `threads` threads: LINEAR_PARTS_PER_THREAD a thread (at least
 * 4 outputs each), so the calling thread, which starts at once, takes more while a worker wakes.
 */
export const LINEAR_PARTS_PER_THREAD = 4;
export function linearParts(nOut: number, threads: number): number {
  return Math.max(1, Math.min(threads * LINEAR_PARTS_PER_THREAD, Math.floor(nOut / 4)));
}

/** Multiply-adds of attention over T queries at [pos, pos + T): scores and values, every head. */
export function attentionMacs(T: number, pos: number, H: number, hd: number): number {
  return 2 * H * hd * (T * pos + T * (T + 1) / 2);
}

/**
 * Queries a part of attention: 16 at most, fewer where that leaves fewer than 4 parts a thread, more
 * where parts would not fit a claim word's 16 bits.
 */
export function attentionBlock(T: number, H: number, threads: number): number {
  return Math.max(1, Math.ceil(T * H / 0x8000), Math.min(16, Math.floor(T * H / (4 * threads))));
}

/** How many parts attention's T queries of H heads make in blocks of qb queries. */
export function attentionParts(T: number, H: number, qb: number): number {
  return Math.ceil(T / qb) * H;
}

/**
 * Part `i` of attention: head h, queries [t0, t1). The last blocks of queries (the longest rows of
 * the causal triangle) come first, so the short ones claimed last even out the threads.
 */
export function attentionPart(T: number, H: number, qb: number, i: number): [number, number, number] {
  const b = Math.ceil(T / qb) - 1 - Math.floor(i / H);
  return [i % H, b * qb, Math.min(T, (b + 1) * qb)];
}

/**
 * The next job's generation, its claims closed until its fields are written: a worker still in the
 * last job's claimParts (woken late) reads that job's last claim word, which passes its generation
 * check, and would take the new part count from PARTS; so the claim word first moves to the new
 * generation with no part left to claim (0xffff: part counts stay below it), and only then are the
 * fields written and the claims opened (gen << 16).
 */
export function beginJob(ctl: Int32Array): number {
  const gen = (Atomics.load(ctl, CTL.GEN) + 1) & GEN_MASK;
  Atomics.store(ctl, CTL.NEXT, (gen << 16) | 0xffff);
  return gen;
}

/**
 * Claims and computes parts of the job of generation `gen` until none are left (both the calling
 * thread and the workers run this); returns how many it did.
 */
export function claimParts(ctl: Int32Array, gen: number, run: (part: number) => void): number {
  const parts = ctl[CTL.PARTS];
  let did = 0;
  for (;;) {
    const cur = Atomics.load(ctl, CTL.NEXT), part = cur & 0xffff;
    if (cur >>> 16 !== (gen & GEN_MASK) || part >= parts) return did;
    if (Atomics.compareExchange(ctl, CTL.NEXT, cur, cur + 1) !== cur) continue;
    try {
      run(part);
    } catch {
      Atomics.store(ctl, CTL.ERR, 1);   // the calling thread throws once every part has reported
    }
    did++;
    if (Atomics.add(ctl, CTL.DONE, 1) + 1 === parts) Atomics.notify(ctl, CTL.DONE);
  }
}

export class CpuPool {
  private readonly workers: Worker[] = [];
  private readonly ctl = new Int32Array(new SharedArrayBuffer(CTL_WORDS * 4));
  private readonly ids = new WeakMap<Float32Array, number>();
  private nextId = 0;
  /** Shared scratch: linear's x and attention's q; linear's y and attention's o; the head norms. */
  private x: Float32Array | null = null;
  private y: Float32Array | null = null;
  private norm: Float32Array | null = null;
  /** The calling thread's attention scores (each worker has its own). */
  private scores = new Float32Array(0);
  private closed = false;
  /** SPIN where the threads fit the machine's cores, else 0 (every thread sleeps at once). */
  readonly spin: number;
  /** Calls split over the threads (the others ran on the calling thread alone): tests check the pool ran. */
  readonly pooledCalls = { linear: 0, attention: 0 };

  /** `threads`: the calling thread plus threads − 1 workers. */
  constructor(readonly threads: number) {
    this.spin = threads <= availableParallelism() ? SPIN : 0;
    for (let i = 1; i < threads; i++) {
      const w = new Worker(new URL('./pool-worker.js', import.meta.url), { workerData: { ctl: this.ctl.buffer, gen0: Atomics.load(this.ctl, CTL.GEN), spin: this.spin } });
      w.unref();   // an idle pool never keeps the process alive
      // A worker that cannot start (its script missing from a bundle) or dies: the others, and the
      // calling thread, take its parts; calls after it stay on the calling thread.
      w.on('error', () => { this.closed = true; });
      w.on('exit', () => { this.closed = true; });
      this.workers.push(w);
    }
  }

  /** n floats of zeros in shared memory, known to every worker: a K/V cache attention reads. */
  zeros(n: number): Float32Array {
    const s = new Float32Array(new SharedArrayBuffer(Math.max(4, n * 4)), 0, n);
    this.register(s);
    return s;
  }

  /**
   * `a` in shared memory, known to every worker: pass it to linear as W or b. An array already at the
   * start of a SharedArrayBuffer (predictors read by loadPredictors: util/shared-memory.ts) is taken as
   * it is, so the runner and the caller hold it once; any other is copied.
   */
  share(a: Float32Array): Float32Array {
    if (a.buffer instanceof SharedArrayBuffer && a.byteOffset === 0) {
      if (!this.ids.has(a)) this.register(a);
      return a;
    }
    const s = this.zeros(a.length);
    s.set(a);
    return s;
  }

  private register(s: Float32Array): void {
    const id = this.nextId++;
    this.ids.set(s, id);
    for (const w of this.workers) w.postMessage({ id, buf: s.buffer, length: s.length });
  }

  /** Forgets a shared array (`share` / `zeros`): the workers drop their view of it, and linear then runs it on the calling thread. */
  drop(a: Float32Array): void {
    const id = this.ids.get(a);
    if (id === undefined) return;
    this.ids.delete(a);
    for (const w of this.workers) w.postMessage({ drop: id });
  }

  /** A shared scratch of at least n floats; a larger one replaces it (the workers drop the old one). */
  private scratch(cur: Float32Array | null, n: number): Float32Array {
    if (cur && cur.length >= n) return cur;
    if (cur) this.drop(cur);
    const s = new Float32Array(new SharedArrayBuffer(Math.max(4, n * 4)));
    this.register(s);
    return s;
  }

  /** Whether a job can go to the workers at all (the pool open, workers to take parts). */
  private get open(): boolean {
    return !this.closed && this.workers.length > 0;
  }

  /**
   * Runs a job of `parts` parts: `fields` writes its control words, the workers and the calling
   * thread claim the parts (`part` computes one here), and the calling thread waits for every part;
   * `what` and `job` name it in the errors.
   */
  private run(op: number, parts: number, fields: (c: Int32Array) => void, part: (i: number) => void, what: string, job: string): void {
    const c = this.ctl, gen = beginJob(c);
    c[CTL.OP] = op;
    fields(c);
    c[CTL.PARTS] = parts; c[CTL.DONE] = 0; c[CTL.ERR] = 0;
    Atomics.store(c, CTL.NEXT, gen << 16);
    Atomics.store(c, CTL.GEN, gen);
    Atomics.notify(c, CTL.GEN);
    claimParts(c, gen, part);
    for (let i = 0; i < this.spin && Atomics.load(c, CTL.DONE) < parts; i++);
    let seen = Atomics.load(c, CTL.DONE), since = Date.now();
    while (seen < parts) {
      Atomics.wait(c, CTL.DONE, seen, 1000);
      const now = Atomics.load(c, CTL.DONE);
      if (now !== seen) { seen = now; since = Date.now(); } else if (Date.now() - since > STALL_MS) {
        this.close();
        throw new Error(`${what}: a CPU worker thread stopped during ${job} (${parts - seen} of ${parts} parts unfinished)`);
      }
    }
    if (c[CTL.ERR]) throw new Error(`${what}: a CPU worker thread failed its part of ${job}`);
  }

  /** linear (kernels.ts), split over the threads where W (and b) were shared and the work is large enough. */
  linear(x: Float32Array, T: number, W: Float32Array, b: Float32Array | null, nIn: number, nOut: number, y: Float32Array = new Float32Array(T * nOut)): Float32Array {
    const wId = this.ids.get(W), bId = b ? this.ids.get(b) : -1;
    if (!this.open || wId === undefined || bId === undefined || T * nIn * nOut < POOL_MIN_MACS || nOut < 4 * this.threads) {
      return linear(x, T, W, b, nIn, nOut, y);
    }
    this.pooledCalls.linear++;
    const xs = this.x = this.scratch(this.x, T * nIn), ys = this.y = this.scratch(this.y, T * nOut);
    xs.set(x.subarray(0, T * nIn));
    const parts = linearParts(nOut, this.threads), xId = this.ids.get(xs)!, yId = this.ids.get(ys)!;
    this.run(OP.LINEAR, parts, (c) => {
      c[CTL.T] = T; c[CTL.IN] = nIn; c[CTL.OUT] = nOut; c[CTL.W] = wId; c[CTL.B] = bId; c[CTL.X] = xId; c[CTL.Y] = yId;
    }, (part) => { const [o0, o1] = outputRange(nOut, parts, part); linearRange(xs, T, W, b, nIn, nOut, ys, o0, o1); }, 'linear', 'a product');
    y.set(ys.subarray(0, T * nOut));
    return y;
  }

  /**
   * attention (kernels.ts), split over the threads by (head, block of queries) where the K/V caches
   * are shared (`zeros`) and the work is large enough; the same bits as attention.
   */
  attention(q: Float32Array, T: number, pos: number, kCache: Float32Array, vCache: Float32Array, H: number, hd: number, o: Float32Array = new Float32Array(T * H * hd), headNorm?: Float32Array): Float32Array {
    const kId = this.ids.get(kCache), vId = this.ids.get(vCache), qb = attentionBlock(T, H, this.threads), parts = attentionParts(T, H, qb);
    if (!this.open || kId === undefined || vId === undefined || attentionMacs(T, pos, H, hd) < POOL_MIN_MACS || parts < 2) {
      return attention(q, T, pos, kCache, vCache, H, hd, o, headNorm);
    }
    this.pooledCalls.attention++;
    const d = H * hd;
    const qs = this.x = this.scratch(this.x, T * d), os = this.y = this.scratch(this.y, T * d);
    const ns = headNorm ? (this.norm = this.scratch(this.norm, T * H)) : null;
    qs.set(q.subarray(0, T * d));
    if (this.scores.length < pos + T) this.scores = new Float32Array(pos + T);
    const scores = this.scores, qId = this.ids.get(qs)!, oId = this.ids.get(os)!, nId = ns ? this.ids.get(ns)! : -1;
    this.run(OP.ATTENTION, parts, (c) => {
      c[CTL.T] = T; c[CTL.POS] = pos; c[CTL.H] = H; c[CTL.HD] = hd; c[CTL.QB] = qb;
      c[CTL.Q] = qId; c[CTL.K] = kId; c[CTL.V] = vId; c[CTL.O] = oId; c[CTL.NORM] = nId;
    }, (part) => {
      const [h, t0, t1] = attentionPart(T, H, qb, part);
      attentionRange(qs, T, pos, kCache, vCache, H, hd, os, ns, h, h + 1, t0, t1, scores);
    }, 'attention', 'attention');
    o.set(os.subarray(0, T * d));
    if (headNorm) headNorm.set(ns!.subarray(0, T * H));
    return o;
  }

  /** Stops the workers (idempotent); linear and attention then run on the calling thread. */
  close(): void {
    if (this.closed && !this.workers.length) return;
    this.closed = true;
    Atomics.store(this.ctl, CTL.STOP, 1);
    Atomics.add(this.ctl, CTL.GEN, 1);
    Atomics.notify(this.ctl, CTL.GEN);
    for (const w of this.workers) void w.terminate();
    this.workers.length = 0;
  }
}

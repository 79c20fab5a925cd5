/**
 * The CPU backend's linear on several threads: the calling thread and worker threads claim parts of
 * the outputs (contiguous ranges, linearRange) until none are left, so the result is linear's to the
 * bit whatever the thread count, and a worker that is slow to wake, never started or has died only
 * leaves its parts to the others. Weights live in SharedArrayBuffers (`share`, once at load) that
 * every worker holds by id; a call copies x into a shared scratch, wakes the workers through one
 * Int32Array of control words (Atomics.wait / notify: no message a call) and copies y out. The
 * calling thread blocks until every part is done, as the single-threaded linear would.
 *
 * Claims carry the job's generation (NEXT holds gen << 16 | next part, taken by compareExchange), so
 * a worker that woke for an earlier job and read its fields cannot claim a part of a later one.
 */
import { Worker } from 'node:worker_threads';
import { linear, linearRange } from './kernels.js';

/** Control words: the job's generation (workers wait on it), stop, the job, claims and completions. */
export const CTL = { GEN: 0, STOP: 1, T: 2, IN: 3, OUT: 4, W: 5, B: 6, X: 7, Y: 8, ERR: 9, NEXT: 10, DONE: 11, PARTS: 12 } as const;
const CTL_WORDS = 16;
/** Generations kept in a claim word's high half (gen << 16 | part). */
export const GEN_MASK = 0x7fff;
/** Below this many multiply-adds a call runs on the calling thread alone (waking the workers costs tens of µs). */
export const POOL_MIN_MACS = 1 << 16;
/**
 * A call whose parts make no progress for this long fails (a worker died holding a part). A part is
 * a thread's share of one product: OPT-30B's LM head over 2048 positions is ~30 s of it on 16 threads.
 */
const STALL_MS = 300_000;

/** The outputs [o0, o1) of part `i` of `parts`: multiples of 4 where they can be (linear's widest tiles). */
export function outputRange(nOut: number, parts: number, i: number): [number, number] {
  const per = Math.ceil(nOut / parts / 4) * 4;
  return [Math.min(nOut, i * per), Math.min(nOut, (i + 1) * per)];
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

export class LinearPool {
  private readonly workers: Worker[] = [];
  private readonly ctl = new Int32Array(new SharedArrayBuffer(CTL_WORDS * 4));
  private readonly ids = new WeakMap<Float32Array, number>();
  private nextId = 0;
  private x: Float32Array | null = null;
  private y: Float32Array | null = null;
  private closed = false;
  /** Calls split over the threads (the others ran on the calling thread alone): tests check the pool ran. */
  pooledCalls = 0;

  /** `threads`: the calling thread plus threads − 1 workers. */
  constructor(readonly threads: number) {
    for (let i = 1; i < threads; i++) {
      const w = new Worker(new URL('./linear-worker.js', import.meta.url), { workerData: { ctl: this.ctl.buffer, gen0: Atomics.load(this.ctl, CTL.GEN) } });
      w.unref();   // an idle pool never keeps the process alive
      // A worker that cannot start (its script missing from a bundle) or dies: the others, and the
      // calling thread, take its parts; calls after it stay on the calling thread.
      w.on('error', () => { this.closed = true; });
      w.on('exit', () => { this.closed = true; });
      this.workers.push(w);
    }
  }

  /** A copy of `a` in shared memory, known to every worker: pass it to linear as W or b. */
  share(a: Float32Array): Float32Array {
    const s = new Float32Array(new SharedArrayBuffer(Math.max(4, a.byteLength)), 0, a.length);
    s.set(a);
    this.register(s);
    return s;
  }

  private register(s: Float32Array): void {
    const id = this.nextId++;
    this.ids.set(s, id);
    for (const w of this.workers) w.postMessage({ id, buf: s.buffer, length: s.length });
  }

  /** A shared scratch of at least n floats; a larger one replaces it (the workers drop the old one). */
  private scratch(cur: Float32Array | null, n: number): Float32Array {
    if (cur && cur.length >= n) return cur;
    if (cur) { const id = this.ids.get(cur)!; for (const w of this.workers) w.postMessage({ drop: id }); }
    const s = new Float32Array(new SharedArrayBuffer(n * 4));
    this.register(s);
    return s;
  }

  /** linear (kernels.ts), split over the threads where W (and b) were shared and the work is large enough. */
  linear(x: Float32Array, T: number, W: Float32Array, b: Float32Array | null, nIn: number, nOut: number, y: Float32Array = new Float32Array(T * nOut)): Float32Array {
    const wId = this.ids.get(W), bId = b ? this.ids.get(b) : -1;
    if (this.closed || !this.workers.length || wId === undefined || bId === undefined || T * nIn * nOut < POOL_MIN_MACS || nOut < 4 * this.threads) {
      return linear(x, T, W, b, nIn, nOut, y);
    }
    this.pooledCalls++;
    const xs = this.x = this.scratch(this.x, T * nIn), ys = this.y = this.scratch(this.y, T * nOut);
    xs.set(x.subarray(0, T * nIn));
    const c = this.ctl, parts = this.threads, gen = (Atomics.load(c, CTL.GEN) + 1) & GEN_MASK;
    c[CTL.T] = T; c[CTL.IN] = nIn; c[CTL.OUT] = nOut; c[CTL.W] = wId; c[CTL.B] = bId; c[CTL.X] = this.ids.get(xs)!; c[CTL.Y] = this.ids.get(ys)!;
    c[CTL.PARTS] = parts; c[CTL.DONE] = 0; c[CTL.ERR] = 0;
    Atomics.store(c, CTL.NEXT, gen << 16);
    Atomics.store(c, CTL.GEN, gen);
    Atomics.notify(c, CTL.GEN);
    claimParts(c, gen, (part) => { const [o0, o1] = outputRange(nOut, parts, part); linearRange(xs, T, W, b, nIn, nOut, ys, o0, o1); });
    let seen = Atomics.load(c, CTL.DONE), since = Date.now();
    while (seen < parts) {
      Atomics.wait(c, CTL.DONE, seen, 1000);
      const now = Atomics.load(c, CTL.DONE);
      if (now !== seen) { seen = now; since = Date.now(); } else if (Date.now() - since > STALL_MS) {
        this.close();
        throw new Error(`linear: a CPU worker thread stopped during a product (${parts - seen} of ${parts} parts unfinished)`);
      }
    }
    if (c[CTL.ERR]) throw new Error('linear: a CPU worker thread failed its part of a product');
    y.set(ys.subarray(0, T * nOut));
    return y;
  }

  /** Stops the workers (idempotent); linear then runs on the calling thread. */
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

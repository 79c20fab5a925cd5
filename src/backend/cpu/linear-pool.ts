/**
 * The CPU backend's linear on several threads: worker threads and the calling thread each compute a
 * contiguous range of the outputs (linearRange), so the result is linear's to the bit whatever the
 * thread count. Weights live in SharedArrayBuffers (`share`, once at load) that every worker holds
 * by id; a call copies x into a shared scratch, wakes the workers through one Int32Array of
 * control words (Atomics.wait / notify: no message a call) and copies y out. The calling thread
 * blocks until the workers are done, as the single-threaded linear would.
 */
import { Worker } from 'node:worker_threads';
import { linear, linearRange } from './kernels.js';

/** Control words: a generation counter the workers wait on, workers still running, then the job. */
export const CTL = { GEN: 0, PENDING: 1, STOP: 2, T: 3, IN: 4, OUT: 5, W: 6, B: 7, X: 8, Y: 9, ERR: 10 } as const;
const CTL_WORDS = 16;
/** Below this many multiply-adds a call runs on the calling thread alone (waking the workers costs tens of µs). */
export const POOL_MIN_MACS = 1 << 16;

/** The outputs [o0, o1) of part `i` of `parts` (part 0 is the calling thread's). */
export function outputRange(nOut: number, parts: number, i: number): [number, number] {
  const per = Math.ceil(nOut / parts);
  return [Math.min(nOut, i * per), Math.min(nOut, (i + 1) * per)];
}

export class LinearPool {
  private readonly workers: Worker[] = [];
  private readonly ctl = new Int32Array(new SharedArrayBuffer(CTL_WORDS * 4));
  private readonly ids = new WeakMap<Float32Array, number>();
  private nextId = 0;
  private x: Float32Array | null = null;
  private y: Float32Array | null = null;
  private closed = false;

  /** `threads`: the calling thread plus threads − 1 workers. */
  constructor(readonly threads: number) {
    for (let i = 1; i < threads; i++) {
      const w = new Worker(new URL('./linear-worker.js', import.meta.url), { workerData: { ctl: this.ctl.buffer, index: i, parts: threads, gen0: Atomics.load(this.ctl, CTL.GEN) } });
      w.unref();   // an idle pool never keeps the process alive
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

  /** A shared scratch of at least n floats (grown by doubling, re-registered when it grows). */
  private scratch(cur: Float32Array | null, n: number): Float32Array {
    if (cur && cur.length >= n) return cur;
    const s = new Float32Array(new SharedArrayBuffer(Math.max(n, 2 * (cur?.length ?? 0)) * 4));
    this.register(s);
    return s;
  }

  /** linear (kernels.ts), split over the threads where W (and b) were shared and the work is large enough. */
  linear(x: Float32Array, T: number, W: Float32Array, b: Float32Array | null, nIn: number, nOut: number, y: Float32Array = new Float32Array(T * nOut)): Float32Array {
    const wId = this.ids.get(W), bId = b ? this.ids.get(b) : -1;
    if (this.closed || !this.workers.length || wId === undefined || bId === undefined || T * nIn * nOut < POOL_MIN_MACS || nOut < this.threads) {
      return linear(x, T, W, b, nIn, nOut, y);
    }
    this.x = this.scratch(this.x, T * nIn);
    this.y = this.scratch(this.y, T * nOut);
    this.x.set(x.subarray(0, T * nIn));
    const c = this.ctl;
    c[CTL.T] = T; c[CTL.IN] = nIn; c[CTL.OUT] = nOut; c[CTL.W] = wId; c[CTL.B] = bId; c[CTL.X] = this.ids.get(this.x)!; c[CTL.Y] = this.ids.get(this.y)!;
    Atomics.store(c, CTL.PENDING, this.workers.length);
    Atomics.add(c, CTL.GEN, 1);
    Atomics.notify(c, CTL.GEN);
    const [o0, o1] = outputRange(nOut, this.threads, 0);
    linearRange(this.x, T, W, b, nIn, nOut, this.y, o0, o1);
    for (let p = Atomics.load(c, CTL.PENDING); p !== 0; p = Atomics.load(c, CTL.PENDING)) Atomics.wait(c, CTL.PENDING, p);
    if (Atomics.exchange(c, CTL.ERR, 0)) throw new Error('linear: a CPU worker thread failed its part');
    y.set(this.y.subarray(0, T * nOut));
    return y;
  }

  /** Stops the workers (idempotent); linear then runs on the calling thread. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    Atomics.store(this.ctl, CTL.STOP, 1);
    Atomics.add(this.ctl, CTL.GEN, 1);
    Atomics.notify(this.ctl, CTL.GEN);
    for (const w of this.workers) void w.terminate();
  }
}

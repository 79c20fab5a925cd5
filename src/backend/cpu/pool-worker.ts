/**
 * A CpuPool worker (pool.ts): holds the shared arrays it is sent, waits for a new job generation,
 * claims parts of the job (linear's outputs or attention's cells) until none are left, and waits again.
 */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { attentionRange, linearRange } from './kernels.js';
import { attentionPart, claimParts, CTL, OP, outputRange } from './pool.js';

const { ctl: buf, gen0, spin } = workerData as { ctl: SharedArrayBuffer; gen0: number; spin: number };
const ctl = new Int32Array(buf);
const arrays = new Map<number, Float32Array>();
/** This thread's attention scores. */
let scores = new Float32Array(0);

/** Takes every registration (and drop) queued so far: the calling thread posts them before the job that needs them. */
function drain(): void {
  for (let m = receiveMessageOnPort(parentPort!); m; m = receiveMessageOnPort(parentPort!)) {
    const msg = m.message as { id: number; buf: SharedArrayBuffer; length: number } | { drop: number };
    if ('drop' in msg) arrays.delete(msg.drop);
    else arrays.set(msg.id, new Float32Array(msg.buf, 0, msg.length));
  }
}

function get(id: number): Float32Array {
  const a = arrays.get(id);
  if (!a) throw new Error(`CPU pool worker: array ${id} was never shared`);
  return a;
}

/** The current job's part function, from its fields as read now (a claim succeeds only if they are still this generation's: claimParts). */
function job(): (part: number) => void {
  const T = ctl[CTL.T], parts = ctl[CTL.PARTS];
  if (ctl[CTL.OP] === OP.ATTENTION) {
    const pos = ctl[CTL.POS], H = ctl[CTL.H], hd = ctl[CTL.HD], qb = ctl[CTL.QB];
    const qId = ctl[CTL.Q], kId = ctl[CTL.K], vId = ctl[CTL.V], oId = ctl[CTL.O], nId = ctl[CTL.NORM];
    return (part) => {
      const [h, t0, t1] = attentionPart(T, H, qb, part);
      if (scores.length < pos + T) scores = new Float32Array(pos + T);
      attentionRange(get(qId), T, pos, get(kId), get(vId), H, hd, get(oId), nId >= 0 ? get(nId) : null, h, h + 1, t0, t1, scores);
    };
  }
  const nIn = ctl[CTL.IN], nOut = ctl[CTL.OUT], wId = ctl[CTL.W], bId = ctl[CTL.B], xId = ctl[CTL.X], yId = ctl[CTL.Y];
  return (part) => {
    const [o0, o1] = outputRange(nOut, parts, part);
    linearRange(get(xId), T, get(wId), bId >= 0 ? get(bId) : null, nIn, nOut, get(yId), o0, o1);
  };
}

// From the generation at the pool's construction: a job posted before this thread started is not missed.
let gen = gen0;
for (;;) {
  // A short spin before sleeping (pool.ts, SPIN; 0 where the threads outnumber the cores): Atomics.wait
  // returns at once if GEN moved meanwhile.
  for (let i = 0; i < spin && Atomics.load(ctl, CTL.GEN) === gen; i++);
  Atomics.wait(ctl, CTL.GEN, gen);
  gen = Atomics.load(ctl, CTL.GEN);
  if (Atomics.load(ctl, CTL.STOP)) break;
  drain();
  claimParts(ctl, gen, job());
}

/**
 * A LinearPool worker (linear-pool.ts): holds the shared arrays it is sent, waits for a new job
 * generation, claims parts of the outputs until none are left, and waits again.
 */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { linearRange } from './kernels.js';
import { claimParts, CTL, outputRange } from './linear-pool.js';

const { ctl: buf, gen0 } = workerData as { ctl: SharedArrayBuffer; gen0: number };
const ctl = new Int32Array(buf);
const arrays = new Map<number, Float32Array>();

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
  if (!a) throw new Error(`linear worker: array ${id} was never shared`);
  return a;
}

// From the generation at the pool's construction: a job posted before this thread started is not missed.
let gen = gen0;
for (;;) {
  Atomics.wait(ctl, CTL.GEN, gen);
  gen = Atomics.load(ctl, CTL.GEN);
  if (Atomics.load(ctl, CTL.STOP)) break;
  drain();
  // The job's fields as read now; a claim succeeds only if they are still this generation's (claimParts).
  const T = ctl[CTL.T], nIn = ctl[CTL.IN], nOut = ctl[CTL.OUT], wId = ctl[CTL.W], bId = ctl[CTL.B], xId = ctl[CTL.X], yId = ctl[CTL.Y], parts = ctl[CTL.PARTS];
  claimParts(ctl, gen, (part) => {
    const [o0, o1] = outputRange(nOut, parts, part);
    linearRange(get(xId), T, get(wId), bId >= 0 ? get(bId) : null, nIn, nOut, get(yId), o0, o1);
  });
}

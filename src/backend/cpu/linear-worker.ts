/**
 * A LinearPool worker (linear-pool.ts): holds the shared arrays it is sent, waits on the control
 * words' generation, computes its part of the outputs, and counts itself done.
 */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { linearRange } from './kernels.js';
import { CTL, outputRange } from './linear-pool.js';

const { ctl: buf, index, parts, gen0 } = workerData as { ctl: SharedArrayBuffer; index: number; parts: number; gen0: number };
const ctl = new Int32Array(buf);
const arrays = new Map<number, Float32Array>();

/** Takes every registration queued so far (the calling thread posts them before the job that needs them). */
function drain(): void {
  for (let m = receiveMessageOnPort(parentPort!); m; m = receiveMessageOnPort(parentPort!)) {
    const { id, buf: b, length } = m.message as { id: number; buf: SharedArrayBuffer; length: number };
    arrays.set(id, new Float32Array(b, 0, length));
  }
}

function get(id: number): Float32Array {
  let a = arrays.get(id);
  if (!a) { drain(); a = arrays.get(id); }
  if (!a) throw new Error(`linear worker ${index}: array ${id} was never shared`);
  return a;
}

// From the generation at the pool's construction: a job posted before this thread started is not missed.
let gen = gen0;
for (;;) {
  Atomics.wait(ctl, CTL.GEN, gen);
  gen = Atomics.load(ctl, CTL.GEN);
  if (Atomics.load(ctl, CTL.STOP)) break;
  try {
    drain();
    const T = ctl[CTL.T], nIn = ctl[CTL.IN], nOut = ctl[CTL.OUT], bId = ctl[CTL.B];
    const [o0, o1] = outputRange(nOut, parts, index);
    if (o1 > o0) linearRange(get(ctl[CTL.X]), T, get(ctl[CTL.W]), bId >= 0 ? get(bId) : null, nIn, nOut, get(ctl[CTL.Y]), o0, o1);
  } catch {
    Atomics.store(ctl, CTL.ERR, 1);   // the calling thread throws once every part has reported
  } finally {
    if (Atomics.sub(ctl, CTL.PENDING, 1) === 1) Atomics.notify(ctl, CTL.PENDING);
  }
}

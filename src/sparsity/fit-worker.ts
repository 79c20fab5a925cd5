/** A FitPool worker (fit-pool.ts): fits the layers it is sent, one at a time. */
import { parentPort } from 'node:worker_threads';
import { DejavuError } from '../util/errors.js';
import { fitLayerInit, type FitJob } from './fit-pool.js';

parentPort!.on('message', ({ id, job }: { id: number; job: FitJob }) => {
  try {
    const p = fitLayerInit(job);
    parentPort!.postMessage({ id, ok: true, p }, [...new Set([p.A.buffer, p.B.buffer, p.bias.buffer])] as ArrayBuffer[]);
  } catch (e) {
    parentPort!.postMessage({ id, ok: false, message: e instanceof Error ? e.message : String(e), dejavu: e instanceof DejavuError });
  }
});

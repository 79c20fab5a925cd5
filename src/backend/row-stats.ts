/**
 * RowStats (Runner.forwardStats) on the host: the checks both runners make on a request, the float64
 * computation the CPU runner returns (the WebGPU kernel's twin, kernels/row-stats.ts), and the
 * masking of rows a request left out.
 */
import { argmaxRow, klRow, logSumExp } from '../eval/logprob.js';
import { fail } from '../util/errors.js';
import type { RowStats, StatsOptions } from './types.js';

/**
 * `refRows`: the rows of the reference the last `keep` left, or null when there is none; `pos` and
 * `maxPositions`: the runner's position and context (checked here as forward checks them, before
 * anything is written for the request).
 */
export function checkStatsRequest(ids: number[], opts: StatsOptions, V: number, refRows: number | null, pos: number, maxPositions: number): void {
  if (pos + ids.length > maxPositions) fail(`sequence of ${pos + ids.length} tokens is longer than the model's context of ${maxPositions}`);
  if (opts.targets.length !== ids.length) fail(`forwardStats: ${opts.targets.length} targets for ${ids.length} tokens`);
  for (const t of opts.targets) if (!(Number.isInteger(t) && t >= 0 && t < V)) fail(`forwardStats: target ${t} is outside the vocabulary of ${V}`);
  if (opts.from !== undefined && !(Number.isInteger(opts.from) && opts.from >= 0 && opts.from <= ids.length)) fail(`forwardStats: from ${opts.from} is not a row of ${ids.length}`);
  if (opts.keep && opts.kl) fail('forwardStats: keep and kl in one forward (the KL is taken against a reference kept before)');
  if (opts.kl && refRows !== ids.length) fail(`forwardStats: kl needs a reference of ${ids.length} rows kept by an earlier forwardStats with keep (${refRows === null ? 'none kept' : `${refRows} kept`})`);
}

/**
 * RowStats of rows [0, rows) of `logits` in float64 (the CPU backend's forwardStats, and the twin of
 * the WebGPU kernel kernels/row-stats.ts); with `ref` ((rows, V) of a reference forward) also
 * KL(ref ‖ logits) a row. Rows before `from` are skipped (maskRows).
 */
export function rowStatsOf(logits: Float32Array, rows: number, V: number, targets: number[], ref: Float32Array | null = null, from = 0): RowStats {
  if (targets.length !== rows) throw new Error(`rowStatsOf: ${targets.length} targets for ${rows} rows`);
  if (ref && ref.length < rows * V) throw new Error(`rowStatsOf: the reference has ${ref.length / V} rows, not ${rows}`);
  const lse = new Float64Array(rows), target = new Float64Array(rows), argmax = new Int32Array(rows), kl = ref ? new Float64Array(rows) : null;
  maskRows({ lse, target, argmax, kl }, from);
  for (let t = from; t < rows; t++) {
    lse[t] = logSumExp(logits, t, V);
    target[t] = logits[t * V + targets[t]];
    argmax[t] = argmaxRow(logits, t, V);
    if (kl) kl[t] = klRow(ref!, logits, t, V);
  }
  return { lse, target, argmax, kl };
}

/** Rows before `from` of a RowStats marked as not computed: NaN, and argmax -1. */
export function maskRows(s: RowStats, from: number): void {
  for (let t = 0; t < from; t++) {
    s.lse[t] = NaN; s.target[t] = NaN; s.argmax[t] = -1;
    if (s.kl) s.kl[t] = NaN;
  }
}

/** The checks both runners make on a forwardStats request (Runner.forwardStats). */
import { fail } from '../util/errors.js';
import type { StatsOptions } from './types.js';

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

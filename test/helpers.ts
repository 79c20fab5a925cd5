import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NodeFileSource } from '../src/model/node-source.js';
import { loadCheckpoint, type Checkpoint } from '../src/model/checkpoint.js';
import { seededRandom } from '../src/util/random.js';
import { argmax } from '../src/engine/sampler.js';
import type { Runner } from '../src/backend/types.js';
import { decodeGreedyOnHost } from '../src/backend/cpu/runner.js';

/** Repository root (tests run from dist/test). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** ../shared beside the checkout: models and data are read there, never copied. */
export const SHARED = join(ROOT, '..', 'shared');
export const MODELS = {
  '5m': join(ROOT, 'models', 'opt-gutenberg-5m'),
  '18m': join(SHARED, 'models', 'opt-gutenberg-18m'),
  '50m': join(SHARED, 'models', 'opt-gutenberg-50m'),
};
export const DATA = join(SHARED, 'data');
export const hasShared = existsSync(join(SHARED, 'models'));

const cache = new Map<string, Promise<Checkpoint>>();
/** Loads a checkpoint once per test process. */
export function checkpoint(dir: string): Promise<Checkpoint> {
  let p = cache.get(dir);
  if (!p) {
    p = NodeFileSource.open(dir).then(async (src) => { const c = await loadCheckpoint(src); await src.close(); return c; });
    cache.set(dir, p);
  }
  return p;
}

export const rng = seededRandom;

export function randomArray(n: number, r: () => number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}

export interface ReferenceEntry {
  prompt: string;
  input_ids: number[];
  last_logits_top10_ids: number[];
  last_logits_top10_values: number[];
  greedy_new_ids: number[];
  greedy_text: string;
}

/** Relative L2 error of a against the reference b. */
export function relErr(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let n = 0, d = 0;
  for (let i = 0; i < a.length; i++) { n += (a[i] - b[i]) ** 2; d += b[i] ** 2; }
  return Math.sqrt(n / Math.max(d, 1e-30));
}

/** The four prompts of a model folder's reference.json (Hugging Face's ids, logits and greedy tokens). */
export function reference(dir: string): ReferenceEntry[] {
  return JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8')).reference as ReferenceEntry[];
}

/** n greedy tokens decoded from `logits` (the last position's), feeding each back into the runner. */
export async function greedyContinue(runner: Runner, logits: Float32Array, n: number): Promise<number[]> {
  const got: number[] = [];
  for (let i = 0; i < n; i++) {
    const next = argmax(logits);
    got.push(next);
    if (i + 1 < n) logits = await runner.forward([next]);
  }
  return got;
}

/** `r` with decodeGreedy as the per-step host loop (logits read back, argmax on the host): the path
 *  generate() took for greedy before decoding was chained on the device. */
export function hostGreedy(r: Runner): Runner {
  return {
    backend: r.backend, config: r.config, description: r.description,
    get position() { return r.position; },
    forward: (ids, o) => r.forward(ids, o), forwardStats: (ids, o) => r.forwardStats(ids, o),
    decodeGreedy: (first, n, onToken, sampling) => decodeGreedyOnHost(r, first, n, onToken, sampling),
    reset: () => r.reset(), setSparsity: (p) => r.setSparsity(p), dispose: () => r.dispose(),
    mlpDensity: () => r.mlpDensity(), resetMlpDensity: () => r.resetMlpDensity(), setBlockThresholds: (t) => r.setBlockThresholds(t),
  };
}

/** Runs the built CLI (`dejavu ...args`) in a child process. */
export function runCli(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'src', 'cli.js'), ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A bad-input failure: exactly one line on stderr matching `pattern`, nothing on stdout, exit 1. */
export function oneLineError(r: ReturnType<typeof runCli>, pattern: RegExp): void {
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, pattern);
}

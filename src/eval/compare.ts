/**
 * Dense versus sparse on the same inputs and the same runner: the quality cost of a sparsity policy.
 * Each function switches the runner between `null` (dense) and `policy` itself, resetting the KV cache
 * between runs, and leaves the runner DENSE when it returns.
 */
import type { Runner } from '../backend/types.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import type { SparsityPolicy } from '../sparsity/policy.js';
import { scoredTokens } from './corpus.js';
import { lambada, type LambadaResult } from './lambada.js';
import { multipleChoice, type McResult } from './multiple-choice.js';
import { prepareWindows, pplResult, windowNll, windowStats, type HostReference, type PerplexityOptions, type PerplexityResult } from './perplexity.js';
import type { ProgressFn } from './progress.js';
import type { McItem, Request } from './tasks.js';

export interface PerplexityComparison {
  dense: PerplexityResult;
  sparse: PerplexityResult;
  /** Fraction of scored positions where dense and sparse have the same most likely next token. */
  top1Agreement: number;
  /** Mean KL(dense || sparse) of the next-token distributions per scored position, in nats. */
  kl: number;
  tokens: number;
  /** Measured mean MLP density of the sparse runs (runner.mlpDensity, token-weighted over windows). */
  mlpDensity: number;
}

/** Mean over the sparse layers of the runner's measured per-layer density. */
export async function measuredDensity(runner: Runner): Promise<number> {
  const m = (await runner.mlpDensity()).filter((v): v is number => v !== null);
  return m.length ? m.reduce((a, v) => a + v, 0) / m.length : NaN;
}

/** Perplexity both ways, window by window, plus agreement and KL between the two distributions. */
export async function comparePerplexity(runner: Runner, tokenizer: TextTokenizer, text: string, policy: SparsityPolicy, opts: PerplexityOptions = {}): Promise<PerplexityComparison> {
  const { windows, window } = prepareWindows(runner, tokenizer, text, opts);
  const total = scoredTokens(windows);
  let denseNll = 0, sparseNll = 0, agree = 0, kl = 0, done = 0, density = 0, densityTokens = 0;
  opts.onProgress?.(0, total);
  try {
    const host: HostReference = { logits: null };
    for (const ids of windows) {
      runner.setSparsity(null);
      const d = await windowStats(runner, ids, { decode: opts.decode, keep: true }, host);
      runner.setSparsity(policy);
      const s = await windowStats(runner, ids, { decode: opts.decode, kl: true }, host);
      density += (await measuredDensity(runner)) * ids.length; densityTokens += ids.length;
      denseNll += windowNll(d, ids.length);
      sparseNll += windowNll(s, ids.length);
      for (let t = 0; t + 1 < ids.length; t++) {
        if (d.argmax[t] === s.argmax[t]) agree++;
        kl += s.kl![t];
      }
      done += ids.length - 1;
      opts.onProgress?.(done, total);
    }
  } finally {
    runner.setSparsity(null);
  }
  return {
    dense: pplResult(denseNll, total, windows.length, window),
    sparse: pplResult(sparseNll, total, windows.length, window),
    top1Agreement: agree / total, kl: kl / total, tokens: total, mlpDensity: density / densityTokens,
  };
}

/** Runs `fn` dense then sparse; progress counts both passes. */
async function bothWays<R>(runner: Runner, policy: SparsityPolicy, n: number, onProgress: ProgressFn | undefined,
  fn: (p: ProgressFn) => Promise<R>): Promise<{ dense: R; sparse: R; mlpDensity: number }> {
  try {
    runner.setSparsity(null);
    const dense = await fn((d) => onProgress?.(d, 2 * n));
    runner.setSparsity(policy);
    const sparse = await fn((d) => onProgress?.(n + d, 2 * n));
    return { dense, sparse, mlpDensity: await measuredDensity(runner) };
  } finally {
    runner.setSparsity(null);
  }
}

export interface McComparison {
  dense: McResult;
  sparse: McResult;
  /** Fraction of items where dense and sparse pick the same choice (raw log-likelihood). */
  agreement: number;
  mlpDensity: number;
}

export async function compareMultipleChoice(runner: Runner, tokenizer: TextTokenizer, items: McItem[], policy: SparsityPolicy, onProgress?: ProgressFn, decode = false): Promise<McComparison> {
  const { dense, sparse, mlpDensity } = await bothWays(runner, policy, items.length, onProgress, (p) => multipleChoice(runner, tokenizer, items, p, decode));
  const same = dense.predictions.filter((c, i) => c === sparse.predictions[i]).length;
  return { dense, sparse, agreement: same / Math.max(1, items.length), mlpDensity };
}

export interface LambadaComparison {
  dense: LambadaResult;
  sparse: LambadaResult;
  /** Fraction of items where both are right or both are wrong. */
  agreement: number;
  mlpDensity: number;
}

export async function compareLambada(runner: Runner, tokenizer: TextTokenizer, items: Request[], policy: SparsityPolicy, onProgress?: ProgressFn, decode = false): Promise<LambadaComparison> {
  const { dense, sparse, mlpDensity } = await bothWays(runner, policy, items.length, onProgress, (p) => lambada(runner, tokenizer, items, p, decode));
  const same = dense.correct.filter((c, i) => c === sparse.correct[i]).length;
  return { dense, sparse, agreement: same / Math.max(1, items.length), mlpDensity };
}

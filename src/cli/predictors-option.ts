import type { Command } from 'commander';
import type { Model } from '../engine/model.js';
import type { Checkpoint } from '../model/checkpoint.js';
import { loadPredictors, type Selection, type SparsePart } from '../sparsity/predictors-io.js';
import { hasSparseHeads, hasSparseMlp, parseHeadKv, type SparsityPolicy } from '../sparsity/policy.js';
import { fail } from '../util/errors.js';
import { floatArg } from './common.js';

/** --predictors DIR [--sparse mlp,heads] [--mlp-density D] [--head-density H]: run sparsely with trained predictors. */
export function predictorOptions(cmd: Command): Command {
  return cmd
    .option('--predictors <dir>', 'trained predictors (from train-predictors): run the MLPs (and with --sparse heads, attention heads) sparsely')
    .option('--sparse <parts>', 'what the predictors make sparse: mlp | heads | mlp,heads (heads: decode tokens only; needs predictors trained with --heads)', 'mlp')
    .option('--mlp-density <d>', 'override the calibration: fraction of MLP neurons per sparse layer (top-K, or with --selection block cap = ceil(d * 64) a block)', floatArg('--mlp-density', 0, 1))
    .option('--selection <how>', 'auto (the calibrated block rule when the predictors have one, else top-K) | block | topk', 'auto')
    .option('--head-density <d>', 'override the calibration: fraction of attention heads every layer computes (with --sparse heads)', floatArg('--head-density', 0, 1))
    .option('--head-kv <which>', 'with --sparse heads: all (every head stores K/V, default) | chosen (unchosen heads skip K/V too) | lazy (chosen, with every head\'s K/V completed every second step: the output of all)', 'all');
}

export interface PredictorFlags { predictors?: string; sparse?: string; mlpDensity?: number; selection?: string; headDensity?: number; headKv?: string }

/** The parts of --sparse, checked (one-line errors for anything but mlp and heads). */
export function sparseParts(s: string | undefined): SparsePart[] {
  const parts = (s ?? 'mlp').split(',').map((p) => p.trim()).filter(Boolean);
  if (parts.length === 0 || parts.some((p) => p !== 'mlp' && p !== 'heads')) fail(`--sparse must be mlp, heads or mlp,heads (got ${s})`);
  return [...new Set(parts)] as SparsePart[];
}

/**
 * The sparsity policy of a predictors folder for this checkpoint (one-line errors for a folder made
 * for another model). Says so on stderr when the manifest keeps every layer dense, since the run would
 * then be dense however the densities are set.
 */
export async function loadPolicy(dir: string, ck: Checkpoint, o: Omit<PredictorFlags, 'predictors'> = {}): Promise<SparsityPolicy> {
  const parts = sparseParts(o.sparse);
  if (o.headDensity !== undefined && !parts.includes('heads')) fail('--head-density needs --sparse heads (or mlp,heads)');
  const policy = (await loadPredictors(dir, ck)).policy({
    mlpDensity: o.mlpDensity, selection: o.selection as Selection | undefined, parts, headDensity: o.headDensity, headKv: o.headKv === undefined ? undefined : parseHeadKv(o.headKv),
  });
  if (!hasSparseMlp(policy) && !hasSparseHeads(policy)) {
    process.stderr.write(`dejavu: the predictors in ${dir} keep every layer dense (see its manifest.json); running dense\n`);
  }
  return policy;
}

export async function applyPredictors(model: Model, o: PredictorFlags): Promise<void> {
  if (o.predictors) model.setSparsity(await loadPolicy(o.predictors, model.checkpoint, o));
}

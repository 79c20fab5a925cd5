import type { Command } from 'commander';
import type { Model } from '../engine/model.js';
import type { Checkpoint } from '../model/checkpoint.js';
import { loadPredictors, type Selection } from '../sparsity/predictors-io.js';
import type { SparsityPolicy } from '../sparsity/policy.js';
import { floatArg } from './common.js';

/** --predictors DIR [--mlp-density D]: run MLPs sparsely with trained predictors. */
export function predictorOptions(cmd: Command): Command {
  return cmd
    .option('--predictors <dir>', 'trained MLP predictors (from train-predictors): run the MLPs sparsely')
    .option('--mlp-density <d>', 'override the calibration: fraction of MLP neurons per sparse layer (top-K, or with --selection block cap = ceil(d * 64) a block)', floatArg('--mlp-density', 0, 1))
    .option('--selection <how>', 'auto (the calibrated block rule when the predictors have one, else top-K) | block | topk', 'auto');
}

export interface PredictorFlags { predictors?: string; mlpDensity?: number; selection?: string }

/**
 * The sparsity policy of a predictors folder for this checkpoint (one-line errors for a folder made
 * for another model). Says so on stderr when the manifest keeps every layer dense, since the run would
 * then be dense however --mlp-density is set.
 */
export async function loadPolicy(dir: string, ck: Checkpoint, o: Omit<PredictorFlags, 'predictors'> = {}): Promise<SparsityPolicy> {
  const policy = (await loadPredictors(dir, ck)).policy({ mlpDensity: o.mlpDensity, selection: o.selection as Selection | undefined });
  if (policy.mlp.every((p) => p === null)) {
    process.stderr.write(`dejavu: the predictors in ${dir} keep every layer dense (see its manifest.json); running dense\n`);
  }
  return policy;
}

export async function applyPredictors(model: Model, o: PredictorFlags): Promise<void> {
  if (o.predictors) model.setSparsity(await loadPolicy(o.predictors, model.checkpoint, o));
}

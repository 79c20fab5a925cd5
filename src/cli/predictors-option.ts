import type { Command } from 'commander';
import type { Model } from '../engine/model.js';
import type { Checkpoint } from '../model/checkpoint.js';
import { loadPredictors } from '../sparsity/predictors-io.js';
import type { SparsityPolicy } from '../sparsity/policy.js';
import { floatArg } from './common.js';

/** --predictors DIR [--mlp-density D]: run MLPs sparsely with trained predictors. */
export function predictorOptions(cmd: Command): Command {
  return cmd
    .option('--predictors <dir>', 'trained MLP predictors (from train-predictors): run the MLPs sparsely')
    .option('--mlp-density <d>', 'override the calibrated top-K: fraction of MLP neurons per sparse layer', floatArg('--mlp-density', 0, 1));
}

/**
 * The sparsity policy of a predictors folder for this checkpoint (one-line errors for a folder made
 * for another model). Says so on stderr when the manifest keeps every layer dense, since the run would
 * then be dense however --mlp-density is set.
 */
export async function loadPolicy(dir: string, ck: Checkpoint, mlpDensity?: number): Promise<SparsityPolicy> {
  const policy = (await loadPredictors(dir, ck)).policy({ mlpDensity });
  if (policy.mlp.every((p) => p === null)) {
    process.stderr.write(`dejavu: the predictors in ${dir} keep every layer dense (see its manifest.json); running dense\n`);
  }
  return policy;
}

export async function applyPredictors(model: Model, o: { predictors?: string; mlpDensity?: number }): Promise<void> {
  if (o.predictors) model.setSparsity(await loadPolicy(o.predictors, model.checkpoint, o.mlpDensity));
}

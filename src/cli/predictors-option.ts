import type { Command } from 'commander';
import type { Model } from '../engine/model.js';
import { floatArg } from './common.js';
import type { Checkpoint } from '../model/checkpoint.js';
import type { SparsityPolicy } from '../sparsity/policy.js';

type PredictorsIo = { loadPredictors(dir: string, ck: Checkpoint): Promise<{ policy(o: { mlpDensity?: number }): SparsityPolicy }> };

/** --predictors DIR [--mlp-density D]: run MLPs sparsely with trained predictors. */
export function predictorOptions(cmd: Command): Command {
  return cmd
    .option('--predictors <dir>', 'trained MLP predictors (from train-predictors): run the MLPs sparsely')
    .option('--mlp-density <d>', 'override the calibrated top-K: fraction of MLP neurons per sparse layer', floatArg('--mlp-density', 0, 1));
}

export async function applyPredictors(model: Model, o: { predictors?: string; mlpDensity?: number }): Promise<void> {
  if (!o.predictors) return;
  const { loadPredictors } = (await import('../sparsity/predictors-io.js' as string)) as PredictorsIo;
  const set = await loadPredictors(o.predictors, model.checkpoint);
  model.setSparsity(set.policy({ mlpDensity: o.mlpDensity }));
}

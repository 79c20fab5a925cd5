#!/usr/bin/env node
// dejavu's one command-line entry: each subcommand lives in src/cli/<name>.ts.
import { Command } from 'commander';
import { register as generate } from './cli/generate.js';
import { register as info } from './cli/info.js';
import { register as evaluate } from './cli/eval.js';
import { register as analyze } from './cli/analyze.js';
import { register as bench } from './cli/bench.js';
import { register as trainPredictors } from './cli/train-predictors.js';
import { register as serve } from './cli/serve.js';

const program = new Command('dejavu')
  .description('Fast OPT inference through contextual sparsity (DejaVu), on WebGPU or the CPU')
  .showHelpAfterError(false)
  .configureOutput({ outputError: (s, write) => write(`dejavu: ${s.replace(/^error: /, '').trim()}\n`) });

for (const reg of [generate, info, analyze, evaluate, bench, trainPredictors, serve]) reg(program);

await program.parseAsync(process.argv);

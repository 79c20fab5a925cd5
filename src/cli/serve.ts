/**
 * `dejavu serve`: the model behind an OpenAI-compatible HTTP API (src/server/). Loads the model once,
 * prints one line saying where it listens, and on SIGINT or SIGTERM stops listening, lets the running
 * generation stop, disposes the model and exits 0. A second Ctrl-C kills it at once.
 */
import { InvalidArgumentError, type Command } from 'commander';
import { loadModel } from '../engine/model.js';
import { modelLabel } from '../model/hf-cache.js';
import { createServer } from '../server/http.js';
import { action, DEMO_MODEL, loadOptions, modelOptions } from './common.js';
import { applyPredictors, predictorOptions, type PredictorFlags } from './predictors-option.js';

interface ServeFlags extends PredictorFlags {
  model?: string; backend: string; kvCache: string; host: string; port: number; modelName?: string;
}

function portArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('--port must be an integer in [0, 65535]');
  return n;
}

export function register(program: Command): void {
  const cmd = program.command('serve').description('serve the model over an OpenAI-compatible HTTP API (docs/server.md)');
  modelOptions(cmd)
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0: any free port)', portArg, 8000)
    .option('--model-name <name>', 'the model id clients send and /v1/models lists (default: the model folder\'s name, or the hub id as given)');
  predictorOptions(cmd);
  cmd.action(action(async (o: ServeFlags) => {
    const dir = o.model ?? DEMO_MODEL;
    const model = await loadModel(dir, loadOptions(o));
    await applyPredictors(model, o);
    const server = createServer(model, {
      modelName: o.modelName ?? modelLabel(dir),
      log: (line) => process.stderr.write(`dejavu serve: ${line}\n`),
    });
    // Signals are watched before listening so that one arriving in between still shuts down cleanly.
    const stop = new Promise<string>((r) => {
      process.once('SIGINT', () => r('SIGINT'));
      process.once('SIGTERM', () => r('SIGTERM'));
    });
    const url = await server.listen(o.port, o.host);
    process.stdout.write(`dejavu: serving ${server.modelName} at ${url}/v1 (${model.runner.description}); Ctrl-C stops\n`);
    const signal = await stop;
    process.stderr.write(`dejavu: ${signal}: shutting down\n`);
    await server.close();
    model.dispose();
  }));
}

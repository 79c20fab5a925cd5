import type { Command } from 'commander';
import { loadModel } from '../engine/model.js';
import { action, DEMO_MODEL, floatArg, intArg, loadOptions, modelOptions } from './common.js';
import { applyPredictors, predictorOptions } from './predictors-option.js';

interface GenerateFlags {
  model?: string; backend: string; kvCache: string; maxTokens: number; temperature: number; topK?: number; topP?: number;
  seed?: number; json?: boolean; stop?: string[]; predictors?: string; mlpDensity?: number; selection?: string;
}

export function register(program: Command): void {
  const cmd = program.command('generate')
    .description('generate text from a prompt (streams the text to stdout)')
    .argument('<prompt>', 'the prompt text');
  modelOptions(cmd)
    .option('--max-tokens <n>', 'tokens to generate at most', intArg('--max-tokens'), 64)
    .option('--temperature <t>', 'sampling temperature; 0 is greedy', floatArg('--temperature', 0), 0)
    .option('--top-k <k>', 'sample from the k most likely tokens', intArg('--top-k'))
    .option('--top-p <p>', 'nucleus sampling threshold', floatArg('--top-p', 0, 1))
    .option('--seed <s>', 'random seed for sampling', intArg('--seed'))
    .option('--stop <text...>', 'stop when the text contains this string')
    .option('--json', 'print one JSON object with ids, text and timings instead of streaming');
  predictorOptions(cmd);
  cmd.action(action(async (prompt: string, o: GenerateFlags) => {
    const model = await loadModel(o.model ?? DEMO_MODEL, loadOptions(o));
    await applyPredictors(model, o);
    const gen = model.generate(prompt, {
      maxTokens: o.maxTokens, temperature: o.temperature, topK: o.topK, topP: o.topP, seed: o.seed, stop: o.stop,
    });
    for await (const piece of gen) if (!o.json) process.stdout.write(piece);
    const r = await gen.result;
    if (o.json) {
      process.stdout.write(JSON.stringify({
        prompt_ids: r.promptIds, generated_ids: r.generatedIds, text: r.text,
        prefill_ms: round(r.prefillMs), decode_ms_per_token: round(r.decodeMsPerToken),
        backend: model.runner.backend, finish_reason: r.finishReason,
      }) + '\n');
    } else {
      process.stdout.write('\n');
      process.stderr.write(`[${model.runner.description}] prefill ${r.promptIds.length} tokens in ${r.prefillMs.toFixed(1)} ms, ` +
        `decode ${r.decodeMsPerToken.toFixed(2)} ms/token\n`);
    }
    model.dispose();
  }));
}

const round = (x: number) => Math.round(x * 1000) / 1000;

import type { Command } from 'commander';
import { adapterName, probeAdapter } from '../backend/webgpu/device.js';
import { loadModel } from '../engine/model.js';
import { parameterCount } from '../model/config.js';
import { weightBytes } from '../model/weights.js';
import { action, DEMO_MODEL, loadOptions, modelOptions } from './common.js';

export function register(program: Command): void {
  const cmd = program.command('info').description('show a checkpoint\'s config, size, and the backend and adapter it would run on');
  modelOptions(cmd).option('--json', 'print one JSON object');
  cmd.action(action(async (o: { model?: string; backend: string; kvCache: string; json?: boolean }) => {
    // The checkpoint first: a wrong path is reported before any adapter is opened.
    const model = await loadModel(o.model ?? DEMO_MODEL, loadOptions(o));
    const adapter = await probeAdapter();
    const c = model.config;
    const out = {
      model: o.model ?? DEMO_MODEL,
      folder: model.checkpoint.location,
      files: [...model.checkpoint.weights.files, ...model.checkpoint.tokenizer.files],
      config: c,
      parameters: parameterCount(c),
      weight_bytes: weightBytes(model.checkpoint.weights),
      fingerprint: model.checkpoint.fingerprint,
      backend: model.runner.backend,
      runner: model.runner.description,
      adapter: adapter ? adapterName(adapter) : null,
    };
    if (o.json) process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    else {
      const lines = [
        `model        ${out.model}` + (out.folder !== out.model ? ` (${out.folder})` : ''),
        `files        ${model.checkpoint.weights.files.join(', ')}; tokenizer from ${model.checkpoint.tokenizer.files.join(' + ')}`,
        `layers       ${c.layers} (d=${c.hidden}, heads=${c.heads}, ffn=${c.ffn}, vocab=${c.vocabSize}, context=${c.maxPositions})`,
        `layout       ${c.preLayerNorm ? 'pre' : 'post'}-LayerNorm, bias ${c.enableBias ? 'on' : 'off'}, ${c.tieWordEmbeddings ? 'tied' : 'separate'} lm_head` +
          (c.wordEmbedProjDim !== c.hidden ? `, embeddings ${c.wordEmbedProjDim} with project_in/out` : ''),
        `parameters   ${(out.parameters / 1e6).toFixed(2)} M`,
        `weights      ${(out.weight_bytes / 1e6).toFixed(2)} MB (${c.dtype})`,
        `fingerprint  ${out.fingerprint}`,
        `backend      ${out.runner}`,
        `adapter      ${out.adapter ?? 'none'}`,
      ];
      process.stdout.write(lines.join('\n') + '\n');
    }
    model.dispose();
  }));
}

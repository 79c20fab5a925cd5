import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { loadModel } from '../engine/model.js';
import { modelLabel } from '../model/hf-cache.js';
import { analyzeSparsity, tokenizeDocuments, type SparsityAnalysis } from '../sparsity/analyze.js';
import { renderSparsitySvg } from '../sparsity/plot-svg.js';
import { fail } from '../util/errors.js';
import { action, DEMO_MODEL, intArg, loadOptions, modelOptions } from './common.js';

interface AnalyzeFlags {
  model?: string; backend: string; kvCache: string; data: string; tokens: number; window?: number;
  json?: boolean; plot?: string; plotLayer?: number;
}

export function register(program: Command): void {
  const cmd = program.command('analyze')
    .description('measure contextual sparsity of the dense model over a text: MLP zeros, output-norm concentration, head-norm shares');
  modelOptions(cmd)
    .requiredOption('--data <file>', 'text file; documents separated by <|endoftext|>')
    .option('--tokens <n>', 'analyse the first n tokens of the text', intArg('--tokens', 1), 8192)
    .option('--window <w>', 'tokens per forward pass, each from an empty cache (default: the context length)', intArg('--window', 1))
    .option('--json', 'print one JSON object instead of the table')
    .option('--plot <file.svg>', 'write an SVG figure: per-layer sparsity bars and an activity heatmap')
    .option('--plot-layer <l>', 'layer shown in the heatmap (default: the middle layer)', intArg('--plot-layer', 0));
  cmd.action(action(async (o: AnalyzeFlags) => {
    if (!existsSync(o.data) || !statSync(o.data).isFile()) fail(`data file not found: ${o.data}`);
    if (o.plot !== undefined && !o.plot.endsWith('.svg')) fail(`--plot must name an .svg file, got ${o.plot}`);
    const model = await loadModel(o.model ?? DEMO_MODEL, loadOptions(o));
    const c = model.config;
    if (o.plotLayer !== undefined && o.plotLayer >= c.layers) fail(`--plot-layer ${o.plotLayer} is out of range (the model has layers 0..${c.layers - 1})`);
    if (o.window !== undefined && o.window > c.maxPositions) fail(`--window ${o.window} is longer than the model's context of ${c.maxPositions}`);
    const ids = tokenizeDocuments(model.tokenizer, readFileSync(o.data, 'utf8'), o.tokens);
    if (ids.length === 0) fail(`no text in ${o.data}`);
    if (ids.length < o.tokens) process.stderr.write(`dejavu: ${o.data} has only ${ids.length} tokens; analysing those\n`);

    const bar = new cliProgress.SingleBar({
      format: 'analyze [{bar}] {value}/{total} tokens | {eta_formatted} left', stream: process.stderr, hideCursor: true,
    }, cliProgress.Presets.shades_classic);
    bar.start(ids.length, 0);
    const plotLayer = o.plot !== undefined ? (o.plotLayer ?? Math.floor(c.layers / 2)) : undefined;
    let result: SparsityAnalysis;
    try {
      result = await analyzeSparsity(model.runner, model.checkpoint, ids, {
        window: o.window, sampleLayer: plotLayer, onProgress: (done) => bar.update(done),
      });
    } finally {
      bar.stop();
    }

    const modelName = modelLabel(o.model ?? DEMO_MODEL);
    if (o.plot !== undefined) {
      const svg = renderSparsitySvg(result, {
        title: `Contextual sparsity of ${modelName}`,
        subtitle: `dense forward over the first ${result.tokens} tokens of ${basename(o.data)}, windows of ${result.window} tokens ` +
          `(${c.layers} layers, ffn ${c.ffn}, ${c.heads} heads)`,
      });
      try { writeFileSync(o.plot, svg); } catch (e) { fail(`cannot write ${o.plot}: ${(e as Error).message.split('\n')[0]}`); }
    }
    if (o.json) {
      process.stdout.write(JSON.stringify({
        model: modelName, data: basename(o.data), tokens: result.tokens, window: result.window,
        backend: model.runner.backend, ffn: c.ffn, heads: c.heads, layers: result.layers,
      }) + '\n');
    } else {
      process.stdout.write(formatTable(result, modelName, model.runner.description));
      if (o.plot !== undefined) process.stderr.write(`dejavu: wrote ${o.plot}\n`);
    }
    model.dispose();
  }));
}

/** The per-layer table, columns aligned. */
export function formatTable(r: SparsityAnalysis, modelName: string, backend: string): string {
  const l0 = r.layers[0];
  const hc = l0.head_counts, H = l0.head_norm_cumshare.length;
  const header = ['layer', 'zero mean', 'std', 'p10', 'p90', 'n90', 'n95', 'n99',
    `top10% heads (${hc.top_10pct}/${H})`, `top30% (${hc.top_30pct})`, `top50% (${hc.top_50pct})`, `contrib top30%`, `contrib top50%`];
  const p = (x: number) => (x * 100).toFixed(1) + '%';
  const rows = r.layers.map((l) => [
    String(l.layer), p(l.mlp_zero_fraction.mean), (l.mlp_zero_fraction.std * 100).toFixed(1), p(l.mlp_zero_fraction.p10), p(l.mlp_zero_fraction.p90),
    l.mlp_neurons_for_output_norm.at_90.toFixed(1), l.mlp_neurons_for_output_norm.at_95.toFixed(1), l.mlp_neurons_for_output_norm.at_99.toFixed(1),
    p(l.head_norm_share.top_10pct), p(l.head_norm_share.top_30pct), p(l.head_norm_share.top_50pct),
    p(l.head_contrib_share.top_30pct), p(l.head_contrib_share.top_50pct),
  ]);
  const width = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => cells.map((s, i) => (i === 0 ? s.padEnd(width[i]) : s.padStart(width[i]))).join('  ').trimEnd();
  return [
    `${modelName}: ${r.tokens} tokens in windows of ${r.window} [${backend}]`,
    `MLP: share of the ${l0.ffn} neurons zero after ReLU (mean, std in points, p10/p90 over tokens); n90/n95/n99: mean number of`,
    'neurons carrying 90/95/99% of the MLP output norm (neuron weight act·‖W2[:,j]‖). Heads: mean share of the total head-output',
    'norm ‖o_h‖ carried by the largest 10/30/50% of heads; contrib: the same for each head\'s contribution ‖W_o,h o_h‖ to out_proj.',
    '',
    line(header),
    line(header.map((h) => '-'.repeat(h.length)).map((s, i) => '-'.repeat(width[i]) || s)),
    ...rows.map(line),
    '',
  ].join('\n');
}

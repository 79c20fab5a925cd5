/**
 * `dejavu eval`: perplexity and zero-shot task accuracy, dense, sparse (--predictors) or both side by
 * side (--compare). The work is in src/eval/; this file parses flags, draws the progress bar on stderr
 * and prints either a human summary or one JSON object on stdout.
 */
import type { Command } from 'commander';
import type { Runner } from '../backend/types.js';
import { loadModel, type Model } from '../engine/model.js';
import type { Checkpoint } from '../model/checkpoint.js';
import { hasSparseHeads, hasSparseMlp, meanHeadDensity, meanMlpDensity, type SparsityPolicy } from '../sparsity/policy.js';
import { fail } from '../util/errors.js';
import { compareLambada, compareMultipleChoice, comparePerplexity, measuredDensity } from '../eval/compare.js';
import { readDataFile } from '../eval/jsonl.js';
import { lambada } from '../eval/lambada.js';
import { multipleChoice } from '../eval/multiple-choice.js';
import { perplexity } from '../eval/perplexity.js';
import { progressBar, type ProgressFn } from '../eval/progress.js';
import { isMcTask, loadLambadaItems, loadMcItems, parseTask, TASKS, type Task } from '../eval/tasks.js';
import { action, DEMO_MODEL, intArg, loadOptions, modelOptions } from './common.js';
import { predictorOptions } from './predictors-option.js';
import { loadPolicy as loadPredictorPolicy } from './predictors-option.js';

interface EvalFlags {
  model?: string; backend: string; kvCache: string; task: string; data: string; limit?: number; window?: number;
  compare?: boolean; json?: boolean; predictors?: string; mlpDensity?: number; selection?: string;
  sparse?: string; headDensity?: number; headKv?: string;
}

/** The policy itself (applyPredictors only installs it; --compare must switch it on and off). */
async function loadPolicy(ck: Checkpoint, o: EvalFlags): Promise<SparsityPolicy | null> {
  if (!o.predictors) return null;
  return loadPredictorPolicy(o.predictors, ck, o);
}

type Out = Record<string, unknown>;
const r4 = (x: number) => Math.round(x * 1e4) / 1e4;
const r6 = (x: number) => Math.round(x * 1e6) / 1e6;

/** Runs the task; returns the JSON fields and the human summary lines. */
async function runTask(task: Task, runner: Runner, model: Model, o: EvalFlags, text: string, policy: SparsityPolicy | null, progress: ProgressFn): Promise<{ out: Out; lines: string[]; density?: number }> {
  const tok = model.tokenizer;
  // Sparse heads act on one-token forwards (decode), so with them texts are scored token by token.
  const decode = hasSparseHeads(policy);
  if (task === 'ppl') {
    const opts = { window: o.window, limit: o.limit, onProgress: progress, decode };
    if (o.compare) {
      const c = await comparePerplexity(runner, tok, text, policy!, opts);
      return {
        density: c.mlpDensity,
        out: { dense_ppl: r4(c.dense.ppl), sparse_ppl: r4(c.sparse.ppl), dense_nll: r6(c.dense.nll), sparse_nll: r6(c.sparse.nll),
          top1_agreement: r6(c.top1Agreement), kl: r6(c.kl), tokens: c.tokens, windows: c.dense.windows, window: c.dense.window, decode },
        lines: [`dense ppl ${c.dense.ppl.toFixed(3)}, sparse ppl ${c.sparse.ppl.toFixed(3)} over ${c.tokens} tokens (${c.dense.windows} windows of ${c.dense.window})`,
          `top-1 agreement ${(100 * c.top1Agreement).toFixed(2)}%, mean KL(dense || sparse) ${c.kl.toFixed(5)} nats/token`],
      };
    }
    const p = await perplexity(runner, tok, text, opts);
    return {
      out: { ppl: r4(p.ppl), nll: r6(p.nll), tokens: p.tokens, windows: p.windows, window: p.window, decode },
      lines: [`ppl ${p.ppl.toFixed(3)} (nll ${p.nll.toFixed(4)} nats/token) over ${p.tokens} tokens (${p.windows} windows of ${p.window})`],
    };
  }
  if (task === 'lambada') {
    const items = loadLambadaItems(text, o.data, o.limit);
    if (o.compare) {
      const c = await compareLambada(runner, tok, items, policy!, progress, decode);
      return {
        density: c.mlpDensity,
        out: { dense_acc: r4(c.dense.acc), dense_ppl: r4(c.dense.ppl), sparse_acc: r4(c.sparse.acc), sparse_ppl: r4(c.sparse.ppl), agreement: r4(c.agreement), n: c.dense.n, decode },
        lines: [`dense acc ${c.dense.acc.toFixed(4)} ppl ${c.dense.ppl.toFixed(3)} | sparse acc ${c.sparse.acc.toFixed(4)} ppl ${c.sparse.ppl.toFixed(3)} | same outcome on ${(100 * c.agreement).toFixed(1)}% of ${c.dense.n} items`],
      };
    }
    const l = await lambada(runner, tok, items, progress, decode);
    return {
      out: { acc: r4(l.acc), ppl: r4(l.ppl), token_ppl: r4(l.tokenPpl), n: l.n, decode },
      lines: [`acc ${l.acc.toFixed(4)}, ppl ${l.ppl.toFixed(3)} (per token ${l.tokenPpl.toFixed(3)}) over ${l.n} items`],
    };
  }
  if (!isMcTask(task)) fail(`unknown task "${task}"`);
  const items = loadMcItems(task, text, o.data, o.limit);
  if (o.compare) {
    const c = await compareMultipleChoice(runner, tok, items, policy!, progress, decode);
    return {
      density: c.mlpDensity,
      out: { dense_acc: r4(c.dense.acc), dense_acc_norm: r4(c.dense.accNorm), sparse_acc: r4(c.sparse.acc), sparse_acc_norm: r4(c.sparse.accNorm), agreement: r4(c.agreement), n: c.dense.n, decode },
      lines: [`dense acc ${c.dense.acc.toFixed(4)} acc_norm ${c.dense.accNorm.toFixed(4)} | sparse acc ${c.sparse.acc.toFixed(4)} acc_norm ${c.sparse.accNorm.toFixed(4)} | same choice on ${(100 * c.agreement).toFixed(1)}% of ${c.dense.n} items`],
    };
  }
  const m = await multipleChoice(runner, tok, items, progress, decode);
  return {
    out: { acc: r4(m.acc), acc_norm: r4(m.accNorm), n: m.n, decode },
    lines: [`acc ${m.acc.toFixed(4)}, acc_norm ${m.accNorm.toFixed(4)} over ${m.n} items`],
  };
}

export function register(program: Command): void {
  const cmd = program.command('eval')
    .description('perplexity on a text file, or zero-shot accuracy on a task (dense, sparse, or --compare both)');
  modelOptions(cmd)
    .requiredOption('--task <name>', TASKS.join(' | '))
    .requiredOption('--data <file>', 'text file (ppl: documents separated by <|endoftext|>) or task JSONL file')
    .option('--limit <n>', 'ppl: score the first n tokens; other tasks: the first n items', intArg('--limit', 1))
    .option('--window <w>', 'ppl: window length in tokens (default: the model context)', intArg('--window', 2))
    .option('--compare', 'run dense and sparse (--predictors) on the same inputs and compare them')
    .option('--json', 'print one JSON object instead of a summary');
  predictorOptions(cmd);
  cmd.action(action(async (o: EvalFlags) => {
    // Cheap checks first: no model load for a typo.
    const task = parseTask(o.task);
    if (o.compare && !o.predictors) fail('--compare needs --predictors DIR (the sparse model to compare with dense)');
    const text = readDataFile(o.data);
    const model = await loadModel(o.model ?? DEMO_MODEL, loadOptions(o));
    const policy = await loadPolicy(model.checkpoint, o);
    if (hasSparseHeads(policy)) {
      process.stderr.write(task === 'ppl'
        ? 'dejavu: sparse heads act on decode tokens: scoring one token a forward\n'
        : 'dejavu: sparse heads act on decode tokens: each context runs as a prompt, its continuation one token a forward\n');
    }
    if (!o.compare) model.setSparsity(policy);
    const bar = progressBar(`eval ${task}`, task === 'ppl' ? 'tokens' : 'items');
    const t0 = performance.now();
    let res: { out: Out; lines: string[]; density?: number };
    try {
      res = await runTask(task, model.runner, model, o, text, policy, bar.update);
    } finally {
      bar.stop();
    }
    const seconds = (performance.now() - t0) / 1000;
    // Measured (the block rule's count varies by token); top-K layers count k / f.
    const density = !hasSparseMlp(policy) ? 1 : res.density ?? (o.compare ? meanMlpDensity(policy!, model.config.ffn) : await measuredDensity(model.runner));
    const headDensity = hasSparseHeads(policy) ? meanHeadDensity(policy!, model.config.heads) : 1;
    if (o.json) {
      process.stdout.write(JSON.stringify({
        task, model: o.model ?? DEMO_MODEL, backend: model.runner.backend, sparse: !!policy, compare: !!o.compare,
        ...res.out, mlp_density: r6(density), head_density: r6(headDensity), seconds: Math.round(seconds * 100) / 100,
      }) + '\n');
    } else {
      const mode = o.compare ? 'dense vs sparse' : policy ? 'sparse' : 'dense';
      const heads = hasSparseHeads(policy) ? `, mean head density ${headDensity.toFixed(3)}` : '';
      process.stdout.write(`${task} (${mode}${policy ? `, mean MLP density ${density.toFixed(3)}${heads}` : ''}):\n${res.lines.map((l) => `  ${l}\n`).join('')}`);
      process.stderr.write(`[${model.runner.description}] ${seconds.toFixed(1)} s\n`);
    }
    model.dispose();
  }));
}

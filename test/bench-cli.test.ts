// `dejavu bench` end to end on the CPU backend with the embedded 5m model (fast), and its one-line errors.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { runHfBaseline } from '../src/bench/hf.js';
import { MODELS, ROOT } from './helpers.js';
import { randomPredictorSet } from './predictor-sets.js';

const CLI = join(ROOT, 'dist', 'src', 'cli.js');
const bench = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  spawnSync(process.execPath, [CLI, 'bench', ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
const fast = ['--model', MODELS['5m'], '--backend', 'cpu', '--prompt-len', '8', '--gen', '4', '--warmup', '1'];

test('bench --json prints one object per configuration with the documented keys', () => {
  const r = bench([...fast, '--json', '--sparsity', 'dense,mlp', '--oracle']);
  assert.equal(r.status, 0, r.stderr);
  const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(rows.length, 2);
  for (const k of ['shape', 'backend', 'adapter', 'sparsity', 'ms_per_token', 'tokens_per_s', 'gbps', 'floor_ms', 'pct_of_floor',
    'prefill_ms', 'bytes_per_token', 'card_gbps', 'mlp_density']) {
    assert.ok(k in rows[0], `missing ${k}`);
  }
  const [dense, mlp] = rows;
  assert.equal(dense.shape, 'opt-gutenberg-5m');
  assert.equal(dense.backend, 'cpu');
  assert.equal(dense.sparsity, 'dense');
  assert.equal(mlp.sparsity, 'mlp');
  assert.equal(mlp.selector, 'fixed');
  assert.equal(mlp.mlp_density, 0.1);
  assert.ok((mlp.bytes_per_token as number) < (dense.bytes_per_token as number));
  for (const row of rows) {
    const ms = row.ms_per_token as number;
    assert.ok(ms > 0);
    assert.ok(Math.abs((row.tokens_per_s as number) - 1000 / ms) < 0.01 * (row.tokens_per_s as number) + 0.01);
    // floor_ms and ms_per_token come rounded to 3 decimals: allow what that rounding moves the ratio.
    const floor = row.floor_ms as number, slack = 100 * 0.0005 * (1 / ms + floor / ms ** 2) + 0.0011;
    assert.ok(Math.abs((row.pct_of_floor as number) - (floor / ms) * 100) < slack, `${row.pct_of_floor} vs ${(floor / ms) * 100}`);
  }
  assert.match(r.stderr, /^bandwidth: [\d.]+ GB\/s \(memcpy/m);
});

test('bench --sparsity dejavu --oracle: fixed neuron and head sets, head_density in the row, fewer bytes than mlp alone', () => {
  const r = bench([...fast, '--json', '--sparsity', 'mlp,dejavu', '--oracle', '--head-density', '0.5']);
  assert.equal(r.status, 0, r.stderr);
  const [mlp, dejavu] = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(dejavu.sparsity, 'dejavu');
  assert.equal(dejavu.head_density, 0.5); // 4 of the 5m model's 8 heads
  assert.equal(dejavu.head_rank, null);   // fixed sets: no head predictor
  assert.equal(mlp.head_density, null);
  assert.ok((dejavu.bytes_per_token as number) < (mlp.bytes_per_token as number));
  assert.equal(dejavu.head_kv, 'all');
  assert.match(r.stderr, /opt-gutenberg-5m: dejavu \(density 0\.100, heads 0\.500, kv all, fixed sets\)/);
  const chosen = bench([...fast, '--json', '--sparsity', 'dejavu', '--oracle', '--head-density', '0.5', '--head-kv', 'chosen']);
  assert.equal(chosen.status, 0, chosen.stderr);
  const row = JSON.parse(chosen.stdout.trim()) as Record<string, unknown>;
  assert.equal(row.head_kv, 'chosen');
  assert.ok((row.bytes_per_token as number) < (dejavu.bytes_per_token as number), 'kv chosen reads less');
  // Lazy completion: kv chosen's K/V at even positions, every head's at odd ones; in between in bytes.
  // A row each for a list of modes, in one process.
  const lazy = bench([...fast, '--json', '--sparsity', 'dejavu', '--oracle', '--head-density', '0.5', '--head-kv', 'lazy,all']);
  assert.equal(lazy.status, 0, lazy.stderr);
  const [lrow, arow] = lazy.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(lrow.head_kv, 'lazy');
  assert.equal(arow.head_kv, 'all');
  assert.ok((lrow.bytes_per_token as number) < (dejavu.bytes_per_token as number) && (lrow.bytes_per_token as number) > (row.bytes_per_token as number), 'lazy reads between chosen and all');
  assert.match(lazy.stderr, /heads 0\.500, kv lazy, fixed sets/);
});

test('bench --sparsity dejavu --predictors: the set\'s head predictors at --head-density; a set without them is refused', async () => {
  const { dir, H } = await randomPredictorSet();
  const r = bench([...fast, '--json', '--sparsity', 'dejavu', '--predictors', dir, '--head-density', '0.5']);
  assert.equal(r.status, 0, r.stderr);
  const row = JSON.parse(r.stdout.trim()) as Record<string, unknown>;
  assert.equal(row.head_density, 0.5);
  assert.equal(row.head_rank, H); // trained predictors, not fixed sets
  assert.equal(row.head_kv, 'all');
  assert.equal(row.head_input, 'attn_in'); // a set fitted without --head-input
  const none = bench([...fast, '--sparsity', 'dejavu', '--predictors', (await randomPredictorSet(false)).dir]);
  assert.equal(none.status, 1);
  assert.match(none.stderr, /^dejavu: predictors in .* have no head predictors: train them with train-predictors --heads$/m);
});

test('bench --profile on the CPU backend says it is skipped and still prints its rows', () => {
  const r = bench([...fast, '--json', '--profile']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /^skipped: --profile: the CPU backend has no GPU timestamps$/m);
  const row = JSON.parse(r.stdout.trim()) as Record<string, unknown>;
  assert.ok(!('profile' in row));
});

test('bench prints an aligned table by default', () => {
  const r = bench(fast);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.equal(lines.length, 3);
  assert.match(lines[0], /^shape\s+backend\s+sparsity\s+prefill ms\s+ms\/token/);
  assert.equal(new Set(lines.map((l) => l.length)).size, 1);
});

test('bench errors are one line: unknown shape, --sparsity dejavu, --shape on the CPU, mlp without predictors, bad --selection, bad --predictor-input', () => {
  const cases: [string[], RegExp][] = [
    [['--shape', 'opt-9b'], /^dejavu: unknown shape "opt-9b" \(choose opt-125m, .*opt-66b\)\n$/],
    [[...fast, '--sparsity', 'dejavu'], /^dejavu: --sparsity dejavu on a checkpoint needs --predictors DIR \(trained with --heads\) or --oracle .*\n$/],
    [[...fast, '--sparsity', 'dejavu', '--predictors', '/nonexistent'], /^dejavu: predictors folder \/nonexistent not found\n$/],
    [[...fast, '--sparsity', 'sparse'], /^dejavu: unknown sparsity "sparse"/],
    [['--shape', 'opt-1.3b', '--backend', 'cpu'], /^dejavu: --shape runs synthetic weights on the GPU/],
    [[...fast, '--sparsity', 'mlp'], /^dejavu: --sparsity mlp on a checkpoint needs --predictors DIR .* or --oracle/],
    [[...fast, '--prompt-len', '1000', '--gen', '100'], /exceeds the model's context of 1024 tokens/],
    [[...fast, '--selection', 'best'], /^dejavu: --selection must be auto, block or topk \(got best\)\n$/],
    [[...fast, '--sparsity', 'dejavu', '--oracle', '--head-kv', 'some'], /^dejavu: --head-kv must be all, chosen or lazy \(got some\)\n$/],
    [[...fast, '--sparsity', 'dejavu', '--oracle', '--head-input', 'mlp_in'], /^dejavu: --head-input must be attn_in or prev_attn_in \(got mlp_in\)\n$/],
    [[...fast, '--sparsity', 'dejavu', '--oracle', '--head-input', 'prev_attn_in'], /^dejavu: --head-input is for synthetic head predictors \(--oracle runs no predictor\)\n$/],
    [[...fast, '--sparsity', 'mlp', '--head-input', 'attn_in'], /^dejavu: --head-input is for --sparsity dejavu \(the only mode with sparse heads\)\n$/],
    [[...fast, '--predictor-input', 'qkv'], /^dejavu: --predictor-input must be attn_in, mlp_in, attn_io \(got qkv\)\n$/],
    [[...fast, '--sparsity', 'mlp', '--oracle', '--predictor-input', 'attn_in'], /^dejavu: --predictor-input is for synthetic predictors \(--oracle runs no predictor\)\n$/],
  ];
  for (const [args, re] of cases) {
    const r = bench(args);
    assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
    const errLines = r.stderr.split('\n').filter((l) => l.startsWith('dejavu:'));
    assert.equal(errLines.length, 1, r.stderr);
    assert.match(errLines[0] + '\n', re);
  }
});

test('--compare-hf without a usable python prints one "skipped:" line and still reports', () => {
  const r = bench([...fast, '--json', '--compare-hf'], { DEJAVU_PYTHON: 'dejavu-no-such-python' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /^skipped: Hugging Face baseline: dejavu-no-such-python: .*ENOENT/m);
  const row = JSON.parse(r.stdout.trim()) as Record<string, unknown>;
  assert.equal(row.hf_ms_per_token, undefined);
});

test('runHfBaseline turns a script failure into a reason, never a throw', async () => {
  const out = await runHfBaseline({ shape: 'opt-125m', promptLen: 4, gen: 2, warmup: 0, python: 'dejavu-no-such-python' });
  assert.equal(out.ok, false);
});

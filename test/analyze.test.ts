import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import type { Runner, TraceFn } from '../src/backend/types.js';
import { createRunner } from '../src/backend/select.js';
import type { Checkpoint } from '../src/model/checkpoint.js';
import { f32Tensor } from '../src/model/tensor.js';
import { analyzeSparsity, tokenizeDocuments, type SparsityAnalysis } from '../src/sparsity/analyze.js';
import { renderSparsitySvg } from '../src/sparsity/plot-svg.js';
import { checkpoint, DATA, hasShared, MODELS, ROOT } from './helpers.js';

const VAL = join(DATA, 'gutenberg-val.txt');
const CLI = join(ROOT, 'dist', 'src', 'cli.js');

describe('analyzeSparsity statistics (synthetic runner)', () => {
  it('counts zeros, output-norm neurons (act · ‖W2 column‖) and head shares', async () => {
    // d = 2, f = 4: W2 columns have norms 1, 2, 1, 1 (fc2W is (d, f) row-major).
    const fc2W = f32Tensor([2, 4], Float32Array.from([1, 0, 0, 1, 0, 2, 1, 0]));
    const ck = { weights: { layers: [{ fc2W }] } } as unknown as Checkpoint;
    const acts = [[4, 0, 1, 0], [1, 1, 1, 1]];
    const heads = [[3, 1], [1, 1]];
    const runner = {
      config: { layers: 1, ffn: 4, heads: 2, hidden: 2, maxPositions: 8 },
      reset() {},
      async forward(ids: number[], o: { trace?: TraceFn }) {
        o.trace!(0, 'fc1_act', Float32Array.from(acts.slice(0, ids.length).flat()), ids.length);
        o.trace!(0, 'head_norm', Float32Array.from(heads.slice(0, ids.length).flat()), ids.length);
        return new Float32Array(0);
      },
    } as unknown as Runner;
    const r = await analyzeSparsity(runner, ck, [5, 6]);
    const l = r.layers[0];
    assert.equal(l.mlp_zero_fraction.mean, 0.25); // 2/4 and 0/4 zero
    assert.equal(l.mlp_zero_fraction.p10, 0);
    assert.equal(l.mlp_zero_fraction.p90, 0.5);
    // token 1: weights 4, 1 -> 90% needs 2; token 2: weights 1, 2, 1, 1 (total 5) -> 90% (4.5) needs 4.
    assert.equal(l.mlp_neurons_for_output_norm.at_90, 3);
    assert.deepEqual(l.head_norm_cumshare, [(0.75 + 0.5) / 2, 1]);
    assert.equal(l.head_counts.top_10pct, 1);
  });
});

describe('analyze on opt-gutenberg-5m (CPU, 2048 tokens)', { skip: !hasShared && 'no ../shared data' }, () => {
  let r: SparsityAnalysis;
  let ref: { mlp_zero_fraction: number[]; head_norm_cumshare: number[][] };
  before(async () => {
    const ck = await checkpoint(MODELS['5m']);
    ref = JSON.parse(readFileSync(join(MODELS['5m'], 'reference.json'), 'utf8')).sparsity;
    const runner = await createRunner(ck, 'cpu');
    const ids = tokenizeDocuments(ck.tokenizer, readFileSync(VAL, 'utf8'), 2048);
    assert.equal(ids.length, 2048);
    r = await analyzeSparsity(runner, ck, ids, { sampleLayer: 2 });
  });

  it('per-layer zero fractions match the Hugging Face reference within 0.03', () => {
    assert.equal(r.layers.length, ref.mlp_zero_fraction.length);
    r.layers.forEach((l, i) => {
      const z = l.mlp_zero_fraction;
      assert.ok(Math.abs(z.mean - ref.mlp_zero_fraction[i]) < 0.03, `layer ${i}: ${z.mean} vs ${ref.mlp_zero_fraction[i]}`);
      assert.ok(z.p10 <= z.mean && z.mean <= z.p90 && z.std >= 0, `layer ${i} spread`);
    });
  });

  it('neuron counts are monotone and head shares monotone and at most 1', () => {
    for (const l of r.layers) {
      const n = l.mlp_neurons_for_output_norm, h = l.head_norm_share;
      assert.ok(n.at_90 > 0 && n.at_90 <= n.at_95 && n.at_95 <= n.at_99 && n.at_99 <= l.ffn, JSON.stringify(n));
      assert.ok(n.at_99 <= l.ffn * (1 - l.mlp_zero_fraction.mean) + 1e-9, 'only active neurons carry norm');
      assert.ok(h.top_10pct > 0 && h.top_10pct <= h.top_30pct && h.top_30pct <= h.top_50pct && h.top_50pct <= 1 + 1e-9, JSON.stringify(h));
      const cum = l.head_norm_cumshare;
      for (let k = 1; k < cum.length; k++) assert.ok(cum[k] >= cum[k - 1] - 1e-12);
      assert.ok(Math.abs(cum[cum.length - 1] - 1) < 1e-6);
      // The head curve is close to the reference's too.
      cum.forEach((v, k) => assert.ok(Math.abs(v - ref.head_norm_cumshare[l.layer][k]) < 0.08, `layer ${l.layer} k ${k}`));
      // Contributions ‖W_o,h o_h‖: a monotone curve to 1, at least the uniform share at every k.
      const cc = l.head_contrib_cumshare, H = cc.length;
      for (let k = 1; k < H; k++) assert.ok(cc[k] >= cc[k - 1] - 1e-12);
      assert.ok(Math.abs(cc[H - 1] - 1) < 1e-6);
      cc.forEach((v, k) => assert.ok(v >= (k + 1) / H - 1e-9, `layer ${l.layer} contrib k ${k}: ${v}`));
      assert.equal(l.head_contrib_share.top_50pct, cc[l.head_counts.top_50pct - 1]);
    }
  });

  it('renders a well-formed SVG with a bar per layer and the heatmap', () => {
    const svg = renderSparsitySvg(r, { title: 'test <&> title', subtitle: 'sub' });
    assert.ok(svg.startsWith('<svg'));
    assert.ok(svg.trimEnd().endsWith('</svg>'));
    // Balanced tags (no comments, CDATA or processing instructions are emitted).
    const stack: string[] = [];
    for (const m of svg.matchAll(/<(\/?)([a-zA-Z]+)[^>]*?(\/?)>/g)) {
      if (m[1]) assert.equal(stack.pop(), m[2]);
      else if (!m[3]) stack.push(m[2]);
    }
    assert.equal(stack.length, 0);
    assert.ok(!/&(?!amp;|lt;|gt;|quot;)/.test(svg), 'text is escaped');
    assert.equal(svg.match(/class="bar"/g)?.length, r.layers.length);
    assert.ok(svg.includes('white = zero'));
    assert.equal(r.sample?.tokens, 128);
    assert.equal(r.sample?.neurons.length, 256);
  });
});

describe('dejavu analyze errors', () => {
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, 'analyze', '--backend', 'cpu', ...args], { encoding: 'utf8' });
  const oneLine = (s: string) => s.trim().split('\n').length === 1;

  it('a missing data file is a one-line error', () => {
    const p = run('--data', '/nonexistent/text.txt');
    assert.equal(p.status, 1);
    assert.ok(oneLine(p.stderr) && p.stderr.startsWith('dejavu: data file not found'), p.stderr);
  });

  it('--tokens 0 and an out-of-range --plot-layer are one-line errors', { skip: !hasShared && 'no ../shared data' }, () => {
    const a = run('--data', VAL, '--tokens', '0');
    assert.notEqual(a.status, 0);
    assert.ok(oneLine(a.stderr) && a.stderr.includes('--tokens must be an integer >= 1'), a.stderr);
    const b = run('--data', VAL, '--tokens', '16', '--plot', '/tmp/x.svg', '--plot-layer', '9');
    assert.equal(b.status, 1);
    assert.ok(oneLine(b.stderr) && b.stderr.includes('--plot-layer 9 is out of range'), b.stderr);
  });
});

// Adds up bench/quality_suite.sh's parts into the tables of docs/sparsity.md: perplexity parts by
// their scored tokens (mean NLL, then exp), accuracies and agreement by items, LAMBADA's perplexity
// by items (a part's own perplexity is over its items' target tokens; items are 1–3 tokens, so this
// is within a hair of the exact figure).
//
//   node bench/quality_table.mjs OUT_DIR [--json]
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node bench/quality_table.mjs OUT_DIR [--json]');
  process.exit(2);
}
const parts = new Map(); // task -> [eval JSON objects]
const bad = [];
for (const f of readdirSync(dir).filter(f => f.endsWith('.json') && f !== 'summary.json').sort()) {
  const name = f.slice(0, -5).replace(/\.\d+$/, '');
  const text = readFileSync(join(dir, f), 'utf8').trim();
  let o;
  try { o = JSON.parse(text); } catch { bad.push(f); continue; }
  if (!parts.has(name)) parts.set(name, []);
  parts.get(name).push(o);
}

const sum = (xs, f) => xs.reduce((s, x) => s + f(x), 0);
const byWeight = (xs, w, f) => sum(xs, x => w(x) * f(x)) / sum(xs, w);

function ppl(xs) {
  const t = x => x.tokens;
  return {
    parts: xs.length, tokens: sum(xs, t), windows: sum(xs, x => x.windows),
    dense_ppl: Math.exp(byWeight(xs, t, x => x.dense_nll)), sparse_ppl: Math.exp(byWeight(xs, t, x => x.sparse_nll)),
    top1_agreement: byWeight(xs, t, x => x.top1_agreement), kl: byWeight(xs, t, x => x.kl),
    mlp_density: byWeight(xs, t, x => x.mlp_density),
  };
}
function choice(xs) {
  const n = x => x.n;
  const o = { parts: xs.length, n: sum(xs, n), mlp_density: byWeight(xs, n, x => x.mlp_density), agreement: byWeight(xs, n, x => x.agreement) };
  for (const k of ['dense_acc', 'sparse_acc', 'dense_acc_norm', 'sparse_acc_norm']) if (k in xs[0]) o[k] = byWeight(xs, n, x => x[k]);
  for (const k of ['dense_ppl', 'sparse_ppl']) if (k in xs[0]) o[k] = Math.exp(byWeight(xs, n, x => Math.log(x[k])));
  return o;
}

const result = {};
for (const [name, xs] of parts) result[name] = xs[0].task === 'ppl' ? ppl(xs) : choice(xs);
if (process.argv.includes('--json')) {
  console.log(JSON.stringify(result));
} else {
  const pct = x => `${(100 * x).toFixed(2)}%`;
  const label = { val: 'gutenberg-val (--limit 131072)', wiki: 'WikiText-2 test' };
  console.log('| text | tokens scored | windows | density | dense ppl | sparse ppl | Δ | top-1 agreement | KL (nats) |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const k of ['val', 'wiki']) {
    const r = result[k];
    if (!r) continue;
    console.log(`| ${label[k]} | ${r.tokens.toLocaleString('en')} | ${r.windows} | ${pct(r.mlp_density)} | ${r.dense_ppl.toFixed(4)} | ${r.sparse_ppl.toFixed(4)} | ${(100 * (r.sparse_ppl / r.dense_ppl - 1)).toFixed(2)}% | ${pct(r.top1_agreement)} | ${r.kl.toFixed(4)} |`);
  }
  console.log('\n| task | items | density | dense acc | sparse acc | dense acc_norm | sparse acc_norm | same choice |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const k of ['copa', 'piqa', 'winogrande', 'arc_easy', 'lambada']) {
    const r = result[k];
    if (!r) continue;
    const norm = k === 'lambada' ? `ppl ${r.dense_ppl.toFixed(0)} | ppl ${r.sparse_ppl.toFixed(0)}` : `${r.dense_acc_norm.toFixed(3)} | ${r.sparse_acc_norm.toFixed(3)}`;
    console.log(`| ${k} | ${r.n.toLocaleString('en')} | ${pct(r.mlp_density)} | ${r.dense_acc.toFixed(3)} | ${r.sparse_acc.toFixed(3)} | ${norm} | ${pct(r.agreement)} |`);
  }
}
if (bad.length) {
  console.error(`quality_table: unreadable parts (a failed eval?): ${bad.join(', ')}`);
  process.exitCode = 1;
}

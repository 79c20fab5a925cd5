/** Benchmark rows: one per configuration, as JSON (snake_case keys) or an aligned table. */
import type { HeadInput, HeadKvMode, PredictorInput } from '../sparsity/policy.js';

export interface BenchRow {
  shape: string;                 // opt-6.7b, or the checkpoint folder's name
  backend: 'cpu' | 'webgpu';
  adapter: string;
  sparsity: 'dense' | 'mlp' | 'dejavu';
  selector: 'none' | 'fixed' | 'predictor';
  /** Predictors: the block rule (fused select + fc1) or a global top-K. */
  selection: 'block' | 'topk' | null;
  /** What the predictors read: mlp_in, or attn_in (DejaVu's lookahead: A rides the qkv GEMV in decode). */
  predictor_input: PredictorInput | null;
  /** Mean fraction of MLP neurons over the sparse layers, measured over the wall-clock run (its prompt and steps). */
  mlp_density: number | null;
  /** The same over the GPU-timed sequence (gpu_ms_per_token's; synthetic block thresholds are calibrated on it). */
  gpu_mlp_density?: number;
  predictor_rank: number | null;
  /** dejavu: mean fraction of attention heads a decode token computes (HeadLayerPolicy), and the head predictors' rank (null: fixed sets). */
  head_density: number | null;
  head_rank: number | null;
  /** dejavu: whether unchosen heads still store K/V ('all') or skip it too ('chosen'). */
  head_kv: HeadKvMode | null;
  /** What the head predictors read (null: no head predictor). */
  head_input: HeadInput | null;
  /** The KV cache's element type (WebGPU: --kv-cache; the CPU keeps f32). */
  kv_cache: 'f32' | 'f16';
  prompt_len: number;
  gen: number;
  prefill_ms: number;
  ms_per_token: number;          // chained greedy decode (what generate runs): mean over the measured steps
  median_ms: number;             // median and fastest gap between ids landing on the host (chained)
  min_ms: number;
  ms_per_token_readback: number; // one awaited forward per token, logits read back, argmax on the host
  tokens_per_s: number;
  bytes_per_token: number;       // mean over the measured steps (src/bench/shapes.ts tokenBytes)
  gbps: number;                  // bytes_per_token / ms_per_token
  card_gbps: number | null;      // measured bandwidth: GPU read kernel (bytes read); CPU memcpy (read + write)
  card_gbps_method: string | null;
  card_copy_gbps?: number;       // GPU only, secondary: copyBufferToBuffer (read + write); not the floor
  floor_ms: number | null;       // bytes_per_token / card bandwidth
  pct_of_floor: number | null;   // floor_ms / ms_per_token * 100
  // From the WebGPU runner's timeDecodeSteps: steps queued back to back, no logits read back, no LM head.
  dispatches_per_token?: number;
  queued_ms_per_token?: number;
  gpu_ms_per_token?: number | null;  // GPU timestamps (null without timestamp-query)
  gpu_gbps?: number | null;          // the GPU-timed sequence's bytes a step (its own MLP count, no LM head) / gpu_ms_per_token
  /** gpu_gbps / card_gbps × 100: the GPU step's percent of its floor (floor_ms counts the LM head, which gpu_ms_per_token leaves out: do not divide those two). */
  gpu_pct_of_floor?: number | null;
  /**
   * With --profile: the decode step dispatch by dispatch (each in a compute pass of its own between
   * GPU timestamps), grouped by pipeline and grid, slowest first. A pass of its own adds its start and
   * end to each dispatch (on an H200 ~5 µs), so busy_ms_per_token, their sum, exceeds
   * gpu_ms_per_token (the step in one pass): read the rows as shares of the step.
   */
  profile?: { busy_ms_per_token: number; rows: { kernel: string; workgroups: number; per_token: number; us_per_token: number; us_each: number }[] };
  hf_ms_per_token?: number;
  hf_prefill_ms?: number;
  hf_device?: string;
  hf_gbps?: number;              // the same dense byte count over HF's time
  speedup_vs_hf?: number;        // hf_ms_per_token / ms_per_token
}

const r3 = (x: number) => Math.round(x * 1000) / 1000;

/** Rounds the float fields for printing (full precision adds nothing at these timings). */
export function rounded(row: BenchRow): BenchRow {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(row)) out[k] = typeof v === 'number' && !Number.isInteger(v) ? r3(v) : v;
  return out as unknown as BenchRow;
}

const fmt = (x: number | null | undefined, digits = 2) => (x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits));

/** Right-aligned columns with a header; the first column left-aligned. */
export function table(header: string[], rows: string[][]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((s, i) => (i === 0 ? s.padEnd(w[i]) : s.padStart(w[i]))).join('  ');
  return [line(header), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n') + '\n';
}

/** The --profile table of one configuration (text mode). */
export function profileTable(row: BenchRow): string {
  const p = row.profile;
  if (!p) return '';
  const step = row.gpu_ms_per_token ?? null, busyUs = p.busy_ms_per_token * 1e3;
  // On a GPU each pass's own start and end make the sum exceed the one-pass step; a software adapter's noise can turn it round.
  const perDispatch = step && row.dispatches_per_token ? ` (difference ${((busyUs - step * 1e3) / row.dispatches_per_token).toFixed(1)} µs a dispatch)` : '';
  const head = `${row.shape} ${row.sparsity}: dispatches timed a pass each: ${p.busy_ms_per_token.toFixed(3)} ms a token` +
    (step ? `; the step in one pass: ${step.toFixed(3)} ms${perDispatch}; "≈ µs in step" = share × that` : '') + '\n';
  return head + table(['kernel', 'workgroups', 'per token', 'µs each (own pass)', 'µs a token', 'share %', ...(step ? ['≈ µs in step'] : [])],
    p.rows.map((r) => {
      const share = r.us_per_token / busyUs;
      return [r.kernel, String(r.workgroups), String(r.per_token), fmt(r.us_each, 1), fmt(r.us_per_token, 1), fmt(100 * share, 1), ...(step ? [fmt(share * step * 1e3, 0)] : [])];
    }));
}

export function benchTable(rows: BenchRow[]): string {
  const hf = rows.some((r) => r.hf_ms_per_token !== undefined);
  const gpu = rows.some((r) => r.gpu_ms_per_token != null);
  const header = ['shape', 'backend', 'sparsity', 'prefill ms', 'ms/token', 'readback ms', 'tok/s', 'MB/token', 'GB/s', 'floor ms', '% floor'];
  if (gpu) header.push('GPU ms', 'GPU % floor', 'dispatches');   // the step without the LM head, its bytes likewise
  if (hf) header.push('HF ms/token', 'HF GB/s', 'HF/ours');
  const body = rows.map((r) => {
    const heads = r.sparsity === 'dejavu' ? `, heads ${Number((r.head_density ?? NaN).toFixed(3))}${r.head_kv && r.head_kv !== 'all' ? ` kv ${r.head_kv}` : ''}${r.head_input === 'prev_attn_in' ? ' head-lookahead' : ''}` : '';
    const sp = r.sparsity === 'dense' ? 'dense' : `mlp ${Number((r.mlp_density ?? NaN).toFixed(3))}${r.gpu_mlp_density !== undefined ? ` (GPU ${Number(r.gpu_mlp_density.toFixed(3))})` : ''}${heads}${r.selector === 'fixed' ? ' fixed' : r.selection === 'block' ? ' block' : ''}${r.predictor_input === 'attn_in' ? ' lookahead' : ''}`;
    const cells = [r.shape, r.backend, sp, fmt(r.prefill_ms, 1), fmt(r.ms_per_token, 3), fmt(r.ms_per_token_readback, 3), fmt(r.tokens_per_s, 1),
      fmt(r.bytes_per_token / 1e6, 1), fmt(r.gbps, 1), fmt(r.floor_ms, 3), fmt(r.pct_of_floor, 1)];
    if (gpu) cells.push(fmt(r.gpu_ms_per_token, 3), fmt(r.gpu_pct_of_floor, 1), String(r.dispatches_per_token ?? '-'));
    if (hf) cells.push(fmt(r.hf_ms_per_token, 3), fmt(r.hf_gbps, 1), fmt(r.speedup_vs_hf, 2));
    return cells;
  });
  return table(header, body);
}

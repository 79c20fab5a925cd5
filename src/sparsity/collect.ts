/**
 * Data collection for MLP predictors (DESIGN.md item 3): run the dense model over a corpus and, per
 * layer, stream the predictor inputs and labels to temp files.
 *
 * Memory stays at one window's activations: every layer's rows go straight to its own files, so a
 * run over 100k tokens of an 8-layer model never holds layers × tokens in RAM. Training later loads
 * one layer at a time.
 *
 * Files in `dir`, per layer l and split s ('train' | 'val'):
 *   L{l}.{s}.attn_in.f16    (rows, d) fp16: attention input (after self_attn_layer_norm)
 *   L{l}.{s}.mlp_in.f16     (rows, d) fp16: fc1's input (after final_layer_norm)
 *   L{l}.{s}.attn_out.f16   (rows, d) fp16: attention's output o before out_proj (with attnOut: attn_io predictors)
 *   L{l}.{s}.labels.u32     (rows, ceil(f/32)) bit-packed labels fc1_act > 0, bit j%32 of word j/32
 *   L{l}.val.act.f16        (valRows, f) fp16 activation values, validation split only (mass recall)
 *   L{l}.{s}.heads.f32      (rows, H) f32 ‖W_o,h o_h‖: each head's contribution to out_proj's output (head predictors' labels)
 *   L{l}.w2norm.f32         (f) ‖fc2.weight[:, j]‖ per neuron
 *   meta.json               CollectionMeta
 * fp16 inputs halve the disk and the load; LayerNorm outputs are O(1), well inside fp16's range.
 */
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Runner, TracePoint } from '../backend/types.js';
import type { Checkpoint } from '../model/checkpoint.js';
import { toF32 } from '../model/tensor.js';
import { fail } from '../util/errors.js';
import { floatToHalf, halfToFloat } from '../util/f16.js';
import { sideBySide } from '../util/rows.js';
import type { PredictorInput } from './policy.js';
import { headContributions } from './head-fit.js';

export type Split = 'train' | 'val';

export interface CollectionMeta {
  layers: number;
  d: number;
  f: number;
  /** Attention heads; absent in collections made before head labels were recorded. */
  heads?: number;
  /** What the head labels are: 'contrib' (‖W_o,h o_h‖); absent in collections that recorded ‖o_h‖. */
  head_label?: 'contrib';
  /** Whether attention's output o was recorded (attn_io predictors read it); absent: not. */
  attn_out?: boolean;
  rows: Record<Split, number>;
  tokens: number;
  /** What was asked for: the tokens cap (tokens is what the text gave, up to it); absent in older collections. */
  requested_tokens?: number;
  /** The model's fingerprint (Checkpoint.fingerprint); absent in older collections. */
  model_fingerprint?: string;
  window: number;
  /** Mean fraction of neurons with fc1_act == 0, per layer, over all collected rows. */
  sparsity: number[];
}

export interface CollectOptions {
  /** Cap on tokens run through the model. */
  tokens: number;
  /** Window length (default: the model's context). Shorter windows are cheaper (attention is quadratic). */
  window?: number;
  /** Share of windows held out for validation/calibration (default 0.05). */
  valFraction?: number;
  /** Also record attention's output o (attn_io predictors read attn_in and o side by side). */
  attnOut?: boolean;
  onProgress?: (tokensDone: number, total: number) => void;
}

/**
 * Why a collection in `dir` cannot stand in for one of these options on this model, or null when it
 * can: another model, another window, another tokens cap (older collections, without the fields, are
 * checked by shape only). Reusing one silently would train on other data than the command says.
 */
export function reuseMismatch(meta: CollectionMeta, ck: Checkpoint, o: { tokens: number; window?: number }): string | null {
  const c = ck.config;
  if (meta.layers !== c.layers || meta.d !== c.hidden || meta.f !== c.ffn || (meta.heads !== undefined && meta.heads !== c.heads)) return 'is for another model shape';
  if (meta.model_fingerprint !== undefined && meta.model_fingerprint !== ck.fingerprint) return 'is from another model';
  const window = Math.min(o.window ?? c.maxPositions, c.maxPositions);
  if (meta.window !== window) return `was collected in windows of ${meta.window} tokens, not ${window}`;
  if (meta.requested_tokens !== undefined && meta.requested_tokens !== o.tokens) return `was collected with --tokens ${meta.requested_tokens}, not ${o.tokens}`;
  return null;
}

export const labelWords = (f: number): number => Math.ceil(f / 32);

/** Splits token ids into windows; each window after the first starts with BOS, as a fresh document would. */
export function windows(ids: number[], window: number, bos: number): number[][] {
  const out: number[][] = [];
  let i = 0;
  while (i < ids.length) {
    const head = out.length === 0 || ids[i] === bos ? [] : [bos];
    const take = window - head.length;
    const w = head.concat(ids.slice(i, i + take));
    i += take;
    if (w.length >= 2) out.push(w);
  }
  return out;
}

/** Which windows are validation: spread evenly (about every 1/frac-th), at least one when there are two or more. */
export function isValWindow(i: number, n: number, frac: number): boolean {
  if (n < 2) return false;
  const per = Math.max(1, Math.floor(frac * n));
  const stride = n / per;
  return Math.floor((i + 1) / stride) > Math.floor(i / stride);
}

/** Tokenises just enough of the text for `tokens` (the calibration file can be far larger than needed). */
function tokenize(ck: Checkpoint, text: string, tokens: number): number[] {
  let chars = Math.min(text.length, tokens * 6 + 1000);
  for (;;) {
    const ids = ck.tokenizer.encode(text.slice(0, chars));
    if (ids.length >= tokens || chars >= text.length) return ids.slice(0, tokens);
    chars = Math.min(text.length, chars * 2);
  }
}

const toHalf = (a: Float32Array): Uint16Array => {
  const h = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) h[i] = floatToHalf(a[i]);
  return h;
};

function packLabels(act: Float32Array, rows: number, f: number): { bits: Uint32Array; zeros: number } {
  const W = labelWords(f);
  const bits = new Uint32Array(rows * W);
  let zeros = 0;
  for (let t = 0; t < rows; t++) {
    for (let j = 0; j < f; j++) {
      if (act[t * f + j] > 0) bits[t * W + (j >>> 5)] |= 1 << (j & 31);
      else zeros++;
    }
  }
  return { bits, zeros };
}

const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

export const fileOf = (dir: string, l: number, s: Split, what: 'attn_in' | 'mlp_in' | 'attn_out' | 'labels' | 'act' | 'heads'): string =>
  join(dir, `L${l}.${s}.${what}.${what === 'labels' ? 'u32' : what === 'heads' ? 'f32' : 'f16'}`);

/** Runs the dense model over `text` and writes the collection to `dir`. */
export async function collect(runner: Runner, ck: Checkpoint, text: string, dir: string, o: CollectOptions): Promise<CollectionMeta> {
  const c = ck.config, L = c.layers, d = c.hidden, f = c.ffn;
  const window = Math.min(o.window ?? c.maxPositions, c.maxPositions);
  if (window < 2) fail(`--window must be at least 2 tokens`);
  const ids = tokenize(ck, text, o.tokens);
  const wins = windows(ids, window, c.bosTokenId);
  if (wins.length < 2) fail(`need at least two windows of text to hold out validation data; got ${ids.length} tokens`);
  const frac = o.valFraction ?? 0.05;
  mkdirSync(dir, { recursive: true });
  runner.setSparsity(null);

  const contributions = headContributions(ck);
  const fds = new Map<string, number>();
  const fd = (p: string) => { let h = fds.get(p); if (h === undefined) { h = openSync(p, 'w'); fds.set(p, h); } return h; };
  const rows: Record<Split, number> = { train: 0, val: 0 };
  const zeros = new Float64Array(L);
  let done = 0;
  const total = wins.reduce((a, w) => a + w.length, 0);
  try {
    for (let wi = 0; wi < wins.length; wi++) {
      const split: Split = isValWindow(wi, wins.length, frac) ? 'val' : 'train';
      const ids = wins[wi];
      runner.reset();
      const points: TracePoint[] = ['attn_in', 'mlp_in', 'fc1_act', 'attn_out'];
      await runner.forward(ids, {
        noLogits: true, tracePoints: points,
        trace: (l, p, data, T) => {
          if (p === 'attn_in' || p === 'mlp_in') writeSync(fd(fileOf(dir, l, split, p)), bytes(toHalf(data)));
          else if (p === 'attn_out') {
            writeSync(fd(fileOf(dir, l, split, 'heads')), bytes(contributions(l, data, T)));
            if (o.attnOut) writeSync(fd(fileOf(dir, l, split, 'attn_out')), bytes(toHalf(data)));
          }
          else if (p === 'fc1_act') {
            const { bits, zeros: z } = packLabels(data, T, f);
            zeros[l] += z;
            writeSync(fd(fileOf(dir, l, split, 'labels')), bytes(bits));
            if (split === 'val') writeSync(fd(fileOf(dir, l, split, 'act')), bytes(toHalf(data)));
          }
        },
      });
      rows[split] += ids.length;
      done += ids.length;
      o.onProgress?.(done, total);
    }
  } finally {
    for (const h of fds.values()) closeSync(h);
  }
  for (let l = 0; l < L; l++) {
    // fc2.weight is (d, f): neuron j's output direction is column j.
    const w2 = toF32(ck.weights.layers[l].fc2W);
    const norm = new Float32Array(f);
    for (let i = 0; i < d; i++) for (let j = 0; j < f; j++) norm[j] += w2[i * f + j] ** 2;
    for (let j = 0; j < f; j++) norm[j] = Math.sqrt(norm[j]);
    writeFileSync(join(dir, `L${l}.w2norm.f32`), bytes(norm));
  }
  const n = rows.train + rows.val;
  const meta: CollectionMeta = { layers: L, d, f, heads: c.heads, head_label: 'contrib', ...(o.attnOut ? { attn_out: true } : {}), rows, tokens: n, requested_tokens: o.tokens, model_fingerprint: ck.fingerprint, window, sparsity: Array.from(zeros, (z) => z / (n * f)) };
  writeFileSync(join(dir, 'meta.json'), JSON.stringify(meta, null, 1));
  return meta;
}

/** One layer's collected data, loaded into memory as f32 (training needs random access to rows). */
export interface LayerData {
  rows: number;
  x: Float32Array;        // (rows, d)
  labels: Uint32Array;    // (rows, ceil(f/32))
}

function readHalf(path: string): Float32Array {
  const b = readFileSync(path);
  const h = new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2);
  const out = new Float32Array(h.length);
  // A table lookup is ~10x faster than converting 40M halves one by one.
  for (let i = 0; i < h.length; i++) out[i] = HALF[h[i]];
  return out;
}
const HALF = (() => { const t = new Float32Array(65536); for (let i = 0; i < 65536; i++) t[i] = halfToFloat(i); return t; })();

function readU32(path: string): Uint32Array {
  const b = readFileSync(path);
  return new Uint32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

export function readMeta(dir: string): CollectionMeta {
  return JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as CollectionMeta;
}

/** x is (rows, predictorWidth(input, d)): for attn_io each row is the token's attn_in, then its o. */
export function loadLayer(dir: string, meta: CollectionMeta, l: number, split: Split, input: PredictorInput): LayerData {
  const rows = meta.rows[split], labels = readU32(fileOf(dir, l, split, 'labels'));
  if (input !== 'attn_io') return { rows, x: readHalf(fileOf(dir, l, split, input)), labels };
  requireAttnOut(dir, meta);
  return { rows, x: sideBySide(readHalf(fileOf(dir, l, split, 'attn_in')), readHalf(fileOf(dir, l, split, 'attn_out')), rows, meta.d), labels };
}

/** Refuses a collection made without attention's output o (attn_io predictors read it). */
export function requireAttnOut(dir: string, meta: CollectionMeta): void {
  if (!meta.attn_out) fail(`the collected data in ${dir} has no attention outputs (attn_io predictors read them): delete it or pick another --work folder`);
}

/** One layer's head norms (rows, H) for a split; a collection made before they were recorded is refused. */
export function loadHeadNorms(dir: string, meta: CollectionMeta, l: number, split: Split): Float32Array {
  if (!meta.heads || meta.head_label !== 'contrib') fail(`the collected data in ${dir} has no head labels of this version (collected by an older one): delete it or pick another --work folder`);
  const b = readFileSync(fileOf(dir, l, split, 'heads'));
  const a = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  if (a.length !== meta.rows[split] * meta.heads) fail(`${fileOf(dir, l, split, 'heads')} holds ${a.length} values, expected ${meta.rows[split]} x ${meta.heads}`);
  return a;
}

/** Validation activations (valRows, f) and ‖W2[:, j]‖ (f), for output-mass recall. */
export function loadMass(dir: string, l: number): { act: Float32Array; w2norm: Float32Array } {
  const b = readFileSync(join(dir, `L${l}.w2norm.f32`));
  return { act: readHalf(fileOf(dir, l, 'val', 'act')), w2norm: new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)) };
}

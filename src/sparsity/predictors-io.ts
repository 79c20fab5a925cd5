/**
 * A trained predictor set on disk: predictors.safetensors (per sparse layer `layers.{l}.A` (r, d),
 * `layers.{l}.B` (f, r), `layers.{l}.bias` (f), f32; with head predictors also, for every layer,
 * `heads.{l}.A` (rh, d), `heads.{l}.B` (H, rh), `heads.{l}.bias` (H)) and manifest.json
 * (PredictorManifest). The
 * manifest ties the set to one model by its fingerprint, so predictors are never applied to a model
 * they were not trained on.
 *
 * Reading goes through a FileSource, so this module (on the browser-facing main entry) imports no
 * node: module; writing a set is Node-only and lives in predictors-save.ts.
 */
import type { Checkpoint } from '../model/checkpoint.js';
import { readSafetensorsHeader, readTensor } from '../model/safetensors.js';
import { readText, type FileSource } from '../model/source.js';
import { DejavuError, fail } from '../util/errors.js';
import { inSharedMemory } from '../util/shared-memory.js';
import { roundK } from './calibrate.js';
import { BLOCK_SIZE, blockSlots, headKvFields, parseHeadKv, type HeadInput, type HeadKvMode, type HeadLayerPolicy, type LowRankPredictor, type MlpLayerPolicy, PREDICTOR_INPUTS, predictorWidth, type PredictorInput, type SparsityPolicy } from './policy.js';

export const MANIFEST = 'manifest.json';
export const WEIGHTS = 'predictors.safetensors';

export interface ManifestLayer {
  layer: number;
  dense: boolean;
  k: number;
  recall: number;
  mass_recall: number;
  precision: number;
  density: number;
  /** The block rule's calibration (calibrate-block.ts); absent in older files, which then run top-K. */
  block?: { cap: number; tau: number; density: number; recall: number; mass_recall: number };
}

/** One layer's head predictor calibration (head-fit.ts HeadCalibration). */
export interface ManifestHeadLayer {
  layer: number;
  /** Every head runs (the target needs all of them). */
  dense: boolean;
  k: number;
  mass_recall: number;
  oracle_mass: number;
  recall: number;
}

/** The manifest format for a set whose head predictors read `input` (PredictorManifest.format). */
export const manifestFormat = (input: HeadInput | undefined): PredictorManifest['format'] => (input === 'prev_attn_in' ? 'dejavu-predictors/2' : 'dejavu-predictors/1');

/** The head predictors of a set (train-predictors --heads); absent when it has none. */
export interface ManifestHeads {
  rank: number;
  heads: number;            // H
  /** Mean share of the heads' contributions ‖W_o,h o_h‖ the calibrated k must keep. */
  target_mass: number;
  /** What they read (policy.ts, HeadInput; train-predictors' default prev_attn_in); absent: 'attn_in', as in sets made before the lookahead. */
  input?: HeadInput;
  layers: ManifestHeadLayer[];
}

/** How a predictor set picks neurons: its calibrated block rule where it has one (auto), or top-K. */
export type Selection = 'auto' | 'block' | 'topk';

export interface PredictorManifest {
  /**
   * /2: its head predictors read the layer before's input (heads.input 'prev_attn_in'), which a build
   * reading only /1 would run on the layer's own input without a word; /1 otherwise (manifestFormat).
   */
  format: 'dejavu-predictors/1' | 'dejavu-predictors/2';
  model_fingerprint: string;
  rank: number;
  input: PredictorInput;
  target_recall: number;
  tokens: number;
  /** How the weights started: 'lowrank' (fc1's whitened rank-r approximation) or 'random'; absent in older files. */
  init?: string;
  /** Training epochs run per layer (0: the init as it is). */
  epochs?: number[];
  d: number;
  f: number;
  layers: ManifestLayer[];
  heads?: ManifestHeads;
}

/** What of a set runs sparse: its MLP predictors, its head predictors, or both. */
export type SparsePart = 'mlp' | 'heads';

export interface PolicyOptions {
  mlpDensity?: number;
  selection?: Selection;
  /** Default ['mlp']: head predictors cost quality on small models (docs/sparsity.md), so they are asked for. */
  parts?: SparsePart[];
  /** Fraction of heads every layer with a head predictor computes (k = round(H·D), at least 1); default: the calibrated k, and layers calibrated dense stay dense. */
  headDensity?: number;
  /** HeadLayerPolicy.kv and kvWindow (default 'all'; policy.ts, HeadKvMode). */
  headKv?: HeadKvMode;
}

export interface PredictorSet {
  manifest: PredictorManifest;
  /**
   * The policy to run. selection 'auto' (default): the calibrated block rule where every sparse layer
   * has one and no mlpDensity is given, else top-K. mlpDensity D: top-K with K = D·f, or with 'block'
   * the blocked top-cap rule with cap = ceil(D·64) and no threshold.
   */
  policy(o?: PolicyOptions): SparsityPolicy;
}

function checkManifest(m: PredictorManifest, where: string, layers: number): void {
  const ok = m && (m.format === 'dejavu-predictors/1' || m.format === 'dejavu-predictors/2') && typeof m.model_fingerprint === 'string' && Number.isInteger(m.rank) &&
    PREDICTOR_INPUTS.includes(m.input) && Array.isArray(m.layers) && Number.isInteger(m.d) && Number.isInteger(m.f);
  if (!ok) fail(`${where} is not a dejavu predictor manifest (missing or malformed fields)`);
  if (m.layers.length !== layers) fail(`${where} describes ${m.layers.length} layers, the model has ${layers}`);
  m.layers.forEach((L, i) => {
    if (L.layer !== i || typeof L.dense !== 'boolean' || !Number.isInteger(L.k) || L.k < 1 || L.k > m.f) fail(`${where}: layer entry ${i} is malformed`);
    const b = L.block;
    if (b !== undefined && !(b && Number.isInteger(b.cap) && b.cap >= 1 && b.cap <= BLOCK_SIZE && Number.isFinite(b.tau) && b.density >= 0 && b.density <= 1)) fail(`${where}: layer entry ${i} has a malformed block rule`);
  });
  const h = m.heads;
  if ((h?.input === 'prev_attn_in') !== (m.format === 'dejavu-predictors/2')) fail(`${where}: format ${m.format} does not go with ${h ? `head predictors reading ${h.input ?? 'attn_in'}` : 'a set without head predictors'}`);
  if (h === undefined) return;
  if (!(h && Number.isInteger(h.rank) && h.rank >= 1 && Number.isInteger(h.heads) && h.heads >= 1 && Array.isArray(h.layers) && h.layers.length === layers)) fail(`${where}: the heads section is malformed`);
  if (h.input !== undefined && h.input !== 'attn_in' && h.input !== 'prev_attn_in') fail(`${where}: the heads section's input must be attn_in or prev_attn_in`);
  h.layers.forEach((L, i) => {
    if (!(L && L.layer === i && typeof L.dense === 'boolean' && Number.isInteger(L.k) && L.k >= 1 && L.k <= h.heads)) fail(`${where}: head layer entry ${i} is malformed`);
  });
}

/**
 * Reads a predictor set and checks it against the model. `source` is a folder path in Node, or any
 * FileSource (a browser passes a FetchFileSource); a source passed in stays open, the caller's to close.
 */
export async function loadPredictors(source: string | FileSource, ck: Checkpoint): Promise<PredictorSet> {
  if (typeof source !== 'string') return readPredictors(source, ck);
  const src = await openFolder(source);
  try {
    return await readPredictors(src, ck);
  } finally {
    await src.close();
  }
}

/** A predictors folder on disk. The import is dynamic so the browser never loads node:fs (engine/model.ts does the same). */
async function openFolder(dir: string): Promise<FileSource> {
  const { NodeFileSource } = await import('../model/node-source.js');
  return NodeFileSource.open(dir).catch(() => fail(`predictors folder ${dir} not found`));
}

async function readPredictors(src: FileSource, ck: Checkpoint): Promise<PredictorSet> {
  const dir = src.location;
  try {
    if (!(await src.exists(MANIFEST))) fail(`missing file ${MANIFEST} in ${dir} (not a predictors folder from train-predictors)`);
    let manifest: PredictorManifest;
    try { manifest = JSON.parse(await readText(src, MANIFEST)); } catch { fail(`${MANIFEST} in ${dir} is not valid JSON`); }
    if (manifest?.model_fingerprint !== undefined && manifest.model_fingerprint !== ck.fingerprint) {
      fail(`predictors in ${dir} were trained for model ${manifest.model_fingerprint}, but this model is ${ck.fingerprint}`);
    }
    const c = ck.config;
    checkManifest(manifest, `${MANIFEST} in ${dir}`, c.layers);
    if (manifest.d !== c.hidden || manifest.f !== c.ffn) fail(`${MANIFEST} in ${dir} is for d=${manifest.d}, f=${manifest.f}; the model has d=${c.hidden}, f=${c.ffn}`);
    if (manifest.heads && manifest.heads.heads !== c.heads) fail(`${MANIFEST} in ${dir} has head predictors for ${manifest.heads.heads} heads; the model has ${c.heads}`);
    if (!(await src.exists(WEIGHTS))) fail(`missing file ${WEIGHTS} in ${dir}`);
    const entries = new Map((await readSafetensorsHeader(src, WEIGHTS)).map((e) => [e.name, e]));
    const get = async (name: string, shape: number[]): Promise<Float32Array> => {
      const e = entries.get(name);
      if (!e) fail(`${WEIGHTS} in ${dir} has no tensor ${name}`);
      if (e.dtype !== 'F32' || e.shape.join() !== shape.join()) fail(`${WEIGHTS} in ${dir}: ${name} is ${e.dtype} [${e.shape}], expected F32 [${shape}]`);
      // In shared memory where there is one: the CPU backend's threads then read it without a copy of their own.
      return inSharedMemory((await readTensor(src, e)).data as Float32Array);
    };
    const predictors: (LowRankPredictor | null)[] = [];
    for (const L of manifest.layers) {
      if (L.dense) { predictors.push(null); continue; }
      const r = manifest.rank;
      predictors.push({ rank: r, A: await get(`layers.${L.layer}.A`, [r, predictorWidth(manifest.input, c.hidden)]), B: await get(`layers.${L.layer}.B`, [c.ffn, r]), bias: await get(`layers.${L.layer}.bias`, [c.ffn]) });
    }
    const mh = manifest.heads;
    const headPredictors: LowRankPredictor[] = [];
    if (mh) {
      for (const L of mh.layers) {
        headPredictors.push({ rank: mh.rank, A: await get(`heads.${L.layer}.A`, [mh.rank, c.hidden]), B: await get(`heads.${L.layer}.B`, [c.heads, mh.rank]), bias: await get(`heads.${L.layer}.bias`, [c.heads]) });
      }
    }
    return {
      manifest,
      policy(o = {}) {
        const d = o.mlpDensity, sel = o.selection ?? 'auto', parts = o.parts ?? ['mlp'];
        if (d !== undefined && !(d > 0 && d <= 1)) fail(`--mlp-density must be in (0, 1], got ${d}`);
        if (!['auto', 'block', 'topk'].includes(sel)) fail(`--selection must be auto, block or topk (got ${sel})`);
        if (parts.length === 0 || parts.some((p) => p !== 'mlp' && p !== 'heads')) fail(`--sparse must list mlp and/or heads (got ${parts.join(',') || 'nothing'})`);
        const heads = parts.includes('heads') ? headPolicies(o) : undefined;
        const headInput = heads && mh!.input && mh!.input !== 'attn_in' ? { headInput: mh!.input } : {};
        if (!parts.includes('mlp')) return { input: manifest.input, ...headInput, mlp: manifest.layers.map(() => null), heads };
        const sparse = manifest.layers.filter((L) => !L.dense);
        const calibrated = sparse.every((L) => L.block);
        if (sel === 'block' && d === undefined && !calibrated) fail(`predictors in ${dir} have no block-rule calibration (trained before it existed): retrain them, or use --selection topk or --mlp-density`);
        const block = sel === 'block' || (sel === 'auto' && d === undefined && calibrated && sparse.length > 0);
        const mlp: (MlpLayerPolicy | null)[] = manifest.layers.map((L, l) => {
          const p = predictors[l];
          if (L.dense || !p) return null;
          if (!block) return { k: d === undefined ? L.k : roundK(d * c.ffn, c.ffn), selector: { kind: 'predictor', predictor: p } };
          const rule = d === undefined ? { cap: L.block!.cap, tau: L.block!.tau } : { cap: Math.min(BLOCK_SIZE, Math.ceil(d * BLOCK_SIZE)), tau: null };
          return { k: blockSlots(c.ffn, rule.cap), density: d === undefined ? L.block!.density : undefined, selector: { kind: 'predictor', predictor: p, block: rule } };
        });
        return { input: manifest.input, ...headInput, mlp, ...(heads ? { heads } : {}) };
      },
    };

    function headPolicies(o: PolicyOptions): (HeadLayerPolicy | null)[] {
      if (!mh) fail(`predictors in ${dir} have no head predictors: train them with train-predictors --heads`);
      const hd = o.headDensity, kv = o.headKv ?? 'all';
      if (hd !== undefined && !(hd > 0 && hd <= 1)) fail(`--head-density must be in (0, 1], got ${hd}`);
      const fields = headKvFields(parseHeadKv(kv));
      return mh.layers.map((L, l) => {
        const k = hd === undefined ? L.k : Math.max(1, Math.round(hd * c.heads));
        if ((hd === undefined && L.dense) || k >= c.heads) return null;
        return { k, ...fields, selector: { kind: 'predictor', predictor: headPredictors[l] } };
      });
    }
  } catch (e) {
    if (e instanceof DejavuError) throw e;
    fail(`could not read predictors in ${dir}: ${(e as Error).message.split('\n')[0]}`);
  }
}

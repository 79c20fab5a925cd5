import type { OptConfig } from '../../model/config.js';
import { OPT_POSITION_OFFSET } from '../../model/config.js';
import { toF32, type Tensor } from '../../model/tensor.js';
import type { OptWeights } from '../../model/weights.js';
import { fail } from '../../util/errors.js';
import { sideBySide } from '../../util/rows.js';
import { BLOCK_SIZE, checkHeadsPolicy, checkMlpPredictors, headKvChosen, headReadsPrev, predictorWidth, type HeadLayerPolicy, type LowRankPredictor, type MlpLayerPolicy, type SparsityPolicy } from '../../sparsity/policy.js';
import { predictScores } from '../../sparsity/predict.js';
import type { ForwardOptions, RowStats, Runner, StatsOptions, TracePoint } from '../types.js';
import { checkStatsRequest, rowStatsOf } from '../row-stats.js';
import { headAttention, headContribNorms, headOutGram, selectHeads } from './heads.js';
import { addInPlace, argmax, attention, blockSelect, layerNorm, linear, reluInPlace, sparseMlp, topK, transpose } from './kernels.js';
import type { CpuPool } from './pool.js';
import { checkSampling, gumbelPick, type GumbelSampling } from '../gumbel.js';

/** Closes the pool of a CPU runner that was dropped without dispose. */
const poolFinalizer = new FinalizationRegistry<CpuPool>((pool) => pool.close());

export interface CpuRunnerOptions {
  /**
   * Threads for linear and attention (pool.ts: linear's parts are ranges of the outputs, attention's
   * (head, block of queries) cells, the same bits as one thread); the runner copies the matrices
   * linear reads into shared memory (a checkpoint stored in f32 is then held twice while the
   * checkpoint is), keeps the K/V caches there, and closes the pool on dispose (or when it is
   * garbage-collected). Node only (select.ts makes one); without it, one thread.
   */
  pool?: CpuPool;
}

interface CpuLayer {
  attnLnW: Float32Array; attnLnB: Float32Array;   // (d)
  qkvW: Float32Array; qkvB: Float32Array | null;  // (3d, d), (3d): q, k, v stacked so one pass reads x
  oW: Float32Array; oB: Float32Array | null;      // (d, d), (d)
  mlpLnW: Float32Array; mlpLnB: Float32Array;     // (d)
  fc1W: Float32Array; fc1B: Float32Array | null;  // (f, d), (f)
  fc2W: Float32Array; fc2B: Float32Array | null;  // (d, f), (d)
  fc2T: Float32Array | null;                      // (f, d): fc2 transposed, built when a sparse policy needs it
  kCache: Float32Array; vCache: Float32Array;     // (maxPositions, d), shared with the pool's threads where there is one
  skip: Uint8Array | null;                        // (maxPositions, H): 1 where a head did not run (sparse heads)
}

const f32 = (t: Tensor | null) => (t ? toF32(t) : null);

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

const yieldToEventLoop = (): Promise<void> => new Promise((r) => (typeof setImmediate === 'function' ? setImmediate(r) : setTimeout(r, 0)));

/**
 * Runner.decodeGreedy as a host loop over forward: logits read back, argmax (or with `sampling` the
 * Gumbel-max draw at the step's position), the id fed back. The CPU runner's implementation, and the
 * reference the WebGPU runner's chained one is tested against.
 */
export async function decodeGreedyOnHost(r: Runner, first: number, maxSteps: number, onToken: (id: number) => boolean, sampling?: GumbelSampling): Promise<number[]> {
  checkSampling(sampling);
  if (!(Number.isInteger(maxSteps) && maxSteps >= 0)) fail(`decode steps must be an integer >= 0, got ${maxSteps}`);
  if (r.position + maxSteps > r.config.maxPositions) fail(`${maxSteps} decode steps from position ${r.position} pass the context of ${r.config.maxPositions}`);
  const ids: number[] = [];
  for (let prev = first; ids.length < maxSteps; ) {
    const pos = r.position;
    const logits = await r.forward([prev]);
    const id = sampling ? gumbelPick(logits, sampling, pos) : argmax(logits);
    ids.push(id);
    if (!onToken(id)) break;
    prev = id;
    // The CPU forward computes synchronously: let the caller act on this token (stream it, stop)
    // before the next step starts, as a host sampling loop would.
    await yieldToEventLoop();
  }
  return ids;
}

/** The reference backend: plain TypeScript, float32 everywhere. */
export class CpuRunner implements Runner {
  readonly backend = 'cpu' as const;
  get description(): string { return `cpu: TypeScript, float32, ${this.pool?.threads ?? 1} thread${(this.pool?.threads ?? 1) > 1 ? 's' : ''}`; }
  private pos = 0;
  private policy: SparsityPolicy | null = null;
  /**
   * The MLP predictors' matrices as the pool's threads read them (shared copies, made once a
   * predictor by setSparsity and dropped when a later policy no longer uses it; copies, so a
   * predictor changed in place after setSparsity is not seen), or as given without a pool.
   */
  private predMats = new Map<LowRankPredictor, LowRankPredictor>();
  private layers: CpuLayer[];
  private embed: Float32Array; private positions: Float32Array;
  private projectIn: Float32Array | null; private projectOut: Float32Array | null;
  private finalLnW: Float32Array | null; private finalLnB: Float32Array | null;
  private lmHead: Float32Array;

  /** linear and attention on several threads (CpuRunnerOptions.pool), the weights and K/V caches in shared memory; else null. */
  private pool: CpuPool | null;

  constructor(readonly config: OptConfig, w: OptWeights, opts: CpuRunnerOptions = {}) {
    const c = config;
    const pool = this.pool = opts.pool ?? null;
    // With a pool, the matrices (and biases) linear reads go to shared memory as each is made, so the
    // unshared copy of one matrix at a time is all that exists besides them.
    const sh = <A extends Float32Array | null>(a: A): A => (pool && a ? pool.share(a) : a) as A;
    const cache = () => (pool ? pool.zeros(c.maxPositions * c.hidden) : new Float32Array(c.maxPositions * c.hidden));
    const tied = w.lmHead === w.embedTokens;
    this.lmHead = sh(toF32(w.lmHead));
    this.embed = tied ? this.lmHead : toF32(w.embedTokens);
    this.positions = toF32(w.embedPositions);
    this.projectIn = sh(f32(w.projectIn)); this.projectOut = sh(f32(w.projectOut));
    this.finalLnW = f32(w.finalLnW); this.finalLnB = f32(w.finalLnB);
    this.layers = w.layers.map((l) => ({
      attnLnW: toF32(l.attnLnW), attnLnB: toF32(l.attnLnB),
      qkvW: sh(concat([toF32(l.qW), toF32(l.kW), toF32(l.vW)])),
      qkvB: sh(l.qB && l.kB && l.vB ? concat([toF32(l.qB), toF32(l.kB), toF32(l.vB)]) : null),
      oW: sh(toF32(l.oW)), oB: sh(f32(l.oB)),
      mlpLnW: toF32(l.mlpLnW), mlpLnB: toF32(l.mlpLnB),
      fc1W: sh(toF32(l.fc1W)), fc1B: sh(f32(l.fc1B)),
      fc2W: sh(toF32(l.fc2W)), fc2B: sh(f32(l.fc2B)), fc2T: null,
      kCache: cache(), vCache: cache(),
      skip: null,
    }));
    // A runner dropped without dispose still stops its threads (they hold every shared matrix).
    if (pool) poolFinalizer.register(this, pool);
  }

  /** linear (kernels.ts), on the pool's threads where there is one. */
  private lin(x: Float32Array, T: number, W: Float32Array, b: Float32Array | null, nIn: number, nOut: number): Float32Array {
    return this.pool ? this.pool.linear(x, T, W, b, nIn, nOut) : linear(x, T, W, b, nIn, nOut);
  }

  /** Dense attention (kernels.ts) of layer L's caches, on the pool's threads where there is one. */
  private att(q: Float32Array, T: number, L: CpuLayer, headNorm?: Float32Array): Float32Array {
    const c = this.config;
    return this.pool ? this.pool.attention(q, T, this.pos, L.kCache, L.vCache, c.heads, c.headDim, undefined, headNorm)
      : attention(q, T, this.pos, L.kCache, L.vCache, c.heads, c.headDim, undefined, headNorm);
  }

  get position(): number { return this.pos; }
  reset(): void { this.pos = 0; }
  dispose(): void { this.layers = []; this.pool?.close(); }

  setSparsity(policy: SparsityPolicy | null): void {
    const c = this.config;
    if (policy && policy.mlp.length !== c.layers) fail(`sparsity policy has ${policy.mlp.length} layers, the model has ${c.layers}`);
    if (policy) { checkMlpPredictors(policy, c.hidden, c.ffn); checkHeadsPolicy(policy, c.layers, c.heads, c.hidden); }
    this.policy = policy;
    this.tau = [];
    this.resetMlpDensity();
    // A new (or the same) policy forgets which heads skipped which positions (HeadLayerPolicy).
    this.layers.forEach((L, l) => { L.skip = policy?.heads?.[l] ? new Uint8Array(c.maxPositions * c.heads) : null; });
    if (policy) {
      policy.mlp.forEach((p, l) => {
        const layer = this.layers[l];
        if (p && !layer.fc2T) layer.fc2T = transpose(layer.fc2W, this.config.hidden, this.config.ffn);
      });
    }
    // Dense (null) keeps the copies: eval --compare switches a policy off and on every window.
    if (!policy) return;
    const used = new Set(policy.mlp.flatMap((p) => (p?.selector.kind === 'predictor' ? [p.selector.predictor] : [])));
    for (const [p, m] of this.predMats) {
      if (used.has(p)) continue;
      if (this.pool && m !== p) for (const a of [m.A, m.B, m.bias]) this.pool.drop(a);
      this.predMats.delete(p);
    }
    const pool = this.pool;
    for (const p of used) {
      if (!this.predMats.has(p)) this.predMats.set(p, pool ? { rank: p.rank, A: pool.share(p.A), B: pool.share(p.B), bias: pool.share(p.bias) } : p);
    }
  }

  /** Block rule: neurons chosen per layer since resetMlpDensity, and the tokens that ran. */
  private chosen: number[] = [];
  private mlpTokens = 0;

  /** setBlockThresholds' τ per layer over the policy's (undefined: the policy's own). */
  private tau: (number | undefined)[] = [];

  setBlockThresholds(tau: (number | null)[]): void {
    if (tau.length !== this.config.layers) fail(`setBlockThresholds: ${tau.length} thresholds for ${this.config.layers} layers`);
    this.tau = tau.map((t, l) => t ?? this.tau[l]);
    this.resetMlpDensity();
  }

  resetMlpDensity(): void {
    this.chosen = new Array(this.config.layers).fill(0);
    this.mlpTokens = 0;
  }

  async mlpDensity(): Promise<(number | null)[]> {
    const f = this.config.ffn;
    return (this.policy?.mlp ?? new Array(this.config.layers).fill(null)).map((lp, l) => {
      if (!lp) return null;
      const s = lp.selector;
      return s.kind === 'predictor' && s.block ? (this.mlpTokens ? this.chosen[l] / (this.mlpTokens * f) : NaN) : (s.kind === 'fixed' ? s.indices.length : lp.k) / f;
    });
  }

  /** forwardStats' reference: the logits of the last forward run with `keep`. */
  private statsRef: { logits: Float32Array; rows: number } | null = null;

  /** The logits in float64 on the host (rowStatsOf): what evaluation computed from forward's logits before forwardStats. */
  async forwardStats(ids: number[], opts: StatsOptions): Promise<RowStats> {
    checkStatsRequest(ids, opts, this.config.vocabSize, this.statsRef?.rows ?? null, this.pos, this.config.maxPositions);
    const ref = this.statsRef;
    if (opts.keep) this.statsRef = null;   // a keep that fails leaves no reference (as on WebGPU)
    const logits = await this.forward(ids, { allLogits: true });
    const stats = rowStatsOf(logits, ids.length, this.config.vocabSize, opts.targets, opts.kl ? ref!.logits : null, opts.from ?? 0);
    if (opts.keep) this.statsRef = { logits, rows: ids.length };
    return stats;
  }

  async forward(ids: number[], opts: ForwardOptions = {}): Promise<Float32Array> {
    const c = this.config, T = ids.length, d = c.hidden, f = c.ffn, e = c.wordEmbedProjDim;
    if (T === 0) fail('forward needs at least one token');
    if (this.pos + T > c.maxPositions) fail(`sequence of ${this.pos + T} tokens is longer than the model's context of ${c.maxPositions}`);
    for (const id of ids) if (!(Number.isInteger(id) && id >= 0 && id < c.vocabSize)) fail(`token id ${id} is outside the vocabulary of ${c.vocabSize}`);
    const want = new Set(opts.tracePoints ?? ['attn_in', 'mlp_in', 'fc1_act', 'head_norm']);
    const trace = opts.trace;
    const emit = (l: number, p: TracePoint, data: Float32Array) => {
      if (trace && want.has(p)) trace(l, p, data.slice(), T);
    };

    // Embeddings: token (projected to d when e != d) + learned position at pos + 2.
    let tok: Float32Array = new Float32Array(T * e);
    ids.forEach((id, t) => tok.set(this.embed.subarray(id * e, (id + 1) * e), t * e));
    if (this.projectIn) tok = this.lin(tok, T, this.projectIn, null, e, d);
    const x = tok;
    for (let t = 0; t < T; t++) {
      const p = (this.pos + t + OPT_POSITION_OFFSET) * d;
      for (let i = 0; i < d; i++) x[t * d + i] += this.positions[p + i];
    }

    const headNorm = trace && want.has('head_norm') ? new Float32Array(T * c.heads) : undefined;
    let prevH: Float32Array | null = null;   // the layer before's attention input (the head lookahead reads it)
    for (let l = 0; l < c.layers; l++) {
      const L = this.layers[l];
      // Attention block
      const h = c.preLayerNorm ? layerNorm(x, T, d, L.attnLnW, L.attnLnB, c.layerNormEps) : x.slice();
      emit(l, 'attn_in', h);
      const hp = T === 1 ? this.policy?.heads?.[l] ?? null : null;
      let o: Float32Array;
      if (hp) {
        o = this.sparseHeads(hp, l, h, headReadsPrev(this.policy, l) ? prevH! : h);
        if (headNorm) for (let g = 0; g < c.heads; g++) headNorm[g] = Math.hypot(...o.subarray(g * c.headDim, (g + 1) * c.headDim));
      } else {
        const qkv = this.lin(h, T, L.qkvW, L.qkvB, d, 3 * d);
        const q = new Float32Array(T * d);
        for (let t = 0; t < T; t++) {
          const s = t * 3 * d, dst = (this.pos + t) * d;
          q.set(qkv.subarray(s, s + d), t * d);
          L.kCache.set(qkv.subarray(s + d, s + 2 * d), dst);
          L.vCache.set(qkv.subarray(s + 2 * d, s + 3 * d), dst);
        }
        // Every head runs at these positions: clear what an earlier sparse step recorded there. A
        // completion position of kvWindow inside the pass completes its window before the pass too
        // (the holes of an even decode step right before a prompt, with window 2), as the WebGPU
        // runner's completion form does (gemv.ts, LAZY 'complete').
        const win = this.policy?.heads?.[l]?.kvWindow ?? 0;
        let cp = this.pos;
        while (win && (cp + 1) % win !== 0) cp++;
        const from = win && cp < this.pos + T ? Math.max(0, cp + 1 - win) : this.pos;
        L.skip?.fill(0, Math.min(from, this.pos) * c.heads, (this.pos + T) * c.heads);
        o = this.att(q, T, L, headNorm);
      }
      prevH = h;
      if (headNorm) emit(l, 'head_norm', headNorm);
      emit(l, 'attn_out', o);
      addInPlace(x, this.lin(o, T, L.oW, L.oB, d, d));
      if (!c.preLayerNorm) layerNorm(x, T, d, L.attnLnW, L.attnLnB, c.layerNormEps, x);

      // MLP block
      const m = c.preLayerNorm ? layerNorm(x, T, d, L.mlpLnW, L.mlpLnB, c.layerNormEps) : x.slice();
      emit(l, 'mlp_in', m);
      const lp = this.policy?.mlp[l] ?? null;
      if (lp) {
        const act = new Float32Array(T * f);
        const y = new Float32Array(T * d);
        // What the predictor reads (T rows): attn_in, mlp_in, or for attn_io attn_in and o side by side.
        const input = this.policy!.input, predIn = input === 'attn_io' ? sideBySide(h, o, T, d) : input === 'mlp_in' ? m : h;
        // The scores the choice ranks, every row at once on the pool's threads (linear's bits do not
        // depend on T or the thread count: a row at a time's): a predictor's two products, or the
        // oracle's true fc1 pre-activations.
        const s = lp.selector, n = predictorWidth(input, d);
        let scores: Float32Array | null = null;
        if (s.kind === 'predictor') {
          const pm = this.predMats.get(s.predictor) ?? s.predictor;
          scores = this.lin(this.lin(predIn, T, pm.A, null, n, pm.rank), T, pm.B, pm.bias, pm.rank, f);
        } else if (s.kind === 'oracle') scores = this.lin(m, T, L.fc1W, L.fc1B, d, f);
        for (let t = 0; t < T; t++) {
          const sel = this.select(lp, l, scores, t);
          sparseMlp(m.subarray(t * d, (t + 1) * d), L.fc1W, L.fc1B, L.fc2T!, L.fc2B, d, sel, y.subarray(t * d, (t + 1) * d), act.subarray(t * f, (t + 1) * f));
        }
        emit(l, 'fc1_act', act);
        addInPlace(x, y);
      } else {
        const a = reluInPlace(this.lin(m, T, L.fc1W, L.fc1B, d, f));
        emit(l, 'fc1_act', a);
        addInPlace(x, this.lin(a, T, L.fc2W, L.fc2B, f, d));
      }
      if (!c.preLayerNorm) layerNorm(x, T, d, L.mlpLnW, L.mlpLnB, c.layerNormEps, x);
    }
    this.pos += T;
    this.mlpTokens += T;
    if (opts.noLogits) return new Float32Array(0);

    // Head: final LayerNorm, project_out, tied or separate lm_head, on the rows asked for.
    const rows = opts.allLogits ? T : 1;
    const last = x.subarray((T - rows) * d);
    let hf = this.finalLnW ? layerNorm(last, rows, d, this.finalLnW, this.finalLnB!, c.layerNormEps) : last.slice();
    if (this.projectOut) hf = this.lin(hf, rows, this.projectOut, null, d, e);
    return this.lin(hf, rows, this.lmHead, null, e, c.vocabSize);
  }

  decodeGreedy(first: number, maxSteps: number, onToken: (id: number) => boolean, sampling?: GumbelSampling): Promise<number[]> {
    return decodeGreedyOnHost(this, first, maxSteps, onToken, sampling);
  }

  /**
   * Attention of one decode token with sparse heads (HeadLayerPolicy): the chosen heads' q, k, v rows
   * only, their K/V stored, the others marked skipped at this position. Returns o (d), zeros outside
   * the chosen heads. h is the attention input (LN(x)); the head predictor reads predIn (h, or with
   * the head lookahead the layer before's attention input: policy.ts, HeadInput).
   */
  private sparseHeads(hp: HeadLayerPolicy, l: number, h: Float32Array, predIn: Float32Array): Float32Array {
    const c = this.config, d = c.hidden, H = c.heads, hd = c.headDim, L = this.layers[l], s = hp.selector;
    const kvAll = !headKvChosen(hp), win = hp.kvWindow ?? 0;
    if (s.kind === 'oracle') return this.oracleHeads(hp.k, l, h, kvAll, win);
    const heads = s.kind === 'fixed' ? Uint32Array.from(s.heads).sort() : selectHeads(predictScores(s.predictor, predIn, d), hp.k);
    const q = new Float32Array(d), at = this.pos * d;
    L.skip!.fill(kvAll ? 0 : 1, this.pos * H, (this.pos + 1) * H);
    // With a completion window every head's K/V is stored and the unchosen ones marked (policy.ts, kvWindow).
    for (const g of kvAll || win ? Uint32Array.from({ length: H }, (_, i) => i) : heads) {
      const chosen = heads.includes(g);
      if (kvAll || chosen) L.skip![this.pos * H + g] = 0;
      for (let part = chosen ? 0 : 1; part < 3; part++) {
        for (let i = 0; i < hd; i++) {
          const row = part * d + g * hd + i;
          let v = L.qkvB ? L.qkvB[row] : 0;
          for (let j = 0; j < d; j++) v += L.qkvW[row * d + j] * h[j];
          if (part === 0) q[g * hd + i] = v; else (part === 1 ? L.kCache : L.vCache)[at + g * hd + i] = v;
        }
      }
    }
    this.completeWindow(L, win);
    return headAttention(q, this.pos, L.kCache, L.vCache, H, hd, heads, L.skip!);
  }

  /**
   * kvWindow: at every W-th position, before attention, the last W positions' holes are filled
   * (unmarked: their K/V are stored). Returns whether this position completed.
   */
  private completeWindow(L: CpuLayer, win: number): boolean {
    const H = this.config.heads;
    if (!win || (this.pos + 1) % win !== 0) return false;
    L.skip!.fill(0, Math.max(0, this.pos + 1 - win) * H, (this.pos + 1) * H);
    return true;
  }

  private grams: (Float32Array | undefined)[] = [];
  /** Layer l's per-head Gram matrices of out_proj (headOutGram), made on first use. */
  private headGram(l: number): Float32Array {
    const c = this.config;
    return (this.grams[l] ??= headOutGram(this.layers[l].oW, c.hidden, c.heads, c.headDim));
  }

  /**
   * The oracle's choice (HeadSelector 'oracle'): every head runs (its K/V stored, attending to its own
   * unskipped positions), then the k heads whose contributions to out_proj's output, ‖W_o,h o_h‖, are
   * largest are kept; the others' outputs are dropped (with kv 'chosen' their position is also
   * marked skipped, as if they had not run). Ranking by ‖o_h‖ alone measured worse (docs/sparsity.md).
   */
  private oracleHeads(k: number, l: number, h: Float32Array, kvAll: boolean, win: number): Float32Array {
    const c = this.config, d = c.hidden, H = c.heads, hd = c.headDim, L = this.layers[l];
    const qkv = this.lin(h, 1, L.qkvW, L.qkvB, d, 3 * d), at = this.pos * d;
    L.kCache.set(qkv.subarray(d, 2 * d), at);
    L.vCache.set(qkv.subarray(2 * d, 3 * d), at);
    L.skip!.fill(0, this.pos * H, (this.pos + 1) * H);
    const completed = this.completeWindow(L, win);
    const all = Uint32Array.from({ length: H }, (_, g) => g);
    const o = headAttention(qkv.subarray(0, d), this.pos, L.kCache, L.vCache, H, hd, all, L.skip!);
    const norms = headContribNorms(o, 1, this.headGram(l), H, hd);
    const keep = new Set(selectHeads(norms, k));
    for (let g = 0; g < H; g++) if (!keep.has(g)) { o.fill(0, g * hd, (g + 1) * hd); if (!kvAll && !completed) L.skip![this.pos * H + g] = 1; }
    return o;
  }

  /** The neurons that token t of layer l computes; scores (T, f): the predictor's or the oracle's (none for a fixed set). */
  private select(lp: MlpLayerPolicy, l: number, allScores: Float32Array | null, t: number): Uint32Array {
    const f = this.config.ffn, s = lp.selector;
    if (s.kind === 'fixed') return s.indices;
    const scores = allScores!.subarray(t * f, (t + 1) * f);
    if (s.kind === 'oracle' || !s.block) return topK(scores, lp.k);
    const chosen = blockSelect(scores, BLOCK_SIZE, s.block.cap, this.tau[l] ?? s.block.tau).chosen;
    this.chosen[l] += chosen.length;
    return chosen;
  }
}

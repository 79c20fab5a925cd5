/**
 * Predictor training on WebGPU: one minibatch step is 5 matmuls, the BCE gradient, a column sum and
 * three AdamW updates, all encoded into one command buffer. The host only uploads the minibatch
 * (queue.writeBuffer lands before anything submitted after it, so one input buffer is reused) and
 * reads back the loss once per epoch and the validation scores for recall.
 */
import type { Gpu } from '../../backend/webgpu/device.js';
import type { LowRankPredictor } from '../policy.js';
import type { SessionConfig, TrainEngine, TrainSession } from '../train.js';
import { adamUniform, adamwWgsl, bceGradWgsl, colSumWgsl, matmulKey, matmulWgsl, MM_TILE, type MatmulVariant } from './kernels.js';

// GPUBufferUsage flags as numbers: in Node the globals exist only after the webgpu module is loaded.
const S = 0x80, CD = 0x08, CS = 0x04, U = 0x40, MAP_READ = 0x01, MAP_MODE_READ = 0x01;
/** Steps submitted before the host waits for the queue: bounds staged uploads without stalling every step. */
const IN_FLIGHT = 4;

class Pipelines {
  private cache = new Map<string, GPUComputePipeline>();
  constructor(private device: GPUDevice) {}
  get(key: string, wgsl: () => string): GPUComputePipeline {
    let p = this.cache.get(key);
    if (!p) {
      p = this.device.createComputePipeline({ layout: 'auto', compute: { module: this.device.createShaderModule({ code: wgsl() }), entryPoint: 'main' } });
      this.cache.set(key, p);
    }
    return p;
  }
  matmul(v: MatmulVariant) { return this.get(matmulKey(v), () => matmulWgsl(v)); }
}

interface Dispatch { pipeline: GPUComputePipeline; bind: GPUBindGroup; x: number; y: number }

export class GpuTrainEngine implements TrainEngine {
  readonly name: string;
  private pipes: Pipelines;
  constructor(private gpu: Gpu) { this.name = `webgpu (${gpu.adapterName})`; this.pipes = new Pipelines(gpu.device); }
  async session(init: LowRankPredictor, cfg: SessionConfig): Promise<TrainSession> { return new GpuSession(this.gpu.device, this.pipes, init, cfg); }
}

class GpuSession implements TrainSession {
  private bufs: GPUBuffer[] = [];
  private stepDispatches: Dispatch[];
  private scoreDispatches: (rows: number) => Dispatch[];
  private x: GPUBuffer; private y: GPUBuffer; private A: GPUBuffer; private B: GPUBuffer; private bias: GPUBuffer;
  private s: GPUBuffer; private loss: GPUBuffer; private adamU: GPUBuffer[];
  private sizes: number[];
  private pending = 0;
  private t = 0;

  constructor(private device: GPUDevice, pipes: Pipelines, init: LowRankPredictor, private cfg: SessionConfig) {
    const { d, f, rank: r, batch: n } = cfg;
    const words = Math.ceil(f / 32);
    const buf = (floats: number, usage = S | CD | CS, data?: Float32Array) => {
      const b = device.createBuffer({ size: Math.max(16, floats * 4), usage });
      if (data) device.queue.writeBuffer(b, 0, data as Float32Array<ArrayBuffer>);
      this.bufs.push(b);
      return b;
    };
    const uni = (vals: number[]) => { const b = buf(4, U | CD); device.queue.writeBuffer(b, 0, new Uint32Array(vals)); return b; };
    this.x = buf(n * d); this.y = buf(n * words);
    this.A = buf(r * d, S | CD | CS, init.A); this.B = buf(f * r, S | CD | CS, init.B); this.bias = buf(f, S | CD | CS, init.bias);
    const u = buf(n * r), dU = buf(n * r);
    this.s = buf(n * f); const g = buf(n * f);
    const dA = buf(r * d), dB = buf(f * r), db = buf(f);
    this.loss = buf(n);
    this.sizes = [r * d, f * r, f];
    const moments = this.sizes.map((k) => [buf(k), buf(k)]);
    this.adamU = this.sizes.map(() => buf(8, U | CD));

    const bind = (p: GPUComputePipeline, res: GPUBuffer[]) => device.createBindGroup({ layout: p.getBindGroupLayout(0), entries: res.map((buffer, binding) => ({ binding, resource: { buffer } })) });
    const mm = (v: MatmulVariant, a: GPUBuffer, b: GPUBuffer, c: GPUBuffer, M: number, N: number, K: number, bias?: GPUBuffer): Dispatch => {
      const pipeline = pipes.matmul(v);
      const res = [a, b, c, uni([M, N, K, 0])];
      if (bias) res.push(bias);
      return { pipeline, bind: bind(pipeline, res), x: Math.ceil(N / MM_TILE), y: Math.ceil(M / MM_TILE) };
    };
    const nn = { transA: false, transB: false, bias: false }, nt = { ...nn, transB: true }, tn = { ...nn, transA: true };

    const bceP = pipes.get('train_bce_grad_wg256', bceGradWgsl);
    const bceU = buf(8, U | CD);
    const bu = new ArrayBuffer(32);
    new Uint32Array(bu, 0, 4).set([n, f, words, 0]);
    new Float32Array(bu, 16, 2).set([cfg.posWeight, 1 / n]); // scale 1/n: gradient of the mean loss over rows
    device.queue.writeBuffer(bceU, 0, bu);
    const colP = pipes.get('train_colsum_wg256', colSumWgsl);
    const adamP = pipes.get('train_adamw_wg256', adamwWgsl);
    const adam = (i: number, w: GPUBuffer, gr: GPUBuffer): Dispatch => {
      const groups = Math.ceil(this.sizes[i] / 256);
      return { pipeline: adamP, bind: bind(adamP, [w, gr, moments[i][0], moments[i][1], this.adamU[i]]), x: Math.min(groups, 65535), y: Math.ceil(groups / 65535) };
    };
    // Forward: U = X Aᵀ (n, r); S = U Bᵀ + bias (n, f). Backward: G = dL/dS; dB = Gᵀ U; db = Σ G; dU = G B; dA = dUᵀ X.
    this.stepDispatches = [
      mm(nt, this.x, this.A, u, n, r, d),
      mm({ ...nt, bias: true }, u, this.B, this.s, n, f, r, this.bias),
      { pipeline: bceP, bind: bind(bceP, [this.s, this.y, g, this.loss, bceU]), x: n, y: 1 },
      mm(tn, g, u, dB, f, r, n),
      { pipeline: colP, bind: bind(colP, [g, db, uni([n, f, 0, 0])]), x: Math.ceil(f / 256), y: 1 },
      mm(nn, g, this.B, dU, n, r, f),
      mm(tn, dU, this.x, dA, r, d, n),
      adam(0, this.A, dA), adam(1, this.B, dB), adam(2, this.bias, db),
    ];
    // Scoring reuses the forward half with the row count of the chunk (its own uniforms: built per call).
    this.scoreDispatches = (rows) => [mm(nt, this.x, this.A, u, rows, r, d), mm({ ...nt, bias: true }, u, this.B, this.s, rows, f, r, this.bias)];
  }

  private encode(ds: Dispatch[]): GPUCommandBuffer {
    const enc = this.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (const d of ds) { pass.setPipeline(d.pipeline); pass.setBindGroup(0, d.bind); pass.dispatchWorkgroups(d.x, d.y); }
    pass.end();
    return enc.finish();
  }

  async step(x: Float32Array, labels: Uint32Array): Promise<void> {
    const q = this.device.queue;
    q.writeBuffer(this.x, 0, x as Float32Array<ArrayBuffer>);
    q.writeBuffer(this.y, 0, labels as Uint32Array<ArrayBuffer>);
    this.t++;
    this.sizes.forEach((k, i) => q.writeBuffer(this.adamU[i], 0, adamUniform({ ...this.cfg.adam, weightDecay: i === 2 ? 0 : this.cfg.adam.weightDecay, step: this.t }, k)));
    q.submit([this.encode(this.stepDispatches)]);
    if (++this.pending >= IN_FLIGHT) { await q.onSubmittedWorkDone(); this.pending = 0; }
  }

  private async read(b: GPUBuffer, floats: number): Promise<Float32Array> {
    const st = this.device.createBuffer({ size: floats * 4, usage: MAP_READ | CD });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(b, 0, st, 0, floats * 4);
    this.device.queue.submit([enc.finish()]);
    await st.mapAsync(MAP_MODE_READ);
    const out = new Float32Array(st.getMappedRange().slice(0));
    st.destroy();
    return out;
  }

  async takeLoss(): Promise<number> {
    const l = await this.read(this.loss, this.cfg.batch);
    this.device.queue.writeBuffer(this.loss, 0, new Float32Array(this.cfg.batch));
    return l.reduce((a, b) => a + b, 0);
  }

  async scores(x: Float32Array, rows: number): Promise<Float32Array> {
    const { d, f, batch } = this.cfg;
    const out = new Float32Array(rows * f);
    for (let r0 = 0; r0 < rows; r0 += batch) {
      const n = Math.min(batch, rows - r0);
      this.device.queue.writeBuffer(this.x, 0, x as Float32Array<ArrayBuffer>, r0 * d, n * d);
      this.device.queue.submit([this.encode(this.scoreDispatches(n))]);
      out.set(await this.read(this.s, n * f), r0 * f);
    }
    this.pending = 0;
    return out;
  }

  async params(): Promise<LowRankPredictor> {
    return { rank: this.cfg.rank, A: await this.read(this.A, this.sizes[0]), B: await this.read(this.B, this.sizes[1]), bias: await this.read(this.bias, this.sizes[2]) };
  }

  dispose(): void { for (const b of this.bufs) b.destroy(); this.bufs = []; }
}

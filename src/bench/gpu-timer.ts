/**
 * Times a list of dispatches on the GPU: `reps` iterations of it encoded in one compute pass (one
 * timed sample), several samples, the median per-iteration time.
 *
 * With `timestamp-query` each sample pass carries timestampWrites (beginning and end of the pass) and
 * all samples go in one command buffer; otherwise each sample is submitted on its own and timed with
 * the wall clock around onSubmittedWorkDone (which adds submission latency, spread over `reps`).
 * Samples are made long (`targetMs`, default 20 ms) so that quantised timestamps and the per-pass
 * overhead are a small part of them: Dawn's `timestamp_quantization` toggle (on by default, also in
 * the `webgpu` package) rounds timestamps to 2^16 ns = 65.536 µs, seen on lavapipe here.
 *
 * A repetition may rotate over several instances of the same operation (copies of a weight matrix,
 * the KV caches of several layers): iteration i runs `instances[i % instances.length]`, so that a
 * cycle reads more bytes than the GPU's L2 holds and each iteration streams from DRAM as a real
 * decode step does. The caller sizes that.
 */
import type { Gpu } from '../backend/webgpu/device.js';
import type { Dispatch } from '../backend/webgpu/ops.js';

export type TimingMethod = 'gpu-timestamps' | 'wall';

export interface TimerOptions {
  /** Wall-clock or GPU time one sample should take (ms). */
  targetMs?: number;
  /** Timed samples (the median is reported). */
  samples?: number;
  /** Most iterations in one sample. */
  maxReps?: number;
  /** Use the wall clock even when the device has timestamp-query. */
  forceWall?: boolean;
  /** Fewer samples (at least 3) when `samples` of one iteration each would take longer than this (ms). */
  budgetMs?: number;
}

export interface Timing {
  /** Median microseconds per iteration over the samples. */
  us: number;
  /** Per-iteration microseconds of each sample. */
  samplesUs: number[];
  reps: number;
  method: TimingMethod;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

export class GpuTimer {
  method: TimingMethod;
  private readonly targetMs: number;
  private readonly samples: number;
  private readonly maxReps: number;
  private readonly budgetMs: number;

  constructor(readonly gpu: Gpu, o: TimerOptions = {}) {
    this.method = gpu.timestamps && !o.forceWall ? 'gpu-timestamps' : 'wall';
    this.targetMs = o.targetMs ?? 20;
    this.samples = Math.max(1, o.samples ?? 9);
    this.maxReps = Math.max(1, o.maxReps ?? 10000);
    this.budgetMs = o.budgetMs ?? 5000;
  }

  /**
   * Median time of one iteration. Iteration i of a sample runs instances[(start + i) % n]; the
   * rotation carries on across samples. Two passes not in the result come first: a warm-up (one full
   * cycle) and a calibration pass; they size `reps`.
   */
  async time(instances: Dispatch[][]): Promise<Timing> {
    if (!instances.length || instances.some((d) => !d.length)) throw new Error('GpuTimer.time needs non-empty dispatch lists');
    let next = 0;
    let warm = await this.run(instances, instances.length, 1, next);
    next += instances.length;
    if (this.method === 'gpu-timestamps' && !(warm[0] > 0)) {
      // Timestamps that do not advance (seen on some drivers): the wall clock from here on.
      this.method = 'wall';
      warm = await this.run(instances, instances.length, 1, next);
      next += instances.length;
    }
    // The first pass runs cold (page faults, first use of pipelines): size the samples from a second,
    // calibration pass of about the target length.
    const repsFor = (us: number) => Math.max(1, Math.min(this.maxReps, Math.round(this.targetMs / Math.max(us / 1000, 1e-4))));
    let reps = repsFor(warm[0]);
    const cal = await this.run(instances, reps, 1, next);
    next += reps;
    if (cal[0] > 0) reps = repsFor(cal[0]);
    const perIterMs = Math.max((cal[0] > 0 ? cal[0] : warm[0]) / 1000, 1e-4);
    const samples = Math.min(this.samples, Math.max(3, Math.floor(this.budgetMs / (reps * perIterMs))));
    const samplesUs = await this.run(instances, reps, samples, next);
    return { us: median(samplesUs), samplesUs, reps, method: this.method };
  }

  /** `samples` samples of `reps` iterations each; per-iteration µs of each sample. */
  private async run(instances: Dispatch[][], reps: number, samples: number, start: number): Promise<number[]> {
    const dev = this.gpu.device;
    const n = instances.length;
    const encodeSample = (enc: GPUCommandEncoder, s: number, ts?: GPUComputePassTimestampWrites) => {
      const pass = enc.beginComputePass(ts ? { timestampWrites: ts } : undefined);
      for (let i = 0; i < reps; i++) {
        for (const d of instances[(start + s * reps + i) % n]) {
          pass.setPipeline(d.pipeline);
          pass.setBindGroup(0, d.bind);
          pass.dispatchWorkgroups(...d.wg);
        }
      }
      pass.end();
    };
    if (this.method === 'wall') {
      const out: number[] = [];
      for (let s = 0; s < samples; s++) {
        const enc = dev.createCommandEncoder();
        encodeSample(enc, s);
        const t0 = performance.now();
        dev.queue.submit([enc.finish()]);
        await dev.queue.onSubmittedWorkDone();
        out.push(((performance.now() - t0) * 1000) / reps);
      }
      return out;
    }
    const qs = dev.createQuerySet({ type: 'timestamp', count: 2 * samples });
    const resolve = dev.createBuffer({ size: 16 * samples, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = dev.createBuffer({ size: 16 * samples, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    try {
      const enc = dev.createCommandEncoder();
      for (let s = 0; s < samples; s++) encodeSample(enc, s, { querySet: qs, beginningOfPassWriteIndex: 2 * s, endOfPassWriteIndex: 2 * s + 1 });
      enc.resolveQuerySet(qs, 0, 2 * samples, resolve, 0);
      enc.copyBufferToBuffer(resolve, 0, read, 0, 16 * samples);
      dev.queue.submit([enc.finish()]);
      await read.mapAsync(GPUMapMode.READ);
      const t = new BigUint64Array(read.getMappedRange().slice(0));
      read.unmap();
      const out: number[] = [];
      for (let s = 0; s < samples; s++) {
        // A pass whose end reads before its beginning (a driver that does not order them) counts as 0:
        // the median ignores a few; all of them zero would be reported as 0 µs and caught by callers.
        const ns = t[2 * s + 1] > t[2 * s] ? Number(t[2 * s + 1] - t[2 * s]) : 0;
        out.push(ns / 1000 / reps);
      }
      return out;
    } finally {
      qs.destroy(); resolve.destroy(); read.destroy();
    }
  }
}

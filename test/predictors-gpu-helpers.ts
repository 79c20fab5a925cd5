// Shared by the predictor tests: a WebGPU device when an adapter exists. Without one, tests skip with a
// message, except under CI (process.env.CI), where a missing adapter is a failure: CI installs lavapipe.
import { openGpu, probeAdapter, type Gpu } from '../src/backend/webgpu/device.js';
import { failOnGpuErrors } from './gpu.js';

let gpu: Promise<Gpu | null> | null = null;

export function testGpu(): Promise<Gpu | null> {
  gpu ??= (async () => {
    if (!(await probeAdapter())) {
      if (process.env.CI) throw new Error('CI is set but no WebGPU adapter was found (install Mesa lavapipe)');
      return null;
    }
    return failOnGpuErrors(await openGpu());
  })();
  return gpu;
}

export const NO_GPU = 'no WebGPU adapter: GPU predictor training not tested (set CI=1 to make this a failure)';

const pipelines = new Map<string, GPUComputePipeline>();

/** Runs one compute dispatch over the given buffers (binding i = buffers[i]) and reads back buffer `out`. */
export async function runKernel(g: Gpu, wgsl: string, inputs: (Float32Array | Uint32Array | ArrayBuffer)[], uniformIdx: number[], out: number, workgroups: [number, number]): Promise<Float32Array> {
  const d = g.device;
  const bufs = inputs.map((data, i) => {
    const bytes = data instanceof ArrayBuffer ? data.byteLength : data.byteLength;
    const usage = uniformIdx.includes(i) ? 0x40 | 0x08 : 0x80 | 0x08 | 0x04;
    const b = d.createBuffer({ size: Math.max(16, Math.ceil(bytes / 16) * 16), usage });
    d.queue.writeBuffer(b, 0, data as ArrayBuffer);
    return b;
  });
  let pipeline = pipelines.get(wgsl);
  if (!pipeline) {
    pipeline = d.createComputePipeline({ layout: 'auto', compute: { module: d.createShaderModule({ code: wgsl }), entryPoint: 'main' } });
    pipelines.set(wgsl, pipeline);
  }
  const bind = d.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: bufs.map((buffer, binding) => ({ binding, resource: { buffer } })) });
  const st = d.createBuffer({ size: bufs[out].size, usage: 0x01 | 0x08 });
  const enc = d.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline); pass.setBindGroup(0, bind); pass.dispatchWorkgroups(...workgroups); pass.end();
  enc.copyBufferToBuffer(bufs[out], 0, st, 0, bufs[out].size);
  d.queue.submit([enc.finish()]);
  await st.mapAsync(0x01);
  const res = new Float32Array(st.getMappedRange().slice(0));
  st.destroy(); bufs.forEach((b) => b.destroy());
  return res;
}

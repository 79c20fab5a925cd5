// Probe: the host's cost of one decode step: encoding the greedy plan (createCommandEncoder, the
// plan's setPipeline / setBindGroup / dispatchWorkgroups, finish) and submitting it. decodeGreedy
// must encode a step in less than the GPU's time for one, or the chain waits on the host; at
// opt-1.3b on an H100 the first 16 submissions of bench/gap_probe.mjs took ~1.2 ms each against a
// 1.53 ms step. Per shape: host µs a step for encode and submit (median of EP_STEPS steps, queued
// back to back; the GPU runs them meanwhile), and µs a dispatch.
//
//   source .gpu-bundle/enter.sh; EP_SHAPES=opt-1.3b,opt-13b node bench/encode_probe.mjs   # on the GPU host (carry dist)
//   DEJAVU_DAWN_FLAGS=enable-dawn-features=skip_validation ...                          # the same with Dawn's validation off
import { fileURLToPath } from 'node:url';
import { median as med, promptedRunner } from './probe_util.mjs';

const dist = process.env.EP_DIST ?? fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const shapes = (process.env.EP_SHAPES ?? 'opt-1.3b,opt-13b').split(',');
const steps = Number(process.env.EP_STEPS ?? 64);
const gpu = await openGpu({});
const dev = gpu.device;
console.log(JSON.stringify({ adapter: gpu.adapterName, flags: process.env.DEJAVU_DAWN_FLAGS ?? '' }));
for (const shape of shapes) {
  const { r, fresh } = await promptedRunner(dist, gpu, shape);
  for (const round of [0, 1]) {   // round 0 warms plans and pipelines
    await fresh();
    await dev.queue.onSubmittedWorkDone();
    const enc = [], sub = [];
    // The greedy plan advances the device's position each step; these stay under 256 keys (one form).
    const items = r.plan(1, 'greedy', false, r.stepForm(r.pos)).items;
    for (let j = 0; j < steps; j++) {
      const t0 = performance.now();
      const e = dev.createCommandEncoder();
      r.k.encode(e, items);
      const cb = e.finish();
      const t1 = performance.now();
      dev.queue.submit([cb]);
      sub.push(performance.now() - t1); enc.push(t1 - t0);
    }
    await dev.queue.onSubmittedWorkDone();
    if (round === 0) continue;
    const n = items.filter((it) => 'd' in it).length;
    const row = { shape, dispatches: n, encode_us: +(med(enc) * 1e3).toFixed(1), submit_us: +(med(sub) * 1e3).toFixed(1), per_dispatch_us: +((med(enc) + med(sub)) * 1e3 / n).toFixed(2) };
    console.log(JSON.stringify(row));
  }
  r.dispose();
}
dev.destroy();

// Probe: where the chained greedy step's time beyond the timed decode step goes. `bench` reports
// ms/token from the greedy chain (decodeGreedy: the step with the 'greedy' head — the LM head GEMV
// (the final LayerNorm folded in since the eighteenth session, before that a dispatch of its own) and
// argmax — one submission a step, the id copied out and mapped) and GPU ms from
// timeDecodeSteps (the same step without the head). At opt-6.7b the first exceeds the second by
// ~0.25 ms more than the LM head's bytes explain, on an H100 and an H200 alike; at 1.3b, 13b and 30b
// by ~0.05 ms. This times, per shape, on synthetic weights after a 128-token prompt:
//   none:    the decode plan without a head: the runner's timeDecodeSteps (GPU timestamps around each step's pass);
//   greedy:  the plan with the greedy head, the same way (one submission a step, no readback);
//   head:    the head's dispatches alone (the LM head GEMV, argmax; a build before the fold: the final LayerNorm first), each in a pass of
//            its own, µs each;
//   chain:   decodeGreedy's wall ms a token over HP_STEPS steps after an 8-step warm-up (bench's
//            ms/token runs 128 steps after a longer one: compare the other columns, not this).
//
//   source .gpu-bundle/enter.sh; HP_SHAPES=opt-6.7b,opt-13b node bench/head_probe.mjs   # on the GPU host (carry dist)
import { fileURLToPath } from 'node:url';
import { promptedRunner, readTimestamps } from './probe_util.mjs';

const dist = process.env.HP_DIST ?? fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);

const shapes = (process.env.HP_SHAPES ?? 'opt-6.7b,opt-13b').split(',');
const STEPS = Number(process.env.HP_STEPS ?? 64);
const gpu = await openGpu({});
if (!gpu.timestamps) { console.error('head_probe: needs timestamp-query'); process.exit(2); }
const dev = gpu.device;

/** Mean GPU ms a step of `steps` submissions of the greedy plan from the current position (its argmax advances the step on the device). */
async function timeGreedy(r, steps) {
  const qs = dev.createQuerySet({ type: 'timestamp', count: 2 * steps });
  await dev.queue.onSubmittedWorkDone();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) {
    const enc = dev.createCommandEncoder();
    r.k.encode(enc, r.plan(1, 'greedy', false, r.stepForm(r.pos)).items, undefined, { querySet: qs, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 });
    dev.queue.submit([enc.finish()]);
    r.pos++;
  }
  await dev.queue.onSubmittedWorkDone();
  const wall = (performance.now() - t0) / steps;
  const t = await readTimestamps(dev, qs, 2 * steps);
  let sum = 0n;
  for (let i = 0; i < steps; i++) sum += t[2 * i + 1] - t[2 * i];
  return { gpu: Number(sum) / 1e6 / steps, wall };
}

/** The head's dispatches (those after the 'none' plan's), each in a pass of its own: µs each, median of `reps` steps. */
async function timeHead(r, reps) {
  const none = r.plan(1, 'none', false, r.stepForm(r.pos)).items.filter((it) => 'd' in it).length;
  const ds = r.plan(1, 'greedy', false, r.stepForm(r.pos)).items.filter((it) => 'd' in it).map((it) => it.d).slice(none);
  const per = ds.map(() => []);
  for (let k = 0; k < reps; k++) {
    const qs = dev.createQuerySet({ type: 'timestamp', count: 2 * ds.length });
    const enc = dev.createCommandEncoder();
    r.k.encodeTimed(enc, ds, qs);
    dev.queue.submit([enc.finish()]);
    const t = await readTimestamps(dev, qs, 2 * ds.length);
    ds.forEach((_, i) => per[i].push(Number(t[2 * i + 1] - t[2 * i]) / 1e3));
  }
  const med = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  return ds.map((d, i) => ({ label: d.label, wg: d.wg.join('x'), us: med(per[i]) }));
}

const rows = [];
for (const shape of shapes) {
  const { r, fresh } = await promptedRunner(dist, gpu, shape);
  await fresh(); await timeGreedy(r, 8);                 // warm-up
  await fresh(); const t = await r.timeDecodeSteps(STEPS, 0); const none = { gpu: t.gpuMsPerToken, wall: t.msPerToken };
  await fresh(); const greedy = await timeGreedy(r, STEPS);
  await fresh(); const head = await timeHead(r, 15);
  await fresh(); await r.decodeGreedy(1, 8, () => true);   // warm-up: the chain's own buffers and maps
  await fresh();
  const first = 1, t0 = performance.now();
  await r.decodeGreedy(first, STEPS, () => true);
  const chain = (performance.now() - t0) / STEPS;
  r.dispose();
  const headSum = head.reduce((a, h) => a + h.us, 0);
  rows.push({ shape, none: none.gpu, greedy: greedy.gpu, headSum, chain, noneWall: none.wall, greedyWall: greedy.wall });
  console.log(JSON.stringify({ shape, none, greedy, head, chain }));
}
console.log('\nshape | step without head, GPU ms | with the greedy head, GPU ms | difference | head dispatches alone, µs (sum) | chained wall ms');
for (const x of rows) console.log(`${x.shape} | ${x.none.toFixed(3)} | ${x.greedy.toFixed(3)} | ${(x.greedy - x.none).toFixed(3)} | ${x.headSum.toFixed(1)} | ${x.chain.toFixed(3)}`);
gpu.device.destroy();

// Probe: where the greedy chain's wall time beyond its GPU time goes. `bench` reports ms/token from
// decodeGreedy (one submission a step: the greedy plan's pass, a copy of the step's id to a
// mappable slot, mapAsync; up to 16 steps queued). The greedy plan's passes, timed alone, come to
// 0.05–0.15 ms a token less (bench/head_probe.mjs). This runs decodeGreedy's submission pattern with
// timestamps around each step's pass and reports, per shape (synthetic weights, 128-token prompt):
//   wall:  ms a token of the whole chain (as bench's ms/token, over GP_STEPS steps);
//   pass:  mean GPU ms inside a step's pass;
//   span:  (last pass's end − first pass's begin) / steps: the GPU's time a token, gaps included;
//   gap:   mean and largest idle time between one pass's end and the next one's begin (µs).
// span ≈ pass: the GPU never idles between steps and wall − span is the host's tail; span > pass:
// the GPU waits between steps (the submission boundary, the id copy, or an empty queue).
//
//   source .gpu-bundle/enter.sh; GP_SHAPES=opt-1.3b,opt-13b node bench/gap_probe.mjs   # on the GPU host (carry dist)
import { fileURLToPath } from 'node:url';
import { median, promptedRunner, readTimestamps } from './probe_util.mjs';

const dist = process.env.GP_DIST ?? fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);

const shapes = (process.env.GP_SHAPES ?? 'opt-1.3b,opt-6.7b,opt-13b').split(',');
const STEPS = Number(process.env.GP_STEPS ?? 128), WINDOW = 16;
const gpu = await openGpu({});
if (!gpu.timestamps) { console.error('gap_probe: needs timestamp-query'); process.exit(2); }
const dev = gpu.device;

/** decodeGreedy's pattern (pass, id copy, map; WINDOW queued), each pass timestamped. */
async function chain(r, steps, copyId, stamps = true) {
  const qs = dev.createQuerySet({ type: 'timestamp', count: 2 * steps });
  const slots = Array.from({ length: WINDOW }, () => dev.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }));
  const maps = new Array(WINDOW).fill(null);
  await dev.queue.onSubmittedWorkDone();
  const submit = (j) => {
    const enc = dev.createCommandEncoder();
    r.k.encode(enc, r.plan(1, 'greedy', false, r.stepForm(r.pos + j)).items, undefined, stamps ? { querySet: qs, beginningOfPassWriteIndex: 2 * j, endOfPassWriteIndex: 2 * j + 1 } : undefined);
    if (copyId) enc.copyBufferToBuffer(r.tokens, (r.pos + j) * 4, slots[j % WINDOW], 0, 4);
    dev.queue.submit([enc.finish()]);
    if (copyId) maps[j % WINDOW] = slots[j % WINDOW].mapAsync(GPUMapMode.READ, 0, 4);
  };
  const t0 = performance.now();
  let queued = 0, tSub = 0;
  const land = [];
  while (queued < Math.min(WINDOW, steps)) { submit(queued++); if (queued === 1) tSub = performance.now() - t0; }
  for (let done = 0; done < steps; done++) {
    if (copyId) { await maps[done % WINDOW]; land.push(performance.now() - t0); slots[done % WINDOW].unmap(); }
    else if (done % WINDOW === 0) await dev.queue.onSubmittedWorkDone();
    if (queued < steps) submit(queued++);
  }
  await dev.queue.onSubmittedWorkDone();
  const wall = (performance.now() - t0) / steps;
  r.pos += steps;
  const t = await readTimestamps(dev, qs, 2 * steps);
  slots.forEach((b) => b.destroy());
  let pass = 0n, gapSum = 0n, gapMax = 0n, passMax = 0n;
  for (let i = 0; i < steps; i++) {
    pass += t[2 * i + 1] - t[2 * i];
    if (t[2 * i + 1] - t[2 * i] > passMax) passMax = t[2 * i + 1] - t[2 * i];
    if (i > 0) { const g = t[2 * i] - t[2 * i - 1]; gapSum += g; if (g > gapMax) gapMax = g; }
  }
  const ms = (x) => Number(x) / 1e6;
  // Host side (with the id copy): when the first step was submitted, when its id landed against its
  // pass's GPU time, and the landings' spacing at the end against the passes' (ms).
  const host = !copyId ? null : {
    firstSubmit: tSub, firstLand: land[0], firstPass: ms(t[1] - t[0]),
    // Landing time of the last id minus where the GPU clock puts its pass end relative to the first landing.
    tail: land[steps - 1] - land[0] - ms(t[2 * steps - 1] - t[1]),
    landGapMedian: median(land.slice(1).map((x, i) => x - land[i])),
    landGapMax: Math.max(...land.slice(1).map((x, i) => x - land[i])),
  };
  return { wall, pass: ms(pass) / steps, span: ms(t[2 * steps - 1] - t[0]) / steps, gapUs: ms(gapSum) * 1e3 / (steps - 1), gapMaxUs: ms(gapMax) * 1e3, passMax: ms(passMax), host };
}

// GP_COMPARE=1: instead, GP_REPEATS rounds a shape of three chains after the same preparation: this
// probe's chain with and without the timestamps around each pass, and decodeGreedy itself; for each,
// the wall ms a token and the median gap between ids landing (the steady state's pace, which the
// chain's start and end do not move).
if (process.env.GP_COMPARE) {
  for (const shape of shapes) {
    const { r, fresh } = await promptedRunner(dist, gpu, shape);
    await fresh(); await chain(r, 16, true);   // warm-up
    for (let k = 0; k < Number(process.env.GP_REPEATS ?? 3); k++) {
      const out = [];
      for (const stamps of [true, false]) {
        await fresh(); await dev.queue.onSubmittedWorkDone();
        const x = await chain(r, STEPS, true, stamps);
        out.push(`chain${stamps ? '+ts' : ''} ${x.wall.toFixed(3)} / ${x.host.landGapMedian.toFixed(3)}`);
      }
      await fresh(); await dev.queue.onSubmittedWorkDone();
      const land = [], t0 = performance.now();
      await r.decodeGreedy(1, STEPS, () => { land.push(performance.now()); return true; });
      out.push(`decodeGreedy ${((land[STEPS - 1] - t0) / STEPS).toFixed(3)} / ${median(land.slice(1).map((x, i) => x - land[i])).toFixed(3)}`);
      console.log(`${shape} round ${k} (wall ms a token / median gap between ids): ${out.join(' | ')}`);
    }
    r.dispose();
  }
  gpu.device.destroy();
  process.exit(0);
}

// GP_READBACK=N: instead, GP_REPEATS rounds of what bench's timeDecode does before its chain (N steps
// of the readback loop: a forward a token, its logits read back) and then the timestamped chain, to
// see whether the chain's occasional losses (60–100 ms in a 128-step run) follow that loop, and where.
const readback = Number(process.env.GP_READBACK ?? 0);
if (readback > 0) {
  for (const shape of shapes) {
    const { r, fresh } = await promptedRunner(dist, gpu, shape);
    await fresh(); await chain(r, 16, true);   // warm-up
    for (let k = 0; k < Number(process.env.GP_REPEATS ?? 3); k++) {
      await fresh();
      let id = 1;
      for (let i = 0; i < readback; i++) { const l = await r.forward([id]); id = l.indexOf(Math.max(...l.subarray(0, 1000))); }
      await fresh(); await dev.queue.onSubmittedWorkDone();
      const x = await chain(r, STEPS, true);
      console.log(`${shape} round ${k}: wall ${x.wall.toFixed(3)} | pass ${x.pass.toFixed(3)} (max ${x.passMax.toFixed(3)}) | span ${x.span.toFixed(3)} | GPU idle max ${x.gapMaxUs.toFixed(1)} µs | landings: first ${x.host.firstLand.toFixed(1)} ms, median gap ${x.host.landGapMedian.toFixed(3)}, max gap ${x.host.landGapMax.toFixed(3)} ms`);
    }
    r.dispose();
  }
  gpu.device.destroy();
  process.exit(0);
}

const rows = [];
for (const shape of shapes) {
  const { r, fresh } = await promptedRunner(dist, gpu, shape);
  await fresh(); await chain(r, 16, true);   // warm-up
  await fresh(); const withId = await chain(r, STEPS, true);
  await fresh(); const noId = await chain(r, STEPS, false);
  // (The prompt's forward without logits returns before the GPU has run it: wait, as bench does by reading logits.)
  await fresh(); await dev.queue.onSubmittedWorkDone();
  const t0 = performance.now(); await r.decodeGreedy(1, STEPS, () => true); const greedy = (performance.now() - t0) / STEPS;
  r.dispose();
  rows.push({ shape, withId, noId, greedy });
  console.log(JSON.stringify({ shape, withId, noId, decodeGreedy: greedy }));
}
console.log('\nhost side (ms): the first step submitted at / its id landed at / its pass took; the last id landed this much after its pass end (GPU clock, from the first landing); median gap between landings');
for (const x of rows) { const h = x.withId.host; console.log(`${x.shape} | ${h.firstSubmit.toFixed(3)} / ${h.firstLand.toFixed(3)} / ${h.firstPass.toFixed(3)} | ${h.tail.toFixed(3)} | ${h.landGapMedian.toFixed(3)}`); }
console.log('\nshape | id copy + map | wall ms | pass ms | span ms | gap µs mean / max | decodeGreedy wall ms');
for (const x of rows) for (const [k, v] of [['yes', x.withId], ['no', x.noId]]) console.log(`${x.shape} | ${k} | ${v.wall.toFixed(3)} | ${v.pass.toFixed(3)} | ${v.span.toFixed(3)} | ${v.gapUs.toFixed(1)} / ${v.gapMaxUs.toFixed(1)} | ${x.greedy.toFixed(3)}`);
gpu.device.destroy();

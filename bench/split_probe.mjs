// Probe: where the greedy head's extra time at opt-6.7b goes. In decodeGreedy's chain the greedy
// step's passes take ~0.3 ms more than the step without the head (timeDecodeSteps) at opt-6.7b,
// while the head's own dispatches take ~0.15 ms alone; at 13b the two agree (docs/benchmarks.md,
// "The greedy head against the timed step"). This runs decodeGreedy's pattern (one submission a
// step, the id copied out and mapped, 16 queued), each step's plan cut into two passes with
// timestamps around each, and reports mean µs a step of each pass:
//   greedy:       the greedy plan: layers (everything before the LM head GEMV), then the head;
//   layers-only:  the greedy plan's layers alone (the position and token 1 written each step, as no argmax advances them);
//   layers-ids:   the same with the ids a greedy chain picked (the same embedded tokens as greedy's);
//   ids+head:     layers-ids, then the head's dispatches in a pass of their own (host-written token);
//   ids+read:     layers-ids, then a plain read of the LM head's bytes in a pass of its own;
//   ids+read trip: the same read in trip order (the resident workgroups within a few MB at a time);
//   ids+read NxM: (SP_READS) layers-ids, then a read of N new buffers of M MB each;
//   ids+reread:   (SP_REREAD) layers-ids, then a second read of the largest layer weight buffer;
//   none:         the plan without a head (timeDecodeSteps' plan), the position written each step.
// If `layers` is slower in `greedy` than in `layers-only`, the head slows the next step's layers;
// if `head` is slower than its dispatches alone, the head itself is slower in the chain. (Found on an
// H200: the former; any read of >= 64 MB at a step's end does it at 6.7b. docs/benchmarks.md, "The
// greedy head's extra time at opt-6.7b".)
//
//   SP_PROFILE=1 times every dispatch in a pass of its own instead (greedy against layers-only).
//   SP_TIMES=1 prints each run's wall-clock span for bench/smi_windows.py (clocks and power over it).
//   SP_CHUNKS=n cuts the layers into n passes, each timed (greedy, layers-only, layers-ids, ids+head, ids+read).
//
//   source .gpu-bundle/enter.sh; SP_SHAPES=opt-6.7b,opt-13b node bench/split_probe.mjs   # on the GPU host (carry dist)
import { fileURLToPath } from 'node:url';
import { blockedReadWgsl, fillRanges, promptedRunner, readTimestamps } from './probe_util.mjs';

const dist = process.env.SP_DIST ?? fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const { readU32, runNow } = await import(`${dist}/src/backend/webgpu/ops.js`);

const shapes = (process.env.SP_SHAPES ?? 'opt-6.7b,opt-13b').split(',');
const STEPS = Number(process.env.SP_STEPS ?? 64), WINDOW = 16;
const gpu = await openGpu({});
if (!gpu.timestamps) { console.error('split_probe: needs timestamp-query'); process.exit(2); }
const dev = gpu.device;

/** `parts(j)`: the step's item lists, a timestamped pass each; `writePos(j)`, where given: the token id
 *  to write with the position to step first (where no argmax advances them). */
async function chain(r, steps, parts, writePos) {
  const n = parts(0).length;
  const qs = dev.createQuerySet({ type: 'timestamp', count: 2 * n * steps });
  const slots = Array.from({ length: WINDOW }, () => dev.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }));
  const maps = new Array(WINDOW).fill(null);
  const pos0 = r.pos;
  await dev.queue.onSubmittedWorkDone();
  const submit = (j) => {
    if (writePos) dev.queue.writeBuffer(r.step, 0, Uint32Array.from([pos0 + j, writePos(j)]));
    const enc = dev.createCommandEncoder();
    parts(j).forEach((items, p) => r.k.encode(enc, items, undefined, { querySet: qs, beginningOfPassWriteIndex: 2 * (n * j + p), endOfPassWriteIndex: 2 * (n * j + p) + 1 }));
    enc.copyBufferToBuffer(r.tokens, (pos0 + j) * 4, slots[j % WINDOW], 0, 4);
    dev.queue.submit([enc.finish()]);
    maps[j % WINDOW] = slots[j % WINDOW].mapAsync(GPUMapMode.READ, 0, 4);
  };
  const t0 = performance.now();
  let queued = 0;
  while (queued < Math.min(WINDOW, steps)) submit(queued++);
  for (let done = 0; done < steps; done++) {
    await maps[done % WINDOW]; slots[done % WINDOW].unmap();
    if (queued < steps) submit(queued++);
  }
  await dev.queue.onSubmittedWorkDone();
  const wall = (performance.now() - t0) / steps;
  const t = await readTimestamps(dev, qs, 2 * n * steps);
  slots.forEach((b) => b.destroy());
  const us = new Array(n).fill(0);
  for (let j = 0; j < steps; j++) for (let p = 0; p < n; p++) us[p] += Number(t[2 * (n * j + p) + 1] - t[2 * (n * j + p)]) / 1e3 / steps;
  const span = Number(t[2 * n * steps - 1] - t[0]) / 1e3 / steps;
  return { wall, us, span };
}

const f = (x) => x.toFixed(1);
/** Where a greedy plan's head starts: its LM head GEMV, the one with the argmax epilogue (gemv.ts, AMAX). */
const headAt = (items) => items.findIndex((it) => 'd' in it && it.d.label.includes('_amax'));
/**
 * A plan item reading the first `bytes` (a multiple of 64 KiB) of `buffer` with the blocked read
 * (probe_util.mjs: 64 KiB a workgroup, `order` wg or trip); its output buffer goes into `own`.
 */
function readOf(r, buffer, bytes, own, order = 'wg') {
  const out = dev.createBuffer({ size: 4 * (bytes / 65536), usage: GPUBufferUsage.STORAGE });
  own.push(out);
  return { d: r.k.dispatch('x_read', r.k.pipeline(`split_probe_read_${order}`, () => blockedReadWgsl(4, order)), [0, 0, 0, 0], [[1, { buffer, offset: 0, size: bytes }], [2, out]], [bytes / 65536, 1, 1], []) };
}
const blocks64k = (bytes) => Math.floor(bytes / 65536) * 65536;

// SP_PROFILE=1: instead, each dispatch in a pass of its own (timestamps around each), greedy against
// layers-only, SP_PROFILE_STEPS steps; prints per kernel label the µs a step in each and the
// dispatches (by index in the step) whose time differs most.
if (process.env.SP_PROFILE) {
  const steps = Number(process.env.SP_PROFILE_STEPS ?? 10);
  for (const shape of shapes) {
    const { r, fresh } = await promptedRunner(dist, gpu, shape);
    const itemsAt = (head, j) => r.plan(1, head, false, r.stepForm(r.pos + j)).items;
    const prof = {};
    for (const name of ['greedy', 'layers-only', 'greedy', 'layers-only']) {
      await fresh(); await dev.queue.onSubmittedWorkDone();
      const pos0 = r.pos, per = [];
      for (let j = 0; j < steps; j++) {
        const items = itemsAt('greedy', j), ds = (name === 'greedy' ? items : items.slice(0, headAt(items))).flatMap((it) => ('d' in it ? [it.d] : []));
        if (name !== 'greedy') dev.queue.writeBuffer(r.step, 0, Uint32Array.from([pos0 + j, 1]));
        const qs = dev.createQuerySet({ type: 'timestamp', count: 2 * ds.length });
        const enc = dev.createCommandEncoder();
        r.k.encodeTimed(enc, ds, qs);
        dev.queue.submit([enc.finish()]);
        const t = await readTimestamps(dev, qs, 2 * ds.length);
        per.push(ds.map((d, i) => ({ label: d.label, us: Number(t[2 * i + 1] - t[2 * i]) / 1e3 })));
      }
      // Steps 2.. (the first follows the prompt, not a step).
      const mean = per[0].map((x, i) => ({ label: x.label, us: per.slice(2).reduce((a, p) => a + p[i].us, 0) / (steps - 2) }));
      prof[name] = mean;
    }
    const g = prof.greedy, l = prof['layers-only'];
    const byLabel = new Map();
    l.forEach((x, i) => { const e = byLabel.get(x.label) ?? [0, 0, 0]; e[0] += g[i].us; e[1] += x.us; e[2]++; byLabel.set(x.label, e); });
    console.log(`${shape}: kernel | count | greedy µs a step | layers-only µs a step`);
    for (const [k, [a, b, n]] of byLabel) console.log(`${shape} | ${k} | ${n} | ${f(a)} | ${f(b)}`);
    console.log(`${shape}: head dispatches ${g.slice(l.length).map((x) => `${x.label} ${f(x.us)}`).join(', ')}`);
    const diffs = l.map((x, i) => ({ i, label: x.label, d: g[i].us - x.us, g: g[i].us, l: x.us })).sort((a, b) => b.d - a.d).slice(0, 12);
    console.log(`${shape}: largest differences (index label greedy/layers-only µs): ${diffs.map((x) => `${x.i} ${x.label} ${f(x.g)}/${f(x.l)}`).join('; ')}`);
    console.log(`${shape}: first 8 dispatches greedy/layers-only µs: ${l.slice(0, 8).map((x, i) => `${f(g[i].us)}/${f(x.us)}`).join(' ')}`);
    r.dispose();
  }
  gpu.device.destroy();
  process.exit(0);
}

console.log('shape | variant | wall ms a step | layers µs | head µs | span µs a step');
for (const shape of shapes) {
  const { r, fresh } = await promptedRunner(dist, gpu, shape);
  const itemsAt = (head, j) => r.plan(1, head, false, r.stepForm(r.pos + j)).items;
  const split = (items) => { const i = headAt(items); return [items.slice(0, i), items.slice(i)]; };
  const variants = {
    greedy: { parts: (j) => split(itemsAt('greedy', j)), writePos: null },
    'layers-only': { parts: (j) => [split(itemsAt('greedy', j))[0]], writePos: () => 1 },
    none: { parts: (j) => [itemsAt('none', j)], writePos: () => 1 },
  };
  // SP_CHUNKS=n: the layers' items cut into n passes (timed each), to see where in the step the time goes.
  const chunks = Number(process.env.SP_CHUNKS ?? 1);
  const cutN = (items) => { const m = Math.ceil(items.length / chunks); return Array.from({ length: chunks }, (_, i) => items.slice(i * m, (i + 1) * m)).filter((x) => x.length); };
  if (chunks > 1) {
    variants.greedy.parts = (j) => { const [a, b] = split(itemsAt('greedy', j)); return [...cutN(a), b]; };
    variants['layers-only'].parts = (j) => cutN(split(itemsAt('greedy', j))[0]);
    delete variants.none;
  }
  await fresh(); await chain(r, 16, variants.greedy.parts, null);   // warm-up
  // The ids a greedy chain picks at each position: 'layers-ids' runs layers-only with them written
  // where the greedy chain's argmax would have written them (the same embedded tokens, no head).
  await fresh();
  const pos0 = r.pos;
  await chain(r, STEPS, variants.greedy.parts, null);
  const all = await readU32(r.k, r.tokens, pos0 + STEPS), prev = [1, ...all.slice(pos0, pos0 + STEPS - 1)];
  console.log(`${shape}: greedy ids ${prev.slice(0, 12).join(' ')} … (${new Set(prev).size} distinct)`);
  // step[1] at step j is the id the step before picked (the prompt's last pick at j = 0).
  variants['layers-ids'] = { parts: variants['layers-only'].parts, writePos: (j) => prev[j] };
  // The head's work after the same layers, but the token written by the host: the head's argmax
  // still writes step, and the next step's write replaces it.
  variants['ids+head'] = { parts: variants.greedy.parts, writePos: (j) => prev[j] };
  // The layers, then extra reads (each a pass of its own), the host writing the greedy ids.
  const extra = [];
  const after = (reads) => ({ parts: (j) => [...variants['layers-only'].parts(j), reads], writePos: (j) => prev[j] });
  // A plain read of the LM head's bytes (its first part), in wg order and in trip order (round r of
  // workgroup w reads block r · workgroups + w: the resident workgroups within a few MB at a time).
  const lm = r.lmHead.parts[0], lmBytes = blocks64k(lm.rows * r.lmHead.colsP * 2);
  variants['ids+read'] = after([readOf(r, lm.buffer, lmBytes, extra)]);
  variants['ids+read trip'] = after([readOf(r, lm.buffer, lmBytes, extra, 'trip')]);
  // SP_READS=4x103,1x412: a read of N new buffers of M MB each (filled with noise), the same bytes a
  // step as the LM head's in one allocation or several.
  for (const spec of (process.env.SP_READS ?? '').split(',').filter(Boolean)) {
    const [n, mb] = spec.split('x').map(Number), bytes = blocks64k(mb * 1e6);
    const bufs = Array.from({ length: n }, () => dev.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE }));
    extra.push(...bufs);
    await fillRanges(r.k, runNow, bufs.map((buffer) => ({ buffer })), bytes);
    variants[`ids+read ${spec}`] = after(bufs.map((b) => readOf(r, b, bytes, extra)));
  }
  // SP_REREAD=1: a second read of the largest weight buffer the layers already read (bytes the step
  // touches anyway, in an allocation it touches anyway).
  if (process.env.SP_REREAD) {
    const big = r.matrices.filter((m) => m !== r.lmHead).flatMap((m) => m.parts).reduce((a, p) => (p.buffer.size > a.buffer.size ? p : a));
    const bytes = blocks64k(big.buffer.size);
    variants[`ids+reread ${(bytes / 1e6).toFixed(0)} MB`] = after([readOf(r, big.buffer, bytes, extra)]);
  }
  for (let round = 0; round < 2; round++) {
    for (const [name, v] of Object.entries(variants)) {
      await fresh();
      const t0 = Date.now();
      const x = await chain(r, STEPS, v.parts, v.writePos);
      // SP_TIMES=1: each run's wall-clock span (ms since the epoch), to line up with a clock/power log.
      if (process.env.SP_TIMES) console.log(`times ${shape} ${name} ${t0} ${Date.now()}`);
      if (chunks > 1) { console.log(`${shape} | ${name} | ${x.wall.toFixed(3)} | passes µs: ${x.us.map(f).join(' ')} | ${f(x.span)}`); continue; }
      console.log(`${shape} | ${name} | ${x.wall.toFixed(3)} | ${f(x.us[0])} | ${x.us[1] !== undefined ? f(x.us[1]) : '—'} | ${f(x.span)}`);
    }
  }
  r.dispose();
  extra.forEach((b) => b.destroy());
}
gpu.device.destroy();
process.exit(0);

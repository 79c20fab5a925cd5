// Probe: do V8's garbage collections explain the greedy chain's wall-time losses? `bench`'s ms/token
// is the wall time of decodeGreedy from the call to the last id's landing (src/bench/decode.ts
// timeDecode); its mean moves from run to run while its median (the GPU's pace) does not: a run
// loses a few ms, now and then tens, at the chain's ends (docs/benchmarks.md, "Nineteenth session").
// This runs timeDecode GC_REPEATS times a
// shape and, with a PerformanceObserver on 'gc' entries, reports per run: the chain's wall ms a token,
// its excess over 128 × the median gap between ids (ms), and the collections inside the chain — all,
// the major ones (mark-compact), and those in its first or last GC_EDGE_MS ms, where no queued step
// can hide a host pause (at the start nothing has landed yet; at the end the last id's landing stops the clock).
//
//   source .gpu-bundle/enter.sh; GC_SHAPES=opt-13b,opt-1.3b GC_REPEATS=6 node bench/gc_probe.mjs   # on the GPU host (carry dist)
import { fileURLToPath } from 'node:url';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { promptedRunner } from './probe_util.mjs';

const dist = process.env.GC_DIST ?? fileURLToPath(new URL('../dist', import.meta.url));
const { openGpu } = await import(`${dist}/src/backend/webgpu/device.js`);
const { timeDecode } = await import(`${dist}/src/bench/decode.js`);

const shapes = (process.env.GC_SHAPES ?? 'opt-13b,opt-1.3b').split(',');
const repeats = Number(process.env.GC_REPEATS ?? 6), edge = Number(process.env.GC_EDGE_MS ?? 30), gen = 128;
const gcs = [];
new PerformanceObserver((list) => { for (const e of list.getEntries()) gcs.push({ start: e.startTime, ms: e.duration, major: e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR }); })
  .observe({ entryTypes: ['gc'] });
const gpu = await openGpu({});
console.log(JSON.stringify({ adapter: gpu.adapterName, node: process.version }));
const rows = [];
for (const shape of shapes) {
  const { r } = await promptedRunner(dist, gpu, shape);
  await timeDecode(r, { promptLen: 128, gen: 16, warmup: 4 });   // warm-up: plans, pipelines
  for (let k = 0; k < repeats; k++) {
    const t = await timeDecode(r, { promptLen: 128, gen, warmup: 8 });
    const end = performance.now();
    // The chain ran from end − gen · msPerToken to end (the runner's reset after it is microseconds).
    await new Promise((res) => setTimeout(res, 5));   // let the observer deliver the chain's entries
    const start = end - gen * t.msPerToken;
    const inChain = gcs.filter((g) => g.start + g.ms >= start && g.start <= end);
    const atEdge = inChain.filter((g) => g.start <= start + edge || g.start + g.ms >= end - edge);
    const sum = (a) => a.reduce((s, g) => s + g.ms, 0);
    const row = {
      shape, run: k, wall_ms: +t.msPerToken.toFixed(4), median_ms: +t.medianMs.toFixed(4),
      excess_ms: +(gen * (t.msPerToken - t.medianMs)).toFixed(2),
      gc_count: inChain.length, gc_ms: +sum(inChain).toFixed(2),
      major_count: inChain.filter((g) => g.major).length, major_ms: +sum(inChain.filter((g) => g.major)).toFixed(2),
      edge_count: atEdge.length, edge_ms: +sum(atEdge).toFixed(2),
    };
    rows.push(row);
    console.log(JSON.stringify(row));
  }
  r.dispose();
}
console.log(`\nshape | run | wall ms a token | median | excess ms (run) | GCs in the chain: count / ms | major: count / ms | in its first or last ${edge} ms: count / ms`);
for (const x of rows) console.log(`${x.shape} | ${x.run} | ${x.wall_ms.toFixed(3)} | ${x.median_ms.toFixed(3)} | ${x.excess_ms.toFixed(1)} | ${x.gc_count} / ${x.gc_ms.toFixed(1)} | ${x.major_count} / ${x.major_ms.toFixed(1)} | ${x.edge_count} / ${x.edge_ms.toFixed(1)}`);
gpu.device.destroy();

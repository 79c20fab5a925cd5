// A/B of two builds, or of two runner option sets of this build, on one device, in one process: GPU
// ms per decode token from the WebGPU runner's timeDecodeSteps (prompt 128, 128 steps, as `dejavu
// bench` measures gpu_ms_per_token), synthetic weights of real OPT shapes, the two alternating for
// AB_ROUNDS rounds.
//
//   git worktree add /tmp/base <commit> && (cd /tmp/base && npm ci && npx tsc -p .)
//   npx tsc -p . && AB_BASE=/tmp/base/dist node bench/ab_decode.mjs        # on the GPU host: carry both dists
//   AB_BASE_OPTS='{"fuseAttention":false}' node bench/ab_decode.mjs       # this build, base with these runner options
//   AB_NEW_OPTS='{"fusedAttentionMaxKeys":4096}' ...                      # and the new side with these
//
// AB_METRIC=chain times bench's ms/token instead (timeDecode's chained greedy decode: wall ms a token,
// the head included, and the median gap between ids), the GPU ms column then holding the wall ms.
// AB_METRIC=prefill times the prompt instead: forward() of AB_PROMPT tokens from position 0 with the
// last row's logits read back, wall ms, the mean of 5 after one untimed (the column then holds that).
// AB_SHAPES (default opt-6.7b,opt-13b,opt-1.3b), AB_ROUNDS (2), AB_PROMPT (128 positions before the timed steps), AB_GEN (128 timed steps), AB_SPARSITY (dense,mlp,dejavu, mlp:<input>[@D] and dejavu:<input>[@D] with predictors reading attn_in, mlp_in or attn_io, thresholds for density D: any of
// them; mlp = random predictors of DejaVu's proportions at 10 %, block rule, lookahead; dejavu adds
// 40 % of heads: AB_HEAD_KV (all | chosen | lazy; default all), AB_HEAD_INPUT (prev_attn_in, the head
// lookahead, default | attn_in). Block thresholds are calibrated to the density on the model first
// (src/bench/calibrate.ts, as `dejavu bench` does; AB_CALIBRATE=0 keeps the synthetic threshold).
// Prints one JSON line a run, then a table.
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const baseOpts = process.env.AB_BASE_OPTS ? JSON.parse(process.env.AB_BASE_OPTS) : null;
const newOpts = process.env.AB_NEW_OPTS ? JSON.parse(process.env.AB_NEW_OPTS) : {};
const base = process.env.AB_BASE ?? (baseOpts ? fileURLToPath(new URL('../dist', import.meta.url)) : null);
if (!base) { console.error('ab_decode: set AB_BASE to the dist folder of the build to compare against, or AB_BASE_OPTS to runner options'); process.exit(2); }
const sparsities = (process.env.AB_SPARSITY ?? 'dense').split(',');
const shapes = (process.env.AB_SHAPES ?? 'opt-6.7b,opt-13b,opt-1.3b').split(',');
const headKv = process.env.AB_HEAD_KV ?? 'all', headInput = process.env.AB_HEAD_INPUT ?? 'prev_attn_in';
const rounds = Number(process.env.AB_ROUNDS ?? 2), prompt = Number(process.env.AB_PROMPT ?? 128), gen = Number(process.env.AB_GEN ?? 128);
const builds = { base: resolve(base), new: resolve(fileURLToPath(new URL('../dist', import.meta.url))) };
const mods = {};
for (const [k, d] of Object.entries(builds)) mods[k] = await import(`${d}/src/backend/webgpu/runner.js`);
const { openGpu } = await import(`${builds.new}/src/backend/webgpu/device.js`);
const { shapeConfig } = await import(`${builds.new}/src/bench/shapes.js`);
const { syntheticHeads, syntheticPredictorPolicy } = await import(`${builds.new}/src/bench/policies.js`);
const { timeDecode } = await import(`${builds.new}/src/bench/decode.js`);
const { calibrateBlockDensity } = await import(`${builds.new}/src/bench/calibrate.js`);
const { gpuTimedRun, STEPS_TOKEN } = await import(`${builds.new}/src/bench/sequences.js`);
const calibrate = process.env.AB_CALIBRATE !== '0';
const chain = process.env.AB_METRIC === 'chain', prefill = process.env.AB_METRIC === 'prefill';
const gpu = await openGpu({});
console.log(JSON.stringify({ adapter: gpu.adapterName, timestamps: gpu.timestamps, builds }));
const res = [];
for (const shape of shapes) {
  // dejavu bench's GPU-timed sequence (src/bench/sequences.ts).
  const c = shapeConfig(shape), timed = gpuTimedRun(c, prompt, gen), ids = timed.prompt;
  for (let round = 1; round <= rounds; round++) {
    for (const build of ['base', 'new']) {
      const r = await mods[build].createWebGpuRunner(c, 'synthetic', { gpu, ...(build === 'base' ? baseOpts ?? {} : newOpts) });
      for (const sp of sparsities) {
        let cal = null;
        if (sp !== 'dense') {
          // mlp:<input> / dejavu:<input>: synthetic predictors reading that input (attn_in, mlp_in, attn_io; default attn_in).
          // (…@D: density D instead of 0.1, the calibration's target; the runner counts what it chose.)
          const [kind, rest] = sp.split(':'), [input, dens] = (rest ?? '').split('@');
          const mlp = syntheticPredictorPolicy(c, dens ? Number(dens) : 0.1, input ? { input } : {});
          // (A base build older than the head lookahead ignores headInput.)
          const policy = kind === 'dejavu' ? { ...mlp, headInput, heads: syntheticHeads(c, 0.4, { kv: headKv }) } : mlp;
          r.setSparsity(policy);
          // The thresholds brought to the density on this model over the GPU-timed sequence, as `dejavu bench` does
          // (AB_CALIBRATE=0: as set). Unlike `dejavu bench` (attn_io), a sparsity without :<input> here reads attn_in.
          if (calibrate && r.setBlockThresholds) { cal = await calibrateBlockDensity(r, policy, { target: dens ? Number(dens) : 0.1, runs: [timed] }); r.resetMlpDensity(); }
        }
        let row;
        if (prefill) {
          r.reset(); await r.forward(ids);
          const t0 = performance.now();
          for (let i = 0; i < 5; i++) { r.reset(); await r.forward(ids); }
          const ms = (performance.now() - t0) / 5;
          row = { shape, sparsity: sp, round, build, gpu_ms: ms, prefill_ms: +ms.toFixed(3), tokens: prompt, dispatches: r.dispatchesFor?.(prompt) ?? null };
        } else if (chain) {
          const t = await timeDecode(r, { promptLen: prompt, gen, warmup: 8 });
          row = { shape, sparsity: sp, round, build, gpu_ms: t.msPerToken, wall_ms: +t.msPerToken.toFixed(4), median_ms: +t.medianMs.toFixed(4), dispatches: r.dispatchesPerToken };
        } else {
          r.reset();
          await r.forward(ids, { noLogits: true });
          const t = await r.timeDecodeSteps(gen, STEPS_TOKEN);
          row = { shape, sparsity: sp, round, build, gpu_ms: t.gpuMsPerToken ?? null, wall_ms: +t.msPerToken.toFixed(4), dispatches: t.dispatchesPerToken, ...(sp !== 'dense' && { mlp_density: +(await r.mlpDensity()).filter((v) => v !== null).reduce((a, v, _, l) => a + v / l.length, 0).toFixed(4) }), ...(cal && { cal_rounds: cal.rounds, cal_converged: cal.converged }) };
        }
        res.push(row);
        console.log(JSON.stringify(row));
      }
      r.dispose();
    }
  }
}
console.log(`shape | sparsity | build | ${prefill ? `prefill ms, ${prompt} tokens` : chain ? 'wall ms a token, chained greedy' : 'GPU ms a token'} (each round) | dispatches`);
for (const shape of shapes) for (const sp of sparsities) for (const b of ['base', 'new']) {
  const rs = res.filter((x) => x.shape === shape && x.sparsity === sp && x.build === b);
  console.log(`${shape} | ${sp} | ${b} | ${rs.map((x) => x.gpu_ms?.toFixed(3) ?? 'n/a').join(' / ')} | ${rs[0]?.dispatches}${rs[0]?.mlp_density !== undefined ? ` | density ${rs[0].mlp_density}` : ''}`);
}
gpu.device.destroy();

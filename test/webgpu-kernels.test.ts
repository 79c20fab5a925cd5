/**
 * Every WGSL kernel against its CPU twin on random odd shapes (not multiples of 4 or of the
 * workgroup size), on both weight views (f16 and packed u32) and both reduction paths.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { LN_WGS, layerNormWorkgroupSize } from '../src/backend/webgpu/kernels/layernorm.js';
import { argmax, attention, layerNorm, linear, scaleColumns, sparseMlp, topK, transpose } from '../src/backend/cpu/kernels.js';
import { f32bits, Kernels, readF32, readU32, runNow, type LinearArgs } from '../src/backend/webgpu/ops.js';
import type { Gpu } from '../src/backend/webgpu/device.js';
import { floatsToHalves, halvesToFloats } from '../src/util/f16.js';
import { gumbelPick, gumbelUniform, topIds } from '../src/backend/gumbel.js';
import { gpuOrSkip, kvBuffer, kvRound, randomMatrix, readKv, readMatrix } from './gpu.js';
import { randomArray, rng, relErr } from './helpers.js';

let gpu: Gpu | null = null;
after(() => gpu?.device.destroy());
let worstLn = 0;
after(() => { if (process.env.DEJAVU_TEST_VERBOSE) console.log(`folded-LayerNorm GEMV: worst relative error ${worstLn}`); });

/**
 * A folded-LayerNorm GEMV case: W (rows × K) with x (mean 3, so the shift matters), γ, β and a bias
 * drawn from r; W folded at load as the runner does (gw: stored as W∘γ, foldLayerNormIntoWeights;
 * else W kept and γ read by the kernel, foldLayerNorm), c (c1 | c2) filled. `ref` is
 * LayerNorm-then-linear over the weights as the kernel reads them (W∘γ as stored, with c2 from the
 * weights before), `exact` over the unscaled weights (within W∘γ's f16 rounding of ref).
 */
async function foldedCase(k: Kernels, rows: number, K: number, r: () => number, gw: boolean, eps: number, own: GPUBuffer[]) {
  const { m, w } = randomMatrix(k, rows, K, r);
  const x = randomArray(K, r).map((v) => v + 3), g = randomArray(K, r).map((v) => 1 + 0.5 * v), be = randomArray(K, r, 0.3), b = randomArray(rows, r);
  const gam = k.f32Buffer(g, 'gamma'), beta = k.f32Buffer(be, 'beta'), bias = k.f32Buffer(b, 'b'), c = k.buffer(2 * rows * 4, 'c');
  await runNow(k, gw ? k.foldLayerNormIntoWeights({ W: m, gamma: gam, beta, bias, c, ones: k.f32Buffer(new Float32Array(K).fill(1), 'ones') }, own)
    : k.foldLayerNorm({ W: m, gamma: gam, beta, bias, c }, own), own);
  const stored = gw ? await readMatrix(k, m) : w;
  const hat = layerNorm(x, 1, K, new Float32Array(K).fill(1), new Float32Array(K), eps);
  const exact = linear(layerNorm(x, 1, K, g, be, eps), 1, w, b, K, rows);
  const ref = gw ? linear(hat, 1, stored, linear(be, 1, w, b, K, rows), K, rows) : exact;
  return { m, w, x, g, be, gam, c, stored, hat, ref, exact };
}

/**
 * The kernel variants: same device, the WGSL differs (a device with shader-f16 can run the packed
 * path); the KV cache alternates between f32 and packed f16, and the last variant is run both ways.
 */
function variants(g: Gpu): [string, Kernels][] {
  const out: [string, Kernels][] = [];
  for (const f16 of g.f16 ? [true, false] : [false]) for (const sg of g.subgroups ? [true, false] : [false]) {
    const kv16 = out.length % 2 === 1;
    out.push([`${f16 ? 'f16' : 'u32'}_${sg ? 'sg' : 'wgmem'}_kv${kv16 ? 16 : 32}`, new Kernels({ ...g, f16, subgroups: sg }, 4096, kv16)]);
  }
  if (out.length === 1) out.push([out[0][0].replace('kv32', 'kv16'), new Kernels({ ...g, f16: false, subgroups: false }, 4096, true)]);
  return out;
}


test('webgpu kernels match their CPU twins on odd shapes', async (t) => {
  gpu = await gpuOrSkip(t);
  if (!gpu) return;
  const r = rng(7);
  for (const [name, k] of variants(gpu)) {
    const own: GPUBuffer[] = [];
    await t.test(`linear (gemv and skinny matmul, split into parts) ${name}`, async () => {
      // K = 18 pads to 20 halves (narrow 8-byte form); the rest pad to multiples of 8 (wide form), and
      // K = 1037 runs the wide form's unrolled loop and its odd tail.
      // K = 48 and 1048 (x offsets and strides multiples of 4) read x as vec4<f32>.
      // K = 2056 and 4101 (>= 256 chunks, few rows) take the one-row-of-256-threads shape of short, wide matrices.
      // K = 16391 (2049 chunks, wide with a tail): fc2's long rows (one row of 256 threads here, as few rows).
      // Prefill (T > 1) takes the skinny matmul (its default form here; the others below): T = 2, 3,
      // 9, 19, 33, 70 end inside a token tile, 32 and 128 on one, 131 rows inside a row tile, K = 48,
      // 100 and 1048 read x as vec4 (from offset 0, and from 8 with stride K + 8), odd K inside a chunk.
      for (const [T, rows, K, inOff] of [[1, 37, 23], [1, 131, 45], [1, 29, 18], [1, 41, 1037], [1, 33, 48], [1, 43, 1048], [1, 21, 2056], [1, 7, 4101], [1, 9, 16391], [3, 37, 23], [19, 53, 71],
        [2, 131, 48], [9, 37, 1037], [32, 17, 1048, 8], [8, 5, 16391], [33, 29, 45], [70, 131, 45], [128, 67, 100, 8]] as const) {
        // GEMVs also at 2 and 3 rows a thread (the wide form's multi-row main; narrow rows ignore it).
        for (const epi of [{ bias: false, relu: false, resid: false }, { bias: true, relu: true, resid: false }, { bias: true, relu: false, resid: true }]) for (const rpt of T === 1 ? [1, 2, 3] : [1]) {
          const { m, w } = randomMatrix(k, rows, K, r);
          // With an offset: token t's x at off + t (K + off), the rest of the buffer noise.
          const off = inOff ?? 0, stride = K + off, x = randomArray(T * K, r), xs = randomArray(T * stride + off, r);
          for (let t = 0; t < T; t++) xs.set(x.subarray(t * K, (t + 1) * K), off + t * stride);
          const b = randomArray(rows, r), y0 = randomArray(T * rows, r);
          const y = k.f32Buffer(y0.slice(), 'y');
          const ds = k.linear({ W: m, x: k.f32Buffer(xs, 'x'), y, T, inOff: off, inStride: stride, bias: epi.bias ? k.f32Buffer(b, 'b') : null, relu: epi.relu, resid: epi.resid, shape: { rpt } }, own);
          const xv4 = K % 4 === 0 && off % 4 === 0;
          assert.ok(ds.every((dd) => (T === 1 ? /^gemv/ : /^skinny_/).test(dd.label) && (T === 1 || dd.label.includes('_xv4') === xv4)), `T=${T}: ${ds.map((dd) => dd.label).join()}`);
          await runNow(k, ds, own);
          const ref = linear(x, T, w, epi.bias ? b : null, K, rows);
          if (epi.relu) for (let i = 0; i < ref.length; i++) ref[i] = Math.max(0, ref[i]);
          if (epi.resid) for (let i = 0; i < ref.length; i++) ref[i] += y0[i];
          const got = await readF32(k, y, T * rows);
          assert.ok(relErr(got, ref) < 1e-5, `T=${T} ${rows}x${K} ${JSON.stringify(epi)} rpt=${rpt} parts=${m.parts.length} ${ds[0].label}: ${relErr(got, ref)}`);
        }
      }
    });
    await t.test(`skinny matmul forms (tokens a tile, lanes a row, rows a lane) ${name}`, async () => {
      // Every form against linear: 8- and 16-byte weight loads (K = 18: rows of 5 chunks of 4; the
      // rest even), x as scalars or vec4, one and two rounds of the tree reduction (2 · 8 and 4 · 8
      // sums a lane group), lanes as wide as the adapter's subgroup (its subgroupAdd path where it has
      // one) and wider, and a matrix split into parts (K = 1037 at maxPartBytes 4096).
      const ss = k.feats.subgroups && k.feats.subgroupSize ? k.feats.subgroupSize : 16;
      // { 4, 4, 4 }: fewer lanes than sums a lane group (the tree's writes loop over them).
      const forms = [{ tt: 8, lanes: 32, rpl: 2 }, { tt: 4, lanes: 64, rpl: 4 }, { tt: 8, lanes: 32, rpl: 4 }, { tt: 3, lanes: ss, rpl: 8 }, { tt: 16, lanes: 128, rpl: 1 }, { tt: 4, lanes: 4, rpl: 4 }];
      const saved = { ...k.skinny };
      try {
        for (const [i, form] of forms.entries()) {
          k.skinny = form;
          for (const [T, rows, K] of [[5, 37, 23], [9, 131, 48], [3, 29, 18], [17, 53, 1037]] as const) {
            const epi = [{ bias: false, relu: false, resid: false }, { bias: true, relu: true, resid: false }, { bias: true, relu: false, resid: true }][(i + T) % 3];
            const { m, w } = randomMatrix(k, rows, K, r);
            const x = randomArray(T * K, r), b = randomArray(rows, r), y0 = randomArray(T * rows, r);
            const y = k.f32Buffer(y0.slice(), 'y');
            const ds = k.linear({ W: m, x: k.f32Buffer(x, 'x'), y, T, bias: epi.bias ? k.f32Buffer(b, 'b') : null, relu: epi.relu, resid: epi.resid }, own);
            const wide = Math.ceil(K / 4) % 2 === 0;
            assert.ok(ds.every((dd) => dd.label.startsWith(`skinny_${k.feats.f16 ? 'f16' : 'u32'}_tt${form.tt}l${form.lanes}r${form.rpl}`) && dd.label.includes('_w16') === wide), ds.map((dd) => dd.label).join());
            await runNow(k, ds, own);
            const ref = linear(x, T, w, epi.bias ? b : null, K, rows);
            if (epi.relu) for (let j = 0; j < ref.length; j++) ref[j] = Math.max(0, ref[j]);
            if (epi.resid) for (let j = 0; j < ref.length; j++) ref[j] += y0[j];
            const e = relErr(await readF32(k, y, T * rows), ref);
            assert.ok(e < 1e-5, `${JSON.stringify(form)} T=${T} ${rows}x${K} ${JSON.stringify(epi)} parts=${m.parts.length}: ${e}`);
          }
        }
      } finally { k.skinny = saved; }
    });
    await t.test(`gemv with the pre-LayerNorm folded in vs layerNorm then linear ${name}`, async () => {
      // The shapes of the linear test (narrow, wide, wide with vec4 x, one-row-of-256 shapes, the
      // wide tail), every epilogue, matrices split into parts (maxPartBytes 4096). x has mean 3:
      // the μ·c1 term is large and must cancel. K = 5 and 3: statistics over fewer elements than threads.
      // With the residual epilogue x[0] is an outlier 50σ above the mean: the kernel's statistics are
      // sums about a shift taken from x's first elements (gemv.ts), which that must not spoil.
      const eps = 1e-5;
      for (const [rows, K] of [[37, 23], [131, 45], [29, 18], [41, 1037], [33, 48], [43, 1048], [21, 2056], [7, 4101], [9, 5], [11, 3]] as const) {
        for (const epi of [{ bias: false, relu: false, resid: false }, { bias: true, relu: true, resid: false }, { bias: true, relu: false, resid: true }]) for (const rpt of [1, 2, 3]) {
          const { m, w } = randomMatrix(k, rows, K, r);
          const x = randomArray(K, r).map((v) => v + 3), g = randomArray(K, r).map((v) => 1 + 0.5 * v), be = randomArray(K, r, 0.3);
          if (epi.resid) x[0] = 3 + 50 * Math.sqrt(1 / 3);
          const b = randomArray(rows, r), y0 = randomArray(rows, r);
          const c = k.buffer(2 * rows * 4, 'c'), gam = k.f32Buffer(g, 'gamma');
          await runNow(k, k.foldLayerNorm({ W: m, gamma: gam, beta: k.f32Buffer(be, 'beta'), bias: epi.bias ? k.f32Buffer(b, 'b') : null, c }, own), own);
          const y = k.f32Buffer(y0.slice(), 'y');
          // Without bias, also lnOut: the GEMV writes LN(x) itself (each workgroup a slice).
          const out = epi.bias ? undefined : { beta: k.f32Buffer(be, 'beta'), xn: k.f32Buffer(new Float32Array(K).fill(NaN), 'xn') };
          const ds = k.linear({ W: m, x: k.f32Buffer(x, 'x'), y, T: 1, relu: epi.relu, resid: epi.resid, ln: { gamma: gam, c, eps, out }, shape: { rpt } }, own);
          assert.ok(ds.every((dd) => /_ln(out)?(_p\d(_pl)?)?$/.test(dd.label) && dd.label.includes(out ? '_lnout' : '_ln')), ds.map((dd) => dd.label).join());
          await runNow(k, ds, own);
          const normed = layerNorm(x, 1, K, g, be, eps);
          if (out) assert.ok(relErr(await readF32(k, out.xn, K), normed) < 1e-5, `lnOut ${rows}x${K} rpt=${rpt}: ${relErr(await readF32(k, out.xn, K), normed)}`);
          const ref = linear(normed, 1, w, epi.bias ? b : null, K, rows);
          if (epi.relu) for (let i = 0; i < ref.length; i++) ref[i] = Math.max(0, ref[i]);
          if (epi.resid) for (let i = 0; i < ref.length; i++) ref[i] += y0[i];
          const got = await readF32(k, y, rows);
          const e = relErr(got, ref);
          worstLn = Math.max(worstLn, e);
          assert.ok(e < 1e-5, `${rows}x${K} ${JSON.stringify(epi)} rpt=${rpt} parts=${m.parts.length}: ${e}`);
        }
      }
      assert.throws(() => k.linear({ W: k.matrix(3, 8, 'W'), x: k.buffer(64, 'x'), y: k.buffer(64, 'y'), T: 2, ln: { gamma: k.buffer(32, 'g'), c: k.buffer(32, 'c'), eps } }, own), /T = 1/);
    });
    // (Only where the path exists: reductions with subgroups on an adapter of one subgroup size.)
    const ss = k.feats.subgroups ? k.feats.subgroupSize : undefined;
    if (ss && 256 % ss === 0) await t.test(`gemv rows one subgroup wide: sums from subgroupAdd alone (sgExact) ${name}`, async () => {
      // Lanes a row = the adapter's one subgroup size (8 on lavapipe, 32 on NVIDIA) at 1 to 3 rows a
      // thread (the single-row and several-rows mains): plain with an epilogue, and the folded
      // LayerNorm (its sums a vec3), with γ in the weights or not; shapes, epilogues and forms rotate
      // over the cases (each is a pipeline to compile).
      const eps = 1e-5, sizes = [[37, 45], [131, 1037], [3 * 24, 48]] as const;
      for (const rpt of [1, 2, 3]) for (const odd of [false, true]) {
        const [rows, K] = sizes[(rpt + (odd ? 1 : 0)) % 3];
        const shape = { rows: 256 / ss, tpr: ss, rpt };
        const what = `${rows}x${K} rpt ${rpt}`;
        const label = (dd: { label: string }) => dd.label.includes('_sgx_') && dd.label.includes(`_tpr${ss}`);
        const { m, w } = randomMatrix(k, rows, K, r);
        const x = randomArray(K, r).map((v) => v + 3), b = randomArray(rows, r), y0 = randomArray(rows, r);
        {
          const epi = odd ? { relu: true, resid: false } : { relu: false, resid: true };
          const y = k.f32Buffer(y0.slice(), 'y');
          const ds = k.linear({ W: m, x: k.f32Buffer(x, 'x'), y, T: 1, bias: k.f32Buffer(b, 'b'), relu: epi.relu, resid: epi.resid, shape }, own);
          assert.ok(ds.every(label), ds.map((dd) => dd.label).join());
          await runNow(k, ds, own);
          const ref = linear(x, 1, w, b, K, rows);
          for (let i = 0; i < rows; i++) ref[i] = epi.relu ? Math.max(0, ref[i]) : ref[i] + y0[i];
          assert.ok(relErr(await readF32(k, y, rows), ref) < 1e-5, `${what} ${JSON.stringify(epi)}`);
        }
        {
          const gw = !odd;
          const fc = await foldedCase(k, rows, K, r, gw, eps, own);
          const y = k.buffer(rows * 4, 'y');
          const ds = k.linear({ W: fc.m, x: k.f32Buffer(fc.x, 'x'), y, T: 1, relu: true, ln: { gamma: fc.gam, c: fc.c, eps, gammaInW: gw }, shape }, own);
          assert.ok(ds.every(label), ds.map((dd) => dd.label).join());
          await runNow(k, ds, own);
          const ref = fc.ref.map((v) => Math.max(0, v));
          assert.ok(relErr(await readF32(k, y, rows), ref) < 1e-5, `${what} ln gw ${gw}: ${relErr(await readF32(k, y, rows), ref)}`);
        }
      }
    });
    await t.test(`scaleColumns and gemv with γ in the weights (folded LayerNorm; qkv's K/V store, A's and the head rows) vs the CPU ${name}`, async () => {
      // scaleColumns against its twin on split parts (maxPartBytes 4096) and odd widths (K = 23: a
      // lone half at the end of each row). Then the folded GEMV over W∘γ (c from
      // foldLayerNormIntoWeights) against LayerNorm-then-linear: bit-near the same weights as stored
      // (x̂ · (W∘γ)ᵀ + c2), and within the f16 rounding of W∘γ of the unscaled product.
      const eps = 1e-5;
      // 1024 x 4096 (rpt 0: no shape given): a dense fc1's width at opt-6.7b, where linear takes its own
      // shape for the folded GEMV over W∘γ (ops.ts foldedShape: 8 rows of 32 threads, three a thread).
      for (const [rows, K, rpts] of [[131, 23, [1, 2]], [37, 45, [1, 2]], [41, 1037, [1, 2]], [43, 1048, [1, 2]], [21, 2056, [1, 2]], [9, 5, [1, 2]], [1024, 4096, [0]]] as const) for (const rpt of rpts) {
        const { m, w, x, g, be, gam, c, stored, hat, ref: asStored, exact } = await foldedCase(k, rows, K, r, true, eps, own);
        const ws = scaleColumns(w, rows, K, g);
        assert.ok(relErr(stored, ws) < 1e-3 && stored.every((v, i) => Math.abs(v - ws[i]) <= Math.abs(ws[i]) * 2 ** -10), `${rows}x${K}: W∘γ as stored`);
        const y = k.buffer(rows * 4, 'y');
        // At two rows a thread also lnOut's x̂ form: the LayerNorm without γ and β (for fc1 as W∘γ).
        const out = rpt === 2 ? { beta: k.f32Buffer(be, 'beta'), xn: k.f32Buffer(new Float32Array(K).fill(NaN), 'xn'), hat: true } : undefined;
        const ds = k.linear({ W: m, x: k.f32Buffer(x, 'x'), y, T: 1, ln: { gamma: gam, c, eps, gammaInW: true, out }, shape: rpt ? { rpt } : undefined }, own);
        assert.ok(ds.every((dd) => (rpt ? dd.label.endsWith('_gw') : /_r8_tpr32_ln_p3_gw$/.test(dd.label)) && dd.label.includes(out ? '_lnhat' : '_ln_')), ds.map((dd) => dd.label).join());
        // Rows of at most 2048 at two rows a thread take the peeled first trip (gemv.ts PEEL), wider ones not.
        assert.ok(ds.every((dd) => dd.label.includes('_pl_') === (rpt === 2 && K <= 2048)), ds.map((dd) => dd.label).join());
        await runNow(k, ds, own);
        const got = await readF32(k, y, rows);
        if (out) assert.ok(relErr(await readF32(k, out.xn, K), hat) < 1e-5, `${rows}x${K}: lnOut x̂`);
        assert.ok(relErr(got, asStored) < 1e-5, `${rows}x${K} rpt=${rpt} parts=${m.parts.length}: ${relErr(got, asStored)}`);
        assert.ok(relErr(got, exact) < 2e-3, `${rows}x${K} rpt=${rpt}: against the unscaled weights ${relErr(got, exact)}`);
      }
      // The qkv GEMV over W∘γ with A's rows and the next layer's head rows (A∘γ, Wh∘γ too, as the
      // runner stores what it fuses) and the K/V store: every row as x̂ · (M∘γ)ᵀ + c2 of its matrix.
      const maxPos = 6, pos = 3, rA = 5, H = 3;
      let fitted = 0;
      for (const d of [16, 18, 24]) for (const rpt of [1, 2]) {
        const { m, w } = randomMatrix(k, 3 * d, d, r), { m: A, w: wa } = randomMatrix(k, rA, d, r), { m: Wh, w: wh } = randomMatrix(k, H, d, r);
        const shape = { rows: 1, rpt };
        if (!(k.canFuseHeadsNext(m, Wh, A, shape, 'none') && k.canFusePredictor(m, A, shape, Wh))) continue;
        fitted++;
        const g = randomArray(d, r).map((v) => 1 + 0.5 * v), be = randomArray(d, r), b = randomArray(3 * d, r), hb = randomArray(H, r);
        const gam = k.f32Buffer(g, 'gamma'), beta = k.f32Buffer(be, 'beta'), ones = k.f32Buffer(new Float32Array(d).fill(1), 'ones');
        const cq = k.buffer(2 * 3 * d * 4, 'c qkv'), ca = k.buffer(2 * rA * 4, 'c A'), ch = k.buffer(2 * H * 4, 'c heads');
        await runNow(k, [...k.foldLayerNormIntoWeights({ W: m, gamma: gam, beta, bias: k.f32Buffer(b, 'b'), c: cq, ones }, own),
          ...k.foldLayerNormIntoWeights({ W: A, gamma: gam, beta, bias: null, c: ca, ones }, own),
          ...k.foldLayerNormIntoWeights({ W: Wh, gamma: gam, beta, bias: k.f32Buffer(hb, 'hb'), c: ch, ones }, own)], own);
        const q = await readF32(k, cq, 6 * d), a = await readF32(k, ca, 2 * rA), hc = await readF32(k, ch, 2 * H);
        const cAll = k.f32Buffer(Float32Array.from([...q.subarray(0, 3 * d), ...a.subarray(0, rA), ...hc.subarray(0, H), ...q.subarray(3 * d), ...a.subarray(rA), ...hc.subarray(H)]), 'c');
        const x = randomArray(d, r).map((v) => v + 1), xb = k.f32Buffer(x, 'x');
        const step = k.f32Buffer(Uint32Array.from([pos, 0]), 'step'), kc = kvBuffer(k, new Float32Array(maxPos * d), 'k'), vc = kvBuffer(k, new Float32Array(maxPos * d), 'v');
        const y = k.buffer((3 * d + rA) * 4, 'y'), scores = k.buffer(H * 4, 'scores');
        const ds = k.linear({ W: m, x: xb, y, T: 1, ln: { gamma: gam, c: cAll, eps, gammaInW: true }, kv: { step, k: kc, v: vc, pred: A, hnext: { W: Wh, out: scores } }, shape }, own);
        assert.ok(ds.length === 1 && ds[0].label.endsWith('_gw') && ds[0].label.includes('_predA'), ds[0].label);
        await runNow(k, ds, own);
        const what = `d ${d} rpt ${rpt}`;
        const hat = layerNorm(x, 1, d, new Float32Array(d).fill(1), new Float32Array(d), eps);
        const want = linear(hat, 1, await readMatrix(k, m), linear(be, 1, w, b, d, 3 * d), d, 3 * d);
        const got = await readF32(k, y, 3 * d + rA);
        assert.ok(relErr(got.subarray(0, 3 * d), want) < 1e-5, `${what}: qkv rows ${relErr(got.subarray(0, 3 * d), want)}`);
        const kg = await readKv(k, kc, maxPos * d), vg = await readKv(k, vc, maxPos * d);
        const tol = k.kvHalf ? 1e-3 : 1e-5;
        assert.ok(relErr(kg.subarray(pos * d, pos * d + d), want.subarray(d, 2 * d)) < tol && relErr(vg.subarray(pos * d, pos * d + d), want.subarray(2 * d)) < tol, `${what}: K/V stored`);
        const wantA = linear(hat, 1, await readMatrix(k, A), linear(be, 1, wa, null, d, rA), d, rA);
        const wantH = linear(hat, 1, await readMatrix(k, Wh), linear(be, 1, wh, hb, d, H), d, H);
        assert.ok(relErr(got.subarray(3 * d), wantA) < 1e-5, `${what}: A's rows ${relErr(got.subarray(3 * d), wantA)}`);
        assert.ok(relErr(await readF32(k, scores, H), wantH) < 1e-5, `${what}: the head scores`);
      }
      assert.ok(fitted >= 3, `most cases fit (${fitted})`);
    });
    await t.test(`layernorm ${name}`, async () => {
      // Both workgroup sizes the kernel is built for (where the adapter allows), short and multi-pass rows.
      for (const wg of LN_WGS.filter((g) => g === layerNormWorkgroupSize(k.gpu.limits) || g === 256)) {
        for (const [n, rows] of [[37, 3], [4099, 2]]) {
          const x = randomArray(rows * n, r, 3), w = randomArray(n, r), b = randomArray(n, r);
          const y = k.buffer(rows * n * 4, 'y');
          await runNow(k, [k.layerNorm({ x: k.f32Buffer(x, 'x'), y, w: k.f32Buffer(w, 'w'), b: k.f32Buffer(b, 'b'), n, rows, eps: 1e-5, wg }, own)], own);
          assert.ok(relErr(await readF32(k, y, rows * n), layerNorm(x, rows, n, w, b, 1e-5)) < 1e-5, `wg ${wg} n ${n}`);
          const xi = k.f32Buffer(x, 'x');
          await runNow(k, [k.layerNorm({ x: null, y: xi, w: k.f32Buffer(w, 'w'), b: k.f32Buffer(b, 'b'), n, rows, eps: 1e-5, wg }, own)], own);
          assert.ok(relErr(await readF32(k, xi, rows * n), layerNorm(x, rows, n, w, b, 1e-5)) < 1e-5, `in place, wg ${wg} n ${n}`);
        }
      }
    });
    await t.test(`kv store + attention ${name}`, async () => {
      const H = 3, hd = 5, d = H * hd, pos = 6, T = 3, maxPos = 13;
      const kc = new Float32Array(maxPos * d), vc = new Float32Array(maxPos * d);
      kc.set(randomArray(pos * d, r)); vc.set(randomArray(pos * d, r));
      const qkv = randomArray(T * 3 * d, r);
      const q = new Float32Array(T * d);
      for (let t2 = 0; t2 < T; t2++) {
        q.set(qkv.subarray(t2 * 3 * d, t2 * 3 * d + d), t2 * d);
        kc.set(qkv.subarray(t2 * 3 * d + d, t2 * 3 * d + 2 * d), (pos + t2) * d);
        vc.set(qkv.subarray(t2 * 3 * d + 2 * d, t2 * 3 * d + 3 * d), (pos + t2) * d);
      }
      const step = k.f32Buffer(Uint32Array.from([pos]), 'step');
      const gk = kvBuffer(k, kc.map((v, i) => (i < pos * d ? v : 0)), 'k'), gv = kvBuffer(k, vc.map((v, i) => (i < pos * d ? v : 0)), 'v');
      const gq = k.f32Buffer(qkv, 'qkv'), o = k.buffer(T * d * 4, 'o'), hn = k.buffer(T * H * 4, 'hn');
      await runNow(k, [k.kvStore({ step, qkv: gq, k: gk, v: gv, d, T }, own), ...k.attention({ step, qkv: gq, k: gk, v: gv, o, hn, H, hd, T, maxPos }, own)], own);
      // The caches hold the values in their element type (f16: rounded, the GPU's conversion may
      // round a tie either way); attention's reference reads what they hold.
      const [kcG, vcG] = [await readKv(k, gk, maxPos * d), await readKv(k, gv, maxPos * d)];
      const tol = k.kvHalf ? 1e-3 : 1e-7;
      assert.ok(relErr(kcG, kvRound(k, kc)) < tol && relErr(vcG, kvRound(k, vc)) < tol, 'K and V caches');
      const hnRef = new Float32Array(T * H);
      const ref = attention(q, T, pos, kcG, vcG, H, hd, undefined, hnRef);
      assert.ok(relErr(await readF32(k, o, T * d), ref) < 1e-5, 'attention output');
      assert.ok(relErr(await readF32(k, hn, T * H), hnRef) < 1e-5, 'head norms');
    });
    await t.test(`qkv GEMV storing K and V in its epilogue vs qkv GEMV then kvStore (decode) ${name}`, async () => {
      // d = 13 (wide form, 8-half tail), 18 (narrow form), 37 (wide, tail; the (111, 37) matrix is
      // three parts at maxPartBytes 4096, so part boundaries fall inside the K and V thirds); plain,
      // with bias, and with the LayerNorm folded in. The cache rows around the position must survive.
      const maxPos = 9, pos = 5, eps = 1e-5;
      for (const d of [13, 18, 37]) {
        for (const mode of ['plain', 'bias', 'ln'] as const) {
          const { m } = randomMatrix(k, 3 * d, d, r);
          const x = randomArray(d, r).map((v) => v + 1), b = randomArray(3 * d, r);
          const cache0 = randomArray(maxPos * d, r), vcache0 = randomArray(maxPos * d, r);
          const step = k.f32Buffer(Uint32Array.from([pos, 0]), 'step'), xb = k.f32Buffer(x, 'x');
          const bias = mode === 'bias' ? k.f32Buffer(b, 'b') : null;
          let ln: { gamma: GPUBuffer; c: GPUBuffer; eps: number } | null = null;
          if (mode === 'ln') {
            const gam = k.f32Buffer(randomArray(d, r).map((v) => 1 + 0.5 * v), 'gamma'), c = k.buffer(2 * 3 * d * 4, 'c');
            await runNow(k, k.foldLayerNorm({ W: m, gamma: gam, beta: k.f32Buffer(randomArray(d, r), 'beta'), bias: k.f32Buffer(b, 'b'), c }, own), own);
            ln = { gamma: gam, c, eps };
          }
          const outs: Float32Array[][] = [];
          // Fused at 1, 2 and 3 rows a thread (3: the dense qkv GEMV's shape at d = 4096 and 5120, ops.ts foldedShape).
          for (const [fused, rpt] of [[false, 1], [true, 1], [true, 2], [true, 3]] as const) {
            const y = k.buffer(3 * d * 4, 'qkv'), kc = kvBuffer(k, cache0, 'k'), vc = kvBuffer(k, vcache0, 'v');
            const ds = k.linear({ W: m, x: xb, y, T: 1, bias, ln, kv: fused ? { step, k: kc, v: vc } : null, shape: { rpt } }, own);
            assert.equal(ds.every((dd) => dd.label.includes('_kv')), fused);
            if (!fused) ds.push(k.kvStore({ step, qkv: y, k: kc, v: vc, d, T: 1 }, own));
            await runNow(k, ds, own);
            outs.push([await readF32(k, y, 3 * d), await readKv(k, kc, maxPos * d), await readKv(k, vc, maxPos * d)]);
          }
          const what = `d ${d} ${mode} parts=${m.parts.length}`;
          assert.deepEqual(outs[1][0], outs[0][0], `${what}: qkv`);
          assert.deepEqual(outs[1][1], outs[0][1], `${what}: K cache`);
          assert.deepEqual(outs[1][2], outs[0][2], `${what}: V cache`);
          assert.notDeepEqual(outs[1][1], kvRound(k, cache0), `${what}: K row written`);
          // Two or three rows a thread sum in another order: the same values to rounding (an f16 cache may
          // round a value the other way: half an f16 ulp), the same cache rows written.
          for (const o of [2, 3]) for (let j = 0; j < 3; j++) {
            const tol = j > 0 && k.kvHalf ? 1e-3 : 1e-5;
            assert.ok(relErr(outs[o][j], outs[0][j]) < tol, `${what}: rpt ${o}, output ${j}: ${relErr(outs[o][j], outs[0][j])}`);
          }
        }
      }
      // Prefill keeps kvStore; a residual add would store the sum's operand, not y.
      const m = k.matrix(9, 3, 'W'), kv = { step: k.buffer(16, 's'), k: k.buffer(64, 'k'), v: k.buffer(64, 'v') };
      assert.throws(() => k.linear({ W: m, x: k.buffer(64, 'x'), y: k.buffer(64, 'y'), T: 2, kv }, own), /T = 1/);
      assert.throws(() => k.linear({ W: m, x: k.buffer(64, 'x'), y: k.buffer(64, 'y'), T: 1, resid: true, kv }, own), /residual/);
      assert.throws(() => k.linear({ W: k.matrix(8, 3, 'W'), x: k.buffer(64, 'x'), y: k.buffer(64, 'y'), T: 1, kv }, own), /\(3d, d\)/);
    });
    await t.test(`qkv GEMV carrying predictor A's rows (DejaVu's lookahead) vs qkv and A apart ${name}`, async () => {
      // d = 16 (wide, x as vec4), 18 (narrow), 21 (wide with a tail); one and two rows a thread
      // (narrow rows take one; 63 rows are not whole workgroups of two). qkv's rows, K and V must come
      // out bit for bit as without A; A's rows as A's own folded GEMV.
      const maxPos = 6, pos = 3, eps = 1e-5, rA = 5;
      for (const d of [16, 18, 21]) for (const rpt of [1, 2]) {
        const { m } = randomMatrix(k, 3 * d, d, r), { m: A } = randomMatrix(k, rA, d, r);
        const shape = { rows: 1, rpt };
        assert.equal(k.canFusePredictor(m, A, shape), !(d === 21 && rpt === 2), `d ${d} rpt ${rpt}`);
        if (d === 21 && rpt === 2) continue;
        const gam = k.f32Buffer(randomArray(d, r).map((v) => 1 + 0.5 * v), 'gamma'), beta = k.f32Buffer(randomArray(d, r), 'beta');
        const cq = k.buffer(2 * 3 * d * 4, 'c qkv'), ca = k.buffer(2 * rA * 4, 'c A');
        await runNow(k, [...k.foldLayerNorm({ W: m, gamma: gam, beta, bias: k.f32Buffer(randomArray(3 * d, r), 'b'), c: cq }, own),
          ...k.foldLayerNorm({ W: A, gamma: gam, beta, bias: null, c: ca }, own)], own);
        const q = await readF32(k, cq, 6 * d), a = await readF32(k, ca, 2 * rA);
        const cAll = k.f32Buffer(Float32Array.from([...q.subarray(0, 3 * d), ...a.subarray(0, rA), ...q.subarray(3 * d), ...a.subarray(rA)]), 'c qkv+A');
        const step = k.f32Buffer(Uint32Array.from([pos, 0]), 'step'), xb = k.f32Buffer(randomArray(d, r).map((v) => v + 1), 'x');
        const cache0 = randomArray(maxPos * d, r);
        const run = async (pred: boolean) => {
          const y = k.buffer((3 * d + rA) * 4, 'y'), kc = kvBuffer(k, cache0, 'k'), vc = kvBuffer(k, cache0, 'v');
          const ds = k.linear({ W: m, x: xb, y, T: 1, ln: { gamma: gam, c: pred ? cAll : cq, eps }, kv: { step, k: kc, v: vc, pred: pred ? A : undefined }, shape }, own);
          assert.equal(ds.length, 1);
          assert.equal(ds[0].label.includes('_predA'), pred);
          await runNow(k, ds, own);
          return [await readF32(k, y, 3 * d + rA), await readKv(k, kc, maxPos * d), await readKv(k, vc, maxPos * d)];
        };
        const plain = await run(false), fused = await run(true);
        const what = `d ${d} rpt ${rpt}`;
        assert.deepEqual(fused[0].subarray(0, 3 * d), plain[0].subarray(0, 3 * d), `${what}: qkv rows`);
        assert.deepEqual(fused[1], plain[1], `${what}: K cache`);
        assert.deepEqual(fused[2], plain[2], `${what}: V cache`);
        const u = k.buffer(rA * 4, 'u');
        await runNow(k, k.linear({ W: A, x: xb, y: u, T: 1, ln: { gamma: gam, c: ca, eps } }, own), own);
        const want = await readF32(k, u, rA);
        assert.ok(relErr(fused[0].subarray(3 * d), want) < 1e-5, `${what}: A's rows ${relErr(fused[0].subarray(3 * d), want)}`);
      }
      // Refused: qkv's rows not whole workgroups (54 rows, 4 a workgroup), A of another width, no folded LayerNorm,
      // qkv in two parts (parts hold multiples of 64 rows: 72 rows of 24 columns at 4 KiB).
      const q18 = randomMatrix(k, 54, 18, r).m, A18 = randomMatrix(k, 5, 18, r).m;
      assert.equal(k.canFusePredictor(q18, A18, { rows: 4 }), false);
      assert.equal(k.canFusePredictor(q18, randomMatrix(k, 5, 17, r).m, { rows: 2 }), false);
      assert.equal(k.canFusePredictor(randomMatrix(k, 72, 24, r).m, randomMatrix(k, 5, 24, r).m, { rows: 2 }), false);
      const kv = { step: k.buffer(16, 's'), k: k.buffer(4096, 'k'), v: k.buffer(4096, 'v'), pred: A18 };
      assert.throws(() => k.linear({ W: q18, x: k.buffer(128, 'x'), y: k.buffer(512, 'y'), T: 1, kv, shape: { rows: 2 } }, own), /lookahead/);
    });
    await t.test(`a residual GEMV carrying another matrix's rows into a second output (RIDE: attn_io's o half of A on out_proj) vs each apart and the CPU ${name}`, async () => {
      // d = 16 (wide, x as vec4), 18 (narrow), 21 (wide with a tail), 29 (odd); one and two rows a
      // thread. W's rows must come out bit for bit as without the riding rows; the riding rows add
      // into y2 from an offset and leave the rest of y2 alone.
      const rA = 7, off = 5;
      for (const d of [16, 18, 21, 29]) for (const rpt of [1, 2]) for (const bias of [true, false]) {
        const rows = rpt === 2 ? 2 * d : d;   // whole workgroups of two rows a thread at rows: 1
        const { m, w } = randomMatrix(k, rows, d, r), { m: A, w: wa } = randomMatrix(k, rA, d, r);
        const shape = { rows: 1, rpt };
        if (!k.canRide(m, A, shape)) { assert.ok(d === 18 && rpt === 2, `d ${d} rpt ${rpt}: should ride`); continue; }
        const x = randomArray(d, r), b = randomArray(rows, r), y0 = randomArray(rows, r), u0 = randomArray(rA + off + 3, r);
        const xb = k.f32Buffer(x, 'x'), bb = bias ? k.f32Buffer(b, 'b') : null;
        const run = async (ride: boolean) => {
          const y = k.f32Buffer(y0, 'y'), y2 = k.f32Buffer(u0, 'y2');
          const ds = k.linear({ W: m, x: xb, y, T: 1, bias: bb, resid: true, shape, ...(ride ? { ride: { W: A, y: y2, off } } : {}) }, own);
          assert.equal(ds.length, 1);
          assert.equal(ds[0].label.includes('_ride'), ride);
          await runNow(k, ds, own);
          return [await readF32(k, y, rows), await readF32(k, y2, u0.length)];
        };
        const [plain, carried] = [await run(false), await run(true)];
        const what = `d ${d} rpt ${rpt} bias ${bias}`;
        assert.deepEqual(carried[0], plain[0], `${what}: W's rows`);
        const wantY = linear(x, 1, w, bias ? b : null, d, rows).map((v, i) => v + y0[i]);
        assert.ok(relErr(carried[0], wantY) < 1e-5, `${what}: against the CPU`);
        const wantU = Float32Array.from(u0), dots = linear(x, 1, wa, null, d, rA);
        for (let j = 0; j < rA; j++) wantU[off + j] += dots[j];
        assert.deepEqual(carried[1].subarray(0, off), u0.subarray(0, off), `${what}: y2 before the offset`);
        assert.deepEqual(carried[1].subarray(off + rA), u0.subarray(off + rA), `${what}: y2 after the riding rows`);
        assert.ok(relErr(carried[1], wantU) < 1e-5, `${what}: the riding rows ${relErr(carried[1], wantU)}`);
      }
      // Refused: rows that are not whole workgroups, another width, two tokens, a folded LayerNorm.
      const W9 = randomMatrix(k, 9, 16, r).m, A16 = randomMatrix(k, 3, 16, r).m;
      assert.equal(k.canRide(W9, A16, { rows: 2 }), false);
      assert.equal(k.canRide(randomMatrix(k, 8, 16, r).m, randomMatrix(k, 3, 15, r).m, { rows: 2 }), false);
      const y = k.buffer(256, 'y'), xs = k.buffer(256, 'x');
      assert.throws(() => k.linear({ W: W9, x: xs, y, T: 1, resid: true, shape: { rows: 2 }, ride: { W: A16, y, off: 0 } }, own), /riding rows/);
      assert.throws(() => k.linear({ W: randomMatrix(k, 8, 16, r).m, x: xs, y, T: 2, ride: { W: A16, y, off: 0 } }, own), /riding rows/);
    });
    await t.test(`qkv GEMV carrying the next layer's head scores (the head lookahead), with and without A's rows, vs each apart ${name}`, async () => {
      // d = 16 (wide), 18 (narrow), 21 (wide with a tail); one and two rows a thread; H = 3 head rows
      // after qkv's 3d (and A's 5). qkv's rows, K and V bit for bit as without them, A's rows as with
      // A alone, the scores (written to their own buffer, not y) as the head GEMV's own.
      const maxPos = 6, pos = 3, eps = 1e-5, rA = 5, H = 3;
      let fitted = 0;
      for (const d of [16, 18, 21]) for (const rpt of [1, 2]) for (const withA of [false, true]) {
        const { m } = randomMatrix(k, 3 * d, d, r), { m: A } = randomMatrix(k, rA, d, r), { m: Wh } = randomMatrix(k, H, d, r);
        const shape = { rows: 1, rpt }, pred = withA ? A : undefined;
        const fits = k.canFuseHeadsNext(m, Wh, pred, shape, 'none') && (!withA || k.canFusePredictor(m, A, shape, Wh));
        const what = `d ${d} rpt ${rpt}${withA ? ' with A' : ''}`;
        if (d === 21 && rpt === 2 && !withA) assert.equal(fits, false, `${what}: 63 rows are not whole workgroups of two`);
        if (!fits) continue;
        fitted++;
        const gam = k.f32Buffer(randomArray(d, r).map((v) => 1 + 0.5 * v), 'gamma'), beta = k.f32Buffer(randomArray(d, r), 'beta');
        const cq = k.buffer(2 * 3 * d * 4, 'c qkv'), ca = k.buffer(2 * rA * 4, 'c A'), ch = k.buffer(2 * H * 4, 'c heads');
        await runNow(k, [...k.foldLayerNorm({ W: m, gamma: gam, beta, bias: k.f32Buffer(randomArray(3 * d, r), 'b'), c: cq }, own),
          ...k.foldLayerNorm({ W: A, gamma: gam, beta, bias: null, c: ca }, own),
          ...k.foldLayerNorm({ W: Wh, gamma: gam, beta, bias: k.f32Buffer(randomArray(H, r), 'hb'), c: ch }, own)], own);
        const q = await readF32(k, cq, 6 * d), a = await readF32(k, ca, 2 * rA), hc = await readF32(k, ch, 2 * H);
        const na = withA ? rA : 0;
        const cOf = (heads: boolean) => k.f32Buffer(Float32Array.from([...q.subarray(0, 3 * d), ...(withA ? a.subarray(0, rA) : []), ...(heads ? hc.subarray(0, H) : []),
          ...q.subarray(3 * d), ...(withA ? a.subarray(rA) : []), ...(heads ? hc.subarray(H) : [])]), 'c');
        const step = k.f32Buffer(Uint32Array.from([pos, 0]), 'step'), xb = k.f32Buffer(randomArray(d, r).map((v) => v + 1), 'x');
        const cache0 = randomArray(maxPos * d, r);
        const run = async (heads: boolean) => {
          const y = k.f32Buffer(new Float32Array(3 * d + na + H).fill(-7), 'y'), kc = kvBuffer(k, cache0, 'k'), vc = kvBuffer(k, cache0, 'v');
          const out = k.f32Buffer(new Float32Array(H).fill(-7), 'scores');
          const ds = k.linear({ W: m, x: xb, y, T: 1, ln: { gamma: gam, c: cOf(heads), eps }, kv: { step, k: kc, v: vc, pred, hnext: heads ? { W: Wh, out } : undefined }, shape }, own);
          assert.equal(ds.length, 1);
          assert.equal(ds[0].label.includes('_hn'), heads);
          await runNow(k, ds, own);
          return [await readF32(k, y, 3 * d + na + H), await readKv(k, kc, maxPos * d), await readKv(k, vc, maxPos * d), await readF32(k, out, H)];
        };
        const plain = await run(false), fused = await run(true);
        assert.deepEqual(fused[0].subarray(0, 3 * d + na), plain[0].subarray(0, 3 * d + na), `${what}: qkv (and A) rows`);
        assert.ok(fused[0].subarray(3 * d + na).every((v) => v === -7), `${what}: the head rows do not go to y`);
        assert.deepEqual(fused[1], plain[1], `${what}: K cache`);
        assert.deepEqual(fused[2], plain[2], `${what}: V cache`);
        const u = k.buffer(H * 4, 'u');
        await runNow(k, k.linear({ W: Wh, x: xb, y: u, T: 1, ln: { gamma: gam, c: ch, eps } }, own), own);
        const want = await readF32(k, u, H);
        assert.ok(relErr(fused[3], want) < 1e-5, `${what}: the head scores ${relErr(fused[3], want)}`);
      }
      assert.ok(fitted >= 8, `most cases fit (${fitted})`);
      // Refused: the head matrix of another width, qkv in two parts, no folded LayerNorm.
      const q24 = randomMatrix(k, 72, 24, r).m, W18 = randomMatrix(k, 48, 16, r).m;
      assert.equal(k.canFuseHeadsNext(W18, randomMatrix(k, 3, 15, r).m, undefined, { rows: 1 }, 'none'), false);
      assert.equal(k.canFuseHeadsNext(q24, randomMatrix(k, 3, 24, r).m, undefined, { rows: 1 }, 'none'), q24.parts.length === 1);
      const kv = { step: k.buffer(16, 's'), k: k.buffer(4096, 'k'), v: k.buffer(4096, 'v'), hnext: { W: randomMatrix(k, 3, 16, r).m, out: k.buffer(16, 'o') } };
      assert.throws(() => k.linear({ W: W18, x: k.buffer(128, 'x'), y: k.buffer(512, 'y'), T: 1, kv, shape: { rows: 1 } }, own), /head scores/);
    });
    await t.test(`top-k (exact set, ties to the lower index) ${name}`, async () => {
      // levels > 0: rounded to many ties (levels 1: -0 and +0 among them); < 0: one huge outlier
      // (crowds the value-linear buckets); 'const': all equal; 'narrow': scores in [100, 100.01)
      // (about 1300 distinct floats: ties and a crowded bucket).
      // wg 256 runs the fallback for devices without 1024-thread workgroups.
      type Case = [n: number, k: number, levels: number | 'const' | 'narrow', T: number, wg?: number];
      const cases: Case[] = [[1001, 37, 0, 2], [1001, 37, 9, 2], [257, 1, 0, 2], [77, 77, 3, 2], [3001, 555, 50, 2],
        [16384, 1638, 0, 1], [16384, 8192, 0, 1], [16381, 1638, 0, 3], [1537, 154, 0, 3], [1537, 769, 0, 3],
        [16384, 1638, 7, 1], [16381, 1638, -1, 3], [1537, 100, 'const', 2], [5000, 4999, 0, 1],
        [16384, 1638, 0, 3, 256], [1537, 769, 9, 3, 256], [16381, 1638, -1, 1, 256],
        [4099, 2000, 1, 2], [16384, 1638, 'narrow', 2], [3001, 300, 'narrow', 1, 256]];
      for (const [n, kk, levels, T, wg] of cases) {
        const s = randomArray(T * n, r);
        if (typeof levels === 'number' && levels > 0) for (let i = 0; i < s.length; i++) s[i] = Math.round(s[i] * levels) / levels; // many ties
        if (levels === -1) for (let t2 = 0; t2 < T; t2++) s[t2 * n + 5 + t2] = 1e30;
        if (levels === 'const') s.fill(0.25);
        if (levels === 'narrow') for (let i = 0; i < s.length; i++) s[i] = 100 + Math.abs(s[i]) * 1e-2;
        const out = k.buffer(T * kk * 4, 'sel');
        await runNow(k, [k.topK({ scores: k.f32Buffer(s, 's'), out, n, k: kk, T, inStride: n, outStride: kk, wg }, own)], own);
        const got = await readU32(k, out, T * kk);
        for (let t2 = 0; t2 < T; t2++) {
          const want = [...topK(s.subarray(t2 * n, (t2 + 1) * n), kk)].sort((a, b) => a - b);
          assert.deepEqual([...got.subarray(t2 * kk, (t2 + 1) * kk)].sort((a, b) => a - b), want, `n=${n} k=${kk} ties=${levels} T=${T} wg=${wg ?? 'auto'} token ${t2}`);
        }
      }
    });
    await t.test(`argmax feeds step and tokens (ties to the lower index, NaN never wins) ${name}`, async () => {
      // Each case: a logits row, then the kernel on step = [pos, stale id] must give
      // step = [pos + 1, id] and tokens[pos] = id, with id = the CPU argmax. wg 256 runs the fallback
      // size for devices without 1024-thread workgroups.
      const rows: [string, Float32Array][] = [];
      for (const n of [1, 3, 257, 1031, 50272]) {
        rows.push([`n=${n} random`, randomArray(n, r)]);
        const tied = randomArray(n, r).map((v) => Math.round(v * 3) / 3); // many ties, the max among them
        rows.push([`n=${n} ties`, tied]);
        const planted = randomArray(n, r);
        const hi = n - 1 - Math.floor(r() * Math.min(n, 7)), lo = Math.floor(r() * (hi + 1));
        planted[hi] = 2; planted[lo] = 2; // the max twice, far apart: the lower index wins
        rows.push([`n=${n} planted tie`, planted]);
      }
      const nan = randomArray(1031, r); nan[0] = NaN; nan[500] = NaN; nan[77] = 5; nan[900] = 5;
      rows.push(['NaN at 0 and inside', nan]);
      rows.push(['all NaN', new Float32Array(257).fill(NaN)]);
      rows.push(['-0 ties +0', Float32Array.from([-1, -0, 0, -3, 0])]);
      rows.push(['all -Infinity', new Float32Array(300).fill(-Infinity)]);
      const inf = randomArray(1031, r); inf[1030] = Infinity; inf[400] = Infinity; inf[3] = NaN;
      rows.push(['+Infinity ties', inf]);
      rows.push(['denormals', Float32Array.from([1e-45, 3e-45, -1e-45, 3e-45, 0])]);
      const slots = 9;
      for (const wg of [undefined, 256]) for (const [what, x] of rows) {
        const want = argmax(x);
        for (const pos of [4, slots]) { // pos = slots: past the tokens buffer, which stays untouched
          const step = k.f32Buffer(Uint32Array.from([pos, 12345]), 'step');
          const tokens = k.f32Buffer(new Uint32Array(slots).fill(7), 'tokens');
          await runNow(k, [k.argmax({ logits: k.f32Buffer(x, 'logits'), step, tokens, n: x.length, slots, wg }, own)], own);
          const msg = `${what} wg=${wg ?? 'auto'} pos=${pos}`;
          assert.deepEqual([...await readU32(k, step, 2)], [pos + 1, want], msg);
          const tok = [...await readU32(k, tokens, slots)];
          assert.deepEqual(tok, Array.from({ length: slots }, (_, i) => (i === pos ? want : 7)), msg);
        }
      }
      // The twin's rule itself: ties to the lowest index, NaN below everything.
      assert.equal(argmax(Float32Array.from([1, 3, 3])), 1);
      assert.equal(argmax(Float32Array.from([NaN, -Infinity, NaN])), 1);
      assert.equal(argmax(Float32Array.from([NaN, NaN])), 0);
    });
    await t.test(`argmax SAMPLE draws gumbelPick's token (the Gumbel-max twin), advancing step as argmax does ${name}`, async () => {
      // Random rows of odd lengths and OPT's vocabulary, several seeds, positions and temperatures;
      // the GPU keys in f32, the twin in f64, so a row whose two best keys lie within 1e-4 of each
      // other may go either way (none is expected in these draws; the count is asserted below).
      const slots = 64;
      let nearTies = 0, draws = 0;
      const rows: Float32Array[] = [3, 257, 1031, 50272].map((n) => randomArray(n, r).map((v) => 4 * v));
      const nan = randomArray(1031, r); nan[0] = NaN; nan[500] = NaN;
      rows.push(nan, new Float32Array(300).fill(-Infinity));
      for (const x of rows) for (const [invTemperature, seed, pos] of [[1, 0, 0], [1, 7, 5], [1.7, 123456789, 63], [0.4, 2 ** 32 - 1, 17]]) {
        const s = { invTemperature, seed };
        const keys = Array.from(x, (v, i) => v * invTemperature - Math.log(-Math.log(gumbelUniform(seed, pos, i)))).filter((k) => !Number.isNaN(k)).sort((a, b) => b - a);
        const near = keys.length > 1 && Number.isFinite(keys[0]) && keys[0] - keys[1] < 1e-4 * Math.max(1, Math.abs(keys[0]));
        const want = gumbelPick(x, s, pos);
        const samp = k.f32Buffer(Uint32Array.from([f32bits(invTemperature), seed >>> 0]), 'samp');
        const step = k.f32Buffer(Uint32Array.from([pos, 12345]), 'step');
        const tokens = k.f32Buffer(new Uint32Array(slots).fill(7), 'tokens');
        await runNow(k, [k.argmax({ logits: k.f32Buffer(x, 'logits'), step, tokens, n: x.length, slots, sample: samp }, own)], own);
        const [p1, id] = [...await readU32(k, step, 2)];
        assert.equal(p1, pos + 1);
        assert.equal((await readU32(k, tokens, slots))[pos], id);
        draws++;
        if (near) { nearTies++; continue; }
        assert.equal(id, want, `n=${x.length} ${JSON.stringify(s)} pos=${pos}`);
        assert.ok(!Number.isNaN(x[id]), 'NaN never drawn');
      }
      assert.ok(nearTies <= 1, `${nearTies} near ties in ${draws} draws`);
      // The top of the uniform's range: positions where some id's u lies within 2^-20 of 1 (its
      // −log(−log u) near 16, the largest there is). A peaked row: logit 30 at id 0 keeps id 0 (a u
      // rounded to 1.0 would make that id's key +Infinity), logit 12 loses to the extreme id.
      const V = 50272, seed = 7, extreme: number[] = [];
      for (let pos = 0; pos < 300 && extreme.length < 4; pos++) {
        for (let i = 0; i < V; i++) if (1 - gumbelUniform(seed, pos, i) < 2 ** -20) { extreme.push(pos); break; }
      }
      assert.ok(extreme.length >= 2, `${extreme.length} positions with an extreme draw`);
      for (const peak of [30, 12]) for (const pos of extreme) {
        const x = new Float32Array(V); x[0] = peak;
        const s = { invTemperature: 1, seed };
        const samp = k.f32Buffer(Uint32Array.from([f32bits(1), seed]), 'samp');
        const step = k.f32Buffer(Uint32Array.from([pos, 0]), 'step');
        await runNow(k, [k.argmax({ logits: k.f32Buffer(x, 'logits'), step, tokens: k.f32Buffer(new Uint32Array(slots), 'tokens'), n: V, slots, sample: samp }, own)], own);
        const want = gumbelPick(x, s, pos);
        if (peak === 30) assert.equal(want, 0);
        assert.equal((await readU32(k, step, 2))[1], want, `peak ${peak} pos ${pos}`);
      }
      assert.throws(() => k.argmax({ logits: k.buffer(64, 'l'), step: k.buffer(8, 's'), tokens: k.buffer(8, 't'), n: 4, slots: 2, pairs: true, sample: k.buffer(8, 'p') }, own), /pairs/);
      // SEL: top-k sampling, the draw among the ids topk.ts selects (the runner's 'sample' head with k).
      for (const [n, topK] of [[1031, 7], [50272, 40], [300, 299]]) for (const pos of [3, 40]) {
        const x = randomArray(n, r).map((v) => 3 * v);
        const s = { invTemperature: 0.8, seed: 77, topK };
        const samp = k.f32Buffer(Uint32Array.from([f32bits(0.8), 77]), 'samp');
        const step = k.f32Buffer(Uint32Array.from([pos, 0]), 'step'), logits = k.f32Buffer(x, 'logits'), sel = k.buffer(4 * topK, 'sel');
        await runNow(k, [k.topK({ scores: logits, out: sel, n, k: topK, T: 1, inStride: n, outStride: topK }, own),
          k.argmax({ logits, step, tokens: k.f32Buffer(new Uint32Array(slots), 'tokens'), n: topK, slots, sample: samp, sel }, own)], own);
        assert.equal((await readU32(k, step, 2))[1], gumbelPick(x, s, pos), `n=${n} k=${topK} pos=${pos}`);
        assert.deepEqual([...await readU32(k, sel, topK)].sort((a, b) => a - b), topIds(x, topK).sort((a, b) => a - b), `the set, n=${n} k=${topK}`);
      }
      assert.throws(() => k.argmax({ logits: k.buffer(64, 'l'), step: k.buffer(8, 's'), tokens: k.buffer(8, 't'), n: 4, slots: 2, sel: k.buffer(16, 'i') }, own), /form of sampling/);
    });
    await t.test(`lm_head GEMV's argmax epilogue + argmax over its pairs = argmax of the logits (ties, NaN, parts, folded LayerNorm) ${name}`, async () => {
      // The greedy head's two halves (gemv.ts AMAX, argmax.ts PAIRS) against the CPU rule over the
      // very logits the GEMV wrote: narrow and wide rows, 1–3 rows a thread, matrices split into
      // parts (maxPartBytes 4096), with and without the final LayerNorm folded in (γ-side form, as
      // for a tied embedding). Ties planted as copies of the best row (identical rows give identical
      // bits), one before it in another workgroup; every row the same (ties inside a thread's rows and
      // between workgroups); NaN rows at 0 and inside; an all-NaN matrix.
      const eps = 1e-5, slots = 5;
      const cases: [number, number, string][] = [[37, 23, 'random'], [131, 45, 'tie'], [29, 18, 'nan'], [201, 1037, 'tie'], [43, 1048, 'random'], [67, 2056, 'tie'], [300, 40, 'tie'], [12, 9, 'all nan'], [45, 1037, 'all equal'], [77, 30, 'all equal'], [41, 1037, 'nan'], [19, 2056, 'all nan']];
      for (const [rows, K, kind] of cases) for (const rpt of [1, 2, 3]) for (const fold of [false, true]) {
        const w = randomArray(rows * K, r, 0.5), x = randomArray(K, r).map((v) => v + (fold ? 3 : 0));
        const g = randomArray(K, r).map((v) => 1 + 0.5 * v), be = randomArray(K, r, 0.3);
        const NAN = 0x7e00;
        const bits = floatsToHalves(w);
        if (kind === 'all nan') bits.fill(NAN);
        if (kind === 'all equal') for (let i = 1; i < rows; i++) bits.copyWithin(i * K, 0, K);
        if (kind === 'nan') { bits.fill(NAN, 0, K); bits.fill(NAN, 7 * K, 8 * K); }
        if (kind === 'tie') {
          // The best row on the CPU (a copy gives the GPU the same bits), copied to an earlier row and a later one.
          const y0 = linear(fold ? layerNorm(x, 1, K, g, be, eps) : x, 1, halvesToFloats(bits), null, K, rows);
          let best = 0;
          for (let i = 1; i < rows; i++) if (y0[i] > y0[best]) best = i;
          for (const j of [Math.floor(best / 3), Math.min(rows - 1, best + 11)]) bits.copyWithin(j * K, best * K, (best + 1) * K);
        }
        const m = k.matrix(rows, K, 'W');
        k.upload(m, bits);
        const y = k.f32Buffer(new Float32Array(rows).fill(-7), 'y'), pairs = k.buffer(2 * k.amaxSlots(m, { rpt }) * 4, 'pairs');
        let ln: LinearArgs['ln'] = null;
        if (fold) {
          const c = k.buffer(2 * rows * 4, 'c'), gam = k.f32Buffer(g, 'gamma');
          await runNow(k, k.foldLayerNorm({ W: m, gamma: gam, beta: k.f32Buffer(be, 'beta'), bias: null, c }, own), own);
          ln = { gamma: gam, c, eps };
        }
        const step = k.f32Buffer(Uint32Array.from([2, 999]), 'step'), tokens = k.f32Buffer(new Uint32Array(slots).fill(7), 'tokens');
        const ds = k.linear({ W: m, x: k.f32Buffer(x, 'x'), y, T: 1, ln, amax: pairs, shape: { rpt } }, own);
        assert.ok(ds.every((dd) => dd.label.endsWith('_amax')), ds.map((dd) => dd.label).join());
        await runNow(k, [...ds, k.argmax({ logits: pairs, step, tokens, n: k.amaxSlots(m, { rpt }), slots, pairs: true }, own)], own);
        const logits = await readF32(k, y, rows), want = argmax(logits);
        const msg = `${rows}x${K} ${kind} rpt=${rpt} fold=${fold} parts=${m.parts.length}`;
        assert.deepEqual([...await readU32(k, step, 2)], [3, want], msg);
        assert.equal((await readU32(k, tokens, slots))[2], want, msg);
        if (kind === 'tie') assert.ok(logits.filter((v) => v === logits[want]).length >= 2, `${msg}: the planted tie`);
        if (kind === 'all nan' || kind === 'all equal') assert.equal(want, 0, msg);
      }
      assert.throws(() => k.linear({ W: k.matrix(3, 8, 'W'), x: k.buffer(64, 'x'), y: k.buffer(64, 'y'), T: 1, resid: true, amax: k.buffer(64, 'p') }, own), /argmax epilogue/);
    });
    await t.test(`transpose + sparse MLP vs sparseMlp and the dense MLP ${name}`, async () => {
      // d = 37 pads to 40 halves (wide fc2 form), d = 35 to 36 (narrow form).
      for (const d of [37, 35]) {
      const f = 101;
      const { m: W1, w: w1 } = randomMatrix(k, f, d, r);
      const { m: W2, w: w2 } = randomMatrix(k, d, f, r);
      const W2t = k.matrix(f, d, 'W2t');
      await runNow(k, k.transpose(W2, W2t, own), own);
      const w2t = transpose(w2, d, f);
      const b1 = randomArray(f, r, 0.5), b2 = randomArray(d, r);
      const all = Uint32Array.from({ length: f }, (_, i) => i);
      for (const sel of [all, Uint32Array.from([...all].sort(() => r() - 0.5).slice(0, 23)), Uint32Array.from([100, 0, 55])]) {
        const kk = sel.length, T = 2;
        const x = randomArray(T * d, r), x0 = randomArray(T * d, r);
        const gx = k.f32Buffer(x, 'x');
        let res = k.f32Buffer(x0, 'res');
        const gsel = k.f32Buffer(sel, 'sel'), h = k.buffer(T * kk * 4, 'h'), partial = k.buffer(T * 64 * 40 * 4 * W2t.parts.length, 'p');
        const ref = new Float32Array(T * d);
        for (let t2 = 0; t2 < T; t2++) {
          const y = sparseMlp(x.subarray(t2 * d, (t2 + 1) * d), w1, b1, w2t, b2, d, sel);
          for (let i = 0; i < d; i++) ref[t2 * d + i] = x0[t2 * d + i] + y[i];
        }
        // fc2: the partial + reduce pair, and (wide rows) the one-pass form in its default shape and
        // in small ones (a tail of rows past the unrolled loop, column blocks past d); fc1: the
        // default gather shape and a wider one.
        type Fc2 = { mode: 'direct' | 'partial'; fc2Shape?: { wg: number; ch: number; unroll: number }; shape?: { rows: number; tpr: number } };
        const forms: Fc2[] = [{ mode: 'partial' }];
        if (W2t.colsP % 8 === 0) forms.push({ mode: 'direct' }, { mode: 'direct', fc2Shape: { wg: 64, ch: 2, unroll: 3 } }, { mode: 'direct', fc2Shape: { wg: 32, ch: 4, unroll: 2 }, shape: { rows: 2, tpr: 128 } });
        for (const fm of forms) {
          res.destroy();
          res = k.f32Buffer(x0, 'res');
          const ds = [
            ...k.gatherLinear({ W: W1, x: gx, h, T, k: kk, sel: gsel, selStride: 0, bias: k.f32Buffer(b1, 'b1'), relu: true, shape: fm.shape }, own),
            ...k.sparseDown({ W2t, h, sel: gsel, selStride: 0, k: kk, T, slices: 5, partial, x: res, bias: k.f32Buffer(b2, 'b2'), mode: fm.mode, fc2Shape: fm.fc2Shape }, own),
          ];
          await runNow(k, ds, own);
          const got = await readF32(k, res, T * d);
          assert.ok(relErr(got, ref) < 1e-5, `d=${d} k=${kk} ${JSON.stringify(fm)} parts=${W2t.parts.length}: ${relErr(got, ref)}`);
          if (kk === f) { // every neuron selected: the dense MLP
            const dense = linear(linear(x, T, w1, b1, d, f).map((v) => Math.max(0, v)), T, w2, b2, f, d);
            for (let i = 0; i < dense.length; i++) dense[i] += x0[i];
            assert.ok(relErr(got, dense) < 1e-5, 'dense equivalence');
          }
        }
      }
      }
    });
    await t.test(`synthetic fill ${name}`, async () => {
      const m = k.matrix(41, 37, 'fill');
      await runNow(k, k.fillMatrix(m, 3, 0.02, own), own);
      let n = 0, s = 0, s2 = 0;
      for (const p of m.parts) {
        const raw = await readU32(k, p.buffer, (p.rows * m.colsP) / 2);
        const v = halvesToFloats(new Uint16Array(raw.buffer));
        for (let i = 0; i < v.length; i++) {
          if (i % m.colsP >= m.cols) { assert.equal(v[i], 0, 'padding stays zero'); continue; }
          n++; s += v[i]; s2 += v[i] * v[i];
        }
      }
      const std = Math.sqrt(s2 / n - (s / n) ** 2);
      assert.ok(Math.abs(s / n) < 0.003 && std > 0.017 && std < 0.023, `mean ${s / n} std ${std}`);
    });
  }
});

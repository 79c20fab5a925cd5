// What the probes that read large weight-sized buffers share (arena_probe, window_probe): hash noise
// written into the buffers, and the blocked read kernel they time.

const FILL_WGSL = `
@group(0) @binding(0) var<uniform> p: vec4<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  let i = g.x + g.y * n.x * 256u;
  if (i >= p.x) { return; }
  var h = (i + p.y) * 2654435761u; h ^= h >> 15u; h *= 2246822519u; h ^= h >> 13u;
  dst[i] = h;
}`;

/** Hash noise (not zeros, which some memory systems compress); the same seed gives the same words, so
 *  two layouts of the same matrices read the same data. Fills each { buffer, offset } range of `bytes` with the noise of seed i·7919, eight ranges a submission. */
export async function fillRanges(k, runNow, ranges, bytes) {
  const pl = k.pipeline('probe_fill', () => FILL_WGSL);
  const words = bytes / 4, wgs = Math.ceil(words / 256);
  for (let i = 0; i < ranges.length; i += 8) {
    const own = [];   // runNow destroys these (the fills' uniforms) once the batch is done
    const ds = ranges.slice(i, i + 8).map((m, j) =>
      k.dispatch('fill', pl, [words, (i + j) * 7919, 0, 0], [[1, { buffer: m.buffer, offset: m.offset ?? 0, size: bytes }]], [Math.min(wgs, 65535), Math.ceil(wgs / 65535), 1], own));
    await runNow(k, ds, own);
  }
}

/** Threads of the blocked read, and a round: their four 16-byte loads, 16 KiB a workgroup. */
const READ_WG = 256;
export const ROUND_BYTES = 16 * 1024;

/**
 * The blocked read: each workgroup reads `rounds` rounds, four loads in flight a thread, and writes
 * the wrapping sum of its words to out[p.x + workgroup]. `wg` order: workgroup w streams its own
 * contiguous rounds (a GEMV workgroup's rows); `trip`: round r of workgroup w is block r · nwg + w.
 */
export function blockedReadWgsl(rounds, order = 'wg') {
  const at = order === 'wg' ? `(wid.x * ${rounds}u + r) * 1024u` : '(r * nwg + wid.x) * 1024u';
  return `
@group(0) @binding(0) var<uniform> p: vec4<u32>;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
var<workgroup> acc: atomic<u32>;
@compute @workgroup_size(${READ_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let nwg = nw.x;
  var a = vec4<u32>(0u);
  for (var r = 0u; r < ${rounds}u; r++) {
    let b = ${at} + lid;
    let w0 = src[b]; let w1 = src[b + 256u]; let w2 = src[b + 512u]; let w3 = src[b + 768u];
    a += (w0 + w1) + (w2 + w3);
  }
  atomicAdd(&acc, (a.x + a.y) + (a.z + a.w));
  workgroupBarrier();
  if (lid == 0u) { out[p.x + wid.x] = atomicLoad(&acc); }
}`;
}

/**
 * The decode probes' runner (head_probe, gap_probe, split_probe): synthetic weights of a shape (`name:L<n>`: with n layers) and `fresh()`, which
 * resets it and queues the same 128-token prompt (without logits: the GPU may still be running it),
 * then sets the step's position to the prompt's end as decodeGreedy does.
 */
export async function promptedRunner(dist, gpu, shape) {
  const { createWebGpuRunner } = await import(`${dist}/src/backend/webgpu/runner.js`);
  const { shapeConfig } = await import(`${dist}/src/bench/shapes.js`);
  // `opt-6.7b:L28`: the shape with 28 layers (footprint probes).
  const [name, L] = shape.split(':L');
  const c = { ...shapeConfig(name), ...(L && { layers: Number(L) }) };
  const r = await createWebGpuRunner(c, 'synthetic', { gpu });
  const prompt = Array.from({ length: 128 }, (_, i) => (i * 7919) % c.vocabSize);
  // The prompt's forward leaves the device's step[0] at the prompt's first position; the greedy plan
  // reads its position there and advances it. Without the write below, a probe's own chain of
  // greedy steps ran over 1, 2, … cached keys instead of 129, 130, … (at opt-13b ~85 µs a step less
  // attention than decodeGreedy, which writes it as this does).
  return { r, c, fresh: async () => { r.reset(); await r.forward(prompt, { noLogits: true }); r.k.device.queue.writeBuffer(r.step, 0, Uint32Array.from([r.pos, 1])); } };
}

/** The median of a list of numbers (the upper one of an even count). */
export const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];

/** The `count` timestamps of query set `qs` (resolved, copied and mapped), as a BigUint64Array copy; destroys `qs`. */
export async function readTimestamps(dev, qs, count) {
  const resolve = dev.createBuffer({ size: 8 * count, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const read = dev.createBuffer({ size: 8 * count, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = dev.createCommandEncoder();
  enc.resolveQuerySet(qs, 0, count, resolve, 0);
  enc.copyBufferToBuffer(resolve, 0, read, 0, 8 * count);
  dev.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const t = new BigUint64Array(read.getMappedRange()).slice();
  read.unmap(); read.destroy(); resolve.destroy(); qs.destroy();
  return t;
}

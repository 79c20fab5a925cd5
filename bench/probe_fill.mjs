// Hash noise written into GPU buffers by a small kernel, for the probes that read large weight-sized
// buffers (arena_probe, window_probe): not zeros, which some memory systems compress. The same seed
// gives the same words, so two layouts of the same matrices read the same data.

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

/** Fills each { buffer, offset } range of `bytes` with the noise of seed i·7919, eight ranges a submission. */
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

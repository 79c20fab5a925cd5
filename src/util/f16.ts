// IEEE half and bfloat16 <-> float32 conversion. Checkpoints arrive in fp16/bf16; the CPU backend
// computes in f32 and the WebGPU backend uploads fp16 bits as they are.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** fp16 bits -> float32 value. */
export function halfToFloat(h: number): number {
  const s = (h & 0x8000) << 16;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) {
    if (m === 0) { u32[0] = s; return f32[0]; }
    // subnormal: m * 2^-24
    const v = m * 5.960464477539063e-8;
    return s ? -v : v;
  }
  if (e === 31) { u32[0] = s | 0x7f800000 | (m << 13); return f32[0]; }
  u32[0] = s | ((e + 112) << 23) | (m << 13);
  return f32[0];
}

/** float32 value -> fp16 bits, round to nearest even (overflow -> inf). */
export function floatToHalf(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const s = (x >>> 16) & 0x8000;
  const e = (x >>> 23) & 0xff;
  let m = x & 0x7fffff;
  if (e === 0xff) return s | 0x7c00 | (m ? 0x200 : 0);
  const he = e - 112;
  if (he >= 31) return s | 0x7c00;
  if (he <= 0) {
    if (he < -10) return s;
    m |= 0x800000;
    const shift = 14 - he;
    let hm = m >> shift;
    const rem = m & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rem > half || (rem === half && (hm & 1))) hm++;
    return s | hm;
  }
  let h = s | (he << 10) | (m >> 13);
  const rem = m & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return h;
}

// A 64k-entry table makes bulk fp16 -> f32 conversion a lookup.
let table: Float32Array | null = null;
function halfTable(): Float32Array {
  if (!table) {
    table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) table[i] = halfToFloat(i);
  }
  return table;
}

export function halvesToFloats(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  const t = halfTable();
  for (let i = 0; i < src.length; i++) dst[i] = t[src[i]];
  return dst;
}

export function floatsToHalves(src: Float32Array, dst = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) dst[i] = floatToHalf(src[i]);
  return dst;
}

export function bf16ToFloats(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  const bits = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return dst;
}

import { fail } from '../util/errors.js';
import type { FileSource } from './source.js';

export type StDtype = 'F16' | 'BF16' | 'F32';
const DTYPE_BYTES: Record<StDtype, number> = { F16: 2, BF16: 2, F32: 4 };

/** One tensor's entry in a safetensors header: where its bytes are, relative to the data section. */
export interface TensorEntry {
  name: string;
  file: string;
  dtype: StDtype;
  shape: number[];
  begin: number;   // absolute byte offset in the file
  bytes: number;
}

/** A raw tensor as read from disk: fp16/bf16 stay as their 16-bit patterns. */
export interface RawTensor {
  dtype: StDtype;
  shape: number[];
  data: Uint16Array | Float32Array;
}

/**
 * Parses and validates a safetensors header: 8-byte little-endian length, JSON, then data. Every
 * declared range must lie inside the file and match its dtype and shape, so a truncated or corrupt
 * file is refused before any tensor is read.
 */
export async function readSafetensorsHeader(src: FileSource, file: string): Promise<TensorEntry[]> {
  const fileSize = await src.size(file);
  if (fileSize < 8) fail(`${file}: not a safetensors file (${fileSize} bytes, too short for a header)`);
  const lenBytes = await src.read(file, 0, 8);
  const headerLen = Number(new DataView(lenBytes.buffer).getBigUint64(0, true));
  if (headerLen > fileSize - 8 || headerLen > 100_000_000) {
    fail(`${file}: safetensors header declares ${headerLen} bytes but the file has only ${fileSize - 8} after the length`);
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(await src.read(file, 8, headerLen)));
  } catch {
    fail(`${file}: safetensors header is not valid JSON`);
  }
  const dataStart = 8 + headerLen;
  const dataLen = fileSize - dataStart;
  const out: TensorEntry[] = [];
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const e = v as { dtype?: string; shape?: number[]; data_offsets?: number[] };
    if (!e.dtype || !(e.dtype in DTYPE_BYTES)) fail(`${file}: tensor ${name} has unknown dtype ${JSON.stringify(e.dtype)} (supported: F16, BF16, F32)`);
    const dtype = e.dtype as StDtype;
    if (!Array.isArray(e.shape) || !Array.isArray(e.data_offsets) || e.data_offsets.length !== 2) fail(`${file}: tensor ${name} has a malformed header entry`);
    const [s, t] = e.data_offsets;
    if (!(s >= 0 && t >= s)) fail(`${file}: tensor ${name} has invalid data offsets [${s}, ${t}]`);
    if (t > dataLen) fail(`${file}: tensor ${name} data [${s}, ${t}) runs past the end of the file (${dataLen} data bytes)`);
    const count = e.shape.reduce((a, b) => a * b, 1);
    if (count * DTYPE_BYTES[dtype] !== t - s) {
      fail(`${file}: tensor ${name} has ${t - s} bytes but shape [${e.shape.join(', ')}] of ${dtype} needs ${count * DTYPE_BYTES[dtype]}`);
    }
    out.push({ name, file, dtype, shape: e.shape, begin: dataStart + s, bytes: t - s });
  }
  return out;
}

/** Reads one tensor's bytes. Copies into an aligned typed array (file offsets need not be aligned). */
export async function readTensor(src: FileSource, e: TensorEntry): Promise<RawTensor> {
  const bytes = await src.read(e.file, e.begin, e.bytes);
  // src.read returns a fresh, offset-0 buffer, so the typed view is aligned.
  const data = e.dtype === 'F32'
    ? new Float32Array(bytes.buffer, bytes.byteOffset, e.bytes / 4)
    : new Uint16Array(bytes.buffer, bytes.byteOffset, e.bytes / 2);
  return { dtype: e.dtype, shape: e.shape, data };
}

/** Serialises float32 tensors into a safetensors file image (used to save predictors). */
export function encodeSafetensors(tensors: Record<string, { shape: number[]; data: Float32Array }>, metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let off = 0;
  const names = Object.keys(tensors);
  for (const n of names) {
    const b = tensors[n].data.byteLength;
    header[n] = { dtype: 'F32', shape: tensors[n].shape, data_offsets: [off, off + b] };
    off += b;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8 !== 0) json += ' ';
  const hb = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + hb.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  let p = 8 + hb.length;
  for (const n of names) {
    const d = tensors[n].data;
    out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), p);
    p += d.byteLength;
  }
  return out;
}

/**
 * PyTorch checkpoints: pytorch_model.bin as torch.save writes it (since torch 1.6) and as Hugging Face
 * folders hold it (facebook/opt-*, and transformers 4.x's save_pretrained without safetensors). The
 * file is a zip archive (entries stored, not compressed) of `<name>/data.pkl`, a pickle of the state
 * dict whose tensors point into storages, and `<name>/data/<key>`, each storage's raw bytes. This file
 * lists the tensors with where their bytes lie in the .bin, as TensorEntry (the safetensors reader's
 * form), so the weights load through the same path: nothing of the pickle runs (pickle.ts), and a
 * tensor's bytes are read only when it is loaded.
 *
 * Read: float32, float16 and bfloat16 tensors, contiguous (row-major), at any storage offset, storages
 * shared between names (a tied lm_head); integer buffers are skipped (never weights). Refused with one
 * line: the legacy pre-1.6 format, compressed entries, big-endian files, other float types, views
 * with other strides, and any other Python object in the pickle.
 */
import { DejavuError, fail } from '../util/errors.js';
import { unpickle, type PyObject, type PyValue } from './pickle.js';
import type { StDtype, TensorEntry } from './safetensors.js';
import type { FileSource } from './source.js';

/** torch.<X>Storage → the element type (null: an integer or bool storage, skipped). */
const STORAGES: Record<string, { dtype: StDtype | null; bytes: number; torch: string }> = {
  FloatStorage: { dtype: 'F32', bytes: 4, torch: 'float32' },
  HalfStorage: { dtype: 'F16', bytes: 2, torch: 'float16' },
  BFloat16Storage: { dtype: 'BF16', bytes: 2, torch: 'bfloat16' },
  DoubleStorage: { dtype: null, bytes: 8, torch: 'float64' },
  LongStorage: { dtype: null, bytes: 8, torch: 'int64' },
  IntStorage: { dtype: null, bytes: 4, torch: 'int32' },
  ShortStorage: { dtype: null, bytes: 2, torch: 'int16' },
  CharStorage: { dtype: null, bytes: 1, torch: 'int8' },
  ByteStorage: { dtype: null, bytes: 1, torch: 'uint8' },
  BoolStorage: { dtype: null, bytes: 1, torch: 'bool' },
};

interface Storage extends PyObject { pyType: 'storage'; kind: string; key: string; numel: number }
interface TorchTensor extends PyObject { pyType: 'tensor'; storage: Storage; offset: number; size: number[]; stride: number[] }

/** The names a checkpoint's pickle may import: what torch.save writes for a state dict of tensors. */
const ALLOWED = new Set(['collections.OrderedDict', 'torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_parameter_with_state', 'torch._tensor._rebuild_from_type_v2', 'torch.Tensor', 'torch.nn.parameter.Parameter',
  ...Object.keys(STORAGES).map((s) => `torch.${s}`)]);

const isInt = (v: PyValue): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;
const ints = (v: PyValue): number[] | null => (Array.isArray(v) && v.every(isInt) ? (v as number[]) : null);

/** Whether a file starts as a zip archive does (a local file header). */
const isZip = (b: Uint8Array) => b[0] === 0x50 && b[1] === 0x4b && b[2] === 0x03 && b[3] === 0x04;

/** The state dict's tensors in `file` (a torch.save zip archive), located in the file; see the top of this file. */
export async function readTorchCheckpoint(src: FileSource, file: string): Promise<TensorEntry[]> {
  const size = await src.size(file);
  if (size < 30) fail(`${file}: not a PyTorch checkpoint (${size} bytes)`);
  const head = await src.read(file, 0, 4);
  if (head[0] === 0x80) fail(`${file}: a PyTorch checkpoint in the legacy format (torch.save before 1.6); load and save it again with a current torch, or convert it to safetensors`);
  if (!isZip(head)) fail(`${file}: not a PyTorch checkpoint (not a zip archive, as torch.save writes)`);

  const entries = await zipEntries(src, file, size);
  const pkl = [...entries.keys()].filter((n) => n.endsWith('data.pkl')).sort((a, b) => a.length - b.length)[0];
  if (pkl === undefined) fail(`${file}: a zip archive without data.pkl: not a torch.save checkpoint`);
  const prefix = pkl.slice(0, -'data.pkl'.length);
  const order = entries.get(`${prefix}byteorder`);
  if (order) {
    const bo = new TextDecoder().decode(await readEntry(src, file, size, order));
    if (bo !== 'little') fail(`${file}: stored ${bo}-endian; only little-endian checkpoints are read`);
  }

  const storages = new Map<string, Storage>();
  const value = unpickle(await readEntry(src, file, size, entries.get(pkl)!), {
    global: (module, name) => (ALLOWED.has(`${module}.${name}`) ? { pyType: 'global', name: `${module}.${name}` } : undefined),
    persistentLoad: (pid) => {
      // ('storage', torch.<X>Storage, key, location, numel)
      if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) fail(`${file}: an unknown persistent reference in data.pkl`);
      const [, type, key, , numel] = pid as PyValue[];
      const kind = typeof type === 'object' && type !== null && (type as PyObject).pyType === 'global' ? String((type as PyObject).name).replace(/^torch\./, '') : '';
      if (!(kind in STORAGES) || typeof key !== 'string' || !isInt(numel)) fail(`${file}: a malformed storage reference in data.pkl`);
      let s = storages.get(key as string);
      if (!s) { s = { pyType: 'storage', kind, key: key as string, numel: numel as number }; storages.set(s.key, s); }
      return s;
    },
    call: (fn, args) => callAllowed(file, fn, args),
  }, `${file}: data.pkl`);

  if (!(value instanceof Map)) fail(`${file}: data.pkl holds a ${Array.isArray(value) ? 'tuple' : typeof value}, not a state dict of tensors`);
  const out: TensorEntry[] = [];
  const dataStart = new Map<string, { begin: number; bytes: number }>();
  for (const [name, t] of value) {
    if (typeof name !== 'string') fail(`${file}: a state dict key that is not a string`);
    if (!t || typeof t !== 'object' || (t as PyObject).pyType !== 'tensor') fail(`${file}: ${name} is not a tensor (only state dicts of tensors are read)`);
    const { storage: s, offset, size: shape, stride } = t as TorchTensor;
    const st = STORAGES[s.kind];
    if (!st.dtype) {
      if (st.torch === 'float64') fail(`${file}: tensor ${name} is float64 (supported: float32, float16, bfloat16)`);
      continue;   // an integer or bool buffer: never a weight
    }
    const numel = shape.reduce((a, b) => a * b, 1);
    // Row-major strides (dimensions of size 1 may carry any stride).
    let want = 1;
    for (let i = shape.length - 1; i >= 0; i--) {
      if (shape[i] !== 1 && stride[i] !== want) fail(`${file}: tensor ${name} is a non-contiguous view (strides [${stride.join(', ')}] for shape [${shape.join(', ')}]); save .contiguous() tensors`);
      want *= shape[i];
    }
    if (offset + numel > s.numel) fail(`${file}: tensor ${name} runs past its storage (${offset} + ${numel} of ${s.numel} elements)`);
    let loc = dataStart.get(s.key);
    if (!loc) {
      const e = entries.get(`${prefix}data/${s.key}`);
      if (!e) fail(`${file}: storage ${s.key} of tensor ${name} is missing from the archive`);
      loc = await entryData(src, file, size, e);
      if (loc.bytes < s.numel * st.bytes) fail(`${file}: storage ${s.key} has ${loc.bytes} bytes, ${s.numel} ${st.torch} elements need ${s.numel * st.bytes}`);
      dataStart.set(s.key, loc);
    }
    out.push({ name, file, dtype: st.dtype, shape, begin: loc.begin + offset * st.bytes, bytes: numel * st.bytes });
  }
  return out;
}

/** REDUCE of an allowed global: the state dict's dicts and tensors (`depth`: _rebuild_from_type_v2's nesting, 1 in torch's files). */
function callAllowed(file: string, fn: PyValue, args: PyValue[], depth = 0): PyValue | undefined {
  if (!fn || typeof fn !== 'object' || (fn as PyObject).pyType !== 'global') return undefined;
  const name = (fn as PyObject).name as string;
  const bad = (): never => fail(`${file}: data.pkl calls ${name} with arguments of an unexpected form`);
  switch (name) {
    case 'collections.OrderedDict': {
      const m = new Map<PyValue, PyValue>(), items = args[0] ?? null;
      if (items instanceof Map) return new Map(items);
      if (items !== null && !Array.isArray(items)) return bad();
      for (const kv of (items as PyValue[] | null) ?? []) { if (!Array.isArray(kv) || kv.length !== 2) return bad(); m.set(kv[0], kv[1]); }
      return m;
    }
    case 'torch._utils._rebuild_tensor_v2': {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      const [storage, offset, size, stride] = args;
      const sz = ints(size ?? null), st = ints(stride ?? null);
      if (!storage || typeof storage !== 'object' || (storage as PyObject).pyType !== 'storage' || !isInt(offset ?? null) || !sz || !st || sz.length !== st.length) return bad();
      const t: TorchTensor = { pyType: 'tensor', storage: storage as Storage, offset: offset as number, size: sz, stride: st };
      return t;
    }
    case 'torch._utils._rebuild_parameter':
    case 'torch._utils._rebuild_parameter_with_state':
      return args[0] ?? bad();   // (data, requires_grad, backward_hooks[, state]): the tensor
    case 'torch._tensor._rebuild_from_type_v2': {
      // (func, type, args, state): func(*args), a Tensor or Parameter rebuilt by an allowed func.
      const [f, , a] = args;
      return Array.isArray(a) && depth < 4 ? callAllowed(file, f ?? null, a, depth + 1) ?? bad() : bad();
    }
    default: return undefined;
  }
}

interface ZipEntry { name: string; offset: number; method: number; size: number }

/** The archive's entries by name (the central directory, through zip.js: zip64 and comments handled). */
async function zipEntries(src: FileSource, file: string, size: number): Promise<Map<string, ZipEntry>> {
  const zip = await import('@zip.js/zip.js');
  zip.configure({ useWebWorkers: false });
  class SourceReader extends zip.Reader<void> {
    constructor() { super(undefined); this.size = size; }
    // A corrupt directory record can ask for any range: refuse one past the file before reading.
    override async readUint8Array(index: number, length: number): Promise<Uint8Array> {
      if (!(index >= 0 && length >= 0 && index + length <= size)) fail(`${file}: a corrupt zip archive (a record points past the end of the file)`);
      return src.read(file, index, length);
    }
  }
  const reader = new zip.ZipReader(new SourceReader());
  let list: Awaited<ReturnType<typeof reader.getEntries>>;
  try { list = await reader.getEntries(); } catch (e) {
    if (e instanceof DejavuError) throw e;
    fail(`${file}: a corrupt zip archive (${(e as Error).message.split('\n')[0]})`);
  }
  const out = new Map<string, ZipEntry>();
  for (const e of list) out.set(e.filename, { name: e.filename, offset: e.offset, method: e.compressionMethod, size: e.uncompressedSize });
  return out;
}

/** Where an entry's bytes start: after its local header (whose extra field torch uses to align the data to 64 bytes). */
async function entryData(src: FileSource, file: string, size: number, e: ZipEntry): Promise<{ begin: number; bytes: number }> {
  if (e.method !== 0) fail(`${file}: entry ${e.name} is compressed (torch.save stores entries uncompressed; re-save the checkpoint)`);
  const h = await src.read(file, e.offset, 30);
  const dv = new DataView(h.buffer, h.byteOffset, 30);
  if (dv.getUint32(0, true) !== 0x04034b50) fail(`${file}: a corrupt zip archive (no local header for ${e.name})`);
  const begin = e.offset + 30 + dv.getUint16(26, true) + dv.getUint16(28, true);
  if (begin + e.size > size) fail(`${file}: entry ${e.name} runs past the end of the file (truncated?)`);
  return { begin, bytes: e.size };
}

async function readEntry(src: FileSource, file: string, size: number, e: ZipEntry): Promise<Uint8Array> {
  if (e.size > 1 << 30) fail(`${file}: entry ${e.name} is ${e.size} bytes, too large for a pickle`);
  const { begin, bytes } = await entryData(src, file, size, e);
  return src.read(file, begin, bytes);
}

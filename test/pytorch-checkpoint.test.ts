import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeFileSource } from '../src/model/node-source.js';
import { parseOptConfig } from '../src/model/config.js';
import { loadWeights, type OptWeights } from '../src/model/weights.js';
import { unpickle, type PyObject, type PyValue } from '../src/model/pickle.js';
import { loadModel } from '../src/engine/model.js';
import { DejavuError } from '../src/util/errors.js';
import { ROOT } from './helpers.js';

// Fixtures made by real torch 2.11 / transformers 5.17 (test/fixtures/torch/make.py says how): one
// tiny random OPT saved as safetensors and as pytorch_model.bin in the forms Hugging Face folders have.
const FX = join(ROOT, 'test', 'fixtures', 'torch');

async function weights(name: string, dir = join(FX, name)): Promise<OptWeights> {
  const src = new NodeFileSource(dir);
  try {
    return await loadWeights(src, parseOptConfig(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))));
  } finally { await src.close(); }
}

async function loadError(name: string, dir = join(FX, name)): Promise<string> {
  try { await weights(name, dir); } catch (e) {
    assert.ok(e instanceof DejavuError, `expected a DejavuError, got ${(e as Error).stack}`);
    assert.ok(!e.message.includes('\n'), 'one line');
    return e.message;
  }
  assert.fail(`${name} should not load`);
}

/** Every tensor of a model, named, in a fixed order. */
function tensors(w: OptWeights): [string, { dtype: string; shape: number[]; data: Float32Array | Uint16Array }][] {
  const out: [string, { dtype: string; shape: number[]; data: Float32Array | Uint16Array }][] = [];
  const add = (n: string, t: OptWeights['embedTokens'] | null) => { if (t) out.push([n, t]); };
  add('embedTokens', w.embedTokens); add('embedPositions', w.embedPositions); add('finalLnW', w.finalLnW); add('finalLnB', w.finalLnB); add('lmHead', w.lmHead);
  w.layers.forEach((l, i) => Object.entries(l).forEach(([k, t]) => add(`${i}.${k}`, t)));
  return out;
}

function assertSame(a: OptWeights, b: OptWeights, map: (x: Float32Array | Uint16Array) => Float32Array | Uint16Array = (x) => x): void {
  const ta = tensors(a), tb = tensors(b);
  assert.equal(ta.length, tb.length);
  assert.ok(ta.length > 20);
  for (let i = 0; i < ta.length; i++) {
    const [n, x] = ta[i], [, y] = tb[i];
    assert.deepEqual(y.shape, x.shape, n);
    assert.deepEqual(Array.from(y.data), Array.from(map(x.data)), n);
  }
}

/** f32 → bf16 bit patterns, round to nearest even (torch's .to(torch.bfloat16)). */
function toBf16(x: Float32Array | Uint16Array): Uint16Array {
  const u = new Uint32Array(Float32Array.from(x).buffer);
  return Uint16Array.from(u, (b) => (b + 0x7fff + ((b >>> 16) & 1)) >>> 16);
}

test('pytorch_model.bin (fp32, save_pretrained form) loads the same tensors as the safetensors of the same model', async () => {
  const st = await weights('st'), bin = await weights('bin');
  assertSame(st, bin);
  assert.equal(bin.lmHead, bin.embedTokens, 'tied lm_head');
});

test('sharded fp16 pytorch_model-*.bin with its index, and bf16', async () => {
  assertSame(await weights('st-f16'), await weights('bin-f16-sharded'));
  const bf = await weights('bin-bf16');
  assert.equal(bf.embedTokens.dtype, 'bf16');
  assertSame(await weights('st'), bf, toBf16);
});

test('a torch.save state dict with facebook/opt-style keys, a tied lm_head sharing its storage, a storage offset', async () => {
  assertSame(await weights('st'), await weights('raw'));
});

test('refused with one line: a non-contiguous view, the legacy format, a truncated or non-zip file', async () => {
  assert.match(await loadError('noncontig'), /tensor decoder\.layers\.0\.fc1\.weight is a non-contiguous view \(strides \[1, 32\] for shape \[32, 16\]\)/);
  assert.match(await loadError('legacy'), /legacy format \(torch\.save before 1\.6\)/);
  const dir = mkdtempSync(join(tmpdir(), 'dejavu-bin-'));
  try {
    copyFileSync(join(FX, 'bin', 'config.json'), join(dir, 'config.json'));
    const bytes = readFileSync(join(FX, 'bin', 'pytorch_model.bin'));
    writeFileSync(join(dir, 'pytorch_model.bin'), bytes.subarray(0, bytes.length - 100));
    assert.match(await loadError('truncated', dir), /pytorch_model\.bin: a corrupt zip archive/);
    writeFileSync(join(dir, 'pytorch_model.bin'), bytes.subarray(0, 20000));
    assert.match(await loadError('truncated', dir), /pytorch_model\.bin: a corrupt zip archive/);
    writeFileSync(join(dir, 'pytorch_model.bin'), 'not a checkpoint at all, just text');
    assert.match(await loadError('text', dir), /pytorch_model\.bin: not a PyTorch checkpoint \(not a zip archive/);
    // A shard the index names but the folder lacks.
    rmSync(join(dir, 'pytorch_model.bin'));
    cpSync(join(FX, 'bin-f16-sharded'), dir, { recursive: true });
    rmSync(join(dir, readdirSync(dir).find((f) => f.endsWith('00002-of-00003.bin'))!));
    assert.match(await loadError('shards', dir), /missing file pytorch_model-00002-of-00003\.bin in .* \(listed in pytorch_model\.bin\.index\.json\)/);
    writeFileSync(join(dir, 'pytorch_model.bin.index.json'), 'null');
    assert.match(await loadError('null index', dir), /pytorch_model\.bin\.index\.json in .* has no weight_map/);
    writeFileSync(join(dir, 'pytorch_model.bin.index.json'), JSON.stringify({ weight_map: { 'lm_head.weight': '../elsewhere.bin' } }));
    assert.match(await loadError('a path in the index', dir), /pytorch_model\.bin\.index\.json in .* names "\.\.\/elsewhere\.bin", not a file of the folder/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

/** A folder holding config.json and a pytorch_model.bin zip (stored entries, as torch writes) of these entries. */
async function torchZipDir(entries: Record<string, Uint8Array>): Promise<string> {
  const zip = await import('@zip.js/zip.js');
  zip.configure({ useWebWorkers: false });
  const w = new zip.ZipWriter(new zip.Uint8ArrayWriter(), { level: 0 });
  for (const [name, data] of Object.entries(entries)) await w.add(name, new zip.Uint8ArrayReader(data));
  const dir = mkdtempSync(join(tmpdir(), 'dejavu-bin-'));
  copyFileSync(join(FX, 'bin', 'config.json'), join(dir, 'config.json'));
  writeFileSync(join(dir, 'pytorch_model.bin'), await w.close());
  return dir;
}

const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0));
const GLOBAL = (m: string, n: string) => [0x63, ...ascii(`${m}\n${n}\n`)];

test('crafted checkpoints end in one line, quickly: a cycle, odd arguments, huge integers, a directory past the file', async () => {
  const cases: [string, number[], RegExp][] = [
    // L = [G, None, L]; G(*L): _rebuild_from_type_v2 calling itself through the memo.
    ['a cycle', [0x80, 2, ...GLOBAL('torch._tensor', '_rebuild_from_type_v2'), 0x71, 0, 0x5d, 0x71, 1, 0x28, 0x68, 0, 0x4e, 0x68, 1, 0x65, 0x52, 0x2e],
      /data\.pkl calls torch\._tensor\._rebuild_from_type_v2 with arguments of an unexpected form/],
    ['OrderedDict(5)', [0x80, 2, ...GLOBAL('collections', 'OrderedDict'), 0x4b, 5, 0x85, 0x52, 0x2e], /data\.pkl calls collections\.OrderedDict with arguments of an unexpected form/],
    ['a 300,000-byte integer', [0x80, 2, 0x8b, 0xe0, 0x93, 0x04, 0x00, ...new Array(300000).fill(1), 0x2e], /data\.pkl: an integer of 300000 bytes at byte 2 \(at most 256 are read\)/],
    ['os.system', [0x80, 2, ...GLOBAL('os', 'system'), 0x58, 2, 0, 0, 0, ...ascii('hi'), 0x85, 0x52, 0x2e], /refusing the Python object os\.system/],
    ['a list of 300,000 Nones', [0x80, 2, 0x5d, 0x28, ...new Array(300000).fill(0x4e), 0x65, 0x2e], /data\.pkl holds a tuple, not a state dict of tensors/],
    ['a 200,000-byte string', [0x80, 2, 0x54, 0x40, 0x0d, 0x03, 0x00, ...new Array(200000).fill(0x61), 0x2e], /data\.pkl holds a string, not a state dict of tensors/],
  ];
  for (const [what, bytes, re] of cases) {
    const dir = await torchZipDir({ 'archive/data.pkl': Uint8Array.from(bytes) });
    try {
      const t0 = performance.now();
      assert.match(await loadError(what, dir), re, what);
      assert.ok(performance.now() - t0 < 5000, `${what}: ${performance.now() - t0} ms`);
    } finally { rmSync(dir, { recursive: true, force: true }); }
  }
  // The end-of-directory record's directory size set to 2 GiB: a read past the file, refused before allocating.
  const dir = mkdtempSync(join(tmpdir(), 'dejavu-bin-'));
  try {
    copyFileSync(join(FX, 'bin', 'config.json'), join(dir, 'config.json'));
    const b = readFileSync(join(FX, 'bin', 'pytorch_model.bin'));
    const eocd = b.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
    assert.ok(eocd > 0);
    b.writeUInt32LE(0x80000000, eocd + 12);
    writeFileSync(join(dir, 'pytorch_model.bin'), b);
    assert.match(await loadError('directory size', dir), /pytorch_model\.bin: a corrupt zip archive/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('safetensors wins where a folder has both', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dejavu-bin-'));
  try {
    cpSync(join(FX, 'st'), dir, { recursive: true });
    writeFileSync(join(dir, 'pytorch_model.bin'), 'garbage');   // never opened
    assertSame(await weights('st'), await weights('both', dir));
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('loadModel on a pytorch_model.bin folder gives the logits of its safetensors twin', async () => {
  // A byte-level tokenizer of the fixtures' 50 tokens: 4 specials, then 46 characters.
  const chars = 'abcdefghijklmnopqrstuvwxyzĠ.,;:!?\'"-()0123456';
  const vocab: Record<string, number> = { '<s>': 0, '<pad>': 1, '</s>': 2, '<unk>': 3 };
  [...chars].forEach((c, i) => { vocab[c] = 4 + i; });
  const tok = JSON.parse(readFileSync(join(ROOT, 'models', 'opt-gutenberg-5m', 'tokenizer.json'), 'utf8'));
  tok.model.vocab = vocab; tok.model.merges = [];
  const logits: Float32Array[] = [];
  for (const name of ['st', 'bin']) {
    const dir = mkdtempSync(join(tmpdir(), 'dejavu-bin-'));
    try {
      cpSync(join(FX, name), dir, { recursive: true });
      writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tok));
      const m = await loadModel(dir, { backend: 'cpu' });
      try {
        const ids = m.tokenizer.encode('a cab, a dab');
        assert.ok(ids.length > 5 && ids[0] === 2);
        m.runner.reset();
        logits.push(Float32Array.from(await m.runner.forward(ids)));
      } finally { m.dispose(); }
    } finally { rmSync(dir, { recursive: true, force: true }); }
  }
  assert.deepEqual(Array.from(logits[1]), Array.from(logits[0]));
  // dejavu info names the files it read.
  const dir = mkdtempSync(join(tmpdir(), 'dejavu-bin-'));
  try {
    cpSync(join(FX, 'bin-f16-sharded'), dir, { recursive: true });
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tok));
    const info = JSON.parse(execFileSync('node', [join(ROOT, 'dist', 'src', 'cli.js'), 'info', '--backend', 'cpu', '--json', '--model', dir], { encoding: 'utf8' }));
    assert.deepEqual(info.files, ['pytorch_model-00001-of-00003.bin', 'pytorch_model-00002-of-00003.bin', 'pytorch_model-00003-of-00003.bin', 'tokenizer.json']);
    assert.equal(info.folder, dir);
  } finally { rmSync(dir, { recursive: true, force: true }); }
  assert.equal(logits[0].length, 50);
  assert.ok(logits[0].some((x) => x !== 0));
});

// ---- the restricted unpickler ----

const hex = (s: string) => Uint8Array.from(s.match(/../g)!.map((b) => parseInt(b, 16)));
const onlyOrderedDict = {
  global: (m: string, n: string): PyObject | undefined => (`${m}.${n}` === 'collections.OrderedDict' ? { pyType: 'global', name: 'od' } : undefined),
  call: (fn: PyValue, args: PyValue[]) => ((fn as PyObject)?.name === 'od' && args.length === 0 ? new Map() : undefined),
  persistentLoad: (): PyValue => { throw new Error('no persistent ids here'); },
};
// pickle.dumps({'a': 1, 'b': -5, 'c': 300, 'd': 70000, 'big': 2**70, 'neg': -2**40, 'f': 1.5, 's': 'héllo',
//   't': (1, 2, 3), 'l': [True, False, None], 'od': OrderedDict([('x', 1)]), 'e': (), 't1': (7,)}, protocol=2), Python 3.
const P2 = '80027d71002858010000006171014b0158010000006271024afbffffff58010000006371034d2c0158010000006471044a70110100580300000062696771058a0900000000000000004058030000006e656771068a060000000000ff5801000000667107473ff80000000000005801000000737108580600000068c3a96c6c6f7109580100000074710a4b014b024b0387710b58010000006c710c5d710d2888894e6558020000006f64710e63636f6c6c656374696f6e730a4f726465726564446963740a710f2952711058010000007871114b01735801000000657112295802000000743171134b07857114752e';
// The same with 'by': b'\x00\x01', protocol 4 (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, SHORT_BINBYTES).
const P4 = '800495b9000000000000007d94288c0161944b018c0162944afbffffff8c0163944d2c018c0164944a701101008c03626967948a090000000000000000408c036e6567948a060000000000ff8c016694473ff80000000000008c0173948c0668c3a96c6c6f948c0174944b014b024b0387948c016c945d942888894e658c0262799443020001948c026f64948c0b636f6c6c656374696f6e73948c0b4f726465726564446963749493942952948c0178944b01738c016594298c027431944b078594752e';

test('unpickle: the value types of protocols 2 and 4', () => {
  for (const [p, bytes] of [[2, P2], [4, P4]] as const) {
    const v = unpickle(hex(bytes), onlyOrderedDict, `protocol ${p}`) as Map<PyValue, PyValue>;
    assert.ok(v instanceof Map);
    assert.equal(v.get('a'), 1); assert.equal(v.get('b'), -5); assert.equal(v.get('c'), 300); assert.equal(v.get('d'), 70000);
    assert.equal(v.get('big'), 2n ** 70n); assert.equal(v.get('neg'), -(2 ** 40)); assert.equal(v.get('f'), 1.5); assert.equal(v.get('s'), 'héllo');
    assert.deepEqual(v.get('t'), [1, 2, 3]); assert.deepEqual(v.get('l'), [true, false, null]); assert.deepEqual(v.get('e'), []); assert.deepEqual(v.get('t1'), [7]);
    assert.deepEqual([...(v.get('od') as Map<PyValue, PyValue>)], [['x', 1]]);
    if (p === 4) assert.deepEqual(Array.from(v.get('by') as Uint8Array), [0, 1]);
  }
});

test('unpickle refuses what it does not allow, with one line, and never runs it', () => {
  // pickle.dumps of an object whose __reduce__ is (os.system, ('echo hi',)).
  const evil = '800263706f7369780a73797374656d0a710058070000006563686f20686971018571025271032e';
  assert.throws(() => unpickle(hex(evil), onlyOrderedDict, 'x.bin: data.pkl'), (e: Error) => e instanceof DejavuError && /x\.bin: data\.pkl: refusing the Python object posix\.system \(only tensors, storages and dicts are read; no code runs\)/.test(e.message));
  assert.throws(() => unpickle(hex(P2).subarray(0, 40), onlyOrderedDict, 'cut'), /cut: truncated pickle/);
  assert.throws(() => unpickle(hex('8002ff'), onlyOrderedDict, 'op'), /op: unsupported pickle opcode 0xff at byte 2/);
});

// Lists DIR/big.bin (bench/zip64_check.py) with readTorchCheckpoint, prints the entries, offsets and the time,
// and reads the tensors a (arange 10, f32) and c (arange 7, f16) placed before and after the 4.4 GB one.
import { NodeFileSource } from '../dist/src/model/node-source.js';
import { readTorchCheckpoint } from '../dist/src/model/pytorch.js';
import { readTensor } from '../dist/src/model/safetensors.js';
const src = await NodeFileSource.open(process.argv[2]);
const t0 = performance.now();
const es = await readTorchCheckpoint(src, 'big.bin');
console.log('entries', es.map((e) => [e.name, e.dtype, e.shape.join('x'), e.begin, e.bytes]), 'ms', (performance.now() - t0).toFixed(1));
const c = await readTensor(src, es.find((e) => e.name === 'c'));
const a = await readTensor(src, es.find((e) => e.name === 'a'));
console.log('c', Array.from(c.data), 'a', Array.from(a.data));
await src.close();

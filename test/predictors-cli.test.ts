import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DATA, ROOT, oneLineError, runCli } from './helpers.js';

const MODEL = join(ROOT, 'models', 'opt-gutenberg-5m');
const dejavu = (...args: string[]) => runCli('train-predictors', '--model', MODEL, '--backend', 'cpu', ...args);

const dir = mkdtempSync(join(tmpdir(), 'dejavu-train-'));
const text = join(dir, 'text.txt');
writeFileSync(text, 'x');

test('train-predictors: an unknown --init is a one-line error', () => {
  oneLineError(dejavu('--data', text, '--out', join(dir, 'o1'), '--init', 'svd'), /^dejavu: --init must be lowrank or random \(got svd\)$/m);
});

test('train-predictors: --epochs 0 with random weights is a one-line error', () => {
  oneLineError(dejavu('--data', text, '--out', join(dir, 'o2'), '--init', 'random', '--epochs', '0'), /--epochs 0 keeps the initial weights/);
});

test('train-predictors: the default low-rank predictors of the 5m model, end to end on the CPU', (t) => {
  const calib = join(DATA, 'gutenberg-calib.txt');
  if (!existsSync(calib)) return t.skip(`${calib} not found`);
  const out = join(dir, 'pred');
  const r = dejavu('--data', calib, '--out', out, '--tokens', '1024', '--window', '128', '--rank', '32');
  assert.equal(r.code, 0, r.stderr);
  const m = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
  assert.equal(m.init, 'lowrank');
  assert.equal(m.input, 'mlp_in');
  assert.equal(m.rank, 32);
  assert.deepEqual(m.epochs, m.layers.map(() => 0)); // no BCE epochs by default from the low-rank init
  assert.equal(m.layers.length, 4);
  for (const l of m.layers) assert.ok(l.recall >= 0.95 || l.dense, `layer ${l.layer}: recall ${l.recall}`);
  assert.ok(existsSync(join(out, 'predictors.safetensors')));
  assert.match(r.stdout, /saved: input mlp_in, rank 32, target recall 0\.95/);
});

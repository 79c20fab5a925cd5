import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { oneLineError, runCli } from './helpers.js';

const dejavu = (...args: string[]) => runCli('eval', '--backend', 'cpu', ...args);

const dir = mkdtempSync(join(tmpdir(), 'dejavu-eval-'));

test('eval: a missing data file is a one-line error', () => {
  oneLineError(dejavu('--task', 'ppl', '--data', join(dir, 'nope.txt')), /^dejavu: data file not found: .*nope\.txt$/m);
});

test('eval: an unknown task is a one-line error', () => {
  oneLineError(dejavu('--task', 'hellaswag', '--data', join(dir, 'nope.txt')), /^dejavu: unknown task "hellaswag"/);
});

test('eval: a malformed JSONL line is a one-line error with its line number', () => {
  const f = join(dir, 'bad.jsonl');
  writeFileSync(f, '{"query": "a", "choices": ["b", "c"], "gold": 0}\n{not json}\n');
  oneLineError(dejavu('--task', 'copa', '--data', f), /bad\.jsonl:2: malformed JSON line$/m);
});

test('eval: --compare without --predictors is a one-line error', () => {
  const f = join(dir, 't.txt');
  writeFileSync(f, 'hello');
  oneLineError(dejavu('--task', 'ppl', '--data', f, '--compare'), /--compare needs --predictors/);
});

test('eval --json prints one object with ppl and tokens', () => {
  const f = join(dir, 'doc.txt');
  writeFileSync(f, 'The quick brown fox jumps over the lazy dog. <|endoftext|> A second, shorter document follows here.');
  const r = dejavu('--task', 'ppl', '--data', f, '--window', '8', '--json');
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1);
  const o = JSON.parse(lines[0]);
  assert.equal(o.task, 'ppl');
  assert.ok(o.ppl > 1 && Number.isFinite(o.ppl));
  assert.ok(o.tokens > 10);
  assert.equal(o.window, 8);
  assert.equal(o.mlp_density, 1);
});

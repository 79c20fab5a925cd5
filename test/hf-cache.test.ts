import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { loadModel } from '../src/engine/model.js';
import { hubCacheDir, modelLabel, parseHubId, resolveModelDir } from '../src/model/hf-cache.js';
import { DejavuError } from '../src/util/errors.js';
import { ROOT } from './helpers.js';
import { tinyConfig, tinyTensors, writeTinyModel } from './tiny-model.js';

const CLI = join(ROOT, 'dist', 'src', 'cli.js');
const ENV_VARS = ['HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_HOME', 'XDG_CACHE_HOME'] as const;
type Env = Partial<Record<(typeof ENV_VARS)[number], string>>;

/** Runs fn with exactly these of the cache variables set (the others unset), then puts process.env back. */
async function withEnv<T>(vars: Env, fn: () => Promise<T> | T): Promise<T> {
  const saved = Object.fromEntries(ENV_VARS.map((k) => [k, process.env[k]]));
  for (const k of ENV_VARS) {
    if (vars[k] === undefined) delete process.env[k]; else process.env[k] = vars[k];
  }
  try {
    return await fn();
  } finally {
    for (const k of ENV_VARS) {
      if (saved[k] === undefined) delete process.env[k]; else process.env[k] = saved[k];
    }
  }
}

const HASH_OLD = '1'.repeat(40);
const HASH_MAIN = '5'.repeat(40);
const HASH_V1 = '9'.repeat(40);

/**
 * Adds snapshot `hash` of repo `owner/name` to the hub cache at `cache`, as huggingface_hub lays it out:
 * the tiny model's files as blobs/<sha256>, the snapshot folder holding relative symlinks to them.
 */
function addSnapshot(cache: string, repo: string, hash: string, maxPositions: number): string {
  const repoDir = join(cache, `models--${repo.replace('/', '--')}`);
  const snap = join(repoDir, 'snapshots', hash);
  mkdirSync(join(repoDir, 'blobs'), { recursive: true });
  mkdirSync(snap, { recursive: true });
  const cfg = tinyConfig({ max_position_embeddings: maxPositions });
  const src = writeTinyModel(cfg, tinyTensors(cfg));
  for (const f of readdirSync(src)) {
    const bytes = readFileSync(join(src, f));
    const sha = createHash('sha256').update(bytes).digest('hex');
    writeFileSync(join(repoDir, 'blobs', sha), bytes);
    symlinkSync(join('..', '..', 'blobs', sha), join(snap, f));
  }
  rmSync(src, { recursive: true });
  return snap;
}

function setRef(cache: string, repo: string, ref: string, hash: string, newline = false): void {
  const refs = join(cache, `models--${repo.replace('/', '--')}`, 'refs');
  mkdirSync(refs, { recursive: true });
  writeFileSync(join(refs, ref), hash + (newline ? '\n' : ''));
}

/**
 * A hub cache holding org/tiny: refs/main -> snapshot HASH_MAIN (context 32), tag v1 -> HASH_V1
 * (context 48), and an unreferenced HASH_OLD (context 40), so which snapshot loaded shows in the
 * model's config. main's hash sorts between the others: taking the first or the last snapshot instead
 * of following refs/main fails.
 */
function makeCache(root = mkdtempSync(join(tmpdir(), 'dejavu-hf-')), cache = root): { root: string; cache: string } {
  addSnapshot(cache, 'org/tiny', HASH_MAIN, 32);
  addSnapshot(cache, 'org/tiny', HASH_V1, 48);
  addSnapshot(cache, 'org/tiny', HASH_OLD, 40);
  setRef(cache, 'org/tiny', 'main', HASH_MAIN);
  setRef(cache, 'org/tiny', 'v1', HASH_V1, true);
  return { root, cache };
}

async function contextOf(arg: string): Promise<number> {
  const m = await loadModel(arg, { backend: 'cpu' });
  try { return m.config.maxPositions; } finally { m.dispose(); }
}

async function errorOf(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
  } catch (e) {
    assert.ok(e instanceof DejavuError, `expected a DejavuError, got ${(e as Error).stack}`);
    assert.ok(!e.message.includes('\n'), 'error messages are one line');
    return e.message;
  }
  assert.fail('should have failed');
}

test('parseHubId: owner/name[@revision]; paths are not ids', () => {
  assert.deepEqual(parseHubId('facebook/opt-125m'), { repo: 'facebook/opt-125m', revision: undefined });
  assert.deepEqual(parseHubId('facebook/opt-125m@v1.0'), { repo: 'facebook/opt-125m', revision: 'v1.0' });
  assert.deepEqual(parseHubId('org/x_y.z@refs/pr/1'), { repo: 'org/x_y.z', revision: 'refs/pr/1' });
  for (const p of ['opt-125m', '/a/b', './a', '../a', 'a/b/c', 'a/.b', 'a/b.', 'a--b/c', 'a/b..c', 'a/b@', 'a/b@../x', 'a/b@x/../y', 'a b/c', 'org/tiny@v1@v2']) {
    assert.equal(parseHubId(p), null, p);
  }
});

test('hubCacheDir: HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub', () => {
  assert.equal(hubCacheDir({ HF_HUB_CACHE: '/c', HF_HOME: '/h' }), '/c');
  assert.equal(hubCacheDir({ HUGGINGFACE_HUB_CACHE: '/old', HF_HOME: '/h' }), '/old');
  assert.equal(hubCacheDir({ HF_HOME: '/h', XDG_CACHE_HOME: '/x' }), join('/h', 'hub'));
  assert.equal(hubCacheDir({ HF_HUB_CACHE: '', HF_HOME: '/h' }), join('/h', 'hub'));
  assert.equal(hubCacheDir({ XDG_CACHE_HOME: '/x' }), join('/x', 'huggingface', 'hub'));
  assert.equal(hubCacheDir({}), join(homedir(), '.cache', 'huggingface', 'hub'));
  assert.equal(hubCacheDir({ HF_HOME: '~/hf' }), join(homedir(), 'hf', 'hub'));
});

test('loadModel(owner/name) loads refs/main\'s snapshot from HF_HUB_CACHE and generates', async () => {
  const { root, cache } = makeCache();
  try {
    await withEnv({ HF_HUB_CACHE: cache }, async () => {
      assert.equal(await resolveModelDir('org/tiny'), join(cache, 'models--org--tiny', 'snapshots', HASH_MAIN));
      const m = await loadModel('org/tiny', { backend: 'cpu' });
      assert.equal(m.config.maxPositions, 32); // main's snapshot, not v1's
      const g = m.generate('Hello', { maxTokens: 3, temperature: 0 });
      for await (const _ of g) { /* drain */ }
      const r = await g.result;
      assert.ok(r.generatedIds.length >= 1 && r.generatedIds.length <= 3);
      m.dispose();
    });
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('owner/name@tag and owner/name@<commit hash>', async () => {
  const { root, cache } = makeCache();
  try {
    await withEnv({ HF_HUB_CACHE: cache }, async () => {
      assert.equal(await contextOf('org/tiny@v1'), 48); // refs/v1 (its hash ends in a newline)
      assert.equal(await contextOf(`org/tiny@${HASH_V1}`), 48);
      assert.equal(await contextOf(`org/tiny@${HASH_MAIN}`), 32);
      assert.equal(await contextOf('org/tiny@main'), 32);
    });
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('HF_HOME/hub when HF_HUB_CACHE is unset', async () => {
  const root = mkdtempSync(join(tmpdir(), 'dejavu-hf-home-'));
  makeCache(root, join(root, 'hub'));
  try {
    await withEnv({ HF_HOME: root }, async () => {
      assert.equal(await resolveModelDir('org/tiny'), join(root, 'hub', 'models--org--tiny', 'snapshots', HASH_MAIN));
      assert.equal(await contextOf('org/tiny'), 32);
    });
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('without refs/main a lone snapshot is taken; with several, the error names them', async () => {
  const root = mkdtempSync(join(tmpdir(), 'dejavu-hf-'));
  try {
    await withEnv({ HF_HUB_CACHE: root }, async () => {
      addSnapshot(root, 'org/one', HASH_V1, 48);
      assert.equal(await contextOf('org/one'), 48);
      addSnapshot(root, 'org/one', HASH_MAIN, 32);
      assert.equal(await errorOf(() => resolveModelDir('org/one')),
        `org/one is in the Hugging Face cache at ${root} but has no ref "main" and 2 snapshots (${HASH_MAIN}, ${HASH_V1}): name one as org/one@<revision>`);
    });
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('an existing local folder named like a hub id wins over the cache', async () => {
  const { root, cache } = makeCache();
  const cwd = process.cwd();
  const work = mkdtempSync(join(tmpdir(), 'dejavu-hf-cwd-'));
  const cfg = tinyConfig({ max_position_embeddings: 40 });
  const local = writeTinyModel(cfg, tinyTensors(cfg));
  mkdirSync(join(work, 'org'));
  symlinkSync(local, join(work, 'org', 'tiny'));
  try {
    process.chdir(work);
    await withEnv({ HF_HUB_CACHE: cache }, async () => {
      assert.equal(await resolveModelDir('org/tiny'), 'org/tiny');
      assert.equal(await contextOf('org/tiny'), 40);
      assert.equal(modelLabel('org/tiny'), 'tiny');
    });
  } finally {
    process.chdir(cwd);
    for (const d of [root, work, local]) rmSync(d, { recursive: true, force: true });
  }
});

test('one-line errors: an uncached id, a missing ref, a ref to a missing snapshot, a missing path', async () => {
  const { root, cache } = makeCache();
  try {
    await withEnv({ HF_HUB_CACHE: cache }, async () => {
      assert.equal(await errorOf(() => loadModel('facebook/opt-125m', { backend: 'cpu' })),
        `model folder not found: facebook/opt-125m (not a folder, nor in the Hugging Face cache at ${cache}; ` +
        'download it with `hf download facebook/opt-125m` (older huggingface_hub: huggingface-cli), or pass a folder)');
      assert.equal(await errorOf(() => loadModel('facebook/opt-125m@v2', { backend: 'cpu' })),
        `model folder not found: facebook/opt-125m@v2 (not a folder, nor in the Hugging Face cache at ${cache}; ` +
        'download it with `hf download facebook/opt-125m --revision v2` (older huggingface_hub: huggingface-cli), or pass a folder)');
      assert.equal(await errorOf(() => loadModel('org/tiny@v2', { backend: 'cpu' })),
        `org/tiny@v2 is in the Hugging Face cache at ${cache} but has no ref or snapshot "v2"`);
      setRef(cache, 'org/tiny', 'broken', 'c'.repeat(40));
      assert.equal(await errorOf(() => loadModel('org/tiny@broken', { backend: 'cpu' })),
        `org/tiny@broken is in the Hugging Face cache at ${cache} but its ref "broken" names snapshot ${'c'.repeat(40)}, which is missing`);
      unlinkSync(join(cache, 'models--org--tiny', 'refs', 'main')); // three snapshots, no main: ambiguous
      assert.match(await errorOf(() => loadModel('org/tiny', { backend: 'cpu' })), /^org\/tiny is in the Hugging Face cache at .* but has no ref "main" and 3 snapshots/);
      assert.equal(await errorOf(() => loadModel('/definitely/not/here', { backend: 'cpu' })), 'model folder not found: /definitely/not/here');
      assert.equal(await errorOf(() => loadModel('./no/such', { backend: 'cpu' })), 'model folder not found: ./no/such');
    });
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('messages about the checkpoint\'s files name the snapshot folder', async () => {
  const { root, cache } = makeCache();
  try {
    await withEnv({ HF_HUB_CACHE: cache }, async () => {
      const snap = join(cache, 'models--org--tiny', 'snapshots', HASH_MAIN);
      unlinkSync(join(snap, 'config.json'));
      assert.equal(await errorOf(() => loadModel('org/tiny', { backend: 'cpu' })), `missing file config.json in ${snap}`);
    });
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('modelLabel: the hub id for a cached id, the folder\'s name for a folder', () => {
  assert.equal(modelLabel('facebook/opt-125m'), 'facebook/opt-125m');
  assert.equal(modelLabel('facebook/opt-125m@v1'), 'facebook/opt-125m@v1');
  const dir = writeTinyModel();
  try { assert.equal(modelLabel(dir), basename(dir)); } finally { rmSync(dir, { recursive: true }); }
});

test('the CLI: --model owner/name from the cache, and an uncached id as one line', () => {
  const { root, cache } = makeCache();
  const env = { ...process.env, HF_HUB_CACHE: cache };
  try {
    const ok = spawnSync(process.execPath, [CLI, 'generate', '--model', 'org/tiny', '--backend', 'cpu', '--max-tokens', '3', '--json', 'hi'], { encoding: 'utf8', env });
    assert.equal(ok.status, 0, ok.stderr);
    assert.ok(JSON.parse(ok.stdout.trim().split('\n').pop()!).generated_ids.length <= 3);

    // analyze names the model by its id, not by the snapshot's hash folder.
    const data = join(root, 'text.txt');
    writeFileSync(data, 'It was a dark and stormy night, and the rain fell in torrents. '.repeat(4));
    const an = spawnSync(process.execPath, [CLI, 'analyze', '--model', 'org/tiny@v1', '--backend', 'cpu', '--data', data, '--tokens', '16', '--json'], { encoding: 'utf8', env });
    assert.equal(an.status, 0, an.stderr);
    assert.equal(JSON.parse(an.stdout.trim().split('\n').pop()!).model, 'org/tiny@v1');

    const bad = spawnSync(process.execPath, [CLI, 'generate', '--model', 'facebook/opt-125m', '--backend', 'cpu', 'hi'], { encoding: 'utf8', env });
    assert.notEqual(bad.status, 0);
    assert.equal(bad.stdout, '');
    assert.equal(bad.stderr.trimEnd().split('\n').length, 1, bad.stderr);
    assert.equal(bad.stderr.trimEnd(), `dejavu: model folder not found: facebook/opt-125m (not a folder, nor in the Hugging Face cache at ${cache}; ` +
      'download it with `hf download facebook/opt-125m` (older huggingface_hub: huggingface-cli), or pass a folder)');
  } finally { rmSync(root, { recursive: true, force: true }); }
});

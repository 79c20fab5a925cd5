import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';
import { loadModel } from '../src/engine/model.js';
import type { GenerationResult } from '../src/engine/generate.js';
import { serveStatic, type StaticServer } from '../examples/browser/serve.js';
import type { DemoRequest, DemoResult } from '../examples/browser/main.js';
import { MODELS } from './helpers.js';

/**
 * The browser example end to end: headless Chromium (Debian's package; playwright-core downloads no
 * browser) opens examples/browser/index.html from the example's static server, loads the demo model
 * over HTTP and generates greedily. The page's token ids must equal the Node CPU backend's.
 * Without a GPU, Chromium's WebGPU adapter is SwiftShader (Vulkan on the CPU), which has no
 * shader-f16: the engine's packed-u32 path. It is slow (seconds a token for the 5M model), so N is small.
 */
/** Debian's chromium (.ci/install-chromium.sh); DEJAVU_CHROMIUM points elsewhere. */
const CHROMIUM = process.env.DEJAVU_CHROMIUM ?? '/usr/bin/chromium';
// --enable-unsafe-webgpu: WebGPU on Linux is behind a flag; --enable-features=Vulkan: Dawn's Vulkan
// backend (SwiftShader when there is no GPU). The rest keep a headless run quiet and offline.
const ARGS = ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--no-sandbox', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic'];
const PROMPT = 'It was a dark and stormy night';
const N = 8;
const TIMEOUT = 300_000;

/** True when Chromium is here; otherwise a skip, or in CI a failure (the browser test must not pass by skipping). */
function haveChromium(t: TestContext): boolean {
  if (existsSync(CHROMIUM)) return true;
  if (process.env.CI) throw new Error(`${CHROMIUM} is missing in CI (.ci/install-chromium.sh installs it)`);
  t.skip(`no ${CHROMIUM} on this machine (apt-get install chromium to run the browser test)`);
  return false;
}

interface Session { server: StaticServer; browser: Browser; page: Page; errors: string[] }
let session: Promise<Session> | null = null;

/** One server, browser and page for the file: the page keeps its loaded models between tests. */
function open(): Promise<Session> {
  session ??= (async () => {
    const server = await serveStatic(undefined, 0);
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(`page error: ${e.message.split('\n')[0]}`));
    // The loader probes optional files (a sharded checkpoint's index) with HEAD: a 404 there is an
    // answer, and Chromium logs it as "Failed to load resource". Any other failed request is an error.
    page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(`console error: ${m.text().split('\n')[0]}`); });
    page.on('response', (r) => { if (r.status() >= 400 && r.request().method() !== 'HEAD') errors.push(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`); });
    await page.goto(`${server.url}/examples/browser/index.html`);
    await page.waitForFunction(() => window.dejavuDemo !== undefined);
    return { server, browser, page, errors };
  })();
  return session;
}

after(async () => {
  if (!session) return;
  const s = await session.catch(() => null);
  await s?.browser.close();
  await s?.server.close();
});

let expected: Promise<GenerationResult> | null = null;
/** The Node CPU backend's greedy run: the oracle for both browser backends. */
function nodeGreedy(): Promise<GenerationResult> {
  expected ??= (async () => {
    const m = await loadModel(MODELS['5m'], { backend: 'cpu' });
    const g = m.generate(PROMPT, { maxTokens: N, temperature: 0 });
    for await (const _ of g);
    const r = await g.result;
    m.dispose();
    assert.equal(r.generatedIds.length, N, 'the prompt runs N tokens without an EOS, so the comparison covers all of them');
    return r;
  })();
  return expected;
}

async function runInPage(page: Page, r: DemoRequest): Promise<DemoResult> {
  return page.evaluate((req) => window.dejavuDemo!.run(req), r);
}

/** What the page shows after a run: the streamed text and the timing line. */
async function checkShown(page: Page, text: string): Promise<void> {
  assert.equal(await page.textContent('#output'), PROMPT + text);
  assert.match(await page.textContent('#stats') ?? '', new RegExp(`^${N} tokens · prefill [\\d.]+ ms \\(\\d+ prompt tokens\\) · [\\d.]+ ms/token$`));
}

test('the example page runs on WebGPU in headless Chromium and gives the Node CPU backend\'s greedy ids', { timeout: TIMEOUT }, async (t) => {
  if (!haveChromium(t)) return;
  const want = await nodeGreedy();
  const { page, errors } = await open();
  const got = await runInPage(page, { prompt: PROMPT, maxTokens: N, backend: 'auto' });
  if (got.backend !== 'webgpu') {
    const status = await page.textContent('#status');
    if (process.env.CI) throw new Error(`no WebGPU adapter in the page in CI: ${status}`);
    t.skip(`Chromium gave the page no WebGPU adapter here (${status})`);
    return;
  }
  t.diagnostic(`${got.description}; prefill ${got.prefillMs.toFixed(0)} ms, ${got.msPerToken.toFixed(0)} ms/token`);
  assert.match(got.description, /^webgpu: /);
  assert.deepEqual(got.promptIds, want.promptIds);
  assert.deepEqual(got.generatedIds, want.generatedIds);
  assert.equal(got.text, want.text);
  await checkShown(page, want.text);
  assert.deepEqual(errors, []);
});

test('the CPU backend in the page gives the same greedy ids', { timeout: TIMEOUT }, async (t) => {
  if (!haveChromium(t)) return;
  const want = await nodeGreedy();
  const { page, errors } = await open();
  const got = await runInPage(page, { prompt: PROMPT, maxTokens: N, backend: 'cpu' });
  assert.equal(got.backend, 'cpu');
  assert.deepEqual(got.promptIds, want.promptIds);
  assert.deepEqual(got.generatedIds, want.generatedIds);
  assert.equal(got.text, want.text);
  await checkShown(page, want.text);
  assert.deepEqual(errors, []);
});

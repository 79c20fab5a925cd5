/**
 * The browser example: loads the demo model over HTTP (FetchFileSource) and streams greedy text into
 * the page, on WebGPU where the browser has an adapter, else on the CPU backend (and says so).
 * index.html loads this as dist/examples/browser/main.js; its import map resolves the library's one
 * bare import, @huggingface/tokenizers, into node_modules. `window.dejavuDemo.run` is what the
 * Generate button calls; test/browser.test.ts calls it too, to compare token ids with Node.
 */
import { FetchFileSource, loadModel, type BackendChoice, type BackendName, type Model } from '../../src/index.js';

export interface DemoRequest {
  prompt: string;
  maxTokens: number;
  /** auto: WebGPU when the page gets an adapter, else the CPU backend. */
  backend: BackendChoice;
}

export interface DemoResult {
  backend: BackendName;
  /** The runner's one line: adapter and precision, e.g. "webgpu: google swiftshader (f16 weights as packed u32, ...)". */
  description: string;
  /** Whether the adapter had shader-f16 (null on the CPU backend). */
  shaderF16: boolean | null;
  promptIds: number[];
  generatedIds: number[];
  text: string;
  prefillMs: number;
  msPerToken: number;
}

export interface DemoApi {
  run(r: DemoRequest): Promise<DemoResult>;
}

declare global {
  interface Window { dejavuDemo?: DemoApi }
}

/** The model folder, relative to the page (the server serves the repository root); ?model=URL overrides it. */
const MODEL_URL = new URL(new URLSearchParams(location.search).get('model') ?? '../../models/opt-gutenberg-5m/', document.baseURI).href;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** One loaded model per backend, so switching back and forth does not reload weights. */
const models = new Map<BackendName, Promise<Model>>();

function model(backend: BackendName): Promise<Model> {
  let m = models.get(backend);
  if (!m) {
    m = loadModel(new FetchFileSource(MODEL_URL), { backend });
    m.catch(() => models.delete(backend)); // a failed load is retried on the next run
    models.set(backend, m);
  }
  return m;
}

/**
 * Resolves 'auto' for the page: WebGPU wherever the browser gives an adapter (also a software one such
 * as SwiftShader, unlike the library's autoBackend, which takes the CPU backend there), saying in the
 * page why the CPU was chosen otherwise.
 */
async function pickBackend(choice: BackendChoice): Promise<{ backend: BackendName; shaderF16: boolean | null; note: string }> {
  if (choice === 'cpu') return { backend: 'cpu', shaderF16: null, note: 'CPU backend (chosen).' };
  const adapter = navigator.gpu ? await navigator.gpu.requestAdapter().catch(() => null) : null;
  if (!adapter) {
    const reason = navigator.gpu ? 'navigator.gpu gave no adapter' : 'this browser has no WebGPU (navigator.gpu is missing)';
    if (choice === 'webgpu') throw new Error(`WebGPU was asked for, but ${reason}`);
    return { backend: 'cpu', shaderF16: null, note: `No WebGPU: ${reason}. Running on the CPU backend (slower).` };
  }
  const f16 = adapter.features.has('shader-f16');
  return { backend: 'webgpu', shaderF16: f16, note: f16 ? 'WebGPU backend.' : 'WebGPU backend; the adapter has no shader-f16, so weights are read as packed halves.' };
}

async function run(r: DemoRequest): Promise<DemoResult> {
  const status = $('status'), out = $('output'), stats = $('stats');
  const picked = await pickBackend(r.backend);
  status.textContent = `${picked.note} Loading ${MODEL_URL} ...`;
  const m = await model(picked.backend);
  status.textContent = `${picked.note} Runner: ${m.runner.description}.`;
  out.textContent = '';
  const prompt = document.createElement('span');
  prompt.className = 'prompt';
  prompt.textContent = r.prompt;
  out.append(prompt);
  stats.textContent = 'generating ...';
  const gen = m.generate(r.prompt, { maxTokens: r.maxTokens, temperature: 0 });
  for await (const piece of gen) out.append(piece);
  const res = await gen.result;
  stats.textContent = `${res.generatedIds.length} tokens · prefill ${res.prefillMs.toFixed(1)} ms (${res.promptIds.length} prompt tokens) · ${res.decodeMsPerToken.toFixed(2)} ms/token`;
  return {
    backend: m.runner.backend, description: m.runner.description, shaderF16: picked.shaderF16,
    promptIds: res.promptIds, generatedIds: res.generatedIds, text: res.text, prefillMs: res.prefillMs, msPerToken: res.decodeMsPerToken,
  };
}

/** Runs one at a time: a second click waits for the first generation (one model, one KV cache). */
let busy: Promise<unknown> = Promise.resolve();
function queued(r: DemoRequest): Promise<DemoResult> {
  const p = busy.then(() => run(r));
  busy = p.catch(() => {});
  return p;
}

window.dejavuDemo = { run: queued };

$<HTMLFormElement>('form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const button = $<HTMLButtonElement>('go');
  button.disabled = true;
  queued({
    prompt: $<HTMLTextAreaElement>('prompt').value,
    maxTokens: Number($<HTMLInputElement>('tokens').value),
    backend: $<HTMLSelectElement>('backend').value as BackendChoice,
  }).catch((e: Error) => {
    $('status').textContent = `Error: ${e.message.split('\n')[0]}`;
    $('stats').textContent = '';
  }).finally(() => { button.disabled = false; });
});

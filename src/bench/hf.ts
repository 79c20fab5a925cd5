/**
 * Runs bench/hf_baseline.py (PyTorch + transformers on CUDA) for the same shape, prompt and length,
 * so dejavu's numbers sit next to the stock Hugging Face decode loop measured on the same card.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** bench/hf_baseline.py in the repository (this file runs from dist/src/bench). */
export const HF_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'hf_baseline.py');

export interface HfResult {
  shape: string;
  ms_per_token: number;
  prefill_ms: number;
  device: string;
  torch: string;
  transformers: string;
}

export type HfOutcome = { ok: true; result: HfResult } | { ok: false; reason: string };

export interface HfRequest {
  /** A shape name (random weights) or a checkpoint folder. */
  shape?: string;
  model?: string;
  promptLen: number;
  gen: number;
  warmup: number;
  python?: string;
  timeoutMs?: number;
}

/**
 * Runs the script and parses the JSON object on the last line of its stdout. Never throws: a missing
 * python3, torch or CUDA is a reason to skip the comparison, not an error of the benchmark.
 */
export function runHfBaseline(req: HfRequest): Promise<HfOutcome> {
  const python = req.python ?? process.env.DEJAVU_PYTHON ?? 'python3';
  if (!existsSync(HF_SCRIPT)) return Promise.resolve({ ok: false, reason: `${HF_SCRIPT} not found` });
  const args = [HF_SCRIPT, '--prompt-len', String(req.promptLen), '--gen', String(req.gen), '--warmup', String(req.warmup)];
  if (req.shape) args.push('--shape', req.shape);
  if (req.model) args.push('--model', req.model);
  return new Promise((resolve) => {
    const child = spawn(python, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), req.timeoutMs ?? 600_000);
    child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    child.on('error', (e) => { clearTimeout(timer); resolve({ ok: false, reason: `${python}: ${e.message}` }); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const last = out.trim().split('\n').pop() ?? '';
      let obj: Record<string, unknown> | null = null;
      try { obj = JSON.parse(last) as Record<string, unknown>; } catch { /* reported below */ }
      if (obj && typeof obj.error === 'string') return resolve({ ok: false, reason: obj.error });
      if (code === 0 && obj && typeof obj.ms_per_token === 'number') return resolve({ ok: true, result: obj as unknown as HfResult });
      const why = signal ? `killed by ${signal}` : `exit ${code}`;
      const tail = err.trim().split('\n').pop() ?? '';
      resolve({ ok: false, reason: `hf_baseline.py ${why}${tail ? `: ${tail}` : ''}` });
    });
  });
}

import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError, type Command } from 'commander';
import { DejavuError } from '../util/errors.js';
import { parseBackend, parseKvCache } from '../backend/select.js';
import type { LoadOptions } from '../engine/model.js';

/** The embedded demo model, committed in the repository (models/opt-gutenberg-5m). */
export const DEMO_MODEL = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'models', 'opt-gutenberg-5m');

export function intArg(name: string, min = 0) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    return n;
  };
}

export function floatArg(name: string, min = -Infinity, max = Infinity) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be a number in [${min}, ${max}]`);
    return n;
  };
}

/** Adds the options most commands share. */
export function modelOptions(cmd: Command, { demoDefault = true } = {}): Command {
  return cmd
    .option('--model <dir>', 'Hugging Face OPT checkpoint folder, or a hub id in the local Hugging Face cache (facebook/opt-125m)' + (demoDefault ? ' (default: the embedded opt-gutenberg-5m)' : ''))
    .option('--backend <name>', 'auto | cpu | webgpu', 'auto')
    .option('--kv-cache <type>', 'WebGPU KV cache: f32 | f16 (half the memory, slightly slower)', 'f32')
    .option('--cpu-threads <n>', 'CPU backend: threads (default: the cores, at most 16)', intArg('--cpu-threads', 1));
}

/** loadModel's options from modelOptions' flags. */
export function loadOptions(o: { backend: string; kvCache: string; cpuThreads?: number }): LoadOptions {
  return { backend: parseBackend(o.backend), kvCache: parseKvCache(o.kvCache), cpuThreads: o.cpuThreads };
}

/**
 * Runs a command body: a DejavuError becomes one line on stderr and exit 1; anything else is a bug,
 * reported in one line (the stack with DEJAVU_DEBUG=1) and exit 2.
 */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
      process.exit(0); // a live Dawn instance keeps the event loop busy
    } catch (e) {
      if (e instanceof DejavuError) {
        process.stderr.write(`dejavu: ${e.message}\n`);
        process.exit(1);
      }
      const err = e as Error;
      // Some errors carry no message (a DOMException such as mapAsync's AbortError): then its name.
      process.stderr.write(`dejavu: internal error: ${(err?.message || err?.name || String(e)).split('\n')[0]}\n`);
      if (process.env.DEJAVU_DEBUG) process.stderr.write(`${err?.stack}\n`);
      process.exit(2);
    }
  };
}

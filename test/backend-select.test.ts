/**
 * 'auto' backend choice (src/backend/select.ts, autoBackend): WebGPU on a GPU, the CPU backend where
 * there is no adapter or only one that emulates a GPU on the CPU (device.ts, isSoftwareAdapter).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { autoBackend } from '../src/backend/select.js';
import { isSoftwareAdapter, probeAdapter } from '../src/backend/webgpu/device.js';

const adapter = (info: Record<string, unknown>) => ({ info: { vendor: '', architecture: '', device: '', description: '', ...info } }) as unknown as GPUAdapter;

test('isSoftwareAdapter: the fallback flag or an emulator\'s name (lavapipe/llvmpipe, SwiftShader), not a GPU', () => {
  assert.equal(isSoftwareAdapter(adapter({ isFallbackAdapter: true, vendor: 'someone' })), true);
  assert.equal(isSoftwareAdapter(adapter({ vendor: 'mesa', architecture: 'software', device: 'llvmpipe-llvm-15-0-6-256-bits-', description: 'llvmpipe: Mesa 25.0.7' })), true);
  assert.equal(isSoftwareAdapter(adapter({ vendor: 'google', description: 'SwiftShader Device (Subzero)' })), true);
  assert.equal(isSoftwareAdapter(adapter({ vendor: 'nvidia', architecture: 'hopper', description: 'NVIDIA H200', isFallbackAdapter: false })), false);
  assert.equal(isSoftwareAdapter(adapter({ vendor: 'amd', architecture: 'rdna-3' })), false);
});

test('auto: WebGPU only on a GPU; the CPU backend with no adapter or a software one (CI: lavapipe only)', async () => {
  const a = await probeAdapter();
  const want = !a || isSoftwareAdapter(a) ? 'cpu' : 'webgpu';
  assert.equal(await autoBackend(), want);
  if (process.env.CI) assert.ok(a && isSoftwareAdapter(a), 'CI has lavapipe, a software adapter');
});

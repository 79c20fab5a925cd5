import { DejavuError } from '../../util/errors.js';
import { notice } from '../../util/notice.js';

/** What the engine asked for and got from the adapter. */
export interface Gpu {
  device: GPUDevice;
  adapterName: string;
  /** shader-f16: weights read as f16 directly; otherwise two halves per u32 with unpack2x16float. */
  f16: boolean;
  /** subgroups: reductions with subgroupAdd; otherwise workgroup memory. */
  subgroups: boolean;
  /**
   * The subgroup size where the adapter has one size only (subgroupMinSize = subgroupMaxSize: 32 on
   * NVIDIA, 8 on lavapipe); kernels whose rows are exactly one subgroup wide then take a row's sum
   * from subgroupAdd alone. Undefined where the size varies or is not reported.
   */
  subgroupSize?: number;
  timestamps: boolean;
  limits: GPUSupportedLimits;
}

export interface GpuOptions {
  /** Pretend shader-f16 is missing (tests the packed-u32 path that browsers without f16 take). */
  disableF16?: boolean;
  disableSubgroups?: boolean;
}

// Dawn's `create()` result must stay referenced for the life of the process: when it was collected
// mid-run, the process crashed in CallbackTaskManager::Flush (DESIGN.md).
let nodeGpu: GPU | null = null;

async function gpuEntry(): Promise<GPU | null> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return nav.gpu;
  if (typeof process === 'undefined' || !process.versions?.node) return null;
  if (!nodeGpu) {
    let mod: { create: (o: string[]) => GPU; globals: object };
    try { mod = await import('webgpu'); } catch { return null; }
    Object.assign(globalThis, mod.globals);
    nodeGpu = mod.create(dawnFlags());
  }
  return nodeGpu;
}

/**
 * Dawn instance flags. Timestamp quantisation (Dawn rounds GPU timestamps to 65.5 µs by default, a
 * fingerprinting guard for browsers) is turned off so benchmarks can time single dispatches.
 * DEJAVU_DAWN_FLAGS adds more, e.g. "enable-dawn-features=disable_robustness" to measure what the
 * bounds checks on every storage access cost.
 */
function dawnFlags(): string[] {
  const flags = ['disable-dawn-features=timestamp_quantization'];
  const extra = typeof process !== 'undefined' ? process.env.DEJAVU_DAWN_FLAGS : undefined;
  if (extra) flags.push(...extra.split(/\s+/).filter(Boolean));
  return flags;
}

/** The adapter's name, or null when there is no WebGPU adapter. */
export async function probeAdapter(): Promise<GPUAdapter | null> {
  const gpu = await gpuEntry();
  if (!gpu) return null;
  try { return await gpu.requestAdapter({ powerPreference: 'high-performance' }); } catch { return null; }
}

/**
 * Whether the adapter emulates a GPU on the CPU (Mesa's lavapipe/llvmpipe, SwiftShader): the adapter
 * says so (isFallbackAdapter), or its name does. There the CPU backend is the faster engine (the 5m
 * demo model on 2 cores: 4.2 ms/token against 42 on lavapipe), so 'auto' keeps WebGPU for real GPUs.
 */
export function isSoftwareAdapter(a: GPUAdapter): boolean {
  const i = a.info;
  return (i as { isFallbackAdapter?: boolean }).isFallbackAdapter === true
    || /llvmpipe|lavapipe|swiftshader/i.test([i.vendor, i.architecture, i.device, i.description].join(' '));
}

export function adapterName(a: GPUAdapter): string {
  const i = a.info;
  return [i.vendor, i.architecture, i.device, i.description].filter((s) => s).join(' ') || 'unknown adapter';
}

/**
 * Opens a device with the adapter's own buffer limits (weights of large models need more than the
 * defaults) and the features the kernels can use. Throws a DejavuError when there is no adapter.
 */
export async function openGpu(opts: GpuOptions = {}): Promise<Gpu> {
  const adapter = await probeAdapter();
  if (!adapter) throw new DejavuError('no WebGPU adapter found (use --backend cpu, or install a Vulkan driver such as Mesa lavapipe)');
  const want: GPUFeatureName[] = [];
  const f16 = adapter.features.has('shader-f16') && !opts.disableF16;
  const subgroups = adapter.features.has('subgroups') && !opts.disableSubgroups;
  const timestamps = adapter.features.has('timestamp-query');
  if (f16) want.push('shader-f16');
  if (subgroups) want.push('subgroups' as GPUFeatureName);
  if (timestamps) want.push('timestamp-query');
  const L = adapter.limits;
  const device = await adapter.requestDevice({
    requiredFeatures: want,
    requiredLimits: {
      maxStorageBufferBindingSize: L.maxStorageBufferBindingSize,
      maxBufferSize: L.maxBufferSize,
      maxStorageBuffersPerShaderStage: L.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: L.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: L.maxComputeWorkgroupSizeX,
    },
  });
  device.addEventListener('uncapturederror', (ev) => {
    notice(`dejavu: WebGPU error: ${(ev as GPUUncapturedErrorEvent).error.message.split('\n')[0]}`);
  });
  // A lost device (the driver gave up on it: out of memory mid-run, a hang) fails every later call
  // with errors that say nothing (mapAsync's AbortError has no message): say why, once.
  device.lost.then((info) => {
    if (info.reason === 'destroyed') return;
    notice(`dejavu: the WebGPU device was lost: ${info.message.split('\n')[0] || 'no reason given'}`);
  }).catch(() => {});
  const info = adapter.info;
  const subgroupSize = subgroups && info.subgroupMinSize && info.subgroupMinSize === info.subgroupMaxSize ? info.subgroupMinSize : undefined;
  return { device, adapterName: adapterName(adapter), f16, subgroups, subgroupSize, timestamps, limits: device.limits };
}

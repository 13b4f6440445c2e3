/**
 * Acquiring the WebGPU device: the adapter's real limits (WebGPU's defaults are far too low for
 * fused kernels), the features ssmkit uses, and loud reporting of lost devices and uncaptured
 * errors (Deno drops both silently by default).
 *
 * @module
 */

import { platform } from "../platform/current.ts";

/** A WebGPU device plus what ssmkit needs to know about it. */
export interface GpuContext {
  /** The device every kernel runs on. */
  device: GPUDevice;
  /** Who made the adapter (`isFallback`: a software adapter such as lavapipe). */
  adapterInfo: {
    description: string;
    vendor: string;
    architecture: string;
    device: string;
    isFallback: boolean;
  };
  /** Every numeric limit of the device (as granted: the adapter's own limits). */
  limits: Record<string, number>;
  /** Optional features that were granted, and the adapter's subgroup sizes. */
  features: {
    shaderF16: boolean;
    timestampQuery: boolean;
    subgroups: boolean;
    subgroupMinSize: number;
    subgroupMaxSize: number;
    /**
     * Whether kernels that call subgroup builtins must start with `enable subgroups;`. The WGSL
     * spec requires it and Chromium's compiler (Tint) enforces it, while Deno's (Naga) rejects
     * the directive; acquireGpu asks the device's compiler. Absent: false.
     */
    subgroupsDirective?: boolean;
  };
}

/** Thrown when this machine has no WebGPU adapter at all. */
export class NoAdapterError extends Error {
  /** Creates the error; `detail` says what was tried. */
  constructor(detail = "navigator.gpu.requestAdapter() returned null") {
    super(
      `no WebGPU adapter was found (${detail}). Run on a machine with a GPU and its Vulkan/Metal/` +
        "D3D12 driver; on Linux without a GPU install Mesa's software Vulkan driver " +
        "(`apt-get install mesa-vulkan-drivers`), which gives a slow but complete adapter.",
    );
    this.name = "NoAdapterError";
  }
}

/** Options of `acquireGpu`. */
export interface AcquireOptions {
  /** Ask for the `subgroups` feature (default true); false forces the non-subgroup code paths. */
  subgroups?: boolean;
}

// Why a device was lost, by device: submitting to a lost device must fail with that reason.
const lostReasons = new WeakMap<GPUDevice, string>();
let cached: Promise<GpuContext> | undefined;
let cachedDevice: GPUDevice | undefined;

/** The reason `ctx`'s device was lost, or undefined while it is alive. */
export function lostReason(ctx: GpuContext): string | undefined {
  return lostReasons.get(ctx.device);
}

/**
 * The WebGPU backends Deno's wgpu instance uses, when the user has not chosen them: on Linux,
 * Vulkan alone. With its default set wgpu also loads Mesa's EGL for the OpenGL backend, and
 * that library's destructor races with threads still exiting when the process ends: glibc then
 * aborts with "double free or corruption" after the work is done (about 1 run in 10 of a
 * 6-module `deno test --parallel` stress on lavapipe, 0 in 250 with Vulkan alone). ssmkit needs
 * compute features only Vulkan provides there. (NVIDIA's Vulkan driver loads its own EGL
 * libraries whatever the backend set; that is the driver's, not wgpu's GL backend.)
 *
 * It also turns off Mesa's Vulkan device-select layer (`NODEVICE_SELECT=1`), whose only job is
 * to put the display's GPU first in the adapter list: on a machine without a Wayland session it
 * prints "error: XDG_RUNTIME_DIR is invalid or not set in the environment." twice while looking
 * for one. wgpu ranks adapters itself (ssmkit asks for high performance), so nothing else
 * changes. A variable set by the user is left alone; without permission to read the
 * environment nothing is changed. Takes effect only before the runtime's first `requestAdapter`.
 */
export function preferVulkanOnLinux(): void {
  platform.prepareWebGpu(); // the environment is Deno's: the platform module sets it
}

/** Requests a fresh adapter and device with the adapter's limits and useful features. */
export async function acquireGpu(opts: AcquireOptions = {}): Promise<GpuContext> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) throw new NoAdapterError("navigator.gpu is not available in this runtime");
  preferVulkanOnLinux();
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new NoAdapterError();

  // Every numeric limit the adapter reports; the limits are prototype getters, so use for-in.
  const requiredLimits: Record<string, number> = {};
  const adapterLimits = adapter.limits as unknown as Record<string, unknown>;
  for (const key in adapter.limits) {
    const value = adapterLimits[key];
    if (typeof value === "number") requiredLimits[key] = value;
  }
  const wanted: GPUFeatureName[] = [];
  for (const f of ["shader-f16", "timestamp-query"] as GPUFeatureName[]) {
    if (adapter.features.has(f)) wanted.push(f);
  }
  // Deno does not list `subgroups` in adapter.features: ask for it and fall back on refusal.
  const askSubgroups = opts.subgroups !== false;
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({
      requiredLimits,
      requiredFeatures: askSubgroups ? [...wanted, "subgroups" as GPUFeatureName] : wanted,
    });
  } catch (first) {
    if (!askSubgroups) throw deviceError(first);
    try {
      device = await adapter.requestDevice({ requiredLimits, requiredFeatures: wanted });
    } catch (second) {
      throw deviceError(second);
    }
  }

  const info = adapterInfoOf(adapter);
  const limits: Record<string, number> = {};
  const deviceLimits = device.limits as unknown as Record<string, unknown>;
  for (const key in device.limits) {
    const value = deviceLimits[key];
    if (typeof value === "number") limits[key] = value;
  }
  const subgroups = device.features.has("subgroups" as GPUFeatureName);
  const ctx: GpuContext = {
    device,
    adapterInfo: {
      description: String(info.description ?? ""),
      vendor: String(info.vendor ?? ""),
      architecture: String(info.architecture ?? ""),
      device: String(info.device ?? ""),
      isFallback: Boolean(info.isFallbackAdapter ?? adapterFallbackFlag(adapter)),
    },
    limits,
    features: {
      shaderF16: device.features.has("shader-f16"),
      timestampQuery: device.features.has("timestamp-query"),
      subgroups,
      // WebGPU guarantees sizes within [4, 128] when the adapter does not say.
      subgroupMinSize: numberOr(info.subgroupMinSize, subgroups ? 4 : 0),
      subgroupMaxSize: numberOr(info.subgroupMaxSize, subgroups ? 128 : 0),
    },
  };
  ctx.features.subgroupsDirective = subgroups && await acceptsSubgroupsDirective(device);
  watchDevice(device);
  return ctx;
}

/** Whether the device's WGSL compiler accepts `enable subgroups;` (see GpuContext.features). */
async function acceptsSubgroupsDirective(device: GPUDevice): Promise<boolean> {
  device.pushErrorScope("validation");
  const module = device.createShaderModule({
    code: "enable subgroups;\n@compute @workgroup_size(1) fn main() {}",
    label: "probe: enable subgroups",
  });
  const scope = device.popErrorScope();
  const info = await module.getCompilationInfo();
  await scope; // the same error as `info`, consumed so it is not reported as uncaptured
  return !info.messages.some((m) => m.type === "error");
}

/** The shared context of this process (acquired once; re-acquired after a device loss). */
export function getGpu(): Promise<GpuContext> {
  if (!cached) {
    const pending = acquireGpu().then((ctx) => {
      cachedDevice = ctx.device;
      return ctx;
    });
    // A failed acquisition is not remembered: a later call tries again.
    pending.catch(() => {
      if (cached === pending) cached = undefined;
    });
    cached = pending;
  }
  return cached;
}

/** Whether a WebGPU adapter exists (other device errors are thrown, not hidden). */
export async function hasGpu(): Promise<boolean> {
  try {
    await getGpu();
    return true;
  } catch (e) {
    if (e instanceof NoAdapterError) return false;
    throw e;
  }
}

function watchDevice(device: GPUDevice): void {
  device.lost.then((info) => {
    lostReasons.set(device, `${info.reason}: ${info.message}`);
    if (cachedDevice === device) {
      cached = undefined;
      cachedDevice = undefined;
    }
    // An explicit destroy() is intended; anything else is a real failure worth shouting about.
    if (info.reason !== "destroyed") {
      console.error(`ssmkit: the WebGPU device was lost (${info.reason}): ${info.message}`);
    }
  });
  // Deno drops uncaptured errors silently; a kernel failing unnoticed is worse than noise.
  device.addEventListener("uncapturederror", (event) => {
    const error = (event as GPUUncapturedErrorEvent).error;
    console.error(`ssmkit: uncaptured WebGPU error: ${error.message.trim()}`);
  });
}

interface LooseAdapterInfo {
  description?: unknown;
  vendor?: unknown;
  architecture?: unknown;
  device?: unknown;
  isFallbackAdapter?: unknown;
  subgroupMinSize?: unknown;
  subgroupMaxSize?: unknown;
}

function adapterInfoOf(adapter: GPUAdapter): LooseAdapterInfo {
  const info = (adapter as unknown as { info?: LooseAdapterInfo }).info;
  return info ?? {};
}

function adapterFallbackFlag(adapter: GPUAdapter): boolean {
  return Boolean((adapter as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter);
}

function numberOr(value: unknown, fallback: number): number {
  return typeof value === "number" && Number.isFinite(value) ? value : fallback;
}

function deviceError(cause: unknown): Error {
  const message = cause instanceof Error ? cause.message : String(cause);
  return new Error(`WebGPU requestDevice failed with the adapter's limits: ${message}`, { cause });
}

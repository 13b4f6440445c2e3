/**
 * The device limits code generation respects. Taken from the real adapter at run time; the
 * WebGPU defaults are used to generate code without a device (e.g. `ssmkit wgsl`).
 *
 * @module
 */

/** The limits codegen reads. */
export interface DeviceLimits {
  /** Storage buffers one kernel may bind (kernels are split to fit). */
  maxStorageBuffersPerShaderStage: number;
  /** Bytes of workgroup memory per workgroup (matmul tiles, staged scan loads). */
  maxComputeWorkgroupStorageSize: number;
  /** Threads per workgroup. */
  maxComputeInvocationsPerWorkgroup: number;
  /** Workgroups per dispatch dimension (larger grids are folded into 2-D). */
  maxComputeWorkgroupsPerDimension: number;
  /** Bytes one binding may cover (larger tensors are rejected before any GPU call). */
  maxStorageBufferBindingSize: number;
  /** Bytes of one buffer. */
  maxBufferSize: number;
  /** Subgroup ops may be used (feature requested and granted). */
  subgroups: boolean;
  /** Smallest subgroup size the device may use (0 when unknown). */
  subgroupMinSize: number;
  /**
   * Strategy choices the autotuner measured on this device, tuning key → candidate name
   * (codegen/tuning.ts); absent: every tuning point takes its default.
   */
  tuned?: ReadonlyMap<string, string>;
}

/** WebGPU's default limits (what any conforming device offers). */
export const DEFAULT_LIMITS: DeviceLimits = {
  maxStorageBuffersPerShaderStage: 8,
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBufferBindingSize: 134217728,
  maxBufferSize: 268435456,
  subgroups: false,
  subgroupMinSize: 0,
};

/** Reads the codegen limits from a device's limits and features. */
export function limitsFrom(
  limits: Record<string, number>,
  features: { subgroups: boolean; subgroupMinSize: number },
): DeviceLimits {
  const pick = (k: keyof DeviceLimits) => {
    const v = limits[k];
    return typeof v === "number" ? v : DEFAULT_LIMITS[k] as number;
  };
  return {
    maxStorageBuffersPerShaderStage: pick("maxStorageBuffersPerShaderStage"),
    maxComputeWorkgroupStorageSize: pick("maxComputeWorkgroupStorageSize"),
    maxComputeInvocationsPerWorkgroup: pick("maxComputeInvocationsPerWorkgroup"),
    maxComputeWorkgroupsPerDimension: pick("maxComputeWorkgroupsPerDimension"),
    maxStorageBufferBindingSize: pick("maxStorageBufferBindingSize"),
    maxBufferSize: pick("maxBufferSize"),
    subgroups: features.subgroups,
    subgroupMinSize: features.subgroupMinSize,
  };
}

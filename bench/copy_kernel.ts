/**
 * The bandwidth anchor: a plain vec4 copy kernel, timed like every other kernel.
 *
 * @module
 */

import type { GpuContext } from "../runtime/gpu_device.ts";
import { PipelineCache } from "../runtime/gpu_pipelines.ts";
import { timeDispatches } from "../runtime/gpu_submit.ts";

/**
 * The anchor's size: `cap` f32 values (default 2^26, 256 MiB) or fewer where the device binds
 * less in one buffer.
 */
export function copyElements(ctx: GpuContext, cap = 64 * 1024 * 1024): number {
  return Math.min(cap, (ctx.limits.maxStorageBufferBindingSize ?? 0) / 4);
}

/**
 * Copies `elements` f32 values (a multiple of 4); returns the median time and the bandwidth
 * (bytes read plus bytes written, per second).
 */
export async function copyKernelBenchmark(
  ctx: GpuContext,
  elements: number,
  iterations: number,
): Promise<{ ms: number; GBps: number }> {
  // Checked here, before any buffer exists: the driver's own message arrives only at submit.
  const limit = ctx.limits.maxStorageBufferBindingSize ?? 0;
  if (elements * 4 > limit) {
    throw new Error(
      `copy anchor: ${elements * 4} bytes in one binding exceed the device's ` +
        `maxStorageBufferBindingSize ${limit} (size the anchor with copyElements(ctx))`,
    );
  }
  const vecs = elements / 4;
  const perRow = 65535 * 256;
  const wgsl = `
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * ${perRow}u;
  if (i < ${vecs}u) { dst[i] = src[i]; }
}`;
  const kernel = { name: "copy_vec4", wgsl };
  const pipeline = await new PipelineCache(ctx).get(kernel);
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
  const src = ctx.device.createBuffer({ size: elements * 4, usage });
  const dst = ctx.device.createBuffer({ size: elements * 4, usage });
  const groups = Math.ceil(vecs / 256);
  const workgroups: [number, number, number] = [
    Math.min(groups, 65535),
    Math.ceil(groups / 65535),
    1,
  ];
  const [t] = await timeDispatches(ctx, [{ kernel, pipeline, buffers: [src, dst], workgroups }], {
    warmup: 3,
    iterations,
  });
  src.destroy();
  dst.destroy();
  const ms = t.medianNs / 1e6;
  return { ms, GBps: (2 * elements * 4) / ms / 1e6 };
}

// How many kernels a decode step of each model runs (code generation only, no adapter): a
// decode step's GPU time is mostly a fixed cost per dispatch (about 8 µs on an H200,
// bench/RESULTS.md 2026-12-02), so each layer should be as few kernels as its dependencies
// allow. The residual add is the out_proj's epilogue and the next RMSNorm's reduction runs
// inside the in_proj's matrix-vector kernel; the conv window's update (an elementwise kernel
// read only by the next step) rides in the next kernel's dispatch (codegen/dispatch_merge.ts):
// Mamba 4 kernels a layer, Mamba-2 3 (its gated norm is absorbed too), plus the head with the
// final norm (at the 130M shapes the head's 50,280 columns are too many workgroups to repeat the
// norm's reduction in each: one kernel more). Before 2026-12-06 the residual and the norm had two
// kernels of their own per layer: 176 and 200 kernels at 24 layers; 122 and 98 until the ride-
// along dispatches of 2026-12-07, now 98 and 74.
// Decode values are checked against HF by tests/models_test.ts.
import assert from "node:assert/strict";
import { generateKernels } from "../codegen/compile_graph.ts";
import type { DeviceLimits } from "../codegen/limits.ts";
import { trace } from "../dsl/trace.ts";
import { mamba2Definition, mambaDefinition, type ModelDefinition } from "../models/definitions.ts";
import { mambaConfigFromHF } from "../models/mamba.ts";
import { mamba2ConfigFromHF } from "../models/mamba2.ts";

/** An H100's limits (64 bindings: no kernel split for its binding count). */
const LIMITS: DeviceLimits = {
  maxStorageBuffersPerShaderStage: 64,
  maxComputeWorkgroupStorageSize: 49152,
  maxComputeInvocationsPerWorkgroup: 1024,
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBufferBindingSize: 2 ** 31 - 4,
  maxBufferSize: 2 ** 40,
  subgroups: true,
  subgroupMinSize: 32,
};

function decodeKernels(def: ModelDefinition, batch = 1): string[] {
  return decodeArtifacts(def, batch).map((k) => k.wgsl.split("\n")[0]);
}

function decodeArtifacts(def: ModelDefinition, batch: number) {
  const inputs = {
    ids: { axes: "b l", dtype: "i32" },
    ...def.weightInputs(),
    ...def.cacheInputs(),
  };
  const graph = trace(
    inputs as never,
    (t) => def.forward(t as never, { cached: true, lastOnly: true }) as never,
    def.sizes(batch, 1),
  );
  // As the resident models compile it: small elementwise kernels ride along.
  return generateKernels(graph, LIMITS, { rideAlong: true }).kernels;
}

const common = {
  hidden_size: 96,
  num_hidden_layers: 5,
  vocab_size: 300,
  tie_word_embeddings: true,
};

Deno.test("a Mamba decode step is 4 kernels a layer: no residual, norm or conv-window kernels", () => {
  const def = mambaDefinition(
    mambaConfigFromHF({ model_type: "mamba", ...common, state_size: 16, expand: 2 }),
  );
  const heads = decodeKernels(def);
  assert.equal(heads.length, 4 * 5 + 1, heads.join("\n"));
  // The conv window's update rides in the x_proj's dispatch.
  assert.equal(heads.filter((h) => /\+ k\d+_map/.test(h)).length, 5, heads.join("\n"));
  assert.ok(!heads.some((h) => /reduce/.test(h)), heads.join("\n"));
});

const mamba2Small = () =>
  mamba2Definition(mamba2ConfigFromHF({
    model_type: "mamba2",
    ...common,
    state_size: 32,
    expand: 2,
    head_dim: 32,
    num_heads: 6,
    n_groups: 1,
  }));

Deno.test("a Mamba-2 decode step is 3 kernels a layer: no residual, norm or conv-window kernels", () => {
  const def = mamba2Small();
  const heads = decodeKernels(def);
  assert.equal(heads.length, 3 * 5 + 1, heads.join("\n"));
  assert.equal(heads.filter((h) => /\+ k\d+_map/.test(h)).length, 5, heads.join("\n"));
  assert.ok(!heads.some((h) => /reduce/.test(h)), heads.join("\n"));
});

Deno.test("batched Mamba-2 decode: the scan reads the conv's output, not its taps in every lane", () => {
  // The causal conv and SiLU of B and C are shared by every channel of a sequence: inlined, each
  // lane recomputed its states' taps (at batch 64 on an H100 the scan took 7.7 of a step's 9.6
  // ms). With enough lanes (here batch 256) the conv output gets a buffer (codegen/fusion.ts);
  // at batch 1 it stays inline (no kernel more).
  const def = mamba2Small();
  const readsConvWeights = (k: { reads: readonly unknown[] }) =>
    k.reads.some((r) => (r as { name?: string }).name?.endsWith("mixer.conv1d.weight"));
  const scans = (batch: number) => decodeArtifacts(def, batch).filter((k) => /_scan/.test(k.name));
  assert.equal(scans(1).length, 5);
  assert.ok(scans(1).every(readsConvWeights), "batch 1: the conv stays in the scan");
  assert.equal(decodeKernels(def, 1).length, 3 * 5 + 1);
  assert.equal(scans(256).length, 5);
  assert.ok(!scans(256).some(readsConvWeights), "batch 256: the scans read the conv's output");
});

Deno.test("Mamba-2 decode: the scan applies the D skip and the gate, out_proj only the norm", () => {
  // The out_proj's matrix-vector kernel evaluates its prologue in every workgroup (384 at the
  // 130M shape): (y + D·x)·silu(z) there recomputed the causal conv of x for each element. The
  // one-step scan stores the gated output instead (codegen/fusion.ts, scanEpilogueTop).
  const def = mamba2Small();
  const reads = (k: { reads: readonly unknown[] }, suffix: string) =>
    k.reads.some((r) => (r as { name?: string }).name?.endsWith(suffix));
  const kernels = decodeArtifacts(def, 1);
  const outProj = kernels.filter((k) => reads(k, "mixer.out_proj.weight"));
  assert.equal(outProj.length, 5);
  for (const k of outProj) {
    assert.ok(!reads(k, "mixer.conv1d.weight"), `${k.name} recomputes the conv`);
    const prologue = k.wgsl.split("fn load_a")[1].split("\n}")[0];
    assert.doesNotMatch(prologue, /exp\(/, `${k.name}: the gate is in the prologue`);
  }
  assert.equal(kernels.length, 3 * 5 + 1);
});

Deno.test("decode kernels declare only the bindings they read (a pipeline's layout drops unused ones)", () => {
  // WebGPU derives a pipeline's bind group layout from the bindings the shader uses: a
  // declared but unread buffer makes the bind group one entry too long (an error on a GPU, which
  // lavapipe did not report). The shared-prologue check once registered the conv output's
  // binding at batch 64 and then read it through a vector binding instead.
  // The 130M shape's widths (two layers): at batch 64 its scan reads B and C as vectors.
  const def = mamba2Definition(mamba2ConfigFromHF({
    model_type: "mamba2",
    ...common,
    hidden_size: 768,
    num_hidden_layers: 2,
    state_size: 128,
    expand: 2,
    head_dim: 64,
    num_heads: 24,
    n_groups: 1,
  }));
  for (const batch of [1, 64]) {
    for (const k of decodeArtifacts(def, batch)) {
      for (const [, name] of k.wgsl.matchAll(/var<storage[^>]*>\s+(\w+)\s*:/g)) {
        assert.match(
          k.wgsl,
          new RegExp(`\\b${name}\\[`),
          `batch ${batch}, ${k.name}: ${name} unread`,
        );
      }
    }
  }
});

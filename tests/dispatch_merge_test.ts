// Ride-along dispatches (codegen/dispatch_merge.ts): a decode step of tiny Mamba and Mamba-2
// models with their conv-window updates riding in later kernels' dispatches, run on the GPU
// against the float64 interpreter; the merge's safety rules on synthetic kernels (a rider never
// passes a kernel that reads what it writes or writes what it touches, nor an in-place alias).
import assert from "node:assert/strict";
import type { KernelArtifact } from "../codegen/artifact.ts";
import { mergeRider, mergeRiders } from "../codegen/dispatch_merge.ts";
import type { InputNode, Node } from "../dsl/ir.ts";
import { mamba2Definition, mambaDefinition, type ModelDefinition } from "../models/definitions.ts";
import { mambaConfigFromHF } from "../models/mamba.ts";
import { mamba2ConfigFromHF } from "../models/mamba2.ts";
import { compile } from "../runtime/compile.ts";
import { assertClose, freshSeed, randomInputs, rng } from "./util.ts";

const common = { hidden_size: 24, num_hidden_layers: 2, vocab_size: 37, tie_word_embeddings: true };

async function checkDecode(def: ModelDefinition, batch: number) {
  const spec = { ids: { axes: "b l", dtype: "i32" }, ...def.weightInputs(), ...def.cacheInputs() };
  const seed = freshSeed();
  const prog = await compile(
    spec as never,
    (t) => def.forward(t as never, { cached: true, lastOnly: true }) as never,
    def.sizes(batch, 1),
    { backend: "gpu", rideAlong: true },
  );
  try {
    const names = prog.kernels.map((k) => k.name);
    assert.ok(names.some((n) => n.includes("+")), `a kernel with a rider: ${names}`);
    const inputs = randomInputs(prog.graph, rng(seed), 37) as Record<string, Float32Array>;
    const got = await prog.run(inputs) as Record<string, Float32Array>;
    const want = prog.interpret(inputs) as Record<string, Float64Array>;
    for (const name of Object.keys(want)) {
      assertClose(got[name], want[name], 1e-4, `${name} seed ${seed} [${names}]`);
    }
  } finally {
    prog.destroy();
  }
}

Deno.test("ride-along: Mamba and Mamba-2 decode steps with riders match the interpreter", async () => {
  await checkDecode(
    mambaDefinition(mambaConfigFromHF({ model_type: "mamba", ...common, state_size: 5 })),
    3,
  );
  await checkDecode(
    mamba2Definition(mamba2ConfigFromHF({
      model_type: "mamba2",
      ...common,
      state_size: 6,
      expand: 2,
      head_dim: 8,
      num_heads: 6,
      n_groups: 2,
    })),
    2,
  );
});

/** Buffers named by letter (synthetic nodes: only their identity matters here). */
const buffers = new Map<string, Node>();
const buf = (name: string): Node => {
  if (!buffers.has(name)) {
    const id = 1000 + buffers.size;
    buffers.set(
      name,
      { kind: "input", name, axes: ["i"], shape: [4], dtype: "f32", id } as InputNode,
    );
  }
  return buffers.get(name)!;
};

/** A kernel of `kind` reading and writing the named buffers; WGSL of the real shape. */
function kernel(name: string, kind: KernelArtifact["kind"], reads: string, writes: string) {
  const r = [...reads], w = [...writes];
  const decls = [
    ...r.map((_, i) => `@group(0) @binding(${i}) var<storage, read> b${i}: array<f32>;`),
    ...w.map((_, i) =>
      `@group(0) @binding(${r.length + i}) var<storage, read_write> out${i || ""}: array<f32>;`
    ),
  ];
  const body = kind === "elementwise"
    ? `  let i = wid.x * 64u + lid;\n  if (i >= 4u) { return; }\n  out[i] = b0[i] + 1.0;`
    : `  if (wid.x > 0u) { return; }\n  workgroupBarrier();\n  out[lid % 4u] = b0[0];`;
  const wgsl = `${decls.join("\n")}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${body}
}
`;
  return {
    name,
    wgsl,
    workgroups: [1, 1, 1],
    reads: r.map(buf),
    writes: w.map(buf),
    kind,
  } as KernelArtifact;
}

Deno.test("ride-along: a rider never passes a kernel that depends on it or that it depends on", () => {
  const merged = (ks: KernelArtifact[], aliases = new Map<Node, Node>()) =>
    mergeRiders(ks, aliases, 16, 65535).map((k) => k.name);
  // Independent: the map rides in the next matmul's dispatch.
  assert.deepEqual(
    merged([kernel("e", "elementwise", "a", "b"), kernel("m", "matmul", "c", "d")]),
    [
      "m+e",
    ],
  );
  // The next kernel reads the map's output: no merge.
  assert.deepEqual(
    merged([kernel("e", "elementwise", "a", "b"), kernel("m", "matmul", "b", "d")]),
    ["e", "m"],
  );
  // A kernel in between overwrites the map's input (write after read): it stays in place.
  assert.deepEqual(
    merged([
      kernel("e", "elementwise", "a", "b"),
      kernel("x", "elementwise", "c", "a"),
      kernel("m", "matmul", "c", "d"),
    ]),
    ["e", "m+x"],
  );
  // Through an in-place alias: "p" (an input) shares "q"'s buffer, which the host writes.
  assert.deepEqual(
    merged(
      [kernel("e", "elementwise", "p", "b"), kernel("m", "matmul", "c", "q")],
      new Map([[buf("p"), buf("q")]]),
    ),
    ["e", "m"],
  );
  // Beyond the binding limit: no merge.
  assert.deepEqual(
    mergeRiders(
      [kernel("e", "elementwise", "ab", "c"), kernel("m", "matmul", "de", "f")],
      new Map(),
      5,
      65535,
    ).map((k) => k.name),
    ["e", "m"],
  );
});

Deno.test("ride-along: the merged module renumbers bindings as reads, then writes", () => {
  const m = mergeRider(
    kernel("m", "matmul", "cd", "e"),
    kernel("r", "elementwise", "a", "b"),
    65535,
  )!;
  assert.deepEqual(m.reads.map((k) => (k as InputNode).name), ["c", "d", "a"]);
  assert.deepEqual(m.writes.map((k) => (k as InputNode).name), ["e", "b"]);
  const decl = (name: string) =>
    new RegExp(`@binding\\((\\d+)\\) var<[^>]*> ${name}:`).exec(m.wgsl)?.[1];
  assert.deepEqual(["b0", "b1", "ride_b0", "out", "ride_out"].map(decl), ["0", "1", "2", "3", "4"]);
  // Workgroups past the host's one run the rider's threads.
  assert.match(m.wgsl, /if \(mw >= 1u\)/);
  assert.deepEqual(m.workgroups, [2, 1, 1]);
});

// Views as affine maps into their buffer (codegen/affine_view.ts), checked element by element
// against the float64 interpreter's reading of the same view.
import assert from "node:assert/strict";
import { affineView } from "../codegen/affine_view.ts";
import type { Node } from "../dsl/ir.ts";
import { trace } from "../dsl/trace.ts";
import { rearrange, slice, transpose } from "../dsl/views.ts";
import { compile } from "../runtime/compile.ts";

const isInput = (n: Node) => n.kind === "input";

/** Every element of `view` (axes in its own order) read at offset + Σ stride·index of `P`. */
function elements(node: Node, map: { offset: number; strides: Record<string, number> }) {
  const out: number[] = [];
  const walk = (d: number, at: number) => {
    if (d === node.axes.length) return void out.push(at);
    for (let i = 0; i < node.shape[d]; i++) walk(d + 1, at + i * map.strides[node.axes[d]]);
  };
  walk(0, map.offset);
  return out;
}

Deno.test("affineView: slices, regroups and permutes map to the buffer's elements", async () => {
  const sizes = { a: 3, c: 20 };
  const views = {
    sliced: (P: never) => slice(P, "c", 4, 16, "n"),
    split: (P: never) => rearrange(slice(P, "c", 4, 16, "m"), "a (g n) -> a g n", { g: 2 }),
    permuted: (P: never) => transpose(slice(P, "c", 5, 9, "n"), "n a"),
  };
  for (const [name, view] of Object.entries(views)) {
    // The buffer holds its own flat index: a view's values are the offsets it reads.
    const prog = await compile({ P: "a c" }, (t) => view(t.P as never), sizes, { backend: "cpu" });
    const flat = Float32Array.from({ length: 60 }, (_, i) => i);
    const expected = Array.from(prog.interpret({ P: flat }) as unknown as ArrayLike<number>);
    const graph = trace({ P: "a c" } as never, (t) => view((t as { P: never }).P), sizes);
    const out = graph.outputs.out;
    const map = affineView(out, isInput);
    assert.ok(map, name);
    assert.deepEqual(elements(out, map), expected, name);
    prog.destroy();
  }
});

Deno.test("affineView: a regroup merging axes that are not adjacent in the buffer has no map", () => {
  const graph = trace(
    { P: "a c" } as never,
    (t) => rearrange(slice((t as { P: never }).P, "c", 0, 4, "n"), "a n -> m=(a n)"),
    { a: 3, c: 20 },
  );
  assert.equal(affineView(graph.outputs.out, isInput), undefined);
});

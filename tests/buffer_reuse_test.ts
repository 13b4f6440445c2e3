// Buffer reuse (runtime/buffer_reuse.ts): keys alive at the same kernel never share a slot, on
// random kernel sequences; slots are reused once a key's last reader has run; the size rules;
// and a compiled chain of kernels on the adapter gives the interpreter's result with fewer
// buffers than tensors.
import assert from "node:assert/strict";
import { storageBytes } from "../codegen/dtypes.ts";
import { exp, mul, sub } from "../dsl/elementwise.ts";
import { einsum } from "../dsl/einsum.ts";
import { sum } from "../dsl/reduce.ts";
import { compile } from "../runtime/compile.ts";
import { type BindingUse, planBufferReuse } from "../runtime/buffer_reuse.ts";
import { assertClose, freshSeed, rng } from "./util.ts";

Deno.test("planBufferReuse: live keys never share a slot (random kernel sequences)", () => {
  const seed = freshSeed();
  const next = rng(seed);
  for (let trial = 0; trial < 200; trial++) {
    const keyCount = 2 + Math.floor(next() * 30);
    const sizes = Array.from({ length: keyCount }, () => 16 * (1 + Math.floor(next() * 8)));
    const kernels: BindingUse<number>[] = Array.from(
      { length: 1 + Math.floor(next() * 20) },
      () => {
        const pick = () => Math.floor(next() * keyCount);
        return { reads: [pick(), pick()], writes: [pick()] };
      },
    );
    const reusable = new Set(
      Array.from({ length: keyCount }, (_, i) => i).filter(() => next() < 0.8),
    );
    const plan = planBufferReuse(kernels, reusable, (k) => sizes[k], 1 << 20);
    const first = new Map<number, number>(), last = new Map<number, number>();
    kernels.forEach((k, i) => {
      for (const key of [...k.reads, ...k.writes]) {
        if (!first.has(key)) first.set(key, i);
        last.set(key, i);
      }
    });
    for (const [key, slot] of plan.slotOf) {
      assert.ok(reusable.has(key), `key ${key} is not reusable (seed ${seed})`);
      assert.ok(plan.slotBytes[slot] >= sizes[key], `slot too small (seed ${seed})`);
      assert.ok(plan.slotBytes[slot] <= 2 * sizes[key], `slot over twice the key (seed ${seed})`);
      for (const [other, otherSlot] of plan.slotOf) {
        if (other === key || otherSlot !== slot) continue;
        const overlap = first.get(key)! <= last.get(other)! && first.get(other)! <= last.get(key)!;
        assert.ok(!overlap, `keys ${key} and ${other} overlap in slot ${slot} (seed ${seed})`);
      }
    }
    for (const key of reusable) {
      assert.equal(plan.slotOf.has(key), first.has(key), `key ${key} (seed ${seed})`);
    }
  }
});

Deno.test("planBufferReuse: a chain reuses two slots; size and binding limits are kept", () => {
  // k0: a → b, k1: b → c, k2: c → d, k3: d → e (a and e are not reusable).
  const chain: BindingUse<string>[] = ["ab", "bc", "cd", "de"].map((p) => ({
    reads: [p[0]],
    writes: [p[1]],
  }));
  const plan = planBufferReuse(chain, new Set(["b", "c", "d"]), () => 64, 1 << 20);
  assert.deepEqual(plan.slotBytes, [64, 64]);
  assert.equal(plan.slotOf.get("b"), plan.slotOf.get("d"));
  assert.notEqual(plan.slotOf.get("b"), plan.slotOf.get("c"));
  // A key of a third of a free slot's size gets its own slot; a slot over the binding limit is
  // not taken by a smaller key.
  const sizes: Record<string, number> = { b: 96, c: 64, d: 32 };
  const small = planBufferReuse(chain, new Set(["b", "c", "d"]), (k) => sizes[k], 1 << 20);
  assert.equal(small.slotBytes.length, 3);
  const capped = planBufferReuse(
    chain,
    new Set(["b", "c", "d"]),
    (k) => ({ b: 96, c: 64, d: 80 })[k]!,
    90,
  );
  assert.notEqual(capped.slotOf.get("d"), capped.slotOf.get("b"));
});

Deno.test("buffer reuse on the adapter: a chain of kernels matches the interpreter", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const sizes = { a: 13, b: 17, c: 11, d: 9 };
  // Matmuls and reductions keep kernels apart, so several intermediates die along the way.
  const prog = await compile(
    { x: "a b", W: "b c", V: "c d", U: "d b" },
    (t) => {
      const h1 = exp(mul(einsum("a b, b c -> a c", t.x, t.W), 0.1));
      const h2 = sub(einsum("a c, c d -> a d", h1, t.V), sum(h1, "c"));
      const h3 = einsum("a d, d b -> a b", h2, t.U);
      const h4 = einsum("a b, b c -> a c", mul(h3, t.x), t.W);
      return { y: einsum("a c, c d -> a d", h4, t.V), z: sum(h3, "b") };
    },
    sizes,
    { backend: "gpu" },
  );
  try {
    const data = {
      x: Float32Array.from({ length: 13 * 17 }, () => next() - 0.5),
      W: Float32Array.from({ length: 17 * 11 }, () => next() - 0.5),
      V: Float32Array.from({ length: 11 * 9 }, () => next() - 0.5),
      U: Float32Array.from({ length: 9 * 17 }, () => next() - 0.5),
    };
    // Fewer bytes than one buffer per tensor the kernels bind.
    const perTensor = new Set(prog.kernels.flatMap((k) => [...k.reads, ...k.writes]));
    const unshared = [...perTensor].reduce((s, k) => s + Math.max(16, storageBytes(k)), 0);
    assert.ok(prog.bufferBytes < unshared, `${prog.bufferBytes} bytes, unshared ${unshared}`);
    for (let run = 0; run < 2; run++) {
      const got = await prog.run(data) as Record<string, Float32Array>;
      const want = prog.interpret(data) as Record<string, Float64Array>;
      assertClose(got.y, want.y, 1e-4, `y, run ${run} (seed ${seed})`);
      assertClose(got.z, want.z, 1e-4, `z, run ${run} (seed ${seed})`);
    }
  } finally {
    prog.destroy();
  }
});

// attention reproduces torch's scaled_dot_product_attention (GQA with enable_gqa, causal, a
// cache with the diagonal at the end, a sliding window, dv ≠ dk) and its autograd gradients:
// fixtures made by tests/oracle/attention.py (float64 on the CPU). Each case is ignored (and
// says how to make it) until its fixture exists.
import { attention } from "../dsl/attention.ts";
import { valueAndGrad } from "../dsl/autodiff.ts";
import { mul } from "../dsl/elementwise.ts";
import { sum } from "../dsl/reduce.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { decodeNpy } from "../models/checkpoint/npy.ts";
import { compile } from "../runtime/compile.ts";
import { assertClose } from "./util.ts";

const MAKE = "python3 tests/oracle/attention.py tests/fixtures/attention";

function hasFixture(name: string): boolean {
  try {
    return Deno.statSync(new URL(`./fixtures/attention/${name}/config.json`, import.meta.url))
      .isFile;
  } catch {
    return false;
  }
}

for (const name of ["prefill", "cache", "window", "values"]) {
  const label = hasFixture(name) ? "" : ` (fixture missing: ${MAKE})`;
  Deno.test({
    name: `attention matches torch's scaled_dot_product_attention (${name})${label}`,
    ignore: label !== "",
  }, async () => {
    const dir = new URL(`./fixtures/attention/${name}/`, import.meta.url);
    const config = JSON.parse(await Deno.readTextFile(new URL("config.json", dir)));
    const load = async (file: string) =>
      decodeNpy(await Deno.readFile(new URL(`${file}.npy`, dir))).data as Float32Array;
    const { B, G, R, T, S, D, E, causal, window, scale } = config;
    // torch's [B, Hq, T, D] with h = g·R + r is our "b g r t d", row-major alike.
    const spec = { q: "b g r t d", k: "b g s d", v: "b g s e", w: "b g r t e" } as const;
    const opts = { causal, window: window ?? undefined, scale: scale ?? undefined };
    const prog = await compile(
      spec,
      (x) => {
        const f = valueAndGrad((p: Record<"q" | "k" | "v", Tensor>) =>
          sum(mul(attention(p.q, p.k, p.v, opts), x.w), "b g r t e")
        );
        const [, g] = f({ q: x.q, k: x.k, v: x.v });
        return { o: attention(x.q, x.k, x.v, opts), dq: g.q, dk: g.k, dv: g.v };
      },
      { b: B, g: G, r: R, t: T, s: S, d: D, e: E },
      { backend: "gpu" },
    );
    try {
      const got = await prog.run({
        q: await load("q"),
        k: await load("k"),
        v: await load("v"),
        w: await load("w"),
      });
      for (const key of ["o", "dq", "dk", "dv"] as const) {
        assertClose(got[key], await load(key), 1e-4, `${name} ${key} (torch ${config.torch})`);
      }
    } finally {
      prog.destroy();
    }
  });
}

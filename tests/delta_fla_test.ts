// deltaRule reproduces flash-linear-attention's torch reference of the (gated) delta rule:
// fixtures made by tests/oracle/gated_delta.py (FLA's naive_recurrent_gated_delta_rule, B=2,
// T=37, H=3, K=8, V=6), with both the recurrent and the chunked lowering forced.
import { deltaRule } from "../dsl/delta.ts";
import { decodeNpy } from "../models/checkpoint/npy.ts";
import { compile } from "../runtime/compile.ts";
import { assertClose } from "./util.ts";

const MAKE = "PYTHONPATH=.peer python3 tests/oracle/gated_delta.py tests/fixtures/gated_delta";

/** FLA's state [B H K V] → ours [B H V K]. */
function transposeState(x: Float32Array, bh: number, k: number, v: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let n = 0; n < bh; n++) {
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < v; j++) out[(n * v + j) * k + i] = x[(n * k + i) * v + j];
    }
  }
  return out;
}

/** Whether the fixture of `name` exists (made on a machine with torch and FLA). */
function hasFixture(name: string): boolean {
  try {
    return Deno.statSync(new URL(`./fixtures/gated_delta/${name}/config.json`, import.meta.url))
      .isFile;
  } catch {
    return false;
  }
}

for (const name of ["gated", "delta"]) {
  // Ignored (reported as such, with the command that makes it) until the fixture exists.
  const label = hasFixture(name) ? "" : ` (fixture missing: ${MAKE})`;
  Deno.test({
    name: `deltaRule matches FLA's naive recurrent reference (${name})${label}`,
    ignore: label !== "",
  }, async () => {
    const dir = new URL(`./fixtures/gated_delta/${name}/`, import.meta.url);
    let config;
    try {
      config = JSON.parse(await Deno.readTextFile(new URL("config.json", dir)));
    } catch {
      throw new Error(
        `fixture missing: ${dir.pathname}config.json; make it on a machine with torch: ${MAKE}`,
      );
    }
    const load = async (file: string) =>
      decodeNpy(await Deno.readFile(new URL(`${file}.npy`, dir))).data as Float32Array;
    const { B, T, H, K, V, scale, gated } = config;
    const inputs = {
      q: await load("q"),
      k: await load("k"),
      v: await load("v"),
      beta: await load("beta"),
      g: await load("g"),
      h0: transposeState(await load("h0"), B * H, K, V),
    };
    const wantO = await load("o");
    const wantState = transposeState(await load("hT"), B * H, K, V);
    for (const mode of ["recurrent", "chunked"] as const) {
      const prog = await compile(
        { q: "b t h dk", k: "b t h dk", v: "b t h dv", beta: "b t h", g: "b t h", h0: "b h dv dk" },
        (x) =>
          deltaRule(
            { q: x.q, k: x.k, v: x.v, beta: x.beta, gate: gated ? x.g : undefined },
            { time: "t", key: "dk", value: "dv", init: x.h0, scale },
          ),
        { b: B, t: T, h: H, dk: K, dv: V },
        { backend: "gpu", scan: { mode, chunks: 3 } },
      );
      try {
        const got = await prog.run(inputs);
        assertClose(got.y, wantO, 1e-4, `${name} ${mode}: y`);
        assertClose(got.state, wantState, 1e-4, `${name} ${mode}: final state`);
      } finally {
        prog.destroy();
      }
    }
  });
}

// The linear-attention layers of models/layers/ reproduce flash-linear-attention's torch
// references: fixtures made by tests/oracle/layers.py (FLA's naive retention, recurrent simple
// GLA, GLA, HGRN2's gates + GLA, gated delta rule; B=2, T=37, H=3, K=7, V=10). Each case is
// ignored (and says how to make it) until its fixture exists.
import { decodeNpy } from "../models/checkpoint/npy.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { gatedDeltaNet } from "../models/layers/gated_deltanet.ts";
import { gla } from "../models/layers/gla.ts";
import { hgrn2 } from "../models/layers/hgrn2.ts";
import { mamba3Siso } from "../models/layers/mamba3.ts";
import { retention, simpleGla } from "../models/layers/retnet.ts";
import { compile } from "../runtime/compile.ts";
import { assertClose } from "./util.ts";

const MAKE = "PYTHONPATH=.peer python3 tests/oracle/layers.py tests/fixtures/layers";

/** [n, a, b] → [n, b, a]: FLA's state [B H K V] ↔ ours [B H V K] (Gated DeltaNet). */
function transposeLast(x: Float32Array, n: number, a: number, b: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < n; i++) {
    for (let r = 0; r < a; r++) {
      for (let c = 0; c < b; c++) out[(i * b + c) * a + r] = x[(i * a + r) * b + c];
    }
  }
  return out;
}

type T = Record<string, Tensor>;
/** Per case: the inputs' axes and the layer, returning o and the final state (FLA's layout). */
const CASES: Record<
  string,
  { spec: Record<string, string>; fn: (x: T, scale: number) => { o: Tensor; state: Tensor } }
> = {
  retention: {
    spec: { q: "b t h k", k: "b t h k", v: "b t h v" },
    fn: (x) => retention(x.q, x.k, x.v),
  },
  simple_gla: {
    spec: { q: "b t h k", k: "b t h k", v: "b t h v", g: "b t h", h0: "b h k v" },
    fn: (x, scale) => simpleGla(x.q, x.k, x.v, x.g, { init: x.h0, scale }),
  },
  gla: {
    spec: { q: "b t h k", k: "b t h k", v: "b t h v", gk: "b t h k", h0: "b h k v" },
    fn: (x) => gla(x.q, x.k, x.v, x.gk, { init: x.h0 }),
  },
  hgrn2: {
    spec: { q: "b t h k", f: "b t h k", i: "b t h v", lb: "h k", h0: "b h k v" },
    fn: (x) => hgrn2(x.q, x.f, x.i, { init: x.h0, lowerBound: x.lb }),
  },
  gated_deltanet: {
    spec: { q: "b t h k", k: "b t h k", v: "b t h v", beta: "b t h", g: "b t h", h0: "b h v k" },
    fn: (x, scale) =>
      gatedDeltaNet({ q: x.q, k: x.k, v: x.v, beta: x.beta, g: x.g }, { init: x.h0, scale }),
  },
};

function hasFixture(name: string): boolean {
  try {
    return Deno.statSync(new URL(`./fixtures/layers/${name}/config.json`, import.meta.url)).isFile;
  } catch {
    return false;
  }
}

for (const [name, c] of Object.entries(CASES)) {
  const label = hasFixture(name) ? "" : ` (fixture missing: ${MAKE})`;
  Deno.test({
    name: `layers: ${name} matches FLA's torch reference${label}`,
    ignore: label !== "",
  }, async () => {
    const dir = new URL(`./fixtures/layers/${name}/`, import.meta.url);
    const config = JSON.parse(await Deno.readTextFile(new URL("config.json", dir)));
    const load = async (file: string) =>
      decodeNpy(await Deno.readFile(new URL(`${file}.npy`, dir))).data as Float32Array;
    const { B, T: len, H, K, V, scale } = config;
    const delta = name === "gated_deltanet";
    const data: Record<string, Float32Array> = {};
    for (const input of Object.keys(c.spec)) data[input] = await load(input);
    if (delta) data.h0 = transposeLast(data.h0, B * H, K, V);
    const wantState = await load("hT");
    const prog = await compile(c.spec, (x) => c.fn(x, scale), { b: B, t: len, h: H, k: K, v: V }, {
      backend: "gpu",
    });
    try {
      const got = await prog.run(data) as Record<string, Float32Array>;
      assertClose(got.o, await load("o"), 1e-4, `${name}: o`);
      const state = delta ? transposeLast(got.state, B * H, V, K) : got.state;
      assertClose(state, wantState, 1e-4, `${name}: final state`);
    } finally {
      prog.destroy();
    }
  });
}

const M3_SPEC = {
  x: "b t h p",
  z: "b t h p",
  B: "b t n",
  C: "b t n",
  dt: "b t h",
  a: "b t h",
  trap: "b t h",
  theta: "b t m",
  dtBias: "h",
  D: "h",
  normB: "n",
  normC: "n",
  biasB: "h n",
  biasC: "h n",
  ssm0: "b h p n",
  angle0: "b h m",
  x0: "b h p",
  B0: "b h n",
} as const;

{
  const label = hasFixture("mamba3") ? "" : ` (fixture missing: ${MAKE}, on a CUDA machine)`;
  Deno.test({
    name: `layers: mamba3 SISO matches mamba_ssm's mamba3_siso_combined${label}`,
    ignore: label !== "",
  }, async () => {
    const dir = new URL("./fixtures/layers/mamba3/", import.meta.url);
    const config = JSON.parse(await Deno.readTextFile(new URL("config.json", dir)));
    const load = async (file: string) =>
      decodeNpy(await Deno.readFile(new URL(`${file}.npy`, dir))).data as Float32Array;
    const data: Record<string, Float32Array> = {};
    for (const input of Object.keys(M3_SPEC)) data[input] = await load(input);
    const { B, T: len, H, P, N, M, tolerance } = config;
    const prog = await compile(
      M3_SPEC,
      (x) => {
        const init = { ssm: x.ssm0, angle: x.angle0, x: x.x0, B: x.B0 };
        const { y, state } = mamba3Siso(x, x, init);
        return { y, ssmT: state.ssm, angleT: state.angle, xT: state.x, BT: state.B };
      },
      { b: B, t: len, h: H, p: P, n: N, m: M },
      { backend: "gpu" },
    );
    try {
      const got = await prog.run(data) as Record<string, Float32Array>;
      for (const name of ["y", "ssmT", "angleT", "xT", "BT"]) {
        assertClose(got[name], await load(name), tolerance, `mamba3: ${name}`);
      }
    } finally {
      prog.destroy();
    }
  });
}

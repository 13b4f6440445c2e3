// The Mamba-1 mixer written in the DSL reproduces HF transformers' MambaMixer (torch path):
// fixtures made by tests/oracle/mamba_mixer.py (random weights, b=2, l=37).
import assert from "node:assert/strict";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import { decodeNpy } from "../models/checkpoint/npy.ts";
import {
  MAMBA_MIXER_PARAMS,
  mambaMixer,
  type MambaMixerDims,
  type MambaMixerParams,
  mambaMixerSizes,
} from "../models/mamba_mixer.ts";
import { compile } from "../runtime/compile.ts";
import { assertClose } from "./util.ts";

const dir = new URL("./fixtures/mamba_mixer/", import.meta.url);
const config = JSON.parse(await Deno.readTextFile(new URL("config.json", dir)));
const load = async (name: string) =>
  decodeNpy(await Deno.readFile(new URL(`${name}.npy`, dir))).data as Float32Array;

const FILES: Record<keyof MambaMixerParams, string> = {
  in_proj: "in_proj_weight",
  conv_w: "conv1d_weight",
  conv_b: "conv1d_bias",
  x_proj: "x_proj_weight",
  dt_proj_w: "dt_proj_weight",
  dt_proj_b: "dt_proj_bias",
  A_log: "A_log",
  D: "D",
  out_proj: "out_proj_weight",
};

Deno.test("Mamba-1 mixer matches HF transformers' torch path (GPU and CPU oracle)", async () => {
  const dims: MambaMixerDims = config;
  const sizes = { ...mambaMixerSizes(dims), b: config.batch, l: config.length };
  const inputs: Record<string, Float32Array> = { hs: await load("hidden") };
  for (const [k, f] of Object.entries(FILES)) inputs[k] = await load(f);
  const want = await load("out");
  // The lane kernel (default, chunked, one lane) and the workgroup-tiled one.
  const strategies: ScanStrategy[] = [
    {},
    { chunks: 5 },
    { lanes: 1 },
    { tileSteps: 16 },
    { tileSteps: 8, workgroup: 32 },
  ];
  for (const scan of strategies) {
    const prog = await compile(
      { hs: "b l m", ...MAMBA_MIXER_PARAMS },
      (t) => mambaMixer(t.hs, t, dims).out,
      sizes,
      { backend: "gpu", scan },
    );
    assertClose(await prog.run(inputs), want, 1e-4, `GPU mixer, scan ${JSON.stringify(scan)}`);
    const tiled = prog.kernels.some((k) => k.wgsl.includes(", tiled: "));
    assert.equal(tiled, scan.tileSteps !== undefined, `tiled kernel for ${JSON.stringify(scan)}`);
    prog.destroy();
  }
  const cpu = await compile(
    { hs: "b l m", ...MAMBA_MIXER_PARAMS },
    (t) => mambaMixer(t.hs, t, dims).out,
    sizes,
    { backend: "cpu" },
  );
  assertClose(await cpu.run(inputs), want, 1e-5, "CPU interpreter mixer");
});

// The Mamba-2 mixer written in the DSL reproduces HF transformers' Mamba2Mixer (torch path):
// fixtures made by tests/oracle/mamba2_mixer.py (random weights, b=2, l=37, groups 1 and 2),
// with the scan lowered both ways (chunked SSD and recurrent).
import { decodeNpy } from "../models/checkpoint/npy.ts";
import {
  MAMBA2_MIXER_PARAMS,
  mamba2Mixer,
  type Mamba2MixerDims,
  mamba2MixerSizes,
} from "../models/mamba2_mixer.ts";
import { compile } from "../runtime/compile.ts";
import { assertClose } from "./util.ts";

for (const groups of [1, 2]) {
  Deno.test(`Mamba-2 mixer (${groups} group(s)) matches HF transformers' torch path`, async () => {
    const dir = new URL(`./fixtures/mamba2_mixer/g${groups}/`, import.meta.url);
    const config = JSON.parse(await Deno.readTextFile(new URL("config.json", dir)));
    const load = async (name: string) =>
      decodeNpy(await Deno.readFile(new URL(`${name}.npy`, dir))).data as Float32Array;
    const dims: Mamba2MixerDims = config;
    const sizes = { ...mamba2MixerSizes(dims), b: config.batch, l: config.length };
    const inputs: Record<string, Float32Array> = { hs: await load("hidden") };
    for (const name of Object.keys(MAMBA2_MIXER_PARAMS)) {
      inputs[name] = await load(name.replace(".", "_"));
    }
    const want = await load("out");
    // Chunk lengths 16 (HF's) and 8 (5 chunks, the last partial); the recurrent kernel.
    for (
      const scan of [{ mode: "chunked" as const }, { mode: "chunked" as const, chunks: 5 }, {
        mode: "recurrent" as const,
      }]
    ) {
      const prog = await compile(
        { hs: "b l m", ...MAMBA2_MIXER_PARAMS },
        (t) => mamba2Mixer(t.hs, t, dims).out,
        sizes,
        { backend: "gpu", scan },
      );
      assertClose(await prog.run(inputs), want, 1e-4, `GPU mixer, scan ${JSON.stringify(scan)}`);
      prog.destroy();
    }
    const cpu = await compile(
      { hs: "b l m", ...MAMBA2_MIXER_PARAMS },
      (t) => mamba2Mixer(t.hs, t, dims).out,
      sizes,
      { backend: "cpu" },
    );
    assertClose(await cpu.run(inputs), want, 1e-5, "CPU interpreter mixer");
  });
}

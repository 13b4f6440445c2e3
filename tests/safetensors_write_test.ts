// The safetensors writer (models/checkpoint/safetensors_write.ts): files written by Hugging
// Face's safetensors (the fixtures, from save_pretrained and save_file) rewritten byte for byte;
// random tensors of awkward shapes and special values read back bit-exactly by the reader;
// atomic replacement; one-line errors that leave nothing behind.
import assert from "node:assert/strict";
import { Checkpoint } from "../models/checkpoint/checkpoint.ts";
import { readSafetensorsHeader } from "../models/checkpoint/header.ts";
import {
  type F32Tensor,
  type RawTensor,
  safetensorsBytes,
  writeRawSafetensors,
  writeSafetensors,
} from "../models/checkpoint/safetensors_write.ts";
import { withTempDir } from "./safetensors_writer.ts";
import { freshSeed, rng } from "./util.ts";

/** Every tensor of a safetensors file as raw bytes, with its metadata. */
async function readRaw(path: string) {
  const h = await readSafetensorsHeader(path);
  const file = await Deno.readFile(path);
  const tensors: RawTensor[] = [...h.tensors.values()].map((t) => ({
    name: t.name,
    dtype: t.dtype,
    shape: t.shape,
    bytes: file.subarray(t.byteOffset, t.byteOffset + t.byteLength),
  }));
  return { tensors, metadata: h.metadata, file };
}

Deno.test("writeSafetensors reproduces files written by Hugging Face's safetensors exactly", async () => {
  const sources = [
    "tests/fixtures/models/mamba_tied_n8/model.safetensors", // save_pretrained, F32
    "tests/fixtures/models/mamba_bf16/model.safetensors", // save_pretrained, BF16
    // The induction checkpoint models/induction/train.py made before ssmkit trained its own.
    "tests/fixtures/induction_torch/model.safetensors", // safetensors.torch.save_file, F32
  ];
  await withTempDir(async (dir) => {
    for (const source of sources) {
      const { tensors, metadata, file } = await readRaw(source);
      const out = `${dir}/model.safetensors`;
      if (tensors.every((t) => t.dtype === "F32")) {
        // Through the float32 API: values as the reader returns them.
        using ckpt = await Checkpoint.open(source.slice(0, source.lastIndexOf("/")));
        const f32: Record<string, F32Tensor> = {};
        for (const t of tensors) f32[t.name] = { data: await ckpt.getF32(t.name), shape: t.shape };
        await writeSafetensors(out, f32, { metadata });
      } else {
        await writeRawSafetensors(out, tensors, { metadata });
      }
      const written = await Deno.readFile(out);
      assert.equal(written.length, file.length, `${source}: file length`);
      assert.ok(written.every((b, i) => b === file[i]), `${source}: identical bytes`);
    }
  });
});

Deno.test("writeSafetensors: random tensors read back bit-exactly, header sorted and aligned", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const shapes: Record<string, number[]> = {
    "layers.10.w": [3, 7, 5],
    "layers.2.w": [1],
    "a.scalar": [],
    "empty": [0, 4],
    "zz.bias": [13],
    "ünïcode.名前": [2, 3],
  };
  const tensors: Record<string, F32Tensor> = {};
  for (const [name, shape] of Object.entries(shapes)) {
    const n = shape.reduce((p, s) => p * s, 1);
    const data = Float32Array.from({ length: n }, () => (next() - 0.5) * 10 ** (next() * 60 - 30));
    tensors[name] = { data, shape };
  }
  // Special values, bit patterns included: −0, ±∞, a subnormal, a NaN with a payload.
  const special = new Float32Array(7);
  new Uint32Array(special.buffer).set([
    0x80000000,
    0x7f800000,
    0xff800000,
    0x00000001,
    0x7fc01234,
    0x3f800000,
    0x7f7fffff,
  ]);
  tensors["special"] = { data: special, shape: [7] };
  await withTempDir(async (dir) => {
    const path = `${dir}/model.safetensors`;
    await writeSafetensors(path, tensors, { metadata: { format: "pt", step: "12" } });
    const file = await Deno.readFile(path);
    const headerLength = Number(new DataView(file.buffer).getBigUint64(0, true));
    assert.equal(headerLength % 8, 0, "the data section starts 8-byte aligned");
    const json = new TextDecoder().decode(file.subarray(8, 8 + headerLength));
    assert.match(json, /^\{"__metadata__":\{"format":"pt","step":"12"\},/);
    const keys = Object.keys(JSON.parse(json)).slice(1);
    // By UTF-8 bytes: these names' UTF-16 order is the same.
    assert.deepEqual(keys, Object.keys(tensors).sort(), "tensors in name order");
    const h = await readSafetensorsHeader(path);
    assert.deepEqual(h.metadata, { format: "pt", step: "12" });
    using ckpt = await Checkpoint.open(dir);
    for (const [name, t] of Object.entries(tensors)) {
      const info = h.tensors.get(name)!;
      assert.deepEqual(info.shape, t.shape);
      assert.equal((info.byteOffset - h.dataStart) % 4, 0, `${name} aligned`);
      const got = await ckpt.getF32(name, t.shape);
      assert.deepEqual(
        new Uint32Array(got.buffer, got.byteOffset, got.length),
        new Uint32Array(t.data.buffer),
        `${name} bit-exact (seed ${seed})`,
      );
    }
  });
});

Deno.test("safetensorsBytes: the reference writer's layout for mixed dtypes", () => {
  const raw = (name: string, dtype: string, n: number, size: number): RawTensor => ({
    name,
    dtype,
    shape: [n],
    bytes: new Uint8Array(n * size).fill(name.charCodeAt(0)),
  });
  // Larger dtypes first (BF16 before F16: the reference enum's order), then names by UTF-8
  // bytes: "\u{1F600}" (4 bytes, F0…) sorts after "\uFFFD" (EF BF BD), unlike UTF-16 order.
  const bytes = safetensorsBytes([
    raw("h", "F16", 3, 2),
    raw("\u{1F600}", "F32", 1, 4),
    raw("b", "BF16", 1, 2),
    raw("\uFFFD", "F32", 2, 4),
    raw("u", "U8", 5, 1),
    raw("d", "F64", 1, 8),
  ]);
  const length = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const json = new TextDecoder().decode(bytes.subarray(8, 8 + length));
  const order = Object.entries(JSON.parse(json) as Record<string, { data_offsets: number[] }>)
    .map(([name, t]) => `${name}@${t.data_offsets.join("-")}`);
  assert.deepEqual(order, [
    "d@0-8",
    "\uFFFD@8-16",
    "\u{1F600}@16-20",
    "b@20-22",
    "h@22-28",
    "u@28-33",
  ]);
  assert.equal(length % 8, 0);
  assert.equal(bytes.length, 8 + length + 33);
  // The reference writer's own test vector for a lone F32 tensor: a 72-byte header whose last
  // 7 bytes are spaces.
  const one = safetensorsBytes([{
    name: "attn0",
    dtype: "F32",
    shape: [1, 1, 2, 3],
    bytes: new Uint8Array(24),
  }]);
  const text = '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}' + " ".repeat(7);
  assert.equal(new DataView(one.buffer).getBigUint64(0, true), 72n);
  assert.equal(new TextDecoder().decode(one.subarray(8, 80)), text);
});

Deno.test("writeSafetensors replaces a file atomically and leaves nothing on failure", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/model.safetensors`;
    await writeSafetensors(path, { w: { data: Float32Array.of(1, 2), shape: [2] } });
    const before = await Deno.readFile(path);
    await writeSafetensors(path, { w: { data: Float32Array.of(3, 4, 5), shape: [3] } });
    {
      using ckpt = await Checkpoint.open(dir);
      assert.deepEqual([...await ckpt.getF32("w")], [3, 4, 5]);
    }
    // Invalid input: an error before any file is created; the previous file is intact.
    await writeSafetensors(path, { w: { data: Float32Array.of(1, 2), shape: [2] } });
    const intact = await Deno.readFile(path);
    assert.deepEqual(intact, before);
    const oneLine = (re: RegExp) => (e: Error) => re.test(e.message) && !e.message.includes("\n");
    await assert.rejects(
      writeSafetensors(path, { w: { data: Float32Array.of(1, 2, 3), shape: [2, 2] } }),
      oneLine(/tensor "w" has shape \[2, 2\] \(4 values\) but 3 values/),
    );
    await assert.rejects(
      writeSafetensors(path, { __metadata__: { data: Float32Array.of(1), shape: [1] } }),
      oneLine(/invalid tensor name "__metadata__"/),
    );
    await assert.rejects(
      writeSafetensors(path, { w: { data: [1, 2] as unknown as Float32Array, shape: [2] } }),
      oneLine(/tensor "w": data must be a Float32Array/),
    );
    await assert.rejects(
      writeSafetensors(path, { w: { data: Float32Array.of(1), shape: [1.5] } }),
      oneLine(/tensor "w": invalid shape \[1.5\]/),
    );
    await assert.rejects(
      writeRawSafetensors(path, [{
        name: "w",
        dtype: "F31",
        shape: [1],
        bytes: new Uint8Array(4),
      }]),
      oneLine(/tensor "w": unknown dtype F31/),
    );
    assert.deepEqual(await Deno.readFile(path), before);
    // A failure while writing (the directory does not exist): a one-line error naming the path.
    await assert.rejects(
      writeSafetensors(`${dir}/missing/model.safetensors`, {
        w: { data: Float32Array.of(1), shape: [1] },
      }),
      oneLine(/missing\/model\.safetensors: writing the safetensors file failed/),
    );
    const left = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.deepEqual(left, ["model.safetensors"], "no temporary file left behind");
  });
});

// Checkpoint I/O: safetensors headers and tensor reads (single and sharded, F32/F16/BF16),
// config.json with non-JSON floats, .npy encode/decode (byte-exact against NumPy-written
// fixtures), the progress bar, and the tokenizer wrapper.
import assert from "node:assert/strict";
import {
  bfloat16ToNumber,
  Checkpoint,
  halfToNumber,
  readSafetensorsHeader,
} from "../models/checkpoint/safetensors.ts";
import { halfBitsToFloatBits } from "../models/checkpoint/float16.ts";
import { parseConfigJson, readConfig } from "../models/checkpoint/config.ts";
import { decodeNpy, encodeNpy } from "../models/checkpoint/npy.ts";
import { createProgressBar, formatBytes } from "../models/checkpoint/progress.ts";
import { loadTokenizer } from "../models/checkpoint/tokenizer.ts";
import { freshSeed, rng } from "./util.ts";
import {
  bytesOf,
  rawSafetensors,
  type RawTensor,
  safetensorsBytes,
  withTempDir,
} from "./safetensors_writer.ts";

const FIXTURES = new URL("./fixtures/checkpoint/", import.meta.url).pathname;

function randomShape(next: () => number, dims: number, max: number): number[] {
  return Array.from({ length: dims }, () => 1 + Math.floor(next() * max));
}

function bitsOf(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

// Independent references for the 16-bit formats: the engine's Float16Array, and the bfloat16
// value formula written out arithmetically.
function refHalf(h: number): number {
  return new Float16Array(new Uint16Array([h]).buffer)[0];
}
function refBf16(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 7) & 0xff;
  const mant = h & 0x7f;
  if (exp === 0xff) return mant ? NaN : sign * Infinity;
  if (exp === 0) return sign * mant * 2 ** -133;
  return sign * (1 + mant / 128) * 2 ** (exp - 127);
}

// ---------------------------------------------------------------------------------------------
// 16-bit float conversions.

Deno.test("F16 → F32 matches Float16Array for all 65536 bit patterns, NaN payload kept", () => {
  for (let h = 0; h < 65536; h++) {
    const bits = halfBitsToFloatBits(h);
    const got = new Float32Array(new Uint32Array([bits]).buffer)[0];
    const want = refHalf(h);
    if (Number.isNaN(want)) {
      assert.ok(Number.isNaN(got), `h=${h.toString(16)}`);
      assert.equal(bits >>> 31, h >>> 15, "NaN sign");
      assert.equal(bits & 0x7fffff, (h & 0x3ff) << 13, "NaN payload");
    } else {
      assert.ok(Object.is(got, want), `h=0x${h.toString(16)}: got ${got}, want ${want}`);
    }
  }
  // Hand-checked landmarks: subnormals, the largest finite, signed zero, infinities.
  assert.equal(halfToNumber(0x0001), 2 ** -24);
  assert.equal(halfToNumber(0x03ff), 1023 * 2 ** -24);
  assert.equal(halfToNumber(0x0400), 2 ** -14);
  assert.equal(halfToNumber(0x7bff), 65504);
  assert.equal(halfToNumber(0x3555), 0.333251953125);
  assert.ok(Object.is(halfToNumber(0x8000), -0));
  assert.equal(halfToNumber(0x7c00), Infinity);
  assert.equal(halfToNumber(0xfc00), -Infinity);
  assert.ok(Number.isNaN(halfToNumber(0x7e00)));
});

Deno.test("BF16 → F32 matches the bfloat16 value formula for all 65536 bit patterns", () => {
  for (let h = 0; h < 65536; h++) {
    const got = bfloat16ToNumber(h);
    assert.ok(Object.is(got, refBf16(h)), `h=0x${h.toString(16)}: got ${got}`);
  }
  assert.equal(bfloat16ToNumber(0x0001), 2 ** -133);
  assert.equal(bfloat16ToNumber(0x3f80), 1);
  assert.ok(Object.is(bfloat16ToNumber(0x8000), -0));
});

// ---------------------------------------------------------------------------------------------
// Checkpoint: single file.

Deno.test("Checkpoint reads F32/F16/BF16 tensors of random awkward shapes bit-exactly", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const msg = `seed ${seed}`;
  await withTempDir(async (dir) => {
    const s32 = randomShape(next, 2, 13);
    const f32 = new Float32Array(s32[0] * s32[1]).map(() => (next() - 0.5) * 1e3);
    const s16 = randomShape(next, 3, 5);
    const n16 = s16.reduce((a, b) => a * b, 1);
    const f16 = new Uint16Array(n16).map(() => Math.floor(next() * 65536));
    const sbf = randomShape(next, 1, 40);
    const bf16 = new Uint16Array(sbf[0]).map(() => Math.floor(next() * 65536));
    // Specials: subnormals, ±0, ±inf, NaNs with payloads.
    const f16Special = new Uint16Array([0x0001, 0x8001, 0x03ff, 0x7c00, 0xfc00, 0x7e01, 0x8000]);
    const bfSpecial = new Uint16Array([0x0001, 0x807f, 0x7f80, 0xff80, 0x7fc1, 0x8000, 0x0080]);
    const i64 = new BigInt64Array([1n, -2n, 3n]);
    const tensors: RawTensor[] = [
      { name: "backbone.embeddings.weight", dtype: "F32", shape: s32, bytes: bytesOf(f32) },
      { name: "backbone.layers.0.mixer.A_log", dtype: "F16", shape: s16, bytes: bytesOf(f16) },
      { name: "backbone.layers.0.mixer.D", dtype: "BF16", shape: sbf, bytes: bytesOf(bf16) },
      { name: "f16.special", dtype: "F16", shape: [7], bytes: bytesOf(f16Special) },
      { name: "bf16.special", dtype: "BF16", shape: [7], bytes: bytesOf(bfSpecial) },
      { name: "empty", dtype: "F32", shape: [0, 4], bytes: new Uint8Array(0) },
      { name: "ids", dtype: "I64", shape: [3], bytes: bytesOf(i64) },
    ];
    await Deno.writeFile(`${dir}/model.safetensors`, safetensorsBytes(tensors, { format: "pt" }));
    const progress: [number, number][] = [];
    // A 6-byte step forces many reads per tensor (rounded down to 4 inside).
    const ckpt = await Checkpoint.open(dir, {
      onProgress: (l, t) => progress.push([l, t]),
      chunkBytes: 6,
    });
    try {
      assert.deepEqual(ckpt.names(), tensors.map((t) => t.name).sort(), msg);
      assert.deepEqual(ckpt.metadata, { format: "pt" });
      const info = ckpt.info("backbone.layers.0.mixer.A_log")!;
      assert.equal(info.dtype, "F16");
      assert.deepEqual(info.shape, s16);
      assert.equal(info.byteLength, n16 * 2);
      assert.equal(info.file, `${dir}/model.safetensors`);
      assert.equal(ckpt.info("nope"), undefined);

      const got32 = await ckpt.getF32("backbone.embeddings.weight", s32);
      assert.deepEqual(bitsOf(got32), bitsOf(f32), msg);

      const got16 = await ckpt.getF32("backbone.layers.0.mixer.A_log", s16);
      const wantBits16 = new Uint32Array(n16).map((_, i) => halfBitsToFloatBits(f16[i]));
      assert.deepEqual(bitsOf(got16), wantBits16, msg);
      for (let i = 0; i < n16; i++) {
        const want = refHalf(f16[i]);
        assert.ok(Number.isNaN(want) ? Number.isNaN(got16[i]) : Object.is(got16[i], want), msg);
      }

      const gotBf = await ckpt.getF32("backbone.layers.0.mixer.D");
      assert.deepEqual(bitsOf(gotBf), new Uint32Array(sbf[0]).map((_, i) => bf16[i] << 16), msg);

      const sp16 = await ckpt.getF32("f16.special");
      assert.deepEqual(
        [...bitsOf(sp16)].map((b) => b.toString(16)),
        ["33800000", "b3800000", "387fc000", "7f800000", "ff800000", "7fc02000", "80000000"],
      );
      assert.equal(sp16[0], 2 ** -24);
      const spBf = await ckpt.getF32("bf16.special");
      assert.equal(spBf[0], 2 ** -133);
      assert.equal(spBf[1], -127 * 2 ** -133);
      assert.deepEqual([spBf[2], spBf[3]], [Infinity, -Infinity]);
      assert.equal(bitsOf(spBf)[4], 0x7fc10000);
      assert.ok(Object.is(spBf[5], -0));
      assert.equal(spBf[6], 2 ** -126);

      assert.equal((await ckpt.getF32("empty", [0, 4])).length, 0);

      // Progress: monotone, totals constant, ends at the sum of what was read.
      const read = f32.byteLength + n16 * 2 + sbf[0] * 2 + 14 + 14;
      assert.ok(progress.length > 10);
      for (let i = 1; i < progress.length; i++) assert.ok(progress[i][0] >= progress[i - 1][0]);
      assert.ok(progress.every(([, t]) => t === ckpt.totalBytes));
      assert.equal(progress.at(-1)![0], read);
      assert.equal(ckpt.totalBytes, read + 24);

      // Concurrent reads share one handle; the per-file lock keeps seek+read pairs intact.
      const again = await Promise.all([
        ckpt.getF32("backbone.embeddings.weight"),
        ckpt.getF32("backbone.layers.0.mixer.D"),
        ckpt.getF32("backbone.embeddings.weight"),
      ]);
      assert.deepEqual(bitsOf(again[0]), bitsOf(f32));
      assert.deepEqual(bitsOf(again[1]), bitsOf(gotBf));
      assert.deepEqual(bitsOf(again[2]), bitsOf(f32));

      await assert.rejects(
        ckpt.getF32("ids"),
        /tensor ids has dtype I64, which cannot be read as float32 \(supported: F32, F16, BF16/,
      );
      await assert.rejects(
        ckpt.getF32("backbone.embeddings.weight", [s32[1] + 1, s32[0]]),
        new RegExp(
          `^Error: tensor backbone\\.embeddings\\.weight has shape \\[${s32[0]}, ${s32[1]}\\] ` +
            `but the model needs \\[${s32[1] + 1}, ${s32[0]}\\]`,
        ),
      );
      await assert.rejects(
        ckpt.getF32("backbone.layers.0.mixer.A_logg"),
        (e: Error) => {
          assert.match(e.message, /tensor backbone\.layers\.0\.mixer\.A_logg not found/);
          assert.match(e.message, /7 tensors; similar names: backbone\.layers\.0\.mixer\.A_log/);
          return true;
        },
      );
      await assert.rejects(ckpt.getF32("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"), /not found.*e\.g\. /);
    } finally {
      ckpt.close();
    }
    await assert.rejects(ckpt.getF32("empty"), /is closed/);
    ckpt.close(); // twice is fine
  });
});

Deno.test("Checkpoint reports a file truncated after opening", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/model.safetensors`;
    const w = new Float32Array(64).fill(1.25);
    await Deno.writeFile(
      path,
      safetensorsBytes([{ name: "w", dtype: "F32", shape: [8, 8], bytes: bytesOf(w) }]),
    );
    using ckpt = await Checkpoint.open(dir);
    const size = (await Deno.stat(path)).size;
    await Deno.truncate(path, size - 10);
    await assert.rejects(ckpt.getF32("w"), /unexpected end of file while reading tensor w/);
  });
});

// ---------------------------------------------------------------------------------------------
// Checkpoint: sharded.

async function writeSharded(dir: string, next: () => number) {
  const a = new Float32Array(3 * 5).map(() => next() - 0.5);
  const b = new Uint16Array(7).map(() => Math.floor(next() * 0x7c00)); // finite F16
  const c = new Uint16Array(4).map(() => Math.floor(next() * 65536));
  await Deno.writeFile(
    `${dir}/model-00001-of-00002.safetensors`,
    safetensorsBytes([
      { name: "a", dtype: "F32", shape: [3, 5], bytes: bytesOf(a) },
      { name: "b", dtype: "F16", shape: [7], bytes: bytesOf(b) },
    ]),
  );
  await Deno.writeFile(
    `${dir}/model-00002-of-00002.safetensors`,
    safetensorsBytes([{ name: "c", dtype: "BF16", shape: [2, 2], bytes: bytesOf(c) }]),
  );
  const index = {
    metadata: { total_size: 15 * 4 + 7 * 2 + 4 * 2 },
    weight_map: {
      a: "model-00001-of-00002.safetensors",
      b: "model-00001-of-00002.safetensors",
      c: "model-00002-of-00002.safetensors",
    },
  };
  await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify(index));
  return { a, b, c, index };
}

Deno.test("Checkpoint reads sharded checkpoints through the index", async () => {
  const seed = freshSeed();
  await withTempDir(async (dir) => {
    const { a, b, c } = await writeSharded(dir, rng(seed));
    using ckpt = await Checkpoint.open(dir);
    assert.deepEqual(ckpt.names(), ["a", "b", "c"]);
    assert.equal(ckpt.files.length, 2);
    assert.equal(ckpt.info("c")!.file, `${dir}/model-00002-of-00002.safetensors`);
    assert.deepEqual(bitsOf(await ckpt.getF32("a", [3, 5])), bitsOf(a), `seed ${seed}`);
    assert.deepEqual([...await ckpt.getF32("b")], [...b].map(refHalf), `seed ${seed}`);
    assert.deepEqual([...await ckpt.getF32("c")], [...c].map(refBf16), `seed ${seed}`);
    assert.equal(ckpt.totalBytes, 15 * 4 + 7 * 2 + 4 * 2);
  });
});

Deno.test("Checkpoint sharded errors: missing shard, index and shard disagree, bad index", async () => {
  await withTempDir(async (dir) => {
    const { index } = await writeSharded(dir, rng(1));
    await Deno.remove(`${dir}/model-00002-of-00002.safetensors`);
    await assert.rejects(
      Checkpoint.open(dir),
      /index\.json references shard files missing from .*: model-00002-of-00002\.safetensors \(holds 1 tensors, e\.g\. c\)/,
    );
    const wm = index.weight_map as Record<string, string>;
    wm.c = "model-00001-of-00002.safetensors";
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify(index));
    await assert.rejects(
      Checkpoint.open(dir),
      /says tensor c is in model-00001-of-00002\.safetensors, but that file has no such tensor/,
    );
    // A shard holding a tensor the index does not list: the files disagree.
    delete wm.b;
    delete wm.c;
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify(index));
    await assert.rejects(
      Checkpoint.open(dir),
      /model-00001-of-00002\.safetensors holds 1 tensors that .*index\.json does not list \(e\.g\. b\)/,
    );
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, "{ nope");
    await assert.rejects(
      Checkpoint.open(dir),
      /model\.safetensors\.index\.json: invalid JSON at line 1, column 3/,
    );
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, `{"metadata": {}}`);
    await assert.rejects(Checkpoint.open(dir), /missing "weight_map" object/);
  });
});

Deno.test("Checkpoint.open: missing directory, missing weights file lists what was found", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(
      Checkpoint.open(`${dir}/does-not-exist`),
      new RegExp(`model directory not found: ${dir}/does-not-exist`),
    );
    await Deno.writeTextFile(`${dir}/config.json`, "{}");
    await assert.rejects(
      Checkpoint.open(`${dir}/config.json`),
      /config\.json is a file, not a model directory/,
    );
    await Deno.writeFile(`${dir}/pytorch_model.bin`, new Uint8Array(4));
    await Deno.mkdir(`${dir}/sub`);
    await assert.rejects(
      Checkpoint.open(dir),
      /no model\.safetensors or model\.safetensors\.index\.json in .* \(found: config\.json, pytorch_model\.bin, sub\/\); PyTorch \.bin\/\.pt weights are not supported/,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// safetensors header validation.

Deno.test("readSafetensorsHeader rejects every malformed header with the file named", async () => {
  await withTempDir(async (dir) => {
    const enc = (s: string) => new TextEncoder().encode(s);
    const four = new Uint8Array(16); // room for one [2, 2] F32 tensor
    const entry = (extra: Record<string, unknown>) =>
      enc(JSON.stringify({ t: { dtype: "F32", shape: [2, 2], data_offsets: [0, 16], ...extra } }));
    const cases: [string, Uint8Array, RegExp][] = [
      ["short", new Uint8Array(5), /5 bytes is shorter than the 8-byte header length/],
      [
        "toolong",
        rawSafetensors(enc("{}"), new Uint8Array(0), 1000n),
        /the header length in its first 8 bytes is larger than the 2 bytes that follow them/,
      ],
      [
        "absurd",
        rawSafetensors(enc("{}"), new Uint8Array(0), 1n << 40n),
        /its first 8 bytes do not hold a header length of at most 104857600 bytes/,
      ],
      [
        "utf8",
        rawSafetensors(new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), four),
        /header is not valid JSON: invalid UTF-8 at byte 1/,
      ],
      [
        "json",
        rawSafetensors(enc(`{"t": `), four),
        /header is not valid JSON: expected a value, found the end of the text/,
      ],
      [
        "entry",
        rawSafetensors(enc(`{"t": {"dtype": F32}}`), four),
        /the entry for "t" is not valid JSON/,
      ],
      [
        "array",
        rawSafetensors(enc(`[1, 2]`), four),
        /header is not valid JSON: expected "\{" at byte 0/,
      ],
      [
        "nodtype",
        rawSafetensors(enc(`{"t": {"shape": [2, 2], "data_offsets": [0, 16]}}`), four),
        /tensor "t" is missing "dtype"/,
      ],
      [
        "noshape",
        rawSafetensors(enc(`{"t": {"dtype": "F32", "data_offsets": [0, 16]}}`), four),
        /tensor "t" is missing "shape"/,
      ],
      [
        "nooffsets",
        rawSafetensors(enc(`{"t": {"dtype": "F32", "shape": [2, 2]}}`), four),
        /tensor "t" is missing "data_offsets"/,
      ],
      [
        "badshape",
        rawSafetensors(entry({ shape: [2, -1] }), four),
        /tensor "t" has an invalid shape \[2, -1\]/,
      ],
      [
        "badoffsets",
        rawSafetensors(entry({ data_offsets: [16, 0] }), four),
        /invalid data_offsets \[16, 0\]/,
      ],
      [
        "pastend",
        rawSafetensors(entry({ data_offsets: [4, 20] }), four),
        /data_offsets \[4, 20\] run past the end of the file \(data section is 16 bytes\)/,
      ],
      [
        "sizemismatch",
        rawSafetensors(entry({ shape: [3, 2] }), new Uint8Array(24)),
        /tensor "t" \(F32, shape \[3, 2\]\) needs 24 bytes but data_offsets \[0, 16\] hold 16/,
      ],
      [
        "overlap",
        rawSafetensors(
          enc(JSON.stringify({
            a: { dtype: "F32", shape: [3], data_offsets: [0, 12] },
            b: { dtype: "F16", shape: [4], data_offsets: [8, 16] },
          })),
          four,
        ),
        /tensors "a" \[0, 12\] and "b" \[8, 16\] overlap/,
      ],
      [
        "metadata",
        rawSafetensors(enc(`{"__metadata__": {"format": 3}}`), four),
        /__metadata__\.format is not a string/,
      ],
      ["baddtype", rawSafetensors(entry({ dtype: 4 }), four), /invalid dtype 4/],
    ];
    for (const [name, bytes, re] of cases) {
      const path = `${dir}/${name}.safetensors`;
      await Deno.writeFile(path, bytes);
      await assert.rejects(readSafetensorsHeader(path), (e: Error) => {
        assert.ok(e.message.startsWith(`${path}: `), `${name}: ${e.message}`);
        assert.match(e.message, re, name);
        return true;
      });
    }
    await assert.rejects(readSafetensorsHeader(`${dir}/none.safetensors`), /file not found/);
    // The same validation runs when a checkpoint is opened.
    const sub = `${dir}/model`;
    await Deno.mkdir(sub);
    await Deno.copyFile(`${dir}/overlap.safetensors`, `${sub}/model.safetensors`);
    await assert.rejects(Checkpoint.open(sub), /model\.safetensors: invalid safetensors header/);
  });
});

Deno.test("readSafetensorsHeader: offsets relative to the data start, metadata, zero-size", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/ok.safetensors`;
    const bytes = safetensorsBytes([
      { name: "z", dtype: "F32", shape: [0], bytes: new Uint8Array(0) },
      { name: "x", dtype: "BF16", shape: [3], bytes: new Uint8Array(6) },
      { name: "y", dtype: "U8", shape: [5], bytes: new Uint8Array(5) },
    ], { format: "pt", note: "Infinity" });
    await Deno.writeFile(path, bytes);
    const h = await readSafetensorsHeader(path);
    const headerLen = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assert.equal(h.dataStart, 8 + headerLen);
    assert.deepEqual(h.metadata, { format: "pt", note: "Infinity" });
    assert.deepEqual(h.tensors.get("x"), {
      name: "x",
      dtype: "BF16",
      shape: [3],
      byteOffset: 8 + headerLen,
      byteLength: 6,
      file: path,
    });
    assert.equal(h.tensors.get("y")!.byteOffset, 8 + headerLen + 6);
    assert.equal(h.tensors.get("z")!.byteLength, 0);
  });
});

// ---------------------------------------------------------------------------------------------
// config.json

Deno.test("readConfig parses bare Infinity/-Infinity/NaN and __float__ objects", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(
      `${dir}/config.json`,
      `{
  "model_type": "mamba2",
  "time_step_limit": [0.0, Infinity],
  "neg": -Infinity,
  "nan": NaN,
  "wrapped": [{"__float__": "Infinity"}, {"__float__": "-Infinity"}, {"__float__": "NaN"},
              {"__float__": "1e-3"}],
  "note": "to Infinity and beyond, NaN, -Infinity",
  "quoted": "say \\"Infinity\\" \\\\",
  "Infinity": {"nested": [1, -2.5e3, true, null]},
  "__float__": "not alone",
  "two": {"__float__": "x", "other": 1}
}
`,
    );
    const cfg = await readConfig(dir);
    assert.equal(cfg.model_type, "mamba2");
    assert.deepEqual(cfg.time_step_limit, [0, Infinity]);
    assert.equal(cfg.neg, -Infinity);
    assert.ok(Number.isNaN(cfg.nan));
    const w = cfg.wrapped as number[];
    assert.deepEqual(w.slice(0, 2), [Infinity, -Infinity]);
    assert.ok(Number.isNaN(w[2]));
    assert.equal(w[3], 1e-3);
    assert.equal(cfg.note, "to Infinity and beyond, NaN, -Infinity");
    assert.equal(cfg.quoted, 'say "Infinity" \\');
    assert.deepEqual(cfg.Infinity, { nested: [1, -2500, true, null] });
    assert.equal(cfg.__float__, "not alone");
    assert.deepEqual(cfg.two, { __float__: "x", other: 1 });
  });
});

Deno.test("readConfig errors: missing file, missing dir, invalid JSON with line number", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(readConfig(dir), new RegExp(`no config\\.json in model directory ${dir}`));
    await assert.rejects(readConfig(`${dir}/x`), /model directory not found: .*\/x/);
    await Deno.writeTextFile(`${dir}/config.json`, `{\n  "a": 1,\n  "b": 2\n  "c": 3\n}\n`);
    await assert.rejects(
      readConfig(dir),
      /config\.json: invalid JSON at line 4, column 3: expected "," or "}" in object, unexpected character "\\""/,
    );
    await Deno.writeTextFile(`${dir}/config.json`, `[1, 2]`);
    await assert.rejects(readConfig(dir), /top level is not a JSON object/);
  });
  const bad: [string, RegExp][] = [
    [`{"a": Infinit}`, /line 1, column 7: expected a value/],
    [`{"a": {"__float__": "lots"}}`, /"__float__" value "lots" is not a float/],
    [`{"a": {"__float__": 1}}`, /"__float__" must hold a string/],
    [`{"a": "x\ny"}`, /line 1, column 9: control character inside a string/],
    [`{"a": "\\q"}`, /invalid escape sequence/],
    [`{"a": 1}}`, /unexpected text after the top-level value/],
    [`{"a": 01}`, /expected "," or "}"/],
    [`{"a": [1, 2}`, /line 1, column 12: expected "," or "]" in array/],
    [`{"a": "open`, /unterminated string/],
    [``, /unexpected end of input/],
  ];
  for (const [text, re] of bad) assert.throws(() => parseConfigJson(text, "c.json"), re, text);
});

// The oracle is the serialized document itself, not JSON.parse: Deno 2.9.6's JSON.parse read
// the one-character key "\"" back as "\\" after parsing 78 other documents (seed 339183535),
// while parseConfigJson and a fresh process read it right.
Deno.test("parseConfigJson reads random JSON documents back exactly", () => {
  const seed = freshSeed();
  const next = rng(seed);
  const chars = ["a", "Z", " ", '"', "\\", "\n", "\t", "é", "😀", "\u0001", "/", "I", "N"];
  const randValue = (depth: number): unknown => {
    const r = next();
    if (depth > 3 || r < 0.3) {
      const k = Math.floor(next() * 5);
      if (k === 0) return (next() - 0.5) * 10 ** Math.floor(next() * 40 - 20);
      if (k === 1) return Math.floor((next() - 0.5) * 1e6);
      if (k === 2) return next() < 0.5;
      if (k === 3) return null;
      return Array.from(
        { length: Math.floor(next() * 6) },
        () => chars[Math.floor(next() * chars.length)],
      ).join("");
    }
    if (r < 0.6) return Array.from({ length: Math.floor(next() * 4) }, () => randValue(depth + 1));
    const o: Record<string, unknown> = {};
    for (let i = Math.floor(next() * 4); i > 0; i--) o[String(randValue(9))] = randValue(depth + 1);
    return o;
  };
  for (let i = 0; i < 200; i++) {
    const doc = randValue(0);
    const text = JSON.stringify(doc, null, next() < 0.5 ? 2 : undefined);
    assert.deepEqual(parseConfigJson(text), doc, `seed ${seed}: ${text}`);
  }
});

// ---------------------------------------------------------------------------------------------
// .npy

Deno.test("encodeNpy writes exactly NumPy's bytes (header literal and NumPy-written fixtures)", async () => {
  const data = new Float32Array([1.5, -2, 0, 1e-45, Infinity, NaN]);
  const bytes = encodeNpy(data, [2, 3]);
  const dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  const header = "\x93NUMPY\x01\x00\x76\x00" + dict + " ".repeat(128 - 10 - dict.length - 1) + "\n";
  assert.equal(bytes.length, 128 + 24);
  assert.deepEqual(
    [...bytes.subarray(0, 128)],
    [...header].map((c) => c.charCodeAt(0)),
  );
  assert.deepEqual(bytes, await Deno.readFile(`${FIXTURES}npy/f4_2x3.npy`));

  for (const file of ["f4_scalar", "f4_vec5", "f4_padquirk_1x12_10x10"]) {
    const want = await Deno.readFile(`${FIXTURES}npy/${file}.npy`);
    const { data, shape, descr } = decodeNpy(want);
    assert.equal(descr, "<f4");
    assert.deepEqual(encodeNpy(data as Float32Array, shape), want, file);
  }
  const quirk = decodeNpy(await Deno.readFile(`${FIXTURES}npy/f4_padquirk_1x12_10x10.npy`));
  assert.deepEqual(quirk.shape, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 10, 10]);
  assert.deepEqual([...quirk.data].slice(0, 3), [-7, -6.5, -6]);
  const scalar = decodeNpy(await Deno.readFile(`${FIXTURES}npy/f4_scalar.npy`));
  assert.deepEqual([scalar.shape, [...scalar.data]], [[], [7.25]]);
});

Deno.test("decodeNpy reads f8, i4, i8, Fortran-order and big-endian NumPy files", async () => {
  const read = async (f: string) => decodeNpy(await Deno.readFile(`${FIXTURES}npy/${f}.npy`));
  const f8 = await read("f8_3x2");
  assert.ok(f8.data instanceof Float64Array);
  assert.deepEqual(f8.shape, [3, 2]);
  assert.deepEqual([...f8.data], [0.1, -1e300, 5e-324, Infinity, -Infinity, 2.5]);
  const i4 = await read("i4_4");
  assert.ok(i4.data instanceof Int32Array);
  assert.deepEqual([...i4.data], [0, -1, 2147483647, -2147483648]);
  const i8 = await read("i8_2x2");
  assert.deepEqual(i8.data, [0, -5, 2 ** 40, -(2 ** 53) + 1]);
  assert.deepEqual(i8.shape, [2, 2]);
  const fo = await read("f4_fortran_2x3x4");
  assert.deepEqual(fo.shape, [2, 3, 4]);
  assert.deepEqual([...fo.data], Array.from({ length: 24 }, (_, i) => i));
  const be = await read("f4_bigendian_2x2");
  assert.equal(be.descr, ">f4");
  assert.deepEqual([...be.data], [1, -2.5, 3.25, Math.fround(1e-40)]);
});

Deno.test("npy round trip on random awkward shapes, and decode errors", () => {
  const seed = freshSeed();
  const next = rng(seed);
  for (let trial = 0; trial < 30; trial++) {
    const shape = randomShape(next, Math.floor(next() * 5), 7);
    if (trial === 0) shape.splice(0, shape.length); // 0-d
    if (trial === 1) shape.splice(0, shape.length, 3, 0, 5); // zero-size
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n).map(() => (next() - 0.5) * 1e6);
    const bytes = encodeNpy(data, shape);
    const headerEnd = bytes.indexOf(0x0a) + 1;
    assert.equal(headerEnd % 64, 0, `seed ${seed}`);
    const back = decodeNpy(bytes);
    assert.deepEqual(back.shape, shape, `seed ${seed}`);
    assert.deepEqual(back.data, data, `seed ${seed}`);
  }
  assert.throws(() => encodeNpy(new Float32Array(5), [2, 3]), /shape \[2, 3\] has 6 elements/);
  const good = encodeNpy(new Float32Array([1, 2]), [2]);
  assert.throws(() => decodeNpy(good.subarray(1)), /missing \\x93NUMPY magic/);
  assert.throws(() => decodeNpy(good.subarray(0, good.length - 1)), /needs 8 data bytes/);
  const c8 = good.slice();
  c8.set(new TextEncoder().encode("<c8"), 21); // after "\x93NUMPY\1\0" + len + "{'descr': '"
  assert.throws(() => decodeNpy(c8), /unsupported dtype "<c8"/);
});

// ---------------------------------------------------------------------------------------------
// Progress bar

Deno.test("progress bar: throttled redraws, final line, silent when disabled", () => {
  let t = 0;
  const out: string[] = [];
  const bar = createProgressBar("weights", 1000, {
    enabled: true,
    write: (s) => out.push(s),
    now: () => t,
    intervalMs: 100,
    width: 10,
    unit: "count",
  });
  bar.update(100); // first update draws
  t = 50;
  bar.update(200); // throttled
  t = 150;
  bar.update(450);
  bar.finish();
  bar.update(999); // after finish: ignored
  bar.finish();
  assert.deepEqual(out, [
    "\rweights [#.........]  10% 100 / 1000\x1b[K",
    "\rweights [#####.....]  45% 450 / 1000\x1b[K",
    "\rweights [#####.....]  45% 450 / 1000\x1b[K",
    "\n",
  ]);
  const quiet: string[] = [];
  const off = createProgressBar("x", 10, { enabled: false, write: (s) => quiet.push(s) });
  off.update(5);
  off.finish();
  assert.deepEqual(quiet, []);
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(3 * 1024 ** 3), "3.0 GiB");
});

// ---------------------------------------------------------------------------------------------
// Tokenizer

Deno.test("tokenizer: byte-level BPE fixture encodes with merges and round-trips any text", async () => {
  const tok = (await loadTokenizer(`${FIXTURES}tokenizer`))!;
  assert.ok(tok);
  assert.equal(tok.vocabSize, 1 + 256 + 10);
  const ids = tok.encode("the world");
  assert.deepEqual(ids.map((i) => tok.idToToken(i)), ["the", "Ġworld"]);
  assert.equal(tok.decode(ids), "the world");
  assert.equal(tok.tokenToId("<|endoftext|>"), 0);
  assert.equal(tok.decode([...tok.encode("hi"), 0]), "hi<|endoftext|>");
  assert.equal(tok.decode([...tok.encode("hi"), 0], { skipSpecialTokens: true }), "hi");
  assert.deepEqual(tok.encode(""), []);
  assert.equal(tok.decode([]), "");
  assert.throws(() => tok.decode([5, 267]), /token id 267 is not in \[0, 267\)/);
  assert.throws(() => tok.decode([1.5]), /token id 1.5/);

  const seed = freshSeed();
  const next = rng(seed);
  const pieces = [
    "the",
    " world",
    " ",
    "  ",
    "\n",
    "é",
    "日本",
    "😀",
    "ssm",
    "'s",
    "42",
    "\t",
    "!",
  ];
  for (let i = 0; i < 50; i++) {
    const text = Array.from(
      { length: Math.floor(next() * 12) },
      () => pieces[Math.floor(next() * pieces.length)],
    ).join("");
    assert.equal(tok.decode(tok.encode(text)), text, `seed ${seed}: ${JSON.stringify(text)}`);
  }
});

Deno.test("tokenizer: undefined without tokenizer.json, clear error on a bad one", async () => {
  await withTempDir(async (dir) => {
    assert.equal(await loadTokenizer(dir), undefined);
    await Deno.writeTextFile(`${dir}/tokenizer.json`, `{"model": `);
    await assert.rejects(loadTokenizer(dir), /tokenizer\.json: invalid JSON at line 1/);
    await Deno.writeTextFile(
      `${dir}/tokenizer.json`,
      JSON.stringify({
        model: { type: "NoSuchModel" },
        normalizer: null,
        pre_tokenizer: null,
        post_processor: null,
        decoder: null,
        added_tokens: [],
      }),
    );
    await assert.rejects(
      loadTokenizer(dir),
      /tokenizer\.json: cannot build a tokenizer from it: .*NoSuchModel/,
    );
  });
});

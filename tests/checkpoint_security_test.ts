// Hostile model directories: shard names and symbolic links that leave the directory, files
// that are not regular files, headers that lie or repeat themselves, oversized or deeply nested
// JSON, and tokenizer ids far beyond the vocabulary. Each must fail fast with one line naming
// the file, never quoting what a wrongly opened file holds.
import assert from "node:assert/strict";
import { Tokenizer } from "@huggingface/tokenizers";
import { Checkpoint } from "../models/checkpoint/checkpoint.ts";
import { readConfig } from "../models/checkpoint/config.ts";
import { readSafetensorsHeader } from "../models/checkpoint/header.ts";
import { loadTokenizer } from "../models/checkpoint/tokenizer.ts";
import {
  bytesOf,
  rawSafetensors,
  type RawTensor,
  safetensorsBytes,
  withTempDir,
} from "./safetensors_writer.ts";

const TOKENIZER = new URL("./fixtures/checkpoint/tokenizer/", import.meta.url).pathname;
const canMakeFifo = Deno.build.os !== "windows";

const tensor = (name: string, values: number[]): RawTensor => ({
  name,
  dtype: "F32",
  shape: [values.length],
  bytes: bytesOf(Float32Array.from(values)),
});

async function writeIndex(dir: string, weightMap: Record<string, string>): Promise<void> {
  await Deno.writeTextFile(
    `${dir}/model.safetensors.index.json`,
    JSON.stringify({ metadata: {}, weight_map: weightMap }),
  );
}

async function mkfifo(path: string): Promise<void> {
  const { success } = await new Deno.Command("mkfifo", { args: [path] }).output();
  assert.ok(success, `mkfifo ${path}`);
}

// ---------------------------------------------------------------------------------------------
// Shard names and symbolic links must stay inside the model directory.

Deno.test("a shard name with .. or an absolute path is refused before anything is opened", async () => {
  await withTempDir(async (root) => {
    const model = `${root}/model`, outside = `${root}/outside`;
    await Deno.mkdir(model);
    await Deno.mkdir(outside);
    await Deno.writeFile(`${outside}/secret.safetensors`, safetensorsBytes([tensor("w", [7])]));
    await Deno.writeFile(`${model}/a.safetensors`, safetensorsBytes([tensor("a", [1])]));

    const cases: [string, RegExp][] = [
      ["../outside/secret.safetensors", /goes up a directory with "\.\."/],
      ["../../../../../../../../etc/passwd", /goes up a directory with "\.\."/],
      ["sub/../../outside/secret.safetensors", /goes up a directory/],
      [`${outside}/secret.safetensors`, /is an absolute path/],
      ["/etc/passwd", /is an absolute path/],
      ["C:\\Windows\\win.ini", /is an absolute path/],
      ["..\\outside\\secret.safetensors", /goes up a directory/],
      ["./a.safetensors", /empty or '\.' path segment/],
    ];
    for (const [shard, re] of cases) {
      await writeIndex(model, { a: "a.safetensors", w: shard });
      await assert.rejects(Checkpoint.open(model), (e: Error) => {
        assert.match(e.message, /model\.safetensors\.index\.json: shard of tensor w: /, shard);
        assert.match(e.message, re, shard);
        assert.ok(!e.message.includes("\n"), "one line");
        return true;
      });
    }
  });
});

Deno.test("symbolic links may not lead out of the model directory; links inside it are fine", async () => {
  await withTempDir(async (root) => {
    const model = `${root}/model`, outside = `${root}/outside`;
    await Deno.mkdir(model);
    await Deno.mkdir(outside);
    await Deno.mkdir(`${model}/real`);
    await Deno.writeFile(`${outside}/secret.safetensors`, safetensorsBytes([tensor("w", [7])]));
    await Deno.writeFile(`${model}/real/w.safetensors`, safetensorsBytes([tensor("w", [3, 4])]));

    // A shard that is a link to a file outside.
    await Deno.symlink(`../outside/secret.safetensors`, `${model}/escape.safetensors`);
    await writeIndex(model, { w: "escape.safetensors" });
    await assert.rejects(
      Checkpoint.open(model),
      /escape\.safetensors resolves to .*outside\/secret\.safetensors, outside the model directory/,
    );
    // A link to a directory outside, then a file below it.
    await Deno.symlink(outside, `${model}/elsewhere`);
    await writeIndex(model, { w: "elsewhere/secret.safetensors" });
    await assert.rejects(Checkpoint.open(model), /outside the model directory/);
    // The single weights file itself as a link to a file outside.
    await Deno.symlink(`${outside}/secret.safetensors`, `${model}/model.safetensors`);
    await assert.rejects(
      Checkpoint.open(model),
      /model\.safetensors resolves to .*, outside the model directory/,
    );

    // Links and subfolders that stay inside load normally.
    await Deno.remove(`${model}/model.safetensors`);
    await Deno.symlink("real/w.safetensors", `${model}/linked.safetensors`);
    await writeIndex(model, { w: "linked.safetensors" });
    {
      using ckpt = await Checkpoint.open(model);
      assert.deepEqual([...await ckpt.getF32("w", [2])], [3, 4]);
    }
    await writeIndex(model, { w: "real/w.safetensors" });
    using ckpt = await Checkpoint.open(model);
    assert.deepEqual([...await ckpt.getF32("w")], [3, 4]);
  });
});

Deno.test("a Hugging Face cache snapshot's links into blobs/ are accepted, other targets are not", async () => {
  await withTempDir(async (root) => {
    const repo = `${root}/models--org--tiny`;
    const snapshot = `${repo}/snapshots/0123abc`;
    await Deno.mkdir(`${repo}/blobs`, { recursive: true });
    await Deno.mkdir(snapshot, { recursive: true });
    await Deno.writeFile(`${repo}/blobs/9f8e`, safetensorsBytes([tensor("w", [5, 6])]));
    await Deno.writeTextFile(`${repo}/blobs/c0f1`, `{"model_type": "mamba"}`);
    await Deno.symlink("../../blobs/9f8e", `${snapshot}/model.safetensors`);
    await Deno.symlink("../../blobs/c0f1", `${snapshot}/config.json`);
    using ckpt = await Checkpoint.open(snapshot);
    assert.deepEqual([...await ckpt.getF32("w")], [5, 6]);
    assert.deepEqual(await readConfig(snapshot), { model_type: "mamba" });
    // Elsewhere in the repository folder (not blobs/) is still outside.
    await Deno.writeTextFile(`${repo}/other.json`, "{}");
    await Deno.remove(`${snapshot}/config.json`);
    await Deno.symlink("../../other.json", `${snapshot}/config.json`);
    await assert.rejects(readConfig(snapshot), /outside the model directory/);
  });
});

Deno.test("errors about a file that is not safetensors never quote its bytes", async () => {
  await withTempDir(async (dir) => {
    const passwd = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/bin/false\n";
    await Deno.writeTextFile(`${dir}/model.safetensors`, passwd);
    const asLength = new DataView(new TextEncoder().encode(passwd).buffer).getBigUint64(0, true);
    assert.equal(asLength, 3475222254926655346n);
    // A length field that fits the file: the text after it must not be quoted either.
    const small = rawSafetensors(new TextEncoder().encode("root:x:0:0:root"), new Uint8Array(0));
    await Deno.writeFile(`${dir}/small.safetensors`, small);
    const shortLength = new Uint8Array(small);
    shortLength[0] = 200; // longer than the file
    await Deno.writeFile(`${dir}/short.safetensors`, shortLength);
    for (const path of [`${dir}/model.safetensors`, `${dir}/small.safetensors`]) {
      await assert.rejects(readSafetensorsHeader(path), (e: Error) => {
        assert.ok(e.message.startsWith(`${path}: `), e.message);
        assert.ok(!e.message.includes(String(asLength)), e.message);
        assert.ok(!/root|bash|daemon/.test(e.message.slice(path.length)), e.message);
        return true;
      });
    }
    await assert.rejects(readSafetensorsHeader(`${dir}/short.safetensors`), (e: Error) => {
      assert.match(e.message, /header length in its first 8 bytes is larger than/);
      assert.ok(!/\b200\b/.test(e.message), e.message);
      return true;
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Directories, FIFOs and files where a model directory or a regular file is expected.

Deno.test("a directory or FIFO named like a model file is named as such, and never opened", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/model.safetensors`);
    await assert.rejects(
      Checkpoint.open(dir),
      /\/model\.safetensors is a directory, not a regular file/,
    );
    await Deno.remove(`${dir}/model.safetensors`);
    await Deno.mkdir(`${dir}/config.json`);
    await assert.rejects(readConfig(dir), /\/config\.json is a directory, not a regular file/);
    if (!canMakeFifo) return;
    // Opening a FIFO for reading would block until a writer appears: these must return at once.
    await mkfifo(`${dir}/model.safetensors`);
    await assert.rejects(
      Checkpoint.open(dir),
      /\/model\.safetensors is a FIFO \(named pipe\), not a regular file/,
    );
    await Deno.remove(`${dir}/model.safetensors`);
    await Deno.writeFile(`${dir}/a.safetensors`, safetensorsBytes([tensor("a", [1])]));
    await mkfifo(`${dir}/b.safetensors`);
    await writeIndex(dir, { a: "a.safetensors", b: "b.safetensors" });
    await assert.rejects(Checkpoint.open(dir), /b\.safetensors is a FIFO \(named pipe\)/);
    await Deno.remove(`${dir}/config.json`);
    await mkfifo(`${dir}/config.json`);
    await assert.rejects(readConfig(dir), /config\.json is a FIFO \(named pipe\)/);
    await mkfifo(`${dir}/tokenizer.json`);
    await assert.rejects(loadTokenizer(dir), /tokenizer\.json is a FIFO \(named pipe\)/);
  });
});

Deno.test("a broken symbolic link is named, not reported as missing", async () => {
  await withTempDir(async (dir) => {
    await Deno.symlink("nowhere.safetensors", `${dir}/model.safetensors`);
    await assert.rejects(
      Checkpoint.open(dir),
      /model\.safetensors is a symbolic link to a missing file/,
    );
  });
});

Deno.test("a model path that is a file says so (config, tokenizer and weights alike)", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/model.safetensors`;
    await Deno.writeFile(file, safetensorsBytes([tensor("a", [1])]));
    const re = new RegExp(`^Error: ${file} is a file, not a model directory`);
    await assert.rejects(readConfig(file), re);
    await assert.rejects(loadTokenizer(file), re);
    await assert.rejects(Checkpoint.open(file), re);
    await assert.rejects(readConfig(`${file}/deeper`), /model directory not found: /);
  });
});

// ---------------------------------------------------------------------------------------------
// safetensors headers: repeated names, too many entries.

Deno.test("a tensor name that appears twice in a header is an error", async () => {
  await withTempDir(async (dir) => {
    const enc = (s: string) => new TextEncoder().encode(s);
    const data = new Uint8Array(8);
    const cases: [string, RegExp][] = [
      [
        `{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, ` +
        `"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}`,
        /"w" appears twice in the header/,
      ],
      // The same name spelled with an escape is the same key.
      [
        `{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, ` +
        `"\\u0077": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}`,
        /"w" appears twice in the header/,
      ],
      [
        `{"__metadata__": {"a": "1"}, "__metadata__": {"a": "2"}}`,
        /"__metadata__" appears twice in the header/,
      ],
    ];
    for (const [header, re] of cases) {
      const path = `${dir}/dup.safetensors`;
      await Deno.writeFile(path, rawSafetensors(enc(header), data));
      await assert.rejects(readSafetensorsHeader(path), re, header);
    }
  });
});

Deno.test("a header with too many entries fails at the first one over the limit", async () => {
  await withTempDir(async (dir) => {
    // 70k zero-size entries (over the default limit of 65536), and a last entry that is not
    // JSON: the count must stop the parse before the broken entry is reached.
    const entries = Array.from(
      { length: 70_000 },
      (_, i) => `"t${i}":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`,
    );
    const header = `{${entries.join(",")},"broken":{"dtype": F32}}`;
    await Deno.writeFile(
      `${dir}/model.safetensors`,
      rawSafetensors(new TextEncoder().encode(header), new Uint8Array(0)),
    );
    await assert.rejects(Checkpoint.open(dir), /header lists more than 65536 tensors/);
    await assert.rejects(
      Checkpoint.open(dir, { maxTensors: 100 }),
      /model\.safetensors: invalid safetensors header: header lists more than 100 tensors/,
    );
    // With room for all of them, the broken entry is found.
    await assert.rejects(
      Checkpoint.open(dir, { maxTensors: 80_000 }),
      /the entry for "broken" is not valid JSON/,
    );
    // The same bound applies to the index of a sharded checkpoint.
    await Deno.remove(`${dir}/model.safetensors`);
    await writeIndex(dir, Object.fromEntries(entries.slice(0, 200).map((_, i) => [`t${i}`, "x"])));
    await assert.rejects(
      Checkpoint.open(dir, { maxTensors: 100 }),
      /weight_map lists more than 100 tensors/,
    );
  });
});

Deno.test("a missing tensor among many names is reported with similar names", async () => {
  await withTempDir(async (dir) => {
    const tensors = Array.from({ length: 3000 }, (_, i) => tensor(`backbone.layers.${i}.D`, [i]));
    await Deno.writeFile(`${dir}/model.safetensors`, safetensorsBytes(tensors));
    using ckpt = await Checkpoint.open(dir);
    await assert.rejects(
      ckpt.getF32("backbone.layers.12.DD"),
      /3000 tensors; similar names: backbone\.layers\.12\.D, /,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// JSON files: size and depth.

Deno.test("a deeply nested config.json is a located error naming the file", async () => {
  await withTempDir(async (dir) => {
    const depth = 100_000;
    await Deno.writeTextFile(`${dir}/config.json`, "[".repeat(depth) + "]".repeat(depth));
    await assert.rejects(
      readConfig(dir),
      new RegExp(
        `^Error: ${dir}/config\\.json: invalid JSON at line 1, column 1001: arrays and objects ` +
          `nested more than 1000 deep$`,
      ),
    );
    // 1000 levels are fine.
    await Deno.writeTextFile(
      `${dir}/config.json`,
      `{"a": ${"[".repeat(999)}${"]".repeat(999)}}`,
    );
    assert.ok(await readConfig(dir));
  });
});

Deno.test("an oversized config.json is refused before it is read", async () => {
  await withTempDir(async (dir) => {
    // A sparse 32 MiB file: refused from its size alone.
    using f = await Deno.open(`${dir}/config.json`, { write: true, create: true });
    await f.truncate(32 * 1024 * 1024);
    await assert.rejects(
      readConfig(dir),
      /config\.json is 33554432 bytes; a config\.json larger than 16777216 bytes is refused/,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Tokenizer ids.

async function tokenizerWithAdded(dir: string, added: { id: unknown; content: string }[]) {
  const spec = JSON.parse(await Deno.readTextFile(`${TOKENIZER}tokenizer.json`));
  for (const { id, content } of added) {
    spec.added_tokens.push({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    });
  }
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(spec));
}

Deno.test("a tokenizer id of 1e9 gives the vocabulary size without a dense id table", async () => {
  await withTempDir(async (dir) => {
    await tokenizerWithAdded(dir, [{ id: 1e9, content: "<|far|>" }]);
    // The library's get_vocab walks every id up to the largest: the size must not come from it.
    const original = Tokenizer.prototype.get_vocab;
    Tokenizer.prototype.get_vocab = () => {
      throw new Error("get_vocab walks a dense id table");
    };
    try {
      const tok = (await loadTokenizer(dir))!;
      assert.equal(tok.vocabSize, 1e9 + 1);
      assert.equal(tok.decode([1e9]), "<|far|>");
      assert.equal(tok.tokenToId("<|far|>"), 1e9);
      assert.equal(tok.decode(tok.encode("the world")), "the world");
    } finally {
      Tokenizer.prototype.get_vocab = original;
    }
  });
});

Deno.test("tokenizer ids that are not integers in [0, 2^31 - 2] are errors naming the token", async () => {
  await withTempDir(async (dir) => {
    for (const id of [2 ** 31, -1, 1.5, "7", null]) {
      await tokenizerWithAdded(dir, [{ id, content: "<|bad|>" }]);
      await assert.rejects(
        loadTokenizer(dir),
        /tokenizer\.json: token "<\|bad\|>" has id .*; ids must be integers from 0 to 2147483646/,
        String(id),
      );
    }
  });
});

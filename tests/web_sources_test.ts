// The web-standard model sources (URL, blobs, buffers) read checkpoints exactly as the
// directory source does, keep refusing names that leave the model, and report truncation; the
// page's static server answers ranges and refuses paths outside its folders.
import assert from "node:assert/strict";
import { Checkpoint } from "../models/checkpoint/checkpoint.ts";
import { readConfig } from "../models/checkpoint/config.ts";
import { loadTokenizer } from "../models/checkpoint/tokenizer.ts";
import type { ModelSource } from "../models/checkpoint/source.ts";
import { blobSource, bufferSource, urlSource } from "../models/checkpoint/web_sources.ts";
import { f32Tensors, safetensorsBytes } from "../models/checkpoint/safetensors_write.ts";
import { handle, servedPath, startServer } from "../web/serve.ts";

const MODELS = new URL("./fixtures/models/", import.meta.url).pathname;

async function filesOf(dir: string): Promise<Record<string, Uint8Array<ArrayBuffer>>> {
  const files: Record<string, Uint8Array<ArrayBuffer>> = {};
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile) files[e.name] = await Deno.readFile(`${dir}/${e.name}`);
  }
  return files;
}

/** Every tensor of `source` equals the directory's, by getF32 and by streamF32 in odd steps. */
async function assertSameTensors(source: ModelSource, dir: string): Promise<void> {
  using want = await Checkpoint.open(dir);
  using got = await Checkpoint.open(source, { chunkBytes: 36 });
  assert.deepEqual(got.names(), want.names());
  for (const name of want.names()) {
    const expected = await want.getF32(name);
    assert.deepEqual(await got.getF32(name), expected, name);
    const streamed = new Float32Array(expected.length);
    let steps = 0;
    await got.streamF32(name, undefined, (values, at) => {
      assert.ok(values.length <= 18, `${name}: a step holds at most chunkBytes`);
      streamed.set(values, at);
      steps++;
    });
    assert.deepEqual(streamed, expected, `${name} streamed`);
    assert.equal(steps, Math.ceil(want.info(name)!.byteLength / 36));
  }
  assert.deepEqual(await readConfig(source), await readConfig(dir));
}

Deno.test("blob, buffer and URL sources read a checkpoint as the directory does", async () => {
  for (const model of ["mamba_bf16", "mamba_f16", "mamba2_tied_g1_n8_q8"]) {
    const dir = `${MODELS}${model}`;
    const files = await filesOf(dir);
    await assertSameTensors(bufferSource(files, model), dir);
    const blobs = Object.fromEntries(Object.entries(files).map(([k, v]) => [k, new Blob([v])]));
    await assertSameTensors(blobSource(blobs, model), dir);
  }
  const server = startServer(0);
  try {
    const dir = `${MODELS}mamba_bf16`;
    await assertSameTensors(urlSource(`${server.url}tests/fixtures/models/mamba_bf16`), dir);
    const missing = urlSource(`${server.url}tests/fixtures/models/none/`);
    await assert.rejects(readConfig(missing), /no config\.json in model directory http:\/\//);
    await assert.rejects(Checkpoint.open(missing), /no model\.safetensors or .*found: nothing/);
  } finally {
    await server.shutdown();
  }
});

Deno.test("a sharded checkpoint from buffers: each tensor from its shard", async () => {
  const a = Float32Array.from({ length: 7 }, (_, i) => i - 3.5);
  const b = Float32Array.from({ length: 5 }, (_, i) => 1 / (i + 1));
  const files = {
    "s1.safetensors": safetensorsBytes(f32Tensors({ a: { data: a, shape: [7] } })),
    "dir/s2.safetensors": safetensorsBytes(f32Tensors({ b: { data: b, shape: [5] } })),
    "model.safetensors.index.json": new TextEncoder().encode(
      JSON.stringify({ weight_map: { a: "s1.safetensors", b: "dir/s2.safetensors" } }),
    ),
  };
  using ckpt = await Checkpoint.open(bufferSource(files, "shards"), { chunkBytes: 8 });
  assert.deepEqual(ckpt.files, ["shards/s1.safetensors", "shards/dir/s2.safetensors"]);
  assert.deepEqual(await ckpt.getF32("a"), a);
  assert.deepEqual(await ckpt.getF32("b", [5]), b);
  const { "dir/s2.safetensors": _, ...partial } = files;
  await assert.rejects(
    Checkpoint.open(bufferSource(partial, "shards")),
    /references shard files missing from shards: dir\/s2\.safetensors \(holds 1 tensors/,
  );
});

Deno.test("a dropped folder's File objects are named by their path inside it", async () => {
  const tok = new URL("./fixtures/checkpoint/tokenizer/", import.meta.url).pathname;
  const files = await filesOf(tok);
  const dropped = Object.entries(files).map(([name, bytes]) => {
    const f = new File([bytes], name);
    Object.defineProperty(f, "webkitRelativePath", { value: `my-model/${name}` });
    return f;
  });
  const source = blobSource(dropped);
  assert.equal(source.name, "my-model");
  const fromFiles = (await loadTokenizer(source))!;
  const fromDir = (await loadTokenizer(tok))!;
  assert.deepEqual(fromFiles.encode("Hello, world!"), fromDir.encode("Hello, world!"));
  assert.throws(() => blobSource([dropped[0], dropped[0]]), /two files are named/);
});

Deno.test("web sources refuse names that leave the model and report truncated files", async () => {
  const files = await filesOf(`${MODELS}mamba_bf16`);
  const weights = files["model.safetensors"];
  const index = JSON.stringify({
    weight_map: { "backbone.norm_f.weight": "../secret.safetensors" },
  });
  const sharded = bufferSource({ "model.safetensors.index.json": new TextEncoder().encode(index) });
  await assert.rejects(Checkpoint.open(sharded), /goes up a directory with "\.\."/);
  await assert.rejects(bufferSource(files).open("/etc/passwd"), /is an absolute path/);
  await assert.rejects(urlSource("http://127.0.0.1:9/m/").open("a/../b"), /goes up a directory/);

  // Header intact, data cut short: the header says so before anything is read.
  const cut = bufferSource({ "model.safetensors": weights.subarray(0, weights.length - 10) });
  await assert.rejects(Checkpoint.open(cut), /run past the end of the file/);
  const file = (await bufferSource(files).open("model.safetensors"))!;
  await assert.rejects(
    file.read(weights.length - 4, new Uint8Array(8), "tensor x"),
    /unexpected end of file while reading tensor x \(wanted 8 bytes at offset \d+, got 4\)/,
  );
  const blob =
    (await blobSource({ "model.safetensors": new Blob([weights as Uint8Array<ArrayBuffer>]) }).open(
      "model.safetensors",
    ))!;
  await assert.rejects(blob.read(weights.length, new Uint8Array(1), "y"), /got 0\)/);
});

Deno.test("urlSource needs range requests and says so", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("{}"),
  );
  try {
    const source = urlSource(`http://127.0.0.1:${server.addr.port}/m`);
    await assert.rejects(
      readConfig(source),
      /config\.json: the server does not answer HTTP range requests \(200/,
    );
  } finally {
    await server.shutdown();
  }
});

Deno.test("the page's server: ranges, and no path outside its folders", async () => {
  for (
    const bad of [
      "/tests/fixtures/models/../../../deno.json",
      "/dist/%2e%2e/deno.json",
      "/dist/..%2fdeno.json",
      "/dist/a\\..\\b",
      "/dist//x",
      "/dist/./x",
      "/dist/%00",
      "/deno.json",
      "/tests/browser_test.ts",
      "/%zz",
    ]
  ) {
    assert.equal(typeof servedPath(bad), "string", bad);
  }
  assert.ok((servedPath("/") as { file: string }).file.endsWith("/examples/web/index.html"));

  const path = "/tests/fixtures/models/mamba_bf16/model.safetensors";
  const bytes = await Deno.readFile(`${MODELS}mamba_bf16/model.safetensors`);
  const get = (range?: string, method = "GET") =>
    handle(new Request(`http://x${path}`, { method, headers: range ? { range } : {} }));
  let res = await get("bytes=3-10");
  assert.equal(res.status, 206);
  assert.equal(res.headers.get("content-range"), `bytes 3-10/${bytes.length}`);
  assert.deepEqual(new Uint8Array(await res.arrayBuffer()), bytes.subarray(3, 11));
  res = await get(`bytes=${bytes.length - 5}-`);
  assert.deepEqual(new Uint8Array(await res.arrayBuffer()), bytes.subarray(bytes.length - 5));
  res = await get("bytes=-7");
  assert.deepEqual(new Uint8Array(await res.arrayBuffer()), bytes.subarray(bytes.length - 7));
  res = await get(`bytes=${bytes.length}-`);
  assert.equal(res.status, 416);
  assert.equal(res.headers.get("content-range"), `bytes */${bytes.length}`);
  res = await get("bytes=0-1,5-6");
  assert.equal(res.status, 416);
  await res.body?.cancel();
  res = await get();
  assert.equal(res.status, 200);
  assert.deepEqual(new Uint8Array(await res.arrayBuffer()), bytes);
  res = await get(undefined, "POST");
  assert.equal(res.status, 405);
  await res.body?.cancel();
  res = await handle(new Request("http://x/dist/none.js"));
  assert.equal(res.status, 404);
  await res.body?.cancel();
});

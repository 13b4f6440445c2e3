// The `logits` and `generate` commands on broken and unusual checkpoints and bad options:
// non-finite logits are errors (naming the step in generation), ids past a padded vocabulary's
// tokenizer decode visibly, --out is replaced whole or not at all, and options are checked as
// typed before the weights are loaded.
import assert from "node:assert/strict";
import { main } from "../cli.ts";
import { decodeNpy } from "../models/checkpoint/npy.ts";
import { hasGpu } from "../runtime/gpu_device.ts";
import { modelDir, padVocabulary, removeModelDir } from "./model_dirs.ts";

const gpuOpts = { ignore: !(await hasGpu()) };
const ROOT = new URL("..", import.meta.url).pathname;

/** Runs the CLI in this process, capturing what it prints. */
async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [], err: string[] = [];
  const { log, error } = console;
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  console.error = (...a: unknown[]) => err.push(a.join(" "));
  try {
    const code = await main(args);
    return { code, out: out.join("\n"), err: err.join("\n") };
  } finally {
    Object.assign(console, { log, error });
  }
}

/** Files in `dir` other than `keep` (a temporary file left behind would show here). */
async function strayFiles(dir: string, keep: string[]): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (!keep.includes(e.name)) names.push(e.name);
  return names;
}

Deno.test("cli: options are checked as typed, before the weights are read", async () => {
  // A model directory without weights: an option error must come before loading them.
  const dir = await modelDir("mamba_tied_n8", { weights: false });
  try {
    const gen = ["generate", "--model", dir, "--tokens", "1,2", "--max-new", "4"];
    const cases: [string[], number, RegExp][] = [
      [[...gen, "--seed", "9007199254740993"], 2, /--seed must be .*got "9007199254740993"/],
      [[...gen, "--seed", "1.5"], 2, /--seed .*got "1\.5"/],
      [["generate", "--model", dir, "--tokens", "1", "--max-new", "4e7"], 2, /got "4e7"/],
      [["generate", "--model", dir, "--tokens", "1", "--max-new", "0"], 2, /--max-new .*"0"/],
      [[...gen, "--temperature=-1"], 2, /--temperature must be a number ≥ 0.*"-1"/],
      [[...gen, "--temperature", "NaN"], 2, /--temperature .*"NaN"/],
      [[...gen, "--top-p", "0"], 2, /--top-p must be a number in \(0, 1\].*"0"/],
      [[...gen, "--top-k", "2.5"], 2, /--top-k .*"2\.5"/],
      [[...gen, "--eos", "x"], 2, /--eos must be comma-separated token ids, got "x"/],
      [[...gen, "--eos", "100"], 2, /--eos: token id 100 is outside the model's vocabulary/],
      [[...gen, "--dtype", "f8"], 2, /--dtype must be f32, f16 or bf16, got "f8"/],
      [["generate", "--model", dir, "--tokens", "5,100", "--max-new", "4"], 2, /token id 100/],
      [
        ["logits", "--model", dir, "--tokens", "1,2", "--out", `${dir}/no/such/dir/x.npy`],
        1,
        /--out .*no\/such\/dir\/x\.npy: directory .* does not exist/,
      ],
      [["logits", "--model", dir, "--tokens", "1,2", "--out", dir], 1, /--out .*is a directory/],
      [
        [
          "logits",
          "--model",
          dir,
          "--tokens",
          "1,2",
          "--out",
          `${dir}/config.json/x.npy`,
        ],
        1,
        /config\.json is not a directory/,
      ],
    ];
    for (const [args, code, message] of cases) {
      const got = await cli(args);
      assert.equal(got.code, code, `${args.join(" ")}: ${got.err}`);
      assert.match(got.err, message, args.join(" "));
      assert.doesNotMatch(got.err, /safetensors/, `${args.join(" ")} read the weights first`);
    }
    assert.deepEqual(await strayFiles(dir, ["config.json"]), []);
  } finally {
    await removeModelDir(dir);
  }
});

Deno.test({
  name: "cli generate: --max-new beyond the device's token buffer fails before loading",
  ...gpuOpts,
  async fn() {
    const dir = await modelDir("mamba_tied_n8", { weights: false });
    try {
      const got = await cli([
        "generate",
        "--model",
        dir,
        "--tokens",
        "1,2",
        "--max-new",
        "40000000000",
      ]);
      assert.equal(got.code, 1, got.err);
      assert.match(got.err, /--max-new 40000000000 is too large for this device: at most \d+/);
    } finally {
      await removeModelDir(dir);
    }
  },
});

Deno.test({
  name: "cli logits: an infinite weight is an error and --out keeps its old contents",
  ...gpuOpts,
  async fn() {
    const dir = await modelDir("mamba_tied_n8", {
      edit: (t) => t.get("backbone.norm_f.weight")!.data[3] = Infinity,
    });
    try {
      const out = `${dir}/old.npy`;
      await Deno.writeTextFile(out, "old contents");
      const got = await cli(["logits", "--model", dir, "--tokens", "5,17,30", "--out", out]);
      assert.equal(got.code, 1, got.err);
      assert.match(got.err, /logits: \d+ of 300 values are not finite \(NaN or ±Inf\)/);
      assert.equal(await Deno.readTextFile(out), "old contents");
      assert.deepEqual(await strayFiles(dir, ["config.json", "model.safetensors", "old.npy"]), []);
    } finally {
      await removeModelDir(dir);
    }
  },
});

Deno.test({
  name: "cli generate --json: NaN weights are an error naming the step, not an empty answer",
  ...gpuOpts,
  async fn() {
    const dir = await modelDir("mamba_tied_n8", {
      edit: (t) => t.get("backbone.norm_f.weight")!.data.fill(NaN),
    });
    try {
      const got = await cli([
        "generate",
        "--model",
        dir,
        "--tokens",
        "5,17,30",
        "--max-new",
        "6",
        "--json",
      ]);
      assert.equal(got.code, 1, got.err);
      assert.equal(got.out, "");
      assert.match(got.err, /generate: the logits of step 0 hold 100 non-finite value\(s\)/);
    } finally {
      await removeModelDir(dir);
    }
  },
});

Deno.test({
  name: "cli --dtype: 16-bit weights give the same greedy tokens and logits within 1e-2",
  ...gpuOpts,
  async fn() {
    const dir = await modelDir("mamba_untied_n16");
    try {
      const gen = ["generate", "--model", dir, "--tokens", "5,17,30", "--max-new", "8", "--json"];
      const want = JSON.parse((await cli(gen)).out).tokens;
      const got = await cli([...gen, "--dtype", "f16"]);
      assert.equal(got.code, 0, got.err);
      assert.deepEqual(JSON.parse(got.out).tokens, want);
      const logits = (dtype: string) =>
        cli([
          "logits",
          "--model",
          dir,
          "--tokens",
          "5,17,30",
          "--out",
          `${dir}/${dtype}.npy`,
          "--dtype",
          dtype,
        ]);
      for (const dtype of ["f32", "bf16"]) assert.equal((await logits(dtype)).code, 0);
      const read = async (dtype: string) =>
        decodeNpy(await Deno.readFile(`${dir}/${dtype}.npy`)).data as Float32Array;
      const [f32, bf16] = [await read("f32"), await read("bf16")];
      let d = 0, w = 0;
      for (let i = 0; i < f32.length; i++) [d, w] = [d + (bf16[i] - f32[i]) ** 2, w + f32[i] ** 2];
      assert.ok(
        Math.sqrt(d / w) > 1e-5 && Math.sqrt(d / w) < 3e-2,
        `bf16 error ${Math.sqrt(d / w)}`,
      );
    } finally {
      await removeModelDir(dir);
    }
  },
});

Deno.test({
  name: "cli generate: ids of a vocabulary padded past the tokenizer's decode visibly",
  ...gpuOpts,
  async fn() {
    // 300 logits, 267 token ids: at temperature 100 about one token in nine is padding.
    const dir = await modelDir("mamba_tied_n8", { edit: padVocabulary(300), tokenizer: true });
    try {
      const args = ["generate", "--model", dir, "--tokens", "5,17,30", "--max-new", "40"];
      const sampled = [...args, "--temperature", "100", "--seed", "3"];
      const got = await cli([...sampled, "--json"]);
      assert.equal(got.code, 0, got.err);
      const { tokens, text } = JSON.parse(got.out);
      const padded = tokens.filter((t: number) => t >= 267);
      assert.ok(padded.length > 0, `no id ≥ 267 was sampled (${tokens}): the test tests nothing`);
      for (const t of padded) assert.ok(text.includes(`<unk:${t}>`), `${t} in ${text}`);
      // Streaming shows the same text.
      const written: string[] = [];
      const write = Deno.stdout.writeSync;
      Deno.stdout.writeSync = (
        b: Uint8Array,
      ) => (written.push(new TextDecoder().decode(b)), b.length);
      try {
        const streamed = await cli(sampled);
        assert.equal(streamed.code, 0, streamed.err);
      } finally {
        Deno.stdout.writeSync = write;
      }
      assert.equal(written.join(""), text);
    } finally {
      await removeModelDir(dir);
    }
  },
});

Deno.test({
  name: "cli logits: a write that fails part-way leaves the old --out file and no temporary",
  ...gpuOpts,
  async fn() {
    const dir = await modelDir("mamba_tied_n8");
    try {
      const out = `${dir}/old.npy`;
      await Deno.writeTextFile(out, "old contents");
      const tokens = Array.from({ length: 40 }, (_, i) => (7 * i) % 100).join(",");
      // A file-size limit of 8 KiB (SIGXFSZ ignored, so the write fails with EFBIG) makes the
      // 16 KB of logits fail part-way, as a full disk would.
      const script = 'trap "" XFSZ; ulimit -f 8; exec "$@"';
      const cmd = new Deno.Command("bash", {
        args: ["-c", script, "bash", Deno.execPath(), "run", "-A", "--no-check", "cli.ts"]
          .concat(["logits", "--model", dir, "--tokens", tokens, "--out", out]),
        cwd: ROOT,
        env: { MESA_SHADER_CACHE_DISABLE: "true" },
        stdout: "piped",
        stderr: "piped",
      });
      const got = await cmd.output();
      const err = new TextDecoder().decode(got.stderr);
      assert.equal(got.code, 1, err);
      assert.match(err, /writing .*old\.npy failed \(File too large\).*left as it was/);
      assert.equal(await Deno.readTextFile(out), "old contents");
      assert.deepEqual(await strayFiles(dir, ["config.json", "model.safetensors", "old.npy"]), []);
      // Without the limit the same command replaces the file with the logits.
      const ok = await cli(["logits", "--model", dir, "--tokens", tokens, "--out", out]);
      assert.equal(ok.code, 0, ok.err);
      assert.deepEqual(decodeNpy(await Deno.readFile(out)).shape, [40, 100]);
    } finally {
      await removeModelDir(dir);
    }
  },
});

// Without any WebGPU adapter (simulated by pointing Vulkan at no driver): the CLI says so
// clearly, `compile` falls back to the CPU interpreter with a notice, and `backend: "gpu"` fails.
import assert from "node:assert/strict";

const env = {
  DENO_WEBGPU_BACKEND: "vulkan",
  VK_DRIVER_FILES: "/nonexistent/none.json",
  VK_ICD_FILENAMES: "/nonexistent/none.json",
  NO_COLOR: "1",
};

async function denoRun(args: string[], code?: string) {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: code ? ["eval", code] : ["run", "-A", ...args],
    env,
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  });
  const out = await cmd.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("no adapter: `cli info` exits 1 with one clear line", async () => {
  const r = await denoRun(["cli.ts", "info"]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /ssmkit: no WebGPU adapter/);
  assert.doesNotMatch(r.stderr, /at .*\.ts:\d+/, "no stack trace");
});

Deno.test("no adapter: compile falls back to the CPU with a notice; backend gpu throws", async () => {
  const mod = new URL("../mod.ts", import.meta.url).href;
  const r = await denoRun(
    [],
    `
    import { compile, mul, NoAdapterError } from "${mod}";
    const p = await compile({ x: "a" }, ({ x }) => mul(x, 3), { a: 2 });
    console.log(p.backend, Array.from(await p.run({ x: [1, 2] })).join(","));
    try { await compile({ x: "a" }, ({ x }) => x, { a: 1 }, { backend: "gpu" }); }
    catch (e) { console.log(e instanceof NoAdapterError, e.message); }
  `,
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^cpu 3,6$/m);
  assert.match(r.stdout, /^true .*no WebGPU adapter/m);
  assert.match(r.stderr, /running on the float64 CPU interpreter/);
});

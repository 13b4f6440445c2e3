// `ssmkit wgsl FILE.ts` on the shipped example and on a user's file: it prints the kernels the
// compiler generates for each exported program, resolves a relative FILE.ts against the
// directory the user ran the command from (INIT_CWD under `deno task`, else the working
// directory), and names the path it tried when it fails.
import assert from "node:assert/strict";
import { DEFAULT_LIMITS, generateKernels, trace } from "../compiler.ts";
import { decodeStep, prefill } from "../examples/selective_scan_demo.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const CONFIG = `${ROOT}/deno.json`;

/**
 * Runs `deno` with `args` in `cwd`. The environment is this process's without INIT_CWD (a
 * `deno task test` run sets it, and `deno task` keeps an inherited value), plus `env`.
 */
async function deno(args: string[], cwd: string, env: Record<string, string> = {}) {
  const base = Deno.env.toObject();
  delete base.INIT_CWD;
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { ...base, ...env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  // Deno's own "Download …" progress lines (a machine whose npm cache lacks registry metadata,
  // as on the offline GPU machine) are not the CLI's output.
  const stderr = text.decode(out.stderr).split("\n").filter((line) => !/Download\b/.test(line))
    .join("\n");
  return { code: out.code, stdout: text.decode(out.stdout), stderr };
}

/** The text `wgsl --default-limits` prints for one program, generated here directly. */
function expectedListing(name: string, def: typeof prefill | typeof decodeStep): string {
  const graph = trace(def.inputs, def.fn as never, def.sizes);
  const { kernels } = generateKernels(graph, DEFAULT_LIMITS);
  const lines = [`// ===== program ${name}: ${kernels.length} kernel(s) =====`];
  for (const k of kernels) {
    lines.push(`// ----- ${k.name} (${k.kind}), workgroups ${k.workgroups.join("×")} -----`);
    lines.push(k.wgsl);
  }
  return lines.join("\n") + "\n";
}

Deno.test("cli wgsl: prints the kernels of the example's programs, from the repository", async () => {
  const r = await deno(
    ["run", "-A", "cli.ts", "wgsl", "examples/selective_scan_demo.ts", "--default-limits"],
    ROOT,
  );
  assert.equal(r.code, 0, r.stderr);
  // Both exported programs, in export-name order, exactly as the compiler generates them.
  assert.equal(
    r.stdout,
    expectedListing("decodeStep", decodeStep) + expectedListing("prefill", prefill),
  );
  assert.match(r.stdout, /@compute/);
});

Deno.test("cli wgsl: under deno task, a relative path is relative to the user's directory", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A user's own program file, outside the repository, importing the checkout's mod.ts.
    await Deno.writeTextFile(
      `${dir}/my_program.ts`,
      `import { defineProgram, exp, sum } from "file://${ROOT}/mod.ts";\n` +
        `export const norm = defineProgram({ x: "r c" }, ({ x }) => sum(exp(x), "c"), ` +
        `{ r: 3, c: 5 });\n`,
    );
    await Deno.mkdir(`${dir}/sub`);
    // deno task runs cli.ts in the repository; the path is relative to `dir/sub`.
    const r = await deno(
      ["task", "-q", "-c", CONFIG, "cli", "wgsl", "../my_program.ts", "--default-limits"],
      `${dir}/sub`,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^\/\/ ===== program norm: 1 kernel\(s\) =====$/m);
    assert.match(r.stdout, /^\/\/ ----- k0_reduce_r \(reduce\), workgroups /m);
    assert.match(r.stdout, /exp\(/);

    // The example from a directory inside the repository, by a path relative to it, for this
    // machine's adapter (or WebGPU's default limits, with a notice, where there is none).
    const ex = await deno(
      ["task", "-q", "cli", "wgsl", "selective_scan_demo.ts", "--program", "prefill"],
      `${ROOT}/examples`,
    );
    assert.equal(ex.code, 0, ex.stderr);
    assert.match(ex.stdout, /^\/\/ ===== program prefill: \d+ kernel\(s\) =====$/m);
    assert.doesNotMatch(ex.stdout, /program decodeStep/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli wgsl: plain deno run resolves against the working directory", async () => {
  const r = await deno(
    [
      "run",
      "-A",
      `${ROOT}/cli.ts`,
      "wgsl",
      "../examples/selective_scan_demo.ts",
      "--default-limits",
    ],
    `${ROOT}/tests`,
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /program prefill/);
});

Deno.test("cli wgsl: errors are one line naming the resolved path", async () => {
  const missing = await deno(
    ["task", "-q", "-c", CONFIG, "cli", "wgsl", "nope/missing.ts"],
    `${ROOT}/tests`,
  );
  assert.equal(missing.code, 1);
  assert.equal(
    missing.stderr.trim(),
    `ssmkit: wgsl: cannot read ${ROOT}/tests/nope/missing.ts: no such file`,
  );

  // The induction demo exports no program, and importing it must not run the demo.
  const none = await deno(
    ["run", "-A", "cli.ts", "wgsl", "examples/induction_demo.ts", "--default-limits"],
    ROOT,
  );
  assert.equal(none.code, 1);
  assert.equal(
    none.stderr.trim(),
    `ssmkit: wgsl: ${ROOT}/examples/induction_demo.ts exports no programs ` +
      "(export values made with defineProgram)",
  );
  assert.equal(none.stdout, "");

  const wrongName = await deno(
    ["run", "-A", "cli.ts", "wgsl", "examples/selective_scan_demo.ts", "--program", "step"],
    ROOT,
  );
  assert.equal(wrongName.code, 1);
  assert.equal(
    wrongName.stderr.trim(),
    `ssmkit: wgsl: ${ROOT}/examples/selective_scan_demo.ts exports no program "step"; ` +
      "it exports decodeStep, prefill",
  );
});

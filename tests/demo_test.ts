// A short run of `deno task demo` (the induction-heads extrapolation) on this machine's adapter:
// it loads the shipped checkpoint, prints the table and writes the SVG plot.
import assert from "node:assert/strict";

Deno.test("demo: short induction-heads run prints the table and writes the plot", async () => {
  const svg = await Deno.makeTempFile({ suffix: ".svg" });
  const cmd = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "examples/induction_demo.ts",
      "--max-len",
      "1024",
      "--sequences",
      "16",
      "--seed",
      "3",
      "--svg",
      svg,
    ],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  });
  const out = await cmd.output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.match(stdout, /adapter: /);
  assert.match(stdout, /scan strategy: recurrent/);
  const rows = [...stdout.matchAll(/^\s+(\d+)\s+([\d.]+)%/gm)];
  assert.deepEqual(rows.map((r) => Number(r[1])), [256, 1024]);
  // Trained at 256, the model solves the task there (the checkpoint's log says ≥ 99%).
  assert.ok(Number(rows[0][2]) >= 90, `accuracy at 256: ${rows[0][2]}%`);
  const plot = await Deno.readTextFile(svg);
  assert.match(plot, /^<svg /);
  assert.match(plot, /<polyline/);
});

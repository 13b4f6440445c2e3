// The test command behind `deno task test`: runs `deno test -A --parallel` over tests/ (or the
// paths given) with its output passed through unchanged, and returns its exit code, with one
// exception. On NVIDIA's Vulkan driver, a `deno test --parallel` process whose workers each
// created a WebGPU device sometimes dies with SIGSEGV after the runner has printed its summary
// (a tokio worker thread faults in libc's thread exit path). Sixteen test files that only
// create a device reproduce it (2 of 40 runs on an H200, 2026-12-04; bench/RESULTS.md), so it is
// Deno/wgpu/driver teardown, not ssmkit. A SIGSEGV after a summary of "0 failed" is therefore
// reported in one line and counted as a pass; any failed test, a missing summary or any other
// signal keeps the runner's exit code.
/**
 * The exit code the suite reports: the runner's own, except 0 for a SIGSEGV after a summary of
 * "0 failed" (the known teardown crash above). `tail` is the end of the runner's stdout.
 */
export function suiteExitCode(status: Deno.CommandStatus, tail: string): number {
  // deno test's closing line, without colours: "ok | 290 passed | 0 failed | 2 ignored (25s)".
  const plain = stripAnsi(tail);
  const clean = /^ok \| \d+ passed \| 0 failed/m.test(plain);
  return status.signal === "SIGSEGV" && clean ? 0 : status.code;
}

function stripAnsi(text: string): string {
  const escape = String.fromCharCode(27);
  return text.split(escape).map((part, i) => i === 0 ? part : part.replace(/^\[[0-9;]*m/, ""))
    .join("");
}

if (import.meta.main) {
  const paths = Deno.args.length > 0 ? Deno.args : ["tests/"];
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--parallel", ...paths],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  // Pass stdout through while keeping its tail, where the runner's summary line is.
  let tail = "";
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    await Deno.stdout.write(chunk);
    tail = (tail + decoder.decode(chunk, { stream: true })).slice(-4096);
  }
  const status = await child.status;
  const code = suiteExitCode(status, tail);
  if (code === 0 && status.code !== 0) {
    console.error(
      "run_suite: every test passed, then the test process crashed at exit (SIGSEGV): the " +
        "known teardown crash of parallel WebGPU workers on NVIDIA's driver (tests/run_suite.ts)",
    );
  }
  Deno.exit(code);
}

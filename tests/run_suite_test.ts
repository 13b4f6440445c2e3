// The suite's exit code: a SIGSEGV after a clean summary passes, anything else keeps the code.
import assert from "node:assert/strict";
import { suiteExitCode } from "./run_suite.ts";

const crashed = { success: false, code: 139, signal: "SIGSEGV" } as const;
const esc = String.fromCharCode(27);
const clean = `${esc}[0m${esc}[32mok${esc}[0m | 290 passed | 0 failed ${esc}[0m(25s)\n`;
const failed = `${esc}[0m${esc}[31mFAILED${esc}[0m | 289 passed | 1 failed ${esc}[0m(25s)\n`;

Deno.test("run_suite: a crash at exit after a clean summary counts as a pass", () => {
  assert.equal(suiteExitCode(crashed, `...\n${clean}`), 0);
});

Deno.test("run_suite: failures, missing summaries and other signals keep their code", () => {
  assert.equal(suiteExitCode(crashed, failed), 139);
  assert.equal(suiteExitCode(crashed, "running 3 tests from ./tests/a_test.ts\n"), 139);
  assert.equal(suiteExitCode({ success: false, code: 134, signal: "SIGABRT" }, clean), 134);
  assert.equal(suiteExitCode({ success: false, code: 1, signal: null }, failed), 1);
  assert.equal(suiteExitCode({ success: true, code: 0, signal: null }, clean), 0);
});

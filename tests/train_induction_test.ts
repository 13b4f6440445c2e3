// `deno task train-induction` end to end at a toy size (training length 16, three steps): it
// trains on the adapter, writes an HF directory that loadModel reads and the demo could load,
// evaluates the lengths asked for, and logs what it did. A bad option is a one-line error.
import assert from "node:assert/strict";
import { loadOptimizerState } from "../models/train/optimizer_state.ts";
import { loadParams } from "../models/train/save.ts";
import { INDUCTION_CONFIG } from "../models/induction/task.ts";

const ROOT = new URL("..", import.meta.url).pathname;

async function runScript(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "models/induction/train.ts", ...args],
    cwd: ROOT,
    env: { NODEVICE_SELECT: "1" },
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** Options of the resume tests' toy runs. */
const RESUME_COMMON = [
  "--length=16",
  "--batch=2",
  "--block=2",
  "--eval-lengths=16",
  "--sequences=1",
];

/** Runs `body` with two fresh run directories, removed afterwards. */
async function withTwoDirs(body: (first: string, second: string) => Promise<void>) {
  const first = await Deno.makeTempDir({ prefix: "ssmkit_induction_" });
  const second = await Deno.makeTempDir({ prefix: "ssmkit_induction_" });
  try {
    await body(first, second);
  } finally {
    await Deno.remove(first, { recursive: true });
    await Deno.remove(second, { recursive: true });
  }
}

Deno.test("train-induction: a few steps train, save, reload and evaluate", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ssmkit_induction_" });
  try {
    const r = await runScript([
      "--steps=3",
      "--length=16",
      "--batch=2",
      "--block=3",
      "--steps-per-submit=2",
      "--eval-lengths=16,64",
      "--sequences=2",
      `--out=${dir}`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /step +3 {2}loss \d+\.\d{4} {2}tokens\/s/);
    assert.match(r.stdout, /^ {6}16 .*\n {6}64 /m);
    const { config, params } = await loadParams(dir);
    assert.deepEqual(config, INDUCTION_CONFIG);
    assert.equal(params["backbone.layers.1.mixer.A_log"].length, 128 * 16);
    const log = JSON.parse(await Deno.readTextFile(`${dir}/train_log.json`));
    assert.equal(log.steps, 3);
    assert.equal(log.log.length, 1);
    assert.ok(log.log[0].loss > 0 && Number.isFinite(log.log[0].loss));
    assert.deepEqual(log.eval.map((e: { length: number }) => e.length), [16, 64]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("train-induction: --resume continues from a saved run and counts its steps", () =>
  withTwoDirs(async (first, second) => {
    const a = await runScript(["--steps=2", ...RESUME_COMMON, `--out=${first}`]);
    assert.equal(a.code, 0, a.stderr);
    const saved = (await loadParams(first)).params;
    const b = await runScript([
      "--steps=4",
      ...RESUME_COMMON,
      `--resume=${first}`,
      `--out=${second}`,
    ]);
    assert.equal(b.code, 0, b.stderr);
    assert.match(b.stdout, /resuming at 2\)/, "AdamW's state was restored");
    assert.equal((await loadOptimizerState(first))?.step, 2);
    assert.equal((await loadOptimizerState(second))?.step, 4);
    assert.match(b.stdout, /step +4 {2}loss/);
    const log = JSON.parse(await Deno.readTextFile(`${second}/train_log.json`));
    assert.equal(log.steps, 4);
    assert.deepEqual(log.resumed_from, { dir: first, steps: 2 });
    // Two more steps moved the weights on from the saved ones.
    const moved = (await loadParams(second)).params["backbone.layers.0.mixer.in_proj.weight"];
    const start = saved["backbone.layers.0.mixer.in_proj.weight"];
    assert.ok(moved.some((v, i) => v !== start[i]), "the resumed run did not train");
    const done = await runScript(["--steps=2", ...RESUME_COMMON, `--resume=${second}`]);
    assert.equal(done.code, 2);
    assert.match(done.stderr, /already ran 4 of --steps 2/);
  }));

Deno.test("train-induction: a run resumed without AdamW's state can itself be resumed", () =>
  withTwoDirs(async (first, second) => {
    const a = await runScript(["--steps=2", ...RESUME_COMMON, `--out=${first}`]);
    assert.equal(a.code, 0, a.stderr);
    // A directory saved before optimizer states were kept: the moments restart from zero.
    await Deno.remove(`${first}/optimizer`, { recursive: true });
    const b = await runScript([
      "--steps=3",
      ...RESUME_COMMON,
      `--resume=${first}`,
      `--out=${second}`,
    ]);
    assert.equal(b.code, 0, b.stderr);
    assert.match(b.stdout, /resuming at 2, AdamW's moments from zero/);
    const log = JSON.parse(await Deno.readTextFile(`${second}/train_log.json`));
    assert.equal(log.steps, 3);
    assert.equal(log.optimizer_steps, 1);
    assert.equal((await loadOptimizerState(second))?.step, 1);
    // Its moments (one update) are restored although the run counts three steps.
    const c = await runScript([
      "--steps=4",
      ...RESUME_COMMON,
      `--resume=${second}`,
      `--out=${first}`,
    ]);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /resuming at 3\)/);
    assert.equal((await loadOptimizerState(first))?.step, 2);
  }));

Deno.test("train-induction: a bad option is one line on stderr, exit code 2", async () => {
  const r = await runScript(["--steps=0"]);
  assert.equal(r.code, 2);
  assert.equal(r.stderr.trim(), "train-induction: --steps must be an integer ≥ 1, got 0");
});

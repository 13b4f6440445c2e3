// bench/issue_round.sh: every part its header lists has a case, every case is listed, and each
// part's stated worst case is the sum of its steps' time limits (so a part fits one device call).
import assert from "node:assert/strict";

const script = await Deno.readTextFile(new URL("../bench/issue_round.sh", import.meta.url));

/** The header's parts: name → the first bracketed number after it (its worst case, s). */
function listedParts(): Map<string, number> {
  const parts = new Map<string, number>();
  const header = script.split("\n").filter((l) => l.startsWith("#"));
  let current: string | undefined;
  for (const line of header) {
    const start = line.match(/^# {3}(\w+) {2,}issues? /);
    if (start) current = start[1];
    const limit = line.match(/\[(\d+) s/);
    if (current && limit && !parts.has(current)) parts.set(current, Number(limit[1]));
  }
  return parts;
}

/** The case statement's parts: name → the sum of its steps' limits (a checkpoints step: 100 s). */
function scriptedParts(): Map<string, number> {
  const parts = new Map<string, number>();
  const body = script.slice(script.indexOf('case "$1" in'));
  for (const m of body.matchAll(/^ {4}(\w+)\)\n([\s\S]*?)^ {6};;/gm)) {
    let sum = 0;
    for (const line of m[2].split("\n")) {
      // The baseline's steps run only with ISSUE_ROUND_BASELINE: the header counts them apart.
      if (line.includes("$base")) continue;
      const step = line.match(/^\s+step \w+ (\d+) /);
      if (step) sum += Number(step[1]);
      if (/^\s+checkpoints /.test(line)) sum += 100;
    }
    parts.set(m[1], sum);
  }
  return parts;
}

Deno.test("issue_round.sh: the parts listed are the parts scripted, within their stated limits", () => {
  const listed = listedParts(), scripted = scriptedParts();
  assert.deepEqual([...scripted.keys()].sort(), [...listed.keys()].sort());
  for (const [part, limit] of listed) {
    assert.equal(scripted.get(part), limit, `part ${part}: steps sum to ${scripted.get(part)} s`);
    assert.ok(limit <= 600, `part ${part} exceeds a device call's 600 s`);
  }
});

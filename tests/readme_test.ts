// The README's and the docs' code runs as printed: every ```ts block of README.md and docs/*.md
// is run with `deno run -A` from a project laid out as the README describes (its deno.json is the
// README's ```json block, mapping `@ssmkit/ssmkit` to a checkout in ../ssmkit), and every
// `// prints X` comment must match the line the block prints, in order.
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** A fenced code block: its language and its text, dedented to the fence's indentation. */
export interface CodeBlock {
  readonly lang: string;
  readonly code: string;
  /** 1-based line of the opening fence in the Markdown source. */
  readonly line: number;
}

/** The fenced code blocks of a Markdown text (indented fences in list items included). */
export function codeBlocks(markdown: string): CodeBlock[] {
  const blocks: CodeBlock[] = [];
  const lines = markdown.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const open = lines[i].match(/^( *)```(\w*)\s*$/);
    if (!open) continue;
    const [, indent, lang] = open;
    const body: string[] = [];
    let j = i + 1;
    while (j < lines.length && lines[j] !== `${indent}\`\`\``) {
      body.push(lines[j].startsWith(indent) ? lines[j].slice(indent.length) : lines[j]);
      j++;
    }
    assert.ok(j < lines.length, `README.md:${i + 1}: code block is never closed`);
    blocks.push({ lang, code: body.join("\n") + "\n", line: i + 1 });
    i = j;
  }
  return blocks;
}

/** What a block says it prints: the `X` of each `// prints X` comment, in order. */
export function expectedPrints(code: string): string[] {
  return [...code.matchAll(/\/\/ prints (.+)$/gm)].map((m) => m[1].trim());
}

/** Asserts that `expected` lines occur in `stdout`, in order (other lines may come between). */
function assertPrintsInOrder(stdout: string, expected: string[], what: string): void {
  const lines = stdout.split("\n").map((l) => l.trim());
  let at = 0;
  for (const want of expected) {
    const found = lines.indexOf(want, at);
    assert.ok(found >= 0, `${what}: expected a line "${want}" (in order) in:\n${stdout}`);
    at = found + 1;
  }
}

const readme = await Deno.readTextFile(`${ROOT}/README.md`);
const blocks = codeBlocks(readme);
const tsBlocks = blocks.filter((b) => b.lang === "ts");
const mapping = blocks.filter((b) => b.lang === "json" && b.code.includes("@ssmkit/ssmkit"));
/** The docs' ts blocks, each with its file (relative to the checkout). */
const docBlocks: { file: string; block: CodeBlock }[] = [];
for (
  const entry of [...Deno.readDirSync(`${ROOT}/docs`)].sort((a, b) => a.name < b.name ? -1 : 1)
) {
  if (!entry.name.endsWith(".md")) continue;
  const file = `docs/${entry.name}`;
  const text = await Deno.readTextFile(`${ROOT}/${file}`);
  for (const block of codeBlocks(text)) if (block.lang === "ts") docBlocks.push({ file, block });
}

Deno.test("readme: the block extractor reads indented fences and prints comments", () => {
  const md = "text\n```ts\nconst a = 1; // prints 1\n```\n- item\n\n  ```json\n  {}\n  ```\n";
  assert.deepEqual(codeBlocks(md), [
    { lang: "ts", code: "const a = 1; // prints 1\n", line: 2 },
    { lang: "json", code: "{}\n", line: 7 },
  ]);
  assert.deepEqual(expectedPrints("x; // prints 12800 true\ny; // other\n"), ["12800 true"]);
});

Deno.test("readme: one import mapping and runnable blocks that say what they print", () => {
  assert.equal(mapping.length, 1, "README.md needs one ```json block mapping @ssmkit/ssmkit");
  assert.ok(tsBlocks.length >= 3, `only ${tsBlocks.length} ts blocks in README.md`);
  const all = [...tsBlocks.map((block) => ({ file: "README.md", block })), ...docBlocks];
  for (const { file, block: b } of all) {
    assert.ok(expectedPrints(b.code).length > 0, `${file}:${b.line}: no "// prints" comment`);
    assert.match(b.code, /from "@ssmkit\/ssmkit(\/compiler)?"/, `${file}:${b.line}`);
  }
});

for (
  const { file, block } of [
    ...tsBlocks.map((block) => ({ file: "README.md", block })),
    ...docBlocks,
  ]
) {
  Deno.test(`readme: the ts block at ${file}:${block.line} runs as printed`, async () => {
    // A project next to a checkout named ssmkit, as the README lays it out.
    const dir = await Deno.makeTempDir({ prefix: "ssmkit_readme_" });
    try {
      await Deno.symlink(ROOT, `${dir}/ssmkit`);
      await Deno.mkdir(`${dir}/project`);
      await Deno.writeTextFile(`${dir}/project/deno.json`, mapping[0].code);
      await Deno.writeTextFile(`${dir}/project/main.ts`, block.code);
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "main.ts"],
        cwd: `${dir}/project`,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(out.stdout);
      const stderr = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, `${file}:${block.line} failed:\n${stderr}`);
      assertPrintsInOrder(stdout, expectedPrints(block.code), `${file}:${block.line}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

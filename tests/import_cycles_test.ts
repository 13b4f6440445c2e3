// The library's modules import each other without cycles (type-only imports included): a file
// can be read knowing only what it imports. The scan kernels share their description through
// codegen/scan_spec.ts instead of importing each other.
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url);
/** The library's source: the entry points and the four source folders. */
const SOURCES = ["mod.ts", "compiler.ts", "cli.ts", "dsl", "codegen", "runtime", "models"];

/** The relative modules `text` imports or re-exports (static `from "./…"` clauses). */
export function relativeImports(text: string): string[] {
  return [...text.matchAll(/^(?:import|export)\b[^;]*?\bfrom\s+"(\.{1,2}\/[^"]+)";/gms)]
    .map((m) => m[1]);
}

/** Every cycle of `graph` found by a depth-first search, each as its path of modules. */
export function findCycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  const onPath = new Set<string>();
  const done = new Set<string>();
  const path: string[] = [];
  const cycles: string[][] = [];
  const visit = (node: string) => {
    onPath.add(node);
    path.push(node);
    for (const next of graph.get(node) ?? []) {
      if (onPath.has(next)) cycles.push([...path.slice(path.indexOf(next)), next]);
      else if (!done.has(next)) visit(next);
    }
    path.pop();
    onPath.delete(node);
    done.add(node);
  };
  for (const node of graph.keys()) if (!done.has(node)) visit(node);
  return cycles;
}

async function sourceFiles(): Promise<URL[]> {
  const files: URL[] = [];
  const walk = async (dir: URL) => {
    for await (const entry of Deno.readDir(dir)) {
      const url = new URL(entry.name + (entry.isDirectory ? "/" : ""), dir);
      if (entry.isDirectory) await walk(url);
      else if (entry.name.endsWith(".ts")) files.push(url);
    }
  };
  for (const source of SOURCES) {
    const url = new URL(source, ROOT);
    if (source.endsWith(".ts")) files.push(url);
    else await walk(new URL(source + "/", ROOT));
  }
  return files;
}

Deno.test("import cycles: the detector finds a cycle through type-only and multi-line imports", () => {
  const a = `import type { B } from "./b.ts";\nimport {\n  c,\n} from "../x/c.ts";\n`;
  assert.deepEqual(relativeImports(a), ["./b.ts", "../x/c.ts"]);
  assert.deepEqual(relativeImports(`export { f } from "./f.ts";\nimport x from "npm:x";`), [
    "./f.ts",
  ]);
  const graph = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a", "d"]], ["d", []]]);
  assert.deepEqual(findCycles(graph), [["a", "b", "c", "a"]]);
  assert.deepEqual(findCycles(new Map([["a", ["b"]], ["b", []]])), []);
});

Deno.test("import cycles: none among the library's modules", async () => {
  const files = await sourceFiles();
  assert.ok(files.length > 40, `found only ${files.length} source files`);
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const imports = relativeImports(await Deno.readTextFile(file));
    graph.set(file.href, imports.map((spec) => new URL(spec, file).href));
  }
  const show = (cycle: string[]) => cycle.map((m) => m.slice(ROOT.href.length)).join(" → ");
  assert.deepEqual(findCycles(graph).map(show), []);
});

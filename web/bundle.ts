/**
 * `deno task bundle`: the browser build. It type-checks the public API and the example page as
 * browser code (DOM library and `@webgpu/types`, no Deno namespace: web/browser.json, which
 * also puts platform/browser.ts in place of platform/deno.ts), then bundles both with esbuild
 * into `dist/` (git-ignored): `ssmkit.js`, the public API as one minified ES module, and
 * `web_app.js`, the page of examples/web/, each with a source map. A bundle that still names
 * `Deno.` fails the build.
 *
 *   deno task bundle [--no-check]
 *
 * @module
 */

import * as esbuild from "esbuild";

const ROOT = new URL("../", import.meta.url).pathname;
const OUT = `${ROOT}dist`;

/** The entry points: the public API, and the example page's script. */
export const ENTRIES = [
  { in: `${ROOT}mod.ts`, out: "ssmkit" },
  { in: `${ROOT}examples/web/app.ts`, out: "web_app" },
];

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd: ROOT, stderr: "inherit" }).output();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed (exit ${out.code})`);
  return new TextDecoder().decode(out.stdout);
}

/**
 * Resolves the bare npm imports of deno.json (`"@huggingface/tokenizers": "npm:...@0.2.0"`)
 * to their folders in Deno's npm cache, where esbuild finds their package.json; and the Deno
 * platform module to the browser one.
 */
async function denoResolver(): Promise<esbuild.Plugin> {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  const cache = JSON.parse(await run(Deno.execPath(), ["info", "--json"])).npmCache as string;
  const npm = new Map<string, string>();
  for (const [name, target] of Object.entries(config.imports as Record<string, string>)) {
    const m = /^npm:(@?[^@]+)@(.+)$/.exec(target);
    if (m) npm.set(name, `${cache}/registry.npmjs.org/${m[1]}/${m[2]}`);
  }
  const denoPlatform = `${ROOT}platform/deno.ts`;
  return {
    name: "ssmkit-deno-resolver",
    setup(build) {
      build.onResolve({ filter: /^[^./]/ }, (args) => {
        const dir = npm.get(args.path);
        return dir ? build.resolve(dir, { kind: args.kind, resolveDir: ROOT }) : undefined;
      });
      build.onResolve({ filter: /(^|\/)deno\.ts$/ }, async (args) => {
        const path = `${args.resolveDir}/${args.path}`;
        if ((await Deno.realPath(path)) !== denoPlatform) return undefined;
        return { path: `${ROOT}platform/browser.ts` };
      });
    },
  };
}

/** Files of the build that mention `Deno.` (each with the first match's surroundings). */
export function denoReferences(files: { path: string; text: string }[]): string[] {
  const found: string[] = [];
  for (const f of files) {
    const at = f.text.search(/\bDeno\./);
    if (at >= 0) found.push(`${f.path}: …${f.text.slice(Math.max(0, at - 40), at + 40)}…`);
  }
  return found;
}

/**
 * Builds the bundles (after the browser type check unless `check` is false).
 *
 * @returns The files written, with their sizes.
 */
export async function bundle(check = true): Promise<{ path: string; bytes: number }[]> {
  if (check) {
    await run(Deno.execPath(), [
      "check",
      "--config",
      "web/browser.json",
      ...ENTRIES.map((e) => e.in),
    ]);
  }
  // Deno's npm cache must hold the packages the bundle imports.
  await run(Deno.execPath(), ["cache", ...ENTRIES.map((e) => e.in)]);
  const result = await esbuild.build({
    entryPoints: ENTRIES,
    outdir: OUT,
    bundle: true,
    // Each file stands alone: ssmkit.js can be copied into any site as one module.
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    sourcemap: true,
    plugins: [await denoResolver()],
    write: false,
    logLevel: "warning",
  });
  const js = result.outputFiles.filter((f) => f.path.endsWith(".js"));
  const bad = denoReferences(js.map((f) => ({ path: f.path, text: f.text })));
  if (bad.length) throw new Error(`the bundle refers to Deno:\n${bad.join("\n")}`);
  await Deno.remove(OUT, { recursive: true }).catch(() => {});
  const written = [];
  for (const f of result.outputFiles) {
    await Deno.mkdir(f.path.slice(0, f.path.lastIndexOf("/")), { recursive: true });
    await Deno.writeFile(f.path, f.contents);
    written.push({ path: f.path.slice(ROOT.length), bytes: f.contents.length });
  }
  return written;
}

if (import.meta.main) {
  try {
    const files = await bundle(!Deno.args.includes("--no-check"));
    for (const f of files) console.log(`${f.path}  ${(f.bytes / 1024).toFixed(1)} KiB`);
    console.log("no Deno references in the bundle");
  } finally {
    await esbuild.stop();
  }
}

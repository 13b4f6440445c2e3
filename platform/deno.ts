/**
 * The Deno {@link Platform}: model directories on disk (with the containment checks of
 * `models/checkpoint/model_dir.ts`), files, the environment, stderr, wgpu's backend choice.
 *
 * @module
 */

import { directorySource, openDenoFile } from "../models/checkpoint/model_dir.ts";
import type { Platform } from "./types.ts";

function stderrIsTerminal(): boolean {
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

function writeStderr(text: string): void {
  const bytes = new TextEncoder().encode(text);
  let off = 0;
  while (off < bytes.length) off += Deno.stderr.writeSync(bytes.subarray(off));
}

/** Whether `variable` can be read without prompting. */
function envReadable(variable: string): boolean {
  return Deno.permissions.querySync({ name: "env", variable }).state === "granted";
}

/**
 * On Linux, wgpu's Vulkan backend alone and Mesa's device-select layer off, unless the user set
 * them: see `preferVulkanOnLinux` in runtime/gpu_device.ts for why.
 */
function prepareWebGpu(): void {
  if (Deno.build.os !== "linux") return;
  const defaults = { DENO_WEBGPU_BACKEND: "vulkan", NODEVICE_SELECT: "1" };
  for (const [variable, value] of Object.entries(defaults)) {
    if (!envReadable(variable)) continue;
    if (Deno.env.get(variable) === undefined) Deno.env.set(variable, value);
  }
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
}

async function writeFileAtomic(path: string, parts: readonly Uint8Array[]): Promise<void> {
  const temp = `${path}.tmp-${crypto.randomUUID()}`;
  let file: Deno.FsFile | undefined;
  try {
    file = await Deno.open(temp, { write: true, createNew: true });
    for (const part of parts) await writeAll(file, part);
    await file.syncData();
    file.close();
    file = undefined;
    await Deno.rename(temp, path);
  } catch (e) {
    file?.close();
    await Deno.remove(temp).catch(() => {});
    throw e;
  }
}

/** ssmkit's services under Deno. */
export const platform: Platform = {
  name: "deno",
  envFlag: (variable) => envReadable(variable) && Deno.env.get(variable) === "1",
  stderrIsTerminal,
  writeStderr,
  prepareWebGpu,
  modelSource: directorySource,
  openFile: openDenoFile,
  writeFileAtomic,
  async writeTextFile(dir, name, text) {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(`${dir}/${name}`, text);
  },
  makeDir: (path) => Deno.mkdir(path, { recursive: true }),
  cacheDir() {
    if (envReadable("XDG_CACHE_HOME")) {
      const xdg = Deno.env.get("XDG_CACHE_HOME");
      if (xdg) return xdg;
    }
    const home = envReadable("HOME") ? Deno.env.get("HOME") : undefined;
    return home ? `${home}/.cache` : undefined;
  },
  async readTextFile(path) {
    try {
      return await Deno.readTextFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
  },
};

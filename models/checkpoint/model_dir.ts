/**
 * The files of a model directory. File names may come from untrusted files (the shard index
 * names its shards), so a name must resolve to a regular file inside the directory: `..`,
 * absolute paths and symbolic links that lead out of it are refused. Special files are named,
 * never opened (opening a FIFO blocks until a writer appears). Text files are read with a size
 * limit checked before reading.
 *
 * One exception to containment: a Hugging Face cache snapshot (`.../snapshots/<revision>/`)
 * holds symbolic links into the repository's `blobs/` folder beside `snapshots/`; those targets
 * are accepted too, so `--model ~/.cache/huggingface/hub/models--x--y/snapshots/<rev>` works.
 *
 * This is the Deno side of the platform boundary: {@link directorySource} is what a model
 * string means under Deno (`platform/deno.ts`).
 *
 * @module
 */

import { joinPath, readAt } from "./file_io.ts";
import { badRelativeName, type ModelFile, type ModelSource, type SourceText } from "./source.ts";

export { badRelativeName };

/** What a directory entry is, in words, for messages ("a directory", "a FIFO (named pipe)"). */
function kindOf(info: Deno.FileInfo): string {
  if (info.isDirectory) return "a directory";
  if (info.isFifo) return "a FIFO (named pipe)";
  if (info.isSocket) return "a socket";
  if (info.isCharDevice) return "a character device";
  if (info.isBlockDevice) return "a block device";
  if (info.isFile) return "a file";
  return "not a regular file";
}

/**
 * Checks that `dir` is an existing directory.
 *
 * @param dir The model directory.
 * @throws Error `model directory not found: DIR`, or `DIR is a file, not a model directory ...`
 *   (or a FIFO, ...) when it is something else.
 */
export async function checkModelDir(dir: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
      throw new Error(`model directory not found: ${dir}`);
    }
    throw new Error(`cannot read model directory ${dir}: ${(e as Error).message}`);
  }
  if (!info.isDirectory) {
    throw new Error(
      `${dir} is ${kindOf(info)}, not a model directory (a model directory holds config.json ` +
        `and model.safetensors)`,
    );
  }
}

function parentOf(path: string): string {
  const cut = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return cut <= 0 ? path.slice(0, cut + 1) : path.slice(0, cut);
}

function baseName(path: string): string {
  return path.slice(Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\")) + 1);
}

/** Real paths under which a model directory's files may lie (see the module comment). */
async function allowedRoots(dir: string): Promise<string[]> {
  const real = await Deno.realPath(dir);
  const roots = [real];
  const snapshots = parentOf(real);
  if (baseName(snapshots) === "snapshots") {
    try {
      roots.push(await Deno.realPath(joinPath(parentOf(snapshots), "blobs")));
    } catch {
      // No blobs folder: not a Hugging Face cache, nothing more to allow.
    }
  }
  return roots;
}

function inside(path: string, root: string): boolean {
  const sep = root.includes("\\") && !root.includes("/") ? "\\" : "/";
  return path.startsWith(root.endsWith(sep) ? root : root + sep);
}

/**
 * Resolves a file of a model directory without opening it.
 *
 * @param dir The model directory (checked with {@link checkModelDir} beforehand).
 * @param name The file's name relative to `dir` (e.g. `config.json` or a shard name).
 * @returns The path to read, or undefined when no such file exists.
 * @throws Error when the name is not a plain relative name, the entry is not a regular file
 *   (a directory, a FIFO, a device, a broken symbolic link), or it resolves outside the
 *   directory.
 */
export async function findModelFile(dir: string, name: string): Promise<string | undefined> {
  const bad = badRelativeName(name);
  if (bad) {
    throw new Error(`${JSON.stringify(name)} ${bad}; model files must lie inside ${dir}`);
  }
  const path = joinPath(dir, name);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory)) {
      throw new Error(`cannot read ${path}: ${(e as Error).message}`);
    }
    if (await isSymlink(path)) throw new Error(`${path} is a symbolic link to a missing file`);
    return undefined;
  }
  const real = await Deno.realPath(path);
  const roots = await allowedRoots(dir);
  if (!roots.some((root) => inside(real, root))) {
    throw new Error(`${path} resolves to ${real}, outside the model directory ${roots[0]}`);
  }
  if (!info.isFile) throw new Error(`${path} is ${kindOf(info)}, not a regular file`);
  return path;
}

async function isSymlink(path: string): Promise<boolean> {
  try {
    return (await Deno.lstat(path)).isSymlink;
  } catch {
    return false;
  }
}

/**
 * Reads a regular file as UTF-8 text, refusing it before reading when it is larger than
 * `maxBytes` (the limit is also enforced while reading, should the file grow).
 *
 * @param path A regular file (as returned by {@link findModelFile}).
 * @param maxBytes Largest size accepted.
 * @param what What the file is, for the message (e.g. "config.json").
 */
export async function readTextLimited(
  path: string,
  maxBytes: number,
  what: string,
): Promise<string> {
  using file = await Deno.open(path, { read: true });
  const size = (await file.stat()).size;
  if (size > maxBytes) {
    throw new Error(`${path} is ${size} bytes; a ${what} larger than ${maxBytes} bytes is refused`);
  }
  const buf = new Uint8Array(size + 1);
  let got = 0;
  for (;;) {
    const n = await file.read(buf.subarray(got));
    if (n === null) break;
    got += n;
    if (got === buf.length) throw new Error(`${path} grew while it was being read`);
  }
  return new TextDecoder().decode(buf.subarray(0, got));
}

/** A file of a directory, open for positioned reads (seek + read: one read at a time). */
class DenoFile implements ModelFile {
  readonly path: string;
  readonly size: number;
  #file: Deno.FsFile | undefined;

  constructor(path: string, size: number, file: Deno.FsFile) {
    this.path = path;
    this.size = size;
    this.#file = file;
  }

  read(position: number, buf: Uint8Array, what: string): Promise<void> {
    if (!this.#file) {
      return Promise.reject(new Error(`${this.path} is closed; cannot read ${what}`));
    }
    return readAt(this.#file, position, buf, this.path, what);
  }

  close(): void {
    try {
      this.#file?.close();
    } catch {
      // Already closed: nothing to release.
    }
    this.#file = undefined;
  }
}

/**
 * Opens a file by path for positioned reads.
 *
 * @param path The file.
 * @throws Error `PATH: file not found`, or `PATH: cannot open (...)`.
 */
export async function openDenoFile(path: string): Promise<ModelFile> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`${path}: file not found`);
    throw new Error(`${path}: cannot open (${(e as Error).message})`);
  }
  try {
    return new DenoFile(path, (await file.stat()).size, file);
  } catch (e) {
    file.close();
    throw e;
  }
}

/**
 * A model directory as a {@link ModelSource}: every file is resolved with
 * {@link findModelFile} (regular files inside the directory only) before it is opened.
 *
 * @param dir The model directory.
 * @throws Error when `dir` is not an existing directory ({@link checkModelDir}).
 */
export async function directorySource(dir: string): Promise<ModelSource> {
  await checkModelDir(dir);
  return {
    name: dir,
    async open(name: string): Promise<ModelFile | undefined> {
      const path = await findModelFile(dir, name);
      return path === undefined ? undefined : await openDenoFile(path);
    },
    async readText(name: string, maxBytes: number, what: string): Promise<SourceText | undefined> {
      const path = await findModelFile(dir, name);
      if (path === undefined) return undefined;
      return { path, text: await readTextLimited(path, maxBytes, what) };
    },
    list: () => listDir(dir),
  };
}

/** Directory entries for the "found: ..." hint, at most 20 (directories end in "/"). */
async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  let more = 0;
  for await (const e of Deno.readDir(dir)) {
    if (names.length < 20) names.push(e.isDirectory ? `${e.name}/` : e.name);
    else more++;
  }
  names.sort();
  if (more) names.push(`and ${more} more`);
  return names;
}

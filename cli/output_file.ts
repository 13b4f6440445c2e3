/**
 * An output file that is written whole or not at all: its bytes go to a temporary file in the
 * target's directory, which is renamed over the target once complete. A failed write (a full
 * disk, a file-size limit) leaves an existing target as it was and no temporary file behind.
 * Opening it first checks the path, so a bad `--out` is reported before any slow work.
 *
 * @module
 */

function dirAndBase(path: string): { dir: string; base: string } {
  const slash = path.lastIndexOf("/");
  return slash < 0
    ? { dir: ".", base: path }
    : { dir: path.slice(0, slash) || "/", base: path.slice(slash + 1) };
}

function reason(e: unknown): string {
  // Deno's messages end with the path or "(os error N)"; the reason is the part before.
  const message = e instanceof Error ? e.message : String(e);
  return message.replace(/(:| \(os error \d+\)).*$/s, "").trim() || message;
}

/** A file being written: {@link OutputFile.commit} replaces the target, or nothing changes. */
export class OutputFile {
  /** The target path. */
  readonly path: string;
  readonly #temp: string;
  #file: Deno.FsFile | undefined;
  #committed = false;

  private constructor(path: string, temp: string, file: Deno.FsFile) {
    this.path = path;
    this.#temp = temp;
    this.#file = file;
  }

  /**
   * Checks that `path` can be written (its directory exists and is writable, it is not a
   * directory) by creating the temporary file next to it. `label` names the option in errors.
   *
   * @throws Error naming the option and the path when it cannot be written.
   */
  static async create(path: string, label = "--out"): Promise<OutputFile> {
    const fail = (why: string) => new Error(`${label} ${path}: ${why}`);
    if (path === "" || path.endsWith("/")) throw fail("not a file name");
    const { dir, base } = dirAndBase(path);
    const target = await Deno.stat(path).catch((e) => {
      // A missing file, or a parent that is a file (reported below), is no error here.
      if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
        return undefined;
      }
      throw fail(reason(e));
    });
    if (target?.isDirectory) throw fail("is a directory");
    const parent = await Deno.stat(dir).catch((e) => {
      throw fail(e instanceof Deno.errors.NotFound ? `directory ${dir} does not exist` : reason(e));
    });
    if (!parent.isDirectory) throw fail(`${dir} is not a directory`);
    for (let attempt = 0;; attempt++) {
      const suffix = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
      const temp = `${dir}/.${base}.${suffix}.tmp`;
      try {
        // mode 0o666 before the umask: the file gets the permissions a plain write would give.
        const file = await Deno.open(temp, { write: true, createNew: true, mode: 0o666 });
        return new OutputFile(path, temp, file);
      } catch (e) {
        if (e instanceof Deno.errors.AlreadyExists && attempt < 8) continue;
        if (e instanceof Deno.errors.PermissionDenied) {
          throw fail(`cannot create a file in ${dir} (permission denied)`);
        }
        throw fail(`cannot create a file in ${dir} (${reason(e)})`);
      }
    }
  }

  /**
   * Writes `data` and renames it over the target.
   *
   * @throws Error naming the path when writing fails (the target is then unchanged).
   */
  async commit(data: Uint8Array): Promise<void> {
    const file = this.#file;
    if (!file) throw new Error(`internal: ${this.path} was already committed or discarded`);
    try {
      let done = 0;
      while (done < data.length) done += await file.write(data.subarray(done));
      await file.sync();
      file.close();
      this.#file = undefined;
      await Deno.rename(this.#temp, this.path);
      this.#committed = true;
    } catch (e) {
      await this.discard();
      throw new Error(
        `writing ${this.path} failed (${reason(e)}); ` +
          "the file was left as it was before",
      );
    }
  }

  /**
   * Removes the temporary file, unless committed (the target is untouched). Safe to call more
   * than once, and after {@link OutputFile.commit}.
   */
  async discard(): Promise<void> {
    if (this.#committed) return;
    try {
      this.#file?.close();
    } catch { /* already closed */ }
    this.#file = undefined;
    await Deno.remove(this.#temp).catch(() => {});
  }
}

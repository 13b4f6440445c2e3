/**
 * Where a model's files come from. A {@link ModelSource} names the files of one model (a
 * directory on disk, a URL prefix, files a user dropped on a page, buffers in memory) and opens
 * them for positioned reads, so checkpoints are read tensor by tensor from any of them with the
 * same code and the same checks. Only web-standard APIs here: the directory source lives behind
 * the platform module (`platform/`).
 *
 * @module
 */

/** One file of a model, open for positioned reads. */
export interface ModelFile {
  /** The file as messages name it (a path or a URL). */
  readonly path: string;
  /** Its size in bytes. */
  readonly size: number;
  /**
   * Fills `buf` with the bytes starting at `position`.
   *
   * @param position Absolute byte offset.
   * @param buf Destination; filled completely.
   * @param what What is being read, for messages (e.g. "tensor x").
   * @throws Error naming the file when it ends before `buf` is full.
   */
  read(position: number, buf: Uint8Array, what: string): Promise<void>;
  /** Releases the file (later reads fail). Safe to call twice. */
  close(): void;
}

/** A text file read whole, with the name messages use for it. */
export interface SourceText {
  /** The file as messages name it. */
  path: string;
  /** Its contents, decoded as UTF-8. */
  text: string;
}

/** The files of one model: a directory, a URL prefix, dropped files or buffers. */
export interface ModelSource {
  /** The source as messages name it (a directory path, a URL, "dropped files"). */
  readonly name: string;
  /**
   * Opens a file of the model.
   *
   * @param name A relative name (`config.json`, a shard name from the index).
   * @returns The open file, or undefined when the source has no such file.
   * @throws Error when the name is not a plain relative name ({@link badRelativeName}) or the
   *   entry cannot be read as a regular file of the model.
   */
  open(name: string): Promise<ModelFile | undefined>;
  /**
   * Reads a text file whole, refusing it before reading when it is larger than `maxBytes`.
   *
   * @param name A relative name.
   * @param maxBytes Largest size accepted.
   * @param what What the file is, for the message (e.g. "config.json").
   * @returns The text, or undefined when the source has no such file.
   */
  readText(name: string, maxBytes: number, what: string): Promise<SourceText | undefined>;
  /** Names of the source's files, for "found: ..." hints (at most about 20). */
  list(): Promise<string[]>;
}

/**
 * Checks that a file name taken from a file (a shard name in the index) names a file inside the
 * model: relative, no `.` or `..` segment, no empty segment, no NUL.
 *
 * @param name The name to check.
 * @returns A reason the name is refused, or undefined when it is acceptable.
 */
export function badRelativeName(name: string): string | undefined {
  if (name === "") return "is empty";
  if (name.includes("\0")) return "contains a NUL character";
  if (/^[/\\]/.test(name) || /^[A-Za-z]:/.test(name)) return "is an absolute path";
  const segments = name.split(/[/\\]/);
  if (segments.some((s) => s === "..")) return 'goes up a directory with ".."';
  if (segments.some((s) => s === "" || s === ".")) return "has an empty or '.' path segment";
  return undefined;
}

/**
 * Throws when `name` is not a plain relative name ({@link badRelativeName}).
 *
 * @param name The name to check.
 * @param where The source's name, for the message.
 */
export function checkRelativeName(name: string, where: string): void {
  const bad = badRelativeName(name);
  if (bad) throw new Error(`${JSON.stringify(name)} ${bad}; model files must lie inside ${where}`);
}

/**
 * {@link ModelSource.readText} for sources whose files are opened with {@link ModelSource.open}:
 * the size is checked before any byte is read.
 *
 * @param source The source.
 * @param name A relative name.
 * @param maxBytes Largest size accepted.
 * @param what What the file is, for the message.
 */
export async function readTextOf(
  source: Pick<ModelSource, "open">,
  name: string,
  maxBytes: number,
  what: string,
): Promise<SourceText | undefined> {
  const file = await source.open(name);
  if (!file) return undefined;
  try {
    if (file.size > maxBytes) {
      throw new Error(
        `${file.path} is ${file.size} bytes; a ${what} larger than ${maxBytes} bytes is refused`,
      );
    }
    const bytes = new Uint8Array(file.size);
    await file.read(0, bytes, what);
    return { path: file.path, text: new TextDecoder().decode(bytes) };
  } finally {
    file.close();
  }
}

/** The message of a read that ended early (shared by every source). */
export function truncatedMessage(
  path: string,
  what: string,
  wanted: number,
  position: number,
  got: number,
): string {
  return `${path}: unexpected end of file while reading ${what} ` +
    `(wanted ${wanted} bytes at offset ${position}, got ${got}); is the file truncated?`;
}

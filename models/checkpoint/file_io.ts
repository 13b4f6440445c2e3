/**
 * Positioned reads on large files: seek, then loop until the buffer is full (a single
 * `read` may return fewer bytes than asked), failing with a message that names the file.
 *
 * @module
 */

/**
 * Fills `buf` with the bytes of `file` starting at absolute offset `position`.
 *
 * @param file An open file.
 * @param position Absolute byte offset in the file.
 * @param buf Destination; filled completely.
 * @param path File path, for error messages.
 * @param what What is being read, for error messages (e.g. "tensor x").
 * @throws Error if the file ends before `buf` is full.
 */
export async function readAt(
  file: Deno.FsFile,
  position: number,
  buf: Uint8Array,
  path: string,
  what: string,
): Promise<void> {
  await file.seek(position, Deno.SeekMode.Start);
  let got = 0;
  while (got < buf.length) {
    const n = await file.read(buf.subarray(got));
    if (n === null) {
      throw new Error(
        `${path}: unexpected end of file while reading ${what} ` +
          `(wanted ${buf.length} bytes at offset ${position}, got ${got}); is the file truncated?`,
      );
    }
    got += n;
  }
}

/**
 * Joins a directory and a file name with a single `/` (paths in this module are POSIX-style or
 * Windows paths that also accept `/`).
 *
 * @param dir Directory path.
 * @param name File name relative to `dir`.
 */
export function joinPath(dir: string, name: string): string {
  return dir.endsWith("/") || dir.endsWith("\\") ? dir + name : `${dir}/${name}`;
}

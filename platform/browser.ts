/**
 * The browser {@link Platform}: a model string is a URL relative to the page (read with range
 * requests), there is no environment or terminal, and writing files is refused with a message
 * that says what to use instead.
 *
 * @module
 */

import { urlSource } from "../models/checkpoint/web_sources.ts";
import type { Platform } from "./types.ts";

function noFileSystem(what: string, path: string): Promise<never> {
  return Promise.reject(
    new Error(
      `${what} ${path}: a web page has no file system (build the bytes with safetensorsBytes ` +
        `and offer them as a download)`,
    ),
  );
}

/** ssmkit's services in a web page. */
export const platform: Platform = {
  name: "browser",
  envFlag: () => false,
  stderrIsTerminal: () => false,
  writeStderr: (text) => console.error(text),
  prepareWebGpu: () => {},
  modelSource: (location) => Promise.resolve(urlSource(location)),
  async openFile(path) {
    const cut = path.lastIndexOf("/") + 1;
    const source = urlSource(path.slice(0, cut) || "./");
    const file = await source.open(path.slice(cut));
    if (!file) throw new Error(`${path}: file not found`);
    return file;
  },
  writeFileAtomic: (path) => noFileSystem("cannot write", path),
  writeTextFile: (dir, name) => noFileSystem("cannot write", `${dir}/${name}`),
  makeDir: (path) => noFileSystem("cannot create", path),
  cacheDir: () => undefined,
  readTextFile: (path) => noFileSystem("cannot read", path),
};

/**
 * What ssmkit needs from its host beyond web-standard APIs: the file system, the environment,
 * the terminal. The DSL, compiler and runtime use only web APIs (`navigator.gpu`, `fetch`,
 * streams, `TextDecoder`); everything else goes through a {@link Platform}, implemented for Deno
 * (`deno.ts`) and for browsers (`browser.ts`). Code imports `current.ts`, which is the Deno one;
 * the browser bundle and its type check substitute `browser.ts` (see `web/`).
 *
 * @module
 */

import type { ModelFile, ModelSource } from "../models/checkpoint/source.ts";

/** The host's services, one implementation per runtime. */
export interface Platform {
  /** Which runtime this is. */
  readonly name: "deno" | "browser";
  /**
   * Whether an environment variable is set to `1` (false when it cannot be read without a
   * permission prompt, and always in a browser).
   */
  envFlag(variable: string): boolean;
  /** Whether stderr is a terminal (progress bars draw only then; never in a browser). */
  stderrIsTerminal(): boolean;
  /** Writes text to stderr, synchronously (the console in a browser). */
  writeStderr(text: string): void;
  /** Sets up the runtime's WebGPU before the first adapter request (Deno on Linux: Vulkan). */
  prepareWebGpu(): void;
  /**
   * The model a string names: a directory in Deno (checked to exist and be a directory), a URL
   * relative to the page in a browser.
   */
  modelSource(location: string): Promise<ModelSource>;
  /**
   * Opens one file by path (a URL in a browser) for positioned reads.
   *
   * @throws Error `PATH: file not found` or `PATH: cannot open (...)`.
   */
  openFile(path: string): Promise<ModelFile>;
  /**
   * Writes a file atomically from its parts (temporary file, synced, renamed over `path`).
   *
   * @throws Error in a browser, which has no file system (build the bytes instead).
   */
  writeFileAtomic(path: string, parts: readonly Uint8Array[]): Promise<void>;
  /**
   * Creates a directory (and its parents) and writes a text file in it.
   *
   * @throws Error in a browser.
   */
  writeTextFile(dir: string, name: string, text: string): Promise<void>;
  /**
   * Creates a directory and its parents (nothing when it exists).
   *
   * @throws Error in a browser.
   */
  makeDir(path: string): Promise<void>;
  /**
   * The directory for caches (`$XDG_CACHE_HOME`, else `~/.cache`), or undefined where there is
   * no file system (a browser) or the environment cannot be read without a permission prompt.
   */
  cacheDir(): string | undefined;
  /**
   * Reads a whole text file; undefined when it does not exist.
   *
   * @throws Error in a browser.
   */
  readTextFile(path: string): Promise<string | undefined>;
}

/**
 * Model sources built on web-standard APIs, for browsers (and Deno): a URL prefix read with HTTP
 * range requests ({@link urlSource}), files a user dropped or picked on a page
 * ({@link blobSource}), and buffers already in memory ({@link bufferSource}). None of them holds
 * a file whole in memory beyond what the caller already holds: a URL file is read range by
 * range, a `Blob` slice by slice.
 *
 * @module
 */

import {
  checkRelativeName,
  type ModelFile,
  type ModelSource,
  readTextOf,
  type SourceText,
  truncatedMessage,
} from "./source.ts";

/** A model file backed by a `Blob` (a `File` is one): reads are slices, nothing is copied whole. */
class BlobFile implements ModelFile {
  readonly path: string;
  readonly size: number;
  #blob: Blob | undefined;

  constructor(path: string, blob: Blob) {
    this.path = path;
    this.size = blob.size;
    this.#blob = blob;
  }

  async read(position: number, buf: Uint8Array, what: string): Promise<void> {
    if (!this.#blob) throw new Error(`${this.path} is closed; cannot read ${what}`);
    const end = Math.min(position + buf.length, this.size);
    const got = Math.max(0, end - position);
    if (got < buf.length) {
      throw new Error(truncatedMessage(this.path, what, buf.length, position, got));
    }
    buf.set(new Uint8Array(await this.#blob.slice(position, end).arrayBuffer()));
  }

  close(): void {
    this.#blob = undefined;
  }
}

/** A source over blobs by relative name. */
class BlobSource implements ModelSource {
  readonly name: string;
  #files: Map<string, Blob>;

  constructor(name: string, files: Map<string, Blob>) {
    this.name = name;
    this.#files = files;
  }

  open(name: string): Promise<ModelFile | undefined> {
    // Checked inside the promise: a bad name rejects, as in every source, rather than throws.
    return Promise.resolve().then(() => {
      checkRelativeName(name, this.name);
      const blob = this.#files.get(name);
      return blob && new BlobFile(`${this.name}/${name}`, blob);
    });
  }

  readText(name: string, maxBytes: number, what: string): Promise<SourceText | undefined> {
    return readTextOf(this, name, maxBytes, what);
  }

  list(): Promise<string[]> {
    return Promise.resolve([...this.#files.keys()].sort().slice(0, 20));
  }
}

/**
 * A model from files picked or dropped on a page (`<input type="file" webkitdirectory>`, drag
 * and drop), or any named blobs. A `File` with a `webkitRelativePath` ("mamba-130m/config.json")
 * is named by that path without its first folder, so a dropped directory's files keep their
 * names; other files by their `name`.
 *
 * @param files `File` objects, or blobs by relative name.
 * @param name The source's name in messages (default: the dropped folder's name, or "files").
 * @example
 * ```ts ignore
 * const model = await loadModel(blobSource(input.files!));
 * ```
 */
export function blobSource(
  files: Iterable<File> | ArrayLike<File> | Record<string, Blob>,
  name?: string,
): ModelSource {
  const map = new Map<string, Blob>();
  let folder: string | undefined;
  const entries: [string, Blob][] = isFileList(files)
    ? Array.from(files as ArrayLike<File> | Iterable<File>, (f) => {
      const rel = f.webkitRelativePath ?? "";
      const cut = rel.indexOf("/");
      if (cut > 0) folder ??= rel.slice(0, cut);
      return [cut > 0 ? rel.slice(cut + 1) : f.name, f];
    })
    : Object.entries(files as Record<string, Blob>);
  for (const [key, blob] of entries) {
    if (map.has(key)) throw new Error(`blobSource: two files are named ${key}`);
    map.set(key, blob);
  }
  return new BlobSource(name ?? folder ?? "files", map);
}

function isFileList(x: unknown): boolean {
  if (typeof (x as Iterable<unknown>)[Symbol.iterator] === "function") return true;
  return typeof (x as ArrayLike<unknown>).length === "number";
}

/**
 * A model from buffers already in memory (for example a checkpoint fetched whole). Reads copy
 * from views of the given buffers; nothing else is allocated per file.
 *
 * @param files File contents by relative name (`config.json`, `model.safetensors`, ...).
 * @param name The source's name in messages (default "memory").
 * @example
 * ```ts ignore
 * const model = await loadModel(bufferSource({ "config.json": cfg, "model.safetensors": w }));
 * ```
 */
export function bufferSource(
  files: Record<string, ArrayBuffer | Uint8Array>,
  name = "memory",
): ModelSource {
  // A Blob over the same bytes would copy them: reads copy from views of the buffers instead.
  const views = new Map<string, Uint8Array>();
  for (const [key, data] of Object.entries(files)) {
    views.set(key, data instanceof Uint8Array ? data : new Uint8Array(data));
  }
  const source: ModelSource = {
    name,
    open(file: string): Promise<ModelFile | undefined> {
      return Promise.resolve().then(() => bufferFile(file));
    },
    readText: (file, maxBytes, what) => readTextOf(source, file, maxBytes, what),
    list: () => Promise.resolve([...views.keys()].sort().slice(0, 20)),
  };
  function bufferFile(file: string): ModelFile | undefined {
    checkRelativeName(file, name);
    const bytes = views.get(file);
    if (!bytes) return undefined;
    const path = `${name}/${file}`;
    return {
      path,
      size: bytes.length,
      read(position: number, buf: Uint8Array, what: string) {
        const got = Math.max(0, Math.min(buf.length, bytes.length - position));
        if (got < buf.length) {
          return Promise.reject(
            new Error(truncatedMessage(path, what, buf.length, position, got)),
          );
        }
        buf.set(bytes.subarray(position, position + buf.length));
        return Promise.resolve();
      },
      close() {},
    };
  }
  return source;
}

/** A file behind a URL, read with `Range` requests. */
class UrlFile implements ModelFile {
  readonly path: string;
  readonly size: number;
  #url: URL;
  #init: RequestInit;
  #closed = false;

  constructor(url: URL, size: number, init: RequestInit) {
    this.path = url.href;
    this.size = size;
    this.#url = url;
    this.#init = init;
  }

  async read(position: number, buf: Uint8Array, what: string): Promise<void> {
    if (this.#closed) throw new Error(`${this.path} is closed; cannot read ${what}`);
    if (buf.length === 0) return;
    const end = position + buf.length - 1;
    const res = await fetch(this.#url, {
      ...this.#init,
      headers: { ...headersOf(this.#init), Range: `bytes=${position}-${end}` },
    });
    if (res.status !== 206) {
      await res.body?.cancel();
      if (res.status === 416 || (res.ok && position + buf.length > this.size)) {
        throw new Error(truncatedMessage(this.path, what, buf.length, position, 0));
      }
      throw new Error(
        `${this.path}: reading ${what} needs an HTTP range request, but the server answered ` +
          `${res.status} ${res.statusText}`,
      );
    }
    // Streamed straight into `buf`: the response is never held whole a second time.
    let got = 0;
    const reader = res.body!.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (got + value.length > buf.length) {
        await reader.cancel();
        throw new Error(
          `${this.path}: the server sent more bytes than asked while reading ${what}`,
        );
      }
      buf.set(value, got);
      got += value.length;
    }
    if (got < buf.length) {
      throw new Error(truncatedMessage(this.path, what, buf.length, position, got));
    }
  }

  close(): void {
    this.#closed = true;
  }
}

function headersOf(init: RequestInit): Record<string, string> {
  return Object.fromEntries(new Headers(init.headers).entries());
}

/**
 * A model behind a URL prefix: `config.json` is `BASE/config.json`, and so on (a static server,
 * or `https://huggingface.co/ORG/NAME/resolve/main`). Files are read with HTTP range requests,
 * one per read step, so a multi-GB checkpoint streams into GPU buffers without being held in
 * memory; the server must answer `Range` requests (206), as static servers and the Hub do.
 *
 * @param base The folder's URL (a trailing `/` is added when missing); a relative URL is taken
 *   relative to the page (`location.href`).
 * @param init Extra `fetch` options (headers such as `Authorization`).
 * @example
 * ```ts ignore
 * const model = await loadModel(urlSource("/models/induction/checkpoint/"));
 * ```
 */
export function urlSource(base: string | URL, init: RequestInit = {}): ModelSource {
  const page = (globalThis as { location?: { href: string } }).location?.href;
  const root = new URL(String(base), page);
  if (!root.pathname.endsWith("/")) root.pathname += "/";
  const name = root.href.replace(/\/$/, "");
  const source: ModelSource = {
    name,
    async open(file: string): Promise<ModelFile | undefined> {
      checkRelativeName(file, name);
      const url = new URL(file.split(/[/\\]/).map(encodeURIComponent).join("/"), root);
      // A one-byte range answers whether the file exists and its size (Content-Range: */SIZE).
      const res = await fetch(url, {
        ...init,
        headers: { ...headersOf(init), Range: "bytes=0-0" },
      });
      await res.body?.cancel();
      if (res.status === 404 || res.status === 410) return undefined;
      if (res.status === 416) return new UrlFile(url, 0, init); // an empty file
      if (res.status !== 206) {
        throw new Error(
          `${url.href}: ${
            res.ok ? "the server does not answer HTTP range requests" : "cannot read"
          } (${res.status} ${res.statusText})`,
        );
      }
      const total = /\/(\d+)\s*$/.exec(res.headers.get("Content-Range") ?? "")?.[1];
      if (total === undefined) {
        throw new Error(`${url.href}: the server's Content-Range header gives no file size`);
      }
      return new UrlFile(url, Number(total), init);
    },
    readText: (file, maxBytes, what) => readTextOf(source, file, maxBytes, what),
    // A URL prefix cannot be listed: hints name only what was looked for.
    list: () => Promise.resolve([]),
  };
  return source;
}

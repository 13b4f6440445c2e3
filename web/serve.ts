/**
 * `deno task serve`: serves the example page (examples/web/) and what it loads on 127.0.0.1.
 * Only these folders of the repository are served: the page, the bundle (dist/, built first
 * with `deno task bundle` unless `--no-bundle`), the shipped induction checkpoint and the test
 * fixtures' models. A path with `..`, `.`, an empty segment, a backslash or a NUL is refused
 * before the file system is touched, and a file must resolve (symbolic links followed) inside
 * its folder. Single `Range` requests are answered (206), which the page's URL model source
 * reads checkpoints with.
 *
 *   deno task serve [--port 8000] [--no-bundle]
 *
 * @module
 */

import { parseArgs } from "node:util";

const ROOT = new URL("../", import.meta.url).pathname.replace(/\/$/, "");

/** URL prefixes served, each from the folder of the same name in the repository. */
export const SERVED = [
  "examples/web/",
  "dist/",
  "models/induction/checkpoint/",
  "tests/fixtures/models/",
];

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  json: "application/json",
  map: "application/json",
  svg: "image/svg+xml",
  png: "image/png",
};

/**
 * The repository file a URL path names, or a reason to refuse it.
 *
 * @param pathname The request's path (percent-encoded).
 */
export function servedPath(pathname: string): { file: string; folder: string } | string {
  let path: string;
  try {
    path = decodeURIComponent(pathname);
  } catch {
    return "bad percent-encoding";
  }
  if (path === "/" || path === "/index.html") path = "/examples/web/index.html";
  if (/[\\\0]/.test(path)) return "backslash or NUL in the path";
  const segments = path.slice(1).split("/");
  if (segments.some((s, i) => s === ".." || s === "." || (s === "" && i < segments.length - 1))) {
    return "path segments '..', '.' or empty are refused";
  }
  const rel = segments.join("/");
  const folder = SERVED.find((p) => rel.startsWith(p));
  if (!folder) return "not a served folder";
  return { file: `${ROOT}/${rel}`, folder: `${ROOT}/${folder}` };
}

function refuse(status: number, text: string): Response {
  return new Response(`${status} ${text}\n`, { status, headers: { "content-type": "text/plain" } });
}

/** A stream of `length` bytes of `file` from its current position; closes the file at the end. */
function limitedStream(file: Deno.FsFile, length: number): ReadableStream<Uint8Array> {
  let left = length;
  return new ReadableStream({
    async pull(controller) {
      const buf = new Uint8Array(Math.min(left, 1 << 20));
      const n = left > 0 ? await file.read(buf) : null;
      if (n === null) {
        file.close();
        controller.close();
        return;
      }
      left -= n;
      controller.enqueue(buf.subarray(0, n));
    },
    cancel: () => file.close(),
  });
}

/**
 * Answers one request of the static server.
 *
 * @param req The request (GET or HEAD).
 */
export async function handle(req: Request): Promise<Response> {
  if (req.method !== "GET" && req.method !== "HEAD") return refuse(405, "method not allowed");
  const target = servedPath(new URL(req.url).pathname);
  if (typeof target === "string") {
    return refuse(target === "not a served folder" ? 404 : 400, target);
  }
  let real: string, info: Deno.FileInfo;
  try {
    real = await Deno.realPath(target.file);
    info = await Deno.stat(real);
  } catch {
    return refuse(404, "not found");
  }
  const folder = await Deno.realPath(target.folder);
  if (!real.startsWith(`${folder}/`)) return refuse(403, "outside the served folder");
  if (!info.isFile) return refuse(404, "not a file");
  const size = info.size;
  const headers = new Headers({
    "content-type": TYPES[real.slice(real.lastIndexOf(".") + 1)] ?? "application/octet-stream",
    "accept-ranges": "bytes",
    "cache-control": "no-cache",
  });
  let start = 0, end = size - 1, status = 200;
  const range = req.headers.get("range");
  if (range) {
    const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
    if (!m || (m[1] === "" && m[2] === "")) return refuse(416, "only one byte range is served");
    if (m[1] === "") start = Math.max(0, size - Number(m[2])); // the last N bytes
    else {
      start = Number(m[1]);
      if (m[2] !== "") end = Math.min(Number(m[2]), size - 1);
    }
    if (start >= size || start > end) {
      headers.set("content-range", `bytes */${size}`);
      return new Response(null, { status: 416, headers });
    }
    status = 206;
    headers.set("content-range", `bytes ${start}-${end}/${size}`);
  }
  const length = Math.max(0, end - start + 1);
  headers.set("content-length", String(length));
  if (req.method === "HEAD") return new Response(null, { status, headers });
  const file = await Deno.open(real, { read: true });
  await file.seek(start, Deno.SeekMode.Start);
  return new Response(limitedStream(file, length), { status, headers });
}

/**
 * Starts the server on 127.0.0.1.
 *
 * @param port The port (0: any free one).
 * @returns The page's URL and a function that stops the server.
 */
export function startServer(port = 8000): { url: string; shutdown: () => Promise<void> } {
  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, handle);
  return { url: `http://127.0.0.1:${server.addr.port}/`, shutdown: () => server.shutdown() };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { port: { type: "string", default: "8000" }, "no-bundle": { type: "boolean" } },
    strict: true,
  });
  if (!values["no-bundle"]) {
    const { bundle } = await import("./bundle.ts");
    const esbuild = await import("esbuild");
    await bundle();
    await esbuild.stop();
  }
  const { url } = startServer(Number(values.port));
  console.log(
    `ssmkit page: ${url}  (the induction demo; ${url}?check=/tests/fixtures/models/mamba_tied_n8/ runs a fixture)`,
  );
}

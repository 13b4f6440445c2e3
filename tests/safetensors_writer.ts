// safetensors fixtures for tests: well-formed files come from the library's writer
// (models/checkpoint/safetensors_write.ts, which shares only the dtype size table with the
// reader under test), malformed ones from rawSafetensors; and a temporary directory helper.
// Hostile fixtures are built with these inside each test.
export { type RawTensor, safetensorsBytes } from "../models/checkpoint/safetensors_write.ts";

/** The bytes of a typed array (a copy). */
export function bytesOf(a: Float32Array | Uint16Array | BigInt64Array): Uint8Array {
  return new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
}

/** Length prefix + given header bytes + data (for malformed-header cases). */
export function rawSafetensors(
  header: Uint8Array,
  data: Uint8Array,
  lengthField?: bigint,
): Uint8Array {
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthField ?? BigInt(header.length), true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
export async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ssmkit_ckpt_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// A tiny safetensors writer for tests, independent of the reader under test, and a temporary
// directory helper. Hostile fixtures are built with these inside each test.

/** One tensor to write: its name, dtype, shape and raw little-endian bytes. */
export interface RawTensor {
  name: string;
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

/** The bytes of a typed array (a copy). */
export function bytesOf(a: Float32Array | Uint16Array | BigInt64Array): Uint8Array {
  return new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
}

/** Builds a safetensors file: tensors laid out back to back in the given order. */
export function safetensorsBytes(
  tensors: RawTensor[],
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let off = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.bytes.length] };
    off += t.bytes.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8); // the reference writer pads to 8 bytes
  const data = new Uint8Array(off);
  off = 0;
  for (const t of tensors) {
    data.set(t.bytes, off);
    off += t.bytes.length;
  }
  return rawSafetensors(new TextEncoder().encode(json), data);
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

// Test helper: copies of the fixture models (tests/fixtures/models) in temporary directories,
// with F32 tensors edited (a NaN or an infinity in a weight, a vocabulary padded past the
// tokenizer's) for the tests of what a broken or unusual checkpoint does.

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;

/** An F32 tensor of a checkpoint: its shape and values (editable). */
export interface F32Tensor {
  shape: number[];
  data: Float32Array;
}

function readSafetensors(bytes: Uint8Array): Map<string, F32Tensor> {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const tensors = new Map<string, F32Tensor>();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, shape, data_offsets: [from, to] } = info as {
      dtype: string;
      shape: number[];
      data_offsets: [number, number];
    };
    if (dtype !== "F32") throw new Error(`model_dirs: ${name} is ${dtype}, only F32 is handled`);
    const raw = bytes.slice(8 + n + from, 8 + n + to);
    tensors.set(name, { shape, data: new Float32Array(raw.buffer) });
  }
  return tensors;
}

function writeSafetensors(tensors: Map<string, F32Tensor>): Uint8Array {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, t] of tensors) {
    header[name] = {
      dtype: "F32",
      shape: t.shape,
      data_offsets: [offset, offset + t.data.byteLength],
    };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const t of tensors.values()) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    at += t.data.byteLength;
  }
  return out;
}

/**
 * Copies fixture model `name` (an F32 one) into a new temporary directory, letting `edit`
 * change its tensors and config first; `tokenizer` also copies the byte-level BPE tokenizer
 * fixture (267 ids). Returns the directory (remove it with {@link removeModelDir}).
 */
export async function modelDir(
  name: string,
  options: {
    edit?: (tensors: Map<string, F32Tensor>, config: Record<string, unknown>) => void;
    tokenizer?: boolean;
    weights?: boolean;
  } = {},
): Promise<string> {
  const from = `${FIXTURES}models/${name}`;
  const dir = await Deno.makeTempDir({ prefix: `ssmkit_${name}_` });
  const config = JSON.parse(await Deno.readTextFile(`${from}/config.json`));
  const tensors = readSafetensors(await Deno.readFile(`${from}/model.safetensors`));
  options.edit?.(tensors, config);
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config, null, 2));
  if (options.weights !== false) {
    await Deno.writeFile(`${dir}/model.safetensors`, writeSafetensors(tensors));
  }
  if (options.tokenizer) {
    for (const file of ["tokenizer.json", "tokenizer_config.json"]) {
      await Deno.copyFile(`${FIXTURES}checkpoint/tokenizer/${file}`, `${dir}/${file}`);
    }
  }
  return dir;
}

/** Removes a directory made by {@link modelDir}. */
export async function removeModelDir(dir: string): Promise<void> {
  await Deno.remove(dir, { recursive: true });
}

/**
 * An edit padding the (tied) embedding to `vocab` rows, as HF checkpoints pad their
 * vocabularies: the new rows repeat the first ones.
 */
export function padVocabulary(vocab: number) {
  return (tensors: Map<string, F32Tensor>, config: Record<string, unknown>) => {
    const embed = tensors.get("backbone.embeddings.weight")!;
    const [rows, width] = embed.shape;
    const data = new Float32Array(vocab * width);
    for (let r = 0; r < vocab; r++) {
      data.set(embed.data.subarray((r % rows) * width, (r % rows + 1) * width), r * width);
    }
    tensors.set("backbone.embeddings.weight", { shape: [vocab, width], data });
    config.vocab_size = vocab;
  };
}

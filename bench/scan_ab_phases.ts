/**
 * Edits of the compiled tiled scan kernel's workgroup arrays and of the order of its tile
 * phases (steps, barrier, epilogue, next tile's item values, barrier), for
 * bench/scan_wgsl_ab.ts. They are written against the default Mamba-1 benchmark kernel
 * (16-step tiles of two 8-step bodies, lane sums by shuffles): an edit whose pattern is not
 * there returns the text unchanged, and the tool reports it instead of timing it. Edits named
 * "timing only" break the result on purpose to show what a phase costs. What they measured on
 * the H200 is in bench/RESULTS.md (2026-12-03, evening).
 *
 * @module
 */

/** `var<workgroup> name: array<array<T, C>, R>;` with R replaced by `rows(R)`. */
function declaredRows(w: string, name: string, rows: (r: number) => number): string {
  return w.replace(
    new RegExp(`(var<workgroup> ${name}: array<array<[^,]+(?:<f32>)?, \\d+>, )(\\d+)>;`),
    (_, head, r) => `${head}${rows(Number(r))}>;`,
  );
}

/** The workgroup arrays' declarations in reverse order (the driver may place them anew). */
function arraysReversed(w: string): string {
  const lines = w.split("\n");
  const at = lines.flatMap((l, i) => (l.startsWith("var<workgroup> sk_") ? [i] : []));
  const reversed = at.map((i) => lines[i]).reverse();
  at.forEach((i, k) => (lines[i] = reversed[k]));
  return lines.join("\n");
}

/** The kernel cut at its tile phases, or undefined where it is not the expected form. */
interface Phases {
  /** Up to the tile loop. */
  head: string;
  /** The loop's first line. */
  loopLine: string;
  /** Next tile's loads, then the steps (ending with the step loop's closing brace). */
  steps: string;
  /** After the first barrier: the epilogue of tile k. */
  epilogue: string;
  /** Registers rotated, the next tile's item values and stage stores. */
  next: string;
  /** After the loop's last barrier. */
  tail: string;
}

function phases(w: string): Phases | undefined {
  const loop = w.indexOf("  for (var k: u32");
  const stepsEnd = w.indexOf("    }\n    workgroupBarrier();\n    let y0_0");
  const rotate = w.indexOf("    pf0 = nf0;");
  const last = w.lastIndexOf("    workgroupBarrier();\n  }\n");
  if ([loop, stepsEnd, rotate, last].some((i) => i < 0)) return undefined;
  const lineEnd = w.indexOf("\n", loop) + 1;
  return {
    head: w.slice(0, loop),
    loopLine: w.slice(loop, lineEnd),
    steps: w.slice(lineEnd, stepsEnd + 6),
    epilogue: w.slice(stepsEnd + 6 + "    workgroupBarrier();\n".length, rotate),
    next: w.slice(rotate, last),
    tail: w.slice(last + "    workgroupBarrier();\n".length),
  };
}

/** The kernel reassembled with two barriers per tile: `top` and `steps`, barrier, `epilogue`
 * and `next`, barrier (each part defaults to the cut kernel's own). */
function joined(
  p: Phases,
  parts: Partial<Pick<Phases, "steps" | "epilogue" | "next">> & {
    top?: string;
  },
): string {
  const { top = "", steps = p.steps, epilogue = p.epilogue, next = p.next } = parts;
  return `${p.head}${p.loopLine}${top}${steps}    workgroupBarrier();\n${epilogue}${next}` +
    `    workgroupBarrier();\n${p.tail}`;
}

/** Every workgroup array declared with twice its rows (the extra rows unused). */
function arraysDoubled(w: string): string {
  let out = w;
  for (const name of ["sk_sd", "sk_yp", "sk_stage0", "sk_stage1"]) {
    out = declaredRows(out, name, (r) => 2 * r);
  }
  return out;
}

/**
 * Double-buffered arrays: tile k's steps read buffer k mod 2 of sk_sd and sk_stage and write
 * that of sk_yp; the next tile's values go to the other buffer. With `oneBarrier` the
 * epilogue runs a tile behind (tile k − 1's, after tile k's steps, from registers held one
 * more tile) and one barrier per tile remains; without, only the buffers change.
 */
function doubleBuffered(oneBarrier: boolean) {
  return (w: string): string => {
    const p = phases(arraysDoubled(w));
    if (!p) return w;
    const tiles = Number(p.loopLine.match(/k < (\d+)u/)?.[1]);
    const half = Number(w.match(/var<workgroup> sk_sd: array<array<[^>]+>, \d+>, (\d+)>;/)?.[1]);
    const steps = p.steps
      .replace(/sk_sd\[(\d+u) \+ sgu\]/g, "sk_sd[$1 + sgu + kb]")
      .replace(/sk_stage(\d+)\[(\d+u) \+ sgu\]/g, "sk_stage$1[$2 + sgu + kb]")
      .replace(/sk_yp\[(\d+u) \+ sgu \+ j \* (\d+)u\]/g, "sk_yp[$1 + sgu + j * $2u + kb]");
    const next = p.next
      .replace(/sk_sd\[(\d+u) \+ ts0\]\[cs\]/g, "sk_sd[$1 + ts0 + nb][cs]")
      .replace(/sk_stage(\d+)\[sku0\]/g, "sk_stage$1[sku0 + nb]");
    const buffers = `    let kb = (k & 1u) * ${half}u;\n    let nb = ${half}u - kb;\n`;
    if (!oneBarrier) {
      const epilogue = p.epilogue.replace(/sk_yp\[(\d+u) \+ ts0\]/g, "sk_yp[$1 + ts0 + kb]");
      return joined(p, { top: buffers, steps, epilogue, next });
    }
    // Tile k − 1's epilogue: its item values (a{e}_{i} = pfN) and registers held a tile longer.
    const alias = new Map<string, string>();
    for (const m of p.steps.matchAll(/let (a\d+_\d+): f32 = (pf\d+);/g)) alias.set(m[1], m[2]);
    let epilogue = p.epilogue
      .replace(/\ba\d+_\d+\b/g, (a) => alias.get(a) ?? a)
      .replace(/sk_yp\[(\d+u) \+ ts0\]/g, "sk_yp[$1 + ts0 + nb]")
      .replace(/\bta(\d+)\b/g, "tp$1");
    const held = [...new Set(epilogue.match(/\bpf\d+\b/g) ?? [])];
    epilogue = epilogue.replace(/\bpf(\d+)\b/g, "hf$1");
    // Tile `tile`'s item positions, written as the kernel writes tile k's (`let ttaE = …`).
    const positions = [...p.steps.matchAll(/let tta(\d+) = \(k \* (\d+u) \+ ts0 \+ (\d+u)\);/g)];
    const step = (tile: string) =>
      positions.map(([, e, T, off]) => `    let tp${e} = (${tile} * ${T} + ts0 + ${off});\n`)
        .join("");
    const declare = held.map((r) => `  var h${r.slice(1)}: f32 = ${r};\n`).join("");
    const hold = held.map((r) => `    h${r.slice(1)} = ${r};\n`).join("");
    const lastEpilogue = `  {\n    let nb = ${((tiles - 1) & 1) * half}u;\n${
      step(`${tiles - 1}u`)
    }${epilogue}  }\n`;
    return `${p.head}${declare}${p.loopLine}${buffers}${steps}${
      step("(max(k, 1u) - 1u)")
    }${epilogue}${hold}${next}    workgroupBarrier();\n  }\n${lastEpilogue}${
      p.tail.replace(/^ {2}\}\n/, "")
    }`;
  };
}

/** The step loop's two bodies written out one after the other (no loop). */
function bodiesWrittenOut(w: string): string {
  const loop = w.match(
    /( {4})for \(var sg: u32 = 0u; sg < 2u; sg\+\+\) \{\n {6}let sgu = sg \* (\d+)u;\n([\s\S]*?)\n {4}\}\n {4}workgroupBarrier\(\);/,
  );
  if (!loop) return w;
  const body = (h: number) =>
    `    let sgu_h${h} = ${h * Number(loop[2])}u;\n` +
    loop[3].replace(
      /\b(sgu|tt\d+|t\d+|v\d+|vl\d+|yq\d+_\d+|yr\d+_\d+_\d+)\b/g,
      (m) => `${m}_h${h}`,
    ) + "\n";
  return w.replace(loop[0], `${body(0)}${body(1)}    workgroupBarrier();`);
}

/**
 * The next tile's item values (Δ, Δ·x from the registers just loaded) and the epilogue's
 * y-independent parts (D·x, SiLU(z)) computed after the steps, before the first barrier; the
 * epilogue then only adds and multiplies, the stage only stores.
 */
function itemValuesBeforeBarrier(w: string): string {
  const p = phases(w);
  // Written for four items per thread (registers: Δ and x of item e in pf2e and pf2e+1, z in
  // pf8+e) and the output's step stride read from the epilogue.
  const stride = p?.epilogue.match(/out\[ib0 \+ ta0 \* (\d+)u\]/)?.[1];
  const fourItems = p && /let y0_3:/.test(p.epilogue) && !/let y0_4:/.test(p.epilogue);
  if (!p || !stride || !fourItems || !/sk_softplus_fast\(an0_1\)/.test(p.next)) return w;
  const items = [0, 1, 2, 3];
  const early = items.map((e) =>
    `    let dx${e} = q5 * pf${2 * e + 1};\n` +
    `    let sz${e} = pf${8 + e} * sk_recip_pos(1.0 + exp(-pf${8 + e}));\n` +
    `    let spd${e} = sk_softplus_fast(nf${2 * e} + q4);\n` +
    `    let sp${e} = vec2<f32>(spd${e}, spd${e} * nf${2 * e + 1});\n`
  ).join("");
  const epilogue = items.map((e) =>
    `    let y0_${e}: f32 = sk_yp[${4 * e}u + ts0][cs];\n` +
    `    out[ib0 + ta${e} * ${stride}u] = (y0_${e} + dx${e}) * sz${e};\n`
  ).join("");
  const stores = items.map((e) => `    sk_sd[${4 * e}u + ts0][cs] = sp${e};\n`).join("");
  const next = p.next.replace(/ {4}let an0_0[\s\S]*?(?= {4}if \(ske0)/, stores);
  return joined(p, { steps: p.steps + early, epilogue, next });
}

/** Timing only: the barrier between the steps and the epilogue dropped (a race). */
function noFirstBarrier(w: string): string {
  return w.replace("    }\n    workgroupBarrier();\n    let y0_0", "    }\n    let y0_0");
}

/** Timing only: no steps at all; the epilogue reads Δ's register instead of the lane sums. */
function noSteps(w: string): string {
  const p = phases(w);
  if (!p) return w;
  const loads = p.steps.slice(0, p.steps.indexOf("    for (var sg: u32"));
  const epilogue = p.epilogue.replace(
    /let y0_(\d+): f32 = sk_yp\[[^\]]+\]\[cs\];/g,
    (_, e) => `let y0_${e}: f32 = pf${2 * Number(e)};`,
  );
  return joined(p, { steps: loads, epilogue });
}

/**
 * Timing only: as noSteps, and no exponential in the items' softplus or SiLU either. Unlike
 * scan_wgsl_ab's "no item exp" (SiLU replaced by 1), z still multiplies the output, so its loads
 * stay.
 */
function noStepsNoItemExp(w: string): string {
  const out = noSteps(w);
  if (out === w) return w;
  return out
    .replace(/sk_recip_pos\(1\.0 \+ exp\(-(e0_\d+_\d+)\)\)/g, "$1")
    .replace(/= sk_softplus_fast\(/g, "= (");
}

/** The edits of this module, by the names scan_wgsl_ab.ts lists and times. */
export const PHASE_EDITS: Record<string, (w: string) => string> = {
  "sk_yp without its spare row": (w) => declaredRows(w, "sk_yp", (r) => r - 1),
  "sk_yp with 4 spare rows": (w) => declaredRows(w, "sk_yp", (r) => r + 3),
  "sk_yp with 8 spare rows": (w) => declaredRows(w, "sk_yp", (r) => r + 7),
  "sk_sd with a spare row": (w) => declaredRows(w, "sk_sd", (r) => r + 1),
  "sk_stage1 with 2 spare rows": (w) => declaredRows(w, "sk_stage1", (r) => r + 2),
  "workgroup arrays in reverse order": arraysReversed,
  "workgroup arrays doubled, extra rows unused": arraysDoubled,
  "double-buffered arrays, two barriers": doubleBuffered(false),
  "double-buffered arrays, one barrier, epilogue a tile behind": doubleBuffered(true),
  "step bodies written out": bodiesWrittenOut,
  "item values before the first barrier": itemValuesBeforeBarrier,
  "timing only: no first barrier": noFirstBarrier,
  "timing only: no steps": noSteps,
  "timing only: no steps, no item exp": noStepsNoItemExp,
};

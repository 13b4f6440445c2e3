/**
 * Ride-along dispatches: a small elementwise kernel joins a later kernel's dispatch as extra
 * workgroups, when nothing in between depends on it. A decode step is mostly a fixed cost per
 * dispatch (about 8 µs on an H200, bench/RESULTS.md 2026-12-02); Mamba's conv-window update (an
 * elementwise map whose only reader is the next step) was a dispatch of its own in every layer.
 *
 * The merged module keeps both kernels' code as functions: the host's `main` becomes
 * `host_main` and the rider's `ride_main` (their builtins become plain parameters; the rider's
 * bindings and functions are renamed apart), and a new `main` sends workgroups past the host's
 * count to the rider, handing each function the workgroup index and counts it was written for.
 * The branch is on the workgroup index, uniform within a workgroup, so the host's barriers stay
 * in uniform control flow. Riders are elementwise kernels without workgroup memory or barriers:
 * their threads are independent, so they run under the host's workgroup size unchanged.
 *
 * @module
 */

import type { BufferKey, KernelArtifact } from "./artifact.ts";
import type { Node } from "../dsl/ir.ts";
import { u32Literal as u } from "./wgsl_math.ts";

/** How many kernels ahead a rider may move to find a host. */
const REACH = 3;

/** One parameter of an entry point: `@builtin(kind) name: type`. */
interface EntryParam {
  readonly builtin: string;
  readonly name: string;
  readonly type: string;
}

/** A module split into its directives, binding declarations, other text and entry point. */
interface ParsedModule {
  readonly directives: string[];
  /** Binding declarations: index, the line. */
  readonly bindings: { index: number; line: string }[];
  /** Everything else before the entry point (functions, workgroup arrays, constants). */
  readonly rest: string;
  readonly workgroupSize: number;
  readonly params: EntryParam[];
  /** The entry point's body, braces excluded. */
  readonly body: string;
}

const BINDING = /^@group\(0\) @binding\((\d+)\) .*$/;

/** Splits `wgsl` (one `@compute` entry point named `main`, 1-D workgroups), or undefined. */
function parse(wgsl: string): ParsedModule | undefined {
  const entry = wgsl.search(/@compute\s+@workgroup_size\(/);
  if (entry < 0) return undefined;
  const size = /@workgroup_size\((\d+)u?\)/.exec(wgsl.slice(entry));
  if (!size) return undefined;
  const sig = /fn main\(((?:[^()]|\([^()]*\))*)\)\s*\{/.exec(wgsl.slice(entry));
  if (!sig) return undefined;
  const params: EntryParam[] = [];
  for (const p of sig[1].split(",").map((s) => s.trim()).filter((s) => s)) {
    const m = /^@builtin\(([a-z_]+)\)\s+([A-Za-z_][A-Za-z_0-9]*)\s*:\s*(.+)$/.exec(p);
    if (!m) return undefined;
    params.push({ builtin: m[1], name: m[2], type: m[3].trim() });
  }
  const bodyStart = entry + sig.index + sig[0].length;
  const bodyEnd = wgsl.lastIndexOf("}");
  if (bodyEnd < bodyStart) return undefined;
  const directives: string[] = [], bindings: { index: number; line: string }[] = [];
  const rest: string[] = [];
  for (const line of wgsl.slice(0, entry).split("\n")) {
    const b = BINDING.exec(line);
    if (b) bindings.push({ index: Number(b[1]), line });
    else if (/^(enable|requires|diagnostic)\b/.test(line)) directives.push(line);
    else rest.push(line);
  }
  return {
    directives,
    bindings,
    rest: rest.join("\n"),
    workgroupSize: Number(size[1]),
    params,
    body: wgsl.slice(bodyStart, bodyEnd),
  };
}

/** The module's binding declarations with indices from `renumber`. */
function renumbered(m: ParsedModule, renumber: (i: number) => number): string[] {
  return m.bindings.map((b) => b.line.replace(/@binding\(\d+\)/, `@binding(${renumber(b.index)})`));
}

/** Renames `names` (whole words) in `text` with `prefix`. */
function prefixNames(text: string, names: readonly string[], prefix: string): string {
  if (names.length === 0) return text;
  const re = new RegExp(`\\b(${names.join("|")})\\b`, "g");
  return text.replace(re, (n) => prefix + n);
}

/** Builtins a host may take from the merged entry point (the others are recomputed). */
const PASSED = new Set(["local_invocation_index", "subgroup_invocation_id", "subgroup_size"]);

/**
 * The host kernel with the rider's workgroups appended (see the module doc), or undefined when
 * either module has a shape this merge does not handle.
 */
export function mergeRider(
  host: KernelArtifact,
  rider: KernelArtifact,
  maxWorkgroupsPerDimension: number,
): KernelArtifact | undefined {
  const h = parse(host.wgsl), r = parse(rider.wgsl);
  if (!h || !r) return undefined;
  if (/var<workgroup>|workgroupBarrier|storageBarrier|subgroup/.test(rider.wgsl)) return undefined;
  const hostKinds = new Set(h.params.map((p) => p.builtin));
  const known = new Set(["workgroup_id", "num_workgroups", ...PASSED]);
  if ([...hostKinds].some((k) => !known.has(k))) return undefined;
  const riderKnown = new Set(["workgroup_id", "num_workgroups", "local_invocation_index"]);
  if (r.params.some((p) => !riderKnown.has(p.builtin))) return undefined;

  const [hx, hy, hz] = host.workgroups;
  const hostCount = hx * hy * hz;
  const [rx, ry, rz] = rider.workgroups;
  const riderThreads = rx * ry * rz * r.workgroupSize;
  const T = h.workgroupSize;
  const riderCount = Math.ceil(riderThreads / T);
  const total = hostCount + riderCount;
  const mx = Math.min(total, maxWorkgroupsPerDimension);
  const my = Math.ceil(total / mx);
  if (my > maxWorkgroupsPerDimension) return undefined;

  // Bindings: the host's reads, the rider's reads, the host's writes, the rider's writes.
  const hr = host.reads.length, rr = rider.reads.length, hw = host.writes.length;
  const hostBinding = (i: number) => (i < hr ? i : i + rr);
  const riderBinding = (i: number) => (i < rr ? hr + i : hr + rr + hw + (i - rr));
  const riderNames = [
    ...r.bindings.map((b) => /var<[^>]*>\s+([A-Za-z_][A-Za-z_0-9]*)/.exec(b.line)?.[1] ?? ""),
    ...[...r.rest.matchAll(/\bfn\s+([A-Za-z_][A-Za-z_0-9]*)/g)].map((m) => m[1]),
  ].filter((n) => n);
  const rename = (text: string) => prefixNames(text, riderNames, "ride_");

  const asParams = (ps: EntryParam[]) => ps.map((p) => `${p.name}: ${p.type}`).join(", ");
  const hostArg = (p: EntryParam) =>
    p.builtin === "workgroup_id"
      ? `vec3<u32>(mw % ${u(hx)}, (mw / ${u(hx)}) % ${u(hy)}, mw / ${u(hx * hy)})`
      : p.builtin === "num_workgroups"
      ? `vec3<u32>(${u(hx)}, ${u(hy)}, ${u(hz)})`
      : `m_${p.builtin}`;
  // The rider's thread g = (mw − hostCount)·T + lid, as (workgroup, index) of its own size.
  const rw = `(rg / ${u(r.workgroupSize)})`;
  const riderArg = (p: EntryParam) =>
    p.builtin === "workgroup_id"
      ? `vec3<u32>(${rw} % ${u(rx)}, (${rw} / ${u(rx)}) % ${u(ry)}, ${rw} / ${u(rx * ry)})`
      : p.builtin === "num_workgroups"
      ? `vec3<u32>(${u(rx)}, ${u(ry)}, ${u(rz)})`
      : `rg % ${u(r.workgroupSize)}`;
  const entryParams = [
    "@builtin(workgroup_id) m_wg: vec3<u32>",
    "@builtin(local_invocation_index) m_local_invocation_index: u32",
    ...h.params.filter((p) => PASSED.has(p.builtin) && p.builtin !== "local_invocation_index")
      .map((p) => `@builtin(${p.builtin}) m_${p.builtin}: ${p.type}`),
  ];
  const directives = [...new Set([...h.directives, ...r.directives])];
  const wgsl = `${directives.join("\n")}${
    directives.length ? "\n" : ""
  }// ${host.name} + ${rider.name}: the rider's ${riderCount} workgroups follow the host's ${hostCount}
${renumbered(h, hostBinding).join("\n")}
${renumbered(r, riderBinding).map(rename).join("\n")}
${h.rest}
${rename(r.rest)}
fn host_main(${asParams(h.params)}) {${h.body}}

fn ride_main(${asParams(r.params)}) {${rename(r.body)}}

@compute @workgroup_size(${T})
fn main(${entryParams.join(", ")}) {
  let mw = m_wg.x + m_wg.y * ${u(mx)};
  if (mw >= ${u(hostCount)}) {
    let rg = (mw - ${u(hostCount)}) * ${u(T)} + m_local_invocation_index;
    if (rg < ${u(riderThreads)}) { ride_main(${r.params.map(riderArg).join(", ")}); }
    return;
  }
  host_main(${h.params.map(hostArg).join(", ")});
}
`;
  return {
    ...host,
    name: `${host.name}+${rider.name}`,
    wgsl,
    workgroups: [mx, my, 1],
    reads: [...host.reads, ...rider.reads],
    writes: [...host.writes, ...rider.writes],
  };
}

/**
 * Moves each elementwise kernel into the dispatch of one of the next {@link REACH} kernels when
 * that is safe: no kernel up to and including the host reads what the rider writes or writes
 * what it reads or writes (buffers compared through `aliases`, input → the output sharing its
 * buffer), and the merged kernel stays within `maxBindings`.
 */
export function mergeRiders(
  kernels: readonly KernelArtifact[],
  aliases: ReadonlyMap<Node, Node>,
  maxBindings: number,
  maxWorkgroupsPerDimension: number,
): KernelArtifact[] {
  const out = [...kernels];
  const buffer = (k: BufferKey) => aliases.get(k as Node) ?? k;
  const touches = (keys: readonly BufferKey[], set: ReadonlySet<BufferKey>) =>
    keys.some((k) => set.has(buffer(k)));
  for (let i = 0; i < out.length; i++) {
    const rider = out[i];
    if (rider.kind !== "elementwise" || rider.tuning) continue;
    const written = new Set(rider.writes.map(buffer));
    const used = new Set([...rider.reads, ...rider.writes].map(buffer));
    for (let j = i + 1; j < out.length && j <= i + REACH; j++) {
      const k = out[j];
      if (touches(k.reads, written) || touches(k.writes, used)) break;
      const bindings = k.reads.length + k.writes.length + rider.reads.length +
        rider.writes.length;
      if (k.kind === "elementwise" || bindings > maxBindings) continue;
      const merged = mergeRider(k, rider, maxWorkgroupsPerDimension);
      if (!merged) continue;
      out[j] = merged;
      out.splice(i, 1);
      i--;
      break;
    }
  }
  return out;
}

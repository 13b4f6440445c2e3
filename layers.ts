/**
 * ssmkit's layer library: the token mixers of the state-space and linear-attention family,
 * each a short DSL function written from its paper's equations (models/layers/). Causal layers
 * take an optional initial state and return their final state, so one definition serves
 * prefill and decode (decode is the call with a sequence of length 1).
 *
 * ```ts
 * import { compile } from "@ssmkit/ssmkit";
 * import { gla } from "@ssmkit/ssmkit/layers";
 *
 * const prog = await compile(
 *   { q: "b t h k", k: "b t h k", v: "b t h v", g: "b t h k" },
 *   ({ q, k, v, g }) => gla(q, k, v, g),
 *   { b: 1, t: 64, h: 4, k: 16, v: 16 },
 * );
 * ```
 *
 * @module
 */

export {
  type LinearAttentionOptions,
  type LinearAttentionResult,
  retention,
  retentionLogDecay,
  simpleGla,
} from "./models/layers/retnet.ts";
export { gla } from "./models/layers/gla.ts";
export { hgrn2, type Hgrn2Options } from "./models/layers/hgrn2.ts";
export { mlstm, type MlstmState } from "./models/layers/mlstm.ts";
export { gatedDeltaNet } from "./models/layers/gated_deltanet.ts";
export { mamba3Siso, type Mamba3State } from "./models/layers/mamba3.ts";
export { mamba3Mimo } from "./models/layers/mamba3_mimo.ts";
export { s6, type S6Params } from "./models/layers/s6.ts";
export { vimBlock, type VimDirection, vimMixer } from "./models/layers/vim.ts";
export { ss2d, ss2dBlock, type Ss2dBlockParams } from "./models/layers/ss2d.ts";
export { vssd } from "./models/layers/vssd.ts";
export { hsmSsd } from "./models/layers/efficientvim.ts";
export { lbScan } from "./models/layers/lbmamba.ts";
export { gqaAttention, type GqaParams, rope } from "./models/layers/attention.ts";

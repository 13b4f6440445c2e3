/**
 * Type-level parsing of `rearrange` patterns, so that `rearrange(x, "b l (h p) -> b l h p")` is
 * typed `Tensor<"b l h p">` and a malformed pattern is a compile error. Mirrors the trace-time
 * parser in `views.ts`; a pattern this parser cannot follow gives an untyped result instead of a
 * wrong type.
 *
 * @module
 */

import type { IsLiteral, Join, KnownAxes, Minus, Trim, Words } from "./axes.ts";

/** True when `W` can be a plain axis name (no space, parenthesis, `=`, `,` or `->`). */
export type IsPlainName<W extends string> = W extends "" ? false
  : W extends `${string}${" " | "(" | ")" | "=" | "," | "-" | ">"}${string}` ? false
  : true;

/**
 * One side of a pattern as tokens `[name, elementary axes]`: `b` is `["b", ["b"]]`, `(h p)` is
 * `["", ["h", "p"]]` (unnamed, allowed on the left only), `d=(h p)` is `["d", ["h", "p"]]`.
 * `"?"` when the side cannot be parsed.
 */
export type PatternTokens<S extends string> = Trim<S> extends "" ? []
  : Trim<S> extends `(${infer G})${infer R}` ? AppendToken<["", Words<G>], PatternTokens<R>>
  : Trim<S> extends `${infer N}=${infer R}`
    ? IsPlainName<Trim<N>> extends true
      ? Trim<R> extends `(${infer G})${infer R2}`
        ? AppendToken<[Trim<N>, Words<G>], PatternTokens<R2>>
      : "?"
    : PlainFirstToken<Trim<S>>
  : PlainFirstToken<Trim<S>>;

/** The tokens of a side that starts with a plain name (helper of {@link PatternTokens}). */
export type PlainFirstToken<S extends string> = S extends `${infer W} ${infer R}`
  ? IsPlainName<W> extends true ? AppendToken<[W, [W]], PatternTokens<R>> : "?"
  : IsPlainName<S> extends true ? [[S, [S]]]
  : "?";

/** `[T, ...R]`, or `"?"` when `R` is (helper of {@link PatternTokens}). */
export type AppendToken<T, R> = R extends unknown[] ? [T, ...R] : "?";

/** The names of a token list. */
export type TokenNames<T> = T extends [[infer N extends string, unknown], ...infer R]
  ? [N, ...TokenNames<R>]
  : [];

/** The elementary axes of a token list, in order. */
export type TokenElements<T> = T extends [[string, infer E extends string[]], ...infer R]
  ? [...E, ...TokenElements<R>]
  : [];

/** Left and right token lists of a pattern, or `"?"`. */
export type PatternSides<P extends string> = P extends `${infer L}->${infer R}`
  ? R extends `${string}->${string}` ? "?"
  : [PatternTokens<L>, PatternTokens<R>]
  : "?";

/** The output axis string of a pattern, or `string` when the pattern cannot be typed. */
export type RearrangeAxes<P extends string> = IsLiteral<P> extends false ? string
  : PatternSides<P> extends [unknown, infer R extends unknown[]]
    ? "" extends TokenNames<R>[number] ? string : Join<TokenNames<R>>
  : string;

/**
 * `P` when the pattern is well formed for a tensor with axes `A`, else an error message: one
 * `->`, a left side with one entry per axis of `A`, named merges on the right, and the same
 * elementary axes on both sides.
 */
export type CheckPattern<A, P extends string> = IsLiteral<P> extends false ? P
  : P extends `${string}->${string}->${string}` ? `rearrange "${P}": needs exactly one "->"`
  : P extends `${string}->${string}`
    ? PatternSides<P> extends [infer L extends unknown[], infer R extends unknown[]]
      ? "" extends TokenNames<R>[number]
        ? `rearrange "${P}": a merged output axis needs a name, e.g. "d=(h p)"`
      : [CheckCount<A, P, L>] extends [never] ? CheckElements<P, TokenElements<L>, TokenElements<R>>
      : CheckCount<A, P, L>
    : P
  : `rearrange "${P}": needs exactly one "->"`;

/** `P` when both sides use the same elementary axes, else an error message. */
export type CheckElements<P extends string, L extends string[], R extends string[]> =
  Minus<L, R> extends [infer M extends string, ...string[]]
    ? `rearrange "${P}": ${M} is missing on the right`
    : Minus<R, L> extends [infer M extends string, ...string[]]
      ? `rearrange "${P}": ${M} is unknown on the right`
    : [...FirstRepeated<L>, ...FirstRepeated<R>] extends [infer M extends string, ...string[]]
      ? `rearrange "${P}": ${M} appears twice on one side`
    : P;

/** `[x]` for the first element of `T` that appears again later in `T`, else `[]`. */
export type FirstRepeated<T extends string[]> = T extends
  [infer H extends string, ...infer R extends string[]]
  ? H extends R[number] ? [H] : FirstRepeated<R>
  : [];

/** An error message when the left side's entries do not match `A`'s axis count, else `never`. */
export type CheckCount<A, P extends string, L extends unknown[]> = KnownAxes<A> extends false
  ? never
  : A extends string ? L["length"] extends Words<A>["length"] ? never
    : `rearrange "${P}": the left side has ${L["length"]} axes but the tensor has ${Words<
      A
    >["length"]}: [${A}]`
  : never;

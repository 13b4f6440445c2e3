/**
 * Axis strings: parsing at run time and the matching type-level helpers, so that an axis string
 * like `"b l d"` is checked both by TypeScript and again while tracing.
 *
 * @module
 */

/** Drops leading and trailing spaces of a string literal type. */
export type Trim<S extends string> = S extends ` ${infer R}` ? Trim<R>
  : S extends `${infer R} ` ? Trim<R>
  : S;

/** Splits an axis string literal type into a tuple of axis names. */
export type Words<S extends string> = Trim<S> extends "" ? []
  : Trim<S> extends `${infer H} ${infer R}` ? [H, ...Words<R>]
  : [Trim<S>];

/** Joins a tuple of axis names with single spaces. */
export type Join<T extends readonly string[]> = T extends [] ? ""
  : T extends [infer H extends string] ? H
  : T extends [infer H extends string, ...infer R extends string[]] ? `${H} ${Join<R>}`
  : string;

/** The canonical spelling of an axis string type (single spaces, trimmed). */
export type Canon<S extends string> = string extends S ? string : Join<Words<S>>;

/** The elements of tuple `A` that are not in tuple `B`, in order. */
export type Minus<A extends readonly string[], B extends readonly string[]> = A extends
  [infer H extends string, ...infer R extends string[]]
  ? H extends B[number] ? Minus<R, B> : [H, ...Minus<R, B>]
  : [];

/** True when tuple `A` has at least as many elements as tuple `B`. */
export type AtLeastAsLong<A extends readonly string[], B extends readonly string[]> = A extends
  [...{ [K in keyof B]: string }, ...string[]] ? true : false;

/**
 * The axes of a broadcast result: the longer operand's axes (the first on a tie), followed by
 * the other operand's remaining axes in their order. Mirrors {@link broadcastAxes}. Under the
 * public ops' rule (one operand's axes contain the other's) this is the containing operand's
 * axes, in its order.
 */
export type Broadcast<A extends string, B extends string> = string extends A ? string
  : string extends B ? string
  : AtLeastAsLong<Words<A>, Words<B>> extends true
    ? Join<[...Words<A>, ...Minus<Words<B>, Words<A>>]>
  : Join<[...Words<B>, ...Minus<Words<A>, Words<B>>]>;

/** The axes left after removing the axes in `R` from `A`. */
export type Without<A extends string, R extends string> = string extends A ? string
  : string extends R ? string
  : Join<Minus<Words<A>, Words<R>>>;

/**
 * True when `A` is an axis string TypeScript knows (a literal such as `"b l d"`); false for
 * `any` (an untyped tensor) and for `string` (axes computed at run time). Type-level checks
 * apply only to known axes; the others are left to the trace-time checks.
 */
export type KnownAxes<A> = IsLiteral<A>;

/**
 * True when `S` is a string literal type (or a union of them); false for `any`, `string` and
 * template patterns such as `` `${string} -> ${string}` `` (strings built at run time).
 */
export type IsLiteral<S> = 0 extends (1 & S) ? false
  : Record<never, never> extends Record<S & string, 1> ? false
  : true;

/** True when every axis of `A` is an axis of `B` (as sets). */
export type IsSubset<A extends string, B extends string> = [Words<A>[number]] extends
  [Words<B>[number]] ? true : false;

/** `A` with the axis `X` renamed to `N`, in place. */
export type Rename<A extends string, X extends string, N extends string> = Join<
  RenameWords<Words<A>, X, N>
>;

/** Tuple form of {@link Rename}. */
export type RenameWords<T extends readonly string[], X extends string, N extends string> = T extends
  [infer H extends string, ...infer R extends string[]]
  ? [H extends X ? N : H, ...RenameWords<R, X, N>]
  : [];

/**
 * `R` when every axis it names is an axis of `A`, else an error message naming the op, the
 * missing axis and `A` (a parameter of this type turns a wrong axis into a compile error that
 * reads like the trace-time one).
 */
export type CheckAxes<A, R extends string, Op extends string> = KnownAxes<A> extends false ? R
  : IsLiteral<R> extends false ? R
  : Words<R> extends [] ? `${Op}: no axes given`
  : A extends string
    ? Minus<Words<R>, Words<A>> extends [infer M extends string, ...string[]]
      ? `${Op}: ${M} is not an axis of the tensor [${A}]`
    : R
  : R;

/** Like {@link CheckAxes} for a parameter that names exactly one axis. */
export type CheckAxis<A, X extends string, Op extends string> = IsLiteral<X> extends false ? X
  : Words<X> extends [string] ? CheckAxes<A, X, Op>
  : `${Op}: expected one axis name, got "${X}"`;

/**
 * `N` when it can name a new axis of `A` (it is not already one of `A`'s axes other than
 * `replaced`), else an error message.
 */
export type CheckNewAxis<A, N extends string, Replaced extends string, Op extends string> =
  KnownAxes<A> extends false ? N
    : IsLiteral<N> extends false ? N
    : A extends string
      ? N extends Exclude<Words<A>[number], Replaced>
        ? `${Op}: new axis ${N} already exists in [${A}]`
      : N
    : N;

/**
 * The error message for two axis strings that each have an axis the other lacks, or `never`
 * when one contains the other (see {@link broadcastAxes}' callers: elementwise ops broadcast
 * only a subset of axes).
 */
export type OuterBroadcastError<A extends string, B extends string, Op extends string> =
  IsSubset<A, B> extends true ? never
    : IsSubset<B, A> extends true ? never
    : `${Op}: [${A}] has ${Minus<Words<A>, Words<B>>[0]} and [${B}] has ${Minus<
      Words<B>,
      Words<A>
    >[0]}, which the other lacks: elementwise ops do not make outer products; use einsum or broadcast()`;

const AXIS_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Parses `"b l d"` into `["b", "l", "d"]`, rejecting bad names and repeated axes. */
export function parseAxes(text: string, context = "axis string"): string[] {
  const names = text.trim() === "" ? [] : text.trim().split(/\s+/);
  const seen = new Set<string>();
  for (const name of names) {
    if (!AXIS_NAME.test(name)) {
      throw new Error(`${context} "${text}": "${name}" is not a valid axis name`);
    }
    if (seen.has(name)) throw new Error(`${context} "${text}": axis "${name}" appears twice`);
    seen.add(name);
  }
  return names;
}

/**
 * Runtime twin of {@link Broadcast}: the axis order of an elementwise result. It accepts any
 * two axis lists (the compiler's own rewrites may make outer products); the public ops first
 * check that one operand's axes contain the other's.
 */
export function broadcastAxes(a: readonly string[], b: readonly string[]): string[] {
  const [first, second] = a.length >= b.length ? [a, b] : [b, a];
  return [...first, ...second.filter((x) => !first.includes(x))];
}

/** Formats axes for error messages: `[b l d]`. */
export function showAxes(axes: readonly string[]): string {
  return `[${axes.join(" ")}]`;
}

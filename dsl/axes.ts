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
 * the other operand's remaining axes in their order. Mirrors {@link broadcastAxes}.
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

/** Runtime twin of {@link Broadcast}: the axis order of an elementwise result. */
export function broadcastAxes(a: readonly string[], b: readonly string[]): string[] {
  const [first, second] = a.length >= b.length ? [a, b] : [b, a];
  return [...first, ...second.filter((x) => !first.includes(x))];
}

/** Formats axes for error messages: `[b l d]`. */
export function showAxes(axes: readonly string[]): string {
  return `[${axes.join(" ")}]`;
}

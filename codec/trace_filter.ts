/**
 * The filter language of `nbd-codec dissect --filter`: select events by the keys of their JSON form
 * (`formatEventJson`). Small on purpose, in the manner of Wireshark's display filters:
 *
 * - `FIELD`: the key is present (and not `false` or `null`; an empty array counts as absent):
 *   `responseTime`, `findings`.
 * - `FIELD OP VALUE` with `==`, `!=`, `<`, `<=`, `>`, `>=`: `command == NBD_CMD_WRITE`,
 *   `responseTime > 0.001`, `direction == "s2c"`. A dotted field reaches into objects and arrays:
 *   `findings.rule == "reply-cookie"`.
 * - `and`, `or`, `not` (also `&&`, `||`, `!`) and parentheses; `not` binds tightest, then `and`, then `or`.
 *
 * Values are numbers (`4096`, `0.001`, `-1`), strings in double quotes (JSON escapes), or bare words
 * (`NBD_CMD_READ`, `c2s`, `true`). Comparison rules:
 * - A field with several values (an array, such as `flags`) matches when any of them does: `flags ==
 *   NBD_CMD_FLAG_FUA` holds when FUA is among the flags. `!=` is the negation of `==` (no value equals).
 * - When both sides are numbers or decimal strings (64-bit values and times are decimal strings in the
 *   JSON), they are compared as numbers, exactly (integers beyond 2^53 too); `<`, `<=`, `>`, `>=` only
 *   compare numbers and are false otherwise.
 * - A bare word also matches a spec name by its last parts: `command == WRITE` matches `NBD_CMD_WRITE`,
 *   `flags == FUA` matches `NBD_CMD_FLAG_FUA`. A quoted string matches exactly.
 * - A field that is absent matches nothing (`==`, comparisons), so `!=` holds for it.
 *
 * @module
 */
import type { JsonObject, JsonValue } from "./format.ts";

/**
 * A filter expression that does not parse: `column` (1-based) is where the error is in the expression.
 *
 * @example
 * ```ts
 * import { compileFilter, FilterSyntaxError } from "@nbd/codec/trace";
 * try {
 *   compileFilter("command ==");
 * } catch (e) {
 *   if (e instanceof FilterSyntaxError) console.log(e.column, e.message); // 11 "expected a value after '=='"
 * }
 * ```
 */
export class FilterSyntaxError extends SyntaxError {
  /** 1-based column of the error in the expression. */
  readonly column: number;

  /**
   * Creates the error.
   *
   * @param message what is wrong
   * @param column 1-based column
   */
  constructor(message: string, column: number) {
    super(message);
    this.name = "FilterSyntaxError";
    this.column = column;
  }
}

/**
 * A compiled filter: true when the event's JSON object is selected.
 *
 * @example
 * ```ts
 * import { compileFilter, type EventFilter } from "@nbd/codec/trace";
 * const f: EventFilter = compileFilter("kind == request");
 * console.log(f({ kind: "request" })); // true
 * ```
 */
export type EventFilter = (event: JsonObject) => boolean;

type Op = "==" | "!=" | "<" | "<=" | ">" | ">=";

type Token =
  | { readonly t: "word"; readonly v: string; readonly at: number }
  | { readonly t: "string"; readonly v: string; readonly at: number }
  | { readonly t: "number"; readonly v: string; readonly at: number }
  | { readonly t: "op"; readonly v: Op; readonly at: number }
  | { readonly t: "and" | "or" | "not" | "(" | ")"; readonly at: number }
  | { readonly t: "end"; readonly at: number };

const NUMBER = /^-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$/;
const WORD = /[A-Za-z0-9_.:\-\[\]]/;

function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i]!;
    if (c === " " || c === "\t" || c === "\n" || c === "\r") {
      i++;
      continue;
    }
    const at = i;
    if (c === "(" || c === ")") {
      out.push({ t: c, at });
      i++;
      continue;
    }
    const two = src.slice(i, i + 2);
    if (two === "&&" || two === "||") {
      out.push({ t: two === "&&" ? "and" : "or", at });
      i += 2;
      continue;
    }
    if (two === "==" || two === "!=" || two === "<=" || two === ">=") {
      out.push({ t: "op", v: two, at });
      i += 2;
      continue;
    }
    if (c === "<" || c === ">") {
      out.push({ t: "op", v: c, at });
      i++;
      continue;
    }
    if (c === "!") {
      out.push({ t: "not", at });
      i++;
      continue;
    }
    if (c === "=") throw new FilterSyntaxError("'=' is not an operator (use '==')", at + 1);
    if (c === '"') {
      let j = i + 1;
      while (j < src.length && src[j] !== '"') j += src[j] === "\\" ? 2 : 1;
      if (j >= src.length) throw new FilterSyntaxError("unterminated string", at + 1);
      let v: string;
      try {
        v = JSON.parse(src.slice(i, j + 1)) as string;
      } catch {
        throw new FilterSyntaxError("bad escape in string", at + 1);
      }
      out.push({ t: "string", v, at });
      i = j + 1;
      continue;
    }
    if (WORD.test(c)) {
      let j = i;
      while (j < src.length && WORD.test(src[j]!)) j++;
      const w = src.slice(i, j);
      i = j;
      if (w === "and" || w === "or" || w === "not") out.push({ t: w, at });
      else if (NUMBER.test(w)) out.push({ t: "number", v: w, at });
      else out.push({ t: "word", v: w, at });
      continue;
    }
    throw new FilterSyntaxError(`unexpected character '${c}'`, at + 1);
  }
  out.push({ t: "end", at: src.length });
  return out;
}

function describe(t: Token): string {
  switch (t.t) {
    case "end":
      return "the end of the expression";
    case "word":
    case "number":
      return `'${t.v}'`;
    case "string":
      return JSON.stringify(t.v);
    case "op":
      return `'${t.v}'`;
    default:
      return `'${t.t}'`;
  }
}

/** A comparison value: its text, and whether it may match spec names by their last parts. */
interface Value {
  readonly text: string;
  readonly bare: boolean;
  /** The value as an exact decimal, when it is a number. */
  readonly num: Decimal | undefined;
}

/** An exact decimal: sign, integer digits and fraction digits (no trailing zeros). */
interface Decimal {
  readonly neg: boolean;
  readonly int: bigint;
  readonly frac: string;
}

const DECIMAL = /^(-?)(\d*)(?:\.(\d*))?$/;

function decimal(v: string): Decimal | undefined {
  if (v.length > 64) return undefined;
  const m = DECIMAL.exec(v);
  if (m === null) {
    if (!NUMBER.test(v)) return undefined;
    // An exponent: through a double (fine for the small values filters compare with).
    const n = Number(v);
    return Number.isFinite(n) ? decimal(n.toFixed(20).replace(/\.?0+$/, "")) : undefined;
  }
  const intText = m[2] ?? "";
  const fracText = (m[3] ?? "").replace(/0+$/, "");
  if (intText === "" && (m[3] === undefined || m[3] === "")) return undefined;
  const int = BigInt(intText === "" ? "0" : intText);
  return { neg: m[1] === "-" && (int !== 0n || fracText !== ""), int, frac: fracText };
}

function compareDecimal(a: Decimal, b: Decimal): number {
  if (a.neg !== b.neg) return a.neg ? -1 : 1;
  const sign = a.neg ? -1 : 1;
  if (a.int !== b.int) return (a.int < b.int ? -1 : 1) * sign;
  const n = Math.max(a.frac.length, b.frac.length);
  const fa = a.frac.padEnd(n, "0");
  const fb = b.frac.padEnd(n, "0");
  return fa === fb ? 0 : (fa < fb ? -1 : 1) * sign;
}

function numOf(v: JsonValue): Decimal | undefined {
  if (typeof v === "number") {
    return Number.isFinite(v) ? decimal(String(v).includes("e") ? v.toFixed(20) : String(v)) : undefined;
  }
  if (typeof v === "string") return decimal(v);
  return undefined;
}

/** The values a dotted path reaches in `o`: arrays are searched element by element. */
function resolve(o: JsonValue, path: readonly string[], i: number, out: JsonValue[]): void {
  if (Array.isArray(o)) {
    for (const x of o) resolve(x, path, i, out);
    return;
  }
  if (i === path.length) {
    out.push(o);
    return;
  }
  if (o === null || typeof o !== "object") return;
  const next = o[path[i]!];
  if (next !== undefined) resolve(next, path, i + 1, out);
}

function equals(v: JsonValue, want: Value): boolean {
  if (typeof v === "boolean") return want.bare && want.text === String(v);
  if (typeof v !== "number" && typeof v !== "string") return false;
  if (want.num !== undefined) {
    const n = numOf(v);
    if (n !== undefined) return compareDecimal(n, want.num) === 0;
  }
  const s = String(v);
  if (s === want.text) return true;
  // NBD_CMD_WRITE matches WRITE and CMD_WRITE; NBD_CMD_FLAG_FUA matches FUA.
  return want.bare && s.startsWith("NBD_") && s.endsWith("_" + want.text);
}

function compare(v: JsonValue, op: Op, want: Value): boolean {
  if (op === "==") return equals(v, want);
  if (want.num === undefined) return false;
  const n = numOf(v);
  if (n === undefined) return false;
  const c = compareDecimal(n, want.num);
  switch (op) {
    case "<":
      return c < 0;
    case "<=":
      return c <= 0;
    case ">":
      return c > 0;
    case ">=":
      return c >= 0;
  }
  return false;
}

class Parser {
  readonly #tokens: Token[];
  #i = 0;

  constructor(tokens: Token[]) {
    this.#tokens = tokens;
  }

  #peek(): Token {
    return this.#tokens[this.#i]!;
  }

  parse(): EventFilter {
    if (this.#peek().t === "end") throw new FilterSyntaxError("the expression is empty", 1);
    const f = this.#or();
    const t = this.#peek();
    if (t.t !== "end") {
      throw new FilterSyntaxError(`expected 'and', 'or' or the end, found ${describe(t)}`, t.at + 1);
    }
    return f;
  }

  #or(): EventFilter {
    let left = this.#and();
    while (this.#peek().t === "or") {
      this.#i++;
      const a = left;
      const b = this.#and();
      left = (o) => a(o) || b(o);
    }
    return left;
  }

  #and(): EventFilter {
    let left = this.#not();
    while (this.#peek().t === "and") {
      this.#i++;
      const a = left;
      const b = this.#not();
      left = (o) => a(o) && b(o);
    }
    return left;
  }

  #not(): EventFilter {
    if (this.#peek().t === "not") {
      this.#i++;
      const f = this.#not();
      return (o) => !f(o);
    }
    return this.#primary();
  }

  #primary(): EventFilter {
    const t = this.#peek();
    if (t.t === "(") {
      this.#i++;
      const f = this.#or();
      const c = this.#peek();
      if (c.t !== ")") {
        throw new FilterSyntaxError(
          `expected ')' to close '(' at column ${t.at + 1}, found ${describe(c)}`,
          c.at + 1,
        );
      }
      this.#i++;
      return f;
    }
    if (t.t !== "word") throw new FilterSyntaxError(`expected a field name, found ${describe(t)}`, t.at + 1);
    this.#i++;
    const path = t.v.split(".");
    if (path.some((p) => p === "")) throw new FilterSyntaxError(`'${t.v}' is not a field name`, t.at + 1);
    const op = this.#peek();
    if (op.t !== "op") {
      return (o) => {
        const vs: JsonValue[] = [];
        resolve(o, path, 0, vs);
        return vs.some((v) => v !== false && v !== null);
      };
    }
    this.#i++;
    const v = this.#peek();
    if (v.t !== "word" && v.t !== "string" && v.t !== "number") {
      throw new FilterSyntaxError(`expected a value after '${op.v}', found ${describe(v)}`, v.at + 1);
    }
    this.#i++;
    const want: Value = { text: v.v, bare: v.t === "word", num: v.t === "string" ? undefined : decimal(v.v) };
    if (op.v !== "==" && op.v !== "!=" && want.num === undefined) {
      throw new FilterSyntaxError(`'${op.v}' compares numbers, found ${describe(v)}`, v.at + 1);
    }
    const kind = op.v === "!=" ? "==" : op.v;
    const negate = op.v === "!=";
    return (o) => {
      const vs: JsonValue[] = [];
      resolve(o, path, 0, vs);
      let any = false;
      for (const x of vs) {
        if (compare(x, kind, want)) {
          any = true;
          break;
        }
      }
      return negate ? !any : any;
    };
  }
}

/**
 * Compiles a filter expression (see the module doc for the language) into a function of an event's JSON
 * object (`formatEventJson`). Throws {@link FilterSyntaxError} with the column of the first error.
 *
 * @example
 * ```ts
 * import { compileFilter } from "@nbd/codec/trace";
 * const slowWrites = compileFilter("command == NBD_CMD_WRITE and responseTime > 0.001");
 * console.log(slowWrites({ kind: "simple-reply", command: "NBD_CMD_WRITE", responseTime: "0.002000000" })); // true
 * console.log(slowWrites({ kind: "simple-reply", command: "NBD_CMD_WRITE", responseTime: "0.000211000" })); // false
 * ```
 */
export function compileFilter(expression: string): EventFilter {
  return new Parser(tokenize(expression)).parse();
}

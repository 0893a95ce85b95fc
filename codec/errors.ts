/**
 * Errors and findings shared by every decoder.
 *
 * A decoder meets three kinds of trouble:
 * - too few bytes: not an error at all, the decoder returns `{ done: false, needed }`;
 * - a caller mistake on encode (a name over 4096 bytes, a size above 2^64-1): a `TypeError` or `RangeError`;
 * - bytes from the peer that break the spec: an {@link NbdDecodeError} in strict mode, or a
 *   {@link Finding} in lenient mode when the frame can still be decoded.
 *
 * @module
 */

/**
 * Every reason a decoder can reject or flag bytes from a peer. The union is closed: a new code is a
 * breaking change.
 *
 * - `bad-magic`: a magic number is not the one the frame needs.
 * - `bad-length`: a length field disagrees with the layout (a fixed-size payload of the wrong size, an
 *   inner length running past the outer one).
 * - `reserved-bits`: a bit the spec reserves (or the negotiation did not allow) is set.
 * - `bad-string`: a string is not valid UTF-8 or contains NUL.
 * - `string-too-long`: a string is longer than the spec's 4096 bytes (or the caller's `maxStringLength`).
 * - `bad-value`: a field holds a value the spec forbids (zero extent length, zero error in an error chunk,
 *   block-size constraints broken, a non-zero reserved field).
 * - `duplicate`: a value the spec says must be unique appears twice.
 * - `unknown-type`: a code the decoder cannot interpret where the spec says the receiver must fail.
 * - `unexpected-frame`: a frame that the negotiated state does not allow here.
 * - `limit-exceeded`: a length above a decoder limit (an option with a documented default), refused before
 *   anything is buffered or allocated.
 * - `truncated`: the input ended inside a frame.
 *
 * @example
 * ```ts
 * import type { NbdDecodeErrorCode } from "@nbd/codec";
 * const code: NbdDecodeErrorCode = "bad-magic";
 * console.log(code);
 * ```
 */
export type NbdDecodeErrorCode =
  | "bad-magic"
  | "bad-length"
  | "reserved-bits"
  | "bad-string"
  | "string-too-long"
  | "bad-value"
  | "duplicate"
  | "unknown-type"
  | "unexpected-frame"
  | "limit-exceeded"
  | "truncated";

/**
 * A spec violation found while decoding. In lenient mode decoders return these next to the frame
 * (like Wireshark's expert info); in strict mode the first one is thrown as an {@link NbdDecodeError}.
 *
 * @example
 * ```ts
 * import { decodeClientFlags } from "@nbd/codec";
 * const r = decodeClientFlags(new Uint8Array([0, 0, 0, 5]), { strict: false });
 * if (r.done) console.log(r.findings[0]?.rule); // "client-flags-reserved"
 * ```
 */
export interface Finding {
  /** What kind of violation it is. */
  readonly code: NbdDecodeErrorCode;
  /** Byte offset in the input (counted from the start of the array given to the decoder). */
  readonly offset: number;
  /** Stable identifier of the rule broken, e.g. `"option-info-length"`: a key of `RULES` (codec/rules.ts). */
  readonly rule: string;
  /** A sentence saying what was found and what the spec requires. */
  readonly message: string;
}

/**
 * Thrown by decoders for bytes that break the spec: always in strict mode, and in lenient mode when the
 * frame cannot be decoded at all (a wrong magic, a length that contradicts the layout).
 *
 * Use {@link isNbdDecodeError} rather than `instanceof`: it also works across two copies of this module.
 *
 * @example
 * ```ts
 * import { decodeRequest, isNbdDecodeError } from "@nbd/codec";
 * try {
 *   decodeRequest(new Uint8Array(28));
 * } catch (e) {
 *   if (isNbdDecodeError(e)) console.log(e.code, e.offset); // "bad-magic" 0
 * }
 * ```
 */
export class NbdDecodeError extends Error {
  /** What kind of violation it is. */
  readonly code: NbdDecodeErrorCode;
  /** Byte offset of the offending field in the input. */
  readonly offset: number;
  /** Stable identifier of the rule broken. */
  readonly rule: string;

  /**
   * Creates the error; decoders do this, callers rarely need to.
   *
   * @param code what kind of violation it is
   * @param offset byte offset of the offending field in the input
   * @param rule stable identifier of the rule broken
   * @param message a sentence saying what was found and what the spec requires
   */
  constructor(code: NbdDecodeErrorCode, offset: number, rule: string, message: string) {
    super(message);
    this.name = "NbdDecodeError";
    this.code = code;
    this.offset = offset;
    this.rule = rule;
  }
}

/**
 * Tells whether a value is an {@link NbdDecodeError}, by shape rather than by class identity, so that it
 * works across duplicated copies of this module (an ESM and a CJS copy in one process, say).
 *
 * @example
 * ```ts
 * import { isNbdDecodeError, NbdDecodeError } from "@nbd/codec";
 * console.log(isNbdDecodeError(new NbdDecodeError("bad-magic", 0, "r", "m"))); // true
 * console.log(isNbdDecodeError(new Error("x"))); // false
 * ```
 */
export function isNbdDecodeError(value: unknown): value is NbdDecodeError {
  if (typeof value !== "object" || value === null) return false;
  const v = value as { name?: unknown; code?: unknown; offset?: unknown; rule?: unknown };
  return v.name === "NbdDecodeError" && typeof v.code === "string" && typeof v.offset === "number" &&
    typeof v.rule === "string";
}

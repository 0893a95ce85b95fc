/**
 * What the server and client sessions share: the two error types that say who broke the protocol (h11's
 * `LocalProtocolError` and `RemoteProtocolError`), the limits every session takes, and the normalisation
 * of 64-bit arguments given as a safe-integer `number` or a `bigint`.
 *
 * @module
 */
import type { NbdDecodeErrorCode } from "./errors.ts";
import { DEFAULT_MAX_PAYLOAD_LENGTH, MAX_STRING_LENGTH } from "./types.ts";

/**
 * Why a session refused a call of the local program. The union is closed: a new code is a breaking change.
 *
 * - `bad-argument`: a value of the wrong type or out of range (an offset above 2^64-1, a negative length).
 * - `bad-state`: the call is not allowed where the session is (a reply before the handshake ended, a
 *   request after NBD_CMD_DISC, a handshake call in transmission).
 * - `not-negotiated`: the call needs something the handshake did not negotiate (a structured chunk under
 *   simple replies, a metadata context that was not selected).
 * - `not-advertised`: the peer did not advertise what the call needs (FUA without SEND_FUA, a WRITE on a
 *   read-only export).
 * - `unknown-cookie`: no request with this cookie is in flight.
 * - `duplicate-cookie`: a request with this cookie is already in flight.
 * - `reply-finished`: the reply to this request is already complete (a chunk after DONE).
 * - `forbidden`: the spec forbids what the call would produce (two data chunks under DF, more than one
 *   extent under REQ_ONE, data outside the requested range, a length that breaks block-size constraints).
 * - `limit-exceeded`: a length above a session limit or the negotiated maximum payload.
 *
 * @example
 * ```ts
 * import type { NbdLocalErrorCode } from "@nbd/codec";
 * const code: NbdLocalErrorCode = "unknown-cookie";
 * console.log(code);
 * ```
 */
export type NbdLocalErrorCode =
  | "bad-argument"
  | "bad-state"
  | "not-negotiated"
  | "not-advertised"
  | "unknown-cookie"
  | "duplicate-cookie"
  | "reply-finished"
  | "forbidden"
  | "limit-exceeded";

/**
 * Every rule id an {@link NbdLocalError} can carry: the local program's mistakes, refused before any byte is
 * produced. A namespace of its own, apart from the peer-byte rules of the catalogue (`RULES`, {@link RuleId}):
 * these are not rules about what a peer sent. An id that is also a catalogue id (`after-disc`,
 * `cookie-in-flight`, `read-chunk-range`, ...) names the same spec clause, seen from the side about to break it.
 * The list is closed: a new id is a new entry here (`test/rules.test.ts` checks that every id is kebab-case,
 * listed once and raised somewhere in `codec/`).
 *
 * @example
 * ```ts
 * import { LOCAL_ERROR_RULES } from "@nbd/codec";
 * console.log(LOCAL_ERROR_RULES.includes("reply-cookie")); // true
 * ```
 */
export const LOCAL_ERROR_RULES = [
  // Shared by both sessions: arguments and limits.
  "limit-value",
  "u64-range",
  "u64-number",
  "u32-range",
  // The client session: calls out of place, bad arguments.
  "option-phase",
  "option-fixed-newstyle",
  "tls-phase",
  "read-buffer",
  "command-value",
  "read-length",
  "write-data",
  "transmission-phase",
  "after-disc",
  "cookie-in-flight",
  "flags-value",
  "payload-len-compact",
  "length-32",
  "max-payload-length",
  // The client session: a request the negotiated export does not allow (codec/_client_request.ts).
  "command-unknown",
  "command-not-advertised",
  "command-flags",
  "flag-fua",
  "flag-df",
  "flag-fast-zero",
  "read-only",
  "block-status-negotiation",
  "block-status-contexts",
  "block-status-payload",
  "block-status-payload-empty",
  "block-status-payload-context",
  "block-status-payload-duplicate",
  "request-zero-fields",
  "request-zero-length",
  "request-range",
  "block-size-alignment",
  "max-payload",
  // The server session: configuration and calls out of place.
  "exports",
  "export",
  "block-size",
  "wide-context",
  "start-once",
  "oldstyle-tls",
  "oldstyle-export",
  "chunk",
  "receive-before-start",
  "receive-during-tls",
  "tls-established",
  // The server session: a reply the request or the negotiation does not allow.
  "reply-cookie",
  "error-zero",
  "error-value",
  "enotsup",
  "ok-needs-data",
  "read-reply",
  "read-data",
  "read-chunk",
  "read-chunk-simple",
  "read-chunk-empty",
  "read-chunk-range",
  "read-df",
  "read-chunk-overlap",
  "read-coverage",
  "read-error",
  "read-error-simple",
  "read-error-range",
  "done-simple",
  "done-incomplete",
  "done-contexts",
  "block-status-reply",
  "block-status-context",
  "block-status-extents",
  "extent-zero",
  "extent-32",
  "extent-range",
  "extent-end",
] as const;

/**
 * A rule id of an {@link NbdLocalError}: one of {@link LOCAL_ERROR_RULES}.
 *
 * @example
 * ```ts
 * import type { LocalErrorRule } from "@nbd/codec";
 * const rule: LocalErrorRule = "after-disc";
 * console.log(rule);
 * ```
 */
export type LocalErrorRule = typeof LOCAL_ERROR_RULES[number];

/**
 * Thrown by a session when the local program asks for something the protocol forbids. It is always thrown
 * before any byte is produced: the session's state is unchanged and the connection can go on.
 *
 * Use {@link isNbdLocalError} rather than `instanceof`: it also works across two copies of this module.
 *
 * @example
 * ```ts
 * import { isNbdLocalError, NbdLocalError } from "@nbd/codec";
 * try {
 *   throw new NbdLocalError("unknown-cookie", "reply-cookie", "No request with cookie 7 is in flight");
 * } catch (e) {
 *   if (isNbdLocalError(e)) console.log(e.code, e.rule); // "unknown-cookie" "reply-cookie"
 * }
 * ```
 */
export class NbdLocalError extends Error {
  /** What kind of mistake it is. */
  readonly code: NbdLocalErrorCode;
  /** Stable kebab-case identifier of the local rule, e.g. `"read-chunk-range"` (see {@link LOCAL_ERROR_RULES}). */
  readonly rule: LocalErrorRule;

  /**
   * Creates the error; sessions do this, callers rarely need to.
   *
   * @param code what kind of mistake it is
   * @param rule stable identifier of the local rule
   * @param message a sentence saying what was asked and what the protocol requires
   */
  constructor(code: NbdLocalErrorCode, rule: LocalErrorRule, message: string) {
    super(message);
    this.name = "NbdLocalError";
    this.code = code;
    this.rule = rule;
  }
}

/**
 * Tells whether a value is an {@link NbdLocalError}, by shape rather than by class identity.
 *
 * @example
 * ```ts
 * import { isNbdLocalError, NbdLocalError } from "@nbd/codec";
 * console.log(isNbdLocalError(new NbdLocalError("bad-state", "after-disc", "m"))); // true
 * console.log(isNbdLocalError(new Error("x"))); // false
 * ```
 */
export function isNbdLocalError(value: unknown): value is NbdLocalError {
  if (typeof value !== "object" || value === null) return false;
  const v = value as { name?: unknown; code?: unknown; rule?: unknown };
  return v.name === "NbdLocalError" && typeof v.code === "string" && typeof v.rule === "string";
}

/**
 * Thrown by a session (in strict mode, or always when the stream cannot go on) when the peer breaks the
 * protocol: malformed bytes (the decoder's {@link NbdDecodeError} is kept as `cause`) or a well-formed
 * frame the negotiated state does not allow (a reply to a cookie that is not in flight, a request before
 * the handshake ended). `offset` counts bytes from the start of the peer's stream.
 *
 * @example
 * ```ts
 * import { isNbdRemoteError, NbdRemoteError } from "@nbd/codec";
 * const e = new NbdRemoteError("unexpected-frame", 120, "reply-cookie", "Reply to cookie 9, which is not in flight");
 * console.log(isNbdRemoteError(e), e.offset); // true 120
 * ```
 */
export class NbdRemoteError extends Error {
  /** What kind of violation it is (the decoders' codes). */
  readonly code: NbdDecodeErrorCode;
  /** Byte offset in the peer's stream, counted from its first byte. */
  readonly offset: number;
  /** Stable identifier of the rule broken. */
  readonly rule: string;

  /**
   * Creates the error; sessions do this, callers rarely need to.
   *
   * @param code what kind of violation it is
   * @param offset byte offset in the peer's stream
   * @param rule stable identifier of the rule broken
   * @param message a sentence saying what was found and what the spec requires
   * @param options `cause`: the decoder error behind it, if any
   */
  constructor(
    code: NbdDecodeErrorCode,
    offset: number,
    rule: string,
    message: string,
    options?: { readonly cause?: unknown },
  ) {
    super(message, options);
    this.name = "NbdRemoteError";
    this.code = code;
    this.offset = offset;
    this.rule = rule;
  }
}

/**
 * Tells whether a value is an {@link NbdRemoteError}, by shape rather than by class identity.
 *
 * @example
 * ```ts
 * import { isNbdRemoteError } from "@nbd/codec";
 * console.log(isNbdRemoteError(new Error("x"))); // false
 * ```
 */
export function isNbdRemoteError(value: unknown): value is NbdRemoteError {
  if (typeof value !== "object" || value === null) return false;
  const v = value as { name?: unknown; code?: unknown; offset?: unknown; rule?: unknown };
  return v.name === "NbdRemoteError" && typeof v.code === "string" && typeof v.offset === "number" &&
    typeof v.rule === "string";
}

/**
 * Limits and strictness every session takes. Limits are checked before anything is buffered.
 *
 * @example
 * ```ts
 * import type { SessionLimits } from "@nbd/codec";
 * const limits: SessionLimits = { strict: true, maxPayloadLength: 32 << 20 };
 * console.log(limits.maxPayloadLength); // 33554432
 * ```
 */
export interface SessionLimits {
  /**
   * `true` throws an {@link NbdRemoteError} at the first violation by the peer; `false` (the default)
   * reports what can be survived as findings and goes on, as real peers expect.
   */
  readonly strict?: boolean;
  /** Longest string accepted from the peer. Default and spec maximum: 4096. */
  readonly maxStringLength?: number;
  /** Longest payload a length field from the peer may announce. Default 64 MiB. */
  readonly maxPayloadLength?: number;
  /** Most bytes held while waiting for a frame to complete. Default: `maxPayloadLength` + 64 KiB. */
  readonly maxBufferedBytes?: number;
}

/**
 * {@link SessionLimits} with every default filled in.
 *
 * @example
 * ```ts
 * import { resolveSessionLimits } from "@nbd/codec";
 * console.log(resolveSessionLimits({}).maxStringLength); // 4096
 * ```
 */
export interface ResolvedSessionLimits {
  /** See {@link SessionLimits.strict}. */
  readonly strict: boolean;
  /** See {@link SessionLimits.maxStringLength}. */
  readonly maxStringLength: number;
  /** See {@link SessionLimits.maxPayloadLength}. */
  readonly maxPayloadLength: number;
  /** See {@link SessionLimits.maxBufferedBytes}. */
  readonly maxBufferedBytes: number;
}

/**
 * Fills in the defaults of {@link SessionLimits}, refusing limits that are not non-negative integers.
 *
 * @example
 * ```ts
 * import { resolveSessionLimits } from "@nbd/codec";
 * const l = resolveSessionLimits({ maxPayloadLength: 1 << 20 });
 * console.log(l.strict, l.maxBufferedBytes); // false 1114112
 * ```
 */
export function resolveSessionLimits(limits: SessionLimits | undefined): ResolvedSessionLimits {
  const maxStringLength = limitValue(limits?.maxStringLength, MAX_STRING_LENGTH, "maxStringLength");
  const maxPayloadLength = limitValue(
    limits?.maxPayloadLength,
    DEFAULT_MAX_PAYLOAD_LENGTH,
    "maxPayloadLength",
  );
  const maxBufferedBytes = limitValue(limits?.maxBufferedBytes, maxPayloadLength + 65536, "maxBufferedBytes");
  return { strict: limits?.strict ?? false, maxStringLength, maxPayloadLength, maxBufferedBytes };
}

function limitValue(v: number | undefined, fallback: number, what: string): number {
  if (v === undefined) return fallback;
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new NbdLocalError(
      "bad-argument",
      "limit-value",
      `${what} must be a non-negative safe integer, got ${v}`,
    );
  }
  return v;
}

const U64_LIMIT = 0xffff_ffff_ffff_ffffn;

/**
 * A 64-bit argument given as a safe-integer `number` or a `bigint`, checked and returned as a `bigint`.
 * Throws an {@link NbdLocalError} `bad-argument` for a negative value, a `number` that is not a safe
 * integer (it may already have been rounded), or a value above 2^64-1.
 *
 * @example
 * ```ts
 * import { toU64 } from "@nbd/codec";
 * console.log(toU64(4096, "offset"), toU64(2n ** 63n, "offset")); // 4096n 9223372036854775808n
 * ```
 */
export function toU64(value: number | bigint, what: string): bigint {
  if (typeof value === "bigint") {
    if (value < 0n || value > U64_LIMIT) {
      throw new NbdLocalError("bad-argument", "u64-range", `${what} must be in 0..2^64-1, got ${value}`);
    }
    return value;
  }
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new NbdLocalError(
      "bad-argument",
      "u64-number",
      `${what} must be a non-negative safe integer or a bigint, got ${String(value)}`,
    );
  }
  return BigInt(value);
}

/**
 * A 32-bit argument (a length, a flags word, an error value) checked to be an integer in 0..2^32-1.
 *
 * @example
 * ```ts
 * import { toU32 } from "@nbd/codec";
 * console.log(toU32(4096, "length")); // 4096
 * ```
 */
export function toU32(value: number, what: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new NbdLocalError(
      "bad-argument",
      "u32-range",
      `${what} must be an integer in 0..2^32-1, got ${value}`,
    );
  }
  return value;
}

/**
 * The result and option types that every decoder shares.
 *
 * @module
 */
import type { Finding } from "./errors.ts";

/**
 * What a decoder returns. Too few bytes is not an error: `done` is `false` and `needed` says how many more
 * bytes (at least) the decoder must see before it can go on. Otherwise `frame` is the decoded frame,
 * `byteLength` the number of bytes it occupies (payload included), and `findings` the spec violations met
 * in lenient mode (always empty in strict mode, which throws instead).
 *
 * @example
 * ```ts
 * import { decodeClientFlags } from "@nbd/codec";
 * const r = decodeClientFlags(new Uint8Array([0, 0]));
 * console.log(r.done ? r.frame : `need ${r.needed} more`); // "need 2 more"
 * ```
 */
export type Decoded<T> =
  | {
    readonly done: true;
    readonly frame: T;
    readonly byteLength: number;
    readonly findings: readonly Finding[];
  }
  | { readonly done: false; readonly needed: number };

/**
 * Options every decoder takes.
 *
 * @example
 * ```ts
 * import { decodeOptionRequest, type DecodeOptions } from "@nbd/codec";
 * const opts: DecodeOptions = { strict: false, maxPayloadLength: 1 << 20 };
 * const r = decodeOptionRequest(new Uint8Array(4), opts);
 * console.log(r.done); // false
 * ```
 */
export interface DecodeOptions {
  /** Where the frame starts in the input. Default 0. Offsets in errors and findings count from index 0. */
  readonly offset?: number;
  /**
   * `true` (the default) throws an {@link NbdDecodeError} at the first violation; `false` decodes what can be
   * decoded and reports violations as findings. Violations that leave nothing to decode (a wrong magic) throw
   * in both modes.
   */
  readonly strict?: boolean;
  /** Longest string accepted (export names, messages, context names). Default and spec maximum: 4096. */
  readonly maxStringLength?: number;
  /**
   * Longest data length accepted in a length field (option data, option reply data, write payload, chunk
   * payload), checked before waiting for the bytes. Default {@link DEFAULT_MAX_PAYLOAD_LENGTH} (64 MiB, as
   * nbdkit and libnbd).
   */
  readonly maxPayloadLength?: number;
}

/**
 * Default for {@link DecodeOptions.maxPayloadLength}: 64 MiB, the request size limit of nbdkit and libnbd;
 * enough for 2^20 extended block-status descriptors (16 MiB + 8) and qemu's 32 MiB maximum payload.
 *
 * @example
 * ```ts
 * import { DEFAULT_MAX_PAYLOAD_LENGTH } from "@nbd/codec";
 * console.log(DEFAULT_MAX_PAYLOAD_LENGTH); // 67108864
 * ```
 */
export const DEFAULT_MAX_PAYLOAD_LENGTH: number = 64 * 1024 * 1024;

/**
 * The spec's maximum string length: 4096 bytes of UTF-8.
 *
 * @example
 * ```ts
 * import { MAX_STRING_LENGTH } from "@nbd/codec";
 * console.log(MAX_STRING_LENGTH); // 4096
 * ```
 */
export const MAX_STRING_LENGTH = 4096;

/**
 * Default of `StreamOptions.maxBufferedBytes`: the default maximum payload plus 64 KiB.
 *
 * @example
 * ```ts
 * import { DEFAULT_MAX_BUFFERED_BYTES } from "@nbd/codec";
 * console.log(DEFAULT_MAX_BUFFERED_BYTES); // 67174400
 * ```
 */
export const DEFAULT_MAX_BUFFERED_BYTES: number = DEFAULT_MAX_PAYLOAD_LENGTH + 65536;

/**
 * A frame as the encoders take it: like `T`, but every 64-bit field (a `bigint` in decoded frames) may also
 * be given as a `number`, when it is a safe integer (0..2^53-1). A number beyond that throws `RangeError`
 * (it may already have been rounded): give a `bigint`. Decoders always return `bigint`. Block-status
 * descriptors are taken as they are (`createBlockStatusDescriptors` already accepts numbers).
 *
 * @example
 * ```ts
 * import { encodeRequest, type EncoderInput, type Request } from "@nbd/codec";
 * const read: EncoderInput<Request> = {
 *   type: "request", extended: false, flags: 0, command: 0, cookie: 1, offset: 4096, length: 512,
 * };
 * console.log(encodeRequest(read).length); // 28
 * ```
 */
export type EncoderInput<T> = T extends bigint ? bigint | number
  : T extends Uint8Array | ((...args: never[]) => unknown) | { readonly lengthAt: unknown } ? T
  : T extends readonly (infer U)[] ? readonly EncoderInput<U>[]
  : T extends object ? { [K in keyof T]: EncoderInput<T[K]> }
  : T;

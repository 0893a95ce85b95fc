// Private: the request frame types, below both request.ts (the decoders and encoders, which re-export them)
// and _request_plain.ts (the frame builder shared with the stream decoders), so that every import runs
// downward.

/**
 * The payload of `NBD_CMD_BLOCK_STATUS` in its payload form (extended headers, `NBD_CMD_FLAG_PAYLOAD_LEN`,
 * server advertised `NBD_FLAG_BLOCK_STATUS_PAYLOAD`): the effect length, then the metadata context ids the
 * server should report on. On the wire: u64 effect length, then n u32 ids (8 + 4n bytes, n >= 1).
 *
 * @example
 * ```ts
 * import type { BlockStatusPayload } from "@nbd/codec";
 * const p: BlockStatusPayload = { effectLength: 65536n, contextIds: [1] };
 * console.log(p.contextIds.length); // 1
 * ```
 */
export interface BlockStatusPayload {
  /** The length of the export range the request is about (a hint, as the header length is otherwise). */
  readonly effectLength: bigint;
  /** Metadata context ids to report on (u32 each). */
  readonly contextIds: readonly number[];
}

/**
 * A transmission request, compact or extended.
 *
 * `length` is the header's length field as sent: the payload length for WRITE (and for any extended
 * request with `NBD_CMD_FLAG_PAYLOAD_LEN`), the effect length otherwise. Payload bytes are a view of the
 * decoder's input, never a copy.
 *
 * @example
 * ```ts
 * import { Command, type Request } from "@nbd/codec";
 * const read: Request = {
 *   type: "request", extended: false, flags: 0, command: Command.READ,
 *   cookie: 1n, offset: 0n, length: 4096n,
 * };
 * console.log(read.length); // 4096n
 * ```
 */
export interface Request {
  /** Frame tag. */
  readonly type: "request";
  /** `true` for the 32-byte extended header (magic `0x21e41c71`), `false` for the 28-byte compact one. */
  readonly extended: boolean;
  /** Command flags (`CommandFlag`, 16 bits). */
  readonly flags: number;
  /** Command type (`Command`, 16 bits); unknown values are kept. */
  readonly command: number;
  /** Opaque 64-bit cookie, echoed in the replies. */
  readonly cookie: bigint;
  /** Export offset (for RESIZE: the requested new size). */
  readonly offset: bigint;
  /** The header's length field (u32 compact, u64 extended). */
  readonly length: bigint;
  /**
   * Payload bytes that follow the header: the data of a WRITE, or a payload that is not decoded further
   * (an unknown command's payload, or a malformed block-status payload in lenient mode).
   */
  readonly data?: Uint8Array;
  /** The decoded block-status payload form. */
  readonly blockStatus?: BlockStatusPayload;
}

// Private: the types of the stream decoders' state and options, below both stream.ts (which exports them)
// and the machinery in _stream_impl.ts, so that every import runs downward.
/**
 * Where a direction of the connection is.
 *
 * - `start`: nothing decoded yet (the server's greeting; the client's flags, or a request in oldstyle).
 * - `options`: option haggling.
 * - `transmission`: requests and replies.
 * - `tls`: STARTTLS succeeded: the rest of the stream is TLS, opaque to us.
 * - `closed`: after NBD_CMD_DISC or NBD_OPT_ABORT, or after bytes that could not be decoded.
 *
 * @example
 * ```ts
 * import type { StreamPhase } from "@nbd/codec";
 * const p: StreamPhase = "transmission";
 * console.log(p);
 * ```
 */
export type StreamPhase = "start" | "options" | "transmission" | "tls" | "closed";

/**
 * What was negotiated, as far as the decoders know. Give some of it in {@link StreamOptions.state} to
 * decode a stream that starts mid-connection; the rest is learned from the traffic.
 *
 * @example
 * ```ts
 * import type { NegotiatedState } from "@nbd/codec";
 * const s: Partial<NegotiatedState> = { phase: "transmission", extendedHeaders: true };
 * console.log(s.extendedHeaders); // true
 * ```
 */
export interface NegotiatedState {
  /** Where the direction is (each decoder has its own). */
  readonly phase: StreamPhase;
  /** `oldstyle`, `newstyle`, or `unknown` until the greeting or the client's first bytes are seen. */
  readonly style: "unknown" | "oldstyle" | "newstyle";
  /** The server's handshake flags (newstyle). */
  readonly handshakeFlags: number | undefined;
  /** The client's flags (newstyle). */
  readonly clientFlags: number | undefined;
  /** Structured replies were negotiated. */
  readonly structuredReplies: boolean;
  /** Extended headers were negotiated. */
  readonly extendedHeaders: boolean;
  /** Metadata context ids and names from the last successful NBD_OPT_SET_META_CONTEXT. */
  readonly contexts: ReadonlyMap<number, string>;
  /** Export size, from the oldstyle greeting, the EXPORT_NAME reply or NBD_INFO_EXPORT. */
  readonly exportSize: bigint | undefined;
  /**
   * Transmission flags, from the same places. Once known (or given in `state`), the client's requests are
   * checked against them: a command or command flag the server did not advertise is a finding (rules
   * `command-unadvertised`, `command-flag-unadvertised`, `block-status-payload-unadvertised`).
   */
  readonly transmissionFlags: number | undefined;
}

/**
 * Options of the stream and conversation decoders.
 *
 * @example
 * ```ts
 * import { ServerStreamDecoder, type StreamOptions } from "@nbd/codec";
 * const opts: StreamOptions = { payloadViews: true, maxPayloadLength: 32 << 20 };
 * console.log(new ServerStreamDecoder(opts).state.phase); // "start"
 * ```
 */
export interface StreamOptions {
  /** `false` (default) reports violations as findings; `true` throws the first as an `NbdDecodeError`. */
  readonly strict?: boolean;
  /** Longest string accepted. Default 4096. */
  readonly maxStringLength?: number;
  /** Longest payload a length field may announce. Default 64 MiB. */
  readonly maxPayloadLength?: number;
  /**
   * Most bytes a decoder holds while waiting for a frame to complete (or, in a conversation, for the other
   * direction). A frame announcing more is refused with `limit-exceeded` before anything is buffered. In a
   * conversation, server bytes beyond it that wait for client bytes to match them are decoded without the
   * client side (a `buffer-limit-one-sided` finding on the first such event; strict mode throws it).
   * In a conversation, the client's requests and options waiting for their replies are bounded by it too,
   * apart from the bytes: each is charged 256 bytes and its payload (a WRITE's data, an option's bytes).
   * One that would take the charges past the limit first drops the oldest held (options first), and its
   * event carries an `outstanding-limit` finding (strict mode throws it); a later reply to a dropped request
   * matches no request (`reply-unknown-cookie`), one to a dropped option goes to the next option held. Which
   * are dropped depends on the order of the two sides' frames, not on the split: `decodeConversation` places
   * each request just before the reply that needs it, so it drops only what the server leaves unanswered
   * beyond the limit. A lone `ClientStreamDecoder` holds none (it has no replies to match).
   * Default `DEFAULT_MAX_BUFFERED_BYTES` (64 MiB + 64 KiB).
   */
  readonly maxBufferedBytes?: number;
  /**
   * `true`: a data payload (WRITE data, simple READ reply data, OFFSET_DATA data) that spans several input
   * chunks is returned as a list of views of those chunks (`StreamFrame.payload`) instead of being copied
   * into one array. Default `false`. Payloads inside one chunk are always views, never copies.
   */
  readonly payloadViews?: boolean;
  /**
   * What is already known about the connection (to decode from the middle of a stream). The export's
   * transmission flags are checked against what the option haggling negotiated (rules
   * `transmission-df-unnegotiated`, `transmission-block-status-payload-unnegotiated`) only by a decoder that
   * saw the server's greeting: one started later cannot know what was negotiated before it.
   */
  readonly state?: Partial<NegotiatedState>;
}

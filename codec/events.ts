/**
 * The events that the stream and conversation decoders produce, shared with the formatters.
 *
 * @module
 */
import type { Finding } from "./errors.ts";
import type { ClientFlags, ExportNameReply, Greeting } from "./handshake.ts";
import type { OptionRequest } from "./option.ts";
import type { OptionReplyFrame } from "./option_reply.ts";
import type { Request } from "./request.ts";
import type { ReplyChunk, SimpleReply } from "./reply.ts";

/**
 * Which way a frame travels: client to server or server to client.
 *
 * @example
 * ```ts
 * import type { Direction } from "@nbd/codec";
 * const d: Direction = "c2s";
 * console.log(d);
 * ```
 */
export type Direction = "c2s" | "s2c";

/**
 * Any frame of the protocol; its `type` is the frame kind.
 *
 * @example
 * ```ts
 * import type { Frame } from "@nbd/codec";
 * const f: Frame = { type: "client-flags", flags: 3 };
 * console.log(f.type); // "client-flags"
 * ```
 */
export type Frame =
  | Greeting
  | ClientFlags
  | OptionRequest
  | OptionReplyFrame
  | ExportNameReply
  | Request
  | SimpleReply
  | ReplyChunk;

/**
 * The kind of a frame, as the dissector's JSON names it.
 *
 * @example
 * ```ts
 * import type { FrameKind } from "@nbd/codec";
 * const k: FrameKind = "reply-chunk";
 * console.log(k);
 * ```
 */
export type FrameKind = Frame["type"];

/**
 * One frame found in a byte stream.
 *
 * @example
 * ```ts
 * import type { StreamFrame } from "@nbd/codec";
 * const e: StreamFrame = {
 *   event: "frame", direction: "c2s", frameOffset: 0, frameLength: 4,
 *   frame: { type: "client-flags", flags: 1 }, findings: [],
 * };
 * console.log(e.frame.type); // "client-flags"
 * ```
 */
export interface StreamFrame {
  /** Event tag. */
  readonly event: "frame";
  /** Which direction's byte stream the frame is in. */
  readonly direction: Direction;
  /** Offset of the frame's first byte in that direction's byte stream. */
  readonly frameOffset: number;
  /** Length of the whole frame, payload included (a simple READ reply's data, a chunk's payload). */
  readonly frameLength: number;
  /** The decoded frame. */
  readonly frame: Frame;
  /**
   * With `payloadViews: true`, a data payload (write data, simple-reply read data, OFFSET_DATA data) that
   * spans several input chunks is given here as views of those chunks, in order, and the frame's own `data`
   * is empty. Absent when the frame's `data` holds the payload.
   */
  readonly payload?: readonly Uint8Array[];
  /** Spec violations of this frame (lenient mode). */
  readonly findings: readonly Finding[];
}

/**
 * Something in a byte stream that is not a frame: the start of TLS (everything after is opaque), bytes
 * that could not be decoded (the rest of that direction is skipped), or the end of the stream inside a
 * frame.
 *
 * @example
 * ```ts
 * import type { StreamNotice } from "@nbd/codec";
 * const n: StreamNotice = { event: "notice", notice: "tls", direction: "c2s", streamOffset: 120, length: 0, findings: [] };
 * console.log(n.notice); // "tls"
 * ```
 */
export interface StreamNotice {
  /** Event tag. */
  readonly event: "notice";
  /** `tls`: TLS starts here; `undecodable`: bytes that are not NBD; `truncated`: the stream ended mid-frame. */
  readonly notice: "tls" | "undecodable" | "truncated";
  /** Which direction. */
  readonly direction: Direction;
  /** Offset in that direction's byte stream. */
  readonly streamOffset: number;
  /**
   * Bytes covered: for `truncated`, the bytes of the incomplete frame that did arrive; for `undecodable`
   * after a capture gap, the bytes of the frame the gap cut. For `tls` and other `undecodable` notices, 0:
   * the notice marks where the opaque part starts (everything after it in that direction is skipped), and
   * how much had been buffered there would depend on how the bytes were split.
   */
  readonly length: number;
  /** What went wrong, when anything did. */
  readonly findings: readonly Finding[];
}

/**
 * What the per-direction stream decoders produce.
 *
 * @example
 * ```ts
 * import type { StreamEvent } from "@nbd/codec";
 * function count(events: StreamEvent[]): number {
 *   return events.filter((e) => e.event === "frame").length;
 * }
 * console.log(count([]));
 * ```
 */
export type StreamEvent = StreamFrame | StreamNotice;

/**
 * A frame in a conversation, with what the conversation decoder learned about it.
 *
 * @example
 * ```ts
 * import type { ConversationFrame } from "@nbd/codec";
 * function describe(f: ConversationFrame): string {
 *   return `${f.connection} ${f.direction} ${f.frame.type}`;
 * }
 * console.log(typeof describe);
 * ```
 */
export interface ConversationFrame extends StreamFrame {
  /** The connection's number (0-based, in order of first packet; 0 for a single conversation). */
  readonly connection: number;
  /** For option replies: the option request being answered. */
  readonly option?: OptionRequest;
  /** For replies and chunks: the request being answered (matched by cookie). */
  readonly request?: Request;
  /** For block-status chunks: the name of the metadata context of `contextId`, when it was negotiated. */
  readonly contextName?: string;
}

/**
 * A notice in a conversation.
 *
 * @example
 * ```ts
 * import type { ConversationNotice } from "@nbd/codec";
 * const n: ConversationNotice = {
 *   event: "notice", notice: "truncated", connection: 0, direction: "s2c", streamOffset: 10, length: 3, findings: [],
 * };
 * console.log(n.connection); // 0
 * ```
 */
export interface ConversationNotice extends StreamNotice {
  /** The connection's number. */
  readonly connection: number;
}

/**
 * What the conversation decoder produces, in conversation order.
 *
 * @example
 * ```ts
 * import type { ConversationEvent } from "@nbd/codec";
 * const events: ConversationEvent[] = [];
 * console.log(events.length); // 0
 * ```
 */
export type ConversationEvent = ConversationFrame | ConversationNotice;

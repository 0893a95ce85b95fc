/**
 * The events of trace decoding: conversation events with what the capture says about them (packets,
 * times, endpoints, request links and response times). Types only, shared by the dissector, the formatters
 * and the statistics.
 *
 * @module
 */
import type { ConversationFrame, ConversationNotice } from "./events.ts";
import type { TcpEndpoint } from "./tcp.ts";

/**
 * What a capture adds to a conversation event. Every field is absent for events decoded from raw byte
 * streams (no capture, so no packets and no times): absent, never zero.
 *
 * Packet numbers count from 1 in capture order, as Wireshark's frame numbers do. Timestamps are exact: whole
 * seconds since 1970-01-01 UTC and nanoseconds within the second, as the capture stored them.
 *
 * @example
 * ```ts
 * import type { TraceInfo } from "@nbd/codec/trace";
 * const t: TraceInfo = { packet: 27, firstPacket: 27, seconds: 1765064740, nanoseconds: 341000,
 *   client: { address: "127.0.0.1", port: 41234 }, server: { address: "127.0.0.1", port: 10809 } };
 * console.log(t.packet); // 27
 * ```
 */
export interface TraceInfo {
  /** Number of the packet where the frame (or notice) completes: the packet Wireshark shows it in. */
  readonly packet?: number;
  /** Number of the packet where the frame's first byte is; equal to `packet` for a frame in one packet. */
  readonly firstPacket?: number;
  /** Timestamp of `packet`: seconds since 1970-01-01 UTC. */
  readonly seconds?: number;
  /** Timestamp of `packet`: nanoseconds within the second (0..999999999). */
  readonly nanoseconds?: number;
  /** The connection's client (the side that sends requests). */
  readonly client?: TcpEndpoint;
  /** The connection's server. */
  readonly server?: TcpEndpoint;
  /** Replies and chunks: the number of the packet where their request completed (`nbd.response_to`). */
  readonly requestPacket?: number;
  /** Replies and chunks: the request's timestamp, seconds. */
  readonly requestSeconds?: number;
  /** Replies and chunks: the request's timestamp, nanoseconds. */
  readonly requestNanoseconds?: number;
  /**
   * Replies and chunks: nanoseconds from the request's packet to this one (Wireshark's `nbd.time`); every
   * chunk of a structured reply has it, the last one (NBD_REPLY_FLAG_DONE) closes the request.
   */
  readonly responseNanoseconds?: number;
}

/**
 * A frame of a capture, with its {@link TraceInfo}.
 *
 * @example
 * ```ts
 * import type { TraceFrame } from "@nbd/codec/trace";
 * const slow = (f: TraceFrame): boolean => (f.responseNanoseconds ?? 0) > 1_000_000;
 * console.log(typeof slow);
 * ```
 */
export type TraceFrame = ConversationFrame & TraceInfo;

/**
 * A notice of a capture, with its {@link TraceInfo} (packet and time of the bytes concerned).
 *
 * @example
 * ```ts
 * import type { TraceNotice } from "@nbd/codec/trace";
 * const n: TraceNotice = { event: "notice", notice: "tls", connection: 0, direction: "c2s",
 *   streamOffset: 120, length: 0, findings: [], packet: 9 };
 * console.log(n.packet); // 9
 * ```
 */
export type TraceNotice = ConversationNotice & TraceInfo;

/**
 * What the trace dissector produces, in conversation order.
 *
 * @example
 * ```ts
 * import type { TraceEvent } from "@nbd/codec/trace";
 * const events: TraceEvent[] = [];
 * console.log(events.length); // 0
 * ```
 */
export type TraceEvent = TraceFrame | TraceNotice;

/**
 * The trace fields of the event being handed to the sink, in one reused object (see
 * `CaptureDissectorOptions.detached`): every key is always present, `undefined` where the event has no
 * such field.
 *
 * @example
 * ```ts
 * import { CaptureDissector, type TraceInfoSlot } from "@nbd/codec/trace";
 * const d: CaptureDissector = new CaptureDissector({
 *   event: () => console.log(d.info.packet),
 *   traceFinding: () => {},
 * }, { detached: true });
 * const slot: TraceInfoSlot = d.info;
 * console.log(slot.packet); // undefined
 * ```
 */
export type TraceInfoSlot = { -readonly [K in keyof TraceInfo]-?: TraceInfo[K] | undefined };

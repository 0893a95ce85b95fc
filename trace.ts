/**
 * Trace decoding: from a capture (pcap or pcapng) to NBD events with their packets, times, endpoints,
 * request links and response times, whole ({@link dissectCapture}) or streaming ({@link CaptureDissector});
 * the pieces below it (capture readers, link layers, IPv4/IPv6 and TCP reassembly per connection); and
 * what `nbd-codec dissect` and `stats` build on it: the filter language and the per-connection statistics.
 * Pure: no I/O.
 *
 * @example Every READ slower than 1 ms
 * ```ts
 * import { dissectCapture } from "@nbd/codec/trace";
 * const capture = new Uint8Array(0); // the bytes of a .pcap or .pcapng file
 * if (capture.length > 0) {
 *   for (const e of dissectCapture(capture).events) {
 *     if (e.event === "frame" && e.request?.command === 0 && (e.responseNanoseconds ?? 0) > 1_000_000) {
 *       console.log(`packet ${e.packet}: READ of packet ${e.requestPacket} took ${e.responseNanoseconds} ns`);
 *     }
 *   }
 * }
 * ```
 *
 * @module
 */
export * from "./codec/capture.ts";
export * from "./codec/tcp.ts";
export * from "./codec/trace_event.ts";
export * from "./codec/dissector.ts";
export * from "./codec/trace_filter.ts";
export * from "./codec/trace_stats.ts";
export { formatEndpoint, formatEventSummary, formatNanoseconds, type TextOptions } from "./codec/format.ts";

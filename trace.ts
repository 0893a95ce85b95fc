/**
 * Capture files for trace decoding: pcap and pcapng readers over `Uint8Array`, link layers, IPv4/IPv6 and
 * TCP reassembly per connection. Pure: no I/O.
 *
 * @module
 */
export * from "./codec/capture.ts";
export * from "./codec/tcp.ts";

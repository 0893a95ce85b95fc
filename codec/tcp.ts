/**
 * From captured packets to TCP byte streams: link layers (Ethernet with VLAN tags, BSD loopback, Linux
 * cooked v1/v2, raw IP), IPv4 and IPv6 (extension headers skipped), TCP headers, and reassembly of each
 * connection's two directions into ordered bytes, with gaps and inconsistent retransmissions reported.
 *
 * @module
 */
import { ViewCache } from "./_bytes.ts";
import { type CapturePacket, LinkType, readCapture, type TraceFinding } from "./capture.ts";

/**
 * Default for {@link TcpReassemblerOptions.maxOutOfOrderBytes}: 16 MiB of out-of-order data per direction.
 *
 * @example
 * ```ts
 * import { DEFAULT_MAX_OUT_OF_ORDER_BYTES } from "@nbd/codec/trace";
 * console.log(DEFAULT_MAX_OUT_OF_ORDER_BYTES); // 16777216
 * ```
 */
export const DEFAULT_MAX_OUT_OF_ORDER_BYTES: number = 16 * 1024 * 1024;

/**
 * Default for {@link TcpReassemblerOptions.retransmitCheckBytes}: the last 64 KiB delivered per direction
 * are kept (as views) to compare retransmissions against.
 *
 * @example
 * ```ts
 * import { DEFAULT_RETRANSMIT_CHECK_BYTES } from "@nbd/codec/trace";
 * console.log(DEFAULT_RETRANSMIT_CHECK_BYTES); // 65536
 * ```
 */
export const DEFAULT_RETRANSMIT_CHECK_BYTES: number = 64 * 1024;

/** With `recentAsViews`, delivered segments of up to this many bytes are copied into the ring, not kept. */
const COPIED_SEGMENT_MAX = 512;

/**
 * TCP header flag bits.
 *
 * @example
 * ```ts
 * import { TcpFlag } from "@nbd/codec/trace";
 * console.log(TcpFlag.SYN | TcpFlag.ACK); // 18
 * ```
 */
export const TcpFlag = {
  FIN: 0x01,
  SYN: 0x02,
  RST: 0x04,
  PSH: 0x08,
  ACK: 0x10,
  URG: 0x20,
  ECE: 0x40,
  CWR: 0x80,
} as const;

/**
 * Which way bytes flow in a connection: client to server, or server to client.
 *
 * @example
 * ```ts
 * import type { Direction } from "@nbd/codec/trace";
 * const d: Direction = "c2s";
 * console.log(d); // "c2s"
 * ```
 */
export type Direction = "c2s" | "s2c";

/**
 * A TCP segment found in a packet. Addresses are views of the packet (4 or 16 bytes).
 *
 * @example
 * ```ts
 * import { decodeTcpPacket, LinkType } from "@nbd/codec/trace";
 * const hex = "4500002800010000400600007f0000017f000001" + // IPv4, TCP, 127.0.0.1 -> 127.0.0.1
 *   "c00027e6000003e8000000005002ffff00000000"; // 49152 -> 10214, SYN
 * const r = decodeTcpPacket(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)), LinkType.RAW);
 * if (r.type === "tcp") console.log(r.sourcePort, r.destinationPort, r.seq, r.flags); // 49152 10214 1000 2
 * ```
 */
export interface TcpSegment {
  /** Result tag. */
  readonly type: "tcp";
  /** IP version. */
  readonly ipVersion: 4 | 6;
  /** Source address bytes. */
  readonly sourceAddress: Uint8Array;
  /** Destination address bytes. */
  readonly destinationAddress: Uint8Array;
  /** Source port. */
  readonly sourcePort: number;
  /** Destination port. */
  readonly destinationPort: number;
  /** Sequence number. */
  readonly seq: number;
  /** Acknowledgment number. */
  readonly ack: number;
  /** Flag bits ({@link TcpFlag}). */
  readonly flags: number;
  /** The captured payload: a view of the packet. */
  readonly payload: Uint8Array;
  /** The payload length the IP header declares; more than `payload.length` when the capture cut it. */
  readonly payloadLength: number;
  /** Index of the payload's first byte in the packet data. */
  readonly payloadStart: number;
}

/**
 * A packet that carries no TCP segment the reassembler can use, with the reason, and a finding when the
 * packet is malformed, fragmented or of an unsupported link type.
 *
 * @example
 * ```ts
 * import { decodeTcpPacket } from "@nbd/codec/trace";
 * const r = decodeTcpPacket(new Uint8Array(20), 147);
 * if (r.type === "ignored") console.log(r.reason, r.finding?.rule); // "link-type" "capture-link-type"
 * ```
 */
export interface IgnoredPacket {
  /** Result tag. */
  readonly type: "ignored";
  /** Why: `"link-type"`, `"not-ip"`, `"not-tcp"`, `"fragment"`, `"malformed"` or `"truncated"`. */
  readonly reason: "link-type" | "not-ip" | "not-tcp" | "fragment" | "malformed" | "truncated";
  /** A finding, for reasons other than `"not-ip"` and `"not-tcp"`; offsets count from `data[0]`. */
  readonly finding?: TraceFinding;
}

/** The largest window TCP can advertise (window scale 14, RFC 7323 section 2.3): data beyond it is bogus. */
const MAX_WINDOW = 2 ** 30;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;

function u16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}

function u32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}

/**
 * The DataView over the packet being parsed (cached per buffer: the packets of a capture chunk share one).
 * Multi-byte fields are read through it once their bytes are known to be there: one call per field where
 * unoptimised code would make several element loads and arithmetic calls.
 */
const views = new ViewCache();

const NOT_IP: IgnoredPacket = Object.freeze({ type: "ignored", reason: "not-ip" });
const NOT_TCP: IgnoredPacket = Object.freeze({ type: "ignored", reason: "not-tcp" });

function ignored(
  reason: IgnoredPacket["reason"],
  code: TraceFinding["code"],
  offset: number,
  rule: string,
  message: string,
): IgnoredPacket {
  return { type: "ignored", reason, finding: { code, offset, rule, message } };
}

function cut(offset: number, what: string, need: number, have: number): IgnoredPacket {
  return ignored(
    "truncated",
    "truncated",
    offset,
    "capture-snaplen",
    `The capture cut the packet inside its ${what} (${have} of ${need} bytes captured)`,
  );
}

/** Offset of the IP header and its version (4, 6, or 0 when the link layer carries something else). */
function linkLayer(b: Uint8Array, linkType: number): number | IgnoredPacket {
  const n = b.length;
  switch (linkType) {
    case LinkType.ETHERNET: {
      let o = 12;
      if (n < 14) return cut(0, "Ethernet header", 14, n);
      let type = u16(b, o);
      // 802.1Q, 802.1ad and the older QinQ value: each tag adds 4 bytes before the real EtherType.
      while (type === 0x8100 || type === 0x88a8 || type === 0x9100) {
        o += 4;
        if (n < o + 2) return cut(0, "VLAN tag", o + 2, n);
        type = u16(b, o);
      }
      return etherType(type, o + 2);
    }
    case LinkType.NULL:
    case LinkType.LOOP: {
      if (n < 4) return cut(0, "loopback header", 4, n);
      // NULL stores the family in the capturing host's byte order, LOOP in network byte order.
      let family = u32(b, 0);
      if (linkType === LinkType.NULL && (family & 0xffff) === 0) {
        family = (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
      }
      // AF_INET is 2 everywhere; AF_INET6 is 24 (NetBSD, OpenBSD), 28 (FreeBSD), 30 (Darwin), 10 (Linux).
      if (family === 2 || family === 24 || family === 28 || family === 30 || family === 10) return 4;
      return NOT_IP;
    }
    case LinkType.LINUX_SLL:
      if (n < 16) return cut(0, "Linux cooked header", 16, n);
      return etherType(u16(b, 14), 16);
    case LinkType.LINUX_SLL2:
      if (n < 20) return cut(0, "Linux cooked v2 header", 20, n);
      return etherType(u16(b, 0), 20);
    case LinkType.RAW:
    case LinkType.IPV4:
    case LinkType.IPV6:
      return 0;
  }
  return ignored(
    "link-type",
    "unknown-type",
    0,
    "capture-link-type",
    `Link-layer type ${linkType} is not supported (supported: 0, 1, 101, 108, 113, 228, 229, 276)`,
  );
}

function etherType(type: number, o: number): number | IgnoredPacket {
  return type === ETHERTYPE_IPV4 || type === ETHERTYPE_IPV6 ? o : NOT_IP;
}

/**
 * Decodes the link layer, IP and TCP headers of one captured packet. Never throws for any bytes: problems
 * come back as an {@link IgnoredPacket} with a finding whose offset counts from `data[0]`.
 *
 * @param data the captured bytes of the packet
 * @param linkType the capture interface's link-layer type ({@link LinkType})
 * @returns the TCP segment, or why the packet carries none
 *
 * @example
 * ```ts
 * import { decodeTcpPacket, LinkType } from "@nbd/codec/trace";
 * const hex = "000000000000" + "000000000000" + "86dd" + // Ethernet
 *   "6000000000140640" + "00".repeat(15) + "01" + "00".repeat(15) + "01" + // IPv6 ::1 -> ::1
 *   "d43127e6000000010000000050100100" + "00000000"; // TCP ACK
 * const r = decodeTcpPacket(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)), LinkType.ETHERNET);
 * console.log(r.type === "tcp" && r.ipVersion); // 6
 * ```
 */
export function decodeTcpPacket(data: Uint8Array, linkType: number): TcpSegment | IgnoredPacket {
  const p = new ParsedTcp();
  const r = parseTcp(data, linkType, p);
  if (r !== undefined) return r;
  const alen = p.ipVersion === 4 ? 4 : 16;
  return {
    type: "tcp",
    ipVersion: p.ipVersion,
    sourceAddress: data.subarray(p.src, p.src + alen),
    destinationAddress: data.subarray(p.dst, p.dst + alen),
    sourcePort: p.sourcePort,
    destinationPort: p.destinationPort,
    seq: p.seq,
    ack: p.ack,
    flags: p.flags,
    payload: data.subarray(p.payloadStart, p.payloadEnd),
    payloadLength: p.payloadLength,
    payloadStart: p.payloadStart,
  };
}

/** The fields of a TCP packet as {@link parseTcp} finds them: one object reused for every packet. */
class ParsedTcp {
  ipVersion: 4 | 6 = 4;
  /** Index of the source address in the packet data (4 bytes for IPv4, 16 for IPv6). */
  src = 0;
  /** Index of the destination address. */
  dst = 0;
  sourcePort = 0;
  destinationPort = 0;
  seq = 0;
  ack = 0;
  flags = 0;
  payloadStart = 0;
  /** End of the captured payload (index in the packet data). */
  payloadEnd = 0;
  /** Declared payload length. */
  payloadLength = 0;
}

/** {@link decodeTcpPacket} without allocating: fills `p`, or returns why the packet carries no segment. */
function parseTcp(data: Uint8Array, linkType: number, p: ParsedTcp): IgnoredPacket | undefined {
  const l = linkLayer(data, linkType);
  if (typeof l !== "number") return l;
  const b = data;
  const n = b.length;
  if (n < l + 1) return cut(l, "IP header", l + 1, n);
  const dv = views.of(b);
  const base = views.base;
  const version = b[l]! >>> 4;
  let proto: number;
  let o: number; // start of the transport header
  let end: number; // end of the IP payload (declared)
  let src: number;
  let dst: number;
  if (version === 4) {
    if (n < l + 20) return cut(l, "IPv4 header", 20, n - l);
    const ihl = (b[l]! & 0x0f) * 4;
    let total = dv.getUint16(base + l + 2);
    if (ihl < 20) {
      return ignored(
        "malformed",
        "bad-length",
        l,
        "ipv4-header-length",
        `IPv4 header length ${ihl} is below 20`,
      );
    }
    // A total length of 0 is what Linux records for TCP segmentation offload: trust the captured length.
    if (total === 0) total = n - l;
    if (total < ihl) {
      return ignored(
        "malformed",
        "bad-length",
        l + 2,
        "ipv4-total-length",
        `IPv4 total length ${total} is below the header length ${ihl}`,
      );
    }
    if (n < l + ihl) return cut(l, "IPv4 header", ihl, n - l);
    const frag = dv.getUint16(base + l + 6);
    if ((frag & 0x3fff) !== 0) {
      return ignored(
        "fragment",
        "unknown-type",
        l + 6,
        "ip-fragment",
        `IPv4 fragment (offset ${(frag & 0x1fff) * 8}, more fragments ${
          (frag >> 13) & 1
        }) is not reassembled`,
      );
    }
    proto = b[l + 9]!;
    src = l + 12;
    dst = l + 16;
    o = l + ihl;
    end = l + total;
  } else if (version === 6) {
    if (n < l + 40) return cut(l, "IPv6 header", 40, n - l);
    const plen = dv.getUint16(base + l + 4);
    // Payload length 0 means a jumbogram (or offload): trust the captured length.
    end = plen === 0 ? n : l + 40 + plen;
    src = l + 8;
    dst = l + 24;
    proto = b[l + 6]!;
    o = l + 40;
    for (;;) {
      if (proto === 0 || proto === 43 || proto === 60 || proto === 135 || proto === 139 || proto === 140) {
        if (n < o + 2) return cut(o, "IPv6 extension header", 2, n - o);
        proto = b[o]!;
        o += (b[o + 1]! + 1) * 8;
      } else if (proto === 51) {
        if (n < o + 2) return cut(o, "IPv6 authentication header", 2, n - o);
        proto = b[o]!;
        o += (b[o + 1]! + 2) * 4;
      } else if (proto === 44) {
        return ignored("fragment", "unknown-type", o, "ip-fragment", "IPv6 fragment is not reassembled");
      } else break;
    }
    if (o > end) {
      return ignored(
        "malformed",
        "bad-length",
        l + 4,
        "ipv6-payload-length",
        `IPv6 extension headers run past the payload length`,
      );
    }
  } else if (linkType === LinkType.RAW || linkType === LinkType.IPV4 || linkType === LinkType.IPV6) {
    return NOT_IP;
  } else {
    return ignored("malformed", "bad-value", l, "ip-version", `IP version ${version}: expected 4 or 6`);
  }
  if (proto !== 6) return NOT_TCP;
  if (n < o + 20) return cut(o, "TCP header", 20, Math.max(0, n - o));
  const hlen = (b[o + 12]! >>> 4) * 4;
  if (hlen < 20 || o + hlen > end) {
    return ignored(
      "malformed",
      "bad-length",
      o + 12,
      "tcp-header-length",
      `TCP data offset ${hlen} is invalid`,
    );
  }
  if (n < o + hlen) return cut(o, "TCP options", hlen, n - o);
  const start = o + hlen;
  p.ipVersion = version as 4 | 6;
  p.src = src;
  p.dst = dst;
  p.sourcePort = dv.getUint16(base + o);
  p.destinationPort = dv.getUint16(base + o + 2);
  p.seq = dv.getUint32(base + o + 4);
  p.ack = dv.getUint32(base + o + 8);
  p.flags = b[o + 13]!;
  p.payloadStart = start;
  // Ethernet pads short frames: the IP length, not the frame length, ends the payload.
  p.payloadEnd = Math.max(start, Math.min(end, n));
  p.payloadLength = end - start;
  return undefined;
}

/**
 * Formats an IPv4 (4-byte) or IPv6 (16-byte) address as text (RFC 5952 for IPv6).
 *
 * @param a the address bytes
 * @returns dotted quad or compressed IPv6 text
 *
 * @example
 * ```ts
 * import { formatAddress } from "@nbd/codec/trace";
 * console.log(formatAddress(new Uint8Array([127, 0, 0, 1]))); // "127.0.0.1"
 * const v6 = new Uint8Array(16);
 * v6[15] = 1;
 * console.log(formatAddress(v6)); // "::1"
 * ```
 */
export function formatAddress(a: Uint8Array): string {
  if (a.length === 4) return `${a[0]}.${a[1]}.${a[2]}.${a[3]}`;
  const g: number[] = [];
  for (let i = 0; i + 1 < a.length; i += 2) g.push(u16(a, i));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < g.length;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < g.length && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  if (best < 0) return hex(g);
  return hex(g.slice(0, best)) + "::" + hex(g.slice(best + bestLen));
}

/**
 * One end of a connection.
 *
 * @example
 * ```ts
 * import type { TcpEndpoint } from "@nbd/codec/trace";
 * const e: TcpEndpoint = { address: "127.0.0.1", port: 10809 };
 * console.log(e.port); // 10809
 * ```
 */
export interface TcpEndpoint {
  /** Address as text. */
  readonly address: string;
  /** Port. */
  readonly port: number;
}

/**
 * A TCP connection, numbered in order of its first packet.
 *
 * @example
 * ```ts
 * import type { TcpConnection } from "@nbd/codec/trace";
 * const c: TcpConnection = { id: 0, ipVersion: 4, client: { address: "127.0.0.1", port: 40000 },
 *   server: { address: "127.0.0.1", port: 10809 }, firstPacket: 0, clientBy: "syn" };
 * console.log(c.server.port); // 10809
 * ```
 */
export interface TcpConnection {
  /** Connection id: 0, 1, 2, ... in order of first packet. */
  readonly id: number;
  /** IP version. */
  readonly ipVersion: 4 | 6;
  /** The client: the SYN sender, else decided by {@link TcpConnection.clientBy}. */
  readonly client: TcpEndpoint;
  /** The server. */
  readonly server: TcpEndpoint;
  /** Index of the connection's first packet. */
  readonly firstPacket: number;
  /**
   * How the client was chosen: `"syn"` (it sent the SYN, or received the SYN-ACK), `"port"` (the other side
   * uses a server port per `isServerPort`), or `"first-sender"` (it sent the first packet seen).
   */
  readonly clientBy: "syn" | "port" | "first-sender";
}

/**
 * What the reassembler reports, in order:
 * - `open`: a new connection (before any of its other events);
 * - `data`: bytes of one direction, contiguous with the previous `data` or `gap` of that direction;
 * - `gap`: bytes that were never captured (snaplen, dropped packets, or over the out-of-order limit);
 *   the stream resumes at `streamOffset + length`;
 * - `close`: a direction ended (`fin`), the connection was reset (`rst`, one event per direction) or the
 *   capture ended ({@link TcpReassembler.end}, `end`);
 * - `finding`: anything else worth knowing (inconsistent retransmissions, fragments, unsupported links).
 *
 * @example
 * ```ts
 * import type { TcpEvent } from "@nbd/codec/trace";
 * const e: TcpEvent = { type: "data", connection: 0, direction: "c2s", streamOffset: 0,
 *   bytes: new Uint8Array([1]), packet: 3, seconds: 0, nanoseconds: 0 };
 * console.log(e.type); // "data"
 * ```
 */
export type TcpEvent =
  | { readonly type: "open"; readonly connection: TcpConnection }
  | {
    readonly type: "data";
    readonly connection: number;
    readonly direction: Direction;
    /** Offset of `bytes[0]` from the start of this direction's stream. */
    readonly streamOffset: number;
    /** The bytes: a view of the packet when possible. */
    readonly bytes: Uint8Array;
    /** Index of the packet that carried the bytes. */
    readonly packet: number;
    /** That packet's timestamp, seconds. */
    readonly seconds: number;
    /** That packet's timestamp, nanoseconds. */
    readonly nanoseconds: number;
  }
  | {
    readonly type: "gap";
    readonly connection: number;
    readonly direction: Direction;
    readonly streamOffset: number;
    readonly length: number;
    readonly finding: TraceFinding;
  }
  | {
    readonly type: "close";
    readonly connection: number;
    readonly direction: Direction;
    readonly reason: "fin" | "rst" | "end";
    /** Stream length of the direction when it closed. */
    readonly streamOffset: number;
  }
  | { readonly type: "finding"; readonly finding: TraceFinding };

/**
 * Options of {@link TcpReassembler}.
 *
 * @example
 * ```ts
 * import { TcpReassembler, type TcpReassemblerOptions } from "@nbd/codec/trace";
 * const options: TcpReassemblerOptions = { isServerPort: (p) => p === 10809, maxOutOfOrderBytes: 1 << 20 };
 * console.log(new TcpReassembler(options).connections.length); // 0
 * ```
 */
export interface TcpReassemblerOptions {
  /** Tells whether a port is a server port, to orient connections whose SYN was not captured. */
  readonly isServerPort?: (port: number) => boolean;
  /**
   * Most bytes of out-of-order data held per direction, waiting for a hole to fill. Beyond it the hole is
   * declared a gap and skipped. Default {@link DEFAULT_MAX_OUT_OF_ORDER_BYTES} (16 MiB). Held data are copies.
   */
  readonly maxOutOfOrderBytes?: number;
  /**
   * Bytes of recently delivered data kept per direction (copied into a ring of this size, so that no packet
   * buffer is kept alive) to check that retransmissions carry the same bytes. 0 disables the check.
   * Default {@link DEFAULT_RETRANSMIT_CHECK_BYTES} (64 KiB).
   */
  readonly retransmitCheckBytes?: number;
  /**
   * Keep the recently delivered bytes (see `retransmitCheckBytes`) as views of the packets' data instead of
   * copying each packet into the ring as it is delivered. The caller then promises to call
   * {@link TcpReassembler.release} with a buffer before it overwrites that buffer (a reader that reuses its
   * read buffers, like `nbd-codec dissect`); the reassembler copies what it still needs at that moment. Saves
   * copying every delivered byte once more. Segments of up to 512 bytes are copied all the same (cheaper
   * than a view). Default `false`.
   */
  readonly recentAsViews?: boolean;
  /**
   * Receives in-order data directly instead of as `data` events: called from inside
   * {@link TcpReassembler.push} with the fields a `data` event would have, for data that no other event of
   * that push comes before. Data that follows another event of the same push (an `open`, a `gap`, a
   * finding) still comes as a `data` event, so that the order of everything is kept. Saves an event
   * object per packet. Default: none (every delivery is a `data` event).
   */
  readonly onData?: (
    connection: number,
    direction: Direction,
    streamOffset: number,
    bytes: Uint8Array,
    packet: CapturePacket,
  ) => void;
}

interface Held {
  off: number;
  /** undefined: known-missing bytes (cut by snaplen). */
  bytes: Uint8Array | undefined;
  length: number;
  packet: CapturePacket;
}

interface Side {
  readonly dir: Direction;
  started: boolean;
  /** Started without a SYN: the first segment seen set `base`, and earlier bytes may still arrive. */
  synless: boolean;
  base: number;
  next: number;
  held: Held[];
  heldBytes: number;
  finAt: number;
  closed: boolean;
  gapStart: number;
  gapLength: number;
  gapPacket: CapturePacket | undefined;
  gapReason: string;
  /** Copy of the last delivered bytes: stream offset x is at ring[x % ring.length]. */
  ring: Uint8Array | undefined;
  /**
   * Stream offset of the oldest recently delivered byte that is still known (in the ring, or in a pending
   * view), -1 when none is.
   */
  ringFrom: number;
  /**
   * `recentAsViews`: delivered data not copied into the ring yet, as views of the packets, in stream order
   * from index `pendingFirst`; `pendingOff[i]` is the stream offset of `pending[i]`. Every known byte of the
   * recent window is either here or in the ring.
   */
  pending: Uint8Array[];
  pendingOff: number[];
  pendingFirst: number;
}

interface Conn {
  readonly info: TcpConnection;
  readonly c2s: Side;
  readonly s2c: Side;
  reset: boolean;
}

interface Route {
  readonly conn: Conn;
  /** true when the packet's source is the client. */
  readonly fromClient: boolean;
}

function side(dir: Direction): Side {
  return {
    dir,
    started: false,
    synless: false,
    base: 0,
    next: 0,
    held: [],
    heldBytes: 0,
    finAt: -1,
    closed: false,
    gapStart: 0,
    gapLength: 0,
    gapPacket: undefined,
    gapReason: "",
    ring: undefined,
    ringFrom: -1,
    pending: [],
    pendingOff: [],
    pendingFirst: 0,
  };
}

/** Entries of the route cache: {@link ROUTE_CACHE_SIZE} slots. */
const ROUTE_CACHE_SIZE = 64;

/** The route cache's hash of an IPv4 4-tuple (an IPv6 one mixes its other address words in). */
function routeHash(s0: number, d0: number, ports: number): number {
  return (s0 ^ imul(d0, 0x9e3779b1) ^ imul(ports, 0x85ebca6b)) >>> 0;
}

// Read from the module's scope rather than as properties (two loads apiece in baseline code): by routeHash,
// and by the in-order path (`#inOrder`), which runs for nearly every packet.
const imul = Math.imul;
const LT_ETHERNET: number = LinkType.ETHERNET;
const LT_LOOP: number = LinkType.LOOP;
const LT_NULL: number = LinkType.NULL;
const LT_RAW: number = LinkType.RAW;
const LT_IPV4: number = LinkType.IPV4;
const SYN_FIN_RST: number = TcpFlag.SYN | TcpFlag.FIN | TcpFlag.RST;

/** The route cache slot of a {@link routeHash}. */
function routeSlot(hash: number): number {
  return (hash ^ (hash >>> 16)) & (ROUTE_CACHE_SIZE - 1);
}

interface CachedRoute {
  readonly v6: boolean;
  readonly s0: number;
  readonly s1: number;
  readonly s2: number;
  readonly s3: number;
  readonly d0: number;
  readonly d1: number;
  readonly d2: number;
  readonly d3: number;
  readonly ports: number;
  readonly route: Route;
}

function addrKey(a: Uint8Array): string {
  if (a.length === 4) return String(u32(a, 0));
  return `${u32(a, 0)}.${u32(a, 4)}.${u32(a, 8)}.${u32(a, 12)}`;
}

/**
 * Reassembles TCP streams from captured packets, one connection per 4-tuple (a new SYN after both sides
 * closed starts a new connection). Push packets in capture order; get events in order. Memory: per
 * direction at most `maxOutOfOrderBytes` of out-of-order copies and `retransmitCheckBytes` of views.
 *
 * In-order data is delivered as views of the packets (no copy); out-of-order data is copied while it
 * waits. Overlapping or retransmitted bytes are trimmed (the first copy seen wins) and compared; a
 * difference is reported as a finding `"tcp-retransmission-mismatch"`. Missing bytes become `gap` events.
 *
 * @example
 * ```ts
 * import { CaptureReader, TcpReassembler, type TcpEvent } from "@nbd/codec/trace";
 * const reader = new CaptureReader();
 * const tcp = new TcpReassembler({ isServerPort: (p) => p === 10809 });
 * const events: TcpEvent[] = [];
 * const onChunk = (chunk: Uint8Array) => {
 *   for (const packet of reader.push(chunk)) events.push(...tcp.push(packet));
 * };
 * const hex = "d4c3b2a1020004000000000000000000ffff000065000000" + // pcap, raw IP
 *   "0100000000000000" + "2b000000" + "2b000000" + // record header
 *   "4500002b00010000400600007f0000017f000001" + // IPv4 127.0.0.1 -> 127.0.0.1
 *   "c0002a39000003e8000000005018ffff00000000" + "4e4244"; // TCP 49152 -> 10809, "NBD"
 * const file = Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16));
 * onChunk(file.subarray(0, 30)); // chunks may split records anywhere
 * onChunk(file.subarray(30));
 * reader.end();
 * events.push(...tcp.end());
 * console.log(events.map((e) => e.type).join()); // "open,data,close,close"
 * console.log(tcp.connections[0]?.clientBy); // "port"
 * ```
 */
export class TcpReassembler {
  /** Connections seen so far, by id. */
  readonly connections: TcpConnection[] = [];
  readonly #routes = new Map<string, Route>();
  readonly #live = new Set<Conn>();
  readonly #isServerPort: ((port: number) => boolean) | undefined;
  readonly #maxHeld: number;
  readonly #recentMax: number;
  readonly #recentAsViews: boolean;
  readonly #onData: TcpReassemblerOptions["onData"];
  readonly #badLinks = new Set<number>();
  #out: TcpEvent[] = [];
  /** The packet being handled, parsed. */
  readonly #parsed = new ParsedTcp();
  /**
   * Recently used routes, found by the packet's addresses and ports without building the string key:
   * direct-mapped by a hash of the 4-tuple, checked field by field, emptied whenever a route changes.
   */
  readonly #cache: (CachedRoute | undefined)[] = new Array(ROUTE_CACHE_SIZE).fill(undefined);

  /**
   * Creates a reassembler.
   *
   * @param options orientation hint and limits
   */
  constructor(options?: TcpReassemblerOptions) {
    this.#isServerPort = options?.isServerPort;
    const maxHeld = options?.maxOutOfOrderBytes ?? DEFAULT_MAX_OUT_OF_ORDER_BYTES;
    const recent = options?.retransmitCheckBytes ?? DEFAULT_RETRANSMIT_CHECK_BYTES;
    if (!Number.isInteger(maxHeld) || maxHeld < 0) {
      throw new RangeError(`Cannot reassemble: maxOutOfOrderBytes ${maxHeld} must be a non-negative integer`);
    }
    if (!Number.isInteger(recent) || recent < 0) {
      throw new RangeError(
        `Cannot reassemble: retransmitCheckBytes ${recent} must be a non-negative integer`,
      );
    }
    this.#maxHeld = maxHeld;
    this.#recentMax = recent;
    this.#recentAsViews = options?.recentAsViews === true;
    this.#onData = options?.onData;
  }

  /**
   * With `recentAsViews`: the caller is about to overwrite `buffer`. The reassembler copies the recently
   * delivered bytes it still keeps as views of `buffer` into its own ring, and drops those views. Without
   * `recentAsViews` there is nothing to do.
   *
   * @example
   * ```ts
   * import { TcpReassembler } from "@nbd/codec/trace";
   * const tcp = new TcpReassembler({ recentAsViews: true });
   * const chunk = new Uint8Array(1 << 20);
   * // ... read a capture into chunk, push its packets ...
   * tcp.release(chunk.buffer); // before reading the next part of the capture into chunk
   * ```
   *
   * @param buffer the buffer about to be overwritten
   */
  release(buffer: ArrayBufferLike): void {
    if (!this.#recentAsViews) return;
    for (const c of this.#live) {
      this.#releaseSide(c.c2s, buffer);
      this.#releaseSide(c.s2c, buffer);
    }
  }

  #releaseSide(s: Side, buffer: ArrayBufferLike): void {
    const views = s.pending;
    const offs = s.pendingOff;
    if (views.length === s.pendingFirst) return;
    // Views before pendingFirst left the window: they are dropped here too.
    let kept = 0;
    for (let i = s.pendingFirst; i < views.length; i++) {
      const v = views[i]!;
      if (v.buffer !== buffer) {
        views[kept] = v;
        offs[kept] = offs[i]!;
        kept++;
        continue;
      }
      // Copy the part of the view that is still in the window into the ring.
      const max = this.#recentMax;
      const from = Math.max(offs[i]!, s.next - max);
      const to = offs[i]! + v.length;
      if (from < to) this.#toRing(s, v.subarray(from - offs[i]!), from);
    }
    views.length = kept;
    offs.length = kept;
    s.pendingFirst = 0;
  }

  /** Copies `src` (stream offsets `start` to `start + src.length`, at most the ring's size) into the ring. */
  #toRing(s: Side, src: Uint8Array, start: number): void {
    const max = this.#recentMax;
    const ring = s.ring ??= new Uint8Array(max);
    const pos = start % max;
    // Most segments fit before the end of the ring: one copy, and no view to allocate for it.
    if (src.length <= max - pos) ring.set(src, pos);
    else {
      const first = max - pos;
      ring.set(src.subarray(0, first), pos);
      ring.set(src.subarray(first), 0);
    }
  }

  /**
   * Takes the next packet (in capture order) and returns the events it caused.
   *
   * @param packet a packet from {@link CaptureReader.push}
   * @returns events, in order
   */
  push(packet: CapturePacket): TcpEvent[] {
    const out: TcpEvent[] = this.#out = [];
    if (this.#inOrder(packet)) return out;
    const seg = this.#parsed;
    const ignored = parseTcp(packet.data, packet.linkType, seg);
    if (ignored !== undefined) {
      const f = ignored.finding;
      if (f !== undefined) {
        if (ignored.reason === "link-type") {
          if (this.#badLinks.has(packet.linkType)) return out;
          this.#badLinks.add(packet.linkType);
        }
        out.push({
          type: "finding",
          finding: { ...f, offset: packet.dataOffset + f.offset, packet: packet.index },
        });
      }
      return out;
    }
    this.#segment(seg, packet);
    return out;
  }

  /**
   * Ends the capture: held out-of-order data is delivered after gap events for the holes, and every
   * direction still open gets a `close` event with reason `"end"`.
   *
   * @returns the final events
   */
  end(): TcpEvent[] {
    const out: TcpEvent[] = this.#out = [];
    for (const c of [...this.#live]) this.#finish(c, "end");
    this.#live.clear();
    return out;
  }

  /**
   * Fast path mirroring the general path parseTcp -> #segment -> #data -> #deliver, for the common case in a
   * few steps: an IPv4 TCP segment (Ethernet without VLAN tags, BSD loopback or raw IP) with data and no
   * SYN, FIN or RST, on a connection the route cache holds, exactly at the next expected byte of a direction
   * that has no out-of-order data or gap pending, captured whole. It is delivered as the general path would
   * deliver it; anything else returns false, for the general path. Differential test: "in-order segments
   * take a short path that gives the events the general path gives" (test/tcp.test.ts). It pays: the same
   * packets reassemble in about half the time of the general path (bench/RESULTS.md, "TCP in-order path").
   */
  #inOrder(packet: CapturePacket): boolean {
    const b = packet.data;
    const n = b.length;
    let l: number;
    // Link types and flags as module constants: `LinkType.X` is two loads apiece in baseline code.
    switch (packet.linkType) {
      case LT_ETHERNET:
        if (n < 14 || b[12] !== 0x08 || b[13] !== 0x00) return false;
        l = 14;
        break;
      case LT_LOOP:
        // AF_INET (2) in network byte order.
        if (n < 4 || b[0] !== 0 || b[1] !== 0 || b[2] !== 0 || b[3] !== 2) return false;
        l = 4;
        break;
      case LT_NULL:
        // AF_INET in the capturing host's byte order, either one (linkLayer reads it so).
        if (n < 4 || b[1] !== 0 || b[2] !== 0 || (b[0]! | b[3]!) !== 2 || b[0] === b[3]) return false;
        l = 4;
        break;
      case LT_RAW:
      case LT_IPV4:
        l = 0;
        break;
      default:
        return false;
    }
    if (n < l + 20) return false;
    const vihl = b[l]!;
    if (vihl >>> 4 !== 4 || b[l + 9] !== 6) return false;
    const ihl = (vihl & 0x0f) * 4;
    const dv = views.of(b);
    const ip = views.base + l;
    let total = dv.getUint16(ip + 2);
    if (total === 0) total = n - l;
    // Not a fragment; the header lengths hold and the datagram is captured whole.
    if (ihl < 20 || (dv.getUint16(ip + 6) & 0x3fff) !== 0 || l + total > n || total < ihl + 20) return false;
    const o = l + ihl;
    const hlen = (b[o + 12]! >>> 4) * 4;
    const flags = b[o + 13]!;
    const start = o + hlen;
    const end = l + total;
    if (hlen < 20 || start >= end || (flags & SYN_FIN_RST) !== 0) return false;
    const t = views.base + o;
    const ports = dv.getUint32(t);
    const s0 = dv.getUint32(ip + 12);
    const d0 = dv.getUint32(ip + 16);
    const hit = this.#cache[routeSlot(routeHash(s0, d0, ports))];
    if (hit === undefined || hit.ports !== ports || hit.s0 !== s0 || hit.d0 !== d0 || hit.v6) return false;
    const route = hit.route;
    const c = route.conn;
    const s = route.fromClient ? c.c2s : c.s2c;
    if (c.reset || !s.started || s.closed || s.held.length > 0 || s.gapLength > 0 || s.finAt >= 0) {
      return false;
    }
    // In order: the segment's sequence number is the next expected byte's.
    if (dv.getUint32(t + 4) !== ((s.base + s.next) >>> 0)) return false;
    this.#deliver(c, s, b.subarray(start, end), packet);
    return true;
  }

  #segment(seg: ParsedTcp, packet: CapturePacket): void {
    const b = packet.data;
    const v6 = seg.ipVersion === 6;
    // parseTcp validated the addresses: read through its DataView.
    const dv = views.of(b);
    const src = views.base + seg.src;
    const dst = views.base + seg.dst;
    const s0 = dv.getUint32(src);
    const d0 = dv.getUint32(dst);
    const ports = ((seg.sourcePort << 16) | seg.destinationPort) >>> 0;
    let hash = routeHash(s0, d0, ports);
    let s1 = 0, s2 = 0, s3 = 0, d1 = 0, d2 = 0, d3 = 0;
    if (v6) {
      s1 = dv.getUint32(src + 4);
      s2 = dv.getUint32(src + 8);
      s3 = dv.getUint32(src + 12);
      d1 = dv.getUint32(dst + 4);
      d2 = dv.getUint32(dst + 8);
      d3 = dv.getUint32(dst + 12);
      hash = (hash ^ s1 ^ s2 ^ s3 ^ Math.imul(d1 ^ d2 ^ d3, 0x27d4eb2f)) >>> 0;
    }
    const slot = routeSlot(hash);
    const hit = this.#cache[slot];
    let route: Route | undefined;
    if (
      hit !== undefined && hit.ports === ports && hit.s0 === s0 && hit.d0 === d0 && hit.v6 === v6 &&
      (!v6 || (hit.s1 === s1 && hit.s2 === s2 && hit.s3 === s3 && hit.d1 === d1 && hit.d2 === d2 &&
        hit.d3 === d3))
    ) {
      route = hit.route;
    }
    let sk = "";
    let dk = "";
    let key = "";
    if (route === undefined) {
      const alen = v6 ? 16 : 4;
      sk = addrKey(b.subarray(seg.src, seg.src + alen));
      dk = addrKey(b.subarray(seg.dst, seg.dst + alen));
      key = `${sk}:${seg.sourcePort}>${dk}:${seg.destinationPort}`;
      route = this.#routes.get(key);
    }
    const flags = seg.flags;
    const syn = (flags & TcpFlag.SYN) !== 0;
    if (route !== undefined && syn && !(flags & TcpFlag.ACK)) {
      // A SYN on a finished 4-tuple, or one whose initial sequence number differs from the stream's (the
      // old connection's end was not captured), starts a new connection.
      const c = route.conn;
      const own = route.fromClient ? c.c2s : c.s2c;
      const done = c.reset || (c.c2s.closed && c.s2c.closed);
      if (done || (own.started && ((seg.seq + 1) >>> 0) !== own.base)) {
        if (!done) this.#finish(c, "end");
        route = undefined;
      }
    }
    if (route === undefined) {
      if (key === "") {
        const alen = v6 ? 16 : 4;
        sk = addrKey(b.subarray(seg.src, seg.src + alen));
        dk = addrKey(b.subarray(seg.dst, seg.dst + alen));
        key = `${sk}:${seg.sourcePort}>${dk}:${seg.destinationPort}`;
      }
      route = this.#open(seg, packet, key, `${dk}:${seg.destinationPort}>${sk}:${seg.sourcePort}`);
    }
    if (hit?.route !== route) {
      this.#cache[slot] = { v6, s0, s1, s2, s3, d0, d1, d2, d3, ports, route };
    }
    const c = route.conn;
    if (c.reset) return;
    const s = route.fromClient ? c.c2s : c.s2c;
    if (flags & TcpFlag.RST) {
      c.reset = true;
      this.#finish(c, "rst");
      return;
    }
    let seq = seg.seq;
    if (syn) {
      seq = (seq + 1) >>> 0;
      if (!s.started) {
        s.started = true;
        s.base = seq;
      }
    } else if (!s.started) {
      s.started = true;
      s.synless = true;
      s.base = seq;
    }
    if (s.closed) return;
    let off = s.next + ((seq - ((s.base + s.next) >>> 0)) | 0);
    // Bytes before the first one seen; not a keep-alive (one byte at next - 1, as #data ignores it).
    if (
      off < 0 && s.synless && seg.payloadLength > 0 && -off <= MAX_WINDOW &&
      (seg.payloadLength !== 1 || off !== s.next - 1)
    ) {
      this.#beforeStart(s, -off, packet);
      off = 0;
    }
    if (off - s.next > MAX_WINDOW) {
      this.#out.push({
        type: "finding",
        finding: {
          code: "bad-value",
          offset: packet.offset,
          rule: "tcp-out-of-window",
          message: `Connection ${c.info.id} ${s.dir}: packet ${packet.index} starts ${
            off - s.next
          } bytes beyond the next expected byte, more than any TCP window (2^30, RFC 7323); ignored`,
          packet: packet.index,
          connection: c.info.id,
          direction: s.dir,
          streamOffset: off,
          length: seg.payloadLength,
        },
      });
      return;
    }
    const end = off + seg.payloadLength;
    if (seg.payloadLength > 0) {
      this.#data(
        c,
        s,
        off,
        packet.data.subarray(seg.payloadStart, seg.payloadEnd),
        seg.payloadLength,
        packet,
      );
    }
    if (flags & TcpFlag.FIN && s.finAt < 0) s.finAt = end;
    this.#maybeClose(c, s);
  }

  #open(seg: ParsedTcp, packet: CapturePacket, key: string, reverse: string): Route {
    const f = seg.flags;
    let srcIsClient: boolean;
    let clientBy: TcpConnection["clientBy"];
    if (f & TcpFlag.SYN) {
      srcIsClient = !(f & TcpFlag.ACK);
      clientBy = "syn";
    } else {
      const sp = this.#isServerPort;
      const srcServer = sp !== undefined && sp(seg.sourcePort);
      const dstServer = sp !== undefined && sp(seg.destinationPort);
      if (srcServer !== dstServer) {
        srcIsClient = dstServer;
        clientBy = "port";
      } else {
        srcIsClient = true;
        clientBy = "first-sender";
      }
    }
    const b = packet.data;
    const alen = seg.ipVersion === 4 ? 4 : 16;
    const src = { address: formatAddress(b.subarray(seg.src, seg.src + alen)), port: seg.sourcePort };
    const dst = { address: formatAddress(b.subarray(seg.dst, seg.dst + alen)), port: seg.destinationPort };
    const info: TcpConnection = {
      id: this.connections.length,
      ipVersion: seg.ipVersion,
      client: srcIsClient ? src : dst,
      server: srcIsClient ? dst : src,
      firstPacket: packet.index,
      clientBy,
    };
    this.connections.push(info);
    const conn: Conn = { info, c2s: side("c2s"), s2c: side("s2c"), reset: false };
    this.#live.add(conn);
    const route = { conn, fromClient: srcIsClient };
    this.#routes.set(key, route);
    if (reverse !== key) this.#routes.set(reverse, { conn, fromClient: !srcIsClient });
    this.#cache.fill(undefined);
    this.#out.push({ type: "open", connection: info });
    return route;
  }

  #data(c: Conn, s: Side, off: number, payload: Uint8Array, declared: number, packet: CapturePacket): void {
    let bytes = payload;
    const capEnd = off + bytes.length;
    const end = off + declared;
    if (end <= s.next) {
      // A keep-alive repeats the last byte (or sends one garbage byte) at next - 1: not a retransmission.
      if (declared === 1 && off === s.next - 1) return;
      this.#compareRecent(c, s, off, bytes, packet);
      return;
    }
    if (off < s.next) {
      const skip = s.next - off;
      if (skip <= bytes.length) {
        this.#compareRecent(c, s, off, bytes.subarray(0, skip), packet);
        bytes = bytes.subarray(skip);
      } else {
        this.#compareRecent(c, s, off, bytes, packet);
        bytes = bytes.subarray(bytes.length);
      }
      off = s.next;
    }
    if (off === s.next) {
      if (bytes.length > 0) this.#deliver(c, s, bytes, packet);
      if (end > capEnd && end > s.next) this.#skip(c, s, end, packet, "snaplen");
      else this.#drain(c, s);
      return;
    }
    // Out of order (or a hole is pending): hold copies, then deliver whatever became contiguous.
    if (bytes.length > 0) this.#hold(c, s, off, bytes.slice(), bytes.length, packet);
    if (end > capEnd) {
      const from = Math.max(capEnd, s.next);
      if (end > from) this.#hold(c, s, from, undefined, end - from, packet);
    }
    this.#drain(c, s);
    while (s.heldBytes > this.#maxHeld && s.held.length > 0) {
      const first = s.held[0]!;
      this.#skip(c, s, first.off, first.packet, "limit");
      this.#drain(c, s);
    }
  }

  /** Inserts a range into the held list, trimming overlaps (the data already held wins). */
  #hold(
    c: Conn,
    s: Side,
    off: number,
    bytes: Uint8Array | undefined,
    length: number,
    packet: CapturePacket,
  ): void {
    const held = s.held;
    const last = held[held.length - 1];
    if (last === undefined || last.off + last.length <= off) {
      // The common case after a loss: later segments keep arriving in order behind the hole.
      held.push({ off, bytes, length, packet });
      if (bytes !== undefined) s.heldBytes += length;
      return;
    }
    let i = 0;
    while (i < held.length && held[i]!.off + held[i]!.length <= off) i++;
    let end = off + length;
    while (length > 0) {
      const h = held[i];
      if (h === undefined || end <= h.off) {
        held.splice(i, 0, { off, bytes, length, packet });
        s.heldBytes += bytes === undefined ? 0 : length;
        return;
      }
      // Overlap with h: keep the part before h, compare the overlap, continue after h.
      if (off < h.off) {
        const n = h.off - off;
        held.splice(i, 0, { off, bytes: bytes?.subarray(0, n), length: n, packet });
        s.heldBytes += bytes === undefined ? 0 : n;
        i++;
        bytes = bytes?.subarray(n);
        off = h.off;
        length -= n;
      }
      const oEnd = Math.min(end, h.off + h.length);
      if (bytes !== undefined && h.bytes !== undefined) {
        this.#compare(c, s, off, bytes.subarray(0, oEnd - off), h.off, h.bytes, packet);
      }
      const n = oEnd - off;
      bytes = bytes?.subarray(n);
      off = oEnd;
      length -= n;
      end = off + length;
      i++;
    }
  }

  #drain(c: Conn, s: Side): void {
    const held = s.held;
    while (held.length > 0) {
      const h = held[0]!;
      if (h.off > s.next) return;
      held.shift();
      if (h.bytes !== undefined) s.heldBytes -= h.length;
      const hEnd = h.off + h.length;
      if (hEnd <= s.next) continue;
      const skip = s.next - h.off;
      if (skip > 0 && h.bytes !== undefined) {
        this.#compareRecent(c, s, h.off, h.bytes.subarray(0, skip), h.packet);
      }
      if (h.bytes === undefined) this.#skip(c, s, hEnd, h.packet, "snaplen");
      else this.#deliver(c, s, skip > 0 ? h.bytes.subarray(skip) : h.bytes, h.packet);
    }
  }

  #deliver(c: Conn, s: Side, bytes: Uint8Array, packet: CapturePacket): void {
    if (s.gapLength > 0) this.#flushGap(c, s);
    const off = s.next;
    const direct = this.#onData !== undefined && this.#out.length === 0;
    if (!direct) {
      this.#out.push({
        type: "data",
        connection: c.info.id,
        direction: s.dir,
        streamOffset: off,
        bytes,
        packet: packet.index,
        seconds: packet.seconds,
        nanoseconds: packet.nanoseconds,
      });
    }
    const length = bytes.length;
    const next = off + length;
    s.next = next;
    const max = this.#recentMax;
    if (max > 0 && length > 0) {
      // Small segments (replies, bare headers) are copied at once even with recentAsViews: a copy of a few
      // cache lines costs less than a view kept, walked and copied at each release (a 64 KiB window of
      // 16-byte replies is 4 096 views).
      if (this.#recentAsViews && length > COPIED_SEGMENT_MAX) this.#keepView(s, bytes, off);
      else {
        const src = length > max ? bytes.subarray(length - max) : bytes;
        this.#toRing(s, src, next - src.length);
      }
      // The window's start: the later of the ring's first byte and `max` bytes before the next.
      const from = s.ringFrom < 0 ? off : s.ringFrom;
      s.ringFrom = from > next - max ? from : next - max;
    }
    // Last, with the reassembler's state complete: the callback may do anything.
    if (direct) this.#onData!(c.info.id, s.dir, off, bytes, packet);
  }

  /** `recentAsViews`: keeps `bytes` (at `off`) as a pending view; drops views that left the window. */
  #keepView(s: Side, bytes: Uint8Array, off: number): void {
    const views = s.pending;
    const offs = s.pendingOff;
    views.push(bytes);
    offs.push(off);
    const windowStart = s.next - this.#recentMax;
    let first = s.pendingFirst;
    while (offs[first]! + views[first]!.length <= windowStart) first++;
    if (first > 32 && first * 2 > views.length) {
      views.splice(0, first);
      offs.splice(0, first);
      first = 0;
    }
    s.pendingFirst = first;
  }

  /** Forgets every recently delivered byte (after a gap, at the end). */
  #forgetRecent(s: Side): void {
    s.ringFrom = -1;
    s.pending.length = 0;
    s.pendingOff.length = 0;
    s.pendingFirst = 0;
  }

  /** Declares [next, to) missing; consecutive gaps are merged into one event. */
  #skip(c: Conn, s: Side, to: number, packet: CapturePacket, reason: string): void {
    if (to <= s.next) return;
    if (s.gapLength === 0) {
      s.gapStart = s.next;
      s.gapPacket = packet;
      s.gapReason = reason;
    }
    s.gapLength += to - s.next;
    s.next = to;
    // The ring holds only contiguous delivered bytes: nothing before a gap is compared any more.
    this.#forgetRecent(s);
    this.#drain(c, s);
  }

  /**
   * A direction picked up without its SYN started at the first segment seen; `n` bytes before it arrived
   * later (the first segments were reordered). They cannot be delivered before what was: they are declared
   * missing at the current position (a `gap` event, as the stream decoders need to know), and the stream's
   * offsets from here on move up by `n`, so that every later byte keeps its place after the gap.
   */
  #beforeStart(s: Side, n: number, packet: CapturePacket): void {
    if (s.gapLength === 0) {
      s.gapStart = s.next;
      s.gapPacket = packet;
      s.gapReason = "before-start";
    }
    s.gapLength += n;
    s.next += n;
    s.base = (s.base - n) >>> 0;
    for (const h of s.held) h.off += n;
    if (s.finAt >= 0) s.finAt += n;
    this.#forgetRecent(s);
  }

  #flushGap(c: Conn, s: Side): void {
    const packet = s.gapPacket!;
    const why = s.gapReason === "snaplen"
      ? "the capture cut the packets (snaplen)"
      : s.gapReason === "limit"
      ? "more out-of-order data arrived than the buffer limit (option maxOutOfOrderBytes) allows"
      : s.gapReason === "before-start"
      ? "they precede the first byte delivered (the capture has no SYN for this direction) and arrived after it"
      : "the packets carrying them were not captured";
    const finding: TraceFinding = {
      code: "truncated",
      offset: packet.offset,
      rule: "tcp-gap",
      message:
        `Connection ${c.info.id} ${s.dir}: ${s.gapLength} bytes missing at stream offset ${s.gapStart}: ${why}`,
      packet: packet.index,
      connection: c.info.id,
      direction: s.dir,
      streamOffset: s.gapStart,
      length: s.gapLength,
    };
    this.#out.push({
      type: "gap",
      connection: c.info.id,
      direction: s.dir,
      streamOffset: s.gapStart,
      length: s.gapLength,
      finding,
    });
    s.gapLength = 0;
    s.gapPacket = undefined;
  }

  #compareRecent(c: Conn, s: Side, off: number, bytes: Uint8Array, packet: CapturePacket): void {
    if (s.ringFrom < 0) return;
    const from = Math.max(off, s.ringFrom);
    const to = Math.min(off + bytes.length, s.next);
    if (to <= from) return;
    // Retransmissions are rare: a contiguous copy of the overlap keeps the comparison simple. Bytes still
    // kept as views (recentAsViews) are newer than what the ring holds at their positions.
    const kept = new Uint8Array(to - from);
    const ring = s.ring;
    if (ring !== undefined) { for (let x = from; x < to; x++) kept[x - from] = ring[x % ring.length]!; }
    for (let i = s.pendingFirst; i < s.pending.length; i++) {
      const v = s.pending[i]!;
      const vo = s.pendingOff[i]!;
      const a = Math.max(from, vo);
      const b = Math.min(to, vo + v.length);
      if (a < b) kept.set(v.subarray(a - vo, b - vo), a - from);
    }
    this.#compare(c, s, from, bytes.subarray(from - off, to - off), from, kept, packet);
  }

  /** Compares `bytes` (at stream offset `off`) with `other` (at `otherOff`), over `bytes`' range. */
  #compare(
    c: Conn,
    s: Side,
    off: number,
    bytes: Uint8Array,
    otherOff: number,
    other: Uint8Array,
    p: CapturePacket,
  ): void {
    const d = off - otherOff;
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] !== other[d + i]) {
        this.#out.push({
          type: "finding",
          finding: {
            code: "bad-value",
            offset: p.offset,
            rule: "tcp-retransmission-mismatch",
            message:
              `Connection ${c.info.id} ${s.dir}: packet ${p.index} retransmits ${bytes.length} bytes at stream offset ${off} with different contents (first difference at ${
                off + i
              }); the first copy is kept`,
            packet: p.index,
            connection: c.info.id,
            direction: s.dir,
            streamOffset: off,
            length: bytes.length,
          },
        });
        return;
      }
    }
  }

  #maybeClose(c: Conn, s: Side): void {
    if (!s.closed && s.finAt >= 0 && s.next >= s.finAt) this.#close(c, s, "fin");
  }

  #close(c: Conn, s: Side, reason: "fin" | "rst" | "end"): void {
    if (s.gapLength > 0) this.#flushGap(c, s);
    s.closed = true;
    s.held = [];
    s.heldBytes = 0;
    s.ring = undefined;
    this.#forgetRecent(s);
    this.#out.push({ type: "close", connection: c.info.id, direction: s.dir, reason, streamOffset: s.next });
    if (c.c2s.closed && c.s2c.closed) this.#live.delete(c);
  }

  /** Delivers held data across holes (reported as gaps), then closes both directions. */
  #finish(c: Conn, reason: "rst" | "end"): void {
    for (const s of [c.c2s, c.s2c]) {
      if (s.closed) continue;
      while (s.held.length > 0) {
        const first = s.held[0]!;
        this.#skip(c, s, first.off, first.packet, "missing");
        this.#drain(c, s);
      }
      if (s.finAt >= 0 && s.next >= s.finAt) this.#close(c, s, "fin");
      else this.#close(c, s, reason);
    }
  }
}

/**
 * The result of {@link reassembleCapture}: each connection's two directions as whole byte arrays.
 *
 * @example
 * ```ts
 * import type { ReassembledCapture } from "@nbd/codec/trace";
 * const r: ReassembledCapture = { connections: [], streams: [], findings: [] };
 * console.log(r.streams.length); // 0
 * ```
 */
export interface ReassembledCapture {
  /** Connections in order of first packet. */
  readonly connections: readonly TcpConnection[];
  /** For each connection (same index), the bytes of each direction, gaps left out. */
  readonly streams: readonly { readonly c2s: Uint8Array; readonly s2c: Uint8Array }[];
  /** Capture findings, then TCP findings and gaps, in order. */
  readonly findings: readonly TraceFinding[];
}

/**
 * Reads a whole capture held in memory and reassembles every TCP connection: a convenience for small
 * captures and tests (it copies each stream into one array). Stream large captures with
 * {@link CaptureReader} and {@link TcpReassembler} instead.
 *
 * @param bytes the complete pcap or pcapng file
 * @param options orientation hint and limits
 * @returns connections, their bytes per direction, and findings
 *
 * @example
 * ```ts
 * import { reassembleCapture } from "@nbd/codec/trace";
 * const hex = "d4c3b2a1020004000000000000000000ffff000065000000" + // pcap, raw IP
 *   "0100000000000000" + "2b000000" + "2b000000" +
 *   "4500002b00010000400600007f0000017f000001" +
 *   "c00027e9000003e8000000005018ffff00000000" + "4e4244";
 * const r = reassembleCapture(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)));
 * console.log(r.connections[0]?.server.port, new TextDecoder().decode(r.streams[0]?.c2s)); // 10217 "NBD"
 * ```
 */
export function reassembleCapture(bytes: Uint8Array, options?: TcpReassemblerOptions): ReassembledCapture {
  const capture = readCapture(bytes);
  const tcp = new TcpReassembler(options);
  const parts: { c2s: Uint8Array[]; s2c: Uint8Array[] }[] = [];
  const findings: TraceFinding[] = [...capture.findings];
  const take = (events: TcpEvent[]) => {
    for (const e of events) {
      if (e.type === "open") parts.push({ c2s: [], s2c: [] });
      else if (e.type === "data") parts[e.connection]![e.direction].push(e.bytes);
      else if (e.type === "gap" || e.type === "finding") findings.push(e.finding);
    }
  };
  for (const p of capture.packets) take(tcp.push(p));
  take(tcp.end());
  return {
    connections: tcp.connections,
    streams: parts.map((p) => ({ c2s: concat(p.c2s), s2c: concat(p.s2c) })),
    findings,
  };
}

function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  n = 0;
  for (const p of parts) {
    out.set(p, n);
    n += p.length;
  }
  return out;
}

/**
 * Capture files: pcap and pcapng readers over `Uint8Array`, fed chunk by chunk with bounded memory.
 *
 * The reader only frames records and decodes their headers; link layers, IP and TCP are handled by
 * {@link TcpReassembler} in `tcp.ts`. Packet data are views of the pushed chunks (never copies) unless a
 * record spans two chunks, in which case that one record is assembled in a fresh buffer.
 *
 * Formats: pcap (magic `a1b2c3d4` microseconds, `a1b23c4d` nanoseconds, either byte order) and pcapng
 * (any number of sections in either byte order, interfaces with `if_tsresol` and `if_tsoffset`, Enhanced,
 * Simple and obsolete Packet Blocks; other blocks are skipped). Facts follow the pcap and pcapng
 * specifications (draft-ietf-opsawg-pcap, draft-ietf-opsawg-pcapng).
 *
 * @module
 */
import { ViewCache } from "./_bytes.ts";
import { type Finding, NbdDecodeError, type NbdDecodeErrorCode } from "./errors.ts";

// The trace entry point exposes these in its own signatures, so it re-exports them.
export type { Finding, NbdDecodeErrorCode } from "./errors.ts";

/**
 * Default for {@link CaptureReaderOptions.maxRecordLength}: 4 MiB, far above any real packet (Linux
 * loopback and GRO/BIG TCP captures reach 64 KiB to 512 KiB) yet small enough to bound memory.
 *
 * @example
 * ```ts
 * import { DEFAULT_MAX_RECORD_LENGTH } from "@nbd/codec/trace";
 * console.log(DEFAULT_MAX_RECORD_LENGTH); // 4194304
 * ```
 */
export const DEFAULT_MAX_RECORD_LENGTH: number = 4 * 1024 * 1024;

/** The smallest carry allocated for an incomplete unit: record headers and small packets fit at once. */
const CARRY_MIN = 4096;

/**
 * Link-layer types (`LINKTYPE_*` values of the tcpdump.org registry) that the trace decoder understands.
 *
 * @example
 * ```ts
 * import { LinkType } from "@nbd/codec/trace";
 * console.log(LinkType.ETHERNET, LinkType.LINUX_SLL2); // 1 276
 * ```
 */
export const LinkType = {
  /** BSD loopback: a 4-byte address family in the capturing host's byte order. */
  NULL: 0,
  /** Ethernet II, with any number of 802.1Q / 802.1ad VLAN tags. */
  ETHERNET: 1,
  /** Raw IPv4 or IPv6 (the version nibble tells which). */
  RAW: 101,
  /** OpenBSD loopback: a 4-byte address family in network byte order. */
  LOOP: 108,
  /** Linux "cooked" capture, version 1 (16-byte header). */
  LINUX_SLL: 113,
  /** Raw IPv4. */
  IPV4: 228,
  /** Raw IPv6. */
  IPV6: 229,
  /** Linux "cooked" capture, version 2 (20-byte header). */
  LINUX_SLL2: 276,
} as const;

/**
 * A finding about a capture, a packet or a TCP stream: the shared {@link Finding} plus where in the
 * trace it applies. `offset` is the absolute byte offset in the capture (of the record, or of the field).
 *
 * @example
 * ```ts
 * import type { TraceFinding } from "@nbd/codec/trace";
 * const f: TraceFinding = { code: "truncated", offset: 24, rule: "tcp-gap", message: "3 bytes missing",
 *   packet: 0, connection: 0, direction: "c2s", streamOffset: 100, length: 3 };
 * console.log(f.rule); // "tcp-gap"
 * ```
 */
export interface TraceFinding extends Finding {
  /** Index of the packet (0-based, in capture order) the finding is about, when there is one. */
  readonly packet?: number;
  /** Connection id (see `TcpConnection.id`), for TCP findings. */
  readonly connection?: number;
  /** Direction within the connection, for TCP findings. */
  readonly direction?: "c2s" | "s2c";
  /** Stream offset (bytes from the start of that direction's data) where the finding applies. */
  readonly streamOffset?: number;
  /** Number of bytes concerned (a gap's length, a mismatching overlap's length). */
  readonly length?: number;
}

/**
 * One captured packet (a pcap record or a pcapng packet block).
 *
 * @example
 * ```ts
 * import { readCapture } from "@nbd/codec/trace";
 * const hex = "d4c3b2a1020004000000000000000000ffff000001000000" +
 *   "01000000020000000300000004000000" + "aabbcc";
 * const { packets } = readCapture(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)));
 * const p = packets[0]!;
 * console.log(p.seconds, p.nanoseconds, p.data.length, p.originalLength); // 1 2000 3 4
 * ```
 */
export interface CapturePacket {
  /** Packet index, 0-based, in capture order. */
  readonly index: number;
  /** Absolute byte offset of the record (or block) in the capture. */
  readonly offset: number;
  /** Absolute byte offset of `data[0]` in the capture. */
  readonly dataOffset: number;
  /** Index into {@link CaptureReader.interfaces} (counted across all pcapng sections). */
  readonly interfaceId: number;
  /** Link-layer type of the interface (see {@link LinkType}). */
  readonly linkType: number;
  /** Timestamp, whole seconds since 1970-01-01 UTC (0 for pcapng Simple Packet Blocks, which have none). */
  readonly seconds: number;
  /** Timestamp, nanoseconds within the second (0..999999999). */
  readonly nanoseconds: number;
  /** Length of the packet on the wire; more than `data.length` when the capture cut it (snaplen). */
  readonly originalLength: number;
  /** The captured bytes: a view of the pushed chunk (not a copy); do not overwrite chunks you pushed. */
  readonly data: Uint8Array;
}

/**
 * A capture interface: the single one of a pcap file, or one pcapng Interface Description Block.
 *
 * @example
 * ```ts
 * import type { CaptureInterface } from "@nbd/codec/trace";
 * const i: CaptureInterface = { id: 0, section: 0, linkType: 1, snapLength: 65535, unitsPerSecond: 1000000 };
 * console.log(i.linkType); // 1
 * ```
 */
export interface CaptureInterface {
  /** Index in {@link CaptureReader.interfaces}. */
  readonly id: number;
  /** pcapng section number (0-based); always 0 for pcap. */
  readonly section: number;
  /** Link-layer type (see {@link LinkType}). */
  readonly linkType: number;
  /** Snapshot length (0 means unlimited in pcapng). */
  readonly snapLength: number;
  /** Timestamp units per second (1e6 for microseconds, 1e9 for nanoseconds, or a power of two). */
  readonly unitsPerSecond: number;
}

/**
 * Options of {@link CaptureReader} and {@link readCapture}.
 *
 * @example
 * ```ts
 * import { type CaptureReaderOptions, CaptureReader } from "@nbd/codec/trace";
 * const options: CaptureReaderOptions = { maxRecordLength: 1 << 20, strict: false };
 * console.log(new CaptureReader(options).format); // undefined
 * ```
 */
export interface CaptureReaderOptions {
  /**
   * Largest record (pcap record data, or whole pcapng block) accepted, in bytes; a longer one is refused
   * with an `NbdDecodeError` of code `"limit-exceeded"` before anything is buffered. Default
   * {@link DEFAULT_MAX_RECORD_LENGTH} (4 MiB). This bounds the reader's memory.
   */
  readonly maxRecordLength?: number;
  /**
   * When true (the default), {@link CaptureReader.end} throws `"truncated"` if the input stops inside a
   * record; when false it records a finding instead (captures cut by a killed tcpdump are common).
   */
  readonly strict?: boolean;
  /**
   * Receives each packet as soon as its record is complete, instead of {@link CaptureReader.push} (and
   * {@link CaptureReader.pushComplete}) collecting a chunk's packets into the array it returns, which is
   * then empty. A consumer that handles each packet at once keeps no more than one packet object alive
   * (less for the garbage collector to copy). Packets come in the same order, with the same contents. An
   * exception thrown by the callback leaves the reader failed, as malformed input does: later pushes throw
   * it again.
   */
  readonly onPacket?: (packet: CapturePacket) => void;
}

/** Where the reader puts packets: the array a push returns, or the caller's callback. */
interface PacketSink {
  push(packet: CapturePacket): unknown;
}

/**
 * Everything {@link readCapture} found in a whole capture held in memory.
 *
 * @example
 * ```ts
 * import { type Capture, readCapture } from "@nbd/codec/trace";
 * const c: Capture = readCapture(Uint8Array.from(
 *   "a1b2c3d40002000400000000000000000000ffff00000001".match(/../g)!, (h) => parseInt(h, 16)));
 * console.log(c.format, c.packets.length); // "pcap" 0
 * ```
 */
export interface Capture {
  /** File format. */
  readonly format: "pcap" | "pcapng";
  /** Interfaces, in order of appearance. */
  readonly interfaces: readonly CaptureInterface[];
  /** Every packet, in capture order. */
  readonly packets: readonly CapturePacket[];
  /** Findings about the capture's structure (not about TCP streams). */
  readonly findings: readonly TraceFinding[];
}

const PCAP_HEADER_LENGTH = 24;
const PCAP_RECORD_HEADER_LENGTH = 16;
const SHB_TYPE = 0x0a0d0d0a;
const BYTE_ORDER_MAGIC = 0x1a2b3c4d;
const BLOCK_IDB = 1;
const BLOCK_OPB = 2;
const BLOCK_SPB = 3;
const BLOCK_EPB = 6;
const TWO_POW_32 = 0x1_0000_0000;

function rd16(b: Uint8Array, o: number, le: boolean): number {
  return le ? b[o]! | (b[o + 1]! << 8) : (b[o]! << 8) | b[o + 1]!;
}

function rd32(b: Uint8Array, o: number, le: boolean): number {
  return le
    ? (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0
    : ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}

function hex32(v: number): string {
  return "0x" + v.toString(16).padStart(8, "0");
}

function fail(code: NbdDecodeErrorCode, offset: number, rule: string, message: string): never {
  throw new NbdDecodeError(code, offset, rule, message);
}

interface IfaceState extends CaptureInterface {
  /** if_tsoffset, seconds. */
  readonly tsOffset: number;
  /** unitsPerSecond as a bigint, and the way to scale the remainder to nanoseconds. */
  readonly unitsBig: bigint;
}

/**
 * An incremental pcap/pcapng reader: push chunks of any size (one byte, 64 KiB, the whole file) and get
 * the packets completed by each chunk. Only a record that spans chunks is buffered, so memory stays
 * below {@link CaptureReaderOptions.maxRecordLength} plus one chunk. The format is detected from the
 * first four bytes.
 *
 * Malformed structure (bad magic, a pcapng block length below 12 or not a multiple of 4, a record above
 * the limit, an unknown interface) throws an `NbdDecodeError` with the absolute byte offset; nothing else
 * is thrown for any input.
 *
 * @example
 * ```ts
 * import { CaptureReader } from "@nbd/codec/trace";
 * const file = Uint8Array.from(("d4c3b2a1020004000000000000000000ffff000001000000" +
 *   "0a000000000000000200000002000000" + "beef").match(/../g)!, (h) => parseInt(h, 16));
 * const reader = new CaptureReader();
 * let count = 0;
 * for (let i = 0; i < file.length; i += 7) count += reader.push(file.subarray(i, i + 7)).length;
 * reader.end();
 * console.log(reader.format, count); // "pcap" 1
 * ```
 */
export class CaptureReader {
  /** Detected format, once the first four bytes are in. */
  format: "pcap" | "pcapng" | undefined = undefined;
  /** Interfaces seen so far (all sections). */
  readonly interfaces: CaptureInterface[] = [];
  readonly #ifaces: IfaceState[] = [];
  readonly #maxRecord: number;
  readonly #strict: boolean;
  #findings: TraceFinding[] = [];
  /** Bytes pushed before the current chunk. */
  #total = 0;
  #packets = 0;
  #le = false;
  #section = -1;
  /** Interface ids of the current pcapng section, mapped to global ids. */
  #sectionBase = 0;
  #pcapNano = false;
  #pcapIface: IfaceState | undefined = undefined;
  /**
   * The bytes of a unit that a push left incomplete, copied as they arrive: grown (doubling) up to the
   * unit's length, never allocated at a length the input announces but has not sent.
   */
  #carry: Uint8Array | undefined = undefined;
  #carryLength = 0;
  /** Bytes the carried unit needs in all (as far as its header tells). */
  #carryNeed = 0;
  #carryOffset = 0;
  /** See {@link unconsumed}. */
  #unconsumed = 0;
  /** The size of the unit the unconsumed bytes begin. */
  #unconsumedNeeds = 0;
  #ended = false;
  #failed: unknown = undefined;
  /** The caller's {@link CaptureReaderOptions.onPacket}, as a sink; undefined: collect into arrays. */
  readonly #sink: PacketSink | undefined = undefined;
  /** The DataView over the chunk being read. */
  readonly #views = new ViewCache();
  /** A push is under way (its onPacket callback may not push again). */
  #pushing = false;

  /**
   * Creates a reader.
   *
   * @param options limits and strictness
   */
  constructor(options?: CaptureReaderOptions) {
    const max = options?.maxRecordLength ?? DEFAULT_MAX_RECORD_LENGTH;
    if (!Number.isInteger(max) || max < 16) {
      throw new RangeError(`Cannot read capture: maxRecordLength ${max} must be an integer of at least 16`);
    }
    this.#maxRecord = max;
    this.#strict = options?.strict ?? true;
    const onPacket = options?.onPacket;
    if (onPacket !== undefined) {
      if (typeof onPacket !== "function") {
        throw new TypeError("Cannot read capture: onPacket is not a function");
      }
      this.#sink = { push: onPacket };
    }
  }

  /** Total bytes pushed so far (less the bytes a {@link pushComplete} left {@link unconsumed}). */
  get bytesRead(): number {
    return this.#total;
  }

  /** Packets returned so far. */
  get packetCount(): number {
    return this.#packets;
  }

  /**
   * Feeds the next chunk of the capture and returns the packets it completed. The chunk is not copied:
   * packet data are views of it, so do not overwrite it afterwards. After an `NbdDecodeError` the reader
   * is stuck: every later call throws the same error.
   *
   * @param chunk the next bytes of the capture, of any length
   * @returns the packets completed by this chunk, in order
   */
  push(chunk: Uint8Array): CapturePacket[] {
    return this.#guarded(chunk, false);
  }

  /**
   * Like {@link push}, but a record left incomplete at the end of `chunk` is not copied: its bytes are
   * left to the caller ({@link unconsumed} says how many), who passes them again at the start of the next
   * push. A reader of a file that reuses its read buffers moves those few bytes to the front of the next
   * buffer, so that no record is ever copied into a fresh allocation of its own.
   *
   * @example
   * ```ts
   * import { CaptureReader } from "@nbd/codec/trace";
   * const file = Uint8Array.from(("d4c3b2a1020004000000000000000000ffff000001000000" +
   *   "0a000000000000000200000002000000" + "beef").match(/../g)!, (h) => parseInt(h, 16));
   * const reader = new CaptureReader();
   * reader.pushComplete(file.subarray(0, 30)); // the header, and 6 bytes of the record
   * const rest = reader.unconsumed; // 6
   * const packets = reader.pushComplete(file.subarray(30 - rest)); // those 6 bytes again, and the rest
   * console.log(rest, packets.length, reader.unconsumed); // 6 1 0
   * ```
   *
   * @param chunk the bytes not consumed by the previous push (if any), then the next bytes of the capture
   * @returns the packets completed by this chunk, in order
   */
  pushComplete(chunk: Uint8Array): CapturePacket[] {
    return this.#guarded(chunk, true);
  }

  /**
   * Bytes at the end of the last {@link pushComplete} chunk that were not consumed (an incomplete record);
   * 0 after {@link push}, which keeps them itself.
   */
  get unconsumed(): number {
    return this.#unconsumed;
  }

  #guarded(chunk: Uint8Array, keepTail: boolean): CapturePacket[] {
    if (this.#failed !== undefined) throw this.#failed;
    if (this.#ended) throw new TypeError("Cannot push to a CaptureReader after end()");
    if (!(chunk instanceof Uint8Array)) throw new TypeError("Cannot read capture: chunk is not a Uint8Array");
    if (this.#pushing) {
      throw new TypeError("Cannot push to a CaptureReader from inside its onPacket callback");
    }
    this.#pushing = true;
    try {
      return this.#push(chunk, keepTail);
    } catch (e) {
      // The reader cannot resynchronise after malformed structure: later pushes rethrow the same error.
      this.#failed = e;
      throw e;
    } finally {
      this.#pushing = false;
    }
  }

  #push(chunk: Uint8Array, keepTail: boolean): CapturePacket[] {
    const packets: CapturePacket[] = [];
    const out: PacketSink = this.#sink ?? packets;
    let pos = 0;
    const len = chunk.length;
    this.#unconsumed = 0;
    let carry = this.#carry;
    while (carry !== undefined) {
      const have = this.#carryLength;
      const n = Math.min(this.#carryNeed - have, len - pos);
      if (have + n > carry.length) carry = this.#grow(carry, have + n);
      carry.set(chunk.subarray(pos, pos + n), have);
      this.#carryLength = have + n;
      pos += n;
      if (this.#carryLength < this.#carryNeed) {
        this.#total += len;
        return packets;
      }
      const r = this.#step(carry, 0, this.#carryLength, this.#carryOffset, out);
      if (r > 0) {
        carry = this.#carry = undefined;
      } else {
        this.#carryNeed = -r;
      }
    }
    while (pos < len) {
      // Classic pcap records straight to their parser (the common case), other units through #step.
      const r = this.format === "pcap"
        ? this.#pcapRecord(chunk, pos, len - pos, this.#total + pos, out)
        : this.#step(chunk, pos, len, this.#total + pos, out);
      if (r > 0) {
        pos += r;
        continue;
      }
      if (keepTail) {
        // The caller passes these bytes again: they are not part of the stream yet.
        this.#unconsumed = len - pos;
        this.#unconsumedNeeds = -r;
        this.#total += pos;
        return packets;
      }
      const c = new Uint8Array(Math.min(-r, Math.max(CARRY_MIN, 2 * (len - pos))));
      c.set(chunk.subarray(pos));
      this.#carry = c;
      this.#carryLength = len - pos;
      this.#carryNeed = -r;
      this.#carryOffset = this.#total + pos;
      break;
    }
    this.#total += len;
    return packets;
  }

  /** A bigger carry holding the same bytes, for at least `n` of them (doubling, up to the unit's length). */
  #grow(carry: Uint8Array, n: number): Uint8Array {
    const bigger = new Uint8Array(Math.min(this.#carryNeed, Math.max(n, 2 * carry.length)));
    bigger.set(carry.subarray(0, this.#carryLength));
    return this.#carry = bigger;
  }

  /**
   * Says the capture is complete. When the input stopped inside a record, throws `"truncated"` (strict)
   * or records a finding (lenient); an input too short for a file header always throws.
   */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    const c = this.#carry;
    // Bytes a pushComplete left unconsumed and nobody passed again: the input ends inside that unit.
    const left = this.#unconsumed;
    if (c === undefined && left === 0 && this.format !== undefined) return;
    const offset = c === undefined ? this.#total : this.#carryOffset;
    const have = c === undefined ? left : this.#carryLength;
    const needs = c !== undefined ? this.#carryNeed : left > 0 ? this.#unconsumedNeeds : 4;
    const what = this.format === undefined ? "file header" : "record";
    const message =
      `Cannot read capture: input ends inside a ${what} at offset ${offset} (${have} of ${needs} bytes)`;
    this.#carry = undefined;
    this.#unconsumed = 0;
    if (this.#strict || this.format === undefined) fail("truncated", offset, "capture-truncated", message);
    this.#findings.push({ code: "truncated", offset, rule: "capture-truncated", message });
  }

  /**
   * How many findings {@link takeFindings} would return now: a check cheaper than taking an empty list,
   * for a caller that looks after every packet.
   *
   * @example
   * ```ts
   * import { CaptureReader } from "@nbd/codec/trace";
   * const reader = new CaptureReader({ strict: false });
   * const file = new Uint8Array(34); // a pcap file header (24 bytes), then 10 bytes of a record
   * file.set([0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]);
   * file.set([0xff, 0xff, 0, 0, 1], 16); // snaplen 65535, Ethernet
   * reader.push(file);
   * reader.end(); // the capture ends inside a record: a "truncated" finding
   * console.log(reader.pendingFindings, reader.takeFindings().length, reader.pendingFindings); // 1 1 0
   * ```
   */
  get pendingFindings(): number {
    return this.#findings.length;
  }

  /**
   * Returns the findings recorded since the last call and forgets them (so memory stays bounded).
   *
   * @returns findings about the capture structure, in order
   */
  takeFindings(): TraceFinding[] {
    const f = this.#findings;
    this.#findings = [];
    return f;
  }

  /** Parses one unit at `pos`: returns bytes consumed (> 0), or minus the total bytes needed from `pos`. */
  #step(b: Uint8Array, pos: number, end: number, abs: number, out: PacketSink): number {
    const avail = end - pos;
    if (this.format === undefined) {
      if (avail < 4) return -4;
      const magic = rd32(b, pos, false);
      if (magic === SHB_TYPE) {
        this.format = "pcapng";
        return this.#pcapng(b, pos, avail, abs, out);
      }
      if (avail < PCAP_HEADER_LENGTH) {
        this.#pcapMagic(magic, abs);
        return -PCAP_HEADER_LENGTH;
      }
      this.#pcapHeader(b, pos, abs);
      return PCAP_HEADER_LENGTH;
    }
    if (this.format === "pcap") return this.#pcapRecord(b, pos, avail, abs, out);
    return this.#pcapng(b, pos, avail, abs, out);
  }

  #pcapMagic(magic: number, abs: number): void {
    switch (magic) {
      case 0xa1b2c3d4:
        this.#le = false;
        this.#pcapNano = false;
        return;
      case 0xd4c3b2a1:
        this.#le = true;
        this.#pcapNano = false;
        return;
      case 0xa1b23c4d:
        this.#le = false;
        this.#pcapNano = true;
        return;
      case 0x4d3cb2a1:
        this.#le = true;
        this.#pcapNano = true;
        return;
    }
    fail(
      "bad-magic",
      abs,
      "capture-magic",
      `Cannot read capture: magic is ${
        hex32(magic)
      }, expected a pcap magic (0xa1b2c3d4, 0xa1b23c4d, either byte order) or a pcapng Section Header Block (0x0a0d0d0a)`,
    );
  }

  #pcapHeader(b: Uint8Array, pos: number, abs: number): void {
    this.#pcapMagic(rd32(b, pos, false), abs);
    this.format = "pcap";
    const le = this.#le;
    const snapLength = rd32(b, pos + 16, le);
    // The link-type field's upper bits carry FCS information (pcap spec, "LinkType and additional information").
    const linkType = rd32(b, pos + 20, le) & 0x03ff_ffff;
    const units = this.#pcapNano ? 1_000_000_000 : 1_000_000;
    const iface: IfaceState = {
      id: 0,
      section: 0,
      linkType,
      snapLength,
      unitsPerSecond: units,
      tsOffset: 0,
      unitsBig: BigInt(units),
    };
    this.#pcapIface = iface;
    this.#ifaces.push(iface);
    this.interfaces.push(publicIface(iface));
  }

  #pcapRecord(b: Uint8Array, pos: number, avail: number, abs: number, out: PacketSink): number {
    if (avail < PCAP_RECORD_HEADER_LENGTH) return -PCAP_RECORD_HEADER_LENGTH;
    const le = this.#le;
    // A DataView over the chunk (cached per buffer): one call per field, where unoptimised code would
    // otherwise make four element loads and six arithmetic calls of it.
    const views = this.#views;
    const dv = views.of(b);
    const h = views.base + pos;
    const capLen = dv.getUint32(h + 8, le);
    if (capLen > this.#maxRecord - PCAP_RECORD_HEADER_LENGTH) {
      fail(
        "limit-exceeded",
        abs + 8,
        "capture-max-record-length",
        `Cannot read capture: pcap record captured length ${capLen} exceeds the limit of ${
          this.#maxRecord - PCAP_RECORD_HEADER_LENGTH
        } bytes (option maxRecordLength)`,
      );
    }
    const total = PCAP_RECORD_HEADER_LENGTH + capLen;
    if (avail < total) return -total;
    const iface = this.#pcapIface!;
    let seconds = dv.getUint32(h, le);
    let nanoseconds = dv.getUint32(h + 4, le);
    if (!this.#pcapNano) nanoseconds *= 1000;
    if (nanoseconds >= 1_000_000_000) {
      const extra = Math.floor(nanoseconds / 1_000_000_000);
      seconds += extra;
      nanoseconds -= extra * 1_000_000_000;
    }
    const origLen = dv.getUint32(h + 12, le);
    const index = this.#packets++;
    if (origLen < capLen) {
      this.#findings.push({
        code: "bad-length",
        offset: abs + 12,
        rule: "pcap-original-length",
        message:
          `Packet ${index}: original length ${origLen} is less than the captured length ${capLen}; the pcap format requires orig_len >= incl_len`,
        packet: index,
      });
    }
    out.push({
      index,
      offset: abs,
      dataOffset: abs + PCAP_RECORD_HEADER_LENGTH,
      interfaceId: 0,
      linkType: iface.linkType,
      seconds,
      nanoseconds,
      originalLength: origLen > capLen ? origLen : capLen,
      data: b.subarray(pos + PCAP_RECORD_HEADER_LENGTH, pos + total),
    });
    return total;
  }

  #pcapng(b: Uint8Array, pos: number, avail: number, abs: number, out: PacketSink): number {
    if (avail < 8) return -8;
    const type0 = rd32(b, pos, false);
    if (type0 === SHB_TYPE) {
      if (avail < 12) return -12;
      const bom = rd32(b, pos + 8, false);
      if (bom === BYTE_ORDER_MAGIC) this.#le = false;
      else if (bom === 0x4d3c2b1a) this.#le = true;
      else {
        fail(
          "bad-magic",
          abs + 8,
          "pcapng-byte-order-magic",
          `Cannot read capture: pcapng byte-order magic is ${
            hex32(bom)
          }, expected 0x1a2b3c4d in either byte order`,
        );
      }
    }
    const le = this.#le;
    const type = rd32(b, pos, le);
    const blockLen = rd32(b, pos + 4, le);
    if (blockLen < 12 || blockLen % 4 !== 0 || (type === SHB_TYPE && blockLen < 28)) {
      fail(
        "bad-length",
        abs + 4,
        "pcapng-block-length",
        `Cannot read capture: pcapng block length is ${blockLen}; it must be a multiple of 4 and at least ${
          type === SHB_TYPE ? 28 : 12
        }`,
      );
    }
    if (blockLen > this.#maxRecord) {
      fail(
        "limit-exceeded",
        abs + 4,
        "capture-max-record-length",
        `Cannot read capture: pcapng block length ${blockLen} exceeds the limit of ${this.#maxRecord} bytes (option maxRecordLength)`,
      );
    }
    if (avail < blockLen) return -blockLen;
    const trailer = rd32(b, pos + blockLen - 4, le);
    if (trailer !== blockLen) {
      fail(
        "bad-length",
        abs + blockLen - 4,
        "pcapng-block-trailer",
        `Cannot read capture: pcapng block ends with length ${trailer}, but starts with ${blockLen}; both must be equal`,
      );
    }
    const body = pos + 8;
    const bodyEnd = pos + blockLen - 4;
    switch (type) {
      case SHB_TYPE: {
        const major = rd16(b, body + 4, le);
        if (major !== 1) {
          fail(
            "bad-value",
            abs + 12,
            "pcapng-version",
            `Cannot read capture: pcapng major version is ${major}, expected 1`,
          );
        }
        this.#section++;
        this.#sectionBase = this.#ifaces.length;
        break;
      }
      case BLOCK_IDB:
        this.#idb(b, body, bodyEnd, abs - pos);
        break;
      case BLOCK_EPB:
      case BLOCK_OPB: {
        const epb = type === BLOCK_EPB;
        if (bodyEnd - body < 20) this.#short(type, abs, blockLen);
        const ifaceId = epb ? rd32(b, body, le) : rd16(b, body, le);
        const iface = this.#iface(ifaceId, abs + 8);
        const capLen = rd32(b, body + 12, le);
        const origLen = rd32(b, body + 16, le);
        const data = body + 20;
        if (capLen > bodyEnd - data) {
          fail(
            "bad-length",
            abs + 20,
            "pcapng-captured-length",
            `Cannot read capture: packet block captured length ${capLen} runs past the end of its block (${
              bodyEnd - data
            } bytes of data room)`,
          );
        }
        const [seconds, nanoseconds] = timestamp(rd32(b, body + 4, le), rd32(b, body + 8, le), iface);
        out.push(
          this.#packet(abs, pos, data, b.subarray(data, data + capLen), iface, seconds, nanoseconds, origLen),
        );
        break;
      }
      case BLOCK_SPB: {
        if (bodyEnd - body < 4) this.#short(type, abs, blockLen);
        const iface = this.#iface(0, abs + 8);
        const origLen = rd32(b, body, le);
        const data = body + 4;
        let capLen = Math.min(origLen, bodyEnd - data);
        if (iface.snapLength > 0) capLen = Math.min(capLen, iface.snapLength);
        out.push(this.#packet(abs, pos, data, b.subarray(data, data + capLen), iface, 0, 0, origLen));
        break;
      }
      default:
        // Name resolution, statistics, custom and future blocks carry nothing we decode.
        if (this.#section < 0) {
          fail(
            "bad-magic",
            abs,
            "pcapng-first-block",
            `Cannot read capture: pcapng block type ${hex32(type)} comes before any Section Header Block`,
          );
        }
    }
    return blockLen;
  }

  #short(type: number, abs: number, blockLen: number): never {
    fail(
      "bad-length",
      abs + 4,
      "pcapng-block-length",
      `Cannot read capture: pcapng block of type ${type} is ${blockLen} bytes, too short for its fixed fields`,
    );
  }

  #iface(id: number, abs: number): IfaceState {
    const iface = this.#ifaces[this.#sectionBase + id];
    if (iface === undefined || iface.section !== this.#section) {
      fail(
        "bad-value",
        abs,
        "pcapng-interface-id",
        `Cannot read capture: packet block names interface ${id}, but its section describes only ${
          this.#ifaces.length - this.#sectionBase
        }`,
      );
    }
    return iface;
  }

  #packet(
    abs: number,
    pos: number,
    data: number,
    bytes: Uint8Array,
    iface: IfaceState,
    seconds: number,
    nanoseconds: number,
    origLen: number,
  ): CapturePacket {
    const index = this.#packets++;
    return {
      index,
      offset: abs,
      dataOffset: abs + data - pos,
      interfaceId: iface.id,
      linkType: iface.linkType,
      seconds,
      nanoseconds,
      originalLength: Math.max(origLen, bytes.length),
      data: bytes,
    };
  }

  /** Interface Description Block; `base` converts positions in `b` to absolute offsets. */
  #idb(b: Uint8Array, body: number, bodyEnd: number, base: number): void {
    if (this.#section < 0) fail("bad-magic", base + body - 8, "pcapng-first-block", "IDB before any SHB");
    if (bodyEnd - body < 8) this.#short(BLOCK_IDB, base + body - 8, bodyEnd - body + 12);
    const le = this.#le;
    const linkType = rd16(b, body, le);
    const snapLength = rd32(b, body + 4, le);
    let unitsBig = 1_000_000n;
    let tsOffset = 0;
    let o = body + 8;
    while (o + 4 <= bodyEnd) {
      const code = rd16(b, o, le);
      const optLen = rd16(b, o + 2, le);
      if (code === 0) break;
      const v = o + 4;
      if (v + optLen > bodyEnd) {
        fail(
          "bad-length",
          base + o + 2,
          "pcapng-option-length",
          `Cannot read capture: option ${code} of length ${optLen} runs past the end of its block`,
        );
      }
      if (code === 9 && optLen >= 1) {
        // if_tsresol: high bit clear = 10^-n seconds, set = 2^-n seconds.
        const r = b[v]!;
        unitsBig = r & 0x80 ? 1n << BigInt(r & 0x7f) : 10n ** BigInt(r);
      } else if (code === 14 && optLen >= 8) {
        // if_tsoffset: signed 64-bit seconds added to every timestamp.
        const hi = rd32(b, le ? v + 4 : v, le) | 0;
        const lo = rd32(b, le ? v : v + 4, le);
        tsOffset = hi * TWO_POW_32 + lo;
      }
      o = v + ((optLen + 3) & ~3);
    }
    const iface: IfaceState = {
      id: this.#ifaces.length,
      section: this.#section,
      linkType,
      snapLength,
      unitsPerSecond: Number(unitsBig),
      tsOffset,
      unitsBig,
    };
    this.#ifaces.push(iface);
    this.interfaces.push(publicIface(iface));
  }
}

function publicIface(i: IfaceState): CaptureInterface {
  return {
    id: i.id,
    section: i.section,
    linkType: i.linkType,
    snapLength: i.snapLength,
    unitsPerSecond: i.unitsPerSecond,
  };
}

/** A pcapng 64-bit timestamp in the interface's units, as seconds and nanoseconds. */
function timestamp(hi: number, lo: number, iface: IfaceState): [number, number] {
  const units = iface.unitsPerSecond;
  if (hi < 0x20_0000 && (units === 1_000_000 || units === 1_000_000_000 || units === 1000)) {
    // Exact in doubles: the value is below 2^53.
    const v = hi * TWO_POW_32 + lo;
    const s = Math.floor(v / units);
    return [s + iface.tsOffset, (v - s * units) * (1_000_000_000 / units)];
  }
  const v = (BigInt(hi) << 32n) | BigInt(lo);
  const u = iface.unitsBig;
  const s = v / u;
  const ns = ((v % u) * 1_000_000_000n) / u;
  return [Number(s) + iface.tsOffset, Number(ns)];
}

/**
 * Reads a whole capture held in memory: a convenience over {@link CaptureReader} for small files.
 *
 * @param bytes the complete pcap or pcapng file
 * @param options limits and strictness
 * @returns format, interfaces, packets (views of `bytes`) and findings
 *
 * @example
 * ```ts
 * import { readCapture } from "@nbd/codec/trace";
 * const hex = "a1b23c4d000200040000000000000000000000ff00000065" + // nanosecond pcap, raw IP
 *   "0000000a00000005" + "00000004" + "00000004"; // a record that promises 4 bytes, then the file ends
 * try {
 *   readCapture(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)));
 * } catch (e) {
 *   console.log((e as { code: string; offset: number }).code, (e as { offset: number }).offset); // "truncated" 24
 * }
 * ```
 */
export function readCapture(bytes: Uint8Array, options?: CaptureReaderOptions): Capture {
  const reader = new CaptureReader(options);
  const packets = reader.push(bytes);
  reader.end();
  return {
    format: reader.format!,
    interfaces: reader.interfaces,
    packets,
    findings: reader.takeFindings(),
  };
}

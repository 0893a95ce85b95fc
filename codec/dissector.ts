/**
 * The trace dissector behind `nbd-codec dissect` and `stats`: capture chunks in, NBD events out, each with
 * its packets, time, endpoints and, for replies, its request's packet and the response time. Finds the NBD
 * connections of a capture (by server port, else by their first bytes), feeds each one's two byte streams
 * to its own {@link ConversationDecoder}, and hands every event to the caller as soon as the packet that
 * completes it is read. Memory stays bounded: one capture chunk, the reassembler's limits, each live
 * decoder's buffered frame, and the packets that frame spans.
 *
 * @module
 */
import { type CapturePacket, CaptureReader, type TraceFinding } from "./capture.ts";
import { ConversationDecoder } from "./conversation.ts";
import type { ConversationEvent, Direction } from "./events.ts";
import type { Request } from "./request.ts";
import type { NegotiatedState } from "./stream.ts";
import { type TcpConnection, type TcpEndpoint, type TcpEvent, TcpReassembler } from "./tcp.ts";
import type { TraceEvent, TraceInfoSlot } from "./trace_event.ts";

/**
 * The IANA port of NBD.
 *
 * @example
 * ```ts
 * import { NBD_PORT } from "@nbd/codec/trace";
 * console.log(NBD_PORT); // 10809
 * ```
 */
export const NBD_PORT = 10809;

/** Bytes of each direction kept while a connection on another port is not yet recognised. */
const MAX_PENDING_BYTES = 64 * 1024;

const NBDMAGIC = [0x4e, 0x42, 0x44, 0x4d, 0x41, 0x47, 0x49, 0x43];
const IHAVEOPT = [0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54];
const REQUEST_MAGIC = 0x25609513;
const EXTENDED_REQUEST_MAGIC = 0x21e41c71;
/** NBD_CMD_DISC: the client decoder drops whatever follows it. */
const DISC = 2;
/** NBD_REPLY_FLAG_DONE: the last chunk of a structured reply. */
const DONE = 1;

/** A trace event being built from a conversation event (the dissector adds its fields in place). */
type Building = { -readonly [K in keyof TraceEvent]: TraceEvent[K] } & ConversationEvent;

/**
 * An NBD connection of a capture, as the dissector saw it when it ended: its endpoints, what was negotiated
 * and the times of its first and last data packets.
 *
 * @example
 * ```ts
 * import type { TraceConnection } from "@nbd/codec/trace";
 * const show = (c: TraceConnection) => `${c.connection}: ${c.client.address}:${c.client.port}`;
 * console.log(typeof show);
 * ```
 */
export interface TraceConnection {
  /** The connection's number, as on its events. */
  readonly connection: number;
  /** The client's address and port. */
  readonly client: TcpEndpoint;
  /** The server's address and port. */
  readonly server: TcpEndpoint;
  /** What the conversation decoder learned from the traffic. */
  readonly state: NegotiatedState;
  /** Number of the first packet that carried NBD bytes, when one did. */
  readonly firstPacket?: number;
  /** Its timestamp, seconds and nanoseconds. */
  readonly firstSeconds?: number;
  /** See {@link TraceConnection.firstSeconds}. */
  readonly firstNanoseconds?: number;
  /** Number of the last packet that carried NBD bytes. */
  readonly lastPacket?: number;
  /** Its timestamp, seconds. */
  readonly lastSeconds?: number;
  /** See {@link TraceConnection.lastSeconds}. */
  readonly lastNanoseconds?: number;
}

/**
 * Where the dissector sends what it finds.
 *
 * @example
 * ```ts
 * import type { DissectSink } from "@nbd/codec/trace";
 * const sink: DissectSink = { event: (e) => console.log(e.packet), traceFinding: () => {} };
 * console.log(typeof sink.event);
 * ```
 */
export interface DissectSink {
  /**
   * A decoded frame or notice of an NBD connection, in conversation order, with its packets and times. The
   * event (and the payload views it holds) is only valid during the call when the caller reuses chunks.
   */
  event(e: TraceEvent): void;
  /**
   * A finding of the capture file or of the TCP layer: `connection` is the NBD connection number when the
   * finding belongs to one, `undefined` for the capture as a whole.
   */
  traceFinding(f: TraceFinding, connection: number | undefined): void;
  /** An NBD connection ended (both directions closed, or the capture ended): its summary. Optional. */
  connectionEnd?(c: TraceConnection): void;
}

/**
 * Options of {@link CaptureDissector}.
 *
 * @example
 * ```ts
 * import type { CaptureDissectorOptions } from "@nbd/codec/trace";
 * const o: CaptureDissectorOptions = { port: 10810 };
 * console.log(o.port); // 10810
 * ```
 */
export interface CaptureDissectorOptions {
  /** The NBD server port (default 10809); connections on other ports are recognised by their first bytes. */
  readonly port?: number;
  /**
   * Leave the trace fields (packets, times, endpoints, the request's packet and time, the response time)
   * off the events: the sink reads them from {@link CaptureDissector.info} during its call instead, and
   * copies them onto an event only when it needs them there ({@link CaptureDissector.attach}); the text
   * formatter reads them from the slot too (`formatEventText`'s `trace` argument). Saves growing every
   * event object by up to ten properties when only a few numbers are printed. Default false.
   */
  readonly detached?: boolean;
}

function emptyInfo(): TraceInfoSlot {
  return {
    packet: undefined,
    firstPacket: undefined,
    seconds: undefined,
    nanoseconds: undefined,
    client: undefined,
    server: undefined,
    requestPacket: undefined,
    requestSeconds: undefined,
    requestNanoseconds: undefined,
    responseNanoseconds: undefined,
  };
}

type Op = {
  readonly dir: Direction;
  readonly bytes: Uint8Array;
  readonly packet: number;
  readonly seconds: number;
  readonly nanoseconds: number;
} | {
  readonly dir: Direction;
  readonly gap: number;
};

interface Pending {
  readonly kind: "pending";
  readonly info: TcpConnection;
  readonly ops: Op[];
  /** The first bytes of each direction (up to 16), to recognise NBD. */
  head: { c2s: Uint8Array; s2c: Uint8Array };
  sizes: { c2s: number; s2c: number };
  closed: Set<Direction>;
}

/**
 * Which pushed chunks the bytes a decoder direction still buffers may be views of: runs of bytes in stream
 * order, each tagged with the sequence number of the chunk being pushed when they arrived (bytes that came
 * from a copy, such as reassembled out-of-order data, are tagged too: that only keeps a chunk longer).
 */
class Retained {
  // Public fields: this class is private to the module, and baseline code reads a private field through a
  // keyed load (bench/RESULTS.md, "Fifth pass"); `add` runs for every delivered segment.
  /** Chunk sequence number of each run. */
  readonly seqs: number[] = [];
  /** Stream offset just past each run. */
  readonly ends: number[] = [];
  first = 0;
  /** Bytes given to the decoder so far (its stream offset of the next byte). */
  delivered = 0;
  off = false;

  /**
   * The decoder keeps no more bytes of this direction: it drops them as they come (after TLS starts, after
   * bytes that are not NBD, after the client's NBD_CMD_DISC).
   */
  opaque(): void {
    this.off = true;
    this.seqs.length = 0;
    this.ends.length = 0;
    this.first = 0;
  }

  add(seq: number, length: number): void {
    if (this.off) return;
    const delivered = this.delivered + length;
    this.delivered = delivered;
    const seqs = this.seqs;
    const last = seqs.length - 1;
    if (last >= this.first && seqs[last] === seq) this.ends[last] = delivered;
    else {
      seqs.push(seq);
      this.ends.push(delivered);
    }
  }

  /**
   * The oldest chunk a buffered byte may be a view of, or Infinity when nothing is buffered. `consumed`: the
   * stream offset up to which the decoder's events covered its bytes (the direction's {@link Packets}
   * keeps it).
   */
  oldest(consumed: number): number {
    const seqs = this.seqs;
    const ends = this.ends;
    let i = this.first;
    while (i < seqs.length && ends[i]! <= consumed) i++;
    if (i === seqs.length) {
      seqs.length = 0;
      ends.length = 0;
      this.first = 0;
      return Infinity;
    }
    if (i > 64 && i * 2 > seqs.length) {
      seqs.splice(0, i);
      ends.splice(0, i);
      i = 0;
    }
    this.first = i;
    return seqs[i]!;
  }
}

/**
 * Which packets carried the bytes of one decoder direction that a coming event may still cover: runs of
 * stream bytes in order, each with its packet's number and time. An event's first packet is the run holding
 * its first byte, its last packet the run holding its last byte; runs before an event's first byte are
 * dropped (events of a direction come in stream order), so this holds only the packets of the frame being
 * completed.
 */
class Packets {
  /**
   * Per run, four numbers: stream offset of its first byte, packet number, seconds, nanoseconds. Runs are
   * searched by the dissector's `#emit` (forward from `first`, which it advances).
   */
  runs: Float64Array = new Float64Array(64);
  /** Runs in use, from index `first`. */
  count = 0;
  first = 0;
  /** Stream offset of the next byte given to the decoder (gaps included). */
  next = 0;
  /**
   * Stream offset up to which events have covered the bytes (also what the direction's {@link Retained}
   * counts as consumed).
   */
  consumed = 0;
  off = false;

  /** The decoder keeps no more bytes of this direction (see {@link Retained.opaque}). */
  opaque(): void {
    this.off = true;
    this.count = 0;
    this.first = 0;
  }

  add(length: number, packet: number, seconds: number, nanoseconds: number): void {
    const at = this.next;
    this.next = at + length;
    if (this.off) return;
    let n = this.count;
    // Every byte before these was covered by an event: no earlier run is needed any more (the usual case,
    // a frame or more per packet, keeps one run).
    if (this.consumed >= at) {
      n = 0;
      this.first = 0;
    } else if (n > this.first && this.runs[(n - 1) * 4 + 1] === packet) return;
    let runs = this.runs;
    if ((n + 1) * 4 > runs.length) {
      const f = this.first;
      if (f * 2 >= n) {
        // Move the live runs to the front.
        runs.copyWithin(0, f * 4, n * 4);
        n -= f;
        this.first = 0;
      } else {
        const bigger = new Float64Array(runs.length * 2);
        bigger.set(runs.subarray(0, n * 4));
        this.runs = runs = bigger;
      }
    }
    const o = n * 4;
    runs[o] = at;
    runs[o + 1] = packet;
    runs[o + 2] = seconds;
    runs[o + 3] = nanoseconds;
    this.count = n + 1;
  }

  gap(length: number): void {
    this.next += length;
  }
}

/** The packet and time of a request that waits for its reply (not its event: that holds payload views). */
interface Sent {
  readonly packet: number;
  readonly seconds: number;
  readonly nanoseconds: number;
}

/** Requests waiting for their reply are kept up to this many per connection (oldest dropped first). */
const MAX_SENT = 65536;

interface Live {
  readonly kind: "nbd";
  readonly number: number;
  readonly decoder: ConversationDecoder;
  /** The reassembler's client is the NBD server. */
  readonly swap: boolean;
  closed: Set<Direction>;
  /** What each decoder direction may still hold views of. */
  readonly retained: { readonly c2s: Retained; readonly s2c: Retained };
  /** The packets of each decoder direction an event may still cover. */
  readonly packets: { readonly c2s: Packets; readonly s2c: Packets };
  /**
   * Requests waiting for their reply (their packet and time), by the request frame the conversation decoder
   * links replies to; the newest one is in `lastRequest` and the three numbers after it instead, so that
   * traffic with one request at a time needs no map operation and no allocation. (Not the request's event:
   * it may hold views of read chunks, which would then stay alive.)
   */
  readonly sent: Map<Request, Sent>;
  lastRequest: Request | undefined;
  lastPacketOfRequest: number;
  lastSecondsOfRequest: number;
  lastNanosOfRequest: number;
  readonly client: TcpEndpoint;
  readonly server: TcpEndpoint;
  firstPacket: number;
  firstSeconds: number;
  firstNanos: number;
  lastPacket: number;
  lastSeconds: number;
  lastNanos: number;
}

/** Connections not (or no longer) followed have no state at all. */
type ConnState = Pending | Live;

function startsWith(b: Uint8Array, at: number, magic: readonly number[]): boolean {
  if (b.length < at + magic.length) return false;
  for (let i = 0; i < magic.length; i++) if (b[at + i] !== magic[i]) return false;
  return true;
}

function u32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) >>> 0) + ((b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!);
}

/** What the first bytes of a direction say it is: an NBD server, an NBD client, not NBD, or too few to tell. */
function roleOf(b: Uint8Array): "server" | "client" | "no" | "unknown" {
  if (startsWith(b, 0, NBDMAGIC)) return "server";
  if (startsWith(b, 0, IHAVEOPT)) return "client";
  if (b.length >= 4) {
    const m = u32(b, 0);
    if (m === REQUEST_MAGIC || m === EXTENDED_REQUEST_MAGIC) return "client";
    // Client flags (only bits 0-1 are defined) followed by the first option.
    if (m <= 3 && startsWith(b, 4, IHAVEOPT)) return "client";
  }
  return b.length >= 12 ? "no" : "unknown";
}

/** What to tell a decoder that joins a connection in the middle, from the client's first bytes. */
function stateFromClientHead(b: Uint8Array): Partial<NegotiatedState> | undefined {
  if (startsWith(b, 0, IHAVEOPT)) return { phase: "options", style: "newstyle" };
  if (b.length >= 4) {
    const m = u32(b, 0);
    if (m === REQUEST_MAGIC) return { phase: "transmission", style: "newstyle" };
    if (m === EXTENDED_REQUEST_MAGIC) {
      return { phase: "transmission", style: "newstyle", extendedHeaders: true };
    }
  }
  return undefined;
}

function appendHead(head: Uint8Array, bytes: Uint8Array): Uint8Array {
  if (head.length >= 16) return head;
  const n = Math.min(16 - head.length, bytes.length);
  const out = new Uint8Array(head.length + n);
  out.set(head);
  out.set(bytes.subarray(0, n), head.length);
  return out;
}

function flip(d: Direction): Direction {
  return d === "c2s" ? "s2c" : "c2s";
}

/**
 * Streams a pcap or pcapng capture through the capture reader, the TCP reassembler and one conversation
 * decoder per NBD connection. Push the file in chunks of any size, then call {@link end}. Each event reaches
 * the sink as soon as the packet that completes it is processed, with its packets, time, endpoints and, for
 * replies, its request's packet and the response time (see `TraceInfo`).
 *
 * @example
 * ```ts
 * import { CaptureDissector, type TraceEvent } from "@nbd/codec/trace";
 * const events: TraceEvent[] = [];
 * const d = new CaptureDissector({ event: (e) => events.push(e), traceFinding: () => {} });
 * // An empty pcap (Ethernet), pushed in two pieces as a pipe might deliver it.
 * const file = Uint8Array.from("d4c3b2a1020004000000000000000000ffff000001000000".match(/../g)!, (h) => parseInt(h, 16));
 * d.push(file.subarray(0, 10));
 * d.push(file.subarray(10));
 * d.end();
 * console.log(d.format, events.length); // "pcap" 0
 * ```
 */
export class CaptureDissector {
  readonly #reader: CaptureReader;
  readonly #tcp: TcpReassembler;
  readonly #port: number;
  readonly #sink: DissectSink;
  readonly #conns = new Map<number, ConnState>();
  #next = 0;
  /** The connection of the last data delivered, and its state (see #data); -1: none. */
  #lastId = -1;
  #last: ConnState | undefined = undefined;
  /** Sequence number of the chunk being pushed (0 before the first). */
  #seq = 0;
  #origin: { readonly seconds: number; readonly nanoseconds: number } | undefined = undefined;
  /** Capture packets read so far. */
  #packets = 0;
  readonly #detached: boolean;
  readonly #info: TraceInfoSlot = emptyInfo();

  /**
   * Creates a dissector that sends what it finds to `sink`.
   *
   * @param sink receives events, trace findings and (optionally) each connection's summary
   * @param options the server port
   */
  constructor(sink: DissectSink, options?: CaptureDissectorOptions) {
    this.#port = options?.port ?? NBD_PORT;
    this.#sink = sink;
    this.#detached = options?.detached === true;
    // Each packet goes through the reassembler as soon as its record is read: no array of a whole chunk's
    // packets outlives its scavenge (the young generation then stays small).
    this.#reader = new CaptureReader({ strict: false, onPacket: (p) => this.#packet(p) });
    const port = this.#port;
    // The reassembler keeps its retransmission window as views of the chunks; release() copies it out of a
    // chunk before the chunk is read into again.
    this.#tcp = new TcpReassembler({
      isServerPort: (p) => p === port,
      recentAsViews: true,
      // In-order data straight to the decoders, without an event object per packet.
      onData: (connection, direction, _offset, bytes, p) =>
        this.#data(connection, direction, bytes, p.index + 1, p.seconds, p.nanoseconds),
    });
  }

  /** How many NBD connections were found so far. */
  get connections(): number {
    return this.#next;
  }

  /** The capture format, once known. */
  get format(): "pcap" | "pcapng" | undefined {
    return this.#reader.format;
  }

  /**
   * Feeds the next chunk of the capture file. The incomplete frames the decoders hold are views of it: do
   * not overwrite it until {@link oldestRetainedChunk} has moved past it, and call {@link release} just
   * before you do (events handed to the sink are only valid during the sink call). Memory stays bounded:
   * the reassembler keeps at most 64 KiB per direction as views (its retransmission window, copied out of a
   * chunk by `release`) and copies its out-of-order data into its own buffers, and a decoder holds at most
   * the frame it is completing. Throws `NbdDecodeError` when the file is not a capture.
   */
  push(chunk: Uint8Array): void {
    this.#seq++;
    this.#reader.push(chunk);
    this.#readerFindings();
  }

  /**
   * Like {@link push}, but a capture record left incomplete at the end of `chunk` is not copied by the
   * reader: pass its bytes ({@link unconsumed} of them) again at the start of the next chunk
   * ({@link CaptureReader.pushComplete}).
   */
  pushComplete(chunk: Uint8Array): void {
    this.#seq++;
    this.#reader.pushComplete(chunk);
    this.#readerFindings();
  }

  /** How many capture packets (of any protocol) were read so far. */
  get packets(): number {
    return this.#packets;
  }

  /** How many chunks were pushed so far: the sequence number of the last one (see {@link oldestRetainedChunk}). */
  get pushes(): number {
    return this.#seq;
  }

  /** Bytes at the end of the last {@link pushComplete} chunk that were not consumed. */
  get unconsumed(): number {
    return this.#reader.unconsumed;
  }

  /**
   * With {@link CaptureDissectorOptions.detached}: the trace fields of the event being handed to the sink,
   * valid during the sink's call (one object, reused for every event).
   */
  get info(): Readonly<TraceInfoSlot> {
    return this.#info;
  }

  /**
   * With {@link CaptureDissectorOptions.detached}: copies the trace fields of the event being handed to the
   * sink onto it (only the fields it has, in the order attached events have them), as if the dissector were
   * not detached. Call it from the sink, with the event it was given.
   */
  attach(e: TraceEvent): void {
    const i = this.#info;
    const b = e as Building;
    if (i.packet !== undefined) {
      b.packet = i.packet;
      b.firstPacket = i.firstPacket!;
      b.seconds = i.seconds!;
      b.nanoseconds = i.nanoseconds!;
    }
    b.client = i.client!;
    b.server = i.server!;
    if (i.requestPacket !== undefined) {
      b.requestPacket = i.requestPacket;
      b.requestSeconds = i.requestSeconds!;
      b.requestNanoseconds = i.requestNanoseconds!;
      if (i.responseNanoseconds !== undefined) b.responseNanoseconds = i.responseNanoseconds;
    }
  }

  /** The capture's first packet's time, once there is one: what relative times count from. */
  get origin(): { readonly seconds: number; readonly nanoseconds: number } | undefined {
    return this.#origin;
  }

  #packet(packet: CapturePacket): void {
    // The reader's findings so far (about this record or earlier ones) before this packet's own events: in
    // capture order, whatever the chunks the file was read in. (Asked here, not in a call per packet.)
    if (this.#reader.pendingFindings !== 0) this.#readerFindings();
    this.#packets = packet.index + 1;
    if (this.#origin === undefined) {
      this.#origin = { seconds: packet.seconds, nanoseconds: packet.nanoseconds };
    }
    const events = this.#tcp.push(packet);
    for (let i = 0; i < events.length; i++) this.#tcpEvent(events[i]!);
  }

  /**
   * Says that `chunk`, pushed earlier, is about to be overwritten: what the TCP reassembler still keeps of it
   * (the bytes it compares retransmissions with) is copied first. Call it before reading into a chunk again.
   */
  release(chunk: Uint8Array): void {
    this.#tcp.release(chunk.buffer);
  }

  /**
   * The sequence number (1 for the first {@link push}, 2 for the second, ...) of the oldest pushed chunk
   * that the decoders may still hold views of, or `Infinity` when they hold none. Chunks pushed before it
   * are no longer referenced and may be overwritten (reused for the next read). Conservative: bytes a
   * decoder dropped without an event (after TLS, after a disconnect) count as held.
   */
  get oldestRetainedChunk(): number {
    let oldest = Infinity;
    for (const st of this.#conns.values()) {
      if (st.kind !== "nbd") continue;
      const a = st.retained.c2s.oldest(st.packets.c2s.consumed);
      const b = st.retained.s2c.oldest(st.packets.s2c.consumed);
      if (a < oldest) oldest = a;
      if (b < oldest) oldest = b;
    }
    return oldest;
  }

  /** Ends the capture: every connection still open is ended (incomplete frames become notices). */
  end(): void {
    this.#reader.end();
    this.#readerFindings();
    for (const ev of this.#tcp.end()) this.#tcpEvent(ev);
    for (const [id, st] of this.#conns) {
      if (st.kind === "nbd") this.#finish(id, st);
    }
    this.#conns.clear();
    this.#lastId = -1;
  }

  #readerFindings(): void {
    // Called for every packet: nothing to take most of the time (no empty list), then an index loop.
    if (this.#reader.pendingFindings === 0) return;
    const found = this.#reader.takeFindings();
    for (let i = 0; i < found.length; i++) this.#sink.traceFinding(found[i]!, undefined);
  }

  #emit(events: ConversationEvent[], live: Live): void {
    const sink = this.#sink;
    // Detached: the fields go to the reused slot, and the events keep the decoder's shapes.
    const detached = this.#detached;
    const info = this.#info;
    for (let i = 0; i < events.length; i++) {
      const e = events[i]! as Building;
      const t: TraceInfoSlot | Building = detached ? info : e;
      const c2s = e.direction === "c2s";
      const dir = c2s ? live.retained.c2s : live.retained.s2c;
      const packets = c2s ? live.packets.c2s : live.packets.s2c;
      let start: number;
      let end: number;
      if (e.event === "frame") {
        start = e.frameOffset;
        end = start + e.frameLength;
      } else {
        start = e.streamOffset;
        end = start + e.length;
      }
      if (end > packets.consumed) packets.consumed = end;
      // The packets first: the event's runs are dropped when the direction turns opaque below. The run
      // holding the event's first byte (`a`, from which later events search on) and its last byte (`b`),
      // read from the runs inline: a method call apiece costs more than the search in baseline code.
      const runs = packets.runs;
      const count = packets.count;
      let a = packets.first;
      if (a < count) {
        while (a + 1 < count && runs[(a + 1) * 4]! <= start) a++;
        packets.first = a;
      } else a = -1;
      let packet = 0;
      let seconds = 0;
      let nanos = 0;
      if (a >= 0) {
        let b = a;
        const last = end - 1;
        if (last > start) { while (b + 1 < count && runs[(b + 1) * 4]! <= last) b++; }
        packet = runs[b * 4 + 1]!;
        seconds = runs[b * 4 + 2]!;
        nanos = runs[b * 4 + 3]!;
        t.packet = packet;
        t.firstPacket = runs[a * 4 + 1]!;
        t.seconds = seconds;
        t.nanoseconds = nanos;
      } else if (detached) {
        info.packet = undefined;
        info.firstPacket = undefined;
        info.seconds = undefined;
        info.nanoseconds = undefined;
      }
      if (t.client !== live.client) {
        t.client = live.client;
        t.server = live.server;
      }
      // The slot's request fields are set together (below): one load says whether an earlier event left them.
      if (detached && info.requestPacket !== undefined) {
        info.requestPacket = undefined;
        info.requestSeconds = undefined;
        info.requestNanoseconds = undefined;
        info.responseNanoseconds = undefined;
      }
      if (e.event === "frame") {
        const f = e.frame;
        if (f.type === "request") {
          if (f.command === DISC) {
            dir.opaque();
            packets.opaque();
          } else if (a >= 0) this.#sent(live, f, packet, seconds, nanos);
        } else if (e.request !== undefined && (f.type === "simple-reply" || f.type === "reply-chunk")) {
          const r = e.request;
          let rp = 0;
          let ss = 0;
          let sn = 0;
          const last = r === live.lastRequest;
          if (last) {
            rp = live.lastPacketOfRequest;
            ss = live.lastSecondsOfRequest;
            sn = live.lastNanosOfRequest;
          } else {
            const sent = live.sent.get(r);
            if (sent !== undefined) {
              rp = sent.packet;
              ss = sent.seconds;
              sn = sent.nanoseconds;
            }
          }
          if (rp !== 0) {
            t.requestPacket = rp;
            t.requestSeconds = ss;
            t.requestNanoseconds = sn;
            if (a >= 0) t.responseNanoseconds = (seconds - ss) * 1e9 + (nanos - sn);
            if (f.type === "simple-reply" || (f.flags & DONE) !== 0) {
              if (last) live.lastRequest = undefined;
              else live.sent.delete(r);
            }
          }
        }
      } else if (e.notice !== "truncated") {
        dir.opaque();
        packets.opaque();
      }
      sink.event(e);
    }
  }

  /** Remembers a request's packet and time for its reply. */
  #sent(live: Live, request: Request, packet: number, seconds: number, nanos: number): void {
    const previous = live.lastRequest;
    if (previous !== undefined) {
      const sent = live.sent;
      sent.set(previous, {
        packet: live.lastPacketOfRequest,
        seconds: live.lastSecondsOfRequest,
        nanoseconds: live.lastNanosOfRequest,
      });
      if (sent.size > MAX_SENT) sent.delete(sent.keys().next().value!);
    }
    live.lastRequest = request;
    live.lastPacketOfRequest = packet;
    live.lastSecondsOfRequest = seconds;
    live.lastNanosOfRequest = nanos;
  }

  #tcpEvent(ev: TcpEvent): void {
    switch (ev.type) {
      case "open":
        this.#open(ev.connection);
        return;
      case "data":
        this.#data(ev.connection, ev.direction, ev.bytes, ev.packet + 1, ev.seconds, ev.nanoseconds);
        return;
      case "gap": {
        const st = this.#conns.get(ev.connection);
        if (st === undefined) return;
        if (st.kind === "nbd") {
          const dir = st.swap ? flip(ev.direction) : ev.direction;
          st.packets[dir].gap(ev.length);
          this.#emit(st.decoder.gap(dir, ev.length), st);
          return;
        }
        this.#pendingOp(ev.connection, st, { dir: ev.direction, gap: ev.length });
        return;
      }
      case "close": {
        const st = this.#conns.get(ev.connection);
        if (st === undefined) return;
        st.closed.add(ev.direction);
        if (st.closed.size < 2) return;
        if (st.kind === "nbd") this.#finish(ev.connection, st);
        this.#conns.delete(ev.connection);
        this.#lastId = -1;
        return;
      }
      case "finding": {
        const id = ev.finding.connection;
        if (id === undefined) {
          this.#sink.traceFinding(ev.finding, undefined);
          return;
        }
        const st = this.#conns.get(id);
        if (st?.kind === "nbd") {
          const f = ev.finding;
          const d = f.direction;
          this.#sink.traceFinding(
            d === undefined ? f : { ...f, direction: st.swap ? flip(d) : d },
            st.number,
          );
        }
        return;
      }
    }
  }

  /** In-order bytes of a connection, from packet number `packet` (1-based) taken at `seconds`.`nanos`. */
  #data(
    connection: number,
    direction: Direction,
    bytes: Uint8Array,
    packet: number,
    seconds: number,
    nanos: number,
  ): void {
    // Consecutive packets mostly belong to one connection: its state without a map lookup.
    let st: ConnState | undefined;
    if (connection === this.#lastId) st = this.#last;
    else {
      st = this.#conns.get(connection);
      this.#lastId = connection;
      this.#last = st;
    }
    if (st === undefined) return;
    if (st.kind === "nbd") {
      const dir = st.swap ? flip(direction) : direction;
      // Not st.retained[dir]: a load keyed by a variable string is a megamorphic lookup in cold code.
      const c2s = dir === "c2s";
      (c2s ? st.retained.c2s : st.retained.s2c).add(this.#seq, bytes.length);
      (c2s ? st.packets.c2s : st.packets.s2c).add(bytes.length, packet, seconds, nanos);
      if (st.firstPacket === 0) {
        st.firstPacket = packet;
        st.firstSeconds = seconds;
        st.firstNanos = nanos;
      }
      st.lastPacket = packet;
      st.lastSeconds = seconds;
      st.lastNanos = nanos;
      this.#emit(st.decoder.push(dir, bytes), st);
      return;
    }
    this.#pendingOp(connection, st, {
      dir: direction,
      bytes: bytes.slice(),
      packet,
      seconds,
      nanoseconds: nanos,
    });
  }

  #open(info: TcpConnection): void {
    const port = this.#port;
    if (info.server.port === port) this.#start(info, false, undefined, []);
    else if (info.client.port === port) this.#start(info, true, undefined, []);
    else {
      this.#conns.set(info.id, {
        kind: "pending",
        info,
        ops: [],
        head: { c2s: new Uint8Array(0), s2c: new Uint8Array(0) },
        sizes: { c2s: 0, s2c: 0 },
        closed: new Set(),
      });
      this.#lastId = -1;
    }
  }

  #start(info: TcpConnection, swap: boolean, state: Partial<NegotiatedState> | undefined, ops: Op[]): Live {
    const id = info.id;
    const decoder = new ConversationDecoder({
      strict: false,
      payloadViews: true,
      connection: this.#next,
      ...(state === undefined ? {} : { state }),
    });
    const live: Live = {
      kind: "nbd",
      number: this.#next++,
      decoder,
      swap,
      closed: new Set(),
      retained: { c2s: new Retained(), s2c: new Retained() },
      packets: { c2s: new Packets(), s2c: new Packets() },
      sent: new Map(),
      lastRequest: undefined,
      lastPacketOfRequest: 0,
      lastSecondsOfRequest: 0,
      lastNanosOfRequest: 0,
      client: swap ? info.server : info.client,
      server: swap ? info.client : info.server,
      firstPacket: 0,
      firstSeconds: 0,
      firstNanos: 0,
      lastPacket: 0,
      lastSeconds: 0,
      lastNanos: 0,
    };
    this.#conns.set(id, live);
    this.#lastId = -1;
    for (const op of ops) {
      const dir = swap ? flip(op.dir) : op.dir;
      if ("bytes" in op) {
        // Copies (see #pendingOp): they hold no chunk, but the decoder's stream offsets count them.
        live.retained[dir].add(0, op.bytes.length);
        live.packets[dir].add(op.bytes.length, op.packet, op.seconds, op.nanoseconds);
        if (live.firstPacket === 0) {
          live.firstPacket = op.packet;
          live.firstSeconds = op.seconds;
          live.firstNanos = op.nanoseconds;
        }
        live.lastPacket = op.packet;
        live.lastSeconds = op.seconds;
        live.lastNanos = op.nanoseconds;
        this.#emit(decoder.push(dir, op.bytes), live);
      } else {
        live.packets[dir].gap(op.gap);
        this.#emit(decoder.gap(dir, op.gap), live);
      }
    }
    return live;
  }

  #pendingOp(id: number, st: Pending, op: Op): void {
    st.ops.push(op);
    if ("bytes" in op) {
      st.head[op.dir] = appendHead(st.head[op.dir], op.bytes);
      st.sizes[op.dir] += op.bytes.length;
    } else {
      // Bytes missing before the first bytes: the start of this direction is unknown.
      if (st.sizes[op.dir] === 0) st.head[op.dir] = new Uint8Array(16);
      st.sizes[op.dir] += op.gap;
    }
    const c = roleOf(st.head.c2s);
    const s = roleOf(st.head.s2c);
    let swap: boolean | undefined;
    if (c === "client" || s === "server") swap = false;
    else if (c === "server" || s === "client") swap = true;
    if (swap !== undefined) {
      const clientHead = swap ? st.head.s2c : st.head.c2s;
      const live = this.#start(st.info, swap, stateFromClientHead(clientHead), st.ops);
      for (const d of st.closed) live.closed.add(swap ? flip(d) : d);
      return;
    }
    if ((c === "no" && s === "no") || st.sizes.c2s > MAX_PENDING_BYTES || st.sizes.s2c > MAX_PENDING_BYTES) {
      this.#conns.delete(id);
      this.#lastId = -1;
    }
  }

  #finish(id: number, st: Live): void {
    this.#emit(st.decoder.end(), st);
    const end = this.#sink.connectionEnd;
    if (end !== undefined) {
      const c: TraceConnection = {
        connection: st.number,
        client: st.client,
        server: st.server,
        state: st.decoder.state,
        ...(st.firstPacket === 0 ? {} : {
          firstPacket: st.firstPacket,
          firstSeconds: st.firstSeconds,
          firstNanoseconds: st.firstNanos,
          lastPacket: st.lastPacket,
          lastSeconds: st.lastSeconds,
          lastNanoseconds: st.lastNanos,
        }),
      };
      end.call(this.#sink, c);
    }
    this.#conns.delete(id);
    this.#lastId = -1;
  }
}

/**
 * A trace finding with the NBD connection it belongs to (`undefined` for the capture as a whole).
 *
 * @example
 * ```ts
 * import type { ConnectionFinding } from "@nbd/codec/trace";
 * const f: ConnectionFinding = { connection: undefined, finding: { code: "truncated", offset: 24,
 *   rule: "capture-truncated", message: "the capture ends inside a record" } };
 * console.log(f.finding.rule); // "capture-truncated"
 * ```
 */
export interface ConnectionFinding {
  /** The NBD connection's number, or `undefined`. */
  readonly connection: number | undefined;
  /** The finding. */
  readonly finding: TraceFinding;
}

/**
 * Everything {@link dissectCapture} found in a capture.
 *
 * @example
 * ```ts
 * import type { DissectedCapture } from "@nbd/codec/trace";
 * const count = (d: DissectedCapture) => d.events.length;
 * console.log(typeof count);
 * ```
 */
export interface DissectedCapture {
  /** Every NBD event, in conversation order, with packets and times. */
  readonly events: readonly TraceEvent[];
  /** Findings about the capture file and the TCP streams. */
  readonly findings: readonly ConnectionFinding[];
  /** Every NBD connection, in the order they ended. */
  readonly connections: readonly TraceConnection[];
}

/**
 * Decodes a whole capture (pcap or pcapng) held in memory: every NBD frame of every connection, each with
 * its packet numbers, time, endpoints and, for replies, its request's packet and the response time. The
 * events' payloads are views of `bytes`. Throws `NbdDecodeError` when `bytes` is not a capture; a capture
 * cut inside a record gives a finding.
 *
 * @example
 * ```ts
 * import { dissectCapture } from "@nbd/codec/trace";
 * // A pcap file with no packets (Ethernet); read a real one with Deno.readFile or fs.readFileSync.
 * const empty = "d4c3b2a1020004000000000000000000ffff000001000000";
 * const { events, connections } = dissectCapture(Uint8Array.from(empty.match(/../g)!, (h) => parseInt(h, 16)));
 * console.log(events.length, connections.length); // 0 0
 * ```
 */
export function dissectCapture(bytes: Uint8Array, options?: CaptureDissectorOptions): DissectedCapture {
  const events: TraceEvent[] = [];
  const findings: ConnectionFinding[] = [];
  const connections: TraceConnection[] = [];
  const d = new CaptureDissector({
    event: (e) => events.push(e),
    traceFinding: (finding, connection) => findings.push({ connection, finding }),
    connectionEnd: (c) => connections.push(c),
  }, options);
  d.push(bytes);
  d.end();
  return { events, findings, connections };
}

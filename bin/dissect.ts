/**
 * The dissector pipeline behind `nbd-codec dissect`: capture chunks in, conversation events out. Finds
 * the NBD connections of a capture (by server port, else by their first bytes), feeds each one's two byte
 * streams to its own {@link ConversationDecoder}, and hands every event to the caller as soon as it is
 * decoded. Memory stays bounded: one capture chunk, the reassembler's limits, and each live decoder's
 * buffered frame.
 *
 * @module
 */
import { type CapturePacket, CaptureReader, type TraceFinding } from "../codec/capture.ts";
import { ConversationDecoder } from "../codec/conversation.ts";
import type { ConversationEvent, Direction } from "../codec/events.ts";
import type { NegotiatedState } from "../codec/stream.ts";
import { type TcpConnection, type TcpEvent, TcpReassembler } from "../codec/tcp.ts";

/** The IANA port of NBD. */
export const NBD_PORT = 10809;

/** Bytes of each direction kept while a connection on another port is not yet recognised. */
const MAX_PENDING_BYTES = 64 * 1024;

const NBDMAGIC = [0x4e, 0x42, 0x44, 0x4d, 0x41, 0x47, 0x49, 0x43];
const IHAVEOPT = [0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54];
const REQUEST_MAGIC = 0x25609513;
const EXTENDED_REQUEST_MAGIC = 0x21e41c71;
/** NBD_CMD_DISC: the client decoder drops whatever follows it. */
const DISC = 2;

/** Where the pipeline sends what it finds. */
export interface DissectSink {
  /** A decoded frame or notice of an NBD connection, in conversation order. */
  event(e: ConversationEvent): void;
  /**
   * A finding of the capture file or of the TCP layer: `connection` is the NBD connection number when the
   * finding belongs to one, `undefined` for the capture as a whole.
   */
  traceFinding(f: TraceFinding, connection: number | undefined): void;
}

/** Options of {@link CaptureDissector}. */
export interface CaptureDissectorOptions {
  /** The NBD server port (default 10809); connections on other ports are recognised by their first bytes. */
  readonly port?: number;
}

type Op = { readonly dir: Direction; readonly bytes: Uint8Array } | {
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
  /** Chunk sequence number of each run. */
  readonly #seqs: number[] = [];
  /** Stream offset just past each run. */
  readonly #ends: number[] = [];
  #first = 0;
  /** Bytes given to the decoder so far (its stream offset of the next byte). */
  #delivered = 0;
  /** Stream offset up to which the decoder has consumed its bytes (as events say). */
  #consumed = 0;
  #opaque = false;

  /**
   * The decoder keeps no more bytes of this direction: it drops them as they come (after TLS starts, after
   * bytes that are not NBD, after the client's NBD_CMD_DISC).
   */
  opaque(): void {
    this.#opaque = true;
    this.#seqs.length = 0;
    this.#ends.length = 0;
    this.#first = 0;
  }

  add(seq: number, length: number): void {
    if (this.#opaque) return;
    this.#delivered += length;
    const last = this.#seqs.length - 1;
    if (last >= this.#first && this.#seqs[last] === seq) this.#ends[last] = this.#delivered;
    else {
      this.#seqs.push(seq);
      this.#ends.push(this.#delivered);
    }
  }

  consumed(end: number): void {
    if (end > this.#consumed) this.#consumed = end;
  }

  /** The oldest chunk a buffered byte may be a view of, or Infinity when nothing is buffered. */
  oldest(): number {
    const seqs = this.#seqs;
    const ends = this.#ends;
    let i = this.#first;
    while (i < seqs.length && ends[i]! <= this.#consumed) i++;
    if (i === seqs.length) {
      seqs.length = 0;
      ends.length = 0;
      this.#first = 0;
      return Infinity;
    }
    if (i > 64 && i * 2 > seqs.length) {
      seqs.splice(0, i);
      ends.splice(0, i);
      i = 0;
    }
    this.#first = i;
    return seqs[i]!;
  }
}

interface Live {
  readonly kind: "nbd";
  readonly number: number;
  readonly decoder: ConversationDecoder;
  /** The reassembler's client is the NBD server. */
  readonly swap: boolean;
  closed: Set<Direction>;
  /** What each decoder direction may still hold views of. */
  readonly retained: { readonly c2s: Retained; readonly s2c: Retained };
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
 * decoder per NBD connection. Push the file in chunks of any size, then call {@link end}.
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

  /**
   * @param sink receives events and trace findings
   * @param options the server port
   */
  constructor(sink: DissectSink, options?: CaptureDissectorOptions) {
    this.#port = options?.port ?? NBD_PORT;
    this.#sink = sink;
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
      onData: (connection, direction, _offset, bytes) => this.#data(connection, direction, bytes),
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

  /** How many chunks were pushed so far: the sequence number of the last one (see {@link oldestRetainedChunk}). */
  get pushes(): number {
    return this.#seq;
  }

  /** Bytes at the end of the last {@link pushComplete} chunk that were not consumed. */
  get unconsumed(): number {
    return this.#reader.unconsumed;
  }

  #packet(packet: CapturePacket): void {
    // The reader's findings so far (about this record or earlier ones) before this packet's own events: in
    // capture order, whatever the chunks the file was read in.
    this.#readerFindings();
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
      const a = st.retained.c2s.oldest();
      const b = st.retained.s2c.oldest();
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
    for (const f of this.#reader.takeFindings()) this.#sink.traceFinding(f, undefined);
  }

  #emit(events: ConversationEvent[], live: Live): void {
    const r = live.retained;
    const sink = this.#sink;
    for (let i = 0; i < events.length; i++) {
      const e = events[i]!;
      const dir = e.direction === "c2s" ? r.c2s : r.s2c;
      if (e.event === "frame") {
        dir.consumed(e.frameOffset + e.frameLength);
        if (e.frame.type === "request" && e.frame.command === DISC) dir.opaque();
      } else {
        dir.consumed(e.streamOffset + e.length);
        if (e.notice !== "truncated") dir.opaque();
      }
      sink.event(e);
    }
  }

  #tcpEvent(ev: TcpEvent): void {
    switch (ev.type) {
      case "open":
        this.#open(ev.connection);
        return;
      case "data":
        this.#data(ev.connection, ev.direction, ev.bytes);
        return;
      case "gap": {
        const st = this.#conns.get(ev.connection);
        if (st === undefined) return;
        if (st.kind === "nbd") {
          this.#emit(st.decoder.gap(st.swap ? flip(ev.direction) : ev.direction, ev.length), st);
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

  #data(connection: number, direction: Direction, bytes: Uint8Array): void {
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
      st.retained[dir].add(this.#seq, bytes.length);
      this.#emit(st.decoder.push(dir, bytes), st);
      return;
    }
    this.#pendingOp(connection, st, { dir: direction, bytes: bytes.slice() });
  }

  #open(info: TcpConnection): void {
    const port = this.#port;
    if (info.server.port === port) this.#start(info.id, false, undefined, []);
    else if (info.client.port === port) this.#start(info.id, true, undefined, []);
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

  #start(id: number, swap: boolean, state: Partial<NegotiatedState> | undefined, ops: Op[]): Live {
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
    };
    this.#conns.set(id, live);
    this.#lastId = -1;
    for (const op of ops) {
      const dir = swap ? flip(op.dir) : op.dir;
      if ("bytes" in op) {
        // Copies (see #pendingOp): they hold no chunk, but the decoder's stream offsets count them.
        live.retained[dir].add(0, op.bytes.length);
        this.#emit(decoder.push(dir, op.bytes), live);
      } else this.#emit(decoder.gap(dir, op.gap), live);
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
      const live = this.#start(id, swap, stateFromClientHead(clientHead), st.ops);
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
    this.#conns.delete(id);
    this.#lastId = -1;
  }
}

// Private: the machinery of the stream and conversation decoders. The public classes in stream.ts and
// conversation.ts wrap these.
import type { Negotiated } from "./_flags.ts";
import { toHex, u64 } from "./_bytes.ts";
import { ByteQueue } from "./_queue.ts";
import { checkLimit, NO_FINDINGS } from "./_report.ts";
import { plainHeader, plainRequest } from "./_request_plain.ts";
import {
  ClientFlag,
  Command,
  CommandFlag,
  HandshakeFlag,
  Info,
  Magic,
  Option,
  OptionReply,
} from "./constants.ts";
import { type Finding, isNbdDecodeError, NbdDecodeError, type NbdDecodeErrorCode } from "./errors.ts";
import type { ConversationFrame, Direction, Frame, StreamEvent, StreamNotice } from "./events.ts";
import {
  decodeClientFlags,
  decodeExportNameReply,
  decodeGreeting,
  type ExportNameReplyOptions,
} from "./handshake.ts";
import { decodeOptionRequest, type OptionRequest } from "./option.ts";
import { decodeOptionReply, type OptionReplyDecodeOptions, type OptionReplyFrame } from "./option_reply.ts";
import { decodeRequest, decodeRequestHeader, type Request, type RequestDecodeOptions } from "./request.ts";
import {
  decodeReplyChunk,
  decodeSimpleReply,
  type ReplyChunk,
  type ReplyChunkDecodeOptions,
  type SimpleReply,
  type SimpleReplyDecodeOptions,
} from "./reply.ts";
import { throwWithEvents } from "./_stream_error.ts";
import type { NegotiatedState, StreamOptions, StreamPhase } from "./_stream_types.ts";
import {
  type Decoded,
  DEFAULT_MAX_BUFFERED_BYTES,
  DEFAULT_MAX_PAYLOAD_LENGTH,
  MAX_STRING_LENGTH,
} from "./types.ts";

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
/** Answered request keys are deleted once there are this many (and they are half the table or more). */
const SWEEP_EMPTY = 256;

/**
 * What one request or option waiting for its replies is charged against `maxBufferedBytes` in a conversation
 * (documented there), on top of the bytes of its data: a fixed estimate of what the tables hold for it (a
 * Request object with its bigints and its places in the tables come to about 200 bytes in V8). A function of
 * the frame alone, so that what is dropped does not depend on the split.
 */
export const HELD_ENTRY_CHARGE = 256;

/**
 * What a request waiting for replies is charged: {@link HELD_ENTRY_CHARGE} and its payload's bytes (its
 * length field, which framed the payload), whether `data` holds them or, with `payloadViews`, the event's
 * views did (then `data` is empty or not depending on the split; the charge must not).
 */
function requestCharge(r: Request): number {
  return r.data === undefined && r.blockStatus === undefined
    ? HELD_ENTRY_CHARGE
    : HELD_ENTRY_CHARGE + Number(r.length);
}

/** The key of a request's cookie in the request table ({@link cookieKeyOf}). */
function keyOf(r: Request): number | bigint {
  return r.cookie <= MAX_SAFE ? Number(r.cookie) : r.cookie;
}

/**
 * The key of a cookie in the request table: a number when it fits in 53 bits (real clients count from 1),
 * else the bigint, so that matching a reply to its request allocates nothing.
 */
export function cookieKeyOf(hi: number, lo: number): number | bigint {
  return hi <= 0x1f_ffff ? hi * 0x1_0000_0000 + lo : (BigInt(hi) << 32n) | BigInt(lo);
}

/** Mutable state shared by the two directions of one connection. */
export class SessionState {
  style: "unknown" | "oldstyle" | "newstyle" = "unknown";
  handshakeFlags: number | undefined = undefined;
  clientFlags: number | undefined = undefined;
  structuredReplies = false;
  extendedHeaders = false;
  contexts: Map<number, string> = new Map();
  exportSize: bigint | undefined = undefined;
  transmissionFlags: number | undefined = undefined;
  /**
   * Options sent and not yet finally answered (FIFO; normally at most one). Read it; change it only through
   * {@link addOption} and {@link shiftOption}, which keep the charges.
   */
  readonly options: OptionRequest[] = [];
  /** What each of {@link options} is charged ({@link HELD_ENTRY_CHARGE} and its frame's bytes). */
  readonly #optionCharges: number[] = [];
  /**
   * Requests awaiting replies, by cookie key: one request, or several in FIFO order (cookies may be reused),
   * or `null` once answered. Answered keys are deleted in batches ({@link SWEEP_EMPTY}): deleting each one
   * as its reply arrives makes the map reallocate its table over and over.
   */
  readonly requests: Map<number | bigint, Request | Request[] | null> = new Map();
  /** How many keys of {@link requests} are `null`. */
  #answered = 0;
  /**
   * Most bytes the held requests and options may be charged (`maxBufferedBytes`, set by the conversation
   * decoder; unbounded for what a program notes itself). Only {@link makeRoom} applies it.
   */
  maxHeldBytes: number = Infinity;
  /** What the held requests and options are charged in all (counted only when {@link maxHeldBytes} is set). */
  #heldBytes = 0;
  /** How many requests are held (counted only when {@link maxHeldBytes} is set). */
  #held = 0;
  /**
   * When {@link maxHeldBytes} is set: the requests in the order they were added, from {@link #orderHead} on.
   * The oldest held request is the first of them still held; answered ones are skipped, and cut away in bulk
   * ({@link #compactOrder}).
   */
  #order: Request[] = [];
  #orderHead = 0;
  /** Contexts proposed by the SET_META_CONTEXT in progress. */
  pendingContexts: Map<number, string> | undefined = undefined;
  /** The client sent STARTTLS and the server has not answered yet. */
  tlsRequested = false;
  /** The server acknowledged STARTTLS. */
  tlsStarted = false;
  /** The client side has begun a request: it left the handshake (set by the client side's decoder). */
  clientSentRequest = false;
  /**
   * The server side decoded the newstyle greeting: the option haggling is seen from its start, so what it
   * did not negotiate was not negotiated (a decoder started in the middle cannot know).
   */
  sawGreeting = false;

  constructor(init?: Partial<NegotiatedState>) {
    if (init === undefined) return;
    if (init.style !== undefined) this.style = init.style;
    if (init.handshakeFlags !== undefined) this.handshakeFlags = init.handshakeFlags;
    if (init.clientFlags !== undefined) this.clientFlags = init.clientFlags;
    if (init.structuredReplies !== undefined) this.structuredReplies = init.structuredReplies;
    if (init.extendedHeaders !== undefined) this.extendedHeaders = init.extendedHeaders;
    if (init.contexts !== undefined) this.contexts = new Map(init.contexts);
    if (init.exportSize !== undefined) this.exportSize = init.exportSize;
    if (init.transmissionFlags !== undefined) this.transmissionFlags = init.transmissionFlags;
  }

  /** Both sides agreed to leave out the 124 zero bytes after the EXPORT_NAME reply. */
  noZeroes(): boolean | undefined {
    if (this.handshakeFlags !== undefined && (this.handshakeFlags & HandshakeFlag.NO_ZEROES) === 0) {
      return false;
    }
    if (this.clientFlags === undefined) return undefined;
    return (this.clientFlags & ClientFlag.C_NO_ZEROES) !== 0 &&
      (this.handshakeFlags === undefined || (this.handshakeFlags & HandshakeFlag.NO_ZEROES) !== 0);
  }

  /** What the held requests and options are charged in all, when bounded ({@link maxHeldBytes}). */
  get heldBytes(): number {
    return this.#heldBytes;
  }

  /** Records an option awaiting its replies, charged `charge` (its frame's bytes and the fixed charge). */
  addOption(option: OptionRequest, charge: number): void {
    this.options.push(option);
    this.#optionCharges.push(charge);
    this.#heldBytes += charge;
  }

  /** Forgets the oldest option awaiting replies (its final reply came) and returns it. */
  shiftOption(): OptionRequest | undefined {
    const o = this.options.shift();
    if (o !== undefined) this.#heldBytes -= this.#optionCharges.shift()!;
    return o;
  }

  /**
   * Makes room under {@link maxHeldBytes} for one more request or option charged `charge`: drops the
   * oldest held entries (the options first: a client sends them before its first request) until it fits,
   * or nothing is held (the newest one is always kept: its own bytes are within the buffer limit). Returns
   * how many it dropped.
   */
  makeRoom(charge: number): number {
    let dropped = 0;
    while (this.#heldBytes > 0 && this.#heldBytes + charge > this.maxHeldBytes) {
      if (this.options.length > 0) this.shiftOption();
      else if (!this.#dropOldestRequest()) break;
      dropped++;
    }
    return dropped;
  }

  #dropOldestRequest(): boolean {
    const order = this.#order;
    while (this.#orderHead < order.length) {
      const r = order[this.#orderHead]!;
      const key = keyOf(r);
      const had = this.requests.get(key);
      // Held requests of one key leave oldest first, so the oldest held one of all is the first of its key.
      // finishRequest moves the head past it.
      if (had === r || (Array.isArray(had) && had[0] === r)) {
        this.finishRequest(key);
        return true;
      }
      this.#orderHead++;
    }
    return false;
  }

  /** Records a request awaiting replies; `key` is its {@link cookieKeyOf} when the caller has it at hand. */
  addRequest(r: Request, key: number | bigint = keyOf(r)): void {
    const m = this.requests;
    if (this.maxHeldBytes !== Infinity) {
      this.#heldBytes += requestCharge(r);
      this.#held++;
      this.#order.push(r);
    }
    const had = m.get(key);
    if (had === undefined) m.set(key, r);
    else if (had === null) {
      m.set(key, r);
      this.#answered--;
    } else if (Array.isArray(had)) had.push(r);
    else m.set(key, [had, r]);
  }

  /** The oldest outstanding request with this cookie key ({@link cookieKeyOf}). */
  findRequest(key: number | bigint): Request | undefined {
    const had = this.requests.get(key);
    if (had === undefined || had === null) return undefined;
    return Array.isArray(had) ? had[0] : had;
  }

  /** Forgets the oldest outstanding request with this cookie key (its reply is complete, or it is dropped). */
  finishRequest(key: number | bigint): void {
    const m = this.requests;
    const had = m.get(key);
    if (had === undefined || had === null) return;
    if (this.maxHeldBytes !== Infinity) this.#leaveOrder(Array.isArray(had) ? had[0]! : had);
    if (Array.isArray(had)) {
      had.shift();
      if (had.length === 1) m.set(key, had[0]!);
      return;
    }
    m.set(key, null);
    if (++this.#answered >= SWEEP_EMPTY && this.#answered * 2 >= m.size) {
      // forEach rather than for-of with destructuring: no iterator result and no [k, v] array per entry,
      // which unoptimised code (the first thousands of replies) pays for in full.
      m.forEach((v, k) => {
        if (v === null) m.delete(k);
      });
      this.#answered = 0;
    }
  }

  /** Bookkeeping of {@link finishRequest} when bounded: `r`, the oldest held request of its key, leaves. */
  #leaveOrder(r: Request): void {
    this.#heldBytes -= requestCharge(r);
    if (--this.#held === 0) {
      // Nothing held any more (the usual case between bursts): every entry is stale.
      this.#order.length = 0;
      this.#orderHead = 0;
    } else if (this.#order[this.#orderHead] === r) {
      // Replies in the order of their requests (the usual case): the oldest leaves, nothing to look up.
      // The entries before the head still reference their requests: cut them away in bulk.
      if (++this.#orderHead >= 1024 && this.#orderHead * 2 >= this.#order.length) {
        this.#order = this.#order.slice(this.#orderHead);
        this.#orderHead = 0;
      }
    } else if (this.#order.length - this.#orderHead > 2 * this.#held + 64) {
      // Entries of requests answered out of order: cut away once they are most of the list (amortised O(1)
      // a request).
      this.#compactOrder();
    }
  }

  /**
   * Keeps only the entries of {@link #order} still held. A key with one request held keeps the entry of
   * that request. Of the requests added with a reused key, the held ones are the newest (they leave oldest
   * first): as many as the table holds for that key, counted from the end. Called before the request being
   * finished leaves, so it may stay as one stale entry.
   */
  #compactOrder(): void {
    const order = this.#order;
    const m = this.requests;
    let left: Map<number | bigint, number> | undefined;
    const kept: Request[] = [];
    for (let i = order.length - 1; i >= this.#orderHead; i--) {
      const r = order[i]!;
      const k = keyOf(r);
      const had = m.get(k);
      if (had === r) kept.push(r);
      else if (Array.isArray(had)) {
        left ??= new Map();
        const n = left.get(k) ?? had.length;
        if (n > 0) kept.push(r);
        left.set(k, n - 1);
      }
    }
    this.#order = kept.reverse();
    this.#orderHead = 0;
  }

  view(phase: StreamPhase): NegotiatedState {
    return {
      phase,
      style: this.style,
      handshakeFlags: this.handshakeFlags,
      clientFlags: this.clientFlags,
      structuredReplies: this.structuredReplies,
      extendedHeaders: this.extendedHeaders,
      contexts: this.contexts,
      exportSize: this.exportSize,
      transmissionFlags: this.transmissionFlags,
    };
  }
}

/** Internal result of one decoding step. */
export type Step =
  | { readonly step: "event"; readonly event: StreamEvent }
  /** More bytes of this direction are needed. */
  | { readonly step: "need-bytes" }
  /** The other direction must be decoded further first (the s2c decoder waits for c2s frames). */
  | { readonly step: "blocked" };

/** A frame event while it is being built (the public type is readonly). */
type Building = {
  -readonly [K in keyof ConversationFrame]: ConversationFrame[K];
};

/** A frame decoder as `take` runs it: at `options.offset` of `bytes`. */
type FrameDecoder = (bytes: Uint8Array, options: AnyOptions) => Decoded<Frame>;

/** Decode options reused for every frame of a direction (only `offset` and the context fields change). */
interface ReusedOptions {
  offset: number;
  strict: boolean;
  maxStringLength: number;
  maxPayloadLength: number;
  extendedHeaders: boolean | undefined;
  /** The transmission flags negotiated, once known: requests are checked against them. */
  transmissionFlags: number | undefined;
  /** What the option haggling negotiated, when seen from its start: option replies' flags are checked. */
  negotiated: Negotiated | undefined;
  pendingOption: number | undefined;
  readLength: number | undefined;
  noZeroes: boolean;
}

/** What the frame decoders accept, all at once. */
type AnyOptions =
  & RequestDecodeOptions
  & SimpleReplyDecodeOptions
  & ReplyChunkDecodeOptions
  & OptionReplyDecodeOptions
  & ExportNameReplyOptions;

const NEED_BYTES: Step = Object.freeze({ step: "need-bytes" });
const BLOCKED: Step = Object.freeze({ step: "blocked" });
const EMPTY = new Uint8Array(0);

interface Resolved {
  readonly strict: boolean;
  readonly maxStringLength: number;
  readonly maxPayloadLength: number;
  readonly maxBufferedBytes: number;
  readonly payloadViews: boolean;
}

function resolve(o: StreamOptions | undefined): Resolved {
  return {
    strict: o?.strict ?? false,
    maxStringLength: o?.maxStringLength ?? MAX_STRING_LENGTH,
    maxPayloadLength: o?.maxPayloadLength ?? DEFAULT_MAX_PAYLOAD_LENGTH,
    maxBufferedBytes: o?.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES,
    payloadViews: o?.payloadViews ?? false,
  };
}

const REQUEST_MAGIC_HI = Magic.REQUEST;
const IHAVEOPT_HI = Number(Magic.IHAVEOPT >> 32n);
const OPTION_REPLY_HI = Number(Magic.OPTION_REPLY >> 32n);

/** Shared machinery of both directions. */
export abstract class DirectionDecoder {
  /** The bytes received and not yet decoded (read by the conversation decoder too, without a call). */
  readonly queue: ByteQueue = new ByteQueue();
  protected readonly o: Resolved;
  protected readonly session: SessionState;
  protected phase: StreamPhase = "start";
  protected ended = false;
  abstract readonly direction: Direction;
  /** Bytes the frame in progress needs in all (from the start of the queue), as last computed. */
  protected target = 1;

  /** Records how many bytes the next frame needs in all, and says "need more bytes". */
  protected needBytes(total: number): Step {
    this.target = total;
    return NEED_BYTES;
  }

  /**
   * "Need more bytes" before any parsing: nothing buffered, an opaque stream, or a frame already sized by
   * its header whose bytes have not all arrived. `undefined` when a step can go on.
   */
  protected waiting(): Step | undefined {
    const q = this.queue;
    if (q.length === 0 || this.phase === "tls" || this.phase === "closed") {
      return this.needBytes(q.length + 1);
    }
    // The frame in progress was sized already (transmission only, where nothing but its own bytes sizes it).
    if (this.need > 0) {
      if (q.length < this.need) return this.needBytes(this.need);
      this.need = 0;
    }
    return undefined;
  }

  /**
   * Whether the next step would only say "need more bytes" without looking at anything: a transmission
   * frame sized by its header has not all arrived. New bytes of this direction that leave it so cannot
   * change what either direction decodes.
   */
  incomplete(): boolean {
    return this.need > this.queue.length && this.phase === "transmission";
  }

  /** At least how many more bytes must arrive before the next frame can be decoded (0 once opaque). */
  get needed(): number {
    if (this.phase === "tls" || this.phase === "closed") return 0;
    return Math.max(1, this.target - this.queue.length);
  }

  /** Put on every event when set (by the conversation decoder). */
  connection: number | undefined = undefined;
  protected readonly opts: ReusedOptions;
  /**
   * Bytes the transmission frame at the front needs, once its header has sized it; 0 when unknown. Saves
   * parsing the header again for every packet of a large frame.
   */
  protected need = 0;
  /** The step result of every event, reused: callers read it before the next step. */
  readonly #eventStep: { step: "event"; event: StreamEvent } = {
    step: "event",
    event: undefined as unknown as StreamEvent,
  };

  constructor(options: StreamOptions | undefined, session: SessionState | undefined) {
    this.o = resolve(options);
    this.opts = {
      offset: 0,
      strict: this.o.strict,
      maxStringLength: this.o.maxStringLength,
      maxPayloadLength: this.o.maxPayloadLength,
      extendedHeaders: undefined,
      transmissionFlags: undefined,
      negotiated: undefined,
      pendingOption: undefined,
      readLength: undefined,
      noZeroes: false,
    };
    this.session = session ?? new SessionState(options?.state);
    const p = options?.state?.phase;
    if (p !== undefined) this.phase = p;
    else if (options?.state?.style === "oldstyle") this.phase = "start";
  }

  /** What this decoder knows about the connection. */
  get state(): NegotiatedState {
    return this.session.view(this.phase);
  }

  /** Bytes received and not yet decoded. */
  get buffered(): number {
    return this.queue.length;
  }

  /** Stream offset of the next byte to decode. */
  get position(): number {
    return this.queue.position;
  }

  /** Adds bytes without decoding them (the conversation decides when to decode). */
  append(chunk: Uint8Array): void {
    if (!(chunk instanceof Uint8Array)) throw new TypeError("Cannot push: chunk is not a Uint8Array");
    if ((this.phase === "tls" || this.phase === "closed") && !this.keepOpaque()) {
      // Opaque or abandoned: count the bytes, keep none of them.
      this.queue.push(chunk);
      this.queue.clear();
      return;
    }
    this.queue.push(chunk);
  }

  /** Whether opaque bytes are still counted into a pending notice. */
  protected keepOpaque(): boolean {
    return false;
  }

  /** The step result for an event (one object per decoder, reused: read it before the next step). */
  protected emit(event: StreamEvent): Step {
    this.#eventStep.event = event;
    return this.#eventStep;
  }

  /** Decodes one frame, if it can. `force`: decode even when the other direction has not caught up. */
  abstract step(force: boolean): Step;

  /**
   * Decodes every complete frame buffered so far. A violation thrown in strict mode carries the events
   * decoded before it (`NbdStreamError`).
   */
  protected drain(force: boolean): StreamEvent[] {
    const out: StreamEvent[] = [];
    try {
      for (;;) {
        const s = this.step(force);
        if (s.step !== "event") break;
        out.push(s.event);
      }
    } catch (e) {
      throwWithEvents(e, out);
    }
    return out;
  }

  /**
   * Gives up on this direction after a capture gap: what is buffered and everything after cannot be framed.
   */
  abandon(length: number): StreamEvent | undefined {
    if (this.phase === "closed" || this.phase === "tls") return undefined;
    const at = this.queue.position;
    const n = this.queue.clear();
    this.phase = "closed";
    const f = this.finding(
      "truncated",
      at + n,
      "capture-gap",
      `${length} bytes of the ${this.direction} stream are missing from the capture at offset ${
        at + n
      }; the rest of this direction cannot be framed`,
    );
    return this.notice("undecodable", at, n, [f]);
  }

  /** Marks the end of the stream: an incomplete frame becomes a `truncated` notice. */
  finish(): StreamEvent[] {
    this.ended = true;
    const out = this.drain(true);
    if (this.queue.length > 0 && this.phase !== "tls" && this.phase !== "closed") {
      const at = this.queue.position;
      const n = this.queue.clear();
      const f: Finding = {
        code: "truncated",
        offset: at,
        rule: "stream-truncated",
        message:
          `the ${this.direction} stream ends inside a frame: ${n} bytes at offset ${at} are not a whole frame`,
      };
      if (this.o.strict) throwWithEvents(new NbdDecodeError(f.code, f.offset, f.rule, f.message), out);
      out.push(this.notice("truncated", at, n, [f]));
    }
    return out;
  }

  protected notice(
    kind: StreamNotice["notice"],
    at: number,
    length: number,
    findings: readonly Finding[],
  ): StreamNotice {
    const n = {
      event: "notice",
      notice: kind,
      direction: this.direction,
      streamOffset: at,
      length,
      findings,
    };
    if (this.connection !== undefined) (n as { connection?: number }).connection = this.connection;
    return n as StreamNotice;
  }

  /** A finding of the stream level (not of one frame's bytes), thrown in strict mode. */
  protected finding(code: NbdDecodeErrorCode, offset: number, rule: string, message: string): Finding {
    if (this.o.strict) throw this.streamError = new NbdDecodeError(code, offset, rule, message);
    return { code, offset, rule, message };
  }

  /**
   * Where the bytes a frame decoder is decoding start, as an index of the array it was given: the front
   * chunk's read position while {@link take} decodes in place, else 0 (a copy of the frame, or an error
   * thrown here with an offset counted from the first buffered byte).
   */
  protected errorBase = 0;
  /** The last error {@link finding} or {@link undecodable} threw: its offset counts from the stream start. */
  protected streamError: NbdDecodeError | undefined = undefined;

  /**
   * Skips the rest of this direction after bytes that cannot be decoded. The error's offset is moved to the
   * stream (it counts from the array the frame decoder saw), so that it does not depend on the split.
   */
  protected undecodable(e: unknown): Step {
    if (!isNbdDecodeError(e)) throw e;
    const at = this.queue.position;
    const offset = e === this.streamError ? e.offset : at + e.offset - this.errorBase;
    this.errorBase = 0;
    if (this.o.strict) {
      // Rethrown through an enclosing step (a phase change steps again): already at its stream offset.
      throw this.streamError = e.offset === offset
        ? e
        : new NbdDecodeError(e.code, offset, e.rule, e.message);
    }
    this.streamError = undefined;
    this.queue.clear();
    this.phase = "closed";
    const f: Finding = { code: e.code, offset, rule: e.rule, message: e.message };
    // Length 0: what was buffered when the error showed depends on the split; the rest is skipped.
    return this.emit(this.notice("undecodable", at, 0, [f]));
  }

  /** Refuses a frame longer than the buffer limit before buffering it. */
  protected checkBuffer(total: number, what: string): void {
    if (total > this.o.maxBufferedBytes || total < 0) {
      throw new NbdDecodeError(
        "limit-exceeded",
        0,
        "max-buffered-bytes",
        `Cannot decode ${what}: the frame needs ${
          total < 0 ? "more than 2^53" : total
        } bytes, above the limit of ${this.o.maxBufferedBytes} buffered bytes (option maxBufferedBytes)`,
      );
    }
  }

  protected u32At(i: number): number {
    return this.queue.u32At(i);
  }

  /**
   * Decodes a frame of `total` bytes at the front of the queue and consumes it. The frame is decoded in
   * place when it lies in one chunk, else from a copy of just its bytes.
   */
  protected take(total: number, decode: FrameDecoder): Building {
    const q = this.queue;
    const at = q.position;
    const o = this.opts as unknown as AnyOptions;
    let r: Decoded<Frame>;
    let base: number;
    if (q.contiguous() >= total) {
      base = q.frontStart();
      this.opts.offset = base;
      this.errorBase = base;
      r = decode(q.frontChunk(), o);
      this.errorBase = 0;
    } else {
      base = 0;
      this.opts.offset = 0;
      r = decode(q.peek(total), o);
    }
    if (!r.done) {
      // The framing said `total` bytes make the frame; the frame decoder wants more: a length field that
      // disagrees with itself. Treat as undecodable.
      throw new NbdDecodeError(
        "bad-length",
        0,
        "frame-length",
        "the frame is longer than its length fields say",
      );
    }
    q.skip(r.byteLength);
    return this.frameEvent(at, r.byteLength, r.frame, rebase(r.findings, base, at), undefined);
  }

  protected frameEvent(
    at: number,
    length: number,
    frame: Frame,
    findings: readonly Finding[],
    payload: readonly Uint8Array[] | undefined,
  ): Building {
    const e = {
      event: "frame",
      direction: this.direction,
      frameOffset: at,
      frameLength: length,
      frame,
      findings,
    } as Building;
    if (payload !== undefined) e.payload = payload;
    if (this.connection !== undefined) e.connection = this.connection;
    return e;
  }

  /** Options for a frame decoder called outside `take`, at offset 0 of `bytes`. */
  protected optionsAt0(): AnyOptions {
    this.opts.offset = 0;
    return this.opts as unknown as AnyOptions;
  }
}

/** Moves finding offsets from the decoded array's indexes to stream offsets. */
function rebase(findings: readonly Finding[], base: number, at: number): readonly Finding[] {
  if (findings.length === 0) return NO_FINDINGS;
  return findings.map((f) => ({ ...f, offset: at + (f.offset - base) }));
}

function isReplyMagic(first: number): boolean {
  return first === Magic.SIMPLE_REPLY || first === Magic.STRUCTURED_REPLY || first === Magic.EXTENDED_REPLY;
}

function merge(a: readonly Finding[], b: readonly Finding[]): readonly Finding[] {
  if (b.length === 0) return a;
  if (a.length === 0) return b;
  return [...a, ...b];
}

export class ClientDecoderImpl extends DirectionDecoder {
  /** Always `"c2s"`. */
  readonly direction: Direction = "c2s";

  /**
   * @param options limits, strictness, payload views and what is already known
   * @param session shared state (the conversation decoder passes one shared by both directions)
   */
  constructor(options?: StreamOptions, session?: SessionState) {
    super(options, session);
    if (options?.state?.phase === undefined && options?.state?.style === "oldstyle") {
      this.phase = "transmission";
    }
  }

  push(chunk: Uint8Array): StreamEvent[] {
    this.append(chunk);
    return this.drain(false);
  }

  end(): StreamEvent[] {
    return this.finish();
  }

  /**
   * Whether options and requests are recorded for the server side to match its replies with (a conversation;
   * a lone client stream has no replies to match, so it holds none of them).
   */
  protected tracksReplies = false;

  /**
   * Records this side's options and requests for the server side's replies (the conversation decoder calls
   * it), within `maxBufferedBytes` (see {@link hold}).
   */
  trackReplies(): void {
    this.tracksReplies = true;
    this.session.maxHeldBytes = this.o.maxBufferedBytes;
  }

  /**
   * Makes room among the requests and options waiting for replies for `ev`'s frame, charged `charge`: the
   * oldest are dropped until the charges fit in `maxBufferedBytes`, and `ev` then carries an
   * `outstanding-limit` finding (strict mode throws it). Which ones are dropped depends only on the frames
   * each side decoded before, not on the split. Returns `charge`.
   */
  private hold(ev: Building, charge: number, what: string): number {
    const dropped = this.session.makeRoom(charge);
    if (dropped === 0) return charge;
    const f = this.finding(
      "limit-exceeded",
      ev.frameOffset,
      "outstanding-limit",
      `the ${what} at offset ${ev.frameOffset} would make the requests and options waiting for replies hold ` +
        `more than the limit of ${this.o.maxBufferedBytes} bytes (option maxBufferedBytes; each is charged ` +
        `${HELD_ENTRY_CHARGE} bytes and its payload): the oldest ${
          dropped === 1 ? "one is" : `${dropped} are`
        } dropped, and replies to them will match nothing`,
    );
    ev.findings = merge(ev.findings, [f]);
    return charge;
  }

  step(_force: boolean): Step {
    const q = this.queue;
    const waiting = this.waiting();
    if (waiting !== undefined) return waiting;
    try {
      if (this.phase === "start") {
        if (q.length < 4) return this.needBytes(4);
        const first = this.u32At(0);
        if (first === REQUEST_MAGIC_HI || first === Magic.EXTENDED_REQUEST) {
          // No client flags: an oldstyle connection.
          if (this.session.style === "unknown") this.session.style = "oldstyle";
          this.phase = "transmission";
          this.session.clientSentRequest = true;
          return this.step(_force);
        }
        const ev = this.take(4, decodeClientFlags);
        this.session.clientFlags = (ev.frame as { flags: number }).flags;
        if (this.session.style === "unknown") this.session.style = "newstyle";
        this.phase = "options";
        return this.emit(ev);
      }
      if (this.phase === "options") {
        if (q.length < 4) return this.needBytes(4);
        const first = this.u32At(0);
        if (first !== IHAVEOPT_HI) {
          if (this.session.tlsRequested || this.session.tlsStarted) {
            this.phase = "tls";
            const at = q.position;
            q.clear();
            return this.emit(this.notice("tls", at, 0, NO_FINDINGS));
          }
          if (first === REQUEST_MAGIC_HI || first === Magic.EXTENDED_REQUEST) {
            // The handshake ended (GO acknowledged): transmission.
            this.phase = "transmission";
            this.session.clientSentRequest = true;
            return this.step(_force);
          }
        }
        if (q.length < 16) return this.needBytes(16);
        if (u64(q.peek(8), 0) !== Magic.IHAVEOPT) {
          throw new NbdDecodeError(
            "bad-magic",
            0,
            "magic",
            `Cannot decode option request: magic is 0x${
              toHex(q.peek(8))
            }, expected 0x49484156454f5054 (IHAVEOPT)`,
          );
        }
        const len = this.u32At(12);
        checkLimit(len, this.o.maxPayloadLength, 12, "option request");
        const total = 16 + len;
        this.checkBuffer(total, "option request");
        if (q.length < total) return this.needBytes(total);
        const ev = this.take(total, decodeOptionRequest);
        const opt = ev.frame as OptionRequest;
        if (this.tracksReplies) {
          this.session.addOption(opt, this.hold(ev, HELD_ENTRY_CHARGE + total, "option"));
        }
        if (opt.option === Option.EXPORT_NAME) this.phase = "transmission";
        else if (opt.option === Option.STARTTLS) this.session.tlsRequested = true;
        else if (opt.option === Option.ABORT) this.phase = "closed";
        return this.emit(ev);
      }
      // transmission
      if (q.length < 4) return this.needBytes(4);
      const magic = q.u32At(0);
      const extended = magic === Magic.EXTENDED_REQUEST;
      const headerLength = extended ? 32 : 28;
      if (magic !== REQUEST_MAGIC_HI && !extended) {
        throw new NbdDecodeError(
          "bad-magic",
          0,
          "magic",
          `Cannot decode request: magic is 0x${magic.toString(16).padStart(8, "0")}, expected 0x25609513 ` +
            `(compact) or 0x21e41c71 (extended)`,
        );
      }
      if (q.length < headerLength) return this.needBytes(headerLength);
      // The header's fields through one DataView (over the front chunk, or a copy of a header that spans).
      const dv = q.view(headerLength);
      const h = q.viewBase;
      // Frame the request from its header: WRITE (and, extended, PAYLOAD_LEN) carries a payload of the
      // length field's size; qemu 10 sends extended WRITE without PAYLOAD_LEN, so WRITE always does.
      const flags = dv.getUint16(h + 4);
      const command = dv.getUint16(h + 6);
      let payloadLength = 0;
      if (command === Command.WRITE || (extended && (flags & CommandFlag.PAYLOAD_LEN) !== 0)) {
        payloadLength = extended
          ? dv.getUint32(h + 24) * 0x1_0000_0000 + dv.getUint32(h + 28)
          : dv.getUint32(h + 24);
        checkLimit(payloadLength, this.o.maxPayloadLength, 24, "request payload");
      }
      const total = headerLength + payloadLength;
      const isData = command === Command.WRITE;
      // Views of the pushed chunks are held as much as copies: the limit holds with payloadViews too.
      this.checkBuffer(total, "request");
      if (q.length < total) {
        this.need = total;
        return this.needBytes(total);
      }
      // The cookie as the request table's key, from the header's two halves (no bigint to convert).
      const key = cookieKeyOf(dv.getUint32(h + 8), dv.getUint32(h + 12));
      const o = this.opts;
      o.extendedHeaders = this.session.style === "newstyle" || this.session.extendedHeaders
        ? this.session.extendedHeaders
        : undefined;
      // Commands and flags the server did not advertise are findings (rules command-unadvertised and
      // command-flag-unadvertised), once the server's flags are known (its export info or greeting).
      o.transmissionFlags = this.session.transmissionFlags;
      let ev: Building;
      const contiguous = q.contiguous();
      if (
        plainHeader(extended, flags, command, o.extendedHeaders, o.transmissionFlags) &&
        (contiguous >= total || (isData && this.o.payloadViews))
      ) {
        // No header rule can find anything: the frame straight from the fields framed above, as decodeRequest
        // would build it (plainRequest), without decoding the header a second time.
        const at = q.position;
        const cookie = dv.getBigUint64(h + 8);
        const offset = dv.getBigUint64(h + 16);
        const length = extended ? dv.getBigUint64(h + 24) : BigInt(dv.getUint32(h + 24));
        let views: Uint8Array[] | undefined;
        let data: Uint8Array | undefined;
        if (!isData) q.skip(total);
        else if (contiguous >= total) {
          data = q.frontView(headerLength, payloadLength);
          q.skip(total);
        } else {
          // The payload continues in later chunks: views of each.
          q.skip(headerLength);
          views = q.takeViews(payloadLength);
          data = EMPTY;
        }
        const frame = plainRequest(extended, flags, command, cookie, offset, length, data);
        ev = this.frameEvent(at, total, frame, NO_FINDINGS, views);
      } else if (isData && this.o.payloadViews && contiguous < total) {
        const at = q.position;
        const hr = decodeRequestHeader(q.peek(headerLength), this.optionsAt0());
        if (!hr.done) return NEED_BYTES;
        q.skip(headerLength);
        const views = q.takeViews(payloadLength);
        // Built field by field: object rest and spread cost a runtime call each, even in optimised code.
        const hf = hr.frame;
        const frame: Request = {
          type: "request",
          extended: hf.extended,
          flags: hf.flags,
          command: hf.command,
          cookie: hf.cookie,
          offset: hf.offset,
          length: hf.length,
          data: EMPTY,
        };
        ev = this.frameEvent(at, total, frame, rebase(hr.findings, 0, at), views);
      } else {
        ev = this.take(total, decodeRequest);
      }
      const req = ev.frame as Request;
      if (req.command === Command.DISC) this.phase = "closed";
      else if (this.tracksReplies) {
        this.hold(ev, requestCharge(req), "request");
        this.session.addRequest(req, key);
      }
      return this.emit(ev);
    } catch (e) {
      return this.undecodable(e);
    }
  }
}

export class ServerDecoderImpl extends DirectionDecoder {
  /** Always `"s2c"`. */
  readonly direction: Direction = "s2c";
  /** Wait for the client side instead of guessing (set by the conversation decoder). */
  waitForClient = false;
  private tlsNoticePending = false;

  protected override keepOpaque(): boolean {
    return this.tlsNoticePending;
  }

  /**
   * @param options limits, strictness, payload views and what is already known
   * @param session shared state (the conversation decoder passes one shared by both directions)
   */
  constructor(options?: StreamOptions, session?: SessionState) {
    super(options, session);
  }

  push(chunk: Uint8Array): StreamEvent[] {
    this.append(chunk);
    return this.drain(false);
  }

  end(): StreamEvent[] {
    return this.finish();
  }

  noteOption(option: OptionRequest): void {
    this.session.addOption(option, HELD_ENTRY_CHARGE);
    if (option.option === Option.STARTTLS) this.session.tlsRequested = true;
  }

  noteClientFlags(flags: number): void {
    this.session.clientFlags = flags;
  }

  noteRequest(request: Request): void {
    if (request.command !== Command.DISC) this.session.addRequest(request);
  }

  step(force: boolean): Step {
    const q = this.queue;
    if (this.tlsNoticePending && (q.length > 0 || this.ended)) {
      this.tlsNoticePending = false;
      const at = q.position;
      q.clear();
      return this.emit(this.notice("tls", at, 0, NO_FINDINGS));
    }
    const waiting = this.waiting();
    if (waiting !== undefined) return waiting;
    try {
      if (this.phase === "start") {
        if (q.length < 16) return this.needBytes(16);
        const second = this.u32At(8);
        const total = second === IHAVEOPT_HI ? 18 : 152;
        if (q.length < total && (this.u32At(0) === Number(Magic.NBDMAGIC >> 32n))) {
          return this.needBytes(total);
        }
        // A wrong magic is reported as soon as 16 bytes are there.
        const ev = this.take(Math.min(total, q.length), decodeGreeting);
        const g = ev.frame;
        if (g.type === "newstyle-greeting") {
          this.session.style = "newstyle";
          this.session.handshakeFlags = g.handshakeFlags;
          this.session.sawGreeting = true;
          this.phase = "options";
        } else if (g.type === "oldstyle-greeting") {
          this.session.style = "oldstyle";
          this.session.exportSize = g.size;
          this.session.transmissionFlags = g.transmissionFlags;
          this.phase = "transmission";
        }
        return this.emit(ev);
      }
      if (this.phase === "options") return this.stepOptions(force);
      return this.stepTransmission(force);
    } catch (e) {
      return this.undecodable(e);
    }
  }

  private stepOptions(force: boolean): Step {
    const q = this.queue;
    const s = this.session;
    const pending = s.options[0];
    if (pending === undefined && this.waitForClient && !force) {
      // A reply magic with no option pending ends the handshake only if the client ended it: once it sent a
      // request (decided now, so that it never depends on whether the server side had to be decoded without
      // the client because of the buffer limit). While its next bytes may be another option, they decide:
      // an option is answered by an option reply, so the reply magic is then a bad option reply, whichever
      // of the two sides' bytes came first. Without the client side (its bytes end or are lost, the buffer
      // limit), the reply magic ends the handshake (below).
      if (q.length >= 8 && !s.tlsStarted && s.clientSentRequest && isReplyMagic(this.u32At(0))) {
        this.phase = "transmission";
        return this.stepTransmission(force);
      }
      return BLOCKED;
    }
    if (q.length < 8) return this.needBytes(8);
    if (pending?.option === Option.EXPORT_NAME) {
      // EXPORT_NAME is answered without an option reply; a reply magic here (an export of exactly
      // 0x0003e889045565a9 bytes aside) is a server answering it as if it were another option.
      if (u64(q.peek(8), 0) !== Magic.OPTION_REPLY) return this.stepExportNameReply(force);
    }
    const first = this.u32At(0);
    if (first !== OPTION_REPLY_HI) {
      if (s.tlsStarted) {
        this.phase = "tls";
        const at = q.position;
        q.clear();
        return this.emit(this.notice("tls", at, 0, NO_FINDINGS));
      }
      if (pending === undefined && isReplyMagic(first)) {
        this.phase = "transmission";
        return this.stepTransmission(force);
      }
    }
    if (q.length < 20) return this.needBytes(20);
    if (u64(q.peek(8), 0) !== Magic.OPTION_REPLY) {
      throw new NbdDecodeError(
        "bad-magic",
        0,
        "magic",
        `Cannot decode option reply: magic is 0x${toHex(q.peek(8))}, expected 0x0003e889045565a9`,
      );
    }
    const len = this.u32At(16);
    checkLimit(len, this.o.maxPayloadLength, 16, "option reply");
    const total = 20 + len;
    this.checkBuffer(total, "option reply");
    if (q.length < total) return this.needBytes(total);
    this.opts.pendingOption = pending?.option;
    this.opts.negotiated = this.negotiated();
    const ev = this.take(total, decodeOptionReply);
    let findings = ev.findings;
    const rep = ev.frame as OptionReplyFrame;
    if (pending?.option === Option.EXPORT_NAME) {
      findings = merge(findings, [
        this.finding(
          "unexpected-frame",
          ev.frameOffset,
          "export-name-option-reply",
          "an option reply to NBD_OPT_EXPORT_NAME; the server MUST answer it with the export size and flags, or close",
        ),
      ]);
    }
    if (pending === undefined) {
      findings = merge(findings, [
        this.finding(
          "unexpected-frame",
          ev.frameOffset,
          "option-reply-unsolicited",
          "an option reply arrived while no option was pending; a server replies only to the option sent",
        ),
      ]);
    }
    this.learnFromOptionReply(rep, pending);
    ev.findings = findings;
    if (pending !== undefined) ev.option = pending;
    return this.emit(ev);
  }

  private learnFromOptionReply(
    rep: OptionReplyFrame,
    pending: OptionRequest | undefined,
  ): void {
    const s = this.session;
    const option = pending?.option ?? rep.option;
    const isFinal = rep.reply === OptionReply.ACK || (rep.reply & 0x8000_0000) !== 0;
    if (rep.reply === OptionReply.META_CONTEXT && option === Option.SET_META_CONTEXT) {
      if (rep.data.kind === "meta-context") (s.pendingContexts ??= new Map()).set(rep.data.id, rep.data.name);
    }
    if (rep.reply === OptionReply.INFO && rep.data.kind === "info" && rep.data.info.info === Info.EXPORT) {
      const info = rep.data.info as { size: bigint; transmissionFlags: number };
      if (option === Option.GO || option === Option.INFO) {
        s.exportSize = info.size;
        s.transmissionFlags = info.transmissionFlags;
      }
    }
    if (!isFinal) return;
    if (pending !== undefined) s.shiftOption();
    const ok = rep.reply === OptionReply.ACK;
    switch (option) {
      case Option.STRUCTURED_REPLY:
        if (ok) s.structuredReplies = true;
        break;
      case Option.EXTENDED_HEADERS:
        if (ok) s.extendedHeaders = true;
        break;
      case Option.SET_META_CONTEXT:
        // SET replaces the selection even when it fails.
        s.contexts = ok ? (s.pendingContexts ?? new Map()) : new Map();
        s.pendingContexts = undefined;
        break;
      case Option.STARTTLS:
        s.tlsRequested = false;
        if (ok) {
          s.tlsStarted = true;
          this.phase = "tls";
          this.tlsNoticePending = true;
        }
        break;
      case Option.GO:
        if (ok) this.phase = "transmission";
        break;
      case Option.ABORT:
        if (ok) this.phase = "closed";
        break;
    }
  }

  /**
   * What the option haggling negotiated so far, for checking the export's transmission flags against it
   * (rules transmission-df-unnegotiated, transmission-block-status-payload-unnegotiated); undefined unless
   * the greeting was seen (a decoder started later cannot know).
   */
  private negotiated(): Negotiated | undefined {
    const s = this.session;
    return s.sawGreeting
      ? { structuredReplies: s.structuredReplies, extendedHeaders: s.extendedHeaders }
      : undefined;
  }

  private stepExportNameReply(force: boolean): Step {
    const q = this.queue;
    const s = this.session;
    let noZeroes = s.noZeroes();
    if (noZeroes === undefined) {
      if (this.waitForClient && !force) return BLOCKED;
      // Unknown client flags: 124 zero bytes right after the flags tell.
      if (q.length < 14 && !this.ended) return this.needBytes(14);
      noZeroes = !(q.length >= 14 && this.u32At(10) === 0);
    }
    const total = noZeroes ? 10 : 134;
    if (q.length < total) return this.needBytes(total);
    this.opts.noZeroes = noZeroes;
    this.opts.negotiated = this.negotiated();
    const ev = this.take(total, decodeExportNameReply);
    const option = s.shiftOption();
    const f = ev.frame as { size: bigint; transmissionFlags: number };
    s.exportSize = f.size;
    s.transmissionFlags = f.transmissionFlags;
    this.phase = "transmission";
    if (option !== undefined) ev.option = option;
    return this.emit(ev);
  }

  private stepTransmission(force: boolean): Step {
    const q = this.queue;
    const s = this.session;
    if (q.length < 4) return this.needBytes(4);
    const magic = this.u32At(0);
    if (magic === Magic.SIMPLE_REPLY) {
      if (q.length < 16) return this.needBytes(16);
      // The header's fields through one DataView (over the front chunk, or a copy of a header that spans).
      const dv = q.view(16);
      const h = q.viewBase;
      const key = cookieKeyOf(dv.getUint32(h + 8), dv.getUint32(h + 12));
      const error = dv.getUint32(h + 4);
      const req = s.findRequest(key);
      if (req === undefined && this.waitForClient && !force) return BLOCKED;
      let findings: Finding[] | undefined;
      const at = q.position;
      let readLength = -1;
      if (req === undefined) {
        (findings ??= []).push(this.finding(
          "unexpected-frame",
          at + 8,
          "reply-unknown-cookie",
          `simple reply for cookie ${(BigInt(this.u32At(8)) << 32n) | BigInt(this.u32At(12))}, ` +
            `which matches no outstanding request`,
        ));
      } else if (req.command === Command.READ && error === 0) {
        readLength = Number(req.length);
        if (s.structuredReplies) {
          (findings ??= []).push(this.finding(
            "unexpected-frame",
            at,
            "simple-reply-read-structured",
            "a simple reply to READ after structured replies were negotiated; READ replies MUST then be chunks",
          ));
        }
      }
      const total = 16 + Math.max(readLength, 0);
      // With payloadViews too: the READ length comes from the request, up to 2^64-1, and views hold chunks.
      this.checkBuffer(total, "simple reply");
      if (q.length < total) {
        this.need = total;
        return this.needBytes(total);
      }
      this.opts.readLength = readLength >= 0 ? readLength : undefined;
      // The frame decoder reports a simple reply in an extended-headers session (reply-header-style).
      const ctx = s.style === "newstyle" ? s.extendedHeaders : undefined;
      this.opts.extendedHeaders = ctx;
      let ev: Building;
      const contiguous = q.contiguous();
      if (
        ctx !== true && readLength <= this.o.maxPayloadLength &&
        (contiguous >= total || (readLength > 0 && this.o.payloadViews))
      ) {
        // Nothing for decodeSimpleReply to find (no extended-headers session, read data within the limit):
        // the frame as it builds it, from the fields read above.
        const cookie = dv.getBigUint64(h + 8);
        let frame: SimpleReply;
        let views: Uint8Array[] | undefined;
        if (readLength < 0) {
          frame = { type: "simple-reply", error, cookie };
          q.skip(16);
        } else if (contiguous >= total) {
          frame = { type: "simple-reply", error, cookie, data: q.frontView(16, readLength) };
          q.skip(total);
        } else {
          q.skip(16);
          views = q.takeViews(readLength);
          frame = { type: "simple-reply", error, cookie, data: EMPTY };
        }
        ev = this.frameEvent(at, total, frame, NO_FINDINGS, views);
      } else if (readLength > 0 && this.o.payloadViews && contiguous < total) {
        this.opts.readLength = undefined;
        const hr = decodeSimpleReply(q.peek(16), this.optionsAt0());
        if (!hr.done) return NEED_BYTES;
        q.skip(16);
        const views = q.takeViews(readLength);
        const frame: SimpleReply = {
          type: "simple-reply",
          error: hr.frame.error,
          cookie: hr.frame.cookie,
          data: EMPTY,
        };
        ev = this.frameEvent(at, total, frame, rebase(hr.findings, 0, at), views);
      } else {
        ev = this.take(total, decodeSimpleReply);
      }
      if (req !== undefined) {
        s.finishRequest(key);
        ev.request = req;
      }
      if (findings !== undefined) ev.findings = merge(ev.findings, findings);
      return this.emit(ev);
    }
    if (magic === Magic.STRUCTURED_REPLY || magic === Magic.EXTENDED_REPLY) {
      const extended = magic === Magic.EXTENDED_REPLY;
      const headerLength = extended ? 32 : 20;
      if (q.length < headerLength) return this.needBytes(headerLength);
      const key = cookieKeyOf(this.u32At(8), this.u32At(12));
      const req = s.findRequest(key);
      if (req === undefined && this.waitForClient && !force) return BLOCKED;
      let len: number;
      if (extended) {
        const hi = this.u32At(24);
        len = hi > 0x1f_ffff ? -1 : hi * 0x1_0000_0000 + this.u32At(28);
      } else {
        len = this.u32At(16);
      }
      if (len < 0 || len > this.o.maxPayloadLength) {
        throw new NbdDecodeError(
          "limit-exceeded",
          extended ? 24 : 16,
          "max-payload-length",
          `Cannot decode reply chunk: payload length ${
            len < 0 ? u64(q.peek(32), 24) : len
          } exceeds the limit of ${this.o.maxPayloadLength} bytes`,
        );
      }
      const total = headerLength + len;
      const flags = q.u16At(4);
      const chunkType = q.u16At(6);
      const isData = chunkType === 1 && len > 9;
      this.checkBuffer(total, "reply chunk");
      if (q.length < total) {
        this.need = total;
        return this.needBytes(total);
      }
      const at = q.position;
      let ev: Building;
      if (isData && this.o.payloadViews && q.contiguous() < total) {
        const fixed = q.peek(headerLength + 8);
        const payload = { kind: "offset-data", offset: u64(fixed, headerLength), data: EMPTY } as const;
        const cookie = u64(fixed, 8);
        const frame: ReplyChunk = extended
          ? { type: "reply-chunk", extended, flags, chunkType, cookie, offset: u64(fixed, 16), payload }
          : { type: "reply-chunk", extended, flags, chunkType, cookie, payload };
        // The header rules as decodeReplyChunk applies them, on a stand-in with the same header and 1 data
        // byte: only the data is left in the input chunks, and no rule reads it.
        const probe = new Uint8Array(headerLength + 9);
        probe.set(fixed);
        probe.fill(0, extended ? 24 : 16, headerLength - 1);
        probe[headerLength - 1] = 9;
        this.opts.extendedHeaders = s.style === "newstyle" ? s.extendedHeaders : undefined;
        const hr = decodeReplyChunk(probe, this.optionsAt0());
        q.skip(headerLength + 8);
        const views = q.takeViews(len - 8);
        ev = this.frameEvent(at, total, frame, hr.done ? rebase(hr.findings, 0, at) : NO_FINDINGS, views);
      } else {
        this.opts.extendedHeaders = s.style === "newstyle" ? s.extendedHeaders : undefined;
        ev = this.take(total, decodeReplyChunk);
      }
      const chunk = ev.frame as ReplyChunk;
      let findings: Finding[] | undefined;
      if (req === undefined) {
        (findings ??= []).push(this.finding(
          "unexpected-frame",
          at + 8,
          "reply-unknown-cookie",
          `reply chunk for cookie ${chunk.cookie}, which matches no outstanding request`,
        ));
      } else if (extended && chunk.offset !== undefined && req.offset !== chunk.offset) {
        (findings ??= []).push(this.finding(
          "bad-value",
          at + 16,
          "extended-reply-offset",
          `the extended reply header's offset ${chunk.offset} differs from the request's ${req.offset}; it MUST equal it`,
        ));
      }
      if (!s.structuredReplies && !s.extendedHeaders && s.style !== "unknown") {
        (findings ??= []).push(this.finding(
          "unexpected-frame",
          at,
          "chunk-without-negotiation",
          "a structured reply chunk although neither structured replies nor extended headers were negotiated",
        ));
      }
      if (chunk.payload.kind === "block-status") {
        const id = chunk.payload.descriptors.contextId;
        const contextName = s.contexts.get(id);
        if (contextName !== undefined) ev.contextName = contextName;
        else if (s.contexts.size > 0) {
          (findings ??= []).push(this.finding(
            "bad-value",
            at + headerLength,
            "block-status-context",
            `block status for metadata context id ${id}, which was not negotiated`,
          ));
        }
      }
      if (req !== undefined) {
        ev.request = req;
        if ((flags & 1) !== 0) s.finishRequest(key);
      }
      if (findings !== undefined) ev.findings = merge(ev.findings, findings);
      return this.emit(ev);
    }
    // Not a reply magic: let the chunk decoder name the problem.
    if (q.length < 4) return this.needBytes(4);
    throw new NbdDecodeError(
      "bad-magic",
      0,
      "magic",
      `Cannot decode reply: magic is 0x${
        magic.toString(16).padStart(8, "0")
      }, expected 0x67446698 (simple), ` +
        `0x668e33ef (structured) or 0x6e8a278c (extended)`,
    );
  }
}

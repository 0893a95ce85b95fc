/**
 * The conversation decoder: both directions of one NBD connection, with everything negotiated learned from
 * the traffic itself, replies matched to their requests by cookie, and spec violations reported as
 * findings (like Wireshark's expert info) or, in strict mode, thrown.
 *
 * Feed it either interleaved chunks in the order a capture has them ({@link ConversationDecoder}), or two
 * whole byte streams ({@link decodeConversation}), in which case it follows causality: an option reply
 * comes after the option it answers, a reply after its request.
 *
 * @module
 */
import type { Finding } from "./errors.ts";
import type { ConversationEvent, Direction } from "./events.ts";
import type { NegotiatedState, StreamOptions } from "./stream.ts";
import { ClientDecoderImpl, type DirectionDecoder, ServerDecoderImpl, SessionState } from "./_stream_impl.ts";
import { throwWithEvents } from "./_stream_error.ts";
import { NbdDecodeError } from "./errors.ts";
import { DEFAULT_MAX_BUFFERED_BYTES } from "./types.ts";

/**
 * Options of the conversation decoder: the stream options plus the connection number put on every event.
 *
 * @example
 * ```ts
 * import { ConversationDecoder, type ConversationOptions } from "@nbd/codec";
 * const opts: ConversationOptions = { connection: 2, strict: false };
 * console.log(new ConversationDecoder(opts).connection); // 2
 * ```
 */
export interface ConversationOptions extends StreamOptions {
  /** The connection's number, copied onto every event. Default 0. */
  readonly connection?: number;
}

/**
 * Decodes one connection from chunks of both directions given in capture order.
 *
 * @example
 * ```ts
 * import { ConversationDecoder } from "@nbd/codec";
 * const hex = (h: string) => Uint8Array.from(h.match(/../g)!, (x) => parseInt(x, 16));
 * const d = new ConversationDecoder();
 * const events = [
 *   ...d.push("s2c", hex("4e42444d4147494349484156454f50540003")),
 *   ...d.push("c2s", hex("00000003" + "49484156454f5054" + "00000008" + "00000000")),
 *   ...d.push("s2c", hex("0003e889045565a9" + "00000008" + "00000001" + "00000000")),
 *   ...d.end(),
 * ];
 * console.log(events.map((e) => e.event === "frame" ? e.frame.type : e.notice));
 * // [ "newstyle-greeting", "client-flags", "option-request", "option-reply" ]
 * console.log(d.state.structuredReplies); // true
 * ```
 */
export class ConversationDecoder {
  /** The connection's number on every event. */
  readonly connection: number;
  readonly #session: SessionState;
  readonly #c2s: ClientDecoderImpl;
  readonly #s2c: ServerDecoderImpl;
  readonly #maxBuffered: number;
  readonly #strict: boolean;
  /**
   * Stream offset in s2c where the last event decoded without the client side (because of the buffer
   * limit) ended; -1 before any. A forced event starting there continues the same run.
   */
  #forcedEnd = -1;
  #done = false;

  /**
   * Creates a decoder for one connection.
   *
   * @param options strictness, limits, payload views, what is already known, the connection number
   */
  constructor(options?: ConversationOptions) {
    this.connection = options?.connection ?? 0;
    this.#session = new SessionState(options?.state);
    this.#c2s = new ClientDecoderImpl(options, this.#session);
    this.#s2c = new ServerDecoderImpl(options, this.#session);
    this.#s2c.waitForClient = true;
    // The tables of options and requests waiting for replies are bounded by maxBufferedBytes.
    this.#c2s.trackReplies();
    this.#maxBuffered = options?.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
    this.#strict = options?.strict ?? false;
    // Events carry the connection number from the start: no copy per event.
    this.#c2s.connection = this.connection;
    this.#s2c.connection = this.connection;
  }

  /**
   * What has been negotiated so far (the phase is the server side's).
   *
   * @example
   * ```ts
   * import { ConversationDecoder } from "@nbd/codec";
   * console.log(new ConversationDecoder().state.phase); // "start"
   * ```
   */
  get state(): NegotiatedState {
    return this.#s2c.state;
  }

  /**
   * Adds a chunk of one direction and returns the events it completes. In strict mode a violation throws an
   * {@link NbdStreamError} carrying the events decoded before it.
   *
   * @example
   * ```ts
   * import { ConversationDecoder } from "@nbd/codec";
   * console.log(new ConversationDecoder().push("c2s", new Uint8Array([0, 0])).length); // 0
   * ```
   */
  push(direction: Direction, chunk: Uint8Array): ConversationEvent[] {
    if (this.#done) throw new TypeError("Cannot push: the conversation has ended");
    let dec: DirectionDecoder;
    if (direction === "c2s") dec = this.#c2s;
    else if (direction === "s2c") dec = this.#s2c;
    else throw new TypeError(`Cannot push: direction must be "c2s" or "s2c", got ${String(direction)}`);
    dec.append(chunk);
    // More of a large frame's payload (every segment but the last of a big WRITE or READ reply): nothing
    // to decode on either side, so no pumping.
    if (dec.incomplete()) return [];
    const out: ConversationEvent[] = [];
    try {
      this.#pump(dec, out);
      if (this.#s2c.queue.length > this.#maxBuffered) this.#overLimit(out);
    } catch (e) {
      throwWithEvents(e, out);
    }
    return out;
  }

  /**
   * The server side holds more than `maxBufferedBytes` waiting for client bytes to match them (a silent
   * client, client packets lost, option replies nobody asked for): its frames are decoded without the
   * client side, as a lone {@link ServerStreamDecoder} would (frames framed by themselves decode exactly;
   * the others are guessed, and what cannot be framed becomes an `undecodable` notice), until it holds no
   * more than the limit. Which frames are so decoded depends only on the bytes received, not on their
   * split: those that start more than the limit before the last byte received. The first event of each such
   * run carries a `buffer-limit-one-sided` finding; strict mode throws it instead.
   */
  #overLimit(out: ConversationEvent[]): void {
    const s2c = this.#s2c;
    while (s2c.queue.length > this.#maxBuffered) {
      let f: Finding | undefined;
      const at = s2c.position;
      if (at !== this.#forcedEnd) {
        f = {
          code: "limit-exceeded",
          offset: at,
          rule: "buffer-limit-one-sided",
          message: `the s2c stream from offset ${at} waits for client bytes to match it with more than the ` +
            `limit of ${this.#maxBuffered} bytes (option maxBufferedBytes) buffered; the server side is decoded ` +
            `without the client side from here`,
        };
        if (this.#strict) throw new NbdDecodeError(f.code, f.offset, f.rule, f.message);
      }
      const s = s2c.step(true);
      if (s.step !== "event") break;
      const e = s.event as ConversationEvent;
      if (f !== undefined) (e as { findings: readonly Finding[] }).findings = [f, ...e.findings];
      this.#forcedEnd = s2c.position;
      out.push(e);
      // What the forced event made decodable on the client side, then the server side as after a push.
      this.#pump(this.#c2s, out);
      this.#pump(s2c, out);
    }
  }

  /**
   * Reports bytes missing from a direction (a capture gap). That direction cannot be framed any further:
   * a notice with a `truncated` finding (rule `capture-gap`), and its later bytes are skipped.
   *
   * @example
   * ```ts
   * import { ConversationDecoder } from "@nbd/codec";
   * const [n] = new ConversationDecoder().gap("c2s", 100);
   * console.log(n?.event === "notice" && n.findings[0]?.rule); // "capture-gap"
   * ```
   */
  gap(direction: Direction, length: number): ConversationEvent[] {
    const dec = direction === "c2s" ? this.#c2s : this.#s2c;
    const out: ConversationEvent[] = [];
    try {
      this.#pump(dec, out);
      if (dec === this.#s2c) {
        // Server frames that wait for client bytes would be dropped with the direction: they are decoded
        // without the client side instead, as far as they frame alone (findings say what is unmatched).
        for (;;) {
          const s = this.#s2c.step(true);
          if (s.step !== "event") break;
          out.push(s.event as ConversationEvent);
          this.#pump(this.#c2s, out);
        }
      }
      const ev = dec.abandon(length);
      if (ev !== undefined) out.push(ev as ConversationEvent);
    } catch (e) {
      throwWithEvents(e, out);
    }
    return out;
  }

  /**
   * Ends both streams: every frame still decodable is decoded, an incomplete frame becomes a `truncated`
   * notice.
   *
   * @example
   * ```ts
   * import { ConversationDecoder } from "@nbd/codec";
   * const d = new ConversationDecoder();
   * d.push("s2c", new Uint8Array([0x4e, 0x42]));
   * console.log(d.end().map((e) => e.event === "notice" && e.notice)); // [ "truncated" ]
   * ```
   */
  end(): ConversationEvent[] {
    if (this.#done) return [];
    // No more bytes of either side will come: a server frame that waits for the client is decoded without
    // it when the client side can go no further, and what it teaches (an unsolicited STARTTLS ACK, say) is
    // applied to the client's last bytes, as decodeConversation does with the same bytes.
    const out: ConversationEvent[] = [];
    try {
      this.#pumpCausal(out);
      for (const e of this.#c2s.finish()) out.push(e as ConversationEvent);
      for (const e of this.#s2c.finish()) out.push(e as ConversationEvent);
    } catch (e) {
      throwWithEvents(e, out);
    }
    this.#done = true;
    return out;
  }

  /**
   * Decodes what can be decoded, in capture order, after bytes of `pushed` arrived: one event of that side,
   * then every event of the other side that it made decodable (an option request lets its replies decode, an
   * option reply can change how the client side decodes), then the next event of that side. The other side
   * decodes nothing more before (every pump ends with both sides stuck), so the order of the events is the
   * one the bytes would give arriving one at a time, whatever the split. A side with no bytes buffered has
   * nothing to decode (before end()), so it is not stepped.
   */
  #pump(pushed: DirectionDecoder, out: ConversationEvent[]): void {
    const other = pushed === this.#c2s ? this.#s2c : this.#c2s;
    while (pushed.queue.length > 0) {
      const p = pushed.step(false);
      if (p.step !== "event") break;
      out.push(p.event as ConversationEvent);
      while (other.queue.length > 0) {
        const o = other.step(false);
        if (o.step !== "event") break;
        out.push(o.event as ConversationEvent);
      }
    }
  }

  /** Decodes what can be decoded in causal order: the client side advances only when the server side waits. */
  #pumpCausal(out: ConversationEvent[]): void {
    for (;;) {
      const s = this.#s2c.step(false);
      if (s.step === "event") {
        out.push(s.event as ConversationEvent);
        continue;
      }
      // The server waits for (or has no more) bytes; let the client side take one step.
      const c = this.#c2s.step(false);
      if (c.step === "event") {
        out.push(c.event as ConversationEvent);
        continue;
      }
      if (s.step === "blocked") {
        // The client side has nothing more to give: decode the server frame without its request.
        const f = this.#s2c.step(true);
        if (f.step === "event") {
          out.push(f.event as ConversationEvent);
          continue;
        }
      }
      break;
    }
  }

  /**
   * Decodes both whole streams at once, in causal order, and ends the conversation (what
   * {@link decodeConversation} does).
   *
   * @example
   * ```ts
   * import { ConversationDecoder } from "@nbd/codec";
   * console.log(new ConversationDecoder().decodeWhole(new Uint8Array(0), new Uint8Array(0)).length); // 0
   * ```
   */
  decodeWhole(c2s: Uint8Array, s2c: Uint8Array): ConversationEvent[] {
    this.#c2s.append(c2s);
    this.#s2c.append(s2c);
    const out: ConversationEvent[] = [];
    try {
      this.#pumpCausal(out);
      for (const e of this.end()) out.push(e);
    } catch (e) {
      throwWithEvents(e, out);
    }
    return out;
  }
}

/**
 * Decodes one connection given as the whole byte stream of each direction, in causal order: the greeting,
 * then each option followed by its replies, each request before its replies (requests are placed just
 * before the first reply that needs them; requests nobody answers, like DISC, come last).
 *
 * @example
 * ```ts
 * import { decodeConversation } from "@nbd/codec";
 * const hex = (h: string) => Uint8Array.from(h.match(/../g)!, (x) => parseInt(x, 16));
 * const events = decodeConversation(
 *   hex("00000001" + "49484156454f5054" + "00000003" + "00000000"),
 *   hex("4e42444d4147494349484156454f50540001" + "0003e889045565a9" + "00000003" + "00000001" + "00000000"),
 * );
 * console.log(events.map((e) => e.event === "frame" ? `${e.direction} ${e.frame.type}` : e.notice));
 * // [ "s2c newstyle-greeting", "c2s client-flags", "c2s option-request", "s2c option-reply" ]
 * ```
 */
export function decodeConversation(
  c2s: Uint8Array,
  s2c: Uint8Array,
  options?: ConversationOptions,
): ConversationEvent[] {
  if (!(c2s instanceof Uint8Array) || !(s2c instanceof Uint8Array)) {
    throw new TypeError("Cannot decode conversation: both streams must be Uint8Arrays");
  }
  return new ConversationDecoder(options).decodeWhole(c2s, s2c);
}

/**
 * Incremental (sans-I/O) decoders for the two byte streams of one NBD connection. Feed chunks of any
 * size, in any split; get the frames in order with their byte offsets. "Need more bytes" is simply no
 * event yet.
 *
 * Some frames can only be framed with state: the reply to `NBD_OPT_EXPORT_NAME` (10 or 134 bytes, no
 * magic) and simple replies to READ (their data length is the request's). The negotiated state is
 * explicit: give it in the options, or let the decoders learn it from the traffic. The
 * {@link ConversationDecoder} wires both directions together so that everything is learned.
 *
 * @module
 */
import type { StreamEvent } from "./events.ts";
import type { OptionRequest } from "./option.ts";
import type { Request } from "./request.ts";
import { ClientDecoderImpl, ServerDecoderImpl } from "./_stream_impl.ts";
import type { NegotiatedState, StreamOptions } from "./_stream_types.ts";

export type { NegotiatedState, StreamOptions, StreamPhase } from "./_stream_types.ts";
export { NbdStreamError } from "./_stream_error.ts";

/**
 * Decodes the client-to-server byte stream: client flags, option requests, then transmission requests
 * (with their WRITE payloads). It frames everything by itself: options and requests carry magics and
 * lengths. After STARTTLS, bytes that are not another option are TLS: a `tls` notice, then nothing more.
 *
 * @example
 * ```ts
 * import { ClientStreamDecoder } from "@nbd/codec";
 * const hex = "00000003" + "49484156454f5054" + "00000008" + "00000000";
 * const bytes = Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16));
 * const d = new ClientStreamDecoder();
 * const events = [...d.push(bytes.subarray(0, 5)), ...d.push(bytes.subarray(5))];
 * console.log(events.map((e) => e.event === "frame" ? e.frame.type : e.notice)); // [ "client-flags", "option-request" ]
 * ```
 */
export class ClientStreamDecoder {
  readonly #impl: ClientDecoderImpl;

  /**
   * Creates a decoder for one connection's client-to-server stream.
   *
   * @param options limits, strictness, payload views and what is already known
   */
  constructor(options?: StreamOptions) {
    this.#impl = new ClientDecoderImpl(options);
  }

  /**
   * What the decoder knows about the connection.
   *
   * @example
   * ```ts
   * import { ClientStreamDecoder } from "@nbd/codec";
   * console.log(new ClientStreamDecoder().state.phase); // "start"
   * ```
   */
  get state(): NegotiatedState {
    return this.#impl.state;
  }

  /**
   * "Need more bytes" as a value: at least how many more bytes must arrive before the next frame can be
   * decoded (0 once the stream is opaque TLS or closed).
   *
   * @example
   * ```ts
   * import { ClientStreamDecoder } from "@nbd/codec";
   * const d = new ClientStreamDecoder();
   * d.push(new Uint8Array([0, 0, 0, 3, 0x49, 0x48]));
   * console.log(d.needed); // 2: an option, a request or TLS can be told apart after 4 bytes
   * ```
   */
  get needed(): number {
    return this.#impl.needed;
  }

  /**
   * Adds a chunk of the stream and returns the events it completes. In strict mode a violation throws an
   * {@link NbdStreamError} carrying the events decoded before it.
   *
   * @example
   * ```ts
   * import { ClientStreamDecoder } from "@nbd/codec";
   * console.log(new ClientStreamDecoder().push(new Uint8Array([0, 0])).length); // 0
   * ```
   */
  push(chunk: Uint8Array): StreamEvent[] {
    return this.#impl.push(chunk);
  }

  /**
   * Ends the stream; an incomplete frame is reported as a `truncated` notice.
   *
   * @example
   * ```ts
   * import { ClientStreamDecoder } from "@nbd/codec";
   * const d = new ClientStreamDecoder();
   * d.push(new Uint8Array([0, 0]));
   * console.log(d.end()[0]?.event); // "notice"
   * ```
   */
  end(): StreamEvent[] {
    return this.#impl.end();
  }
}

/**
 * Decodes the server-to-client byte stream: the greeting, option replies, the EXPORT_NAME reply, then
 * simple replies and structured or extended reply chunks.
 *
 * Two frames need the other direction: the EXPORT_NAME reply (was EXPORT_NAME sent, and did the client
 * set NO_ZEROES) and simple replies to READ (their data length is the request's). Tell the decoder with
 * {@link ServerStreamDecoder.noteOption}, {@link ServerStreamDecoder.noteClientFlags} and
 * {@link ServerStreamDecoder.noteRequest}, or use a `ConversationDecoder`, which does it for you.
 * Without that knowledge it guesses: a simple reply whose request is unknown carries no data (with a
 * finding), and an EXPORT_NAME reply is recognised by its shape.
 *
 * @example
 * ```ts
 * import { ServerStreamDecoder } from "@nbd/codec";
 * const hex = "4e42444d41474943" + "49484156454f5054" + "0003";
 * const d = new ServerStreamDecoder();
 * const [e] = d.push(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)));
 * console.log(e?.event === "frame" && e.frame.type, d.state.phase); // "newstyle-greeting" "options"
 * ```
 */
export class ServerStreamDecoder {
  readonly #impl: ServerDecoderImpl;

  /**
   * Creates a decoder for one connection's server-to-client stream.
   *
   * @param options limits, strictness, payload views and what is already known
   */
  constructor(options?: StreamOptions) {
    this.#impl = new ServerDecoderImpl(options);
  }

  /**
   * What the decoder knows about the connection.
   *
   * @example
   * ```ts
   * import { ServerStreamDecoder } from "@nbd/codec";
   * console.log(new ServerStreamDecoder().state.style); // "unknown"
   * ```
   */
  get state(): NegotiatedState {
    return this.#impl.state;
  }

  /**
   * "Need more bytes" as a value: at least how many more bytes must arrive before the next frame can be
   * decoded (0 once the stream is opaque TLS or closed).
   *
   * @example
   * ```ts
   * import { ServerStreamDecoder } from "@nbd/codec";
   * const d = new ServerStreamDecoder();
   * d.push(new Uint8Array(10));
   * console.log(d.needed); // 6: a greeting is told apart after 16 bytes
   * ```
   */
  get needed(): number {
    return this.#impl.needed;
  }

  /**
   * Adds a chunk of the stream and returns the events it completes. In strict mode a violation throws an
   * {@link NbdStreamError} carrying the events decoded before it.
   *
   * @example
   * ```ts
   * import { ServerStreamDecoder } from "@nbd/codec";
   * console.log(new ServerStreamDecoder().push(new Uint8Array(3)).length); // 0
   * ```
   */
  push(chunk: Uint8Array): StreamEvent[] {
    return this.#impl.push(chunk);
  }

  /**
   * Ends the stream; an incomplete frame is reported as a `truncated` notice.
   *
   * @example
   * ```ts
   * import { ServerStreamDecoder } from "@nbd/codec";
   * const d = new ServerStreamDecoder();
   * d.push(new Uint8Array(3));
   * console.log(d.end()[0]?.event); // "notice"
   * ```
   */
  end(): StreamEvent[] {
    return this.#impl.end();
  }

  /**
   * Tells the decoder the client sent this option (so that replies are matched to it, and the
   * EXPORT_NAME reply is expected).
   *
   * @example
   * ```ts
   * import { Option, ServerStreamDecoder } from "@nbd/codec";
   * const d = new ServerStreamDecoder();
   * d.noteOption({ type: "option-request", option: Option.LIST, data: { kind: "none" } });
   * console.log(d.state.phase); // "start"
   * ```
   */
  noteOption(option: OptionRequest): void {
    this.#impl.noteOption(option);
  }

  /**
   * Tells the decoder the client's flags (for NO_ZEROES).
   *
   * @example
   * ```ts
   * import { ServerStreamDecoder } from "@nbd/codec";
   * const d = new ServerStreamDecoder();
   * d.noteClientFlags(3);
   * console.log(d.state.clientFlags); // 3
   * ```
   */
  noteClientFlags(flags: number): void {
    this.#impl.noteClientFlags(flags);
  }

  /**
   * Tells the decoder the client sent this request (so that its replies are sized and matched).
   *
   * @example
   * ```ts
   * import { Command, ServerStreamDecoder } from "@nbd/codec";
   * const d = new ServerStreamDecoder({ state: { phase: "transmission" } });
   * d.noteRequest({ type: "request", extended: false, flags: 0, command: Command.READ, cookie: 1n, offset: 0n, length: 4n });
   * const reply = Uint8Array.from("67446698000000000000000000000001deadbeef".match(/../g)!, (h) => parseInt(h, 16));
   * const [e] = d.push(reply);
   * console.log(e?.event === "frame" && e.frameLength); // 20
   * ```
   */
  noteRequest(request: Request): void {
    this.#impl.noteRequest(request);
  }
}

/**
 * A sans-I/O NBD client session (h11's shape): server bytes in through {@link ClientSession.receive},
 * typed events out; calls in (options, commands), bytes out through {@link ClientSession.takeOutput}. It
 * negotiates the best the server offers (extended headers, then structured replies, then simple replies;
 * fixed newstyle and NO_ZEROES; GO with the info types asked for, falling back to EXPORT_NAME; oldstyle
 * servers too), lists exports and metadata contexts, selects contexts, checks every command against what
 * the server advertised before sending it, manages cookies, and assembles each command's result from its
 * reply chunks. The server's violations are findings, or {@link NbdRemoteError}s in strict mode.
 *
 * Framing rests on the stream decoder of the server direction (as {@link ServerStreamDecoder}): limits are checked before anything is buffered.
 *
 * @module
 */
import {
  ClientFlag,
  Command,
  CommandFlag,
  HandshakeFlag,
  Info,
  Magic,
  nameOf,
  Option,
  OptionReply,
  ReplyFlag,
  ReplyType,
} from "./constants.ts";
import { type Finding, isNbdDecodeError, type NbdDecodeErrorCode } from "./errors.ts";
import type { StreamEvent, StreamFrame } from "./events.ts";
import { encodeClientFlags } from "./handshake.ts";
import { encodeOptionRequest, type OptionRequest } from "./option.ts";
import type { OptionReplyFrame } from "./option_reply.ts";
import { decodeReplyChunk } from "./reply.ts";
import {
  createRequestHeaderFields,
  encodeRequest,
  encodeRequestHeaderInto,
  type Request,
  type RequestHeaderFields,
} from "./request.ts";
import {
  NbdLocalError,
  NbdRemoteError,
  type ResolvedSessionLimits,
  resolveSessionLimits,
  type SessionLimits,
  toU32,
  toU64,
} from "./session.ts";
import type { StreamOptions } from "./stream.ts";
import { ServerDecoderImpl } from "./_stream_impl.ts";
import { applyChunk, type CommandResult, content, fail, finishReply, InFlight } from "./_client_reply.ts";
import { checkRequest, type RequestContext } from "./_client_request.ts";

export type { CommandResult } from "./_client_reply.ts";

/**
 * Where the client session is.
 *
 * - `greeting`: waiting for the server's greeting.
 * - `options`: option haggling (newstyle).
 * - `tls`: STARTTLS succeeded; waiting for {@link ClientSession.tlsEstablished}.
 * - `transmission`: commands and replies.
 * - `closed`: after ABORT, DISC, the end of the stream or bytes that could not be decoded.
 *
 * @example
 * ```ts
 * import type { ClientPhase } from "@nbd/codec";
 * const p: ClientPhase = "transmission";
 * console.log(p);
 * ```
 */
export type ClientPhase = "greeting" | "options" | "tls" | "transmission" | "closed";

/**
 * The reply style in force: `simple`, `structured` (NBD_OPT_STRUCTURED_REPLY) or `extended`
 * (NBD_OPT_EXTENDED_HEADERS, which implies structured replies).
 *
 * @example
 * ```ts
 * import type { ReplyMode } from "@nbd/codec";
 * const m: ReplyMode = "extended";
 * console.log(m);
 * ```
 */
export type ReplyMode = "simple" | "structured" | "extended";

/**
 * What INFO, GO, EXPORT_NAME or the oldstyle greeting told about an export.
 *
 * @example
 * ```ts
 * import type { ExportDetails } from "@nbd/codec";
 * const e: ExportDetails = { name: "disk", size: 1048576n, transmissionFlags: 1 };
 * console.log(e.size); // 1048576n
 * ```
 */
export interface ExportDetails {
  /** The name asked for ("" for the default export). */
  readonly name: string;
  /** Export size in bytes. */
  readonly size: bigint;
  /** Transmission flags (`TransmissionFlag`). */
  readonly transmissionFlags: number;
  /** NBD_INFO_NAME: the canonical name. */
  readonly canonicalName?: string;
  /** NBD_INFO_DESCRIPTION. */
  readonly description?: string;
  /** NBD_INFO_BLOCK_SIZE. */
  readonly blockSize?: { readonly minimum: number; readonly preferred: number; readonly maximum: number };
  /** NBD_INFO_INIT_FLAGS (`InitFlag`). */
  readonly initFlags?: number;
}

/**
 * The typed result of a successful option.
 *
 * - `ack`: STRUCTURED_REPLY, EXTENDED_HEADERS, STARTTLS, ABORT, and options the session has no type for.
 * - `exports`: LIST.
 * - `export`: INFO, GO, EXPORT_NAME.
 * - `contexts`: LIST_META_CONTEXT and SET_META_CONTEXT, in the server's order (LIST's ids carry no
 *   meaning: qemu gives them all id 0; SET's become {@link ClientSessionState.contexts}).
 *
 * @example
 * ```ts
 * import type { OptionResult } from "@nbd/codec";
 * const r: OptionResult = { kind: "exports", exports: [{ name: "disk", description: "" }] };
 * console.log(r.kind); // "exports"
 * ```
 */
export type OptionResult =
  | { readonly kind: "ack" }
  | {
    readonly kind: "exports";
    readonly exports: readonly { readonly name: string; readonly description: string }[];
  }
  | { readonly kind: "export"; readonly export: ExportDetails }
  | {
    readonly kind: "contexts";
    readonly contexts: readonly { readonly id: number; readonly name: string }[];
  };

/**
 * What {@link ClientSession.receive} reports.
 *
 * - `greeting`: the server's greeting was read (and the client flags queued).
 * - `option`: an option finished: `ok` with its typed `result`, or the server's error `reply` and `message`.
 *   `id` is what the call that queued it returned (automatic steps have ids too).
 * - `negotiation-failed`: the automatic steps gave up (NBD_REP_ERR_TLS_REQD, or GO refused with no
 *   fallback left): the option and the server's error. Send ABORT, or STARTTLS, by hand.
 * - `ready`: transmission starts, with the export's details.
 * - `reply`: a command completed (`result`).
 * - `finding`: a server violation (lenient mode).
 * - `closed`: the session is over; `inFlight` lists the cookies of commands that never completed.
 *
 * @example
 * ```ts
 * import type { ClientEvent } from "@nbd/codec";
 * const e: ClientEvent = { type: "closed", reason: "end", inFlight: [] };
 * console.log(e.type); // "closed"
 * ```
 */
export type ClientEvent =
  | {
    readonly type: "greeting";
    readonly handshake: "oldstyle" | "newstyle" | "fixed-newstyle";
    readonly handshakeFlags: number;
  }
  | {
    readonly type: "option";
    readonly id: number;
    readonly option: number;
    readonly ok: true;
    readonly result: OptionResult;
  }
  | {
    readonly type: "option";
    readonly id: number;
    readonly option: number;
    readonly ok: false;
    readonly reply: number;
    readonly message: string;
  }
  | {
    readonly type: "negotiation-failed";
    readonly option: number;
    readonly reply: number;
    readonly message: string;
  }
  | { readonly type: "ready"; readonly export: ExportDetails }
  | { readonly type: "reply"; readonly result: CommandResult }
  | { readonly type: "finding"; readonly finding: Finding }
  | {
    readonly type: "closed";
    readonly reason: "abort" | "disconnect" | "end" | "undecodable";
    readonly inFlight: readonly bigint[];
  };

/**
 * What the session negotiates by itself, and its limits.
 *
 * @example
 * ```ts
 * import { ClientSession, type ClientSessionOptions } from "@nbd/codec";
 * const opts: ClientSessionOptions = { go: { name: "disk", contexts: ["base:allocation"] }, strict: true };
 * console.log(new ClientSession(opts).state.phase); // "greeting"
 * ```
 */
export interface ClientSessionOptions extends SessionLimits {
  /**
   * After the greeting, negotiate the reply style by itself (extended headers, else structured replies, as
   * allowed below). Default `true`.
   */
  readonly negotiateReplies?: boolean;
  /** Ask for extended headers. Default `true`. */
  readonly extendedHeaders?: boolean;
  /** Ask for structured replies. Default `true`. */
  readonly structuredReplies?: boolean;
  /** Set NBD_FLAG_C_NO_ZEROES when the server offers NO_ZEROES. Default `true`. */
  readonly noZeroes?: boolean;
  /**
   * Enter transmission by itself: select `contexts` (when structured replies are in force), then GO with
   * `info` (default NAME, DESCRIPTION, BLOCK_SIZE, INIT_FLAGS), falling back to EXPORT_NAME on
   * NBD_REP_ERR_UNSUP (and using it directly with a non-fixed newstyle server). `false`: stay in option
   * haggling for the caller's calls. Default `{ name: "" }`.
   */
  readonly go?: false | {
    readonly name?: string;
    readonly contexts?: readonly string[];
    readonly info?: readonly number[];
  };
  /**
   * Check each command against what the server advertised (flags, block sizes, read-only, bounds, payload
   * limit) before sending it. Default `true`; `false` (or `check: false` on one command) lets a test send
   * what a server must refuse.
   */
  readonly checkRequests?: boolean;
}

/**
 * The negotiated state, readable at any time.
 *
 * @example
 * ```ts
 * import { ClientSession, type ClientSessionState } from "@nbd/codec";
 * const s: ClientSessionState = new ClientSession().state;
 * console.log(s.replyMode, s.inFlight); // "simple" 0
 * ```
 */
export interface ClientSessionState {
  /** Where the session is. */
  readonly phase: ClientPhase;
  /** `unknown` until the greeting. */
  readonly handshake: "unknown" | "oldstyle" | "newstyle" | "fixed-newstyle";
  /** The server's handshake flags (newstyle). */
  readonly handshakeFlags: number | undefined;
  /** The client flags sent (newstyle). */
  readonly clientFlags: number | undefined;
  /** Whether both sides dropped the 124 zero bytes of the EXPORT_NAME reply. */
  readonly noZeroes: boolean;
  /** The reply style in force. */
  readonly replyMode: ReplyMode;
  /** The selected metadata contexts (id → name). */
  readonly contexts: ReadonlyMap<number, string>;
  /** The export in use (transmission), or the last one GO/INFO told about. */
  readonly export: ExportDetails | undefined;
  /** Commands in flight. */
  readonly inFlight: number;
  /** Options sent or queued, not yet answered. */
  readonly pendingOptions: number;
}

/**
 * Options of {@link ClientSession.read}.
 *
 * @example
 * ```ts
 * import type { ReadOptions } from "@nbd/codec";
 * const o: ReadOptions = { buffer: new Uint8Array(4096), flags: 0 };
 * console.log(o.buffer?.length); // 4096
 * ```
 */
export interface ReadOptions extends RequestOptions {
  /** Where the data goes (exactly `length` bytes). Default: a new array. */
  readonly buffer?: Uint8Array;
}

/**
 * Options of every command: flags, a cookie of the caller's choosing, and whether to check it.
 *
 * @example
 * ```ts
 * import { CommandFlag, type RequestOptions } from "@nbd/codec";
 * const o: RequestOptions = { flags: CommandFlag.FUA };
 * console.log(o.flags); // 1
 * ```
 */
export interface RequestOptions {
  /** Command flags (`CommandFlag`); PAYLOAD_LEN is set by the session where the mode needs it. */
  readonly flags?: number;
  /** A cookie of the caller's choosing (it must not be in flight). Default: the session's lowest free one. */
  readonly cookie?: bigint | number;
  /** `false`: skip the checks against what the server advertised (to test a server's error replies). */
  readonly check?: boolean;
}

/**
 * Options of {@link ClientSession.blockStatus}.
 *
 * @example
 * ```ts
 * import type { BlockStatusOptions } from "@nbd/codec";
 * const o: BlockStatusOptions = { contextIds: [1] };
 * console.log(o.contextIds); // [ 1 ]
 * ```
 */
export interface BlockStatusOptions extends RequestOptions {
  /** The payload form (extended headers, NBD_FLAG_BLOCK_STATUS_PAYLOAD): report on these context ids only. */
  readonly contextIds?: readonly number[];
}

/** Info types GO and INFO ask for by default. */
const DEFAULT_INFO: readonly number[] = [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE, Info.INIT_FLAGS];
/** Spec default maximum payload when the server sent no NBD_INFO_BLOCK_SIZE (2^25). */
const DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024;
const NONE_DATA = { kind: "none" } as const;
const EMPTY_CONTEXTS: ReadonlyMap<number, string> = new Map();

type Step = "ext" | "sr" | "contexts" | "go" | "export-name" | undefined;

interface PendingOption {
  readonly id: number;
  readonly request: OptionRequest;
  /** An automatic step, whose outcome chooses the next one. */
  readonly step: Step;
  readonly replies: OptionReplyFrame[];
  sent: boolean;
}

/**
 * A client session over one connection. No I/O: feed it what the server sends, send what
 * {@link ClientSession.takeOutput} returns.
 *
 * @example
 * ```ts
 * import { ClientSession } from "@nbd/codec";
 * const hex = (s: string) => Uint8Array.from(s.match(/../g)!, (h) => parseInt(h, 16));
 * const s = new ClientSession({ go: false, negotiateReplies: false });
 * // An oldstyle greeting: magic, cliserv magic, size 1 MiB, flags HAS_FLAGS|SEND_FLUSH, 124 zero bytes.
 * const events = s.receive(hex("4e42444d41474943" + "0000420281861253" + "0000000000100000" + "00000005" + "00".repeat(124)));
 * console.log(events.map((e) => e.type), s.state.phase); // [ "greeting", "ready" ] "transmission"
 * const cookie = s.read(0, 512);
 * console.log(s.takeOutput()[0]?.length, cookie); // 28 1n
 * ```
 */
export class ClientSession {
  readonly #o: ResolvedSessionLimits;
  readonly #negotiateReplies: boolean;
  readonly #tryExtended: boolean;
  readonly #tryStructured: boolean;
  readonly #wantNoZeroes: boolean;
  readonly #go: { name: string; contexts: readonly string[]; info: readonly number[] } | undefined;
  readonly #check: boolean;
  #decoder: ServerDecoderImpl;
  #phase: ClientPhase = "greeting";
  #handshake: ClientSessionState["handshake"] = "unknown";
  #handshakeFlags: number | undefined;
  #clientFlags: number | undefined;
  #mode: ReplyMode = "simple";
  #contexts: ReadonlyMap<number, string> = EMPTY_CONTEXTS;
  #contextIds: ReadonlySet<number> = new Set();
  #export: ExportDetails | undefined;
  #options: PendingOption[] = [];
  #nextOptionId = 1;
  /**
   * Requests in flight under the session's own cookies, indexed by cookie: a cookie is the lowest free
   * slot number, reused once its reply is complete (as qemu does), so that no map or bigint is made per
   * request. Cookies of the caller's choosing live in `#custom`.
   */
  readonly #slots: (InFlight | undefined)[] = [undefined];
  readonly #free: number[] = [];
  readonly #bigs: bigint[] = [0n];
  readonly #custom = new Map<number | bigint, InFlight>();
  #inFlightCount = 0;
  /** Records of completed requests, for reuse. */
  readonly #pool: InFlight[] = [];
  // Transmission framing (the session's own: replies are matched to what it sent as they arrive).
  /** Whether transmission bytes go through the session's own framing (not the stream decoder). */
  #tx = false;
  /** Stream offset of the next server byte not yet consumed. */
  #rx = 0;
  /** Bytes of an incomplete frame, and how many it needs in all (0: not known yet). */
  #acc: Uint8Array[] = [];
  #accLen = 0;
  #accNeed = 0;
  /** A data payload (OFFSET_DATA or simple READ data) being copied into its READ buffer as it arrives. */
  #sTarget: Uint8Array | undefined;
  #sAt = 0;
  #sLeft = 0;
  #sInFlight: InFlight | undefined;
  #sDone = false;
  #sFrameAt = 0;
  /** Bytes to send and events, each allocated at its first element as a one-element array (a push onto `[]`
   * reserves 17 slots, the largest allocation of a READ's round trip otherwise). */
  #output: Uint8Array[] | undefined;
  #events: ClientEvent[] | undefined;
  #findings: Finding[] = [];
  #disconnected = false;
  #ctx: RequestContext | undefined;
  readonly #fields: RequestHeaderFields = createRequestHeaderFields();
  #slab: Uint8Array = new Uint8Array(SLAB_BYTES);
  #slabAt = 0;

  /**
   * Creates a session; nothing is sent before the server's greeting arrives.
   *
   * @param options what to negotiate by itself, limits and strictness
   */
  constructor(options?: ClientSessionOptions) {
    this.#o = resolveSessionLimits(options);
    this.#negotiateReplies = options?.negotiateReplies ?? true;
    this.#tryExtended = options?.extendedHeaders ?? true;
    this.#tryStructured = options?.structuredReplies ?? true;
    this.#wantNoZeroes = options?.noZeroes ?? true;
    this.#check = options?.checkRequests ?? true;
    const go = options?.go ?? {};
    this.#go = go === false ? undefined : {
      name: go.name ?? "",
      contexts: go.contexts ?? [],
      info: go.info ?? DEFAULT_INFO,
    };
    this.#decoder = this.#newDecoder(undefined);
  }

  #newDecoder(state: StreamOptions | undefined): ServerDecoderImpl {
    const d = new ServerDecoderImpl({
      strict: false,
      payloadViews: true,
      maxStringLength: this.#o.maxStringLength,
      maxPayloadLength: this.#o.maxPayloadLength,
      maxBufferedBytes: this.#o.maxBufferedBytes,
      ...(state ?? {}),
    });
    // Frames are matched to what this session sent, one step at a time: an option reply or a reply whose
    // option or request is not noted yet waits (the session notes them as it handles earlier frames).
    d.waitForClient = true;
    return d;
  }

  /**
   * The negotiated state.
   *
   * @example
   * ```ts
   * import { ClientSession } from "@nbd/codec";
   * console.log(new ClientSession().state.handshake); // "unknown"
   * ```
   */
  get state(): ClientSessionState {
    return {
      phase: this.#phase,
      handshake: this.#handshake,
      handshakeFlags: this.#handshakeFlags,
      clientFlags: this.#clientFlags,
      noZeroes: this.#clientFlags !== undefined && (this.#clientFlags & ClientFlag.C_NO_ZEROES) !== 0,
      replyMode: this.#mode,
      contexts: this.#contexts,
      export: this.#export,
      inFlight: this.#inFlightCount,
      pendingOptions: this.#options.length,
    };
  }

  /**
   * Every server violation seen so far (lenient mode).
   *
   * @example
   * ```ts
   * import { ClientSession } from "@nbd/codec";
   * console.log(new ClientSession().findings.length); // 0
   * ```
   */
  get findings(): readonly Finding[] {
    return this.#findings;
  }

  /**
   * "Need more bytes" as a value: at least how many more server bytes must arrive before the next frame
   * can be decoded (a transport may read exactly that much without running past a frame).
   *
   * @example
   * ```ts
   * import { ClientSession } from "@nbd/codec";
   * const s = new ClientSession();
   * s.receive(new Uint8Array([0x4e, 0x42]));
   * console.log(s.needed); // 14: a greeting is told apart after 16 bytes
   * ```
   */
  get needed(): number {
    if (this.#phase === "closed") return 0;
    if (!this.#tx) return this.#decoder.needed;
    if (this.#sLeft > 0) return this.#sLeft;
    if (this.#accNeed > 0) return this.#accNeed - this.#accLen;
    return Math.max(1, 4 - this.#accLen);
  }

  /**
   * The bytes to send, in order, since the last call (WRITE data is the caller's own array, not a copy).
   *
   * @example
   * ```ts
   * import { ClientSession } from "@nbd/codec";
   * console.log(new ClientSession().takeOutput()); // []
   * ```
   */
  takeOutput(): Uint8Array[] {
    const out = this.#output;
    if (out === undefined) return [];
    this.#output = undefined;
    return out;
  }

  /**
   * Feeds bytes from the server (any split) and returns what they completed. Throws
   * {@link NbdRemoteError} in strict mode at the server's first violation, and in both modes when the
   * bytes cannot be decoded at all.
   *
   * @example
   * ```ts
   * import { ClientSession } from "@nbd/codec";
   * const s = new ClientSession();
   * console.log(s.receive(new Uint8Array([0x4e, 0x42])).length); // 0: need more bytes
   * ```
   */
  receive(chunk: Uint8Array): ClientEvent[] {
    if (this.#phase === "closed") return [];
    if (this.#tx) this.#receiveTx(chunk);
    else this.#receiveHandshake(chunk);
    const out = this.#events;
    if (out === undefined) return [];
    this.#events = undefined;
    return out;
  }

  /**
   * The server closed the connection: reports an incomplete frame and the commands that never completed.
   *
   * @example
   * ```ts
   * import { ClientSession } from "@nbd/codec";
   * console.log(new ClientSession().end().map((e) => e.type)); // [ "closed" ]
   * ```
   */
  end(): ClientEvent[] {
    if (this.#phase !== "closed") {
      if (!this.#tx) { for (const ev of this.#decoder.finish()) this.#onStreamEvent(ev); }
      else if (this.#accLen > 0 || this.#sLeft > 0) {
        this.#remote(
          "truncated",
          this.#rx,
          "stream-truncated",
          `the server's stream ends inside a frame at offset ${this.#rx}`,
        );
      }
      this.#close(this.#disconnected ? "disconnect" : "end");
    }
    const out = this.#events ?? [];
    this.#events = undefined;
    return out;
  }

  #out(bytes: Uint8Array): void {
    if (this.#output === undefined) this.#output = [bytes];
    else this.#output.push(bytes);
  }

  #event(e: ClientEvent): void {
    if (this.#events === undefined) this.#events = [e];
    else this.#events.push(e);
  }

  #receiveHandshake(chunk: Uint8Array): void {
    const d = this.#decoder;
    d.append(chunk);
    for (;;) {
      let st = d.step(false);
      // Everything sent is noted before its answer is decoded, so a frame still waiting for the client
      // side answers nothing the session sent: decode it anyway, as the violation it is.
      if (st.step === "blocked") st = d.step(true);
      if (st.step !== "event") break;
      this.#onStreamEvent(st.event);
      const phase = this.#phase as ClientPhase;
      if (phase === "closed") return;
      if (phase === "transmission") {
        // From here the session frames the replies itself, against the requests it has in flight.
        this.#tx = true;
        const q = d.queue;
        this.#rx = q.position;
        if (q.length > 0) {
          const rest = q.peek(q.length).slice();
          q.clear();
          this.#receiveTx(rest);
        }
        return;
      }
    }
  }

  // ------------------------------------------------------------------------------------------ replies

  #receiveTx(chunk: Uint8Array): void {
    let c = chunk;
    let p = 0;
    if (this.#sLeft > 0) {
      p = this.#stream(c, 0);
      if (this.#sLeft > 0) return;
    }
    if (this.#accLen > 0) {
      const more = c.length - p;
      if (this.#accNeed > 0 && this.#accLen + more < this.#accNeed) {
        if (more > 0) {
          this.#acc.push(c.slice(p));
          this.#accLen += more;
        }
        return;
      }
      c = concat(this.#acc, this.#accLen, c.subarray(p));
      p = 0;
      this.#acc = [];
      this.#accLen = 0;
      this.#accNeed = 0;
    }
    while (p < c.length) {
      const n = this.#frame(c, p);
      if (n === 0) {
        // An incomplete frame: kept (copied: the caller may reuse its chunk) until the rest arrives.
        const rest = c.slice(p);
        this.#acc = [rest];
        this.#accLen = rest.length;
        return;
      }
      p += n;
      if (this.#phase === "closed") return;
      if (this.#sLeft > 0) {
        p = this.#stream(c, p);
        if (this.#sLeft > 0) return;
      }
    }
  }

  /** Copies what is there of the data payload in progress; returns the new position in `c`. */
  #stream(c: Uint8Array, p: number): number {
    const n = Math.min(this.#sLeft, c.length - p);
    const t = this.#sTarget;
    if (t !== undefined) {
      t.set(p === 0 && n === c.length ? c : new Uint8Array(c.buffer, c.byteOffset + p, n), this.#sAt);
    }
    this.#sAt += n;
    this.#sLeft -= n;
    this.#rx += n;
    if (this.#sLeft === 0) {
      const inf = this.#sInFlight!;
      this.#sInFlight = undefined;
      this.#sTarget = undefined;
      if (this.#sDone) this.#complete(inf, this.#sFrameAt);
    }
    return p + n;
  }

  #lookup(hi: number, lo: number): InFlight | undefined {
    if (hi === 0 && lo < this.#slots.length) {
      const p = this.#slots[lo];
      if (p !== undefined) return p;
    }
    if (this.#custom.size === 0) return undefined;
    return this.#custom.get(hi < 0x20_0000 ? hi * 0x1_0000_0000 + lo : (BigInt(hi) << 32n) | BigInt(lo));
  }

  /**
   * Consumes one frame (or the fixed part of a data chunk, whose payload is then streamed) from `c` at `p`;
   * returns the bytes consumed, 0 when the frame is not complete (`#accNeed` then says how much it needs).
   */
  #frame(c: Uint8Array, p: number): number {
    const avail = c.length - p;
    if (avail < 4) return 0;
    const magic = u32(c, p);
    const at = this.#rx;
    const mode = this.#mode;
    if (magic === Magic.STRUCTURED_REPLY || magic === Magic.EXTENDED_REPLY) {
      const ext = magic === Magic.EXTENDED_REPLY;
      const hl = ext ? 32 : 20;
      if (avail < hl) return 0;
      let len: number;
      if (ext) {
        const hi = u32(c, p + 24);
        len = hi > 0x1f_ffff ? -1 : hi * 0x1_0000_0000 + u32(c, p + 28);
      } else len = u32(c, p + 16);
      if (len < 0 || len > this.#o.maxPayloadLength) {
        return this.#fatal(
          "limit-exceeded",
          at + (ext ? 24 : 16),
          "max-payload-length",
          `Cannot decode reply chunk: its payload length exceeds the limit of ${this.#o.maxPayloadLength} bytes`,
        );
      }
      const flags = (c[p + 4]! << 8) | c[p + 5]!;
      const type = (c[p + 6]! << 8) | c[p + 7]!;
      const inf = this.#lookup(u32(c, p + 8), u32(c, p + 12));
      const styleOk = ext === (mode === "extended") && mode !== "simple";
      if (styleOk && inf !== undefined && (flags & ~ReplyFlag.DONE) === 0) {
        if (type === ReplyType.OFFSET_DATA && len > 8 && inf.buffer !== undefined && inf.offsetNum >= 0) {
          // The common case: data straight into the READ buffer as it arrives, no frame object.
          if (avail < hl + 8) return 0;
          if (ext) this.#checkHeaderOffset(inf, c, p, at);
          const ohi = u32(c, p + hl);
          const off = ohi * 0x1_0000_0000 + u32(c, p + hl + 4);
          const size = len - 8;
          const start = ohi > 0x1f_ffff ? -1 : off - inf.offsetNum;
          const ok = content(inf, start, size, at, hl, ohi > 0x1f_ffff ? u64(c, p + hl) : off, this.#report);
          this.#rx += hl + 8;
          this.#sTarget = ok ? inf.buffer : undefined;
          this.#sAt = start;
          this.#sLeft = size;
          this.#sInFlight = inf;
          this.#sDone = (flags & ReplyFlag.DONE) !== 0;
          this.#sFrameAt = at;
          return hl + 8;
        }
        if (type === ReplyType.NONE && len === 0 && flags === ReplyFlag.DONE) {
          if (ext) this.#checkHeaderOffset(inf, c, p, at);
          this.#rx += hl;
          this.#complete(inf, at);
          return hl;
        }
      }
      const total = hl + len;
      if (total > this.#o.maxBufferedBytes) {
        return this.#fatal(
          "limit-exceeded",
          at,
          "max-buffered-bytes",
          `Cannot buffer a reply chunk of ${total} bytes: above maxBufferedBytes ${this.#o.maxBufferedBytes}`,
        );
      }
      if (avail < total) {
        this.#accNeed = total;
        return 0;
      }
      this.#chunk(c, p, hl, inf, at);
      this.#rx += total;
      return total;
    }
    if (magic === Magic.SIMPLE_REPLY) {
      if (avail < 16) return 0;
      const error = u32(c, p + 4);
      const inf = this.#lookup(u32(c, p + 8), u32(c, p + 12));
      if (mode === "extended") {
        this.#remote(
          "unexpected-frame",
          at,
          "reply-header-style",
          "a simple reply after extended headers were negotiated; only extended reply chunks are allowed",
        );
      }
      this.#rx += 16;
      if (inf === undefined) {
        this.#remote(
          "unexpected-frame",
          at + 8,
          "reply-unknown-cookie",
          `simple reply for cookie ${u64(c, p + 8)}, which matches no outstanding request`,
        );
        return 16;
      }
      if (error !== 0) {
        fail(inf, error, "");
        this.#complete(inf, at);
        return 16;
      }
      if (inf.command === Command.READ) {
        if (mode !== "simple") {
          this.#report(
            inf,
            "unexpected-frame",
            at,
            "simple-reply-read-structured",
            "a simple reply to READ after structured replies were negotiated; READ replies MUST then be chunks",
          );
        }
        inf.covered = inf.length;
        this.#sTarget = inf.buffer;
        this.#sAt = 0;
        this.#sLeft = inf.length;
        this.#sInFlight = inf;
        this.#sDone = true;
        this.#sFrameAt = at;
        if (inf.length === 0) this.#complete(inf, at);
        return 16;
      }
      this.#complete(inf, at);
      return 16;
    }
    return this.#fatal(
      "bad-magic",
      at,
      "magic",
      `Cannot decode reply: magic is 0x${
        magic.toString(16).padStart(8, "0")
      }, expected 0x67446698 (simple), ` +
        "0x668e33ef (structured) or 0x6e8a278c (extended)",
    );
  }

  #checkHeaderOffset(inf: InFlight, c: Uint8Array, p: number, at: number): void {
    const hi = u32(c, p + 16);
    const lo = u32(c, p + 20);
    const same = inf.offsetNum >= 0
      ? hi * 0x1_0000_0000 + lo === inf.offsetNum && hi <= 0x1f_ffff
      : u64(c, p + 16) === inf.offset;
    if (!same) {
      this.#report(
        inf,
        "bad-value",
        at + 16,
        "extended-reply-offset",
        `the extended reply header's offset ${u64(c, p + 16)} differs from the request's ${inf.offset}; ` +
          "it MUST equal it",
      );
    }
  }

  /** Any other chunk: decoded by the frame decoder, then applied to its request. */
  #chunk(c: Uint8Array, p: number, hl: number, inf: InFlight | undefined, at: number): void {
    let r;
    try {
      r = decodeReplyChunk(c, {
        offset: p,
        strict: false,
        extendedHeaders: this.#mode === "extended",
        maxStringLength: this.#o.maxStringLength,
        maxPayloadLength: this.#o.maxPayloadLength,
      });
    } catch (e) {
      if (!isNbdDecodeError(e)) throw e;
      this.#fatal(e.code, at + e.offset - p, e.rule, e.message);
      return;
    }
    if (!r.done) return; // cannot happen: the whole frame is there
    for (const f of r.findings) {
      const g = this.#remote(f.code, at + f.offset - p, f.rule, f.message);
      if (inf !== undefined) (inf.findings ??= []).push(g);
    }
    if (this.#mode === "simple") {
      this.#remote(
        "unexpected-frame",
        at,
        "chunk-without-negotiation",
        "a structured reply chunk although neither structured replies nor extended headers were negotiated",
      );
    }
    const chunk = r.frame;
    if (inf === undefined) {
      this.#remote(
        "unexpected-frame",
        at + 8,
        "reply-unknown-cookie",
        `reply chunk for cookie ${chunk.cookie}, which matches no outstanding request`,
      );
      return;
    }
    if (chunk.extended) this.#checkHeaderOffset(inf, c, p, at);
    if (applyChunk(inf, chunk, undefined, at, hl, this.#contextName, this.#report)) this.#complete(inf, at);
  }

  /** Bytes that cannot be framed: the session is over (in both modes). */
  #fatal(code: NbdDecodeErrorCode, offset: number, rule: string, message: string): number {
    this.#close("undecodable");
    throw new NbdRemoteError(code, offset, rule, message);
  }

  // ------------------------------------------------------------------------------------------ stream events

  #onStreamEvent(ev: StreamEvent): void {
    if (ev.event === "notice") {
      for (const f of ev.findings) this.#finding(f);
      if (ev.notice === "tls") return;
      if (ev.notice === "undecodable") {
        // An undecodable notice always carries the finding that ended the direction (its rule is the decoder's).
        const f = ev.findings[0]!;
        this.#close("undecodable");
        throw new NbdRemoteError(f.code, ev.streamOffset, f.rule, f.message);
      }
      return;
    }
    const frame = ev.frame;
    switch (frame.type) {
      case "option-reply":
        this.#findingsOf(ev);
        this.#onOptionReply(ev, frame);
        break;
      case "export-name-reply": {
        this.#findingsOf(ev);
        const op = this.#options.shift();
        const details: ExportDetails = {
          name: op?.request.data.kind === "export-name" ? op.request.data.name : "",
          size: frame.size,
          transmissionFlags: frame.transmissionFlags,
        };
        if (op !== undefined) {
          this.#event({
            type: "option",
            id: op.id,
            option: Option.EXPORT_NAME,
            ok: true,
            result: { kind: "export", export: details },
          });
        }
        this.#enterTransmission(details);
        break;
      }
      case "oldstyle-greeting":
      case "newstyle-greeting":
        this.#findingsOf(ev);
        this.#onGreeting(frame);
        break;
      case "simple-reply":
      case "reply-chunk":
        // Before transmission no request was sent: nothing can be answered.
        this.#findingsOf(ev);
        this.#remote(
          "unexpected-frame",
          ev.frameOffset,
          "reply-before-transmission",
          "a transmission reply during the handshake, before any request was sent",
        );
        break;
      default:
        // The server direction's decoder yields server frames only.
    }
  }

  #findingsOf(ev: StreamFrame): void {
    const f = ev.findings;
    for (let i = 0; i < f.length; i++) this.#finding(f[i]!);
  }

  #finding(f: Finding): void {
    if (this.#o.strict) {
      this.#close("undecodable");
      throw new NbdRemoteError(f.code, f.offset, f.rule, f.message);
    }
    this.#findings.push(f);
    this.#event({ type: "finding", finding: f });
  }

  #remote(code: NbdDecodeErrorCode, offset: number, rule: string, message: string): Finding {
    const f: Finding = { code, offset, rule, message };
    this.#finding(f);
    return f;
  }

  #close(reason: "abort" | "disconnect" | "end" | "undecodable"): void {
    if (this.#phase === "closed") return;
    this.#phase = "closed";
    const inFlight: bigint[] = [];
    for (const p of this.#slots) if (p !== undefined) inFlight.push(p.cookie);
    for (const p of this.#custom.values()) inFlight.push(p.cookie);
    this.#slots.length = 1;
    this.#free.length = 0;
    this.#custom.clear();
    this.#inFlightCount = 0;
    this.#options = [];
    this.#event({ type: "closed", reason, inFlight });
  }

  // ------------------------------------------------------------------------------------------ handshake

  #onGreeting(
    g: { type: "oldstyle-greeting"; size: bigint; transmissionFlags: number } | {
      type: "newstyle-greeting";
      handshakeFlags: number;
    },
  ): void {
    if (g.type === "oldstyle-greeting") {
      this.#handshake = "oldstyle";
      this.#event({ type: "greeting", handshake: "oldstyle", handshakeFlags: 0 });
      this.#enterTransmission({ name: "", size: g.size, transmissionFlags: g.transmissionFlags });
      return;
    }
    const hf = g.handshakeFlags;
    const fixed = (hf & HandshakeFlag.FIXED_NEWSTYLE) !== 0;
    // A client sets only the flags the server offered (the server MUST close otherwise).
    const flags = (fixed ? ClientFlag.C_FIXED_NEWSTYLE : 0) |
      (this.#wantNoZeroes && (hf & HandshakeFlag.NO_ZEROES) !== 0 ? ClientFlag.C_NO_ZEROES : 0);
    this.#handshake = fixed ? "fixed-newstyle" : "newstyle";
    this.#handshakeFlags = hf;
    this.#clientFlags = flags;
    this.#phase = "options";
    this.#out(encodeClientFlags({ type: "client-flags", flags }));
    this.#decoder.noteClientFlags(flags);
    this.#event({ type: "greeting", handshake: this.#handshake, handshakeFlags: hf });
    if (!fixed) {
      // Without fixed newstyle only EXPORT_NAME is safe: the server may close on anything else.
      if (this.#go !== undefined) this.#queue(exportNameRequest(this.#go.name), "export-name");
      return;
    }
    if (this.#negotiateReplies && this.#tryExtended) this.#queueFront(noData(Option.EXTENDED_HEADERS), "ext");
    else if (this.#negotiateReplies && this.#tryStructured) {
      this.#queueFront(noData(Option.STRUCTURED_REPLY), "sr");
    } else this.#afterReplies();
  }

  /** After the reply style is settled: the automatic context selection and GO. */
  #afterReplies(): void {
    const go = this.#go;
    if (go === undefined) return;
    if (this.#mode !== "simple" && go.contexts.length > 0) {
      this.#queue(metaRequest(Option.SET_META_CONTEXT, go.name, go.contexts), "contexts");
    }
    this.#queue(infoRequest(Option.GO, go.name, go.info), "go");
  }

  #queue(request: OptionRequest, step: Step): number {
    const op: PendingOption = { id: this.#nextOptionId++, request, step, replies: [], sent: false };
    this.#options.push(op);
    this.#pump();
    return op.id;
  }

  #queueFront(request: OptionRequest, step: Step): number {
    const op: PendingOption = { id: this.#nextOptionId++, request, step, replies: [], sent: false };
    const head = this.#options[0];
    this.#options.splice(head?.sent === true ? 1 : 0, 0, op);
    this.#pump();
    return op.id;
  }

  /** Sends the head option when nothing is awaiting an answer (the spec allows one at a time). */
  #pump(): void {
    const op = this.#options[0];
    if (op === undefined || op.sent || this.#phase !== "options") return;
    op.sent = true;
    this.#decoder.noteOption(op.request);
    this.#out(encodeOptionRequest(op.request));
  }

  #onOptionReply(ev: StreamFrame, rep: OptionReplyFrame): void {
    const op = this.#options[0];
    if (op === undefined || !op.sent) return; // reported by the decoder (option-reply-unsolicited)
    const option = op.request.option;
    const r = rep.reply;
    if (r !== OptionReply.ACK && (r & 0x8000_0000) === 0) {
      const allowed = r === OptionReply.SERVER
        ? option === Option.LIST
        : r === OptionReply.INFO
        ? option === Option.INFO || option === Option.GO
        : r === OptionReply.META_CONTEXT
        ? option === Option.LIST_META_CONTEXT || option === Option.SET_META_CONTEXT
        : false;
      // Only the replies the option allows are collected. A known reply type the option does not allow is
      // the frame decoder's finding (option-reply-type-for-option, reported with the event); an unknown
      // non-error type (a newer server's) is shown in the event, without a finding, as the decoder decides.
      if (allowed) op.replies.push(rep);
      return;
    }
    this.#options.shift();
    if (r === OptionReply.ACK) this.#optionDone(ev, op);
    else this.#optionFailed(op, r, rep.data.kind === "error" ? rep.data.message : "");
    this.#pump();
  }

  #optionFailed(op: PendingOption, reply: number, message: string): void {
    const option = op.request.option;
    this.#event({ type: "option", id: op.id, option, ok: false, reply, message });
    // SET_META_CONTEXT replaces the selection even when it fails.
    if (option === Option.SET_META_CONTEXT) this.#setContexts(EMPTY_CONTEXTS);
    if (op.step === undefined) return;
    if (reply === OptionReply.ERR_TLS_REQD) return this.#giveUp(option, reply, message);
    switch (op.step) {
      case "ext":
        // qemu's and libnbd's order: extended headers, else structured replies, else simple replies.
        if (this.#tryStructured) this.#queueFront(noData(Option.STRUCTURED_REPLY), "sr");
        else this.#afterReplies();
        return;
      case "sr":
        return this.#afterReplies();
      case "contexts":
        // GO without contexts is still worth trying (BLOCK_STATUS will be refused locally).
        return;
      case "go":
        // Servers before GO (nbd-server < 3.10, nbdkit < 1.2) answer ERR_UNSUP: EXPORT_NAME then. A server
        // that took extended headers knows GO, so no fallback there.
        if (reply === OptionReply.ERR_UNSUP && this.#mode !== "extended") {
          this.#queueFront(exportNameRequest(exportOf(op.request)), "export-name");
          return;
        }
        return this.#giveUp(option, reply, message);
    }
  }

  /** The automatic steps cannot go on: the rest are dropped and the caller is told. */
  #giveUp(option: number, reply: number, message: string): void {
    this.#options = this.#options.filter((o) => o.step === undefined || o.sent);
    this.#event({ type: "negotiation-failed", option, reply, message });
  }

  #optionDone(ev: StreamFrame, op: PendingOption): void {
    const option = op.request.option;
    let result: OptionResult = ACK_RESULT;
    switch (option) {
      case Option.EXTENDED_HEADERS:
        this.#mode = "extended";
        break;
      case Option.STRUCTURED_REPLY:
        if (this.#mode === "simple") this.#mode = "structured";
        break;
      case Option.LIST: {
        const exports: { name: string; description: string }[] = [];
        for (const r of op.replies) {
          if (r.data.kind === "server") exports.push({ name: r.data.name, description: r.data.description });
        }
        result = { kind: "exports", exports };
        break;
      }
      case Option.LIST_META_CONTEXT:
      case Option.SET_META_CONTEXT: {
        const contexts: { id: number; name: string }[] = [];
        const ids = new Map<number, string>();
        for (const r of op.replies) {
          if (r.data.kind !== "meta-context") continue;
          contexts.push({ id: r.data.id, name: r.data.name });
          if (option === Option.SET_META_CONTEXT && ids.has(r.data.id)) {
            this.#remote(
              "duplicate",
              ev.frameOffset,
              "meta-context-duplicate-id",
              `SET_META_CONTEXT gave context id ${r.data.id} twice; ids MUST be unique`,
            );
          }
          ids.set(r.data.id, r.data.name);
        }
        if (option === Option.SET_META_CONTEXT) this.#setContexts(ids);
        result = { kind: "contexts", contexts };
        break;
      }
      case Option.INFO:
      case Option.GO: {
        const details = this.#exportDetails(ev, op);
        if (details === undefined) {
          this.#event({
            type: "option",
            id: op.id,
            option,
            ok: false,
            reply: 0,
            message: "no NBD_INFO_EXPORT",
          });
          return;
        }
        this.#export = details;
        result = { kind: "export", export: details };
        this.#event({ type: "option", id: op.id, option, ok: true, result });
        if (option === Option.GO) this.#enterTransmission(details);
        return;
      }
      case Option.ABORT:
        this.#event({ type: "option", id: op.id, option, ok: true, result });
        this.#close("abort");
        return;
      case Option.STARTTLS:
        this.#phase = "tls";
        this.#options = [];
        break;
    }
    this.#event({ type: "option", id: op.id, option, ok: true, result });
    if (op.step === "ext" || op.step === "sr") this.#afterReplies();
  }

  #setContexts(contexts: ReadonlyMap<number, string>): void {
    this.#contexts = contexts;
    this.#contextIds = new Set(contexts.keys());
  }

  #exportDetails(ev: StreamFrame, op: PendingOption): ExportDetails | undefined {
    let size: bigint | undefined;
    let flags = 0;
    const d: {
      name: string;
      size: bigint;
      transmissionFlags: number;
      canonicalName?: string;
      description?: string;
      blockSize?: { minimum: number; preferred: number; maximum: number };
      initFlags?: number;
    } = { name: exportOf(op.request), size: 0n, transmissionFlags: 0 };
    for (const r of op.replies) {
      if (r.data.kind !== "info") continue;
      const i = r.data.info;
      switch (i.kind) {
        case "export":
          size = i.size;
          flags = i.transmissionFlags;
          break;
        case "name":
          d.canonicalName = i.name;
          break;
        case "description":
          d.description = i.description;
          break;
        case "block-size":
          d.blockSize = { minimum: i.minimum, preferred: i.preferred, maximum: i.maximum };
          break;
        case "init-flags":
          d.initFlags = i.flags;
          break;
      }
    }
    if (size === undefined) {
      this.#remote(
        "unexpected-frame",
        ev.frameOffset,
        "info-export-missing",
        `${optionName(op.request.option)} succeeded without NBD_INFO_EXPORT; the server MUST send it`,
      );
      return undefined;
    }
    d.size = size;
    d.transmissionFlags = flags;
    return d;
  }

  #enterTransmission(details: ExportDetails): void {
    this.#export = details;
    this.#phase = "transmission";
    this.#options = [];
    const bs = details.blockSize;
    this.#ctx = {
      extended: this.#mode === "extended",
      structured: this.#mode !== "simple",
      transmissionFlags: details.transmissionFlags,
      size: details.size,
      sizeNum: details.size <= MAX_SAFE ? Number(details.size) : -1,
      minimumBlock: bs?.minimum ?? 1,
      maximumPayload: bs !== undefined && bs.maximum !== 0xffff_ffff ? bs.maximum : DEFAULT_MAX_PAYLOAD,
      contextIds: this.#contextIds,
    };
    this.#event({ type: "ready", export: details });
  }

  // ------------------------------------------------------------------------------------------ options API

  #optionCall(request: OptionRequest): number {
    if (this.#phase !== "options") {
      throw new NbdLocalError(
        "bad-state",
        "option-phase",
        `Cannot send ${optionName(request.option)}: the session is in ${this.#phase}`,
      );
    }
    if (this.#handshake !== "fixed-newstyle" && request.option !== Option.EXPORT_NAME) {
      throw new NbdLocalError(
        "not-advertised",
        "option-fixed-newstyle",
        `Cannot send ${
          optionName(request.option)
        }: the server is not fixed newstyle (only EXPORT_NAME is safe)`,
      );
    }
    return this.#queue(request, undefined);
  }

  /**
   * Sends any option (sent when the options before it are answered); its outcome arrives as an `option`
   * event with the returned id. The typed calls below are shorthands.
   *
   * @example
   * ```ts
   * import { ClientSession, Option } from "@nbd/codec";
   * const s = new ClientSession({ go: false, negotiateReplies: false });
   * s.receive(Uint8Array.from("4e42444d4147494349484156454f50540003".match(/../g)!, (h) => parseInt(h, 16)));
   * s.takeOutput();
   * s.option({ type: "option-request", option: Option.LIST, data: { kind: "none" } });
   * console.log(s.takeOutput()[0]?.length); // 16
   * ```
   */
  option(request: OptionRequest): number {
    return this.#optionCall(request);
  }

  /**
   * NBD_OPT_LIST: the result is `{ kind: "exports" }`.
   *
   * @example
   * ```ts
   * import { ClientSession } from "@nbd/codec";
   * const s = new ClientSession({ go: false, negotiateReplies: false });
   * s.receive(Uint8Array.from("4e42444d4147494349484156454f50540001".match(/../g)!, (h) => parseInt(h, 16)));
   * console.log(s.list()); // 1
   * ```
   */
  list(): number {
    return this.#optionCall(noData(Option.LIST));
  }

  /**
   * NBD_OPT_INFO: the export's details without leaving option haggling (`{ kind: "export" }`).
   *
   * @example
   * ```ts
   * import { ClientSession } from "@nbd/codec";
   * const s = new ClientSession({ go: false, negotiateReplies: false });
   * s.receive(Uint8Array.from("4e42444d4147494349484156454f50540001".match(/../g)!, (h) => parseInt(h, 16)));
   * console.log(s.info("disk")); // 1
   * ```
   */
  info(name: string, info: readonly number[] = DEFAULT_INFO): number {
    return this.#optionCall(infoRequest(Option.INFO, name, info));
  }

  /**
   * NBD_OPT_GO: selects the export and enters transmission (a `ready` event follows the `option` one).
   *
   * @example
   * ```ts
   * import { ClientSession } from "@nbd/codec";
   * const s = new ClientSession({ go: false, negotiateReplies: false });
   * s.receive(Uint8Array.from("4e42444d4147494349484156454f50540001".match(/../g)!, (h) => parseInt(h, 16)));
   * console.log(s.go("disk")); // 1
   * ```
   */
  go(name: string, info: readonly number[] = DEFAULT_INFO): number {
    return this.#optionCall(infoRequest(Option.GO, name, info));
  }

  /**
   * NBD_OPT_EXPORT_NAME: the old way into transmission (the server closes the connection to refuse).
   *
   * @example
   * ```ts
   * import { ClientSession } from "@nbd/codec";
   * const s = new ClientSession({ go: false, negotiateReplies: false });
   * s.receive(Uint8Array.from("4e42444d4147494349484156454f50540000".match(/../g)!, (h) => parseInt(h, 16)));
   * console.log(s.exportName("disk")); // 1
   * ```
   */
  exportName(name: string): number {
    return this.#optionCall(exportNameRequest(name));
  }

  /**
   * NBD_OPT_LIST_META_CONTEXT: the contexts matching the queries (all of them for no query).
   *
   * @example
   * ```ts
   * import { ClientSession } from "@nbd/codec";
   * const s = new ClientSession({ go: false, negotiateReplies: false });
   * s.receive(Uint8Array.from("4e42444d4147494349484156454f50540001".match(/../g)!, (h) => parseInt(h, 16)));
   * console.log(s.listContexts("disk", ["qemu:"])); // 1
   * ```
   */
  listContexts(name: string, queries: readonly string[] = []): number {
    return this.#optionCall(metaRequest(Option.LIST_META_CONTEXT, name, queries));
  }

  /**
   * NBD_OPT_SET_META_CONTEXT: selects contexts for BLOCK_STATUS (needs structured replies).
   *
   * @example
   * ```ts
   * import { ClientSession } from "@nbd/codec";
   * const s = new ClientSession({ go: false, negotiateReplies: false });
   * s.receive(Uint8Array.from("4e42444d4147494349484156454f50540001".match(/../g)!, (h) => parseInt(h, 16)));
   * console.log(s.setContexts("disk", ["base:allocation"])); // 1
   * ```
   */
  setContexts(name: string, queries: readonly string[]): number {
    return this.#optionCall(metaRequest(Option.SET_META_CONTEXT, name, queries));
  }

  /**
   * NBD_OPT_STRUCTURED_REPLY or NBD_OPT_EXTENDED_HEADERS, by hand (the session does both by itself unless
   * `negotiateReplies` is `false`).
   *
   * @example
   * ```ts
   * import { ClientSession } from "@nbd/codec";
   * const s = new ClientSession({ go: false, negotiateReplies: false });
   * s.receive(Uint8Array.from("4e42444d4147494349484156454f50540001".match(/../g)!, (h) => parseInt(h, 16)));
   * console.log(s.requestReplies("structured")); // 1
   * ```
   */
  requestReplies(mode: "structured" | "extended"): number {
    return this.#optionCall(noData(mode === "extended" ? Option.EXTENDED_HEADERS : Option.STRUCTURED_REPLY));
  }

  /**
   * NBD_OPT_STARTTLS. After its ACK the session is in `tls`: upgrade the transport, then call
   * {@link ClientSession.tlsEstablished}.
   *
   * @example
   * ```ts
   * import { ClientSession } from "@nbd/codec";
   * const s = new ClientSession({ go: false, negotiateReplies: false });
   * s.receive(Uint8Array.from("4e42444d4147494349484156454f50540001".match(/../g)!, (h) => parseInt(h, 16)));
   * console.log(s.startTls()); // 1
   * ```
   */
  startTls(): number {
    return this.#optionCall(noData(Option.STARTTLS));
  }

  /**
   * The TLS handshake is done: option haggling starts again from scratch (the spec wipes the reply style
   * and the contexts), and the automatic steps run again.
   *
   * @example
   * ```ts
   * import { ClientSession, isNbdLocalError } from "@nbd/codec";
   * try {
   *   new ClientSession().tlsEstablished();
   * } catch (e) {
   *   console.log(isNbdLocalError(e)); // true
   * }
   * ```
   */
  tlsEstablished(): void {
    if (this.#phase !== "tls") {
      throw new NbdLocalError("bad-state", "tls-phase", "Cannot finish TLS: STARTTLS has not succeeded");
    }
    this.#decoder = this.#newDecoder({
      state: {
        phase: "options",
        style: "newstyle",
        handshakeFlags: this.#handshakeFlags ?? 0,
        clientFlags: this.#clientFlags ?? 0,
      },
    });
    this.#phase = "options";
    this.#mode = "simple";
    this.#setContexts(EMPTY_CONTEXTS);
    if (this.#negotiateReplies && this.#tryExtended) this.#queue(noData(Option.EXTENDED_HEADERS), "ext");
    else if (this.#negotiateReplies && this.#tryStructured) {
      this.#queue(noData(Option.STRUCTURED_REPLY), "sr");
    } else this.#afterReplies();
  }

  /**
   * NBD_OPT_ABORT: ends option haggling (the server may close without its ACK).
   *
   * @example
   * ```ts
   * import { ClientSession } from "@nbd/codec";
   * const s = new ClientSession({ go: false, negotiateReplies: false });
   * s.receive(Uint8Array.from("4e42444d4147494349484156454f50540001".match(/../g)!, (h) => parseInt(h, 16)));
   * console.log(s.abort()); // 1
   * ```
   */
  abort(): number {
    return this.#optionCall(noData(Option.ABORT));
  }

  // ------------------------------------------------------------------------------------------ commands

  /**
   * NBD_CMD_READ of `length` bytes at `offset` into `options.buffer` (or a new array); returns the cookie.
   * The `reply` event's `result.data` is the buffer, assembled from data and hole chunks.
   *
   * @example
   * ```ts
   * import { ClientSession } from "@nbd/codec";
   * const s = new ClientSession();
   * try {
   *   s.read(0, 512);
   * } catch (e) {
   *   console.log((e as Error).name); // "NbdLocalError": not in transmission yet
   * }
   * ```
   */
  read(offset: number | bigint, length: number, options?: ReadOptions): bigint {
    const buffer = options?.buffer ?? new Uint8Array(toU32(length, "length"));
    if (buffer.length !== length) {
      throw new NbdLocalError(
        "bad-argument",
        "read-buffer",
        `The read buffer holds ${buffer.length} bytes, not ${length}`,
      );
    }
    return this.#send(
      Command.READ,
      options?.flags ?? 0,
      offset,
      length,
      options,
      buffer,
      undefined,
      undefined,
    );
  }

  /**
   * NBD_CMD_WRITE of `data` at `offset`; the header goes to the output, then `data` itself (no copy).
   *
   * @example
   * ```ts
   * import { ClientSession, isNbdLocalError } from "@nbd/codec";
   * try {
   *   new ClientSession().write(0, new Uint8Array(512));
   * } catch (e) {
   *   console.log(isNbdLocalError(e) && e.code); // "bad-state"
   * }
   * ```
   */
  write(offset: number | bigint, data: Uint8Array, options?: RequestOptions): bigint {
    return this.#send(
      Command.WRITE,
      options?.flags ?? 0,
      offset,
      data.length,
      options,
      undefined,
      data,
      undefined,
    );
  }

  /**
   * NBD_CMD_WRITE_ZEROES (flags NO_HOLE, FAST_ZERO, FUA).
   *
   * @example
   * ```ts
   * import { ClientSession, isNbdLocalError } from "@nbd/codec";
   * try {
   *   new ClientSession().writeZeroes(0, 4096);
   * } catch (e) {
   *   console.log(isNbdLocalError(e)); // true
   * }
   * ```
   */
  writeZeroes(offset: number | bigint, length: number | bigint, options?: RequestOptions): bigint {
    return this.#range(Command.WRITE_ZEROES, offset, length, options);
  }

  /**
   * NBD_CMD_TRIM.
   *
   * @example
   * ```ts
   * import { ClientSession, isNbdLocalError } from "@nbd/codec";
   * try {
   *   new ClientSession().trim(0, 4096);
   * } catch (e) {
   *   console.log(isNbdLocalError(e)); // true
   * }
   * ```
   */
  trim(offset: number | bigint, length: number | bigint, options?: RequestOptions): bigint {
    return this.#range(Command.TRIM, offset, length, options);
  }

  /**
   * NBD_CMD_CACHE.
   *
   * @example
   * ```ts
   * import { ClientSession, isNbdLocalError } from "@nbd/codec";
   * try {
   *   new ClientSession().cache(0, 4096);
   * } catch (e) {
   *   console.log(isNbdLocalError(e)); // true
   * }
   * ```
   */
  cache(offset: number | bigint, length: number | bigint, options?: RequestOptions): bigint {
    return this.#range(Command.CACHE, offset, length, options);
  }

  /**
   * NBD_CMD_FLUSH.
   *
   * @example
   * ```ts
   * import { ClientSession, isNbdLocalError } from "@nbd/codec";
   * try {
   *   new ClientSession().flush();
   * } catch (e) {
   *   console.log(isNbdLocalError(e)); // true
   * }
   * ```
   */
  flush(options?: RequestOptions): bigint {
    return this.#send(Command.FLUSH, options?.flags ?? 0, 0, 0, options, undefined, undefined, undefined);
  }

  /**
   * NBD_CMD_BLOCK_STATUS over `offset`+`length` for every selected context, or (payload form) for
   * `options.contextIds` only. The result's `extents` map context ids to typed extents.
   *
   * @example
   * ```ts
   * import { ClientSession, isNbdLocalError } from "@nbd/codec";
   * try {
   *   new ClientSession().blockStatus(0, 65536);
   * } catch (e) {
   *   console.log(isNbdLocalError(e)); // true
   * }
   * ```
   */
  blockStatus(offset: number | bigint, length: number | bigint, options?: BlockStatusOptions): bigint {
    return this.#send(
      Command.BLOCK_STATUS,
      options?.flags ?? 0,
      offset,
      u64Arg(length, "length"),
      options,
      undefined,
      undefined,
      options?.contextIds,
    );
  }

  /**
   * Any command with the given flags, offset and effect length (unknown commands need `check: false`); a
   * READ gets a new buffer, a WRITE must go through {@link ClientSession.write} (it carries data).
   *
   * @example
   * ```ts
   * import { ClientSession, Command, isNbdLocalError } from "@nbd/codec";
   * try {
   *   new ClientSession().command(Command.FLUSH, 0, 0);
   * } catch (e) {
   *   console.log(isNbdLocalError(e)); // true
   * }
   * ```
   */
  command(
    command: number,
    offset: number | bigint,
    length: number | bigint,
    options?: RequestOptions,
  ): bigint {
    if (!Number.isInteger(command) || command < 0 || command > 0xffff) {
      throw new NbdLocalError("bad-argument", "command-value", `Command ${command} is not a u16`);
    }
    if (command === Command.DISC) return this.disconnect(options);
    // READ needs a buffer and WRITE its data: their own calls take them.
    if (command === Command.READ) {
      const big = u64Arg(length, "length");
      const n = typeof big === "number" ? big : big <= 0xffff_ffffn ? Number(big) : -1;
      if (n < 0 || n > 0xffff_ffff) {
        throw new NbdLocalError(
          "limit-exceeded",
          "read-length",
          `A READ of ${length} bytes cannot be buffered`,
        );
      }
      return this.read(offset, n, options);
    }
    if (command === Command.WRITE) {
      throw new NbdLocalError("bad-argument", "write-data", "A WRITE carries data: use write()");
    }
    return this.#range(command, offset, length, options);
  }

  /**
   * NBD_CMD_DISC: no reply comes; nothing can be sent after it. Commands in flight still complete.
   *
   * @example
   * ```ts
   * import { ClientSession, isNbdLocalError } from "@nbd/codec";
   * try {
   *   new ClientSession().disconnect();
   * } catch (e) {
   *   console.log(isNbdLocalError(e)); // true
   * }
   * ```
   */
  disconnect(options?: RequestOptions): bigint {
    this.#ready("NBD_CMD_DISC");
    const key = this.#cookie(options);
    const cookie = BigInt(key);
    // DISC has no reply: its cookie is free again at once.
    if (options?.cookie === undefined && typeof key === "number") this.#free.push(key);
    const req: Request = {
      type: "request",
      extended: this.#mode === "extended",
      flags: options?.flags ?? 0,
      command: Command.DISC,
      cookie,
      offset: 0n,
      length: 0n,
    };
    this.#out(encodeRequest(req));
    this.#disconnected = true;
    return cookie;
  }

  #ready(what: string): RequestContext {
    if (this.#phase !== "transmission" || this.#ctx === undefined) {
      throw new NbdLocalError(
        "bad-state",
        "transmission-phase",
        `Cannot send ${what}: the session is in ${this.#phase}`,
      );
    }
    if (this.#disconnected) {
      throw new NbdLocalError("bad-state", "after-disc", `Cannot send ${what}: NBD_CMD_DISC was sent`);
    }
    return this.#ctx;
  }

  /** The next cookie: the session's counter, or the caller's (checked not to be in flight). */
  #cookie(options: RequestOptions | undefined): number | bigint {
    if (options?.cookie === undefined) {
      for (;;) {
        const c = this.#free.pop() ?? this.#slots.length;
        if (c === this.#slots.length) this.#slots.push(undefined);
        // A cookie of the caller's that equals this slot number is in flight: skip the slot for now.
        if (this.#custom.size === 0 || !this.#custom.has(c)) return c;
      }
    }
    const big = toU64(options.cookie, "cookie");
    const c = big <= MAX_SAFE ? Number(big) : big;
    if (
      this.#custom.has(c) || (typeof c === "number" && c < this.#slots.length && this.#slots[c] !== undefined)
    ) {
      throw new NbdLocalError(
        "duplicate-cookie",
        "cookie-in-flight",
        `A request with cookie ${c} is already in flight`,
      );
    }
    return c;
  }

  /** A command given by its range alone (any but READ and WRITE): no buffer, data or context list. */
  #range(
    command: number,
    offset: number | bigint,
    length: number | bigint,
    options?: RequestOptions,
  ): bigint {
    return this.#send(
      command,
      options?.flags ?? 0,
      offset,
      u64Arg(length, "length"),
      options,
      undefined,
      undefined,
      undefined,
    );
  }

  #send(
    command: number,
    flags: number,
    offsetArg: number | bigint,
    length: number | bigint,
    options: RequestOptions | undefined,
    buffer: Uint8Array | undefined,
    data: Uint8Array | undefined,
    contextIds: readonly number[] | undefined,
  ): bigint {
    const ctx = this.#ctx !== undefined && this.#phase === "transmission" && !this.#disconnected
      ? this.#ctx
      : this.#ready(nameOf("command", command) ?? `command ${command}`);
    // 64-bit values stay numbers while they are exact (the common case): no bigint on the hot path.
    const offset = u64Arg(offsetArg, "offset");
    const offsetNum = typeof offset === "number" ? offset : offset <= MAX_SAFE ? Number(offset) : -1;
    const lengthNum = typeof length === "number"
      ? length
      : length > MAX_SAFE
      ? Number.MAX_SAFE_INTEGER
      : Number(length);
    if (!Number.isInteger(flags) || flags < 0 || flags > 0xffff) {
      throw new NbdLocalError("bad-argument", "flags-value", `Command flags ${flags} are not a u16`);
    }
    const extended = ctx.extended;
    if (extended) {
      if (data !== undefined || contextIds !== undefined) flags |= CommandFlag.PAYLOAD_LEN;
    } else {
      if ((flags & CommandFlag.PAYLOAD_LEN) !== 0) {
        throw new NbdLocalError(
          "not-negotiated",
          "payload-len-compact",
          "PAYLOAD_LEN needs extended headers",
        );
      }
      if (lengthNum > 0xffff_ffff) {
        throw new NbdLocalError(
          "not-negotiated",
          "length-32",
          `Length ${length} needs extended headers (compact lengths are 32 bits)`,
        );
      }
      if (contextIds !== undefined) {
        throw new NbdLocalError(
          "not-negotiated",
          "block-status-payload",
          "A context list needs extended headers",
        );
      }
    }
    if (options?.check ?? this.#check) {
      checkRequest(ctx, command, flags, offset, length, contextIds, offsetNum, lengthNum);
    }
    if (command === Command.READ && lengthNum > this.#o.maxPayloadLength) {
      throw new NbdLocalError(
        "limit-exceeded",
        "max-payload-length",
        `READ of ${length} bytes is above the session's maxPayloadLength`,
      );
    }
    if (contextIds !== undefined) { for (const id of contextIds) toU32(id, "context id"); }
    const custom = options?.cookie !== undefined;
    const key = this.#cookie(options);
    const cookie = typeof key === "bigint" ? key : custom ? BigInt(key) : (this.#bigs[key] ??= BigInt(key));
    const blockStatus = contextIds === undefined ? undefined : { effectLength: BigInt(length), contextIds };
    const inf = (this.#pool.pop() ?? new InFlight()).init(
      cookie,
      key,
      extended,
      command,
      flags,
      offset,
      length,
      blockStatus,
      buffer,
      command === Command.BLOCK_STATUS ? (contextIds ?? [...this.#contextIds]) : undefined,
    );
    let header: Uint8Array;
    if (blockStatus !== undefined) {
      header = encodeRequest({ ...inf.request, length: BigInt(8 + 4 * blockStatus.contextIds.length) });
    } else {
      // The allocation-free header encoder, from the numbers at hand.
      const f = this.#fields;
      f.extended = extended;
      f.flags = flags;
      f.command = command;
      setHiLo(f, 0, key);
      setHiLo(f, 1, offset);
      setHiLo(f, 2, length);
      // Headers are written into a slab and handed out as views: one typed array per request, no
      // ArrayBuffer, and the encoder's DataView of the slab is reused. A region handed out is never
      // written again (a full slab is left to the GC once its views are gone).
      const n = extended ? 32 : 28;
      if (this.#slabAt + n > this.#slab.length) {
        this.#slab = new Uint8Array(SLAB_BYTES);
        this.#slabAt = 0;
      }
      const at = this.#slabAt;
      encodeRequestHeaderInto(this.#slab, at, f);
      this.#slabAt = at + n;
      // The constructor, not subarray(): no species lookup on this path.
      header = new Uint8Array(this.#slab.buffer, at, n);
    }
    this.#out(header);
    if (data !== undefined && data.length > 0) this.#out(data);
    if (custom) this.#custom.set(key, inf);
    else this.#slots[key as number] = inf;
    this.#inFlightCount++;
    return cookie;
  }

  readonly #report = (
    p: InFlight,
    code: NbdDecodeErrorCode,
    at: number,
    rule: string,
    message: string,
  ): void => {
    const f = this.#remote(code, at, rule, message);
    (p.findings ??= []).push(f);
  };

  readonly #contextName = (id: number): string | undefined => this.#contexts.get(id);

  #release(p: InFlight): void {
    const k = p.key;
    if (typeof k === "number" && this.#slots[k] === p) {
      this.#slots[k] = undefined;
      this.#free.push(k);
    } else this.#custom.delete(k);
    this.#inFlightCount--;
  }

  #complete(p: InFlight, at: number): void {
    this.#release(p);
    this.#event({ type: "reply", result: finishReply(p, at, this.#report) });
    if (this.#pool.length < 64) this.#pool.push(p);
  }
}

const ACK_RESULT: OptionResult = Object.freeze({ kind: "ack" });
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const SLAB_BYTES = 16384;

function u32(b: Uint8Array, i: number): number {
  return ((b[i]! << 24) | (b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!) >>> 0;
}

function u64(b: Uint8Array, i: number): bigint {
  return (BigInt(u32(b, i)) << 32n) | BigInt(u32(b, i + 4));
}

/** A 64-bit argument: the number itself when it is a non-negative safe integer, else checked as a bigint. */
function u64Arg(v: number | bigint, what: string): number | bigint {
  if (typeof v === "number" && v >= 0 && v <= Number.MAX_SAFE_INTEGER && Math.floor(v) === v) return v;
  return toU64(v, what);
}

/** Sets the cookie (0), offset (1) or length (2) of `f` from a number up to 2^53 or a bigint. */
function setHiLo(f: RequestHeaderFields, which: 0 | 1 | 2, v: number | bigint): void {
  let hi: number;
  let lo: number;
  if (typeof v === "number") {
    // ToUint32 is the value modulo 2^32 for any integer up to 2^53.
    lo = v >>> 0;
    hi = v <= 0xffff_ffff ? 0 : (v - lo) / 0x1_0000_0000;
  } else {
    hi = Number(v >> 32n);
    lo = Number(v & 0xffff_ffffn);
  }
  if (which === 0) {
    f.cookieHi = hi;
    f.cookieLo = lo;
  } else if (which === 1) {
    f.offsetHi = hi;
    f.offsetLo = lo;
  } else {
    f.lengthHi = hi;
    f.lengthLo = lo;
  }
}

/** The parts, then `tail`, in one new array. */
function concat(parts: readonly Uint8Array[], length: number, tail: Uint8Array): Uint8Array {
  const out = new Uint8Array(length + tail.length);
  let at = 0;
  for (const b of parts) {
    out.set(b, at);
    at += b.length;
  }
  out.set(tail, at);
  return out;
}

function noData(option: number): OptionRequest {
  return { type: "option-request", option, data: NONE_DATA };
}

function exportNameRequest(name: string): OptionRequest {
  return { type: "option-request", option: Option.EXPORT_NAME, data: { kind: "export-name", name } };
}

function infoRequest(option: number, name: string, info: readonly number[]): OptionRequest {
  return { type: "option-request", option, data: { kind: "info-request", name, info } };
}

function metaRequest(option: number, name: string, queries: readonly string[]): OptionRequest {
  return { type: "option-request", option, data: { kind: "meta-context-query", name, queries } };
}

function exportOf(r: OptionRequest): string {
  const d = r.data;
  return d.kind === "export-name" || d.kind === "info-request" || d.kind === "meta-context-query"
    ? d.name
    : "";
}

function optionName(option: number): string {
  return nameOf("option", option) ?? `option ${option}`;
}

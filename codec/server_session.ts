/**
 * A sans-I/O NBD server session: one object per connection that takes the client's bytes, answers the
 * whole handshake itself, hands the application only valid requests, answers invalid ones itself, and
 * builds replies that are legal for what was negotiated (h11's `Connection`, for NBD).
 *
 * The transport sends `start().output`, then feeds every chunk it reads to {@link ServerSession.receive}
 * and sends what it returns; the application answers `request` events with the reply builders
 * ({@link ServerSession.replyRead}, {@link ServerSession.replyOk}, ...), whose bytes it sends too.
 *
 * @module
 */
import {
  Command,
  CommandFlag,
  ErrorValue,
  Magic,
  nameOf,
  OptionReply,
  ReplyFlag,
  ReplyType,
  TransmissionFlag,
} from "./constants.ts";
import type { Finding } from "./errors.ts";
import { isNbdDecodeError } from "./errors.ts";
import {
  createBlockStatusDescriptors,
  createReplyHeaderFields,
  encodeReplyChunk,
  encodeReplyHeaderInto,
  type ReplyChunk,
  type ReplyHeaderFields,
} from "./reply.ts";
import { put32 } from "./_bytes.ts";
import { decodeRequest, decodeRequestHeader, type Request, type RequestDecodeOptions } from "./request.ts";
import { NbdLocalError, NbdRemoteError, resolveSessionLimits, toU32, toU64 } from "./session.ts";
import { ByteQueue } from "./_queue.ts";
import { NO_FINDINGS } from "./_report.ts";
import { plainHeader, plainRequest } from "./_request_plain.ts";
import { ServerHandshake } from "./_server_handshake.ts";
import type {
  ResolvedExport,
  ServerEndReason,
  ServerEvent,
  ServerExport,
  ServerPhase,
  ServerSessionOptions,
  ServerState,
  ServerStep,
} from "./_server_types.ts";

export type {
  ServerEndEvent,
  ServerEndReason,
  ServerEvent,
  ServerExport,
  ServerPhase,
  ServerRequestEvent,
  ServerSessionOptions,
  ServerState,
  ServerStep,
} from "./_server_types.ts";

/**
 * A block-status answer for one context: its extents from the request's offset on.
 *
 * @example
 * ```ts
 * import { type ContextExtents, StateFlag } from "@nbd/codec";
 * const a: ContextExtents = { contextId: 1, extents: [{ length: 65536, status: StateFlag.HOLE | StateFlag.ZERO }] };
 * console.log(a.extents.length); // 1
 * ```
 */
export interface ContextExtents {
  /** The context id (from the request event's `contexts`). */
  readonly contextId: number;
  /** Consecutive extents from the request offset; lengths and statuses as `number` or `bigint`. */
  readonly extents: readonly { readonly length: number | bigint; readonly status: number | bigint }[];
}

interface Pending {
  request: Request;
  /** Its key in the in-flight list. */
  key: number | bigint;
  command: number;
  /** Cookie and offset halves, for allocation-free headers. */
  cookieHi: number;
  cookieLo: number;
  offsetHi: number;
  offsetLo: number;
  /** The request's length as a number (exact: READ lengths are at most the maximum payload). */
  length: number;
  /** READ: bytes covered so far, and the covered ranges (relative) once there is more than one chunk. */
  covered: number;
  ranges: number[] | undefined;
  chunks: number;
  errorSent: boolean;
  /** BLOCK_STATUS: contexts still to answer. */
  contextsLeft: number[] | undefined;
  effectLength: bigint;
}

const KNOWN_ERRORS: ReadonlySet<number> = new Set(Object.values(ErrorValue));
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
/** Command flags that need a transmission flag advertised (spec: each flag's section). */
const FLAG_NEEDS: readonly (readonly [number, number, string])[] = [
  [CommandFlag.FUA, TransmissionFlag.SEND_FUA, "NBD_CMD_FLAG_FUA"],
  [CommandFlag.DF, TransmissionFlag.SEND_DF, "NBD_CMD_FLAG_DF"],
  [CommandFlag.FAST_ZERO, TransmissionFlag.SEND_FAST_ZERO, "NBD_CMD_FLAG_FAST_ZERO"],
];
/** The transmission flag each command needs (index = command), 0 when none. */
const NEEDS: readonly number[] = [
  0,
  0,
  0,
  TransmissionFlag.SEND_FLUSH,
  TransmissionFlag.SEND_TRIM,
  TransmissionFlag.SEND_CACHE,
  TransmissionFlag.SEND_WRITE_ZEROES,
  0,
];
const TWO32 = 0x1_0000_0000;

/**
 * A server session for one connection. Pure: no sockets, timers or clocks.
 *
 * @example
 * ```ts
 * import { ClientFlag, Command, encodeClientFlags, encodeOptionRequest, encodeRequest, Info, Option, ServerSession } from "@nbd/codec";
 * const s = new ServerSession({ exports: [{ name: "disk", size: 4096 }] });
 * s.start(); // the greeting, to send
 * s.receive(encodeClientFlags({ type: "client-flags", flags: ClientFlag.C_FIXED_NEWSTYLE | ClientFlag.C_NO_ZEROES }));
 * const go = s.receive(encodeOptionRequest({
 *   type: "option-request", option: Option.GO, data: { kind: "info-request", name: "disk", info: [Info.BLOCK_SIZE] },
 * }));
 * console.log(go.events.map((e) => e.type)); // [ "option", "ready" ]
 * const { events } = s.receive(encodeRequest({
 *   type: "request", extended: false, flags: 0, command: Command.READ, cookie: 1n, offset: 0n, length: 512n,
 * }));
 * if (events[0]?.type === "request") {
 *   const reply = s.replyRead(events[0].request.cookie, new Uint8Array(512));
 *   console.log(reply.map((b) => b.length)); // [ 16, 512 ]
 * }
 * ```
 */
export class ServerSession {
  readonly #limits: ReturnType<typeof resolveSessionLimits>;
  readonly #queue = new ByteQueue();
  #phase: ServerPhase = "start";
  readonly #hs: ServerHandshake;
  /** Negotiated reply style and selected contexts, fixed when transmission starts. */
  #structured = false;
  #extended = false;
  #meta: ReadonlyMap<number, string> = new Map();
  #export: ResolvedExport | undefined;
  #exportDecl: ServerExport | undefined;
  #flags = 0;
  #maxPayload = 0;
  /** Requests in flight by cookie (a number below 2^53, as real clients use, else the bigint). */
  readonly #pending = new InFlight();
  /** Payload bytes of a refused request still to discard. */
  #skip = 0;
  /** Option data of a too-big option still to discard, then answered ERR_TOO_BIG. */
  #skipOption: number | undefined;
  readonly #tolerated = new Set<string>();
  readonly #fields: ReplyHeaderFields = createReplyHeaderFields();
  /** Request decoding options, fixed when transmission starts (payload limits are the session's own). */
  #decodeOptions: RequestDecodeOptions = { strict: false, maxPayloadLength: Number.MAX_SAFE_INTEGER };
  /** Export size as a number; 2^53 when it is larger (ranges are then checked with bigints). */
  #sizeNum = 0;
  /** Minimum block size of the export in transmission (1 when it has no constraints). */
  #minBlock = 1;
  /** Command flags whose transmission flag was not advertised (FUA, DF, FAST_ZERO). */
  #unadvertised = 0;
  /** {@link ServerSession.end} was called. */
  #ended = false;
  /** Bytes to send, allocated at the first one (most requests produce none). */
  #output: Uint8Array[] | undefined;
  /** Events, allocated at the first one as a one-element array (a push onto `[]` reserves 17 slots). */
  #events: ServerEvent[] | undefined;

  /**
   * Creates the session; nothing is sent until {@link ServerSession.start}.
   *
   * @param options exports, policy and limits
   */
  constructor(options: ServerSessionOptions) {
    this.#limits = resolveSessionLimits(options);
    this.#hs = new ServerHandshake(options, this.#limits, {
      queue: this.#queue,
      phase: () => this.#phase,
      setPhase: (phase) => {
        this.#phase = phase;
      },
      skip: (length, option) => {
        this.#skip = length;
        this.#skipOption = option;
      },
      emit: (bytes) => this.#emit(bytes),
      event: (e) => this.#event(e),
      fatal: (error) => this.#fatal(error),
      tolerate: (finding) => this.#tolerate(finding),
      enter: (exp, flags) => this.#enter(exp, flags),
    });
  }

  /**
   * What has been negotiated so far.
   *
   * @example
   * ```ts
   * import { ServerSession } from "@nbd/codec";
   * console.log(new ServerSession({ exports: [] }).state.inFlight); // 0
   * ```
   */
  get state(): ServerState {
    return {
      phase: this.#phase,
      handshake: this.#hs.handshake,
      noZeroes: this.#hs.noZeroes,
      tls: this.#hs.tls,
      replyStyle: this.#hs.extended ? "extended" : this.#hs.structured ? "structured" : "simple",
      export: this.#exportDecl,
      transmissionFlags: this.#flags,
      // Never mutated once a call returns (each SET, GO or STARTTLS makes a new map): no copy needed.
      contexts: this.#hs.meta,
      inFlight: this.#pending.size,
    };
  }

  /**
   * Starts the connection: the greeting (newstyle), or the oldstyle greeting of the default export, after
   * which transmission begins at once.
   *
   * @example
   * ```ts
   * import { ServerSession } from "@nbd/codec";
   * const s = new ServerSession({ exports: [{ name: "", size: 1024 }], handshake: "oldstyle" });
   * const step = s.start();
   * console.log(step.output[0]?.length, step.events[0]?.type); // 152 "ready"
   * ```
   */
  start(): ServerStep {
    if (this.#phase !== "start") {
      throw new NbdLocalError("bad-state", "start-once", "start() was already called");
    }
    this.#hs.start();
    return this.#step();
  }

  /**
   * Takes a chunk of the client's bytes (any size, any split) and returns what to send and what happened.
   * Payload views in the events point into `chunk`: keep it unchanged until they are used.
   *
   * @example
   * ```ts
   * import { ServerSession } from "@nbd/codec";
   * const s = new ServerSession({ exports: [{ name: "", size: 512 }] });
   * s.start();
   * const step = s.receive(new Uint8Array([0, 0, 0, 3]));
   * console.log(s.state.phase, step.output.length); // "options" 0
   * ```
   */
  receive(chunk: Uint8Array): ServerStep {
    if (!(chunk instanceof Uint8Array)) {
      throw new NbdLocalError("bad-argument", "chunk", "chunk must be a Uint8Array");
    }
    const phase = this.#phase;
    if (phase === "start") throw new NbdLocalError("bad-state", "receive-before-start", "call start() first");
    if (phase === "tls-handshake") {
      throw new NbdLocalError(
        "bad-state",
        "receive-during-tls",
        "after STARTTLS the bytes are a TLS handshake for the transport; call tlsEstablished() first",
      );
    }
    if (phase === "closed") return this.#step();
    this.#queue.push(chunk);
    try {
      this.#pump();
    } catch (e) {
      if (!isNbdDecodeError(e)) throw e;
      this.#fatal(new NbdRemoteError(e.code, e.offset, e.rule, e.message, { cause: e }));
    }
    return this.#step();
  }

  /**
   * Tells the session the transport finished the TLS handshake after a `starttls` event. Everything
   * negotiated before is forgotten, as the spec requires; option haggling goes on.
   *
   * @example
   * ```ts
   * import { ServerSession } from "@nbd/codec";
   * const s = new ServerSession({ exports: [], tls: "required" });
   * try { s.tlsEstablished(); } catch (e) { console.log((e as Error).name); } // "NbdLocalError"
   * ```
   */
  tlsEstablished(): ServerStep {
    if (this.#phase !== "tls-handshake") {
      throw new NbdLocalError(
        "bad-state",
        "tls-established",
        "tlsEstablished() is only valid after a starttls event",
      );
    }
    this.#hs.tlsEstablished();
    this.#phase = "options";
    this.#pump();
    return this.#step();
  }

  /**
   * The client closed its side of the connection (the transport read the end of the stream): an `end` event
   * says whether it ended cleanly (after NBD_CMD_DISC or NBD_OPT_ABORT), inside a frame, or with requests
   * outstanding. The session takes no more bytes; replies to the requests in flight can still be built (after
   * DISC the server finishes them, then closes). Later calls return nothing.
   *
   * @example
   * ```ts
   * import { ServerSession } from "@nbd/codec";
   * const s = new ServerSession({ exports: [{ name: "", size: 512 }] });
   * s.start();
   * const e = s.end().events[0];
   * if (e?.type === "end") console.log(e.clean, e.reason); // false "eof"
   * ```
   */
  end(): ServerStep {
    if (this.#ended) return this.#step();
    this.#ended = true;
    const phase = this.#phase;
    const partialBytes = this.#queue.length;
    const reason: ServerEndReason = phase === "closing"
      ? "disconnect"
      : this.#hs.aborted
      ? "abort"
      : phase === "closed"
      ? "closed"
      : partialBytes > 0 || this.#skip > 0
      ? "mid-frame"
      : "eof";
    this.#queue.clear();
    this.#skip = 0;
    this.#skipOption = undefined;
    this.#phase = "closed";
    this.#event({
      type: "end",
      clean: reason === "disconnect" || reason === "abort",
      reason,
      inFlight: this.#pending.size,
      partialBytes,
    });
    return this.#step();
  }

  // ------------------------------------------------------------------------------------------- pumping

  #step(): ServerStep {
    const step = { output: this.#output ?? NOTHING, events: this.#events ?? [] };
    this.#output = undefined;
    this.#events = undefined;
    return step;
  }

  #event(e: ServerEvent): void {
    if (this.#events === undefined) this.#events = [e];
    else this.#events.push(e);
  }

  #emit(bytes: Uint8Array): void {
    (this.#output ??= []).push(bytes);
  }

  #fatal(error: NbdRemoteError): void {
    this.#phase = "closed";
    this.#queue.clear();
    this.#event({ type: "close", error });
  }

  /** A violation the session can survive: a finding, or the end of the session in strict mode. */
  #tolerate(finding: Finding): boolean {
    if (this.#limits.strict) {
      this.#fatal(new NbdRemoteError(finding.code, finding.offset, finding.rule, finding.message));
      return false;
    }
    this.#event({ type: "finding", finding });
    return true;
  }

  #pump(): void {
    const q = this.#queue;
    for (;;) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, q.length);
        q.skip(n);
        this.#skip -= n;
        if (this.#skip > 0) return;
        if (this.#skipOption !== undefined) {
          const option = this.#skipOption;
          this.#skipOption = undefined;
          this.#hs.answer(option, OptionReply.ERR_TOO_BIG, "option data longer than this server accepts");
        }
      }
      switch (this.#phase) {
        case "client-flags":
          if (!this.#hs.clientFlags()) return;
          break;
        case "options":
          if (!this.#hs.option()) return;
          break;
        case "transmission":
          if (!this.#request()) return;
          break;
        case "closing":
          if (q.length > 0) {
            const at = q.position;
            q.clear();
            this.#tolerate({
              code: "unexpected-frame",
              offset: at,
              rule: "after-disc",
              message: "bytes after NBD_CMD_DISC; the client MUST NOT send anything after it",
            });
          }
          return;
        default:
          return;
      }
    }
  }

  #enter(exp: ResolvedExport, flags: number): void {
    this.#structured = this.#hs.structured;
    this.#extended = this.#hs.extended;
    this.#meta = this.#hs.meta;
    this.#export = exp;
    this.#exportDecl = exp.decl as ServerExport;
    this.#flags = flags;
    this.#maxPayload = Math.min(exp.blockSize?.maximum ?? 32 * 1024 * 1024, this.#limits.maxPayloadLength);
    this.#sizeNum = exp.size < 2n ** 53n ? Number(exp.size) : 2 ** 53;
    this.#minBlock = exp.blockSize?.minimum ?? 1;
    this.#unadvertised = 0;
    for (const [flag, needed] of FLAG_NEEDS) if ((flags & needed) === 0) this.#unadvertised |= flag;
    this.#decodeOptions = {
      strict: false,
      extendedHeaders: this.#extended,
      maxPayloadLength: Number.MAX_SAFE_INTEGER,
    };
    this.#phase = "transmission";
    this.#event({ type: "ready", export: this.#exportDecl!, transmissionFlags: flags });
  }

  // ------------------------------------------------------------------------------------------- requests

  #request(): boolean {
    const q = this.#queue;
    if (q.length < 4) return false;
    const at = q.position;
    // The header's fields straight from the received bytes (a copy only when the header spans chunks).
    let h = q.frontChunk();
    let o = q.frontStart();
    if (q.contiguous() < 4) {
      h = q.peek(4);
      o = 0;
    }
    const magic = be32(h, o);
    const extended = magic === Magic.EXTENDED_REQUEST;
    if (!extended && magic !== Magic.REQUEST) {
      this.#fatal(
        new NbdRemoteError(
          "bad-magic",
          at,
          "magic",
          `request magic 0x${magic.toString(16)}: the stream is lost`,
        ),
      );
      return false;
    }
    const hl = extended ? 32 : 28;
    if (q.length < hl) return false;
    if (q.contiguous() < hl) {
      h = q.peek(hl);
      o = 0;
    }
    const flags = (h[o + 4]! << 8) | h[o + 5]!;
    const command = (h[o + 6]! << 8) | h[o + 7]!;
    let payload = 0;
    if (command === Command.WRITE || (extended && (flags & CommandFlag.PAYLOAD_LEN) !== 0)) {
      payload = extended ? be32(h, o + 24) * TWO32 + be32(h, o + 28) : be32(h, o + 24);
    }
    const cookieHi = be32(h, o + 8);
    const cookieLo = be32(h, o + 12);
    const offsetHi = be32(h, o + 16);
    const offsetLo = be32(h, o + 20);
    const decodeOptions = this.#decodeOptions;
    if (payload > this.#limits.maxPayloadLength || payload > this.#limits.maxBufferedBytes) {
      // Too big to buffer: answer it, and discard the payload to keep the stream in sync.
      const r = decodeRequestHeader(q.peek(hl), decodeOptions);
      if (!r.done) return false;
      q.skip(hl);
      this.#skip = payload;
      const { payloadLength: _, ...request } = r.frame;
      this.#refuse(
        newPending(request, cookieHi, cookieLo, offsetHi, offsetLo),
        ErrorValue.EINVAL,
        `payload of ${payload} bytes is above the limit`,
      );
      return true;
    }
    const total = hl + payload;
    if (q.length < total) return false;
    let request: Request;
    let findings: readonly Finding[] = NO_FINDINGS;
    if (plainHeader(extended, flags, command, this.#extended)) {
      // No header rule can find anything (the stream decoders' fast path, codec/_request_plain.ts): the frame
      // straight from the fields read above, as decodeRequest would build it, without decoding the header a
      // second time (and without a DataView over each new receive buffer).
      const lengthLo = be32(h, o + hl - 4);
      const length = extended ? u64Of(be32(h, o + 24), lengthLo) : BigInt(lengthLo);
      let data: Uint8Array | undefined;
      // Only a compact WRITE carries a payload here (plainHeader() excludes PAYLOAD_LEN and extended WRITE).
      if (command === Command.WRITE) {
        data = q.contiguous() >= total ? q.frontView(hl, payload) : q.peek(total).subarray(hl);
      }
      request = plainRequest(
        extended,
        flags,
        command,
        u64Of(cookieHi, cookieLo),
        u64Of(offsetHi, offsetLo),
        length,
        data,
      );
    } else {
      // The received chunk itself when it is exactly this request (the common case): no view to make.
      const whole = o === 0 && h.length === total && q.contiguous() === total;
      const r = decodeRequest(whole ? h : q.peek(total), decodeOptions);
      if (!r.done) return false;
      request = r.frame;
      findings = r.findings;
    }
    q.skip(total);
    let bad: string | undefined;
    for (let i = 0; i < findings.length; i++) {
      const f = findings[i]!;
      if (f.rule === "write-payload-len") {
        // qemu 10 sends extended WRITE without PAYLOAD_LEN (the payload is there anyway): tolerated, once.
        if (this.#tolerated.has(f.rule)) continue;
        this.#tolerated.add(f.rule);
        if (!this.#tolerate({ ...f, offset: at + f.offset })) return false;
        continue;
      }
      bad ??= f.message;
      if (this.#limits.strict) {
        this.#tolerate({ ...f, offset: at + f.offset });
        return false;
      }
    }
    if (command === Command.DISC) {
      this.#phase = "closing";
      this.#event({ type: "disconnect" });
      return true;
    }
    const key = cookieHi < 0x20_0000 ? cookieHi * TWO32 + cookieLo : request.cookie;
    if (this.#pending.get(key) !== undefined) {
      const ok = this.#tolerate({
        code: "duplicate",
        offset: at + 8,
        rule: "cookie-in-flight",
        message: `cookie ${request.cookie} is already in flight; its replies could not be told apart`,
      });
      if (!ok) return false;
      bad ??= `cookie ${request.cookie} is already in flight`;
      // Answered, but not tracked: the first request keeps the cookie.
      this.#refuseUntracked(request, ErrorValue.EINVAL, bad);
      return true;
    }
    const pending = newPending(request, cookieHi, cookieLo, offsetHi, offsetLo);
    if (bad !== undefined) {
      this.#refuse(pending, ErrorValue.EINVAL, bad);
      return true;
    }
    const check = this.#validate(request, offsetHi * TWO32 + offsetLo);
    if (typeof check === "object") {
      this.#refuse(pending, check[0], check[1]);
      return true;
    }
    this.#pending.add(pending);
    if (command === Command.BLOCK_STATUS) {
      const ids = request.blockStatus?.contextIds ?? [...this.#meta.keys()];
      pending.contextsLeft = [...ids];
      pending.effectLength = request.blockStatus?.effectLength ?? request.length;
      this.#event({ type: "request", request, contexts: ids, effectLength: pending.effectLength });
    } else {
      this.#event({ type: "request", request });
    }
    return true;
  }

  /**
   * The spec's request rules for the negotiated export: `[error, message]` when the request must be
   * refused, `0` when it is valid. The order follows nbdkit's: command and flags, read-only, range, sizes.
   */
  #validate(req: Request, offset: number): [number, string] | 0 {
    const exp = this.#export!;
    const adv = this.#flags;
    const cmd = req.command;
    const f = req.flags;
    if (cmd > Command.BLOCK_STATUS) return [ErrorValue.EINVAL, `${commandName(cmd)} is not supported`];
    const need = NEEDS[cmd]!;
    if ((adv & need) !== need) return [ErrorValue.EINVAL, `${commandName(cmd)} was not advertised`];
    if ((f & this.#unadvertised) !== 0) {
      for (const [flag, needed, what] of FLAG_NEEDS) {
        if ((f & flag) !== 0 && (adv & needed) === 0) {
          return [ErrorValue.EINVAL, `${what} was not advertised`];
        }
      }
    }
    let length = req.length;
    if (cmd === Command.BLOCK_STATUS) {
      if (!this.#structured && !this.#extended) {
        return [ErrorValue.EINVAL, "block status needs structured replies"];
      }
      if (this.#meta.size === 0) {
        return [ErrorValue.EINVAL, "no metadata context was selected for this export"];
      }
      if ((f & CommandFlag.PAYLOAD_LEN) !== 0) {
        const bs = req.blockStatus;
        if ((adv & TransmissionFlag.BLOCK_STATUS_PAYLOAD) === 0 || bs === undefined) {
          return [ErrorValue.EINVAL, "the block status payload form was not advertised, or is malformed"];
        }
        if (bs.contextIds.some((id) => !this.#meta.has(id))) {
          return [ErrorValue.EINVAL, "the block status payload names a context that was not selected"];
        }
        length = bs.effectLength;
      }
    }
    if (exp.flags & TransmissionFlag.READ_ONLY) {
      if (cmd === Command.WRITE || cmd === Command.TRIM || cmd === Command.WRITE_ZEROES) {
        return [ErrorValue.EPERM, "the export is read-only"];
      }
    }
    if (cmd === Command.FLUSH) return 0;
    // Numbers: exact below 2^53, and anything larger is out of range anyway (unless the export is that big).
    const len = Number(length);
    if (len === 0) return [ErrorValue.EINVAL, `${commandName(cmd)} of 0 bytes`];
    if (this.#sizeNum === 2 ** 53 ? req.offset + length > exp.size : offset + len > this.#sizeNum) {
      const write = cmd === Command.WRITE || cmd === Command.WRITE_ZEROES;
      return [
        write ? ErrorValue.ENOSPC : ErrorValue.EINVAL,
        `${commandName(cmd)} beyond the end of the export`,
      ];
    }
    const min = this.#minBlock;
    if (min > 1 && (Number(req.offset % BigInt(min)) !== 0 || Number(length % BigInt(min)) !== 0)) {
      return [ErrorValue.EINVAL, `${commandName(cmd)} not aligned to the minimum block size ${min}`];
    }
    if (cmd === Command.READ && len > this.#maxPayload) {
      return [
        ErrorValue.EOVERFLOW,
        `read of ${length} bytes is above the maximum payload ${this.#maxPayload}`,
      ];
    }
    if (cmd === Command.WRITE && len > this.#maxPayload) {
      return [ErrorValue.EINVAL, `write of ${length} bytes is above the maximum payload ${this.#maxPayload}`];
    }
    return 0;
  }

  #refuse(p: Pending, error: number, message: string): void {
    (this.#output ??= []).push(this.#errorReply(p, error, message));
    this.#event({ type: "refused", request: p.request, error, message });
    freePending(p);
  }

  #refuseUntracked(request: Request, error: number, message: string): void {
    const c = request.cookie;
    const o = request.offset;
    const half = (v: bigint, hi: boolean): number => Number(hi ? v >> 32n : v & 0xffff_ffffn);
    this.#refuse(
      newPending(request, half(c, true), half(c, false), half(o, true), half(o, false)),
      error,
      message,
    );
  }

  // ------------------------------------------------------------------------------------------- replies

  #take(cookie: bigint | number): Pending {
    let key: number | bigint;
    if (typeof cookie === "number" && Number.isSafeInteger(cookie) && cookie >= 0) key = cookie;
    else if (typeof cookie === "bigint" && cookie >= 0n && cookie <= MAX_SAFE) key = Number(cookie);
    else {
      const c = toU64(cookie, "cookie");
      key = c <= MAX_SAFE ? Number(c) : c;
    }
    const p = this.#pending.get(key);
    if (p === undefined) {
      throw new NbdLocalError(
        "unknown-cookie",
        "reply-cookie",
        `no request with cookie ${key} is in flight (never received, refused by the session, or its reply is complete)`,
      );
    }
    return p;
  }

  /** A chunk or simple header: style from the negotiation, cookie and offset from the request. */
  /** A chunk header (and `extra` bytes after it): style from the negotiation, cookie and offset from the request. */
  #head(p: Pending, flags: number, type: number, length: number, extra: number): Uint8Array {
    const ext = this.#extended;
    const f = this.#fields;
    f.style = ext ? "extended" : "structured";
    f.flags = flags;
    f.chunkType = type;
    f.cookieHi = p.cookieHi;
    f.cookieLo = p.cookieLo;
    f.offsetHi = ext ? p.offsetHi : 0;
    f.offsetLo = ext ? p.offsetLo : 0;
    f.lengthHi = ext ? Math.floor(length / TWO32) : 0;
    f.lengthLo = length >>> 0;
    const b = new Uint8Array((ext ? 32 : 20) + extra);
    encodeReplyHeaderInto(b, 0, f);
    return b;
  }

  #simple(p: Pending, error: number): Uint8Array {
    const f = this.#fields;
    f.style = "simple";
    f.error = error;
    f.cookieHi = p.cookieHi;
    f.cookieLo = p.cookieLo;
    const b = new Uint8Array(16);
    encodeReplyHeaderInto(b, 0, f);
    return b;
  }

  #done(p: Pending): void {
    this.#pending.remove(p);
    freePending(p);
  }

  #chunk(p: Pending, frame: Omit<ReplyChunk, "type" | "extended" | "cookie" | "offset">): Uint8Array {
    const ext = this.#extended;
    return encodeReplyChunk({
      type: "reply-chunk",
      extended: ext,
      cookie: p.request.cookie,
      ...(ext ? { offset: p.request.offset } : {}),
      ...frame,
    } as ReplyChunk);
  }

  #errorReply(p: Pending, error: number, message: string): Uint8Array {
    if (!this.#structured && !this.#extended) return this.#simple(p, error);
    return this.#chunk(p, {
      flags: ReplyFlag.DONE,
      chunkType: ReplyType.ERROR,
      payload: { kind: "error", error, message },
    });
  }

  #checkError(p: Pending, error: number): number {
    toU32(error, "error");
    if (error === 0) {
      throw new NbdLocalError("bad-argument", "error-zero", "an error reply needs a nonzero error");
    }
    if (!KNOWN_ERRORS.has(error)) {
      throw new NbdLocalError(
        "bad-argument",
        "error-value",
        `error ${error} is not one of the spec's error values`,
      );
    }
    if (
      error === ErrorValue.ENOTSUP &&
      (p.command !== Command.WRITE_ZEROES || (p.request.flags & CommandFlag.FAST_ZERO) === 0)
    ) {
      throw new NbdLocalError("forbidden", "enotsup", "NBD_ENOTSUP is only for WRITE_ZEROES with FAST_ZERO");
    }
    return error;
  }

  /**
   * Success without data for WRITE, FLUSH, TRIM, CACHE and WRITE_ZEROES: a simple reply, or a NONE chunk
   * with DONE under extended headers (which forbid simple replies).
   *
   * @example
   * ```ts
   * import { ServerSession } from "@nbd/codec";
   * const s = new ServerSession({ exports: [{ name: "", size: 512 }] });
   * try { s.replyOk(7n); } catch (e) { console.log((e as { code: string }).code); } // "unknown-cookie"
   * ```
   */
  replyOk(cookie: bigint | number): Uint8Array[] {
    const p = this.#take(cookie);
    if (p.command === Command.READ || p.command === Command.BLOCK_STATUS) {
      throw new NbdLocalError(
        "forbidden",
        "ok-needs-data",
        "a successful READ or BLOCK_STATUS reply carries data",
      );
    }
    const out = this.#extended ? this.#head(p, ReplyFlag.DONE, ReplyType.NONE, 0, 0) : this.#simple(p, 0);
    this.#done(p);
    return [out];
  }

  /**
   * Ends a request with an error: a simple error reply, or an ERROR chunk with DONE and the message
   * (structured and extended replies), also after some READ chunks. `error` is an `ErrorValue`.
   *
   * @example
   * ```ts
   * import { ErrorValue, ServerSession } from "@nbd/codec";
   * const s = new ServerSession({ exports: [{ name: "", size: 512 }] });
   * try { s.replyError(1n, ErrorValue.EIO, "disk on fire"); } catch (e) { console.log((e as Error).name); } // "NbdLocalError"
   * ```
   */
  replyError(cookie: bigint | number, error: number, message = ""): Uint8Array[] {
    const p = this.#take(cookie);
    this.#checkError(p, error);
    const out = this.#errorReply(p, error, message);
    this.#done(p);
    return [out];
  }

  /**
   * The whole successful reply to a READ: `data` must be exactly the request's length. A simple reply
   * with the data, or one OFFSET_DATA chunk with DONE. Returns the header and `data` itself (no copy).
   *
   * @example
   * ```ts
   * import { ServerSession } from "@nbd/codec";
   * const s = new ServerSession({ exports: [{ name: "", size: 512 }] });
   * try { s.replyRead(1n, new Uint8Array(512)); } catch (e) { console.log((e as { rule: string }).rule); } // "reply-cookie"
   * ```
   */
  replyRead(cookie: bigint | number, data: Uint8Array): Uint8Array[] {
    const p = this.#take(cookie);
    if (p.command !== Command.READ) {
      throw new NbdLocalError("forbidden", "read-reply", "replyRead() answers a READ only");
    }
    if (!(data instanceof Uint8Array)) {
      throw new NbdLocalError("bad-argument", "read-data", "data must be a Uint8Array");
    }
    if (p.chunks > 0 || data.length !== p.length) {
      throw new NbdLocalError(
        "forbidden",
        "read-length",
        `replyRead() needs exactly the ${p.request.length} bytes requested (got ${data.length}${
          p.chunks > 0 ? " after other chunks" : ""
        }); use readChunk() for parts`,
      );
    }
    let head: Uint8Array;
    if (!this.#structured && !this.#extended) head = this.#simple(p, 0);
    else {
      head = this.#head(p, ReplyFlag.DONE, ReplyType.OFFSET_DATA, 8 + data.length, 8);
      const hl = this.#extended ? 32 : 20;
      put32(head, hl, p.offsetHi);
      put32(head, hl + 4, p.offsetLo);
    }
    this.#done(p);
    return [head, data];
  }

  #readChunkCheck(p: Pending, offset: number | bigint, length: number, data: boolean): number {
    if (p.command !== Command.READ) {
      throw new NbdLocalError("forbidden", "read-chunk", "read chunks answer a READ only");
    }
    if (!this.#structured && !this.#extended) {
      throw new NbdLocalError(
        "not-negotiated",
        "read-chunk-simple",
        "read chunks need structured replies; use replyRead()",
      );
    }
    const at = toU64(offset, "chunk offset");
    const rel = at - p.request.offset;
    if (length === 0) {
      throw new NbdLocalError("forbidden", "read-chunk-empty", "a content chunk describes at least 1 byte");
    }
    if (rel < 0n || rel + BigInt(length) > p.request.length) {
      throw new NbdLocalError(
        "forbidden",
        "read-chunk-range",
        "a content chunk MUST stay within the requested range",
      );
    }
    if ((p.request.flags & CommandFlag.DF) !== 0 && (p.chunks > 0 || !data)) {
      throw new NbdLocalError(
        "forbidden",
        "read-df",
        "under NBD_CMD_FLAG_DF a READ gets at most one chunk, OFFSET_DATA",
      );
    }
    const start = Number(rel);
    const ranges = p.ranges ?? [];
    for (let i = 0; i < ranges.length; i += 2) {
      if (start < ranges[i + 1]! && ranges[i]! < start + length) {
        throw new NbdLocalError(
          "forbidden",
          "read-chunk-overlap",
          "content chunks MUST NOT overlap earlier ones",
        );
      }
    }
    return start;
  }

  #readChunkDone(p: Pending, start: number, length: number, done: boolean): void {
    if (done && !p.errorSent && BigInt(p.covered + length) !== p.request.length) {
      throw new NbdLocalError(
        "forbidden",
        "read-coverage",
        "a successful READ reply MUST cover the whole request before DONE",
      );
    }
    (p.ranges ??= []).push(start, start + length);
    p.covered += length;
    p.chunks++;
    if (done) this.#done(p);
  }

  /**
   * One OFFSET_DATA chunk of a READ reply (structured or extended replies): `offset` is absolute, the data
   * must lie in the request and not overlap earlier chunks; `done` ends the reply (the chunks must then
   * cover the request, unless an error chunk was sent).
   *
   * @example
   * ```ts
   * import { ServerSession } from "@nbd/codec";
   * const s = new ServerSession({ exports: [{ name: "", size: 512 }] });
   * try { s.readChunk(1n, 0, new Uint8Array(1)); } catch (e) { console.log((e as { code: string }).code); } // "unknown-cookie"
   * ```
   */
  readChunk(cookie: bigint | number, offset: number | bigint, data: Uint8Array, done = false): Uint8Array[] {
    const p = this.#take(cookie);
    if (!(data instanceof Uint8Array)) {
      throw new NbdLocalError("bad-argument", "read-data", "data must be a Uint8Array");
    }
    const start = this.#readChunkCheck(p, offset, data.length, true);
    const head = this.#chunk(p, {
      flags: done ? ReplyFlag.DONE : 0,
      chunkType: ReplyType.OFFSET_DATA,
      payload: { kind: "offset-data", offset: toU64(offset, "chunk offset"), data },
    });
    this.#readChunkDone(p, start, data.length, done);
    return [head, data];
  }

  /**
   * One OFFSET_HOLE chunk of a READ reply: `length` bytes of zeroes at `offset` (not under DF).
   *
   * @example
   * ```ts
   * import { ServerSession } from "@nbd/codec";
   * const s = new ServerSession({ exports: [{ name: "", size: 512 }] });
   * try { s.holeChunk(1n, 0, 512, true); } catch (e) { console.log((e as { code: string }).code); } // "unknown-cookie"
   * ```
   */
  holeChunk(cookie: bigint | number, offset: number | bigint, length: number, done = false): Uint8Array[] {
    const p = this.#take(cookie);
    toU32(length, "hole length");
    const start = this.#readChunkCheck(p, offset, length, false);
    const head = this.#chunk(p, {
      flags: done ? ReplyFlag.DONE : 0,
      chunkType: ReplyType.OFFSET_HOLE,
      payload: { kind: "offset-hole", offset: toU64(offset, "chunk offset"), holeSize: length },
    });
    this.#readChunkDone(p, start, length, done);
    return [head];
  }

  /**
   * An ERROR_OFFSET chunk of a READ reply: the read failed at `offset` (inside the request). The reply
   * goes on (more chunks may follow) unless `done`.
   *
   * @example
   * ```ts
   * import { ErrorValue, ServerSession } from "@nbd/codec";
   * const s = new ServerSession({ exports: [{ name: "", size: 512 }] });
   * try { s.readError(1n, 0, ErrorValue.EIO); } catch (e) { console.log((e as { code: string }).code); } // "unknown-cookie"
   * ```
   */
  readError(
    cookie: bigint | number,
    offset: number | bigint,
    error: number,
    message = "",
    done = true,
  ): Uint8Array[] {
    const p = this.#take(cookie);
    this.#checkError(p, error);
    if (p.command !== Command.READ) {
      throw new NbdLocalError("forbidden", "read-error", "readError() answers a READ only");
    }
    if (!this.#structured && !this.#extended) {
      throw new NbdLocalError(
        "not-negotiated",
        "read-error-simple",
        "ERROR_OFFSET needs structured replies; use replyError()",
      );
    }
    const at = toU64(offset, "error offset");
    if (at < p.request.offset || at >= p.request.offset + p.request.length) {
      throw new NbdLocalError(
        "forbidden",
        "read-error-range",
        "the error offset MUST lie within the request",
      );
    }
    const out = this.#chunk(p, {
      flags: done ? ReplyFlag.DONE : 0,
      chunkType: ReplyType.ERROR_OFFSET,
      payload: { kind: "error", error, message, offset: at },
    });
    p.errorSent = true;
    p.chunks++;
    if (done) this.#done(p);
    return [out];
  }

  /**
   * Ends a chunked reply with a NONE chunk carrying DONE (after READ chunks that already cover the
   * request, or after an error chunk).
   *
   * @example
   * ```ts
   * import { ServerSession } from "@nbd/codec";
   * const s = new ServerSession({ exports: [{ name: "", size: 512 }] });
   * try { s.replyDone(1n); } catch (e) { console.log((e as { code: string }).code); } // "unknown-cookie"
   * ```
   */
  replyDone(cookie: bigint | number): Uint8Array[] {
    const p = this.#take(cookie);
    if (!this.#structured && !this.#extended) {
      throw new NbdLocalError("not-negotiated", "done-simple", "a NONE chunk needs structured replies");
    }
    if (
      p.chunks === 0 || (p.command === Command.READ && !p.errorSent && BigInt(p.covered) !== p.request.length)
    ) {
      throw new NbdLocalError(
        "forbidden",
        "done-incomplete",
        "DONE would end a reply that has not covered its request (or has no chunk yet)",
      );
    }
    if (p.contextsLeft !== undefined && p.contextsLeft.length > 0 && !p.errorSent) {
      throw new NbdLocalError(
        "forbidden",
        "done-contexts",
        "block status for every requested context comes first",
      );
    }
    const out = this.#head(p, ReplyFlag.DONE, ReplyType.NONE, 0, 0);
    this.#done(p);
    return [out];
  }

  /**
   * The successful reply to a BLOCK_STATUS: one chunk per requested context (each exactly once, in any
   * order), DONE on the last. Extents are consecutive from the request offset; under REQ_ONE exactly one,
   * no longer than the request; only the last may run past the request, none past the export. Compact
   * (structured) replies need 32-bit lengths and statuses; extended headers use 64-bit descriptors.
   *
   * @example
   * ```ts
   * import { ServerSession } from "@nbd/codec";
   * const s = new ServerSession({ exports: [{ name: "", size: 512 }] });
   * try { s.replyBlockStatus(1n, []); } catch (e) { console.log((e as { code: string }).code); } // "unknown-cookie"
   * ```
   */
  replyBlockStatus(cookie: bigint | number, answers: readonly ContextExtents[]): Uint8Array[] {
    const p = this.#take(cookie);
    if (p.command !== Command.BLOCK_STATUS || p.contextsLeft === undefined) {
      throw new NbdLocalError(
        "forbidden",
        "block-status-reply",
        "replyBlockStatus() answers a BLOCK_STATUS only",
      );
    }
    const left = p.contextsLeft;
    if (!Array.isArray(answers) || answers.length !== left.length) {
      throw new NbdLocalError(
        "forbidden",
        "block-status-contexts",
        `the reply needs exactly one answer per requested context (${left.join(", ")})`,
      );
    }
    const seen = new Set<number>();
    const reqOne = (p.request.flags & CommandFlag.REQ_ONE) !== 0;
    const ext = this.#extended;
    const limit = p.effectLength;
    const end = this.#export!.size - p.request.offset;
    const parts: Uint8Array[] = [];
    for (let i = 0; i < answers.length; i++) {
      const a = answers[i]!;
      if (!left.includes(a.contextId) || seen.has(a.contextId)) {
        throw new NbdLocalError(
          "forbidden",
          "block-status-context",
          `context ${a.contextId} was not requested, or twice`,
        );
      }
      seen.add(a.contextId);
      const ex = a.extents;
      if (!Array.isArray(ex) || ex.length === 0 || (reqOne && ex.length !== 1)) {
        throw new NbdLocalError(
          "forbidden",
          "block-status-extents",
          reqOne
            ? "under REQ_ONE the reply has exactly one extent"
            : "a block status chunk has at least one extent",
        );
      }
      let pos = 0n;
      for (let k = 0; k < ex.length; k++) {
        const len = toU64(ex[k]!.length, "extent length");
        const status = toU64(ex[k]!.status, "extent status");
        if (len === 0n) {
          throw new NbdLocalError("forbidden", "extent-zero", "an extent length MUST be nonzero");
        }
        if (!ext && (len > 0xffff_ffffn || status > 0xffff_ffffn)) {
          throw new NbdLocalError(
            "not-negotiated",
            "extent-32",
            "compact descriptors hold 32-bit lengths and statuses",
          );
        }
        if (k < ex.length - 1 && pos + len >= limit) {
          throw new NbdLocalError(
            "forbidden",
            "extent-range",
            "only the last extent may reach past the request",
          );
        }
        pos += len;
      }
      if (pos > end || (reqOne && pos > limit)) {
        throw new NbdLocalError(
          "forbidden",
          "extent-end",
          reqOne
            ? "under REQ_ONE the extent MUST NOT exceed the request"
            : "extents MUST NOT run past the export",
        );
      }
      const descriptors = createBlockStatusDescriptors(a.contextId, ext, ex);
      parts.push(
        this.#chunk(p, {
          flags: i === answers.length - 1 ? ReplyFlag.DONE : 0,
          chunkType: ext ? ReplyType.BLOCK_STATUS_EXT : ReplyType.BLOCK_STATUS,
          payload: { kind: "block-status", descriptors },
        }),
      );
    }
    this.#done(p);
    return parts;
  }
}

/** Records of finished requests, reused (one allocation fewer per request). */
const FREE: Pending[] = [];

function newPending(
  request: Request,
  cookieHi: number,
  cookieLo: number,
  offsetHi: number,
  offsetLo: number,
): Pending {
  const key = cookieHi < 0x20_0000 ? cookieHi * TWO32 + cookieLo : request.cookie;
  const p = FREE.pop();
  if (p === undefined) {
    return {
      request,
      key,
      command: request.command,
      cookieHi,
      cookieLo,
      offsetHi,
      offsetLo,
      length: Number(request.length),
      covered: 0,
      ranges: undefined,
      chunks: 0,
      errorSent: false,
      contextsLeft: undefined,
      effectLength: request.length,
    };
  }
  p.request = request;
  p.key = key;
  p.command = request.command;
  p.cookieHi = cookieHi;
  p.cookieLo = cookieLo;
  p.offsetHi = offsetHi;
  p.offsetLo = offsetLo;
  p.length = Number(request.length);
  p.covered = 0;
  p.ranges = undefined;
  p.chunks = 0;
  p.errorSent = false;
  p.contextsLeft = undefined;
  p.effectLength = request.length;
  return p;
}

function freePending(p: Pending): void {
  if (FREE.length < 256) FREE.push(p);
}

const NOTHING: readonly Uint8Array[] = Object.freeze([]);

/**
 * The requests in flight: a short list searched linearly while it is short (a Map's churn of one insert and
 * one delete per request costs several times more), a Map once many are in flight.
 */
class InFlight {
  #list: Pending[] = [];
  #map: Map<number | bigint, Pending> | undefined;

  get size(): number {
    return this.#map?.size ?? this.#list.length;
  }

  get(key: number | bigint): Pending | undefined {
    if (this.#map !== undefined) return this.#map.get(key);
    const list = this.#list;
    for (let i = list.length - 1; i >= 0; i--) if (list[i]!.key === key) return list[i];
    return undefined;
  }

  add(p: Pending): void {
    if (this.#map !== undefined) this.#map.set(p.key, p);
    else if (this.#list.push(p) > 32) {
      this.#map = new Map(this.#list.map((x) => [x.key, x]));
      this.#list = [];
    }
  }

  remove(p: Pending): void {
    if (this.#map !== undefined) {
      this.#map.delete(p.key);
      if (this.#map.size === 0) this.#map = undefined;
      return;
    }
    const list = this.#list;
    const i = list.lastIndexOf(p);
    if (i < 0) return;
    list[i] = list[list.length - 1]!;
    list.pop();
  }
}

function commandName(cmd: number): string {
  return nameOf("command", cmd) ?? `command ${cmd}`;
}

/** The u64 of two u32 halves, through one exact number below 2^53 (real cookies and offsets). */
function u64Of(hi: number, lo: number): bigint {
  return hi < 0x20_0000 ? BigInt(hi * TWO32 + lo) : (BigInt(hi) << 32n) | BigInt(lo);
}

function be32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) >>> 0) + ((b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!);
}

// Private: the server session's types (the public ones are exported by server_session.ts), below both the
// handshake (_server_handshake.ts) and the session (server_session.ts), so that every import runs downward.
import type { Finding } from "./errors.ts";
import type { Request } from "./_request_frame.ts";
import type { NbdRemoteError, SessionLimits } from "./session.ts";

/**
 * One export a server session serves.
 *
 * @example
 * ```ts
 * import type { ServerExport } from "@nbd/codec";
 * const disk: ServerExport = { name: "disk", size: 1 << 20, contexts: ["base:allocation"] };
 * console.log(disk.size); // 1048576
 * ```
 */
export interface ServerExport {
  /** The export's name (the canonical one, sent in NBD_INFO_NAME). */
  readonly name: string;
  /** A human-readable description (LIST, NBD_INFO_DESCRIPTION). */
  readonly description?: string;
  /** Size in bytes: a safe-integer `number` or a `bigint`. */
  readonly size: number | bigint;
  /** `true` advertises NBD_FLAG_READ_ONLY: WRITE, TRIM and WRITE_ZEROES are refused with EPERM. */
  readonly readOnly?: boolean;
  /**
   * The transmission flags the export supports (`TransmissionFlag`: SEND_FLUSH, SEND_FUA, SEND_TRIM, ...).
   * Default: FLUSH, FUA, TRIM, WRITE_ZEROES, FAST_ZERO and CACHE. HAS_FLAGS is always set; SEND_DF and
   * BLOCK_STATUS_PAYLOAD are set by the session from the negotiation.
   */
  readonly transmissionFlags?: number;
  /**
   * Block-size constraints: sent in NBD_INFO_BLOCK_SIZE and enforced (offsets and lengths must be multiples
   * of `minimum`; READ and WRITE lengths at most `maximum`).
   */
  readonly blockSize?: { readonly minimum: number; readonly preferred: number; readonly maximum: number };
  /** NBD_INFO_INIT_FLAGS (`InitFlag`), sent when the client asks; a function is called at each ask. */
  readonly initFlags?: number | (() => number);
  /** Names of the metadata contexts offered (`base:allocation`, `qemu:dirty-bitmap:x`, ...). */
  readonly contexts?: readonly string[];
  /**
   * Names among `contexts` whose status values need 64 bits (sent in NBD_REPLY_TYPE_BLOCK_STATUS_EXT), so
   * that using them needs extended headers (none in the `base:` namespace). Without extended headers, LIST
   * still lists them but ends with NBD_REP_ERR_EXT_HEADER_REQD, and SET selecting one fails with it
   * (spec, extended headers: NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT).
   */
  readonly wideContexts?: readonly string[];
}

/**
 * Options of a {@link ServerSession}: what it serves, its policy, and its limits.
 *
 * @example
 * ```ts
 * import { ServerSession, type ServerSessionOptions } from "@nbd/codec";
 * const options: ServerSessionOptions = {
 *   exports: [{ name: "disk", size: 65536 }],
 *   extendedHeaders: false,
 *   tls: "off",
 * };
 * console.log(new ServerSession(options).state.phase); // "start"
 * ```
 */
export interface ServerSessionOptions extends SessionLimits {
  /** The exports (listed by NBD_OPT_LIST). */
  readonly exports?: readonly ServerExport[];
  /** Looks up an export that is not in `exports` (not listed). */
  readonly lookup?: (name: string) => ServerExport | undefined;
  /**
   * The export the empty name selects: a name, or `null` for none. Default: an export named `""`, else the
   * first of `exports`.
   */
  readonly defaultExport?: string | null;
  /** `fixed-newstyle` (default), `newstyle` (without NBD_FLAG_FIXED_NEWSTYLE), or `oldstyle`. */
  readonly handshake?: "fixed-newstyle" | "newstyle" | "oldstyle";
  /** Advertise NBD_FLAG_NO_ZEROES. Default `true`. */
  readonly noZeroes?: boolean;
  /**
   * `off` (default: STARTTLS answered ERR_POLICY), `offered` (STARTTLS accepted), or `required` (every
   * option but STARTTLS and ABORT answered ERR_TLS_REQD until TLS is up).
   */
  readonly tls?: "off" | "offered" | "required";
  /** Accept NBD_OPT_STRUCTURED_REPLY. Default `true`. */
  readonly structuredReplies?: boolean;
  /** Accept NBD_OPT_EXTENDED_HEADERS. Default `true`. */
  readonly extendedHeaders?: boolean;
  /** Advertise NBD_FLAG_BLOCK_STATUS_PAYLOAD (extended headers and a selected context). Default `true`. */
  readonly blockStatusPayload?: boolean;
  /** Answer NBD_OPT_GO that did not request NBD_INFO_BLOCK_SIZE with ERR_BLOCK_SIZE_REQD (exports with `blockSize`). */
  readonly blockSizeRequired?: boolean;
  /** Options answered ERR_UNSUP as if unknown (`Option` codes; ABORT cannot be refused). */
  readonly refusedOptions?: readonly number[];
  /** Longest option data accepted; longer options are skipped and answered ERR_TOO_BIG. Default 64 KiB. */
  readonly maxOptionLength?: number;
}

/**
 * Where a server session is.
 *
 * - `start`: {@link ServerSession.start} not called yet.
 * - `client-flags`: waiting for the client's flags (newstyle).
 * - `options`: option haggling.
 * - `tls-handshake`: STARTTLS was accepted: the transport upgrades, then calls
 *   {@link ServerSession.tlsEstablished}.
 * - `transmission`: requests and replies.
 * - `closing`: NBD_CMD_DISC received: replies to requests in flight may still be sent, no new request is taken.
 * - `closed`: the session is over (ABORT, a fatal violation, a refused EXPORT_NAME, or the client's end of
 *   stream given to `end()`): close the transport after sending the output.
 *
 * @example
 * ```ts
 * import type { ServerPhase } from "@nbd/codec";
 * const p: ServerPhase = "transmission";
 * console.log(p);
 * ```
 */
export type ServerPhase =
  | "start"
  | "client-flags"
  | "options"
  | "tls-handshake"
  | "transmission"
  | "closing"
  | "closed";

/**
 * What the session has negotiated so far.
 *
 * @example
 * ```ts
 * import { ServerSession } from "@nbd/codec";
 * const s = new ServerSession({ exports: [{ name: "", size: 512 }] });
 * console.log(s.state.replyStyle); // "simple"
 * ```
 */
export interface ServerState {
  /** Where the session is. */
  readonly phase: ServerPhase;
  /** `oldstyle`, `newstyle` (not fixed on both sides) or `fixed-newstyle`, once the client's flags came. */
  readonly handshake: "oldstyle" | "newstyle" | "fixed-newstyle" | undefined;
  /** The client set NBD_FLAG_C_NO_ZEROES. */
  readonly noZeroes: boolean;
  /** TLS is up (after {@link ServerSession.tlsEstablished}). */
  readonly tls: boolean;
  /** `simple`, `structured` or `extended`. */
  readonly replyStyle: "simple" | "structured" | "extended";
  /** The export chosen by GO, EXPORT_NAME or the oldstyle greeting. */
  readonly export: ServerExport | undefined;
  /** Transmission flags sent for the chosen export. */
  readonly transmissionFlags: number;
  /** Selected metadata contexts by id (only those valid for the chosen export in transmission). */
  readonly contexts: ReadonlyMap<number, string>;
  /** Requests handed to the application whose replies are not complete. */
  readonly inFlight: number;
}

/**
 * A request the application must answer. For BLOCK_STATUS, `contexts` lists the context ids to report on
 * (every selected one, or those of the payload form) and `effectLength` the range length.
 *
 * @example
 * ```ts
 * import type { ServerRequestEvent } from "@nbd/codec";
 * const f = (e: ServerRequestEvent) => e.request.command;
 * console.log(typeof f); // "function"
 * ```
 */
export interface ServerRequestEvent {
  /** Event tag. */
  readonly type: "request";
  /** The request; a WRITE's data is a view of the received chunk (or of a copy when it spanned chunks). */
  readonly request: Request;
  /** BLOCK_STATUS: the context ids to answer, each exactly once. */
  readonly contexts?: readonly number[];
  /** BLOCK_STATUS: the length of the range (the payload form's effect length, else the header's). */
  readonly effectLength?: bigint;
}

/**
 * How the client's side of the connection ended (see {@link ServerSession.end}):
 *
 * - `disconnect`: after NBD_CMD_DISC (clean);
 * - `abort`: after NBD_OPT_ABORT (clean);
 * - `closed`: after the session itself ended the connection (a fatal violation, a refused EXPORT_NAME);
 * - `mid-frame`: inside a frame (part of an option, a request or a WRITE payload was received);
 * - `eof`: between frames, without NBD_CMD_DISC or NBD_OPT_ABORT (a hard disconnect).
 *
 * @example
 * ```ts
 * import type { ServerEndReason } from "@nbd/codec";
 * const r: ServerEndReason = "disconnect";
 * console.log(r);
 * ```
 */
export type ServerEndReason = "disconnect" | "abort" | "closed" | "mid-frame" | "eof";

/**
 * The end of the client's side of the connection, from {@link ServerSession.end}.
 *
 * @example
 * ```ts
 * import { ServerSession } from "@nbd/codec";
 * const s = new ServerSession({ exports: [{ name: "", size: 512 }] });
 * s.start();
 * s.receive(new Uint8Array([0, 0]));
 * const e = s.end().events[0];
 * if (e?.type === "end") console.log(e.clean, e.reason, e.partialBytes); // false "mid-frame" 2
 * ```
 */
export interface ServerEndEvent {
  /** Event tag. */
  readonly type: "end";
  /** The client ended as the protocol has it: after NBD_CMD_DISC or NBD_OPT_ABORT. */
  readonly clean: boolean;
  /** How it ended. */
  readonly reason: ServerEndReason;
  /** Requests handed to the application whose replies are not complete (after DISC, still to be answered). */
  readonly inFlight: number;
  /**
   * Bytes of the frame cut short that the session held, waiting for the rest (0 between frames, and when the
   * end cut the payload of a refused request or option, which the session discards as it arrives).
   */
  readonly partialBytes: number;
}

/**
 * What happened in a call to the session.
 *
 * - `option`: an option was answered by the session (`reply` is the final reply type), for logs.
 * - `starttls`: STARTTLS was accepted: send the output, upgrade the transport (giving the TLS layer the
 *   `early` bytes, received after STARTTLS), then call `tlsEstablished()`.
 * - `ready`: transmission begins on `export`.
 * - `request`: a valid request for the application ({@link ServerRequestEvent}).
 * - `refused`: a request the session answered itself with `error` (the reply is in the output).
 * - `disconnect`: NBD_CMD_DISC: answer the requests in flight, then close.
 * - `abort`: NBD_OPT_ABORT: send the output, then close.
 * - `close`: the session cannot go on (`error` says why): send the output, then close.
 * - `finding`: a violation by the client that the session tolerated.
 * - `end`: the client's side ended ({@link ServerSession.end}; {@link ServerEndEvent}).
 *
 * @example
 * ```ts
 * import type { ServerEvent } from "@nbd/codec";
 * const describe = (e: ServerEvent) => e.type;
 * console.log(describe({ type: "abort" })); // "abort"
 * ```
 */
export type ServerEvent =
  | { readonly type: "option"; readonly option: number; readonly reply: number; readonly message?: string }
  | { readonly type: "starttls"; readonly early: Uint8Array }
  | { readonly type: "ready"; readonly export: ServerExport; readonly transmissionFlags: number }
  | ServerRequestEvent
  | { readonly type: "refused"; readonly request: Request; readonly error: number; readonly message: string }
  | { readonly type: "disconnect" }
  | { readonly type: "abort" }
  | { readonly type: "close"; readonly error: NbdRemoteError }
  | { readonly type: "finding"; readonly finding: Finding }
  | ServerEndEvent;

/**
 * The result of a call to the session: bytes to send, in order, and events.
 *
 * @example
 * ```ts
 * import { ServerSession } from "@nbd/codec";
 * const step = new ServerSession({ exports: [{ name: "", size: 512 }] }).start();
 * console.log(step.output[0]?.length, step.events.length); // 18 0
 * ```
 */
export interface ServerStep {
  /** Bytes to send, in order (headers and the caller's payloads as separate arrays: no copies). */
  readonly output: readonly Uint8Array[];
  /** What happened. */
  readonly events: ServerEvent[];
}

/** What an export declares, resolved once (sizes as bigint, flags computed). */
export interface ResolvedExport {
  /** The application's declaration (a `ServerExport`; typed loosely so that this file imports no session). */
  readonly decl: object;
  readonly name: string;
  readonly description: string | undefined;
  readonly size: bigint;
  /** The export's own flags: HAS_FLAGS, READ_ONLY and the SEND_* it supports, without DF / payload form. */
  readonly flags: number;
  readonly blockSize:
    | { readonly minimum: number; readonly preferred: number; readonly maximum: number }
    | undefined;
  readonly initFlags: number | undefined;
  readonly contexts: readonly string[];
  /** Contexts among `contexts` whose status needs 64 bits (extended headers only). */
  readonly wideContexts: readonly string[];
}

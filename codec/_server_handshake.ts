// Private: the server session's handshake, from the greeting to transmission (or to the end of the
// connection): the client's flags, every option and its answer, the negotiated state. The session
// (server_session.ts) owns the byte queue, the output and the phase, and hands them over as a
// HandshakeHost; transmission (requests and replies) is the session's.
import {
  ClientFlag,
  HandshakeFlag,
  Info,
  nameOf,
  Option,
  OptionReply,
  TransmissionFlag,
} from "./constants.ts";
import type { Finding } from "./errors.ts";
import { decodeClientFlags, encodeExportNameReply, encodeGreeting } from "./handshake.ts";
import { decodeOptionRequest, type OptionRequest } from "./option.ts";
import { encodeOptionReply, type OptionReplyFrame } from "./option_reply.ts";
import type { ByteQueue } from "./_queue.ts";
import { NbdLocalError, NbdRemoteError, type resolveSessionLimits, toU32, toU64 } from "./session.ts";
import type {
  ResolvedExport,
  ServerEvent,
  ServerExport,
  ServerPhase,
  ServerSessionOptions,
  ServerState,
} from "./_server_types.ts";

/** What the handshake needs from its session. */
export interface HandshakeHost {
  /** The client's bytes not consumed yet. */
  readonly queue: ByteQueue;
  phase(): ServerPhase;
  setPhase(phase: ServerPhase): void;
  /** Discards the next `length` bytes (option data above the limit), then answers `option` ERR_TOO_BIG. */
  skip(length: number, option: number): void;
  emit(bytes: Uint8Array): void;
  event(e: ServerEvent): void;
  fatal(error: NbdRemoteError): void;
  /** A violation the session can survive: false when it ended the session (strict mode). */
  tolerate(finding: Finding): boolean;
  /** Transmission begins on `exp` with these transmission flags. */
  enter(exp: ResolvedExport, flags: number): void;
}

const DEFAULT_EXPORT_FLAGS = TransmissionFlag.SEND_FLUSH | TransmissionFlag.SEND_FUA |
  TransmissionFlag.SEND_TRIM |
  TransmissionFlag.SEND_WRITE_ZEROES | TransmissionFlag.SEND_FAST_ZERO | TransmissionFlag.SEND_CACHE;
const OPTION_HEADER = 16;

/** The handshake of one server session, and what it negotiated. */
export class ServerHandshake {
  readonly #options: ServerSessionOptions;
  readonly #limits: ReturnType<typeof resolveSessionLimits>;
  readonly #host: HandshakeHost;
  handshake: ServerState["handshake"];
  fixed = false;
  noZeroes = false;
  tls = false;
  structured = false;
  extended = false;
  /** The last SET_META_CONTEXT: its export (canonical name) and contexts by id. */
  metaExport: string | undefined;
  meta: Map<number, string> = new Map();
  /** NBD_OPT_ABORT was received. */
  aborted = false;

  constructor(
    options: ServerSessionOptions,
    limits: ReturnType<typeof resolveSessionLimits>,
    host: HandshakeHost,
  ) {
    this.#options = options;
    this.#limits = limits;
    this.#host = host;
    if (options.exports !== undefined && !Array.isArray(options.exports)) {
      throw new NbdLocalError("bad-argument", "exports", "exports must be an array of ServerExport");
    }
    for (const e of options.exports ?? []) this.resolve(e);
  }

  /** The greeting: newstyle, or oldstyle with the default export (transmission begins at once). */
  start(): void {
    const style = this.#options.handshake ?? "fixed-newstyle";
    if (style === "oldstyle") {
      if (this.#options.tls === "required") {
        throw new NbdLocalError(
          "bad-argument",
          "oldstyle-tls",
          "TLS needs fixed newstyle: an oldstyle server cannot require it",
        );
      }
      const exp = this.find("");
      if (exp === undefined) {
        throw new NbdLocalError(
          "bad-argument",
          "oldstyle-export",
          "an oldstyle server needs a default export",
        );
      }
      this.handshake = "oldstyle";
      const flags = this.flagsFor(exp);
      this.#host.emit(
        encodeGreeting({
          type: "oldstyle-greeting",
          size: exp.size,
          handshakeFlags: 0,
          transmissionFlags: flags,
        }),
      );
      this.#host.enter(exp, flags);
      return;
    }
    let flags = style === "fixed-newstyle" ? HandshakeFlag.FIXED_NEWSTYLE : 0;
    if (this.#options.noZeroes !== false) flags |= HandshakeFlag.NO_ZEROES;
    this.#host.emit(encodeGreeting({ type: "newstyle-greeting", handshakeFlags: flags }));
    this.#host.setPhase("client-flags");
  }

  /** TLS is up: everything negotiated before is forgotten, as the spec requires. */
  tlsEstablished(): void {
    this.tls = true;
    this.structured = false;
    this.extended = false;
    this.meta = new Map();
    this.metaExport = undefined;
  }

  #reply(frame: OptionReplyFrame): void {
    this.#host.emit(encodeOptionReply(frame));
  }

  clientFlags(): boolean {
    const q = this.#host.queue;
    if (q.length < 4) return false;
    const at = q.position;
    const r = decodeClientFlags(q.peek(4), { strict: false });
    if (!r.done) return false;
    q.skip(4);
    const flags = r.frame.flags;
    const advertised = (this.#options.handshake !== "newstyle" ? ClientFlag.C_FIXED_NEWSTYLE : 0) |
      (this.#options.noZeroes !== false ? ClientFlag.C_NO_ZEROES : 0);
    if ((flags & ~advertised) !== 0) {
      // Spec: a server MUST drop the connection on client flags it does not know (or did not offer).
      this.#host.fatal(
        new NbdRemoteError(
          "reserved-bits",
          at,
          "client-flags-unknown",
          `client flags 0x${flags.toString(16)} set bits the server did not advertise; the server MUST close`,
        ),
      );
      return false;
    }
    this.fixed = (flags & ClientFlag.C_FIXED_NEWSTYLE) !== 0;
    this.handshake = this.fixed ? "fixed-newstyle" : "newstyle";
    this.noZeroes = (flags & ClientFlag.C_NO_ZEROES) !== 0;
    this.#host.setPhase("options");
    return true;
  }

  // ------------------------------------------------------------------------------------------- options

  option(): boolean {
    const q = this.#host.queue;
    if (q.length < OPTION_HEADER) return false;
    const at = q.position;
    const head = q.view(OPTION_HEADER);
    const base = q.viewBase;
    if (head.getUint32(base) !== 0x49484156 || head.getUint32(base + 4) !== 0x454f5054) {
      this.#host.fatal(
        new NbdRemoteError("bad-magic", at, "magic", "option request without the IHAVEOPT magic"),
      );
      return false;
    }
    const option = head.getUint32(base + 8);
    const length = head.getUint32(base + 12);
    const max = this.#options.maxOptionLength ?? 65536;
    if (length > max) {
      if (!this.fixed) {
        this.#host.fatal(
          new NbdRemoteError(
            "limit-exceeded",
            at + 12,
            "max-option-length",
            `option data of ${length} bytes`,
          ),
        );
        return false;
      }
      q.skip(OPTION_HEADER);
      this.#host.skip(length, option);
      return true;
    }
    if (q.length < OPTION_HEADER + length) return false;
    const bytes = q.peek(OPTION_HEADER + length);
    const r = decodeOptionRequest(bytes, {
      strict: false,
      maxPayloadLength: max,
      maxStringLength: this.#limits.maxStringLength,
    });
    if (!r.done) return false;
    q.skip(OPTION_HEADER + length);
    for (const f of r.findings) {
      if (!this.#host.tolerate({ ...f, offset: at + f.offset })) return false;
    }
    this.#handleOption(r.frame, at);
    return this.#host.phase() !== "closed";
  }

  answer(option: number, reply: number, message?: string): void {
    if (message !== undefined) this.#reply(optionError(option, reply, message));
    else this.#reply(ack(option));
    this.#host.event(
      message === undefined ? { type: "option", option, reply } : { type: "option", option, reply, message },
    );
  }

  #handleOption(req: OptionRequest, at: number): void {
    const option = req.option;
    const data = req.data;
    const o = this.#options;
    if (!this.fixed && option !== Option.EXPORT_NAME) {
      // Without fixed newstyle on both sides there is no way to answer anything but EXPORT_NAME.
      this.#host.fatal(
        new NbdRemoteError(
          "unexpected-frame",
          at,
          "option-not-fixed",
          `option ${optionName(option)} without fixed newstyle; only NBD_OPT_EXPORT_NAME is possible`,
        ),
      );
      return;
    }
    if (option === Option.ABORT) {
      this.answer(option, OptionReply.ACK);
      this.#host.setPhase("closed");
      this.aborted = true;
      this.#host.event({ type: "abort" });
      return;
    }
    const tlsRequired = o.tls === "required" && !this.tls;
    if (option === Option.EXPORT_NAME) {
      this.#exportName(data.kind === "export-name" ? data.name : undefined, at, tlsRequired);
      return;
    }
    if (o.refusedOptions?.includes(option) === true && !(this.extended && isGoOrInfo(option))) {
      this.answer(option, OptionReply.ERR_UNSUP, `${optionName(option)} is not supported by this server`);
      return;
    }
    if (takesNoData(option) && data.kind !== "none") {
      this.answer(option, OptionReply.ERR_INVALID, `${optionName(option)} takes no data`);
      return;
    }
    if (option === Option.STARTTLS) {
      if (this.tls) this.answer(option, OptionReply.ERR_INVALID, "TLS is already up");
      else if ((o.tls ?? "off") === "off") {
        this.answer(option, OptionReply.ERR_POLICY, "this server does not do TLS");
      } else {
        this.answer(option, OptionReply.ACK);
        this.#host.setPhase("tls-handshake");
        // Bytes already received after STARTTLS are the start of the TLS handshake: the transport's.
        const q = this.#host.queue;
        const early = q.length > 0 ? q.peek(q.length).slice() : new Uint8Array(0);
        q.clear();
        this.#host.event({ type: "starttls", early });
      }
      return;
    }
    if (tlsRequired) {
      this.answer(option, OptionReply.ERR_TLS_REQD, "this server requires TLS: send NBD_OPT_STARTTLS first");
      return;
    }
    switch (option) {
      case Option.LIST:
        for (const e of o.exports ?? []) {
          this.#reply({
            type: "option-reply",
            option,
            reply: OptionReply.SERVER,
            data: { kind: "server", name: e.name, description: e.description ?? "" },
          });
        }
        this.answer(option, OptionReply.ACK);
        return;
      case Option.INFO:
      case Option.GO:
        this.#infoOrGo(option, data);
        return;
      case Option.STRUCTURED_REPLY:
        if (o.structuredReplies === false) {
          this.answer(option, OptionReply.ERR_UNSUP, "structured replies are not supported by this server");
        } else if (this.extended) {
          this.answer(option, OptionReply.ERR_EXT_HEADER_REQD, "extended headers are negotiated already");
        } else {
          this.structured = true;
          this.answer(option, OptionReply.ACK);
        }
        return;
      case Option.EXTENDED_HEADERS:
        if (o.extendedHeaders === false) {
          this.answer(option, OptionReply.ERR_UNSUP, "extended headers are not supported by this server");
        } else {
          this.extended = true;
          this.answer(option, OptionReply.ACK);
        }
        return;
      case Option.LIST_META_CONTEXT:
      case Option.SET_META_CONTEXT:
        this.#metaContext(option, data);
        return;
      default:
        this.answer(option, OptionReply.ERR_UNSUP, `${optionName(option)} is not supported by this server`);
    }
  }

  #exportName(name: string | undefined, at: number, tlsRequired: boolean): void {
    // There is no error reply to EXPORT_NAME: refusing it means closing.
    let why: string | undefined;
    const exp = name === undefined ? undefined : this.find(name);
    if (name === undefined) why = "malformed NBD_OPT_EXPORT_NAME";
    else if (tlsRequired) why = "NBD_OPT_EXPORT_NAME before TLS on a server that requires it";
    else if (this.extended) why = "NBD_OPT_EXPORT_NAME after extended headers; the client MUST NOT use it";
    else if (this.#options.refusedOptions?.includes(Option.EXPORT_NAME) === true) {
      why = "EXPORT_NAME is refused";
    } else if (exp === undefined) why = `no export named "${name}"`;
    if (why !== undefined || exp === undefined) {
      this.#host.fatal(new NbdRemoteError("unexpected-frame", at, "export-name-refused", why ?? "refused"));
      return;
    }
    if (this.metaExport !== exp.name) this.meta = new Map();
    const flags = this.flagsFor(exp);
    this.#host.emit(
      encodeExportNameReply({
        type: "export-name-reply",
        size: exp.size,
        transmissionFlags: flags,
        zeroPadding: !this.noZeroes,
      }),
    );
    this.#host.enter(exp, flags);
  }

  #infoOrGo(option: number, data: OptionRequest["data"]): void {
    if (data.kind !== "info-request") {
      this.answer(option, OptionReply.ERR_INVALID, `malformed ${optionName(option)} data`);
      return;
    }
    const exp = this.find(data.name);
    if (exp === undefined) {
      this.answer(option, OptionReply.ERR_UNKNOWN, `no export named "${data.name}"`);
      return;
    }
    const go = option === Option.GO;
    const flags = this.flagsFor(exp);
    if (
      go && this.#options.blockSizeRequired === true && exp.blockSize !== undefined &&
      !data.info.includes(Info.BLOCK_SIZE)
    ) {
      // Spec: the server SHOULD send the constraints first, then insist that the client ask for them.
      this.#reply(infoReply(option, Info.BLOCK_SIZE, exp, flags)!);
      this.answer(
        option,
        OptionReply.ERR_BLOCK_SIZE_REQD,
        "request NBD_INFO_BLOCK_SIZE: this export has constraints",
      );
      return;
    }
    this.#reply(infoReply(option, Info.EXPORT, exp, flags)!);
    // Constraints are sent unrequested too (the client MUST ignore info it does not want).
    const sent = new Set<number>([Info.EXPORT]);
    if (exp.blockSize !== undefined) {
      this.#reply(infoReply(option, Info.BLOCK_SIZE, exp, flags)!);
      sent.add(Info.BLOCK_SIZE);
    }
    for (const type of data.info) {
      if (sent.has(type)) continue;
      sent.add(type);
      const r = infoReply(option, type, exp, flags);
      if (r !== undefined) this.#reply(r);
    }
    this.answer(option, OptionReply.ACK);
    if (go) {
      if (this.metaExport !== exp.name) this.meta = new Map();
      this.#host.enter(exp, flags);
    }
  }

  #metaContext(option: number, data: OptionRequest["data"]): void {
    const set = option === Option.SET_META_CONTEXT;
    if (set) {
      // SET replaces the selection even when it fails.
      this.meta = new Map();
      this.metaExport = undefined;
    }
    if (data.kind !== "meta-context-query") {
      this.answer(option, OptionReply.ERR_INVALID, `malformed ${optionName(option)} data`);
      return;
    }
    if (!this.structured && !this.extended) {
      this.answer(option, OptionReply.ERR_INVALID, "negotiate structured replies or extended headers first");
      return;
    }
    const exp = this.find(data.name);
    if (exp === undefined) {
      this.answer(option, OptionReply.ERR_UNKNOWN, `no export named "${data.name}"`);
      return;
    }
    const names = matchContexts(exp.contexts, data.queries, !set);
    // A context with 64-bit status needs extended headers: SET MUST omit it or fail with EXT_HEADER_REQD (we
    // fail, so that the client learns why), LIST MAY list it and SHOULD then end with that error (spec,
    // extended headers). Never for base: contexts, which no export may declare wide.
    const wide = this.extended ? undefined : names.find((n) => exp.wideContexts.includes(n));
    if (set && wide !== undefined) {
      this.answer(
        option,
        OptionReply.ERR_EXT_HEADER_REQD,
        `metadata context ${wide} has 64-bit status: negotiate extended headers first`,
      );
      return;
    }
    for (const name of names) {
      // Ids are the context's place in the export's list, plus one; LIST replies carry 0 (spec: reserved).
      const id = set ? exp.contexts.indexOf(name) + 1 : 0;
      if (set) this.meta.set(id, name);
      this.#reply({
        type: "option-reply",
        option,
        reply: OptionReply.META_CONTEXT,
        data: { kind: "meta-context", id, name },
      });
    }
    if (set) this.metaExport = exp.name;
    if (wide !== undefined) {
      this.answer(
        option,
        OptionReply.ERR_EXT_HEADER_REQD,
        `metadata context ${wide} (listed) has 64-bit status: it needs extended headers`,
      );
    } else this.answer(option, OptionReply.ACK);
  }

  find(name: string): ResolvedExport | undefined {
    const o = this.#options;
    let decl = o.exports?.find((e) => e.name === name);
    if (decl === undefined && o.lookup !== undefined) decl = o.lookup(name);
    if (decl === undefined && name === "" && o.defaultExport !== null) {
      decl = o.defaultExport === undefined
        ? o.exports?.[0]
        : o.exports?.find((e) => e.name === o.defaultExport);
    }
    if (decl === undefined) return undefined;
    return this.resolve(decl);
  }

  resolve(e: ServerExport): ResolvedExport {
    if (typeof e !== "object" || e === null || typeof e.name !== "string") {
      throw new NbdLocalError("bad-argument", "export", "an export needs a name");
    }
    const bs = e.blockSize;
    if (bs !== undefined) {
      const pow2 = (v: number): boolean => Number.isInteger(v) && v > 0 && (v & (v - 1)) === 0;
      if (
        !pow2(bs.minimum) || bs.minimum > 65536 || !pow2(bs.preferred) ||
        bs.preferred < Math.max(bs.minimum, 512) ||
        !Number.isInteger(bs.maximum) || bs.maximum < bs.preferred || bs.maximum > 0xffff_ffff
      ) {
        throw new NbdLocalError(
          "bad-argument",
          "block-size",
          "block sizes: minimum a power of 2 up to 64 KiB, preferred a power of 2 >= max(minimum, 512), " +
            "maximum >= preferred (spec: block size constraints)",
        );
      }
    }
    const flags =
      (toU32(e.transmissionFlags ?? DEFAULT_EXPORT_FLAGS, "transmission flags") & ~NEGOTIATED_FLAGS &
        0xffff) | TransmissionFlag.HAS_FLAGS | (e.readOnly === true ? TransmissionFlag.READ_ONLY : 0);
    const contexts = e.contexts ?? [];
    const wide = e.wideContexts ?? [];
    for (const name of wide) {
      if (!contexts.includes(name) || name.startsWith("base:")) {
        throw new NbdLocalError(
          "bad-argument",
          "wide-context",
          `wide context ${name} must be one of the export's contexts, outside the base: namespace ` +
            "(whose contexts have 32-bit status)",
        );
      }
    }
    const init = typeof e.initFlags === "function" ? e.initFlags() : e.initFlags;
    return {
      decl: e,
      name: e.name,
      description: e.description,
      size: toU64(e.size, "export size"),
      flags,
      blockSize: bs,
      initFlags: init,
      contexts,
      wideContexts: wide,
    };
  }

  /** The transmission flags for an export under the current negotiation. */
  flagsFor(exp: ResolvedExport): number {
    let f = exp.flags;
    // DF only makes sense, and MUST only be set, when replies can be chunked.
    if (this.structured || this.extended) f |= TransmissionFlag.SEND_DF;
    if (
      this.extended && this.#options.blockStatusPayload !== false && this.metaExport === exp.name &&
      this.meta.size > 0
    ) {
      f |= TransmissionFlag.BLOCK_STATUS_PAYLOAD;
    }
    return f;
  }
}

/** Flags a server decides from the negotiation, never from the export's declaration. */
const NEGOTIATED_FLAGS: number = TransmissionFlag.SEND_DF | TransmissionFlag.BLOCK_STATUS_PAYLOAD;

/** An option reply frame with no data. */
function ack(option: number): OptionReplyFrame {
  return { type: "option-reply", option, reply: OptionReply.ACK, data: { kind: "none" } };
}

/** An option error reply with a message. */
function optionError(option: number, reply: number, message: string): OptionReplyFrame {
  return { type: "option-reply", option, reply, data: { kind: "error", message } };
}

/** An NBD_REP_INFO reply for one info type of an export, or undefined when the export has nothing for it. */
function infoReply(
  option: number,
  info: number,
  exp: ResolvedExport,
  transmissionFlags: number,
): OptionReplyFrame | undefined {
  const reply = (payload: Extract<OptionReplyFrame["data"], { kind: "info" }>["info"]): OptionReplyFrame => ({
    type: "option-reply",
    option,
    reply: OptionReply.INFO,
    data: { kind: "info", info: payload },
  });
  switch (info) {
    case Info.EXPORT:
      return reply({ kind: "export", info: Info.EXPORT, size: exp.size, transmissionFlags });
    case Info.NAME:
      return reply({ kind: "name", info: Info.NAME, name: exp.name });
    case Info.DESCRIPTION:
      return exp.description === undefined
        ? undefined
        : reply({ kind: "description", info: Info.DESCRIPTION, description: exp.description });
    case Info.BLOCK_SIZE:
      return exp.blockSize === undefined
        ? undefined
        : reply({ kind: "block-size", info: Info.BLOCK_SIZE, ...exp.blockSize });
    case Info.INIT_FLAGS:
      return exp.initFlags === undefined
        ? undefined
        : reply({ kind: "init-flags", info: Info.INIT_FLAGS, flags: exp.initFlags });
    default:
      return undefined;
  }
}

/**
 * The contexts of an export a LIST or SET query list selects. Exact names match; a query ending in `:`
 * (`base:`, `qemu:`, `qemu:dirty-bitmap:`) is a wildcard for LIST and selects nothing in SET (spec §10.1,
 * §10.2); LIST with no query lists everything. Queries in unknown namespaces are ignored.
 */
function matchContexts(
  offered: readonly string[],
  queries: readonly string[],
  list: boolean,
): string[] {
  if (list && queries.length === 0) return [...offered];
  const out: string[] = [];
  for (const q of queries) {
    const wildcard = q.endsWith(":");
    if (wildcard && !list) continue;
    for (const name of offered) {
      if ((wildcard ? name.startsWith(q) : name === q) && !out.includes(name)) out.push(name);
    }
  }
  return out;
}

/** Options that take no data; data on them is answered ERR_INVALID (ABORT's is ignored, as the spec asks). */
function takesNoData(option: number): boolean {
  return option === Option.LIST || option === Option.STARTTLS || option === Option.STRUCTURED_REPLY ||
    option === Option.EXTENDED_HEADERS;
}

function optionName(option: number): string {
  return nameOf("option", option) ?? `option ${option}`;
}

function isGoOrInfo(option: number): boolean {
  return option === Option.GO || option === Option.INFO;
}

/**
 * A small NBD server core, bytes in and bytes out, for the conformance kit: one sparse in-memory export,
 * every option and command. Two kinds of knobs:
 *
 * - profiles: legal but unusual behaviour a robust client must handle (`conform client`): replies in
 *   reverse order, READs split into many data and hole chunks, error chunks with messages, extended
 *   headers or structured replies refused, a minimum block size, NO_ZEROES off, many exports;
 * - faults: named by the `conform server` case id whose rule they break, to prove each case can fail.
 *
 * It also reports what the client does wrong (decoder findings on its requests, commands or flags that
 * were not advertised) as client findings.
 *
 * @module
 */
import {
  ClientFlag,
  Command,
  CommandFlag,
  ErrorValue,
  HandshakeFlag,
  Info,
  InitFlag,
  Magic,
  nameOf,
  Option,
  OptionReply,
  ReplyFlag,
  ReplyType,
  TransmissionFlag,
} from "./constants.ts";
import { encodeExportNameReply, encodeGreeting } from "./handshake.ts";
import { encodeOptionReply, type OptionReplyFrame } from "./option_reply.ts";
import {
  createBlockStatusDescriptors,
  encodeReplyChunk,
  encodeSimpleReply,
  type ReplyChunk,
} from "./reply.ts";
import { decodeRequest, type Request } from "./request.ts";

/** Profiles and faults of a {@link ConformPeerServer}. */
export interface ConformPeerOptions {
  /** Export size in bytes (default 1 MiB). */
  readonly size?: number;
  /** The export's name (default "disk"); the empty name selects it too. */
  readonly exportName?: string;
  /** More export names that LIST shows and INFO/GO accept (they all share the same data). */
  readonly moreExports?: readonly string[];
  readonly readOnly?: boolean;
  /** Accept NBD_OPT_STRUCTURED_REPLY (default true). */
  readonly structured?: boolean;
  /** Accept NBD_OPT_EXTENDED_HEADERS (default true). */
  readonly extended?: boolean;
  /** Offer NBD_FLAG_NO_ZEROES (default true). */
  readonly noZeroes?: boolean;
  /** Minimum block size (default 1); above 1 it is always advertised with NBD_INFO_BLOCK_SIZE. */
  readonly minBlock?: number;
  /** Split READ content into chunks of at most this many bytes (default: one chunk per data/hole run). */
  readonly splitReads?: number;
  /** Send the replies to requests that arrive together in reverse order, and chunks of a READ backwards. */
  readonly reorder?: boolean;
  /** Offer a second metadata context, `x-conform:second`. */
  readonly secondContext?: boolean;
  /** Maximum payload advertised in NBD_INFO_BLOCK_SIZE (default 32 MiB). */
  readonly maxPayload?: number;
  /** Answer BLOCK_STATUS past the end with the descriptors of the part inside instead of EINVAL. */
  readonly clipBlockStatus?: boolean;
  /** READs that reach past this offset fail with NBD_EIO and a message (error chunks with messages). */
  readonly failReadsFrom?: number;
  /** Case ids of `conform server` whose rule this server breaks. */
  readonly faults?: ReadonlySet<string>;
}

/**
 * A spec violation by the client, seen by the server.
 *
 * @example
 * ```ts
 * import type { ClientFinding } from "@nbd/codec";
 * const f: ClientFinding = { check: "request-range", message: "NBD_CMD_READ 0+4096 beyond the export size 0" };
 * console.log(f.check); // "request-range"
 * ```
 */
export interface ClientFinding {
  /**
   * What the client broke: a check of `conform client` (`client-flags`, `request-range`, ...), or the rule id
   * of a decoder finding (codec/rules.ts) passed through. Named `check`, not `rule`: the conform checks are
   * their own namespace, not entries of the rule catalogue.
   */
  readonly check: string;
  /** What happened, for a human. */
  readonly message: string;
}

const BLOCK = 4096;
const UTF8 = new TextEncoder();
const UTF8_STRICT = new TextDecoder("utf-8", { fatal: true });
const OPT_MAGIC = Magic.OPTION_REPLY;

type Phase = "greeting" | "flags" | "options" | "transmission" | "closed";

/** The server core: feed it the client's bytes with {@link receive}, send what {@link take} returns. */
export class ConformPeerServer {
  readonly options: ConformPeerOptions;
  readonly findings: ClientFinding[] = [];
  /** The option and command names seen, in order (for reports). */
  readonly seen: string[] = [];
  /** How the client ended the session, when it did so cleanly (NBD_CMD_DISC or NBD_OPT_ABORT). */
  ended: string | undefined;
  #phase: Phase = "greeting";
  #in: Uint8Array = new Uint8Array(0);
  #out: Uint8Array[] = [];
  #closeAfterFlush = false;
  #clientFlags = 0;
  #requests = 0;
  /** Requests decoded from the current {@link receive} call (the ones in flight together). */
  #inBatch = 0;
  #held: Uint8Array[] = [];
  #sr = false;
  #ext = false;
  #contexts = new Map<number, string>();
  #data: Uint8Array;
  #allocated: boolean[];
  readonly #size: number;
  readonly #faults: ReadonlySet<string>;
  get #maxPayload(): number {
    return this.options.maxPayload ?? 32 << 20;
  }

  constructor(options: ConformPeerOptions = {}) {
    this.options = options;
    this.#size = options.size ?? 1 << 20;
    this.#faults = options.faults ?? new Set();
    this.#data = new Uint8Array(this.#size);
    this.#allocated = new Array<boolean>(Math.ceil(this.#size / BLOCK)).fill(false);
    // Some data and some holes, so that READ and BLOCK_STATUS have both to report.
    for (let b = 0; b < this.#allocated.length; b += 3) {
      this.#allocated[b] = true;
      for (let i = b * BLOCK; i < Math.min((b + 1) * BLOCK, this.#size); i++) {
        this.#data[i] = (i * 7 + 3) & 0xff;
      }
    }
    let hf = HandshakeFlag.FIXED_NEWSTYLE | (options.noZeroes === false ? 0 : HandshakeFlag.NO_ZEROES);
    if (this.#f("hs.fixed-newstyle")) hf &= ~HandshakeFlag.FIXED_NEWSTYLE;
    if (this.#f("hs.reserved-flags")) hf |= 0x8;
    this.#emit(encodeGreeting({ type: "newstyle-greeting", handshakeFlags: hf }));
    this.#phase = "flags";
  }

  /** A copy of the export's current contents. */
  exportBytes(): Uint8Array {
    return this.#data.slice();
  }

  /** Whether the server has ended the connection (after its output is sent). */
  get closed(): boolean {
    return this.#phase === "closed" && this.#out.length === 0;
  }

  /** Whether the caller should close the connection once it has sent what {@link take} returned. */
  get closing(): boolean {
    return this.#phase === "closed";
  }

  /** Bytes to send to the client (and forgets them). */
  take(): Uint8Array[] {
    const o = this.#out;
    this.#out = [];
    return o;
  }

  /** Feeds bytes from the client. */
  receive(bytes: Uint8Array): void {
    if (this.#phase === "closed") return;
    const n = new Uint8Array(this.#in.length + bytes.length);
    n.set(this.#in);
    n.set(bytes, this.#in.length);
    this.#in = n;
    const batch: Uint8Array[][] = [];
    this.#inBatch = 0;
    for (;;) {
      const before = this.#in.length;
      const phase: Phase = this.#phase;
      if (phase === "flags") this.#flags();
      else if (phase === "options") this.#option();
      else if (phase === "transmission") {
        const out = this.#out;
        this.#out = [];
        this.#request();
        const mine = this.#out;
        this.#out = out;
        if (mine.length) batch.push(mine);
      } else break;
      if (this.#in.length === before && this.#phase === phase) break;
    }
    if (this.options.reorder) batch.reverse();
    for (const b of batch) this.#out.push(...b);
    if (this.#closeAfterFlush) this.#phase = "closed";
  }

  #f(id: string): boolean {
    return this.#faults.has(id);
  }

  #emit(b: Uint8Array): void {
    this.#out.push(b);
  }

  #close(): void {
    this.#closeAfterFlush = true;
    this.#phase = "closed";
    this.#in = new Uint8Array(0);
  }

  #flags(): void {
    if (this.#in.length < 4) return;
    const f = new DataView(this.#in.buffer, this.#in.byteOffset).getUint32(0);
    this.#in = this.#in.subarray(4);
    this.#clientFlags = f;
    if (f & ClientFlag.C_NO_ZEROES && this.options.noZeroes === false) {
      this.findings.push({
        check: "client-flags",
        message: "NBD_FLAG_C_NO_ZEROES set, but the server did not offer NBD_FLAG_NO_ZEROES",
      });
    }
    if (f & ~0x3 && !this.#f("hs.unknown-client-flag")) {
      this.findings.push({ check: "client-flags", message: `unknown client flags 0x${f.toString(16)}` });
      this.ended = "server (bad client flags)";
      this.#close();
      return;
    }
    this.#phase = "options";
  }

  // -- options ------------------------------------------------------------------------------------------

  #reply(option: number, reply: number, data: OptionReplyFrame["data"] = { kind: "none" }): void {
    this.#emit(encodeOptionReply({ type: "option-reply", option, reply, data }));
  }

  #rawReply(option: number, reply: number, payload: Uint8Array): void {
    const b = new Uint8Array(20 + payload.length);
    const dv = new DataView(b.buffer);
    dv.setBigUint64(0, OPT_MAGIC);
    dv.setUint32(8, option);
    dv.setUint32(12, reply);
    dv.setUint32(16, payload.length);
    b.set(payload, 20);
    this.#emit(b);
  }

  #error(option: number, reply: number, message: string): void {
    this.#reply(option, reply, { kind: "error", message });
  }

  #exports(): string[] {
    return [this.options.exportName ?? "disk", ...(this.options.moreExports ?? [])];
  }

  #known(name: string): boolean {
    return name === "" || this.#exports().includes(name);
  }

  #tflags(forGo: boolean): number {
    let f = TransmissionFlag.HAS_FLAGS | TransmissionFlag.SEND_FLUSH | TransmissionFlag.SEND_FUA |
      TransmissionFlag.SEND_TRIM | TransmissionFlag.SEND_WRITE_ZEROES | TransmissionFlag.SEND_FAST_ZERO |
      TransmissionFlag.SEND_CACHE | TransmissionFlag.CAN_MULTI_CONN;
    if (this.options.readOnly) f |= TransmissionFlag.READ_ONLY;
    if (this.#sr || this.#ext) f |= TransmissionFlag.SEND_DF;
    if (this.#f("info.has-flags")) f &= ~TransmissionFlag.HAS_FLAGS;
    if (this.#f("info.df-needs-structured")) f |= TransmissionFlag.SEND_DF;
    if (this.#f("info.fast-zero-needs-write-zeroes")) f &= ~TransmissionFlag.SEND_WRITE_ZEROES;
    if (this.#f("info.block-status-payload-flag")) f |= TransmissionFlag.BLOCK_STATUS_PAYLOAD;
    if (forGo && this.#f("info.info-then-go")) f |= TransmissionFlag.ROTATIONAL;
    return f;
  }

  #option(): void {
    if (this.#in.length < 16) return;
    const dv = new DataView(this.#in.buffer, this.#in.byteOffset);
    if (dv.getBigUint64(0) !== Magic.IHAVEOPT) {
      this.findings.push({ check: "option-magic", message: "option request without IHAVEOPT" });
      this.#close();
      return;
    }
    const option = dv.getUint32(8);
    const len = dv.getUint32(12);
    if (len > 1 << 20) {
      this.findings.push({ check: "option-length", message: `option data of ${len} bytes` });
      this.#close();
      return;
    }
    if (this.#in.length < 16 + len) return;
    const data = this.#in.slice(16, 16 + len);
    this.#in = this.#in.subarray(16 + len);
    this.seen.push(nameOf("option", option) ?? `option ${option}`);
    switch (option) {
      case Option.EXPORT_NAME:
        return this.#exportName(data);
      case Option.ABORT:
        this.ended = "NBD_OPT_ABORT";
        if (!this.#f("opt.abort")) this.#reply(option, OptionReply.ACK);
        this.#close();
        return;
      case Option.LIST:
        return this.#list(data);
      case Option.STARTTLS:
        return this.#error(
          option,
          this.#f("opt.starttls-notls") ? OptionReply.ERR_TLS_REQD : OptionReply.ERR_POLICY,
          "TLS is not offered",
        );
      case Option.STRUCTURED_REPLY:
        if (this.options.structured === false) {
          return this.#error(option, OptionReply.ERR_UNSUP, "structured replies refused (profile)");
        }
        if (len > 0 && !this.#f("opt.structured-reply-data")) {
          return this.#error(option, OptionReply.ERR_INVALID, "no data expected");
        }
        if (this.#ext && this.#f("ext.structured-after")) this.#ext = false;
        if (this.#ext) {
          return this.#error(option, OptionReply.ERR_EXT_HEADER_REQD, "extended headers already negotiated");
        }
        this.#sr = true;
        return this.#reply(option, OptionReply.ACK);
      case Option.EXTENDED_HEADERS:
        if (this.options.extended === false) {
          return this.#error(option, OptionReply.ERR_UNSUP, "extended headers refused (profile)");
        }
        if (len > 0 && !this.#f("opt.extended-headers-data")) {
          return this.#error(option, OptionReply.ERR_INVALID, "no data expected");
        }
        this.#ext = true;
        return this.#reply(option, OptionReply.ACK);
      case Option.INFO:
      case Option.GO:
        return this.#infoGo(option, data);
      case Option.LIST_META_CONTEXT:
      case Option.SET_META_CONTEXT:
        return this.#meta(option, data);
      default:
        return this.#error(
          option,
          this.#f("opt.unknown") ? OptionReply.ERR_INVALID : OptionReply.ERR_UNSUP,
          "unknown option",
        );
    }
  }

  #exportName(data: Uint8Array): void {
    let name: string | undefined;
    try {
      name = UTF8_STRICT.decode(data);
    } catch {
      name = undefined;
    }
    if (name === undefined || !this.#known(name)) {
      if (this.#f("hs.export-name-unknown")) {
        return this.#error(Option.EXPORT_NAME, OptionReply.ERR_UNKNOWN, "no such export");
      }
      this.#close();
      return;
    }
    const both = (this.options.noZeroes !== false) && (this.#clientFlags & ClientFlag.C_NO_ZEROES) !== 0;
    let zeroPadding = !both;
    if (this.#f("hs.export-name-zeroes")) zeroPadding = false;
    if (this.#f("hs.export-name-no-zeroes")) zeroPadding = true;
    this.#emit(
      encodeExportNameReply({
        type: "export-name-reply",
        size: BigInt(this.#size),
        transmissionFlags: this.#tflags(true),
        zeroPadding,
      }),
    );
    this.#phase = "transmission";
  }

  #list(data: Uint8Array): void {
    if (data.length > 0) {
      if (this.#f("opt.list-data-sync")) {
        this.#error(Option.LIST, OptionReply.ERR_INVALID, "no data expected");
      } else if (!this.#f("opt.list-data")) {
        return this.#error(Option.LIST, OptionReply.ERR_INVALID, "no data expected");
      }
    }
    for (const name of this.#exports()) {
      if (this.#f("opt.list")) {
        // Name length larger than the reply: a malformed NBD_REP_SERVER.
        const n = UTF8.encode(name);
        const p = new Uint8Array(4 + n.length);
        new DataView(p.buffer).setUint32(0, n.length + 10);
        p.set(n, 4);
        this.#rawReply(Option.LIST, OptionReply.SERVER, p);
      } else {
        this.#reply(Option.LIST, OptionReply.SERVER, { kind: "server", name, description: "" });
      }
    }
    this.#reply(this.#f("opt.reply-echo") ? Option.LIST + 100 : Option.LIST, OptionReply.ACK);
  }

  #infoGo(option: number, data: Uint8Array): void {
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    if (data.length < 6) return this.#error(option, OptionReply.ERR_INVALID, "too short");
    const nameLen = dv.getUint32(0);
    if (nameLen > data.length - 6) {
      return this.#error(
        option,
        this.#f("opt.info-bad-length") ? OptionReply.ERR_UNSUP : OptionReply.ERR_INVALID,
        "name length overruns the data",
      );
    }
    const count = dv.getUint16(4 + nameLen);
    if (data.length !== 6 + nameLen + 2 * count) {
      return this.#error(option, OptionReply.ERR_INVALID, "info request count does not match the length");
    }
    let name: string;
    const nameBytes = data.subarray(4, 4 + nameLen);
    try {
      name = UTF8_STRICT.decode(nameBytes);
    } catch {
      if (!this.#f("opt.name-bad-utf8")) {
        return this.#error(option, OptionReply.ERR_INVALID, "name is not UTF-8");
      }
      name = "";
    }
    if (nameLen > 4096) {
      if (!this.#f("opt.name-too-long")) {
        return this.#error(option, OptionReply.ERR_INVALID, "name longer than 4096 bytes");
      }
      name = "";
    }
    const requests: number[] = [];
    for (let i = 0; i < count; i++) requests.push(dv.getUint16(6 + nameLen + 2 * i));
    if (!this.#known(name)) {
      if (this.#f("info.unknown-export")) {
        this.#reply(option, OptionReply.INFO, {
          kind: "info",
          info: { kind: "export", info: 0, size: 0n, transmissionFlags: 1 },
        });
      }
      return this.#error(option, OptionReply.ERR_UNKNOWN, "no such export");
    }
    const minBlock = this.options.minBlock ?? 1;
    if (!this.#f("info.go-export")) {
      this.#reply(option, OptionReply.INFO, {
        kind: "info",
        info: {
          kind: "export",
          info: 0,
          size: BigInt(this.#size),
          transmissionFlags: this.#tflags(option === Option.GO),
        },
      });
    }
    if (requests.includes(Info.NAME)) {
      this.#reply(option, OptionReply.INFO, {
        kind: "info",
        info: { kind: "name", info: 1, name: name || this.#exports()[0]! },
      });
    }
    if (requests.includes(Info.DESCRIPTION)) {
      this.#reply(option, OptionReply.INFO, {
        kind: "info",
        info: { kind: "description", info: 2, description: "nbd-codec conformance peer" },
      });
    }
    if (requests.includes(Info.BLOCK_SIZE) || minBlock > 1) {
      if (this.#f("info.all-types")) {
        this.#rawReply(option, OptionReply.INFO, new Uint8Array([0, 3, 0, 0, 0, 1, 0, 0, 16, 0]));
      } else {
        this.#reply(option, OptionReply.INFO, {
          kind: "info",
          info: {
            kind: "block-size",
            info: 3,
            minimum: this.#f("info.block-size") ? 3 : minBlock,
            preferred: Math.max(4096, minBlock),
            maximum: this.#maxPayload,
          },
        });
      }
    }
    if (requests.includes(Info.INIT_FLAGS)) {
      this.#reply(option, OptionReply.INFO, {
        kind: "info",
        info: { kind: "init-flags", info: 4, flags: InitFlag.SPARSE },
      });
    }
    if (this.#f("info.unknown-type")) {
      for (const r of requests) {
        if (r > Info.INIT_FLAGS) {
          this.#rawReply(option, OptionReply.INFO, new Uint8Array([r >> 8, r & 0xff]));
        }
      }
    }
    this.#reply(option, OptionReply.ACK);
    if (option === Option.GO) this.#phase = "transmission";
  }

  #availableContexts(): string[] {
    return ["base:allocation", ...(this.options.secondContext ? ["x-conform:second"] : [])];
  }

  #meta(option: number, data: Uint8Array): void {
    const set = option === Option.SET_META_CONTEXT;
    if (!this.#sr && !this.#ext && !this.#f("meta.set-before-structured")) {
      return this.#error(option, OptionReply.ERR_INVALID, "negotiate structured replies first");
    }
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const invalid = (why: string): void =>
      this.#error(
        option,
        this.#f("meta.bad-query-length") ? OptionReply.ERR_UNSUP : OptionReply.ERR_INVALID,
        why,
      );
    if (data.length < 8) return invalid("too short");
    const nameLen = dv.getUint32(0);
    if (nameLen > data.length - 8) return invalid("name length overruns the data");
    const count = dv.getUint32(4 + nameLen);
    const queries: string[] = [];
    let at = 8 + nameLen;
    for (let i = 0; i < count; i++) {
      if (at + 4 > data.length) return invalid("query count overruns the data");
      const l = dv.getUint32(at);
      if (at + 4 + l > data.length) return invalid("query length overruns the data");
      queries.push(new TextDecoder().decode(data.subarray(at + 4, at + 4 + l)));
      at += 4 + l;
    }
    if (at !== data.length) return invalid("data after the queries");
    const avail = this.#availableContexts();
    const chosen = new Set<string>();
    for (const q of queries) {
      const ns = q.slice(0, q.indexOf(":") + 1);
      if (ns === "") return invalid(`query ${q} has no namespace`);
      if (this.#f("meta.unknown-namespace") && ns !== "base:" && ns !== "x-conform:") {
        return invalid("unknown namespace");
      }
      for (const a of avail) if (a === q || (!set && q === ns && a.startsWith(ns))) chosen.add(a);
    }
    if (queries.length === 0 && !set) { for (const a of avail) chosen.add(a); }
    if (set) this.#contexts.clear();
    for (const name of chosen) {
      const id = set
        ? (this.#f("meta.set-ids-unique") ? 1 : avail.indexOf(name) + 1)
        : (this.#f("meta.list-id-zero") ? 7 : 0);
      if (set) this.#contexts.set(id, name);
      let shown = name;
      if (!set && this.#f("meta.list")) shown = name.replace(":", "");
      if (set && this.#f("meta.set-base-allocation") && name === "base:allocation") shown = "base:allocatio";
      this.#reply(option, OptionReply.META_CONTEXT, { kind: "meta-context", id, name: shown });
    }
    this.#reply(option, OptionReply.ACK);
  }

  // -- transmission -------------------------------------------------------------------------------------

  /** Handles one request. */
  #request(): void {
    let r;
    try {
      r = decodeRequest(this.#in, { strict: false, extendedHeaders: this.#ext, maxPayloadLength: 64 << 20 });
    } catch (e) {
      this.findings.push({ check: "request", message: e instanceof Error ? e.message : String(e) });
      this.#close();
      return;
    }
    if (!r.done) return;
    this.#in = this.#in.subarray(r.byteLength);
    for (const f of r.findings) this.findings.push({ check: f.rule, message: f.message });
    const req = r.frame;
    this.seen.push(nameOf("command", req.command) ?? `command ${req.command}`);
    this.#requests++;
    if (this.#f("tx.in-flight") && this.#requests === 10) return;
    // A fixed queue of 32 that silently drops what does not fit.
    if (this.#f("tx.in-flight-many") && ++this.#inBatch > 32) return;
    if (this.#f("tx.disc-outstanding")) {
      // Answers READs late (when another command comes), and forgets them on DISC.
      if (req.command === Command.DISC) this.#held = [];
      const out = this.#out;
      this.#out = [];
      this.#command(req);
      if (req.command === Command.READ) {
        this.#held.push(...this.#out);
        this.#out = out;
      } else {
        this.#out = [...out, ...this.#held, ...this.#out];
        this.#held = [];
      }
      return;
    }
    this.#command(req);
  }

  #ok(req: Request): void {
    if (this.#ext && !this.#f("ext.no-simple-replies")) {
      this.#chunk(req, ReplyFlag.DONE, ReplyType.NONE, { kind: "none" });
    } else {
      this.#emit(encodeSimpleReply({ type: "simple-reply", error: 0, cookie: this.#cookie(req) }));
    }
  }

  #cookie(req: Request): bigint {
    return this.#f("tx.cookies") && req.cookie >= 1n << 63n ? req.cookie ^ 1n : req.cookie;
  }

  #chunk(
    req: Request,
    flags: number,
    chunkType: number,
    payload: ReplyChunk["payload"],
    extra?: Uint8Array,
    style?: boolean,
  ): void {
    const extended = style ?? this.#ext;
    const frame: ReplyChunk = {
      type: "reply-chunk",
      extended,
      flags,
      chunkType,
      cookie: this.#cookie(req),
      payload,
      ...(extended ? { offset: this.#f("ext.offset-echo") ? req.offset + 1n : req.offset } : {}),
    };
    const head = encodeReplyChunk(frame);
    if (!extra) return this.#emit(head);
    const b = new Uint8Array(head.length + extra.length);
    b.set(head);
    b.set(extra, head.length);
    this.#emit(b);
  }

  #fail(req: Request, error: number, message: string): void {
    const structured = (this.#sr || this.#ext) && !(this.#ext && this.#f("ext.no-simple-replies")) &&
      !(req.command !== Command.READ && this.#f("tx.error-structured"));
    if (!structured) {
      this.#emit(encodeSimpleReply({ type: "simple-reply", error, cookie: this.#cookie(req) }));
      if (req.command === Command.READ && this.#f("read.simple-error-no-data")) {
        this.#emit(new Uint8Array(Number(req.length)));
      }
      return;
    }
    const value = this.#f("read.error-chunk") ? 0 : error;
    this.#chunk(req, ReplyFlag.DONE, ReplyType.ERROR, { kind: "error", error: value, message });
  }

  #finding(check: string, message: string): void {
    this.findings.push({ check, message });
  }

  #command(req: Request): void {
    const f = this.#tflags(true);
    const end = req.offset + req.length;
    const size = BigInt(this.#size);
    const mb = BigInt(this.options.minBlock ?? 1);
    const known = CommandFlag.FUA | CommandFlag.NO_HOLE | CommandFlag.DF | CommandFlag.REQ_ONE |
      CommandFlag.FAST_ZERO |
      CommandFlag.PAYLOAD_LEN;
    if (req.flags & ~known && !this.#f("tx.unknown-flag")) {
      this.#finding("command-flags", `unknown command flags 0x${req.flags.toString(16)}`);
      return this.#fail(req, ErrorValue.EINVAL, "unknown command flags");
    }
    if (
      req.command !== Command.DISC && req.command <= Command.BLOCK_STATUS &&
      (req.offset % mb || req.length % mb) && !this.#f("tx.unaligned")
    ) {
      this.#finding(
        "request-alignment",
        `${
          nameOf("command", req.command)
        } at ${req.offset}+${req.length} not aligned to the minimum block size ${mb}`,
      );
      return this.#fail(req, ErrorValue.EINVAL, "unaligned request");
    }
    if (
      this.#f("tx.effect-over-max") && req.length > BigInt(this.#maxPayload) &&
      (req.command === Command.BLOCK_STATUS || req.command === Command.CACHE)
    ) {
      this.#close();
      return;
    }
    const ranged = req.command === Command.READ || req.command === Command.WRITE ||
      req.command === Command.TRIM ||
      req.command === Command.CACHE || req.command === Command.WRITE_ZEROES ||
      req.command === Command.BLOCK_STATUS;
    if (ranged && end > size) {
      this.#finding(
        "request-range",
        `${nameOf("command", req.command)} ${req.offset}+${req.length} beyond the export size ${size}`,
      );
    }
    if (req.command === Command.WRITE && req.length > BigInt(this.#maxPayload)) {
      this.#finding(
        "payload-max",
        `WRITE of ${req.length} bytes, above the maximum payload ${this.#maxPayload}`,
      );
    }
    if (req.command === Command.DISC) this.ended = "NBD_CMD_DISC";
    switch (req.command) {
      case Command.READ: {
        if (req.flags & CommandFlag.REQ_ONE && !this.#f("tx.flag-inapplicable")) {
          return this.#fail(req, ErrorValue.EINVAL, "REQ_ONE is not a READ flag");
        }
        if (req.flags & CommandFlag.FUA && this.#f("tx.fua-any-command")) {
          return this.#fail(req, ErrorValue.EINVAL, "FUA refused on READ");
        }
        if (req.flags & CommandFlag.DF && !(f & TransmissionFlag.SEND_DF)) {
          this.#finding("df-unadvertised", "READ with DF, which was not advertised");
          if (!this.#f("tx.df-unadvertised")) {
            return this.#fail(req, ErrorValue.EINVAL, "DF was not advertised");
          }
        }
        if (
          end > size && !this.#f("read.beyond-end") && !(this.#f("tx.length-max-end") && end >= 1n << 32n)
        ) {
          return this.#fail(req, ErrorValue.EINVAL, `read beyond the end of the export (${size} bytes)`);
        }
        if (this.options.failReadsFrom !== undefined && Number(end) > this.options.failReadsFrom) {
          return this.#fail(
            req,
            ErrorValue.EIO,
            `simulated read error past offset ${this.options.failReadsFrom} (conform profile)`,
          );
        }
        if (this.#f("read.over-max") && req.length > BigInt(this.#maxPayload)) {
          this.#close();
          return;
        }
        if (this.#f("tx.length-max-end") && req.length === 0xffff_ffffn) {
          // The 32-bit overflow: (offset + length) mod 2^32 passes the range check; the read stops at the end.
          return this.#read({ ...req, length: size - req.offset });
        }
        if (req.length === 0n && this.#f("read.zero-length")) {
          this.#close();
          return;
        }
        return this.#read(req);
      }
      case Command.WRITE: {
        if (this.options.readOnly && !this.#f("tx.read-only-write")) {
          return this.#fail(req, ErrorValue.EPERM, "read-only export");
        }
        if (req.flags & CommandFlag.FUA && this.#f("write.fua")) {
          return this.#fail(req, ErrorValue.EINVAL, "FUA refused");
        }
        if (end > size) {
          return this.#fail(
            req,
            this.#f("write.beyond-end") ? ErrorValue.EINVAL : ErrorValue.ENOSPC,
            "write beyond the end",
          );
        }
        if (!this.#f("write.read-back") && req.data) this.#store(Number(req.offset), req.data);
        return this.#ok(req);
      }
      case Command.DISC:
        if (this.#f("tx.disc")) {
          this.#emit(encodeSimpleReply({ type: "simple-reply", error: 0, cookie: req.cookie }));
        }
        this.#close();
        return;
      case Command.FLUSH:
        if (this.#f("tx.flush")) return this.#fail(req, ErrorValue.EIO, "flush failed");
        return this.#ok(req);
      case Command.TRIM:
        if (this.options.readOnly) return this.#fail(req, ErrorValue.EPERM, "read-only export");
        if (end > size) return this.#fail(req, ErrorValue.EINVAL, "trim beyond the end");
        if (this.#f("write.trim")) return this.#fail(req, ErrorValue.EIO, "trim failed");
        this.#zero(Number(req.offset), Number(req.length), true);
        return this.#ok(req);
      case Command.CACHE:
        if (this.#f("tx.cache") || end > size) return this.#fail(req, ErrorValue.EINVAL, "cache refused");
        return this.#ok(req);
      case Command.WRITE_ZEROES: {
        if (this.options.readOnly) return this.#fail(req, ErrorValue.EPERM, "read-only export");
        if (end > size) return this.#fail(req, ErrorValue.ENOSPC, "write beyond the end");
        if (req.flags & CommandFlag.FAST_ZERO && this.#f("write.fast-zero")) {
          return this.#fail(req, ErrorValue.EIO, "fast zero failed");
        }
        if (!this.#f("write.zeroes")) {
          this.#zero(Number(req.offset), Number(req.length), !(req.flags & CommandFlag.NO_HOLE));
        }
        return this.#ok(req);
      }
      case Command.BLOCK_STATUS:
        return this.#blockStatus(req);
      default:
        this.#finding("command-unknown", `unknown command ${req.command}`);
        if (this.#f("tx.unknown-command")) return this.#ok(req);
        return this.#fail(req, ErrorValue.EINVAL, `unknown command ${req.command}`);
    }
  }

  #store(at: number, data: Uint8Array): void {
    this.#data.set(data, at);
    for (let b = Math.floor(at / BLOCK); b * BLOCK < at + data.length; b++) this.#allocated[b] = true;
  }

  #zero(at: number, len: number, punch: boolean): void {
    this.#data.fill(0, at, at + len);
    if (!punch) {
      for (let b = Math.floor(at / BLOCK); b * BLOCK < at + len; b++) this.#allocated[b] = true;
      return;
    }
    for (let b = Math.ceil(at / BLOCK); (b + 1) * BLOCK <= at + len; b++) this.#allocated[b] = false;
  }

  /** Runs of [offset, length, allocated] covering [at, at + len). */
  #runs(at: number, len: number): [number, number, boolean][] {
    const out: [number, number, boolean][] = [];
    let p = at;
    while (p < at + len) {
      const b = Math.floor(p / BLOCK);
      const alloc = this.#allocated[b] ?? true;
      let q = Math.min((b + 1) * BLOCK, at + len);
      while (q < at + len && (this.#allocated[Math.floor(q / BLOCK)] ?? true) === alloc) {
        q = Math.min(q + BLOCK - (q % BLOCK), at + len);
      }
      out.push([p, q - p, alloc]);
      p = q;
    }
    return out;
  }

  #read(req: Request): void {
    const at = Number(req.offset);
    const len = Number(req.length);
    const structured = this.#sr || this.#ext;
    if (!structured || (this.#sr && !this.#ext && this.#f("read.structured"))) {
      if (!structured && this.#f("read.simple")) {
        this.#chunk(
          req,
          ReplyFlag.DONE,
          ReplyType.OFFSET_DATA,
          { kind: "offset-data", offset: req.offset, data: this.#data.subarray(at, at + len) },
          this.#data.subarray(at, at + len),
          false,
        );
        return;
      }
      const head = encodeSimpleReply({ type: "simple-reply", error: 0, cookie: this.#cookie(req) });
      const b = new Uint8Array(head.length + len);
      b.set(head);
      b.set(this.#data.subarray(at, at + len), head.length);
      this.#emit(b);
      return;
    }
    const style = this.#ext && this.#f("ext.header-style") ? false : this.#ext;
    let pieces: [number, number, boolean][];
    if (req.flags & CommandFlag.DF && !this.#f("read.df")) pieces = len ? [[at, len, true]] : [];
    else {
      pieces = [];
      const split = this.options.splitReads ?? (this.#f("read.df") ? Math.max(1, Math.ceil(len / 2)) : 0);
      for (const [o, l, a] of this.#runs(at, len)) {
        if (split <= 0) pieces.push([o, l, a]);
        else for (let x = 0; x < l; x += split) pieces.push([o + x, Math.min(split, l - x), a]);
      }
    }
    if (this.#f("read.coverage") && pieces.length) pieces.pop();
    if (this.#f("read.no-overlap") && pieces.length) pieces.push(pieces[0]!);
    if (this.options.reorder) pieces.reverse();
    for (const [o, l, a] of pieces) {
      if (a) {
        this.#chunk(
          req,
          0,
          ReplyType.OFFSET_DATA,
          { kind: "offset-data", offset: BigInt(o), data: this.#data.subarray(o, o + l) },
          this.#data.subarray(o, o + l),
          style,
        );
      } else {
        this.#chunk(
          req,
          0,
          ReplyType.OFFSET_HOLE,
          { kind: "offset-hole", offset: BigInt(o), holeSize: l },
          undefined,
          style,
        );
      }
    }
    if (this.#f("read.within")) {
      this.#chunk(
        req,
        0,
        ReplyType.OFFSET_HOLE,
        { kind: "offset-hole", offset: BigInt(at + len), holeSize: 512 },
        undefined,
        style,
      );
    }
    if (this.#f("read.chunk-format")) {
      this.#chunk(
        req,
        0,
        ReplyType.OFFSET_HOLE,
        { kind: "offset-hole", offset: BigInt(at), holeSize: 0 },
        undefined,
        style,
      );
    }
    this.#chunk(req, ReplyFlag.DONE, ReplyType.NONE, { kind: "none" }, undefined, style);
    if (this.#f("read.done-last")) {
      this.#chunk(req, ReplyFlag.DONE, ReplyType.NONE, { kind: "none" }, undefined, style);
    }
  }

  #blockStatus(req: Request): void {
    if (!this.#sr && !this.#ext) {
      this.#finding("block-status-unnegotiated", "BLOCK_STATUS without structured replies");
      return this.#fail(req, ErrorValue.EINVAL, "no structured replies");
    }
    if (this.#contexts.size === 0) {
      this.#finding("block-status-no-context", "BLOCK_STATUS without a selected metadata context");
      if (this.#f("tx.block-status-unselected")) return this.#ok(req);
      return this.#fail(req, ErrorValue.EINVAL, "no metadata context selected");
    }
    const size = BigInt(this.#size);
    if (this.#f("bs.length-max") && req.length >= 0xffff_f000n) {
      // The 32-bit overflow real servers shipped: the length rounded up to the block size is 2^32, stored in
      // a 32-bit descriptor as 0 (compact), or reported in full past the request (extended).
      const rounded = (req.length + BigInt(BLOCK) - 1n) / BigInt(BLOCK) * BigInt(BLOCK);
      const extended = this.#ext;
      for (const id of this.#contexts.keys()) {
        const descriptors = createBlockStatusDescriptors(id, extended, [{
          length: extended ? rounded : Number(rounded & 0xffff_ffffn),
          status: 0,
        }]);
        this.#chunk(req, 0, extended ? ReplyType.BLOCK_STATUS_EXT : ReplyType.BLOCK_STATUS, {
          kind: "block-status",
          descriptors,
        });
      }
      return this.#chunk(req, ReplyFlag.DONE, ReplyType.NONE, { kind: "none" });
    }
    if (req.offset + req.length > size && !this.#f("bs.beyond-end") && !this.options.clipBlockStatus) {
      return this.#fail(req, ErrorValue.EINVAL, "block status beyond the end");
    }
    const at = Number(req.offset);
    const len = Math.max(0, Math.min(Number(req.length), this.#size - at));
    let runs = this.#runs(at, len).map(([, l, a]) => ({ length: l, status: a ? 0 : 3 }));
    if (runs.length === 0) runs = [{ length: 512, status: 0 }];
    if (req.flags & CommandFlag.REQ_ONE && !this.#f("bs.req-one")) runs = runs.slice(0, 1);
    if (this.#f("bs.req-one") && runs.length === 1) runs.push({ length: 512, status: 0 });
    if (this.#f("bs.descriptors")) runs.unshift({ length: 0, status: 0 });
    if (this.#f("bs.reserved-bits")) runs = runs.map((r) => ({ ...r, status: r.status | 0x100 }));
    const extended = this.#ext && !this.#f("ext.block-status");
    const type = extended ? ReplyType.BLOCK_STATUS_EXT : ReplyType.BLOCK_STATUS;
    let ids = [...this.#contexts.keys()];
    if (this.#f("bs.all-contexts") && ids.length > 1) ids = ids.slice(0, 1);
    if (this.#f("bs.one-chunk-per-context")) ids = [...ids, ids[0]!];
    for (const id of ids) {
      const descriptors = createBlockStatusDescriptors(
        id,
        extended,
        runs.map((r) => ({ length: r.length, status: r.status })),
      );
      this.#chunk(req, 0, type, { kind: "block-status", descriptors });
    }
    this.#chunk(req, ReplyFlag.DONE, ReplyType.NONE, { kind: "none" });
  }
}

/**
 * The client side of `conform server`: a buffered reader over a {@link ConformConnection} and a prober
 * that sends raw options and requests (well-formed or not) with our encoders and decodes the answers
 * leniently, so that a case sees every violation instead of the first exception.
 *
 * @module
 */
import { u32, u64 } from "./_bytes.ts";
import { ClientFlag, Command, HandshakeFlag, Magic, nameOf, Option, OptionReply } from "./constants.ts";
import type { ConformConnection } from "./conform.ts";
import { ConformSkip, ConformViolation } from "./conform.ts";
import { isNbdDecodeError } from "./errors.ts";
import type { Finding } from "./errors.ts";
import {
  decodeExportNameReply,
  decodeGreeting,
  encodeClientFlags,
  type ExportNameReply,
} from "./handshake.ts";
import { encodeOptionRequest, type OptionData } from "./option.ts";
import { decodeOptionReply, isErrorReply, type OptionReplyFrame } from "./option_reply.ts";
import { decodeReplyChunk, decodeSimpleReply, type ReplyChunk, type SimpleReply } from "./reply.ts";
import { encodeRequest, type Request } from "./request.ts";
import type { Decoded } from "./types.ts";
import { checkReply, type ReplyCheck, type ReplyMode } from "./_conform_check.ts";

/** A decoded frame with the findings the lenient decoder reported. */
export interface Got<T> {
  readonly frame: T;
  readonly findings: readonly Finding[];
}

/** Buffered reading of frames from a connection. */
export class Reader {
  #buf: Uint8Array = new Uint8Array(0);
  /** Received pieces not yet joined to #buf (joined once per need, not once per piece). */
  #pending: Uint8Array[] = [];
  #pendingLength = 0;
  #closed = false;
  readonly conn: ConformConnection;
  constructor(conn: ConformConnection) {
    this.conn = conn;
  }

  get buffered(): number {
    return this.#buf.length + this.#pendingLength;
  }

  #join(): void {
    if (this.#pending.length === 0) return;
    const n = new Uint8Array(this.#buf.length + this.#pendingLength);
    n.set(this.#buf);
    let at = this.#buf.length;
    for (const p of this.#pending) {
      n.set(p, at);
      at += p.length;
    }
    this.#buf = n;
    this.#pending = [];
    this.#pendingLength = 0;
  }

  /** Receives once more; false at end of stream. */
  async more(): Promise<boolean> {
    if (this.#closed) return false;
    const b = await this.conn.receive();
    if (b === null) {
      this.#closed = true;
      return false;
    }
    this.#pending.push(b);
    this.#pendingLength += b.length;
    return true;
  }

  /** Ensures `n` bytes are buffered; throws a violation naming `what` when the peer closes first. */
  async need(n: number, what: string): Promise<Uint8Array> {
    while (this.buffered < n) {
      if (!(await this.more())) {
        this.#join();
        throw new ConformViolation(`connection closed by the peer while waiting for ${what}`);
      }
    }
    this.#join();
    return this.#buf;
  }

  /** Decodes one frame leniently, receiving until it is complete. */
  async frame<T>(decode: (b: Uint8Array) => Decoded<T>, what: string): Promise<Got<T>> {
    this.#join();
    for (;;) {
      let r: Decoded<T>;
      try {
        r = decode(this.#buf);
      } catch (e) {
        if (isNbdDecodeError(e)) throw new ConformViolation(`malformed ${what}: ${e.message}`);
        throw e;
      }
      if (r.done) {
        // The frame may be a view of the buffer: copy the rest so later receives do not alias it.
        this.#buf = this.#buf.slice(r.byteLength);
        return { frame: r.frame, findings: r.findings };
      }
      await this.need(this.#buf.length + r.needed, what);
    }
  }

  /**
   * Waits for the peer to close the connection: "closed" at end of stream, or the first bytes it sent
   * instead (`ConformTimeoutError` propagates when it neither closes nor sends).
   */
  async closed(): Promise<"closed" | Uint8Array> {
    this.#join();
    if (this.#buf.length > 0) return this.#buf;
    if (await this.more()) {
      this.#join();
      return this.#buf;
    }
    return "closed";
  }
}

/** What `negotiate` should ask for. */
export interface NegotiateOptions {
  /** Ask for structured replies (default true). `"required"` skips the case when refused. */
  readonly structured?: boolean | "required";
  /** Ask for extended headers first (default false). `"required"` skips the case when refused. */
  readonly extended?: boolean | "required";
  /** Metadata contexts to select with SET_META_CONTEXT (default none). */
  readonly contexts?: readonly string[];
  /** Info types requested in GO (default BLOCK_SIZE). */
  readonly info?: readonly number[];
  /** Client flags (default FIXED_NEWSTYLE, plus NO_ZEROES when offered). */
  readonly clientFlags?: number;
}

/** What a GO left us with. */
export interface Negotiated {
  readonly size: bigint;
  readonly flags: number;
  readonly mode: ReplyMode;
  /** Selected contexts: id to name. */
  readonly contexts: ReadonlyMap<number, string>;
  readonly blockSize?: { readonly minimum: number; readonly preferred: number; readonly maximum: number };
  /** Every GO reply (INFO replies and the final one). */
  readonly goReplies: readonly OptionReplyFrame[];
}

/** A request to send: the fields of {@link Request} the case cares about. */
export interface RequestInit {
  readonly command: number;
  readonly flags?: number;
  readonly offset?: bigint;
  readonly length?: bigint;
  readonly data?: Uint8Array;
  readonly cookie?: bigint;
}

/** A reply to one request, with the checker's verdict. */
export interface ReplyResult extends ReplyCheck {
  readonly frames: readonly (SimpleReply | ReplyChunk)[];
}

interface Pending {
  readonly request: Request;
  readonly frames: (SimpleReply | ReplyChunk)[];
  readonly findings: Finding[];
  done: boolean;
}

/** One connection of the prober to the server under test. */
export class Probe {
  readonly reader: Reader;
  handshakeFlags = 0;
  clientFlags = 0;
  mode: ReplyMode = "simple";
  contexts: Map<number, string> = new Map();
  #cookie = 0x4e42_4400_0000_0000n;
  #pending = new Map<bigint, Pending>();
  /** Cookies whose reply is complete (a chunk arriving for one is a violation). */
  #finished = new Set<bigint>();

  readonly conn: ConformConnection;
  readonly exportName: string;

  constructor(conn: ConformConnection, exportName: string) {
    this.conn = conn;
    this.exportName = exportName;
    this.reader = new Reader(conn);
  }

  send(bytes: Uint8Array): Promise<void> {
    return this.conn.send(bytes);
  }

  /** Reads the newstyle greeting; a server speaking oldstyle cannot be checked (fail). */
  async greeting(): Promise<number> {
    const g = await this.reader.frame((b) => decodeGreeting(b, { strict: false }), "the greeting");
    if (g.frame.type !== "newstyle-greeting") {
      throw new ConformViolation("oldstyle greeting: only fixed newstyle servers can be checked");
    }
    this.handshakeFlags = g.frame.handshakeFlags;
    return this.handshakeFlags;
  }

  /** Greeting, then client flags (default: FIXED_NEWSTYLE and NO_ZEROES when offered). */
  async start(clientFlags?: number): Promise<void> {
    await this.greeting();
    this.clientFlags = clientFlags ?? (ClientFlag.C_FIXED_NEWSTYLE |
      (this.handshakeFlags & HandshakeFlag.NO_ZEROES ? ClientFlag.C_NO_ZEROES : 0));
    await this.send(encodeClientFlags({ type: "client-flags", flags: this.clientFlags }));
  }

  /** Sends an option with typed data (our encoder) or raw data bytes (any length, any content). */
  async option(option: number, data: OptionData | Uint8Array = { kind: "none" }): Promise<void> {
    if (data instanceof Uint8Array) {
      const head = new Uint8Array(16 + data.length);
      const dv = new DataView(head.buffer);
      dv.setBigUint64(0, Magic.IHAVEOPT);
      dv.setUint32(8, option >>> 0);
      dv.setUint32(12, data.length);
      head.set(data, 16);
      await this.send(head);
    } else {
      await this.send(encodeOptionRequest({ type: "option-request", option, data }));
    }
  }

  /** One option reply (echo of `option` checked: a reply for another option is a violation). */
  async optionReply(option: number): Promise<Got<OptionReplyFrame>> {
    const got = await this.reader.frame(
      (b) => decodeOptionReply(b, { strict: false }),
      `the reply to ${optName(option)}`,
    );
    if (got.frame.option !== option) {
      throw new ConformViolation(
        `reply ${repName(got.frame.reply)} names option ${got.frame.option}, but ${optName(option)} was sent`,
      );
    }
    return got;
  }

  /** Every reply to `option` up to the final one (ACK or an error). */
  async optionReplies(option: number): Promise<Got<OptionReplyFrame>[]> {
    const all: Got<OptionReplyFrame>[] = [];
    for (;;) {
      const r = await this.optionReply(option);
      all.push(r);
      if (r.frame.reply === OptionReply.ACK || isErrorReply(r.frame.reply)) return all;
      if (all.length > 100_000) throw new ConformViolation(`more than 100000 replies to ${optName(option)}`);
    }
  }

  /** Sends an option and reads all its replies. */
  async ask(
    option: number,
    data: OptionData | Uint8Array = { kind: "none" },
  ): Promise<Got<OptionReplyFrame>[]> {
    await this.option(option, data);
    return await this.optionReplies(option);
  }

  /** Sends an option and returns its final reply type (the others are dropped). */
  async final(option: number, data: OptionData | Uint8Array = { kind: "none" }): Promise<number> {
    const all = await this.ask(option, data);
    return all[all.length - 1]!.frame.reply;
  }

  /** Greeting to transmission with GO: extended headers, structured replies, contexts as asked. */
  async negotiate(o: NegotiateOptions = {}): Promise<Negotiated> {
    await this.start(o.clientFlags);
    const wantExt = o.extended ?? false;
    const wantSr = o.structured ?? true;
    let mode: ReplyMode = "simple";
    if (wantExt) {
      const r = await this.final(Option.EXTENDED_HEADERS);
      if (r === OptionReply.ACK) mode = "extended";
      else if (wantExt === "required") throw new ConformSkip(`extended headers refused (${repName(r)})`);
    }
    if (mode === "simple" && wantSr) {
      const r = await this.final(Option.STRUCTURED_REPLY);
      if (r === OptionReply.ACK) mode = "structured";
      else if (wantSr === "required") throw new ConformSkip(`structured replies refused (${repName(r)})`);
    }
    if (o.contexts !== undefined && o.contexts.length > 0) {
      const all = await this.ask(Option.SET_META_CONTEXT, {
        kind: "meta-context-query",
        name: this.exportName,
        queries: o.contexts,
      });
      const last = all[all.length - 1]!.frame;
      if (last.reply !== OptionReply.ACK) {
        throw new ConformSkip(`SET_META_CONTEXT ${o.contexts.join(",")} refused (${repName(last.reply)})`);
      }
      for (const r of all) {
        if (r.frame.data.kind === "meta-context") this.contexts.set(r.frame.data.id, r.frame.data.name);
      }
      if (this.contexts.size === 0) throw new ConformSkip(`no context selected by ${o.contexts.join(",")}`);
    }
    const all = await this.ask(Option.GO, {
      kind: "info-request",
      name: this.exportName,
      info: o.info ?? [3],
    });
    const last = all[all.length - 1]!.frame;
    if (last.reply !== OptionReply.ACK) {
      throw new ConformViolation(`GO ${JSON.stringify(this.exportName)} refused: ${describeReply(last)}`);
    }
    let size: bigint | undefined;
    let flags = 0;
    let blockSize: Negotiated["blockSize"];
    for (const r of all) {
      const d = r.frame.data;
      if (d.kind !== "info") continue;
      if (d.info.kind === "export") {
        size = d.info.size;
        flags = d.info.transmissionFlags;
      } else if (d.info.kind === "block-size") {
        blockSize = { minimum: d.info.minimum, preferred: d.info.preferred, maximum: d.info.maximum };
      }
    }
    if (size === undefined) throw new ConformViolation("GO succeeded without an NBD_INFO_EXPORT reply");
    this.mode = mode;
    const n: Negotiated = {
      size,
      flags,
      mode,
      contexts: this.contexts,
      goReplies: all.map((g) => g.frame),
      ...(blockSize ? { blockSize } : {}),
    };
    return n;
  }

  /** Enters transmission with NBD_OPT_EXPORT_NAME (no other option first). */
  async exportNameOption(name: string): Promise<Got<ExportNameReply>> {
    await this.option(Option.EXPORT_NAME, { kind: "export-name", name });
    const noZeroes = (this.clientFlags & ClientFlag.C_NO_ZEROES) !== 0;
    return await this.reader.frame(
      (b) => decodeExportNameReply(b, { noZeroes, strict: false }),
      "the reply to NBD_OPT_EXPORT_NAME",
    );
  }

  nextCookie(): bigint {
    this.#cookie += 0x1_0000_0001n;
    return this.#cookie;
  }

  /** Sends a request (extended header in extended mode); returns its cookie. */
  async request(init: RequestInit): Promise<bigint> {
    const [cookie, bytes] = this.#prepare(init);
    await this.send(bytes);
    return cookie;
  }

  /** Sends many requests in one write (so the server sees them all in flight at once); returns their cookies. */
  async requestAll(inits: readonly RequestInit[]): Promise<bigint[]> {
    const parts = inits.map((i) => this.#prepare(i));
    const bytes = new Uint8Array(parts.reduce((n, [, b]) => n + b.length, 0));
    let at = 0;
    for (const [, b] of parts) {
      bytes.set(b, at);
      at += b.length;
    }
    await this.send(bytes);
    return parts.map(([c]) => c);
  }

  #prepare(init: RequestInit): [bigint, Uint8Array] {
    const cookie = init.cookie ?? this.nextCookie();
    const extended = this.mode === "extended";
    const isWrite = init.command === Command.WRITE;
    const req: Request = {
      type: "request",
      extended,
      flags: (init.flags ?? 0) | (extended && isWrite ? 0x20 : 0),
      command: init.command,
      cookie,
      offset: init.offset ?? 0n,
      length: init.length ?? (init.data ? BigInt(init.data.length) : 0n),
      ...(init.data ? { data: init.data } : {}),
    };
    if (init.command !== Command.DISC) {
      this.#pending.set(cookie, { request: req, frames: [], findings: [], done: false });
    }
    let bytes: Uint8Array;
    try {
      // The encoder writes the header only; WRITE data follows it.
      const head = encodeRequest(req);
      bytes = new Uint8Array(head.length + (init.data?.length ?? 0));
      bytes.set(head);
      if (init.data) bytes.set(init.data, head.length);
    } catch {
      // A request our encoder refuses on purpose (unknown flags with a payload, ...): build it by hand.
      bytes = rawRequest(req);
    }
    return [cookie, bytes];
  }

  /** Reads frames until the reply to `cookie` is complete, then checks it. */
  async reply(cookie: bigint): Promise<ReplyResult> {
    const p = this.#pending.get(cookie);
    if (p === undefined) throw new Error(`no request with cookie ${cookie}`);
    while (!p.done) await this.#readOne();
    this.#pending.delete(cookie);
    this.#finished.add(cookie);
    const check = checkReply(p.request, this.mode, this.contexts, p.frames, p.findings);
    return { ...check, frames: p.frames };
  }

  /** Sends one request and reads its reply. */
  async roundTrip(init: RequestInit): Promise<ReplyResult> {
    return await this.reply(await this.request(init));
  }

  async #readOne(): Promise<void> {
    const b = await this.reader.need(4, "a reply");
    const magic = u32(b, 0);
    if (magic === Magic.SIMPLE_REPLY) {
      const head = await this.reader.need(16, "a simple reply");
      const p = this.#owner(u64(head, 8), "simple reply");
      const error = u32(head, 4);
      const isRead = p.request.command === Command.READ;
      const readLength = isRead && error === 0 ? Number(p.request.length) : undefined;
      const got = await this.reader.frame(
        (x) =>
          decodeSimpleReply(x, {
            strict: false,
            maxPayloadLength: 64 << 20,
            ...(readLength !== undefined ? { readLength } : {}),
          }),
        "a simple reply",
      );
      p.frames.push(got.frame);
      p.findings.push(...got.findings);
      p.done = true;
    } else if (magic === Magic.STRUCTURED_REPLY || magic === Magic.EXTENDED_REPLY) {
      const head = await this.reader.need(16, "a reply chunk");
      const p = this.#owner(u64(head, 8), "reply chunk");
      const got = await this.reader.frame(
        (x) =>
          decodeReplyChunk(x, {
            strict: false,
            maxPayloadLength: 64 << 20,
            extendedHeaders: this.mode === "extended",
          }),
        "a reply chunk",
      );
      p.frames.push(got.frame);
      p.findings.push(...got.findings);
      if (got.frame.flags & 1) p.done = true;
    } else {
      throw new ConformViolation(`expected a reply, got magic 0x${magic.toString(16).padStart(8, "0")}`);
    }
  }

  #owner(cookie: bigint, what: string): Pending {
    const p = this.#pending.get(cookie);
    if (p !== undefined && !p.done) return p;
    if (this.#finished.has(cookie) || (p && p.done)) {
      throw new ConformViolation(`${what} for cookie 0x${cookie.toString(16)} after that reply was complete`);
    }
    throw new ConformViolation(
      `${what} with cookie 0x${cookie.toString(16)}, which matches no request in flight`,
    );
  }

  close(): void {
    this.conn.close();
  }
}

/** A request encoded field by field, whatever its flags (for requests our encoder refuses). */
function rawRequest(r: Request): Uint8Array {
  const headLen = r.extended ? 32 : 28;
  const data = r.data ?? new Uint8Array(0);
  const out = new Uint8Array(headLen + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, r.extended ? Magic.EXTENDED_REQUEST : Magic.REQUEST);
  dv.setUint16(4, r.flags);
  dv.setUint16(6, r.command);
  dv.setBigUint64(8, r.cookie);
  dv.setBigUint64(16, r.offset);
  if (r.extended) dv.setBigUint64(24, r.length);
  else dv.setUint32(24, Number(r.length & 0xffff_ffffn));
  out.set(data, headLen);
  return out;
}

export function optName(option: number): string {
  return nameOf("option", option) ?? `option ${option}`;
}

export function repName(reply: number): string {
  return nameOf("optionReply", reply) ?? `reply 0x${reply.toString(16)}`;
}

/** One line for an option reply: its type, and the message of an error. */
export function describeReply(r: OptionReplyFrame): string {
  return r.data.kind === "error" && r.data.message !== ""
    ? `${repName(r.reply)} "${r.data.message}"`
    : repName(r.reply);
}

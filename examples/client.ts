/**
 * A small NBD client built on nbd-codec alone, over `node:net`. It negotiates the best the server offers
 * (extended headers, then structured replies, then simple replies; GO, falling back to EXPORT_NAME; the
 * oldstyle handshake too), lists exports and metadata contexts, and reads, writes, zeroes, trims, flushes,
 * caches and maps an export. Runs on Deno and Node:
 *
 * ```sh
 * npx deno run -A examples/client.ts --port 10809 list
 * npx deno run -A examples/client.ts --port 10809 --name disk write 0 68656c6c6f
 * npx vite-node examples/client.ts -- --port 10809 read 0 5
 * npx deno run -A examples/client.ts --port 10809 --context base:allocation map
 * npx deno run -A examples/client.ts --port 10809 selftest
 * ```
 *
 * Options: `--host` (default 127.0.0.1), `--port` (required), `--name` (default: the empty name, the
 * server's default export), `--no-extended-headers`, `--no-structured-replies`, `--context NAME`
 * (repeatable; default `base:allocation`), `--json`, `--verbose`.
 * Commands: `list`, `info`, `read OFF LEN [FILE]`, `write OFF HEX|@FILE`, `zero OFF LEN [--no-hole]
 * [--fast]`, `trim OFF LEN`, `cache OFF LEN`, `flush`, `map [OFF LEN]`, `selftest`.
 *
 * @module
 */
import { readFileSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import process from "node:process";
import {
  ClientFlag,
  Command,
  CommandFlag,
  type Decoded,
  decodeExportNameReply,
  decodeGreeting,
  decodeOptionReply,
  decodeReplyChunk,
  decodeSimpleReply,
  encodeClientFlags,
  encodeOptionRequest,
  encodeRequest,
  type Finding,
  HandshakeFlag,
  Info,
  InitFlag,
  isErrorReply,
  Magic,
  nameOf,
  Option,
  OptionReply,
  type OptionReplyFrame,
  type OptionRequest,
  type ReplyChunk,
  ReplyFlag,
  type SimpleReply,
  StateFlag,
  TransmissionFlag,
} from "../mod.ts";

// ---------------------------------------------------------------------------------------------------------
// Byte-stream framing over socket chunks

/** The peer closed the connection. */
export class ConnectionClosed extends Error {
  constructor() {
    super("the server closed the connection");
  }
}

/**
 * An incremental buffer over a socket: collects chunks and hands complete frames to a decoder. Views into
 * the buffer stay valid after later reads: the buffer is replaced, never overwritten.
 */
class SocketReader {
  #buf = new Uint8Array(1 << 16);
  #start = 0;
  #end = 0;
  #want = 0;
  #closed = false;
  #wake: (() => void) | undefined;
  /** Findings of every frame decoded leniently on this connection. */
  readonly findings: Finding[] = [];

  constructor(socket: net.Socket) {
    socket.on("data", (chunk: Uint8Array) => this.#push(chunk));
    socket.on("end", () => this.#close());
    socket.on("close", () => this.#close());
    socket.on("error", () => this.#close());
  }

  #close(): void {
    this.#closed = true;
    this.#notify();
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  #push(chunk: Uint8Array): void {
    if (this.#end + chunk.length > this.#buf.length) {
      const live = this.#end - this.#start;
      const next = new Uint8Array(Math.max(1 << 16, 2 * (live + chunk.length), this.#want));
      next.set(this.#buf.subarray(this.#start, this.#end));
      this.#buf = next;
      this.#start = 0;
      this.#end = live;
    }
    this.#buf.set(chunk, this.#end);
    this.#end += chunk.length;
    if (this.#end - this.#start >= this.#want) this.#notify();
  }

  async frame<T>(decode: (bytes: Uint8Array) => Decoded<T>): Promise<T> {
    for (;;) {
      const r = decode(this.#buf.subarray(this.#start, this.#end));
      if (r.done) {
        this.#start += r.byteLength;
        this.#want = 0;
        this.findings.push(...r.findings);
        return r.frame;
      }
      if (this.#closed) throw new ConnectionClosed();
      this.#want = this.#end - this.#start + r.needed;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Errors and results

/** The server answered an option with an error reply (`NBD_REP_ERR_*`). */
export class NbdOptionError extends Error {
  readonly option: number;
  readonly reply: number;
  constructor(option: number, reply: number, message: string) {
    super(
      `${nameOf("option", option) ?? `option ${option}`} failed: ` +
        `${nameOf("optionReply", reply) ?? `0x${reply.toString(16)}`}${
          message === "" ? "" : ` (${message})`
        }`,
    );
    this.option = option;
    this.reply = reply;
  }
}

/** The server failed a command (`NBD_E*` in a simple reply or an error chunk). */
export class NbdCommandError extends Error {
  readonly command: number;
  readonly errno: number;
  constructor(command: number, errno: number, message: string) {
    super(
      `${nameOf("command", command) ?? `command ${command}`} failed: ` +
        `${nameOf("error", errno) ?? `error ${errno}`}${message === "" ? "" : ` (${message})`}`,
    );
    this.command = command;
    this.errno = errno;
  }
}

/** What INFO or GO told us about an export. */
export interface ExportInfo {
  size: bigint;
  transmissionFlags: number;
  name?: string;
  description?: string;
  blockSize?: { minimum: number; preferred: number; maximum: number };
  /** NBD_INFO_INIT_FLAGS (proposed extension): SPARSE 1, ZERO 2. */
  initFlags?: number;
}

/** One extent of a metadata context. */
export interface Extent {
  offset: bigint;
  length: bigint;
  status: bigint;
}

/** Connection settings. */
export interface ClientOptions {
  readonly host?: string;
  readonly port: number;
  /** Export name; "" (the default) asks for the server's default export. */
  readonly name?: string;
  /** Try NBD_OPT_EXTENDED_HEADERS first (default true). */
  readonly extendedHeaders?: boolean;
  /** Try NBD_OPT_STRUCTURED_REPLY (default true). */
  readonly structuredReplies?: boolean;
  /** Metadata contexts to select (default `["base:allocation"]`). */
  readonly metaContexts?: readonly string[];
  /** Connection timeout in milliseconds (default 10 s). */
  readonly timeoutMs?: number;
  readonly log?: (line: string) => void;
}

interface Pending {
  readonly command: number;
  readonly offset: bigint;
  readonly length: bigint;
  readonly buffer: Uint8Array | undefined;
  readonly status: Map<number, Extent[]>;
  error: { errno: number; message: string } | undefined;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
}

/** Negotiated reply style. */
export type ReplyMode = "extended" | "structured" | "simple";

// ---------------------------------------------------------------------------------------------------------
// The client

/** An NBD client connection. */
export class NbdClient {
  readonly #socket: net.Socket;
  readonly #reader: SocketReader;
  readonly #log: (line: string) => void;
  /** `oldstyle`, `newstyle` (not fixed) or `fixed-newstyle`. */
  handshake: "oldstyle" | "newstyle" | "fixed-newstyle" = "fixed-newstyle";
  /** Whether both sides agreed to drop the 124 zero bytes. */
  noZeroes = false;
  mode: ReplyMode = "simple";
  /** Selected metadata contexts: id → name. */
  readonly contexts: Map<number, string> = new Map();
  /** The export in use, once in transmission. */
  export: ExportInfo | undefined;
  /** Every option tried during negotiation and its final reply name (for reports). */
  readonly negotiation: string[] = [];
  #cookie = 0n;
  readonly #pending = new Map<bigint, Pending>();
  #transmission = false;
  #fatal: Error | undefined;

  private constructor(socket: net.Socket, log: (line: string) => void) {
    this.#socket = socket;
    this.#reader = new SocketReader(socket);
    this.#log = log;
  }

  /** Findings collected by the lenient decoders: the server's spec violations. */
  get findings(): readonly Finding[] {
    return this.#reader.findings;
  }

  /** Opens a TCP connection and reads the greeting, sends the client flags; stops in option haggling. */
  static async connect(options: ClientOptions): Promise<NbdClient> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: options.host ?? "127.0.0.1", port: options.port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error("connect timed out"));
      }, options.timeoutMs ?? 10_000);
      s.once("connect", () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    socket.setNoDelay(true);
    const client = new NbdClient(socket, options.log ?? (() => {}));
    try {
      await client.#greet();
    } catch (e) {
      socket.destroy();
      throw e;
    }
    return client;
  }

  /**
   * Connects and negotiates everything: extended headers, else structured replies; the metadata contexts;
   * then GO (or EXPORT_NAME for servers without GO). Ready for commands.
   */
  static async open(options: ClientOptions): Promise<NbdClient> {
    const client = await NbdClient.connect(options);
    try {
      if (client.handshake === "oldstyle") return client;
      const name = options.name ?? "";
      if (client.handshake === "fixed-newstyle") {
        await client.negotiateReplies(options.extendedHeaders ?? true, options.structuredReplies ?? true);
        const wanted = options.metaContexts ?? ["base:allocation"];
        if (client.mode !== "simple" && wanted.length > 0) {
          try {
            await client.setMetaContexts(name, wanted);
          } catch (e) {
            if (!(e instanceof NbdOptionError) || e.reply === OptionReply.ERR_TLS_REQD) throw e;
          }
        }
        try {
          await client.go(name);
          return client;
        } catch (e) {
          // Old servers without GO: fall back to EXPORT_NAME (never after extended headers).
          if (
            !(e instanceof NbdOptionError) || e.reply !== OptionReply.ERR_UNSUP || client.mode === "extended"
          ) {
            throw e;
          }
        }
      }
      await client.exportName(name);
      return client;
    } catch (e) {
      if (e instanceof NbdOptionError && e.reply === OptionReply.ERR_TLS_REQD) {
        await client.abort().catch(() => {});
      }
      client.#socket.destroy();
      throw e;
    }
  }

  async #greet(): Promise<void> {
    const g = await this.#reader.frame((b) => decodeGreeting(b, { strict: false }));
    if (g.type === "oldstyle-greeting") {
      this.handshake = "oldstyle";
      this.export = { size: g.size, transmissionFlags: g.transmissionFlags };
      this.#startTransmission();
      return;
    }
    const fixed = (g.handshakeFlags & HandshakeFlag.FIXED_NEWSTYLE) !== 0;
    this.noZeroes = (g.handshakeFlags & HandshakeFlag.NO_ZEROES) !== 0;
    this.handshake = fixed ? "fixed-newstyle" : "newstyle";
    const flags = (fixed ? ClientFlag.C_FIXED_NEWSTYLE : 0) | (this.noZeroes ? ClientFlag.C_NO_ZEROES : 0);
    await this.#send(encodeClientFlags({ type: "client-flags", flags }));
  }

  #send(...parts: Uint8Array[]): Promise<void> {
    return new Promise((resolve, reject) => {
      for (let i = 0; i < parts.length; i++) {
        const last = i === parts.length - 1;
        this.#socket.write(parts[i]!, last ? (e?: Error | null) => (e ? reject(e) : resolve()) : undefined);
      }
      if (parts.length === 0) resolve();
    });
  }

  // ------------------------------------------------------------------------------ option haggling

  /** Sends one option and collects its replies up to the final one (ACK or an error, which throws). */
  async option(request: OptionRequest): Promise<OptionReplyFrame[]> {
    if (this.handshake !== "fixed-newstyle") throw new Error("options need fixed newstyle");
    await this.#send(encodeOptionRequest(request));
    const replies: OptionReplyFrame[] = [];
    const optName = nameOf("option", request.option) ?? `option ${request.option}`;
    for (;;) {
      const r = await this.#reader.frame((b) =>
        decodeOptionReply(b, { strict: false, pendingOption: request.option })
      );
      if (r.reply === OptionReply.ACK) {
        this.negotiation.push(`${optName}: ACK`);
        return replies;
      }
      if (isErrorReply(r.reply)) {
        const message = r.data.kind === "error" ? r.data.message : "";
        this.negotiation.push(`${optName}: ${nameOf("optionReply", r.reply) ?? r.reply}`);
        throw new NbdOptionError(request.option, r.reply, message);
      }
      replies.push(r);
    }
  }

  /** Extended headers if wanted and offered, else structured replies, else simple replies. */
  async negotiateReplies(extended: boolean, structured: boolean): Promise<ReplyMode> {
    const none = { kind: "none" } as const;
    if (extended) {
      try {
        await this.option({ type: "option-request", option: Option.EXTENDED_HEADERS, data: none });
        this.mode = "extended";
        return this.mode;
      } catch (e) {
        if (!(e instanceof NbdOptionError) || e.reply === OptionReply.ERR_TLS_REQD) throw e;
      }
    }
    if (structured) {
      try {
        await this.option({ type: "option-request", option: Option.STRUCTURED_REPLY, data: none });
        this.mode = "structured";
      } catch (e) {
        if (!(e instanceof NbdOptionError) || e.reply === OptionReply.ERR_TLS_REQD) throw e;
      }
    }
    return this.mode;
  }

  /** NBD_OPT_LIST: the exports (name and description). */
  async list(): Promise<{ name: string; description: string }[]> {
    const replies = await this.option({
      type: "option-request",
      option: Option.LIST,
      data: { kind: "none" },
    });
    const out: { name: string; description: string }[] = [];
    for (const r of replies) {
      if (r.data.kind === "server") out.push({ name: r.data.name, description: r.data.description });
    }
    return out;
  }

  /** NBD_OPT_LIST_META_CONTEXT: the context names matching the queries (all with no query). */
  async listMetaContexts(name: string, queries: readonly string[] = []): Promise<string[]> {
    const replies = await this.option({
      type: "option-request",
      option: Option.LIST_META_CONTEXT,
      data: { kind: "meta-context-query", name, queries },
    });
    return replies.flatMap((r) => (r.data.kind === "meta-context" ? [r.data.name] : []));
  }

  /** NBD_OPT_SET_META_CONTEXT: selects contexts; returns id → name. */
  async setMetaContexts(name: string, queries: readonly string[]): Promise<Map<number, string>> {
    this.contexts.clear();
    const replies = await this.option({
      type: "option-request",
      option: Option.SET_META_CONTEXT,
      data: { kind: "meta-context-query", name, queries },
    });
    for (const r of replies) if (r.data.kind === "meta-context") this.contexts.set(r.data.id, r.data.name);
    return this.contexts;
  }

  #exportInfo(option: number, replies: OptionReplyFrame[]): ExportInfo {
    let info: ExportInfo | undefined;
    const extra: Partial<ExportInfo> = {};
    for (const r of replies) {
      if (r.data.kind !== "info") continue;
      const i = r.data.info;
      switch (i.kind) {
        case "export":
          info = { size: i.size, transmissionFlags: i.transmissionFlags };
          break;
        case "name":
          extra.name = i.name;
          break;
        case "description":
          extra.description = i.description;
          break;
        case "block-size":
          extra.blockSize = { minimum: i.minimum, preferred: i.preferred, maximum: i.maximum };
          break;
        case "init-flags":
          extra.initFlags = i.flags;
          break;
        default:
      }
    }
    if (info === undefined) throw new Error(`${nameOf("option", option)} succeeded without NBD_INFO_EXPORT`);
    return { ...info, ...extra };
  }

  static readonly ALL_INFO: readonly number[] = [
    Info.NAME,
    Info.DESCRIPTION,
    Info.BLOCK_SIZE,
    Info.INIT_FLAGS,
  ];

  /** NBD_OPT_INFO: what GO would say, without leaving option haggling. */
  async info(name: string, requests: readonly number[] = NbdClient.ALL_INFO): Promise<ExportInfo> {
    const replies = await this.option({
      type: "option-request",
      option: Option.INFO,
      data: { kind: "info-request", name, info: requests },
    });
    return this.#exportInfo(Option.INFO, replies);
  }

  /** NBD_OPT_GO: selects the export and enters transmission. */
  async go(name: string, requests: readonly number[] = NbdClient.ALL_INFO): Promise<ExportInfo> {
    const replies = await this.option({
      type: "option-request",
      option: Option.GO,
      data: { kind: "info-request", name, info: requests },
    });
    this.export = this.#exportInfo(Option.GO, replies);
    this.#startTransmission();
    return this.export;
  }

  /** NBD_OPT_EXPORT_NAME: the old way in; the server closes the connection to refuse. */
  async exportName(name: string): Promise<ExportInfo> {
    await this.#send(
      encodeOptionRequest({
        type: "option-request",
        option: Option.EXPORT_NAME,
        data: { kind: "export-name", name },
      }),
    );
    const noZeroes = this.noZeroes;
    const r = await this.#reader.frame((b) => decodeExportNameReply(b, { noZeroes, strict: false }));
    this.negotiation.push("NBD_OPT_EXPORT_NAME: accepted");
    this.export = { size: r.size, transmissionFlags: r.transmissionFlags };
    this.#startTransmission();
    return this.export;
  }

  /** NBD_OPT_ABORT, then close (tolerating a server that closes without its ACK). */
  async abort(): Promise<void> {
    try {
      await this.#send(
        encodeOptionRequest({ type: "option-request", option: Option.ABORT, data: { kind: "none" } }),
      );
      // The server may close without its ACK: wait 2 s at most.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, 2000)));
      const ack = this.#reader.frame((b) =>
        decodeOptionReply(b, { strict: false, pendingOption: Option.ABORT })
      )
        .then(() => {}, () => {});
      await Promise.race([ack, timeout]);
      clearTimeout(timer);
    } finally {
      this.#socket.destroy();
    }
  }

  // ------------------------------------------------------------------------------ transmission

  #startTransmission(): void {
    this.#transmission = true;
    this.#pump().catch((e: unknown) => this.#failAll(e instanceof Error ? e : new Error(String(e))));
  }

  #failAll(e: Error): void {
    this.#fatal = e;
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
    this.#socket.destroy();
  }

  /** Reads replies forever and routes them to their requests by cookie. */
  async #pump(): Promise<void> {
    const extendedHeaders = this.mode === "extended";
    for (;;) {
      let frame: SimpleReply | ReplyChunk;
      try {
        frame = await this.#reader.frame<SimpleReply | ReplyChunk>((b) => {
          if (b.length < 4) return { done: false, needed: 4 - b.length };
          const magic = ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
          if (magic !== Magic.SIMPLE_REPLY) {
            return decodeReplyChunk(b, {
              strict: false,
              extendedHeaders,
              maxPayloadLength: 64 * 1024 * 1024 + 64,
            });
          }
          // A simple reply is not self-delimiting: the READ it answers says how much data follows.
          if (b.length < 16) return { done: false, needed: 16 - b.length };
          const cookie = new DataView(b.buffer, b.byteOffset, 16).getBigUint64(8);
          const p = this.#pending.get(cookie);
          return p !== undefined && p.command === Command.READ
            ? decodeSimpleReply(b, { strict: false, extendedHeaders, readLength: Number(p.length) })
            : decodeSimpleReply(b, { strict: false, extendedHeaders });
        });
      } catch (e) {
        if (e instanceof ConnectionClosed && this.#pending.size === 0) return;
        throw e;
      }
      const p = this.#pending.get(frame.cookie);
      if (p === undefined) throw new Error(`reply for unknown cookie ${frame.cookie}`);
      if (frame.type === "simple-reply") {
        if (frame.error !== 0) p.error = { errno: frame.error, message: "" };
        else if (frame.data !== undefined && p.buffer !== undefined) p.buffer.set(frame.data);
        this.#complete(frame.cookie, p);
        continue;
      }
      this.#chunk(p, frame);
      if ((frame.flags & ReplyFlag.DONE) !== 0) this.#complete(frame.cookie, p);
    }
  }

  #chunk(p: Pending, c: ReplyChunk): void {
    const pl = c.payload;
    switch (pl.kind) {
      case "none":
        return;
      case "offset-data": {
        const at = pl.offset - p.offset;
        if (p.buffer === undefined || at < 0n || at + BigInt(pl.data.length) > p.length) {
          throw new Error(`OFFSET_DATA chunk outside the request (offset ${pl.offset})`);
        }
        p.buffer.set(pl.data, Number(at));
        return;
      }
      case "offset-hole": {
        const at = pl.offset - p.offset;
        if (p.buffer === undefined || at < 0n || at + BigInt(pl.holeSize) > p.length) {
          throw new Error(`OFFSET_HOLE chunk outside the request (offset ${pl.offset})`);
        }
        p.buffer.fill(0, Number(at), Number(at) + pl.holeSize);
        return;
      }
      case "block-status": {
        const d = pl.descriptors;
        const list: Extent[] = [];
        let off = p.offset;
        for (let i = 0; i < d.count; i++) {
          const length = d.lengthAt(i);
          list.push({ offset: off, length, status: d.statusAt(i) });
          off += length;
        }
        p.status.set(d.contextId, list);
        return;
      }
      case "error":
        p.error ??= { errno: pl.error, message: pl.message };
        return;
      case "raw":
        // Unknown or malformed: an error type (bit 15) fails the request, anything else is fatal.
        if ((c.chunkType & 0x8000) !== 0) {
          p.error ??= { errno: 22, message: `unknown error chunk 0x${c.chunkType.toString(16)}` };
          return;
        }
        throw new Error(
          `unexpected chunk type ${c.chunkType} (${nameOf("replyType", c.chunkType) ?? "unknown"})`,
        );
    }
  }

  #complete(cookie: bigint, p: Pending): void {
    this.#pending.delete(cookie);
    if (p.error !== undefined) p.reject(new NbdCommandError(p.command, p.error.errno, p.error.message));
    else p.resolve();
  }

  /** Sends one request (and its payload) and waits for its whole reply. */
  async #request(
    command: number,
    flags: number,
    offset: bigint,
    length: bigint,
    extra: { data?: Uint8Array; buffer?: Uint8Array; contextIds?: readonly number[] } = {},
  ): Promise<Pending> {
    if (!this.#transmission) throw new Error("not in transmission phase");
    if (this.#fatal !== undefined) throw this.#fatal;
    const extended = this.mode === "extended";
    const cookie = ++this.#cookie;
    let header: Uint8Array;
    if (extra.data !== undefined) {
      header = encodeRequest({
        type: "request",
        extended,
        flags: flags | (extended ? CommandFlag.PAYLOAD_LEN : 0),
        command,
        cookie,
        offset,
        length: BigInt(extra.data.length),
        data: extra.data,
      });
    } else if (extra.contextIds !== undefined) {
      header = encodeRequest({
        type: "request",
        extended,
        flags: flags | CommandFlag.PAYLOAD_LEN,
        command,
        cookie,
        offset,
        length: BigInt(8 + 4 * extra.contextIds.length),
        blockStatus: { effectLength: length, contextIds: extra.contextIds },
      });
    } else {
      header = encodeRequest({ type: "request", extended, flags, command, cookie, offset, length });
    }
    const done = new Promise<Pending>((resolve, reject) => {
      const p: Pending = {
        command,
        offset,
        length,
        buffer: extra.buffer,
        status: new Map(),
        error: undefined,
        resolve: () => resolve(p),
        reject,
      };
      this.#pending.set(cookie, p);
    });
    await (extra.data !== undefined ? this.#send(header, extra.data) : this.#send(header));
    return done;
  }

  #has(flag: number): boolean {
    return ((this.export?.transmissionFlags ?? 0) & flag) !== 0;
  }

  /** Whether the server advertised a transmission flag. */
  can(flag: number): boolean {
    return this.#has(flag);
  }

  async read(
    offset: bigint | number,
    length: number,
    options: { df?: boolean; fua?: boolean } = {},
  ): Promise<Uint8Array> {
    const buffer = new Uint8Array(length);
    const flags = (options.df ? CommandFlag.DF : 0) | (options.fua ? CommandFlag.FUA : 0);
    await this.#request(Command.READ, flags, BigInt(offset), BigInt(length), { buffer });
    return buffer;
  }

  async write(offset: bigint | number, data: Uint8Array, options: { fua?: boolean } = {}): Promise<void> {
    await this.#request(
      Command.WRITE,
      options.fua ? CommandFlag.FUA : 0,
      BigInt(offset),
      BigInt(data.length),
      {
        data,
      },
    );
  }

  async zero(
    offset: bigint | number,
    length: bigint | number,
    options: { noHole?: boolean; fastZero?: boolean; fua?: boolean } = {},
  ): Promise<void> {
    const flags = (options.noHole ? CommandFlag.NO_HOLE : 0) |
      (options.fastZero ? CommandFlag.FAST_ZERO : 0) |
      (options.fua ? CommandFlag.FUA : 0);
    await this.#request(Command.WRITE_ZEROES, flags, BigInt(offset), BigInt(length));
  }

  async trim(
    offset: bigint | number,
    length: bigint | number,
    options: { fua?: boolean } = {},
  ): Promise<void> {
    await this.#request(Command.TRIM, options.fua ? CommandFlag.FUA : 0, BigInt(offset), BigInt(length));
  }

  async cache(offset: bigint | number, length: bigint | number): Promise<void> {
    await this.#request(Command.CACHE, 0, BigInt(offset), BigInt(length));
  }

  async flush(): Promise<void> {
    await this.#request(Command.FLUSH, 0, 0n, 0n);
  }

  /** Sends any command (for error tests: unknown commands, bad flags). */
  async raw(command: number, flags: number, offset: bigint, length: bigint): Promise<void> {
    await this.#request(command, flags, offset, length);
  }

  /**
   * NBD_CMD_BLOCK_STATUS over [offset, offset+length): extents per context name. `contextIds` uses the
   * payload form (extended headers and NBD_FLAG_BLOCK_STATUS_PAYLOAD) to ask about those contexts only.
   */
  async blockStatus(
    offset: bigint | number,
    length: bigint | number,
    options: { reqOne?: boolean; contextIds?: readonly number[] } = {},
  ): Promise<Map<string, Extent[]>> {
    const p = await this.#request(
      Command.BLOCK_STATUS,
      options.reqOne ? CommandFlag.REQ_ONE : 0,
      BigInt(offset),
      BigInt(length),
      options.contextIds === undefined ? {} : { contextIds: options.contextIds },
    );
    const out = new Map<string, Extent[]>();
    for (const [id, list] of p.status) out.set(this.contexts.get(id) ?? `#${id}`, list);
    return out;
  }

  /** Maps a range (default: the whole export) for every selected context; adjacent equal extents merged. */
  async map(from = 0n, length?: bigint): Promise<Map<string, Extent[]>> {
    const size = this.export?.size ?? 0n;
    const end = length === undefined ? size : from + length;
    const out = new Map<string, Extent[]>();
    for (const name of this.contexts.values()) out.set(name, []);
    const step = this.mode === "extended" ? 1n << 40n : 0x8000_0000n;
    let pos = from;
    while (pos < end) {
      const want = end - pos < step ? end - pos : step;
      const got = await this.blockStatus(pos, want);
      // Contexts may cover different lengths: advance by the shortest.
      let advance = want;
      for (const list of got.values()) {
        const covered = list.reduce((a, e) => a + e.length, 0n);
        if (covered < advance) advance = covered;
      }
      if (advance <= 0n) throw new Error("block status made no progress");
      for (const [name, list] of got) {
        const acc = out.get(name) ?? [];
        out.set(name, acc);
        for (const e of list) {
          if (e.offset >= pos + advance) break;
          const len = e.offset + e.length > pos + advance ? pos + advance - e.offset : e.length;
          const last = acc[acc.length - 1];
          if (last !== undefined && last.status === e.status && last.offset + last.length === e.offset) {
            last.length += len;
          } else acc.push({ offset: e.offset, length: len, status: e.status });
        }
      }
      pos += advance;
    }
    return out;
  }

  /** NBD_CMD_DISC and close. */
  async disconnect(): Promise<void> {
    if (this.#transmission && this.#fatal === undefined && !this.#socket.destroyed) {
      const extended = this.mode === "extended";
      const header = encodeRequest({
        type: "request",
        extended,
        flags: 0,
        command: Command.DISC,
        cookie: ++this.#cookie,
        offset: 0n,
        length: 0n,
      });
      await this.#send(header).catch(() => {});
      this.#socket.end();
    }
    await new Promise<void>((resolve) => {
      if (this.#socket.destroyed) return resolve();
      const t = setTimeout(() => {
        this.#socket.destroy();
        resolve();
      }, 2000);
      this.#socket.once("close", () => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /** Closes without a goodbye. */
  destroy(): void {
    this.#socket.destroy();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Self test: every command, verified

/** A deterministic pseudo-random pattern. */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function isZero(a: Uint8Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== 0) return false;
  return true;
}

/** Result of {@link selftest}: one line per check, and whether all passed. */
export interface SelftestResult {
  ok: boolean;
  mode: ReplyMode;
  checks: { name: string; ok: boolean; detail?: string }[];
}

/**
 * Runs every command the server advertises on an open client and checks the data read back. Writes only
 * inside the first 4 MiB (or the export, if smaller). Read-only exports get the read and error checks.
 */
export async function selftest(c: NbdClient): Promise<SelftestResult> {
  const checks: SelftestResult["checks"] = [];
  const check = async (name: string, fn: () => Promise<string | void>): Promise<void> => {
    try {
      const detail = await fn();
      checks.push(detail === undefined ? { name, ok: true } : { name, ok: true, detail });
    } catch (e) {
      checks.push({ name, ok: false, detail: (e as Error).message });
    }
  };
  const assert = (cond: boolean, message: string): void => {
    if (!cond) throw new Error(message);
  };
  const size = Number(c.export?.size ?? 0n);
  const ro = c.can(TransmissionFlag.READ_ONLY);
  const span = Math.min(size, 4 * 1024 * 1024);
  const a = pattern(Math.min(65536, span / 4), 1);
  const b = pattern(Math.min(131072, span / 4), 2);
  const bAt = span / 2;

  await check("read the start of the export", async () => {
    const d = await c.read(0, Math.min(4096, size));
    assert(d.length === Math.min(4096, size), "short read");
  });
  if (!ro) {
    await check("write two patterns and read them back", async () => {
      await c.write(0, a);
      await c.write(bAt, b, { fua: c.can(TransmissionFlag.SEND_FUA) });
      assert(equal(await c.read(0, a.length), a), "first pattern differs");
      assert(equal(await c.read(bAt, b.length), b), "second pattern differs");
    });
    if (c.can(TransmissionFlag.SEND_DF)) {
      await check("read with DF (one content chunk)", async () => {
        assert(equal(await c.read(bAt, b.length, { df: true }), b), "DF read differs");
      });
    }
    if (c.can(TransmissionFlag.SEND_WRITE_ZEROES)) {
      await check("write zeroes (punching) reads back zeroes", async () => {
        await c.zero(bAt, 4096);
        assert(isZero(await c.read(bAt, 4096)), "not zero");
        assert(equal(await c.read(bAt + 4096, b.length - 4096), b.subarray(4096)), "neighbour changed");
      });
      await check("write zeroes with NO_HOLE reads back zeroes", async () => {
        await c.zero(bAt + 4096, 4096, { noHole: true });
        assert(isZero(await c.read(bAt + 4096, 4096)), "not zero");
      });
      if (c.can(TransmissionFlag.SEND_FAST_ZERO)) {
        await check("write zeroes with FAST_ZERO: zeroes or ENOTSUP", async () => {
          try {
            await c.zero(bAt + 8192, 4096, { fastZero: true });
          } catch (e) {
            if (e instanceof NbdCommandError && e.errno === 95) return "ENOTSUP (not fast)";
            throw e;
          }
          assert(isZero(await c.read(bAt + 8192, 4096)), "not zero");
        });
      }
    }
    if (c.can(TransmissionFlag.SEND_TRIM)) {
      await check("trim", async () => {
        await c.trim(bAt + 65536, 65536);
        // After TRIM the contents are undefined: only the neighbours are checked.
        assert(
          equal(await c.read(bAt + 16384, 65536 - 16384), b.subarray(16384, 65536)),
          "neighbour changed",
        );
      });
    }
  } else {
    await check("write to a read-only export fails", async () => {
      try {
        await c.write(0, a);
      } catch (e) {
        if (e instanceof NbdCommandError) return `errno ${nameOf("error", e.errno) ?? e.errno}`;
        throw e;
      }
      throw new Error("write succeeded");
    });
  }
  await check("64 pipelined requests, replies matched by cookie", async () => {
    const base = Math.floor((span * 3) / 4 / 4096) * 4096;
    const n = Math.min(64, Math.floor((span - base) / 4096));
    const blocks = Array.from({ length: n }, (_, i) => pattern(4096, 100 + i));
    if (!ro) await Promise.all(blocks.map((d, i) => c.write(base + i * 4096, d)));
    const got = await Promise.all(blocks.map((_, i) => c.read(base + i * 4096, 4096)));
    got.forEach((d, i) => assert(ro || equal(d, blocks[i]!), `block ${i} differs`));
    return `${n} writes and ${n} reads in flight`;
  });
  if (c.can(TransmissionFlag.SEND_FLUSH)) await check("flush", () => c.flush());
  if (c.can(TransmissionFlag.SEND_CACHE)) await check("cache", () => c.cache(0, Math.min(65536, size)));
  await check("read beyond the end fails and the connection survives", async () => {
    let errno = 0;
    try {
      await c.read(size - 512, 4096);
    } catch (e) {
      if (!(e instanceof NbdCommandError)) throw e;
      errno = e.errno;
    }
    assert(errno !== 0, "out-of-range read succeeded");
    await c.read(0, 512);
    return nameOf("error", errno) ?? String(errno);
  });
  if (c.contexts.size > 0) {
    await check("map the export", async () => {
      const m = await c.map();
      const lines: string[] = [];
      for (const [name, list] of m) {
        const total = list.reduce((s, e) => s + e.length, 0n);
        assert(total === BigInt(size), `${name} covers ${total} of ${size} bytes`);
        lines.push(`${name}: ${list.length} extents`);
        if (name === "base:allocation" && !ro) {
          // Where we wrote nonzero data, ZERO must not be claimed.
          for (const e of list) {
            const overlapsA = e.offset < BigInt(a.length);
            if (overlapsA) {
              assert((Number(e.status) & StateFlag.ZERO) === 0, `ZERO claimed over data at ${e.offset}`);
            }
          }
        }
      }
      return lines.join("; ");
    });
    await check("block status with REQ_ONE returns one extent per context", async () => {
      const m = await c.blockStatus(0, Math.min(size, 1 << 20), { reqOne: true });
      assert(m.size === c.contexts.size, `${m.size} contexts answered, ${c.contexts.size} selected`);
      for (const [name, list] of m) {
        assert(list.length === 1, `${name}: ${list.length} extents`);
        assert(list[0]!.length <= BigInt(Math.min(size, 1 << 20)), `${name}: extent longer than the request`);
      }
    });
    if (c.can(TransmissionFlag.BLOCK_STATUS_PAYLOAD)) {
      await check("block status payload form selects one context", async () => {
        const [id, name] = [...c.contexts][0]!;
        const m = await c.blockStatus(0, Math.min(size, 1 << 20), { contextIds: [id] });
        assert(m.size === 1 && m.has(name), `answered: ${[...m.keys()].join(", ")}`);
      });
    }
  }
  return { ok: checks.every((x) => x.ok), mode: c.mode, checks };
}

// ---------------------------------------------------------------------------------------------------------
// Command line

function usage(): never {
  console.error(
    "usage: client.ts --port N [--host 127.0.0.1] [--name NAME] [--no-extended-headers]\n" +
      "                 [--no-structured-replies] [--context NAME]... [--json] [--verbose] COMMAND\n" +
      "commands: list | info | read OFF LEN [FILE] | write OFF HEX|@FILE | zero OFF LEN [--no-hole] [--fast]\n" +
      "          | trim OFF LEN | cache OFF LEN | flush | map [OFF LEN] | selftest",
  );
  process.exit(2);
}

function json(value: unknown): string {
  return JSON.stringify(
    value,
    (_k, v) => (typeof v === "bigint" ? (v <= 2n ** 53n ? Number(v) : v.toString()) : v),
  );
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function fromHex(s: string): Uint8Array {
  if (!/^([0-9a-fA-F]{2})*$/.test(s)) throw new Error(`not hex: ${s}`);
  return Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));
}

function describeFlags(flags: number): string {
  const names: string[] = [];
  for (const [k, v] of Object.entries(TransmissionFlag)) if ((flags & v) !== 0) names.push(k.toLowerCase());
  return names.join(" ");
}

async function main(argv: readonly string[]): Promise<number> {
  let port: number | undefined;
  let host = "127.0.0.1";
  let name = "";
  let extendedHeaders = true;
  let structuredReplies = true;
  let asJson = false;
  let verbose = false;
  const contexts: string[] = [];
  const rest: string[] = [];
  let noHole = false;
  let fast = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => argv[++i] ?? usage();
    if (a === "--") continue;
    else if (a === "--port") port = Number(value());
    else if (a === "--host") host = value();
    else if (a === "--name") name = value();
    else if (a === "--no-extended-headers") extendedHeaders = false;
    else if (a === "--no-structured-replies") structuredReplies = false;
    else if (a === "--context") contexts.push(value());
    else if (a === "--json") asJson = true;
    else if (a === "--verbose") verbose = true;
    else if (a === "--no-hole") noHole = true;
    else if (a === "--fast") fast = true;
    else if (a.startsWith("--")) usage();
    else rest.push(a);
  }
  if (port === undefined || !Number.isInteger(port)) usage();
  const [cmd, ...args] = rest;
  if (cmd === undefined) usage();
  const log = verbose ? (line: string) => console.error(`[client] ${line}`) : undefined;
  const base = { host, port, name, extendedHeaders, structuredReplies, ...(log ? { log } : {}) };
  const out = (text: string, value: unknown): void => console.log(asJson ? json(value) : text);

  if (cmd === "list" || cmd === "info") {
    const c = await NbdClient.connect(base);
    try {
      if (c.handshake !== "fixed-newstyle") {
        out(`${c.handshake} server: no option haggling`, { handshake: c.handshake, export: c.export });
        c.destroy();
        return 0;
      }
      const mode = await c.negotiateReplies(extendedHeaders, structuredReplies);
      const exports = cmd === "list" ? await c.list() : [{ name, description: "" }];
      const result: Record<string, unknown>[] = [];
      for (const e of exports) {
        const info = await c.info(e.name).catch((err: Error) => ({ error: err.message }));
        let metaContexts: string[] | { error: string } = [];
        if (mode !== "simple") {
          metaContexts = await c.listMetaContexts(e.name).catch((err: Error) => ({ error: err.message }));
        }
        result.push({ name: e.name, description: e.description, info, metaContexts });
      }
      await c.abort();
      if (asJson) console.log(json({ mode, negotiation: c.negotiation, exports: result }));
      else {
        console.log(`reply mode: ${mode}`);
        for (const r of result) {
          console.log(`export "${String(r.name)}": ${String(r.description)}`);
          const info = r.info as ExportInfo & { error?: string };
          if (info.error !== undefined) console.log(`  info: ${info.error}`);
          else {
            console.log(`  size: ${info.size}`);
            console.log(
              `  flags: 0x${info.transmissionFlags.toString(16)} ${describeFlags(info.transmissionFlags)}`,
            );
            if (info.blockSize) console.log(`  block size: ${json(info.blockSize)}`);
            if (info.initFlags !== undefined) {
              const f = info.initFlags;
              console.log(
                `  init flags: 0x${f.toString(16)}${f & InitFlag.SPARSE ? " sparse" : ""}${
                  f & InitFlag.ZERO ? " zero" : ""
                }`,
              );
            }
          }
          console.log(`  contexts: ${json(r.metaContexts)}`);
        }
      }
    } finally {
      c.destroy();
    }
    return 0;
  }

  const c = await NbdClient.open({
    ...base,
    metaContexts: contexts.length > 0 ? contexts : ["base:allocation"],
  });
  try {
    log?.(`negotiated: ${c.negotiation.join(", ")}; mode ${c.mode}`);
    const num = (i: number): number => {
      const v = Number(args[i] ?? usage());
      if (!Number.isSafeInteger(v) || v < 0) usage();
      return v;
    };
    switch (cmd) {
      case "read": {
        const data = await c.read(num(0), num(1));
        if (args[2] !== undefined) writeFileSync(args[2], data);
        else out(hex(data), { offset: num(0), data: hex(data) });
        break;
      }
      case "write": {
        const src = args[1] ?? usage();
        const data = src.startsWith("@") ? new Uint8Array(readFileSync(src.slice(1))) : fromHex(src);
        await c.write(num(0), data);
        out(`wrote ${data.length} bytes at ${num(0)}`, { written: data.length });
        break;
      }
      case "zero":
        await c.zero(num(0), num(1), { noHole, fastZero: fast });
        out(`zeroed ${num(1)} bytes at ${num(0)}`, { zeroed: num(1) });
        break;
      case "trim":
        await c.trim(num(0), num(1));
        out(`trimmed ${num(1)} bytes at ${num(0)}`, { trimmed: num(1) });
        break;
      case "cache":
        await c.cache(num(0), num(1));
        out("cached", { cached: num(1) });
        break;
      case "flush":
        await c.flush();
        out("flushed", { flushed: true });
        break;
      case "map": {
        const m = args.length >= 2 ? await c.map(BigInt(num(0)), BigInt(num(1))) : await c.map();
        if (asJson) console.log(json(Object.fromEntries(m)));
        else {
          for (const [ctx, list] of m) {
            console.log(ctx);
            for (const e of list) {
              console.log(`${String(e.offset).padStart(12)} ${String(e.length).padStart(12)} ${e.status}`);
            }
          }
        }
        break;
      }
      case "selftest": {
        const r = await selftest(c);
        if (asJson) {
          console.log(json({ ...r, negotiation: c.negotiation, findings: c.findings.map((f) => f.rule) }));
        } else {
          console.log(`mode: ${r.mode} (${c.negotiation.join(", ")})`);
          for (const x of r.checks) {
            console.log(`${x.ok ? "ok  " : "FAIL"} ${x.name}${x.detail ? `: ${x.detail}` : ""}`);
          }
          console.log(r.ok ? "selftest passed" : "selftest FAILED");
        }
        await c.disconnect();
        return r.ok ? 0 : 1;
      }
      default:
        usage();
    }
    await c.disconnect();
    return 0;
  } catch (e) {
    c.destroy();
    throw e;
  }
}

/** Deno sets `import.meta.main`; under Node (vite-node, or a bundle) the entry script is argv[1]. */
function isMain(): boolean {
  const meta = import.meta as ImportMeta & { main?: boolean };
  if (typeof meta.main === "boolean") return meta.main;
  return /vite-node|client\.(ts|js|mjs)$/.test(process.argv[1] ?? "");
}

if (isMain()) {
  // Exit once stdout is flushed (a pipe may still hold the last lines).
  const exit = (code: number): void => {
    process.stdout.write("", () => process.exit(code));
  };
  main(process.argv.slice(2)).then(exit, (e: unknown) => {
    console.error(`error: ${(e as Error).message}`);
    exit(e instanceof NbdOptionError ? 3 : 1);
  });
}

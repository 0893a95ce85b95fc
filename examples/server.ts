/**
 * A small NBD server built on nbd-codec alone: one sparse in-memory export over `node:net`, listening on
 * 127.0.0.1 only. It runs unchanged on Deno and Node:
 *
 * ```sh
 * npx deno run -A examples/server.ts --port 10809 --size 67108864 --name disk
 * npx vite-node examples/server.ts -- --port 0 --read-only
 * ```
 *
 * `--port 0` picks a free port; the server prints `listening 127.0.0.1:PORT` on stdout once it accepts
 * connections. Other options: `--size BYTES` (default 64 MiB), `--name NAME` (default `disk`; the empty
 * name selects it too), `--description TEXT`, `--read-only`, `--no-structured-replies` and
 * `--no-extended-headers` (refuse those options with `NBD_REP_ERR_UNSUP`, to test client fallbacks),
 * `--quiet`. SIGTERM/SIGINT stop it.
 *
 * What it speaks: fixed newstyle with NO_ZEROES; options EXPORT_NAME, ABORT, LIST, STARTTLS (refused:
 * no TLS), INFO and GO with every info type (EXPORT, NAME, DESCRIPTION, BLOCK_SIZE and the proposed
 * INIT_FLAGS), STRUCTURED_REPLY, EXTENDED_HEADERS, LIST_META_CONTEXT and SET_META_CONTEXT with
 * `base:allocation`; unknown options get `NBD_REP_ERR_UNSUP`. Commands: READ (OFFSET_DATA/OFFSET_HOLE
 * chunks, DF), WRITE, DISC, FLUSH, TRIM (punches holes), CACHE, WRITE_ZEROES (NO_HOLE, FAST_ZERO),
 * BLOCK_STATUS (compact and extended chunks, REQ_ONE, the payload form); every command honours FUA.
 *
 * @module
 */
import * as net from "node:net";
import process from "node:process";
import {
  ClientFlag,
  Command,
  CommandFlag,
  createBlockStatusDescriptors,
  decodeClientFlags,
  type Decoded,
  decodeOptionRequest,
  decodeRequest,
  encodeExportNameReply,
  encodeGreeting,
  encodeOptionReply,
  encodeReplyChunk,
  encodeSimpleReply,
  ErrorValue,
  HandshakeFlag,
  Info,
  InitFlag,
  nameOf,
  Option,
  OptionReply,
  type OptionReplyFrame,
  type OptionRequest,
  type ReplyChunk,
  ReplyFlag,
  ReplyType,
  type Request,
  StateFlag,
  TransmissionFlag,
} from "../mod.ts";

/** Granularity of allocation: a block is either a hole (absent) or 4 KiB of memory. */
const BLOCK = 4096;
/** Largest READ/WRITE payload we accept (advertised in NBD_INFO_BLOCK_SIZE): 32 MiB, the spec's default. */
const MAX_PAYLOAD = 32 * 1024 * 1024;
/** Option data we are willing to buffer. */
const MAX_OPTION_DATA = 64 * 1024;
const BASE_ALLOCATION = "base:allocation";
/** The id our SET_META_CONTEXT gives `base:allocation` (nonzero on purpose: ids are opaque). */
const BASE_ALLOCATION_ID = 1;
/** Longest extent in a compact BLOCK_STATUS descriptor: the largest block multiple below 2^32. */
const MAX_COMPACT_EXTENT = 0x1_0000_0000 - BLOCK;

// ---------------------------------------------------------------------------------------------------------
// The sparse image

interface Block {
  readonly data: Uint8Array;
  /** Whether every byte of `data` is zero (kept up to date on every change). */
  zero: boolean;
}

function allZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** A sparse in-memory disk: blocks of {@link BLOCK} bytes, absent blocks are holes that read as zeroes. */
export class SparseImage {
  readonly size: number;
  readonly #blocks = new Map<number, Block>();

  /** Allocated block indexes in order, rebuilt on demand after allocations change. */
  #sorted: number[] | undefined;

  constructor(size: number) {
    this.size = size;
  }

  #add(i: number, b: Block): void {
    this.#blocks.set(i, b);
    this.#sorted = undefined;
  }

  #remove(i: number): void {
    if (this.#blocks.delete(i)) this.#sorted = undefined;
  }

  /** The first allocated block at or after `i` (Infinity when none): holes are skipped in one step. */
  #nextAllocated(i: number): number {
    const sorted = this.#sorted ??= [...this.#blocks.keys()].sort((a, b) => a - b);
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (sorted[mid]! < i) lo = mid + 1;
      else hi = mid;
    }
    return lo < sorted.length ? sorted[lo]! : Infinity;
  }

  /** Number of blocks (the last one may be partial). */
  get blockCount(): number {
    return Math.ceil(this.size / BLOCK);
  }

  #blockLength(i: number): number {
    return Math.min(BLOCK, this.size - i * BLOCK);
  }

  isAllocated(i: number): boolean {
    return this.#blocks.has(i);
  }

  /** The base:allocation status of block `i`: HOLE|ZERO for holes, ZERO for allocated zeroes, 0 for data. */
  statusOf(i: number): number {
    const b = this.#blocks.get(i);
    if (b === undefined) return StateFlag.HOLE | StateFlag.ZERO;
    return b.zero ? StateFlag.ZERO : 0;
  }

  /** `NBD_INIT_SPARSE`: at least one hole; `NBD_INIT_ZERO`: the whole image reads as zeroes. */
  initFlags(): number {
    let flags = 0;
    if (this.#blocks.size < this.blockCount) flags |= InitFlag.SPARSE;
    let zero = true;
    for (const b of this.#blocks.values()) {
      if (!b.zero) {
        zero = false;
        break;
      }
    }
    if (zero) flags |= InitFlag.ZERO;
    return flags;
  }

  read(offset: number, target: Uint8Array): void {
    let done = 0;
    while (done < target.length) {
      const pos = offset + done;
      const i = Math.floor(pos / BLOCK);
      const within = pos - i * BLOCK;
      const n = Math.min(BLOCK - within, target.length - done);
      const b = this.#blocks.get(i);
      if (b === undefined) target.fill(0, done, done + n);
      else target.set(b.data.subarray(within, within + n), done);
      done += n;
    }
  }

  write(offset: number, data: Uint8Array): void {
    let done = 0;
    while (done < data.length) {
      const pos = offset + done;
      const i = Math.floor(pos / BLOCK);
      const within = pos - i * BLOCK;
      const n = Math.min(BLOCK - within, data.length - done);
      const src = data.subarray(done, done + n);
      let b = this.#blocks.get(i);
      if (b === undefined) {
        // Writing zeroes into a hole keeps it a hole: it already reads as zeroes.
        if (allZero(src)) {
          done += n;
          continue;
        }
        b = { data: new Uint8Array(this.#blockLength(i)), zero: true };
        this.#add(i, b);
      }
      b.data.set(src, within);
      b.zero = allZero(b.data);
      done += n;
    }
  }

  /**
   * Zeroes a range. `punch`: whole blocks become holes (TRIM, WRITE_ZEROES without NO_HOLE); otherwise they
   * are allocated and zeroed (WRITE_ZEROES with NO_HOLE). Partial blocks are zeroed in place when `zero`,
   * left alone otherwise (TRIM only discards what it can).
   */
  zero(offset: number, length: number, punch: boolean, zero: boolean): void {
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const i = Math.floor(pos / BLOCK);
      const within = pos - i * BLOCK;
      const blockLength = this.#blockLength(i);
      const n = Math.min(blockLength - within, length - done);
      const b = this.#blocks.get(i);
      if (within === 0 && n === blockLength) {
        if (punch) this.#remove(i);
        else if (b === undefined) this.#add(i, { data: new Uint8Array(blockLength), zero: true });
        else {
          b.data.fill(0);
          b.zero = true;
        }
      } else if (zero) {
        if (b !== undefined) {
          b.data.fill(0, within, within + n);
          b.zero = allZero(b.data);
        } else if (!punch) {
          this.#add(i, { data: new Uint8Array(blockLength), zero: true });
        }
      }
      done += n;
    }
  }

  /**
   * base:allocation extents from `offset` covering at most `length` bytes (runs of blocks with equal status,
   * clipped to the range), each at most `maxExtent` long, at most `maxCount` of them.
   */
  extents(
    offset: number,
    length: number,
    maxExtent: number,
    maxCount: number,
  ): { length: number; status: number }[] {
    const out: { length: number; status: number }[] = [];
    const end = offset + length;
    let pos = offset;
    while (pos < end && out.length < maxCount) {
      const i = Math.floor(pos / BLOCK);
      const status = this.statusOf(i);
      const lastBlock = Math.ceil(end / BLOCK);
      const limit = Math.min(lastBlock, Math.floor((pos + maxExtent) / BLOCK));
      let j: number;
      if (!this.#blocks.has(i)) {
        j = Math.min(this.#nextAllocated(i), limit);
      } else {
        j = i + 1;
        while (j < limit && this.statusOf(j) === status) j++;
      }
      const runEnd = Math.min(j * BLOCK, end, this.size);
      out.push({ length: runEnd - pos, status });
      pos = runEnd;
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Byte-stream framing over socket chunks

/**
 * An incremental buffer over a socket: collects chunks and hands complete frames to a decoder. A frame's
 * views into the buffer stay valid after later reads: the buffer is never overwritten, only replaced.
 */
class SocketReader {
  #buf = new Uint8Array(1 << 16);
  #start = 0;
  #end = 0;
  #want = 0;
  #closed = false;
  #wake: (() => void) | undefined;

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
      const size = Math.max(1 << 16, 2 * (live + chunk.length), this.#want);
      const next = new Uint8Array(size);
      next.set(this.#buf.subarray(this.#start, this.#end));
      this.#buf = next;
      this.#start = 0;
      this.#end = live;
    }
    this.#buf.set(chunk, this.#end);
    this.#end += chunk.length;
    if (this.#end - this.#start >= this.#want) this.#notify();
  }

  /** Waits for one frame; throws when the peer closes first, or what the decoder throws. */
  async frame<T>(decode: (bytes: Uint8Array) => Decoded<T>): Promise<T> {
    for (;;) {
      const r = decode(this.#buf.subarray(this.#start, this.#end));
      if (r.done) {
        this.#start += r.byteLength;
        this.#want = 0;
        return r.frame;
      }
      if (this.#closed) throw new PeerClosed();
      this.#want = this.#end - this.#start + r.needed;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  /** Bytes received and not yet framed. */
  get pending(): number {
    return this.#end - this.#start;
  }
}

class PeerClosed extends Error {
  constructor() {
    super("the client closed the connection");
  }
}

/** Writes all parts, waiting for the socket to drain when its buffer is full. */
async function send(socket: net.Socket, ...parts: Uint8Array[]): Promise<void> {
  for (const p of parts) {
    if (p.length === 0) continue;
    if (socket.destroyed) throw new PeerClosed();
    if (!socket.write(p)) {
      await new Promise<void>((resolve, reject) => {
        const done = (): void => {
          socket.off("drain", done);
          socket.off("close", done);
          if (socket.destroyed) reject(new PeerClosed());
          else resolve();
        };
        socket.on("drain", done);
        socket.on("close", done);
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// The server

/** Server settings (the command line's options). */
export interface ServerOptions {
  readonly port: number;
  readonly size: number;
  readonly name: string;
  readonly description: string;
  readonly readOnly: boolean;
  readonly structuredReplies: boolean;
  readonly extendedHeaders: boolean;
  readonly log: (line: string) => void;
}

interface Session {
  readonly socket: net.Socket;
  readonly reader: SocketReader;
  noZeroes: boolean;
  structured: boolean;
  extended: boolean;
  /** Export name the last SET_META_CONTEXT named, and whether it selected base:allocation. */
  metaExport: string | undefined;
  metaSelected: boolean;
  flags: number;
  /** Peer spec violations we accept, logged once per connection. */
  readonly tolerated: Set<string>;
}

class ProtocolError extends Error {}

/** An NBD server for one in-memory export. */
export class NbdServer {
  readonly options: ServerOptions;
  readonly image: SparseImage;
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();

  constructor(options: ServerOptions) {
    this.options = options;
    this.image = new SparseImage(options.size);
    this.#server = net.createServer((socket) => {
      this.#sockets.add(socket);
      socket.setNoDelay(true);
      socket.on("close", () => this.#sockets.delete(socket));
      socket.on("error", () => {});
      this.#serve(socket).catch((e: unknown) => {
        if (!(e instanceof PeerClosed)) this.options.log(`connection error: ${(e as Error).message}`);
        socket.destroy();
      });
    });
  }

  /** Listens on 127.0.0.1 (never another address); resolves with the port. */
  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen(this.options.port, "127.0.0.1", () => {
        const addr = this.#server.address() as net.AddressInfo;
        resolve(addr.port);
      });
    });
  }

  close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  async #serve(socket: net.Socket): Promise<void> {
    const reader = new SocketReader(socket);
    const s: Session = {
      socket,
      reader,
      noZeroes: false,
      structured: false,
      extended: false,
      metaExport: undefined,
      metaSelected: false,
      flags: 0,
      tolerated: new Set(),
    };
    await send(
      socket,
      encodeGreeting({
        type: "newstyle-greeting",
        handshakeFlags: HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES,
      }),
    );
    const cf = await reader.frame((b) => decodeClientFlags(b, { strict: false }));
    // Spec: the server MUST drop the connection on unknown client flags.
    if ((cf.flags & ~(ClientFlag.C_FIXED_NEWSTYLE | ClientFlag.C_NO_ZEROES)) !== 0) {
      throw new ProtocolError(`unknown client flags 0x${cf.flags.toString(16)}`);
    }
    s.noZeroes = (cf.flags & ClientFlag.C_NO_ZEROES) !== 0;
    const fixed = (cf.flags & ClientFlag.C_FIXED_NEWSTYLE) !== 0;
    const go = await this.#negotiate(s, fixed);
    if (!go) {
      socket.end();
      return;
    }
    await this.#transmission(s);
  }

  // ------------------------------------------------------------------------------ option haggling

  #optionReply(s: Session, frame: OptionReplyFrame): Promise<void> {
    return send(s.socket, encodeOptionReply(frame));
  }

  #ack(s: Session, option: number): Promise<void> {
    return this.#optionReply(s, {
      type: "option-reply",
      option,
      reply: OptionReply.ACK,
      data: { kind: "none" },
    });
  }

  #error(s: Session, option: number, reply: number, message: string): Promise<void> {
    this.options.log(
      `option ${nameOf("option", option) ?? option}: ${nameOf("optionReply", reply)} ${message}`,
    );
    return this.#optionReply(s, { type: "option-reply", option, reply, data: { kind: "error", message } });
  }

  #knows(name: string): boolean {
    return name === "" || name === this.options.name;
  }

  /** The transmission flags for this session; BLOCK_STATUS_PAYLOAD only with extended headers. */
  #transmissionFlags(s: Session, forGo: boolean, name: string): number {
    let f = TransmissionFlag.HAS_FLAGS | TransmissionFlag.SEND_FLUSH | TransmissionFlag.SEND_FUA |
      TransmissionFlag.SEND_TRIM | TransmissionFlag.SEND_WRITE_ZEROES | TransmissionFlag.SEND_FAST_ZERO |
      TransmissionFlag.SEND_CACHE | TransmissionFlag.CAN_MULTI_CONN;
    if (this.options.readOnly) f |= TransmissionFlag.READ_ONLY;
    // DF only makes sense (and MUST only be set) when replies can be chunked.
    if (s.structured || s.extended) f |= TransmissionFlag.SEND_DF;
    // Ext-header branch: SHOULD NOT be set in a GO reply when no contexts were negotiated for the export.
    if (s.extended && (!forGo || (s.metaSelected && this.#sameExport(s.metaExport, name)))) {
      f |= TransmissionFlag.BLOCK_STATUS_PAYLOAD;
    }
    return f;
  }

  #sameExport(a: string | undefined, b: string): boolean {
    if (a === undefined) return false;
    const canon = (n: string): string => (n === "" ? this.options.name : n);
    return canon(a) === canon(b);
  }

  /** Runs option haggling; `true` when transmission should start. */
  async #negotiate(s: Session, fixed: boolean): Promise<boolean> {
    for (;;) {
      let req: OptionRequest;
      try {
        req = await s.reader.frame((b) =>
          decodeOptionRequest(b, { strict: false, maxPayloadLength: MAX_OPTION_DATA })
        );
      } catch (e) {
        if (e instanceof PeerClosed) return false;
        throw e;
      }
      const opt = req.option;
      const data = req.data;
      this.options.log(`option ${nameOf("option", opt) ?? opt} (${data.kind})`);
      if (!fixed && opt !== Option.EXPORT_NAME) {
        // Non-fixed newstyle: only EXPORT_NAME is legal and there is no way to answer anything else.
        throw new ProtocolError(`option ${opt} without fixed newstyle`);
      }
      switch (opt) {
        case Option.EXPORT_NAME: {
          const name = data.kind === "export-name" ? data.name : undefined;
          // No error reply exists for EXPORT_NAME: refusing means closing. After extended headers the client
          // MUST NOT use it.
          if (name === undefined || !this.#knows(name) || s.extended) return false;
          s.flags = this.#transmissionFlags(s, true, name);
          await send(
            s.socket,
            encodeExportNameReply({
              type: "export-name-reply",
              size: BigInt(this.image.size),
              transmissionFlags: s.flags,
              zeroPadding: !s.noZeroes,
            }),
          );
          return true;
        }
        case Option.ABORT:
          await this.#ack(s, opt);
          return false;
        case Option.LIST:
          if (data.kind !== "none") {
            await this.#error(s, opt, OptionReply.ERR_INVALID, "NBD_OPT_LIST takes no data");
            break;
          }
          await this.#optionReply(s, {
            type: "option-reply",
            option: opt,
            reply: OptionReply.SERVER,
            data: { kind: "server", name: this.options.name, description: this.options.description },
          });
          await this.#ack(s, opt);
          break;
        case Option.STARTTLS:
          await this.#error(
            s,
            opt,
            data.kind === "none" ? OptionReply.ERR_POLICY : OptionReply.ERR_INVALID,
            "this server does not do TLS",
          );
          break;
        case Option.INFO:
        case Option.GO: {
          if (data.kind !== "info-request") {
            await this.#error(s, opt, OptionReply.ERR_INVALID, "malformed NBD_OPT_INFO/GO data");
            break;
          }
          if (!this.#knows(data.name)) {
            await this.#error(s, opt, OptionReply.ERR_UNKNOWN, `no export named "${data.name}"`);
            break;
          }
          const flags = this.#transmissionFlags(s, opt === Option.GO, data.name);
          await this.#sendInfo(s, opt, data.info, flags);
          await this.#ack(s, opt);
          if (opt === Option.GO) {
            s.flags = flags;
            // Contexts only count if the last SET_META_CONTEXT named this export.
            if (!this.#sameExport(s.metaExport, data.name)) s.metaSelected = false;
            return true;
          }
          break;
        }
        case Option.STRUCTURED_REPLY:
          if (data.kind !== "none") {
            await this.#error(s, opt, OptionReply.ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data");
          } else if (!this.options.structuredReplies) {
            await this.#error(s, opt, OptionReply.ERR_UNSUP, "structured replies are disabled");
          } else if (s.extended) {
            // Extended headers already imply structured replies; no downgrade.
            await this.#error(s, opt, OptionReply.ERR_EXT_HEADER_REQD, "extended headers already negotiated");
          } else {
            s.structured = true;
            await this.#ack(s, opt);
          }
          break;
        case Option.EXTENDED_HEADERS:
          if (data.kind !== "none") {
            await this.#error(s, opt, OptionReply.ERR_INVALID, "NBD_OPT_EXTENDED_HEADERS takes no data");
          } else if (!this.options.extendedHeaders) {
            await this.#error(s, opt, OptionReply.ERR_UNSUP, "extended headers are disabled");
          } else {
            s.extended = true;
            await this.#ack(s, opt);
          }
          break;
        case Option.LIST_META_CONTEXT:
        case Option.SET_META_CONTEXT:
          await this.#metaContext(s, opt, data);
          break;
        default:
          await this.#error(s, opt, OptionReply.ERR_UNSUP, `option ${opt} is not supported`);
      }
    }
  }

  async #sendInfo(s: Session, option: number, requested: readonly number[], flags: number): Promise<void> {
    const info = (payload: OptionReplyFrame["data"]): Promise<void> =>
      this.#optionReply(s, { type: "option-reply", option, reply: OptionReply.INFO, data: payload });
    await info({
      kind: "info",
      info: { kind: "export", info: Info.EXPORT, size: BigInt(this.image.size), transmissionFlags: flags },
    });
    // The block size is sent unrequested too (a client MUST ignore what it does not want).
    await info({
      kind: "info",
      info: { kind: "block-size", info: Info.BLOCK_SIZE, minimum: 1, preferred: BLOCK, maximum: MAX_PAYLOAD },
    });
    for (const type of new Set(requested)) {
      switch (type) {
        case Info.NAME:
          await info({ kind: "info", info: { kind: "name", info: Info.NAME, name: this.options.name } });
          break;
        case Info.DESCRIPTION:
          await info({
            kind: "info",
            info: { kind: "description", info: Info.DESCRIPTION, description: this.options.description },
          });
          break;
        case Info.INIT_FLAGS:
          await info({
            kind: "info",
            info: { kind: "init-flags", info: Info.INIT_FLAGS, flags: this.image.initFlags() },
          });
          break;
        default:
          // EXPORT and BLOCK_SIZE were sent already; unknown info requests are ignored (spec).
      }
    }
  }

  async #metaContext(s: Session, opt: number, data: OptionRequest["data"]): Promise<void> {
    const set = opt === Option.SET_META_CONTEXT;
    // SET replaces the selection even when it fails.
    if (set) {
      s.metaSelected = false;
      s.metaExport = undefined;
    }
    if (data.kind !== "meta-context-query") {
      await this.#error(s, opt, OptionReply.ERR_INVALID, "malformed meta context query");
      return;
    }
    if (!s.structured && !s.extended) {
      await this.#error(
        s,
        opt,
        OptionReply.ERR_INVALID,
        "negotiate structured replies or extended headers first",
      );
      return;
    }
    if (!this.#knows(data.name)) {
      await this.#error(s, opt, OptionReply.ERR_UNKNOWN, `no export named "${data.name}"`);
      return;
    }
    let match: boolean;
    if (set) match = data.queries.includes(BASE_ALLOCATION);
    // LIST: no query lists everything; `base:` is the namespace wildcard.
    else {match = data.queries.length === 0 || data.queries.some((q) =>
        q === BASE_ALLOCATION || q === "base:"
      );}
    if (match) {
      await this.#optionReply(s, {
        type: "option-reply",
        option: opt,
        reply: OptionReply.META_CONTEXT,
        // In LIST replies the id is reserved: SHOULD be 0.
        data: { kind: "meta-context", id: set ? BASE_ALLOCATION_ID : 0, name: BASE_ALLOCATION },
      });
    }
    if (set) {
      s.metaExport = data.name;
      s.metaSelected = match;
    }
    await this.#ack(s, opt);
  }

  // ------------------------------------------------------------------------------ transmission

  async #transmission(s: Session): Promise<void> {
    const extendedHeaders = s.extended;
    for (;;) {
      let req: Request;
      let findings: readonly { rule: string }[] = [];
      try {
        req = await s.reader.frame((b) => {
          const r = decodeRequest(b, { strict: false, extendedHeaders, maxPayloadLength: MAX_PAYLOAD });
          if (r.done) findings = r.findings;
          return r;
        });
      } catch (e) {
        if (e instanceof PeerClosed) return;
        throw e;
      }
      if (req.command === Command.DISC) {
        s.socket.end();
        return;
      }
      const result = this.#execute(s, req, findings);
      if (Array.isArray(result)) {
        const [error, message] = result;
        this.options.log(
          `${nameOf("command", req.command) ?? req.command}: ${nameOf("error", error)} ${message}`,
        );
        await this.#replyError(s, req, error, message);
      } else {
        await result;
      }
    }
  }

  /**
   * Validates and runs one request; sends the successful reply itself and returns `[errno, message]` on
   * failure (the caller replies).
   */
  #execute(
    s: Session,
    req: Request,
    findings: readonly { rule: string }[],
  ): [number, string] | Promise<void> {
    // qemu 10 sends extended WRITE without PAYLOAD_LEN (the payload is there anyway): tolerated.
    const bad = findings.filter((f) => f.rule !== "write-payload-len");
    if (bad.length !== findings.length && !s.tolerated.has("write-payload-len")) {
      s.tolerated.add("write-payload-len");
      this.options.log("tolerated: write-payload-len (extended WRITE without NBD_CMD_FLAG_PAYLOAD_LEN)");
    }
    if (bad.length > 0) return [ErrorValue.EINVAL, `invalid request (${bad.map((f) => f.rule).join(", ")})`];
    const size = BigInt(this.image.size);
    const f = req.flags;
    const ro = this.options.readOnly;
    if ((f & CommandFlag.DF) !== 0 && (s.flags & TransmissionFlag.SEND_DF) === 0) {
      return [ErrorValue.EINVAL, "NBD_CMD_FLAG_DF was not advertised"];
    }
    const inRange = (length: bigint): boolean => req.offset + length <= size;
    switch (req.command) {
      case Command.READ: {
        if (!inRange(req.length)) return [ErrorValue.EINVAL, "read beyond the end of the export"];
        if (req.length > BigInt(MAX_PAYLOAD)) return [ErrorValue.EOVERFLOW, "read larger than 32 MiB"];
        return this.#replyRead(s, req);
      }
      case Command.WRITE: {
        const data = req.data ?? new Uint8Array(0);
        if (ro) return [ErrorValue.EPERM, "the export is read-only"];
        if (!inRange(BigInt(data.length))) return [ErrorValue.ENOSPC, "write beyond the end of the export"];
        this.image.write(Number(req.offset), data);
        return this.#replyOk(s, req);
      }
      case Command.FLUSH:
        return this.#replyOk(s, req);
      case Command.TRIM:
        if (ro) return [ErrorValue.EPERM, "the export is read-only"];
        if (!inRange(req.length)) return [ErrorValue.EINVAL, "trim beyond the end of the export"];
        this.image.zero(Number(req.offset), Number(req.length), true, false);
        return this.#replyOk(s, req);
      case Command.CACHE:
        if (!inRange(req.length)) return [ErrorValue.EINVAL, "cache beyond the end of the export"];
        return this.#replyOk(s, req);
      case Command.WRITE_ZEROES: {
        if (ro) return [ErrorValue.EPERM, "the export is read-only"];
        if (!inRange(req.length)) return [ErrorValue.ENOSPC, "write zeroes beyond the end of the export"];
        // Zeroing memory is always fast: FAST_ZERO never fails with ENOTSUP here (spec: NBD_CMD_FLAG_FAST_ZERO).
        const punch = (f & CommandFlag.NO_HOLE) === 0;
        this.image.zero(Number(req.offset), Number(req.length), punch, true);
        return this.#replyOk(s, req);
      }
      case Command.BLOCK_STATUS:
        return this.#blockStatus(s, req, size);
      default:
        return [ErrorValue.EINVAL, `unknown command ${req.command}`];
    }
  }

  #blockStatus(s: Session, req: Request, size: bigint): [number, string] | Promise<void> {
    if (!s.structured && !s.extended) return [ErrorValue.EINVAL, "block status needs structured replies"];
    if (!s.metaSelected) return [ErrorValue.EINVAL, "no metadata context was negotiated"];
    let length = req.length;
    if ((req.flags & CommandFlag.PAYLOAD_LEN) !== 0) {
      if ((s.flags & TransmissionFlag.BLOCK_STATUS_PAYLOAD) === 0 || req.blockStatus === undefined) {
        return [ErrorValue.EINVAL, "malformed or unsupported block status payload"];
      }
      const ids = req.blockStatus.contextIds;
      if (new Set(ids).size !== ids.length || ids.some((id) => id !== BASE_ALLOCATION_ID)) {
        return [ErrorValue.EINVAL, "unknown or duplicate context id in the block status payload"];
      }
      length = req.blockStatus.effectLength;
    }
    if (length === 0n) return [ErrorValue.EINVAL, "block status of 0 bytes"];
    if (req.offset + length > size) return [ErrorValue.EINVAL, "block status beyond the end of the export"];
    const reqOne = (req.flags & CommandFlag.REQ_ONE) !== 0;
    const extents = this.image.extents(
      Number(req.offset),
      Number(length),
      s.extended ? Number.MAX_SAFE_INTEGER : MAX_COMPACT_EXTENT,
      reqOne ? 1 : 1 << 20,
    );
    return this.#sendChunk(s, req, {
      flags: ReplyFlag.DONE,
      chunkType: s.extended ? ReplyType.BLOCK_STATUS_EXT : ReplyType.BLOCK_STATUS,
      payload: {
        kind: "block-status",
        descriptors: createBlockStatusDescriptors(BASE_ALLOCATION_ID, s.extended, extents),
      },
    });
  }

  // ------------------------------------------------------------------------------ replies

  #sendChunk(
    s: Session,
    req: Request,
    chunk: Pick<ReplyChunk, "flags" | "chunkType" | "payload">,
    ...data: Uint8Array[]
  ): Promise<void> {
    const frame = {
      type: "reply-chunk",
      extended: s.extended,
      flags: chunk.flags,
      chunkType: chunk.chunkType,
      cookie: req.cookie,
      ...(s.extended ? { offset: req.offset } : {}),
      payload: chunk.payload,
    } as ReplyChunk;
    return send(s.socket, encodeReplyChunk(frame), ...data);
  }

  /** Success without data: a simple reply, or (extended headers: simple replies are forbidden) NONE. */
  #replyOk(s: Session, req: Request): Promise<void> {
    if (s.extended) {
      return this.#sendChunk(s, req, {
        flags: ReplyFlag.DONE,
        chunkType: ReplyType.NONE,
        payload: { kind: "none" },
      });
    }
    return send(s.socket, encodeSimpleReply({ type: "simple-reply", error: 0, cookie: req.cookie }));
  }

  #replyError(s: Session, req: Request, error: number, message: string): Promise<void> {
    if (!s.structured && !s.extended) {
      return send(s.socket, encodeSimpleReply({ type: "simple-reply", error, cookie: req.cookie }));
    }
    return this.#sendChunk(s, req, {
      flags: ReplyFlag.DONE,
      chunkType: ReplyType.ERROR,
      payload: { kind: "error", error, message },
    });
  }

  async #replyRead(s: Session, req: Request): Promise<void> {
    const offset = Number(req.offset);
    const length = Number(req.length);
    if (!s.structured && !s.extended) {
      const data = new Uint8Array(length);
      this.image.read(offset, data);
      await send(s.socket, encodeSimpleReply({ type: "simple-reply", error: 0, cookie: req.cookie }), data);
      return;
    }
    if (length === 0) {
      await this.#sendChunk(s, req, {
        flags: ReplyFlag.DONE,
        chunkType: ReplyType.NONE,
        payload: { kind: "none" },
      });
      return;
    }
    // DF: one OFFSET_DATA chunk with the holes as explicit zeroes.
    const runs = (req.flags & CommandFlag.DF) !== 0
      ? [{ length, status: 0 }]
      : this.image.extents(offset, length, MAX_PAYLOAD, Number.MAX_SAFE_INTEGER);
    let pos = offset;
    for (let i = 0; i < runs.length; i++) {
      const run = runs[i]!;
      const flags = i === runs.length - 1 ? ReplyFlag.DONE : 0;
      if ((run.status & StateFlag.HOLE) !== 0) {
        await this.#sendChunk(s, req, {
          flags,
          chunkType: ReplyType.OFFSET_HOLE,
          payload: { kind: "offset-hole", offset: BigInt(pos), holeSize: run.length },
        });
      } else {
        const data = new Uint8Array(run.length);
        this.image.read(pos, data);
        await this.#sendChunk(s, req, {
          flags,
          chunkType: ReplyType.OFFSET_DATA,
          payload: { kind: "offset-data", offset: BigInt(pos), data },
        }, data);
      }
      pos += run.length;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Command line

function usage(): never {
  console.error(
    "usage: server.ts --port N [--size BYTES] [--name NAME] [--description TEXT] [--read-only]\n" +
      "                 [--no-structured-replies] [--no-extended-headers] [--quiet]",
  );
  process.exit(2);
}

/** Parses the command line (`args` without the runtime and script). */
export function parseServerArgs(args: readonly string[]): ServerOptions {
  let port: number | undefined;
  let size = 64 * 1024 * 1024;
  let name = "disk";
  let description = "nbd-codec example server (sparse, in memory)";
  let readOnly = false;
  let structuredReplies = true;
  let extendedHeaders = true;
  let quiet = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = (): string => {
      const v = args[++i];
      if (v === undefined) usage();
      return v;
    };
    switch (a) {
      case "--":
        break;
      case "--port":
        port = Number(value());
        break;
      case "--size":
        size = Number(value());
        break;
      case "--name":
        name = value();
        break;
      case "--description":
        description = value();
        break;
      case "--read-only":
        readOnly = true;
        break;
      case "--no-structured-replies":
        structuredReplies = false;
        break;
      case "--no-extended-headers":
        extendedHeaders = false;
        break;
      case "--quiet":
        quiet = true;
        break;
      default:
        usage();
    }
  }
  if (port === undefined || !Number.isInteger(port) || port < 0 || port > 65535) usage();
  if (!Number.isSafeInteger(size) || size < 0) usage();
  return {
    port,
    size,
    name,
    description,
    readOnly,
    structuredReplies,
    extendedHeaders,
    log: quiet ? () => {} : (line) => console.error(`[server] ${line}`),
  };
}

async function main(): Promise<void> {
  const server = new NbdServer(parseServerArgs(process.argv.slice(2)));
  const port = await server.listen();
  console.log(`listening 127.0.0.1:${port}`);
  const stop = (): void => {
    server.close().then(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

/** Deno sets `import.meta.main`; under Node (vite-node, or a bundle) the entry script is argv[1]. */
function isMain(): boolean {
  const meta = import.meta as ImportMeta & { main?: boolean };
  if (typeof meta.main === "boolean") return meta.main;
  const entry = process.argv[1] ?? "";
  return /vite-node|server\.(ts|js|mjs)$/.test(entry);
}

if (isMain()) {
  main().catch((e: unknown) => {
    console.error((e as Error).message);
    process.exit(1);
  });
}

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
  Command,
  CommandFlag,
  InitFlag,
  nameOf,
  type Request,
  type ServerEvent,
  type ServerExport,
  type ServerRequestEvent,
  ServerSession,
  type ServerStep,
  StateFlag,
  TransmissionFlag,
} from "../mod.ts";

/** Granularity of allocation: a block is either a hole (absent) or 4 KiB of memory. */
const BLOCK = 4096;
/** Largest READ/WRITE payload we accept (advertised in NBD_INFO_BLOCK_SIZE): 32 MiB, the spec's default. */
const MAX_PAYLOAD = 32 * 1024 * 1024;
const BASE_ALLOCATION = "base:allocation";
/** Replies of one step up to this size are copied into one buffer and written at once. */
const SMALL_WRITE = 64 * 1024;
/** Reply bytes queued on a socket above which we stop reading its requests until it drains. */
const MAX_QUEUED = 8 * 1024 * 1024;
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
// The server: a transport (node:net) and the storage around a ServerSession. The protocol part, from here
// to the command line, is 223 lines (about 530 before the session; 30 of these batch the socket writes): the
// session negotiates, validates requests and frames replies; this code wires a socket to it and runs the
// commands on the image.

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

/** An NBD server for one in-memory export. */
export class NbdServer {
  readonly options: ServerOptions;
  readonly image: SparseImage;
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  readonly #export: ServerExport;

  constructor(options: ServerOptions) {
    this.options = options;
    this.image = new SparseImage(options.size);
    this.#export = {
      name: options.name,
      description: options.description,
      size: options.size,
      readOnly: options.readOnly,
      transmissionFlags: TransmissionFlag.SEND_FLUSH | TransmissionFlag.SEND_FUA |
        TransmissionFlag.SEND_TRIM |
        TransmissionFlag.SEND_WRITE_ZEROES | TransmissionFlag.SEND_FAST_ZERO | TransmissionFlag.SEND_CACHE |
        TransmissionFlag.CAN_MULTI_CONN,
      blockSize: { minimum: 1, preferred: BLOCK, maximum: MAX_PAYLOAD },
      initFlags: () => this.image.initFlags(),
      contexts: [BASE_ALLOCATION],
    };
    this.#server = net.createServer((socket) => this.#serve(socket));
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

  #serve(socket: net.Socket): void {
    this.#sockets.add(socket);
    socket.setNoDelay(true);
    socket.on("close", () => this.#sockets.delete(socket));
    socket.on("error", () => {});
    socket.on("drain", () => socket.resume());
    const o = this.options;
    const session = new ServerSession({
      exports: [this.#export],
      structuredReplies: o.structuredReplies,
      extendedHeaders: o.extendedHeaders,
      maxPayloadLength: MAX_PAYLOAD,
    });
    // The bytes of one step (one socket read: often several requests) go out in one write: small ones
    // copied into one buffer (a socket write costs microseconds in Node, a 4 KiB copy nanoseconds), large
    // ones as they are, corked into one writev.
    let queued: Uint8Array[] = [];
    let bytes = 0;
    const send = (parts: readonly Uint8Array[]): void => {
      for (const p of parts) {
        queued.push(p);
        bytes += p.length;
      }
    };
    const flush = (): void => {
      if (queued.length === 1) socket.write(queued[0]!);
      else if (bytes <= SMALL_WRITE) {
        const all = new Uint8Array(bytes);
        let at = 0;
        for (const p of queued) {
          all.set(p, at);
          at += p.length;
        }
        if (bytes > 0) socket.write(all);
      } else {
        socket.cork();
        for (const p of queued) if (p.length > 0) socket.write(p);
        socket.uncork();
      }
      queued = [];
      bytes = 0;
      // Stop reading requests only when replies pile up: pausing at Node's 16 KiB high-water mark would
      // stall the request pipeline after every large READ reply.
      if (socket.writableLength > MAX_QUEUED) socket.pause();
    };
    const step = ({ output, events }: ServerStep): void => {
      send(output);
      let end = false;
      for (const e of events) end = this.#event(session, e, send) || end;
      flush();
      if (end) socket.end();
    };
    socket.on("data", (chunk: Uint8Array) => step(session.receive(chunk)));
    step(session.start());
  }

  #event(
    session: ServerSession,
    e: ServerEvent,
    send: (p: readonly Uint8Array[]) => void,
  ): boolean {
    const log = this.options.log;
    switch (e.type) {
      case "request":
        send(this.#execute(session, e));
        break;
      case "option":
        log(
          `option ${nameOf("option", e.option) ?? e.option} -> ${nameOf("optionReply", e.reply)} ${
            e.message ?? ""
          }`,
        );
        break;
      case "ready":
        log(`transmission, flags 0x${e.transmissionFlags.toString(16)}, ${session.state.replyStyle} replies`);
        break;
      case "refused":
        log(
          `${nameOf("command", e.request.command) ?? e.request.command}: ${
            nameOf("error", e.error)
          } ${e.message}`,
        );
        break;
      case "finding":
        log(`tolerated: ${e.finding.rule} (${e.finding.message})`);
        break;
      case "close":
        log(`closing: ${e.error.message}`);
        return true;
      case "disconnect": // every request is answered at once: nothing is in flight
      case "abort":
        return true;
      case "starttls": // the session refuses STARTTLS (tls: "off"): never happens
    }
    return false;
  }

  /** Runs one valid request on the image and returns its reply. */
  #execute(session: ServerSession, e: ServerRequestEvent): Uint8Array[] {
    const req = e.request;
    const offset = Number(req.offset);
    const length = Number(req.length);
    const cookie = req.cookie;
    switch (req.command) {
      case Command.READ:
        return this.#read(session, req, offset, length);
      case Command.WRITE:
        this.image.write(offset, req.data ?? new Uint8Array(0));
        return session.replyOk(cookie);
      case Command.TRIM:
        this.image.zero(offset, length, true, false);
        return session.replyOk(cookie);
      case Command.WRITE_ZEROES:
        // Zeroing memory is always fast: FAST_ZERO never fails with ENOTSUP here.
        this.image.zero(offset, length, (req.flags & CommandFlag.NO_HOLE) === 0, true);
        return session.replyOk(cookie);
      case Command.BLOCK_STATUS: {
        const reqOne = (req.flags & CommandFlag.REQ_ONE) !== 0;
        const extended = session.state.replyStyle === "extended";
        const extents = this.image.extents(
          offset,
          Number(e.effectLength),
          extended ? Number.MAX_SAFE_INTEGER : MAX_COMPACT_EXTENT,
          reqOne ? 1 : 1 << 20,
        );
        return session.replyBlockStatus(
          cookie,
          (e.contexts ?? []).map((contextId) => ({ contextId, extents })),
        );
      }
      default: // FLUSH, CACHE: memory is always durable and cached
        return session.replyOk(cookie);
    }
  }

  /** A READ: one data chunk (or a simple reply), or data and hole chunks following the image's holes. */
  #read(session: ServerSession, req: Request, offset: number, length: number): Uint8Array[] {
    const chunked = session.state.replyStyle !== "simple" && (req.flags & CommandFlag.DF) === 0;
    const runs = chunked ? this.image.extents(offset, length, MAX_PAYLOAD, Number.MAX_SAFE_INTEGER) : [];
    if (runs.length <= 1 && (runs[0]?.status ?? 0) === 0) {
      const data = new Uint8Array(length);
      this.image.read(offset, data);
      return session.replyRead(req.cookie, data);
    }
    const out: Uint8Array[] = [];
    let pos = offset;
    for (let i = 0; i < runs.length; i++) {
      const run = runs[i]!;
      const done = i === runs.length - 1;
      if ((run.status & StateFlag.HOLE) !== 0) {
        out.push(...session.holeChunk(req.cookie, pos, run.length, done));
      } else {
        const data = new Uint8Array(run.length);
        this.image.read(pos, data);
        out.push(...session.readChunk(req.cookie, pos, data, done));
      }
      pos += run.length;
    }
    return out;
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

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
import { BatchWriter } from "./batch_writer.ts";

/** Granularity of allocation: each block of 4 KiB is data, allocated zeroes, or a hole. */
const BLOCK = 4096;
/** Largest READ/WRITE payload we accept (advertised in NBD_INFO_BLOCK_SIZE): 32 MiB, the spec's default. */
const MAX_PAYLOAD = 32 * 1024 * 1024;
const BASE_ALLOCATION = "base:allocation";
/** Reply bytes queued on a socket above which we stop reading its requests until it drains. */
const MAX_QUEUED = 8 * 1024 * 1024;
/** Longest extent in a compact BLOCK_STATUS descriptor: the largest block multiple below 2^32. */
const MAX_COMPACT_EXTENT = 0x1_0000_0000 - BLOCK;

// ---------------------------------------------------------------------------------------------------------
// The sparse image

/**
 * Memory is taken in chunks of 1 MiB, each one ArrayBuffer. A READ within one chunk is answered with a view
 * of it, no copy and no allocation; and the garbage collector has a few hundred buffers to visit, not one per
 * block (65536 small buffers for 256 MiB made every major collection cost milliseconds). The price: a chunk
 * is allocated whole at the first write into it, so scattered small writes may cost up to 1 MiB each.
 */
const CHUNK = 1024 * 1024;
const PER_CHUNK = CHUNK / BLOCK;
/** Block states are base:allocation statuses. */
const DATA = 0;
const ZEROED = StateFlag.ZERO;
const HOLE = StateFlag.HOLE | StateFlag.ZERO;
/** What holes read as: never written. */
const ZEROES = new Uint8Array(CHUNK);

interface Chunk {
  /** The bytes; a hole's bytes are always zero. */
  readonly data: Uint8Array;
  /** The status of each block. */
  readonly state: Uint8Array;
  /** How many blocks are not holes: at 0 the chunk is freed. */
  allocated: number;
}

function allZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** A sparse in-memory disk: blocks of {@link BLOCK} bytes in chunks of {@link CHUNK}; holes read as zeroes. */
export class SparseImage {
  readonly size: number;
  readonly #chunks = new Map<number, Chunk>();
  /** Allocated chunk indexes in order, rebuilt on demand after allocations change. */
  #sorted: number[] | undefined;

  constructor(size: number) {
    this.size = size;
  }

  /** Number of blocks (the last one may be partial). */
  get blockCount(): number {
    return Math.ceil(this.size / BLOCK);
  }

  #chunk(c: number): Chunk {
    let chunk = this.#chunks.get(c);
    if (chunk === undefined) {
      const bytes = Math.min(CHUNK, this.size - c * CHUNK);
      const state = new Uint8Array(Math.ceil(bytes / BLOCK)).fill(HOLE);
      chunk = { data: new Uint8Array(bytes), state, allocated: 0 };
      this.#chunks.set(c, chunk);
      this.#sorted = undefined;
    }
    return chunk;
  }

  /** Sets the status of block `j` of chunk `c`; a chunk left with holes only is freed. */
  #set(c: number, chunk: Chunk, j: number, status: number): void {
    chunk.allocated += Number(status !== HOLE) - Number(chunk.state[j] !== HOLE);
    chunk.state[j] = status;
    if (chunk.allocated === 0) {
      this.#chunks.delete(c);
      this.#sorted = undefined;
    }
  }

  /** The status of an allocated block (`start` its first byte in the chunk): ZERO when it holds zeroes only. */
  #allocatedStatus(chunk: Chunk, start: number): number {
    return allZero(chunk.data.subarray(start, start + BLOCK)) ? ZEROED : DATA;
  }

  /** The first allocated chunk at or after `c` (Infinity when none): holes are skipped in one step. */
  #nextAllocated(c: number): number {
    const sorted = this.#sorted ??= [...this.#chunks.keys()].sort((a, b) => a - b);
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (sorted[mid]! < c) lo = mid + 1;
      else hi = mid;
    }
    return lo < sorted.length ? sorted[lo]! : Infinity;
  }

  /** The base:allocation status of block `i`: HOLE|ZERO for holes, ZERO for allocated zeroes, 0 for data. */
  statusOf(i: number): number {
    return this.#chunks.get(Math.floor(i / PER_CHUNK))?.state[i % PER_CHUNK] ?? HOLE;
  }

  /** `NBD_INIT_SPARSE`: at least one hole; `NBD_INIT_ZERO`: the whole image reads as zeroes. */
  initFlags(): number {
    let allocated = 0;
    let zero = true;
    for (const chunk of this.#chunks.values()) {
      allocated += chunk.allocated;
      zero &&= !chunk.state.includes(DATA);
    }
    const holes = allocated < this.blockCount;
    return (holes ? InitFlag.SPARSE : 0) | (zero ? InitFlag.ZERO : 0);
  }

  /**
   * The `length` bytes at `offset`: a view of the image when they lie in one chunk (it shows later changes
   * of those bytes; never write to it: a hole's view is shared), else a copy.
   */
  read(offset: number, length: number): Uint8Array {
    const c = Math.floor(offset / CHUNK);
    const at = offset - c * CHUNK;
    if (at + length <= CHUNK) {
      return (this.#chunks.get(c)?.data ?? ZEROES).subarray(at, at + length);
    }
    const out = new Uint8Array(length);
    for (let done = 0; done < length;) {
      const n = Math.min(CHUNK - ((offset + done) % CHUNK), length - done);
      out.set(this.read(offset + done, n), done);
      done += n;
    }
    return out;
  }

  /** Calls `fn` for each block (or part of one) in the range, with its chunk when allocated. */
  #each(
    offset: number,
    length: number,
    fn: (c: number, chunk: Chunk | undefined, j: number, within: number, n: number, done: number) => void,
  ): void {
    for (let done = 0; done < length;) {
      const pos = offset + done;
      const i = Math.floor(pos / BLOCK);
      const within = pos - i * BLOCK;
      const n = Math.min(BLOCK - within, length - done, this.size - pos);
      const c = Math.floor(i / PER_CHUNK);
      fn(c, this.#chunks.get(c), i % PER_CHUNK, within, n, done);
      done += n;
    }
  }

  write(offset: number, data: Uint8Array): void {
    this.#each(offset, data.length, (c, chunk, j, within, n, done) => {
      const src = data.subarray(done, done + n);
      // Writing zeroes into a hole keeps it a hole: it already reads as zeroes.
      if ((chunk === undefined || chunk.state[j] === HOLE) && allZero(src)) return;
      chunk ??= this.#chunk(c);
      const start = j * BLOCK;
      chunk.data.set(src, start + within);
      this.#set(c, chunk, j, this.#allocatedStatus(chunk, start));
    });
  }

  /**
   * Zeroes a range. `punch`: whole blocks become holes (TRIM, WRITE_ZEROES without NO_HOLE); otherwise they
   * are allocated and zeroed (WRITE_ZEROES with NO_HOLE). Partial blocks are zeroed in place when `zero`,
   * left alone otherwise (TRIM only discards what it can).
   */
  zero(offset: number, length: number, punch: boolean, zero: boolean): void {
    this.#each(offset, length, (c, chunk, j, within, n) => {
      const start = j * BLOCK;
      const whole = within === 0 && n === Math.min(BLOCK, this.size - (c * CHUNK + start));
      if (whole && punch) {
        if (chunk === undefined) return;
        chunk.data.fill(0, start, start + n);
        this.#set(c, chunk, j, HOLE);
      } else if (whole || zero) {
        // A hole already reads as zeroes: it stays one unless NO_HOLE asks for allocated zeroes.
        if ((chunk === undefined || chunk.state[j] === HOLE) && punch) return;
        chunk ??= this.#chunk(c);
        chunk.data.fill(0, start + within, start + within + n);
        this.#set(c, chunk, j, this.#allocatedStatus(chunk, start));
      }
    });
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
      const limit = Math.min(Math.ceil(end / BLOCK), Math.floor((pos + maxExtent) / BLOCK));
      let j = i + 1;
      while (j < limit) {
        const chunk = this.#chunks.get(Math.floor(j / PER_CHUNK));
        if (chunk !== undefined) {
          if (chunk.state[j % PER_CHUNK] !== status) break;
          j++;
        } else if (status === HOLE) {
          j = Math.min(this.#nextAllocated(Math.floor(j / PER_CHUNK)) * PER_CHUNK, limit);
        } else break;
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
// to the command line, is 203 lines (about 530 before the session): the session negotiates, validates
// requests and frames replies; this code wires a socket to it and runs the commands on the image. Writing
// the replies with few system calls is examples/batch_writer.ts.

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
    // The replies of one step (one socket read: often several requests) go out in one write.
    const out = new BatchWriter(socket);
    const send = (parts: readonly Uint8Array[]): void => out.add(parts);
    const step = ({ output, events }: ServerStep): void => {
      send(output);
      let end = false;
      for (const e of events) end = this.#event(session, e, send) || end;
      out.flush();
      // Stop reading requests only when replies pile up: pausing at Node's 16 KiB high-water mark would
      // stall the request pipeline after every large READ reply.
      if (socket.writableLength > MAX_QUEUED) socket.pause();
      if (end) socket.end();
    };
    socket.on("data", (chunk: Uint8Array) => step(session.receive(chunk)));
    socket.on("end", () => step(session.end()));
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
      case "end": // the client closed its side
        if (!e.clean) {
          log(`client went away: ${e.reason}, ${e.inFlight} in flight, ${e.partialBytes} bytes cut`);
        }
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

  /**
   * A READ: one data chunk (or a simple reply), or data and hole chunks following the image's holes. The
   * data is a view of the image, not a copy: while it waits in the socket's queue, a WRITE handled meanwhile
   * changes what is sent. Only a WRITE the client sent before this reply arrived can, and the server MAY
   * process requests in flight in any order (the spec's "Ordering of messages and writes").
   */
  #read(session: ServerSession, req: Request, offset: number, length: number): Uint8Array[] {
    const chunked = session.state.replyStyle !== "simple" && (req.flags & CommandFlag.DF) === 0;
    const runs = chunked ? this.image.extents(offset, length, MAX_PAYLOAD, Number.MAX_SAFE_INTEGER) : [];
    if (runs.length <= 1 && (runs[0]?.status ?? 0) === 0) {
      return session.replyRead(req.cookie, this.image.read(offset, length));
    }
    const out: Uint8Array[] = [];
    let pos = offset;
    for (let i = 0; i < runs.length; i++) {
      const run = runs[i]!;
      const done = i === runs.length - 1;
      if ((run.status & StateFlag.HOLE) !== 0) {
        out.push(...session.holeChunk(req.cookie, pos, run.length, done));
      } else {
        out.push(...session.readChunk(req.cookie, pos, this.image.read(pos, run.length), done));
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

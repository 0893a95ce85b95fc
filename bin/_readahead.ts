/**
 * Reading a capture in chunks for `dissect` and `stats` (`cli.ts`): the pool of reused read buffers, and
 * reads on libuv's thread pool, so that a capture file's next chunk is copied out of the page cache on the
 * second core while the main thread decodes and prints the current one. Also the first reads of a capture
 * file, which the npm bin (`start.ts`) starts before it loads the command line ({@link prefetchCapture}).
 *
 * @module
 */
import { closeSync, fstatSync, openSync, read, readSync, statSync } from "node:fs";
import { LONG_RUN_PACKETS } from "./_budget.ts";

/** Bytes of each read of a capture file, at first. */
export const READ_SIZE: number = 1024 * 1024;
/**
 * Bytes of each read once the first chunk shows large packets ({@link LARGE_PACKET_BYTES}): on
 * `loopback-1g` (64 KiB segments) 4 MiB reads take 17% less wall time than 1 MiB reads, while on `small-1g`
 * (4 KiB frames, whose every byte the decoders look at) 1 MiB reads are faster (bench/RESULTS.md).
 */
export const LARGE_READ_SIZE: number = 4 * 1024 * 1024;
/**
 * A capture file whose first read of {@link READ_SIZE} bytes holds packets of this many bytes or more on
 * average is read {@link LARGE_READ_SIZE} bytes at a time from then on (`cli.ts`).
 */
export const LARGE_PACKET_BYTES: number = 16384;

/**
 * The bytes left free in front of each read in its chunk, for the end of the record the previous read cut
 * (`cli.ts`, `readCapture`): a quarter of the first reads' size.
 */
export function readHead(readSize: number): number {
  return Math.floor(readSize / 4);
}

/** What the pool needs of the capture dissector (`CaptureDissector`). */
export interface ChunkHolder {
  /** Copies what the dissector still keeps of `chunk` out of it: called just before it is read into again. */
  release(chunk: Uint8Array): void;
  /** The sequence number of the last chunk pushed. */
  readonly pushes: number;
  /** The sequence number of the oldest pushed chunk the decoders may still hold views of. */
  readonly oldestRetainedChunk: number;
}

/**
 * The read buffers of one run. The dissector keeps views of the chunks it is given: a chunk is read into
 * again only once the dissector says no view of it remains (`oldestRetainedChunk`), and after its
 * `release`, which saves allocating, zeroing and collecting a fresh buffer per read. At most `maxKept`
 * chunks wait to be reused; beyond that the oldest is left to the garbage collector, so that memory stays
 * bounded whatever the capture.
 */
export class ChunkPool {
  readonly #holder: ChunkHolder;
  #size: number;
  readonly #maxKept: number;
  readonly #free: Uint8Array[] = [];
  readonly #kept: Uint8Array[] = [];
  readonly #keptSeq: number[] = [];

  /** Chunks of `size` bytes, at most `maxKept` of them kept for reuse. */
  constructor(holder: ChunkHolder, size: number, maxKept: number) {
    this.#holder = holder;
    this.#size = size;
    this.#maxKept = maxKept;
  }

  /** A chunk to read into: a free one (released first), else a new one. */
  take(): Uint8Array {
    let reused = this.#free.pop();
    // Free chunks of an earlier size are left to the garbage collector.
    while (reused !== undefined && reused.length !== this.#size) reused = this.#free.pop();
    if (reused === undefined) return new Uint8Array(this.#size);
    this.#holder.release(reused);
    return reused;
  }

  /** Chunks taken from now on have `size` bytes. */
  resize(size: number): void {
    this.#size = size;
  }

  /** Gives back a chunk taken but not pushed (its bytes are not held by anyone). */
  giveBack(chunk: Uint8Array): void {
    this.#free.push(chunk);
  }

  /** Call after pushing `chunk` (its bytes went in with the last push, and the one before it after two). */
  keep(chunk: Uint8Array): void {
    this.#kept.push(chunk);
    this.#keptSeq.push(this.#holder.pushes);
    const oldest = this.#holder.oldestRetainedChunk;
    const kept = this.#kept;
    const keptSeq = this.#keptSeq;
    while (kept.length > 0 && (keptSeq[0]! < oldest || kept.length > this.#maxKept)) {
      const c = kept.shift()!;
      if (keptSeq.shift()! < oldest) this.#free.push(c);
    }
  }
}

/**
 * A read under way: `size` bytes into `chunk` at the reads' `head`, from `position` of the file (null: from
 * its offset). `result` is the number of bytes read, or the error.
 */
export interface Read {
  readonly chunk: Uint8Array;
  readonly position: number | null;
  readonly size: number;
  readonly result: Promise<number | Error>;
}

/**
 * Reads a file in chunks of `size` bytes, into the pool's chunks at `head` (the bytes before it are left for
 * the caller's use), `depth` reads ahead of the caller on libuv's thread pool. A regular file is read at
 * explicit positions, so that several reads may run at once (the thread pool has four threads); anything
 * else (a named pipe, a device) one read at a time at its current offset.
 */
export class ReadAhead {
  readonly #fd: number;
  readonly #pool: ChunkPool;
  readonly #head: number;
  #size: number;
  #depth: number;
  readonly #positioned: boolean;
  readonly #queue: Read[] = [];
  /** The file position of the next read to start. */
  #position = 0;
  #ended = false;

  /**
   * See {@link ReadAhead}. `started`: reads of a regular file already under way from its start, one after
   * the other (a {@link Prefetch}'s), into chunks with the same `head`; the next read starts after them.
   */
  constructor(
    fd: number,
    pool: ChunkPool,
    head: number,
    size: number,
    depth: number,
    regularFile: boolean,
    started: readonly Read[] = [],
  ) {
    this.#fd = fd;
    this.#pool = pool;
    this.#head = head;
    this.#size = size;
    this.#positioned = regularFile;
    this.#depth = regularFile ? depth : 1;
    for (const r of started) {
      this.#queue.push(r);
      this.#position = (r.position ?? this.#position) + r.size;
    }
  }

  /** Reads started from now on ask for `size` bytes (into chunks of the pool's new size, see {@link ChunkPool.resize}). */
  resize(size: number): void {
    this.#size = size;
    this.#pool.resize(this.#head + size);
  }

  /**
   * From now on {@link fill} keeps `depth` reads under way, if that is more than before (a regular file's
   * reads only: other inputs are read one at a time).
   */
  deepen(depth: number): void {
    if (this.#positioned && depth > this.#depth) this.#depth = depth;
  }

  /**
   * Starts reads until `depth` are under way. Each takes a chunk from the pool (which releases it first):
   * call it only once no bytes of a free chunk are needed any more.
   */
  fill(): void {
    while (!this.#ended && this.#queue.length < this.#depth) {
      const chunk = this.#pool.take();
      const position = this.#positioned ? this.#position : null;
      this.#position += this.#size;
      this.#queue.push({
        chunk,
        position,
        size: this.#size,
        result: readOnPool(this.#fd, chunk, this.#head, this.#size, position),
      });
    }
  }

  /**
   * The next chunk and the bytes read into it (0: the end of the file; no read starts after it), or the
   * error of its read. Reads started after a short one (fewer bytes than asked, before the end) are
   * dropped, and the next {@link fill} reads on from where it ended.
   */
  async next(): Promise<{ chunk: Uint8Array; got: number } | Error> {
    if (this.#queue.length === 0) this.fill();
    const read = this.#queue.shift()!;
    const got = await read.result;
    if (typeof got !== "number" || got === 0) {
      this.#ended = true;
      return typeof got === "number" ? { chunk: read.chunk, got } : got;
    }
    if (got < read.size && read.position !== null) {
      await this.#drop();
      this.#position = read.position + got;
    }
    return { chunk: read.chunk, got };
  }

  /** Waits for every read under way (they write into their chunks and need the descriptor), then stops. */
  async settle(): Promise<void> {
    this.#ended = true;
    await this.#drop();
  }

  async #drop(): Promise<void> {
    for (const read of this.#queue.splice(0)) {
      await read.result;
      this.#pool.giveBack(read.chunk);
    }
  }
}

/** A callback-style read of `fd` on libuv's thread pool as a promise of its byte count or error. */
type PoolRead = (done: (err: Error | null, bytes: number) => void) => void;

/** The bytes `start` read, or its error: never rejects (see {@link readOnPool}). */
function onPool(start: PoolRead): Promise<number | Error> {
  return new Promise((resolve) => {
    try {
      start((err, n) => resolve(err === null ? n : err));
    } catch (e) {
      resolve(e instanceof Error ? e : new Error(String(e)));
    }
  });
}

/**
 * One read of `length` bytes of `fd` into `buffer` at `offset`, at file `position` (null: the file's
 * current offset, which the read advances), on libuv's thread pool: the number of bytes read, or the
 * error. It never rejects, so that a read nobody waits for any more (the run stopped on an error) is no
 * unhandled rejection.
 */
export function readOnPool(
  fd: number,
  buffer: Uint8Array,
  offset: number,
  length: number,
  position: number | null = null,
): Promise<number | Error> {
  return onPool((done) => read(fd, buffer, offset, length, position, done));
}

/**
 * The options of `dissect` and `stats` that take a value (`cli.ts`, `parseDissect`) when it is not given
 * with `=`: the argument after them is their value, not the capture.
 */
const VALUE_OPTIONS: ReadonlySet<string> = new Set([
  "--time",
  "--count",
  "--filter",
  "--port",
  "--c2s",
  "--s2c",
]);

/**
 * The capture file that the command line `args` (the command first) would read, when that is plain: the one
 * operand of `dissect` or `stats`, not `-` and without `--help`. Undefined for anything else, including
 * arguments that the command line would refuse (which then reads nothing).
 */
export function captureOperand(args: readonly string[]): string | undefined {
  if (args[0] !== "dissect" && args[0] !== "stats") return undefined;
  let capture: string | undefined;
  for (let i = 1; i < args.length; i++) {
    const a = args[i]!;
    if (a === "-h" || a === "--help") return undefined;
    if (a.startsWith("-") && a !== "-") {
      if (VALUE_OPTIONS.has(a)) i++;
      continue;
    }
    if (capture !== undefined) return undefined;
    capture = a;
  }
  return capture === "-" ? undefined : capture;
}

/** The most record or block headers {@link sniffCapture} reads. */
export const SNIFF_HEADERS: number = 256;

/** What the first records' headers of a capture file say ({@link sniffCapture}). */
export interface CaptureSniff {
  /**
   * The packets average {@link LARGE_PACKET_BYTES} or more over the first {@link READ_SIZE} bytes, as the
   * command line finds once it has decoded its first read (`cli.ts`). False when the file is neither pcap
   * nor pcapng (the command line then says so) or holds no whole packet there.
   */
  readonly large: boolean;
  /**
   * How many packets the whole file holds, estimated from the bytes per packet of the headers read (0 when
   * none was): the command line starts a run that this says is long without its cold phase (`cli.ts`,
   * `LONG_RUN_PACKETS`).
   */
  readonly expectedPackets: number;
}

const NOT_A_CAPTURE: CaptureSniff = { large: false, expectedPackets: 0 };

/**
 * Whether a capture's first headers (`sniff`) predict a long run: `LONG_RUN_PACKETS` packets or more
 * (`_budget.ts`). The npm bin keeps a code cache per kind of run by it (`start.ts`, `runKind`), the command
 * line starts such a run warm (`cli.ts`, `predictsLongRun`), and {@link readThreads} counts on it.
 */
export function predictsLong(sniff: CaptureSniff): boolean {
  return sniff.expectedPackets >= LONG_RUN_PACKETS;
}

/**
 * Reads the first record or block headers of the capture file `fd` (of `size` bytes), a classic pcap file's
 * or a pcapng file's (its packet blocks count as packets), without reading their data: at most
 * {@link SNIFF_HEADERS} of them, within its first {@link READ_SIZE} bytes, and no more once the packets are
 * surely small. Positioned reads: the file's offset does not move.
 */
export function sniffCapture(fd: number, size: number): CaptureSniff {
  const window = new Uint8Array(Math.min(size, 128 * 1024));
  const got = readSync(fd, window, 0, window.length, 0);
  const view = new DataView(window.buffer, 0, got);
  const scratch = new Uint8Array(16);
  const scratchView = new DataView(scratch.buffer);
  let little: boolean;
  let next: number;
  let ng: boolean;
  if (got < 24) return NOT_A_CAPTURE;
  const magic = view.getUint32(0, true);
  if (magic === 0x0a0d0d0a) {
    ng = true;
    const order = view.getUint32(8, true);
    if (order !== 0x1a2b3c4d && order !== 0x4d3c2b1a) return NOT_A_CAPTURE;
    little = order === 0x1a2b3c4d;
    next = 0;
  } else {
    ng = false;
    const big = view.getUint32(0, false);
    if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) little = true;
    else if (big === 0xa1b2c3d4 || big === 0xa1b23c4d) little = false;
    else return NOT_A_CAPTURE;
    next = 24;
  }
  const start = next;
  const first = Math.min(size, READ_SIZE);
  // Small as soon as more packets than this fit in the first read.
  const most = Math.floor(first / LARGE_PACKET_BYTES);
  let packets = 0;
  /** Where the last packet counted ends. */
  let counted = start;
  // Each record's (or block's) header: from the window, else read on its own; at most SNIFF_HEADERS of
  // them (a file of tiny blocks other than packets counts as small, whatever follows them).
  for (let n = 0; n < SNIFF_HEADERS && next + 16 <= first && packets <= most; n++) {
    let header = view;
    let at = next;
    if (next + 16 > got) {
      if (readSync(fd, scratch, 0, 16, next) < 16) break;
      header = scratchView;
      at = 0;
    }
    let end: number;
    if (ng) {
      const length = header.getUint32(at + 4, little);
      if (length < 12) break;
      end = next + length;
      const type = header.getUint32(at, little);
      if (end <= first && (type === 6 || type === 3 || type === 2)) {
        packets++;
        counted = end;
      }
    } else {
      end = next + 16 + header.getUint32(at + 8, little);
      if (end <= first) {
        packets++;
        counted = end;
      }
    }
    next = end;
  }
  if (packets === 0) return NOT_A_CAPTURE;
  return {
    large: first / packets >= LARGE_PACKET_BYTES,
    expectedPackets: Math.round(((size - start) * packets) / (counted - start)),
  };
}

/**
 * The first reads of a capture file, started before the command line is loaded (by {@link prefetchCapture}
 * in the npm bin): while Node compiles and runs the command line's bundle (5-7 ms on this machine kind), one
 * thread of the pool copies the file's first megabytes into fresh chunks, whose pages the kernel faults in
 * as it copies. Started by the run that needs them, the same reads kept its main thread waiting 4-8 ms on
 * `loopback-100m` (bench/RESULTS.md).
 *
 * The reads are those {@link ReadAhead} will make, into chunks with {@link readHead} bytes in front: one of
 * {@link READ_SIZE} bytes, then two of {@link LARGE_READ_SIZE} bytes when the records' headers show large
 * packets ({@link sniffCapture}, as the run will find after its first read), else two more of
 * {@link READ_SIZE}. (Larger chunks for small packets slowed `small-100m`: its run stays cold, with V8's
 * larger interrupt budget, until a chunk's end shows enough packets.) The run's reader adopts them
 * ({@link take}) with the descriptor.
 */
export class Prefetch {
  /** The capture file, as given on the command line. */
  readonly file: string;
  /** Its descriptor, open for reading. */
  readonly fd: number;
  /** Its size when opened. */
  readonly size: number;
  /** The bytes in front of each read in its chunk. */
  readonly head: number;
  /** What the file's first headers say ({@link sniffCapture}): the reads' sizes, and the run's length. */
  readonly sniff: CaptureSniff;
  #reads: Read[] | undefined;

  /**
   * Starts reading `fd` (the regular file `file` of `size` bytes): see {@link Prefetch}. `sniff`: what its
   * first headers say, when {@link sniffCapture} was asked already.
   */
  constructor(file: string, fd: number, size: number, sniff: CaptureSniff = sniffCapture(fd, size)) {
    this.file = file;
    this.fd = fd;
    this.size = size;
    this.head = readHead(READ_SIZE);
    const planned: { chunk: Uint8Array; position: number; size: number }[] = [];
    let end = 0;
    this.sniff = sniff;
    const then = this.sniff.large ? LARGE_READ_SIZE : READ_SIZE;
    for (const size of [READ_SIZE, then, then]) {
      if (end >= this.size) break;
      planned.push({ chunk: new Uint8Array(this.head + size), position: end, size });
      end += size;
    }
    // A read per chunk, which the pool's one thread (READ_THREADS) makes in order: the first chunk is there
    // as soon as its 1 MiB is copied, where one vectored read of the three held it back until the last byte
    // of the 9 MiB (the run then waited 1.5-2 ms for it: bench/RESULTS.md, "Sixth pass").
    const head = this.head;
    this.#reads = planned.map(({ chunk, position, size }) => ({
      chunk,
      position,
      size,
      result: readOnPool(fd, chunk, head, size, position),
    }));
  }

  /**
   * The descriptor's reads, for the run that reads `file` with chunks of `head` bytes in front; it then owns
   * the descriptor (and closes it). Undefined for any other run, or once taken or released.
   */
  take(file: string, head: number): readonly Read[] | undefined {
    if (this.#reads === undefined || file !== this.file || head !== this.head) return undefined;
    const reads = this.#reads;
    this.#reads = undefined;
    return reads;
  }

  /** Unless taken: waits for the reads (they write into their chunks and use the descriptor), then closes it. */
  async release(): Promise<void> {
    const reads = this.#reads;
    if (reads === undefined) return;
    this.#reads = undefined;
    for (const r of reads) await r.result;
    try {
      closeSync(this.fd);
    } catch {
      // Nothing to do: the descriptor was only read.
    }
  }
}

/** Where the npm bin leaves its {@link Prefetch} for the command line's bundle (a separate script). */
const PREFETCH = Symbol.for("nbd-codec.prefetch");

/**
 * Threads in libuv's pool for `dissect` and `stats` ({@link readThreads}). Reading the capture is the pool's
 * only work there; one thread copies a 4 MiB chunk in under a millisecond, faster than the main thread
 * decodes it, while a second reading thread only took the second CPU from the main thread (two reads ahead
 * ran at once): `loopback-100m` 81.8 -> 77.9 ms in 61 alternating runs, the sample capture 33.4 -> 32.9 ms
 * (fewer threads to start and to join), no change on `small-100m` (bench/RESULTS.md, "Sixth pass").
 */
export const READ_THREADS = 1;

/**
 * Threads in libuv's pool for `stats` of a capture whose first headers show large packets
 * ({@link CaptureSniff.large}) and a long run ({@link CaptureSniff.expectedPackets}, `LONG_RUN_PACKETS` or
 * more). `stats` formats nothing, and in such a run, whose decoders V8 optimises, its main thread decodes a
 * chunk faster than one thread reads the next: on `loopback-1g` it waited for reads 123-139 ms of its 230 (the
 * command line keeps three reads under way there, `cli.ts`, `STATS_READS_AHEAD`). Two threads: 296.6 -> 258.8
 * ms, and 235.7 ms with the third read (n=9). In a short run the main thread runs baseline code and waits 2-4
 * ms in all: a second thread only competes with it (`stats` of `loopback-100m` 87.9 -> 96.6 ms, n=41), as it
 * did with `dissect` (bench/RESULTS.md, "Seventh pass").
 */
export const STATS_READ_THREADS = 2;

/**
 * How many threads libuv's pool gets for the command line's `command` on a capture file whose first headers
 * say `sniff` (undefined: no capture file to prefetch, such as standard input or a small file):
 * {@link STATS_READ_THREADS} for `stats` of a long run of large packets, else {@link READ_THREADS}.
 */
export function readThreads(command: string | undefined, sniff: CaptureSniff | undefined): number {
  return command === "stats" && sniff !== undefined && sniff.large && predictsLong(sniff)
    ? STATS_READ_THREADS
    : READ_THREADS;
}

/**
 * Gives libuv's thread pool {@link readThreads} threads when `args` (the command line's arguments, the
 * command first) run `dissect` or `stats` (`sniff`: what the capture file's first headers say, when it is
 * prefetched), unless `env` already says how many. Only before the pool's first use (libuv reads the variable
 * then), and not on Deno (its reads do not use it).
 */
export function limitReadThreads(
  args: readonly string[],
  env: Record<string, string | undefined>,
  sniff?: CaptureSniff,
): void {
  if (args[0] !== "dissect" && args[0] !== "stats") return;
  if ("Deno" in globalThis || env.UV_THREADPOOL_SIZE !== undefined) return;
  env.UV_THREADPOOL_SIZE = String(readThreads(args[0], sniff));
}

/**
 * Starts the first reads of the capture file that `args` (the command line's arguments, the command first)
 * name ({@link captureOperand}), when it is a regular file of `minBytes` or more, and leaves them for
 * {@link takePrefetch}. Returns them, or undefined when it started nothing: anything that cannot be read is
 * left to the command line, which reports it.
 *
 * `beforeReads` is called once in any case, before the first read starts, with what the file's first
 * headers say ({@link sniffCapture}; undefined when nothing is read ahead): the npm bin sizes the thread pool
 * there ({@link limitReadThreads}).
 */
export function prefetchCapture(
  args: readonly string[],
  minBytes: number,
  beforeReads?: (sniff: CaptureSniff | undefined) => void,
): Prefetch | undefined {
  const opened = openCapture(args, minBytes);
  beforeReads?.(opened?.sniff);
  if (opened === undefined) return undefined;
  const p = new Prefetch(opened.file, opened.fd, opened.size, opened.sniff);
  (globalThis as { [PREFETCH]?: Prefetch })[PREFETCH] = p;
  return p;
}

/**
 * The capture file of `args` ({@link prefetchCapture}) opened, with its size and first headers, when it is a
 * regular file of `minBytes` or more; else undefined (nothing left open).
 */
function openCapture(
  args: readonly string[],
  minBytes: number,
): { file: string; fd: number; size: number; sniff: CaptureSniff } | undefined {
  const file = captureOperand(args);
  if (file === undefined) return undefined;
  try {
    // Stat before opening: opening a named pipe would wait for its writer.
    const s = statSync(file);
    if (!s.isFile() || s.size < minBytes) return undefined;
    const fd = openSync(file, "r");
    try {
      const opened = fstatSync(fd);
      if (!opened.isFile()) throw new Error("not a regular file");
      return { file, fd, size: opened.size, sniff: sniffCapture(fd, opened.size) };
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  } catch {
    // The command line opens the file itself and says what is wrong.
    return undefined;
  }
}

/** The {@link Prefetch} that {@link prefetchCapture} started in this process, once. */
export function takePrefetch(): Prefetch | undefined {
  const g = globalThis as { [PREFETCH]?: Prefetch };
  const p = g[PREFETCH];
  delete g[PREFETCH];
  return p;
}

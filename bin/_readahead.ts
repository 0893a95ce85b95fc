/**
 * Reading a capture in chunks for `dissect` and `stats` (`cli.ts`): the pool of reused read buffers, and
 * reads on libuv's thread pool, so that a capture file's next chunk is copied out of the page cache on the
 * second core while the main thread decodes and prints the current one.
 *
 * @module
 */
import { read } from "node:fs";

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

/** A read under way: into `chunk` at the reads' `head`, from `position` of the file (or its offset). */
interface Read {
  readonly chunk: Uint8Array;
  readonly position: number | null;
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
  readonly #depth: number;
  readonly #positioned: boolean;
  readonly #queue: Read[] = [];
  /** The file position of the next read to start. */
  #position = 0;
  #ended = false;

  /** See {@link ReadAhead}. */
  constructor(fd: number, pool: ChunkPool, head: number, size: number, depth: number, regularFile: boolean) {
    this.#fd = fd;
    this.#pool = pool;
    this.#head = head;
    this.#size = size;
    this.#positioned = regularFile;
    this.#depth = regularFile ? depth : 1;
  }

  /** Reads started from now on ask for `size` bytes (into chunks of the pool's new size, see {@link ChunkPool.resize}). */
  resize(size: number): void {
    this.#size = size;
    this.#pool.resize(this.#head + size);
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
    if (got < this.#size && read.position !== null) {
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
  return new Promise((resolve) => {
    try {
      read(fd, buffer, offset, length, position, (err, n) => resolve(err === null ? n : err));
    } catch (e) {
      resolve(e instanceof Error ? e : new Error(String(e)));
    }
  });
}

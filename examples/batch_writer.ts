/**
 * Transport help for the example server: writes many small byte arrays and some large ones to a socket with
 * one system call per batch, without copying the large ones. An NBD server sends, for each request, a header
 * of 16 to 32 bytes and often a payload; a `socket.write` per piece costs microseconds in Node (the stream
 * machinery, and for a small `Uint8Array` an off-heap copy of it), a 4 KiB copy costs nanoseconds.
 *
 * Small pieces are copied into a slab and written as one view of it; large ones (READ payloads, often views
 * of the storage) are written as they are, all of a batch in one `writev` (cork, write, uncork). The slab is
 * reused once the socket has handed every queued byte to the kernel (`writableLength` back at 0), which is
 * the common case; while replies wait in the socket's queue, a full slab is left to them and a new one taken.
 *
 * Node's `net.Socket` fits the {@link BatchSink} interface, under Node and under Deno.
 *
 * @module
 */

/** What a {@link BatchWriter} needs of a socket (`net.Socket` has it). */
export interface BatchSink {
  cork(): void;
  uncork(): void;
  write(bytes: Uint8Array): boolean;
  /** Bytes given to `write` and not yet handed to the kernel. */
  readonly writableLength: number;
}

/** Pieces up to this size are copied into the slab; larger ones are written as they are. */
const COPY_LIMIT = 8 * 1024;
/** Size of a slab. */
const SLAB = 256 * 1024;

/** Collects pieces of output with {@link BatchWriter.add}, writes them with {@link BatchWriter.flush}. */
export class BatchWriter {
  readonly #sink: BatchSink;
  #slab = new Uint8Array(SLAB);
  /** The slab's bytes from `#start` to `#end` are queued and not yet in `#parts`. */
  #start = 0;
  #end = 0;
  #parts: Uint8Array[] = [];

  constructor(sink: BatchSink) {
    this.#sink = sink;
  }

  /** Queues bytes to write at the next {@link BatchWriter.flush}; they must not change until then. */
  add(pieces: readonly Uint8Array[]): void {
    for (const p of pieces) {
      if (p.length > COPY_LIMIT) {
        this.#cut();
        this.#parts.push(p);
        continue;
      }
      if (this.#end + p.length > SLAB) {
        // The full slab stays with the socket's queue until written; the garbage collector frees it then.
        this.#cut();
        this.#slab = new Uint8Array(SLAB);
        this.#start = this.#end = 0;
      }
      this.#slab.set(p, this.#end);
      this.#end += p.length;
    }
  }

  /** Writes everything queued, in order, with one write (one `writev` when there are several pieces). */
  flush(): void {
    this.#cut();
    const parts = this.#parts;
    if (parts.length === 1) this.#sink.write(parts[0]!);
    else if (parts.length > 1) {
      this.#sink.cork();
      for (const p of parts) this.#sink.write(p);
      this.#sink.uncork();
    }
    this.#parts = [];
    // Every byte written is in the kernel: nothing refers to the slab any more.
    if (this.#sink.writableLength === 0) this.#start = this.#end = 0;
  }

  /** Moves the slab's queued bytes into the list of parts. */
  #cut(): void {
    if (this.#end > this.#start) this.#parts.push(this.#slab.subarray(this.#start, this.#end));
    this.#start = this.#end;
  }
}

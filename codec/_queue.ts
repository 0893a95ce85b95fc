// Private: a queue of received chunks that hands out contiguous views without copying when it can.
import { ViewCache } from "./_bytes.ts";

const EMPTY = new Uint8Array(0);

/** DataViews over the chunks' buffers (the chunks of a stream are views of a few read buffers). */
const views = new ViewCache();

export class ByteQueue {
  private chunks: Uint8Array[] = [];
  /** Index of the first live chunk in `chunks`. */
  private first = 0;
  /** Read position inside chunks[first]. */
  private head = 0;
  /** Bytes available. */
  length = 0;
  /** Stream offset of the first available byte. */
  position = 0;

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** The chunk holding the first available byte (empty when nothing is available). */
  frontChunk(): Uint8Array {
    return this.length === 0 ? EMPTY : this.chunks[this.first]!;
  }

  /** The index of the first available byte in {@link frontChunk}. */
  frontStart(): number {
    return this.length === 0 ? 0 : this.head;
  }

  /** How many bytes from the first available one lie in {@link frontChunk}. */
  contiguous(): number {
    return this.length === 0 ? 0 : this.chunks[this.first]!.length - this.head;
  }

  /** The first `n` bytes (n <= length) as one array: a view when they lie in one chunk, else a copy. */
  peek(n: number): Uint8Array {
    const c = this.chunks[this.first]!;
    if (c.length - this.head >= n) return c.subarray(this.head, this.head + n);
    const out = new Uint8Array(n);
    let filled = 0;
    let i = this.first;
    let start = this.head;
    while (filled < n) {
      const src = this.chunks[i]!;
      const take = Math.min(src.length - start, n - filled);
      out.set(src.subarray(start, start + take), filled);
      filled += take;
      i++;
      start = 0;
    }
    return out;
  }

  /** Big-endian u32 at index `i` (i + 4 <= length) without consuming. */
  u32At(i: number): number {
    const c = this.chunks[this.first]!;
    const p = this.head + i;
    // One DataView call instead of four element loads and six arithmetic operations (which unoptimised
    // code makes a call each).
    if (p + 4 <= c.length) return views.of(c).getUint32(views.base + p);
    return ((this.byteAt(i) << 24) >>> 0) +
      ((this.byteAt(i + 1) << 16) | (this.byteAt(i + 2) << 8) | this.byteAt(i + 3));
  }

  /**
   * A DataView through which the first `n` bytes (n <= length) read at indexes {@link viewBase} to
   * `viewBase + n - 1`: over the front chunk's buffer when they lie in that chunk (no copy), else over a
   * copy of them. For a frame header's fields, read one by one.
   */
  view(n: number): DataView {
    const c = this.chunks[this.first]!;
    if (c.length - this.head < n) {
      const dv = views.of(this.peek(n));
      this.viewBase = views.base;
      return dv;
    }
    const dv = views.of(c);
    this.viewBase = views.base + this.head;
    return dv;
  }

  /** See {@link view}. */
  viewBase = 0;

  /** The `n` bytes at index `i` as a view of the front chunk (they must lie in it: i + n <= contiguous()). */
  frontView(i: number, n: number): Uint8Array {
    const start = this.head + i;
    return this.chunks[this.first]!.subarray(start, start + n);
  }

  /** Big-endian u16 at index `i` (i + 2 <= length) without consuming. */
  u16At(i: number): number {
    const c = this.chunks[this.first]!;
    const p = this.head + i;
    if (p + 2 <= c.length) return views.of(c).getUint16(views.base + p);
    return (this.byteAt(i) << 8) | this.byteAt(i + 1);
  }

  /** Byte at index `i` (< length) without consuming. */
  byteAt(i: number): number {
    let k = this.first;
    let idx = this.head + i;
    while (idx >= this.chunks[k]!.length) {
      idx -= this.chunks[k]!.length;
      k++;
    }
    return this.chunks[k]![idx]!;
  }

  /** Removes `n` bytes and returns them as views, one per chunk touched. */
  takeViews(n: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    while (n > 0) {
      const c = this.chunks[this.first]!;
      const take = Math.min(c.length - this.head, n);
      out.push(c.subarray(this.head, this.head + take));
      this.advance(take);
      n -= take;
    }
    return out;
  }

  /** Removes `n` bytes. */
  skip(n: number): void {
    while (n > 0) {
      const c = this.chunks[this.first]!;
      const take = Math.min(c.length - this.head, n);
      this.advance(take);
      n -= take;
    }
  }

  /** Removes everything. */
  clear(): number {
    const n = this.length;
    this.skip(n);
    return n;
  }

  private advance(n: number): void {
    this.head += n;
    this.length -= n;
    this.position += n;
    if (this.head === this.chunks[this.first]!.length) {
      this.chunks[this.first] = EMPTY;
      this.first++;
      this.head = 0;
      if (this.first > 64 && this.first * 2 > this.chunks.length) {
        this.chunks = this.chunks.slice(this.first);
        this.first = 0;
      }
    }
  }
}

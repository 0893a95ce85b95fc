// Private byte helpers: big-endian integers, strict UTF-8, caller-side checks for encoders.
import type { Reporter } from "./_report.ts";

export const U64_MAX = 0xffff_ffff_ffff_ffffn;

const NO_BUFFER = new ArrayBuffer(0);

/**
 * A one-entry cache of the DataView over the last buffer seen: a connection decodes (or encodes) many frames
 * from the same receive (or send) buffer, so the DataView is built once per buffer, not once per frame.
 *
 * Use: `const dv = cache.of(bytes)`, then read index `i` of `bytes` at `cache.base + i` (`base` is
 * `bytes.byteOffset`), and only after checking `i` against `bytes.length`. The view covers the whole
 * `ArrayBuffer` (length-tracking when the buffer is resizable), so reads in `0 <= i < bytes.length` are in
 * bounds whatever the view's `byteOffset` and length; a view whose buffer was detached or shrunk away has
 * length 0, so nothing is read (and `of()` must not be called: check the length first).
 *
 * Two levels: the same `Uint8Array` as last time costs one comparison (its buffer and byteOffset never
 * change); another `Uint8Array` over the same buffer (a `subarray()` per frame) reuses the DataView without
 * allocating; a new buffer builds a new one. One entry only: the cache keeps at most the last array and its
 * buffer alive, until a frame from another one comes.
 */
export class ViewCache {
  /** The last `Uint8Array` seen. */
  bytes: Uint8Array | undefined = undefined;
  /** Its buffer, the one `view` covers. */
  buffer: ArrayBufferLike = NO_BUFFER;
  /** Its byteOffset: index 0 of `bytes` in `view`. */
  base = 0;
  /** A DataView over the whole of `buffer`. */
  view: DataView = new DataView(NO_BUFFER);

  /** The DataView over `b.buffer`; index `i` of `b` is at `this.base + i` (read `base` after this call). */
  of(b: Uint8Array): DataView {
    if (b !== this.bytes) this.#miss(b);
    return this.view;
  }

  #miss(b: Uint8Array): void {
    const buffer = b.buffer;
    if (buffer !== this.buffer) {
      this.view = new DataView(buffer);
      this.buffer = buffer;
    }
    this.base = b.byteOffset;
    this.bytes = b;
  }
}

/**
 * Throws the RangeError of an index into an input that is not a non-negative integer (the allocation-free
 * decoders take the offset unchecked otherwise; `(offset >>> 0) !== offset` sends them here).
 */
export function checkInputOffset(offset: number, what: string): void {
  if (typeof offset !== "number" || !Number.isInteger(offset) || offset < 0) {
    throw new RangeError(`Cannot decode ${what}: offset ${offset} is not a non-negative integer`);
  }
}

export function u16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}

export function u32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) >>> 0) + ((b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!);
}

export function u64(b: Uint8Array, o: number): bigint {
  const hi = u32(b, o);
  const lo = u32(b, o + 4);
  // Below 2^53 (every offset, length and counter-style cookie in practice): one BigInt made from an exact
  // number, where the general case makes four (two conversions, a shift and an or).
  if (hi <= 0x1f_ffff) return BigInt(hi * 0x1_0000_0000 + lo);
  return (BigInt(hi) << 32n) | BigInt(lo);
}

/** A u64 as a number when it is at most 2^53-1, else -1 (for length fields we only compare). */
export function u64AsNumber(b: Uint8Array, o: number): number {
  const hi = u32(b, o);
  if (hi > 0x1f_ffff) return -1;
  return hi * 0x1_0000_0000 + u32(b, o + 4);
}

export function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 8;
  b[o + 1] = v;
}

export function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = v >>> 16;
  b[o + 2] = v >>> 8;
  b[o + 3] = v;
}

/** Writes a u64 given as a bigint or as a safe integer number (checked by {@link checkU64}). */
export function put64(b: Uint8Array, o: number, v: bigint | number): void {
  if (typeof v === "number") {
    put32(b, o, Math.floor(v / 0x1_0000_0000));
    put32(b, o + 4, v % 0x1_0000_0000);
    return;
  }
  const hi = Number(v >> 32n);
  const lo = Number(v & 0xffff_ffffn);
  put32(b, o, hi);
  put32(b, o + 4, lo);
}

// ---- caller-side checks (encoders): TypeError for the wrong kind, RangeError for out of range ----

export function checkU16(v: number, what: string): void {
  if (typeof v !== "number" || !Number.isInteger(v)) {
    throw new TypeError(`Cannot encode ${what}: ${v} is not an integer`);
  }
  if (v < 0 || v > 0xffff) throw new RangeError(`Cannot encode ${what}: ${v} is outside 0..65535`);
}

export function checkU32(v: number, what: string): void {
  if (typeof v !== "number" || !Number.isInteger(v)) {
    throw new TypeError(`Cannot encode ${what}: ${v} is not an integer`);
  }
  if (v < 0 || v > 0xffff_ffff) throw new RangeError(`Cannot encode ${what}: ${v} is outside 0..4294967295`);
}

/**
 * A 64-bit field for an encoder: a bigint in 0..2^64-1, or a number that is a non-negative safe integer
 * (0..2^53-1; a larger number may already have been rounded, so it is refused rather than guessed).
 */
export function checkU64(v: bigint | number, what: string): void {
  if (typeof v === "number") {
    if (!Number.isInteger(v)) throw new TypeError(`Cannot encode ${what}: ${v} is not an integer`);
    if (v < 0 || v > Number.MAX_SAFE_INTEGER) {
      throw new RangeError(
        `Cannot encode ${what}: ${v} is not a safe integer in 0..2^53-1 (give a bigint for larger values)`,
      );
    }
    return;
  }
  if (typeof v !== "bigint") {
    throw new TypeError(`Cannot encode ${what}: expected a bigint or a number, got ${typeof v}`);
  }
  if (v < 0n || v > U64_MAX) throw new RangeError(`Cannot encode ${what}: ${v} is outside 0..2^64-1`);
}

/** A 64-bit field checked by {@link checkU64}, as a bigint. */
export function toBig64(v: bigint | number): bigint {
  return typeof v === "bigint" ? v : BigInt(v);
}

export function checkBytes(v: Uint8Array, what: string): void {
  if (!(v instanceof Uint8Array)) throw new TypeError(`Cannot encode ${what}: expected a Uint8Array`);
}

export function checkTarget(target: Uint8Array, offset: number, length: number, what: string): void {
  if (!(target instanceof Uint8Array)) {
    throw new TypeError(`Cannot encode ${what}: target is not a Uint8Array`);
  }
  if (!Number.isInteger(offset) || offset < 0 || offset + length > target.length) {
    throw new RangeError(
      `Cannot encode ${what}: ${length} bytes at offset ${offset} do not fit in a target of ${target.length} bytes`,
    );
  }
}

// ---- strings ----

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const lossy = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

/** UTF-8 bytes of a string for the wire, checked: no NUL, at most `max` bytes. */
export function encodeString(s: string, what: string, max = 4096): Uint8Array {
  if (typeof s !== "string") throw new TypeError(`Cannot encode ${what}: expected a string, got ${typeof s}`);
  if (s.includes("\0")) throw new TypeError(`Cannot encode ${what}: strings must not contain NUL`);
  const b = encoder.encode(s);
  if (b.length > max) throw new RangeError(`Cannot encode ${what}: ${b.length} bytes of UTF-8 exceed ${max}`);
  return b;
}

export function utf8Length(s: string): number {
  // Exact UTF-8 byte length without allocating.
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

/**
 * Decodes a wire string at b[start, end). Reports (strict: throws) invalid UTF-8, NUL and over-long strings;
 * in lenient mode returns the text with U+FFFD for bad bytes.
 */
export function readString(
  b: Uint8Array,
  start: number,
  end: number,
  r: Reporter,
  max: number,
  what: string,
): string {
  const len = end - start;
  if (len === 0) return "";
  if (len > max) {
    r.report(
      "string-too-long",
      start,
      "string-max-length",
      `${what} is ${len} bytes; strings MUST be at most ${max}`,
    );
  }
  const view = b.subarray(start, end);
  if (view.indexOf(0) !== -1) {
    r.report(
      "bad-string",
      start + view.indexOf(0),
      "string-no-nul",
      `${what} contains NUL; strings MUST NOT`,
    );
  }
  let ascii = true;
  for (let i = 0; i < len; i++) {
    if (view[i]! >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii && len <= 4096) return String.fromCharCode.apply(null, view as unknown as number[]);
  try {
    return decoder.decode(view);
  } catch {
    r.report("bad-string", start, "string-utf8", `${what} is not valid UTF-8`);
    return lossy.decode(view);
  }
}

export function toHex(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += (b[i]! < 16 ? "0" : "") + b[i]!.toString(16);
  return s;
}

export function hex32(v: number): string {
  return "0x" + (v >>> 0).toString(16).padStart(8, "0");
}

/** Decodes a string; `undefined` when it broke a string rule (lenient mode: the caller falls back to raw). */
export function readStringChecked(
  b: Uint8Array,
  start: number,
  end: number,
  r: Reporter,
  max: number,
  what: string,
): string | undefined {
  const before = r.findings === undefined ? 0 : r.findings.length;
  const s = readString(b, start, end, r, max, what);
  return (r.findings === undefined ? 0 : r.findings.length) === before ? s : undefined;
}

/** Eight lowercase hex digits, no prefix. */
export function hex8(v: number): string {
  return v.toString(16).padStart(8, "0");
}

/** Checks a string for the wire and returns its UTF-8 length, without allocating. */
export function stringLength(s: string, what: string, max = 4096): number {
  if (typeof s !== "string") throw new TypeError(`Cannot encode ${what}: expected a string, got ${typeof s}`);
  if (s.indexOf("\0") !== -1) throw new TypeError(`Cannot encode ${what}: strings must not contain NUL`);
  const n = utf8Length(s);
  if (n > max) throw new RangeError(`Cannot encode ${what}: ${n} bytes of UTF-8 exceed ${max}`);
  return n;
}

/** Writes a string checked by {@link stringLength} at `at` (room already checked); returns the bytes written. */
export function writeString(s: string, target: Uint8Array, at: number): number {
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) return encoder.encodeInto(s, target.subarray(at)).written;
    target[at + i] = c;
  }
  return n;
}

/** The length of raw data carried under a u32 length field: checked to be bytes and to fit. */
export function rawLength(raw: Uint8Array, what: string): number {
  checkBytes(raw, `${what} data`);
  if (raw.length > 0xffff_ffff) {
    throw new RangeError(`Cannot encode ${what}: ${raw.length} bytes of data exceed 2^32-1`);
  }
  return raw.length;
}

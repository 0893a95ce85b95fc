/**
 * Transmission-phase replies (server to client): the simple reply (16 bytes, magic `0x67446698`) with its
 * read data, the structured reply chunk (20-byte header, magic `0x668e33ef`) and the extended reply chunk
 * (32-byte header, magic `0x6e8a278c`), with every chunk type.
 *
 * Block-status descriptors are decoded as a lazy view over the payload ({@link BlockStatusDescriptors}): no
 * object per descriptor and no copy. The allocation-free hot path is {@link decodeReplyHeaderInto} and
 * {@link encodeReplyHeaderInto}.
 *
 * @module
 */
import {
  checkBytes,
  checkInputOffset,
  checkTarget,
  checkU16,
  checkU32,
  checkU64,
  encodeString,
  hex32,
  put16,
  put32,
  put64,
  readString,
  u16,
  u32,
  utf8Length,
  ViewCache,
} from "./_bytes.ts";
import { checkLimit, fail, inputOffset, needMore, type Reporter, reporterFor } from "./_report.ts";
import type { RuleId } from "./rules.ts";
import { Magic, ReplyFlag, ReplyType } from "./constants.ts";
import { type Decoded, type DecodeOptions, DEFAULT_MAX_PAYLOAD_LENGTH, MAX_STRING_LENGTH } from "./types.ts";
import type { EncoderInput } from "./types.ts";
import { toBig64 } from "./_bytes.ts";

const SIMPLE_LENGTH = 16;
const STRUCTURED_LENGTH = 20;
const EXTENDED_LENGTH = 32;
const TWO32 = 0x1_0000_0000;
/** Bit 15 of a chunk type marks an error chunk. */
const ERROR_BIT = 0x8000;

/** DataViews over the last input (decoders) and the last target (encoders): see {@link ViewCache}. */
const inView = new ViewCache();
const outView = new ViewCache();

/** Reads the u64 at index `o` of `b` (in bounds: checked by the caller) as a bigint. */
function big64(b: Uint8Array, o: number): bigint {
  const dv = inView.of(b);
  return dv.getBigUint64(inView.base + o);
}

/** Writes a u64 (checked by the caller) at index `o` of `b` (in bounds: checked by the caller). */
function putBig64(b: Uint8Array, o: number, v: bigint | number): void {
  const dv = outView.of(b);
  dv.setBigUint64(outView.base + o, toBig64(v));
}

// ---------------------------------------------------------------------------------------------------------
// Block-status descriptors
// ---------------------------------------------------------------------------------------------------------

/**
 * The descriptors of a block-status chunk (`NBD_REPLY_TYPE_BLOCK_STATUS`: u32 length and status;
 * `NBD_REPLY_TYPE_BLOCK_STATUS_EXT`: u64 length and status), read lazily from the payload bytes.
 *
 * Decoded views expose only `contextId`, `count` and `extended` as enumerable properties (the bytes are
 * hidden), plus the methods below; {@link blockStatusExtents} copies the descriptors out as objects.
 *
 * @example
 * ```ts
 * import { createBlockStatusDescriptors } from "@nbd/codec";
 * const d = createBlockStatusDescriptors(1, false, [{ length: 4096, status: 3 }, { length: 8192, status: 0 }]);
 * console.log(d.count, d.lengthAt(1), d.statusNumberAt(0)); // 2 8192n 3
 * ```
 */
export interface BlockStatusDescriptors {
  /** The metadata context id the chunk reports on. */
  readonly contextId: number;
  /** The number of descriptors. */
  readonly count: number;
  /** `true` for 64-bit descriptors (`BLOCK_STATUS_EXT`), `false` for 32-bit ones (`BLOCK_STATUS`). */
  readonly extended: boolean;
  /** Extent length of descriptor `i` (exact). */
  lengthAt(i: number): bigint;
  /** Status flags of descriptor `i` (exact). */
  statusAt(i: number): bigint;
  /** Extent length of descriptor `i` as a number (exact up to 2^53; 32-bit descriptors always exact). */
  lengthNumberAt(i: number): number;
  /** Status flags of descriptor `i` as a number (exact up to 2^53; 32-bit descriptors always exact). */
  statusNumberAt(i: number): number;
}

class DescriptorView implements BlockStatusDescriptors {
  readonly contextId: number;
  readonly count: number;
  readonly extended: boolean;
  readonly #bytes: Uint8Array;
  /** Absolute index of the first descriptor in #bytes. */
  readonly #start: number;

  constructor(contextId: number, count: number, extended: boolean, bytes: Uint8Array, start: number) {
    this.contextId = contextId;
    this.count = count;
    this.extended = extended;
    this.#bytes = bytes;
    this.#start = start;
  }

  #at(i: number): number {
    if (!(i >= 0 && i < this.count) || Math.floor(i) !== i) {
      throw new RangeError(`descriptor index ${i} is outside 0..${this.count - 1}`);
    }
    return this.#start + (this.extended ? 16 * i : 8 * i);
  }

  lengthAt(i: number): bigint {
    const o = this.#at(i);
    return this.extended ? big64(this.#bytes, o) : BigInt(u32(this.#bytes, o));
  }

  statusAt(i: number): bigint {
    const o = this.#at(i);
    return this.extended ? big64(this.#bytes, o + 8) : BigInt(u32(this.#bytes, o + 4));
  }

  lengthNumberAt(i: number): number {
    const o = this.#at(i);
    const b = this.#bytes;
    const dv = inView.of(b);
    const q = inView.base + o;
    return this.extended ? dv.getUint32(q) * TWO32 + dv.getUint32(q + 4) : dv.getUint32(q);
  }

  statusNumberAt(i: number): number {
    const o = this.#at(i);
    const b = this.#bytes;
    const dv = inView.of(b);
    const q = inView.base + o;
    return this.extended ? dv.getUint32(q + 8) * TWO32 + dv.getUint32(q + 12) : dv.getUint32(q + 4);
  }

  /** The descriptor bytes when they are laid out as `extended` says: the encoder copies them at once. */
  rawDescriptors(): Uint8Array {
    return this.#bytes.subarray(this.#start, this.#start + this.count * (this.extended ? 16 : 8));
  }
}

/**
 * Builds a {@link BlockStatusDescriptors} from a list of extents, for encoding a block-status chunk.
 * `extended` picks 64-bit descriptors (`BLOCK_STATUS_EXT`); otherwise every length and status must fit
 * in 32 bits. Throws `TypeError`/`RangeError` for values out of range.
 *
 * @example
 * ```ts
 * import { createBlockStatusDescriptors } from "@nbd/codec";
 * const d = createBlockStatusDescriptors(0, true, [{ length: 1n << 40n, status: 0n }]);
 * console.log(d.extended, d.lengthAt(0)); // true 1099511627776n
 * ```
 */
export function createBlockStatusDescriptors(
  contextId: number,
  extended: boolean,
  extents: readonly { readonly length: bigint | number; readonly status: bigint | number }[],
): BlockStatusDescriptors {
  checkU32(contextId, "metadata context id");
  if (!Array.isArray(extents)) {
    throw new TypeError("Cannot build block-status descriptors: extents is not an array");
  }
  const stride = extended ? 16 : 8;
  const bytes = new Uint8Array(extents.length * stride);
  for (let i = 0; i < extents.length; i++) {
    const e = extents[i]!;
    writeField(bytes, i * stride, e.length, extended, "extent length");
    writeField(bytes, i * stride + stride / 2, e.status, extended, "extent status");
  }
  return new DescriptorView(contextId, extents.length, extended === true, bytes, 0);
}

function writeField(b: Uint8Array, o: number, v: bigint | number, wide: boolean, what: string): void {
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new RangeError(`Cannot encode ${what}: ${v} is not a safe u64`);
    }
    if (!wide) {
      checkU32(v, what);
      put32(b, o, v);
    } else {
      put32(b, o, Math.floor(v / TWO32));
      put32(b, o + 4, v % TWO32);
    }
    return;
  }
  checkU64(v, what);
  if (!wide) {
    if (v > 0xffff_ffffn) throw new RangeError(`Cannot encode ${what}: ${v} does not fit 32-bit descriptors`);
    put32(b, o, Number(v));
  } else put64(b, o, v);
}

/**
 * Copies every descriptor out as a `{ length, status }` object (allocates: for display, JSON and tests).
 *
 * @example
 * ```ts
 * import { blockStatusExtents, createBlockStatusDescriptors } from "@nbd/codec";
 * const d = createBlockStatusDescriptors(1, false, [{ length: 512, status: 1 }]);
 * console.log(blockStatusExtents(d)); // [ { length: 512n, status: 1n } ]
 * ```
 */
export function blockStatusExtents(d: BlockStatusDescriptors): { length: bigint; status: bigint }[] {
  const out: { length: bigint; status: bigint }[] = [];
  for (let i = 0; i < d.count; i++) out.push({ length: d.lengthAt(i), status: d.statusAt(i) });
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------------------

/**
 * A simple reply: error value and cookie, then (for a successful READ) the read data, whose length only
 * the request knows.
 *
 * @example
 * ```ts
 * import type { SimpleReply } from "@nbd/codec";
 * const ok: SimpleReply = { type: "simple-reply", error: 0, cookie: 1n };
 * console.log(ok.error); // 0
 * ```
 */
export interface SimpleReply {
  /** Frame tag. */
  readonly type: "simple-reply";
  /** 0 for success, else an `ErrorValue` (unknown values are kept). */
  readonly error: number;
  /** The request's cookie. */
  readonly cookie: bigint;
  /** READ data (a view of the input) when `readLength` was given and the error is 0. */
  readonly data?: Uint8Array;
}

/**
 * The payload of a reply chunk, by kind. Known chunk types whose payload breaks the spec's length rules
 * decode (in lenient mode) as `raw`, as do unknown non-error types; unknown error types (bit 15 set)
 * decode as `error` with any trailer kept in `raw`.
 *
 * @example
 * ```ts
 * import type { ChunkPayload } from "@nbd/codec";
 * const p: ChunkPayload = { kind: "offset-hole", offset: 0n, holeSize: 4096 };
 * console.log(p.kind); // "offset-hole"
 * ```
 */
export type ChunkPayload =
  | { readonly kind: "none" }
  | { readonly kind: "offset-data"; readonly offset: bigint; readonly data: Uint8Array }
  | { readonly kind: "offset-hole"; readonly offset: bigint; readonly holeSize: number }
  | { readonly kind: "block-status"; readonly descriptors: BlockStatusDescriptors }
  | {
    readonly kind: "error";
    readonly error: number;
    readonly message: string;
    /** ERROR_OFFSET: the offset after the message. */
    readonly offset?: bigint;
    /** Bytes after the message (after the offset for ERROR_OFFSET), kept as they are. */
    readonly raw?: Uint8Array;
  }
  | { readonly kind: "raw"; readonly raw: Uint8Array };

/**
 * A structured (20-byte header) or extended (32-byte header) reply chunk.
 *
 * @example
 * ```ts
 * import { ReplyFlag, ReplyType, type ReplyChunk } from "@nbd/codec";
 * const done: ReplyChunk = {
 *   type: "reply-chunk", extended: false, flags: ReplyFlag.DONE, chunkType: ReplyType.NONE,
 *   cookie: 1n, payload: { kind: "none" },
 * };
 * console.log(done.chunkType); // 0
 * ```
 */
export interface ReplyChunk {
  /** Frame tag. */
  readonly type: "reply-chunk";
  /** `true` for the extended header (magic `0x6e8a278c`), `false` for the structured one. */
  readonly extended: boolean;
  /** Reply flags (`ReplyFlag`). */
  readonly flags: number;
  /** Chunk type (`ReplyType`); unknown values are kept. */
  readonly chunkType: number;
  /** The request's cookie. */
  readonly cookie: bigint;
  /** Extended header only: the request's offset. */
  readonly offset?: bigint;
  /** The decoded payload. */
  readonly payload: ChunkPayload;
}

/**
 * Options of {@link decodeSimpleReply}.
 *
 * @example
 * ```ts
 * import { decodeSimpleReply, type SimpleReplyDecodeOptions } from "@nbd/codec";
 * const opts: SimpleReplyDecodeOptions = { readLength: 512 };
 * console.log(decodeSimpleReply(new Uint8Array(0), opts).done); // false
 * ```
 */
export interface SimpleReplyDecodeOptions extends DecodeOptions {
  /** For the reply to a READ: the request's length. When given and the error is 0, that much data follows. */
  readonly readLength?: number;
  /** Whether extended headers were negotiated; simple replies MUST NOT be used then. */
  readonly extendedHeaders?: boolean;
}

/**
 * Options of {@link decodeReplyChunk}.
 *
 * @example
 * ```ts
 * import { decodeReplyChunk, type ReplyChunkDecodeOptions } from "@nbd/codec";
 * const opts: ReplyChunkDecodeOptions = { extendedHeaders: true, strict: false };
 * console.log(decodeReplyChunk(new Uint8Array(0), opts).done); // false
 * ```
 */
export interface ReplyChunkDecodeOptions extends DecodeOptions {
  /**
   * Whether extended headers were negotiated. When given, a chunk in the other header style and the
   * block-status chunk type of the other mode are reported (`unexpected-frame`).
   */
  readonly extendedHeaders?: boolean;
}

/**
 * Options of {@link decodeReply}: those of both reply decoders.
 *
 * @example
 * ```ts
 * import type { ReplyDecodeOptions } from "@nbd/codec";
 * const opts: ReplyDecodeOptions = { readLength: 4096, extendedHeaders: false };
 * console.log(opts.readLength); // 4096
 * ```
 */
export interface ReplyDecodeOptions extends SimpleReplyDecodeOptions, ReplyChunkDecodeOptions {}

// ---------------------------------------------------------------------------------------------------------
// Simple reply
// ---------------------------------------------------------------------------------------------------------

function styleFinding(
  r: Reporter,
  at: number,
  ctx: boolean | undefined,
  extended: boolean,
  what: string,
): void {
  if (ctx === undefined || ctx === extended) return;
  r.report(
    "unexpected-frame",
    at,
    "reply-header-style",
    ctx
      ? `${what} in an extended-headers session; the server MUST use extended reply chunks only`
      : `${what}, but extended headers were not negotiated; the server MUST NOT use it`,
  );
}

/**
 * Decodes a simple reply and, with `readLength` (the READ request's length) and error 0, its data (a view
 * of the input). Simple replies are also legal in structured-reply sessions for replies without payload.
 *
 * @example
 * ```ts
 * import { decodeSimpleReply } from "@nbd/codec";
 * const hex = "67446698" + "00000005" + "0000000000000001";
 * const r = decodeSimpleReply(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)));
 * if (r.done) console.log(r.frame.error, r.frame.cookie); // 5 1n
 * ```
 */
export function decodeSimpleReply(
  bytes: Uint8Array,
  options?: SimpleReplyDecodeOptions,
): Decoded<SimpleReply> {
  const at = inputOffset(options, bytes);
  const avail = bytes.length - at;
  if (avail < 4) return needMore(SIMPLE_LENGTH - avail);
  const dv = inView.of(bytes);
  const p = inView.base + at;
  const magic = dv.getUint32(p);
  if (magic !== Magic.SIMPLE_REPLY) badSimpleMagic(at, magic);
  if (avail < SIMPLE_LENGTH) return needMore(SIMPLE_LENGTH - avail);
  const error = dv.getUint32(p + 4);
  const readLength = options?.readLength;
  let dataLength = 0;
  if (readLength !== undefined && error === 0) {
    dataLength = readDataLength(readLength, options!, at);
    if (avail < SIMPLE_LENGTH + dataLength) return needMore(SIMPLE_LENGTH + dataLength - avail);
  }
  const r = reporterFor(options);
  styleFinding(r, at, options?.extendedHeaders, false, "simple reply");
  const cookie = dv.getBigUint64(p + 8);
  const frame: SimpleReply = readLength !== undefined && error === 0
    ? { type: "simple-reply", error, cookie, data: bytes.subarray(at + 16, at + 16 + dataLength) }
    : { type: "simple-reply", error, cookie };
  return { done: true, frame, byteLength: SIMPLE_LENGTH + dataLength, findings: r.list() };
}

function badSimpleMagic(at: number, magic: number): never {
  fail("bad-magic", at, "magic", `Cannot decode simple reply: magic is ${hex32(magic)}, expected 0x67446698`);
}

/** The read data length that follows a successful simple reply: `readLength`, checked. */
function readDataLength(readLength: number, options: SimpleReplyDecodeOptions, at: number): number {
  if (!Number.isSafeInteger(readLength) || readLength < 0) {
    throw new RangeError(`Cannot decode simple reply: readLength ${readLength} is not a length`);
  }
  checkLimit(
    readLength,
    options.maxPayloadLength ?? DEFAULT_MAX_PAYLOAD_LENGTH,
    at + SIMPLE_LENGTH,
    "simple reply read data",
  );
  return readLength;
}

/**
 * The encoded length of a simple reply header: always 16 (read data is sent by the caller).
 *
 * @example
 * ```ts
 * import { simpleReplyByteLength } from "@nbd/codec";
 * console.log(simpleReplyByteLength({ type: "simple-reply", error: 0, cookie: 1n })); // 16
 * ```
 */
export function simpleReplyByteLength(_frame: EncoderInput<SimpleReply>): number {
  return SIMPLE_LENGTH;
}

/**
 * Encodes a simple reply header into `target` at `offset`; returns 16. Read data, if any, is the caller's
 * to send after it.
 *
 * @example
 * ```ts
 * import { encodeSimpleReplyInto, ErrorValue } from "@nbd/codec";
 * const buf = new Uint8Array(16);
 * encodeSimpleReplyInto({ type: "simple-reply", error: ErrorValue.EIO, cookie: 1n }, buf, 0);
 * console.log(buf[7], buf[15]); // 5 1
 * ```
 */
export function encodeSimpleReplyInto(
  frame: EncoderInput<SimpleReply>,
  target: Uint8Array,
  offset: number,
): number {
  checkU32(frame.error, "simple reply error");
  checkU64(frame.cookie, "simple reply cookie");
  if (frame.data !== undefined) checkBytes(frame.data, "simple reply data");
  checkTarget(target, offset, SIMPLE_LENGTH, "simple reply");
  put32(target, offset, Magic.SIMPLE_REPLY);
  put32(target, offset + 4, frame.error);
  putBig64(target, offset + 8, frame.cookie);
  return SIMPLE_LENGTH;
}

/**
 * Encodes a simple reply header into a new 16-byte array.
 *
 * @example
 * ```ts
 * import { encodeSimpleReply } from "@nbd/codec";
 * console.log(encodeSimpleReply({ type: "simple-reply", error: 0, cookie: 2n })[15]); // 2
 * ```
 */
export function encodeSimpleReply(frame: EncoderInput<SimpleReply>): Uint8Array {
  const out = new Uint8Array(SIMPLE_LENGTH);
  encodeSimpleReplyInto(frame, out, 0);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Reply chunks
// ---------------------------------------------------------------------------------------------------------

const NONE_PAYLOAD: ChunkPayload = Object.freeze({ kind: "none" as const });

/**
 * Decodes a structured or extended reply chunk, header and payload. The payload length is checked against
 * `maxPayloadLength` (for OFFSET_DATA: its data part) before waiting for the bytes; payload bytes are views
 * of the input.
 *
 * @example
 * ```ts
 * import { decodeReplyChunk } from "@nbd/codec";
 * const hex = "668e33ef" + "0001" + "8001" + "0000000000000001" + "00000006" + "00000005" + "0000";
 * const r = decodeReplyChunk(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)));
 * if (r.done && r.frame.payload.kind === "error") console.log(r.frame.payload.error); // 5
 * ```
 */
export function decodeReplyChunk(bytes: Uint8Array, options?: ReplyChunkDecodeOptions): Decoded<ReplyChunk> {
  const at = inputOffset(options, bytes);
  const avail = bytes.length - at;
  if (avail < 4) return needMore(STRUCTURED_LENGTH - avail);
  const dv = inView.of(bytes);
  const p = inView.base + at;
  const magic = dv.getUint32(p);
  let extended: boolean;
  if (magic === Magic.STRUCTURED_REPLY) extended = false;
  else if (magic === Magic.EXTENDED_REPLY) extended = true;
  else return badChunkMagic(at, magic);
  const hl = extended ? EXTENDED_LENGTH : STRUCTURED_LENGTH;
  if (avail < hl) return needMore(hl - avail);
  const flags = dv.getUint16(p + 4);
  const chunkType = dv.getUint16(p + 6);
  const lenAt = at + (extended ? 24 : 16);
  const L = extended ? dv.getUint32(p + 24) * TWO32 + dv.getUint32(p + 28) : dv.getUint32(p + 16);
  // The limit applies to the variable part: OFFSET_DATA's 8-byte offset may exceed it (spec §Structured reply chunk).
  checkLimit(
    chunkType === ReplyType.OFFSET_DATA ? L - 8 : L,
    options?.maxPayloadLength ?? DEFAULT_MAX_PAYLOAD_LENGTH,
    lenAt,
    "reply chunk payload",
  );
  if (avail < hl + L) return needMore(hl + L - avail);
  return decodedChunk(bytes, dv, p, at, hl, L, extended, flags, chunkType, options);
}

/**
 * The second half of {@link decodeReplyChunk}, once the whole chunk is there: header rules, payload, frame.
 * Kept apart so that both halves are small enough to be inlined.
 */
function decodedChunk(
  bytes: Uint8Array,
  dv: DataView,
  p: number,
  at: number,
  hl: number,
  L: number,
  extended: boolean,
  flags: number,
  chunkType: number,
  options: ReplyChunkDecodeOptions | undefined,
): Decoded<ReplyChunk> {
  const r = reporterFor(options);
  const ctx = options?.extendedHeaders;
  if ((ctx !== undefined && ctx !== extended) || (flags & ~ReplyFlag.DONE) !== 0) {
    chunkHeaderFindings(r, at, ctx, extended);
  }
  // NONE with DONE and no payload, the most common chunk, breaks no payload rule.
  const payload = chunkType === ReplyType.NONE && L === 0 && (flags & ReplyFlag.DONE) !== 0
    ? NONE_PAYLOAD
    : decodeChunkPayload(bytes, at, at + hl, L, at + (extended ? 24 : 16), flags, chunkType, ctx, r, options);
  const cookie = dv.getBigUint64(p + 8);
  const frame: ReplyChunk = extended
    ? { type: "reply-chunk", extended, flags, chunkType, cookie, offset: dv.getBigUint64(p + 16), payload }
    : { type: "reply-chunk", extended, flags, chunkType, cookie, payload };
  return { done: true, frame, byteLength: hl + L, findings: r.list() };
}

/**
 * The header rules of a reply chunk: the header style. Unknown reply flags are kept, not reported: "Clients
 * MUST ignore unrecognized flags." (spec, reply flags; IGNORED_BY_RECEIVER in rules.ts).
 */
function chunkHeaderFindings(
  r: Reporter,
  at: number,
  ctx: boolean | undefined,
  extended: boolean,
): void {
  styleFinding(r, at, ctx, extended, extended ? "extended reply chunk" : "structured reply chunk");
}

function badChunkMagic(at: number, magic: number): never {
  return fail(
    "bad-magic",
    at,
    "magic",
    `Cannot decode reply chunk: magic is ${
      hex32(magic)
    }, expected 0x668e33ef (structured) or 0x6e8a278c (extended)`,
  );
}

function rawPayload(b: Uint8Array, p: number, L: number): ChunkPayload {
  return { kind: "raw", raw: b.subarray(p, p + L) };
}

function badLength(
  b: Uint8Array,
  p: number,
  L: number,
  lenAt: number,
  r: Reporter,
  rule: RuleId,
  message: string,
): ChunkPayload {
  r.report("bad-length", lenAt, rule, message);
  return rawPayload(b, p, L);
}

function decodeChunkPayload(
  b: Uint8Array,
  at: number,
  p: number,
  L: number,
  lenAt: number,
  flags: number,
  chunkType: number,
  ctx: boolean | undefined,
  r: Reporter,
  options: ReplyChunkDecodeOptions | undefined,
): ChunkPayload {
  switch (chunkType) {
    case ReplyType.NONE: {
      if ((flags & ReplyFlag.DONE) === 0) {
        r.report(
          "bad-value",
          at + 4,
          "chunk-none-done",
          "NBD_REPLY_TYPE_NONE without NBD_REPLY_FLAG_DONE; it MUST be set",
        );
      }
      if (L !== 0) {
        return badLength(
          b,
          p,
          L,
          lenAt,
          r,
          "chunk-none-length",
          `NBD_REPLY_TYPE_NONE with length ${L}; it MUST be 0`,
        );
      }
      return NONE_PAYLOAD;
    }
    case ReplyType.OFFSET_DATA: {
      if (L < 9) {
        return badLength(
          b,
          p,
          L,
          lenAt,
          r,
          "chunk-offset-data-length",
          `NBD_REPLY_TYPE_OFFSET_DATA with length ${L}; it MUST be at least 9`,
        );
      }
      return { kind: "offset-data", offset: big64(b, p), data: b.subarray(p + 8, p + L) };
    }
    case ReplyType.OFFSET_HOLE: {
      if (L !== 12) {
        return badLength(
          b,
          p,
          L,
          lenAt,
          r,
          "chunk-offset-hole-length",
          `NBD_REPLY_TYPE_OFFSET_HOLE with length ${L}; it MUST be 12`,
        );
      }
      const holeSize = u32(b, p + 8);
      if (holeSize === 0) {
        r.report(
          "bad-value",
          p + 8,
          "chunk-hole-size-zero",
          "NBD_REPLY_TYPE_OFFSET_HOLE with hole size 0; it MUST be nonzero",
        );
      }
      return { kind: "offset-hole", offset: big64(b, p), holeSize };
    }
    case ReplyType.BLOCK_STATUS:
    case ReplyType.BLOCK_STATUS_EXT: {
      const ext = chunkType === ReplyType.BLOCK_STATUS_EXT;
      if (ctx !== undefined && ctx !== ext) {
        r.report(
          "unexpected-frame",
          at + 6,
          "block-status-header-style",
          ext
            ? "NBD_REPLY_TYPE_BLOCK_STATUS_EXT without extended headers; it MUST NOT be used then"
            : "NBD_REPLY_TYPE_BLOCK_STATUS with extended headers; only BLOCK_STATUS_EXT is allowed then",
        );
      }
      let count: number;
      if (!ext) {
        if (L < 12 || (L - 4) % 8 !== 0) {
          return badLength(
            b,
            p,
            L,
            lenAt,
            r,
            "chunk-block-status-length",
            `NBD_REPLY_TYPE_BLOCK_STATUS with length ${L}; it MUST be 4 + 8n with n >= 1`,
          );
        }
        count = (L - 4) / 8;
      } else {
        if (L < 24 || (L - 8) % 16 !== 0) {
          return badLength(
            b,
            p,
            L,
            lenAt,
            r,
            "chunk-block-status-ext-length",
            `NBD_REPLY_TYPE_BLOCK_STATUS_EXT with length ${L}; it MUST be 8 + 16n with n >= 1`,
          );
        }
        count = (L - 8) / 16;
        const stated = u32(b, p + 4);
        if (stated !== count) {
          r.report(
            "bad-length",
            p + 4,
            "chunk-block-status-ext-count",
            `descriptor count ${stated} disagrees with the chunk length (${count} descriptors); they MUST agree`,
          );
          return rawPayload(b, p, L);
        }
      }
      const start = p + (ext ? 8 : 4);
      const stride = ext ? 16 : 8;
      const end = start + count * stride;
      for (let o = start; o < end; o += stride) {
        const z = ext
          ? b[o]! | b[o + 1]! | b[o + 2]! | b[o + 3]! | b[o + 4]! | b[o + 5]! | b[o + 6]! | b[o + 7]!
          : b[o]! | b[o + 1]! | b[o + 2]! | b[o + 3]!;
        if (z === 0) {
          r.report(
            "bad-value",
            o,
            "extent-length-zero",
            "block-status extent of length 0; extent lengths MUST be nonzero",
          );
          break;
        }
      }
      return { kind: "block-status", descriptors: new DescriptorView(u32(b, p), count, ext, b, start) };
    }
    case ReplyType.ERROR_OFFSET:
      return decodeError(b, p, L, lenAt, 14, r, options?.maxStringLength ?? MAX_STRING_LENGTH);
    default:
      if ((chunkType & ERROR_BIT) !== 0) {
        return decodeError(b, p, L, lenAt, 6, r, options?.maxStringLength ?? MAX_STRING_LENGTH);
      }
      r.report(
        "unknown-type",
        at + 6,
        "chunk-type-unknown",
        `unknown non-error chunk type ${chunkType}; a client MUST initiate a hard disconnect`,
      );
      return rawPayload(b, p, L);
  }
}

/** ERROR (fixed = 6), ERROR_OFFSET (fixed = 14) and unknown error types (fixed = 6). */
function decodeError(
  b: Uint8Array,
  p: number,
  L: number,
  lenAt: number,
  fixed: number,
  r: Reporter,
  maxString: number,
): ChunkPayload {
  const withOffset = fixed === 14;
  const name = withOffset ? "ERROR_OFFSET" : "error";
  if (L < fixed) {
    r.report(
      "bad-length",
      lenAt,
      withOffset ? "chunk-error-offset-length" : "chunk-error-length",
      `${name} chunk with length ${L}; it MUST be at least ${fixed}`,
    );
    return rawPayload(b, p, L);
  }
  const M = u16(b, p + 4);
  if (M > L - fixed) {
    r.report(
      "bad-length",
      p + 4,
      "chunk-error-message-length",
      `${name} chunk message length ${M} exceeds the chunk length ${L} - ${fixed}`,
    );
    return rawPayload(b, p, L);
  }
  const error = u32(b, p);
  if (error === 0) {
    r.report("bad-value", p, "chunk-error-zero", `${name} chunk with error 0; it MUST be nonzero`);
  }
  const message = readString(b, p + 6, p + 6 + M, r, maxString, "error message");
  let q = p + 6 + M;
  const end = p + L;
  let offset: bigint | undefined;
  if (withOffset) {
    offset = big64(b, q);
    q += 8;
  }
  if (offset === undefined) {
    return q < end
      ? { kind: "error", error, message, raw: b.subarray(q, end) }
      : { kind: "error", error, message };
  }
  return q < end
    ? { kind: "error", error, message, offset, raw: b.subarray(q, end) }
    : { kind: "error", error, message, offset };
}

/** Bytes of the payload that the chunk encoder writes (everything but OFFSET_DATA's data). */
function fixedPayloadLength(frame: EncoderInput<ReplyChunk>): number {
  const p = frame.payload;
  switch (p.kind) {
    case "none":
      return 0;
    case "offset-data":
      return 8;
    case "offset-hole":
      return 12;
    case "block-status":
      return frame.chunkType === ReplyType.BLOCK_STATUS_EXT
        ? 8 + 16 * p.descriptors.count
        : 4 + 8 * p.descriptors.count;
    case "error":
      return 6 + utf8Length(p.message) + (p.offset !== undefined ? 8 : 0) + (p.raw?.length ?? 0);
    case "raw":
      return p.raw.length;
    default:
      throw new TypeError(`Cannot encode reply chunk: unknown payload kind ${(p as { kind: unknown }).kind}`);
  }
}

/**
 * The number of bytes {@link encodeReplyChunk} writes: the header (20 or 32) and the payload, except the
 * data of OFFSET_DATA, which the caller sends after it.
 *
 * @example
 * ```ts
 * import { replyChunkByteLength } from "@nbd/codec";
 * console.log(replyChunkByteLength({
 *   type: "reply-chunk", extended: false, flags: 1, chunkType: 0, cookie: 1n, payload: { kind: "none" },
 * })); // 20
 * ```
 */
export function replyChunkByteLength(frame: EncoderInput<ReplyChunk>): number {
  return (frame.extended ? EXTENDED_LENGTH : STRUCTURED_LENGTH) + fixedPayloadLength(frame);
}

/**
 * Encodes a reply chunk into `target` at `offset`; returns the bytes written ({@link replyChunkByteLength}).
 * The payload is laid out by `payload.kind` and `chunkType` is written as given; block-status descriptors
 * are written 64-bit when `chunkType` is `BLOCK_STATUS_EXT`, 32-bit otherwise. For OFFSET_DATA only the
 * header and the 8-byte offset are written (the length field counts the data), and the caller sends the
 * data. Extended chunks need `offset`. Throws `TypeError`/`RangeError` for caller mistakes.
 *
 * @example
 * ```ts
 * import { encodeReplyChunkInto, ReplyFlag, ReplyType } from "@nbd/codec";
 * const buf = new Uint8Array(32);
 * const n = encodeReplyChunkInto({
 *   type: "reply-chunk", extended: true, flags: ReplyFlag.DONE, chunkType: ReplyType.NONE,
 *   cookie: 1n, offset: 0n, payload: { kind: "none" },
 * }, buf, 0);
 * console.log(n); // 32
 * ```
 */
export function encodeReplyChunkInto(
  frame: EncoderInput<ReplyChunk>,
  target: Uint8Array,
  offset: number,
): number {
  if (
    frame === null || typeof frame !== "object" || frame.payload === null || typeof frame.payload !== "object"
  ) {
    throw new TypeError("Cannot encode reply chunk: not a reply chunk");
  }
  const extended = frame.extended === true;
  checkU16(frame.flags, "reply chunk flags");
  checkU16(frame.chunkType, "reply chunk type");
  checkU64(frame.cookie, "reply chunk cookie");
  if (extended) {
    if (frame.offset === undefined) {
      throw new TypeError("Cannot encode reply chunk: extended chunks need offset");
    }
    checkU64(frame.offset, "reply chunk offset");
  }
  const p = frame.payload;
  let message: Uint8Array | undefined;
  let extra = 0;
  switch (p.kind) {
    case "offset-data":
      checkU64(p.offset, "OFFSET_DATA offset");
      checkBytes(p.data, "OFFSET_DATA data");
      extra = p.data.length;
      break;
    case "offset-hole":
      checkU64(p.offset, "OFFSET_HOLE offset");
      checkU32(p.holeSize, "OFFSET_HOLE hole size");
      break;
    case "block-status":
      checkU32(p.descriptors.contextId, "metadata context id");
      break;
    case "error":
      checkU32(p.error, "error chunk error");
      message = encodeString(p.message, "error message");
      if (p.offset !== undefined) checkU64(p.offset, "ERROR_OFFSET offset");
      if (p.raw !== undefined) checkBytes(p.raw, "error chunk trailer");
      break;
    case "raw":
      checkBytes(p.raw, "reply chunk raw payload");
      break;
  }
  const hl = extended ? EXTENDED_LENGTH : STRUCTURED_LENGTH;
  const len = hl + fixedPayloadLength(frame);
  const L = len - hl + extra;
  if (!extended && L > 0xffff_ffff) {
    throw new RangeError(
      `Cannot encode reply chunk: payload length ${L} does not fit a structured chunk's 32 bits`,
    );
  }
  checkTarget(target, offset, len, "reply chunk");
  put32(target, offset, extended ? Magic.EXTENDED_REPLY : Magic.STRUCTURED_REPLY);
  put16(target, offset + 4, frame.flags);
  put16(target, offset + 6, frame.chunkType);
  putBig64(target, offset + 8, frame.cookie);
  if (extended) {
    putBig64(target, offset + 16, frame.offset!);
    put32(target, offset + 24, Math.floor(L / TWO32));
    put32(target, offset + 28, L % TWO32);
  } else put32(target, offset + 16, L);
  const q = offset + hl;
  switch (p.kind) {
    case "none":
      break;
    case "offset-data":
      putBig64(target, q, p.offset);
      break;
    case "offset-hole":
      putBig64(target, q, p.offset);
      put32(target, q + 8, p.holeSize);
      break;
    case "block-status":
      encodeDescriptors(p.descriptors, frame.chunkType === ReplyType.BLOCK_STATUS_EXT, target, q);
      break;
    case "error": {
      put32(target, q, p.error);
      put16(target, q + 4, message!.length);
      target.set(message!, q + 6);
      let e = q + 6 + message!.length;
      if (p.offset !== undefined) {
        putBig64(target, e, p.offset);
        e += 8;
      }
      if (p.raw !== undefined) target.set(p.raw, e);
      break;
    }
    case "raw":
      target.set(p.raw, q);
      break;
  }
  return len;
}

function encodeDescriptors(d: BlockStatusDescriptors, wide: boolean, t: Uint8Array, q: number): void {
  const n = d.count;
  put32(t, q, d.contextId);
  let o = q + 4;
  if (wide) {
    put32(t, o, n);
    o += 4;
  }
  if (d instanceof DescriptorView && d.extended === wide) {
    t.set(d.rawDescriptors(), o);
    return;
  }
  for (let i = 0; i < n; i++, o += wide ? 16 : 8) {
    if (wide) {
      const len = d.lengthAt(i);
      const st = d.statusAt(i);
      checkU64(len, "extent length");
      checkU64(st, "extent status");
      putBig64(t, o, len);
      putBig64(t, o + 8, st);
    } else {
      const len = d.lengthAt(i);
      const st = d.statusAt(i);
      if (len > 0xffff_ffffn || st > 0xffff_ffffn || len < 0n || st < 0n) {
        throw new RangeError(
          `Cannot encode BLOCK_STATUS descriptor ${i}: length and status must fit 32 bits`,
        );
      }
      put32(t, o, Number(len));
      put32(t, o + 4, Number(st));
    }
  }
}

/**
 * Encodes a reply chunk into a new array (for OFFSET_DATA: the header and offset; send the data after it).
 *
 * @example
 * ```ts
 * import { encodeReplyChunk, ErrorValue, ReplyFlag, ReplyType } from "@nbd/codec";
 * const b = encodeReplyChunk({
 *   type: "reply-chunk", extended: false, flags: ReplyFlag.DONE, chunkType: ReplyType.ERROR, cookie: 1n,
 *   payload: { kind: "error", error: ErrorValue.EIO, message: "" },
 * });
 * console.log(b.length); // 26
 * ```
 */
export function encodeReplyChunk(frame: EncoderInput<ReplyChunk>): Uint8Array {
  const out = new Uint8Array(replyChunkByteLength(frame));
  encodeReplyChunkInto(frame, out, 0);
  return out;
}

/**
 * Decodes whatever reply comes next on a server-to-client stream, told apart by its magic: a simple reply
 * (see `readLength`) or a structured or extended chunk.
 *
 * @example
 * ```ts
 * import { decodeReply } from "@nbd/codec";
 * const hex = "668e33ef" + "0001" + "0000" + "0000000000000001" + "00000000";
 * const r = decodeReply(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)));
 * if (r.done) console.log(r.frame.type); // "reply-chunk"
 * ```
 */
export function decodeReply(
  bytes: Uint8Array,
  options?: ReplyDecodeOptions,
): Decoded<SimpleReply | ReplyChunk> {
  const at = inputOffset(options, bytes);
  const avail = bytes.length - at;
  if (avail < 4) return needMore(SIMPLE_LENGTH - avail);
  const magic = u32(bytes, at);
  if (magic === Magic.SIMPLE_REPLY) return decodeSimpleReply(bytes, options);
  if (magic === Magic.STRUCTURED_REPLY || magic === Magic.EXTENDED_REPLY) {
    return decodeReplyChunk(bytes, options);
  }
  return fail(
    "bad-magic",
    at,
    "magic",
    `Cannot decode reply: magic is ${
      hex32(magic)
    }, expected 0x67446698 (simple), 0x668e33ef (structured) or 0x6e8a278c (extended)`,
  );
}

// ---------------------------------------------------------------------------------------------------------
// Allocation-free header path
// ---------------------------------------------------------------------------------------------------------

/**
 * Reusable storage for the allocation-free reply path: 64-bit fields as `hi`/`lo` u32 numbers.
 * Create one with {@link createReplyHeaderFields} and reuse it.
 *
 * @example
 * ```ts
 * import { createReplyHeaderFields, type ReplyHeaderFields } from "@nbd/codec";
 * const f: ReplyHeaderFields = createReplyHeaderFields();
 * console.log(f.style); // "simple"
 * ```
 */
export interface ReplyHeaderFields {
  /** Which header: simple (16 bytes), structured chunk (20) or extended chunk (32). */
  style: "simple" | "structured" | "extended";
  /** Simple replies: the error value (0 for chunks). */
  error: number;
  /** Chunks: reply flags (0 for simple replies). */
  flags: number;
  /** Chunks: chunk type (0 for simple replies). */
  chunkType: number;
  /** Cookie, high 32 bits. */
  cookieHi: number;
  /** Cookie, low 32 bits. */
  cookieLo: number;
  /** Extended chunks: offset, high 32 bits (0 otherwise). */
  offsetHi: number;
  /** Extended chunks: offset, low 32 bits (0 otherwise). */
  offsetLo: number;
  /** Chunks: payload length, high 32 bits (0 for structured chunks and simple replies). */
  lengthHi: number;
  /** Chunks: payload length, low 32 bits (0 for simple replies: the read data length is the request's). */
  lengthLo: number;
}

/**
 * A fresh, zeroed {@link ReplyHeaderFields} (a successful simple reply).
 *
 * @example
 * ```ts
 * import { createReplyHeaderFields } from "@nbd/codec";
 * console.log(createReplyHeaderFields().error); // 0
 * ```
 */
export function createReplyHeaderFields(): ReplyHeaderFields {
  return {
    style: "simple",
    error: 0,
    flags: 0,
    chunkType: 0,
    cookieHi: 0,
    cookieLo: 0,
    offsetHi: 0,
    offsetLo: 0,
    lengthHi: 0,
    lengthLo: 0,
  };
}

/**
 * Allocation-free header decoding: reads a simple reply or chunk header at `offset` into `out`. Returns the
 * header length (16, 20 or 32) when complete, or `-n` when at least `n` more bytes are needed. Only the
 * magic is checked (`bad-magic` {@link NbdDecodeError} otherwise). No `bigint`, no allocation; the payload
 * (`lengthHi * 2 ** 32 + lengthLo` bytes for chunks) follows the header. `offset` must be a non-negative
 * integer (a `RangeError` otherwise).
 *
 * @example
 * ```ts
 * import { createReplyHeaderFields, decodeReplyHeaderInto } from "@nbd/codec";
 * const hex = "668e33ef" + "0001" + "8001" + "0000000000000001" + "00000006";
 * const f = createReplyHeaderFields();
 * const n = decodeReplyHeaderInto(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)), 0, f);
 * console.log(n, f.style, f.chunkType, f.lengthLo); // 20 structured 32769 6
 * ```
 */
export function decodeReplyHeaderInto(bytes: Uint8Array, offset: number, out: ReplyHeaderFields): number {
  if ((offset >>> 0) !== offset) checkInputOffset(offset, "reply header");
  const avail = bytes.length - offset;
  if (avail < 4) return avail - SIMPLE_LENGTH;
  const dv = inView.of(bytes);
  const p = inView.base + offset;
  const magic = dv.getUint32(p);
  if (magic === Magic.SIMPLE_REPLY) {
    if (avail < SIMPLE_LENGTH) return avail - SIMPLE_LENGTH;
    out.style = "simple";
    out.error = dv.getUint32(p + 4);
    out.flags = 0;
    out.chunkType = 0;
    out.cookieHi = dv.getUint32(p + 8);
    out.cookieLo = dv.getUint32(p + 12);
    out.offsetHi = 0;
    out.offsetLo = 0;
    out.lengthHi = 0;
    out.lengthLo = 0;
    return SIMPLE_LENGTH;
  }
  let extended: boolean;
  if (magic === Magic.STRUCTURED_REPLY) extended = false;
  else if (magic === Magic.EXTENDED_REPLY) extended = true;
  else {
    return fail(
      "bad-magic",
      offset,
      "magic",
      `Cannot decode reply header: magic is ${hex32(magic)}, expected 0x67446698, 0x668e33ef or 0x6e8a278c`,
    );
  }
  const hl = extended ? EXTENDED_LENGTH : STRUCTURED_LENGTH;
  if (avail < hl) return avail - hl;
  out.style = extended ? "extended" : "structured";
  out.error = 0;
  out.flags = dv.getUint16(p + 4);
  out.chunkType = dv.getUint16(p + 6);
  out.cookieHi = dv.getUint32(p + 8);
  out.cookieLo = dv.getUint32(p + 12);
  if (extended) {
    out.offsetHi = dv.getUint32(p + 16);
    out.offsetLo = dv.getUint32(p + 20);
    out.lengthHi = dv.getUint32(p + 24);
    out.lengthLo = dv.getUint32(p + 28);
  } else {
    out.offsetHi = 0;
    out.offsetLo = 0;
    out.lengthHi = 0;
    out.lengthLo = dv.getUint32(p + 16);
  }
  return hl;
}

function checkHalf(v: number, what: string): void {
  if (typeof v !== "number" || (v >>> 0) !== v) checkU32(v, what);
}

/**
 * Allocation-free header encoding: writes the simple reply or chunk header described by `fields` (16, 20 or
 * 32 bytes) into `target` at `offset` and returns its length. The payload is the caller's to send.
 *
 * @example
 * ```ts
 * import { createReplyHeaderFields, encodeReplyHeaderInto } from "@nbd/codec";
 * const f = createReplyHeaderFields();
 * f.cookieLo = 9;
 * const buf = new Uint8Array(16);
 * console.log(encodeReplyHeaderInto(buf, 0, f), buf[15]); // 16 9
 * ```
 */
export function encodeReplyHeaderInto(target: Uint8Array, offset: number, fields: ReplyHeaderFields): number {
  const style = fields.style;
  checkHalf(fields.cookieHi, "reply cookie (high half)");
  checkHalf(fields.cookieLo, "reply cookie (low half)");
  if (style === "simple") {
    checkHalf(fields.error, "simple reply error");
    checkTarget(target, offset, SIMPLE_LENGTH, "simple reply");
    put32(target, offset, Magic.SIMPLE_REPLY);
    put32(target, offset + 4, fields.error);
    put32(target, offset + 8, fields.cookieHi);
    put32(target, offset + 12, fields.cookieLo);
    return SIMPLE_LENGTH;
  }
  if (style !== "structured" && style !== "extended") {
    throw new TypeError(
      `Cannot encode reply header: style ${String(style)} is not simple, structured or extended`,
    );
  }
  if ((fields.flags & 0xffff) !== fields.flags) checkU16(fields.flags, "reply chunk flags");
  if ((fields.chunkType & 0xffff) !== fields.chunkType) checkU16(fields.chunkType, "reply chunk type");
  checkHalf(fields.lengthHi, "reply chunk length (high half)");
  checkHalf(fields.lengthLo, "reply chunk length (low half)");
  const extended = style === "extended";
  if (extended) {
    checkHalf(fields.offsetHi, "reply chunk offset (high half)");
    checkHalf(fields.offsetLo, "reply chunk offset (low half)");
  } else if (fields.lengthHi !== 0) {
    throw new RangeError(
      "Cannot encode reply header: a structured chunk's length is 32 bits (lengthHi must be 0)",
    );
  }
  const hl = extended ? EXTENDED_LENGTH : STRUCTURED_LENGTH;
  checkTarget(target, offset, hl, "reply chunk");
  put32(target, offset, extended ? Magic.EXTENDED_REPLY : Magic.STRUCTURED_REPLY);
  put16(target, offset + 4, fields.flags);
  put16(target, offset + 6, fields.chunkType);
  put32(target, offset + 8, fields.cookieHi);
  put32(target, offset + 12, fields.cookieLo);
  if (extended) {
    put32(target, offset + 16, fields.offsetHi);
    put32(target, offset + 20, fields.offsetLo);
    put32(target, offset + 24, fields.lengthHi);
    put32(target, offset + 28, fields.lengthLo);
  } else put32(target, offset + 16, fields.lengthLo);
  return hl;
}

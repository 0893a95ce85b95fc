// Hand-written references the codec is measured against, written for this benchmark only. Each does the
// same work as the codec call it is paired with (same input, same output shape, same spec checks), the way a
// careful engineer would write it by hand with a DataView.
import { Buffer } from "node:buffer";

const REQUEST_MAGIC = 0x25609513;
const EXTENDED_REQUEST_MAGIC = 0x21e41c71;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
const EXTENDED_REPLY_MAGIC = 0x6e8a278c;
const TWO32 = 0x1_0000_0000;
const PAYLOAD_LEN = 1 << 5;
const KNOWN_COMMAND_FLAGS = 0x3f;
/** Flags valid per command: READ, WRITE, DISC, FLUSH, TRIM, CACHE, WRITE_ZEROES, BLOCK_STATUS, RESIZE. */
const VALID_FLAGS = [0x05, 0x21, 0x01, 0x01, 0x01, 0x01, 0x13, 0x29, 0x01];
const EMPTY: readonly never[] = Object.freeze([]);

// One-entry DataView cache: a connection decodes many frames from the same receive buffer.
let lastBytes: Uint8Array | undefined;
let lastView: DataView = new DataView(new ArrayBuffer(0));
function viewOf(b: Uint8Array): DataView {
  if (b !== lastBytes) {
    lastView = new DataView(b.buffer, b.byteOffset, b.byteLength);
    lastBytes = b;
  }
  return lastView;
}

function refFail(what: string): never {
  throw new Error(`reference decoder: ${what}`);
}

/** Storage the zero-allocation references fill (same fields as the codec's `RequestHeaderFields`). */
export interface RefRequestFields {
  extended: boolean;
  flags: number;
  command: number;
  cookieHi: number;
  cookieLo: number;
  offsetHi: number;
  offsetLo: number;
  lengthHi: number;
  lengthLo: number;
  payloadLength: number;
}

/** Reference for `decodeRequestHeaderInto`: DataView reads into caller storage, no allocation. */
export function refDecodeRequestInto(bytes: Uint8Array, offset: number, out: RefRequestFields): number {
  const avail = bytes.length - offset;
  if (avail < 4) return avail - 28;
  const dv = viewOf(bytes);
  const magic = dv.getUint32(offset);
  const extended = magic === EXTENDED_REQUEST_MAGIC;
  if (!extended && magic !== REQUEST_MAGIC) refFail("bad magic");
  const len = extended ? 32 : 28;
  if (avail < len) return avail - len;
  const flags = dv.getUint16(offset + 4);
  const command = dv.getUint16(offset + 6);
  out.extended = extended;
  out.flags = flags;
  out.command = command;
  out.cookieHi = dv.getUint32(offset + 8);
  out.cookieLo = dv.getUint32(offset + 12);
  out.offsetHi = dv.getUint32(offset + 16);
  out.offsetLo = dv.getUint32(offset + 20);
  if (extended) {
    out.lengthHi = dv.getUint32(offset + 24);
    out.lengthLo = dv.getUint32(offset + 28);
  } else {
    out.lengthHi = 0;
    out.lengthLo = dv.getUint32(offset + 24);
  }
  out.payloadLength = command === 1 || (extended && (flags & PAYLOAD_LEN) !== 0)
    ? out.lengthHi * TWO32 + out.lengthLo
    : 0;
  return len;
}

/** Reference for `encodeRequestHeaderInto`: range checks, then DataView writes at an offset. */
export function refEncodeRequestInto(target: Uint8Array, offset: number, f: RefRequestFields): number {
  const len = f.extended ? 32 : 28;
  if ((f.flags & 0xffff) !== f.flags || (f.command & 0xffff) !== f.command) refFail("u16 out of range");
  if (
    (f.cookieHi >>> 0) !== f.cookieHi || (f.cookieLo >>> 0) !== f.cookieLo ||
    (f.offsetHi >>> 0) !== f.offsetHi ||
    (f.offsetLo >>> 0) !== f.offsetLo || (f.lengthHi >>> 0) !== f.lengthHi ||
    (f.lengthLo >>> 0) !== f.lengthLo
  ) refFail("u32 out of range");
  if (offset < 0 || offset + len > target.length) refFail("does not fit");
  const dv = viewOf(target);
  dv.setUint32(offset, f.extended ? EXTENDED_REQUEST_MAGIC : REQUEST_MAGIC);
  dv.setUint16(offset + 4, f.flags);
  dv.setUint16(offset + 6, f.command);
  dv.setUint32(offset + 8, f.cookieHi);
  dv.setUint32(offset + 12, f.cookieLo);
  dv.setUint32(offset + 16, f.offsetHi);
  dv.setUint32(offset + 20, f.offsetLo);
  if (f.extended) {
    dv.setUint32(offset + 24, f.lengthHi);
    dv.setUint32(offset + 28, f.lengthLo);
  } else dv.setUint32(offset + 24, f.lengthLo);
  return len;
}

/**
 * The baseline the issue names: a fresh `Buffer.alloc(28)` per request, filled with `writeUInt32BE` and
 * `writeBigUInt64BE`, as `@vates/nbd-client` does (written here from that description, not copied).
 */
export function bufferAllocEncodeRequest(
  flags: number,
  command: number,
  cookie: bigint,
  offset: bigint,
  length: number,
): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(command, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeBigUInt64BE(offset, 16);
  b.writeUInt32BE(length, 24);
  return b;
}

/** Frame shape of the object API (same keys, same order as the codec's `Request`). */
export interface RefRequest {
  readonly type: "request";
  readonly extended: boolean;
  readonly flags: number;
  readonly command: number;
  readonly cookie: bigint;
  readonly offset: bigint;
  readonly length: bigint;
  readonly data?: Uint8Array;
}

/** Decoded result shape (same as the codec's `Decoded<T>` when done). */
export interface RefDecoded<T> {
  readonly done: true;
  readonly frame: T;
  readonly byteLength: number;
  readonly findings: readonly never[];
}

const NEED = { done: false, needed: 0 } as const;

/**
 * Reference for `decodeRequest` (strict mode): magic, header style, reserved and per-command flags,
 * PAYLOAD_LEN rules, DISC/FLUSH zero fields, payload limit, then a fresh frame with bigint fields and the
 * payload as a view.
 */
export function refDecodeRequest(
  bytes: Uint8Array,
  at: number,
  maxPayload: number,
): RefDecoded<RefRequest> | typeof NEED {
  const avail = bytes.length - at;
  if (avail < 28) return NEED;
  const dv = viewOf(bytes);
  const magic = dv.getUint32(at);
  const extended = magic === EXTENDED_REQUEST_MAGIC;
  if (!extended && magic !== REQUEST_MAGIC) refFail("bad magic");
  const hl = extended ? 32 : 28;
  if (avail < hl) return NEED;
  const flags = dv.getUint16(at + 4);
  const command = dv.getUint16(at + 6);
  if ((flags & ~KNOWN_COMMAND_FLAGS) !== 0) refFail("reserved flags");
  if (!extended && (flags & PAYLOAD_LEN) !== 0) refFail("PAYLOAD_LEN in compact");
  const valid = VALID_FLAGS[command];
  if (valid !== undefined && (flags & ~valid) !== 0) refFail("flags not valid for command");
  const lenHi = extended ? dv.getUint32(at + 24) : 0;
  const lenLo = dv.getUint32(at + (extended ? 28 : 24));
  if (extended && command === 1 && (flags & PAYLOAD_LEN) === 0) refFail("extended WRITE without PAYLOAD_LEN");
  if (
    (command === 2 || command === 3) && (dv.getUint32(at + 16) | dv.getUint32(at + 20) | lenHi | lenLo) !== 0
  ) {
    refFail("DISC/FLUSH offset/length");
  }
  if (extended && (flags & PAYLOAD_LEN) !== 0 && (lenHi | lenLo) === 0) refFail("PAYLOAD_LEN with 0");
  const payloadLength = command === 1 || (extended && (flags & PAYLOAD_LEN) !== 0)
    ? lenHi * TWO32 + lenLo
    : 0;
  if (payloadLength > maxPayload) refFail("payload above limit");
  if (avail < hl + payloadLength) return NEED;
  const cookie = dv.getBigUint64(at + 8);
  const offset = dv.getBigUint64(at + 16);
  const length = extended ? dv.getBigUint64(at + 24) : BigInt(lenLo);
  const frame: RefRequest = payloadLength === 0
    ? { type: "request", extended, flags, command, cookie, offset, length }
    : {
      type: "request",
      extended,
      flags,
      command,
      cookie,
      offset,
      length,
      data: bytes.subarray(at + hl, at + hl + payloadLength),
    };
  return { done: true, frame, byteLength: hl + payloadLength, findings: EMPTY };
}

/** Reference for `encodeRequestInto` with a bigint frame: range checks, DataView writes. */
export function refEncodeRequestObjectInto(frame: RefRequest, target: Uint8Array, offset: number): number {
  const ext = frame.extended;
  const len = ext ? 32 : 28;
  if ((frame.flags & 0xffff) !== frame.flags || (frame.command & 0xffff) !== frame.command) refFail("u16");
  if (
    typeof frame.cookie !== "bigint" || typeof frame.offset !== "bigint" || typeof frame.length !== "bigint"
  ) {
    refFail("not a bigint");
  }
  if (
    BigInt.asUintN(64, frame.cookie) !== frame.cookie || BigInt.asUintN(64, frame.offset) !== frame.offset
  ) {
    refFail("u64");
  }
  if (BigInt.asUintN(ext ? 64 : 32, frame.length) !== frame.length) refFail("length");
  if (offset < 0 || offset + len > target.length) refFail("does not fit");
  const dv = viewOf(target);
  dv.setUint32(offset, ext ? EXTENDED_REQUEST_MAGIC : REQUEST_MAGIC);
  dv.setUint16(offset + 4, frame.flags);
  dv.setUint16(offset + 6, frame.command);
  dv.setBigUint64(offset + 8, frame.cookie);
  dv.setBigUint64(offset + 16, frame.offset);
  if (ext) dv.setBigUint64(offset + 24, frame.length);
  else dv.setUint32(offset + 24, Number(frame.length));
  return len;
}

/** Simple reply frame shape (same as the codec's `SimpleReply`). */
export interface RefSimpleReply {
  readonly type: "simple-reply";
  readonly error: number;
  readonly cookie: bigint;
}

/** Reference for `decodeSimpleReply` without read data. */
export function refDecodeSimpleReply(
  bytes: Uint8Array,
  at: number,
): RefDecoded<RefSimpleReply> | typeof NEED {
  if (bytes.length - at < 16) return NEED;
  const dv = viewOf(bytes);
  if (dv.getUint32(at) !== SIMPLE_REPLY_MAGIC) refFail("bad magic");
  return {
    done: true,
    frame: { type: "simple-reply", error: dv.getUint32(at + 4), cookie: dv.getBigUint64(at + 8) },
    byteLength: 16,
    findings: EMPTY,
  };
}

/** Reply chunk frame shape for payload-less chunks (same keys as the codec's `ReplyChunk`). */
export interface RefChunk {
  readonly type: "reply-chunk";
  readonly extended: boolean;
  readonly flags: number;
  readonly chunkType: number;
  readonly cookie: bigint;
  readonly offset?: bigint;
  readonly payload: { readonly kind: "none" };
}

const NONE = Object.freeze({ kind: "none" as const });

/**
 * Reference for `decodeReplyChunk` on header-only chunks (NONE): magic, header length, payload limit,
 * reserved reply flags, NONE rules (DONE set, length 0), then a fresh frame.
 */
export function refDecodeNoneChunk(
  bytes: Uint8Array,
  at: number,
  maxPayload: number,
): RefDecoded<RefChunk> | typeof NEED {
  const avail = bytes.length - at;
  if (avail < 20) return NEED;
  const dv = viewOf(bytes);
  const magic = dv.getUint32(at);
  const extended = magic === EXTENDED_REPLY_MAGIC;
  if (!extended && magic !== STRUCTURED_REPLY_MAGIC) refFail("bad magic");
  const hl = extended ? 32 : 20;
  if (avail < hl) return NEED;
  const flags = dv.getUint16(at + 4);
  const chunkType = dv.getUint16(at + 6);
  const L = extended ? dv.getUint32(at + 24) * TWO32 + dv.getUint32(at + 28) : dv.getUint32(at + 16);
  if (L > maxPayload) refFail("payload above limit");
  if (avail < hl + L) return NEED;
  if ((flags & ~1) !== 0) refFail("reserved reply flags");
  if (chunkType !== 0) refFail("reference handles NONE chunks only");
  if ((flags & 1) === 0 || L !== 0) refFail("NONE without DONE or with payload");
  const cookie = dv.getBigUint64(at + 8);
  const frame: RefChunk = extended
    ? {
      type: "reply-chunk",
      extended,
      flags,
      chunkType,
      cookie,
      offset: dv.getBigUint64(at + 16),
      payload: NONE,
    }
    : { type: "reply-chunk", extended, flags, chunkType, cookie, payload: NONE };
  return { done: true, frame, byteLength: hl + L, findings: EMPTY };
}

const ALLOCATION_LABELS = ["data", "hole", "zero", "hole,zero"];

/**
 * Reference for `toExtents("base:allocation", view, start)` over extended descriptors: the same objects
 * (same keys, same order), read straight from the bytes with a DataView.
 */
export function refAllocationExtents(descriptors: Uint8Array, start: bigint): object[] {
  const dv = new DataView(descriptors.buffer, descriptors.byteOffset, descriptors.byteLength);
  const out: object[] = [];
  let offset = start;
  for (let o = 0; o < descriptors.length; o += 16) {
    const length = dv.getBigUint64(o);
    const status = dv.getBigUint64(o + 8);
    const hi = dv.getUint32(o + 8);
    const lo = dv.getUint32(o + 12);
    const hole = (lo & 1) !== 0;
    const zero = (lo & 2) !== 0;
    out.push(
      hi === 0 && lo < 4
        ? { kind: "base:allocation", status, hole, zero, offset, length, description: ALLOCATION_LABELS[lo] }
        : { kind: "base:allocation", status, hole, zero, offset, length },
    );
    offset += length;
  }
  return out;
}

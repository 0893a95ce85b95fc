/**
 * Transmission-phase requests (client to server): the compact request (28-byte header, magic `0x25609513`)
 * and the extended request (32-byte header, magic `0x21e41c71`, 64-bit length), with the write payload and
 * the block-status payload form of extended headers.
 *
 * Two APIs:
 * - the object API ({@link decodeRequest}, {@link encodeRequest}, ...) with `bigint` 64-bit fields and a
 *   fresh frame per call;
 * - the allocation-free hot path for servers and dissectors ({@link decodeRequestHeaderInto},
 *   {@link encodeRequestHeaderInto}), which reads and writes a caller-owned {@link RequestHeaderFields}
 *   whose 64-bit fields are split into two 32-bit numbers.
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
  hex32,
  ViewCache,
} from "./_bytes.ts";
import { checkLimit, fail, inputOffset, needMore, type Reporter, reporterFor } from "./_report.ts";
import { Command, CommandFlag, Magic } from "./constants.ts";
import { checkHeader, plainRequest } from "./_request_plain.ts";
import type { BlockStatusPayload, Request } from "./_request_frame.ts";
import { type Decoded, type DecodeOptions, DEFAULT_MAX_PAYLOAD_LENGTH } from "./types.ts";
import type { EncoderInput } from "./types.ts";
import { toBig64 } from "./_bytes.ts";

export type { BlockStatusPayload, Request } from "./_request_frame.ts";

/** Header length of a compact request. */
const COMPACT_LENGTH = 28;
/** Header length of an extended request. */
const EXTENDED_LENGTH = 32;
const TWO32 = 0x1_0000_0000;

/** The DataView over the last input of the decoders: see {@link ViewCache}. */
const inView = new ViewCache();

/** The encoders' last target, and a DataView over its buffer from its byteOffset (see targetView). */
let lastTarget: Uint8Array | undefined = undefined;
let lastTargetView: DataView = new DataView(new ArrayBuffer(0));

/**
 * The DataView to write `target` through (index `i` of `target` is index `i` of the view): a one-entry cache
 * keyed by the array itself, whose buffer and byteOffset never change, so a sender encoding every header
 * into its one send buffer builds the view once. The view runs to the end of the buffer (length-tracking for
 * a resizable one): call this only after checking that `target` is a `Uint8Array` and that the bytes
 * written fit in `target.length` (0 for a detached buffer, so no view is built then). Keeps at most the
 * last target alive.
 */
function targetView(target: Uint8Array): DataView {
  if (target !== lastTarget) newTarget(target);
  return lastTargetView;
}

/** The cache miss of {@link targetView}. */
function newTarget(target: Uint8Array): void {
  lastTargetView = new DataView(target.buffer, target.byteOffset);
  lastTarget = target;
}

/**
 * A request header without its payload, as {@link decodeRequestHeader} returns it: stream decoders read
 * `payloadLength` more bytes themselves.
 *
 * @example
 * ```ts
 * import { decodeRequestHeader } from "@nbd/codec";
 * const hex = "25609513" + "0000" + "0001" + "0000000000000001" + "0000000000000000" + "00000200";
 * const r = decodeRequestHeader(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)));
 * if (r.done) console.log(r.frame.payloadLength); // 512
 * ```
 */
export interface RequestHeader extends Omit<Request, "data" | "blockStatus"> {
  /** How many payload bytes follow the header (0 when none). */
  readonly payloadLength: number;
}

/**
 * Options of the request decoders.
 *
 * @example
 * ```ts
 * import { decodeRequest, type RequestDecodeOptions } from "@nbd/codec";
 * const opts: RequestDecodeOptions = { extendedHeaders: true, strict: false };
 * console.log(decodeRequest(new Uint8Array(0), opts).done); // false
 * ```
 */
export interface RequestDecodeOptions extends DecodeOptions {
  /**
   * Whether extended headers were negotiated. When given, a request in the other header style is reported
   * (`unexpected-frame`, rule `request-header-style`): the two styles are never mixed on one connection.
   */
  readonly extendedHeaders?: boolean;
  /**
   * The server's transmission flags, when known: a command or command flag they do not expose (FLUSH,
   * TRIM, WRITE_ZEROES; FUA, DF, FAST_ZERO; BLOCK_STATUS's payload form) is then reported (rules
   * `command-unadvertised`, `command-flag-unadvertised`, `block-status-payload-unadvertised`).
   */
  readonly transmissionFlags?: number;
}

/**
 * Reusable storage for the allocation-free request path: 64-bit fields as `hi`/`lo` u32 numbers
 * (value = `hi * 2 ** 32 + lo`). Create one with {@link createRequestHeaderFields} and reuse it.
 *
 * @example
 * ```ts
 * import { createRequestHeaderFields, type RequestHeaderFields } from "@nbd/codec";
 * const f: RequestHeaderFields = createRequestHeaderFields();
 * f.command = 0;
 * f.lengthLo = 4096;
 * console.log(f.extended, f.lengthLo); // false 4096
 * ```
 */
export interface RequestHeaderFields {
  /** Extended (32-byte) or compact (28-byte) header. */
  extended: boolean;
  /** Command flags (u16). */
  flags: number;
  /** Command type (u16). */
  command: number;
  /** Cookie, high 32 bits. */
  cookieHi: number;
  /** Cookie, low 32 bits. */
  cookieLo: number;
  /** Offset, high 32 bits. */
  offsetHi: number;
  /** Offset, low 32 bits. */
  offsetLo: number;
  /** Length field, high 32 bits (always 0 for compact headers). */
  lengthHi: number;
  /** Length field, low 32 bits. */
  lengthLo: number;
  /**
   * Set by {@link decodeRequestHeaderInto}: payload bytes following the header (0 when none; exact up to
   * 2^53, so compare it with your limit before reading). Ignored by the encoder.
   */
  payloadLength: number;
}

/**
 * A fresh, zeroed {@link RequestHeaderFields} (a compact READ of nothing).
 *
 * @example
 * ```ts
 * import { createRequestHeaderFields } from "@nbd/codec";
 * console.log(createRequestHeaderFields().cookieLo); // 0
 * ```
 */
export function createRequestHeaderFields(): RequestHeaderFields {
  return {
    extended: false,
    flags: 0,
    command: 0,
    cookieHi: 0,
    cookieLo: 0,
    offsetHi: 0,
    offsetLo: 0,
    lengthHi: 0,
    lengthLo: 0,
    payloadLength: 0,
  };
}

function hasPayload(extended: boolean, flags: number, command: number): boolean {
  // qemu 10's client sends extended WRITE without PAYLOAD_LEN: the payload is there regardless.
  return command === Command.WRITE || (extended && (flags & CommandFlag.PAYLOAD_LEN) !== 0);
}

function badMagic(at: number, magic: number): never {
  return fail(
    "bad-magic",
    at,
    "magic",
    `Cannot decode request: magic is ${hex32(magic)}, expected 0x25609513 (compact) or 0x21e41c71 (extended)`,
  );
}

/**
 * Allocation-free header decoding: reads the request header at `offset` into `out`. Returns the header
 * length (28 or 32) when the header is complete, or `-n` when at least `n` more bytes are needed. Only the
 * magic is checked (an {@link NbdDecodeError} with code `bad-magic` is thrown otherwise); run
 * {@link decodeRequest} when you need the spec checks and findings. No `bigint`, no allocation. `offset` must
 * be a non-negative integer (a `RangeError` otherwise).
 *
 * @example
 * ```ts
 * import { createRequestHeaderFields, decodeRequestHeaderInto } from "@nbd/codec";
 * const hex = "25609513" + "0000" + "0000" + "0000000000000001" + "0000000000000000" + "00001000";
 * const bytes = Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16));
 * const f = createRequestHeaderFields();
 * const n = decodeRequestHeaderInto(bytes, 0, f);
 * console.log(n, f.command, f.cookieLo, f.lengthLo, f.payloadLength); // 28 0 1 4096 0
 * ```
 */
export function decodeRequestHeaderInto(bytes: Uint8Array, offset: number, out: RequestHeaderFields): number {
  if ((offset >>> 0) !== offset) checkInputOffset(offset, "request header");
  const avail = bytes.length - offset;
  if (avail < 4) return avail - COMPACT_LENGTH;
  const dv = inView.of(bytes);
  const p = inView.base + offset;
  const magic = dv.getUint32(p);
  let extended: boolean;
  if (magic === Magic.REQUEST) extended = false;
  else if (magic === Magic.EXTENDED_REQUEST) extended = true;
  else return badMagic(offset, magic);
  const len = extended ? EXTENDED_LENGTH : COMPACT_LENGTH;
  if (avail < len) return avail - len;
  const flags = dv.getUint16(p + 4);
  const command = dv.getUint16(p + 6);
  out.extended = extended;
  out.flags = flags;
  out.command = command;
  out.cookieHi = dv.getUint32(p + 8);
  out.cookieLo = dv.getUint32(p + 12);
  out.offsetHi = dv.getUint32(p + 16);
  out.offsetLo = dv.getUint32(p + 20);
  let lengthHi = 0;
  let lengthLo: number;
  if (extended) {
    lengthHi = dv.getUint32(p + 24);
    lengthLo = dv.getUint32(p + 28);
  } else {
    lengthLo = dv.getUint32(p + 24);
  }
  out.lengthHi = lengthHi;
  out.lengthLo = lengthLo;
  out.payloadLength = hasPayload(extended, flags, command) ? lengthHi * TWO32 + lengthLo : 0;
  return len;
}

function checkHalf(v: number, what: string): void {
  if (typeof v !== "number" || (v >>> 0) !== v) checkU32(v, what);
}

/** `v` is a number in 0..65535 (the fast check; {@link checkU16} throws the error otherwise). */
function isU16(v: number): boolean {
  return typeof v === "number" && (v & 0xffff) === v;
}

/**
 * The fast check of {@link encodeRequestHeaderInto}: every field is a number in range (u16 flags and
 * command, u32 halves). Kept apart so that encodeRequestHeaderInto stays small enough to be inlined.
 */
function validHeaderFields(f: RequestHeaderFields): boolean {
  const flags = f.flags;
  const command = f.command;
  const cookieHi = f.cookieHi;
  const cookieLo = f.cookieLo;
  const offsetHi = f.offsetHi;
  const offsetLo = f.offsetLo;
  const lengthHi = f.lengthHi;
  const lengthLo = f.lengthLo;
  // typeof first: a bigint would make the conversions throw another error than checkHeaderFields's.
  return typeof flags === "number" && typeof command === "number" && typeof cookieHi === "number" &&
    typeof cookieLo === "number" && typeof offsetHi === "number" && typeof offsetLo === "number" &&
    typeof lengthHi === "number" && typeof lengthLo === "number" && (flags & 0xffff) === flags &&
    (command & 0xffff) === command && (cookieHi >>> 0) === cookieHi && (cookieLo >>> 0) === cookieLo &&
    (offsetHi >>> 0) === offsetHi && (offsetLo >>> 0) === offsetLo && (lengthHi >>> 0) === lengthHi &&
    (lengthLo >>> 0) === lengthLo;
}

/** The checks of {@link encodeRequestHeaderInto}, in order, for the call whose fast check failed: throws. */
function checkHeaderFields(fields: RequestHeaderFields): void {
  if (!isU16(fields.flags)) checkU16(fields.flags, "request flags");
  if (!isU16(fields.command)) checkU16(fields.command, "request command");
  checkHalf(fields.cookieHi, "request cookie (high half)");
  checkHalf(fields.cookieLo, "request cookie (low half)");
  checkHalf(fields.offsetHi, "request offset (high half)");
  checkHalf(fields.offsetLo, "request offset (low half)");
  checkHalf(fields.lengthHi, "request length (high half)");
  checkHalf(fields.lengthLo, "request length (low half)");
}

/**
 * Allocation-free header encoding: writes the header described by `fields` (28 or 32 bytes) into `target`
 * at `offset` and returns its length. The payload (write data) is the caller's to send. Throws
 * `TypeError`/`RangeError` for fields out of range or a target too short. No `bigint`, no allocation.
 *
 * @example
 * ```ts
 * import { Command, createRequestHeaderFields, encodeRequestHeaderInto } from "@nbd/codec";
 * const f = createRequestHeaderFields();
 * f.command = Command.READ;
 * f.cookieLo = 1;
 * f.lengthLo = 4096;
 * const buf = new Uint8Array(28);
 * console.log(encodeRequestHeaderInto(buf, 0, f), buf[26]); // 28 16
 * ```
 */
export function encodeRequestHeaderInto(
  target: Uint8Array,
  offset: number,
  fields: RequestHeaderFields,
): number {
  const extended = fields.extended === true;
  const len = extended ? EXTENDED_LENGTH : COMPACT_LENGTH;
  if (!validHeaderFields(fields)) checkHeaderFields(fields);
  if (!extended && fields.lengthHi !== 0) {
    throw new RangeError("Cannot encode request: a compact request's length is 32 bits (lengthHi must be 0)");
  }
  // instanceof only for a new target (the cached one passed it).
  if (
    (target !== lastTarget && !(target instanceof Uint8Array)) || (offset >>> 0) !== offset ||
    offset + len > target.length
  ) {
    checkTarget(target, offset, len, "request");
  }
  // targetView(), written out: encodeRequestHeaderInto stays small enough to be inlined into its caller.
  if (target !== lastTarget) newTarget(target);
  const dv = lastTargetView;
  dv.setUint32(offset, extended ? Magic.EXTENDED_REQUEST : Magic.REQUEST);
  dv.setUint32(offset + 4, (fields.flags << 16) | fields.command); // flags, then command
  dv.setUint32(offset + 8, fields.cookieHi);
  dv.setUint32(offset + 12, fields.cookieLo);
  dv.setUint32(offset + 16, fields.offsetHi);
  dv.setUint32(offset + 20, fields.offsetLo);
  if (extended) {
    dv.setUint32(offset + 24, fields.lengthHi);
    dv.setUint32(offset + 28, fields.lengthLo);
  } else {
    dv.setUint32(offset + 24, fields.lengthLo);
  }
  return len;
}

/**
 * Magic and header completeness, the shared first step of the object decoders: the header length (28 or
 * 32), or minus the number of bytes still needed. Throws `bad-magic`.
 */
function headerLength(bytes: Uint8Array, at: number): number {
  const avail = bytes.length - at;
  if (avail < 4) return avail - COMPACT_LENGTH;
  const dv = inView.of(bytes);
  const magic = dv.getUint32(inView.base + at);
  let headerLength: number;
  if (magic === Magic.REQUEST) headerLength = COMPACT_LENGTH;
  else if (magic === Magic.EXTENDED_REQUEST) headerLength = EXTENDED_LENGTH;
  else badMagic(at, magic);
  return avail < headerLength ? avail - headerLength : headerLength;
}

/** How many payload bytes follow the header, checked against the payload limit (an error in both modes). */
function payloadLengthOf(
  dv: DataView,
  p: number,
  at: number,
  extended: boolean,
  flags: number,
  command: number,
  options: RequestDecodeOptions | undefined,
): number {
  if (!hasPayload(extended, flags, command)) return 0;
  const payloadLength = extended ? dv.getUint32(p + 24) * TWO32 + dv.getUint32(p + 28) : dv.getUint32(p + 24);
  checkLimit(
    payloadLength,
    options?.maxPayloadLength ?? DEFAULT_MAX_PAYLOAD_LENGTH,
    at + 24,
    "request payload",
  );
  return payloadLength;
}

/**
 * Decodes a request header without its payload; `frame.payloadLength` says how many payload bytes follow
 * (checked against `maxPayloadLength` first). Findings cover the header rules; the payload rules (the
 * block-status payload form) are checked by {@link decodeRequest}.
 *
 * @example
 * ```ts
 * import { decodeRequestHeader } from "@nbd/codec";
 * const hex = "21e41c71" + "0020" + "0001" + "0000000000000002" + "0000000000000000" + "0000000000000200";
 * const r = decodeRequestHeader(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)));
 * if (r.done) console.log(r.byteLength, r.frame.payloadLength); // 32 512
 * ```
 */
export function decodeRequestHeader(
  bytes: Uint8Array,
  options?: RequestDecodeOptions,
): Decoded<RequestHeader> {
  const at = inputOffset(options, bytes);
  const hl = headerLength(bytes, at);
  if (hl < 0) return needMore(-hl);
  const dv = inView.of(bytes);
  const p = inView.base + at;
  const extended = hl === EXTENDED_LENGTH;
  const flags = dv.getUint16(p + 4);
  const command = dv.getUint16(p + 6);
  const payloadLength = payloadLengthOf(dv, p, at, extended, flags, command, options);
  const r = reporterFor(options);
  // The header rules, always: testing plainHeader() first saved nothing measurable here (bench/request_plain.ts).
  checkHeader(dv, p, at, extended, flags, command, r, options?.extendedHeaders, options?.transmissionFlags);
  return {
    done: true,
    frame: {
      type: "request",
      extended,
      flags,
      command,
      cookie: dv.getBigUint64(p + 8),
      offset: dv.getBigUint64(p + 16),
      length: extended ? dv.getBigUint64(p + 24) : BigInt(dv.getUint32(p + 24)),
      payloadLength,
    },
    byteLength: hl,
    findings: r.list(),
  };
}

/**
 * Decodes a whole request: the header and, for WRITE and for extended requests with
 * `NBD_CMD_FLAG_PAYLOAD_LEN`, the payload that follows (a view of `bytes`, never a copy). The payload
 * length is checked against `maxPayloadLength` before waiting for the bytes.
 *
 * Real peers break some rules and still decode in lenient mode (`strict: false`): qemu 10 sends extended
 * WRITE without PAYLOAD_LEN (rule `write-payload-len`; the payload is taken from the length field).
 *
 * @example
 * ```ts
 * import { decodeRequest } from "@nbd/codec";
 * const hex = "25609513" + "0000" + "0000" + "0000000000000001" + "0000000000000000" + "00001000";
 * const r = decodeRequest(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)));
 * if (r.done) console.log(r.frame.command, r.frame.cookie, r.frame.length); // 0 1n 4096n
 * ```
 */
export function decodeRequest(bytes: Uint8Array, options?: RequestDecodeOptions): Decoded<Request> {
  const at = inputOffset(options, bytes);
  const hl = headerLength(bytes, at);
  if (hl < 0) return needMore(-hl);
  const dv = inView.of(bytes);
  const p = inView.base + at;
  const extended = hl === EXTENDED_LENGTH;
  const flags = dv.getUint16(p + 4);
  const command = dv.getUint16(p + 6);
  const payloadLength = payloadLengthOf(dv, p, at, extended, flags, command, options);
  const total = hl + payloadLength;
  const avail = bytes.length - at;
  if (avail < total) return needMore(total - avail);
  const r = reporterFor(options);
  // The header rules, always: testing plainHeader() first saved nothing measurable here (bench/request_plain.ts).
  checkHeader(dv, p, at, extended, flags, command, r, options?.extendedHeaders, options?.transmissionFlags);
  const cookie = dv.getBigUint64(p + 8);
  const offset = dv.getBigUint64(p + 16);
  const length = extended ? dv.getBigUint64(p + 24) : BigInt(dv.getUint32(p + 24));
  const frame: Request = payloadLength === 0 && !hasPayload(extended, flags, command)
    ? plainRequest(extended, flags, command, cookie, offset, length, undefined)
    : requestWithPayload(
      bytes,
      dv,
      p,
      at,
      hl,
      payloadLength,
      extended,
      flags,
      command,
      cookie,
      offset,
      length,
      r,
    );
  return { done: true, frame, byteLength: total, findings: r.list() };
}

/**
 * A request with its payload (`payloadLength` bytes after the header: a view of `bytes`), as data or as the
 * block-status payload form. Kept out of decodeRequest so that it stays small enough to be inlined.
 */
function requestWithPayload(
  bytes: Uint8Array,
  dv: DataView,
  p: number,
  at: number,
  hl: number,
  payloadLength: number,
  extended: boolean,
  flags: number,
  command: number,
  cookie: bigint,
  offset: bigint,
  length: bigint,
  r: Reporter,
): Request {
  const start = at + hl;
  const payload = bytes.subarray(start, start + payloadLength);
  if (command === Command.BLOCK_STATUS && (flags & CommandFlag.PAYLOAD_LEN) !== 0 && payloadLength > 0) {
    const blockStatus = decodeBlockStatusPayload(dv, p + hl, payloadLength, start, r);
    if (blockStatus !== undefined) {
      return { type: "request", extended, flags, command, cookie, offset, length, blockStatus };
    }
  }
  return plainRequest(extended, flags, command, cookie, offset, length, payload);
}

/** The block-status payload form: `length` bytes at `q` in `dv`, at index `start` of the input. */
function decodeBlockStatusPayload(
  dv: DataView,
  q: number,
  length: number,
  start: number,
  r: Reporter,
): BlockStatusPayload | undefined {
  if (length < 12 || (length - 8) % 4 !== 0) {
    r.report(
      "bad-length",
      start,
      "block-status-payload-length",
      `block-status payload of ${length} bytes; it MUST occupy 8 + 4n bytes with n >= 1 context ids`,
    );
    return undefined;
  }
  const n = (length - 8) / 4;
  const contextIds: number[] = new Array<number>(n);
  for (let i = 0; i < n; i++) contextIds[i] = dv.getUint32(q + 8 + 4 * i);
  if (n > 1) {
    const seen = new Set<number>();
    for (let i = 0; i < n; i++) {
      const id = contextIds[i]!;
      if (seen.has(id)) {
        r.report(
          "duplicate",
          start + 8 + 4 * i,
          "block-status-payload-duplicate",
          `metadata context id ${id} appears twice in the block-status payload; the server MUST then fail`,
        );
        break;
      }
      seen.add(id);
    }
  }
  return { effectLength: dv.getBigUint64(q), contextIds };
}

/**
 * The number of bytes {@link encodeRequest} writes: the header (28 or 32), plus 8 + 4n for the
 * block-status payload form. Write data is not counted: the caller sends it after the header.
 *
 * @example
 * ```ts
 * import { requestByteLength } from "@nbd/codec";
 * console.log(requestByteLength({
 *   type: "request", extended: false, flags: 0, command: 0, cookie: 1n, offset: 0n, length: 512n,
 * })); // 28
 * ```
 */
export function requestByteLength(frame: EncoderInput<Request>): number {
  const header = frame.extended ? EXTENDED_LENGTH : COMPACT_LENGTH;
  return frame.blockStatus === undefined ? header : header + 8 + 4 * frame.blockStatus.contextIds.length;
}

/**
 * Encodes a request into `target` at `offset` and returns the bytes written ({@link requestByteLength}).
 * Writes the header only (plus the small block-status payload form); WRITE data is sent by the caller
 * after it, never concatenated here. `length` must then equal `data.length` (or 8 + 4n for the
 * block-status payload form). Throws `TypeError`/`RangeError` for caller mistakes.
 *
 * @example
 * ```ts
 * import { Command, encodeRequestInto } from "@nbd/codec";
 * const buf = new Uint8Array(64);
 * const n = encodeRequestInto({
 *   type: "request", extended: true, flags: 0, command: Command.TRIM, cookie: 7n, offset: 0n, length: 1n << 40n,
 * }, buf, 0);
 * console.log(n, buf[26]); // 32 1
 * ```
 */
export function encodeRequestInto(frame: EncoderInput<Request>, target: Uint8Array, offset: number): number {
  if (frame === null || typeof frame !== "object") {
    throw new TypeError("Cannot encode request: not an object");
  }
  const extended = frame.extended === true;
  const flags = frame.flags;
  const command = frame.command;
  if (!isU16(flags)) checkU16(flags, "request flags");
  if (!isU16(command)) checkU16(command, "request command");
  checkU64(frame.cookie, "request cookie");
  checkU64(frame.offset, "request offset");
  checkU64(frame.length, "request length");
  if (!extended && frame.length > 0xffff_ffffn) {
    throw new RangeError(
      `Cannot encode request: length ${frame.length} does not fit a compact request's 32 bits`,
    );
  }
  if (frame.data !== undefined) {
    checkBytes(frame.data, "request data");
    if (frame.data.length !== Number(frame.length)) {
      throw new RangeError(
        `Cannot encode request: length ${frame.length} differs from the ${frame.data.length} bytes of data`,
      );
    }
  }
  const bs = frame.blockStatus;
  if (bs !== undefined) {
    checkU64(bs.effectLength, "block-status effect length");
    if (!Array.isArray(bs.contextIds)) {
      throw new TypeError("Cannot encode request: contextIds is not an array");
    }
    for (const id of bs.contextIds) checkU32(id, "metadata context id");
    if (Number(frame.length) !== 8 + 4 * bs.contextIds.length) {
      throw new RangeError(
        `Cannot encode request: length ${frame.length} differs from the block-status payload's ${
          8 + 4 * bs.contextIds.length
        } bytes`,
      );
    }
  }
  const hl = extended ? EXTENDED_LENGTH : COMPACT_LENGTH;
  const len = bs === undefined ? hl : hl + 8 + 4 * bs.contextIds.length;
  if (
    (target !== lastTarget && !(target instanceof Uint8Array)) || (offset >>> 0) !== offset ||
    offset + len > target.length
  ) {
    checkTarget(target, offset, len, "request");
  }
  const dv = targetView(target);
  const p = offset;
  dv.setUint32(p, extended ? Magic.EXTENDED_REQUEST : Magic.REQUEST);
  dv.setUint32(p + 4, (flags << 16) | command); // flags, then command
  dv.setBigUint64(p + 8, toBig64(frame.cookie));
  dv.setBigUint64(p + 16, toBig64(frame.offset));
  if (extended) dv.setBigUint64(p + 24, toBig64(frame.length));
  else dv.setUint32(p + 24, Number(frame.length));
  if (bs !== undefined) {
    const q = p + hl;
    dv.setBigUint64(q, toBig64(bs.effectLength));
    for (let i = 0; i < bs.contextIds.length; i++) dv.setUint32(q + 8 + 4 * i, bs.contextIds[i]!);
  }
  return len;
}

/**
 * Encodes a request into a new array: the header (plus the block-status payload form). Send WRITE data
 * after it yourself.
 *
 * @example
 * ```ts
 * import { Command, CommandFlag, encodeRequest } from "@nbd/codec";
 * const data = new Uint8Array(512);
 * const header = encodeRequest({
 *   type: "request", extended: true, flags: CommandFlag.PAYLOAD_LEN, command: Command.WRITE,
 *   cookie: 2n, offset: 0n, length: 512n, data,
 * });
 * console.log(header.length); // 32
 * ```
 */
export function encodeRequest(frame: EncoderInput<Request>): Uint8Array {
  const out = new Uint8Array(requestByteLength(frame));
  encodeRequestInto(frame, out, 0);
  return out;
}

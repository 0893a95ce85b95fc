/**
 * Option requests, sent by the client during fixed newstyle negotiation: the 16-byte `IHAVEOPT` header
 * (magic, option, data length) and typed data for every `NBD_OPT_*` the spec defines.
 *
 * @module
 */
import {
  checkTarget,
  checkU16,
  checkU32,
  hex8,
  put16,
  put32,
  rawLength,
  readStringChecked as str,
  stringLength,
  u16,
  u32,
  writeString,
} from "./_bytes.ts";
import { checkLimit, fail, needMore, Reporter, resolveOptions } from "./_report.ts";
import { Magic, nameOf, Option } from "./constants.ts";
import type { Decoded, DecodeOptions } from "./types.ts";

/** Length of the option request header: magic, option, data length. */
const HEADER = 16;
const MAGIC_HI = Number(Magic.IHAVEOPT >> 32n);
const MAGIC_LO = Number(Magic.IHAVEOPT & 0xffff_ffffn);
const NONE: OptionData = Object.freeze({ kind: "none" });

/**
 * An option request: `IHAVEOPT`, the option code, the data length and the data. The data length is not
 * stored: it follows from `data`.
 *
 * @example
 * ```ts
 * import { Info, Option, type OptionRequest } from "@nbd/codec";
 * const go: OptionRequest = {
 *   type: "option-request",
 *   option: Option.GO,
 *   data: { kind: "info-request", name: "", info: [Info.BLOCK_SIZE] },
 * };
 * console.log(go.option); // 7
 * ```
 */
export interface OptionRequest {
  /** Frame tag. */
  readonly type: "option-request";
  /** The option code (`Option`), any 32-bit value. */
  readonly option: number;
  /** The option's data, typed by option. */
  readonly data: OptionData;
}

/**
 * The data of an option request, by option:
 *
 * - `none`: no data (L = 0) on ABORT, LIST, PEEK_EXPORT (withdrawn), STARTTLS, STRUCTURED_REPLY and
 *   EXTENDED_HEADERS.
 * - `export-name`: EXPORT_NAME; the whole data is the name (empty: the default export).
 * - `info-request`: INFO and GO; the export name and the info types requested (`Info`).
 * - `meta-context-query`: LIST_META_CONTEXT and SET_META_CONTEXT; the export name and the queries.
 * - `raw`: the data as bytes (a view of the input): unknown options, data on options that take none, and, in
 *   lenient mode, data of a known option that is malformed (a finding says why).
 *
 * @example
 * ```ts
 * import type { OptionData } from "@nbd/codec";
 * const d: OptionData = { kind: "meta-context-query", name: "disk", queries: ["base:allocation"] };
 * console.log(d.kind); // "meta-context-query"
 * ```
 */
export type OptionData =
  | { readonly kind: "none" }
  | { readonly kind: "export-name"; readonly name: string }
  | { readonly kind: "info-request"; readonly name: string; readonly info: readonly number[] }
  | { readonly kind: "meta-context-query"; readonly name: string; readonly queries: readonly string[] }
  | { readonly kind: "raw"; readonly raw: Uint8Array };

function optionName(option: number): string {
  return nameOf("option", option) ?? `option ${option}`;
}

/** Raw data: a view of the input, never a copy. */
function raw(b: Uint8Array, start: number, end: number): OptionData {
  return { kind: "raw", raw: b.subarray(start, end) };
}

/**
 * Decoding options for an option request.
 *
 * @example
 * ```ts
 * import type { OptionRequestDecodeOptions } from "@nbd/codec";
 * const o: OptionRequestDecodeOptions = { negotiated: { structuredReplies: true, extendedHeaders: false } };
 * console.log(o.negotiated?.structuredReplies); // true
 * ```
 */
export interface OptionRequestDecodeOptions extends DecodeOptions {
  /**
   * What the option haggling negotiated before this option, when known: an option that needs (or forbids)
   * a negotiation is then reported (rules `export-name-after-extended-headers`,
   * `set-meta-context-unnegotiated`, `list-meta-context-unnegotiated`).
   */
  readonly negotiated?: { readonly structuredReplies: boolean; readonly extendedHeaders: boolean };
}

/** The options that need, or are forbidden by, an earlier negotiation. */
function checkNegotiated(
  option: number,
  at: number,
  r: Reporter,
  n: { readonly structuredReplies: boolean; readonly extendedHeaders: boolean },
): void {
  if (option === Option.EXPORT_NAME && n.extendedHeaders) {
    r.report(
      "unexpected-frame",
      at + 8,
      "export-name-after-extended-headers",
      "NBD_OPT_EXPORT_NAME after extended headers were negotiated; the client MUST NOT use it then",
    );
  } else if (option === Option.SET_META_CONTEXT && !n.structuredReplies && !n.extendedHeaders) {
    r.report(
      "unexpected-frame",
      at + 8,
      "set-meta-context-unnegotiated",
      "NBD_OPT_SET_META_CONTEXT before structured replies or extended headers were negotiated; it MUST NOT be",
    );
  } else if (option === Option.LIST_META_CONTEXT && !n.structuredReplies && !n.extendedHeaders) {
    r.report(
      "unexpected-frame",
      at + 8,
      "list-meta-context-unnegotiated",
      "NBD_OPT_LIST_META_CONTEXT before structured replies or extended headers were negotiated; it SHOULD NOT be",
    );
  }
}

/**
 * Decodes an option request. The data length is checked against `maxPayloadLength` before waiting for the
 * data. Unknown options (and the withdrawn `NBD_OPT_PEEK_EXPORT` when it carries data) are kept with their
 * raw data; a server answers them with `NBD_REP_ERR_UNSUP`, so they are not a violation.
 *
 * Rules reported (thrown in strict mode; all in `RULES`): `option-no-data` (data on LIST, STARTTLS,
 * STRUCTURED_REPLY or EXTENDED_HEADERS; ABORT's data is tolerated), `option-info-length`,
 * `option-info-name-length`, `option-info-duplicate`, `option-meta-context-length`,
 * `option-meta-context-name-length`, `option-meta-context-query-length`, `meta-context-query-namespace`, the
 * string rules, and given `negotiated`: `export-name-after-extended-headers`, `set-meta-context-unnegotiated`,
 * `list-meta-context-unnegotiated`.
 *
 * @example
 * ```ts
 * import { decodeOptionRequest } from "@nbd/codec";
 * const hex = "49484156454f5054" + "00000007" + "00000008" + "00000000" + "0001" + "0003";
 * const r = decodeOptionRequest(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)));
 * if (r.done && r.frame.data.kind === "info-request") console.log(r.frame.data.info); // [ 3 ]
 * ```
 */
export function decodeOptionRequest(
  bytes: Uint8Array,
  options?: OptionRequestDecodeOptions,
): Decoded<OptionRequest> {
  const o = resolveOptions(options, bytes);
  const at = o.offset;
  const avail = bytes.length - at;
  if (avail < HEADER) return needMore(HEADER - avail);
  const hi = u32(bytes, at);
  const lo = u32(bytes, at + 4);
  if (hi !== MAGIC_HI || lo !== MAGIC_LO) {
    fail(
      "bad-magic",
      at,
      "magic",
      `Cannot decode option request: magic is 0x${hex8(hi)}${
        hex8(lo)
      }, expected 0x49484156454f5054 (IHAVEOPT)`,
    );
  }
  const option = u32(bytes, at + 8);
  const length = u32(bytes, at + 12);
  checkLimit(length, o.maxPayloadLength, at + 12, "option request");
  if (avail < HEADER + length) return needMore(HEADER + length - avail);
  const r = new Reporter(o.strict);
  const negotiated = options?.negotiated;
  if (negotiated !== undefined) checkNegotiated(option, at, r, negotiated);
  const data = decodeData(bytes, at, option, length, r, o.maxStringLength);
  return {
    done: true,
    frame: { type: "option-request", option, data },
    byteLength: HEADER + length,
    findings: r.list(),
  };
}

function decodeData(
  b: Uint8Array,
  at: number,
  option: number,
  len: number,
  r: Reporter,
  max: number,
): OptionData {
  const start = at + HEADER;
  const end = start + len;
  switch (option) {
    case Option.EXPORT_NAME: {
      const name = str(b, start, end, r, max, "NBD_OPT_EXPORT_NAME export name");
      return name === undefined ? raw(b, start, end) : { kind: "export-name", name };
    }
    case Option.ABORT:
    case Option.PEEK_EXPORT:
      // ABORT: the client SHOULD NOT send data and the server SHOULD ignore it. PEEK_EXPORT is withdrawn
      // and now answered as unknown, so its data is not a violation either.
      return len === 0 ? NONE : raw(b, start, end);
    case Option.LIST:
    case Option.STARTTLS:
    case Option.STRUCTURED_REPLY:
    case Option.EXTENDED_HEADERS:
      if (len === 0) return NONE;
      r.report(
        "bad-length",
        at + 12,
        "option-no-data",
        `${
          optionName(option)
        } carries ${len} bytes of data; it takes none (the server answers NBD_REP_ERR_INVALID)`,
      );
      return raw(b, start, end);
    case Option.INFO:
    case Option.GO:
      return decodeInfoRequest(b, at, option, len, r, max);
    case Option.LIST_META_CONTEXT:
    case Option.SET_META_CONTEXT:
      return decodeMetaContextQuery(b, at, option, len, r, max);
    default:
      return raw(b, start, end);
  }
}

function decodeInfoRequest(
  b: Uint8Array,
  at: number,
  option: number,
  len: number,
  r: Reporter,
  max: number,
): OptionData {
  const start = at + HEADER;
  const end = start + len;
  const what = optionName(option);
  if (len < 6) {
    r.report(
      "bad-length",
      at + 12,
      "option-info-length",
      `${what} data is ${len} bytes; it needs at least 6 (name length and request count)`,
    );
    return raw(b, start, end);
  }
  const n = u32(b, start);
  if (n > len - 6) {
    r.report(
      "bad-length",
      start,
      "option-info-name-length",
      `${what} export name length ${n} exceeds the option length ${len} minus 6; it MUST NOT`,
    );
    return raw(b, start, end);
  }
  const k = u16(b, start + 4 + n);
  if (len !== 6 + n + 2 * k) {
    r.report(
      "bad-length",
      at + 12,
      "option-info-length",
      `${what} option length ${len} is not 6 + N + 2K = ${6 + n + 2 * k}; it MUST be exactly that`,
    );
    return raw(b, start, end);
  }
  const name = str(b, start + 4, start + 4 + n, r, max, "export name");
  if (name === undefined) return raw(b, start, end);
  const info: number[] = [];
  let seen: Set<number> | undefined;
  for (let i = 0, p = start + 6 + n; i < k; i++, p += 2) {
    const t = u16(b, p);
    let dup: boolean;
    if (k <= 16) dup = info.indexOf(t) !== -1;
    else {
      seen ??= new Set();
      dup = seen.has(t);
      seen.add(t);
    }
    if (dup) {
      r.report(
        "duplicate",
        p,
        "option-info-duplicate",
        `${what} requests info type ${t} twice; a type MUST NOT appear twice`,
      );
    }
    info.push(t);
  }
  return { kind: "info-request", name, info };
}

function decodeMetaContextQuery(
  b: Uint8Array,
  at: number,
  option: number,
  len: number,
  r: Reporter,
  max: number,
): OptionData {
  const start = at + HEADER;
  const end = start + len;
  const what = optionName(option);
  if (len < 8) {
    r.report(
      "bad-length",
      at + 12,
      "option-meta-context-length",
      `${what} data is ${len} bytes; it needs at least 8 (name length and query count)`,
    );
    return raw(b, start, end);
  }
  const n = u32(b, start);
  if (n > len - 8) {
    r.report(
      "bad-length",
      start,
      "option-meta-context-name-length",
      `${what} export name length ${n} exceeds the option length ${len} minus 8`,
    );
    return raw(b, start, end);
  }
  const count = u32(b, start + 4 + n);
  const first = start + 8 + n;
  // First pass: the layout only, so that malformed data costs no string decoding.
  let p = first;
  for (let i = 0; i < count; i++) {
    if (end - p < 4) {
      r.report(
        "bad-length",
        start + 4 + n,
        "option-meta-context-length",
        `${what} announces ${count} queries but the option data ends after ${i}`,
      );
      return raw(b, start, end);
    }
    const q = u32(b, p);
    if (q > end - p - 4) {
      r.report(
        "bad-length",
        p,
        "option-meta-context-query-length",
        `${what} query length ${q} runs past the option data; the server MUST answer NBD_REP_ERR_INVALID`,
      );
      return raw(b, start, end);
    }
    p += 4 + q;
  }
  if (p !== end) {
    r.report(
      "bad-length",
      at + 12,
      "option-meta-context-length",
      `${what} option length ${len} is not 8 + N + the queries' ${p - first} bytes; it MUST be exactly that`,
    );
    return raw(b, start, end);
  }
  const name = str(b, start + 4, start + 4 + n, r, max, "export name");
  if (name === undefined) return raw(b, start, end);
  const queries: string[] = [];
  p = first;
  for (let i = 0; i < count; i++) {
    const q = u32(b, p);
    const s = str(b, p + 4, p + 4 + q, r, max, "metadata context query");
    if (s === undefined) return raw(b, start, end);
    queries.push(s);
    p += 4 + q;
  }
  p = first;
  for (let i = 0; i < count; i++) {
    if (queries[i]!.indexOf(":") <= 0) {
      r.report(
        "bad-value",
        p + 4,
        "meta-context-query-namespace",
        `${what} query "${queries[i]}" does not start with a namespace and a colon; it MUST`,
      );
    }
    p += 4 + u32(b, p);
  }
  return { kind: "meta-context-query", name, queries };
}

// ---- encoding ----

function wrongKind(option: number, kind: string): never {
  throw new TypeError(
    `Cannot encode option request: data of kind "${kind}" does not fit ${optionName(option)}`,
  );
}

function dataLength(option: number, data: OptionData): number {
  if (data === null || typeof data !== "object") {
    throw new TypeError("Cannot encode option request: data must be an object");
  }
  switch (data.kind) {
    case "none":
      if (
        option === Option.EXPORT_NAME || option === Option.INFO || option === Option.GO ||
        option === Option.LIST_META_CONTEXT || option === Option.SET_META_CONTEXT
      ) wrongKind(option, data.kind);
      return 0;
    case "export-name":
      if (option !== Option.EXPORT_NAME) wrongKind(option, data.kind);
      return stringLength(data.name, "export name");
    case "info-request": {
      if (option !== Option.INFO && option !== Option.GO) wrongKind(option, data.kind);
      const info = data.info;
      if (!Array.isArray(info)) throw new TypeError("Cannot encode option request: info must be an array");
      if (info.length > 0xffff) {
        throw new RangeError(`Cannot encode option request: ${info.length} info requests exceed 65535`);
      }
      for (let i = 0; i < info.length; i++) checkU16(info[i]!, "info type");
      return 6 + stringLength(data.name, "export name") + 2 * info.length;
    }
    case "meta-context-query": {
      if (option !== Option.LIST_META_CONTEXT && option !== Option.SET_META_CONTEXT) {
        wrongKind(option, data.kind);
      }
      const queries = data.queries;
      if (!Array.isArray(queries)) {
        throw new TypeError("Cannot encode option request: queries must be an array");
      }
      let n = 8 + stringLength(data.name, "export name");
      for (let i = 0; i < queries.length; i++) n += 4 + stringLength(queries[i]!, "metadata context query");
      if (n > 0xffff_ffff) {
        throw new RangeError(`Cannot encode option request: ${n} bytes of data exceed 2^32-1`);
      }
      return n;
    }
    case "raw":
      return rawLength(data.raw, "option request");
    default:
      throw new TypeError(
        `Cannot encode option request: unknown data kind "${(data as { kind: unknown }).kind}"`,
      );
  }
}

/**
 * The encoded length of an option request: 16 plus the data length. Throws like the encoder for a frame
 * that cannot be encoded.
 *
 * @example
 * ```ts
 * import { Option, optionRequestByteLength } from "@nbd/codec";
 * console.log(optionRequestByteLength({ type: "option-request", option: Option.LIST, data: { kind: "none" } })); // 16
 * ```
 */
export function optionRequestByteLength(frame: OptionRequest): number {
  checkU32(frame.option, "option");
  return HEADER + dataLength(frame.option, frame.data);
}

/**
 * Encodes an option request into `target` at `offset`; returns the number of bytes written.
 *
 * Throws `TypeError` for the wrong kind of value (a string with NUL, data whose kind does not fit the
 * option: `raw` fits every option) and `RangeError` for values out of range (a string over 4096 bytes of
 * UTF-8, an info type above 65535) or a target too short. Duplicate info types and queries without a
 * namespace are encoded as given (useful to test peers).
 *
 * @example
 * ```ts
 * import { encodeOptionRequestInto, Option } from "@nbd/codec";
 * const buf = new Uint8Array(32);
 * const n = encodeOptionRequestInto(
 *   { type: "option-request", option: Option.EXPORT_NAME, data: { kind: "export-name", name: "disk" } },
 *   buf,
 *   4,
 * );
 * console.log(n, buf[4 + 15], buf[4 + 16]); // 20 4 100
 * ```
 */
export function encodeOptionRequestInto(frame: OptionRequest, target: Uint8Array, offset: number): number {
  const len = optionRequestByteLength(frame);
  checkTarget(target, offset, len, "option request");
  const data = frame.data;
  put32(target, offset, MAGIC_HI);
  put32(target, offset + 4, MAGIC_LO);
  put32(target, offset + 8, frame.option);
  put32(target, offset + 12, len - HEADER);
  let p = offset + HEADER;
  switch (data.kind) {
    case "export-name":
      writeString(data.name, target, p);
      break;
    case "info-request": {
      const n = writeString(data.name, target, p + 4);
      put32(target, p, n);
      p += 4 + n;
      put16(target, p, data.info.length);
      p += 2;
      for (let i = 0; i < data.info.length; i++, p += 2) put16(target, p, data.info[i]!);
      break;
    }
    case "meta-context-query": {
      const n = writeString(data.name, target, p + 4);
      put32(target, p, n);
      p += 4 + n;
      put32(target, p, data.queries.length);
      p += 4;
      for (let i = 0; i < data.queries.length; i++) {
        const q = writeString(data.queries[i]!, target, p + 4);
        put32(target, p, q);
        p += 4 + q;
      }
      break;
    }
    case "raw":
      target.set(data.raw, p);
      break;
  }
  return len;
}

/**
 * Encodes an option request into a new array.
 *
 * @example
 * ```ts
 * import { encodeOptionRequest, Info, Option } from "@nbd/codec";
 * const b = encodeOptionRequest({
 *   type: "option-request",
 *   option: Option.GO,
 *   data: { kind: "info-request", name: "", info: [Info.BLOCK_SIZE] },
 * });
 * console.log(b.length, b[11], b[23]); // 24 7 3
 * ```
 */
export function encodeOptionRequest(frame: OptionRequest): Uint8Array {
  const out = new Uint8Array(optionRequestByteLength(frame));
  encodeOptionRequestInto(frame, out, 0);
  return out;
}

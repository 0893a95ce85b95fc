/**
 * Option replies, sent by the server during fixed newstyle negotiation: the 20-byte header (magic, option,
 * reply type, data length) and typed data for every `NBD_REP_*`, including every `NBD_INFO_*` payload.
 *
 * @module
 */
import {
  checkBytes,
  checkTarget,
  checkU16,
  checkU32,
  checkU64,
  hex8,
  put16,
  put32,
  put64,
  rawLength,
  readStringChecked as str,
  stringLength,
  u16,
  u32,
  u64,
  writeString,
} from "./_bytes.ts";
import { checkNegotiatedFlags, checkTransmissionFlags } from "./_flags.ts";
import { checkLimit, fail, needMore, Reporter, resolveOptions } from "./_report.ts";
import { Info, Magic, nameOf, Option, OptionReply } from "./constants.ts";
import type { Decoded, DecodeOptions } from "./types.ts";
import type { EncoderInput } from "./types.ts";

/** Length of the option reply header: magic, option, reply type, data length. */
const HEADER = 20;
const MAGIC_HI = Number(Magic.OPTION_REPLY >> 32n);
const MAGIC_LO = Number(Magic.OPTION_REPLY & 0xffff_ffffn);
const NONE: OptionReplyData = Object.freeze({ kind: "none" });

/**
 * An option reply: the magic, the option answered, the reply type (`OptionReply`; bit 31 marks an error),
 * the data length and the data. The data length is not stored: it follows from `data`.
 *
 * @example
 * ```ts
 * import { Option, OptionReply, type OptionReplyFrame } from "@nbd/codec";
 * const ack: OptionReplyFrame = { type: "option-reply", option: Option.GO, reply: OptionReply.ACK, data: { kind: "none" } };
 * console.log(ack.reply); // 1
 * ```
 */
export interface OptionReplyFrame {
  /** Frame tag. */
  readonly type: "option-reply";
  /** The option being answered (`Option`). */
  readonly option: number;
  /** The reply type (`OptionReply`), any 32-bit value; bit 31 set means an error. */
  readonly reply: number;
  /** The reply's data, typed by reply type. */
  readonly data: OptionReplyData;
}

/**
 * The data of an option reply, by reply type:
 *
 * - `none`: `NBD_REP_ACK` (L = 0).
 * - `server`: `NBD_REP_SERVER`, an export name and its details (a description, possibly empty).
 * - `info`: `NBD_REP_INFO` with its {@link InfoPayload}.
 * - `meta-context`: `NBD_REP_META_CONTEXT`, a context id and name.
 * - `error`: any reply type with bit 31 set, known or not; the whole data is a message (possibly empty).
 * - `raw`: the data as bytes (a view of the input): unknown non-error reply types and, in lenient mode,
 *   data of a known reply type that is malformed (a finding says why).
 *
 * @example
 * ```ts
 * import type { OptionReplyData } from "@nbd/codec";
 * const d: OptionReplyData = { kind: "meta-context", id: 1, name: "base:allocation" };
 * console.log(d.kind); // "meta-context"
 * ```
 */
export type OptionReplyData =
  | { readonly kind: "none" }
  | { readonly kind: "server"; readonly name: string; readonly description: string }
  | { readonly kind: "info"; readonly info: InfoPayload }
  | { readonly kind: "meta-context"; readonly id: number; readonly name: string }
  | { readonly kind: "error"; readonly message: string }
  | { readonly kind: "raw"; readonly raw: Uint8Array };

/**
 * The payload of an `NBD_REP_INFO` reply, by info type (`Info`):
 *
 * - `export` (0): export size and transmission flags (L = 12).
 * - `name` (1): the canonical export name.
 * - `description` (2): a human-readable description.
 * - `block-size` (3): minimum block, preferred block and maximum payload (L = 14).
 * - `init-flags` (4): `NBD_INFO_INIT_FLAGS`, a 16-bit field (L = 4) with `InitFlag.SPARSE` (bit 0: the image
 *   has at least one hole) and `InitFlag.ZERO` (bit 1: the image reads as all zeroes). This was proposed in
 *   2020 as `NBD_INFO_INIT_STATE` and never merged into the spec; this codec decodes and encodes it by
 *   default, on both sides.
 * - `unknown`: any other info type, with its payload bytes (after the 2-byte type) as a view of the input.
 *
 * @example
 * ```ts
 * import { InitFlag, type InfoPayload } from "@nbd/codec";
 * const p: InfoPayload = { kind: "init-flags", info: 4, flags: InitFlag.SPARSE | InitFlag.ZERO };
 * console.log(p.flags); // 3
 * ```
 */
export type InfoPayload =
  | { readonly kind: "export"; readonly info: 0; readonly size: bigint; readonly transmissionFlags: number }
  | { readonly kind: "name"; readonly info: 1; readonly name: string }
  | { readonly kind: "description"; readonly info: 2; readonly description: string }
  | {
    readonly kind: "block-size";
    readonly info: 3;
    readonly minimum: number;
    readonly preferred: number;
    readonly maximum: number;
  }
  | { readonly kind: "init-flags"; readonly info: 4; readonly flags: number }
  | { readonly kind: "unknown"; readonly info: number; readonly raw: Uint8Array };

/**
 * Decoding options for option replies.
 *
 * @example
 * ```ts
 * import { decodeOptionReply, Option, type OptionReplyDecodeOptions } from "@nbd/codec";
 * const opts: OptionReplyDecodeOptions = { pendingOption: Option.GO, strict: false };
 * console.log(decodeOptionReply(new Uint8Array(8), opts).done); // false
 * ```
 */
export interface OptionReplyDecodeOptions extends DecodeOptions {
  /**
   * The option the client is waiting on. When given, a reply for another option is reported as
   * `unexpected-frame` (rule `option-reply-echo`): the server MUST echo the option it answers.
   */
  readonly pendingOption?: number;
  /**
   * What the option haggling negotiated, when known: a transmission flag whose feature needs a negotiation
   * that did not happen is then reported (rules `transmission-df-unnegotiated`,
   * `transmission-block-status-payload-unnegotiated`).
   */
  readonly negotiated?: { readonly structuredReplies: boolean; readonly extendedHeaders: boolean };
}

/**
 * Whether a reply type is an error: bit 31 set (`NBD_REP_IS_ERR`). Unknown error types are errors too.
 *
 * @example
 * ```ts
 * import { isErrorReply, OptionReply } from "@nbd/codec";
 * console.log(isErrorReply(OptionReply.ERR_POLICY), isErrorReply(OptionReply.ACK), isErrorReply(0x8000abcd)); // true false true
 * ```
 */
export function isErrorReply(reply: number): boolean {
  return reply >= 0x8000_0000;
}

function replyName(reply: number): string {
  return nameOf("optionReply", reply) ?? `reply type 0x${hex8(reply)}`;
}

/** Raw data: a view of the input, never a copy. */
function raw(b: Uint8Array, start: number, end: number): OptionReplyData {
  return { kind: "raw", raw: b.subarray(start, end) };
}

function isPowerOfTwo(v: number): boolean {
  return v !== 0 && (v & (v - 1)) === 0;
}

/**
 * Decodes an option reply. The data length is checked against `maxPayloadLength` before waiting for the
 * data. Unknown reply types are kept raw; unknown types with bit 31 set decode as errors with a message.
 *
 * Rules reported (thrown in strict mode; all in `RULES`): `option-reply-echo` (with `pendingOption`),
 * `option-reply-export-name`, `option-reply-type-for-option`, the negotiated-flag rules (with `negotiated`),
 * `option-reply-ack-length`, `option-reply-server-length`, `option-reply-server-name-length`,
 * `option-reply-info-length`, `info-export-length`, the transmission flag rules, `info-block-size-length`,
 * `info-block-size-minimum`, `info-block-size-preferred`, `info-block-size-maximum`,
 * `info-init-flags-length`, `option-reply-meta-context-length`,
 * `meta-context-name-namespace`, and the string rules.
 *
 * @example
 * ```ts
 * import { decodeOptionReply, Option } from "@nbd/codec";
 * const hex = "0003e889045565a9" + "00000007" + "00000003" + "0000000c" + "0000" + "0000000000100000" + "048f";
 * const r = decodeOptionReply(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)), { pendingOption: Option.GO });
 * if (r.done && r.frame.data.kind === "info" && r.frame.data.info.kind === "export") {
 *   console.log(r.frame.data.info.size); // 1048576n
 * }
 * ```
 */
export function decodeOptionReply(
  bytes: Uint8Array,
  options?: OptionReplyDecodeOptions,
): Decoded<OptionReplyFrame> {
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
      `Cannot decode option reply: magic is 0x${hex8(hi)}${hex8(lo)}, expected 0x0003e889045565a9`,
    );
  }
  const option = u32(bytes, at + 8);
  const reply = u32(bytes, at + 12);
  const length = u32(bytes, at + 16);
  checkLimit(length, o.maxPayloadLength, at + 16, "option reply");
  if (avail < HEADER + length) return needMore(HEADER + length - avail);
  const r = new Reporter(o.strict);
  const pending = options?.pendingOption;
  if (pending !== undefined && option !== pending) {
    r.report(
      "unexpected-frame",
      at + 8,
      "option-reply-echo",
      `option reply answers ${nameOf("option", option) ?? `option ${option}`} but the pending option is ${
        nameOf("option", pending) ?? `option ${pending}`
      }; the server MUST echo the option it answers`,
    );
  }
  replyForOption(option, reply, at, r);
  const data = decodeData(bytes, at, reply, length, r, o.maxStringLength);
  const negotiated = options?.negotiated;
  if (negotiated !== undefined && data.kind === "info" && data.info.kind === "export") {
    checkNegotiatedFlags(data.info.transmissionFlags, at + HEADER + 10, r, negotiated);
  }
  return {
    done: true,
    frame: { type: "option-reply", option, reply, data },
    byteLength: HEADER + length,
    findings: r.list(),
  };
}

/**
 * The non-error reply types each known option's description allows (index = option): LIST gets SERVER
 * replies, INFO and GO get INFO replies, the two META_CONTEXT options get META_CONTEXT replies, and every one
 * gets ACK. EXPORT_NAME gets no option reply at all; PEEK_EXPORT (withdrawn) and unknown options are not
 * checked.
 */
const REPLIES_FOR_OPTION: readonly (readonly number[] | undefined)[] = [
  undefined, // 0: unassigned
  [], // EXPORT_NAME
  [OptionReply.ACK], // ABORT
  [OptionReply.ACK, OptionReply.SERVER], // LIST
  undefined, // PEEK_EXPORT
  [OptionReply.ACK], // STARTTLS
  [OptionReply.ACK, OptionReply.INFO], // INFO
  [OptionReply.ACK, OptionReply.INFO], // GO
  [OptionReply.ACK], // STRUCTURED_REPLY
  [OptionReply.ACK, OptionReply.META_CONTEXT], // LIST_META_CONTEXT
  [OptionReply.ACK, OptionReply.META_CONTEXT], // SET_META_CONTEXT
  [OptionReply.ACK], // EXTENDED_HEADERS
];

/** The rules that tie a reply to the option it echoes. Error replies are allowed for every option. */
function replyForOption(option: number, reply: number, at: number, r: Reporter): void {
  if (option === Option.EXPORT_NAME) {
    r.report(
      "unexpected-frame",
      at + 8,
      "option-reply-export-name",
      "option reply echoing NBD_OPT_EXPORT_NAME; the server replies to any option apart from NBD_OPT_EXPORT_NAME",
    );
    return;
  }
  const allowed = REPLIES_FOR_OPTION[option];
  if (allowed === undefined || reply >= 0x8000_0000 || allowed.includes(reply)) return;
  // An unknown non-error reply type is kept raw without a finding (a newer server's reply).
  if (nameOf("optionReply", reply) === undefined) return;
  r.report(
    "unexpected-frame",
    at + 12,
    "option-reply-type-for-option",
    `${nameOf("optionReply", reply)} answering ${nameOf("option", option)}, whose replies are ${
      allowed.map((x) => nameOf("optionReply", x)).join(" or ")
    } or an error`,
  );
}

function decodeData(
  b: Uint8Array,
  at: number,
  reply: number,
  len: number,
  r: Reporter,
  max: number,
): OptionReplyData {
  const start = at + HEADER;
  const end = start + len;
  switch (reply) {
    case OptionReply.ACK:
      if (len === 0) return NONE;
      r.report(
        "bad-length",
        at + 16,
        "option-reply-ack-length",
        `NBD_REP_ACK has ${len} bytes of data; L MUST be 0`,
      );
      return raw(b, start, end);
    case OptionReply.SERVER: {
      if (len < 4) {
        r.report(
          "bad-length",
          at + 16,
          "option-reply-server-length",
          `NBD_REP_SERVER data is ${len} bytes; it needs at least 4 (the name length)`,
        );
        return raw(b, start, end);
      }
      const n = u32(b, start);
      if (n > len - 4) {
        r.report(
          "bad-length",
          start,
          "option-reply-server-name-length",
          `NBD_REP_SERVER name length ${n} exceeds the data length ${len} minus 4; it MUST NOT`,
        );
        return raw(b, start, end);
      }
      const name = str(b, start + 4, start + 4 + n, r, max, "NBD_REP_SERVER export name");
      const description = name === undefined
        ? undefined
        : str(b, start + 4 + n, end, r, max, "NBD_REP_SERVER details");
      if (name === undefined || description === undefined) {
        return raw(b, start, end);
      }
      return { kind: "server", name, description };
    }
    case OptionReply.INFO: {
      if (len < 2) {
        r.report(
          "bad-length",
          at + 16,
          "option-reply-info-length",
          `NBD_REP_INFO data is ${len} bytes; it needs at least 2 (the info type)`,
        );
        return raw(b, start, end);
      }
      const info = decodeInfo(b, at, len, r, max);
      return info === undefined ? raw(b, start, end) : { kind: "info", info };
    }
    case OptionReply.META_CONTEXT: {
      if (len < 4) {
        r.report(
          "bad-length",
          at + 16,
          "option-reply-meta-context-length",
          `NBD_REP_META_CONTEXT data is ${len} bytes; it needs at least 4 (the context id)`,
        );
        return raw(b, start, end);
      }
      const id = u32(b, start);
      const name = str(b, start + 4, end, r, max, "NBD_REP_META_CONTEXT context name");
      if (name === undefined) return raw(b, start, end);
      if (name.indexOf(":") <= 0) {
        r.report(
          "bad-value",
          start + 4,
          "meta-context-name-namespace",
          `metadata context name "${name}" does not start with a namespace and a colon; it MUST`,
        );
      }
      return { kind: "meta-context", id, name };
    }
    default: {
      if (!isErrorReply(reply)) return raw(b, start, end);
      const message = str(b, start, end, r, max, "error message");
      return message === undefined ? raw(b, start, end) : { kind: "error", message };
    }
  }
}

/** The info payload, or `undefined` when it is malformed (a finding was reported). */
function decodeInfo(
  b: Uint8Array,
  at: number,
  len: number,
  r: Reporter,
  max: number,
): InfoPayload | undefined {
  const start = at + HEADER;
  const end = start + len;
  const info = u16(b, start);
  switch (info) {
    case Info.EXPORT: {
      if (len !== 12) {
        r.report(
          "bad-length",
          at + 16,
          "info-export-length",
          `NBD_INFO_EXPORT length is ${len}; it MUST be 12`,
        );
        return undefined;
      }
      const size = u64(b, start + 2);
      const transmissionFlags = u16(b, start + 10);
      checkTransmissionFlags(transmissionFlags, start + 10, r);
      return { kind: "export", info: Info.EXPORT, size, transmissionFlags };
    }
    case Info.NAME: {
      const name = str(b, start + 2, end, r, max, "NBD_INFO_NAME export name");
      return name === undefined ? undefined : { kind: "name", info: Info.NAME, name };
    }
    case Info.DESCRIPTION: {
      const description = str(b, start + 2, end, r, max, "NBD_INFO_DESCRIPTION description");
      return description === undefined
        ? undefined
        : { kind: "description", info: Info.DESCRIPTION, description };
    }
    case Info.BLOCK_SIZE: {
      if (len !== 14) {
        r.report(
          "bad-length",
          at + 16,
          "info-block-size-length",
          `NBD_INFO_BLOCK_SIZE length is ${len}; it MUST be 14`,
        );
        return undefined;
      }
      const minimum = u32(b, start + 2);
      const preferred = u32(b, start + 6);
      const maximum = u32(b, start + 10);
      if (!isPowerOfTwo(minimum) || minimum > 65536) {
        r.report(
          "bad-value",
          start + 2,
          "info-block-size-minimum",
          `minimum block size ${minimum} is not a power of 2 between 1 and 65536; it MUST be`,
        );
      }
      if (!isPowerOfTwo(preferred) || preferred < Math.max(minimum, 512)) {
        r.report(
          "bad-value",
          start + 6,
          "info-block-size-preferred",
          `preferred block size ${preferred} is not a power of 2 of at least max(minimum, 512); it MUST be`,
        );
      }
      if (maximum < preferred) {
        r.report(
          "bad-value",
          start + 10,
          "info-block-size-maximum",
          `maximum payload size ${maximum} is below the preferred block size ${preferred}; it MUST NOT be`,
        );
      }
      return { kind: "block-size", info: Info.BLOCK_SIZE, minimum, preferred, maximum };
    }
    case Info.INIT_FLAGS: {
      if (len !== 4) {
        r.report(
          "bad-length",
          at + 16,
          "info-init-flags-length",
          `NBD_INFO_INIT_FLAGS length is ${len}; it MUST be 4 (proposed NBD_INFO_INIT_STATE layout)`,
        );
        return undefined;
      }
      // Unknown bits are kept, not reported: the proposal tells clients to ignore them (IGNORED_BY_RECEIVER).
      const flags = u16(b, start + 2);
      return { kind: "init-flags", info: Info.INIT_FLAGS, flags };
    }
    default:
      return { kind: "unknown", info, raw: b.subarray(start + 2, end) };
  }
}

// ---- encoding ----

function wrongKind(reply: number, kind: string): never {
  throw new TypeError(`Cannot encode option reply: data of kind "${kind}" does not fit ${replyName(reply)}`);
}

function checkInfoType(p: EncoderInput<InfoPayload>, expected: number): void {
  if (p.info !== expected) {
    throw new TypeError(
      `Cannot encode option reply: info payload "${p.kind}" has info ${p.info}, expected ${expected}`,
    );
  }
}

function infoLength(p: EncoderInput<InfoPayload>): number {
  if (p === null || typeof p !== "object") {
    throw new TypeError("Cannot encode option reply: info must be an object");
  }
  switch (p.kind) {
    case "export":
      checkInfoType(p, Info.EXPORT);
      checkU64(p.size, "NBD_INFO_EXPORT size");
      checkU16(p.transmissionFlags, "NBD_INFO_EXPORT transmission flags");
      return 12;
    case "name":
      checkInfoType(p, Info.NAME);
      return 2 + stringLength(p.name, "NBD_INFO_NAME export name");
    case "description":
      checkInfoType(p, Info.DESCRIPTION);
      return 2 + stringLength(p.description, "NBD_INFO_DESCRIPTION description");
    case "block-size":
      checkInfoType(p, Info.BLOCK_SIZE);
      checkU32(p.minimum, "minimum block size");
      checkU32(p.preferred, "preferred block size");
      checkU32(p.maximum, "maximum payload size");
      return 14;
    case "init-flags":
      checkInfoType(p, Info.INIT_FLAGS);
      checkU16(p.flags, "NBD_INFO_INIT_FLAGS flags");
      return 4;
    case "unknown":
      checkU16(p.info, "info type");
      checkBytes(p.raw, "info payload");
      if (p.raw.length > 0xffff_fffd) {
        throw new RangeError("Cannot encode option reply: info payload exceeds 2^32-3");
      }
      return 2 + p.raw.length;
    default:
      throw new TypeError(`Cannot encode option reply: unknown info kind "${(p as { kind: unknown }).kind}"`);
  }
}

function dataLength(reply: number, data: EncoderInput<OptionReplyData>): number {
  if (data === null || typeof data !== "object") {
    throw new TypeError("Cannot encode option reply: data must be an object");
  }
  switch (data.kind) {
    case "none":
      if (reply !== OptionReply.ACK) wrongKind(reply, data.kind);
      return 0;
    case "server":
      if (reply !== OptionReply.SERVER) wrongKind(reply, data.kind);
      return 4 + stringLength(data.name, "NBD_REP_SERVER export name") +
        stringLength(data.description, "NBD_REP_SERVER details");
    case "info":
      if (reply !== OptionReply.INFO) wrongKind(reply, data.kind);
      return infoLength(data.info);
    case "meta-context":
      if (reply !== OptionReply.META_CONTEXT) wrongKind(reply, data.kind);
      checkU32(data.id, "metadata context id");
      return 4 + stringLength(data.name, "metadata context name");
    case "error":
      if (!isErrorReply(reply)) wrongKind(reply, data.kind);
      return stringLength(data.message, "error message");
    case "raw":
      return rawLength(data.raw, "option reply");
    default:
      throw new TypeError(
        `Cannot encode option reply: unknown data kind "${(data as { kind: unknown }).kind}"`,
      );
  }
}

/**
 * The encoded length of an option reply: 20 plus the data length. Throws like the encoder for a frame that
 * cannot be encoded.
 *
 * @example
 * ```ts
 * import { Option, OptionReply, optionReplyByteLength } from "@nbd/codec";
 * const n = optionReplyByteLength({
 *   type: "option-reply",
 *   option: Option.LIST,
 *   reply: OptionReply.SERVER,
 *   data: { kind: "server", name: "disk", description: "" },
 * });
 * console.log(n); // 28
 * ```
 */
export function optionReplyByteLength(frame: EncoderInput<OptionReplyFrame>): number {
  checkU32(frame.option, "option");
  checkU32(frame.reply, "reply type");
  return HEADER + dataLength(frame.reply, frame.data);
}

/**
 * Encodes an option reply into `target` at `offset`; returns the number of bytes written.
 *
 * Throws `TypeError` for the wrong kind of value (a string with NUL, data whose kind does not fit the reply
 * type: `error` needs bit 31, `raw` fits every type) and `RangeError` for values out of range (a string
 * over 4096 bytes of UTF-8, a size above 2^64-1) or a target too short. Block-size constraints and init
 * flag bits are encoded as given (useful to test peers).
 *
 * @example
 * ```ts
 * import { encodeOptionReplyInto, Info, InitFlag, Option, OptionReply } from "@nbd/codec";
 * const buf = new Uint8Array(30);
 * const n = encodeOptionReplyInto({
 *   type: "option-reply",
 *   option: Option.GO,
 *   reply: OptionReply.INFO,
 *   data: { kind: "info", info: { kind: "init-flags", info: Info.INIT_FLAGS, flags: InitFlag.ZERO } },
 * }, buf, 2);
 * console.log(n, buf[2 + 21], buf[2 + 23]); // 24 4 2
 * ```
 */
export function encodeOptionReplyInto(
  frame: EncoderInput<OptionReplyFrame>,
  target: Uint8Array,
  offset: number,
): number {
  const len = optionReplyByteLength(frame);
  checkTarget(target, offset, len, "option reply");
  const data = frame.data;
  put32(target, offset, MAGIC_HI);
  put32(target, offset + 4, MAGIC_LO);
  put32(target, offset + 8, frame.option);
  put32(target, offset + 12, frame.reply);
  put32(target, offset + 16, len - HEADER);
  const p = offset + HEADER;
  switch (data.kind) {
    case "server": {
      const n = writeString(data.name, target, p + 4);
      put32(target, p, n);
      writeString(data.description, target, p + 4 + n);
      break;
    }
    case "info":
      writeInfo(data.info, target, p);
      break;
    case "meta-context":
      put32(target, p, data.id);
      writeString(data.name, target, p + 4);
      break;
    case "error":
      writeString(data.message, target, p);
      break;
    case "raw":
      target.set(data.raw, p);
      break;
  }
  return len;
}

function writeInfo(info: EncoderInput<InfoPayload>, target: Uint8Array, p: number): void {
  put16(target, p, info.info);
  switch (info.kind) {
    case "export":
      put64(target, p + 2, info.size);
      put16(target, p + 10, info.transmissionFlags);
      break;
    case "name":
      writeString(info.name, target, p + 2);
      break;
    case "description":
      writeString(info.description, target, p + 2);
      break;
    case "block-size":
      put32(target, p + 2, info.minimum);
      put32(target, p + 6, info.preferred);
      put32(target, p + 10, info.maximum);
      break;
    case "init-flags":
      put16(target, p + 2, info.flags);
      break;
    case "unknown":
      target.set(info.raw, p + 2);
      break;
  }
}

/**
 * Encodes an option reply into a new array.
 *
 * @example
 * ```ts
 * import { encodeOptionReply, Option, OptionReply } from "@nbd/codec";
 * const b = encodeOptionReply({
 *   type: "option-reply",
 *   option: Option.STARTTLS,
 *   reply: OptionReply.ERR_POLICY,
 *   data: { kind: "error", message: "no" },
 * });
 * console.log(b.length, b[12], b[15]); // 22 128 2
 * ```
 */
export function encodeOptionReply(frame: EncoderInput<OptionReplyFrame>): Uint8Array {
  const out = new Uint8Array(optionReplyByteLength(frame));
  encodeOptionReplyInto(frame, out, 0);
  return out;
}

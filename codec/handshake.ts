/**
 * The frames of the handshake that carry no option: the server's greeting (oldstyle or newstyle), the
 * client flags, and the reply to `NBD_OPT_EXPORT_NAME`.
 *
 * @module
 */
import { checkNegotiatedFlags, checkTransmissionFlags } from "./_flags.ts";
import { checkTarget, checkU16, checkU32, checkU64, put16, put32, put64, u16, u32, u64 } from "./_bytes.ts";
import { fail, needMore, Reporter, resolveOptions } from "./_report.ts";
import { KNOWN_CLIENT_FLAGS, Magic, TransmissionFlag } from "./constants.ts";
import type { Decoded, DecodeOptions } from "./types.ts";
import type { EncoderInput } from "./types.ts";

/** Length of the oldstyle greeting. */
const OLDSTYLE_LENGTH = 152;
/** Length of the newstyle greeting. */
const NEWSTYLE_LENGTH = 18;

/**
 * The oldstyle greeting (152 bytes): export size and flags, sent by the server at once; no options follow.
 * The spec's 32 flag bits are 16 handshake bits (which MUST be 0) and 16 transmission bits.
 *
 * @example
 * ```ts
 * import type { OldstyleGreeting } from "@nbd/codec";
 * const g: OldstyleGreeting = { type: "oldstyle-greeting", size: 1048576n, handshakeFlags: 0, transmissionFlags: 1 };
 * console.log(g.size); // 1048576n
 * ```
 */
export interface OldstyleGreeting {
  /** Frame tag. */
  readonly type: "oldstyle-greeting";
  /** Export size in bytes. */
  readonly size: bigint;
  /** High 16 bits of the flags field: MUST be 0 in oldstyle. */
  readonly handshakeFlags: number;
  /** Low 16 bits: the transmission flags. */
  readonly transmissionFlags: number;
}

/**
 * The newstyle greeting (18 bytes): magic, `IHAVEOPT`, handshake flags.
 *
 * @example
 * ```ts
 * import { HandshakeFlag, type NewstyleGreeting } from "@nbd/codec";
 * const g: NewstyleGreeting = { type: "newstyle-greeting", handshakeFlags: HandshakeFlag.FIXED_NEWSTYLE };
 * console.log(g.handshakeFlags); // 1
 * ```
 */
export interface NewstyleGreeting {
  /** Frame tag. */
  readonly type: "newstyle-greeting";
  /** Handshake flags (`HandshakeFlag`). */
  readonly handshakeFlags: number;
}

/**
 * Either greeting.
 *
 * @example
 * ```ts
 * import { decodeGreeting, type Greeting } from "@nbd/codec";
 * const hex = "4e42444d41474943" + "49484156454f5054" + "0003";
 * const bytes = Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16));
 * const r = decodeGreeting(bytes);
 * const g: Greeting | undefined = r.done ? r.frame : undefined;
 * console.log(g?.type); // "newstyle-greeting"
 * ```
 */
export type Greeting = OldstyleGreeting | NewstyleGreeting;

/**
 * The client flags (4 bytes) that answer a newstyle greeting.
 *
 * @example
 * ```ts
 * import { ClientFlag, type ClientFlags } from "@nbd/codec";
 * const f: ClientFlags = { type: "client-flags", flags: ClientFlag.C_FIXED_NEWSTYLE | ClientFlag.C_NO_ZEROES };
 * console.log(f.flags); // 3
 * ```
 */
export interface ClientFlags {
  /** Frame tag. */
  readonly type: "client-flags";
  /** Client flags (`ClientFlag`). */
  readonly flags: number;
}

/**
 * The server's reply to `NBD_OPT_EXPORT_NAME`: size and transmission flags, then 124 zero bytes unless both
 * sides set NO_ZEROES. It has no magic and no option-reply header.
 *
 * @example
 * ```ts
 * import type { ExportNameReply } from "@nbd/codec";
 * const r: ExportNameReply = { type: "export-name-reply", size: 512n, transmissionFlags: 1, zeroPadding: false };
 * console.log(r.zeroPadding); // false
 * ```
 */
export interface ExportNameReply {
  /** Frame tag. */
  readonly type: "export-name-reply";
  /** Export size in bytes. */
  readonly size: bigint;
  /** Transmission flags. */
  readonly transmissionFlags: number;
  /** Whether the 124 zero bytes follow (134 bytes in all) or not (10 bytes). */
  readonly zeroPadding: boolean;
}

/**
 * Decoding options for the `NBD_OPT_EXPORT_NAME` reply, whose length depends on the negotiation.
 *
 * @example
 * ```ts
 * import { decodeExportNameReply } from "@nbd/codec";
 * const r = decodeExportNameReply(new Uint8Array(10), { noZeroes: true, strict: false });
 * console.log(r.done && r.byteLength); // 10
 * ```
 */
export interface ExportNameReplyOptions extends DecodeOptions {
  /** `true` when the server set NBD_FLAG_NO_ZEROES and the client NBD_FLAG_C_NO_ZEROES. */
  readonly noZeroes: boolean;
  /**
   * What the option haggling negotiated, when known: a transmission flag whose feature needs a negotiation
   * that did not happen is then reported (rules `transmission-df-unnegotiated`,
   * `transmission-block-status-payload-unnegotiated`).
   */
  readonly negotiated?: { readonly structuredReplies: boolean; readonly extendedHeaders: boolean };
}

function magicMismatch(offset: number, what: string, found: bigint, expected: bigint): never {
  return fail(
    "bad-magic",
    offset,
    "magic",
    `Cannot decode ${what}: magic is 0x${found.toString(16).padStart(16, "0")}, expected 0x${
      expected.toString(16).padStart(16, "0")
    }`,
  );
}

/**
 * Decodes the server's greeting, oldstyle (152 bytes) or newstyle (18 bytes), told apart by bytes 8-15.
 * Unknown handshake and transmission flags are kept, not reported (the client SHOULD ignore them). Rules
 * reported: `oldstyle-handshake-flags`, `oldstyle-zeroes`, `oldstyle-transmission-df`,
 * `oldstyle-transmission-block-status-payload`, and the transmission flag rules (see `RULES`).
 *
 * @example
 * ```ts
 * import { decodeGreeting } from "@nbd/codec";
 * const hex = "4e42444d41474943" + "49484156454f5054" + "0003";
 * const r = decodeGreeting(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)));
 * if (r.done && r.frame.type === "newstyle-greeting") console.log(r.frame.handshakeFlags); // 3
 * ```
 */
export function decodeGreeting(bytes: Uint8Array, options?: DecodeOptions): Decoded<Greeting> {
  const o = resolveOptions(options, bytes);
  const at = o.offset;
  const avail = bytes.length - at;
  if (avail < 16) return needMore(16 - avail);
  const m1 = u64(bytes, at);
  if (m1 !== Magic.NBDMAGIC) magicMismatch(at, "greeting", m1, Magic.NBDMAGIC);
  const m2 = u64(bytes, at + 8);
  const r = new Reporter(o.strict);
  if (m2 === Magic.IHAVEOPT) {
    if (avail < NEWSTYLE_LENGTH) return needMore(NEWSTYLE_LENGTH - avail);
    // Unknown handshake flags are kept, not reported: "The client SHOULD ignore any handshake flags it does
    // not recognize" (spec, Newstyle negotiation; see IGNORED_BY_RECEIVER in rules.ts).
    const handshakeFlags = u16(bytes, at + 16);
    return {
      done: true,
      frame: { type: "newstyle-greeting", handshakeFlags },
      byteLength: NEWSTYLE_LENGTH,
      findings: r.list(),
    };
  }
  if (m2 !== Magic.CLISERV) {
    fail(
      "bad-magic",
      at + 8,
      "magic",
      `Cannot decode greeting: second magic is 0x${
        m2.toString(16).padStart(16, "0")
      }, expected 0x49484156454f5054 (IHAVEOPT) or 0x0000420281861253 (cliserv)`,
    );
  }
  if (avail < OLDSTYLE_LENGTH) return needMore(OLDSTYLE_LENGTH - avail);
  const size = u64(bytes, at + 16);
  const handshakeFlags = u16(bytes, at + 24);
  const transmissionFlags = u16(bytes, at + 26);
  if (handshakeFlags !== 0) {
    r.report(
      "reserved-bits",
      at + 24,
      "oldstyle-handshake-flags",
      `oldstyle greeting sets handshake flags 0x${handshakeFlags.toString(16)}; they MUST be 0 in oldstyle`,
    );
  }
  checkTransmissionFlags(transmissionFlags, at + 26, r);
  // Flags whose feature needs a negotiation, which an oldstyle handshake cannot have.
  if ((transmissionFlags & TransmissionFlag.SEND_DF) !== 0) {
    r.report(
      "bad-value",
      at + 26,
      "oldstyle-transmission-df",
      "oldstyle greeting advertises NBD_FLAG_SEND_DF; it MUST be clear unless structured replies or extended " +
        "headers were negotiated, and oldstyle negotiates nothing",
    );
  }
  if ((transmissionFlags & TransmissionFlag.BLOCK_STATUS_PAYLOAD) !== 0) {
    r.report(
      "bad-value",
      at + 26,
      "oldstyle-transmission-block-status-payload",
      "oldstyle greeting advertises NBD_FLAG_BLOCK_STATUS_PAYLOAD; servers MUST NOT unless extended headers " +
        "were negotiated, and oldstyle negotiates nothing",
    );
  }
  for (let i = at + 28; i < at + OLDSTYLE_LENGTH; i++) {
    if (bytes[i] !== 0) {
      r.report(
        "bad-value",
        i,
        "oldstyle-zeroes",
        "the 124 reserved bytes of the oldstyle greeting MUST be zero",
      );
      break;
    }
  }
  return {
    done: true,
    frame: { type: "oldstyle-greeting", size, handshakeFlags, transmissionFlags },
    byteLength: OLDSTYLE_LENGTH,
    findings: r.list(),
  };
}

/**
 * The encoded length of a greeting: 152 (oldstyle) or 18 (newstyle).
 *
 * @example
 * ```ts
 * import { greetingByteLength } from "@nbd/codec";
 * console.log(greetingByteLength({ type: "newstyle-greeting", handshakeFlags: 3 })); // 18
 * ```
 */
export function greetingByteLength(frame: EncoderInput<Greeting>): number {
  return frame.type === "oldstyle-greeting" ? OLDSTYLE_LENGTH : NEWSTYLE_LENGTH;
}

/**
 * Encodes a greeting into `target` at `offset`; returns the number of bytes written. Throws `RangeError` if
 * it does not fit or a field is out of range.
 *
 * @example
 * ```ts
 * import { encodeGreetingInto } from "@nbd/codec";
 * const buf = new Uint8Array(20);
 * console.log(encodeGreetingInto({ type: "newstyle-greeting", handshakeFlags: 3 }, buf, 2)); // 18
 * ```
 */
export function encodeGreetingInto(
  frame: EncoderInput<Greeting>,
  target: Uint8Array,
  offset: number,
): number {
  const len = greetingByteLength(frame);
  checkU16(frame.handshakeFlags, "greeting handshake flags");
  checkTarget(target, offset, len, "greeting");
  put64(target, offset, Magic.NBDMAGIC);
  if (frame.type === "newstyle-greeting") {
    put64(target, offset + 8, Magic.IHAVEOPT);
    put16(target, offset + 16, frame.handshakeFlags);
    return len;
  }
  checkU64(frame.size, "oldstyle greeting size");
  checkU16(frame.transmissionFlags, "oldstyle greeting transmission flags");
  put64(target, offset + 8, Magic.CLISERV);
  put64(target, offset + 16, frame.size);
  put16(target, offset + 24, frame.handshakeFlags);
  put16(target, offset + 26, frame.transmissionFlags);
  target.fill(0, offset + 28, offset + OLDSTYLE_LENGTH);
  return len;
}

/**
 * Encodes a greeting into a new array.
 *
 * @example
 * ```ts
 * import { encodeGreeting, HandshakeFlag } from "@nbd/codec";
 * const b = encodeGreeting({ type: "newstyle-greeting", handshakeFlags: HandshakeFlag.FIXED_NEWSTYLE });
 * console.log(b.length, b[17]); // 18 1
 * ```
 */
export function encodeGreeting(frame: EncoderInput<Greeting>): Uint8Array {
  const out = new Uint8Array(greetingByteLength(frame));
  encodeGreetingInto(frame, out, 0);
  return out;
}

/**
 * Decoding options for the client flags.
 *
 * @example
 * ```ts
 * import { type ClientFlagsDecodeOptions, HandshakeFlag } from "@nbd/codec";
 * const options: ClientFlagsDecodeOptions = { handshakeFlags: HandshakeFlag.FIXED_NEWSTYLE };
 * console.log(options.handshakeFlags); // 1
 * ```
 */
export interface ClientFlagsDecodeOptions extends DecodeOptions {
  /**
   * The handshake flags of the server's greeting, when known: a client flag whose server flag is clear is then
   * reported (rule `client-flags-unadvertised`).
   */
  readonly handshakeFlags?: number;
}

/**
 * Decodes the 4-byte client flags. Reserved bits are a violation (the server MUST then disconnect), and so,
 * given `handshakeFlags`, is a flag the server did not advertise.
 *
 * @example
 * ```ts
 * import { decodeClientFlags } from "@nbd/codec";
 * const r = decodeClientFlags(new Uint8Array([0, 0, 0, 3]));
 * if (r.done) console.log(r.frame.flags); // 3
 * const s = decodeClientFlags(new Uint8Array([0, 0, 0, 3]), { handshakeFlags: 1, strict: false });
 * if (s.done) console.log(s.findings[0]?.rule); // "client-flags-unadvertised"
 * ```
 */
export function decodeClientFlags(
  bytes: Uint8Array,
  options?: ClientFlagsDecodeOptions,
): Decoded<ClientFlags> {
  const o = resolveOptions(options, bytes);
  const avail = bytes.length - o.offset;
  if (avail < 4) return needMore(4 - avail);
  const flags = u32(bytes, o.offset);
  const r = new Reporter(o.strict);
  if ((flags & ~KNOWN_CLIENT_FLAGS) !== 0) {
    r.report(
      "reserved-bits",
      o.offset,
      "client-flags-reserved",
      `client flags 0x${flags.toString(16)} set reserved bits; clients MUST NOT set bits 2-31`,
    );
  }
  const advertised = options?.handshakeFlags;
  // C_FIXED_NEWSTYLE and C_NO_ZEROES answer the server's FIXED_NEWSTYLE and NO_ZEROES, bit for bit.
  const unmatched = advertised === undefined ? 0 : flags & KNOWN_CLIENT_FLAGS & ~advertised;
  if (unmatched !== 0) {
    r.report(
      "bad-value",
      o.offset,
      "client-flags-unadvertised",
      `client flags 0x${flags.toString(16)} set 0x${
        unmatched.toString(16)
      }, which the server's handshake flags ` +
        `0x${advertised!.toString(16)} did not advertise; the server MUST then drop the connection`,
    );
  }
  return { done: true, frame: { type: "client-flags", flags }, byteLength: 4, findings: r.list() };
}

/**
 * The encoded length of the client flags: always 4.
 *
 * @example
 * ```ts
 * import { clientFlagsByteLength } from "@nbd/codec";
 * console.log(clientFlagsByteLength({ type: "client-flags", flags: 1 })); // 4
 * ```
 */
export function clientFlagsByteLength(_frame: ClientFlags): number {
  return 4;
}

/**
 * Encodes the client flags into `target` at `offset`; returns 4.
 *
 * @example
 * ```ts
 * import { encodeClientFlagsInto } from "@nbd/codec";
 * const buf = new Uint8Array(4);
 * encodeClientFlagsInto({ type: "client-flags", flags: 3 }, buf, 0);
 * console.log(buf); // Uint8Array(4) [ 0, 0, 0, 3 ]
 * ```
 */
export function encodeClientFlagsInto(frame: ClientFlags, target: Uint8Array, offset: number): number {
  checkU32(frame.flags, "client flags");
  checkTarget(target, offset, 4, "client flags");
  put32(target, offset, frame.flags);
  return 4;
}

/**
 * Encodes the client flags into a new 4-byte array.
 *
 * @example
 * ```ts
 * import { ClientFlag, encodeClientFlags } from "@nbd/codec";
 * console.log(encodeClientFlags({ type: "client-flags", flags: ClientFlag.C_FIXED_NEWSTYLE })[3]); // 1
 * ```
 */
export function encodeClientFlags(frame: ClientFlags): Uint8Array {
  const out = new Uint8Array(4);
  encodeClientFlagsInto(frame, out, 0);
  return out;
}

/**
 * Decodes the reply to `NBD_OPT_EXPORT_NAME`. Its length (10 or 134 bytes) is not on the wire: pass
 * `noZeroes: true` when both sides set NO_ZEROES.
 *
 * @example
 * ```ts
 * import { decodeExportNameReply } from "@nbd/codec";
 * const bytes = new Uint8Array([0, 0, 0, 0, 0, 0x10, 0, 0, 0, 1]);
 * const r = decodeExportNameReply(bytes, { noZeroes: true });
 * if (r.done) console.log(r.frame.size); // 1048576n
 * ```
 */
export function decodeExportNameReply(
  bytes: Uint8Array,
  options: ExportNameReplyOptions,
): Decoded<ExportNameReply> {
  const o = resolveOptions(options, bytes);
  const at = o.offset;
  const len = options.noZeroes ? 10 : 134;
  const avail = bytes.length - at;
  if (avail < len) return needMore(len - avail);
  const r = new Reporter(o.strict);
  const size = u64(bytes, at);
  const transmissionFlags = u16(bytes, at + 8);
  checkTransmissionFlags(transmissionFlags, at + 8, r);
  if (options.negotiated !== undefined) {
    checkNegotiatedFlags(transmissionFlags, at + 8, r, options.negotiated);
  }
  if ((transmissionFlags & TransmissionFlag.BLOCK_STATUS_PAYLOAD) !== 0) {
    r.report(
      "bad-value",
      at + 8,
      "export-name-reply-block-status-payload",
      "NBD_OPT_EXPORT_NAME reply advertises NBD_FLAG_BLOCK_STATUS_PAYLOAD; servers MUST NOT unless extended " +
        "headers were negotiated, and a client that negotiated them MUST NOT use NBD_OPT_EXPORT_NAME",
    );
  }
  if (!options.noZeroes) {
    for (let i = at + 10; i < at + 134; i++) {
      if (bytes[i] !== 0) {
        r.report("bad-value", i, "export-name-reply-zeroes", "the 124 bytes after the flags MUST be zero");
        break;
      }
    }
  }
  return {
    done: true,
    frame: { type: "export-name-reply", size, transmissionFlags, zeroPadding: !options.noZeroes },
    byteLength: len,
    findings: r.list(),
  };
}

/**
 * The encoded length of an `NBD_OPT_EXPORT_NAME` reply: 134 with zero padding, 10 without.
 *
 * @example
 * ```ts
 * import { exportNameReplyByteLength } from "@nbd/codec";
 * console.log(exportNameReplyByteLength({ type: "export-name-reply", size: 0n, transmissionFlags: 1, zeroPadding: true })); // 134
 * ```
 */
export function exportNameReplyByteLength(frame: EncoderInput<ExportNameReply>): number {
  return frame.zeroPadding ? 134 : 10;
}

/**
 * Encodes an `NBD_OPT_EXPORT_NAME` reply into `target` at `offset`; returns the bytes written.
 *
 * @example
 * ```ts
 * import { encodeExportNameReplyInto } from "@nbd/codec";
 * const buf = new Uint8Array(10);
 * const n = encodeExportNameReplyInto({ type: "export-name-reply", size: 1n, transmissionFlags: 1, zeroPadding: false }, buf, 0);
 * console.log(n, buf[7], buf[9]); // 10 1 1
 * ```
 */
export function encodeExportNameReplyInto(
  frame: EncoderInput<ExportNameReply>,
  target: Uint8Array,
  offset: number,
): number {
  const len = exportNameReplyByteLength(frame);
  checkU64(frame.size, "export size");
  checkU16(frame.transmissionFlags, "transmission flags");
  checkTarget(target, offset, len, "export name reply");
  put64(target, offset, frame.size);
  put16(target, offset + 8, frame.transmissionFlags);
  if (len > 10) target.fill(0, offset + 10, offset + len);
  return len;
}

/**
 * Encodes an `NBD_OPT_EXPORT_NAME` reply into a new array.
 *
 * @example
 * ```ts
 * import { encodeExportNameReply } from "@nbd/codec";
 * const b = encodeExportNameReply({ type: "export-name-reply", size: 0n, transmissionFlags: 1, zeroPadding: true });
 * console.log(b.length); // 134
 * ```
 */
export function encodeExportNameReply(frame: EncoderInput<ExportNameReply>): Uint8Array {
  const out = new Uint8Array(exportNameReplyByteLength(frame));
  encodeExportNameReplyInto(frame, out, 0);
  return out;
}

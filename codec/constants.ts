/**
 * Every constant of the NBD protocol: magic numbers and one `as const` object per code space, keyed by the
 * spec name without its prefix, with {@link nameOf}, {@link codeOf} and {@link flagNames} lookups.
 *
 * @module
 */

/**
 * Magic numbers. The 64-bit ones are `bigint`.
 *
 * @example
 * ```ts
 * import { Magic } from "@nbd/codec";
 * console.log(Magic.REQUEST.toString(16)); // "25609513"
 * ```
 */
export const Magic = {
  /** "NBDMAGIC": the first 8 bytes of every greeting. */
  NBDMAGIC: 0x4e42444d41474943n,
  /** "IHAVEOPT": bytes 8-15 of the newstyle greeting and the start of every option request. */
  IHAVEOPT: 0x49484156454f5054n,
  /** `cliserv_magic`: bytes 8-15 of the oldstyle greeting. */
  CLISERV: 0x0000420281861253n,
  /** The option reply magic. */
  OPTION_REPLY: 0x0003e889045565a9n,
  /** Compact request. */
  REQUEST: 0x25609513,
  /** Extended request (extended headers). */
  EXTENDED_REQUEST: 0x21e41c71,
  /** Simple reply (formerly NBD_REPLY_MAGIC). */
  SIMPLE_REPLY: 0x67446698,
  /** Structured reply chunk. */
  STRUCTURED_REPLY: 0x668e33ef,
  /** Extended reply chunk (extended headers). */
  EXTENDED_REPLY: 0x6e8a278c,
} as const;

/**
 * Handshake flags of the newstyle greeting (16 bits).
 *
 * @example
 * ```ts
 * import { HandshakeFlag } from "@nbd/codec";
 * console.log(HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES); // 3
 * ```
 */
export const HandshakeFlag = {
  FIXED_NEWSTYLE: 0x0001,
  NO_ZEROES: 0x0002,
} as const;
/** A handshake flag value. @example `const f: HandshakeFlag = HandshakeFlag.NO_ZEROES;` */
export type HandshakeFlag = (typeof HandshakeFlag)[keyof typeof HandshakeFlag];

/**
 * Client flags (32 bits), sent after the newstyle greeting.
 *
 * @example
 * ```ts
 * import { ClientFlag } from "@nbd/codec";
 * console.log(ClientFlag.C_NO_ZEROES); // 2
 * ```
 */
export const ClientFlag = {
  C_FIXED_NEWSTYLE: 0x0001,
  C_NO_ZEROES: 0x0002,
} as const;
/** A client flag value. @example `const f: ClientFlag = ClientFlag.C_FIXED_NEWSTYLE;` */
export type ClientFlag = (typeof ClientFlag)[keyof typeof ClientFlag];

/**
 * Transmission (export) flags, 16 bits: all 13 assigned bits.
 *
 * @example
 * ```ts
 * import { TransmissionFlag } from "@nbd/codec";
 * console.log(TransmissionFlag.HAS_FLAGS | TransmissionFlag.READ_ONLY); // 3
 * ```
 */
export const TransmissionFlag = {
  HAS_FLAGS: 0x0001,
  READ_ONLY: 0x0002,
  SEND_FLUSH: 0x0004,
  SEND_FUA: 0x0008,
  ROTATIONAL: 0x0010,
  SEND_TRIM: 0x0020,
  SEND_WRITE_ZEROES: 0x0040,
  SEND_DF: 0x0080,
  CAN_MULTI_CONN: 0x0100,
  /** Experimental (resize extension). */
  SEND_RESIZE: 0x0200,
  SEND_CACHE: 0x0400,
  SEND_FAST_ZERO: 0x0800,
  /** Experimental (extended headers): the block-status payload form is supported. */
  BLOCK_STATUS_PAYLOAD: 0x1000,
} as const;
/** A transmission flag value. @example `const f: TransmissionFlag = TransmissionFlag.SEND_FLUSH;` */
export type TransmissionFlag = (typeof TransmissionFlag)[keyof typeof TransmissionFlag];

/**
 * Option codes (`NBD_OPT_*`).
 *
 * @example
 * ```ts
 * import { Option } from "@nbd/codec";
 * console.log(Option.GO); // 7
 * ```
 */
export const Option = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  /** Withdrawn in 2015; never valid on the wire. Decoded and named so that it can be reported. */
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  /** Experimental (extended headers). */
  EXTENDED_HEADERS: 11,
} as const;
/** An option code. @example `const o: Option = Option.LIST;` */
export type Option = (typeof Option)[keyof typeof Option];

/**
 * Option reply types (`NBD_REP_*`). Bit 31 marks an error.
 *
 * @example
 * ```ts
 * import { OptionReply } from "@nbd/codec";
 * console.log(OptionReply.ERR_UNSUP.toString(16)); // "80000001"
 * ```
 */
export const OptionReply = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  ERR_TOO_BIG: 0x80000009,
  /** Experimental (extended headers). */
  ERR_EXT_HEADER_REQD: 0x8000000a,
} as const;
/** An option reply type. @example `const t: OptionReply = OptionReply.ACK;` */
export type OptionReply = (typeof OptionReply)[keyof typeof OptionReply];

/**
 * Info types (`NBD_INFO_*`) carried in `NBD_REP_INFO` and requested by INFO and GO.
 *
 * `INIT_FLAGS` (4) is the 2020 proposal (named `NBD_INFO_INIT_STATE` there) that was never merged into
 * the spec; this codec supports it by default, and {@link codeOf} also accepts the name `INIT_STATE`.
 *
 * @example
 * ```ts
 * import { Info } from "@nbd/codec";
 * console.log(Info.BLOCK_SIZE, Info.INIT_FLAGS); // 3 4
 * ```
 */
export const Info = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
  /** Proposed in 2020 (as NBD_INFO_INIT_STATE), never merged. */
  INIT_FLAGS: 4,
} as const;
/** An info type. @example `const i: Info = Info.EXPORT;` */
export type Info = (typeof Info)[keyof typeof Info];

/**
 * Bits of `NBD_INFO_INIT_FLAGS` (proposed, never merged).
 *
 * @example
 * ```ts
 * import { InitFlag } from "@nbd/codec";
 * console.log(InitFlag.SPARSE | InitFlag.ZERO); // 3
 * ```
 */
export const InitFlag = {
  /** The image has at least one hole. */
  SPARSE: 0x0001,
  /** The image reads as all zeroes. */
  ZERO: 0x0002,
} as const;
/** An init flag value. @example `const f: InitFlag = InitFlag.ZERO;` */
export type InitFlag = (typeof InitFlag)[keyof typeof InitFlag];

/**
 * Command types (`NBD_CMD_*`).
 *
 * @example
 * ```ts
 * import { Command } from "@nbd/codec";
 * console.log(Command.BLOCK_STATUS); // 7
 * ```
 */
export const Command = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  /** Experimental (resize extension): offset is the new size. */
  RESIZE: 8,
} as const;
/** A command type. @example `const c: Command = Command.READ;` */
export type Command = (typeof Command)[keyof typeof Command];

/**
 * Command flags (16 bits).
 *
 * @example
 * ```ts
 * import { CommandFlag } from "@nbd/codec";
 * console.log(CommandFlag.FUA | CommandFlag.NO_HOLE); // 3
 * ```
 */
export const CommandFlag = {
  FUA: 0x0001,
  NO_HOLE: 0x0002,
  DF: 0x0004,
  REQ_ONE: 0x0008,
  FAST_ZERO: 0x0010,
  /** Experimental (extended headers): the length field is the payload length. */
  PAYLOAD_LEN: 0x0020,
} as const;
/** A command flag value. @example `const f: CommandFlag = CommandFlag.FUA;` */
export type CommandFlag = (typeof CommandFlag)[keyof typeof CommandFlag];

/**
 * Reply flags of structured and extended chunks (16 bits).
 *
 * @example
 * ```ts
 * import { ReplyFlag } from "@nbd/codec";
 * console.log(ReplyFlag.DONE); // 1
 * ```
 */
export const ReplyFlag = {
  DONE: 0x0001,
} as const;
/** A reply flag value. @example `const f: ReplyFlag = ReplyFlag.DONE;` */
export type ReplyFlag = (typeof ReplyFlag)[keyof typeof ReplyFlag];

/**
 * Reply chunk types (`NBD_REPLY_TYPE_*`). Bit 15 marks an error chunk.
 *
 * @example
 * ```ts
 * import { ReplyType } from "@nbd/codec";
 * console.log(ReplyType.ERROR.toString(16)); // "8001"
 * ```
 */
export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  /** Experimental (extended headers). */
  BLOCK_STATUS_EXT: 6,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;
/** A reply chunk type. @example `const t: ReplyType = ReplyType.NONE;` */
export type ReplyType = (typeof ReplyType)[keyof typeof ReplyType];

/**
 * Error values of simple replies and error chunks (`NBD_E*`).
 *
 * @example
 * ```ts
 * import { ErrorValue } from "@nbd/codec";
 * console.log(ErrorValue.EIO); // 5
 * ```
 */
export const ErrorValue = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;
/** An error value. @example `const e: ErrorValue = ErrorValue.EINVAL;` */
export type ErrorValue = (typeof ErrorValue)[keyof typeof ErrorValue];

/**
 * The code spaces that {@link nameOf}, {@link codeOf} and {@link flagNames} know.
 *
 * @example
 * ```ts
 * import { type CodeSpace, nameOf } from "@nbd/codec";
 * const space: CodeSpace = "command";
 * console.log(nameOf(space, 0)); // "NBD_CMD_READ"
 * ```
 */
export type CodeSpace =
  | "handshakeFlag"
  | "clientFlag"
  | "transmissionFlag"
  | "option"
  | "optionReply"
  | "info"
  | "initFlag"
  | "command"
  | "commandFlag"
  | "replyFlag"
  | "replyType"
  | "error";

const SPACES: Record<
  CodeSpace,
  { readonly prefix: string; readonly table: Readonly<Record<string, number>> }
> = {
  handshakeFlag: { prefix: "NBD_FLAG_", table: HandshakeFlag },
  clientFlag: { prefix: "NBD_FLAG_", table: ClientFlag },
  transmissionFlag: { prefix: "NBD_FLAG_", table: TransmissionFlag },
  option: { prefix: "NBD_OPT_", table: Option },
  optionReply: { prefix: "NBD_REP_", table: OptionReply },
  info: { prefix: "NBD_INFO_", table: Info },
  initFlag: { prefix: "NBD_INIT_", table: InitFlag },
  command: { prefix: "NBD_CMD_", table: Command },
  commandFlag: { prefix: "NBD_CMD_FLAG_", table: CommandFlag },
  replyFlag: { prefix: "NBD_REPLY_FLAG_", table: ReplyFlag },
  replyType: { prefix: "NBD_REPLY_TYPE_", table: ReplyType },
  error: { prefix: "NBD_", table: ErrorValue },
};

/** Other names accepted by codeOf (never printed by nameOf). */
const ALIASES: Partial<Record<CodeSpace, Readonly<Record<string, number>>>> = {
  info: { INIT_STATE: Info.INIT_FLAGS },
  transmissionFlag: { BLOCK_STAT_PAYLOAD: TransmissionFlag.BLOCK_STATUS_PAYLOAD },
  error: { SUCCESS: 0 },
};

const BY_VALUE = new Map<CodeSpace, Map<number, string>>();
for (const space of Object.keys(SPACES) as CodeSpace[]) {
  const { prefix, table } = SPACES[space];
  const m = new Map<number, string>();
  for (const [k, v] of Object.entries(table)) m.set(v, prefix + k);
  BY_VALUE.set(space, m);
}

/**
 * The spec name of a code (`"NBD_CMD_READ"`), or `undefined` for a value the spec does not assign.
 *
 * @example
 * ```ts
 * import { nameOf } from "@nbd/codec";
 * console.log(nameOf("option", 7)); // "NBD_OPT_GO"
 * console.log(nameOf("info", 4)); // "NBD_INFO_INIT_FLAGS"
 * console.log(nameOf("command", 99)); // undefined
 * ```
 */
export function nameOf(space: CodeSpace, value: number): string | undefined {
  return BY_VALUE.get(space)!.get(value);
}

/**
 * The code for a name, with or without its prefix (`"NBD_OPT_GO"` or `"GO"`), or `undefined`. Also accepts
 * the proposal's name `INIT_STATE` for `NBD_INFO_INIT_FLAGS`, and qemu's `BLOCK_STAT_PAYLOAD`.
 *
 * @example
 * ```ts
 * import { codeOf } from "@nbd/codec";
 * console.log(codeOf("info", "NBD_INFO_INIT_STATE")); // 4
 * console.log(codeOf("command", "READ")); // 0
 * ```
 */
export function codeOf(space: CodeSpace, name: string): number | undefined {
  const { prefix, table } = SPACES[space];
  const key = name.startsWith(prefix) ? name.slice(prefix.length) : name;
  if (Object.hasOwn(table, key)) return table[key];
  const alias = ALIASES[space];
  if (alias !== undefined && Object.hasOwn(alias, key)) return alias[key];
  return undefined;
}

/**
 * The names of the bits set in a flags value, lowest bit first; bits without a name appear as hex
 * (`"0x4000"`).
 *
 * @example
 * ```ts
 * import { flagNames } from "@nbd/codec";
 * console.log(flagNames("commandFlag", 0x0021)); // ["NBD_CMD_FLAG_FUA", "NBD_CMD_FLAG_PAYLOAD_LEN"]
 * console.log(flagNames("handshakeFlag", 0x8001)); // ["NBD_FLAG_FIXED_NEWSTYLE", "0x8000"]
 * ```
 */
export function flagNames(space: CodeSpace, flags: number): string[] {
  const names: string[] = [];
  const m = BY_VALUE.get(space)!;
  for (let bit = 0; bit < 32; bit++) {
    const v = 2 ** bit;
    if (Math.floor(flags / v) % 2 === 1) names.push(m.get(v) ?? "0x" + v.toString(16).padStart(4, "0"));
  }
  return names;
}

/** Known bit masks, for reserved-bit checks. */
export const KNOWN_HANDSHAKE_FLAGS = 0x0003;
/** Known client flag bits. */
export const KNOWN_CLIENT_FLAGS = 0x0003;

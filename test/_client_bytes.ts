/**
 * Hand-written server bytes for the client session tests, straight from the spec's frame tables (never
 * from our encoders): hex strings built field by field.
 */
import type { ClientEvent, ClientSession, ClientSessionOptions } from "../mod.ts";
import { ClientSession as Session } from "../mod.ts";

export const hex = (s: string): Uint8Array =>
  Uint8Array.from(s.replace(/\s+/g, "").match(/../g) ?? [], (h) => parseInt(h, 16));
export const toHex = (b: Uint8Array): string =>
  Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
export const u16 = (n: number): string => n.toString(16).padStart(4, "0");
export const u32 = (n: number): string => (n >>> 0).toString(16).padStart(8, "0");
export const u64 = (n: number | bigint): string => BigInt(n).toString(16).padStart(16, "0");
export const ascii = (s: string): string => toHex(new TextEncoder().encode(s));

/** Greeting: NBDMAGIC, IHAVEOPT, handshake flags (16 bits). */
export const greeting = (flags: number): string => "4e42444d41474943" + "49484156454f5054" + u16(flags);
/** Oldstyle greeting: NBDMAGIC, cliserv magic, size, flags (32 bits), 124 zero bytes. */
export const oldGreeting = (size: bigint, flags: number): string =>
  "4e42444d41474943" + "0000420281861253" + u64(size) + u32(flags) + "00".repeat(124);
/** Option reply: magic, option, reply type, length, data. */
export const optReply = (option: number, reply: number, data = ""): string =>
  "0003e889045565a9" + u32(option) + u32(reply) + u32(data.length / 2) + data;
export const ACK = 1;
export const SERVER = 2;
export const INFO = 3;
export const META = 4;
export const ERR_UNSUP = 0x80000001;
export const ERR_TLS_REQD = 0x80000005;
export const ERR_UNKNOWN = 0x80000006;
export const infoExport = (size: bigint, flags: number): string => u16(0) + u64(size) + u16(flags);
export const infoBlockSize = (min: number, pref: number, max: number): string =>
  u16(3) + u32(min) + u32(pref) + u32(max);
export const infoInitFlags = (flags: number): string => u16(4) + u16(flags);
export const metaContext = (id: number, name: string): string => u32(id) + ascii(name);
export const serverReply = (name: string, description: string): string =>
  u32(new TextEncoder().encode(name).length) + ascii(name) + ascii(description);

/** Client option request: IHAVEOPT, option, length, data. */
export const optRequest = (option: number, data = ""): string =>
  "49484156454f5054" + u32(option) + u32(data.length / 2) + data;
/** Compact request: magic, flags, type, cookie, offset, u32 length. */
export const request = (
  flags: number,
  cmd: number,
  cookie: bigint | number,
  offset: bigint | number,
  length: number,
): string => "25609513" + u16(flags) + u16(cmd) + u64(cookie) + u64(offset) + u32(length);
/** Extended request: magic, flags, type, cookie, offset, u64 length. */
export const extRequest = (
  flags: number,
  cmd: number,
  cookie: bigint | number,
  offset: bigint | number,
  length: bigint | number,
): string => "21e41c71" + u16(flags) + u16(cmd) + u64(cookie) + u64(offset) + u64(length);

/** Simple reply: magic, error, cookie, data. */
export const simple = (error: number, cookie: bigint | number, data = ""): string =>
  "67446698" + u32(error) + u64(cookie) + data;
/** Structured chunk: magic, flags, type, cookie, u32 length, payload. */
export const chunk = (flags: number, type: number, cookie: bigint | number, payload = ""): string =>
  "668e33ef" + u16(flags) + u16(type) + u64(cookie) + u32(payload.length / 2) + payload;
/** Extended chunk: magic, flags, type, cookie, offset, u64 length, payload. */
export const extChunk = (
  flags: number,
  type: number,
  cookie: bigint | number,
  offset: bigint | number,
  payload = "",
): string =>
  "6e8a278c" + u16(flags) + u16(type) + u64(cookie) + u64(offset) + u64(payload.length / 2) + payload;
export const DONE = 1;
export const T_NONE = 0;
export const T_DATA = 1;
export const T_HOLE = 2;
export const T_BS = 5;
export const T_BS_EXT = 6;
export const T_ERROR = 0x8001;
export const T_ERROR_OFFSET = 0x8002;
export const dataPayload = (offset: bigint | number, data: string): string => u64(offset) + data;
export const holePayload = (offset: bigint | number, size: number): string => u64(offset) + u32(size);
export const errorPayload = (error: number, message: string): string =>
  u32(error) + u16(message.length) + ascii(message);
export const bsPayload = (id: number, extents: [number, number][]): string =>
  u32(id) + extents.map(([l, s]) => u32(l) + u32(s)).join("");
export const bsExtPayload = (id: number, extents: [bigint | number, bigint | number][]): string =>
  u32(id) + u32(extents.length) + extents.map(([l, s]) => u64(l) + u64(s)).join("");

/** Everything the session wants to send, as one hex string. */
export function out(s: ClientSession): string {
  return s.takeOutput().map(toHex).join("");
}

/** NBD_FLAG_SEND_DF. */
const SEND_DF = 0x0080;

export interface Ready {
  readonly session: ClientSession;
  readonly events: ClientEvent[];
}

/**
 * Drives a new session through the automatic handshake against a fixed-newstyle NO_ZEROES server that
 * accepts `mode` and, with structured replies, the given contexts; GO answers with the export (its flags
 * without NBD_FLAG_SEND_DF in simple mode, which a server MUST NOT advertise then).
 */
export function ready(
  mode: "simple" | "structured" | "extended",
  flags: number,
  size: bigint = 1n << 20n,
  contexts: [number, string][] = [],
  extra: { blockSize?: [number, number, number]; options?: ClientSessionOptions } = {},
): Ready {
  const s = new Session({
    ...(contexts.length > 0 ? { go: { name: "", contexts: contexts.map(([, n]) => n) } } : {}),
    ...extra.options,
  });
  const events: ClientEvent[] = [];
  const feed = (h: string) => events.push(...s.receive(hex(h)));
  feed(greeting(3));
  out(s);
  if (mode === "extended") feed(optReply(11, ACK));
  else {
    feed(optReply(11, ERR_UNSUP));
    feed(optReply(8, mode === "structured" ? ACK : ERR_UNSUP));
  }
  if (mode !== "simple" && contexts.length > 0) {
    feed(contexts.map(([id, n]) => optReply(10, META, metaContext(id, n))).join("") + optReply(10, ACK));
  }
  const bs = extra.blockSize ? optReply(7, INFO, infoBlockSize(...extra.blockSize)) : "";
  // A server MUST NOT advertise NBD_FLAG_SEND_DF (0x80) without structured replies or extended headers.
  const advertised = mode === "simple" ? flags & ~SEND_DF : flags;
  feed(optReply(7, INFO, infoExport(size, advertised)) + bs + optReply(7, ACK));
  out(s);
  return { session: s, events };
}

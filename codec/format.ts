/**
 * Dissector output: the events of the conversation decoder as JSON objects (one per frame, for JSON
 * Lines) and as human-readable text (one block per frame, every field named with its spec name, in the
 * manner of `tshark -V -O nbd`). Pure: the caller writes the strings wherever it likes.
 *
 * Conventions of the JSON form (documented in `docs/dissect.md`):
 * - 64-bit wire values (sizes, offsets, cookies, 64-bit lengths, statuses) are decimal strings, never
 *   numbers, so that no value above 2^53 is rounded; 16- and 32-bit values are numbers.
 * - Codes are spec names (`"NBD_CMD_READ"`); a value the spec does not assign is written as the code
 *   space's prefix, `UNKNOWN` and the decimal value: `"NBD_CMD_UNKNOWN(99)"`, `"NBD_OPT_UNKNOWN(12)"`,
 *   `"NBD_REPLY_TYPE_UNKNOWN(3)"`, `"NBD_UNKNOWN(99)"` for an error value.
 * - Flags are arrays of names, lowest bit first; a bit without a name is written in hex (`"0x4000"`).
 * - Data bytes are never printed, only their length (`dataLength`).
 * - Events of a capture (see `nbd-codec/trace`) also have `packet`, `firstPacket`, `time`, `client`,
 *   `server`, and for replies `requestPacket`, `requestTime`, `responseTime`: times are decimal strings of
 *   seconds with 9 digits (exact nanoseconds), endpoints `address:port` (`[address]:port` for IPv6).
 *
 * @module
 */
import { type CodeSpace, flagNames, nameOf, ReplyType } from "./constants.ts";
import type { Finding } from "./errors.ts";
import type { ConversationEvent, ConversationFrame, ConversationNotice } from "./events.ts";
import { describeStatus } from "./metadata.ts";
import type { OptionRequest } from "./option.ts";
import type { InfoPayload, OptionReplyFrame } from "./option_reply.ts";
import type { Request } from "./request.ts";
import type { ReplyChunk, SimpleReply } from "./reply.ts";
import type { TcpEndpoint } from "./tcp.ts";
import type { TraceEvent, TraceFrame, TraceInfo, TraceInfoSlot } from "./trace_event.ts";

/** Trace fields as an event has them, or as a detached dissector's slot does. */
type TraceFields = TraceInfo | Readonly<TraceInfoSlot>;

/**
 * A JSON value as the formatters produce it: no `bigint`, no `undefined`, no bytes.
 *
 * @example
 * ```ts
 * import type { JsonValue } from "@nbd/codec";
 * const v: JsonValue = { cookie: "18446744073709551615", flags: ["NBD_CMD_FLAG_FUA"] };
 * console.log(JSON.stringify(v));
 * ```
 */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/**
 * A JSON object: what {@link formatEventJson} returns for each event.
 *
 * @example
 * ```ts
 * import type { JsonObject } from "@nbd/codec";
 * const o: JsonObject = { kind: "client-flags", clientFlags: ["NBD_FLAG_C_FIXED_NEWSTYLE"] };
 * console.log(o.kind); // "client-flags"
 * ```
 */
export type JsonObject = { [key: string]: JsonValue };

const PREFIX: Record<CodeSpace, string> = {
  handshakeFlag: "NBD_FLAG_",
  clientFlag: "NBD_FLAG_C_",
  transmissionFlag: "NBD_FLAG_",
  option: "NBD_OPT_",
  optionReply: "NBD_REP_",
  info: "NBD_INFO_",
  initFlag: "NBD_INIT_",
  command: "NBD_CMD_",
  commandFlag: "NBD_CMD_FLAG_",
  replyFlag: "NBD_REPLY_FLAG_",
  replyType: "NBD_REPLY_TYPE_",
  error: "NBD_",
};

/**
 * The spec name of a code, or for a value the spec does not assign, the code space's prefix followed by
 * `UNKNOWN(value)` in decimal: the form every formatter uses.
 *
 * @example
 * ```ts
 * import { codeName } from "@nbd/codec";
 * console.log(codeName("command", 0)); // "NBD_CMD_READ"
 * console.log(codeName("command", 99)); // "NBD_CMD_UNKNOWN(99)"
 * console.log(codeName("error", 200)); // "NBD_UNKNOWN(200)"
 * ```
 */
export function codeName(space: CodeSpace, value: number): string {
  return nameOf(space, value) ?? `${PREFIX[space]}UNKNOWN(${value})`;
}

/** Flag names by code space and value: real traffic repeats a handful of flag values. */
const FLAG_CACHE = new Map<CodeSpace, Map<number, readonly string[]>>();

/** `flagNames`, memoized; callers copy the array before handing it out. */
function names(space: CodeSpace, flags: number): readonly string[] {
  let m = FLAG_CACHE.get(space);
  if (m === undefined) FLAG_CACHE.set(space, m = new Map());
  let n = m.get(flags);
  if (n === undefined) {
    n = flagNames(space, flags);
    if (m.size < 1024) m.set(flags, n);
  }
  return n;
}

function flagList(space: CodeSpace, flags: number): string[] {
  return [...names(space, flags)];
}

const UTF8 = new TextEncoder();

const EXTENDED_REQUEST_HEADER = 32;
const COMPACT_REQUEST_HEADER = 28;
const SIMPLE_REPLY_HEADER = 16;
const EXTENDED_CHUNK_HEADER = 32;
const STRUCTURED_CHUNK_HEADER = 20;
const OPTION_HEADER = 16;
const OPTION_REPLY_HEADER = 20;

function findingsJson(findings: readonly Finding[]): JsonValue[] {
  const out: JsonValue[] = [];
  for (const f of findings) out.push({ code: f.code, offset: f.offset, rule: f.rule, message: f.message });
  return out;
}

function requestHeaderLength(r: Request): number {
  return r.extended ? EXTENDED_REQUEST_HEADER : COMPACT_REQUEST_HEADER;
}

function chunkHeaderLength(c: ReplyChunk): number {
  return c.extended ? EXTENDED_CHUNK_HEADER : STRUCTURED_CHUNK_HEADER;
}

/** One block-status extent as the formatters show it. */
interface Extent {
  readonly offset: bigint | undefined;
  readonly length: bigint;
  readonly status: bigint;
  readonly description: string | undefined;
}

/**
 * The extents of a block-status chunk: absolute offsets from the request's offset when the request is
 * known, labels from `describeStatus` when the context name is known. A lazy loop rather than
 * `toExtents`, so that a hostile chunk whose lengths run past 2^64 - 1 is still shown, not thrown.
 */
function extentsOf(e: ConversationFrame, c: ReplyChunk): Extent[] {
  if (c.payload.kind !== "block-status") return [];
  const d = c.payload.descriptors;
  const name = e.contextName;
  let offset: bigint | undefined = e.request?.offset;
  const out: Extent[] = [];
  for (let i = 0; i < d.count; i++) {
    const length = d.lengthAt(i);
    const status = d.statusAt(i);
    out.push({
      offset,
      length,
      status,
      description: name === undefined ? undefined : describeStatus(name, status),
    });
    if (offset !== undefined) offset += length;
  }
  return out;
}

function optionRequestJson(o: JsonObject, f: OptionRequest, frameLength: number): void {
  o.option = codeName("option", f.option);
  const d = f.data;
  switch (d.kind) {
    case "none":
      break;
    case "export-name":
      o.exportName = d.name;
      break;
    case "info-request":
      o.exportName = d.name;
      o.infoRequests = d.info.map((i) => codeName("info", i));
      break;
    case "meta-context-query":
      o.exportName = d.name;
      o.queries = [...d.queries];
      break;
    case "raw":
      o.dataLength = frameLength - OPTION_HEADER;
      break;
  }
}

function infoJson(o: JsonObject, p: InfoPayload): void {
  o.info = codeName("info", p.info);
  switch (p.kind) {
    case "export":
      o.size = String(p.size);
      o.transmissionFlags = flagList("transmissionFlag", p.transmissionFlags);
      break;
    case "name":
      o.name = p.name;
      break;
    case "description":
      o.description = p.description;
      break;
    case "block-size":
      o.minimumBlockSize = p.minimum;
      o.preferredBlockSize = p.preferred;
      o.maximumPayloadSize = p.maximum;
      break;
    case "init-flags":
      o.initFlags = flagList("initFlag", p.flags);
      break;
    case "unknown":
      o.dataLength = p.raw.length;
      break;
  }
}

function optionReplyJson(o: JsonObject, f: OptionReplyFrame, frameLength: number): void {
  o.option = codeName("option", f.option);
  o.reply = codeName("optionReply", f.reply);
  const d = f.data;
  switch (d.kind) {
    case "none":
      break;
    case "server":
      o.exportName = d.name;
      o.description = d.description;
      break;
    case "info":
      infoJson(o, d.info);
      break;
    case "meta-context":
      o.contextId = d.id;
      o.context = d.name;
      break;
    case "error":
      o.message = d.message;
      break;
    case "raw":
      o.dataLength = frameLength - OPTION_REPLY_HEADER;
      break;
  }
}

function requestJson(o: JsonObject, f: Request, frameLength: number): void {
  o.command = codeName("command", f.command);
  o.flags = flagList("commandFlag", f.flags);
  o.cookie = String(f.cookie);
  o.extendedHeader = f.extended;
  o.offset = String(f.offset);
  o.length = String(f.length);
  const payload = frameLength - requestHeaderLength(f);
  if (f.blockStatus !== undefined) {
    o.effectLength = String(f.blockStatus.effectLength);
    o.contextIds = [...f.blockStatus.contextIds];
  } else if (payload > 0) {
    o.dataLength = payload;
  }
}

function simpleReplyJson(o: JsonObject, e: ConversationFrame, f: SimpleReply): void {
  o.cookie = String(f.cookie);
  if (f.error !== 0) o.error = codeName("error", f.error);
  const data = e.frameLength - SIMPLE_REPLY_HEADER;
  if (data > 0) o.dataLength = data;
  if (e.request !== undefined) {
    // `command` too (as Wireshark's nbd.type on replies), so that a filter on the command sees replies.
    o.command = o.requestCommand = codeName("command", e.request.command);
  }
}

function chunkJson(o: JsonObject, e: ConversationFrame, f: ReplyChunk): void {
  o.flags = flagList("replyFlag", f.flags);
  o.chunkType = codeName("replyType", f.chunkType);
  o.cookie = String(f.cookie);
  o.extendedHeader = f.extended;
  if (f.offset !== undefined) o.headerOffset = String(f.offset);
  const payloadLength = e.frameLength - chunkHeaderLength(f);
  o.payloadLength = String(payloadLength);
  if (e.request !== undefined) {
    // `command` too (as Wireshark's nbd.type on replies), so that a filter on the command sees replies.
    o.command = o.requestCommand = codeName("command", e.request.command);
  }
  const p = f.payload;
  switch (p.kind) {
    case "none":
      break;
    case "offset-data":
      o.offset = String(p.offset);
      o.dataLength = payloadLength - 8;
      break;
    case "offset-hole":
      o.offset = String(p.offset);
      o.holeSize = p.holeSize;
      break;
    case "block-status": {
      o.contextId = p.descriptors.contextId;
      if (e.contextName !== undefined) o.context = e.contextName;
      o.descriptorCount = p.descriptors.count;
      const extents: JsonValue[] = [];
      for (const x of extentsOf(e, f)) {
        const j: JsonObject = {};
        if (x.offset !== undefined) j.offset = String(x.offset);
        j.length = String(x.length);
        j.status = String(x.status);
        if (x.description !== undefined) j.description = x.description;
        extents.push(j);
      }
      o.extents = extents;
      break;
    }
    case "error":
      if (p.error !== 0) o.error = codeName("error", p.error);
      o.message = p.message;
      if (p.offset !== undefined) o.offset = String(p.offset);
      if (p.raw !== undefined && p.raw.length > 0) o.trailerLength = p.raw.length;
      break;
    case "raw":
      o.dataLength = payloadLength;
      break;
  }
}

/** Adds an event's capture keys (none for raw streams). */
function traceJson(o: JsonObject, e: TraceInfo): void {
  const packet = e.packet;
  if (packet !== undefined) {
    o.packet = packet;
    o.firstPacket = e.firstPacket ?? packet;
    o.time = epochText(e.seconds ?? 0, e.nanoseconds ?? 0);
  }
  if (e.client !== undefined) o.client = endpointText(e.client);
  if (e.server !== undefined) o.server = endpointText(e.server);
  if (e.requestPacket !== undefined) {
    o.requestPacket = e.requestPacket;
    o.requestTime = epochText(e.requestSeconds ?? 0, e.requestNanoseconds ?? 0);
    if (e.responseNanoseconds !== undefined) o.responseTime = nanosText(e.responseNanoseconds);
  }
}

function frameJson(e: ConversationFrame & TraceInfo): JsonObject {
  const f = e.frame;
  const o: JsonObject = {
    connection: e.connection,
    direction: e.direction,
    frameOffset: e.frameOffset,
    frameLength: e.frameLength,
    kind: f.type,
  };
  traceJson(o, e);
  switch (f.type) {
    case "oldstyle-greeting":
      o.size = String(f.size);
      o.handshakeFlags = flagList("handshakeFlag", f.handshakeFlags);
      o.transmissionFlags = flagList("transmissionFlag", f.transmissionFlags);
      break;
    case "newstyle-greeting":
      o.handshakeFlags = flagList("handshakeFlag", f.handshakeFlags);
      break;
    case "client-flags":
      o.clientFlags = flagList("clientFlag", f.flags);
      break;
    case "option-request":
      optionRequestJson(o, f, e.frameLength);
      break;
    case "option-reply":
      optionReplyJson(o, f, e.frameLength);
      break;
    case "export-name-reply":
      o.size = String(f.size);
      o.transmissionFlags = flagList("transmissionFlag", f.transmissionFlags);
      o.zeroPadding = f.zeroPadding;
      break;
    case "request":
      requestJson(o, f, e.frameLength);
      break;
    case "simple-reply":
      simpleReplyJson(o, e, f);
      break;
    case "reply-chunk":
      chunkJson(o, e, f);
      break;
  }
  o.findings = findingsJson(e.findings);
  return o;
}

function noticeJson(e: ConversationNotice & TraceInfo): JsonObject {
  const o: JsonObject = {
    connection: e.connection,
    direction: e.direction,
    kind: e.notice,
    streamOffset: e.streamOffset,
    length: e.length,
  };
  traceJson(o, e);
  o.findings = findingsJson(e.findings);
  return o;
}

/**
 * One conversation event as a JSON object (see the module doc and `docs/dissect.md` for every key):
 * `connection`, `direction`, `frameOffset`, `frameLength`, `kind` (the frame type), the decoded fields
 * with spec names for codes, and `findings`. A notice becomes `{ connection, direction, kind: "tls" |
 * "undecodable" | "truncated", streamOffset, length, findings }`. Events of a capture (`TraceEvent`) also
 * get `packet`, `firstPacket`, `time`, `client`, `server` and, for replies and chunks, `requestPacket`,
 * `requestTime` and `responseTime` (times as decimal strings of seconds with 9 digits), before `findings`.
 * The object holds only strings, numbers, booleans and arrays/objects of them, so `JSON.stringify` takes it
 * as it is.
 *
 * @example
 * ```ts
 * import { formatEventJson } from "@nbd/codec";
 * const o = formatEventJson({
 *   event: "frame", connection: 0, direction: "c2s", frameOffset: 104, frameLength: 28, findings: [],
 *   frame: { type: "request", extended: false, flags: 1, command: 1, cookie: 2n ** 64n - 1n,
 *     offset: 4096n, length: 0n },
 * });
 * console.log(o.command, o.flags, o.cookie); // "NBD_CMD_WRITE" ["NBD_CMD_FLAG_FUA"] "18446744073709551615"
 * ```
 */
export function formatEventJson(event: ConversationEvent | TraceEvent): JsonObject {
  return event.event === "frame" ? frameJson(event) : noticeJson(event);
}

/**
 * One conversation event as a line of JSON Lines: `JSON.stringify(formatEventJson(event))`, without the
 * trailing newline.
 *
 * @example
 * ```ts
 * import { formatEventJsonLine } from "@nbd/codec";
 * console.log(formatEventJsonLine({
 *   event: "notice", notice: "tls", connection: 1, direction: "s2c", streamOffset: 120, length: 0, findings: [],
 * })); // {"connection":1,"direction":"s2c","kind":"tls","streamOffset":120,"length":0,"findings":[]}
 * ```
 */
export function formatEventJsonLine(event: ConversationEvent | TraceEvent): string {
  return JSON.stringify(formatEventJson(event));
}

// ---------------------------------------------------------------------------------------------------------
// Times and endpoints
// ---------------------------------------------------------------------------------------------------------

/** Nine digits of nanoseconds, zero-padded. */
function nine(ns: number): string {
  const t = String(ns);
  return t.length >= 9 ? t : "000000000".slice(t.length) + t;
}

/**
 * A duration in nanoseconds (an integer) as a decimal string of seconds with 9 digits: `211000` gives
 * `"0.000211000"`, `-1500000000` gives `"-1.500000000"`. Exact for every safe integer.
 *
 * @example
 * ```ts
 * import { formatNanoseconds } from "@nbd/codec/trace";
 * console.log(formatNanoseconds(211000)); // "0.000211000"
 * ```
 */
export function formatNanoseconds(ns: number): string {
  if (!Number.isSafeInteger(ns)) {
    if (!Number.isInteger(ns)) throw new RangeError(`Cannot format ${ns} ns: not an integer`);
    // Beyond 2^53 ns (104 days; a capture's timestamps may be 136 years apart) every double is an integer:
    // written exactly as the double it is, through bigint.
    const b = BigInt(ns);
    const a = b < 0n ? -b : b;
    return (b < 0n ? "-" : "") + String(a / 1_000_000_000n) + "." + nine(Number(a % 1_000_000_000n));
  }
  const neg = ns < 0;
  const a = neg ? -ns : ns;
  const r = a % 1e9;
  return (neg ? "-" : "") + String((a - r) / 1e9) + "." + nine(r);
}

const nanosText = formatNanoseconds;

/** A timestamp as `seconds.nnnnnnnnn` (seconds since 1970). */
function epochText(seconds: number, nanoseconds: number): string {
  return String(seconds) + "." + nine(nanoseconds);
}

/** `seconds - originSeconds` and `nanoseconds - originNanoseconds` as one exact decimal string. */
function sinceText(s: number, ns: number, os: number, ons: number): string {
  let ds = s - os;
  let dn = ns - ons;
  if (dn < 0 && ds > 0) {
    ds--;
    dn += 1e9;
  } else if (dn > 0 && ds < 0) {
    ds++;
    dn -= 1e9;
  }
  if (ds < 0 || dn < 0) return "-" + String(-ds) + "." + nine(-dn);
  return String(ds) + "." + nine(dn);
}

/** One cached endpoint text per slot: a connection's client and server repeat on every event. */
let endpointOf: TcpEndpoint | undefined = undefined;
let endpointString = "";

/**
 * An endpoint as `address:port`, or `[address]:port` for an IPv6 address (as Wireshark and URLs write it).
 *
 * @example
 * ```ts
 * import { formatEndpoint } from "@nbd/codec/trace";
 * console.log(formatEndpoint({ address: "::1", port: 10809 })); // "[::1]:10809"
 * ```
 */
export function formatEndpoint(endpoint: TcpEndpoint): string {
  if (endpoint === endpointOf) return endpointString;
  const a = endpoint.address;
  const text = (a.includes(":") ? "[" + a + "]" : a) + ":" + endpoint.port;
  endpointOf = endpoint;
  endpointString = text;
  return text;
}

const endpointText = formatEndpoint;

/** A timestamp as a UTC date and time with nanoseconds: `2026-12-06T23:45:40.123456789Z`. */
function utcText(seconds: number, nanoseconds: number): string {
  const iso = new Date(seconds * 1000).toISOString(); // 2026-12-06T23:45:40.000Z
  return iso.slice(0, 19) + "." + nine(nanoseconds) + "Z";
}

/**
 * How {@link formatEventText} shows the time of an event of a capture.
 *
 * @example
 * ```ts
 * import type { TextOptions } from "@nbd/codec";
 * const o: TextOptions = { time: "relative", originSeconds: 1795261489, originNanoseconds: 610000000 };
 * console.log(o.time); // "relative"
 * ```
 */
export interface TextOptions {
  /**
   * `"relative"` (default): seconds since the origin, with 9 digits (`0.000341000 s`); `"absolute"`: the
   * UTC date and time (`2026-12-06T23:45:40.000341000Z`).
   */
  readonly time?: "relative" | "absolute";
  /**
   * What relative times count from, seconds since 1970 (the capture's first packet for Wireshark's default
   * view, the previous frame for deltas). Default 0.
   */
  readonly originSeconds?: number;
  /** Nanoseconds of the origin. Default 0. */
  readonly originNanoseconds?: number;
}

/** ` (packet P, T s)` or ` (packets F-P, T s)` for an event of a capture, else "". */
function traceHead(e: TraceFields, o: TextOptions | undefined): string {
  const packet = e.packet;
  if (packet === undefined) return "";
  const first = e.firstPacket ?? packet;
  const s = e.seconds ?? 0;
  const ns = e.nanoseconds ?? 0;
  const time = o?.time === "absolute"
    ? utcText(s, ns)
    : sinceText(s, ns, o?.originSeconds ?? 0, o?.originNanoseconds ?? 0) + " s";
  return (first === packet ? " (packet " + packet : " (packets " + first + "-" + packet) + ", " + time + ")";
}

const T_REQUEST_IN = "\n    [Request in packet ";
const T_TIME_SINCE = "]\n    [Time since request: ";

/** `\n    [Request in packet N]\n    [Time since request: T s]` for a reply of a capture, else "". */
function responseText(e: TraceFields): string {
  const rp = e.requestPacket;
  if (rp === undefined) return "";
  const t = e.responseNanoseconds;
  return T_REQUEST_IN + rp + (t === undefined ? "]" : T_TIME_SINCE + nanosText(t) + " s]");
}

// ---------------------------------------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------------------------------------

const INDENT = "    ";

function hex(v: number, digits: number): string {
  return "0x" + v.toString(16).padStart(digits, "0");
}

function hexBig(v: bigint, digits: number): string {
  return "0x" + v.toString(16).padStart(digits, "0");
}

/** Memoized texts by code space: real traffic repeats a handful of values. */
const FLAG_TEXT_CACHE = new Map<CodeSpace, Map<number, string>>();
const CODE_TEXT_CACHE = new Map<CodeSpace, Map<number, string>>();

function spaceCache(caches: Map<CodeSpace, Map<number, string>>, space: CodeSpace): Map<number, string> {
  let m = caches.get(space);
  if (m === undefined) caches.set(space, m = new Map());
  return m;
}

/** `0x0003 (NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_NO_ZEROES)`; `0x0000` with no names. Memoized. */
function flagsText(space: CodeSpace, v: number, digits: number): string {
  // The digits are fixed per code space, so the value alone is the key.
  const m = spaceCache(FLAG_TEXT_CACHE, space);
  let t = m.get(v);
  if (t === undefined) {
    const n = names(space, v);
    t = n.length === 0 ? hex(v, digits) : `${hex(v, digits)} (${n.join(", ")})`;
    if (m.size < 1024) m.set(v, t);
  }
  return t;
}

/** `NBD_CMD_READ (0)`; error-style codes (bit 31 or 15 set) show their value in hex. Memoized. */
function codeText(space: CodeSpace, v: number, hexDigits?: number): string {
  const m = spaceCache(CODE_TEXT_CACHE, space);
  // Whether a value is shown in hex depends on the value only (bit 31 or 15), so the value is the key.
  let t = m.get(v);
  if (t === undefined) {
    t = `${codeName(space, v)} (${hexDigits === undefined ? v : hex(v, hexDigits)})`;
    if (m.size < 1024) m.set(v, t);
  }
  return t;
}

function quote(s: string): string {
  return JSON.stringify(s);
}

/** A text block under construction: string concatenation (V8 ropes) rather than an array to join. */
class Block {
  text: string;
  constructor(header: string) {
    this.text = header;
  }
  /** Adds an indented line. */
  add(text: string): void {
    this.text += "\n" + INDENT + text;
  }
}

function line(out: Block, label: string, value: string | number | bigint): void {
  out.text += "\n" + INDENT + label + ": " + value;
}

function optionRequestText(out: Block, f: OptionRequest, frameLength: number): void {
  line(out, "Magic", "0x49484156454f5054 (IHAVEOPT)");
  line(out, "Option", codeText("option", f.option));
  line(out, "Data length", frameLength - OPTION_HEADER);
  const d = f.data;
  switch (d.kind) {
    case "none":
      break;
    case "export-name":
      line(out, "Export name", quote(d.name));
      break;
    case "info-request":
      line(out, "Export name length", UTF8.encode(d.name).length);
      line(out, "Export name", quote(d.name));
      line(out, "Number of information requests", d.info.length);
      for (const i of d.info) line(out, "Information request", codeText("info", i));
      break;
    case "meta-context-query":
      line(out, "Export name length", UTF8.encode(d.name).length);
      line(out, "Export name", quote(d.name));
      line(out, "Number of queries", d.queries.length);
      for (const q of d.queries) line(out, "Query", quote(q));
      break;
    case "raw":
      line(out, "Data", `${frameLength - OPTION_HEADER} bytes (not decoded)`);
      break;
  }
}

function infoText(out: Block, p: InfoPayload): void {
  line(out, "Information type", codeText("info", p.info));
  switch (p.kind) {
    case "export":
      line(out, "Export size", p.size);
      line(out, "Transmission flags", flagsText("transmissionFlag", p.transmissionFlags, 4));
      break;
    case "name":
      line(out, "Export name", quote(p.name));
      break;
    case "description":
      line(out, "Description", quote(p.description));
      break;
    case "block-size":
      line(out, "Minimum block size", p.minimum);
      line(out, "Preferred block size", p.preferred);
      line(out, "Maximum payload size", p.maximum);
      break;
    case "init-flags":
      line(out, "Init flags", flagsText("initFlag", p.flags, 4));
      break;
    case "unknown":
      line(out, "Information", `${p.raw.length} bytes (not decoded)`);
      break;
  }
}

function optionReplyText(out: Block, f: OptionReplyFrame, frameLength: number): void {
  line(out, "Magic", "0x0003e889045565a9 (NBD_REP_MAGIC)");
  line(out, "Option", codeText("option", f.option));
  line(out, "Reply type", codeText("optionReply", f.reply, f.reply >= 0x8000_0000 ? 8 : undefined));
  line(out, "Data length", frameLength - OPTION_REPLY_HEADER);
  const d = f.data;
  switch (d.kind) {
    case "none":
      break;
    case "server":
      line(out, "Export name", quote(d.name));
      line(out, "Description", quote(d.description));
      break;
    case "info":
      infoText(out, d.info);
      break;
    case "meta-context":
      line(out, "Metadata context ID", d.id);
      line(out, "Metadata context name", quote(d.name));
      break;
    case "error":
      line(out, "Message", quote(d.message));
      break;
    case "raw":
      line(out, "Data", `${frameLength - OPTION_REPLY_HEADER} bytes (not decoded)`);
      break;
  }
}

/**
 * What a request's text holds before its cookie, from ` bytes: ` on (the rest of the header line, magic,
 * flags and type), by command, flags and header kind: memoized, so that the hottest block costs a few
 * concatenations of the values that change.
 */
const REQUEST_HEAD = new Map<number, string>();

/** The last key {@link requestHead} looked up, and its text: traffic repeats one command for long runs. */
let lastHeadKey = -1;
let lastHead = "";

function requestHead(f: Request): string {
  // The key packs two u16 values; a frame built by hand with other values is formatted without the memo.
  const memo = (f.command & 0xffff) === f.command && (f.flags & 0xffff) === f.flags;
  const key = f.command * 0x2_0000 + f.flags * 2 + (f.extended ? 1 : 0);
  if (memo && key === lastHeadKey) return lastHead;
  let t = memo ? REQUEST_HEAD.get(key) : undefined;
  if (t === undefined) {
    t = ` bytes: request${f.extended ? " (extended header)" : ""}
    Magic: ${f.extended ? "0x21e41c71 (NBD_EXTENDED_REQUEST_MAGIC)" : "0x25609513 (NBD_REQUEST_MAGIC)"}
    Command flags: ${flagsText("commandFlag", f.flags, 4)}
    Type: ${codeText("command", f.command)}
    Cookie: `;
    if (memo && REQUEST_HEAD.size < 1024) REQUEST_HEAD.set(key, t);
  }
  if (memo) {
    lastHeadKey = key;
    lastHead = t;
  }
  return t;
}

/**
 * The last request whose offset and length were turned into text, and those texts: its reply, which in
 * most traffic is the next frame, shows them again (a one-entry memo by identity; frames are immutable).
 */
let numbersOf: Request | undefined = undefined;
let offsetText = "";
let lengthText = "";

function requestNumbers(r: Request): void {
  if (r === numbersOf) return;
  numbersOf = r;
  offsetText = String(r.offset);
  lengthText = String(r.length);
}

// Literal parts of the hot kinds' text, shared by the string formatter and the byte writer below.
const T_FRAME = "Frame ";
const T_COMMA = ", ";
const T_OFFSET = "\n    Offset: ";
const T_LENGTH = "\n    Length: ";
const T_DATA = "\n    Data: ";
const T_BYTES = " bytes";
const T_REF_LENGTH = ", length ";

/** A request's text after the header line's `L` (frame length): see {@link requestHead}. */
function requestText(e: ConversationFrame, f: Request): string {
  requestNumbers(f);
  let text = requestHead(f) + f.cookie + T_OFFSET + offsetText + T_LENGTH + lengthText;
  const payload = e.frameLength - requestHeaderLength(f);
  if (f.blockStatus !== undefined) {
    const out = new Block(text);
    line(out, "Effect length", f.blockStatus.effectLength);
    for (const id of f.blockStatus.contextIds) line(out, "Metadata context ID", id);
    text = out.text;
  } else if (payload > 0) {
    text += T_DATA + payload + T_BYTES;
  }
  return text;
}

function requestRef(e: ConversationFrame): string | undefined {
  const r = e.request;
  if (r === undefined) return undefined;
  return `[Request: ${codeName("command", r.command)}, offset ${r.offset}, length ${r.length}]`;
}

/**
 * Texts memoized by a small key (an integer from 0 to {@link SMALL_KEYS} - 1: errors, commands, connection
 * and direction), in arrays: one element load where a Map would cost a call.
 */
const SMALL_KEYS = 1024;

function smallKey(k: number): boolean {
  return k >>> 0 === k && k < SMALL_KEYS;
}

/** A simple reply's text before its cookie, from ` bytes: ` on, by error: memoized. */
const SIMPLE_REPLY_HEAD: (string | undefined)[] = [];
/** `\n    [Request: NAME, offset `, by command: memoized. */
const REQUEST_REF_HEAD: (string | undefined)[] = [];

function simpleReplyHead(error: number): string {
  const memo = smallKey(error);
  let head = memo ? SIMPLE_REPLY_HEAD[error] : undefined;
  if (head === undefined) {
    head = ` bytes: simple-reply
    Magic: 0x67446698 (NBD_SIMPLE_REPLY_MAGIC)
    Error: ${error === 0 ? "0 (success)" : codeText("error", error)}
    Cookie: `;
    if (memo) SIMPLE_REPLY_HEAD[error] = head;
  }
  return head;
}

function simpleReplyText(e: ConversationFrame, f: SimpleReply, t: TraceFields): string {
  let text = simpleReplyHead(f.error) + f.cookie;
  const data = e.frameLength - SIMPLE_REPLY_HEADER;
  if (data > 0) text += T_DATA + data + T_BYTES;
  const r = e.request;
  if (r !== undefined) {
    requestNumbers(r);
    text += requestRefHead(r.command) + offsetText + T_REF_LENGTH + lengthText + "]" + responseText(t);
  }
  return text;
}

/** `\n    [Request: NAME, offset ` for a command: memoized. */
function requestRefHead(command: number): string {
  const memo = smallKey(command);
  let ref = memo ? REQUEST_REF_HEAD[command] : undefined;
  if (ref === undefined) {
    ref = `\n    [Request: ${codeName("command", command)}, offset `;
    if (memo) REQUEST_REF_HEAD[command] = ref;
  }
  return ref;
}

function chunkText(out: Block, e: ConversationFrame, f: ReplyChunk, t: TraceFields): void {
  line(
    out,
    "Magic",
    f.extended ? "0x6e8a278c (NBD_EXTENDED_REPLY_MAGIC)" : "0x668e33ef (NBD_STRUCTURED_REPLY_MAGIC)",
  );
  line(out, "Flags", flagsText("replyFlag", f.flags, 4));
  line(out, "Type", codeText("replyType", f.chunkType, (f.chunkType & 0x8000) !== 0 ? 4 : undefined));
  line(out, "Cookie", f.cookie);
  if (f.offset !== undefined) line(out, "Offset", f.offset);
  const payloadLength = e.frameLength - chunkHeaderLength(f);
  line(out, "Length", payloadLength);
  const p = f.payload;
  switch (p.kind) {
    case "none":
      break;
    case "offset-data":
      line(out, "Data offset", p.offset);
      line(out, "Data", `${payloadLength - 8} bytes`);
      break;
    case "offset-hole":
      line(out, "Hole offset", p.offset);
      line(out, "Hole size", p.holeSize);
      break;
    case "block-status": {
      const name = e.contextName;
      line(
        out,
        "Metadata context ID",
        name === undefined ? String(p.descriptors.contextId) : `${p.descriptors.contextId} (${name})`,
      );
      if (f.chunkType === ReplyType.BLOCK_STATUS_EXT) line(out, "Descriptor count", p.descriptors.count);
      const digits = p.descriptors.extended ? 16 : 8;
      for (const x of extentsOf(e, f)) {
        const at = x.offset === undefined ? "" : `offset ${x.offset}, `;
        const label = x.description === undefined ? "" : ` (${x.description})`;
        line(out, "Extent", `${at}length ${x.length}, status ${hexBig(x.status, digits)}${label}`);
      }
      break;
    }
    case "error":
      line(out, "Error", codeText("error", p.error));
      line(out, "Message length", UTF8.encode(p.message).length);
      line(out, "Message", quote(p.message));
      if (p.offset !== undefined) line(out, "Error offset", p.offset);
      if (p.raw !== undefined && p.raw.length > 0) line(out, "Trailer", `${p.raw.length} bytes`);
      break;
    case "raw":
      line(out, "Payload", `${payloadLength} bytes (not decoded)`);
      break;
  }
  const ref = requestRef(e);
  if (ref !== undefined) out.text += "\n" + INDENT + ref + responseText(t);
}

function findingsText(out: Block, findings: readonly Finding[]): void {
  for (const f of findings) {
    out.add(`[Finding] ${f.code} at ${f.offset}: ${f.message} (rule ${f.rule})`);
  }
}

/** `: connection C, DIR, offset ` (the middle of a header line), by connection and direction: memoized. */
const HEAD_MIDDLE: (string | undefined)[] = [];

function headMiddle(connection: number, direction: "c2s" | "s2c"): string {
  // The key packs the number and the direction: only for the numbers a decoder gives (0, 1, 2, ...).
  const key = connection * 2 + (direction === "c2s" ? 0 : 1);
  const memo = smallKey(connection) && smallKey(key) && (direction === "c2s" || direction === "s2c");
  let t = memo ? HEAD_MIDDLE[key] : undefined;
  if (t === undefined) {
    t = `: connection ${connection}, ${direction}, offset `;
    if (memo) HEAD_MIDDLE[key] = t;
  }
  return t;
}

/** The text of a frame event; `t` holds its trace fields (the event itself, or a detached dissector's slot). */
function frameText(e: ConversationFrame, n: number, o: TextOptions | undefined, t: TraceFields): string {
  const f = e.frame;
  // `Frame N (packet P, T s): connection C, DIR, offset O, L`: the rest of the header line comes with the
  // fields.
  const head = T_FRAME + n + traceHead(t, o) + headMiddle(e.connection, e.direction) + e.frameOffset +
    T_COMMA + e.frameLength;
  if (f.type === "request" || f.type === "simple-reply") {
    // The hot kinds: built in one string, no Block.
    const text = head + (f.type === "request" ? requestText(e, f) : simpleReplyText(e, f, t));
    if (e.findings.length === 0) return text;
    const out = new Block(text);
    findingsText(out, e.findings);
    return out.text;
  }
  const extended = f.type === "reply-chunk" && f.extended ? " (extended header)" : "";
  const out = new Block(head + " bytes: " + f.type + extended);
  switch (f.type) {
    case "oldstyle-greeting":
      line(out, "Magic", "0x4e42444d41474943 (NBDMAGIC)");
      line(out, "Magic", "0x0000420281861253 (cliserv_magic)");
      line(out, "Export size", f.size);
      line(out, "Handshake flags", flagsText("handshakeFlag", f.handshakeFlags, 4));
      line(out, "Transmission flags", flagsText("transmissionFlag", f.transmissionFlags, 4));
      break;
    case "newstyle-greeting":
      line(out, "Magic", "0x4e42444d41474943 (NBDMAGIC)");
      line(out, "Magic", "0x49484156454f5054 (IHAVEOPT)");
      line(out, "Handshake flags", flagsText("handshakeFlag", f.handshakeFlags, 4));
      break;
    case "client-flags":
      line(out, "Client flags", flagsText("clientFlag", f.flags, 8));
      break;
    case "option-request":
      optionRequestText(out, f, e.frameLength);
      break;
    case "option-reply":
      optionReplyText(out, f, e.frameLength);
      break;
    case "export-name-reply":
      line(out, "Export size", f.size);
      line(out, "Transmission flags", flagsText("transmissionFlag", f.transmissionFlags, 4));
      line(out, "Zeroes", f.zeroPadding ? "124 bytes" : "none (NBD_FLAG_NO_ZEROES)");
      break;
    case "reply-chunk":
      chunkText(out, e, f, t);
      break;
  }
  findingsText(out, e.findings);
  return out.text;
}

const NOTICE_TEXT: Record<ConversationNotice["notice"], string> = {
  tls: "TLS starts here; the rest of this direction is encrypted",
  undecodable: "bytes that are not NBD; the rest of this direction is skipped",
  truncated: "the stream ended inside a frame",
};

function noticeText(e: ConversationNotice, n: number, o: TextOptions | undefined, t: TraceFields): string {
  const out = new Block(
    `Notice ${n}${
      traceHead(t, o)
    }: connection ${e.connection}, ${e.direction}, offset ${e.streamOffset}, ${e.length} bytes: ${e.notice}`,
  );
  out.add(NOTICE_TEXT[e.notice]);
  findingsText(out, e.findings);
  return out.text;
}

/**
 * One conversation event as human-readable text: a header line (`Frame N: connection C, DIRECTION,
 * offset O, L bytes: KIND`), then one indented line per field with its spec name and value (codes as
 * `NAME (value)`, flags as `0xHEX (NAMES)`), then one `[Finding]` line per finding. Notices get a
 * `Notice N:` header. `n` is the event's number, counted by the caller (default 1). No trailing newline.
 * Anything but an event (a bare frame, a decode result) is a `TypeError`; `toJson` takes any of them.
 *
 * An event of a capture (`TraceEvent`, from `nbd-codec/trace`) also shows its packets and time after the
 * number (`Frame 16 (packet 27, 0.000341000 s): ...`, `packets 25-27` for a frame that spans packets;
 * times as `options` says), and a reply or chunk shows `[Request in packet N]` and
 * `[Time since request: T s]` after its `[Request: ...]` line, as Wireshark's `nbd.response_to` and
 * `nbd.time` do. A detached `CaptureDissector` keeps those fields in its reused `info` slot instead of the
 * event: pass the slot as `trace` (during the sink's call), and they are read from there.
 *
 * @example
 * ```ts
 * import { formatEventText } from "@nbd/codec";
 * console.log(formatEventText({
 *   event: "frame", connection: 0, direction: "s2c", frameOffset: 183, frameLength: 32, findings: [],
 *   frame: { type: "reply-chunk", extended: true, flags: 1, chunkType: 0, cookie: 1n, offset: 0n,
 *     payload: { kind: "none" } },
 * }, 13));
 * // Frame 13: connection 0, s2c, offset 183, 32 bytes: reply-chunk (extended header)
 * //     Magic: 0x6e8a278c (NBD_EXTENDED_REPLY_MAGIC)
 * //     Flags: 0x0001 (NBD_REPLY_FLAG_DONE)
 * //     ...
 * ```
 */
export function formatEventText(
  event: ConversationEvent | TraceEvent,
  n: number = 1,
  options?: TextOptions,
  trace?: TraceInfo | Readonly<TraceInfoSlot>,
): string {
  // A caller's mistake (a bare frame, a decode result) gets a TypeError that says what to pass instead.
  const tag = event === null || typeof event !== "object" ? undefined : (event as { event?: unknown }).event;
  if (tag !== "frame" && tag !== "notice") {
    const type = tag === undefined && event !== null && typeof event === "object"
      ? (event as { type?: unknown }).type
      : undefined;
    throw new TypeError(
      typeof type === "string"
        ? `Cannot format event: got a bare "${type}" frame; pass a conversation event, e.g. { event: "frame", connection: 0, direction: "c2s", frameOffset: 0, frameLength: 0, frame, findings: [] }`
        : `Cannot format event: expected a conversation event ({ event: "frame", ... } or { event: "notice", ... }), got ${
          event === null ? "null" : typeof event
        }`,
    );
  }
  const t: TraceFields = trace ?? (event as TraceEvent);
  return event.event === "frame" ? frameText(event, n, options, t) : noticeText(event, n, options, t);
}

// The text of the hot kinds written as UTF-8 bytes, for `nbd-codec dissect`: a capture of small requests is
// mostly these two kinds, and building each one's text as a string costs a dozen concatenations, a
// flattening copy and its encoding, and the garbage collector's time for all of them. Not part of the public
// API (mod.ts does not export it). The pieces are the same memoized strings the text formatter uses, encoded
// once; test/format_bytes.test.ts checks the bytes against formatEventText over random frames.

const ENCODER = new TextEncoder();
/** Encoded memoized pieces, by string (at most {@link MAX_ENCODED} of them). */
const ENCODED = new Map<string, Uint8Array>();
const MAX_ENCODED = 4096;

function encoded(s: string): Uint8Array {
  let b = ENCODED.get(s);
  if (b === undefined) {
    b = ENCODER.encode(s);
    if (ENCODED.size < MAX_ENCODED) ENCODED.set(s, b);
  }
  return b;
}

/** A one-entry cache of {@link encoded} per place that uses it (consecutive frames mostly repeat a piece). */
class Piece {
  text = "";
  bytes: Uint8Array = new Uint8Array(0);

  of(s: string): Uint8Array {
    if (s !== this.text) {
      this.text = s;
      this.bytes = encoded(s);
    }
    return this.bytes;
  }
}

const REQUEST_MIDDLE = new Piece();
const REQUEST_HEAD_BYTES = new Piece();
const REPLY_MIDDLE = new Piece();
const REPLY_HEAD_BYTES = new Piece();
const REF_HEAD_BYTES = new Piece();

/** "00" to "99". */
const TWO_DIGITS = ENCODER.encode(Array.from({ length: 100 }, (_, i) => String(i).padStart(2, "0")).join(""));
const B_FRAME = ENCODER.encode(T_FRAME);
const B_COMMA = ENCODER.encode(T_COMMA);
const B_OFFSET = ENCODER.encode(T_OFFSET);
const B_LENGTH = ENCODER.encode(T_LENGTH);
const B_DATA = ENCODER.encode(T_DATA);
const B_BYTES = ENCODER.encode(T_BYTES);
const B_REF_LENGTH = ENCODER.encode(T_REF_LENGTH);
const B_REF_END = ENCODER.encode("]\n\n");
const B_PACKET = ENCODER.encode(" (packet ");
const B_PACKETS = ENCODER.encode(" (packets ");
const B_SECONDS_END = ENCODER.encode(" s)");
const B_REQUEST_IN = ENCODER.encode("]" + T_REQUEST_IN);
const B_TIME_SINCE = ENCODER.encode(T_TIME_SINCE);
const B_BLANK = ENCODER.encode("\n\n");
const MAX_SAFE_BIG = BigInt(Number.MAX_SAFE_INTEGER);
const U64_END = 1n << 64n;
/** {@link writeHotFrameText}: the event is not one of the hot kinds. */
export const NOT_HOT = -1;
/** {@link writeHotFrameText}: the text might not fit in the buffer. */
export const NO_ROOM = -2;
/**
 * Bytes a frame needs besides its memoized pieces: at most 62 of literals, and 7 numbers of at most 25
 * characters (a u64 has at most 20 digits; any other number, as String() writes it, at most 25 characters),
 * and the capture's part: at most 80 bytes of literals, 3 packet numbers and 2 times of at most 60
 * characters.
 */
const HOT_FIXED_BYTES = 512;

function put(b: Uint8Array, p: number, s: Uint8Array): number {
  b.set(s, p);
  return p + s.length;
}

/** Writes a number's decimal text (as String(v) gives it). */
function putNumber(b: Uint8Array, p: number, v: number): number {
  if (!(v >= 0 && v <= Number.MAX_SAFE_INTEGER && Math.floor(v) === v)) {
    return put(b, p, ENCODER.encode(String(v)));
  }
  if (v < 10) {
    b[p] = 48 + v;
    return p + 1;
  }
  // The digit count by comparisons (no division: packet numbers and times make this the most called
  // writer).
  let len = 2;
  if (v >= 100) {
    if (v < 1e3) len = 3;
    else if (v < 1e4) len = 4;
    else if (v < 1e5) len = 5;
    else if (v < 1e6) len = 6;
    else if (v < 1e7) len = 7;
    else if (v < 1e8) len = 8;
    else if (v < 1e9) len = 9;
    else for (let x = v; x >= 100; x = Math.floor(x / 10)) len++;
  }
  let q = p + len;
  if (v <= 0x7fffffff) {
    // Below 2^31: int32 division (the remainder of a double is a call to fmod, and one value above 2^31
    // makes the optimised code use doubles for every value).
    let i = v | 0;
    while (i >= 100) {
      const d = (i / 100) | 0;
      const r = i - d * 100;
      i = d;
      b[--q] = TWO_DIGITS[r * 2 + 1]!;
      b[--q] = TWO_DIGITS[r * 2]!;
    }
    v = i;
  } else {
    while (v >= 100) {
      const r = v % 100;
      v = (v - r) / 100;
      b[--q] = TWO_DIGITS[r * 2 + 1]!;
      b[--q] = TWO_DIGITS[r * 2]!;
    }
  }
  if (v >= 10) {
    b[--q] = TWO_DIGITS[v * 2 + 1]!;
    b[--q] = TWO_DIGITS[v * 2]!;
  } else b[--q] = 48 + v;
  return p + len;
}

/** Nine digits of `v` (0..999999999), zero-padded. */
function putNine(b: Uint8Array, p: number, v: number): number {
  // Four pairs from the right (p+7..p+8, p+5..p+6, p+3..p+4, p+1..p+2), then the first digit.
  // int32 division, as putNumber below 2^31.
  let i = v | 0;
  for (let q = p + 7; q > p; q -= 2) {
    const d = (i / 100) | 0;
    const r = i - d * 100;
    i = d;
    b[q] = TWO_DIGITS[r * 2]!;
    b[q + 1] = TWO_DIGITS[r * 2 + 1]!;
  }
  b[p] = 48 + i;
  return p + 9;
}

/** A duration in nanoseconds as {@link formatNanoseconds} writes it. */
function putNanos(b: Uint8Array, p: number, ns: number): number {
  if (!(ns >= 0 && Number.isSafeInteger(ns))) return put(b, p, ENCODER.encode(nanosText(ns)));
  const r = ns % 1e9;
  p = putNumber(b, p, (ns - r) / 1e9);
  b[p] = 46; // "."
  return putNine(b, p + 1, r);
}

/** A duration below one second, in nanoseconds (0..999999999), as {@link formatNanoseconds} writes it. */
function putNanosSmall(b: Uint8Array, p: number, ns: number): number {
  b[p] = 48; // "0"
  b[p + 1] = 46; // "."
  return putNine(b, p + 2, ns);
}

/** The capture's part of the header line, as {@link traceHead} writes it. */
function putTraceHead(
  b: Uint8Array,
  p: number,
  e: TraceFields,
  os: number,
  ons: number,
  absolute: boolean,
): number {
  const packet = e.packet!;
  const first = e.firstPacket ?? packet;
  if (first === packet) p = put(b, p, B_PACKET);
  else {
    p = put(b, p, B_PACKETS);
    p = putNumber(b, p, first);
    b[p++] = 45; // "-"
  }
  p = putNumber(b, p, packet);
  b[p++] = 44; // ","
  b[p++] = 32;
  const s = e.seconds ?? 0;
  const ns = e.nanoseconds ?? 0;
  if (absolute) {
    p = put(b, p, ENCODER.encode(utcText(s, ns)));
    b[p++] = 41; // ")"
    return p;
  }
  let ds = s - os;
  let dn = ns - ons;
  if (dn < 0 && ds > 0) {
    ds--;
    dn += 1e9;
  }
  // Nine digits only for what a capture gives (nanoseconds below 1e9); anything else as the text formatter.
  if (ds < 0 || dn < 0 || dn >= 1e9 || !Number.isSafeInteger(ds) || !Number.isSafeInteger(dn)) {
    p = put(b, p, ENCODER.encode(sinceText(s, ns, os, ons)));
  } else {
    p = putNumber(b, p, ds);
    b[p++] = 46; // "."
    p = putNine(b, p, dn);
  }
  return put(b, p, B_SECONDS_END);
}

/** `Frame N: connection C, DIR, offset O, L bytes: KIND` and the fields up to the cookie's value. */
function putHead(
  b: Uint8Array,
  p: number,
  n: number,
  middle: Uint8Array,
  event: ConversationFrame,
  t: TraceFields,
  head: Uint8Array,
  time: HotTime | undefined,
): number {
  p = put(b, p, B_FRAME);
  p = putNumber(b, p, n);
  if (t.packet !== undefined) {
    p = putTraceHead(
      b,
      p,
      t,
      time?.originSeconds ?? 0,
      time?.originNanoseconds ?? 0,
      time?.absolute ?? false,
    );
  }
  p = put(b, p, middle);
  p = putNumber(b, p, event.frameOffset);
  p = put(b, p, B_COMMA);
  p = putNumber(b, p, event.frameLength);
  return put(b, p, head);
}

function isU64(v: bigint): boolean {
  return v >= 0n && v < U64_END;
}

/**
 * `v` as a number when it is an integer from 0 to 2^53-1 (exact), else -1: one conversion where
 * {@link isU64} and {@link putBigint} make four BigInt operations (each a call into V8's runtime, even in
 * optimised code). A u64 of 2^53 or more converts to 2^53 or more, a negative value to a negative number.
 */
function safeU64(v: bigint): number {
  const n = Number(v);
  return n >= 0 && n <= Number.MAX_SAFE_INTEGER ? n : -1;
}

/** Writes a u64's decimal text (the callers checked {@link isU64}). */
function putBigint(b: Uint8Array, p: number, v: bigint): number {
  if (v <= MAX_SAFE_BIG) return putNumber(b, p, Number(v));
  return put(b, p, ENCODER.encode(String(v)));
}

/**
 * Writes `formatEventText(event, n) + "\n\n"` as UTF-8 into `b` at `p` when the event is a request (other
 * than BLOCK_STATUS) or a simple reply, without findings; returns the position after it. Nothing is written
 * and the result is {@link NOT_HOT} for other events, {@link NO_ROOM} when the text might not fit before
 * `b`'s end (it surely fits in 4 KiB unless a memoized piece is longer). `time` says how to show the time
 * of an event of a capture, as {@link TextOptions} does (`absolute` for `time: "absolute"`); `info`, when
 * given, holds the event's trace fields instead of the event (a detached dissector's reused slot). For
 * `nbd-codec dissect`; not exported by the package.
 *
 * @example
 * ```ts
 * import { writeHotFrameText } from "./format.ts";
 * const b = new Uint8Array(4096);
 * const end = writeHotFrameText({
 *   event: "frame", connection: 0, direction: "s2c", frameOffset: 0, frameLength: 16, findings: [],
 *   frame: { type: "simple-reply", error: 0, cookie: 1n },
 * }, 1, b, 0);
 * console.log(new TextDecoder().decode(b.subarray(0, end)).split("\n")[0]);
 * // Frame 1: connection 0, s2c, offset 0, 16 bytes: simple-reply
 * ```
 */
export function writeHotFrameText(
  event: ConversationEvent | TraceEvent,
  n: number,
  b: Uint8Array,
  p: number,
  time?: HotTime,
  info?: Readonly<TraceInfoSlot>,
): number {
  if (event.event !== "frame" || event.findings.length !== 0) return NOT_HOT;
  const t: TraceFields = info ?? (event as TraceFrame);
  const f = event.frame;
  if (f.type === "request") {
    // Values no decoder gives (hand-built frames) are left to formatEventText.
    if (f.blockStatus !== undefined) return NOT_HOT;
    const cookie = safeU64(f.cookie);
    const offset = safeU64(f.offset);
    const length = safeU64(f.length);
    if (
      (cookie < 0 && !isU64(f.cookie)) || (offset < 0 && !isU64(f.offset)) || (length < 0 && !isU64(f.length))
    ) {
      return NOT_HOT;
    }
    const middle = REQUEST_MIDDLE.of(headMiddle(event.connection, event.direction));
    const head = REQUEST_HEAD_BYTES.of(requestHead(f));
    if (b.length - p < middle.length + head.length + HOT_FIXED_BYTES) return NO_ROOM;
    p = putHead(b, p, n, middle, event, t, head, time);
    p = cookie >= 0 ? putNumber(b, p, cookie) : putBigint(b, p, f.cookie);
    p = put(b, p, B_OFFSET);
    p = offset >= 0 ? putNumber(b, p, offset) : putBigint(b, p, f.offset);
    p = put(b, p, B_LENGTH);
    p = length >= 0 ? putNumber(b, p, length) : putBigint(b, p, f.length);
    const payload = event.frameLength - requestHeaderLength(f);
    if (payload > 0) {
      p = put(b, p, B_DATA);
      p = putNumber(b, p, payload);
      p = put(b, p, B_BYTES);
    }
    return put(b, p, B_BLANK);
  }
  if (f.type !== "simple-reply") return NOT_HOT;
  const r = event.request;
  const cookie = safeU64(f.cookie);
  const offset = r === undefined ? 0 : safeU64(r.offset);
  const length = r === undefined ? 0 : safeU64(r.length);
  if (
    (cookie < 0 && !isU64(f.cookie)) ||
    (r !== undefined && ((offset < 0 && !isU64(r.offset)) || (length < 0 && !isU64(r.length))))
  ) {
    return NOT_HOT;
  }
  const middle = REPLY_MIDDLE.of(headMiddle(event.connection, event.direction));
  const head = REPLY_HEAD_BYTES.of(simpleReplyHead(f.error));
  const ref = r === undefined ? undefined : REF_HEAD_BYTES.of(requestRefHead(r.command));
  if (b.length - p < middle.length + head.length + (ref?.length ?? 0) + HOT_FIXED_BYTES) return NO_ROOM;
  p = putHead(b, p, n, middle, event, t, head, time);
  p = cookie >= 0 ? putNumber(b, p, cookie) : putBigint(b, p, f.cookie);
  const data = event.frameLength - SIMPLE_REPLY_HEADER;
  if (data > 0) {
    p = put(b, p, B_DATA);
    p = putNumber(b, p, data);
    p = put(b, p, B_BYTES);
  }
  if (r === undefined) return put(b, p, B_BLANK);
  p = put(b, p, ref!);
  p = offset >= 0 ? putNumber(b, p, offset) : putBigint(b, p, r.offset);
  p = put(b, p, B_REF_LENGTH);
  p = length >= 0 ? putNumber(b, p, length) : putBigint(b, p, r.length);
  const rp = t.requestPacket;
  if (rp === undefined) return put(b, p, B_REF_END);
  p = put(b, p, B_REQUEST_IN);
  p = putNumber(b, p, rp);
  const rt = t.responseNanoseconds;
  if (rt !== undefined) {
    p = put(b, p, B_TIME_SINCE);
    // Small integers (seconds and nanoseconds apart) when the response time is what the two timestamps
    // say, as the dissector gives it: cheaper than dividing a large double.
    const ds = (t.seconds ?? 0) - (t.requestSeconds ?? 0);
    const dn = (t.nanoseconds ?? 0) - (t.requestNanoseconds ?? 0);
    if (ds === 0 && dn >= 0 && dn < 1e9 && dn === rt) p = putNanosSmall(b, p, dn);
    else p = putNanos(b, p, rt);
    p = put(b, p, B_SECONDS_END);
    b[p - 1] = 93; // "]" in place of ")"
  } else b[p++] = 93;
  return put(b, p, B_BLANK);
}

/**
 * How {@link writeHotFrameText} shows times: {@link TextOptions}'s origin, and `absolute` for UTC dates.
 *
 * @example
 * ```ts
 * import type { HotTime } from "./format.ts";
 * const t: HotTime = { originSeconds: 0, originNanoseconds: 0, absolute: false };
 * console.log(t.absolute); // false
 * ```
 */
export interface HotTime {
  /** Seconds of the origin of relative times. */
  readonly originSeconds: number;
  /** Nanoseconds of the origin. */
  readonly originNanoseconds: number;
  /** UTC dates instead of relative times. */
  readonly absolute: boolean;
}

// ---------------------------------------------------------------------------------------------------------
// Summary lines
// ---------------------------------------------------------------------------------------------------------

/** ` name=value` pairs of a frame's main fields, as a summary line shows them after its kind. */
function summaryFields(e: ConversationFrame): string {
  const f = e.frame;
  switch (f.type) {
    case "oldstyle-greeting":
      return `oldstyle greeting size=${f.size} flags=${f.transmissionFlags}`;
    case "newstyle-greeting":
      return `newstyle greeting flags=${names("handshakeFlag", f.handshakeFlags).join("|") || "0"}`;
    case "client-flags":
      return `client flags=${names("clientFlag", f.flags).join("|") || "0"}`;
    case "option-request": {
      const d = f.data;
      const name = d.kind === "export-name" || d.kind === "info-request" || d.kind === "meta-context-query"
        ? ` name=${quote(d.name)}`
        : "";
      const queries = d.kind === "meta-context-query" && d.queries.length > 0
        ? ` queries=${d.queries.map(quote).join(",")}`
        : "";
      return codeName("option", f.option) + name + queries;
    }
    case "option-reply": {
      const d = f.data;
      let more = "";
      if (d.kind === "info") {
        more = " " + codeName("info", d.info.info);
        if (d.info.kind === "export") more += ` size=${d.info.size}`;
      } else if (d.kind === "meta-context") more = ` id=${d.id} context=${quote(d.name)}`;
      else if (d.kind === "server") more = ` name=${quote(d.name)}`;
      else if (d.kind === "error" && d.message !== "") more = ` message=${quote(d.message)}`;
      return `${codeName("optionReply", f.reply)} to ${codeName("option", f.option)}${more}`;
    }
    case "export-name-reply":
      return `export size=${f.size} flags=${names("transmissionFlag", f.transmissionFlags).join("|") || "0"}`;
    case "request": {
      const flags = names("commandFlag", f.flags);
      const payload = e.frameLength - requestHeaderLength(f);
      return codeName("command", f.command) + ` cookie=${f.cookie} offset=${f.offset} length=${f.length}` +
        (flags.length > 0 ? ` flags=${flags.join("|")}` : "") +
        (payload > 0 && f.blockStatus === undefined ? ` data=${payload}` : "");
    }
    case "simple-reply": {
      const data = e.frameLength - SIMPLE_REPLY_HEADER;
      return `NBD_SIMPLE_REPLY cookie=${f.cookie} error=${f.error === 0 ? "0" : codeName("error", f.error)}` +
        (data > 0 ? ` data=${data}` : "");
    }
    case "reply-chunk": {
      const p = f.payload;
      let more = "";
      if (p.kind === "offset-data") {
        more = ` offset=${p.offset} data=${e.frameLength - chunkHeaderLength(f) - 8}`;
      } else if (p.kind === "offset-hole") more = ` offset=${p.offset} hole=${p.holeSize}`;
      else if (p.kind === "block-status") more = ` extents=${p.descriptors.count}`;
      else if (p.kind === "error") more = ` error=${codeName("error", p.error)}`;
      return codeName("replyType", f.chunkType) + ` cookie=${f.cookie}` + more +
        ((f.flags & 1) !== 0 ? " DONE" : "");
    }
  }
}

/**
 * One event as one line, as tshark prints a packet without `-V`: the packet number (`-` without a
 * capture), the time (as {@link TextOptions} says; `-` without one), who sends to whom (`address:port →
 * address:port`, or `client → server` for raw streams), then the frame's kind and main fields as
 * `name=value`. A reply or chunk ends with `[NBD_CMD_READ in 27, 0.000211000 s]` (its request's command,
 * packet and the response time), and an event with findings with `[findings: RULE, ...]`.
 *
 * @example
 * ```ts
 * import { formatEventSummary } from "@nbd/codec/trace";
 * console.log(formatEventSummary({
 *   event: "frame", connection: 0, direction: "c2s", frameOffset: 104, frameLength: 28, findings: [],
 *   frame: { type: "request", extended: false, flags: 0, command: 0, cookie: 7n, offset: 4096n, length: 4096n },
 *   packet: 27, firstPacket: 27, seconds: 10, nanoseconds: 341000,
 *   client: { address: "127.0.0.1", port: 41234 }, server: { address: "127.0.0.1", port: 10809 },
 * }, { originSeconds: 10 }));
 * // 27 0.000341000 127.0.0.1:41234 → 127.0.0.1:10809 NBD_CMD_READ cookie=7 offset=4096 length=4096
 * ```
 */
export function formatEventSummary(event: ConversationEvent | TraceEvent, options?: TextOptions): string {
  const e = event as (ConversationEvent & TraceInfo);
  let text: string;
  if (e.packet === undefined) text = "- -";
  else {
    const s = e.seconds ?? 0;
    const ns = e.nanoseconds ?? 0;
    text = e.packet + " " +
      (options?.time === "absolute"
        ? utcText(s, ns)
        : sinceText(s, ns, options?.originSeconds ?? 0, options?.originNanoseconds ?? 0));
  }
  const c2s = e.direction === "c2s";
  if (e.client !== undefined && e.server !== undefined) {
    const a = endpointText(c2s ? e.client : e.server);
    const b = endpointText(c2s ? e.server : e.client);
    text += " " + a + " → " + b;
  } else text += c2s ? " client → server" : " server → client";
  if (e.event === "notice") text += ` notice ${e.notice} offset=${e.streamOffset} length=${e.length}`;
  else {
    text += " " + summaryFields(e);
    const r = e.request;
    if (r !== undefined) {
      const rp = e.requestPacket;
      const t = e.responseNanoseconds;
      text += " [" + codeName("command", r.command) + (rp === undefined ? "" : " in " + rp) +
        (t === undefined ? "" : ", " + nanosText(t) + " s") + "]";
    }
  }
  if (e.findings.length > 0) text += " [findings: " + e.findings.map((f) => f.rule).join(", ") + "]";
  return text;
}

/**
 * `conform server`: the catalogue of cases that check a live NBD server, and the runner. Each case opens
 * its own connections through the caller's transport, sends raw options and requests (well-formed or
 * broken on purpose) with our encoders, and judges the answers with the lenient decoders and the reply
 * checker. Pure: no socket, no timer; the transport bounds every wait.
 *
 * @module
 */
import {
  Command,
  CommandFlag,
  ErrorValue,
  HandshakeFlag,
  Info,
  nameOf,
  Option,
  OptionReply,
  TransmissionFlag,
} from "./constants.ts";
import {
  type ConformCase,
  type ConformConnection,
  type ConformResult,
  ConformSetupError,
  ConformSkip,
  ConformTimeoutError,
  ConformViolation,
  violatedOutcome,
} from "./conform.ts";
import { isErrorReply, type OptionReplyFrame } from "./option_reply.ts";
import {
  describeReply,
  type Negotiated,
  type NegotiateOptions,
  Probe,
  type ReplyResult,
  repName,
} from "./_conform_probe.ts";

/** What the runner learnt about the server before the cases (one GO with structured replies). */
export interface ServerFacts {
  readonly handshakeFlags: number;
  /** Transmission flags and size from GO after STRUCTURED_REPLY (when accepted). */
  readonly flags: number;
  readonly size: bigint;
  readonly structured: boolean;
  readonly extended: boolean;
  /** Context names LIST_META_CONTEXT returned (empty when unsupported). */
  readonly contexts: readonly string[];
  /** Whether LIST/SET_META_CONTEXT are supported at all. */
  readonly metaContexts: boolean;
  /** Minimum block size (1 unless advertised). */
  readonly minBlock: number;
  readonly blockSize?: { readonly minimum: number; readonly preferred: number; readonly maximum: number };
}

/**
 * Where a run may write: a byte range of the export.
 *
 * @example
 * ```ts
 * import type { WriteRange } from "@nbd/codec";
 * const range: WriteRange = { offset: 1048576n, length: 1048576n };
 * console.log(range.offset); // 1048576n
 * ```
 */
export interface WriteRange {
  /** First byte that may be written. */
  readonly offset: bigint;
  /** Length in bytes; `undefined` means "to the end of the export". */
  readonly length?: bigint;
}

/**
 * The server under test, as the runner sees it: how to open a connection (the caller's transport, which
 * bounds every wait), the export, and where writing cases may write.
 *
 * @example
 * ```ts
 * import type { ServerTarget } from "@nbd/codec";
 * const target: ServerTarget = { exportName: "disk", connect: () => Promise.reject(new Error("no server here")) };
 * console.log(target.exportName); // "disk"
 * ```
 */
export interface ServerTarget {
  /** Opens a new connection (the transport applies the per-case time bound). */
  connect(): Promise<ConformConnection>;
  /** The export to use. */
  readonly exportName: string;
  /** Where writing cases may write; absent: they are skipped. */
  readonly writeRange?: WriteRange;
}

/** What a case's code gets. */
export interface ServerCaseContext {
  readonly target: ServerTarget;
  readonly facts: ServerFacts;
  /** A fresh connection, closed by the runner after the case. */
  open(): Promise<Probe>;
  /** A fresh connection negotiated to transmission. */
  go(o?: NegotiateOptions): Promise<[Probe, Negotiated]>;
  /** An offset inside the write range for `length` bytes, or a skip when writes are not allowed. */
  writable(length: number): bigint;
}

/** A case with its code. */
export interface ServerCase extends ConformCase {
  /** Runs the case: returns a note on pass; throws {@link ConformViolation} or {@link ConformSkip}. */
  run(ctx: ServerCaseContext): Promise<string | void>;
}

// ---------------------------------------------------------------------------------------------------------
// Helpers used by the cases.

const NO_SUCH_EXPORT = "nbd-codec-conform-no-such-export";
const UNKNOWN_OPTION = 0x4e42_4301;

function fail(message: string): never {
  throw new ConformViolation(message);
}

function skip(reason: string): never {
  throw new ConformSkip(reason);
}

function errName(e: number): string {
  return e === -1 ? "error 0 in an error chunk" : (nameOf("error", e) ?? `error ${e}`);
}

/** Throws when the reply broke any of `rules` (a rule id, or a prefix ending in `:`/`*`). */
function rules(r: ReplyResult, ...ids: string[]): void {
  const hit = r.violations.filter((v) =>
    ids.some((id) => id.endsWith("*") ? v.check.startsWith(id.slice(0, -1)) : v.check === id)
  );
  if (hit.length > 0) fail(hit.map((v) => v.message).join("; "));
}

function needFlag(flags: number, flag: number, name: string): void {
  if (!(flags & flag)) skip(`${name} not advertised`);
}

function ioLength(n: Negotiated, want: number, minBlock: number): bigint {
  const size = n.size;
  if (size < BigInt(minBlock)) skip(`export too small (${size} bytes)`);
  let len = BigInt(want);
  if (len > size) len = size - (size % BigInt(minBlock));
  return len;
}

function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  if (a === undefined || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function allZero(a: Uint8Array | undefined): boolean {
  return a !== undefined && a.every((x) => x === 0);
}

function infoKey(r: OptionReplyFrame): string {
  const d = r.data;
  if (d.kind !== "info") return `${r.reply}`;
  const i = d.info;
  switch (i.kind) {
    case "export":
      return `export:${i.size}:${i.transmissionFlags}`;
    case "name":
      return `name:${i.name}`;
    case "description":
      return `description:${i.description}`;
    case "block-size":
      return `block-size:${i.minimum}:${i.preferred}:${i.maximum}`;
    case "init-flags":
      return `init-flags:${i.flags}`;
    default:
      return `info-${i.info}:${Array.from(i.raw).join(",")}`;
  }
}

/** Expects an error (not a success) reply to a request the server SHOULD reject. */
function expectError(r: ReplyResult, want: number | undefined, what: string): string {
  if (r.error === 0) fail(`${what} succeeded; expected ${want ? errName(want) : "an error"}`);
  if (want !== undefined && r.error !== want) {
    fail(`${what} failed with ${errName(r.error)}, expected ${errName(want)}`);
  }
  return `${errName(r.error)}${r.message ? ` "${r.message}"` : ""}`;
}

/** Sends a request the server may reject, then checks the connection still answers a READ. */
async function stillAlive(p: Probe, n: Negotiated, minBlock: number): Promise<void> {
  const len = n.size >= BigInt(minBlock) ? BigInt(minBlock) : 0n;
  try {
    const r = await p.roundTrip({ command: Command.READ, offset: 0n, length: len });
    if (r.error !== 0 && len > 0n) fail(`a READ after it failed with ${errName(r.error)}`);
  } catch (e) {
    if (e instanceof ConformViolation) fail(`the connection was unusable afterwards: ${e.message}`);
    throw e;
  }
}

/** Structured mode if the server has it, else the case is skipped. */
const SR: NegotiateOptions = { structured: "required" };

// ---------------------------------------------------------------------------------------------------------
// The catalogue. Ids are stable: never renumber or reuse one for another rule.

type Def = Omit<ServerCase, "role" | "writes"> & { writes?: boolean };

function def(d: Def): ServerCase {
  return { role: "server", writes: false, ...d };
}

const S_NEWSTYLE = "Newstyle negotiation";
const S_HFLAGS = "Values / Handshake flags";
const S_CFLAGS = "Values / Client flags";
const S_TFLAGS = "Values / Transmission flags";
const S_STRUCT = "Transmission / Structured reply chunk message";
const S_READ = "Request types / NBD_CMD_READ";
const S_BS = "Request types / NBD_CMD_BLOCK_STATUS";
const S_ERR = "Error values";
const Q_REQ_ONE =
  "If the client used the NBD_CMD_FLAG_REQ_ONE flag in the request, then every reply chunk MUST contain exactly one descriptor, and that descriptor MUST NOT exceed the length of the original request.";

/** Every case `conform server` runs, in order. */
export const SERVER_CASES: readonly ServerCase[] = [
  // -- handshake ------------------------------------------------------------------------------------------
  def({
    id: "hs.fixed-newstyle",
    area: "handshake",
    title: "The greeting is fixed newstyle",
    section: S_HFLAGS,
    quote: "bit 0, NBD_FLAG_FIXED_NEWSTYLE; MUST be set by servers that support the fixed newstyle protocol",
    level: "MUST",
    async run(ctx) {
      const p = await ctx.open();
      const f = await p.greeting();
      if (!(f & HandshakeFlag.FIXED_NEWSTYLE)) {
        fail(`handshake flags 0x${f.toString(16)} lack NBD_FLAG_FIXED_NEWSTYLE`);
      }
      return `handshake flags 0x${f.toString(16)}`;
    },
  }),
  def({
    id: "hs.reserved-flags",
    area: "handshake",
    title: "No reserved handshake flag is set",
    section: S_HFLAGS,
    quote: "The server MUST NOT set any other flags",
    level: "MUST",
    async run(ctx) {
      const p = await ctx.open();
      const f = await p.greeting();
      if (f & ~0x3) fail(`handshake flags 0x${f.toString(16)} set reserved bits`);
    },
  }),
  def({
    id: "hs.unknown-client-flag",
    area: "handshake",
    title: "An unknown client flag makes the server drop the connection",
    section: S_CFLAGS,
    quote: "the server MUST drop the TCP connection if the client sets an unknown flag",
    level: "MUST",
    async run(ctx) {
      const p = await ctx.open();
      await p.start(0x4000_0001);
      try {
        await p.option(Option.LIST);
      } catch {
        return "closed";
      }
      const r = await p.reader.closed();
      if (r !== "closed") fail(`the server answered (${r.length} bytes) instead of dropping the connection`);
      return "closed";
    },
  }),
  def({
    id: "hs.export-name-zeroes",
    area: "handshake",
    title: "EXPORT_NAME reply has 124 zero bytes without C_NO_ZEROES",
    section: S_NEWSTYLE,
    quote: "S: 124 bytes, zeroes (reserved) (unless NBD_FLAG_C_NO_ZEROES was negotiated by the client)",
    level: "MUST",
    async run(ctx) {
      const p = await ctx.open();
      await p.start(0x1);
      const r = await p.exportNameOption(ctx.target.exportName);
      if (r.findings.length) fail(r.findings.map((f) => f.message).join("; "));
      p.mode = "simple";
      await stillAlive(p, { size: r.frame.size } as Negotiated, ctx.facts.minBlock);
    },
  }),
  def({
    id: "hs.export-name-no-zeroes",
    area: "handshake",
    title: "EXPORT_NAME reply is 10 bytes with NO_ZEROES on both sides",
    section: S_CFLAGS,
    quote:
      "NBD_FLAG_C_NO_ZEROES ... If set, the server MUST NOT send the 124 bytes of zeroes when the client ends negotiation with NBD_OPT_EXPORT_NAME.",
    level: "MUST",
    async run(ctx) {
      if (!(ctx.facts.handshakeFlags & HandshakeFlag.NO_ZEROES)) skip("NBD_FLAG_NO_ZEROES not offered");
      const p = await ctx.open();
      await p.start(0x3);
      const r = await p.exportNameOption(ctx.target.exportName);
      p.mode = "simple";
      await stillAlive(p, { size: r.frame.size } as Negotiated, ctx.facts.minBlock);
    },
  }),
  def({
    id: "hs.export-name-unknown",
    area: "handshake",
    title: "EXPORT_NAME of a missing export ends the session",
    section: "Option types / NBD_OPT_EXPORT_NAME",
    quote: "If the chosen export does not exist ... the server MUST terminate the session.",
    level: "MUST",
    async run(ctx) {
      const p = await ctx.open();
      await p.start();
      await p.option(Option.EXPORT_NAME, { kind: "export-name", name: NO_SUCH_EXPORT });
      const r = await p.reader.closed();
      if (r === "closed") return "closed";
      if (r.length >= 8 && new DataView(r.buffer, r.byteOffset).getBigUint64(0) === 0x0003e889045565a9n) {
        fail("answered with an option reply, which EXPORT_NAME has none of");
      }
      skip(`the server accepted the export name ${JSON.stringify(NO_SUCH_EXPORT)}`);
    },
  }),
  // -- options --------------------------------------------------------------------------------------------
  def({
    id: "opt.unknown",
    area: "options",
    title: "An unknown option gets ERR_UNSUP and its data is skipped",
    section: "Compatibility and interoperability / Baseline",
    quote:
      "Servers that receive messages which they do not implement MUST reply to them with NBD_REP_ERR_UNSUP, and MUST NOT fail to parse the next message received.",
    level: "MUST",
    async run(ctx) {
      const p = await ctx.open();
      await p.start();
      const a = await p.final(UNKNOWN_OPTION, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
      if (a !== OptionReply.ERR_UNSUP) fail(`unknown option answered with ${repName(a)}`);
      const b = await p.final(UNKNOWN_OPTION + 1);
      if (b !== OptionReply.ERR_UNSUP) fail(`second unknown option answered with ${repName(b)}`);
    },
  }),
  def({
    id: "opt.reply-echo",
    area: "options",
    title: "Option replies carry the reply magic and echo the option",
    section: "Fixed newstyle negotiation",
    quote: "S: 32 bits, the option as sent by the client to which this is a reply",
    level: "MUST",
    async run(ctx) {
      const p = await ctx.open();
      await p.start();
      await p.ask(Option.LIST);
      await p.ask(Option.INFO, { kind: "info-request", name: ctx.target.exportName, info: [] });
      await p.ask(UNKNOWN_OPTION);
      await p.ask(Option.STRUCTURED_REPLY);
    },
  }),
  def({
    id: "opt.list",
    area: "options",
    title: "LIST gives well-formed SERVER replies, then ACK or an error",
    section: "Option types / NBD_OPT_LIST",
    quote:
      "Return zero or more NBD_REP_SERVER replies, one for each export, followed by NBD_REP_ACK or an error",
    level: "MUST",
    async run(ctx) {
      const p = await ctx.open();
      await p.start();
      const all = await p.ask(Option.LIST);
      const bad = all.flatMap((r) => r.findings.map((f) => f.message));
      if (bad.length) fail(bad.join("; "));
      const other = all.slice(0, -1).find((r) => r.frame.reply !== OptionReply.SERVER);
      if (other) fail(`${repName(other.frame.reply)} in a LIST reply`);
      const last = all[all.length - 1]!.frame;
      return last.reply === OptionReply.ACK ? `${all.length - 1} exports` : describeReply(last);
    },
  }),
  def({
    id: "opt.list-data",
    area: "options",
    title: "LIST with data is refused with ERR_INVALID",
    section: "Option reply types / NBD_REP_ERR_INVALID",
    quote: "For instance, the client sent an NBD_OPT_LIST with nonzero data length",
    level: "SHOULD",
    async run(ctx) {
      const p = await ctx.open();
      await p.start();
      const r = await p.final(Option.LIST, new Uint8Array(4));
      if (r !== OptionReply.ERR_INVALID) fail(`LIST with 4 bytes of data answered with ${repName(r)}`);
    },
  }),
  def({
    id: "opt.list-data-sync",
    area: "options",
    title: "After LIST with data, the next option gets its own reply",
    section: "Fixed newstyle negotiation",
    quote: "some options e.g. NBD_OPT_LIST have multiple replies, and the final reply is the last of those",
    level: "MUST",
    async run(ctx) {
      const p = await ctx.open();
      await p.start();
      await p.ask(Option.LIST, new Uint8Array(4));
      const r = await p.final(UNKNOWN_OPTION);
      if (r !== OptionReply.ERR_UNSUP) fail(`the next (unknown) option got ${repName(r)}`);
    },
  }),
  def({
    id: "opt.abort",
    area: "options",
    title: "ABORT is acknowledged",
    section: "Option types / NBD_OPT_ABORT",
    quote:
      "The client desires to abort the negotiation and terminate the session. The server MUST reply with NBD_REP_ACK.",
    level: "MUST",
    async run(ctx) {
      const p = await ctx.open();
      await p.start();
      const r = await p.final(Option.ABORT);
      if (r !== OptionReply.ACK) fail(`ABORT answered with ${repName(r)}`);
    },
  }),
  def({
    id: "opt.starttls-notls",
    area: "options",
    title: "STARTTLS without TLS is refused, never with ERR_TLS_REQD",
    section: "TLS support / NOTLS mode",
    quote: "The server MUST NOT respond to any option request with NBD_REP_ERR_TLS_REQD.",
    level: "MUST",
    async run(ctx) {
      const p = await ctx.open();
      await p.start();
      const r = await p.final(Option.STARTTLS);
      if (r === OptionReply.ACK) skip("the server offers TLS (not checked)");
      if (r === OptionReply.ERR_TLS_REQD) fail("STARTTLS answered with NBD_REP_ERR_TLS_REQD");
      return repName(r);
    },
  }),
  def({
    id: "opt.structured-reply-data",
    area: "options",
    title: "STRUCTURED_REPLY with data is refused with ERR_INVALID",
    section: "Option types / NBD_OPT_STRUCTURED_REPLY",
    quote: "the server SHOULD reject a request that includes data with NBD_REP_ERR_INVALID",
    level: "SHOULD",
    async run(ctx) {
      if (!ctx.facts.structured) skip("structured replies not supported");
      const p = await ctx.open();
      await p.start();
      const r = await p.final(Option.STRUCTURED_REPLY, new Uint8Array(4));
      if (r !== OptionReply.ERR_INVALID) fail(`answered with ${repName(r)}`);
    },
  }),
  def({
    id: "opt.extended-headers-data",
    area: "options",
    title: "EXTENDED_HEADERS with data is refused with ERR_INVALID",
    section: "ext: Option types / NBD_OPT_EXTENDED_HEADERS",
    quote:
      "The client MUST NOT send any additional data with the option, and the server SHOULD reject a request that includes data with NBD_REP_ERR_INVALID.",
    level: "SHOULD",
    async run(ctx) {
      if (!ctx.facts.extended) skip("extended headers not supported");
      const p = await ctx.open();
      await p.start();
      const r = await p.final(Option.EXTENDED_HEADERS, new Uint8Array(4));
      if (r !== OptionReply.ERR_INVALID) fail(`answered with ${repName(r)}`);
    },
  }),
  def({
    id: "opt.name-too-long",
    area: "options",
    title: "INFO with a 5000-byte name is refused (or the session ended)",
    section: "Conventions (strings)",
    quote: "that string ... SHOULD be no longer than 256 bytes and MUST be no longer than 4096 bytes",
    level: "SHOULD",
    async run(ctx) {
      const p = await ctx.open();
      await p.start();
      const name = new Uint8Array(5000).fill(0x61);
      const data = new Uint8Array(4 + name.length + 2);
      new DataView(data.buffer).setUint32(0, name.length);
      data.set(name, 4);
      await p.option(Option.INFO, data);
      let r: number;
      try {
        const all = await p.optionReplies(Option.INFO);
        r = all[all.length - 1]!.frame.reply;
      } catch (e) {
        if (e instanceof ConformViolation && /closed/.test(e.message)) return "the server ended the session";
        throw e;
      }
      if (!isErrorReply(r)) fail(`a 5000-byte name answered with ${repName(r)}`);
      return repName(r);
    },
  }),
  def({
    id: "opt.name-bad-utf8",
    area: "options",
    title: "INFO with a name that is not UTF-8 is refused",
    section: "Conventions (strings)",
    quote: "that string is a sequence of UTF-8 code points",
    level: "SHOULD",
    async run(ctx) {
      const p = await ctx.open();
      await p.start();
      const data = new Uint8Array([0, 0, 0, 4, 0xff, 0xfe, 0xc3, 0x28, 0, 0]);
      await p.option(Option.INFO, data);
      const all = await p.optionReplies(Option.INFO);
      const r = all[all.length - 1]!.frame.reply;
      if (!isErrorReply(r)) fail(`an invalid UTF-8 name answered with ${repName(r)}`);
      return repName(r);
    },
  }),
  def({
    id: "opt.info-bad-length",
    area: "options",
    title: "INFO whose name length overruns the data gets ERR_INVALID",
    section: "Option types / NBD_OPT_INFO and NBD_OPT_GO",
    quote: "32 bits, length of name (unsigned); MUST be no larger than the option data length - 6",
    level: "SHOULD",
    async run(ctx) {
      const p = await ctx.open();
      await p.start();
      const r = await p.final(Option.INFO, new Uint8Array([0, 0, 0, 200, 0x61, 0x62, 0, 0]));
      if (r !== OptionReply.ERR_INVALID) fail(`answered with ${repName(r)}`);
      const next = await p.final(UNKNOWN_OPTION);
      if (next !== OptionReply.ERR_UNSUP) fail(`the next option got ${repName(next)}`);
    },
  }),
  // -- INFO and GO ----------------------------------------------------------------------------------------
  def({
    id: "info.go-export",
    area: "info",
    title: "GO succeeds with an NBD_INFO_EXPORT reply",
    section: "Option types / NBD_OPT_INFO and NBD_OPT_GO",
    quote:
      "NBD_REP_ACK: ... In this case, the server MUST send at least one NBD_REP_INFO, with an NBD_INFO_EXPORT information type.",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: false, info: [] });
      await stillAlive(p, n, ctx.facts.minBlock);
      return `size ${n.size}, flags 0x${n.flags.toString(16)}`;
    },
  }),
  def({
    id: "info.info-then-go",
    area: "info",
    title: "INFO then GO with the same request give the same information",
    section: "Option types / NBD_OPT_INFO and NBD_OPT_GO",
    quote:
      "the server MUST reply with the same set of information, such as transmission flags in the NBD_INFO_EXPORT reply",
    level: "MUST",
    async run(ctx) {
      const p = await ctx.open();
      await p.start();
      const req = {
        kind: "info-request",
        name: ctx.target.exportName,
        info: [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE],
      } as const;
      const a = await p.ask(Option.INFO, req);
      if (a[a.length - 1]!.frame.reply !== OptionReply.ACK) {
        fail(`INFO answered ${describeReply(a[a.length - 1]!.frame)}`);
      }
      const b = await p.ask(Option.GO, req);
      if (b[b.length - 1]!.frame.reply !== OptionReply.ACK) {
        fail(`GO answered ${describeReply(b[b.length - 1]!.frame)}`);
      }
      const ka = a.map((r) => infoKey(r.frame)).sort().join(" ");
      const kb = b.map((r) => infoKey(r.frame)).sort().join(" ");
      if (ka !== kb) fail(`INFO gave [${ka}], GO gave [${kb}]`);
    },
  }),
  def({
    id: "info.unknown-type",
    area: "info",
    title: "Unknown info requests are ignored",
    section: "Option types / NBD_OPT_INFO and NBD_OPT_GO",
    quote: "The server MUST ignore any information requests it does not understand.",
    level: "MUST",
    async run(ctx) {
      const p = await ctx.open();
      await p.start();
      const r = await p.ask(Option.INFO, {
        kind: "info-request",
        name: ctx.target.exportName,
        info: [0x7ff0, Info.INIT_FLAGS],
      });
      const last = r[r.length - 1]!.frame;
      if (last.reply !== OptionReply.ACK) {
        fail(`INFO with unknown info types answered ${describeReply(last)}`);
      }
      const bad = r.find((x) => x.frame.data.kind === "info" && x.frame.data.info.info === 0x7ff0);
      if (bad) fail("the server sent back info type 0x7ff0, which nobody defined");
    },
  }),
  def({
    id: "info.all-types",
    area: "info",
    title: "Every info type requested comes back well-formed",
    section: "Option reply types / NBD_REP_INFO",
    quote: "NBD_INFO_EXPORT (0) ... length MUST be 12",
    level: "MUST",
    async run(ctx) {
      const p = await ctx.open();
      await p.start();
      const r = await p.ask(Option.INFO, {
        kind: "info-request",
        name: ctx.target.exportName,
        info: [Info.EXPORT, Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE, Info.INIT_FLAGS],
      });
      const bad = r.flatMap((x) => x.findings.map((f) => f.message));
      if (bad.length) fail(bad.join("; "));
      const got = r.filter((x) => x.frame.data.kind === "info").map((x) => infoKey(x.frame).split(":")[0]);
      return `got ${got.join(", ")}`;
    },
  }),
  def({
    id: "info.unknown-export",
    area: "info",
    title: "INFO for a missing export gets ERR_UNKNOWN without INFO replies",
    section: "Option types / NBD_OPT_INFO and NBD_OPT_GO",
    quote:
      "NBD_REP_ERR_UNKNOWN: The chosen export does not exist on this server. In this case, the server SHOULD NOT send NBD_REP_INFO replies.",
    level: "SHOULD",
    async run(ctx) {
      const p = await ctx.open();
      await p.start();
      const r = await p.ask(Option.INFO, { kind: "info-request", name: NO_SUCH_EXPORT, info: [] });
      const last = r[r.length - 1]!.frame;
      if (last.reply === OptionReply.ACK) {
        skip(`the server accepts the export name ${JSON.stringify(NO_SUCH_EXPORT)}`);
      }
      if (r.length > 1) fail(`${r.length - 1} NBD_REP_INFO before ${repName(last.reply)}`);
      if (last.reply !== OptionReply.ERR_UNKNOWN) fail(`answered with ${describeReply(last)}`);
    },
  }),
  def({
    id: "info.has-flags",
    area: "info",
    title: "Transmission flags have HAS_FLAGS",
    section: S_TFLAGS,
    quote: "bit 0, NBD_FLAG_HAS_FLAGS: MUST always be 1.",
    level: "MUST",
    async run(ctx) {
      const [, n] = await ctx.go({ structured: false });
      if (!(n.flags & TransmissionFlag.HAS_FLAGS)) fail(`transmission flags 0x${n.flags.toString(16)}`);
    },
  }),
  def({
    id: "info.df-needs-structured",
    area: "info",
    title: "SEND_DF is clear without structured replies",
    section: S_TFLAGS,
    quote: "NBD_FLAG_SEND_DF ... MUST leave this flag clear if structured replies have not been negotiated",
    level: "MUST",
    async run(ctx) {
      const [, n] = await ctx.go({ structured: false });
      if (n.flags & TransmissionFlag.SEND_DF) {
        fail(`SEND_DF set without structured replies (flags 0x${n.flags.toString(16)})`);
      }
    },
  }),
  def({
    id: "info.fast-zero-needs-write-zeroes",
    area: "info",
    title: "SEND_FAST_ZERO only with SEND_WRITE_ZEROES",
    section: S_TFLAGS,
    quote:
      "NBD_FLAG_SEND_FAST_ZERO ... MUST set this transmission flag to 0 if NBD_FLAG_SEND_WRITE_ZEROES is not set",
    level: "MUST",
    async run(ctx) {
      const [, n] = await ctx.go({ structured: ctx.facts.structured });
      const f = n.flags;
      if (f & TransmissionFlag.SEND_FAST_ZERO && !(f & TransmissionFlag.SEND_WRITE_ZEROES)) {
        fail(`flags 0x${f.toString(16)}: SEND_FAST_ZERO without SEND_WRITE_ZEROES`);
      }
    },
  }),
  def({
    id: "info.block-size",
    area: "info",
    title: "Advertised block sizes are powers of 2 in range",
    section: "Size constraints",
    quote:
      "minimum block size ... MUST be a power of 2, MUST NOT be larger than 2^16; preferred ... MUST be a power of 2 at least as large as the maximum of the minimum block size and 2^9",
    level: "MUST",
    async run(ctx) {
      const [, n] = await ctx.go({ structured: ctx.facts.structured, info: [Info.BLOCK_SIZE] });
      const b = n.blockSize;
      if (!b) skip("no NBD_INFO_BLOCK_SIZE sent");
      const pow2 = (x: number): boolean => x > 0 && (x & (x - 1)) === 0;
      if (!pow2(b.minimum) || b.minimum > 65536) fail(`minimum ${b.minimum}`);
      if (!pow2(b.preferred) || b.preferred < Math.max(b.minimum, 512)) {
        fail(`preferred ${b.preferred} (minimum ${b.minimum})`);
      }
      if (b.maximum < b.preferred) fail(`maximum payload ${b.maximum} below preferred ${b.preferred}`);
      return `${b.minimum}/${b.preferred}/${b.maximum}`;
    },
  }),
  def({
    id: "info.block-status-payload-flag",
    area: "info",
    title: "BLOCK_STATUS_PAYLOAD only after extended headers",
    section: "ext: Values / Transmission flags",
    quote:
      "NBD_FLAG_BLOCK_STATUS_PAYLOAD ... Servers MUST NOT advertise this bit unless the client successfully negotiates extended headers via NBD_OPT_EXTENDED_HEADERS",
    level: "MUST",
    async run(ctx) {
      const [, n] = await ctx.go({ structured: true });
      if (n.flags & TransmissionFlag.BLOCK_STATUS_PAYLOAD) {
        fail(`flags 0x${n.flags.toString(16)} in ${n.mode} mode`);
      }
    },
  }),
  // -- metadata contexts ----------------------------------------------------------------------------------
  def({
    id: "meta.list",
    area: "meta",
    title: "LIST_META_CONTEXT lists contexts named namespace:leaf, then ACK",
    section: "Option types / NBD_OPT_LIST_META_CONTEXT",
    quote: "each namespace returned MUST begin with the relevant namespace, followed by a colon",
    level: "MUST",
    async run(ctx) {
      if (!ctx.facts.metaContexts) skip("metadata contexts not supported");
      const p = await ctx.open();
      await p.start();
      if ((await p.final(Option.STRUCTURED_REPLY)) !== OptionReply.ACK) skip("structured replies refused");
      const r = await p.ask(Option.LIST_META_CONTEXT, {
        kind: "meta-context-query",
        name: ctx.target.exportName,
        queries: [],
      });
      const last = r[r.length - 1]!.frame;
      if (last.reply !== OptionReply.ACK) fail(`answered ${describeReply(last)}`);
      const names: string[] = [];
      for (const x of r.slice(0, -1)) {
        if (x.frame.data.kind !== "meta-context") fail(`${repName(x.frame.reply)} among the contexts`);
        names.push(x.frame.data.name);
        if (!/^[^:]+:/.test(x.frame.data.name)) {
          fail(`context name ${JSON.stringify(x.frame.data.name)} has no namespace`);
        }
      }
      return names.join(", ");
    },
  }),
  def({
    id: "meta.list-id-zero",
    area: "meta",
    title: "LIST_META_CONTEXT replies carry context id 0",
    section: "Option types / NBD_OPT_LIST_META_CONTEXT",
    quote: "The metadata context ID in these replies is reserved and SHOULD be set to zero",
    level: "SHOULD",
    async run(ctx) {
      if (!ctx.facts.metaContexts) skip("metadata contexts not supported");
      const p = await ctx.open();
      await p.start();
      if ((await p.final(Option.STRUCTURED_REPLY)) !== OptionReply.ACK) skip("structured replies refused");
      const r = await p.ask(Option.LIST_META_CONTEXT, {
        kind: "meta-context-query",
        name: ctx.target.exportName,
        queries: [],
      });
      for (const x of r) {
        if (x.frame.data.kind === "meta-context" && x.frame.data.id !== 0) {
          fail(`id ${x.frame.data.id} for ${x.frame.data.name}`);
        }
      }
    },
  }),
  def({
    id: "meta.set-base-allocation",
    area: "meta",
    title: "SET_META_CONTEXT base:allocation selects exactly that context",
    section: "Option types / NBD_OPT_SET_META_CONTEXT",
    quote:
      "The server MUST reply with a number of NBD_REP_META_CONTEXT replies, one for each selected metadata context, each with a unique metadata context ID",
    level: "MUST",
    async run(ctx) {
      if (!ctx.facts.metaContexts) skip("metadata contexts not supported");
      const p = await ctx.open();
      await p.start();
      if ((await p.final(Option.STRUCTURED_REPLY)) !== OptionReply.ACK) skip("structured replies refused");
      const r = await p.ask(Option.SET_META_CONTEXT, {
        kind: "meta-context-query",
        name: ctx.target.exportName,
        queries: ["base:allocation"],
      });
      const last = r[r.length - 1]!.frame;
      if (last.reply !== OptionReply.ACK) fail(`answered ${describeReply(last)}`);
      const ctxs = r.slice(0, -1).map((x) => x.frame.data);
      if (ctxs.length === 0) skip("base:allocation not offered");
      if (ctxs.length !== 1 || ctxs[0]!.kind !== "meta-context" || ctxs[0]!.name !== "base:allocation") {
        fail(`selected ${JSON.stringify(ctxs)}`);
      }
      return `id ${ctxs[0]!.id}`;
    },
  }),
  def({
    id: "meta.unknown-namespace",
    area: "meta",
    title: "A query in an unknown namespace is ignored",
    section: "Option types / NBD_OPT_LIST_META_CONTEXT",
    quote: "the server MUST ignore query strings belonging to an unknown namespace",
    level: "MUST",
    async run(ctx) {
      if (!ctx.facts.metaContexts) skip("metadata contexts not supported");
      const p = await ctx.open();
      await p.start();
      if ((await p.final(Option.STRUCTURED_REPLY)) !== OptionReply.ACK) skip("structured replies refused");
      const r = await p.ask(Option.SET_META_CONTEXT, {
        kind: "meta-context-query",
        name: ctx.target.exportName,
        queries: ["x-nbd-codec-conform:nothing"],
      });
      const last = r[r.length - 1]!.frame;
      if (last.reply !== OptionReply.ACK) fail(`answered ${describeReply(last)}`);
      if (r.length > 1) fail(`${r.length - 1} contexts selected by a query in an unknown namespace`);
    },
  }),
  def({
    id: "meta.bad-query-length",
    area: "meta",
    title: "A query length past the option data gets ERR_INVALID",
    section: "Option types / NBD_OPT_LIST_META_CONTEXT",
    quote:
      "If the option request is syntactically invalid (such as a query length that would require reading beyond the original length given in the option header), the server MUST fail the request with NBD_REP_ERR_INVALID.",
    level: "MUST",
    async run(ctx) {
      if (!ctx.facts.metaContexts) skip("metadata contexts not supported");
      const p = await ctx.open();
      await p.start();
      if ((await p.final(Option.STRUCTURED_REPLY)) !== OptionReply.ACK) skip("structured replies refused");
      // The export's name, one query, query length 100 with only 4 bytes present.
      const name = new TextEncoder().encode(ctx.target.exportName);
      const data = new Uint8Array(4 + name.length + 12);
      const dv = new DataView(data.buffer);
      dv.setUint32(0, name.length);
      data.set(name, 4);
      dv.setUint32(4 + name.length, 1);
      dv.setUint32(8 + name.length, 100);
      data.set([0x62, 0x61, 0x73, 0x65], 12 + name.length);
      const r = await p.final(Option.LIST_META_CONTEXT, data);
      if (r !== OptionReply.ERR_INVALID) fail(`answered with ${repName(r)}`);
    },
  }),
  def({
    id: "meta.set-before-structured",
    area: "meta",
    title: "SET_META_CONTEXT before structured replies gets ERR_INVALID",
    section: "Option types / NBD_OPT_SET_META_CONTEXT",
    quote:
      "This option MUST NOT be requested unless structured replies have been negotiated first. If a client attempts to do so, a server SHOULD send NBD_REP_ERR_INVALID.",
    level: "SHOULD",
    async run(ctx) {
      if (!ctx.facts.metaContexts) skip("metadata contexts not supported");
      const p = await ctx.open();
      await p.start();
      const r = await p.final(Option.SET_META_CONTEXT, {
        kind: "meta-context-query",
        name: ctx.target.exportName,
        queries: ["base:allocation"],
      });
      if (r !== OptionReply.ERR_INVALID) fail(`answered with ${repName(r)}`);
    },
  }),
  def({
    id: "meta.set-ids-unique",
    area: "meta",
    title: "Every listed context selected at once gets a distinct id",
    section: "Option types / NBD_OPT_SET_META_CONTEXT",
    quote: "one for each selected metadata context, each with a unique metadata context ID",
    level: "MUST",
    async run(ctx) {
      const names = ctx.facts.contexts.filter((n) => !n.endsWith(":"));
      if (names.length < 2) skip(`only ${names.length} context listed`);
      const p = await ctx.open();
      await p.start();
      if ((await p.final(Option.STRUCTURED_REPLY)) !== OptionReply.ACK) skip("structured replies refused");
      const r = await p.ask(Option.SET_META_CONTEXT, {
        kind: "meta-context-query",
        name: ctx.target.exportName,
        queries: names,
      });
      const ids = r.flatMap((x) => x.frame.data.kind === "meta-context" ? [x.frame.data.id] : []);
      if (new Set(ids).size !== ids.length) fail(`ids ${ids.join(", ")}`);
      return `${ids.length} contexts`;
    },
  }),
  // -- transmission: READ ---------------------------------------------------------------------------------
  def({
    id: "read.structured",
    area: "read",
    title: "READ is answered with chunks ending in DONE when structured",
    section: S_STRUCT,
    quote:
      "if structured replies are negotiated, the server MUST use a structured reply for any response with a payload, and MUST NOT use a simple reply for NBD_CMD_READ",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go(SR);
      const r = await p.roundTrip({
        command: Command.READ,
        offset: 0n,
        length: ioLength(n, 4096, ctx.facts.minBlock),
      });
      rules(r, "reply-simple-read", "chunk-done", "reply-header-style");
      return `${r.frames.length} frames`;
    },
  }),
  def({
    id: "read.coverage",
    area: "read",
    title: "A successful READ is covered exactly by its chunks",
    section: S_READ,
    quote:
      "When no error is detected, the server MUST send enough data chunks to cover the entire region described by the offset and length of the client's request.",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go(SR);
      const r = await p.roundTrip({
        command: Command.READ,
        offset: 0n,
        length: ioLength(n, 65536, ctx.facts.minBlock),
      });
      if (r.error) fail(`READ failed: ${errName(r.error)}`);
      rules(r, "read-coverage");
      return `${r.contentChunks} content chunks`;
    },
  }),
  def({
    id: "read.within",
    area: "read",
    title: "READ chunks stay inside the request",
    section: S_READ,
    quote: "MUST NOT send chunks that describe data outside the offset and length of the request",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go(SR);
      const len = ioLength(n, 8192, ctx.facts.minBlock);
      const off = n.size >= 3n * len ? len : 0n;
      const r = await p.roundTrip({ command: Command.READ, offset: off, length: len });
      rules(r, "read-within");
    },
  }),
  def({
    id: "read.no-overlap",
    area: "read",
    title: "READ chunks do not overlap",
    section: S_READ,
    quote: "The server MUST NOT send content chunks that overlap with any earlier content or error chunk",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go(SR);
      const r = await p.roundTrip({
        command: Command.READ,
        offset: 0n,
        length: ioLength(n, 65536, ctx.facts.minBlock),
      });
      rules(r, "read-overlap");
    },
  }),
  def({
    id: "read.chunk-format",
    area: "read",
    title: "READ chunks have the lengths their types require",
    section: "Structured reply types",
    quote:
      "NBD_REPLY_TYPE_OFFSET_DATA ... length MUST be at least 9; NBD_REPLY_TYPE_OFFSET_HOLE ... length MUST be exactly 12 ... hole size (unsigned, MUST be nonzero)",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go(SR);
      const r = await p.roundTrip({
        command: Command.READ,
        offset: 0n,
        length: ioLength(n, 65536, ctx.facts.minBlock),
      });
      rules(r, "frame:*", "chunk-none-done", "chunk-type-unknown");
    },
  }),
  def({
    id: "read.done-last",
    area: "read",
    title: "No chunk follows the DONE chunk",
    section: S_STRUCT,
    quote: "the chunk with the flag NBD_REPLY_FLAG_DONE MUST be sent last",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go(SR);
      const len = ioLength(n, 4096, ctx.facts.minBlock);
      await p.roundTrip({ command: Command.READ, offset: 0n, length: len });
      await p.roundTrip({ command: Command.READ, offset: 0n, length: len });
    },
  }),
  def({
    id: "read.simple",
    area: "read",
    title: "Without structured replies READ gets a simple reply with exactly the data",
    section: "Transmission / Simple reply message",
    quote:
      "The simple reply message MUST be sent by the server in response to all requests if structured replies have not been negotiated",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: false });
      const len = ioLength(n, 4096, ctx.facts.minBlock);
      const r = await p.roundTrip({ command: Command.READ, offset: 0n, length: len });
      rules(r, "reply-chunk-unnegotiated");
      const again = await p.roundTrip({ command: Command.READ, offset: 0n, length: len });
      rules(again, "reply-chunk-unnegotiated");
      if (!sameBytes(r.data, again.data!)) fail("two READs of the same range returned different data");
    },
  }),
  def({
    id: "read.simple-error-no-data",
    area: "read",
    title: "A failed simple READ carries no data",
    section: S_READ,
    quote:
      "If an error occurs, the server SHOULD set the appropriate error code in the error field. The server MAY then initiate a hard disconnect. If it chooses not to, it MUST NOT send any payload for this request.",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: false });
      const r = await p.roundTrip({ command: Command.READ, offset: n.size, length: 4096n });
      if (r.error === 0) skip("the server did not fail a READ beyond the end");
      await stillAlive(p, n, ctx.facts.minBlock);
      return errName(r.error);
    },
  }),
  def({
    id: "read.df",
    area: "read",
    title: "READ with DF gets at most one content chunk (64 KiB must work)",
    section: S_READ,
    quote:
      "If this flag is set, the server MUST send at most one content chunk ... the server MUST support unfragmented reads in which the client's request length does not exceed 65,536 bytes",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go(SR);
      needFlag(n.flags, TransmissionFlag.SEND_DF, "NBD_FLAG_SEND_DF");
      const r = await p.roundTrip({
        command: Command.READ,
        flags: CommandFlag.DF,
        offset: 0n,
        length: ioLength(n, 65536, ctx.facts.minBlock),
      });
      if (r.error) fail(`READ with DF failed: ${errName(r.error)}`);
      rules(r, "read-df-one", "read-coverage");
    },
  }),
  def({
    id: "read.beyond-end",
    area: "read",
    title: "READ past the end of the export fails with EINVAL",
    section: "Size constraints",
    quote:
      "The server SHOULD report an NBD_EINVAL error if the client's request is not aligned to advertised minimum block size boundaries or would exceed the export size.",
    level: "SHOULD",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      const r = await p.roundTrip({ command: Command.READ, offset: n.size, length: 4096n });
      return expectError(r, ErrorValue.EINVAL, "READ beyond the end");
    },
  }),
  def({
    id: "read.error-chunk",
    area: "read",
    title: "Error chunks carry a nonzero error and a message that fits",
    section: "Structured reply types / NBD_REPLY_TYPE_ERROR",
    quote: "32 bits: error (MUST be nonzero); 16 bits: message length (no more than header length - 6)",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go(SR);
      const r = await p.roundTrip({ command: Command.READ, offset: n.size, length: 4096n });
      if (r.error === 0) skip("the server did not fail a READ beyond the end");
      if (r.frames.every((f) => f.type === "simple-reply")) skip("error sent as a simple reply");
      rules(r, "error-nonzero", "frame:*");
      return `${errName(r.error)}${r.message ? ` "${r.message}"` : ""}`;
    },
  }),
  def({
    id: "read.zero-length",
    area: "read",
    title: "A zero-length READ does not end the connection",
    section: S_READ,
    quote:
      "The client SHOULD NOT request a read length of 0; the behavior of a server on such a request is unspecified although the server SHOULD NOT disconnect.",
    level: "SHOULD",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      const r = await p.roundTrip({ command: Command.READ, offset: 0n, length: 0n });
      await stillAlive(p, n, ctx.facts.minBlock);
      return r.error ? errName(r.error) : "success";
    },
  }),
  def({
    id: "read.over-max",
    area: "read",
    title: "A structured READ above the maximum payload (up to 2^25) is split or refused, not a disconnect",
    section: S_READ,
    quote:
      "A server MAY support read requests larger than the maximum payload size by splitting the response across multiple chunks ... however, the server is also permitted to reject large read requests up front with NBD_EOVERFLOW",
    level: "SHOULD",
    async run(ctx) {
      // Why SHOULD and only up to 2^25: the READ clause allows splitting or EOVERFLOW, and "any payload not
      // exceeding 2^25 (33,554,432) bytes SHOULD NOT be considered a denial of service attack, even if that
      // length is larger than the advertised maximum payload size" (Size constraints). Above 2^25 a hard
      // disconnect is allowed, so there is nothing to check.
      const [p, n] = await ctx.go({ structured: "required", info: [Info.BLOCK_SIZE] });
      const max = n.blockSize?.maximum;
      if (max === undefined) skip("no maximum payload advertised");
      const mb = BigInt(ctx.facts.minBlock);
      const length = (BigInt(max) + mb) / mb * mb;
      if (length > 1n << 25n) {
        skip(
          `the maximum payload ${max} leaves no READ above it of at most 2^25 bytes (a disconnect is allowed)`,
        );
      }
      if (length > n.size) skip(`the export (${n.size} bytes) is not larger than the maximum payload ${max}`);
      const r = await p.roundTrip({ command: Command.READ, offset: 0n, length });
      if (r.error === 0) {
        rules(r, "read-*", "frame:*");
      } else if (r.error !== ErrorValue.EOVERFLOW && r.error !== ErrorValue.EINVAL) {
        fail(`READ of ${length} bytes failed with ${errName(r.error)}, not NBD_EOVERFLOW or NBD_EINVAL`);
      } else {
        rules(r, "frame:*");
      }
      await stillAlive(p, n, ctx.facts.minBlock);
      return `READ of ${length} bytes (maximum payload ${max}): ${
        r.error ? errName(r.error) : `${r.frames.length} chunks`
      }`;
    },
  }),
  // -- transmission: general ------------------------------------------------------------------------------
  def({
    id: "tx.cookies",
    area: "transmission",
    title: "Replies echo 64-bit cookies exactly",
    section: "Transmission",
    quote:
      "In each reply message (whether simple or structured), the server MUST use the same value for cookie as was sent by the client in the corresponding request",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      const len = ioLength(n, 512, ctx.facts.minBlock);
      for (const cookie of [0n, 0xffff_ffff_ffff_ffffn, 0x8000_0000_0000_0001n, 0x0123_4567_89ab_cdefn]) {
        await p.roundTrip({ command: Command.READ, offset: 0n, length: len, cookie });
      }
    },
  }),
  def({
    id: "tx.in-flight",
    area: "transmission",
    title: "32 requests in flight are each answered once",
    section: "Transmission",
    quote:
      "Replies need not be sent in the same order as requests ... the server MUST use the same value for cookie as was sent by the client",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      const len = ioLength(n, 4096, ctx.facts.minBlock);
      const span = n.size / len;
      const cookies: bigint[] = [];
      for (let i = 0n; i < 32n; i++) {
        cookies.push(await p.request({ command: Command.READ, offset: (i % span) * len, length: len }));
      }
      for (const c of cookies) {
        const r = await p.reply(c);
        if (r.error) fail(`READ failed: ${errName(r.error)}`);
      }
    },
  }),
  def({
    id: "tx.in-flight-many",
    area: "transmission",
    title: "128 requests sent in one write are each answered once, with the data of their own range",
    section: "Transmission",
    quote:
      "Replies need not be sent in the same order as requests (i.e., requests may be handled by the server asynchronously) ... the server MUST use the same value for cookie as was sent by the client in the corresponding request",
    level: "MUST",
    async run(ctx) {
      // More than 32 at once: servers with a fixed request queue (qemu-nbd takes 16 at a time) must stop
      // reading, not drop or mix up requests. The probe takes replies in any order; a second reply for a
      // cookie, or one for a cookie never sent, is a violation; a missing one runs into the time bound.
      const count = 128;
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      const len = ioLength(n, 512, ctx.facts.minBlock);
      const slots = n.size / len < BigInt(count) ? n.size / len : BigInt(count);
      const whole = await p.roundTrip({ command: Command.READ, offset: 0n, length: slots * len });
      if (whole.error) fail(`READ of the first ${slots * len} bytes failed: ${errName(whole.error)}`);
      const inits = [];
      for (let i = 0; i < count; i++) {
        // Every other request reads a different slot from the end, so equal data cannot hide a swap.
        const slot = BigInt(i) % slots;
        const at = i % 2 === 0 ? slot : slots - 1n - slot;
        inits.push({ command: Command.READ, offset: at * len, length: len });
      }
      const cookies = await p.requestAll(inits);
      for (let i = 0; i < count; i++) {
        const r = await p.reply(cookies[i]!);
        if (r.error) fail(`READ ${i} of ${count} failed: ${errName(r.error)}`);
        const at = Number(inits[i]!.offset);
        if (!sameBytes(r.data, whole.data!.subarray(at, at + Number(len)))) {
          fail(`the reply to READ ${i} (cookie 0x${cookies[i]!.toString(16)}) has the data of another range`);
        }
      }
      // A late duplicate of any of them shows up before the reply to this one.
      await p.roundTrip({ command: Command.READ, offset: 0n, length: len });
      return `${count} READs of ${len} bytes`;
    },
  }),
  def({
    id: "tx.unknown-command",
    area: "transmission",
    title: "An unknown command gets EINVAL",
    section: S_ERR,
    quote: "The server SHOULD return NBD_EINVAL if it receives an unknown command.",
    level: "SHOULD",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      const r = await p.roundTrip({ command: 0x3f, offset: 0n, length: 0n });
      const d = expectError(r, ErrorValue.EINVAL, "unknown command 63");
      await stillAlive(p, n, ctx.facts.minBlock);
      return d;
    },
  }),
  def({
    id: "tx.unknown-flag",
    area: "transmission",
    title: "An unknown command flag gets EINVAL",
    section: S_ERR,
    quote: "The server SHOULD return NBD_EINVAL if it receives an unknown command flag.",
    level: "SHOULD",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      const r = await p.roundTrip({
        command: Command.READ,
        flags: 0x4000,
        offset: 0n,
        length: ioLength(n, 512, ctx.facts.minBlock),
      });
      const d = expectError(r, ErrorValue.EINVAL, "READ with flag 0x4000");
      await stillAlive(p, n, ctx.facts.minBlock);
      return d;
    },
  }),
  def({
    id: "tx.flag-inapplicable",
    area: "transmission",
    title: "REQ_ONE on READ (a flag for another command) gets EINVAL",
    section: S_ERR,
    quote:
      "It also SHOULD return NBD_EINVAL if it receives a request with a flag not explicitly documented as applicable to the given request.",
    level: "SHOULD",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      const r = await p.roundTrip({
        command: Command.READ,
        flags: CommandFlag.REQ_ONE,
        offset: 0n,
        length: ioLength(n, 512, ctx.facts.minBlock),
      });
      return expectError(r, ErrorValue.EINVAL, "READ with REQ_ONE");
    },
  }),
  def({
    id: "tx.error-structured",
    area: "transmission",
    title: "With structured replies, errors come as error chunks (to carry a message)",
    section: S_STRUCT,
    quote:
      "The server SHOULD prefer sending errors via a structured reply, as the error can then be accompanied by a string payload to present to a human user.",
    level: "SHOULD",
    async run(ctx) {
      const [p] = await ctx.go(SR);
      const r = await p.roundTrip({ command: 0x3f, offset: 0n, length: 0n });
      if (r.error === 0) skip("the server did not fail an unknown command");
      if (r.frames.some((f) => f.type === "simple-reply")) fail(`${errName(r.error)} sent as a simple reply`);
      return `${errName(r.error)}${r.message ? ` "${r.message}"` : ""}`;
    },
  }),
  def({
    id: "tx.unaligned",
    area: "transmission",
    title: "A READ not aligned to the minimum block size gets EINVAL",
    section: "Size constraints",
    quote:
      "The server SHOULD report an NBD_EINVAL error if the client's request is not aligned to advertised minimum block size boundaries",
    level: "SHOULD",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured, info: [Info.BLOCK_SIZE] });
      const min = n.blockSize?.minimum ?? 1;
      if (min <= 1) skip("no minimum block size above 1 advertised");
      if (n.size < BigInt(2 * min)) skip("export too small");
      const r = await p.roundTrip({ command: Command.READ, offset: BigInt(min / 2), length: BigInt(min) });
      const d = expectError(r, ErrorValue.EINVAL, `READ at ${min / 2} with minimum block size ${min}`);
      await stillAlive(p, n, min);
      return d;
    },
  }),
  def({
    id: "tx.df-unadvertised",
    area: "transmission",
    title: "DF without structured replies (SEND_DF clear) gets EINVAL",
    section: S_ERR,
    quote:
      "It also SHOULD return NBD_EINVAL if it receives a request with a flag not explicitly documented as applicable to the given request.",
    level: "SHOULD",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: false });
      if (n.flags & TransmissionFlag.SEND_DF) {
        skip("SEND_DF advertised without structured replies (see info.df-needs-structured)");
      }
      const r = await p.roundTrip({
        command: Command.READ,
        flags: CommandFlag.DF,
        offset: 0n,
        length: ioLength(n, 512, ctx.facts.minBlock),
      });
      const d = expectError(r, ErrorValue.EINVAL, "READ with DF, which was not advertised");
      await stillAlive(p, n, ctx.facts.minBlock);
      return d;
    },
  }),
  def({
    id: "tx.effect-over-max",
    area: "transmission",
    title: "An effect length above the maximum payload is answered, not a disconnect",
    section: "Size constraints",
    quote:
      "the client MAY request an effect length larger than the maximum payload size; the server SHOULD NOT disconnect, but MAY reply with an NBD_EOVERFLOW or NBD_EINVAL error",
    level: "SHOULD",
    async run(ctx) {
      const useBs = ctx.facts.metaContexts && ctx.facts.contexts.includes("base:allocation");
      const [p, n] = await ctx.go(
        useBs
          ? { structured: "required", contexts: ["base:allocation"], info: [Info.BLOCK_SIZE] }
          : { structured: ctx.facts.structured, info: [Info.BLOCK_SIZE] },
      );
      const cache = (n.flags & TransmissionFlag.SEND_CACHE) !== 0;
      if (!useBs && !cache) skip("neither NBD_CMD_BLOCK_STATUS nor NBD_CMD_CACHE available");
      const max = BigInt(n.blockSize?.maximum ?? 32 << 20);
      const mb = BigInt(ctx.facts.minBlock);
      const length = (max + mb) / mb * mb;
      if (length > n.size) skip(`the export (${n.size} bytes) is not larger than the maximum payload ${max}`);
      const r = await p.roundTrip({
        command: useBs ? Command.BLOCK_STATUS : Command.CACHE,
        offset: 0n,
        length,
      });
      if (r.error !== 0 && r.error !== ErrorValue.EOVERFLOW && r.error !== ErrorValue.EINVAL) {
        fail(`failed with ${errName(r.error)}, not NBD_EOVERFLOW or NBD_EINVAL`);
      }
      await stillAlive(p, n, ctx.facts.minBlock);
      return `${useBs ? "BLOCK_STATUS" : "CACHE"} of ${length} bytes: ${
        r.error ? errName(r.error) : "success"
      }`;
    },
  }),
  def({
    id: "tx.length-max-end",
    area: "transmission",
    title: "A compact READ of length 0xffffffff near the end of the export gets EINVAL (no 32-bit wrap)",
    section: "Size constraints",
    quote:
      "The server SHOULD report an NBD_EINVAL error if the client's request is not aligned to advertised minimum block size boundaries or would exceed the export size.",
    level: "SHOULD",
    async run(ctx) {
      // A server that adds offset and length in 32 bits sees (size - 4096 + 0xffffffff) mod 2^32, inside the
      // export, and starts a 4 GiB read. Structured replies when available, so a buggy success is chunked.
      const [p, n] = await ctx.go({ structured: ctx.facts.structured, extended: false });
      const mb = BigInt(ctx.facts.minBlock);
      const back = 4096n > n.size ? n.size : 4096n;
      const offset = (n.size - back) / mb * mb;
      const r = await p.roundTrip({ command: Command.READ, offset, length: 0xffff_ffffn });
      const d = expectError(r, ErrorValue.EINVAL, `READ of 0xffffffff bytes at ${offset}`);
      await stillAlive(p, n, ctx.facts.minBlock);
      return d;
    },
  }),
  def({
    id: "tx.fua-any-command",
    area: "transmission",
    title: "FUA is accepted on READ and FLUSH once SEND_FUA is advertised",
    section: "Command flags",
    quote:
      "NBD_CMD_FLAG_FUA; This flag is valid for all commands, provided NBD_FLAG_SEND_FUA has been negotiated, in which case the server MUST accept all commands with this bit set",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      needFlag(n.flags, TransmissionFlag.SEND_FUA, "NBD_FLAG_SEND_FUA");
      const r = await p.roundTrip({
        command: Command.READ,
        flags: CommandFlag.FUA,
        offset: 0n,
        length: ioLength(n, 512, ctx.facts.minBlock),
      });
      if (r.error) fail(`READ with FUA failed: ${errName(r.error)}`);
      if (n.flags & TransmissionFlag.SEND_FLUSH) {
        const f = await p.roundTrip({ command: Command.FLUSH, flags: CommandFlag.FUA });
        if (f.error) fail(`FLUSH with FUA failed: ${errName(f.error)}`);
      }
    },
  }),
  def({
    id: "tx.flush",
    area: "transmission",
    title: "FLUSH, when advertised, succeeds with no payload",
    section: S_TFLAGS,
    quote: "The server MUST NOT set the flag for features it does not support.",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      needFlag(n.flags, TransmissionFlag.SEND_FLUSH, "NBD_FLAG_SEND_FLUSH");
      const r = await p.roundTrip({ command: Command.FLUSH });
      if (r.error) fail(`FLUSH failed: ${errName(r.error)}`);
      rules(r, "chunk-type-command");
    },
  }),
  def({
    id: "tx.cache",
    area: "transmission",
    title: "CACHE, when advertised, succeeds",
    section: S_TFLAGS,
    quote: "The server MUST NOT set the flag for features it does not support.",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      needFlag(n.flags, TransmissionFlag.SEND_CACHE, "NBD_FLAG_SEND_CACHE");
      const r = await p.roundTrip({
        command: Command.CACHE,
        offset: 0n,
        length: ioLength(n, 4096, ctx.facts.minBlock),
      });
      if (r.error) fail(`CACHE failed: ${errName(r.error)}`);
      rules(r, "chunk-type-command");
    },
  }),
  def({
    id: "tx.block-status-unselected",
    area: "transmission",
    title: "BLOCK_STATUS without a selected context gets EINVAL",
    section: "Metadata querying",
    quote:
      "Servers SHOULD reply with NBD_EINVAL to clients sending NBD_CMD_BLOCK_STATUS without selecting at least one metadata context.",
    level: "SHOULD",
    async run(ctx) {
      const [p, n] = await ctx.go(SR);
      const r = await p.roundTrip({
        command: Command.BLOCK_STATUS,
        offset: 0n,
        length: ioLength(n, 4096, ctx.facts.minBlock),
      });
      return expectError(r, ErrorValue.EINVAL, "BLOCK_STATUS with no context selected");
    },
  }),
  def({
    id: "tx.disc",
    area: "transmission",
    title: "DISC gets no reply and the server closes",
    section: "Request types / NBD_CMD_DISC",
    quote:
      "The server MUST handle all outstanding requests, shut down the TLS session (if one is running), and close the TCP session. ... There is no reply to an NBD_CMD_DISC.",
    level: "MUST",
    async run(ctx) {
      const [p] = await ctx.go({ structured: ctx.facts.structured });
      await p.request({ command: Command.DISC });
      const r = await p.reader.closed();
      if (r !== "closed") fail(`${r.length} bytes after NBD_CMD_DISC`);
    },
  }),
  def({
    id: "tx.disc-outstanding",
    area: "transmission",
    title: "Requests in flight before DISC are answered before the server closes",
    section: "Request types / NBD_CMD_DISC",
    quote: "A disconnect request. The server MUST handle all outstanding requests",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      const len = ioLength(n, 4096, ctx.facts.minBlock);
      const cookies: bigint[] = [];
      for (let i = 0; i < 4; i++) {
        cookies.push(await p.request({ command: Command.READ, offset: 0n, length: len }));
      }
      await p.request({ command: Command.DISC });
      for (const c of cookies) await p.reply(c);
      const r = await p.reader.closed();
      if (r !== "closed") fail(`${r.length} bytes after the replies and NBD_CMD_DISC`);
    },
  }),
  def({
    id: "tx.read-only-write",
    area: "transmission",
    title: "A WRITE to a read-only export fails",
    section: S_TFLAGS,
    quote:
      "NBD_FLAG_READ_ONLY ... If this flag is set, the server MUST error subsequent write operations to the export.",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      needFlag(n.flags, TransmissionFlag.READ_ONLY, "NBD_FLAG_READ_ONLY");
      const len = ioLength(n, 512, ctx.facts.minBlock);
      const before = await p.roundTrip({ command: Command.READ, offset: 0n, length: len });
      if (before.error || !before.data) fail(`READ failed: ${errName(before.error)}`);
      // The same bytes back: harmless even if the server wrongly accepts.
      const r = await p.roundTrip({ command: Command.WRITE, offset: 0n, data: before.data });
      if (r.error === 0) fail("WRITE to a read-only export succeeded");
      return errName(r.error) + (r.error === ErrorValue.EPERM ? "" : " (EPERM recommended)");
    },
  }),
  // -- transmission: writes (only with --allow-writes) ----------------------------------------------------
  def({
    id: "write.read-back",
    area: "write",
    title: "Data written reads back",
    section: "Request types / NBD_CMD_WRITE",
    quote: "The server MUST write the data to disk, and then send the reply message.",
    level: "MUST",
    writes: true,
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      if (n.flags & TransmissionFlag.READ_ONLY) skip("read-only export");
      const len = Math.max(ctx.facts.minBlock, 4096);
      const off = ctx.writable(len);
      const data = pattern(len, 0x5eed);
      const w = await p.roundTrip({ command: Command.WRITE, offset: off, data });
      if (w.error) fail(`WRITE failed: ${errName(w.error)}`);
      const r = await p.roundTrip({ command: Command.READ, offset: off, length: BigInt(len) });
      if (!sameBytes(r.data, data)) fail("the data read back differs from the data written");
    },
  }),
  def({
    id: "write.fua",
    area: "write",
    title: "WRITE with FUA succeeds when SEND_FUA is advertised",
    section: "Command flags",
    quote: "the server MUST accept all commands with this bit set (even by ignoring the bit)",
    level: "MUST",
    writes: true,
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      needFlag(n.flags, TransmissionFlag.SEND_FUA, "NBD_FLAG_SEND_FUA");
      if (n.flags & TransmissionFlag.READ_ONLY) skip("read-only export");
      const len = Math.max(ctx.facts.minBlock, 4096);
      const off = ctx.writable(len);
      const w = await p.roundTrip({
        command: Command.WRITE,
        flags: CommandFlag.FUA,
        offset: off,
        data: pattern(len, 7),
      });
      if (w.error) fail(`WRITE with FUA failed: ${errName(w.error)}`);
    },
  }),
  def({
    id: "write.zeroes",
    area: "write",
    title: "WRITE_ZEROES (and with NO_HOLE) reads back as zeroes",
    section: "Request types / NBD_CMD_WRITE_ZEROES",
    quote:
      "By default, the server MAY use trimming to zero out the area ... but it MUST ensure that the data reads back as zero.",
    level: "MUST",
    writes: true,
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      needFlag(n.flags, TransmissionFlag.SEND_WRITE_ZEROES, "NBD_FLAG_SEND_WRITE_ZEROES");
      if (n.flags & TransmissionFlag.READ_ONLY) skip("read-only export");
      const len = Math.max(ctx.facts.minBlock, 8192);
      const off = ctx.writable(len);
      for (const flags of [0, CommandFlag.NO_HOLE]) {
        await p.roundTrip({ command: Command.WRITE, offset: off, data: pattern(len, 9) });
        const z = await p.roundTrip({
          command: Command.WRITE_ZEROES,
          flags,
          offset: off,
          length: BigInt(len),
        });
        if (z.error) fail(`WRITE_ZEROES (flags ${flags}) failed: ${errName(z.error)}`);
        const r = await p.roundTrip({ command: Command.READ, offset: off, length: BigInt(len) });
        if (!allZero(r.data)) fail(`WRITE_ZEROES (flags ${flags}) did not read back as zeroes`);
      }
    },
  }),
  def({
    id: "write.fast-zero",
    area: "write",
    title: "FAST_ZERO either zeroes or fails with ENOTSUP",
    section: "Request types / NBD_CMD_WRITE_ZEROES",
    quote:
      "if NBD_CMD_FLAG_FAST_ZERO is set, the server ... MUST fail quickly with NBD_ENOTSUP unless the request can be serviced ... faster than a corresponding NBD_CMD_WRITE",
    level: "MUST",
    writes: true,
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      needFlag(n.flags, TransmissionFlag.SEND_FAST_ZERO, "NBD_FLAG_SEND_FAST_ZERO");
      if (n.flags & TransmissionFlag.READ_ONLY) skip("read-only export");
      const len = Math.max(ctx.facts.minBlock, 8192);
      const off = ctx.writable(len);
      await p.roundTrip({ command: Command.WRITE, offset: off, data: pattern(len, 11) });
      const z = await p.roundTrip({
        command: Command.WRITE_ZEROES,
        flags: CommandFlag.FAST_ZERO,
        offset: off,
        length: BigInt(len),
      });
      if (z.error === ErrorValue.ENOTSUP) return "ENOTSUP";
      if (z.error) fail(`failed with ${errName(z.error)}, not ENOTSUP`);
      const r = await p.roundTrip({ command: Command.READ, offset: off, length: BigInt(len) });
      if (!allZero(r.data)) fail("FAST_ZERO succeeded but the area does not read back as zeroes");
      return "zeroed";
    },
  }),
  def({
    id: "write.trim",
    area: "write",
    title: "TRIM, when advertised, succeeds",
    section: S_TFLAGS,
    quote: "The server MUST NOT set the flag for features it does not support.",
    level: "MUST",
    writes: true,
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      needFlag(n.flags, TransmissionFlag.SEND_TRIM, "NBD_FLAG_SEND_TRIM");
      if (n.flags & TransmissionFlag.READ_ONLY) skip("read-only export");
      const len = Math.max(ctx.facts.minBlock, 8192);
      const off = ctx.writable(len);
      const t = await p.roundTrip({ command: Command.TRIM, offset: off, length: BigInt(len) });
      if (t.error) fail(`TRIM failed: ${errName(t.error)}`);
    },
  }),
  def({
    id: "write.beyond-end",
    area: "write",
    title: "WRITE past the end fails with ENOSPC",
    section: S_ERR,
    quote:
      "The server SHOULD return NBD_ENOSPC if it receives a write request including one or more sectors beyond the size of the device.",
    level: "SHOULD",
    writes: true,
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: ctx.facts.structured });
      if (n.flags & TransmissionFlag.READ_ONLY) skip("read-only export");
      ctx.writable(0);
      const w = await p.roundTrip({ command: Command.WRITE, offset: n.size, data: new Uint8Array(512) });
      return expectError(w, ErrorValue.ENOSPC, "WRITE beyond the end");
    },
  }),
  // -- block status ---------------------------------------------------------------------------------------
  def({
    id: "bs.one-chunk-per-context",
    area: "block-status",
    title: "BLOCK_STATUS gets exactly one chunk per selected context",
    section: S_BS,
    quote:
      "For a successful return, the server MUST use a structured reply, containing exactly one chunk of type NBD_REPLY_TYPE_BLOCK_STATUS per selected context id",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: "required", contexts: ["base:allocation"] });
      const r = await p.roundTrip({
        command: Command.BLOCK_STATUS,
        offset: 0n,
        length: ioLength(n, 1 << 20, ctx.facts.minBlock),
      });
      if (r.error) fail(`BLOCK_STATUS failed: ${errName(r.error)}`);
      rules(r, "bs-per-context", "bs-context-known", "reply-simple-read");
      if (r.frames.some((f) => f.type === "simple-reply")) {
        fail("a simple reply to a successful BLOCK_STATUS");
      }
    },
  }),
  def({
    id: "bs.descriptors",
    area: "block-status",
    title: "Descriptors are nonzero, at least one, and all but the last inside the request",
    section: "Structured reply types / NBD_REPLY_TYPE_BLOCK_STATUS",
    quote:
      "length of the extent ... (unsigned, MUST be nonzero) ... the sum of the length fields of the first N-1 extents (if any) MUST be less than the requested length",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: "required", contexts: ["base:allocation"] });
      const len = ioLength(n, 1 << 20, ctx.facts.minBlock);
      const r = await p.roundTrip({ command: Command.BLOCK_STATUS, offset: 0n, length: len });
      rules(r, "bs-nonzero", "bs-at-least-one", "bs-sum", "frame:*");
      return [...r.extents.values()].map((e) => `${e.length} extents`).join(", ");
    },
  }),
  def({
    id: "bs.req-one",
    area: "block-status",
    title: "REQ_ONE gets exactly one descriptor, not longer than the request",
    section: "Structured reply types / NBD_REPLY_TYPE_BLOCK_STATUS",
    quote: Q_REQ_ONE,
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: "required", contexts: ["base:allocation"] });
      const r = await p.roundTrip({
        command: Command.BLOCK_STATUS,
        flags: CommandFlag.REQ_ONE,
        offset: 0n,
        length: ioLength(n, 4096, ctx.facts.minBlock),
      });
      if (r.error) fail(`BLOCK_STATUS failed: ${errName(r.error)}`);
      rules(r, "bs-req-one");
    },
  }),
  def({
    id: "bs.reserved-bits",
    area: "block-status",
    title: "base:allocation status uses only HOLE and ZERO",
    section: "base:allocation metadata context",
    quote:
      "For the base:allocation context, the remainder of the flags field is reserved. Servers SHOULD set it to all-zero",
    level: "SHOULD",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: "required", contexts: ["base:allocation"] });
      const r = await p.roundTrip({
        command: Command.BLOCK_STATUS,
        offset: 0n,
        length: ioLength(n, 1 << 20, ctx.facts.minBlock),
      });
      rules(r, "bs-reserved");
    },
  }),
  def({
    id: "bs.beyond-end",
    area: "block-status",
    title: "BLOCK_STATUS past the end fails with EINVAL",
    section: S_BS,
    quote:
      "The server SHOULD return NBD_EINVAL if it receives a NBD_CMD_BLOCK_STATUS request including one or more sectors beyond the size of the device.",
    level: "SHOULD",
    async run(ctx) {
      const [p, n] = await ctx.go({ structured: "required", contexts: ["base:allocation"] });
      const r = await p.roundTrip({ command: Command.BLOCK_STATUS, offset: n.size, length: 4096n });
      return expectError(r, ErrorValue.EINVAL, "BLOCK_STATUS beyond the end");
    },
  }),
  def({
    id: "bs.length-max",
    area: "block-status",
    title:
      "BLOCK_STATUS of length 2^32-1 (aligned down): descriptors stay inside the request, no 32-bit overflow",
    section: "Structured reply types / NBD_REPLY_TYPE_BLOCK_STATUS",
    quote: Q_REQ_ONE,
    level: "MUST",
    async run(ctx) {
      // The bug real servers shipped: rounding 0xffffffff up to the block size gives 2^32, which a 32-bit
      // descriptor field stores as 0 (or a 64-bit one reports beyond the request). Inside the export when it
      // is at least 4 GiB; on a smaller export the request reaches past the end, where an error is fine
      // (bs.beyond-end judges which) but a success must still keep the descriptor rules. An error is never
      // a violation here (effect lengths above the maximum payload MAY get EOVERFLOW or EINVAL); when every
      // request failed there was nothing to check, and the case is skipped.
      const mb = BigInt(ctx.facts.minBlock);
      // 2^32-1, or the largest multiple of the minimum block size below 2^32 (the client MUST align).
      const length = 0xffff_ffffn / mb * mb;
      const inside = ctx.facts.size >= length;
      const offset = inside ? (ctx.facts.size - length) / mb * mb : 0n;
      const notes: string[] = [];
      let checked = 0;
      for (const extended of ctx.facts.extended ? ["required" as const, false] : [false]) {
        const [p, n] = await ctx.go({ structured: "required", extended, contexts: ["base:allocation"] });
        for (const flags of [CommandFlag.REQ_ONE, 0]) {
          const r = await p.roundTrip({ command: Command.BLOCK_STATUS, flags, offset, length });
          const what = `${extended ? "extended" : "compact"} ${flags ? "with" : "without"} REQ_ONE`;
          if (r.error) {
            notes.push(`${what}: ${errName(r.error)}`);
            continue;
          }
          rules(r, "bs-nonzero", "bs-at-least-one", "bs-sum", "bs-req-one", "frame:*");
          checked++;
          notes.push(`${what}: ${[...r.extents.values()].map((e) => `${e.length} extents`).join(", ")}`);
        }
        await stillAlive(p, n, ctx.facts.minBlock);
      }
      const where = inside ? "inside the export" : "past the end (export under 4 GiB)";
      if (checked === 0) {
        skip(`every request failed, no descriptors to check (${where}; ${notes.join("; ")})`);
      }
      return `${where}; ${notes.join("; ")}`;
    },
  }),
  def({
    id: "bs.all-contexts",
    area: "block-status",
    title: "With every listed context selected, each gets its chunk, 32-bit contexts fit",
    section: S_BS,
    quote: "exactly one chunk of type NBD_REPLY_TYPE_BLOCK_STATUS per selected context id",
    level: "MUST",
    async run(ctx) {
      const names = ctx.facts.contexts.filter((x) => !x.endsWith(":"));
      if (names.length < 2) skip(`only ${names.length} context listed`);
      const [p, n] = await ctx.go({ structured: "required", contexts: names });
      const r = await p.roundTrip({
        command: Command.BLOCK_STATUS,
        offset: 0n,
        length: ioLength(n, 1 << 20, ctx.facts.minBlock),
      });
      if (r.error) fail(`BLOCK_STATUS failed: ${errName(r.error)}`);
      rules(r, "bs-per-context", "bs-context-known", "bs-upper-bits", "bs-nonzero");
      return `${p.contexts.size} contexts`;
    },
  }),
  // -- extended headers -----------------------------------------------------------------------------------
  def({
    id: "ext.no-simple-replies",
    area: "extended",
    title: "With extended headers no reply is simple, errors included",
    section: "ext: Transmission / Extended reply chunk message",
    quote:
      "If extended headers are negotiated, all server replies MUST use an extended reply; the server MUST NOT use simple replies even when there is no payload.",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ extended: "required" });
      const a = await p.roundTrip({ command: Command.READ, offset: n.size, length: 4096n });
      rules(a, "reply-simple-in-extended");
      if (n.flags & TransmissionFlag.SEND_FLUSH) {
        rules(await p.roundTrip({ command: Command.FLUSH }), "reply-simple-in-extended");
      }
      rules(await p.roundTrip({ command: 0x3f }), "reply-simple-in-extended");
    },
  }),
  def({
    id: "ext.header-style",
    area: "extended",
    title: "With extended headers every chunk uses the extended header",
    section: "ext: Transmission / Structured reply chunk message",
    quote:
      "NBD_REP_ACK: Extended headers have been negotiated; ... the server MUST use the 32-byte extended reply header.",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ extended: "required" });
      const r = await p.roundTrip({
        command: Command.READ,
        offset: 0n,
        length: ioLength(n, 65536, ctx.facts.minBlock),
      });
      rules(r, "reply-header-style", "frame:*");
    },
  }),
  def({
    id: "ext.structured-after",
    area: "extended",
    title: "STRUCTURED_REPLY after EXTENDED_HEADERS does not downgrade the headers",
    section: "ext: Option types / NBD_OPT_STRUCTURED_REPLY",
    quote:
      "NBD_REP_ERR_EXT_HEADER_REQD: The client has already successfully negotiated extended headers, which takes precedence over this option.",
    level: "MUST",
    async run(ctx) {
      if (!ctx.facts.extended) skip("extended headers not supported");
      const p = await ctx.open();
      await p.start();
      if ((await p.final(Option.EXTENDED_HEADERS)) !== OptionReply.ACK) skip("extended headers refused");
      const sr = await p.final(Option.STRUCTURED_REPLY);
      const go = await p.ask(Option.GO, { kind: "info-request", name: ctx.target.exportName, info: [] });
      const last = go[go.length - 1]!.frame;
      if (last.reply !== OptionReply.ACK) fail(`GO answered ${describeReply(last)}`);
      p.mode = "extended";
      const r = await p.roundTrip({
        command: Command.READ,
        offset: 0n,
        length: BigInt(Math.max(ctx.facts.minBlock, 512)),
      });
      rules(r, "reply-header-style", "reply-simple-in-extended");
      return `STRUCTURED_REPLY answered ${repName(sr)}`;
    },
  }),
  def({
    id: "ext.offset-echo",
    area: "extended",
    title: "Extended chunks echo the request's offset",
    section: "ext: Transmission / Structured reply chunk message",
    quote: "S: 64 bits, offset (MUST match the request)",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ extended: "required" });
      const len = ioLength(n, 4096, ctx.facts.minBlock);
      const off = n.size >= 2n * len ? len : 0n;
      const r = await p.roundTrip({ command: Command.READ, offset: off, length: len });
      rules(r, "reply-ext-offset");
    },
  }),
  def({
    id: "ext.block-status",
    area: "extended",
    title: "With extended headers block status comes as BLOCK_STATUS_EXT",
    section: "ext: Structured reply types / NBD_REPLY_TYPE_BLOCK_STATUS_EXT",
    quote:
      "NBD_REPLY_TYPE_BLOCK_STATUS (5) ... a server may only use this type if extended headers were not negotiated via NBD_OPT_EXTENDED_HEADERS.",
    level: "MUST",
    async run(ctx) {
      const [p, n] = await ctx.go({ extended: "required", contexts: ["base:allocation"] });
      const r = await p.roundTrip({
        command: Command.BLOCK_STATUS,
        offset: 0n,
        length: ioLength(n, 65536, ctx.facts.minBlock),
      });
      if (r.error) fail(`BLOCK_STATUS failed: ${errName(r.error)}`);
      rules(r, "bs-style", "bs-per-context");
    },
  }),
];

// ---------------------------------------------------------------------------------------------------------
// The runner.

/**
 * Options of {@link runServerCases}.
 *
 * @example
 * ```ts
 * import type { RunServerOptions } from "@nbd/codec";
 * const o: RunServerOptions = { only: ["read", "opt.unknown"], onResult: (r) => console.log(r.id, r.outcome) };
 * console.log(o.only); // [ "read", "opt.unknown" ]
 * ```
 */
export interface RunServerOptions {
  /** Run only cases whose id starts with one of these (default: all). */
  readonly only?: readonly string[];
  /** Called after each case (progress). */
  readonly onResult?: (r: ConformResult) => void;
}

/** Learns the server's features: one GO with structured replies, one probe of extended headers. */
export async function discoverServer(target: ServerTarget): Promise<ServerFacts> {
  const conns: Probe[] = [];
  const open = async (): Promise<Probe> => {
    let c: ConformConnection;
    try {
      c = await target.connect();
    } catch (e) {
      throw new ConformSetupError(`cannot connect: ${e instanceof Error ? e.message : String(e)}`);
    }
    const p = new Probe(c, target.exportName);
    conns.push(p);
    return p;
  };
  try {
    const a = await open();
    await a.start();
    const sr = await a.final(Option.STRUCTURED_REPLY);
    const structured = sr === OptionReply.ACK;
    let contexts: string[] = [];
    let metaContexts = false;
    if (structured) {
      const l = await a.ask(Option.LIST_META_CONTEXT, {
        kind: "meta-context-query",
        name: target.exportName,
        queries: [],
      });
      if (l[l.length - 1]!.frame.reply === OptionReply.ACK) {
        metaContexts = true;
        contexts = l.flatMap((x) => x.frame.data.kind === "meta-context" ? [x.frame.data.name] : []);
      }
    }
    const go = await a.ask(Option.GO, {
      kind: "info-request",
      name: target.exportName,
      info: [Info.BLOCK_SIZE],
    });
    const last = go[go.length - 1]!.frame;
    if (last.reply === OptionReply.ERR_TLS_REQD) {
      throw new ConformSetupError("the server requires TLS, which conform does not speak");
    }
    if (last.reply !== OptionReply.ACK) {
      throw new ConformSetupError(`GO ${JSON.stringify(target.exportName)} refused: ${describeReply(last)}`);
    }
    let size = 0n;
    let flags = 0;
    let blockSize: ServerFacts["blockSize"];
    for (const r of go) {
      const d = r.frame.data;
      if (d.kind === "info" && d.info.kind === "export") {
        size = d.info.size;
        flags = d.info.transmissionFlags;
      }
      if (d.kind === "info" && d.info.kind === "block-size") blockSize = d.info;
    }
    a.close();
    const b = await open();
    await b.start();
    const extended = (await b.final(Option.EXTENDED_HEADERS)) === OptionReply.ACK;
    return {
      handshakeFlags: a.handshakeFlags,
      flags,
      size,
      structured,
      extended,
      contexts,
      metaContexts,
      minBlock: blockSize?.minimum ?? 1,
      ...(blockSize
        ? {
          blockSize: {
            minimum: blockSize.minimum,
            preferred: blockSize.preferred,
            maximum: blockSize.maximum,
          },
        }
        : {}),
    };
  } catch (e) {
    if (e instanceof ConformViolation || e instanceof ConformTimeoutError) {
      throw new ConformSetupError(`the handshake failed: ${e.message}`);
    }
    throw e;
  } finally {
    for (const p of conns) p.close();
  }
}

/** Runs one case against a server whose facts are known. */
export async function runServerCase(
  c: ServerCase,
  target: ServerTarget,
  facts: ServerFacts,
): Promise<ConformResult> {
  const probes: Probe[] = [];
  const ctx: ServerCaseContext = {
    target,
    facts,
    async open() {
      const p = new Probe(await target.connect(), target.exportName);
      probes.push(p);
      return p;
    },
    async go(o) {
      const p = await ctx.open();
      const n = await p.negotiate(o);
      return [p, n];
    },
    writable(length) {
      const w = target.writeRange;
      if (w === undefined) skip("writes not allowed (use --allow-writes)");
      const end = w.length === undefined ? facts.size : w.offset + w.length;
      const mb = BigInt(facts.minBlock);
      const off = (w.offset + mb - 1n) / mb * mb;
      if (off + BigInt(length) > end || end > facts.size) {
        skip(`the write range is smaller than the ${length} bytes needed`);
      }
      return off;
    },
  };
  const result = (outcome: ConformResult["outcome"], detail: string): ConformResult => ({
    id: c.id,
    level: c.level,
    outcome,
    detail,
  });
  try {
    if (c.writes && target.writeRange === undefined) {
      return result("skip", "writes not allowed (use --allow-writes)");
    }
    const note = await c.run(ctx);
    return result("pass", note ?? "");
  } catch (e) {
    if (e instanceof ConformSkip) return result("skip", e.message);
    if (e instanceof ConformViolation) return result(violatedOutcome(c.level), e.message);
    if (e instanceof ConformTimeoutError) return result(violatedOutcome(c.level), e.message);
    return result(violatedOutcome(c.level), `transport error: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    for (const p of probes) p.close();
  }
}

/**
 * Checks a live server: learns its features over one connection, then runs every case (or those selected)
 * in catalogue order, each on fresh connections of `target`. Throws {@link ConformSetupError} when the
 * server cannot be reached or refuses the export.
 *
 * @example
 * ```ts
 * import { ConformSetupError, runServerCases } from "@nbd/codec";
 * const target = { exportName: "disk", connect: () => Promise.reject(new Error("refused")) };
 * const results = await runServerCases(target).catch((e) => (e instanceof ConformSetupError ? [] : Promise.reject(e)));
 * console.log(results.length); // 0
 * ```
 */
export async function runServerCases(
  target: ServerTarget,
  options: RunServerOptions = {},
): Promise<ConformResult[]> {
  const facts = await discoverServer(target);
  const out: ConformResult[] = [];
  for (const c of SERVER_CASES) {
    if (
      options.only && !options.only.some((o) => c.id === o || c.id.startsWith(o.endsWith(".") ? o : o + "."))
    ) continue;
    const r = await runServerCase(c, target, facts);
    out.push(r);
    options.onResult?.(r);
  }
  return out;
}

/**
 * The catalogue of `conform server` as data (id, area, title, spec section and quote, level, whether it
 * writes), in the order the cases run.
 *
 * @example
 * ```ts
 * import { SERVER_CASE_CATALOGUE } from "@nbd/codec";
 * console.log(SERVER_CASE_CATALOGUE.some((c) => c.id === "read.coverage")); // true
 * ```
 */
export const SERVER_CASE_CATALOGUE: readonly ConformCase[] = SERVER_CASES.map(({ run: _run, ...c }) =>
  Object.freeze(c)
);

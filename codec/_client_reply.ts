/**
 * Private helper of the client session: one request in flight and the assembly of its reply (simple reply,
 * or structured / extended chunks), with the rules a client checks on the server's chunks (spec
 * "Structured reply chunk" and "Block status" sections; libnbd's states-reply-chunk.c checks the same).
 *
 * @module
 */
import { Command, CommandFlag, ReplyFlag } from "./constants.ts";
import type { Finding, NbdDecodeErrorCode } from "./errors.ts";
import { checkStatusUpperBits, type MetadataExtent, toExtents } from "./metadata.ts";
import type { ReplyChunk } from "./reply.ts";
import type { BlockStatusPayload, Request } from "./request.ts";

/** A request in flight, and what its reply has brought so far. */
export class InFlight {
  /** The cookie. */
  cookie: bigint = 0n;
  /** The in-flight map's key: the cookie as a number when it is at most 2^53, else the bigint. */
  key: number | bigint = 0;
  extended = false;
  command = 0;
  flags = 0;
  /** The request offset as a number, or -1 above 2^53 (then `offsetBig` holds it). */
  offsetNum = 0;
  offsetBig: bigint | undefined = undefined;
  /** Effect length as a number (READ lengths are within the payload limit; others capped at 2^53-1). */
  length = 0;
  lengthBig: bigint | undefined = undefined;
  blockStatus: BlockStatusPayload | undefined = undefined;
  /** READ: where the data goes. */
  buffer: Uint8Array | undefined = undefined;
  /** BLOCK_STATUS: the context ids that must answer (selected ones, or the payload form's list). */
  contextIds: readonly number[] | undefined = undefined;
  /** READ: the first covered range, relative to the request offset; more pairs in `ranges`. */
  first0 = -1;
  first1 = -1;
  /** READ: covered ranges when there is more than one, as sorted [start, end) pairs. */
  ranges: number[] | undefined = undefined;
  covered = 0;
  contentChunks = 0;
  extents: Map<number, MetadataExtent[]> | undefined = undefined;
  error = 0;
  message = "";
  errorOffset: bigint | undefined = undefined;
  findings: Finding[] | undefined = undefined;
  #request: Request | undefined = undefined;

  /**
   * (Re)starts the record for a new request: records are reused once their reply is complete (the
   * result given out holds none of them, only the arrays and maps a record made, which a new use never
   * touches: it makes its own).
   */
  init(
    cookie: bigint,
    key: number | bigint,
    extended: boolean,
    command: number,
    flags: number,
    offset: number | bigint,
    length: number | bigint,
    blockStatus: BlockStatusPayload | undefined,
    buffer: Uint8Array | undefined,
    contextIds: readonly number[] | undefined,
  ): this {
    this.cookie = cookie;
    this.key = key;
    this.extended = extended;
    this.command = command;
    this.flags = flags;
    if (typeof offset === "number") {
      this.offsetNum = offset;
      this.offsetBig = undefined;
    } else {
      this.offsetNum = offset <= MAX_SAFE ? Number(offset) : -1;
      this.offsetBig = offset;
    }
    if (typeof length === "number") {
      this.length = length;
      this.lengthBig = undefined;
    } else {
      this.length = length > 0xffff_ffffn ? Number.MAX_SAFE_INTEGER : Number(length);
      this.lengthBig = length;
    }
    this.blockStatus = blockStatus;
    this.buffer = buffer;
    this.contextIds = contextIds;
    this.first0 = -1;
    this.first1 = -1;
    this.ranges = undefined;
    this.covered = 0;
    this.contentChunks = 0;
    this.extents = undefined;
    this.error = 0;
    this.message = "";
    this.errorOffset = undefined;
    this.findings = undefined;
    this.#request = undefined;
    return this;
  }

  /** The request as a frame (made on first use: the common paths need only the numbers). */
  get request(): Request {
    if (this.#request !== undefined) return this.#request;
    const base = {
      type: "request" as const,
      extended: this.extended,
      flags: this.flags,
      command: this.command,
      cookie: this.cookie,
      offset: this.offset,
      length: this.lengthBig ?? BigInt(this.length),
    };
    this.#request = this.blockStatus === undefined ? base : { ...base, blockStatus: this.blockStatus };
    return this.#request;
  }

  /** The request offset. */
  get offset(): bigint {
    return this.offsetBig ?? BigInt(this.offsetNum);
  }
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * What a completed command brought: success, or the server's error (the first error chunk, or the simple
 * reply's error), the READ data in the caller's buffer, the block-status extents per context id, and the
 * server's violations found in this reply.
 *
 * @example
 * ```ts
 * import type { CommandResult } from "@nbd/codec";
 * const r: CommandResult = { cookie: 1n, command: 0, ok: false, error: 22, message: "out of range", findings: [] };
 * console.log(r.ok, r.error); // false 22
 * ```
 */
export interface CommandResult {
  /** The request's cookie. */
  readonly cookie: bigint;
  /** The command (`Command`). */
  readonly command: number;
  /** `true` when the reply carried no error. */
  readonly ok: boolean;
  /** The server's error value (`ErrorValue`), 0 on success. */
  readonly error: number;
  /** The error chunk's message ("" when none, and always for simple replies). */
  readonly message: string;
  /** `NBD_REPLY_TYPE_ERROR_OFFSET`: where the error happened. */
  readonly errorOffset?: bigint;
  /** READ: the buffer the data was assembled into (holes as zeroes). */
  readonly data?: Uint8Array;
  /** BLOCK_STATUS: extents by metadata context id, with absolute offsets and typed statuses. */
  readonly extents?: ReadonlyMap<number, readonly MetadataExtent[]>;
  /** Server violations seen in this reply (also reported as session findings). */
  readonly findings: readonly Finding[];
}

/** Reports a violation against this reply; returns it so the session can raise or record it. */
export type Report = (
  p: InFlight,
  code: NbdDecodeErrorCode,
  at: number,
  rule: string,
  message: string,
) => void;

export function fail(p: InFlight, error: number, message: string): void {
  if (p.error === 0) {
    p.error = error;
    p.message = message;
  }
}

/** EPROTO-like local failure of a request whose reply broke the protocol (NBD has no EPROTO: EIO). */
const PROTOCOL_FAILURE = 5;

/** Marks [start, end) covered; false when it overlaps what is covered already. */
function cover(p: InFlight, start: number, end: number): boolean {
  if (p.first0 < 0) {
    p.first0 = start;
    p.first1 = end;
    p.covered = end - start;
    return true;
  }
  // Sorted, disjoint pairs; replies come mostly in order, so search from the end.
  const r = (p.ranges ??= [p.first0, p.first1]);
  let i = r.length;
  while (i > 0 && r[i - 2]! > start) i -= 2;
  if (i > 0 && r[i - 1]! > start) return false;
  if (i < r.length && r[i]! < end) return false;
  if (i > 0 && r[i - 1] === start) {
    r[i - 1] = end;
    if (i < r.length && r[i] === end) {
      r[i - 1] = r[i + 1]!;
      r.splice(i, 2);
    }
  } else if (i < r.length && r[i] === end) r[i] = start;
  else r.splice(i, 0, start, end);
  p.covered += end - start;
  return true;
}

/**
 * The rules of a content chunk (OFFSET_DATA, OFFSET_HOLE) of `size` bytes at `start` relative to the
 * request (-1 when outside it): READ only, inside the range, at most one under DF, no overlap. Returns
 * whether the bytes may be placed in the READ buffer.
 */
export function content(
  p: InFlight,
  start: number,
  size: number,
  at: number,
  headerLength: number,
  chunkOffset: bigint | number,
  report: Report,
): boolean {
  if (p.command !== Command.READ || p.buffer === undefined) {
    report(
      p,
      "unexpected-frame",
      at + 6,
      "chunk-type-command",
      "a content chunk answers a command other than READ",
    );
    fail(p, PROTOCOL_FAILURE, "content chunk for a command other than READ");
    return false;
  }
  if (start < 0 || start + size > p.length) {
    report(
      p,
      "bad-value",
      at + headerLength,
      "read-chunk-range",
      `a content chunk covers ${chunkOffset}+${size}, outside the READ of ${p.offset}+${p.length}; it MUST lie within it`,
    );
    fail(p, PROTOCOL_FAILURE, "content chunk outside the request");
    return false;
  }
  if (++p.contentChunks > 1 && (p.flags & CommandFlag.DF) !== 0) {
    report(
      p,
      "unexpected-frame",
      at,
      "read-df-fragmented",
      "a second content chunk for a READ with NBD_CMD_FLAG_DF; the server MUST send at most one",
    );
  }
  if (!cover(p, start, start + size)) {
    report(
      p,
      "bad-value",
      at + headerLength,
      "read-chunk-overlap",
      `a content chunk at ${chunkOffset}+${size} overlaps an earlier one of the same reply; it MUST NOT`,
    );
    fail(p, PROTOCOL_FAILURE, "overlapping content chunks");
    return false;
  }
  return true;
}

/**
 * One chunk of a structured or extended reply. `at` is the chunk's offset in the server's stream,
 * `headerLength` 20 or 32. Returns whether the chunk ends the reply.
 */
export function applyChunk(
  p: InFlight,
  chunk: ReplyChunk,
  views: readonly Uint8Array[] | undefined,
  at: number,
  headerLength: number,
  contextName: (id: number) => string | undefined,
  report: Report,
): boolean {
  const req = p.request;
  const pl = chunk.payload;
  const command = req.command;
  switch (pl.kind) {
    case "none":
      break;
    case "offset-data":
    case "offset-hole": {
      const size = pl.kind === "offset-hole"
        ? pl.holeSize
        : views !== undefined
        ? sum(views)
        : pl.data.length;
      const rel = pl.offset - req.offset;
      const start = rel < 0n || rel > BigInt(p.length) ? -1 : Number(rel);
      if (!content(p, start, size, at, headerLength, pl.offset, report)) break;
      const buf = p.buffer!;
      if (pl.kind === "offset-hole") buf.fill(0, start, start + size);
      else if (views !== undefined) {
        let o = start;
        for (const v of views) {
          buf.set(v, o);
          o += v.length;
        }
      } else buf.set(pl.data, start);
      break;
    }
    case "block-status":
      blockStatus(p, chunk, at, headerLength, contextName, report);
      break;
    case "error": {
      if (pl.offset !== undefined) {
        const rel = pl.offset - req.offset;
        if (rel < 0n || rel >= BigInt(p.length === 0 ? 1 : p.length)) {
          report(
            p,
            "bad-value",
            at + headerLength,
            "error-offset-range",
            `NBD_REPLY_TYPE_ERROR_OFFSET names offset ${pl.offset}, outside the request ${req.offset}+${p.length}`,
          );
        }
        if (command === Command.FLUSH || command === Command.DISC) {
          report(
            p,
            "unexpected-frame",
            at + 6,
            "chunk-type-command",
            "NBD_REPLY_TYPE_ERROR_OFFSET answers a command without an offset range",
          );
        }
      }
      if (p.error === 0) p.errorOffset = pl.offset;
      fail(p, pl.error === 0 ? PROTOCOL_FAILURE : pl.error, pl.message);
      break;
    }
    case "raw":
      // An unknown error type (bit 15) fails the request; anything else undecodable was reported by the
      // decoder (chunk-type-unknown, malformed lengths) and fails the request too.
      fail(p, PROTOCOL_FAILURE, `unusable chunk type 0x${chunk.chunkType.toString(16)}`);
      break;
  }
  return (chunk.flags & ReplyFlag.DONE) !== 0;
}

function sum(views: readonly Uint8Array[]): number {
  let n = 0;
  for (const v of views) n += v.length;
  return n;
}

function blockStatus(
  p: InFlight,
  chunk: ReplyChunk,
  at: number,
  headerLength: number,
  contextName: (id: number) => string | undefined,
  report: Report,
): void {
  const req = p.request;
  if (chunk.payload.kind !== "block-status") return;
  const d = chunk.payload.descriptors;
  if (req.command !== Command.BLOCK_STATUS) {
    report(
      p,
      "unexpected-frame",
      at + 6,
      "chunk-type-command",
      "a block-status chunk answers a command other than BLOCK_STATUS",
    );
    fail(p, PROTOCOL_FAILURE, "block-status chunk for another command");
    return;
  }
  const id = d.contextId;
  const name = contextName(id);
  if (name === undefined || (p.contextIds !== undefined && !p.contextIds.includes(id))) {
    if (name === undefined) {
      report(
        p,
        "bad-value",
        at + headerLength,
        "block-status-context",
        `block status for metadata context id ${id}, which was not negotiated`,
      );
    } else {
      report(
        p,
        "bad-value",
        at + headerLength,
        "block-status-context-unrequested",
        `block status for context id ${id}, which the request's payload did not ask for`,
      );
    }
    return;
  }
  const extents = (p.extents ??= new Map());
  if (extents.has(id)) {
    report(
      p,
      "duplicate",
      at + headerLength,
      "block-status-context-duplicate",
      `a second block-status chunk for context id ${id} in one reply; each context answers once`,
    );
    return;
  }
  const n = d.count;
  if ((req.flags & CommandFlag.REQ_ONE) !== 0) {
    if (n !== 1) {
      report(
        p,
        "bad-length",
        at + headerLength,
        "block-status-req-one",
        `${n} extents for a request with NBD_CMD_FLAG_REQ_ONE; the server MUST send exactly one`,
      );
    }
    if (n > 0 && d.lengthAt(0) > req.length && req.length > 0n) {
      report(
        p,
        "bad-value",
        at + headerLength + 4,
        "block-status-req-one-length",
        `the one extent (${d.lengthAt(0)} bytes) is longer than the request (${req.length}); it MUST NOT be`,
      );
    }
  } else if (n > 1) {
    let head = 0n;
    for (let i = 0; i < n - 1; i++) head += d.lengthAt(i);
    if (head >= effectLength(req)) {
      report(
        p,
        "bad-value",
        at + headerLength,
        "block-status-overrun",
        `the first ${n - 1} extents cover ${head} bytes, not less than the requested ${effectLength(req)}; ` +
          "only the last extent may reach past the request",
      );
    }
  }
  if (d.extended) {
    for (const f of checkStatusUpperBits(name, d, { offset: at + headerLength + 8 })) {
      report(p, f.code, f.offset, f.rule, f.message);
    }
  }
  extents.set(id, toExtents(name, d, req.offset));
}

function effectLength(req: Request): bigint {
  return req.blockStatus !== undefined ? req.blockStatus.effectLength : req.length;
}

/** At DONE (or a simple reply): the rules that need the whole reply. */
export function finishReply(p: InFlight, at: number, report: Report): CommandResult {
  const command = p.command;
  if (p.error === 0) {
    if (command === Command.READ && p.covered !== p.length) {
      report(
        p,
        "bad-length",
        at,
        "read-incomplete",
        `a successful READ reply covered ${p.covered} of ${p.length} bytes; it MUST cover the whole range`,
      );
      fail(p, PROTOCOL_FAILURE, "READ reply did not cover the request");
    } else if (command === Command.BLOCK_STATUS) {
      for (const id of p.contextIds ?? []) {
        if (p.extents?.has(id) !== true) {
          report(
            p,
            "unexpected-frame",
            at,
            "block-status-context-missing",
            `a successful BLOCK_STATUS reply has no chunk for context id ${id}; each context MUST answer`,
          );
          fail(p, PROTOCOL_FAILURE, "block status reply without every context");
          break;
        }
      }
    }
  }
  const findings = p.findings ?? NONE;
  // One literal per shape (no property added after creation): the common results stay cheap.
  if (p.error === 0) {
    if (p.buffer !== undefined) {
      return { cookie: p.cookie, command, ok: true, error: 0, message: "", data: p.buffer, findings };
    }
    if (command === Command.BLOCK_STATUS) {
      return {
        cookie: p.cookie,
        command,
        ok: true,
        error: 0,
        message: "",
        extents: p.extents ?? new Map(),
        findings,
      };
    }
    return { cookie: p.cookie, command, ok: true, error: 0, message: "", findings };
  }
  const r: {
    cookie: bigint;
    command: number;
    ok: boolean;
    error: number;
    message: string;
    errorOffset?: bigint;
    data?: Uint8Array;
    extents?: ReadonlyMap<number, readonly MetadataExtent[]>;
    findings: readonly Finding[];
  } = { cookie: p.cookie, command, ok: false, error: p.error, message: p.message, findings };
  if (p.errorOffset !== undefined) r.errorOffset = p.errorOffset;
  if (p.buffer !== undefined) r.data = p.buffer;
  if (command === Command.BLOCK_STATUS) r.extents = p.extents ?? new Map();
  return r;
}

const NONE: readonly Finding[] = Object.freeze([]);

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
import type { ReplyChunk, SimpleReply } from "./reply.ts";
import type { Request } from "./request.ts";

/** A request in flight, and what its reply has brought so far. */
export interface InFlight {
  readonly request: Request;
  /** Effect length as a number (READ lengths are within the payload limit; other commands: capped). */
  readonly length: number;
  /** READ: where the data goes. */
  readonly buffer: Uint8Array | undefined;
  /** BLOCK_STATUS: the context ids that must answer (selected ones, or the payload form's list). */
  readonly contextIds: readonly number[] | undefined;
  /** READ: covered ranges, relative to the request offset, as [start, end) pairs. */
  ranges: number[] | undefined;
  covered: number;
  contentChunks: number;
  extents: Map<number, MetadataExtent[]> | undefined;
  error: number;
  message: string;
  errorOffset: bigint | undefined;
  findings: Finding[] | undefined;
}

/**
 * What a completed command brought: success, or the server's error (the first error chunk, or the simple
 * reply's error), the READ data in the caller's buffer, the block-status extents per context id, and the
 * server's violations found in this reply.
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

export function newInFlight(
  request: Request,
  length: number,
  buffer: Uint8Array | undefined,
  contextIds: readonly number[] | undefined,
): InFlight {
  return {
    request,
    length,
    buffer,
    contextIds,
    ranges: undefined,
    covered: 0,
    contentChunks: 0,
    extents: undefined,
    error: 0,
    message: "",
    errorOffset: undefined,
    findings: undefined,
  };
}

/** Reports a violation against this reply; returns it so the session can raise or record it. */
export type Report = (
  p: InFlight,
  code: NbdDecodeErrorCode,
  at: number,
  rule: string,
  message: string,
) => void;

function fail(p: InFlight, error: number, message: string): void {
  if (p.error === 0) {
    p.error = error;
    p.message = message;
  }
}

/** EPROTO-like local failure of a request whose reply broke the protocol (NBD has no EPROTO: EIO). */
const PROTOCOL_FAILURE = 5;

/** A simple reply: error or success; READ data (already framed by the stream decoder) into the buffer. */
export function applySimple(
  p: InFlight,
  reply: SimpleReply,
  views: readonly Uint8Array[] | undefined,
): void {
  if (reply.error !== 0) {
    fail(p, reply.error, "");
    return;
  }
  if (p.request.command !== Command.READ || p.buffer === undefined) return;
  if (views !== undefined) {
    let at = 0;
    for (const v of views) {
      p.buffer.set(v, at);
      at += v.length;
    }
  } else if (reply.data !== undefined) p.buffer.set(reply.data);
  p.covered = p.length;
}

/** Marks [start, end) covered; false when it overlaps what is covered already. */
function cover(p: InFlight, start: number, end: number): boolean {
  const r = p.ranges;
  if (r === undefined) {
    p.ranges = [start, end];
    p.covered = end - start;
    return true;
  }
  // Sorted, disjoint pairs; replies come mostly in order, so search from the end.
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
      if (command !== Command.READ) {
        report(
          p,
          "unexpected-frame",
          at + 6,
          "chunk-type-command",
          `a content chunk answers a command other than READ`,
        );
        fail(p, PROTOCOL_FAILURE, "content chunk for a command other than READ");
        break;
      }
      const size = pl.kind === "offset-hole"
        ? pl.holeSize
        : views !== undefined
        ? sum(views)
        : pl.data.length;
      const rel = pl.offset - req.offset;
      if (rel < 0n || rel + BigInt(size) > BigInt(p.length)) {
        report(
          p,
          "bad-value",
          at + headerLength,
          "read-chunk-range",
          `a content chunk covers ${pl.offset}+${size}, outside the READ of ${req.offset}+${p.length}; it MUST lie within it`,
        );
        fail(p, PROTOCOL_FAILURE, "content chunk outside the request");
        break;
      }
      const start = Number(rel);
      if (++p.contentChunks > 1 && (req.flags & CommandFlag.DF) !== 0) {
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
          `a content chunk at ${pl.offset}+${size} overlaps an earlier one of the same reply; it MUST NOT`,
        );
        fail(p, PROTOCOL_FAILURE, "overlapping content chunks");
        break;
      }
      const buf = p.buffer;
      if (buf === undefined) break;
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
    // An id that was never negotiated is reported by the stream decoder (block-status-context) when any
    // was; one outside the payload form's list is ours to report.
    if (name !== undefined) {
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
  const req = p.request;
  if (p.error === 0) {
    if (req.command === Command.READ && p.covered !== p.length) {
      report(
        p,
        "bad-length",
        at,
        "read-incomplete",
        `a successful READ reply covered ${p.covered} of ${p.length} bytes; it MUST cover the whole range`,
      );
      fail(p, PROTOCOL_FAILURE, "READ reply did not cover the request");
    } else if (req.command === Command.BLOCK_STATUS) {
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
  } = {
    cookie: req.cookie,
    command: req.command,
    ok: p.error === 0,
    error: p.error,
    message: p.message,
    findings: p.findings ?? NONE,
  };
  if (p.errorOffset !== undefined) r.errorOffset = p.errorOffset;
  if (p.buffer !== undefined) r.data = p.buffer;
  if (req.command === Command.BLOCK_STATUS) r.extents = p.extents ?? new Map();
  return r;
}

const NONE: readonly Finding[] = Object.freeze([]);

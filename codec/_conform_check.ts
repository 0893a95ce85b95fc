/**
 * The checks `conform server` applies to every reply, as pure functions of the request, the negotiated
 * reply mode and the frames received: chunk structure, READ coverage, block-status descriptor rules.
 * Each violation carries a stable rule id; a case asserts only its own rules, so one broken rule fails
 * one case, not every case that happens to read.
 *
 * @module
 */
import { Command, CommandFlag, ReplyFlag, ReplyType } from "./constants.ts";
import type { Finding } from "./errors.ts";
import { is32BitContext } from "./metadata.ts";
import type { ReplyChunk, SimpleReply } from "./reply.ts";
import type { Request } from "./request.ts";

/** How replies are framed on a connection: what the handshake negotiated. */
export type ReplyMode = "simple" | "structured" | "extended";

/**
 * One broken rule of the reply checker: a conform check id (`read-within`, `bs-style`, ...) or
 * `frame:<rule>` for a decoder finding. Named `check`, not `rule`: conform's checks are their own namespace,
 * not entries of the rule catalogue (codec/rules.ts).
 */
export interface ReplyViolation {
  readonly check: string;
  readonly message: string;
}

/** The checker's verdict on one reply. */
export interface ReplyCheck {
  /** 0 on success, else the first error value (simple reply error or error chunk). */
  readonly error: number;
  /** The first error chunk's message (empty when none). */
  readonly message: string;
  /** For a successful READ: the data, assembled from the chunks (holes as zeroes). */
  readonly data?: Uint8Array;
  /** Number of content chunks (OFFSET_DATA, OFFSET_HOLE). */
  readonly contentChunks: number;
  /** Block-status chunks, by context id: their descriptors as [length, status]. */
  readonly extents: ReadonlyMap<number, readonly (readonly [bigint, bigint])[]>;
  /** Every rule the reply broke. */
  readonly violations: readonly ReplyViolation[];
}

const MAX_ASSEMBLE = 64 * 1024 * 1024;

/**
 * Checks a complete reply (its last frame is a simple reply or a chunk with DONE) to `request`.
 * `findings` are the lenient decoders' findings for these frames (reported as `frame:<rule>`).
 */
export function checkReply(
  request: Request,
  mode: ReplyMode,
  contexts: ReadonlyMap<number, string>,
  frames: readonly (SimpleReply | ReplyChunk)[],
  findings: readonly Finding[],
): ReplyCheck {
  const v: ReplyViolation[] = [];
  const bad = (check: string, message: string): void => {
    v.push({ check, message });
  };
  for (const f of findings) bad(`frame:${f.rule}`, f.message);
  const isRead = request.command === Command.READ;
  const isBs = request.command === Command.BLOCK_STATUS;
  let error = 0;
  let message = "";
  let data: Uint8Array | undefined;
  let contentChunks = 0;
  const extents = new Map<number, (readonly [bigint, bigint])[]>();
  const start = request.offset;
  const end = request.offset + request.length;
  const covered: [bigint, bigint][] = [];
  if (isRead && request.length <= BigInt(MAX_ASSEMBLE)) data = new Uint8Array(Number(request.length));

  for (const f of frames) {
    if (f.type === "simple-reply") {
      if (mode === "extended") {
        bad("reply-simple-in-extended", "a simple reply after extended headers were negotiated");
      }
      if (mode === "structured" && isRead) {
        bad("reply-simple-read", "a simple reply to NBD_CMD_READ with structured replies negotiated");
      }
      if (f.error !== 0) error = f.error;
      else if (isRead && f.data && data) data.set(f.data.subarray(0, data.length));
      continue;
    }
    if (mode === "simple") {
      bad("reply-chunk-unnegotiated", "a structured reply chunk, but structured replies were not negotiated");
    }
    if (mode === "extended" && !f.extended) {
      bad("reply-header-style", "a compact structured chunk after extended headers were negotiated");
    }
    if (mode === "structured" && f.extended) {
      bad("reply-header-style", "an extended chunk, but extended headers were not negotiated");
    }
    if (f.extended && f.offset !== undefined && f.offset !== request.offset) {
      bad(
        "reply-ext-offset",
        `extended chunk offset ${f.offset} differs from the request offset ${request.offset}`,
      );
    }
    if (f.chunkType === ReplyType.NONE && !(f.flags & ReplyFlag.DONE)) {
      bad("chunk-none-done", "NBD_REPLY_TYPE_NONE without NBD_REPLY_FLAG_DONE");
    }
    const p = f.payload;
    if (p.kind === "error") {
      if (p.error === 0) bad("error-nonzero", "an error chunk with error value 0");
      if (error === 0) {
        error = p.error === 0 ? -1 : p.error;
        message = p.message;
      }
      if (p.offset !== undefined && (p.offset < start || p.offset >= end)) {
        bad("error-offset-within", `ERROR_OFFSET offset ${p.offset} outside the request [${start}, ${end})`);
      }
      continue;
    }
    if (p.kind === "offset-data" || p.kind === "offset-hole") {
      contentChunks++;
      if (!isRead) {
        bad("chunk-type-command", `${p.kind} chunk in reply to a command other than NBD_CMD_READ`);
        continue;
      }
      const len = p.kind === "offset-data" ? BigInt(p.data.length) : BigInt(p.holeSize);
      const a = p.offset;
      const b = a + len;
      if (a < start || b > end) {
        bad("read-within", `${p.kind} chunk [${a}, ${b}) outside the request [${start}, ${end})`);
        continue;
      }
      if (covered.some(([x, y]) => a < y && x < b)) {
        bad("read-overlap", `${p.kind} chunk [${a}, ${b}) overlaps an earlier chunk`);
      }
      covered.push([a, b]);
      if (data) {
        const at = Number(a - start);
        if (p.kind === "offset-data") data.set(p.data, at);
        else data.fill(0, at, at + Number(len));
      }
      continue;
    }
    if (p.kind === "block-status") {
      const d = p.descriptors;
      if (!isBs) {
        bad(
          "chunk-type-command",
          "a block-status chunk in reply to a command other than NBD_CMD_BLOCK_STATUS",
        );
        continue;
      }
      if (mode === "extended" && !d.extended) {
        bad("bs-style", "NBD_REPLY_TYPE_BLOCK_STATUS after extended headers were negotiated");
      }
      if (mode !== "extended" && d.extended) {
        bad("bs-style", "NBD_REPLY_TYPE_BLOCK_STATUS_EXT without extended headers");
      }
      const name = contexts.get(d.contextId);
      if (name === undefined) {
        bad("bs-context-known", `block status for context id ${d.contextId}, which was not selected`);
      }
      if (extents.has(d.contextId)) {
        bad("bs-per-context", `two block-status chunks for context id ${d.contextId}`);
      }
      const list: (readonly [bigint, bigint])[] = [];
      for (let i = 0; i < d.count; i++) list.push([d.lengthAt(i), d.statusAt(i)]);
      extents.set(d.contextId, list);
      if (list.length === 0) bad("bs-at-least-one", "a block-status chunk without descriptors");
      if (list.some(([l]) => l === 0n)) bad("bs-nonzero", "a block-status descriptor of length 0");
      if (request.flags & CommandFlag.REQ_ONE) {
        if (list.length !== 1) bad("bs-req-one", `REQ_ONE, but ${list.length} descriptors`);
        else if (list[0]![0] > request.length) {
          bad(
            "bs-req-one",
            `REQ_ONE descriptor of ${list[0]![0]} bytes exceeds the request's ${request.length}`,
          );
        }
      }
      let sum = 0n;
      for (let i = 0; i + 1 < list.length; i++) sum += list[i]![0];
      if (list.length > 1 && sum >= request.length) {
        bad(
          "bs-sum",
          `the first ${
            list.length - 1
          } descriptors cover ${sum} bytes, not less than the request's ${request.length}`,
        );
      }
      if (name !== undefined && is32BitContext(name) && list.some(([, s]) => s > 0xffff_ffffn)) {
        bad("bs-upper-bits", `status above 32 bits for the 32-bit context ${name}`);
      }
      if (name === "base:allocation" && list.some(([, s]) => (s & ~3n) !== 0n)) {
        bad("bs-reserved", "base:allocation status with reserved bits (2-31) set");
      }
      continue;
    }
    if (p.kind === "raw" && !(f.chunkType & 0x8000)) {
      // Known types with a malformed payload are already findings; an unknown non-error type is not legal.
      if (f.chunkType !== ReplyType.NONE && !findings.length) {
        bad("chunk-type-unknown", `unknown chunk type ${f.chunkType}`);
      }
    }
  }
  const last = frames[frames.length - 1];
  if (last && last.type === "reply-chunk" && !(last.flags & ReplyFlag.DONE)) {
    bad("chunk-done", "reply ended without DONE");
  }
  if (error === 0 && isRead && mode !== "simple" && frames.some((f) => f.type === "reply-chunk")) {
    let total = 0n;
    for (const [a, b] of covered) total += b - a;
    if (total < request.length) {
      bad("read-coverage", `success, but content chunks cover ${total} of ${request.length} bytes`);
    }
  }
  if (isRead && request.flags & CommandFlag.DF && contentChunks > 1) {
    bad("read-df-one", `NBD_CMD_FLAG_DF, but ${contentChunks} content chunks`);
  }
  if (error === 0 && isBs) {
    for (const id of contexts.keys()) {
      if (!extents.has(id)) {
        bad("bs-per-context", `no block-status chunk for context id ${id} (${contexts.get(id)})`);
      }
    }
  }
  return {
    error,
    message,
    ...(error === 0 && data ? { data } : {}),
    contentChunks,
    extents,
    violations: v,
  };
}

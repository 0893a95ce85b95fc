/**
 * Test vectors for other implementations: read, check and write vectors in the golden corpus's format
 * (`vectors/README.md`, schema id `nbd-codec/vectors/v1`). Whole conversations are in
 * `conversation_vectors.ts`.
 *
 * - {@link checkVectorFile} validates anyone's vector file: its shape, its hex, and that this codec's
 *   decoders agree with every verdict (`valid`, `acceptable` with its findings, `invalid` with its code and
 *   offset); {@link decodeVector} says what the decoders make of one vector.
 * - {@link vectorFromFrame} turns a frame (as the encoders take it) into a vector with `id`, `comment`,
 *   `source` and the negotiated `context`; the verdict is this codec's decoder's.
 * - {@link brokenVector} encodes a frame that breaks one named rule on purpose ({@link BROKEN_RULES}:
 *   wrong header style, unread option data, duplicate context ids, an option reply that does not echo the
 *   option, 2^32-1 boundaries, ...).
 *
 * Vectors made here are made by this codec: good for testing another implementation, not as golden
 * vectors for this one (those are written by hand from the spec or captured from real peers).
 *
 * @module
 */
import { Command, CommandFlag, Info, Option, OptionReply, ReplyFlag, ReplyType } from "./constants.ts";
import { isNbdDecodeError } from "./errors.ts";
import { decodeBlockStatusExtents } from "./_block_status_extents.ts";
import type { Frame } from "./events.ts";
import type { OptionRequest } from "./option.ts";
import type { ReplyChunk } from "./reply.ts";
import type { Request } from "./request.ts";
import type { JsonValue } from "./format.ts";
import { decodeClientFlags, decodeExportNameReply, decodeGreeting, encodeClientFlags } from "./handshake.ts";
import { encodeExportNameReply, encodeGreeting } from "./handshake.ts";
import { bytesToHex, hexToBytes, toJson } from "./json.ts";
import { decodeOptionRequest, encodeOptionRequest } from "./option.ts";
import { decodeOptionReply, encodeOptionReply } from "./option_reply.ts";
import { createBlockStatusDescriptors, decodeReply, decodeReplyChunk, decodeSimpleReply } from "./reply.ts";
import { encodeReplyChunk, encodeSimpleReply } from "./reply.ts";
import { decodeRequest, encodeRequest } from "./request.ts";
import type { Decoded, EncoderInput } from "./types.ts";
import { canonical, HEX, ID, isObject, READ_AT_4K } from "./_vectors.ts";

/**
 * The schema id of a vector file (`vectors/schema.json`).
 *
 * @example
 * ```ts
 * import { VECTOR_SCHEMA_ID } from "@nbd/codec";
 * console.log(VECTOR_SCHEMA_ID); // "nbd-codec/vectors/v1"
 * ```
 */
export const VECTOR_SCHEMA_ID = "nbd-codec/vectors/v1";

/**
 * What a vector says of its bytes: `valid` (decodes strictly with no finding), `acceptable` (breaks a
 * rule but decodes leniently, with `findings`), `invalid` (nothing to decode: `code` at `offset`).
 *
 * @example
 * ```ts
 * import type { VectorResult } from "@nbd/codec";
 * const r: VectorResult = "acceptable";
 * console.log(r);
 * ```
 */
export type VectorResult = "valid" | "invalid" | "acceptable";

/**
 * A finding as vectors write it (the message is left out: it is not part of the verdict).
 *
 * @example
 * ```ts
 * import type { VectorFinding } from "@nbd/codec";
 * const f: VectorFinding = { code: "unexpected-frame", offset: 0, rule: "request-header-style" };
 * console.log(f.rule);
 * ```
 */
export interface VectorFinding {
  /** The `NbdDecodeError` code. */
  readonly code: string;
  /** Byte offset of the offending field. */
  readonly offset: number;
  /** The rule id. */
  readonly rule: string;
}

/**
 * One vector, as vector files hold it (every key is described in `vectors/README.md`).
 *
 * @example
 * ```ts
 * import type { Vector } from "@nbd/codec";
 * const v: Vector = {
 *   id: "client-flags-fixed", name: "fixed newstyle", flags: [], decoder: "client-flags", context: {},
 *   hex: "00000001", frame: { type: "client-flags", flags: 1 }, result: "valid", source: "spec",
 * };
 * console.log(v.decoder);
 * ```
 */
export interface Vector {
  /** Stable, unique, lowercase kebab-case. */
  readonly id: string;
  /** One line saying what the case is. */
  readonly name: string;
  /** Why it matters. */
  readonly comment?: string;
  /** Tags naming what the case catches. */
  readonly flags: readonly string[];
  /** Which decoder reads `hex` (one of {@link VECTOR_DECODERS}). */
  readonly decoder: string;
  /** What the decoder must know from the negotiation (its decode options). */
  readonly context: { readonly [key: string]: JsonValue };
  /** The bytes, lowercase hex (with `repeat`: the bytes before the repetition). */
  readonly hex: string;
  /** Bytes that follow `hex`, `times` times. */
  readonly repeat?: { readonly hex: string; readonly times: number };
  /** The decoded frame (valid and acceptable vectors), as {@link toJson} writes frames. */
  readonly frame?: JsonValue;
  /** Acceptable vectors: the findings, in order. */
  readonly findings?: readonly VectorFinding[];
  /** The verdict. */
  readonly result: VectorResult;
  /** Invalid vectors: the error code. */
  readonly code?: string;
  /** Invalid vectors: the byte offset. */
  readonly offset?: number;
  /** The rule id (optional). */
  readonly rule?: string;
  /** Spec section, capture or generator the bytes come from. */
  readonly source: string;
}

/**
 * A vector file: `{ schema, family, description, vectors }`.
 *
 * @example
 * ```ts
 * import { VECTOR_SCHEMA_ID, type VectorFile } from "@nbd/codec";
 * const f: VectorFile = { schema: VECTOR_SCHEMA_ID, family: "mine", description: "", vectors: [] };
 * console.log(f.schema);
 * ```
 */
export interface VectorFile {
  /** Always {@link VECTOR_SCHEMA_ID}. */
  readonly schema: string;
  /** The frame family. */
  readonly family: string;
  /** What the file covers. */
  readonly description: string;
  /** The vectors. */
  readonly vectors: readonly Vector[];
}

/** One decoder as vectors name it: bytes and context in, a decode result with a JSON frame out. */
type VectorDecoder = (bytes: Uint8Array, options: Record<string, unknown>) => Decoded<unknown>;

const DECODERS: Record<string, VectorDecoder> = {
  "greeting": decodeGreeting,
  "client-flags": decodeClientFlags,
  "export-name-reply": (b, o) => decodeExportNameReply(b, { noZeroes: false, ...o }),
  "option-request": decodeOptionRequest,
  "option-reply": decodeOptionReply,
  "request": decodeRequest,
  "simple-reply": decodeSimpleReply,
  "reply-chunk": decodeReplyChunk,
  "reply": decodeReply,
  // A block-status chunk read through its metadata context: typed extents (vectors/metadata.json).
  "block-status-extents": decodeBlockStatusExtents,
};

/**
 * The decoder names a vector's `decoder` may hold.
 *
 * @example
 * ```ts
 * import { VECTOR_DECODERS } from "@nbd/codec";
 * console.log(VECTOR_DECODERS.includes("request")); // true
 * ```
 */
export const VECTOR_DECODERS: readonly string[] = Object.keys(DECODERS);

const DECODER_OF_TYPE: Record<string, string> = {
  "oldstyle-greeting": "greeting",
  "newstyle-greeting": "greeting",
  "client-flags": "client-flags",
  "export-name-reply": "export-name-reply",
  "option-request": "option-request",
  "option-reply": "option-reply",
  "request": "request",
  "simple-reply": "simple-reply",
  "reply-chunk": "reply-chunk",
};

/**
 * What this codec's decoder makes of a vector's bytes, in one mode: a frame (as JSON, with findings), an
 * error, or "needs more bytes".
 *
 * @example
 * ```ts
 * import type { VectorOutcome } from "@nbd/codec";
 * const o: VectorOutcome = { outcome: "error", code: "bad-magic", offset: 0, rule: "magic" };
 * console.log(o.outcome);
 * ```
 */
export type VectorOutcome =
  | {
    readonly outcome: "frame";
    readonly frame: JsonValue;
    readonly byteLength: number;
    readonly findings: readonly VectorFinding[];
  }
  | { readonly outcome: "error"; readonly code: string; readonly offset: number; readonly rule: string }
  | { readonly outcome: "need-more"; readonly needed: number };

/** A vector's whole bytes: `hex`, then `repeat.hex` `repeat.times` times. */
function vectorBytes(v: Pick<Vector, "hex" | "repeat">): Uint8Array {
  const head = hexToBytes(v.hex);
  if (v.repeat === undefined) return head;
  const unit = hexToBytes(v.repeat.hex);
  const out = new Uint8Array(head.length + unit.length * v.repeat.times);
  out.set(head, 0);
  for (let i = 0, at = head.length; i < v.repeat.times; i++, at += unit.length) out.set(unit, at);
  return out;
}

function outcomeOf(
  decoder: VectorDecoder,
  bytes: Uint8Array,
  options: Record<string, unknown>,
): VectorOutcome {
  try {
    const r = decoder(bytes, options);
    if (!r.done) return { outcome: "need-more", needed: r.needed };
    return {
      outcome: "frame",
      frame: toJson(r.frame),
      byteLength: r.byteLength,
      findings: r.findings.map((f) => ({ code: f.code, offset: f.offset, rule: f.rule })),
    };
  } catch (e) {
    if (isNbdDecodeError(e)) return { outcome: "error", code: e.code, offset: e.offset, rule: e.rule };
    throw e;
  }
}

/**
 * Decodes a vector's bytes with the decoder it names and its context, strictly or leniently, and says what
 * came out. Throws `TypeError` for a decoder name this codec does not have, or bytes that are not hex.
 *
 * @example
 * ```ts
 * import { decodeVector } from "@nbd/codec";
 * const o = decodeVector({
 *   id: "x", name: "x", flags: [], decoder: "client-flags", context: {}, hex: "00000001", result: "valid",
 *   source: "spec",
 * }, { strict: true });
 * console.log(o); // { outcome: "frame", frame: { type: "client-flags", flags: 1 }, byteLength: 4, findings: [] }
 * ```
 */
export function decodeVector(vector: Vector, options: { readonly strict: boolean }): VectorOutcome {
  const decoder = DECODERS[vector.decoder];
  if (decoder === undefined) {
    throw new TypeError(
      `Cannot decode vector: decoder "${vector.decoder}" is not one of ${VECTOR_DECODERS.join(", ")}`,
    );
  }
  return outcomeOf(decoder, vectorBytes(vector), { ...vector.context, strict: options.strict });
}

// ---- checking ---------------------------------------------------------------------------------------

/**
 * One problem {@link checkVectorFile} found: the vector's id (when it has one) and what is wrong.
 *
 * @example
 * ```ts
 * import type { VectorProblem } from "@nbd/codec";
 * const p: VectorProblem = { id: "x", message: "hex must be lowercase byte pairs" };
 * console.log(p.message);
 * ```
 */
export interface VectorProblem {
  /** The vector (or conversation) id, when the problem is in one. */
  readonly id?: string;
  /** What is wrong. */
  readonly message: string;
}

/**
 * What {@link checkVectorFile} (and `checkConversationVectorFile`) report.
 *
 * @example
 * ```ts
 * import type { VectorCheckReport } from "@nbd/codec";
 * const r: VectorCheckReport = { ok: true, vectors: 3, problems: [] };
 * console.log(r.ok);
 * ```
 */
export interface VectorCheckReport {
  /** No problem found. */
  readonly ok: boolean;
  /** How many vectors (or conversations) the file holds. */
  readonly vectors: number;
  /** Every problem, in file order. */
  readonly problems: readonly VectorProblem[];
}

const RESULTS = new Set(["valid", "invalid", "acceptable"]);
const CODES = new Set([
  "bad-magic",
  "bad-length",
  "reserved-bits",
  "bad-string",
  "string-too-long",
  "bad-value",
  "duplicate",
  "unknown-type",
  "unexpected-frame",
  "limit-exceeded",
  "truncated",
]);
const VECTOR_KEYS = new Set([
  "id",
  "name",
  "comment",
  "flags",
  "decoder",
  "context",
  "hex",
  "repeat",
  "frame",
  "findings",
  "result",
  "code",
  "offset",
  "rule",
  "source",
]);

/** A frame's lists written `{ "repeat": [items], "times": n }` (vectors/README.md, "Repetition"), expanded. */
function expandLists(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(expandLists);
  if (!isObject(v)) return v;
  const keys = Object.keys(v);
  if (keys.length === 2 && Array.isArray(v.repeat) && typeof v.times === "number") {
    const items = v.repeat.map(expandLists);
    return Array.from({ length: items.length * v.times }, (_, i) => items[i % items.length]);
  }
  return Object.fromEntries(keys.map((k) => [k, expandLists(v[k])]));
}

function shapeProblems(raw: Record<string, unknown>, err: (m: string) => void): void {
  for (const k of Object.keys(raw)) if (!VECTOR_KEYS.has(k)) err(`unknown key "${k}"`);
  if (typeof raw.id !== "string" || !ID.test(raw.id)) err("id must be lowercase kebab-case");
  for (const k of ["name", "decoder", "source", "result"]) {
    if (typeof raw[k] !== "string" || raw[k] === "") err(`${k} must be a non-empty string`);
  }
  if (typeof raw.hex !== "string") err("hex must be a string");
  else if (!HEX.test(raw.hex)) err("hex must be lowercase byte pairs");
  if (raw.comment !== undefined && typeof raw.comment !== "string") err("comment must be a string");
  if (!Array.isArray(raw.flags) || raw.flags.some((f) => typeof f !== "string")) err("flags must be strings");
  if (!isObject(raw.context)) err("context must be an object");
  if (raw.repeat !== undefined) {
    const r = raw.repeat;
    if (
      !isObject(r) || Object.keys(r).sort().join(",") !== "hex,times" || typeof r.hex !== "string" ||
      !/^([0-9a-f]{2})+$/.test(r.hex) || typeof r.times !== "number" || !Number.isInteger(r.times) ||
      r.times < 1
    ) err('repeat must be { "hex": lowercase byte pairs, "times": a positive integer }');
  }
  if (typeof raw.decoder === "string" && DECODERS[raw.decoder] === undefined) {
    err(`decoder "${raw.decoder}" is not one of ${VECTOR_DECODERS.join(", ")}`);
  }
  const result = raw.result;
  if (typeof result === "string" && !RESULTS.has(result)) err("result must be valid, invalid or acceptable");
  if (result === "invalid") {
    if (typeof raw.code !== "string" || !CODES.has(raw.code)) err("invalid vectors need a known code");
    if (typeof raw.offset !== "number" || !Number.isInteger(raw.offset) || raw.offset < 0) {
      err("invalid vectors need a byte offset");
    }
    if (raw.frame !== undefined) err("invalid vectors have no frame");
  } else if (result === "valid" || result === "acceptable") {
    if (!isObject(raw.frame)) err("valid and acceptable vectors need a frame object");
    if (raw.code !== undefined || raw.offset !== undefined) err("code and offset are for invalid vectors");
  }
  if (result === "acceptable") {
    const f = raw.findings;
    if (!Array.isArray(f) || f.length === 0) err("acceptable vectors need findings");
    else {
      for (const x of f) {
        if (
          !isObject(x) || typeof x.code !== "string" || !CODES.has(x.code) || typeof x.offset !== "number" ||
          typeof x.rule !== "string"
        ) err("each finding needs a known code, an offset and a rule");
      }
    }
  } else if (raw.findings !== undefined) err("findings are for acceptable vectors");
}

function sameFindings(a: readonly VectorFinding[], b: readonly VectorFinding[]): boolean {
  return a.length === b.length &&
    a.every((f, i) => f.code === b[i]!.code && f.offset === b[i]!.offset && f.rule === b[i]!.rule);
}

function describeOutcome(o: VectorOutcome): string {
  switch (o.outcome) {
    case "frame":
      return o.findings.length === 0
        ? `a frame of ${o.byteLength} bytes with no finding`
        : `a frame with findings ${o.findings.map((f) => `${f.rule} (${f.code} at ${f.offset})`).join(", ")}`;
    case "error":
      return `${o.code} at offset ${o.offset} (${o.rule})`;
    case "need-more":
      return `"need ${o.needed} more bytes"`;
  }
}

/** Whether this codec's decoders agree with a well-formed vector's verdict; the disagreement if not. */
function verdictProblem(v: Vector): string | undefined {
  const bytes = vectorBytes(v);
  const strict = decodeVector(v, { strict: true });
  const expected = v.frame === undefined ? undefined : canonical(expandLists(v.frame));
  if (v.result === "valid") {
    if (strict.outcome !== "frame" || strict.findings.length > 0) {
      return `valid, but strict decoding gives ${describeOutcome(strict)}`;
    }
    if (strict.byteLength !== bytes.length) {
      return `valid, but the frame is ${strict.byteLength} of the ${bytes.length} bytes`;
    }
    if (canonical(strict.frame) !== expected) return `the decoded frame differs: ${canonical(strict.frame)}`;
    return undefined;
  }
  if (v.result === "acceptable") {
    const first = v.findings![0]!;
    if (strict.outcome !== "error" || strict.code !== first.code || strict.offset !== first.offset) {
      return `acceptable: strict decoding should fail with ${first.code} at ${first.offset}, but gives ${
        describeOutcome(strict)
      }`;
    }
    const lenient = decodeVector(v, { strict: false });
    if (lenient.outcome !== "frame") {
      return `acceptable, but lenient decoding gives ${describeOutcome(lenient)}`;
    }
    if (!sameFindings(lenient.findings, v.findings!)) {
      return `lenient decoding gives ${describeOutcome(lenient)}, not the vector's findings`;
    }
    if (lenient.byteLength !== bytes.length) {
      return `acceptable, but the frame is ${lenient.byteLength} of the ${bytes.length} bytes`;
    }
    if (canonical(lenient.frame) !== expected) {
      return `the decoded frame differs: ${canonical(lenient.frame)}`;
    }
    return undefined;
  }
  if (strict.outcome !== "error" || strict.code !== v.code || strict.offset !== v.offset) {
    return `invalid: decoding should fail with ${v.code} at ${v.offset}, but gives ${
      describeOutcome(strict)
    }`;
  }
  const lenient = decodeVector(v, { strict: false });
  if (lenient.outcome === "error" && lenient.code !== v.code) {
    return `invalid: lenient decoding fails with ${lenient.code}, not ${v.code}`;
  }
  if (lenient.outcome === "frame" && !lenient.findings.some((f) => f.code === v.code)) {
    return `invalid: lenient decoding gives ${describeOutcome(lenient)} without ${v.code}`;
  }
  return undefined;
}

/**
 * Checks a vector file of anyone's (the parsed JSON): the envelope (`schema`, `family`, `description`,
 * `vectors`), each vector's keys and types, unique ids, lowercase hex, and then that this codec's decoders
 * agree with each verdict: a `valid` vector decodes strictly to its `frame` with no finding and uses every
 * byte; an `acceptable` one fails strictly with its first finding and decodes leniently to its `frame` with
 * exactly its `findings`; an `invalid` one fails with its `code` at its `offset`. Never throws for bad input:
 * everything wrong is a problem in the report.
 *
 * @example
 * ```ts
 * import { checkVectorFile } from "@nbd/codec";
 * const report = checkVectorFile({
 *   schema: "nbd-codec/vectors/v1", family: "mine", description: "",
 *   vectors: [{
 *     id: "flags-fixed", name: "fixed newstyle", flags: [], decoder: "client-flags", context: {},
 *     hex: "00000001", frame: { type: "client-flags", flags: 2 }, result: "valid", source: "me",
 *   }],
 * });
 * console.log(report.ok, report.problems[0]?.message);
 * // false "the decoded frame differs: {\"flags\":1,\"type\":\"client-flags\"}"
 * ```
 */
export function checkVectorFile(doc: unknown): VectorCheckReport {
  const problems: VectorProblem[] = [];
  if (!isObject(doc)) {
    return { ok: false, vectors: 0, problems: [{ message: "a vector file is a JSON object" }] };
  }
  for (const k of Object.keys(doc)) {
    if (!["schema", "family", "description", "vectors"].includes(k)) {
      problems.push({ message: `unknown key "${k}"` });
    }
  }
  if (doc.schema !== VECTOR_SCHEMA_ID) problems.push({ message: `schema must be "${VECTOR_SCHEMA_ID}"` });
  if (typeof doc.family !== "string" || doc.family === "") {
    problems.push({ message: "family must be a non-empty string" });
  }
  if (typeof doc.description !== "string") problems.push({ message: "description must be a string" });
  if (!Array.isArray(doc.vectors) || doc.vectors.length === 0) {
    problems.push({ message: "vectors must be a non-empty array" });
    return { ok: false, vectors: 0, problems };
  }
  const ids = new Set<string>();
  for (const raw of doc.vectors as unknown[]) {
    if (!isObject(raw)) {
      problems.push({ message: "each vector is an object" });
      continue;
    }
    const id = typeof raw.id === "string" ? raw.id : undefined;
    const before = problems.length;
    const err = (message: string) => problems.push(id === undefined ? { message } : { id, message });
    shapeProblems(raw, err);
    if (id !== undefined) {
      if (ids.has(id)) err("duplicate id");
      ids.add(id);
    }
    if (problems.length > before) continue;
    try {
      const p = verdictProblem(raw as unknown as Vector);
      if (p !== undefined) err(p);
    } catch (e) {
      err(`cannot be decoded: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  return { ok: problems.length === 0, vectors: doc.vectors.length, problems };
}

// ---- making vectors -----------------------------------------------------------------------------------

/**
 * What a vector needs besides its bytes: `id`, `name`, `source`, and optionally a `comment`, `flags`, and the
 * negotiated `context` (decode options such as `extendedHeaders`, `pendingOption`, `readLength`,
 * `noZeroes`), which is added to what the frame itself implies.
 *
 * @example
 * ```ts
 * import type { VectorMeta } from "@nbd/codec";
 * const m: VectorMeta = { id: "my-read", name: "a READ", source: "my server's test suite" };
 * console.log(m.id);
 * ```
 */
export interface VectorMeta {
  /** Stable, unique, lowercase kebab-case. */
  readonly id: string;
  /** One line saying what the case is. */
  readonly name: string;
  /** Why it matters. */
  readonly comment?: string;
  /** Where the case comes from. */
  readonly source: string;
  /** Tags. Default `[]`. */
  readonly flags?: readonly string[];
  /** The negotiated context (decode options), on top of what the frame implies. */
  readonly context?: { readonly [key: string]: JsonValue };
}

/** The whole bytes of a frame: what the encoder writes, then the payload it leaves to the caller. */
function frameBytes(frame: EncoderInput<Frame>): Uint8Array {
  let head: Uint8Array;
  let payload: Uint8Array | undefined;
  switch (frame.type) {
    case "oldstyle-greeting":
    case "newstyle-greeting":
      head = encodeGreeting(frame);
      break;
    case "client-flags":
      head = encodeClientFlags(frame);
      break;
    case "option-request":
      head = encodeOptionRequest(frame);
      break;
    case "option-reply":
      head = encodeOptionReply(frame);
      break;
    case "export-name-reply":
      head = encodeExportNameReply(frame);
      break;
    case "request":
      head = encodeRequest(frame);
      payload = frame.data;
      break;
    case "simple-reply":
      head = encodeSimpleReply(frame);
      payload = frame.data;
      break;
    case "reply-chunk":
      head = encodeReplyChunk(frame);
      if (frame.payload.kind === "offset-data") payload = frame.payload.data;
      break;
    default:
      throw new TypeError(`Cannot make a vector: unknown frame type "${(frame as { type?: unknown }).type}"`);
  }
  if (payload === undefined || payload.length === 0) return head;
  const out = new Uint8Array(head.length + payload.length);
  out.set(head, 0);
  out.set(payload, head.length);
  return out;
}

/** The context a frame implies for its own decoding. */
function impliedContext(frame: EncoderInput<Frame>): Record<string, JsonValue> {
  switch (frame.type) {
    case "export-name-reply":
      return { noZeroes: !frame.zeroPadding };
    case "option-reply":
      return { pendingOption: frame.option };
    case "request":
    case "reply-chunk":
      return { extendedHeaders: frame.extended };
    case "simple-reply":
      return frame.data !== undefined ? { readLength: frame.data.length } : {};
    default:
      return {};
  }
}

/** A vector of `bytes` whose verdict is this codec's decoder's (strict, then lenient). */
function vectorOf(
  bytes: Uint8Array,
  decoder: string,
  context: Record<string, JsonValue>,
  meta: VectorMeta,
  rule?: string,
): Vector {
  if (typeof meta.id !== "string" || !ID.test(meta.id)) {
    throw new TypeError(`Cannot make a vector: id "${String(meta.id)}" is not lowercase kebab-case`);
  }
  if (
    typeof meta.name !== "string" || meta.name === "" || typeof meta.source !== "string" || meta.source === ""
  ) {
    throw new TypeError("Cannot make a vector: name and source must be non-empty strings");
  }
  const head = {
    id: meta.id,
    name: meta.name,
    ...(meta.comment !== undefined ? { comment: meta.comment } : {}),
    flags: [...(meta.flags ?? [])],
    decoder,
    context,
    hex: bytesToHex(bytes),
  };
  const dec = DECODERS[decoder]!;
  const strict = outcomeOf(dec, bytes, { ...context, strict: true });
  if (strict.outcome === "need-more") {
    throw new RangeError(
      `Cannot make a vector: the decoder needs ${strict.needed} more bytes (context missing?)`,
    );
  }
  if (strict.outcome === "frame") {
    if (strict.byteLength !== bytes.length) {
      throw new RangeError(
        `Cannot make a vector: the frame is ${strict.byteLength} of ${bytes.length} bytes`,
      );
    }
    return { ...head, frame: strict.frame, result: "valid", source: meta.source };
  }
  const lenient = outcomeOf(dec, bytes, { ...context, strict: false });
  if (lenient.outcome === "frame" && lenient.findings.length > 0 && lenient.byteLength === bytes.length) {
    return {
      ...head,
      frame: lenient.frame,
      findings: lenient.findings,
      result: "acceptable",
      ...(rule !== undefined ? { rule } : {}),
      source: meta.source,
    };
  }
  return {
    ...head,
    result: "invalid",
    code: strict.code,
    offset: strict.offset,
    rule: rule ?? strict.rule,
    source: meta.source,
  };
}

/**
 * Turns a frame built for this codec's encoders into a vector in the corpus's format: `hex` is what the
 * encoder writes plus the payload it leaves to the caller (WRITE data, READ data, OFFSET_DATA data),
 * `context` what the frame implies (`extendedHeaders` of a request or chunk, `pendingOption` of an option
 * reply, `readLength` of a simple reply with data, `noZeroes` of an EXPORT_NAME reply) plus `meta.context`,
 * and `frame` and `result` are what this codec's decoder makes of the bytes in that context (`valid`, or
 * `acceptable`/`invalid` when the context makes the frame break a rule). Throws `TypeError`/`RangeError`
 * for what the encoders refuse, or a bad id.
 *
 * @example
 * ```ts
 * import { Command, vectorFromFrame } from "@nbd/codec";
 * const v = vectorFromFrame(
 *   { type: "request", extended: false, flags: 0, command: Command.READ, cookie: 1, offset: 0, length: 512 },
 *   { id: "my-read-512", name: "READ of 512 bytes", source: "my test suite" },
 * );
 * console.log(v.hex, v.result, v.context);
 * // "25609513000000000000000000000001000000000000000000000200" "valid" { extendedHeaders: false }
 * ```
 */
export function vectorFromFrame(frame: EncoderInput<Frame>, meta: VectorMeta): Vector {
  if (frame === null || typeof frame !== "object" || DECODER_OF_TYPE[frame.type] === undefined) {
    throw new TypeError("Cannot make a vector: not a frame");
  }
  const bytes = frameBytes(frame);
  return vectorOf(bytes, DECODER_OF_TYPE[frame.type]!, { ...impliedContext(frame), ...meta.context }, meta);
}

// ---- vectors that break one rule on purpose -------------------------------------------------------------

/** How a broken vector is made: its bytes, decoder and context. */
interface BrokenFrame {
  readonly bytes: Uint8Array;
  readonly decoder: string;
  readonly context: Record<string, JsonValue>;
}

/** A rule a vector can break on purpose, and what the breaking looks like. */
interface BrokenRuleSpec {
  /** The clause of the spec (section and a short quote). */
  readonly clause: string;
  /** What the vector does. */
  readonly does: string;
  readonly make: () => BrokenFrame;
}

/** Frames as the encoders take them. */
type AnyFrame = EncoderInput<Frame>;

function applies(rule: string, ok: boolean, what: string): void {
  if (!ok) throw new TypeError(`Cannot break ${rule} in this frame: the rule applies to ${what}`);
}

/** Options that take no data: the decoder reports data in them (`option-no-data`). */
const NO_DATA_OPTIONS: readonly number[] = [
  Option.LIST,
  Option.STARTTLS,
  Option.STRUCTURED_REPLY,
  Option.EXTENDED_HEADERS,
];

/**
 * The rules that can be broken in the caller's own frame: each takes a frame (checked to be one the rule
 * applies to) and encodes it with the one change, in the context that makes it a violation.
 */
const BREAK_FRAME: Record<string, (f: AnyFrame) => BrokenFrame> = {
  "request-header-style": (f) => {
    applies("request-header-style", f.type === "request", "requests");
    const extended = f.type === "request" && f.extended;
    return { bytes: frameBytes(f), decoder: "request", context: { extendedHeaders: !extended } };
  },
  "reply-header-style": (f) => {
    if (f.type === "simple-reply") {
      const context: Record<string, JsonValue> = { extendedHeaders: true };
      if (f.data !== undefined) context.readLength = f.data.length;
      return { bytes: frameBytes(f), decoder: "simple-reply", context };
    }
    applies("reply-header-style", f.type === "reply-chunk", "simple replies and reply chunks");
    const extended = f.type === "reply-chunk" && f.extended;
    return { bytes: frameBytes(f), decoder: "reply-chunk", context: { extendedHeaders: !extended } };
  },
  "write-payload-len": (f) => {
    const ok = f.type === "request" && f.extended && f.command === Command.WRITE;
    applies("write-payload-len", ok, "extended WRITE requests");
    const r = f as EncoderInput<Request>;
    return {
      bytes: frameBytes({ ...r, flags: r.flags & ~CommandFlag.PAYLOAD_LEN }),
      decoder: "request",
      context: { extendedHeaders: true },
    };
  },
  "compact-payload-len": (f) => {
    applies("compact-payload-len", f.type === "request" && !f.extended, "compact requests");
    const r = f as EncoderInput<Request>;
    return {
      bytes: frameBytes({ ...r, flags: r.flags | CommandFlag.PAYLOAD_LEN }),
      decoder: "request",
      context: { extendedHeaders: false },
    };
  },
  "block-status-payload-duplicate": (f) => {
    const ok = f.type === "request" && f.extended && f.blockStatus !== undefined &&
      f.blockStatus.contextIds.length > 0;
    applies("block-status-payload-duplicate", ok, "extended BLOCK_STATUS requests with context ids");
    const r = f as EncoderInput<Request>;
    const ids = r.blockStatus!.contextIds;
    return {
      bytes: frameBytes({
        ...r,
        length: BigInt(8 + 4 * (ids.length + 1)),
        blockStatus: { ...r.blockStatus!, contextIds: [...ids, ids[0]!] },
      }),
      decoder: "request",
      context: { extendedHeaders: true },
    };
  },
  "option-no-data": (f) => {
    const ok = f.type === "option-request" && NO_DATA_OPTIONS.includes(f.option);
    applies("option-no-data", ok, "LIST, STARTTLS, STRUCTURED_REPLY and EXTENDED_HEADERS requests");
    const o = f as EncoderInput<OptionRequest>;
    return {
      bytes: frameBytes({ ...o, data: { kind: "raw", raw: new Uint8Array([0, 0, 0, 1]) } }),
      decoder: "option-request",
      context: {},
    };
  },
  "option-reply-echo": (f) => {
    applies("option-reply-echo", f.type === "option-reply", "option replies");
    const option = f.type === "option-reply" ? f.option : 0;
    return {
      bytes: frameBytes(f),
      decoder: "option-reply",
      context: { pendingOption: option === Option.GO ? Option.INFO : Option.GO },
    };
  },
  "chunk-none-done": (f) => {
    const ok = f.type === "reply-chunk" && f.chunkType === ReplyType.NONE;
    applies("chunk-none-done", ok, "NONE chunks");
    const c = f as EncoderInput<ReplyChunk>;
    return {
      bytes: frameBytes({ ...c, flags: c.flags & ~ReplyFlag.DONE }),
      decoder: "reply-chunk",
      context: { extendedHeaders: c.extended },
    };
  },
};

function patched(bytes: Uint8Array, at: number, values: readonly number[]): Uint8Array {
  const out = bytes.slice();
  out.set(values, at);
  return out;
}

function blockStatusChunk(extended: boolean, extents: { length: number; status: number }[]): Uint8Array {
  return encodeReplyChunk({
    type: "reply-chunk",
    extended,
    flags: ReplyFlag.DONE,
    chunkType: extended ? ReplyType.BLOCK_STATUS_EXT : ReplyType.BLOCK_STATUS,
    cookie: 1n,
    ...(extended ? { offset: 0n } : {}),
    payload: { kind: "block-status", descriptors: createBlockStatusDescriptors(1, extended, extents) },
  });
}

const BROKEN: Record<string, BrokenRuleSpec> = {
  "request-header-style": {
    clause: 'Extended headers: "the client MUST use extended request headers" once negotiated',
    does: "a compact (28-byte) READ request in a session that negotiated extended headers",
    make: () => BREAK_FRAME["request-header-style"]!(READ_AT_4K),
  },
  "reply-header-style": {
    clause: 'Extended headers: "the server MUST use extended reply headers" once negotiated',
    does: "a structured (20-byte header) NONE chunk in a session that negotiated extended headers",
    make: () =>
      BREAK_FRAME["reply-header-style"]!({
        type: "reply-chunk",
        extended: false,
        flags: ReplyFlag.DONE,
        chunkType: ReplyType.NONE,
        cookie: 1n,
        payload: { kind: "none" },
      }),
  },
  "write-payload-len": {
    clause: 'NBD_CMD_FLAG_PAYLOAD_LEN: "the client MUST set it" on a WRITE with extended headers',
    does: "an extended WRITE of 8 bytes without NBD_CMD_FLAG_PAYLOAD_LEN (what qemu 10 sends)",
    make: () =>
      BREAK_FRAME["write-payload-len"]!({
        type: "request",
        extended: true,
        flags: CommandFlag.PAYLOAD_LEN,
        command: Command.WRITE,
        cookie: 2n,
        offset: 0n,
        length: 8n,
        data: new Uint8Array(8).fill(0xab),
      }),
  },
  "compact-payload-len": {
    clause: 'NBD_CMD_FLAG_PAYLOAD_LEN: "MUST NOT be set" without extended headers',
    does: "a compact READ request with NBD_CMD_FLAG_PAYLOAD_LEN set",
    make: () => BREAK_FRAME["compact-payload-len"]!(READ_AT_4K),
  },
  "block-status-payload-duplicate": {
    clause: 'NBD_CMD_BLOCK_STATUS payload: context ids "MUST NOT" repeat',
    does: "an extended BLOCK_STATUS request whose payload names context id 1 twice",
    make: () =>
      BREAK_FRAME["block-status-payload-duplicate"]!({
        type: "request",
        extended: true,
        flags: CommandFlag.PAYLOAD_LEN,
        command: Command.BLOCK_STATUS,
        cookie: 3n,
        offset: 0n,
        length: 12n,
        blockStatus: { effectLength: 65536n, contextIds: [1] },
      }),
  },
  "option-no-data": {
    clause: 'NBD_OPT_STRUCTURED_REPLY: "the option data MUST be empty" (unread option data)',
    does: "NBD_OPT_STRUCTURED_REPLY carrying 4 bytes of data nobody reads",
    make: () =>
      BREAK_FRAME["option-no-data"]!({
        type: "option-request",
        option: Option.STRUCTURED_REPLY,
        data: { kind: "none" },
      }),
  },
  "option-info-length": {
    clause: "NBD_OPT_GO/NBD_OPT_INFO: the data is a name, a count and that many info requests (unread data)",
    does: "NBD_OPT_GO whose length counts 2 bytes after its info list",
    make: () => {
      const go = encodeOptionRequest({
        type: "option-request",
        option: Option.GO,
        data: { kind: "info-request", name: "", info: [Info.BLOCK_SIZE] },
      });
      const out = new Uint8Array(go.length + 2);
      out.set(go, 0);
      out[15] = go[15]! + 2; // option length, low byte (the data is 8 bytes)
      return { bytes: out, decoder: "option-request", context: {} };
    },
  },
  "option-reply-echo": {
    clause: 'Option reply: "the option being replied to" MUST be the client\'s option',
    does: "an NBD_REP_ACK for NBD_OPT_LIST while the client's pending option is NBD_OPT_GO",
    make: () =>
      BREAK_FRAME["option-reply-echo"]!({
        type: "option-reply",
        option: Option.LIST,
        reply: OptionReply.ACK,
        data: { kind: "none" },
      }),
  },
  "chunk-none-done": {
    clause: 'NBD_REPLY_TYPE_NONE: "MUST have the NBD_REPLY_FLAG_DONE flag set"',
    does: "a NONE chunk without NBD_REPLY_FLAG_DONE",
    make: () =>
      BREAK_FRAME["chunk-none-done"]!({
        type: "reply-chunk",
        extended: false,
        flags: ReplyFlag.DONE,
        chunkType: ReplyType.NONE,
        cookie: 1n,
        payload: { kind: "none" },
      }),
  },
  "chunk-error-zero": {
    clause: 'Error chunks: the error "MUST NOT be zero"',
    does: "an NBD_REPLY_TYPE_ERROR chunk with error 0",
    make: () => ({
      bytes: encodeReplyChunk({
        type: "reply-chunk",
        extended: false,
        flags: ReplyFlag.DONE,
        chunkType: ReplyType.ERROR,
        cookie: 1n,
        payload: { kind: "error", error: 0, message: "" },
      }),
      decoder: "reply-chunk",
      context: { extendedHeaders: false },
    }),
  },
  "extent-length-zero": {
    clause: 'NBD_REPLY_TYPE_BLOCK_STATUS: extent length "MUST be non-zero"',
    does: "a BLOCK_STATUS chunk whose second descriptor has length 0",
    make: () => ({
      bytes: blockStatusChunk(false, [{ length: 4096, status: 0 }, { length: 0, status: 3 }]),
      decoder: "reply-chunk",
      context: { extendedHeaders: false },
    }),
  },
  "chunk-block-status-ext-count": {
    clause: "NBD_REPLY_TYPE_BLOCK_STATUS_EXT: the descriptor count MUST match the payload length",
    does: "a BLOCK_STATUS_EXT chunk of one descriptor whose count field says 2",
    make: () => {
      const b = blockStatusChunk(true, [{ length: 4096, status: 0 }]);
      return {
        bytes: patched(b, 32 + 4, [0, 0, 0, 2]),
        decoder: "reply-chunk",
        context: { extendedHeaders: true },
      };
    },
  },
  "block-status-descriptor-u32-max": {
    clause: "NBD_REPLY_TYPE_BLOCK_STATUS: 32-bit descriptors; lengths up to 2^32-1 (the overflow boundary)",
    does: "a valid BLOCK_STATUS chunk of two descriptors of 2^32-1 bytes each (their sum overflows 32 bits)",
    make: () => ({
      bytes: blockStatusChunk(false, [{ length: 0xffff_ffff, status: 0 }, {
        length: 0xffff_ffff,
        status: 3,
      }]),
      decoder: "reply-chunk",
      context: { extendedHeaders: false },
    }),
  },
  "compact-length-u32-max": {
    clause: "Compact requests: a 32-bit length; a receiver MUST NOT trust it for an allocation",
    does: "a compact WRITE header announcing 2^32-1 bytes of data (refused before any byte of it arrives)",
    make: () => ({
      bytes: encodeRequestHeaderOnly(),
      decoder: "request",
      context: { extendedHeaders: false },
    }),
  },
};

/** A compact WRITE header with length 2^32-1 and none of its data. */
function encodeRequestHeaderOnly(): Uint8Array {
  const b = encodeRequest({ ...READ_AT_4K, command: Command.WRITE, length: 0n });
  return patched(b, 24, [0xff, 0xff, 0xff, 0xff]);
}

/**
 * The rules {@link brokenVector} can break, with the spec clause each checks and what the vector does.
 * Boundary cases whose bytes are legal (`block-status-descriptor-u32-max`) come out `valid`.
 *
 * @example
 * ```ts
 * import { BROKEN_RULES } from "@nbd/codec";
 * console.log(BROKEN_RULES.map((r) => r.rule).includes("request-header-style")); // true
 * ```
 */
export const BROKEN_RULES: readonly {
  readonly rule: string;
  readonly clause: string;
  readonly does: string;
}[] = Object.entries(BROKEN).map(([rule, s]) => ({ rule, clause: s.clause, does: s.does }));

/**
 * Options of {@link brokenVector}: the vector's id, name, comment, source, flags and extra context, and
 * optionally the frame to break (for the rules in {@link BROKEN_FRAME_RULES}) instead of the rule's own.
 *
 * @example
 * ```ts
 * import type { BrokenVectorOptions } from "@nbd/codec";
 * const o: BrokenVectorOptions = { id: "my-broken-read", source: "my suite" };
 * console.log(o.id);
 * ```
 */
export interface BrokenVectorOptions extends Partial<VectorMeta> {
  /** A frame of the caller's to break the rule in (as the encoders take it). */
  readonly frame?: EncoderInput<Frame>;
}

/**
 * The rules {@link brokenVector} can also break in a frame of the caller's (`options.frame`): header style
 * of requests and replies, PAYLOAD_LEN missing or misplaced, a duplicated context id, data in an option that
 * takes none, an option reply that does not echo the pending option, a NONE chunk without DONE.
 *
 * @example
 * ```ts
 * import { BROKEN_FRAME_RULES } from "@nbd/codec";
 * console.log(BROKEN_FRAME_RULES.includes("write-payload-len")); // true
 * ```
 */
export const BROKEN_FRAME_RULES: readonly string[] = Object.keys(BREAK_FRAME);

/**
 * A vector whose bytes break one named rule on purpose ({@link BROKEN_RULES}), made with this codec's
 * encoders and one deliberate change (a header style the session did not negotiate, a flag left out or set,
 * a field patched), with the verdict this codec's decoder gives: `acceptable` with the rule's finding when
 * the frame can still be decoded, `invalid` with its code and offset when not. `options` override the
 * defaults (`id` `broken-RULE`, the rule's description, source `nbd-codec brokenVector`), and
 * `options.frame` breaks the rule in the caller's frame (rules of {@link BROKEN_FRAME_RULES}). Throws
 * `TypeError` for an unknown rule, or a frame the rule does not apply to.
 *
 * @example
 * ```ts
 * import { brokenVector, Command } from "@nbd/codec";
 * const v = brokenVector("block-status-payload-duplicate");
 * console.log(v.result, v.findings?.[0]?.rule, v.context); // "acceptable" "block-status-payload-duplicate" { extendedHeaders: true }
 * const mine = brokenVector("request-header-style", {
 *   id: "my-trim-compact", frame: { type: "request", extended: false, flags: 0, command: Command.TRIM, cookie: 9, offset: 0, length: 4096 },
 * });
 * console.log(mine.context, mine.findings?.[0]?.rule); // { extendedHeaders: true } "request-header-style"
 * ```
 */
export function brokenVector(rule: string, options?: BrokenVectorOptions): Vector {
  const spec = BROKEN[rule];
  if (spec === undefined) {
    throw new TypeError(
      `Cannot make a broken vector: "${rule}" is not one of ${Object.keys(BROKEN).join(", ")}`,
    );
  }
  const meta = options;
  let made: BrokenFrame;
  if (options?.frame === undefined) made = spec.make();
  else {
    const breakFrame = BREAK_FRAME[rule];
    if (breakFrame === undefined) {
      throw new TypeError(
        `Cannot break ${rule} in a given frame; these rules take one: ${Object.keys(BREAK_FRAME).join(", ")}`,
      );
    }
    if (options.frame === null || typeof options.frame !== "object") {
      throw new TypeError("Cannot make a broken vector: frame is not a frame");
    }
    made = breakFrame(options.frame);
  }
  return vectorOf(made.bytes, made.decoder, { ...made.context, ...meta?.context }, {
    id: meta?.id ?? `broken-${rule}`,
    name: meta?.name ?? spec.does,
    comment: meta?.comment ?? spec.clause,
    source: meta?.source ?? "nbd-codec brokenVector",
    flags: meta?.flags ?? ["generated", "broken-rule"],
  }, rule.endsWith("-u32-max") ? undefined : rule);
}

/**
 * Conversation vectors for other implementations: a whole connection (the bytes of each direction) with
 * every frame and notice a stream decoder must find in it and the negotiated state after each step (schema
 * id `nbd-codec/conversation-vectors/v1`, `vectors/conversation/schema.json`).
 *
 * - {@link conversationVector} records a connection; `nbd-codec vectors` records every bundled capture.
 * - {@link checkConversationVectorFile} checks anyone's conversation vector file against this codec.
 * - {@link brokenConversationVector} makes a conversation that breaks a rule needing two frames
 *   ({@link BROKEN_CONVERSATION_RULES}: an extended reply whose offset does not echo the request's, ...).
 *
 * @module
 */
import { ConversationDecoder, decodeConversation } from "./conversation.ts";
import { Command, ReplyFlag, ReplyType } from "./constants.ts";
import type { ConversationEvent } from "./events.ts";
import type { JsonValue } from "./format.ts";
import { bytesToHex, hexToBytes, toJson } from "./json.ts";
import { createBlockStatusDescriptors, encodeReplyChunk, encodeSimpleReply } from "./reply.ts";
import { encodeRequest } from "./request.ts";
import type { NegotiatedState } from "./stream.ts";
import type { VectorCheckReport, VectorFinding, VectorMeta, VectorProblem } from "./vectors.ts";
import { canonical, HEX, ID, isObject, READ_AT_4K } from "./_vectors.ts";

/**
 * The schema id of a conversation vector file (`vectors/conversation-schema.json`).
 *
 * @example
 * ```ts
 * import { CONVERSATION_VECTOR_SCHEMA_ID } from "@nbd/codec";
 * console.log(CONVERSATION_VECTOR_SCHEMA_ID); // "nbd-codec/conversation-vectors/v1"
 * ```
 */
export const CONVERSATION_VECTOR_SCHEMA_ID = "nbd-codec/conversation-vectors/v1";

/**
 * The negotiated state after a step of a conversation, as conversation vectors write it.
 *
 * @example
 * ```ts
 * import type { VectorState } from "@nbd/codec";
 * const s: VectorState = {
 *   phase: "transmission", style: "newstyle", structuredReplies: true, extendedHeaders: false, contexts: {},
 * };
 * console.log(s.phase);
 * ```
 */
export interface VectorState {
  /** The server side's phase. */
  readonly phase: string;
  /** `oldstyle`, `newstyle` or `unknown`. */
  readonly style: string;
  /** Handshake flags, once seen. */
  readonly handshakeFlags?: number;
  /** Client flags, once seen. */
  readonly clientFlags?: number;
  /** Structured replies negotiated. */
  readonly structuredReplies: boolean;
  /** Extended headers negotiated. */
  readonly extendedHeaders: boolean;
  /** Metadata contexts by id (decimal string keys). */
  readonly contexts: { readonly [id: string]: string };
  /** Export size (decimal string), once known. */
  readonly exportSize?: string;
  /** Transmission flags, once known. */
  readonly transmissionFlags?: number;
}

/**
 * One step of a conversation vector: a frame or a notice, its findings, and the state after it.
 *
 * @example
 * ```ts
 * import type { ConversationVectorEvent } from "@nbd/codec";
 * function kinds(events: ConversationVectorEvent[]): string[] {
 *   return events.map((e) => e.kind);
 * }
 * console.log(kinds([]));
 * ```
 */
export interface ConversationVectorEvent {
  /** Which direction's bytes. */
  readonly direction: "c2s" | "s2c";
  /** The frame kind (`request`, `reply-chunk`, ...) or the notice (`tls`, `undecodable`, `truncated`). */
  readonly kind: string;
  /** Offset in that direction's bytes. */
  readonly offset: number;
  /** Bytes covered. */
  readonly length: number;
  /** The frame as {@link toJson} writes it (frames only). */
  readonly frame?: JsonValue;
  /** Spec violations of this step. */
  readonly findings: readonly VectorFinding[];
  /** What is negotiated once this step is done. */
  readonly state: VectorState;
}

/**
 * A whole connection as a vector: the bytes of each direction, and every step a decoder must find in them.
 *
 * @example
 * ```ts
 * import type { ConversationVector } from "@nbd/codec";
 * const c: ConversationVector = { id: "empty", name: "nothing", source: "me", c2s: "", s2c: "", events: [] };
 * console.log(c.events.length); // 0
 * ```
 */
export interface ConversationVector {
  /** Stable, unique, lowercase kebab-case. */
  readonly id: string;
  /** One line saying what the conversation is. */
  readonly name: string;
  /** Why it matters. */
  readonly comment?: string;
  /** Where the bytes come from (the peers and the capture). */
  readonly source: string;
  /** What is known before the first byte (to start mid-connection), as in {@link VectorState}. */
  readonly initialState?: { readonly [key: string]: JsonValue };
  /** Client-to-server bytes, lowercase hex. */
  readonly c2s: string;
  /** Server-to-client bytes, lowercase hex. */
  readonly s2c: string;
  /** Every step, in causal order. */
  readonly events: readonly ConversationVectorEvent[];
}

/**
 * A conversation vector file.
 *
 * @example
 * ```ts
 * import { CONVERSATION_VECTOR_SCHEMA_ID, type ConversationVectorFile } from "@nbd/codec";
 * const f: ConversationVectorFile = { schema: CONVERSATION_VECTOR_SCHEMA_ID, description: "", conversations: [] };
 * console.log(f.schema);
 * ```
 */
export interface ConversationVectorFile {
  /** Always {@link CONVERSATION_VECTOR_SCHEMA_ID}. */
  readonly schema: string;
  /** What the file covers. */
  readonly description: string;
  /** The conversations. */
  readonly conversations: readonly ConversationVector[];
}

function stateJson(s: NegotiatedState): VectorState {
  const contexts: Record<string, string> = {};
  for (const [id, name] of s.contexts) contexts[String(id)] = name;
  return {
    phase: s.phase,
    style: s.style,
    ...(s.handshakeFlags !== undefined ? { handshakeFlags: s.handshakeFlags } : {}),
    ...(s.clientFlags !== undefined ? { clientFlags: s.clientFlags } : {}),
    structuredReplies: s.structuredReplies,
    extendedHeaders: s.extendedHeaders,
    contexts,
    ...(s.exportSize !== undefined ? { exportSize: s.exportSize.toString() } : {}),
    ...(s.transmissionFlags !== undefined ? { transmissionFlags: s.transmissionFlags } : {}),
  };
}

/** A vector's initial state as the decoders' `state` option. */
function stateOption(
  init: { readonly [key: string]: JsonValue } | undefined,
): Partial<NegotiatedState> | undefined {
  if (init === undefined) return undefined;
  const out: Record<string, unknown> = { ...init };
  if (isObject(init.contexts)) {
    out.contexts = new Map(Object.entries(init.contexts).map(([k, v]) => [Number(k), String(v)]));
  }
  if (typeof init.exportSize === "string") out.exportSize = BigInt(init.exportSize);
  return out as Partial<NegotiatedState>;
}

/**
 * Decodes both directions (causal order, lenient) and records each step with the state after it. The state
 * comes from a second decoder fed, step by step, exactly the bytes of each step in that order.
 */
function conversationSteps(
  c2s: Uint8Array,
  s2c: Uint8Array,
  initialState: { readonly [key: string]: JsonValue } | undefined,
): ConversationVectorEvent[] {
  const state = stateOption(initialState);
  const events = decodeConversation(c2s, s2c, { strict: false, ...(state ? { state } : {}) });
  const replay = new ConversationDecoder({ strict: false, ...(state ? { state } : {}) });
  const fed = { c2s: 0, s2c: 0 };
  const out: ConversationVectorEvent[] = [];
  for (const e of events) {
    const [offset, length] = e.event === "frame"
      ? [e.frameOffset, e.frameLength]
      : [e.streamOffset, e.length];
    const bytes = e.direction === "c2s" ? c2s : s2c;
    const end = Math.min(bytes.length, offset + length);
    if (end > fed[e.direction]) {
      replay.push(e.direction, bytes.subarray(fed[e.direction], end));
      fed[e.direction] = end;
    }
    out.push(stepJson(e, replay.state));
  }
  return out;
}

function stepJson(e: ConversationEvent, state: NegotiatedState): ConversationVectorEvent {
  const findings = e.findings.map((f) => ({ code: f.code, offset: f.offset, rule: f.rule }));
  if (e.event === "frame") {
    return {
      direction: e.direction,
      kind: e.frame.type,
      offset: e.frameOffset,
      length: e.frameLength,
      frame: toJson(e.frame),
      findings,
      state: stateJson(state),
    };
  }
  return {
    direction: e.direction,
    kind: e.notice,
    offset: e.streamOffset,
    length: e.length,
    findings,
    state: stateJson(state),
  };
}

/**
 * Records one connection, given as the bytes of each direction, as a conversation vector: every frame and
 * notice a decoder must find (in causal order: each option before its replies, each request before its
 * replies), with its findings and the negotiated state after it. `initialState` starts the decoders
 * mid-connection (`{ "phase": "transmission", "extendedHeaders": true, ... }`).
 *
 * @example
 * ```ts
 * import { conversationVector, hexToBytes } from "@nbd/codec";
 * const c = conversationVector(
 *   hexToBytes("00000001" + "49484156454f5054" + "00000008" + "00000000"),
 *   hexToBytes("4e42444d4147494349484156454f50540001" + "0003e889045565a9" + "00000008" + "00000001" + "00000000"),
 *   { id: "sr", name: "structured replies negotiated", source: "hand-written" },
 * );
 * console.log(c.events.map((e) => `${e.kind} ${e.state.structuredReplies}`));
 * // [ "newstyle-greeting false", "client-flags false", "option-request false", "option-reply true" ]
 * ```
 */
export function conversationVector(
  c2s: Uint8Array,
  s2c: Uint8Array,
  meta: VectorMeta & { readonly initialState?: { readonly [key: string]: JsonValue } },
): ConversationVector {
  if (!(c2s instanceof Uint8Array) || !(s2c instanceof Uint8Array)) {
    throw new TypeError("Cannot make a conversation vector: both directions must be Uint8Arrays");
  }
  if (typeof meta.id !== "string" || !ID.test(meta.id)) {
    throw new TypeError(
      `Cannot make a conversation vector: id "${String(meta.id)}" is not lowercase kebab-case`,
    );
  }
  return {
    id: meta.id,
    name: meta.name,
    ...(meta.comment !== undefined ? { comment: meta.comment } : {}),
    source: meta.source,
    ...(meta.initialState !== undefined ? { initialState: meta.initialState } : {}),
    c2s: bytesToHex(c2s),
    s2c: bytesToHex(s2c),
    events: conversationSteps(c2s, s2c, meta.initialState),
  };
}

/** A rule that needs two frames to break: the frames of each direction and what is negotiated before them. */
interface BrokenConversationSpec {
  readonly clause: string;
  readonly does: string;
  readonly comment?: string;
  readonly initialState: { readonly [key: string]: JsonValue };
  readonly c2s: () => Uint8Array[];
  readonly s2c: () => Uint8Array[];
}

function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const TRANSMISSION = { phase: "transmission", style: "newstyle" } as const;

function doneNone(cookie: bigint, extended: boolean): Uint8Array {
  return encodeReplyChunk({
    type: "reply-chunk",
    extended,
    flags: ReplyFlag.DONE,
    chunkType: ReplyType.NONE,
    cookie,
    ...(extended ? { offset: 0n } : {}),
    payload: { kind: "none" },
  });
}

const FLUSH = { ...READ_AT_4K, command: Command.FLUSH, offset: 0n, length: 0n } as const;

const BROKEN_CONVERSATIONS: Record<string, BrokenConversationSpec> = {
  "extended-reply-offset": {
    clause: "Extended headers: the reply header's offset echoes the request's offset",
    does: "a READ at offset 4096 answered by an extended NONE chunk whose header offset is 0",
    comment: "libnbd skips such a chunk; the spec's extension-ext-header branch has the server echo it",
    initialState: { ...TRANSMISSION, structuredReplies: true, extendedHeaders: true },
    c2s: () => [encodeRequest({ ...READ_AT_4K, extended: true, cookie: 5n, length: 0n })],
    s2c: () => [doneNone(5n, true)],
  },
  "reply-unknown-cookie": {
    clause: 'Replies: the cookie "MUST" be the one of the request being answered',
    does: "a FLUSH with cookie 5 answered by a simple reply with cookie 6",
    initialState: { ...TRANSMISSION, structuredReplies: false, extendedHeaders: false },
    c2s: () => [encodeRequest({ ...FLUSH, cookie: 5n })],
    s2c: () => [encodeSimpleReply({ type: "simple-reply", error: 0, cookie: 6n })],
  },
  "simple-reply-read-structured": {
    clause: "Structured replies: once negotiated, a READ's data MUST come in structured chunks",
    does: "a READ of 4 bytes answered by a simple reply with its data in a structured-replies session",
    comment: "nbdkit answers other commands with simple replies, which the spec allows; not READ data",
    initialState: { ...TRANSMISSION, structuredReplies: true, extendedHeaders: false },
    c2s: () => [encodeRequest({ ...READ_AT_4K, cookie: 7n, length: 4n })],
    s2c:
      () => [encodeSimpleReply({ type: "simple-reply", error: 0, cookie: 7n }), new Uint8Array([1, 2, 3, 4])],
  },
  "chunk-without-negotiation": {
    clause: 'Structured replies: the server "MUST NOT" send them unless they were negotiated',
    does: "a FLUSH answered by a structured NONE chunk in a session that negotiated no structured replies",
    initialState: { ...TRANSMISSION, structuredReplies: false, extendedHeaders: false },
    c2s: () => [encodeRequest({ ...FLUSH, cookie: 8n })],
    s2c: () => [doneNone(8n, false)],
  },
  "block-status-context": {
    clause: "NBD_REPLY_TYPE_BLOCK_STATUS: the context id is one the client selected with SET_META_CONTEXT",
    does: "a BLOCK_STATUS request answered for context id 2 when only id 1 (base:allocation) was negotiated",
    initialState: {
      ...TRANSMISSION,
      structuredReplies: true,
      extendedHeaders: false,
      contexts: { "1": "base:allocation" },
    },
    c2s: () => [encodeRequest({ ...READ_AT_4K, command: Command.BLOCK_STATUS, cookie: 9n, offset: 0n })],
    s2c: () => [
      encodeReplyChunk({
        type: "reply-chunk",
        extended: false,
        flags: ReplyFlag.DONE,
        chunkType: ReplyType.BLOCK_STATUS,
        cookie: 9n,
        payload: {
          kind: "block-status",
          descriptors: createBlockStatusDescriptors(2, false, [{ length: 512, status: 0 }]),
        },
      }),
    ],
  },
};

/**
 * The rules {@link brokenConversationVector} can break, with the spec clause each checks.
 *
 * @example
 * ```ts
 * import { BROKEN_CONVERSATION_RULES } from "@nbd/codec";
 * console.log(BROKEN_CONVERSATION_RULES.map((r) => r.rule).includes("extended-reply-offset")); // true
 * ```
 */
export const BROKEN_CONVERSATION_RULES: readonly {
  readonly rule: string;
  readonly clause: string;
  readonly does: string;
}[] = Object.entries(BROKEN_CONVERSATIONS).map(([rule, c]) => ({ rule, clause: c.clause, does: c.does }));

/**
 * A conversation vector that breaks a rule needing two frames ({@link BROKEN_CONVERSATION_RULES}): an
 * extended reply whose header offset does not echo its request's (`extended-reply-offset`), a reply whose
 * cookie matches no request, READ data in a simple reply after structured replies were negotiated, a chunk
 * nobody negotiated, block status for a context that was not selected. It starts in the transmission phase
 * (`initialState`); the step that breaks the rule carries the finding.
 *
 * @example
 * ```ts
 * import { brokenConversationVector } from "@nbd/codec";
 * const c = brokenConversationVector("extended-reply-offset");
 * console.log(c.events.map((e) => e.findings.map((f) => f.rule)));
 * // [ [], [ "extended-reply-offset" ] ]
 * ```
 */
export function brokenConversationVector(rule: string): ConversationVector {
  const spec = BROKEN_CONVERSATIONS[rule];
  if (spec === undefined) {
    throw new TypeError(
      `Cannot make a broken conversation: "${rule}" is not one of ${
        Object.keys(BROKEN_CONVERSATIONS).join(", ")
      }`,
    );
  }
  return conversationVector(concatBytes(spec.c2s()), concatBytes(spec.s2c()), {
    id: `broken-${rule}`,
    name: spec.does,
    comment: spec.comment === undefined ? spec.clause : `${spec.clause}. ${spec.comment}`,
    source: "nbd-codec brokenConversationVector",
    initialState: spec.initialState,
  });
}

const CONVERSATION_KEYS = new Set([
  "id",
  "name",
  "comment",
  "source",
  "initialState",
  "c2s",
  "s2c",
  "events",
]);

/**
 * Checks a conversation vector file of anyone's (the parsed JSON): the envelope, each conversation's keys,
 * unique ids and hex, and that this codec's conversation decoder finds exactly the recorded steps in the
 * bytes: the same kinds at the same offsets and lengths, the same frames, findings, and state after each.
 * Reports the first difference of each conversation. Never throws for bad input.
 *
 * @example
 * ```ts
 * import { brokenConversationVector, checkConversationVectorFile } from "@nbd/codec";
 * const c = brokenConversationVector("extended-reply-offset");
 * const report = checkConversationVectorFile({
 *   schema: "nbd-codec/conversation-vectors/v1", description: "", conversations: [c],
 * });
 * console.log(report.ok); // true
 * ```
 */
export function checkConversationVectorFile(doc: unknown): VectorCheckReport {
  const problems: VectorProblem[] = [];
  if (!isObject(doc)) {
    return { ok: false, vectors: 0, problems: [{ message: "a conversation vector file is a JSON object" }] };
  }
  for (const k of Object.keys(doc)) {
    if (!["schema", "description", "conversations"].includes(k)) {
      problems.push({ message: `unknown key "${k}"` });
    }
  }
  if (doc.schema !== CONVERSATION_VECTOR_SCHEMA_ID) {
    problems.push({ message: `schema must be "${CONVERSATION_VECTOR_SCHEMA_ID}"` });
  }
  if (typeof doc.description !== "string") problems.push({ message: "description must be a string" });
  if (!Array.isArray(doc.conversations) || doc.conversations.length === 0) {
    problems.push({ message: "conversations must be a non-empty array" });
    return { ok: false, vectors: 0, problems };
  }
  const ids = new Set<string>();
  for (const raw of doc.conversations as unknown[]) {
    if (!isObject(raw)) {
      problems.push({ message: "each conversation is an object" });
      continue;
    }
    const id = typeof raw.id === "string" ? raw.id : undefined;
    const before = problems.length;
    const err = (message: string) => problems.push(id === undefined ? { message } : { id, message });
    for (const k of Object.keys(raw)) if (!CONVERSATION_KEYS.has(k)) err(`unknown key "${k}"`);
    if (id === undefined || !ID.test(id)) err("id must be lowercase kebab-case");
    else if (ids.has(id)) err("duplicate id");
    else ids.add(id);
    for (const k of ["name", "source"]) {
      if (typeof raw[k] !== "string" || raw[k] === "") err(`${k} must be a non-empty string`);
    }
    for (const k of ["c2s", "s2c"]) {
      if (typeof raw[k] !== "string" || !HEX.test(raw[k] as string)) err(`${k} must be lowercase byte pairs`);
    }
    if (raw.initialState !== undefined && !isObject(raw.initialState)) err("initialState must be an object");
    if (!Array.isArray(raw.events)) err("events must be an array");
    if (problems.length > before) continue;
    try {
      const ours = conversationSteps(
        hexToBytes(raw.c2s as string),
        hexToBytes(raw.s2c as string),
        raw.initialState as { [key: string]: JsonValue } | undefined,
      );
      const theirs = raw.events as unknown[];
      const n = Math.max(ours.length, theirs.length);
      for (let i = 0; i < n; i++) {
        const a = ours[i];
        const b = theirs[i];
        if (a === undefined) {
          err(`step ${i}: the vector has a step the decoder does not find: ${canonical(b).slice(0, 200)}`);
          break;
        }
        if (b === undefined) {
          err(
            `step ${i}: the decoder finds ${a.kind} at ${a.direction} offset ${a.offset}, which the vector lacks`,
          );
          break;
        }
        if (canonical(a) !== canonical(b)) {
          err(
            `step ${i}: the decoder finds ${canonical(a).slice(0, 300)}, the vector says ${
              canonical(b).slice(0, 300)
            }`,
          );
          break;
        }
      }
    } catch (e) {
      err(`cannot be decoded: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  return { ok: problems.length === 0, vectors: doc.conversations.length, problems };
}

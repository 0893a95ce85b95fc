// Helpers of the server session tests: client bytes built from frames, the session's output decoded back
// with the codec's decoders (strict), so that tests assert real fields.
import {
  ClientFlag,
  decodeOptionReply,
  decodeReply,
  encodeClientFlags,
  encodeOptionRequest,
  encodeRequest,
  Info,
  Option,
  type OptionData,
  type OptionReplyFrame,
  type ReplyChunk,
  type Request,
  type ServerEvent,
  type ServerExport,
  ServerSession,
  type ServerSessionOptions,
  type ServerStep,
  type SimpleReply,
} from "../mod.ts";

export const FIXED_NZ: number = ClientFlag.C_FIXED_NEWSTYLE | ClientFlag.C_NO_ZEROES;

export function hex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, "");
  return Uint8Array.from(clean.match(/../g) ?? [], (h) => parseInt(h, 16));
}

export function toHex(parts: readonly Uint8Array[]): string {
  return parts.map((p) => [...p].map((b) => b.toString(16).padStart(2, "0")).join("")).join("");
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function opt(option: number, data: OptionData = { kind: "none" }): Uint8Array {
  return encodeOptionRequest({ type: "option-request", option, data });
}

export function go(name = "disk", info: number[] = [], option: number = Option.GO): Uint8Array {
  return opt(option, { kind: "info-request", name, info });
}

export function meta(set: boolean, name: string, queries: string[]): Uint8Array {
  return opt(set ? Option.SET_META_CONTEXT : Option.LIST_META_CONTEXT, {
    kind: "meta-context-query",
    name,
    queries,
  });
}

/** The option replies in some output, decoded strictly. */
export function optionReplies(out: readonly Uint8Array[]): OptionReplyFrame[] {
  const b = concat(out);
  const frames: OptionReplyFrame[] = [];
  for (let at = 0; at < b.length;) {
    const r = decodeOptionReply(b, { offset: at });
    if (!r.done) throw new Error(`incomplete option reply at ${at}`);
    frames.push(r.frame);
    at += r.byteLength;
  }
  return frames;
}

/** Reply frames in some output, decoded strictly; `readLength` sizes simple replies to READ. */
export function replies(
  out: readonly Uint8Array[],
  opts: { extendedHeaders?: boolean; readLength?: number } = {},
): (SimpleReply | ReplyChunk)[] {
  const b = concat(out);
  const frames: (SimpleReply | ReplyChunk)[] = [];
  for (let at = 0; at < b.length;) {
    const r = decodeReply(b, { offset: at, ...opts });
    if (!r.done) throw new Error(`incomplete reply at ${at}`);
    frames.push(r.frame);
    at += r.byteLength;
  }
  return frames;
}

export function req(
  command: number,
  cookie: bigint,
  offset: bigint,
  length: bigint,
  more: Partial<Request> = {},
): Uint8Array {
  const r: Request = { type: "request", extended: false, flags: 0, command, cookie, offset, length, ...more };
  const head = encodeRequest(r);
  return r.data !== undefined && r.blockStatus === undefined ? concat([head, r.data]) : head;
}

export interface Negotiation {
  structured?: boolean;
  extended?: boolean;
  contexts?: string[];
  info?: number[];
  name?: string;
}

export const DISK: ServerExport = { name: "disk", size: 1 << 20, contexts: ["base:allocation"] };

/** A session in transmission, the negotiation done as asked; returns the session and all events so far. */
export function transmission(
  options: Partial<ServerSessionOptions> = {},
  n: Negotiation = {},
): { s: ServerSession; events: ServerEvent[] } {
  const s = new ServerSession({ exports: [DISK], ...options });
  const events: ServerEvent[] = [];
  const feed = (b: Uint8Array): ServerStep => {
    const step = s.receive(b);
    events.push(...step.events);
    return step;
  };
  s.start();
  feed(encodeClientFlags({ type: "client-flags", flags: FIXED_NZ }));
  if (n.extended === true) feed(opt(Option.EXTENDED_HEADERS));
  if (n.structured === true) feed(opt(Option.STRUCTURED_REPLY));
  if (n.contexts !== undefined) feed(meta(true, n.name ?? "disk", n.contexts));
  feed(go(n.name ?? "disk", n.info ?? [Info.BLOCK_SIZE]));
  if (s.state.phase !== "transmission") throw new Error(`not in transmission: ${JSON.stringify(events)}`);
  return { s, events };
}

/** The events of one receive, by type. */
export function types(step: ServerStep): string[] {
  return step.events.map((e) => e.type);
}

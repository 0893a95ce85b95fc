// Replay: the client bytes of every real capture in vectors/captures/ fed into a server session that serves
// what the capture's server served (its exports, sizes, contexts, handshake style, TLS and reply policy,
// learned by decoding the capture). The session's output, decoded with the client bytes by the conversation
// decoder, must carry no finding on the server side, answer every request exactly once, and be the same
// whatever the split of the client bytes.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";
import {
  Command,
  CommandFlag,
  type ConversationEvent,
  decodeConversation,
  formatEventJson,
  HandshakeFlag,
  Option,
  OptionReply,
  type ServerEvent,
  type ServerExport,
  ServerSession,
  type ServerSessionOptions,
} from "../mod.ts";
import { concat } from "./_server_session.ts";

const dir = fileURLToPath(new URL("../vectors/captures/", import.meta.url));
const names = existsSync(dir)
  ? readdirSync(dir).filter((f) => f.endsWith(".c2s.bin")).map((f) => f.replace(".c2s.bin", "")).sort()
  : [];
const bytes = (p: string) => new Uint8Array(readFileSync(p));

/** What the capture's server served and allowed, learned from the capture itself. */
function policyOf(events: readonly ConversationEvent[]): ServerSessionOptions {
  const sizes = new Map<string, bigint>();
  const contexts = new Set<string>(["base:allocation"]);
  const listed: string[] = [];
  let handshake: ServerSessionOptions["handshake"] = "fixed-newstyle";
  let noZeroes = true;
  let tls: ServerSessionOptions["tls"] = "off";
  let structuredReplies = true;
  let extendedHeaders = true;
  let pendingName = "";
  let defaultSize = 1n << 30n;
  for (const e of events) {
    if (e.event !== "frame") continue;
    const f = e.frame;
    if (f.type === "oldstyle-greeting") {
      handshake = "oldstyle";
      defaultSize = f.size;
    } else if (f.type === "newstyle-greeting") {
      handshake = (f.handshakeFlags & HandshakeFlag.FIXED_NEWSTYLE) !== 0 ? "fixed-newstyle" : "newstyle";
      noZeroes = (f.handshakeFlags & HandshakeFlag.NO_ZEROES) !== 0;
    } else if (f.type === "option-request") {
      if (f.data.kind === "info-request" || f.data.kind === "export-name") pendingName = f.data.name;
    } else if (f.type === "export-name-reply") {
      sizes.set(pendingName, f.size);
    } else if (f.type === "option-reply") {
      const d = f.data;
      if (d.kind === "info" && d.info.kind === "export") sizes.set(pendingName, d.info.size);
      if (d.kind === "meta-context") contexts.add(d.name);
      if (d.kind === "server") listed.push(d.name);
      if (f.reply === OptionReply.ERR_TLS_REQD) tls = "required";
      if (f.option === Option.STARTTLS && f.reply === OptionReply.ACK) {
        tls = tls === "required" ? tls : "offered";
      }
      if (f.option === Option.STRUCTURED_REPLY && f.reply === OptionReply.ERR_UNSUP) {
        structuredReplies = false;
      }
      if (f.option === Option.EXTENDED_HEADERS && f.reply === OptionReply.ERR_UNSUP) extendedHeaders = false;
    }
  }
  const first = sizes.values().next();
  const make = (name: string): ServerExport => ({
    name,
    size: sizes.get(name) ?? (first.done === true ? defaultSize : first.value),
    contexts: [...contexts],
  });
  return {
    exports: listed.map(make),
    lookup: make,
    handshake,
    noZeroes,
    tls,
    structuredReplies,
    extendedHeaders,
  };
}

interface Replay {
  readonly output: Uint8Array;
  readonly events: string[];
  readonly consumed: number;
  readonly answered: number;
}

/** Feeds the client bytes in the given chunks, answering every request as a simple storage would. */
function replay(options: ServerSessionOptions, chunks: readonly Uint8Array[]): Replay {
  const s = new ServerSession(options);
  const out: Uint8Array[] = [];
  const events: string[] = [];
  let consumed = 0;
  let answered = 0;
  let stopped = false;
  const handle = (list: readonly ServerEvent[]): void => {
    for (const e of list) {
      events.push(e.type === "request" ? `request ${e.request.cookie}` : e.type);
      if (e.type === "starttls") {
        consumed -= e.early.length;
        stopped = true; // the rest is TLS
      }
      if (e.type === "close") stopped = true;
      if (e.type === "refused") answered++;
      if (e.type !== "request") continue;
      out.push(...answer(s, e));
      answered++;
    }
  };
  const start = s.start();
  out.push(...start.output);
  handle(start.events);
  for (const c of chunks) {
    if (stopped) break;
    consumed += c.length;
    const step = s.receive(c);
    out.push(...step.output);
    handle(step.events);
  }
  return { output: concat(out), events, consumed, answered };
}

function answer(s: ServerSession, e: Extract<ServerEvent, { type: "request" }>): Uint8Array[] {
  const r = e.request;
  const size = BigInt(s.state.export!.size);
  switch (r.command) {
    case Command.READ: {
      const n = Number(r.length);
      const chunked = s.state.replyStyle !== "simple" && (r.flags & CommandFlag.DF) === 0 && n >= 1024;
      if (!chunked) return s.replyRead(r.cookie, new Uint8Array(n));
      const half = Math.floor(n / 2);
      return [
        ...s.holeChunk(r.cookie, r.offset + BigInt(half), n - half),
        ...s.readChunk(r.cookie, r.offset, new Uint8Array(half), true),
      ];
    }
    case Command.BLOCK_STATUS: {
      let len = e.effectLength!;
      if (len > size - r.offset) len = size - r.offset;
      if (s.state.replyStyle !== "extended" && len > 0xffff_f000n) len = 0xffff_f000n;
      return s.replyBlockStatus(
        r.cookie,
        e.contexts!.map((contextId) => ({ contextId, extents: [{ length: len, status: 0 }] })),
      );
    }
    default:
      return s.replyOk(r.cookie);
  }
}

/**
 * The client bytes cut at the end of each of its frames (as the capture's own decoding found them), each
 * frame then cut in random pieces: a client reuses a cookie only once its reply arrived, so a replay
 * answers each request before the next one is fed, as a live server would.
 */
function pieces(
  c2s: Uint8Array,
  original: readonly ConversationEvent[],
  seed: number,
  max: number,
): Uint8Array[] {
  const ends = original.flatMap((e) =>
    e.direction === "c2s" && e.event === "frame" ? [e.frameOffset + e.frameLength] : []
  );
  const out: Uint8Array[] = [];
  let x = seed;
  let at = 0;
  for (const end of [...ends, c2s.length]) {
    while (at < end) {
      x = (x * 1103515245 + 12345) & 0x7fffffff;
      const n = Math.min(end - at, max === 0 ? end - at : 1 + (x % max));
      out.push(c2s.subarray(at, at + n));
      at += n;
    }
  }
  return out;
}

/** The server's frames as JSON without their stream offsets, sorted: replies may come in any order. */
function serverFrames(events: readonly ConversationEvent[]): string[] {
  return events.filter((e) => e.direction === "s2c").map((e) => {
    const { frameOffset: _o, streamOffset: _s, ...rest } = formatEventJson(e) as Record<string, unknown>;
    return JSON.stringify(rest);
  }).sort();
}

describe.skipIf(names.length === 0)("server session replays the client side of real captures", () => {
  for (const name of names) {
    test(`${name}: the session's replies decode without a server-side finding, every request answered once`, () => {
      const c2s = bytes(`${dir}${name}.c2s.bin`);
      const original = decodeConversation(c2s, bytes(`${dir}${name}.s2c.bin`), { strict: false });
      const policy = policyOf(original);
      const whole = replay(policy, pieces(c2s, original, 0, 0));
      const ours = decodeConversation(c2s.subarray(0, whole.consumed), whole.output, { strict: false });
      const serverFindings = ours.filter((e) => e.direction === "s2c").flatMap((e) => e.findings);
      expect(serverFindings).toEqual([]);
      // Every request but DISC has exactly one complete reply, and nothing answers an unknown cookie.
      const requests = ours.flatMap((e) =>
        e.event === "frame" && e.frame.type === "request" && e.frame.command !== Command.DISC
          ? [e.frame.cookie]
          : []
      );
      const completed = ours.flatMap((e) => {
        if (e.event !== "frame") return [];
        const f = e.frame;
        if (f.type === "simple-reply") return [f.cookie];
        if (f.type === "reply-chunk" && (f.flags & 1) !== 0) return [f.cookie];
        return [];
      });
      expect(completed.sort()).toEqual(requests.sort());
      expect(whole.answered).toBe(requests.length);
      expect(whole.events).not.toContain("close");
      // The original server's handshake outcome is reached too: transmission when it got there.
      const originalReady = original.some((e) =>
        e.event === "frame" && e.direction === "c2s" && e.frame.type === "request"
      );
      expect(whole.events.includes("ready")).toBe(originalReady);
      // Any split of the client bytes gives the same events and replies.
      for (const [seed, max] of [[1, 1], [7, 5], [42, 300]] as const) {
        const split = replay(policy, pieces(c2s, original, seed, max));
        expect(split.events).toEqual(whole.events);
        const theirs = decodeConversation(c2s.subarray(0, split.consumed), split.output, { strict: false });
        expect(serverFrames(theirs)).toEqual(serverFrames(ours));
      }
    });
  }
});

// Every valid vector, fed through the stream decoders whole, in random splits and byte by byte, gives the
// same frame as the frame decoder (which the vector harness checks against the hand-written fields).
import { describe, expect, test } from "vitest";
import {
  ClientStreamDecoder,
  Command,
  decodeClientFlags,
  type Decoded,
  decodeExportNameReply,
  decodeGreeting,
  decodeOptionReply,
  decodeOptionRequest,
  decodeReplyChunk,
  decodeRequest,
  decodeSimpleReply,
  Option,
  ServerStreamDecoder,
  type StreamEvent,
} from "../mod.ts";
import { fromHex, loadVectorFiles, type Vector } from "./_harness.ts";

type Feeder = { push(chunk: Uint8Array): StreamEvent[]; end(): StreamEvent[] };

interface Route {
  make(v: Vector): Feeder;
  decode(bytes: Uint8Array, ctx: Record<string, unknown>): Decoded<unknown>;
}

const none = { kind: "none" } as const;
const routes: Record<string, Route> = {
  "greeting": { make: () => new ServerStreamDecoder(), decode: (b) => decodeGreeting(b, { strict: false }) },
  "client-flags": {
    make: () => new ClientStreamDecoder(),
    decode: (b) => decodeClientFlags(b, { strict: false }),
  },
  "export-name-reply": {
    make: (v) => {
      const d = new ServerStreamDecoder({
        state: { phase: "options", style: "newstyle", handshakeFlags: 3 },
      });
      d.noteClientFlags(v.context.noZeroes ? 3 : 1);
      d.noteOption({
        type: "option-request",
        option: Option.EXPORT_NAME,
        data: { kind: "export-name", name: "" },
      });
      return d;
    },
    decode: (b, ctx) => decodeExportNameReply(b, { noZeroes: ctx.noZeroes === true, strict: false }),
  },
  "option-request": {
    make: () => new ClientStreamDecoder({ state: { phase: "options", style: "newstyle" } }),
    decode: (b) => decodeOptionRequest(b, { strict: false }),
  },
  "option-reply": {
    make: (v) => {
      const d = new ServerStreamDecoder({ state: { phase: "options", style: "newstyle" } });
      const option = parseInt(v.hex.slice(16, 24), 16);
      d.noteOption({ type: "option-request", option, data: none });
      return d;
    },
    decode: (b) => decodeOptionReply(b, { strict: false }),
  },
  "request": {
    make: () => new ClientStreamDecoder({ state: { phase: "transmission" } }),
    decode: (b) => decodeRequest(b, { strict: false }),
  },
  "simple-reply": {
    make: (v) => {
      const d = new ServerStreamDecoder({ state: { phase: "transmission" } });
      const cookie = BigInt("0x" + v.hex.slice(16, 32));
      const isRead = typeof v.context.readLength === "number";
      const readLength = isRead ? v.context.readLength as number : 0;
      d.noteRequest({
        type: "request",
        extended: false,
        flags: 0,
        command: isRead ? Command.READ : Command.FLUSH,
        cookie,
        offset: 0n,
        length: BigInt(readLength),
      });
      return d;
    },
    decode: (b, ctx) =>
      decodeSimpleReply(b, {
        strict: false,
        ...(typeof ctx.readLength === "number" && parseInt("0x" + toHexAt(b, 4, 4)) === 0
          ? { readLength: ctx.readLength }
          : {}),
      }),
  },
  "reply-chunk": {
    make: () => new ServerStreamDecoder({ state: { phase: "transmission" } }),
    decode: (b) => decodeReplyChunk(b, { strict: false }),
  },
};

function toHexAt(b: Uint8Array, at: number, n: number): string {
  return Array.from(b.subarray(at, at + n), (x) => x.toString(16).padStart(2, "0")).join("");
}

function json(x: unknown): unknown {
  return JSON.parse(JSON.stringify(x, (_k, v) => {
    if (typeof v === "bigint") return `${v}n`;
    if (v instanceof Uint8Array) return Array.from(v);
    if (v !== null && typeof v === "object" && typeof v.lengthAt === "function") {
      return {
        contextId: v.contextId,
        count: v.count,
        extents: Array.from({ length: v.count }, (_, i) => [`${v.lengthAt(i)}`, `${v.statusAt(i)}`]),
      };
    }
    return v;
  }));
}

function feed(route: Route, v: Vector, parts: Uint8Array[]): StreamEvent[] {
  const d = route.make(v);
  const out: StreamEvent[] = [];
  for (const p of parts) out.push(...d.push(p));
  out.push(...d.end());
  return out;
}

function split(b: Uint8Array, seed: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let s = seed;
  for (let at = 0; at < b.length;) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    const n = 1 + (s % 23);
    out.push(b.slice(at, at + n));
    at += n;
  }
  return out;
}

const vectors = loadVectorFiles().flatMap((f) => f.vectors).filter((v) =>
  v.result !== "invalid" && v.decoder in routes
);

describe("vectors through the stream decoders", () => {
  test("cover every frame decoder", () => {
    expect(new Set(vectors.map((v) => v.decoder))).toEqual(new Set(Object.keys(routes)));
  });
  for (const v of vectors) {
    test(`${v.id}: whole, split and byte by byte give the frame decoder's frame`, () => {
      const route = routes[v.decoder]!;
      const bytes = fromHex(v.hex);
      const direct = route.decode(bytes, v.context);
      expect(direct.done).toBe(true);
      if (!direct.done) return;
      const whole = feed(route, v, [bytes]);
      const frames = whole.filter((e) => e.event === "frame");
      expect(frames.length, JSON.stringify(whole.map((e) => e.findings))).toBe(1);
      expect(frames[0]!.event === "frame" && frames[0]!.frameLength).toBe(bytes.length);
      expect(json(frames[0]!.event === "frame" && frames[0]!.frame)).toEqual(json(direct.frame));
      // The same properties in the same order (the stream decoders build some frames on a fast path).
      const frame = frames[0]!.event === "frame" ? frames[0]!.frame : {};
      expect(Object.keys(frame)).toEqual(Object.keys(direct.frame as object));
      for (const seed of [3, 4]) expect(json(feed(route, v, split(bytes, seed)))).toEqual(json(whole));
      expect(json(feed(route, v, Array.from(bytes, (x) => Uint8Array.of(x))))).toEqual(json(whole));
    });
  }
});

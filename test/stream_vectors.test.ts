// Every valid vector, fed through the stream decoders whole, in random splits and byte by byte, gives the
// same frame as the frame decoder (which the vector harness checks against the hand-written fields).
import { describe, expect, test } from "vitest";
import type { StreamEvent } from "../mod.ts";
import { fromHex, loadVectorFiles, type Vector } from "./_harness.ts";
import { type Route, routes } from "./_stream_routes.ts";

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

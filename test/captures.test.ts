// Real captures between real peers (vectors/captures/, recorded by scripts/capture/): the conversation
// decoder must find exactly the frames listed in each NAME.expected.jsonl, which was written from the
// peers' own logs and the spec's layouts, never from our output. Each capture is decoded from its raw byte
// streams, from its pcap (reassembled by our TCP code), in capture order, and in random splits and byte by
// byte, with identical results.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";
import {
  ConversationDecoder,
  type ConversationEvent,
  decodeConversation,
  type Direction,
  formatEventJson,
} from "../mod.ts";
import { readCapture, reassembleCapture, TcpReassembler } from "../trace.ts";

const dir = fileURLToPath(new URL("../vectors/captures/", import.meta.url));
const names = existsSync(dir)
  ? readdirSync(dir).filter((f) => f.endsWith(".expected.jsonl")).map((f) => f.replace(".expected.jsonl", ""))
    .sort()
  : [];
const bytes = (p: string) => new Uint8Array(readFileSync(p));

function framesByPlace(events: readonly ConversationEvent[]): Map<string, Record<string, unknown>> {
  const m = new Map<string, Record<string, unknown>>();
  for (const e of events) {
    if (e.event !== "frame") continue;
    m.set(`${e.direction}:${e.frameOffset}`, formatEventJson(e) as Record<string, unknown>);
  }
  return m;
}

/** Every expected frame is there with every expected field; nothing else is there. */
function expectMatches(events: readonly ConversationEvent[], expected: Record<string, unknown>[]): void {
  const mine = framesByPlace(events);
  for (const x of expected) {
    const m = mine.get(`${x.direction}:${x.frameOffset}`);
    expect(m, `frame at ${x.direction}:${x.frameOffset} (${x.kind})`).toBeDefined();
    const subset: Record<string, unknown> = {};
    for (const k of Object.keys(x)) if (k !== "connection") subset[k] = m![k];
    expect(subset, `frame at ${x.direction}:${x.frameOffset}`).toEqual(
      Object.fromEntries(Object.entries(x).filter(([k]) => k !== "connection")),
    );
  }
  expect(mine.size).toBe(expected.length);
}

/** A frame list that does not depend on the order the directions were interleaved in. */
function canonical(events: readonly ConversationEvent[]): unknown[] {
  return [...framesByPlace(events).entries()].sort(([a], [b]) => a.localeCompare(b));
}

function chunks(b: Uint8Array, seed: number, max: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let s = seed;
  for (let at = 0; at < b.length;) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    const n = 1 + (s % max);
    out.push(b.subarray(at, at + n));
    at += n;
  }
  return out;
}

/** Interleaves the two directions' chunks as a capture might (always some of each, in turn). */
function interleaved(c2s: Uint8Array[], s2c: Uint8Array[], payloadViews = false): ConversationEvent[] {
  const d = new ConversationDecoder({ payloadViews });
  const out: ConversationEvent[] = [];
  let i = 0;
  let j = 0;
  while (i < c2s.length || j < s2c.length) {
    if (j < s2c.length) out.push(...d.push("s2c", s2c[j++]!));
    if (i < c2s.length) out.push(...d.push("c2s", c2s[i++]!));
  }
  out.push(...d.end());
  return out;
}

test("there are bundled captures", () => {
  expect(names.length).toBeGreaterThanOrEqual(10);
});

for (const name of names) {
  describe(`capture ${name}`, () => {
    const expected = readFileSync(dir + name + ".expected.jsonl", "utf8").trim().split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const c2s = bytes(dir + name + ".c2s.bin");
    const s2c = bytes(dir + name + ".s2c.bin");
    const whole = decodeConversation(c2s, s2c);

    test("the raw byte streams decode to the expected frames", () => {
      expectMatches(whole, expected);
    });

    test("the pcap reassembles to the same byte streams and frames", () => {
      const pcap = bytes(dir + name + ".pcap");
      const r = reassembleCapture(pcap);
      const idx = r.streams.findIndex((s) => s.c2s.length === c2s.length && s.s2c.length === s2c.length);
      expect(idx).toBeGreaterThanOrEqual(0);
      expect(Buffer.from(r.streams[idx]!.c2s).equals(Buffer.from(c2s))).toBe(true);
      expect(Buffer.from(r.streams[idx]!.s2c).equals(Buffer.from(s2c))).toBe(true);
    });

    test("packets fed in capture order give the same frames", () => {
      const cap = readCapture(bytes(dir + name + ".pcap"));
      const tcp = new TcpReassembler();
      const convs = new Map<number, ConversationDecoder>();
      const out: ConversationEvent[] = [];
      const handle = (events: ReturnType<TcpReassembler["push"]>) => {
        for (const e of events) {
          if (e.type === "open") {
            convs.set(e.connection.id, new ConversationDecoder({ connection: e.connection.id }));
          } else if (e.type === "data") {
            out.push(...convs.get(e.connection)!.push(e.direction as Direction, e.bytes));
          }
        }
      };
      for (const p of cap.packets) handle(tcp.push(p));
      handle(tcp.end());
      for (const d of convs.values()) out.push(...d.end());
      // The NBD connection is the one whose streams match the raw files.
      const r = reassembleCapture(bytes(dir + name + ".pcap"));
      const idx = r.streams.findIndex((s) => s.c2s.length === c2s.length && s.s2c.length === s2c.length);
      const mine = out.filter((e) => e.connection === idx).map((e) => ({ ...e, connection: 0 }));
      expect(canonical(mine)).toEqual(canonical(whole));
    });

    test("random splits and byte by byte give identical results", () => {
      for (const seed of [7, 8, 9]) {
        expect(canonical(interleaved(chunks(c2s, seed, 97), chunks(s2c, seed + 1, 131)))).toEqual(
          canonical(whole),
        );
      }
      expect(canonical(interleaved(chunks(c2s, 1, 1), chunks(s2c, 2, 1), true))).toEqual(canonical(whole));
    });
  });
}

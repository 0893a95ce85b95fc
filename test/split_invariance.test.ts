// Any split of the same bytes gives the same events: frames, notices and findings, with their offsets and
// lengths, in the same order. Checked with random splits (fast-check), byte by byte and whole, for every
// vector through its stream decoder, and for every bundled capture through the stream decoders on their
// own and through the conversation decoder in capture order (the pcap's interleaving of the directions,
// each packet's bytes split again at random).
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import {
  ClientStreamDecoder,
  ConversationDecoder,
  type ConversationEvent,
  decodeConversation,
  type Direction,
  isNbdDecodeError,
  ServerStreamDecoder,
  type StreamEvent,
  type StreamOptions,
} from "../mod.ts";
import { readCapture, TcpReassembler } from "../trace.ts";
import { normal } from "./_events.ts";
import { fromHex, loadVectorFiles } from "./_harness.ts";
import { type Feeder, routes } from "./_stream_routes.ts";

/** Cuts `b` into pieces of the given sizes, used in turn and over again. */
function pieces(b: Uint8Array, sizes: readonly number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0, i = 0; at < b.length; i++) {
    const n = sizes[i % sizes.length]!;
    out.push(b.subarray(at, at + n));
    at += n;
  }
  return out;
}

const sizes = (max: number) => fc.array(fc.integer({ min: 1, max }), { minLength: 1, maxLength: 12 });

/** The events of `parts` fed in turn, then end(); in strict mode, the error thrown instead. */
function run(make: () => Feeder, parts: readonly Uint8Array[]): unknown {
  const d = make();
  const out: StreamEvent[] = [];
  try {
    for (const p of parts) out.push(...d.push(p));
    out.push(...d.end());
  } catch (e) {
    if (!isNbdDecodeError(e)) throw e;
    // The events of the push that threw are lost with it (strict mode): only the error is compared.
    return { error: e.code, offset: e.offset, rule: e.rule };
  }
  return normal(out);
}

/** Whole, byte by byte (unless `bytewise` is false) and `runs` random splits all give the same result. */
function invariant(
  make: () => Feeder,
  bytes: Uint8Array,
  runs: number,
  maxPiece: number,
  bytewise = true,
): void {
  const whole = run(make, [bytes]);
  if (bytewise) expect(run(make, Array.from(bytes, (x) => Uint8Array.of(x)))).toEqual(whole);
  fc.assert(
    fc.property(sizes(maxPiece), (s) => {
      expect(run(make, pieces(bytes, s))).toEqual(whole);
    }),
    { numRuns: runs },
  );
}

const MODES: [string, StreamOptions][] = [
  ["lenient", {}],
  ["lenient with payload views", { payloadViews: true }],
  ["strict", { strict: true }],
  ["strict with payload views", { strict: true, payloadViews: true }],
];

describe("every vector through its stream decoder", () => {
  // Invalid and acceptable vectors too: their notices and findings must not depend on the split either.
  const vectors = loadVectorFiles().flatMap((f) => f.vectors).filter((v) => v.decoder in routes);
  test("covers every vector a stream decoder frames", () => {
    expect(vectors.length).toBeGreaterThan(100);
  });
  for (const [mode, options] of MODES) {
    test(`${mode}: whole, random splits and byte by byte agree`, () => {
      for (const v of vectors) {
        const bytes = fromHex(v.hex);
        if (bytes.length > 4096) continue;
        // A second copy of the bytes after the first: a frame then starts inside a chunk.
        const twice = new Uint8Array(bytes.length * 2);
        twice.set(bytes);
        twice.set(bytes, bytes.length);
        const make = () => routes[v.decoder]!.make(v, options);
        try {
          invariant(make, bytes, 5, 40);
          invariant(make, twice, 5, 40);
        } catch (e) {
          throw new Error(`vector ${v.id}: ${(e as Error).message}`);
        }
      }
    });
  }
});

const dir = fileURLToPath(new URL("../vectors/captures/", import.meta.url));
const names = existsSync(dir)
  ? readdirSync(dir).filter((f) => f.endsWith(".pcap")).map((f) => f.replace(".pcap", "")).sort()
  : [];
const files = new Map<string, Uint8Array>();
const file = (p: string): Uint8Array => {
  let b = files.get(p);
  if (b === undefined) files.set(p, b = new Uint8Array(readFileSync(dir + p)));
  return b;
};

const schedules = new Map<string, [Direction, number][]>();

/** The pcap's order of the NBD connection's data: [direction, length] per TCP delivery. */
function schedule(name: string, c2s: Uint8Array, s2c: Uint8Array): [Direction, number][] {
  const known = schedules.get(name);
  if (known !== undefined) return known;
  const tcp = new TcpReassembler();
  const deliveries: [number, Direction, number][] = [];
  const take = (events: ReturnType<TcpReassembler["push"]>) => {
    for (const e of events) {
      if (e.type === "data") deliveries.push([e.connection, e.direction, e.bytes.length]);
    }
  };
  for (const p of readCapture(file(name + ".pcap")).packets) take(tcp.push(p));
  take(tcp.end());
  const total = (id: number, d: Direction) =>
    deliveries.filter(([c, dd]) => c === id && dd === d).reduce((n, [, , l]) => n + l, 0);
  const id = tcp.connections.findIndex((c) =>
    total(c.id, "c2s") === c2s.length && total(c.id, "s2c") === s2c.length
  );
  expect(id).toBeGreaterThanOrEqual(0);
  const order = deliveries.filter(([c]) => c === id).map(([, d, n]): [Direction, number] => [d, n]);
  schedules.set(name, order);
  return order;
}

/** Feeds the conversation in the schedule's order, each delivery cut again into pieces of `sizes`. */
function conversation(
  c2s: Uint8Array,
  s2c: Uint8Array,
  order: readonly [Direction, number][],
  sizes: readonly number[] | undefined,
  options: StreamOptions,
): unknown[] {
  const d = new ConversationDecoder(options);
  const out: ConversationEvent[] = [];
  const at = { c2s: 0, s2c: 0 };
  const bytes = { c2s, s2c };
  for (const [dir, n] of order) {
    const b = bytes[dir].subarray(at[dir], at[dir] + n);
    at[dir] += n;
    for (const p of sizes === undefined ? [b] : pieces(b, sizes)) out.push(...d.push(dir, p));
  }
  out.push(...d.end());
  return normal(out);
}

/** Events in an order that does not depend on how the two directions were interleaved. */
function byPlace(events: readonly ConversationEvent[]): unknown[] {
  const key = (e: ConversationEvent) =>
    `${e.direction}:${
      String(e.event === "frame" ? e.frameOffset : e.streamOffset).padStart(9, "0")
    }:${e.event}`;
  return normal([...events].sort((a, b) => key(a).localeCompare(key(b))));
}

for (const name of names) {
  describe(`capture ${name}`, () => {
    const c2s = file(name + ".c2s.bin");
    const s2c = file(name + ".s2c.bin");

    test("each stream decoder alone: whole, random splits and byte by byte agree", () => {
      // Byte by byte in two of the modes (the costly part on the larger captures), random splits in all.
      MODES.forEach(([, options], i) => {
        invariant(() => new ClientStreamDecoder(options), c2s, 3, 2000, i === 1 || i === 2);
        invariant(() => new ServerStreamDecoder(options), s2c, 3, 2000, i === 1 || i === 2);
      });
    });

    test("the conversation in capture order: every packet split again gives the same events", () => {
      const order = schedule(name, c2s, s2c);
      for (const [, options] of MODES.filter(([m]) => !m.startsWith("strict"))) {
        const base = conversation(c2s, s2c, order, undefined, options);
        expect(conversation(c2s, s2c, order, [1], options)).toEqual(base);
        fc.assert(
          fc.property(sizes(700), (s) => {
            expect(conversation(c2s, s2c, order, s, options)).toEqual(base);
          }),
          { numRuns: 3 },
        );
      }
    });

    test("the conversation in capture order and decodeConversation find the same events", () => {
      const order = schedule(name, c2s, s2c);
      const d = new ConversationDecoder();
      const inc: ConversationEvent[] = [];
      const at = { c2s: 0, s2c: 0 };
      const bytes = { c2s, s2c };
      for (const [dir, n] of order) {
        inc.push(...d.push(dir, bytes[dir].subarray(at[dir], at[dir] + n)));
        at[dir] += n;
      }
      inc.push(...d.end());
      expect(byPlace(inc)).toEqual(byPlace(decodeConversation(c2s, s2c)));
    });
  });
}

/** `b` with some bytes replaced, cut to `cut` bytes (or kept whole when `cut` is undefined). */
function mutate(b: Uint8Array, edits: readonly [number, number][], cut: number | undefined): Uint8Array {
  const out = Uint8Array.from(b.subarray(0, cut === undefined ? b.length : cut % (b.length + 1)));
  for (const [at, v] of edits) if (out.length > 0) out[at % out.length] = v;
  return out;
}

const edits = fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 });

describe("mutated captures", () => {
  // Malformed input is where the split used to matter (error offsets, notice lengths): the first 3000 bytes
  // of each capture's streams, with bytes replaced and cut short.
  test("each stream decoder alone: whole, random splits and byte by byte agree", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: names.length - 1 }),
        fc.boolean(),
        edits,
        fc.nat(),
        sizes(64),
        fc.integer({ min: 0, max: MODES.length - 1 }),
        (i, client, e, cut, s, m) => {
          const b = mutate(file(names[i]! + (client ? ".c2s.bin" : ".s2c.bin")).subarray(0, 3000), e, cut);
          const options = MODES[m]![1];
          const make = () => client ? new ClientStreamDecoder(options) : new ServerStreamDecoder(options);
          const whole = run(make, [b]);
          expect(run(make, pieces(b, s))).toEqual(whole);
          expect(run(make, Array.from(b, (x) => Uint8Array.of(x)))).toEqual(whole);
        },
      ),
      { numRuns: 300 },
    );
  });

  test("the conversation in capture order, with a small buffer limit too: every packet split again agrees", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: names.length - 1 }),
        edits,
        edits,
        sizes(64),
        fc.constantFrom<StreamOptions>({}, { payloadViews: true }, {
          maxBufferedBytes: 100,
          payloadViews: true,
        }),
        (i, ec, es, s, options) => {
          const c2s = mutate(file(names[i]! + ".c2s.bin"), ec, undefined);
          const s2c = mutate(file(names[i]! + ".s2c.bin"), es, undefined);
          // The pcap's first deliveries, up to 40 and about 20 KB: the negotiation and the first requests and
          // replies.
          const order: [Direction, number][] = [];
          let total = 0;
          for (const x of schedule(names[i]!, c2s, s2c)) {
            if (order.length === 40 || total > 20_000) break;
            order.push(x);
            total += x[1];
          }
          expect(conversation(c2s, s2c, order, s, options)).toEqual(
            conversation(c2s, s2c, order, undefined, options),
          );
        },
      ),
      { numRuns: 150 },
    );
  });
});

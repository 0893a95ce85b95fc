// Bad input is handled, not survived by luck: for random bytes and for mutated vectors, every decoder either
// returns a result or throws an NbdDecodeError with a byte offset inside the input; the stream and
// conversation decoders in lenient mode never throw at all. Nothing else escapes, nothing hangs.
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import {
  ClientStreamDecoder,
  decodeClientFlags,
  decodeConversation,
  type Decoded,
  decodeExportNameReply,
  decodeGreeting,
  decodeOptionReply,
  decodeOptionRequest,
  decodeReply,
  decodeReplyChunk,
  decodeRequest,
  decodeSimpleReply,
  isNbdDecodeError,
  ServerStreamDecoder,
} from "../mod.ts";
import { readCapture, reassembleCapture } from "../trace.ts";
import { fromHex, loadVectorFiles } from "./_harness.ts";

type Dec = (b: Uint8Array, o: { strict: boolean }) => Decoded<unknown>;
const decoders: Record<string, Dec> = {
  greeting: decodeGreeting,
  "client-flags": decodeClientFlags,
  "export-name-reply": (b, o) => decodeExportNameReply(b, { ...o, noZeroes: b.length % 2 === 0 }),
  "option-request": decodeOptionRequest,
  "option-reply": decodeOptionReply,
  request: (b, o) => decodeRequest(b, { ...o, extendedHeaders: b.length % 2 === 0 }),
  "simple-reply": (b, o) => decodeSimpleReply(b, { ...o, readLength: b.length % 64 }),
  "reply-chunk": (b, o) => decodeReplyChunk(b, { ...o, extendedHeaders: b.length % 3 === 0 }),
  reply: decodeReply,
};

/** Valid frames to mutate: every vector's bytes, so mutations reach deep into each layout. */
const seeds = loadVectorFiles().flatMap((f) => f.vectors).map((v) => fromHex(v.hex)).filter((b) =>
  b.length < 600
);

function mutate(b: Uint8Array, edits: [number, number][], cut: number, extra: Uint8Array): Uint8Array {
  const out = Uint8Array.from(b);
  for (const [at, v] of edits) if (out.length > 0) out[at % out.length] = v;
  const end = out.length === 0 ? 0 : cut % (out.length + 1);
  const r = new Uint8Array(end + extra.length);
  r.set(out.subarray(0, end));
  r.set(extra, end);
  return r;
}

const input = fc.oneof(
  fc.uint8Array({ maxLength: 200 }),
  fc.tuple(
    fc.integer({ min: 0, max: seeds.length - 1 }),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
    fc.nat(),
    fc.uint8Array({ maxLength: 8 }),
  ).map(([i, edits, cut, extra]) => mutate(seeds[i]!, edits, cut, extra)),
);

function onlyDecodeErrors(fn: () => unknown, length: number): void {
  try {
    fn();
  } catch (e) {
    if (!isNbdDecodeError(e)) throw e;
    expect(e.offset).toBeGreaterThanOrEqual(0);
    expect(e.offset).toBeLessThanOrEqual(length);
  }
}

describe("decoders on random and mutated bytes", () => {
  for (const [name, dec] of Object.entries(decoders)) {
    test(`${name}: only NbdDecodeError escapes, in both modes`, () => {
      fc.assert(
        fc.property(input, (b) => {
          onlyDecodeErrors(() => dec(b, { strict: true }), b.length);
          onlyDecodeErrors(() => dec(b, { strict: false }), b.length);
        }),
        { numRuns: 400 },
      );
    });
  }

  test("the stream decoders in lenient mode never throw, whatever the bytes and the split", () => {
    fc.assert(
      fc.property(input, fc.integer({ min: 1, max: 17 }), (b, step) => {
        for (const d of [new ClientStreamDecoder(), new ServerStreamDecoder()]) {
          for (let i = 0; i < b.length; i += step) d.push(b.subarray(i, i + step));
          d.end();
        }
      }),
      { numRuns: 400 },
    );
  });

  test("the conversation decoder in lenient mode never throws; in strict mode only NbdDecodeError", () => {
    fc.assert(
      fc.property(input, input, (a, b) => {
        decodeConversation(a, b);
        onlyDecodeErrors(() => decodeConversation(a, b, { strict: true }), Math.max(a.length, b.length));
      }),
      { numRuns: 400 },
    );
  });

  test("the capture readers only throw NbdDecodeError on corrupted captures", () => {
    const pcap = fromHex(
      "d4c3b2a1" + "0200" + "0400" + "00000000" + "00000000" + "00000400" + "01000000" +
        "00000000" + "00000000" + "0e000000" + "0e000000" + "ffffffffffff" + "000000000000" + "0800",
    );
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
        fc.nat(),
        (edits, cut) => {
          const b = mutate(pcap, edits, cut, new Uint8Array(0));
          onlyDecodeErrors(() => readCapture(b), b.length);
          onlyDecodeErrors(() => reassembleCapture(b), b.length);
        },
      ),
      { numRuns: 400 },
    );
  });
});

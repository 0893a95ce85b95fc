// writeHotFrameText (the command line's byte writer for requests and simple replies) against the text
// formatter: for every event it accepts, its bytes are exactly formatEventText's text, UTF-8 encoded, plus a
// blank line. And formatEventText's `trace` argument, which the command line's text uses for the rest.
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { type ConversationEvent, formatEventText, type Request } from "../mod.ts";
import { type HotTime, NO_ROOM, NOT_HOT, writeHotFrameText } from "../codec/format.ts";
import type { TraceEvent, TraceInfo, TraceInfoSlot } from "../trace.ts";

const decoder = new TextDecoder();
const U64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
/** Mostly small values (the common case, memoized and safe integers), sometimes any u64. */
const u64 = fc.oneof(
  fc.bigInt({ min: 0n, max: 2n ** 32n }),
  U64,
  fc.constantFrom(0n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 53n - 1n, 2n ** 53n),
);
const u16 = fc.oneof(fc.integer({ min: 0, max: 10 }), fc.integer({ min: 0, max: 0xffff }));
const streamNumber = fc.oneof(
  fc.integer({ min: 0, max: 200 }),
  fc.integer({ min: 0, max: 2 ** 32 }),
  // 2^31 - 1 and 2^31: either side of putNumber's int32 path.
  fc.constantFrom(9, 10, 99, 100, 999, 1000, 2 ** 31 - 1, 2 ** 31, Number.MAX_SAFE_INTEGER),
  // Not from a decoder, but formatted all the same.
  fc.double(),
  fc.constantFrom(-1, 2 ** 53, 1e21, -1.2345678901234567e-308, NaN),
);
const direction = fc.constantFrom("c2s" as const, "s2c" as const);
const connection = fc.oneof(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 100_000 }));

const request: fc.Arbitrary<Request> = fc.record({
  type: fc.constant("request" as const),
  extended: fc.boolean(),
  flags: u16,
  command: u16,
  cookie: u64,
  offset: u64,
  length: u64,
});

const requestEvent: fc.Arbitrary<ConversationEvent> = fc
  .record({ r: request, payload: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 2 ** 31 })) })
  .chain(({ r, payload }) =>
    fc.record({
      event: fc.constant("frame" as const),
      connection,
      direction,
      frameOffset: streamNumber,
      frameLength: fc.constant((r.extended ? 32 : 28) + payload),
      findings: fc.constant([]),
      frame: fc.constant(r),
    })
  );

const replyEvent: fc.Arbitrary<ConversationEvent> = fc.record(
  {
    event: fc.constant("frame" as const),
    connection,
    direction,
    frameOffset: streamNumber,
    frameLength: fc.oneof(fc.constant(16), fc.integer({ min: 16, max: 2 ** 31 })),
    findings: fc.constant([]),
    frame: fc.record({
      type: fc.constant("simple-reply" as const),
      error: fc.oneof(fc.constantFrom(0, 1, 5, 22, 108), fc.integer({ min: 0, max: 2 ** 32 - 1 })),
      cookie: u64,
    }),
    request,
  },
  { requiredKeys: ["event", "connection", "direction", "frameOffset", "frameLength", "findings", "frame"] },
);

/** What a capture adds: packets, times (sometimes across a second, sometimes odd), request links. */
const seconds = fc.oneof(
  fc.integer({ min: 1_700_000_000, max: 1_700_000_003 }),
  fc.integer({ min: 0, max: 2 ** 33 }),
);
const nanos = fc.oneof(
  fc.integer({ min: 0, max: 999_999_999 }),
  fc.constantFrom(0, 1, 999_999_999),
  // Not from a capture, but formatted all the same.
  fc.constantFrom(1_000_000_000, 2_500_000_123),
);
const packetNumber = fc.oneof(fc.integer({ min: 1, max: 100 }), fc.integer({ min: 1, max: 2 ** 32 }));
const traceInfo: fc.Arbitrary<TraceInfo> = fc
  .record({ packet: packetNumber, back: fc.integer({ min: 0, max: 3 }), s: seconds, ns: nanos })
  .chain(({ packet, back, s, ns }) =>
    fc.record({
      packet: fc.constant(packet),
      firstPacket: fc.constant(Math.max(1, packet - back)),
      seconds: fc.constant(s),
      nanoseconds: fc.constant(ns),
      client: fc.constant({ address: "10.0.0.1", port: 40000 }),
      server: fc.constant({ address: "::1", port: 10809 }),
    })
  );
const responseInfo = fc
  .record({ rs: seconds, rns: nanos, rp: packetNumber })
  .map(({ rs, rns, rp }) => ({ requestPacket: rp, requestSeconds: rs, requestNanoseconds: rns }));
const time: fc.Arbitrary<HotTime> = fc.record({
  originSeconds: fc.oneof(fc.constant(0), seconds),
  originNanoseconds: nanos,
  absolute: fc.boolean(),
});

function withTrace(e: ConversationEvent, t: TraceInfo, r: Partial<TraceInfo> | undefined): TraceEvent {
  const out: TraceEvent = { ...e, ...t };
  if (r === undefined || e.event !== "frame" || e.request === undefined) return out;
  const ns = (t.seconds! - r.requestSeconds!) * 1e9 + (t.nanoseconds! - r.requestNanoseconds!);
  return { ...out, ...r, ...(Number.isSafeInteger(ns) ? { responseNanoseconds: ns } : {}) };
}

/** A compact READ of 512 bytes at offset 0. */
function readOf512(cookie: bigint): Request {
  return { type: "request", extended: false, flags: 0, command: 0, cookie, offset: 0n, length: 512n };
}

function written(e: ConversationEvent, n: number, size = 4096, t?: HotTime): string | number {
  const b = new Uint8Array(size);
  const end = writeHotFrameText(e, n, b, 3, t);
  return end < 0 ? end : decoder.decode(b.subarray(3, end));
}

describe("writeHotFrameText", () => {
  test("a request's bytes are formatEventText's text and a blank line", () => {
    fc.assert(
      fc.property(requestEvent, fc.integer({ min: 1, max: 2 ** 40 }), (e, n) => {
        expect(written(e, n)).toBe(formatEventText(e, n) + "\n\n");
      }),
      { numRuns: 2000 },
    );
  });

  test("a simple reply's bytes, with or without its request, are formatEventText's text and a blank line", () => {
    fc.assert(
      fc.property(replyEvent, fc.integer({ min: 1, max: 2 ** 40 }), (e, n) => {
        expect(written(e, n)).toBe(formatEventText(e, n) + "\n\n");
      }),
      { numRuns: 2000 },
    );
  });

  test("with a capture's packets, times and request links, the bytes are still formatEventText's text", () => {
    fc.assert(
      fc.property(
        fc.oneof(requestEvent, replyEvent),
        traceInfo,
        fc.option(responseInfo, { nil: undefined }),
        time,
        fc.integer({ min: 1, max: 2 ** 40 }),
        (e, t, r, hot, n) => {
          const ev = withTrace(e, t, r);
          const options = hot.absolute
            ? { time: "absolute" as const }
            : { originSeconds: hot.originSeconds, originNanoseconds: hot.originNanoseconds };
          expect(written(ev, n, 4096, hot)).toBe(formatEventText(ev, n, options) + "\n\n");
        },
      ),
      { numRuns: 3000 },
    );
  });

  test("the exact text of a READ reply of a capture, two packets after its request", () => {
    const read = readOf512(7n);
    const e: TraceEvent = {
      event: "frame",
      connection: 0,
      direction: "s2c",
      frameOffset: 16,
      frameLength: 528,
      findings: [],
      frame: { type: "simple-reply", error: 0, cookie: 7n },
      request: read,
      packet: 9,
      firstPacket: 8,
      seconds: 101,
      nanoseconds: 300_500,
      requestPacket: 7,
      requestSeconds: 101,
      requestNanoseconds: 100,
      responseNanoseconds: 300_400,
    };
    const text =
      "Frame 6 (packets 8-9, 1.000300500 s): connection 0, s2c, offset 16, 528 bytes: simple-reply\n" +
      "    Magic: 0x67446698 (NBD_SIMPLE_REPLY_MAGIC)\n" +
      "    Error: 0 (success)\n" +
      "    Cookie: 7\n" +
      "    Data: 512 bytes\n" +
      "    [Request: NBD_CMD_READ, offset 0, length 512]\n" +
      "    [Request in packet 7]\n" +
      "    [Time since request: 0.000300400 s]\n\n";
    expect(written(e, 6, 4096, { originSeconds: 100, originNanoseconds: 0, absolute: false })).toBe(text);
    expect(formatEventText(e, 6, { originSeconds: 100 }) + "\n\n").toBe(text);
    expect(written(e, 6, 4096, { originSeconds: 0, originNanoseconds: 0, absolute: true })).toContain(
      "Frame 6 (packets 8-9, 1970-01-01T00:01:41.000300500Z): connection 0",
    );
  });

  test("the exact text of a WRITE and its reply", () => {
    const write: Request = {
      type: "request",
      extended: false,
      flags: 1,
      command: 1,
      cookie: 7n,
      offset: 4096n,
      length: 4096n,
    };
    const e: ConversationEvent = {
      event: "frame",
      connection: 2,
      direction: "c2s",
      frameOffset: 123456789,
      frameLength: 28 + 4096,
      findings: [],
      frame: write,
    };
    expect(written(e, 10)).toBe(
      "Frame 10: connection 2, c2s, offset 123456789, 4124 bytes: request\n" +
        "    Magic: 0x25609513 (NBD_REQUEST_MAGIC)\n" +
        "    Command flags: 0x0001 (NBD_CMD_FLAG_FUA)\n" +
        "    Type: NBD_CMD_WRITE (1)\n" +
        "    Cookie: 7\n" +
        "    Offset: 4096\n" +
        "    Length: 4096\n" +
        "    Data: 4096 bytes\n\n",
    );
    const reply: ConversationEvent = {
      event: "frame",
      connection: 2,
      direction: "s2c",
      frameOffset: 16,
      frameLength: 16,
      findings: [],
      frame: { type: "simple-reply", error: 5, cookie: 18446744073709551615n },
      request: write,
    };
    expect(written(reply, 11)).toBe(
      "Frame 11: connection 2, s2c, offset 16, 16 bytes: simple-reply\n" +
        "    Magic: 0x67446698 (NBD_SIMPLE_REPLY_MAGIC)\n" +
        "    Error: NBD_EIO (5)\n" +
        "    Cookie: 18446744073709551615\n" +
        "    [Request: NBD_CMD_WRITE, offset 4096, length 4096]\n\n",
    );
  });

  test("other events, frames with findings and BLOCK_STATUS requests are left to formatEventText", () => {
    const base = { event: "frame" as const, connection: 0, direction: "c2s" as const, frameOffset: 0 };
    const r: Request = {
      type: "request",
      extended: false,
      flags: 0,
      command: 3,
      cookie: 1n,
      offset: 0n,
      length: 0n,
    };
    const finding = { code: "bad-length" as const, offset: 0, rule: "x", message: "m" };
    expect(written({ ...base, frameLength: 28, findings: [finding], frame: r }, 1)).toBe(NOT_HOT);
    expect(
      written({
        ...base,
        frameLength: 40,
        findings: [],
        frame: { ...r, command: 7, blockStatus: { effectLength: 1n, contextIds: [1] } },
      }, 1),
    ).toBe(NOT_HOT);
    expect(written({ ...base, frameLength: 4, findings: [], frame: { type: "client-flags", flags: 1 } }, 1))
      .toBe(
        NOT_HOT,
      );
    expect(
      written({
        event: "notice",
        notice: "truncated",
        connection: 0,
        direction: "s2c",
        streamOffset: 0,
        length: 3,
        findings: [],
      }, 1),
    ).toBe(NOT_HOT);
  });

  test("cookies, offsets and lengths beyond 64 bits are left to formatEventText", () => {
    const base = { event: "frame" as const, connection: 0, frameOffset: 0, findings: [] };
    const r: Request = {
      type: "request",
      extended: false,
      flags: 0,
      command: 1,
      cookie: 1n,
      offset: 0n,
      length: 0n,
    };
    for (const v of [-1n, 2n ** 64n, 10n ** 300n]) {
      for (const field of ["cookie", "offset", "length"] as const) {
        const request = { ...r, [field]: v };
        expect(written({ ...base, direction: "c2s", frameLength: 28, frame: request }, 1)).toBe(NOT_HOT);
        const reply = { type: "simple-reply" as const, error: 0, cookie: field === "cookie" ? v : 1n };
        expect(written({ ...base, direction: "s2c", frameLength: 16, frame: reply, request }, 1)).toBe(
          NOT_HOT,
        );
      }
    }
    // The largest u64 is written.
    const max = { ...r, cookie: 2n ** 64n - 1n, offset: 2n ** 64n - 1n, length: 2n ** 64n - 1n };
    const e: ConversationEvent = { ...base, direction: "c2s", frameLength: 28, frame: max };
    expect(written(e, Number.MAX_SAFE_INTEGER)).toBe(formatEventText(e, Number.MAX_SAFE_INTEGER) + "\n\n");
  });

  test("nothing is written when the text might not fit", () => {
    const e: ConversationEvent = {
      event: "frame",
      connection: 0,
      direction: "s2c",
      frameOffset: 0,
      frameLength: 16,
      findings: [],
      frame: { type: "simple-reply", error: 0, cookie: 1n },
    };
    const b = new Uint8Array(100).fill(0xee);
    expect(writeHotFrameText(e, 1, b, 0)).toBe(NO_ROOM);
    expect(b.every((x) => x === 0xee)).toBe(true);
    // With room it fits, and ends where the text ends.
    const big = new Uint8Array(1000);
    const end = writeHotFrameText(e, 1, big, 0);
    expect(end).toBe(new TextEncoder().encode(formatEventText(e, 1) + "\n\n").length);
  });
});

describe("formatEventText's trace argument (a detached dissector's info slot)", () => {
  /** The slot as a detached CaptureDissector fills it: every key, undefined where the event has none. */
  function slotOf(t: Partial<TraceInfo>): TraceInfoSlot {
    return {
      packet: t.packet,
      firstPacket: t.firstPacket,
      seconds: t.seconds,
      nanoseconds: t.nanoseconds,
      client: t.client,
      server: t.server,
      requestPacket: t.requestPacket,
      requestSeconds: t.requestSeconds,
      requestNanoseconds: t.requestNanoseconds,
      responseNanoseconds: t.responseNanoseconds,
    };
  }

  test("the fields read from the slot give the text of the event that carries them", () => {
    fc.assert(
      fc.property(
        fc.oneof(requestEvent, replyEvent),
        traceInfo,
        fc.option(responseInfo, { nil: undefined }),
        fc.integer({ min: 1, max: 2 ** 40 }),
        (e, t, r, n) => {
          const attached = withTrace(e, t, r);
          const options = { originSeconds: 1_700_000_000, originNanoseconds: 5 };
          const text = formatEventText(attached, n, options);
          expect(text).toContain(` (packet`);
          // The bare event (as the decoder made it) with the slot: the same text, packets and times included.
          expect(formatEventText(e, n, options, slotOf(attached))).toBe(text);
        },
      ),
      { numRuns: 1000 },
    );
  });

  test("a structured reply chunk and a notice read their packets, times and request link from the slot", () => {
    const read = readOf512(9n);
    const chunk: ConversationEvent = {
      event: "frame",
      connection: 1,
      direction: "s2c",
      frameOffset: 40,
      frameLength: 20,
      findings: [],
      frame: {
        type: "reply-chunk",
        extended: false,
        flags: 1,
        chunkType: 0,
        cookie: 9n,
        payload: { kind: "none" },
      },
      request: read,
    };
    const slot = slotOf({
      packet: 12,
      firstPacket: 12,
      seconds: 100,
      nanoseconds: 7_000,
      requestPacket: 10,
      requestSeconds: 100,
      requestNanoseconds: 2_000,
      responseNanoseconds: 5_000,
    });
    const text = formatEventText(chunk, 3, { originSeconds: 100 }, slot);
    expect(text.split("\n")[0]).toBe(
      "Frame 3 (packet 12, 0.000007000 s): connection 1, s2c, offset 40, 20 bytes: reply-chunk",
    );
    expect(text).toContain(
      "\n    [Request: NBD_CMD_READ, offset 0, length 512]\n    [Request in packet 10]\n",
    );
    expect(text.endsWith("    [Time since request: 0.000005000 s]")).toBe(true);
    // Without the slot the same event has no packets or times.
    expect(formatEventText(chunk, 3, { originSeconds: 100 })).not.toContain("packet");

    const notice: ConversationEvent = {
      event: "notice",
      connection: 1,
      direction: "c2s",
      streamOffset: 77,
      length: 3,
      notice: "truncated",
      findings: [],
    };
    expect(
      formatEventText(
        notice,
        4,
        { originSeconds: 100 },
        slotOf({ packet: 13, firstPacket: 13, seconds: 101, nanoseconds: 0 }),
      ).split("\n")[0],
    )
      .toBe("Notice 4 (packet 13, 1.000000000 s): connection 1, c2s, offset 77, 3 bytes: truncated");
  });
});

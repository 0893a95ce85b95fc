// Regressions of an outside fuzz campaign (issue 15, section 1): the stream and conversation decoders give
// the same events, findings, offsets and lengths whatever the split of the bytes, keep to maxBufferedBytes
// when one direction waits for the other, and agree between whole and incremental decoding.
import { describe, expect, test } from "vitest";
import {
  ClientStreamDecoder,
  Command,
  ConversationDecoder,
  type ConversationEvent,
  decodeConversation,
  type Direction,
  isNbdDecodeError,
  type Request,
  ServerStreamDecoder,
  type StreamEvent,
  type StreamOptions,
} from "../mod.ts";
import { SessionState } from "../codec/_stream_impl.ts";
import { normal } from "./_events.ts";
import { fromHex, toHex } from "./_harness.ts";

type Feeder = { push(chunk: Uint8Array): StreamEvent[]; end(): StreamEvent[] };

function feed(make: () => Feeder, parts: Uint8Array[]): StreamEvent[] {
  const d = make();
  const out: StreamEvent[] = [];
  for (const p of parts) out.push(...d.push(p));
  out.push(...d.end());
  return out;
}

function cuts(b: Uint8Array, at: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let from = 0;
  for (const x of [...at, b.length]) {
    out.push(b.subarray(from, x));
    from = x;
  }
  return out;
}

const bytewise = (b: Uint8Array) => Array.from(b, (x) => Uint8Array.of(x));

/** The error a strict decoder throws for these parts, as comparable fields. */
function thrown(make: () => Feeder, parts: Uint8Array[]): unknown {
  try {
    feed(make, parts);
  } catch (e) {
    if (!isNbdDecodeError(e)) throw e;
    return { code: e.code, offset: e.offset, rule: e.rule };
  }
  return undefined;
}

const READ_1 = {
  type: "request",
  extended: false,
  flags: 0,
  command: Command.READ,
  cookie: 1n,
  offset: 0n,
  length: 16n,
} as const;

/** An OFFSET_DATA chunk for cookie 1 with 16 bytes of data, reserved reply flag 0x0002 set. */
const OFFSET_DATA_RESERVED = fromHex(
  "668e33ef" + "0003" + "0001" + "0000000000000001" + "00000018" + "0000000000000000" +
    "000102030405060708090a0b0c0d0e0f",
);

describe("findings do not depend on the split (payloadViews)", () => {
  const make = (extendedHeaders: boolean, strict = false) => () => {
    const d = new ServerStreamDecoder({
      payloadViews: true,
      strict,
      state: { phase: "transmission", style: "newstyle", structuredReplies: true, extendedHeaders },
    });
    d.noteRequest(READ_1);
    return d;
  };

  test("an OFFSET_DATA chunk spanning pushes keeps its header findings (reply-header-style)", () => {
    const whole = feed(make(true), [OFFSET_DATA_RESERVED]);
    const rules = whole.flatMap((e) => e.findings.map((f) => `${f.rule}@${f.offset}`));
    expect(rules).toContain("reply-header-style@0");
    for (const at of [[21], [28], [30], [20, 33]]) {
      expect(normal(feed(make(true), cuts(OFFSET_DATA_RESERVED, at)))).toEqual(normal(whole));
    }
    expect(normal(feed(make(true), bytewise(OFFSET_DATA_RESERVED)))).toEqual(normal(whole));
  });

  test("the unknown reply flag 0x0002 is ignored (clients MUST ignore unrecognized flags) whatever the split", () => {
    const whole = feed(make(false), [OFFSET_DATA_RESERVED]);
    expect(whole.flatMap((e) => e.findings)).toEqual([]);
    expect(normal(feed(make(false), cuts(OFFSET_DATA_RESERVED, [30])))).toEqual(normal(whole));
    expect(normal(feed(make(false), bytewise(OFFSET_DATA_RESERVED)))).toEqual(normal(whole));
  });

  test("an OFFSET_DATA chunk spanning pushes keeps reply-header-style in an extended-headers session", () => {
    const whole = feed(make(true), [OFFSET_DATA_RESERVED]);
    expect(whole.flatMap((e) => e.findings.map((f) => f.rule))).toContain("reply-header-style");
    expect(normal(feed(make(true), cuts(OFFSET_DATA_RESERVED, [30])))).toEqual(normal(whole));
  });

  test("strict mode throws for the chunk whatever the split", () => {
    const whole = thrown(make(true, true), [OFFSET_DATA_RESERVED]);
    expect(whole).toMatchObject({ rule: "reply-header-style", offset: 0 });
    expect(thrown(make(true, true), cuts(OFFSET_DATA_RESERVED, [30]))).toEqual(whole);
  });
});

/** A READ request, then a request with an undefined command flag (bit 15) at stream offset 28. */
const TWO_REQUESTS = fromHex(
  "25609513" + "0000" + "0000" + "0000000000000001" + "0000000000000000" + "00001000" +
    "25609513" + "8000" + "0000" + "0000000000000002" + "0000000000000000" + "00001000",
);

describe("strict errors count offsets from the stream start", () => {
  const client = (options: StreamOptions) => () =>
    new ClientStreamDecoder({ ...options, state: { phase: "transmission" } });

  test("a frame rule broken in a frame that spans pushes", () => {
    const strict = client({ strict: true });
    const whole = thrown(strict, [TWO_REQUESTS]);
    expect(whole).toMatchObject({ code: "reserved-bits", offset: 32 });
    expect(thrown(strict, cuts(TWO_REQUESTS, [30]))).toEqual(whole);
    expect(thrown(strict, cuts(TWO_REQUESTS, [28]))).toEqual(whole);
    expect(thrown(strict, bytewise(TWO_REQUESTS))).toEqual(whole);
  });

  test("the lenient finding sits at the same offset", () => {
    const lenient = client({});
    const whole = feed(lenient, [TWO_REQUESTS]);
    expect(whole[1]?.findings[0]).toMatchObject({ code: "reserved-bits", offset: 32 });
    expect(normal(feed(lenient, cuts(TWO_REQUESTS, [30])))).toEqual(normal(whole));
  });

  test("a bad magic after a frame, in both modes", () => {
    const bytes = fromHex(toHex(TWO_REQUESTS.subarray(0, 28)) + "deadbeef" + "00".repeat(24));
    const whole = thrown(client({ strict: true }), [bytes]);
    expect(whole).toMatchObject({ code: "bad-magic", offset: 28 });
    expect(thrown(client({ strict: true }), cuts(bytes, [30]))).toEqual(whole);
    expect(thrown(client({ strict: true }), bytewise(bytes))).toEqual(whole);
    const lenient = feed(client({}), cuts(bytes, [30]));
    expect(lenient[1]).toMatchObject({ event: "notice", notice: "undecodable", streamOffset: 28 });
    expect(lenient[1]?.findings[0]).toMatchObject({ code: "bad-magic", offset: 28 });
  });

  test("a frame decoder's error inside a chunk that holds an earlier frame", () => {
    // An option request announcing more than the string limit, after the client flags, in one chunk.
    const bytes = fromHex("00000001" + "49484156454f5054" + "00000001" + "00000008" + "00".repeat(8));
    const make = (strict: boolean) => () => new ClientStreamDecoder({ strict, maxPayloadLength: 4 });
    const whole = thrown(make(true), [bytes]);
    expect(whole).toMatchObject({ code: "limit-exceeded", offset: 16 });
    expect(thrown(make(true), cuts(bytes, [6]))).toEqual(whole);
    const lenient = feed(make(false), [bytes]);
    expect(lenient[1]?.findings[0]).toMatchObject({ code: "limit-exceeded", offset: 16 });
    expect(normal(feed(make(false), cuts(bytes, [6])))).toEqual(normal(lenient));
  });
});

describe("undecodable and tls notices do not depend on the split", () => {
  test("undecodable bytes give one notice of the same length in any split", () => {
    const bytes = fromHex("deadbeef".repeat(10));
    const make = () => new ClientStreamDecoder({ state: { phase: "transmission" } });
    const whole = feed(make, [bytes]);
    expect(whole).toHaveLength(1);
    expect(whole[0]).toMatchObject({ event: "notice", notice: "undecodable", streamOffset: 0 });
    for (const at of [[4], [5, 17], [39]]) expect(normal(feed(make, cuts(bytes, at)))).toEqual(normal(whole));
    expect(normal(feed(make, bytewise(bytes)))).toEqual(normal(whole));
  });

  test("the tls notice after an acknowledged STARTTLS has the same length in any split", () => {
    const c2s = fromHex(
      "00000001" + "49484156454f5054" + "00000005" + "00000000" + "1603010200" + "01".repeat(40),
    );
    const s2c = fromHex(
      "4e42444d41474943" + "49484156454f5054" + "0001" + "0003e889045565a9" + "00000005" + "00000001" +
        "00000000" + "160303007a" + "02".repeat(30),
    );
    const run = (cs: Uint8Array[], ss: Uint8Array[]) => {
      const d = new ConversationDecoder();
      const out: ConversationEvent[] = [];
      for (const s of ss.slice(0, 1)) out.push(...d.push("s2c", s));
      for (const c of cs) out.push(...d.push("c2s", c));
      for (const s of ss.slice(1)) out.push(...d.push("s2c", s));
      out.push(...d.end());
      return out;
    };
    const base = run([c2s], [s2c.subarray(0, 18), s2c.subarray(18)]);
    const tls = base.filter((e) => e.event === "notice");
    expect(tls.map((e) => e.event === "notice" && `${e.direction} ${e.notice} @${e.streamOffset}`)).toEqual([
      "c2s tls @20",
      "s2c tls @38",
    ]);
    expect(normal(run(cuts(c2s, [20, 22]), [s2c.subarray(0, 18), ...cuts(s2c.subarray(18), [20, 21])])))
      .toEqual(normal(base));
    expect(normal(run(bytewise(c2s), [s2c.subarray(0, 18), ...bytewise(s2c.subarray(18))])))
      .toEqual(normal(base));
  });
});

describe("whole and incremental decoding agree", () => {
  test("after a STARTTLS ACK nobody asked for, the client's next bytes are TLS both ways", () => {
    const greeting = fromHex("4e42444d41474943" + "49484156454f5054" + "0001");
    const flags = fromHex("00000001");
    const ack = fromHex("0003e889045565a9" + "00000005" + "00000001" + "00000000");
    const hello = fromHex("1603010200"); // fewer than 16 bytes: not yet told apart from an option
    const whole = decodeConversation(
      fromHex(toHex(flags) + toHex(hello)),
      fromHex(toHex(greeting) + toHex(ack)),
    );
    const d = new ConversationDecoder();
    const inc = [
      ...d.push("s2c", greeting),
      ...d.push("c2s", flags),
      ...d.push("s2c", ack),
      ...d.push("c2s", hello),
      ...d.end(),
    ];
    const kinds = (es: ConversationEvent[]) =>
      es.map((e) => `${e.direction} ${e.event === "frame" ? e.frame.type : e.notice}`).sort();
    expect(kinds(whole)).toContain("c2s tls");
    expect(kinds(inc)).toEqual(kinds(whole));
    const byPlace = (es: ConversationEvent[]) =>
      normal(es).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
    expect(byPlace(inc)).toEqual(byPlace(whole));
  });
});

test("an extended OFFSET_DATA chunk spanning pushes keeps its header findings", () => {
  // Extended header (offset field 0, length 24 as 8 bytes), reserved flag 0x0002 set.
  const head = fromHex(
    "6e8a278c" + "0003" + "0001" + "0000000000000001" + "0000000000000000" + "0000000000000018" +
      "0000000000000000",
  );
  const bytes = fromHex(toHex(head) + "00".repeat(16));
  const make = () => {
    const d = new ServerStreamDecoder({
      payloadViews: true,
      state: { phase: "transmission", style: "newstyle", structuredReplies: true, extendedHeaders: false },
    });
    d.noteRequest(READ_1);
    return d;
  };
  // An extended chunk where only structured replies were negotiated: the header style is the finding.
  const whole = feed(make, [bytes]);
  expect(whole[0]?.findings.map((f) => `${f.rule}@${f.offset}`)).toEqual(["reply-header-style@0"]);
  expect(normal(feed(make, cuts(bytes, [45])))).toEqual(normal(whole));
});

describe("maxBufferedBytes holds when one side waits for the other", () => {
  const greeting = fromHex("4e42444d41474943" + "49484156454f5054" + "0003");
  /** A NONE chunk with DONE for cookie `i`: framed by itself, matched by cookie. */
  const none = (i: number) =>
    fromHex("668e33ef" + "0001" + "0000" + i.toString(16).padStart(16, "0") + "00000000");
  const flagsAndGo = fromHex(
    "00000003" + "49484156454f5054" + "00000007" + "00000006" + "00000000" + "0000",
  );
  const goAck = fromHex("0003e889045565a9" + "00000007" + "00000001" + "00000000");

  /** A connection whose client packets stop after the negotiation: only server replies follow. */
  function oneSided(limit: number, replies: number, chunk: number, strict = false) {
    const d = new ConversationDecoder({
      maxBufferedBytes: limit,
      strict,
      state: { structuredReplies: true },
    });
    const out: ConversationEvent[] = [];
    const during: number[] = [];
    out.push(...d.push("s2c", greeting), ...d.push("c2s", flagsAndGo), ...d.push("s2c", goAck));
    const s2c = fromHex(Array.from({ length: replies }, (_, i) => toHex(none(i + 1))).join(""));
    for (
      const part of cuts(
        s2c,
        Array.from({ length: Math.ceil(s2c.length / chunk) - 1 }, (_, i) => (i + 1) * chunk),
      )
    ) {
      const got = d.push("s2c", part);
      out.push(...got);
      during.push(got.length);
    }
    const atEnd = d.end();
    out.push(...atEnd);
    return { out, during, atEnd };
  }

  test("server frames beyond the limit are decoded without their requests, not held", () => {
    const { out, atEnd } = oneSided(1024, 500, 100);
    const chunks = out.filter((e) => e.event === "frame" && e.frame.type === "reply-chunk");
    expect(chunks).toHaveLength(500);
    // At most the limit's worth of frames is left for end().
    expect(atEnd.length).toBeLessThanOrEqual(Math.ceil(1024 / 20));
    expect(atEnd.length).toBeGreaterThan(0);
    // Every one is reported as unmatched; the first decoded so says why it was not held.
    const first = chunks[0]!;
    expect(first.findings.map((f) => f.rule)).toEqual(["buffer-limit-one-sided", "reply-unknown-cookie"]);
    expect(first.findings[0]).toMatchObject({ code: "limit-exceeded", offset: 38 });
    expect(chunks.slice(1).every((e) => e.findings.map((f) => f.rule).join() === "reply-unknown-cookie"))
      .toBe(
        true,
      );
  });

  test("a new run of frames decoded without the client, after it caught up, is reported again", () => {
    const d = new ConversationDecoder({ maxBufferedBytes: 100, state: { structuredReplies: true } });
    const out: ConversationEvent[] = [];
    out.push(...d.push("s2c", greeting), ...d.push("c2s", flagsAndGo), ...d.push("s2c", goAck));
    for (let i = 1; i <= 10; i++) out.push(...d.push("s2c", none(i)));
    const read = fromHex("25609513" + "0000" + "0000" + "000000000000000b" + "0000000000000000" + "00000000");
    out.push(...d.push("c2s", read), ...d.push("s2c", none(11)));
    for (let i = 12; i <= 21; i++) out.push(...d.push("s2c", none(i)));
    out.push(...d.end());
    const marked = out.filter((e) => e.findings.some((f) => f.rule === "buffer-limit-one-sided"));
    expect(marked.map((e) => e.event === "frame" && e.frameOffset)).toEqual([38, 38 + 11 * 20]);
    const matched = out.find((e) => e.event === "frame" && e.frameOffset === 38 + 10 * 20);
    expect(matched?.event === "frame" && matched.request?.cookie).toBe(11n);
  });

  test("the end of the handshake is seen without the client, so the limit does not change the findings", () => {
    // Found by the split-invariance property: with no option pending, the server side waited for the
    // client's next option even when its bytes were a reply; over the limit it was decoded without the
    // client, with a finding in one split and none in another.
    const unknownOption = fromHex("00000001" + "49484156454f5054" + "01000007" + "00000000");
    const unsupported = fromHex("0003e889045565a9" + "01000007" + "80000001" + "00000000");
    // Since payload views are held to maxBufferedBytes too, a frame above the limit is refused: the READ
    // reply fits (80 bytes), two unmatched replies after it take the server side above the limit.
    const read = fromHex("25609513" + "0000" + "0000" + "0000000000000001" + "0000000000000000" + "00000040");
    const reply = fromHex(
      "67446698" + "00000000" + "0000000000000001" + "5a".repeat(64) +
        "67446698" + "00000000" + "0000000000000002" + "67446698" + "00000000" + "0000000000000003",
    );
    const run = (parts: Uint8Array[]) => {
      const d = new ConversationDecoder({ maxBufferedBytes: 100, payloadViews: true });
      const out = [
        ...d.push("s2c", greeting),
        ...d.push("c2s", unknownOption),
        ...d.push("s2c", unsupported),
      ];
      out.push(...d.push("c2s", read));
      for (const p of parts) out.push(...d.push("s2c", p));
      return normal([...out, ...d.end()]);
    };
    const whole = run([reply]);
    type Seen = {
      direction: string;
      frameOffset?: number;
      frame: { type: string };
      findings: unknown[];
      request?: unknown;
    };
    const first = (whole as Seen[]).find((e) => e.frameOffset === 38 && e.direction === "s2c")!;
    expect(first.frame.type).toBe("simple-reply");
    expect(first.findings).toEqual([]);
    expect(first.request).toBeDefined();
    expect(run(bytewise(reply))).toEqual(whole);
    expect(run(cuts(reply, [101]))).toEqual(whole);
  });

  test("which frames are decoded early does not depend on the split", () => {
    const norm = (n: number) => normal(oneSided(1000, 200, n).out);
    const base = norm(4000);
    expect(norm(20)).toEqual(base);
    expect(norm(7)).toEqual(base);
    expect(norm(1)).toEqual(base);
  });

  test("strict mode refuses to hold more than the limit", () => {
    expect(() => oneSided(1024, 500, 100, true)).toThrowError(
      expect.objectContaining({ code: "limit-exceeded", rule: "buffer-limit-one-sided", offset: 38 }),
    );
  });

  test("unsolicited option replies are not held beyond the limit either", () => {
    const d = new ConversationDecoder({ maxBufferedBytes: 256 });
    const out: ConversationEvent[] = [...d.push("s2c", greeting)];
    // ACKs to NBD_OPT_LIST: final replies that change nothing.
    const listAck = fromHex("0003e889045565a9" + "00000003" + "00000001" + "00000000");
    for (let i = 0; i < 100; i++) out.push(...d.push("s2c", listAck));
    expect(out.filter((e) => e.event === "frame").length).toBeGreaterThanOrEqual(100 - 256 / 20);
    expect(out[1]?.findings.map((f) => f.rule)).toEqual([
      "buffer-limit-one-sided",
      "option-reply-unsolicited",
    ]);
  });
});

test("a strict error in the first request after the options counts from the stream start", () => {
  // Client flags, then an extended request although extended headers were not negotiated: the decoder
  // passes from options to transmission and decodes the request in the same step.
  const bytes = fromHex(
    "00000001" + "21e41c71" + "0000" + "0000" + "0000000000000001" + "0000000000000000" + "0000000000001000",
  );
  const make = () => new ClientStreamDecoder({ strict: true, state: { style: "newstyle" } });
  const whole = thrown(make, [bytes]);
  expect(whole).toMatchObject({ rule: "request-header-style", offset: 4 });
  expect(thrown(make, bytewise(bytes))).toEqual(whole);
});

test("capture order: the events of both sides come in the same order whatever the split", () => {
  // The server's replies arrive before the client's options (a capture can show them so): each reply
  // decodes right after the option it answers, whether the options come in one chunk or byte by byte.
  const s2c = fromHex(
    "4e42444d41474943" + "49484156454f5054" + "0003" +
      "0003e889045565a9" + "00000008" + "00000001" + "00000000" +
      "0003e889045565a9" + "00000003" + "00000001" + "00000000",
  );
  const c2s = fromHex(
    "00000003" + "49484156454f5054" + "00000008" + "00000000" + "49484156454f5054" + "00000003" + "00000000",
  );
  const run = (parts: Uint8Array[]) => {
    const d = new ConversationDecoder();
    const out = [...d.push("s2c", s2c)];
    for (const p of parts) out.push(...d.push("c2s", p));
    return [...out, ...d.end()];
  };
  const whole = run([c2s]);
  expect(whole.map((e) => `${e.direction} ${e.event === "frame" ? e.frame.type : e.notice}`)).toEqual([
    "s2c newstyle-greeting",
    "c2s client-flags",
    "c2s option-request",
    "s2c option-reply",
    "c2s option-request",
    "s2c option-reply",
  ]);
  expect(normal(run(bytewise(c2s)))).toEqual(normal(whole));
  expect(normal(run(cuts(c2s, [10])))).toEqual(normal(whole));
});

test("a capture gap in the server side keeps the frames that waited for the client", () => {
  // An option reply whose option the capture has not shown yet waits for the client side; a gap after it
  // ends the server side, but the whole reply was there and is decoded, not dropped.
  const d = new ConversationDecoder();
  const greeting = fromHex("4e42444d41474943" + "49484156454f5054" + "0003");
  const listAck = fromHex("0003e889045565a9" + "00000003" + "00000001" + "00000000");
  const out = [
    ...d.push("s2c", greeting),
    ...d.push("s2c", listAck),
    ...d.push("s2c", listAck.subarray(0, 5)),
  ];
  out.push(...d.gap("s2c", 100), ...d.end());
  expect(
    out.map((e) =>
      `${e.event === "frame" ? e.frame.type + "@" + e.frameOffset : e.notice + "@" + e.streamOffset}`
    ),
  )
    .toEqual(["newstyle-greeting@0", "option-reply@18", "undecodable@38"]);
  expect(out[1]?.findings.map((f) => f.rule)).toEqual(["option-reply-unsolicited"]);
  expect(out[2]).toMatchObject({ length: 5 });
  expect(out[2]?.findings[0]).toMatchObject({ rule: "capture-gap", offset: 43 });
});

describe("a reply magic where an option reply may be expected: what the client sent decides", () => {
  // Found by the fuzz campaign on the merged code (M.1): with no option pending, the whole decoding took a
  // server reply magic for the end of the handshake before looking at the client's next bytes (another
  // option), and decoded it as a transmission chunk; pushed in capture order (that option first), the same
  // bytes were an undecodable option reply. The handshake ends only when the client ends it (GO, EXPORT_NAME,
  // or its first request): while its next bytes are an option, the server's next bytes answer that option.
  const greeting = fromHex("4e42444d41474943" + "49484156454f5054" + "0003");
  const flagsAndList = fromHex("00000003" + "49484156454f5054" + "00000003" + "00000000");
  const list = fromHex("49484156454f5054" + "00000003" + "00000000");
  const listAck = fromHex("0003e889045565a9" + "00000003" + "00000001" + "00000000");
  // A NONE chunk with DONE for cookie 1, compact (20 bytes) and extended (the first 20 of its 32 bytes).
  const compact = fromHex("668e33ef" + "0001" + "0000" + "0000000000000001" + "00000000");
  const extendedStart = fromHex("6e8a278c" + "0001" + "0000" + "0000000000000001" + "00000000");
  const read = fromHex("25609513" + "0000" + "0000" + "0000000000000001" + "0000000000000000" + "00000200");
  const cat = (...parts: Uint8Array[]) => fromHex(parts.map(toHex).join(""));

  /** The server side's events: whole, and pushed with the chunk before and after the client's last bytes. */
  function serverSide(after: Uint8Array, chunk: Uint8Array, cut: (b: Uint8Array) => Uint8Array[]) {
    const s2c = (es: ConversationEvent[]) => normal(es.filter((e) => e.direction === "s2c"));
    const whole = s2c(decodeConversation(cat(flagsAndList, after), cat(greeting, listAck, chunk)));
    const pushed = (chunkFirst: boolean) => {
      const d = new ConversationDecoder();
      const out = [...d.push("s2c", greeting), ...d.push("c2s", flagsAndList), ...d.push("s2c", listAck)];
      const steps: [Direction, Uint8Array][] = [["c2s", after], ["s2c", chunk]];
      if (chunkFirst) steps.reverse();
      for (const [dir, b] of steps) for (const p of cut(b)) out.push(...d.push(dir, p));
      return s2c([...out, ...d.end()]);
    };
    return { whole, clientFirst: pushed(false), chunkFirst: pushed(true) };
  }

  for (const [name, chunk] of [["compact", compact], ["extended", extendedStart]] as const) {
    test(`another option from the client: the ${name} chunk magic is an undecodable option reply`, () => {
      for (const cut of [(b: Uint8Array) => [b], bytewise]) {
        const { whole, clientFirst, chunkFirst } = serverSide(list, chunk, cut);
        expect(whole.at(-1)).toMatchObject({
          event: "notice",
          notice: "undecodable",
          streamOffset: 38,
          findings: [{
            code: "bad-magic",
            offset: 38,
            rule: "magic",
            message: `Cannot decode option reply: magic is 0x${toHex(chunk.subarray(0, 8))}, expected ` +
              "0x0003e889045565a9",
          }],
        });
        expect(whole).toHaveLength(3);
        expect(clientFirst).toEqual(whole);
        expect(chunkFirst).toEqual(whole);
      }
    });
  }

  test("a request from the client: the chunk answers it in transmission", () => {
    for (const cut of [(b: Uint8Array) => [b], bytewise]) {
      const { whole, clientFirst, chunkFirst } = serverSide(read, compact, cut);
      expect(whole.at(-1)).toMatchObject({
        event: "frame",
        frameOffset: 38,
        frameLength: 20,
        frame: { type: "reply-chunk", cookie: "1", chunkType: 0, flags: 1 },
        request: { command: Command.READ, cookie: "1", length: "512" },
      });
      expect(clientFirst).toEqual(whole);
      expect(chunkFirst).toEqual(whole);
    }
  });

  test("nothing more from the client: the chunk still ends the handshake, unmatched", () => {
    for (const cut of [(b: Uint8Array) => [b], bytewise]) {
      const { whole, clientFirst, chunkFirst } = serverSide(new Uint8Array(0), compact, cut);
      const last = whole.at(-1) as { frame: { type: string }; findings: { rule: string }[] };
      expect(last.frame.type).toBe("reply-chunk");
      expect(last.findings.map((f) => f.rule)).toContain("reply-unknown-cookie");
      expect(clientFirst).toEqual(whole);
      expect(chunkFirst).toEqual(whole);
    }
  });
});

describe("requests and options waiting for replies are bounded by maxBufferedBytes (outstanding-limit)", () => {
  // Each held request or option is charged 256 bytes plus its payload (HELD_ENTRY_CHARGE): 1024 holds 4
  // FLUSH requests. Issue 15 section 1, 15.1.1b: with the server silent the tables grew without limit.
  const LIMIT = 1024;
  const TRANSMISSION = { phase: "transmission", style: "newstyle" } as const;
  /** A compact FLUSH request (28 bytes) with cookie `i`. */
  const flush = (i: number) =>
    "25609513" + "0000" + "0003" + i.toString(16).padStart(16, "0") + "0000000000000000" + "00000000";
  /** A simple reply without error for cookie `i` (no data: a FLUSH's). */
  const reply = (i: number) => "67446698" + "00000000" + i.toString(16).padStart(16, "0");
  const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, k) => from + k);
  const c2s = fromHex(range(1, 10).map(flush).join(""));
  const opts = (strict = false, state: StreamOptions["state"] = TRANSMISSION): StreamOptions => ({
    maxBufferedBytes: LIMIT,
    strict,
    state,
  });
  const rulesOf = (events: readonly ConversationEvent[], dir: Direction) =>
    events.filter((e) => e.direction === dir).map((e) => e.findings.map((f) => f.rule).join());
  const cookieOf = (e: ConversationEvent | undefined) =>
    e?.event === "frame" && e.frame.type === "simple-reply" ? e.request?.cookie : undefined;

  /** Pushes the client's bytes, then the server's, each cut by `parts`. */
  function pushed(
    client: Uint8Array,
    server: Uint8Array,
    parts: (b: Uint8Array) => Uint8Array[],
    o = opts(),
  ): ConversationEvent[] {
    const d = new ConversationDecoder(o);
    const out: ConversationEvent[] = [];
    for (const p of parts(client)) out.push(...d.push("c2s", p));
    for (const p of parts(server)) out.push(...d.push("s2c", p));
    out.push(...d.end());
    return out;
  }

  test("with the server silent, each request past the limit drops the oldest and carries the finding", () => {
    const events = pushed(c2s, new Uint8Array(0), (b) => [b]);
    expect(events).toHaveLength(10);
    expect(rulesOf(events, "c2s")).toEqual([...Array(4).fill(""), ...Array(6).fill("outstanding-limit")]);
    expect(events[4]!.findings[0]).toMatchObject({ code: "limit-exceeded", offset: 4 * 28 });
    expect(events[4]!.findings[0]!.message).toContain("the oldest one is dropped");
  });

  test("the same events whole, pushed whole, in random splits and byte by byte", () => {
    const s2c = fromHex([10, 7, 6, 1].map(reply).join(""));
    const whole = decodeConversation(c2s, s2c, opts());
    expect(normal(pushed(c2s, s2c, (b) => [b]))).toEqual(normal(whole));
    expect(normal(pushed(c2s, s2c, bytewise))).toEqual(normal(whole));
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    for (let n = 0; n < 20; n++) {
      const at = (b: Uint8Array) =>
        [...new Set(Array.from({ length: 5 }, () => Math.floor(rand() * b.length)))].sort((x, y) => x - y);
      expect(normal(pushed(c2s, s2c, (b) => cuts(b, at(b))))).toEqual(normal(whole));
    }
  });

  test("replies to the held requests match; replies to dropped ones match no request", () => {
    const out = decodeConversation(c2s, fromHex([10, 7, 6, 1].map(reply).join("")), opts());
    const replies = out.filter((e) => e.direction === "s2c");
    expect(replies.map(cookieOf)).toEqual([10n, 7n, undefined, undefined]);
    expect(rulesOf(out, "s2c")).toEqual(["", "", "reply-unknown-cookie", "reply-unknown-cookie"]);
    expect(rulesOf(out, "c2s")).toEqual([...Array(4).fill(""), ...Array(6).fill("outstanding-limit")]);
  });

  test("a reply frees its request's place: what is answered in time is never dropped", () => {
    // Requests 1..3, a reply to 2, then 4..6: at most four held (1, 3, 4, 5), so 6 drops 1.
    const d = new ConversationDecoder(opts());
    const out: ConversationEvent[] = [];
    out.push(...d.push("c2s", fromHex(range(1, 3).map(flush).join(""))));
    out.push(...d.push("s2c", fromHex(reply(2))));
    out.push(...d.push("c2s", fromHex(range(4, 6).map(flush).join(""))));
    out.push(...d.push("s2c", fromHex(reply(1) + reply(3))));
    out.push(...d.end());
    expect(out.filter((e) => e.direction === "s2c").map(cookieOf)).toEqual([2n, undefined, 3n]);
    expect(rulesOf(out, "s2c")).toEqual(["", "reply-unknown-cookie", ""]);
    expect(rulesOf(out, "c2s")).toEqual(["", "", "", "", "", "outstanding-limit"]);
  });

  test("with the same cookie on every request (as the fuzz reproduction) the oldest go first", () => {
    const same = fromHex(Array.from({ length: 10 }, () => flush(1)).join(""));
    const events = pushed(same, fromHex(reply(1) + reply(1)), (b) => [b]);
    expect(rulesOf(events, "c2s")).toEqual([...Array(4).fill(""), ...Array(6).fill("outstanding-limit")]);
    expect(rulesOf(events, "s2c")).toEqual(["", ""]);
    expect(normal(pushed(same, fromHex(reply(1) + reply(1)), bytewise))).toEqual(normal(events));
  });

  test("a WRITE is charged its data too", () => {
    // WRITE of 500 bytes: 256 + 500 = 756 each; the second one (1512 > 1024) drops the first.
    const write = (i: number) =>
      "25609513" + "0000" + "0001" + i.toString(16).padStart(16, "0") + "0000000000000000" + "000001f4" +
      "ab".repeat(500);
    const client = fromHex(write(1) + write(2) + flush(3));
    const server = fromHex(reply(1) + reply(2) + reply(3));
    // In capture order, the client first: both WRITEs are outstanding at once.
    const first = pushed(client, server, (b) => [b]);
    expect(rulesOf(first, "c2s")).toEqual(["", "outstanding-limit", ""]);
    expect(first.filter((e) => e.direction === "s2c").map(cookieOf)).toEqual([undefined, 2n, 3n]);
    for (const payloadViews of [false, true]) {
      const o = { ...opts(), payloadViews };
      expect(normal(pushed(client, server, (b) => cuts(b, [40, 600, 700]), o))).toEqual(normal(first));
      expect(normal(pushed(client, server, bytewise, o))).toEqual(normal(first));
    }
    // Whole, each request comes just before its reply: never more than one held, nothing dropped.
    const whole = decodeConversation(client, server, opts());
    expect(rulesOf(whole, "c2s")).toEqual(["", "", ""]);
    expect(whole.filter((e) => e.direction === "s2c").map(cookieOf)).toEqual([1n, 2n, 3n]);
  });

  test("options waiting for replies are bounded too, and a later reply goes to the oldest still held", () => {
    // LIST options (16 bytes: 256 + 16 charged): three fit in 1024, the fourth drops the first. The replies
    // (final ACKs) then answer options 2, 3, 4 in turn; a fifth is unsolicited.
    const list = "49484156454f5054" + "00000003" + "00000000";
    const ack = "0003e889045565a9" + "00000003" + "00000001" + "00000000";
    const o = opts(false, { phase: "options", style: "newstyle", handshakeFlags: 3, clientFlags: 3 });
    const client = fromHex(list.repeat(4));
    const server = fromHex(ack.repeat(4));
    const events = pushed(client, server, (b) => [b], o);
    expect(rulesOf(events, "c2s")).toEqual(["", "", "", "outstanding-limit"]);
    expect(events[3]!.findings[0]).toMatchObject({ code: "limit-exceeded", offset: 48 });
    expect(rulesOf(events, "s2c")).toEqual(["", "", "", "option-reply-unsolicited"]);
    expect(normal(pushed(client, server, bytewise, o))).toEqual(normal(events));
  });

  test("strict mode throws outstanding-limit at the request that would exceed it, whatever the split", () => {
    const want = { code: "limit-exceeded", offset: 4 * 28, rule: "outstanding-limit" };
    for (const parts of [(b: Uint8Array) => [b], bytewise]) {
      let got: unknown;
      try {
        pushed(c2s, new Uint8Array(0), parts, opts(true));
      } catch (e) {
        if (!isNbdDecodeError(e)) throw e;
        got = { code: e.code, offset: e.offset, rule: e.rule };
      }
      expect(got).toEqual(want);
    }
  });

  test("a lone client stream decoder holds no requests for replies: no limit to reach", () => {
    const d = new ClientStreamDecoder(opts());
    const events = [...d.push(c2s), ...d.end()];
    expect(events.map((e) => e.findings.length)).toEqual(Array(10).fill(0));
  });
});

describe("the bookkeeping of the held requests against a model (SessionState)", () => {
  const request = (cookie: number): Request => ({
    type: "request",
    extended: false,
    flags: 0,
    command: Command.FLUSH,
    cookie: BigInt(cookie),
    offset: 0n,
    length: 0n,
  });

  test("drops the oldest held, matches the oldest of a cookie, under random replies and cookie reuse", () => {
    // The model: a plain list in the order of the requests. Random cookies from a small set (reuse, several
    // held at once), replies in random order (compaction of the order list), bursts that empty the table.
    for (const cookies of [4, 40, 4000]) {
      const s = new SessionState();
      s.maxHeldBytes = 256 * 50;
      const model: Request[] = [];
      let seed = cookies;
      const rand = (n: number) => {
        seed = (seed * 1103515245 + 12345) % 2147483648;
        return seed % n;
      };
      for (let op = 0; op < 20000; op++) {
        if (rand(100) < (op % 5000 < 4000 ? 55 : 20)) {
          const r = request(rand(cookies));
          const dropped = s.makeRoom(256);
          let want = 0;
          while (model.length > 0 && (model.length + 1) * 256 > s.maxHeldBytes) {
            model.shift();
            want++;
          }
          expect(dropped).toBe(want);
          s.addRequest(r);
          model.push(r);
        } else if (model.length > 0) {
          // A reply: to a held request's cookie mostly, sometimes to one held by nothing.
          const c = rand(4) === 0 ? rand(cookies) : Number(model[rand(model.length)]!.cookie);
          const i = model.findIndex((m) => Number(m.cookie) === c);
          expect(s.findRequest(c)).toBe(i < 0 ? undefined : model[i]);
          s.finishRequest(c);
          if (i >= 0) model.splice(i, 1);
        }
        expect(s.heldBytes).toBe(256 * model.length);
      }
      for (let c = 0; c < cookies; c++) {
        expect(s.findRequest(c)).toBe(model.find((m) => Number(m.cookie) === c));
      }
    }
  });
});

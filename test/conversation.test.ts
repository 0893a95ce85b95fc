import { describe, expect, test } from "vitest";
import {
  ClientStreamDecoder,
  ConversationDecoder,
  type ConversationEvent,
  decodeConversation,
  isNbdDecodeError,
  ServerStreamDecoder,
  type StreamEvent,
} from "../mod.ts";
import { fromHex, toHex } from "./_harness.ts";

// A whole newstyle conversation written by hand from the spec's layouts (doc/proto.md): structured
// replies, SET_META_CONTEXT base:allocation, GO, then READ, WRITE, BLOCK_STATUS and DISC.
const S2C: [string, string][] = [
  ["newstyle-greeting", "4e42444d41474943" + "49484156454f5054" + "0003"],
  ["option-reply", "0003e889045565a9" + "00000008" + "00000001" + "00000000"], // ACK to STRUCTURED_REPLY
  [
    "option-reply",
    "0003e889045565a9" + "0000000a" + "00000004" + "00000013" + "00000001" + "626173653a616c6c6f636174696f6e",
  ],
  ["option-reply", "0003e889045565a9" + "0000000a" + "00000001" + "00000000"], // ACK to SET_META_CONTEXT
  [
    "option-reply",
    "0003e889045565a9" + "00000007" + "00000003" + "0000000c" + "0000" + "0000000000100000" + "00ed",
  ],
  ["option-reply", "0003e889045565a9" + "00000007" + "00000001" + "00000000"], // ACK to GO
  ["simple-reply", "67446698" + "00000000" + "0000000000000002"], // WRITE done
  [
    "reply-chunk",
    "668e33ef" + "0001" + "0001" + "0000000000000001" + "00000010" + "0000000000000000" + "0102030405060708",
  ],
  [
    "reply-chunk",
    "668e33ef" + "0001" + "0005" + "0000000000000003" + "0000000c" + "00000001" + "00001000" + "00000003",
  ],
];
const C2S: [string, string][] = [
  ["client-flags", "00000003"],
  ["option-request", "49484156454f5054" + "00000008" + "00000000"], // STRUCTURED_REPLY
  [
    "option-request",
    "49484156454f5054" + "0000000a" + "0000001b" + "00000000" + "00000001" + "0000000f" +
    "626173653a616c6c6f636174696f6e",
  ],
  ["option-request", "49484156454f5054" + "00000007" + "00000008" + "00000000" + "0001" + "0003"], // GO
  ["request", "25609513" + "0000" + "0000" + "0000000000000001" + "0000000000000000" + "00000008"], // READ
  [
    "request",
    "25609513" + "0000" + "0001" + "0000000000000002" + "0000000000000008" + "00000004" + "deadbeef",
  ],
  ["request", "25609513" + "0000" + "0007" + "0000000000000003" + "0000000000000000" + "00001000"], // BLOCK_STATUS
  ["request", "25609513" + "0000" + "0002" + "0000000000000004" + "0000000000000000" + "00000000"], // DISC
];
const c2s = fromHex(C2S.map(([, h]) => h).join(""));
const s2c = fromHex(S2C.map(([, h]) => h).join(""));

function offsets(frames: [string, string][]): [string, number, number][] {
  let at = 0;
  return frames.map(([kind, hex]) => {
    const r: [string, number, number] = [kind, at, hex.length / 2];
    at += hex.length / 2;
    return r;
  });
}

/** Frames as comparable JSON: bigints as strings, bytes (and payload views) as hex. */
function normal(events: readonly (ConversationEvent | StreamEvent)[]): unknown[] {
  return events.map((e) =>
    JSON.parse(JSON.stringify(e, (k, v) => {
      if (typeof v === "bigint") return v.toString();
      if (v instanceof Uint8Array) return toHex(v);
      if (k === "payload" && Array.isArray(v)) return v.map((x: Uint8Array) => toHex(x)).join("");
      return v;
    }))
  ).map((e: Record<string, unknown>) => {
    // A payload given as views belongs to the frame's data: fold it back for comparison.
    if (typeof e.payload === "string") {
      const f = e.frame as Record<string, unknown>;
      if (f.type === "request" || f.type === "simple-reply") f.data = e.payload;
      else (f.payload as Record<string, unknown>).data = e.payload;
      delete e.payload;
    }
    // The request or option attached to a reply is compared by its header fields.
    for (const k of ["request", "option"]) {
      const x = e[k] as Record<string, unknown> | undefined;
      if (x !== undefined) delete x.data;
    }
    return e;
  });
}

function splitRandomly(bytes: Uint8Array, seed: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let s = seed;
  let at = 0;
  while (at < bytes.length) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    const n = 1 + (s % 40);
    out.push(bytes.slice(at, at + n));
    at += n;
  }
  return out;
}

describe("decodeConversation() on two whole streams", () => {
  const events = decodeConversation(c2s, s2c);
  test("finds every frame with its offset and length, in causal order", () => {
    const got = events.map((e) =>
      e.event === "frame" ? [e.direction, e.frame.type, e.frameOffset, e.frameLength] : e
    );
    const c = offsets(C2S);
    const s = offsets(S2C);
    const at = (list: [string, number, number][], i: number, dir: string) => [dir, ...list[i]!];
    expect(got).toEqual([
      at(s, 0, "s2c"),
      at(c, 0, "c2s"),
      at(c, 1, "c2s"),
      at(s, 1, "s2c"),
      at(c, 2, "c2s"),
      at(s, 2, "s2c"),
      at(s, 3, "s2c"),
      at(c, 3, "c2s"),
      at(s, 4, "s2c"),
      at(s, 5, "s2c"),
      at(c, 4, "c2s"), // READ: needed before the WRITE's reply can be matched? no: placed before the first reply
      at(c, 5, "c2s"),
      at(s, 6, "s2c"),
      at(s, 7, "s2c"),
      at(c, 6, "c2s"),
      at(s, 8, "s2c"),
      at(c, 7, "c2s"),
    ]);
  });
  test("reports no finding on a conforming conversation", () => {
    expect(events.flatMap((e) => e.findings)).toEqual([]);
  });
  test("matches replies to requests by cookie and names the block-status context", () => {
    const frames = events.filter((e) => e.event === "frame");
    const data = frames.find((e) => e.frame.type === "reply-chunk" && e.frame.chunkType === 1)!;
    expect(data.event === "frame" && data.request?.cookie).toBe(1n);
    const bs = frames.find((e) => e.frame.type === "reply-chunk" && e.frame.chunkType === 5)!;
    expect(bs.event === "frame" && bs.contextName).toBe("base:allocation");
    expect(bs.event === "frame" && bs.request?.command).toBe(7);
    const simple = frames.find((e) => e.frame.type === "simple-reply")!;
    expect(simple.event === "frame" && simple.request?.command).toBe(1);
  });
  test("links option replies to the option they answer", () => {
    const reps = events.filter((e) => e.event === "frame" && e.frame.type === "option-reply");
    expect(reps.map((e) => e.event === "frame" && e.option?.option)).toEqual([8, 10, 10, 7, 7]);
  });
  test("keeps the WRITE payload as a view of the input", () => {
    const w = events.find((e) => e.event === "frame" && e.frame.type === "request" && e.frame.command === 1)!;
    expect(w.event === "frame" && w.frame.type === "request" && toHex(w.frame.data!)).toBe("deadbeef");
    expect(w.event === "frame" && w.frame.type === "request" && w.frame.data!.buffer).toBe(c2s.buffer);
  });
});

describe("ConversationDecoder in capture order", () => {
  function feedCaptureOrder(
    split: (b: Uint8Array, i: number) => Uint8Array[],
    views = false,
  ): ConversationEvent[] {
    const d = new ConversationDecoder({ payloadViews: views });
    const out: ConversationEvent[] = [];
    const order: ["c2s" | "s2c", number[]][] = [
      ["s2c", [0]],
      ["c2s", [0, 1]],
      ["s2c", [1]],
      ["c2s", [2]],
      ["s2c", [2, 3]],
      ["c2s", [3]],
      ["s2c", [4, 5]],
      ["c2s", [4, 5, 6]],
      ["s2c", [6, 7, 8]],
      ["c2s", [7]],
    ];
    let k = 0;
    for (const [dir, idx] of order) {
      const bytes = fromHex(idx.map((i) => (dir === "c2s" ? C2S : S2C)[i]![1]).join(""));
      for (const part of split(bytes, k++)) out.push(...d.push(dir, part));
    }
    out.push(...d.end());
    return out;
  }
  const whole = feedCaptureOrder((b) => [b]);
  test("emits frames in capture order with what was learned", () => {
    expect(whole.map((e) => e.event === "frame" ? `${e.direction} ${e.frame.type}` : e.notice)).toEqual([
      "s2c newstyle-greeting",
      "c2s client-flags",
      "c2s option-request",
      "s2c option-reply",
      "c2s option-request",
      "s2c option-reply",
      "s2c option-reply",
      "c2s option-request",
      "s2c option-reply",
      "s2c option-reply",
      "c2s request",
      "c2s request",
      "c2s request",
      "s2c simple-reply",
      "s2c reply-chunk",
      "s2c reply-chunk",
      "c2s request",
    ]);
    expect(whole.flatMap((e) => e.findings)).toEqual([]);
  });
  test("gives identical results for random splits and byte by byte", () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      expect(normal(feedCaptureOrder((b, i) => splitRandomly(b, seed * 100 + i)))).toEqual(normal(whole));
    }
    const bytewise = feedCaptureOrder((b) => Array.from(b, (x) => Uint8Array.of(x)));
    expect(normal(bytewise)).toEqual(normal(whole));
  });
  test("returns payloads spanning chunks as views when allowed, with the same bytes", () => {
    const views = feedCaptureOrder((b) => Array.from(b, (x) => Uint8Array.of(x)), true);
    const w = views.find((e) => e.event === "frame" && e.frame.type === "request" && e.frame.command === 1)!;
    expect(w.event === "frame" && w.payload?.length).toBe(4);
    expect(normal(views)).toEqual(normal(whole));
  });
  test("learns structured replies, contexts and the export from the traffic", () => {
    const d = new ConversationDecoder();
    d.decodeWhole(c2s, s2c);
    expect(d.state.structuredReplies).toBe(true);
    expect(d.state.extendedHeaders).toBe(false);
    expect([...d.state.contexts]).toEqual([[1, "base:allocation"]]);
    expect(d.state.exportSize).toBe(1048576n);
    expect(d.state.transmissionFlags).toBe(0xed);
  });
});

describe("stream decoders on their own", () => {
  test("the client stream frames everything by itself, byte by byte too", () => {
    const whole = new ClientStreamDecoder().push(c2s);
    expect(whole.map((e) => e.event === "frame" && e.frame.type)).toEqual(C2S.map(([k]) => k));
    const d = new ClientStreamDecoder();
    const bytewise = [...Array.from(c2s, (x) => d.push(Uint8Array.of(x))).flat(), ...d.end()];
    expect(normal(bytewise)).toEqual(normal(whole));
  });
  test("the server stream guesses a simple reply's data from the requests it was told about", () => {
    const d = new ServerStreamDecoder({ state: { phase: "transmission", style: "newstyle" } });
    d.noteRequest({
      type: "request",
      extended: false,
      flags: 0,
      command: 0,
      cookie: 9n,
      offset: 0n,
      length: 2n,
    });
    const ev = d.push(fromHex("67446698" + "00000000" + "0000000000000009" + "abcd"));
    expect(ev.length).toBe(1);
    expect(ev[0]!.event === "frame" && ev[0]!.frameLength).toBe(18);
  });
  test("a server stream without the request reports the unknown cookie and assumes no data", () => {
    const d = new ServerStreamDecoder({ state: { phase: "transmission", style: "newstyle" } });
    const ev = d.push(fromHex("67446698" + "00000000" + "0000000000000009"));
    expect(ev[0]!.findings.map((f) => f.rule)).toEqual(["reply-unknown-cookie"]);
  });
});

describe("bad and incomplete streams", () => {
  test("a stream ending inside a frame keeps every frame before it and reports truncated", () => {
    const events = decodeConversation(c2s, s2c.subarray(0, s2c.length - 5));
    const last = events[events.length - 1]!;
    expect(last.event === "notice" && last.notice).toBe("truncated");
    expect(last.findings[0]!.code).toBe("truncated");
    expect(last.event === "notice" && last.streamOffset).toBe(201);
    expect(events.filter((e) => e.event === "frame").length).toBe(16);
  });
  test("strict mode turns the truncation into an NbdDecodeError", () => {
    let err: unknown;
    try {
      decodeConversation(c2s, s2c.subarray(0, s2c.length - 5), { strict: true });
    } catch (e) {
      err = e;
    }
    expect(isNbdDecodeError(err) && err.code).toBe("truncated");
  });
  test("garbage after the greeting is reported once and the rest of that direction skipped", () => {
    const bad = fromHex(S2C[0]![1] + "ffffffffffffffffffffffffffffffffffffffff");
    const events = decodeConversation(fromHex(C2S[0]![1] + C2S[1]![1]), bad);
    const notice = events.find((e) => e.event === "notice")!;
    expect(notice.event === "notice" && notice.notice).toBe("undecodable");
    expect(notice.findings[0]!.code).toBe("bad-magic");
    expect(notice.findings[0]!.offset).toBe(18);
  });
  test("a frame announcing more than the buffer limit is refused before buffering", () => {
    const d = new ClientStreamDecoder({ maxBufferedBytes: 1000 });
    const ev = d.push(fromHex("00000003" + "49484156454f5054" + "00000007" + "00100000"));
    expect(ev[1]!.event === "notice" && ev[1]!.findings[0]!.code).toBe("limit-exceeded");
  });
  test("after STARTTLS is acknowledged both directions become opaque TLS", () => {
    const c = fromHex("00000001" + "49484156454f5054" + "00000005" + "00000000" + "160301002a0102");
    const s = fromHex(
      "4e42444d41474943" + "49484156454f5054" + "0001" + "0003e889045565a9" + "00000005" + "00000001" +
        "00000000" + "1603030000",
    );
    const events = decodeConversation(c, s);
    expect(events.map((e) => e.event === "frame" ? e.frame.type : `${e.direction} ${e.notice}`)).toEqual([
      "newstyle-greeting",
      "client-flags",
      "option-request",
      "option-reply",
      "s2c tls",
      "c2s tls",
    ]);
  });
  test("oldstyle: the greeting carries the export, requests follow at once", () => {
    const s = fromHex(
      "4e42444d41474943" + "0000420281861253" + "0000000000100000" + "0000" + "0001" + "00".repeat(124) +
        "67446698" + "00000000" + "0000000000000001" + "0102",
    );
    const c = fromHex("25609513" + "0000" + "0000" + "0000000000000001" + "0000000000000000" + "00000002");
    const events = decodeConversation(c, s);
    expect(events.map((e) => e.event === "frame" && `${e.frame.type} ${e.frameLength}`)).toEqual([
      "oldstyle-greeting 152",
      "request 28",
      "simple-reply 18",
    ]);
  });
  test("EXPORT_NAME: the reply is sized by the NO_ZEROES pair", () => {
    const c = fromHex("00000003" + "49484156454f5054" + "00000001" + "00000000");
    const s = fromHex("4e42444d41474943" + "49484156454f5054" + "0003" + "0000000000100000" + "0001");
    const events = decodeConversation(c, s);
    const r = events[events.length - 1]!;
    expect(r.event === "frame" && r.frame.type === "export-name-reply" && r.frameLength).toBe(10);
    const c2 = fromHex("00000001" + "49484156454f5054" + "00000001" + "00000000");
    const s2 = fromHex(
      "4e42444d41474943" + "49484156454f5054" + "0003" + "0000000000100000" + "0001" + "00".repeat(124),
    );
    const e2 = decodeConversation(c2, s2);
    const r2 = e2[e2.length - 1]!;
    expect(r2.event === "frame" && r2.frameLength).toBe(134);
  });
});

describe("need more bytes is a value", () => {
  test("the client stream says how many bytes the frame in progress still needs", () => {
    const d = new ClientStreamDecoder();
    expect(d.needed).toBe(1);
    d.push(fromHex("0000"));
    expect(d.needed).toBe(2); // client flags
    d.push(fromHex("0003" + "49484156454f5054" + "00000007"));
    expect(d.needed).toBe(4); // the option's length field
    d.push(fromHex("00000008" + "0000"));
    expect(d.needed).toBe(6); // the option's 8 data bytes, 2 of them there
    const ev = d.push(fromHex("0000" + "0001" + "0003"));
    expect(ev.map((e) => e.event === "frame" && e.frame.type)).toEqual(["option-request"]);
    expect(d.needed).toBe(1);
  });
  test("the server stream counts a WRITE reply's read data from its request", () => {
    const d = new ServerStreamDecoder({ state: { phase: "transmission", style: "newstyle" } });
    d.noteRequest({
      type: "request",
      extended: false,
      flags: 0,
      command: 0,
      cookie: 5n,
      offset: 0n,
      length: 100n,
    });
    d.push(fromHex("67446698" + "00000000" + "0000000000000005" + "0102"));
    expect(d.needed).toBe(98);
  });
});

describe("the request table over many replies", () => {
  // Answered cookies are forgotten in batches (every 256 answers). A request sent before the batches and
  // answered after them, and a cookie reused after its first use was forgotten, must still match.
  const hex8 = (v: number) => v.toString(16).padStart(8, "0");
  const request = (command: number, cookie: number, length: number) =>
    fromHex(
      "25609513" + "0000" + command.toString(16).padStart(4, "0") + hex8(0) + hex8(cookie) + hex8(0) +
        hex8(cookie * 512) + hex8(length),
    );
  const reply = (cookie: number) => fromHex("67446698" + "00000000" + hex8(0) + hex8(cookie));

  test("matches every reply to its request across the batched forgetting of answered cookies", () => {
    const d = new ConversationDecoder({ state: { phase: "transmission", style: "newstyle" } });
    const events: ConversationEvent[] = [];
    const push = (dir: "c2s" | "s2c", b: Uint8Array) => events.push(...d.push(dir, b));
    push("c2s", request(3, 100_000, 0)); // FLUSH, answered last
    for (let c = 1; c <= 700; c++) {
      push("c2s", request(3, c, 0));
      push("s2c", reply(c));
    }
    push("c2s", request(0, 5, 4)); // READ reusing cookie 5: its reply carries 4 bytes of data
    push("s2c", fromHex("67446698" + "00000000" + hex8(0) + hex8(5) + "deadbeef"));
    push("s2c", reply(100_000));
    const replies = events.filter((e) => e.event === "frame" && e.frame.type === "simple-reply");
    expect(replies.length).toBe(702);
    expect(replies.flatMap((e) => e.findings)).toEqual([]);
    const cookieOf = (e: ConversationEvent) => e.event === "frame" ? e.request?.cookie : undefined;
    expect(replies.map(cookieOf)).toEqual([
      ...Array.from({ length: 700 }, (_, i) => BigInt(i + 1)),
      5n,
      100_000n,
    ]);
    const reused = replies[700]!;
    expect(reused.event === "frame" && reused.request?.command).toBe(0);
    expect(reused.event === "frame" && reused.frameLength).toBe(20);
    const last = replies[701]!;
    expect(last.event === "frame" && last.request?.offset).toBe(100_000n * 512n);
  });
});

describe("the payload limit in the stream decoders", () => {
  // Lengths above maxPayloadLength are refused from the length field, before any payload byte is awaited:
  // the rest of the direction becomes an undecodable notice whose finding points at the length field.
  const limited = { maxPayloadLength: 100, strict: false } as const;
  const findingOf = (events: readonly StreamEvent[]) => {
    const n = events.find((e) => e.event === "notice");
    expect(n?.event === "notice" && n.notice).toBe("undecodable");
    return n!.findings[0]!;
  };
  test("an option request, a request and an option reply over the limit name the length field", () => {
    const opt = new ClientStreamDecoder(limited).push(
      fromHex("00000003" + "49484156454f5054" + "00000001" + "000000c8"),
    );
    expect(findingOf(opt)).toMatchObject({
      code: "limit-exceeded",
      rule: "max-payload-length",
      offset: 4 + 12,
    });
    expect(findingOf(opt).message).toContain("option request: length 200 exceeds the limit of 100 bytes");

    const req = new ClientStreamDecoder({ ...limited, state: { phase: "transmission", style: "newstyle" } })
      .push(fromHex("25609513" + "0000" + "0001" + "0000000000000001" + "0000000000000000" + "000000c8"));
    expect(findingOf(req)).toMatchObject({ code: "limit-exceeded", rule: "max-payload-length", offset: 24 });
    expect(findingOf(req).message).toContain("request payload: length 200 exceeds the limit of 100 bytes");

    const s = new ServerStreamDecoder({ ...limited, state: { phase: "options", style: "newstyle" } });
    s.noteOption({ type: "option-request", option: 3, data: { kind: "none" } });
    const rep = s.push(fromHex("0003e889045565a9" + "00000003" + "00000002" + "000000c8"));
    expect(findingOf(rep)).toMatchObject({ code: "limit-exceeded", rule: "max-payload-length", offset: 16 });
    expect(findingOf(rep).message).toContain("option reply: length 200 exceeds the limit of 100 bytes");
  });
  test("strict decoders throw NbdDecodeError with the same code and offset", () => {
    const d = new ClientStreamDecoder({
      strict: true,
      maxPayloadLength: 100,
      state: { phase: "transmission", style: "newstyle" },
    });
    let err: unknown;
    try {
      d.push(fromHex("25609513" + "0000" + "0001" + "0000000000000001" + "0000000000000000" + "000000c8"));
    } catch (e) {
      err = e;
    }
    expect(isNbdDecodeError(err) && [err.code, err.offset, err.rule]).toEqual([
      "limit-exceeded",
      24,
      "max-payload-length",
    ]);
  });
});

describe("requests against the transmission flags the server advertised", () => {
  // Written from the spec's layouts: greeting, GO for the default export with no information requests, the
  // server's NBD_INFO_EXPORT (size 1 MiB, the flags under test) and ACK, then FLUSH, WRITE with FUA, READ.
  const flagsReply = (flags: string): string =>
    "0003e889045565a9" + "00000007" + "00000003" + "0000000c" + "0000" + "0000000000100000" + flags;
  const server = (flags: string) =>
    fromHex(
      "4e42444d41474943" + "49484156454f5054" + "0003" + flagsReply(flags) +
        "0003e889045565a9" + "00000007" + "00000001" + "00000000",
    );
  const requests = "25609513" + "0000" + "0003" + "0000000000000001" + "0000000000000000" + "00000000" +
    "25609513" + "0001" + "0001" + "0000000000000002" + "0000000000000000" + "00000004" + "deadbeef" +
    "25609513" + "0000" + "0000" + "0000000000000003" + "0000000000000000" + "00000200";
  const client = fromHex(
    "00000003" + "49484156454f5054" + "00000007" + "00000006" + "00000000" + "0000" + requests,
  );
  const rulesOfRequests = (events: readonly (ConversationEvent | StreamEvent)[]) =>
    events.filter((e) => e.event === "frame" && e.frame.type === "request").map((e) =>
      e.findings.map((f) => f.rule)
    );

  test("a command or flag the server did not advertise is a finding, once its flags are known", () => {
    // HAS_FLAGS only: no SEND_FLUSH, no SEND_FUA.
    expect(rulesOfRequests(decodeConversation(client, server("0001")))).toEqual([
      ["command-unadvertised"],
      ["command-flag-unadvertised"],
      [],
    ]);
    // HAS_FLAGS, SEND_FLUSH, SEND_FUA: nothing to say.
    expect(rulesOfRequests(decodeConversation(client, server("000d")))).toEqual([[], [], []]);
  });

  test("in capture order, and strict mode throws it", () => {
    const d = new ConversationDecoder();
    const events = [...d.push("s2c", server("0001")), ...d.push("c2s", client), ...d.end()];
    expect(rulesOfRequests(events)).toEqual([["command-unadvertised"], ["command-flag-unadvertised"], []]);
    const strict = new ConversationDecoder({ strict: true });
    strict.push("s2c", server("0001"));
    let thrown: unknown;
    try {
      strict.push("c2s", client);
    } catch (e) {
      thrown = e;
    }
    expect(isNbdDecodeError(thrown) && thrown.code).toBe("unexpected-frame");
  });

  test("a client stream on its own checks only flags it is given", () => {
    const alone = new ClientStreamDecoder({ state: { phase: "transmission", style: "newstyle" } });
    expect(rulesOfRequests(alone.push(fromHex(requests)))).toEqual([[], [], []]);
    const told = new ClientStreamDecoder({
      state: { phase: "transmission", style: "newstyle", transmissionFlags: 0x0001 },
    });
    expect(rulesOfRequests(told.push(fromHex(requests)))).toEqual([
      ["command-unadvertised"],
      ["command-flag-unadvertised"],
      [],
    ]);
  });
});

describe("the export's flags against what the option haggling negotiated", () => {
  // Greeting, then (optionally) STRUCTURED_REPLY and its ACK, then GO with NBD_INFO_EXPORT carrying `flags`.
  const conversation = (flags: string, structured: boolean): [Uint8Array, Uint8Array] => {
    const sr = structured;
    const c2s = fromHex(
      "00000003" + (sr ? "49484156454f5054" + "00000008" + "00000000" : "") +
        "49484156454f5054" + "00000007" + "00000006" + "00000000" + "0000",
    );
    const s2c = fromHex(
      "4e42444d41474943" + "49484156454f5054" + "0003" +
        (sr ? "0003e889045565a9" + "00000008" + "00000001" + "00000000" : "") +
        "0003e889045565a9" + "00000007" + "00000003" + "0000000c" + "0000" + "0000000000100000" + flags +
        "0003e889045565a9" + "00000007" + "00000001" + "00000000",
    );
    return [c2s, s2c];
  };
  const infoRules = (events: readonly ConversationEvent[]) =>
    events.filter((e) =>
      e.event === "frame" && e.frame.type === "option-reply" && e.frame.data.kind === "info"
    )
      .map((e) => e.findings.map((f) => f.rule));

  test("NBD_FLAG_SEND_DF needs structured replies, NBD_FLAG_BLOCK_STATUS_PAYLOAD extended headers", () => {
    // HAS_FLAGS | SEND_DF without structured replies; then with them.
    expect(infoRules(decodeConversation(...conversation("0081", false)))).toEqual([[
      "transmission-df-unnegotiated",
    ]]);
    expect(infoRules(decodeConversation(...conversation("0081", true)))).toEqual([[]]);
    // HAS_FLAGS | BLOCK_STATUS_PAYLOAD with structured replies but no extended headers.
    expect(infoRules(decodeConversation(...conversation("1001", true)))).toEqual([[
      "transmission-block-status-payload-unnegotiated",
    ]]);
  });

  test("a decoder that did not see the greeting cannot know what was negotiated: no finding", () => {
    const [c2s, s2c] = conversation("0081", false);
    // The same conversation from after the greeting (18 bytes) and the client flags (4 bytes).
    const d = new ConversationDecoder({ state: { phase: "options", style: "newstyle" } });
    const events = [...d.push("c2s", c2s.subarray(4)), ...d.push("s2c", s2c.subarray(18)), ...d.end()];
    expect(infoRules(events)).toEqual([[]]);
  });
});

test("the EXPORT_NAME reply's flags are checked against the negotiation too", () => {
  // Greeting (NO_ZEROES), client flags (NO_ZEROES), NBD_OPT_EXPORT_NAME "", then the reply: size 1 MiB and
  // HAS_FLAGS | SEND_DF, without structured replies negotiated.
  const c2s = fromHex("00000003" + "49484156454f5054" + "00000001" + "00000000");
  const s2c = fromHex("4e42444d41474943" + "49484156454f5054" + "0003" + "0000000000100000" + "0081");
  const reply = decodeConversation(c2s, s2c).find((e) =>
    e.event === "frame" && e.frame.type === "export-name-reply"
  );
  expect(reply?.findings.map((f) => f.rule)).toEqual(["transmission-df-unnegotiated"]);
});

// The vector toolkit for other implementations (issue 13, "Vectors for other implementations"):
// checkVectorFile/decodeVector, vectorFromFrame, brokenVector, conversation vectors and their checker.
import { readFileSync } from "node:fs";
import * as path from "node:path";
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import {
  BROKEN_CONVERSATION_RULES,
  BROKEN_FRAME_RULES,
  BROKEN_RULES,
  brokenConversationVector,
  brokenVector,
  checkConversationVectorFile,
  checkVectorFile,
  Command,
  CONVERSATION_VECTOR_SCHEMA_ID,
  type ConversationVector,
  conversationVector,
  createBlockStatusDescriptors,
  decodeVector,
  hexToBytes,
  Option,
  OptionReply,
  ReplyFlag,
  ReplyType,
  type Vector,
  VECTOR_SCHEMA_ID,
  vectorFromFrame,
} from "../mod.ts";
import { VECTOR_DIR } from "./_harness.ts";

const CAPTURES = path.join(VECTOR_DIR, "captures");

function file(...vectors: unknown[]): unknown {
  return { schema: VECTOR_SCHEMA_ID, family: "test", description: "", vectors };
}

const FIXED: Vector = {
  id: "client-flags-fixed",
  name: "fixed newstyle",
  flags: [],
  decoder: "client-flags",
  context: {},
  hex: "00000001",
  frame: { type: "client-flags", flags: 1 },
  result: "valid",
  source: "spec",
};

// A compact READ in an extended-headers session, written by hand: acceptable with request-header-style.
const COMPACT_IN_EXTENDED: Vector = {
  id: "compact-in-extended",
  name: "compact READ in an extended session",
  flags: [],
  decoder: "request",
  context: { extendedHeaders: true },
  hex: "25609513" + "0000" + "0000" + "0000000000000001" + "0000000000001000" + "00000200",
  frame: {
    type: "request",
    extended: false,
    flags: 0,
    command: 0,
    cookie: "1",
    offset: "4096",
    length: "512",
  },
  findings: [{ code: "unexpected-frame", offset: 0, rule: "request-header-style" }],
  result: "acceptable",
  source: "hand-written",
};

const BAD_MAGIC: Vector = {
  id: "bad-magic",
  name: "a request with the simple reply's magic",
  flags: [],
  decoder: "request",
  context: {},
  hex: "67446698" + "0000" + "0000" + "0000000000000001" + "0000000000000000" + "00000000",
  result: "invalid",
  code: "bad-magic",
  offset: 0,
  source: "hand-written",
};

describe("checkVectorFile()", () => {
  for (const name of ["handshake", "option", "option_reply", "request", "reply", "metadata"]) {
    test(`checkVectorFile() finds every vector of vectors/${name}.json in agreement`, () => {
      const doc = JSON.parse(readFileSync(path.join(VECTOR_DIR, `${name}.json`), "utf8"));
      const r = checkVectorFile(doc);
      expect(r.problems).toEqual([]);
      expect(r.ok).toBe(true);
      expect(r.vectors).toBe(doc.vectors.length);
    });
  }

  test("checkVectorFile() accepts hand-written valid, acceptable and invalid vectors", () => {
    expect(checkVectorFile(file(FIXED, COMPACT_IN_EXTENDED, BAD_MAGIC))).toEqual({
      ok: true,
      vectors: 3,
      problems: [],
    });
  });

  test("checkVectorFile() reports a frame that differs from what the bytes decode to", () => {
    const r = checkVectorFile(file({ ...FIXED, frame: { type: "client-flags", flags: 2 } }));
    expect(r.ok).toBe(false);
    expect(r.problems).toEqual([{ id: FIXED.id, message: expect.stringMatching(/decoded frame differs/) }]);
  });

  test("checkVectorFile() reports a 'valid' vector that breaks a rule, and an 'acceptable' one with the wrong findings", () => {
    const { findings: _f, ...rest } = COMPACT_IN_EXTENDED;
    const r1 = checkVectorFile(file({ ...rest, result: "valid" }));
    expect(r1.problems[0]!.message).toMatch(/valid, but strict decoding gives unexpected-frame at offset 0/);
    const r2 = checkVectorFile(file({
      ...COMPACT_IN_EXTENDED,
      findings: [{ code: "unexpected-frame", offset: 0, rule: "other-rule" }],
    }));
    expect(r2.problems[0]!.message).toMatch(/not the vector's findings/);
    const r3 = checkVectorFile(file({ ...COMPACT_IN_EXTENDED, context: {} }));
    expect(r3.problems[0]!.message).toMatch(/strict decoding should fail with unexpected-frame at 0/);
  });

  test("checkVectorFile() reports an invalid vector whose code or offset our decoder does not give", () => {
    expect(checkVectorFile(file({ ...BAD_MAGIC, offset: 4 })).problems[0]!.message).toMatch(
      /should fail with bad-magic at 4, but gives bad-magic at offset 0/,
    );
    expect(checkVectorFile(file({ ...BAD_MAGIC, code: "bad-length" })).ok).toBe(false);
  });

  test("checkVectorFile() reports a valid vector with bytes left over", () => {
    const r = checkVectorFile(file({ ...FIXED, hex: "0000000100" }));
    expect(r.problems[0]!.message).toMatch(/frame is 4 of the 5 bytes/);
  });

  test("checkVectorFile() reports the shape: schema, keys, ids, hex, decoder, result fields", () => {
    const problems = (doc: unknown) => checkVectorFile(doc).problems.map((p) => p.message);
    expect(problems({ ...(file(FIXED) as object), schema: "x" })).toEqual([
      `schema must be "${VECTOR_SCHEMA_ID}"`,
    ]);
    expect(problems(file(FIXED, FIXED))).toEqual(["duplicate id"]);
    expect(problems(file({ ...FIXED, hex: "0000000A" }))).toEqual(["hex must be lowercase byte pairs"]);
    expect(problems(file({ ...FIXED, hex: "000" }))).toEqual(["hex must be lowercase byte pairs"]);
    expect(problems(file({ ...FIXED, id: "Upper" }))).toEqual(["id must be lowercase kebab-case"]);
    expect(problems(file({ ...FIXED, decoder: "frobnicator" }))[0]).toMatch(
      /decoder "frobnicator" is not one of/,
    );
    expect(problems(file({ ...FIXED, extra: 1 }))).toEqual(['unknown key "extra"']);
    expect(problems(file({ ...BAD_MAGIC, frame: {} }))).toEqual(["invalid vectors have no frame"]);
    expect(problems(file({ ...COMPACT_IN_EXTENDED, findings: [] }))).toEqual([
      "acceptable vectors need findings",
    ]);
    expect(problems(file({ ...FIXED, findings: [] }))).toEqual(["findings are for acceptable vectors"]);
    expect(problems(file({ ...FIXED, repeat: { hex: "00", times: 0 } }))[0]).toMatch(/repeat must be/);
    expect(problems(file({ ...FIXED, name: "" }))).toEqual(["name must be a non-empty string"]);
    expect(problems(file({ ...FIXED, source: 5 }))).toEqual(["source must be a non-empty string"]);
    expect(problems(file({ ...FIXED, flags: [1] }))).toEqual(["flags must be strings"]);
    expect(problems(file({ ...FIXED, context: [] }))).toEqual(["context must be an object"]);
    expect(problems(file({ ...FIXED, comment: 5 }))).toEqual(["comment must be a string"]);
    expect(problems(file({ ...FIXED, result: "fine" }))).toEqual([
      "result must be valid, invalid or acceptable",
    ]);
    expect(problems(file({ ...FIXED, frame: undefined }))).toEqual([
      "valid and acceptable vectors need a frame object",
    ]);
    expect(problems(file({ ...FIXED, code: "bad-magic" }))).toEqual([
      "code and offset are for invalid vectors",
    ]);
    expect(problems(file({ ...BAD_MAGIC, offset: -1 }))).toEqual(["invalid vectors need a byte offset"]);
    expect(problems(file({ ...BAD_MAGIC, code: "oops" }))).toEqual(["invalid vectors need a known code"]);
    expect(problems(file({ ...COMPACT_IN_EXTENDED, findings: [{ code: "oops", offset: 0, rule: "r" }] })))
      .toEqual([
        "each finding needs a known code, an offset and a rule",
      ]);
    expect(problems({ ...(file(FIXED) as object), family: "" })).toEqual([
      "family must be a non-empty string",
    ]);
    expect(problems({ ...(file(FIXED) as object), description: 1 })).toEqual([
      "description must be a string",
    ]);
    expect(problems({ ...(file(FIXED) as object), extra: 1 })).toEqual(['unknown key "extra"']);
    expect(problems(file(5))).toEqual(["each vector is an object"]);
    expect(problems([])).toEqual(["a vector file is a JSON object"]);
    expect(problems({ schema: VECTOR_SCHEMA_ID, family: "x", description: "", vectors: [] })).toEqual([
      "vectors must be a non-empty array",
    ]);
  });

  test("checkVectorFile() never throws, whatever the JSON", () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.jsonValue(), (a, b) => {
        checkVectorFile(a);
        checkVectorFile(file({ ...FIXED, context: a, frame: b }));
        checkVectorFile(file({ ...COMPACT_IN_EXTENDED, context: { readLength: a, offset: b } }));
      }),
      { numRuns: 300, seed: 13 },
    );
  });
});

describe("decodeVector()", () => {
  test("decodeVector() gives the frame as JSON, strict errors and lenient findings", () => {
    expect(decodeVector(FIXED, { strict: true })).toEqual({
      outcome: "frame",
      frame: { type: "client-flags", flags: 1 },
      byteLength: 4,
      findings: [],
    });
    expect(decodeVector(COMPACT_IN_EXTENDED, { strict: true })).toEqual({
      outcome: "error",
      code: "unexpected-frame",
      offset: 0,
      rule: "request-header-style",
    });
    expect(decodeVector({ ...FIXED, hex: "0000" }, { strict: true })).toEqual({
      outcome: "need-more",
      needed: 2,
    });
    expect(() => decodeVector({ ...FIXED, decoder: "nope" }, { strict: true })).toThrow(TypeError);
  });
});

describe("vectorFromFrame()", () => {
  test("vectorFromFrame() writes the encoder's bytes, the implied context and our decoder's verdict", () => {
    const v = vectorFromFrame(
      {
        type: "request",
        extended: false,
        flags: 0,
        command: Command.READ,
        cookie: 1,
        offset: 4096,
        length: 512,
      },
      { id: "my-read", name: "READ 512 at 4096", comment: "why", source: "my suite", flags: ["mine"] },
    );
    expect(v).toEqual({
      id: "my-read",
      name: "READ 512 at 4096",
      comment: "why",
      flags: ["mine"],
      decoder: "request",
      context: { extendedHeaders: false },
      hex: COMPACT_IN_EXTENDED.hex,
      frame: COMPACT_IN_EXTENDED.frame,
      result: "valid",
      source: "my suite",
    });
    expect(checkVectorFile(file(v)).ok).toBe(true);
  });

  test("vectorFromFrame() in a context the frame breaks gives an acceptable vector with the finding", () => {
    const v = vectorFromFrame(
      {
        type: "request",
        extended: false,
        flags: 0,
        command: Command.READ,
        cookie: 1n,
        offset: 4096n,
        length: 512n,
      },
      { id: "x", name: "x", source: "x", context: { extendedHeaders: true } },
    );
    expect(v.result).toBe("acceptable");
    expect(v.findings).toEqual(COMPACT_IN_EXTENDED.findings);
    expect(checkVectorFile(file(v)).ok).toBe(true);
  });

  test("vectorFromFrame() appends the payload the encoder leaves to the caller", () => {
    const write = vectorFromFrame({
      type: "request",
      extended: true,
      flags: 0x20,
      command: Command.WRITE,
      cookie: 2n,
      offset: 0n,
      length: 2n,
      data: new Uint8Array([0xab, 0xcd]),
    }, { id: "w", name: "w", source: "s" });
    expect(write.hex).toBe(
      "21e41c71" + "0020" + "0001" + "0000000000000002" + "0000000000000000" + "0000000000000002" + "abcd",
    );
    const read = vectorFromFrame(
      { type: "simple-reply", error: 0, cookie: 3n, data: new Uint8Array([1, 2, 3]) },
      { id: "r", name: "r", source: "s" },
    );
    expect(read.context).toEqual({ readLength: 3 });
    expect(read.hex).toBe("67446698" + "00000000" + "0000000000000003" + "010203");
    const chunk = vectorFromFrame({
      type: "reply-chunk",
      extended: false,
      flags: ReplyFlag.DONE,
      chunkType: ReplyType.OFFSET_DATA,
      cookie: 4n,
      payload: { kind: "offset-data", offset: 0n, data: new Uint8Array([9]) },
    }, { id: "c", name: "c", source: "s" });
    expect(chunk.hex).toBe(
      "668e33ef" + "0001" + "0001" + "0000000000000004" + "00000009" + "0000000000000000" + "09",
    );
    for (const v of [write, read, chunk]) expect(checkVectorFile(file(v)).problems).toEqual([]);
  });

  test("vectorFromFrame() gives option replies their pending option and block-status chunks their extents", () => {
    const rep = vectorFromFrame(
      { type: "option-reply", option: Option.GO, reply: OptionReply.ACK, data: { kind: "none" } },
      { id: "ack", name: "ack", source: "s" },
    );
    expect(rep.context).toEqual({ pendingOption: Option.GO });
    const bs = vectorFromFrame({
      type: "reply-chunk",
      extended: true,
      flags: ReplyFlag.DONE,
      chunkType: ReplyType.BLOCK_STATUS_EXT,
      cookie: 1n,
      offset: 0n,
      payload: {
        kind: "block-status",
        descriptors: createBlockStatusDescriptors(0, true, [{ length: 65536, status: 3 }]),
      },
    }, { id: "bs", name: "bs", source: "s" });
    // The spec inventory's worked example (§ examples): context 0, one extent of 65536 bytes, HOLE|ZERO.
    expect(bs.hex).toBe(
      "6e8a278c" + "0001" + "0006" + "0000000000000001" + "0000000000000000" + "0000000000000018" +
        "00000000" + "00000001" + "0000000000010000" + "0000000000000003",
    );
    for (const v of [rep, bs]) expect(checkVectorFile(file(v)).problems).toEqual([]);
  });

  test("vectorFromFrame() refuses a bad id and what is not a frame", () => {
    expect(() =>
      vectorFromFrame({ type: "client-flags", flags: 1 }, { id: "Bad Id", name: "x", source: "x" })
    )
      .toThrow(TypeError);
    expect(() => vectorFromFrame({ type: "nope" } as never, { id: "x", name: "x", source: "x" })).toThrow(
      TypeError,
    );
  });
});

describe("brokenVector()", () => {
  test("BROKEN_RULES names the rules of the issue: header style, echo, 2^32-1, duplicate ids, unread data", () => {
    const rules = BROKEN_RULES.map((r) => r.rule);
    for (
      const r of [
        "request-header-style",
        "reply-header-style",
        "option-reply-echo",
        "block-status-payload-duplicate",
        "option-no-data",
        "option-info-length",
        "compact-length-u32-max",
        "block-status-descriptor-u32-max",
      ]
    ) expect(rules).toContain(r);
    for (const r of BROKEN_RULES) expect(r.clause.length).toBeGreaterThan(10);
  });

  for (const { rule } of BROKEN_RULES) {
    test(`brokenVector("${rule}") breaks exactly that rule and passes the checker`, () => {
      const v = brokenVector(rule);
      expect(v.id).toBe(`broken-${rule}`);
      expect(v.flags).toEqual(["generated", "broken-rule"]);
      if (rule === "block-status-descriptor-u32-max") expect(v.result).toBe("valid");
      else if (rule === "compact-length-u32-max") {
        expect(v.result).toBe("invalid");
        expect(v.code).toBe("limit-exceeded");
      } else {
        expect(v.result).toBe("acceptable");
        expect(v.findings!.map((f) => f.rule)).toEqual([rule]);
        expect(v.rule).toBe(rule);
      }
      expect(checkVectorFile(file(v)).problems).toEqual([]);
    });
  }

  test("brokenVector() bytes are the valid frame with the one change (checked by hand)", () => {
    // compact READ, cookie 1, offset 4096, length 512; decoded in an extended session
    expect(brokenVector("request-header-style").hex).toBe(COMPACT_IN_EXTENDED.hex);
    // extended BLOCK_STATUS, PAYLOAD_LEN, length 16: effect length 65536, ids 1 and 1
    expect(brokenVector("block-status-payload-duplicate").hex).toBe(
      "21e41c71" + "0020" + "0007" + "0000000000000003" + "0000000000000000" + "0000000000000010" +
        "0000000000010000" + "00000001" + "00000001",
    );
    // NBD_OPT_STRUCTURED_REPLY (8) with 4 bytes of data
    expect(brokenVector("option-no-data").hex).toBe(
      "49484156454f5054" + "00000008" + "00000004" + "00000001",
    );
    // ACK for LIST (3) while GO (7) is pending
    const echo = brokenVector("option-reply-echo");
    expect(echo.hex).toBe("0003e889045565a9" + "00000003" + "00000001" + "00000000");
    expect(echo.context).toEqual({ pendingOption: 7 });
    // compact WRITE header whose length field is 2^32-1
    const big = brokenVector("compact-length-u32-max");
    expect(big.hex).toBe("25609513" + "0000" + "0001" + "0000000000000001" + "0000000000001000" + "ffffffff");
    expect(big.offset).toBe(24);
  });

  // A frame of the caller's for each rule that can break one, different from the rule's own.
  const mine: Record<string, Parameters<typeof vectorFromFrame>[0]> = {
    "request-header-style": {
      type: "request",
      extended: true,
      flags: 0,
      command: Command.TRIM,
      cookie: 9,
      offset: 0,
      length: 2 ** 40,
    },
    "reply-header-style": { type: "simple-reply", error: 0, cookie: 4n, data: new Uint8Array([7, 7]) },
    "write-payload-len": {
      type: "request",
      extended: true,
      flags: 0x21, // FUA | PAYLOAD_LEN
      command: Command.WRITE,
      cookie: 5n,
      offset: 512n,
      length: 3n,
      data: new Uint8Array([1, 2, 3]),
    },
    "compact-payload-len": {
      type: "request",
      extended: false,
      flags: 0,
      command: Command.FLUSH,
      cookie: 6n,
      offset: 0n,
      length: 0n,
    },
    "block-status-payload-duplicate": {
      type: "request",
      extended: true,
      flags: 0x20,
      command: Command.BLOCK_STATUS,
      cookie: 7n,
      offset: 0n,
      length: 16n,
      blockStatus: { effectLength: 0n, contextIds: [3, 4] },
    },
    "option-no-data": { type: "option-request", option: Option.LIST, data: { kind: "none" } },
    "option-reply-echo": {
      type: "option-reply",
      option: Option.GO,
      reply: OptionReply.ERR_UNSUP,
      data: { kind: "error", message: "no" },
    },
    "chunk-none-done": {
      type: "reply-chunk",
      extended: true,
      flags: ReplyFlag.DONE,
      chunkType: ReplyType.NONE,
      cookie: 8n,
      offset: 0n,
      payload: { kind: "none" },
    },
  };

  test("BROKEN_FRAME_RULES are the rules with a frame of the caller's below", () => {
    expect([...BROKEN_FRAME_RULES].sort()).toEqual(Object.keys(mine).sort());
  });

  for (const [rule, frame] of Object.entries(mine)) {
    test(`brokenVector("${rule}", { frame }) breaks that rule in the caller's frame`, () => {
      const v = brokenVector(rule, { id: `mine-${rule}`, frame });
      expect(v.id).toBe(`mine-${rule}`);
      expect(v.result).toBe("acceptable");
      expect(v.findings!.map((f) => f.rule)).toEqual([rule]);
      expect(v.hex).not.toBe(brokenVector(rule).hex);
      expect(checkVectorFile(file(v)).problems).toEqual([]);
    });
  }

  test("brokenVector() with a frame: the bytes are the caller's frame with the one change", () => {
    // FUA only: PAYLOAD_LEN (0x20) cleared from the flags, the rest as given
    expect(brokenVector("write-payload-len", { frame: mine["write-payload-len"]! }).hex).toBe(
      "21e41c71" + "0001" + "0001" + "0000000000000005" + "0000000000000200" + "0000000000000003" + "010203",
    );
    // ids 3, 4 and 3 again; length 8 + 12
    expect(
      brokenVector("block-status-payload-duplicate", { frame: mine["block-status-payload-duplicate"]! }).hex,
    )
      .toBe(
        "21e41c71" + "0020" + "0007" + "0000000000000007" + "0000000000000000" + "0000000000000014" +
          "0000000000000000" + "00000003" + "00000004" + "00000003",
      );
  });

  test("brokenVector() refuses a frame the rule does not apply to, and a frame for a rule that takes none", () => {
    expect(() => brokenVector("write-payload-len", { frame: mine["compact-payload-len"]! })).toThrow(
      /applies to extended WRITE requests/,
    );
    expect(() => brokenVector("chunk-none-done", { frame: mine["reply-header-style"]! })).toThrow(TypeError);
    expect(() => brokenVector("chunk-error-zero", { frame: mine["chunk-none-done"]! })).toThrow(
      /these rules take one/,
    );
  });

  test("brokenVector() takes the caller's id, name and context, and refuses unknown rules", () => {
    const v = brokenVector("chunk-none-done", { id: "mine", source: "my suite" });
    expect(v.id).toBe("mine");
    expect(v.source).toBe("my suite");
    expect(() => brokenVector("no-such-rule")).toThrow(TypeError);
  });
});

function conversations(...c: ConversationVector[]): unknown {
  return { schema: CONVERSATION_VECTOR_SCHEMA_ID, description: "", conversations: c };
}

describe("conversation vectors", () => {
  const c2s = hexToBytes("00000001" + "49484156454f5054" + "00000008" + "00000000");
  const s2c = hexToBytes(
    "4e42444d4147494349484156454f50540001" + "0003e889045565a9" + "00000008" + "00000001" + "00000000",
  );

  test("conversationVector() records each step in causal order with the state after it", () => {
    const c = conversationVector(c2s, s2c, { id: "sr", name: "structured replies", source: "hand-written" });
    expect(
      c.events.map((
        e,
      ) => [e.direction, e.kind, e.offset, e.length, e.state.phase, e.state.structuredReplies]),
    )
      .toEqual([
        ["s2c", "newstyle-greeting", 0, 18, "options", false],
        ["c2s", "client-flags", 0, 4, "options", false],
        ["c2s", "option-request", 4, 16, "options", false],
        ["s2c", "option-reply", 18, 20, "options", true],
      ]);
    expect(c.events[0]!.state.handshakeFlags).toBe(1);
    expect(c.events[1]!.state.clientFlags).toBe(1);
    expect(c.events[2]!.frame).toEqual({ type: "option-request", option: 8, data: { kind: "none" } });
    expect(checkConversationVectorFile(conversations(c))).toEqual({ ok: true, vectors: 1, problems: [] });
  });

  test("checkConversationVectorFile() reports a step whose state, frame or findings differ", () => {
    const c = conversationVector(c2s, s2c, { id: "sr", name: "structured replies", source: "hand-written" });
    const events = c.events.map((e, i) =>
      i === 3 ? { ...e, state: { ...e.state, structuredReplies: false } } : e
    );
    const r = checkConversationVectorFile(conversations({ ...c, events }));
    expect(r.ok).toBe(false);
    expect(r.problems[0]!.message).toMatch(/^step 3: the decoder finds/);
    const fewer = checkConversationVectorFile(conversations({ ...c, events: c.events.slice(0, 3) }));
    expect(fewer.problems[0]!.message).toMatch(/step 3: the decoder finds option-reply at s2c offset 18/);
    const shape = (x: unknown) =>
      checkConversationVectorFile(conversations(x as ConversationVector)).problems
        .map((p) => p.message);
    expect(shape({ ...c, c2s: "zz" })).toEqual(["c2s must be lowercase byte pairs"]);
    expect(shape({ ...c, s2c: 1 })).toEqual(["s2c must be lowercase byte pairs"]);
    expect(shape({ ...c, id: "A" })).toEqual(["id must be lowercase kebab-case"]);
    expect(shape({ ...c, name: "" })).toEqual(["name must be a non-empty string"]);
    expect(shape({ ...c, events: {} })).toEqual(["events must be an array"]);
    expect(shape({ ...c, initialState: 3 })).toEqual(["initialState must be an object"]);
    expect(shape({ ...c, extra: 1 })).toEqual(['unknown key "extra"']);
    const twice = checkConversationVectorFile(conversations(c, c));
    expect(twice.problems).toEqual([{ id: "sr", message: "duplicate id" }]);
    expect(checkConversationVectorFile({ schema: "x" }).ok).toBe(false);
  });

  for (const { rule } of BROKEN_CONVERSATION_RULES) {
    test(`brokenConversationVector("${rule}") puts exactly that finding on the reply, and passes the checker`, () => {
      const c = brokenConversationVector(rule);
      expect(c.id).toBe(`broken-${rule}`);
      expect(c.events.map((e) => e.findings.map((f) => f.rule))).toEqual([[], [rule]]);
      expect(c.events[1]!.direction).toBe("s2c");
      expect(checkConversationVectorFile(conversations(c))).toEqual({ ok: true, vectors: 1, problems: [] });
    });
  }

  test("brokenConversationVector() puts the extended-reply-offset finding on the reply", () => {
    const c = brokenConversationVector("extended-reply-offset");
    expect(c.events.map((e) => [e.kind, e.findings.map((f) => f.rule)])).toEqual([
      ["request", []],
      ["reply-chunk", ["extended-reply-offset"]],
    ]);
    expect(c.initialState).toMatchObject({ extendedHeaders: true, phase: "transmission" });
    expect(checkConversationVectorFile(conversations(c)).ok).toBe(true);
    expect(() => brokenConversationVector("nope")).toThrow(TypeError);
  });

  test("a bundled capture's conversation vector matches its expected frame list", () => {
    const name = "qemu10-ext-io";
    const c = conversationVector(
      readFileSync(path.join(CAPTURES, `${name}.c2s.bin`)),
      readFileSync(path.join(CAPTURES, `${name}.s2c.bin`)),
      { id: name, name, source: "capture" },
    );
    // The expected list was derived from the peers' own logs (vectors/captures/README.md).
    const expected = readFileSync(path.join(CAPTURES, `${name}.expected.jsonl`), "utf8").trim().split("\n")
      .map((l) => JSON.parse(l) as { direction: string; frameOffset: number; kind: string });
    expect(
      c.events.filter((e) => !["tls", "truncated", "undecodable"].includes(e.kind)).map((e) =>
        `${e.direction} ${e.offset} ${e.kind}`
      ).sort(),
    ).toEqual(expected.map((e) => `${e.direction} ${e.frameOffset} ${e.kind}`).sort());
    const last = c.events.at(-1)!.state;
    expect(last).toMatchObject({
      phase: "transmission",
      extendedHeaders: true,
      contexts: { "0": "base:allocation" },
    });
    expect(last.exportSize).toBe("1048576");
    expect(checkConversationVectorFile(conversations(c)).ok).toBe(true);
  });
});

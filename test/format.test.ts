import { describe, expect, test } from "vitest";
import {
  codeName,
  type ConversationEvent,
  type ConversationFrame,
  decodeClientFlags,
  type Decoded,
  decodeExportNameReply,
  decodeGreeting,
  decodeOptionReply,
  decodeOptionRequest,
  decodeReplyChunk,
  decodeRequest,
  decodeSimpleReply,
  type Direction,
  formatEventJson,
  formatEventJsonLine,
  formatEventText,
  type Frame,
  type Request,
} from "../mod.ts";

const U64_MAX = "18446744073709551615";

function hex(h: string): Uint8Array {
  const s = h.replace(/[\s|]/g, "");
  return Uint8Array.from(s.match(/../g) ?? [], (x) => parseInt(x, 16));
}

/** Wraps a decoded frame as the conversation decoder would give it. */
function wrap(
  direction: Direction,
  r: Decoded<Frame>,
  extra: Partial<Pick<ConversationFrame, "request" | "contextName" | "frameOffset" | "connection">> = {},
): ConversationFrame {
  if (!r.done) throw new Error("test bytes are incomplete");
  return {
    event: "frame",
    connection: extra.connection ?? 0,
    direction,
    frameOffset: extra.frameOffset ?? 0,
    frameLength: r.byteLength,
    frame: r.frame,
    findings: r.findings,
    ...(extra.request === undefined ? {} : { request: extra.request }),
    ...(extra.contextName === undefined ? {} : { contextName: extra.contextName }),
  };
}

function textLines(e: ConversationEvent, n = 1): string[] {
  return formatEventText(e, n).split("\n");
}

const READ_4096 = hex("25609513 0000 0000 0000000000000001 0000000000000000 00001000");

function readRequest(): Request {
  const r = decodeRequest(READ_4096);
  if (!r.done) throw new Error("incomplete");
  return r.frame;
}

describe("codeName()", () => {
  test("codeName() gives spec names, and PREFIX_UNKNOWN(n) for unassigned values", () => {
    expect(codeName("option", 7)).toBe("NBD_OPT_GO");
    expect(codeName("option", 4)).toBe("NBD_OPT_PEEK_EXPORT");
    expect(codeName("option", 99)).toBe("NBD_OPT_UNKNOWN(99)");
    expect(codeName("optionReply", 0x8000000f)).toBe("NBD_REP_UNKNOWN(2147483663)");
    expect(codeName("info", 9)).toBe("NBD_INFO_UNKNOWN(9)");
    expect(codeName("command", 99)).toBe("NBD_CMD_UNKNOWN(99)");
    expect(codeName("replyType", 3)).toBe("NBD_REPLY_TYPE_UNKNOWN(3)");
    expect(codeName("error", 5)).toBe("NBD_EIO");
    expect(codeName("error", 200)).toBe("NBD_UNKNOWN(200)");
  });
});

describe("handshake frames", () => {
  test("formatEventJson() shows a newstyle greeting's handshake flags by name", () => {
    const e = wrap("s2c", decodeGreeting(hex("4E42444D41474943 49484156454F5054 0003")));
    expect(formatEventJson(e)).toEqual({
      connection: 0,
      direction: "s2c",
      frameOffset: 0,
      frameLength: 18,
      kind: "newstyle-greeting",
      handshakeFlags: ["NBD_FLAG_FIXED_NEWSTYLE", "NBD_FLAG_NO_ZEROES"],
      findings: [],
    });
    expect(textLines(e, 1)).toEqual([
      "Frame 1: connection 0, s2c, offset 0, 18 bytes: newstyle-greeting",
      "    Magic: 0x4e42444d41474943 (NBDMAGIC)",
      "    Magic: 0x49484156454f5054 (IHAVEOPT)",
      "    Handshake flags: 0x0003 (NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_NO_ZEROES)",
    ]);
  });

  test("formatEventJson() keeps a lenient decoder's findings, and text shows them as [Finding] lines", () => {
    // Client flags with a reserved bit set (clients MUST NOT set bits 2-31). Unknown handshake flags are no
    // longer findings (clients SHOULD ignore them): see rules.ts, IGNORED_BY_RECEIVER.
    const e = wrap("c2s", decodeClientFlags(hex("00000005"), { strict: false }));
    const j = formatEventJson(e);
    expect(j.clientFlags).toEqual(["NBD_FLAG_C_FIXED_NEWSTYLE", "0x0004"]);
    expect(j.findings).toEqual([
      {
        code: "reserved-bits",
        offset: 0,
        rule: "client-flags-reserved",
        message: e.findings[0]!.message,
      },
    ]);
    const lines = textLines(e);
    expect(lines[1]).toBe("    Client flags: 0x00000005 (NBD_FLAG_C_FIXED_NEWSTYLE, 0x0004)");
    expect(lines[2]).toBe(
      `    [Finding] reserved-bits at 0: ${e.findings[0]!.message} (rule client-flags-reserved)`,
    );
  });

  test("formatEventJson() shows an oldstyle greeting's size and both flag fields", () => {
    const bytes = hex(
      "4E42444D41474943 0000420281861253 FFFFFFFFFFFFFFFF 0000 0003" + "00".repeat(124),
    );
    const e = wrap("s2c", decodeGreeting(bytes));
    expect(formatEventJson(e)).toEqual({
      connection: 0,
      direction: "s2c",
      frameOffset: 0,
      frameLength: 152,
      kind: "oldstyle-greeting",
      size: U64_MAX,
      handshakeFlags: [],
      transmissionFlags: ["NBD_FLAG_HAS_FLAGS", "NBD_FLAG_READ_ONLY"],
      findings: [],
    });
    expect(textLines(e).slice(1)).toEqual([
      "    Magic: 0x4e42444d41474943 (NBDMAGIC)",
      "    Magic: 0x0000420281861253 (cliserv_magic)",
      `    Export size: ${U64_MAX}`,
      "    Handshake flags: 0x0000",
      "    Transmission flags: 0x0003 (NBD_FLAG_HAS_FLAGS, NBD_FLAG_READ_ONLY)",
    ]);
  });

  test("formatEventJson() shows client flags under clientFlags", () => {
    const e = wrap("c2s", decodeClientFlags(hex("00000003")));
    expect(formatEventJson(e)).toEqual({
      connection: 0,
      direction: "c2s",
      frameOffset: 0,
      frameLength: 4,
      kind: "client-flags",
      clientFlags: ["NBD_FLAG_C_FIXED_NEWSTYLE", "NBD_FLAG_C_NO_ZEROES"],
      findings: [],
    });
    expect(textLines(e)[1]).toBe(
      "    Client flags: 0x00000003 (NBD_FLAG_C_FIXED_NEWSTYLE, NBD_FLAG_C_NO_ZEROES)",
    );
  });

  test("formatEventJson() shows an EXPORT_NAME reply with its size as a decimal string", () => {
    const e = wrap("s2c", decodeExportNameReply(hex("0000000000100000 0003"), { noZeroes: true }));
    expect(formatEventJson(e)).toMatchObject({
      kind: "export-name-reply",
      frameLength: 10,
      size: "1048576",
      transmissionFlags: ["NBD_FLAG_HAS_FLAGS", "NBD_FLAG_READ_ONLY"],
      zeroPadding: false,
    });
  });
});

describe("options", () => {
  test("formatEventJson() shows NBD_OPT_GO with its export name and info requests", () => {
    const e = wrap(
      "c2s",
      decodeOptionRequest(hex("49484156454F5054 00000007 00000008 | 00000000 0001 0003")),
      { frameOffset: 4 },
    );
    expect(formatEventJson(e)).toEqual({
      connection: 0,
      direction: "c2s",
      frameOffset: 4,
      frameLength: 24,
      kind: "option-request",
      option: "NBD_OPT_GO",
      exportName: "",
      infoRequests: ["NBD_INFO_BLOCK_SIZE"],
      findings: [],
    });
    expect(textLines(e, 3)).toEqual([
      "Frame 3: connection 0, c2s, offset 4, 24 bytes: option-request",
      "    Magic: 0x49484156454f5054 (IHAVEOPT)",
      "    Option: NBD_OPT_GO (7)",
      "    Data length: 8",
      "    Export name length: 0",
      '    Export name: ""',
      "    Number of information requests: 1",
      "    Information request: NBD_INFO_BLOCK_SIZE (3)",
    ]);
  });

  test("formatEventJson() shows NBD_OPT_SET_META_CONTEXT queries", () => {
    // export "a", one query "base:allocation" (15 bytes)
    const data = "00000001 61 00000001 0000000f" +
      Array.from(new TextEncoder().encode("base:allocation"), (b) => b.toString(16).padStart(2, "0")).join(
        "",
      );
    const e = wrap("c2s", decodeOptionRequest(hex(`49484156454F5054 0000000a 0000001c ${data}`)));
    expect(formatEventJson(e)).toMatchObject({
      option: "NBD_OPT_SET_META_CONTEXT",
      exportName: "a",
      queries: ["base:allocation"],
    });
  });

  test("formatEventJson() names an unknown option and gives its data length, never its bytes", () => {
    const e = wrap("c2s", decodeOptionRequest(hex("49484156454F5054 00000063 00000003 aabbcc")));
    const j = formatEventJson(e);
    expect(j).toMatchObject({ option: "NBD_OPT_UNKNOWN(99)", dataLength: 3 });
    expect(JSON.stringify(j)).not.toContain("aabbcc");
  });

  test("formatEventJson() shows NBD_REP_INFO with NBD_INFO_EXPORT", () => {
    const e = wrap(
      "s2c",
      decodeOptionReply(hex("0003E889045565A9 00000007 00000003 0000000C | 0000 0000000000100000 048F")),
    );
    expect(formatEventJson(e)).toEqual({
      connection: 0,
      direction: "s2c",
      frameOffset: 0,
      frameLength: 32,
      kind: "option-reply",
      option: "NBD_OPT_GO",
      reply: "NBD_REP_INFO",
      info: "NBD_INFO_EXPORT",
      size: "1048576",
      transmissionFlags: [
        "NBD_FLAG_HAS_FLAGS",
        "NBD_FLAG_READ_ONLY",
        "NBD_FLAG_SEND_FLUSH",
        "NBD_FLAG_SEND_FUA",
        "NBD_FLAG_SEND_DF",
        "NBD_FLAG_SEND_CACHE",
      ],
      findings: [],
    });
    expect(textLines(e).slice(1)).toEqual([
      "    Magic: 0x0003e889045565a9 (NBD_REP_MAGIC)",
      "    Option: NBD_OPT_GO (7)",
      "    Reply type: NBD_REP_INFO (3)",
      "    Data length: 12",
      "    Information type: NBD_INFO_EXPORT (0)",
      "    Export size: 1048576",
      "    Transmission flags: 0x048f (NBD_FLAG_HAS_FLAGS, NBD_FLAG_READ_ONLY, NBD_FLAG_SEND_FLUSH, " +
      "NBD_FLAG_SEND_FUA, NBD_FLAG_SEND_DF, NBD_FLAG_SEND_CACHE)",
    ]);
  });

  test("formatEventJson() shows NBD_INFO_BLOCK_SIZE values", () => {
    const e = wrap(
      "s2c",
      decodeOptionReply(hex("0003E889045565A9 00000007 00000003 0000000E | 0003 00000001 00001000 02000000")),
    );
    expect(formatEventJson(e)).toMatchObject({
      info: "NBD_INFO_BLOCK_SIZE",
      minimumBlockSize: 1,
      preferredBlockSize: 4096,
      maximumPayloadSize: 33554432,
    });
  });

  test("formatEventJson() shows an ACK without data", () => {
    const e = wrap("s2c", decodeOptionReply(hex("0003E889045565A9 00000007 00000001 00000000")));
    expect(formatEventJson(e)).toEqual({
      connection: 0,
      direction: "s2c",
      frameOffset: 0,
      frameLength: 20,
      kind: "option-reply",
      option: "NBD_OPT_GO",
      reply: "NBD_REP_ACK",
      findings: [],
    });
  });

  test("formatEventJson() shows NBD_REP_META_CONTEXT's context id and name", () => {
    const e = wrap(
      "s2c",
      decodeOptionReply(
        hex("0003E889045565A9 0000000a 00000004 00000013 00000001 626173653a616c6c6f636174696f6e"),
      ),
    );
    expect(formatEventJson(e)).toMatchObject({
      reply: "NBD_REP_META_CONTEXT",
      contextId: 1,
      context: "base:allocation",
    });
    expect(textLines(e).slice(-2)).toEqual([
      "    Metadata context ID: 1",
      '    Metadata context name: "base:allocation"',
    ]);
  });

  test("formatEventJson() shows NBD_REP_SERVER's export name and description", () => {
    // name "a", description "disk"
    const e = wrap(
      "s2c",
      decodeOptionReply(hex("0003E889045565A9 00000003 00000002 00000009 00000001 61 6469736b")),
    );
    expect(formatEventJson(e)).toMatchObject({
      option: "NBD_OPT_LIST",
      reply: "NBD_REP_SERVER",
      exportName: "a",
      description: "disk",
    });
  });

  test("formatEventJson() shows NBD_INFO_INIT_FLAGS bits by name", () => {
    const e = wrap("s2c", decodeOptionReply(hex("0003E889045565A9 00000007 00000003 00000004 0004 0003")));
    expect(formatEventJson(e)).toMatchObject({
      info: "NBD_INFO_INIT_FLAGS",
      initFlags: ["NBD_INIT_SPARSE", "NBD_INIT_ZERO"],
    });
    expect(textLines(e)).toContain("    Init flags: 0x0003 (NBD_INIT_SPARSE, NBD_INIT_ZERO)");
  });

  test("formatEventJson() shows an error reply's message; text shows the type in hex", () => {
    const e = wrap("s2c", decodeOptionReply(hex("0003E889045565A9 00000007 80000006 00000002 6e6f")));
    expect(formatEventJson(e)).toMatchObject({ reply: "NBD_REP_ERR_UNKNOWN", message: "no" });
    expect(textLines(e)).toContain("    Reply type: NBD_REP_ERR_UNKNOWN (0x80000006)");
  });
});

describe("requests", () => {
  test("formatEventJson() shows a compact READ with 64-bit fields as decimal strings", () => {
    const e = wrap("c2s", decodeRequest(READ_4096), { frameOffset: 63 });
    expect(formatEventJson(e)).toEqual({
      connection: 0,
      direction: "c2s",
      frameOffset: 63,
      frameLength: 28,
      kind: "request",
      command: "NBD_CMD_READ",
      flags: [],
      cookie: "1",
      extendedHeader: false,
      offset: "0",
      length: "4096",
      findings: [],
    });
    expect(textLines(e, 12)).toEqual([
      "Frame 12: connection 0, c2s, offset 63, 28 bytes: request",
      "    Magic: 0x25609513 (NBD_REQUEST_MAGIC)",
      "    Command flags: 0x0000",
      "    Type: NBD_CMD_READ (0)",
      "    Cookie: 1",
      "    Offset: 0",
      "    Length: 4096",
    ]);
  });

  test("formatEventJson() shows an extended WRITE's data length but not its data", () => {
    const bytes = hex(
      "21E41C71 0020 0001 0000000000000002 0000000000000000 0000000000000200" + "ab".repeat(512),
    );
    const e = wrap("c2s", decodeRequest(bytes));
    const j = formatEventJson(e);
    expect(j).toEqual({
      connection: 0,
      direction: "c2s",
      frameOffset: 0,
      frameLength: 544,
      kind: "request",
      command: "NBD_CMD_WRITE",
      flags: ["NBD_CMD_FLAG_PAYLOAD_LEN"],
      cookie: "2",
      extendedHeader: true,
      offset: "0",
      length: "512",
      dataLength: 512,
      findings: [],
    });
    expect(JSON.stringify(j)).not.toContain("abab");
    expect(textLines(e)[0]).toBe(
      "Frame 1: connection 0, c2s, offset 0, 544 bytes: request (extended header)",
    );
    expect(textLines(e)).toContain("    Data: 512 bytes");
  });

  test("formatEventJson() keeps 2^64-1 exact in cookie, offset and length", () => {
    const bytes = hex("21E41C71 0000 0004 FFFFFFFFFFFFFFFF FFFFFFFFFFFFFFFF FFFFFFFFFFFFFFFF");
    const e = wrap("c2s", decodeRequest(bytes, { strict: false }));
    const j = formatEventJson(e);
    expect(j.cookie).toBe(U64_MAX);
    expect(j.offset).toBe(U64_MAX);
    expect(j.length).toBe(U64_MAX);
    expect(textLines(e)).toContain(`    Cookie: ${U64_MAX}`);
  });

  test("formatEventJson() names an unknown command NBD_CMD_UNKNOWN(n) and unnamed flag bits in hex", () => {
    const bytes = hex("25609513 4001 0063 0000000000000001 0000000000000000 00000000");
    const e = wrap("c2s", decodeRequest(bytes, { strict: false }));
    const j = formatEventJson(e);
    expect(j.command).toBe("NBD_CMD_UNKNOWN(99)");
    expect(j.flags).toEqual(["NBD_CMD_FLAG_FUA", "0x4000"]);
    expect(textLines(e)).toContain("    Type: NBD_CMD_UNKNOWN(99) (99)");
  });
});

describe("memoised text of the hot frames", () => {
  test("formatEventText() gives each request and simple reply its own values when the fixed part repeats", () => {
    // Same command, flags and header kind twice: the memoised part must not carry the first one's values.
    const a = wrap(
      "c2s",
      decodeRequest(hex("25609513 0001 0001 0000000000000007 0000000000001000 00000004 01020304")),
      {
        connection: 3,
        frameOffset: 28,
      },
    );
    const b = wrap(
      "c2s",
      decodeRequest(hex("25609513 0001 0001 0000000000000008 0000000000002000 00000002 0506")),
      {
        connection: 3,
        frameOffset: 60,
      },
    );
    expect(textLines(a, 5)).toEqual([
      "Frame 5: connection 3, c2s, offset 28, 32 bytes: request",
      "    Magic: 0x25609513 (NBD_REQUEST_MAGIC)",
      "    Command flags: 0x0001 (NBD_CMD_FLAG_FUA)",
      "    Type: NBD_CMD_WRITE (1)",
      "    Cookie: 7",
      "    Offset: 4096",
      "    Length: 4",
      "    Data: 4 bytes",
    ]);
    expect(textLines(b, 6)).toEqual([
      "Frame 6: connection 3, c2s, offset 60, 30 bytes: request",
      "    Magic: 0x25609513 (NBD_REQUEST_MAGIC)",
      "    Command flags: 0x0001 (NBD_CMD_FLAG_FUA)",
      "    Type: NBD_CMD_WRITE (1)",
      "    Cookie: 8",
      "    Offset: 8192",
      "    Length: 2",
      "    Data: 2 bytes",
    ]);
    // Another connection and direction, and a reply whose request is another command.
    const r1 = wrap("s2c", decodeSimpleReply(hex("67446698 00000000 0000000000000007")), {
      connection: 3,
      frameOffset: 16,
      request: readRequest(),
    });
    const r2 = wrap("s2c", decodeSimpleReply(hex("67446698 0000001C 0000000000000009")), { connection: 4 });
    expect(textLines(r1, 7)).toEqual([
      "Frame 7: connection 3, s2c, offset 16, 16 bytes: simple-reply",
      "    Magic: 0x67446698 (NBD_SIMPLE_REPLY_MAGIC)",
      "    Error: 0 (success)",
      "    Cookie: 7",
      "    [Request: NBD_CMD_READ, offset 0, length 4096]",
    ]);
    expect(textLines(r2, 8)).toEqual([
      "Frame 8: connection 4, s2c, offset 0, 16 bytes: simple-reply",
      "    Magic: 0x67446698 (NBD_SIMPLE_REPLY_MAGIC)",
      "    Error: NBD_ENOSPC (28)",
      "    Cookie: 9",
    ]);
  });

  test("formatEventText() does not let a hand-built event with out-of-range values hit another's memo", () => {
    // Keys pack (connection, direction) and (command, flags, header kind); values a decoder never gives
    // (a fractional connection, flags above 16 bits) would collide with real ones without the range check.
    const flush = wrap(
      "s2c",
      decodeRequest(hex("25609513 0001 0003 0000000000000001 0000000000000000 00000000")),
    );
    expect(textLines(flush)[0]).toBe("Frame 1: connection 0, s2c, offset 0, 28 bytes: request");
    expect(textLines(flush)).toContain("    Type: NBD_CMD_FLUSH (3)");
    // 0.5 * 2 + 0 is the key of connection 0, s2c; command 1 with flags 0x20001 packs like FLUSH with FUA.
    const odd: ConversationFrame = {
      ...flush,
      connection: 0.5,
      direction: "c2s",
      frame: {
        type: "request",
        extended: false,
        flags: 0x20001,
        command: 1,
        cookie: 2n,
        offset: 0n,
        length: 0n,
      },
    };
    const lines = textLines(odd);
    expect(lines[0]).toBe("Frame 1: connection 0.5, c2s, offset 0, 28 bytes: request");
    expect(lines).toContain("    Type: NBD_CMD_WRITE (1)");
    expect(lines).toContain("    Command flags: 0x20001 (NBD_CMD_FLAG_FUA, 0x20000)");
  });

  test("formatEventText() puts a request's block-status payload and findings after the memoised part", () => {
    // Extended BLOCK_STATUS with PAYLOAD_LEN and a reserved flag bit (a finding): effect length 0x10000, id 1.
    const bytes = hex(
      "21E41C71 8020 0007 0000000000000002 0000000000000000 000000000000000C" + "0000000000010000 00000001",
    );
    const r = decodeRequest(bytes, { strict: false });
    const e = wrap("c2s", r);
    expect(e.findings.length).toBeGreaterThan(0);
    const lines = textLines(e, 2);
    expect(lines.slice(0, 9)).toEqual([
      "Frame 2: connection 0, c2s, offset 0, 44 bytes: request (extended header)",
      "    Magic: 0x21e41c71 (NBD_EXTENDED_REQUEST_MAGIC)",
      "    Command flags: 0x8020 (NBD_CMD_FLAG_PAYLOAD_LEN, 0x8000)",
      "    Type: NBD_CMD_BLOCK_STATUS (7)",
      "    Cookie: 2",
      "    Offset: 0",
      "    Length: 12",
      "    Effect length: 65536",
      "    Metadata context ID: 1",
    ]);
    expect(lines.slice(9).length).toBe(e.findings.length);
    for (const [i, f] of e.findings.entries()) {
      expect(lines[9 + i]).toBe(`    [Finding] ${f.code} at ${f.offset}: ${f.message} (rule ${f.rule})`);
    }
  });
});

describe("replies", () => {
  test("formatEventJson() shows a simple reply's error only when it is non-zero", () => {
    const ok = wrap("s2c", decodeSimpleReply(hex("67446698 00000000 0000000000000001")));
    expect(formatEventJson(ok)).toEqual({
      connection: 0,
      direction: "s2c",
      frameOffset: 0,
      frameLength: 16,
      kind: "simple-reply",
      cookie: "1",
      findings: [],
    });
    const bad = wrap("s2c", decodeSimpleReply(hex("67446698 00000005 0000000000000001")), {
      request: readRequest(),
    });
    expect(formatEventJson(bad)).toMatchObject({ error: "NBD_EIO", requestCommand: "NBD_CMD_READ" });
    expect(textLines(bad).slice(1)).toEqual([
      "    Magic: 0x67446698 (NBD_SIMPLE_REPLY_MAGIC)",
      "    Error: NBD_EIO (5)",
      "    Cookie: 1",
      "    [Request: NBD_CMD_READ, offset 0, length 4096]",
    ]);
  });

  test("formatEventJson() shows a simple READ reply's data length", () => {
    const bytes = hex("67446698 00000000 0000000000000001" + "00".repeat(4096));
    const e = wrap("s2c", decodeSimpleReply(bytes, { readLength: 4096 }), { request: readRequest() });
    expect(formatEventJson(e)).toMatchObject({ frameLength: 4112, dataLength: 4096 });
  });

  test("formatEventJson() shows a final NONE chunk with its reply flags", () => {
    const e = wrap("s2c", decodeReplyChunk(hex("668E33EF 0001 0000 0000000000000001 00000000")));
    expect(formatEventJson(e)).toEqual({
      connection: 0,
      direction: "s2c",
      frameOffset: 0,
      frameLength: 20,
      kind: "reply-chunk",
      flags: ["NBD_REPLY_FLAG_DONE"],
      chunkType: "NBD_REPLY_TYPE_NONE",
      cookie: "1",
      extendedHeader: false,
      payloadLength: "0",
      findings: [],
    });
    expect(textLines(e, 2)).toEqual([
      "Frame 2: connection 0, s2c, offset 0, 20 bytes: reply-chunk",
      "    Magic: 0x668e33ef (NBD_STRUCTURED_REPLY_MAGIC)",
      "    Flags: 0x0001 (NBD_REPLY_FLAG_DONE)",
      "    Type: NBD_REPLY_TYPE_NONE (0)",
      "    Cookie: 1",
      "    Length: 0",
    ]);
  });

  test("formatEventJson() shows an ERROR chunk's error and message", () => {
    const e = wrap(
      "s2c",
      decodeReplyChunk(hex("668E33EF 0001 8001 0000000000000001 00000006 | 00000005 0000")),
    );
    expect(formatEventJson(e)).toMatchObject({
      chunkType: "NBD_REPLY_TYPE_ERROR",
      error: "NBD_EIO",
      message: "",
      payloadLength: "6",
    });
    expect(textLines(e).slice(3)).toEqual([
      "    Type: NBD_REPLY_TYPE_ERROR (0x8001)",
      "    Cookie: 1",
      "    Length: 6",
      "    Error: NBD_EIO (5)",
      "    Message length: 0",
      '    Message: ""',
    ]);
  });

  test("formatEventJson() shows ERROR_OFFSET's error, message and offset", () => {
    // EINVAL, message "bad", offset 2^64-1
    const e = wrap(
      "s2c",
      decodeReplyChunk(
        hex("668E33EF 0001 8002 0000000000000003 00000011 | 00000016 0003 626164 FFFFFFFFFFFFFFFF"),
      ),
    );
    expect(formatEventJson(e)).toMatchObject({
      chunkType: "NBD_REPLY_TYPE_ERROR_OFFSET",
      error: "NBD_EINVAL",
      message: "bad",
      offset: U64_MAX,
    });
    expect(textLines(e).slice(-4)).toEqual([
      "    Error: NBD_EINVAL (22)",
      "    Message length: 3",
      '    Message: "bad"',
      `    Error offset: ${U64_MAX}`,
    ]);
  });

  test("formatEventJson() names an unknown chunk type and gives its payload length only", () => {
    const e = wrap(
      "s2c",
      decodeReplyChunk(hex("668E33EF 0001 0003 0000000000000003 00000004 | cafebabe"), { strict: false }),
    );
    const j = formatEventJson(e);
    expect(j).toMatchObject({ chunkType: "NBD_REPLY_TYPE_UNKNOWN(3)", dataLength: 4 });
    expect(JSON.stringify(j)).not.toContain("cafebabe");
  });

  test("formatEventJson() shows OFFSET_DATA's offset and data length, OFFSET_HOLE's offset and size", () => {
    const data = wrap(
      "s2c",
      decodeReplyChunk(hex("668E33EF 0001 0001 0000000000000001 0000000c 0000000000000200 deadbeef")),
    );
    expect(formatEventJson(data)).toMatchObject({
      chunkType: "NBD_REPLY_TYPE_OFFSET_DATA",
      offset: "512",
      dataLength: 4,
    });
    expect(JSON.stringify(formatEventJson(data))).not.toContain("dead");
    const hole = wrap(
      "s2c",
      decodeReplyChunk(hex("668E33EF 0001 0002 0000000000000001 0000000c 0000000000000200 00001000")),
    );
    expect(formatEventJson(hole)).toMatchObject({
      chunkType: "NBD_REPLY_TYPE_OFFSET_HOLE",
      offset: "512",
      holeSize: 4096,
    });
  });

  test("formatEventJson() turns BLOCK_STATUS_EXT descriptors into extents from the request offset", () => {
    const bytes = hex(
      "6E8A278C 0001 0006 0000000000000007 0000000000010000 0000000000000028 | 00000000 00000002" +
        "0000000000001000 0000000000000000 000000000000f000 0000000000000003",
    );
    const request: Request = {
      type: "request",
      extended: true,
      flags: 0,
      command: 7,
      cookie: 7n,
      offset: 65536n,
      length: 65536n,
    };
    const e = wrap("s2c", decodeReplyChunk(bytes), { request, contextName: "base:allocation" });
    expect(formatEventJson(e)).toEqual({
      connection: 0,
      direction: "s2c",
      frameOffset: 0,
      frameLength: 72,
      kind: "reply-chunk",
      flags: ["NBD_REPLY_FLAG_DONE"],
      chunkType: "NBD_REPLY_TYPE_BLOCK_STATUS_EXT",
      cookie: "7",
      extendedHeader: true,
      headerOffset: "65536",
      payloadLength: "40",
      requestCommand: "NBD_CMD_BLOCK_STATUS",
      command: "NBD_CMD_BLOCK_STATUS",
      contextId: 0,
      context: "base:allocation",
      descriptorCount: 2,
      extents: [
        { offset: "65536", length: "4096", status: "0", description: "data" },
        { offset: "69632", length: "61440", status: "3", description: "hole,zero" },
      ],
      findings: [],
    });
    expect(textLines(e).slice(1)).toEqual([
      "    Magic: 0x6e8a278c (NBD_EXTENDED_REPLY_MAGIC)",
      "    Flags: 0x0001 (NBD_REPLY_FLAG_DONE)",
      "    Type: NBD_REPLY_TYPE_BLOCK_STATUS_EXT (6)",
      "    Cookie: 7",
      "    Offset: 65536",
      "    Length: 40",
      "    Metadata context ID: 0 (base:allocation)",
      "    Descriptor count: 2",
      "    Extent: offset 65536, length 4096, status 0x0000000000000000 (data)",
      "    Extent: offset 69632, length 61440, status 0x0000000000000003 (hole,zero)",
      "    [Request: NBD_CMD_BLOCK_STATUS, offset 65536, length 65536]",
    ]);
  });

  test("formatEventJson() shows extents without offsets or labels when request and context are unknown", () => {
    const bytes = hex(
      "6E8A278C 0001 0006 0000000000000007 0000000000000000 0000000000000018 | 00000005 00000001" +
        "FFFFFFFFFFFFFFFF FFFFFFFFFFFFFFFF",
    );
    const e = wrap("s2c", decodeReplyChunk(bytes, { strict: false }));
    expect(formatEventJson(e)).toMatchObject({
      contextId: 5,
      extents: [{ length: U64_MAX, status: U64_MAX }],
    });
    expect(formatEventJson(e).context).toBeUndefined();
  });
});

describe("notices and JSON Lines", () => {
  test("formatEventJson() turns a notice into an object with its kind", () => {
    const n: ConversationEvent = {
      event: "notice",
      notice: "truncated",
      connection: 2,
      direction: "c2s",
      streamOffset: 100,
      length: 7,
      findings: [{ code: "truncated", offset: 100, rule: "stream-truncated", message: "the stream ended" }],
    };
    expect(formatEventJson(n)).toEqual({
      connection: 2,
      direction: "c2s",
      kind: "truncated",
      streamOffset: 100,
      length: 7,
      findings: [{ code: "truncated", offset: 100, rule: "stream-truncated", message: "the stream ended" }],
    });
    expect(textLines(n, 5)).toEqual([
      "Notice 5: connection 2, c2s, offset 100, 7 bytes: truncated",
      "    the stream ended inside a frame",
      "    [Finding] truncated at 100: the stream ended (rule stream-truncated)",
    ]);
  });

  test("formatEventJsonLine() is one line of JSON that parses back to formatEventJson()", () => {
    const e = wrap("c2s", decodeRequest(READ_4096));
    const line = formatEventJsonLine(e);
    expect(line).not.toContain("\n");
    expect(JSON.parse(line)).toEqual(formatEventJson(e));
  });
});

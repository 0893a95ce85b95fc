import { describe, expect, test } from "vitest";
import {
  decodeOptionReply,
  encodeOptionReply,
  encodeOptionReplyInto,
  Info,
  InitFlag,
  isErrorReply,
  isNbdDecodeError,
  Option,
  OptionReply,
  optionReplyByteLength,
  type OptionReplyFrame,
} from "../mod.ts";
import { type CodecUnderTest, fromHex, testVectors, toHex, vectorFile } from "./_harness.ts";

const codecs: Record<string, CodecUnderTest> = {
  "option-reply": {
    decode: decodeOptionReply,
    encode: encodeOptionReply,
    encodeInto: encodeOptionReplyInto,
    byteLength: optionReplyByteLength,
  },
};

describe("option reply vectors", () => {
  testVectors(vectorFile("option-reply"), codecs);
});

const MAGIC = "0003e889045565a9";

function reply(option: number, type: number, data: OptionReplyFrame["data"]): OptionReplyFrame {
  return { type: "option-reply", option, reply: type, data };
}

describe("option reply encoders", () => {
  test("encodeOptionReply() rejects an export size above 2^64-1 with RangeError", () => {
    const frame = reply(Option.GO, OptionReply.INFO, {
      kind: "info",
      info: { kind: "export", info: Info.EXPORT, size: 1n << 64n, transmissionFlags: 1 },
    });
    expect(() => encodeOptionReply(frame)).toThrow(RangeError);
  });
  test("encodeOptionReply() rejects an export size that is neither a bigint nor a number with TypeError", () => {
    const frame = reply(Option.GO, OptionReply.INFO, {
      kind: "info",
      info: { kind: "export", info: Info.EXPORT, size: "512" as unknown as bigint, transmissionFlags: 1 },
    });
    expect(() => encodeOptionReply(frame)).toThrow(TypeError);
  });
  test("encodeOptionReply() rejects an error message over 4096 bytes with RangeError", () => {
    const frame = reply(Option.GO, OptionReply.ERR_UNKNOWN, { kind: "error", message: "m".repeat(4097) });
    expect(() => encodeOptionReply(frame)).toThrow(RangeError);
  });
  test("encodeOptionReply() rejects a context name containing NUL with TypeError", () => {
    const frame = reply(Option.SET_META_CONTEXT, OptionReply.META_CONTEXT, {
      kind: "meta-context",
      id: 1,
      name: "base:\0",
    });
    expect(() => encodeOptionReply(frame)).toThrow(TypeError);
  });
  test("encodeOptionReply() rejects init flags above 16 bits with RangeError", () => {
    const frame = reply(Option.GO, OptionReply.INFO, {
      kind: "info",
      info: { kind: "init-flags", info: Info.INIT_FLAGS, flags: 0x10000 },
    });
    expect(() => encodeOptionReply(frame)).toThrow(RangeError);
  });
  test("encodeOptionReply() rejects an error message under a reply type without bit 31", () => {
    expect(() => encodeOptionReply(reply(Option.GO, OptionReply.ACK, { kind: "error", message: "x" })))
      .toThrow(
        TypeError,
      );
  });
  test("encodeOptionReply() rejects an info payload whose info code contradicts its kind", () => {
    const frame = reply(Option.GO, OptionReply.INFO, {
      kind: "info",
      info: { kind: "name", info: 2 as 1, name: "disk" },
    });
    expect(() => encodeOptionReply(frame)).toThrow(TypeError);
  });
  test("encodeOptionReply() encodes an unassigned error type with its message", () => {
    const b = encodeOptionReply(reply(Option.GO, 0x8000abcd, { kind: "error", message: "hi" }));
    expect(toHex(b)).toBe(MAGIC + "00000007" + "8000abcd" + "00000002" + "6869");
  });
  test("encodeOptionReplyInto() writes at an offset and leaves the bytes around it alone", () => {
    const target = new Uint8Array(50).fill(0xee);
    const frame = reply(Option.LIST, OptionReply.SERVER, {
      kind: "server",
      name: "d\u00efsk",
      description: "x",
    });
    const n = encodeOptionReplyInto(frame, target, 7);
    expect(n).toBe(optionReplyByteLength(frame));
    expect(toHex(target.subarray(7, 7 + n))).toBe(
      MAGIC + "00000003" + "00000002" + "0000000a" + "00000005" + "64c3af736b" + "78",
    );
    expect(target[6]).toBe(0xee);
    expect(target[7 + n]).toBe(0xee);
  });
  test("encodeOptionReplyInto() refuses a target that is too short at that offset", () => {
    const frame = reply(Option.GO, OptionReply.ACK, { kind: "none" });
    expect(() => encodeOptionReplyInto(frame, new Uint8Array(21), 2)).toThrow(RangeError);
  });
  test("encodeOptionReply() writes every init flag combination as the proposal lays it out", () => {
    for (const flags of [0, InitFlag.SPARSE, InitFlag.ZERO, InitFlag.SPARSE | InitFlag.ZERO]) {
      const b = encodeOptionReply(
        reply(Option.GO, OptionReply.INFO, {
          kind: "info",
          info: { kind: "init-flags", info: Info.INIT_FLAGS, flags },
        }),
      );
      expect(toHex(b)).toBe(MAGIC + "00000007" + "00000003" + "00000004" + "0004" + "000" + flags);
    }
  });
});

describe("decodeOptionReply()", () => {
  test("isErrorReply() honours bit 31 for known and unknown reply types", () => {
    expect(isErrorReply(OptionReply.ERR_EXT_HEADER_REQD)).toBe(true);
    expect(isErrorReply(0x80000000)).toBe(true);
    expect(isErrorReply(0xffffffff)).toBe(true);
    expect(isErrorReply(OptionReply.META_CONTEXT)).toBe(false);
    expect(isErrorReply(0x7fffffff)).toBe(false);
  });
  test("decodeOptionReply() decodes an unknown error type as an error with its message", () => {
    const r = decodeOptionReply(fromHex(MAGIC + "00000007" + "80001234" + "00000003" + "626164"));
    expect(r.done && r.frame.data).toEqual({ kind: "error", message: "bad" });
  });
  test("decodeOptionReply() refuses a data length above the limit before the data has arrived", () => {
    const header = fromHex(MAGIC + "00000007" + "00000003" + "00100000");
    expect(decodeOptionReply(header).done).toBe(false);
    let caught: unknown;
    try {
      decodeOptionReply(header, { maxPayloadLength: 1024, strict: false });
    } catch (e) {
      caught = e;
    }
    expect(isNbdDecodeError(caught) && caught.code).toBe("limit-exceeded");
    expect(isNbdDecodeError(caught) && caught.offset).toBe(16);
  });
  test("decodeOptionReply() keeps a malformed NBD_INFO_EXPORT as a view of the input in lenient mode", () => {
    const bytes = fromHex(MAGIC + "00000007" + "00000003" + "00000004" + "0000" + "0001");
    const r = decodeOptionReply(bytes, { strict: false });
    if (!r.done || r.frame.data.kind !== "raw") throw new Error("expected raw data");
    expect(r.frame.data.raw.buffer).toBe(bytes.buffer);
    expect(r.frame.data.raw.byteOffset).toBe(20);
    expect(toHex(r.frame.data.raw)).toBe("00000001");
    expect(r.findings.map((f) => f.rule)).toEqual(["info-export-length"]);
    expect(toHex(encodeOptionReply(r.frame))).toBe(toHex(bytes));
  });
  test("decodeOptionReply() keeps an unknown info type's payload losslessly and re-encodes it", () => {
    const bytes = fromHex(MAGIC + "00000006" + "00000003" + "00000005" + "0009" + "aabbcc");
    const r = decodeOptionReply(bytes);
    if (!r.done || r.frame.data.kind !== "info") throw new Error("expected info");
    expect(r.frame.data.info).toEqual({ kind: "unknown", info: 9, raw: fromHex("aabbcc") });
    expect(toHex(encodeOptionReply(r.frame))).toBe(toHex(bytes));
  });
  test("decodeOptionReply() checks the echoed option only when pendingOption is given", () => {
    const bytes = fromHex(MAGIC + "00000003" + "00000001" + "00000000");
    expect(decodeOptionReply(bytes).done).toBe(true);
    expect(() => decodeOptionReply(bytes, { pendingOption: Option.GO })).toThrowError(/pending option/);
  });
  test("decodeOptionReply() throws only NbdDecodeError on garbage, in both modes", () => {
    for (let seed = 1; seed < 400; seed++) {
      const bytes = new Uint8Array(22 + (seed % 30));
      let x = seed;
      for (let i = 0; i < bytes.length; i++) {
        x = (x * 1103515245 + 12345) >>> 0;
        bytes[i] = x >>> 24;
      }
      bytes.set(fromHex(MAGIC));
      bytes.set([seed % 2 === 0 ? 0x80 : 0, 0, 0, 1 + (seed % 5)], 12);
      bytes.set([0, 0, 0, seed % 30], 16);
      bytes.set([0, seed % 6], 20);
      for (const strict of [true, false]) {
        try {
          decodeOptionReply(bytes, { strict, pendingOption: 7 });
        } catch (e) {
          expect(isNbdDecodeError(e)).toBe(true);
        }
      }
    }
  });
});

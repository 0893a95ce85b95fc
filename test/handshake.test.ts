import { describe, expect, test } from "vitest";
import {
  clientFlagsByteLength,
  decodeClientFlags,
  decodeExportNameReply,
  decodeGreeting,
  encodeClientFlags,
  encodeClientFlagsInto,
  encodeExportNameReply,
  encodeExportNameReplyInto,
  encodeGreeting,
  encodeGreetingInto,
  exportNameReplyByteLength,
  greetingByteLength,
} from "../mod.ts";
import { type CodecUnderTest, fromHex, testVectors, vectorFile } from "./_harness.ts";

const codecs: Record<string, CodecUnderTest> = {
  "greeting": {
    decode: decodeGreeting,
    encode: encodeGreeting,
    encodeInto: encodeGreetingInto,
    byteLength: greetingByteLength,
  },
  "client-flags": {
    decode: decodeClientFlags,
    encode: encodeClientFlags,
    encodeInto: encodeClientFlagsInto,
    byteLength: clientFlagsByteLength,
  },
  "export-name-reply": {
    decode: (b, o) => decodeExportNameReply(b, { noZeroes: false, ...o }),
    encode: encodeExportNameReply,
    encodeInto: encodeExportNameReplyInto,
    byteLength: exportNameReplyByteLength,
  },
};

describe("handshake vectors", () => {
  testVectors(vectorFile("handshake"), codecs);
});

describe("handshake encoders", () => {
  test("encodeGreeting() rejects an oldstyle size above 2^64-1", () => {
    expect(() =>
      encodeGreeting({ type: "oldstyle-greeting", size: 1n << 64n, handshakeFlags: 0, transmissionFlags: 1 })
    ).toThrow(RangeError);
  });
  test("encodeGreeting() rejects a size that is neither a bigint nor a number", () => {
    expect(() =>
      encodeGreeting({
        type: "oldstyle-greeting",
        size: "5" as unknown as bigint,
        handshakeFlags: 0,
        transmissionFlags: 1,
      })
    ).toThrow(TypeError);
  });
  test("encodeClientFlagsInto() refuses a target that is too short at that offset", () => {
    expect(() => encodeClientFlagsInto({ type: "client-flags", flags: 1 }, new Uint8Array(5), 2)).toThrow(
      RangeError,
    );
  });
  test("decodeGreeting() names the second magic when it is neither IHAVEOPT nor cliserv", () => {
    const bytes = fromHex("4e42444d41474943" + "0000000000000000" + "0003");
    expect(() => decodeGreeting(bytes)).toThrowError(/second magic is 0x0000000000000000/);
  });
  test("decodeExportNameReply() needs 134 bytes without NO_ZEROES and 10 with it", () => {
    const ten = new Uint8Array(10);
    ten[9] = 1;
    expect(decodeExportNameReply(ten, { noZeroes: true }).done).toBe(true);
    const r = decodeExportNameReply(ten, { noZeroes: false });
    expect(r).toEqual({ done: false, needed: 124 });
  });
  test("decode options reject an offset outside the input", () => {
    expect(() => decodeClientFlags(new Uint8Array(4), { offset: 5 })).toThrow(RangeError);
  });
});

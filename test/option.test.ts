import { describe, expect, test } from "vitest";
import {
  decodeOptionRequest,
  encodeOptionRequest,
  encodeOptionRequestInto,
  isNbdDecodeError,
  Option,
  type OptionRequest,
  optionRequestByteLength,
} from "../mod.ts";
import { type CodecUnderTest, fromHex, testVectors, toHex, vectorFile } from "./_harness.ts";

const codecs: Record<string, CodecUnderTest> = {
  "option-request": {
    decode: decodeOptionRequest,
    encode: encodeOptionRequest,
    encodeInto: encodeOptionRequestInto,
    byteLength: optionRequestByteLength,
  },
};

describe("option vectors", () => {
  testVectors(vectorFile("option"), codecs);
});

const IHAVEOPT = "49484156454f5054";

function request(option: number, data: OptionRequest["data"]): OptionRequest {
  return { type: "option-request", option, data };
}

describe("option request encoders", () => {
  test("encodeOptionRequest() rejects an export name over 4096 bytes with RangeError", () => {
    const frame = request(Option.EXPORT_NAME, { kind: "export-name", name: "x".repeat(4097) });
    expect(() => encodeOptionRequest(frame)).toThrow(RangeError);
  });
  test("encodeOptionRequest() counts UTF-8 bytes, not characters, against the 4096-byte limit", () => {
    const name = "\u00e9".repeat(2049); // 4098 bytes of UTF-8
    expect(() => encodeOptionRequest(request(Option.GO, { kind: "info-request", name, info: [] }))).toThrow(
      RangeError,
    );
  });
  test("encodeOptionRequest() rejects a name containing NUL with TypeError", () => {
    const frame = request(Option.EXPORT_NAME, { kind: "export-name", name: "a\0b" });
    expect(() => encodeOptionRequest(frame)).toThrow(TypeError);
  });
  test("encodeOptionRequest() rejects a query that is not a string with TypeError", () => {
    const frame = request(Option.SET_META_CONTEXT, {
      kind: "meta-context-query",
      name: "",
      queries: [5 as unknown as string],
    });
    expect(() => encodeOptionRequest(frame)).toThrow(TypeError);
  });
  test("encodeOptionRequest() rejects an info type above 65535 with RangeError", () => {
    const frame = request(Option.GO, { kind: "info-request", name: "", info: [0x10000] });
    expect(() => encodeOptionRequest(frame)).toThrow(RangeError);
  });
  test("encodeOptionRequest() rejects an option code that is not a 32-bit integer", () => {
    expect(() => encodeOptionRequest(request(-1, { kind: "none" }))).toThrow(RangeError);
    expect(() => encodeOptionRequest(request(1.5, { kind: "none" }))).toThrow(TypeError);
  });
  test("encodeOptionRequest() rejects data whose kind does not fit the option with TypeError", () => {
    expect(() => encodeOptionRequest(request(Option.GO, { kind: "export-name", name: "x" }))).toThrow(
      TypeError,
    );
    expect(() => encodeOptionRequest(request(Option.GO, { kind: "none" }))).toThrow(TypeError);
    expect(() =>
      encodeOptionRequest(request(Option.LIST, { kind: "raw", raw: "00" as unknown as Uint8Array }))
    )
      .toThrow(TypeError);
  });
  test("encodeOptionRequest() writes raw data under any option, so peers can be tested with bad frames", () => {
    const b = encodeOptionRequest(request(Option.LIST, { kind: "raw", raw: new Uint8Array([9]) }));
    expect(toHex(b)).toBe(IHAVEOPT + "00000003" + "00000001" + "09");
  });
  test("encodeOptionRequestInto() writes at an offset and leaves the bytes around it alone", () => {
    const target = new Uint8Array(60).fill(0xee);
    const frame = request(Option.SET_META_CONTEXT, {
      kind: "meta-context-query",
      name: "d\u00efsk",
      queries: ["base:allocation"],
    });
    const n = encodeOptionRequestInto(frame, target, 3);
    expect(n).toBe(optionRequestByteLength(frame));
    expect(toHex(target.subarray(3, 3 + n))).toBe(
      IHAVEOPT + "0000000a" + "00000020" + "00000005" + "64c3af736b" + "00000001" + "0000000f" +
        "626173653a616c6c6f636174696f6e",
    );
    expect(target[2]).toBe(0xee);
    expect(target[3 + n]).toBe(0xee);
  });
  test("encodeOptionRequestInto() refuses a target that is too short at that offset", () => {
    const frame = request(Option.ABORT, { kind: "none" });
    expect(() => encodeOptionRequestInto(frame, new Uint8Array(17), 2)).toThrow(RangeError);
  });
});

describe("decodeOptionRequest()", () => {
  test("decodeOptionRequest() refuses a data length above the limit before the data has arrived", () => {
    const header = fromHex(IHAVEOPT + "00000001" + "00100000");
    expect(decodeOptionRequest(header).done).toBe(false);
    let caught: unknown;
    try {
      decodeOptionRequest(header, { maxPayloadLength: 4096 });
    } catch (e) {
      caught = e;
    }
    expect(isNbdDecodeError(caught) && caught.code).toBe("limit-exceeded");
    expect(isNbdDecodeError(caught) && caught.offset).toBe(12);
  });
  test("decodeOptionRequest() asks for exactly the missing data bytes", () => {
    const r = decodeOptionRequest(fromHex(IHAVEOPT + "00000001" + "00000004" + "64"));
    expect(r).toEqual({ done: false, needed: 3 });
  });
  test("decodeOptionRequest() keeps malformed GO data as a view of the input in lenient mode", () => {
    const bytes = fromHex(IHAVEOPT + "00000007" + "00000007" + "00000005" + "000000");
    const r = decodeOptionRequest(bytes, { strict: false });
    expect(r.done).toBe(true);
    if (!r.done || r.frame.data.kind !== "raw") throw new Error("expected raw data");
    expect(r.frame.data.raw.buffer).toBe(bytes.buffer);
    expect(r.frame.data.raw.byteOffset).toBe(16);
    expect(toHex(r.frame.data.raw)).toBe("00000005000000");
    expect(r.findings.map((f) => f.rule)).toEqual(["option-info-name-length"]);
    expect(toHex(encodeOptionRequest(r.frame))).toBe(toHex(bytes));
  });
  test("decodeOptionRequest() keeps an unknown option's data losslessly and re-encodes it byte for byte", () => {
    const bytes = fromHex(IHAVEOPT + "00001234" + "00000005" + "0102030405");
    const r = decodeOptionRequest(bytes);
    expect(r.done && r.findings).toEqual([]);
    if (!r.done) return;
    expect(r.frame.option).toBe(0x1234);
    expect(r.frame.data).toEqual({ kind: "raw", raw: fromHex("0102030405") });
    expect(toHex(encodeOptionRequest(r.frame))).toBe(toHex(bytes));
  });
  test("decodeOptionRequest() reports findings with absolute offsets when the frame starts at an offset", () => {
    const frame = IHAVEOPT + "00000007" + "0000000a" + "00000000" + "0002" + "0003" + "0003";
    const bytes = fromHex("ffffff" + frame);
    const r = decodeOptionRequest(bytes, { offset: 3, strict: false });
    expect(r.done && r.findings.map((f) => [f.code, f.offset])).toEqual([["duplicate", 27]]);
  });
  test("decodeOptionRequest() throws only NbdDecodeError on garbage, in both modes", () => {
    for (let seed = 1; seed < 300; seed++) {
      const bytes = new Uint8Array(16 + (seed % 40));
      let x = seed;
      for (let i = 0; i < bytes.length; i++) {
        x = (x * 1103515245 + 12345) >>> 0;
        bytes[i] = x >>> 24;
      }
      bytes.set(fromHex(IHAVEOPT));
      bytes.set([0, 0, 0, 1 + (seed % 11)], 8);
      bytes.set([0, 0, 0, seed % 40], 12);
      for (const strict of [true, false]) {
        try {
          decodeOptionRequest(bytes, { strict });
        } catch (e) {
          expect(isNbdDecodeError(e)).toBe(true);
        }
      }
    }
  });
});

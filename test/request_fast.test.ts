// The allocation-free header paths must agree with the object API on every valid and acceptable vector.
import { describe, expect, test } from "vitest";
import {
  createReplyHeaderFields,
  createRequestHeaderFields,
  decodeReply,
  decodeReplyHeaderInto,
  decodeRequest,
  decodeRequestHeaderInto,
  encodeReplyHeaderInto,
  encodeRequestHeaderInto,
  isNbdDecodeError,
  type ReplyChunk,
  type SimpleReply,
} from "../mod.ts";
import { fromHex, toHex, vectorFile } from "./_harness.ts";

const TWO32 = 2n ** 32n;
const join = (hi: number, lo: number): bigint => BigInt(hi) * TWO32 + BigInt(lo);

describe("request fast path", () => {
  const f = createRequestHeaderFields();
  for (const v of vectorFile("request").vectors) {
    if (v.result === "invalid") continue;
    test(`decodeRequestHeaderInto() agrees with decodeRequest() on ${v.id}`, () => {
      const bytes = fromHex(v.hex);
      const r = decodeRequest(bytes, { ...v.context, strict: false });
      if (!r.done) throw new Error("vector did not decode");
      const big = new Uint8Array(bytes.length + 7);
      big.set(bytes, 5);
      const n = decodeRequestHeaderInto(big, 5, f);
      expect(n).toBe(r.frame.extended ? 32 : 28);
      expect(f.extended).toBe(r.frame.extended);
      expect(f.flags).toBe(r.frame.flags);
      expect(f.command).toBe(r.frame.command);
      expect(join(f.cookieHi, f.cookieLo)).toBe(r.frame.cookie);
      expect(join(f.offsetHi, f.offsetLo)).toBe(r.frame.offset);
      expect(join(f.lengthHi, f.lengthLo)).toBe(r.frame.length);
      expect(n + f.payloadLength).toBe(r.byteLength);
      // and back: the header bytes come out unchanged
      const out = new Uint8Array(n + 4).fill(0x5a);
      expect(encodeRequestHeaderInto(out, 2, f)).toBe(n);
      expect(toHex(out.subarray(2, 2 + n))).toBe(v.hex.slice(0, 2 * n));
      expect(out[0]).toBe(0x5a);
      expect(out[n + 2]).toBe(0x5a);
    });
  }

  test("decodeRequestHeaderInto() returns minus the bytes still needed, at every prefix", () => {
    const hex = vectorFile("request").vectors.find((v) => v.id === "request-extended-read-64bit")!.hex;
    const bytes = fromHex(hex);
    for (let i = 0; i < 32; i++) {
      const n = decodeRequestHeaderInto(bytes.subarray(0, i), 0, f);
      expect(n).toBeLessThan(0);
      expect(-n).toBeLessThanOrEqual(32 - i);
    }
  });

  test("decodeRequestHeaderInto() throws bad-magic like decodeRequest()", () => {
    let e: unknown;
    try {
      decodeRequestHeaderInto(new Uint8Array(28), 0, f);
    } catch (x) {
      e = x;
    }
    expect(isNbdDecodeError(e) && e.code).toBe("bad-magic");
  });

  test("encodeRequestHeaderInto() rejects out-of-range halves and a 64-bit compact length", () => {
    const g = createRequestHeaderFields();
    const buf = new Uint8Array(32);
    g.cookieHi = 2 ** 32;
    expect(() => encodeRequestHeaderInto(buf, 0, g)).toThrow(RangeError);
    g.cookieHi = 0;
    g.lengthHi = 1;
    expect(() => encodeRequestHeaderInto(buf, 0, g)).toThrow(RangeError);
    g.extended = true;
    expect(encodeRequestHeaderInto(buf, 0, g)).toBe(32);
    g.flags = 1.5;
    expect(() => encodeRequestHeaderInto(buf, 0, g)).toThrow(TypeError);
  });
});

describe("reply fast path", () => {
  const f = createReplyHeaderFields();
  for (const v of vectorFile("reply").vectors) {
    if (v.result === "invalid") continue;
    test(`decodeReplyHeaderInto() agrees with decodeReply() on ${v.id}`, () => {
      const bytes = fromHex(v.hex);
      const r = decodeReply(bytes, { ...v.context, strict: false });
      if (!r.done) throw new Error("vector did not decode");
      const n = decodeReplyHeaderInto(bytes, 0, f);
      const frame = r.frame as SimpleReply | ReplyChunk;
      if (frame.type === "simple-reply") {
        expect(n).toBe(16);
        expect(f.style).toBe("simple");
        expect(f.error).toBe(frame.error);
      } else {
        expect(n).toBe(frame.extended ? 32 : 20);
        expect(f.style).toBe(frame.extended ? "extended" : "structured");
        expect(f.flags).toBe(frame.flags);
        expect(f.chunkType).toBe(frame.chunkType);
        expect(join(f.offsetHi, f.offsetLo)).toBe(frame.offset ?? 0n);
        expect(n + f.lengthHi * 2 ** 32 + f.lengthLo).toBe(r.byteLength);
      }
      expect(join(f.cookieHi, f.cookieLo)).toBe(frame.cookie);
      const out = new Uint8Array(n + 3).fill(0x5a);
      expect(encodeReplyHeaderInto(out, 1, f)).toBe(n);
      expect(toHex(out.subarray(1, 1 + n))).toBe(v.hex.slice(0, 2 * n));
      expect(out[0]).toBe(0x5a);
      expect(out[n + 1]).toBe(0x5a);
    });
  }

  test("decodeReplyHeaderInto() returns minus the bytes still needed", () => {
    expect(decodeReplyHeaderInto(new Uint8Array(0), 0, f)).toBe(-16);
    expect(decodeReplyHeaderInto(fromHex("6e8a278c00010000"), 0, f)).toBe(-24);
  });

  test("encodeReplyHeaderInto() rejects an unknown style and a 64-bit structured length", () => {
    const g = createReplyHeaderFields();
    const buf = new Uint8Array(32);
    g.style = "structured";
    g.lengthHi = 1;
    expect(() => encodeReplyHeaderInto(buf, 0, g)).toThrow(RangeError);
    (g as { style: string }).style = "other";
    expect(() => encodeReplyHeaderInto(buf, 0, g)).toThrow(TypeError);
  });
});

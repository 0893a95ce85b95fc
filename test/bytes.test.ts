// The big-endian field readers every decoder uses (codec/_bytes.ts). u64() takes a shortcut below 2^53:
// these pin both sides of that boundary, and random bytes against the spec's definition of a u64 (eight
// bytes, most significant first), computed here digit by digit without the readers.
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { u32, u64, u64AsNumber } from "../codec/_bytes.ts";
import { fromHex } from "./_harness.ts";

/** The value of big-endian bytes, byte by byte. */
function reference(bytes: Uint8Array): bigint {
  let v = 0n;
  for (const b of bytes) v = v * 256n + BigInt(b);
  return v;
}

describe("u64", () => {
  test.each([
    ["0000000000000000", 0n],
    ["0000000000000001", 1n],
    ["00000000ffffffff", 4294967295n],
    ["0000000100000000", 4294967296n],
    // 2^53 - 1: the last value of the shortcut.
    ["001fffffffffffff", 9007199254740991n],
    // 2^53 and 2^53 + 1: the first values past it (2^53 + 1 is not a double).
    ["0020000000000000", 9007199254740992n],
    ["0020000000000001", 9007199254740993n],
    ["ffffffffffffffff", 18446744073709551615n],
    ["8000000000000000", 9223372036854775808n],
    ["0003e889045565a9", 0x0003e889045565a9n],
  ])("%s is %s", (hex, value) => {
    expect(u64(fromHex(hex), 0)).toBe(value);
    // At an offset inside a larger buffer, as the decoders read it.
    expect(u64(fromHex("aa" + hex + "bb"), 1)).toBe(value);
  });

  test("any eight bytes read as their big-endian value", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 8, maxLength: 8 }), (bytes) => {
        expect(u64(bytes, 0)).toBe(reference(bytes));
      }),
      { numRuns: 5000 },
    );
  });

  test("values around 2^53 read exactly", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 2n ** 52n, max: 2n ** 54n }), (v) => {
        const bytes = new Uint8Array(8);
        for (let i = 7, x = v; i >= 0; i--, x >>= 8n) bytes[i] = Number(x & 0xffn);
        expect(u64(bytes, 0)).toBe(v);
        // u64AsNumber agrees below 2^53 and says -1 from it on.
        expect(u64AsNumber(bytes, 0)).toBe(v < 2n ** 53n ? Number(v) : -1);
      }),
      { numRuns: 5000 },
    );
  });

  test("u32 reads four big-endian bytes as an unsigned number", () => {
    expect(u32(fromHex("ffffffff"), 0)).toBe(4294967295);
    expect(u32(fromHex("80000000"), 0)).toBe(2147483648);
    expect(u32(fromHex("00000001"), 0)).toBe(1);
  });
});

import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import {
  Command,
  CommandFlag,
  decodeRequest,
  decodeRequestHeader,
  encodeRequest,
  encodeRequestInto,
  isNbdDecodeError,
  type Request,
  requestByteLength,
} from "../mod.ts";
import { type CodecUnderTest, fromHex, testVectors, toHex, VECTOR_DIR, vectorFile } from "./_harness.ts";

const codecs: Record<string, CodecUnderTest> = {
  "request": {
    decode: decodeRequest,
    encode: encodeRequest,
    encodeInto: encodeRequestInto,
    byteLength: requestByteLength,
    payload: (frame: Request) => frame.data,
  },
};

describe("request vectors", () => {
  testVectors(vectorFile("request"), codecs);
});

const READ_4K = "25609513" + "0000" + "0000" + "0000000000000001" + "0000000000000000" + "00001000";

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

describe("decodeRequest()", () => {
  test("decodeRequest() returns the write payload as a view of the input, not a copy", () => {
    const bytes = fromHex(
      "25609513" + "0000" + "0001" + "0000000000000002" + "0000000000000000" + "00000004" + "01020304",
    );
    const r = decodeRequest(bytes);
    expect(r.done).toBe(true);
    if (!r.done) return;
    expect(r.frame.data!.buffer).toBe(bytes.buffer);
    expect(r.frame.data!.byteOffset).toBe(28);
  });

  test("decodeRequest() refuses a payload above maxPayloadLength before the payload arrives", () => {
    const header = fromHex(
      "21e41c71" + "0020" + "0001" + "0000000000000001" + "0000000000000000" + "0000000000100000",
    );
    expect(decodeRequest(header, { maxPayloadLength: 1 << 21 })).toEqual({ done: false, needed: 1 << 20 });
    const e = thrown(() => decodeRequest(header, { maxPayloadLength: 1 << 19 }));
    expect(isNbdDecodeError(e) && e.code).toBe("limit-exceeded");
    expect(isNbdDecodeError(e) && e.offset).toBe(24);
  });

  test("decodeRequest() needs at least the compact header length before the magic is known", () => {
    expect(decodeRequest(new Uint8Array(0))).toEqual({ done: false, needed: 28 });
    expect(decodeRequest(fromHex("21e41c71"))).toEqual({ done: false, needed: 28 });
  });

  test("decodeRequest() reports offsets from the start of the array when decoding at an offset", () => {
    const bytes = fromHex(
      "aaaa" + "25609513" + "0040" + "0000" + "0000000000000001" + "0000000000000000" + "00001000",
    );
    const r = decodeRequest(bytes, { offset: 2, strict: false });
    expect(r.done && r.findings[0]?.offset).toBe(6);
  });

  test("decodeRequest() names the wrong magic in its message", () => {
    const e = thrown(() => decodeRequest(fromHex("12560953" + "00".repeat(24))));
    expect(String((e as Error).message)).toMatch(/0x12560953/);
  });

  test("decodeRequest() decodes qemu 10's captured extended WRITE without PAYLOAD_LEN in lenient mode", () => {
    const c2s = new Uint8Array(readFileSync(VECTOR_DIR + "captures/qemu10-ext-io.c2s.bin"));
    expect(() => decodeRequest(c2s, { offset: 87 })).toThrowError(/PAYLOAD_LEN/);
    const r = decodeRequest(c2s, { offset: 87, strict: false, extendedHeaders: true });
    expect(r.done).toBe(true);
    if (!r.done) return;
    expect(r.byteLength).toBe(32 + 65536);
    expect(r.frame.command).toBe(Command.WRITE);
    expect(r.frame.flags).toBe(CommandFlag.FUA);
    expect(r.frame.data!.length).toBe(65536);
    expect(r.findings.map((f) => [f.code, f.offset, f.rule])).toEqual([[
      "bad-value",
      91,
      "write-payload-len",
    ]]);
  });

  test("decodeRequestHeader() gives the payload length without waiting for the payload", () => {
    const bytes = fromHex(
      "21e41c71" + "0020" + "0001" + "0000000000000002" + "0000000000000000" + "0000000000000200",
    );
    const r = decodeRequestHeader(bytes);
    expect(r.done && r.frame.payloadLength).toBe(512);
    expect(r.done && r.byteLength).toBe(32);
  });

  test("decodeRequestHeader() counts the payload of qemu's extended WRITE without PAYLOAD_LEN", () => {
    const bytes = fromHex(
      "21e41c71" + "0000" + "0001" + "0000000000000002" + "0000000000000000" + "0000000000000200",
    );
    const r = decodeRequestHeader(bytes, { strict: false });
    expect(r.done && r.frame.payloadLength).toBe(512);
    expect(r.done && r.findings.map((f) => f.rule)).toEqual(["write-payload-len"]);
  });
});

describe("encodeRequest()", () => {
  const base: Request = {
    type: "request",
    extended: false,
    flags: 0,
    command: Command.READ,
    cookie: 1n,
    offset: 0n,
    length: 4096n,
  };

  test("encodeRequest() writes the compact READ of the worked example", () => {
    expect(toHex(encodeRequest(base))).toBe(READ_4K);
  });

  test("encodeRequest() round-trips 64-bit extremes exactly", () => {
    const max = 0xffff_ffff_ffff_ffffn;
    const f: Request = { ...base, extended: true, cookie: max, offset: max, length: max };
    const r = decodeRequest(encodeRequest(f));
    expect(r.done && r.frame).toEqual(f);
  });

  test("encodeRequest() rejects a compact length above 32 bits", () => {
    expect(() => encodeRequest({ ...base, length: 1n << 32n })).toThrow(RangeError);
  });

  test("encodeRequest() rejects an offset above 2^64-1 and a cookie that is neither a bigint nor a number", () => {
    expect(() => encodeRequest({ ...base, offset: 1n << 64n })).toThrow(RangeError);
    expect(() => encodeRequest({ ...base, cookie: "1" as unknown as bigint })).toThrow(TypeError);
  });

  test("encodeRequest() rejects flags above 16 bits", () => {
    expect(() => encodeRequest({ ...base, flags: 0x10000 })).toThrow(RangeError);
  });

  test("encodeRequest() rejects write data whose length differs from the length field", () => {
    expect(() => encodeRequest({ ...base, command: Command.WRITE, length: 5n, data: new Uint8Array(4) }))
      .toThrow(RangeError);
  });

  test("encodeRequest() writes the header only for a WRITE, never the data", () => {
    const data = new Uint8Array(1 << 16);
    const h = encodeRequest({
      ...base,
      extended: true,
      flags: CommandFlag.PAYLOAD_LEN,
      command: Command.WRITE,
      length: BigInt(data.length),
      data,
    });
    expect(h.length).toBe(32);
  });

  test("encodeRequest() includes the block-status payload form and checks its length", () => {
    const f: Request = {
      ...base,
      extended: true,
      flags: CommandFlag.PAYLOAD_LEN,
      command: Command.BLOCK_STATUS,
      length: 12n,
      blockStatus: { effectLength: 1n << 40n, contextIds: [3] },
    };
    expect(requestByteLength(f)).toBe(44);
    expect(toHex(encodeRequest(f).subarray(32))).toBe("0000010000000000" + "00000003");
    expect(() => encodeRequest({ ...f, length: 16n })).toThrow(RangeError);
  });

  test("encodeRequestInto() refuses a target too short at that offset", () => {
    expect(() => encodeRequestInto(base, new Uint8Array(30), 3)).toThrow(RangeError);
  });
});

describe("request properties", () => {
  const u64 = fc.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn });
  test("encodeRequest() then decodeRequest() gives the frame back, for any header fields", () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.constantFrom(0, 2, 3, 4, 5, 6, 7, 8, 200),
        u64,
        u64,
        u64,
        (extended, command, cookie, offset, length) => {
          const f: Request = {
            type: "request",
            extended,
            flags: 0,
            command,
            cookie,
            offset: command === Command.DISC || command === Command.FLUSH ? 0n : offset,
            length: command === Command.DISC || command === Command.FLUSH
              ? 0n
              : extended
              ? length
              : length & 0xffff_ffffn,
          };
          const r = decodeRequest(encodeRequest(f), { extendedHeaders: extended });
          expect(r.done && r.frame).toEqual(f);
        },
      ),
    );
  });

  test("decodeRequest() in lenient mode never throws anything but NbdDecodeError on arbitrary bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 64 }), fc.boolean(), (tail, extended) => {
        const bytes = new Uint8Array(4 + tail.length);
        bytes.set(fromHex(extended ? "21e41c71" : "25609513"));
        bytes.set(tail, 4);
        try {
          decodeRequest(bytes, { strict: false });
        } catch (e) {
          expect(isNbdDecodeError(e)).toBe(true);
        }
      }),
    );
  });
});

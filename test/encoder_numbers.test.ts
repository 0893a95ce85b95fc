// Encoders take a safe-integer number wherever a 64-bit field asks for a bigint (issue 15, API papercuts):
// the bytes are the same as with the bigint, and a number that is not a safe non-negative integer is refused.
import { describe, expect, test } from "vitest";
import {
  Command,
  encodeExportNameReply,
  encodeGreeting,
  encodeOptionReply,
  encodeReplyChunk,
  encodeRequest,
  encodeSimpleReply,
  Info,
  Option,
  OptionReply,
  ReplyFlag,
  ReplyType,
} from "../mod.ts";
import { toHex } from "./_harness.ts";

describe("encoders accept safe-integer numbers for 64-bit fields", () => {
  test("encodeRequest() writes number cookie, offset and length as the spec's u64 fields", () => {
    const hex = toHex(encodeRequest({
      type: "request",
      extended: false,
      flags: 0,
      command: Command.READ,
      cookie: 1,
      offset: 4096,
      length: 512,
    }));
    // Written by hand: magic 0x25609513, flags 0, type 0 (READ), cookie 1, offset 4096, length 512.
    expect(hex).toBe("25609513" + "0000" + "0000" + "0000000000000001" + "0000000000001000" + "00000200");
  });

  test("encodeRequest() writes 2^53-1 as a number exactly, in an extended header", () => {
    const hex = toHex(encodeRequest({
      type: "request",
      extended: true,
      flags: 0,
      command: Command.TRIM,
      cookie: Number.MAX_SAFE_INTEGER,
      offset: 0x1_0000_0000,
      length: 2 ** 40,
    }));
    expect(hex).toBe(
      "21e41c71" + "0000" + "0004" + "001fffffffffffff" + "0000000100000000" + "0000010000000000",
    );
  });

  test("encodeRequest() checks WRITE data and block-status payload lengths given as numbers", () => {
    const data = new Uint8Array(8);
    const write = {
      type: "request",
      extended: false,
      flags: 0,
      command: Command.WRITE,
      cookie: 2,
      offset: 0,
    } as const;
    expect(encodeRequest({ ...write, length: 8, data } as const).length).toBe(28);
    expect(() => encodeRequest({ ...write, length: 9, data } as const)).toThrow(RangeError);
    const bs = encodeRequest({
      type: "request",
      extended: true,
      flags: 0x20, // PAYLOAD_LEN
      command: Command.BLOCK_STATUS,
      cookie: 3,
      offset: 0,
      length: 12,
      blockStatus: { effectLength: 65536, contextIds: [1] },
    });
    expect(toHex(bs.subarray(32))).toBe("0000000000010000" + "00000001");
  });

  test("the number and the bigint forms give the same bytes in every encoder with a 64-bit field", () => {
    expect(
      encodeGreeting({ type: "oldstyle-greeting", size: 1 << 20, handshakeFlags: 0, transmissionFlags: 1 }),
    )
      .toEqual(
        encodeGreeting({
          type: "oldstyle-greeting",
          size: 1n << 20n,
          handshakeFlags: 0,
          transmissionFlags: 1,
        }),
      );
    expect(
      encodeExportNameReply({
        type: "export-name-reply",
        size: 512,
        transmissionFlags: 1,
        zeroPadding: false,
      }),
    )
      .toEqual(encodeExportNameReply({
        type: "export-name-reply",
        size: 512n,
        transmissionFlags: 1,
        zeroPadding: false,
      }));
    const info = (size: bigint | number) =>
      encodeOptionReply({
        type: "option-reply",
        option: Option.GO,
        reply: OptionReply.INFO,
        data: { kind: "info", info: { kind: "export", info: Info.EXPORT, size, transmissionFlags: 1 } },
      });
    expect(toHex(info(2 ** 33))).toBe(toHex(info(2n ** 33n)));
    expect(encodeSimpleReply({ type: "simple-reply", error: 0, cookie: 9 }))
      .toEqual(encodeSimpleReply({ type: "simple-reply", error: 0, cookie: 9n }));
    const chunk = (v: bigint | number) =>
      encodeReplyChunk({
        type: "reply-chunk",
        extended: true,
        flags: ReplyFlag.DONE,
        chunkType: ReplyType.OFFSET_HOLE,
        cookie: v,
        offset: v,
        payload: { kind: "offset-hole", offset: v, holeSize: 512 },
      });
    expect(toHex(chunk(123456789))).toBe(toHex(chunk(123456789n)));
    const err = (v: bigint | number) =>
      encodeReplyChunk({
        type: "reply-chunk",
        extended: false,
        flags: ReplyFlag.DONE,
        chunkType: ReplyType.ERROR_OFFSET,
        cookie: 1n,
        payload: { kind: "error", error: 5, message: "", offset: v },
      });
    expect(toHex(err(4096))).toBe(toHex(err(4096n)));
  });

  test("a number above 2^53-1 is a RangeError (it may already be rounded), a fraction a TypeError", () => {
    const read = {
      type: "request",
      extended: false,
      flags: 0,
      command: Command.READ,
      cookie: 1,
      length: 0,
    } as const;
    expect(() => encodeRequest({ ...read, offset: 2 ** 53 } as const)).toThrow(RangeError);
    expect(() => encodeRequest({ ...read, offset: -1 } as const)).toThrow(RangeError);
    expect(() => encodeRequest({ ...read, offset: 1.5 } as const)).toThrow(TypeError);
    expect(() => encodeRequest({ ...read, offset: Number.NaN } as const)).toThrow(TypeError);
    expect(() => encodeSimpleReply({ type: "simple-reply", error: 0, cookie: Number.MAX_SAFE_INTEGER + 1 }))
      .toThrow(RangeError);
    expect(() =>
      encodeGreeting({ type: "oldstyle-greeting", size: -5, handshakeFlags: 0, transmissionFlags: 1 })
    ).toThrow(RangeError);
  });
});

// toJson/frameFromJson: any frame or event as plain JSON, losslessly, and back (issue 15, API papercuts).
import { describe, expect, test } from "vitest";
import {
  createBlockStatusDescriptors,
  decodeConversation,
  decodeReplyChunk,
  decodeRequest,
  encodeReplyChunk,
  encodeRequest,
  formatEventText,
  frameFromJson,
  hexToBytes,
  NbdDecodeError,
  type ReplyChunk,
  type Request,
  toJson,
} from "../mod.ts";
import { loadVectorFiles } from "./_harness.ts";

describe("toJson()", () => {
  test("toJson() writes 64-bit values as decimal strings and bytes as lowercase hex", () => {
    const r = decodeRequest(hexToBytes(
      "25609513" + "0001" + "0001" + "ffffffffffffffff" + "0000000000001000" + "00000002" + "abcd",
    ));
    expect(toJson(r)).toEqual({
      done: true,
      frame: {
        type: "request",
        extended: false,
        flags: 1,
        command: 1,
        cookie: "18446744073709551615",
        offset: "4096",
        length: "2",
        data: "abcd",
      },
      byteLength: 30,
      findings: [],
    });
  });

  test("toJson() writes block-status descriptors as the vectors do, with every extent", () => {
    const bytes = hexToBytes(
      "668e33ef" + "0001" + "0005" + "0000000000000007" + "00000014" +
        "00000001" + "00001000" + "00000000" + "ffffffff" + "00000003",
    );
    const r = decodeReplyChunk(bytes, { structuredReplies: true } as never);
    expect(r.done).toBe(true);
    if (!r.done) return;
    expect(toJson(r.frame)).toEqual({
      type: "reply-chunk",
      extended: false,
      flags: 1,
      chunkType: 5,
      cookie: "7",
      payload: {
        kind: "block-status",
        descriptors: {
          contextId: 1,
          count: 2,
          extended: false,
          extents: [{ length: "4096", status: "0" }, { length: "4294967295", status: "3" }],
        },
      },
    });
  });

  test("toJson() takes conversation events, maps and errors, and leaves out undefined and functions", () => {
    const events = decodeConversation(
      hexToBytes("00000001" + "49484156454f5054" + "00000008" + "00000000"),
      hexToBytes(
        "4e42444d4147494349484156454f50540001" + "0003e889045565a9" + "00000008" + "00000001" + "00000000",
      ),
    );
    const json = JSON.parse(JSON.stringify(toJson(events)));
    expect(json.map((e: { frame: { type: string } }) => e.frame.type)).toEqual([
      "newstyle-greeting",
      "client-flags",
      "option-request",
      "option-reply",
    ]);
    expect(json[3].option).toEqual({ type: "option-request", option: 8, data: { kind: "none" } });
    expect(toJson(new Map([[1, "base:allocation"]]))).toEqual({ "1": "base:allocation" });
    expect(toJson(new NbdDecodeError("bad-magic", 3, "magic", "m"))).toEqual({
      code: "bad-magic",
      offset: 3,
      rule: "magic",
      message: "m",
    });
    expect(toJson({ a: undefined, b: () => 1, c: [undefined] })).toEqual({ c: [null] });
  });

  test("toJson() gives every valid vector's frame exactly as the vector file writes it", () => {
    let n = 0;
    for (const file of loadVectorFiles()) {
      for (const v of file.vectors) {
        if (
          v.result !== "valid" ||
          !["request", "simple-reply", "option-request", "greeting"].includes(v.decoder)
        ) {
          continue;
        }
        expect(toJson(frameFromJson(v.frame as never)), v.id).toEqual(v.frame);
        n++;
      }
    }
    expect(n).toBeGreaterThan(50);
  });
});

describe("frameFromJson()", () => {
  test("frameFromJson() turns decimal strings and hex back into bigint and bytes the encoders take", () => {
    const frame = frameFromJson({
      type: "request",
      extended: false,
      flags: 0,
      command: 1,
      cookie: "1",
      offset: "0",
      length: "2",
      data: "abcd",
    }) as Request;
    expect(frame.cookie).toBe(1n);
    expect(frame.data).toEqual(new Uint8Array([0xab, 0xcd]));
    expect(encodeRequest(frame).length).toBe(28);
  });

  test("frameFromJson() rebuilds block-status descriptors", () => {
    const frame = frameFromJson({
      type: "reply-chunk",
      extended: false,
      flags: 1,
      chunkType: 5,
      cookie: "7",
      payload: {
        kind: "block-status",
        descriptors: { contextId: 1, count: 1, extended: false, extents: [{ length: "4096", status: "3" }] },
      },
    }) as ReplyChunk;
    const chunk: ReplyChunk = {
      type: "reply-chunk",
      extended: false,
      flags: 1,
      chunkType: 5,
      cookie: 7n,
      payload: {
        kind: "block-status",
        descriptors: createBlockStatusDescriptors(1, false, [{ length: 4096, status: 3 }]),
      },
    };
    expect(encodeReplyChunk(frame)).toEqual(encodeReplyChunk(chunk));
  });

  test("frameFromJson() refuses what is not a frame, and 64-bit values that are not decimal", () => {
    expect(() => frameFromJson([] as never)).toThrow(TypeError);
    expect(() => frameFromJson({ type: "request", cookie: "0x10" })).toThrow(TypeError);
    expect(() => frameFromJson({ type: "request", data: "abc" })).toThrow(TypeError);
  });
});

describe("formatEventText() given something that is not an event", () => {
  test("formatEventText() names a bare frame in a TypeError and says how to wrap it", () => {
    const frame = {
      type: "request",
      extended: false,
      flags: 0,
      command: 0,
      cookie: 1n,
      offset: 0n,
      length: 0n,
    };
    expect(() => formatEventText(frame as never)).toThrow(TypeError);
    expect(() => formatEventText(frame as never)).toThrow(/bare "request" frame.*event: "frame"/);
  });
  test("formatEventText() refuses null and a decode result with a TypeError", () => {
    expect(() => formatEventText(null as never)).toThrow(/expected a conversation event.*got null/);
    expect(() => formatEventText({ done: true } as never)).toThrow(
      /expected a conversation event.*got object/,
    );
  });
});

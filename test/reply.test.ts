import fc from "fast-check";
import { describe, expect, test } from "vitest";
import {
  type BlockStatusDescriptors,
  blockStatusExtents,
  type ChunkPayload,
  createBlockStatusDescriptors,
  type Decoded,
  decodeReply,
  decodeReplyChunk,
  decodeSimpleReply,
  encodeReplyChunk,
  encodeReplyChunkInto,
  encodeSimpleReply,
  encodeSimpleReplyInto,
  ErrorValue,
  isNbdDecodeError,
  type ReplyChunk,
  replyChunkByteLength,
  ReplyFlag,
  ReplyType,
  type SimpleReply,
  simpleReplyByteLength,
} from "../mod.ts";
import { type CodecUnderTest, fromHex, testVectors, toHex, vectorFile } from "./_harness.ts";

// Block-status descriptors are a lazy view (only contextId, count and extended are enumerable). In vectors
// they are written as { contextId, count, extended, extents: [{ length, status }] }: these two helpers map
// between the view and that plain form.
interface PlainDescriptors {
  contextId: number;
  count: number;
  extended: boolean;
  extents: { length: bigint; status: bigint }[];
}

function toPlain(frame: unknown): unknown {
  const f = frame as ReplyChunk;
  if (f.type !== "reply-chunk" || f.payload.kind !== "block-status") return frame;
  const d = f.payload.descriptors;
  const plain: PlainDescriptors = {
    contextId: d.contextId,
    count: d.count,
    extended: d.extended,
    extents: blockStatusExtents(d),
  };
  return { ...f, payload: { kind: "block-status", descriptors: plain } };
}

function fromPlain(frame: ReplyChunk): ReplyChunk {
  if (frame.payload.kind !== "block-status") return frame;
  const d = frame.payload.descriptors as unknown as PlainDescriptors;
  return {
    ...frame,
    payload: {
      kind: "block-status",
      descriptors: createBlockStatusDescriptors(d.contextId, d.extended, d.extents),
    },
  };
}

function plainDecode<T>(fn: (b: Uint8Array, o: never) => Decoded<T>) {
  return (bytes: Uint8Array, options: Record<string, unknown>): Decoded<unknown> => {
    const r = fn(bytes, options as never);
    return r.done ? { ...r, frame: toPlain(r.frame) } : r;
  };
}

const chunkCodec: CodecUnderTest = {
  decode: plainDecode(decodeReplyChunk),
  encode: (f: ReplyChunk) => encodeReplyChunk(fromPlain(f)),
  encodeInto: (f: ReplyChunk, t: Uint8Array, o: number) => encodeReplyChunkInto(fromPlain(f), t, o),
  byteLength: (f: ReplyChunk) => replyChunkByteLength(fromPlain(f)),
  payload: (f: ReplyChunk) => f.payload.kind === "offset-data" ? f.payload.data : undefined,
};
const simpleCodec: CodecUnderTest = {
  decode: decodeSimpleReply,
  encode: encodeSimpleReply,
  encodeInto: encodeSimpleReplyInto,
  byteLength: simpleReplyByteLength,
  payload: (f: SimpleReply) => f.data,
};
const codecs: Record<string, CodecUnderTest> = {
  "simple-reply": simpleCodec,
  "reply-chunk": chunkCodec,
  "reply": {
    decode: plainDecode(decodeReply),
    encode: (f: SimpleReply | ReplyChunk) =>
      f.type === "simple-reply" ? encodeSimpleReply(f) : encodeReplyChunk(fromPlain(f)),
    payload: (f: SimpleReply | ReplyChunk) =>
      f.type === "simple-reply" ? f.data : f.payload.kind === "offset-data" ? f.payload.data : undefined,
  },
};

describe("reply vectors", () => {
  testVectors(vectorFile("reply"), codecs);
});

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

function blockStatusBytes(n: number, extended: boolean): Uint8Array {
  const stride = extended ? 16 : 8;
  const head = extended ? 32 : 20;
  const fixed = extended ? 8 : 4;
  const L = fixed + n * stride;
  const b = new Uint8Array(head + L);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, extended ? 0x6e8a278c : 0x668e33ef);
  dv.setUint16(4, 1);
  dv.setUint16(6, extended ? 6 : 5);
  dv.setUint32(12, 1);
  if (extended) dv.setBigUint64(24, BigInt(L));
  else dv.setUint32(16, L);
  dv.setUint32(head, 7);
  if (extended) dv.setUint32(head + 4, n);
  for (let i = 0; i < n; i++) {
    const o = head + fixed + i * stride;
    if (extended) {
      dv.setBigUint64(o, BigInt(512 * (i + 1)));
      dv.setBigUint64(o + 8, BigInt(i % 4) | (BigInt(i) << 32n));
    } else {
      dv.setUint32(o, 512 * (i + 1));
      dv.setUint32(o + 4, i % 4);
    }
  }
  return b;
}

describe("block-status descriptors", () => {
  test("decodeReplyChunk() reads 100,000 descriptors lazily from the payload bytes", () => {
    for (const extended of [false, true]) {
      const bytes = blockStatusBytes(100_000, extended);
      const r = decodeReplyChunk(bytes);
      expect(r.done).toBe(true);
      if (!r.done || r.frame.payload.kind !== "block-status") throw new Error("not block status");
      const d: BlockStatusDescriptors = r.frame.payload.descriptors;
      expect(d.count).toBe(100_000);
      expect(d.contextId).toBe(7);
      expect(d.extended).toBe(extended);
      expect(Object.keys(d).sort()).toEqual(["contextId", "count", "extended"]);
      expect(d.lengthAt(99_999)).toBe(512n * 100_000n);
      expect(d.lengthNumberAt(0)).toBe(512);
      expect(d.statusNumberAt(3)).toBe(extended ? 3 * 2 ** 32 + 3 : 3);
      expect(d.statusAt(99_999)).toBe(extended ? 3n | (99_999n << 32n) : 3n);
      expect(() => d.lengthAt(100_000)).toThrow(RangeError);
      expect(() => d.statusAt(-1)).toThrow(RangeError);
      // re-encoding copies the same bytes
      const again = encodeReplyChunk(r.frame);
      expect(again.length).toBe(bytes.length);
      expect(again.every((x, i) => x === bytes[i])).toBe(true);
    }
  });

  test("encodeReplyChunk() widens 32-bit descriptors into BLOCK_STATUS_EXT and narrows back", () => {
    const d32 = createBlockStatusDescriptors(1, false, [{ length: 4096, status: 3 }]);
    const ext: ReplyChunk = {
      type: "reply-chunk",
      extended: true,
      flags: ReplyFlag.DONE,
      chunkType: ReplyType.BLOCK_STATUS_EXT,
      cookie: 1n,
      offset: 0n,
      payload: { kind: "block-status", descriptors: d32 },
    };
    const bytes = encodeReplyChunk(ext);
    expect(toHex(bytes.subarray(32))).toBe("00000001" + "00000001" + "0000000000001000" + "0000000000000003");
    const r = decodeReplyChunk(bytes);
    if (!r.done || r.frame.payload.kind !== "block-status") throw new Error("not block status");
    const narrowed = encodeReplyChunk({ ...r.frame, extended: false, chunkType: ReplyType.BLOCK_STATUS });
    expect(toHex(narrowed.subarray(20))).toBe("00000001" + "00001000" + "00000003");
  });

  test("createBlockStatusDescriptors() rejects values that do not fit the descriptor width", () => {
    expect(() => createBlockStatusDescriptors(0, false, [{ length: 2 ** 32, status: 0 }])).toThrow(
      RangeError,
    );
    expect(() => createBlockStatusDescriptors(0, true, [{ length: 1n << 64n, status: 0n }])).toThrow(
      RangeError,
    );
    expect(() => createBlockStatusDescriptors(-1, true, [])).toThrow(RangeError);
  });
});

describe("decodeSimpleReply()", () => {
  test("decodeSimpleReply() returns read data as a view of the input", () => {
    const bytes = fromHex("67446698" + "00000000" + "0000000000000001" + "aabbccdd");
    const r = decodeSimpleReply(bytes, { readLength: 4 });
    expect(r.done && r.frame.data!.buffer).toBe(bytes.buffer);
  });

  test("decodeSimpleReply() asks for the read data once the header says success", () => {
    const bytes = fromHex("67446698" + "00000000" + "0000000000000001");
    expect(decodeSimpleReply(bytes, { readLength: 4096 })).toEqual({ done: false, needed: 4096 });
  });

  test("decodeSimpleReply() rejects a readLength that is not a length", () => {
    const bytes = fromHex("67446698" + "00000000" + "0000000000000001");
    expect(() => decodeSimpleReply(bytes, { readLength: -1 })).toThrow(RangeError);
  });
});

describe("decodeReplyChunk()", () => {
  test("decodeReplyChunk() refuses an extended length above the limit before waiting for the payload", () => {
    const header = fromHex(
      "6e8a278c" + "0000" + "0001" + "0000000000000001" + "0000000000000000" + "0000000004000009",
    );
    const e = thrown(() => decodeReplyChunk(header));
    expect(isNbdDecodeError(e) && e.code).toBe("limit-exceeded");
    // 64 MiB of data plus the 8-byte offset is within the default limit
    const ok = fromHex(
      "6e8a278c" + "0000" + "0001" + "0000000000000001" + "0000000000000000" + "0000000004000008",
    );
    expect(decodeReplyChunk(ok)).toEqual({ done: false, needed: 0x4000008 });
  });

  test("decodeReplyChunk() returns OFFSET_DATA data as a view of the input", () => {
    const bytes = fromHex(
      "668e33ef" + "0001" + "0001" + "0000000000000001" + "0000000a" + "0000000000000000" + "abcd",
    );
    const r = decodeReplyChunk(bytes);
    if (!r.done || r.frame.payload.kind !== "offset-data") throw new Error("not offset data");
    expect(r.frame.payload.data.buffer).toBe(bytes.buffer);
    expect(r.frame.payload.data.byteOffset).toBe(28);
  });

  test("decodeReplyChunk() in lenient mode keeps a malformed ERROR chunk's bytes", () => {
    const bytes = fromHex("668e33ef" + "0001" + "8001" + "0000000000000001" + "00000004" + "00000005");
    const r = decodeReplyChunk(bytes, { strict: false });
    expect(r.done && r.frame.payload).toEqual({ kind: "raw", raw: fromHex("00000005") });
  });
});

describe("reply encoders", () => {
  const none: ReplyChunk = {
    type: "reply-chunk",
    extended: false,
    flags: ReplyFlag.DONE,
    chunkType: ReplyType.NONE,
    cookie: 1n,
    payload: { kind: "none" },
  };

  test("encodeReplyChunk() writes the structured ERROR of the worked example", () => {
    const b = encodeReplyChunk({
      ...none,
      chunkType: ReplyType.ERROR,
      payload: { kind: "error", error: ErrorValue.EIO, message: "" },
    });
    expect(toHex(b)).toBe(
      "668e33ef" + "0001" + "8001" + "0000000000000001" + "00000006" + "00000005" + "0000",
    );
  });

  test("encodeReplyChunk() counts OFFSET_DATA data in the length but leaves it to the caller", () => {
    const data = new Uint8Array(1000);
    const b = encodeReplyChunk({
      ...none,
      chunkType: ReplyType.OFFSET_DATA,
      payload: { kind: "offset-data", offset: 0n, data },
    });
    expect(b.length).toBe(28);
    expect(toHex(b.subarray(16, 20))).toBe("000003f0");
  });

  test("encodeReplyChunk() needs the offset of an extended chunk", () => {
    expect(() => encodeReplyChunk({ ...none, extended: true })).toThrow(TypeError);
  });

  test("encodeReplyChunk() rejects an error message over 4096 bytes", () => {
    expect(() =>
      encodeReplyChunk({
        ...none,
        chunkType: ReplyType.ERROR,
        payload: { kind: "error", error: 5, message: "x".repeat(4097) },
      })
    ).toThrow(RangeError);
  });

  test("encodeSimpleReply() rejects an error above 32 bits and a cookie above 2^64-1", () => {
    expect(() => encodeSimpleReply({ type: "simple-reply", error: 2 ** 32, cookie: 0n })).toThrow(RangeError);
    expect(() => encodeSimpleReply({ type: "simple-reply", error: 0, cookie: 1n << 64n })).toThrow(
      RangeError,
    );
  });

  test("encodeReplyChunkInto() refuses a target too short at that offset", () => {
    expect(() => encodeReplyChunkInto(none, new Uint8Array(25), 6)).toThrow(RangeError);
  });
});

describe("reply properties", () => {
  const u64 = fc.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn });
  const payload: fc.Arbitrary<ChunkPayload> = fc.oneof(
    fc.record({
      kind: fc.constant("offset-hole" as const),
      offset: u64,
      holeSize: fc.integer({ min: 1, max: 0xffff_ffff }),
    }),
    fc.record({
      kind: fc.constant("error" as const),
      error: fc.integer({ min: 1, max: 0xffff_ffff }),
      message: fc.string({ maxLength: 40 }).filter((s) => !s.includes("\0")),
    }),
    fc.record({
      kind: fc.constant("offset-data" as const),
      offset: u64,
      data: fc.uint8Array({ minLength: 1, maxLength: 16 }),
    }),
  );
  test("encodeReplyChunk() then decodeReplyChunk() gives the chunk back", () => {
    fc.assert(
      fc.property(fc.boolean(), u64, u64, payload, (extended, cookie, offset, p) => {
        const chunkType = p.kind === "offset-hole" ? 2 : p.kind === "error" ? 0x8001 : 1;
        const base = { type: "reply-chunk" as const, extended, flags: 1, chunkType, cookie, payload: p };
        const f: ReplyChunk = extended ? { ...base, offset } : base;
        const header = encodeReplyChunk(f);
        const data = p.kind === "offset-data" ? p.data : new Uint8Array(0);
        const bytes = new Uint8Array(header.length + data.length);
        bytes.set(header);
        bytes.set(data, header.length);
        const r = decodeReplyChunk(bytes);
        expect(r.done && r.frame).toEqual(f);
      }),
    );
  });

  test("decodeReply() in lenient mode never throws anything but NbdDecodeError on arbitrary bytes", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 80 }),
        fc.constantFrom("67446698", "668e33ef", "6e8a278c"),
        (tail, magic) => {
          const bytes = new Uint8Array(4 + tail.length);
          bytes.set(fromHex(magic));
          bytes.set(tail, 4);
          try {
            decodeReply(bytes, { strict: false, readLength: tail.length % 8 });
          } catch (e) {
            expect(isNbdDecodeError(e)).toBe(true);
          }
        },
      ),
    );
  });
});

// Metadata-context vectors: a block-status chunk decoded, then interpreted per context (typed fields and
// nbdinfo --map labels), and back: the typed extents encode to the same bytes.
import { describe } from "vitest";
import { NbdDecodeError } from "../mod.ts";
import {
  checkStatusUpperBits,
  createBlockStatusDescriptors,
  decodeReplyChunk,
  encodeReplyChunk,
  type ExtentInit,
  fromExtents,
  type ReplyChunk,
  ReplyType,
  toExtents,
} from "../mod.ts";
import { type CodecUnderTest, testVectors, vectorFile } from "./_harness.ts";

interface ExtentsFrame {
  type: "block-status-extents";
  extended: boolean;
  flags: number;
  cookie: bigint;
  offset?: bigint;
  contextId: number;
  extents: ExtentInit[];
}

const codec: CodecUnderTest = {
  decode(bytes, o) {
    const r = decodeReplyChunk(bytes, o);
    if (!r.done) return r;
    const f = r.frame;
    if (f.payload.kind !== "block-status") throw new Error("not a block-status chunk");
    const d = f.payload.descriptors;
    // The rule that needs the context's name, checked as a stream decoder would (strict: the first finding
    // is thrown; lenient: it joins the chunk's findings). Descriptors start after the header and 8 bytes.
    const first = (o.offset as number | undefined ?? 0) + (f.extended ? 32 : 16) + 8;
    const upper = checkStatusUpperBits(o.contextName as string, d, { offset: first });
    const u = upper[0];
    if (u !== undefined && o.strict !== false) throw new NbdDecodeError(u.code, u.offset, u.rule, u.message);
    return {
      ...r,
      findings: [...r.findings, ...upper],
      frame: {
        type: "block-status-extents",
        extended: f.extended,
        flags: f.flags,
        cookie: f.cookie,
        ...(f.offset !== undefined ? { offset: f.offset } : {}),
        contextId: d.contextId,
        extents: toExtents(o.contextName as string, d, BigInt(o.requestOffset as string)),
      },
    };
  },
  encode(frame: ExtentsFrame, ctx) {
    const extents = fromExtents(ctx.contextName as string, frame.extents, { extended: frame.extended });
    const chunk: ReplyChunk = {
      type: "reply-chunk",
      extended: frame.extended,
      flags: frame.flags,
      chunkType: frame.extended ? ReplyType.BLOCK_STATUS_EXT : ReplyType.BLOCK_STATUS,
      cookie: frame.cookie,
      ...(frame.offset !== undefined ? { offset: frame.offset } : {}),
      payload: {
        kind: "block-status",
        descriptors: createBlockStatusDescriptors(frame.contextId, frame.extended, extents),
      },
    };
    return encodeReplyChunk(chunk);
  },
};

describe("metadata context vectors", () => {
  testVectors(vectorFile("metadata"), { "block-status-extents": codec });
});

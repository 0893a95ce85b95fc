// Metadata-context vectors: a block-status chunk decoded, then interpreted per context (typed fields and
// nbdinfo --map labels), and back: the typed extents encode to the same bytes.
import { describe } from "vitest";
import {
  createBlockStatusDescriptors,
  encodeReplyChunk,
  type ExtentInit,
  fromExtents,
  type ReplyChunk,
  ReplyType,
} from "../mod.ts";
import { decodeBlockStatusExtents } from "../codec/_block_status_extents.ts";
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
  decode: decodeBlockStatusExtents,
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

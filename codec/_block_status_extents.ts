// A block-status chunk read through its metadata context, as vectors/metadata.json decodes it: the chunk, the
// upper-bits rule that needs the context's name (strict: the first finding is thrown; lenient: it joins the
// chunk's findings), and the typed extents. Shared by the vector toolkit (codec/vectors.ts) and the metadata
// vector test. Options: the decoder's own, plus `contextName` and `requestOffset` (a string or a number).
import { NbdDecodeError } from "./errors.ts";
import { checkStatusUpperBits, toExtents } from "./metadata.ts";
import { decodeReplyChunk } from "./reply.ts";
import type { Decoded } from "./types.ts";

export function decodeBlockStatusExtents(b: Uint8Array, o: Record<string, unknown>): Decoded<unknown> {
  const r = decodeReplyChunk(b, o);
  if (!r.done) return r;
  const f = r.frame;
  if (f.payload.kind !== "block-status") {
    throw new TypeError("Cannot decode block-status extents: not a block-status chunk");
  }
  const d = f.payload.descriptors;
  const start = typeof o.requestOffset === "string" || typeof o.requestOffset === "number"
    ? BigInt(o.requestOffset)
    : 0n;
  // The rule that needs the context's name, as a stream decoder checks it: strict throws the first finding,
  // lenient adds them to the chunk's. Descriptors start after the header and the context id.
  const first = (typeof o.offset === "number" ? o.offset : 0) + (f.extended ? 32 : 16) + 8;
  const upper = checkStatusUpperBits(String(o.contextName), d, { offset: first });
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
      extents: toExtents(String(o.contextName), d, start),
    },
  };
}

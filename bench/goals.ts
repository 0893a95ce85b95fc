// The performance goals of the issue, as data: shared by the worker (which measures them) and the driver
// (which aggregates five processes and prints the table or JSON).

/**
 * How a goal's figure is read:
 * - `ratio`: codec time / reference time in the same process, pass when <= target;
 * - `speedup`: baseline time / codec time, pass when >= target;
 * - `alloc`: bytes allocated per frame, pass when <= target (the tolerance);
 * - `c-limit`: codec time / the C limit derived from an in-process memcpy, pass when <= target;
 * - `stability`: slowest / fastest per-process figure of the codec side, pass when <= target;
 * - `info`: reported, no target.
 */
export type GoalKind = "ratio" | "speedup" | "alloc" | "c-limit" | "stability" | "info";

export interface Goal {
  readonly id: string;
  readonly title: string;
  readonly kind: GoalKind;
  /** Pass threshold (see GoalKind); `undefined` for `info`. */
  readonly target?: number;
}

/**
 * The C limit for decoding 100,000 block-status descriptors, as a multiple of memcpy of the same bytes.
 * Facts for this machine kind: the 6x budget for 100,000 compact descriptors is about 0.35 ms, so the C
 * limit is about 58 us, while memcpy of those 800,000 bytes at 47 GB/s takes 17 us: 58.3 / 17.0 = 3.43.
 * Measuring memcpy in the same process and scaling it keeps the goal a same-run ratio on any machine;
 * extended descriptors (twice the bytes) get twice the C limit.
 */
export const C_LIMIT_PER_MEMCPY: number = (0.35e-3 / 6) / (800_000 / 47e9);

export const GOALS: readonly Goal[] = [
  {
    id: "request-decode-into",
    title: "decodeRequestHeaderInto (28 B, reused storage) vs DataView reference",
    kind: "ratio",
    target: 1.2,
  },
  {
    id: "request-decode-into-alloc",
    title: "decodeRequestHeaderInto: bytes allocated per frame",
    kind: "alloc",
    target: 0.01,
  },
  {
    id: "request-encode-into",
    title:
      "encodeRequestHeaderInto (caller buffer, offset) speed-up over Buffer.alloc + writeUInt32BE/writeBigUInt64BE",
    kind: "speedup",
    target: 15,
  },
  {
    id: "request-encode-into-vs-dataview",
    title: "encodeRequestHeaderInto vs DataView reference (info)",
    kind: "info",
  },
  {
    id: "request-encode-into-alloc",
    title: "encodeRequestHeaderInto: bytes allocated per frame",
    kind: "alloc",
    target: 0.01,
  },
  {
    id: "request-decode-object-alloc",
    title: "decodeRequest: bytes allocated per frame (codec; ref in detail) (info)",
    kind: "info",
  },
  {
    id: "simple-reply-decode-object-alloc",
    title: "decodeSimpleReply: bytes allocated per frame (codec; ref in detail) (info)",
    kind: "info",
  },
  {
    id: "request-decode-object",
    title: "decodeRequest (object, bigint fields) vs hand-written reference",
    kind: "ratio",
    target: 1.5,
  },
  {
    id: "request-encode-object",
    title: "encodeRequestInto (object, bigint fields) vs hand-written reference",
    kind: "ratio",
    target: 1.5,
  },
  {
    id: "simple-reply-decode-object",
    title: "decodeSimpleReply (object) vs hand-written reference",
    kind: "ratio",
    target: 1.5,
  },
  {
    id: "chunk-decode-object",
    title: "decodeReplyChunk, structured NONE header (object) vs hand-written reference",
    kind: "ratio",
    target: 1.5,
  },
  {
    id: "ext-chunk-decode-object",
    title: "decodeReplyChunk, extended NONE header (object) vs hand-written reference",
    kind: "ratio",
    target: 1.5,
  },
  {
    id: "write-payload-32mib-vs-4kib",
    title: "decodeRequest: 32 MiB WRITE vs 4 KiB WRITE",
    kind: "ratio",
    target: 1.5,
  },
  {
    id: "offset-data-32mib-vs-4kib",
    title: "decodeReplyChunk: 32 MiB OFFSET_DATA vs 4 KiB",
    kind: "ratio",
    target: 1.5,
  },
  {
    id: "block-status-100k",
    title: "decodeReplyChunk: BLOCK_STATUS, 100,000 descriptors vs C limit",
    kind: "c-limit",
    target: 6,
  },
  {
    id: "block-status-ext-100k",
    title: "decodeReplyChunk: BLOCK_STATUS_EXT, 100,000 descriptors vs C limit",
    kind: "c-limit",
    target: 6,
  },
  {
    id: "to-extents-100k",
    title: "toExtents (metadata.ts), 100,000 extended descriptors, vs hand-written objects (info)",
    kind: "info",
  },
  {
    id: "stability",
    title: "slowest / fastest per-process figure of the codec side over 5 processes, worst gated goal",
    kind: "stability",
    target: 1.3,
  },
];

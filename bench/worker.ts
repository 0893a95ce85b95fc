// One benchmark process: measures every goal once (codec against its reference, interleaved, in this
// process) and prints one JSON line. `bench/run.mjs` starts five of these per runtime and aggregates.
//
// Run alone: node --expose-gc <bundled worker>, or deno run -A --v8-flags=--expose-gc bench/worker.ts
import process from "node:process";
import {
  Command,
  CommandFlag,
  createRequestHeaderFields,
  decodeReplyChunk,
  decodeRequest,
  decodeRequestHeaderInto,
  decodeSimpleReply,
  encodeRequestHeaderInto,
  encodeRequestInto,
  type Request,
  type RequestDecodeOptions,
  toExtents,
} from "../mod.ts";
import {
  allocationPerOp,
  canMeasureAllocation,
  type Loop,
  median,
  type PairPlan,
  type PairTiming,
  sink,
  timePairs,
} from "./_harness.ts";
import {
  bufferAllocEncodeRequest,
  refAllocationExtents,
  type RefDecoded,
  refDecodeNoneChunk,
  refDecodeRequest,
  refDecodeRequestInto,
  refDecodeSimpleReply,
  refEncodeRequestInto,
  refEncodeRequestObjectInto,
  type RefRequest,
  type RefRequestFields,
} from "./_refs.ts";
import { C_LIMIT_PER_MEMCPY, type GoalKind, GOALS } from "./goals.ts";

/** What one process reports for one goal. */
export interface ProcessResult {
  readonly id: string;
  readonly kind: GoalKind;
  /** The goal's figure in this process (ratio, speed-up or bytes per frame). */
  readonly measured: number;
  /** Lower quartile of the codec side's samples, ns per operation (timed goals; stability compares these). */
  readonly codecNs?: number;
  /** Median of the codec side's samples, ns per operation (reported beside stability). */
  readonly codecMedianNs?: number;
  /** Lower quartile of the reference's (or baseline's, or control's) samples, ns per operation. */
  readonly refNs?: number;
  /** Allocation goals: bytes per frame of the reference or baseline, for comparison. */
  readonly refBytes?: number;
  /** Set when the goal could not be measured (missing export, mismatching output). */
  readonly error?: string;
  /** `BENCH_DUMP=1`: every sample (ns per operation) by round, for analysis. */
  readonly rounds?: {
    readonly codec: readonly (readonly number[])[];
    readonly ref: readonly (readonly number[])[];
  };
}

const KiB = 1024;
const MiB = 1024 * KiB;
const RING = 8;

// ---------------------------------------------------------------------------------------------------------
// Frames. Offsets, lengths and cookies above 2^31 (and above 2^32) are exercised on purpose.
// ---------------------------------------------------------------------------------------------------------

function putRequest(
  b: Uint8Array,
  at: number,
  flags: number,
  command: number,
  cookie: bigint,
  offset: bigint,
  length: bigint,
  extended = false,
): number {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  dv.setUint32(at, extended ? 0x21e41c71 : 0x25609513);
  dv.setUint16(at + 4, flags);
  dv.setUint16(at + 6, command);
  dv.setBigUint64(at + 8, cookie);
  dv.setBigUint64(at + 16, offset);
  if (extended) dv.setBigUint64(at + 24, length);
  else dv.setUint32(at + 24, Number(length));
  return extended ? 32 : 28;
}

/** Eight compact requests without payload, back to back: a receive buffer as a server sees it. */
function requestRing(): Uint8Array {
  const b = new Uint8Array(RING * 28);
  const specs: [number, number, bigint, bigint, bigint][] = [
    [0, Command.READ, 1n, 0x1_8000_0000n, 65536n],
    [CommandFlag.FUA, Command.TRIM, 0x0000_0001_0000_0002n, 0x2_0000_0000n, 0xf000_0000n],
    [0, Command.READ, 3n, 0x8000_1000n, 4096n],
    [CommandFlag.NO_HOLE, Command.WRITE_ZEROES, 0x0000_0002_0000_0004n, 0x40_0000_0000n, 0x8000_0000n],
    [0, Command.BLOCK_STATUS, 5n, 0n, 0xffff_fe00n],
    [CommandFlag.DF, Command.READ, 0xdead_beef_0000_0006n, 0x7fff_ffff_f000n, 32n * 1024n * 1024n],
    [0, Command.CACHE, 7n, 0x1_0000_0000n, 0x9000_0000n],
    [0, Command.FLUSH, 0x0012_3456_789a_bcden, 0n, 0n],
  ];
  specs.forEach(([f, c, k, o, l], i) => putRequest(b, i * 28, f, c, k, o, l));
  return b;
}

function simpleReplyRing(): Uint8Array {
  const b = new Uint8Array(RING * 16);
  const dv = new DataView(b.buffer);
  for (let i = 0; i < RING; i++) {
    dv.setUint32(16 * i, 0x67446698);
    dv.setUint32(16 * i + 4, i % 3 === 0 ? 5 : 0);
    dv.setBigUint64(16 * i + 8, i % 2 === 0 ? BigInt(i + 1) : (0x8000_0000n + BigInt(i)) << 32n);
  }
  return b;
}

function noneChunkRing(extended: boolean): Uint8Array {
  const hl = extended ? 32 : 20;
  const b = new Uint8Array(RING * hl);
  const dv = new DataView(b.buffer);
  for (let i = 0; i < RING; i++) {
    const at = hl * i;
    dv.setUint32(at, extended ? 0x6e8a278c : 0x668e33ef);
    dv.setUint16(at + 4, 1);
    dv.setUint16(at + 6, 0);
    dv.setBigUint64(at + 8, i % 2 === 0 ? BigInt(i + 1) : 0x0000_0001_0000_0000n + BigInt(i));
    if (extended) dv.setBigUint64(at + 16, 0x1_8000_0000n + BigInt(i) * 0x1000_0000n);
  }
  return b;
}

function writeRequest(payload: number): Uint8Array {
  const b = new Uint8Array(28 + payload);
  putRequest(b, 0, CommandFlag.FUA, Command.WRITE, 0x0000_0001_0000_0001n, 0x3_0000_0000n, BigInt(payload));
  return b;
}

function offsetDataChunk(payload: number): Uint8Array {
  const b = new Uint8Array(20 + 8 + payload);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 0x668e33ef);
  dv.setUint16(4, 0);
  dv.setUint16(6, 1);
  dv.setBigUint64(8, 0x0000_0002_0000_0001n);
  dv.setUint32(16, 8 + payload);
  dv.setBigUint64(20, 0x1_8000_0000n);
  return b;
}

/** A block-status chunk of `n` descriptors; extended ones carry lengths above 2^32 too. */
function blockStatusChunk(n: number, extended: boolean): Uint8Array {
  const stride = extended ? 16 : 8;
  const L = (extended ? 8 : 4) + n * stride;
  const hl = extended ? 32 : 20;
  const b = new Uint8Array(hl + L);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, extended ? 0x6e8a278c : 0x668e33ef);
  dv.setUint16(4, 1);
  dv.setUint16(6, extended ? 6 : 5);
  dv.setBigUint64(8, 0x0000_0003_0000_0001n);
  if (extended) {
    dv.setBigUint64(16, 0x1_8000_0000n);
    dv.setBigUint64(24, BigInt(L));
    dv.setUint32(hl, 0);
    dv.setUint32(hl + 4, n);
  } else {
    dv.setUint32(16, L);
    dv.setUint32(hl, 0);
  }
  const start = hl + (extended ? 8 : 4);
  for (let i = 0; i < n; i++) {
    const o = start + i * stride;
    if (extended) {
      dv.setBigUint64(o, i % 16 === 0 ? 0x1_0000_0000n : 65536n);
      dv.setBigUint64(o + 8, BigInt(i % 4));
    } else {
      dv.setUint32(o, i % 16 === 0 ? 0x8000_0000 : 65536);
      dv.setUint32(o + 4, i % 4);
    }
  }
  return b;
}

// ---------------------------------------------------------------------------------------------------------
// Output checks: codec and reference must produce the same thing before anything is timed.
// ---------------------------------------------------------------------------------------------------------

function canon(v: unknown): string {
  return JSON.stringify(v, (_k, x) => {
    if (typeof x === "bigint") return `${x}n`;
    if (x instanceof Uint8Array) return `bytes(${x.byteOffset},${x.length})`;
    return x;
  });
}

function same(what: string, a: unknown, b: unknown): void {
  const ca = canon(a);
  const cb = canon(b);
  if (ca !== cb) throw new Error(`${what}: codec and reference disagree:\n  codec ${ca}\n  ref   ${cb}`);
}

// ---------------------------------------------------------------------------------------------------------
// Goals
// ---------------------------------------------------------------------------------------------------------

type Measurement = {
  measured: number;
  codecNs?: number;
  codecMedianNs?: number;
  refNs?: number;
  refBytes?: number;
};

/** A timed goal: two loops, timed round-robin with every other timed goal, and what to make of them. */
interface Timed {
  readonly plan: PairPlan;
  finish(t: PairTiming): Measurement;
}

function ratio(codec: Loop, ref: Loop, batchMs?: number): Timed {
  return {
    plan: batchMs === undefined ? { a: codec, b: ref } : { a: codec, b: ref, batchMs },
    finish: (t) => ({
      measured: t.aNs / t.bNs,
      codecNs: t.aNs,
      codecMedianNs: median(t.aSamples),
      refNs: t.bNs,
    }),
  };
}

function speedup(codec: Loop, baseline: Loop): Timed {
  return {
    plan: { a: codec, b: baseline },
    finish: (t) => ({
      measured: t.bNs / t.aNs,
      codecNs: t.aNs,
      codecMedianNs: median(t.aSamples),
      refNs: t.bNs,
    }),
  };
}

function allocation(loop: Loop, ref?: Loop): Measurement {
  if (!canMeasureAllocation()) throw new Error("start the runtime with --expose-gc to measure allocation");
  const measured = allocationPerOp(loop).bytesPerOp;
  return ref === undefined ? { measured } : { measured, refBytes: allocationPerOp(ref).bytesPerOp };
}

const ring = requestRing();
const ringOpts: RequestDecodeOptions[] = Array.from({ length: RING }, (_, i) => ({ offset: i * 28 }));
const fields = createRequestHeaderFields();
const refFields: RefRequestFields = createRequestHeaderFields();

const decodeIntoCodec: Loop = (n) => {
  let s = 0;
  for (let i = 0; i < n; i++) s += decodeRequestHeaderInto(ring, (i & 7) * 28, fields) + fields.lengthLo;
  return s;
};
const decodeIntoRef: Loop = (n) => {
  let s = 0;
  for (let i = 0; i < n; i++) s += refDecodeRequestInto(ring, (i & 7) * 28, refFields) + refFields.lengthLo;
  return s;
};

// Encoding: a compact READ of 64 KiB at an offset above 2^32, into a 4 KiB batch buffer at rotating offsets.
const target = new Uint8Array(4 * KiB);
const encFields = createRequestHeaderFields();
Object.assign(encFields, {
  command: Command.READ,
  cookieHi: 1,
  cookieLo: 2,
  offsetHi: 1,
  offsetLo: 0x8000_0000,
});
encFields.lengthLo = 65536;
const encodeIntoCodec: Loop = (n) => {
  let s = 0;
  for (let i = 0; i < n; i++) s += encodeRequestHeaderInto(target, (i & 127) * 32, encFields);
  return s + target[27]!;
};
const encodeIntoRef: Loop = (n) => {
  let s = 0;
  for (let i = 0; i < n; i++) s += refEncodeRequestInto(target, (i & 127) * 32, encFields);
  return s + target[27]!;
};
const kept: Uint8Array[] = new Array<Uint8Array>(RING).fill(new Uint8Array(0));
const encodeBufferAlloc: Loop = (n) => {
  let s = 0;
  for (let i = 0; i < n; i++) {
    const b = bufferAllocEncodeRequest(0, Command.READ, 0x1_0000_0002n, 0x1_8000_0000n, 65536);
    kept[i & 7] = b;
    s += b.length;
  }
  return s;
};

const requestFrames: Request[] = [];
for (let i = 0; i < RING; i++) {
  const r = decodeRequest(ring, ringOpts[i]);
  if (r.done) requestFrames.push(r.frame);
}
const encodeObjectCodec: Loop = (n) => {
  let s = 0;
  for (let i = 0; i < n; i++) s += encodeRequestInto(requestFrames[i & 7]!, target, (i & 127) * 32);
  return s + target[27]!;
};
const encodeObjectRef: Loop = (n) => {
  let s = 0;
  for (let i = 0; i < n; i++) {
    s += refEncodeRequestObjectInto(requestFrames[i & 7]! as RefRequest, target, (i & 127) * 32);
  }
  return s + target[27]!;
};

const framesOut: unknown[] = new Array<unknown>(RING).fill(undefined);
function keep(i: number, v: RefDecoded<unknown> | { done: boolean }): number {
  framesOut[i & 7] = v;
  return v.done ? 1 : 0;
}

const decodeObjectCodec: Loop = (n) => {
  let s = 0;
  for (let i = 0; i < n; i++) s += keep(i, decodeRequest(ring, ringOpts[i & 7]));
  return s;
};
const decodeObjectRef: Loop = (n) => {
  let s = 0;
  for (let i = 0; i < n; i++) s += keep(i, refDecodeRequest(ring, (i & 7) * 28, 64 * MiB));
  return s;
};

const simpleRing = simpleReplyRing();
const simpleOpts = Array.from({ length: RING }, (_, i) => ({ offset: i * 16 }));
const simpleCodec: Loop = (n) => {
  let s = 0;
  for (let i = 0; i < n; i++) s += keep(i, decodeSimpleReply(simpleRing, simpleOpts[i & 7]));
  return s;
};
const simpleRef: Loop = (n) => {
  let s = 0;
  for (let i = 0; i < n; i++) s += keep(i, refDecodeSimpleReply(simpleRing, (i & 7) * 16));
  return s;
};

function chunkLoops(extended: boolean): [Loop, Loop, Uint8Array, { offset: number }[]] {
  const hl = extended ? 32 : 20;
  const b = noneChunkRing(extended);
  const opts = Array.from({ length: RING }, (_, i) => ({ offset: i * hl }));
  const codec: Loop = (n) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += keep(i, decodeReplyChunk(b, opts[i & 7]));
    return s;
  };
  const ref: Loop = (n) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += keep(i, refDecodeNoneChunk(b, (i & 7) * hl, 64 * MiB));
    return s;
  };
  return [codec, ref, b, opts];
}
const [chunkCodec, chunkRef, chunkBytes, chunkOpts] = chunkLoops(false);
const [extChunkCodec, extChunkRef, extChunkBytes, extChunkOpts] = chunkLoops(true);

function payloadLoops(big: Uint8Array, small: Uint8Array, decode: (b: Uint8Array) => unknown): [Loop, Loop] {
  const mk = (b: Uint8Array): Loop => (n) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += keep(i, decode(b) as { done: boolean });
    return s;
  };
  return [mk(big), mk(small)];
}

function blockStatusLoops(extended: boolean): [Loop, Loop, Uint8Array] {
  const n = 100_000;
  const chunk = blockStatusChunk(n, extended);
  const descriptorBytes = chunk.subarray(extended ? 40 : 24);
  const copy = new Uint8Array(descriptorBytes.length);
  const codec: Loop = (k) => {
    let s = 0;
    for (let i = 0; i < k; i++) {
      const r = decodeReplyChunk(chunk);
      s += keep(i, r);
    }
    return s;
  };
  // memcpy of the descriptor bytes: the machine calibration for the C limit (see goals.ts).
  const memcpy: Loop = (k) => {
    let s = 0;
    for (let i = 0; i < k; i++) {
      copy.set(descriptorBytes);
      s += copy[i & 1023]!;
    }
    return s;
  };
  return [codec, memcpy, chunk];
}

function checkOutputs(id: string): void {
  switch (id) {
    case "request-decode-into":
    case "request-decode-into-alloc":
      for (let i = 0; i < RING; i++) {
        decodeRequestHeaderInto(ring, i * 28, fields);
        refDecodeRequestInto(ring, i * 28, refFields);
        same(id, fields, refFields);
      }
      return;
    case "request-encode-into":
    case "request-encode-into-alloc": {
      const a = new Uint8Array(40);
      const b = new Uint8Array(40);
      encodeRequestHeaderInto(a, 4, encFields);
      refEncodeRequestInto(b, 4, encFields);
      same(id, Array.from(a), Array.from(b));
      const base = bufferAllocEncodeRequest(0, Command.READ, 0x1_0000_0002n, 0x1_8000_0000n, 65536);
      same(id, Array.from(a.subarray(4, 32)), Array.from(base));
      return;
    }
    case "request-decode-object":
    case "request-decode-object-alloc":
      for (let i = 0; i < RING; i++) {
        same(id, decodeRequest(ring, ringOpts[i]), refDecodeRequest(ring, i * 28, 64 * MiB));
      }
      return;
    case "request-encode-object":
      for (let i = 0; i < RING; i++) {
        const a = new Uint8Array(32);
        const b = new Uint8Array(32);
        encodeRequestInto(requestFrames[i]!, a, 0);
        refEncodeRequestObjectInto(requestFrames[i]! as RefRequest, b, 0);
        same(id, Array.from(a), Array.from(b));
        same(id, Array.from(a.subarray(0, 28)), Array.from(ring.subarray(i * 28, i * 28 + 28)));
      }
      return;
    case "simple-reply-decode-object":
    case "simple-reply-decode-object-alloc":
      for (let i = 0; i < RING; i++) {
        same(id, decodeSimpleReply(simpleRing, simpleOpts[i]), refDecodeSimpleReply(simpleRing, i * 16));
      }
      return;
    case "chunk-decode-object":
      for (let i = 0; i < RING; i++) {
        same(
          id,
          decodeReplyChunk(chunkBytes, chunkOpts[i]),
          refDecodeNoneChunk(chunkBytes, i * 20, 64 * MiB),
        );
      }
      return;
    case "ext-chunk-decode-object":
      for (let i = 0; i < RING; i++) {
        same(
          id,
          decodeReplyChunk(extChunkBytes, extChunkOpts[i]),
          refDecodeNoneChunk(extChunkBytes, i * 32, 64 * MiB),
        );
      }
      return;
  }
}

function runGoal(id: string): Measurement | Timed {
  checkOutputs(id);
  switch (id) {
    case "request-decode-into":
      return ratio(decodeIntoCodec, decodeIntoRef);
    case "request-decode-into-alloc":
      return allocation(decodeIntoCodec, decodeIntoRef);
    case "request-encode-into":
      return speedup(encodeIntoCodec, encodeBufferAlloc);
    case "request-encode-into-vs-dataview":
      return ratio(encodeIntoCodec, encodeIntoRef);
    case "request-encode-into-alloc":
      return allocation(encodeIntoCodec, encodeBufferAlloc);
    case "request-decode-object-alloc":
      return allocation(decodeObjectCodec, decodeObjectRef);
    case "simple-reply-decode-object-alloc":
      return allocation(simpleCodec, simpleRef);
    case "request-decode-object":
      return ratio(decodeObjectCodec, decodeObjectRef);
    case "request-encode-object":
      return ratio(encodeObjectCodec, encodeObjectRef);
    case "simple-reply-decode-object":
      return ratio(simpleCodec, simpleRef);
    case "chunk-decode-object":
      return ratio(chunkCodec, chunkRef);
    case "ext-chunk-decode-object":
      return ratio(extChunkCodec, extChunkRef);
    case "write-payload-32mib-vs-4kib": {
      const big = writeRequest(32 * MiB);
      const small = writeRequest(4 * KiB);
      const r = decodeRequest(big);
      if (!r.done || r.frame.data?.length !== 32 * MiB || r.frame.data.buffer !== big.buffer) {
        throw new Error("32 MiB write: payload is not a view of the input");
      }
      const [a, b] = payloadLoops(big, small, (x) => decodeRequest(x));
      return ratio(a, b);
    }
    case "offset-data-32mib-vs-4kib": {
      const big = offsetDataChunk(32 * MiB);
      const small = offsetDataChunk(4 * KiB);
      const r = decodeReplyChunk(big);
      if (!r.done || r.frame.payload.kind !== "offset-data" || r.frame.payload.data.buffer !== big.buffer) {
        throw new Error("32 MiB OFFSET_DATA: payload is not a view of the input");
      }
      const [a, b] = payloadLoops(big, small, (x) => decodeReplyChunk(x));
      return ratio(a, b);
    }
    case "block-status-100k":
    case "block-status-ext-100k": {
      const ext = id === "block-status-ext-100k";
      const [codec, memcpy, chunk] = blockStatusLoops(ext);
      const r = decodeReplyChunk(chunk);
      if (
        !r.done || r.frame.payload.kind !== "block-status" || r.frame.payload.descriptors.count !== 100_000
      ) {
        throw new Error("block status: not decoded as 100,000 descriptors");
      }
      const d = r.frame.payload.descriptors;
      let total = 0n;
      for (let i = 0; i < d.count; i++) total += d.lengthAt(i);
      if (total <= 0x8000_0000n) throw new Error("block status: total length should exceed 2^31");
      return {
        plan: { a: codec, b: memcpy, batchMs: 6 },
        finish: (t) => {
          const cLimitNs = t.bNs * C_LIMIT_PER_MEMCPY;
          return {
            measured: t.aNs / cLimitNs,
            codecNs: t.aNs,
            codecMedianNs: median(t.aSamples),
            refNs: cLimitNs,
          };
        },
      };
    }
    case "to-extents-100k": {
      const chunk = blockStatusChunk(100_000, true);
      const r = decodeReplyChunk(chunk);
      if (!r.done || r.frame.payload.kind !== "block-status") throw new Error("block status not decoded");
      const d = r.frame.payload.descriptors;
      const descriptorBytes = chunk.subarray(40);
      same(
        id,
        toExtents("base:allocation", d, 0x8000_0000n),
        refAllocationExtents(descriptorBytes, 0x8000_0000n),
      );
      const codec: Loop = (k) => {
        let s = 0;
        for (let i = 0; i < k; i++) s += toExtents("base:allocation", d, 0x8000_0000n).length;
        return s;
      };
      const ref: Loop = (k) => {
        let s = 0;
        for (let i = 0; i < k; i++) s += refAllocationExtents(descriptorBytes, 0x8000_0000n).length;
        return s;
      };
      return ratio(codec, ref, 30);
    }
    default:
      throw new Error(`unknown goal ${id}`);
  }
}

async function main(): Promise<void> {
  const only = process.argv.find((a) => a.startsWith("--only="))?.slice(7).split(",");
  // --part=timing runs the timed goals, --part=alloc the allocation goals (started with the allocation
  // V8 flags, see _harness.ts); default both.
  const part = process.argv.find((a) => a.startsWith("--part="))?.slice(7) ?? "all";
  const results: ProcessResult[] = [];
  const timed: { id: string; kind: GoalKind; t: Timed }[] = [];
  for (const g of GOALS) {
    if (g.kind === "stability") continue;
    if (only !== undefined && !only.includes(g.id)) continue;
    const isAlloc = g.kind === "alloc" || g.id.endsWith("-alloc");
    if ((part === "timing" && isAlloc) || (part === "alloc" && !isAlloc)) continue;
    try {
      const m = runGoal(g.id);
      if ("plan" in m) timed.push({ id: g.id, kind: g.kind, t: m });
      else results.push({ id: g.id, kind: g.kind, ...m });
    } catch (e) {
      results.push({
        id: g.id,
        kind: g.kind,
        measured: NaN,
        error: e instanceof Error ? e.message : String(e),
      });
    }
  }
  const timings = await timePairs(timed.map((x) => x.t.plan));
  timed.forEach((x, i) => {
    const t = timings[i]!;
    const dump = process.env["BENCH_DUMP"] ? { rounds: { codec: t.aRounds, ref: t.bRounds } } : {};
    results.push({ id: x.id, kind: x.kind, ...x.t.finish(t), ...dump });
  });
  const runtime = typeof (globalThis as { Deno?: unknown }).Deno === "object" ? "deno" : "node";
  const version = runtime === "deno"
    ? (globalThis as unknown as { Deno: { version: { deno: string; v8: string } } }).Deno.version.deno
    : process.version;
  // medians of the sink keep every loop's result observable
  const out = { runtime, version, sink: median([sink.value]), results };
  process.stdout.write(JSON.stringify(out) + "\n");
}

await main();

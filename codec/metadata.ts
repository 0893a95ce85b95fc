/**
 * Metadata contexts: what the status field of a block-status descriptor means in each context, the labels
 * `nbdinfo --map` prints for it, and the way back from typed extents to descriptors.
 *
 * Nothing here reads bytes: the reply decoder hands over the descriptors of a `NBD_REPLY_TYPE_BLOCK_STATUS`
 * or `NBD_REPLY_TYPE_BLOCK_STATUS_EXT` chunk as a {@link DescriptorSource} (a lazy view, no object per
 * descriptor), and only {@link toExtents}, which is asked for objects, makes one per extent.
 *
 * @module
 */
import type { Finding } from "./errors.ts";

const U32_MAX_N = 0xffff_ffffn;
const U64_MAX_N = 0xffff_ffff_ffff_ffffn;

/**
 * Names of the metadata contexts this module interprets. `DIRTY_BITMAP_PREFIX` is followed by the bitmap
 * name chosen by the server's operator (`qemu:dirty-bitmap:bitmap0`).
 *
 * `JOINT_ALLOCATION` is a proposal (qemu-devel, June 2021) that was **never merged**: no qemu release
 * offers it. It is interpreted so that traffic from the patched qemu can still be read.
 *
 * @example
 * ```ts
 * import { MetaContext } from "@nbd/codec";
 * console.log(MetaContext.BASE_ALLOCATION); // "base:allocation"
 * console.log(MetaContext.DIRTY_BITMAP_PREFIX + "bitmap0"); // "qemu:dirty-bitmap:bitmap0"
 * ```
 */
export const MetaContext = {
  /** `base:allocation` (spec): bit 0 HOLE, bit 1 ZERO. */
  BASE_ALLOCATION: "base:allocation",
  /** `qemu:dirty-bitmap:` + bitmap name (qemu 3.0): bit 0 DIRTY. */
  DIRTY_BITMAP_PREFIX: "qemu:dirty-bitmap:",
  /** `qemu:allocation-depth` (qemu 5.2): the whole value is the depth in the backing chain. */
  ALLOCATION_DEPTH: "qemu:allocation-depth",
  /** `qemu:joint-allocation`: proposed in 2021, never merged. HOLE 1, ZERO 2, LOCAL 4, BACKING 8. */
  JOINT_ALLOCATION: "qemu:joint-allocation",
} as const;

/**
 * One of the {@link MetaContext} strings.
 *
 * @example
 * ```ts
 * import { MetaContext } from "@nbd/codec";
 * const name: MetaContext = MetaContext.ALLOCATION_DEPTH;
 * console.log(name); // "qemu:allocation-depth"
 * ```
 */
export type MetaContext = (typeof MetaContext)[keyof typeof MetaContext];

/**
 * Status bits of the bit-flag contexts, keyed by the spec name without `NBD_STATE_`. HOLE and ZERO belong
 * to `base:allocation` (and the unmerged `qemu:joint-allocation`), DIRTY to `qemu:dirty-bitmap:*`, LOCAL and
 * BACKING only to the unmerged `qemu:joint-allocation`. `qemu:allocation-depth` has no bits: its value is an
 * integer.
 *
 * @example
 * ```ts
 * import { StateFlag } from "@nbd/codec";
 * console.log(StateFlag.HOLE | StateFlag.ZERO); // 3
 * console.log(StateFlag.DIRTY); // 1
 * ```
 */
export const StateFlag = {
  /** `NBD_STATE_HOLE`: the extent is not allocated. */
  HOLE: 1,
  /** `NBD_STATE_ZERO`: the extent reads as zeroes. */
  ZERO: 2,
  /** `NBD_STATE_DIRTY` (qemu:dirty-bitmap): the extent is dirty in the bitmap. */
  DIRTY: 1,
  /** `NBD_STATE_LOCAL` (unmerged qemu:joint-allocation): data comes from the top layer. */
  LOCAL: 4,
  /** `NBD_STATE_BACKING` (unmerged qemu:joint-allocation): data comes from a backing layer. */
  BACKING: 8,
} as const;

/**
 * One of the {@link StateFlag} values.
 *
 * @example
 * ```ts
 * import { StateFlag } from "@nbd/codec";
 * const f: StateFlag = StateFlag.ZERO;
 * console.log(f); // 2
 * ```
 */
export type StateFlag = (typeof StateFlag)[keyof typeof StateFlag];

/**
 * How a context's status values are interpreted; `"unknown"` for every context this module does not know
 * (its values stay raw numbers).
 *
 * @example
 * ```ts
 * import { contextKind, type ContextKind } from "@nbd/codec";
 * const k: ContextKind = contextKind("qemu:dirty-bitmap:b0");
 * console.log(k); // "qemu:dirty-bitmap"
 * ```
 */
export type ContextKind =
  | "base:allocation"
  | "qemu:dirty-bitmap"
  | "qemu:allocation-depth"
  | "qemu:joint-allocation"
  | "unknown";

/**
 * The lazy descriptor view a block-status chunk decoder provides: `count` descriptors, each read on demand
 * as a `bigint` (exact, 64-bit) or as a `number` (for callers that know the value fits, e.g. every compact
 * descriptor). No object is made per descriptor.
 *
 * @example
 * ```ts
 * import type { DescriptorSource } from "@nbd/codec";
 * const lengths = [4096, 61440], statuses = [0, 3];
 * const view: DescriptorSource = {
 *   count: 2,
 *   lengthAt: (i) => BigInt(lengths[i]!),
 *   statusAt: (i) => BigInt(statuses[i]!),
 *   lengthNumberAt: (i) => lengths[i]!,
 *   statusNumberAt: (i) => statuses[i]!,
 * };
 * console.log(view.statusAt(1)); // 3n
 * ```
 */
export interface DescriptorSource {
  /** Number of descriptors. */
  readonly count: number;
  /** Length of descriptor `i`, exact. */
  lengthAt(i: number): bigint;
  /** Status of descriptor `i`, exact. */
  statusAt(i: number): bigint;
  /** Length of descriptor `i` as a number (exact below 2^53). */
  lengthNumberAt(i: number): number;
  /** Status of descriptor `i` as a number (exact below 2^53). */
  statusNumberAt(i: number): number;
}

/**
 * One descriptor as a plain object: what {@link fromExtents} returns and what the functions taking a
 * {@link DescriptorSource} also accept (in an array) for convenience. Numbers must be non-negative integers
 * below 2^53; bigints below 2^64.
 *
 * @example
 * ```ts
 * import type { PlainDescriptor } from "@nbd/codec";
 * const d: PlainDescriptor = { length: 65536n, status: 3n };
 * console.log(d.length); // 65536n
 * ```
 */
export interface PlainDescriptor {
  /** Extent length in bytes (MUST be nonzero on the wire). */
  readonly length: bigint | number;
  /** Status value, meaning set by the context. */
  readonly status: bigint | number;
}

/**
 * A `base:allocation` status: HOLE (bit 0) and ZERO (bit 1). `status` keeps the whole value, reserved bits
 * included (servers SHOULD send them as 0 and clients MUST ignore them).
 *
 * @example
 * ```ts
 * import { interpretStatus, type AllocationStatus } from "@nbd/codec";
 * const s = interpretStatus("base:allocation", 3) as AllocationStatus;
 * console.log(s.hole, s.zero); // true true
 * ```
 */
export interface AllocationStatus {
  /** Context kind tag. */
  readonly kind: "base:allocation";
  /** The whole status value. */
  readonly status: bigint;
  /** `NBD_STATE_HOLE`: not allocated (clear: allocated or unknown). */
  readonly hole: boolean;
  /** `NBD_STATE_ZERO`: reads as zeroes (clear: unknown). */
  readonly zero: boolean;
}

/**
 * A `qemu:dirty-bitmap:*` status: DIRTY (bit 0).
 *
 * @example
 * ```ts
 * import { interpretStatus, type DirtyBitmapStatus } from "@nbd/codec";
 * const s = interpretStatus("qemu:dirty-bitmap:b0", 1) as DirtyBitmapStatus;
 * console.log(s.dirty); // true
 * ```
 */
export interface DirtyBitmapStatus {
  /** Context kind tag. */
  readonly kind: "qemu:dirty-bitmap";
  /** The whole status value. */
  readonly status: bigint;
  /** `NBD_STATE_DIRTY`. */
  readonly dirty: boolean;
}

/**
 * A `qemu:allocation-depth` status. The value is an integer, not flags: 0 means absent from the whole
 * backing chain, 1 the top (local) layer, N the N-th layer (N-1 levels of backing). `depth` equals `status`;
 * it is a `bigint` because extended descriptors carry 64 bits.
 *
 * @example
 * ```ts
 * import { interpretStatus, type AllocationDepthStatus } from "@nbd/codec";
 * const s = interpretStatus("qemu:allocation-depth", 3) as AllocationDepthStatus;
 * console.log(s.depth, s.local, s.backing); // 3n false true
 * ```
 */
export interface AllocationDepthStatus {
  /** Context kind tag. */
  readonly kind: "qemu:allocation-depth";
  /** The whole status value. */
  readonly status: bigint;
  /** Depth in the backing chain: 0 absent, 1 local, N >= 2 backing. */
  readonly depth: bigint;
  /** `depth === 1n`. */
  readonly local: boolean;
  /** `depth >= 2n`. */
  readonly backing: boolean;
}

/**
 * A status of the proposed `qemu:joint-allocation` context (never merged): HOLE 1, ZERO 2 as in
 * `base:allocation`, LOCAL 4 (data from the top layer), BACKING 8 (data from some backing layer).
 *
 * @example
 * ```ts
 * import { interpretStatus, type JointAllocationStatus } from "@nbd/codec";
 * const s = interpretStatus("qemu:joint-allocation", 8) as JointAllocationStatus;
 * console.log(s.hole, s.backing); // false true
 * ```
 */
export interface JointAllocationStatus {
  /** Context kind tag. */
  readonly kind: "qemu:joint-allocation";
  /** The whole status value. */
  readonly status: bigint;
  /** Bit 0, `NBD_STATE_HOLE`. */
  readonly hole: boolean;
  /** Bit 1, `NBD_STATE_ZERO`. */
  readonly zero: boolean;
  /** Bit 2, `NBD_STATE_LOCAL`. */
  readonly local: boolean;
  /** Bit 3, `NBD_STATE_BACKING`. */
  readonly backing: boolean;
}

/**
 * A status of a context this module does not know: the raw value only.
 *
 * @example
 * ```ts
 * import { interpretStatus } from "@nbd/codec";
 * console.log(interpretStatus("x-mine:stuff", 0x1234)); // { kind: "unknown", status: 4660n }
 * ```
 */
export interface UnknownContextStatus {
  /** Context kind tag. */
  readonly kind: "unknown";
  /** The whole status value. */
  readonly status: bigint;
}

/**
 * A status value interpreted for its context; `kind` tells which.
 *
 * @example
 * ```ts
 * import { interpretStatus, type ContextStatus } from "@nbd/codec";
 * const s: ContextStatus = interpretStatus("base:allocation", 1n);
 * if (s.kind === "base:allocation") console.log(s.hole); // true
 * ```
 */
export type ContextStatus =
  | AllocationStatus
  | DirtyBitmapStatus
  | AllocationDepthStatus
  | JointAllocationStatus
  | UnknownContextStatus;

/**
 * What {@link encodeStatus} takes: `status` gives the starting value (default 0), then every named field
 * of the context that is present sets or clears its bit (for `qemu:allocation-depth`, `depth` replaces the
 * whole value). A {@link ContextStatus}, possibly spread and edited, is a valid input.
 *
 * @example
 * ```ts
 * import { encodeStatus, type StatusInit } from "@nbd/codec";
 * const init: StatusInit = { hole: true, zero: true };
 * console.log(encodeStatus("base:allocation", init)); // 3n
 * ```
 */
export interface StatusInit {
  /** If present, must match the context's kind. */
  readonly kind?: ContextKind;
  /** Starting value: keeps the bits that have no name. */
  readonly status?: bigint | number;
  /** base:allocation, qemu:joint-allocation. */
  readonly hole?: boolean;
  /** base:allocation, qemu:joint-allocation. */
  readonly zero?: boolean;
  /** qemu:dirty-bitmap. */
  readonly dirty?: boolean;
  /** qemu:allocation-depth: the whole value. */
  readonly depth?: bigint | number;
  /** qemu:joint-allocation (bit 2); ignored for qemu:allocation-depth, where it is derived from `depth`. */
  readonly local?: boolean;
  /** qemu:joint-allocation (bit 3); ignored for qemu:allocation-depth, where it is derived from `depth`. */
  readonly backing?: boolean;
}

/**
 * One extent with its absolute offset, its interpreted status and, when `nbdinfo --map` would print one,
 * its `description`.
 *
 * @example
 * ```ts
 * import { toExtents, type MetadataExtent } from "@nbd/codec";
 * const [e]: MetadataExtent[] = toExtents("base:allocation", [{ length: 512, status: 2 }], 1024n);
 * console.log(e?.offset, e?.description); // 1024n "zero"
 * ```
 */
export type MetadataExtent = ContextStatus & {
  /** Absolute offset of the extent in the export. */
  readonly offset: bigint;
  /** Extent length in bytes. */
  readonly length: bigint;
  /** The `nbdinfo --map` label, absent where nbdinfo prints none. */
  readonly description?: string;
};

/**
 * Options of {@link toExtents}.
 *
 * @example
 * ```ts
 * import { toExtents, type ToExtentsOptions } from "@nbd/codec";
 * const opts: ToExtentsOptions = { coalesce: true };
 * const d = [{ length: 512, status: 0 }, { length: 512, status: 0 }];
 * console.log(toExtents("base:allocation", d, 0n, opts).length); // 1
 * ```
 */
export interface ToExtentsOptions {
  /**
   * Merge neighbours with equal status into one extent, as `nbdinfo --map` prints them. Default `false`:
   * one extent per descriptor.
   */
  readonly coalesce?: boolean;
}

/**
 * Options of {@link fromExtents}.
 *
 * @example
 * ```ts
 * import { fromExtents, type FromExtentsOptions } from "@nbd/codec";
 * const opts: FromExtentsOptions = { extended: true };
 * console.log(fromExtents("qemu:allocation-depth", [{ length: 2n ** 33n, depth: 1 }], opts)[0]?.length); // 8589934592n
 * ```
 */
export interface FromExtentsOptions {
  /**
   * `true` for `NBD_REPLY_TYPE_BLOCK_STATUS_EXT` (64-bit lengths and statuses); `false` (default) for
   * `NBD_REPLY_TYPE_BLOCK_STATUS`, where both must fit in 32 bits.
   */
  readonly extended?: boolean;
  /** Offset of the first extent; extents that carry an `offset` must then follow each other without gaps. */
  readonly startOffset?: bigint;
}

/**
 * Options of {@link checkStatusUpperBits}.
 *
 * @example
 * ```ts
 * import { checkStatusUpperBits, type UpperBitsOptions } from "@nbd/codec";
 * const opts: UpperBitsOptions = { offset: 40 };
 * console.log(checkStatusUpperBits("base:allocation", [{ length: 1, status: 1n << 32n }], opts)[0]?.offset); // 48
 * ```
 */
export interface UpperBitsOptions {
  /**
   * Byte offset, in the decoder's input, of the first 16-byte extended descriptor; findings then point at
   * the offending status field. Default 0 (offsets relative to the first descriptor).
   */
  readonly offset?: number;
}

const DIRTY_PREFIX = MetaContext.DIRTY_BITMAP_PREFIX;

/**
 * How the status values of the named context are interpreted. Dirty bitmaps match by prefix (any bitmap
 * name, as `nbdinfo` does); the other names match exactly. Any other context, including other `base:`
 * leaves, is `"unknown"`.
 *
 * @example
 * ```ts
 * import { contextKind } from "@nbd/codec";
 * console.log(contextKind("base:allocation")); // "base:allocation"
 * console.log(contextKind("qemu:dirty-bitmap:backup-0")); // "qemu:dirty-bitmap"
 * console.log(contextKind("x-vendor:thing")); // "unknown"
 * ```
 */
export function contextKind(name: string): ContextKind {
  if (typeof name !== "string") {
    throw new TypeError(`Cannot interpret context: name is ${typeof name}, not a string`);
  }
  switch (name) {
    case MetaContext.BASE_ALLOCATION:
      return "base:allocation";
    case MetaContext.ALLOCATION_DEPTH:
      return "qemu:allocation-depth";
    case MetaContext.JOINT_ALLOCATION:
      return "qemu:joint-allocation";
  }
  return name.startsWith(DIRTY_PREFIX) ? "qemu:dirty-bitmap" : "unknown";
}

/**
 * Whether the spec limits the named context to 32-bit status values: every context of the `base:`
 * namespace. For those, the upper 32 bits of a 64-bit (extended) status MUST be 0.
 *
 * @example
 * ```ts
 * import { is32BitContext } from "@nbd/codec";
 * console.log(is32BitContext("base:allocation")); // true
 * console.log(is32BitContext("qemu:allocation-depth")); // false
 * ```
 */
export function is32BitContext(name: string): boolean {
  return name.startsWith("base:");
}

function toU64(v: bigint | number, what: string, index = -1, noun = "descriptor"): bigint {
  if (typeof v === "bigint") {
    if (v >= 0n && v <= U64_MAX_N) return v;
    throw new RangeError(`Cannot interpret ${label(what, index, noun)}: ${v} is outside 0..2^64-1`);
  }
  if (typeof v !== "number" || !Number.isInteger(v)) {
    throw new TypeError(
      `Cannot interpret ${label(what, index, noun)}: ${String(v)} is not an integer or a bigint`,
    );
  }
  if (v < 0 || v > Number.MAX_SAFE_INTEGER) {
    throw new RangeError(
      `Cannot interpret ${label(what, index, noun)}: ${v} is outside 0..2^53-1 (pass a bigint)`,
    );
  }
  return BigInt(v);
}

function label(what: string, index: number, noun: string): string {
  return index < 0 ? what : `${what} of ${noun} ${index}`;
}

const MAX_SAFE_N = BigInt(Number.MAX_SAFE_INTEGER);

/** The status as a number when exact (below 2^53), else -1: flag tests then use number operations. */
function exactNumber(s: bigint): number {
  return s <= MAX_SAFE_N ? Number(s) : -1;
}

/** Bits 0-3 of a status; `num` is {@link exactNumber} of `s`. */
function low4(s: bigint, num: number): number {
  // ToInt32 is exact modulo 2^32 for every integer below 2^53.
  return num >= 0 ? num & 15 : Number(s & 15n);
}

function interpretKind(kind: ContextKind, s: bigint, num: number): ContextStatus {
  switch (kind) {
    case "base:allocation": {
      const b = low4(s, num);
      return { kind, status: s, hole: (b & 1) !== 0, zero: (b & 2) !== 0 };
    }
    case "qemu:dirty-bitmap":
      return { kind, status: s, dirty: (low4(s, num) & 1) !== 0 };
    case "qemu:allocation-depth":
      return { kind, status: s, depth: s, local: num === 1, backing: num < 0 || num >= 2 };
    case "qemu:joint-allocation": {
      const b = low4(s, num);
      return {
        kind,
        status: s,
        hole: (b & 1) !== 0,
        zero: (b & 2) !== 0,
        local: (b & 4) !== 0,
        backing: (b & 8) !== 0,
      };
    }
    default:
      return { kind: "unknown", status: s };
  }
}

/**
 * Interprets one status value for the named context. Unknown contexts keep the raw value. Throws
 * `TypeError`/`RangeError` for a value that is not an integer in 0..2^64-1 (numbers: 0..2^53-1).
 *
 * @example
 * ```ts
 * import { interpretStatus } from "@nbd/codec";
 * console.log(interpretStatus("base:allocation", 3)); // { kind: "base:allocation", status: 3n, hole: true, zero: true }
 * console.log(interpretStatus("qemu:allocation-depth", 1n).kind); // "qemu:allocation-depth"
 * ```
 */
export function interpretStatus(contextName: string, status: number | bigint): ContextStatus {
  const s = toU64(status, "status");
  return interpretKind(contextKind(contextName), s, exactNumber(s));
}

const BASE_LABELS: readonly string[] = ["data", "hole", "zero", "hole,zero"];
const DIRTY_LABELS: readonly string[] = ["clean", "dirty"];
// The joint-allocation labels follow the unmerged nbdinfo RFC patch of June 2021.
const JOINT_LOW: readonly string[] = ["allocated", "hole", "zero", "hole,zero"];
const JOINT_HIGH: readonly string[] = [",unallocated", ",local", ",backing", ",<unexpected depth>"];

function describeKind(kind: ContextKind, s: bigint, num: number): string | undefined {
  switch (kind) {
    case "base:allocation":
      return num >= 0 && num < 4 ? BASE_LABELS[num] : undefined;
    case "qemu:dirty-bitmap":
      return num >= 0 && num < 2 ? DIRTY_LABELS[num] : undefined;
    case "qemu:allocation-depth":
      return num === 0 ? "absent" : num === 1 ? "local" : `backing depth ${s}`;
    case "qemu:joint-allocation":
      // The RFC names bits 0-3 only; a value with higher bits set gets no label (our choice).
      return num >= 0 && num < 16 ? JOINT_LOW[num & 3]! + JOINT_HIGH[num >> 2]! : undefined;
    default:
      return undefined;
  }
}

/** One extent object per kind, each with one key order (two shapes: with and without a label). */
function extentOf(kind: ContextKind, s: bigint, num: number, offset: bigint, length: bigint): MetadataExtent {
  const d = describeKind(kind, s, num);
  switch (kind) {
    case "base:allocation": {
      const b = low4(s, num);
      const hole = (b & 1) !== 0;
      const zero = (b & 2) !== 0;
      return d === undefined
        ? { kind, status: s, hole, zero, offset, length }
        : { kind, status: s, hole, zero, offset, length, description: d };
    }
    case "qemu:dirty-bitmap": {
      const dirty = (low4(s, num) & 1) !== 0;
      return d === undefined
        ? { kind, status: s, dirty, offset, length }
        : { kind, status: s, dirty, offset, length, description: d };
    }
    case "qemu:allocation-depth":
      return {
        kind,
        status: s,
        depth: s,
        local: num === 1,
        backing: num < 0 || num >= 2,
        offset,
        length,
        description: d!,
      };
    case "qemu:joint-allocation": {
      const b = low4(s, num);
      const hole = (b & 1) !== 0;
      const zero = (b & 2) !== 0;
      const local = (b & 4) !== 0;
      const backing = (b & 8) !== 0;
      return d === undefined
        ? { kind, status: s, hole, zero, local, backing, offset, length }
        : { kind, status: s, hole, zero, local, backing, offset, length, description: d };
    }
    default:
      return { kind: "unknown", status: s, offset, length };
  }
}

/**
 * The label `nbdinfo --map` prints for a status (libnbd 1.10 and later), or `undefined` where it prints
 * none: `base:allocation` 0 "data", 1 "hole", 2 "zero", 3 "hole,zero"; dirty bitmaps 0 "clean",
 * 1 "dirty"; `qemu:allocation-depth` 0 "absent", 1 "local", N "backing depth N"; the unmerged
 * `qemu:joint-allocation` as its nbdinfo RFC patch ("hole,zero,unallocated", "allocated,local", ...).
 * Labels are cosmetic (libnbd renamed some in 1.8.1): compare numbers, not labels.
 *
 * @example
 * ```ts
 * import { describeStatus } from "@nbd/codec";
 * console.log(describeStatus("base:allocation", 3)); // "hole,zero"
 * console.log(describeStatus("qemu:allocation-depth", 4n)); // "backing depth 4"
 * console.log(describeStatus("base:allocation", 4)); // undefined
 * ```
 */
export function describeStatus(contextName: string, status: number | bigint): string | undefined {
  const s = toU64(status, "status");
  return describeKind(contextKind(contextName), s, exactNumber(s));
}

const FIELDS_OF: Readonly<Record<ContextKind, readonly string[]>> = {
  "base:allocation": ["hole", "zero"],
  "qemu:dirty-bitmap": ["dirty"],
  "qemu:allocation-depth": ["depth", "local", "backing"],
  "qemu:joint-allocation": ["hole", "zero", "local", "backing"],
  "unknown": [],
};
const NAMED_FIELDS: readonly string[] = ["hole", "zero", "dirty", "depth", "local", "backing"];

function setBit(v: bigint, bit: bigint, on: boolean | undefined, what: string): bigint {
  if (on === undefined) return v;
  if (typeof on !== "boolean") {
    throw new TypeError(`Cannot encode status: ${what} is ${typeof on}, not a boolean`);
  }
  return on ? v | bit : v & ~bit;
}

function encodeKind(kind: ContextKind, contextName: string, init: StatusInit): bigint {
  if (typeof init !== "object" || init === null) {
    throw new TypeError("Cannot encode status: expected an object");
  }
  if (init.kind !== undefined && init.kind !== kind) {
    throw new TypeError(`Cannot encode status: a "${init.kind}" status given for context "${contextName}"`);
  }
  const allowed = FIELDS_OF[kind];
  for (const f of NAMED_FIELDS) {
    if ((init as Record<string, unknown>)[f] !== undefined && !allowed.includes(f)) {
      throw new TypeError(`Cannot encode status: field "${f}" has no meaning in context "${contextName}"`);
    }
  }
  let v = init.status === undefined ? 0n : toU64(init.status, "status");
  switch (kind) {
    case "base:allocation":
      v = setBit(v, 1n, init.hole, "hole");
      return setBit(v, 2n, init.zero, "zero");
    case "qemu:dirty-bitmap":
      return setBit(v, 1n, init.dirty, "dirty");
    case "qemu:allocation-depth":
      return init.depth === undefined ? v : toU64(init.depth, "depth");
    case "qemu:joint-allocation":
      v = setBit(v, 1n, init.hole, "hole");
      v = setBit(v, 2n, init.zero, "zero");
      v = setBit(v, 4n, init.local, "local");
      return setBit(v, 8n, init.backing, "backing");
    default:
      return v;
  }
}

/**
 * The status value for a typed status: the inverse of {@link interpretStatus}. Throws `TypeError` for a
 * status of another context's kind or a field the context does not have, `RangeError` for a value outside
 * 0..2^64-1.
 *
 * @example
 * ```ts
 * import { encodeStatus, interpretStatus } from "@nbd/codec";
 * console.log(encodeStatus("qemu:dirty-bitmap:b0", { dirty: true })); // 1n
 * console.log(encodeStatus("qemu:joint-allocation", { zero: true, local: true })); // 6n
 * const s = interpretStatus("base:allocation", 0x80000003);
 * console.log(encodeStatus("base:allocation", { ...s, hole: false })); // 2147483650n
 * ```
 */
export function encodeStatus(contextName: string, typed: StatusInit): bigint {
  return encodeKind(contextKind(contextName), contextName, typed);
}

function isArraySource(d: DescriptorSource | readonly PlainDescriptor[]): d is readonly PlainDescriptor[] {
  return Array.isArray(d);
}

function checkSource(d: DescriptorSource | readonly PlainDescriptor[]): void {
  if (typeof d !== "object" || d === null) {
    throw new TypeError(
      "Cannot read descriptors: expected a DescriptorSource or an array of {length, status}",
    );
  }
  if (!isArraySource(d) && (!Number.isInteger(d.count) || d.count < 0)) {
    throw new TypeError(`Cannot read descriptors: count is ${String(d.count)}`);
  }
}

/**
 * Turns the descriptors of one block-status chunk into extents with absolute offsets, starting at
 * `startOffset` (the request's offset), each with its interpreted status and `nbdinfo` label. This makes
 * one object per extent: use the {@link DescriptorSource} itself (or {@link interpretStatus} on demand) to
 * walk large replies without allocating. Throws `RangeError` if the extents run past 2^64-1.
 *
 * @example
 * ```ts
 * import { toExtents } from "@nbd/codec";
 * const e = toExtents("base:allocation", [{ length: 4096, status: 0 }, { length: 61440, status: 3 }], 65536n);
 * console.log(e[1]); // { kind: "base:allocation", status: 3n, hole: true, zero: true, offset: 69632n, length: 61440n, description: "hole,zero" }
 * ```
 */
export function toExtents(
  contextName: string,
  descriptors: DescriptorSource | readonly PlainDescriptor[],
  startOffset: bigint,
  options?: ToExtentsOptions,
): MetadataExtent[] {
  const kind = contextKind(contextName);
  checkSource(descriptors);
  let offset = toU64(startOffset, "start offset");
  const coalesce = options?.coalesce === true;
  const arr = isArraySource(descriptors) ? descriptors : undefined;
  const src = arr === undefined ? (descriptors as DescriptorSource) : undefined;
  const n = arr !== undefined ? arr.length : src!.count;
  const out: MetadataExtent[] = [];
  let i = 0;
  while (i < n) {
    let length: bigint;
    let status: bigint;
    let num: number;
    if (arr !== undefined) {
      const d = arr[i]!;
      length = toU64(d.length, "length", i);
      status = toU64(d.status, "status", i);
      num = exactNumber(status);
    } else {
      length = src!.lengthAt(i);
      status = src!.statusAt(i);
      // statusNumberAt is exact below 2^53 and saves a bigint comparison.
      const sn = src!.statusNumberAt(i);
      num = sn <= Number.MAX_SAFE_INTEGER ? sn : -1;
    }
    i++;
    if (coalesce) {
      while (i < n) {
        const next = arr !== undefined ? toU64(arr[i]!.status, "status", i) : src!.statusAt(i);
        if (next !== status) break;
        length += arr !== undefined ? toU64(arr[i]!.length, "length", i) : src!.lengthAt(i);
        i++;
      }
    }
    out.push(extentOf(kind, status, num, offset, length));
    offset += length;
    if (offset > U64_MAX_N) throw new RangeError(`Cannot place extent ${i - 1}: it ends past 2^64-1`);
  }
  return out;
}

/**
 * The extent shape {@link fromExtents} takes: a length, an optional offset (checked for continuity), and
 * the status as a value and/or typed fields (see {@link StatusInit}).
 *
 * @example
 * ```ts
 * import type { ExtentInit } from "@nbd/codec";
 * const e: ExtentInit = { length: 512n, hole: true, zero: true };
 * console.log(e.length); // 512n
 * ```
 */
export type ExtentInit = StatusInit & {
  /** Extent length in bytes, nonzero. */
  readonly length: bigint | number;
  /** Absolute offset; when present it must equal the end of the previous extent. */
  readonly offset?: bigint;
  /** Ignored (an output of {@link toExtents} may be passed back as it is). */
  readonly description?: string;
};

/**
 * Turns extents back into descriptors (the inverse of {@link toExtents}), ready for a block-status chunk
 * encoder. Throws `RangeError` for a zero length (the spec says MUST be nonzero), extents that do not follow
 * each other, or (unless `extended`) a length or status above 2^32-1; `TypeError` as {@link encodeStatus}.
 *
 * @example
 * ```ts
 * import { fromExtents } from "@nbd/codec";
 * const d = fromExtents("base:allocation", [{ length: 4096, hole: false }, { length: 8192, hole: true, zero: true }]);
 * console.log(d); // [ { length: 4096n, status: 0n }, { length: 8192n, status: 3n } ]
 * ```
 */
export function fromExtents(
  contextName: string,
  extents: readonly ExtentInit[],
  options?: FromExtentsOptions,
): { length: bigint; status: bigint }[] {
  if (!Array.isArray(extents)) throw new TypeError("Cannot encode extents: expected an array");
  const kind = contextKind(contextName);
  const max = options?.extended === true ? U64_MAX_N : U32_MAX_N;
  let expected = options?.startOffset === undefined ? undefined : toU64(options.startOffset, "start offset");
  const out: { length: bigint; status: bigint }[] = [];
  for (let i = 0; i < extents.length; i++) {
    const e = extents[i]!;
    const length = toU64(e.length, "length", i, "extent");
    if (length === 0n) throw new RangeError(`Cannot encode extent ${i}: its length is 0 (MUST be nonzero)`);
    const status = encodeKind(kind, contextName, e);
    if (length > max || status > max) {
      throw new RangeError(
        `Cannot encode extent ${i}: length ${length} or status ${status} does not fit in 32 bits ` +
          "(pass extended: true for NBD_REPLY_TYPE_BLOCK_STATUS_EXT)",
      );
    }
    if (e.offset !== undefined) {
      const at = toU64(e.offset, "offset", i, "extent");
      if (expected !== undefined && at !== expected) {
        throw new RangeError(
          `Cannot encode extent ${i}: it starts at ${at}, expected ${expected} (extents are consecutive)`,
        );
      }
      expected = at;
    }
    if (expected !== undefined) expected += length;
    out.push({ length, status });
  }
  return out;
}

/**
 * Checks the rule that, in extended descriptors, a context of the `base:` namespace leaves the upper 32 bits
 * of every status at 0. Returns no finding for other contexts, and at most one finding (for the first
 * offending descriptor, counting the others in its message) with code `"reserved-bits"` and rule
 * `"block-status-upper-bits"`. Pass the byte offset of the first descriptor as `offset` to get absolute
 * finding offsets. Never throws for peer data; it is up to the caller to treat the finding as fatal.
 *
 * @example
 * ```ts
 * import { checkStatusUpperBits } from "@nbd/codec";
 * const bad = [{ length: 512n, status: 0n }, { length: 512n, status: 0x1_0000_0001n }];
 * console.log(checkStatusUpperBits("base:allocation", bad)[0]?.offset); // 24
 * console.log(checkStatusUpperBits("qemu:allocation-depth", bad).length); // 0
 * ```
 */
export function checkStatusUpperBits(
  contextName: string,
  descriptors: DescriptorSource | readonly PlainDescriptor[],
  options?: UpperBitsOptions,
): readonly Finding[] {
  checkSource(descriptors);
  if (!is32BitContext(contextName)) return [];
  const base = options?.offset ?? 0;
  const arr = isArraySource(descriptors) ? descriptors : undefined;
  const src = arr === undefined ? (descriptors as DescriptorSource) : undefined;
  const n = arr !== undefined ? arr.length : src!.count;
  let first = -1;
  let firstValue = 0n;
  let bad = 0;
  for (let i = 0; i < n; i++) {
    let hi: boolean;
    let v = 0n;
    if (arr !== undefined) {
      v = toU64(arr[i]!.status, "status", i);
      hi = v > U32_MAX_N;
    } else {
      // statusNumberAt is exact up to 2^53 and above 2^32-1 for any value with an upper bit set.
      hi = src!.statusNumberAt(i) > 0xffff_ffff;
      if (hi && first < 0) v = src!.statusAt(i);
    }
    if (hi) {
      if (first < 0) {
        first = i;
        firstValue = v;
      }
      bad++;
    }
  }
  if (first < 0) return [];
  const others = bad > 1 ? ` (and ${bad - 1} more)` : "";
  return [{
    code: "reserved-bits",
    offset: base + 16 * first + 8,
    rule: "block-status-upper-bits",
    message: `descriptor ${first} of context "${contextName}" has status 0x${
      firstValue.toString(16)
    }${others}; for a 32-bit context (every base: context) the upper 32 status bits MUST be 0 (spec, BLOCK_STATUS_EXT)`,
  }];
}

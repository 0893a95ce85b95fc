import { describe, expect, test } from "vitest";
import {
  checkStatusUpperBits,
  contextKind,
  describeStatus,
  type DescriptorSource,
  encodeStatus,
  fromExtents,
  interpretStatus,
  is32BitContext,
  MetaContext,
  StateFlag,
  toExtents,
} from "../mod.ts";

/** A lazy view over a big-endian extended (16-byte) descriptor array, as the reply decoder provides one. */
function extendedView(bytes: Uint8Array): DescriptorSource {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    count: bytes.length / 16,
    lengthAt: (i) => dv.getBigUint64(16 * i),
    statusAt: (i) => dv.getBigUint64(16 * i + 8),
    lengthNumberAt: (i) => dv.getUint32(16 * i) * 2 ** 32 + dv.getUint32(16 * i + 4),
    statusNumberAt: (i) => dv.getUint32(16 * i + 8) * 2 ** 32 + dv.getUint32(16 * i + 12),
  };
}

/** The same over compact (8-byte) descriptors. */
function compactView(bytes: Uint8Array): DescriptorSource {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    count: bytes.length / 8,
    lengthAt: (i) => BigInt(dv.getUint32(8 * i)),
    statusAt: (i) => BigInt(dv.getUint32(8 * i + 4)),
    lengthNumberAt: (i) => dv.getUint32(8 * i),
    statusNumberAt: (i) => dv.getUint32(8 * i + 4),
  };
}

describe("constants", () => {
  test("StateFlag holds the spec and qemu bit values", () => {
    expect(StateFlag).toEqual({ HOLE: 1, ZERO: 2, DIRTY: 1, LOCAL: 4, BACKING: 8 });
  });
  test("MetaContext holds the context names", () => {
    expect(MetaContext.BASE_ALLOCATION).toBe("base:allocation");
    expect(MetaContext.DIRTY_BITMAP_PREFIX).toBe("qemu:dirty-bitmap:");
    expect(MetaContext.ALLOCATION_DEPTH).toBe("qemu:allocation-depth");
    expect(MetaContext.JOINT_ALLOCATION).toBe("qemu:joint-allocation");
  });
});

describe("contextKind()", () => {
  test("contextKind() recognises each known context and calls the rest unknown", () => {
    expect(contextKind("base:allocation")).toBe("base:allocation");
    expect(contextKind("qemu:dirty-bitmap:bitmap0")).toBe("qemu:dirty-bitmap");
    expect(contextKind("qemu:allocation-depth")).toBe("qemu:allocation-depth");
    expect(contextKind("qemu:joint-allocation")).toBe("qemu:joint-allocation");
    expect(contextKind("base:something-newer")).toBe("unknown");
    expect(contextKind("qemu:dirty-bitmap")).toBe("unknown");
    expect(contextKind("BASE:ALLOCATION")).toBe("unknown");
    expect(contextKind("x-test:stuff")).toBe("unknown");
  });
  test("is32BitContext() covers the whole base: namespace only", () => {
    expect(is32BitContext("base:allocation")).toBe(true);
    expect(is32BitContext("base:future")).toBe(true);
    expect(is32BitContext("qemu:allocation-depth")).toBe(false);
    expect(is32BitContext("qemu:dirty-bitmap:b")).toBe(false);
  });
  test("contextKind() rejects a name that is not a string", () => {
    expect(() => contextKind(5 as unknown as string)).toThrow(TypeError);
  });
});

describe("base:allocation", () => {
  const ctx = "base:allocation";
  test("interpretStatus() reads HOLE from bit 0 and ZERO from bit 1", () => {
    expect(interpretStatus(ctx, 0)).toEqual({ kind: ctx, status: 0n, hole: false, zero: false });
    expect(interpretStatus(ctx, 1)).toEqual({ kind: ctx, status: 1n, hole: true, zero: false });
    expect(interpretStatus(ctx, 2n)).toEqual({ kind: ctx, status: 2n, hole: false, zero: true });
    expect(interpretStatus(ctx, 3)).toEqual({ kind: ctx, status: 3n, hole: true, zero: true });
  });
  test("interpretStatus() keeps reserved bits in status and ignores them for the flags", () => {
    expect(interpretStatus(ctx, 0xffff_fffc)).toEqual({
      kind: ctx,
      status: 0xffff_fffcn,
      hole: false,
      zero: false,
    });
  });
  test("encodeStatus() is the inverse of interpretStatus() for every low value and reserved bits", () => {
    for (const v of [0, 1, 2, 3, 4, 0x8000_0001, 0xffff_ffff]) {
      expect(encodeStatus(ctx, interpretStatus(ctx, v))).toBe(BigInt(v));
    }
    expect(encodeStatus(ctx, { hole: true })).toBe(1n);
    expect(encodeStatus(ctx, { zero: true })).toBe(2n);
    expect(encodeStatus(ctx, { hole: true, zero: true })).toBe(3n);
    expect(encodeStatus(ctx, {})).toBe(0n);
    expect(encodeStatus(ctx, { status: 7, hole: false })).toBe(6n);
  });
  test("describeStatus() prints nbdinfo's labels, and none for other values", () => {
    expect(describeStatus(ctx, 0)).toBe("data");
    expect(describeStatus(ctx, 1)).toBe("hole");
    expect(describeStatus(ctx, 2)).toBe("zero");
    expect(describeStatus(ctx, 3)).toBe("hole,zero");
    expect(describeStatus(ctx, 4)).toBeUndefined();
    expect(describeStatus(ctx, 0x1_0000_0000n)).toBeUndefined();
  });
});

describe("qemu:dirty-bitmap:*", () => {
  const ctx = "qemu:dirty-bitmap:backup-0";
  test("interpretStatus() reads DIRTY from bit 0", () => {
    expect(interpretStatus(ctx, 0)).toEqual({ kind: "qemu:dirty-bitmap", status: 0n, dirty: false });
    expect(interpretStatus(ctx, 1)).toEqual({ kind: "qemu:dirty-bitmap", status: 1n, dirty: true });
    expect(interpretStatus(ctx, 3).kind).toBe("qemu:dirty-bitmap");
  });
  test("encodeStatus() sets and clears DIRTY and keeps other bits", () => {
    expect(encodeStatus(ctx, { dirty: true })).toBe(1n);
    expect(encodeStatus(ctx, { dirty: false })).toBe(0n);
    expect(encodeStatus(ctx, interpretStatus(ctx, 0x10))).toBe(0x10n);
    expect(encodeStatus(ctx, { ...interpretStatus(ctx, 0x11), dirty: false })).toBe(0x10n);
  });
  test("describeStatus() prints clean and dirty, and nothing else", () => {
    expect(describeStatus(ctx, 0)).toBe("clean");
    expect(describeStatus(ctx, 1)).toBe("dirty");
    expect(describeStatus(ctx, 2)).toBeUndefined();
  });
});

describe("qemu:allocation-depth", () => {
  const ctx = "qemu:allocation-depth";
  test("interpretStatus() reads the whole value as the depth", () => {
    expect(interpretStatus(ctx, 0)).toEqual({
      kind: ctx,
      status: 0n,
      depth: 0n,
      local: false,
      backing: false,
    });
    expect(interpretStatus(ctx, 1)).toEqual({
      kind: ctx,
      status: 1n,
      depth: 1n,
      local: true,
      backing: false,
    });
    expect(interpretStatus(ctx, 2)).toEqual({
      kind: ctx,
      status: 2n,
      depth: 2n,
      local: false,
      backing: true,
    });
    // not a bitmask: 3 is the third layer, not "1|2"
    expect(interpretStatus(ctx, 3)).toEqual({
      kind: ctx,
      status: 3n,
      depth: 3n,
      local: false,
      backing: true,
    });
  });
  test("interpretStatus() keeps 64-bit depths exact", () => {
    const big = 0xffff_ffff_ffff_fffen;
    expect(interpretStatus(ctx, big)).toEqual({
      kind: ctx,
      status: big,
      depth: big,
      local: false,
      backing: true,
    });
    expect(interpretStatus(ctx, 2n ** 53n + 1n).status).toBe(9007199254740993n);
  });
  test("encodeStatus() takes the depth as the whole value", () => {
    expect(encodeStatus(ctx, { depth: 0 })).toBe(0n);
    expect(encodeStatus(ctx, { depth: 1n })).toBe(1n);
    expect(encodeStatus(ctx, { depth: 7 })).toBe(7n);
    expect(encodeStatus(ctx, { depth: 0x1_0000_0002n })).toBe(0x1_0000_0002n);
    expect(encodeStatus(ctx, { ...interpretStatus(ctx, 5), depth: 9n })).toBe(9n);
    expect(encodeStatus(ctx, interpretStatus(ctx, 2n ** 63n))).toBe(2n ** 63n);
  });
  test("describeStatus() prints absent, local and backing depth N", () => {
    expect(describeStatus(ctx, 0)).toBe("absent");
    expect(describeStatus(ctx, 1)).toBe("local");
    expect(describeStatus(ctx, 2)).toBe("backing depth 2");
    expect(describeStatus(ctx, 17)).toBe("backing depth 17");
    expect(describeStatus(ctx, 0xffff_ffff)).toBe("backing depth 4294967295");
    expect(describeStatus(ctx, 0x1_0000_0000n)).toBe("backing depth 4294967296");
    expect(describeStatus(ctx, 0xffff_ffff_ffff_ffffn)).toBe("backing depth 18446744073709551615");
  });
});

describe("qemu:joint-allocation (never merged)", () => {
  const ctx = "qemu:joint-allocation";
  test("interpretStatus() reads HOLE 1, ZERO 2, LOCAL 4, BACKING 8", () => {
    expect(interpretStatus(ctx, 0)).toEqual({
      kind: ctx,
      status: 0n,
      hole: false,
      zero: false,
      local: false,
      backing: false,
    });
    expect(interpretStatus(ctx, 0xb)).toEqual({
      kind: ctx,
      status: 11n,
      hole: true,
      zero: true,
      local: false,
      backing: true,
    });
    expect(interpretStatus(ctx, 4)).toEqual({
      kind: ctx,
      status: 4n,
      hole: false,
      zero: false,
      local: true,
      backing: false,
    });
  });
  test("encodeStatus() is the inverse of interpretStatus() for all 16 values", () => {
    for (let v = 0; v < 16; v++) expect(encodeStatus(ctx, interpretStatus(ctx, v))).toBe(BigInt(v));
    expect(encodeStatus(ctx, { hole: true, zero: true, backing: true })).toBe(11n);
    expect(encodeStatus(ctx, { local: true })).toBe(4n);
  });
  test("describeStatus() prints the labels of the nbdinfo RFC patch", () => {
    expect(describeStatus(ctx, 0)).toBe("allocated,unallocated");
    expect(describeStatus(ctx, 3)).toBe("hole,zero,unallocated");
    expect(describeStatus(ctx, 4)).toBe("allocated,local");
    expect(describeStatus(ctx, 7)).toBe("hole,zero,local");
    expect(describeStatus(ctx, 9)).toBe("hole,backing");
    expect(describeStatus(ctx, 10)).toBe("zero,backing");
    expect(describeStatus(ctx, 12)).toBe("allocated,<unexpected depth>");
    expect(describeStatus(ctx, 16)).toBeUndefined();
  });
});

describe("unknown contexts", () => {
  test("interpretStatus() keeps the raw number and describeStatus() has no label", () => {
    expect(interpretStatus("x-acme:tier", 0xdead_beef)).toEqual({ kind: "unknown", status: 0xdead_beefn });
    expect(interpretStatus("base:future", 1)).toEqual({ kind: "unknown", status: 1n });
    expect(interpretStatus("x-acme:tier", 0xffff_ffff_ffff_ffffn).status).toBe(0xffff_ffff_ffff_ffffn);
    expect(describeStatus("x-acme:tier", 0)).toBeUndefined();
  });
  test("encodeStatus() passes the raw number through", () => {
    expect(encodeStatus("x-acme:tier", { status: 0x1234 })).toBe(0x1234n);
    expect(encodeStatus("x-acme:tier", interpretStatus("x-acme:tier", 2n ** 40n))).toBe(2n ** 40n);
  });
});

describe("caller mistakes", () => {
  test("interpretStatus() rejects values that are not integers in 0..2^64-1", () => {
    expect(() => interpretStatus("base:allocation", -1)).toThrow(RangeError);
    expect(() => interpretStatus("base:allocation", 1.5)).toThrow(TypeError);
    expect(() => interpretStatus("base:allocation", 2 ** 53)).toThrow(RangeError);
    expect(() => interpretStatus("base:allocation", 1n << 64n)).toThrow(RangeError);
    expect(() => interpretStatus("base:allocation", "1" as unknown as number)).toThrow(TypeError);
  });
  test("encodeStatus() refuses a status of another context or a foreign field", () => {
    const dirty = interpretStatus("qemu:dirty-bitmap:b", 1);
    expect(() => encodeStatus("base:allocation", dirty)).toThrow(TypeError);
    expect(() => encodeStatus("base:allocation", { dirty: true })).toThrow(/has no meaning/);
    expect(() => encodeStatus("qemu:allocation-depth", { hole: true })).toThrow(TypeError);
    expect(() => encodeStatus("base:allocation", { hole: 1 as unknown as boolean })).toThrow(TypeError);
    expect(() => encodeStatus("qemu:allocation-depth", { depth: -1 })).toThrow(RangeError);
  });
});

describe("toExtents()", () => {
  test("toExtents() places extents from the start offset with typed status and labels", () => {
    const e = toExtents(
      "base:allocation",
      [{ length: 4096, status: 0 }, { length: 61440n, status: 3n }],
      1n << 32n,
    );
    expect(e).toEqual([
      {
        kind: "base:allocation",
        status: 0n,
        hole: false,
        zero: false,
        offset: 4294967296n,
        length: 4096n,
        description: "data",
      },
      {
        kind: "base:allocation",
        status: 3n,
        hole: true,
        zero: true,
        offset: 4294971392n,
        length: 61440n,
        description: "hole,zero",
      },
    ]);
  });
  test("toExtents() leaves description out where nbdinfo prints none", () => {
    const [e] = toExtents("x-acme:tier", [{ length: 512, status: 9 }], 0n);
    expect(e).toEqual({ kind: "unknown", status: 9n, offset: 0n, length: 512n });
    expect(e !== undefined && "description" in e).toBe(false);
  });
  test("toExtents() reads a lazy compact view", () => {
    const bytes = new Uint8Array([0, 0, 0x10, 0, 0, 0, 0, 1, 0, 0, 0x20, 0, 0, 0, 0, 0]);
    const e = toExtents("qemu:dirty-bitmap:b0", compactView(bytes), 8192n);
    expect(e.map((x) => [x.offset, x.length, x.description])).toEqual([[8192n, 4096n, "dirty"], [
      12288n,
      8192n,
      "clean",
    ]]);
  });
  test("toExtents() reads 64-bit lengths and depths from an extended view", () => {
    const bytes = new Uint8Array(32);
    const dv = new DataView(bytes.buffer);
    dv.setBigUint64(0, 0x1_0000_0000n);
    dv.setBigUint64(8, 1n);
    dv.setBigUint64(16, 0x2_0000_0000n);
    dv.setBigUint64(24, 0x1_0000_0003n);
    const e = toExtents("qemu:allocation-depth", extendedView(bytes), 0x8000_0000n);
    expect(e).toEqual([
      {
        kind: "qemu:allocation-depth",
        status: 1n,
        depth: 1n,
        local: true,
        backing: false,
        offset: 0x8000_0000n,
        length: 0x1_0000_0000n,
        description: "local",
      },
      {
        kind: "qemu:allocation-depth",
        status: 0x1_0000_0003n,
        depth: 0x1_0000_0003n,
        local: false,
        backing: true,
        offset: 0x1_8000_0000n,
        length: 0x2_0000_0000n,
        description: "backing depth 4294967299",
      },
    ]);
  });
  test("toExtents() reads flags of statuses above 2^53 exactly", () => {
    const bytes = new Uint8Array(32);
    const dv = new DataView(bytes.buffer);
    dv.setBigUint64(0, 512n);
    dv.setBigUint64(8, (1n << 60n) | 3n);
    dv.setBigUint64(16, 512n);
    dv.setBigUint64(24, (1n << 63n) | 4n);
    const [a, b] = toExtents("base:allocation", extendedView(bytes), 0n);
    expect(a).toEqual({
      kind: "base:allocation",
      status: (1n << 60n) | 3n,
      hole: true,
      zero: true,
      offset: 0n,
      length: 512n,
    });
    expect(b).toMatchObject({ hole: false, zero: false, offset: 512n });
    const [j] = toExtents("qemu:joint-allocation", extendedView(bytes), 0n);
    expect(j).toMatchObject({ hole: true, zero: true, local: false, backing: false });
    expect(j !== undefined && "description" in j).toBe(false);
    const [d] = toExtents("qemu:allocation-depth", extendedView(bytes), 0n);
    expect(d).toMatchObject({
      local: false,
      backing: true,
      description: "backing depth 1152921504606846979",
    });
  });
  test("toExtents() coalesces neighbours with equal status like nbdinfo --map when asked", () => {
    const d = [{ length: 512, status: 0 }, { length: 512, status: 0 }, { length: 1024, status: 3 }, {
      length: 512,
      status: 0,
    }];
    expect(toExtents("base:allocation", d, 0n).length).toBe(4);
    const c = toExtents("base:allocation", d, 0n, { coalesce: true });
    expect(c.map((x) => [x.offset, x.length, x.description])).toEqual([
      [0n, 1024n, "data"],
      [1024n, 1024n, "hole,zero"],
      [2048n, 512n, "data"],
    ]);
  });
  test("toExtents() of no descriptors is empty", () => {
    expect(toExtents("base:allocation", [], 0n)).toEqual([]);
  });
  test("toExtents() refuses extents running past 2^64-1 and bad input", () => {
    expect(() => toExtents("base:allocation", [{ length: 2, status: 0 }], 0xffff_ffff_ffff_fffen)).toThrow(
      RangeError,
    );
    expect(() => toExtents("base:allocation", null as unknown as [], 0n)).toThrow(TypeError);
    expect(() => toExtents("base:allocation", [], -1n)).toThrow(RangeError);
  });
  test("toExtents() handles a 100,000-descriptor lazy source", () => {
    const n = 100_000;
    const bytes = new Uint8Array(16 * n);
    const dv = new DataView(bytes.buffer);
    for (let i = 0; i < n; i++) {
      dv.setBigUint64(16 * i, 65536n);
      dv.setBigUint64(16 * i + 8, BigInt(i % 4));
    }
    const src = extendedView(bytes);
    const e = toExtents("base:allocation", src, 0x8000_0000n);
    expect(e.length).toBe(n);
    const last = e[n - 1]!;
    expect(last.offset).toBe(0x8000_0000n + 65536n * BigInt(n - 1));
    expect(last.description).toBe("hole,zero");
    expect(e[n - 2]!.description).toBe("zero");
    expect(checkStatusUpperBits("base:allocation", src)).toEqual([]);
    const back = fromExtents("base:allocation", e, { startOffset: 0x8000_0000n });
    expect(back.length).toBe(n);
    expect(back[99_998]).toEqual({ length: 65536n, status: 2n });
  });
});

describe("fromExtents()", () => {
  test("fromExtents() inverts toExtents() for every context kind", () => {
    const cases: [string, { length: bigint; status: bigint }[]][] = [
      ["base:allocation", [{ length: 4096n, status: 0n }, { length: 512n, status: 3n }, {
        length: 1n,
        status: 4n,
      }]],
      ["qemu:dirty-bitmap:b", [{ length: 65536n, status: 1n }, { length: 65536n, status: 0n }]],
      ["qemu:allocation-depth", [{ length: 512n, status: 0n }, { length: 512n, status: 1n }, {
        length: 512n,
        status: 6n,
      }]],
      ["qemu:joint-allocation", [{ length: 512n, status: 0xbn }, { length: 512n, status: 4n }]],
      ["x-acme:tier", [{ length: 512n, status: 0xffff_ffffn }]],
    ];
    for (const [ctx, d] of cases) {
      expect(fromExtents(ctx, toExtents(ctx, d, 1024n), { startOffset: 1024n })).toEqual(d);
    }
  });
  test("fromExtents() encodes typed fields", () => {
    expect(
      fromExtents("base:allocation", [{ length: 4096, hole: false }, {
        length: 8192n,
        hole: true,
        zero: true,
      }]),
    ).toEqual([{ length: 4096n, status: 0n }, { length: 8192n, status: 3n }]);
    expect(fromExtents("qemu:allocation-depth", [{ length: 512, depth: 2 }])).toEqual([{
      length: 512n,
      status: 2n,
    }]);
  });
  test("fromExtents() needs extended for values above 32 bits", () => {
    const big = [{ length: 2n ** 32n, depth: 1 }];
    expect(() => fromExtents("qemu:allocation-depth", big)).toThrow(RangeError);
    expect(fromExtents("qemu:allocation-depth", big, { extended: true })).toEqual([{
      length: 2n ** 32n,
      status: 1n,
    }]);
    const deep = [{ length: 512, depth: 2n ** 40n }];
    expect(() => fromExtents("qemu:allocation-depth", deep)).toThrow(RangeError);
    expect(fromExtents("qemu:allocation-depth", deep, { extended: true })[0]!.status).toBe(2n ** 40n);
  });
  test("fromExtents() refuses a zero length and extents with gaps", () => {
    expect(() => fromExtents("base:allocation", [{ length: 0, status: 0 }])).toThrow(/MUST be nonzero/);
    expect(() =>
      fromExtents("base:allocation", [{ offset: 0n, length: 512, status: 0 }, {
        offset: 1024n,
        length: 512,
        status: 0,
      }])
    ).toThrow(/consecutive/);
    expect(() =>
      fromExtents("base:allocation", [{ offset: 512n, length: 512, status: 0 }], { startOffset: 0n })
    ).toThrow(
      RangeError,
    );
  });
});

describe("checkStatusUpperBits()", () => {
  test("checkStatusUpperBits() reports the first base: status with an upper bit set, with its offset", () => {
    const bytes = new Uint8Array(48);
    const dv = new DataView(bytes.buffer);
    for (let i = 0; i < 3; i++) dv.setBigUint64(16 * i, 512n);
    dv.setBigUint64(24, 0x8000_0000_0000_0001n);
    dv.setBigUint64(40, 0x1_0000_0000n);
    const f = checkStatusUpperBits("base:allocation", extendedView(bytes), { offset: 40 });
    expect(f).toHaveLength(1);
    expect(f[0]).toMatchObject({
      code: "reserved-bits",
      rule: "block-status-upper-bits",
      offset: 40 + 16 + 8,
    });
    expect(f[0]!.message).toMatch(/0x8000000000000001 \(and 1 more\)/);
  });
  test("checkStatusUpperBits() accepts base: statuses within 32 bits and ignores other contexts", () => {
    const ok = [{ length: 1n, status: 0xffff_ffffn }];
    expect(checkStatusUpperBits("base:allocation", ok)).toEqual([]);
    const wide = [{ length: 1n, status: 0x1_0000_0000n }];
    expect(checkStatusUpperBits("qemu:allocation-depth", wide)).toEqual([]);
    expect(checkStatusUpperBits("x-acme:tier", wide)).toEqual([]);
    expect(checkStatusUpperBits("base:future", wide)).toHaveLength(1);
  });
});

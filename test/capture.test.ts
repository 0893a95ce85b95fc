import process from "node:process";
import { describe, expect, test } from "vitest";
import { isNbdDecodeError } from "../mod.ts";
import {
  type CapturePacket,
  CaptureReader,
  type CaptureReaderOptions,
  DEFAULT_MAX_RECORD_LENGTH,
  LinkType,
  readCapture,
} from "../trace.ts";
import {
  block,
  epb,
  ethTcp,
  fixture,
  hex,
  idb,
  le32,
  opb,
  pcapHeader,
  pcapRecord,
  rng,
  shb,
  spb,
  toHex,
} from "./fixtures/trace/_build.ts";

/** Asserts that `f` throws an NbdDecodeError with this code and offset. */
function expectDecodeError(f: () => unknown, code: string, offset: number): void {
  let caught: unknown;
  try {
    f();
  } catch (e) {
    caught = e;
  }
  expect(isNbdDecodeError(caught), `expected an NbdDecodeError, got ${String(caught)}`).toBe(true);
  expect({ code: (caught as { code: string }).code, offset: (caught as { offset: number }).offset })
    .toEqual({ code, offset });
}

/** Packets as plain comparable objects (data as hex). */
function plain(packets: readonly CapturePacket[]): unknown[] {
  return packets.map((p) => ({ ...p, data: toHex(p.data) }));
}

/** Feeds `bytes` in the given chunk lengths (the last chunk takes the rest). */
function feed(bytes: Uint8Array, splits: number[], options?: CaptureReaderOptions) {
  const reader = new CaptureReader(options);
  const packets: CapturePacket[] = [];
  let o = 0;
  for (const n of splits) {
    packets.push(...reader.push(bytes.subarray(o, Math.min(bytes.length, o + n))));
    o = Math.min(bytes.length, o + n);
  }
  packets.push(...reader.push(bytes.subarray(o)));
  reader.end();
  return { packets: plain(packets), interfaces: reader.interfaces, findings: reader.takeFindings() };
}

/**
 * Feeds `bytes` with pushComplete as a reader of a file does: each chunk is the bytes the previous push
 * left unconsumed, then the next `n` bytes of the input. Checks that no packet is a view of a copy (only
 * of the chunks given) and that the unconsumed tail is always a record's beginning.
 */
function feedComplete(bytes: Uint8Array, splits: number[], options?: CaptureReaderOptions) {
  const reader = new CaptureReader(options);
  const packets: CapturePacket[] = [];
  let o = 0;
  let tail = 0;
  const chunks = new Set<ArrayBufferLike>();
  const push = (end: number) => {
    // A fresh copy, as if read into a new buffer: the tail's bytes are passed again.
    const chunk = bytes.slice(o - tail, end);
    chunks.add(chunk.buffer);
    for (const p of reader.pushComplete(chunk)) {
      expect(chunks.has(p.data.buffer)).toBe(true);
      packets.push(p);
    }
    tail = reader.unconsumed;
    expect(tail).toBeLessThanOrEqual(chunk.length);
    expect(reader.bytesRead).toBe(end - tail);
    o = end;
  };
  for (const n of splits) push(Math.min(bytes.length, o + n));
  push(bytes.length);
  reader.end();
  return { packets: plain(packets), interfaces: reader.interfaces, findings: reader.takeFindings() };
}

function randomSplits(length: number, seed: number, max: number): number[] {
  const r = rng(seed);
  const out: number[] = [];
  let total = 0;
  while (total < length) {
    const n = Math.floor(r() * max);
    out.push(n);
    total += n;
  }
  return out;
}

// One Ethernet/IPv4/TCP frame (58 bytes) written out field by field.
const FRAME = (
  "020000000002 020000000001 0800" + // Ethernet: destination, source, EtherType IPv4
  "45 00 002c 1234 4000 40 06 0000 7f000001 7f000001" + // IPv4: v4/IHL 5, total length 44, DF, TTL 64, TCP
  "9c40 2a39 000003e8 00000000 50 18 ffff 0000 0000" + // TCP: 40000 -> 10809, seq 1000, PSH|ACK
  "4e424421" // payload "NBD!"
).replace(/ /g, "");

describe("pcap", () => {
  test("readCapture() reads a little-endian microsecond pcap written field by field", () => {
    const file = hex(
      "d4c3b2a1 0200 0400 00000000 00000000 00040000 01000000" + // magic, v2.4, zone, sigfigs, snaplen 1024, Ethernet
        "00f15365 40e20100 3a000000 3a000000" + FRAME, // ts 1700000000 s + 123456 us, incl 58, orig 58
    );
    const c = readCapture(file);
    expect(c.format).toBe("pcap");
    expect(c.interfaces).toEqual([{ id: 0, section: 0, linkType: 1, snapLength: 1024, unitsPerSecond: 1e6 }]);
    expect(c.findings).toEqual([]);
    expect(c.packets).toHaveLength(1);
    const p = c.packets[0]!;
    expect({ ...p, data: toHex(p.data) }).toEqual({
      index: 0,
      offset: 24,
      dataOffset: 40,
      interfaceId: 0,
      linkType: 1,
      seconds: 1_700_000_000,
      nanoseconds: 123_456_000,
      originalLength: 58,
      data: toHex(hex(FRAME)),
    });
    // The packet data is a view of the input, not a copy.
    expect(p.data.buffer).toBe(file.buffer);
    expect(p.data.byteOffset).toBe(40);
  });

  test.each([
    ["little-endian microseconds", true, false, 123_456, 123_456_000],
    ["big-endian microseconds", false, false, 123_456, 123_456_000],
    ["little-endian nanoseconds", true, true, 123_456_789, 123_456_789],
    ["big-endian nanoseconds", false, true, 123_456_789, 123_456_789],
  ])("readCapture() reads a %s pcap", (_name, le, nano, frac, ns) => {
    const file = hex(
      pcapHeader({ le, nano, linkType: 1, snapLength: 65535 }) + pcapRecord(le, 1_700_000_001, frac, FRAME) +
        pcapRecord(le, 1_700_000_002, 0, FRAME.slice(0, 40), 58),
    );
    const c = readCapture(file);
    expect(c.interfaces[0]).toEqual({
      id: 0,
      section: 0,
      linkType: 1,
      snapLength: 65535,
      unitsPerSecond: nano ? 1e9 : 1e6,
    });
    expect(c.packets.map((p) => [p.seconds, p.nanoseconds, p.data.length, p.originalLength])).toEqual([
      [1_700_000_001, ns, 58, 58],
      [1_700_000_002, 0, 20, 58],
    ]);
  });

  test("readCapture() masks the FCS bits in the upper part of the link-type field", () => {
    const file = hex(pcapHeader({ le: true, linkType: 0x1000_0001 }));
    expect(readCapture(file).interfaces[0]?.linkType).toBe(1);
  });

  test("readCapture() reports a record whose original length is below its captured length", () => {
    const c = readCapture(hex(pcapHeader({ le: true, linkType: 1 }) + pcapRecord(true, 1, 0, "aabbccdd", 2)));
    expect(c.findings).toEqual([
      expect.objectContaining({ code: "bad-length", offset: 36, rule: "pcap-original-length", packet: 0 }),
    ]);
    expect(c.packets[0]?.originalLength).toBe(4);
  });

  test("readCapture() reads a pcap with no packets and a zero-length record", () => {
    expect(readCapture(hex(pcapHeader({ le: false, linkType: 101 }))).packets).toEqual([]);
    const c = readCapture(hex(pcapHeader({ le: false, linkType: 101 }) + pcapRecord(false, 5, 6, "")));
    expect(c.packets.map((p) => p.data.length)).toEqual([0]);
  });
});

describe("pcapng", () => {
  function twoInterfaces(le: boolean): Uint8Array {
    return hex(
      shb(le) +
        idb(le, LinkType.ETHERNET, { tsresol: 9 }) + // nanoseconds
        idb(le, LinkType.LINUX_SLL2) + // default: microseconds
        epb(le, 0, 1_700_000_000_123_456_789n, FRAME) +
        epb(le, 1, 1_700_000_000_654_321n, "0800" + "00".repeat(18)) +
        epb(le, 0, 1_700_000_001_000_000_000n, FRAME.slice(0, 28), 58),
    );
  }

  test.each([["little-endian", true], ["big-endian", false]])(
    "readCapture() reads a %s pcapng with two interfaces of different tsresol",
    (_name, le) => {
      const file = twoInterfaces(le);
      const c = readCapture(file);
      expect(c.format).toBe("pcapng");
      expect(c.interfaces).toEqual([
        { id: 0, section: 0, linkType: 1, snapLength: 0, unitsPerSecond: 1e9 },
        { id: 1, section: 0, linkType: 276, snapLength: 0, unitsPerSecond: 1e6 },
      ]);
      expect(
        c.packets.map((
          p,
        ) => [p.interfaceId, p.linkType, p.seconds, p.nanoseconds, p.data.length, p.originalLength]),
      )
        .toEqual([
          [0, 1, 1_700_000_000, 123_456_789, 58, 58],
          [1, 276, 1_700_000_000, 654_321_000, 20, 20],
          [0, 1, 1_700_000_001, 0, 14, 58],
        ]);
      expect(toHex(c.packets[0]!.data)).toBe(toHex(hex(FRAME)));
      // SHB 28 bytes, IDB 20 + 12 bytes of options, IDB 20: the first EPB starts at 80, its data at 108.
      expect(c.packets[0]!.offset).toBe(80);
      expect(c.packets[0]!.dataOffset).toBe(108);
      expect(c.packets[0]!.data.buffer).toBe(file.buffer);
    },
  );

  test("readCapture() converts binary tsresol, millisecond tsresol and if_tsoffset", () => {
    const le = true;
    const c = readCapture(hex(
      shb(le) + idb(le, 1, { tsresol: 0x80 | 20 }) + idb(le, 1, { tsresol: 3, tsoffset: 1_000 }) +
        idb(le, 1, { tsresol: 12 }) +
        epb(le, 0, (5n << 20n) + (1n << 19n), "") + // 5.5 s in units of 2^-20 s
        epb(le, 1, 7_250n, "") + // 7.25 s in ms, plus 1000 s offset
        epb(le, 2, 3_000_000_000_001n, ""), // 3 s + 1 ps in picoseconds
    ));
    expect(c.interfaces.map((i) => i.unitsPerSecond)).toEqual([2 ** 20, 1000, 1e12]);
    expect(c.packets.map((p) => [p.seconds, p.nanoseconds])).toEqual([[5, 500_000_000], [1007, 250_000_000], [
      3,
      0,
    ]]);
  });

  test("readCapture() reads Simple and obsolete Packet Blocks", () => {
    const le = false;
    const c = readCapture(hex(
      shb(le) + idb(le, 1, { snap: 16 }) + spb(le, FRAME.slice(0, 48), 58) + opb(le, 0, 2_000_001n, "abcd"),
    ));
    expect(c.packets.map((p) => [p.seconds, p.nanoseconds, toHex(p.data), p.originalLength])).toEqual([
      [0, 0, FRAME.slice(0, 32), 58], // limited by the snaplen of 16
      [2, 1000, "abcd", 2],
    ]);
  });

  test("readCapture() skips unknown, statistics and name-resolution blocks", () => {
    const le = true;
    const c = readCapture(hex(
      shb(le) + block(le, 4, "0000" + "0000") + idb(le, 1) + block(le, 0x0bad, "01020304") +
        block(le, 5, "00".repeat(12)) +
        block(le, 0x40000bad, "") + epb(le, 0, 1n, "ff"),
    ));
    expect(c.packets.map((p) => toHex(p.data))).toEqual(["ff"]);
  });

  test("readCapture() reads several sections of either byte order, numbering interfaces across them", () => {
    const c = readCapture(hex(
      shb(true) + idb(true, 1) + epb(true, 0, 1_000_000n, "01") +
        shb(false) + idb(false, 101, { tsresol: 9 }) + idb(false, 113) + epb(false, 1, 2_000_000n, "02") +
        epb(false, 0, 3n, "03"),
    ));
    expect(c.interfaces.map((i) => [i.id, i.section, i.linkType])).toEqual([[0, 0, 1], [1, 1, 101], [
      2,
      1,
      113,
    ]]);
    expect(c.packets.map((p) => [p.interfaceId, p.linkType, p.seconds, p.nanoseconds, toHex(p.data)]))
      .toEqual([
        [0, 1, 1, 0, "01"],
        [2, 113, 2, 0, "02"],
        [1, 101, 0, 3, "03"],
      ]);
  });

  test("readCapture() refuses a packet block naming an interface of an earlier section", () => {
    const file = hex(shb(true) + idb(true, 1) + shb(true) + epb(true, 0, 0n, ""));
    expectDecodeError(() => readCapture(file), "bad-value", 28 + 20 + 28 + 8);
  });
});

describe("CaptureReader chunked feeding", () => {
  const inputs: [string, Uint8Array][] = [
    [
      "a hand-built pcap",
      hex(
        pcapHeader({ le: true, linkType: 1 }) + pcapRecord(true, 1, 2, FRAME) +
          pcapRecord(
            true,
            3,
            4,
            ethTcp({ src: "10.0.0.1", dst: "10.0.0.2", sport: 1, dport: 2, seq: 3, data: "00".repeat(300) }),
          ),
      ),
    ],
    [
      "a hand-built pcapng",
      hex(
        shb(false) + idb(false, 1, { tsresol: 9 }) + epb(false, 0, 12n, FRAME) + shb(true) + idb(true, 276) +
          epb(true, 0, 99n, "0800" + "11".repeat(30)),
      ),
    ],
    ["the recorded lo-usec.pcap", fixture("lo-usec.pcap")],
    ["the recorded merged.pcapng", fixture("merged.pcapng")],
  ];

  test.each(inputs)("random splits of %s give the same packets as one push", (_name, bytes) => {
    const whole = feed(bytes, []);
    for (let seed = 1; seed <= 20; seed++) {
      expect(feed(bytes, randomSplits(bytes.length, seed, seed < 10 ? 64 : 5000))).toEqual(whole);
    }
  });

  test.each(inputs.slice(0, 2))(
    "byte-by-byte feeding of %s gives the same packets as one push",
    (_name, bytes) => {
      expect(feed(bytes, new Array<number>(bytes.length).fill(1))).toEqual(feed(bytes, []));
    },
  );

  test.each(inputs)(
    "pushComplete() in random splits of %s gives the same packets as one push",
    (_n, bytes) => {
      const whole = feed(bytes, []);
      expect(feedComplete(bytes, [])).toEqual(whole);
      for (let seed = 1; seed <= 20; seed++) {
        expect(feedComplete(bytes, randomSplits(bytes.length, seed, seed < 10 ? 64 : 5000))).toEqual(whole);
      }
      expect(feedComplete(bytes, new Array<number>(Math.min(bytes.length, 3000)).fill(1))).toEqual(whole);
    },
  );

  test("pushComplete() leaves the tail of a cut record to the caller, and end() reports one never passed", () => {
    const head = pcapHeader({ le: true, linkType: 1 });
    const bytes = hex(head + pcapRecord(true, 1, 2, FRAME) + pcapRecord(true, 3, 4, FRAME));
    const reader = new CaptureReader({ strict: false });
    // The file header and 40 bytes of the first record (16 of header, 24 of its 58 bytes of data).
    expect(reader.pushComplete(bytes.subarray(0, 64))).toEqual([]);
    expect(reader.unconsumed).toBe(40);
    expect(reader.bytesRead).toBe(24);
    const first = bytes.slice(24, 130); // the tail again, the rest of record 1, 32 bytes of record 2
    const got = reader.pushComplete(first);
    expect(got.map((p) => [p.index, p.offset, p.dataOffset, toHex(p.data)])).toEqual([
      [0, 24, 40, FRAME],
    ]);
    expect(got[0]!.data.buffer).toBe(first.buffer);
    expect(reader.unconsumed).toBe(32);
    // Nobody passes those 32 bytes again: the input ends inside the second record (at offset 98).
    expect(reader.pendingFindings).toBe(0);
    reader.end();
    expect(reader.pendingFindings).toBe(1);
    expect(reader.takeFindings()).toEqual([{
      code: "truncated",
      offset: 98,
      rule: "capture-truncated",
      message: "Cannot read capture: input ends inside a record at offset 98 (32 of 74 bytes)",
    }]);
    expect(reader.pendingFindings).toBe(0);
    // The same as push() says when it keeps those bytes itself.
    const pushed = new CaptureReader({ strict: false });
    pushed.push(bytes.subarray(0, 130));
    expect(pushed.unconsumed).toBe(0);
    pushed.end();
    expect(pushed.pendingFindings).toBe(1);
    expect(pushed.takeFindings()).toEqual([expect.objectContaining({
      offset: 98,
      message: "Cannot read capture: input ends inside a record at offset 98 (32 of 74 bytes)",
    })]);
    // Strict: thrown, like a short file header left unconsumed.
    const strict = new CaptureReader();
    strict.pushComplete(bytes.subarray(0, 100));
    expectDecodeError(() => strict.end(), "truncated", 98);
    const short = new CaptureReader();
    expect(short.pushComplete(bytes.subarray(0, 10))).toEqual([]);
    expect(short.unconsumed).toBe(10);
    expectDecodeError(() => short.end(), "truncated", 0);
  });

  test.each(inputs)(
    "onPacket receives the packets of %s in order, as push would return them",
    (_n, bytes) => {
      const whole = feed(bytes, []);
      for (let seed = 1; seed <= 5; seed++) {
        const got: CapturePacket[] = [];
        const reader = new CaptureReader({ onPacket: (p) => got.push(p) });
        let o = 0;
        for (const n of randomSplits(bytes.length, seed, 700)) {
          expect(reader.push(bytes.subarray(o, Math.min(bytes.length, o + n)))).toEqual([]);
          o = Math.min(bytes.length, o + n);
        }
        expect(reader.push(bytes.subarray(o))).toEqual([]);
        reader.end();
        expect({ packets: plain(got), interfaces: reader.interfaces, findings: reader.takeFindings() })
          .toEqual(whole);
      }
    },
  );

  test("onPacket: each packet is handed over before the next record is read; a throw fails the reader", () => {
    const bytes = hex(
      pcapHeader({ le: true, linkType: 1 }) + pcapRecord(true, 1, 2, FRAME) + pcapRecord(true, 3, 4, FRAME),
    );
    const seen: number[] = [];
    const reader: CaptureReader = new CaptureReader({
      onPacket: (p) => {
        seen.push(p.index, reader.packetCount);
        // No push from inside the callback.
        expect(() => reader.push(new Uint8Array(1))).toThrow(TypeError);
      },
    });
    reader.push(bytes);
    expect(seen).toEqual([0, 1, 1, 2]);
    const failing = new CaptureReader({
      onPacket: () => {
        throw new RangeError("consumer failed");
      },
    });
    expect(() => failing.push(bytes)).toThrow("consumer failed");
    expect(() => failing.push(bytes)).toThrow("consumer failed");
    expect(() => new CaptureReader({ onPacket: 7 as unknown as () => void })).toThrow(TypeError);
  });

  test("pushComplete() after push() finishes the record push() was keeping", () => {
    const bytes = hex(
      pcapHeader({ le: true, linkType: 1 }) + pcapRecord(true, 1, 2, FRAME) + pcapRecord(true, 3, 4, FRAME),
    );
    const reader = new CaptureReader();
    expect(reader.push(bytes.subarray(0, 50))).toEqual([]);
    const got = reader.pushComplete(bytes.subarray(50, 120));
    expect(got.map((p) => p.offset)).toEqual([24]);
    expect(reader.unconsumed).toBe(22);
    expect(reader.pushComplete(bytes.subarray(98)).map((p) => p.offset)).toEqual([98]);
    expect(reader.unconsumed).toBe(0);
    reader.end();
    expect(reader.bytesRead).toBe(bytes.length);
  });

  test("byte-by-byte feeding of a recorded capture gives the same packets as one push", () => {
    const bytes = fixture("lo-nsec.pcap").subarray(0, 4000);
    const whole = feed(bytes, [], { strict: false });
    expect(feed(bytes, new Array<number>(bytes.length).fill(1), { strict: false })).toEqual(whole);
  });

  test("push() keeps views of whole records and copies only records that span chunks", () => {
    const bytes = hex(
      pcapHeader({ le: true, linkType: 1 }) + pcapRecord(true, 1, 2, FRAME) + pcapRecord(true, 3, 4, FRAME),
    );
    const reader = new CaptureReader();
    const a = bytes.slice(0, 110);
    const b = bytes.slice(110);
    const first = reader.push(a);
    const second = reader.push(b);
    reader.end();
    expect(first[0]!.data.buffer).toBe(a.buffer);
    expect(second[0]!.data.buffer).not.toBe(a.buffer);
    expect(second[0]!.data.buffer).not.toBe(b.buffer);
    expect(toHex(second[0]!.data)).toBe(toHex(hex(FRAME)));
    expect(reader.bytesRead).toBe(bytes.length);
    expect(reader.packetCount).toBe(2);
  });
});

describe("malformed captures", () => {
  test("an empty input is truncated at offset 0", () => {
    expectDecodeError(() => readCapture(new Uint8Array(0)), "truncated", 0);
  });

  test("an unknown magic is refused at offset 0", () => {
    expectDecodeError(() => readCapture(hex("a1b2cd34" + "00".repeat(20))), "bad-magic", 0);
    // Refused as soon as the first four bytes are in, before the rest of the header.
    expectDecodeError(() => new CaptureReader().push(hex("7f454c46")), "bad-magic", 0);
  });

  test("a truncated global header is refused at offset 0", () => {
    expectDecodeError(
      () => readCapture(hex(pcapHeader({ le: true, linkType: 1 }).slice(0, 20))),
      "truncated",
      0,
    );
  });

  test("a truncated record header or record data is refused at the record's offset", () => {
    const head = pcapHeader({ le: true, linkType: 1 });
    expectDecodeError(() => readCapture(hex(head + "01000000")), "truncated", 24);
    expectDecodeError(
      () => readCapture(hex(head + pcapRecord(true, 1, 2, FRAME).slice(0, -2))),
      "truncated",
      24,
    );
    expectDecodeError(
      () =>
        readCapture(hex(head + pcapRecord(true, 1, 2, FRAME) + pcapRecord(true, 1, 2, "abcd").slice(0, -2))),
      "truncated",
      24 + 16 + 58,
    );
  });

  test("in lenient mode a truncated last record is a finding", () => {
    const head = pcapHeader({ le: true, linkType: 1 });
    const c = readCapture(hex(head + pcapRecord(true, 1, 2, FRAME) + "0100"), { strict: false });
    expect(c.packets).toHaveLength(1);
    expect(c.findings).toEqual([
      expect.objectContaining({ code: "truncated", offset: 98, rule: "capture-truncated" }),
    ]);
  });

  test("a huge pcap record length is refused before its data arrive", () => {
    const reader = new CaptureReader();
    reader.push(hex(pcapHeader({ le: true, linkType: 1 })));
    expectDecodeError(
      () => reader.push(hex("00000000 00000000" + le32(0xffff_fff0) + le32(0xffff_fff0))),
      "limit-exceeded",
      32,
    );
    expectDecodeError(
      () =>
        readCapture(hex(pcapHeader({ le: false, linkType: 1 }) + pcapRecord(false, 0, 0, "00".repeat(100))), {
          maxRecordLength: 100,
        }),
      "limit-exceeded",
      32,
    );
    expect(DEFAULT_MAX_RECORD_LENGTH).toBe(4 * 1024 * 1024);
    // The reader stays failed: a later push rethrows the same error.
    expectDecodeError(() => reader.push(new Uint8Array(100)), "limit-exceeded", 32);
  });

  test("a pcapng block length of 0, 13 or above the limit is refused (no endless loop)", () => {
    const start = shb(true) + idb(true, 1);
    expectDecodeError(
      () => readCapture(hex(start + "06000000" + "00000000" + "00000000")),
      "bad-length",
      48 + 4,
    );
    expectDecodeError(
      () => readCapture(hex(start + "06000000" + "0d000000" + "00".repeat(16))),
      "bad-length",
      52,
    );
    expectDecodeError(() => readCapture(hex(start + "06000000" + "08000000")), "bad-length", 52);
    expectDecodeError(() => readCapture(hex(start + "06000000" + le32(0x7fff_fff0))), "limit-exceeded", 52);
    expectDecodeError(() => readCapture(hex("0a0d0d0a" + "0c000000" + "4d3c2b1a")), "bad-length", 4);
  });

  test("a pcapng block whose trailing length differs is refused at the trailer", () => {
    const good = shb(true);
    const bad = good.slice(0, -8) + le32(32);
    expectDecodeError(() => readCapture(hex(bad)), "bad-length", 24);
  });

  test("a pcapng byte-order magic or major version that is wrong is refused", () => {
    expectDecodeError(
      () => readCapture(hex("0a0d0d0a" + "1c000000" + "01020304" + "00".repeat(16))),
      "bad-magic",
      8,
    );
    const v2 = shb(true).replace("4d3c2b1a0100", "4d3c2b1a0200");
    expectDecodeError(() => readCapture(hex(v2)), "bad-value", 12);
  });

  test("a pcapng packet block whose captured length runs past the block is refused", () => {
    const le = true;
    const body = le32(0) + le32(0) + le32(0) + le32(40) + le32(40) + "00".repeat(8);
    expectDecodeError(
      () => readCapture(hex(shb(le) + idb(le, 1) + block(le, 6, body))),
      "bad-length",
      48 + 20,
    );
    expectDecodeError(() => readCapture(hex(shb(le) + idb(le, 1) + block(le, 6, le32(0)))), "bad-length", 52);
  });

  test("a pcapng option running past its block is refused", () => {
    const le = true;
    const body = "0100" + "0000" + le32(0) + "0900" + "2000" + "06000000";
    expectDecodeError(() => readCapture(hex(shb(le) + block(le, 1, body))), "bad-length", 28 + 16 + 2);
  });

  test("a packet block before any interface is refused", () => {
    expectDecodeError(() => readCapture(hex(shb(false) + epb(false, 0, 0n, "00"))), "bad-value", 36);
  });

  test("random corruptions of real and hand-built captures throw nothing but NbdDecodeError", () => {
    const r = rng(7);
    const bases = [
      fixture("merged.pcapng").subarray(0, 3000),
      fixture("lo-usec.pcap").subarray(0, 3000),
      hex(
        shb(true) + idb(true, 1, { tsresol: 9, tsoffset: -5 }) + epb(true, 0, 5n, FRAME) + spb(true, FRAME),
      ),
    ];
    for (let i = 0; i < 1500; i++) {
      const bytes = bases[i % bases.length]!.slice();
      const n = 1 + Math.floor(r() * 4);
      for (let k = 0; k < n; k++) bytes[Math.floor(r() * bytes.length)] = Math.floor(r() * 256);
      const cut = bytes.subarray(0, Math.floor(r() * bytes.length) + 1);
      try {
        const reader = new CaptureReader({ maxRecordLength: 1 << 16, strict: r() < 0.5 });
        reader.push(cut.subarray(0, cut.length >> 1));
        reader.push(cut.subarray(cut.length >> 1));
        reader.end();
      } catch (e) {
        if (!isNbdDecodeError(e)) throw e;
      }
    }
  });

  test("caller mistakes are TypeError and RangeError", () => {
    expect(() => new CaptureReader({ maxRecordLength: 3 })).toThrow(RangeError);
    const reader = new CaptureReader();
    expect(() => reader.push("x" as unknown as Uint8Array)).toThrow(TypeError);
    reader.push(hex(pcapHeader({ le: true, linkType: 1 })));
    reader.end();
    expect(() => reader.push(new Uint8Array(1))).toThrow(TypeError);
  });
});

describe("recorded captures (tcpdump on 127.0.0.1, see fixtures/trace/README.md)", () => {
  test("the four recordings agree on packets, link types and timestamps", () => {
    const usec = readCapture(fixture("lo-usec.pcap"));
    const nsec = readCapture(fixture("lo-nsec.pcap"));
    const sll2 = readCapture(fixture("any-sll2.pcap"));
    const ng = readCapture(fixture("lo.pcapng"));
    const merged = readCapture(fixture("merged.pcapng"));
    expect([usec, nsec, sll2, ng, merged].map((c) => [c.format, c.packets.length, c.findings.length]))
      .toEqual([
        ["pcap", 48, 0],
        ["pcap", 48, 0],
        ["pcap", 48, 0],
        ["pcapng", 48, 0],
        ["pcapng", 96, 0],
      ]);
    expect(usec.interfaces[0]).toMatchObject({ linkType: 1, unitsPerSecond: 1e6 });
    expect(nsec.interfaces[0]).toMatchObject({ linkType: 1, unitsPerSecond: 1e9 });
    expect(sll2.interfaces[0]).toMatchObject({ linkType: 276, unitsPerSecond: 1e6 });
    expect(merged.interfaces.map((i) => [i.linkType, i.unitsPerSecond])).toEqual([[1, 1e9], [276, 1e6]]);
    // tshark shows the first packets at 1795260853.571095 (lo), .571095500 (lo, ns) and .571094 (any).
    expect([usec.packets[0]!.seconds, usec.packets[0]!.nanoseconds]).toEqual([1795260853, 571_095_000]);
    expect([nsec.packets[0]!.seconds, nsec.packets[0]!.nanoseconds]).toEqual([1795260853, 571_095_500]);
    expect([sll2.packets[0]!.seconds, sll2.packets[0]!.nanoseconds]).toEqual([1795260853, 571_094_000]);
    // tshark's pcapng conversion keeps every packet byte and timestamp.
    expect(plain(ng.packets).map((p) => ({ ...(p as object), offset: 0, dataOffset: 0 })))
      .toEqual(plain(usec.packets).map((p) => ({ ...(p as object), offset: 0, dataOffset: 0 })));
    // The same frames, once per interface, in the merged file.
    const lo = merged.packets.filter((p) => p.interfaceId === 0).map((p) => toHex(p.data));
    expect(lo).toEqual(nsec.packets.map((p) => toHex(p.data)));
    const any = merged.packets.filter((p) => p.interfaceId === 1).map((p) => toHex(p.data));
    expect(any).toEqual(sll2.packets.map((p) => toHex(p.data)));
  });
});

describe("CaptureReader memory", () => {
  /** A pcap file header, then a record header announcing `announced` bytes, then `have` of them. */
  function announcing(announced: number, have: number): Uint8Array {
    const le32h = (v: number) => toHex(Uint8Array.of(v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >>> 24));
    return hex(
      pcapHeader({ le: true, linkType: 1, snapLength: 65535 }) + le32h(1) + le32h(0) + le32h(announced) +
        le32h(announced) + "ab".repeat(have),
    );
  }

  test("a record's bytes are kept as they arrive, not allocated at the announced length", () => {
    // 200 readers each waiting for a 4 MiB record of which 800 bytes arrived: 800 MiB if each allocated
    // the announced length up front, well under 40 MiB if they hold what arrived.
    const file = announcing(DEFAULT_MAX_RECORD_LENGTH - 16, 800);
    const readers: CaptureReader[] = [];
    const before = process.memoryUsage().external;
    for (let i = 0; i < 200; i++) {
      const r = new CaptureReader();
      r.push(file.subarray(0, 40));
      r.push(file.subarray(40));
      readers.push(r);
    }
    const grown = process.memoryUsage().external - before;
    expect(grown).toBeLessThan(40 << 20);
    expect(readers.length).toBe(200);
  });

  test("a record pushed in small pieces is still read whole, with its end reported when missing", () => {
    const data = ethTcp({
      src: "10.0.0.1",
      dst: "10.0.0.2",
      sport: 1,
      dport: 2,
      seq: 1,
      ack: 0,
      flags: 0x18,
    });
    const file = hex(
      pcapHeader({ le: true, linkType: 1 }) + pcapRecord(true, 1, 2, data + "cd".repeat(3000)),
    );
    for (const step of [1, 7, 100, 1000]) {
      const r = new CaptureReader();
      const packets: CapturePacket[] = [];
      for (let i = 0; i < file.length; i += step) packets.push(...r.push(file.subarray(i, i + step)));
      r.end();
      expect(packets.length).toBe(1);
      expect(toHex(packets[0]!.data)).toBe(data + "cd".repeat(3000));
    }
    const cut = new CaptureReader();
    cut.push(file.subarray(0, 30));
    cut.push(file.subarray(30, 500));
    expectDecodeError(() => cut.end(), "truncated", 24);
    expect(() => {
      const r = new CaptureReader();
      r.push(file.subarray(0, 500));
      r.end();
    }).toThrow(`(476 of ${file.length - 24} bytes)`);
  });
});

// The trace dissector (nbd-codec/trace): packets, times, endpoints, request links and response times.
// References: tshark's own NBD dissector on the bundled captures (test/fixtures/trace/tshark/*.tsv, made by
// `tshark -r CAPTURE --enable-heuristic nbd_tcp -Y nbd -T fields -e frame.number -e frame.time_epoch
// -e nbd.handle -e nbd.response_to -e nbd.time`, TShark 4.0.17), and captures written here by hand, byte by
// byte, with the fixture helpers (which never call the code under test).
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { decodeConversation, formatEventJson } from "../mod.ts";
import {
  CaptureDissector,
  dissectCapture,
  formatNanoseconds,
  type TraceConnection,
  type TraceEvent,
  type TraceFrame,
} from "../trace.ts";
import { ACK, ethTcp, hex, pcapHeader, pcapRecord, PSH, SYN } from "./fixtures/trace/_build.ts";
import { generate, generateMixed } from "../bench/dissect/generate.ts";

const CAPTURES = new URL("../vectors/captures/", import.meta.url);
const TSHARK = new URL("./fixtures/trace/tshark/", import.meta.url);

function capture(name: string): Uint8Array {
  return new Uint8Array(readFileSync(new URL(name, CAPTURES)));
}

function frames(events: readonly TraceEvent[]): TraceFrame[] {
  return events.filter((e): e is TraceFrame => e.event === "frame");
}

/** `seconds.nanoseconds` as tshark's frame.time_epoch prints it (9 digits). */
function epoch(e: { seconds?: number; nanoseconds?: number }): string {
  return `${e.seconds}.${String(e.nanoseconds).padStart(9, "0")}`;
}

describe("dissectCapture() agrees with tshark's NBD dissector", () => {
  for (
    const name of [
      "libnbd-nbdkit-simple",
      "libnbd-nbd-server",
      "qemu10-client-nbd-server",
      "nbdkit-ooo-simple",
    ]
  ) {
    test(`${name}: packet numbers, times, [Request in] and response times`, () => {
      const rows = readFileSync(new URL(`${name}.tsv`, TSHARK), "utf8").replace(/\n$/, "").split("\n").map((
        l,
      ) => l.split("\t"));
      expect(rows.length).toBeGreaterThan(5);
      const got = frames(dissectCapture(capture(`${name}.pcap`)).events);
      for (const [number, time, handle, responseTo, delta] of rows) {
        const cookie = BigInt(handle!);
        const packet = Number(number);
        if (responseTo === "") {
          // A request, or a reply tshark did not link (an error reply it shows as type 255).
          const e = got.find((x) => "cookie" in x.frame && x.frame.cookie === cookie && x.packet === packet);
          expect(e, `frame ${handle} in packet ${packet}`).toBeDefined();
          expect(epoch(e!)).toBe(time);
        } else {
          // qemu reuses cookie 1 for every request: the reply in that packet.
          const rep = got.find((e) =>
            e.frame.type === "simple-reply" && e.frame.cookie === cookie && e.packet === packet
          );
          expect(rep, `reply ${handle}`).toBeDefined();
          expect(rep!.packet).toBe(packet);
          expect(epoch(rep!)).toBe(time);
          expect(rep!.requestPacket).toBe(Number(responseTo));
          expect(rep!.responseNanoseconds).toBe(Math.round(Number(delta) * 1e9));
        }
      }
    });
  }

  test("out-of-order replies (nbdkit-ooo-simple) each link to their own request", () => {
    const got = frames(dissectCapture(capture("nbdkit-ooo-simple.pcap")).events);
    const replies = got.filter((e) => e.frame.type === "simple-reply");
    // Cookies 5, 4, 3, 2, 1 answered in that order, requests in packets 19, 18, 17, 16, 15 (tshark).
    expect(replies.slice(0, 5).map((e) => [e.packet, e.requestPacket])).toEqual([
      [21, 19],
      [23, 18],
      [25, 17],
      [27, 16],
      [29, 15],
    ]);
  });
});

// ---- a hand-built capture: nanosecond pcap, Ethernet, 10.0.0.1:40000 -> 10.0.0.2:10809 ----

const C = { src: "10.0.0.1", dst: "10.0.0.2", sport: 40000, dport: 10809 };
const S = { src: "10.0.0.2", dst: "10.0.0.1", sport: 10809, dport: 40000 };

interface Pkt {
  fromClient: boolean;
  sec: number;
  nsec: number;
  data?: string;
  flags?: number;
}

/** A nanosecond pcap of the packets, sequence numbers counted here. */
function build(packets: Pkt[]): Uint8Array {
  let out = pcapHeader({ le: true, nano: true, linkType: 1 });
  const seq = { c: 1000, s: 5000 };
  for (const p of packets) {
    const data = (p.data ?? "").replace(/\s/g, "");
    const me = p.fromClient ? "c" : "s";
    const them = p.fromClient ? "s" : "c";
    const flags = p.flags ?? (PSH | ACK);
    const seg = ethTcp({ ...(p.fromClient ? C : S), seq: seq[me], ack: seq[them], flags, data });
    seq[me] += data.length / 2 + ((flags & SYN) !== 0 ? 1 : 0);
    out += pcapRecord(true, p.sec, p.nsec, seg);
  }
  return hex(out);
}

const GREETING = "4e42444d41474943 49484156454f5054 0003";
const CLIENT_FLAGS = "00000003";
const EXPORT_NAME = "49484156454f5054 00000001 00000000";
const EXPORT_REPLY = "0000000000100000 0001"; // size 1 MiB, HAS_FLAGS, NO_ZEROES: no padding
const READ_1 = "25609513 0000 0000 0000000000000001 0000000000000000 00000200"; // READ cookie 1, 512 bytes
const WRITE_2 = "25609513 0000 0001 0000000000000002 0000000000001000 00000004 aabbccdd"; // WRITE cookie 2
const FLUSH_3 = "25609513 0000 0003 0000000000000003 0000000000000000 00000000"; // FLUSH cookie 3
const reply = (cookie: number) => "67446698 00000000 " + cookie.toString(16).padStart(16, "0");

const PACKETS: Pkt[] = [
  { fromClient: true, sec: 100, nsec: 0, flags: SYN }, // 1
  { fromClient: false, sec: 100, nsec: 10, flags: SYN | ACK }, // 2
  { fromClient: true, sec: 100, nsec: 20, flags: ACK }, // 3
  { fromClient: false, sec: 100, nsec: 1000, data: GREETING }, // 4
  { fromClient: true, sec: 100, nsec: 2000, data: CLIENT_FLAGS + EXPORT_NAME }, // 5: two frames
  { fromClient: false, sec: 100, nsec: 3000, data: EXPORT_REPLY }, // 6
  { fromClient: true, sec: 101, nsec: 100, data: READ_1 }, // 7
  // The READ reply's header and 100 bytes, then the other 412 bytes: it starts in 8, completes in 9.
  { fromClient: false, sec: 101, nsec: 200_000, data: reply(1) + "11".repeat(100) }, // 8
  { fromClient: false, sec: 101, nsec: 300_500, data: "22".repeat(412) }, // 9
  { fromClient: true, sec: 101, nsec: 400_000, data: WRITE_2 + FLUSH_3 }, // 10: two requests
  // Both replies in one packet, FLUSH's first, one second later (the time crosses a second).
  { fromClient: false, sec: 102, nsec: 50, data: reply(3) + reply(2) }, // 11
];

describe("the dissector on a hand-built capture", () => {
  const { events, connections } = dissectCapture(build(PACKETS));
  const got = frames(events);
  const kinds = got.map((e) => e.frame.type);

  test("every frame has the packet it completes in, the packet it starts in, and that packet's time", () => {
    expect(kinds).toEqual([
      "newstyle-greeting",
      "client-flags",
      "option-request",
      "export-name-reply",
      "request",
      "simple-reply",
      "request",
      "request",
      "simple-reply",
      "simple-reply",
    ]);
    expect(got.map((e) => [e.firstPacket, e.packet])).toEqual([
      [4, 4],
      [5, 5],
      [5, 5],
      [6, 6],
      [7, 7],
      [8, 9],
      [10, 10],
      [10, 10],
      [11, 11],
      [11, 11],
    ]);
    // The reply spread over packets 8 and 9 has packet 9's time.
    expect(got.map((e) => [e.seconds, e.nanoseconds])).toEqual([
      [100, 1000],
      [100, 2000],
      [100, 2000],
      [100, 3000],
      [101, 100],
      [101, 300_500],
      [101, 400_000],
      [101, 400_000],
      [102, 50],
      [102, 50],
    ]);
  });

  test("every event carries the endpoints of its connection", () => {
    for (const e of events) {
      expect(e.client).toEqual({ address: "10.0.0.1", port: 40000 });
      expect(e.server).toEqual({ address: "10.0.0.2", port: 10809 });
    }
  });

  test("replies carry their request's packet and time and the response time; requests do not", () => {
    const [read, flush, write] = [got[5]!, got[8]!, got[9]!];
    expect(read.frame.type === "simple-reply" && read.frame.cookie).toBe(1n);
    expect([read.requestPacket, read.requestSeconds, read.requestNanoseconds]).toEqual([7, 101, 100]);
    expect(read.responseNanoseconds).toBe(300_400);
    expect(flush.frame.type === "simple-reply" && flush.frame.cookie).toBe(3n);
    expect([flush.requestPacket, flush.responseNanoseconds]).toEqual([10, 1e9 - 400_000 + 50]);
    expect(write.frame.type === "simple-reply" && write.frame.cookie).toBe(2n);
    expect([write.requestPacket, write.responseNanoseconds]).toEqual([10, 599_600_050 + 400_000_000]);
    for (const e of got.filter((x) => x.frame.type !== "simple-reply")) {
      expect(e).not.toHaveProperty("requestPacket");
      expect(e).not.toHaveProperty("responseNanoseconds");
    }
  });

  test("the connection's summary: endpoints, negotiated state, first and last data packet", () => {
    expect(connections).toHaveLength(1);
    const c: TraceConnection = connections[0]!;
    expect(c.client).toEqual({ address: "10.0.0.1", port: 40000 });
    expect([c.firstPacket, c.firstSeconds, c.firstNanoseconds]).toEqual([4, 100, 1000]);
    expect([c.lastPacket, c.lastSeconds, c.lastNanoseconds]).toEqual([11, 102, 50]);
    expect(c.state.exportSize).toBe(1048576n);
  });

  test("pushed one byte at a time, the capture gives the same events", () => {
    const bytes = build(PACKETS);
    const streamed: TraceEvent[] = [];
    const d = new CaptureDissector({ event: (e) => streamed.push(e), traceFinding: () => {} });
    for (let i = 0; i < bytes.length; i++) d.push(bytes.slice(i, i + 1));
    d.end();
    expect(streamed.map((e) => formatEventJson(e))).toEqual(events.map((e) => formatEventJson(e)));
  });

  test("events come out as soon as the packet that completes them is pushed", () => {
    const bytes = build(PACKETS);
    const seen: number[] = [];
    const d = new CaptureDissector({ event: (e) => seen.push(e.packet!), traceFinding: () => {} });
    // The file up to the end of packet 8 (the reply's first part): every frame before the reply is out.
    const ends: number[] = [];
    let at = 24;
    const dv = new DataView(bytes.buffer, bytes.byteOffset);
    while (at < bytes.length) {
      at += 16 + dv.getUint32(at + 8, true);
      ends.push(at);
    }
    d.push(bytes.subarray(0, ends[7]));
    expect(seen).toEqual([4, 5, 5, 6, 7]);
    d.push(bytes.subarray(ends[7], ends[8]));
    expect(seen).toEqual([4, 5, 5, 6, 7, 9]);
    d.push(bytes.subarray(ends[8]));
    d.end();
    expect(seen).toHaveLength(10);
  });

  test("the origin is the capture's first packet (a SYN, before any NBD byte)", () => {
    const d = new CaptureDissector({ event: () => {}, traceFinding: () => {} });
    expect(d.origin).toBeUndefined();
    d.push(build(PACKETS));
    expect(d.origin).toEqual({ seconds: 100, nanoseconds: 0 });
  });
});

describe("a detached dissector", () => {
  const TRACE_KEYS = [
    "packet",
    "firstPacket",
    "seconds",
    "nanoseconds",
    "client",
    "server",
    "requestPacket",
    "requestSeconds",
    "requestNanoseconds",
    "responseNanoseconds",
  ];

  // The bundled captures have one connection each; the generated one interleaves three (the slot's fields
  // follow each event's connection).
  const mixed = (): Uint8Array => {
    const file = join(mkdtempSync(join(tmpdir(), "nbd-detached-")), "mixed.pcap");
    generateMixed(file, 300_000, 3);
    return new Uint8Array(readFileSync(file));
  };
  const cases: [string, () => Uint8Array][] = [
    ...["nbdkit-ooo-sr.pcap", "qemu10-ext-io.pcap", "libnbd-nbdkit-simple.pcap"].map((
      n,
    ): [string, () => Uint8Array] => [n, () => capture(n)]),
    ["three interleaved connections", mixed],
  ];
  for (const [name, bytesOf] of cases) {
    test(`${name}: its slot holds each event's trace fields, and attach() makes the event an attached one`, () => {
      const bytes = bytesOf();
      const attached = dissectCapture(bytes).events;
      const slots: Record<string, unknown>[] = [];
      const bare: boolean[] = [];
      const copies: TraceEvent[] = [];
      const d: CaptureDissector = new CaptureDissector({
        event: (e) => {
          slots.push({ ...d.info });
          bare.push(TRACE_KEYS.every((k) => !(k in e)));
          d.attach(e);
          copies.push(e);
        },
        traceFinding: () => {},
      }, { detached: true });
      d.push(bytes);
      d.end();
      expect(copies.length).toBe(attached.length);
      expect(bare.every((b) => b)).toBe(true);
      for (let i = 0; i < attached.length; i++) {
        const a = attached[i] as unknown as Record<string, unknown>;
        // Every key of the slot, undefined where the attached event lacks the field.
        expect(Object.keys(slots[i]!)).toEqual(TRACE_KEYS);
        for (const k of TRACE_KEYS) expect(slots[i]![k]).toEqual(a[k]);
        // Same keys in the same order, same values.
        expect(Object.keys(copies[i]!)).toEqual(Object.keys(a));
        expect(formatEventJson(copies[i]!)).toEqual(formatEventJson(attached[i]!));
      }
      expect(attached.some((e) => e.requestPacket !== undefined)).toBe(true);
      if (name === "three interleaved connections") {
        // Consecutive events of different connections, several times over.
        const switches = attached.filter((e, i) => i > 0 && e.connection !== attached[i - 1]!.connection);
        expect(new Set(attached.map((e) => e.client?.port)).size).toBe(3);
        expect(switches.length).toBeGreaterThanOrEqual(4);
      }
    });
  }

  test("lets go of the chunks whose bytes its events have covered (oldestRetainedChunk moves on)", () => {
    // 64 KiB WRITEs in loopback segments, pushed 64 KiB at a time: a frame spans two or three chunks.
    const file = join(mkdtempSync(join(tmpdir(), "nbd-retained-")), "loop.pcap");
    generate(file, 2e6);
    const bytes = new Uint8Array(readFileSync(file));
    const d = new CaptureDissector({ event: () => {}, traceFinding: () => {} });
    const oldest: number[] = [];
    for (let at = 0; at < bytes.length; at += 65536) {
      d.push(bytes.slice(at, at + 65536));
      oldest.push(d.oldestRetainedChunk);
    }
    // Never more than the frame being completed: the chunks it started in, at most three back.
    for (let i = 0; i < oldest.length; i++) {
      expect(oldest[i]!, `after push ${i + 1}`).toBeGreaterThan(i + 1 - 3);
    }
  });

  test("counts the capture's packets read so far, of any protocol", () => {
    const bytes = build(PACKETS);
    const d = new CaptureDissector({ event: () => {}, traceFinding: () => {} });
    expect(d.packets).toBe(0);
    d.push(bytes);
    expect(d.packets).toBe(PACKETS.length);
  });
});

describe("raw streams", () => {
  test("events decoded from raw byte streams have no packets, times or endpoints (absent, not zero)", () => {
    const c2s = hex((CLIENT_FLAGS + EXPORT_NAME + READ_1).replace(/\s/g, ""));
    const s2c = hex((GREETING + EXPORT_REPLY + reply(1) + "00".repeat(512)).replace(/\s/g, ""));
    const events = decodeConversation(c2s, s2c) as TraceEvent[];
    expect(events.length).toBe(6);
    for (const e of events) {
      for (
        const k of ["packet", "firstPacket", "seconds", "nanoseconds", "client", "server", "requestPacket"]
      ) {
        expect(e).not.toHaveProperty(k);
      }
    }
  });
});

describe("formatNanoseconds()", () => {
  test("writes durations beyond 2^53 ns (packets months or years apart) exactly, as the double they are", () => {
    // 527256831999961000 is a double (every double above 2^53 is an integer); a fuzzed capture made it.
    expect(formatNanoseconds(527256831999961000)).toBe("527256831.999961024");
    expect(formatNanoseconds(-(2 ** 60))).toBe("-1152921504.606846976");
    expect(formatNanoseconds(2 ** 53 - 1)).toBe("9007199.254740991");
    expect(() => formatNanoseconds(1.5)).toThrow(RangeError);
  });
});

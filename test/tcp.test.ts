import { describe, expect, test } from "vitest";
import {
  type CapturePacket,
  CaptureReader,
  decodeTcpPacket,
  DEFAULT_MAX_OUT_OF_ORDER_BYTES,
  formatAddress,
  LinkType,
  readCapture,
  reassembleCapture,
  type TcpEvent,
  TcpReassembler,
  type TcpReassemblerOptions,
  type TraceFinding,
} from "../trace.ts";
import {
  ACK,
  ethernet,
  ethPcap,
  ethTcp,
  FIN,
  fixture,
  hex,
  ipv4,
  ipv6,
  pattern,
  pcapHeader,
  pcapRecord,
  PSH,
  rng,
  RST,
  type Seg,
  SYN,
  tcp,
  toHex,
} from "./fixtures/trace/_build.ts";

const C = "10.0.0.1";
const S = "10.0.0.2";
const V6_A = "20010db8000000000000000000000001";
const V6_B = "20010db8000000000000000000000002";
const TCP_HDR = tcp(40000, 10809, 1000, 2000, PSH | ACK); // 20 bytes

/** The IP and TCP part of a segment 40000 -> 10809, seq 1000, carrying "abcd". */
const IP_TCP = ipv4(C, S, 24) + TCP_HDR + "61626364";

function expectTcp(data: string, linkType: number) {
  const r = decodeTcpPacket(hex(data), linkType);
  expect(r.type, JSON.stringify(r)).toBe("tcp");
  if (r.type !== "tcp") throw new Error("not tcp");
  return r;
}

function ignoredReason(data: string, linkType: number): [string, string | undefined] {
  const r = decodeTcpPacket(hex(data), linkType);
  if (r.type !== "ignored") throw new Error("expected an ignored packet");
  return [r.reason, r.finding?.rule];
}

describe("decodeTcpPacket()", () => {
  test("decodes Ethernet, IPv4 and TCP fields written out by hand", () => {
    const r = expectTcp(ethernet(0x0800) + IP_TCP, LinkType.ETHERNET);
    expect({
      ...r,
      sourceAddress: toHex(r.sourceAddress),
      destinationAddress: toHex(r.destinationAddress),
      payload: toHex(r.payload),
    })
      .toEqual({
        type: "tcp",
        ipVersion: 4,
        sourceAddress: "0a000001",
        destinationAddress: "0a000002",
        sourcePort: 40000,
        destinationPort: 10809,
        seq: 1000,
        ack: 2000,
        flags: PSH | ACK,
        payload: "61626364",
        payloadLength: 4,
        payloadStart: 54,
      });
  });

  test.each([
    ["Ethernet with one 802.1Q tag", ethernet(0x0800, [100]) + IP_TCP, LinkType.ETHERNET, 58],
    [
      "Ethernet with 802.1ad QinQ tags",
      "020000000002020000000001" + "88a8" + "0064" + "8100" + "00c8" + "0800" + IP_TCP,
      LinkType.ETHERNET,
      62,
    ],
    ["BSD loopback, little-endian AF_INET", "02000000" + IP_TCP, LinkType.NULL, 44],
    ["BSD loopback, big-endian AF_INET", "00000002" + IP_TCP, LinkType.NULL, 44],
    ["OpenBSD loopback", "00000002" + IP_TCP, LinkType.LOOP, 44],
    [
      "Linux cooked v1",
      "0000" + "0304" + "0006" + "000000000000" + "0000" + "0800" + IP_TCP,
      LinkType.LINUX_SLL,
      56,
    ],
    [
      "Linux cooked v2",
      "0800" + "0000" + "00000001" + "0304" + "00" + "06" + "000000000000" + "0000" + IP_TCP,
      LinkType.LINUX_SLL2,
      60,
    ],
    ["raw IP (101)", IP_TCP, LinkType.RAW, 40],
    ["raw IPv4 (228)", IP_TCP, LinkType.IPV4, 40],
  ])("reads the TCP payload through %s", (_name, data, linkType, start) => {
    const r = expectTcp(data, linkType);
    expect([r.sourcePort, r.destinationPort, r.payloadStart, toHex(r.payload)]).toEqual([
      40000,
      10809,
      start,
      "61626364",
    ]);
  });

  const V6_TCP = ipv6(V6_A, V6_B, 24) + TCP_HDR + "61626364";
  test.each([
    ["raw IPv6 (229)", V6_TCP, LinkType.IPV6],
    ["raw IP (101)", V6_TCP, LinkType.RAW],
    ["Ethernet", ethernet(0x86dd) + V6_TCP, LinkType.ETHERNET],
    ["BSD loopback with Darwin's AF_INET6 (30)", "1e000000" + V6_TCP, LinkType.NULL],
    ["BSD loopback with Linux's AF_INET6 (10)", "0000000a" + V6_TCP, LinkType.NULL],
  ])("reads an IPv6 segment through %s", (_name, data, linkType) => {
    const r = expectTcp(data, linkType);
    expect([
      r.ipVersion,
      formatAddress(r.sourceAddress),
      formatAddress(r.destinationAddress),
      toHex(r.payload),
    ])
      .toEqual([6, "2001:db8::1", "2001:db8::2", "61626364"]);
  });

  test("skips IPv6 hop-by-hop, routing, destination-options and authentication headers", () => {
    const hopByHop = "2b00" + "010400000000"; // next: routing, 8 bytes
    const routing = "3c02" + "0000" + "00000000" + "00".repeat(16); // next: dest opts, (2+1)*8 = 24 bytes
    const destOpts = "3300" + "010400000000"; // next: AH, 8 bytes
    const ah = "0601" + "0000" + "00000001" + "00000001" + "00".repeat(0); // next: TCP, (1+2)*4 = 12 bytes
    const ext = hopByHop + routing + destOpts + ah;
    const data = ipv6(V6_A, V6_B, ext.length / 2 + 24, 0) + ext + TCP_HDR + "61626364";
    expect(toHex(expectTcp(data, LinkType.IPV6).payload)).toBe("61626364");
  });

  test("trims Ethernet padding after the IP datagram", () => {
    const data = ethernet(0x0800) + ipv4(C, S, 20) + tcp(1, 2, 3, 4, ACK) + "00".repeat(6);
    const r = expectTcp(data, LinkType.ETHERNET);
    expect([r.payload.length, r.payloadLength]).toEqual([0, 0]);
  });

  test("tells a payload cut by the snaplen by its declared length", () => {
    const data = ethernet(0x0800) + ipv4(C, S, 20 + 100) + tcp(1, 2, 3, 4, ACK) + "ab".repeat(10);
    const r = expectTcp(data, LinkType.ETHERNET);
    expect([r.payload.length, r.payloadLength]).toEqual([10, 100]);
  });

  test("trusts the captured length when IPv4 total length is 0 (segmentation offload)", () => {
    const ip = ipv4(C, S, 24).replace(/^4500002c/, "45000000");
    expect(expectTcp(ip + TCP_HDR + "61626364", LinkType.RAW).payloadLength).toBe(4);
  });

  test("honours TCP options in the data offset", () => {
    const header = TCP_HDR.slice(0, 24) + "70" + TCP_HDR.slice(26) + "020405b4" + "01010402"; // data offset 7
    const r = expectTcp(ipv4(C, S, 32) + header + "ee", LinkType.RAW);
    expect([r.payloadStart, toHex(r.payload)]).toEqual([48, "ee"]);
  });

  test.each([
    ["ARP over Ethernet", ethernet(0x0806) + "00".repeat(28), LinkType.ETHERNET, "not-ip", undefined],
    ["an 802.3 length field", ethernet(0x0040) + "00".repeat(64), LinkType.ETHERNET, "not-ip", undefined],
    ["UDP", ipv4(C, S, 8, { proto: 17 }) + "0001000200080000", LinkType.RAW, "not-tcp", undefined],
    ["IPv6 ICMP", ipv6(V6_A, V6_B, 8, 58) + "00".repeat(8), LinkType.IPV6, "not-tcp", undefined],
    ["a loopback frame of another family", "07000000" + IP_TCP, LinkType.NULL, "not-ip", undefined],
    [
      "an IPv4 first fragment",
      ipv4(C, S, 24, { frag: 0x2000 }) + TCP_HDR + "61626364",
      LinkType.RAW,
      "fragment",
      "ip-fragment",
    ],
    [
      "an IPv4 later fragment",
      ipv4(C, S, 8, { frag: 0x0003 }) + "00".repeat(8),
      LinkType.RAW,
      "fragment",
      "ip-fragment",
    ],
    [
      "an IPv6 fragment header",
      ipv6(V6_A, V6_B, 8 + 24, 44) + "0600000100000001" + TCP_HDR + "61626364",
      LinkType.IPV6,
      "fragment",
      "ip-fragment",
    ],
    ["an unsupported link type", IP_TCP, 147, "link-type", "capture-link-type"],
    ["a cut Ethernet header", "0200000000", LinkType.ETHERNET, "truncated", "capture-snaplen"],
    [
      "a cut IPv4 header",
      ethernet(0x0800) + ipv4(C, S, 24).slice(0, 20),
      LinkType.ETHERNET,
      "truncated",
      "capture-snaplen",
    ],
    ["a cut TCP header", ipv4(C, S, 24) + TCP_HDR.slice(0, 16), LinkType.RAW, "truncated", "capture-snaplen"],
    [
      "an IPv4 header length below 20",
      "44" + ipv4(C, S, 24).slice(2) + TCP_HDR,
      LinkType.RAW,
      "malformed",
      "ipv4-header-length",
    ],
    [
      "a TCP data offset below 20",
      ipv4(C, S, 20) + TCP_HDR.slice(0, 24) + "40" + TCP_HDR.slice(26),
      LinkType.RAW,
      "malformed",
      "tcp-header-length",
    ],
    [
      "an IP version 5 over Ethernet",
      ethernet(0x0800) + "55" + IP_TCP.slice(2),
      LinkType.ETHERNET,
      "malformed",
      "ip-version",
    ],
    ["an IP version 5 as raw IP", "55" + IP_TCP.slice(2), LinkType.RAW, "not-ip", undefined],
  ])("ignores %s", (_name, data, linkType, reason, rule) => {
    expect(ignoredReason(data, linkType)).toEqual([reason, rule]);
  });

  test("never throws, whatever the bytes", () => {
    const r = rng(3);
    const base = hex(ethernet(0x86dd) + ipv6(V6_A, V6_B, 32, 0) + "0600010400000000" + TCP_HDR + "61626364");
    for (let i = 0; i < 3000; i++) {
      const b = base.slice(0, Math.floor(r() * (base.length + 1)));
      for (let k = 0; k < 3; k++) if (b.length > 0) b[Math.floor(r() * b.length)] = Math.floor(r() * 256);
      const link = [0, 1, 101, 108, 113, 228, 229, 276][i % 8]!;
      const res = decodeTcpPacket(b, link);
      if (res.type === "tcp") expect(res.payloadStart + res.payload.length).toBeLessThanOrEqual(b.length);
    }
  });
});

describe("formatAddress()", () => {
  test.each([
    ["7f000001", "127.0.0.1"],
    ["00000000000000000000000000000001", "::1"],
    ["00000000000000000000000000000000", "::"],
    ["20010db8000000000001000000000001", "2001:db8::1:0:0:1"],
    ["20010db8000100000001000100010001", "2001:db8:1:0:1:1:1:1"],
    ["fe800000000000000000000000000000", "fe80::"],
  ])("formats %s as %s", (h, text) => {
    expect(formatAddress(hex(h))).toBe(text);
  });
});

// ---- reassembly ----

/** A packet record around an Ethernet frame, as the CaptureReader would produce it. */
let packetIndex = 0;
function packet(frame: string, index = packetIndex++): CapturePacket {
  const data = hex(frame);
  return {
    index,
    offset: 1000 + index * 100,
    dataOffset: 1016 + index * 100,
    interfaceId: 0,
    linkType: LinkType.ETHERNET,
    seconds: 1_700_000_000 + index,
    nanoseconds: 5,
    originalLength: data.length,
    data,
  };
}

const text = (s: string) =>
  Array.from(new TextEncoder().encode(s), (b) => b.toString(16).padStart(2, "0")).join("");

/** Pushes segments; returns events in a compact, comparable form. */
function run(
  segs: (Seg | CapturePacket)[],
  options?: TcpReassemblerOptions,
): { events: unknown[]; raw: TcpEvent[] } {
  packetIndex = 0;
  const r = new TcpReassembler(options);
  const raw: TcpEvent[] = [];
  for (const s of segs) raw.push(...r.push("index" in s ? s : packet(ethTcp(s))));
  raw.push(...r.end());
  return { events: raw.map(compact), raw };
}

/**
 * Like {@link run}, with an `onData` callback: what the callback receives during a push comes before that
 * push's returned events, and `direct` counts the deliveries that came through the callback.
 */
function runDirect(
  segs: (Seg | CapturePacket)[],
  options?: TcpReassemblerOptions,
): { events: unknown[]; raw: TcpEvent[]; direct: number } {
  packetIndex = 0;
  const raw: TcpEvent[] = [];
  let direct = 0;
  const r = new TcpReassembler({
    ...options,
    onData: (connection, direction, streamOffset, bytes, p) => {
      direct++;
      raw.push({
        type: "data",
        connection,
        direction,
        streamOffset,
        bytes,
        packet: p.index,
        seconds: p.seconds,
        nanoseconds: p.nanoseconds,
      });
    },
  });
  for (const s of segs) raw.push(...r.push("index" in s ? s : packet(ethTcp(s))));
  raw.push(...r.end());
  return { events: raw.map(compact), raw, direct };
}

function be16hex(v: number): string {
  return v.toString(16).padStart(4, "0");
}

function compact(e: TcpEvent): unknown {
  switch (e.type) {
    case "open":
      return `open ${e.connection.id} ${e.connection.client.address}:${e.connection.client.port} > ${e.connection.server.address}:${e.connection.server.port} (${e.connection.clientBy})`;
    case "data":
      return `data ${e.connection} ${e.direction} @${e.streamOffset} ${new TextDecoder().decode(e.bytes)}`;
    case "gap":
      return `gap ${e.connection} ${e.direction} @${e.streamOffset} +${e.length}`;
    case "close":
      return `close ${e.connection} ${e.direction} ${e.reason} @${e.streamOffset}`;
    case "finding":
      return `finding ${e.finding.rule} ${e.finding.connection ?? ""} ${e.finding.direction ?? ""} @${
        e.finding.streamOffset ?? ""
      }`;
  }
}

const c2s = (seq: number, data: string, flags = PSH | ACK): Seg => ({
  src: C,
  dst: S,
  sport: 40000,
  dport: 10809,
  seq,
  ack: 5001,
  flags,
  data: text(data),
});
const s2c = (seq: number, data: string, flags = PSH | ACK): Seg => ({
  src: S,
  dst: C,
  sport: 10809,
  dport: 40000,
  seq,
  ack: 1001,
  flags,
  data: text(data),
});
const HANDSHAKE: Seg[] = [c2s(1000, "", SYN), s2c(5000, "", SYN | ACK), c2s(1001, "", ACK)];
/** Data, then retransmissions of parts of it: "XD" and "YY" differ from the first copies, "GH" fills a hole. */
const RETRANSMITTED: Seg[] = [
  c2s(1001, "ABCDEF"),
  c2s(1003, "XD"),
  c2s(1009, "ZZ"),
  c2s(1009, "YY"),
  c2s(1007, "GH"),
];

describe("TcpReassembler", () => {
  test("delivers both directions of a connection in order, then closes on FIN", () => {
    const { events } = run([
      ...HANDSHAKE,
      c2s(1001, "hello "),
      c2s(1007, "world"),
      s2c(5001, "hi"),
      c2s(1012, "", FIN | ACK),
      s2c(5003, "!", FIN | PSH | ACK),
    ]);
    expect(events).toEqual([
      "open 0 10.0.0.1:40000 > 10.0.0.2:10809 (syn)",
      "data 0 c2s @0 hello ",
      "data 0 c2s @6 world",
      "data 0 s2c @0 hi",
      "close 0 c2s fin @11",
      "data 0 s2c @2 !",
      "close 0 s2c fin @3",
    ]);
  });

  test("delivers in-order data as views of the packet and carries its timestamp", () => {
    packetIndex = 0;
    const r = new TcpReassembler();
    const p = packet(ethTcp(c2s(1, "abc")));
    const events = r.push(p);
    const data = events.find((e) => e.type === "data");
    if (data?.type !== "data") throw new Error("no data");
    expect(data.bytes.buffer).toBe(p.data.buffer);
    expect([data.packet, data.seconds, data.nanoseconds]).toEqual([0, 1_700_000_000, 5]);
  });

  test("onData receives in-order data that nothing in its push comes before, in the same order as events", () => {
    const scenarios: [Seg[], TcpReassemblerOptions?][] = [
      [[...HANDSHAKE, c2s(1001, "hello "), c2s(1007, "world"), s2c(5001, "hi"), c2s(1012, "", FIN | ACK)]],
      [[...HANDSHAKE, ...RETRANSMITTED, c2s(1011, "IJ")]],
      [[...HANDSHAKE, ...RETRANSMITTED], { recentAsViews: true }],
      [[...HANDSHAKE, c2s(1005, "EF"), c2s(1003, "CD"), c2s(1001, "AB"), c2s(1007, "GH")]],
      [[...HANDSHAKE, c2s(1001, "AB"), c2s(1009, "IJ"), s2c(5001, "x")], { maxOutOfOrderBytes: 1 }],
      [[...HANDSHAKE, c2s(1003, "CD", FIN | ACK), c2s(1001, "AB"), c2s(1005, "late")]],
      [[
        ...HANDSHAKE,
        c2s(1001, "AB"),
        c2s(1003, "CD", RST),
        c2s(1005, "EF"),
        c2s(2000, "", SYN),
        c2s(2001, "n"),
      ]],
      [[s2c(90000, "late"), c2s(4_000_000_000, "x"), s2c(90004, "r")], { isServerPort: (p) => p === 10809 }],
      [[c2s(0xffff_fffd, "", SYN), c2s(0xffff_fffe, "AB"), c2s(0, "CD"), c2s(3, "F"), c2s(2, "E")]],
    ];
    for (const [segs, options] of scenarios) {
      const events = run(segs, options).events;
      const d = runDirect(segs, options);
      expect(d.events).toEqual(events);
      expect(d.direct).toBeGreaterThan(0);
    }
    // A connection picked up in the middle: its first data follow the `open` of the same push, as an event.
    const first = new TcpReassembler({ onData: () => {} }).push(packet(ethTcp(s2c(90000, "late"))));
    expect(first.map((e) => e.type)).toEqual(["open", "data"]);
    // Later in-order data come through the callback only: the push returns nothing.
    packetIndex = 0;
    const got: string[] = [];
    const r = new TcpReassembler({ onData: (_c, dir, off, b) => got.push(`${dir} @${off} ${toHex(b)}`) });
    for (const seg of HANDSHAKE) r.push(packet(ethTcp(seg)));
    expect(r.push(packet(ethTcp(c2s(1001, "A"))))).toEqual([]);
    expect(r.push(packet(ethTcp(s2c(5001, "BC"))))).toEqual([]);
    expect(got).toEqual(["c2s @0 41", "s2c @0 4243"]);
  });

  test("in-order segments take a short path that gives the events the general path gives", () => {
    // Random conversations (handshake or not, reordering, retransmissions with and without changes, losses,
    // FIN and RST, empty ACKs, Ethernet padding, IPv4 options, segmentation offload's total length 0, a few
    // fragments and snaplen cuts) framed as Ethernet, BSD loopback (network order), NULL (either host
    // order) and raw IPv4, each of which the reassembler may take the short path for, against the same IP
    // packets in Linux cooked framing, which always goes the general path.
    const r = rng(77);
    const sll = (ip: string) => "0000" + "0304" + "0006" + "000000000000" + "0000" + "0800" + ip;
    const framings: [number, (ip: string) => string][] = [
      [LinkType.ETHERNET, (ip) => ethernet(0x0800) + ip],
      [LinkType.LOOP, (ip) => "00000002" + ip],
      [LinkType.NULL, (ip) => "02000000" + ip],
      [LinkType.NULL, (ip) => "00000002" + ip],
      [LinkType.RAW, (ip) => ip],
    ];
    const strip = (e: TcpEvent) =>
      e.type === "finding"
        ? { ...e, finding: { ...e.finding, offset: 0 } }
        : e.type === "data"
        ? { ...e, bytes: toHex(e.bytes) }
        : e;
    let shortPaths = 0;
    for (let round = 0; round < 60; round++) {
      const isn = { c: Math.floor(r() * 2 ** 32), s: Math.floor(r() * 2 ** 32) };
      const sent = { c: 0, s: 0 };
      const ips: string[] = [];
      const segment = (fromClient: boolean, at: number, data: string, flags: number) => {
        const seq = ((fromClient ? isn.c : isn.s) + 1 + at) >>> 0;
        let options = "";
        if (r() < 0.1) options = "01010101"; // IPv4 options: IHL 6
        const payload = tcp(fromClient ? 40000 : 10809, fromClient ? 10809 : 40000, seq, 0, flags) + data;
        const total = 20 + options.length / 2 + payload.length / 2;
        const frag = r() < 0.03 ? 0x2000 : 0x4000;
        let ip = ipv4(fromClient ? C : S, fromClient ? S : C, payload.length / 2, { frag }) + options +
          payload;
        if (options !== "") ip = "46" + ip.slice(2, 4) + be16hex(total) + ip.slice(8);
        if (r() < 0.05) ip = ip.slice(0, 4) + "0000" + ip.slice(8); // total length 0 (offload)
        if (r() < 0.05) ip += "00".repeat(6); // padding after the datagram
        if (r() < 0.03) ip = ip.slice(0, Math.max(40, ip.length - 2 * Math.floor(r() * 40))); // snaplen
        ips.push(ip);
      };
      if (r() < 0.7) {
        ips.push(ipv4(C, S, 20) + tcp(40000, 10809, isn.c, 0, SYN));
        ips.push(ipv4(S, C, 20) + tcp(10809, 40000, isn.s, isn.c + 1, SYN | ACK));
      }
      for (let i = 0; i < 40; i++) {
        const fromClient = r() < 0.6;
        const k = fromClient ? "c" : "s";
        const n = 1 + Math.floor(r() * 30);
        const data = toHex(pattern(n, i));
        const roll = r();
        if (roll < 0.08 && sent[k] > 0) segment(fromClient, Math.floor(r() * sent[k]), data, ACK); // retransmit
        else if (roll < 0.12) sent[k] += n; // lost
        else if (roll < 0.18) {
          // Two segments in the wrong order; sometimes the later one ends the direction (an early FIN).
          const fin = r() < 0.3 ? FIN : 0;
          segment(fromClient, sent[k] + n, fin !== 0 && r() < 0.5 ? "" : data, PSH | ACK | fin);
          segment(fromClient, sent[k], data, PSH | ACK);
          sent[k] += 2 * n;
        } else if (roll < 0.2) segment(fromClient, sent[k], "", ACK);
        else {
          segment(fromClient, sent[k], data, PSH | ACK);
          sent[k] += n;
        }
      }
      if (r() < 0.5) segment(true, sent.c, "", FIN | ACK);
      if (r() < 0.2) segment(false, sent.s, "", RST);
      segment(false, sent.s, "0102", PSH | ACK);
      const run = (linkType: number, frame: (ip: string) => string) => {
        const t = new TcpReassembler({ isServerPort: (p) => p === 10809 });
        const events: TcpEvent[] = [];
        ips.forEach((ip, i) => {
          const data = hex(frame(ip));
          events.push(...t.push({
            index: i,
            offset: i * 100,
            dataOffset: i * 100 + 16,
            interfaceId: 0,
            linkType,
            seconds: 0,
            nanoseconds: 0,
            originalLength: data.length,
            data,
          }));
        });
        events.push(...t.end());
        return events.map(strip);
      };
      const general = run(LinkType.LINUX_SLL, sll);
      for (const [linkType, frame] of framings) {
        const got = run(linkType, frame);
        expect(got).toEqual(general);
        if (got.some((e) => e.type === "data")) shortPaths++;
      }
    }
    expect(shortPaths).toBeGreaterThan(200);
  });

  test("puts out-of-order segments back in order", () => {
    const { events } = run([
      ...HANDSHAKE,
      c2s(1005, "EF"),
      c2s(1007, "GH"),
      c2s(1001, "ABCD"),
      c2s(1009, "I"),
    ]);
    expect(events.slice(1)).toEqual([
      "data 0 c2s @0 ABCD",
      "data 0 c2s @4 EF",
      "data 0 c2s @6 GH",
      "data 0 c2s @8 I",
      "close 0 c2s end @9",
      "close 0 s2c end @0",
    ]);
  });

  test("drops identical retransmissions silently and trims overlaps", () => {
    const { events } = run([
      ...HANDSHAKE,
      c2s(1001, "ABCDEF"),
      c2s(1001, "ABCDEF"), // full retransmission
      c2s(1004, "DEFGHI"), // overlaps delivered data, then new bytes
      c2s(1011, "KL"), // out of order
      c2s(1010, "JKLM"), // overlaps the held segment on both sides
    ]);
    expect(events.slice(1, -2)).toEqual([
      "data 0 c2s @0 ABCDEF",
      "data 0 c2s @6 GHI",
      // In order again: delivered whole (a view), and the held "KL" it covers is dropped.
      "data 0 c2s @9 JKLM",
    ]);
  });

  test("reports a retransmission with different bytes and keeps the first copy", () => {
    const { events, raw } = run([...HANDSHAKE, ...RETRANSMITTED]);
    expect(events.slice(1, -2)).toEqual([
      "data 0 c2s @0 ABCDEF",
      "finding tcp-retransmission-mismatch 0 c2s @2",
      "finding tcp-retransmission-mismatch 0 c2s @8",
      "data 0 c2s @6 GH",
      "data 0 c2s @8 ZZ",
    ]);
    const f = raw.find((e) => e.type === "finding") as { finding: TraceFinding };
    expect(f.finding).toMatchObject({ code: "bad-value", packet: 4, offset: 1400, length: 2 });
  });

  test("compares retransmissions across the end of a small retransmission ring", () => {
    // An 8-byte ring: "ABCDEF" fills 0-5, "GHIJK" wraps (6, 7, then 0-2); the retransmission of stream
    // offsets 5-9 ("FGHIJ" / "FGXIJ") reads across the wrap, and offsets 0-2 are no longer kept.
    const same = run([...HANDSHAKE, c2s(1001, "ABCDEF"), c2s(1007, "GHIJK"), c2s(1006, "FGHIJ")], {
      retransmitCheckBytes: 8,
    });
    expect(same.events.slice(1, -2)).toEqual(["data 0 c2s @0 ABCDEF", "data 0 c2s @6 GHIJK"]);
    const differs = run([...HANDSHAKE, c2s(1001, "ABCDEF"), c2s(1007, "GHIJK"), c2s(1006, "FGXIJ")], {
      retransmitCheckBytes: 8,
    });
    expect(differs.events.slice(1, -2)).toEqual([
      "data 0 c2s @0 ABCDEF",
      "data 0 c2s @6 GHIJK",
      "finding tcp-retransmission-mismatch 0 c2s @5",
    ]);
    // A segment longer than the ring keeps only its last 8 bytes.
    const long = run([...HANDSHAKE, c2s(1001, "ABCDEFGHIJKL"), c2s(1005, "EFGH"), c2s(1009, "IJKX")], {
      retransmitCheckBytes: 8,
    });
    expect(long.events.slice(1, -2)).toEqual([
      "data 0 c2s @0 ABCDEFGHIJKL",
      "finding tcp-retransmission-mismatch 0 c2s @8",
    ]);
  });

  describe("recentAsViews", () => {
    // Packets whose data lives in one reused buffer, as a reader that reuses its read buffer gives them.
    const shared = new Uint8Array(4096);
    let used = 0;
    function inShared(seg: Seg): CapturePacket {
      const p = packet(ethTcp(seg));
      shared.set(p.data, used);
      const data = shared.subarray(used, used + p.data.length);
      used += p.data.length;
      return { ...p, data };
    }
    function runShared(
      before: Seg[],
      after: Seg[],
      release: boolean,
      options: TcpReassemblerOptions = {},
    ): unknown[] {
      packetIndex = 0;
      used = 0;
      const r = new TcpReassembler({ ...options, recentAsViews: true });
      const raw: TcpEvent[] = [];
      const out: unknown[] = [];
      for (const s of before) raw.push(...r.push(inShared(s)));
      out.push(...raw.map(compact));
      // The reader reuses its buffer: release it, then overwrite it.
      if (release) r.release(shared.buffer);
      shared.fill(0x3f);
      used = 0;
      for (const s of after) out.push(...r.push(inShared(s)).map(compact));
      out.push(...r.end().map(compact));
      return out;
    }

    test("gives the same events as the copying ring while nothing is overwritten", () => {
      const segs = [...HANDSHAKE, ...RETRANSMITTED, c2s(1005, "EFGH")];
      const copied = run(segs).events;
      expect(run(segs, { recentAsViews: true }).events).toEqual(copied);
      expect(copied).toContain("finding tcp-retransmission-mismatch 0 c2s @2");
      const small = run(segs, { retransmitCheckBytes: 4 }).events;
      expect(run(segs, { retransmitCheckBytes: 4, recentAsViews: true }).events).toEqual(small);
      // Segments large enough to be kept as views, and a retransmission across them that differs.
      const big = [
        ...HANDSHAKE,
        c2s(1001, "x".repeat(700)),
        c2s(1701, "y".repeat(700)),
        c2s(1601, "x".repeat(99) + "Y" + "y".repeat(50)),
      ];
      const bigCopied = run(big).events;
      expect(bigCopied).toContain("finding tcp-retransmission-mismatch 0 c2s @600");
      expect(run(big, { recentAsViews: true }).events).toEqual(bigCopied);
    });

    // Views are kept only for segments of more than 512 bytes (smaller ones are copied at once).
    const A = "ABCDEF" + "a".repeat(600);
    const B = "GHIJK" + "b".repeat(600);
    const findings = (events: unknown[]) => events.filter((e) => String(e).startsWith("finding"));

    test("copies what it keeps when the caller releases the buffer, and compares with that copy", () => {
      const before = [...HANDSHAKE, c2s(1001, A), c2s(1001 + A.length, B)];
      // Offsets 3 to 612, across both segments.
      const again = (A + B).slice(3, 613);
      // Retransmitted with the same bytes: no finding, although the original packets' buffer was overwritten.
      expect(findings(runShared(before, [c2s(1004, again)], true))).toEqual([]);
      // With different bytes: reported at the overlap.
      const changed = again.slice(0, 2) + "X" + again.slice(3);
      expect(runShared(before, [c2s(1004, changed)], true)).toContain(
        "finding tcp-retransmission-mismatch 0 c2s @3",
      );
      // Without the release the views see the overwritten buffer: the promise the option asks for matters.
      const broken = runShared(before, [c2s(1004, again)], false);
      expect(broken).toContain("finding tcp-retransmission-mismatch 0 c2s @3");
    });

    test("copies only the recent window at release, across the end of the ring", () => {
      // 1 206 bytes; an 8-byte window keeps offsets 1198-1205, which wrap in the ring (1198 % 8 is 6).
      const a = "p".repeat(600) + "ABCDEF";
      const b = "q".repeat(595) + "GHIJK";
      const before = [...HANDSHAKE, c2s(1001, a), c2s(1001 + a.length, b)];
      const opts = { retransmitCheckBytes: 8 };
      expect(findings(runShared(before, [c2s(1001 + 1200, "qGHIJ")], true, opts))).toEqual([]);
      expect(runShared(before, [c2s(1001 + 1200, "qGHXJ")], true, opts)).toContain(
        "finding tcp-retransmission-mismatch 0 c2s @1200",
      );
      // Offsets before 1198 left the window: a retransmission of them is not compared.
      expect(findings(runShared(before, [c2s(1001 + 1190, "XXX")], true, opts))).toEqual([]);
    });

    test("copies segments of up to 512 bytes when it delivers them: those need no release", () => {
      // Without a release, then the buffer overwritten: a 512-byte segment was copied, a 513-byte one not.
      for (const [length, copied] of [[6, true], [512, true], [513, false]] as const) {
        const data = "Z".repeat(length - 1) + "!";
        const events = runShared([...HANDSHAKE, c2s(1001, data)], [c2s(1001, data)], false);
        expect(findings(events).length === 0).toBe(copied);
      }
    });
  });

  test("reports missing bytes as a gap at the end of the capture and delivers what follows", () => {
    const { events, raw } = run([...HANDSHAKE, c2s(1001, "AB"), c2s(1006, "FG"), s2c(5001, "x")]);
    expect(events.slice(1)).toEqual([
      "data 0 c2s @0 AB",
      "data 0 s2c @0 x",
      "gap 0 c2s @2 +3",
      "data 0 c2s @5 FG",
      "close 0 c2s end @7",
      "close 0 s2c end @1",
    ]);
    const gap = raw.find((e) => e.type === "gap");
    expect(gap?.type === "gap" && gap.finding).toMatchObject({
      code: "truncated",
      rule: "tcp-gap",
      connection: 0,
      direction: "c2s",
      streamOffset: 2,
      length: 3,
      packet: 4,
    });
  });

  test("declares a gap as soon as held out-of-order data exceed maxOutOfOrderBytes", () => {
    const { events } = run([
      ...HANDSHAKE,
      c2s(1001, "AB"),
      c2s(1010, "JKL"),
      c2s(1013, "MNO"),
      c2s(1016, "P"),
    ], { maxOutOfOrderBytes: 5 });
    expect(events.slice(1, 6)).toEqual([
      "data 0 c2s @0 AB",
      "gap 0 c2s @2 +7",
      "data 0 c2s @9 JKL",
      "data 0 c2s @12 MNO",
      "data 0 c2s @15 P",
    ]);
    expect(DEFAULT_MAX_OUT_OF_ORDER_BYTES).toBe(16 * 1024 * 1024);
  });

  test("turns payloads cut by the snaplen into one merged gap", () => {
    const cut = (seq: number, n: number) =>
      packet(ethernet(0x0800) + ipv4(C, S, 20 + n) + tcp(40000, 10809, seq, 1, ACK) + "41");
    const { events } = run([
      ...HANDSHAKE.map((s) => packet(ethTcp(s))),
      cut(1001, 10),
      cut(1011, 10),
      packet(ethTcp(c2s(1021, "Z"))),
    ]);
    expect(events.slice(1, 5)).toEqual(
      ["data 0 c2s @0 A", "gap 0 c2s @1 +9", "data 0 c2s @10 A", "gap 0 c2s @11 +9"].slice(0, 4),
    );
    expect(events).toContain("data 0 c2s @20 Z");
  });

  test("keeps several connections apart, numbered in order of first packet", () => {
    const other = (seq: number, data: string, flags = PSH | ACK): Seg => ({
      src: C,
      dst: S,
      sport: 40001,
      dport: 10809,
      seq,
      flags,
      data: text(data),
    });
    const { events } = run([
      c2s(1000, "", SYN),
      other(7000, "", SYN),
      other(7001, "second"),
      c2s(1001, "first"),
      other(7007, "", FIN | ACK),
    ]);
    expect(events).toEqual([
      "open 0 10.0.0.1:40000 > 10.0.0.2:10809 (syn)",
      "open 1 10.0.0.1:40001 > 10.0.0.2:10809 (syn)",
      "data 1 c2s @0 second",
      "data 0 c2s @0 first",
      "close 1 c2s fin @6",
      "close 0 c2s end @5",
      "close 0 s2c end @0",
      "close 1 s2c end @0",
    ]);
  });

  test("orients a connection by SYN-ACK, by server port, or by first sender", () => {
    expect(run([s2c(5000, "", SYN | ACK)]).events[0]).toBe("open 0 10.0.0.1:40000 > 10.0.0.2:10809 (syn)");
    expect(run([s2c(5001, "x")], { isServerPort: (p) => p === 10809 }).events[0])
      .toBe("open 0 10.0.0.1:40000 > 10.0.0.2:10809 (port)");
    expect(run([s2c(5001, "x")]).events[0]).toBe("open 0 10.0.0.2:10809 > 10.0.0.1:40000 (first-sender)");
    expect(run([s2c(5001, "x")], { isServerPort: () => true }).events[0])
      .toBe("open 0 10.0.0.2:10809 > 10.0.0.1:40000 (first-sender)");
  });

  test("picks up a connection in the middle of its data", () => {
    const { events } = run([s2c(90000, "late"), c2s(4_000_000_000, "x"), s2c(90004, "r")], {
      isServerPort: (p) => p === 10809,
    });
    expect(events).toEqual([
      "open 0 10.0.0.1:40000 > 10.0.0.2:10809 (port)",
      "data 0 s2c @0 late",
      "data 0 c2s @0 x",
      "data 0 s2c @4 r",
      "close 0 c2s end @1",
      "close 0 s2c end @5",
    ]);
  });

  test("reports bytes before the first segment seen, in a capture without the SYN, as a gap", () => {
    // The stream is "NBDMAGIC"; its first segment ("N") is captured after the second ("BDM"), which the
    // reassembler took for the start of the stream.
    const { events, raw } = run([c2s(1001, "BDM"), c2s(1000, "N"), c2s(1004, "AGIC")], {
      isServerPort: (p) => p === 10809,
    });
    expect(events).toEqual([
      "open 0 10.0.0.1:40000 > 10.0.0.2:10809 (port)",
      "data 0 c2s @0 BDM",
      "gap 0 c2s @3 +1",
      "data 0 c2s @4 AGIC",
      "close 0 c2s end @8",
      "close 0 s2c end @0",
    ]);
    const gap = raw.find((e) => e.type === "gap");
    expect(gap?.type === "gap" && gap.finding).toMatchObject({
      code: "truncated",
      rule: "tcp-gap",
      packet: 1,
      streamOffset: 3,
      length: 1,
    });
    expect(gap?.type === "gap" && gap.finding.message).toContain("precede the first byte delivered");
  });

  test("held out-of-order data and a FIN keep their place after bytes before the first segment seen", () => {
    const { events } = run([
      c2s(1002, "CD"),
      c2s(1006, "G", FIN | ACK),
      c2s(1000, "AB"),
      c2s(1004, "EF"),
    ], { isServerPort: (p) => p === 10809 });
    expect(events).toEqual([
      "open 0 10.0.0.1:40000 > 10.0.0.2:10809 (port)",
      "data 0 c2s @0 CD",
      "gap 0 c2s @2 +2",
      "data 0 c2s @4 EF",
      "data 0 c2s @6 G",
      "close 0 c2s fin @7",
      "close 0 s2c end @0",
    ]);
  });

  test("a keep-alive before the first byte of a direction picked up without its SYN is no gap", () => {
    // The first segment seen is a bare ACK at the next sequence number; the keep-alive repeats the byte
    // before it.
    const { events } = run([c2s(1000, ""), c2s(999, "x"), c2s(1000, "AB")], {
      isServerPort: (p) => p === 10809,
    });
    expect(events).toEqual([
      "open 0 10.0.0.1:40000 > 10.0.0.2:10809 (port)",
      "data 0 c2s @0 AB",
      "close 0 c2s end @2",
      "close 0 s2c end @0",
    ]);
  });

  test("a segment before the ISN of a stream whose SYN was seen is still no gap", () => {
    const { events } = run([c2s(1000, "", SYN), c2s(1001, "AB"), c2s(990, "zz")]);
    expect(events.filter((e) => String(e).startsWith("gap"))).toEqual([]);
  });

  test("follows sequence numbers across 2^32", () => {
    const { events } = run([
      c2s(0xffff_fffd, "", SYN),
      c2s(0xffff_fffe, "AB"),
      c2s(0, "CD"),
      c2s(3, "F"),
      c2s(2, "E"),
    ]);
    expect(events.slice(1, 5)).toEqual([
      "data 0 c2s @0 AB",
      "data 0 c2s @2 CD",
      "data 0 c2s @4 E",
      "data 0 c2s @5 F",
    ]);
  });

  test("closes both directions on RST, ignores what follows, and starts a new connection on a new SYN", () => {
    const { events } = run([
      ...HANDSHAKE,
      c2s(1001, "AB"),
      c2s(1005, "EF"),
      s2c(5001, "", RST | ACK),
      c2s(1003, "CD"),
      c2s(3000, "", SYN),
      c2s(3001, "new"),
    ]);
    expect(events).toEqual([
      "open 0 10.0.0.1:40000 > 10.0.0.2:10809 (syn)",
      "data 0 c2s @0 AB",
      "gap 0 c2s @2 +2",
      "data 0 c2s @4 EF",
      "close 0 c2s rst @6",
      "close 0 s2c rst @0",
      "open 1 10.0.0.1:40000 > 10.0.0.2:10809 (syn)",
      "data 1 c2s @0 new",
      "close 1 c2s end @3",
      "close 1 s2c end @0",
    ]);
  });

  test("starts a new connection when a SYN with another initial sequence number reuses an open 4-tuple", () => {
    const { events } = run([
      ...HANDSHAKE,
      c2s(1001, "old"),
      c2s(1000, "", SYN),
      c2s(9000, "", SYN),
      c2s(9001, "new"),
    ]);
    expect(events).toEqual([
      "open 0 10.0.0.1:40000 > 10.0.0.2:10809 (syn)",
      "data 0 c2s @0 old",
      "close 0 c2s end @3",
      "close 0 s2c end @0",
      "open 1 10.0.0.1:40000 > 10.0.0.2:10809 (syn)",
      "data 1 c2s @0 new",
      "close 1 c2s end @3",
      "close 1 s2c end @0",
    ]);
  });

  test("ignores data after FIN and retransmitted FINs", () => {
    const { events } = run([
      ...HANDSHAKE,
      c2s(1001, "AB", FIN | ACK),
      c2s(1001, "AB", FIN | ACK),
      c2s(1004, "zz"),
    ]);
    expect(events.slice(1)).toEqual(["data 0 c2s @0 AB", "close 0 c2s fin @2", "close 0 s2c end @0"]);
  });

  test("does not mistake a keep-alive probe for a retransmission with different bytes", () => {
    const { events } = run([...HANDSHAKE, c2s(1001, "AB"), c2s(1002, "\u0000"), c2s(1003, "C")]);
    expect(events.slice(1, 3)).toEqual(["data 0 c2s @0 AB", "data 0 c2s @2 C"]);
  });

  test("ignores a segment further ahead than any TCP window, with a finding", () => {
    const { events } = run([...HANDSHAKE, c2s(1001, "AB"), c2s(1001 + 2 ** 30 + 100, "??"), c2s(1003, "C")]);
    expect(events.slice(1, 4)).toEqual([
      "data 0 c2s @0 AB",
      `finding tcp-out-of-window 0 c2s @${2 ** 30 + 100}`,
      "data 0 c2s @2 C",
    ]);
  });

  test("rebuilds a stream from shuffled, duplicated and overlapping segments", () => {
    const r = rng(5);
    const stream = pattern(30000, 9);
    for (let round = 0; round < 40; round++) {
      // Cut the stream into segments, add retransmissions of random ranges, then shuffle within a window.
      const segs: [number, number][] = [];
      for (let o = 0; o < stream.length;) {
        const n = 1 + Math.floor(r() * 1500);
        segs.push([o, Math.min(stream.length, o + n)]);
        o += n;
      }
      for (let k = 0; k < 30; k++) {
        const a = Math.floor(r() * stream.length);
        segs.splice(Math.floor(r() * segs.length), 0, [
          a,
          Math.min(stream.length, a + 1 + Math.floor(r() * 3000)),
        ]);
      }
      for (let i = segs.length - 1; i > 0; i--) {
        const j = Math.max(0, i - Math.floor(r() * 8));
        [segs[i], segs[j]] = [segs[j]!, segs[i]!];
      }
      const isn = Math.floor(r() * 2 ** 32);
      const packets = [c2s(isn, "", SYN)].concat(
        segs.map(([a, b]) => ({ ...c2s((isn + 1 + a) >>> 0, ""), data: toHex(stream.subarray(a, b)) })),
      );
      const options = { maxOutOfOrderBytes: round % 2 ? DEFAULT_MAX_OUT_OF_ORDER_BYTES : 1 << 20 };
      const { raw, events } = run(packets, options);
      expect(runDirect(packets, options).events).toEqual(events);
      let next = 0;
      const got: number[] = [];
      for (const e of raw) {
        expect(e.type === "gap" || e.type === "finding").toBe(false);
        if (e.type !== "data") continue;
        expect(e.streamOffset).toBe(next);
        next += e.bytes.length;
        got.push(...e.bytes);
      }
      expect(toHex(Uint8Array.from(got))).toBe(toHex(stream));
    }
  });

  test("waits for the data before a FIN that arrives early", () => {
    const { events } = run([...HANDSHAKE, c2s(1003, "CD", FIN | ACK), c2s(1001, "AB")]);
    expect(events.slice(1)).toEqual([
      "data 0 c2s @0 AB",
      "data 0 c2s @2 CD",
      "close 0 c2s fin @4",
      "close 0 s2c end @0",
    ]);
  });

  test("reassembles IPv6 connections", () => {
    const v6 = (seq: number, data: string, flags: number) =>
      packet(
        ethernet(0x86dd) + ipv6(V6_A, V6_B, 20 + data.length / 2) + tcp(50000, 10809, seq, 0, flags) + data,
      );
    const { events } = run([v6(10, "", SYN), v6(11, text("v6!"), ACK)]);
    expect(events.slice(0, 2)).toEqual([
      "open 0 2001:db8::1:50000 > 2001:db8::2:10809 (syn)",
      "data 0 c2s @0 v6!",
    ]);
  });

  test("keeps hundreds of interleaved IPv4 and IPv6 connections apart (more than the route cache holds)", () => {
    // Addresses and ports chosen so that many 4-tuples differ in one field only: each packet must still
    // reach its own connection, in both directions, whatever the reassembler caches.
    const N = 300;
    const segs: CapturePacket[] = [];
    const v6host = (i: number) => V6_A.slice(0, 28) + (i & 0xffff).toString(16).padStart(4, "0");
    const frame = (i: number, fromClient: boolean, seq: number, data: string, flags: number) => {
      const port = 40000 + (i % 7);
      const sport = fromClient ? port : 10809;
      const dport = fromClient ? 10809 : port;
      if (i % 3 === 2) {
        const [a, b] = fromClient ? [v6host(i), V6_B] : [V6_B, v6host(i)];
        return packet(
          ethernet(0x86dd) + ipv6(a, b, 20 + data.length / 2) + tcp(sport, dport, seq, 0, flags) + data,
        );
      }
      const host = `10.${i % 2}.${(i >> 8) & 0xff}.${i & 0xff}`;
      const [a, b] = fromClient ? [host, S] : [S, host];
      return packet(
        ethernet(0x0800) + ipv4(a, b, 20 + data.length / 2) + tcp(sport, dport, seq, 0, flags) + data,
      );
    };
    for (let i = 0; i < N; i++) segs.push(frame(i, true, 1000, "", SYN));
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < N; i++) {
        segs.push(
          frame(
            i,
            true,
            1001 + round * 4,
            text(`c${(i % 100).toString().padStart(2, "0")}${round}`),
            PSH | ACK,
          ),
        );
        segs.push(
          frame(
            i,
            false,
            9000 + round * 4,
            text(`s${(i % 100).toString().padStart(2, "0")}${round}`),
            PSH | ACK,
          ),
        );
      }
    }
    const { raw } = run(segs);
    const streams = new Map<string, string>();
    let opened = 0;
    for (const e of raw) {
      if (e.type === "open") opened++;
      if (e.type !== "data") continue;
      const k = `${e.connection} ${e.direction}`;
      streams.set(k, (streams.get(k) ?? "") + new TextDecoder().decode(e.bytes));
    }
    expect(opened).toBe(N);
    expect(raw.filter((e) => e.type === "finding")).toEqual([]);
    for (let i = 0; i < N; i++) {
      const tag = (i % 100).toString().padStart(2, "0");
      expect(streams.get(`${i} c2s`)).toBe(`c${tag}0c${tag}1c${tag}2`);
      expect(streams.get(`${i} s2c`)).toBe(`s${tag}0s${tag}1s${tag}2`);
    }
  });

  test("reports an unsupported link type once, and fragments each time, with capture offsets", () => {
    packetIndex = 0;
    const r = new TcpReassembler();
    const odd = { ...packet(IP_TCP), linkType: 147 };
    const frag = packet(ethernet(0x0800) + ipv4(C, S, 8, { frag: 0x2000 }) + "00".repeat(8));
    const findings = [r.push(odd), r.push({ ...odd, index: 9 }), r.push(frag)].flat();
    expect(findings.map((e) => e.type === "finding" && [e.finding.rule, e.finding.offset, e.finding.packet]))
      .toEqual([
        ["capture-link-type", 1016, 0],
        ["ip-fragment", 1116 + 14 + 6, 1],
      ]);
  });

  test("rejects bad options", () => {
    expect(() => new TcpReassembler({ maxOutOfOrderBytes: -1 })).toThrow(RangeError);
    expect(() => new TcpReassembler({ retransmitCheckBytes: 0.5 })).toThrow(RangeError);
  });
});

describe("reassembleCapture() on whole captures", () => {
  test("reassembles a hand-built pcap of interleaved connections", () => {
    const frames = [
      ethTcp(c2s(1000, "", SYN)),
      ethTcp(s2c(5000, "", SYN | ACK)),
      ethTcp(c2s(1001, "req")),
      ethTcp({ src: "10.0.0.3", dst: S, sport: 333, dport: 10809, seq: 1, flags: SYN }),
      ethTcp(s2c(5001, "rep")),
      ethTcp({ src: "10.0.0.3", dst: S, sport: 333, dport: 10809, seq: 2, data: text("other") }),
    ];
    const r = reassembleCapture(ethPcap(frames));
    expect(r.connections.map((c) => [c.id, c.client.address, c.server.port, c.firstPacket])).toEqual([
      [0, C, 10809, 0],
      [1, "10.0.0.3", 10809, 3],
    ]);
    expect(r.streams.map((s) => [new TextDecoder().decode(s.c2s), new TextDecoder().decode(s.s2c)])).toEqual([
      ["req", "rep"],
      ["other", ""],
    ]);
    expect(r.findings).toEqual([]);
  });

  test("reassembles each link type from a pcap written field by field", () => {
    const seg = ipv4(C, S, 20 + 3) + tcp(40000, 10809, 7, 0, PSH | ACK) + text("NBD");
    const links: [number, string][] = [
      [LinkType.NULL, "02000000"],
      [LinkType.LOOP, "00000002"],
      [LinkType.LINUX_SLL, "0000" + "0304" + "0006" + "000000000000" + "0000" + "0800"],
      [LinkType.LINUX_SLL2, "0800" + "0000" + "00000001" + "0304" + "00" + "06" + "000000000000" + "0000"],
      [LinkType.RAW, ""],
      [LinkType.IPV4, ""],
      [LinkType.ETHERNET, ethernet(0x0800, [5])],
    ];
    for (const [linkType, prefix] of links) {
      const file = hex(pcapHeader({ le: false, linkType }) + pcapRecord(false, 1, 2, prefix + seg));
      const r = reassembleCapture(file);
      expect([linkType, new TextDecoder().decode(r.streams[0]?.c2s)]).toEqual([linkType, "NBD"]);
    }
  });

  const EXPECTED = [
    { c2s: pattern(20000, 1), s2c: pattern(9000, 2) },
    { c2s: new TextEncoder().encode("NBDMAGIC-second-connection\n"), s2c: new TextEncoder().encode("bye\n") },
  ];

  test.each(["lo-usec.pcap", "lo-nsec.pcap", "any-sll2.pcap", "lo.pcapng", "merged.pcapng"])(
    "reassembles the recorded %s into exactly the bytes that were sent",
    (name) => {
      const r = reassembleCapture(fixture(name));
      expect(r.findings).toEqual([]);
      expect(r.connections.map((c) => [c.client.address, c.server.address, c.server.port, c.clientBy]))
        .toEqual([
          ["127.0.0.1", "127.0.0.1", 38917, "syn"],
          ["127.0.0.1", "127.0.0.1", 38917, "syn"],
        ]);
      expect(r.streams.map((s) => [toHex(s.c2s), toHex(s.s2c)])).toEqual(
        EXPECTED.map((s) => [toHex(s.c2s), toHex(s.s2c)]),
      );
    },
  );

  test("streams a recording through CaptureReader and TcpReassembler in random chunks with the same events", () => {
    const bytes = fixture("merged.pcapng");
    const collect = (splits: number[]) => {
      const reader = new CaptureReader();
      const tcp = new TcpReassembler();
      const events: unknown[] = [];
      const out = (es: TcpEvent[]) => {
        for (const e of es) {
          events.push(
            e.type === "data"
              ? `${e.connection} ${e.direction} ${e.streamOffset} ${toHex(e.bytes)}`
              : compact(e),
          );
        }
      };
      let o = 0;
      for (const n of [...splits, bytes.length]) {
        for (const p of reader.push(bytes.subarray(o, Math.min(bytes.length, o + n)))) out(tcp.push(p));
        o = Math.min(bytes.length, o + n);
      }
      reader.end();
      out(tcp.end());
      return events;
    };
    const whole = collect([]);
    expect(whole.filter((e) => String(e).startsWith("close")).length).toBe(4);
    const r = rng(11);
    for (let k = 0; k < 5; k++) {
      const splits: number[] = [];
      for (let t = 0; t < bytes.length;) {
        const n = 1 + Math.floor(r() * 3000);
        splits.push(n);
        t += n;
      }
      expect(collect(splits)).toEqual(whole);
    }
    expect(collect(new Array<number>(bytes.length).fill(1))).toEqual(whole);
  });

  test("reports gaps when packets of a recording are missing", () => {
    const c = readCapture(fixture("lo-usec.pcap"));
    const dataPackets = c.packets.filter((p) => {
      const s = decodeTcpPacket(p.data, p.linkType);
      return s.type === "tcp" && s.payload.length > 0;
    });
    const dropped = dataPackets[2]!;
    const tcp = new TcpReassembler();
    const events = c.packets.filter((p) => p !== dropped).flatMap((p) => tcp.push(p)).concat(tcp.end());
    const gaps = events.filter((e) => e.type === "gap");
    const s = decodeTcpPacket(dropped.data, dropped.linkType);
    expect(gaps).toHaveLength(1);
    expect(gaps[0]).toMatchObject({ connection: 0, length: s.type === "tcp" ? s.payload.length : -1 });
  });
});

// Statistics per connection (nbd-codec stats). The reference numbers come from tshark's NBD dissector on the
// same capture (test/fixtures/trace/tshark/nbdkit-ooo-simple.tsv) and from the capture's README in
// vectors/captures/; percentiles are checked on response times written here by hand.
import { readFileSync } from "node:fs";
import { describe, expect, test } from "vitest";
import {
  CaptureDissector,
  statsJson,
  type StatsReport,
  statsText,
  type TraceEvent,
  TraceStats,
} from "../trace.ts";
import type { Request } from "../mod.ts";

function statsOf(name: string): StatsReport {
  const s = new TraceStats();
  const d = new CaptureDissector(s);
  d.push(new Uint8Array(readFileSync(new URL(`../vectors/captures/${name}`, import.meta.url))));
  d.end();
  return s.report();
}

describe("TraceStats on recorded captures", () => {
  test("nbdkit-ooo-simple: five READs in flight, answered in reverse, response times as tshark gives them", () => {
    const r = statsOf("nbdkit-ooo-simple.pcap");
    expect(r.connections).toHaveLength(1);
    const c = r.connections[0]!;
    expect(c.maxInFlight).toBe(5);
    const read = c.commands.find((x) => x.command === "NBD_CMD_READ")!;
    expect([read.requests, read.replies, read.errors]).toEqual([5, 5, 0]);
    // tshark nbd.time of the five replies: 0.008319, 0.208826, 0.412431, 0.608327, 0.816350 s.
    expect(read.responseTimes).toEqual({
      count: 5,
      min: 8_319_000,
      median: 412_431_000,
      p90: 816_350_000,
      p99: 816_350_000,
      max: 816_350_000,
    });
    expect(c.client?.address).toBe("127.0.0.1");
    expect(c.negotiated?.style).toBe("newstyle");
    expect(c.negotiated?.structuredReplies).toBe(false);
  });

  test("qemu10-ext-io: extended headers, base:allocation, the export's size, bytes read and written", () => {
    const c = statsOf("qemu10-ext-io.pcap").connections[0]!;
    expect(c.negotiated).toMatchObject({
      style: "newstyle",
      noZeroes: true,
      extendedHeaders: true,
      contexts: [{ id: 0, name: "base:allocation" }],
      exportName: "",
      size: 1048576n,
    });
    expect(c.bytesWritten).toBe(65536);
    expect(c.bytesRead).toBe(65536);
    expect(c.firstPacket).toBe(4);
    expect(c.durationNanoseconds).toBeGreaterThan(0);
    expect(c.findings).toEqual({ "write-payload-len": 1 });
    const json = JSON.parse(JSON.stringify(statsJson(statsOf("qemu10-ext-io.pcap"))));
    expect(json.connections[0].negotiated.size).toBe("1048576");
    expect(json.connections[0].client).toBe("127.0.0.1:58156");
    const text = statsText(statsOf("qemu10-ext-io.pcap"));
    expect(text).toContain("Connection 0: 127.0.0.1:58156 → 127.0.0.1:43703\n");
    expect(text).toContain("    Negotiated: newstyle, NO_ZEROES, extended headers\n");
    expect(text).toContain("    Metadata contexts: 0 base:allocation\n");
  });

  test("libnbd-nbdkit-simple: error replies counted per command", () => {
    const c = statsOf("libnbd-nbdkit-simple.pcap").connections[0]!;
    // A read-only export: WRITE, WRITE_ZEROES and TRIM fail, and one READ beyond the end.
    const errors = Object.fromEntries(c.commands.map((x) => [x.command, x.errors]));
    expect(errors).toMatchObject({
      NBD_CMD_READ: 1,
      NBD_CMD_WRITE: 1,
      NBD_CMD_WRITE_ZEROES: 1,
      NBD_CMD_TRIM: 1,
      NBD_CMD_CACHE: 0,
    });
    expect(c.errors).toBe(Object.values(errors).reduce((a, b) => a + b, 0));
  });
});

/** A reply to `request` with a response time, as the dissector makes it. */
function replyTo(request: Request, ns: number, error = 0): TraceEvent {
  return {
    event: "frame",
    connection: 0,
    direction: "s2c",
    frameOffset: 0,
    frameLength: 16,
    findings: [],
    frame: { type: "simple-reply", error, cookie: request.cookie },
    request,
    responseNanoseconds: ns,
  };
}

function request(cookie: bigint, command = 3): TraceEvent & { frame: Request } {
  return {
    event: "frame",
    connection: 0,
    direction: "c2s",
    frameOffset: 0,
    frameLength: 28,
    findings: [],
    frame: { type: "request", extended: false, flags: 0, command, cookie, offset: 0n, length: 0n },
  };
}

describe("TraceStats percentiles and counts", () => {
  test("nearest-rank percentiles over 1..100 ms", () => {
    const s = new TraceStats();
    for (let i = 1; i <= 100; i++) {
      const r = request(BigInt(i));
      s.event(r);
      // In reverse order of size, to check that they are sorted.
      s.event(replyTo(r.frame, (101 - i) * 1_000_000));
    }
    const t = s.report().connections[0]!.commands[0]!.responseTimes!;
    expect(t).toEqual({ count: 100, min: 1e6, median: 50e6, p90: 90e6, p99: 99e6, max: 100e6 });
    expect(s.report().connections[0]!.maxInFlight).toBe(1);
  });

  test("requests in flight: the most sent and not yet answered at once", () => {
    const s = new TraceStats();
    const rs = [1n, 2n, 3n].map((c) => request(c));
    for (const r of rs) s.event(r);
    s.event(replyTo(rs[0]!.frame, 10, 5));
    s.event(request(4n));
    const c = s.report().connections[0]!;
    expect(c.maxInFlight).toBe(3);
    expect(c.errors).toBe(1);
    expect(c.commands[0]).toMatchObject({ command: "NBD_CMD_FLUSH", requests: 4, replies: 1, errors: 1 });
  });

  test("without times (raw streams) there is no response-time table and no duration", () => {
    const s = new TraceStats();
    const r = request(1n);
    s.event(r);
    const reply = replyTo(r.frame, 0);
    delete (reply as { responseNanoseconds?: number }).responseNanoseconds;
    s.event(reply);
    const c = s.report().connections[0]!;
    expect(c.commands[0]!.responseTimes).toBeUndefined();
    expect(c.durationNanoseconds).toBeUndefined();
    expect(statsText(s.report())).toMatch(/\n {8}NBD_CMD_FLUSH +1 +1 +0 +- +- +- +- +-\n/);
  });
});

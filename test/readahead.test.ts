// bin/_readahead.ts: reads ahead on the thread pool keep the file's bytes in order, also when a read comes
// back short before the end (a capture file still being written): the reads queued after it are dropped
// and reading goes on from where the short one ended.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { Buffer } from "node:buffer";
import process from "node:process";
import fc from "fast-check";
import { afterAll, expect, test } from "vitest";
import {
  captureOperand,
  type CaptureSniff,
  ChunkPool,
  LARGE_PACKET_BYTES,
  LARGE_READ_SIZE,
  limitReadThreads,
  predictsLong,
  Prefetch,
  prefetchCapture,
  type Read,
  READ_SIZE,
  READ_THREADS,
  ReadAhead,
  readHead,
  readThreads,
  SNIFF_HEADERS,
  sniffCapture,
  STATS_READ_THREADS,
  takePrefetch,
} from "../bin/_readahead.ts";
import { parseDissect } from "../bin/cli.ts";
import { LONG_RUN_PACKETS } from "../bin/_budget.ts";
import { generate } from "../bench/dissect/generate.ts";
import { CaptureDissector } from "../codec/dissector.ts";
import { block, epb, hex, idb, pcapHeader, pcapRecord, shb, toHex } from "./fixtures/trace/_build.ts";

const holder = { release() {}, pushes: 0, oldestRetainedChunk: 0 };

test("a short read drops the reads after it and the next read starts where it ended", async () => {
  const S = 4096;
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "nbd-readahead-")), "growing.pcap");
  const bytes = Uint8Array.from({ length: 3 * S }, (_, i) => (i * 7 + (i >> 8)) & 0xff);
  fs.writeFileSync(file, bytes.subarray(0, S + S / 2));
  const fd = fs.openSync(file, "r");
  try {
    const ahead = new ReadAhead(fd, new ChunkPool(holder, S, 4), 0, S, 2, true);
    const got: number[] = [];
    const seen: Uint8Array[] = [];
    const take = async (fill = true) => {
      const r = await ahead.next();
      if (r instanceof Error) throw r;
      got.push(r.got);
      seen.push(r.chunk.slice(0, r.got));
      if (fill) ahead.fill();
    };
    await take(); // [0, S): whole; reads at S and 2S are under way
    await take(false); // [S, 1.5 S): short, not the end: the read at 2S (which found nothing) is dropped
    fs.appendFileSync(file, bytes.subarray(S + S / 2));
    ahead.fill();
    await take(); // [1.5 S, 2.5 S): the bytes written meanwhile, right after the short read's
    await take(); // [2.5 S, 3 S)
    expect(got).toEqual([S, S / 2, S, S / 2]);
    const all = new Uint8Array(3 * S);
    let at = 0;
    for (const c of seen) all.set(c, (at += c.length) - c.length);
    expect(all).toEqual(bytes);
    await ahead.settle();
  } finally {
    fs.closeSync(fd);
  }
});

test("deepen() makes fill() keep more reads under way on a regular file, never fewer, and none more on a pipe", async () => {
  const S = 4096;
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "nbd-readahead-")), "deep.bin");
  fs.writeFileSync(file, new Uint8Array(8 * S));
  for (const regular of [true, false]) {
    const fd = fs.openSync(file, "r");
    try {
      const pool = new ChunkPool(holder, S, 8);
      let taken = 0;
      const take = pool.take.bind(pool);
      pool.take = () => (taken++, take());
      const ahead = new ReadAhead(fd, pool, 0, S, 2, regular);
      ahead.fill();
      expect(taken).toBe(regular ? 2 : 1);
      ahead.deepen(3);
      ahead.fill();
      expect(taken, `regular ${regular}`).toBe(regular ? 3 : 1);
      ahead.deepen(1);
      const r = await ahead.next();
      if (r instanceof Error) throw r;
      ahead.fill();
      expect(taken).toBe(regular ? 4 : 2);
      await ahead.settle();
    } finally {
      fs.closeSync(fd);
    }
  }
});

// The first reads of a capture file, started by the npm bin before the command line loads (Prefetch).
const MiB = 1024 * 1024;
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "nbd-prefetch-"));
afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));

/** A file of `n` bytes that differ from their neighbours, and its bytes. */
function patterned(name: string, n: number): { file: string; bytes: Uint8Array } {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i++) bytes[i] = (i * 13 + (i >> 12)) & 0xff;
  const file = path.join(TMP, name);
  fs.writeFileSync(file, bytes);
  return { file, bytes };
}

/** Whether two byte arrays hold the same bytes (vitest's deep equality takes seconds on megabytes). */
function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}

/** The bytes each read got, from its chunk's head on. */
async function readsOf(reads: readonly Read[], head: number): Promise<{ got: number[]; bytes: Uint8Array }> {
  const got: number[] = [];
  const parts: Uint8Array[] = [];
  for (const r of reads) {
    const n = await r.result;
    if (typeof n !== "number") throw n;
    got.push(n);
    parts.push(r.chunk.subarray(head, head + n));
  }
  const bytes = new Uint8Array(got.reduce((a, b) => a + b, 0));
  let at = 0;
  for (const p of parts) at += (bytes.set(p, at), p.length);
  return { got, bytes };
}

test("a prefetch of large packets reads the first 1 + 4 + 4 MiB into chunks the run's reader uses, and hands them over once", async () => {
  // 64 KiB loopback segments, 11 MiB and some.
  const file = path.join(TMP, "big.pcap");
  generate(file, 11.2 * MiB);
  const bytes = fs.readFileSync(file);
  const rest = bytes.length - 11 * MiB;
  expect(rest).toBeGreaterThan(0);
  expect(rest).toBeLessThan(MiB);
  const fd = fs.openSync(file, "r");
  const p = new Prefetch(file, fd, bytes.length);
  expect(p.head).toBe(readHead(READ_SIZE));
  expect(p.take(file, p.head + 1)).toBeUndefined();
  expect(p.take(path.join(TMP, "other.bin"), p.head)).toBeUndefined();
  const reads = p.take(file, p.head)!;
  expect(p.take(file, p.head)).toBeUndefined();
  expect(reads.map((r) => [r.position, r.size, r.chunk.length])).toEqual([
    [0, READ_SIZE, p.head + READ_SIZE],
    [READ_SIZE, LARGE_READ_SIZE, p.head + LARGE_READ_SIZE],
    [READ_SIZE + LARGE_READ_SIZE, LARGE_READ_SIZE, p.head + LARGE_READ_SIZE],
  ]);
  // The run's reader goes on after them, in its own chunks.
  const ahead = new ReadAhead(
    fd,
    new ChunkPool(holder, p.head + READ_SIZE, 4),
    p.head,
    READ_SIZE,
    2,
    true,
    reads,
  );
  const got: number[] = [];
  const seen: Uint8Array[] = [];
  for (;;) {
    const r = await ahead.next();
    if (r instanceof Error) throw r;
    if (r.got === 0) break;
    got.push(r.got);
    seen.push(r.chunk.slice(p.head, p.head + r.got));
    ahead.fill();
  }
  await ahead.settle();
  fs.closeSync(fd);
  expect(got).toEqual([MiB, 4 * MiB, 4 * MiB, MiB, MiB, rest]);
  const all = new Uint8Array(bytes.length);
  let at = 0;
  for (const c of seen) at += (all.set(c, at), c.length);
  expect(at).toBe(bytes.length);
  expect(same(all, bytes)).toBe(true);
});

test("a prefetch of small packets (or of what is no capture) reads 1 MiB at a time, only what is there; release() closes", async () => {
  const eth = path.join(TMP, "eth.pcap");
  generate(eth, 4 * MiB, 1448, 64);
  const ethFd = fs.openSync(eth, "r");
  const e = new Prefetch(eth, ethFd, fs.statSync(eth).size);
  expect(e.take(eth, e.head)!.map((r) => [r.position, r.size])).toEqual([[0, MiB], [MiB, MiB], [
    2 * MiB,
    MiB,
  ]]);
  fs.closeSync(ethFd);
  const { file, bytes } = patterned("two.bin", 2 * MiB + 123);
  const fd = fs.openSync(file, "r");
  const p = new Prefetch(file, fd, bytes.length);
  const reads = p.take(file, p.head)!;
  const { got, bytes: read } = await readsOf(reads, p.head);
  expect(got).toEqual([MiB, MiB, 123]);
  expect(same(read, bytes)).toBe(true);
  // Exactly 2 MiB: two reads.
  const exact = patterned("exact.bin", 2 * MiB);
  const fd2 = fs.openSync(exact.file, "r");
  const q = new Prefetch(exact.file, fd2, exact.bytes.length);
  await q.release();
  expect(() => fs.fstatSync(fd2)).toThrow();
  expect(q.take(exact.file, q.head)).toBeUndefined();
  // A file shorter than its size said (truncated after it was opened): the chunk past its end reads
  // nothing.
  const fd3 = fs.openSync(exact.file, "r");
  const r = new Prefetch(exact.file, fd3, 12 * MiB);
  const short = await readsOf(r.take(exact.file, r.head)!, r.head);
  expect(short.got).toEqual([MiB, MiB, 0]);
  expect(same(short.bytes, exact.bytes)).toBe(true);
  fs.closeSync(fd3);
  fs.closeSync(fd);
});

test("the capture operand of dissect and stats, as the command line's parser finds it", () => {
  expect(captureOperand(["dissect", "a.pcap"])).toBe("a.pcap");
  expect(captureOperand(["stats", "--json", "a.pcap"])).toBe("a.pcap");
  expect(captureOperand(["dissect", "--filter", "x.pcap", "a.pcap"])).toBe("a.pcap");
  expect(captureOperand(["dissect", "--filter=x", "a.pcap"])).toBe("a.pcap");
  expect(captureOperand(["dissect", "-"])).toBeUndefined();
  expect(captureOperand(["dissect", "a.pcap", "--help"])).toBeUndefined();
  expect(captureOperand(["dissect", "a.pcap", "b.pcap"])).toBeUndefined();
  expect(captureOperand(["vectors", "a.pcap"])).toBeUndefined();
  expect(captureOperand(["dissect"])).toBeUndefined();
  // Against the parser itself, on argument lists made of its words: wherever it accepts the arguments,
  // the operand is its capture (or none for standard input).
  const words = [
    "--json",
    "--summary",
    "--strict",
    "--time",
    "relative",
    "--time=delta",
    "--count",
    "3",
    "--count=2",
    "--filter",
    "command == NBD_CMD_READ",
    '--filter=kind == "request"',
    "--port",
    "10809",
    "--port=1",
    "--c2s",
    "--s2c",
    "c.bin",
    "a.pcap",
    "b.pcap",
    "-",
    "--help",
    "-h",
  ];
  let accepted = 0;
  fc.assert(
    fc.property(
      fc.constantFrom("dissect" as const, "stats" as const),
      fc.array(fc.constantFrom(...words), { maxLength: 6 }),
      (command, args) => {
        let parsed: ReturnType<typeof parseDissect>;
        try {
          parsed = parseDissect(args, command);
        } catch {
          return;
        }
        const operand = captureOperand([command, ...args]);
        if (parsed === "help") expect(operand).toBeUndefined();
        else {
          accepted++;
          expect(operand).toBe(parsed.capture === "-" ? undefined : parsed.capture);
        }
      },
    ),
    { numRuns: 3000, seed: 7 },
  );
  expect(accepted).toBeGreaterThan(300);
});

test("prefetchCapture starts reads only for a regular file of the size given, and leaves them once", async () => {
  const { file } = patterned("six.bin", 6 * MiB);
  expect(takePrefetch()).toBeUndefined();
  expect(prefetchCapture(["dissect", file], 7 * MiB)).toBeUndefined();
  expect(takePrefetch()).toBeUndefined();
  expect(prefetchCapture(["dissect", path.join(TMP, "missing.pcap")], 0)).toBeUndefined();
  expect(takePrefetch()).toBeUndefined();
  const started = prefetchCapture(["dissect", "--json", file], 4 * MiB);
  expect(started?.file).toBe(file);
  const p = takePrefetch()!;
  expect(p).toBe(started);
  expect(p.file).toBe(file);
  expect(p.size).toBe(6 * MiB);
  expect(takePrefetch()).toBeUndefined();
  await p.release();
  expect(() => fs.fstatSync(p.fd)).toThrow();
});

test("dissect and stats give libuv's pool one reading thread, stats of a long run of large packets two, unless the environment says how many", () => {
  const deno = "Deno" in globalThis;
  // loopback-1g, loopback-100m and small-100m as their first headers show them.
  const large: CaptureSniff = { large: true, expectedPackets: 46704 };
  const short: CaptureSniff = { large: true, expectedPackets: 4569 };
  const small: CaptureSniff = { large: false, expectedPackets: 46739 };
  expect(LONG_RUN_PACKETS).toBeGreaterThan(short.expectedPackets);
  expect(LONG_RUN_PACKETS).toBeLessThan(large.expectedPackets);
  expect([short, small, large].map(predictsLong)).toEqual([false, true, true]);
  expect(predictsLong({ large: true, expectedPackets: LONG_RUN_PACKETS })).toBe(true);
  expect(predictsLong({ large: true, expectedPackets: LONG_RUN_PACKETS - 1 })).toBe(false);
  for (const command of ["dissect", "stats"]) {
    for (const sniff of [undefined, short, small, large]) {
      const env: Record<string, string | undefined> = {};
      limitReadThreads([command, "capture.pcap"], env, sniff);
      const want = command === "stats" && sniff === large ? "2" : "1";
      // Deno's reads do not use libuv's pool: nothing to set there.
      expect(env.UV_THREADPOOL_SIZE, `${command} ${JSON.stringify(sniff)}`).toBe(deno ? undefined : want);
      expect(readThreads(command, sniff)).toBe(Number(want));
    }
  }
  expect(READ_THREADS).toBe(1);
  expect(STATS_READ_THREADS).toBe(2);
  const other: Record<string, string | undefined> = {};
  limitReadThreads(["conform", "server", "127.0.0.1:10809"], other);
  expect(other.UV_THREADPOOL_SIZE).toBeUndefined();
  const chosen = { UV_THREADPOOL_SIZE: "3" };
  limitReadThreads(["dissect"], chosen);
  limitReadThreads(["stats"], chosen, large);
  expect(chosen.UV_THREADPOOL_SIZE).toBe("3");
});

test("prefetchCapture tells what the file's first headers say before its first read, once, whether it reads or not", async () => {
  // 64 KiB WRITEs in loopback segments (large packets), and the same in 1448-byte segments (small ones).
  const loop = path.join(TMP, "before-loop.pcap");
  generate(loop, 5 * MiB);
  const eth = path.join(TMP, "before-eth.pcap");
  generate(eth, 5 * MiB, 1448);
  for (const [file, large] of [[loop, true], [eth, false]] as const) {
    const seen: (CaptureSniff | undefined)[] = [];
    let registered: unknown = "not asked";
    const p = prefetchCapture(["stats", file], 4 * MiB, (sniff) => {
      seen.push(sniff);
      // Called before the prefetch exists (it starts its reads when made; scripts/check.sh counts the pool
      // threads the bin then gets).
      registered = takePrefetch();
    });
    expect(registered).toBeUndefined();
    expect(seen).toHaveLength(1);
    expect(seen[0]?.large, file).toBe(large);
    expect(p?.sniff).toBe(seen[0]);
    expect(takePrefetch()).toBe(p);
    await p!.release();
  }
  // The same large packets in a file made 800 MB long by a hole: a long run, two reading threads for stats.
  const long = path.join(TMP, "before-long.pcap");
  fs.copyFileSync(loop, long);
  fs.truncateSync(long, 800e6);
  let sniffed: CaptureSniff | undefined;
  const q = prefetchCapture(["stats", long], 4 * MiB, (sniff) => void (sniffed = sniff));
  expect(sniffed?.large).toBe(true);
  expect(sniffed!.expectedPackets).toBeGreaterThanOrEqual(LONG_RUN_PACKETS);
  expect(readThreads("stats", sniffed)).toBe(STATS_READ_THREADS);
  expect(readThreads("stats", q?.sniff)).toBe(STATS_READ_THREADS);
  expect(takePrefetch()).toBe(q);
  await q!.release();
  // Nothing to read ahead (too small, missing, not a capture command): told once, with undefined.
  for (const args of [["stats", loop], ["dissect", path.join(TMP, "missing.pcap")], ["conform", loop]]) {
    const seen: (CaptureSniff | undefined)[] = [];
    expect(prefetchCapture(args, args[0] === "stats" ? 64 * MiB : 0, (sniff) => seen.push(sniff)))
      .toBeUndefined();
    expect(seen).toEqual([undefined]);
  }
});

test.skipIf(process.platform === "win32")(
  "prefetchCapture leaves a named pipe alone (opening it would wait for a writer)",
  () => {
    const fifo = path.join(TMP, "capture.fifo");
    spawnSync("mkfifo", [fifo]);
    expect(fs.statSync(fifo).isFIFO()).toBe(true);
    expect(prefetchCapture(["dissect", fifo], 0)).toBeUndefined();
    expect(takePrefetch()).toBeUndefined();
  },
);

test("sniffCapture finds what the command line finds after its first read, from the records' headers alone", () => {
  const ROOT = path.join(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), "..");
  const dirs = [path.join(ROOT, "vectors", "captures"), path.join(ROOT, "test", "fixtures", "trace")];
  const files = dirs.flatMap((d) =>
    fs.readdirSync(d).filter((n) => /\.pcap(ng)?$/.test(n)).map((n) => path.join(d, n))
  );
  // Loopback segments of 64 KiB (large), Ethernet frames (small), a pcapng copy of each, big-endian pcap.
  const loop = path.join(TMP, "loop.pcap");
  generate(loop, 3e6);
  const eth = path.join(TMP, "eth.pcap");
  generate(eth, 3e6, 1448, 64);
  files.push(loop, eth, ...[loop, eth].map((f) => toPcapng(f)), bigEndian(loop), bigEndian(eth));
  const large = new Set([loop, loop + "ng", path.join(TMP, "be-loop.pcap")]);
  const small = new Set([eth, eth + "ng", path.join(TMP, "be-eth.pcap")]);
  const seen = new Set<boolean>();
  for (const file of files) {
    const bytes = fs.readFileSync(file);
    // The command line's measure: the packets of the first read's complete records.
    const first = bytes.subarray(0, READ_SIZE);
    const d = new CaptureDissector({ event: () => {}, traceFinding: () => {} });
    let packets = 0;
    try {
      d.pushComplete(first);
      packets = d.packets;
    } catch {
      // Not a capture the reader takes: small, as sniffCapture says of anything it cannot read.
    }
    const want = packets > 0 && first.length / packets >= LARGE_PACKET_BYTES;
    const fd = fs.openSync(file, "r");
    try {
      const sniff = sniffCapture(fd, bytes.length);
      expect(sniff.large, path.basename(file)).toBe(want);
      // The whole file's packets, estimated from the first headers: within 10% for the generated captures
      // (one kind of traffic after the handshake's few packets), nothing where the reader found no packet.
      if (packets === 0) expect(sniff.expectedPackets).toBe(0);
      if (large.has(file) || small.has(file)) {
        const all = new CaptureDissector({ event: () => {}, traceFinding: () => {} });
        all.push(bytes);
        all.end();
        expect(Math.abs(sniff.expectedPackets / all.packets - 1), path.basename(file)).toBeLessThan(0.1);
      }
    } finally {
      fs.closeSync(fd);
    }
    seen.add(want);
    if (large.has(file)) expect(want, file).toBe(true);
    if (small.has(file)) expect(want, file).toBe(false);
  }
  expect(seen).toEqual(new Set([true, false]));
  // Neither pcap nor pcapng, or too short.
  const junk = path.join(TMP, "junk.bin");
  fs.writeFileSync(junk, new Uint8Array(100_000).fill(7));
  const fd = fs.openSync(junk, "r");
  expect(sniffCapture(fd, 100_000)).toEqual({ large: false, expectedPackets: 0 });
  expect(sniffCapture(fd, 10)).toEqual({ large: false, expectedPackets: 0 });
  fs.closeSync(fd);
});

/** The records of the little-endian classic pcap `file` (microsecond times), and its link type. */
function records(file: string): { linkType: number; recs: { sec: number; usec: number; data: string }[] } {
  const b = fs.readFileSync(file);
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const recs: { sec: number; usec: number; data: string }[] = [];
  for (let o = 24; o + 16 <= b.length;) {
    const caplen = dv.getUint32(o + 8, true);
    recs.push({
      sec: dv.getUint32(o, true),
      usec: dv.getUint32(o + 4, true),
      data: toHex(b.subarray(o + 16, o + 16 + caplen)),
    });
    o += 16 + caplen;
  }
  return { linkType: dv.getUint32(20, true), recs };
}

/** A pcapng copy of the classic pcap `file`: a section header, one interface, an enhanced packet block each. */
function toPcapng(file: string): string {
  const { linkType, recs } = records(file);
  const out = path.join(TMP, path.basename(file) + "ng");
  const blocks = recs.map((r) => epb(true, 0, BigInt(r.sec) * 1_000_000n + BigInt(r.usec), r.data));
  fs.writeFileSync(out, hex(shb(true) + idb(true, linkType) + blocks.join("")));
  return out;
}

/** A big-endian copy of the little-endian classic pcap `file`. */
function bigEndian(file: string): string {
  const { linkType, recs } = records(file);
  const out = path.join(TMP, "be-" + path.basename(file));
  const body = recs.map((r) => pcapRecord(false, r.sec, r.usec, r.data)).join("");
  fs.writeFileSync(out, hex(pcapHeader({ le: false, linkType }) + body));
  return out;
}

test("sniffCapture reads at most SNIFF_HEADERS headers: a file of tiny blocks counts as small whatever follows", () => {
  // pcapng: a section header, then tiny blocks that are no packets (custom blocks), then 64 KiB packets.
  const big = epb(true, 0, 0n, "00".repeat(65536)).repeat(12);
  const make = (tiny: number): boolean => {
    const file = path.join(TMP, `tiny-${tiny}.pcapng`);
    fs.writeFileSync(file, hex(shb(true) + block(true, 0x0bad, "").repeat(tiny) + big));
    const fd = fs.openSync(file, "r");
    try {
      return sniffCapture(fd, fs.statSync(file).size).large;
    } finally {
      fs.closeSync(fd);
    }
  };
  expect(make(SNIFF_HEADERS - 20)).toBe(true);
  expect(make(SNIFF_HEADERS + 20)).toBe(false);
});

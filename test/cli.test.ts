import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, test, vi } from "vitest";
import { ByteOutput, type CliEnvironment, main, STATS_READS_AHEAD, WARM_PACKETS } from "../bin/cli.ts";
import { LONG_RUN_PACKETS } from "../bin/_budget.ts";
import { generate } from "../bench/dissect/generate.ts";
import { Prefetch, ReadAhead, SNIFF_HEADERS } from "../bin/_readahead.ts";
import { block, epb, idb, shb } from "./fixtures/trace/_build.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CAPTURES = path.join(ROOT, "vectors", "captures");
const QEMU = path.join(CAPTURES, "qemu10-ext-io");
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "nbd-codec-cli-"));

afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(...args: string[]): Promise<Run> {
  let stdout = "";
  let stderr = "";
  const code = await main(args, {
    stdout: (t) => {
      stdout += t;
    },
    stderr: (t) => {
      stderr += t;
    },
  }, { root: ROOT });
  return { code, stdout, stderr };
}

/**
 * Runs the command line with a byte writer as the process entry point gives it: the output is encoded
 * into reused buffers, so each write is copied here before the next one. Also returns how many writes
 * there were and how many distinct buffers they came from.
 */
async function runBytes(...args: string[]): Promise<Run & { writes: number; buffers: number }> {
  const parts: Uint8Array[] = [];
  const buffers = new Set<ArrayBufferLike>();
  let stderr = "";
  const code = await main(args, {
    stdout: () => {
      throw new Error("dissect writes bytes when it can");
    },
    stdoutBytes: (b) => {
      buffers.add(b.buffer);
      // A copy (b may be a Buffer, whose slice() is a view).
      parts.push(Uint8Array.from(b));
    },
    stderr: (t) => {
      stderr += t;
    },
  }, { root: ROOT });
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    all.set(p, o);
    o += p.length;
  }
  return {
    code,
    stdout: new TextDecoder("utf-8", { fatal: true }).decode(all),
    stderr,
    writes: parts.length,
    buffers: buffers.size,
  };
}

function jsonLines(s: string): Record<string, unknown>[] {
  return s.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Record<string, unknown>);
}

function hex(h: string): Uint8Array {
  const s = h.replace(/[\s|]/g, "");
  return Uint8Array.from(s.match(/../g) ?? [], (x) => parseInt(x, 16));
}

// ---- a tiny pcap writer (Ethernet, IPv4, TCP) for synthetic captures ----

interface Segment {
  fromClient: boolean;
  flags: number;
  payload?: Uint8Array;
  /** A retransmission: sent at this offset of its direction's byte stream, which does not advance. */
  at?: number;
}

const SYN = 0x02, ACK = 0x10, PSH = 0x08, FIN = 0x01;

function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 8;
  b[o + 1] = v;
}
function put32(b: Uint8Array, o: number, v: number): void {
  put16(b, o, v >>> 16);
  put16(b, o + 2, v & 0xffff);
}

/** One TCP connection between 10.0.0.1:clientPort and 10.0.0.2:serverPort, as pcap records. */
function connection(
  clientPort: number,
  serverPort: number,
  segments: Segment[],
  clientHost = 1,
): Uint8Array[] {
  const records: Uint8Array[] = [];
  const seq = { client: 1000, server: 5000 };
  for (const s of segments) {
    const payload = s.payload ?? new Uint8Array(0);
    const frame = new Uint8Array(14 + 20 + 20 + payload.length);
    put16(frame, 12, 0x0800);
    const ip = 14;
    frame[ip] = 0x45;
    put16(frame, ip + 2, 40 + payload.length);
    frame[ip + 8] = 64;
    frame[ip + 9] = 6;
    const client = [10, 0, 0, clientHost], server = [10, 0, 0, 200];
    frame.set(s.fromClient ? client : server, ip + 12);
    frame.set(s.fromClient ? server : client, ip + 16);
    const tcp = ip + 20;
    put16(frame, tcp, s.fromClient ? clientPort : serverPort);
    put16(frame, tcp + 2, s.fromClient ? serverPort : clientPort);
    const mine = s.fromClient ? "client" : "server";
    const theirs = s.fromClient ? "server" : "client";
    const isn = s.fromClient ? 1000 : 5000;
    put32(frame, tcp + 4, s.at === undefined ? seq[mine] : (isn + 1 + s.at) >>> 0);
    put32(frame, tcp + 8, s.flags & ACK ? seq[theirs] : 0);
    frame[tcp + 12] = 0x50;
    frame[tcp + 13] = s.flags;
    put16(frame, tcp + 14, 0xffff);
    frame.set(payload, tcp + 20);
    if (s.at === undefined) seq[mine] = (seq[mine] + payload.length + (s.flags & (SYN | FIN) ? 1 : 0)) >>> 0;
    records.push(frame);
  }
  return records;
}

function pcapFile(records: Uint8Array[]): Uint8Array {
  const parts: Uint8Array[] = [hex("d4c3b2a1 0200 0400 00000000 00000000 ffff0000 01000000")];
  let t = 0;
  for (const r of records) {
    const h = new Uint8Array(16);
    const dv = new DataView(h.buffer);
    dv.setUint32(0, 1_700_000_000, true);
    dv.setUint32(4, t++, true);
    dv.setUint32(8, r.length, true);
    dv.setUint32(12, r.length, true);
    parts.push(h, r);
  }
  return concat(parts);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * TCP handshake, then a newstyle negotiation ending in transmission: greeting, client flags and NBD_OPT_GO
 * (26 bytes together: the client's transmission bytes start at stream offset 26), NBD_INFO_EXPORT with
 * `sizeAndFlags` (hex: 8 bytes of size, 2 of transmission flags), ACK.
 */
function negotiation(sizeAndFlags = "0000010000000000 000d"): Segment[] {
  return [
    { fromClient: true, flags: SYN },
    { fromClient: false, flags: SYN | ACK },
    { fromClient: true, flags: ACK },
    { fromClient: false, flags: PSH | ACK, payload: hex("4E42444D41474943 49484156454F5054 0003") },
    {
      fromClient: true,
      flags: PSH | ACK,
      payload: hex("00000003 49484156454F5054 00000007 00000006 00000000 0000"),
    },
    {
      fromClient: false,
      flags: PSH | ACK,
      payload: hex(
        `0003E889045565A9 00000007 00000003 0000000C 0000 ${sizeAndFlags}` +
          "0003E889045565A9 00000007 00000001 00000000",
      ),
    },
  ];
}

/** A clean newstyle conversation: greeting, flags, GO, INFO + ACK, one READ with its simple reply, DISC. */
function nbdSegments(): Segment[] {
  const data = new Uint8Array(4096).fill(0x5a);
  const reply = new Uint8Array(16 + 4096);
  reply.set(hex("67446698 00000000 0000000000000001"));
  reply.set(data, 16);
  return [
    ...negotiation("0000000000100000 0001"),
    {
      fromClient: true,
      flags: PSH | ACK,
      payload: hex("25609513 0000 0000 0000000000000001 0000000000000000 00001000"),
    },
    { fromClient: false, flags: PSH | ACK, payload: reply.subarray(0, 1000) },
    { fromClient: false, flags: PSH | ACK, payload: reply.subarray(1000) },
    {
      fromClient: true,
      flags: PSH | ACK,
      payload: hex("25609513 0000 0002 0000000000000002 0000000000000000 00000000"),
    },
    { fromClient: true, flags: FIN | ACK },
    { fromClient: false, flags: FIN | ACK },
  ];
}

function writeTemp(name: string, bytes: Uint8Array): string {
  const p = path.join(TMP, name);
  fs.writeFileSync(p, bytes);
  return p;
}

const CLEAN = writeTemp("clean.pcap", pcapFile(connection(40000, 10809, nbdSegments())));

describe("nbd-codec --help and arguments", () => {
  test("--help lists the command and every option, exit 0", async () => {
    for (const args of [["--help"], ["dissect", "--help"], ["-h"]]) {
      const r = await run(...args);
      expect(r.code).toBe(0);
      expect(r.stderr).toBe("");
      for (const word of ["dissect", "--port", "--json", "--strict", "--c2s", "--s2c", "Exit status"]) {
        expect(r.stdout).toContain(word);
      }
    }
  });

  test("bad arguments exit 2 with one line on stderr", async () => {
    const cases: [string[], string][] = [
      [[], "no command given"],
      [["frobnicate"], "unknown command frobnicate"],
      [["dissect", "--bogus"], "unknown option --bogus"],
      [["dissect", "--port", "http"], "--port http is not a port"],
      [["dissect", "--port", "70000"], "--port 70000 is not a port"],
      [["dissect", "--port"], "--port needs a value"],
      [["dissect", "--json=yes"], "--json takes no value"],
      [["dissect", "--c2s", "a.bin"], "--c2s needs --s2c"],
      [["dissect", "a.pcap", "b.pcap"], "more than one capture"],
      [["dissect", "a.pcap", "--c2s", "a", "--s2c", "b"], "not both"],
    ];
    for (const [args, message] of cases) {
      const r = await run(...args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain(message);
      expect(r.stderr.trimEnd().split("\n")).toHaveLength(1);
    }
  });

  test("an unreadable or non-capture file exits 2 with one line on stderr", async () => {
    const missing = await run("dissect", path.join(TMP, "missing.pcap"));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^nbd-codec: cannot read .*missing\.pcap/);
    const junk = await run(
      "dissect",
      writeTemp("junk.pcap", new TextEncoder().encode("this is not a capture")),
    );
    expect(junk.code).toBe(2);
    expect(junk.stderr).toMatch(/^nbd-codec: .*junk\.pcap is not a readable capture/);
    expect(junk.stderr.trimEnd().split("\n")).toHaveLength(1);
    const raw = await run(
      "dissect",
      "--c2s",
      path.join(TMP, "nope.bin"),
      "--s2c",
      path.join(TMP, "nope.bin"),
    );
    expect(raw.code).toBe(2);
    expect(raw.stderr).toMatch(/^nbd-codec: cannot read/);
  });
});

describe("nbd-codec dissect on the bundled qemu capture", () => {
  test("without a capture it dissects the bundled one as text", async () => {
    const r = await run("dissect");
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    // tshark -r qemu10-ext-io.pcap: packet 4, 0.000162 s after packet 1, carries the 18-byte greeting.
    expect(r.stdout).toMatch(
      /^Connection 0: 127\.0\.0\.1:58156 → 127\.0\.0\.1:43703\n\nFrame 1 \(packet 4, 0\.000162000 s\): connection 0, s2c, offset 0, 18 bytes: newstyle-greeting\n/,
    );
    expect(r.stdout).toContain("    Type: NBD_REPLY_TYPE_BLOCK_STATUS_EXT (6)");
    expect(r.stdout.match(/^Frame \d+ /gm)).toHaveLength(30);
  });

  test("--json prints one object per frame that agrees with the capture's independent walk", async () => {
    const r = await run("dissect", QEMU + ".pcap", "--json");
    expect(r.code).toBe(0);
    const got = jsonLines(r.stdout);
    const expected = jsonLines(fs.readFileSync(QEMU + ".expected.jsonl", "utf8"));
    expect(got).toHaveLength(expected.length);
    expected.forEach((want, i) => {
      const g = got[i]!;
      for (const [k, v] of Object.entries(want)) {
        const key = k === "flags" ? (FLAG_KEY[want.kind as string] ?? k) : k;
        expect(g[key], `frame ${i} ${k}`).toEqual(v);
      }
      expect(Array.isArray(g.findings)).toBe(true);
    });
    const bs = got.find((g) => g.chunkType === "NBD_REPLY_TYPE_BLOCK_STATUS_EXT")!;
    expect(bs.context).toBe("base:allocation");
    expect(bs.extents).toEqual([{ offset: "0", length: "65536", status: "0", description: "data" }]);
  });

  test("--c2s/--s2c decodes the raw streams to the same frames", async () => {
    const pcap = jsonLines((await run("dissect", QEMU + ".pcap", "--json")).stdout);
    const r = await run("dissect", "--c2s", QEMU + ".c2s.bin", "--s2c", QEMU + ".s2c.bin", "--json");
    expect(r.code).toBe(0);
    const raw = jsonLines(r.stdout);
    // The capture's keys (packets, times, endpoints) are absent from raw streams, not zero.
    const CAPTURE_KEYS = [
      "packet",
      "firstPacket",
      "time",
      "client",
      "server",
      "requestPacket",
      "requestTime",
      "responseTime",
    ];
    for (const o of raw) for (const k of CAPTURE_KEYS) expect(o, k).not.toHaveProperty(k);
    for (const o of pcap) {
      expect(typeof o.packet).toBe("number");
      for (const k of CAPTURE_KEYS) delete o[k];
    }
    const key = (o: Record<string, unknown>) => `${o.direction} ${o.frameOffset}`;
    const sort = (xs: Record<string, unknown>[]) => [...xs].sort((a, b) => key(a) < key(b) ? -1 : 1);
    expect(sort(raw)).toEqual(sort(pcap));
  });

  test("--strict exits 1 on the capture's spec violation, after printing every frame", async () => {
    const r = await run("dissect", QEMU + ".pcap", "--strict");
    expect(r.code).toBe(1);
    expect(r.stdout.match(/^Frame \d+ /gm)).toHaveLength(30);
    expect(r.stderr).toMatch(/^nbd-codec: --strict: \d+ spec violations?; first: /);
    expect(r.stderr.trimEnd().split("\n")).toHaveLength(1);
  });
});

/** The walk (scripts/capture/walk.py) calls every frame's flags "flags"; we name the handshake ones. */
const FLAG_KEY: Record<string, string> = {
  "newstyle-greeting": "handshakeFlags",
  "oldstyle-greeting": "transmissionFlags",
  "client-flags": "clientFlags",
  "export-name-reply": "transmissionFlags",
};

/** Every bundled capture (pcap and pcapng) that has an expected frame list. */
const RECORDED = fs.readdirSync(CAPTURES)
  .filter((n) => /\.pcap(ng)?$/.test(n))
  .map((n) => ({
    file: path.join(CAPTURES, n),
    expected: path.join(CAPTURES, n.replace(/\.pcap(ng)?$/, ".expected.jsonl")),
  }))
  .filter((c) => fs.existsSync(c.expected) && fs.statSync(c.expected).size > 0);

describe("nbd-codec dissect on every recorded capture", () => {
  test.each(RECORDED.map((c) => [path.basename(c.file), c] as const))(
    "%s: --json frames agree with the expected list",
    async (_name, c) => {
      const r = await run("dissect", c.file, "--json");
      expect(r.code).toBe(0);
      expect(r.stderr).toBe("");
      const frames = jsonLines(r.stdout).filter((o) => typeof o.frameOffset === "number");
      const expected = jsonLines(fs.readFileSync(c.expected, "utf8"));
      expect(frames).toHaveLength(expected.length);
      // The CLI prints frames in capture (time) order; the expected list is in conversation order. With
      // several requests in flight the two interleave the directions differently, so compare each
      // direction in its own stream order.
      for (const dir of ["c2s", "s2c"]) {
        const mine = frames.filter((o) => o.direction === dir);
        const want = expected.filter((o) => o.direction === dir);
        expect(mine).toHaveLength(want.length);
        want.forEach((w, i) => {
          for (const [k, v] of Object.entries(w)) {
            const key = k === "flags" ? (FLAG_KEY[w.kind as string] ?? k) : k;
            expect(mine[i]![key], `${dir} frame ${i} ${k}`).toEqual(v);
          }
        });
      }
    },
  );
});

describe("nbd-codec dissect output as bytes", () => {
  test("the bytes written are the text, for every recorded capture, in text and JSON", async () => {
    const files = fs.readdirSync(CAPTURES).filter((f) => /\.pcap(ng)?$/.test(f));
    expect(files.length).toBeGreaterThan(10);
    for (const f of files) {
      for (const mode of [[], ["--json"]]) {
        const text = await run("dissect", path.join(CAPTURES, f), ...mode);
        const bytes = await runBytes("dissect", path.join(CAPTURES, f), ...mode);
        expect(bytes.code).toBe(text.code);
        expect(bytes.stderr).toBe(text.stderr);
        expect(bytes.stdout).toBe(text.stdout);
      }
    }
  });

  test("UTF-8 text of many frames crosses the reused buffers whole", async () => {
    // 3000 NBD_OPT_INFO requests for an export whose name has 2-, 3- and 4-byte UTF-8 characters, each
    // a different length, so that characters straddle the ends of the 64 KiB buffers.
    const enc = new TextEncoder();
    const parts: Uint8Array[] = [hex("00000003")];
    const names: string[] = [];
    for (let i = 0; i < 3000; i++) {
      const name = `диск-é-😀-${"x".repeat(i % 7)}-${i}`;
      names.push(name);
      const n = enc.encode(name);
      const o = new Uint8Array(16 + 4 + n.length + 2);
      o.set(hex("49484156454f5054 00000006"));
      put32(o, 12, 4 + n.length + 2);
      put32(o, 16, n.length);
      o.set(n, 20);
      parts.push(o);
    }
    const c2sFile = writeTemp("utf8.c2s.bin", concat(parts));
    const s2cFile = writeTemp("utf8.s2c.bin", hex("4E42444D41474943 49484156454F5054 0003"));
    for (const mode of [[], ["--json"]]) {
      const text = await run("dissect", "--c2s", c2sFile, "--s2c", s2cFile, ...mode);
      const bytes = await runBytes("dissect", "--c2s", c2sFile, "--s2c", s2cFile, ...mode);
      expect(bytes.code).toBe(0);
      expect(bytes.stdout.length).toBeGreaterThan(3 * 65536);
      expect(bytes.stdout === text.stdout).toBe(true);
      for (const name of [names[0]!, names[1234]!, names[2999]!]) expect(bytes.stdout).toContain(name);
      expect(bytes.writes).toBeGreaterThan(4);
      expect(bytes.buffers).toBeLessThan(bytes.writes);
    }
  });

  test("requests and simple replies written as bytes fill the buffers to their ends, as the text does", async () => {
    // An oldstyle connection with 3000 requests (WRITE with 1 to 3 bytes of data, READ, FLUSH, TRIM and
    // an unknown command, some with flags) and their simple replies (some with errors, READ with data):
    // about 1.2 MB of text written by the byte writer, crossing the ends of many 64 KiB buffers.
    const requests: Uint8Array[] = [];
    const replies: Uint8Array[] = [
      hex("4e42444d41474943 0000420281861253 0000000100000000 00000001"),
      new Uint8Array(124),
    ];
    for (let i = 0; i < 3000; i++) {
      const command = [1, 0, 3, 4, 99][i % 5]!;
      const data = command === 1 ? 1 + (i % 3) : 0;
      const r = new Uint8Array(28 + data).fill(0xab);
      r.set(hex("25609513"));
      r[4] = 0;
      r[5] = i % 7 === 0 ? 1 : 0;
      r[6] = 0;
      r[7] = command;
      put32(r, 8, i * 7919);
      put32(r, 12, i);
      put32(r, 16, 0);
      put32(r, 20, i * 4096);
      put32(r, 24, command === 0 ? 2 : data);
      requests.push(r);
      const readData = command === 0 && i % 4 !== 0 ? 2 : 0;
      const reply = new Uint8Array(16 + readData);
      reply.set(hex("67446698"));
      put32(reply, 4, command === 0 && i % 4 === 0 ? 5 : 0);
      put32(reply, 8, i * 7919);
      put32(reply, 12, i);
      replies.push(reply);
    }
    const c2sFile = writeTemp("hot.c2s.bin", concat(requests));
    const s2cFile = writeTemp("hot.s2c.bin", concat(replies));
    const text = await run("dissect", "--c2s", c2sFile, "--s2c", s2cFile);
    const bytes = await runBytes("dissect", "--c2s", c2sFile, "--s2c", s2cFile);
    expect(bytes.code).toBe(0);
    expect(text.stdout).toContain("Frame 6001: connection 0, s2c");
    expect(text.stdout).toContain("    Error: NBD_EIO (5)\n");
    expect(text.stdout).toContain("    Type: NBD_CMD_UNKNOWN(99) (99)\n");
    expect(bytes.stdout.length).toBeGreaterThan(16 * 65536);
    expect(bytes.stdout === text.stdout).toBe(true);
    expect(bytes.writes).toBeGreaterThan(16);
  });

  test("ByteOutput splits text between buffers only between characters, and reuses written buffers", async () => {
    const enc = new TextEncoder();
    // Characters of 1, 2, 3 and 4 bytes (the last a surrogate pair), in every alignment against 7-byte
    // buffers; and pieces longer than a buffer.
    const pieces = ["a", "é", "€", "😀", "ab😀c", "€€€€€", "x".repeat(20), "😀".repeat(9), "é€😀a"];
    const writes: Uint8Array[] = [];
    const seen = new Set<ArrayBufferLike>();
    const out = new ByteOutput((b) => {
      expect(b.length).toBeGreaterThan(0);
      expect(b.length).toBeLessThanOrEqual(7);
      seen.add(b.buffer);
      writes.push(Uint8Array.from(b));
    }, 7);
    let expected = "";
    for (let round = 0; round < 20; round++) {
      for (const p of pieces) {
        out.add(p);
        expected += p;
        if (out.full) await out.flush();
      }
    }
    await out.flush();
    // Each write is whole UTF-8 on its own: no character was cut.
    const decoder = new TextDecoder("utf-8", { fatal: true });
    const texts = writes.map((w) => decoder.decode(w));
    expect(texts.join("")).toBe(expected);
    expect(enc.encode(texts.join("")).length).toBe(enc.encode(expected).length);
    // A buffer is refilled only after it was written: as many buffers as the longest piece fills (36
    // bytes of 4-byte characters: 9 buffers of at most 4 bytes each) and one more serve every write.
    expect(writes.length).toBeGreaterThan(200);
    expect(seen.size).toBeLessThanOrEqual(10);
  });
});

describe("nbd-codec dissect on synthetic captures", () => {
  test("frames spanning several read chunks decode right while the chunks are reused", async () => {
    // Two connections interleaved packet by packet, each with WRITEs of 2.5 MiB (more than two 1 MiB read
    // chunks) in 60 000-byte segments, then 4 KiB WRITEs whose headers straddle chunk ends: the CLI reads
    // into recycled chunks, and must not overwrite one while a decoder still holds a view of it.
    const BIG = 2.5 * 1024 * 1024;
    const segmentsOf = (client: number): Segment[] => {
      const segs: Segment[] = negotiation();
      for (let i = 1; i <= 12; i++) {
        const size = i <= 4 ? BIG : 4096 + 7 * i;
        const w = new Uint8Array(28 + size).fill(client * 16 + i);
        w.set(hex("25609513 0000 0001"));
        put32(w, 8, client);
        put32(w, 12, i);
        put32(w, 16, 0);
        put32(w, 20, i * 0x10000);
        put32(w, 24, size);
        for (let o = 0; o < w.length; o += 60000) {
          segs.push({ fromClient: true, flags: PSH | ACK, payload: w.subarray(o, o + 60000) });
        }
        const r = hex("67446698 00000000 00000000 00000000");
        put32(r, 8, client);
        put32(r, 12, i);
        segs.push({ fromClient: false, flags: PSH | ACK, payload: r });
      }
      segs.push({ fromClient: true, flags: FIN | ACK }, { fromClient: false, flags: FIN | ACK });
      return segs;
    };
    const a = connection(40001, 10809, segmentsOf(1), 1);
    const b = connection(40002, 10809, segmentsOf(2), 3);
    const records: Uint8Array[] = [];
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      if (i < a.length) records.push(a[i]!);
      if (i < b.length) records.push(b[i]!);
    }
    const file = writeTemp("chunks.pcap", pcapFile(records));
    expect(fs.statSync(file).size).toBeGreaterThan(20 * 1024 * 1024);
    const r = await run("dissect", file, "--json", "--strict");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const lines = jsonLines(r.stdout);
    for (const client of [1, 2]) {
      const conn = client - 1;
      const requests = lines.filter((l) => l.connection === conn && l.kind === "request");
      const replies = lines.filter((l) => l.connection === conn && l.kind === "simple-reply");
      expect(requests.map((l) => [l.command, l.cookie, l.offset, l.dataLength])).toEqual(
        Array.from({ length: 12 }, (_, k) => {
          const i = k + 1;
          const size = i <= 4 ? BIG : 4096 + 7 * i;
          return ["NBD_CMD_WRITE", String(client * 2 ** 32 + i), String(i * 0x10000), size];
        }),
      );
      expect(replies.map((l) => [l.cookie, l.requestCommand])).toEqual(
        Array.from({ length: 12 }, (_, k) => [String(client * 2 ** 32 + k + 1), "NBD_CMD_WRITE"]),
      );
    }
    expect(lines.filter((l) => (l.findings as unknown[]).length > 0)).toEqual([]);
  });

  test("capture records of every size against the 1 MiB reads: small, 300 KB, 1.5 MB, and a cut last one", async () => {
    // Records cut by a read end are moved to the next read buffer when small, and kept by the capture
    // reader when large (over a quarter of a read, or over a whole read). The NBD traffic (WRITEs of 1 to
    // 60 000 bytes, each in one segment) is interleaved with large non-IP Ethernet records (EtherType
    // 0x88b5, ignored by the dissector), so that records of every kind meet read ends.
    const fillers = [300_000, 1_500_000, 700_000, 200_000, 1_100_000];
    const sizes = [4096, 60_000, 1000, 30_000, 1];
    const segs: Segment[] = negotiation();
    const count = 40;
    for (let i = 0; i < count; i++) {
      const size = sizes[i % sizes.length]!;
      const w = new Uint8Array(28 + size).fill(i + 1);
      w.set(hex("25609513 0000 0001 0000000000000000 0000000000000000 00000000"));
      put32(w, 12, i + 1);
      put32(w, 20, i * 0x10000);
      put32(w, 24, size);
      segs.push({ fromClient: true, flags: PSH | ACK, payload: w });
      const r = hex("67446698 00000000 0000000000000000");
      put32(r, 12, i + 1);
      segs.push({ fromClient: false, flags: PSH | ACK, payload: r });
    }
    segs.push({ fromClient: true, flags: FIN | ACK }, { fromClient: false, flags: FIN | ACK });
    const nbd = connection(40000, 10809, segs);
    const records: Uint8Array[] = [];
    nbd.forEach((r, i) => {
      records.push(r);
      if (i >= 5 && i % 4 === 0) {
        const f = new Uint8Array(14 + fillers[i % fillers.length]!).fill(0xee);
        put16(f, 12, 0x88b5);
        records.push(f);
      }
    });
    // The capture ends with a large filler record.
    const last = new Uint8Array(14 + 900_000).fill(0xdd);
    put16(last, 12, 0x88b5);
    records.push(last);
    const whole = pcapFile(records);
    expect(whole.length).toBeGreaterThan(10 * 1024 * 1024);
    const file = writeTemp("sizes.pcap", whole);
    const r = await run("dissect", file, "--json", "--strict");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const lines = jsonLines(r.stdout);
    expect(lines.filter((l) => l.kind === "request").map((l) => [l.cookie, l.offset, l.dataLength])).toEqual(
      Array.from({ length: count }, (_, i) => [String(i + 1), String(i * 0x10000), sizes[i % sizes.length]]),
    );
    expect(lines.filter((l) => l.kind === "simple-reply")).toHaveLength(count);
    expect(lines.filter((l) => (l.findings as unknown[]).length > 0)).toEqual([]);

    // The same capture cut inside its last record: every frame is kept, and the capture reader reports
    // the cut record at its offset.
    const lastRecord = whole.length - 16 - last.length;
    for (const keep of [20, 100_000, 400_000]) {
      const cut = writeTemp("sizes-cut.pcap", whole.subarray(0, lastRecord + keep));
      const c = await run("dissect", cut, "--json");
      expect(c.code).toBe(0);
      const got = jsonLines(c.stdout);
      expect(got.filter((l) => l.kind === "request")).toHaveLength(count);
      expect(got.filter((l) => l.kind === "capture").map((l) => (l.findings as { message: string }[])[0]))
        .toEqual([expect.objectContaining({
          rule: "capture-truncated",
          offset: lastRecord,
          message: `Cannot read capture: input ends inside a record at offset ${lastRecord} (${keep} of ${
            16 + last.length
          } bytes)`,
        })]);
    }
  });

  test("a retransmission is compared with the original bytes after the original's read chunk was reused", async () => {
    // The client sends a 4 KiB WRITE, then six 1 MiB READs whose replies make the CLI recycle its read
    // chunks (the WRITE's among them); then it retransmits the WRITE. The reassembler keeps its window as
    // views of the chunks and must copy them out before a chunk is read into again.
    const write = new Uint8Array(28 + 4096).fill(0x77);
    write.set(hex("25609513 0000 0001 0000000000000001 0000000000000000 00001000"));
    const segs = (retransmitted: Uint8Array): Segment[] => {
      const out: Segment[] = [
        ...negotiation(),
        { fromClient: true, flags: PSH | ACK, payload: write },
        { fromClient: false, flags: PSH | ACK, payload: hex("67446698 00000000 0000000000000001") },
      ];
      for (let i = 2; i <= 7; i++) {
        const read = hex("25609513 0000 0000 0000000000000000 0000000000000000 00100000");
        put32(read, 12, i);
        out.push({ fromClient: true, flags: PSH | ACK, payload: read });
        const reply = new Uint8Array(16 + 1024 * 1024).fill(i);
        reply.set(hex("67446698 00000000 0000000000000000"));
        put32(reply, 12, i);
        for (let o = 0; o < reply.length; o += 60000) {
          out.push({ fromClient: false, flags: PSH | ACK, payload: reply.subarray(o, o + 60000) });
        }
      }
      // The WRITE followed the 26 bytes of client flags and NBD_OPT_GO.
      out.push({ fromClient: true, flags: PSH | ACK, payload: retransmitted, at: 26 });
      out.push(
        {
          fromClient: true,
          flags: PSH | ACK,
          payload: hex("25609513 0000 0002 0000000000000008 0000000000000000 00000000"),
        },
        { fromClient: true, flags: FIN | ACK },
        { fromClient: false, flags: FIN | ACK },
      );
      return out;
    };
    const same = writeTemp("retransmit-same.pcap", pcapFile(connection(40000, 10809, segs(write))));
    const r = await run("dissect", same, "--json", "--strict");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const lines = jsonLines(r.stdout);
    expect(lines.filter((l) => l.kind === "request").map((l) => l.command)).toEqual([
      "NBD_CMD_WRITE",
      ...Array(6).fill("NBD_CMD_READ"),
      "NBD_CMD_DISC",
    ]);
    expect(lines.filter((l) => (l.findings as unknown[]).length > 0)).toEqual([]);

    const changed = Uint8Array.from(write);
    changed[28 + 1000] = 0x78;
    const differs = writeTemp("retransmit-differs.pcap", pcapFile(connection(40000, 10809, segs(changed))));
    const d = await run("dissect", differs, "--json");
    expect(d.code).toBe(0);
    const found = jsonLines(d.stdout).filter((l) => l.kind === "capture");
    expect(found.map((l) => [l.direction, l.streamOffset, (l.findings as { rule: string }[])[0]!.rule]))
      .toEqual([
        ["c2s", 26, "tcp-retransmission-mismatch"],
      ]);
    // `packet` keeps its 0-based meaning (the schema only gains keys); `packetNumber` and the text count from 1.
    const f = found[0]!;
    expect(f.packetNumber).toBe((f.packet as number) + 1);
    const text = await run("dissect", differs);
    expect(text.stdout).toContain(`Capture finding: connection 0, c2s, packet ${f.packetNumber}\n`);
  });

  test("a clean conversation on port 10809 passes --strict", async () => {
    const r = await run("dissect", CLEAN, "--strict", "--json");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const got = jsonLines(r.stdout);
    expect(got.map((g) => g.kind)).toEqual([
      "newstyle-greeting",
      "client-flags",
      "option-request",
      "option-reply",
      "option-reply",
      "request",
      "simple-reply",
      "request",
    ]);
    expect(got[6]).toMatchObject({ frameLength: 4112, dataLength: 4096, requestCommand: "NBD_CMD_READ" });
    expect(got.every((g) => (g.findings as unknown[]).length === 0)).toBe(true);
  });

  test("connections on other ports are found by their first bytes; others are ignored", async () => {
    const other = connection(40001, 5555, nbdSegments(), 2);
    const http = connection(40002, 8080, [
      { fromClient: true, flags: SYN },
      { fromClient: false, flags: SYN | ACK },
      {
        fromClient: true,
        flags: PSH | ACK,
        payload: new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
      },
      { fromClient: false, flags: PSH | ACK, payload: new TextEncoder().encode("HTTP/1.1 200 OK\r\n\r\n") },
    ], 3);
    const file = writeTemp("mixed.pcap", pcapFile([...http, ...other]));
    const r = await run("dissect", file, "--json");
    expect(r.code).toBe(0);
    const got = jsonLines(r.stdout);
    expect(got).toHaveLength(8);
    expect(new Set(got.map((g) => g.connection))).toEqual(new Set([0]));
    expect(got[0]).toMatchObject({ kind: "newstyle-greeting", direction: "s2c" });
  });

  test("--port names the server port", async () => {
    const file = writeTemp("port.pcap", pcapFile(connection(40000, 7000, nbdSegments())));
    const r = await run("dissect", file, "--port", "7000");
    expect(r.code).toBe(0);
    expect(r.stdout.match(/^Frame \d+ /gm)).toHaveLength(8);
    expect(r.stdout).toContain("    Type: NBD_CMD_DISC (2)");
  });

  test("a capture without NBD says so and exits 0", async () => {
    const file = writeTemp("none.pcap", pcapFile([]));
    const r = await run("dissect", file);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("No NBD connection found");
    expect((await run("dissect", file, "--json")).stdout).toBe("");
  });

  test("a capture cut inside a frame reports a truncated notice, and --strict exits 1", async () => {
    const segs = nbdSegments().slice(0, 8); // the READ reply is cut after 1000 bytes, no FIN
    const file = writeTemp("cut.pcap", pcapFile(connection(40000, 10809, segs)));
    const r = await run("dissect", file, "--json", "--strict");
    expect(r.code).toBe(1);
    const got = jsonLines(r.stdout);
    expect(got.at(-1)).toMatchObject({ kind: "truncated", direction: "s2c", connection: 0 });
  });
});

// ---- packets, times, summaries, filters and statistics (issue 14) ----
// Reference values from tshark 4.0.17 on the same files: `tshark -r qemu10-ext-io.pcap -T fields -e
// frame.number -e frame.time_epoch` (packet 4 at 1795261474.653935, packet 1 at .653773, packet 6 at .654000,
// packet 8 at .654018), and test/fixtures/trace/tshark/libnbd-nbdkit-simple.tsv (reply in packet 24 to the
// request in packet 23, nbd.time 0.000211).
const SIMPLE = path.join(CAPTURES, "libnbd-nbdkit-simple.pcap");

describe("nbd-codec dissect: packets and times", () => {
  test("a reply shows its request's packet and the time since it, as Wireshark's nbd.response_to and nbd.time", async () => {
    for (const r of [await run("dissect", SIMPLE), await runBytes("dissect", SIMPLE)]) {
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(
        "Frame 15 (packet 24, 0.001137000 s): connection 0, s2c, offset 210, 4112 bytes: simple-reply\n" +
          "    Magic: 0x67446698 (NBD_SIMPLE_REPLY_MAGIC)\n    Error: 0 (success)\n    Cookie: 1\n" +
          "    Data: 4096 bytes\n    [Request: NBD_CMD_READ, offset 0, length 4096]\n" +
          "    [Request in packet 23]\n    [Time since request: 0.000211000 s]\n\n",
      );
      // The endpoints once, before the connection's first frame.
      expect(r.stdout.match(/^Connection 0: 127\.0\.0\.1:51176 → 127\.0\.0\.1:51009$/gm)).toHaveLength(1);
    }
  });

  test("--time absolute shows UTC dates, --time delta the time since the previous frame shown", async () => {
    const abs = await run("dissect", QEMU + ".pcap", "--time", "absolute");
    expect(abs.stdout).toContain("Frame 1 (packet 4, 2026-11-21T11:44:34.653935000Z): connection 0, s2c,");
    const delta = await run("dissect", QEMU + ".pcap", "--time=delta", "--summary");
    expect(delta.stdout.split("\n").slice(0, 3).map((l) => l.split(" ").slice(0, 2).join(" "))).toEqual([
      "4 0.000000000",
      "6 0.000065000",
      "8 0.000018000",
    ]);
    const bad = await run("dissect", "--time", "soon");
    expect([bad.code, bad.stderr]).toEqual([
      2,
      "nbd-codec: --time soon is not one of relative, absolute, delta (try nbd-codec --help)\n",
    ]);
    const raw = await run(
      "dissect",
      "--c2s",
      QEMU + ".c2s.bin",
      "--s2c",
      QEMU + ".s2c.bin",
      "--time",
      "delta",
    );
    expect(raw.code).toBe(2);
  });

  test("--json has the capture's keys: packets, times as 9-digit decimal strings, endpoints, response time", async () => {
    const lines = jsonLines((await run("dissect", SIMPLE, "--json")).stdout);
    const reply = lines.find((o) => o.packet === 24)!;
    expect(reply).toMatchObject({
      kind: "simple-reply",
      packet: 24,
      firstPacket: 24,
      time: "1795261489.611323000",
      client: "127.0.0.1:51176",
      server: "127.0.0.1:51009",
      requestPacket: 23,
      requestTime: "1795261489.611112000",
      responseTime: "0.000211000",
      command: "NBD_CMD_READ",
      requestCommand: "NBD_CMD_READ",
    });
  });

  test("--summary prints one line per frame: packet, time, endpoints, kind and fields", async () => {
    const r = await run("dissect", SIMPLE, "--summary");
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(30);
    expect(lines[0]).toBe(
      "4 0.000308000 127.0.0.1:51009 → 127.0.0.1:51176 newstyle greeting flags=NBD_FLAG_FIXED_NEWSTYLE|NBD_FLAG_NO_ZEROES",
    );
    expect(lines).toContain(
      "23 0.000926000 127.0.0.1:51176 → 127.0.0.1:51009 NBD_CMD_READ cookie=1 offset=0 length=4096",
    );
    expect(lines).toContain(
      "24 0.001137000 127.0.0.1:51009 → 127.0.0.1:51176 NBD_SIMPLE_REPLY cookie=1 error=0 data=4096 [NBD_CMD_READ in 23, 0.000211000 s]",
    );
    const raw = await run("dissect", "--c2s", QEMU + ".c2s.bin", "--s2c", QEMU + ".s2c.bin", "--summary");
    expect(raw.stdout.split("\n")[0]).toMatch(/^- - server → client newstyle greeting /);
    expect((await run("dissect", "--json", "--summary")).code).toBe(2);
  });

  test("--filter selects frames by their JSON fields; --count stops after N frames", async () => {
    const r = await run(
      "dissect",
      SIMPLE,
      "--summary",
      "--filter",
      "command == READ and responseTime > 0.0001",
    );
    expect(r.stdout).toBe(
      "24 0.001137000 127.0.0.1:51009 → 127.0.0.1:51176 NBD_SIMPLE_REPLY cookie=1 error=0 data=4096 [NBD_CMD_READ in 23, 0.000211000 s]\n",
    );
    const requests = jsonLines(
      (await run("dissect", SIMPLE, "--json", "--filter", "kind == request")).stdout,
    );
    expect(requests.map((o) => o.packet)).toEqual([23, 25, 27, 29, 31, 33, 35, 37, 39]);
    const two = jsonLines(
      (await run("dissect", SIMPLE, "--json", "--filter", "kind == request", "--count", "2")).stdout,
    );
    expect(two.map((o) => o.packet)).toEqual([23, 25]);
    const text = await run("dissect", SIMPLE, "--count", "1");
    expect(text.stdout.match(/^Frame \d+ /gm)).toHaveLength(1);
    expect((await run("dissect", SIMPLE, "--count", "0")).code).toBe(2);
  });

  test("a bad --filter expression exits 2 with a message that points at the error", async () => {
    const r = await run("dissect", SIMPLE, "--filter", "command == and x");
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(
      "nbd-codec: --filter: expected a value after '==', found 'and' at column 12\n" +
        "    command == and x\n" +
        "               ^\n",
    );
  });
});

describe("nbd-codec stats", () => {
  test("text: per connection its endpoints, negotiation, counts and response-time table", async () => {
    const r = await run("stats", QEMU + ".pcap");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Connection 0: 127.0.0.1:58156 → 127.0.0.1:43703\n");
    expect(r.stdout).toContain("    Negotiated: newstyle, NO_ZEROES, extended headers\n");
    expect(r.stdout).toMatch(/\n {8}NBD_CMD_WRITE +1 +1 +0 +0\.001578000 +0\.001578000 /);
    expect(r.stdout).toContain("    Findings: write-payload-len ×1\n");
  });

  test("--json: one object with every connection", async () => {
    const r = await run("stats", SIMPLE, "--json");
    const o = JSON.parse(r.stdout);
    expect(o.connections).toHaveLength(1);
    const read = o.connections[0].commands.find((c: { command: string }) => c.command === "NBD_CMD_READ");
    expect(read).toEqual({
      command: "NBD_CMD_READ",
      requests: 3,
      replies: 3,
      errors: 1,
      responseTimes: {
        count: 3,
        min: "0.000044000",
        median: "0.000095000",
        p90: "0.000211000",
        p99: "0.000211000",
        max: "0.000211000",
      },
    });
    expect((await run("stats", SIMPLE, "--summary")).stderr).toContain("--summary applies to dissect");
  });
});

// ---- the process itself: standard input, live output, signals ----

const DENO = path.join(ROOT, "node_modules", ".bin", "deno");
const ENTRY = path.join(ROOT, "bin", "nbd-codec.ts");

interface Child {
  readonly child: import("node:child_process").ChildProcess;
  out(): string;
  /** Resolves when standard output matches `re` (rejects after 60 s). */
  waitFor(re: RegExp): Promise<void>;
  exited: Promise<number | null>;
}

async function spawnCli(args: string[], stdin: "pipe" | "ignore"): Promise<Child> {
  const { spawn } = await import("node:child_process");
  const child = spawn(DENO, ["run", "-A", ENTRY, ...args], { stdio: [stdin, "pipe", "pipe"] });
  let out = "";
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  child.stdout!.on("data", (d: Uint8Array) => {
    out += new TextDecoder().decode(d);
    for (const w of [...waiters]) {
      if (w.re.test(out)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return {
    child,
    out: () => out,
    waitFor: (re) =>
      new Promise((resolve, reject) => {
        if (re.test(out)) return resolve();
        waiters.push({ re, resolve });
        setTimeout(() => reject(new Error(`no ${re} in ${JSON.stringify(out)}`)), 60_000);
      }),
    exited,
  };
}

/** Byte offsets just past each record of a little-endian pcap. */
function recordEnds(b: Uint8Array): number[] {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const ends: number[] = [];
  for (let at = 24; at < b.length;) {
    at += 16 + dv.getUint32(at + 8, true);
    ends.push(at);
  }
  return ends;
}

/**
 * A pcap (Ethernet) of `n` frames of `size` bytes (14 by default) that are not IP (an experimental
 * EtherType): packets to count, nothing to decode.
 */
function manyPackets(n: number, size = 14): Uint8Array {
  const b = new Uint8Array(24 + n * (16 + size));
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 0xa1b2c3d4, true);
  dv.setUint16(4, 2, true);
  dv.setUint16(6, 4, true);
  dv.setUint32(16, 262144, true);
  dv.setUint32(20, 1, true);
  for (let i = 0, o = 24; i < n; i++, o += 16 + size) {
    dv.setUint32(o, 100 + i, true);
    dv.setUint32(o + 8, size, true);
    dv.setUint32(o + 12, size, true);
    dv.setUint16(o + 16 + 12, 0x88b5); // a local experimental EtherType
  }
  return b;
}

describe("nbd-codec reads a capture file in chunks", () => {
  /** Runs the command line as the process does (bytes to standard output), reading `readSize` bytes at a time. */
  function runReads(readSize: number | undefined, ...args: string[]): Promise<Run> {
    return runIn(readSize === undefined ? {} : { readSize }, ...args);
  }

  /** Runs the command line as the process does (bytes to standard output), in the environment `env`. */
  async function runIn(env: CliEnvironment, ...args: string[]): Promise<Run> {
    const parts: Uint8Array[] = [];
    let stderr = "";
    const code = await main(args, {
      stdout: (t) => void parts.push(new TextEncoder().encode(t)),
      stdoutBytes: (b) => void parts.push(Uint8Array.from(b)),
      stderr: (t) => {
        stderr += t;
      },
    }, { root: ROOT, ...env });
    return { code, stdout: new TextDecoder().decode(concat(parts)), stderr };
  }

  // Reads of 61 bytes cut nearly every record (the capture reader then copies it while it arrives); of
  // 4096 bytes, a record's first bytes are often moved in front of the next read; 65 539 bytes cut the
  // large records of the loopback captures.
  const SIZES = [61, 4096, 65_539];
  const MODES = [
    ["dissect"],
    ["dissect", "--json"],
    ["dissect", "--summary", "--time", "delta"],
    ["dissect", "--filter", 'command == NBD_CMD_READ or type == "reply-chunk"'],
    ["stats", "--json"],
  ];

  test("every bundled and fixture capture gives the same output in small reads as in one read", async () => {
    const files = [
      ...fs.readdirSync(CAPTURES).filter((n) => /\.pcap(ng)?$/.test(n)).map((n) => path.join(CAPTURES, n)),
      ...fs.readdirSync(path.join(ROOT, "test", "fixtures", "trace")).filter((n) => /\.pcap(ng)?$/.test(n))
        .map((n) => path.join(ROOT, "test", "fixtures", "trace", n)),
    ];
    expect(files.length).toBeGreaterThan(20);
    for (const file of files) {
      const whole = fs.statSync(file).size + 1;
      for (const mode of MODES) {
        const [command, ...rest] = mode;
        const one = await runReads(whole, command!, file, ...rest);
        expect(one.code).toBe(0);
        if (mode.length === 1) expect(one.stdout).toMatch(/^Connection 0: /);
        // The default read size too (1 MiB: these captures fit in one read).
        expect(await runReads(undefined, command!, file, ...rest)).toEqual(one);
        for (const readSize of SIZES) {
          expect(await runReads(readSize, command!, file, ...rest), `${file} ${mode.join(" ")} ${readSize}`)
            .toEqual(one);
        }
      }
    }
  }, 120_000);

  test(
    "frames longer than many reads, in segments of every size, while the reads' chunks are reused",
    async () => {
      // WRITEs of 1 byte to 300 KB, in segments of 1448 bytes and of 65 483 bytes (loopback), then one
      // retransmitted: the decoders hold views of chunks several reads back, the reassembler compares the
      // retransmission with bytes of a chunk read into again since.
      const sizes = [1, 70_000, 4096, 17, 300_000];
      const segs: Segment[] = negotiation();
      let streamAt = 26;
      let again: { at: number; bytes: Uint8Array } | undefined;
      sizes.forEach((size, i) => {
        const w = new Uint8Array(28 + size).map((_, k) => (k * 7 + i) & 0xff);
        w.set(hex("25609513 0000 0001 0000000000000000 0000000000000000 00000000"));
        put32(w, 12, i + 1);
        put32(w, 20, i * 0x100000);
        put32(w, 24, size);
        const step = i % 2 === 0 ? 1448 : 65_483;
        for (let o = 0; o < w.length; o += step) {
          segs.push({ fromClient: true, flags: PSH | ACK, payload: w.subarray(o, o + step) });
          // A segment still inside the reassembler's 64 KiB window when it comes again at the end.
          if (size === 300_000 && again === undefined && o >= w.length - 30_000) {
            again = { at: streamAt + o, bytes: w.subarray(o, o + step) };
          }
        }
        streamAt += w.length;
        const r = hex("67446698 00000000 0000000000000000");
        put32(r, 12, i + 1);
        segs.push({ fromClient: false, flags: PSH | ACK, payload: r });
      });
      // A READ whose 1 MiB reply goes through many reads before the retransmission comes.
      const read = hex("25609513 0000 0000 0000000000000063 0000000000000000 00100000");
      segs.push({ fromClient: true, flags: PSH | ACK, payload: read });
      const reply = new Uint8Array(16 + 1024 * 1024).fill(0x5a);
      reply.set(hex("67446698 00000000 0000000000000063"));
      for (let o = 0; o < reply.length; o += 1448) {
        segs.push({ fromClient: false, flags: PSH | ACK, payload: reply.subarray(o, o + 1448) });
      }
      segs.push({ fromClient: true, flags: PSH | ACK, payload: again!.bytes, at: again!.at });
      segs.push({ fromClient: true, flags: FIN | ACK }, { fromClient: false, flags: FIN | ACK });
      const file = writeTemp("reads.pcap", pcapFile(connection(40000, 10809, segs)));
      const whole = fs.statSync(file).size + 1;
      for (const mode of [["dissect"], ["dissect", "--json"], ["stats"]]) {
        const [command, ...rest] = mode;
        const one = await runReads(whole, command!, file, ...rest);
        expect(one.code).toBe(0);
        expect(one.stderr).toBe("");
        if (mode[1] === "--json") {
          const lines = jsonLines(one.stdout);
          expect(
            lines.filter((l) => l.kind === "request" && l.command === "NBD_CMD_WRITE").map((l) =>
              l.dataLength
            ),
          )
            .toEqual(sizes);
          expect(lines.filter((l) => l.kind === "simple-reply")).toHaveLength(sizes.length + 1);
          expect(lines.filter((l) => (l.findings as unknown[]).length > 0)).toEqual([]);
        }
        for (const readSize of [...SIZES, 1_048_576 / 16]) {
          expect(await runReads(readSize, command!, file, ...rest), `${mode.join(" ")} ${readSize}`).toEqual(
            one,
          );
        }
      }
    },
    120_000,
  );

  test(
    "a capture file whose first reads the npm bin started (a prefetch) gives the same output",
    async () => {
      // 12 MB of 64 KiB WRITEs in loopback segments: the run adopts the prefetch's 1 + 4 + 4 MiB, then reads
      // 4 MiB at a time into chunks of its own.
      const file = path.join(TMP, "prefetched.pcap");
      generate(file, 12e6);
      const other = QEMU + ".pcap";
      const size = fs.statSync(file).size;
      for (const mode of [["dissect"], ["dissect", "--json"], ["stats"]]) {
        const [command, ...rest] = mode;
        const one = await runReads(size + 1, command!, file, ...rest);
        expect(one.code).toBe(0);
        const p = new Prefetch(file, fs.openSync(file, "r"), size);
        const taken = adoption(p);
        expect(await runPrefetched(p, command!, file, ...rest), mode.join(" ")).toEqual(one);
        expect(taken.map((r) => r?.length)).toEqual([3]);
        // The descriptor is the run's: closed at its end.
        expect(() => fs.fstatSync(p.fd)).toThrow();
      }
      // A prefetch of another file than the capture read: released (its descriptor closed), output unchanged.
      const p = new Prefetch(file, fs.openSync(file, "r"), size);
      const taken = adoption(p);
      const sample = await runReads(undefined, "dissect", other);
      expect(await runPrefetched(p, "dissect", other)).toEqual(sample);
      expect(taken).toEqual([undefined]);
      expect(() => fs.fstatSync(p.fd)).toThrow();
    },
    120_000,
  );

  test(
    "stats keeps more reads under way once a file's first chunk shows large packets and a long run; dissect does not",
    async () => {
      // 12 MB of 64 KiB WRITEs in loopback segments (large packets, a short run); the same file made 800 MB
      // long by a hole at its end (a long run as its first chunk predicts it: the run is interrupted once the
      // chunk is decoded, before it reads the hole); 4 MB of 64-byte WRITEs in 1448-byte segments (a long run
      // of small packets).
      const short = path.join(TMP, "deepen-short.pcap");
      generate(short, 12e6);
      const long = path.join(TMP, "deepen-long.pcap");
      fs.copyFileSync(short, long);
      fs.truncateSync(long, 800e6);
      const small = path.join(TMP, "deepen-small.pcap");
      expect(generate(small, 4e6, 1448, 64).packets).toBeGreaterThan(LONG_RUN_PACKETS);
      expect(STATS_READS_AHEAD).toBe(3);
      const realResize = ReadAhead.prototype.resize;
      const resize = vi.spyOn(ReadAhead.prototype, "resize");
      const deepen = vi.spyOn(ReadAhead.prototype, "deepen");
      try {
        const asked = async (...args: string[]) => {
          deepen.mockClear();
          // Interrupted where the first chunk's packets turn out large (SIGINT's way: what was decoded is
          // reported, exit 0).
          let aborted = false;
          const listeners: (() => void)[] = [];
          const signal = {
            get aborted() {
              return aborted;
            },
            addEventListener: (_type: "abort", listener: () => void) => void listeners.push(listener),
          };
          resize.mockImplementationOnce(function (this: ReadAhead, size: number) {
            aborted = true;
            for (const l of listeners.splice(0)) l();
            realResize.call(this, size);
          });
          const code = await main(args, { stdout: () => {}, stderr: () => {} }, { root: ROOT, signal });
          expect(code).toBe(0);
          return deepen.mock.calls.map((c) => c[0]);
        };
        expect(await asked("stats", long)).toEqual([STATS_READS_AHEAD]);
        expect(await asked("stats", long, "--json")).toEqual([STATS_READS_AHEAD]);
        expect(await asked("dissect", long)).toEqual([2]);
        expect(await asked("dissect", long, "--json")).toEqual([2]);
        expect(await asked("stats", short)).toEqual([]);
        expect(await asked("stats", small)).toEqual([]);
      } finally {
        resize.mockRestore();
        deepen.mockRestore();
      }
    },
    120_000,
  );

  /** What `p.take` gave the run, call by call. */
  function adoption(p: Prefetch): (readonly unknown[] | undefined)[] {
    const taken: (readonly unknown[] | undefined)[] = [];
    const take = p.take.bind(p);
    p.take = (file, head) => {
      const reads = take(file, head);
      taken.push(reads);
      return reads;
    };
    return taken;
  }

  /** {@link runReads} with the default reads and `prefetch` as the process entry point passes it. */
  function runPrefetched(prefetch: Prefetch, ...args: string[]): Promise<Run> {
    return runIn({ prefetch }, ...args);
  }

  test.skipIf(process.platform === "win32")(
    "a named pipe given as the capture is read as a stream, with the same output",
    async () => {
      const { spawn, spawnSync } = await import("node:child_process");
      const file = QEMU + ".pcap";
      const fifo = path.join(TMP, "capture.fifo");
      spawnSync("mkfifo", [fifo]);
      const writer = spawn("sh", ["-c", 'cat "$1" > "$2"', "sh", file, fifo], { stdio: "ignore" });
      const written = new Promise((resolve) => writer.on("exit", resolve));
      const piped = await runReads(4096, "dissect", fifo, "--json");
      expect(await written).toBe(0);
      expect(piped).toEqual(await runReads(undefined, "dissect", file, "--json"));
    },
  );

  test("--count stops with a read under way; a directory is reported as before", async () => {
    const r = await runReads(4096, "dissect", QEMU + ".pcap", "--summary", "--count", "3");
    expect(r.code).toBe(0);
    expect(r.stdout.trimEnd().split("\n")).toHaveLength(3);
    const d = await runReads(undefined, "dissect", TMP);
    expect(d.code).toBe(2);
    expect(d.stdout).toBe("");
    expect(d.stderr).toBe(`nbd-codec: cannot read ${TMP}: EISDIR: illegal operation on a directory, read\n`);
  });
});

/** The classic pcap files `files` (one link type) as one: the first one's header, then every file's records. */
function concatPcaps(out: string, ...files: string[]): string {
  const parts = files.map((f, i) => {
    const b = new Uint8Array(fs.readFileSync(f));
    return i === 0 ? b : b.subarray(24);
  });
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) at += (all.set(p, at), p.length);
  fs.writeFileSync(out, all);
  return out;
}

describe("nbd-codec dissect and stats: long runs", () => {
  const LONG = writeTemp("long.pcap", manyPackets(WARM_PACKETS * 20));
  const MEDIUM = writeTemp("medium.pcap", manyPackets(WARM_PACKETS * 2));
  // More blocks that are no packets than the first headers a run reads (bin/_readahead.ts, sniffCapture),
  // then many small packets: the run starts cold, and its first chunk shows a long run.
  const HIDDEN = writeTemp(
    "hidden-long.pcapng",
    hex(
      shb(true) + block(true, 0x0bad, "").repeat(SNIFF_HEADERS + 20) + idb(true, 1) +
        epb(true, 0, 0n, "00".repeat(12) + "88b5").repeat(WARM_PACKETS * 20),
    ),
  );
  // Large packets first, as far as those first headers: a run predicted short that turns out long.
  const LATE = concatPcaps(
    path.join(TMP, "late-long.pcap"),
    writeTemp("late-big.pcap", manyPackets(24, 65536)),
    writeTemp("late-small.pcap", manyPackets(WARM_PACKETS * 20)),
  );

  /** How many times the run called cold(), warm() and short(), for files of at least `minBytes`. */
  async function calls(minBytes: number, ...args: string[]): Promise<[number, number, number]> {
    return await callsReading(undefined, minBytes, ...args);
  }
  async function callsReading(
    readSize: number | undefined,
    minBytes: number,
    ...args: string[]
  ): Promise<[number, number, number]> {
    let cold = 0;
    let warm = 0;
    let short = 0;
    const code = await main(args, { stdout: () => {}, stderr: () => {} }, {
      root: ROOT,
      ...(readSize === undefined ? {} : { readSize }),
      budget: {
        minBytes,
        cold: () => Promise.resolve(++cold > 0),
        warm: () => warm++,
        short: () => short++,
      },
    });
    expect(code).toBe(0);
    return [cold, warm, short];
  }
  const warmCalls = async (...args: string[]): Promise<number> => (await calls(0, ...args))[1];

  test("cold() comes before a capture file of minBytes or more, not before a smaller one", async () => {
    const size = fs.statSync(LATE).size;
    // short() after the first chunk (of large packets), warm() once the small ones came.
    expect(await calls(size, "dissect", LATE)).toEqual([1, 1, 1]);
    expect(await calls(size + 1, "dissect", LATE)).toEqual([0, 0, 0]);
    expect(await calls(size + 1, "stats", LATE)).toEqual([0, 0, 0]);
  });

  test("a capture file whose first headers predict a long run starts without cold(), and stays at V8's default", async () => {
    for (const command of ["dissect", "stats"]) {
      expect(await calls(0, command, LONG), command).toEqual([0, 0, 0]);
      // In chunks of 4 KiB too: the prediction reads the file's first headers itself.
      expect(await callsReading(4096, 0, command, LONG), command).toEqual([0, 0, 0]);
    }
  });

  test("short() comes once, after the first chunk, when a cold run will stay short; never for a long one", async () => {
    for (const command of ["dissect", "stats"]) {
      expect(await calls(0, command, MEDIUM), command).toEqual([1, 0, 1]);
      expect(await calls(0, command, CLEAN), command).toEqual([1, 0, 1]);
      expect(await calls(0, command, HIDDEN), command).toEqual([1, 1, 0]);
    }
    // Once, however many chunks come after the first.
    expect(fs.statSync(MEDIUM).size).toBeGreaterThan(8 * 4096);
    expect(await callsReading(4096, 0, "dissect", MEDIUM)).toEqual([1, 0, 1]);
    // Not cold (a file under minBytes): neither.
    expect(await calls(fs.statSync(MEDIUM).size + 1, "dissect", MEDIUM)).toEqual([0, 0, 0]);
  });

  test("warm() is called once when a capture that started cold holds many packets, for dissect and stats", async () => {
    expect(WARM_PACKETS * 20).toBeGreaterThanOrEqual(LONG_RUN_PACKETS);
    for (const file of [LATE, HIDDEN]) {
      expect(await warmCalls("dissect", file)).toBe(1);
      expect(await warmCalls("stats", file)).toBe(1);
    }
  });

  /** Standard output of `dissect FILE` (default text), with a budget whose cold() says the run starts cold. */
  async function dissectText(file: string, cold: boolean, readSize?: number): Promise<string> {
    let out = "";
    const code = await main(["dissect", file], { stdout: (t) => void (out += t), stderr: () => {} }, {
      root: ROOT,
      ...(readSize === undefined ? {} : { readSize }),
      ...(cold ? { budget: { minBytes: 0, cold: () => Promise.resolve(true), warm: () => {} } } : {}),
    });
    expect(code).toBe(0);
    return out;
  }

  test("a run that starts cold writes the same text (strings for a short run, the byte writer once long)", async () => {
    // Short runs stay cold to the end: their requests and simple replies go through formatEventText.
    for (const file of [QEMU + ".pcap", SIMPLE, CLEAN, ...RECORDED.map((c) => c.file)]) {
      const text = await dissectText(file, true);
      expect(text.length).toBeGreaterThan(0);
      expect(text, file).toBe(await dissectText(file, false));
    }
    // A long one (64 KiB WRITEs for its first 2 MB, so that its first headers predict a short run, then
    // about 24 000 packets of small WRITEs and their replies, read 256 KiB at a time) starts cold, turns long
    // and writes the rest with the byte writer: the text is the same across the change.
    const big = path.join(TMP, "big-writes.pcap");
    generate(big, 2e6);
    const small = path.join(TMP, "small-writes.pcap");
    const { packets } = generate(small, 3e6, 1448, 64);
    expect(packets).toBeGreaterThan(LONG_RUN_PACKETS);
    const long = concatPcaps(path.join(TMP, "big-then-small.pcap"), big, small);
    let cold = 0;
    let warm = 0;
    const code = await main(["dissect", long], { stdout: () => {}, stderr: () => {} }, {
      root: ROOT,
      readSize: 256 * 1024,
      budget: { minBytes: 0, cold: () => Promise.resolve(++cold > 0), warm: () => void warm++ },
    });
    expect([code, cold, warm]).toEqual([0, 1, 1]);
    const text = await dissectText(long, true, 256 * 1024);
    expect(text.match(/^Frame \d+ /gm)?.length).toBeGreaterThan(LONG_RUN_PACKETS);
    expect(text).toBe(await dissectText(long, false, 256 * 1024));
  });

  test("warm() is not called for a short capture, nor for one of fewer packets than a long run has", async () => {
    expect(WARM_PACKETS * 2).toBeLessThan(LONG_RUN_PACKETS);
    expect(await warmCalls("dissect", MEDIUM)).toBe(0);
    expect(await warmCalls("dissect", CLEAN)).toBe(0);
    expect(await warmCalls("stats", CLEAN)).toBe(0);
  });
});

describe("nbd-codec as a process", () => {
  const bytes = new Uint8Array(fs.readFileSync(SIMPLE));
  const ends = recordEnds(bytes);

  test(
    "a capture piped in pieces, with pauses: each packet's frames come out before the input ends",
    async () => {
      const c = await spawnCli(["dissect", "--summary"], "pipe");
      // Up to packet 10 and a few bytes of packet 11: the frames of packets 4 to 10 must come out while the
      // process waits for more.
      c.child.stdin!.write(bytes.subarray(0, ends[9]! + 5));
      await c.waitFor(/^10 .*NBD_REP_ACK to NBD_OPT_LIST\n/m);
      expect(c.out()).not.toMatch(/^12 /m);
      c.child.stdin!.write(bytes.subarray(ends[9]! + 5, ends[23]!));
      await c.waitFor(/^24 .*\[NBD_CMD_READ in 23, 0\.000211000 s\]\n/m);
      expect(c.out()).not.toMatch(/^25 /m);
      c.child.stdin!.end(bytes.subarray(ends[23]!));
      expect(await c.exited).toBe(0);
      expect(c.out().trimEnd().split("\n")).toHaveLength(30);
    },
    120_000,
  );

  test("SIGINT ends a live run after writing what was decoded, exit 0", async () => {
    const c = await spawnCli(["dissect", "-", "--summary"], "pipe");
    c.child.stdin!.write(bytes.subarray(0, ends[23]!));
    await c.waitFor(/^24 /m);
    process.kill(c.child.pid!, "SIGINT");
    expect(await c.exited).toBe(0);
    const lines = c.out().trimEnd().split("\n");
    expect(lines.at(-1)).toMatch(/^24 .*NBD_SIMPLE_REPLY cookie=1/);
    c.child.stdin!.destroy();
  }, 120_000);

  test("SIGTERM too", async () => {
    const c = await spawnCli(["dissect", "-", "--json"], "pipe");
    c.child.stdin!.write(bytes.subarray(0, ends[5]!));
    await c.waitFor(/"packet":6,/);
    process.kill(c.child.pid!, "SIGTERM");
    expect(await c.exited).toBe(0);
    c.child.stdin!.destroy();
  }, 120_000);

  test("without a capture and with standard input not readable (/dev/null), the bundled sample", async () => {
    const c = await spawnCli(["dissect", "--summary", "--count", "1"], "ignore");
    expect(await c.exited).toBe(0);
    expect(c.out()).toMatch(/^4 0\.000162000 127\.0\.0\.1:43703 → 127\.0\.0\.1:58156 newstyle greeting/);
  }, 120_000);
});

/**
 * Writes a synthetic NBD capture for the dissect benchmark: one newstyle connection (greeting, client
 * flags, NBD_OPT_GO with NBD_REP_INFO and NBD_REP_ACK) followed by NBD_CMD_WRITE requests (64 KiB by default), each
 * answered by a simple reply, then NBD_CMD_DISC; TCP over IPv4 over Ethernet, in pcap format. Streams to
 * the file, so any size can be written without holding it in memory.
 *
 * Usage: deno run -A bench/dissect/generate.ts OUT.pcap [SIZE_MB] [--mss N] [--write-size N] [--mixed]
 * (default 1024 MB, MSS 65483 as on Linux loopback, 65536-byte WRITEs; never commit the output).
 * `--mixed` writes {@link generateMixed}'s capture instead: several connections of mixed commands and sizes.
 *
 * @module
 */
import * as fs from "node:fs";
import process from "node:process";

const CLIENT_PORT = 41234;
const SERVER_PORT = 10809;

function hex(h: string): Uint8Array {
  const s = h.replace(/\s/g, "");
  return Uint8Array.from(s.match(/../g) ?? [], (x) => parseInt(x, 16));
}

/** One TCP connection's endpoints and next sequence numbers. */
interface Conn {
  /** Last byte of the client's address (10.0.0.N) and of its MAC address. */
  readonly host: number;
  readonly clientPort: number;
  readonly seq: { c2s: number; s2c: number };
}

function conn(host: number, clientPort: number): Conn {
  return { host, clientPort, seq: { c2s: 1000 * host, s2c: 900000 + host - 1 } };
}

/** Buffered pcap writer. */
class PcapWriter {
  readonly #fd: number;
  #buf = new Uint8Array(4 * 1024 * 1024);
  #len = 0;
  #conn: Conn = conn(1, CLIENT_PORT);
  #time = 0;
  bytes = 0;
  packets = 0;

  constructor(path: string) {
    this.#fd = fs.openSync(path, "w");
    this.#put(hex("d4c3b2a1 0200 0400 00000000 00000000 ffff0000 01000000"));
  }

  #put(b: Uint8Array): void {
    if (this.#len + b.length > this.#buf.length) this.#flush();
    if (b.length > this.#buf.length) {
      fs.writeSync(this.#fd, b);
      this.bytes += b.length;
      return;
    }
    this.#buf.set(b, this.#len);
    this.#len += b.length;
    this.bytes += b.length;
  }

  #flush(): void {
    let o = 0;
    while (o < this.#len) o += fs.writeSync(this.#fd, this.#buf, o, this.#len - o);
    this.#len = 0;
  }

  /** Makes `c` the connection of the next segments. */
  use(c: Conn): void {
    this.#conn = c;
  }

  /** One TCP segment; `flags` as in the TCP header. */
  segment(dir: "c2s" | "s2c", flags: number, payload: Uint8Array): void {
    const c = this.#conn;
    const len = 14 + 20 + 20 + payload.length;
    const h = new Uint8Array(16 + 54);
    const dv = new DataView(h.buffer);
    this.#time += 10;
    dv.setUint32(0, 1_700_000_000 + Math.floor(this.#time / 1e6), true);
    dv.setUint32(4, this.#time % 1e6, true);
    dv.setUint32(8, len, true);
    dv.setUint32(12, len, true);
    // Ethernet
    // The server is 10.0.0.2; the first client 10.0.0.1, further ones 10.0.0.3, .4, ...
    const client = c.host === 1 ? 1 : c.host + 1;
    h.set([2, 0, 0, 0, 0, dir === "c2s" ? 2 : client, 2, 0, 0, 0, 0, dir === "c2s" ? client : 2], 16);
    dv.setUint16(28, 0x0800);
    // IPv4
    const ip = 30;
    h[ip] = 0x45;
    dv.setUint16(ip + 2, 40 + payload.length);
    dv.setUint16(ip + 4, this.packets & 0xffff);
    dv.setUint16(ip + 6, 0x4000);
    h[ip + 8] = 64;
    h[ip + 9] = 6;
    h.set(dir === "c2s" ? [10, 0, 0, client, 10, 0, 0, 2] : [10, 0, 0, 2, 10, 0, 0, client], ip + 12);
    let sum = 0;
    for (let i = 0; i < 20; i += 2) sum += dv.getUint16(ip + i);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    dv.setUint16(ip + 10, ~sum & 0xffff);
    // TCP
    const tcp = ip + 20;
    dv.setUint16(tcp, dir === "c2s" ? c.clientPort : SERVER_PORT);
    dv.setUint16(tcp + 2, dir === "c2s" ? SERVER_PORT : c.clientPort);
    const other = dir === "c2s" ? "s2c" : "c2s";
    dv.setUint32(tcp + 4, c.seq[dir]);
    dv.setUint32(tcp + 8, flags & 0x10 ? c.seq[other] : 0);
    h[tcp + 12] = 0x50;
    h[tcp + 13] = flags;
    dv.setUint16(tcp + 14, 0xffff);
    this.#put(h);
    if (payload.length > 0) this.#put(payload);
    c.seq[dir] = (c.seq[dir] + payload.length + (flags & 0x03 ? 1 : 0)) >>> 0;
    this.packets++;
  }

  /** Bytes of one direction, cut into segments of at most `mss`. */
  send(dir: "c2s" | "s2c", bytes: Uint8Array, mss: number): void {
    for (let o = 0; o < bytes.length; o += mss) this.segment(dir, 0x18, bytes.subarray(o, o + mss));
  }

  close(): void {
    this.#flush();
    fs.closeSync(this.#fd);
  }
}

/** Writes the capture; returns its size in bytes and its packet count. */
export function generate(
  path: string,
  targetBytes: number,
  mss: number = 65483,
  writeSize: number = 64 * 1024,
): { bytes: number; packets: number } {
  const WRITE_SIZE = writeSize;
  const w = new PcapWriter(path);
  const SYN = 0x02, ACK = 0x10, FIN = 0x01;
  w.segment("c2s", SYN, new Uint8Array(0));
  w.segment("s2c", SYN | ACK, new Uint8Array(0));
  w.segment("c2s", ACK, new Uint8Array(0));
  w.send("s2c", hex("4E42444D41474943 49484156454F5054 0003"), mss);
  w.send("c2s", hex("00000003 49484156454F5054 00000007 00000006 00000000 0000"), mss);
  // NBD_INFO_EXPORT: 1 TiB, HAS_FLAGS | SEND_FLUSH | SEND_FUA; then NBD_REP_ACK.
  w.send(
    "s2c",
    hex(
      "0003E889045565A9 00000007 00000003 0000000C 0000 0000010000000000 000d" +
        "0003E889045565A9 00000007 00000001 00000000",
    ),
    mss,
  );
  const write = new Uint8Array(28 + WRITE_SIZE);
  const wdv = new DataView(write.buffer);
  wdv.setUint32(0, 0x25609513);
  wdv.setUint16(6, 1); // NBD_CMD_WRITE
  wdv.setUint32(24, WRITE_SIZE);
  for (let i = 28; i < write.length; i++) write[i] = (i * 31) & 0xff;
  const reply = new Uint8Array(16);
  const rdv = new DataView(reply.buffer);
  rdv.setUint32(0, 0x67446698);
  const exportBlocks = 2 ** 40 / WRITE_SIZE;
  for (let i = 1; w.bytes < targetBytes; i++) {
    wdv.setUint32(12, i); // cookie
    const offset = (i % exportBlocks) * WRITE_SIZE;
    wdv.setUint32(16, Math.floor(offset / 2 ** 32));
    wdv.setUint32(20, offset % 2 ** 32);
    w.send("c2s", write, mss);
    rdv.setUint32(12, i);
    w.send("s2c", reply, mss);
  }
  w.send("c2s", hex("25609513 0000 0002 0000000000000000 0000000000000000 00000000"), mss);
  w.segment("c2s", FIN | ACK, new Uint8Array(0));
  w.segment("s2c", FIN | ACK, new Uint8Array(0));
  w.close();
  return { bytes: w.bytes, packets: w.packets };
}

/** A small deterministic PRNG (mulberry32), so that every run writes the same capture. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function u32be(v: number): Uint8Array {
  return Uint8Array.of(v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
}

function cat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function option(opt: number, data: Uint8Array): Uint8Array {
  return cat(hex("49484156454F5054"), u32be(opt), u32be(data.length), data);
}

function optionReply(opt: number, reply: number, data: Uint8Array): Uint8Array {
  return cat(hex("0003E889045565A9"), u32be(opt), u32be(reply), u32be(data.length), data);
}

/** Transfer sizes of the mixed capture, 4 KiB to 1 MiB, small ones the most frequent (as in real I/O). */
const MIXED_SIZES = [4096, 4096, 4096, 8192, 16384, 32768, 65536, 65536, 131072, 262144, 524288, 1048576];

/**
 * Writes a capture that looks like real traffic: `connections` newstyle connections over Ethernet (1448-byte
 * segments), each negotiating structured replies and `base:allocation` (NBD_OPT_STRUCTURED_REPLY,
 * NBD_OPT_SET_META_CONTEXT, NBD_OPT_GO), then interleaved commands: READ (answered by an OFFSET_DATA chunk),
 * WRITE (simple reply), BLOCK_STATUS (a BLOCK_STATUS chunk with 4 extents), FLUSH, of 4 KiB to 1 MiB; then
 * NBD_CMD_DISC and FIN. Returns its size in bytes, packet count and command count.
 */
export function generateMixed(
  path: string,
  targetBytes: number,
  connections: number = 3,
): { bytes: number; packets: number; commands: number } {
  const MSS = 1448;
  const random = rng(0x6e6264);
  const w = new PcapWriter(path);
  const SYN = 0x02, ACK = 0x10, FIN = 0x01;
  const conns: Conn[] = [];
  const cookies: number[] = [];
  const data = new Uint8Array(1048576);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >>> 12)) & 0xff;
  const name = new TextEncoder().encode("base:allocation");
  for (let k = 0; k < connections; k++) {
    const c = conn(k + 1, CLIENT_PORT + k);
    conns.push(c);
    cookies.push(0);
    w.use(c);
    w.segment("c2s", SYN, new Uint8Array(0));
    w.segment("s2c", SYN | ACK, new Uint8Array(0));
    w.segment("c2s", ACK, new Uint8Array(0));
    w.send("s2c", hex("4E42444D41474943 49484156454F5054 0003"), MSS);
    w.send("c2s", cat(u32be(3), option(8, new Uint8Array(0))), MSS); // flags, NBD_OPT_STRUCTURED_REPLY
    w.send("s2c", optionReply(8, 1, new Uint8Array(0)), MSS);
    // NBD_OPT_SET_META_CONTEXT: export "", one query "base:allocation"; NBD_REP_META_CONTEXT id 1, ACK.
    w.send("c2s", option(10, cat(u32be(0), u32be(1), u32be(name.length), name)), MSS);
    w.send(
      "s2c",
      cat(optionReply(10, 4, cat(u32be(1), name)), optionReply(10, 1, new Uint8Array(0))),
      MSS,
    );
    w.send("c2s", option(7, hex("00000000 0000")), MSS); // NBD_OPT_GO, export "", no info requests
    // NBD_INFO_EXPORT: 1 TiB, HAS_FLAGS | SEND_FLUSH | SEND_FUA | SEND_DF; then NBD_REP_ACK.
    w.send(
      "s2c",
      cat(optionReply(7, 3, hex("0000 0000010000000000 008d")), optionReply(7, 1, new Uint8Array(0))),
      MSS,
    );
  }
  let commands = 0;
  const header = new Uint8Array(28);
  const hdv = new DataView(header.buffer);
  hdv.setUint32(0, 0x25609513);
  while (w.bytes < targetBytes) {
    const k = Math.floor(random() * connections);
    const c = conns[k]!;
    w.use(c);
    const cookie = ++cookies[k]!;
    const size = MIXED_SIZES[Math.floor(random() * MIXED_SIZES.length)]!;
    const offset = Math.floor(random() * 2 ** 20) * 4096;
    const r = random();
    const command = r < 0.45 ? 0 : r < 0.85 ? 1 : r < 0.95 ? 7 : 3; // READ, WRITE, BLOCK_STATUS, FLUSH
    hdv.setUint16(4, 0);
    hdv.setUint16(6, command);
    hdv.setUint32(8, 0);
    hdv.setUint32(12, cookie);
    hdv.setUint32(16, command === 3 ? 0 : Math.floor(offset / 2 ** 32));
    hdv.setUint32(20, command === 3 ? 0 : offset % 2 ** 32);
    hdv.setUint32(24, command === 3 ? 0 : size);
    const payload = data.subarray(0, size);
    w.send("c2s", command === 1 ? cat(header, payload) : header.slice(), MSS);
    const simple = cat(hex("67446698 00000000 00000000"), u32be(cookie));
    if (command === 0) {
      // NBD_REPLY_TYPE_OFFSET_DATA, NBD_REPLY_FLAG_DONE.
      const chunk = cat(
        hex("668E33EF 0001 0001 00000000"),
        u32be(cookie),
        u32be(8 + size),
        u32be(Math.floor(offset / 2 ** 32)),
        u32be(offset % 2 ** 32),
        payload,
      );
      w.send("s2c", chunk, MSS);
    } else if (command === 7) {
      // NBD_REPLY_TYPE_BLOCK_STATUS for context 1: data, hole+zero, data, zero.
      const q = size / 4;
      const extents = cat(u32be(q), u32be(0), u32be(q), u32be(3), u32be(q), u32be(0), u32be(q), u32be(2));
      w.send(
        "s2c",
        cat(hex("668E33EF 0001 0005 00000000"), u32be(cookie), u32be(4 + 32), u32be(1), extents),
        MSS,
      );
    } else {
      w.send("s2c", simple, MSS);
    }
    commands++;
  }
  for (let k = 0; k < connections; k++) {
    const c = conns[k]!;
    w.use(c);
    w.send("c2s", hex("25609513 0000 0002 0000000000000000 0000000000000000 00000000"), MSS);
    w.segment("c2s", FIN | ACK, new Uint8Array(0));
    w.segment("s2c", FIN | ACK, new Uint8Array(0));
  }
  w.close();
  return { bytes: w.bytes, packets: w.packets, commands };
}

if ((import.meta as { main?: boolean }).main) {
  const args = process.argv.slice(2);
  let mss = 65483;
  let writeSize = 64 * 1024;
  const i = args.indexOf("--mss");
  if (i >= 0) {
    mss = Number(args[i + 1]);
    args.splice(i, 2);
  }
  const j = args.indexOf("--write-size");
  if (j >= 0) {
    writeSize = Number(args[j + 1]);
    args.splice(j, 2);
  }
  const mixed = args.indexOf("--mixed");
  if (mixed >= 0) args.splice(mixed, 1);
  const [out, sizeMb = "1024"] = args;
  if (out === undefined) {
    process.stderr.write("usage: generate.ts OUT.pcap [SIZE_MB] [--mss N] [--write-size N] [--mixed]\n");
    process.exit(2);
  }
  const r = mixed >= 0
    ? generateMixed(out, Number(sizeMb) * 1e6)
    : generate(out, Number(sizeMb) * 1e6, mss, writeSize);
  process.stdout.write(`${out}: ${(r.bytes / 1e6).toFixed(1)} MB, ${r.packets} packets\n`);
}

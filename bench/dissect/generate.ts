/**
 * Writes a synthetic NBD capture for the dissect benchmark: one newstyle connection (greeting, client
 * flags, NBD_OPT_GO with NBD_REP_INFO and NBD_REP_ACK) followed by NBD_CMD_WRITE requests (64 KiB by default), each
 * answered by a simple reply, then NBD_CMD_DISC; TCP over IPv4 over Ethernet, in pcap format. Streams to
 * the file, so any size can be written without holding it in memory.
 *
 * Usage: deno run -A bench/dissect/generate.ts OUT.pcap [SIZE_MB] [--mss N] [--write-size N]
 * (default 1024 MB, MSS 65483 as on Linux loopback, 65536-byte WRITEs; never commit the output).
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

/** Buffered pcap writer. */
class PcapWriter {
  readonly #fd: number;
  #buf = new Uint8Array(4 * 1024 * 1024);
  #len = 0;
  #seq = { c2s: 1000, s2c: 900000 };
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

  /** One TCP segment; `flags` as in the TCP header. */
  segment(dir: "c2s" | "s2c", flags: number, payload: Uint8Array): void {
    const len = 14 + 20 + 20 + payload.length;
    const h = new Uint8Array(16 + 54);
    const dv = new DataView(h.buffer);
    this.#time += 10;
    dv.setUint32(0, 1_700_000_000 + Math.floor(this.#time / 1e6), true);
    dv.setUint32(4, this.#time % 1e6, true);
    dv.setUint32(8, len, true);
    dv.setUint32(12, len, true);
    // Ethernet
    h.set([2, 0, 0, 0, 0, dir === "c2s" ? 2 : 1, 2, 0, 0, 0, 0, dir === "c2s" ? 1 : 2], 16);
    dv.setUint16(28, 0x0800);
    // IPv4
    const ip = 30;
    h[ip] = 0x45;
    dv.setUint16(ip + 2, 40 + payload.length);
    dv.setUint16(ip + 4, this.packets & 0xffff);
    dv.setUint16(ip + 6, 0x4000);
    h[ip + 8] = 64;
    h[ip + 9] = 6;
    h.set(dir === "c2s" ? [10, 0, 0, 1, 10, 0, 0, 2] : [10, 0, 0, 2, 10, 0, 0, 1], ip + 12);
    let sum = 0;
    for (let i = 0; i < 20; i += 2) sum += dv.getUint16(ip + i);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    dv.setUint16(ip + 10, ~sum & 0xffff);
    // TCP
    const tcp = ip + 20;
    dv.setUint16(tcp, dir === "c2s" ? CLIENT_PORT : SERVER_PORT);
    dv.setUint16(tcp + 2, dir === "c2s" ? SERVER_PORT : CLIENT_PORT);
    const other = dir === "c2s" ? "s2c" : "c2s";
    dv.setUint32(tcp + 4, this.#seq[dir]);
    dv.setUint32(tcp + 8, flags & 0x10 ? this.#seq[other] : 0);
    h[tcp + 12] = 0x50;
    h[tcp + 13] = flags;
    dv.setUint16(tcp + 14, 0xffff);
    this.#put(h);
    if (payload.length > 0) this.#put(payload);
    this.#seq[dir] = (this.#seq[dir] + payload.length + (flags & 0x03 ? 1 : 0)) >>> 0;
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
  const [out, sizeMb = "1024"] = args;
  if (out === undefined) {
    process.stderr.write("usage: generate.ts OUT.pcap [SIZE_MB] [--mss N] [--write-size N]\n");
    process.exit(2);
  }
  const r = generate(out, Number(sizeMb) * 1e6, mss, writeSize);
  process.stdout.write(`${out}: ${(r.bytes / 1e6).toFixed(1)} MB, ${r.packets} packets\n`);
}

// Does the plain-request fast path (codec/_request_plain.ts) pay? Paired, interleaved timing in one process
// (bench/_harness.ts) of each fast path against the general path it mirrors, over a mix of real request
// headers (READ 4 KiB, compact WRITE header, TRIM, CACHE, BLOCK_STATUS, WRITE_ZEROES with FUA).
//
//   deno run -A --v8-flags=--expose-gc bench/request_plain.ts
//
// 1. A header check with plainHeader() first and checkHeader() only when it says "not plain", against
//    checkHeader() for every header (what decodeRequest does: the first measured no clear gain, 0.7-2x of
//    about 10 ns in a decode of 120-300 ns, so decodeRequest no longer tests plainHeader() first).
// 2. The stream decoders' frame: plainHeader() + the fields + plainRequest() (what _stream_impl.ts does for a
//    plain header it has framed), against decodeRequest() on the same bytes (its general path).
import process from "node:process";
import { Reporter } from "../codec/_report.ts";
import { checkHeader, plainHeader, plainRequest } from "../codec/_request_plain.ts";
import { decodeRequest } from "../mod.ts";
import { DEFAULT_TIMING, timePairs } from "./_harness.ts";

function header(flags: number, command: number, offset: number, length: number): Uint8Array {
  const b = new Uint8Array(28);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 0x25609513);
  dv.setUint16(4, flags);
  dv.setUint16(6, command);
  dv.setUint32(12, 7);
  dv.setUint32(20, offset);
  dv.setUint32(24, length);
  return b;
}

const HEADERS = [
  header(0, 0, 4096, 4096), // READ
  header(0, 4, 8192, 65536), // TRIM
  header(0, 5, 0, 1 << 20), // CACHE
  header(0, 7, 0, 1 << 30), // BLOCK_STATUS
  header(1, 6, 512, 4096), // WRITE_ZEROES | FUA
  header(0, 0, 0, 512), // READ
];
// The WRITE header alone (its data would follow): decodeRequest would wait for the data, so only pair 1.
const WITH_WRITE = [...HEADERS, header(0, 1, 0, 4096)];
const VIEWS = WITH_WRITE.map((b) => new DataView(b.buffer));
const FIELDS = WITH_WRITE.map((b) => {
  const dv = new DataView(b.buffer);
  return { flags: dv.getUint16(4), command: dv.getUint16(6) };
});
const STRICT = new Reporter(true);

function checkFast(n: number): number {
  let x = 0;
  for (let i = 0; i < n; i++) {
    const k = i % VIEWS.length;
    const { flags, command } = FIELDS[k]!;
    if (!plainHeader(false, flags, command, false)) {
      checkHeader(VIEWS[k]!, 0, 0, false, flags, command, STRICT, false);
    }
    x += command;
  }
  return x;
}

function checkGeneral(n: number): number {
  let x = 0;
  for (let i = 0; i < n; i++) {
    const k = i % VIEWS.length;
    const { flags, command } = FIELDS[k]!;
    checkHeader(VIEWS[k]!, 0, 0, false, flags, command, STRICT, false);
    x += command;
  }
  return x;
}

const OPTIONS = { extendedHeaders: false };

function frameFast(n: number): number {
  let x = 0;
  for (let i = 0; i < n; i++) {
    const b = HEADERS[i % HEADERS.length]!;
    const dv = VIEWS[i % HEADERS.length]!;
    const flags = dv.getUint16(4);
    const command = dv.getUint16(6);
    if (!plainHeader(false, flags, command, false)) throw new Error("not plain");
    const f = plainRequest(
      false,
      flags,
      command,
      dv.getBigUint64(8),
      dv.getBigUint64(16),
      BigInt(dv.getUint32(24)),
      undefined,
    );
    x += f.command + b.length;
  }
  return x;
}

function frameGeneral(n: number): number {
  let x = 0;
  for (let i = 0; i < n; i++) {
    const b = HEADERS[i % HEADERS.length]!;
    const r = decodeRequest(b, OPTIONS);
    if (r.done) x += r.frame.command + r.byteLength;
  }
  return x;
}

const quick = process.argv.includes("--quick");
const timing = quick ? { ...DEFAULT_TIMING, rounds: 4 } : DEFAULT_TIMING;
const [check, frame] = await timePairs([
  { a: checkFast, b: checkGeneral },
  { a: frameFast, b: frameGeneral },
], timing);
const row = (name: string, t: { aNs: number; bNs: number }): string =>
  `${name}: fast ${t.aNs.toFixed(1)} ns, general ${t.bNs.toFixed(1)} ns, general/fast ${
    (t.bNs / t.aNs).toFixed(2)
  }x`;
console.log(row("header check (plainHeader then checkHeader vs checkHeader)", check!));
console.log(row("stream frame (plainHeader + plainRequest vs decodeRequest)", frame!));

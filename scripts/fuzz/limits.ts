// Fuzz target of the documented memory limits. Each input picks a scenario and its numbers (a length field,
// a direction, a chunk size); the scenario then streams several MiB through a decoder with a small limit
// and measures what the decoder still holds once the garbage collector has run: it must stay within the
// limit plus a fixed slack, whatever the length fields announce.
//
//  - stream: a frame announcing 2^32-1, 2^64-1 or just over the limit, then megabytes of its "payload";
//  - conversation: one side only (the other silent), megabytes of frames that wait for it;
//  - capture: pcap and pcapng records announcing huge lengths, with an absurd snap length;
//  - tcp: segments whose sequence numbers jump ahead, megabytes of out-of-order data.
import process from "node:process";
import v8 from "node:v8";
import vm from "node:vm";
import { ClientStreamDecoder, ConversationDecoder, ServerStreamDecoder } from "../../mod.ts";
import { type CapturePacket, CaptureReader, TcpReassembler } from "../../trace.ts";
import { fromHex, guard, Violation } from "./check.ts";
import { Rng } from "./mutate.ts";

/** The limit the scenarios set (maxBufferedBytes, maxRecordLength, maxOutOfOrderBytes). */
export const LIMIT: number = 1 << 20;
/** What may be held beyond the limit: one chunk, bookkeeping, the test's own arrays. */
export const SLACK: number = 3 << 20;
/** Bytes streamed per scenario. */
const VOLUME = 12 << 20;

/** The garbage collector, exposed (node --expose-gc), or made reachable through a fresh V8 context. */
const gc: (() => void) | undefined = (() => {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === "function") return g;
  try {
    v8.setFlagsFromString("--expose-gc");
    const f = vm.runInNewContext("gc") as unknown;
    return typeof f === "function" ? f as () => void : undefined;
  } catch {
    return undefined;
  }
})();

/** True when the runtime lets the fuzzer collect garbage, so that what a decoder holds can be measured. */
export function canMeasure(): boolean {
  return typeof gc === "function";
}

function retained(): number {
  // Twice: one collection may leave what the first freed for the next (V8's young generation, finalizers).
  gc!();
  gc!();
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}

function u32be(v: number): string {
  return (v >>> 0).toString(16).padStart(8, "0");
}

function u64be(v: bigint): string {
  return v.toString(16).padStart(16, "0");
}

const HUGE32 = [0xffffffff, 0x80000000, LIMIT + 1, 0x4000001, LIMIT * 4];
const HUGE64 = [0xffffffffffffffffn, 0x100000000n, BigInt(LIMIT + 1), 0x7fffffffffffffffn, 64n << 20n];

/** Scenarios, each returning a description; they throw Violation when the limit does not hold. */
const SCENARIOS: readonly ((rng: Rng) => string)[] = [
  function streamHugeLength(rng) {
    const kind = rng.below(5);
    const l32 = rng.pick(HUGE32);
    const l64 = rng.pick(HUGE64);
    let head: string;
    let server: boolean;
    let state: Record<string, unknown>;
    if (kind === 0) { // compact WRITE
      head = "25609513" + "0000" + "0001" + "0000000000000001" + "0000000000000000" + u32be(l32);
      server = false;
      state = { phase: "transmission", style: "newstyle" };
    } else if (kind === 1) { // extended WRITE with PAYLOAD_LEN
      head = "21e41c71" + "0020" + "0001" + "0000000000000001" + "0000000000000000" + u64be(l64);
      server = false;
      state = { phase: "transmission", style: "newstyle", extendedHeaders: true, structuredReplies: true };
    } else if (kind === 2) { // option request
      head = "49484156454f5054" + "00000007" + u32be(l32);
      server = false;
      state = { phase: "options", style: "newstyle", handshakeFlags: 3, clientFlags: 3 };
    } else if (kind === 3) { // extended reply chunk OFFSET_DATA
      head = "6e8a278c" + "0000" + "0001" + "0000000000000001" + "0000000000000000" + u64be(l64) +
        "0000000000000000";
      server = true;
      state = { phase: "transmission", style: "newstyle", extendedHeaders: true, structuredReplies: true };
    } else { // structured reply chunk OFFSET_DATA
      head = "668e33ef" + "0000" + "0001" + "0000000000000001" + u32be(l32) + "0000000000000000";
      server = true;
      state = { phase: "transmission", style: "newstyle", structuredReplies: true };
    }
    const payloadViews = rng.oneIn(2);
    const opts = { maxBufferedBytes: LIMIT, payloadViews, state };
    const d = server ? new ServerStreamDecoder(opts) : new ClientStreamDecoder(opts);
    const what = `${
      server ? "server" : "client"
    } stream, frame kind ${kind}, lengths ${l32}/${l64}, payloadViews ${payloadViews}`;
    feed(what, rng, (c) => void d.push(c), fromHex(head));
    d.end();
    return what;
  },
  function conversationOneSided(rng) {
    const side = rng.below(3);
    const d = new ConversationDecoder({ maxBufferedBytes: LIMIT, payloadViews: rng.oneIn(2) });
    let what: string;
    if (side === 0) {
      // A server greeting, then option replies to options nobody sent (the client side is silent).
      d.push("s2c", fromHex("4e42444d4147494349484156454f50540003"));
      const reply = fromHex("0003e889045565a9" + "00000007" + "00000001" + "00000000");
      what = "conversation: option replies, client silent";
      feed(what, rng, (c) => void d.push("s2c", c), new Uint8Array(0), reply);
    } else if (side === 1) {
      // Transmission: simple replies whose requests were never seen.
      d.push("s2c", fromHex("4e42444d4147494349484156454f50540003"));
      const reply = fromHex("67446698" + "00000000" + "0000000000000007");
      what = "conversation: simple replies, client silent";
      feed(what, rng, (c) => void d.push("s2c", c), new Uint8Array(0), reply);
    } else {
      // The client talks, the server says nothing (its greeting lost).
      const req = fromHex(
        "25609513" + "0000" + "0000" + "0000000000000001" + "0000000000000000" + "00001000",
      );
      what = "conversation: client requests, server silent";
      feed(what, rng, (c) => void d.push("c2s", c), fromHex("00000003"), req);
    }
    d.end();
    return what;
  },
  function captureHugeRecords(rng) {
    const pcapng = rng.oneIn(2);
    const reader = new CaptureReader({ maxRecordLength: LIMIT, strict: false });
    let head: string;
    let record: string;
    const len = rng.pick([LIMIT - 16, LIMIT, LIMIT + 1, 0x7fffffff, 0xffffffff, 65536]);
    if (!pcapng) {
      head = "a1b2c3d4" + "0002" + "0004" + "00000000" + "00000000" + "ffffffff" + "00000001";
      record = "00000001" + "00000000" + u32be(len) + u32be(len);
    } else {
      head = "0a0d0d0a" + "0000001c" + "1a2b3c4d" + "0001" + "0000" + "ffffffffffffffff" + "0000001c" +
        "00000001" + "00000014" + "0001" + "0000" + "ffffffff" + "00000014";
      record = "00000006" + u32be(len & ~3) + "00000000" + "00000000" + "00000000" + u32be(len) + u32be(len);
    }
    const what = `${pcapng ? "pcapng" : "pcap"} record announcing ${len} bytes`;
    // A record over the limit is refused (an NbdDecodeError, which guard() lets through): fine, if nothing
    // was allocated for it first.
    feed(what, rng, (c) => void reader.push(c), fromHex(head + record));
    reader.end();
    return what;
  },
  function tcpSequenceJumps(rng) {
    const tcp = new TcpReassembler({ maxOutOfOrderBytes: LIMIT });
    const jump = rng.pick([1460, 65536, 1 << 20, 1 << 24, 0x3fffffff]);
    let seq = 1000;
    let index = 0;
    const what = `tcp: segments jumping ${jump} ahead`;
    const base = retained();
    let peak = 0;
    for (let sent = 0; sent < VOLUME; sent += 1400) {
      const data = new Uint8Array(40 + 1400);
      data.set(
        fromHex(
          "450005c800010000400600007f0000017f000001" + "c0002a39" + u32be(seq) + "00000000" +
            "5018ffff00000000",
        ),
      );
      data.fill(0x41, 40);
      const p: CapturePacket = {
        index: index++,
        offset: 0,
        dataOffset: 0,
        interfaceId: 0,
        linkType: 101,
        seconds: 0,
        nanoseconds: 0,
        originalLength: data.length,
        data,
      };
      tcp.push(p);
      seq = (seq + jump + (index % 2 === 0 ? 1400 : 0)) >>> 0;
      if (index % 2048 === 0) peak = Math.max(peak, retained() - base);
    }
    tcp.end();
    limitHolds(what, peak);
    return what;
  },
  function readReplyWithViews(rng) {
    // A READ of up to 2^32-1 (compact) or 2^64-1 bytes (extended), then its simple reply's data: with
    // payload views (as dissect decodes) nothing is copied, but the views hold every chunk.
    const extended = rng.oneIn(2);
    const len = extended ? u64be(rng.pick(HUGE64)) : u32be(rng.pick(HUGE32));
    const d = new ConversationDecoder({
      maxBufferedBytes: LIMIT,
      payloadViews: rng.oneIn(4) ? false : true,
      state: {
        phase: "transmission",
        style: "newstyle",
        extendedHeaders: extended,
        structuredReplies: extended,
      },
    });
    d.push(
      "c2s",
      fromHex(
        (extended ? "21e41c71" : "25609513") + "0000" + "0000" + "0000000000000007" + "0000000000000000" +
          len,
      ),
    );
    const what = `conversation: a simple reply to a READ of ${extended ? "2^64-scale" : "2^32-scale"} length`;
    feed(what, rng, (c) => void d.push("s2c", c), fromHex("67446698" + "00000000" + "0000000000000007"));
    d.end();
    return what;
  },
];

function limitHolds(what: string, held: number): void {
  if (held > LIMIT + SLACK) {
    throw new Violation(
      "memory-limit",
      `${what}: ${(held / 2 ** 20).toFixed(1)} MiB held with a limit of ${LIMIT / 2 ** 20} MiB`,
    );
  }
}

/**
 * Streams {@link VOLUME} bytes: `head`, then `unit` repeated (or filler), in fresh chunks of a random size,
 * measuring what is still held now and then.
 */
function feed(
  what: string,
  rng: Rng,
  push: (c: Uint8Array) => void,
  head: Uint8Array,
  unit?: Uint8Array,
): void {
  const size = rng.pick([1000, 4096, 65536, 300000]);
  const base = retained();
  let peak = 0;
  push(head);
  let k = 0;
  for (let sent = 0; sent < VOLUME; sent += size) {
    const c = new Uint8Array(size);
    if (unit !== undefined) { for (let i = 0; i < size; i++) c[i] = unit[(sent + i) % unit.length]!; }
    else c.fill(0x41);
    push(c);
    if (++k % Math.max(1, Math.floor((2 << 20) / size)) === 0) peak = Math.max(peak, retained() - base);
  }
  peak = Math.max(peak, retained() - base);
  limitHolds(what, peak);
}

/**
 * One scenario, chosen by the input's first byte (new scenarios go at the end of the list, so that saved
 * inputs keep their scenario) and parametrised by the others.
 */
export function checkLimits(input: Uint8Array, features: Set<string>): void {
  if (!canMeasure() || input.length === 0) return;
  let seed = 0;
  for (const x of input.subarray(1)) seed = Math.imul(seed ^ x, 0x01000193) >>> 0;
  const rng = new Rng(seed);
  const scenario = SCENARIOS[input[0]! % SCENARIOS.length]!;
  const r = guard("limits", VOLUME, Number.MAX_SAFE_INTEGER, () => scenario(rng));
  if (r.ok) features.add(`limits:${r.value.replace(/[0-9]+/g, "N")}`);
}

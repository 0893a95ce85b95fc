/**
 * Client session overhead: issuing a 4 KiB READ and completing it through {@link ClientSession} (request
 * checked and encoded, reply framed, checked and assembled into the caller's buffer) against the raw codec
 * calls that do the same work (encode the request, decode the reply frame, copy the data into the same
 * buffer), side by side in one process with the shared paired-timing harness. Goal: at most 1.5x.
 *
 * ```sh
 * npx deno run -A --v8-flags=--expose-gc bench/client_session.ts
 * node --expose-gc node_modules/vite-node/vite-node.mjs bench/client_session.ts
 * ```
 *
 * @module
 */
import process from "node:process";
import {
  ClientSession,
  Command,
  decodeReplyChunk,
  decodeSimpleReply,
  encodeRequest,
  encodeRequestInto,
  type Request,
  TransmissionFlag as TF,
} from "../mod.ts";
import { median, timePairs } from "./_harness.ts";

const hex = (s: string): Uint8Array => Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));
const u16 = (n: number): string => n.toString(16).padStart(4, "0");
const u32 = (n: number): string => n.toString(16).padStart(8, "0");
const u64 = (n: number): string => n.toString(16).padStart(16, "0");
const FLAGS = TF.HAS_FLAGS | TF.SEND_FLUSH | TF.SEND_FUA | TF.SEND_DF;
const LEN = 4096;
const DATA = "ab".repeat(LEN);

type Mode = "simple" | "structured" | "extended";

/** A session in transmission after a hand-written handshake (fixed newstyle, GO with NBD_INFO_EXPORT). */
function session(mode: Mode): ClientSession {
  const reply = (opt: number, type: number, data = "") =>
    "0003e889045565a9" + u32(opt) + u32(type) + u32(data.length / 2) + data;
  const s = new ClientSession({ go: {} });
  let bytes = "4e42444d41474943" + "49484156454f5054" + u16(3);
  bytes += mode === "extended"
    ? reply(11, 1)
    : reply(11, 0x80000001) + reply(8, mode === "structured" ? 1 : 0x80000001);
  bytes += reply(7, 3, u16(0) + u64(1 << 30) + u16(FLAGS)) + reply(7, 1);
  s.receive(hex(bytes));
  s.takeOutput();
  if (s.state.phase !== "transmission" || s.state.replyMode !== mode) {
    throw new Error(`setup failed (${mode})`);
  }
  return s;
}

/** The server's reply to READ cookie 1 at offset 0: one data chunk with DONE, or a simple reply. */
function replyBytes(mode: Mode): Uint8Array {
  const payload = u64(0) + DATA;
  if (mode === "simple") return hex("67446698" + u32(0) + u64(1) + DATA);
  if (mode === "structured") {
    return hex("668e33ef" + u16(1) + u16(1) + u64(1) + u32(payload.length / 2) + payload);
  }
  return hex("6e8a278c" + u16(1) + u16(1) + u64(1) + u64(0) + u64(payload.length / 2) + payload);
}

/**
 * How the raw side encodes each request header:
 * - `reused`: `encodeRequestInto` one reused array, the lower bound (the gate). A transport cannot really do
 *   this: a socket keeps the array it was given until it is sent.
 * - `slab`: `encodeRequestInto` a 16 KiB slab and a view of the header handed out per request, never written
 *   again: what the session does for its output, written with the raw calls (the same work).
 * - `new`: `encodeRequest`, a new array (and its DataView) per request.
 */
type Encoding = "reused" | "slab" | "new";

const ENCODING_NAMES: Record<Encoding, string> = {
  reused: "encodeRequestInto (reused array)",
  slab: "encodeRequestInto (slab, a view per request)",
  new: "encodeRequest (new array)",
};

/** The pair for one reply style and one raw header encoding. */
function plans(mode: Mode, encoding: Encoding) {
  const s = session(mode);
  const reply = replyBytes(mode);
  const buffer = new Uint8Array(LEN);
  // The session's own cookies: the lowest free one, so cookie 1 again for each READ (the reply's).
  const opts = { buffer };
  const viaSession = (n: number): number => {
    let x = 0;
    for (let i = 0; i < n; i++) {
      s.read(0, LEN, opts);
      x += s.takeOutput()[0]!.length;
      const ev = s.receive(reply);
      x += ev.length;
    }
    return x + buffer[7]!;
  };
  const extended = mode === "extended";
  const header = new Uint8Array(32);
  const chunkOptions = { extendedHeaders: extended };
  const simpleOptions = { readLength: LEN };
  const SLAB = 16384;
  let slab = new Uint8Array(SLAB);
  let slabAt = 0;
  const raw = (n: number): number => {
    let x = 0;
    for (let i = 0; i < n; i++) {
      const req: Request = {
        type: "request",
        extended,
        flags: 0,
        command: Command.READ,
        cookie: 1n,
        offset: 0n,
        length: BigInt(LEN),
      };
      if (encoding === "reused") x += encodeRequestInto(req, header, 0);
      else if (encoding === "new") x += encodeRequest(req).length;
      else {
        if (slabAt + 32 > SLAB) {
          slab = new Uint8Array(SLAB);
          slabAt = 0;
        }
        const len = encodeRequestInto(req, slab, slabAt);
        x += new Uint8Array(slab.buffer, slabAt, len).length;
        slabAt += len;
      }
      if (mode === "simple") {
        const r = decodeSimpleReply(reply, simpleOptions);
        if (r.done && r.frame.data !== undefined) buffer.set(r.frame.data, 0);
      } else {
        const r = decodeReplyChunk(reply, chunkOptions);
        if (r.done && r.frame.payload.kind === "offset-data") buffer.set(r.frame.payload.data, 0);
      }
    }
    return x + buffer[7]!;
  };
  // Sanity: the session assembles the data.
  viaSession(1);
  if (buffer[0] !== 0xab || s.findings.length > 0) {
    throw new Error(`the session did not complete the READ (${mode})`);
  }
  return { a: viaSession, b: raw };
}

const modes: Mode[] = ["structured", "extended", "simple"];
// Other tenants' load comes in bursts that slow whichever side is sampled then: many short rounds, and
// besides the harness's lower quartile of all samples, the fastest round's median of each side (noise
// only ever adds time).
const rounds = Number(process.argv.find((a) => a.startsWith("--rounds="))?.slice(9) ?? 40);
const encodings: Encoding[] = ["reused", "slab", "new"];
const variants = encodings.flatMap((encoding) => modes.map((m) => ({ mode: m, encoding })));
const timings = await timePairs(variants.map((v) => plans(v.mode, v.encoding)), {
  batchMs: 2,
  rounds,
  roundMs: 30,
});
const runtime = typeof (globalThis as { Deno?: unknown }).Deno === "object"
  ? "deno"
  : `node ${process.version}`;
const best = (rs: readonly (readonly number[])[]): number => Math.min(...rs.map((r) => median(r)));
console.log(
  `client session vs raw codec calls, 4 KiB READ issued and completed (${runtime}, ${rounds} rounds)`,
);
console.log(
  "| reply style | raw request encoding | session ns/op | raw ns/op | ratio (lower quartile) | ratio (best rounds) |",
);
console.log("|---|---|---:|---:|---:|---:|");
variants.forEach((v, i) => {
  const t = timings[i]!;
  const a = best(t.aRounds);
  const b = best(t.bRounds);
  console.log(
    `| ${v.mode} | ${ENCODING_NAMES[v.encoding]} | ` +
      `${t.aNs.toFixed(0)} (best ${a.toFixed(0)}) | ${t.bNs.toFixed(0)} (best ${b.toFixed(0)}) | ` +
      `${(t.aNs / t.bNs).toFixed(2)}x | ${(a / b).toFixed(2)}x |`,
  );
});

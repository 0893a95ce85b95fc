// Property: random request sequences (valid and invalid, many in flight, distinct cookies) under every
// reply style, fed in random splits, give the same events and the same replies per cookie; every request
// is answered exactly once, and refusals carry the error the spec prescribes for what was wrong.
import { describe, expect, test } from "vitest";
import {
  Command,
  CommandFlag,
  ErrorValue,
  type Request,
  type ServerEvent,
  type ServerSession,
} from "../mod.ts";
import { concat, replies, req, transmission } from "./_server_session.ts";

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

const SIZE = 1 << 20;

/** A random request, valid or not, and the error the session must refuse it with (0: valid). */
function randomRequest(
  r: () => number,
  cookie: bigint,
  extended: boolean,
  structured: boolean,
): [Uint8Array, number] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const command = pick([
    Command.READ,
    Command.WRITE,
    Command.TRIM,
    Command.WRITE_ZEROES,
    Command.FLUSH,
    Command.CACHE,
    Command.BLOCK_STATUS,
    11,
  ]);
  const beyond = r() < 0.15;
  const length = command === Command.FLUSH ? 0 : 512 * (1 + Math.floor(r() * 16));
  const offset = command === Command.FLUSH ? 0 : beyond ? SIZE - 512 : 512 * Math.floor(r() * 64);
  let flags = r() < 0.3 ? CommandFlag.FUA : 0;
  if (command === Command.READ && structured && r() < 0.3) flags |= CommandFlag.DF;
  if (command === Command.WRITE_ZEROES && r() < 0.3) flags |= CommandFlag.NO_HOLE;
  if (command === Command.BLOCK_STATUS && r() < 0.3) flags |= CommandFlag.REQ_ONE;
  if (command === Command.WRITE && extended) flags |= CommandFlag.PAYLOAD_LEN;
  const more: Partial<Request> = { extended, flags };
  if (command === Command.WRITE) {
    (more as { data?: Uint8Array }).data = new Uint8Array(length).fill(Number(cookie & 0xffn));
  }
  let error = 0;
  if (command === 11) error = ErrorValue.EINVAL;
  else if (command === Command.BLOCK_STATUS && !structured) error = ErrorValue.EINVAL;
  else if (beyond && length > 512) {
    error = command === Command.WRITE || command === Command.WRITE_ZEROES
      ? ErrorValue.ENOSPC
      : ErrorValue.EINVAL;
  }
  return [req(command, cookie, BigInt(offset), BigInt(length), more), error];
}

function answer(s: ServerSession, e: Extract<ServerEvent, { type: "request" }>): Uint8Array[] {
  const q = e.request;
  if (q.command === Command.READ) {
    const n = Number(q.length);
    if (s.state.replyStyle === "simple" || (q.flags & CommandFlag.DF) !== 0) {
      return s.replyRead(q.cookie, new Uint8Array(n));
    }
    if (n === 512) return s.holeChunk(q.cookie, q.offset, 512, true);
    return [
      ...s.holeChunk(q.cookie, q.offset, 512),
      ...s.readChunk(q.cookie, q.offset + 512n, new Uint8Array(n - 512), true),
    ];
  }
  if (q.command === Command.BLOCK_STATUS) {
    return s.replyBlockStatus(
      q.cookie,
      e.contexts!.map((contextId) => ({
        contextId,
        extents: [{ length: Number(e.effectLength), status: 3 }],
      })),
    );
  }
  return s.replyOk(q.cookie);
}

/** Runs a stream in the given pieces; answers the requests of each receive after it, in reverse order. */
function run(mode: Mode, pieces: readonly Uint8Array[]) {
  const chunked = mode.structured === true || mode.extended === true;
  const { s } = transmission({}, { ...mode, ...(chunked ? { contexts: ["base:allocation"] } : {}) });
  const events: string[] = [];
  const out: Uint8Array[] = [];
  for (const p of pieces) {
    const step = s.receive(p);
    out.push(...step.output);
    const requests = step.events.filter((e) => e.type === "request");
    for (const e of step.events) {
      events.push(
        e.type === "refused"
          ? `refused ${e.request.cookie} ${e.error}`
          : e.type === "request"
          ? `request ${e.request.cookie}${e.request.data ? ` data ${e.request.data.join(",")}` : ""}`
          : e.type,
      );
    }
    for (const e of requests.reverse()) out.push(...answer(s, e));
  }
  return { events, out, inFlight: s.state.inFlight };
}

interface Mode {
  readonly structured?: boolean;
  readonly extended?: boolean;
}
const MODES: readonly Mode[] = [{}, { structured: true }, { extended: true }];

describe("random request sequences in random splits", () => {
  for (const mode of MODES) {
    for (let seed = 1; seed <= 8; seed++) {
      test(`seed ${seed}, ${mode.extended ? "extended" : mode.structured ? "structured" : "simple"} replies`, () => {
        const r = rng(seed * 7919);
        const frames: Uint8Array[] = [];
        const expected: string[] = [];
        for (let i = 1; i <= 40; i++) {
          const [bytes, error] = randomRequest(
            r,
            BigInt(i),
            mode.extended === true,
            mode.structured === true || mode.extended === true,
          );
          frames.push(bytes);
          expected.push(error === 0 ? `request ${i}` : `refused ${i} ${error}`);
        }
        const stream = concat(frames);
        const whole = run(mode, [stream]);
        expect(whole.events.filter((e) => e !== "finding").map((e) => e.replace(/ data .*/, ""))).toEqual(
          expected,
        );
        // A WRITE's data arrives whole and exact (the random data is the cookie's low byte).
        for (const e of whole.events) {
          const m = e.match(/^request (\d+) data (.*)$/);
          if (m) expect(new Set(m[2]!.split(","))).toEqual(new Set([String(Number(m[1]) & 0xff)]));
        }
        expect(whole.inFlight).toBe(0);
        const ext = mode.extended === true;
        const byCookie = (out: readonly Uint8Array[]) => {
          const m = new Map<bigint, string[]>();
          for (const f of replies(out, { extendedHeaders: ext, readLength: 0 })) {
            const k = f.cookie;
            m.set(k, [
              ...(m.get(k) ?? []),
              f.type === "simple-reply" ? `simple ${f.error}` : `${f.chunkType}:${f.flags}`,
            ]);
          }
          return m;
        };
        // Simple READ replies carry data: decode only where the whole stream has none of them.
        if (mode.structured === true || mode.extended === true) {
          const m = byCookie(whole.out);
          expect(m.size).toBe(40);
          for (const parts of m.values()) {
            expect(parts.filter((p) => p.endsWith(":1") || p.startsWith("simple")).length).toBe(1);
          }
        }
        for (const max of [1, 3, 50, 999]) {
          const pieces: Uint8Array[] = [];
          const rr = rng(seed + max);
          for (let at = 0; at < stream.length;) {
            const n = 1 + Math.floor(rr() * max);
            pieces.push(stream.subarray(at, at + n));
            at += n;
          }
          const split = run(mode, pieces);
          expect(split.events).toEqual(whole.events);
          expect(split.inFlight).toBe(0);
          if (mode.structured === true || mode.extended === true) {
            expect(byCookie(split.out)).toEqual(byCookie(whole.out));
          } else expect(concat(split.out).length).toBe(concat(whole.out).length);
        }
      });
    }
  }
});

import { describe, expect, it } from "vitest";
import { type ConformPeerOptions, ConformPeerServer } from "../codec/_conform_peer.ts";
import { type ConformConnection, ConformTimeoutError, violatedOutcome } from "../codec/conform.ts";
import { discoverServer, runServerCase, SERVER_CASES, type ServerTarget } from "../codec/conform_server.ts";

/** An in-process server as a target: no sockets; a wait for bytes that will never come is a timeout. */
function memoryTarget(options: ConformPeerOptions, writes = true, piece = 0): ServerTarget {
  return {
    exportName: "disk",
    ...(writes ? { writeRange: { offset: 0n } } : {}),
    connect(): Promise<ConformConnection> {
      const s = new ConformPeerServer(options);
      const queue: Uint8Array[] = [];
      for (const b of s.take()) {
        if (piece <= 0) queue.push(b);
        else for (let i = 0; i < b.length; i += piece) queue.push(b.subarray(i, i + piece));
      }
      return Promise.resolve({
        send(bytes: Uint8Array): Promise<void> {
          if (s.closing) return Promise.reject(new Error("connection closed by the peer"));
          s.receive(bytes);
          for (const b of s.take()) {
            if (piece <= 0) queue.push(b);
            else for (let i = 0; i < b.length; i += piece) queue.push(b.subarray(i, i + piece));
          }
          return Promise.resolve();
        },
        receive(): Promise<Uint8Array | null> {
          const b = queue.shift();
          if (b !== undefined) return Promise.resolve(b);
          if (s.closing) return Promise.resolve(null);
          return Promise.reject(new ConformTimeoutError("the test double has nothing more to send"));
        },
        close(): void {},
      });
    },
  };
}

const GOOD: ConformPeerOptions = { secondContext: true };
/** Cases that only apply to a read-only export, or to one with a minimum block size. */
const READ_ONLY_CASES = new Set(["tx.read-only-write"]);
const MIN_BLOCK_CASES = new Set(["tx.unaligned"]);
/** Cases that need an export larger than the maximum payload. */
const SMALL_MAX_CASES = new Set(["tx.effect-over-max", "read.over-max"]);

/** Cases with nothing to check unless the server answers a request past the end of its (small) export. */
const CLIP_CASES = new Set(["bs.length-max"]);

function base(id: string): ConformPeerOptions {
  if (CLIP_CASES.has(id)) return { ...GOOD, clipBlockStatus: true };
  if (READ_ONLY_CASES.has(id)) return { ...GOOD, readOnly: true };
  if (MIN_BLOCK_CASES.has(id)) return { ...GOOD, minBlock: 512 };
  if (SMALL_MAX_CASES.has(id)) return { ...GOOD, maxPayload: 65536 };
  return GOOD;
}

async function outcome(
  id: string,
  options: ConformPeerOptions,
): Promise<{ outcome: string; detail: string }> {
  const c = SERVER_CASES.find((x) => x.id === id)!;
  const target = memoryTarget(options);
  const facts = await discoverServer(target);
  return await runServerCase(c, target, facts);
}

describe("conform server catalogue", () => {
  it("has unique, stable-looking ids, a quote and a level for every case", () => {
    const ids = SERVER_CASES.map((c) => c.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const c of SERVER_CASES) {
      expect(c.id).toMatch(/^[a-z]+\.[a-z0-9-]+$/);
      expect(c.quote.length).toBeGreaterThan(10);
      expect(["MUST", "SHOULD", "MAY"]).toContain(c.level);
      expect(c.section.length).toBeGreaterThan(3);
    }
  });
});

describe("conform server against a correct in-process server", () => {
  it("passes every case (read-only cases on a read-only export)", async () => {
    const bad: string[] = [];
    for (const c of SERVER_CASES) {
      const r = await outcome(c.id, base(c.id));
      if (r.outcome !== "pass") bad.push(`${c.id}: ${r.outcome} ${r.detail}`);
    }
    expect(bad).toEqual([]);
  });

  it("gives the same outcomes when the server's bytes arrive 3 at a time, and when the server gets them 1 at a time", async () => {
    const whole = memoryTarget(GOOD);
    const split = memoryTarget(GOOD, true, 3);
    const factsA = await discoverServer(whole);
    const factsB = await discoverServer(split);
    expect(factsB).toEqual(factsA);
    for (const c of SERVER_CASES) {
      const a = await runServerCase(c, whole, factsA);
      const b = await runServerCase(c, split, factsB);
      expect([c.id, b.outcome]).toEqual([c.id, a.outcome]);
    }
    // The server core itself: a request stream fed byte by byte gives the same bytes back.
    const fed = (step: number): Uint8Array[] => {
      const s = new ConformPeerServer(GOOD);
      const out = [...s.take()];
      const hello = new Uint8Array([
        0,
        0,
        0,
        3,
        ...new TextEncoder().encode("IHAVEOPT"),
        0,
        0,
        0,
        8,
        0,
        0,
        0,
        0,
      ]);
      for (let i = 0; i < hello.length; i += step) {
        s.receive(hello.subarray(i, i + step));
        out.push(...s.take());
      }
      return out;
    };
    const join = (parts: Uint8Array[]): string => parts.map((p) => Array.from(p).join(",")).join(",");
    expect(join(fed(1))).toBe(join(fed(1000)));
  });

  it("skips the writing cases without a write range", async () => {
    const target = memoryTarget(GOOD, false);
    const facts = await discoverServer(target);
    for (const c of SERVER_CASES.filter((x) => x.writes)) {
      const r = await runServerCase(c, target, facts);
      expect(r.outcome, c.id).toBe("skip");
      expect(r.detail).toMatch(/--allow-writes/);
    }
  });

  it("passes under the unusual but legal profiles too", async () => {
    for (
      const profile of [{ reorder: true }, { splitReads: 512 }, { noZeroes: false }, { extended: false }, {
        minBlock: 512,
      }]
    ) {
      const bad: string[] = [];
      for (const c of SERVER_CASES) {
        const r = await outcome(c.id, {
          ...GOOD,
          ...profile,
          ...(READ_ONLY_CASES.has(c.id) ? { readOnly: true } : {}),
        });
        if (r.outcome === "fail" || r.outcome === "warn") bad.push(`${c.id}: ${r.outcome} ${r.detail}`);
      }
      expect(bad, JSON.stringify(profile)).toEqual([]);
    }
  });
});

describe("conform server against servers that break one rule each", () => {
  for (const c of SERVER_CASES) {
    it(`${c.id} ${c.level === "MUST" ? "fails" : "warns"} when the server breaks exactly its rule`, async () => {
      const r = await outcome(c.id, { ...base(c.id), faults: new Set([c.id]) });
      expect(r.outcome, r.detail).toBe(violatedOutcome(c.level));
    });
  }
});

describe("conform server at the 2^32-1 boundaries", () => {
  it("bs.length-max catches the rounded-up 2^32 both as a 64-bit descriptor past a REQ_ONE request and as a 32-bit 0", async () => {
    const ext = await outcome("bs.length-max", {
      ...base("bs.length-max"),
      faults: new Set(["bs.length-max"]),
    });
    expect(ext.outcome).toBe("fail");
    expect(ext.detail).toMatch(/REQ_ONE descriptor of 4294967296 bytes exceeds the request's 4294967295/);
    const compact = await outcome("bs.length-max", {
      ...base("bs.length-max"),
      extended: false,
      faults: new Set(["bs.length-max"]),
    });
    expect(compact.outcome).toBe("fail");
    expect(compact.detail).toMatch(/length 0/);
  });
});

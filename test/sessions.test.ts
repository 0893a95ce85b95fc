/**
 * The server session and the client session against each other: every negotiation combination (oldstyle,
 * plain and fixed newstyle, NO_ZEROES on and off, simple / structured / extended replies, with and without
 * metadata contexts and the block-status payload form), then a property test: random valid command
 * sequences, random reply orders and random chunk splits give the results of a sequential model.
 */
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import {
  type ClientEvent,
  ClientSession,
  type ClientSessionOptions,
  Command,
  CommandFlag,
  type CommandResult,
  type ServerEvent,
  ServerSession,
  type ServerSessionOptions,
  type ServerStep,
  TransmissionFlag as TF,
} from "../mod.ts";

const SIZE = 1 << 20;

/** A memory-backed application behind the server session, and the wire between the two sessions. */
class Pair {
  readonly server: ServerSession;
  readonly client: ClientSession;
  readonly disk = new Uint8Array(SIZE);
  readonly clientEvents: ClientEvent[] = [];
  readonly serverEvents: ServerEvent[] = [];
  #toClient: Uint8Array[] = [];
  #toServer: Uint8Array[] = [];
  #replies: Uint8Array[][] = [];
  readonly #rand: () => number;
  readonly shuffle: boolean;
  readonly maxChunk: number;

  constructor(
    serverOptions: ServerSessionOptions,
    clientOptions: ClientSessionOptions,
    shuffle = false,
    maxChunk = 0,
    seed = 1,
  ) {
    this.shuffle = shuffle;
    this.maxChunk = maxChunk;
    let s = seed >>> 0 || 1;
    this.#rand = () => {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      return (s >>> 0) / 4294967296;
    };
    this.server = new ServerSession(serverOptions);
    this.client = new ClientSession(clientOptions);
    this.#serverStep(this.server.start());
  }

  #serverStep(step: ServerStep): void {
    this.#toClient.push(...step.output);
    for (const e of step.events) {
      this.serverEvents.push(e);
      if (e.type === "request") this.#replies.push(this.#answer(e));
    }
  }

  /** The application: answers each valid request at once (so the model is sequential in issue order). */
  #answer(e: Extract<ServerEvent, { type: "request" }>): Uint8Array[] {
    const s = this.server;
    const r = e.request;
    const off = Number(r.offset);
    const len = Number(r.length);
    switch (r.command) {
      case Command.READ: {
        const data = this.disk.slice(off, off + len);
        if (s.state.replyStyle === "simple" || (r.flags & CommandFlag.DF) !== 0 || len < 2) {
          return s.replyRead(r.cookie, data);
        }
        // Two chunks, the second in front; a hole where the bytes are all zero.
        const k = 1 + Math.floor(this.#rand() * (len - 1));
        const tail = data.subarray(k);
        const second = tail.every((b) => b === 0)
          ? s.holeChunk(r.cookie, off + k, len - k)
          : s.readChunk(r.cookie, off + k, tail.slice());
        return [...second, ...s.readChunk(r.cookie, off, data.slice(0, k), true)];
      }
      case Command.WRITE:
        this.disk.set(r.data!, off);
        return s.replyOk(r.cookie);
      case Command.WRITE_ZEROES:
      case Command.TRIM:
        this.disk.fill(0, off, off + len);
        return s.replyOk(r.cookie);
      case Command.BLOCK_STATUS: {
        const eff = Number(e.effectLength ?? r.length);
        return s.replyBlockStatus(
          r.cookie,
          (e.contexts ?? []).map((id) => ({
            contextId: id,
            extents: [{ length: eff, status: id === 0 ? 0 : 1 }],
          })),
        );
      }
      default:
        return s.replyOk(r.cookie);
    }
  }

  #split(bufs: Uint8Array[]): Uint8Array[] {
    if (this.maxChunk === 0) return bufs;
    const total = bufs.reduce((n, b) => n + b.length, 0);
    const all = new Uint8Array(total);
    let at = 0;
    for (const b of bufs) {
      all.set(b, at);
      at += b.length;
    }
    const out: Uint8Array[] = [];
    for (let i = 0; i < total;) {
      const n = 1 + Math.floor(this.#rand() * this.maxChunk);
      out.push(all.subarray(i, i + n));
      i += n;
    }
    return out;
  }

  /** Moves bytes both ways until nothing moves. */
  run(): this {
    for (let rounds = 0; rounds < 10000; rounds++) {
      const toServer = [...this.#toServer, ...this.client.takeOutput()];
      this.#toServer = [];
      for (const b of this.#split(toServer)) this.#serverStep(this.server.receive(b));
      if (this.#replies.length > 0) {
        const replies = this.#replies;
        this.#replies = [];
        if (this.shuffle) replies.sort(() => this.#rand() - 0.5);
        for (const r of replies) this.#toClient.push(...r);
      }
      const toClient = this.#toClient;
      this.#toClient = [];
      for (const b of this.#split(toClient)) this.clientEvents.push(...this.client.receive(b));
      if (toServer.length === 0 && toClient.length === 0) return this;
    }
    throw new Error("the sessions did not settle");
  }

  results(): CommandResult[] {
    return this.clientEvents.flatMap((e) => (e.type === "reply" ? [e.result] : []));
  }

  findings(): string[] {
    return [
      ...this.client.findings.map((f) => `client saw ${f.rule}`),
      ...this.serverEvents.flatMap((e) => (e.type === "finding" ? [`server saw ${e.finding.rule}`] : [])),
    ];
  }
}

const CONTEXTS = ["base:allocation", "qemu:allocation-depth"];

describe("server session and client session over every negotiation combination", () => {
  const styles = ["oldstyle", "newstyle", "fixed-newstyle"] as const;
  const replies = ["simple", "structured", "extended"] as const;
  for (const handshake of styles) {
    for (const noZeroes of [true, false]) {
      for (const style of replies) {
        for (const withContexts of [false, true]) {
          for (const payload of [false, true]) {
            if (handshake !== "fixed-newstyle" && (style !== "simple" || withContexts || payload)) continue;
            if (handshake === "oldstyle" && !noZeroes) continue;
            if (payload && (style !== "extended" || !withContexts)) continue;
            const name = `${handshake}, NO_ZEROES ${noZeroes ? "on" : "off"}, ${style}` +
              `${withContexts ? ", contexts" : ""}${payload ? ", payload form" : ""}`;
            test(name, () => {
              const p = new Pair(
                {
                  exports: [{ name: "disk", size: SIZE, contexts: withContexts ? CONTEXTS : [] }],
                  defaultExport: "disk",
                  handshake,
                  noZeroes,
                  structuredReplies: style !== "simple",
                  extendedHeaders: style === "extended",
                  blockStatusPayload: payload,
                },
                { go: { name: "disk", contexts: withContexts ? CONTEXTS : [] } },
              ).run();
              const c = p.client;
              const st = c.state;
              expect(st.phase).toBe("transmission");
              expect(st.handshake).toBe(handshake);
              expect(st.replyMode).toBe(style);
              expect(st.noZeroes).toBe(handshake !== "oldstyle" && noZeroes);
              expect(st.contexts.size).toBe(withContexts && style !== "simple" ? 2 : 0);
              const flags = st.export!.transmissionFlags;
              expect((flags & TF.BLOCK_STATUS_PAYLOAD) !== 0).toBe(payload);
              expect((flags & TF.SEND_DF) !== 0).toBe(style !== "simple");

              const data = Uint8Array.from({ length: 8192 }, (_, i) => (i * 7 + 3) & 0xff);
              c.write(4096, data, { flags: CommandFlag.FUA });
              c.writeZeroes(8192, 512);
              c.trim(0, 512);
              c.flush();
              c.cache(0, 4096);
              const r1 = c.read(0, 16384);
              const r2 = style !== "simple" ? c.read(4096, 4096, { flags: CommandFlag.DF }) : undefined;
              const bs = st.contexts.size > 0 ? c.blockStatus(0, 65536) : undefined;
              const ids = [...st.contexts.keys()];
              const bp = payload ? c.blockStatus(0, 65536, { contextIds: [ids[1]!] }) : undefined;
              p.run();
              const results = new Map(p.results().map((r) => [r.cookie, r]));
              expect([...results.values()].every((r) => r.ok)).toBe(true);
              expect(results.size).toBe(6 + (r2 ? 1 : 0) + (bs ? 1 : 0) + (bp ? 1 : 0));
              const expected = new Uint8Array(16384);
              expected.set(data, 4096);
              expected.fill(0, 8192, 8704);
              expect(results.get(r1)!.data).toEqual(expected);
              if (r2 !== undefined) expect(results.get(r2)!.data).toEqual(expected.subarray(4096, 8192));
              if (bs !== undefined) {
                const ex = results.get(bs)!.extents!;
                expect([...ex.keys()].sort()).toEqual(ids.sort());
                for (const list of ex.values()) expect(list[0]!.length).toBe(65536n);
              }
              if (bp !== undefined) expect([...results.get(bp)!.extents!.keys()]).toEqual([ids[1]]);
              expect(p.findings()).toEqual([]);
              c.disconnect();
              p.run();
              expect(p.serverEvents.at(-1)?.type).toBe("disconnect");
            });
          }
        }
      }
    }
  }
});

type Op =
  | { op: "read"; off: number; len: number; df: boolean }
  | { op: "write"; off: number; len: number; seed: number }
  | { op: "zero"; off: number; len: number }
  | { op: "trim"; off: number; len: number }
  | { op: "flush" }
  | { op: "status"; off: number; len: number };

const range = fc.integer({ min: 0, max: 255 }).chain((blk) =>
  fc.integer({ min: 1, max: Math.min(16, 256 - blk) }).map((n) => ({ off: blk * 4096, len: n * 512 }))
);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.tuple(range, fc.boolean()).map(([r, df]) => ({ op: "read" as const, ...r, df })),
  fc.tuple(range, fc.integer({ min: 1, max: 1000 })).map(([r, seed]) => ({
    op: "write" as const,
    ...r,
    seed,
  })),
  range.map((r) => ({ op: "zero" as const, ...r })),
  range.map((r) => ({ op: "trim" as const, ...r })),
  fc.constant({ op: "flush" as const }),
  range.map((r) => ({ op: "status" as const, ...r })),
);

describe("property: random command sequences, reply orders and chunk splits", () => {
  test("the client's results equal a sequential model's", () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(opArb, { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 6 }),
        fc.constantFrom("simple", "structured", "extended"),
        fc.constantFrom(3, 17, 200, 5000, 70000),
        fc.integer({ min: 1, max: 1 << 30 }),
        (batches, style, maxChunk, seed) => {
          const p = new Pair(
            {
              exports: [{ name: "", size: SIZE, contexts: ["base:allocation"] }],
              structuredReplies: style !== "simple",
              extendedHeaders: style === "extended",
            },
            { go: { contexts: ["base:allocation"] } },
            true,
            maxChunk,
            seed,
          ).run();
          const c = p.client;
          expect(c.state.replyMode).toBe(style);
          const model = new Uint8Array(SIZE);
          let seen = 0;
          for (const batch of batches) {
            // A batch is in flight at once; the server applies it in issue order. Cookies are unique within
            // a batch (the session reuses them once their replies are complete).
            const expected = new Map<bigint, Uint8Array | undefined>();
            for (const o of batch) {
              let cookie: bigint;
              if (o.op === "read") {
                const df = o.df && style !== "simple";
                cookie = c.read(o.off, o.len, { flags: df ? CommandFlag.DF : 0 });
                expected.set(cookie, model.slice(o.off, o.off + o.len));
              } else if (o.op === "write") {
                const d = Uint8Array.from({ length: o.len }, (_, i) => (i * o.seed + 1) & 0xff);
                cookie = c.write(o.off, d);
                model.set(d, o.off);
                expected.set(cookie, undefined);
              } else if (o.op === "zero" || o.op === "trim") {
                cookie = o.op === "zero" ? c.writeZeroes(o.off, o.len) : c.trim(o.off, o.len);
                model.fill(0, o.off, o.off + o.len);
                expected.set(cookie, undefined);
              } else if (o.op === "flush") {
                expected.set(c.flush(), undefined);
              } else if (style !== "simple") {
                expected.set(c.blockStatus(o.off, o.len), undefined);
              }
            }
            p.run();
            const results = p.results().slice(seen);
            seen += results.length;
            expect(results.length).toBe(expected.size);
            for (const r of results) {
              expect(r.ok).toBe(true);
              expect(expected.has(r.cookie)).toBe(true);
              const want = expected.get(r.cookie);
              if (want !== undefined) expect(r.data).toEqual(want);
            }
          }
          expect(p.findings()).toEqual([]);
        },
      ),
      { numRuns: 50 },
    );
  });
});

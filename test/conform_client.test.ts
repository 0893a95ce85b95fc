import { describe, expect, it } from "vitest";
import { type ConformPeerOptions, ConformPeerServer } from "../codec/_conform_peer.ts";
import { violatedOutcome } from "../codec/conform.ts";
import {
  CLIENT_CASES,
  CLIENT_PROFILES,
  type ClientObservation,
  evaluateClient,
} from "../codec/conform_client.ts";
import { CLIENT_CASE_CATALOGUE, CLIENT_PROFILE_CATALOGUE, createClientConnection } from "../mod.ts";
import {
  Command,
  CommandFlag,
  encodeClientFlags,
  encodeOptionRequest,
  encodeRequest,
  Info,
  Option,
  type OptionData,
  type Request,
} from "../mod.ts";

function opt(option: number, data: OptionData = { kind: "none" }): Uint8Array {
  return encodeOptionRequest({ type: "option-request", option, data });
}

function req(r: Partial<Request> & { command: number }, data?: Uint8Array): Uint8Array {
  const head = encodeRequest({
    type: "request",
    extended: false,
    flags: 0,
    cookie: 1n,
    offset: 0n,
    length: data ? BigInt(data.length) : 4096n,
    ...r,
  });
  const out = new Uint8Array(head.length + (data?.length ?? 0));
  out.set(head);
  if (data) out.set(data, head.length);
  return out;
}

/** Raw request bytes, for what our encoder refuses (extended WRITE without PAYLOAD_LEN). */
function extendedWriteWithoutPayloadLen(data: Uint8Array): Uint8Array {
  const b = new Uint8Array(32 + data.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 0x21e41c71);
  dv.setUint16(6, Command.WRITE);
  dv.setBigUint64(8, 9n);
  dv.setBigUint64(24, BigInt(data.length));
  b.set(data, 32);
  return b;
}

/**
 * A scripted client session against the in-process server core: `fault` names the client case whose rule
 * it breaks (none: a correct client). Returns what conform client would evaluate.
 */
function session(fault: string | undefined, options: ConformPeerOptions = {}): ClientObservation {
  const s = new ConformPeerServer({
    ...options,
    ...(fault === "client.alignment" ? { minBlock: 4096 } : {}),
  });
  const send = (b: Uint8Array): void => s.receive(b);
  const extended = fault === "client.request-format";
  const flags = options.noZeroes === false ? 1 : 3;
  send(
    encodeClientFlags({
      type: "client-flags",
      flags: fault === "client.flags" ? (0x8000_0000 | flags) >>> 0 : flags,
    }),
  );
  if (fault === "client.option-framing") {
    const bad = opt(Option.LIST);
    bad[0] = 0x58;
    send(bad);
  }
  send(opt(extended ? Option.EXTENDED_HEADERS : Option.STRUCTURED_REPLY));
  const simpleOnly = options.structured === false;
  if (fault !== "client.block-status-negotiated" && !simpleOnly) {
    send(
      opt(Option.SET_META_CONTEXT, {
        kind: "meta-context-query",
        name: "disk",
        queries: ["base:allocation"],
      }),
    );
  }
  send(opt(Option.GO, { kind: "info-request", name: "disk", info: [Info.BLOCK_SIZE] }));
  send(req({ command: Command.READ, extended }));
  if (!simpleOnly) send(req({ command: Command.BLOCK_STATUS, extended, length: 65536n }));
  if (extended) send(extendedWriteWithoutPayloadLen(new Uint8Array(512)));
  else send(req({ command: Command.WRITE }, new Uint8Array(4096)));
  if (fault === "client.command-flags") send(req({ command: Command.READ, flags: 0x4000 }));
  if (fault === "client.request-range") send(req({ command: Command.READ, offset: 1n << 20n }));
  if (fault === "client.alignment") send(req({ command: Command.READ, offset: 512n }));
  if (fault === "client.payload-max") {
    send(req({ command: Command.WRITE }, new Uint8Array((32 << 20) + 4096)));
  }
  if (fault === "client.known-commands") send(req({ command: 0x3f, length: 0n }));
  if (fault !== "client.soft-disconnect") send(req({ command: Command.DISC, extended, length: 0n }));
  return {
    connections: [{ findings: s.findings, seen: s.seen, ended: s.ended }],
    exitCode: fault === "client.result" ? 1 : 0,
    dataMatches: fault !== "client.data",
  };
}

describe("conform client", () => {
  it("has unique ids and a quote for every case", () => {
    expect(new Set(CLIENT_CASES.map((c) => c.id)).size).toBe(CLIENT_CASES.length);
    for (const c of CLIENT_CASES) expect(c.quote.length, c.id).toBeGreaterThan(10);
  });

  it("passes every case for a correct client session", () => {
    const results = evaluateClient(session(undefined));
    expect(results.filter((r) => r.outcome !== "pass")).toEqual([]);
    expect(results.find((r) => r.id === "client.soft-disconnect")?.detail).toBe("NBD_CMD_DISC");
  });

  for (const c of CLIENT_CASES) {
    it(`${c.id} fails for a client that breaks exactly its rule`, () => {
      const r = evaluateClient(session(c.id)).find((x) => x.id === c.id)!;
      expect(r.outcome, r.detail).toBe(violatedOutcome(c.level));
    });
  }

  it("reports qemu 10's extended WRITE without PAYLOAD_LEN with the decoder's rule", () => {
    const o = session("client.request-format");
    expect(o.connections[0]!.findings.map((f) => f.message).join()).toMatch(/PAYLOAD_LEN/);
  });

  it("expects the errors profile to make the command fail, and skips what was not observed", () => {
    const base = session(undefined);
    const failing = evaluateClient({ ...base, exitCode: 1, expectFailure: true }).find((r) =>
      r.id === "client.result"
    )!;
    expect(failing.outcome).toBe("pass");
    const succeeded = evaluateClient({ ...base, exitCode: 0, expectFailure: true }).find((r) =>
      r.id === "client.result"
    )!;
    expect(succeeded.outcome).toBe("fail");
    const none = evaluateClient({ connections: [] });
    expect(none.every((r) => r.outcome === "skip")).toBe(true);
    const noCommand = evaluateClient({ connections: base.connections });
    expect(noCommand.find((r) => r.id === "client.result")!.outcome).toBe("skip");
    expect(noCommand.find((r) => r.id === "client.data")!.outcome).toBe("skip");
  });

  it("serves every profile to a correct client without findings", () => {
    for (const [name, p] of Object.entries(CLIENT_PROFILES)) {
      const o = session(undefined, { ...p.options, minBlock: p.options.minBlock ?? 1 });
      expect(o.connections[0]!.findings, name).toEqual([]);
    }
  });

  it("sends the errors profile's read failures as error chunks with a message", () => {
    const s = new ConformPeerServer(CLIENT_PROFILES.errors!.options);
    s.take();
    s.receive(encodeClientFlags({ type: "client-flags", flags: 3 }));
    s.receive(opt(Option.STRUCTURED_REPLY));
    s.receive(opt(Option.GO, { kind: "info-request", name: "disk", info: [] }));
    s.take();
    s.receive(req({ command: Command.READ, offset: (1n << 20n) - 4096n, flags: CommandFlag.FUA }));
    const out = s.take();
    const all = new Uint8Array(out.reduce((n, b) => n + b.length, 0));
    let at = 0;
    for (const b of out) {
      all.set(b, at);
      at += b.length;
    }
    const dv = new DataView(all.buffer);
    expect(dv.getUint32(0)).toBe(0x668e33ef);
    expect(dv.getUint16(6)).toBe(0x8001);
    expect(dv.getUint32(20)).toBe(5);
    expect(new TextDecoder().decode(all.subarray(26))).toMatch(/simulated read error/);
  });
});

describe("conform client as a library (mod.ts)", () => {
  const hello = (): Uint8Array[] => [
    encodeClientFlags({ type: "client-flags", flags: 3 }),
    opt(Option.STRUCTURED_REPLY),
    opt(Option.GO, { kind: "info-request", name: "disk", info: [] }),
    req({ command: Command.READ, offset: 0n, length: 8192n }),
    req({ command: Command.READ, offset: 1n << 20n, length: 512n }),
    req({ command: Command.DISC, length: 0n }),
  ];
  const hex = (parts: Uint8Array[]): string =>
    parts.map((p) => Array.from(p, (b) => b.toString(16).padStart(2, "0")).join("")).join("");

  it("createClientConnection() serves a session whose log evaluateClient() judges, and closes after DISC", () => {
    const c = createClientConnection();
    const greeting = c.take();
    expect(hex(greeting)).toBe("4e42444d41474943" + "49484156454f5054" + "0003");
    for (const b of hello()) c.receive(b);
    const out = c.take();
    expect(out.length).toBeGreaterThan(0);
    expect(c.closing).toBe(true);
    const log = c.log();
    expect(log.ended).toBe("NBD_CMD_DISC");
    expect(log.seen).toEqual([
      "NBD_OPT_STRUCTURED_REPLY",
      "NBD_OPT_GO",
      "NBD_CMD_READ",
      "NBD_CMD_READ",
      "NBD_CMD_DISC",
    ]);
    expect(log.findings.map((f) => f.check)).toEqual(["request-range"]);
    const r = evaluateClient({ connections: [log] });
    expect(r.find((x) => x.id === "client.request-range")?.outcome).toBe("fail");
    expect(r.find((x) => x.id === "client.soft-disconnect")?.outcome).toBe("pass");
    expect(c.exportBytes().length).toBe(1 << 20);
  });

  it("createClientConnection() gives the same bytes for any split of the client's bytes", () => {
    const whole = createClientConnection("split-reads");
    const out1 = [...whole.take()];
    for (const b of hello()) {
      whole.receive(b);
      out1.push(...whole.take());
    }
    const bytewise = createClientConnection("split-reads");
    const out2 = [...bytewise.take()];
    for (const b of hello()) {
      for (let i = 0; i < b.length; i++) {
        bytewise.receive(b.subarray(i, i + 1));
        out2.push(...bytewise.take());
      }
    }
    expect(hex(out2)).toBe(hex(out1));
    expect(bytewise.log()).toEqual(whole.log());
  });

  it("createClientConnection() refuses an unknown profile with a RangeError naming the known ones", () => {
    expect(() => createClientConnection("nope")).toThrow(RangeError);
    expect(() => createClientConnection("nope")).toThrow(/reorder/);
  });

  it("the catalogues list every case and profile, in order, as data", () => {
    expect(CLIENT_CASE_CATALOGUE.map((c) => c.id)).toEqual(CLIENT_CASES.map((c) => c.id));
    expect(CLIENT_CASE_CATALOGUE.every((c) => !("rules" in c) && Object.isFrozen(c))).toBe(true);
    expect(CLIENT_PROFILE_CATALOGUE.map((p) => p.name)).toEqual(Object.keys(CLIENT_PROFILES));
    expect(CLIENT_PROFILE_CATALOGUE.filter((p) => p.expectFailure).map((p) => p.name)).toEqual(["errors"]);
  });
});

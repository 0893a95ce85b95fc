// The server session's rules, one test each: the handshake answers, the request checks and the reply
// builders. Expected bytes are written by hand from the spec's layouts; other output is decoded back with
// the codec's strict decoders and its fields asserted.
import { describe, expect, test } from "vitest";
import {
  ClientFlag,
  Command,
  CommandFlag,
  decodeRequest,
  encodeClientFlags,
  encodeRequest,
  ErrorValue,
  Info,
  InitFlag,
  isNbdLocalError,
  Option,
  OptionReply,
  ReplyFlag,
  ReplyType,
  type Request,
  type ServerEvent,
  ServerSession,
  TransmissionFlag,
} from "../mod.ts";
import {
  concat,
  DISK,
  FIXED_NZ,
  go,
  hex,
  meta,
  opt,
  optionReplies,
  replies,
  req,
  toHex,
  transmission,
  types,
} from "./_server_session.ts";

const DEFAULT_FLAGS = 0xc6d; // HAS_FLAGS FLUSH FUA TRIM WRITE_ZEROES CACHE FAST_ZERO
const DISK_SIZE_HEX = "0000000000100000"; // 1 MiB

function optionsPhase(
  options: ConstructorParameters<typeof ServerSession>[0] = { exports: [DISK] },
  flags = FIXED_NZ,
) {
  const s = new ServerSession(options);
  s.start();
  s.receive(encodeClientFlags({ type: "client-flags", flags }));
  return s;
}

function localError(fn: () => unknown): { code: string; rule: string } {
  try {
    fn();
  } catch (e) {
    if (isNbdLocalError(e)) return { code: e.code, rule: e.rule };
    throw e;
  }
  throw new Error("no NbdLocalError thrown");
}

function closeRule(events: readonly ServerEvent[]): string | undefined {
  const c = events.find((e) => e.type === "close");
  return c?.type === "close" ? c.error.rule : undefined;
}

function refused(events: readonly ServerEvent[]): number | undefined {
  const r = events.find((e) => e.type === "refused");
  return r?.type === "refused" ? r.error : undefined;
}

describe("handshake", () => {
  test("start() sends the fixed-newstyle greeting with NO_ZEROES", () => {
    const s = new ServerSession({ exports: [DISK] });
    expect(toHex(s.start().output)).toBe("4e42444d41474943" + "49484156454f5054" + "0003");
    expect(s.state.phase).toBe("client-flags");
  });

  test("start() in oldstyle sends size, flags and 124 zeroes, then transmission", () => {
    const s = new ServerSession({ exports: [DISK], handshake: "oldstyle" });
    const step = s.start();
    expect(toHex(step.output)).toBe(
      "4e42444d41474943" + "0000420281861253" + DISK_SIZE_HEX + "00000c6d" + "00".repeat(124),
    );
    expect(types(step)).toEqual(["ready"]);
    expect(s.state.phase).toBe("transmission");
  });

  test("plain newstyle omits FIXED_NEWSTYLE; noZeroes: false omits NO_ZEROES", () => {
    expect(toHex(new ServerSession({ exports: [DISK], handshake: "newstyle" }).start().output)).toMatch(
      /0002$/,
    );
    expect(toHex(new ServerSession({ exports: [DISK], noZeroes: false }).start().output)).toMatch(/0001$/);
  });

  test("client flags with an unknown bit close the connection", () => {
    const s = new ServerSession({ exports: [DISK] });
    s.start();
    const step = s.receive(hex("00000004"));
    expect(closeRule(step.events)).toBe("client-flags-unknown");
    expect(s.state.phase).toBe("closed");
  });

  test("C_NO_ZEROES when the server did not offer NO_ZEROES closes the connection", () => {
    const s = new ServerSession({ exports: [DISK], noZeroes: false });
    s.start();
    expect(closeRule(s.receive(hex("00000003")).events)).toBe("client-flags-unknown");
  });

  test("without fixed newstyle only EXPORT_NAME is possible; anything else closes", () => {
    const s = optionsPhase(undefined, ClientFlag.C_NO_ZEROES);
    expect(closeRule(s.receive(opt(Option.LIST)).events)).toBe("option-not-fixed");
  });

  test("EXPORT_NAME answers size and flags with 124 zeroes, or without them under NO_ZEROES", () => {
    const s1 = optionsPhase(undefined, ClientFlag.C_FIXED_NEWSTYLE);
    const a = s1.receive(opt(Option.EXPORT_NAME, { kind: "export-name", name: "disk" }));
    expect(toHex(a.output)).toBe(DISK_SIZE_HEX + "0c6d" + "00".repeat(124));
    expect(types(a)).toEqual(["ready"]);
    const s2 = optionsPhase();
    const b = s2.receive(opt(Option.EXPORT_NAME, { kind: "export-name", name: "" }));
    expect(toHex(b.output)).toBe(DISK_SIZE_HEX + "0c6d");
  });

  test("EXPORT_NAME of an unknown export closes (there is no error reply)", () => {
    const s = optionsPhase();
    const step = s.receive(opt(Option.EXPORT_NAME, { kind: "export-name", name: "nope" }));
    expect(step.output).toEqual([]);
    expect(closeRule(step.events)).toBe("export-name-refused");
  });

  test("EXPORT_NAME after extended headers closes", () => {
    const s = optionsPhase();
    s.receive(opt(Option.EXTENDED_HEADERS));
    expect(closeRule(s.receive(opt(Option.EXPORT_NAME, { kind: "export-name", name: "disk" })).events)).toBe(
      "export-name-refused",
    );
  });

  test("an unknown option gets ERR_UNSUP and haggling goes on", () => {
    const s = optionsPhase();
    const [r] = optionReplies(s.receive(opt(77)).output);
    expect(r).toMatchObject({ option: 77, reply: OptionReply.ERR_UNSUP });
    expect(s.state.phase).toBe("options");
  });

  test("a refused option gets ERR_UNSUP", () => {
    const s = optionsPhase({ exports: [DISK], refusedOptions: [Option.LIST] });
    expect(optionReplies(s.receive(opt(Option.LIST)).output)[0]?.reply).toBe(OptionReply.ERR_UNSUP);
  });

  test("a refused GO is still answered after extended headers (the spec forbids ERR_UNSUP to GO then)", () => {
    const s = optionsPhase({ exports: [DISK], refusedOptions: [Option.GO, Option.INFO] });
    expect(optionReplies(s.receive(go("disk")).output)[0]?.reply).toBe(OptionReply.ERR_UNSUP);
    s.receive(opt(Option.EXTENDED_HEADERS));
    expect(optionReplies(s.receive(go("disk")).output).at(-1)?.reply).toBe(OptionReply.ACK);
    expect(s.state.phase).toBe("transmission");
  });

  test("LIST lists every export, then ACK; LIST with data gets ERR_INVALID", () => {
    const s = optionsPhase({ exports: [DISK, { name: "b", size: 0, description: "bee" }] });
    const r = optionReplies(s.receive(opt(Option.LIST)).output);
    expect(r.map((x) => x.data)).toEqual([
      { kind: "server", name: "disk", description: "" },
      { kind: "server", name: "b", description: "bee" },
      { kind: "none" },
    ]);
    const bad = optionReplies(s.receive(opt(Option.LIST, { kind: "raw", raw: new Uint8Array(1) })).output);
    expect(bad[0]?.reply).toBe(OptionReply.ERR_INVALID);
  });

  test("INFO sends EXPORT always, BLOCK_SIZE, and NAME/DESCRIPTION/INIT_FLAGS when asked, then ACK", () => {
    const exp = {
      name: "disk",
      size: 4096,
      description: "d",
      initFlags: InitFlag.SPARSE,
      blockSize: { minimum: 512, preferred: 4096, maximum: 65536 },
    };
    const s = optionsPhase({ exports: [exp] });
    const r = optionReplies(
      s.receive(go("disk", [Info.NAME, Info.DESCRIPTION, Info.INIT_FLAGS, 99], Option.INFO)).output,
    );
    expect(r.map((x) => x.data.kind === "info" ? x.data.info.kind : x.reply)).toEqual([
      "export",
      "block-size",
      "name",
      "description",
      "init-flags",
      OptionReply.ACK,
    ]);
    expect(r[0]?.data).toEqual({
      kind: "info",
      info: { kind: "export", info: 0, size: 4096n, transmissionFlags: DEFAULT_FLAGS },
    });
    expect(s.state.phase).toBe("options");
    // Without asking: EXPORT and the constraints only.
    expect(optionReplies(s.receive(go("disk", [], Option.INFO)).output).length).toBe(3);
  });

  test("INFO/GO of an unknown export gets ERR_UNKNOWN and no INFO", () => {
    const s = optionsPhase();
    const r = optionReplies(s.receive(go("nope")).output);
    expect(r.map((x) => x.reply)).toEqual([OptionReply.ERR_UNKNOWN]);
    expect(s.state.phase).toBe("options");
  });

  test("malformed GO data gets ERR_INVALID", () => {
    const s = optionsPhase();
    // name length 9 in 6 bytes of data
    const bad = hex("49484156454f5054" + "00000007" + "00000006" + "00000009" + "0000");
    const step = s.receive(bad);
    expect(types(step)).toEqual(["finding", "option"]);
    expect(optionReplies(step.output)[0]?.reply).toBe(OptionReply.ERR_INVALID);
  });

  test("the empty name selects the default export", () => {
    const s = optionsPhase({ exports: [{ name: "x", size: 512 }, DISK], defaultExport: "disk" });
    const step = s.receive(go("", [Info.NAME]));
    expect(optionReplies(step.output)[1]?.data).toEqual({
      kind: "info",
      info: { kind: "name", info: 1, name: "disk" },
    });
    const none = optionsPhase({ exports: [DISK], defaultExport: null });
    expect(optionReplies(none.receive(go("")).output)[0]?.reply).toBe(OptionReply.ERR_UNKNOWN);
  });

  test("a lookup callback serves unlisted exports", () => {
    const s = optionsPhase({ lookup: (n) => n === "hidden" ? { name: n, size: 512 } : undefined });
    expect(optionReplies(s.receive(opt(Option.LIST)).output).map((x) => x.reply)).toEqual([OptionReply.ACK]);
    s.receive(go("hidden"));
    expect(s.state.export?.name).toBe("hidden");
  });

  test("blockSizeRequired: GO without BLOCK_SIZE gets the constraints then ERR_BLOCK_SIZE_REQD", () => {
    const exp = { name: "disk", size: 4096, blockSize: { minimum: 512, preferred: 4096, maximum: 65536 } };
    const s = optionsPhase({ exports: [exp], blockSizeRequired: true });
    const r = optionReplies(s.receive(go("disk", [])).output);
    expect(r.map((x) => x.reply)).toEqual([OptionReply.INFO, OptionReply.ERR_BLOCK_SIZE_REQD]);
    expect(r[0]?.data).toMatchObject({ info: { kind: "block-size", minimum: 512 } });
    expect(s.state.phase).toBe("options");
    const ok = optionReplies(s.receive(go("disk", [Info.BLOCK_SIZE])).output);
    expect(ok.at(-1)?.reply).toBe(OptionReply.ACK);
    expect(s.state.phase).toBe("transmission");
  });

  test("ABORT gets ACK and ends the session", () => {
    const s = optionsPhase();
    const step = s.receive(opt(Option.ABORT));
    expect(optionReplies(step.output)[0]).toMatchObject({ option: Option.ABORT, reply: OptionReply.ACK });
    expect(types(step)).toEqual(["option", "abort"]);
    expect(s.state.phase).toBe("closed");
    expect(s.receive(opt(Option.LIST)).output).toEqual([]);
  });

  test("GO ends haggling: ACK, then transmission with DF only under structured replies", () => {
    const simple = transmission();
    expect(simple.s.state.transmissionFlags & TransmissionFlag.SEND_DF).toBe(0);
    const sr = transmission({}, { structured: true });
    expect(sr.s.state.transmissionFlags & TransmissionFlag.SEND_DF).toBe(TransmissionFlag.SEND_DF);
    expect(sr.s.state.replyStyle).toBe("structured");
  });

  test("a read-only export advertises READ_ONLY", () => {
    const { s } = transmission({ exports: [{ ...DISK, readOnly: true }] });
    expect(s.state.transmissionFlags & TransmissionFlag.READ_ONLY).toBe(TransmissionFlag.READ_ONLY);
  });

  test("option data above maxOptionLength without fixed newstyle closes (no reply can refuse it)", () => {
    const s = optionsPhase({ exports: [DISK], maxOptionLength: 16 }, ClientFlag.C_NO_ZEROES);
    const step = s.receive(opt(Option.EXPORT_NAME, { kind: "export-name", name: "x".repeat(17) }));
    expect(closeRule(step.events)).toBe("max-option-length");
    expect(s.state.phase).toBe("closed");
  });

  test("option data above maxOptionLength is skipped and answered ERR_TOO_BIG; the stream stays in sync", () => {
    const s = optionsPhase({ exports: [DISK], maxOptionLength: 16 });
    const big = opt(Option.LIST, { kind: "raw", raw: new Uint8Array(40) });
    const both = concat([big, opt(Option.LIST)]);
    const out = [...s.receive(both.subarray(0, 30)).output, ...s.receive(both.subarray(30)).output];
    expect(optionReplies(out).map((x) => x.reply)).toEqual([
      OptionReply.ERR_TOO_BIG,
      OptionReply.SERVER,
      OptionReply.ACK,
    ]);
  });
});

describe("structured replies and extended headers", () => {
  test("STRUCTURED_REPLY is refused with ERR_UNSUP when disabled, ERR_EXT_HEADER_REQD after extended headers", () => {
    const off = optionsPhase({ exports: [DISK], structuredReplies: false });
    expect(optionReplies(off.receive(opt(Option.STRUCTURED_REPLY)).output)[0]?.reply).toBe(
      OptionReply.ERR_UNSUP,
    );
    const s = optionsPhase();
    expect(optionReplies(s.receive(opt(Option.EXTENDED_HEADERS)).output)[0]?.reply).toBe(OptionReply.ACK);
    expect(optionReplies(s.receive(opt(Option.STRUCTURED_REPLY)).output)[0]?.reply).toBe(
      OptionReply.ERR_EXT_HEADER_REQD,
    );
    expect(s.state.replyStyle).toBe("extended");
  });

  test("EXTENDED_HEADERS is refused with ERR_UNSUP when disabled; options without data refuse data", () => {
    const off = optionsPhase({ exports: [DISK], extendedHeaders: false });
    expect(optionReplies(off.receive(opt(Option.EXTENDED_HEADERS)).output)[0]?.reply).toBe(
      OptionReply.ERR_UNSUP,
    );
    const s = optionsPhase();
    const raw = { kind: "raw", raw: new Uint8Array(2) } as const;
    expect(optionReplies(s.receive(opt(Option.STRUCTURED_REPLY, raw)).output)[0]?.reply).toBe(
      OptionReply.ERR_INVALID,
    );
    expect(s.state.replyStyle).toBe("simple");
  });
});

describe("metadata contexts", () => {
  const exp = {
    name: "disk",
    size: 1 << 20,
    contexts: ["base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:a", "qemu:dirty-bitmap:b"],
  };

  const wideExp = { ...exp, wideContexts: ["qemu:dirty-bitmap:b"] };
  const listed = (out: readonly Uint8Array[]) =>
    optionReplies(out).map((r) =>
      r.data.kind === "meta-context" ? r.data.name : r.reply === OptionReply.ACK ? "ACK" : r.reply
    );

  test("without extended headers, LIST lists a 64-bit context and ends with ERR_EXT_HEADER_REQD", () => {
    const s = optionsPhase({ exports: [wideExp] });
    s.receive(opt(Option.STRUCTURED_REPLY));
    expect(listed(s.receive(meta(false, "disk", ["qemu:dirty-bitmap:"])).output)).toEqual([
      "qemu:dirty-bitmap:a",
      "qemu:dirty-bitmap:b",
      OptionReply.ERR_EXT_HEADER_REQD,
    ]);
    // Never for a list limited to base: (or to 32-bit contexts).
    expect(listed(s.receive(meta(false, "disk", ["base:"])).output)).toEqual(["base:allocation", "ACK"]);
    expect(listed(s.receive(meta(false, "disk", ["qemu:dirty-bitmap:a"])).output)).toEqual([
      "qemu:dirty-bitmap:a",
      "ACK",
    ]);
  });

  test("without extended headers, SET selecting a 64-bit context fails with ERR_EXT_HEADER_REQD and selects nothing", () => {
    const s = optionsPhase({ exports: [wideExp] });
    s.receive(opt(Option.STRUCTURED_REPLY));
    const r = optionReplies(s.receive(meta(true, "disk", ["base:allocation", "qemu:dirty-bitmap:b"])).output);
    expect(r.map((x) => x.reply)).toEqual([OptionReply.ERR_EXT_HEADER_REQD]);
    expect(s.state.contexts.size).toBe(0);
    // A selection of 32-bit contexts only still succeeds.
    expect(listed(s.receive(meta(true, "disk", ["base:allocation"])).output)).toEqual([
      "base:allocation",
      "ACK",
    ]);
  });

  test("with extended headers, a 64-bit context is listed and selected like any other", () => {
    const s = optionsPhase({ exports: [wideExp] });
    s.receive(opt(Option.EXTENDED_HEADERS));
    expect(listed(s.receive(meta(false, "disk", ["qemu:dirty-bitmap:b"])).output)).toEqual([
      "qemu:dirty-bitmap:b",
      "ACK",
    ]);
    expect(listed(s.receive(meta(true, "disk", ["qemu:dirty-bitmap:b"])).output)).toEqual([
      "qemu:dirty-bitmap:b",
      "ACK",
    ]);
    expect([...s.state.contexts.values()]).toEqual(["qemu:dirty-bitmap:b"]);
  });

  test("a 64-bit context must be one of the export's contexts, outside base:", () => {
    expect(localError(() => new ServerSession({ exports: [{ ...exp, wideContexts: ["base:allocation"] }] })))
      .toEqual({ code: "bad-argument", rule: "wide-context" });
    expect(localError(() => new ServerSession({ exports: [{ ...exp, wideContexts: ["qemu:other"] }] })))
      .toEqual({ code: "bad-argument", rule: "wide-context" });
  });

  test("SET_META_CONTEXT before structured replies gets ERR_INVALID", () => {
    const s = optionsPhase({ exports: [exp] });
    expect(optionReplies(s.receive(meta(true, "disk", ["base:allocation"])).output)[0]?.reply).toBe(
      OptionReply.ERR_INVALID,
    );
    expect(optionReplies(s.receive(meta(false, "disk", [])).output)[0]?.reply).toBe(OptionReply.ERR_INVALID);
  });

  test("LIST matches everything, namespace wildcards and exact names; ids are 0", () => {
    const s = optionsPhase({ exports: [exp] });
    s.receive(opt(Option.STRUCTURED_REPLY));
    const names = (q: string[]) =>
      optionReplies(s.receive(meta(false, "disk", q)).output).flatMap((r) =>
        r.data.kind === "meta-context" ? [`${r.data.id}:${r.data.name}`] : []
      );
    expect(names([])).toEqual(exp.contexts.map((n) => `0:${n}`));
    expect(names(["qemu:"])).toEqual([
      "0:qemu:allocation-depth",
      "0:qemu:dirty-bitmap:a",
      "0:qemu:dirty-bitmap:b",
    ]);
    expect(names(["qemu:dirty-bitmap:"])).toEqual(["0:qemu:dirty-bitmap:a", "0:qemu:dirty-bitmap:b"]);
    expect(names(["base:", "x-other:thing"])).toEqual(["0:base:allocation"]);
    expect(names(["base:nothing"])).toEqual([]);
  });

  test("SET selects exact names with unique ids; a wildcard selects nothing; unknown export ERR_UNKNOWN", () => {
    const s = optionsPhase({ exports: [exp] });
    s.receive(opt(Option.EXTENDED_HEADERS));
    const r = optionReplies(
      s.receive(meta(true, "disk", ["qemu:", "qemu:dirty-bitmap:b", "base:allocation"])).output,
    );
    expect(r.map((x) => x.data)).toEqual([
      { kind: "meta-context", id: 4, name: "qemu:dirty-bitmap:b" },
      { kind: "meta-context", id: 1, name: "base:allocation" },
      { kind: "none" },
    ]);
    expect(s.state.contexts).toEqual(new Map([[4, "qemu:dirty-bitmap:b"], [1, "base:allocation"]]));
    expect(optionReplies(s.receive(meta(true, "nope", ["base:allocation"])).output)[0]?.reply).toBe(
      OptionReply.ERR_UNKNOWN,
    );
    // A failed SET still replaces the selection.
    expect(s.state.contexts.size).toBe(0);
  });

  test("contexts count only for the export the last SET named; BLOCK_STATUS is refused otherwise", () => {
    const other = { name: "other", size: 1 << 20, contexts: ["base:allocation"] };
    const { s } = transmission({ exports: [DISK, other] }, {
      structured: true,
      contexts: ["base:allocation"],
      name: "disk",
    });
    expect(s.state.contexts.size).toBe(1);
    const t = transmission({ exports: [DISK, other] }, { structured: true });
    // SET for "disk", GO for "other".
    const s2 = optionsPhase({ exports: [DISK, other] });
    s2.receive(opt(Option.STRUCTURED_REPLY));
    s2.receive(meta(true, "disk", ["base:allocation"]));
    s2.receive(go("other"));
    expect(s2.state.contexts.size).toBe(0);
    const step = s2.receive(req(Command.BLOCK_STATUS, 1n, 0n, 512n));
    expect(refused(step.events)).toBe(ErrorValue.EINVAL);
    expect(refused(t.s.receive(req(Command.BLOCK_STATUS, 1n, 0n, 512n)).events)).toBe(ErrorValue.EINVAL);
  });

  test("BLOCK_STATUS_PAYLOAD is advertised only with extended headers and a selected context", () => {
    const a = transmission({}, { extended: true, contexts: ["base:allocation"] });
    expect(a.s.state.transmissionFlags & TransmissionFlag.BLOCK_STATUS_PAYLOAD).not.toBe(0);
    const b = transmission({}, { extended: true });
    expect(b.s.state.transmissionFlags & TransmissionFlag.BLOCK_STATUS_PAYLOAD).toBe(0);
    const c = transmission({}, { structured: true, contexts: ["base:allocation"] });
    expect(c.s.state.transmissionFlags & TransmissionFlag.BLOCK_STATUS_PAYLOAD).toBe(0);
    const d = transmission({ blockStatusPayload: false }, { extended: true, contexts: ["base:allocation"] });
    expect(d.s.state.transmissionFlags & TransmissionFlag.BLOCK_STATUS_PAYLOAD).toBe(0);
  });
});

describe("TLS policy", () => {
  test("tls off: STARTTLS gets ERR_POLICY", () => {
    const s = optionsPhase();
    expect(optionReplies(s.receive(opt(Option.STARTTLS)).output)[0]?.reply).toBe(OptionReply.ERR_POLICY);
  });

  test("tls required: options get ERR_TLS_REQD, EXPORT_NAME closes, ABORT is answered", () => {
    const s = optionsPhase({ exports: [DISK], tls: "required" });
    for (const o of [opt(Option.LIST), go("disk"), opt(Option.STRUCTURED_REPLY), meta(false, "disk", [])]) {
      expect(optionReplies(s.receive(o).output)[0]?.reply).toBe(OptionReply.ERR_TLS_REQD);
    }
    const s2 = optionsPhase({ exports: [DISK], tls: "required" });
    expect(closeRule(s2.receive(opt(Option.EXPORT_NAME, { kind: "export-name", name: "disk" })).events)).toBe(
      "export-name-refused",
    );
    expect(types(s.receive(opt(Option.ABORT)))).toEqual(["option", "abort"]);
  });

  test("STARTTLS: ACK and an event with the early bytes; state wiped after tlsEstablished(); no second STARTTLS", () => {
    const s = optionsPhase({ exports: [DISK], tls: "required" });
    s.receive(opt(Option.STRUCTURED_REPLY)); // ERR_TLS_REQD
    const hello = hex("16030100");
    const step = s.receive(concat([opt(Option.STARTTLS), hello]));
    expect(optionReplies(step.output)[0]?.reply).toBe(OptionReply.ACK);
    expect(step.events.at(-1)).toEqual({ type: "starttls", early: hello });
    expect(localError(() => s.receive(new Uint8Array(1))).rule).toBe("receive-during-tls");
    s.tlsEstablished();
    expect(s.state.tls).toBe(true);
    expect(optionReplies(s.receive(opt(Option.STARTTLS)).output)[0]?.reply).toBe(OptionReply.ERR_INVALID);
    expect(optionReplies(s.receive(go("disk")).output).at(-1)?.reply).toBe(OptionReply.ACK);
  });

  test("STARTTLS wipes structured replies negotiated before it", () => {
    const s = optionsPhase({ exports: [DISK], tls: "offered" });
    s.receive(opt(Option.STRUCTURED_REPLY));
    expect(s.state.replyStyle).toBe("structured");
    s.receive(opt(Option.STARTTLS));
    s.tlsEstablished();
    expect(s.state.replyStyle).toBe("simple");
  });

  test("STARTTLS with data gets ERR_INVALID", () => {
    const s = optionsPhase({ exports: [DISK], tls: "offered" });
    const r = optionReplies(s.receive(opt(Option.STARTTLS, { kind: "raw", raw: new Uint8Array(1) })).output);
    expect(r[0]?.reply).toBe(OptionReply.ERR_INVALID);
    expect(s.state.phase).toBe("options");
  });
});

describe("request validation", () => {
  const cases: [string, Parameters<typeof transmission>, Uint8Array, number][] = [
    ["READ beyond the end", [], req(Command.READ, 1n, 1048064n, 1024n), ErrorValue.EINVAL],
    [
      "WRITE beyond the end",
      [],
      req(Command.WRITE, 1n, 1048064n, 1024n, { data: new Uint8Array(1024) }),
      ErrorValue.ENOSPC,
    ],
    ["WRITE_ZEROES beyond the end", [], req(Command.WRITE_ZEROES, 1n, 1048576n, 1n), ErrorValue.ENOSPC],
    ["TRIM beyond the end", [], req(Command.TRIM, 1n, 1048576n, 1n), ErrorValue.EINVAL],
    [
      "WRITE on a read-only export",
      [{ exports: [{ ...DISK, readOnly: true }] }],
      req(Command.WRITE, 1n, 0n, 4n, { data: new Uint8Array(4) }),
      ErrorValue.EPERM,
    ],
    [
      "TRIM on a read-only export",
      [{ exports: [{ ...DISK, readOnly: true }] }],
      req(Command.TRIM, 1n, 0n, 4n),
      ErrorValue.EPERM,
    ],
    [
      "WRITE_ZEROES on a read-only export",
      [{ exports: [{ ...DISK, readOnly: true }] }],
      req(Command.WRITE_ZEROES, 1n, 0n, 4n),
      ErrorValue.EPERM,
    ],
    [
      "FLUSH not advertised",
      [{ exports: [{ ...DISK, transmissionFlags: 0 }] }],
      req(Command.FLUSH, 1n, 0n, 0n),
      ErrorValue.EINVAL,
    ],
    [
      "TRIM not advertised",
      [{ exports: [{ ...DISK, transmissionFlags: 0 }] }],
      req(Command.TRIM, 1n, 0n, 512n),
      ErrorValue.EINVAL,
    ],
    [
      "WRITE_ZEROES not advertised",
      [{ exports: [{ ...DISK, transmissionFlags: 0 }] }],
      req(Command.WRITE_ZEROES, 1n, 0n, 512n),
      ErrorValue.EINVAL,
    ],
    [
      "CACHE not advertised",
      [{ exports: [{ ...DISK, transmissionFlags: 0 }] }],
      req(Command.CACHE, 1n, 0n, 512n),
      ErrorValue.EINVAL,
    ],
    [
      "FUA not advertised",
      [{ exports: [{ ...DISK, transmissionFlags: TransmissionFlag.SEND_FLUSH }] }],
      req(Command.WRITE, 1n, 0n, 4n, { flags: CommandFlag.FUA, data: new Uint8Array(4) }),
      ErrorValue.EINVAL,
    ],
    [
      "FAST_ZERO not advertised",
      [{ exports: [{ ...DISK, transmissionFlags: TransmissionFlag.SEND_WRITE_ZEROES }] }],
      req(Command.WRITE_ZEROES, 1n, 0n, 4n, { flags: CommandFlag.FAST_ZERO }),
      ErrorValue.EINVAL,
    ],
    [
      "DF under simple replies",
      [],
      req(Command.READ, 1n, 0n, 512n, { flags: CommandFlag.DF }),
      ErrorValue.EINVAL,
    ],
    [
      "a flag invalid for the command (NO_HOLE on READ)",
      [],
      req(Command.READ, 1n, 0n, 512n, { flags: CommandFlag.NO_HOLE }),
      ErrorValue.EINVAL,
    ],
    ["an unknown command", [], req(42, 1n, 0n, 512n), ErrorValue.EINVAL],
    ["RESIZE, never advertised", [], req(Command.RESIZE, 1n, 0n, 0n), ErrorValue.EINVAL],
    ["a READ of 0 bytes", [], req(Command.READ, 1n, 0n, 0n), ErrorValue.EINVAL],
    ["FLUSH with an offset", [], req(Command.FLUSH, 1n, 512n, 0n), ErrorValue.EINVAL],
    [
      "a READ above the maximum payload",
      [{ exports: [{ ...DISK, blockSize: { minimum: 1, preferred: 4096, maximum: 4096 } }] }],
      req(Command.READ, 1n, 0n, 8192n),
      ErrorValue.EOVERFLOW,
    ],
    [
      "a WRITE above the maximum payload",
      [{ exports: [{ ...DISK, blockSize: { minimum: 1, preferred: 4096, maximum: 4096 } }] }],
      req(Command.WRITE, 1n, 0n, 8192n, { data: new Uint8Array(8192) }),
      ErrorValue.EINVAL,
    ],
    [
      "a READ not aligned to the minimum block",
      [{ exports: [{ ...DISK, blockSize: { minimum: 512, preferred: 4096, maximum: 65536 } }] }],
      req(Command.READ, 1n, 256n, 512n),
      ErrorValue.EINVAL,
    ],
    [
      "a length not aligned to the minimum block",
      [{ exports: [{ ...DISK, blockSize: { minimum: 512, preferred: 4096, maximum: 65536 } }] }],
      req(Command.TRIM, 1n, 0n, 100n),
      ErrorValue.EINVAL,
    ],
    ["BLOCK_STATUS under simple replies", [], req(Command.BLOCK_STATUS, 1n, 0n, 512n), ErrorValue.EINVAL],
    [
      "BLOCK_STATUS without a selected context",
      [{}, { structured: true }],
      req(Command.BLOCK_STATUS, 1n, 0n, 512n),
      ErrorValue.EINVAL,
    ],
    [
      "BLOCK_STATUS beyond the end",
      [{}, { structured: true, contexts: ["base:allocation"] }],
      req(Command.BLOCK_STATUS, 1n, 1048576n, 512n),
      ErrorValue.EINVAL,
    ],
    [
      "an extended request without extended headers",
      [],
      req(Command.READ, 1n, 0n, 512n, { extended: true }),
      ErrorValue.EINVAL,
    ],
    [
      "a compact request under extended headers",
      [{}, { extended: true }],
      req(Command.READ, 1n, 0n, 512n),
      ErrorValue.EINVAL,
    ],
    [
      "block-status payload form not advertised",
      [{}, { extended: true }],
      req(Command.BLOCK_STATUS, 1n, 0n, 12n, {
        extended: true,
        flags: CommandFlag.PAYLOAD_LEN,
        blockStatus: { effectLength: 512n, contextIds: [1] },
      }),
      ErrorValue.EINVAL,
    ],
    [
      "block-status payload naming an unselected context",
      [{}, { extended: true, contexts: ["base:allocation"] }],
      req(Command.BLOCK_STATUS, 1n, 0n, 12n, {
        extended: true,
        flags: CommandFlag.PAYLOAD_LEN,
        blockStatus: { effectLength: 512n, contextIds: [2] },
      }),
      ErrorValue.EINVAL,
    ],
  ];
  for (const [what, args, bytes, error] of cases) {
    test(`${what} is refused with ${error}, and the next request still decodes`, () => {
      const { s } = transmission(...args);
      const ext = s.state.replyStyle === "extended";
      const next = req(Command.CACHE, 99n, 0n, 0n, { extended: ext }); // also refused (length 0): a marker
      const step = s.receive(concat([bytes, next]));
      expect(
        step.events.map((e) => e.type === "refused" ? `${e.request.cookie}:${e.error}` : e.type).filter((t) =>
          t !== "finding"
        ),
      ).toEqual([
        `1:${error}`,
        `99:${ErrorValue.EINVAL}`,
      ]);
      const r = replies(step.output, { extendedHeaders: ext });
      const first = r[0]!;
      if (first.type === "simple-reply") expect(first).toEqual({ type: "simple-reply", error, cookie: 1n });
      else expect(first.payload).toMatchObject({ kind: "error", error });
      expect(s.state.inFlight).toBe(0);
    });
  }

  test("a WRITE whose payload is above the buffer limit is refused and its payload discarded, in any split", () => {
    const { s } = transmission({ maxPayloadLength: 1024 });
    const bytes = concat([
      req(Command.WRITE, 1n, 0n, 4096n, { data: new Uint8Array(4096).fill(7) }),
      req(Command.READ, 2n, 0n, 512n),
    ]);
    const events: ServerEvent[] = [];
    for (let at = 0; at < bytes.length; at += 300) {
      events.push(...s.receive(bytes.subarray(at, at + 300)).events);
    }
    expect(events.map((e) => e.type)).toEqual(["refused", "request"]);
    expect(refused(events)).toBe(ErrorValue.EINVAL);
  });

  test("valid requests reach the application with their payloads", () => {
    const { s } = transmission({}, { structured: true, contexts: ["base:allocation"] });
    const data = Uint8Array.from([1, 2, 3, 4]);
    const step = s.receive(concat([
      req(Command.WRITE, 1n, 8n, 4n, { data, flags: CommandFlag.FUA }),
      req(Command.WRITE_ZEROES, 2n, 0n, 512n, { flags: CommandFlag.NO_HOLE | CommandFlag.FAST_ZERO }),
      req(Command.BLOCK_STATUS, 3n, 0n, 4096n, { flags: CommandFlag.REQ_ONE }),
      req(Command.READ, 4n, 0n, 512n, { flags: CommandFlag.DF }),
      req(Command.FLUSH, 5n, 0n, 0n),
    ]));
    expect(types(step)).toEqual(["request", "request", "request", "request", "request"]);
    const [w, , bs] = step.events;
    expect(w?.type === "request" && w.request.data).toEqual(data);
    expect(bs).toMatchObject({ contexts: [1], effectLength: 4096n });
    expect(step.output).toEqual([]);
    expect(s.state.inFlight).toBe(5);
  });

  test("the payload form's effect length and context ids are handed on", () => {
    const { s } = transmission({}, { extended: true, contexts: ["base:allocation"] });
    const step = s.receive(req(Command.BLOCK_STATUS, 3n, 0n, 12n, {
      extended: true,
      flags: CommandFlag.PAYLOAD_LEN,
      blockStatus: { effectLength: 8192n, contextIds: [1] },
    }));
    expect(step.events[0]).toMatchObject({ type: "request", contexts: [1], effectLength: 8192n });
  });

  test("qemu's extended WRITE without PAYLOAD_LEN is tolerated (a finding, once)", () => {
    const { s } = transmission({}, { extended: true });
    const w = (c: bigint) => req(Command.WRITE, c, 0n, 4n, { extended: true, data: new Uint8Array(4) });
    const step = s.receive(concat([w(1n), w(2n)]));
    expect(types(step)).toEqual(["finding", "request", "request"]);
    expect(step.events[0]).toMatchObject({ finding: { rule: "write-payload-len" } });
  });

  test("strict mode closes on that same finding", () => {
    const { s } = transmission({ strict: true }, { extended: true });
    const step = s.receive(req(Command.WRITE, 1n, 0n, 4n, { extended: true, data: new Uint8Array(4) }));
    expect(closeRule(step.events)).toBe("write-payload-len");
    expect(s.state.phase).toBe("closed");
  });

  test("a cookie already in flight is refused (and reported), the first request keeps it", () => {
    const { s } = transmission();
    s.receive(req(Command.READ, 1n, 0n, 512n));
    const step = s.receive(req(Command.READ, 1n, 512n, 512n));
    expect(types(step)).toEqual(["finding", "refused"]);
    expect(step.events[0]?.type === "finding" && step.events[0].finding).toMatchObject({
      rule: "cookie-in-flight",
      code: "duplicate",
    });
    expect(s.state.inFlight).toBe(1);
    expect(s.replyRead(1n, new Uint8Array(512))[1]?.length).toBe(512);
  });

  test("hundreds of requests in flight are tracked, answered in any order, duplicates still caught", () => {
    const { s } = transmission();
    const cookies = Array.from(
      { length: 300 },
      (_, i) => BigInt(i * 7919 + 1) + (i % 2 === 0 ? 0n : 1n << 63n),
    );
    const step = s.receive(concat(cookies.map((c) => req(Command.FLUSH, c, 0n, 0n))));
    expect(step.events.length).toBe(300);
    expect(s.state.inFlight).toBe(300);
    expect(types(s.receive(req(Command.FLUSH, cookies[123]!, 0n, 0n)))).toEqual(["finding", "refused"]);
    const order = [...cookies].sort((a, b) => Number((a * 31n) % 1009n) - Number((b * 31n) % 1009n));
    for (const c of order) {
      expect(replies(s.replyOk(c))[0]).toEqual({ type: "simple-reply", error: 0, cookie: c });
    }
    expect(s.state.inFlight).toBe(0);
    expect(localError(() => s.replyOk(cookies[5]!)).code).toBe("unknown-cookie");
    // And back to a short list.
    s.receive(req(Command.FLUSH, 5n, 0n, 0n));
    expect(s.replyOk(5).length).toBe(1);
  });

  test("an unknown command is refused as not supported, with EINVAL", () => {
    const { s } = transmission();
    const [e] = s.receive(req(42, 1n, 0n, 512n)).events;
    expect(e).toMatchObject({
      type: "refused",
      error: ErrorValue.EINVAL,
      message: "command 42 is not supported",
    });
  });

  test("a bad request magic closes the session", () => {
    const { s } = transmission();
    expect(closeRule(s.receive(new Uint8Array(28)).events)).toBe("magic");
  });

  test("DISC: a disconnect event, replies to requests in flight still allowed, bytes after it reported", () => {
    const { s } = transmission();
    const step = s.receive(concat([req(Command.READ, 1n, 0n, 512n), req(Command.DISC, 2n, 0n, 0n)]));
    expect(types(step)).toEqual(["request", "disconnect"]);
    expect(s.state.phase).toBe("closing");
    expect(s.replyRead(1n, new Uint8Array(512)).length).toBe(2);
    const after = s.receive(req(Command.READ, 3n, 0n, 512n)).events;
    expect(after.map((e) => e.type === "finding" && e.finding.rule)).toEqual(["after-disc"]);
  });
});

describe("request frames", () => {
  // The session builds a plain request's frame from the header fields it reads (codec/_request_plain.ts's fast
  // path) and decodes every other one with decodeRequest(): either way the application must see the frame
  // decodeRequest() gives for the same bytes. Every command (and an unknown one) with every known flag set and
  // some reserved bits, in both header styles, under both negotiations; cookies and offsets on both sides of
  // 2^53 (the u64 built through one number, or through two halves).
  const FLAG_SETS = [...Array.from({ length: 64 }, (_, i) => i), 0x40, 0x8001];
  const COMMANDS = [0, 1, 3, 4, 5, 6, 7, 8, 9];
  const streams = (): Uint8Array[] => {
    const out: Uint8Array[] = [];
    let i = 0;
    for (const extended of [false, true]) {
      for (const command of COMMANDS) {
        for (const flags of FLAG_SETS) {
          i++;
          const big = i % 3 === 0;
          const withPayload = command === Command.WRITE ||
            (extended && (flags & CommandFlag.PAYLOAD_LEN) !== 0);
          const r: Request = {
            type: "request",
            extended,
            flags,
            command,
            cookie: big ? 0xfedc_ba98_7654_3210n + BigInt(i) : BigInt(i),
            offset: big ? 0x8000_0000_0000_0000n + 512n * BigInt(i) : 512n * BigInt(i),
            length: withPayload ? 12n : 4096n + BigInt(i),
          };
          // A block-status payload form (8-byte effect length, context id 1) or 12 bytes of data.
          const payload = hex("0000000000001000" + "00000001");
          out.push(withPayload ? concat([encodeRequest(r), payload]) : encodeRequest(r));
        }
      }
    }
    return out;
  };
  for (const negotiated of [false, true]) {
    for (const split of ["one chunk per request", "3-byte chunks"]) {
      test(`request events carry decodeRequest()'s frame (extended headers ${negotiated ? "" : "not "}negotiated, ${split})`, () => {
        const { s } = transmission({ strict: false }, {
          extended: negotiated,
          contexts: ["base:allocation"],
        });
        const frames = streams();
        const seen: Request[] = [];
        const take = (events: readonly ServerEvent[]) => {
          for (const e of events) if (e.type === "request" || e.type === "refused") seen.push(e.request);
        };
        if (split === "one chunk per request") { for (const f of frames) take(s.receive(f).events); }
        else {
          const all = concat(frames);
          for (let at = 0; at < all.length; at += 3) take(s.receive(all.slice(at, at + 3)).events);
        }
        const expected = frames.map((f) => {
          const r = decodeRequest(f, { strict: false, extendedHeaders: negotiated });
          if (!r.done) throw new Error("incomplete");
          return r.frame;
        });
        expect(seen.length).toBe(expected.length);
        for (let i = 0; i < expected.length; i++) expect(seen[i]).toStrictEqual(expected[i]);
      });
    }
  }
});

describe("reply builders", () => {
  test("simple replies: READ data after a 16-byte header, errors as simple replies, no chunks", () => {
    const { s } = transmission();
    s.receive(
      concat([
        req(Command.READ, 1n, 0n, 4n),
        req(Command.READ, 2n, 0n, 4n),
        req(Command.WRITE, 3n, 0n, 1n, { data: new Uint8Array(1) }),
      ]),
    );
    expect(toHex(s.replyRead(1n, Uint8Array.from([9, 8, 7, 6])))).toBe(
      "67446698" + "00000000" + "0000000000000001" + "09080706",
    );
    expect(localError(() => s.readChunk(2n, 0, new Uint8Array(4), true)).code).toBe("not-negotiated");
    expect(localError(() => s.holeChunk(2n, 0, 4, true)).code).toBe("not-negotiated");
    expect(toHex(s.replyError(2n, ErrorValue.EIO, "ignored"))).toBe(
      "67446698" + "00000005" + "0000000000000002",
    );
    expect(toHex(s.replyOk(3))).toBe("67446698" + "00000000" + "0000000000000003");
  });

  test("structured replies: READ as one OFFSET_DATA chunk with DONE; errors as ERROR chunks with messages", () => {
    const { s } = transmission({}, { structured: true });
    s.receive(
      concat([
        req(Command.READ, 1n, 0x200n, 4n),
        req(Command.TRIM, 2n, 0n, 512n),
        req(Command.FLUSH, 3n, 0n, 0n),
      ]),
    );
    expect(toHex(s.replyRead(1n, Uint8Array.from([1, 2, 3, 4])))).toBe(
      "668e33ef" + "0001" + "0001" + "0000000000000001" + "0000000c" + "0000000000000200" + "01020304",
    );
    expect(toHex(s.replyError(2n, ErrorValue.ENOSPC, "full"))).toBe(
      "668e33ef" + "0001" + "8001" + "0000000000000002" + "0000000a" + "0000001c" + "0004" + "66756c6c",
    );
    // Success without data may stay a simple reply under structured replies.
    expect(toHex(s.replyOk(3n))).toBe("67446698" + "00000000" + "0000000000000003");
  });

  test("extended headers: success is a NONE chunk carrying the request's offset; no simple reply exists", () => {
    const { s } = transmission({}, { extended: true });
    s.receive(req(Command.TRIM, 5n, 0x1000n, 512n, { extended: true }));
    expect(toHex(s.replyOk(5n))).toBe(
      "6e8a278c" + "0001" + "0000" + "0000000000000005" + "0000000000001000" + "0000000000000000",
    );
  });

  test("READ chunks must stay in the request, not overlap, and cover it before DONE", () => {
    const { s } = transmission({}, { structured: true });
    s.receive(req(Command.READ, 1n, 1024n, 1024n));
    expect(localError(() => s.readChunk(1n, 512, new Uint8Array(512))).rule).toBe("read-chunk-range");
    expect(localError(() => s.readChunk(1n, 1536, new Uint8Array(1024))).rule).toBe("read-chunk-range");
    expect(localError(() => s.holeChunk(1n, 1024, 0)).rule).toBe("read-chunk-empty");
    s.readChunk(1n, 1024, new Uint8Array(512));
    expect(localError(() => s.holeChunk(1n, 1280, 512)).rule).toBe("read-chunk-overlap");
    expect(localError(() => s.holeChunk(1n, 1536, 256, true)).rule).toBe("read-coverage");
    expect(localError(() => s.replyDone(1n)).rule).toBe("done-incomplete");
    const hole = s.holeChunk(1n, 1536, 512, true);
    expect(replies(hole)[0]).toMatchObject({
      flags: ReplyFlag.DONE,
      chunkType: ReplyType.OFFSET_HOLE,
      payload: { kind: "offset-hole", offset: 1536n, holeSize: 512 },
    });
    // Nothing after DONE.
    expect(localError(() => s.replyDone(1n)).code).toBe("unknown-cookie");
  });

  test("a READ error chunk lets the reply end without full coverage", () => {
    const { s } = transmission({}, { structured: true });
    s.receive(req(Command.READ, 1n, 0n, 1024n));
    s.readChunk(1n, 0, new Uint8Array(512));
    const e = s.readError(1n, 512, ErrorValue.EIO, "bad sector", false);
    expect(replies(e)[0]).toMatchObject({
      chunkType: ReplyType.ERROR_OFFSET,
      flags: 0,
      payload: { offset: 512n },
    });
    expect(localError(() => s.readError(1n, 1024, ErrorValue.EIO)).rule).toBe("read-error-range");
    expect(replies(s.replyDone(1n))[0]).toMatchObject({ chunkType: ReplyType.NONE, flags: ReplyFlag.DONE });
  });

  test("DF: one OFFSET_DATA chunk only", () => {
    const { s } = transmission({}, { structured: true });
    s.receive(req(Command.READ, 1n, 0n, 1024n, { flags: CommandFlag.DF }));
    expect(localError(() => s.holeChunk(1n, 0, 1024, true)).rule).toBe("read-df");
    s.readChunk(1n, 0, new Uint8Array(512));
    expect(localError(() => s.readChunk(1n, 512, new Uint8Array(512), true)).rule).toBe("read-df");
  });

  test("replyRead needs exactly the requested length; replyOk refuses READ and BLOCK_STATUS", () => {
    const { s } = transmission({}, { structured: true, contexts: ["base:allocation"] });
    s.receive(concat([req(Command.READ, 1n, 0n, 8n), req(Command.BLOCK_STATUS, 2n, 0n, 8n)]));
    expect(localError(() => s.replyRead(1n, new Uint8Array(7))).rule).toBe("read-length");
    expect(localError(() => s.replyOk(1n)).rule).toBe("ok-needs-data");
    expect(localError(() => s.replyOk(2n)).rule).toBe("ok-needs-data");
    expect(localError(() => s.replyRead(2n, new Uint8Array(8))).rule).toBe("read-reply");
    // The failed calls changed nothing.
    expect(s.replyRead(1n, new Uint8Array(8))[1]?.length).toBe(8);
  });

  test("error values: nonzero, from the spec, ENOTSUP only for a FAST_ZERO write-zeroes", () => {
    const { s } = transmission();
    s.receive(concat([
      req(Command.WRITE_ZEROES, 1n, 0n, 512n),
      req(Command.WRITE_ZEROES, 2n, 0n, 512n, { flags: CommandFlag.FAST_ZERO }),
    ]));
    expect(localError(() => s.replyError(1n, 0)).rule).toBe("error-zero");
    expect(localError(() => s.replyError(1n, 4)).rule).toBe("error-value");
    expect(localError(() => s.replyError(1n, ErrorValue.ENOTSUP)).rule).toBe("enotsup");
    expect(toHex(s.replyError(2n, ErrorValue.ENOTSUP))).toBe("67446698" + "0000005f" + "0000000000000002");
  });

  test("unknown cookies and bad cookie values are refused before any byte", () => {
    const { s } = transmission();
    expect(localError(() => s.replyOk(77n)).code).toBe("unknown-cookie");
    expect(localError(() => s.replyOk(-1)).code).toBe("bad-argument");
    expect(localError(() => s.replyOk(2 ** 53)).code).toBe("bad-argument");
  });

  test("block status: one chunk per context, DONE on the last, 32-bit descriptors when compact", () => {
    const exp = { ...DISK, contexts: ["base:allocation", "qemu:dirty-bitmap:a"] };
    const { s } = transmission({ exports: [exp] }, {
      structured: true,
      contexts: ["base:allocation", "qemu:dirty-bitmap:a"],
    });
    s.receive(req(Command.BLOCK_STATUS, 1n, 0n, 8192n));
    expect(
      localError(() => s.replyBlockStatus(1n, [{ contextId: 1, extents: [{ length: 4096, status: 0 }] }]))
        .rule,
    )
      .toBe("block-status-contexts");
    expect(
      localError(() =>
        s.replyBlockStatus(1n, [
          { contextId: 1, extents: [{ length: 4096, status: 0 }] },
          { contextId: 1, extents: [{ length: 4096, status: 0 }] },
        ])
      ).rule,
    ).toBe("block-status-context");
    expect(
      localError(() =>
        s.replyBlockStatus(1n, [
          { contextId: 1, extents: [{ length: 4096, status: 2 ** 32 }] },
          { contextId: 2, extents: [{ length: 4096, status: 0 }] },
        ])
      ).rule,
    ).toBe("extent-32");
    expect(
      localError(() =>
        s.replyBlockStatus(1n, [
          { contextId: 1, extents: [{ length: 0, status: 0 }] },
          { contextId: 2, extents: [{ length: 4096, status: 0 }] },
        ])
      ).rule,
    ).toBe("extent-zero");
    expect(
      localError(() =>
        s.replyBlockStatus(1n, [
          { contextId: 1, extents: [{ length: 8192, status: 0 }, { length: 512, status: 1 }] },
          { contextId: 2, extents: [{ length: 4096, status: 0 }] },
        ])
      ).rule,
    ).toBe("extent-range");
    expect(
      localError(() =>
        s.replyBlockStatus(1n, [
          { contextId: 1, extents: [{ length: 2 << 20, status: 0 }] },
          { contextId: 2, extents: [{ length: 4096, status: 0 }] },
        ])
      ).rule,
    ).toBe("extent-end");
    const out = s.replyBlockStatus(1n, [
      { contextId: 2, extents: [{ length: 8192, status: 1 }] },
      { contextId: 1, extents: [{ length: 4096, status: 0 }, { length: 65536, status: 3 }] },
    ]);
    expect(toHex(out)).toBe(
      "668e33ef" + "0000" + "0005" + "0000000000000001" + "0000000c" + "00000002" + "00002000" + "00000001" +
        "668e33ef" + "0001" + "0005" + "0000000000000001" + "00000014" + "00000001" + "00001000" +
        "00000000" +
        "00010000" + "00000003",
    );
  });

  test("block status under REQ_ONE: exactly one extent, no longer than the request; extended: 64-bit", () => {
    const { s } = transmission({}, { extended: true, contexts: ["base:allocation"] });
    s.receive(req(Command.BLOCK_STATUS, 1n, 0n, 4096n, { extended: true, flags: CommandFlag.REQ_ONE }));
    expect(
      localError(() =>
        s.replyBlockStatus(1n, [{
          contextId: 1,
          extents: [{ length: 512, status: 0 }, { length: 512, status: 0 }],
        }])
      ).rule,
    )
      .toBe("block-status-extents");
    expect(
      localError(() => s.replyBlockStatus(1n, [{ contextId: 1, extents: [{ length: 8192, status: 0 }] }]))
        .rule,
    )
      .toBe("extent-end");
    const out = s.replyBlockStatus(1n, [{ contextId: 1, extents: [{ length: 4096n, status: 2n ** 33n }] }]);
    expect(toHex(out)).toBe(
      "6e8a278c" + "0001" + "0006" + "0000000000000001" + "0000000000000000" + "0000000000000018" +
        "00000001" + "00000001" + "0000000000001000" + "0000000200000000",
    );
  });
});

describe("end of the client's stream", () => {
  const ended = (events: readonly ServerEvent[]) => {
    expect(events.length).toBe(1);
    const e = events[0]!;
    if (e.type !== "end") throw new Error(`not an end event: ${e.type}`);
    return { clean: e.clean, reason: e.reason, inFlight: e.inFlight, partialBytes: e.partialBytes };
  };

  test("end() after NBD_CMD_DISC is clean, and the request still in flight can be answered", () => {
    const { s } = transmission();
    s.receive(req(Command.READ, 5n, 0n, 512n));
    expect(types(s.receive(req(Command.DISC, 6n, 0n, 0n)))).toEqual(["disconnect"]);
    const step = s.end();
    expect(step.output).toEqual([]);
    expect(ended(step.events)).toEqual({ clean: true, reason: "disconnect", inFlight: 1, partialBytes: 0 });
    expect(s.state.phase).toBe("closed");
    expect(s.replyRead(5n, new Uint8Array(512)).map((b) => b.length)).toEqual([16, 512]);
  });

  test("end() after NBD_OPT_ABORT is clean", () => {
    const s = optionsPhase();
    expect(types(s.receive(opt(Option.ABORT)))).toEqual(["option", "abort"]);
    expect(ended(s.end().events)).toEqual({ clean: true, reason: "abort", inFlight: 0, partialBytes: 0 });
  });

  test("end() inside a request header is not clean and counts the bytes held", () => {
    const { s } = transmission();
    s.receive(req(Command.READ, 5n, 0n, 512n).subarray(0, 10));
    expect(ended(s.end().events)).toEqual({
      clean: false,
      reason: "mid-frame",
      inFlight: 0,
      partialBytes: 10,
    });
  });

  test("end() inside a WRITE payload is not clean", () => {
    const { s } = transmission();
    const w = req(Command.WRITE, 5n, 0n, 512n, { data: new Uint8Array(512) });
    s.receive(w.subarray(0, 28 + 100));
    expect(ended(s.end().events)).toEqual({
      clean: false,
      reason: "mid-frame",
      inFlight: 0,
      partialBytes: 128,
    });
  });

  test("end() inside the payload of a refused WRITE (discarded as it arrives) is not clean", () => {
    const { s } = transmission({ maxPayloadLength: 4096 });
    const w = req(Command.WRITE, 5n, 0n, 8192n, { data: new Uint8Array(8192) });
    expect(types(s.receive(w.subarray(0, 28 + 100)))).toEqual(["refused"]);
    expect(ended(s.end().events)).toEqual({
      clean: false,
      reason: "mid-frame",
      inFlight: 0,
      partialBytes: 0,
    });
  });

  test("end() inside an option is not clean", () => {
    const s = optionsPhase();
    s.receive(go("disk").subarray(0, 20));
    expect(ended(s.end().events)).toEqual({
      clean: false,
      reason: "mid-frame",
      inFlight: 0,
      partialBytes: 20,
    });
  });

  test("end() between requests without NBD_CMD_DISC is not clean and counts the requests in flight", () => {
    const { s } = transmission();
    s.receive(concat([req(Command.READ, 5n, 0n, 512n), req(Command.READ, 6n, 512n, 512n)]));
    expect(ended(s.end().events)).toEqual({ clean: false, reason: "eof", inFlight: 2, partialBytes: 0 });
  });

  test("end() between options without NBD_OPT_ABORT is not clean", () => {
    const s = optionsPhase();
    s.receive(opt(Option.STRUCTURED_REPLY));
    expect(ended(s.end().events)).toEqual({ clean: false, reason: "eof", inFlight: 0, partialBytes: 0 });
  });

  test("end() after the session closed the connection says so", () => {
    const { s } = transmission();
    expect(types(s.receive(hex("deadbeef" + "00".repeat(24))))).toEqual(["close"]);
    expect(ended(s.end().events)).toEqual({ clean: false, reason: "closed", inFlight: 0, partialBytes: 0 });
  });

  test("end() reports once; bytes after it are ignored", () => {
    const { s } = transmission();
    s.end();
    expect(s.end().events).toEqual([]);
    expect(s.receive(req(Command.READ, 5n, 0n, 512n))).toEqual({ output: [], events: [] });
  });
});

describe("local errors", () => {
  test("calls out of order are refused with bad-state", () => {
    const s = new ServerSession({ exports: [DISK] });
    expect(localError(() => s.receive(new Uint8Array(1))).rule).toBe("receive-before-start");
    s.start();
    expect(localError(() => s.start()).rule).toBe("start-once");
    expect(localError(() => s.tlsEstablished()).rule).toBe("tls-established");
  });

  test("bad exports are refused when the session is made", () => {
    expect(localError(() => new ServerSession({ exports: [{ name: "x", size: -1 }] })).code).toBe(
      "bad-argument",
    );
    expect(
      localError(() =>
        new ServerSession({
          exports: [{ name: "x", size: 1, blockSize: { minimum: 3, preferred: 4096, maximum: 4096 } }],
        })
      ).rule,
    ).toBe("block-size");
    expect(localError(() => new ServerSession({ exports: [], handshake: "oldstyle" }).start()).rule).toBe(
      "oldstyle-export",
    );
    expect(
      localError(() => new ServerSession({ exports: [DISK], handshake: "oldstyle", tls: "required" }).start())
        .rule,
    )
      .toBe("oldstyle-tls");
  });
});

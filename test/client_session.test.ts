/**
 * The client session against hand-written server bytes (spec tables, see _client_bytes.ts): negotiation
 * and its fallbacks, the local checks before a command is sent, and reply assembly with every rule the
 * session enforces on the server's replies.
 */
import { describe, expect, test } from "vitest";
import {
  type ClientEvent,
  ClientSession,
  Command,
  CommandFlag,
  type CommandResult,
  isNbdLocalError,
  isNbdRemoteError,
  TransmissionFlag as TF,
} from "../mod.ts";
import {
  ACK,
  ascii,
  bsExtPayload,
  bsPayload,
  chunk,
  dataPayload,
  DONE,
  ERR_TLS_REQD,
  ERR_UNKNOWN,
  ERR_UNSUP,
  errorPayload,
  extChunk,
  extRequest,
  greeting,
  hex,
  holePayload,
  INFO,
  infoBlockSize,
  infoExport,
  infoInitFlags,
  META,
  metaContext,
  oldGreeting,
  optReply,
  optRequest,
  out,
  ready,
  request,
  SERVER,
  serverReply,
  simple,
  T_BS,
  T_BS_EXT,
  T_DATA,
  T_ERROR,
  T_ERROR_OFFSET,
  T_HOLE,
  T_NONE,
  u16,
  u32,
} from "./_client_bytes.ts";

const RW = TF.HAS_FLAGS | TF.SEND_FLUSH | TF.SEND_FUA | TF.SEND_TRIM | TF.SEND_WRITE_ZEROES | TF.SEND_DF |
  TF.SEND_CACHE | TF.SEND_FAST_ZERO;

function replies(events: readonly ClientEvent[]): CommandResult[] {
  return events.flatMap((e) => (e.type === "reply" ? [e.result] : []));
}

function rules(s: ClientSession): string[] {
  return s.findings.map((f) => f.rule);
}

function localRule(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (isNbdLocalError(e)) return e.rule;
    throw e;
  }
  return "no error";
}

describe("negotiation", () => {
  test("fixed newstyle with NO_ZEROES: flags, EXTENDED_HEADERS, SET_META_CONTEXT, GO with info types", () => {
    const s = new ClientSession({ go: { name: "disk", contexts: ["base:allocation"] } });
    expect(s.state.phase).toBe("greeting");
    const e1 = s.receive(hex(greeting(3)));
    expect(e1).toEqual([{ type: "greeting", handshake: "fixed-newstyle", handshakeFlags: 3 }]);
    expect(out(s)).toBe("00000003" + optRequest(11));
    s.receive(hex(optReply(11, ACK)));
    const q = ascii("base:allocation");
    expect(out(s)).toBe(
      optRequest(10, u32(4) + ascii("disk") + u32(1) + u32(15) + q),
    );
    s.receive(hex(optReply(10, META, metaContext(1, "base:allocation")) + optReply(10, ACK)));
    expect(s.state.contexts).toEqual(new Map([[1, "base:allocation"]]));
    // GO: name length, name, 4 info requests (NAME, DESCRIPTION, BLOCK_SIZE, INIT_FLAGS).
    expect(out(s)).toBe(optRequest(7, u32(4) + ascii("disk") + u16(4) + u16(1) + u16(2) + u16(3) + u16(4)));
    const ev = s.receive(hex(
      optReply(7, INFO, infoExport(1n << 30n, RW)) + optReply(7, INFO, infoBlockSize(512, 4096, 1 << 25)) +
        optReply(7, INFO, infoInitFlags(1)) + optReply(7, ACK),
    ));
    expect(ev.map((e) => e.type)).toEqual(["option", "ready"]);
    expect(s.state).toMatchObject({
      phase: "transmission",
      handshake: "fixed-newstyle",
      clientFlags: 3,
      noZeroes: true,
      replyMode: "extended",
      export: {
        name: "disk",
        size: 1n << 30n,
        transmissionFlags: RW,
        blockSize: { minimum: 512, preferred: 4096, maximum: 1 << 25 },
        initFlags: 1,
      },
    });
    expect(s.findings).toEqual([]);
  });

  test("EXTENDED_HEADERS refused: STRUCTURED_REPLY next; both refused: simple replies and no SET_META_CONTEXT", () => {
    const s = new ClientSession({ go: { contexts: ["base:allocation"] } });
    s.receive(hex(greeting(1)));
    expect(out(s)).toBe("00000001" + optRequest(11));
    s.receive(hex(optReply(11, ERR_UNSUP, ascii("no"))));
    expect(out(s)).toBe(optRequest(8));
    s.receive(hex(optReply(8, ERR_UNSUP)));
    expect(s.state.replyMode).toBe("simple");
    expect(out(s)).toBe(optRequest(7, u32(0) + u16(4) + u16(1) + u16(2) + u16(3) + u16(4)));
  });

  test("structured replies when only they are offered", () => {
    const { session: s } = ready("structured", RW, 1n << 20n, [[5, "base:allocation"]]);
    expect(s.state.replyMode).toBe("structured");
    expect([...s.state.contexts]).toEqual([[5, "base:allocation"]]);
  });

  test("GO refused with ERR_UNSUP: EXPORT_NAME, 10-byte reply under NO_ZEROES", () => {
    const s = new ClientSession({ negotiateReplies: false, go: { name: "d" } });
    s.receive(hex(greeting(3)));
    expect(out(s)).toBe(
      "00000003" + optRequest(7, u32(1) + ascii("d") + u16(4) + u16(1) + u16(2) + u16(3) + u16(4)),
    );
    s.receive(hex(optReply(7, ERR_UNSUP)));
    expect(out(s)).toBe(optRequest(1, ascii("d")));
    const ev = s.receive(hex("0000000000100000" + u16(RW)));
    expect(ev.at(-1)).toEqual({
      type: "ready",
      export: { name: "d", size: 1n << 20n, transmissionFlags: RW },
    });
  });

  test("non-fixed newstyle: client flags 0, EXPORT_NAME at once, 134-byte reply; other options refused", () => {
    const s = new ClientSession({ go: { name: "x" } });
    s.receive(hex(greeting(0)));
    expect(out(s)).toBe("00000000" + optRequest(1, ascii("x")));
    expect(localRule(() => s.list())).toBe("option-fixed-newstyle");
    const reply = hex("0000000000002000" + u16(3) + "00".repeat(124));
    expect(s.receive(reply.subarray(0, 133))).toEqual([]);
    expect(s.receive(reply.subarray(133)).map((e) => e.type)).toEqual(["option", "ready"]);
    expect(s.state).toMatchObject({ handshake: "newstyle", noZeroes: false, export: { size: 8192n } });
  });

  test("NO_ZEROES offered but not wanted: C_NO_ZEROES stays clear", () => {
    const s = new ClientSession({ noZeroes: false, go: false, negotiateReplies: false });
    s.receive(hex(greeting(3)));
    expect(out(s)).toBe("00000001");
  });

  test("oldstyle: transmission straight after the 152-byte greeting", () => {
    const s = new ClientSession();
    const ev = s.receive(hex(oldGreeting(4096n, 3)));
    expect(ev.map((e) => e.type)).toEqual(["greeting", "ready"]);
    expect(out(s)).toBe("");
    expect(s.state).toMatchObject({ handshake: "oldstyle", phase: "transmission", export: { size: 4096n } });
    s.read(0, 512);
    expect(out(s)).toBe(request(0, 0, 1, 0, 512));
  });

  test("ERR_TLS_REQD stops the automatic steps", () => {
    const s = new ClientSession();
    s.receive(hex(greeting(3)));
    out(s);
    const ev = s.receive(hex(optReply(11, ERR_TLS_REQD)));
    expect(ev).toEqual([
      { type: "option", id: 1, option: 11, ok: false, reply: ERR_TLS_REQD, message: "" },
      { type: "negotiation-failed", option: 11, reply: ERR_TLS_REQD, message: "" },
    ]);
    expect(out(s)).toBe("");
    expect(s.state.pendingOptions).toBe(0);
    s.abort();
    expect(out(s)).toBe(optRequest(2));
    expect(s.receive(hex(optReply(2, ACK))).map((e) => e.type)).toEqual(["option", "closed"]);
  });

  test("GO refused (not ERR_UNSUP) ends the automatic steps with negotiation-failed", () => {
    const s = new ClientSession({ negotiateReplies: false, go: { name: "nope" } });
    s.receive(hex(greeting(1)));
    out(s);
    const ev = s.receive(hex(optReply(7, ERR_UNKNOWN, ascii("no"))));
    expect(ev.at(-1)).toEqual({ type: "negotiation-failed", option: 7, reply: ERR_UNKNOWN, message: "no" });
    expect(out(s)).toBe("");
    // After extended headers, ERR_UNSUP to GO has no EXPORT_NAME fallback either.
    const e = new ClientSession({ go: {} });
    e.receive(hex(greeting(1) + optReply(11, ACK)));
    out(e);
    expect(e.receive(hex(optReply(7, ERR_UNSUP))).at(-1)?.type).toBe("negotiation-failed");
    expect(out(e)).toBe("");
  });

  test("LIST, LIST_META_CONTEXT and INFO by hand, answered in order", () => {
    const s = new ClientSession({ go: false, negotiateReplies: false });
    s.receive(hex(greeting(1)));
    const a = s.list();
    const b = s.listContexts("disk", ["qemu:"]);
    const c = s.info("nope", []);
    // One option at a time: only LIST is out.
    expect(out(s)).toBe("00000001" + optRequest(3));
    const e1 = s.receive(hex(
      optReply(3, SERVER, serverReply("disk", "a disk")) + optReply(3, SERVER, serverReply("", "")) +
        optReply(3, ACK),
    ));
    expect(e1).toEqual([{
      type: "option",
      id: a,
      option: 3,
      ok: true,
      result: {
        kind: "exports",
        exports: [{ name: "disk", description: "a disk" }, { name: "", description: "" }],
      },
    }]);
    expect(out(s)).toBe(optRequest(9, u32(4) + ascii("disk") + u32(1) + u32(5) + ascii("qemu:")));
    const e2 = s.receive(hex(
      optReply(9, META, metaContext(0, "qemu:allocation-depth")) +
        optReply(9, META, metaContext(0, "qemu:dirty-bitmap:b0")) + optReply(9, ACK),
    ));
    // qemu gives every listed context id 0: all are kept, in order.
    expect(e2).toEqual([{
      type: "option",
      id: b,
      option: 9,
      ok: true,
      result: {
        kind: "contexts",
        contexts: [{ id: 0, name: "qemu:allocation-depth" }, { id: 0, name: "qemu:dirty-bitmap:b0" }],
      },
    }]);
    expect(s.state.contexts.size).toBe(0); // LIST does not select
    expect(out(s)).toBe(optRequest(6, u32(4) + ascii("nope") + u16(0)));
    const e3 = s.receive(hex(optReply(6, ERR_UNKNOWN, ascii("no such export"))));
    expect(e3).toEqual([{
      type: "option",
      id: c,
      option: 6,
      ok: false,
      reply: ERR_UNKNOWN,
      message: "no such export",
    }]);
  });

  test("a transmission reply during the handshake is a finding", () => {
    const s = new ClientSession({ go: false, negotiateReplies: false });
    s.receive(hex(greeting(1) + simple(0, 1)));
    expect(rules(s)).toContain("reply-before-transmission");
  });

  test("a reply type the option does not allow is a finding (NBD_REP_SERVER to GO)", () => {
    const s = new ClientSession({ negotiateReplies: false });
    s.receive(hex(greeting(1)));
    s.receive(hex(optReply(7, SERVER, serverReply("x", ""))));
    // The frame decoder's rule, reported once: the session does not repeat the check.
    expect(rules(s)).toEqual(["option-reply-type-for-option"]);
  });

  test("GO acknowledged without NBD_INFO_EXPORT is a finding and no transmission", () => {
    const s = new ClientSession({ negotiateReplies: false });
    s.receive(hex(greeting(1)));
    const ev = s.receive(hex(optReply(7, ACK)));
    expect(rules(s)).toEqual(["info-export-missing"]);
    expect(ev.find((e) => e.type === "option")).toMatchObject({ ok: false });
    expect(s.state.phase).toBe("options");
  });

  test("SET_META_CONTEXT giving one id twice is a finding", () => {
    const s = new ClientSession({ go: false, negotiateReplies: false });
    s.receive(hex(greeting(1)));
    s.setContexts("", ["base:allocation", "qemu:allocation-depth"]);
    s.receive(hex(
      optReply(10, META, metaContext(1, "base:allocation")) +
        optReply(10, META, metaContext(1, "qemu:allocation-depth")) + optReply(10, ACK),
    ));
    expect(rules(s)).toEqual(["meta-context-duplicate-id"]);
  });

  test("strict mode throws NbdRemoteError at the first violation", () => {
    const s = new ClientSession({ negotiateReplies: false, strict: true });
    s.receive(hex(greeting(1)));
    let err: unknown;
    try {
      s.receive(hex(optReply(7, SERVER, serverReply("x", ""))));
    } catch (e) {
      err = e;
    }
    expect(isNbdRemoteError(err) && err.rule).toBe("option-reply-type-for-option");
    expect(s.state.phase).toBe("closed");
  });

  test("STARTTLS: tls phase, then negotiation from scratch", () => {
    const s = new ClientSession({ go: false, negotiateReplies: false });
    s.receive(hex(greeting(1)));
    s.startTls();
    expect(out(s)).toBe("00000001" + optRequest(5));
    s.receive(hex(optReply(5, ACK)));
    expect(s.state.phase).toBe("tls");
    expect(localRule(() => s.list())).toBe("option-phase");
    s.tlsEstablished();
    s.list();
    expect(out(s)).toBe(optRequest(3));
    s.receive(hex(optReply(3, ACK)));
    expect(s.findings).toEqual([]);
  });

  test("TLS required: STARTTLS by hand after negotiation-failed, then the automatic steps again through GO", () => {
    const s = new ClientSession({ go: { name: "d" } });
    s.receive(hex(greeting(3)));
    out(s);
    expect(s.receive(hex(optReply(11, ERR_TLS_REQD))).at(-1)?.type).toBe("negotiation-failed");
    s.startTls();
    expect(out(s)).toBe(optRequest(5));
    s.receive(hex(optReply(5, ACK)));
    expect(s.state.phase).toBe("tls");
    s.tlsEstablished();
    // Over TLS (the transport's business): extended headers again, then GO.
    expect(out(s)).toBe(optRequest(11));
    s.receive(hex(optReply(11, ACK)));
    expect(out(s)).toBe(optRequest(7, u32(1) + ascii("d") + u16(4) + u16(1) + u16(2) + u16(3) + u16(4)));
    const ev = s.receive(hex(optReply(7, INFO, infoExport(4096n, RW)) + optReply(7, ACK)));
    expect(ev.at(-1)?.type).toBe("ready");
    expect(s.state).toMatchObject({ phase: "transmission", replyMode: "extended" });
    expect(s.findings).toEqual([]);
  });

  test("a limit is checked before buffering: an option reply longer than maxPayloadLength is refused", () => {
    const s = new ClientSession({ go: false, negotiateReplies: false, maxPayloadLength: 1024 });
    s.receive(hex(greeting(1)));
    s.list();
    let err: unknown;
    try {
      s.receive(hex("0003e889045565a9" + u32(3) + u32(SERVER) + u32(1025)));
    } catch (e) {
      err = e;
    }
    expect(isNbdRemoteError(err) && err.code).toBe("limit-exceeded");
  });
});

describe("commands: checked against what the server advertised", () => {
  const structured = () => ready("structured", RW, 1n << 20n, [[1, "base:allocation"]]).session;

  test("a command the server did not advertise is refused before any byte", () => {
    const s = ready("simple", TF.HAS_FLAGS).session;
    expect(localRule(() => s.flush())).toBe("command-not-advertised");
    expect(localRule(() => s.trim(0, 512))).toBe("command-not-advertised");
    expect(localRule(() => s.writeZeroes(0, 512))).toBe("command-not-advertised");
    expect(localRule(() => s.cache(0, 512))).toBe("command-not-advertised");
    expect(localRule(() => s.read(0, 512, { flags: CommandFlag.FUA }))).toBe("flag-fua");
    expect(out(s)).toBe("");
    expect(s.state.inFlight).toBe(0);
  });

  test("flags: DF needs structured replies and SEND_DF, FAST_ZERO needs SEND_FAST_ZERO, unknown flags refused", () => {
    expect(localRule(() => ready("simple", RW).session.read(0, 512, { flags: CommandFlag.DF }))).toBe(
      "flag-df",
    );
    expect(
      localRule(() => ready("structured", RW & ~TF.SEND_DF).session.read(0, 512, { flags: CommandFlag.DF })),
    )
      .toBe("flag-df");
    expect(
      localRule(() =>
        ready("simple", RW & ~TF.SEND_FAST_ZERO).session.writeZeroes(0, 512, { flags: CommandFlag.FAST_ZERO })
      ),
    )
      .toBe("flag-fast-zero");
    expect(localRule(() => ready("simple", RW).session.trim(0, 512, { flags: CommandFlag.NO_HOLE }))).toBe(
      "command-flags",
    );
    expect(localRule(() => ready("simple", RW).session.command(0x42, 0, 0))).toBe("command-unknown");
  });

  test("a read-only export refuses WRITE, TRIM and WRITE_ZEROES", () => {
    const s = ready("simple", RW | TF.READ_ONLY).session;
    expect(localRule(() => s.write(0, new Uint8Array(512)))).toBe("read-only");
    expect(localRule(() => s.trim(0, 512))).toBe("read-only");
    expect(localRule(() => s.writeZeroes(0, 512))).toBe("read-only");
    expect(localRule(() => s.read(0, 512))).toBe("no error");
  });

  test("bounds, zero lengths, FLUSH fields", () => {
    const s = ready("simple", RW, 4096n).session;
    expect(localRule(() => s.read(4096 - 512, 1024))).toBe("request-range");
    expect(localRule(() => s.read(0, 0))).toBe("request-zero-length");
    expect(localRule(() => s.command(Command.FLUSH, 0, 512))).toBe("request-zero-fields");
    expect(localRule(() => s.read(4096 - 512, 512))).toBe("no error");
  });

  test("block sizes: alignment to the minimum block and the maximum payload", () => {
    const s = ready("simple", RW, 1n << 20n, [], { blockSize: [512, 4096, 65536] }).session;
    expect(localRule(() => s.read(100, 512))).toBe("block-size-alignment");
    expect(localRule(() => s.read(0, 700))).toBe("block-size-alignment");
    expect(localRule(() => s.read(0, 131072))).toBe("max-payload");
    expect(localRule(() => s.write(0, new Uint8Array(131072)))).toBe("max-payload");
    // Effect-only commands may exceed the maximum payload.
    expect(localRule(() => s.trim(0, 131072))).toBe("no error");
    // Without NBD_INFO_BLOCK_SIZE: the spec's 32 MiB default.
    const d = ready("simple", RW, 1n << 30n).session;
    expect(localRule(() => d.read(0, 32 * 1024 * 1024 + 1))).toBe("max-payload");
  });

  test("BLOCK_STATUS needs structured replies and a selected context; the payload form needs its flag", () => {
    expect(localRule(() => ready("simple", RW).session.blockStatus(0, 512))).toBe("block-status-negotiation");
    expect(localRule(() => ready("structured", RW).session.blockStatus(0, 512))).toBe(
      "block-status-contexts",
    );
    expect(localRule(() => structured().blockStatus(0, 512, { contextIds: [1] }))).toBe(
      "block-status-payload",
    );
    const noFlag = ready("extended", RW, 1n << 20n, [[1, "base:allocation"]]).session;
    expect(localRule(() => noFlag.blockStatus(0, 512, { contextIds: [1] }))).toBe("block-status-payload");
    const ext = ready("extended", RW | TF.BLOCK_STATUS_PAYLOAD, 1n << 20n, [[1, "base:allocation"]]).session;
    expect(localRule(() => ext.blockStatus(0, 512, { contextIds: [2] }))).toBe(
      "block-status-payload-context",
    );
    expect(localRule(() => ext.blockStatus(0, 512, { contextIds: [1, 1] }))).toBe(
      "block-status-payload-duplicate",
    );
    expect(localRule(() => ext.blockStatus(0, 512, { contextIds: [] }))).toBe("block-status-payload-empty");
    ext.blockStatus(0, 512, { contextIds: [1] });
    // Extended header with PAYLOAD_LEN, length 12, then effect length and the id.
    expect(out(ext)).toBe(extRequest(0x20, 7, 1, 0, 12) + "0000000000000200" + u32(1));
  });

  test("check: false sends what the server must refuse (for conformance tests)", () => {
    const s = ready("simple", TF.HAS_FLAGS | TF.READ_ONLY, 4096n).session;
    s.write(8192, new Uint8Array(4), { check: false });
    expect(out(s)).toBe(request(0, 1, 1, 8192, 4) + "00000000");
    const t = ready("simple", TF.HAS_FLAGS, 4096n, [], { options: { checkRequests: false } }).session;
    t.command(0x42, 0, 0);
    expect(out(t)).toBe(request(0, 0x42, 1, 0, 0));
  });

  test("state: no command before transmission nor after DISC; cookies unique", () => {
    expect(localRule(() => new ClientSession().read(0, 512))).toBe("transmission-phase");
    const s = ready("simple", RW).session;
    const c1 = s.read(0, 512, { cookie: 7n });
    expect(c1).toBe(7n);
    expect(localRule(() => s.read(0, 512, { cookie: 7 }))).toBe("cookie-in-flight");
    expect(s.read(0, 512)).toBe(1n);
    s.disconnect();
    expect(localRule(() => s.read(0, 512))).toBe("after-disc");
    expect(out(s)).toBe(request(0, 0, 7, 0, 512) + request(0, 0, 1, 0, 512) + request(0, 2, 2, 0, 0));
  });

  test("compact headers: lengths above 32 bits need extended headers; extended ones take them", () => {
    const s = ready("structured", RW, 1n << 40n).session;
    expect(localRule(() => s.trim(0, 1n << 33n))).toBe("length-32");
    const e = ready("extended", RW, 1n << 40n).session;
    e.trim(0, 1n << 33n);
    expect(out(e)).toBe(extRequest(0, 4, 1, 0, 1n << 33n));
    e.write(0, hex("aabb"));
    expect(out(e)).toBe(extRequest(0x20, 1, 2, 0, 2) + "aabb");
  });

  test("arguments: command and flags are u16, the read buffer fits, PAYLOAD_LEN only in extended mode", () => {
    const s = ready("structured", RW).session;
    expect(localRule(() => s.command(0x10000, 0, 0))).toBe("command-value");
    expect(localRule(() => s.read(0, 512, { flags: 0x10000 }))).toBe("flags-value");
    expect(localRule(() => s.read(0, 512, { buffer: new Uint8Array(511) }))).toBe("read-buffer");
    expect(localRule(() => s.trim(0, 512, { flags: CommandFlag.PAYLOAD_LEN }))).toBe("payload-len-compact");
    expect(localRule(() => new ClientSession().tlsEstablished())).toBe("tls-phase");
    // The session's own limit on READ lengths, even unchecked.
    const t = ready("simple", RW, 1n << 30n, [], { options: { maxPayloadLength: 65536 } }).session;
    expect(localRule(() => t.read(0, 65537, { check: false }))).toBe("max-payload-length");
    expect(out(s) + out(t)).toBe("");
  });

  test("command(): READ gets a buffer and assembles its data; WRITE is refused without its data", () => {
    const s = ready("structured", RW).session;
    expect(localRule(() => s.command(Command.WRITE, 0, 4))).toBe("write-data");
    const c = s.command(Command.READ, 0n, 2n);
    const [r] = replies(s.receive(hex(chunk(DONE, T_DATA, c, dataPayload(0, "abcd")))));
    expect(r!.data).toEqual(hex("abcd"));
    expect(s.findings).toEqual([]);
  });

  test("bounds and alignment above 2^53 (the bigint paths)", () => {
    const e = ready("extended", RW, 1n << 60n, [], { blockSize: [512, 4096, 1 << 25] }).session;
    expect(localRule(() => e.trim((1n << 55n) + 1n, 512))).toBe("block-size-alignment");
    expect(localRule(() => e.trim(1n << 55n, 513))).toBe("block-size-alignment");
    expect(localRule(() => e.trim((1n << 60n) - 512n, 1024))).toBe("request-range");
    expect(localRule(() => e.trim((1n << 60n) - 512n, 512))).toBe("no error");
  });

  test("strict mode: a violation in a reply chunk throws and ends the session", () => {
    const s = ready("structured", RW, 1n << 20n, [], { options: { strict: true } }).session;
    const c = s.read(0, 4);
    let err: unknown;
    try {
      s.receive(hex(chunk(DONE, T_DATA, c, dataPayload(8, "aabbccdd"))));
    } catch (e) {
      err = e;
    }
    expect(isNbdRemoteError(err) && err.rule).toBe("read-chunk-range");
    expect(s.state.phase).toBe("closed");
  });

  test("64-bit arguments: safe numbers or bigints; unsafe numbers refused", () => {
    const e = ready("extended", RW, 1n << 60n).session;
    expect(localRule(() => e.trim(2 ** 53, 512))).toBe("u64-number");
    expect(localRule(() => e.trim(-1, 512))).toBe("u64-number");
    expect(localRule(() => e.trim(2n ** 55n, 512n))).toBe("no error");
  });
});

describe("replies: assembly and the rules on the server's chunks", () => {
  test("simple replies: READ data into the caller's buffer, errors, out of order", () => {
    const s = ready("simple", RW).session;
    const buf = new Uint8Array(4);
    const a = s.read(0, 4, { buffer: buf });
    const b = s.write(0, hex("01020304"));
    out(s);
    const ev = s.receive(hex(simple(28, b) + simple(0, a, "deadbeef")));
    expect(replies(ev).map((r) => [r.cookie, r.ok, r.error])).toEqual([[b, false, 28], [a, true, 0]]);
    expect(replies(ev)[1]!.data).toBe(buf);
    expect(buf).toEqual(hex("deadbeef"));
    expect(s.findings).toEqual([]);
  });

  test("structured READ: data and hole chunks in any order assemble the range; DONE completes it", () => {
    const { session: s } = ready("structured", RW);
    const c = s.read(4096, 12);
    const ev1 = s.receive(hex(chunk(0, T_DATA, c, dataPayload(4096 + 8, "a1a2a3a4"))));
    expect(replies(ev1)).toEqual([]);
    const ev = s.receive(hex(
      chunk(0, T_DATA, c, dataPayload(4096, "0102030405")) + chunk(DONE, T_HOLE, c, holePayload(4096 + 5, 3)),
    ));
    const [r] = replies(ev);
    expect(r).toMatchObject({ ok: true, error: 0, command: 0 });
    expect(r!.data).toEqual(hex("010203040500000" + "0a1a2a3a4"));
    expect(s.findings).toEqual([]);
  });

  test("read-chunk-range: a data chunk outside the request", () => {
    const { session: s } = ready("structured", RW);
    const c = s.read(0, 4);
    const [r] = replies(s.receive(hex(chunk(DONE, T_DATA, c, dataPayload(2, "aabbccdd")))));
    expect(rules(s)).toEqual(["read-chunk-range"]);
    expect(r!.ok).toBe(false);
  });

  test("read-chunk-overlap: two content chunks over the same bytes", () => {
    const { session: s } = ready("structured", RW);
    const c = s.read(0, 4);
    s.receive(hex(chunk(0, T_DATA, c, dataPayload(0, "aabb")) + chunk(DONE, T_HOLE, c, holePayload(1, 3))));
    expect(rules(s)).toEqual(["read-chunk-overlap"]);
  });

  test("read-incomplete: DONE before the range is covered", () => {
    const { session: s } = ready("structured", RW);
    const c = s.read(0, 4);
    const [r] = replies(s.receive(hex(chunk(DONE, T_DATA, c, dataPayload(0, "aabb")))));
    expect(rules(s)).toEqual(["read-incomplete"]);
    expect(r!.ok).toBe(false);
  });

  test("read-df-fragmented: two content chunks for a READ with DF", () => {
    const { session: s } = ready("structured", RW);
    const c = s.read(0, 4, { flags: CommandFlag.DF });
    s.receive(
      hex(chunk(0, T_DATA, c, dataPayload(0, "aabb")) + chunk(DONE, T_DATA, c, dataPayload(2, "ccdd"))),
    );
    expect(rules(s)).toEqual(["read-df-fragmented"]);
  });

  test("chunk-type-command: a hole chunk for a WRITE", () => {
    const { session: s } = ready("structured", RW);
    const c = s.write(0, hex("00"));
    const [r] = replies(s.receive(hex(chunk(DONE, T_HOLE, c, holePayload(0, 1)))));
    expect(rules(s)).toEqual(["chunk-type-command"]);
    expect(r!.ok).toBe(false);
  });

  test("error chunks carry the error and message; ERROR_OFFSET outside the request is a finding", () => {
    const { session: s } = ready("structured", RW);
    const a = s.read(0, 512);
    const b = s.read(1024, 512);
    const ev = s.receive(hex(
      chunk(DONE, T_ERROR, a, errorPayload(22, "bad read")) +
        chunk(DONE, T_ERROR_OFFSET, b, errorPayload(5, "io") + "0000000000000000"),
    ));
    const [ra, rb] = replies(ev);
    expect(ra).toMatchObject({ ok: false, error: 22, message: "bad read" });
    expect(rb).toMatchObject({ ok: false, error: 5, message: "io", errorOffset: 0n });
    expect(rules(s)).toEqual(["error-offset-range"]);
  });

  test("chunk-type-command: ERROR_OFFSET for FLUSH, a block-status chunk for READ", () => {
    const { session: s } = ready("structured", RW, 1n << 20n, [[1, "base:allocation"]]);
    const f = s.flush();
    const r = s.read(0, 512);
    const ev = s.receive(hex(
      chunk(DONE, T_ERROR_OFFSET, f, errorPayload(5, "") + "0000000000000000") +
        chunk(DONE, T_BS, r, bsPayload(1, [[512, 0]])),
    ));
    expect(rules(s)).toEqual(["chunk-type-command", "chunk-type-command"]);
    expect(replies(ev).map((x) => x.ok)).toEqual([false, false]);
  });

  test("block-status-context: a chunk for a context id that was never negotiated", () => {
    const { session: s } = ready("structured", RW, 1n << 20n, [[1, "base:allocation"]]);
    const c = s.blockStatus(0, 512);
    const [r] = replies(s.receive(hex(
      chunk(0, T_BS, c, bsPayload(7, [[512, 0]])) + chunk(DONE, T_BS, c, bsPayload(1, [[512, 0]])),
    )));
    expect(rules(s)).toEqual(["block-status-context"]);
    expect([...r!.extents!.keys()]).toEqual([1]);
  });

  test("BLOCK_STATUS_EXT: upper 32 status bits of a 32-bit context are a finding", () => {
    const { session: s } = ready("extended", RW, 1n << 20n, [[1, "base:allocation"]]);
    const c = s.blockStatus(0, 512);
    s.receive(hex(extChunk(DONE, T_BS_EXT, c, 0, bsExtPayload(1, [[512, (1n << 32n) | 1n]]))));
    expect(rules(s)).toEqual(["block-status-upper-bits"]);
  });

  test("a chunk for a cookie not in flight, and a chunk after DONE, are findings", () => {
    const { session: s } = ready("structured", RW);
    const c = s.flush();
    s.receive(hex(chunk(DONE, T_NONE, c) + chunk(DONE, T_NONE, c) + simple(0, 99)));
    expect(rules(s)).toEqual(["reply-unknown-cookie", "reply-unknown-cookie"]);
  });

  test("BLOCK_STATUS: typed extents per context", () => {
    const ctx: [number, string][] = [[1, "base:allocation"], [2, "qemu:allocation-depth"]];
    const { session: s } = ready("structured", RW, 1n << 20n, ctx);
    const c = s.blockStatus(0, 8192);
    const ev = s.receive(hex(
      chunk(0, T_BS, c, bsPayload(2, [[8192, 1]])) +
        chunk(DONE, T_BS, c, bsPayload(1, [[4096, 0], [4096, 3]])),
    ));
    const [r] = replies(ev);
    expect(r!.ok).toBe(true);
    expect(r!.extents!.get(1)!.map((e) => [e.offset, e.length, e.status])).toEqual([[0n, 4096n, 0n], [
      4096n,
      4096n,
      3n,
    ]]);
    expect(r!.extents!.get(1)![1]).toMatchObject({ hole: true, zero: true });
    expect(r!.extents!.get(2)![0]).toMatchObject({ kind: "qemu:allocation-depth", depth: 1n });
    expect(s.findings).toEqual([]);
  });

  test("BLOCK_STATUS rules: REQ_ONE, overrun, duplicate and missing contexts", () => {
    const ctx: [number, string][] = [[1, "base:allocation"], [2, "qemu:allocation-depth"]];
    const { session: s } = ready("structured", RW, 1n << 20n, ctx);
    const a = s.blockStatus(0, 4096, { flags: CommandFlag.REQ_ONE });
    s.receive(hex(
      chunk(0, T_BS, a, bsPayload(1, [[512, 0], [512, 0]])) + chunk(DONE, T_BS, a, bsPayload(2, [[8192, 0]])),
    ));
    expect(rules(s)).toEqual(["block-status-req-one", "block-status-req-one-length"]);
    const b = s.blockStatus(0, 4096);
    s.receive(hex(chunk(DONE, T_BS, b, bsPayload(1, [[4096, 0], [4096, 0]]))));
    expect(rules(s).slice(2)).toEqual(["block-status-overrun", "block-status-context-missing"]);
    const c = s.blockStatus(0, 4096);
    s.receive(hex(
      chunk(0, T_BS, c, bsPayload(1, [[4096, 0]])) + chunk(0, T_BS, c, bsPayload(1, [[4096, 0]])) +
        chunk(DONE, T_BS, c, bsPayload(2, [[4096, 0]])),
    ));
    expect(rules(s).slice(4)).toEqual(["block-status-context-duplicate"]);
  });

  test("extended mode: BLOCK_STATUS_EXT, the payload form's unrequested context, header offsets", () => {
    const ctx: [number, string][] = [[1, "base:allocation"], [2, "qemu:dirty-bitmap:b0"]];
    const { session: s } = ready("extended", RW | TF.BLOCK_STATUS_PAYLOAD, 1n << 40n, ctx);
    const c = s.blockStatus(1n << 33n, 1n << 33n, { contextIds: [2] });
    const ev = s.receive(hex(
      extChunk(0, T_BS_EXT, c, 1n << 33n, bsExtPayload(1, [[1n << 33n, 0]])) +
        extChunk(DONE, T_BS_EXT, c, 1n << 33n, bsExtPayload(2, [[1n << 33n, 1]])),
    ));
    expect(rules(s)).toEqual(["block-status-context-unrequested"]);
    const [r] = replies(ev);
    expect([...r!.extents!.keys()]).toEqual([2]);
    expect(r!.extents!.get(2)![0]).toMatchObject({ length: 1n << 33n, dirty: true });
    const d = s.read(512, 2);
    s.receive(hex(extChunk(DONE, T_DATA, d, 0, dataPayload(512, "abcd"))));
    expect(rules(s).slice(1)).toEqual(["extended-reply-offset"]);
  });

  test("simple replies after extended headers, and a simple READ reply under structured replies, are findings", () => {
    const e = ready("extended", RW).session;
    const c = e.flush();
    e.receive(hex(simple(0, c)));
    expect(rules(e)).toEqual(["reply-header-style"]);
    const s = ready("structured", RW).session;
    const r = s.read(0, 2);
    const [res] = replies(s.receive(hex(simple(0, r, "abcd"))));
    expect(rules(s)).toEqual(["simple-reply-read-structured"]);
    expect(res!.data).toEqual(hex("abcd"));
  });

  test("any split of the server's bytes gives the same events", () => {
    const handshake = hex(
      greeting(3) + optReply(11, ERR_UNSUP) + optReply(8, ACK) +
        optReply(10, META, metaContext(1, "base:allocation")) + optReply(10, ACK) +
        optReply(7, INFO, infoExport(1n << 20n, RW)) + optReply(7, ACK),
    );
    const transmission = hex(
      chunk(0, T_DATA, 2, dataPayload(0, "0102")) + chunk(0, T_BS, 3, bsPayload(1, [[512, 3]])) +
        chunk(DONE, T_HOLE, 2, holePayload(2, 2)) + chunk(DONE, T_NONE, 3) + simple(0, 1),
    );
    const run = (sizes: (i: number) => number) => {
      const s = new ClientSession({ go: { contexts: ["base:allocation"] } });
      const results: unknown[] = [];
      const feed = (bytes: Uint8Array) => {
        for (let i = 0; i < bytes.length;) {
          const n = Math.min(sizes(i), bytes.length - i);
          for (const e of s.receive(bytes.subarray(i, i + n))) {
            if (e.type === "reply") results.push([e.result.cookie, e.result.ok, [...(e.result.data ?? [])]]);
            else if (e.type !== "finding") results.push(e.type);
          }
          i += n;
        }
      };
      feed(handshake);
      s.flush();
      s.read(0, 4);
      s.blockStatus(0, 512);
      feed(transmission);
      return { results, findings: s.findings.length, bytes: s.takeOutput().length };
    };
    const whole = run(() => 1 << 20);
    expect(whole.findings).toBe(0);
    expect(whole.results).toContainEqual([2n, true, [1, 2, 0, 0]]);
    expect(run(() => 1)).toEqual(whole);
    let seed = 7;
    expect(run(() => (seed = (seed * 1103515245 + 12345) % 2147483648) % 23 + 1)).toEqual(whole);
  });

  test("transmission limits: a chunk announcing more than maxPayloadLength, or more than maxBufferedBytes", () => {
    const a = ready("structured", RW, 1n << 20n, [], { options: { maxPayloadLength: 4096 } }).session;
    a.flush();
    let err: unknown;
    try {
      a.receive(hex("668e33ef" + u16(1) + u16(T_ERROR) + "0000000000000001" + u32(4097)));
    } catch (e) {
      err = e;
    }
    expect(isNbdRemoteError(err) && [err.code, err.rule]).toEqual(["limit-exceeded", "max-payload-length"]);
    expect(a.state.phase).toBe("closed");
    const b = ready("structured", RW, 1n << 20n, [], { options: { maxBufferedBytes: 1000 } }).session;
    b.flush();
    err = undefined;
    try {
      b.receive(hex("668e33ef" + u16(1) + u16(T_ERROR) + "0000000000000001" + u32(2000)));
    } catch (e) {
      err = e;
    }
    expect(isNbdRemoteError(err) && err.rule).toBe("max-buffered-bytes");
    // Data chunks are not buffered: a 64 KiB READ within maxPayloadLength passes a small maxBufferedBytes.
    const c = ready("structured", RW, 1n << 20n, [], { options: { maxBufferedBytes: 1000 } }).session;
    const r = c.read(0, 65536);
    const data = "5a".repeat(65536);
    const bytes = hex(chunk(DONE, T_DATA, r, dataPayload(0, data)));
    let res: CommandResult[] = [];
    for (let i = 0; i < bytes.length; i += 999) {
      res = res.concat(replies(c.receive(bytes.subarray(i, i + 999))));
    }
    expect(res).toHaveLength(1);
    expect(res[0]!.data!.every((x) => x === 0x5a)).toBe(true);
  });

  test("bytes that are no reply end the session with an NbdRemoteError", () => {
    const s = ready("simple", RW).session;
    let err: unknown;
    try {
      s.receive(hex("deadbeef" + "00".repeat(12)));
    } catch (e) {
      err = e;
    }
    // At the first byte after the handshake: greeting (18), two refusals and GO's INFO and ACK (20 + 20 + 32
    // + 20).
    expect(isNbdRemoteError(err) && [err.code, err.offset]).toEqual(["bad-magic", 18 + 20 + 20 + 32 + 20]);
    expect(s.state.phase).toBe("closed");
  });

  test("end() inside a frame: stream-truncated", () => {
    const s = ready("structured", RW).session;
    const c = s.read(0, 8);
    s.receive(hex(chunk(DONE, T_DATA, c, dataPayload(0, "0102030405060708")).slice(0, 40)));
    const ev = s.end();
    expect(rules(s)).toEqual(["stream-truncated"]);
    expect(ev.at(-1)).toEqual({ type: "closed", reason: "end", inFlight: [c] });
  });

  test("chunks in the wrong header style: structured in simple mode, compact chunks in extended mode", () => {
    const s = ready("simple", RW).session;
    const c = s.flush();
    s.receive(hex(chunk(DONE, T_NONE, c)));
    expect(rules(s)).toEqual(["chunk-without-negotiation"]);
    const e = ready("extended", RW).session;
    const d = e.flush();
    e.receive(hex(chunk(DONE, T_NONE, d)));
    expect(rules(e)).toEqual(["reply-header-style"]);
  });

  test("cookies and offsets above 2^53 take the bigint paths", () => {
    const e = ready("extended", RW, 1n << 62n).session;
    const big = (1n << 60n) + 3n;
    const off = (1n << 61n) + 512n;
    const c = e.read(off, 4, { cookie: big });
    expect(c).toBe(big);
    expect(out(e)).toBe(extRequest(0, 0, big, off, 4));
    const [r] = replies(e.receive(hex(extChunk(DONE, T_DATA, big, off, dataPayload(off, "01020304")))));
    expect(r).toMatchObject({ cookie: big, ok: true });
    expect(r!.data).toEqual(hex("01020304"));
    expect(e.findings).toEqual([]);
    // A wrong header offset is still caught on the bigint path.
    const d = e.read(off, 4, { cookie: big });
    e.receive(hex(extChunk(DONE, T_DATA, d, off + 1n, dataPayload(off, "01020304"))));
    expect(rules(e)).toEqual(["extended-reply-offset"]);
  });

  test("the session's cookies are the lowest free ones, reused after completion", () => {
    const s = ready("simple", RW).session;
    const a = s.flush();
    const b = s.flush();
    s.receive(hex(simple(0, a)));
    expect([a, b, s.flush()]).toEqual([1n, 2n, 1n]);
  });

  test("end(): the commands that never completed are listed", () => {
    const s = ready("simple", RW).session;
    s.read(0, 512);
    s.flush();
    expect(s.end()).toEqual([{ type: "closed", reason: "end", inFlight: [1n, 2n] }]);
    expect(s.state.phase).toBe("closed");
  });
});

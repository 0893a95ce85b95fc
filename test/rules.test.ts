// The rule catalogue (codec/rules.ts) against the code, the docs and the vectors.
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";
import {
  decodeExportNameReply,
  decodeGreeting,
  decodeOptionReply,
  decodeReplyChunk,
  flagNames,
  IGNORED_BY_RECEIVER,
  isRuleId,
  LOCAL_ERROR_RULES,
  RULES,
} from "../mod.ts";
import { renderRulesDoc } from "../scripts/rules-table.ts";
import { Reporter } from "../codec/_report.ts";
import { fromHex, loadVectorFiles } from "./_harness.ts";
import { ruleSites } from "./_rule_sites.ts";

/**
 * Rules that no single-frame vector can break, and why. Every other rule must be broken by at least one vector
 * (an `acceptable` vector listing it in `findings`, or an `invalid` vector naming it in `rule`).
 */
const NO_FRAME_VECTOR: Readonly<Record<string, string>> = {
  // Stream and conversation rules need the frames before this one (a request, an option, a negotiation):
  // test/rules_streams.test.ts and test/conversation.test.ts break them with byte streams.
  "export-name-option-reply": "needs the pending option (NBD_OPT_EXPORT_NAME) sent earlier in the stream",
  "buffer-limit-one-sided": "needs one side of a conversation held beyond the buffer limit",
  "option-reply-unsolicited": "needs the stream to have no option pending",
  "reply-unknown-cookie": "needs the requests sent earlier in the stream",
  "simple-reply-read-structured": "needs the READ request and the structured-replies negotiation",
  "extended-reply-offset": "needs the request whose offset the reply must echo",
  "chunk-without-negotiation": "needs the negotiation (no structured replies, no extended headers)",
  "block-status-context": "needs the metadata contexts negotiated earlier",
  "frame-length":
    "a stream framing check: a frame's length fields against the bytes the stream decoder framed",
  "stream-truncated": "a stream ending inside a frame: no whole frame to store",
  "capture-gap": "bytes missing from a capture, between frames",
  "max-buffered-bytes": "a limit of the stream decoders' buffer, not of one frame",
  "outstanding-limit":
    "needs the requests or options held earlier in a conversation, beyond the buffer limit (broken in " +
    "test/stream_hardening.test.ts)",
  // Session rules need what a session holds: the requests in flight, the option awaiting its replies, the
  // negotiation. test/client_session.test.ts and test/server_session.test.ts break them with byte streams.
  "reply-before-transmission": "a session rule: needs the handshake phase (no request sent yet)",
  "meta-context-duplicate-id": "a session rule: needs every reply to one NBD_OPT_SET_META_CONTEXT",
  "info-export-missing": "a session rule: needs every reply to one NBD_OPT_GO or NBD_OPT_INFO",
  "chunk-type-command": "a session rule: needs the command of the request the chunk answers",
  "read-chunk-range": "a session rule: needs the READ request's offset and length",
  "read-chunk-overlap": "a session rule: needs the earlier chunks of the same reply",
  "read-df-fragmented": "a session rule: needs the READ request's flags and the earlier chunks",
  "read-incomplete": "a session rule: needs the READ request and every chunk of its reply",
  "error-offset-range": "a session rule: needs the request's offset and length",
  "block-status-context-unrequested": "a session rule: needs the request's payload of context ids",
  "block-status-context-duplicate": "a session rule: needs the earlier chunks of the same reply",
  "block-status-context-missing":
    "a session rule: needs the negotiated contexts and every chunk of the reply",
  "block-status-req-one": "a session rule: needs the request's flags",
  "block-status-req-one-length": "a session rule: needs the request's flags and length",
  "block-status-overrun": "a session rule: needs the request's length",
  "client-flags-unknown": "a session rule: needs the handshake flags the server session offered",
  "option-not-fixed": "a session rule: needs the client flags sent earlier",
  "export-name-refused": "a session rule: needs the server session's exports and policy",
  "after-disc": "a session rule: needs the NBD_CMD_DISC sent earlier",
  "cookie-in-flight": "a session rule: needs the requests in flight",
  "max-option-length": "a limit of the server session, not of one frame",
  // Capture and TCP/IP rules are about pcap/pcapng files and IP packets, not NBD frames: test/capture.test.ts
  // and test/tcp.test.ts break them with hand-built files and packets (some by code only: NOT_NAMED_BY_A_TEST).
  "capture-magic": "a capture file rule",
  "capture-max-record-length": "a capture reader limit",
  "capture-truncated": "a capture file rule",
  "pcap-original-length": "a capture file rule",
  "pcapng-byte-order-magic": "a capture file rule",
  "pcapng-block-length": "a capture file rule",
  "pcapng-block-trailer": "a capture file rule",
  "pcapng-version": "a capture file rule",
  "pcapng-captured-length": "a capture file rule",
  "pcapng-first-block": "a capture file rule",
  "pcapng-interface-id": "a capture file rule",
  "pcapng-option-length": "a capture file rule",
  "capture-link-type": "a link-layer rule",
  "capture-snaplen": "a capture file rule",
  "ip-version": "an IP packet rule",
  "ipv4-header-length": "an IP packet rule",
  "ipv4-total-length": "an IP packet rule",
  "ipv6-payload-length": "an IP packet rule",
  "ip-fragment": "an IP packet rule",
  "tcp-header-length": "a TCP segment rule",
  "tcp-gap": "a TCP reassembly rule (sequence numbers across segments)",
  "tcp-out-of-window": "a TCP reassembly rule (sequence numbers across segments)",
  "tcp-retransmission-mismatch": "a TCP reassembly rule (two copies of the same bytes)",
};

/**
 * Rules of NO_FRAME_VECTOR that no test names yet (their decoders' tests check the error code or the event,
 * not the rule id): a known gap, kept short by the test below, which fails for any rule not listed here.
 */
const NOT_NAMED_BY_A_TEST: ReadonlySet<string> = new Set([
  "frame-length",
  "capture-gap",
  "pcapng-first-block",
  "ipv4-total-length",
  "ipv6-payload-length",
]);

const allSites = ruleSites();
/** Sites of peer-byte rules: the catalogue's. */
const sites = allSites.filter((s) => !s.local);
/** Sites of NbdLocalError ids (a rule parameter typed `LocalErrorRule`): the local program's mistakes. */
const localSites = allSites.filter((s) => s.local);

describe("the rule catalogue", () => {
  test("every rule id named anywhere in codec/ is in RULES, as a literal", () => {
    const unknown = sites.filter((s) => !isRuleId(s.rule)).map((s) => `${s.rule} (${s.file}:${s.line})`);
    expect(unknown).toEqual([]);
    // The scan finds what it should: rules of every layer.
    for (const id of ["magic", "chunk-none-done", "option-reply-unsolicited", "tcp-gap", "pcapng-version"]) {
      expect(sites.some((s) => s.rule === id), id).toBe(true);
    }
  });

  test("every rule of RULES is named somewhere in codec/ (no rule is only on paper)", () => {
    const named = new Set(sites.map((s) => s.rule));
    expect(Object.keys(RULES).filter((id) => !named.has(id))).toEqual([]);
  });

  test("every place that names a rule reports it with the catalogue's code", () => {
    const wrong = sites
      .filter((s) => s.code !== undefined && isRuleId(s.rule) && RULES[s.rule].code !== s.code)
      .map((s) =>
        `${s.rule}: ${s.code} at ${s.file}:${s.line}, catalogue says ${
          isRuleId(s.rule) && RULES[s.rule].code
        }`
      );
    expect(wrong).toEqual([]);
  });

  test("rules thrown with fail() are `throw` in lenient mode in the catalogue, and reported ones `finding`", () => {
    const wrong: string[] = [];
    for (const s of sites) {
      if (!isRuleId(s.rule)) continue;
      const lenient = RULES[s.rule].lenient;
      // (capture.ts has a fail() of its own, called in lenient mode only when no finding can stand instead.)
      if (s.via === "fail" && s.file !== "capture.ts" && lenient !== "throw") {
        wrong.push(`${s.rule} via fail at ${s.file}:${s.line}`);
      }
      if ((s.via === "report" || s.via === "badLength") && lenient !== "finding") {
        wrong.push(`${s.rule} via report at ${s.file}:${s.line}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  test("every rule has at least one clause, with a section and a quote", () => {
    for (const [id, r] of Object.entries(RULES)) {
      expect(r.clauses.length, id).toBeGreaterThan(0);
      for (const c of r.clauses) {
        expect(c.section.length, id).toBeGreaterThan(0);
        expect(c.quote.length, id).toBeGreaterThan(0);
      }
    }
  });

  test("docs/rules.md is what scripts/rules-table.ts generates from the catalogue", () => {
    const path = fileURLToPath(new URL("../docs/rules.md", import.meta.url));
    expect(readFileSync(path, "utf8")).toBe(renderRulesDoc());
  });

  test("every rule is broken by at least one vector, but the listed exceptions", () => {
    const broken = new Set<string>();
    for (const f of loadVectorFiles()) {
      for (const v of f.vectors) {
        if (v.result === "acceptable") { for (const x of v.findings ?? []) broken.add(x.rule); }
        if (v.result === "invalid" && v.rule !== undefined) broken.add(v.rule);
      }
    }
    const missing = Object.keys(RULES).filter((id) => !broken.has(id) && !(id in NO_FRAME_VECTOR));
    expect(missing).toEqual([]);
    // An exception is only for a rule that exists and that no vector breaks.
    for (const id of Object.keys(NO_FRAME_VECTOR)) {
      expect(isRuleId(id), id).toBe(true);
      expect(broken.has(id), `${id} has a vector now: drop its exception`).toBe(false);
    }
  });

  test("every rule without a vector is named by another test file, but the listed gaps", () => {
    const dir = fileURLToPath(new URL("./", import.meta.url));
    const texts = readdirSync(dir)
      .filter((f) => f.endsWith(".test.ts") && f !== "rules.test.ts")
      .map((f) => readFileSync(dir + f, "utf8"));
    // Named as a string, or as a word of a text the test compares (`finding tcp-gap ...`).
    const named = (t: string, id: string): boolean => new RegExp(`["'\`\\s]${id}["'\`\\s]`).test(t);
    const untested = Object.keys(NO_FRAME_VECTOR).filter((id) => !texts.some((t) => named(t, id)));
    // A new rule without a vector must come with a test that names it; the gaps below are older.
    expect(untested.filter((id) => !NOT_NAMED_BY_A_TEST.has(id))).toEqual([]);
  });

  test("every vector naming a rule names one of the catalogue", () => {
    const bad: string[] = [];
    for (const f of loadVectorFiles()) {
      for (const v of f.vectors) {
        for (const x of v.findings ?? []) if (!isRuleId(x.rule)) bad.push(`${v.id}: ${x.rule}`);
        if (v.rule !== undefined && !isRuleId(v.rule)) bad.push(`${v.id}: ${v.rule}`);
      }
    }
    expect(bad).toEqual([]);
  });
});

describe("NbdLocalError ids (LOCAL_ERROR_RULES): the local program's mistakes, not peer-byte rules", () => {
  test("every local id is kebab-case and listed once", () => {
    for (const id of LOCAL_ERROR_RULES) expect(id, id).toMatch(/^[a-z][a-z0-9]*(-[a-z0-9]+)*$/);
    expect(new Set(LOCAL_ERROR_RULES).size).toBe(LOCAL_ERROR_RULES.length);
  });

  test("the scan finds the local errors of both sessions and of the request checks, as local", () => {
    const local = new Set<string>(LOCAL_ERROR_RULES);
    expect(localSites.filter((s) => !local.has(s.rule)).map((s) => `${s.rule} (${s.file}:${s.line})`))
      .toEqual([]);
    const via = new Set(localSites.map((s) => `${s.file} ${s.via}`));
    for (
      const v of ["session.ts NbdLocalError", "server_session.ts NbdLocalError", "_client_request.ts refuse"]
    ) {
      expect(via.has(v), v).toBe(true);
    }
    // Only what builds an NbdLocalError is set aside: no NbdRemoteError, finding or decoder error is local.
    expect(localSites.filter((s) => s.via !== "NbdLocalError" && s.via !== "refuse")).toEqual([]);
  });

  test("every local id is raised somewhere in codec/ (no id only on paper)", () => {
    const raised = new Set(localSites.map((s) => s.rule));
    expect(LOCAL_ERROR_RULES.filter((id) => !raised.has(id))).toEqual([]);
  });
});

describe("decoders follow the catalogue", () => {
  test("a lenient Reporter records a rule whose lenient action is `finding`, and throws one whose action is `throw`", () => {
    const r = new Reporter(false);
    r.report("reserved-bits", 4, "command-flags-reserved", "m");
    expect(r.list().map((f) => f.rule)).toEqual(["command-flags-reserved"]);
    expect(RULES["max-payload-length"].lenient).toBe("throw");
    expect(() => r.report("limit-exceeded", 16, "max-payload-length", "m")).toThrow("m");
    expect(r.list().length).toBe(1);
  });
});

describe("unknown bits the receiver must ignore are kept and shown, never reported (IGNORED_BY_RECEIVER)", () => {
  test("the list names the fields", () => {
    expect(IGNORED_BY_RECEIVER.map((x) => x.field)).toContain("reply flags");
    expect(IGNORED_BY_RECEIVER.map((x) => x.field)).toContain("handshake flags");
    expect(IGNORED_BY_RECEIVER.map((x) => x.field)).toContain("transmission flags");
  });

  test("decodeGreeting() keeps handshake flag bit 15 in strict mode", () => {
    const r = decodeGreeting(fromHex("4e42444d4147494349484156454f50548003"));
    expect(r.done && r.frame).toEqual({ type: "newstyle-greeting", handshakeFlags: 0x8003 });
    expect(r.done && r.findings).toEqual([]);
    expect(flagNames("handshakeFlag", 0x8003)).toEqual([
      "NBD_FLAG_FIXED_NEWSTYLE",
      "NBD_FLAG_NO_ZEROES",
      "0x8000",
    ]);
  });

  test("decodeExportNameReply() keeps transmission flag bits 13-15 in strict mode", () => {
    const r = decodeExportNameReply(fromHex("0000000000100000e001"), { noZeroes: true });
    expect(r.done && r.frame).toMatchObject({ transmissionFlags: 0xe001 });
    expect(r.done && r.findings).toEqual([]);
    expect(flagNames("transmissionFlag", 0xe001)).toEqual([
      "NBD_FLAG_HAS_FLAGS",
      "0x2000",
      "0x4000",
      "0x8000",
    ]);
  });

  test("decodeReplyChunk() keeps reply flag bits 1-15 in strict mode", () => {
    // structured NONE chunk, flags 0xffff (DONE and every unknown bit), cookie 1, length 0
    const r = decodeReplyChunk(fromHex("668e33ef" + "ffff" + "0000" + "0000000000000001" + "00000000"));
    expect(r.done && r.frame).toMatchObject({ flags: 0xffff, chunkType: 0 });
    expect(r.done && r.findings).toEqual([]);
  });

  test("decodeOptionReply() keeps NBD_INFO_INIT_FLAGS bits 2-15 in strict mode", () => {
    const r = decodeOptionReply(
      fromHex("0003e889045565a9" + "00000007" + "00000003" + "00000004" + "0004" + "fffc"),
    );
    expect(r.done && r.frame.data).toMatchObject({
      kind: "info",
      info: { kind: "init-flags", flags: 0xfffc },
    });
    expect(r.done && r.findings).toEqual([]);
  });

  test("decodeOptionReply() ignores the context id of an NBD_OPT_LIST_META_CONTEXT reply", () => {
    const r = decodeOptionReply(
      fromHex("0003e889045565a9" + "00000009" + "00000004" + "00000007" + "ffffffff" + "783a61"),
    );
    expect(r.done && r.frame.data).toEqual({ kind: "meta-context", id: 0xffffffff, name: "x:a" });
    expect(r.done && r.findings).toEqual([]);
  });
});

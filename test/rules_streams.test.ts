// The NBD rules that no single frame can break (they need the frames before it), each broken by hand-written
// bytes pushed into a stream decoder that was told the earlier frames. See NO_FRAME_VECTOR in rules.test.ts.
import { describe, expect, test } from "vitest";
import { type Request, ServerStreamDecoder, type StreamEvent } from "../mod.ts";
import { fromHex } from "./_harness.ts";

function rules(events: readonly StreamEvent[]): string[] {
  return events.flatMap((e) => e.findings.map((f) => f.rule));
}

function request(command: number, cookie: bigint, extended = false, offset = 0n, length = 0n): Request {
  return { type: "request", extended, flags: 0, command, cookie, offset, length };
}

const OPTION_REPLY = "0003e889045565a9";
const TRANSMISSION = { phase: "transmission", style: "newstyle" } as const;

describe("stream rules, broken by hand-written bytes", () => {
  test("option-reply-unsolicited: an option reply while no option is pending", () => {
    const d = new ServerStreamDecoder({ strict: false, state: { phase: "options", style: "newstyle" } });
    const ev = d.push(fromHex(OPTION_REPLY + "00000007" + "00000001" + "00000000"));
    expect(rules(ev)).toContain("option-reply-unsolicited");
  });

  test("export-name-option-reply: an option reply to NBD_OPT_EXPORT_NAME", () => {
    const d = new ServerStreamDecoder({ strict: false, state: { phase: "options", style: "newstyle" } });
    d.noteOption({ type: "option-request", option: 1, data: { kind: "export-name", name: "" } });
    const ev = d.push(fromHex(OPTION_REPLY + "00000001" + "80000001" + "00000000"));
    expect(rules(ev)).toContain("export-name-option-reply");
  });

  test("simple-reply-read-structured: a simple reply to READ after structured replies", () => {
    const d = new ServerStreamDecoder({ strict: false, state: { ...TRANSMISSION, structuredReplies: true } });
    d.noteRequest(request(0, 9n, false, 0n, 4n));
    // success, then the 4 bytes read
    const ev = d.push(fromHex("67446698" + "00000000" + "0000000000000009" + "deadbeef"));
    expect(rules(ev)).toContain("simple-reply-read-structured");
  });

  test("chunk-without-negotiation: a structured chunk when nothing was negotiated", () => {
    const d = new ServerStreamDecoder({
      strict: false,
      state: { ...TRANSMISSION, structuredReplies: false },
    });
    d.noteRequest(request(3, 9n));
    const ev = d.push(fromHex("668e33ef" + "0001" + "0000" + "0000000000000009" + "00000000"));
    expect(rules(ev)).toContain("chunk-without-negotiation");
  });

  test("extended-reply-offset: an extended reply whose offset is not the request's", () => {
    const d = new ServerStreamDecoder({ strict: false, state: { ...TRANSMISSION, extendedHeaders: true } });
    d.noteRequest(request(3, 9n, true, 0n, 0n));
    const ev = d.push(
      fromHex("6e8a278c" + "0001" + "0000" + "0000000000000009" + "0000000000001000" + "0000000000000000"),
    );
    expect(rules(ev)).toContain("extended-reply-offset");
  });

  test("block-status-context: a block-status chunk for a context that was not negotiated", () => {
    const d = new ServerStreamDecoder({
      strict: false,
      state: { ...TRANSMISSION, structuredReplies: true, contexts: new Map([[1, "base:allocation"]]) },
    });
    d.noteRequest(request(7, 9n, false, 0n, 4096n));
    // BLOCK_STATUS chunk, DONE, context 2, one extent of 4096 bytes, status 0
    const ev = d.push(
      fromHex(
        "668e33ef" + "0001" + "0005" + "0000000000000009" + "0000000c" + "00000002" + "00001000" + "00000000",
      ),
    );
    expect(rules(ev)).toContain("block-status-context");
  });

  test("max-buffered-bytes: a chunk that would need more buffered bytes than the limit", () => {
    const d = new ServerStreamDecoder({
      strict: false,
      maxBufferedBytes: 64,
      state: { ...TRANSMISSION, structuredReplies: true },
    });
    d.noteRequest(request(0, 9n, false, 0n, 4096n));
    // OFFSET_DATA, DONE, 1008 bytes of payload announced, 40 of them sent
    const ev = d.push(
      fromHex(
        "668e33ef" + "0001" + "0001" + "0000000000000009" + "000003f0" + "0000000000000000" + "00".repeat(40),
      ),
    );
    expect(rules(ev)).toContain("max-buffered-bytes");
  });
});

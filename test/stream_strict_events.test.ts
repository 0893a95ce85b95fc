// Strict mode keeps what was decoded: a stream or conversation decoder that throws at a violation hands the
// events the same call had decoded before it on the error (NbdStreamError.events), for push, end, gap and
// whole decoding. Bytes written by hand from the spec's tables.
import { describe, expect, test } from "vitest";
import {
  ClientStreamDecoder,
  ConversationDecoder,
  decodeConversation,
  isNbdDecodeError,
  NbdStreamError,
  ServerStreamDecoder,
  type StreamEvent,
} from "../mod.ts";
import { fromHex } from "./_harness.ts";

/** Client flags FIXED_NEWSTYLE (4 bytes), then an option header whose magic is zero. */
const FLAGS = "00000001";
const BAD_OPTION = "0000000000000000" + "00000003" + "00000000";
/** The server's fixed newstyle greeting (NBDMAGIC, IHAVEOPT, flags FIXED_NEWSTYLE). */
const GREETING = "4e42444d41474943" + "49484156454f5054" + "0001";
/** NBD_OPT_LIST with no data. */
const LIST = "49484156454f5054" + "00000003" + "00000000";

function thrown(f: () => unknown): NbdStreamError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(NbdStreamError);
    expect(isNbdDecodeError(e)).toBe(true);
    return e as NbdStreamError;
  }
  throw new Error("nothing was thrown");
}

const kinds = (events: readonly StreamEvent[]): string[] =>
  events.map((e) => e.event === "frame" ? `${e.direction} ${e.frame.type}` : `${e.direction} ${e.notice}`);

describe("strict decoders hand over the events decoded before the violation", () => {
  test("client stream: the client flags come with the bad option magic", () => {
    const lenient = new ClientStreamDecoder().push(fromHex(FLAGS + BAD_OPTION));
    const e = thrown(() => new ClientStreamDecoder({ strict: true }).push(fromHex(FLAGS + BAD_OPTION)));
    expect([e.code, e.offset]).toEqual(["bad-magic", 4]);
    expect(kinds(e.events)).toEqual(["c2s client-flags"]);
    expect(e.events[0]).toEqual(lenient[0]);
  });

  test("server stream: the greeting comes with a bad option reply magic", () => {
    const bad = "00".repeat(20);
    const e = thrown(() => new ServerStreamDecoder({ strict: true }).push(fromHex(GREETING + bad)));
    expect([e.code, e.offset]).toEqual(["bad-magic", 18]);
    expect(kinds(e.events)).toEqual(["s2c newstyle-greeting"]);
  });

  test("a violation that is the call's first event carries no events", () => {
    const d = new ClientStreamDecoder({ strict: true });
    expect(kinds(d.push(fromHex(FLAGS)))).toEqual(["c2s client-flags"]);
    const e = thrown(() => d.push(fromHex(BAD_OPTION)));
    expect([e.code, e.offset, e.events.length]).toEqual(["bad-magic", 4, 0]);
  });

  test("end of a stream inside a frame: stream-truncated as an NbdStreamError", () => {
    const d = new ClientStreamDecoder({ strict: true });
    expect(kinds(d.push(fromHex(FLAGS + LIST.slice(0, 6))))).toEqual(["c2s client-flags"]);
    const e = thrown(() => d.end());
    expect([e.rule, e.offset, e.events.length]).toEqual(["stream-truncated", 4, 0]);
  });

  test("conversation push: the client flags and LIST come with the bad option after them", () => {
    const d = new ConversationDecoder({ strict: true });
    expect(kinds(d.push("s2c", fromHex(GREETING)))).toEqual(["s2c newstyle-greeting"]);
    const e = thrown(() => d.push("c2s", fromHex(FLAGS + LIST + BAD_OPTION)));
    expect([e.code, e.offset]).toEqual(["bad-magic", 20]);
    expect(kinds(e.events)).toEqual(["c2s client-flags", "c2s option-request"]);
    expect(e.events.every((x) => (x as { connection?: number }).connection === 0)).toBe(true);
  });

  test("conversation gap: capture-gap as an NbdStreamError", () => {
    const d = new ConversationDecoder({ strict: true });
    d.push("s2c", fromHex(GREETING));
    d.push("c2s", fromHex(FLAGS + LIST.slice(0, 8)));
    const e = thrown(() => d.gap("c2s", 100));
    expect([e.rule, e.offset, e.events.length]).toEqual(["capture-gap", 8, 0]);
  });

  test("whole decoding: every event before a truncated client stream comes with the error", () => {
    const c2s = fromHex(FLAGS + LIST.slice(0, 6));
    const lenient = decodeConversation(c2s, fromHex(GREETING));
    expect(kinds(lenient)).toEqual(["s2c newstyle-greeting", "c2s client-flags", "c2s truncated"]);
    const e = thrown(() => decodeConversation(c2s, fromHex(GREETING), { strict: true }));
    expect(e.rule).toBe("stream-truncated");
    expect(e.events).toEqual(lenient.slice(0, 2));
  });
});

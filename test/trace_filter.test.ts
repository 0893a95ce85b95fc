// The --filter language: every rule of codec/trace_filter.ts's module doc, on JSON objects as the dissector
// writes them (from a real reply: test/fixtures/trace/tshark/libnbd-nbdkit-simple.tsv's packet 24).
import { describe, expect, test } from "vitest";
import { compileFilter, FilterSyntaxError } from "../trace.ts";
import type { JsonObject } from "../mod.ts";

const REPLY: JsonObject = {
  connection: 0,
  direction: "s2c",
  frameOffset: 210,
  frameLength: 4112,
  kind: "simple-reply",
  packet: 24,
  firstPacket: 24,
  time: "1795261489.611323000",
  client: "127.0.0.1:51176",
  server: "127.0.0.1:51009",
  requestPacket: 23,
  requestTime: "1795261489.611112000",
  responseTime: "0.000211000",
  cookie: "18446744073709551615",
  dataLength: 4096,
  requestCommand: "NBD_CMD_READ",
  command: "NBD_CMD_READ",
  findings: [],
};

const WRITE: JsonObject = {
  connection: 1,
  direction: "c2s",
  kind: "request",
  command: "NBD_CMD_WRITE",
  flags: ["NBD_CMD_FLAG_FUA", "NBD_CMD_FLAG_NO_HOLE"],
  cookie: "7",
  extendedHeader: false,
  offset: "4096",
  length: "4096",
  findings: [{ code: "reserved-bits", offset: 4, rule: "request-flags", message: "x" }],
};

function sel(expr: string): boolean[] {
  const f = compileFilter(expr);
  return [f(REPLY), f(WRITE)];
}

describe("compileFilter() selects by JSON fields", () => {
  test("== on a string field, and on a spec name by its last parts (bare words only)", () => {
    expect(sel("command == NBD_CMD_READ")).toEqual([true, false]);
    expect(sel("command == READ")).toEqual([true, false]);
    expect(sel("command == CMD_WRITE")).toEqual([false, true]);
    expect(sel('command == "READ"')).toEqual([false, false]);
    expect(sel('direction == "s2c"')).toEqual([true, false]);
    expect(sel("direction == s2c")).toEqual([true, false]);
    // A part of a name is not a last part.
    expect(sel("command == RITE")).toEqual([false, false]);
  });

  test("numbers compare as numbers, decimal strings too, exactly beyond 2^53", () => {
    expect(sel("responseTime > 0.0002")).toEqual([true, false]);
    expect(sel("responseTime > 0.000211")).toEqual([false, false]);
    expect(sel("responseTime >= 0.000211")).toEqual([true, false]);
    expect(sel("responseTime < 1e-3")).toEqual([true, false]);
    expect(sel("packet <= 24")).toEqual([true, false]);
    expect(sel("packet < 24")).toEqual([false, false]);
    expect(sel("frameLength == 4112.0")).toEqual([true, false]);
    expect(sel("cookie == 18446744073709551615")).toEqual([true, false]);
    expect(sel("cookie == 18446744073709551614")).toEqual([false, false]);
    expect(sel("cookie > 18446744073709551614")).toEqual([true, false]);
    expect(sel("offset > -1")).toEqual([false, true]);
    expect(sel("connection == 1")).toEqual([false, true]);
  });

  test("ordering comparisons on text are false, not an error", () => {
    expect(sel("command > 0")).toEqual([false, false]);
  });

  test("arrays match when any element does; dotted fields reach into objects in arrays", () => {
    expect(sel("flags == FUA")).toEqual([false, true]);
    expect(sel("flags == NBD_CMD_FLAG_NO_HOLE")).toEqual([false, true]);
    expect(sel("flags != FUA")).toEqual([true, false]);
    expect(sel('findings.rule == "request-flags"')).toEqual([false, true]);
    expect(sel("findings.offset == 4")).toEqual([false, true]);
  });

  test("a bare field is true when present (an empty array is absent); an absent field matches != only", () => {
    expect(sel("responseTime")).toEqual([true, false]);
    expect(sel("findings")).toEqual([false, true]);
    expect(sel("extendedHeader")).toEqual([false, false]);
    expect(sel("responseTime == 0.000211")).toEqual([true, false]);
    expect(sel("nosuch == 1")).toEqual([false, false]);
    expect(sel("nosuch != 1")).toEqual([true, true]);
    expect(sel("extendedHeader == false")).toEqual([false, true]);
  });

  test("and, or, not (and &&, ||, !) with not tightest, then and, then or; parentheses", () => {
    expect(sel("command == WRITE and responseTime > 0.001")).toEqual([false, false]);
    expect(sel("command == READ and responseTime > 0.0001")).toEqual([true, false]);
    expect(sel("command == WRITE or responseTime")).toEqual([true, true]);
    expect(sel("not responseTime")).toEqual([false, true]);
    expect(sel("!responseTime && !findings")).toEqual([false, false]);
    expect(sel("command == READ || command == WRITE")).toEqual([true, true]);
    // or binds looser than and: READ or (WRITE and packet) -> the reply.
    expect(sel("command == READ or command == WRITE and packet")).toEqual([true, false]);
    expect(sel("(command == READ or command == WRITE) and packet")).toEqual([true, false]);
    expect(sel("(command == READ or command == WRITE) and not packet")).toEqual([false, true]);
    expect(sel("not not packet")).toEqual([true, false]);
  });
});

describe("compileFilter() refuses bad expressions with the column of the error", () => {
  const cases: [string, number, string][] = [
    ["", 1, "the expression is empty"],
    ["command ==", 11, "expected a value after '==', found the end of the expression"],
    ["command == and x", 12, "expected a value after '==', found 'and'"],
    ["command = READ", 9, "'=' is not an operator (use '==')"],
    ["(packet > 1", 12, "expected ')' to close '(' at column 1"],
    ["packet > 1)", 11, "expected 'and', 'or' or the end, found ')'"],
    ['kind == "request', 9, "unterminated string"],
    ["packet > READ", 10, "'>' compares numbers, found 'READ'"],
    ["packet and", 11, "expected a field name, found the end of the expression"],
    ["packet # 1", 8, "unexpected character '#'"],
    ["== 1", 1, "expected a field name, found '=='"],
    ["a..b", 1, "'a..b' is not a field name"],
  ];
  for (const [expr, column, message] of cases) {
    test(`${JSON.stringify(expr)}: column ${column}`, () => {
      let err: unknown;
      try {
        compileFilter(expr);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FilterSyntaxError);
      expect((err as FilterSyntaxError).column).toBe(column);
      expect((err as FilterSyntaxError).message).toContain(message);
    });
  }
});

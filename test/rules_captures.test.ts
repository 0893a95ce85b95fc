// The capture-format rules (codec/capture.ts), each broken by a hand-built file, checked by rule id as well as
// code and offset (test/capture.test.ts checks code and offset). See NO_FRAME_VECTOR in rules.test.ts.
import { expect, test } from "vitest";
import { isNbdDecodeError, RULES } from "../mod.ts";
import { readCapture } from "../trace.ts";
import { block, epb, hex, idb, le32, pcapHeader, pcapRecord, shb } from "./fixtures/trace/_build.ts";

/** The rule, code and offset `f` throws. */
function thrown(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (!isNbdDecodeError(e)) throw e;
    return `${e.rule} ${e.code} ${e.offset}`;
  }
  return "nothing thrown";
}

const LE = true;

test.each([
  ["capture-magic", () => readCapture(hex("a1b2cd34" + "00".repeat(20))), "bad-magic 0"],
  [
    "capture-max-record-length",
    () =>
      readCapture(hex(pcapHeader({ le: false, linkType: 1 }) + pcapRecord(false, 0, 0, "00".repeat(100))), {
        maxRecordLength: 100,
      }),
    "limit-exceeded 32",
  ],
  [
    "pcapng-block-length",
    () => readCapture(hex(shb(LE) + idb(LE, 1) + "06000000" + "0d000000" + "00".repeat(16))),
    "bad-length 52",
  ],
  ["pcapng-block-trailer", () => readCapture(hex(shb(LE).slice(0, -8) + le32(32))), "bad-length 24"],
  [
    "pcapng-byte-order-magic",
    () => readCapture(hex("0a0d0d0a" + "1c000000" + "01020304" + "00".repeat(16))),
    "bad-magic 8",
  ],
  ["pcapng-version", () => readCapture(hex(shb(LE).replace("4d3c2b1a0100", "4d3c2b1a0200"))), "bad-value 12"],
  [
    "pcapng-captured-length",
    () =>
      readCapture(
        hex(
          shb(LE) + idb(LE, 1) +
            block(LE, 6, le32(0) + le32(0) + le32(0) + le32(40) + le32(40) + "00".repeat(8)),
        ),
      ),
    "bad-length 68",
  ],
  [
    "pcapng-option-length",
    () => readCapture(hex(shb(LE) + block(LE, 1, "0100" + "0000" + le32(0) + "0900" + "2000" + "06000000"))),
    "bad-length 46",
  ],
  ["pcapng-interface-id", () => readCapture(hex(shb(false) + epb(false, 0, 0n, "00"))), "bad-value 36"],
])("%s is thrown with the catalogue's code", (rule, f, where) => {
  expect(thrown(f)).toBe(`${rule} ${where}`);
  expect(where.split(" ")[0]).toBe(RULES[rule as keyof typeof RULES].code);
});

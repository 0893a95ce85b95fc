// The plain-request fast path (plainHeader) against the general path it mirrors (checkHeader), over every
// combination of header style, negotiation, command (all known and some unknown) and command flags (every
// assigned flag combination plus unassigned bits), with zero and nonzero offset and length.
import { describe, expect, test } from "vitest";
import { Reporter } from "../codec/_report.ts";
import { checkHeader, plainHeader } from "../codec/_request_plain.ts";
import { decodeRequest } from "../mod.ts";

const COMMANDS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0x7fff, 0xffff];
const FLAGS: number[] = [];
for (let f = 0; f < 0x40; f++) FLAGS.push(f);
FLAGS.push(0x40, 0x41, 0x8000, 0xffff);
const CONTEXTS = [undefined, false, true] as const;
// The server's transmission flags: unknown, none, everything, and some single features.
const TFLAGS = [undefined, 0x0001, 0xffff, 0x0009, 0x0085, 0x0845, 0x1021] as const;

/** A header's bytes: compact (28) or extended (32), offset and length both `v`. */
function header(extended: boolean, flags: number, command: number, v: number): Uint8Array {
  const b = new Uint8Array(extended ? 32 : 28);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, extended ? 0x21e41c71 : 0x25609513);
  dv.setUint16(4, flags);
  dv.setUint16(6, command);
  dv.setUint32(12, 1);
  dv.setUint32(20, v);
  dv.setUint32(extended ? 28 : 24, v);
  return b;
}

function generalFindings(
  extended: boolean,
  flags: number,
  command: number,
  ctx: boolean | undefined,
  v: number,
  tflags?: number,
) {
  const b = header(extended, flags, command, v);
  const r = new Reporter(false);
  checkHeader(new DataView(b.buffer), 0, 0, extended, flags, command, r, ctx, tflags);
  return r.list();
}

describe("plainHeader() (fast path) against checkHeader() (general path)", () => {
  test("a header plainHeader() calls plain gets no finding from checkHeader(), in every combination", () => {
    let plain = 0;
    let clean = 0;
    const wrong: string[] = [];
    for (const extended of [false, true]) {
      for (const ctx of CONTEXTS) {
        for (const command of COMMANDS) {
          for (const flags of FLAGS) {
            for (const v of [0, 4096]) {
              for (const tflags of TFLAGS) {
                const fast = plainHeader(extended, flags, command, ctx, tflags);
                const findings = generalFindings(extended, flags, command, ctx, v, tflags);
                if (findings.length === 0) clean++;
                if (!fast) continue;
                plain++;
                if (findings.length !== 0) {
                  wrong.push(
                    `ext=${extended} ctx=${ctx} tflags=${tflags} cmd=${command} flags=0x${
                      flags.toString(16)
                    }: ` +
                      findings[0]!.rule,
                  );
                }
              }
            }
          }
        }
      }
    }
    expect(wrong).toEqual([]);
    // The fast path is taken for a real share of the clean headers (reads, compact writes, trims, ...).
    expect(plain).toBeGreaterThan(0);
    expect(plain).toBeLessThanOrEqual(clean);
  });

  test("every common request takes the fast path", () => {
    // READ, compact WRITE, TRIM, CACHE, WRITE_ZEROES, BLOCK_STATUS, with and without FUA, both styles.
    for (const extended of [false, true]) {
      for (const command of [0, 4, 5, 6, 7]) {
        for (const flags of [0, 1]) {
          expect(plainHeader(extended, flags, command, extended), `${command}`).toBe(true);
        }
      }
    }
    expect(plainHeader(false, 0, 1, false)).toBe(true); // compact WRITE
  });

  test("decodeRequest() gives the same frame and findings whichever path a header takes", () => {
    for (const extended of [false, true]) {
      for (const command of COMMANDS) {
        for (const flags of FLAGS) {
          if ((flags & 0x20) !== 0 || command === 1) continue; // payload-carrying: covered by the vectors
          const b = header(extended, flags, command, 4096);
          const r = decodeRequest(b, { strict: false, extendedHeaders: extended });
          expect(r.done).toBe(true);
          if (!r.done) continue;
          expect(r.findings).toEqual(generalFindings(extended, flags, command, extended, 4096));
          expect(r.frame).toEqual({
            type: "request",
            extended,
            flags,
            command,
            cookie: 1n,
            offset: 4096n,
            length: 4096n,
          });
        }
      }
    }
  });
});

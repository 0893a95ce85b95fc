// A short fixed-seed run of the fuzz campaign (npm run fuzz, docs/fuzzing.md) over every target: a few
// hundred mutated inputs each. It fails on any finding that is not one of the known defects of issue 15
// section 1. The checks themselves are tested here too: each catches the fault it is for.
import { describe, expect, test } from "vitest";
import { type Decoded, type Frame, NbdDecodeError } from "../mod.ts";
import { guard, hex, Violation } from "../scripts/fuzz/check.ts";
import { fuzzTarget, minimize } from "../scripts/fuzz/engine.ts";
import { checkFrameDecoder, FRAME_DECODERS } from "../scripts/fuzz/frames.ts";
import { knownDefect } from "../scripts/fuzz/known.ts";
import { mutateBytes, Rng } from "../scripts/fuzz/mutate.ts";
import { type Target, TARGETS } from "../scripts/fuzz/targets.ts";

/** Mutated inputs per target: enough to reach past the seeds, little enough for a few seconds in all. */
const RUNS: Record<string, number> = {
  "stream:client": 40,
  "stream:server": 40,
  conversation: 20,
  capture: 30,
  "tcp-reorder": 10,
  cli: 10,
  limits: 0, // seconds per input; its defect has a regression file
};

/** Seeds per target in this short run: every frame vector, a sample of the large stream and capture seeds. */
function sampled(t: Target): Target {
  if (t.name.startsWith("frame:")) return t;
  return { ...t, seeds: () => t.seeds().filter((s, i) => i % 4 === 0 && s.length <= 20_000) };
}

describe("fuzz campaign, fixed seed", () => {
  for (const t of TARGETS) {
    const n = RUNS[t.name] ?? 400;
    test.skipIf(n === 0)(`${t.name}: ${n} mutated inputs find nothing new`, async () => {
      const stats = await fuzzTarget(sampled(t), { seed: 20261207, iterations: n, minimizeMs: 500 });
      expect(stats.inputs).toBe(n);
      const fresh = stats.findings.filter((f) => f.known === undefined)
        .map((f) => `${f.check}: ${f.message}\n  input ${hex(f.input, 200)}`);
      expect(fresh).toEqual([]);
    });
  }
});

describe("the fuzz checks catch what they are for", () => {
  const bytes = Uint8Array.of(0, 0, 0, 1);

  test("guard() lets an NbdDecodeError through and turns anything else into a foreign-exception finding", () => {
    const ok = guard("x", 4, 4, () => {
      throw new NbdDecodeError("bad-magic", 2, "magic", "m");
    });
    expect(ok.ok).toBe(false);
    expect(() =>
      guard("x", 4, 4, () => {
        throw new TypeError("oops");
      })
    ).toThrow(expect.objectContaining({ check: "foreign-exception" }));
    expect(() =>
      guard("x", 4, 4, () => {
        throw new NbdDecodeError("bad-magic", 5, "magic", "m");
      })
    ).toThrow(expect.objectContaining({ check: "error-offset" }));
  });

  test("a decoder whose frame does not encode back to its bytes is a roundtrip-bytes finding", () => {
    const real = FRAME_DECODERS.find((d) => d.name === "client-flags")!;
    const lying = {
      ...real,
      decode: (b: Uint8Array, o: Record<string, unknown>): Decoded<Frame> => {
        const r = real.decode(b, o);
        return r.done ? { ...r, frame: { type: "client-flags", flags: 2 } } : r;
      },
    };
    expect(() => checkFrameDecoder(real, Uint8Array.of(0, ...bytes), new Set())).not.toThrow();
    expect(() => checkFrameDecoder(lying, Uint8Array.of(0, ...bytes), new Set())).toThrow(
      expect.objectContaining({ check: "roundtrip-bytes" }),
    );
  });

  test("a decoder whose strict and lenient modes disagree is a strict-lenient finding", () => {
    const real = FRAME_DECODERS.find((d) => d.name === "client-flags")!;
    const moody = {
      ...real,
      decode: (b: Uint8Array, o: Record<string, unknown>): Decoded<Frame> => {
        if (o.strict === true) throw new NbdDecodeError("reserved-bits", 0, "made-up", "m");
        return real.decode(b, o);
      },
    };
    expect(() => checkFrameDecoder(moody, Uint8Array.of(0, ...bytes), new Set())).toThrow(
      expect.objectContaining({ check: "strict-lenient" }),
    );
  });

  test("a decoder that allocates from a length field is a frame-allocation finding", () => {
    const real = FRAME_DECODERS.find((d) => d.name === "client-flags")!;
    let kept: Uint8Array | undefined;
    const greedy = {
      ...real,
      decode: (b: Uint8Array, o: Record<string, unknown>): Decoded<Frame> => {
        kept = new Uint8Array(64 << 20);
        kept[1] = 1;
        return real.decode(b, o);
      },
    };
    expect(() => checkFrameDecoder(greedy, Uint8Array.of(0, ...bytes), new Set())).toThrow(
      expect.objectContaining({ check: "frame-allocation" }),
    );
    expect(kept?.length).toBe(64 << 20);
  });

  test("the engine finds a planted fault by mutation and minimizes it to the byte that matters", async () => {
    const planted: Target = {
      name: "planted",
      maxLength: 64,
      weight: 1,
      seeds: () => [Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8)],
      mutate: (rng, input, corpus) => mutateBytes(rng, input, corpus, 64),
      run: (input, features) => {
        features.add(`len:${input.length}`);
        if (input.includes(0xff)) throw new Violation("planted", "0xff seen");
      },
    };
    const stats = await fuzzTarget(planted, { seed: 3, iterations: 2000, minimizeMs: 1000 });
    expect(stats.findings.map((f) => f.check)).toEqual(["planted"]);
    expect([...stats.findings[0]!.input]).toEqual([0xff]);
    expect([...(await minimize(planted, Uint8Array.of(1, 0xff, 2), "planted", 1000))]).toEqual([0xff]);
  });

  test("mutation is deterministic for a seed", () => {
    const a = new Rng(9);
    const b = new Rng(9);
    const input = Uint8Array.of(0x25, 0x60, 0x95, 0x13, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8);
    for (let i = 0; i < 50; i++) {
      expect(mutateBytes(a, input, [], 100)).toEqual(mutateBytes(b, input, [], 100));
    }
  });

  test("no defect is known any more (issue 15 section 1 is fixed): every finding is new", () => {
    // 15.1.3's shape, once known, is a finding that fails the campaign now that its fix is merged.
    expect(knownDefect({ target: "stream:client", check: "strict-split-offset", message: "" }))
      .toBeUndefined();
    expect(knownDefect({ target: "stream:client", check: "split-mismatch", message: "" })).toBeUndefined();
    expect(knownDefect({ target: "conversation", check: "conversation-mismatch", message: "" }))
      .toBeUndefined();
    expect(knownDefect({ target: "limits", check: "memory-limit", message: "client stream, ..." }))
      .toBeUndefined();
    expect(knownDefect({ target: "tcp-reorder", check: "tcp-silent-loss", message: "" })).toBeUndefined();
  });
});

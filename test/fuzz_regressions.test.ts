// Every minimized fuzz finding kept under test/regressions/ is replayed through the check that found it.
// A file without `known` must pass: its defect was fixed. A file marked `known` reproduces one of the
// defects of issue 15 section 1 listed in KNOWN_DEFECTS_ISSUE_15_1 (scripts/fuzz/known.ts): it must still
// show that defect, so that when the fix is merged this test says to remove the entry (and the mark).
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";
import { fromHex } from "../scripts/fuzz/check.ts";
import { runOne } from "../scripts/fuzz/engine.ts";
import { KNOWN_DEFECTS_ISSUE_15_1, knownDefect } from "../scripts/fuzz/known.ts";
import { TARGETS } from "../scripts/fuzz/targets.ts";

const dir = fileURLToPath(new URL("./regressions/", import.meta.url));
const files = readdirSync(dir).filter((f) => f.endsWith(".json")).sort();

interface RegressionFile {
  target: string;
  check: string;
  known?: string;
  message: string;
  hex: string;
}

describe("fuzz regressions", () => {
  test("every known defect of issue 15 section 1 has a reproduction, and every reproduction file exists", () => {
    for (const k of KNOWN_DEFECTS_ISSUE_15_1) {
      expect(k.reproductions.length, k.id).toBeGreaterThan(0);
      for (const r of k.reproductions) expect(files, `${k.id}: ${r}`).toContain(r);
    }
  });

  for (const f of files) {
    const j = JSON.parse(readFileSync(dir + f, "utf8")) as RegressionFile;
    const entry = KNOWN_DEFECTS_ISSUE_15_1.find((k) => k.id === j.known);
    const name = entry === undefined
      ? `${f}: ${j.target} passes its checks (${j.check} fixed)`
      : `${f}: ${j.target} still shows known defect ${entry.id} (${j.check})`;
    test(name, async () => {
      const t = TARGETS.find((x) => x.name === j.target);
      expect(t, `target ${j.target}`).toBeDefined();
      const v = await runOne(t!, fromHex(j.hex), new Set());
      if (j.known === undefined || entry === undefined) {
        expect(j.known, `${f} names a known defect that is no longer listed: remove its "known" mark`)
          .toBeUndefined();
        // A known defect the same input also shows (deferred while the other checks went on) is not this one.
        expect(v === undefined || v.deferred ? "passes" : `${v.check}: ${v.message}`).toBe("passes");
        return;
      }
      expect(entry.reproductions, `${f} is listed as a reproduction of ${entry.id}`).toContain(f);
      expect(
        v?.check,
        `${f} no longer shows ${entry.id}: if its fix is merged, remove the entry from KNOWN_DEFECTS_ISSUE_15_1 ` +
          `(scripts/fuzz/known.ts) and the "known" mark from this file`,
      ).toBe(j.check);
      expect(knownDefect({ target: j.target, check: v!.check, message: v!.message })?.id).toBe(entry.id);
    });
  }
});

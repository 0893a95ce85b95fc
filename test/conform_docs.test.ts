import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { SERVER_CASES } from "../codec/conform_server.ts";
import { blockOf, parseMatrix, renderCatalogue, replaceBlock } from "../scripts/conform-docs.ts";

const DOC = readFileSync(new URL("../docs/conformance.md", import.meta.url), "utf8");

/** Table cells without the padding `deno fmt` adds, separator rows dropped. */
function cells(md: string): string[][] {
  return md.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !/^\|[\s|:-]+\|$/.test(l))
    .map((l) => l.startsWith("|") ? l.split(/(?<!\\)\|/).slice(1, -1).map((c) => c.trim()) : [l]);
}

describe("docs/conformance.md", () => {
  it("has the case catalogue generated from SERVER_CASES (run scripts/conform-matrix.sh --write)", () => {
    expect(cells(blockOf(DOC, "catalogue"))).toEqual(cells(renderCatalogue(SERVER_CASES)));
  });

  it("has a matrix row for every case and a known outcome in every cell", () => {
    const m = parseMatrix(DOC);
    expect([...m.keys()]).toEqual(SERVER_CASES.map((c) => c.id));
    for (const [id, peers] of m) {
      expect(peers.size, id).toBe(7);
      for (const [peer, outcomes] of peers) {
        for (const o of outcomes) expect(["pass", "fail", "warn", "skip"], `${id} ${peer}`).toContain(o);
      }
    }
  });

  it("explains every failed MUST and every warning of a real peer in the text", () => {
    const m = parseMatrix(DOC);
    const text = DOC.slice(DOC.indexOf("### Every MUST"));
    for (const [id, peers] of m) {
      for (const [, outcomes] of peers) {
        if (outcomes.includes("fail") || outcomes.includes("warn")) expect(text, id).toContain(`\`${id}\``);
      }
    }
  });

  it("keeps a two-outcome cell when rewriting the matrix with one of its outcomes", () => {
    const doc =
      "<!-- matrix:start -->\n| case | level | q <!-- q --> |\n| --- | --- | --- |\n| `a.b` | MUST | pass/fail |\n<!-- matrix:end -->\n";
    const next = replaceBlock(
      doc,
      "matrix",
      "| case | level | q <!-- q --> |\n| --- | --- | --- |\n| `a.b` | MUST | fail |\n",
    );
    expect(parseMatrix(next).get("a.b")?.get("q")).toEqual(["pass", "fail"]);
    const other = replaceBlock(
      doc,
      "matrix",
      "| case | level | q <!-- q --> |\n| --- | --- | --- |\n| `a.b` | MUST | warn |\n",
    );
    expect(parseMatrix(other).get("a.b")?.get("q")).toEqual(["warn"]);
  });
});

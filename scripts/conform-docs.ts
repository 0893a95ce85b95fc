/**
 * The generated parts of docs/conformance.md: the case catalogue (from the cases themselves) and the
 * matrix (from a run against real peers), each between `<!-- NAME:start -->` and `<!-- NAME:end -->`.
 *
 * @module
 */
import type { ConformCase, ConformOutcome, ConformResult } from "../codec/conform.ts";

function cell(s: string): string {
  return s.replace(/\|/g, "\\|").replace(/\n/g, " ");
}

/** The catalogue: one table per area, one row per case. */
export function renderCatalogue(cases: readonly ConformCase[]): string {
  const areas = [...new Set(cases.map((c) => c.area))];
  const out: string[] = [];
  for (const a of areas) {
    out.push(
      `### ${a}`,
      "",
      "| id | level | checks | spec section | the spec says |",
      "| --- | --- | --- | --- | --- |",
    );
    for (const c of cases.filter((x) => x.area === a)) {
      out.push(
        `| \`${c.id}\` | ${c.level} | ${cell(c.title)}${c.writes ? " (writes)" : ""} | ${
          cell(c.section)
        } | "${cell(c.quote)}" |`,
      );
    }
    out.push("");
  }
  return out.join("\n");
}

/** The matrix: one row per case, one column per peer. */
export function renderMatrix(
  cases: readonly ConformCase[],
  peers: readonly { id: string; label: string }[],
  results: ReadonlyMap<string, readonly ConformResult[]>,
): string {
  const out = [
    `| case | level | ${peers.map((p) => `${p.label} <!-- ${p.id} -->`).join(" | ")} |`,
    `| --- | --- | ${peers.map(() => "---").join(" | ")} |`,
  ];
  for (const c of cases) {
    const cells = peers.map((p) => results.get(p.id)?.find((r) => r.id === c.id)?.outcome ?? "-");
    out.push(`| \`${c.id}\` | ${c.level} | ${cells.join(" | ")} |`);
  }
  return out.join("\n") + "\n";
}

/** Reads the committed matrix: case id -> peer id -> allowed outcomes ("pass/fail" allows both). */
export function parseMatrix(text: string): Map<string, Map<string, ConformOutcome[]>> {
  const block = blockOf(text, "matrix");
  const lines = block.split("\n").filter((l) => l.startsWith("|"));
  const head = lines[0] ?? "";
  const peers = [...head.matchAll(/<!-- ([\w-]+) -->/g)].map((m) => m[1]!);
  const out = new Map<string, Map<string, ConformOutcome[]>>();
  for (const l of lines.slice(2)) {
    const cells = l.split("|").slice(1, -1).map((x) => x.trim());
    const id = cells[0]!.replace(/`/g, "");
    const m = new Map<string, ConformOutcome[]>();
    peers.forEach((p, i) => {
      const v = cells[2 + i] ?? "";
      m.set(p, v.replace(/\*/g, "").split("/").map((x) => x.trim()) as ConformOutcome[]);
    });
    out.set(id, m);
  }
  return out;
}

function markers(name: string): [string, string] {
  return [`<!-- ${name}:start -->`, `<!-- ${name}:end -->`];
}

/** The text between a block's markers. */
export function blockOf(text: string, name: string): string {
  const [a, b] = markers(name);
  const i = text.indexOf(a);
  const j = text.indexOf(b);
  if (i < 0 || j < i) throw new Error(`no ${a} ... ${b} block`);
  return text.slice(i + a.length, j);
}

/** Replaces a block's contents, keeping cells that allow several outcomes when the new run is one of them. */
export function replaceBlock(text: string, name: string, body: string): string {
  const [a, b] = markers(name);
  const i = text.indexOf(a);
  const j = text.indexOf(b);
  if (i < 0 || j < i) throw new Error(`no ${a} ... ${b} block`);
  let next = body;
  if (name === "matrix") {
    const old = parseMatrix(text);
    next = body.split("\n").map((l) => {
      if (!l.startsWith("| `")) return l;
      const cells = l.split("|").slice(1, -1).map((x) => x.trim());
      const id = cells[0]!.replace(/`/g, "");
      const peers = [...(body.split("\n")[0] ?? "").matchAll(/<!-- ([\w-]+) -->/g)].map((m) => m[1]!);
      const kept = cells.map((c, k) => {
        const peer = peers[k - 2];
        const allowed = peer === undefined ? undefined : old.get(id)?.get(peer);
        return allowed && allowed.length > 1 && allowed.includes(c as ConformOutcome) ? allowed.join("/") : c;
      });
      return `| ${kept.join(" | ")} |`;
    }).join("\n");
  }
  return text.slice(0, i + a.length) + "\n" + next.trimEnd() + "\n" + text.slice(j);
}

// codec/ imports only downward: no two files (and no longer chain of files) import each other.
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { expect, test } from "vitest";

const DIR = fileURLToPath(new URL("../codec/", import.meta.url));

function imports(file: string): string[] {
  const text = readFileSync(DIR + file, "utf8");
  const out: string[] = [];
  for (const m of text.matchAll(/^(?:import|export)\b[^;]*?\bfrom\s+"\.\/([\w.]+)"/gm)) out.push(m[1]!);
  return out;
}

test("the import graph of codec/ has no cycle", () => {
  const files = readdirSync(DIR).filter((f) => f.endsWith(".ts")).sort();
  const graph = new Map(files.map((f) => [f, imports(f)]));
  const cycles: string[] = [];
  const state = new Map<string, 1 | 2>();
  const visit = (f: string, path: string[]): void => {
    state.set(f, 1);
    for (const g of graph.get(f) ?? []) {
      if (state.get(g) === 1) cycles.push([...path.slice(path.indexOf(g)), g].join(" -> "));
      else if (state.get(g) === undefined) visit(g, [...path, g]);
    }
    state.set(f, 2);
  };
  for (const f of files) if (state.get(f) === undefined) visit(f, [f]);
  expect(cycles).toEqual([]);
  // The scan sees imports at all.
  expect(graph.get("request.ts")).toContain("_request_plain.ts");
  expect(graph.get("_request_plain.ts")).not.toContain("request.ts");
  expect(graph.get("_stream_impl.ts")).not.toContain("stream.ts");
});

import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";

const root = fileURLToPath(new URL("../", import.meta.url));
const read = (p: string) => readFileSync(root + p, "utf8");

describe("package", () => {
  test("deno.json and package.json carry the same version", () => {
    const pkg = JSON.parse(read("package.json")) as { version: string };
    const deno = JSON.parse(read("deno.json")) as { version: string };
    expect(pkg.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(deno.version).toBe(pkg.version);
  });

  test("the npm package has no runtime dependencies and no side effects", () => {
    const pkg = JSON.parse(read("package.json")) as Record<string, unknown>;
    expect(pkg.dependencies ?? {}).toEqual({});
    expect(pkg.sideEffects).toBe(false);
    const exp = (pkg.exports as Record<string, { import: Record<string, string> }>)["."]!;
    expect(Object.keys(exp.import)[0]).toBe("types");
  });

  const files = readdirSync(root + "codec").filter((f) => f.endsWith(".ts"));
  test("codec/ has source files", () => {
    expect(files.length).toBeGreaterThan(5);
  });
  // codec/ is pure: no I/O, no runtime-specific globals, no timers, no console.
  const forbidden: [RegExp, string][] = [
    [/from\s+["']node:/, "node: import"],
    [/import\(\s*["']node:/, "node: dynamic import"],
    [/\bDeno\./, "Deno global"],
    [/\bBuffer\b/, "Buffer"],
    [/\bconsole\./, "console"],
    [/\b(setTimeout|setInterval|setImmediate|queueMicrotask)\b/, "timer"],
    [/\bprocess\./, "process global"],
    [/\brequire\(/, "require"],
    [/\bfetch\(/, "fetch"],
  ];
  for (const f of files) {
    test(`codec/${f} is pure (no node:, Deno, Buffer, console, timers)`, () => {
      // Doc comments may show usage; check code only.
      const code = read("codec/" + f).replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
      for (const [re, what] of forbidden) expect(re.test(code), `${f} uses ${what}`).toBe(false);
    });
  }
});

// The npm tarball ships what users need (the build, the vectors and captures, the docs `--help` points to)
// and nothing else: no peer logs, no tests, scripts, benchmarks or CI files (issue 15, packaging). The list
// is npm's own (`npm pack --dry-run --json`). The build is only there after `tsup`: `npm run check` runs
// this file again after building, with NBD_CODEC_REQUIRE_DIST=1, so that every file package.json names
// must be in the tarball.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";

const root = fileURLToPath(new URL("../", import.meta.url));
const pkg = JSON.parse(readFileSync(root + "package.json", "utf8")) as {
  main: string;
  module: string;
  types: string;
  bin: Record<string, string>;
  exports: Record<string, unknown>;
};

/** Every file path package.json points at (main, module, types, bin, exports). */
function namedFiles(): string[] {
  const out = new Set<string>([pkg.main, pkg.module, pkg.types, ...Object.values(pkg.bin)]);
  const walk = (v: unknown): void => {
    if (typeof v === "string") {
      if (v.startsWith("./dist/")) out.add(v);
    } else if (v !== null && typeof v === "object") { for (const x of Object.values(v)) walk(x); }
  };
  walk(pkg.exports);
  return [...out].map((p) => p.replace(/^\.\//, ""));
}

function packList(): string[] {
  const r = spawnSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], {
    cwd: root,
    encoding: "utf8",
    env: { ...process.env, NPM_CONFIG_LOGLEVEL: "error" },
  });
  if (r.status !== 0) throw new Error(`npm pack failed: ${r.stderr}`);
  const [info] = JSON.parse(r.stdout) as { files: { path: string }[] }[];
  return info!.files.map((f) => f.path).sort();
}

describe("npm package contents", () => {
  const files = packList();
  const requireDist = process.env.NBD_CODEC_REQUIRE_DIST === "1";

  test("the tarball holds only the build, vectors, docs, README, LICENSE and package.json", () => {
    const outside = files.filter((f) =>
      !/^(dist|vectors|docs)\//.test(f) && !["README.md", "LICENSE", "package.json"].includes(f)
    );
    expect(outside).toEqual([]);
  });

  test("the tarball holds no peer logs and no test scaffolding", () => {
    expect(files.filter((f) => f.endsWith(".log"))).toEqual([]);
    expect(files.filter((f) => /(^|\/)(test|tests|fixtures|scripts|bench|examples|\.ci)\//.test(f))).toEqual(
      [],
    );
    expect(files.filter((f) => /\.test\.[cm]?[jt]s$/.test(f))).toEqual([]);
    expect(files.filter((f) => /^dist\/.*\.map$/.test(f))).toEqual([]);
  });

  test("the tarball holds every vector file, the schema, and each bundled capture with its byte streams", () => {
    const vectors = readdirSync(root + "vectors").filter((f) => f.endsWith(".json")).map((f) =>
      `vectors/${f}`
    );
    expect(vectors).toContain("vectors/schema.json");
    for (const f of [...vectors, "vectors/README.md", "vectors/captures/README.md"]) {
      expect(files).toContain(f);
    }
    const captures = readdirSync(root + "vectors/captures").filter((f) => /\.pcap(ng)?$/.test(f));
    expect(captures.length).toBeGreaterThan(10);
    for (const c of captures) expect(files).toContain(`vectors/captures/${c}`);
    const streams = readdirSync(root + "vectors/captures").filter((f) =>
      /\.(c2s|s2c)\.bin$|\.expected\.jsonl$/.test(f)
    );
    for (const s of streams) expect(files).toContain(`vectors/captures/${s}`);
  });

  test("the tarball holds every document the command's --help points to", () => {
    const help = readFileSync(root + "bin/cli.ts", "utf8");
    const docs = [...new Set(help.match(/docs\/[a-z0-9_-]+\.md/g) ?? [])];
    expect(docs.length).toBeGreaterThan(0);
    for (const d of docs) {
      expect(existsSync(root + d), d).toBe(true);
      expect(files).toContain(d);
    }
  });

  test.runIf(requireDist || existsSync(root + "dist/mod.js"))(
    "the tarball holds every file package.json names (entry points, types, the bin)",
    () => {
      const named = namedFiles();
      expect(named).toContain("dist/start.cjs");
      for (const f of named) expect(files, f).toContain(f);
      // the bin runs the CLI bundle next to it
      expect(files).toContain("dist/nbd-codec.cjs");
    },
  );
});
